"""Reductions over axes (`axes=None` means all axes) and arg-reductions."""
from __future__ import annotations

import numpy as np

from dslc.ir.graph import OpError
from dslc.ir.types import TensorType, normalize_axis, num_elements
from dslc.ops.registry import NUMBERS, OpDef, Sample, op


def reduced_axes(x: TensorType, axes) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(x.rank))
    out = []
    for a in axes:
        n = normalize_axis(a, x.rank)
        if n is None:
            raise OpError(f"axis {a} is out of range for `{x}`", hint=f"axes run from {-x.rank} to {x.rank - 1}")
        out.append(n)
    return tuple(sorted(set(out)))


def reduced_type(x: TensorType, axes, keepdims: bool) -> TensorType:
    ax = reduced_axes(x, axes)
    if keepdims:
        return x.with_shape(1 if i in ax else d for i, d in enumerate(x.shape))
    return x.with_shape(d for i, d in enumerate(x.shape) if i not in ax)


def _dims(x, axes) -> tuple[int, ...]:
    """Torch reduction dims for IR `axes` (None: all) of a tensor `x`."""
    return tuple(range(x.dim())) if axes is None else tuple(a % x.dim() for a in axes)


def spread_back(b, g, x, axes, keepdims):
    """Broadcast the gradient of a reduction back over the reduced axes of `x`."""
    if not keepdims:
        g = b.unsqueeze(g, axes=reduced_axes(x.type, axes))
    return b.expand_like(g, x)


_SAMPLES = [Sample(((3, 4),), {"axes": (1,), "keepdims": False}), Sample(((2, 3, 4),), {"axes": (0, 2), "keepdims": True}),
            Sample(((3, 4),), {"axes": None, "keepdims": False}),
            # a scalar; tests/test_ops.py's finite differences perturb arrays, not 0-d scalars
            Sample(((),), {"axes": None, "keepdims": False}, grad=False)]


class Reduce(OpDef):
    samples = _SAMPLES
    dtypes = NUMBERS
    onnx = ""

    def infer(self, x, *, axes, keepdims):
        return reduced_type(x, axes, keepdims)

    def lower(self, e, x, *, axes, keepdims):
        ax = reduced_axes(x.type, axes)
        if not ax:  # a scalar: nothing to reduce (and an empty `axes` attribute would have no type)
            return e.node("Identity", x)
        return e.node(self.onnx, x, axes=list(ax), keepdims=int(keepdims))


@op("reduce_sum", axes=None, keepdims=False)
class ReduceSum(Reduce):
    """y = Σ x over `axes` (ONNX ReduceSum-13, axes as an input)"""

    def lower(self, e, x, *, axes, keepdims):
        ax = reduced_axes(x.type, axes)
        return e.node("ReduceSum", x, e.int64s(ax), keepdims=int(keepdims))

    def evaluate(self, x, *, axes, keepdims):
        return np.sum(x, axis=None if axes is None else tuple(axes), keepdims=keepdims).astype(x.dtype)

    def grad(self, b, g, out, x, *, axes, keepdims):
        return [spread_back(b, g, x, axes, keepdims)]

    def torch(self, T, x, *, axes, keepdims):
        return T.sum(x, dim=_dims(x, axes), keepdim=keepdims)


@op("reduce_mean", axes=None, keepdims=False)
class ReduceMean(Reduce):
    """y = mean of x over `axes` (ONNX ReduceMean-13)"""

    onnx = "ReduceMean"

    def evaluate(self, x, *, axes, keepdims):
        return np.mean(x, axis=None if axes is None else tuple(axes), keepdims=keepdims).astype(x.dtype)

    def grad(self, b, g, out, x, *, axes, keepdims):
        return [b.div(spread_back(b, g, x, axes, keepdims), b.size_of(x, axes=reduced_axes(x.type, axes)))]

    def torch(self, T, x, *, axes, keepdims):
        return T.mean(x, dim=_dims(x, axes), keepdim=keepdims)


@op("reduce_max", axes=None, keepdims=False)
class ReduceMax(Reduce):
    """y = max of x over `axes`; the gradient is shared equally among ties (ONNX ReduceMax-13)"""

    onnx = "ReduceMax"

    def evaluate(self, x, *, axes, keepdims):
        return np.max(x, axis=None if axes is None else tuple(axes), keepdims=keepdims)

    def grad(self, b, g, out, x, *, axes, keepdims):
        # the peak and the gradient broadcast against x rather than expanded to it (a full-size pass
        # fewer each), and the gradient divided by the tie count before, on the reduced tensor
        ax = reduced_axes(x.type, axes)
        if not ax:
            return [g]
        peak, g = (out, g) if keepdims else (b.unsqueeze(out, axes=ax), b.unsqueeze(g, axes=ax))
        mask = b.cast(b.equal(x, peak), to=x.type.dtype)
        ties = b.reduce_sum(mask, axes=ax, keepdims=True)
        return [b.mul(mask, b.div(g, ties))]

    def torch(self, T, x, *, axes, keepdims):
        return T.amax(x, dim=_dims(x, axes), keepdim=keepdims)


@op("argmax", axis=-1, keepdims=False)
class ArgMax(OpDef):
    """index of the largest value along `axis` (first on ties), int64 (ONNX ArgMax)"""

    samples = [Sample(((3, 5),), {"axis": 1}, grad=False)]
    dtypes = NUMBERS

    def infer(self, x, *, axis, keepdims):
        return reduced_type(x, (axis,), keepdims).with_dtype("int64")

    def lower(self, e, x, *, axis, keepdims):
        return e.node("ArgMax", x, axis=normalize_axis(axis, x.type.rank), keepdims=int(keepdims))

    def torch(self, T, x, *, axis, keepdims):
        return T.argmax(x, dim=axis, keepdim=keepdims)

    def evaluate(self, x, *, axis, keepdims):
        y = np.argmax(x, axis=axis)
        return np.expand_dims(y, axis) if keepdims else y


@op("size_of", axes=None)
class SizeOf(OpDef):
    """the number of elements of x along `axes`, as a scalar of x's dtype (known at run time when
    a dimension is symbolic)"""

    samples = [Sample(((3, 4),), {"axes": (1,)}, grad=False)]

    def infer(self, x, *, axes):
        return TensorType(x.dtype, ())

    def lower(self, e, x, *, axes):
        ax = reduced_axes(x.type, axes)
        static = num_elements(tuple(x.type.shape[a] for a in ax))
        if static is not None:
            return e.scalar(static, x.type.dtype)
        dims = e.node("Gather", e.node("Shape", x), e.int64s(ax), axis=0)
        return e.node("Cast", e.node("ReduceProd", dims, keepdims=0), to=e.onnx_dtype(x.type.dtype))

    def torch(self, T, x, *, axes):
        return T.tensor(float(np.prod([x.shape[d] for d in _dims(x, axes)])), dtype=x.dtype)

    def evaluate(self, x, *, axes):
        return np.array(np.prod([x.shape[a] for a in reduced_axes(TensorType("float32", x.shape), axes)]), dtype=x.dtype)
