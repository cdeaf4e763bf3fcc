"""Counter-based random numbers: a pure function of (seed, salt, element index).

ONNX's random ops draw a new sequence per session, so a resumed run would not repeat them. Here
the noise is computed by the graph from an int64 `seed` input that the driver sets every step, with
integer ops only (exact in every runtime): the same seed gives the same noise anywhere.
"""
from __future__ import annotations

import numpy as np

from dslc.ir.graph import OpError
from dslc.ops.registry import OpDef, Sample, op

MODULUS = 2147483647  # 2^31 - 1, so a product of two residues fits in int64
ROUNDS = ((48271, 69621), (16807, 39373), (69621, 48271))


def _seed_offset(seed, salt):
    return ((seed % MODULUS) * 16807 + salt * 1000003 + 12345) % MODULUS


def uniform_numpy(shape, seed: int, salt: int, dtype) -> np.ndarray:
    """numpy twin of the `random_uniform_like` lowering (same integers, same floats)."""
    n = int(np.prod(shape))
    h = (np.arange(n, dtype=np.int64) + _seed_offset(np.int64(seed), salt)) % MODULUS
    for mul, mix in ROUNDS:
        h = (h * mul) % MODULUS
        h = (h + (h // 8192) * mix) % MODULUS
    return ((h // 128).astype(dtype) / dtype(1 << 24)).reshape(shape)


@op("random_uniform_like", salt=0)
class RandomUniformLike(OpDef):
    """y ~ U[0, 1) with x's shape and dtype, from the scalar int64 `seed` and the integer `salt`
    (one salt per use site, so two dropout layers draw different masks)"""

    samples = [Sample(((3, 4), ("int", (), 1000)), {"salt": 7}, grad=False)]

    def infer(self, x, seed, *, salt):
        if not x.is_float:
            raise OpError(f"random numbers are floating-point; `{x}` is not")
        if seed.dtype != "int64" or seed.rank != 0:
            raise OpError(f"the seed must be an int64 scalar, got `{seed}`")
        return x

    def lower(self, e, x, seed, *, salt):
        i64 = lambda v: e.int64s(v, scalar=True)  # noqa: E731
        count = e.node("ReduceProd", e.node("Shape", x), keepdims=1)
        index = e.node("Range", i64(0), e.node("Squeeze", count, e.int64s([0])), i64(1))
        offset = e.node("Mod", e.node("Add", e.node("Add", e.node("Mul", e.node("Mod", seed, i64(MODULUS)), i64(16807)),
                                                    i64(salt * 1000003)), i64(12345)), i64(MODULUS))
        h = e.node("Mod", e.node("Add", index, offset), i64(MODULUS))
        for mul, mix in ROUNDS:
            h = e.node("Mod", e.node("Mul", h, i64(mul)), i64(MODULUS))
            h = e.node("Mod", e.node("Add", h, e.node("Mul", e.node("Div", h, i64(8192)), i64(mix))), i64(MODULUS))
        dt = x.type.dtype
        u = e.node("Div", e.node("Cast", e.node("Div", h, i64(128)), to=e.onnx_dtype(dt)), e.scalar(float(1 << 24), dt))
        return e.node("Reshape", u, e.node("Shape", x))

    def torch(self, T, x, seed, *, salt):
        return T.rand_like(x)  # the twin does not reproduce dslc's masks, only their cost

    def evaluate(self, x, seed, *, salt):
        return uniform_numpy(x.shape, int(seed), salt, x.dtype.type)
