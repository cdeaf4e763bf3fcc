"""fold_norm: a layer norm's scale and shift folded into the matrix products that read it.

    gemm(flatten(normalize(x)·w + b), W, c)  ->  gemm(flatten(normalize(x)), w[:, None]·W, b·W + c)

when every use of the layer norm's output is such a product, as input A of a plain `gemm` (a `linear`
or `dense` layer, attention's projections; `flatten` only for inputs of rank 3 or more). The values
are the same up to rounding. The scale and shift then cost work on the `[D, units]` weights instead of
two passes over the activations `[rows, D]`, and their gradient (g·w, g·y and two row sums over the
activations) becomes the gradient of that weight work: in the transformer, 6 passes over `[B·T, D]` a
layer norm. Runs before autodiff, which derives the gradients of the folded form.
"""
from __future__ import annotations

from collections import defaultdict

from dslc.ir.graph import Builder, Graph, Node
from dslc.passes.rewrite import rewrite, with_inputs


def _layer_norm_parts(node: Node) -> tuple[Node, Node, Node] | None:
    """(normalize(x), w, b) when `node` is normalize(x)·w + b with w and b of the last dimension's size."""
    if node.op != "add" or node.inputs[0].op != "mul" or node.inputs[0].inputs[0].op != "normalize":
        return None
    normalized, w = node.inputs[0].inputs
    b = node.inputs[1]
    width = normalized.type.shape[-1:]
    if w.type.shape != width or b.type.shape != width or normalized.type.rank < 2:
        return None
    return normalized, w, b


def _plain_product_input(node: Node, index: int) -> bool:
    return (node.op == "gemm" and index == 0 and not node.attrs["trans_a"] and not node.attrs["trans_b"]
            and node.attrs["alpha"] == 1.0 and node.attrs["beta"] == 1.0)


def fold_norm(graph: Graph) -> Graph:
    users: dict[int, list[tuple[Node, int]]] = defaultdict(list)
    for node in graph.nodes():
        for index, source in enumerate(node.inputs):
            users[source.id].append((node, index))
    outputs = {n.id for _, n in graph.outputs}

    def shape_only(user: Node, index: int) -> bool:
        return user.op == "unflatten_like" and index == 1  # reads the layer norm's shape, not its values

    def foldable(norm: Node) -> bool:
        """Whether every use of the layer norm `norm` reads its rows into a plain product (its shape aside)."""
        if norm.id in outputs or _layer_norm_parts(norm) is None:
            return False
        for user, index in users[norm.id]:
            if shape_only(user, index):
                continue
            if norm.type.rank == 2:
                reads = [(user, index)]
            elif user.op == "flatten" and user.attrs["axis"] == norm.type.rank - 1 and user.id not in outputs:
                reads = users[user.id]
            else:
                return False
            if not reads or not all(_plain_product_input(u, i) for u, i in reads):
                return False
        return True

    folded = {n.id for n in graph.nodes() if foldable(n)}
    normalized_rows: dict[int, Node] = {}
    done: dict[int, Node] = {}  # original node id -> its rewritten node

    def visit(node: Node, inputs: tuple[Node, ...]) -> Node:
        done[node.id] = rewritten = fold(node, inputs)
        return rewritten

    def fold(node: Node, inputs: tuple[Node, ...]) -> Node:
        if node.op == "unflatten_like" and node.inputs[1].id in folded:
            return with_inputs(node, (inputs[0], done[_layer_norm_parts(node.inputs[1])[0].id]))
        if node.op != "gemm":
            return with_inputs(node, inputs)
        rows = node.inputs[0]
        norm = rows.inputs[0] if rows.op == "flatten" else rows
        if norm.id not in folded:
            return with_inputs(node, inputs)
        normalized, w, b = (done[n.id] for n in _layer_norm_parts(norm))
        weight, bias = inputs[1], inputs[2] if len(inputs) > 2 else None
        bld = Builder(node.span)
        if norm.id not in normalized_rows:
            normalized_rows[norm.id] = (normalized if normalized.type.rank == 2
                                        else bld.flatten(normalized, axis=normalized.type.rank - 1))
        scaled = bld.mul(bld.unsqueeze(w, axes=(1,)), weight)  # [D, units]: row d times w[d]
        shift = bld.gemm(bld.unsqueeze(b, axes=(0,)), weight)  # [1, units]
        return bld.gemm(normalized_rows[norm.id], scaled, shift if bias is None else bld.add(shift, bias))

    return rewrite(graph, visit)
