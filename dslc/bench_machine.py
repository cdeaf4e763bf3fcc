"""What the machine can do, measured by `dslc bench` before it times a model: matrix-multiply
throughput in the model's dtype (the GEMM peak), memory bandwidth, and whether other work is competing for the cores.

    GEMM peak    2·n³ / the 10th-percentile time of an n×n ONNX Runtime MatMul
    bandwidth    bytes read + written / the fastest of a few ONNX Runtime Adds over a buffer far larger than
                 the caches, its output bound once (a fresh output would time page faults, not memory)

Peaks are taken from the fast end of their samples: what the machine can do, which a busy neighbour
only hides (a median of a contended minute measured 20 GFLOP/s on a machine that does 300).
    contention   the GEMM on 1 thread against `threads` threads, interleaved. Idle, 2 threads are ~1.9×
                 faster; when another process holds a core (a busy sibling vCPU) the second thread adds
                 little or slows the pool down, and every ratio of dslc to a peer drifts towards 1.
"""
from __future__ import annotations

import os
import platform
import statistics

import numpy as np

from dslc.bench_timing import interleaved, timed
from dslc.ir.graph import Builder, Graph
from dslc.ir.types import TensorType

GEMM_SIZE = 1024
BANDWIDTH_FLOATS = 32 * 2 ** 20  # 128 MiB per buffer: past any L3 of this kind of machine (16M floats read up to 62 GB/s)
# the least speedup of `threads` threads over one that counts as an uncontended machine, per added thread
# (2 threads: 1.4×; idle machines of this kind give 1.8-1.95×, contended ones 0.9-1.3×)
MIN_SPEEDUP_PER_THREAD = 0.4


def machine() -> dict:
    return {"python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor(),
            "cores": os.cpu_count()}


def _model(name: str, build) -> bytes:
    from dslc.emit.onnx import emit_graph, serialize

    b = Builder()
    return serialize(emit_graph(Graph(name, *build(b))))


def _matmul_model(size: int, dtype: str = "float32") -> bytes:
    """c = a @ b for `size`×`size` inputs `a` and `b` of `dtype`, serialized ONNX."""
    def build(b):
        x = b.input("a", TensorType(dtype, (size, size)), "data")
        y = b.input("b", TensorType(dtype, (size, size)), "data")
        return [x, y], [("c", b.matmul(x, y))]

    return _model("gemm", build)


def _gemm_job(threads: int, size: int, dtype: str = "float32"):
    """A function running one `size`³ product of `dtype` on an ONNX Runtime session of `threads` threads."""
    from dslc.runtime.devices import make_session

    session = make_session(_matmul_model(size, dtype), "cpu", threads)
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((size, size)).astype(dtype), "b": rng.standard_normal((size, size)).astype(dtype)}
    return lambda: session.run(None, feeds)


def _times(fn, repeats: int) -> list[float]:
    fn()  # warm-up: the first run allocates
    return timed(fn, repeats)


def gemm_gflops(threads: int | None, size: int = GEMM_SIZE, repeats: int = 10) -> float:
    """Measured float32 GEMM throughput of ONNX Runtime here (median of `repeats` `size`³ products)."""
    from dslc.runtime.devices import default_threads

    return 2 * size ** 3 / statistics.median(_times(_gemm_job(threads or default_threads(), size), repeats)) / 1e9


def bandwidth_gbs(threads: int, floats: int = BANDWIDTH_FLOATS, repeats: int = 7) -> float:
    """Measured memory bandwidth (GB/s, reads + writes): y = x + x over `floats` float32 values."""
    from dslc.runtime.devices import make_session
    from dslc.runtime.session import bound_runner

    def build(b):
        x = b.input("x", TensorType("float32", (floats,)), "data")
        return [x], [("y", b.add(x, x))]

    session = make_session(_model("stream", build), "cpu", threads)
    run = bound_runner(session, {"x": np.ones(floats, np.float32)}, {"y": np.zeros(floats, np.float32)})
    seconds = min(_times(run, repeats))
    return 2 * 4 * floats / seconds / 1e9


def scaling_text(check: dict) -> str:
    """How the GEMM scaled from 1 thread to the bench's threads (nothing to compare on 1 thread)."""
    if check["threads"] == 1:
        return "one thread (no scaling check)"
    return f"a GEMM on {check['threads']} threads ran {check['speedup']:.2f}× faster than on 1"


def contention(threads: int, rounds: int = 4, per_round: int = 3, size: int = GEMM_SIZE, dtype: str = "float32") -> dict:
    """The GEMM timed on 1 thread and on `threads`, interleaved; the machine's load average. `contended`
    when the speedup falls short of MIN_SPEEDUP_PER_THREAD per added thread, or the 1-minute load
    average (other processes wanting a core) exceeds the cores. Returns the GEMM peak too: from the faster
    10th-percentile time of the two (on a contended machine, one thread can beat `threads`), in the
    `dtype` of the model timed (a float64 GEMM runs at about half the float32 peak)."""
    jobs = [("1", _gemm_job(1, size, dtype))] + ([(str(threads), _gemm_job(threads, size, dtype))] if threads > 1 else [])
    timings = interleaved(jobs, per_round, rounds, warmup=1, retry_contended=False)  # contention is what it looks for
    one, many = timings["1"].median_ms, timings[str(threads)].median_ms
    speedup = one / many
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    cores = os.cpu_count() or 1
    reasons = []
    if threads > 1 and speedup < 1 + MIN_SPEEDUP_PER_THREAD * (threads - 1):
        reasons.append(f"{threads} threads run the GEMM only {speedup:.2f}× faster than 1 "
                       f"(an idle machine gives ~{0.9 * threads:.1f}×)")
    if load is not None and load > cores:
        reasons.append(f"load average {load:.1f} on {cores} cores")
    return {"threads": threads, "gemm_1_thread_ms": one, "gemm_ms": many, "speedup": speedup,
            "gemm_gflops": 2 * size ** 3 / (min(t.p10_ms for t in timings.values()) * 1e-3) / 1e9, "load_average": load, "cores": cores,
            "contended": bool(reasons), "reasons": reasons}
