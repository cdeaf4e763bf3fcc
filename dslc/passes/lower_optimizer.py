"""lower_optimizer: turn the `grad.<param>` outputs into the optimizer's update.

Adds the learning-rate hyper-input and the optimizer state inputs (zero-initialized), and replaces
the gradient outputs by `<name>.next` outputs for every parameter and state tensor."""
from __future__ import annotations

import numpy as np

from dslc.ir.graph import Builder, Graph
from dslc.ir.types import TensorType, numpy_dtype
from dslc.optim import apply_updates, state_inputs
from dslc.passes.autodiff import GRAD_PREFIX

NEXT_SUFFIX = ".next"
LR = "lr"


def lower_optimizer(graph: Graph) -> Graph:
    spec = graph.notes["optimizer"]
    b = Builder(spec.span)
    params = graph.inputs_with_role("param")
    outputs_by_name = dict(graph.outputs)
    grads = [outputs_by_name[GRAD_PREFIX + p.name] for p in params]
    dtype = graph.notes["float_dtype"]
    lr = b.input(LR, TensorType(dtype, ()), "hyper", default=np.array(spec.setting("lr"), dtype=numpy_dtype(dtype)), kind="lr")
    states = state_inputs(b, spec, params, graph.notes.get("state_prefix", ""))
    next_params, next_states = apply_updates(b, spec, params, grads, lr, states)
    outputs = [(name, node) for name, node in graph.outputs if not name.startswith(GRAD_PREFIX)]
    outputs += [(p.name + NEXT_SUFFIX, n) for p, n in zip(params, next_params)]
    outputs += [(s.name + NEXT_SUFFIX, n) for s, n in zip(states, next_states)]
    inputs = (graph.inputs_with_role("data", "target") + [lr] + graph.inputs_with_role("hyper") + params
              + graph.inputs_with_role("grad", "frozen", "buffer") + states)
    return Graph(graph.name, inputs, outputs, dict(graph.notes))
