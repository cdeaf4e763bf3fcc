"""reorder: pool before activating. `max_pool(f(x))` becomes `f(max_pool(x))` when `f` is an
element-wise non-decreasing activation (relu, sigmoid, tanh, leaky_relu with alpha ≥ 0) and the pool
is its only user: the maximum of a window commutes with `f`, so the values are the same, and so is the
gradient with ties shared equally (a tie in f(x) that is not one in x lies where f is flat, where f' = 0
zeroes both routes). `f` and its gradient then run on the pooled, smaller tensor: on LeNet's first
layer 4× fewer elements.
"""
from __future__ import annotations

from dslc.ir.graph import Graph, Node
from dslc.passes.rewrite import rewrite, use_counts, with_inputs

MONOTONE = ("relu", "sigmoid", "tanh")


def _commutes_with_max(node: Node) -> bool:
    return node.op in MONOTONE or (node.op == "leaky_relu" and node.attrs["alpha"] >= 0)


def reorder(graph: Graph) -> Graph:
    users = use_counts(graph)

    def visit(node: Node, inputs: tuple[Node, ...]) -> Node:
        if node.op == "max_pool" and _commutes_with_max(inputs[0]) and users[node.inputs[0].id] == 1:
            activation = inputs[0]
            pooled = Node("max_pool", activation.inputs, node.attrs, node.type, node.span)
            return Node(activation.op, (pooled,), activation.attrs, node.type, activation.span)
        return with_inputs(node, inputs)

    return rewrite(graph, visit)
