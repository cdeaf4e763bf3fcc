"""`--workers N` (`program.train(..., workers=N)`): data-parallel training in an MPI job of N ranks that
dslc starts on this machine itself (`mpiexec -n N`), instead of being started under `mpiexec`.

`launch` writes the compiled program, the settings and any in-memory data to a temporary job file, runs
`mpiexec` on `run_worker`, which trains as one rank of `dslc.runtime.distributed` does, and reads the
run's history back; a worker that dies is retried from the last checkpoint, and Ctrl-C or SIGTERM stop
the job as they stop `dslc train`.
"""
from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

from dslc.diagnostics import DataError
from dslc.interrupts import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated
from dslc.runtime.distributed import MPI_HINT, abort_on_error, portable, world
from dslc.spelling import command_line, on_command_line

JOB_SIGNAL_S = 1.0  # how long `launch` leaves its job to stop of itself after a SIGTERM, before passing it on
JOB_STOP_S = 30.0  # the longest `launch` waits for its job to stop after a Ctrl-C or SIGTERM before killing it


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
               "settings": {**settings, "threads": threads or max(1, default_threads() // workers)},
               "command_line": on_command_line()}  # the workers' messages name options as the caller writes them
        job_file = job_dir / "job.pickle"
        if reporter is not None:
            reporter.close()  # the workers write the terminal from here on
        checkpoint = Path(settings["out_dir"]) / CHECKPOINT_FILE
        for attempt in range(retries + 1):
            job_file.write_bytes(pickle.dumps(job))
            done = _run_job([command, "-n", str(workers), sys.executable, "-c", WORKER_COMMAND, str(job_file)])
            if done.returncode in (EXIT_INTERRUPTED, EXIT_TERMINATED):  # the job alone was signalled
                raise Terminated() if done.returncode == EXIT_TERMINATED else KeyboardInterrupt()
            kind = {3: "bad data or files", 2: "settings that do not hold together", 1: "errors in the model"}.get(
                done.returncode)
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
        error = DataError(f"a training worker stopped with exit code {done.returncode}{why}; "
                          f"all {workers} workers were stopped", hint=hint)
        if kind:  # the command ends as the workers did (a death, unexplained, is a failure of the job: 3)
            error.exit_code = done.returncode
        raise error
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


WORKER_COMMAND = "import sys; from dslc.runtime.launch import run_worker; run_worker(sys.argv[1])"


def run_worker(job_file: str) -> None:
    """A rank started by `launch`: train with the job's program, data and settings (a failure aborts
    the job with its exit code, see `abort_on_error`)."""
    from dslc import interrupts
    from dslc.runtime.progress import ConsoleReporter
    from dslc.runtime.train import fit

    interrupts.install()  # a SIGTERM killed the rank (exit 15), which `launch` took for a death and retried
    job = pickle.loads(Path(job_file).read_bytes())
    comm = world()
    spelling = command_line() if job.get("command_line") else nullcontext()
    with abort_on_error(comm, say_interrupts=False), spelling:
        rank = comm.Get_rank() if comm is not None else 0
        reporter = ConsoleReporter(sys.stdout, warnings=sys.stderr) if job["console"] and rank == 0 else None
        try:
            fit(job["program"], job["data"]["train"], job["data"]["val"], reporter=reporter, comm=comm,
                **job["settings"])
        finally:
            if reporter is not None:
                reporter.close()
