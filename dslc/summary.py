"""`dslc summary` and `program.summary()`: a Keras-style table of a compiled model.

Each layer (in the order of its first call; a shared layer once) with its kind, output type (symbolic:
`f32[B, 128]`) and parameter count — layers and activations without parameters too (`relu_0`,
`dropout_0`, `max_pool2d_0`, `flatten_0`: 0), as Keras lists them; then the totals: trainable parameters, frozen ones (updated by no
objective), buffers (batch-norm statistics), the bytes of the weights and of the optimizer state, the
FLOPs per example of inference and of a training step (matrix products and convolutions, the numbers
`dslc bench` uses), an estimate of the training step's peak activation memory at a batch size, and the
ONNX node counts of the graphs.

The activation estimate walks the training graph in the order it was emitted and holds each value from
the node that makes it to its last use (outputs to the end): what a runtime that frees every value as
early as possible, and fuses nothing, would hold besides the weights. ONNX Runtime plans its own order
and reuses buffers, so read it as the size, not the byte count, of what the step needs.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from dslc.diagnostics import UnknownDimension
from dslc.ir.graph import Graph, toposort
from dslc.ir.types import numpy_dtype
from dslc.runtime.layout import state_specs, train_keys
from dslc.spelling import option


def _size(spec: dict) -> int:
    return math.prod(spec["shape"])


def _bytes(spec: dict) -> int:
    return _size(spec) * np.dtype(spec["dtype"]).itemsize


def peak_activation_bytes(graph: Graph, dims: Mapping[str, int]) -> int:
    """The largest total size of the values alive at once in `graph` (see the module docstring);
    inputs (data, weights, state) and constants are not counted."""
    from dslc.twin import concrete

    order = toposort([n for _, n in graph.outputs])
    position = {n.id: i for i, n in enumerate(order)}
    last_use = {n.id: position[n.id] for n in order}
    for n in order:
        for i in n.inputs:
            last_use[i.id] = max(last_use[i.id], position[n.id])
    for _, n in graph.outputs:
        last_use[n.id] = len(order)
    freed_at: dict[int, int] = {}
    live = peak = 0
    for i, n in enumerate(order):
        if n.op not in ("input", "const"):
            t = concrete(n.type, dims)
            nbytes = math.prod(t.shape) * numpy_dtype(t.dtype).itemsize
            live += nbytes
            peak = max(peak, live)
            freed_at[last_use[n.id]] = freed_at.get(last_use[n.id], 0) + nbytes
        live -= freed_at.pop(i, 0)
    return peak


class Summary(dict):
    """The summary's data (see `summarize`); shown (`str`, `repr`: a notebook's cell) as the table."""

    def __str__(self) -> str:
        return render(self)

    __repr__ = __str__


def summarize(program, batch_size: int = 32, dims: Mapping[str, int] | None = None) -> Summary:
    """The summary as data: `layers` (name, kind, output, params), the totals, and the FLOPs and memory
    at `batch_size` (None where a symbolic dimension other than `B` has no size in `dims`)."""
    from dslc.emit.onnx import node_count
    from dslc.twin import flops

    manifest = program.manifest
    keys = train_keys(manifest)
    graphs = [manifest["graphs"][k] for k in keys]
    updated = {t["name"]: t for g in graphs for t in g.get("params", [])}
    frozen = {t["name"]: t for g in graphs for t in g.get("frozen", []) if t["name"] not in updated}
    buffers = {t["name"]: t for g in graphs for t in g.get("buffers", [])}
    if not keys:  # inference only: the weights are the inference graph's initializers
        from dslc.emit.weights import read_initializers

        inits = read_initializers(program.graphs["infer"])
        lowered = program.extras.get("lowered", {}).get("infer")
        held = {n.name for n in lowered.inputs_with_role("buffer")} if lowered is not None else set()
        specs = {k: {"name": k, "shape": list(v.shape), "dtype": str(v.dtype)} for k, v in inits.items() if "." in k}
        updated = {k: t for k, t in specs.items() if k not in held}
        buffers = {k: t for k, t in specs.items() if k in held}  # batch-norm statistics, as in a trained model
    weights = {**updated, **frozen, **buffers}
    found = program.extras.get("layers", {})
    owner = {}  # weight -> the innermost layer whose name prefixes it (`attention_0.q.weight`: `attention_0`)
    for w in weights:
        prefixes = [layer for layer in found if w.startswith(layer + ".")]
        if prefixes:
            owner[w] = max(prefixes, key=len)
    layers = []
    for name, (kind, output) in found.items():
        mine = [t for w, t in weights.items() if owner.get(w) == name and w not in buffers]
        layers.append({"name": name, "kind": kind, "output": str(output), "params": sum(map(_size, mine)),
                       "frozen": bool(mine) and all(t["name"] in frozen for t in mine)})
    sizes = {"B": batch_size, **(dims or {})}
    final = program.extras.get("final", {})
    symbols = {str(d) for g in manifest["graphs"].values() for t in g.get("inputs", []) for d in t["shape"]
               if isinstance(d, str)}
    declared = {f for s in symbols for f in s.split("*") if not f.isdigit()}
    unknown = sorted(set(dims or {}) - declared)
    if unknown:  # a misspelt `--dim t=40` sized nothing, silently
        raise UnknownDimension(unknown, sorted(declared))
    missing = sorted(declared - set(sizes))
    per_example = lambda names: (None if missing or not all(k in final for k in names) else
                                 sum(flops(final[k], sizes) for k in names) / batch_size)
    return Summary({
        "model": program.name, "layers": layers, "trains": bool(keys),
        "trainable": sum(map(_size, updated.values())), "frozen": sum(map(_size, frozen.values())),
        "buffers": sum(map(_size, buffers.values())),
        "weight_bytes": sum(map(_bytes, weights.values())),
        "state_bytes": sum(map(_bytes, state_specs(manifest))) if keys else 0,
        "batch_size": batch_size, "missing_dims": missing,
        "infer_flops_per_example": per_example(["infer"]),
        "train_flops_per_example": per_example(keys) if keys else None,
        "peak_activation_bytes": (None if missing or not keys or not all(k in final for k in keys) else
                                  max(peak_activation_bytes(final[k], sizes) for k in keys)),
        "nodes": {k: node_count(b) for k, b in program.graphs.items()},
    })


def _bytes_text(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} bytes"


def _flops_text(n: float | None, missing: list[str]) -> str:
    if n is None:
        return "needs the size of " + ", ".join(f"`{d}` ({option('dim', d)})" for d in missing)
    for unit, size in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} FLOP"


def render(summary: dict) -> str:
    """The table and totals as text."""
    rows = [("layer", "kind", "output", "params")] + [
        (layer["name"] + (" (frozen)" if layer["frozen"] else ""), layer["kind"], layer["output"],
         f"{layer['params']:,}") for layer in summary["layers"]]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    line = lambda r: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    rule = "-" * len(line(rows[0]))
    out = [f"model {summary['model']}", rule, line(rows[0]), rule] + [line(r) for r in rows[1:]] + [rule]
    total = summary["trainable"] + summary["frozen"]
    out.append(f"parameters: {total:,} ({summary['trainable']:,} trainable, {summary['frozen']:,} frozen), "
               f"buffers: {summary['buffers']:,}")
    out.append(f"weights: {_bytes_text(summary['weight_bytes'])}, optimizer state: "
               f"{_bytes_text(summary['state_bytes'])}")
    missing = summary["missing_dims"]
    out.append(f"FLOPs per example: inference {_flops_text(summary['infer_flops_per_example'], missing)}"
               + (f", training step {_flops_text(summary['train_flops_per_example'], missing)}"
                  if summary["trains"] else ""))
    if summary["peak_activation_bytes"] is not None:
        out.append(f"training step's peak activation memory at batch {summary['batch_size']}: "
                   f"~{_bytes_text(summary['peak_activation_bytes'])} (estimate)")
    out.append("ONNX nodes: " + ", ".join(f"{k} {v:,}" for k, v in summary["nodes"].items()))
    return "\n".join(out)
