"""A checkpoint records the `-D` values its run was trained with (meta `defines`), so weights of another
shape name them in the hint ("trained with `-D hidden=16`; you passed `-D hidden=8`"), `--resume` with
other values that still fit says which, and checkpoints from before the record still load."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import dslc
from dslc import cli
from dslc.diagnostics import DataError
from dslc.runtime.checkpoint import load_checkpoint
from dslc.runtime.distributed import portable

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits"
MODEL, TRAIN, TEST = str(DIGITS / "digits.dl"), str(DIGITS / "train.npz"), str(DIGITS / "test.npz")
COMMON = ["--data", TRAIN, "--batch-size", "256", "--threads", "1", "-q"]


def hint(err: str) -> str:
    return next(line for line in err.splitlines() if line.startswith("hint: "))


def test_the_hint_names_the_runs_and_the_commands_d_values(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DSLC_NO_CACHE", "0")  # a program from the compile cache knows its `-D` values too
    monkeypatch.setenv("DSLC_CACHE_DIR", str(tmp_path / "cache"))
    from dslc import compiler

    compiled = []
    monkeypatch.setattr(compiler, "compile_file", lambda *a, _f=compiler.compile_file, **k: compiled.append(1) or _f(*a, **k))
    for run in (str(tmp_path / "first"), str(tmp_path / "run")):  # the second compiles nothing: the cache's entry
        assert cli.main(["train", MODEL, "-D", "hidden=16", *COMMON, "--epochs", "1", "-o", run]) == 0
        assert load_checkpoint(run).meta["defines"] == {"hidden": "16"}
    assert len(compiled) == 1
    capsys.readouterr()
    predict = ["predict", MODEL, "--weights", run, "--input", TEST, "-o", str(tmp_path / "p.npz")]
    assert cli.main([*predict, "-D", "hidden=8"]) == 3
    assert hint(capsys.readouterr().err) == (
        "hint: the weights were trained with `-D hidden=16`; you passed `-D hidden=8`: pass the same ones; to train "
        "this model anew, train into a new directory")
    assert cli.main(["train", MODEL, *COMMON, "--epochs", "2", "-o", run, "--resume"]) == 3
    assert hint(capsys.readouterr().err).startswith(
        "hint: the weights were trained with `-D hidden=16`; you passed no `-D` values: pass the same ones")
    assert cli.main(["evaluate", MODEL, "-D", "hidden=16", "-D", "rate=0", "--weights", run, "--data", TEST]) == 0
    assert cli.main(["train", MODEL, "-D", "hidden=16", "-D", "rate=0.5", *COMMON, "--epochs", "2", "-o", run,
                     "--resume"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "warning: the model parameters differ from the checkpoint's (`-D hidden=16`, `-D rate=0.5` now, "
        "`-D hidden=16` before): the run will not match an uninterrupted one"]
    assert load_checkpoint(run).meta["defines"] == {"hidden": "16", "rate": "0.5"}
    # from Python: the keyword arguments of `dslc.compile`
    with pytest.raises(DataError) as e:
        dslc.compile(MODEL, hidden=32).predict({"image": np.zeros((1, 64), np.float32)}, weights=run)
    assert e.value.hint.startswith("the weights were trained with `hidden=16`, `rate=0.5`; this model was compiled "
                                   "with `hidden=32`: pass the same ones")
    program = dslc.compile(MODEL, hidden=16, rate=0.5)
    assert program.defines == {"hidden": "16", "rate": "0.5"} == portable(program).defines  # to --workers' ranks


def test_a_checkpoint_without_the_record_still_loads_and_hints_as_before(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", MODEL, "-D", "hidden=16", *COMMON, "--epochs", "1", "-o", str(run)]) == 0
    with np.load(run / "checkpoint.npz") as archive:
        arrays = {k: archive[k] for k in archive}
    meta = json.loads(str(arrays["meta"][()]))
    del meta["defines"]  # as dslc wrote it before 2026-12-05
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(run / "checkpoint.npz", **arrays)
    assert cli.main(["train", MODEL, "-D", "hidden=16", "-D", "rate=0.5", *COMMON, "--epochs", "2", "-o", str(run),
                     "--resume"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "warning: the compiled model differs from the one that wrote the checkpoint (another model file, `-D` "
        "value or dslc; its parameters still fit, so training continues from it)"]
    assert load_checkpoint(run).meta["defines"] == {"hidden": "16", "rate": "0.5"}  # recorded from now on
    np.savez(run / "checkpoint.npz", **arrays)  # the epoch-1 checkpoint without the record, again
    assert cli.main(["predict", MODEL, "--weights", str(run), "--input", TEST, "-o", str(tmp_path / "p.npz")]) == 3
    assert hint(capsys.readouterr().err) == (
        "hint: the model source or the `-D` values differ from those the weights were trained with: pass the same "
        "ones (this checkpoint does not record them); to train this model anew, train into a new directory")
