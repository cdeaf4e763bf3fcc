"""`dslc` as one of the processes of `mpiexec -n N dslc train`: which verbs may run there, which rank
speaks for all, and how a failure ends the job and is said once (by rank 0 when every rank has it)."""
from __future__ import annotations

import sys

from dslc.cli_failures import UsageError, to_devnull
from dslc.diagnostics import DataError


def other_rank(args) -> bool:
    """Whether this is a rank other than 0 of `mpiexec ... dslc train` (rank 0 reports for all)."""
    if args.verb != "train":
        return False
    from dslc.runtime.distributed import world

    comm = world()
    return comm is not None and comm.Get_rank() > 0


def refuse_mpiexec(args) -> None:
    """Only `dslc train` runs on the processes of `mpiexec -n N`: any other verb ran N times, each rank
    printing the same results (`evaluate`, `bench`) or writing the same files (`predict`, `build`)."""
    from dslc.runtime.distributed import launch_rank, launched_by_mpi

    if args.verb == "train" or not launched_by_mpi():
        return
    if launch_rank() != 0:  # every rank refuses it: rank 0 alone says so
        to_devnull(sys.stderr)
    hint = "; `dslc predict --dask` runs batch inference on many cores or machines" if args.verb == "predict" else ""
    raise UsageError(f"`dslc {args.verb}` runs in one process: under `mpiexec`, only `dslc train` uses several "
                     f"(run it without `mpiexec`{hint})")


def job_to_stop(args, error: BaseException):
    """Under `mpiexec ... dslc train`, the job (`MPI.COMM_WORLD`) that a rank which failed outside training
    (the model did not compile, a usage error) must end: the others would wait for it for ever in their
    first collective call (found by trying it: a 60 s timeout killed the job). None when they were told
    already (`program_from_rank_zero`)."""
    if args.verb != "train":
        return None
    from dslc.runtime import distributed

    if not distributed.launched_by_mpi() or getattr(error, "other_ranks_told", False) \
            or isinstance(error, distributed.RankZeroStopped):
        return None
    try:
        return distributed.world()
    except DataError:  # mpi4py missing: the error printed says so
        return None


def said_once_by_rank_zero(args, comm, error: BaseException, lines: list[str]) -> bool:
    """Whether rank 0 prints this rank's failure `lines` for it, under `mpiexec ... dslc train`: every rank
    runs the same command (a model that does not compile fails them all, and each printed the diagnostic),
    and a rank that stopped because rank 0 failed to compile or tune (`RankZeroStopped`) has nothing to add
    to rank 0's message."""
    from dslc.runtime.distributed import RankZeroStopped, said_by_rank_zero

    if comm is None:
        return args.verb == "train" and isinstance(error, RankZeroStopped)
    return said_by_rank_zero(comm, "\n".join(lines))


def stop_the_other_ranks(comm, code: int, said_by_rank_zero: bool) -> None:
    """End the job with `code`; a rank whose failure rank 0 reports leaves rank 0 to end it (its own
    `MPI.Abort` could cut rank 0's message off)."""
    from dslc.runtime import distributed

    if said_by_rank_zero:
        import time

        time.sleep(distributed.ABORT_WAIT_S)
    distributed.abort_job(comm, code)
