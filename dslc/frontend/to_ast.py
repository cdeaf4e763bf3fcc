"""Lark tree -> `ast` records with spans. Syntax only: names, types and meaning are resolved later.

The few checks that are easier on the tree than in the grammar (dtype spelling, argument order,
string escapes, imports first) are collected as diagnostics instead of stopping at the first one.
"""
from __future__ import annotations

from lark import Token, Transformer_NonRecursive, Tree, v_args

from dslc.diagnostics import Diagnostic, DslcError, suggest
from dslc.frontend import ast
from dslc.source import SourceFile, Span

DTYPES = ("f32", "f64", "i32", "i64", "bool")
_DTYPE_ALIASES = {
    "float": "f32", "float32": "f32", "fp32": "f32", "single": "f32",
    "double": "f64", "float64": "f64", "fp64": "f64",
    "int": "i32", "int32": "i32",
    "long": "i64", "int64": "i64",
    "boolean": "bool",
}
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}


def build(tree: Tree, source: SourceFile) -> ast.Module:
    """The `ast.Module` for a parse tree of `source`; raises `DslcError` with every problem found."""
    builder = _ToAst(source)
    module = builder.transform(tree)
    if builder.diagnostics:
        raise DslcError(builder.diagnostics)
    return module


@v_args(meta=True)
class _ToAst(Transformer_NonRecursive):
    def __init__(self, source: SourceFile):
        super().__init__()
        self.source = source
        self.diagnostics: list[Diagnostic] = []

    # ---- helpers -------------------------------------------------------------------------------
    def _span(self, meta) -> Span:
        return self.source.span(meta.start_pos, meta.end_pos)

    def _tok(self, token: Token) -> Span:
        return self.source.span(token.start_pos, token.end_pos)

    def _error(self, message: str, span: Span, label: str = "", hint: str = "", notes=()) -> None:
        self.diagnostics.append(Diagnostic(message, span, label, hint, tuple(notes)))

    def _text(self, span: Span) -> str:
        return self.source.text[span.start:span.end]

    # ---- top level -----------------------------------------------------------------------------
    def start(self, meta, items):
        imports, blocks, models = [], [], []
        first_definition = None
        for item in items:
            if isinstance(item, ast.Import):
                if first_definition is not None:
                    kind = "model" if isinstance(first_definition, ast.Model) else "block"
                    self._error(
                        "`import` must come before any block or model", item.span,
                        "this import comes too late",
                        hint="move the import to the top of the file",
                        notes=[(f"the first definition, `{kind} {first_definition.name}`, is here",
                                first_definition.name_span)])
                imports.append(item)
            else:
                first_definition = first_definition or item
                (models if isinstance(item, ast.Model) else blocks).append(item)
        return ast.Module(self.source, tuple(imports), tuple(blocks), tuple(models))

    def import_decl(self, meta, children):
        (path,) = children
        return ast.Import(self._string_value(path, in_path=True), self._span(meta))

    def block(self, meta, children):
        name, params, body = children
        return ast.Block(str(name), params or (), body, self._span(meta), self._tok(name))

    def model(self, meta, children):
        name, params, body = children
        return ast.Model(str(name), params or (), body, self._span(meta), self._tok(name))

    def params(self, meta, children):
        return tuple(children)

    def param(self, meta, children):
        name, default = children
        return ast.Param(str(name), default, self._span(meta))

    def body(self, meta, children):
        return tuple(children)

    # ---- statements ----------------------------------------------------------------------------
    def input_decl(self, meta, children):
        return self._decl("input", meta, children)

    def target_decl(self, meta, children):
        return self._decl("target", meta, children)

    def _decl(self, kind, meta, children):
        name, type_ = children
        return ast.InputDecl(kind, str(name), type_, self._span(meta), self._tok(name))

    def tensor_type(self, meta, children):
        dtype, *dims = children
        if dtype not in DTYPES:
            known = ", ".join(f"`{d}`" for d in DTYPES)
            close = _DTYPE_ALIASES.get(str(dtype).lower())
            did_you_mean = f"did you mean `{close}`?" if close else suggest(str(dtype), DTYPES)
            self._error(f"unknown dtype `{dtype}`", self._tok(dtype), "not a dtype",
                        hint=f"dtypes are {known}" + (f"; {did_you_mean}" if did_you_mean else ""))
        return ast.TensorTypeExpr(str(dtype), tuple(dims), self._span(meta))

    def dim(self, meta, children):
        (token,) = children
        value = self._int(token, "dimension") if token.type == "INT" else str(token)
        return ast.Dim(value, self._span(meta))

    def assign(self, meta, children):
        name, value = children
        return ast.Assign(str(name), value, self._span(meta), self._tok(name))

    def output(self, meta, children):
        name, value = children
        return ast.Output(str(name), value, self._span(meta), self._tok(name))

    def return_stmt(self, meta, children):
        return ast.Return(children[0], self._span(meta))

    def loss(self, meta, children):
        return ast.Loss(children[0], self._span(meta))

    def optimizer(self, meta, children):
        return ast.Optimizer(children[0], self._span(meta))

    def metric(self, meta, children):
        name, value = children
        return ast.Metric(None if name is None else str(name), value, self._span(meta))

    def objective(self, meta, children):
        name, body = children
        return ast.Objective(str(name), tuple(body), self._span(meta), self._tok(name))

    def update(self, meta, children):
        return ast.Update(tuple(children), self._span(meta))

    def callback(self, meta, children):
        return ast.Callback(children[0], self._span(meta))

    # ---- expressions ---------------------------------------------------------------------------
    def pipe(self, meta, children):
        value, *stages = children
        return ast.Pipe(value, tuple(stages), self._span(meta))

    def then(self, meta, children):
        """`a then b then c` as `BinOp("then")` nested to the left, like `a + b + c`."""
        value = children[0]
        for right in children[1:]:
            value = ast.BinOp("then", value, right, Span(value.span.source, value.span.start, right.span.end))
        return value

    def repeat(self, meta, children):
        count, *stages = children
        return ast.Repeat(count, tuple(stages), self._span(meta))

    def add(self, meta, children):
        return self._binop("+", meta, children)

    def sub(self, meta, children):
        return self._binop("-", meta, children)

    def mul(self, meta, children):
        return self._binop("*", meta, children)

    def div(self, meta, children):
        return self._binop("/", meta, children)

    def matmul(self, meta, children):
        return self._binop("@", meta, children)

    def _binop(self, op, meta, children):
        left, right = children
        return ast.BinOp(op, left, right, self._span(meta))

    def lt(self, meta, children):
        return self._compare("<", meta, children)

    def le(self, meta, children):
        return self._compare("<=", meta, children)

    def gt(self, meta, children):
        return self._compare(">", meta, children)

    def ge(self, meta, children):
        return self._compare(">=", meta, children)

    def eq(self, meta, children):
        return self._compare("==", meta, children)

    def ne(self, meta, children):
        return self._compare("!=", meta, children)

    def _compare(self, op, meta, children):
        left, right = children
        return ast.Compare(op, left, right, self._span(meta))

    def index(self, meta, children):
        value, *subscripts = children
        return ast.Index(value, tuple(subscripts), self._span(meta))

    def slice(self, meta, children):
        start, stop, step = children
        return ast.Slice(start, stop, step, self._span(meta))

    def ellipsis(self, meta, children):
        return ast.EllipsisIndex(self._span(meta))

    def neg(self, meta, children):
        return ast.Unary("-", children[0], self._span(meta))

    def int(self, meta, children):
        return ast.Number(self._int(children[0], "integer"), self._span(meta))

    def float(self, meta, children):
        value = float(children[0])
        if value == float("inf"):
            self._error(f"the number `{children[0]}` is too large", self._tok(children[0]),
                        "beyond the range of 64-bit floats",
                        hint="floating-point numbers are 64-bit: at most about 1.8e308")
            value = 0.0
        return ast.Number(value, self._span(meta))

    def string(self, meta, children):
        return ast.String(self._string_value(children[0]), self._span(meta))

    def true(self, meta, children):
        return ast.Bool(True, self._span(meta))

    def false(self, meta, children):
        return ast.Bool(False, self._span(meta))

    def name(self, meta, children):
        return ast.Name(str(children[0]), self._span(meta))

    def tuple(self, meta, children):
        return ast.Tuple(tuple(children), self._span(meta))

    def call(self, meta, children):
        func, *args = children
        positional, keywords = [], []
        for arg in args:
            if isinstance(arg, ast.Keyword):
                if any(k.name == arg.name for k in keywords):
                    self._error(f"keyword argument `{arg.name}` is given twice", arg.span,
                                "repeated here", hint=f"remove one of the `{arg.name} = ...` arguments")
                keywords.append(arg)
                continue
            if keywords:
                first = keywords[0]
                self._error("positional argument after a keyword argument", arg.span,
                            "positional argument",
                            hint=f"move `{self._text(arg.span)}` before `{self._text(first.span)}`: "
                                 "positional arguments come first",
                            notes=[("the keyword arguments start here", first.span)])
            positional.append(arg)
        return ast.Call(str(func), tuple(positional), tuple(keywords), self._span(meta), self._tok(func))

    def keyword(self, meta, children):
        name, value = children
        return ast.Keyword(str(name), value, self._span(meta))

    # ---- literals ------------------------------------------------------------------------------
    def _int(self, token: Token, what: str) -> int:
        value = int(token)
        if value > ast.MAX_INT:
            self._error(f"the {what} `{token}` is too large", self._tok(token), "does not fit in 64 bits",
                        hint=f"integers are 64-bit: at most {ast.MAX_INT}")
            return 0
        return value

    def _string_value(self, token: Token, in_path: bool = False) -> str:
        raw, out, i = token[1:-1], [], 0
        while i < len(raw):
            ch = raw[i]
            if ch != "\\":
                out.append(ch)
                i += 1
                continue
            escaped = raw[i + 1]
            if escaped in _ESCAPES:
                out.append(_ESCAPES[escaped])
            else:
                start = token.start_pos + 1 + i
                self._error(f"unknown escape `\\{escaped}` in string", self.source.span(start, start + 2),
                            "unknown escape",
                            hint="separate folders with `/`, as in `\"layers/blocks.dl\"`" if in_path
                            else 'the escapes are `\\"`, `\\\\`, `\\n` and `\\t`')
            i += 2
        return "".join(out)
