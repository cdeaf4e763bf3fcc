"""lower: AST → IR. Evaluates a model's statements into typed IR nodes.

Hyper-parameters and arithmetic on plain numbers are evaluated at compile time; tensor expressions
become nodes (expressions: `lower_exprs`, calls: `lower_calls`, the training statements:
`lower_training`, the hyper-parameters and `-D` values: `lower_hyper`, all mixins of `Lowering`). Layers
and functions come from `dslc.builtins`, blocks from the file and its imports. `mode` is "train" (dropout active, loss and metrics), "eval" (loss and metrics, no
dropout) or "infer" (outputs only).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from dslc.builtins import load_all
from dslc.diagnostics import Diagnostic, DslcError, error, suggest
from dslc.frontend import ast
from dslc.initializers import rng_for
from dslc.ir.graph import Builder, Node, OpError, check_type
from dslc.ir.types import SHORT_TO_DTYPE, TensorType, dtype_of_numpy, numpy_dtype
from dslc.limits import Budget
from dslc.losses import matches, nothing_selected_hint
from dslc.lower_calls import CallLowering, describe
from dslc.lower_context import Context
from dslc.lower_exprs import POISON, ExpressionLowering, Poisoned
from dslc.lower_hyper import HyperLowering
from dslc.lower_training import HYPER_INPUTS, HYPER_WHAT, SEED, TrainingLowering
from dslc.objectives import objective_of, selected, update_selectors
from dslc.optim import OptimizerSpec
from dslc.source import Span


@dataclass
class LoweredModel:
    name: str
    inputs: list[Node] = field(default_factory=list)  # data inputs, then targets
    outputs: list[tuple[str, Node]] = field(default_factory=list)
    output_spans: dict[str, Span] = field(default_factory=dict)
    loss: Node | None = None
    loss_span: Span | None = None
    metrics: list[tuple[str, Node]] = field(default_factory=list)
    metric_aggregates: dict[int, dict] = field(default_factory=dict)  # node id -> `Context.note_metric`
    metric_reduce: dict[str, dict] = field(default_factory=dict)  # metric name -> its manifest entry's keys
    optimizer: OptimizerSpec | None = None
    params: list[Node] = field(default_factory=list)  # trainable (role "param", or "frozen" when this
    # objective does not update them)
    param_kinds: dict[str, str] = field(default_factory=dict)
    buffers: list[Node] = field(default_factory=list)  # non-trainable values the forward pass updates
    buffer_updates: dict[str, Node] = field(default_factory=dict)  # buffer name -> next value (training)
    objective: str = ""
    seed: Node | None = None
    target_classes: dict[str, int] = field(default_factory=dict)
    target_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    sample_weights: dict[str, str | None] = field(default_factory=dict)  # input -> the target it weights
    callbacks: dict[str, tuple[dict, ast.Callback]] = field(default_factory=dict)  # declared: settings, statement
    layers: dict[str | tuple, tuple] = field(default_factory=dict)  # layer -> (kind, output type) at its first
    # call; a layer without parameters (`relu`, `flatten`, `max_pool2d`...) is keyed by `plain_layer_key`


# An ONNX file is one protobuf message, which cannot exceed 2 GiB; the graph's nodes need some of it.
MAX_WEIGHT_BYTES = 2**31 - 2**27


def plain_layer_key(site: tuple, occurrence: int, kind: str) -> tuple:
    """The key of a layer without parameters in `LoweredModel.layers`: (scope, its kind, call site, run)."""
    return (site[0], kind, *site[1:], occurrence)


def name_plain_layers(layers: dict) -> dict[str, tuple]:
    """`layers` (named layers and `plain_layer_key`s, in the order of their first calls) with every
    layer named: the ones without parameters `<kind>_<k>` in their scope, counted per kind in call order
    (`relu_0`, `block_0.dropout_1`), skipping names the model's layers hold."""
    counts: dict[tuple, int] = {}
    named: dict[str, tuple] = {}
    for key, entry in layers.items():
        if isinstance(key, str):
            named[key] = entry
            continue
        scope, kind = key[0], key[1]
        while True:
            k = counts.get((scope, kind), 0)
            counts[(scope, kind)] = k + 1
            name = f"{scope}.{kind}_{k}" if scope else f"{kind}_{k}"
            if name not in layers and name not in named:
                break
        named[name] = entry
    return named


def byte_size(nbytes: int) -> str:
    """`1.5 GiB`, `12.0 MiB`, `300 bytes`; `about 10^20 TiB` for sizes beyond a float's range"""
    if nbytes >= 2**40 * 10**9:  # as digits: dividing an integer beyond 1e308 overflows a float
        return f"about 10^{len(str(nbytes // 2**40)) - 1} TiB"
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:,.1f} {unit}"
    return f"{nbytes} bytes"


class Lowering(ExpressionLowering, CallLowering, TrainingLowering, HyperLowering):
    def __init__(self, model: ast.Model, blocks: dict[str, ast.Block], mode: str, float_dtype: str = "float32",
                 seed: int = 0, defines: dict[str, str] | None = None, objective: str = "",
                 dims: dict[str, int] | None = None, freeze: tuple[str, ...] = (), drawn: dict | None = None):
        self.model, self.blocks, self.mode = model, blocks, mode
        # initial values by (parameter, initializer, shape), shared by the lowerings of one compilation:
        # each graph's lowering would draw the same values again (seconds and a copy per GB)
        self.drawn = drawn if drawn is not None else {}
        self.undrawn: list[tuple[Node, object, int, int]] = []  # drawn once the model is lowered
        self.dims = dims or {}  # symbolic dimensions pinned to sizes (`dslc build --dim B=64`)
        self.symbols: set[str] = set()  # the symbolic dimensions the declarations name, pinned or not
        self.float_dtype, self.init_seed = float_dtype, seed
        self.defines = defines or {}
        self.builtins = load_all()
        self.result = LoweredModel(model.name, objective=objective)
        self.objective = objective_of(model, objective) if mode != "infer" else None
        self.updates = update_selectors(self.objective) if self.objective is not None and mode == "train" else None
        self.freeze = freeze if mode == "train" else ()  # parameters no training graph updates (`--freeze`)
        self.ctx = Context(self)
        self.scope: list[str] = []
        self.layer_counts: dict[tuple, int] = {}
        self.param_index: dict[str, Node] = {}
        self.layer_kinds: dict[str, str] = {}  # layer name -> kind (`dense`, a block's name, ...)
        self.layer_calls: dict[str, tuple] = {}  # layer name -> (its parameters, settings, span) at its first call
        self.plain_calls: dict[tuple, int] = {}  # (scope, call site) -> calls so far of a layer without parameters
        self.sharing_stack: list[bool] = []
        self.entered_scopes: set[str] = set()
        self.salt = 0
        self.active_blocks: list[str] = []  # the blocks being expanded, outermost first
        self.param_bytes = 0
        self.nesting = 0  # of `eval`, in blocks too: each level is a few Python frames
        self.errors: list[Diagnostic] = []  # of the statements lowered so far (`statement`)
        self.budget = Budget()

    # ---- names and parameters ---------------------------------------------------------------------
    def new_layer(self, kind: str, explicit: str | None, span: Span, name_span: Span | None = None) -> str:
        """A layer's name: `name` as given (a name used before means the same layer, whose parameters
        are shared), else `<kind>_<k>`; inside blocks, prefixed by the block's scope."""
        prefix = ".".join(self.scope)
        if explicit is not None:
            if not explicit.isidentifier():  # letters (any script), digits and `_`
                raise error(f"\"{explicit}\" is not a valid layer name", name_span or span,
                            hint="a layer name is made of letters, digits and `_`, and does not start with a digit "
                                 "(`.` separates blocks and layers, `*` and `?` are patterns in selectors)")
            full = f"{prefix}.{explicit}" if prefix else explicit
        else:
            key = (prefix, kind)
            while True:
                k = self.layer_counts.get(key, 0)
                self.layer_counts[key] = k + 1
                full = f"{prefix}.{kind}_{k}" if prefix else f"{kind}_{k}"
                if full not in self.layer_kinds or self.sharing:
                    break
        if full in self.layer_kinds and self.layer_kinds[full] != kind:
            raise error(f"`{full}` names a `{self.layer_kinds[full]}` already; this is a `{kind}`", span,
                        hint="give this layer another name")
        self.layer_kinds[full] = kind
        return full

    def note_plain_layer(self, kind: str, span: Span, output: Node) -> None:
        """For `dslc summary`: a call of a layer or activation that makes no parameters (`relu`,
        `dropout`, `flatten`...). It has no name, so it is keyed by its scope, its call site and how often
        that site ran (`repeat`); the graphs agree on these keys, and `name_plain_layers` names them.
        Inside a shared scope it is the first call's layer again, listed once."""
        if self.sharing:
            return
        site = (".".join(self.scope), span.source.path, span.start, span.end)
        n = self.plain_calls.get(site, 0)
        self.plain_calls[site] = n + 1
        self.result.layers.setdefault(plain_layer_key(site, n, kind), (kind, output.type))

    def enter_scope(self, block: str, explicit: str | None, span: Span, name_span: Span | None = None) -> None:
        """Open the scope of a block call; re-entering a named scope shares its parameters."""
        full = self.new_layer(block, explicit, span, name_span)
        self.scope.append(full.rsplit(".", 1)[-1])
        inner = ".".join(self.scope)
        shared = explicit is not None and full in self.entered_scopes
        self.entered_scopes.add(full)
        self.sharing_stack.append(shared)
        if shared:  # the layers inside get the names they had the first time
            for key in [k for k in self.layer_counts if k[0] == inner or k[0].startswith(inner + ".")]:
                del self.layer_counts[key]

    def leave_scope(self) -> None:
        self.scope.pop()
        self.sharing_stack.pop()

    @property
    def sharing(self) -> bool:
        return any(self.sharing_stack)

    def new_param(self, name, shape, init, kind, fan_in, fan_out, span) -> Node:
        existing = self.param_index.get(name)
        if existing is not None:  # a shared layer, called again
            if existing.type.shape != shape:
                raise error(f"layer `{name.rsplit('.', 1)[0]}` is shared, but this call needs `{name}` of shape "
                            f"{list(shape)}, not {list(existing.type.shape)}", span,
                            hint="give this layer another name, or feed it inputs of the first call's shape")
            return existing
        t = TensorType(self.float_dtype, shape)
        nbytes = math.prod(shape) * numpy_dtype(self.float_dtype).itemsize
        total = self.param_bytes + nbytes
        if total > MAX_WEIGHT_BYTES:  # checked before the values are drawn: they might not fit in memory
            layer, local = name.rsplit(".", 1)
            others = f", {byte_size(total)} with the parameters before it" if self.param_bytes else ""
            raise error(f"layer `{layer}` needs {byte_size(nbytes)} for its parameter `{local}` `{t}`{others}", span,
                        hint="the weights of a graph must fit in one ONNX file, "
                             f"at most {MAX_WEIGHT_BYTES / 2**30:g} GiB: make the layer smaller")
        self.param_bytes = total
        updated = (self.updates is None or selected(self.updates, name, kind)) and not any(
            matches(sel, name, kind) for sel in self.freeze)
        role = "param" if updated else "frozen"
        node = Builder(span).input(name, t, role, default=None, init=str(init))
        self.undrawn.append((node, init, fan_in, fan_out))
        self.result.params.append(node)
        self.param_index[name] = node
        self.result.param_kinds[name] = kind
        return node

    def new_buffer(self, name: str, value: np.ndarray, span) -> Node:
        dtype = self.float_dtype if value.dtype.kind == "f" else dtype_of_numpy(value.dtype)
        default = np.asarray(value, dtype=numpy_dtype(dtype))
        node = Builder(span).input(name, TensorType(dtype, default.shape), "buffer", default=default)
        self.result.buffers.append(node)
        return node

    def seed_input(self) -> Node:
        if self.result.seed is None:
            self.result.seed = Builder(self.model.span).input(SEED, TensorType("int64", ()), "hyper",
                                                              default=np.array(0, dtype=np.int64), kind="seed")
        return self.result.seed

    # ---- the model --------------------------------------------------------------------------------
    def run(self) -> LoweredModel:
        """Lower the model, statement by statement; a statement that fails is reported and lowering goes
        on with the next one (names it defines are `POISON`), so that every error is reported at once."""
        env = self.hyper_params()
        defined: dict[str, Span] = {}
        for stmt in self.model.body:
            try:
                self.budget.check(stmt.span, "this statement")
            except DslcError as e:  # the statements after it would cross the limit too: stop here
                raise DslcError(self.errors + e.diagnostics) from None
            if isinstance(stmt, ast.InputDecl):
                with self.statement(env, defined, stmt.name, stmt.name_span):
                    self.define(env, defined, stmt.name, self.declare_input(stmt, env), stmt.name_span)
            elif isinstance(stmt, ast.Assign):
                with self.statement(env, defined, stmt.name, stmt.name_span):
                    self.define(env, defined, stmt.name, self.eval(stmt.value, env), stmt.name_span)
            elif isinstance(stmt, ast.Output):
                with self.statement(env, defined, stmt.name, stmt.name_span):
                    self.output(stmt, env, defined)
            elif isinstance(stmt, (ast.Loss, ast.Optimizer, ast.Metric, ast.Objective)):
                pass  # training statements: evaluated after the forward pass
            elif isinstance(stmt, ast.Callback):
                if self.mode == "infer":  # a setting of the training loop: read once
                    with self.statement(env):
                        self.callback(stmt, env)
            elif isinstance(stmt, ast.Update):
                self.errors.append(Diagnostic("`update` belongs in an `objective`", stmt.span, hint=(
                    "a single loss updates every parameter; declare objectives to split them")))
            elif isinstance(stmt, ast.Return):
                self.errors.append(Diagnostic("`return` belongs in a block, not in a model", stmt.span,
                                              hint="mark model results with `output name = ...`"))
        if not any(isinstance(stmt, ast.Output) for stmt in self.model.body):
            self.errors.append(Diagnostic(f"model `{self.model.name}` declares no output", self.model.name_span,
                                          hint="add a line such as `output probs = softmax(logits)`"))
        if self.objective is not None:
            for stmt in self.objective.body:
                with self.statement(env):
                    self.training_statement(stmt, env)
            self.ctx.warn_multi_label_argmax()
        if self.errors:
            raise DslcError(self.errors)
        if self.updates:
            self.check_updates()
        self.draw_initial_values()
        return self.result

    def draw_initial_values(self) -> None:
        """The parameters' initial values, drawn only once the whole model is lowered: a model whose
        parameters exceed `MAX_WEIGHT_BYTES` is refused before any is drawn."""
        for node, init, fan_in, fan_out in self.undrawn:
            key = (node.name, str(init), node.type.shape)
            if key not in self.drawn:
                values = init.sample(node.type.shape, fan_in, fan_out, rng_for(self.init_seed, node.name))
                self.drawn[key] = np.asarray(values, dtype=numpy_dtype(self.float_dtype))
            node.attrs["default"] = self.drawn[key]
        self.undrawn = []

    @contextmanager
    def statement(self, env: dict, defined: dict | None = None, name: str | None = None, span: Span | None = None):
        """Lower one statement; on errors, record them and bind the name it defines, if any, to `POISON`."""
        try:
            yield
        except DslcError as e:
            self.errors.extend(e.diagnostics)
            if name is not None and name not in env:
                env[name] = POISON
                if defined is not None:
                    defined[name] = span

    def check_updates(self) -> None:
        params = self.result.params
        for sel, span in self.updates:
            if not any(matches(sel, p.name, self.result.param_kinds[p.name]) for p in params):
                raise error(f"`update` selects no parameters with `{sel}`", span, hint=nothing_selected_hint(sel, params))

    def define(self, env, defined, name, value, span):
        if name in defined:
            raise DslcError(Diagnostic(f"`{name}` is defined twice", span, "defined again here",
                                       hint="give the new value another name", notes=(("first defined here", defined[name]),)))
        if name in env:
            raise error(f"`{name}` is a hyper-parameter; it cannot be redefined", span)
        defined[name] = span
        env[name] = value

    def declare_input(self, stmt: ast.InputDecl, env) -> Node:
        t = stmt.type
        dtype = SHORT_TO_DTYPE[t.dtype]
        if dtype == "float32":
            dtype = self.float_dtype
        dims = []
        hyper = {p.name for p in self.model.params}
        for d in t.dims:
            if d.value in hyper:  # a size given by a hyper-parameter
                value = self.lookup(ast.Name(d.value, d.span), env)
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise error(f"the dimension `{d.value}` must be a whole number, got {describe(value)}", d.span,
                                hint="a dimension is a size such as `784` or a symbol such as `B`")
                dims.append(value)
            elif isinstance(d.value, str):
                self.symbols.add(d.value)
                dims.append(self.dims.get(d.value, d.value))
            else:
                dims.append(d.value)
            if dims[-1] == 0:
                raise error(f"`{stmt.name}` has a dimension of size 0", d.span, hint=(
                    "a tensor with no elements has no values to compute with (a max over none is -inf, a "
                    "mean NaN): every static dimension is at least 1"))
        role = "data" if stmt.kind == "input" else "target"
        if self.objective is not None and stmt.name in HYPER_INPUTS:
            raise error(f"the name `{stmt.name}` is reserved for the training graph's {HYPER_WHAT[stmt.name]} input",
                        stmt.name_span, hint=f"rename this {stmt.kind}")
        declared = TensorType(dtype, tuple(dims))
        try:
            check_type(declared, f"`{stmt.name}`")
        except OpError as e:
            raise error(e.message, stmt.type.span, hint=e.hint) from None
        node = Builder(stmt.span).input(stmt.name, declared, role)
        self.result.inputs.append(node)
        return node

    def output(self, stmt: ast.Output, env, defined):
        if stmt.value is not None:
            value = self.eval(stmt.value, env)
            self.define(env, defined, stmt.name, value, stmt.name_span)
        elif stmt.name not in env:
            raise error(f"unknown name `{stmt.name}`", stmt.name_span, hint=suggest(stmt.name, env))
        value = env[stmt.name]
        if value is POISON:
            raise Poisoned()
        if not isinstance(value, Node):
            raise error(f"output `{stmt.name}` must be a tensor, not {describe(value)}", stmt.span)
        if stmt.name in dict(self.result.outputs):
            raise error(f"`{stmt.name}` is an output already", stmt.span)
        self.result.outputs.append((stmt.name, value))
        self.result.output_spans[stmt.name] = stmt.span
