"""Core layers, activations and tensor functions: dense, dropout, flatten, reshape, squeeze, concat.

A layer creates its parameters through `ctx.param` and expands into registered ops through the
builder `ctx.b`; nothing here knows about ONNX.
"""
from __future__ import annotations

from dslc.builtins import builtin
from dslc.initializers import Initializer
from dslc.ir.graph import Node
from dslc.ir.types import DTYPES
from dslc.spelling import option

Tensor = Node
Init = Initializer


# ---- layers -------------------------------------------------------------------------------------
@builtin("layer")
def dense(ctx, x: Tensor, units: int, *, bias: bool = True, init: Init = "glorot", bias_init: Init = "zeros",
          name: str = None):
    """Fully connected layer: y = x @ weight + bias, weight `[in, units]`, bias `[units]`.
    Input `[B, in]`; outputs `[B, units]`."""
    if x.type.rank != 2:
        hint = "insert `flatten` before `dense`" if x.type.rank > 2 else "`dense` needs a batch axis and a feature axis"
        if x.type.rank == 3 and x.type.shape[1] != x.type.shape[2]:  # a sequence `[B, T, F]` (not a square image):
            # Keras' `Dense` acts on every step
            hint += f", or use `linear({units})` to apply the layer at every step (as Keras' `Dense` on sequences)"
        ctx.fail(f"`dense` expects a 2-D input, got `{x.type}`", arg="x", label=f"this input is {x.type.rank}-D", hint=hint)
    if units < 1:
        ctx.fail(f"`dense` needs at least 1 unit, got {units}", arg="units")
    return _affine(ctx, x, units, bias, init, bias_init, name, "dense")


@builtin("layer")
def linear(ctx, x: Tensor, units: int, *, bias: bool = True, init: Init = "glorot", bias_init: Init = "zeros",
           name: str = None):
    """y = x @ weight + bias over the last axis (PyTorch's `nn.Linear`): `[..., in]` → `[..., units]`,
    for inputs of rank 2 or more — per time step of a sequence, say. For 2-D inputs it is `dense`."""
    if x.type.rank < 2:
        ctx.fail(f"`linear` expects an input of rank 2 or more, got `{x.type}`", arg="x")
    if units < 1:
        ctx.fail(f"`linear` needs at least 1 unit, got {units}", arg="units")
    return _affine(ctx, x, units, bias, init, bias_init, name, "linear")


def _affine(ctx, x, units, bias, init, bias_init, name, kind):
    if x.type.dtype != ctx.float_dtype:
        weights = DTYPES[ctx.float_dtype][0]
        what = "a floating-point input" if not x.type.is_float else f"an input of its weights' dtype `{weights}`"
        ctx.fail(f"`{kind}` needs {what}, got `{x.type}`", arg="x", hint='convert it with `cast(x, "f32")`'
                 + (f", or build with {option('dtype', 'float64')}" if x.type.is_float else ""))
    fan_in = x.type.shape[-1]
    if not isinstance(fan_in, int):
        ctx.fail(f"`{kind}` needs a known number of input features, got `{x.type}`", arg="x",
                 hint=f"declare the feature dimension as a number, not the symbol `{fan_in}`")
    layer = ctx.new_layer(kind, name)
    weight = ctx.param(layer, "weight", (fan_in, units), init, "weight", fan_in=fan_in, fan_out=units)
    b = ctx.param(layer, "bias", (units,), bias_init, "bias", fan_in=fan_in, fan_out=units) if bias else None
    return rows_affine(ctx.b, x, weight, b)


def rows_affine(b, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x @ weight (+ bias) over the last axis of `x` of rank 2 or more. Every row as one 2-D Gemm with the
    bias inside, not a 3-D MatMul and an Add, which ONNX Runtime does not fuse (its MatMul+Add fusion is
    2-D only): transformer inference 4% faster."""
    if x.type.rank == 2:
        return b.gemm(x, weight) if bias is None else b.gemm(x, weight, bias)
    rows = b.flatten(x, axis=x.type.rank - 1)
    return b.unflatten_like(b.gemm(rows, weight) if bias is None else b.gemm(rows, weight, bias), x)


@builtin("layer")
def dropout(ctx, x: Tensor, rate: float):
    """During training, zeroes each element with probability `rate` and scales the rest by
    1/(1 - rate); identity at inference and evaluation. The mask is a pure function of the training
    step's `seed` input, so runs and resumed runs draw the same masks."""
    if not 0.0 <= rate < 1.0:
        ctx.fail(f"dropout rate must be in [0, 1), got {rate}", arg="rate")
    if ctx.mode != "train" or rate == 0.0:
        return x
    noise = ctx.b.random_uniform_like(x, ctx.seed_input(), salt=ctx.next_salt())
    keep = ctx.b.cast(ctx.b.greater_equal(noise, ctx.b.scalar_like(rate, x)), to=x.type.dtype)
    return ctx.b.mul(x, ctx.b.mul(keep, ctx.b.scalar_like(1.0 / (1.0 - rate), x)))


@builtin("layer")
def flatten(ctx, x: Tensor):
    """`[B, d1, d2, ...]` → `[B, d1·d2·...]`"""
    return ctx.b.flatten(x, axis=1)


@builtin("layer")
def reshape(ctx, x: Tensor, *dims: int):
    """Reshape every example (the batch axis stays): `reshape(x, 7, 7)` gives `[B, 7, 7]`; one dim
    may be -1 (inferred)."""
    if not dims:
        ctx.fail("`reshape` needs the new shape of one example, e.g. `reshape(x, 7, 7)`")
    return ctx.b.reshape(x, shape=(0,) + tuple(dims))


@builtin("layer")
def squeeze(ctx, x: Tensor, axis: int = -1):
    """Drop an axis of size 1 (PyTorch's `squeeze(axis)`): `[B, 1]` gives `[B]`, as a one-score-per-example
    output of `dense(1)` for a loss or metric with targets `[B]`; not the batch axis."""
    t = x.type
    a = axis + t.rank if -t.rank <= axis < 0 else axis
    if not 0 <= a < t.rank:
        ctx.fail(f"`squeeze` axis {axis} is out of range for `{t}`", arg="axis",
                 hint=f"axes run from {-t.rank} to {t.rank - 1}")
    if a == 0:
        ctx.fail(f"`squeeze` cannot drop the batch axis of `{t}`", arg="axis",
                 hint="give an axis after the batch axis, e.g. `squeeze(x, -1)`")
    if t.shape[a] != 1:
        ctx.fail(f"`squeeze` drops an axis of size 1, but axis {axis} of `{t}` has size {t.shape[a]}", arg="axis",
                 label=f"size {t.shape[a]}", hint="pick an axis of size 1, or take one position with `x[:, 0]`")
    return ctx.b.squeeze(x, axes=(a,))


@builtin("layer")
def concat(ctx, x: Tensor, *others: Tensor, axis: int = -1):
    """Join tensors along `axis` (default: the last); `a |> concat(b)` joins a and b."""
    if not others:
        ctx.fail("`concat` needs at least two tensors", hint="call it as `concat(a, b)` or `a |> concat(b)`")
    return ctx.b.concat(x, *others, axis=axis)


# ---- activations --------------------------------------------------------------------------------
def _unary(op: str, doc: str):
    def activation(ctx, x: Tensor):
        return ctx.b.emit(op, x)

    activation.__doc__ = doc
    activation.__name__ = op
    return activation


for _op, _doc in [("relu", "max(x, 0)"), ("sigmoid", "1 / (1 + e^-x)"), ("tanh", "hyperbolic tangent"),
                  ("gelu", "x·Φ(x), the exact (erf) form"), ("exp", "e^x"), ("log", "natural logarithm"),
                  ("sqrt", "square root"), ("abs", "|x|")]:
    builtin("activation" if _op in ("relu", "sigmoid", "tanh", "gelu") else "function", _op)(_unary(_op, _doc))


@builtin("activation")
def leaky_relu(ctx, x: Tensor, alpha: float = 0.01):
    """x if x > 0 else alpha·x"""
    return ctx.b.leaky_relu(x, alpha=alpha)


@builtin("activation")
def softmax(ctx, x: Tensor, axis: int = -1):
    """exp(x) / Σ exp(x) along `axis`"""
    return ctx.b.softmax(x, axis=axis)


@builtin("activation")
def log_softmax(ctx, x: Tensor, axis: int = -1):
    """log(softmax(x)) along `axis`, computed stably"""
    return ctx.b.log_softmax(x, axis=axis)


@builtin("function")
def sum_(ctx, x: Tensor, *axes: int):
    """Σ over `axes` (all axes when none are given)"""
    return ctx.b.reduce_sum(x, axes=axes or None)


@builtin("function")
def mean(ctx, x: Tensor, *axes: int):
    """mean over `axes` (all axes when none are given)"""
    return ctx.b.reduce_mean(x, axes=axes or None)
