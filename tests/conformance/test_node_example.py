"""examples/node/train.mjs, the JavaScript loop embedders copy, run by onnxruntime-node and onnxruntime-web
(wasm, in node), logs the epochs `dslc train` logs, validation included, when it is given `dslc train`'s sample order, and
leaves the values `dslc train` gets to: models with dropout (digits), batch norm (batchnorm) and a GRU
(text_rnn), and two objectives in turn (gan). Its predict step gives what the predict graph gives in Python with dslc's trained values, a run
exported with `dslc export --train-state` continues in it, and what it saves `dslc train --resume` takes."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from embedding import BATCH, MODELS, SEED, assert_same_epochs, epoch_lines, logged, model_data, node_example
from runtimes import ort_graph

# onnxruntime-node computes what the Python package does, bit for bit; the wasm build differs by ~1e-7 a step,
# which 180 Adam steps on the bundled digits data grow to 3e-5: it trains on ROWS random rows (8 steps)
TOLERANCE = {"node": 1e-6, "web": 1e-5}


def run_node(backend: str, tmp_path: Path, out_dir: Path, data: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*node_example(backend, tmp_path), str(out_dir), str(data), "--batch-size", str(BATCH), *args],
                          capture_output=True, text=True, timeout=300)


def run_example(backend: str, tmp_path: Path, out_dir: Path, data: Path, *args: str) -> str:
    done = run_node(backend, tmp_path, out_dir, data, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def write_orders(path: Path, data: Path, first_epoch: int, epochs: int) -> Path:
    """`dslc train`'s sample order of each epoch, as the example's --order reads it."""
    from dslc.runtime.run_randomness import epoch_order

    rows = len(next(iter(np.load(data).values())))
    np.savez(path, order=np.stack([epoch_order(SEED, e, rows) for e in range(first_epoch, first_epoch + epochs)]))
    return path


def trained_values(program, run: Path) -> dict[str, np.ndarray]:
    from dslc.runtime.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run, program.manifest)
    return {**ckpt.params, **ckpt.state}


@pytest.mark.parametrize("backend, name", [("node", "digits"), ("node", "batchnorm"), ("node", "text_rnn"), ("node", "gan"),
                                           ("node", "digits_recipe"), ("node", "binary_text"),
                                           ("web", "digits"), ("web", "batchnorm")])
def test_the_node_example_logs_the_epochs_of_dslc_train(backend, name, tmp_path):
    from dslc.compiler import compile_file

    program = compile_file(MODELS[name], seed=SEED)
    data = model_data(program, tmp_path / "data.npz", bundled=backend == "node")
    val = model_data(program, tmp_path / "val.npz", bundled=backend == "node", split="val")
    history = program.train(str(data), str(val), epochs=2, batch_size=BATCH, seed=SEED, out_dir=tmp_path / "run",
                            verbose=0)
    program.build(tmp_path / "out")  # `dslc build --seed 3`
    stdout = run_example(backend, tmp_path, tmp_path / "out", data, "--epochs", "2", "--seed", str(SEED), "--val", str(val),
                         "--order", str(write_orders(tmp_path / "order.npz", data, 0, 2)),
                         "--save", str(tmp_path / "trained.npz"))
    assert_same_epochs(epoch_lines(stdout), logged(history), rtol=TOLERANCE[backend])

    ours = trained_values(program, tmp_path / "run")
    saved = np.load(tmp_path / "trained.npz")
    assert sorted(saved.files) == sorted(ours)
    for key, value in ours.items():
        np.testing.assert_allclose(saved[key], value, rtol=1e-4, atol=1e-6, err_msg=key)

    # the predict graph with the trained values, on the first batch, as Python's ONNX Runtime computes it
    predict = program.manifest["graphs"]["predict"]
    arrays = np.load(data)
    feeds = {t["name"]: arrays[t["name"]][:BATCH] for t in predict["inputs"]}
    feeds.update({t["name"]: ours[t["name"]] for t in predict["params"] + predict["buffers"]})
    outputs = [t["name"] for t in predict["outputs"]]
    expected = ort_graph(tmp_path / "out" / predict["file"], list(feeds), outputs)(feeds)
    first_rows = {line.split()[1].rstrip(","): [float(v) for v in line.rpartition(": ")[2].split(",")]
                  for line in stdout.splitlines() if line.startswith("predicted ")}
    assert list(first_rows) == outputs
    for name_ in outputs:
        np.testing.assert_allclose(first_rows[name_], np.ravel(expected[name_][0]), rtol=1e-4, atol=1e-6)


def test_a_run_exported_with_its_train_state_continues_in_node_and_comes_back(tmp_path):
    from dslc.compiler import compile_file

    program = compile_file(MODELS["digits"], seed=SEED)
    data = model_data(program, tmp_path / "data.npz")
    whole = program.train(str(data), epochs=2, batch_size=BATCH, seed=SEED, out_dir=tmp_path / "whole", verbose=0)
    program.train(str(data), epochs=1, batch_size=BATCH, seed=SEED, out_dir=tmp_path / "half", verbose=0)
    program.export_train_state(tmp_path / "half", tmp_path / "state")
    # no --seed: the manifest's train_state gives the seed, the epoch (2) and the step
    stdout = run_example("node", tmp_path, tmp_path / "state", data, "--epochs", "1",
                         "--order", str(write_orders(tmp_path / "order.npz", data, 1, 1)),
                         "--save", str(tmp_path / "trained.npz"))
    assert_same_epochs(epoch_lines(stdout), logged(whole)[1:], rtol=1e-6)
    # back in dslc: `dslc train --resume trained.npz` continues node's step counter (opt.step), so its seeds
    back = program.train(str(data), epochs=1, batch_size=BATCH, seed=SEED, out_dir=tmp_path / "back", verbose=0,
                         resume=tmp_path / "trained.npz")
    assert back[0]["steps"] == 3 * whole[0]["steps"]

def test_the_node_example_refuses_a_feed_the_graph_does_not_have(tmp_path):
    """onnxruntime-node ignores it without a word: trained values fed to infer.onnx (which holds the initial
    ones as initializers) would give the initial model's predictions."""
    from dslc.compiler import compile_file

    program = compile_file(MODELS["digits"])
    program.build(tmp_path / "out")
    # the example's last step fed to infer.onnx instead of predict.onnx
    (tmp_path / "out" / "digits.infer.onnx").replace(tmp_path / "out" / "digits.predict.onnx")
    done = run_node("node", tmp_path, tmp_path / "out", model_data(program, tmp_path / "data.npz"), "--epochs", "0")
    assert done.returncode == 1
    assert "the graph has no input dense_0.weight, dense_0.bias" in done.stderr


@pytest.mark.parametrize("backend, name", [("node", "digits"), ("node", "text_rnn"), ("web", "batchnorm")])
def test_the_predict_example_writes_what_dslc_predict_writes(backend, name, tmp_path):
    """examples/node/predict.mjs runs `dslc export --weights`'s self-contained model in batches (the last one
    partial) and writes the outputs of every row, as `dslc predict` does."""
    from dslc.compiler import compile_file

    program = compile_file(MODELS[name], seed=SEED)
    data = model_data(program, tmp_path / "data.npz", bundled=False)
    program.train(str(data), epochs=1, batch_size=BATCH, seed=SEED, out_dir=tmp_path / "run", verbose=0)
    program.export(tmp_path / "run", tmp_path / "model.onnx")
    done = subprocess.run([*node_example(backend, tmp_path, "predict.mjs"), str(tmp_path / "model.onnx"), str(data),
                           "-o", str(tmp_path / "out.npz"), "--batch-size", "16"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    theirs = program.predict(str(data), weights=tmp_path / "run")
    ours = np.load(tmp_path / "out.npz")
    assert sorted(ours.files) == sorted(theirs)
    for key, value in theirs.items():
        assert ours[key].shape == value.shape and ours[key].dtype == value.dtype
        np.testing.assert_allclose(ours[key], value, rtol=1e-5, atol=1e-6)
