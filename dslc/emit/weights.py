"""Read and replace the initializers of a serialized ONNX model (weights in, weights out).

`read_initializers` gives the compiled initial values (parameters, optimizer state, hyper-parameter
defaults); `bind_weights` puts trained values into a graph, e.g. the inference graph for `dslc export`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from dslc.diagnostics import DataError, suggest

def read_initializers(model_bytes: bytes) -> dict[str, np.ndarray]:
    """All initializers of the model's main graph, by name, as numpy arrays."""
    model = onnx.load_from_string(model_bytes)
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def bind_weights(model_bytes: bytes, weights: Mapping[str, np.ndarray], absent_ok: Iterable[str] = ()) -> bytes:
    """The model with the initializers named in `weights` replaced by those values.

    Each name must be an initializer of the model, or in `absent_ok` (a model's weights that this graph
    does not use: a GAN's inference graph holds no discriminator), and each value must have the
    initializer's dtype and shape exactly (no casts: a mismatch means the weights belong to another
    model); otherwise `DataError` naming the tensor.
    """
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
