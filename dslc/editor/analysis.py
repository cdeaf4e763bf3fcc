"""What the editor shows about a `.dl` buffer, from the compiler itself: its diagnostics, the type the
compiler inferred for each value, input and call (recorded while the model is lowered, so hover shows
exactly what the shape rules computed), the parameters each layer call made, and where names are defined.

    analysis = analyze("/abs/path/model.dl", text)
    analysis.diagnostics          # as `dslc check` reports them (a file without a model: syntax, imports)
    analysis.hover(offset)        # Markdown, or None
    analysis.definition(offset)   # (path, Span) of the definition of the name under the cursor
    analysis.symbols()            # the model, blocks and their values, as a tree
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from dslc.builtins import load_all
from dslc.declared_callbacks import CALLBACKS
from dslc.declared_callbacks import DOCS as CALLBACK_DOCS
from dslc.declared_callbacks import usage as callback_usage
from dslc.diagnostics import Diagnostic, DslcError
from dslc.frontend import ast
from dslc.frontend.tokens import Token, tokens
from dslc.initializers import INITIALIZERS, Initializer
from dslc.ir.graph import Node
from dslc.lower import Lowering
from dslc.lower_calls import TupleValue, tuple_text
from dslc.optim import OPTIMIZERS, OptimizerSpec
from dslc.source import SourceFile, Span


@dataclass
class CallRecord:
    """One lowering of a call: its callee, the value piped or passed first, its result and the
    parameters it made (or shares)."""

    func: str
    first: object
    result: object
    params: tuple[Node, ...]


@dataclass
class Records:
    """What the lowerings computed at each span of the analyzed file: values and calls, each lowering
    (inference, training, each objective; each call of a block) adding its own."""

    path: str
    values: dict[tuple[int, int], list] = field(default_factory=dict)
    calls: dict[tuple[int, int], list[CallRecord]] = field(default_factory=dict)

    def add(self, table: dict, span: Span | None, item) -> None:
        if span is not None and span.source.path == self.path:
            table.setdefault((span.start, span.end), []).append(item)


class RecordingLowering(Lowering):
    """The compiler's lowering, noting the value of every expression and definition, and every call."""

    def __init__(self, *args, records: Records, **kwargs):
        super().__init__(*args, **kwargs)
        self.records = records

    def eval(self, expr, env):
        value = super().eval(expr, env)
        self.records.add(self.records.values, expr.span, value)
        return value

    def define(self, env, defined, name, value, span):
        super().define(env, defined, name, value, span)
        self.records.add(self.records.values, span, value)

    def hyper_param(self, p, env):
        value = super().hyper_param(p, env)
        self.records.add(self.records.values, param_name_span(p), value)
        return value

    def declare_input(self, stmt, env):
        node = super().declare_input(stmt, env)
        self.records.add(self.records.values, stmt.name_span, node)
        return node

    def optimizer(self, call, env):
        spec = super().optimizer(call, env)
        self.records.add(self.records.values, call.func_span, spec)
        return spec

    def call(self, func, func_span, span, args, kwargs, env):
        before = set(self.param_index)
        result = super().call(func, func_span, span, args, kwargs, env)
        if func in self.blocks:
            params = [self.param_index[name] for name in self.param_index if name not in before]
        else:  # a builtin: the layers this call made, or shares with an earlier call of the same name
            params = [self.param_index[f"{layer}.{local}"] for layer, made in self.ctx._made.items()
                      for local in made if f"{layer}.{local}" in self.param_index]
        first = None
        if args:
            first = args[0].value if args[0].evaluated else \
                self.records.values.get((args[0].span.start, args[0].span.end), [None])[-1]
        self.records.add(self.records.calls, func_span, CallRecord(func, first, result, tuple(params)))
        return result


@dataclass
class Symbol:
    name: str
    kind: str  # "model", "block", "objective", "parameter", "input", "target", "value", "output"
    span: Span  # the whole definition
    name_span: Span
    children: list["Symbol"] = field(default_factory=list)


@dataclass
class Analysis:
    source: SourceFile
    module: ast.Module | None = None
    blocks: dict[str, ast.Block] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    records: Records | None = None
    toks: list[Token] = field(default_factory=list)

    # ---- hover ------------------------------------------------------------------------------------
    def hover(self, offset: int) -> tuple[str, Span] | None:
        """Markdown for the value, call or built-in at `offset`, and the span it is about."""
        found = self._recorded(offset)
        if found is not None:
            kind, (start, end), items = found
            span = self.source.span(start, end)
            text = _call_hover(items, self) if kind == "call" else _value_hover(span, items)
            if text:
                return text, span
        tok = self.token_at(offset)
        if tok is not None and tok.kind == "NAME":
            text = catalogue_entry(tok.text, self.blocks)
            if text:
                return text, self.source.span(tok.start, tok.end)
        return None

    def _recorded(self, offset: int):
        best = None
        for kind, table in (("call", self.records.calls), ("value", self.records.values)) if self.records else ():
            for (start, end), items in table.items():
                if start <= offset < end and (best is None or end - start < best[1][1] - best[1][0]):
                    best = (kind, (start, end), items)
        return best

    def token_at(self, offset: int) -> Token | None:
        for tok in self.toks:
            if tok.start <= offset < tok.end or (tok.end == offset and tok.kind in ("NAME", "STRING")):
                if tok.kind not in ("WS", "_NL", "COMMENT"):
                    return tok
        return None

    # ---- definitions and symbols ------------------------------------------------------------------
    def definition(self, offset: int) -> Span | None:
        """Where the name, block or import under `offset` is defined (an import: the start of its file)."""
        tok = self.token_at(offset)
        if tok is None or self.module is None:
            return None
        if tok.kind == "STRING":
            for imp in self.module.imports:
                if imp.span.start <= tok.start < imp.span.end:
                    target = Path(self.source.path).parent / imp.path
                    if target.is_file():
                        return SourceFile.from_text(str(target), "").span(0, 0)
            return None
        if tok.kind != "NAME":
            return None
        for symbol in self.names_in_scope(offset):
            if symbol.name == tok.text:
                return symbol.name_span
        block = self.blocks.get(tok.text)
        return block.name_span if block is not None else None

    def names_in_scope(self, offset: int) -> list[Symbol]:
        """The parameters and values of the model or block around `offset`."""
        scope = next((s for s in self.symbols() if s.span.start <= offset < s.span.end), None)
        return [s for s in _flatten(scope.children) if s.kind != "objective"] if scope else []

    def symbols(self) -> list[Symbol]:
        if self.module is None:
            return []
        out = []
        for definition in sorted(self.module.blocks + self.module.models, key=lambda d: d.span.start):
            kind = "model" if isinstance(definition, ast.Model) else "block"
            children = [Symbol(p.name, "parameter", p.span, param_name_span(p)) for p in definition.params]
            children += _statement_symbols(definition.body)
            out.append(Symbol(definition.name, kind, definition.span, definition.name_span, children))
        return out


def param_name_span(p: ast.Param) -> Span:
    """The name of a model's or block's parameter (its span covers `name = default`)."""
    return p.span.source.span(p.span.start, p.span.start + len(p.name))


def _statement_symbols(body) -> list[Symbol]:
    out = []
    for stmt in body:
        if isinstance(stmt, ast.InputDecl):
            out.append(Symbol(stmt.name, stmt.kind, stmt.span, stmt.name_span))
        elif isinstance(stmt, ast.Assign):
            out.append(Symbol(stmt.name, "value", stmt.span, stmt.name_span))
        elif isinstance(stmt, ast.Output) and stmt.value is not None:
            out.append(Symbol(stmt.name, "output", stmt.span, stmt.name_span))
        elif isinstance(stmt, ast.Objective):
            out.append(Symbol(stmt.name, "objective", stmt.span, stmt.name_span, _statement_symbols(stmt.body)))
    return out


def _flatten(symbols: list[Symbol]) -> list[Symbol]:
    out = []
    for s in symbols:
        out.append(s)
        out.extend(_flatten(s.children))
    return out


def import_leading_to(source: SourceFile, path: str) -> ast.Import | None:
    """The `import` of `source` through which the file at `path` is read, directly or through the files
    it imports (an error in that file is shown at this import); None if none does."""
    from dslc.frontend.imports import ImportRoots, resolve_import
    from dslc.frontend.parser import parse, parse_file

    wanted, roots = Path(path).resolve(), ImportRoots.of(source.path)
    try:
        module = parse(source)
    except DslcError:
        return None
    for imp in module.imports:
        stack, seen = [(imp, source.path)], set()
        while stack:
            current, importer = stack.pop()
            try:
                target = resolve_import(current, importer, roots).resolve()
                if target == wanted:
                    return imp
                if target not in seen:
                    seen.add(target)
                    stack.extend((child, str(target)) for child in parse_file(target).imports)
            except (DslcError, OSError):  # a file that does not parse or read: its own diagnostic says so
                continue
    return None


# ---- hover texts -----------------------------------------------------------------------------------
def _shown(value) -> str | None:
    if isinstance(value, Node):
        return f"`{value.type}`"
    if isinstance(value, bool):
        return f"`{'true' if value else 'false'}`"
    if isinstance(value, (int, float)):
        return f"`{value}` (known when the model is built)"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, TupleValue):
        return f"`{tuple_text(value)}`"
    if isinstance(value, Initializer):
        return f"initializer `{value}`"
    if isinstance(value, OptimizerSpec):
        settings = ", ".join(f"{k} = {_literal(value.setting(k))}" for k in OPTIMIZERS[value.kind][0])
        return f"optimizer `{value.kind}({settings})`"
    return None


def _distinct(texts) -> list[str]:
    return list(dict.fromkeys(t for t in texts if t))


def _value_hover(span: Span, values: list) -> str:
    name = span.source.text[span.start:span.end]
    shown = _distinct(_shown(v) for v in values)
    if not shown:
        return ""
    head = f"`{name}`: " if name.isidentifier() else ""
    if len(shown) == 1:
        return head + shown[0]
    return head + "one of, by call:\n" + "\n".join(f"- {s}" for s in shown)


MAX_PARAMS_SHOWN = 10


def _call_hover(calls: list[CallRecord], analysis: Analysis) -> str:
    """Each distinct lowering of the call: its input and result types and the parameters it made; calls
    alike but for their layers' names (a `repeat`, a block used twice) are shown once, counted."""
    func = calls[0].func
    lines = []
    for group in _groups(calls):
        call = group[0]
        result = _shown(call.result)
        times = f" ({len(group)} calls)" if len(group) > 1 else ""
        if isinstance(call.first, Node) and isinstance(call.result, Node):
            lines.append(f"`{func}`: `{call.first.type}` → `{call.result.type}`{times}")
        elif result:
            lines.append(f"`{func}` → {result}{times}")
        if call.params:
            for p in call.params[:MAX_PARAMS_SHOWN]:
                lines.append(f"- `{p.name}`: `{p.type}` ({_count(p):,})")
            if len(call.params) > MAX_PARAMS_SHOWN:
                lines.append(f"- ... and {len(call.params) - MAX_PARAMS_SHOWN} more")
            each = " each" if len(group) > 1 else ""
            lines.append(f"- {sum(_count(p) for p in call.params):,} parameters{each}")
    entry = catalogue_entry(func, analysis.blocks)
    if entry:
        lines += ["", "---", entry]
    return "\n".join(lines)


def _count(param: Node) -> int:
    return math.prod(int(d) for d in param.type.shape)


def _groups(calls: list[CallRecord]) -> list[list[CallRecord]]:
    """The calls grouped by their types (the parameters' names apart), each lowering of the same call
    (inference, training) once."""
    groups: dict[tuple, dict[tuple, CallRecord]] = {}
    for call in calls:
        shapes = (str(getattr(call.first, "type", "")), str(getattr(call.result, "type", call.result)),
                  tuple(str(p.type) for p in call.params))
        groups.setdefault(shapes, {}).setdefault(tuple(p.name for p in call.params), call)
    return [list(group.values()) for group in groups.values()]


def catalogue_entry(name: str, blocks: dict[str, ast.Block] | None = None) -> str:
    """The reference of a built-in, optimizer, initializer or block, as Markdown; empty if `name` is none."""
    builtin = load_all().get(name)
    if builtin is not None:
        return f"```\n{builtin.usage()}\n```\n{builtin.category}: {builtin.doc}"
    if name in OPTIMIZERS:
        settings = ", ".join(f"{k} = {_literal(v)}" for k, v in OPTIMIZERS[name][0].items())
        return f"```\n{name}({settings})\n```\noptimizer"
    if name in CALLBACKS:
        return f"```\ncallback {callback_usage(name)}\n```\n{CALLBACK_DOCS[name]}"
    if name in INITIALIZERS:
        args, _, doc = INITIALIZERS[name]
        call = name + (f"({', '.join(f'{k} = {v}' for k, v in args.items())})" if args else "")
        return f"```\n{call}\n```\ninitializer: {doc}"
    block = (blocks or {}).get(name)
    if block is not None:
        params = ", ".join(p.name if p.default is None else
                           f"{p.name} = {p.span.source.text[p.default.span.start:p.default.span.end]}"
                           for p in block.params)
        return f"```\nblock {name}({params})\n```\ndefined in `{Path(block.span.source.path).name}`"
    return ""


def _literal(value) -> str:
    return "true" if value is True else "false" if value is False else str(value)


# ---- the analysis ------------------------------------------------------------------------------------
def analyze(path: str, text: str) -> Analysis:
    """Parse, compile and record `text` as the file at `path` (imports are read from disk)."""
    from dslc.compiler import compile_file
    from dslc.frontend.modules import load_module
    from dslc.objectives import objectives

    source = SourceFile.from_text(path, text)
    analysis = Analysis(source)
    try:
        analysis.toks = tokens(source)
        analysis.module, analysis.blocks = load_module(path, text)
    except DslcError as e:
        analysis.diagnostics = list(e.diagnostics)
        return analysis
    except OSError as e:
        analysis.diagnostics = [Diagnostic(f"cannot read an imported file: {e.strerror or e}", None)]
        return analysis
    if not analysis.module.models:  # a file of blocks: nothing to compile on its own
        return analysis
    try:
        program = compile_file(path, text=text)
        analysis.diagnostics = list(program.warnings)
    except DslcError as e:
        analysis.diagnostics = list(e.diagnostics)
    except Exception as e:  # noqa: BLE001 - a bug in dslc: said in the editor, as `dslc check` says it
        analysis.diagnostics = [Diagnostic(f"internal compiler error: {type(e).__name__}: {e}", None,
                                           hint="this is a bug in dslc; please report it with the model file")]
    model = analysis.module.models[0]
    records = analysis.records = Records(path)
    try:
        runs = [("infer", "")] + [("train", o.name) for o in objectives(model)]
    except DslcError:
        runs = [("infer", "")]
    for mode, objective in runs:
        try:
            RecordingLowering(model, analysis.blocks, mode, objective=objective, records=records).run()
        except Exception:  # noqa: BLE001 - reported by the compile above; what lowered before it is recorded
            pass
    return analysis
