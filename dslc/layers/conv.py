"""Convolutional layers and pooling on channels-first data (`[batch, channels, length]` in 1-D,
`[batch, channels, height, width]` in 2-D, as in PyTorch and ONNX): conv1d/2d, conv_transpose1d/2d,
max/avg pooling, global pooling and nearest upsampling.

Sizes (kernel, stride, dilation, padding, factor) are one whole number applied to every spatial axis;
the ops under them (`dslc/ops/conv.py`, `dslc/ops/pool.py`) take one per axis. `padding` and a pool's
`stride` also accept words ("same", "valid"; "kernel"), so they are checked here rather than by the
argument conversion, which knows only the plain kinds.
"""
from __future__ import annotations

import math

from dslc.builtins import builtin
from dslc.initializers import Initializer
from dslc.ir.graph import Node
from dslc.lower_calls import describe
from dslc.ops.conv_math import dims_text

Tensor = Node
Init = Initializer
Padding = object  # a whole number, "valid" (= 0) or "same": checked by `_padding`
Stride = object  # a whole number or "kernel": checked by `_whole`

def _axes(n: int) -> str:
    return {1: "`[batch, channels, length]`", 2: "`[batch, channels, height, width]`"}.get(
        n, f"`[batch, channels, {n} spatial axes]`")


# ---- argument checks ------------------------------------------------------------------------------
def _whole(ctx, value, arg: str, what: str, minimum: int = 1) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        ctx.fail(f"`{what}` expects `{arg}` to be a whole number, got {describe(value)}", arg=arg)
    if value < minimum:
        ctx.fail(f"`{what}` needs `{arg}` of at least {minimum}, got {value}", arg=arg)
    return value


def _spatial_input(ctx, x: Node, n: int, what: str) -> tuple[int, tuple[int, ...]]:
    """(channels, spatial sizes) of a `[batch, channels, *spatial]` input with n spatial axes, or a
    diagnostic at the input that says how to get there."""
    t = x.type
    if t.rank != n + 2:
        ctx.fail(f"`{what}` expects a {n + 2}-D input {_axes(n)}, got `{t}`", arg="x", label=f"this input is {t.rank}-D",
                 hint=_reshape_hint(t, n, what))
    if not t.is_float:
        ctx.fail(f"`{what}` needs a floating-point input, got `{t}`", arg="x", hint="convert it with `cast`")
    symbolic = [str(d) for d in t.shape[1:] if not isinstance(d, int)]
    if symbolic:
        ctx.fail(f"`{what}` needs known channel and spatial sizes, got `{t}`", arg="x",
                 hint=f"declare `{symbolic[0]}` as a number in the input's type")
    return t.shape[1], tuple(t.shape[2:])


def _reshape_hint(t, n: int, what: str) -> str:
    dims = t.shape[1:]
    known = all(isinstance(d, int) for d in dims)
    if n == 2 and t.rank == 2 and known and math.isqrt(dims[0]) ** 2 == dims[0]:
        side = math.isqrt(dims[0])
        return f"add a channel axis and the image shape, e.g. `reshape(x, 1, {side}, {side})`"
    if t.rank == n + 1 and known:
        return f"add a channel axis: `reshape(x, 1, {', '.join(str(d) for d in dims)})`"
    if n == 1 and t.rank == 4:
        return "use `conv2d` and the 2-D pools for images"
    if t.rank < n + 2:
        return f"reshape each example to `[channels, {'length' if n == 1 else 'height, width'}]` with `reshape`"
    return f"`{what}` works on {_axes(n)}; use `reshape` or `flatten` to get there"


def _padding(ctx, value, n: int, spatial, kernel: int, stride: int, dilation: int, what: str) -> tuple[int, ...]:
    """ONNX pads (all begins, then all ends) for `padding` = a whole number, "valid" or "same"."""
    if isinstance(value, str):
        if value == "valid":
            return (0,) * (2 * n)
        if value == "same":
            # as Keras/TensorFlow: ceil(size / stride) outputs, the odd padding row at the end
            # (for stride 1 that keeps the size, as PyTorch's padding="same")
            span = dilation * (kernel - 1) + 1
            total = [max((-(-size // stride) - 1) * stride + span - size, 0) for size in spatial]
            return tuple(t // 2 for t in total) + tuple(t - t // 2 for t in total)
        ctx.fail(f"`{what}` padding must be a number, \"valid\" or \"same\", got \"{value}\"", arg="padding",
                 hint="a number pads that many zeros on each side; \"same\" keeps the size (at stride 1)")
    amount = _whole(ctx, value, "padding", what, minimum=0)
    return (amount,) * (2 * n)


def _fits(ctx, x: Node, spatial, pads, kernel: int, dilation: int, what: str, noun: str = "kernel"):
    """A diagnostic at `kernel` when a window does not fit the padded input."""
    n = len(spatial)
    padded = [spatial[i] + pads[i] + pads[n + i] for i in range(n)]
    span = dilation * (kernel - 1) + 1
    if any(span > p for p in padded):
        window = dims_text([kernel] * n)
        size = f"{window} with dilation {dilation} spans {dims_text([span] * n)}, more than" if dilation > 1 else \
            f"{window} is larger than"
        hint = _channels_last_hint(x.type, span) or (
            f"use a smaller {noun}, pad the input" + (" (`padding = \"same\"`)" if noun == "kernel" else "")
            + ", or downsample less before this layer")
        ctx.fail(f"`{what}` {noun} {size} its padded input {dims_text(padded)}", arg="kernel",
                 label=f"the input is `{x.type}`", hint=hint)


def _channels_last_hint(t, span: int) -> str:
    """For a window that does not fit because the input looks channels-last (Keras/TensorFlow images
    `[B, H, W, C]`: a last axis of 1, 3 or 4 that the window does not fit, while it fits all the others
    and axis 1 is more than 4): how to move the channels to axis 1."""
    last, spatial = t.shape[-1], t.shape[1:-1]
    if last not in (1, 3, 4) or last >= span or t.shape[1] <= 4 or any(size < span for size in spatial):
        return ""
    perm = ", ".join(str(a) for a in (0, t.rank - 1, *range(1, t.rank - 1)))
    first, last = ("[B, C, L]", "[B, L, C]") if t.rank == 3 else ("[B, C, H, W]", "[B, H, W, C]")
    return (f"conv and pool layers take channels first, `{first}` (as PyTorch); for a channels-last input "
            f"`{last}` use `transpose(x, {perm})`")


def _groups(ctx, channels: int, filters: int, groups: int, what: str):
    for count, noun in ((channels, "input channels"), (filters, "filters")):
        if count % groups:
            ctx.fail(f"`{what}` splits its {noun} into {groups} groups, but {count} {noun} do not divide evenly",
                     arg="groups", label=f"{count} {noun} in {groups} groups",
                     hint=f"use a number of groups that divides both {channels} (channels) and {filters} (filters)")


# ---- convolutions ---------------------------------------------------------------------------------
def _checked(ctx, n, what, x, filters, kernel, stride, dilation, groups):
    """The arguments every convolution shares, checked: (channels, spatial, filters, kernel, stride,
    dilation, groups)."""
    channels, spatial = _spatial_input(ctx, x, n, what)
    filters, kernel, stride, dilation, groups = (
        _whole(ctx, value, arg, what) for value, arg in
        ((filters, "filters"), (kernel, "kernel"), (stride, "stride"), (dilation, "dilation"), (groups, "groups")))
    _groups(ctx, channels, filters, groups, what)
    return channels, spatial, filters, kernel, stride, dilation, groups


def _parameters(ctx, layer, weight_shape, filters, init, bias, bias_init, *, fan_in, fan_out) -> list:
    """The weight of `weight_shape` and, with `bias`, a bias of `[filters]`."""
    params = [ctx.param(layer, "weight", weight_shape, init, "weight", fan_in=fan_in, fan_out=fan_out)]
    if bias:
        params.append(ctx.param(layer, "bias", (filters,), bias_init, "bias", fan_in=fan_in, fan_out=fan_out))
    return params


def _conv(ctx, n, what, x, filters, kernel, stride, padding, dilation, groups, bias, init, bias_init, name):
    channels, spatial, filters, kernel, stride, dilation, groups = _checked(
        ctx, n, what, x, filters, kernel, stride, dilation, groups)
    pads = _padding(ctx, padding, n, spatial, kernel, stride, dilation, what)
    _fits(ctx, x, spatial, pads, kernel, dilation, what)
    layer = ctx.new_layer(what, name)
    taps = kernel ** n
    # PyTorch's and Keras' fans: a filter reads channels/groups · kernel inputs; fan_out = filters · kernel
    inputs = [x] + _parameters(ctx, layer, (filters, channels // groups) + (kernel,) * n, filters, init, bias,
                               bias_init, fan_in=channels // groups * taps, fan_out=filters * taps)
    return ctx.b.conv(*inputs, strides=(stride,) * n, pads=pads, dilations=(dilation,) * n, group=groups)


@builtin("layer")
def conv1d(ctx, x: Tensor, filters: int, kernel: int, stride: int = 1, padding: Padding = 0, dilation: int = 1,
           groups: int = 1, bias: bool = True, init: Init = "glorot", bias_init: Init = "zeros", name: str = None):
    """1-D convolution (cross-correlation, as PyTorch's `Conv1d`): `[B, C, L]` → `[B, filters, L']`,
    L' = ⌊(L + 2·padding - dilation·(kernel - 1) - 1) / stride⌋ + 1. `padding` is zeros on each side, or
    "valid" (none) or "same" (L' = ⌈L / stride⌉, the odd zero at the end, as Keras). `groups` splits
    channels and filters into independent groups. Weight `[filters, C/groups, kernel]`, fans
    C/groups·kernel in and filters·kernel out; bias `[filters]`."""
    return _conv(ctx, 1, "conv1d", x, filters, kernel, stride, padding, dilation, groups, bias, init, bias_init, name)


@builtin("layer")
def conv2d(ctx, x: Tensor, filters: int, kernel: int, stride: int = 1, padding: Padding = 0, dilation: int = 1,
           groups: int = 1, bias: bool = True, init: Init = "glorot", bias_init: Init = "zeros", name: str = None):
    """2-D convolution (PyTorch's `Conv2d`) with a square `kernel`: `[B, C, H, W]` → `[B, filters, H', W']`,
    H' = ⌊(H + 2·padding - dilation·(kernel - 1) - 1) / stride⌋ + 1. `padding` is zeros on each side, or
    "valid" (none) or "same" (H' = ⌈H / stride⌉, odd padding at the bottom/right, as Keras; for stride 1
    PyTorch's "same"). `groups` splits channels and filters into independent groups. Weight
    `[filters, C/groups, kernel, kernel]`, fans C/groups·kernel² in and filters·kernel² out; bias `[filters]`."""
    return _conv(ctx, 2, "conv2d", x, filters, kernel, stride, padding, dilation, groups, bias, init, bias_init, name)


def _conv_transpose(ctx, n, what, x, filters, kernel, stride, padding, output_padding, dilation, groups, bias, init,
                    bias_init, name):
    channels, spatial, filters, kernel, stride, dilation, groups = _checked(
        ctx, n, what, x, filters, kernel, stride, dilation, groups)
    padding = _whole(ctx, padding, "padding", what, minimum=0)
    output_padding = _whole(ctx, output_padding, "output_padding", what, minimum=0)
    if output_padding >= stride:
        ctx.fail(f"`{what}` output_padding {output_padding} must be smaller than the stride {stride}",
                 arg="output_padding", hint=f"it adds 0 to {stride - 1} rows at the end, choosing among the "
                                           f"output sizes a stride of {stride} allows")
    sizes = [stride * (s - 1) + output_padding + dilation * (kernel - 1) + 1 - 2 * padding for s in spatial]
    if min(sizes) < 1:
        ctx.fail(f"`{what}` padding {padding} removes the whole output of a {dims_text(spatial)} input",
                 arg="padding", hint="padding crops the output on each side; use less")
    layer = ctx.new_layer(what, name)
    taps = kernel ** n
    # weight `[C, filters/groups, *k]` as PyTorch; fans as PyTorch and Keras compute them from that layout
    inputs = [x] + _parameters(ctx, layer, (channels, filters // groups) + (kernel,) * n, filters, init, bias,
                               bias_init, fan_in=filters // groups * taps, fan_out=channels * taps)
    return ctx.b.conv_transpose(*inputs, strides=(stride,) * n, pads=(padding,) * (2 * n), dilations=(dilation,) * n,
                                group=groups, output_padding=(output_padding,) * n)


@builtin("layer")
def conv_transpose1d(ctx, x: Tensor, filters: int, kernel: int, stride: int = 1, padding: int = 0,
                     output_padding: int = 0, dilation: int = 1, groups: int = 1, bias: bool = True,
                     init: Init = "glorot", bias_init: Init = "zeros", name: str = None):
    """Transposed 1-D convolution (PyTorch's `ConvTranspose1d`, the gradient of `conv1d` with respect to
    its input): `[B, C, L]` → `[B, filters, (L - 1)·stride - 2·padding + dilation·(kernel - 1) +
    output_padding + 1]`; `output_padding` (below the stride) adds rows at the end. Weight
    `[C, filters/groups, kernel]`; bias `[filters]`."""
    return _conv_transpose(ctx, 1, "conv_transpose1d", x, filters, kernel, stride, padding, output_padding, dilation,
                           groups, bias, init, bias_init, name)


@builtin("layer")
def conv_transpose2d(ctx, x: Tensor, filters: int, kernel: int, stride: int = 1, padding: int = 0,
                     output_padding: int = 0, dilation: int = 1, groups: int = 1, bias: bool = True,
                     init: Init = "glorot", bias_init: Init = "zeros", name: str = None):
    """Transposed 2-D convolution (PyTorch's `ConvTranspose2d`), the usual upsampling layer of decoders:
    `[B, C, H, W]` → `[B, filters, H', W']`, H' = (H - 1)·stride - 2·padding + dilation·(kernel - 1) +
    output_padding + 1 (kernel 2, stride 2 doubles the size); `output_padding` (below the stride) adds
    rows at the bottom/right. Weight `[C, filters/groups, kernel, kernel]`; bias `[filters]`."""
    return _conv_transpose(ctx, 2, "conv_transpose2d", x, filters, kernel, stride, padding, output_padding, dilation,
                           groups, bias, init, bias_init, name)


# ---- pooling ----------------------------------------------------------------------------------------
def _pool(ctx, n, what, op, x, kernel, stride, padding):
    _, spatial = _spatial_input(ctx, x, n, what)
    kernel = _whole(ctx, kernel, "kernel", what)
    stride = kernel if stride == "kernel" else _whole(ctx, stride, "stride", what)
    padding = _whole(ctx, padding, "padding", what, minimum=0)
    if 2 * padding > kernel:
        ctx.fail(f"`{what}` padding {padding} is more than half its window {kernel}", arg="padding",
                 hint="so that every window holds input, padding can be at most kernel / 2 (as in PyTorch)")
    pads = (padding,) * (2 * n)
    _fits(ctx, x, spatial, pads, kernel, 1, what, noun="window")
    return ctx.b.emit(op, x, kernel=(kernel,) * n, strides=(stride,) * n, pads=pads)


@builtin("layer")
def max_pool1d(ctx, x: Tensor, kernel: int, stride: Stride = "kernel", padding: int = 0):
    """Maximum over windows of `kernel` steps, moved by `stride` (default: the window, so they tile):
    `[B, C, L]` → `[B, C, ⌊(L + 2·padding - kernel) / stride⌋ + 1]`; padding (at most kernel/2) never
    wins. The gradient goes to each window's maximum, shared equally among ties."""
    return _pool(ctx, 1, "max_pool1d", "max_pool", x, kernel, stride, padding)


@builtin("layer")
def max_pool2d(ctx, x: Tensor, kernel: int, stride: Stride = "kernel", padding: int = 0):
    """Maximum over `kernel`×`kernel` windows moved by `stride` (default: the window, so they tile):
    `[B, C, H, W]` → `[B, C, ⌊(H + 2·padding - kernel) / stride⌋ + 1, ...]`; padding (at most
    kernel/2) never wins. The gradient goes to each window's maximum, shared equally among ties."""
    return _pool(ctx, 2, "max_pool2d", "max_pool", x, kernel, stride, padding)


@builtin("layer")
def avg_pool1d(ctx, x: Tensor, kernel: int, stride: Stride = "kernel", padding: int = 0):
    """Mean over windows of `kernel` steps moved by `stride` (default: the window): `[B, C, L]` →
    `[B, C, ⌊(L + 2·padding - kernel) / stride⌋ + 1]`. Padding (at most kernel/2) counts as zeros in
    the mean (PyTorch's default `count_include_pad=True`)."""
    return _pool(ctx, 1, "avg_pool1d", "avg_pool", x, kernel, stride, padding)


@builtin("layer")
def avg_pool2d(ctx, x: Tensor, kernel: int, stride: Stride = "kernel", padding: int = 0):
    """Mean over `kernel`×`kernel` windows moved by `stride` (default: the window): `[B, C, H, W]` →
    `[B, C, ⌊(H + 2·padding - kernel) / stride⌋ + 1, ...]`. Padding (at most kernel/2) counts as zeros
    in the mean (PyTorch's default `count_include_pad=True`)."""
    return _pool(ctx, 2, "avg_pool2d", "avg_pool", x, kernel, stride, padding)


def _global(ctx, x: Node, what: str) -> tuple[int, ...]:
    if x.type.rank < 3:
        ctx.fail(f"`{what}` expects `[batch, channels, ...]` with at least one spatial axis, got `{x.type}`",
                 arg="x", label=f"this input is {x.type.rank}-D")
    if not x.type.is_float:
        ctx.fail(f"`{what}` needs a floating-point input, got `{x.type}`", arg="x")
    return tuple(range(2, x.type.rank))


@builtin("layer")
def global_avg_pool(ctx, x: Tensor):
    """Mean over all spatial positions: `[B, C, ...]` → `[B, C]`."""
    return ctx.b.reduce_mean(x, axes=_global(ctx, x, "global_avg_pool"))


@builtin("layer")
def global_max_pool(ctx, x: Tensor):
    """Maximum over all spatial positions: `[B, C, ...]` → `[B, C]` (the gradient shared among ties)."""
    return ctx.b.reduce_max(x, axes=_global(ctx, x, "global_max_pool"))


@builtin("layer")
def upsample(ctx, x: Tensor, factor: int):
    """Nearest-neighbour upsampling: every spatial axis `factor` times longer, each value repeated
    (`[B, C, H, W]` → `[B, C, factor·H, factor·W]`; any number of spatial axes)."""
    if x.type.rank < 3:
        ctx.fail(f"`upsample` expects `[batch, channels, ...]` with at least one spatial axis, got `{x.type}`",
                 arg="x", label=f"this input is {x.type.rank}-D", hint=_reshape_hint(x.type, 2, "upsample"))
    _spatial_input(ctx, x, x.type.rank - 2, "upsample")
    factor = _whole(ctx, factor, "factor", "upsample")
    return ctx.b.upsample(x, factors=(factor,) * (x.type.rank - 2))
