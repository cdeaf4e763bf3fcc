"""More user mistakes the runtime, the Python API and the command line must answer with a clear
`error:`/`hint:` and the right exit code: ONNX Runtime failing on the data (an index the model computes
out of range), resuming on other training data, wrongly typed API arguments, misleading hints, and
command lines that only look valid."""
from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import compile_text
from test_user_errors_runtime import MLP

import dslc
from dslc import cli
from dslc.diagnostics import DataError
from dslc.fsutil import WriteError
from dslc.runtime import checkpoint, session
from dslc.runtime.train import Reporter, fit

EMBED = """
model emb {
    input ids: i64[B, 3]
    target y: f32[B, 3, 4]
    e = (ids + 5) |> embedding(8, 4)
    output e
    loss mse(e, y)
    optimizer sgd()
}
"""
EMBED_INFER = """
model embi {
    input ids: i64[B, 3]
    e = (ids + 5) |> embedding(8, 4)
    output e
}
"""
SEQ = """
model seq {
    input a: f32[B, T, 2]
    input b: f32[B, T, 2]
    target y: f32[B, 1]
    h = sum(a + b, 1) |> dense(1)
    output h
    loss mse(h, y)
    optimizer sgd()
}
"""
BOOL_PARAM = """
model m(flag = false) {
    input x: f32[B, 3]
    target y: f32[B, 4]
    h = x |> dense(4, bias = flag)
    output h
    loss mse(h, y)
    optimizer sgd()
}
"""
GAN_LIKE = """
model two {
    input x: f32[B, 2]
    target y: f32[B, 1]
    output a = x |> dense(1, name = "first")
    b = x |> dense(1, name = "second")
    objective one {
        loss mse(a, y)
        optimizer sgd(lr = 0.1)
        update "first"
    }
    objective other {
        loss mse(b, y)
        optimizer sgd(lr = 0.1)
        update "second"
    }
}
"""


class Warnings(Reporter):
    def __init__(self):
        self.messages = []

    def warn(self, message):
        self.messages.append(message)


def xy(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(n, 4)).astype(np.float32), "y": rng.normal(size=(n, 1)).astype(np.float32)}


def ids_data(n: int = 2) -> dict[str, np.ndarray]:
    return {"ids": np.tile(np.array([[0, 3, 7]]), (n, 1)), "y": np.zeros((n, 3, 4), np.float32)}


@pytest.fixture(scope="module")
def mlp(workdir):
    return compile_text(workdir, MLP, "mlp.dl")


@pytest.fixture(scope="module")
def mlp_run(mlp, tmp_path_factory):
    run = tmp_path_factory.mktemp("mlp_run")
    fit(mlp, xy(8), epochs=1, batch_size=4, out_dir=run)
    return run


# ---- 1. ONNX Runtime failing on the user's data ------------------------------------------------------
def test_an_index_out_of_range_computed_in_the_model_stops_train_with_a_data_error(workdir, tmp_path, capfd):
    (workdir / "emb.dl").write_text(EMBED)
    np.savez(tmp_path / "emb.npz", **ids_data())
    code = cli.main(["train", str(workdir / "emb.dl"), "--data", str(tmp_path / "emb.npz"), "--epochs", "1",
                     "--batch-size", "2", "-o", str(tmp_path / "run")])
    err = capfd.readouterr().err
    assert code == 3, err
    first, hint = err.splitlines()  # and no red ONNX Runtime log line
    assert re.fullmatch(r"error: running the training step failed on this data: an index out of range \(e\.g\. an "
                        r"`embedding` id the model computes\) in node `gather_rows_\d+/Gather` \(Gather: indices "
                        r"element out of data bounds, idx=(8|10|12) must be within the inclusive range \[-8,7\]\)",
                        first), first
    assert hint == ("hint: check the values the model computes from the data (e.g. indices must lie within the "
                    "table an `embedding` or `gather` indexes)")


def test_an_index_out_of_range_computed_in_the_model_stops_predict_with_a_data_error(workdir, capfd):
    program = compile_text(workdir, EMBED_INFER, "embi.dl")
    for batch_size in (None, 1):  # all at once, and in batches
        with pytest.raises(DataError) as e:
            program.predict({"ids": np.array([[0, 1, 7], [0, 0, 0]])}, batch_size=batch_size)
        assert e.value.message.startswith("running the inference graph failed on this data: an index out of range")
        assert "idx=12" in e.value.message
    assert capfd.readouterr().err == ""
    assert program.predict({"ids": np.array([[0, 1, 2]])})["e"].shape == (1, 3, 4)


def test_run_failures_without_a_node_and_out_of_memory():
    e = session.run_failure(RuntimeError("Error in execution: something odd"), "the evaluation graph")
    assert e.message == "running the evaluation graph failed on this data: something odd"
    assert "bug in dslc" in e.hint
    e = session.run_failure(RuntimeError("Failed to allocate memory for requested buffer"), "the training step")
    assert (e.message, e.hint) == ("out of memory while running the training step", "use a smaller `batch_size=...`")


# ---- 2. resuming on other training data ----------------------------------------------------------------
@pytest.mark.parametrize("data, warning", [
    (xy(8), None),
    (xy(8, seed=1), "the training data differs from the checkpoint's: the run will not match an uninterrupted one"),
    (xy(6), ("the training data differs from the checkpoint's (6 samples now, 8 before): the run will not "
             "match an uninterrupted one")),
])
def test_resume_on_other_training_data_warns(mlp, tmp_path, data, warning):
    fit(mlp, xy(8), epochs=1, batch_size=4, out_dir=tmp_path)
    reporter = Warnings()
    fit(mlp, data, epochs=2, batch_size=4, out_dir=tmp_path, resume=True, reporter=reporter)
    assert reporter.messages == ([warning] if warning else [])
    meta = checkpoint.load_checkpoint(tmp_path).meta
    assert meta["data"]["rows"] == len(data["x"]) and len(meta["data"]["blake2b"]) == 32


def test_resume_from_a_checkpoint_without_a_data_fingerprint_does_not_warn(mlp, tmp_path):
    fit(mlp, xy(8), epochs=1, batch_size=4, out_dir=tmp_path)
    old = checkpoint.load_checkpoint(tmp_path)
    del old.meta["data"]  # written by a dslc from before the fingerprint
    checkpoint.save_checkpoint(tmp_path / "checkpoint.npz", old.params, old.state, old.meta)
    reporter = Warnings()
    fit(mlp, xy(8, seed=1), epochs=2, batch_size=4, out_dir=tmp_path, resume=True, reporter=reporter)
    assert reporter.messages == []


# ---- 3. the Python API raises dslc's exceptions -------------------------------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda d: dslc.compile(d / "nope.dl"), "cannot read `{d}/nope.dl`: No such file or directory"),
    (lambda d: dslc.compile(d), "cannot read `{d}`: not a regular file (a folder)"),
    (lambda d: dslc.compile(d / "mlp.dl", dtype="float16"), "unknown dtype `float16`"),
    (lambda d: dslc.compile(d / "mlp.dl", seed="x"), "the seed must be a non-negative integer, got 'x'"),
    (lambda d: dslc.compile(d / "mlp.dl", defines="hidden=3"), "`defines` must be a dict of model parameters, not `str`"),
    (lambda d: dslc.compile(d / "mlp.dl", hidden=None),
     "model parameter `hidden` must be a number, `True`/`False` or a string, got None (`NoneType`)"),
    (lambda d: dslc.compile(d / "mlp.dl", hidden=[1, 2]),
     "model parameter `hidden` must be a number, `True`/`False` or a string, got [1, 2] (`list`)"),
    (lambda d: dslc.compile(123), "the model path must be a string or a path, not `int`"),
])
def test_compile_arguments(workdir, call, message):
    (workdir / "mlp.dl").write_text(MLP)
    with pytest.raises(DataError) as e:
        call(workdir)
    assert e.value.message == message.format(d=workdir)


def test_compile_passes_booleans_as_true_and_false(workdir):
    (workdir / "flag.dl").write_text(BOOL_PARAM)
    params = lambda program: [t["name"] for t in program.manifest["graphs"]["train"]["params"]]
    assert params(dslc.compile(workdir / "flag.dl", flag=True)) == ["dense_0.weight", "dense_0.bias"]
    assert params(dslc.compile(workdir / "flag.dl", flag=False)) == ["dense_0.weight"]
    assert params(dslc.compile(workdir / "flag.dl", defines={"flag": True})) == ["dense_0.weight", "dense_0.bias"]


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": "4"}, "`batch_size` must be an integer, got '4' (`str`)"),
    ({"batch_size": 3.5}, "`batch_size` must be an integer, got 3.5 (`float`)"),
    ({"batch_size": True}, "`batch_size` must be an integer, got True (`bool`)"),
    ({"threads": "2"}, "`threads` must be an integer, got '2' (`str`)"),
    ({"threads": -1}, "the number of threads must be at least 1, got -1"),
    ({"device": 0}, "the device must be a string, got 0 (`int`)"),
])
def test_predict_arguments(mlp, mlp_run, kwargs, message):
    with pytest.raises(DataError) as e:
        mlp.predict({"x": np.zeros((2, 4), np.float32)}, mlp_run, **kwargs)
    assert e.value.message == message


def test_predict_on_no_samples_is_refused_as_train_and_evaluate_refuse_it(mlp, mlp_run, workdir, tmp_path, capsys):
    with pytest.raises(DataError) as e:
        mlp.predict({"x": np.zeros((0, 4), np.float32)}, mlp_run)
    assert e.value.message == "the input data has no samples"
    (tmp_path / "header_only.csv").write_text("x_0,x_1,x_2,x_3\n")
    assert cli.main(["predict", str(workdir / "mlp.dl"), "--weights", str(mlp_run), "--input",
                     str(tmp_path / "header_only.csv"), "-o", str(tmp_path / "y.npz")]) == 3
    assert capsys.readouterr().err == "error: the input data has no samples\n"
    assert not (tmp_path / "y.npz").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": "2"}, "`epochs` must be an integer, got '2' (`str`)"),
    ({"epochs": 1.5}, "`epochs` must be an integer, got 1.5 (`float`)"),
    ({"batch_size": True}, "`batch_size` must be an integer, got True (`bool`)"),
    ({"threads": -1}, "the number of threads must be at least 1, got -1"),
    ({"train": {1: np.zeros(3)}}, "training data must map array names (strings) to arrays, got the key 1"),
    ({"train": {"x": [[0.0] * 4, [0.0] * 3], "y": [[0.0], [1.0]]}},
     "array `x` in training data is not a regular array (setting an array element with a sequence."),
])
def test_train_arguments(mlp, tmp_path, kwargs, message):
    args = {"train": xy(4), "epochs": 1, "batch_size": 2, "out_dir": tmp_path / "run"} | kwargs
    with pytest.raises(DataError) as e:
        mlp.train(**args)
    assert e.value.message.startswith(message)


def test_write_errors_are_data_errors(mlp, mlp_run, tmp_path, capsys):
    (tmp_path / "f").write_text("")
    for call in (lambda: mlp.export(mlp_run, f"{tmp_path}/"), lambda: mlp.build(tmp_path / "f"),
                 lambda: mlp.train(xy(4), epochs=1, batch_size=2, out_dir=tmp_path / "f" / "run")):
        with pytest.raises(DataError) as e:
            call()
        assert isinstance(e.value, WriteError) and isinstance(e.value, OSError) and e.value.hint == ""
        assert e.value.message.startswith("cannot write `") and str(e.value) == e.value.message
    assert cli.main(["export", str(tmp_path / "mlp.dl"), "--weights", str(mlp_run), "-o", f"{tmp_path}/"]) == 3
    assert capsys.readouterr().err.endswith(f"error: cannot write `{tmp_path}/`: it is a directory; name the file "
                                            "to write\n")


@pytest.fixture(autouse=True)
def _mlp_file(workdir, tmp_path):
    (tmp_path / "mlp.dl").write_text(MLP)


# ---- 4. hints that say the right thing -----------------------------------------------------------------
def test_a_near_name_in_the_data_says_which_is_which(mlp, mlp_run):
    with pytest.raises(DataError) as e:
        mlp.predict({"xs": np.zeros((2, 4), np.float32)}, mlp_run)
    assert e.value.hint == "the data has `xs` but the model reads `x`: rename `xs` to `x`"


def test_only_the_batch_dimension_is_called_the_number_of_samples(workdir):
    program = compile_text(workdir, SEQ, "seq.dl")
    bad_t = {"a": np.zeros((2, 3, 2), np.float32), "b": np.zeros((2, 5, 2), np.float32), "y": np.zeros((2, 1), np.float32)}
    with pytest.raises(DataError) as e:
        program.predict(bad_t, batch_size=None, weights={t["name"]: np.zeros(t["shape"], np.float32)
                                                          for t in program.manifest["graphs"]["train"]["params"]})
    assert e.value.hint == "`T` must be the same size in every array"
    bad_b = {**bad_t, "b": np.zeros((3, 3, 2), np.float32)}
    with pytest.raises(DataError) as e:
        fit(program, bad_b, epochs=1, batch_size=2, out_dir=workdir / "never")
    assert e.value.hint == "`B` must be the same size in every array (it is the number of samples)"


def test_a_damaged_checkpoint_says_so(mlp, mlp_run, tmp_path):
    (tmp_path / "cut.npz").write_bytes((mlp_run / "checkpoint.npz").read_bytes()[:300])
    with pytest.raises(DataError) as e:
        mlp.predict(xy(2), tmp_path / "cut.npz")
    assert e.value.message.startswith(f"cannot read checkpoint `{tmp_path / 'cut.npz'}`: not a valid `.npz` archive")
    assert e.value.hint == ("the checkpoint is damaged (e.g. cut short by a full disk or an interrupted copy); "
                            "use another checkpoint or train again")


def test_weights_lacking_a_parameter_say_so(mlp, mlp_run):
    weights = dict(checkpoint.load_checkpoint(mlp_run).params)
    del weights["dense_0.weight"]
    with pytest.raises(DataError) as e:
        mlp.predict(xy(2), weights)
    assert e.value.message == ("the weights do not fit model `mlp`: the weights lack parameter `dense_0.weight`, "
                               "which the model has")


# ---- 5. the command line -----------------------------------------------------------------------------
def usage_error(capsys, argv) -> str:
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: dslc ")
    return err.splitlines()[-1]


def test_device_accepts_cuda_n(tmp_path, capsys, monkeypatch):
    seen = []
    monkeypatch.setattr(dslc.Program, "train", lambda self, *a, **kw: seen.append(kw["device"]))
    np.savez(tmp_path / "d.npz", **xy(4))
    for device in ("cpu", "cuda", "cuda:1"):
        assert cli.main(["train", str(tmp_path / "mlp.dl"), "--data", str(tmp_path / "d.npz"), "--epochs", "1",
                         "--batch-size", "2", "-o", str(tmp_path / "r"), "--device", device]) == 0
    assert seen == ["cpu", "cuda", "cuda:1"]
    for device in ("gpu", "cuda:x", "cpu:0"):
        assert usage_error(capsys, ["predict", tmp_path / "mlp.dl", "--input", "x.npz", "-o", "y.npz",
                                    "--device", device]).endswith(
            f"argument --device: expected `cpu`, `cuda` or `cuda:N`, got `{device}`")


def test_lr_on_a_model_with_several_objectives_is_a_usage_error(workdir, tmp_path, capsys):
    (workdir / "two.dl").write_text(GAN_LIKE)
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2), np.float32), y=np.zeros((4, 1), np.float32))
    line = usage_error(capsys, ["train", workdir / "two.dl", "--data", tmp_path / "d.npz", "--epochs", "1",
                                "--batch-size", "2", "-o", tmp_path / "run", "--lr", "0.1"])
    assert line == ("dslc train: error: `--lr`: model `two` has several objectives, each with its own learning "
                    "rate; set each objective's `lr` in the model (or with -D) instead")
    assert not (tmp_path / "run").exists()


def test_training_a_model_without_a_loss_is_a_model_error(workdir, tmp_path, capsys):
    (workdir / "embi.dl").write_text(EMBED_INFER.lstrip())
    np.savez(tmp_path / "d.npz", ids=np.zeros((2, 3), np.int64))
    assert cli.main(["train", str(workdir / "embi.dl"), "--data", str(tmp_path / "d.npz"), "--epochs", "1",
                     "--batch-size", "2", "-o", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err == (f"{workdir / 'embi.dl'}:1:1: error: model `embi` has no loss, so it cannot be "
                                       "trained\n"
                                       "  |\n"
                                       "1 | model embi {\n"
                                       "  | ^^^^^^^^^^ this model has no `loss`\n"
                                       "hint: add a `loss` and an `optimizer` to the model\n")


def test_a_define_given_twice_is_a_usage_error(tmp_path, capsys):
    line = usage_error(capsys, ["check", tmp_path / "mlp.dl", "-D", "hidden=3", "-D", "hidden=400"])
    assert line == "dslc check: error: `-D hidden` is given twice (`hidden=3` and `hidden=400`)"


@pytest.mark.parametrize("flags, flag", [(["--emit", "ir"], "--emit ir"),
                                         (["--print-ir-after", "infer_shapes"], "--print-ir-after")])
def test_build_printing_ir_refuses_an_output_directory(tmp_path, capsys, flags, flag):
    line = usage_error(capsys, ["build", tmp_path / "mlp.dl", *flags, "-o", tmp_path / "out"])
    assert line == f"dslc build: error: argument -o: `{flag}` prints the IR and writes nothing; drop `-o`"
    assert not (tmp_path / "out").exists()
