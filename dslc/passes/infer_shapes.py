"""infer_shapes: derive every node's dtype and shape from the graph inputs with the ops' shape rules.

Nodes are typed when built (so user errors surface at once with their span); this pass re-derives
all types from the inputs, so a graph rewritten by a later pass (or with retyped inputs) is typed
consistently again.
"""
from __future__ import annotations

from dslc.diagnostics import Diagnostic, DslcError
from dslc.ir.graph import Graph, Node, OpError
from dslc.ops.registry import get_op
from dslc.passes.rewrite import rewrite


def infer_shapes(graph: Graph) -> Graph:
    def retype(node: Node, inputs: tuple[Node, ...]) -> Node:
        if node.op in ("input", "const"):
            return node
        try:
            out_type = get_op(node.op).infer(*[i.type for i in inputs], **node.attrs)
        except OpError as e:
            raise DslcError(Diagnostic(e.message, node.span, e.label, e.hint)) from None
        if out_type == node.type and all(a is b for a, b in zip(inputs, node.inputs)):
            return node
        return Node(node.op, inputs, node.attrs, out_type, node.span)

    return rewrite(graph, retype)
