"""Element-wise ops: unary math and activations, broadcasting binary arithmetic, comparisons, casts.

Gradients of broadcasting ops are summed back to each input's shape (`unbroadcast`).
"""
from __future__ import annotations

import math

import numpy as np

from dslc.ir.graph import OpError
from dslc.ir.types import TensorType, broadcast_shapes, numpy_dtype
from dslc.ops.registry import FLOATS, NUMBERS, OpDef, Sample, op
from dslc.ops.erf import lower_erf

_SAMPLE_UNARY = [Sample(((3, 4),)), Sample(((2, 3, 5),))]


def unbroadcast(b, grad, like):
    """Sum `grad` over the axes along which `like` was broadcast, giving `like`'s shape."""
    g_shape, shape = grad.type.shape, like.type.shape
    if g_shape == shape:
        return grad
    lead = len(g_shape) - len(shape)
    axes = list(range(lead)) + [lead + i for i, d in enumerate(shape) if d == 1 and g_shape[lead + i] != 1]
    if lead and axes == list(range(lead)):  # only leading axes (a bias): one reduction, no squeeze
        return b.reduce_sum(grad, axes=tuple(axes), keepdims=False)
    if axes:
        grad = b.reduce_sum(grad, axes=tuple(axes), keepdims=True)
    if lead:
        grad = b.squeeze(grad, axes=tuple(range(lead)))
    return grad


# ---- unary ----------------------------------------------------------------------------------------
class Unary(OpDef):
    onnx = ""
    samples = _SAMPLE_UNARY
    dtypes = FLOATS

    def torch(self, T, x, **attrs):
        return getattr(T, self.name)(x)

    def infer(self, x, **attrs):
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
    """y = max(x, 0); the gradient is a multiply by the mask x > 0 (a multiply is faster than `Where` in ORT)."""
    onnx = "Relu"

    def evaluate(self, x):
        return np.maximum(x, 0)

    def grad(self, b, g, out, x):
        # Greater + Cast + Mul: ORT's Sign kernel is slower than the comparison and the cast together.
        # The mask reads y (y > 0 exactly where x > 0), leaving x to the Relu alone: ORT then fuses
        # the Gemm or Conv that makes x with the Relu.
        return [b.mul(g, b.cast(b.greater(out, b.scalar_like(0.0, out)), to=x.type.dtype))]


@op("leaky_relu", alpha=0.01)
class LeakyRelu(Unary):
    """y = x if x > 0 else alpha·x"""

    samples = [Sample(((3, 4),), {"alpha": 0.1})]

    def lower(self, e, x, *, alpha):
        if x.type.dtype == "float32":
            return e.node("LeakyRelu", x, alpha=float(alpha))
        # ONNX attributes are float32: a float64 graph would scale by alpha rounded to float32
        # (0.1 -> 0.10000000149). relu(x) - alpha·relu(-x) is alpha·x exactly for x < 0.
        negative = e.node("Mul", e.scalar(alpha, x.type.dtype), e.node("Relu", e.node("Neg", x)))
        return e.node("Sub", e.node("Relu", x), negative)

    def torch(self, T, x, *, alpha):
        return T.nn.functional.leaky_relu(x, alpha)

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


@op("cos")
class Cos(Unary):
    """y = cos x (learning-rate schedules compute it in float64; ONNX Cos has float and double kernels)"""
    onnx = "Cos"
    evaluate = staticmethod(np.cos)

    def grad(self, b, g, out, x):
        # -sin x = cos(x + π/2): no `sin` op for one gradient
        return [b.mul(g, b.cos(b.add(x, b.scalar_like(math.pi / 2, x))))]


@op("floor")
class Floor(Unary):
    """y = ⌊x⌋ (gradient zero almost everywhere)"""
    onnx = "Floor"
    evaluate = staticmethod(np.floor)

    def grad(self, b, g, out, x):
        return [None]


@op("erf")
class Erf(Unary):
    """y = erf x (ONNX Erf; in float64 graphs computed from standard ops, see `lower_erf`)"""

    def lower(self, e, x):
        return lower_erf(e, x)

    def evaluate(self, x):
        return np.vectorize(math.erf, otypes=[x.dtype])(x)

    def grad(self, b, g, out, x):
        two_over_sqrt_pi = b.scalar_like(2.0 / math.sqrt(math.pi), x)
        return [b.mul(g, b.mul(two_over_sqrt_pi, b.exp(b.neg(b.mul(x, x)))))]


@op("gelu")
class Gelu(Unary):
    """y = x·Φ(x) = 0.5·x·(1 + erf(x/√2)), the exact GELU (PyTorch's default)."""

    def lower(self, e, x):
        # (x·0.5)·(erf(x / √2) + 1), node for node the pattern ONNX Runtime fuses into one Gelu kernel
        # (its GeluFusion; with the bias add before it, BiasGelu); other runtimes run the standard ops
        dt = x.type.dtype
        erf = lower_erf(e, e.node("Div", x, e.scalar(math.sqrt(2), dt)), dt)
        return e.node("Mul", e.node("Mul", x, e.scalar(0.5, dt)), e.node("Add", erf, e.scalar(1.0, dt)))

    def evaluate(self, x):
        return 0.5 * x * (1 + Erf().evaluate(x / math.sqrt(2)))

    def torch(self, T, x):
        return T.nn.functional.gelu(x)

    def grad(self, b, g, out, x):
        half = b.scalar_like(0.5, x)
        # erf(x / √2) as the forward lowers it, so ONNX Runtime computes it once for both
        cdf = b.mul(half, b.add(b.erf(b.div(x, b.scalar_like(math.sqrt(2), x))), b.scalar_like(1.0, x)))
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

    def torch(self, T, x, *, to):
        return x.to(getattr(T, to))

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
    dtypes = NUMBERS  # ONNX arithmetic is not defined on `bool`

    def torch(self, T, a, b):
        return getattr(T, self.name)(a, b)
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
