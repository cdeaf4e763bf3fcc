"""Matrix products: `matmul` (numpy semantics, batched) and `gemm` (2-D, with transposes and bias)."""
from __future__ import annotations

import numpy as np

from dslc.ir.graph import OpError
from dslc.ir.types import TensorType, broadcast_shapes
from dslc.ops.elementwise import unbroadcast
from dslc.ops.registry import FLOATS, NUMBERS, OpDef, Sample, op


def _dims_match(a, b) -> bool:
    return a == b


@op("matmul")
class MatMul(OpDef):
    """y = a @ b over the last two axes, batch axes broadcast (numpy `matmul`; ONNX MatMul)."""

    samples = [Sample(((3, 4), (4, 5))), Sample(((2, 3, 4), (4, 5))), Sample(((2, 3, 4), (2, 4, 5))),
               Sample(((2, 2, 3, 4), (4, 5))), Sample(((3, 4), (2, 4, 5)))]
    evaluate = staticmethod(np.matmul)
    dtypes = NUMBERS

    def infer(self, a, b):
        if a.dtype != b.dtype:
            raise OpError(f"matrix product of mismatched dtypes `{a}` and `{b}`", hint="convert one side with `cast`")
        if a.rank < 2 or b.rank < 2:
            raise OpError(f"matrix product needs operands of rank 2 or more, got `{a}` @ `{b}`",
                          hint="use `reshape` to add an axis")
        if not _dims_match(a.shape[-1], b.shape[-2]):
            raise OpError(f"matrix product of `{a}` and `{b}`: inner dimensions `{a.shape[-1]}` and `{b.shape[-2]}` differ")
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
        if batch is None:
            raise OpError(f"matrix product of `{a}` and `{b}`: batch dimensions do not broadcast")
        return TensorType(a.dtype, batch + (a.shape[-2], b.shape[-1]))

    def lower(self, e, a, b):
        return e.node("MatMul", a, b)

    def torch(self, T, a, b):
        return T.matmul(a, b)

    def flops(self, out, a, b):
        return 2 * _size(out.shape) * a.shape[-1]

    def grad(self, b, g, out, x, y):
        if x.type.rank == 2 and y.type.rank == 2:
            return [b.gemm(g, y, trans_b=True), b.gemm(x, g, trans_a=True)]
        if y.type.rank == 2:  # a weight applied at every position: one GEMM over all positions
            rows = x.type.rank - 1
            gx = b.matmul(g, b.transpose(y, perm=(1, 0)))
            return [gx, b.gemm(b.flatten(x, axis=rows), b.flatten(g, axis=rows), trans_a=True)]
        gx = b.matmul(g, b.transpose(y, perm=_swap_last(y.type.rank)))
        gy = b.matmul(b.transpose(x, perm=_swap_last(x.type.rank)), g)
        return [unbroadcast(b, gx, x), unbroadcast(b, gy, y)]


def _size(shape) -> int:
    return int(np.prod(shape))


def _swap_last(rank: int) -> tuple[int, ...]:
    return tuple(range(rank - 2)) + (rank - 1, rank - 2)


@op("gemm", trans_a=False, trans_b=False, alpha=1.0, beta=1.0)
class Gemm(OpDef):
    """y = alpha·op(a) @ op(b) (+ beta·c), op = transpose where `trans_a`/`trans_b`; 2-D only (ONNX Gemm).
    The transposes are attributes, never separate nodes: ORT's Gemm is faster that way."""

    samples = [Sample(((3, 4), (4, 5), (5,))), Sample(((4, 3), (4, 5)), {"trans_a": True}),
               Sample(((3, 4), (5, 4), (1, 5)), {"trans_b": True}),
               Sample(((4, 3), (5, 4)), {"trans_a": True, "trans_b": True}),
               # positive operands: no cancellation, so float32 stays within its relative tolerance
               Sample((("positive", (3, 4)), ("positive", (4, 5)), ("positive", (3, 5))), {"alpha": 0.75, "beta": 0.3})]

    dtypes = FLOATS  # ONNX Runtime has no integer Gemm

    def infer(self, a, b, c=None, *, trans_a, trans_b, alpha, beta):
        if any(t.dtype != a.dtype for t in (b, c) if t is not None):
            raise OpError(f"`gemm` of mismatched dtypes `{a}` and `{b}`" + (f" and `{c}`" if c is not None else ""),
                          hint="convert one side with `cast`")
        if a.rank != 2 or b.rank != 2:
            raise OpError(f"`gemm` needs 2-D operands, got `{a}` and `{b}`")
        m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
        k2, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
        if not _dims_match(k, k2):
            raise OpError(f"matrix product of `{a}` and `{b}`: inner dimensions `{k}` and `{k2}` differ")
        out = TensorType(a.dtype, (m, n))
        if c is not None and broadcast_shapes(c.shape, out.shape) != out.shape:
            raise OpError(f"bias `{c}` does not broadcast to `{out}`")
        return out

    def lower(self, e, a, b, c=None, *, trans_a, trans_b, alpha, beta):
        if a.type.dtype == "float64" and any(float(np.float32(v)) != v for v in (alpha, beta)):
            # ONNX stores alpha and beta as float32: scale in float64 instead
            y = e.node("Mul", e.node("Gemm", a, b, transA=int(trans_a), transB=int(trans_b)), e.scalar(alpha, "float64"))
            return y if c is None else e.node("Add", y, e.node("Mul", c, e.scalar(beta, "float64")))
        inputs = [a, b] + ([c] if c is not None else [])
        extra = {"alpha": float(alpha)} if alpha != 1.0 else {}
        if beta != 1.0:
            extra["beta"] = float(beta)
        return e.node("Gemm", *inputs, transA=int(trans_a), transB=int(trans_b), **extra)

    def torch(self, T, a, b, c=None, *, trans_a, trans_b, alpha, beta):
        a, b = (a.t() if trans_a else a), (b.t() if trans_b else b)
        return alpha * T.mm(a, b) if c is None else T.addmm(c, a, b, beta=beta, alpha=alpha)

    def flops(self, out, a, b, c=None, *, trans_a, trans_b, alpha, beta):
        return 2 * _size(out.shape) * (a.shape[0] if trans_a else a.shape[1])

    def evaluate(self, a, b, c=None, *, trans_a, trans_b, alpha, beta):
        y = alpha * ((a.T if trans_a else a) @ (b.T if trans_b else b))
        return y if c is None else y + beta * c

    def grad(self, b, g, out, x, y, c=None, *, trans_a, trans_b, alpha, beta):
        grad_c = None
        if c is not None:
            grad_c = unbroadcast(b, g if beta == 1.0 else b.mul(g, b.scalar_like(beta, g)), c)
        if alpha != 1.0:
            g = b.mul(g, b.scalar_like(alpha, g))
        if not trans_a and not trans_b:
            gx, gy = b.gemm(g, y, trans_b=True), b.gemm(x, g, trans_a=True)
        elif not trans_a and trans_b:
            gx, gy = b.gemm(g, y), b.gemm(g, x, trans_a=True)
        elif trans_a and not trans_b:
            gx, gy = b.gemm(y, g, trans_b=True), b.gemm(x, g)
        else:
            gx, gy = b.gemm(y, g, trans_a=True, trans_b=True), b.gemm(g, x, trans_a=True, trans_b=True)
        return [gx, gy] if c is None else [gx, gy, grad_c]
