"""The training step cut in two at the gradients, for gradient accumulation and data parallelism:

    grad graph:   data, targets, seed, params, frozen, buffers -> loss, metrics, next buffers, `<param>.grad`
    apply graph:  params, `<param>.grad`, state, lr            -> next params, next state

`name_gradients` runs after `autodiff` in the grad pipeline; `gradient_inputs` starts the apply
pipeline, whose `lower_optimizer` then reads the gradients from inputs instead of computed values.
Chaining the two computes the fused step; `fuse` only differs in that it cannot fold the optimizer's
first operation on a gradient into the Gemm computing it (the Gemm is in the other graph).
"""
from __future__ import annotations

from dslc.ir.graph import Builder, Graph
from dslc.passes.autodiff import GRAD_PREFIX

GRAD_SUFFIX = ".grad"
SPLIT_PASSES = ("name_gradients", "gradient_inputs")  # passes of the split pipelines only


def gradient_name(param: str) -> str:
    return param + GRAD_SUFFIX


def name_gradients(graph: Graph) -> Graph:
    """Rename `autodiff`'s `grad.<param>` outputs to the grad graph's `<param>.grad`."""
    outputs = [(gradient_name(name[len(GRAD_PREFIX):]) if name.startswith(GRAD_PREFIX) else name, node)
               for name, node in graph.outputs]
    return Graph(graph.name, graph.inputs, outputs, dict(graph.notes))


def gradient_inputs(graph: Graph) -> Graph:
    """The apply graph's start: the parameters and one input per parameter holding its gradient,
    exposed as `autodiff`'s `grad.<param>` outputs for `lower_optimizer` to consume."""
    b = Builder(graph.notes["optimizer"].span)
    params = graph.inputs_with_role("param")
    grads = [b.input(gradient_name(p.name), p.type, "grad", param=p.name) for p in params]
    outputs = [(GRAD_PREFIX + p.name, g) for p, g in zip(params, grads)]
    return Graph(graph.name, params + grads, outputs, dict(graph.notes))
