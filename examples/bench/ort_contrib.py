"""Whether ONNX Runtime's `com.microsoft` fused kernels speed up a workload's inference: dslc's portable
inference graph is rewritten with them and each variant timed against it, interleaved in one process.

    python examples/bench/ort_contrib.py [--only transformer-adamw] [--reps 3] [--calls 40] [--threads 1]

Each rewrite matches the subgraphs dslc's layers emit (op types, attributes, constant values) and
replaces them with one fused node writing the same output names; every variant's outputs are compared
with the portable graph's (relative to its largest output) before it is timed. The variants:

- `mha`: the attention core (query scaling, head splits, scores `MatMul`, causal `Add`, `Softmax`,
  weights `MatMul`, heads joined) as `MultiHeadAttention` (`unidirectional = 1`) on the projections.
- `attention`: the same core and its query, key and value `Gemm`s as one `Attention` (its own
  `[D, 3D]` product; the weights and biases concatenated by nodes ONNX Runtime folds at load).
- `skip_norm`: a residual `Add` whose sum dslc's `normalize` reads (mean, variance, eps, reciprocal
  square root; the scale and shift are folded into the products after it) as `SkipLayerNormalization`
  with unit scale, which also writes the sum for the next residual.
- `bias_gelu`: a `Gemm` with its bias, reshaped, then the erf `gelu`, as the bare `Gemm` and `BiasGelu`.
- `all`: `mha`, `skip_norm` and `bias_gelu` together; `attention_gelu`: `attention` and `bias_gelu`
  (the two that are not slower on two threads).

With one thread (the default) each call is timed by the calling thread's CPU time, the variants
alternated call by call; with `--threads N` above 1 by wall time in interleaved blocks that start once the
process is idle (`dslc.bench_timing.interleaved`, as `dslc bench`): run that under `flock` on a quiet
machine and read the blocks counted as under CPU pressure as suspect.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

import dslc
from dslc.bench import synthetic_batch
from dslc.bench_timing import interleaved
from dslc.cli_values import positive_int

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import ROOT, WORKLOADS  # noqa: E402

MS = "com.microsoft"


class Graph:
    """A graph's nodes by the names they write and read, and its constant values, for matching."""

    def __init__(self, graph: onnx.GraphProto):
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for name in dict.fromkeys(n.input):  # a node reading a value twice (x * x) is one reader
                self.consumers.setdefault(name, []).append(n)
        self.outputs = {o.name for o in graph.output}
        fed = {i.name for i in graph.input}
        self.constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.name not in fed}
        self.constants.update((n.output[0], numpy_helper.to_array(n.attribute[0].t)) for n in graph.node
                              if n.op_type == "Constant" and n.attribute[0].name == "value")

    def made_by(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type and not node.domain else None

    def only_reader(self, name: str | None, op_type: str) -> onnx.NodeProto | None:
        """The one node reading `name`, if exactly one does, it is an `op_type` and `name` is no graph output."""
        readers = self.consumers.get(name, [])
        ok = len(readers) == 1 and readers[0].op_type == op_type and name not in self.outputs
        return readers[0] if ok else None

    def scalar(self, name: str) -> float | None:
        value = self.constants.get(name)
        return float(value) if value is not None and value.size == 1 else None

    def ints(self, name: str) -> list[int] | None:
        value = self.constants.get(name)
        return [int(v) for v in value.ravel()] if value is not None and value.dtype.kind == "i" else None


def attr(node: onnx.NodeProto, name: str, default=None):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


class Match:
    """One matched subgraph: the nodes it replaces, the nodes that replace them, constants they add."""

    def __init__(self, old: list, new: list, constants: dict | None = None):
        self.old, self.new, self.constants = old, new, constants or {}


def _head_split(g: Graph, name: str, perm: list[int]) -> tuple[str, int, int, list] | None:
    """`Transpose(Reshape(x, [0, 0, H, d]), perm)`: x, H, d and the two nodes."""
    t = g.made_by(name, "Transpose")
    r = g.made_by(t.input[0], "Reshape") if t is not None and list(attr(t, "perm", [])) == perm else None
    shape = g.ints(r.input[1]) if r is not None else None
    if shape is None or len(shape) != 4 or shape[:2] != [0, 0] or min(shape[2:]) < 1:
        return None
    return r.input[0], shape[2], shape[3], [r, t]


def _causal(mask: np.ndarray | None) -> bool:
    if mask is None or mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        return False
    future = np.triu(np.ones(mask.shape, bool), 1)
    return bool((mask[~future] == 0).all() and (mask[future] <= -1e4).all())


def attention_cores(g: Graph, nodes) -> list[dict]:
    """dslc's causal attention cores: the projections `query` (before its 1/√d), `key`, `value`
    `[B, T, D]`, `heads`, `scale`, the output name and the core's nodes."""
    found = []
    for softmax in nodes:
        if softmax.op_type != "Softmax" or softmax.domain or attr(softmax, "axis") not in (-1, 3):
            continue
        add = g.made_by(softmax.input[0], "Add")
        scores = g.made_by(add.input[0], "MatMul") if add is not None else None
        mixing = g.only_reader(softmax.output[0], "MatMul")
        join = g.only_reader(mixing.output[0], "Transpose") if mixing is not None else None
        joined = g.only_reader(join.output[0], "Reshape") if join is not None else None
        if None in (scores, joined) or mixing.input[0] != softmax.output[0] or not _causal(
                g.constants.get(add.input[1])) or list(attr(join, "perm", [])) != [0, 2, 1, 3]:
            continue
        q, k, v = (_head_split(g, scores.input[0], [0, 2, 1, 3]), _head_split(g, scores.input[1], [0, 2, 3, 1]),
                   _head_split(g, mixing.input[1], [0, 2, 1, 3]))
        if None in (q, k, v) or not q[1:3] == k[1:3] == v[1:3] or g.ints(joined.input[1]) != [0, 0, q[1] * q[2]]:
            continue
        scaled = g.made_by(q[0], "Mul")
        scale = g.scalar(scaled.input[1]) if scaled is not None and g.only_reader(q[0], "Reshape") else None
        query, scale_nodes = (scaled.input[0], [scaled]) if scale is not None else (q[0], [])
        found.append(dict(query=query, key=k[0], value=v[0], heads=q[1], scale=scale or 1.0,
                          output=joined.output[0],
                          nodes=[*scale_nodes, *q[3], *k[3], *v[3], scores, add, softmax, mixing, join, joined]))
    return found


def mha(g: Graph, nodes) -> list[Match]:
    return [Match(c["nodes"], [helper.make_node(
        "MultiHeadAttention", [c["query"], c["key"], c["value"]], [c["output"]], domain=MS, num_heads=c["heads"],
        scale=c["scale"], unidirectional=1)]) for c in attention_cores(g, nodes)]


def _projection(g: Graph, name: str) -> tuple[str, onnx.NodeProto, list] | None:
    """`Reshape(Gemm(Flatten(x, axis=2), W, c), [-1, T, D])`, read only there: x, the `Gemm`, the nodes."""
    reshape = g.made_by(name, "Reshape")
    gemm = g.made_by(reshape.input[0], "Gemm") if reshape is not None else None
    flat = g.made_by(gemm.input[0], "Flatten") if gemm is not None and len(gemm.input) == 3 else None
    if flat is None or attr(flat, "axis") != 2 or any(attr(gemm, a, 0) for a in ("transA", "transB")) or \
            attr(gemm, "alpha", 1.0) != 1.0 or attr(gemm, "beta", 1.0) != 1.0 or len(g.consumers[gemm.output[0]]) != 1 \
            or len(g.consumers[name]) != 1:
        return None
    return flat.input[0], gemm, [reshape, gemm]


def attention(g: Graph, nodes) -> list[Match]:
    found = []
    for c in attention_cores(g, nodes):
        projections = [_projection(g, c[which]) for which in ("query", "key", "value")]
        if None in projections or len({p[0] for p in projections}) != 1:
            continue
        out = c["output"]
        found.append(Match([*c["nodes"], *(n for p in projections for n in p[2])], [
            helper.make_node("Concat", [p[1].input[1] for p in projections], [f"{out}.qkv_weight"], axis=1),
            helper.make_node("Concat", [p[1].input[2] for p in projections], [f"{out}.qkv_bias_2d"], axis=-1),
            helper.make_node("Reshape", [f"{out}.qkv_bias_2d", "ort_minus_one"], [f"{out}.qkv_bias"]),
            helper.make_node("Attention", [projections[0][0], f"{out}.qkv_weight", f"{out}.qkv_bias"], [out],
                             domain=MS, num_heads=c["heads"], scale=c["scale"], unidirectional=1)],
            {"ort_minus_one": np.array([-1], np.int64)}))
    return found


def _normalize(g: Graph, x: str) -> tuple[list, str, float] | None:
    """dslc's `normalize` of `x` over the last axis, (x - mean) · 1/sqrt(mean((x - mean)²) + eps): its
    nodes, output and eps."""
    readers = g.consumers.get(x, [])
    means = {n.output[0]: n for n in readers if n.op_type == "ReduceMean" and list(attr(n, "axes", [])) == [-1]
             and attr(n, "keepdims", 1) == 1}
    subs = [n for n in readers if n.op_type == "Sub" and n.input[0] == x and n.input[1] in means]
    for centred, other in ((subs[0], subs[1]), (subs[1], subs[0])) if len(subs) == 2 == len(means) else ():
        square = g.only_reader(other.output[0], "Mul")
        var = g.only_reader(square.output[0], "ReduceMean") if square and set(square.input) == {other.output[0]} else None
        plus = g.only_reader(var.output[0], "Add") if var and list(attr(var, "axes", [])) == [-1] else None
        eps = g.scalar(plus.input[1]) if plus is not None else None
        root = g.only_reader(plus.output[0], "Sqrt") if eps is not None else None
        inverse = g.only_reader(root.output[0], "Reciprocal") if root is not None else None
        scaled = g.only_reader(inverse.output[0], "Mul") if inverse is not None else None
        if scaled is not None and list(scaled.input) == [centred.output[0], inverse.output[0]] and \
                g.only_reader(centred.output[0], "Mul") is scaled:
            return [*means.values(), *subs, square, var, plus, root, inverse, scaled], scaled.output[0], eps
    return None


def skip_norm(g: Graph, nodes, shapes: dict[str, list]) -> list[Match]:
    found = []
    for add in nodes:
        a, b = (shapes.get(i) for i in add.input) if add.op_type == "Add" and not add.domain else (None, None)
        if a is None or b is None or len(a) != 3 or not isinstance(a[-1], int) or len(b) not in (2, 3) \
                or b[-2:] != a[-2:]:
            continue
        norm = _normalize(g, add.output[0])
        if norm is None:
            continue
        old, out, eps = norm
        others = [n for n in g.consumers[add.output[0]] if n not in old] or add.output[0] in g.outputs
        ones = f"ort_ones_{a[-1]}"
        found.append(Match([add, *old], [helper.make_node(
            "SkipLayerNormalization", [add.input[0], add.input[1], ones], [out, "", "", add.output[0] if others else ""],
            domain=MS, epsilon=eps)], {ones: np.ones(a[-1], np.float32)}))
    return found


def bias_gelu(g: Graph, nodes) -> list[Match]:
    found = []
    for div in nodes:
        if div.op_type != "Div" or div.domain or not math.isclose(g.scalar(div.input[1]) or 0, math.sqrt(2), rel_tol=1e-6):
            continue
        x = div.input[0]
        half = [n for n in g.consumers[x] if n.op_type == "Mul" and g.scalar(n.input[1]) == 0.5]
        erf = g.only_reader(div.output[0], "Erf")
        plus = g.only_reader(erf.output[0], "Add") if erf is not None else None
        product = g.only_reader(plus.output[0], "Mul") if plus is not None and g.scalar(plus.input[1]) == 1 else None
        reshape = g.made_by(x, "Reshape")
        gemm = g.made_by(reshape.input[0], "Gemm") if reshape is not None else None
        if product is None or len(half) != 1 or len(g.consumers[x]) != 2 or \
                set(product.input) != {half[0].output[0], plus.output[0]} or gemm is None or len(gemm.input) != 3 \
                or attr(gemm, "alpha", 1.0) != 1.0 or attr(gemm, "beta", 1.0) != 1.0 or attr(gemm, "transA", 0):
            continue
        bias = f"{gemm.input[2]}.flat"
        found.append(Match([gemm, div, erf, plus, half[0], product], [
            helper.make_node("Gemm", list(gemm.input[:2]), list(gemm.output), transB=attr(gemm, "transB", 0)),
            helper.make_node("Reshape", [gemm.input[2], "ort_minus_one"], [bias]),
            helper.make_node("BiasGelu", [x, bias], list(product.output), domain=MS)],
            {"ort_minus_one": np.array([-1], np.int64)}))
    return found


def shapes_of(model: onnx.ModelProto) -> dict[str, list]:
    inferred = onnx.shape_inference.infer_shapes(model)
    found = {t.name: list(t.dims) for t in model.graph.initializer}
    for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        found[v.name] = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]
    return found


REWRITES = {"mha": (mha,), "attention": (attention,), "skip_norm": (skip_norm,), "bias_gelu": (bias_gelu,),
            "all": (mha, skip_norm, bias_gelu), "attention_gelu": (attention, bias_gelu)}


def rewritten(model: onnx.ModelProto, rewrites) -> tuple[onnx.ModelProto, dict[str, int]]:
    """A copy of `model` with every match of each rewrite replaced, and the number of matches of each."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    shapes, counts = shapes_of(model), {}  # the rewrites keep every name they do not remove
    for rewrite in rewrites:
        g, nodes = Graph(model.graph), list(model.graph.node)
        matches = rewrite(g, nodes, shapes) if rewrite is skip_norm else rewrite(g, nodes)
        counts[rewrite.__name__] = len(matches)
        replace(model.graph, matches)
    model.opset_import.append(helper.make_opsetid(MS, 1))
    return model, counts


def replace(graph: onnx.GraphProto, matches: list[Match]) -> None:
    removed = {id(n) for m in matches for n in m.old}
    kept = [n for n in graph.node if id(n) not in removed] + [n for m in matches for n in m.new]
    names = {t.name for t in graph.initializer}
    for name, value in {k: v for m in matches for k, v in m.constants.items() if k not in names}.items():
        graph.initializer.append(numpy_helper.from_array(value, name))
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    ordered = []
    while kept:
        runnable = [n for n in kept if all(i in ready for i in n.input)]
        if not runnable:
            raise SystemExit("error: a rewrite left a value without its producer")
        ordered += runnable
        ready.update(o for n in runnable for o in n.output)
        done = {id(n) for n in runnable}
        kept = [n for n in kept if id(n) not in done]
    del graph.node[:]
    graph.node.extend(ordered)


def session(model: bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(WORKLOADS), default=["transformer-adamw"])
    parser.add_argument("--variants", nargs="*", choices=list(REWRITES), default=list(REWRITES))
    parser.add_argument("--reps", type=positive_int, default=3)
    parser.add_argument("--calls", type=positive_int, default=40, help="timed calls per variant and repetition")
    parser.add_argument("--threads", type=positive_int, default=1, help="intra-op threads (above 1: wall time)")
    args = parser.parse_args()
    for name in args.only:
        model, defines, _, batch = WORKLOADS[name]
        program = dslc.compile(ROOT / model, **defines)
        portable = onnx.load_from_string(program.graphs["infer"])
        feeds = synthetic_batch(program.manifest["graphs"]["infer"]["inputs"], {"B": batch},
                                np.random.default_rng(0))
        sessions = {"portable": session(program.graphs["infer"], args.threads)}
        expected = sessions["portable"].run(None, feeds)
        for variant in args.variants:
            graph, counts = rewritten(portable, REWRITES[variant])
            sessions[variant] = session(graph.SerializeToString(), args.threads)
            got = sessions[variant].run(None, feeds)
            differ = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(got, expected))
            print(f"{name} {variant}: {counts}, {len(portable.graph.node)} -> {len(graph.graph.node)} nodes, "
                  f"outputs differ by {differ:.1e} of the largest")
        for rep in range(args.reps):
            ms, note = (cpu_ms(sessions, feeds, args.calls), "CPU time, 1 thread") if args.threads == 1 else \
                wall_ms(sessions, feeds, args.calls)
            print(f"{name} rep {rep} ({note}): " + ", ".join(
                f"{k} {v:.2f} ms ({v / ms['portable']:.3f})" for k, v in ms.items()))


def cpu_ms(sessions: dict, feeds: dict, calls: int) -> dict[str, float]:
    """Median CPU time of the calling thread per call, the variants alternated call by call (in reversed
    order every other call)."""
    times = {k: [] for k in sessions}
    for call in range(calls):
        for k in list(sessions)[::1 if call % 2 else -1]:
            start = time.thread_time()
            sessions[k].run(None, feeds)
            times[k].append(time.thread_time() - start)
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def wall_ms(sessions: dict, feeds: dict, calls: int) -> tuple[dict[str, float], str]:
    timings = interleaved([(k, lambda s=s: s.run(None, feeds)) for k, s in sessions.items()],
                          per_round=calls // 4 or 1, rounds=4, warmup=2)
    pressed = sum(t.contended_blocks for t in timings.values())
    return ({k: t.median_ms for k, t in timings.items()},
            f"wall time, {pressed} of {4 * len(timings)} blocks under CPU pressure")


if __name__ == "__main__":
    main()
