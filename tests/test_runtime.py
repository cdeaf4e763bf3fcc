"""The runtime against a hand-built program (tests/manifest_graphs.py): atomic writes, weights,
sessions, data checks, the training loop (numpy parity, exact resume, seeds), predict and export."""
from __future__ import annotations

import errno
import io
import json
import os
import re
import sys
import types

import numpy as np
import onnxruntime as ort
import pytest
from manifest_graphs import LR, W0, linreg_data, linreg_program, numpy_sgd

import dslc
from dslc import fsutil
from dslc.diagnostics import DataError
from dslc.emit.weights import bind_weights, read_initializers
from dslc.runtime import checkpoint, data, devices, session
from dslc.runtime.progress import ConsoleReporter, format_epoch
from dslc.runtime.run_randomness import epoch_order, step_seed
from dslc.runtime.train import Reporter, fit

F32 = np.float32


def temp_files(directory) -> list[str]:
    return [p for p in os.listdir(directory) if p.endswith(".tmp")]


def params_of(run_dir):
    ckpt = checkpoint.load_checkpoint(run_dir)
    return ckpt.params, ckpt.state, ckpt.meta


class Recorder(Reporter):
    def __init__(self):
        self.events = []

    def start(self, info): self.events.append(("start", info))
    def warn(self, message): self.events.append(("warn", message))
    def epoch_start(self, epoch, epochs, steps): self.events.append(("epoch_start", epoch))
    def epoch_end(self, record): self.events.append(("epoch_end", record["epoch"]))
    def end(self, history, info): self.events.append(("end", len(history)))

    def warnings(self):
        return [e[1] for e in self.events if e[0] == "warn"]


# ---- fsutil: every write is atomic -------------------------------------------------------------
def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a.txt"
    fsutil.atomic_write_text(target, "one")
    fsutil.atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert temp_files(tmp_path) == []


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "a.bin"
    fsutil.atomic_write_bytes(target, b"old")

    def torn(f):
        f.write(b"half of the new")
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        fsutil.atomic_write(target, torn)
    assert target.read_bytes() == b"old" and temp_files(tmp_path) == []

    def no_fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", no_fsync)
    with pytest.raises(fsutil.WriteError) as e:
        fsutil.atomic_write_bytes(target, b"new")
    assert e.value.filename == str(target) and e.value.strerror == "Input/output error"
    assert target.read_bytes() == b"old" and temp_files(tmp_path) == []


def test_atomic_write_all_changes_no_file_when_one_fails(tmp_path):
    first, second = tmp_path / "a.onnx", tmp_path / "m.json"
    fsutil.atomic_write_all({first: lambda f: f.write(b"old a"), second: lambda f: f.write(b"old m")})

    def failing(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(fsutil.WriteError) as e:
        fsutil.atomic_write_all({first: lambda f: f.write(b"new a"), second: failing})
    assert e.value.filename == str(second) and e.value.strerror == "No space left on device"
    assert first.read_bytes() == b"old a" and second.read_bytes() == b"old m"  # the first was written, not renamed
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("name, reason", [("dir/", "it is a directory; name the file to write"),
                                          ("dir", "it is a directory; name the file to write"),
                                          ("nothing/x.onnx", "No such file or directory (`{tmp}/nothing`)"),
                                          ("file/x.onnx", "Not a directory (`{tmp}/file`)")])
def test_writes_to_a_path_that_cannot_be_a_file_fail_up_front(tmp_path, name, reason):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("")
    with pytest.raises(fsutil.WriteError) as e:
        fsutil.atomic_write_text(f"{tmp_path}/{name}", "x")
    assert (e.value.filename, e.value.strerror) == (f"{tmp_path}/{name}", reason.format(tmp=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file"]


def test_new_files_get_the_usual_mode(tmp_path):
    path = fsutil.atomic_write_text(tmp_path / "m.json", "{}")
    assert path.stat().st_mode & 0o777 == fsutil._default_mode()


def test_atomic_save_npz_round_trip(tmp_path):
    path = fsutil.atomic_save_npz(tmp_path / "c.npz", {"param/lin.W": np.ones((3, 1), F32), "meta": np.array("{}")})
    with np.load(path) as z:
        assert sorted(z.files) == ["meta", "param/lin.W"]


def test_checkpoint_write_failure_mid_training_keeps_previous_checkpoint(tmp_path, monkeypatch):
    program, d = linreg_program(), linreg_data()
    fit(program, d, epochs=1, batch_size=32, out_dir=tmp_path)
    before = (tmp_path / "checkpoint.npz").read_bytes()

    def torn_write(f, arrays):
        f.write(b"PK\x03\x04 torn")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "write_npz", torn_write)
    with pytest.raises(fsutil.WriteError, match="No space left"):
        fit(program, d, epochs=2, batch_size=32, out_dir=tmp_path, resume=True)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before
    assert temp_files(tmp_path) == []
    assert checkpoint.load_checkpoint(tmp_path).meta["epoch"] == 1


# ---- emit.weights ------------------------------------------------------------------------------
def test_read_and_bind_weights():
    infer = linreg_program().graphs["infer"]
    inits = read_initializers(infer)
    np.testing.assert_array_equal(inits["lin.W"], W0[:3].astype(F32))
    new_w = np.full((3, 1), 7, F32)
    assert np.array_equal(read_initializers(bind_weights(infer, {"lin.W": new_w}))["lin.W"], new_w)


@pytest.mark.parametrize("weights, message, hint", [
    ({"lin.WW": np.zeros((3, 1), F32)}, "the model has no weight named `lin.WW`", "did you mean `lin.W`?"),
    ({"lin.W": np.zeros((4, 1), F32)}, "weight `lin.W` is `float32[4, 1]`, the model expects `float32[3, 1]`", ""),
    ({"lin.b": np.zeros(1, np.float64)}, "weight `lin.b` is `float64[1]`, the model expects `float32[1]`", ""),
])
def test_bind_weights_rejects_foreign_weights(weights, message, hint):
    with pytest.raises(DataError) as e:
        bind_weights(linreg_program().graphs["infer"], weights)
    assert (e.value.message, e.value.hint) == (message, hint)


# ---- sessions ----------------------------------------------------------------------------------
def test_cpu_session_uses_only_the_cpu_provider():
    s = devices.make_session(linreg_program().graphs["infer"], "cpu", threads=1)
    assert s.get_providers() == ["CPUExecutionProvider"]


def test_cuda_without_cuda_support_is_a_data_error(monkeypatch):
    monkeypatch.setattr(devices.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(DataError) as e:
        devices.make_session(linreg_program().graphs["infer"], "cuda")
    assert e.value.message == ("CUDA was requested but this onnxruntime has no CUDA support "
                               "(available providers: CPUExecutionProvider)")
    assert e.value.hint == ("install `dslc[gpu]` (onnxruntime-gpu) on a machine with an NVIDIA GPU and CUDA 12, "
                            "or use `--device cpu`")


def test_cuda_silent_fallback_is_detected(monkeypatch):
    # onnxruntime-gpu without a GPU lists CUDA, creates the session and quietly runs on the CPU;
    # the CPU package does the same when asked for a provider it lacks.
    monkeypatch.setattr(devices.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(DataError) as e:
        devices.make_session(linreg_program().graphs["infer"], "cuda")
    assert e.value.message.startswith("CUDA was requested but onnxruntime fell back to the CPU")
    assert e.value.hint == devices.CUDA_HINT


def test_cuda_session_creation_failure(monkeypatch):
    monkeypatch.setattr(devices.ort, "get_available_providers", lambda: ["CUDAExecutionProvider"])

    def refuse(*args, **kwargs):
        raise RuntimeError("libcublasLt.so.12: cannot open shared object file")

    monkeypatch.setattr(devices.ort, "InferenceSession", refuse)
    with pytest.raises(DataError, match="could not start it: libcublasLt"):
        devices.make_session(b"", "cuda:1")


def test_cuda_request_on_this_machine_fails_cleanly(tmp_path):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime with CUDA support is installed")
    with pytest.raises(DataError, match="^CUDA was requested but"):
        fit(linreg_program(), linreg_data(), epochs=1, batch_size=8, device="cuda", out_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cpu:0"])
def test_unknown_device(device):
    with pytest.raises(DataError, match=f"unknown device `{re.escape(device)}`"):
        devices.parse_device(device)


def test_train_step_matches_numpy_and_keeps_values_on_device():
    program, d = linreg_program(), linreg_data(n=10)
    spec = program.manifest["graphs"]["train"]
    step = session.TrainStep(program.graphs["train"], spec, threads=1, initial=program.initial_values())
    W, b = W0[:3].astype(F32), np.zeros(1, F32)
    for k in range(3):  # odd count: ends on the second buffer set
        out = step.step(d, {"lr": 0.05} if k == 1 else None)
        lr = F32(0.05 if k == 1 else LR)
        diff = d["x"] @ W + b - d["y"]
        assert out["loss"] == pytest.approx(float(np.mean(diff * diff)), rel=1e-6)
        g = diff * F32(2) / F32(diff.size)
        W, b = W - lr * (d["x"].T @ g), b - lr * g.sum(0)
    values = step.get_values()
    assert list(values) == ["lin.W", "lin.b", "opt.step"]
    np.testing.assert_allclose(values["lin.W"], W, atol=1e-6)
    assert values["opt.step"] == 3
    values["lin.W"][:] = 99  # a copy, not a view of the device buffer
    assert step.get_values()["lin.W"][0, 0] != 99


def test_train_step_set_values_and_evaluator():
    program, d = linreg_program(), linreg_data(n=12)
    step = session.TrainStep(program.graphs["train"], program.manifest["graphs"]["train"], threads=1,
                             initial=program.initial_values())
    new = {"lin.W": np.ones((3, 1), F32), "lin.b": np.full(1, 2, F32), "opt.step": np.array(5)}
    step.set_values(new)
    assert np.array_equal(step.get_values()["lin.b"], [2]) and step.get_values()["opt.step"] == 5
    evaluator = session.Evaluator(program.graphs["eval"], program.manifest["graphs"]["eval"], threads=1)
    diff = d["x"] @ new["lin.W"] + new["lin.b"] - d["y"]
    assert evaluator.run(d, step.ortvalues())["loss"] == pytest.approx(float(np.mean(diff ** 2)), rel=1e-6)
    with pytest.raises(DataError, match="`lin.W` is `float32\\[2, 1\\]`, the model expects `float32\\[3, 1\\]`"):
        step.set_values({**new, "lin.W": np.ones((2, 1), F32)})


def test_predictor_batches_and_concatenates():
    program = linreg_program()
    x = linreg_data(n=23)["x"]
    p = session.Predictor(program.graphs["infer"], program.manifest["graphs"]["infer"], threads=1)
    whole = p.run({"x": x})["pred"]
    assert np.array_equal(p.run({"x": x}, batch_size=5)["pred"], whole)
    np.testing.assert_allclose(whole, x @ W0[:3].astype(F32), atol=1e-6)


# ---- data checks -------------------------------------------------------------------------------
SPECS = [{"name": "image", "dtype": "float32", "shape": ["B", 4], "role": "input"},
         {"name": "digit", "dtype": "int64", "shape": ["B"], "role": "target", "classes": 10}]


def save(tmp_path, **arrays):
    path = tmp_path / "train.npz"
    np.savez(path, **arrays)
    return path


def load_error(path, specs=SPECS) -> DataError:
    with pytest.raises(DataError) as e:
        data.load_npz(path, specs)
    return e.value


def test_load_npz_accepts_and_casts(tmp_path):
    path = save(tmp_path, image=np.zeros((5, 4)), digit=np.arange(5, dtype=np.int32), extra=np.zeros(3))
    arrays = data.load_npz(path, SPECS)
    assert list(arrays) == ["image", "digit"]
    assert arrays["image"].dtype == np.float32 and arrays["digit"].dtype == np.int64
    float_labels = data.load_npz(save(tmp_path, image=np.zeros((2, 4), F32), digit=np.array([3.0, 9.0])), SPECS)
    assert float_labels["digit"].tolist() == [3, 9]


def test_missing_file(tmp_path):
    e = load_error(tmp_path / "nope.npz")
    assert e.message == f"cannot read `{tmp_path / 'nope.npz'}`: No such file or directory"


def test_not_an_npz(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"certainly not a zip file")
    assert "not a valid `.npz` archive" in load_error(tmp_path / "bad.npz").message


def test_missing_array_names_it_and_suggests(tmp_path):
    path = save(tmp_path, images=np.zeros((5, 4), F32), digit=np.arange(5))
    e = load_error(path)
    assert e.message == f"training data `{path}` has no array `image` (arrays present: `images`, `digit`)"
    assert e.hint == "the data has `images` but the model reads `image`: rename `images` to `image`"
    e = load_error(save(tmp_path, pixels=np.zeros((5, 4), F32), digit=np.arange(5)))
    assert e.hint == "the model reads `image` `float32[B, 4]`, `digit` `int64[B]`"


def test_wrong_shape(tmp_path):
    path = save(tmp_path, image=np.zeros((5, 3), F32), digit=np.arange(5))
    assert load_error(path).message == f"array `image` in training data `{path}` has shape `[5, 3]`, expected `[B, 4]`"
    path = save(tmp_path, image=np.zeros((5, 2, 2), F32), digit=np.arange(5))
    assert load_error(path).message == f"array `image` in training data `{path}` has shape `[5, 2, 2]`, expected `[B, 4]`"


def test_inconsistent_symbolic_dim(tmp_path):
    path = save(tmp_path, image=np.zeros((5, 4), F32), digit=np.arange(4))
    e = load_error(path)
    assert e.message == f"arrays in training data `{path}` disagree on dimension `B`: `image` has B = 5 but `digit` has B = 4"


def test_wrong_dtype(tmp_path):
    path = save(tmp_path, image=np.full((2, 4), "a"), digit=np.arange(2))
    assert load_error(path).message == f"array `image` in training data `{path}` has dtype `<U1`, expected `float32`"
    path = save(tmp_path, image=np.zeros((3, 4), F32), digit=np.array([1.0, 2.5, 3.0]))
    e = load_error(path)
    assert e.message == (f"array `digit` in training data `{path}` has dtype `float64` with the non-integer value 2.5 "
                         "at index 1, expected `int64`")


def test_labels_out_of_range(tmp_path):
    digits = np.zeros(60, np.int64)
    digits[57] = 12
    path = save(tmp_path, image=np.zeros((60, 4), F32), digit=digits)
    e = load_error(path)
    assert e.message == "label 12 out of range for 10 classes in array `digit` at index 57"
    assert e.hint == f"class labels must lie in 0..9; check training data `{path}`"
    digits[57] = -1
    assert load_error(save(tmp_path, image=np.zeros((60, 4), F32), digit=digits)).message.startswith("label -1 out of range")


def test_non_finite_data(tmp_path):
    image = np.zeros((3, 4), F32)
    image[2, 1] = np.nan
    path = save(tmp_path, image=image, digit=np.arange(3))
    assert load_error(path).message == f"array `image` in training data `{path}` contains nan at index (2, 1)"
    huge = np.full((3, 4), 3e38, F32)  # finite, though their sum overflows
    assert data.load_npz(save(tmp_path, image=huge, digit=np.arange(3)), SPECS)["image"].max() == F32(3e38)


def test_dict_data_and_row_counts():
    arrays = data.load_data({"image": np.zeros((2, 4)), "digit": [1, 2]}, SPECS, "validation data")
    assert data.num_rows(arrays) == 2
    with pytest.raises(DataError, match="^validation data has no array `image`"):
        data.load_data({}, SPECS, "validation data")


# ---- the training loop -------------------------------------------------------------------------
def test_seed_formula_and_epoch_order():
    assert step_seed(0, 0) == 0 and step_seed(1, 5) == 1_000_008
    assert step_seed(5000, 7) == (5000 * 1_000_003 + 7) % 2**31
    assert np.array_equal(epoch_order(3, 2, 10), np.random.default_rng([3, 2]).permutation(10))


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-6), ("float64", 1e-12)])
def test_fit_matches_numpy_sgd_over_the_same_batches(tmp_path, dtype, tol):
    program, d = linreg_program(dtype), linreg_data(n=103, dtype=dtype)  # 103: a partial last batch
    history = fit(program, d, epochs=3, batch_size=16, seed=7, out_dir=tmp_path)
    W, b, losses = numpy_sgd(W0[:3].astype(dtype), np.zeros(1, dtype), d, epochs=3, batch_size=16, seed=7)
    params, state, _ = params_of(tmp_path)
    np.testing.assert_allclose(params["lin.W"], W, rtol=0, atol=tol)
    np.testing.assert_allclose(params["lin.b"], b, rtol=0, atol=tol)
    np.testing.assert_allclose([h["loss"] for h in history], losses, rtol=tol)
    assert losses[-1] < losses[0] / 10
    assert state["opt.step"] == 3 * 7 and [h["steps"] for h in history] == [7, 14, 21]


def test_lr_override(tmp_path):
    d = linreg_data(n=40)
    fit(linreg_program(), d, epochs=2, batch_size=8, lr=0.02, out_dir=tmp_path)
    W, _, _ = numpy_sgd(W0[:3].astype(F32), np.zeros(1, F32), d, epochs=2, batch_size=8, seed=0, lr=0.02)
    np.testing.assert_allclose(params_of(tmp_path)[0]["lin.W"], W, atol=1e-6)


def test_validation_uses_the_eval_graph_with_current_params(tmp_path):
    d, v = linreg_data(n=50), linreg_data(n=21, seed=1)
    history = fit(linreg_program(), d, v, epochs=2, batch_size=8, out_dir=tmp_path)
    params = params_of(tmp_path)[0]
    diff = v["x"] @ params["lin.W"] + params["lin.b"] - v["y"]
    assert history[-1]["val_loss"] == pytest.approx(float(np.mean(diff ** 2)), rel=1e-5)
    assert list(history[-1]) == ["epoch", "steps", "loss", "mse", "val_loss", "val_mse", "lr", "time", "samples_per_s"]


def test_run_directory_contents(tmp_path):
    program = linreg_program()
    history = fit(program, linreg_data(n=20), epochs=2, batch_size=8, seed=3, out_dir=tmp_path / "run")
    run = tmp_path / "run"
    assert sorted(os.listdir(run)) == [".lock", "checkpoint.npz", "history.jsonl", "linreg.dslc.json",
                                       "linreg.eval.onnx", "linreg.infer.onnx", "linreg.init.onnx", "linreg.train.onnx",
                                       "metrics.csv"]
    assert json.loads((run / "linreg.dslc.json").read_text()) == program.manifest
    assert (run / "linreg.train.onnx").read_bytes() == program.graphs["train"]
    assert [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()] == history
    _, _, meta = params_of(run)
    assert {k: meta[k] for k in ("format", "model", "epoch", "global_step", "seed", "batch_size", "lr")} == {
        "format": "dslc-checkpoint/2", "model": "linreg", "epoch": 2, "global_step": 6, "seed": 3,
        "batch_size": 8, "lr": None}
    assert meta["manifest_sha256"] == checkpoint.manifest_hash(program.manifest) and meta["record"] == history[-1]
    assert "history" not in meta  # the checkpoint's size does not grow with the epochs


@pytest.mark.parametrize("with_seed", [False, True])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, with_seed):
    program, d, v = linreg_program(with_seed=with_seed), linreg_data(n=45), linreg_data(n=10, seed=2)
    kw = {"batch_size": 8, "seed": 11}
    straight = fit(program, d, v, epochs=4, out_dir=tmp_path / "straight", **kw)
    fit(program, d, v, epochs=2, out_dir=tmp_path / "split", **kw)
    recorder = Recorder()
    resumed = fit(program, d, v, epochs=4, out_dir=tmp_path / "split", resume=True, reporter=recorder, **kw)
    a, b = params_of(tmp_path / "straight"), params_of(tmp_path / "split")
    for group in (0, 1):
        assert a[group].keys() == b[group].keys()
        for name in a[group]:
            assert np.array_equal(a[group][name], b[group][name]), name
    strip = lambda h: [{k: x for k, x in e.items() if k not in ("time", "samples_per_s")} for e in h]
    assert strip(resumed) == strip(straight)
    assert [e for e in recorder.events if e[0] == "epoch_start"] == [("epoch_start", 3), ("epoch_start", 4)]
    assert recorder.warnings() == []
    if with_seed:  # every step k was fed step_seed(11, k), exactly once
        assert int(b[1]["noise.seed_sum"]) == sum(step_seed(11, k) for k in range(4 * 6))


def test_resume_warns_about_changed_settings_and_finished_runs(tmp_path):
    program, d = linreg_program(), linreg_data(n=20)
    fit(program, d, epochs=1, batch_size=8, out_dir=tmp_path)
    recorder = Recorder()
    fit(program, d, epochs=2, batch_size=4, out_dir=tmp_path, resume=True, reporter=recorder)
    assert recorder.warnings() == [("the batch size differs from the checkpoint's (4 now, 8 before): "
                                    "the run will not match an uninterrupted one")]
    recorder = Recorder()
    history = fit(program, d, epochs=2, batch_size=4, out_dir=tmp_path, resume=True, reporter=recorder)
    assert len(history) == 2 and "nothing to do" in recorder.warnings()[0]


def test_resume_refuses_another_model(tmp_path):
    d = linreg_data(n=20)
    fit(linreg_program(), d, epochs=1, batch_size=8, out_dir=tmp_path)
    wider = linreg_program(features=4)
    with pytest.raises(DataError) as e:
        fit(wider, linreg_data(n=20, features=4), epochs=2, batch_size=8, out_dir=tmp_path, resume=True)
    assert e.value.message == (f"checkpoint `{tmp_path / 'checkpoint.npz'}` does not fit model `linreg`: parameter "
                               "`lin.W` is `float32[3, 1]` in the checkpoint but `float32[4, 1]` in the model")
    assert e.value.hint == ("the model source differs from the one the weights were trained with (the model's defaults "
                            "both times); to train this model anew, train into a new directory")
    with pytest.raises(DataError, match="was written for model `linreg`, not `other`"):
        fit(linreg_program(name="other"), d, epochs=2, batch_size=8, out_dir=tmp_path, resume=True)


def test_fresh_run_refuses_to_overwrite_and_resume_needs_a_checkpoint(tmp_path):
    program, d = linreg_program(), linreg_data(n=10)
    with pytest.raises(DataError, match="there is no checkpoint to resume in"):
        fit(program, d, epochs=1, batch_size=8, out_dir=tmp_path, resume=True)
    fit(program, d, epochs=1, batch_size=8, out_dir=tmp_path)
    with pytest.raises(DataError) as e:
        fit(program, d, epochs=1, batch_size=8, out_dir=tmp_path)
    assert e.value.message == f"`{tmp_path}` already holds a training run (checkpoint.npz)"
    assert e.value.hint == "pass `resume=True` to continue it, or choose another output directory"


def test_diverging_loss_stops_with_a_hint(tmp_path):
    with pytest.raises(DataError) as e:
        fit(linreg_program(), linreg_data(n=64), epochs=50, batch_size=8, lr=1e3, out_dir=tmp_path)
    assert re.fullmatch(r"the loss became (inf|nan) at epoch \d+, step \d+ \(global step \d+\)", e.value.message)
    assert e.value.hint.startswith("lower the learning rate (`lr=...`, now 1000); ")


def test_a_loss_that_is_nan_before_any_update_does_not_blame_the_learning_rate(tmp_path):
    from helpers import compile_text

    program = compile_text(tmp_path, """
model logneg {
    input x: f32[B, 2]
    target y: f32[B, 1]
    h = x |> dense(1)
    output h
    loss mse(h, y) + mean(log(x))
    optimizer sgd(lr = 0.1)
}
""")
    d = {"x": np.full((8, 2), -1.0, np.float32), "y": np.zeros((8, 1), np.float32)}
    with pytest.raises(DataError) as e:
        fit(program, d, epochs=1, batch_size=4, out_dir=tmp_path / "run")
    assert e.value.message == "the loss is nan at epoch 1, step 1 (global step 0), before any update"
    assert e.value.hint == ("the learning rate is not the cause: check the data and the loss for a `log`, `sqrt` or "
                            "division of a value that can be 0 or negative; no checkpoint was written")


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, "the number of epochs must be at least 1, got 0"),
    ({"batch_size": 0}, "the batch size must be at least 1, got 0"),
    ({"seed": -1}, "the seed must be a non-negative integer, got -1"),
    ({"lr": float("nan")}, "the learning rate must be a finite non-negative number, got nan"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    args = {"epochs": 1, "batch_size": 4, "out_dir": tmp_path} | kwargs
    with pytest.raises(DataError) as e:
        fit(linreg_program(), linreg_data(n=8), **args)
    assert e.value.message == message


def test_validation_needs_an_eval_graph(tmp_path):
    program = linreg_program()
    del program.manifest["graphs"]["eval"], program.graphs["eval"]
    d = linreg_data(n=8)
    with pytest.raises(DataError, match="has no evaluation graph"):
        fit(program, d, d, epochs=1, batch_size=4, out_dir=tmp_path)
    assert len(fit(program, d, epochs=1, batch_size=4, out_dir=tmp_path)) == 1


# ---- progress ----------------------------------------------------------------------------------
def test_keras_style_epoch_line():
    record = {"epoch": 3, "steps": 30, "loss": 0.231, "accuracy": 0.94117, "val_loss": 0.25012,
              "val_accuracy": 0.93333, "time": 0.4, "samples_per_s": 4312.4}
    assert format_epoch(record, 10) == ("epoch 3/10 - 0.4s - 4312 samples/s - loss 0.2310 - accuracy 0.9412 - "
                                        "val_loss 0.2501 - val_accuracy 0.9333")


def test_console_reporter_without_a_terminal(tmp_path):
    out = io.StringIO()
    fit(linreg_program(), linreg_data(n=20), linreg_data(n=5), epochs=2, batch_size=8, out_dir=tmp_path,
        reporter=ConsoleReporter(out))
    lines = out.getvalue().splitlines()
    assert lines[0] == ("training linreg for 2 epochs on cpu: 20 samples, 5 validation samples, batch size 8 "
                        "(3 steps per epoch), 4 parameters")
    assert re.fullmatch(r"epoch 1/2 - \S+ - \d+ samples/s - loss \d\.\d{4} - mse \S+ - val_loss \S+ - val_mse \S+",
                        lines[1])
    assert lines[3].startswith("trained linreg for 2 epochs in ")
    assert lines[4] == f"weights: {tmp_path / 'checkpoint.npz'}"
    assert "\r" not in out.getvalue()


def test_console_reporter_counts_in_the_singular(tmp_path):
    out = io.StringIO()
    fit(linreg_program(), linreg_data(n=1), linreg_data(n=1), epochs=1, batch_size=8, out_dir=tmp_path,
        reporter=ConsoleReporter(out))
    lines = [line for line in out.getvalue().splitlines() if not line.startswith("warning: ")]
    assert lines[0] == ("training linreg for 1 epoch on cpu: 1 sample, 1 validation sample, batch size 8 "
                        "(1 step per epoch), 4 parameters")
    assert lines[2].startswith("trained linreg for 1 epoch in ")


def test_console_reporter_on_a_terminal(tmp_path):
    out = io.StringIO()
    reporter = ConsoleReporter(out, tty=True, refresh_every=0)
    program = linreg_program(name="lin[B, 3]")  # rich markup lookalike in the model name
    fit(program, linreg_data(n=20), epochs=2, batch_size=8, out_dir=tmp_path, reporter=reporter)
    text = out.getvalue()
    assert "training lin[B, 3] for 2 epochs" in text and "epoch 2/2 - " in text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_reporter_warnings_go_to_their_stream():
    """`dslc train > log` still shows its warnings on the terminal (stderr); where the progress and the
    warnings share a terminal, a warning is printed through the bar's console, above the live bar."""
    out, err = io.StringIO(), io.StringIO()
    reporter = ConsoleReporter(out, warnings=err)
    reporter.warn("the data has 3 rows")
    reporter.note("early stopping")
    assert (out.getvalue(), err.getvalue()) == ("early stopping\n", "warning: the data has 3 rows\n")
    out, err = _Terminal(), _Terminal()
    reporter = ConsoleReporter(out, tty=True, refresh_every=0, warnings=err)
    reporter.epoch_start(1, 2, 10)
    reporter.warn("the data has 3 rows")
    reporter.close()
    assert "warning: the data has 3 rows" in out.getvalue() and err.getvalue() == ""


# ---- Program: build, predict, export, compile --------------------------------------------------
def test_build_writes_graphs_and_manifest(tmp_path):
    program = linreg_program()
    paths = program.build(tmp_path / "out")
    assert [p.name for p in paths] == ["linreg.infer.onnx", "linreg.init.onnx", "linreg.train.onnx", "linreg.eval.onnx",
                                       "linreg.dslc.json"]
    assert temp_files(tmp_path / "out") == []


def test_a_failed_build_writes_none_of_its_files(tmp_path):
    program = linreg_program()
    (tmp_path / "linreg.dslc.json").mkdir()  # the manifest cannot be written: a directory is in the way
    with pytest.raises(fsutil.WriteError) as e:
        program.build(tmp_path)
    assert e.value.filename == str(tmp_path / "linreg.dslc.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linreg.dslc.json"]  # no graph without its manifest


def test_build_into_a_file_says_so(tmp_path):
    (tmp_path / "f").write_text("")
    for out, reason in [(tmp_path / "f", "it is a file, not a directory"),
                        (tmp_path / "f" / "sub", f"`{tmp_path / 'f'}` is a file, not a directory")]:
        with pytest.raises(fsutil.WriteError) as e:
            linreg_program().build(out)
        assert (e.value.filename, e.value.strerror) == (str(out), reason)


def test_predict_and_export_round_trip(tmp_path):
    program, d = linreg_program(), linreg_data(n=30)
    program.train(d, epochs=2, batch_size=8, out_dir=tmp_path / "run")
    params = params_of(tmp_path / "run")[0]
    x = linreg_data(n=37, seed=5)["x"]
    expected = x @ params["lin.W"] + params["lin.b"]
    y = program.predict({"x": x}, weights=tmp_path / "run", batch_size=10)
    np.testing.assert_allclose(y["pred"], expected, atol=1e-6)
    np.savez(tmp_path / "x.npz", x=x.astype(np.float64))
    from_file = program.predict(str(tmp_path / "x.npz"), weights=tmp_path / "run" / "checkpoint.npz")
    assert np.array_equal(from_file["pred"], y["pred"])
    assert np.array_equal(program.predict({"x": x}, weights=params)["pred"], y["pred"])

    exported = program.export(tmp_path / "run", tmp_path / "model.onnx")
    plain = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    assert [i.name for i in plain.get_inputs()] == ["x"]
    assert np.array_equal(plain.run(None, {"x": x})[0], y["pred"])
    assert temp_files(tmp_path) == []


def test_predict_weight_errors(tmp_path):
    program = linreg_program()
    x = {"x": np.zeros((2, 3), F32)}
    with pytest.raises(DataError) as e:
        program.predict(x, weights=tmp_path)
    assert e.value.message == f"cannot read `{tmp_path / 'checkpoint.npz'}`: No such file or directory"
    assert e.value.hint == f"train the model first with `program.train(..., out_dir=\"{tmp_path}\")`"  # as Python says it
    with pytest.raises(DataError, match="is trained, so it needs the weights of a training run"):
        program.predict(x)
    fit(linreg_program(features=4), linreg_data(n=8, features=4), epochs=1, batch_size=4, out_dir=tmp_path)
    with pytest.raises(DataError, match="does not fit model `linreg`: parameter `lin.W` is `float32\\[4, 1\\]`"):
        program.predict(x, weights=tmp_path)


def test_inference_only_program_predicts_without_weights():
    program = linreg_program()
    program.manifest["graphs"] = {"infer": program.manifest["graphs"]["infer"]}
    program.graphs = {"infer": program.graphs["infer"]}
    assert not program.trainable and program.num_parameters == 0
    assert program.predict({"x": np.ones((2, 3), F32)})["pred"].shape == (2, 1)
    with pytest.raises(DataError, match="has no loss, so it cannot be trained"):
        program.train({"x": np.ones((2, 3), F32)}, epochs=1, batch_size=1, out_dir="unused")


def test_compile_passes_defines_as_strings(monkeypatch):
    calls = []
    fake = types.ModuleType("dslc.compiler")
    program = types.SimpleNamespace(warnings=[])
    fake.compile_file = lambda path, defines, dtype, seed, import_path: calls.append(
        (path, defines, dtype, seed) + ((import_path,) if import_path else ())) or program
    monkeypatch.setitem(sys.modules, "dslc.compiler", fake)
    assert dslc.compile("m.dl", hidden=128, rate=0.5, act="relu") is program
    assert dslc.compile("m.dl", {"seed": 3, "hidden": 1}, dtype="float64", seed=7, hidden=2) is program
    assert dslc.compile("m.dl", import_path="lib") is program
    assert calls == [("m.dl", {"hidden": "128", "rate": "0.5", "act": "relu"}, "float32", 0),
                     ("m.dl", {"seed": "3", "hidden": "2"}, "float64", 7),
                     ("m.dl", {}, "float32", 0, ["lib"])]
    assert dslc.__version__ == "0.2.0" and dslc.Program is not None and dslc.DslcError and dslc.DataError


def test_embedding_ids_out_of_range_are_a_data_error(tmp_path):
    """Token ids are checked against the vocabulary before anything runs (ONNX Runtime's Gather would
    stop mid-run instead)."""
    from helpers import compile_text

    program = compile_text(tmp_path, """
        model tokens {
            input  ids: i64[B, 4]
            target y: f32[B, 2]
            output p = ids |> embedding(10, 3) |> flatten |> dense(2)
            loss mse(p, y)
            optimizer sgd()
        }
    """)
    assert program.manifest["graphs"]["infer"]["inputs"][0]["classes"] == 10
    ids = np.zeros((3, 4), np.int64)
    ids[2, 1] = 10
    with pytest.raises(DataError) as info:
        program.predict({"ids": ids})
    assert info.value.message == "id 10 out of range for 10 entries in array `ids` at index (2, 1)"
    with pytest.raises(DataError, match="id 10 out of range"):
        program.train({"ids": ids, "y": np.zeros((3, 2), np.float32)}, epochs=1, batch_size=2, out_dir=tmp_path / "r")
