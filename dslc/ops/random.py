"""Counter-based random numbers: a pure function of (seed, salt, element position), bit-identical in
every conforming ONNX runtime.

ONNX's random ops draw a new sequence per session, so a resumed run would not repeat them; here the
noise is computed by the graph from an int64 `seed` input that the driver sets every step. Every value
is a whole number below 2^24 held in float32, and every operation on them is exact (products of two
12-bit numbers, sums below 2^24, scaling by powers of two, floor), so no rounding happens anywhere:
a runtime that fuses a multiply and an add (FMA), or evaluates in float32 what it was given in float64,
still computes the same bits. Integer ops touch only the scalar seed (`Div`, `Mul`, `Sub` of
non-negative int64 values, exact by the ONNX spec).

A 24-bit state is two 12-bit halves (L, R). `mix` is a Feistel network whose round function squares
one half:

    round k:  y = (R + KEY[k]) mod 4096;  z = y·y;  L, R = R, (L + z div 4096 + z mod 4096) mod 4096
    absorb(state, v) = mix((L + v_hi) mod 4096, (R + v_lo) mod 4096)   for a 24-bit value v

The seed's three parts and the salt are absorbed (on scalars, 4 rounds each); then each axis of the
tensor, outermost first: its coordinate, itself hashed (`coordinate_hash`, 4 rounds from the axis
number: a constant for a static axis, a short vector for a symbolic one), is absorbed with 2 rounds on
the broadcast shape. u = (L·4096 + R) / 2^24 has 24 random bits. No `Range` and no `Reshape` of a flat
index: each axis is a vector broadcast against the others, so runtimes that plan symbolic shapes can.
tests/test_random.py checks uniformity and independence between neighbours, strides, seeds and salts.
"""
from __future__ import annotations

import numpy as np

from dslc.ir.graph import OpError
from dslc.ops.registry import OpDef, Sample, op

HALF = 4096.0  # 2^12: each half of the state
KEYS = (1597.0, 3001.0, 2417.0, 683.0)
SCALAR_ROUNDS = 4  # seed, salt and coordinates
AXIS_ROUNDS = 2  # the absorption of an (already hashed) coordinate into the broadcast state
MAX_AXIS = 2**24  # coordinates must be exact in float32


# ---- numpy definition (float32 throughout; every operation exact) ------------------------------------
def _mod(v):
    return v - np.floor(v * np.float32(1 / HALF)) * np.float32(HALF)


def _mix(left, right, rounds: int):
    for k in range(rounds):
        y = _mod(right + np.float32(KEYS[k]))
        z = y * y
        high = np.floor(z * np.float32(1 / HALF))
        left, right = right, _mod(left + high + (z - high * np.float32(HALF)))
    return left, right


def _absorb(state, high, low, rounds: int):
    return _mix(_mod(state[0] + high), _mod(state[1] + low), rounds)


def _halves(values) -> tuple[np.ndarray, np.ndarray]:
    """A non-negative integer below 2^24 (any integer: the seed's parts) as two float32 12-bit halves."""
    v = np.asarray(values, dtype=np.int64)
    return ((v // 4096) % 4096).astype(np.float32), (v % 4096).astype(np.float32)


def seed_state(seed: int, salt: int) -> tuple[np.float32, np.float32]:
    """The state after absorbing the seed (low 24 bits, then the rest with the salt)."""
    seed = int(seed)
    high, low = _halves(seed % 2**24)
    state = _absorb((np.float32(0), np.float32(0)), high, low, SCALAR_ROUNDS)
    return _absorb(state, np.float32(seed // 2**24), np.float32(salt % 4096), SCALAR_ROUNDS)


def coordinate_hash(axis: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The hashed coordinates 0..n-1 of axis `axis` (from 0): two float32 vectors of halves."""
    high, low = _halves(np.arange(n))
    return _absorb((np.float32(axis + 1), np.float32(0)), high, low, SCALAR_ROUNDS)


def uniform_numpy(shape, seed: int, salt: int, dtype) -> np.ndarray:
    """numpy twin of the `random_uniform_like` lowering (the same float32 operations)."""
    rank = len(shape)
    left, right = (np.reshape(v, (1,) * rank) for v in seed_state(seed, salt))
    for axis, n in enumerate(shape):
        where = [n if i == axis else 1 for i in range(rank)]
        high, low = (np.reshape(v, where) for v in coordinate_hash(axis, n))
        left, right = _absorb((left, right), high, low, AXIS_ROUNDS)
    u = (np.broadcast_to(left, shape) * np.float32(HALF) + np.broadcast_to(right, shape)) * np.float32(2.0**-24)
    return u.astype(dtype)


# ---- the same operations as ONNX nodes --------------------------------------------------------------
class _Nodes:
    def __init__(self, e):
        self.e = e

    def f32(self, v):
        return self.e.scalar(v, "float32")

    def mod(self, v):
        e = self.e
        return e.node("Sub", v, e.node("Mul", e.node("Floor", e.node("Mul", v, self.f32(1 / HALF))), self.f32(HALF)))

    def mix(self, left, right, rounds: int):
        e = self.e
        for k in range(rounds):
            y = self.mod(e.node("Add", right, self.f32(KEYS[k])))
            z = e.node("Mul", y, y)
            high = e.node("Floor", e.node("Mul", z, self.f32(1 / HALF)))
            low = e.node("Sub", z, e.node("Mul", high, self.f32(HALF)))
            left, right = right, self.mod(e.node("Add", e.node("Add", left, high), low))
        return left, right

    def absorb(self, state, high, low, rounds: int):
        e = self.e
        return self.mix(self.mod(e.node("Add", state[0], high)), self.mod(e.node("Add", state[1], low)), rounds)

    def seed_state(self, seed, salt: int):
        """`seed_state` of an int64 scalar input: its parts split with exact int64 `Div`/`Mul`/`Sub`."""
        e = self.e
        i64 = lambda v: e.scalar(v, "int64")  # noqa: E731
        to_f32 = lambda v: e.node("Cast", v, to=e.onnx_dtype("float32"))  # noqa: E731

        def split(v, d):
            quotient = e.node("Div", v, i64(d))
            return quotient, e.node("Sub", v, e.node("Mul", quotient, i64(d)))

        top, low24 = split(seed, 2**24)
        high, low = split(low24, 4096)
        state = self.absorb((self.f32(0.0), self.f32(0.0)), to_f32(high), to_f32(low), SCALAR_ROUNDS)
        return self.absorb(state, to_f32(top), self.f32(float(salt % 4096)), SCALAR_ROUNDS)

    def coordinates(self, x, axis: int, rank: int):
        """`coordinate_hash` of a symbolic axis, computed from x's shape; [n] reshaped to broadcast."""
        e = self.e
        length = e.node("Slice", e.node("Shape", x), e.int64s([axis]), e.int64s([axis + 1]))
        ones = e.node("Expand", self.f32(1.0), length)
        index = e.node("Sub", e.node("CumSum", ones, e.int64s(0, scalar=True)), self.f32(1.0))
        high = e.node("Floor", e.node("Mul", index, self.f32(1 / HALF)))
        low = e.node("Sub", index, e.node("Mul", high, self.f32(HALF)))
        high, low = self.absorb((self.f32(float(axis + 1)), self.f32(0.0)), self.mod(high), low, SCALAR_ROUNDS)
        others = [i for i in range(rank) if i != axis]
        if not others:
            return high, low
        return (e.node("Unsqueeze", v, e.int64s(others)) for v in (high, low))


@op("random_uniform_like", salt=0)
class RandomUniformLike(OpDef):
    """y ~ U[0, 1) with x's shape and dtype (24 random bits), from the scalar int64 `seed` (in
    [0, 2^31)) and the integer `salt` (one salt per use site, so two dropout layers draw different masks)"""

    samples = [Sample(((3, 4), ("int", (), 1000)), {"salt": 7}, grad=False),
               Sample(((6, 5, 2), ("int", (), 2**31 - 5)), {"salt": 2}, grad=False)]

    def infer(self, x, seed, *, salt):
        if not x.is_float:
            raise OpError(f"random numbers are floating-point; `{x}` is not")
        if seed.dtype != "int64" or seed.rank != 0:
            raise OpError(f"the seed must be an int64 scalar, got `{seed}`")
        if any(isinstance(d, int) and d >= MAX_AXIS for d in x.shape):
            raise OpError(f"random numbers need every axis shorter than 2^24, got `{x}`")
        return x

    def lower(self, e, x, seed, *, salt):
        nodes = _Nodes(e)
        rank = x.type.rank
        state = nodes.seed_state(seed, salt)
        for axis, n in enumerate(x.type.shape):
            if isinstance(n, int):
                where = [n if i == axis else 1 for i in range(rank)]
                high, low = (e.const(np.reshape(v, where)) for v in coordinate_hash(axis, n))
            else:
                high, low = nodes.coordinates(x, axis, rank)
            state = nodes.absorb(state, high, low, AXIS_ROUNDS)
        left, right = state  # every axis absorbed: broadcast to x's shape
        u = e.node("Mul", e.node("Add", e.node("Mul", left, nodes.f32(HALF)), right), nodes.f32(2.0**-24))
        return u if x.type.dtype == "float32" else e.node("Cast", u, to=e.onnx_dtype(x.type.dtype))

    def torch(self, T, x, seed, *, salt):
        return T.rand_like(x)  # the twin does not reproduce dslc's masks, only their cost

    def evaluate(self, x, seed, *, salt):
        return uniform_numpy(x.shape, int(seed), salt, x.dtype.type)
