"""`dslc train` killed with SIGKILL at random points, then resumed, ends bit-for-bit where an
uninterrupted run ends: the same parameters and optimizer state, the same history, no leftovers.

The normal suite kills one process at each named point of `dslc.runtime.faults` (a training step,
inside the checkpoint's write, between the checkpoint and its history entry, inside the history
append), the occurrence drawn from a fixed seed. `pytest --fault-kills=N` adds N kills at random
moments (a timer in this process), each resumed run being killed again until one completes.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dslc import cli
from dslc.runtime import checkpoint
from dslc.runtime.history import HISTORY_FILE

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits"
EPOCHS, STEPS = 3, 6  # 1,438 samples in batches of 256: 6 steps per epoch
TRAIN = ["train", DIGITS / "digits.dl", "-D", "hidden=8", "--data", DIGITS / "train.npz", "--val",
         DIGITS / "test.npz", "--epochs", EPOCHS, "--batch-size", 256, "--seed", 5, "--threads", 1]


def command(run: Path, *extra) -> list[str]:
    return [str(a) for a in (*TRAIN, "-o", run, *extra)]


def start(run: Path, fault: str | None = None, resume: bool = False, extra=()) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DSLC_FAULT", None)
    if fault:
        env["DSLC_FAULT"] = fault
    return subprocess.Popen([sys.executable, "-m", "dslc.cli", *command(run, *extra, *(["--resume"] if resume else []))], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(run: Path) -> None:
    """What a user does after a crash: resume, or start again if no epoch was saved."""
    resume = (run / "checkpoint.npz").exists()
    assert cli.main(command(run, *(["--resume"] if resume else []))) == 0


def snapshot(run: Path) -> tuple[dict, dict, list]:
    ckpt = checkpoint.load_checkpoint(run)
    lines = (run / HISTORY_FILE).read_text().splitlines()
    strip = ("time", "samples_per_s")
    return ckpt.params, ckpt.state, [{k: v for k, v in json.loads(x).items() if k not in strip} for x in lines]


def assert_same_run(run: Path, straight: tuple[dict, dict, list]) -> None:
    params, state, history = snapshot(run)
    for got, want in ((params, straight[0]), (state, straight[1])):
        assert got.keys() == want.keys()
        for name in want:
            assert np.array_equal(got[name], want[name]), name
    assert history == straight[2]
    assert [p for p in os.listdir(run) if p.endswith(".tmp")] == []


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run = tmp_path_factory.mktemp("straight") / "run"
    assert cli.main(command(run)) == 0
    return snapshot(run)


def test_kills_at_each_point_of_an_epoch_then_resume_match_an_uninterrupted_run(straight, tmp_path):
    rng = random.Random(10)
    faults = {"step": rng.randint(1, EPOCHS * STEPS), "checkpoint-write": rng.randint(1, EPOCHS),
              "checkpoint-saved": rng.randint(1, EPOCHS), "history-write": rng.randint(1, EPOCHS)}
    runs = {point: tmp_path / point for point in faults}
    processes = {point: start(runs[point], f"{point}:{n}") for point, n in faults.items()}  # concurrently
    for point, process in processes.items():
        _, err = process.communicate(timeout=300)
        assert process.returncode == -signal.SIGKILL, (point, err)
    run = runs["checkpoint-write"]  # killed inside the write: its temporary file is left behind
    assert [p for p in os.listdir(run) if p.startswith(".checkpoint.npz.") and p.endswith(".tmp")] != []
    run = runs["checkpoint-saved"]  # killed between the two writes: the history lags the checkpoint
    lines = (run / HISTORY_FILE).read_text().splitlines() if (run / HISTORY_FILE).exists() else []
    assert len(lines) == checkpoint.load_checkpoint(run).meta["epoch"] - 1 == faults["checkpoint-saved"] - 1
    run = runs["history-write"]  # killed inside the append: a torn last line
    assert not (run / HISTORY_FILE).read_text().endswith("\n")
    for point, run in runs.items():
        finish(run)
        assert_same_run(run, straight)


@pytest.mark.parametrize("how, code, message", [("INT", 130, "error: interrupted"),
                                                  ("TERM", 143, "error: terminated (SIGTERM)")])
def test_ctrl_c_or_sigterm_mid_epoch_stops_and_resume_matches_an_uninterrupted_run(straight, tmp_path, how, code,
                                                                                 message):
    """SIGINT (Ctrl-C) or SIGTERM (`kill`, `docker stop`, a scheduler's preemption) lands in the training
    thread while the previous epoch's checkpoint may still be written on the background thread: the run
    waits for it, says how to continue, and releases the lock."""
    run = tmp_path / "run"
    process = start(run, f"step:{STEPS + 2}:{how}")  # in epoch 2, just after epoch 1's save was submitted
    _, err = process.communicate(timeout=300)
    assert process.returncode == code
    assert err == (f"{message}\n"
                   "hint: the last completed epoch is saved; run the same command with `--resume` to continue\n")
    assert checkpoint.load_checkpoint(run).meta["epoch"] == 1
    finish(run)
    assert_same_run(run, straight)


def test_a_kill_before_the_best_epochs_copy_still_restores_the_best_epoch(tmp_path):
    """`best.npz` is copied from the checkpoint after the epoch's save: killed between the two, the resumed
    run made the stale (here: missing) copy the run's weights, or kept the last epoch's, while the history
    named the best epoch. With min_delta this large only epoch 1 ever improves."""
    keep = ["--early-stopping", "monitor=val_loss,patience=10,min_delta=1000", "--restore-best"]
    straight_run, run = tmp_path / "straight", tmp_path / "run"
    assert cli.main(command(straight_run, *keep)) == 0
    process = start(run, "checkpoint-saved:1", extra=keep)
    _, err = process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL, err
    assert not (run / "best.npz").exists()
    assert cli.main(command(run, *keep, "--resume")) == 0
    restored = checkpoint.load_checkpoint(run)
    assert restored.meta["epoch"] == checkpoint.checkpoint_epoch(run / "best.npz") == 1
    want = checkpoint.load_checkpoint(straight_run)
    assert all(np.array_equal(restored.params[k], want.params[k]) for k in want.params)


def test_a_best_epoch_whose_weights_are_gone_is_not_restored(tmp_path, capfd):
    """A run first trained without tracking the best epoch, resumed with `--restore-best`: the best epoch
    so far may be one whose weights no file holds; the run says so and keeps the last epoch rather than
    restore another epoch's weights as the best. With min_delta this large only epoch 1 ever improves."""
    run = tmp_path / "run"
    assert cli.main(command(run, "--epochs", 2)) == 0
    capfd.readouterr()
    keep = ["--early-stopping", "monitor=val_loss,patience=10,min_delta=1000", "--restore-best"]
    assert cli.main(command(run, *keep, "--resume")) == 0
    shown = "".join(capfd.readouterr())
    assert "the weights of epoch 1, the best `val_loss` so far, were not kept (best.npz is missing)" in shown
    assert checkpoint.load_checkpoint(run).meta["epoch"] == EPOCHS


def test_kills_at_random_moments(straight, tmp_path, request):
    kills = request.config.getoption("--fault-kills")
    if not kills:
        pytest.skip("pass --fault-kills=N to kill N training processes at random moments")
    rng = random.Random(kills)
    process = start(tmp_path / "probe")  # how long one run takes here, to spread the kills over it
    started = time.monotonic()
    process.communicate(timeout=600)
    span = time.monotonic() - started
    done = 0
    while done < kills:
        run = tmp_path / f"run{done}"
        while True:  # kill the run, then its resumptions, until one completes
            process = start(run, resume=(run / "checkpoint.npz").exists())
            try:
                process.wait(timeout=rng.uniform(0.2, span))
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                done += 1
                continue
            assert process.returncode == 0, process.stderr.read()
            break
        assert_same_run(run, straight)
