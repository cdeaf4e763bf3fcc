"""Emit an IR graph as an ONNX ModelProto, each node through its registry entry's `lower`."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dslc.ir.graph import Graph, toposort
from dslc.ir.types import TensorType, numpy_dtype
from dslc.ops.registry import Formulations, formulation_key, get_op

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17; older runtimes read it

_ONNX_DTYPES = {
    "float32": TensorProto.FLOAT,
    "float64": TensorProto.DOUBLE,
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT64,
    "bool": TensorProto.BOOL,
}


@dataclass(frozen=True)
class Lowered:
    """An IR value as the lowering sees it: its ONNX name and its IR type."""

    name: str
    type: TensorType


class Emitter:
    """What `OpDef.lower` writes with: `node(...)` adds an ONNX node and returns its output name.
    `choices`: the formulation to write for each shape-dependent choice (`formulation_key` -> name), as
    `dslc build --tune` measured them; choices not in it follow the op's rule."""

    def __init__(self, prefix: str = "", choices: dict[str, str] | None = None):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._const_names: dict[tuple, str] = {}
        self._producers: dict[str, onnx.NodeProto] = {}
        self._cache: dict[tuple, object] = {}
        self._count = 0
        self._prefix = prefix
        self._hint = "v"
        self.choices = choices or {}
        self.lowering = None  # the IR node being lowered
        self.ir_nodes: list = []  # the graph's IR nodes in lowering order (for a lowering that writes several)

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{self._prefix}{hint}_{self._count}"

    def node(self, op_type: str, *inputs, **attrs) -> str:
        return self.node_outputs(op_type, 1, *inputs, **attrs)[0]

    def node_outputs(self, op_type: str, count: int, *inputs, **attrs) -> list[str]:
        """A node with `count` outputs (`TopK`'s values and indices), their names in order."""
        names = [i.name if isinstance(i, Lowered) else ("" if i is None else i) for i in inputs]
        outs = [self.fresh(self._hint) for _ in range(count)]
        self.nodes.append(helper.make_node(op_type, names, outs, name=f"{outs[0]}/{op_type}", **attrs))
        for out in outs:
            self._producers[out] = self.nodes[-1]
        return outs

    def producer(self, value) -> onnx.NodeProto | None:
        """The node this graph's lowering wrote `value` with (None for a graph input or a constant)."""
        return self._producers.get(value.name if isinstance(value, Lowered) else value)

    def cached(self, key: tuple, make):
        """`make()` the first time `key` is asked for in this graph, the same result afterwards: values
        that several nodes' lowerings compute alike (the random numbers' seed state)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def formulation(self, options: Formulations) -> str:
        """Which of an op's equivalent lowerings to write for the node being lowered: the measured choice
        for its shape, else the rule's."""
        node = self.lowering
        if node is None:
            return options.rule
        chosen = self.choices.get(formulation_key(node.op, [i.type for i in node.inputs], node.attrs))
        return chosen if chosen in options.candidates else options.rule

    def onnx_dtype(self, dtype: str) -> int:
        return _ONNX_DTYPES[dtype]

    def const(self, array: np.ndarray, name: str | None = None) -> str:
        array = np.asarray(array)
        key = (array.dtype.str, array.shape, array.tobytes())
        if name is None and key in self._const_names:
            return self._const_names[key]
        name = name or self.fresh("const")
        self.initializers.append(numpy_helper.from_array(array, name))
        self._const_names.setdefault(key, name)
        return name

    def scalar(self, value, dtype: str) -> str:
        return self.const(np.array(value, dtype=numpy_dtype(dtype)))

    def int64s(self, values, scalar: bool = False) -> str:
        return self.const(np.array(values if not scalar else values, dtype=np.int64))


def value_info(name: str, t: TensorType) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, _ONNX_DTYPES[t.dtype], [d for d in t.shape])


def emit_graph(graph: Graph, doc: str = "", metadata: dict[str, str] | None = None,
               constant_roles: tuple[str, ...] = (), choices: dict[str, str] | None = None) -> onnx.ModelProto:
    """The ONNX model of `graph`. Inputs whose role is in `constant_roles` become plain initializers
    holding their default (the weights of an inference graph); every other input is a plain graph input
    without an initializer, which every runtime lets its caller feed (initial values ship in the init
    graph, `emit_init_graph`). `choices`: the tuned formulations (`Emitter`)."""
    e = Emitter(choices=choices)
    names: dict[int, str] = {}
    graph_inputs, initializers = [], []
    for node in graph.inputs:
        names[node.id] = node.name
        if node.role not in constant_roles:
            graph_inputs.append(value_info(node.name, node.type))
        elif node.attrs.get("default") is not None:
            default = np.asarray(node.attrs["default"], dtype=numpy_dtype(node.type.dtype))
            initializers.append(numpy_helper.from_array(default, node.name))
        else:
            raise ValueError(f"constant input `{node.name}` of graph `{graph.name}` has no value")

    wanted: dict[int, str] = {}  # op node -> the graph output name its value should carry
    for out_name, node in graph.outputs:
        if node.op not in ("input", "const"):
            wanted.setdefault(node.id, out_name)

    input_ids = {n.id for n in graph.inputs}
    e.ir_nodes = toposort([n for _, n in graph.outputs])
    for node in e.ir_nodes:
        if node.id in names:
            continue
        if node.op == "input":
            if node.id not in input_ids:
                raise ValueError(f"graph `{graph.name}` uses input `{node.name}` that it does not declare")
            continue
        if node.op == "const":
            names[node.id] = e.const(node.attrs["value"])
            continue
        first_new = len(e.nodes)
        e._hint, e.lowering = node.op, node
        result = get_op(node.op).lower(e, *[Lowered(names[i.id], i.type) for i in node.inputs], **node.attrs)
        target = wanted.get(node.id)
        if target is not None:
            produced = [n for n in e.nodes[first_new:] if result in n.output]
            if produced:
                produced[0].output[list(produced[0].output).index(result)] = target
                for later in e.nodes[first_new:]:
                    for k, inp in enumerate(later.input):
                        if inp == result:
                            later.input[k] = target
                result = target
        names[node.id] = result

    outputs, used = [], set()
    for out_name, node in graph.outputs:
        if names[node.id] != out_name or out_name in used:
            e.nodes.append(helper.make_node("Identity", [names[node.id]], [out_name], name=f"{out_name}/Identity"))
        used.add(out_name)
        outputs.append(value_info(out_name, node.type))

    nodes, read = _live(e.nodes, [o.name for o in outputs])
    constants = [c for c in e.initializers if c.name in read]
    onnx_graph = helper.make_graph(nodes, graph.name, graph_inputs, outputs, initializer=initializers + constants,
                                   doc_string=doc)
    return _model(onnx_graph, doc, metadata)


def _live(nodes: list[onnx.NodeProto], outputs: list[str]) -> tuple[list[onnx.NodeProto], set[str]]:
    """The nodes (in order) that the graph's outputs depend on, and the names they read. A lowering may
    read past what its inputs computed (the GRU reads the table its input projections were looked up in)
    and leave a node nothing reads, which ONNX Runtime would still run."""
    read, live = set(outputs), []
    for node in reversed(nodes):
        if any(out in read for out in node.output):
            live.append(node)
            read.update(node.input)
    return live[::-1], read


INIT_SUFFIX = "/initial"  # the init graph's initializer behind output `<name>`


def emit_init_graph(name: str, values: list[tuple[str, TensorType, np.ndarray]], doc: str = "",
                    metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """A graph without inputs whose outputs are `values`, each under its name: one `run()` of it in any
    runtime gives the first feeds of the training graphs. Output `<name>` is `Identity` of the
    initializer `<name>/initial`."""
    nodes, initializers, outputs = [], [], []
    for value_name, t, value in values:
        array = np.asarray(value, dtype=numpy_dtype(t.dtype))
        if tuple(array.shape) != tuple(t.shape):
            raise ValueError(f"initial value of `{value_name}` has shape {array.shape}, expected {t.shape}")
        initializers.append(numpy_helper.from_array(array, value_name + INIT_SUFFIX))
        nodes.append(helper.make_node("Identity", [value_name + INIT_SUFFIX], [value_name], name=f"{value_name}/Identity"))
        outputs.append(value_info(value_name, t))
    return _model(helper.make_graph(nodes, name, [], outputs, initializer=initializers, doc_string=doc), doc, metadata)


def _model(onnx_graph: onnx.GraphProto, doc: str, metadata: dict[str, str] | None) -> onnx.ModelProto:
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dslc",
                              doc_string=doc)
    model.ir_version = IR_VERSION
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def check(model: onnx.ModelProto) -> None:
    """The ONNX checker with full shape inference: a wrong declared shape is an internal error."""
    onnx.checker.check_model(model, full_check=True)


def serialize(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString()


def node_count(model_bytes: bytes) -> int:
    """The number of nodes in a serialized model's main graph (`dslc summary`)."""
    return len(onnx.load_from_string(model_bytes).graph.node)
