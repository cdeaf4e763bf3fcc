"""Fine-tuning: `--init-from` (a run, a checkpoint or an exported model, matched by name and shape) and
`--freeze` (parameters built without an update)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from manifest_graphs import linreg_data, linreg_program

import dslc
from dslc import cli
from dslc.diagnostics import DataError
from dslc.runtime import checkpoint
from dslc.runtime.train import Reporter, fit

DATA = linreg_data(n=40)


class Notes(Reporter):
    def __init__(self):
        self.notes = []

    def note(self, message):
        self.notes.append(message)


def trained(tmp_path):
    fit(linreg_program(), DATA, epochs=3, batch_size=8, out_dir=tmp_path / "a", reporter=Reporter())
    return checkpoint.load_checkpoint(tmp_path / "a").params


def test_init_from_a_run_and_from_an_exported_model(tmp_path):
    source = trained(tmp_path)
    linreg_program().export(tmp_path / "a", tmp_path / "a.onnx")
    for origin in (tmp_path / "a", tmp_path / "a" / "checkpoint.npz", tmp_path / "a.onnx"):
        out = tmp_path / f"b{len(list(tmp_path.iterdir()))}"
        notes = Notes()
        fit(linreg_program(), DATA, epochs=1, batch_size=8, lr=0.0, out_dir=out, reporter=notes, init_from=origin)
        got = checkpoint.load_checkpoint(out)
        assert all(np.array_equal(got.params[k], source[k]) for k in source)  # lr 0: the values it started from
        assert got.state["opt.step"] == 5  # the optimizer state starts fresh
        assert notes.notes == [f"initialized 2 of 2 weights from `{origin}`"]


def test_init_from_reports_mismatched_and_missing_weights(tmp_path):
    source = trained(tmp_path)
    wider, notes = linreg_program(features=4), Notes()
    fit(wider, linreg_data(n=40, features=4), epochs=1, batch_size=8, lr=0.0, out_dir=tmp_path / "w", reporter=notes,
        init_from=tmp_path / "a")
    got = checkpoint.load_checkpoint(tmp_path / "w").params
    assert np.array_equal(got["lin.b"], source["lin.b"])
    assert np.array_equal(got["lin.W"], wider.initial_values()["lin.W"])  # kept its initial value
    assert notes.notes == [f"initialized 1 of 2 weights from `{tmp_path / 'a'}`; shapes differ (initial values "
                           "kept): `lin.W` [3, 1] there, [4, 1] here"]
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DataError, match="is not a dslc checkpoint"):
        fit(wider, linreg_data(n=40, features=4), epochs=1, batch_size=8, out_dir=tmp_path / "x", reporter=Reporter(),
            init_from=tmp_path / "other.npz")


FROZEN = """
model tune {
    input x: f32[B, 4]
    target y: f32[B, 2]
    output p = x |> dense(8, name = "enc") |> tanh |> dense(8, name = "enc2") |> tanh |> dense(2, name = "head")
    loss mse(p, y)
    optimizer adam(lr = 0.05)
}
"""


def test_freeze_keeps_the_selected_parameters_fixed(tmp_path):
    (tmp_path / "tune.dl").write_text(FROZEN)
    program = dslc.compile(tmp_path / "tune.dl", freeze=["enc*"])
    spec = program.manifest["graphs"]["train"]
    assert [t["name"] for t in spec["frozen"]] == ["enc.weight", "enc.bias", "enc2.weight", "enc2.bias"]
    assert [t["name"] for t in spec["params"]] == ["head.weight", "head.bias"]
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(32, 4)).astype(np.float32), "y": rng.normal(size=(32, 2)).astype(np.float32)}
    history = program.train(data, epochs=3, batch_size=8, out_dir=tmp_path / "run", verbose=0)
    assert history[-1]["loss"] < history[0]["loss"]
    initial, after = program.initial_values(), checkpoint.load_checkpoint(tmp_path / "run").params
    for name in ("enc.weight", "enc.bias", "enc2.weight", "enc2.bias"):
        assert np.array_equal(after[name], initial[name]), name
    assert not np.array_equal(after["head.weight"], initial["head.weight"])
    summary = program.summary()
    assert summary["frozen"] == 4 * 8 + 8 + 8 * 8 + 8 and summary["trainable"] == 8 * 2 + 2
    assert "enc (frozen)" in str(summary)
    with pytest.raises(DataError) as e:
        dslc.compile(tmp_path / "tune.dl", freeze=["encoder"])
    assert e.value.message == "`freeze=...` `encoder` selects no parameter of model `tune`"
    with pytest.raises(DataError, match="leaves model `tune` nothing to train"):
        dslc.compile(tmp_path / "tune.dl", freeze=["params"])


def test_freeze_and_init_from_on_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tune.dl").write_text(FROZEN)
    rng = np.random.default_rng(1)
    np.savez("d.npz", x=rng.normal(size=(24, 4)), y=rng.normal(size=(24, 2)))
    base = ["train", "tune.dl", "--data", "d.npz", "--epochs", "2", "--batch-size", "8"]
    assert cli.main(base + ["-o", "a"]) == 0
    capsys.readouterr()
    assert cli.main(base + ["-o", "b", "--init-from", "a", "--freeze", "enc", "--freeze", "enc2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("initialized 6 of 6 weights from `a`\n")
    a, b = checkpoint.load_checkpoint("a").params, checkpoint.load_checkpoint("b").params
    assert all(np.array_equal(a[k], b[k]) for k in ("enc.weight", "enc.bias", "enc2.weight", "enc2.bias"))
    assert not np.array_equal(a["head.weight"], b["head.weight"])
    assert json.load(open("b/tune.dslc.json"))["graphs"]["train"]["frozen"][0]["name"] == "enc.weight"
    assert cli.main(base + ["-o", "c", "--freeze", "enc3"]) == 3
    assert capsys.readouterr().err.startswith("error: `--freeze` `enc3` selects no parameter of model `tune`\nhint: ")


def test_resuming_a_frozen_run_without_its_freeze_says_so(tmp_path):
    """The run's frozen parameters are a setting of its checkpoint: resumed without `--freeze`, the run
    trained them from then on with only the generic warning that the compiled model differs ("another
    model file, `-D` value or dslc"); now the warning names them and how to keep them fixed. (With an
    optimizer that has state per parameter, such as Adam, the checkpoint lacks the state and the resume is
    refused; plain SGD has none.)"""
    (tmp_path / "tune.dl").write_text(FROZEN.replace("adam(lr = 0.05)", "sgd(lr = 0.05)"))
    rng = np.random.default_rng(2)
    data = {"x": rng.normal(size=(16, 4)).astype(np.float32), "y": rng.normal(size=(16, 2)).astype(np.float32)}
    settings = dict(batch_size=8, out_dir=tmp_path / "run", verbose=0)
    dslc.compile(tmp_path / "tune.dl", freeze=["enc"]).train(data, epochs=1, **settings)
    assert checkpoint.load_checkpoint(tmp_path / "run").meta["frozen"] == ["enc.bias", "enc.weight"]
    for freeze, said in ((["enc"], []), ([], [
            "the frozen parameters differ from the checkpoint's (none now, `enc.bias`, `enc.weight` before): the run "
            "will not match an uninterrupted one; pass the run's `freeze=...` patterns again to keep them fixed"])):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            program = dslc.compile(tmp_path / "tune.dl", freeze=freeze)
            done = checkpoint.load_checkpoint(tmp_path / "run").meta["epoch"]
            program.train(data, epochs=done + 1, resume=True, **settings)
        assert [str(w.message) for w in caught] == said
