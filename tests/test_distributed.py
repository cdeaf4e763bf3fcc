"""Data-parallel training on 2 local MPI ranks (mpi4py + the mpich wheel, `dslc[mpi]`): the same
parameters as single-process training with the same global batch, resume across launches, and a
worker that fails or dies stopping the job with a clear message."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dslc.diagnostics import DataError
from dslc.runtime.checkpoint import load_checkpoint
from dslc.runtime.train import fit
from helpers import compile_text, hang_guard
from test_split import ACCUMULATE_MODEL, relative_difference

pytest.importorskip("mpi4py")
MPIEXEC = Path(sys.executable).parent / "mpiexec"
pytestmark = pytest.mark.skipif(not MPIEXEC.exists(), reason="the mpich wheel's mpiexec is not installed")

MODEL = ACCUMULATE_MODEL.replace("OPTIMIZER", "adam(lr = 0.01)")


@pytest.fixture(scope="module")
def program(workdir):
    return compile_text(workdir, MODEL, split=True)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(2)
    return {"x": rng.standard_normal((53, 6)).astype(np.float32), "y": rng.integers(0, 3, 53)}


def test_two_workers_equal_one_process_and_resume(program, data, tmp_path):
    # global batches of 12 rows (the last one 5): each rank takes 6 (2, 3) rows, in 2 micro-batches
    single = fit(program, data, epochs=3, batch_size=12, out_dir=tmp_path / "single")
    first = program.train(data, epochs=1, batch_size=12, out_dir=tmp_path / "mpi", workers=2, accumulate=2)
    assert len(first) == 1
    history = program.train(data, epochs=3, batch_size=12, out_dir=tmp_path / "mpi", workers=2, resume=True)
    assert [h["steps"] for h in history] == [5, 10, 15]
    a, b = load_checkpoint(tmp_path / "single"), load_checkpoint(tmp_path / "mpi")
    for name in a.params:  # measured ≤ 3e-7: float64 sums of float32 shard gradients, another order
        assert relative_difference(a.params[name], b.params[name]) < 2e-6, name
    assert history[-1]["loss"] == pytest.approx(single[-1]["loss"], rel=1e-5)
    # the ranks' threshold counts are summed by the Allreduce, not averaged (see test_split)
    assert history[-1]["auc"] == pytest.approx(single[-1]["auc"], abs=1e-3)
    assert history[-1]["confusion_matrix"] == single[-1]["confusion_matrix"]
    assert b.state["opt.step"] == 15


def _failing_rank(tmp_path: Path, action: str, at_step: int = 3, once: bool = False, rank: int = 1) -> dict[str, str]:
    """The environment of a job whose rank `rank` runs `action` at its `at_step`-th training step (with
    `once`, only in the first job started)."""
    marker = tmp_path / "failed-once"
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import os
        if os.environ.get("PMI_RANK") == "{rank}" and not ({once} and os.path.exists({str(marker)!r})):
            from dslc.diagnostics import DataError
            from dslc.runtime import accumulate
            original, calls = accumulate.SplitSteps.step, [0]
            def step(self, *args):
                calls[0] += 1
                if calls[0] == {at_step}:
                    open({str(marker)!r}, "w").close()
                    {action}
                return original(self, *args)
            accumulate.SplitSteps.step = step
    """))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}


def test_a_dead_worker_stops_the_job_with_a_clear_error(program, data, tmp_path, monkeypatch):
    for name, value in _failing_rank(tmp_path, "os._exit(9)").items():
        monkeypatch.setenv(name, value)
    with pytest.raises(DataError) as e:
        program.train(data, epochs=2, batch_size=12, out_dir=tmp_path / "run", workers=2)
    assert "a training worker stopped with exit code 9 (it died or was killed" in e.value.message
    assert "all 2 workers were stopped" in e.value.message
    assert e.value.hint == "no epoch was completed"  # nothing to retry from


class Warnings:
    def __init__(self):
        self.messages = []

    def warn(self, message):
        self.messages.append(message)

    def close(self):
        pass


def test_a_worker_dying_after_a_checkpoint_is_retried_from_it(program, data, tmp_path, monkeypatch):
    # rank 1 dies in epoch 3 (5 steps an epoch) of the first job: rank 0 saves on a thread, and waited for
    # epoch 1's save before its second; dying in epoch 2, a loaded machine had not saved epoch 1 yet
    for name, value in _failing_rank(tmp_path, "os._exit(9)", at_step=13, once=True).items():
        monkeypatch.setenv(name, value)
    reporter = Warnings()
    history = program.train(data, epochs=3, batch_size=12, out_dir=tmp_path / "run", workers=2, reporter=reporter)
    assert reporter.messages == ["a training worker died (exit code 9); all 2 workers start again from the last "
                                 "checkpoint (retry 1 of 1)"]
    assert [h["steps"] for h in history] == [5, 10, 15]
    fit(program, data, epochs=3, batch_size=12, out_dir=tmp_path / "single")
    a, b = load_checkpoint(tmp_path / "single"), load_checkpoint(tmp_path / "run")
    for name in a.params:
        assert relative_difference(a.params[name], b.params[name]) < 2e-6, name


ROOT = Path(__file__).resolve().parent.parent


def _mpiexec_train(tmp_path: Path, epochs: int) -> list[str]:
    """`mpiexec -n 2 dslc train` of `MODEL` on 40 rows in batches of 8 (a model and data file in `tmp_path`)."""
    model, npz = tmp_path / "m.dl", tmp_path / "d.npz"
    model.write_text(textwrap.dedent(MODEL))
    rng = np.random.default_rng(3)
    np.savez(npz, x=rng.standard_normal((40, 6)).astype(np.float32), y=rng.integers(0, 3, 40))
    return [str(MPIEXEC), "-n", "2", sys.executable, "-m", "dslc", "train", str(model), "--data", str(npz),
            "--epochs", str(epochs), "--batch-size", "8"]


def test_mpiexec_dslc_train_and_a_failing_rank(tmp_path):
    root = ROOT
    command = _mpiexec_train(tmp_path, epochs=2)
    ok = subprocess.run(command + ["-o", str(tmp_path / "ok")], capture_output=True, text=True, cwd=root,
                        timeout=hang_guard(120))
    assert ok.returncode == 0, ok.stderr
    assert [line.split(" - ")[0] for line in ok.stdout.splitlines() if line.startswith("epoch")] == \
        ["epoch 1/2", "epoch 2/2"]  # rank 0 reports, once
    env = _failing_rank(tmp_path, 'raise DataError("the disk is full", hint="free some space")')
    bad = subprocess.run(command + ["-o", str(tmp_path / "bad")], capture_output=True, text=True, cwd=root,
                         env=env, timeout=hang_guard(120))
    assert bad.returncode == 3
    assert "error (worker 1 of 2): the disk is full\nhint: free some space" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_workers_refusing_the_models_callback_end_the_command_with_their_exit_code(workdir, data, tmp_path, capfd):
    """The model's `callback early_stopping(monitor = "val_loss")` without validation data, found by the
    workers: the command exits 2 as in one process (it said exit 3, the workers' "died or was killed: no
    message of its own", and retried them from a checkpoint), the workers' hint naming the flags."""
    from dslc import cli

    (tmp_path / "m.dl").write_text(MODEL.replace("    metric    accuracy", '    callback  early_stopping(monitor = '
                                                 '"val_loss")\n    metric    accuracy'))
    np.savez(tmp_path / "d.npz", **data)
    assert cli.main(["train", str(tmp_path / "m.dl"), "--data", str(tmp_path / "d.npz"), "--epochs", "1",
                     "--batch-size", "12", "--workers", "2", "-o", str(tmp_path / "run")]) == 2
    err = capfd.readouterr().err
    assert "monitors `val_loss`, which the run does not log\nhint: pass validation data (`--val`" in err
    assert "a training worker stopped with exit code 2 (settings that do not hold together, see its message " \
           "above); all 2 workers were stopped" in err


def test_cuda_without_a_cuda_onnxruntime_is_refused_before_the_workers_start(program, data, tmp_path, monkeypatch):
    monkeypatch.setattr("dslc.runtime.devices.ort.get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr("dslc.runtime.launch.mpiexec", lambda: pytest.fail("workers were started"))
    with pytest.raises(DataError) as e:
        program.train(data, epochs=1, batch_size=12, out_dir=tmp_path / "run", workers=2, device="cuda")
    assert e.value.message.startswith("CUDA was requested but this onnxruntime has no CUDA support")
    assert not (tmp_path / "run").exists()


def test_ranks_reading_other_data_stop_with_an_error_instead_of_waiting_for_ever(tmp_path):
    # `mpiexec ... : ...` starts rank 1 with other arguments: a shorter file, as a node holding another
    # version of the data would read; without the check both ranks spun in the first all-reduce for ever
    root = ROOT
    model, full, short = tmp_path / "m.dl", tmp_path / "full.npz", tmp_path / "short.npz"
    model.write_text(textwrap.dedent(MODEL))
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((40, 6)).astype(np.float32), rng.integers(0, 3, 40)
    np.savez(full, x=x, y=y)
    np.savez(short, x=x[:30], y=y[:30])
    rank = [sys.executable, "-m", "dslc", "train", str(model), "--epochs", "2", "--batch-size", "8",
            "-o", str(tmp_path / "run")]
    done = subprocess.run([str(MPIEXEC), "-n", "1", *rank, "--data", str(full), ":", "-n", "1", *rank, "--data",
                           str(short), "--seed", "1"], capture_output=True, text=True, cwd=root, timeout=hang_guard(120))
    assert done.returncode == 3, done.stderr
    assert "error (worker 0 of 2): the 2 workers do not train the same run: worker 1 has training data of 30 rows " \
           "(blake2b " in done.stderr
    assert "where worker 0 has training data of 40 rows" in done.stderr
    assert "; worker 1 has seed = 1 where worker 0 has seed = 0\nhint: every rank must read the same data" in done.stderr
    assert "error (worker 1" not in done.stderr  # said once, by rank 0
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def test_batch_norm_with_one_row_shards_is_refused_before_training(workdir, tmp_path, capfd):
    # 9 rows in batches of 3 on 2 ranks: shards of 2 and 1 rows, the last rank's normalized on its own
    # (its running variance became NaN after the first epoch, with a hint to lower the learning rate)
    program = compile_text(workdir, MODEL.replace("|> tanh |>", "|> batch_norm |> tanh |>"), "bn.dl", split=True)
    rng = np.random.default_rng(4)
    with pytest.raises(DataError) as e:
        program.train({"x": rng.standard_normal((9, 6)).astype(np.float32), "y": rng.integers(0, 3, 9)}, epochs=1,
                      batch_size=3, out_dir=tmp_path / "run", workers=2)
    assert "a training worker stopped with exit code 3 (bad data or files" in e.value.message
    assert "9 samples in batches of 3, each cut into 2 ranks' shares, give parts of 1 sample, but batch " \
           "normalization needs" in capfd.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


@pytest.mark.parametrize("stop, code, message", [("KeyboardInterrupt", 130, "interrupted"),
                                                 ("Terminated", 143, "terminated (SIGTERM)")])
def test_mpiexec_dslc_train_stopped_by_a_signal_says_so_and_resumes(tmp_path, stop, code, message):
    # mpiexec passes Ctrl-C and SIGTERM on to every rank; they said `KeyboardInterrupt: ` and `Terminated: `
    root = ROOT
    command = _mpiexec_train(tmp_path, epochs=3) + ["-o", str(tmp_path / "run")]
    env = _failing_rank(tmp_path, f"from dslc.interrupts import Terminated; raise {stop}()", at_step=8, rank=0)
    stopped = subprocess.run(command, capture_output=True, text=True, cwd=root, env=env, timeout=hang_guard(120))
    assert stopped.returncode == code, stopped.stderr
    assert f"error (worker 0 of 2): {message}\nhint: the last completed epoch is saved; run the same command with " \
           "`--resume` to continue\n" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, cwd=root, timeout=hang_guard(120))
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("resuming acc at epoch 2/3")


def test_mpiexec_dslc_train_warns_once(tmp_path):
    # every rank compiles the model; each printed its warnings
    command = _mpiexec_train(tmp_path, epochs=1)
    (tmp_path / "m.dl").write_text(textwrap.dedent(MODEL).replace("|> tanh |>", "|> batch_norm |> tanh |>"))
    done = subprocess.run(command + ["-o", str(tmp_path / "run")], capture_output=True, text=True, cwd=ROOT,
                          timeout=hang_guard(120))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("warning: the bias of `dense_0` is cancelled by `batch_norm`") == 1, done.stderr


def test_the_other_ranks_wait_for_rank_zeros_validation_without_spinning(tmp_path):
    # they waited in a blocking `bcast`, which in MPICH spins: over 5 epochs of validating 718,000 rows,
    # the waiting rank used 4.9-5.4 s of CPU, polling 1.8 s (its start-up and training included)
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import json, os, time
        from dslc.runtime import distributed, train
        if os.environ.get("PMI_RANK") == "0":
            original_evaluate = train._evaluate
            def evaluate(*args):
                time.sleep(1.0)
                return original_evaluate(*args)
            train._evaluate = evaluate
        else:
            original_wait = distributed.from_rank_zero
            def waited(comm, value):
                cpu, wall = time.process_time(), time.perf_counter()
                try:
                    return original_wait(comm, value)
                finally:
                    with open({str(tmp_path / "waited.json")!r}, "a") as f:
                        f.write(json.dumps({{"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}}) + "\\n")
            distributed.from_rank_zero = waited
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    command = _mpiexec_train(tmp_path, epochs=2)
    done = subprocess.run(command + ["--val", str(tmp_path / "d.npz"), "-o", str(tmp_path / "run")],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=hang_guard(120))
    assert done.returncode == 0, done.stderr
    waits = [json.loads(line) for line in (tmp_path / "waited.json").read_text().splitlines()]
    assert len(waits) == 2 and all(w["wall"] >= 0.9 for w in waits), waits  # one per epoch, through the 1 s
    assert all(w["cpu"] < 0.1 * w["wall"] for w in waits), waits  # as a share: a loaded machine lengthens the wait


def test_a_rank_whose_model_does_not_compile_ends_the_job(tmp_path):
    # rank 1 returned from `main` with exit 1 while rank 0 waited for it in its first collective call:
    # the job hung until a timeout killed it
    command = _mpiexec_train(tmp_path, epochs=1)
    broken = tmp_path / "broken.dl"
    broken.write_text(textwrap.dedent(MODEL).replace("|> tanh |>", "|> tanhh |>"))
    rank = command[command.index("-n") + 2:] + ["-o", str(tmp_path / "run")]
    rank1 = [str(broken) if word == str(tmp_path / "m.dl") else word for word in rank]
    done = subprocess.run([str(MPIEXEC), "-n", "1", *rank, ":", "-n", "1", *rank1], capture_output=True, text=True,
                          cwd=ROOT, timeout=hang_guard(120))
    assert done.returncode == 1, done.stderr
    assert "error: unknown layer or function `tanhh`" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("fault, code, message", [
    ("|> tanhh |>", 1, "error: unknown layer or function `tanhh`"),  # every rank's compile fails
    ("missing data", 3, "error (worker 0 of 2): cannot read `"),  # every rank's `fit` fails
])
def test_a_failure_of_every_rank_is_said_once(tmp_path, fault, code, message):
    # each rank printed it (two copies of the diagnostic with its caret), then MPICH's `Abort(1) on node 1 ...`
    command = _mpiexec_train(tmp_path, epochs=1) + ["-o", str(tmp_path / "run")]
    if fault == "missing data":
        command[command.index("--data") + 1] = str(tmp_path / "missing.npz")
    else:
        (tmp_path / "m.dl").write_text(textwrap.dedent(MODEL).replace("|> tanh |>", fault))
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=hang_guard(120))
    assert done.returncode == code, done.stderr
    assert done.stderr.count(message) == 1, done.stderr
    assert done.stderr.count("error") == 1 and "Abort(" not in done.stderr, done.stderr


def test_two_ranks_with_batch_norm_and_dropout_equal_two_micro_batches(workdir, data, tmp_path):
    # what README promises for them: each rank's share is normalized by its own statistics and has dropout
    # masks of its own, as micro-batch m = rank of `--accumulate 2` in one process (PyTorch's DDP without
    # SyncBatchNorm does the same); another curve than the fused step's
    model = MODEL.replace("dense(16) |> tanh", "dense(16, bias = false) |> batch_norm |> tanh |> dropout(0.3)")
    program = compile_text(workdir, model, name="bn_dropout.dl", split=True)
    micro = fit(program, data, epochs=2, batch_size=12, accumulate=2, out_dir=tmp_path / "micro")
    ranks = program.train(data, epochs=2, batch_size=12, out_dir=tmp_path / "ranks", workers=2)
    fused = fit(program, data, epochs=2, batch_size=12, out_dir=tmp_path / "fused")
    a, b = load_checkpoint(tmp_path / "micro"), load_checkpoint(tmp_path / "ranks")
    for name in a.params:  # measured ≤ 2.2e-7 on the digits (3 epochs of batch 64)
        assert relative_difference(a.params[name], b.params[name]) < 2e-6, name
    assert [h["loss"] for h in ranks] == pytest.approx([h["loss"] for h in micro], rel=1e-6)
    assert abs(ranks[-1]["loss"] - fused[-1]["loss"]) > 1e-4 * abs(fused[-1]["loss"])


def test_a_verb_other_than_train_under_mpiexec_is_refused_once(tmp_path):
    # `mpiexec -n 2 dslc predict` predicted twice and wrote the same file twice, `evaluate` printed twice
    command = _mpiexec_train(tmp_path, epochs=1)
    trained = subprocess.run(command + ["-o", str(tmp_path / "run")], capture_output=True, text=True, cwd=ROOT,
                             timeout=hang_guard(120))
    assert trained.returncode == 0, trained.stderr
    predict = command[:command.index("train")] + ["predict", str(tmp_path / "m.dl"), "--weights", str(tmp_path / "run"),
                                                  "--input", str(tmp_path / "d.npz"), "-o", str(tmp_path / "y.npz")]
    done = subprocess.run(predict, capture_output=True, text=True, cwd=ROOT, timeout=hang_guard(120))
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("dslc predict: error: `dslc predict` runs in one process: under `mpiexec`, only "
                             "`dslc train` uses several") == 1, done.stderr
    assert "--dask" in done.stderr and not (tmp_path / "y.npz").exists()


@pytest.mark.parametrize("signalled", ["dslc", "mpiexec"])
def test_workers_stopped_by_sigterm_say_it_once_and_keep_the_checkpoint(tmp_path, signalled):
    # `--workers`: a SIGTERM to dslc killed `mpiexec` 0.25 s later (`subprocess.run`), the ranks had no
    # handler (exit 15: killed), so a SIGTERM to `mpiexec` alone was taken for a dying worker and retried
    import signal
    import time

    command = _mpiexec_train(tmp_path, epochs=100000)[3:] + ["--workers", "2", "-o", str(tmp_path / "run")]
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + hang_guard(60)
        children = []
        while not (tmp_path / "run" / "checkpoint.npz").exists() or not children:
            assert time.monotonic() < deadline and job.poll() is None, job.stderr.read()
            children = subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True).stdout.split()
            time.sleep(0.05)
        os.kill(job.pid if signalled == "dslc" else int(children[0]), signal.SIGTERM)
        stderr = job.communicate(timeout=hang_guard(60))[1]
    finally:
        job.kill()
    assert job.returncode == 143, stderr
    assert stderr.endswith("error: terminated (SIGTERM)\nhint: the last completed epoch is saved; run the same "
                           "command with `--resume` to continue\n"), stderr
    assert "worker" not in stderr, stderr  # one message, no retry
    assert load_checkpoint(tmp_path / "run").meta["epoch"] >= 1
