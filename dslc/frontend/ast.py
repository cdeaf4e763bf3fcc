"""The syntax tree of a `.dl` file: frozen records, each with the span it came from.

The frontend builds these from the Lark tree and checks syntax only; names, types and
meaning are resolved later (`dslc.lower`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from dslc.source import SourceFile, Span

MAX_INT = 2**63 - 1  # integers become 64-bit shapes and attributes in the graphs


# ---- expressions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Number:
    value: int | float  # int when written without `.`/exponent
    span: Span


@dataclass(frozen=True)
class String:
    value: str
    span: Span


@dataclass(frozen=True)
class Bool:
    value: bool
    span: Span


@dataclass(frozen=True)
class Name:
    id: str
    span: Span


@dataclass(frozen=True)
class Unary:
    op: str  # "-"
    operand: "Expr"
    span: Span


@dataclass(frozen=True)
class BinOp:
    op: str  # "+", "-", "*", "/", "@"
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True)
class Keyword:
    name: str
    value: "Expr"
    span: Span  # covers `name = value`


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple["Expr", ...]
    kwargs: tuple[Keyword, ...]
    span: Span  # the whole call
    func_span: Span  # just the callee name


@dataclass(frozen=True)
class Repeat:
    """`repeat(count) { stage |> stage ... }` as a pipeline stage: the stages applied `count` times."""

    count: "Expr"
    stages: tuple["Stage", ...]
    span: Span


Stage = Union[Call, Name, Repeat]


@dataclass(frozen=True)
class Pipe:
    """`value |> stage |> stage`: each stage gets the previous result as its first argument."""

    value: "Expr"
    stages: tuple[Stage, ...]
    span: Span


@dataclass(frozen=True)
class Compare:
    """`left < right`, and `<=`, `>`, `>=`, `==`, `!=`: an element-wise `bool` tensor (comparisons do
    not chain)."""

    op: str  # "<", "<=", ">", ">=", "==", "!="
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True)
class Slice:
    """`start:stop:step` between the brackets of an index; any part may be left out (None)."""

    start: "Expr | None"
    stop: "Expr | None"
    step: "Expr | None"
    span: Span


@dataclass(frozen=True)
class EllipsisIndex:
    """`...` between the brackets of an index: as many `:` as the other subscripts leave axes."""

    span: Span


Subscript = Union["Expr", Slice, EllipsisIndex]


@dataclass(frozen=True)
class Index:
    """`value[subscript, ...]`: an integer picks one position (the axis goes), a slice keeps a range."""

    value: "Expr"
    subscripts: tuple[Subscript, ...]
    span: Span


@dataclass(frozen=True)
class Tuple:
    """`(a, b, ...)`, `(a,)`: sizes given per spatial axis (kernels, strides, ...), a compile-time value."""

    items: tuple["Expr", ...]
    span: Span


Expr = Union[Number, String, Bool, Name, Unary, BinOp, Call, Pipe, Compare, Index, Tuple]


# ---- statements --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dim:
    value: int | str  # a size or a symbol such as `B`
    span: Span


@dataclass(frozen=True)
class TensorTypeExpr:
    dtype: str  # as written: f32, f64, i64, i32, bool
    dims: tuple[Dim, ...]
    span: Span


@dataclass(frozen=True)
class InputDecl:
    kind: str  # "input" or "target"
    name: str
    type: TensorTypeExpr
    span: Span
    name_span: Span


@dataclass(frozen=True)
class Assign:
    name: str
    value: Expr
    span: Span
    name_span: Span


@dataclass(frozen=True)
class Output:
    """`output name = expr`, or `output name` for a value defined before."""

    name: str
    value: Expr | None
    span: Span
    name_span: Span


@dataclass(frozen=True)
class Return:
    value: Expr
    span: Span


@dataclass(frozen=True)
class Loss:
    value: Expr
    span: Span


@dataclass(frozen=True)
class Optimizer:
    call: Call
    span: Span


@dataclass(frozen=True)
class Metric:
    """`metric accuracy(logits, y)` or `metric top = accuracy(logits, y)`."""

    name: str | None
    value: Expr
    span: Span


@dataclass(frozen=True)
class Update:
    """`update "gen*", head`: the parameters an objective's optimizer updates (selectors as for `l2`)."""

    selectors: tuple["Expr", ...]
    span: Span


@dataclass(frozen=True)
class Callback:
    """`callback early_stopping(patience = 5)`: a setting of the training loop declared in the model."""

    call: Call
    span: Span


@dataclass(frozen=True)
class Objective:
    """`objective name { loss ...; optimizer ...; metric ...; update ... }`: one training step graph."""

    name: str
    body: tuple["Stmt", ...]
    span: Span
    name_span: Span


Stmt = Union[InputDecl, Assign, Output, Return, Loss, Optimizer, Metric, Update, Objective, Callback]


# ---- top level ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """A hyper-parameter of a model or block, with an optional default."""

    name: str
    default: Expr | None
    span: Span


@dataclass(frozen=True)
class Block:
    """`block name(x, width, rate = 0.1) { ... return expr }`: a reusable piece of a model."""

    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span
    name_span: Span


@dataclass(frozen=True)
class Model:
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span
    name_span: Span


@dataclass(frozen=True)
class Import:
    path: str
    span: Span


@dataclass(frozen=True)
class Module:
    source: SourceFile
    imports: tuple[Import, ...]
    blocks: tuple[Block, ...]
    models: tuple[Model, ...]
