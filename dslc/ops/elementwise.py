"""Element-wise ops: unary math and activations, broadcasting binary arithmetic, comparisons, casts.

Gradients of broadcasting ops are summed back to each input's shape (`unbroadcast`).
"""
from __future__ import annotations

import math

import numpy as np

from dslc.ir.graph import OpError
from dslc.ir.types import TensorType, broadcast_shapes, numpy_dtype
from dslc.ops.registry import OpDef, Sample, expect_float, op

_SAMPLE_UNARY = [Sample(((3, 4),)), Sample(((2, 3, 5),))]


def unbroadcast(b, grad, like):
    """Sum `grad` over the axes along which `like` was broadcast, giving `like`'s shape."""
    g_shape, shape = grad.type.shape, like.type.shape
    if g_shape == shape:
        return grad
    lead = len(g_shape) - len(shape)
    axes = list(range(lead)) + [lead + i for i, d in enumerate(shape) if d == 1 and g_shape[lead + i] != 1]
    if axes:
        grad = b.reduce_sum(grad, axes=tuple(axes), keepdims=True)
    if lead:
        grad = b.squeeze(grad, axes=tuple(range(lead)))
    return grad


# ---- unary ----------------------------------------------------------------------------------------
class Unary(OpDef):
    onnx = ""
    samples = _SAMPLE_UNARY

    def infer(self, x, **attrs):
        expect_float(x)
        return x

    def lower(self, e, x, **attrs):
        return e.node(self.onnx, x)


@op("neg")
class Neg(Unary):
    """y = -x"""
    onnx = "Neg"
    evaluate = staticmethod(np.negative)

    def grad(self, b, g, out, x):
        return [b.neg(g)]


@op("exp")
class Exp(Unary):
    """y = e^x"""
    onnx = "Exp"
    evaluate = staticmethod(np.exp)

    def grad(self, b, g, out, x):
        return [b.mul(g, out)]


@op("log")
class Log(Unary):
    """y = ln x"""
    onnx = "Log"
    samples = [Sample((("positive", (3, 4)),))]
    evaluate = staticmethod(np.log)

    def grad(self, b, g, out, x):
        return [b.div(g, x)]


@op("sqrt")
class Sqrt(Unary):
    """y = √x"""
    onnx = "Sqrt"
    samples = [Sample((("positive", (3, 4)),))]
    evaluate = staticmethod(np.sqrt)

    def grad(self, b, g, out, x):
        return [b.div(b.mul(g, b.scalar_like(0.5, g)), out)]


@op("reciprocal")
class Reciprocal(Unary):
    """y = 1 / x"""
    onnx = "Reciprocal"
    samples = [Sample((("positive", (3, 4)),))]
    evaluate = staticmethod(np.reciprocal)

    def grad(self, b, g, out, x):
        return [b.neg(b.mul(g, b.mul(out, out)))]


@op("tanh")
class Tanh(Unary):
    """y = tanh x"""
    onnx = "Tanh"
    evaluate = staticmethod(np.tanh)

    def grad(self, b, g, out, x):
        return [b.mul(g, b.sub(b.scalar_like(1.0, out), b.mul(out, out)))]


@op("sigmoid")
class Sigmoid(Unary):
    """y = 1 / (1 + e^-x)"""
    onnx = "Sigmoid"

    def evaluate(self, x):
        return 1.0 / (1.0 + np.exp(-x))

    def grad(self, b, g, out, x):
        return [b.mul(g, b.mul(out, b.sub(b.scalar_like(1.0, out), out)))]


@op("relu")
class Relu(Unary):
    """y = max(x, 0); the gradient is a multiply by the mask x > 0 (faster than `Where` in ORT)."""
    onnx = "Relu"

    def evaluate(self, x):
        return np.maximum(x, 0)

    def grad(self, b, g, out, x):
        return [b.mul(g, b.cast(b.greater(x, b.scalar_like(0.0, x)), to=x.type.dtype))]


@op("leaky_relu", alpha=0.01)
class LeakyRelu(Unary):
    """y = x if x > 0 else alpha·x"""

    samples = [Sample(((3, 4),), {"alpha": 0.1})]

    def lower(self, e, x, *, alpha):
        return e.node("LeakyRelu", x, alpha=float(alpha))

    def evaluate(self, x, *, alpha):
        return np.where(x > 0, x, alpha * x)

    def grad(self, b, g, out, x, *, alpha):
        mask = b.cast(b.greater(x, b.scalar_like(0.0, x)), to=x.type.dtype)
        slope = b.add(b.scalar_like(alpha, x), b.mul(mask, b.scalar_like(1.0 - alpha, x)))
        return [b.mul(g, slope)]


@op("abs")
class Abs(Unary):
    """y = |x|"""
    onnx = "Abs"
    evaluate = staticmethod(np.abs)

    def grad(self, b, g, out, x):
        return [b.mul(g, b.sign(x))]


@op("sign")
class Sign(Unary):
    """y = sign x (gradient zero almost everywhere)"""
    onnx = "Sign"
    evaluate = staticmethod(np.sign)

    def grad(self, b, g, out, x):
        return [None]


@op("erf")
class Erf(Unary):
    """y = erf x"""
    onnx = "Erf"

    def evaluate(self, x):
        return np.vectorize(math.erf, otypes=[x.dtype])(x)

    def grad(self, b, g, out, x):
        two_over_sqrt_pi = b.scalar_like(2.0 / math.sqrt(math.pi), x)
        return [b.mul(g, b.mul(two_over_sqrt_pi, b.exp(b.neg(b.mul(x, x)))))]


@op("gelu")
class Gelu(Unary):
    """y = x·Φ(x) = 0.5·x·(1 + erf(x/√2)), the exact GELU (PyTorch's default)."""

    def lower(self, e, x):
        dt = x.type.dtype
        cdf = e.node("Mul", e.scalar(0.5, dt), e.node("Add", e.scalar(1.0, dt), e.node("Erf", e.node("Mul", x, e.scalar(1 / math.sqrt(2), dt)))))
        return e.node("Mul", x, cdf)

    def evaluate(self, x):
        return 0.5 * x * (1 + Erf().evaluate(x / math.sqrt(2)))

    def grad(self, b, g, out, x):
        half = b.scalar_like(0.5, x)
        cdf = b.mul(half, b.add(b.scalar_like(1.0, x), b.erf(b.mul(x, b.scalar_like(1 / math.sqrt(2), x)))))
        pdf = b.mul(b.scalar_like(1 / math.sqrt(2 * math.pi), x), b.exp(b.mul(b.neg(half), b.mul(x, x))))
        return [b.mul(g, b.add(cdf, b.mul(x, pdf)))]


@op("cast", to=None)
class Cast(OpDef):
    """y = x converted to dtype `to`"""

    samples = [Sample(((3, 4),), {"to": "float64"})]

    def infer(self, x, *, to):
        return x.with_dtype(to)

    def lower(self, e, x, *, to):
        return e.node("Cast", x, to=e.onnx_dtype(to))

    def evaluate(self, x, *, to):
        return x.astype(numpy_dtype(to))

    def grad(self, b, g, out, x, *, to):
        if x.type.is_float and out.type.is_float:
            return [b.cast(g, to=x.type.dtype)]
        return [None]


# ---- binary ---------------------------------------------------------------------------------------
def binary_type(a: TensorType, b: TensorType, opname: str) -> TensorType:
    if a.dtype != b.dtype:
        raise OpError(f"`{opname}` of mismatched dtypes `{a}` and `{b}`", hint="convert one side with `cast`")
    shape = broadcast_shapes(a.shape, b.shape)
    if shape is None:
        raise OpError(f"cannot broadcast `{a}` with `{b}` in `{opname}`",
                      hint="shapes broadcast when, from the right, each pair of dims is equal or one of them is 1")
    return TensorType(a.dtype, shape)


class Binary(OpDef):
    onnx = ""
    samples = [Sample(((3, 4), (3, 4))), Sample(((2, 3, 4), (4,))), Sample(((3, 1), (1, 4)))]

    def infer(self, a, b):
        return binary_type(a, b, self.name)

    def lower(self, e, a, b):
        return e.node(self.onnx, a, b)


@op("add")
class Add(Binary):
    """y = a + b (broadcasting)"""
    onnx = "Add"
    evaluate = staticmethod(np.add)

    def grad(self, b, g, out, x, y):
        return [unbroadcast(b, g, x), unbroadcast(b, g, y)]


@op("sub")
class Sub(Binary):
    """y = a - b (broadcasting)"""
    onnx = "Sub"
    evaluate = staticmethod(np.subtract)

    def grad(self, b, g, out, x, y):
        return [unbroadcast(b, g, x), unbroadcast(b, b.neg(g), y)]


@op("mul")
class Mul(Binary):
    """y = a · b (broadcasting)"""
    onnx = "Mul"
    evaluate = staticmethod(np.multiply)

    def grad(self, b, g, out, x, y):
        return [unbroadcast(b, b.mul(g, y), x), unbroadcast(b, b.mul(g, x), y)]


@op("div")
class Div(Binary):
    """y = a / b (broadcasting)"""
    onnx = "Div"
    samples = [Sample(((3, 4), ("positive", (3, 4)))), Sample(((2, 3, 4), ("positive", (4,))))]
    evaluate = staticmethod(np.divide)

    def grad(self, b, g, out, x, y):
        gx = b.div(g, y)
        return [unbroadcast(b, gx, x), unbroadcast(b, b.neg(b.mul(gx, out)), y)]


@op("pow")
class Pow(Binary):
    """y = a ^ b (broadcasting; a > 0 where b is not an integer)"""
    onnx = "Pow"
    samples = [Sample((("positive", (3, 4)), (3, 4)))]
    evaluate = staticmethod(np.power)

    def grad(self, b, g, out, x, y):
        one = b.scalar_like(1.0, y)
        gx = b.mul(g, b.mul(y, b.pow(x, b.sub(y, one))))
        gy = b.mul(g, b.mul(out, b.log(x)))
        return [unbroadcast(b, gx, x), unbroadcast(b, gy, y)]


class Compare(Binary):
    """Comparisons give `bool` tensors and have no gradient."""

    samples = [Sample(((3, 4), (3, 4)), grad=False)]

    def infer(self, a, b):
        return binary_type(a, b, self.name).with_dtype("bool")


for _name, _onnx, _np in [("greater", "Greater", np.greater), ("less", "Less", np.less),
                          ("greater_equal", "GreaterOrEqual", np.greater_equal),
                          ("less_equal", "LessOrEqual", np.less_equal), ("equal", "Equal", np.equal)]:
    op(_name)(type(_name.title().replace("_", ""), (Compare,), {"onnx": _onnx, "evaluate": staticmethod(_np),
                                                             "__doc__": f"y = {_name}(a, b) as bool"}))
