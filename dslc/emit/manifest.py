"""The manifest `<model>.dslc.json`: what a program needs to drive the graphs without dslc."""
from __future__ import annotations

from dslc.ir.graph import Graph, Node
from dslc.ir.types import TensorType

FORMAT = "dslc-manifest/2"


def tensor(name: str, t: TensorType, **extra) -> dict:
    entry = {"name": name, "dtype": t.dtype, "shape": [d for d in t.shape]}
    entry.update({k: v for k, v in extra.items() if v is not None})
    return entry


def input_entry(node: Node, classes: dict[str, int], ranges: dict[str, tuple[float, float]]) -> dict:
    value_range = list(ranges[node.name]) if node.name in ranges else None
    return tensor(node.name, node.type, role="input" if node.role == "data" else "target",
                  classes=classes.get(node.name), range=value_range)


def mark_sample_weights(entry: dict, sample_weights: dict[str, str | None]) -> dict:
    """`entry` with `"sample_weight": {"target": labels}` on each input that holds a loss's per-example
    weights (values >= 0; `target`: the labels of that loss, when they are an input)."""
    for spec in entry.get("inputs", []):
        if spec["name"] in sample_weights:
            labels = sample_weights[spec["name"]]
            spec["sample_weight"] = {"target": labels} if labels else {}
    return entry


def _default(node: Node):
    """The default as a JSON number: a float32 value in its shortest exact form (0.002, not 0.0020000000949949026)."""
    value = node.attrs["default"]
    return float(str(value)) if value.dtype.kind == "f" else value.item()


def reduced_outputs(graph: Graph, metrics: dict[str, dict], skip=()) -> list[dict]:
    """The loss and metric outputs, each with how a driver aggregates it over the batches of an epoch:
    `"reduce": "mean"` — a batch mean, averaged weighted by batch size; `"reduce": "sum"` — batch counts,
    summed, then (with `"value"`) the metric computed from the sum (see `dslc/runtime/metrics.py`)."""
    return [tensor(name, node.type, **metrics.get(name, {"reduce": "mean"})) for name, node in graph.outputs
            if name not in skip]


def _hyper(graph: Graph) -> list[dict]:
    return [tensor(n.name, n.type, default=_default(n), kind=n.attrs.get("kind")) for n in graph.inputs_with_role("hyper")]


def train_entry(graph: Graph, file: str, classes: dict[str, int], ranges: dict[str, tuple[float, float]],
                next_suffix: str, objective: str, optimizer: dict, metrics: dict[str, dict]) -> dict:
    carried = {n.name + next_suffix for n in graph.inputs}
    entry = {
        "file": file,
        "inputs": [input_entry(n, classes, ranges) for n in graph.inputs_with_role("data", "target")],
        "hyper": _hyper(graph),
        "params": [tensor(n.name, n.type, next=n.name + next_suffix, init=n.attrs.get("init")) for n in graph.inputs_with_role("param")],
        "frozen": [tensor(n.name, n.type) for n in graph.inputs_with_role("frozen")],
        "buffers": [tensor(n.name, n.type, next=n.name + next_suffix) for n in graph.inputs_with_role("buffer")],
        "state": [tensor(n.name, n.type, next=n.name + next_suffix) for n in graph.inputs_with_role("state")],
        "outputs": reduced_outputs(graph, metrics, skip=carried),
        "optimizer": optimizer,
    }
    if objective:
        entry["objective"] = objective
    return entry


def grad_entry(graph: Graph, file: str, classes: dict[str, int], ranges: dict[str, tuple[float, float]],
               next_suffix: str, objective: str, metrics: dict[str, dict]) -> dict:
    """The gradient half of a split training step: `outputs` are loss and metrics, `grads` the
    gradient of each parameter (`param` names it), `buffers` carry their `next` as in the fused step."""
    entry = {
        "file": file,
        "inputs": [input_entry(n, classes, ranges) for n in graph.inputs_with_role("data", "target")],
        "hyper": _hyper(graph),
        "params": [tensor(n.name, n.type) for n in graph.inputs_with_role("param")],
        "frozen": [tensor(n.name, n.type) for n in graph.inputs_with_role("frozen")],
        "buffers": [tensor(n.name, n.type, next=n.name + next_suffix) for n in graph.inputs_with_role("buffer")],
        "outputs": reduced_outputs(graph, metrics, skip={n.name + next_suffix for n in graph.inputs}
                                   | set(_grad_names(graph))),
        "grads": [tensor(name, graph.output(name).type, param=p.name) for p, name in
                  zip(graph.inputs_with_role("param"), _grad_names(graph))],
    }
    if objective:
        entry["objective"] = objective
    return entry


def _grad_names(graph: Graph) -> list[str]:
    from dslc.passes.split import gradient_name

    return [gradient_name(p.name) for p in graph.inputs_with_role("param")]


def apply_entry(graph: Graph, file: str, next_suffix: str, objective: str, optimizer: dict) -> dict:
    """The update half of a split training step: every parameter's gradient in, next values out."""
    entry = {
        "file": file,
        "hyper": _hyper(graph),
        "params": [tensor(n.name, n.type, next=n.name + next_suffix) for n in graph.inputs_with_role("param")],
        "grads": [tensor(n.name, n.type, param=n.attrs["param"]) for n in graph.inputs_with_role("grad")],
        "state": [tensor(n.name, n.type, next=n.name + next_suffix) for n in graph.inputs_with_role("state")],
        "optimizer": optimizer,
    }
    if objective:
        entry["objective"] = objective
    return entry


def eval_entry(graph: Graph, file: str, classes: dict[str, int], ranges: dict[str, tuple[float, float]],
               metrics: dict[str, dict]) -> dict:
    return {
        "file": file,
        "inputs": [input_entry(n, classes, ranges) for n in graph.inputs_with_role("data", "target")],
        "params": [tensor(n.name, n.type) for n in graph.inputs_with_role("param")],
        "buffers": [tensor(n.name, n.type) for n in graph.inputs_with_role("buffer")],
        "outputs": reduced_outputs(graph, metrics),
    }


def infer_entry(graph: Graph, file: str, classes: dict[str, int]) -> dict:
    return {
        "file": file,
        "inputs": [tensor(n.name, n.type, classes=classes.get(n.name)) for n in graph.inputs_with_role("data")],
        "outputs": [tensor(name, node.type) for name, node in graph.outputs],
    }


def predict_entry(graph: Graph, file: str, classes: dict[str, int]) -> dict:
    """The inference graph `graph` emitted with its parameters and buffers as inputs (no initializers):
    inference with values trained in any runtime, fed by name as the training graph's."""
    return {
        **infer_entry(graph, file, classes),
        "params": [tensor(n.name, n.type) for n in graph.inputs_with_role("param")],
        "buffers": [tensor(n.name, n.type) for n in graph.inputs_with_role("buffer")],
    }


def init_entry(file: str, values: list[tuple[str, TensorType, object]]) -> dict:
    """The init graph: no inputs; outputs named as the training graphs' params, buffers and state."""
    return {"file": file, "outputs": [tensor(name, t) for name, t, _ in values]}


def manifest(model: str, version: str, opset: int, dtype: str, graphs: dict[str, dict], optimizer: dict | None,
             dims: dict[str, int] | None = None, callbacks: dict[str, dict] | None = None,
             tuning: dict | None = None) -> dict:
    """`callbacks`: the model's `callback` statements, each a top-level key with the settings given
    (`"early_stopping": {"monitor": "val_accuracy", "patience": 5}`): settings of the training loop
    that a driver may follow (`dslc.declared_callbacks`); absent when the model declares none.
    `tuning`: what `--tune` measured and chose (`dslc.runtime.tune`); absent without `--tune`."""
    out = {"format": FORMAT, "dslc": version, "model": model, "opset": opset, "dtype": dtype}
    if dims:
        out["dims"] = dict(dims)  # symbolic dimensions pinned by `dslc build --dim`
    out["graphs"] = graphs
    if optimizer is not None:
        out["optimizer"] = optimizer
    out.update(callbacks or {})
    if tuning is not None:
        out["tuning"] = tuning
    return out
