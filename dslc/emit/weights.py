"""Weights in and out of serialized ONNX models.

`read_initializers` gives a model's initializers (the weights of an inference graph); `bind_weights`
puts trained values into a graph, e.g. the inference graph for `dslc export`; `read_init_graph` and
`init_graph_bytes` read and write the init graph (`<model>.init.onnx`) that holds the starting values of
the training graphs' parameters, buffers and optimizer state.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from dslc.diagnostics import DataError, suggest

# onnx is imported by the functions that need it: a cached program starts training without it (0.7-1.4 s)


def read_initializers(model_bytes: bytes) -> dict[str, np.ndarray]:
    """All initializers of the model's main graph, by name, as numpy arrays."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(model_bytes)
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def bind_weights(model_bytes: bytes, weights: Mapping[str, np.ndarray], absent_ok: Iterable[str] = ()) -> bytes:
    """The model with the initializers named in `weights` replaced by those values.

    Each name must be an initializer of the model, or in `absent_ok` (a model's weights that this graph
    does not use: a GAN's inference graph holds no discriminator), and each value must have the
    initializer's dtype and shape exactly (no casts: a mismatch means the weights belong to another
    model); otherwise `DataError` naming the tensor.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(model_bytes)
    inits = {init.name: init for init in model.graph.initializer}
    absent_ok = set(absent_ok)
    for name, value in weights.items():
        if name not in inits:
            if name in absent_ok:
                continue
            raise DataError(f"the model has no weight named `{name}`", hint=suggest(name, inits))
        expected = numpy_helper.to_array(inits[name])
        value = np.asarray(value)
        if value.dtype != expected.dtype or value.shape != expected.shape:
            raise DataError(
                f"weight `{name}` is `{value.dtype}{list(value.shape)}`, "
                f"the model expects `{expected.dtype}{list(expected.shape)}`"
            )
        inits[name].CopyFrom(numpy_helper.from_array(value, name))
    return model.SerializeToString()


def read_init_graph(model_bytes: bytes, what: str = "the init graph") -> dict[str, np.ndarray]:
    """The outputs of an init graph (no inputs; each output an initializer, a `Constant` or `Identity`
    of one), by name, without running it. Anything else is a `DataError`: such a graph is run by the
    runtime that wrote it, and its outputs saved as `.npz`."""
    from dslc.emit.wire import stored_init_values

    stored = stored_init_values(model_bytes)  # dslc's own init graphs, without importing onnx
    if stored is not None:
        return stored
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load_from_string(model_bytes)
    except Exception:  # noqa: BLE001 - protobuf's errors name no file; the caller's `what` does
        raise DataError(f"{what} is not an ONNX model") from None
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and len(node.output) == 1:
            attr = next((a for a in node.attribute if a.name == "value"), None)
            if attr is not None:
                values[node.output[0]] = numpy_helper.to_array(attr.t)
                continue
        if node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
            continue
        raise DataError(f"{what} computes its outputs (node `{node.name or node.op_type}` is a `{node.op_type}`); "
                        "dslc reads init graphs whose outputs are stored values",
                        hint="run the graph in its runtime and save the outputs as `.npz`, one array per name")
    if model.graph.input:
        raise DataError(f"{what} has inputs (`{model.graph.input[0].name}`); an init graph has none")
    return {out.name: values[out.name] for out in model.graph.output if out.name in values}


def init_graph_bytes(model_name: str, specs: list[dict], values: Mapping[str, np.ndarray],
                     metadata: Mapping[str, str] | None = None) -> bytes:
    """An init graph (see `emit_init_graph`) holding `values` for the manifest's init outputs `specs`."""
    from dslc.emit.onnx import emit_init_graph
    from dslc.ir.types import TensorType

    entries = [(t["name"], TensorType(t["dtype"], tuple(t["shape"])), values[t["name"]]) for t in specs]
    model = emit_init_graph(f"{model_name}.init", entries, doc=f"dslc initial values of model `{model_name}`",
                            metadata=dict(metadata or {}))
    return model.SerializeToString()
