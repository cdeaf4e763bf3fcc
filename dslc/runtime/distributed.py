"""Data-parallel training on MPI (`mpi4py`; the `dslc[mpi]` extra brings the PyPI `mpich` wheel).

    mpiexec -n 4 dslc train m.dl --data train.npz --epochs 10 --batch-size 256 -o runs/m
    dslc train m.dl ... --workers 2          # starts `mpiexec -n 2` itself, on this machine (launch.py)
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
import sys
import time
from contextlib import contextmanager

from dslc.diagnostics import DataError, DslcError
from dslc.cli_failures import exit_code, to_devnull
from dslc.interrupts import RESUME_HINT, stopped

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
