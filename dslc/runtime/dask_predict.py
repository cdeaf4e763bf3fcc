"""Batch inference over data larger than memory on a Dask cluster (`dslc predict --dask [ADDRESS]`,
the `dslc[dask]` extra).

Inputs are read where they lie, by the workers: a memory-mapped `.npy` (a model with one input), a
directory with one `<input>.npy` per input (memory-mapped, cut into chunks of rows), an `.npz` file
(one chunk) or a directory of `.npz` files (one chunk each, in file-name order). The scheduler only ships (file, rows) pairs and
the trained inference graph, once per worker; each worker builds its ONNX Runtime session itself
(sessions do not pickle) and keeps it for every chunk it runs. The client writes each chunk's outputs
at its rows of a memory-mapped `.npy` per output as chunks finish, so the results are in input order
whatever order the chunks finish in, and memory holds a few chunks, never the dataset.

Without an address a `LocalCluster` of threads starts in this process (`processes=False`: 0.15 s to
start against 2.9 s for worker processes here, and ONNX Runtime releases the GIL while it runs).
On a real cluster every worker needs dslc installed and must see the input paths (a shared file
system); the outputs are written by the client.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import zipfile
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from dslc import interrupts
from dslc.diagnostics import DataError

DASK_HINT = "install the Dask extra: pip install 'dslc[dask]'"
CHUNK_ROWS = 65536


def chunks_of(inputs, names: list[str], chunk_rows: int) -> list[dict]:
    """The tasks' chunks: `{"rows": (start, stop), "files": {name: .npy path}}` of memory-mapped arrays,
    or `{"rows": (start, stop), "npz": path}` per `.npz` file (one given, or each of a directory's);
    `DataError` for anything else."""
    path = Path(inputs)
    if path.suffix == ".npy" and path.is_file():
        if len(names) != 1:
            raise DataError(f"`{path}` is one array, but the model reads {len(names)} inputs ({', '.join(names)})",
                            hint="give a directory with one `<input>.npy` per input")
        files = {names[0]: path}
    elif path.is_dir() and all((path / f"{n}.npy").is_file() for n in names):
        files = {n: path / f"{n}.npy" for n in names}
    elif (path.is_dir() and sorted(path.glob("*.npz"))) or (path.suffix == ".npz" and path.is_file()):
        chunks, start = [], 0
        for npz in sorted(path.glob("*.npz")) if path.is_dir() else [path]:
            with np.load(npz) as arrays:
                if names and names[0] not in arrays.files:
                    raise DataError(f"`{npz}` has no array `{names[0]}`", hint=f"it holds {', '.join(arrays.files)}")
                rows = _npy_rows(arrays, names[0]) if names else 1
            chunks.append({"rows": (start, start + rows), "npz": str(npz)})
            start += rows
        return chunks
    elif path.is_dir() and sorted(path.glob("*.npy")):
        missing = [f"{n}.npy" for n in names if not (path / f"{n}.npy").is_file()]
        raise DataError(f"`{inputs}` has no {', '.join(f'`{m}`' for m in missing)} (one `<input>.npy` per input of "
                        f"the model: {', '.join(names)})",
                        hint="it holds " + ", ".join(p.name for p in sorted(path.glob("*.npy"))))
    else:
        raise DataError(f"cannot read `{inputs}` as data for `--dask`",
                        hint="give a `.npy` file (one input), a directory with one `<input>.npy` per input, "
                             "an `.npz` file, or a directory of `.npz` files")
    rows = set()
    for name, file in files.items():
        rows.add(np.load(file, mmap_mode="r").shape[0])
    if len(rows) != 1:
        raise DataError(f"the inputs have different numbers of rows ({', '.join(str(r) for r in sorted(rows))})")
    n = rows.pop()
    return [{"rows": (s, min(s + chunk_rows, n)), "files": {k: str(v) for k, v in files.items()}}
            for s in range(0, n, chunk_rows)]


def _npy_rows(npz, name: str) -> int:
    """Rows of one array in an `.npz`, from its header: the array is not read."""
    with npz.zip.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape = read_header(f)[0]
    return shape[0] if shape else 1


def run_chunk(model, spec: dict, chunk: dict, batch_size: int, threads: int | None) -> tuple:
    """On a worker: the outputs of one chunk, `("ok", start, {name: array})`, or `("error", message,
    hint)` (exceptions of dslc's own kinds are returned as text: they need not unpickle on the client)."""
    from dask.distributed import get_worker

    from dslc.runtime.data import load_data
    from dslc.runtime.session import Predictor

    try:
        worker = get_worker()
        sessions = worker.__dict__.setdefault("_dslc_predictors", {})
        key = hashlib.sha256(model).hexdigest()
        if key not in sessions:  # one session per worker, for every chunk it runs
            sessions[key] = Predictor(model, spec, threads=threads)
        start, stop = chunk["rows"]
        if "npz" in chunk:
            arrays = load_data(chunk["npz"], spec["inputs"], f"input data `{chunk['npz']}`")
        else:
            raw = {name: np.load(file, mmap_mode="r")[start:stop] for name, file in chunk["files"].items()}
            arrays = load_data(raw, spec["inputs"], f"input data (rows {start} to {stop - 1})")
        return ("ok", start, sessions[key].run(arrays, batch_size))
    except DataError as e:
        return ("error", e.message, e.hint)


def predict(program, inputs, out, weights=None, *, address: str | None = None, batch_size: int = 256,
            chunk_rows: int = CHUNK_ROWS, workers: int | None = None, progress=None) -> list[Path]:
    """Run the inference graph of `program` with `weights` over `inputs` (see `chunks_of`) on the Dask
    cluster at `address` (a `LocalCluster` of `workers` threads when None) and write the outputs to
    `out`: an `.npz`, or a directory with one `<output>.npy` each. `progress(rows_done, rows)` is called
    as chunks finish. Returns the written paths."""
    try:
        from concurrent.futures import CancelledError

        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise DataError("`--dask` needs Dask", hint=DASK_HINT) from None
    from dslc.runtime.data import check_count
    from dslc.runtime.devices import default_threads

    batch_size = check_count(batch_size, "batch_size", "the batch size")
    chunk_rows = check_count(chunk_rows, "chunk_rows", "the rows per chunk")
    spec = program.manifest["graphs"]["infer"]
    model = program.trained_model(weights)
    chunks = chunks_of(inputs, [t["name"] for t in spec["inputs"]], chunk_rows)
    total = chunks[-1]["rows"][1] if chunks else 0
    if total == 0:
        raise DataError(f"`{inputs}` has no rows")
    out = Path(out)
    if out.suffix == ".npz":  # before the work, as `dslc predict` does (a missing folder was created)
        from dslc.fsutil import check_writable

        check_writable(out)
    staging = out.parent / f".{out.name}.dslc-partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, staging, ignore_errors=True)
        cleanup.enter_context(quiet_distributed_logs())
        if address is None:
            workers = workers or default_threads()
            # A signal while the cluster starts waits until `cleanup` can close it (one that cut its start
            # short left it to Dask's exit hook, whose close failed with a traceback); it is closed by
            # `cleanup` only: a signal that lands while it closes leaves it open, and the exit hook closed
            # it again, waiting up to 10 s after dslc had said `error: terminated` (a signal in
            # `Worker.close`: 11.5 s to exit instead of 1.5). Its threads end with the process.
            with interrupts.deferred():
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=False,
                                       dashboard_address=None)
                cluster.shutdown_on_close = False
                cleanup.enter_context(cluster)
            threads = max(1, default_threads() // workers)
        else:
            cluster, threads = address, None  # every core of each worker's machine
        done = [0]
        with cluster_failures(address, done, total), Client(cluster) as client:
            shared = client.scatter(model, broadcast=True)
            futures = [client.submit(run_chunk, shared, spec, c, batch_size, threads, pure=False) for c in chunks]
            outputs: dict[str, np.ndarray] = {}
            for future in as_completed(futures):
                try:
                    result = future.result()
                except CancelledError:
                    if every_worker_lost(client):
                        raise WorkersLost() from None
                    raise
                if result[0] == "error":
                    client.cancel(futures)
                    raise DataError(result[1], hint=result[2])
                _, start, values = result
                for name, value in values.items():
                    if name not in outputs:
                        outputs[name] = np.lib.format.open_memmap(staging / f"{name}.npy", mode="w+",
                                                                   dtype=value.dtype, shape=(total, *value.shape[1:]))
                    outputs[name][start:start + len(value)] = value
                done[0] += len(next(iter(values.values())))
                if progress is not None:
                    progress(done[0], total)
            for array in outputs.values():
                array.flush()
            del outputs
        return _publish(staging, out, [t["name"] for t in spec["outputs"]])


class WorkersLost(Exception):
    """The scheduler answers, but every worker has left it mid-run (`cluster_failures` says so)."""


def every_worker_lost(client) -> bool:
    """Whether the scheduler answers and has no worker: the chunks were cancelled ("already forgotten")
    because the model scattered to the workers left with the last of them."""
    try:
        return not client.nthreads()
    except Exception:  # noqa: BLE001 - a scheduler that does not answer: `cluster_failures` says that
        return False


@contextmanager
def cluster_failures(address: str | None, done: list[int], total: int):
    """A `DataError` for a cluster that cannot be reached or stops answering (its scheduler shut down
    or lost, a worker killed by every chunk it ran): Dask raises a `CommClosedError` naming a connection
    pool (found by stopping the scheduler mid-run), `CancelledError`, `KilledWorker` or `TimeoutError`,
    which `dslc predict` showed as an internal error or as the connection's repr. `done[0]`: the rows
    finished so far."""
    from concurrent.futures import CancelledError

    from dask.distributed import KilledWorker

    where = f"the Dask scheduler at `{address}`" if address else "the local Dask cluster"
    try:
        yield
    except WorkersLost:
        raise DataError(f"{where} lost every worker after {done[0]:,} of {total:,} rows: the workers left (stopped, "
                        "killed or disconnected) and took the model dslc had sent them; nothing was written",
                        hint=(f"start workers for it (`dask worker {address}`), then run the command again (a "
                              "worker that leaves while others stay is replaced by them)") if address else
                        "run the command again") from None
    except (OSError, CancelledError, KilledWorker, TimeoutError) as e:
        reason = f"{type(e).__name__}: {str(e).splitlines()[0]}" if str(e) else type(e).__name__
        if done[0] == 0 and "no valid workers" in str(e).lower():  # the scheduler answers, but has no workers
            import dask

            raise DataError(f"{where} has no workers: none joined it within "
                            f"{dask.config.get('distributed.comm.timeouts.connect')}; nothing was written",
                            hint=f"start workers for it (`dask worker {address}`), then run the command again") \
                from None
        if done[0] == 0 and "connect" in str(e).lower():
            raise DataError(f"cannot reach {where} ({reason})",
                            hint="start a scheduler and workers there (`dask scheduler`, `dask worker ADDRESS`), "
                                 "or drop the address to run on a local cluster") from None
        raise DataError(f"{where} stopped answering after {done[0]:,} of {total:,} rows ({reason}); nothing "
                        f"was written", hint="check that the scheduler and its workers are running, then run the "
                                             "command again") from None


@contextmanager
def quiet_distributed_logs():
    """Nothing from Dask's `distributed` loggers while dslc drives it: their default configuration prints
    INFO records on stderr, some with a traceback (a comm closed as the cluster shuts down), a Ctrl-C
    makes each cancelled chunk a warning, and a scheduler lost mid-run logs ERROR records with the
    tracebacks of the client's reconnection. dslc reports the failures that matter itself
    (`cluster_failures`, a chunk's error)."""
    loggers = [logging.getLogger("distributed")] + [  # those its configuration gives a level of their own
        logger for name, logger in logging.root.manager.loggerDict.items()
        if name.startswith("distributed.") and isinstance(logger, logging.Logger) and logger.level]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.level, logging.CRITICAL))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _publish(staging: Path, out: Path, names: list[str]) -> list[Path]:
    """Move the finished outputs into place: an `.npz` (stored, not compressed) or a directory of `.npy`."""
    if out.suffix == ".npz":
        partial = staging / "outputs.npz"
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            for name in names:
                z.write(staging / f"{name}.npy", f"{name}.npy")
        os.replace(partial, out)
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        os.replace(staging / f"{name}.npy", out / f"{name}.npy")
        paths.append(out / f"{name}.npy")
    return paths


class Progress:
    """`progress(done, total)` for the command line: a line on stderr at most every `every` seconds and
    at the end."""

    def __init__(self, stream, every: float = 1.0):
        self.stream, self.every, self.last, self.shown = stream, every, 0.0, -1
        self.started = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if (done < total and now - self.last < self.every) or done == self.shown:  # (a chunk of no rows)
            return
        self.last, self.shown = now, done
        rate = done / max(now - self.started, 1e-9)
        self.stream.write(f"predicted {done:,}/{total:,} rows ({100 * done / total:.0f}%, {rate:,.0f} rows/s)\n")
        self.stream.flush()
