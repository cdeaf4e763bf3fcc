"""A stable text form of the IR (`dslc build --emit ir`, golden files): values numbered in
topological order, constants shown by shape (and value when small), source positions at the end."""
from __future__ import annotations

import numpy as np

from dslc.ir.graph import Graph


def _attr(value) -> str:
    if isinstance(value, np.ndarray):
        if value.size <= 4:
            return np.array2string(value, separator=", ").replace("\n", "")
        return f"<{value.dtype}{list(value.shape)}>"
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def print_graph(graph: Graph, with_spans: bool = True) -> str:
    order = graph.nodes()
    number = {n.id: i for i, n in enumerate(order)}
    lines = [f"graph {graph.name} {{"]
    for node in graph.inputs:
        extra = " = <init>" if node.attrs.get("default") is not None else ""
        lines.append(f"  input %{number[node.id]} {node.name}: {node.type}  [{node.role}]{extra}")
    for node in order:
        if node.op == "input":
            continue
        if node.op == "const":
            lines.append(f"  %{number[node.id]}: {node.type} = const {_attr(node.attrs['value'])}")
            continue
        args = ", ".join(f"%{number[i.id]}" for i in node.inputs)
        attrs = ", ".join(f"{k}={_attr(v)}" for k, v in node.attrs.items() if v is not None)
        text = f"  %{number[node.id]}: {node.type} = {node.op}({args}{'; ' + attrs if attrs else ''})"
        if with_spans and node.span is not None:
            text += f"  # {node.span.source.path}:{node.span.line}:{node.span.col}"
        lines.append(text)
    for name, node in graph.outputs:
        lines.append(f"  output {name} = %{number[node.id]}")
    lines.append("}")
    return "\n".join(lines)
