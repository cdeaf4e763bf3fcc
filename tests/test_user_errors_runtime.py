"""User mistakes the runtime must refuse with a clear message (exit 3), never a traceback or silent
NaN output: batch-norm on a 1-sample batch, a NaN validation loss, non-finite or wrongly typed
checkpoints, float overflow in data, `.npy` files given as data, probability targets out of range, and
a batch size larger than the data."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import compile_text

from dslc import cli
from dslc.diagnostics import DataError
from dslc.runtime import checkpoint, data, train
from dslc.runtime.train import Reporter, fit

BN = """
model bn {
    input x: f32[B, 4]
    target y: f32[B, 1]
    h = x |> dense(8, bias = false) |> batch_norm |> relu |> dense(1)
    output h
    loss mse(h, y)
    optimizer adam()
}
"""
BN_SEQUENCE = """
model bnseq {
    input x: f32[B, 2, 3]
    target y: f32[B, 1]
    h = x |> batch_norm |> flatten |> dense(1)
    output h
    loss mse(h, y)
    optimizer sgd(lr = 0.1)
}
"""
MLP = """
model mlp {
    input x: f32[B, 4]
    target y: f32[B, 1]
    h = x |> dense(3) |> tanh |> dense(1)
    output h
    loss mse(h, y)
    optimizer sgd(lr = 0.1)
}
"""


class Warnings(Reporter):
    def __init__(self):
        self.messages = []

    def warn(self, message):
        self.messages.append(message)


def xy(n: int, seed: int = 0, shape=(4,)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(n, *shape)).astype(np.float32), "y": rng.normal(size=(n, 1)).astype(np.float32)}


def cli_error(capsys, argv) -> str:
    """Run the CLI, expecting exit 3; return stderr."""
    assert cli.main([str(a) for a in argv]) == 3
    return capsys.readouterr().err


# ---- batch norm on a batch of one sample ---------------------------------------------------------
def test_batch_norm_with_a_one_sample_last_batch_is_refused_before_training(workdir, tmp_path, capsys):
    (workdir / "bn.dl").write_text(BN)
    np.savez(tmp_path / "bn9.npz", **xy(9))
    err = cli_error(capsys, ["train", workdir / "bn.dl", "--data", tmp_path / "bn9.npz", "--val",
                             tmp_path / "bn9.npz", "--epochs", "2", "--batch-size", "4", "-o", tmp_path / "run"])
    assert err == ("error: the last batch of each epoch has 1 sample (9 samples in batches of 4), but batch "
                   "normalization needs more than one value per channel when training "
                   "(`batch_norm_0.running_var` would become nan)\n"
                   "hint: choose a batch size that leaves no batch of 1 sample, e.g. `--batch-size 3` or "
                   "`--batch-size 5`\n")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("n, batch_size, message, hint", [
    (9, 1, "with a batch size of 1 every batch has 1 sample",
     "choose a batch size that leaves no batch of 1 sample, e.g. `batch_size=3`"),
    (1, 4, "the training data has 1 sample", "train on 2 or more samples, or remove `batch_norm`"),
])
def test_batch_norm_with_only_one_sample_batches(workdir, tmp_path, n, batch_size, message, hint):
    program = compile_text(workdir, BN, "bn.dl")
    with pytest.raises(DataError) as e:
        fit(program, xy(n), epochs=1, batch_size=batch_size, out_dir=tmp_path)
    assert e.value.message == (f"{message}, but batch normalization needs more than one value per channel when "
                               "training (`batch_norm_0.running_var` would become nan)")
    assert e.value.hint == hint


def test_batch_norm_with_one_row_micro_batches_is_refused_before_training(workdir, tmp_path):
    # batches of 4 in 4 micro-batches of 1 row: each normalized on its own, the running variance became
    # NaN after the first epoch, with a hint to lower the learning rate (found by trying it)
    program = compile_text(workdir, BN, "bn.dl", split=True)
    with pytest.raises(DataError) as e:
        fit(program, xy(8), epochs=1, batch_size=4, accumulate=4, out_dir=tmp_path / "run")
    assert e.value.message == ("8 samples in batches of 4, each cut into 4 micro-batches, give parts of 1 sample, "
                               "but batch normalization needs more than one value per channel when training "
                               "(`batch_norm_0.running_var` would become nan)")
    assert e.value.hint == "choose a batch size that leaves no batch of 1 sample, e.g. `batch_size=8`"
    assert fit(program, xy(8), epochs=1, batch_size=8, accumulate=4, out_dir=tmp_path / "ok")[-1]["loss"] > 0


def test_batch_norm_over_a_sequence_accepts_one_sample_batches_and_the_trial_step_is_undone(
        workdir, tmp_path, monkeypatch):
    program = compile_text(workdir, BN_SEQUENCE, "bnseq.dl")
    d = xy(5, shape=(2, 3))  # batches of 4 and 1; one sample still has 3 values per channel (PyTorch agrees)
    history = fit(program, d, d, epochs=2, batch_size=4, out_dir=tmp_path / "tried")
    monkeypatch.setattr(train, "check_one_sample_batch", lambda *args: None)
    assert fit(program, d, d, epochs=2, batch_size=4, out_dir=tmp_path / "plain")[-1]["loss"] == history[-1]["loss"]
    tried, plain = (checkpoint.load_checkpoint(tmp_path / run) for run in ("tried", "plain"))
    for name, value in {**plain.params, **plain.state}.items():
        np.testing.assert_array_equal({**tried.params, **tried.state}[name], value, err_msg=name)
    assert np.isfinite(tried.params["batch_norm_0.running_var"]).all()


def test_non_finite_validation_loss_stops_training(workdir, tmp_path):
    program = compile_text(workdir, MLP, "mlp.dl")
    val = xy(4)
    val["y"][2] = 3e38  # finite data; its squared error overflows
    with pytest.raises(DataError) as e:
        fit(program, xy(8), val, epochs=2, batch_size=4, out_dir=tmp_path)
    assert e.value.message == "the validation loss became inf after epoch 1 (global step 2)"
    assert e.value.hint == "lower the learning rate (`lr=...`, now 0.1); no checkpoint was written"
    assert not (tmp_path / "checkpoint.npz").exists()


# ---- checkpoints and weights -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlp_run(workdir, tmp_path_factory):
    program = compile_text(workdir, MLP, "mlp.dl")
    run = tmp_path_factory.mktemp("mlp_run")
    fit(program, xy(8), epochs=1, batch_size=4, out_dir=run)
    return program, run


def test_checkpoint_with_nan_weights_is_refused(mlp_run, tmp_path, capsys, workdir):
    program, run = mlp_run
    ckpt = checkpoint.load_checkpoint(run)
    ckpt.params["dense_1.bias"][0] = np.nan
    bad = checkpoint.save_checkpoint(tmp_path / "ck_nan.npz", ckpt.params, ckpt.state, ckpt.meta)
    np.savez(tmp_path / "x.npz", x=xy(3)["x"])
    err = cli_error(capsys, ["predict", workdir / "mlp.dl", "--weights", bad, "--input", tmp_path / "x.npz",
                             "-o", tmp_path / "y.npz"])
    assert err == (f"error: array `param/dense_1.bias` in checkpoint `{bad}` contains nan at index 0\n"
                   "hint: trained values must be finite; use a checkpoint from before they went bad, or train again\n")
    assert not (tmp_path / "y.npz").exists()
    with pytest.raises(DataError) as e:
        program.export(bad, tmp_path / "m.onnx")
    assert e.value.message == f"array `param/dense_1.bias` in checkpoint `{bad}` contains nan at index 0"
    weights = {**ckpt.params, "dense_0.weight": np.full((4, 3), np.inf, np.float32)}
    with pytest.raises(DataError) as e:
        program.predict({"x": xy(3)["x"]}, weights=weights)
    assert e.value.message == "array `dense_0.weight` in the weights contains inf at index (0, 0)"


def test_float32_weights_in_a_float64_model_hint_at_dtype(mlp_run, workdir, tmp_path, capsys):
    _, run = mlp_run
    np.savez(tmp_path / "x.npz", x=xy(3)["x"])
    err = cli_error(capsys, ["predict", workdir / "mlp.dl", "--dtype", "float64", "--weights", run,
                             "--input", tmp_path / "x.npz", "-o", tmp_path / "y.npz"])
    assert err == (f"error: checkpoint `{run / 'checkpoint.npz'}` does not fit model `mlp`: parameter "
                   "`dense_0.weight` is `float32[4, 3]` in the checkpoint but `float64[4, 3]` in the model\n"
                   "hint: the weights are `float32`; pass `--dtype float32` to use them\n")


# ---- data files -------------------------------------------------------------------------------------
SPECS = [{"name": "x", "dtype": "float32", "shape": ["B", 4]}]


def test_float64_values_too_large_for_float32_are_named_without_a_numpy_warning(tmp_path):
    x = np.zeros((3, 4))
    x[1, 2] = 1e39
    np.savez(tmp_path / "big.npz", x=x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError) as e:
            data.load_npz(tmp_path / "big.npz", SPECS)
    assert e.value.message == (f"array `x` in training data `{tmp_path / 'big.npz'}` has the value 1e+39 at index "
                               "(1, 2), which does not fit in `float32`")
    assert e.value.hint == ("`float32` holds magnitudes up to 3.4e+38; rescale the data "
                            "or compile with `dtype=\"float64\"` (of `dslc.compile`)")


def test_npy_file_as_data(workdir, tmp_path, capsys):
    (workdir / "mlp.dl").write_text(MLP)
    np.save(tmp_path / "plain.npy", np.zeros((4, 4)))
    err = cli_error(capsys, ["train", workdir / "mlp.dl", "--data", tmp_path / "plain.npy", "--epochs", "1",
                             "--batch-size", "2", "-o", tmp_path / "run"])
    assert err == (f"error: cannot read training data `{tmp_path / 'plain.npy'}`: it is a single `.npy` array, "
                   "expected an `.npz` archive of named arrays\n"
                   "hint: save the arrays with `numpy.savez(path, x=..., y=...)`\n")


@pytest.mark.parametrize("content, reason", [(b"hello\n", "it is not a zip archive"), (b"", "the file is empty")])
def test_text_file_as_npz_says_it_is_not_an_archive(tmp_path, content, reason):
    (tmp_path / "notnpz.npz").write_bytes(content)
    with pytest.raises(DataError) as e:
        data.load_npz(tmp_path / "notnpz.npz", SPECS)
    assert e.value.message == (f"cannot read training data `{tmp_path / 'notnpz.npz'}`: "
                               f"not a valid `.npz` archive ({reason})")


@pytest.mark.parametrize("dtype, y, value, index", [("float32", [[0.0], [1.0], [5.0]], "5.0", "(2, 0)"),
                                                    ("int64", [[0], [-1], [1]], "-1", "(1, 0)")])
def test_probability_targets_out_of_range(dtype, y, value, index):
    specs = [{"name": "y", "dtype": dtype, "shape": ["B", 1], "role": "target", "range": [0, 1]}]
    with pytest.raises(DataError) as e:
        data.check_arrays({"y": y}, specs, "training data `t.npz`")
    assert e.value.message == f"value {value} out of range [0, 1] in array `y` at index {index}"
    assert e.value.hint == ("`y` holds probabilities (e.g. 0/1 labels), which must lie in [0, 1]; "
                            "check training data `t.npz`")
    assert data.check_arrays({"y": np.array([[0], [1], [1]])}, specs, "t")["y"].dtype == np.dtype(dtype)


# ---- batch size ---------------------------------------------------------------------------------------
def test_batch_size_larger_than_the_data_warns(mlp_run, tmp_path):
    program, _ = mlp_run
    reporter = Warnings()
    fit(program, xy(10), epochs=1, batch_size=32, out_dir=tmp_path, reporter=reporter)
    assert reporter.messages == [("the batch size (32) is larger than the 10 training samples: "
                                  "each epoch is one batch of 10")]
    fit(program, xy(10), epochs=1, batch_size=32, out_dir=tmp_path, resume=True, reporter=reporter)
    assert reporter.messages[-1] == ("the checkpoint already has 1 epoch of training; nothing to do "
                                     "(raise the number of epochs to continue)")


def test_binary_cross_entropy_targets_outside_0_1_are_refused(workdir, tmp_path, capsys):
    (workdir / "xor.dl").write_text("""
model xor {
    input  x: f32[B, 2]
    target y: f32[B, 1]
    logits = x |> dense(4) |> tanh |> dense(1)
    output prob = sigmoid(logits)
    loss      binary_cross_entropy(logits, y)
    optimizer sgd(lr = 0.5)
}
""")
    np.savez(tmp_path / "xor_y5.npz", x=np.zeros((4, 2), np.float32), y=np.array([[0], [1], [1], [5]], np.float32))
    err = cli_error(capsys, ["train", workdir / "xor.dl", "--data", tmp_path / "xor_y5.npz", "--epochs", "1",
                             "--batch-size", "4", "-o", tmp_path / "run"])
    assert err == ("error: value 5.0 out of range [0, 1] in array `y` at index (3, 0)\n"
                   "hint: `y` holds probabilities (e.g. 0/1 labels), which must lie in [0, 1]; "
                   f"check training data `{tmp_path / 'xor_y5.npz'}`\n")
    manifest = compile_text(workdir, (workdir / "xor.dl").read_text(), "xor.dl").manifest
    assert [t.get("range") for t in manifest["graphs"]["train"]["inputs"]] == [None, [0, 1]]
    assert [t.get("range") for t in manifest["graphs"]["eval"]["inputs"]] == [None, [0, 1]]
