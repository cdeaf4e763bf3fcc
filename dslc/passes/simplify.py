"""simplify: fold constants, drop algebraic identities (x·1, x+0, x-0, x/1, same-dtype casts),
and merge common subexpressions. Dead code goes too: a graph holds only what its outputs reach."""
from __future__ import annotations

import numpy as np

from dslc.ir.graph import Graph, Node
from dslc.ir.types import numpy_dtype
from dslc.ops.registry import get_op
from dslc.passes.rewrite import rewrite, with_inputs

FOLD_LIMIT = 1 << 16  # elements: larger results stay computed at run time


def _is_const(node: Node, value: float | None = None) -> bool:
    if node.op != "const":
        return False
    return value is None or bool(np.all(node.attrs["value"] == value))


def _identity_of(node: Node, inputs: tuple[Node, ...]) -> Node | None:
    """The input that `node` merely passes through, if it is an identity."""
    if node.op == "cast" and inputs[0].type == node.type:
        return inputs[0]
    if len(inputs) != 2:
        return None
    a, b = inputs
    if node.op in ("mul", "div") and _is_const(b, 1.0) and a.type == node.type:
        return a
    if node.op == "mul" and _is_const(a, 1.0) and b.type == node.type:
        return b
    if node.op in ("add", "sub") and _is_const(b, 0.0) and a.type == node.type:
        return a
    if node.op == "add" and _is_const(a, 0.0) and b.type == node.type:
        return b
    return None


def _attr_key(value):
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(_attr_key(v) for v in value)
    return value


def simplify(graph: Graph) -> Graph:
    seen: dict[tuple, Node] = {}

    def visit(node: Node, inputs: tuple[Node, ...]) -> Node:
        if node.op == "input":
            return node
        node = with_inputs(node, inputs)
        same = _identity_of(node, inputs)
        if same is not None:
            return same
        opdef = get_op(node.op)
        if (node.op != "const" and inputs and all(i.op == "const" for i in inputs) and opdef.evaluate is not None
                and node.type.is_static and int(np.prod(node.type.shape)) <= FOLD_LIMIT):
            value = opdef.evaluate(*[i.attrs["value"] for i in inputs], **node.attrs)
            node = Node("const", (), {"value": np.asarray(value, dtype=numpy_dtype(node.type.dtype))}, node.type, node.span)
        key = (node.op, tuple(i.id for i in node.inputs), tuple((k, _attr_key(v)) for k, v in node.attrs.items()))
        return seen.setdefault(key, node)

    return rewrite(graph, visit)
