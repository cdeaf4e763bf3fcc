"""Structural checks between passes: every op is registered, every input is declared, types agree
with the shape rules, output names are unique. A failure here is a compiler bug, not a user error."""
from __future__ import annotations

from dslc.ir.graph import Graph, OpError


class InternalError(Exception):
    """A bug in dslc itself (reported as an internal compiler error, exit code 101)."""


def verify(graph: Graph, after: str = "") -> None:
    from dslc.ops.registry import REGISTRY

    where = f" after `{after}`" if after else ""
    declared = {n.id for n in graph.inputs}
    names = [name for name, _ in graph.outputs]
    if len(set(names)) != len(names):
        raise InternalError(f"graph `{graph.name}`{where}: duplicate output names")
    input_names = [n.name for n in graph.inputs]
    if len(set(input_names)) != len(input_names):
        raise InternalError(f"graph `{graph.name}`{where}: duplicate input names")
    for node in graph.nodes():
        if node.op not in REGISTRY:
            raise InternalError(f"graph `{graph.name}`{where}: unknown op `{node.op}`")
        if node.op == "input":
            if node.id not in declared:
                raise InternalError(f"graph `{graph.name}`{where}: undeclared input `{node.name}`")
            continue
        if node.op == "const":
            continue
        try:
            expected = REGISTRY[node.op].infer(*[i.type for i in node.inputs], **node.attrs)
        except OpError as e:
            raise InternalError(f"graph `{graph.name}`{where}: `{node.op}` fails its shape rule: {e.message}") from None
        if expected != node.type:
            raise InternalError(f"graph `{graph.name}`{where}: `{node.op}` has type `{node.type}`, its rule says `{expected}`")
