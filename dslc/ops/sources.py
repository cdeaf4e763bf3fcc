"""Source nodes: graph inputs (data, targets, hyper-inputs, parameters, state) and constants."""
from __future__ import annotations

from dslc.ops.registry import OpDef, op


@op("input", name=None, role=None, default=None, kind=None, classes=None, init=None, slot=None, param=None)
class Input(OpDef):
    """A named graph input; `default` (an array) makes it an ONNX input with an initializer."""


@op("const", value=None)
class Const(OpDef):
    """A constant array, emitted as an initializer."""

    def evaluate(self, *, value):
        return value
