"""The graph's random numbers (dropout masks): uniform, independent of their neighbours and across
seeds and salts, and the same in ONNX Runtime as in their numpy definition."""
from __future__ import annotations

import numpy as np
import pytest

from dslc.emit.onnx import emit_graph
from dslc.ir.graph import Builder, Graph
from dslc.ir.types import TensorType
from dslc.ops.random import uniform_numpy
from helpers import ort_session

SHAPE = (16, 64, 256)  # 262,144 numbers


def draw(seed: int, salt: int = 1, dtype: str = "float64") -> np.ndarray:
    b = Builder()
    x = b.input("x", TensorType(dtype, ("B",) + SHAPE[1:]), "data")
    s = b.input("seed", TensorType("int64", ()), "data")
    model = emit_graph(Graph("noise", [x, s], [("u", b.random_uniform_like(x, s, salt=salt))]))
    (u,) = ort_session(model).run(None, {"x": np.zeros(SHAPE, dtype), "seed": np.array(seed, np.int64)})
    return u.astype(np.float64).ravel()


def chi2_per_dof(counts: np.ndarray) -> float:
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum() / (counts.size - 1))


def pairs(a: np.ndarray, b: np.ndarray) -> float:
    counts, _, _ = np.histogram2d(a, b, bins=20, range=[[0, 1], [0, 1]])
    return chi2_per_dof(counts)


@pytest.fixture(scope="module")
def u():
    return draw(12345)


def test_uniform(u):
    assert u.min() >= 0 and u.max() <= 1
    assert abs(u.mean() - 0.5) < 0.003 and abs(u.var() - 1 / 12) < 0.002
    counts, _ = np.histogram(u, bins=100, range=(0, 1))
    assert chi2_per_dof(counts) < 1.5


@pytest.mark.parametrize("lag", [1, 2, 256, 64 * 256])
def test_neighbours_are_independent(u, lag):
    assert pairs(u[:-lag], u[lag:]) < 1.5


def test_seeds_and_salts_are_independent(u):
    assert pairs(u, draw(12346)) < 1.5
    assert pairs(u, draw(12345, salt=2)) < 1.5
    assert pairs(draw(0), draw(1)) < 1.5
    assert pairs(draw(5), draw(5 + 2**24)) < 1.5  # the seed's top bits
    assert pairs(draw(7), draw(7 + 4096)) < 1.5


def test_onnx_runtime_computes_the_numpy_definition_exactly():
    np.testing.assert_array_equal(draw(77, salt=5), uniform_numpy(SHAPE, 77, 5, np.float64).ravel())
    np.testing.assert_array_equal(draw(77, salt=5, dtype="float32"),
                                  uniform_numpy(SHAPE, 77, 5, np.float32).ravel().astype(np.float64))


def test_every_runtime_draws_the_same_bits_for_100_seeds():
    """Exact float32 arithmetic: ONNX Runtime and the reference evaluator give the numpy definition's bits,
    with a symbolic batch and a static one (the conformance suite checks the other runtimes)."""
    from onnx.reference import ReferenceEvaluator

    for batch in ("B", 3):
        b = Builder()
        x = b.input("x", TensorType("float32", (batch, 5, 7)), "data")
        s = b.input("seed", TensorType("int64", ()), "data")
        model = emit_graph(Graph("noise", [x, s], [("u", b.random_uniform_like(x, s, salt=3))]))
        session, reference = ort_session(model), ReferenceEvaluator(model)
        for seed in range(0, 2**31 - 1, (2**31 - 1) // 99):
            feeds = {"x": np.zeros((3, 5, 7), np.float32), "seed": np.array(seed, np.int64)}
            want = uniform_numpy((3, 5, 7), seed, 3, np.float32)
            assert session.run(None, feeds)[0].tobytes() == want.tobytes(), (batch, seed)
            assert reference.run(None, feeds)[0].tobytes() == want.tobytes(), (batch, seed)


def test_use_sites_sharing_a_seed_are_mixed_together():
    """The use sites with one seed and the same leading dimensions are one mix over their last axes side
    by side, split: each still draws `uniform_numpy`'s bits for its shape and salt (widths, dtypes and a
    rank-0 site differing; a symbolic last axis apart), and the graph holds one mix per group"""
    b = Builder()
    seed = b.input("seed", TensorType("int64", ()), "data")
    shapes = {"a": ("B", 5), "b": ("B", 7), "c": ("B", 5), "d": ("B", 3, 4), "e": (), "f": ("B", "N")}
    dtypes = {"c": "float64"}
    xs = {k: b.input(k, TensorType(dtypes.get(k, "float32"), shape), "data") for k, shape in shapes.items()}
    outputs = [(f"u_{k}", b.random_uniform_like(x, seed, salt=i + 1)) for i, (k, x) in enumerate(xs.items())]
    model = emit_graph(Graph("noise", [*xs.values(), seed], outputs))
    assert [n.op_type for n in model.graph.node].count("Split") == 1
    # a mix is 3 rounds of 2 `Floor`s and 2 in the output: the [B, 5|7|5] group's, [B, 3, 4]'s, [1]'s and
    # [B, N]'s; a symbolic axis's table 3 rounds and 1: B's (shared by ranks 2 and 3) and N's; the seed's 2
    assert [n.op_type for n in model.graph.node].count("Floor") == 8 * 4 + 7 * 2 + 2
    concrete = {"B": 3, "N": 6}
    feeds = {k: np.zeros([concrete.get(d, d) for d in shape], dtypes.get(k, "float32")) for k, shape in shapes.items()}
    for step_seed in (0, 2**31 - 2):
        results = ort_session(model).run(None, {**feeds, "seed": np.array(step_seed, np.int64)})
        for i, ((k, x), got) in enumerate(zip(xs.items(), results)):
            want = uniform_numpy(feeds[k].shape, step_seed, i + 1, feeds[k].dtype)
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (k, step_seed)


@pytest.mark.parametrize("dims, widths, runs", [
    (("B", 128), [128, 128], [[0, 1]]),                       # digits: one mix for its two layers
    (("B", 4096), [4096, 4096], [[0, 1]]),                    # 8192 elements an example: still shared
    (("B", 8000), [8000, 100, 100], [[0, 1], [2]]),          # in order, while the sum fits
    (("B", 64, 128), [128] * 5, [[0], [1], [2], [3], [4]]),   # transformer_lm: 8192 an example each
    (("B", "T", 8), [8, 8], [[0], [1]]),                      # a symbolic inner axis: unknown size
    ((), [1, 1], [[0, 1]]),
])
def test_sites_share_a_mix_while_their_rows_are_small(dims, widths, runs):
    from dslc.ops.random import _runs

    assert _runs(dims, widths) == runs


def test_dropout_keeps_the_expected_fraction(u):
    for rate in (0.1, 0.5, 0.9):
        assert abs(np.mean(u >= rate) - (1 - rate)) < 0.003


def integer_definition(shape: tuple, seed: int, salt: int) -> np.ndarray:
    """dslc/ops/random.py's docstring in int64 arithmetic: the Feistel rounds on 12-bit halves, the seed's
    halves, the per-axis coordinate tables summed and mixed, u = (L·4096 + R) / 2^24."""
    def mix(left, right):
        for key in (1597, 3001, 2417):
            z = ((right + key) % 4096) ** 2
            left, right = right, (left + z // 4096 + z % 4096) % 4096
        return left, right

    top, low24 = divmod(seed, 2**24)
    left, right = np.full((1,) * len(shape), low24 // 4096 + 139 * top), np.full((1,) * len(shape), low24 % 4096)
    for axis, n in enumerate(shape):
        i = np.arange(n).reshape([n if a == axis else 1 for a in range(len(shape))])
        table = mix((axis + 1 + i // 4096) % 4096, ((salt if axis == len(shape) - 1 else 0) + i % 4096) % 4096)
        left, right = left + table[0], right + table[1]
    left, right = mix(left % 4096, right % 4096)
    return (left * 4096 + right) / 2.0**24


@pytest.mark.parametrize("shape", [(3, 4), (2, 5000), (5000, 3), (2, 3, 4, 5)])
def test_the_graph_computes_the_integer_definition(shape):
    """The float32 operations (halves held as fractions, reduced only where squared) give the integer
    definition's bits, for axes longer than 4096 and seeds using the top bits"""
    for seed in (0, 1, 4097, 2**24 - 1, 2**24, 2**31 - 2):
        for salt in (0, 3, 4099):
            np.testing.assert_array_equal(uniform_numpy(shape, seed, salt, np.float64),
                                          integer_definition(shape, seed, salt), err_msg=f"{seed} {salt}")


# ---- what a cheaper design could lose: the relations between rows and columns of one draw, and between
# the draws of consecutive seeds. Bounds from the binomial distribution: with N independent fair bits the
# mean is 1/2 ± 0.5/√N, so 4.5 standard deviations (a false alarm once in ~150,000 runs) are below a 1%
# bias when N > (4.5·0.5/0.01)² = 50,625; every check below has more.
Z = 4.5


def bias_z(bits: np.ndarray, p_one: float = 0.5) -> float:
    """How many standard deviations the share of ones is from `p_one` (binomial)"""
    return float((bits.mean() - p_one) / np.sqrt(p_one * (1 - p_one) / bits.size))


def rectangle_bits(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """mask[b, j] ^ mask[b, k] ^ mask[b', j] ^ mask[b', k] for disjoint row pairs (b, b') and column pairs
    (j, k): the four bits' XOR, 0 for every rectangle if the mask were any function of row + column"""
    (b, b2), (j, k) = rows.reshape(2, -1), cols.reshape(2, -1)
    return (mask[b][:, j] ^ mask[b][:, k] ^ mask[b2][:, j] ^ mask[b2][:, k]).ravel()


def rectangle_differences(u: np.ndarray) -> np.ndarray:
    """(u[b, j] - u[b, j+1] - u[b+1, j] + u[b+1, j+1]) mod 1 over disjoint 2x2 blocks: uniform if the
    numbers are independent, a few values if they were an additive function of row and column"""
    a, b, c, d = u[0::2, 0::2], u[0::2, 1::2], u[1::2, 0::2], u[1::2, 1::2]
    return ((a - b - c + d) % 1.0).ravel()


def rectangle_z(u: np.ndarray) -> list[float]:
    """The rectangle checks of one [B, n] draw, as z-scores: the XOR of p = 0.5 mask bits over adjacent
    and over random rows and columns, and a chi-square on the top 8 bits of the differences (its
    excess over its mean 255, in standard deviations √510)"""
    mask = u < 0.5
    rng = np.random.default_rng(0)
    adjacent = [rectangle_bits(mask, np.arange(u.shape[0]).reshape(-1, 2).T, np.arange(u.shape[1]).reshape(-1, 2).T)]
    spread = [rectangle_bits(mask, rng.permutation(u.shape[0]), rng.permutation(u.shape[1])) for _ in range(2)]
    counts, _ = np.histogram(rectangle_differences(u), bins=256, range=(0, 1))
    return [bias_z(bits) for bits in adjacent + spread] + [(chi2_per_dof(counts) * 255 - 255) / np.sqrt(510)]


def test_rectangles_of_rows_and_columns_are_independent():
    """262,144 rectangles a check (131,072 for the differences' chi-square), in the layer shape of a dense
    layer's input and with a leading axis beside it"""
    u = uniform_numpy((1024, 1024), 2**31 - 5, 1, np.float64)
    assert max(abs(z) for z in rectangle_z(u)) < Z
    v = uniform_numpy((512, 4, 512), 99, 3, np.float64)
    assert max(abs(z) for z in rectangle_z(v[:, 1, :])) < Z
    assert max(abs(z) for z in rectangle_z(v[:, :, 7].reshape(256, 8))) < Z


def test_the_rectangle_checks_catch_a_sum_of_hashed_coordinates():
    """The checks can fail: one or two Feistel rounds on the sum of a row table and a column table (each
    fully hashed: the cheaper design that mixes the seed into the batch axis's table first) leave the
    additive relation (two rounds: in the differences' top 8 bits only, z = 36), three do not"""
    from dslc.ops.random import _mix, _unit, coordinate_hash

    rows, cols = (coordinate_hash(axis, 1024) for axis in (0, 1))
    state = [r[:, None] + c[None, :] for r, c in zip(rows, cols)]
    for rounds, weak in ((1, True), (2, True), (3, False)):
        z = rectangle_z(_unit(*_mix(*state, rounds=rounds)).astype(np.float64))
        assert (max(abs(v) for v in z) > Z) == weak, (rounds, z)


def test_rows_and_columns_are_uncorrelated():
    """Pearson correlations of the numbers in adjacent and in random rows, and columns, of one draw:
    |r|·√N below 4.5 with N = 1,048,576 pairs, and the p = 0.5 masks agreeing half the time. Random rows
    are a random order's neighbours, so that no row is paired with itself."""
    u = uniform_numpy((1024, 1024), 4321, 2, np.float64)
    order = np.random.default_rng(1).permutation(u.shape[0])
    for a in (u, u.T):
        for first, other in ((a, np.roll(a, 1, axis=0)), (a[order], a[np.roll(order, 1)])):
            r = np.corrcoef(first.ravel(), other.ravel())[0, 1]
            assert abs(r) * np.sqrt(a.size) < Z
            assert abs(bias_z((first < 0.5) == (other < 0.5))) < Z


@pytest.mark.parametrize("step", [1, 4096, 2**24, 1000003])
def test_masks_of_related_seeds_are_independent(step):
    """64 seeds a step apart (consecutive; the seed's high half; its top bits; a run seed's multiplier in
    `step_seed`), each pair of neighbours and of seeds 7 apart (1,032,192 pairs of positions a check): the
    p = 0.5 masks agree half the time, and both drop a position as often as independent masks would at
    rates 0.1, 0.2 and 0.5. (The difference u - u' mod 1 of two seeds at one position is not uniform at
    finer resolution, whatever the seeds' distance: ~1% of pairs fall within 1/256 below 0 against 0.4%,
    with 3, 4 or 5 rounds alike; a property of the squaring rounds that these masks' rates do not show.)"""
    seeds = [(2**24 - 32 * min(step, 4096) + i * step) % 2**31 for i in range(64)]
    draws = np.stack([uniform_numpy((256, 64), s, 1, np.float64) for s in seeds])
    for shift in (1, 7):
        a, b = draws[:-shift], draws[shift:]
        assert abs(bias_z((a < 0.5) == (b < 0.5))) < Z, shift
        for rate in (0.1, 0.2, 0.5):
            assert abs(bias_z((a < rate) & (b < rate), rate * rate)) < Z, (shift, rate)
