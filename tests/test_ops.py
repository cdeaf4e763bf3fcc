"""The op registry is the test table: every sample of every op, run as a one-op graph.

For each `(op, sample)` of `REGISTRY` (except the sources `input`/`const`):
- the shape rule (`infer`) gives the shape and dtype ONNX Runtime produces;
- ONNX Runtime agrees with the op's numpy semantics (`evaluate`) and with `onnx.reference`;
- for differentiable ops, the gradient built by `autodiff.gradients` agrees with float64 central
  finite differences (3 random directions, and every coordinate);
- the float32 variant runs too (same types, values to 2e-6 of the float64 semantics);
- every sample whose shape rule accepts a leading symbolic dim `B` also runs that way, at another batch
  size: types, values and (directional) gradients again.

Error metrics (float64; finite differences with `eps = 1e-6`):
- forward: element-wise relative error `|ort - ref| / (|ref| + rtol·max|ref|) <= rtol` (1e-12 against
  `evaluate`, 1e-10 against onnx.reference; the `rtol·max|ref|` term only matters for elements that
  are 0 up to rounding); integer and bool results must be equal;
- gradient, directional: `|fd - an| / max(|fd|, |an|, 1e-8)` for `an = Σ <grad_i, d_i>`;
- gradient, per coordinate: `|fd_j - an_j| / max(|fd_j|, |an_j|, 1e-3·max_k |an_k|, 1e-8)`: relative
  per element, except that elements more than 1000x smaller than the largest gradient element of that
  input are measured against 1/1000 of it (their finite difference is dominated by rounding noise).
The loss is `Σ out·R` for a fixed random `R`; finite differences are taken of the outputs before the
sum, `Σ (out(x + εd) - out(x - εd))·R / 2ε`, which keeps the loss's own rounding out of the difference.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from dslc.emit.onnx import check, emit_graph
from dslc.ir.graph import Builder, Graph
from dslc.ir.types import TensorType, numpy_dtype
from dslc.ops import REGISTRY, Sample
from dslc.ops import conv as conv_ops
from dslc.passes.autodiff import gradients
from helpers import ort_session

SOURCES = ("input", "const")
OPS = {name: opdef for name, opdef in REGISTRY.items() if name not in SOURCES}
CASES = [(name, k) for name, opdef in OPS.items() for k in range(len(opdef.samples))]
IDS = [f"{name}-{k}" for name, k in CASES]

EPS = 1e-6
RTOL_NUMPY = 1e-12  # ORT vs `evaluate`, float64
RTOL_REFERENCE = 1e-10  # ORT vs onnx.reference, float64
RTOL_GRAD = 1e-6
RTOL_FLOAT32 = 2e-6  # ORT float32 vs `evaluate` in float64 on the same (float32-representable) values
DIRECTIONS = 3
MAX_COORDS = 128  # inputs with at most this many float elements are also checked coordinate by coordinate
BATCH = "B"


# ---- building one-op graphs ------------------------------------------------------------------------
def parse_input(spec):
    """`(kind, shape, high)` of one sample input; kind is float, positive, int or bool."""
    if isinstance(spec, tuple) and spec and isinstance(spec[0], str):
        kind, shape, *rest = spec
        return kind, tuple(shape), (rest[0] if rest else None)
    return "float", tuple(spec), None


def input_type(kind: str, shape, float_dtype: str) -> TensorType:
    return TensorType({"int": "int64", "bool": "bool"}.get(kind, float_dtype), tuple(shape))


def random_value(kind: str, shape, high, float_dtype: str, rng: np.random.Generator) -> np.ndarray:
    dt = numpy_dtype(input_type(kind, shape, float_dtype).dtype)
    if kind == "float":
        return rng.standard_normal(shape).astype(dt)
    if kind == "positive":
        return rng.uniform(0.5, 2.0, shape).astype(dt)
    if kind == "int":
        return np.asarray(rng.integers(0, high, shape), dtype=dt)
    if kind == "bool":
        return rng.random(shape) < 0.5
    raise ValueError(f"unknown sample input kind {kind!r}")


def case_rng(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


class OneOp:
    """One op applied to graph inputs `in0, in1, ...`; inputs flagged in `symbolic` get the leading
    dim `B`, and `concrete` keeps the sample's shape of every input."""

    def __init__(self, name: str, sample: Sample, float_dtype: str = "float64", symbolic: tuple[bool, ...] = ()):
        self.name, self.sample, self.float_dtype = name, sample, float_dtype
        specs = [parse_input(s) for s in sample.inputs]
        self.kinds = [k for k, _, _ in specs]
        self.highs = [h for _, _, h in specs]
        self.concrete = [shape for _, shape, _ in specs]
        b = Builder()
        self.inputs = []
        for i, (kind, shape, _) in enumerate(specs):
            sym = bool(symbolic) and symbolic[i]
            declared = ((BATCH,) + shape[1:]) if sym else shape
            self.inputs.append(b.input(f"in{i}", input_type(kind, declared, float_dtype), "data"))
        self.out = b.emit(name, *self.inputs, **sample.attrs)
        self.attrs = self.out.attrs
        self.b = b

    def values(self, rng: np.random.Generator, batch: int | None = None) -> list[np.ndarray]:
        arrays = []
        for inp, kind, shape, high in zip(self.inputs, self.kinds, self.concrete, self.highs):
            if batch is not None and inp.type.shape and inp.type.shape[0] == BATCH:
                shape = (batch,) + shape[1:]
            arrays.append(random_value(kind, shape, high, self.float_dtype, rng))
        return arrays

    def forward_model(self):
        return emit_graph(Graph(f"{self.name}.forward", list(self.inputs), [("out", self.out)]))

    def float_inputs(self) -> list[int]:
        return [i for i, inp in enumerate(self.inputs) if inp.type.is_float]

    def flowing_inputs(self) -> list[int]:
        """The float inputs the op's gradient rule gives a gradient (not `None`) for."""
        g = self.b.input("g", self.out.type, "data")
        grads = OPS[self.name].grad(self.b, g, self.out, *self.inputs, **self.attrs)
        return [i for i in self.float_inputs() if grads[i] is not None]

    def gradient_model(self, wrt: list[int]):
        """Outputs `out` and `grad<i>` = d Σ(out·R)/d in<i> for each i in `wrt`; `R` is an input."""
        r = self.b.input("R", self.out.type, "data")
        loss = self.b.reduce_sum(self.b.mul(self.out, r))
        grads = gradients(loss, [self.inputs[i] for i in wrt])
        outputs = [("out", self.out)] + [(f"grad{i}", g) for i, g in zip(wrt, grads)]
        return emit_graph(Graph(f"{self.name}.gradient", list(self.inputs) + [r], outputs))


def feeds_of(arrays) -> dict[str, np.ndarray]:
    return {f"in{i}": a for i, a in enumerate(arrays)}


def concrete_shape(shape, batch: int | None) -> tuple[int, ...]:
    return tuple(batch if d == BATCH else d for d in shape)


def max_rel_error(actual: np.ndarray, expected: np.ndarray, rtol_floor: float) -> float:
    """max over elements of |a - e| / (|e| + rtol_floor·max|e|) (the absolute difference where the
    reference is all zeros)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    diff = np.abs(actual - expected)
    if not diff.any():
        return 0.0
    denom = np.abs(expected) + rtol_floor * np.max(np.abs(expected))
    return float(np.max(diff / np.where(denom > 0, denom, 1.0)))


def assert_close(actual, expected, rtol: float, what: str):
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if not np.issubdtype(expected.dtype, np.floating):
        assert np.array_equal(actual, expected), f"{what}: values differ\n{actual}\n!=\n{expected}"
        return
    finite = np.isfinite(expected)
    assert np.array_equal(np.isfinite(actual), finite), f"{what}: non-finite values differ\n{actual}\n!=\n{expected}"
    assert np.array_equal(actual[~finite], expected[~finite], equal_nan=True), f"{what}: infinities differ"
    err = max_rel_error(actual[finite], expected[finite], rtol)
    assert err <= rtol, f"{what}: max relative error {err:.3g} > {rtol:g}"


def assert_matches_type(array: np.ndarray, t: TensorType, batch: int | None, what: str):
    assert array.dtype == numpy_dtype(t.dtype), f"{what}: ONNX Runtime gives {array.dtype}, the shape rule says {t}"
    assert array.shape == concrete_shape(t.shape, batch), \
        f"{what}: ONNX Runtime gives shape {array.shape}, the shape rule says {t} (batch {batch})"


# ---- the symbolic-batch variant: every sample whose shape rule accepts a leading `B` ----------
def symbolic_mask(sample: Sample) -> tuple[bool, ...] | None:
    """Which inputs get the leading dim `B`: those of the highest rank, when all of them share their
    leading size (so a different run-time batch keeps the sample valid); None if that does not apply."""
    specs = [parse_input(s) for s in sample.inputs]
    top = max(len(shape) for _, shape, _ in specs)
    if top == 0:
        return None
    leading = {shape[0] for _, shape, _ in specs if len(shape) == top}
    if len(leading) != 1:
        return None
    mask = tuple(len(shape) == top for _, shape, _ in specs)
    # inputs of lower rank sharing the leading size are batch-aligned too (labels `[B]` of logits `[B, C]`)
    (size,) = leading
    lower = tuple(0 < len(shape) < top and shape[0] == size and kind == "int" for kind, shape, _ in specs)
    return tuple(m or l for m, l in zip(mask, lower))


def symbolic_mask_if_valid(name: str, k: int):
    """The symbolic-batch mask of sample `k` of `name`, if the shape rule accepts it."""
    from dslc.diagnostics import DslcError

    mask = symbolic_mask(OPS[name].samples[k])
    if mask is None:
        return None
    try:
        OneOp(name, OPS[name].samples[k], symbolic=mask)
    except DslcError:
        return None
    return mask


SYMBOLIC = {(name, k): mask for name, k in CASES if (mask := symbolic_mask_if_valid(name, k)) is not None}
# op families whose shape rules cannot take a symbolic leading dim in any sample: none today
NO_SYMBOLIC_FAMILY: set[str] = set()


def family(name: str) -> str:
    return type(OPS[name]).__module__.rsplit(".", 1)[-1]


# ---- registry coverage -----------------------------------------------------------------------------
def test_every_op_has_a_sample():
    missing = [name for name, opdef in OPS.items() if not opdef.samples]
    assert not missing, f"ops without samples: {missing}"


def test_every_differentiable_op_has_a_gradient_sample():
    missing = [name for name, opdef in OPS.items() if opdef.differentiable and not any(s.grad for s in opdef.samples)]
    assert not missing, f"differentiable ops without a `grad=True` sample: {missing}"


def test_every_op_has_numpy_semantics():
    missing = [name for name, opdef in OPS.items() if opdef.evaluate is None]
    assert not missing, f"ops without `evaluate`: {missing}"


def test_every_op_family_has_a_symbolic_batch_case():
    families = {family(name) for name in OPS}
    covered = {family(name) for name, _ in SYMBOLIC}
    assert families - covered == NO_SYMBOLIC_FAMILY, f"families without a symbolic-batch case: {families - covered}"


# ---- per sample ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,k", CASES, ids=IDS)
def test_forward(name, k):
    """Shape rule vs ONNX Runtime; ONNX Runtime vs `evaluate` (1e-12) and vs onnx.reference (1e-10)."""
    opdef = OPS[name]
    one = OneOp(name, opdef.samples[k])
    model = one.forward_model()
    check(model)
    arrays = one.values(case_rng(name, k, "forward"))
    (got,) = ort_session(model).run(None, feeds_of(arrays))
    assert_matches_type(got, one.out.type, None, f"{name} sample {k}")
    expected = np.asarray(opdef.evaluate(*arrays, **one.attrs))
    assert expected.dtype == got.dtype, f"`evaluate` of {name} gives {expected.dtype}, ONNX Runtime {got.dtype}"
    assert_close(got, expected, RTOL_NUMPY, f"{name} sample {k}: ONNX Runtime vs evaluate")
    (ref,) = ReferenceEvaluator(model).run(None, feeds_of(arrays))
    assert_close(got, np.asarray(ref), RTOL_REFERENCE, f"{name} sample {k}: ONNX Runtime vs onnx.reference")


@pytest.mark.parametrize("name,k", CASES, ids=IDS)
def test_float32(name, k):
    """The float32 variant: types as the shape rule says, values as the float64 semantics (to 2e-6)."""
    check_float32(name, k)


@pytest.mark.parametrize("k", range(len(OPS["conv_weight_grad"].samples)))
def test_float32_filter_gradient_by_swapped_conv(k, monkeypatch):
    """The float32 filter gradient of layers too large for im2col columns (the samples are small):
    the swapped Conv, and for one input channel and an even number of output rows, two row bands."""
    monkeypatch.setattr(conv_ops, "COLUMNS_PER_SAMPLE", 0)
    check_float32("conv_weight_grad", k)


def test_filter_gradient_samples_reach_every_float32_lowering(monkeypatch):
    def lowering(k):
        ops = {node.op_type for node in OneOp("conv_weight_grad", OPS["conv_weight_grad"].samples[k],
                                             float_dtype="float32").forward_model().graph.node}
        return "columns" if "MatMul" in ops else "bands" if "Pad" in ops else "swapped"

    samples = range(len(OPS["conv_weight_grad"].samples))
    assert {lowering(k) for k in samples} == {"columns", "bands", "swapped"}
    monkeypatch.setattr(conv_ops, "COLUMNS_PER_SAMPLE", 0)
    assert {lowering(k) for k in samples} == {"bands", "swapped"}


def test_filter_gradient_formulation_follows_the_measured_shapes():
    """(channels, kernel, output positions) as measured on 2 threads (see `conv._by_columns`)."""
    assert not conv_ops._by_columns(6, (5, 5), (10, 10))  # LeNet's second layer: the swapped Conv, -7% of the step
    assert not conv_ops._by_columns(3, (7, 7), (32, 32))  # 2.34 vs 1.78 ms
    assert not conv_ops._by_columns(1, (5, 5), (28, 28))  # LeNet's first layer: two row bands
    assert conv_ops._by_columns(16, (5, 5), (12, 12))  # 1.85 vs 4.70 ms: the swapped Conv keeps one thread busy
    assert conv_ops._by_columns(8, (3, 3), (28, 28)) and conv_ops._by_columns(3, (3, 3), (32, 32))


def check_float32(name, k):
    opdef = OPS[name]
    one = OneOp(name, opdef.samples[k], float_dtype="float32")
    model = one.forward_model()
    check(model)
    arrays = one.values(case_rng(name, k, "float32"))
    (got,) = ort_session(model).run(None, feeds_of(arrays))
    assert_matches_type(got, one.out.type, None, f"{name} sample {k} (float32)")
    wide = [a.astype(np.float64) if a.dtype == np.float32 else a for a in arrays]
    attrs = dict(one.attrs)
    expected = np.asarray(opdef.evaluate(*wide, **attrs))
    if name == "random_uniform_like":  # its numbers are rounded to the input dtype by definition
        expected = np.asarray(opdef.evaluate(*arrays, **attrs))
    if np.issubdtype(expected.dtype, np.floating):
        expected = expected.astype(got.dtype).astype(np.float64)
        assert_close(got.astype(np.float64), expected, RTOL_FLOAT32, f"{name} sample {k} (float32) vs float64 evaluate")
    else:
        assert_close(got, expected, 0.0, f"{name} sample {k} (float32)")


GRAD_CASES = [(name, k) for name, k in CASES if OPS[name].differentiable and OPS[name].samples[k].grad]


def gradient_errors(one: OneOp, arrays, batch: int | None, rng, coordinates: bool) -> tuple[float, float]:
    """(max directional error, max per-coordinate error) of the autodiff gradient, see the module doc.
    With a symbolic batch, only inputs with a gradient rule are differentiated (`gradients` fills the
    others with zeros of a static shape, which is all a parameter needs)."""
    floats = one.float_inputs() if batch is None else one.flowing_inputs()
    model = one.gradient_model(floats)
    check(model)
    session = ort_session(model)
    names = [o.name for o in model.graph.output]
    r = rng.standard_normal(concrete_shape(one.out.type.shape, batch)).astype(np.float64)

    def run(values):
        return dict(zip(names, session.run(None, {**feeds_of(values), "R": r})))

    base = run(arrays)
    for i in floats:
        assert base[f"grad{i}"].shape == arrays[i].shape, f"gradient of input {i}: shape {base[f'grad{i}'].shape}"

    def fd(direction: dict[int, np.ndarray]) -> float:
        plus = [a + EPS * direction[i] if i in direction else a for i, a in enumerate(arrays)]
        minus = [a - EPS * direction[i] if i in direction else a for i, a in enumerate(arrays)]
        return float(np.sum((run(plus)["out"] - run(minus)["out"]) * r) / (2 * EPS))

    worst_dir = 0.0
    for _ in range(DIRECTIONS):
        d = {i: rng.standard_normal(arrays[i].shape) for i in floats}
        numeric = fd(d)
        analytic = float(sum(np.sum(base[f"grad{i}"] * d[i]) for i in floats))
        worst_dir = max(worst_dir, abs(numeric - analytic) / max(abs(numeric), abs(analytic), 1e-8))

    worst_coord = 0.0
    if coordinates and sum(arrays[i].size for i in floats) <= MAX_COORDS:
        for i in floats:
            analytic = base[f"grad{i}"]
            numeric = np.zeros_like(analytic)
            for j in range(arrays[i].size):
                unit = np.zeros(arrays[i].size)
                unit[j] = 1.0
                numeric.flat[j] = fd({i: unit.reshape(arrays[i].shape)})
            floor = max(1e-3 * float(np.max(np.abs(analytic), initial=0.0)), 1e-8)
            denom = np.maximum(np.maximum(np.abs(numeric), np.abs(analytic)), floor)
            worst_coord = max(worst_coord, float(np.max(np.abs(numeric - analytic) / denom, initial=0.0)))
    return worst_dir, worst_coord


@pytest.mark.parametrize("name,k", GRAD_CASES, ids=[f"{n}-{k}" for n, k in GRAD_CASES])
def test_gradient(name, k):
    """`autodiff.gradients` of Σ out·R vs float64 central differences: directions and coordinates."""
    one = OneOp(name, OPS[name].samples[k])
    rng = case_rng(name, k, "gradient")
    arrays = one.values(rng)
    worst_dir, worst_coord = gradient_errors(one, arrays, None, rng, coordinates=True)
    assert worst_dir <= RTOL_GRAD, f"{name} sample {k}: directional derivative off by {worst_dir:.3g} (relative)"
    assert worst_coord <= RTOL_GRAD, f"{name} sample {k}: gradient element off by {worst_coord:.3g} (relative)"


@pytest.mark.parametrize("name,k", list(SYMBOLIC), ids=[f"{n}-{k}" for n, k in SYMBOLIC])
def test_symbolic_batch(name, k):
    """With the leading dim declared `B` and run at another size: types, values and gradients hold."""
    mask = SYMBOLIC[name, k]
    opdef = OPS[name]
    one = OneOp(name, opdef.samples[k], symbolic=mask)
    model = one.forward_model()
    check(model)
    batch = one.concrete[mask.index(True)][0] + 2
    rng = case_rng(name, k, "symbolic")
    arrays = one.values(rng, batch=batch)
    (got,) = ort_session(model).run(None, feeds_of(arrays))
    assert_matches_type(got, one.out.type, batch, f"{name} sample {k} with batch `B` = {batch}")
    expected = np.asarray(opdef.evaluate(*arrays, **one.attrs))
    assert_close(got, expected, RTOL_NUMPY, f"{name} sample {k} with batch `B` = {batch}: ONNX Runtime vs evaluate")
    (ref,) = ReferenceEvaluator(model).run(None, feeds_of(arrays))
    assert_close(got, np.asarray(ref), RTOL_REFERENCE, f"{name} sample {k} with batch `B`: ONNX Runtime vs onnx.reference")
    if opdef.differentiable and opdef.samples[k].grad:
        worst_dir, _ = gradient_errors(one, arrays, batch, rng, coordinates=False)
        assert worst_dir <= RTOL_GRAD, f"{name} sample {k} with batch `B`: directional derivative off by {worst_dir:.3g}"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_erf_over_its_whole_range(dtype):
    """ONNX Runtime has no float64 `Erf`; the float64 lowering (fdlibm's pieces) must be within 2 ulp of
    `math.erf` everywhere: each piece, the boundaries between them, 0, tiny, huge and infinite inputs."""
    import math

    bounds = [0.84375, 1.25, 1 / 0.35, 6.0]
    x = np.concatenate([np.linspace(-7, 7, 2801), [0.0, np.finfo(dtype).tiny, 1e-20, 3e-9, 30.0, np.finfo(dtype).max, np.inf],
                        [np.nextafter(b, s) for b in bounds for s in (0, 10)], bounds])
    x = np.concatenate([x, -x]).astype(dtype)
    b = Builder()
    inp = b.input("in0", TensorType(dtype, (x.size,)), "data")
    model = emit_graph(Graph("erf", [inp], [("out", b.erf(inp))]))
    check(model)
    (got,) = ort_session(model).run(None, {"in0": x})
    expected = np.array([math.erf(v) for v in x.astype(np.float64)]).astype(dtype)
    ulps = np.abs(got - expected) / np.spacing(np.maximum(np.abs(expected), np.finfo(dtype).tiny))
    worst = int(np.argmax(ulps))
    assert ulps[worst] <= 2, f"erf({x[worst]!r}) = {got[worst]!r}, math.erf gives {expected[worst]!r} ({ulps[worst]:.1f} ulp)"


def scatter_add_rows_model(ids_type: TensorType, updates_type: TensorType, rows: int):
    b = Builder()
    ids, updates = b.input("ids", ids_type, "data"), b.input("updates", updates_type, "data")
    out = b.emit("scatter_add_rows", ids, updates, rows=rows)
    return emit_graph(Graph("scatter", [ids, updates], [("out", out)]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_scatter_add_rows_sums_runs_of_ids_exactly(dtype):
    """The scatter-add as sorted running sums: ids repeated, negative (from the end), absent (the first
    and last rows among them), all alike, and 20,000 rows of one sign into three ids, where summing in
    float32 one row after another is off by ~1e-5 (the running sums are float64); on a symbolic batch."""
    rng = np.random.default_rng(0)
    model = scatter_add_rows_model(TensorType("int64", ("B", 2)), TensorType(dtype, ("B", 2, 3)), rows=6)
    session = ort_session(model)
    for ids in (np.array([[1, 1], [-1, 3], [2, -5], [3, 1]]), np.full((5, 2), 4), np.array([[2, 3]])):
        updates = rng.normal(size=ids.shape + (3,)).astype(dtype)
        expected = np.zeros((6, 3))
        np.add.at(expected, ids.reshape(-1), updates.reshape(-1, 3).astype(np.float64))
        (got,) = session.run(None, {"ids": ids, "updates": updates})
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, expected, rtol=1e-6 if dtype == "float32" else 1e-12, atol=1e-12)
    many = scatter_add_rows_model(TensorType("int32", (20000,)), TensorType(dtype, (20000, 2)), rows=4)
    ids = rng.integers(1, 4, size=20000).astype(np.int32)
    updates = (1e-3 + 1e-4 * rng.random((20000, 2))).astype(dtype)
    expected = np.zeros((4, 2))
    np.add.at(expected, ids, updates.astype(np.float64))
    (got,) = ort_session(many).run(None, {"ids": ids, "updates": updates})
    np.testing.assert_allclose(got, expected, rtol=1e-7 if dtype == "float32" else 1e-12)
