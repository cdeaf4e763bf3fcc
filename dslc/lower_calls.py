"""Calls in `.dl` expressions: matching arguments to parameters, checking and converting them, and
calling builtins, blocks and initializers (a mixin of `dslc.lower.Lowering`; builtins get the
`dslc.lower_context.Context`)."""
from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass

from dslc.builtins import Builtin
from dslc.diagnostics import Diagnostic, DslcError, error, suggest
from dslc.frontend import ast
from dslc.habits import foreign_hint, keyword_hint, positional_hint
from dslc.initializers import INITIALIZERS, Initializer, argument_problem
from dslc.ir.graph import Builder, Node
from dslc.losses import ValueName
from dslc.source import Span


@dataclass
class Arg:
    """A call argument: an AST expression to evaluate, or a value already computed (the piped one)."""

    span: Span
    expr: object = None
    value: object = None
    evaluated: bool = False


def number_function(func: str, values: list, span: Span):
    """`sqrt(40)`, `pow(2, 0.5)`: the number, or an error where it has no finite real value."""
    try:
        result = NUMBER_FUNCTIONS[func](*values)
    except (ValueError, OverflowError, ZeroDivisionError, TypeError):
        result = None
    if isinstance(result, complex) or result is None or (isinstance(result, float) and not math.isfinite(result)):
        raise error(f"`{func}({', '.join(map(str, values))})` has no finite real value", span)
    if isinstance(result, int) and abs(result) > ast.MAX_INT:
        raise error("the result of this arithmetic is too large for a 64-bit integer", span)
    return result


NUMBER_FUNCTIONS = {"sqrt": math.sqrt, "exp": math.exp, "log": math.log, "abs": abs, "pow": lambda x, p: x ** p}


class CallLowering:
    def call(self, func: str, func_span: Span, span: Span, args: list[Arg], kwargs, env):
        self.budget.check(span, f"this call of `{func}`")
        if func in self.blocks:
            return self.call_block(self.blocks[func], span, args, kwargs, env)
        if func in NUMBER_FUNCTIONS and func in self.builtins and not kwargs:
            # evaluated once here: a tensor argument goes on to the builtin as a computed value
            args = [a if a.evaluated else Arg(a.span, value=self.eval(a.expr, env), evaluated=True) for a in args]
            if args and all(isinstance(a.value, (int, float)) and not isinstance(a.value, bool) for a in args):
                return number_function(func, [a.value for a in args], span)
        if func in INITIALIZERS:
            return self.initializer(func, span, args, kwargs, env)
        fn = self.builtins.get(func)
        if fn is None:
            names = list(self.builtins) + list(self.blocks) + list(INITIALIZERS)
            if func in env:
                raise error(f"`{func}` is a value, not a function", func_span)
            raise error(f"unknown layer or function `{func}`", func_span,
                        hint=foreign_hint(func, names) or suggest(func, names))
        return self.call_builtin(fn, span, args, kwargs, env)

    def bind(self, what: str, params: list[inspect.Parameter], span, args: list[Arg], kwargs, usage: str):
        """Match arguments to parameters; returns {param name: Arg or [Arg] for *varargs}."""
        bound: dict[str, object] = {}
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        varargs = next((p for p in params if p.kind is p.VAR_POSITIONAL), None)
        for i, arg in enumerate(args):
            if i < len(positional):
                bound[positional[i].name] = arg
            elif varargs is not None:
                bound.setdefault(varargs.name, []).append(arg)
            else:
                raise error(f"`{what}` takes {len(positional)} positional argument{'s' * (len(positional) != 1)}, "
                            f"got {len(args)}", arg.span, label="unexpected argument",
                            hint=positional_hint(what, params, args) or f"call it as `{usage}`")
        names = {p.name for p in params if p.kind is not p.VAR_POSITIONAL}
        for kw in kwargs:
            if kw.name not in names:
                raise error(f"`{what}` has no argument `{kw.name}`", kw.span,
                            hint=keyword_hint(what, kw, args, kwargs) or suggest(kw.name, names)
                            or f"call it as `{usage}`")
            if kw.name in bound:
                raise error(f"argument `{kw.name}` given twice", kw.span)
            bound[kw.name] = Arg(kw.span, expr=kw.value)
        for p in params:
            if p.name not in bound and p.default is inspect.Parameter.empty and p.kind is not p.VAR_POSITIONAL:
                raise error(f"`{what}` is missing its argument `{p.name}`", span, hint=f"call it as `{usage}`")
        return bound

    def call_builtin(self, fn: Builtin, span: Span, args, kwargs, env):
        params = list(fn.signature.parameters.values())
        bound = self.bind(fn.name, params, span, args, kwargs, fn.usage())
        spans: dict = {i: arg.span for i, arg in enumerate(args)}
        leading, varargs, keyword = [], [], {}
        for p in params:
            if p.name not in bound:
                if p.kind is not p.VAR_POSITIONAL:
                    default = Initializer(p.default) if p.annotation == "Init" else p.default
                    value = self.convert(fn.name, p, default, span)
                    if p.kind is p.POSITIONAL_OR_KEYWORD:
                        leading.append(value)
                    else:
                        keyword[p.name] = value
                continue
            items = bound[p.name] if p.kind is p.VAR_POSITIONAL else [bound[p.name]]
            if p.annotation == "Selector" and items[0].evaluated:  # `x |> l2`
                raise error(f"`{fn.name}` selects parameters; it cannot be a stage of `|>`", span,
                            f"this stage receives {describe(items[0].value)}",
                            hint=f"call it on its own, as in `loss mse(p, y) + 0.01 * {fn.name}(weights)`")
            values = [self.convert(fn.name, p, self.arg_value(arg, p.annotation, env), arg.span) for arg in items]
            spans[p.name] = items[0].span
            if p.kind is p.VAR_POSITIONAL:
                varargs.extend(values)
            elif p.kind is p.KEYWORD_ONLY:
                keyword[p.name] = values[0]
            else:
                leading.append(values[0])
        self.ctx._arg_spans, self.ctx._call_span, self.ctx._made = spans, span, {}
        self.ctx.b = Builder(span)
        result = fn.fn(self.ctx, *leading, *varargs, **keyword)
        values = dict(zip([p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD], leading)) | keyword
        output = result[0] if isinstance(result, (tuple, list)) else result  # a recurrent layer's sequence
        for layer, made in self.ctx._made.items():
            self.check_shared(layer, made, values, spans, span)
            if isinstance(output, Node):  # for `dslc summary`: the first call of each layer
                self.result.layers.setdefault(layer, (self.layer_kinds[layer], output.type))
        if not self.ctx._made and fn.category in ("layer", "activation") and isinstance(output, Node):
            self.note_plain_layer(fn.name, span, output)
        return result

    def check_shared(self, layer: str, made: dict, values: dict, spans: dict, span: Span) -> None:
        """A layer called again by `name` is the layer its first call made: the arguments that make its
        parameters (their initializers, a bias or not, ...) must not differ."""
        settings = {k: v for k, v in values.items() if not isinstance(v, Node) and k != "name"}
        first = self.layer_calls.setdefault(layer, (made, settings, span))
        if first[0] == made:
            return
        same_params = set(first[0]) == set(made)
        changed = [k for k in settings if k in first[1] and str(first[1][k]) != str(settings[k])]
        changed.sort(key=lambda k: (isinstance(settings[k], Initializer) != same_params, k not in spans))
        if changed:
            key = changed[0]
            shown = lambda v: ("true" if v else "false") if isinstance(v, bool) else str(v)
            message = (f"`{layer}` is a shared layer, made by its first call with `{key} = {shown(first[1][key])}`; "
                       f"this call has `{key} = {shown(settings[key])}`")
            where = spans.get(key, span)
        else:
            message = f"`{layer}` is a shared layer, but this call makes other parameters than its first call"
            where = span
        raise DslcError(Diagnostic(message, where, hint="a layer called again by `name` keeps the parameters of its "
                                   "first call: give both calls the same arguments, or give this layer another name",
                                   notes=(("first called here", first[2]),)))

    def arg_value(self, arg: Arg, annotation: str, env):
        if arg.evaluated:
            return arg.value
        if annotation == "Selector":
            if isinstance(arg.expr, ast.Name) and isinstance(env.get(arg.expr.id), Node):
                return ValueName(arg.expr.id)
            if isinstance(arg.expr, (ast.Name, ast.String)):
                return arg.expr.id if isinstance(arg.expr, ast.Name) else arg.expr.value
            raise error("expected a parameter selection: `weights`, `biases`, `params`, a layer name or a pattern",
                        arg.span)
        return self.eval(arg.expr, env)

    def convert(self, fn: str, p: inspect.Parameter, value, span):
        kind = p.annotation
        hint = TUPLE_HINT if isinstance(value, tuple) else ""
        wrong = lambda what: error(f"`{fn}` expects `{p.name}` to be {what}, got {describe(value)}", span,  # noqa: E731
                                   hint=hint)
        if value is None and p.default is None:
            return None
        if kind in SIZE_KINDS:
            if isinstance(value, tuple):
                return size_tuple(fn, p.name, value, span)
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if kind == "Size" and (isinstance(value, bool) or not isinstance(value, int)):
                raise wrong("a whole number or a tuple of whole numbers, one per spatial axis")
        elif kind == "Tensor":
            if not isinstance(value, Node):
                raise wrong("a tensor")
        elif kind == "int":
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise wrong("a whole number")
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise wrong("a number")
            value = float(value)
        elif kind == "bool":
            if not isinstance(value, bool):
                raise wrong("`true` or `false`")
        elif kind == "str":
            if not isinstance(value, str):
                raise wrong("a string")
        elif kind == "Init":
            if not isinstance(value, Initializer):
                raise wrong(f"an initializer ({', '.join(INITIALIZERS)})")
        elif kind == "Weights":
            return weights_value(fn, p.name, value, span)
        return value

    def initializer(self, func, span, args, kwargs, env) -> Initializer:
        defaults = INITIALIZERS[func][0]
        params = [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=v) for k, v in defaults.items()]
        usage = f"{func}({', '.join(f'{k} = {v}' for k, v in defaults.items())})"
        bound = self.bind(func, params, span, args, kwargs, usage)
        values = {}
        for key, arg in bound.items():
            value = self.arg_value(arg, "float", env)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise error(f"`{func}` expects `{key}` to be a number, got {describe(value)}", arg.span)
            values[key] = float(value)
        problem = argument_problem(func, values, self.float_dtype)
        if problem is not None:
            key, message, hint = problem
            raise error(message, bound[key].span if key in bound else span, hint=hint)
        return Initializer(func, values)

    def call_block(self, block: ast.Block, span, args, kwargs, env):
        scope_name = name_span = None
        if not any(p.name == "name" for p in block.params):  # `name = "..."` names the block's scope
            named = [k for k in kwargs if k.name == "name"]
            if named:
                name_span = named[0].span
                scope_name = self.arg_value(Arg(name_span, expr=named[0].value), "str", env)
                if not isinstance(scope_name, str):
                    raise error("`name` must be a string", named[0].span)
                kwargs = tuple(k for k in kwargs if k.name != "name")
        params = [inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                    default=inspect.Parameter.empty if p.default is None else p.default)
                  for p in block.params]
        usage = f"{block.name}({', '.join(p.name if p.default is None else f'{p.name} = ...' for p in block.params)})"
        bound = self.bind(block.name, params, span, args, kwargs, usage)
        inner = {p.name: self.arg_value(bound[p.name], "", env) for p in block.params if p.name in bound}
        if block.name in self.active_blocks:
            cycle = self.active_blocks[self.active_blocks.index(block.name):] + [block.name]
            through = f" through {' -> '.join(f'`{b}`' for b in cycle[1:-1])}" if len(cycle) > 2 else ""
            raise error(f"block `{block.name}` calls itself{through}", span, "a recursive call",
                        hint="a block is expanded in place, so it cannot call itself; "
                             "to apply layers n times in a row, use `repeat(n) { ... }`")
        self.enter_scope(block.name, scope_name, span, name_span)
        self.active_blocks.append(block.name)
        try:
            for p in block.params:
                if p.name not in inner:
                    inner[p.name] = self.eval(p.default, {})
            return self.block_body(block, inner)
        except DslcError as e:
            raise e.with_note(f"in block `{block.name}`, called here", span) from None
        finally:
            self.active_blocks.pop()
            self.leave_scope()

    def block_body(self, block: ast.Block, env):
        defined: dict[str, Span] = {p.name: p.span for p in block.params}
        result = None
        for stmt in block.body:
            if result is not None:
                raise error("statements after `return` are never run", stmt.span)
            if isinstance(stmt, ast.Assign):
                self.define(env, defined, stmt.name, self.eval(stmt.value, env), stmt.name_span)
                defined[stmt.name] = stmt.name_span
            elif isinstance(stmt, ast.Return):
                result = self.eval(stmt.value, env)
            else:
                keyword = type(stmt).__name__.lower()
                keyword = {"inputdecl": stmt.kind if isinstance(stmt, ast.InputDecl) else "input"}.get(keyword, keyword)
                raise error(f"`{keyword}` belongs in a model, not in block `{block.name}`", stmt.span,
                            hint="blocks compute values from their arguments and `return` one")
        if result is None:
            raise error(f"block `{block.name}` has no `return`", block.name_span, hint="end it with `return <value>`")
        return result


# Sizes given per spatial axis: `Size` is a whole number or a tuple of them (`(3, 5)`); `Padding` and
# `Stride` also take words ("same"; "kernel"), which the layer checks.
SIZE_KINDS = ("Size", "Padding", "Stride")
TUPLE_HINT = ("a tuple gives a size per spatial axis to a convolution, pooling or upsampling layer, "
              "as in `conv2d(16, (3, 5))`")


class TupleValue(tuple):
    """The value of a tuple expression `(a, b, ...)`: a compile-time tuple that remembers where each of
    its items was written (`spans`), so that an error about one can point at it."""

    spans: tuple[Span, ...] = ()


def size_tuple(fn: str, arg: str, value: tuple, span: Span) -> tuple[int, ...]:
    """`value`, a tuple given as a size, with each item a whole number (an integral float counts)."""
    spans = getattr(value, "spans", ())
    items = []
    for i, item in enumerate(value):
        if isinstance(item, float) and item.is_integer():
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, int):
            raise error(f"`{fn}` expects `{arg}` to hold whole numbers, got {describe(item)}",
                        spans[i] if i < len(spans) else span, "not a whole number",
                        hint="a size is a whole number, or a tuple of them with one per spatial axis, "
                             "as in `(3, 5)`")
        items.append(item)
    return tuple(items)


def weights_value(fn: str, arg: str, value, span: Span) -> float | TupleValue:
    """`value` given as weights (`pos_weight = 3`, `weight = (1, 5, 1)`): a number or a tuple of numbers,
    as floats (a tuple keeps the spans of its items). A `-D` value may list them: `-D cw=1,5,1`."""
    if isinstance(value, str) and getattr(value, "define", None):
        try:
            value = tuple(float(item) for item in value.strip().strip("()").split(","))
        except ValueError:
            raise error(f"`{fn}` expects `{arg}` to be a number or numbers separated by commas, got {describe(value)}",
                        span, hint=f"give the numbers separated by commas: `-D {_define_name(value)}=1,5,1`") from None
    if isinstance(value, tuple):
        spans = getattr(value, "spans", ())
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                raise error(f"`{fn}` expects `{arg}` to hold numbers, got {describe(item)}",
                            spans[i] if i < len(spans) else span, "not a number",
                            hint="weights are numbers, one per class: `weight = (1, 5, 1)`")
        weights = TupleValue(float(item) for item in value)
        weights.spans = spans
        return weights
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"`{fn}` expects `{arg}` to be a number or a tuple of numbers, got {describe(value)}", span,
                    hint="weights are numbers, one per class: `weight = (1, 5, 1)`")
    return float(value)


def _define_name(value) -> str:
    """The hyper-parameter a `-D` value was given for (`cw` of "`-D cw=1,x`")."""
    found = re.search(r"-D (\w+)=", value.define)
    return found.group(1) if found else "name"


def tuple_text(value: tuple) -> str:
    """`(3, 5)`, `(3,)`: a tuple as it is written in a `.dl` file."""
    items = []
    for item in value:
        if isinstance(item, bool):
            items.append("true" if item else "false")
        elif isinstance(item, str):
            items.append(f'"{item}"')
        elif isinstance(item, tuple):
            items.append(tuple_text(item))
        else:
            items.append(str(item))
    return f"({', '.join(items)}{',' if len(items) == 1 else ''})"


def describe(value) -> str:
    if isinstance(value, tuple):
        return f"the tuple `{tuple_text(value)}`"
    if isinstance(value, Node):
        return f"a tensor `{value.type}`"
    if isinstance(value, bool):
        return f"`{'true' if value else 'false'}`"
    if isinstance(value, (int, float)):
        return f"the number `{value}`"
    if isinstance(value, str):
        origin = getattr(value, "define", None)  # a `-D` value that is no number: `dslc.lower_hyper.DefinedString`
        return f"the string \"{value}\"" + (f" (from {origin})" if origin else "")
    if isinstance(value, Initializer):
        return f"the initializer `{value}`"
    return type(value).__name__
