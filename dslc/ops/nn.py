"""Neural-network ops: softmax, log-softmax, one-hot."""
from __future__ import annotations

import numpy as np

from dslc.ir.graph import OpError
from dslc.ir.types import INT_DTYPES, TensorType, normalize_axis, numpy_dtype
from dslc.ops.registry import OpDef, Sample, expect_float, op


def _softmax_axis(x: TensorType, axis: int) -> int:
    expect_float(x)
    a = normalize_axis(axis, x.rank)
    if a is None:
        raise OpError(f"axis {axis} is out of range for `{x}`")
    return a


@op("softmax", axis=-1)
class Softmax(OpDef):
    """y = exp(x - max x) / Σ exp(x - max x) along `axis` (ONNX Softmax-13)"""

    samples = [Sample(((4, 10),), {"axis": -1}), Sample(((2, 3, 4),), {"axis": 1})]

    def infer(self, x, *, axis):
        _softmax_axis(x, axis)
        return x

    def lower(self, e, x, *, axis):
        return e.node("Softmax", x, axis=normalize_axis(axis, x.type.rank))

    def torch(self, T, x, *, axis):
        return T.softmax(x, dim=axis)

    def evaluate(self, x, *, axis):
        z = np.exp(x - x.max(axis=axis, keepdims=True))
        return z / z.sum(axis=axis, keepdims=True)

    def grad(self, b, g, out, x, *, axis):
        dot = b.reduce_sum(b.mul(g, out), axes=(axis,), keepdims=True)
        return [b.mul(out, b.sub(g, dot))]


@op("log_softmax", axis=-1)
class LogSoftmax(OpDef):
    """y = x - max x - log Σ exp(x - max x) along `axis` (ONNX LogSoftmax-13)"""

    samples = [Sample(((4, 10),), {"axis": -1})]

    def infer(self, x, *, axis):
        _softmax_axis(x, axis)
        return x

    def lower(self, e, x, *, axis):
        return e.node("LogSoftmax", x, axis=normalize_axis(axis, x.type.rank))

    def torch(self, T, x, *, axis):
        return T.log_softmax(x, dim=axis)

    def evaluate(self, x, *, axis):
        z = x - x.max(axis=axis, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))

    def grad(self, b, g, out, x, *, axis):
        total = b.reduce_sum(g, axes=(axis,), keepdims=True)
        return [b.sub(g, b.mul(b.exp(out), total))]


@op("one_hot", depth=None, dtype="float32")
class OneHot(OpDef):
    """y[..., k] = 1 if labels[...] == k else 0, for k < depth; labels outside [0, depth) give a row of
    zeros (ONNX Equal against the class numbers, then Cast)"""

    samples = [Sample((("int", (5,), 4),), {"depth": 4}, grad=False)]

    def infer(self, labels, *, depth, dtype):
        if labels.dtype not in INT_DTYPES:
            raise OpError(f"`one_hot` needs integer labels, got `{labels}`")
        return TensorType(dtype, labels.shape + (depth,))

    def lower(self, e, labels, *, depth, dtype):
        return e.node("Cast", label_hits(e, labels, depth), to=e.onnx_dtype(dtype))

    def torch(self, T, labels, *, depth, dtype):
        return T.nn.functional.one_hot(labels.long(), depth).to(getattr(T, dtype))

    def evaluate(self, labels, *, depth, dtype):
        return (labels[..., None] == np.arange(depth)).astype(numpy_dtype(dtype))


def label_hits(e, labels, depth: int) -> str:
    """`labels[..., None] == arange(depth)` as bool: the one-hot pattern. Not ONNX OneHot: ORT has no
    float64 or int32-label kernels for it, and it counts negative labels from the end. Built node for
    node alike wherever it is used, so that ONNX Runtime computes it once per graph (the cross-entropy's
    loss and its gradient share it)."""
    classes = e.const(np.arange(depth, dtype=np.dtype(labels.type.dtype)))
    return e.node("Equal", e.node("Unsqueeze", labels, e.int64s([-1])), classes)
