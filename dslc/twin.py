"""The PyTorch twin of a compiled model: the same forward IR, run by PyTorch eager op by op with each
op's `OpDef.torch`, differentiated by autograd and updated by `torch.optim` — what a PyTorch user would
run for the same model. `dslc bench --compare torch` times it against the ONNX graphs.

torch is passed in (`T`), never imported here: it is a benchmark and test dependency only.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from dslc.ir.graph import Graph, Node, toposort
from dslc.ops.registry import get_op


class MissingTwin(Exception):
    """An op of the model has no PyTorch implementation."""


def _program(graph: Graph) -> list[tuple]:
    steps = []
    for node in toposort([n for _, n in graph.outputs]):
        if node.op in ("input", "const"):
            continue
        opdef = get_op(node.op)
        if opdef.torch is None:
            raise MissingTwin(f"op `{node.op}` has no PyTorch implementation")
        steps.append((node.id, opdef, tuple(i.id for i in node.inputs), node.attrs))
    return steps


class TorchTwin:
    """`loss_and_step(batch)` is one training step (forward, backward, optimizer); `infer(inputs)` runs the
    inference graph. Parameters start from the compiled initial values."""

    def __init__(self, T, train: Graph, infer: Graph, optimizer):
        self.T = T
        self.params = {n.name: T.nn.Parameter(T.from_numpy(np.array(n.attrs["default"])))
                       for n in train.inputs if n.role in ("param", "frozen")}
        self.buffers = {n.name: T.from_numpy(np.array(n.attrs["default"])) for n in train.inputs if n.role == "buffer"}
        self.train_graph, self.infer_graph = train, infer
        self._train = _program(train)
        self._infer = _program(infer)
        updated = [self.params[n.name] for n in train.inputs if n.role == "param"]
        self.spec = optimizer
        self.optimizer = make_optimizer(T, optimizer, updated)

    def _values(self, graph: Graph, batch: Mapping[str, np.ndarray]) -> dict[int, object]:
        T = self.T
        values = {}
        for node in graph.inputs:
            if node.name in self.params:
                values[node.id] = self.params[node.name]
            elif node.name in self.buffers:
                values[node.id] = self.buffers[node.name]
            elif node.name in batch:
                values[node.id] = T.from_numpy(batch[node.name])
            else:  # hyper-inputs (lr, seed) take their defaults
                values[node.id] = T.from_numpy(np.array(node.attrs["default"]))
        for node in toposort([n for _, n in graph.outputs]):
            if node.op == "const":
                values[node.id] = T.from_numpy(np.array(node.attrs["value"]))
        return values

    def _run(self, steps, values):
        for node_id, opdef, inputs, attrs in steps:
            values[node_id] = opdef.torch(self.T, *[values[i] for i in inputs], **attrs)
        return values

    def loss(self, batch: Mapping[str, np.ndarray]):
        values = self._run(self._train, self._values(self.train_graph, batch))
        return {name: values[node.id] for name, node in self.train_graph.outputs}

    def loss_and_step(self, batch: Mapping[str, np.ndarray]) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        outputs = self.loss(batch)
        loss = outputs["loss"]
        loss.backward()
        self.clip()
        self.optimizer.step()
        for name in self.buffers:
            if name + ".next" in outputs:
                self.buffers[name] = outputs[name + ".next"].detach()
        return float(loss.detach())

    def clip(self) -> None:
        """The optimizer's `clip_norm`/`clip_value`, as a PyTorch user clips before `step()` (its schedule,
        like Keras `decay`, is left out: a per-step rate change costs PyTorch nothing measurable)."""
        setting, params = self.spec.setting, [p for p in self.params.values() if p.grad is not None]
        if setting("clip_norm"):
            self.T.nn.utils.clip_grad_norm_(params, setting("clip_norm"))
        elif setting("clip_value"):
            self.T.nn.utils.clip_grad_value_(params, setting("clip_value"))

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, object]:
        with self.T.no_grad():
            values = self._run(self._infer, self._values(self.infer_graph, inputs))
        return {name: values[node.id] for name, node in self.infer_graph.outputs}


def make_optimizer(T, spec, params, foreach: bool | None = None):
    """The `torch.optim` optimizer with the settings of a dslc `OptimizerSpec` (Keras `decay` is left
    out: a per-step learning-rate change costs PyTorch nothing measurable). `foreach` picks torch's
    multi-tensor update (None: torch's default, a loop over parameters on the CPU)."""
    s = spec.setting
    if spec.kind == "sgd":
        return T.optim.SGD(params, lr=s("lr"), momentum=s("momentum"), nesterov=s("nesterov"), weight_decay=s("weight_decay"),
                           foreach=foreach)
    if spec.kind == "rmsprop":
        return T.optim.RMSprop(params, lr=s("lr"), alpha=s("rho"), eps=s("eps"), momentum=s("momentum"),
                               centered=s("centered"), weight_decay=s("weight_decay"), foreach=foreach)
    if spec.kind == "adagrad":
        return T.optim.Adagrad(params, lr=s("lr"), eps=s("eps"), weight_decay=s("weight_decay"), foreach=foreach)
    if spec.kind == "nadam":
        return T.optim.NAdam(params, lr=s("lr"), betas=(s("beta1"), s("beta2")), eps=s("eps"),
                             weight_decay=s("weight_decay"), momentum_decay=s("momentum_decay"), foreach=foreach)
    if spec.kind not in ("adam", "adamw"):
        raise MissingTwin(f"`torch.optim` has no `{spec.kind}` optimizer")
    cls = T.optim.Adam if spec.kind == "adam" else T.optim.AdamW
    return cls(params, lr=s("lr"), betas=(s("beta1"), s("beta2")), eps=s("eps"), weight_decay=s("weight_decay"),
               amsgrad=s("amsgrad"), foreach=foreach)


def concrete(t, dims: Mapping[str, int]):
    """TensorType `t` with its symbolic dims (`B`, products such as `B*T`) bound to `dims`."""
    from dslc.ir.types import TensorType

    shape = []
    for d in t.shape:
        if isinstance(d, int):
            shape.append(d)
        else:  # a symbol or a product of symbols (`B*T`)
            value = 1
            for factor in str(d).split("*"):
                value *= int(factor) if factor.isdigit() else dims[factor]
            shape.append(value)
    return TensorType(t.dtype, tuple(shape))


def flops(graph: Graph, dims: Mapping[str, int]) -> int:
    """FLOPs of one run of `graph` with symbolic dims bound to `dims` (matrix products and convolutions)."""
    total = 0
    for node in toposort([n for _, n in graph.outputs]):
        if node.op in ("input", "const"):
            continue
        total += get_op(node.op).flops(concrete(node.type, dims), *[concrete(i.type, dims) for i in node.inputs],
                                       **node.attrs)
    return total


def io_bytes(graph: Graph, dims: Mapping[str, int]) -> int:
    """The bytes one run of `graph` must move at least: every input read once and every output written
    once (for a training step: the batch, parameters and optimizer state in, their next values out) — the
    traffic of a perfectly fused step, whose intermediates never leave the caches."""
    def size(node: Node) -> int:
        t = concrete(node.type, dims)
        return int(np.prod(t.shape, dtype=np.int64)) * np.dtype(t.dtype).itemsize

    return sum(size(n) for n in graph.inputs) + sum(size(n) for _, n in graph.outputs)
