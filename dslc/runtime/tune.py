"""`--tune`: each shape-dependent choice of a program's graphs measured with ONNX Runtime on this machine,
instead of the fixed rule (what `torch.backends.cudnn.benchmark` does for cuDNN's algorithms).

A choice point is an IR node whose op lists `formulations` (today the float32 convolution filter
gradient: im2col columns, the swapped Conv, row bands). Each candidate is lowered alone into a small ONNX
graph at the layer's real shapes (the batch the run will use), timed on random data with the thread count
the run will use (warm-up, then interleaved blocks, the median), and the fastest is written into the
program's graphs. Measurements are kept per machine (`dslc.tune_cache`), so a second build measures
nothing.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dslc import tune_cache
from dslc.ir.graph import Builder, Graph, Node, toposort
from dslc.ir.types import TensorType
from dslc.ops.registry import Formulations, formulation_key, get_op

DEFAULT_BATCH = 64  # the batch tuned at when the graphs' batch is symbolic and the command gives none
BLOCK_S = 0.015  # calls per interleaved block: about this long
ROUNDS = 5
WARMUP = 3

# candidates' ONNX models with their feeds -> each candidate's median milliseconds
Measure = Callable[[dict[str, tuple[bytes, dict[str, np.ndarray]]], int], dict[str, float]]


@dataclass(frozen=True)
class TuneSetting:
    """What `--tune` measures for: `threads` intra-op threads, batch `batch` where the graphs' batch is
    symbolic. `measure` replaces the timing with ONNX Runtime (tests)."""

    threads: int
    batch: int = DEFAULT_BATCH
    measure: Measure | None = field(default=None, compare=False)

    def key(self) -> dict:
        """For the compile cache: the machine and the batch (the measurements decide the rest)."""
        return {**tune_cache.machine(self.threads), "batch": self.batch}


@dataclass(frozen=True)
class Choice:
    """One choice point as tuned: the symbolic `key` the emitter looks up, where the layer is, the
    concrete shape measured, each candidate's median (empty: not measured), the choice and the rule's."""

    key: str
    at: str
    shape: str
    median_ms: dict[str, float]
    choice: str
    rule: str
    cached: bool = False

    def as_json(self) -> dict:
        return {"at": self.at, "shape": self.shape, "median_ms": self.median_ms, "choice": self.choice,
                "rule": self.rule}


def choice_points(graphs: dict[str, Graph]) -> list[tuple[str, Node, Formulations]]:
    """(key, node, formulations) of every node with more than one candidate, each shape once."""
    points: dict[str, tuple[str, Node, Formulations]] = {}
    for graph in graphs.values():
        for node in toposort([n for _, n in graph.outputs]):
            if node.op in ("input", "const"):
                continue
            options = get_op(node.op).formulations(*[i.type for i in node.inputs], **node.attrs)
            key = formulation_key(node.op, [i.type for i in node.inputs], node.attrs)
            if options is not None and len(options.candidates) > 1 and key not in points:
                points[key] = (key, node, options)
    return list(points.values())


def tune(graphs: dict[str, Graph], setting: TuneSetting) -> list[Choice]:
    """The choice of every choice point of `graphs`, measured or read from this machine's cache."""
    machine = tune_cache.machine(setting.threads)
    known = tune_cache.load(machine)
    measured: dict[str, dict] = {}
    choices = []
    for key, node, options in choice_points(graphs):
        types = [_at_batch(i.type, setting.batch) for i in node.inputs]
        at = _where(node)
        if any(not isinstance(d, int) for t in types for d in t.shape):
            choices.append(Choice(key, at, key, {}, options.rule, options.rule))
            continue
        shape = formulation_key(node.op, types, node.attrs)
        entry = known.get(shape)
        cached = entry is not None and set(entry["median_ms"]) == set(options.candidates)
        if not cached:
            models = {name: _probe(node.op, types, node.attrs, name) for name in options.candidates}
            medians = (setting.measure or _measure)(models, setting.threads)
            entry = {"median_ms": {name: round(medians[name], 4) for name in options.candidates},
                     "choice": min(options.candidates, key=lambda name: medians[name])}
            measured[shape] = entry
        choices.append(Choice(key, at, shape, entry["median_ms"], entry["choice"], options.rule, cached))
    tune_cache.store(machine, measured)
    return choices


def _at_batch(t: TensorType, batch: int) -> TensorType:
    """`t` with a symbolic batch (the first axis) set to `batch`."""
    if not t.shape or isinstance(t.shape[0], int):
        return t
    return TensorType(t.dtype, (batch,) + tuple(t.shape[1:]))


def _where(node: Node) -> str:
    return repr(node.span) if node.span is not None else "?"


def _probe(op: str, types: list[TensorType], attrs: dict, formulation: str) -> tuple[bytes, dict[str, np.ndarray]]:
    """The ONNX model of one `op` node at `types`, lowered as `formulation`, with random feeds."""
    from dslc.emit.onnx import emit_graph, serialize

    b = Builder()
    inputs = [b.input(f"in{k}", t, "data") for k, t in enumerate(types)]
    node = b.emit(op, *inputs, **attrs)
    choice = {formulation_key(op, types, node.attrs): formulation}
    model = emit_graph(Graph(f"tune.{op}.{formulation}", inputs, [("out", node)]), choices=choice)
    rng = np.random.default_rng(0)
    feeds = {f"in{k}": rng.standard_normal(t.shape).astype(np.float32) for k, t in enumerate(types)}
    return serialize(model), feeds


def _measure(models: dict[str, tuple[bytes, dict[str, np.ndarray]]], threads: int) -> dict[str, float]:
    """Each model's median milliseconds per run with ONNX Runtime, on `threads` threads, in interleaved
    blocks of about `BLOCK_S` (`bench_timing.interleaved`)."""
    from dslc.bench_timing import interleaved
    from dslc.runtime.session import make_session

    jobs = []
    for name, (model, feeds) in models.items():
        session = make_session(model, threads=threads)
        jobs.append((name, lambda s=session, f=feeds: s.run(None, f)))
    slowest = 0.0
    for _, run in jobs:  # warm-up, and the block size from the slowest candidate
        for _ in range(WARMUP):
            start = time.perf_counter()
            run()
        slowest = max(slowest, time.perf_counter() - start)
    per_block = max(1, min(20, math.ceil(BLOCK_S / max(slowest, 1e-6))))
    timings = interleaved(jobs, per_round=per_block, rounds=ROUNDS, warmup=0, retry_contended=False)
    return {name: t.median_ms for name, t in timings.items()}


def report_lines(tuning: dict, measured_now: int | None) -> list[str]:
    """The table `--tune` prints on stderr from a manifest's `tuning`: each layer, its shapes, each
    candidate's median and the choice. `measured_now`: how many shapes were timed by this command (None:
    the program came from the compile cache)."""
    choices = tuning["choices"]
    where = (f"{tuning['threads']} thread{'s' if tuning['threads'] > 1 else ''}, batch {tuning['batch']}, "
             f"onnxruntime {tuning['onnxruntime']}, {tuning['cpu']}")
    if not choices:
        return [f"tune ({where}): no shape-dependent choice in these graphs"]
    source = "all from the cache" if not measured_now else f"{measured_now} measured now"
    lines = [f"tuned {len(choices)} choice(s) ({where}; {source}):"]
    for c in choices:
        shapes = c["shape"].partition("(")[2].partition(";")[0]
        times = "  ".join(f"{name} {ms:.3f} ms" for name, ms in c["median_ms"].items()) or "not measured (shape not static)"
        rule = "" if c["choice"] == c["rule"] else f" (rule: {c['rule']})"
        lines.append(f"  {c['at']}  {c['shape'].partition('(')[0]} {shapes}  {times}  -> {c['choice']}{rule}")
    return lines
