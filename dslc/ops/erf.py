"""erf as ONNX nodes: the `Erf` op in float32, and in float64 (which ONNX Runtime's `Erf` lacks) fdlibm's
rational approximations built from standard ops. Used by the `erf` and `gelu` entries of
`dslc/ops/elementwise.py`."""
from __future__ import annotations


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
