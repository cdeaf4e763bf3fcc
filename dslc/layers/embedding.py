"""Embeddings: token ids to vectors, and position information added to sequences `[B, T, D]`."""
from __future__ import annotations

import numpy as np

from dslc.builtins import builtin
from dslc.initializers import Initializer
from dslc.ir.graph import Node
from dslc.ir.types import INT_DTYPES

Tensor = Node
Init = Initializer


@builtin("layer")
def embedding(ctx, ids: Tensor, vocab: int, dim: int, *, init: Init = "normal", name: str = None):
    """A learned vector per token: integer ids `[B, ...]` (usually `i64[B, T]`) → `[B, ..., dim]`, row
    `ids[...]` of the table `weight` `[vocab, dim]` (PyTorch's `nn.Embedding`). Ids must lie in
    [0, vocab): ONNX Runtime stops with an error at run time on an id outside [-vocab, vocab) and counts
    negative ids from the end. `init` defaults to N(0, 0.05²)."""
    if ids.type.dtype not in INT_DTYPES:
        hint = (f"declare the token ids as integers, e.g. `i64{_dims(ids)}`" if ids.op == "input"
                else "embed integer token ids; float features go through `linear` instead")
        ctx.fail(f"`embedding` expects integer token ids, got `{ids.type}`", arg="ids", label="these are not integers",
                 hint=hint)
    if ids.type.rank < 1:
        ctx.fail(f"`embedding` expects a batch of token ids, got the scalar `{ids.type}`", arg="ids")
    if vocab < 1:
        ctx.fail(f"`embedding` needs a vocabulary of at least 1 token, got {vocab}", arg="vocab")
    if dim < 1:
        ctx.fail(f"`embedding` needs at least 1 dimension, got {dim}", arg="dim")
    ctx.note_classes(ids, vocab)  # `classes` in the manifest: the data loader range-checks (targets only, today)
    layer = ctx.new_layer("embedding", name)
    table = ctx.param(layer, "weight", (vocab, dim), init, "weight", fan_in=vocab, fan_out=dim)
    return ctx.b.gather_rows(table, ids)


@builtin("layer")
def positional_embedding(ctx, x: Tensor, max_len: int, *, init: Init = "normal", name: str = None):
    """A learned vector per position added to a sequence: `x` `[B, T, D]` + rows 0..T-1 of `weight`
    `[max_len, D]` (GPT-style); T must be a number no larger than `max_len`. `init` defaults to
    N(0, 0.05²)."""
    length, width = _sequence(ctx, x, "positional_embedding")
    if max_len < 1:
        ctx.fail(f"`positional_embedding` needs `max_len` of at least 1, got {max_len}", arg="max_len")
    if length > max_len:
        ctx.fail(f"`positional_embedding` has {max_len} positions, but the sequence `{x.type}` is {length} steps long",
                 arg="max_len", hint=f"use `max_len = {length}` or more")
    layer = ctx.new_layer("positional_embedding", name)
    table = ctx.param(layer, "weight", (max_len, width), init, "weight", fan_in=max_len, fan_out=width)
    if length < max_len:
        table = ctx.b.slice(table, axis=0, start=0, end=length)
    return ctx.b.add(x, table)


@builtin("layer")
def sinusoidal_position(ctx, x: Tensor):
    """Fixed position signals added to a sequence `x` `[B, T, D]` (Vaswani et al., 2017):
    PE[t, 2i] = sin(t / 10000^(2i/D)), PE[t, 2i+1] = cos(t / 10000^(2i/D)), computed at compile time
    (T must be a number); no parameters."""
    length, width = _sequence(ctx, x, "sinusoidal_position")
    return ctx.b.add(x, ctx.b.const(sinusoid_table(length, width), x.type.dtype))


def sinusoid_table(length: int, width: int) -> np.ndarray:
    """`[length, width]`: column k holds sin (k even) or cos (k odd) of t / 10000^(2·⌊k/2⌋/width)."""
    t = np.arange(length, dtype=np.float64)[:, None]
    k = np.arange(width)
    angle = t / np.power(10000.0, (2 * (k // 2)) / width)
    return np.where(k % 2 == 0, np.sin(angle), np.cos(angle))


def _sequence(ctx, x: Node, fn: str) -> tuple[int, int]:
    """(T, D) of a sequence `[B, T, D]` with both known, or a compile error at `x`."""
    if not x.type.is_float:
        ctx.fail(f"`{fn}` expects float vectors `[B, T, D]`, got `{x.type}`", arg="x",
                 hint="embed token ids first: `ids |> embedding(vocab, dim)`" if x.type.dtype in INT_DTYPES else "")
    if x.type.rank != 3:
        ctx.fail(f"`{fn}` expects a sequence `[B, T, D]`, got `{x.type}`", arg="x",
                 label=f"this input is {x.type.rank}-D")
    _, length, width = x.type.shape
    if not isinstance(length, int):
        ctx.fail(f"`{fn}` needs a fixed sequence length, got `{x.type}`", arg="x",
                 hint=f"declare the length as a number, e.g. `{_dims(x, {1: 64})}`")
    if not isinstance(width, int):
        ctx.fail(f"`{fn}` needs a known width, got `{x.type}`", arg="x")
    return length, width


def _dims(node: Node, replace: dict[int, int] | None = None) -> str:
    """`[B, 20]`, or the node's type text with some dims replaced (`f32[B, 64, 8]`)."""
    dims = [str((replace or {}).get(i, d)) for i, d in enumerate(node.type.shape)]
    if replace is None:
        return "[" + ", ".join(dims) + "]"
    return f"{str(node.type).split('[')[0]}[{', '.join(dims)}]"
