"""Multi-head attention with its projections, built from registered ops (gemm for the projections,
matmul, reshape, transpose, softmax); the causal mask is the `causal_bias` op."""
from __future__ import annotations

import math

from dslc.builtins import builtin
from dslc.initializers import Initializer
from dslc.ir.graph import Node
from dslc.layers.core import rows_affine
from dslc.ops.attention import MASKED

Tensor = Node


@builtin("layer")
def attention(ctx, q: Tensor, k: Tensor, v: Tensor, heads: int, *, causal: bool = False, key_mask: Tensor = None,
              name: str = None):
    """Multi-head scaled dot-product attention with its projections (PyTorch's `nn.MultiheadAttention`,
    `batch_first=True`): queries `q` `[B, Tq, D]` attend to keys `k` and values `v` `[B, Tk, D]`;
    each of `heads` heads takes D/heads of the width, softmax(Q·Kᵀ/√(D/heads))·V, and the heads are
    joined and projected back to `[B, Tq, D]`. The layer holds `query`, `key`, `value` and `out`
    projections (`weight` `[D, D]`, `bias` `[D]`; the key projection has no bias: it would add the
    same amount to all scores of a query, which softmax ignores). Self-attention is
    `attention(x, x, x, heads)`; cross-attention takes keys and values from another sequence. `causal = true` lets query i see
    keys 0..i only. `key_mask` `[B, Tk]` marks the keys to attend to with 1 (or `true`) and padding
    with 0 (or `false`); a query left with no key to see gets zeros before the `out` projection."""
    b = ctx.b
    width = _check_inputs(ctx, q, k, v, heads)
    if key_mask is not None:
        _check_key_mask(ctx, key_mask, k)
    layer = ctx.new_layer("attention", name)

    def project(x: Node, which: str) -> Node:
        w = ctx.param(layer, f"{which}.weight", (width, width), Initializer("glorot"), "weight",
                      fan_in=width, fan_out=width)
        if which == "key":  # q·bias is the same for every key, so softmax cancels it: its gradient is 0
            return rows_affine(b, x, w, None)
        bias = ctx.param(layer, f"{which}.bias", (width,), Initializer("zeros"), "bias", fan_in=width, fan_out=width)
        return rows_affine(b, x, w, bias)

    head_width = width // heads
    split = lambda x: b.reshape(x, shape=(0, 0, heads, head_width))  # noqa: E731  [B, T, H, D/H]
    queries = b.transpose(split(b.mul(project(q, "query"), b.scalar_like(1 / math.sqrt(head_width), q))),
                          perm=(0, 2, 1, 3))  # [B, H, Tq, D/H], scaled before the product (fewer elements)
    keys = b.transpose(split(project(k, "key")), perm=(0, 2, 3, 1))  # [B, H, D/H, Tk]
    values = b.transpose(split(project(v, "value")), perm=(0, 2, 1, 3))  # [B, H, Tk, D/H]
    scores = b.matmul(queries, keys)  # [B, H, Tq, Tk]
    if causal:
        future = b.causal_bias(scores)  # [Tq, Tk]: 0, or -1e9 for the keys after the query
        scores = b.add(scores, future)
    if key_mask is not None:
        keep = key_mask if key_mask.type.dtype == q.type.dtype else b.cast(key_mask, to=q.type.dtype)
        padding = b.mul(b.sub(b.scalar_like(1.0, keep), keep), b.scalar_like(MASKED, keep))  # 0 or -1e9
        scores = b.add(scores, b.unsqueeze(padding, axes=(1, 2)))  # [B, 1, 1, Tk]
    weights = b.softmax(scores, axis=-1)
    if key_mask is not None:  # a query that may see no key at all gets zeros (as in PyTorch)
        seen = b.unsqueeze(keep, axes=(1, 2))  # [B, 1, 1, Tk]
        if causal:
            seen = b.mul(seen, b.cast(b.equal(future, b.scalar_like(0.0, future)), to=keep.type.dtype))
        weights = b.mul(weights, b.reduce_max(seen, axes=(-1,), keepdims=True))
    mixed = b.matmul(weights, values)  # [B, H, Tq, D/H]
    joined = b.reshape(b.transpose(mixed, perm=(0, 2, 1, 3)), shape=(0, 0, width))
    return project(joined, "out")


def _check_inputs(ctx, q: Node, k: Node, v: Node, heads: int) -> int:
    """The model width D, after checking q, k, v and `heads` (errors point at the argument at fault)."""
    for arg, x in (("q", q), ("k", k), ("v", v)):
        if not x.type.is_float or x.type.rank != 3:
            ctx.fail(f"`attention` expects sequences of vectors `[B, T, D]`, got `{x.type}` for `{arg}`", arg=arg,
                     label=f"this is {x.type.rank}-D" if x.type.rank != 3 else "not floating-point",
                     hint="embed token ids first, e.g. `ids |> embedding(vocab, dim)`" if not x.type.is_float else "")
    width = q.type.shape[2]
    if not isinstance(width, int):
        ctx.fail(f"`attention` needs a known width, got `{q.type}`", arg="q")
    for arg, x in (("k", k), ("v", v)):
        if x.type.dtype != q.type.dtype:
            ctx.fail(f"`attention` inputs differ in dtype: `q` is `{q.type}`, `{arg}` is `{x.type}`", arg=arg)
        if x.type.shape[2] != width:
            ctx.fail(f"`attention` widths differ: `q` is `{q.type}`, `{arg}` is `{x.type}`", arg=arg,
                     label=f"width {x.type.shape[2]}, not {width}",
                     hint=f"project the {'keys' if arg == 'k' else 'values'} to the query width first, "
                          f"e.g. with `linear({width})`")
        if x.type.shape[0] != q.type.shape[0]:
            ctx.fail(f"`attention` batch sizes differ: `q` is `{q.type}`, `{arg}` is `{x.type}`", arg=arg)
    if v.type.shape[1] != k.type.shape[1]:
        ctx.fail(f"`attention` keys and values differ in length: `k` is `{k.type}`, `v` is `{v.type}`", arg="v",
                 label=f"length {v.type.shape[1]}, not {k.type.shape[1]}",
                 hint="each key needs its value: pass two sequences of the same length (often the same one)")
    if heads < 1 or width % heads:
        valid = ", ".join(str(h) for h in range(1, width + 1) if width % h == 0)
        label = "needs at least one head" if heads < 1 else f"{width} is not a multiple of {heads}"
        ctx.fail(f"`attention` cannot split the width {width} into {heads} heads", arg="heads", label=label,
                 hint=f"the number of heads must divide the width; for width {width}: {valid}")
    return width


def _check_key_mask(ctx, mask: Node, k: Node) -> None:
    expected = k.type.shape[:2]
    if mask.type.shape != expected:
        ctx.fail(f"`attention` key mask `{mask.type}` does not fit the keys `{k.type}`", arg="key_mask",
                 hint=f"give one entry per key: `[{', '.join(map(str, expected))}]`, 1 to attend and 0 for padding")
