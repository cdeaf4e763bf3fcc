"""IR nodes, graphs and the builder that creates typed nodes.

A node is one operation producing one tensor. Nodes are immutable and compared by identity;
a graph is its list of inputs (source nodes of op `input`) and its named outputs. Every node
records the `.dl` span it came from, so errors found by later passes still point at the model text.
"""
from __future__ import annotations

import itertools
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from dslc.diagnostics import Diagnostic, DslcError
from dslc.ir.types import TensorType, numpy_dtype
from dslc.source import Span

_ids = itertools.count()


def next_node_id() -> int:
    """The id the next node gets (the call uses it up): ids grow by one per node made, so two calls
    bound the nodes made between them."""
    return next(_ids)


@dataclass(frozen=True, eq=False)
class Node:
    op: str
    inputs: tuple["Node", ...]
    attrs: dict[str, Any]
    type: TensorType
    span: Span | None = None
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def name(self) -> str | None:
        """The external name of an `input` node (data, target, hyper, param or state)."""
        return self.attrs.get("name")

    @property
    def role(self) -> str | None:
        return self.attrs.get("role")

    def __repr__(self) -> str:
        return f"%{self.id}:{self.op}:{self.type}"


@dataclass
class Graph:
    name: str
    inputs: list[Node]
    outputs: list[tuple[str, Node]]
    notes: dict[str, Any] = field(default_factory=dict)

    def nodes(self) -> list[Node]:
        return toposort([n for _, n in self.outputs] + list(self.inputs))

    def output(self, name: str) -> Node:
        return dict(self.outputs)[name]

    def inputs_with_role(self, *roles: str) -> list[Node]:
        return [n for n in self.inputs if n.role in roles]


def toposort(roots: Iterable[Node]) -> list[Node]:
    """Every node reachable from `roots`, inputs before users; iterative (deep graphs are fine)."""
    order: list[Node] = []
    seen: set[int] = set()
    for root in roots:
        if root.id in seen:
            continue
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if node.id in seen:
                continue
            seen.add(node.id)
            stack.append((node, True))
            for inp in reversed(node.inputs):
                if inp.id not in seen:
                    stack.append((inp, False))
    return order


class OpError(Exception):
    """Raised by a shape rule; the builder turns it into a diagnostic at the node's span."""

    def __init__(self, message: str, hint: str = "", label: str = ""):
        super().__init__(message)
        self.message, self.hint, self.label = message, hint, label


# Static dimensions, and the number of elements of a tensor of static shape, stay below this: shapes are
# int64 in ONNX, and ONNX Runtime and the ONNX shape inference multiply them in int64
MAX_ELEMENTS = 2**62


def check_type(t: TensorType, what: str = "the result") -> None:
    """Raises `OpError` for a type whose static dimensions (or their product) no int64 shape can hold;
    `what` names the tensor in the message."""
    total = 1
    for d in t.shape:
        if isinstance(d, int):
            total *= d
            if total > MAX_ELEMENTS:  # stop here: the product of huge sizes may not even fit a float
                raise OpError(f"{what} `{t}` is too large: its static dimensions multiply to more than "
                              f"2^62 elements", hint="a tensor holds at most 2^62 (4.6e18) elements; check the "
                                                     "sizes and strides")


def number_error(value, dtype: str) -> tuple[str, str, str]:
    """The message, label and hint for a finite number beyond the range of the float `dtype`."""
    largest = float(np.finfo(numpy_dtype(dtype)).max)
    return (f"the number {float(np.max(np.abs(value))):g} is beyond the range of `{dtype}`", "",
            f"`{dtype}` holds magnitudes up to {largest:.3g}")


def check_number(value: float, dtype: str) -> None:
    """Raises `OpError` for a finite number that `dtype` turns into infinity."""
    if np.isfinite(value) and abs(value) > float(np.finfo(numpy_dtype(dtype)).max):
        message, label, hint = number_error(value, dtype)
        raise OpError(message, hint, label)


class Builder:
    """Creates typed nodes: `b.emit("add", x, y)` or `b.add(x, y)`; the shape rule runs at once."""

    def __init__(self, span: Span | None = None):
        self.span = span

    @contextmanager
    def at(self, span: Span | None):
        saved, self.span = self.span, (span if span is not None else self.span)
        try:
            yield self
        finally:
            self.span = saved

    def emit(self, op: str, *inputs: Node, span: Span | None = None, **attrs) -> Node:
        from dslc.ops.registry import get_op

        opdef = get_op(op)
        attrs = opdef.complete_attrs(attrs)
        span = span if span is not None else self.span
        try:
            opdef.check_dtypes(*[i.type for i in inputs])
            out_type = opdef.infer(*[i.type for i in inputs], **attrs)
            check_type(out_type)
            if out_type.is_float:
                for value in attrs.values():
                    if isinstance(value, float):
                        check_number(value, out_type.dtype)
        except OpError as e:
            raise DslcError(Diagnostic(e.message, span, e.label, e.hint)) from None
        return Node(op, tuple(inputs), attrs, out_type, span)

    def __getattr__(self, op: str):
        from dslc.ops.registry import REGISTRY

        if op in REGISTRY:
            return lambda *inputs, **attrs: self.emit(op, *inputs, **attrs)
        raise AttributeError(op)

    def const(self, value, dtype: str) -> Node:
        try:
            with np.errstate(over="raise"):
                array = np.asarray(value, dtype=numpy_dtype(dtype))
        except FloatingPointError:
            message, label, hint = number_error(value, dtype)
            raise DslcError(Diagnostic(message, self.span, label, hint)) from None
        return Node("const", (), {"value": array}, TensorType(dtype, array.shape), self.span)

    def scalar_like(self, value: float, like: Node) -> Node:
        return self.const(value, like.type.dtype)

    def input(self, name: str, type: TensorType, role: str, default=None, span: Span | None = None, **meta) -> Node:
        attrs = {"name": name, "role": role, "default": default, **meta}
        return Node("input", (), attrs, type, span if span is not None else self.span)
