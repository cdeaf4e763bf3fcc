"""Data-parallel training on MPI (`mpi4py`; the `dslc[mpi]` extra brings the PyPI `mpich` wheel).

    mpiexec -n 4 dslc train m.dl --data train.npz --epochs 10 --batch-size 256 -o runs/m
    dslc train m.dl ... --workers 2          # starts `mpiexec -n 2` itself, on this machine
    program.train(..., workers=2)            # the same from Python

Every rank loads the training data, walks the same epoch order and takes its shard of each global
batch; `SplitSteps` sums the shards' gradients with one `Allreduce` and applies the update on every
rank, so the ranks stay identical (`dslc/runtime/accumulate.py`). Rank 0 alone writes the run
directory (which must be on a file system every rank sees, for `--resume`), validates and reports.
A rank that fails aborts the whole job (`MPI.Abort`): the others would otherwise wait for it forever.
With `--tune`, rank 0 alone compiles and tunes and sends the program to the others (`program_from_rank_zero`).
"""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from dslc.diagnostics import DataError, DslcError
from dslc.cli_failures import exit_code, to_devnull
from dslc.interrupts import EXIT_INTERRUPTED, EXIT_TERMINATED, RESUME_HINT, Terminated, stopped

MPI_HINT = "install the MPI extra: pip install 'dslc[mpi]' (mpi4py and the mpich wheel)"
# environment variables an MPI launcher sets in each process it starts: MPICH/Hydra, Open MPI, PMIx
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
# how often a rank waiting for rank 0 looks for its message: MPICH's blocking calls wait by spinning
# (a rank blocked 2 s in `bcast` used 1.6 s of CPU; polling with sleeps in between, 0.007 s)
POLL_S = 0.005
ABORT_WAIT_S = 60.0  # the longest the other ranks wait for rank 0 to abort after `check_same_run` fails
# how long a failing rank other than 0 waits for word that rank 0 failed the same way (and reports it):
# the ranks run one command, and a model that does not compile, a missing file or Ctrl-C fails them all
FAILURE_GRACE_S = 5.0  # (rank 0 may be finishing a checkpoint it was saving when Ctrl-C came)
FAILURE_TAG = 0xD51C  # the tag of that word: the ranks exchange no other point-to-point messages
JOB_SIGNAL_S = 1.0  # how long `launch` leaves its job to stop of itself after a SIGTERM, before passing it on
JOB_STOP_S = 30.0  # the longest `launch` waits for its job to stop after a Ctrl-C or SIGTERM before killing it
READ_WAIT_S = 5.0  # the longest a failing rank waits for `mpiexec` to read its message before it aborts


class RankZeroStopped(DataError):
    """On a rank other than 0: rank 0 failed before it sent what every rank needs; its own message says
    why, and this rank exits with its exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def launched_by_mpi() -> bool:
    """Whether this process is one of several started by `mpiexec`."""
    return any(os.environ.get(name, "1").isdigit() and int(os.environ.get(name, "1")) > 1 for name in _SIZE_VARIABLES)


def launch_rank() -> int:
    """This process's rank as its MPI launcher numbered it (0 when not started by one), read without
    starting MPI."""
    return next((int(os.environ[n]) for n in _RANK_VARIABLES if os.environ.get(n, "").isdigit()), 0)


def world():
    """`MPI.COMM_WORLD` when started by `mpiexec` with more than one process, else None."""
    if not launched_by_mpi():
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise DataError("this process was started by mpiexec, but mpi4py is not installed", hint=MPI_HINT) from None
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None


def rank_threads() -> int:
    """ONNX Runtime threads for one rank: this machine's cores shared by the ranks on it (spinning
    threads of several ranks on the same cores slowed the digits model 5x)."""
    from dslc.runtime.devices import default_threads

    local = next((os.environ[n] for n in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE") if n in os.environ), "1")
    return max(1, default_threads() // max(1, int(local) if local.isdigit() else 1))


def tuned_share(batch_size: int, accumulate: int, workers: int | None, threads: int | None) -> tuple[int, int]:
    """What one training graph of `dslc train` runs at, for `--tune` to measure at: the rows of the
    largest micro-batch of one rank (`accumulate.shard`, then `accumulate` micro-batches) and that rank's
    ONNX Runtime threads (`--threads`, else the cores shared by the `--workers` or `mpiexec` ranks)."""
    from dslc.runtime.devices import default_threads

    ranks = workers or max([int(os.environ[n]) for n in _SIZE_VARIABLES if os.environ.get(n, "").isdigit()] + [1])
    rows = -(-batch_size // ranks)
    if threads is None:
        threads = max(1, default_threads() // workers) if workers else rank_threads() if ranks > 1 else default_threads()
    return -(-rows // accumulate), threads


@contextmanager
def abort_on_error(comm, checkpoint: str | os.PathLike | None = None, say_interrupts: bool = True):
    """On a rank, turn any failure into a message naming the rank and `MPI.Abort` (which stops every
    rank, with the exit code of the error's kind) — instead of leaving the other ranks blocked. Stopped
    by Ctrl-C or SIGTERM (`mpiexec` passes them on to every rank), the rank says that the run's
    `checkpoint`, if written, continues with `--resume`, as `dslc train` does in one process (not with
    `say_interrupts` False: `launch`'s process says it). A failure that rank 0 has too is said by rank 0
    alone (`said_by_rank_zero`)."""
    if comm is None:
        yield
        return
    try:
        yield
    except BaseException as e:  # noqa: BLE001 - every failure must stop the other ranks
        code = exit_code(e)
        if isinstance(e, DataError):
            text = e.message + (f"\nhint: {e.hint}" if e.hint else "")
        elif isinstance(e, DslcError):
            text = "the model has errors"
        elif isinstance(e, KeyboardInterrupt):
            text = stopped(e)[0].removeprefix("error: ")
            if checkpoint is not None and os.path.exists(checkpoint):
                text += f"\nhint: {RESUME_HINT}"
        else:
            text = f"{type(e).__name__}: {e}"
        if said_by_rank_zero(comm, text):
            time.sleep(ABORT_WAIT_S)  # rank 0's `MPI.Abort` ends this process first
        elif say_interrupts or not isinstance(e, KeyboardInterrupt):
            sys.stderr.write(f"error (worker {comm.Get_rank()} of {comm.Get_size()}): {text}\n")
        abort_job(comm, code)


_told: list = []  # rank 0's pending sends of `said_by_rank_zero`: a request's buffer must outlive the call


def said_by_rank_zero(comm, text: str) -> bool:
    """Whether rank 0 says `text`, the message of this rank's failure, for it, so that this rank says
    nothing: every rank of `mpiexec ... dslc train` runs the same command, and most failures (a model
    that does not compile, a data file missing, Ctrl-C, which `mpiexec` passes to every rank) are every
    rank's, each printing the same message (two copies of a diagnostic on 2 ranks). Rank 0 sends its
    `text` to the others and returns False (it reports); another rank waits at most `FAILURE_GRACE_S`
    for it, polling, and returns whether it is the same text (when rank 0 did not fail, or failed
    otherwise, the rank reports its own failure)."""
    if comm.Get_rank() == 0:
        _told.extend(comm.isend(text, dest=rank, tag=FAILURE_TAG) for rank in range(1, comm.Get_size()))
        return False
    deadline = time.monotonic() + FAILURE_GRACE_S
    while time.monotonic() < deadline:
        if comm.iprobe(source=0, tag=FAILURE_TAG):
            return comm.recv(source=0, tag=FAILURE_TAG) == text
        time.sleep(POLL_S)
    return False


def abort_job(comm, code: int) -> None:
    """End every rank of `comm`'s job with exit code `code` (`MPI.Abort`), once `mpiexec` has read what
    this rank wrote. A rank that ends its process without it leaves the others waiting for ever in their
    next collective call: MPICH's `mpiexec` ends the job when a rank is killed, not when one exits with
    an error code."""
    for stream in (sys.stderr, sys.stdout):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that left: nothing more to say
            pass
    _wait_until_read()
    to_devnull(sys.stderr)  # not MPICH's `Abort(3) on node 0 (rank 0 in comm 0): application called MPI_Abort(...)`
    comm.Abort(code)


def _wait_until_read() -> None:
    """Wait (at most `READ_WAIT_S`) until the launcher has read what this rank wrote to its stdout and
    stderr pipes: `MPI.Abort` has `mpiexec` stop the job at once, and a message still in a pipe can be
    lost with it (a failing rank's message went missing once under heavy load; other MPI programs report
    the same of text printed right before `MPI_Abort`)."""
    deadline = time.monotonic() + READ_WAIT_S
    for stream in (sys.stdout, sys.stderr):
        while _unread(stream) and time.monotonic() < deadline:
            time.sleep(0.001)


def _unread(stream) -> int:
    """The bytes written to `stream` that its reader has not read yet, when it is a pipe (else 0)."""
    try:
        import fcntl
        import stat
        import struct
        import termios

        fd = stream.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return 0
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
    except (ImportError, OSError, ValueError, AttributeError):  # not on POSIX, or not a real file
        return 0


def program_from_rank_zero(comm, compile):
    """The program `compile()` returns on rank 0, on every rank of `comm`: rank 0 compiles, the others
    wait and receive it (`portable`), so that every rank runs the same graphs. For `--tune`: ranks that
    all time the candidates at once on shared cores disturb each other's timings, each pays for the
    tuning, and they may choose differently. The waiting ranks poll rather than block (`POLL_S`), so that
    they leave the cores to rank 0's timing. If `compile` fails on rank 0, it tells the others before it
    raises, and they raise `RankZeroStopped` with its exit code: a rank 0 that returned from `main` without
    a word would leave them waiting for ever (MPICH's `mpiexec` ends the job when a rank is killed or
    leaves without finalizing MPI, not when it exits with an error code)."""
    if comm.Get_rank() == 0:
        try:
            program = compile()
        except BaseException as e:  # noqa: BLE001 - the other ranks must hear of every failure
            from_rank_zero(comm, ("stopped", exit_code(e)))
            e.other_ranks_told = True  # they stop with their own message: no `abort_job` to cut it off
            raise
        from_rank_zero(comm, ("program", portable(program)))
        return program
    kind, value = from_rank_zero(comm, None)
    if kind == "stopped":
        raise RankZeroStopped(f"worker {comm.Get_rank()} of {comm.Get_size()} has no graphs to train: worker 0, "
                              f"which compiles and tunes them, stopped (exit code {value}, see its message)", value)
    return value


def check_same_run(comm, **parts) -> None:
    """`DataError` on rank 0 when another rank's `parts` (the training data's fingerprint, the model's
    hash, the settings, where training starts) differ from rank 0's: the ranks index one global batch
    and sum their shards in one `Allreduce` per step, so a rank with other data, another model or another
    starting epoch would wait for ever in a step the others never take (found by trying it: a rank
    reading a shorter file spun in `Allreduce` at 100% CPU, and a SIGTERM to `mpiexec` could not stop it).
    The other ranks wait, polling, for rank 0 to abort the job (`abort_on_error`), so that the error is
    printed once, then raise it too."""
    everyone = comm.allgather(parts)
    differences = [f"worker {rank} has {_described(what, theirs[what], everyone[0][what])} where worker 0 has "
                   f"{_described(what, everyone[0][what], theirs[what])}"
                   for rank, theirs in enumerate(everyone) for what in parts if theirs[what] != everyone[0][what]]
    if not differences:
        return
    if comm.Get_rank() != 0:
        _wait_for_abort(comm)
    shown = differences[:3] + ([f"and {len(differences) - 3} more"] if len(differences) > 3 else [])
    raise DataError(f"the {comm.Get_size()} workers do not train the same run: " + "; ".join(shown),
                    hint="every rank must read the same data, model file, `-D` values and settings, and see the "
                         "same `-o RUN` (a file system shared by every node, for `--resume`)")


def _described(what: str, value, other) -> str:
    """A rank's `value` of `check_same_run`'s part `what` (where another rank has `other`), as the error
    shows it."""
    if what == "data":
        return f"training data of {value['rows']:,} rows (blake2b {value['blake2b'][:12]})"
    if what == "model":
        return f"model sha256 {value[:12]}"
    if what == "start":
        return f"a run starting at epoch {value[0] + 1} (global step {value[1]})"
    return ", ".join(f"{k} = {value.get(k)}" for k in sorted(set(value) | set(other)) if value.get(k) != other.get(k))


def _wait_for_abort(comm) -> None:
    """On a rank other than 0: wait, without spinning, for rank 0's `MPI.Abort` to end the job (in a
    barrier rank 0 does not join), at most `ABORT_WAIT_S` (a program calling `fit` itself may not abort)."""
    _poll_barrier(comm, time.monotonic() + ABORT_WAIT_S)


def from_rank_zero(comm, value):
    """Rank 0's `value` on every rank; the ranks wait for rank 0 in a non-blocking barrier, sleeping
    between polls, then receive it in one broadcast. For waits that may be long (rank 0 compiling,
    tuning or validating): MPICH's blocking calls spin, taking a core from rank 0 (over 5 epochs of
    validation on 718,000 rows, the waiting rank used 4.9-5.4 s of CPU in `bcast`, 1.8 s polling)."""
    _poll_barrier(comm)
    return comm.bcast(value, root=0)


def _poll_barrier(comm, deadline: float = float("inf")) -> None:
    """Wait in a non-blocking barrier of `comm`, sleeping `POLL_S` between polls, until every rank has
    joined it or `deadline` (`time.monotonic()`) has passed."""
    barrier = comm.Ibarrier()
    while not barrier.Test() and time.monotonic() < deadline:
        time.sleep(POLL_S)


def portable(program):
    """`program` as it crosses to another process: its name, manifest, graphs, source path and `-D` values
    (not the IR or the rest of what the compile keeps in `extras`)."""
    return type(program)(program.name, program.manifest, program.graphs, source_path=program.source_path,
                         defines=program.defines)


def mpiexec() -> str:
    """The `mpiexec` next to this Python (the mpich wheel's), else the one on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        found = None
    if found is None:
        raise DataError("`--workers` needs MPI: mpi4py and an `mpiexec`", hint=MPI_HINT)
    return found


def launch(program, workers: int, train, val=None, *, reporter=None, threads: int | None = None, retries: int = 1,
           **settings):
    """Train `program` in `workers` local MPI processes (`mpiexec -n workers`); return the history.

    A worker that dies (killed, or crashed without an error of dslc's) stops the job; when an epoch was
    checkpointed, the job starts again from it, up to `retries` times (resume is exact, so the run
    still equals an uninterrupted one).

    The compiled program and any in-memory data go to the workers through a temporary job file. Each
    worker's ONNX Runtime gets `cores // workers` threads unless `threads` is given. The workers print
    progress when `reporter` is the console's; another reporter is not called (read the returned
    history, or `RUN/history.jsonl`)."""
    import json

    import numpy as np

    from dslc.runtime.data import check_count
    from dslc.runtime.checkpoint import CHECKPOINT_FILE
    from dslc.runtime.history import HISTORY_FILE
    from dslc.runtime.progress import ConsoleReporter
    from dslc.standard_json import undefined_as_nan
    from dslc.runtime.devices import check_cuda_provider, default_threads, parse_device

    workers = check_count(workers, "workers", "the number of workers")
    if parse_device(settings.get("device", "cpu"))[0] == "cuda":
        check_cuda_provider()
    if workers == 1:
        from dslc.runtime.train import fit

        return fit(program, train, val, reporter=reporter, threads=threads, **settings)
    command = mpiexec()
    job_dir = Path(tempfile.mkdtemp(prefix="dslc-job-"))
    try:
        data = {}
        for key, value in (("train", train), ("val", val)):
            if isinstance(value, dict):  # arrays cross as a file, not in the pickle
                path = job_dir / f"{key}.npz"
                np.savez(path, **value)
                value = str(path)
            data[key] = value
        job = {"program": portable(program), "data": data, "console": isinstance(reporter, ConsoleReporter),
               "settings": {**settings, "threads": threads or max(1, default_threads() // workers)}}
        job_file = job_dir / "job.pickle"
        if reporter is not None:
            reporter.close()  # the workers write the terminal from here on
        checkpoint = Path(settings["out_dir"]) / CHECKPOINT_FILE
        for attempt in range(retries + 1):
            job_file.write_bytes(pickle.dumps(job))
            done = _run_job([command, "-n", str(workers), sys.executable, "-c", WORKER_COMMAND, str(job_file)])
            if done.returncode in (EXIT_INTERRUPTED, EXIT_TERMINATED):  # the job alone was signalled
                raise Terminated() if done.returncode == EXIT_TERMINATED else KeyboardInterrupt()
            kind = {3: "bad data or files", 1: "errors in the model"}.get(done.returncode)
            if done.returncode == 0 or kind or attempt == retries or not checkpoint.exists():
                break
            if reporter is not None:
                reporter.warn(f"a training worker died (exit code {done.returncode}); all {workers} workers start "
                              f"again from the last checkpoint (retry {attempt + 1} of {retries})")
            job["settings"]["resume"] = True
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)
    if done.returncode != 0:
        why = f" ({kind}, see its message above)" if kind else " (it died or was killed: no message of its own)"
        hint = (f"the last completed epoch is saved in `{checkpoint}`; run again with `--resume` to continue"
                if checkpoint.exists() else "no epoch was completed")
        raise DataError(f"a training worker stopped with exit code {done.returncode}{why}; "
                        f"all {workers} workers were stopped", hint=hint)
    history_file = Path(settings["out_dir"]) / HISTORY_FILE  # rank 0 wrote it as `fit` returns it
    return [undefined_as_nan(json.loads(text)) for text in history_file.read_text(encoding="utf-8").splitlines()
            if text.strip()] \
        if history_file.exists() else []


def _run_job(argv: list[str]) -> subprocess.CompletedProcess:
    """Run the `mpiexec` command `argv` to its end. Stopped by Ctrl-C or SIGTERM, wait for the job to stop
    too (at most `JOB_STOP_S`, then kill it) and raise: a Ctrl-C at a terminal reaches `mpiexec` as well,
    which passes it on to the ranks, and a SIGTERM sent to this process alone is passed on to it after
    `JOB_SIGNAL_S`. The ranks stop as `dslc train` does, a checkpoint being written landing; with
    `subprocess.run`, `mpiexec` was killed 0.25 s after the signal."""
    job = subprocess.Popen(argv)
    try:
        return subprocess.CompletedProcess(argv, job.wait())
    except KeyboardInterrupt as stop:
        try:
            if isinstance(stop, Terminated):
                try:
                    job.wait(timeout=JOB_SIGNAL_S)
                except subprocess.TimeoutExpired:
                    job.terminate()
            job.wait(timeout=JOB_STOP_S)
        except subprocess.TimeoutExpired:
            pass
        finally:  # a second Ctrl-C too
            if job.poll() is None:
                job.kill()
        raise


WORKER_COMMAND = "import sys; from dslc.runtime.distributed import run_worker; run_worker(sys.argv[1])"


def run_worker(job_file: str) -> None:
    """A rank started by `launch`: train with the job's program, data and settings (a failure aborts
    the job with its exit code, see `abort_on_error`)."""
    from dslc import interrupts
    from dslc.runtime.progress import ConsoleReporter
    from dslc.runtime.train import fit

    interrupts.install()  # a SIGTERM killed the rank (exit 15), which `launch` took for a death and retried
    job = pickle.loads(Path(job_file).read_bytes())
    comm = world()
    with abort_on_error(comm, say_interrupts=False):
        rank = comm.Get_rank() if comm is not None else 0
        reporter = ConsoleReporter(sys.stdout, warnings=sys.stderr) if job["console"] and rank == 0 else None
        try:
            fit(job["program"], job["data"]["train"], job["data"]["val"], reporter=reporter, comm=comm,
                **job["settings"])
        finally:
            if reporter is not None:
                reporter.close()
