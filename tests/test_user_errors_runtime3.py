"""Runs that must not lose or corrupt anything (issue 10's runtime findings): two trainings into one
run folder, parameters or optimizer state that overflow while the loss stays finite, a history and a
checkpoint an epoch apart after a kill, crash leftovers, malformed `.npz` members and checkpoint
metadata, FIFOs and devices given as data, a dangling symlink as the run folder; and `--threads`."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import compile_text
from test_user_errors_runtime import MLP, cli_error, xy

from dslc import cli
from dslc.diagnostics import DataError
from dslc.fsutil import WriteError
from dslc.runtime import checkpoint, data, devices, runlock
from dslc.runtime.history import HISTORY_FILE
from dslc.runtime.train import fit

ROOT = Path(__file__).resolve().parents[1]
XOR = ROOT / "models" / "xor.dl"
XOR_DATA = ROOT / "examples" / "xor" / "xor.npz"
DIGITS = ROOT / "examples" / "digits" / "train.npz"


@pytest.fixture(scope="module")
def mlp(workdir):
    return compile_text(workdir, MLP, "mlp.dl")


def dslc_process(*args, env=None, **kw) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "dslc.cli", *map(str, args)], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def history_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / HISTORY_FILE).read_text().splitlines()]


# ---- 1. one training per run folder --------------------------------------------------------------------
def test_a_second_training_into_a_locked_run_folder_exits_3_and_a_killed_holder_releases_it(tmp_path):
    run = tmp_path / "run"
    train = ["train", XOR, "--data", XOR_DATA, "--epochs", "3", "--batch-size", "2", "-o", run]
    holder = dslc_process(*train, env={"DSLC_FAULT": "step:1:STOP"})  # stops itself mid-epoch, lock held
    try:
        _, status = os.waitpid(holder.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        second, resume = dslc_process(*train), dslc_process(*train, "--resume")  # both refused, not blocked
        for process in (second, resume):
            _, err = process.communicate(timeout=120)
            assert process.returncode == 3
            assert err == (f"error: `{run}` is in use by another training run (process {holder.pid})\n"
                           "hint: wait until it ends, or train into another directory\n")
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs, the kernel drops the lock
        holder.communicate()
    assert holder.returncode == -signal.SIGKILL
    assert cli.main([str(a) for a in train]) == 0  # killed before its first checkpoint: a fresh run
    assert len(history_lines(run)) == 3


def test_the_api_refuses_a_locked_run_folder_and_leaves_a_new_one_untouched(mlp, tmp_path):
    with runlock.run_lock(tmp_path / "run"):
        with pytest.raises(DataError) as e:
            fit(mlp, xy(8), epochs=1, batch_size=4, out_dir=tmp_path / "run")
    assert e.value.message == f"`{tmp_path / 'run'}` is in use by another training run (process {os.getpid()})"
    # the refused run wrote nothing; the holder's directory (created by it) is kept
    assert os.listdir(tmp_path / "run") == [runlock.LOCK_FILE]
    fit(mlp, xy(8), epochs=1, batch_size=4, out_dir=tmp_path / "run")  # released


def test_a_file_system_without_locks_trains_unlocked(mlp, tmp_path, monkeypatch):
    def unsupported(fd):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(runlock, "_lock", unsupported)
    assert len(fit(mlp, xy(8), epochs=2, batch_size=4, out_dir=tmp_path / "run")) == 2


# ---- 2. non-finite values are never checkpointed -------------------------------------------------------
def test_parameters_that_overflow_in_the_last_step_stop_the_run(mlp, tmp_path):
    d = xy(8)
    d["y"] *= 1e3  # large gradients: lr * grad overflows float32, the loss (computed before) is finite
    with pytest.raises(DataError) as e:
        fit(mlp, d, epochs=1, batch_size=8, lr=3e38, out_dir=tmp_path / "run")
    assert e.value.message in {f"parameter `{name}` became {v} after epoch 1 (global step 1)"
                               for name in ("dense_0.weight", "dense_0.bias", "dense_1.weight", "dense_1.bias")
                               for v in ("inf", "-inf", "nan")}
    assert e.value.hint == "lower the learning rate (`lr=...`, now 3e+38); no checkpoint was written"
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def test_the_last_good_checkpoint_and_history_stay_untouched(mlp, tmp_path):
    run, d = tmp_path / "run", xy(8)
    fit(mlp, d, epochs=1, batch_size=8, out_dir=run)
    before = {name: (run / name).read_bytes() for name in ("checkpoint.npz", HISTORY_FILE)}
    d["y"] *= 1e3
    with pytest.raises(DataError) as e:
        fit(mlp, d, epochs=2, batch_size=8, lr=3e38, out_dir=run, resume=True)
    assert e.value.message.endswith("after epoch 2 (global step 2)")
    assert e.value.hint.endswith(f"the last good checkpoint is `{run / 'checkpoint.npz'}`")
    assert {name: (run / name).read_bytes() for name in before} == before


def test_an_inf_adam_state_with_a_finite_loss_exits_3(tmp_path, capsys):
    err = cli_error(capsys, ["train", ROOT / "models" / "cnn_digits.dl", "--data", DIGITS, "--epochs", "1",
                             "--batch-size", "64", "--lr", "1e6", "-o", tmp_path / "run"])
    assert err.endswith("error: optimizer state `opt.conv2d_0.weight.v` became inf after epoch 1 (global step 23)\n"
                        "hint: lower the learning rate (`--lr`, now 1e+06); no checkpoint was written\n")
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def test_a_learning_rate_beyond_the_float_range_is_a_usage_error(mlp, tmp_path, capsys):
    assert cli.main(["train", str(XOR), "--data", str(XOR_DATA), "--epochs", "1", "--batch-size", "4",
                     "--lr", "1e39", "-o", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.endswith("dslc train: error: `--lr`: the learning rate 1e+39 does not fit in "
                                            "`float32` (at most 3.40282e+38)\n")
    assert not (tmp_path / "run").exists()
    with pytest.raises(DataError, match=r"^the learning rate 1e\+39 does not fit in `float32`"):
        fit(mlp, xy(8), epochs=1, batch_size=4, lr=1e39, out_dir=tmp_path / "run")


# ---- 3. the checkpoint and the history are one unit ------------------------------------------------------
@pytest.mark.parametrize("damage", ["lags", "torn", "ahead", "missing"])
def test_the_next_run_restores_the_history_from_the_checkpoint(mlp, tmp_path, damage):
    run, d = tmp_path / "run", xy(8)
    straight = fit(mlp, d, epochs=3, batch_size=4, out_dir=tmp_path / "straight")
    fit(mlp, d, epochs=2, batch_size=4, out_dir=run)
    text = (run / HISTORY_FILE).read_text()
    first, second = text.splitlines(keepends=True)
    damaged = {"lags": first,  # killed between the checkpoint and the append
               "torn": first + second[:len(second) // 2],  # killed inside the append
               "ahead": text + text.splitlines(keepends=True)[1].replace('"epoch": 2', '"epoch": 3'),
               "missing": None}[damage]
    if damaged is None:
        (run / HISTORY_FILE).unlink()
    else:
        (run / HISTORY_FILE).write_text(damaged)
    (run / ".checkpoint.npz.abcd_123.tmp").write_bytes(b"PK half a checkpoint")  # killed inside the write
    reporter = Warnings()
    resumed = fit(mlp, d, epochs=3, batch_size=4, out_dir=run, resume=True, reporter=reporter)
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("time", "samples_per_s")} for r in h]
    if damage == "missing":  # epoch 1 is lost for good; epoch 2 comes from the checkpoint
        assert reporter.messages == [f"`{run / HISTORY_FILE}` lacks the entries of epochs 1 to 1; "
                                     "the history continues without them"]
        assert strip(resumed) == strip(straight[1:])
    else:
        assert reporter.messages == [] and strip(resumed) == strip(straight)
    assert history_lines(run) == resumed
    assert not [name for name in os.listdir(run) if name.endswith(".tmp")]


def test_a_finished_run_killed_before_its_last_history_entry_is_repaired_by_resume(mlp, tmp_path):
    run = tmp_path / "run"
    history = fit(mlp, xy(8), epochs=2, batch_size=4, out_dir=run)
    (run / HISTORY_FILE).write_text(json.dumps(history[0]) + "\n")
    assert fit(mlp, xy(8), epochs=2, batch_size=4, out_dir=run, resume=True) == history  # nothing to do
    assert history_lines(run) == history


def test_the_checkpoint_does_not_grow_with_the_epochs(mlp, tmp_path):
    fit(mlp, xy(8), epochs=1, batch_size=4, out_dir=tmp_path / "one")
    fit(mlp, xy(8), epochs=40, batch_size=4, out_dir=tmp_path / "forty")
    one, forty = ((tmp_path / r / "checkpoint.npz").stat().st_size for r in ("one", "forty"))
    assert abs(forty - one) <= 64  # a few more digits in `epoch`, `global_step` and the record
    assert len(history_lines(tmp_path / "forty")) == 40


def test_a_format_1_checkpoint_is_still_resumed(mlp, tmp_path):
    run, d = tmp_path / "run", xy(8)
    straight = fit(mlp, d, epochs=3, batch_size=4, out_dir=tmp_path / "straight")
    history = fit(mlp, d, epochs=2, batch_size=4, out_dir=run)
    ckpt = checkpoint.load_checkpoint(run)
    meta = {**{k: v for k, v in ckpt.meta.items() if k != "record"}, "format": "dslc-checkpoint/1", "history": history}
    checkpoint.save_checkpoint(run / "checkpoint.npz", ckpt.params, ckpt.state, meta)
    (run / HISTORY_FILE).unlink()  # dslc 0.1 wrote history.json, which this version does not read
    resumed = fit(mlp, d, epochs=3, batch_size=4, out_dir=run, resume=True)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight] and history_lines(run) == resumed
    assert checkpoint.load_checkpoint(run).meta["format"] == "dslc-checkpoint/2"


class Warnings:
    def __init__(self):
        self.messages = []

    def __getattr__(self, name):  # every other Reporter hook does nothing
        return lambda *args: None

    def warn(self, message):
        self.messages.append(message)


# ---- 4. crafted checkpoint metadata --------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_run(mlp, tmp_path_factory):
    run = tmp_path_factory.mktemp("good_run")
    fit(mlp, xy(8), epochs=1, batch_size=4, out_dir=run)
    return run


@pytest.mark.parametrize("change, reason", [
    ({"epoch": "3"}, '`epoch` is "3", expected a non-negative integer'),
    ({"epoch": -1}, "`epoch` is -1, expected a non-negative integer"),
    ({"epoch": 1.5}, "`epoch` is 1.5, expected a non-negative integer"),
    ({"epoch": None}, "`epoch` is null, expected a non-negative integer"),
    ({"epoch": True}, "`epoch` is true, expected a non-negative integer"),
    ({"epoch": ...}, "`epoch` is missing"),
    ({"global_step": "x"}, '`global_step` is "x", expected a non-negative integer'),
    ({"global_step": None}, "`global_step` is null, expected a non-negative integer"),
    ({"history": None}, "`history` is null, expected a list of history entries (objects with a positive integer "
                        "`epoch`)"),
    ({"history": "[]"}, '`history` is "[]", expected a list of history entries (objects with a positive integer '
                        "`epoch`)"),
    ({"record": [1]}, "`record` is [1], expected a history entry (an object with a positive integer `epoch`)"),
    ({"epoch": 2}, "`record` does not end with the entry of epoch 2, the checkpoint's `epoch`"),
    ({"model": 3}, "`model` is 3, expected a string"),
    ([], "it is a JSON list, expected an object"),
    ("text", "it is a JSON str, expected an object"),
])
def test_crafted_checkpoint_metadata_is_refused(good_run, mlp, tmp_path, change, reason):
    ckpt = checkpoint.load_checkpoint(good_run)
    if isinstance(change, dict):
        meta = {**ckpt.meta, **change}
        meta = {k: v for k, v in meta.items() if v is not ...}
    else:
        meta = change
    run = tmp_path / "run"
    run.mkdir()
    checkpoint.save_checkpoint(run / "checkpoint.npz", ckpt.params, ckpt.state, meta)
    message = f"checkpoint metadata is invalid in `{run / 'checkpoint.npz'}`: {reason}"
    with pytest.raises(DataError) as e:
        fit(mlp, xy(8), epochs=2, batch_size=4, out_dir=run, resume=True)
    assert e.value.message == message


def test_crafted_checkpoint_metadata_exits_3_from_the_command_line(good_run, workdir, tmp_path, capsys):
    ckpt = checkpoint.load_checkpoint(good_run)
    checkpoint.save_checkpoint(tmp_path / "c.npz", ckpt.params, ckpt.state, {**ckpt.meta, "epoch": "3"})
    np.savez(tmp_path / "x.npz", x=xy(2)["x"])
    err = cli_error(capsys, ["predict", workdir / "mlp.dl", "--weights", tmp_path / "c.npz", "--input",
                             tmp_path / "x.npz", "-o", tmp_path / "y.npz"])
    assert err.startswith(f"error: checkpoint metadata is invalid in `{tmp_path / 'c.npz'}`: `epoch` is \"3\"")


# ---- 5. malformed `.npz` members -----------------------------------------------------------------------
def npy_header(header: str, version: int = 1) -> bytes:
    text = header.encode("latin1")
    size = len(text).to_bytes(2 if version == 1 else 4, "little")
    return b"\x93NUMPY" + bytes([version, 0]) + size + text


def write_npz(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, content in members.items():
            z.writestr(name, content)
    return path


GOOD_Y = {"y.npy": npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 1), }\n")
          + np.zeros(3, np.float32).tobytes()}


@pytest.mark.parametrize("member, reason", [
    (npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4"),
     r"its `\.npy` header is malformed \(not a dictionary of `descr`, `fortran_order` and `shape`, or cut short\)"),
    (npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (" + "9" * 30 + ", 4), }\n"),
     r"its header announces `float32` of shape \(9{30}, 4\) \(.* TiB\), but the archive holds 0 bytes for it "
     r"\(a damaged or crafted file\)"),
    (npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 4), }\n") + bytes(48),
     r"its header announces `float32` of shape \(1000000000000, 4\) \(14\.6 TiB\), but the archive holds 48 bytes "
     r"for it \(a damaged or crafted file\)"),
    (npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-3, 4), }\n"),
     r"its `\.npy` header gives the negative shape \(-3, 4\)"),
    (npy_header("{'descr': '|O', 'fortran_order': False, 'shape': (3, 4), }\n") + bytes(96),
     r"it holds Python objects, which dslc does not load \(pickles can run code\)"),
    (b"not an array at all", r"it is not a `\.npy` array \(save the arrays with `numpy\.savez`\)"),
    (npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }\n") + bytes(20),
     r"its header announces `float32` of shape \(3, 4\) \(48 bytes\), but the archive holds 20 bytes for it .*"),
])
def test_malformed_npz_members_are_refused_before_allocating(tmp_path, member, reason):
    path = write_npz(tmp_path / "d.npz", {"x.npy": member, **GOOD_Y})
    specs = [{"name": "x", "dtype": "float32", "shape": ["B", 4]}, {"name": "y", "dtype": "float32", "shape": ["B", 1]}]
    with pytest.raises(DataError) as e:
        data.load_npz(path, specs)
    assert re_match(rf"cannot read array `x` in training data `{path}`: {reason}", e.value.message)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_member_whose_bytes_were_damaged_is_a_data_error(tmp_path, compression):
    """Its header and sizes are right, its data is not: zipfile's CRC-32 (or inflate) fails while reading."""
    x = np.arange(4000, dtype=np.float32).reshape(1000, 4)
    path = write_npz(tmp_path / "d.npz", {"x.npy": npy_header("{'descr': '<f4', 'fortran_order': False, "
                                                              "'shape': (1000, 4), }\n") + x.tobytes(),
                                          **GOOD_Y}, compression)
    raw = bytearray(path.read_bytes())
    raw[2000:2100] = bytes(b ^ 0xFF for b in raw[2000:2100])  # inside the first member's data
    path.write_bytes(bytes(raw))
    specs = [{"name": "x", "dtype": "float32", "shape": ["B", 4]}, {"name": "y", "dtype": "float32", "shape": ["B", 1]}]
    with pytest.raises(DataError) as e:
        data.load_npz(path, specs)
    assert re_match(rf"cannot read array `x` in training data `{path}`: "
                    r"the archive is damaged \((BadZipFile|error): .*", e.value.message)


def test_resuming_from_a_checkpoint_with_damaged_bytes_exits_3(good_run, workdir, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    raw = bytearray((good_run / "checkpoint.npz").read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(64)
    (run / "checkpoint.npz").write_bytes(bytes(raw))
    np.savez(tmp_path / "d.npz", **xy(8))
    err = cli_error(capsys, ["train", workdir / "mlp.dl", "--data", tmp_path / "d.npz", "--epochs", "3",
                             "--batch-size", "4", "-o", run, "--resume"])
    assert err.startswith("error: cannot read array `") and "the archive is damaged (BadZipFile: Bad CRC-32" in err


def re_match(pattern: str, text: str) -> bool:
    import re

    assert re.fullmatch(pattern, text), text
    return True


@pytest.mark.parametrize("compressed", [False, True])
def test_the_member_reader_matches_numpy_load(tmp_path, compressed):
    rng = np.random.default_rng(0)
    arrays = {"f32": rng.normal(size=(5, 3)).astype(np.float32), "fortran": np.asfortranarray(rng.normal(size=(4, 6))),
              "big_endian": np.arange(7, dtype=">i4"), "bool": rng.random((2, 2, 2)) > 0.5, "scalar": np.float16(2.5),
              "empty": np.zeros((0, 4), np.int64), "text": np.array("{\"a\": 1}"), "nested/name.x": np.arange(3)}
    path = tmp_path / "a.npz"
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    with data.open_npz(path) as archive, np.load(path) as reference:
        assert sorted(archive) == sorted(reference.files)
        for name in reference.files:
            got, want = archive[name], reference[name]
            assert (got.dtype, got.shape, got.flags.f_contiguous) == (want.dtype, want.shape, want.flags.f_contiguous)
            assert np.array_equal(got, want), name
            assert archive.header(name) == (want.dtype, want.shape)


def test_a_member_inflating_to_gigabytes_is_refused_from_its_sizes(tmp_path):
    """A deflated member whose central-directory size is beyond deflate's 1:1032 ratio is a crafted file."""
    path = write_npz(tmp_path / "d.npz", {"x.npy": npy_header("{'descr': '<f4', 'fortran_order': False, "
                                                            "'shape': (3, 4), }\n") + bytes(48), **GOOD_Y},
                     zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("x.npy")
    raw = bytearray(path.read_bytes())
    central = raw.index(b"PK\x01\x02")  # the central directory's first entry: x.npy
    raw[central + 24:central + 28] = (3 * 2**30).to_bytes(4, "little")  # uncompressed size: 3 GiB
    path.write_bytes(bytes(raw))
    specs = [{"name": "x", "dtype": "float32", "shape": ["B", 4]}]
    with pytest.raises(DataError, match="a damaged or crafted file"):
        data.load_npz(path, specs)
    assert info.compress_size < 100


def test_a_member_larger_than_the_memory_is_refused_before_allocating(tmp_path, monkeypatch):
    """Linux overcommits: without the check, np.empty of a 1000:1 deflated member would succeed and the
    process be OOM-killed while inflating it."""
    from dslc.runtime import npz

    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=np.zeros((4096, 4), np.float32))
    monkeypatch.setattr(npz, "physical_memory", lambda: 32 * 1024)
    with pytest.raises(DataError) as e:
        data.load_npz(path, [{"name": "x", "dtype": "float32", "shape": ["B", 4]}])
    assert e.value.message == (f"cannot read array `x` in training data `{path}`: it holds 64.0 KiB, more than this "
                               "machine's memory (32.0 KiB)")


def test_members_the_command_does_not_read_are_never_decompressed(good_run, mlp, tmp_path):
    """A 3 GiB member would take seconds and gigabytes to inflate; an unreadable one proves it is not read."""
    broken = npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 4), }\n")
    d = xy(8)
    path = tmp_path / "d.npz"
    np.savez(path, **d)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("junk.npy", broken)
    run = tmp_path / "run"
    fit(mlp, path, epochs=1, batch_size=4, out_dir=run)
    with zipfile.ZipFile(run / "checkpoint.npz", "a") as z:
        z.writestr("junk.npy", broken)
        z.writestr("state/unused.npy", broken)  # predict reads no optimizer state; resume refuses it by name
    assert mlp.predict({"x": d["x"]}, weights=run)["h"].shape == (8, 1)
    with pytest.raises(DataError, match=r"it has optimizer state `unused`, which the model does not have"):
        fit(mlp, path, epochs=2, batch_size=4, out_dir=run, resume=True)


# ---- 6. files that are not regular files ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_non_regular_files_as_data_are_refused_without_blocking(mlp, tmp_path, kind):
    path = {"fifo": tmp_path / "pipe.npz", "device": Path("/dev/zero"), "directory": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    started = time.monotonic()
    with pytest.raises(DataError) as e:
        fit(mlp, path, epochs=1, batch_size=4, out_dir=tmp_path / "run")
    if kind == "directory":  # a folder is read as one `.npy` file per array (dslc/runtime/datafiles.py)
        assert e.value.message == f"training data folder `{path}` holds no `.npy` files"
    else:
        what = {"fifo": "a FIFO (named pipe)", "device": "a character device"}[kind]
        assert e.value.message == f"cannot read training data `{path}`: it is {what}, not a regular file"
    assert time.monotonic() - started < 10 and not (tmp_path / "run").exists()


def test_a_fifo_as_predict_input_exits_3(workdir, good_run, tmp_path, capsys):
    os.mkfifo(tmp_path / "x.npz")
    err = cli_error(capsys, ["predict", workdir / "mlp.dl", "--weights", good_run, "--input", tmp_path / "x.npz",
                             "-o", tmp_path / "y.npz"])
    assert err == (f"error: cannot read input data `{tmp_path / 'x.npz'}`: it is a FIFO (named pipe), not a regular "
                   "file\nhint: pass the path of an `.npz` file\n")


@pytest.mark.parametrize("head", [b"", b"PK\x03\x04"])
def test_a_huge_sparse_file_is_refused_without_reading_it(mlp, tmp_path, head):
    path = tmp_path / "sparse.npz"
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(20 * 2**30)  # 20 GiB of holes
    started = time.monotonic()
    with pytest.raises(DataError, match=r"not a valid `\.npz` archive"):
        fit(mlp, path, epochs=1, batch_size=4, out_dir=tmp_path / "run")
    assert time.monotonic() - started < 10


def test_a_dangling_symlink_as_the_run_folder_is_named(mlp, tmp_path):
    (tmp_path / "run").symlink_to(tmp_path / "nowhere")
    with pytest.raises(WriteError) as e:
        fit(mlp, xy(8), epochs=1, batch_size=4, out_dir=tmp_path / "run")
    assert e.value.message == (f"cannot write `{tmp_path / 'run'}`: it is a symbolic link to "
                               f"`{tmp_path / 'nowhere'}`, which does not exist")


# ---- 7. --threads on train and predict -----------------------------------------------------------------
def test_threads_reach_every_session_of_train_and_predict(workdir, tmp_path, monkeypatch, capsys):
    seen = []
    make_session = devices.make_session
    monkeypatch.setattr(devices, "make_session", lambda m, d="cpu", t=None, *a, **k: (seen.append(t),
                                                                                       make_session(m, d, t, *a, **k))[1])
    np.savez(tmp_path / "d.npz", **xy(8))
    assert cli.main(["train", str(workdir / "mlp.dl"), "--data", str(tmp_path / "d.npz"), "--val",
                     str(tmp_path / "d.npz"), "--epochs", "1", "--batch-size", "4", "--threads", "1",
                     "-o", str(tmp_path / "run")]) == 0
    assert cli.main(["predict", str(workdir / "mlp.dl"), "--weights", str(tmp_path / "run"), "--input",
                     str(tmp_path / "d.npz"), "-o", str(tmp_path / "y.npz"), "--threads", "2"]) == 0
    assert seen == [1, 1, 2]
    capsys.readouterr()
    for verb in (["train", "--data", "d.npz", "--epochs", "1", "--batch-size", "4", "-o", "r"],
                 ["predict", "--input", "d.npz", "-o", "y.npz"]):
        assert cli.main([verb[0], str(workdir / "mlp.dl"), *verb[1:], "--threads", "0"]) == 2
        assert capsys.readouterr().err.endswith("argument --threads: expected a positive integer, got `0`\n")


def test_an_npz_state_file_is_checked_on_its_headers_before_it_is_read(mlp, good_run, tmp_path):
    ckpt = checkpoint.load_checkpoint(good_run)
    values = {**ckpt.params, **ckpt.state}
    np.savez(tmp_path / "state.npz", **values)
    history = fit(mlp, xy(8), epochs=1, batch_size=4, out_dir=tmp_path / "from_state", resume=tmp_path / "state.npz")
    assert history[-1]["steps"] == int(values["opt.step"]) + 2  # the step counter continues from the state's
    with zipfile.ZipFile(tmp_path / "state.npz", "a") as z:  # an extra member announcing 14.6 TiB
        z.writestr("junk.npy", npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 4), }\n"))
    with pytest.raises(DataError, match=r"does not fit model `mlp`: it has parameter `junk`, which the model"):
        fit(mlp, xy(8), epochs=1, batch_size=4, out_dir=tmp_path / "refused", resume=tmp_path / "state.npz")
