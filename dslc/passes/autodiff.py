"""autodiff: reverse-mode differentiation of the graph's loss with respect to its parameters.

Adds one output `grad.<param>` per parameter input. The walk names no op: it visits nodes in
reverse topological order, asks each op's registry entry for its input gradients, and sums the
gradients of values used more than once.
"""
from __future__ import annotations

import numpy as np

from dslc.diagnostics import Diagnostic, DslcError
from dslc.ir.graph import Builder, Graph, Node, toposort
from dslc.ir.verify import InternalError
from dslc.ops.registry import get_op

GRAD_PREFIX = "grad."


def gradients(loss: Node, wrt: list[Node], reached: set[int] | None = None) -> list[Node]:
    """d loss / d w for each w in `wrt` (a zero tensor where the loss does not depend on w through
    differentiable ops); adds the ids of the others to `reached`."""
    b = Builder(loss.span)
    order = toposort([loss])
    wanted = {w.id for w in wrt}
    depends: set[int] = set()
    for node in order:
        if node.id in wanted or any(i.id in depends for i in node.inputs):
            depends.add(node.id)

    grads: dict[int, Node] = {loss.id: b.const(1.0, loss.type.dtype)}
    for node in reversed(order):
        grad_out = grads.get(node.id)
        if grad_out is None or node.op in ("input", "const") or not any(i.id in depends for i in node.inputs):
            continue
        opdef = get_op(node.op)
        if not opdef.differentiable:
            raise DslcError(Diagnostic(f"`{node.op}` has no gradient, but the loss depends on parameters through it",
                                       node.span, hint="compute this value from data only, or use a differentiable op"))
        with b.at(node.span):
            input_grads = opdef.grad(b, grad_out, node, *node.inputs, **node.attrs)
        if len(input_grads) != len(node.inputs):
            raise InternalError(f"gradient rule of `{node.op}` returned {len(input_grads)} gradients for {len(node.inputs)} inputs")
        for inp, g in zip(node.inputs, input_grads):
            if g is None or inp.id not in depends:
                continue
            if g.type != inp.type:
                raise InternalError(f"gradient rule of `{node.op}` gave `{g.type}` for an input of type `{inp.type}`")
            grads[inp.id] = g if inp.id not in grads else b.add(grads[inp.id], g)

    out = []
    for w in wrt:
        g = grads.get(w.id)
        if g is None:
            g = b.const(np.zeros(w.type.shape), w.type.dtype)  # parameters have static shapes
        elif reached is not None:
            reached.add(w.id)
        out.append(g)
    return out


def autodiff(graph: Graph) -> Graph:
    loss = graph.output(graph.notes["loss"])
    params = graph.inputs_with_role("param")
    reached: set[int] = set()
    grads = gradients(loss, params, reached)
    if not reached:
        raise DslcError(_no_gradient(graph, loss, params))
    outputs = graph.outputs + [(GRAD_PREFIX + p.name, g) for p, g in zip(params, grads)]
    return Graph(graph.name, graph.inputs, outputs, dict(graph.notes))


def _no_gradient(graph: Graph, loss: Node, params: list[Node]) -> Diagnostic:
    span = graph.notes.get("loss_span") or loss.span
    if not params and not graph.inputs_with_role("frozen"):
        return Diagnostic("this loss has no parameters to train: the model has no layer with parameters", span,
                          hint="add layers with parameters such as `dense`, or drop the loss and optimizer "
                               "for an inference-only model")
    update = graph.notes.get("update_span")
    notes = (("the parameters it updates", update),) if update else ()
    used = {n.id for n in toposort([loss])}
    if not any(p.id in used for p in params):
        if update:
            return Diagnostic("this loss does not depend on any parameter its objective updates", span, notes=notes,
                              hint="`update` the layers the loss is computed from")
        return Diagnostic("this loss does not depend on any parameter", span,
                          hint="compute it from the results of layers with parameters, such as `dense`")
    what = "no parameter this objective updates" if update else "no parameter"
    return Diagnostic(f"{what} receives a gradient from this loss", span, notes=notes,
                      hint="the loss must depend on a layer's parameters through differentiable operations: "
                           "comparisons, `accuracy` and casts from `bool` or integers have no gradient")
