"""`dslc evaluate` and `program.evaluate`: loss and metrics of trained weights on labelled data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from manifest_graphs import linreg_data, linreg_program

import dslc
from dslc import cli
from dslc.diagnostics import DataError
from dslc.runtime import checkpoint

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits"


def test_evaluate_matches_numpy_on_the_checkpoint(tmp_path):
    program, test = linreg_program(), linreg_data(n=23, seed=5)
    program.train(linreg_data(n=40), epochs=2, batch_size=8, out_dir=tmp_path, verbose=0)
    p = checkpoint.load_checkpoint(tmp_path).params
    mse = float(np.mean((test["x"] @ p["lin.W"] + p["lin.b"] - test["y"]) ** 2))
    for batch_size in (5, 256):  # a partial last batch is weighted by its size
        got = program.evaluate(test, tmp_path, batch_size=batch_size)
        assert list(got) == ["loss", "mse"] and got["loss"] == pytest.approx(mse, rel=1e-5)
    assert program.evaluate(test) == program.evaluate(test, tmp_path)  # the last `train`'s weights, as Keras'
    with pytest.raises(DataError) as e:
        linreg_program().evaluate(test)  # a program that has not trained
    assert e.value.hint == "pass `weights=RUN` (the `out_dir` of `train`) or a checkpoint.npz"
    with pytest.raises(DataError, match="evaluation data has no array `y`"):
        program.evaluate({"x": test["x"]}, tmp_path)


def test_evaluate_on_the_command_line(linreg_cli, capsys):
    np.savez("test.npz", **linreg_data(n=12, seed=3))
    linreg_program().train(linreg_data(n=40), epochs=1, batch_size=8, out_dir="run", verbose=0)
    want = linreg_program().evaluate("test.npz", "run")
    assert cli.main(["evaluate", "linreg.dl", "--weights", "run", "--data", "test.npz", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"model": "linreg", "data": "test.npz", "weights": "run", **want}
    assert cli.main(["evaluate", "linreg.dl", "--weights", "run", "--data", "test.npz"]) == 0
    assert capsys.readouterr().out == (f"linreg on test.npz (weights run)\n  loss  {want['loss']:.4f}\n"
                                       f"  mse   {want['mse']:.4f}\n")
    assert cli.main(["evaluate", "linreg.dl", "--weights", "nowhere", "--data", "test.npz"]) == 3
    assert capsys.readouterr().err.startswith("error: cannot read `nowhere`: No such file or directory\nhint: train")


def test_evaluate_a_real_model_agrees_with_its_predictions(tmp_path):
    """digits: accuracy from the evaluation graph = argmax of the inference graph's probabilities."""
    program = dslc.compile(DIGITS / "digits.dl", hidden=32)
    program.train(DIGITS / "train.npz", epochs=2, batch_size=64, out_dir=tmp_path, verbose=0)
    test = dict(np.load(DIGITS / "test.npz"))
    got = program.evaluate(test, tmp_path, batch_size=100)
    probs = program.predict(test, tmp_path)["probs"]
    assert got["accuracy"] == pytest.approx(float(np.mean(probs.argmax(1) == test["digit"])), abs=1e-6)
    picked = probs[np.arange(len(probs)), test["digit"]]
    l2 = sum(float(np.sum(v.astype(np.float64) ** 2)) for k, v in checkpoint.load_checkpoint(tmp_path).params.items()
             if k.endswith(".weight"))
    assert got["loss"] == pytest.approx(float(np.mean(-np.log(picked))) + 1e-5 * l2, rel=1e-4)


COUNTS = """
model counts {
    input x: f32[B, 4]
    target y: i64[B]
    output z = x |> dense(3)
    loss cross_entropy(z, y)
    optimizer sgd(lr = 0.1)
    metric f1_macro = f1(z, y, average = "macro")
    metric cm = confusion_matrix(z, y)
}
"""


def test_evaluate_count_metrics_match_scikit_learn(tmp_path, monkeypatch, capsys):
    """F1 from the summed confusion matrix (not a mean of batch F1s), and the matrix itself."""
    sk = pytest.importorskip("sklearn.metrics")
    (tmp_path / "counts.dl").write_text(COUNTS)
    program = dslc.compile(tmp_path / "counts.dl")
    rng = np.random.default_rng(0)
    data = {"x": rng.standard_normal((50, 4)).astype(np.float32), "y": rng.integers(0, 3, 50)}
    weights = {k: v for k, v in program.initial_values().items() if not k.startswith("opt.")}
    got = program.evaluate(data, weights, batch_size=7)
    pred = program.predict(data, weights)["z"].argmax(1)
    assert got["f1_macro"] == pytest.approx(sk.f1_score(data["y"], pred, average="macro"), abs=1e-6)
    assert got["cm"] == sk.confusion_matrix(data["y"], pred, labels=range(3)).tolist()
    monkeypatch.chdir(tmp_path)
    np.savez("d.npz", **data)
    program.train(data, epochs=1, batch_size=50, lr=0.0, out_dir="run", verbose=0)  # lr 0: the initial weights
    assert cli.main(["evaluate", "counts.dl", "--weights", "run", "--data", "d.npz"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-4] == "  cm (rows: true class, columns: predicted class)"
    assert [[int(c) for c in line.split()] for line in out[-3:]] == got["cm"]
