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
