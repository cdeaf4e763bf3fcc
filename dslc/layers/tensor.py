"""Tensor functions for writing models by hand — `pow`, `clip`, `where`, `max`/`min` reductions,
`transpose`, `cast` — and the meaning of the comparison operators and of indexing (`x[:, -1]`), which
`dslc.lower` evaluates through `compare` and `subscript` below.

Indices and slice bounds are compile-time integers (literals or built from hyper-parameters); slicing
needs the axis size, so an axis of symbolic size can only be kept whole (`:`).
"""
from __future__ import annotations

from dslc.builtins import builtin
from dslc.diagnostics import error
from dslc.frontend import ast
from dslc.ir.graph import Builder, Node
from dslc.ir.types import INT_DTYPES, SHORT_TO_DTYPE, broadcast_shapes, fits, normalize_axis
from dslc.lower_calls import TUPLE_HINT, describe

Tensor = Node
Value = object  # a tensor or a number; checked by the function itself


# ---- builtins -----------------------------------------------------------------------------------------
@builtin("function", "pow")
def pow_(ctx, x: Value, p: Value):
    """x^p element-wise with broadcasting; either side may be a number (`pow(h, 2)`, `pow(2, h)`).
    A non-integer power of a negative number is NaN, as in PyTorch."""
    if not isinstance(x, Node):
        if not isinstance(p, Node):
            ctx.fail("`pow` of two numbers: one side must be a tensor", arg="x")
        x = _operand(ctx, x, p, "x", "pow")
    return ctx.b.pow(x, _operand(ctx, p, x, "p", "pow"))


@builtin("function")
def clip(ctx, x: Tensor, low: float, high: float):
    """min(max(x, low), high) element-wise (PyTorch's `clamp`); the gradient passes where
    low <= x <= high."""
    if low > high:
        ctx.fail(f"`clip` bounds are reversed: low {low} is above high {high}", arg="low")
    return ctx.b.clip(x, low=low, high=high)


@builtin("function")
def where(ctx, cond: Tensor, a: Value, b: Value):
    """a where `cond` is true, else b, element-wise with broadcasting: `where(x > 0, x, 0.1 * x)`.
    `cond` is a `bool` tensor (a comparison); `a` and `b` are tensors or numbers (or `true`/`false`
    next to a `bool` tensor: `where(0 < x, x < 1, false)` tests a range)."""
    if cond.type.dtype != "bool":
        ctx.fail(f"`where` needs a `bool` condition, got `{cond.type}`", arg="cond",
                 hint="compare to get one, as in `where(x > 0, x, 0)`")
    like = a if isinstance(a, Node) else b if isinstance(b, Node) else None
    if like is None:  # two constants: bools stay bool, numbers become the model's float type
        both_bool = isinstance(a, bool) and isinstance(b, bool)
        like = a = ctx.b.const(a, "bool") if both_bool else ctx.b.const(_number(ctx, a, "a", "where"), ctx.float_dtype)
    return ctx.b.where(cond, _operand(ctx, a, like, "a", "where"), _operand(ctx, b, like, "b", "where"))


@builtin("function", "max")
def max_(ctx, x: Tensor, *axes: int):
    """largest value over `axes` (all axes when none are given); the gradient is shared equally among
    tied maxima"""
    return ctx.b.reduce_max(x, axes=_axes(ctx, x, axes, "max") or None)


@builtin("function", "min")
def min_(ctx, x: Tensor, *axes: int):
    """smallest value over `axes` (all axes when none are given); the gradient is shared equally among
    tied minima"""
    return ctx.b.reduce_min(x, axes=_axes(ctx, x, axes, "min") or None)


@builtin("function")
def transpose(ctx, x: Tensor, *perm: int):
    """Permute the axes: axis i of the result is axis `perm[i]` of `x` (negative axes count from the
    end), as in `transpose(k, 0, 2, 1)` for `[B, T, D]` → `[B, D, T]`; without `perm`, the axes are
    reversed (NumPy)."""
    if not perm:
        return ctx.b.transpose(x, perm=None)
    if len(perm) != x.type.rank:
        ctx.fail(f"`transpose` of `{x.type}` needs {x.type.rank} axes, got {len(perm)}", arg=1,
                 hint=f"list every axis once, e.g. `transpose(x, {', '.join(map(str, reversed(range(x.type.rank))))})`")
    axes = _axes(ctx, x, perm, "transpose")
    for j, a in enumerate(axes):
        if a in axes[:j]:
            ctx.fail(f"`transpose` lists axis {a} of `{x.type}` twice", arg=1 + j, label="already listed",
                     hint=f"list each of the {x.type.rank} axes once")
    return ctx.b.transpose(x, perm=axes)


@builtin("function")
def cast(ctx, x: Tensor, dtype: str):
    """Convert to `dtype`: "f32", "f64", "i32", "i64" or "bool" (as in type declarations; "f32" is the
    model's float type, so float64 builds stay float64). Float to integer rounds toward zero; the
    gradient flows through float-to-float casts only."""
    if dtype not in SHORT_TO_DTYPE:
        known = ", ".join(f'"{d}"' for d in SHORT_TO_DTYPE)
        ctx.fail(f'unknown dtype "{dtype}"', arg="dtype", hint=f"dtypes are {known}")
    target = SHORT_TO_DTYPE[dtype]
    return ctx.b.cast(x, to=ctx.float_dtype if target == "float32" else target)


def _number(ctx, value, arg: str, fn: str):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        ctx.fail(f"`{fn}` expects `{arg}` to be a tensor or a number, got {describe(value)}", arg=arg,
                 hint=TUPLE_HINT if isinstance(value, tuple) else "")
    return value


def _operand(ctx, value, like: Node, arg: str, fn: str) -> Node:
    """A tensor argument, or a number as a constant of `like`'s dtype (`true`/`false` next to `bool`)."""
    if isinstance(value, Node):
        return value
    if isinstance(value, bool) and like.type.dtype == "bool":
        return ctx.b.const(value, "bool")
    number = _number(ctx, value, arg, fn)
    if not fits(number, like.type.dtype):
        kind, why = ("integer tensor", "" if not float(number).is_integer() else ": it is out of range") \
            if like.type.dtype in INT_DTYPES else ("tensor", ": it is out of range")
        ctx.fail(f"`{fn}` cannot combine {number} with the {kind} `{like.type}`{why}", arg=arg,
                 hint="convert the tensor first with `cast`")
    return ctx.b.const(number, like.type.dtype)


def _axes(ctx, x: Node, axes, fn: str) -> tuple[int, ...]:
    """`axes` (the arguments after `x`) normalized to 0..rank-1; an error points at the bad one."""
    out = []
    for j, a in enumerate(axes):
        n = normalize_axis(a, x.type.rank)
        if n is None:
            ctx.fail(f"axis {a} is out of range for `{x.type}` in `{fn}`", arg=1 + j,
                     hint=f"axes run from {-x.type.rank} to {x.type.rank - 1}")
        out.append(n)
    return tuple(out)


# ---- comparison operators ---------------------------------------------------------------------------
COMPARISONS = {"<": ("less", lambda a, b: a < b), "<=": ("less_equal", lambda a, b: a <= b),
               ">": ("greater", lambda a, b: a > b), ">=": ("greater_equal", lambda a, b: a >= b),
               "==": ("equal", lambda a, b: a == b), "!=": ("not_equal", lambda a, b: a != b)}


def compare(lowering, expr: ast.Compare, env):
    """`a < b` etc.: a `bool` tensor (element-wise, broadcasting), or a compile-time `true`/`false` when
    both sides are numbers. A number next to a tensor takes the tensor's dtype."""
    opname, on_numbers = COMPARISONS[expr.op]
    left, right = lowering.eval(expr.left, env), lowering.eval(expr.right, env)
    if not isinstance(left, Node) and not isinstance(right, Node):
        if isinstance(left, bool) and isinstance(right, bool) and expr.op in ("==", "!="):
            return on_numbers(left, right)
        return on_numbers(lowering.number(left, expr.left.span), lowering.number(right, expr.right.span))
    left = _compared(lowering, left, right, expr.left.span)
    right = _compared(lowering, right, left, expr.right.span)
    lt, rt = left.type, right.type
    if lt.dtype != rt.dtype:
        raise error(f"cannot compare `{lt}` with `{rt}`: the dtypes differ", expr.span,
                    hint="convert one side with `cast`")
    if lt.dtype == "bool" and expr.op not in ("==", "!="):
        raise error(f"`{expr.op}` orders numbers, not `bool` tensors", expr.span,
                    hint="compare `bool` tensors with `==` or `!=`")
    if broadcast_shapes(lt.shape, rt.shape) is None:
        raise error(f"cannot compare `{lt}` with `{rt}`: the shapes do not broadcast", expr.span,
                    hint="shapes broadcast when, from the right, each pair of dims is equal or one of them is 1")
    return Builder(expr.span).emit(opname, left, right)


def _compared(lowering, value, other: Node, span) -> Node:
    if isinstance(value, bool) and isinstance(other, Node) and other.type.dtype == "bool":
        return Builder(span).const(value, "bool")
    return lowering.as_tensor(value, other, span)


# ---- indexing -------------------------------------------------------------------------------------------
def subscript(lowering, expr: ast.Index, env) -> Node:
    """`x[i, a:b, ..., ::s]`: integers pick one position (the axis goes), slices keep a range (Python
    semantics, bounds clamped, step >= 1), `...` stands for the axes the other subscripts leave."""
    x = lowering.eval(expr.value, env)
    if not isinstance(x, Node):
        raise error(f"only tensors can be indexed, not {describe(x)}", expr.value.span)
    t = x.type
    ellipses = [s for s in expr.subscripts if isinstance(s, ast.EllipsisIndex)]
    if len(ellipses) > 1:
        raise error("an index can have only one `...`", ellipses[1].span, "a second `...`")
    explicit = [s for s in expr.subscripts if not isinstance(s, ast.EllipsisIndex)]
    if len(explicit) > t.rank:
        extra = explicit[t.rank]
        raise error(f"too many subscripts: `{t}` has {t.rank} ax{'is' if t.rank == 1 else 'es'}, indexed with "
                    f"{len(explicit)}", extra.span, "no axis left for this",
                    hint=f"give at most {t.rank} subscript{'' if t.rank == 1 else 's'}")
    b = Builder(expr.span)
    axis, dropped = 0, []
    for sub in expr.subscripts:
        if isinstance(sub, ast.EllipsisIndex):
            axis += t.rank - len(explicit)
            continue
        size = t.shape[axis]
        if isinstance(sub, ast.Slice):
            x = _slice(lowering, b, x, sub, axis, size, env)
        else:
            position = _integer(lowering, sub, env, "an index")
            if not isinstance(size, int):
                raise error(f"cannot index axis {axis} of `{t}`: its size `{size}` is known only at run time",
                            sub.span, "the position cannot be checked", hint="index axes of known size")
            if not -size <= position < size:
                raise error(f"index {position} is out of range for axis {axis} of `{t}` (size {size})", sub.span,
                            "out of range", hint=f"indices on this axis run from {-size} to {size - 1}")
            start = position % size
            x = b.slice(x, axis=axis, start=start, end=start + 1)
            dropped.append(axis)
        axis += 1
    return b.squeeze(x, axes=tuple(dropped)) if dropped else x


def _slice(lowering, b: Builder, x: Node, sub: ast.Slice, axis: int, size, env) -> Node:
    start, stop, step = (None if part is None else _integer(lowering, part, env, "a slice bound")
                         for part in (sub.start, sub.stop, sub.step))
    if (start, stop, step) == (None, None, None):
        return x
    if not isinstance(size, int):
        raise error(f"cannot slice axis {axis} of `{x.type}`: its size `{size}` is known only at run time", sub.span,
                    "the bounds cannot be checked", hint="keep a symbolic axis whole with `:`")
    if step is not None and step < 1:
        raise error(f"slice steps must be positive, got {step}", sub.step.span,
                    hint="reversing an axis is not supported" if step < 0 else "a step of 0 selects nothing")
    step = step or 1
    lo, hi, _ = slice(start, stop, step).indices(size)
    if len(range(lo, hi, step)) == 0:
        raise error(f"the slice selects nothing from axis {axis} of `{x.type}` (size {size})", sub.span,
                    "empty slice", hint=f"positions on this axis run from {-size} to {size - 1}")
    if (lo, hi, step) == (0, size, 1):
        return x
    if step == 1:
        return b.slice(x, axis=axis, start=lo, end=hi)
    return b.strided_slice(x, axis=axis, start=lo, end=hi, step=step)


def _integer(lowering, expr, env, what: str) -> int:
    value = lowering.eval(expr, env)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        hint = "indexing with a tensor of positions is not supported" if isinstance(value, Node) else ""
        raise error(f"{what} must be a whole number known when the model is built, got {describe(value)}",
                    expr.span, hint=hint)
    return value
