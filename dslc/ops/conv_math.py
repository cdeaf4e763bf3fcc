"""Convolution arithmetic shared by the conv and pool ops: output geometry, numpy and PyTorch
references, and the exact standard-op lowering used for float64 (ONNX Runtime has no float64 Conv)."""
from __future__ import annotations

import itertools
import math

import numpy as np

from dslc.ir.graph import OpError
from dslc.ir.types import TensorType, numpy_dtype
from dslc.ops.registry import expect_float


# ---- geometry -------------------------------------------------------------------------------------
def geometry(n: int, strides=None, pads=None, dilations=None):
    """(strides, pads, dilations) as full tuples for `n` spatial axes (defaults 1, 0, 1)."""
    strides = tuple(strides) if strides is not None else (1,) * n
    pads = tuple(pads) if pads is not None else (0,) * (2 * n)
    dilations = tuple(dilations) if dilations is not None else (1,) * n
    if len(strides) != n or len(pads) != 2 * n or len(dilations) != n:
        raise OpError(f"convolution geometry for {n} spatial axes needs {n} strides, {2 * n} pads and {n} dilations")
    if min(strides) < 1 or min(dilations) < 1 or min(pads) < 0:
        raise OpError("strides and dilations must be at least 1 and pads at least 0")
    return strides, pads, dilations


def out_size(size: int, k: int, stride: int, before: int, after: int, dilation: int) -> int:
    """Positions of a window of `k` taps `dilation` apart, moved by `stride` over `size` + padding."""
    return (size + before + after - dilation * (k - 1) - 1) // stride + 1


def leftover(size: int, k: int, stride: int, before: int, after: int, dilation: int) -> int:
    """Padded input rows after the last window (never read): the `output_padding` of the adjoint."""
    return (size + before + after - dilation * (k - 1) - 1) % stride


def dims_text(dims) -> str:
    return "×".join(str(d) for d in dims)


def static_spatial(x: TensorType, what: str):
    for d in x.shape[1:]:
        if not isinstance(d, int):
            raise OpError(f"{what} needs known channel and spatial sizes, got `{x}`")


def conv_output_spatial(x: TensorType, kernel, strides, pads, dilations, what: str) -> tuple[int, ...]:
    n = len(kernel)
    spatial = x.shape[2:]
    padded = [spatial[i] + pads[i] + pads[n + i] for i in range(n)]
    span = [dilations[i] * (kernel[i] - 1) + 1 for i in range(n)]
    if any(s > p for s, p in zip(span, padded)):
        raise OpError(f"{what} window {dims_text(span)} is larger than its padded input {dims_text(padded)}")
    return tuple(out_size(spatial[i], kernel[i], strides[i], pads[i], pads[n + i], dilations[i]) for i in range(n))


def _check_operands(x: TensorType, w: TensorType, bias, what: str):
    expect_float(x)
    if x.rank < 3:
        raise OpError(f"{what} needs an input `[N, C, *spatial]` of rank 3 or more, got `{x}`")
    if w.dtype != x.dtype or w.rank != x.rank:
        raise OpError(f"{what} weights `{w}` do not fit the input `{x}` (same dtype and rank)")
    static_spatial(x, what)
    if not w.is_static:
        raise OpError(f"{what} needs weights of known shape, got `{w}`")
    if bias is not None and (bias.dtype != x.dtype or bias.rank != 1):
        raise OpError(f"{what} bias must be a vector of the input's dtype, got `{bias}`")


# ---- numpy semantics (the definitions) --------------------------------------------------------------
def _offsets(kernel):
    return list(itertools.product(*[range(k) for k in kernel]))


def window_slices(padded_shape, kernel, strides, dilations, out):
    """For each kernel offset (row-major), the index selecting the strided window view of a padded array."""
    views = []
    for offset in _offsets(kernel):
        index = [slice(None), slice(None)]
        for i, o in enumerate(offset):
            start = o * dilations[i]
            index.append(slice(start, start + strides[i] * (out[i] - 1) + 1, strides[i]))
        views.append(tuple(index))
    return views


def one_hot_taps(channels: int, kernel, dtype: str) -> np.ndarray:
    """Filters `[C·K, 1, *kernel]`: filter c·K + k picks tap k of channel c (a grouped conv with them
    lays the K taps of every window out as channels)."""
    k = math.prod(kernel)
    taps = np.zeros((channels * k, 1, k), dtype=numpy_dtype(dtype))
    for c in range(channels):
        taps[c * k + np.arange(k), 0, np.arange(k)] = 1
    return taps.reshape((channels * k, 1) + tuple(kernel))


def pad_numpy(x, pads, value=0.0):
    n = x.ndim - 2
    return np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[n + i]) for i in range(n)], constant_values=value)


def conv_numpy(x, w, b=None, *, strides=None, pads=None, dilations=None, group=1):
    """y[n, f, o] = b[f] + Σ_{c in f's group, k} w[f, c, k] · xpad[n, c, o·stride + k·dilation]"""
    n = x.ndim - 2
    strides, pads, dilations = geometry(n, strides, pads, dilations)
    kernel = w.shape[2:]
    out = [out_size(x.shape[2 + i], kernel[i], strides[i], pads[i], pads[n + i], dilations[i]) for i in range(n)]
    xp = pad_numpy(x, pads)
    f_g, c_g = w.shape[0] // group, w.shape[1]
    y = np.zeros((x.shape[0], w.shape[0], *out), dtype=x.dtype)
    for offset, view in zip(_offsets(kernel), window_slices(xp.shape, kernel, strides, dilations, out)):
        patch = xp[view]  # [N, C, *out]
        for j in range(group):
            wk = w[(slice(j * f_g, (j + 1) * f_g), slice(None)) + offset]  # [F/g, C/g]
            y[:, j * f_g:(j + 1) * f_g] += np.einsum("fc,nc...->nf...", wk, patch[:, j * c_g:(j + 1) * c_g])
    if b is not None:
        y += b.reshape((1, -1) + (1,) * n)
    return y


def conv_transpose_numpy(x, w, b=None, *, strides=None, pads=None, dilations=None, group=1, output_padding=None):
    """y = the adjoint of `conv` in its input: every x[n, c, i] scatters x·w[c, f, k] to position
    i·stride + k·dilation - pad_begin of output channel f; the output is
    stride·(in - 1) + output_padding + dilation·(k - 1) + 1 - pad_begin - pad_end long."""
    n = x.ndim - 2
    strides, pads, dilations = geometry(n, strides, pads, dilations)
    output_padding = tuple(output_padding) if output_padding is not None else (0,) * n
    kernel = w.shape[2:]
    c_g, f_g = w.shape[0] // group, w.shape[1]
    full = [strides[i] * (x.shape[2 + i] - 1) + dilations[i] * (kernel[i] - 1) + 1 + output_padding[i] for i in range(n)]
    y = np.zeros((x.shape[0], f_g * group, *full), dtype=x.dtype)
    for offset in _offsets(kernel):
        index = [slice(None), slice(None)]
        for i, o in enumerate(offset):
            start = o * dilations[i]
            index.append(slice(start, start + strides[i] * (x.shape[2 + i] - 1) + 1, strides[i]))
        for j in range(group):
            wk = w[(slice(j * c_g, (j + 1) * c_g), slice(None)) + offset]  # [C/g, F/g]
            contrib = np.einsum("cf,nc...->nf...", wk, x[:, j * c_g:(j + 1) * c_g])
            y[(slice(None), slice(j * f_g, (j + 1) * f_g)) + tuple(index[2:])] += contrib
    crop = (slice(None), slice(None)) + tuple(slice(pads[i], full[i] - pads[n + i]) for i in range(n))
    y = y[crop]
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * n)
    return np.ascontiguousarray(y)


def conv_weight_grad_numpy(x, g, *, kernel, strides=None, pads=None, dilations=None, group=1):
    """dw[f, c, k] = Σ_{n, o} g[n, f, o] · xpad[n, group(f)·C/g + c, o·stride + k·dilation]"""
    n = x.ndim - 2
    strides, pads, dilations = geometry(n, strides, pads, dilations)
    out = g.shape[2:]
    xp = pad_numpy(x, pads)
    f_g, c_g = g.shape[1] // group, x.shape[1] // group
    dw = np.zeros((g.shape[1], c_g, *kernel), dtype=x.dtype)
    for offset, view in zip(_offsets(kernel), window_slices(xp.shape, kernel, strides, dilations, out)):
        patch = xp[view]
        for j in range(group):
            gj = g[:, j * f_g:(j + 1) * f_g].reshape(g.shape[0], f_g, -1)
            xj = patch[:, j * c_g:(j + 1) * c_g].reshape(x.shape[0], c_g, -1)
            dw[(slice(j * f_g, (j + 1) * f_g), slice(None)) + offset] = np.einsum("nfp,ncp->fc", gj, xj)
    return dw


# ---- PyTorch twins (`T` is the torch module) ------------------------------------------------------
def torch_pad(T, x, pads, value: float = 0.0):
    """x padded along its spatial axes by ONNX-style `pads` (all begins, then all ends)."""
    n = x.dim() - 2
    widths = []
    for i in reversed(range(n)):  # torch lists the last axis first
        widths += [pads[i], pads[n + i]]
    return T.nn.functional.pad(x, widths, value=value) if any(widths) else x


def torch_conv(T, x, w, b, strides, pads, dilations, group):
    n = x.dim() - 2
    return T.convolution(torch_pad(T, x, pads), w, b, list(strides), [0] * n, list(dilations), False, [0] * n, group)


# ---- the ops --------------------------------------------------------------------------------------
def P(*shape):
    """A sample input of positive values: every output is then a sum without cancellation, which float32
    meets element-wise to a few ulp (the generic float32 check is relative per element)."""
    return ("positive", shape)


# ---- float64 lowering from standard ops (ONNX Runtime has no float64 Conv/ConvTranspose) --------------
def pad_spatial(e, x: str, n: int, before, after, value: float | None = None, dtype: str = "float64") -> str:
    """Zero (or `value`) padding of the last `n` axes of a rank n+2 tensor; negative amounts crop."""
    crop_lo = [max(-b, 0) for b in before]
    crop_hi = [max(-a, 0) for a in after]
    if any(crop_lo) or any(crop_hi):
        big = np.iinfo(np.int64).max
        x = e.node("Slice", x, e.int64s(crop_lo), e.int64s([-c if c else big for c in crop_hi]),
                   e.int64s(list(range(2, n + 2))))
    grow_lo, grow_hi = [max(b, 0) for b in before], [max(a, 0) for a in after]
    if any(grow_lo) or any(grow_hi):
        args = [x, e.int64s([0, 0] + grow_lo + [0, 0] + grow_hi)]
        if value is not None:
            args.append(e.scalar(value, dtype))
        x = e.node("Pad", *args)
    return x


def im2col(e, x: str, spatial, kernel, strides, pads, dilations) -> tuple[str, tuple[int, ...]]:
    """`[N, C, *spatial]` -> `[N, C, K, *out]`: the zero-padded input under each of the K kernel
    offsets (row-major), one strided `Slice` each; returns it and `out`."""
    n = len(kernel)
    xp = pad_spatial(e, x, n, pads[:n], pads[n:])
    out = tuple(out_size(spatial[i], kernel[i], strides[i], pads[i], pads[n + i], dilations[i]) for i in range(n))
    axes = e.int64s(list(range(2, n + 2)))
    steps = e.int64s(list(strides))
    views = []
    for offset in _offsets(kernel):
        starts = [o * d for o, d in zip(offset, dilations)]
        ends = [s + st * (o - 1) + 1 for s, st, o in zip(starts, strides, out)]
        view = e.node("Slice", xp, e.int64s(starts), e.int64s(ends), axes, steps)
        views.append(e.node("Unsqueeze", view, e.int64s([2])))
    cols = views[0] if len(views) == 1 else e.node("Concat", *views, axis=2)
    return cols, out


def conv_by_matmul(e, x: str, x_dims, w: str, w_shape, b: str | None, strides, pads, dilations, group) -> str:
    """`conv` as im2col + one batched MatMul: W `[g, F/g, C/g·K]` @ cols `[N, g, C/g·K, P]`."""
    channels, spatial = x_dims[0], x_dims[1:]
    filters, kernel = w_shape[0], w_shape[2:]
    k = math.prod(kernel)
    cols, out = im2col(e, x, spatial, kernel, strides, pads, dilations)
    cols = e.node("Reshape", cols, e.int64s([0, group, channels // group * k, math.prod(out)]))
    wm = e.node("Reshape", w, e.int64s([group, filters // group, channels // group * k]))
    y = e.node("Reshape", e.node("MatMul", wm, cols), e.int64s([0, filters] + list(out)))
    if b is not None:
        y = e.node("Add", y, e.node("Reshape", b, e.int64s([filters] + [1] * len(kernel))))
    return y


def weight_grad_by_matmul(e, x, g, kernel, strides, pads, dilations, group) -> str:
    """`conv_weight_grad` as g `[N, g, F/g, P]` @ colsᵀ `[N, g, P, C/g·K]`, summed over N."""
    channels, spatial = x.type.shape[1], x.type.shape[2:]
    filters, out = g.type.shape[1], g.type.shape[2:]
    k = math.prod(kernel)
    cols, _ = im2col(e, x.name, spatial, kernel, strides, pads, dilations)
    cols = e.node("Reshape", cols, e.int64s([0, group, channels // group * k, math.prod(out)]))
    gm = e.node("Reshape", g, e.int64s([0, group, filters // group, math.prod(out)]))
    per_example = e.node("MatMul", gm, e.node("Transpose", cols, perm=[0, 1, 3, 2]))
    total = e.node("ReduceSum", per_example, e.int64s([0]), keepdims=0)
    return e.node("Reshape", total, e.int64s([filters, channels // group] + list(kernel)))


def conv_transpose_by_matmul(e, x, w, b, strides, pads, dilations, group, output_padding) -> str:
    """`conv_transpose` as a stride-1 `conv` of x with stride-1 zeros between its elements, padded by
    dilation·(k - 1) - pad (negative: cropped), with the kernel flipped and its channel axes swapped."""
    n = x.type.rank - 2
    channels, spatial = x.type.shape[1], x.type.shape[2:]
    w_shape = w.type.shape
    kernel, filters = w_shape[2:], w_shape[1] * group
    z, z_spatial = x.name, list(spatial)
    if any(s > 1 for s in strides):  # [N, C, X1, 1, X2, 1] padded to [N, C, X1, s1, X2, s2], then merged
        interleaved = e.node("Unsqueeze", x.name, e.int64s([3 + 2 * i for i in range(n)]))
        pads_spec = [0] * (2 * (2 * n + 2))  # begins, then ends: grow each new axis at its end
        for i in range(n):
            pads_spec[(2 * n + 2) + 3 + 2 * i] = strides[i] - 1
        z = e.node("Reshape", e.node("Pad", interleaved, e.int64s(pads_spec)),
                   e.int64s([0, channels] + [spatial[i] * strides[i] for i in range(n)]))
        z_spatial = [spatial[i] * strides[i] for i in range(n)]  # s - 1 zeros too many at each end
    before = [dilations[i] * (kernel[i] - 1) - pads[i] for i in range(n)]
    after = [dilations[i] * (kernel[i] - 1) - pads[n + i] + output_padding[i] - (strides[i] - 1) for i in range(n)]
    z = pad_spatial(e, z, n, before, after)
    z_spatial = [z_spatial[i] + before[i] + after[i] for i in range(n)]
    c_g, f_g = channels // group, filters // group
    # [C, F/g, *k] -> [g, C/g, F/g, *k] -> [g, F/g, C/g, *k] -> [F, C/g, *k], flipped along every spatial axis
    wg = e.node("Reshape", w.name, e.int64s([group, c_g, f_g] + list(kernel)))
    wg = e.node("Transpose", wg, perm=[0, 2, 1] + list(range(3, n + 3)))
    wf = e.node("Reshape", wg, e.int64s([filters, c_g] + list(kernel)))
    big = np.iinfo(np.int64).max
    wf = e.node("Slice", wf, e.int64s([-1] * n), e.int64s([-big] * n), e.int64s(list(range(2, n + 2))),
                e.int64s([-1] * n))
    return conv_by_matmul(e, z, [channels] + z_spatial, wf, (filters, c_g) + tuple(kernel),
                          b.name if b is not None else None, (1,) * n, (0,) * (2 * n), dilations, group)
