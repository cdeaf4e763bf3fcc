"""Convolutional layers and pooling on channels-first data (`[batch, channels, length]` in 1-D,
`[batch, channels, height, width]` in 2-D, as in PyTorch and ONNX): conv1d/2d, conv_transpose1d/2d,
max/avg pooling, global pooling and nearest upsampling.

Sizes (kernel, stride, dilation, padding, output_padding, factor) are a whole number for every spatial
axis or a tuple with one per axis (`(3, 5)`; `(3,)` in 1-D), as Keras and PyTorch take them; the ops
under them (`dslc/ops/conv.py`, `dslc/ops/pool.py`) take one per axis. The argument conversion checks
that a size is whole numbers (`Size`); the number of axes is checked here. `padding` and a pool's
`stride` also accept words ("same", "valid"; "kernel"), checked here too.
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
Size = object  # a whole number or a tuple of them (converted by `dslc.lower_calls`), expanded by `_sizes`
Padding = object  # a size, "valid" (= 0) or "same": checked by `_padding`
Stride = object  # a size or "kernel": checked by `_pool`

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


def _sizes(ctx, value, n: int, arg: str, what: str, minimum: int = 1) -> tuple[int, ...]:
    """A size for each of n spatial axes: a whole number for all of them, or a tuple with one per axis."""
    if not isinstance(value, tuple):
        return (_whole(ctx, value, arg, what, minimum),) * n
    if len(value) != n:
        axes = "one number" if n == 1 else f"{n} numbers, one per spatial axis"
        example = f"`{value[0] if value else 3}` or `({value[0] if value else 3},)`" if n == 1 else \
            f"one number for every axis or a tuple such as `({', '.join(['3'] * n)})`"
        ctx.fail(f"`{what}` {arg} needs {axes}, got {len(value)}", arg=arg,
                 label=f"{len(value)} number{'s' * (len(value) != 1)}",
                 hint=f"`{what}` has {n} spatial ax{'is' if n == 1 else 'es'}: give {example}")
    for item in value:
        if item < minimum:
            ctx.fail(f"`{what}` needs `{arg}` of at least {minimum}, got {item} in {describe(value)}", arg=arg)
    return tuple(value)


def _shown(sizes: tuple[int, ...]) -> str:
    """`2` for the same size on every axis, else `(1, 2)`."""
    return str(sizes[0]) if len(set(sizes)) == 1 else f"({', '.join(str(s) for s in sizes)})"


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


def _padding(ctx, value, n: int, spatial, kernel, stride, dilation, what: str) -> tuple[int, ...]:
    """ONNX pads (all begins, then all ends) for `padding` = a size, "valid" or "same"."""
    if isinstance(value, str):
        if value == "valid":
            return (0,) * (2 * n)
        if value == "same":
            # as Keras/TensorFlow, axis by axis: ceil(size / stride) outputs, the odd padding row at the
            # end (for stride 1 that keeps the size, as PyTorch's padding="same")
            total = [max((-(-size // s) - 1) * s + d * (k - 1) + 1 - size, 0)
                     for size, k, s, d in zip(spatial, kernel, stride, dilation)]
            return tuple(t // 2 for t in total) + tuple(t - t // 2 for t in total)
        ctx.fail(f"`{what}` padding must be a number, \"valid\" or \"same\", got \"{value}\"", arg="padding",
                 hint="a number pads that many zeros on each side; \"same\" keeps the size (at stride 1)")
    amount = _sizes(ctx, value, n, "padding", what, minimum=0)
    return amount + amount


def _fits(ctx, x: Node, spatial, pads, kernel, dilation, what: str, noun: str = "kernel"):
    """A diagnostic at `kernel` when a window does not fit the padded input."""
    n = len(spatial)
    padded = [spatial[i] + pads[i] + pads[n + i] for i in range(n)]
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    if any(s > p for s, p in zip(span, padded)):
        window = dims_text(kernel)
        size = f"{window} with dilation {_shown(dilation)} spans {dims_text(span)}, more than" \
            if max(dilation) > 1 else f"{window} is larger than"
        hint = _channels_last_hint(x.type, max(span)) or (
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
    filters = _whole(ctx, filters, "filters", what)
    kernel, stride, dilation = (_sizes(ctx, value, n, arg, what) for value, arg in
                                ((kernel, "kernel"), (stride, "stride"), (dilation, "dilation")))
    groups = _whole(ctx, groups, "groups", what)
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
    taps = math.prod(kernel)
    # PyTorch's and Keras' fans: a filter reads channels/groups · kernel inputs; fan_out = filters · kernel
    inputs = [x] + _parameters(ctx, layer, (filters, channels // groups) + kernel, filters, init, bias,
                               bias_init, fan_in=channels // groups * taps, fan_out=filters * taps)
    return ctx.b.conv(*inputs, strides=stride, pads=pads, dilations=dilation, group=groups)


@builtin("layer")
def conv1d(ctx, x: Tensor, filters: int, kernel: Size, *, stride: Size = 1, padding: Padding = 0, dilation: Size = 1,
           groups: int = 1, bias: bool = True, init: Init = "glorot", bias_init: Init = "zeros", name: str = None):
    """1-D convolution (cross-correlation, as PyTorch's `Conv1d`): `[B, C, L]` → `[B, filters, L']`,
    L' = ⌊(L + 2·padding - dilation·(kernel - 1) - 1) / stride⌋ + 1. `padding` is zeros on each side, or
    "valid" (none) or "same" (L' = ⌈L / stride⌉, the odd zero at the end, as Keras). `groups` splits
    channels and filters into independent groups. Weight `[filters, C/groups, kernel]`, fans
    C/groups·kernel in and filters·kernel out; bias `[filters]`. Channels come first, unlike Keras' `Conv1D`:
    an embedding's `[B, T, D]` goes in as `transpose(e, 0, 2, 1)` (fed in directly, a warning says its T steps
    would be the channels)."""
    _warn_steps_as_channels(ctx, x)
    return _conv(ctx, 1, "conv1d", x, filters, kernel, stride, padding, dilation, groups, bias, init, bias_init, name)


def _warn_steps_as_channels(ctx, x: Tensor) -> None:
    """Warn when `x` is an embedding's output: `[B, T, D]`, steps first, as Keras' Conv1D reads it, while
    conv1d reads `[B, C, L]` (PyTorch's layout) and would take the T steps as channels."""
    if x.op == "gather_rows":
        ctx.warn(f"conv1d reads `[B, C, L]` (channels first, as PyTorch's Conv1d), but this is an embedding's "
                 f"`{x.type}` (steps first, as Keras' Conv1D reads it): its {x.type.shape[1]} steps would be the "
                 f"channels", arg="x", label="an embedding's output",
                 hint="put the embedding's features first: `conv1d(transpose(e, 0, 2, 1), ...)`")


@builtin("layer")
def conv2d(ctx, x: Tensor, filters: int, kernel: Size, *, stride: Size = 1, padding: Padding = 0, dilation: Size = 1,
           groups: int = 1, bias: bool = True, init: Init = "glorot", bias_init: Init = "zeros", name: str = None):
    """2-D convolution (PyTorch's `Conv2d`): `[B, C, H, W]` → `[B, filters, H', W']`, H' = ⌊(H + 2·padding -
    dilation·(kernel - 1) - 1) / stride⌋ + 1, and W' alike. `kernel`, `stride`, `padding` and `dilation` are
    one number for both axes or one per axis, (height, width): `conv2d(16, (3, 5), stride = (2, 1))`.
    `padding` is zeros on each side, or "valid" (none) or "same" (H' = ⌈H / stride⌉ on each axis, odd
    padding at the bottom/right, as Keras; for stride 1 PyTorch's "same"). `groups` splits channels and
    filters into independent groups. Weight `[filters, C/groups, kh, kw]`, fans C/groups·kh·kw in and
    filters·kh·kw out; bias `[filters]`."""
    return _conv(ctx, 2, "conv2d", x, filters, kernel, stride, padding, dilation, groups, bias, init, bias_init, name)


def _conv_transpose(ctx, n, what, x, filters, kernel, stride, padding, output_padding, dilation, groups, bias, init,
                    bias_init, name):
    channels, spatial, filters, kernel, stride, dilation, groups = _checked(
        ctx, n, what, x, filters, kernel, stride, dilation, groups)
    padding = _sizes(ctx, padding, n, "padding", what, minimum=0)
    output_padding = _sizes(ctx, output_padding, n, "output_padding", what, minimum=0)
    if any(o >= s for o, s in zip(output_padding, stride)):
        o, s = next((o, s) for o, s in zip(output_padding, stride) if o >= s)
        ctx.fail(f"`{what}` output_padding {o} must be smaller than the stride {s}",
                 arg="output_padding", hint=f"it adds 0 to {s - 1} rows at the end, choosing among the "
                                           f"output sizes a stride of {s} allows")
    sizes = [s * (size - 1) + o + d * (k - 1) + 1 - 2 * p
             for size, k, s, p, o, d in zip(spatial, kernel, stride, padding, output_padding, dilation)]
    if min(sizes) < 1:
        ctx.fail(f"`{what}` padding {_shown(padding)} removes the whole output of a {dims_text(spatial)} input",
                 arg="padding", hint="padding crops the output on each side; use less")
    layer = ctx.new_layer(what, name)
    taps = math.prod(kernel)
    # weight `[C, filters/groups, *k]` as PyTorch; fans as PyTorch and Keras compute them from that layout
    inputs = [x] + _parameters(ctx, layer, (channels, filters // groups) + kernel, filters, init, bias,
                               bias_init, fan_in=filters // groups * taps, fan_out=channels * taps)
    return ctx.b.conv_transpose(*inputs, strides=stride, pads=padding + padding, dilations=dilation,
                                group=groups, output_padding=output_padding)


@builtin("layer")
def conv_transpose1d(ctx, x: Tensor, filters: int, kernel: Size, *, stride: Size = 1, padding: Size = 0,
                     output_padding: Size = 0, dilation: Size = 1, groups: int = 1, bias: bool = True,
                     init: Init = "glorot", bias_init: Init = "zeros", name: str = None):
    """Transposed 1-D convolution (PyTorch's `ConvTranspose1d`, the gradient of `conv1d` with respect to
    its input): `[B, C, L]` → `[B, filters, (L - 1)·stride - 2·padding + dilation·(kernel - 1) +
    output_padding + 1]`; `output_padding` (below the stride) adds rows at the end. Weight
    `[C, filters/groups, kernel]`; bias `[filters]`."""
    return _conv_transpose(ctx, 1, "conv_transpose1d", x, filters, kernel, stride, padding, output_padding, dilation,
                           groups, bias, init, bias_init, name)


@builtin("layer")
def conv_transpose2d(ctx, x: Tensor, filters: int, kernel: Size, *, stride: Size = 1, padding: Size = 0,
                     output_padding: Size = 0, dilation: Size = 1, groups: int = 1, bias: bool = True,
                     init: Init = "glorot", bias_init: Init = "zeros", name: str = None):
    """Transposed 2-D convolution (PyTorch's `ConvTranspose2d`), the usual upsampling layer of decoders:
    `[B, C, H, W]` → `[B, filters, H', W']`, H' = (H - 1)·stride - 2·padding + dilation·(kernel - 1) +
    output_padding + 1, and W' alike (kernel 2, stride 2 doubles the size); the sizes are one number or
    one per axis, as in `(4, 3)`. `output_padding` (below the stride) adds rows at the bottom/right.
    Weight `[C, filters/groups, kh, kw]`; bias `[filters]`."""
    return _conv_transpose(ctx, 2, "conv_transpose2d", x, filters, kernel, stride, padding, output_padding, dilation,
                           groups, bias, init, bias_init, name)


# ---- pooling ----------------------------------------------------------------------------------------
def _pool(ctx, n, what, op, x, kernel, stride, padding):
    _, spatial = _spatial_input(ctx, x, n, what)
    kernel = _sizes(ctx, kernel, n, "kernel", what)
    stride = kernel if stride == "kernel" else _sizes(ctx, stride, n, "stride", what)
    padding = _sizes(ctx, padding, n, "padding", what, minimum=0)
    if any(2 * p > k for p, k in zip(padding, kernel)):
        p, k = next((p, k) for p, k in zip(padding, kernel) if 2 * p > k)
        ctx.fail(f"`{what}` padding {p} is more than half its window {k}", arg="padding",
                 hint="so that every window holds input, padding can be at most kernel / 2 (as in PyTorch)")
    pads = padding + padding
    _fits(ctx, x, spatial, pads, kernel, (1,) * n, what, noun="window")
    return ctx.b.emit(op, x, kernel=kernel, strides=stride, pads=pads)


@builtin("layer")
def max_pool1d(ctx, x: Tensor, kernel: Size, *, stride: Stride = "kernel", padding: Size = 0):
    """Maximum over windows of `kernel` steps, moved by `stride` (default: the window, so they tile):
    `[B, C, L]` → `[B, C, ⌊(L + 2·padding - kernel) / stride⌋ + 1]`; padding (at most kernel/2) never
    wins. The gradient goes to each window's maximum, shared equally among ties."""
    return _pool(ctx, 1, "max_pool1d", "max_pool", x, kernel, stride, padding)


@builtin("layer")
def max_pool2d(ctx, x: Tensor, kernel: Size, *, stride: Stride = "kernel", padding: Size = 0):
    """Maximum over windows of `kernel` (`2` for 2×2, or `(2, 1)`) moved by `stride` (default: the window,
    so they tile): `[B, C, H, W]` → `[B, C, ⌊(H + 2·padding - kernel) / stride⌋ + 1, ...]` on each axis;
    padding (at most kernel/2) never wins. The gradient goes to each window's maximum, shared equally
    among ties."""
    return _pool(ctx, 2, "max_pool2d", "max_pool", x, kernel, stride, padding)


@builtin("layer")
def avg_pool1d(ctx, x: Tensor, kernel: Size, *, stride: Stride = "kernel", padding: Size = 0):
    """Mean over windows of `kernel` steps moved by `stride` (default: the window): `[B, C, L]` →
    `[B, C, ⌊(L + 2·padding - kernel) / stride⌋ + 1]`. Padding (at most kernel/2) counts as zeros in
    the mean (PyTorch's default `count_include_pad=True`)."""
    return _pool(ctx, 1, "avg_pool1d", "avg_pool", x, kernel, stride, padding)


@builtin("layer")
def avg_pool2d(ctx, x: Tensor, kernel: Size, *, stride: Stride = "kernel", padding: Size = 0):
    """Mean over windows of `kernel` (`2` for 2×2, or `(3, 2)`) moved by `stride` (default: the window):
    `[B, C, H, W]` → `[B, C, ⌊(H + 2·padding - kernel) / stride⌋ + 1, ...]` on each axis. Padding (at
    most kernel/2) counts as zeros in the mean (PyTorch's default `count_include_pad=True`)."""
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
def upsample(ctx, x: Tensor, factor: Size):
    """Nearest-neighbour upsampling: every spatial axis `factor` times longer, each value repeated
    (`[B, C, H, W]` → `[B, C, factor·H, factor·W]`; any number of spatial axes); `factor` is one number
    or one per spatial axis, as in `upsample((2, 1))`."""
    if x.type.rank < 3:
        ctx.fail(f"`upsample` expects `[batch, channels, ...]` with at least one spatial axis, got `{x.type}`",
                 arg="x", label=f"this input is {x.type.rank}-D", hint=_reshape_hint(x.type, 2, "upsample"))
    _spatial_input(ctx, x, x.type.rank - 2, "upsample")
    return ctx.b.upsample(x, factors=_sizes(ctx, factor, x.type.rank - 2, "factor", "upsample"))
