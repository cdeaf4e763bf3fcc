"""Training objectives of a model: its `objective` blocks (or the top-level `loss`/`optimizer`/`metric`
statements as one unnamed objective), and the parameters each `update`s."""
from __future__ import annotations

from dslc.diagnostics import Diagnostic, DslcError, error
from dslc.frontend import ast
from dslc.losses import matches
from dslc.source import Span


def objectives(model: ast.Model) -> list[ast.Objective]:
    """The model's training objectives: its `objective` blocks, or one unnamed objective made of the
    top-level `loss`/`optimizer`/`metric` statements; none for an inference-only model."""
    named = [s for s in model.body if isinstance(s, ast.Objective)]
    loose = [s for s in model.body if isinstance(s, (ast.Loss, ast.Optimizer, ast.Metric))]
    if named and loose:
        raise DslcError(Diagnostic("a model with `objective` blocks declares its training statements inside them",
                                   loose[0].span, hint="move this statement into an `objective`",
                                   notes=(("the first objective", named[0].name_span),)))
    seen: dict[str, ast.Objective] = {}
    for obj in named:
        if obj.name in seen:
            raise DslcError(Diagnostic(f"objective `{obj.name}` is declared twice", obj.name_span, "declared again here",
                                       notes=(("first declared here", seen[obj.name].name_span),)))
        seen[obj.name] = obj
        for stmt in obj.body:
            if not isinstance(stmt, (ast.Loss, ast.Optimizer, ast.Metric, ast.Update)):
                raise error("an `objective` holds only `loss`, `optimizer`, `metric` and `update`", stmt.span,
                            hint="define values at the model level and use them here")
    if named:
        return named
    return [ast.Objective("", tuple(loose), model.span, model.name_span)] if loose else []


def objective_of(model: ast.Model, name: str) -> ast.Objective | None:
    return next((o for o in objectives(model) if o.name == name), None)


def update_selectors(objective: ast.Objective) -> list[tuple[str, Span]] | None:
    """The `update` selectors of an objective, or None when it updates every parameter."""
    updates = [s for s in objective.body if isinstance(s, ast.Update)]
    if not updates:
        return None
    if len(updates) > 1:
        raise error("an objective has one `update` statement", updates[1].span, hint="list all selectors in one")
    out = []
    for expr in updates[0].selectors:
        if isinstance(expr, ast.Name):
            out.append((expr.id, expr.span))
        elif isinstance(expr, ast.String):
            out.append((expr.value, expr.span))
        else:
            raise error("expected a parameter selection: `weights`, `biases`, `params`, a layer name or a pattern",
                        expr.span)
    return out


def selected(updates: list[tuple[str, Span]], name: str, kind: str) -> bool:
    return any(matches(sel, name, kind) for sel, _ in updates)
