"""Shape ops: reshape, flatten, squeeze/unsqueeze, expand, transpose, concat, slice, pad.

Symbolic dimensions travel through: a reshape spec entry 0 copies the input dim at that position
(ONNX Reshape semantics), and gradients restore shapes from the forward tensor at run time
(`reshape_like`, `expand_like`) so they work for any batch size.
"""
from __future__ import annotations

import numpy as np

from dslc.ir.graph import OpError
from dslc.ir.types import Dim, TensorType, broadcast_shapes, normalize_axis, num_elements
from dslc.ops.registry import REQUIRED, OpDef, Sample, op


def _axis(axis: int, rank: int, t: TensorType) -> int:
    n = normalize_axis(axis, rank)
    if n is None:
        raise OpError(f"axis {axis} is out of range for `{t}`", hint=f"axes run from {-rank} to {rank - 1}")
    return n


@op("reshape", shape=REQUIRED)
class Reshape(OpDef):
    """y = x with a new shape; `shape` entries: a size, 0 (copy x's dim there) or one -1 (inferred)."""

    samples = [Sample(((3, 4),), {"shape": (0, 2, 2)}), Sample(((2, 3, 4),), {"shape": (2, -1)})]

    def infer(self, x, *, shape):
        out = []
        for i, s in enumerate(shape):
            if s == 0:
                if i >= x.rank:
                    raise OpError(f"reshape entry 0 at position {i} has no dim to copy in `{x}`")
                out.append(x.shape[i])
            else:
                out.append(s)
        if out.count(-1) > 1:
            raise OpError("reshape can infer at most one dimension (`-1`)")
        known = [d for d in out if d != -1]
        sym_in = sorted(str(d) for d in x.shape if not isinstance(d, int))
        sym_out = sorted(str(d) for d in known if not isinstance(d, int))
        if sym_in != sym_out:
            raise OpError(f"cannot reshape `{x}` to {_fmt(out)}: symbolic dimensions must be kept as they are")
        static_in = int(np.prod([d for d in x.shape if isinstance(d, int)]))
        static_out = int(np.prod([d for d in known if isinstance(d, int)]))
        if -1 in out:
            if static_out == 0 or static_in % static_out:
                raise OpError(f"cannot reshape `{x}` to {_fmt(out)}: {static_in} is not a multiple of {static_out}")
            out[out.index(-1)] = static_in // static_out
        elif static_in != static_out:
            raise OpError(f"cannot reshape `{x}` to {_fmt(out)}: {static_in} elements per example become {static_out}"
                          if sym_in else f"cannot reshape `{x}` ({static_in} elements) to {_fmt(out)} ({static_out} elements)")
        return x.with_shape(out)

    def lower(self, e, x, *, shape):
        return e.node("Reshape", x, e.int64s(shape))

    def evaluate(self, x, *, shape):
        return x.reshape([x.shape[i] if s == 0 else s for i, s in enumerate(shape)])

    def torch(self, T, x, *, shape):
        return x.reshape([x.shape[i] if s == 0 else s for i, s in enumerate(shape)])

    def grad(self, b, g, out, x, *, shape):
        return [b.reshape_like(g, x)]


def product_dim(dims) -> Dim:
    """The product of dims: an int when all are known, else a symbol naming the product (`B*T`)."""
    n = num_elements(tuple(dims))
    if n is not None:
        return n
    factors = [str(d) for d in dims if d != 1]
    return factors[0] if len(factors) == 1 else "*".join(factors)


def _fmt(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


@op("reshape_like")
class ReshapeLike(OpDef):
    """y = x reshaped to the (run-time) shape of `like`"""

    samples = [Sample(((3, 4), (2, 6)))]

    def infer(self, x, like):
        return x.with_shape(like.shape)

    def lower(self, e, x, like):
        return e.node("Reshape", x, e.node("Shape", like))

    def evaluate(self, x, like):
        return x.reshape(like.shape)

    def torch(self, T, x, like):
        return x.reshape(like.shape)

    def grad(self, b, g, out, x, like):
        return [b.reshape_like(g, x), None]


@op("flatten", axis=1)
class Flatten(OpDef):
    """y = x as 2-D: dims before `axis` multiplied into rows, the rest into columns (ONNX Flatten)."""

    samples = [Sample(((2, 3, 4),), {"axis": 1})]

    def infer(self, x, *, axis):
        if x.rank < 2:
            raise OpError(f"`flatten` needs a tensor of rank 2 or more, got `{x}`")
        a = _axis(axis, x.rank + 1, x)
        return x.with_shape((product_dim(x.shape[:a]), product_dim(x.shape[a:])))

    def lower(self, e, x, *, axis):
        return e.node("Flatten", x, axis=axis)

    def evaluate(self, x, *, axis):
        return x.reshape(int(np.prod(x.shape[:axis])), -1)

    def torch(self, T, x, *, axis):
        return x.reshape(int(np.prod(x.shape[:axis])), -1)

    def grad(self, b, g, out, x, *, axis):
        return [b.reshape_like(g, x)]


@op("unflatten_like")
class UnflattenLike(OpDef):
    """y = x `[N, k]` reshaped to `like.shape[:-1] + [k]`: undoes `flatten(like, axis=rank-1)` for a
    result with a new last dimension (a layer applied to every row as one 2-D `Gemm`). The shape is a
    constant with -1 for the one symbolic dim, else read from `like` at run time (Shape, Concat)."""

    samples = [Sample(((6, 5), (2, 3, 4))), Sample(((24, 2), (2, 3, 4, 7)))]

    def infer(self, x, like):
        if x.rank != 2 or like.rank < 2:
            raise OpError(f"`unflatten_like` takes `[N, k]` rows and a tensor of rank 2 or more, got `{x}`, `{like}`")
        if product_dim(like.shape[:-1]) != x.shape[0]:
            raise OpError(f"cannot unflatten the {x.shape[0]} rows of `{x}` into the leading dims of `{like}`")
        return x.with_shape(like.shape[:-1] + x.shape[1:])

    def lower(self, e, x, like):
        leading = like.type.shape[:-1]
        symbolic = [d for d in leading if not isinstance(d, int)]
        if len(symbolic) <= 1:
            shape = e.int64s([d if isinstance(d, int) else -1 for d in leading] + [x.type.shape[1]])
        else:
            shape = e.node("Concat", e.node("Shape", like, end=-1), e.int64s([x.type.shape[1]]), axis=0)
        return e.node("Reshape", x, shape)

    def evaluate(self, x, like):
        return x.reshape(like.shape[:-1] + x.shape[1:])

    def torch(self, T, x, like):
        return x.reshape(tuple(like.shape[:-1]) + tuple(x.shape[1:]))

    def grad(self, b, g, out, x, like):
        return [b.reshape_like(g, x), None]


@op("squeeze", axes=REQUIRED)
class Squeeze(OpDef):
    """y = x without the size-1 `axes`"""

    samples = [Sample(((3, 1, 4),), {"axes": (1,)})]

    def infer(self, x, *, axes):
        ax = {_axis(a, x.rank, x) for a in axes}
        for a in ax:
            if x.shape[a] != 1:
                raise OpError(f"cannot squeeze axis {a} of `{x}`: its size is not 1")
        return x.with_shape(d for i, d in enumerate(x.shape) if i not in ax)

    def lower(self, e, x, *, axes):
        return e.node("Squeeze", x, e.int64s(axes))

    def evaluate(self, x, *, axes):
        return np.squeeze(x, axis=tuple(axes))

    def torch(self, T, x, *, axes):
        for a in sorted((a % x.dim() for a in axes), reverse=True):
            x = x.squeeze(a)
        return x

    def grad(self, b, g, out, x, *, axes):
        return [b.reshape_like(g, x)]


@op("unsqueeze", axes=REQUIRED)
class Unsqueeze(OpDef):
    """y = x with new size-1 axes at `axes` (positions in the output)"""

    samples = [Sample(((3, 4),), {"axes": (0, 2)})]

    def infer(self, x, *, axes):
        rank = x.rank + len(axes)
        ax = sorted(_axis(a, rank, x) for a in axes)
        dims = iter(x.shape)
        return x.with_shape(1 if i in ax else next(dims) for i in range(rank))

    def lower(self, e, x, *, axes):
        return e.node("Unsqueeze", x, e.int64s(axes))

    def evaluate(self, x, *, axes):
        return np.expand_dims(x, tuple(axes))

    def torch(self, T, x, *, axes):
        rank = x.dim() + len(axes)
        for a in sorted(a % rank for a in axes):
            x = x.unsqueeze(a)
        return x

    def grad(self, b, g, out, x, *, axes):
        return [b.reshape_like(g, x)]


@op("expand_like")
class ExpandLike(OpDef):
    """y = x broadcast to the shape of `like`"""

    samples = [Sample(((3, 1), (3, 4)))]

    def infer(self, x, like):
        shape = broadcast_shapes(x.shape, like.shape)
        if shape != like.shape:
            raise OpError(f"cannot broadcast `{x}` to `{like}`")
        return x.with_shape(like.shape)

    def lower(self, e, x, like):
        return e.node("Expand", x, e.node("Shape", like))

    def evaluate(self, x, like):
        return np.broadcast_to(x, like.shape).copy()

    def torch(self, T, x, like):
        return x.expand_as(like)

    def grad(self, b, g, out, x, like):
        from dslc.ops.elementwise import unbroadcast

        return [unbroadcast(b, g, x), None]


@op("transpose", perm=None)
class Transpose(OpDef):
    """y = x with axes permuted (`perm=None` reverses them)"""

    samples = [Sample(((2, 3, 4),), {"perm": (1, 2, 0)})]

    def infer(self, x, *, perm):
        p = tuple(reversed(range(x.rank))) if perm is None else tuple(perm)
        if sorted(p) != list(range(x.rank)):
            raise OpError(f"`{list(p)}` is not a permutation of the {x.rank} axes of `{x}`")
        return x.with_shape(x.shape[i] for i in p)

    def lower(self, e, x, *, perm):
        p = tuple(reversed(range(x.type.rank))) if perm is None else tuple(perm)
        return e.node("Transpose", x, perm=list(p))

    def evaluate(self, x, *, perm):
        return np.transpose(x, perm)

    def torch(self, T, x, *, perm):
        return x.permute(*(reversed(range(x.dim())) if perm is None else perm))

    def grad(self, b, g, out, x, *, perm):
        p = tuple(reversed(range(x.type.rank))) if perm is None else tuple(perm)
        return [b.transpose(g, perm=tuple(int(i) for i in np.argsort(p)))]


@op("concat", axis=-1)
class Concat(OpDef):
    """y = the inputs joined along `axis`; all other dims must agree"""

    samples = [Sample(((3, 2), (3, 4)), {"axis": 1}), Sample(((2, 3), (1, 3), (2, 3)), {"axis": 0})]

    def infer(self, *xs, axis):
        first = xs[0]
        a = _axis(axis, first.rank, first)
        total = 0
        for x in xs:
            if x.dtype != first.dtype or x.rank != first.rank:
                raise OpError(f"cannot concatenate `{first}` and `{x}`", hint="inputs need the same dtype and rank")
            for i, (d1, d2) in enumerate(zip(first.shape, x.shape)):
                if i != a and d1 != d2:
                    raise OpError(f"cannot concatenate `{first}` and `{x}` along axis {axis}: dim {i} differs")
            if not isinstance(x.shape[a], int) or total is None:
                total = None
            else:
                total += x.shape[a]
        if total is None:
            raise OpError(f"cannot concatenate along the symbolic axis {axis} of `{first}`")
        return first.with_shape(total if i == a else d for i, d in enumerate(first.shape))

    def lower(self, e, *xs, axis):
        return e.node("Concat", *xs, axis=normalize_axis(axis, xs[0].type.rank))

    def evaluate(self, *xs, axis):
        return np.concatenate(xs, axis=axis)

    def torch(self, T, *xs, axis):
        return T.cat(xs, dim=axis)

    def grad(self, b, g, out, *xs, axis):
        a = normalize_axis(axis, out.type.rank)
        grads, start = [], 0
        for x in xs:
            end = start + x.type.shape[a]
            grads.append(b.slice(g, axis=a, start=start, end=end))
            start = end
        return grads


@op("slice", axis=REQUIRED, start=REQUIRED, end=REQUIRED)
class Slice(OpDef):
    """y = x[..., start:end, ...] along `axis` (static bounds)"""

    samples = [Sample(((3, 6),), {"axis": 1, "start": 1, "end": 4})]

    def infer(self, x, *, axis, start, end):
        a = _axis(axis, x.rank, x)
        size = x.shape[a]
        if not isinstance(size, int):
            raise OpError(f"cannot slice along the symbolic axis {axis} of `{x}`")
        lo, hi, _ = slice(start, end).indices(size)
        return x.with_shape(max(0, hi - lo) if i == a else d for i, d in enumerate(x.shape))

    def lower(self, e, x, *, axis, start, end):
        return e.node("Slice", x, e.int64s([start]), e.int64s([end]), e.int64s([axis]))

    def torch(self, T, x, *, axis, start, end):
        index = [slice(None)] * x.dim()
        index[axis] = slice(start, end)
        return x[tuple(index)]

    def evaluate(self, x, *, axis, start, end):
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, end)
        return x[tuple(index)]

    def grad(self, b, g, out, x, *, axis, start, end):
        a = normalize_axis(axis, x.type.rank)
        lo, hi, _ = slice(start, end).indices(x.type.shape[a])
        return [b.pad(g, axis=a, before=lo, after=x.type.shape[a] - hi)]


@op("pad", axis=REQUIRED, before=0, after=0)
class Pad(OpDef):
    """y = x with `before`/`after` zeros added along `axis`"""

    samples = [Sample(((3, 4),), {"axis": 1, "before": 1, "after": 2})]

    def infer(self, x, *, axis, before, after):
        a = _axis(axis, x.rank, x)
        size = x.shape[a]
        if not isinstance(size, int):
            raise OpError(f"cannot pad along the symbolic axis {axis} of `{x}`")
        return x.with_shape(size + before + after if i == a else d for i, d in enumerate(x.shape))

    def lower(self, e, x, *, axis, before, after):
        pads = [0] * (2 * x.type.rank)
        pads[axis], pads[x.type.rank + axis] = before, after
        return e.node("Pad", x, e.int64s(pads))

    def torch(self, T, x, *, axis, before, after):
        widths = [0, 0] * (x.dim() - axis % x.dim() - 1) + [before, after]
        return T.nn.functional.pad(x, widths)

    def evaluate(self, x, *, axis, before, after):
        widths = [(0, 0)] * x.ndim
        widths[axis] = (before, after)
        return np.pad(x, widths)

    def grad(self, b, g, out, x, *, axis, before, after):
        return [b.slice(g, axis=axis, start=before, end=before + x.type.shape[axis])]
