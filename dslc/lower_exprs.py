"""Expressions of `.dl` code (a mixin of `dslc.lower.Lowering`): names, numbers and compile-time
arithmetic, tuples, tensor operators, indexing and pipelines; calls are `lower_calls`. A name whose
definition failed holds `POISON`, and using it raises `Poisoned`, an error already reported."""
from __future__ import annotations

import math
import operator
from contextlib import contextmanager

from dslc.diagnostics import DslcError, error, suggest
from dslc.frontend import ast
from dslc.initializers import INITIALIZERS, Initializer
from dslc.ir.graph import Builder, Node
from dslc.ir.types import INT_DTYPES, SHORT_TO_DTYPE, fits
from dslc.layers.tensor import compare, subscript
from dslc.lower_calls import TUPLE_HINT, Arg, TupleValue, describe
from dslc.source import Span

# Expressions nest at most this deep, blocks included, which keeps `eval`'s recursion (up to 6 Python
# frames a level) well within Python's default limit of 1000 frames.
MAX_NESTING = 100
_ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


class Poisoned(DslcError):
    """Using a name whose definition failed: an error reported already, so this one has no diagnostics."""

    def __init__(self):
        super().__init__(())


class _Poison:
    def __repr__(self) -> str:
        return "POISON"


POISON = _Poison()  # the value of a name whose definition failed (`Lowering.statement`)


class ExpressionLowering:
    def eval(self, expr, env):
        if isinstance(expr, ast.Number):
            return expr.value
        if isinstance(expr, (ast.String, ast.Bool)):
            return expr.value
        if isinstance(expr, ast.Name):
            return self.lookup(expr, env)
        with self.nested(expr.span):
            return self.eval_compound(expr, env)

    @contextmanager
    def nested(self, span: Span):
        """One level deeper in `eval` (or in `repeat`s within `repeat`s)."""
        if self.nesting >= MAX_NESTING:
            raise error("expression nested too deeply", span.source.span(span.start, span.start + 1),
                        f"more than {MAX_NESTING} levels deep here", hint="split it into several assignments")
        self.nesting += 1
        try:
            yield
        finally:
            self.nesting -= 1

    def eval_compound(self, expr, env):
        if isinstance(expr, ast.Unary):
            value = self.eval(expr.operand, env)
            if isinstance(value, Node):
                return self.with_span(expr.span).neg(value)
            return -self.number(value, expr.operand.span)
        if isinstance(expr, ast.BinOp) and expr.op == "then":
            raise error("`then` joins learning-rate schedules, in an optimizer's `schedule`", expr.span,
                        hint="`optimizer adam(lr = 0.001, schedule = linear_warmup(100) then cosine(1000))`")
        if isinstance(expr, ast.BinOp):  # `a + b + c ...` nests to the left: evaluated in a loop, at any length
            chain = [expr]
            while isinstance(chain[-1].left, ast.BinOp):
                chain.append(chain[-1].left)
            value = self.eval(chain[-1].left, env)
            for binop in reversed(chain):
                self.budget.check(binop.right.span, "this term")
                value = self.binop(binop, value, self.eval(binop.right, env))
            return value
        if isinstance(expr, ast.Call):
            args = [Arg(a.span, expr=a) for a in expr.args]
            return self.call(expr.func, expr.func_span, expr.span, args, expr.kwargs, env)
        if isinstance(expr, ast.Pipe):
            value = self.eval(expr.value, env)
            return self.pipe(value, expr.value.span, expr.stages, env)
        if isinstance(expr, ast.Compare):  # `a < b`: see dslc/layers/tensor.py
            return compare(self, expr, env)
        if isinstance(expr, ast.Index):  # `x[:, -1]`: see dslc/layers/tensor.py
            return subscript(self, expr, env)
        if isinstance(expr, ast.Tuple):
            return self.tuple_value(expr, env)
        raise TypeError(f"unknown expression {expr!r}")

    def lookup(self, name: ast.Name, env):
        if name.id in env:
            if env[name.id] is POISON:
                raise Poisoned()
            return env[name.id]
        if name.id in INITIALIZERS:
            return Initializer(name.id)
        callable_names = set(self.builtins) | set(self.blocks)
        if name.id in callable_names:
            raise error(f"`{name.id}` is a function; call it or use it in a pipeline", name.span,
                        hint=f"`x |> {name.id}` or `{name.id}(x)`")
        if name.id in SHORT_TO_DTYPE:
            raise error(f"unknown name `{name.id}`", name.span,
                        hint=f"dtype names are strings: `cast(x, \"{name.id}\")`")
        raise error(f"unknown name `{name.id}`", name.span, hint=suggest(name.id, list(env) + list(INITIALIZERS)))

    def with_span(self, span) -> Builder:
        return Builder(span)

    def tuple_value(self, expr: ast.Tuple, env) -> TupleValue:
        """`(a, b, ...)`: a tuple of values known when the model is built (sizes, one per spatial axis)."""
        items = []
        for item in expr.items:
            value = self.eval(item, env)
            if isinstance(value, Node):
                raise error(f"a tuple holds numbers known when the model is built, not tensors: got `{value.type}`",
                            item.span, "a tensor", hint=TUPLE_HINT)
            items.append(value)
        value = TupleValue(items)
        value.spans = tuple(item.span for item in expr.items)
        return value

    def number(self, value, span):
        if isinstance(value, tuple):
            raise error(f"{describe(value)} cannot be used as a number or a tensor", span, hint=TUPLE_HINT)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise error(f"expected a number or a tensor, got {describe(value)}", span)
        return value

    def binop(self, expr: ast.BinOp, left, right):
        b = self.with_span(expr.span)
        if not isinstance(left, Node) and not isinstance(right, Node):
            a, c = self.number(left, expr.left.span), self.number(right, expr.right.span)
            if expr.op == "@":
                raise error("`@` multiplies matrices, not numbers", expr.span)
            if expr.op == "/" and c == 0:
                raise error("division by zero", expr.right.span)
            result = _ARITHMETIC[expr.op](a, c)
            if abs(result) > ast.MAX_INT if isinstance(result, int) else not math.isfinite(result):
                kind = "a 64-bit integer" if isinstance(result, int) else "a float64"
                raise error(f"the result of this arithmetic is too large for {kind}", expr.span)
            return result
        if expr.op == "@":
            if not (isinstance(left, Node) and isinstance(right, Node)):
                raise error("`@` multiplies two tensors", expr.span)
            return b.matmul(left, right)
        if expr.op == "/":
            self.check_true_division(expr, left, right)
        left = self.as_tensor(left, right, expr.left.span)
        right = self.as_tensor(right, left, expr.right.span)
        return b.emit({"+": "add", "-": "sub", "*": "mul", "/": "div"}[expr.op], left, right)

    def check_true_division(self, expr: ast.BinOp, left, right) -> None:
        """`/` means true division, as between numbers (`1 / 2` is 0.5) and in NumPy and PyTorch; ONNX `Div`
        of integer tensors would round toward zero, so an integer tensor must be cast first."""
        ints = [isinstance(v, Node) and v.type.dtype in INT_DTYPES for v in (left, right)]
        if not any(ints):
            return
        text = expr.span.source.text
        gap = expr.left.span.end + text[expr.left.span.end:expr.right.span.start].find("/")
        sides = []
        for side, is_int in zip((expr.left, expr.right), ints):
            shown = text[side.span.start:side.span.end]
            shown = shown if len(shown) <= 24 and "\n" not in shown else "x"
            if is_int:
                shown = f'cast({shown}, "f32")'
            elif isinstance(side, (ast.BinOp, ast.Pipe, ast.Compare)):
                shown = f"({shown})"
            sides.append(shown)
        value = left if ints[0] else right
        raise error(f"cannot divide the integer tensor `{value.type}` with `/`",
                    Span(expr.span.source, gap, gap + 1), "integer division would round toward zero",
                    hint=f"`/` is true division: convert to floating point first, as in `{sides[0]} / {sides[1]}`")

    def as_tensor(self, value, like: Node, span) -> Node:
        if isinstance(value, Node):
            return value
        number = self.number(value, span)
        dtype = like.type.dtype if like.type.dtype != "bool" else self.float_dtype
        if not fits(number, dtype):
            kind, why = ("integer tensor", "" if not float(number).is_integer() else ": it is out of range") \
                if dtype in INT_DTYPES else ("tensor", ": it is out of range")
            raise error(f"{number} cannot be combined with the {kind} `{like.type}`{why}", span,
                        hint="cast the tensor first with `cast`")
        return Builder(span).const(number, dtype)

    def pipe(self, value, span, stages, env):
        for stage in stages:
            if isinstance(stage, ast.Repeat):
                count = self.eval(stage.count, env)
                if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                    raise error(f"`repeat` needs a non-negative whole number of times, got {describe(count)}",
                                stage.count.span)
                self.budget.repeat(count, stage.count.span)
                with self.nested(stage.span):
                    for _ in range(count):
                        self.budget.repetition(stage.span)
                        value = self.pipe(value, span, stage.stages, env)
                span = stage.span
                continue
            piped = Arg(span, value=value, evaluated=True)
            if isinstance(stage, ast.Name):
                value = self.call(stage.id, stage.span, stage.span, [piped], (), env)
            else:
                args = [piped] + [Arg(a.span, expr=a) for a in stage.args]
                value = self.call(stage.func, stage.func_span, stage.span, args, stage.kwargs, env)
            span = stage.span
        return value
