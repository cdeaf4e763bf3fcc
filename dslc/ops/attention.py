"""Attention ops. Attention itself is built from registered ops by the `attention` builtin
(`dslc/layers/attention.py`); what needs an op of its own is the causal mask when the sequence length
is only known at run time."""
from __future__ import annotations

import numpy as np

from dslc.ir.graph import OpError
from dslc.ops.registry import OpDef, Sample, expect_float, op

MASKED = -1e9  # added to the scores of masked positions: exp underflows to exactly 0 after softmax,
# and a row with every position masked stays finite (uniform) instead of becoming NaN as with -inf


@op("causal_bias")
class CausalBias(OpDef):
    """y[i, j] = 0 where key j <= query i, else -1e9: the additive causal mask for scores
    `[..., Tq, Tk]` (top-left aligned, like PyTorch's `is_causal`), of shape `[Tq, Tk]`. The scores are
    read for their shape only (no gradient flows through it). A constant when both lengths are known;
    otherwise built at run time from Range and Greater."""

    samples = [Sample(((2, 4, 4),)), Sample(((3, 2, 5),))]

    def infer(self, scores):
        expect_float(scores, "score tensor")
        if scores.rank < 2:
            raise OpError(f"a causal mask needs scores `[..., queries, keys]`, got `{scores}`")
        return scores.with_shape(scores.shape[-2:])

    def lower(self, e, scores):
        dt = scores.type.dtype
        queries, keys = scores.type.shape[-2:]
        if isinstance(queries, int) and isinstance(keys, int):
            return e.const(self.mask(queries, keys, dt))
        rank = scores.type.rank
        size = lambda axis: e.node("Squeeze", e.node("Shape", scores, start=axis, end=axis + 1))  # noqa: E731
        positions = lambda n: e.node("Range", e.int64s(0, scalar=True), n, e.int64s(1, scalar=True))  # noqa: E731
        later = e.node("Greater", e.node("Unsqueeze", positions(size(rank - 1)), e.int64s([0])),
                       e.node("Unsqueeze", positions(size(rank - 2)), e.int64s([1])))
        return e.node("Mul", e.node("Cast", later, to=e.onnx_dtype(dt)), e.scalar(MASKED, dt))

    @staticmethod
    def mask(queries: int, keys: int, dtype) -> np.ndarray:
        later = np.arange(keys)[None, :] > np.arange(queries)[:, None]
        return (later * MASKED).astype(dtype)

    def evaluate(self, scores):
        return self.mask(*scores.shape[-2:], scores.dtype)

    def torch(self, T, scores):
        queries, keys = scores.shape[-2:]
        return T.full((queries, keys), MASKED, dtype=scores.dtype).triu(1)

    def grad(self, b, g, out, scores):
        return [None]
