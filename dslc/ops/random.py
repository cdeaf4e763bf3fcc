"""Counter-based random numbers: a pure function of (seed, salt, element position), bit-identical in
every conforming ONNX runtime.

ONNX's random ops draw a new sequence per session, so a resumed run would not repeat them; here the
noise is computed by the graph from an int64 `seed` input that the driver sets every step. Every value
held in float32 has at most 24 significant bits, and every operation on them is exact (products of two
12-bit numbers, sums of whole numbers of 2^-12 below 2^12, scaling by powers of two, floor), so no
rounding happens anywhere: a runtime that fuses a multiply and an add (FMA), or evaluates in float32
what it was given in float64, still computes the same bits. Integer ops touch only the scalar seed
(`Div`, `Mul`, `Sub` of non-negative int64 values, exact by the ONNX spec; see `seed_halves` for
OpenVINO's division).

A 24-bit state is two 12-bit halves (L, R); `mix` is a Feistel network whose round function squares
one half:

    round k:  y = (R + KEY[k]) mod 4096;  z = y·y;  L, R = R, (L + z div 4096 + z mod 4096) mod 4096

Each axis has a table of hashed coordinates, `coordinate_hash(axis, i, salt)` = mix((axis + 1 + i_hi,
salt + i_lo) mod 4096, 3 rounds), the use site's salt entering through the last axis only (a constant
for a static axis; for a symbolic one, a short vector computed once per graph). With the seed's halves
(s_hi + 139·top, s_lo) for seed = top·2^24 + s_hi·4096 + s_lo:

    (L, R) = mix((s_hi + 139·top + Σ_axes table_L) mod 4096, (s_lo + Σ_axes table_R) mod 4096, 3 rounds)
    u = (L·4096 + R) / 2^24                                    (24 random bits, in [0, 1))

The graph holds each half as the fraction Y/4096 (a whole number of 2^-12), so that `mod 4096` is
`frac(v) = v - floor(v)`, two nodes instead of four, and the fold `z div 4096 + z mod 4096` is
w - floor(w)·4095/4096 of w = y·y·4096, with y = Y/4096 (the same integers scaled by powers of two:
exact). A half is reduced only where it is squared, as `frac` of its sum with the round's key, and at
the output: everything else uses it modulo 1, so sums carry their whole parts (a few units, far below
the 2^12 that 12 fractional bits leave). A round is 9 nodes, a mix 35 (3 rounds, the two table
sums, the 6-node output); it was 53 with the halves held as integers, with the same bits. And the use
sites with one seed and the same leading dimensions (the dropout layers of an MLP: [B, n1], [B, n2])
share one mix over their last axes side by side, split after, while an example's part stays small
(`_columns`, `_runs`).

No `Range` and no `Reshape` of a flat index: each axis's table is a vector broadcast against the others,
so runtimes that plan symbolic shapes can. The seed's halves and the sums over the leading axes are
shared by every use site in a graph. tests/test_random.py checks uniformity and independence between
neighbours, strides, rows and columns (the 2x2 rectangles that an additive combination of the axes'
tables would leave), seeds (consecutive, and differing in their top bits) and salts.
"""
from __future__ import annotations

import numpy as np

from dslc.ir.graph import OpError
from dslc.ops.registry import OpDef, Sample, op

HALF = 4096.0  # 2^12: each half of the state
KEYS = (1597.0, 3001.0, 2417.0)
TOP = 139.0  # the seed's bits above 24 enter the left half scaled by this
ROUNDS = 3  # of the coordinate hashes and of the final mix
MAX_AXIS = 2**24  # coordinates must be exact in float32


# ---- numpy definition (float32 throughout; every operation exact) ------------------------------------
def _frac(v, floor=np.floor):
    return v - floor(v)


def _square_folded(y, floor=np.floor):
    """(z div 4096 + z mod 4096) / 4096 of z = Y² for the half y = Y/4096: w = Y²/4096 = high + low/4096,
    and w - floor(w)·4095/4096 = (high + low)/4096, in [0, 2)"""
    w = y * y * np.float32(HALF)
    return w - floor(w) * np.float32((HALF - 1) / HALF)


def _mix(left, right, floor=np.floor, rounds=ROUNDS):
    """The Feistel rounds of halves held as fractions (Y/4096), unreduced: a round's sum is reduced only
    where it is squared (`_frac` of it plus the key), and the output's, since every later use of a half
    is modulo 1. Returns (L, R) unreduced, congruent modulo 1 to the integer definition's over 4096.
    `floor`: numpy's, or torch's for the twin's float32 tensors (the same exact operations); `rounds`
    fewer than 3 only where tests show what fewer would lose."""
    for key in KEYS[:rounds]:
        left, right = right, left + _square_folded(_frac(right + np.float32(key / HALF), floor), floor)
    return left, right


def _unit(left, right, floor=np.floor):
    """u = (L·4096 + R) / 2^24 of mixed halves: frac(left) + frac(right)/4096 (both reduced first: an
    integer part beside 24 fractional bits would not be exact)."""
    return _frac(left, floor) + _frac(right, floor) * np.float32(1 / HALF)


def seed_halves(seed: int) -> tuple[np.float32, np.float32]:
    """(s_hi + 139·top, s_lo) / 4096 of a seed in [0, 2^31)."""
    seed = int(seed)
    top, low24 = divmod(seed, 2**24)
    return np.float32((low24 // 4096 + TOP * top) / HALF), np.float32(low24 % 4096 / HALF)


def coordinate_hash(axis: int, n: int, salt: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The hashed coordinates 0..n-1 of axis `axis` (from 0): two float32 vectors of halves (fractions in
    [0, 1): reduced here, where it costs the graph nothing)."""
    index = np.arange(n, dtype=np.int64)
    high, low = (index // 4096).astype(np.float32), (index % 4096).astype(np.float32)
    left, right = _mix((np.float32(axis + 1) + high) * np.float32(1 / HALF),
                       (np.float32(salt % 4096) + low) * np.float32(1 / HALF))
    return _frac(left), _frac(right)


def uniform_numpy(shape, seed: int, salt: int, dtype) -> np.ndarray:
    """numpy twin of the `random_uniform_like` lowering (the same float32 operations). A rank-0 tensor
    is drawn as shape [1]."""
    return _uniform(tuple(shape), seed, salt, np.asarray, np.floor).astype(dtype)


def _uniform(shape: tuple, seed: int, salt: int, array, floor):
    """`uniform_numpy` in float32 with the array library's `array` (from a numpy array) and `floor`: the
    per-axis tables are vectors made in numpy, their broadcast sum and the final mix in that library."""
    dims = shape or (1,)
    rank = len(dims)
    left, right = (array(np.full((1,) * rank, v, np.float32)) for v in seed_halves(seed))
    for axis, n in enumerate(dims):
        where = [n if i == axis else 1 for i in range(rank)]
        table_left, table_right = coordinate_hash(axis, n, salt if axis == rank - 1 else 0)
        left, right = left + array(table_left.reshape(where)), right + array(table_right.reshape(where))
    return _unit(*_mix(left, right, floor), floor).reshape(shape)


# ---- the same operations as ONNX nodes --------------------------------------------------------------
class _Nodes:
    def __init__(self, e):
        self.e = e

    def f32(self, v):
        return self.e.scalar(v, "float32")

    def frac(self, v):
        # not ONNX `Mod` (fmod=1): as exact, but ONNX Runtime's float kernel made the digits step 2.4x slower
        return self.e.node("Sub", v, self.e.node("Floor", v))

    def mix(self, left, right):
        """`_mix`: 9 nodes a round"""
        e = self.e
        for key in KEYS[:ROUNDS]:
            y = self.frac(e.node("Add", right, self.f32(key / HALF)))
            w = e.node("Mul", e.node("Mul", y, y), self.f32(HALF))
            folded = e.node("Sub", w, e.node("Mul", e.node("Floor", w), self.f32((HALF - 1) / HALF)))
            left, right = right, e.node("Add", left, folded)
        return left, right

    def unit(self, left, right):
        """`_unit`"""
        e = self.e
        return e.node("Add", self.frac(left), e.node("Mul", self.frac(right), self.f32(1 / HALF)))

    def seed_halves(self, seed):
        """`seed_halves` of an int64 scalar input in 13 nodes. The quotient q by 4096 is an int64 `Div`,
        but OpenVINO divides integers through float32 (2^31 - 2 divided by 2^24 gave 128), so q may be
        off by a few: the remainder seed - 4096·q (exact in int64, and small) is divided in float32, where
        it is exact, its floor corrects q and its fraction is s_lo / 4096. Then q < 2^19 is exact in float32:
        q / 4096 = top + s_hi / 4096, and (s_hi + 139·top) / 4096 = q / 4096 - top·(4096 - 139) / 4096."""
        e = self.e
        to_f32 = lambda v: e.node("Cast", v, to=e.onnx_dtype("float32"))  # noqa: E731

        quotient = e.node("Div", seed, e.scalar(4096, "int64"))
        rest = e.node("Mul", to_f32(e.node("Sub", seed, e.node("Mul", quotient, e.scalar(4096, "int64")))),
                      self.f32(1 / HALF))
        carry = e.node("Floor", rest)
        scaled = e.node("Mul", e.node("Add", to_f32(quotient), carry), self.f32(1 / HALF))  # top + s_hi/4096
        top = e.node("Floor", scaled)
        left = e.node("Sub", scaled, e.node("Mul", top, self.f32((HALF - TOP) / HALF)))
        return left, e.node("Sub", rest, carry)

    def coordinates(self, x, axis: int, rank: int, salt: int):
        """`coordinate_hash` of a symbolic axis, from x's shape: [n] (once per graph for each axis, length
        and salt), unsqueezed to broadcast on `axis`; left unreduced (congruent modulo 1, which is all its
        sums' uses see)."""
        e = self.e

        def table():
            length = e.node("Slice", e.node("Shape", x), e.int64s([axis]), e.int64s([axis + 1]))
            index = e.node("Sub", e.node("CumSum", e.node("Expand", self.f32(1.0), length), e.int64s(0, scalar=True)),
                           self.f32(1.0))
            scaled = e.node("Mul", index, self.f32(1 / HALF))  # i_hi + i_lo/4096: i_lo/4096 modulo 1
            left = e.node("Mul", e.node("Add", e.node("Floor", scaled), self.f32(float(axis + 1))), self.f32(1 / HALF))
            return self.mix(left, e.node("Add", scaled, self.f32(salt % 4096 / HALF)) if salt % 4096 else scaled)

        vectors = e.cached(("random.coordinates", axis, x.type.shape[axis], salt % 4096), table)
        others = [i for i in range(rank) if i != axis]
        return tuple(e.node("Unsqueeze", v, e.int64s(others)) for v in vectors) if others else vectors


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
        dims = _drawn(x.type)
        if isinstance(dims[-1], int):
            # every use site with this seed and these leading dimensions at once (`_columns`)
            u = e.cached(("random.columns", seed.name, dims[:-1]), lambda: _columns(e, nodes, x, seed))[e.lowering.id]
        else:
            last = nodes.coordinates(x, len(dims) - 1, len(dims), salt)
            u = nodes.unit(*nodes.mix(*_summed(e, nodes, x, seed, last)))
        if not x.type.shape:
            u = e.node("Reshape", u, e.int64s([]))
        return u if x.type.dtype == "float32" else e.node("Cast", u, to=e.onnx_dtype(x.type.dtype))

    def torch(self, T, x, seed, *, salt):
        # dslc's own numbers (its masks), so that the twin's first step can match dslc's in `dslc bench`
        return _uniform(tuple(x.shape), int(seed), salt, T.from_numpy, T.floor).to(x.dtype)

    def evaluate(self, x, seed, *, salt):
        return uniform_numpy(x.shape, int(seed), salt, x.dtype.type)


def _drawn(t) -> tuple:
    """The shape the numbers of a tensor of type `t` are drawn in (a rank-0 tensor's as [1])"""
    return t.shape or (1,)


def _summed(e, nodes: _Nodes, x, seed, last_table):
    """The state before the mix: the seed's halves plus every axis's table, the last axis's given. The
    seed's halves and the sums over the leading axes depend on the seed and the leading dimensions only:
    computed once per graph and shared by every use site (`Emitter.cached`)."""
    dims = _drawn(x.type)
    rank = len(dims)
    state = e.cached(("random.seed", seed.name), lambda: nodes.seed_halves(seed))
    for axis, n in enumerate(dims[:-1]):
        def added(state=state, axis=axis, n=n):
            if isinstance(n, int):
                where = [n if i == axis else 1 for i in range(rank)]
                table = [e.const(np.reshape(v, where)) for v in coordinate_hash(axis, n)]
            else:
                table = nodes.coordinates(x, axis, rank, 0)
            return e.node("Add", state[0], table[0]), e.node("Add", state[1], table[1])

        state = e.cached(("random.prefix", seed.name, rank, dims[:axis + 1]), added)
    return e.node("Add", state[0], last_table[0]), e.node("Add", state[1], last_table[1])


def _columns(e, nodes: _Nodes, x, seed) -> dict[int, str]:
    """The numbers of every `random_uniform_like` node of the graph that shares this one's seed and
    leading dimensions and has a static last axis, by node id: the nodes in runs (`_runs`) whose last
    axes' tables lie side by side in one constant, one mix over each run, a `Split` into each node's
    columns. The same numbers as one mix per node (each element's own operations)."""
    dims = _drawn(x.type)
    rank = len(dims)
    members = [n for n in e.ir_nodes if n.op == "random_uniform_like" and n.inputs[1].id == e.lowering.inputs[1].id
               and _drawn(n.inputs[0].type)[:-1] == dims[:-1] and isinstance(_drawn(n.inputs[0].type)[-1], int)]
    drawn = {}
    for run in _runs(dims, [_drawn(n.inputs[0].type)[-1] for n in members]):
        widths = [_drawn(members[i].inputs[0].type)[-1] for i in run]
        tables = [coordinate_hash(rank - 1, width, members[i].attrs["salt"]) for i, width in zip(run, widths)]
        last = [e.const(np.concatenate([t[half] for t in tables]).reshape((1,) * (rank - 1) + (-1,))) for half in (0, 1)]
        u = nodes.unit(*nodes.mix(*_summed(e, nodes, x, seed, last)))
        parts = e.node_outputs("Split", len(run), u, e.int64s(widths), axis=rank - 1) if len(run) > 1 else [u]
        drawn.update((members[i].id, part) for i, part in zip(run, parts))
    return drawn


SHARED_MIX_ROW = 8192  # elements of one example (all axes but the first) up to which use sites share a mix


def _runs(dims: tuple, widths: list[int]) -> list[list[int]]:
    """Which use sites (by index) share a mix: consecutive ones while an example's part of the shared
    tensor stays within SHARED_MIX_ROW elements. Where a mix's nodes are cheap (an ONNX Runtime binary
    element-wise node costs 0.7 µs on [32, 128] as on [32, 1]) one mix for two dropout layers costs half
    as much: digits -5.8% instructions a step, and with `-D hidden=4096` ([B, 4096] twice, 1 MB at batch
    32) still 6% faster; transformer_lm's five [B, 64, 128] with `-D rate=0.1` side by side (5 MB) made
    its step 2-3% slower than five mixes."""
    inner = dims[1:-1] if len(dims) > 1 else ()
    row = int(np.prod(inner)) if all(isinstance(d, int) for d in inner) else SHARED_MIX_ROW + 1
    runs: list[list[int]] = []
    for i, width in enumerate(widths):
        if runs and row * (sum(widths[j] for j in runs[-1]) + width) <= SHARED_MIX_ROW:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs
