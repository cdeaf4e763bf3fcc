"""`--tune`: each shape-dependent choice of a program's graphs measured with ONNX Runtime on this machine,
instead of the fixed rule (what `torch.backends.cudnn.benchmark` does for cuDNN's algorithms).

A choice point is an IR node whose op lists `formulations` (today the float32 convolution filter
gradient: im2col columns, the swapped Conv, row bands). Two measurements, with the thread count the run
will use, each on random data (warm-up, then interleaved blocks, the median):
1. the probe: each candidate lowered alone into a small ONNX graph at the layer's real shapes (the batch
   the run will use); the fastest is the probe's choice;
2. the step: where a probe's choice differs from the rule, the training step with the rule's choices and
   the step with only that one changed; the change is kept if the step is faster by `STEP_MARGIN` and
   most blocks of both ran while no other process waited for a CPU (else the rule's stands). A
   formulation alone is not the step: LeNet's second layer (5×5 from 6 channels, batch 64, 2 threads)
   ran 12% faster alone as columns, and its step 6-11% slower (3.83-3.96 -> 4.17-4.24 ms).
Measurements are kept per machine (`dslc.tune_cache`): probes by shape, step checks by the step graph,
so a second build measures nothing.
"""
from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from dslc import tune_cache
from dslc.bench_timing import Timing
from dslc.ir.graph import Builder, Graph, Node, toposort
from dslc.ir.types import TensorType, numpy_dtype
from dslc.ops.registry import Formulations, formulation_key, get_op

DEFAULT_BATCH = 64  # the batch tuned at when the graphs' batch is symbolic and the command gives none
BLOCK_S = 0.015  # calls per interleaved block: about this long
ROUNDS = 5
WARMUP = 3
# a probe's choice must make the step this much faster than the rule's: more than the 2-4% by which a
# session made after another runs faster (examples/bench/ab_builds.py), and the rule's is made first
STEP_MARGIN = 0.03

# candidates' ONNX models with their feeds, threads -> each candidate's timing
Measure = Callable[[dict[str, tuple[bytes, dict[str, np.ndarray]]], int], dict[str, Timing]]


@dataclass(frozen=True)
class TuneSetting:
    """What `--tune` measures for: `threads` intra-op threads, batch `batch` where the graphs' batch is
    symbolic. `measure` replaces the timing with ONNX Runtime (tests)."""

    threads: int
    batch: int = DEFAULT_BATCH
    measure: Measure | None = field(default=None, compare=False)

    def at_graphs(self, graphs: dict[str, Graph]) -> TuneSetting:
        """This setting with the batch the training graphs pin (`--dim B=16`), if they do: the batch measured."""
        for name, step in graphs.items():
            if name.startswith(("train", "grad")):
                firsts = [n.type.shape[0] for n in step.inputs_with_role("data", "target") if n.type.shape]
                if firsts and all(isinstance(d, int) for d in firsts):
                    return replace(self, batch=firsts[0])
        return self

    def key(self) -> dict:
        """For the compile cache: the machine and the batch (the measurements decide the rest)."""
        return {**tune_cache.machine(self.threads), "batch": self.batch}


@dataclass(frozen=True)
class Choice:
    """One choice point as tuned: the symbolic `key` the emitter looks up, where the layer is, the
    concrete shape measured, each candidate's median alone (empty: not measured), the probe's choice,
    the step's medians with the rule's and with the probe's choice (empty: not checked), the choice
    written and the rule's."""

    key: str
    at: str
    shape: str
    median_ms: dict[str, float]
    probe: str
    step_ms: dict[str, float]
    choice: str
    rule: str
    cached: bool = False
    step: str = ""  # the hash of the step graph checked (`dslc.tune_cache`)

    def as_json(self) -> dict:
        checked = {"step": self.step, "step_ms": self.step_ms} if self.step_ms else {}
        return {"at": self.at, "shape": self.shape, "median_ms": self.median_ms, "probe": self.probe, **checked,
                "choice": self.choice, "rule": self.rule}


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
    measure = setting.measure or _measure
    probed, steps = {}, {}
    choices = []
    for key, node, options in choice_points(graphs):
        types = [_at_batch(i.type, setting.batch) for i in node.inputs]
        at = _where(node)
        if any(not isinstance(d, int) for t in types for d in t.shape):
            choices.append(Choice(key, at, key, {}, options.rule, {}, options.rule, options.rule))
            continue
        shape = formulation_key(node.op, types, node.attrs)
        entry = known["shapes"].get(shape)
        cached = entry is not None and set(entry["median_ms"]) == set(options.candidates)
        if not cached:
            models = {name: _probe(node.op, types, node.attrs, name) for name in options.candidates}
            medians = {name: t.median_ms for name, t in measure(models, setting.threads).items()}
            entry = {"median_ms": {name: round(medians[name], 4) for name in options.candidates},
                     "choice": min(options.candidates, key=lambda name: medians[name])}
            probed[shape] = entry
        choices.append(Choice(key, at, shape, entry["median_ms"], entry["choice"], {}, entry["choice"], options.rule,
                              cached))
    choices = _checked_in_step(graphs, choices, setting, known["steps"], steps, measure)
    tune_cache.store(machine, probed, steps)
    return choices


def _checked_in_step(graphs: dict[str, Graph], choices: list[Choice], setting: TuneSetting, known: dict,
                     measured: dict, measure: Measure) -> list[Choice]:
    """`choices` with each probe's choice that differs from the rule timed in the first training step
    holding it against that step with the rule's choices, and kept only if the step is `STEP_MARGIN`
    faster. `known`/`measured`: the step medians of this machine's cache by step fingerprint, each
    choice's by its shape; new ones are added to `measured`."""
    changed = {c.key: c for c in choices if c.probe != c.rule}
    rule = {c.key: c.rule for c in choices}
    checked: dict[str, tuple[str, dict]] = {}  # choice key -> (step fingerprint, medians)
    for name, step in graphs.items():
        if not name.startswith(("train", "grad")):
            continue
        here = [changed[key] for key, _, _ in choice_points({name: step}) if key in changed and key not in checked]
        feeds = _step_feeds(step, setting.batch) if here else None
        if feeds is not None:
            checked.update(_step_times(step, feeds, here, rule, setting, known, measured, measure))
    out = []
    for c in choices:
        if c.key not in checked:
            out.append(c)
            continue
        fingerprint, step_ms = checked[c.key]
        keep = step_ms[c.probe] < (1 - STEP_MARGIN) * step_ms["rule"] and not step_ms.get("disturbed")
        out.append(Choice(c.key, c.at, c.shape, c.median_ms, c.probe, step_ms, c.probe if keep else c.rule, c.rule,
                          c.cached, fingerprint))
    return out


def _step_times(step: Graph, feeds: dict, changed: list[Choice], rule: dict[str, str], setting: TuneSetting,
                known: dict, measured: dict, measure: Measure) -> dict[str, tuple[str, dict]]:
    """For each of `changed`: the step's fingerprint and its medians with the rule's choices (`rule`) and
    with that one choice changed to its probe's, from the cache or measured together."""
    from dslc.emit.onnx import emit_graph, serialize

    base = serialize(emit_graph(step, choices=rule))
    fingerprint = hashlib.blake2b(base + str(setting.batch).encode(), digest_size=16).hexdigest()
    times = known.get(fingerprint, {})
    if any(c.probe not in times.get(c.shape, {}) for c in changed):
        models = {"rule": (base, feeds)}
        for c in changed:
            models[c.shape] = (serialize(emit_graph(step, choices={**rule, c.key: c.probe})), feeds)
        timings = measure(models, setting.threads)
        times = {c.shape: {"rule": round(timings["rule"].median_ms, 4), c.probe: round(timings[c.shape].median_ms, 4),
                           "disturbed": _disturbed(timings["rule"]) or _disturbed(timings[c.shape])}
                 for c in changed}
        measured[fingerprint] = times
    return {c.key: (fingerprint, times[c.shape]) for c in changed}


def _step_feeds(step: Graph, batch: int) -> dict[str, np.ndarray] | None:
    """Inputs for timing a training step: each input's default (parameters, state, hyperparameters),
    else random floats and zeros (class 0 is every label's valid value); None where a shape other than
    the batch is symbolic."""
    rng = np.random.default_rng(0)
    feeds = {}
    for n in step.inputs:
        t = _at_batch(n.type, batch)
        if any(not isinstance(d, int) for d in t.shape):
            return None
        dtype = numpy_dtype(t.dtype)
        if n.attrs.get("default") is not None:
            feeds[n.name] = np.broadcast_to(np.asarray(n.attrs["default"], dtype=dtype), t.shape).copy()
        elif t.is_float:
            feeds[n.name] = rng.standard_normal(t.shape).astype(dtype)
        else:
            feeds[n.name] = np.zeros(t.shape, dtype=dtype)
    return feeds


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


def _disturbed(t: Timing) -> bool:
    """Whether most blocks ran while another process waited for a CPU, even after timing them again."""
    return 2 * t.contended_blocks > t.blocks


def _measure(models: dict[str, tuple[bytes, dict[str, np.ndarray]]], threads: int) -> dict[str, Timing]:
    """Each model's time per run with ONNX Runtime, on `threads` threads, sessions and
    bound inputs and outputs as a training step has them (`TrainStep`), in interleaved blocks of about
    `BLOCK_S` (`bench_timing.interleaved`; a block run under CPU pressure is timed again)."""
    from dslc.bench_timing import interleaved
    from dslc.runtime.devices import make_session
    from dslc.runtime.session import bound_runner

    jobs = []
    for name, (model, feeds) in models.items():
        session = make_session(model, threads=threads, memory_pattern=False)
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        jobs.append((name, bound_runner(session, feeds, outputs)))
    slowest = 0.0
    for _, run in jobs:  # warm-up, and the block size from the slowest candidate
        for _ in range(WARMUP):
            start = time.perf_counter()
            run()
        slowest = max(slowest, time.perf_counter() - start)
    per_block = max(1, min(20, math.ceil(BLOCK_S / max(slowest, 1e-6))))
    return interleaved(jobs, per_round=per_block, rounds=ROUNDS, warmup=0)


def tuning_lines(tuning: dict, tuned: list[Choice] | None) -> list[str]:
    """The table `--tune` prints on stderr from a manifest's `tuning`: each layer, its shapes, each
    candidate's median alone, the training step's with the rule's and the probe's choice where they
    differ, and the choice. `tuned`: the compile's choices (None: the program came from the compile
    cache), which tell the shapes timed now from those found in the tune cache."""
    choices = tuning["choices"]
    measured_now = sum(not c.cached for c in tuned) if tuned is not None else 0
    where = (f"{tuning['threads']} thread{'s' if tuning['threads'] > 1 else ''}, batch {tuning['batch']}, "
             f"onnxruntime {tuning['onnxruntime']}, {tuning['cpu']}")
    if not choices:
        return [f"tune ({where}): no shape-dependent choice in these graphs"]
    source = "all from the cache" if not measured_now else f"{measured_now} measured now"
    lines = [f"tuned {len(choices)} choice(s) ({where}; {source}):"]
    for c in sorted(choices, key=_source_order):
        shapes = c["shape"].partition("(")[2].partition(";")[0]
        times = "  ".join(f"{name} {ms:.3f} ms" for name, ms in c["median_ms"].items()) or "not measured (shape not static)"
        note = "" if c["choice"] == c["rule"] else f" (rule: {c['rule']})"
        if "step_ms" in c:
            step = c["step_ms"]
            disturbed = "; other processes took the CPU: the rule stands" if step.get("disturbed") else ""
            note = (f" ({'rule: ' + c['rule'] if c['choice'] != c['rule'] else 'alone: ' + c['probe']}; training step "
                    f"{step['rule']:.3f} ms with {c['rule']}, {step[c['probe']]:.3f} ms with {c['probe']}{disturbed})")
        lines.append(f"  {c['at']}  {c['shape'].partition('(')[0]} {shapes}  {times}  -> {c['choice']}{note}")
    return lines


def _source_order(choice: dict):
    """A choice's place in the model's source (`at` is `file:line:col`), for the table's order: the graphs
    hold the layers in the order autodiff reached them (a GAN's discriminator before its generator)."""
    path, _, place = choice["at"].partition(":")  # "?" where a layer has no span
    line, _, col = place.partition(":")
    return (0, path, int(line), int(col)) if line.isdigit() and col.isdigit() else (1, choice["at"], 0, 0)
