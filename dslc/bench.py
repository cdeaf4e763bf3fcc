"""`dslc bench`: time a model's training step and inference in ONNX Runtime, optionally against its
PyTorch twin (interleaved in one process, never at the same time) and against the twin's inference
exported by `torch.onnx.export` and run by ONNX Runtime; relate the training step to the machine's
measured float32 matrix-multiply throughput; optionally measure the training step's peak memory.

    ratio               = dslc time / PyTorch time            (below 1: dslc is faster)
    infer_vs_torch_onnx = dslc inference / exported inference
    flop_utilization    = training-step FLOPs / step time / measured GEMM FLOP/s
    rss_ratio           = dslc's peak-RSS increase / PyTorch's (each in a fresh process, see dslc/bench_memory.py)

Peak memory is measured by `dslc/bench_memory.py` (child processes of its own).
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dslc.diagnostics import DataError
from dslc.ir.graph import Builder, Graph
from dslc.ir.types import TensorType
from dslc.runtime.layout import train_keys

SETTLE_S = 0.05  # between timed blocks: ONNX Runtime workers keep spinning for a while after a run
GEMM_SIZE = 1024
EXPORT_OPSET = 17
EXPORT_RTOL = 1e-4
MEMORY_FIELDS = ("train_peak_rss_mb", "train_rss_increase_mb", "torch_train_peak_rss_mb",
                 "torch_train_rss_increase_mb", "rss_ratio", "memory_steps")


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
    torch_onnx_infer_ms: float | None = None
    torch_onnx_check: dict = field(default_factory=dict)  # see `compare_outputs`
    torch_onnx_error: str | None = None  # why the exported inference was not timed
    memory: dict = field(default_factory=dict)  # see `measure_memory`

    @property
    def train_ratio(self) -> float | None:
        return None if self.torch_train_step_ms is None else self.train_step_ms / self.torch_train_step_ms

    @property
    def infer_ratio(self) -> float | None:
        return None if self.torch_infer_ms is None else self.infer_ms / self.torch_infer_ms

    @property
    def infer_vs_torch_onnx(self) -> float | None:
        return None if self.torch_onnx_infer_ms is None else self.infer_ms / self.torch_onnx_infer_ms

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
            "torch_onnx_infer_ms": self.torch_onnx_infer_ms, "infer_vs_torch_onnx": self.infer_vs_torch_onnx,
            "torch_onnx_check": self.torch_onnx_check, "torch_onnx_error": self.torch_onnx_error,
            **{key: self.memory.get(key) for key in MEMORY_FIELDS},
        }


def machine() -> dict:

    return {"python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor(),
            "cores": os.cpu_count()}


def symbols(manifest: dict) -> set[str]:
    """The symbolic dimensions (`B`, `T`, ...) of the inputs of a model's training and inference graphs."""
    graphs = [g for key, g in manifest["graphs"].items() if key in ("train", "infer")]
    return {d for g in graphs for t in g["inputs"] for d in t["shape"] if isinstance(d, str)}


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


def _matmul_model(size: int) -> bytes:
    """c = a @ b for float32 `size`×`size` inputs `a` and `b`, serialized ONNX."""
    from dslc.emit.onnx import emit_graph, serialize

    b = Builder()
    x = b.input("a", TensorType("float32", (size, size)), "data")
    y = b.input("b", TensorType("float32", (size, size)), "data")
    return serialize(emit_graph(Graph("gemm", [x, y], [("c", b.matmul(x, y))])))


def gemm_gflops(threads: int | None, size: int = GEMM_SIZE, repeats: int = 10) -> float:
    """Measured float32 GEMM throughput of ONNX Runtime here (median of `repeats` `size`³ products)."""
    from dslc.runtime.session import make_session

    session = make_session(_matmul_model(size), "cpu", threads)
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((size, size), dtype=np.float32), "b": rng.standard_normal((size, size), dtype=np.float32)}
    session.run(None, feeds)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return 2 * size ** 3 / statistics.median(times) / 1e9


def interleaved(jobs: list[tuple[str, Callable[[], object]]], per_round: int, rounds: int,
                warmup: int) -> dict[str, float]:
    """The median time (ms) of each job, every job warmed up first, then timed in `rounds` alternating
    blocks of `per_round` calls, never two at once, so that drifting machine load hits all alike."""
    for _, fn in jobs:
        for _ in range(warmup):
            fn()
    timers: dict[str, list[float]] = {key: [] for key, _ in jobs}
    for _ in range(rounds):
        for key, fn in jobs:
            time.sleep(SETTLE_S)  # let the previous job's spinning worker threads go idle (FACTS: pools fight)
            timers[key] += _timed(fn, per_round)
    return {key: 1e3 * statistics.median(times) for key, times in timers.items()}


def _timed(fn, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


class _TensorFeeds:
    """`torch` for a twin being traced: its `from_numpy` lets the traced input tensors through (the twin
    reads its inputs with `T.from_numpy`); everything else is torch's own."""

    def __init__(self, T):
        self._T = T

    def __getattr__(self, name):
        return getattr(self._T, name)

    def from_numpy(self, value):
        return value if isinstance(value, self._T.Tensor) else self._T.from_numpy(value)


def export_twin_inference(T, twin, spec: dict, inputs: dict[str, np.ndarray]) -> bytes:
    """The twin's inference as an ONNX model by `torch.onnx.export`: `TorchTwin.infer` wrapped in a module
    that takes the inference inputs and returns the outputs, both in manifest order; opset 17, traced on
    `inputs`, each leading symbolic axis (the batch) dynamic.

    torch 2.13's default exporter (`dynamo=True`) needs the `onnxscript` package, which is no dependency
    of dslc; the TorchScript exporter (`dynamo=False`, deprecated but shipped) needs nothing more. It
    traces the twin's ops as they run, so an op whose PyTorch code turns a traced size into a Python
    value (a shape check, a size list built from `x.shape`) fails here and the bench reports it.
    """
    import copy
    import io
    import warnings

    names = [t["name"] for t in spec["inputs"]]
    outputs = [t["name"] for t in spec["outputs"]]
    dynamic = {t["name"]: {0: t["shape"][0]} for t in spec["inputs"] + spec["outputs"]
               if t["shape"] and isinstance(t["shape"][0], str)}
    traced = copy.copy(twin)
    traced.T = _TensorFeeds(T)

    class Inference(T.nn.Module):
        def __init__(self):
            super().__init__()
            # registered, so that the tracer stores them as initializers (it refuses to make constants
            # of tensors that require grad)
            self.weights = T.nn.ParameterList(twin.params.values())

        def forward(self, *tensors):
            values = traced.infer(dict(zip(names, tensors)))
            return tuple(values[name] for name in outputs)

    model = io.BytesIO()
    # torch 2.13's TorchScript exporter turns its log on whatever `verbose` says (it tests the function
    # `_jit_is_onnx_log_enabled`, not its result) and so prints the whole traced graph to stdout when an
    # export fails; the bench reports the error's first line instead
    log, log_was_on = T._C._jit_onnx_log, T._C._jit_is_onnx_log_enabled()
    T._C._jit_onnx_log = lambda *args: None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notice and the tracer's warnings
            T.onnx.export(Inference(), tuple(T.from_numpy(inputs[name]) for name in names), model, dynamo=False,
                          opset_version=EXPORT_OPSET, input_names=names, output_names=outputs,
                          dynamic_axes=dynamic)
    finally:
        T._C._jit_onnx_log = log
        T._C._jit_set_onnx_log_enabled(log_was_on)
    return model.getvalue()


def compare_outputs(got: dict[str, np.ndarray], want: dict[str, np.ndarray], rtol: float = EXPORT_RTOL) -> dict:
    """Whether every output in `got` equals the one in `want` within `rtol` of its own size plus `rtol`
    of the output's largest magnitude (an element near zero, such as a logit that cancels out, is judged
    against the scale of its tensor). Returns the outputs compared, the largest absolute difference,
    `rtol` and `passed`."""
    worst, passed = 0.0, True
    for name, expected in want.items():
        actual = np.asarray(got.get(name))
        if actual.shape != expected.shape:
            passed, worst = False, float("inf")
            continue
        scale = float(np.max(np.abs(expected))) if expected.size else 0.0
        difference = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        worst = max(worst, float(difference.max()) if difference.size else 0.0)
        passed = passed and bool(np.all(difference <= rtol * (np.abs(expected) + scale)))
    return {"outputs": list(want), "max_abs_diff": worst, "rtol": rtol, "passed": passed}


def _error_line(e: Exception) -> str:
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first[:300]}"


def _exported_inference(T, twin, spec: dict, inputs: dict[str, np.ndarray], expected: dict[str, np.ndarray],
                        threads: int):
    """(timing job or None, output check, error or None) for the twin's inference exported to ONNX and
    run by dslc's own `Predictor` (the session settings and the per-call work of dslc's inference, so
    that only the graphs differ). Any failure to export, load or run is reported, not raised."""
    from dslc.runtime.session import Predictor

    try:
        exported = Predictor(export_twin_inference(T, twin, spec, inputs), spec, "cpu", threads)
        check = compare_outputs(exported.run(inputs), expected)
    except Exception as e:  # noqa: BLE001 - the exporter's failures are many; the bench goes on without it
        return None, {}, f"torch.onnx.export + ONNX Runtime failed: {_error_line(e)}"
    if not check["passed"]:
        return None, check, (f"the exported model's outputs differ from dslc's (largest difference "
                             f"{check['max_abs_diff']:.3g}, rtol {check['rtol']:g})")
    return (lambda: exported.run(inputs)), check, None


def run(program, *, batch_size: int, infer_batch_size: int | None = None, steps: int = 50, warmup: int = 10,
        dims: dict[str, int] | None = None, compare_torch: bool = False, memory: bool = False,
        threads: int | None = None, rounds: int = 5) -> BenchResult:
    """Benchmark `program` (a single-objective model). Times are medians over `steps` steps, taken in
    `rounds` alternating blocks of dslc and PyTorch so that drifting machine load hits both alike.
    `compare_torch` adds the PyTorch twin and its exported inference; `memory` the peak RSS of `steps`
    training steps of dslc and of the twin, after the timings, each in a fresh process."""
    from dslc.runtime.session import Predictor, TrainStep, default_threads
    from dslc.twin import flops

    keys = train_keys(program.manifest)
    if not keys:
        raise DataError(f"`dslc bench` times a training step; `{program.name}` has no loss",
                        hint="benchmark a model with a `loss` and an `optimizer`")
    if keys != ["train"]:
        raise DataError(f"`dslc bench` times models with one training objective; `{program.name}` has {len(keys)} "
                        f"(`objective` blocks, run one after another per batch)",
                        hint="time the objectives' graphs from Python with `dslc.runtime.session.SharedSteps`")
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

    trainer = TrainStep(program.graphs["train"], spec, "cpu", threads, initial=program.initial_values())
    predictor = Predictor(program.graphs["infer"], infer_spec, "cpu", threads)
    dslc_step = lambda: trainer.step(batch)  # noqa: E731
    dslc_infer = lambda: predictor.run(infer_inputs)  # noqa: E731
    jobs = [("train", dslc_step), ("infer", dslc_infer)]

    loss_check, onnx_check, onnx_error = {}, {}, None
    if compare_torch:
        import torch

        from dslc.twin import MissingTwin, TorchTwin

        torch.set_num_threads(threads)
        lowered = program.extras["lowered"]
        try:
            twin = TorchTwin(torch, lowered["train"], lowered["infer"], lowered["train"].notes["optimizer"])
        except MissingTwin as e:  # an op, or an optimizer (`lion`), PyTorch has no counterpart of
            raise DataError(f"{e}: `--compare torch` cannot build the PyTorch twin of `{program.name}`",
                            hint="drop `--compare torch`") from None
        # the same first step: dslc's loss (before its update) against the twin's
        first = TrainStep(program.graphs["train"], spec, "cpu", threads,
                          initial=program.initial_values()).step(batch)["loss"]
        twin_first = float(twin.loss(batch)["loss"].detach())
        loss_check = {"dslc": first, "torch": twin_first}
        # exported before the twin's first step, so its weights are the ones dslc's inference graph holds
        exported, onnx_check, onnx_error = _exported_inference(torch, twin, infer_spec, infer_inputs,
                                                               dslc_infer(), threads)
        if exported is not None:
            # next to dslc's inference, not just before dslc's training step: there, in about half of the
            # runs, it made the MLP step ~1.5x slower (ONNX Runtime's workers spin ~30 ms after a run)
            jobs.append(("torch_onnx_infer", exported))
        jobs += [("torch_train", lambda: twin.loss_and_step(batch)), ("torch_infer", lambda: twin.infer(infer_inputs))]

    rounds = min(rounds, steps)
    per_round = -(-steps // rounds)
    ms = interleaved(jobs, per_round, rounds, warmup)
    result = BenchResult(program.name, batch_size, infer_batch_size, per_round * rounds, threads, gemm, train_flops,
                         ms["train"], ms["infer"], ms.get("torch_train"), ms.get("torch_infer"), loss_check,
                         ms.get("torch_onnx_infer"), onnx_check, onnx_error)
    if memory:
        from dslc.bench_memory import measure_memory

        result.memory = measure_memory(program, batch, steps=per_round * rounds, threads=threads)
    return result
