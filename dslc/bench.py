"""`dslc bench`: time a model's training step and inference in ONNX Runtime, optionally against its
PyTorch twin (interleaved in one process, never at the same time), and relate the training step to the
machine's measured float32 matrix-multiply throughput.

    ratio            = dslc time / PyTorch time          (below 1: dslc is faster)
    flop_utilization = training-step FLOPs / step time / measured GEMM FLOP/s
"""
from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from dslc.diagnostics import DataError
from dslc.ir.graph import Builder, Graph
from dslc.ir.types import TensorType
from dslc.runtime.layout import train_keys

GEMM_SIZE = 1024


@dataclass
class BenchResult:
    model: str
    batch_size: int
    infer_batch_size: int
    steps: int
    threads: int
    gemm_gflops: float
    train_flops: int
    train_step_ms: float
    infer_ms: float
    torch_train_step_ms: float | None = None
    torch_infer_ms: float | None = None
    loss_check: dict = field(default_factory=dict)

    @property
    def train_ratio(self) -> float | None:
        return None if self.torch_train_step_ms is None else self.train_step_ms / self.torch_train_step_ms

    @property
    def infer_ratio(self) -> float | None:
        return None if self.torch_infer_ms is None else self.infer_ms / self.torch_infer_ms

    @property
    def flop_utilization(self) -> float:
        return self.train_flops / (self.train_step_ms * 1e-3) / (self.gemm_gflops * 1e9)

    def as_json(self) -> dict:
        return {
            "model": self.model, "batch_size": self.batch_size, "infer_batch_size": self.infer_batch_size,
            "steps": self.steps, "threads": self.threads, "gemm_gflops": self.gemm_gflops,
            "train_gflop_per_step": self.train_flops / 1e9,
            "train_step_ms": self.train_step_ms, "torch_train_step_ms": self.torch_train_step_ms,
            "train_ratio": self.train_ratio, "infer_ms": self.infer_ms, "torch_infer_ms": self.torch_infer_ms,
            "infer_ratio": self.infer_ratio, "flop_utilization": self.flop_utilization, "loss_check": self.loss_check,
        }


def machine() -> dict:
    import os

    return {"python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor(),
            "cores": os.cpu_count()}


def _concrete(shape, dims: dict[str, int], name: str) -> tuple[int, ...]:
    out = []
    for d in shape:
        if isinstance(d, int):
            out.append(d)
        elif d in dims:
            out.append(dims[d])
        else:
            raise DataError(f"input `{name}` has the symbolic dimension `{d}`, which needs a size",
                            hint=f"pass `--dim {d}=N`")
    return tuple(out)


def synthetic_batch(specs: list[dict], dims: dict[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random data of the declared shapes: floats N(0, 1), integers in [0, classes) (0 and 1 without a
    class count), booleans at random."""
    batch = {}
    for t in specs:
        shape = _concrete(t["shape"], dims, t["name"])
        dtype = np.dtype(t["dtype"])
        if dtype.kind == "f":
            batch[t["name"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            batch[t["name"]] = rng.integers(0, t.get("classes", 2), shape).astype(dtype)
        else:
            batch[t["name"]] = rng.random(shape) < 0.5
    return batch


def gemm_gflops(threads: int | None, size: int = GEMM_SIZE, repeats: int = 10) -> float:
    """Measured float32 GEMM throughput of ONNX Runtime here (median of `repeats` `size`³ products)."""
    from dslc.emit.onnx import emit_graph, serialize
    from dslc.runtime.session import make_session

    b = Builder()
    x = b.input("a", TensorType("float32", (size, size)), "data")
    y = b.input("b", TensorType("float32", (size, size)), "data")
    session = make_session(serialize(emit_graph(Graph("gemm", [x, y], [("c", b.matmul(x, y))]))), "cpu", threads)
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((size, size), dtype=np.float32), "b": rng.standard_normal((size, size), dtype=np.float32)}
    session.run(None, feeds)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return 2 * size ** 3 / statistics.median(times) / 1e9


def _timed(fn, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def run(program, *, batch_size: int, infer_batch_size: int | None = None, steps: int = 50, warmup: int = 10,
        dims: dict[str, int] | None = None, compare_torch: bool = False, threads: int | None = None,
        rounds: int = 5) -> BenchResult:
    """Benchmark `program` (a single-objective model). Times are medians over `steps` steps, taken in
    `rounds` alternating blocks of dslc and PyTorch so that drifting machine load hits both alike."""
    from dslc.runtime.session import Predictor, TrainStep, default_threads
    from dslc.twin import flops

    keys = train_keys(program.manifest)
    if keys != ["train"]:
        raise DataError(f"`dslc bench` times models with one training objective; `{program.name}` has "
                        f"{len(keys) or 'no'} objective(s)", hint="benchmark a model with a `loss` and an `optimizer`")
    threads = threads or default_threads()
    infer_batch_size = infer_batch_size or batch_size
    spec = program.manifest["graphs"]["train"]
    infer_spec = program.manifest["graphs"]["infer"]
    rng = np.random.default_rng(0)
    symbols = {"B": batch_size, **(dims or {})}
    batch = synthetic_batch(spec["inputs"], symbols, rng)
    infer_inputs = synthetic_batch(infer_spec["inputs"], {**symbols, "B": infer_batch_size}, rng)

    gemm = gemm_gflops(threads)
    final = program.extras["final"]["train"]
    train_flops = flops(final, symbols)

    trainer = TrainStep(program.graphs["train"], spec, "cpu", threads)
    predictor = Predictor(program.graphs["infer"], infer_spec, "cpu", threads)
    dslc_step = lambda: trainer.step(batch)  # noqa: E731
    dslc_infer = lambda: predictor.run(infer_inputs)  # noqa: E731
    timers = {"train": [], "infer": []}
    jobs = [("train", dslc_step), ("infer", dslc_infer)]

    loss_check = {}
    if compare_torch:
        import torch

        from dslc.twin import TorchTwin

        torch.set_num_threads(threads)
        lowered = program.extras["lowered"]
        twin = TorchTwin(torch, lowered["train"], lowered["infer"], lowered["train"].notes["optimizer"])
        # the same first step: dslc's loss (before its update) against the twin's
        first = TrainStep(program.graphs["train"], spec, "cpu", threads).step(batch)["loss"]
        twin_first = float(twin.loss(batch)["loss"].detach())
        loss_check = {"dslc": first, "torch": twin_first}
        timers.update({"torch_train": [], "torch_infer": []})
        jobs += [("torch_train", lambda: twin.loss_and_step(batch)), ("torch_infer", lambda: twin.infer(infer_inputs))]

    for _, fn in jobs:  # warm up every job before timing any
        for _ in range(warmup):
            fn()
    per_round = max(1, -(-steps // rounds))
    for _ in range(rounds):
        for key, fn in jobs:
            time.sleep(0.01)  # let the previous job's spinning worker threads go idle (FACTS: pools fight)
            timers[key] += _timed(fn, per_round)
    ms = {k: 1e3 * statistics.median(v) for k, v in timers.items()}
    return BenchResult(program.name, batch_size, infer_batch_size, per_round * rounds, threads, gemm, train_flops,
                       ms["train"], ms["infer"], ms.get("torch_train"), ms.get("torch_infer"), loss_check)
