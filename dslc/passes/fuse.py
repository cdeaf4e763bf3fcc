"""fuse: fold element-wise work into the matrix products that feed it, where ONNX Gemm can do it
(Y = alpha·op(A)·op(B) + beta·C):

    add(gemm(a, b), t)           -> gemm(a, b, t)               t of the product's shape
    gemm(a, b, mul(s, t); beta)  -> gemm(a, b, t; beta·s)       s a scalar constant
    mul(s, gemm(a, b, c))        -> gemm(a, b, c; alpha·s, beta·s)

A product is fused only when nothing else uses it, so no work is done twice. The optimizer update
`v = momentum·v + grad` becomes one Gemm writing straight into the new velocity.
"""
from __future__ import annotations

import numpy as np

from dslc.ir.graph import Graph, Node
from dslc.passes.rewrite import rewrite, use_counts, with_inputs


def _scalar_const(node: Node) -> float | None:
    if node.op == "const" and node.attrs["value"].size == 1 and node.type.is_float:
        return float(np.asarray(node.attrs["value"]).reshape(()))
    return None


def fuse(graph: Graph) -> Graph:
    uses = use_counts(graph)

    def single(node: Node) -> bool:
        return uses[node.id] == 1

    def gemm(like: Node, inputs, **changes) -> Node:
        attrs = {**like.attrs, **changes}
        return Node("gemm", tuple(inputs), attrs, like.type, like.span)

    def visit(node: Node, inputs: tuple[Node, ...]) -> Node:
        node = with_inputs(node, inputs)
        if node.op == "add":
            for prod, other in (inputs, inputs[::-1]):
                if (prod.op == "gemm" and len(prod.inputs) == 2 and single(prod) and other.type == node.type
                        and prod.type == node.type):
                    return visit(gemm(prod, prod.inputs + (other,)), prod.inputs + (other,))
        if node.op == "gemm" and len(inputs) == 3 and inputs[2].op == "mul" and single(inputs[2]):
            s, t = inputs[2].inputs
            scale = _scalar_const(s)
            if scale is None:
                s, t = t, s
                scale = _scalar_const(s)
            if scale is not None and t.type == inputs[2].type:
                return gemm(node, inputs[:2] + (t,), beta=node.attrs["beta"] * scale)
        if node.op == "mul":
            for s, prod in (inputs, inputs[::-1]):
                scale = _scalar_const(s)
                if scale is not None and prod.op == "gemm" and single(prod) and prod.type == node.type:
                    return gemm(prod, prod.inputs, alpha=prod.attrs["alpha"] * scale, beta=prod.attrs["beta"] * scale)
        return node

    return rewrite(graph, visit)
