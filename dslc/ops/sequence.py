"""Steps of a sequence: `pick` (one index along an axis, the axis dropped) and `stack` (tensors
joined along a new axis), the pieces recurrent layers and their gradients are made of."""
from __future__ import annotations

import numpy as np

from dslc.ir.graph import OpError
from dslc.ir.types import TensorType, normalize_axis
from dslc.ops.registry import REQUIRED, OpDef, Sample, op


@op("pick", axis=REQUIRED, index=REQUIRED)
class Pick(OpDef):
    """y = x[..., index, ...] along `axis`, which disappears (ONNX Gather with a scalar index)"""

    samples = [Sample(((2, 4, 3),), {"axis": 1, "index": 3}), Sample(((3, 5),), {"axis": 1, "index": -5}),
               Sample(((4, 2, 3),), {"axis": 0, "index": 1})]

    def infer(self, x, *, axis, index):
        a = _axis(axis, x.rank, x)
        size = x.shape[a]
        if not isinstance(size, int):
            raise OpError(f"cannot pick from the symbolic axis {axis} of `{x}`")
        if not -size <= index < size:
            raise OpError(f"index {index} is out of range for axis {axis} of `{x}`")
        return x.with_shape(d for i, d in enumerate(x.shape) if i != a)

    def lower(self, e, x, *, axis, index):
        return e.node("Gather", x, e.int64s(index, scalar=True), axis=normalize_axis(axis, x.type.rank))

    def evaluate(self, x, *, axis, index):
        return np.take(x, index, axis=axis)

    def torch(self, T, x, *, axis, index):
        return x.select(axis, index)

    def grad(self, b, g, out, x, *, axis, index):
        a = normalize_axis(axis, x.type.rank)
        size = x.type.shape[a]
        i = index % size
        return [b.pad(b.unsqueeze(g, axes=(a,)), axis=a, before=i, after=size - i - 1)]


@op("stack", axis=0)
class Stack(OpDef):
    """y = the inputs (all of one type) stacked along a new axis `axis` (numpy `stack`)"""

    samples = [Sample(((2, 3), (2, 3), (2, 3)), {"axis": 1}), Sample(((3, 2), (3, 2)), {"axis": 0}),
               Sample(((2, 3), (2, 3)), {"axis": -1})]

    def infer(self, *xs, axis):
        first = xs[0]
        for x in xs[1:]:
            if x != first:
                raise OpError(f"cannot stack `{first}` and `{x}`", hint="stacked tensors need the same type")
        a = _axis(axis, first.rank + 1, first)
        shape = list(first.shape)
        shape.insert(a, len(xs))
        return first.with_shape(shape)

    def lower(self, e, *xs, axis):
        a = normalize_axis(axis, xs[0].type.rank + 1)
        axes = e.int64s([a])
        return e.node("Concat", *[e.node("Unsqueeze", x, axes) for x in xs], axis=a)

    def evaluate(self, *xs, axis):
        return np.stack(xs, axis=axis)

    def torch(self, T, *xs, axis):
        return T.stack(xs, dim=axis)

    def grad(self, b, g, out, *xs, axis):
        a = normalize_axis(axis, out.type.rank)
        return [b.pick(g, axis=a, index=i) for i in range(len(xs))]


def _axis(axis: int, rank: int, t: TensorType) -> int:
    a = normalize_axis(axis, rank)
    if a is None:
        raise OpError(f"axis {axis} is out of range for `{t}`", hint=f"axes run from {-rank} to {rank - 1}")
    return a
