"""Pooling and nearest upsampling over `[N, C, *spatial]` tensors: `max_pool`, `avg_pool`, `upsample`.

Windows are `kernel` wide, move by `strides`, over an input padded by `pads` (ONNX order: all begins,
then all ends); every window must hold at least one input element (pads below the kernel). `avg_pool`
counts the padding in its divisor (PyTorch's default `count_include_pad=True`): it is a depthwise
convolution with the constant kernel 1/K.

The max-pool gradient goes to the element that holds its window's maximum, shared equally among ties
(as `reduce_max` does; PyTorch gives all of it to the first, which agrees wherever there is no tie).
The ways of routing it, measured on LeNet's first pool (`[64, 6, 28, 28]`, 2×2, float32, CPU time of
one thread; examples/cnn_digits/bench_lenet.py):
- `MaxPool` with its indices output + `ScatterElements(add)`: 1.25-1.29 ms;
- windows that tile the input (stride = kernel, no padding): the mask `x == upsample(y)`, the tie count
  from an average pool of the mask — 0.25 ms (0.16 ms without sharing ties): taken for such windows;
- any windows: the K taps of every window as channels (a grouped `conv` with one-hot filters), the
  mask against y, and a `conv_transpose` with the same filters to send each share back — 0.40 ms:
  taken for all other windows (overlapping, padded, strided past the window).
"""
from __future__ import annotations

import math

import numpy as np

from dslc.ir.graph import OpError
from dslc.ir.types import TensorType
from dslc.ops.conv_math import (
    conv_numpy,
    dims_text,
    geometry,
    im2col,
    leftover,
    one_hot_taps,
    out_size,
    pad_numpy,
    static_spatial,
    torch_pad,
    window_slices,
)
from dslc.ops.registry import OpDef, Sample, expect_float, op


def window_geometry(x: TensorType, kernel, strides, pads, what: str):
    """(kernel, strides, pads, output spatial sizes), checked: every window holds an input element."""
    expect_float(x)
    if x.rank < 3:
        raise OpError(f"{what} needs an input `[N, C, *spatial]` of rank 3 or more, got `{x}`")
    static_spatial(x, what)
    n = x.rank - 2
    if kernel is None or len(kernel) != n or min(kernel) < 1:
        raise OpError(f"{what} needs a window size of at least 1 for each of the {n} spatial axes")
    strides, pads, _ = geometry(n, strides if strides is not None else kernel, pads, None)
    if any(pads[i] >= kernel[i] or pads[n + i] >= kernel[i] for i in range(n)):
        raise OpError(f"{what} padding {list(pads)} must be smaller than the window {dims_text(kernel)}")
    padded = [x.shape[2 + i] + pads[i] + pads[n + i] for i in range(n)]
    if any(k > p for k, p in zip(kernel, padded)):
        raise OpError(f"{what} window {dims_text(kernel)} is larger than its padded input {dims_text(padded)}")
    out = tuple(out_size(x.shape[2 + i], kernel[i], strides[i], pads[i], pads[n + i], 1) for i in range(n))
    return tuple(kernel), strides, pads, out


def tiles(x: TensorType, kernel, strides, pads) -> bool:
    """Whether the windows tile the input without overlap or padding (a remainder may be left over)."""
    return tuple(strides) == tuple(kernel) and not any(pads)


def _crop_to_windows(b, x, kernel, out):
    """x without the rows after the last window (when the windows tile it)."""
    for i, (k, o) in enumerate(zip(kernel, out)):
        if x.type.shape[2 + i] != k * o:
            x = b.slice(x, axis=2 + i, start=0, end=k * o)
    return x


def _pad_to(b, g, like):
    """g zero-padded at the end of each spatial axis up to the shape of `like`."""
    for i in range(2, like.type.rank):
        extra = like.type.shape[i] - g.type.shape[i]
        if extra:
            g = b.pad(g, axis=i, before=0, after=extra)
    return g


def _window_views(x, kernel, strides, pads, fill):
    """numpy: `[N, C, K, *out]` — the K taps of every window of x padded with `fill`."""
    n = x.ndim - 2
    out = [out_size(x.shape[2 + i], kernel[i], strides[i], pads[i], pads[n + i], 1) for i in range(n)]
    xp = pad_numpy(x, pads, fill)
    return np.stack([xp[v] for v in window_slices(xp.shape, kernel, strides, (1,) * n, out)], axis=2)


@op("max_pool", kernel=None, strides=None, pads=None)
class MaxPool(OpDef):
    """y = the maximum of each window (padding never wins); `strides` default to the window (ONNX
    MaxPool without its indices output)."""

    samples = [
        Sample(((2, 3, 8),), {"kernel": (2,)}),
        Sample(((2, 2, 9),), {"kernel": (3,), "strides": (2,), "pads": (1, 1)}),
        Sample(((2, 2, 4, 6),), {"kernel": (2, 2)}),
        Sample(((2, 2, 5, 7),), {"kernel": (2, 3)}),
        Sample(((1, 2, 5, 5),), {"kernel": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}),
        Sample(((2, 1, 6, 5),), {"kernel": (2, 2), "strides": (1, 1)}),
        Sample(((1, 2, 6, 7),), {"kernel": (3, 2), "strides": (2, 3), "pads": (0, 1, 2, 0)}),
    ]

    def infer(self, x, *, kernel, strides, pads):
        _, _, _, out = window_geometry(x, kernel, strides, pads, "max pooling")
        return x.with_shape(x.shape[:2] + out)

    def lower(self, e, x, *, kernel, strides, pads):
        kernel, strides, pads, _ = window_geometry(x.type, kernel, strides, pads, "max pooling")
        return e.node("MaxPool", x, kernel_shape=list(kernel), strides=list(strides), pads=list(pads))

    def torch(self, T, x, *, kernel, strides, pads):
        kernel, strides, pads, _ = window_geometry(TensorType("float64", tuple(int(d) for d in x.shape)), kernel, strides, pads, "")
        pool = getattr(T.nn.functional, f"max_pool{x.dim() - 2}d")
        return pool(torch_pad(T, x, pads, -float("inf")), list(kernel), list(strides))

    def evaluate(self, x, *, kernel, strides, pads):
        kernel, strides, pads, _ = window_geometry(TensorType("float64", x.shape), kernel, strides, pads, "")
        return _window_views(x, kernel, strides, pads, -np.inf).max(axis=2)

    def grad(self, b, g, out, x, *, kernel, strides, pads):
        kernel, strides, pads, shape = window_geometry(x.type, kernel, strides, pads, "max pooling")
        dtype = x.type.dtype
        if tiles(x.type, kernel, strides, pads):
            xc = _crop_to_windows(b, x, kernel, shape)
            mask = b.cast(b.equal(xc, b.upsample(out, factors=kernel)), to=dtype)
            ties = b.avg_pool(mask, kernel=kernel, strides=kernel)  # the fraction of each window at the max
            share = b.div(g, b.mul(ties, b.const(math.prod(kernel), dtype)))
            return [_pad_to(b, b.mul(mask, b.upsample(share, factors=kernel)), x)]
        # general windows: the taps as channels, [N, C·K, *out] -> [N, C, K, *out]
        n, channels, k = x.type.rank - 2, x.type.shape[1], math.prod(kernel)
        filters = b.const(one_hot_taps(channels, kernel, dtype), dtype)
        taps = b.reshape(b.conv(x, filters, strides=strides, pads=pads, group=channels), shape=(0, channels, k) + shape)
        mask = b.cast(b.equal(taps, b.unsqueeze(out, axes=(2,))), to=dtype)
        if any(pads):  # padded taps read 0, which may equal a maximum of 0: drop them
            ones = np.ones((1, 1) + x.type.shape[2:])
            inside = conv_numpy(ones, one_hot_taps(1, kernel, "float64"), strides=strides, pads=pads)
            mask = b.mul(mask, b.const(inside.reshape((1, 1, k) + shape), dtype))
        ties = b.reduce_sum(mask, axes=(2,), keepdims=True)
        shares = b.mul(mask, b.div(b.unsqueeze(g, axes=(2,)), ties))
        unreached = tuple(leftover(x.type.shape[2 + i], kernel[i], strides[i], pads[i], pads[n + i], 1) for i in range(n))
        # every channel sends its shares back through the same taps: one conv_transpose over the channels
        # as images ([N·C, K, *out] -> [N·C, 1, *in]) rather than one with `channels` groups, which
        # onnx.reference (1.23) computes only for one channel in and one out per group
        per_channel = b.reshape(b.flatten(shares, axis=2), shape=(0, k) + shape)
        back = b.conv_transpose(per_channel, b.const(one_hot_taps(1, kernel, dtype), dtype), strides=strides, pads=pads,
                                output_padding=unreached)
        return [b.reshape_like(back, x)]


@op("avg_pool", kernel=None, strides=None, pads=None)
class AvgPool(OpDef):
    """y = the mean of each window, padding counted as zeros (ONNX AveragePool with
    count_include_pad=1, PyTorch's default); `strides` default to the window. Float64: im2col + ReduceSum."""

    samples = [
        Sample((("positive", (2, 3, 8)),), {"kernel": (2,)}),
        Sample((("positive", (2, 2, 9)),), {"kernel": (3,), "strides": (2,), "pads": (1, 1)}),
        Sample((("positive", (2, 2, 5, 7)),), {"kernel": (2, 3)}),
        Sample((("positive", (1, 2, 5, 5)),), {"kernel": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}),
        Sample((("positive", (1, 2, 6, 7)),), {"kernel": (3, 2), "strides": (2, 3), "pads": (0, 1, 2, 0)}),
    ]

    def infer(self, x, *, kernel, strides, pads):
        _, _, _, out = window_geometry(x, kernel, strides, pads, "average pooling")
        return x.with_shape(x.shape[:2] + out)

    def lower(self, e, x, *, kernel, strides, pads):
        kernel, strides, pads, _ = window_geometry(x.type, kernel, strides, pads, "average pooling")
        if x.type.dtype == "float32":
            return e.node("AveragePool", x, kernel_shape=list(kernel), strides=list(strides), pads=list(pads),
                          count_include_pad=1)
        cols, _ = im2col(e, x.name, x.type.shape[2:], kernel, strides, pads, (1,) * len(kernel))
        total = e.node("ReduceSum", cols, e.int64s([2]), keepdims=0)
        return e.node("Div", total, e.scalar(math.prod(kernel), x.type.dtype))

    def torch(self, T, x, *, kernel, strides, pads):
        kernel, strides, pads, _ = window_geometry(TensorType("float64", tuple(int(d) for d in x.shape)), kernel, strides, pads, "")
        pool = getattr(T.nn.functional, f"avg_pool{x.dim() - 2}d")
        return pool(torch_pad(T, x, pads), list(kernel), list(strides))

    def evaluate(self, x, *, kernel, strides, pads):
        kernel, strides, pads, _ = window_geometry(TensorType("float64", x.shape), kernel, strides, pads, "")
        return _window_views(x, kernel, strides, pads, 0.0).sum(axis=2) / x.dtype.type(math.prod(kernel))

    def grad(self, b, g, out, x, *, kernel, strides, pads):
        kernel, strides, pads, _ = window_geometry(x.type, kernel, strides, pads, "average pooling")
        dtype, n, channels = x.type.dtype, x.type.rank - 2, x.type.shape[1]
        inverse = b.const(1.0 / math.prod(kernel), dtype)
        if tiles(x.type, kernel, strides, pads):
            return [_pad_to(b, b.mul(b.upsample(g, factors=kernel), inverse), x)]
        spread = b.const(np.ones((channels, 1) + kernel) / math.prod(kernel), dtype)
        unreached = tuple(leftover(x.type.shape[2 + i], kernel[i], strides[i], pads[i], pads[n + i], 1) for i in range(n))
        return [b.conv_transpose(g, spread, strides=strides, pads=pads, group=channels, output_padding=unreached)]


@op("upsample", factors=None)
class Upsample(OpDef):
    """y = x repeated `factors[i]` times along spatial axis i (nearest neighbour):
    y[n, c, i, j] = x[n, c, i // f0, j // f1] (ONNX Resize, nearest; float64: Reshape + Expand)."""

    samples = [Sample(((2, 3, 4),), {"factors": (2,)}), Sample(((2, 2, 3, 2),), {"factors": (2, 3)})]

    def infer(self, x, *, factors):
        expect_float(x)
        if x.rank < 3:
            raise OpError(f"`upsample` needs an input `[N, C, *spatial]` of rank 3 or more, got `{x}`")
        if factors is None or len(factors) != x.rank - 2 or min(factors) < 1:
            raise OpError(f"`upsample` needs a factor of at least 1 for each of the {x.rank - 2} spatial axes")
        static_spatial(x, "`upsample`")
        return x.with_shape(x.shape[:2] + tuple(d * f for d, f in zip(x.shape[2:], factors)))

    def lower(self, e, x, *, factors):
        n = x.type.rank - 2
        spatial = x.type.shape[2:]
        if x.type.dtype == "float32":  # measured: Resize is ~15x faster than Reshape + Expand here
            scales = e.const(np.array([1.0, 1.0] + [float(f) for f in factors], dtype=np.float32))
            return e.node("Resize", x, "", scales, mode="nearest", nearest_mode="floor",
                          coordinate_transformation_mode="asymmetric")
        spread = e.node("Unsqueeze", x, e.int64s([3 + 2 * i for i in range(n)]))
        target = [1, 1] + [v for i in range(n) for v in (spatial[i], factors[i])]
        y = e.node("Expand", spread, e.int64s(target))
        return e.node("Reshape", y, e.int64s([0, x.type.shape[1]] + [spatial[i] * factors[i] for i in range(n)]))

    def torch(self, T, x, *, factors):
        for i, f in enumerate(factors):
            x = x.repeat_interleave(f, dim=2 + i)
        return x

    def evaluate(self, x, *, factors):
        for i, f in enumerate(factors):
            x = np.repeat(x, f, axis=2 + i)
        return x

    def grad(self, b, g, out, x, *, factors):
        # each input element is copied to one window: its gradient is the window's sum
        total = b.const(math.prod(factors), x.type.dtype)
        return [b.mul(b.avg_pool(g, kernel=tuple(factors), strides=tuple(factors)), total)]
