"""`mpiexec -n 2 dslc train --tune`: rank 0 alone times the candidates and sends its program to the other
rank, which waits without taking a core and trains the same graphs; a rank 0 that fails or dies while it
tunes stops the job with a clear error instead of leaving the other rank waiting. The timing is injected
into each rank through `sitecustomize` (as tests/test_distributed.py injects failures), and each rank
records the graphs it trains. In-process, on a fake communicator: the exit code the other ranks take from
rank 0, and a failing rank aborting only once its message has left the pipe."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dslc.cli import UsageError
from dslc.diagnostics import DataError, DslcError
from dslc.interrupts import Terminated
from dslc.runtime.devices import default_threads
from helpers import hang_guard

pytest.importorskip("mpi4py")
MPIEXEC = Path(sys.executable).parent / "mpiexec"
pytestmark = pytest.mark.skipif(not MPIEXEC.exists(), reason="the mpich wheel's mpiexec is not installed")
ROOT = Path(__file__).resolve().parent.parent

MODEL = """
model tiny(lr = 0.05) {
    input  x: f32[B, 1, 12, 12]
    target y: i64[B]

    logits = x |> conv2d(4, 5) |> relu |> flatten |> dense(3)
    output probs = softmax(logits)
    loss      cross_entropy(logits, y)
    optimizer sgd(lr = lr)
}
"""

# each rank: `measure` answers that `fastest` beats the other candidates alone and in the step, and logs
# the candidates it was asked for; on rank 0 it first waits for rank 1 to wait, then sleeps `rank0_sleep` s
# (rank 1's wait) and runs `rank0_action`; each rank records the tuning and graphs it trains, and the CPU
# time it spent waiting for rank 0
SITE = """
import hashlib, json, os, time
rank = os.environ.get("PMI_RANK")
if rank is not None:
    from dslc.bench_timing import Timing
    from dslc.diagnostics import DataError
    from dslc.program import Program
    from dslc.runtime import distributed, tune

    log = {log!r}
    fastest = {fastest!r} if rank == "0" else "columns"  # another rank measuring would choose otherwise

    def measure(models, threads):
        with open(os.path.join(log, f"measured.{{rank}}"), "a") as f:
            f.write(json.dumps(list(models)) + "\\n")
        if rank == "0":
            while {rank0_sleep} and not os.path.exists(os.path.join(log, "waiting.1")):
                time.sleep(0.01)  # until rank 1 waits for rank 0, then the wait `rank0_sleep` lasts at least
            time.sleep({rank0_sleep})
            {rank0_action}
        slow = {{"rule", "columns", "swapped", "bands"}} - {{fastest}}  # a step with a probe's choice is fast
        return {{name: Timing(*[2.0 if name in slow else 1.0] * 3, blocks=5) for name in models}}

    tune._measure = measure

    def train(self, *args, **kwargs):
        record = {{"tuning": self.manifest.get("tuning"),
                   "graphs": {{key: hashlib.sha256(g).hexdigest() for key, g in self.graphs.items()}}}}
        with open(os.path.join(log, f"program.{{rank}}.json"), "w") as f:
            json.dump(record, f)
        return original_train(self, *args, **kwargs)

    original_train, Program.train = Program.train, train

    def waited(comm, value):
        open(os.path.join(log, f"waiting.{{rank}}"), "w").close()
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return original_wait(comm, value)
        finally:
            if not os.path.exists(os.path.join(log, f"waited.{{rank}}")):  # the program's wait, not an epoch's
                with open(os.path.join(log, f"waited.{{rank}}"), "w") as f:
                    json.dump({{"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}}, f)

    original_wait, distributed.from_rank_zero = distributed.from_rank_zero, waited
"""


def _job(tmp_path: Path, fastest: str = "swapped", rank0_sleep: float = 0.0, rank0_action: str = "pass"):
    """`mpiexec -n 2 dslc train --tune` of the tiny model with the injected timing; its log folder."""
    log = tmp_path / "log"
    log.mkdir()
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITE.format(log=str(log), fastest=fastest,
                                                                    rank0_sleep=rank0_sleep, rank0_action=rank0_action))
    model, npz = tmp_path / "tiny.dl", tmp_path / "d.npz"
    model.write_text(textwrap.dedent(MODEL))
    rng = np.random.default_rng(4)
    np.savez(npz, x=rng.standard_normal((16, 1, 12, 12)).astype(np.float32), y=rng.integers(0, 3, 16))
    env = {**os.environ, "DSLC_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    env.pop("DSLC_NO_CACHE", None)
    command = [str(MPIEXEC), "-n", "2", sys.executable, "-m", "dslc", "train", str(model), "--data", str(npz),
               "--epochs", "1", "--batch-size", "8", "-o", str(tmp_path / "run"), "--tune"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=hang_guard(120))
    return done, log


def test_rank_zero_tunes_and_both_ranks_train_its_graphs(tmp_path):
    done, log = _job(tmp_path, fastest="swapped", rank0_sleep=1.0)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in log.glob("measured.*")) == ["measured.0"]
    # the probe of the 5×5 one-channel layer's candidates, then the step with the rule's and with swapped
    probes, step = map(json.loads, (log / "measured.0").read_text().splitlines())
    assert sorted(probes) == ["bands", "columns", "swapped"] and step[0] == "rule" and len(step) == 2
    zero, one = (json.loads((log / f"program.{r}.json").read_text()) for r in (0, 1))
    assert one == zero
    (choice,) = zero["tuning"]["choices"]
    assert (choice["rule"], choice["choice"]) == ("bands", "swapped")
    # one rank's half of the batch of 8, on its half of the cores
    assert (zero["tuning"]["batch"], zero["tuning"]["threads"]) == (4, max(1, default_threads() // 2))
    assert done.stderr.count("tuned 1 choice(s)") == 1  # rank 0 prints the table, once
    # rank 1 waited through rank 0's 1 s of "measuring" without spinning (a blocking MPICH call spins:
    # measured 1.6 s of CPU in a 2 s wait, polling 0.007 s; as a share of the wait, which a loaded
    # machine lengthens, the polls' CPU does not grow with the load)
    waited = json.loads((log / "waited.1").read_text())
    assert waited["wall"] >= 1.0 and waited["cpu"] < 0.1 * waited["wall"], waited
    run = json.loads((tmp_path / "run" / "history.jsonl").read_text().splitlines()[0])
    assert run["steps"] == 2


@pytest.mark.parametrize("action, code, message", [
    ('raise DataError("the tune cache is on a full disk")', 3, "error: the tune cache is on a full disk"),
    ("os.kill(os.getpid(), 9)", 9, "BAD TERMINATION"),  # killed: mpiexec stops the waiting rank
])
def test_a_rank_zero_that_stops_while_tuning_stops_the_job(tmp_path, action, code, message):
    done, log = _job(tmp_path, rank0_action=action)
    assert done.returncode == code, done.stderr
    assert message in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    if code == 3:  # rank 1 stops with rank 0's code, and rank 0's message is the only one
        assert done.stderr.count("error") == 1 and "has no graphs to train" not in done.stderr, done.stderr
    assert sorted(p.name for p in log.glob("measured.*")) == ["measured.0"]
    assert not list(log.glob("program.*"))


class OneOfTwo:
    """A fake communicator of 2 ranks, seen from `rank`: its broadcast returns what rank 0 sent (`sent`)."""

    def __init__(self, rank: int, sent=None):
        self.rank, self.sent = rank, sent

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return 2

    def Ibarrier(self):
        return type("Request", (), {"Test": lambda request: True})()

    def bcast(self, value, root):
        assert root == 0
        if self.rank == 0:
            self.sent = value
        return self.sent

    def iprobe(self, source, tag):  # rank 0 did not fail (`said_by_rank_zero`)
        return False


@pytest.mark.parametrize("error, code", [
    (UsageError("`-D n` is given twice"), 2),
    (DslcError([]), 1),
    (DataError("no such file"), 3),
    (FileNotFoundError(2, "No such file or directory", "data.npz"), 3),  # as the command exits, not 101
    (BrokenPipeError(), 141),
    (KeyboardInterrupt(), 130),
    (Terminated(), 143),
    (ZeroDivisionError(), 101),
])
def test_the_other_ranks_stop_with_rank_zeros_exit_code(error, code):
    from dslc.runtime.distributed import RankZeroStopped, program_from_rank_zero

    def compile():
        raise error

    zero = OneOfTwo(0)
    with pytest.raises(type(error)):
        program_from_rank_zero(zero, compile)
    with pytest.raises(RankZeroStopped) as stopped:
        program_from_rank_zero(OneOfTwo(1, zero.sent), lambda: pytest.fail("rank 1 compiled"))
    assert stopped.value.exit_code == code and f"(exit code {code}, see its message)" in stopped.value.message


@pytest.mark.parametrize("error", [UsageError("x"), DslcError([]), DataError("x"), PermissionError(13, "denied", "out"),
                                   BrokenPipeError(), KeyboardInterrupt(), Terminated(), RuntimeError("x")])
def test_a_rank_exits_with_the_code_the_command_would(error):
    """An MPI rank aborts with the exit code `dslc` gives the same error (`cli_failures.failure`)."""
    from argparse import Namespace

    from dslc.cli_failures import failure
    from dslc.runtime import distributed

    class Comm(OneOfTwo):
        def Abort(self, code):
            self.aborted = code

    comm = Comm(1)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(distributed, "_wait_until_read", lambda: None)
        m.setattr(distributed, "FAILURE_GRACE_S", 0.0)
        with distributed.abort_on_error(comm):
            raise error
    assert comm.aborted == failure(Namespace(verb="predict", out="."), error)[0]


def test_a_failing_rank_aborts_once_its_message_is_read(monkeypatch):
    """`abort_on_error` writes the rank's message, waits until the launcher has read it from the pipe, then
    aborts. The reader here reads only once the rank has begun to wait, so without the wait the pipe would
    still hold the message at the abort."""
    import io
    import threading
    import time

    from dslc.runtime import distributed

    read_end, write_end = os.pipe()
    monkeypatch.setattr(sys, "stderr", os.fdopen(write_end, "w"))
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # not a pipe: nothing to wait for
    monkeypatch.setattr(distributed, "READ_WAIT_S", 600.0)
    monkeypatch.setattr(distributed, "FAILURE_GRACE_S", 0.0)
    waiting, received = threading.Event(), []
    sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda seconds: (waiting.set(), sleep(seconds)))
    reader = threading.Thread(target=lambda: (waiting.wait(), received.append(os.read(read_end, 4096))))
    reader.start()

    class Comm(OneOfTwo):
        def Abort(self, code):
            self.aborted = (code, distributed._unread(sys.stderr))

    comm = Comm(1)
    with distributed.abort_on_error(comm):
        raise DataError("the disk is full", hint="free some space")
    waiting.set()  # had the rank not waited, the reader reads now, after the abort
    reader.join()
    sys.stderr.close()
    os.close(read_end)
    assert comm.aborted == (3, 0)  # exit code 3, and nothing left unread in the pipe
    assert received == [b"error (worker 1 of 2): the disk is full\nhint: free some space\n"]
