"""Rebuild a graph node by node: the shared walk of rewriting passes."""
from __future__ import annotations

from collections import Counter
from typing import Callable

from dslc.ir.graph import Graph, Node, toposort


def rewrite(graph: Graph, fn: Callable[[Node, tuple[Node, ...]], Node]) -> Graph:
    """`fn(node, new_inputs)` returns the node to use in place of `node` (given its rewritten inputs)."""
    new: dict[int, Node] = {}
    for node in toposort([n for _, n in graph.outputs] + list(graph.inputs)):
        inputs = tuple(new[i.id] for i in node.inputs)
        new[node.id] = fn(node, inputs)
    return Graph(graph.name, [new[n.id] for n in graph.inputs], [(name, new[n.id]) for name, n in graph.outputs],
                 dict(graph.notes))


def with_inputs(node: Node, inputs: tuple[Node, ...]) -> Node:
    if all(a is b for a, b in zip(inputs, node.inputs)):
        return node
    return Node(node.op, inputs, node.attrs, node.type, node.span)


def use_counts(graph: Graph) -> Counter:
    """How many times each node id is read: as an input of a node, or as a graph output."""
    uses = Counter(i.id for n in graph.nodes() for i in n.inputs)
    uses.update(n.id for _, n in graph.outputs)
    return uses
