"""A model's hyper-parameters, lowered (a mixin of `dslc.lower.Lowering`): each one's `-D name=value` or its
default, evaluated at compile time, and the `-D` values the model does not declare."""
from __future__ import annotations

import math

from dslc.diagnostics import Diagnostic, error, suggest
from dslc.frontend import ast
from dslc.spelling import define, option


class DefinedString(str):
    """A `-D name=value` value that is neither a number nor `true`/`false`: a string that remembers its
    `-D`, so that an error about it can say where it came from (`describe`)."""

    define: str


def parse_define(name: str, text: str):
    """A `-D name=value` value: a number, `true`/`false`, or else a string. Raises `ValueError(what is
    wrong, hint)` for a number that no graph can hold (infinite, NaN, or an integer beyond 64 bits)."""
    low = text.strip()
    if low in ("true", "false"):
        return low == "true"
    for convert in (int, float):
        try:
            value = convert(low)
        except ValueError:
            continue
        if isinstance(value, int) and abs(value) > ast.MAX_INT:
            raise ValueError("is too large", f"integers are 64-bit: at most {ast.MAX_INT}")
        if not math.isfinite(value):
            raise ValueError("is not a finite number", "a value is a finite number, `true`, `false` or a string")
        return value
    string = DefinedString(low)
    string.define = define(name, text)  # as the caller wrote it, for messages
    return string


class HyperLowering:
    """`Lowering`'s hyper-parameters; they read `self.model` and `self.defines`, report to `self.errors` and
    evaluate defaults with `self.eval`."""

    def hyper_params(self) -> dict:
        env = {}
        known = {p.name for p in self.model.params}
        for name in self.defines:
            if name not in known:
                hint = suggest(name, known) or (f"its hyper-parameters: {', '.join(f'`{k}`' for k in sorted(known))}"
                                                if known else "it has none")
                message = f"model `{self.model.name}` has no hyper-parameter `{name}` ({option('defined')})"
                self.errors.append(Diagnostic(message, self.model.name_span, hint=hint))
        for p in self.model.params:
            with self.statement(env, name=p.name):
                env[p.name] = self.hyper_param(p, env)
        return env

    def hyper_param(self, p: ast.Param, env):
        if p.name in self.defines:
            try:
                return parse_define(p.name, self.defines[p.name])
            except ValueError as e:
                what, hint = e.args
                raise error(f"{define(p.name, self.defines[p.name])} {what}", p.span,
                            label=f"the hyper-parameter {option('defined')}", hint=hint) from None
        if p.default is None:
            raise error(f"hyper-parameter `{p.name}` has no default and no value", p.span,
                        hint=f"give it a default (`{p.name} = ...`) or pass {define(p.name, '...')}")
        return self.eval(p.default, env)
