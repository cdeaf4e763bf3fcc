"""More element-wise, reduction and indexing ops: `not_equal`, `where`, `clip`, `reduce_min`, the layer
normalization pieces `normalize`/`inv_std`, and strided slices with their adjoint `strided_pad`.

Masks in gradients are multiplies by a cast comparison, not `Where` (faster in ONNX Runtime, see FACTS).
"""
from __future__ import annotations

import numpy as np

from dslc.ir.graph import OpError
from dslc.ir.types import TensorType, broadcast_shapes, normalize_axis
from dslc.ops.compare import Compare
from dslc.ops.elementwise import binary_type, unbroadcast
from dslc.ops.reduce import Reduce, spread_back
from dslc.ops.registry import ANY, REQUIRED, OpDef, Sample, expect_float, op


def _static_axis(x: TensorType, axis: int, what: str) -> tuple[int, int]:
    """(normalized axis, its static size) or an `OpError` naming `what`."""
    a = normalize_axis(axis, x.rank)
    if a is None:
        raise OpError(f"axis {axis} is out of range for `{x}`", hint=f"axes run from {-x.rank} to {x.rank - 1}")
    if not isinstance(x.shape[a], int):
        raise OpError(f"cannot {what} along the symbolic axis {axis} of `{x}`")
    return a, x.shape[a]


# ---- comparisons and selection ----------------------------------------------------------------------
@op("not_equal")
class NotEqual(Compare):
    """y = (a != b) as bool (ONNX Not(Equal))"""

    samples = [Sample(((3, 4), (3, 4)), grad=False), Sample((("int", (3, 4), 3), ("int", (1, 4), 3)), grad=False)]
    dtypes = ANY
    evaluate = staticmethod(np.not_equal)

    def lower(self, e, a, b):
        return e.node("Not", e.node("Equal", a, b))

    def torch(self, T, a, b):
        return T.ne(a, b)


@op("where")
class Where(OpDef):
    """y = a where cond else b, element-wise with broadcasting over all three (ONNX Where). The
    gradient goes to `a` where cond holds and to `b` elsewhere (as masks: cond cast to 0/1)."""

    samples = [Sample((("bool", (3, 4)), (3, 4), (3, 4))), Sample((("bool", (3, 1)), (2, 3, 4), (4,))),
               Sample((("bool", (2, 3, 4)), (3, 1), (1, 4)))]

    def infer(self, cond, a, b):
        if cond.dtype != "bool":
            raise OpError(f"`where` needs a `bool` condition, got `{cond}`",
                          hint="compare to get one, as in `where(x > 0, x, 0)`")
        values = binary_type(a, b, "where")
        shape = broadcast_shapes(cond.shape, values.shape)
        if shape is None:
            raise OpError(f"cannot broadcast the condition `{cond}` with the values `{values}` in `where`")
        return values.with_shape(shape)

    def lower(self, e, cond, a, b):
        if a.type.dtype != "bool":
            return e.node("Where", cond, a, b)
        as_int = lambda t: e.node("Cast", t, to=e.onnx_dtype("int32"))  # noqa: E731 - ORT has no bool Where
        return e.node("Cast", e.node("Where", cond, as_int(a), as_int(b)), to=e.onnx_dtype("bool"))

    def evaluate(self, cond, a, b):
        return np.where(cond, a, b)

    def torch(self, T, cond, a, b):
        return T.where(cond, a, b)

    def grad(self, b, g, out, cond, x, y):
        if not out.type.is_float:
            return [None, None, None]
        mask = b.cast(cond, to=out.type.dtype)
        to_x = b.mul(g, mask)
        return [None, unbroadcast(b, to_x, x), unbroadcast(b, b.sub(g, to_x), y)]


@op("clip", low=None, high=None)
class Clip(OpDef):
    """y = min(max(x, low), high); either bound may be None (ONNX Clip-13). The gradient passes where
    low <= x <= high, bounds included (PyTorch's `clamp`)."""

    samples = [Sample(((3, 4),), {"low": -0.5, "high": 0.5}), Sample(((3, 4),), {"low": 0.0}),
               Sample(((2, 3, 4),), {"high": 0.25})]

    def infer(self, x, *, low, high):
        if x.dtype == "bool":
            raise OpError(f"`clip` needs a number tensor, got `{x}`")
        if low is not None and high is not None and low > high:
            raise OpError(f"`clip` bounds are reversed: low {low} > high {high}")
        return x

    def lower(self, e, x, *, low, high):
        bound = lambda v: None if v is None else e.scalar(v, x.type.dtype)  # noqa: E731
        return e.node("Clip", x, bound(low), bound(high))

    def evaluate(self, x, *, low, high):
        if low is None and high is None:
            return x.copy()
        return np.clip(x, low, high).astype(x.dtype)

    def torch(self, T, x, *, low, high):
        return T.clamp(x, low, high)

    def grad(self, b, g, out, x, *, low, high):
        if not x.type.is_float:
            return [None]
        if low is not None:
            g = b.mul(g, b.cast(b.greater_equal(x, b.scalar_like(low, x)), to=x.type.dtype))
        if high is not None:
            g = b.mul(g, b.cast(b.less_equal(x, b.scalar_like(high, x)), to=x.type.dtype))
        return [g]


# ---- reductions ----------------------------------------------------------------------------------------
@op("reduce_min", axes=None, keepdims=False)
class ReduceMin(Reduce):
    """y = min of x over `axes`; the gradient is shared equally among ties (ONNX ReduceMin-13)"""

    onnx = "ReduceMin"

    def evaluate(self, x, *, axes, keepdims):
        return np.min(x, axis=None if axes is None else tuple(axes), keepdims=keepdims)

    def torch(self, T, x, *, axes, keepdims):
        return T.amin(x, dim=tuple(range(x.dim())) if axes is None else tuple(axes), keepdim=keepdims)

    def grad(self, b, g, out, x, *, axes, keepdims):
        low = spread_back(b, out, x, axes, keepdims)
        mask = b.cast(b.equal(x, low), to=x.type.dtype)
        ties = b.reduce_sum(mask, axes=axes, keepdims=True)
        return [b.div(b.mul(spread_back(b, g, x, axes, keepdims), mask), ties)]


# ---- layer normalization ---------------------------------------------------------------------------------
class _LastAxisStats(OpDef):
    def check(self, x, eps):
        expect_float(x)
        if x.rank < 1 or not isinstance(x.shape[-1], int):
            raise OpError(f"normalizing over the last axis needs a known last dimension, got `{x}`")
        if not eps > 0:
            raise OpError(f"the epsilon of a normalization must be positive, got {eps}")


def _inv_std(e, x, eps) -> str:
    dt = x.type.dtype
    centered = e.node("Sub", x, e.node("ReduceMean", x, axes=[-1], keepdims=1))
    variance = e.node("ReduceMean", e.node("Mul", centered, centered), axes=[-1], keepdims=1)
    return e.node("Reciprocal", e.node("Sqrt", e.node("Add", variance, e.scalar(eps, dt))))


@op("normalize", eps=1e-5)
class Normalize(_LastAxisStats):
    """y = (x - mean) / √(var + eps) over the last axis (biased variance), the core of layer
    normalization. Lowered to ReduceMean, Sub, Mul, Sqrt, Reciprocal rather than LayerNormalization-17:
    measured on `[32, 64, 128]` float32 it is as fast (0.10 vs 0.11 ms), closer to float64 (5e-7 vs 7e-7
    worst error) and keeps `eps` exact in float64 (the attribute is a float32). Inside the whole
    transformer it is faster: LayerNormalization made inference 1–3% slower, training no faster.
    Gradient: (g - mean(g) - y·mean(g·y)) · inv_std(x)."""

    samples = [Sample(((3, 4),), {"eps": 1e-5}), Sample(((2, 3, 4),), {"eps": 0.1})]

    def infer(self, x, *, eps):
        self.check(x, eps)
        return x

    def lower(self, e, x, *, eps):
        return e.node("Mul", e.node("Sub", x, e.node("ReduceMean", x, axes=[-1], keepdims=1)), _inv_std(e, x, eps))

    def evaluate(self, x, *, eps):
        centered = x - x.mean(axis=-1, keepdims=True)
        return (centered / np.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)).astype(x.dtype)

    def torch(self, T, x, *, eps):
        return T.nn.functional.layer_norm(x, (int(x.shape[-1]),), eps=eps)

    def grad(self, b, g, out, x, *, eps):
        mean_g = b.reduce_mean(g, axes=(-1,), keepdims=True)
        mean_gy = b.reduce_mean(b.mul(g, out), axes=(-1,), keepdims=True)
        return [b.mul(b.sub(b.sub(g, mean_g), b.mul(out, mean_gy)), b.inv_std(x, eps=eps))]


@op("inv_std", eps=1e-5)
class InvStd(_LastAxisStats):
    """y = 1 / √(var(x) + eps) over the last axis, kept as a size-1 axis (for `normalize`'s gradient)"""

    samples = [Sample(((3, 5),), {"eps": 1e-5}, grad=False)]

    def infer(self, x, *, eps):
        self.check(x, eps)
        return x.with_shape(x.shape[:-1] + (1,))

    def lower(self, e, x, *, eps):
        return _inv_std(e, x, eps)

    def evaluate(self, x, *, eps):
        centered = x - x.mean(axis=-1, keepdims=True)
        return (1.0 / np.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)).astype(x.dtype)

    def torch(self, T, x, *, eps):
        return T.rsqrt(x.var(dim=-1, unbiased=False, keepdim=True) + eps)


# ---- strided slices ---------------------------------------------------------------------------------------
@op("strided_slice", axis=REQUIRED, start=REQUIRED, end=REQUIRED, step=1)
class StridedSlice(OpDef):
    """y = x[..., start:end:step, ...] along `axis` (static bounds, Python semantics, step >= 1;
    ONNX Slice with steps). Its gradient is `strided_pad`."""

    samples = [Sample(((3, 7),), {"axis": 1, "start": 1, "end": 7, "step": 2}),
               Sample(((2, 9, 3),), {"axis": 1, "start": 0, "end": 9, "step": 3}),
               Sample(((8, 3),), {"axis": 0, "start": -6, "end": -1, "step": 4})]

    def bounds(self, x: TensorType, axis, start, end, step) -> tuple[int, int, int, int]:
        a, size = _static_axis(x, axis, "slice")
        if step < 1:
            raise OpError(f"slice steps must be positive, got {step}")
        lo, hi, _ = slice(start, end, step).indices(size)
        return a, lo, hi, len(range(lo, hi, step))

    def infer(self, x, *, axis, start, end, step):
        a, _, _, length = self.bounds(x, axis, start, end, step)
        return x.with_shape(length if i == a else d for i, d in enumerate(x.shape))

    def lower(self, e, x, *, axis, start, end, step):
        a, lo, hi, _ = self.bounds(x.type, axis, start, end, step)
        return e.node("Slice", x, e.int64s([lo]), e.int64s([hi]), e.int64s([a]), e.int64s([step]))

    def evaluate(self, x, *, axis, start, end, step):
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, end, step)
        return x[tuple(index)].copy()

    def torch(self, T, x, *, axis, start, end, step):
        index = [slice(None)] * x.dim()
        index[axis] = slice(start, end, step)
        return x[tuple(index)]

    def grad(self, b, g, out, x, *, axis, start, end, step):
        a, lo, _, _ = self.bounds(x.type, axis, start, end, step)
        return [b.strided_pad(g, axis=a, start=lo, step=step, size=x.type.shape[a])]


@op("strided_pad", axis=REQUIRED, start=REQUIRED, step=1, size=REQUIRED)
class StridedPad(OpDef):
    """y = zeros with `size` entries along `axis`, holding x at positions start, start+step, ...:
    the adjoint of `strided_slice` (Unsqueeze, Pad, Reshape, Slice, Pad)."""

    samples = [Sample(((3, 3),), {"axis": 1, "start": 1, "step": 2, "size": 7}),
               Sample(((2, 3, 4),), {"axis": 1, "start": 0, "step": 3, "size": 9}),
               Sample(((2, 3),), {"axis": 0, "start": 2, "step": 4, "size": 7})]

    def infer(self, x, *, axis, start, step, size):
        a, count = _static_axis(x, axis, "pad")
        if step < 1 or start < 0 or count < 1 or start + (count - 1) * step >= size:
            raise OpError(f"cannot place {count} entries from {start} in steps of {step} within {size}")
        return x.with_shape(size if i == a else d for i, d in enumerate(x.shape))

    def lower(self, e, x, *, axis, start, step, size):
        rank, a = x.type.rank, normalize_axis(axis, x.type.rank)
        count = x.type.shape[a]

        def pad(t, axis_, rank_, before, after):
            pads = [0] * (2 * rank_)
            pads[axis_], pads[rank_ + axis_] = before, after
            return e.node("Pad", t, e.int64s(pads))

        if step == 1:
            return pad(x, a, rank, start, size - start - count)
        spread = pad(e.node("Unsqueeze", x, e.int64s([a + 1])), a + 1, rank + 1, 0, step - 1)
        if x.type.is_static:
            shape = e.int64s([count * step if i == a else d for i, d in enumerate(x.type.shape)])
        else:
            shape = e.node("Concat", e.node("Shape", x, end=a), e.int64s([count * step]),
                           e.node("Shape", x, start=a + 1), axis=0)
        merged = e.node("Reshape", spread, shape)  # [..., count·step, ...]: x at multiples of step
        kept = min(count * step, size - start)
        if kept < count * step:
            merged = e.node("Slice", merged, e.int64s([0]), e.int64s([kept]), e.int64s([a]))
        return pad(merged, a, rank, start, size - start - kept)

    def evaluate(self, x, *, axis, start, step, size):
        shape = list(x.shape)
        shape[axis] = size
        y = np.zeros(shape, dtype=x.dtype)
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, start + (x.shape[axis] - 1) * step + 1, step)
        y[tuple(index)] = x
        return y

    def torch(self, T, x, *, axis, start, step, size):
        shape = list(x.shape)
        shape[axis] = size
        index = [slice(None)] * x.dim()
        index[axis] = slice(start, start + (x.shape[axis] - 1) * step + 1, step)
        y = x.new_zeros(shape)
        y[tuple(index)] = x
        return y

    def grad(self, b, g, out, x, *, axis, start, step, size):
        a = normalize_axis(axis, x.type.rank)
        end = start + (x.type.shape[a] - 1) * step + 1
        return [b.strided_slice(g, axis=a, start=start, end=end, step=step)]
