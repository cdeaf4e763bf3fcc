"""Element-wise ops: unary math and activations, broadcasting binary arithmetic, comparisons, casts.

Gradients of broadcasting ops are summed back to each input's shape (`unbroadcast`).
"""
from __future__ import annotations

import math

import numpy as np

from dslc.ir.graph import OpError
from dslc.ir.types import TensorType, broadcast_shapes, numpy_dtype
from dslc.ops.registry import FLOATS, NUMBERS, OpDef, Sample, op

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


# fdlibm s_erf.c (Sun Microsystems, freely redistributable): erf on |x| in [0, 0.84375), [0.84375, 1.25),
# [1.25, 1/0.35), [1/0.35, 6) as rational functions, 1 from 6 on; error below 1 ulp. Coefficients lowest first.
_ERF_PP = (1.28379167095512558561e-01, -3.25042107247001499370e-01, -2.84817495755985104766e-02,
           -5.77027029648944159157e-03, -2.37630166566501626084e-05)
_ERF_QQ = (1.0, 3.97917223959155352819e-01, 6.50222499887672944485e-02, 5.08130628187576562776e-03,
           1.32494738004321644526e-04, -3.96022827877536812320e-06)
_ERF_PA = (-2.36211856075265944077e-03, 4.14856118683748331666e-01, -3.72207876035701323847e-01,
           3.18346619901161753674e-01, -1.10894694282396677476e-01, 3.54783043256182359371e-02,
           -2.16637559486879084300e-03)
_ERF_QA = (1.0, 1.06420880400844228286e-01, 5.40397917702171048937e-01, 7.18286544141962662868e-02,
           1.26171219808761642112e-01, 1.36370839120290507362e-02, 1.19844998467991074170e-02)
_ERF_RA = (-9.86494403484714822705e-03, -6.93858572707181764372e-01, -1.05586262253232909814e+01,
           -6.23753324503260060396e+01, -1.62396669462573470355e+02, -1.84605092906711035994e+02,
           -8.12874355063065934246e+01, -9.81432934416914548592e+00)
_ERF_SA = (1.0, 1.96512716674392571292e+01, 1.37657754143519042600e+02, 4.34565877475229228821e+02,
           6.45387271733267880336e+02, 4.29008140027567833386e+02, 1.08635005541779435134e+02,
           6.57024977031928170135e+00, -6.04244152148580987438e-02)
_ERF_RB = (-9.86494292470009928597e-03, -7.99283237680523006574e-01, -1.77579549177547519889e+01,
           -1.60636384855821916062e+02, -6.37566443368389627722e+02, -1.02509513161107724954e+03,
           -4.83519191608651397019e+02)
_ERF_SB = (1.0, 3.03380607434824582924e+01, 3.25792512996573918826e+02, 1.53672958608443695994e+03,
           3.19985821950859553908e+03, 2.55305040643316442583e+03, 4.74528541206955367215e+02,
           -2.24409524465858183362e+01)
_ERF_ERX = 8.45062911510467529297e-01


def lower_erf(e, x, dtype: str | None = None) -> str:
    """ONNX Erf, except in float64: ONNX Runtime implements Erf for float32 only, so there erf is
    built from standard ops with fdlibm's approximations (all four pieces computed, `Where` picks)."""
    dt = dtype or x.type.dtype
    if dt == "float32":
        return e.node("Erf", x)
    c = lambda v: e.scalar(v, dt)  # noqa: E731

    def poly(coefs, t):
        acc = c(coefs[-1])
        for k in reversed(coefs[:-1]):
            acc = e.node("Add", e.node("Mul", acc, t), c(k))
        return acc

    def ratio(p, q, t):
        return e.node("Div", poly(p, t), poly(q, t))

    a = e.node("Abs", x)
    small = e.node("Add", a, e.node("Mul", a, ratio(_ERF_PP, _ERF_QQ, e.node("Mul", a, a))))
    near_one = e.node("Add", c(_ERF_ERX), ratio(_ERF_PA, _ERF_QA, e.node("Sub", a, c(1.0))))
    w = e.node("Reciprocal", e.node("Mul", a, a))
    # exp(-a² - 0.5625 + R/S) with a² split as z² + (a - z)(a + z), z = a rounded to 24 bits (z² is exact)
    z = e.node("Cast", e.node("Cast", a, to=e.onnx_dtype("float32")), to=e.onnx_dtype(dt))
    head = e.node("Exp", e.node("Sub", e.node("Neg", e.node("Mul", z, z)), c(0.5625)))
    cross = e.node("Mul", e.node("Sub", z, a), e.node("Add", z, a))

    def tail(r, s):
        scaled = e.node("Mul", head, e.node("Exp", e.node("Add", cross, ratio(r, s, w))))
        return e.node("Sub", c(1.0), e.node("Div", scaled, a))

    y = c(1.0)
    for bound, piece in ((6.0, tail(_ERF_RB, _ERF_SB)), (1 / 0.35, tail(_ERF_RA, _ERF_SA)), (1.25, near_one),
                         (0.84375, small)):
        y = e.node("Where", e.node("Less", a, c(bound)), piece, y)
    return e.node("Mul", e.node("Sign", x), y)



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
