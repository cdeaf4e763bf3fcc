"""`OpDef` and the registry.

An op entry says, in one place:
- `infer(*input_types, **attrs) -> TensorType`: the shape/dtype rule (raise `OpError` for user errors);
- `lower(e, *inputs, **attrs) -> str`: the ONNX nodes computing it (`e` is `dslc.emit.onnx.Emitter`;
  each input has `.name` and `.type`);
- `grad(b, grad_out, out, *inputs, **attrs) -> list[Node | None]`: one gradient per input, built from
  registered ops with the builder `b`; `None` where no gradient flows. Ops without `grad` are not
  differentiable (comparisons, argmax, random numbers);
- `evaluate(*arrays, **attrs) -> np.ndarray`: numpy semantics, for constant folding and tests;
- `torch(T, *tensors, **attrs)`: the same with PyTorch (`T` is the `torch` module, passed in: dslc does
  not import torch), for the PyTorch twin that `dslc bench --compare torch` runs;
- `flops(out, *inputs, **attrs) -> int`: multiply-adds ×2 of the op for given shapes (matrix products
  and convolutions; element-wise ops count 0), for the benchmark's FLOP utilization;
- `samples`: input shapes and attributes the generic tests run (shape rule vs ONNX Runtime, ONNX Runtime
  vs the ONNX reference evaluator, float64 finite differences vs `grad`);
- `dtypes`: the dtypes every input may have (`FLOATS`, `NUMBERS` or `ANY`, the default): what its ONNX
  lowering and ONNX Runtime's kernels accept, checked before `infer`. Ops whose inputs differ in kind
  (labels, ids, masks) keep `ANY` and check those inputs in `infer`;
- `formulations(*input_types, **attrs) -> Formulations | None`: for ops with several equivalent
  lowerings whose speed depends on the shape, the candidates and the one the fixed rule picks; `lower`
  then asks `e.formulation(...)` which one to write: the rule's, or the one `dslc build --tune` measured
  fastest (`dslc/runtime/tune.py`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dslc.ir.graph import OpError
from dslc.ir.types import DTYPES, FLOAT_DTYPES, INT_DTYPES

REQUIRED = object()
FLOATS = FLOAT_DTYPES
NUMBERS = FLOAT_DTYPES + INT_DTYPES
ANY = tuple(DTYPES)
REGISTRY: dict[str, "OpDef"] = {}


@dataclass(frozen=True)
class Formulations:
    """The equivalent lowerings of one op at one shape (`candidates`, names the op's `lower` knows) and
    the one its fixed rule picks (`rule`, one of them)."""

    candidates: tuple[str, ...]
    rule: str


def formulation_key(op: str, types, attrs: dict[str, Any]) -> str:
    """What identifies a shape-dependent choice: the op, its input types and attributes, as text."""
    settings = ", ".join(f"{k}={v}" for k, v in sorted(attrs.items()) if v is not None)
    return f"{op}({', '.join(str(t) for t in types)}; {settings})"


@dataclass(frozen=True)
class Sample:
    """Inputs for the generic op tests: each entry a float input shape, or `("int", shape, high)`,
    `("bool", shape)` / `("positive", shape)` for inputs that must be integer labels, masks or > 0."""

    inputs: tuple
    attrs: dict[str, Any] = field(default_factory=dict)
    grad: bool = True  # check the gradient by finite differences


class OpDef:
    name: str = ""
    attrs: dict[str, Any] = {}
    samples: list[Sample] = []
    dtypes: tuple[str, ...] = ANY
    grad = None  # set by differentiable ops
    evaluate = None
    torch = None

    def flops(self, out, *inputs, **attrs) -> int:
        return 0

    def complete_attrs(self, given: dict[str, Any]) -> dict[str, Any]:
        unknown = set(given) - set(self.attrs)
        if unknown:
            raise TypeError(f"op `{self.name}` has no attribute {sorted(unknown)}")
        out = {}
        for key, default in self.attrs.items():
            if key in given:
                out[key] = given[key]
            elif default is REQUIRED:
                raise TypeError(f"op `{self.name}` needs attribute `{key}`")
            else:
                out[key] = default
        return out

    def check_dtypes(self, *types) -> None:
        for t in types:
            if t.dtype not in self.dtypes:
                expect_dtype(t, self.dtypes)

    def infer(self, *types, **attrs):
        raise NotImplementedError(self.name)

    def lower(self, e, *inputs, **attrs) -> str:
        raise NotImplementedError(self.name)

    def formulations(self, *types, **attrs) -> Formulations | None:
        return None

    @property
    def differentiable(self) -> bool:
        return type(self).grad is not None


def op(opname: str, /, **attrs):
    """Class decorator: `@op("softmax", axis=-1)` registers one instance under `name`."""

    def register(cls):
        if opname in REGISTRY:
            raise ValueError(f"op `{opname}` registered twice")
        inst = cls()
        inst.name = opname
        inst.attrs = dict(attrs)
        REGISTRY[opname] = inst
        return cls

    return register


def get_op(name: str) -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"no op `{name}` in the registry") from None


def expect_float(t, what: str = "input"):
    expect_dtype(t, FLOATS, what)


def expect_dtype(t, dtypes: tuple[str, ...], what: str = "input"):
    if t.dtype in dtypes:
        return
    kind = "floating-point" if set(dtypes) <= set(FLOATS) else "numeric"
    hint = 'convert it with `cast`, as in `cast(x, "f32")`' if "float32" in dtypes else ""
    if t.dtype == "bool" and kind == "numeric":
        hint = "`bool` tensors (comparisons) are not numbers: " + hint
    raise OpError(f"expected a {kind} {what}, got `{t}`", hint=hint)


__all__ = ["ANY", "FLOATS", "NUMBERS", "OpDef", "OpError", "REGISTRY", "REQUIRED", "Sample", "op", "get_op",
           "expect_dtype", "expect_float"]
