"""phases: a convolution followed by a tiled max-pool computed as one strided convolution whose filters
are the pool window's phases, and a `reduce_max` over them (training graphs only).

    max_pool(conv(x, w, b), kernel=k)  ->  reduce_max(reshape(conv(x, w', strides=k)), axis=1) + b

For a pool window of P = prod(k) elements, w' holds P copies of each filter, copy p shifted by the
window offset p inside a kernel k - 1 larger on every axis (zeros elsewhere): output channel p·F + f of
the strided convolution is the original output at offset p of every window. The maximum over the
P phases is the pool, and a constant bias commutes with it (added after, to the pooled tensor). The
values are the same (the products are the same; the zero taps add zeros), and so is the gradient,
ties shared equally by `reduce_max` as by `max_pool`.

What it buys: the pool's gradient becomes a broadcast against a `[N, P, F, *out]` tensor instead of
upsampling the pooled value and the gradient back to the convolution's resolution (two `Resize`s and a
tie count by `AveragePool`), and the filter gradient reads the output gradient in the phase layout.
What it costs: a (k + K - 1)/K larger kernel per axis (5×5 under a 2×2 pool: 36/25 of the products).
Measured on LeNet (batch 64) it pays on a one-channel first layer, where the convolution is cheap next
to the pooling around it; see `_pays`.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from dslc.ir.graph import Builder, Graph, Node
from dslc.ir.verify import InternalError
from dslc.ops.pool import tiles, window_geometry
from dslc.passes.rewrite import rewrite, use_counts, with_inputs

PHASE_MAX_CHANNELS = 1  # see `_pays`
PHASE_MAX_GROWTH = 1.5  # products of the enlarged kernel over the original's


def phase_matrix(kernel: tuple[int, ...], window: tuple[int, ...]) -> np.ndarray:
    """`[K, P·K']`: column p·K' + t' is 1 where tap t' of the enlarged kernel (K' = prod(kernel + window
    - 1)) holds tap t of the original one shifted by window offset p, so `w_flat @ E` lays out the P
    shifted copies of every filter."""
    enlarged = tuple(k + s - 1 for k, s in zip(kernel, window))
    taps, size = math.prod(kernel), math.prod(enlarged)
    offsets = list(itertools.product(*(range(s) for s in window)))
    matrix = np.zeros((taps, len(offsets) * size))
    for p, offset in enumerate(offsets):
        for t, tap in enumerate(itertools.product(*(range(k) for k in kernel))):
            shifted = np.ravel_multi_index(tuple(a + o for a, o in zip(tap, offset)), enlarged)
            matrix[t, p * size + shifted] = 1.0
    return matrix


def _pays(conv: Node, pool: Node) -> bool:
    """Whether the phase form is used: a convolution with stride, dilation and group 1 under a tiled
    max-pool, reading at most PHASE_MAX_CHANNELS channels, whose enlarged kernel has at most
    PHASE_MAX_GROWTH times the products. Measured (interleaved A/B, one thread's CPU time, the whole
    training step): LeNet's first layer (1 channel, 5×5 under 2×2, 28×28, batch 64) 0.87-0.89×; its
    second layer too (6 channels) 1.01×; cnn_digits' first layer (1 channel, 3×3 under 2×2, 8×8:
    16/9 of the products) 0.99-1.07×."""
    x, w = conv.inputs[0], conv.inputs[1]
    n = x.type.rank - 2
    attrs = conv.attrs
    plain = (attrs["group"] == 1 and all(s == 1 for s in attrs["strides"] or (1,) * n)
             and all(d == 1 for d in attrs["dilations"] or (1,) * n))
    if not plain or not isinstance(x.type.shape[1], int) or x.type.shape[1] > PHASE_MAX_CHANNELS:
        return False
    window, strides, pads, _ = window_geometry(conv.type, pool.attrs["kernel"], pool.attrs["strides"],
                                               pool.attrs["pads"], "max pooling")
    kernel = w.type.shape[2:]
    growth = math.prod((k + s - 1) / k for k, s in zip(kernel, window))
    return tiles(conv.type, window, strides, pads) and growth <= PHASE_MAX_GROWTH


def _phase_pool(conv: Node, pool: Node) -> Node:
    """The phase form of `pool(conv)`; its nodes keep the spans of the layer each stands for."""
    x, w, bias = conv.inputs[0], conv.inputs[1], (conv.inputs[2] if len(conv.inputs) > 2 else None)
    n = x.type.rank - 2
    window = tuple(pool.attrs["kernel"])
    filters, channels, kernel = w.type.shape[0], w.type.shape[1], tuple(w.type.shape[2:])
    enlarged = tuple(k + s - 1 for k, s in zip(kernel, window))
    count = math.prod(window)
    b = Builder(conv.span)
    flat = b.reshape(w, shape=(filters * channels, math.prod(kernel)))
    shifted = b.matmul(flat, b.const(phase_matrix(kernel, window), w.type.dtype))  # [F·C, P·K']
    shifted = b.reshape(shifted, shape=(filters, channels, count, math.prod(enlarged)))
    shifted = b.transpose(shifted, perm=(2, 0, 1, 3))  # [P, F, C, K']: phase-major channels
    w_phases = b.reshape(shifted, shape=(count * filters, channels) + enlarged)
    z = b.conv(x, w_phases, strides=window, pads=conv.attrs["pads"] or (0,) * (2 * n))  # [N, P·F, *out]
    with b.at(pool.span):
        z = b.reshape(z, shape=(0, count, filters) + tuple(z.type.shape[2:]))
        y = b.reduce_max(z, axes=(1,), keepdims=False)
    if bias is not None:
        y = b.add(y, b.reshape(bias, shape=(filters,) + (1,) * n))
    return y


def phases(graph: Graph) -> Graph:
    uses = use_counts(graph)

    def visit(node: Node, inputs: tuple[Node, ...]) -> Node:
        node = with_inputs(node, inputs)
        if node.op == "max_pool" and inputs[0].op == "conv" and uses[node.inputs[0].id] == 1 and _pays(inputs[0], node):
            y = _phase_pool(inputs[0], node)
            if y.type != node.type:
                raise InternalError(f"the phase form of a pooled convolution gives `{y.type}`, not `{node.type}`")
            return y
        return node

    return rewrite(graph, visit)
