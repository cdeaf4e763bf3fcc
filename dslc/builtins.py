"""The functions a `.dl` file can call: layers, activations, losses, penalties, metrics.

Each is a Python function `fn(ctx, ...)` registered with `@builtin`; its annotations say what each
argument must be (`Tensor`, `int`, `float`, `bool`, `str`, `Init`, `Selector`), and the lowering
checks and converts the arguments before the call, pointing at the argument when one is wrong.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

BUILTINS: dict[str, "Builtin"] = {}
CATEGORIES = ("layer", "activation", "function", "loss", "penalty", "metric")


@dataclass(frozen=True)
class Builtin:
    name: str
    fn: Callable
    category: str
    doc: str

    @property
    def signature(self) -> inspect.Signature:
        sig = inspect.signature(self.fn)
        return sig.replace(parameters=list(sig.parameters.values())[1:])  # drop ctx

    def usage(self) -> str:
        parts = []
        for p in self.signature.parameters.values():
            if p.kind is p.VAR_POSITIONAL:
                parts.append(f"{p.name}...")
            elif p.default is p.empty:
                parts.append(p.name)
            else:
                default = p.default
                if default is None:
                    shown = '"..."' if p.annotation == "str" else "(optional)"
                elif isinstance(default, bool):
                    shown = "true" if default else "false"
                elif isinstance(default, str) and p.annotation == "str":
                    shown = f'"{default}"'
                else:
                    shown = default
                parts.append(f"{p.name} = {shown}")
        return f"{self.name}({', '.join(parts)})"


def builtin(category: str, name: str | None = None):
    def register(fn):
        key = name or fn.__name__.rstrip("_")
        if key in BUILTINS:
            raise ValueError(f"builtin `{key}` registered twice")
        BUILTINS[key] = Builtin(key, fn, category, inspect.cleandoc(fn.__doc__ or ""))
        return fn

    return register


def load_all() -> dict[str, Builtin]:
    from dslc import auc, layers, losses, metrics  # noqa: F401  (registers them)

    return BUILTINS
