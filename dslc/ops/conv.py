"""Convolutions over `[N, C, *spatial]` tensors (1-D, 2-D, ... alike), channels first as in ONNX and
PyTorch: `conv`, `conv_transpose`, and `conv_weight_grad` (the filter gradient both of them use).

Geometry attributes, one entry per spatial axis: `strides`, `dilations`, and `pads` as ONNX writes them,
all begins then all ends (`(top, left, bottom, right)` in 2-D). Weights have PyTorch's layout:
`conv` `[F, C/group, *kernel]`, `conv_transpose` `[C, F/group, *kernel]`.

Gradients, exact for any stride, padding, dilation and group count:
- `conv`: input gradient = `conv_transpose` of the output gradient with the same weights (its
  `output_padding` restores the rows a strided window never reached); filter gradient =
  `conv_weight_grad`; bias gradient = Σ over batch and positions.
- `conv_transpose` is the adjoint of `conv` in its input: input gradient = `conv` of the output
  gradient, filter gradient = `conv_weight_grad` with input and gradient swapped.
`conv_weight_grad` is the correlation of the input with the output gradient, summed over the batch.
In float32 it is either im2col columns (a one-hot `Conv`) times the output gradient, one batched
`MatMul` (3.5-4× faster on 3×3 layers), or one ONNX `Conv` with batch and channels trading places
(the batch becomes the channel axis; stride and dilation swap roles) — see `_by_columns`, the fixed rule,
and `ConvWeightGrad.formulations`, the candidates `dslc build --tune` measures instead.

ONNX Runtime implements `Conv`/`ConvTranspose` for float32 only. Float64 graphs (gradient checks)
get an exact standard-op lowering instead: im2col (one strided `Slice` per kernel offset) and a
`MatMul`; `conv_transpose` becomes a `conv` of the zero-interleaved input with the flipped kernel.
"""
from __future__ import annotations

import math

from dslc.ir.graph import OpError
from dslc.ir.types import TensorType

from dslc.ops.conv_math import (
    P,
    _check_operands,
    conv_by_matmul,
    conv_numpy,
    conv_output_spatial,
    conv_transpose_by_matmul,
    conv_transpose_numpy,
    conv_weight_grad_numpy,
    geometry,
    leftover,
    one_hot_taps,
    static_spatial,
    torch_conv,
    weight_grad_by_matmul,
)
from dslc.ops.registry import Formulations, OpDef, Sample, expect_float, op


# im2col of a filter gradient up to this many values per sample (C·K·positions; 1 MB in float32), so
# that its columns take at most 256 MB at batch 256; larger layers use the swapped Conv
COLUMNS_PER_SAMPLE = 1 << 18
SWAPPED_MAX_CHANNELS = 8  # see `_by_columns`: 6 channels measured for the swapped Conv, 16 against


@op("conv", strides=None, pads=None, dilations=None, group=1)
class Conv(OpDef):
    """y = x ⋆ w + b: cross-correlation of `[N, C, *spatial]` with filters `[F, C/group, *kernel]`,
    zero padding, `group` independent channel groups (ONNX Conv; float64: im2col + MatMul)."""

    samples = [
        Sample((P(2, 3, 7), P(4, 3, 3), P(4))),
        Sample((P(2, 2, 9), P(2, 1, 3)), {"strides": (2,), "pads": (1, 2), "dilations": (2,), "group": 2}),
        Sample((P(2, 2, 5, 6), P(3, 2, 3, 2), P(3))),
        Sample((P(2, 2, 6, 5), P(3, 2, 3, 3)), {"strides": (2, 2), "pads": (1, 1, 1, 1)}),
        Sample((P(1, 2, 7, 6), P(2, 2, 2, 3)), {"strides": (3, 2), "pads": (0, 2, 1, 0), "dilations": (2, 1)}),
        Sample((P(2, 4, 5, 5), P(4, 2, 3, 3), P(4)), {"group": 2, "pads": (1, 0, 1, 2)}),
        Sample((P(2, 3, 4, 4), P(3, 1, 2, 2)), {"group": 3, "dilations": (2, 2), "strides": (2, 1)}),
    ]

    def infer(self, x, w, b=None, *, strides, pads, dilations, group):
        _check_operands(x, w, b, "convolution")
        n = x.rank - 2
        strides, pads, dilations = geometry(n, strides, pads, dilations)
        channels, filters = x.shape[1], w.shape[0]
        if group < 1 or channels % group or filters % group:
            raise OpError(f"convolution groups ({group}) must divide the input channels ({channels}) and filters ({filters})")
        if w.shape[1] * group != channels:
            raise OpError(f"convolution weights `{w}` expect {w.shape[1] * group} input channels, the input `{x}` has {channels}")
        if b is not None and b.shape != (filters,):
            raise OpError(f"convolution bias `{b}` does not match {filters} filters")
        spatial = conv_output_spatial(x, w.shape[2:], strides, pads, dilations, "convolution")
        return TensorType(x.dtype, (x.shape[0], filters) + spatial)

    def lower(self, e, x, w, b=None, *, strides, pads, dilations, group):
        strides, pads, dilations = geometry(x.type.rank - 2, strides, pads, dilations)
        if x.type.dtype == "float32":
            inputs = [x, w] + ([b] if b is not None else [])
            return e.node("Conv", *inputs, strides=list(strides), pads=list(pads), dilations=list(dilations), group=group)
        return conv_by_matmul(e, x.name, x.type.shape[1:], w.name, w.type.shape, b.name if b is not None else None,
                              strides, pads, dilations, group)

    def torch(self, T, x, w, b=None, *, strides, pads, dilations, group):
        strides, pads, dilations = geometry(x.dim() - 2, strides, pads, dilations)
        return torch_conv(T, x, w, b, strides, pads, dilations, group)

    def flops(self, out, x, w, b=None, **attrs):
        return 2 * math.prod(out.shape) * math.prod(w.shape[1:])

    def evaluate(self, x, w, b=None, *, strides, pads, dilations, group):
        return conv_numpy(x, w, b, strides=strides, pads=pads, dilations=dilations, group=group)

    def grad(self, b, g, out, x, w, bias=None, *, strides, pads, dilations, group):
        n = x.type.rank - 2
        strides, pads, dilations = geometry(n, strides, pads, dilations)
        kernel = w.type.shape[2:]
        unreached = tuple(leftover(x.type.shape[2 + i], kernel[i], strides[i], pads[i], pads[n + i], dilations[i])
                          for i in range(n))
        geo = {"strides": strides, "pads": pads, "dilations": dilations, "group": group}
        dx = b.conv_transpose(g, w, output_padding=unreached, **geo)
        dw = b.conv_weight_grad(x, g, kernel=kernel, **geo)
        grads = [dx, dw]
        if bias is not None:
            grads.append(b.reduce_sum(g, axes=(0,) + tuple(range(2, n + 2))))
        return grads


@op("conv_transpose", strides=None, pads=None, dilations=None, group=1, output_padding=None)
class ConvTranspose(OpDef):
    """y = the transposed convolution (the adjoint of `conv` in its input) of `[N, C, *spatial]` with
    weights `[C, F/group, *kernel]`, plus bias: spatial size stride·(in - 1) + output_padding +
    dilation·(kernel - 1) + 1 - pad_begin - pad_end (ONNX ConvTranspose, PyTorch's conv_transpose).
    `output_padding` must be below the stride (ONNX Runtime's rule)."""

    samples = [
        Sample((P(2, 3, 4), P(3, 2, 3), P(2))),
        Sample((P(2, 2, 4), P(2, 2, 3)), {"strides": (3,), "pads": (1, 2), "dilations": (2,), "output_padding": (2,)}),
        Sample((P(2, 2, 3, 3), P(2, 3, 3, 2), P(3)), {"strides": (2, 2), "output_padding": (1, 0)}),
        Sample((P(1, 4, 3, 4), P(4, 1, 3, 3)), {"strides": (2, 3), "pads": (1, 0, 2, 1), "group": 2,
                                             "output_padding": (1, 2)}),
        Sample((P(2, 2, 3, 3), P(2, 2, 2, 2)), {"dilations": (2, 1), "pads": (1, 1, 0, 1)}),
    ]

    def infer(self, x, w, b=None, *, strides, pads, dilations, group, output_padding):
        _check_operands(x, w, b, "transposed convolution")
        n = x.rank - 2
        strides, pads, dilations = geometry(n, strides, pads, dilations)
        output_padding = tuple(output_padding) if output_padding is not None else (0,) * n
        channels = x.shape[1]
        if channels != w.shape[0] or group < 1 or channels % group:
            raise OpError(f"transposed convolution weights `{w}` do not fit the input `{x}` with {group} group(s)")
        filters = w.shape[1] * group
        if b is not None and b.shape != (filters,):
            raise OpError(f"transposed convolution bias `{b}` does not match {filters} filters")
        if len(output_padding) != n or any(not 0 <= p < s for p, s in zip(output_padding, strides)):
            raise OpError(f"`output_padding` {list(output_padding)} must be at least 0 and below the stride {list(strides)}")
        spatial = []
        for i in range(n):
            size = (strides[i] * (x.shape[2 + i] - 1) + output_padding[i] + dilations[i] * (w.shape[2 + i] - 1) + 1
                    - pads[i] - pads[n + i])
            if size < 1:
                raise OpError(f"transposed convolution of `{x}` with padding {list(pads)} leaves no output")
            spatial.append(size)
        return TensorType(x.dtype, (x.shape[0], filters) + tuple(spatial))

    def lower(self, e, x, w, b=None, *, strides, pads, dilations, group, output_padding):
        n = x.type.rank - 2
        strides, pads, dilations = geometry(n, strides, pads, dilations)
        output_padding = tuple(output_padding) if output_padding is not None else (0,) * n
        if x.type.dtype == "float32":
            geo = {"strides": list(strides), "pads": list(pads), "dilations": list(dilations),
                   "output_padding": list(output_padding)}
            if group > 1 and (w.type.shape[0] > group or w.type.shape[1] > 1):
                return _conv_transpose_per_group(e, x, w, b, group, geo)
            inputs = [x, w] + ([b] if b is not None else [])
            return e.node("ConvTranspose", *inputs, group=group, **geo)
        return conv_transpose_by_matmul(e, x, w, b, strides, pads, dilations, group, output_padding)

    def torch(self, T, x, w, b=None, *, strides, pads, dilations, group, output_padding):
        n = x.dim() - 2
        strides, pads, dilations = geometry(n, strides, pads, dilations)
        output_padding = list(output_padding) if output_padding is not None else [0] * n
        full = T.convolution(x, w, None, list(strides), [0] * n, list(dilations), True, output_padding, group)
        y = full[(slice(None), slice(None)) + tuple(slice(pads[i], full.shape[2 + i] - pads[n + i]) for i in range(n))]
        return y if b is None else y + b.reshape((1, -1) + (1,) * n)

    def flops(self, out, x, w, b=None, **attrs):
        return 2 * math.prod(x.shape) * math.prod(w.shape[1:])

    def evaluate(self, x, w, b=None, *, strides, pads, dilations, group, output_padding):
        return conv_transpose_numpy(x, w, b, strides=strides, pads=pads, dilations=dilations, group=group,
                                    output_padding=output_padding)

    def grad(self, b, g, out, x, w, bias=None, *, strides, pads, dilations, group, output_padding):
        n = x.type.rank - 2
        geo = {"strides": strides, "pads": pads, "dilations": dilations, "group": group}
        dx = b.conv(g, w, **geo)
        dw = b.conv_weight_grad(g, x, kernel=w.type.shape[2:], **geo)
        grads = [dx, dw]
        if bias is not None:
            grads.append(b.reduce_sum(g, axes=(0,) + tuple(range(2, n + 2))))
        return grads


def _conv_transpose_per_group(e, x, w, b, group: int, geo: dict):
    """A grouped ConvTranspose with more than one channel in or out per group, as one ConvTranspose per
    group joined along the channels. onnx.reference (1.23) computes a grouped ConvTranspose right only
    for one channel in and one out per group (depthwise): otherwise it slices the weights by output
    channels and writes each group's result to one channel, and fails. ONNX Runtime runs a grouped
    ConvTranspose group by group too."""
    xs = e.node_outputs("Split", group, x, axis=1)
    ws = e.node_outputs("Split", group, w, axis=0)
    bs = e.node_outputs("Split", group, b, axis=0) if b is not None else [None] * group
    parts = [e.node("ConvTranspose", xi, wi, *([bi] if bi is not None else []), group=1, **geo)
             for xi, wi, bi in zip(xs, ws, bs)]
    return e.node("Concat", *parts, axis=1)


@op("conv_weight_grad", kernel=None, strides=None, pads=None, dilations=None, group=1)
class ConvWeightGrad(OpDef):
    """dw = ∂⟨g, conv(x, w)⟩/∂w for `x` `[N, C, *spatial]` and the output gradient `g` `[N, F, *out]`:
    `[F, C/group, *kernel]`. One ONNX Conv of xᵀ (channels as batch, batch as channels) with gᵀ as the
    filters, stride and dilation swapped; float64: im2col + MatMul. Not differentiable itself."""

    samples = [
        Sample((P(2, 3, 7), P(2, 4, 5)), {"kernel": (3,)}, grad=False),
        Sample((P(3, 1, 8), P(3, 2, 8)), {"kernel": (3,), "pads": (1, 1)}, grad=False),
        Sample((P(2, 2, 6, 6), P(2, 3, 4, 4)), {"kernel": (3, 3)}, grad=False),
        Sample((P(2, 4, 7, 6), P(2, 2, 4, 6)), {"kernel": (3, 3), "strides": (2, 1), "pads": (1, 1, 1, 1), "group": 2},
               grad=False),
        Sample((P(2, 1, 6, 7), P(2, 3, 6, 2)), {"kernel": (3, 3), "strides": (1, 2), "pads": (1, 0, 1, 0),
                                              "dilations": (1, 2)}, grad=False),
        Sample((P(2, 2, 9), P(2, 2, 4)), {"kernel": (3,), "strides": (2,), "pads": (1, 2), "dilations": (2,), "group": 2},
               grad=False),
        Sample((P(2, 2, 6, 5), P(2, 3, 3, 3)), {"kernel": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}, grad=False),
        Sample((P(3, 4, 5, 5), P(3, 6, 4, 5)), {"kernel": (3, 3), "group": 2, "pads": (0, 1, 1, 1)}, grad=False),
        Sample((P(2, 2, 7, 6), P(2, 2, 2, 3)), {"kernel": (2, 3), "strides": (3, 2), "pads": (0, 2, 1, 0),
                                              "dilations": (2, 1)}, grad=False),
    ]

    def infer(self, x, g, *, kernel, strides, pads, dilations, group):
        expect_float(x)
        if g.dtype != x.dtype or g.rank != x.rank or x.rank < 3:
            raise OpError(f"filter gradient of mismatched `{x}` and `{g}`")
        if x.shape[0] != g.shape[0]:
            raise OpError(f"filter gradient: batch sizes of `{x}` and `{g}` differ")
        static_spatial(x, "filter gradient")
        static_spatial(g, "filter gradient")
        n = x.rank - 2
        strides, pads, dilations = geometry(n, strides, pads, dilations)
        if kernel is None or len(kernel) != n:
            raise OpError(f"filter gradient needs a kernel size for each of the {n} spatial axes")
        if group < 1 or x.shape[1] % group or g.shape[1] % group:
            raise OpError(f"filter gradient: {group} groups do not divide `{x}` and `{g}`")
        expected = conv_output_spatial(x, kernel, strides, pads, dilations, "filter gradient")
        if expected != tuple(g.shape[2:]):
            raise OpError(f"filter gradient: `{g}` is not the output shape of a convolution of `{x}`")
        return TensorType(x.dtype, (g.shape[1], x.shape[1] // group) + tuple(kernel))

    def formulations(self, x, g, *, kernel, strides, pads, dilations, group):
        """float32: `columns` (im2col columns times the gradient, `_weight_grad_by_columns`) while the
        columns fit `COLUMNS_PER_SAMPLE`; `swapped` (one Conv with batch and channels trading places);
        `bands` for a one-channel input whose output rows split in two (`_one_channel_in_two_bands`).
        The rule: `_by_columns`, else `bands` where it applies, else `swapped`."""
        if x.dtype != "float32":
            return None
        strides, pads, dilations = geometry(x.rank - 2, strides, pads, dilations)
        channels, out = x.shape[1], g.shape[2:]
        candidates = ["swapped"]
        if channels * math.prod(kernel) * math.prod(out) <= COLUMNS_PER_SAMPLE:
            candidates.insert(0, "columns")
        if group == 1 and channels == 1 and out[0] % 2 == 0 and strides[0] == 1 and dilations[0] == 1:
            candidates.append("bands")
        rule = "columns" if _by_columns(channels, kernel, out) else candidates[-1]
        return Formulations(tuple(candidates), rule)

    def lower(self, e, x, g, *, kernel, strides, pads, dilations, group):
        n = x.type.rank - 2
        strides, pads, dilations = geometry(n, strides, pads, dilations)
        if x.type.dtype != "float32":
            return weight_grad_by_matmul(e, x, g, kernel, strides, pads, dilations, group)
        how = e.formulation(self.formulations(x.type, g.type, kernel=kernel, strides=strides, pads=pads,
                                              dilations=dilations, group=group))
        if how == "columns":
            return _weight_grad_by_columns(e, x, g, kernel, strides, pads, dilations, group)
        channels = x.type.shape[1]
        spatial, out = x.type.shape[2:], g.type.shape[2:]
        perm = [1, 0] + list(range(2, n + 2))
        if group == 1:
            xt = e.node("Transpose", x, perm=perm)  # [C, N, *spatial]: channels become the batch
        else:  # [N, g, C/g, *s] -> [C/g, g, N, *s] -> [C/g, g·N, *s]: group j reads its batch copy j
            grouped = e.node("Reshape", x, e.int64s([0, group, channels // group] + list(spatial)))
            xt = e.node("Transpose", grouped, perm=[2, 1, 0] + list(range(3, n + 3)))
            xt = e.node("Reshape", xt, e.int64s([channels // group, -1] + list(spatial)))
        # input rows past the last window are never read: trim them from the end padding
        ends, crop = [], []
        for i in range(n):
            spare = (spatial[i] + pads[i] + pads[n + i] - strides[i] * (out[i] - 1) - 1) - dilations[i] * (kernel[i] - 1)
            ends.append(max(pads[n + i] - spare, 0))
            crop.append(spare - pads[n + i] >= dilations[i])  # rows left for an extra kernel tap
        if how == "bands":
            reach = [(spatial[i] + pads[i] + ends[i] - strides[i] * (out[i] - 1) - 1) // dilations[i] + 1 for i in range(n)]
            dwt = _one_channel_in_two_bands(e, xt, g, reach, strides, pads, ends, dilations)
        else:
            gt = e.node("Transpose", g, perm=perm)  # [F, N, *out]: the filters
            dwt = e.node("Conv", xt, gt, strides=list(dilations), dilations=list(strides),
                         pads=list(pads[:n]) + ends, group=group)  # [C/g, F, *kernel'], kernel' >= kernel where cropped
        if any(crop):
            axes = [2 + i for i in range(n)]
            dwt = e.node("Slice", dwt, e.int64s([0] * n), e.int64s(list(kernel)), e.int64s(axes))
        return e.node("Transpose", dwt, perm=perm)

    def torch(self, T, x, g, *, kernel, strides, pads, dilations, group):
        strides, pads, dilations = geometry(x.dim() - 2, strides, pads, dilations)
        with T.enable_grad():
            w = T.zeros((g.shape[1], x.shape[1] // group) + tuple(kernel), dtype=x.dtype, requires_grad=True)
            (dw,) = T.autograd.grad((torch_conv(T, x, w, None, strides, pads, dilations, group) * g).sum(), w)
        return dw

    def flops(self, out, x, g, **attrs):
        return 2 * math.prod(g.shape) * math.prod(out.shape[1:])

    def evaluate(self, x, g, *, kernel, strides, pads, dilations, group):
        return conv_weight_grad_numpy(x, g, kernel=kernel, strides=strides, pads=pads, dilations=dilations, group=group)


def _by_columns(channels: int, kernel, out) -> bool:
    """Whether a float32 filter gradient is computed from im2col columns rather than by the swapped
    Conv: when the columns fit `COLUMNS_PER_SAMPLE`, except
    - for inputs of at most `SWAPPED_MAX_CHANNELS` channels with kernels of 16 taps or more, where the
      columns (K copies of every input element, then an NCHWc reorder of them) cost more than the
      swapped Conv's own im2col. Measured on 2 threads, columns vs swapped: 5×5 from 6 channels (LeNet's
      second layer, 14×14, batch 64) alone a tie (0.63 vs 0.65 ms), in the whole step 7% faster with
      the swapped Conv (4.10-4.29 -> 3.78-3.99 ms, 3 interleaved runs); 7×7 from 3 channels (32×32,
      batch 16) 2.34 vs 1.78 ms; one channel (LeNet's first layer) in two row bands. From 16 channels
      the swapped Conv, one image per input channel, keeps a single thread busy: 5×5 16→32 on 16×16
      1.85 vs 4.70 ms; with 3×3 kernels the columns win at any channel count (3-4.5×);
    - for outputs of fewer than 16 positions, where the per-sample products are too small and the
      swapped Conv, which reduces over the batch, is faster."""
    taps, positions = math.prod(kernel), math.prod(out)
    if (channels <= SWAPPED_MAX_CHANNELS and taps >= 16) or positions < 16:
        return False
    return channels * taps * positions <= COLUMNS_PER_SAMPLE


def _weight_grad_by_columns(e, x, g, kernel, strides, pads, dilations, group) -> str:
    """The filter gradient as im2col and one batched MatMul: every channel taken as a one-channel
    image, a Conv with K one-hot filters lays each window's K taps out as channels (`cols`
    `[N, C·K, *out]`: ONNX Runtime's own im2col; a grouped Conv was slower), and `cols @ gᵀ` per sample
    and group, summed over the batch, is the gradient. Measured against the swapped Conv (2 threads):
    3×3 layers 3.5-4× faster (16→32 channels on 16×16, batch 32: 1.52 → 0.43 ms). `cols` holds K
    values per input element, hence `COLUMNS_PER_SAMPLE`."""
    channels, filters = x.type.shape[1], g.type.shape[1]
    taps, positions = math.prod(kernel), math.prod(g.type.shape[2:])
    one_hot = e.const(one_hot_taps(1, kernel, "float32"))
    images = e.node("Reshape", x, e.int64s([-1, 1] + list(x.type.shape[2:])))  # every channel an image
    cols = e.node("Conv", images, one_hot, strides=list(strides), pads=list(pads), dilations=list(dilations))
    cols = e.node("Reshape", cols, e.int64s([-1, group, channels // group * taps, positions]))
    gt = e.node("Reshape", g, e.int64s([0, group, filters // group, positions]))
    gt = e.node("Transpose", gt, perm=[0, 1, 3, 2])  # [N, g, P, F/g]
    per_sample = e.node("MatMul", cols, gt)  # [N, g, C/g·K, F/g]
    summed = e.node("ReduceSum", per_sample, e.int64s([0]), keepdims=0)
    dw = e.node("Transpose", summed, perm=[0, 2, 1])  # [g, F/g, C/g·K]
    return e.node("Reshape", dw, e.int64s([filters, channels // group] + list(kernel)))


def _one_channel_in_two_bands(e, xt, g, reach, strides, pads, ends, dilations) -> str:
    """The filter-gradient Conv of a one-channel input (a first layer) as two groups: the top and the
    bottom half of the output rows, each with the input rows it reads (stride and dilation 1 along rows).
    ONNX Runtime runs the one-image Conv with an image-sized kernel on about one thread; two groups use
    both (LeNet's first layer, batch 64: 630 -> 430 µs). `reach`: the kernel' of the swapped Conv."""
    n = g.type.rank - 2
    filters, rows, rest = g.type.shape[1], g.type.shape[2], list(g.type.shape[3:])
    half, taps = rows // 2, rows // 2 + reach[0] - 1
    row_pads = [0, 0, pads[0]] + [0] * (n - 1) + [0, 0, ends[0]] + [0] * (n - 1)
    padded = e.node("Pad", xt, e.int64s(row_pads))  # [1, N, rows + kernel - 1, *spatial]
    top = e.node("Slice", padded, e.int64s([0]), e.int64s([taps]), e.int64s([2]))
    bottom = e.node("Slice", padded, e.int64s([half]), e.int64s([half + taps]), e.int64s([2]))
    bands = e.node("Concat", top, bottom, axis=1)  # [1, 2N, taps, *spatial]: group j reads band j
    split = e.node("Reshape", g, e.int64s([0, filters, 2, half] + rest))
    gt = e.node("Transpose", split, perm=[2, 1, 0, 3] + list(range(4, n + 3)))  # [2, F, N, half, *rest]
    gt = e.node("Reshape", gt, e.int64s([2 * filters, -1, half] + rest))
    dwt = e.node("Conv", bands, gt, strides=list(dilations), dilations=list(strides),
                 pads=[0] + list(pads[1:n]) + [0] + list(ends[1:]), group=2)  # [1, 2F, *kernel']
    per_band = e.node("Reshape", dwt, e.int64s([2, filters, -1]))
    summed = e.node("ReduceSum", per_band, e.int64s([0]), keepdims=1)  # [1, F, K']
    return e.node("Reshape", summed, e.int64s([1, filters] + list(reach)))
