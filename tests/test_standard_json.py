"""Every JSON dslc writes is standard JSON (`dslc/standard_json.py`): an undefined `auc` (validation data of
one class) is `null` in `history.jsonl`, the `--log-format jsonl` events, the checkpoint's metadata and
`dslc evaluate --json`, where Python's `json` wrote `NaN`, which `JSON.parse` refuses; `--resume` reads
both forms back as NaN, so a resumed run still equals an uninterrupted one."""
from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest

from dslc import cli, standard_json
from dslc.runtime.checkpoint import load_checkpoint
from dslc.runtime.history import HISTORY_FILE
from test_auc import LEARNER, learner_data

ROOT = Path(__file__).resolve().parents[1]


def strict(text: str):
    """`json.loads` as JavaScript's `JSON.parse`: `NaN`, `Infinity` and `-Infinity` are not JSON."""
    def refuse(word):
        raise ValueError(f"not standard JSON: {word}")
    return json.loads(text, parse_constant=refuse)


def dumps_calls(tree: ast.Module):
    """(line, keywords) of every `json.dumps(...)`/`json.dump(...)` call."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("dumps", "dump") \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "json":
            yield node.lineno, {k.arg: k.value for k in node.keywords}


def refuses_nan(keywords: dict) -> bool:
    value = keywords.get("allow_nan")
    return isinstance(value, ast.Constant) and value.value is False


def test_every_json_dumps_in_the_package_refuses_non_finite_numbers():
    """The guard: a non-finite number that reaches a writer without `standard_json.dumps` raises instead of
    writing `NaN`."""
    violations = []
    for path in sorted((ROOT / "dslc").rglob("*.py")):
        for line, keywords in dumps_calls(ast.parse(path.read_text(encoding="utf-8"))):
            if not refuses_nan(keywords):
                violations.append(f"{path.relative_to(ROOT)}:{line}")
    assert not violations, "json.dumps without allow_nan=False (use dslc.standard_json.dumps):\n  " + \
        "\n  ".join(violations)
    calls = list(dumps_calls(ast.parse("json.dumps(x)\njson.dumps(x, allow_nan=False)\njson.dump(x, f, allow_nan=True)\n"
                                       "standard_json.dumps(x)\n")))
    assert [(line, refuses_nan(k)) for line, k in calls] == [(1, False), (2, True), (3, False)]


def test_dumps_writes_null_for_non_finite_numbers():
    value = {"auc": math.nan, "x": [1.5, math.inf, (-math.inf, 2)], "n": 3, "ok": True, "s": "NaN"}
    text = standard_json.dumps(value)
    assert strict(text) == {"auc": None, "x": [1.5, None, [None, 2]], "n": 3, "ok": True, "s": "NaN"}
    assert standard_json.undefined_as_nan({"epoch": 1, "auc": None, "loss": 0.5})["auc"] != 0
    assert math.isnan(standard_json.undefined_as_nan({"epoch": 1, "auc": None})["auc"])


def history(run: Path) -> list[dict]:
    """The history file strictly parsed, without the timings, NaN for null."""
    lines = (run / HISTORY_FILE).read_text(encoding="utf-8").splitlines()
    records = [standard_json.undefined_as_nan(strict(x)) for x in lines]
    return [{k: v for k, v in r.items() if k not in ("time", "samples_per_s")} for r in records]


def as_old_run(run: Path) -> None:
    """Rewrite `run`'s history and checkpoint metadata as dslc wrote them before: NaN as `NaN`."""
    path = run / HISTORY_FILE
    path.write_text("".join(json.dumps(standard_json.undefined_as_nan(json.loads(x))) + "\n"
                            for x in path.read_text().splitlines()))
    with np.load(run / "checkpoint.npz") as archive:
        arrays = {k: archive[k] for k in archive}
    meta = json.loads(str(arrays["meta"][()]))
    meta["record"] = standard_json.undefined_as_nan(meta["record"])
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(run / "checkpoint.npz", **arrays)
    assert "NaN" in path.read_text() and "NaN" in str(arrays["meta"][()])


@pytest.mark.parametrize("old", [False, True], ids=["new", "old"])
def test_an_undefined_auc_is_null_and_a_resumed_run_reads_it_back(tmp_path, monkeypatch, capsys, old):
    monkeypatch.chdir(tmp_path)
    Path("learner.dl").write_text(LEARNER.replace("    callback  early_stopping(monitor = \"val_auc\", "
                                                  "patience = 20, restore_best = true)\n", ""))
    val = learner_data(1, 200)
    np.savez("train.npz", **learner_data(0, 120))
    np.savez("val.npz", **{k: v[val["y"] == 0] for k, v in val.items()})  # one class: val_auc is undefined
    train = ["train", "learner.dl", "--data", "train.npz", "--val", "val.npz", "--batch-size", "32", "--seed", "3",
             "--log-format", "jsonl"]
    assert cli.main([*train, "--epochs", "4", "-o", "straight"]) == 0
    events = [strict(x) for x in capsys.readouterr().out.splitlines()]
    epochs = [e for e in events if e["event"] == "epoch"]
    assert len(epochs) == 4 and all(e["val_auc"] is None and e["val_pr"] is None for e in epochs)
    assert all(isinstance(e["auc"], float) for e in epochs)
    straight = history(Path("straight"))
    assert all(math.isnan(r["val_auc"]) for r in straight) and not math.isnan(straight[-1]["auc"])
    meta = load_checkpoint("straight").meta
    assert math.isnan(meta["record"]["val_auc"]) and meta["record"]["epoch"] == 4
    with np.load("straight/checkpoint.npz") as archive:
        assert strict(str(archive["meta"][()]))["record"]["val_auc"] is None

    assert cli.main([*train, "--epochs", "2", "-o", "resumed"]) == 0
    if old:
        as_old_run(Path("resumed"))
    assert cli.main([*train, "--epochs", "4", "-o", "resumed", "--resume"]) == 0
    capsys.readouterr()
    got = history(Path("resumed"))
    assert json.dumps(got) == json.dumps(straight)  # NaN in the same places (json writes NaN as NaN here)
    assert all(np.array_equal(a, b) for a, b in zip(load_checkpoint("resumed").params.values(),
                                                      load_checkpoint("straight").params.values()))

    assert cli.main(["evaluate", "learner.dl", "--weights", "straight", "--data", "val.npz", "--json"]) == 0
    printed = strict(capsys.readouterr().out.splitlines()[-1])
    assert printed["auc"] is None and printed["pr"] is None and printed["loss"] > 0
