"""The training statements of a model, lowered (a mixin of `dslc.lower.Lowering`): `loss`, `metric`,
`optimizer` (its settings and learning-rate schedule checked) and `callback`."""
from __future__ import annotations

import numpy as np

from dslc import declared_callbacks
from dslc.diagnostics import Diagnostic, DslcError, error, suggest
from dslc.frontend import ast
from dslc.ir.graph import Node
from dslc.ir.types import fits, numpy_dtype
from dslc.lower_calls import describe
from dslc.optim import NOT_OFFERED, OPTIMIZERS, OptimizerSpec
from dslc.passes.lower_optimizer import LR
from dslc.schedules import parse_schedule

SEED = "seed"
# the keys of every epoch's history entry besides the loss and metrics (`dslc.runtime.train.fit`)
EPOCH_KEYS = ("epoch", "steps", "time", "samples_per_s")
HYPER_INPUTS = (LR, SEED)  # inputs of the training graph besides the data; parameters and state have dotted names
HYPER_WHAT = {LR: "learning-rate", SEED: "random-seed"}


class TrainingLowering:
    """`Lowering`'s training statements; they write `self.result` and evaluate with `self.eval`."""

    def training_statement(self, stmt, env):
        if isinstance(stmt, ast.Optimizer):
            if self.result.optimizer is not None:
                raise error("a model has one `optimizer`", stmt.span)
            self.result.optimizer = self.optimizer(stmt.call, env)
            return
        if isinstance(stmt, ast.Update):
            return  # applied as parameters are created
        if isinstance(stmt, ast.Loss):
            if self.result.loss is not None:
                raise error("a model has one `loss`", stmt.span, hint="add the terms: `loss a + b`")
            if isinstance(stmt.value, ast.String):  # Keras' `loss="mse"`
                raise error("the loss is an expression, not a name", stmt.value.span,
                            hint=f"call a loss function on the model's values, as in "
                                 f"`loss {self.function_named(stmt.value.value, 'mse')}(pred, target)`")
            self.result.loss = self.scalar(self.eval(stmt.value, env), stmt.value.span, "the loss")
            self.result.loss_span = stmt.span
        else:
            name = stmt.name or (stmt.value.func if isinstance(stmt.value, ast.Call) else None)
            if name is None and isinstance(stmt.value, ast.String):  # Keras' `metrics=["accuracy"]`
                raise error("metrics are expressions, not names", stmt.value.span,
                            hint=f"call a function on the model's values, as in "
                                 f"`metric {self.function_named(stmt.value.value, 'accuracy')}(logits, labels)`")
            if name is None:
                raise error("name this metric: `metric name = ...`", stmt.span)
            if name == "loss" or name in dict(self.result.metrics):
                raise error(f"metric `{name}` is defined twice", stmt.span, hint="name it: `metric other = ...`")
            if name in EPOCH_KEYS or name.startswith("val_"):  # the epoch's value would overwrite the metric's
                raise error(f"metric `{name}` has the name of a value training logs itself", stmt.span,
                            hint="name it otherwise: every epoch logs `epoch`, `steps`, `time` and `samples_per_s`, "
                                 "and with validation data each metric `m` again as `val_m`")
            clash = next((n for n in self.result.inputs if n.name == name), None)
            if clash is not None or name in HYPER_INPUTS:
                what = f"the training graph's {HYPER_WHAT[name]} input" if clash is None \
                    else "a target" if clash.role == "target" else "an input"
                raise error(f"metric `{name}` has the same name as {what}", stmt.span,
                            hint="name it: `metric other = ...`")
            value = self.eval(stmt.value, env)
            aggregate = self.result.metric_aggregates.get(value.id) if isinstance(value, Node) else None
            self.result.metrics.append((name, value if aggregate else self.scalar(value, stmt.value.span, "a metric")))
            self.result.metric_reduce[name] = aggregate or {"reduce": "mean"}

    def callback(self, stmt: ast.Callback, env) -> None:
        settings = declared_callbacks.declare(stmt, lambda expr: self.eval(expr, env))
        first = self.result.callbacks.get(stmt.call.func)
        if first is not None:
            raise DslcError(Diagnostic(f"a model declares `callback {stmt.call.func}` once", stmt.span,
                                       hint="give all its settings in one call",
                                       notes=(("first declared here", first[1].span),)))
        self.result.callbacks[stmt.call.func] = (settings, stmt)

    def function_named(self, text: str, default: str) -> str:
        """The built-in function `text` names (also in another case), or `default`."""
        return next((name for name in (text, text.lower()) if name in self.builtins), default)

    def scalar(self, value, span, what) -> Node:
        if not isinstance(value, Node) or value.type.rank != 0 or not value.type.is_float:
            got = f"`{value.type}`" if isinstance(value, Node) else describe(value)
            hint = "reduce it with `mean(...)` or `sum(...)`" if isinstance(value, Node) else ""
            counted = self.count_metric_in(value) if isinstance(value, Node) else None
            if counted is not None:  # a mean of counts is no metric: say what the counts are
                hint = (f"`{counted}` is computed from counts summed over an epoch, after the graph has run: "
                        + ("train with a loss such as `cross_entropy` and report it with `metric`" if what == "the loss"
                           else f"give it a `metric` of its own (`metric name = {counted}(...)`), not inside an expression"))
            raise error(f"{what} must be a floating-point scalar, got {got}", span, hint=hint)
        return value

    def count_metric_in(self, value: Node) -> str | None:
        """The count metric (`f1`, `auc`, `confusion_matrix`) whose counts `value` is computed from, if any."""
        aggregates, stack, seen = self.result.metric_aggregates, [value], set()
        while stack:
            node = stack.pop()
            if node.id in aggregates:
                return aggregates[node.id].get("value") or aggregates[node.id]["counts"]
            if node.id not in seen:
                seen.add(node.id)
                stack.extend(node.inputs)
        return None

    def optimizer(self, call: ast.Call, env) -> OptimizerSpec:
        if call.func not in OPTIMIZERS:
            raise error(f"unknown optimizer `{call.func}`", call.func_span,
                        hint=suggest(call.func, OPTIMIZERS) or f"optimizers: {', '.join(OPTIMIZERS)}")
        defaults = OPTIMIZERS[call.func][0]
        settings = {}
        if len(call.args) > 1:
            raise error(f"`{call.func}` takes the learning rate as its only positional argument", call.args[1].span,
                        hint="name the others, e.g. `momentum = 0.9`")
        given = [("lr", a.span, a) for a in call.args] + [(k.name, k.span, k.value) for k in call.kwargs]
        schedule = next((k for k in call.kwargs if k.name == "schedule"), None)
        given = [g for g in given if g[0] != "schedule"]
        for key, span, expr in given:
            if key not in defaults:
                raise error(f"`{call.func}` has no setting `{key}`", span,
                            hint=NOT_OFFERED.get(key) or suggest(key, [*defaults, "schedule"])
                            or f"its settings: {', '.join(defaults)}, schedule")
            value = self.eval(expr, env)
            if isinstance(defaults[key], bool):
                if not isinstance(value, bool):
                    raise error(f"`{key}` must be `true` or `false`", expr.span)
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise error(f"`{key}` must be a non-negative number, got {describe(value)}", expr.span)
            elif not fits(value, self.float_dtype):
                raise error(f"`{key} = {value:g}` is beyond the range of the graph's `{self.float_dtype}`", expr.span,
                            hint=f"it holds magnitudes up to {float(np.finfo(numpy_dtype(self.float_dtype)).max):.3g}")
            elif key == "eps" and value == 0:
                raise error("`eps` must be positive, got 0", expr.span,
                            hint=f"it keeps the update from dividing by zero; `{call.func}`'s default is {defaults[key]:g}")
            elif key in ("beta1", "beta2", "rho", "momentum") and value >= 1:
                raise error(f"`{key}` must be below 1, got {value}", expr.span,
                            hint="the fraction of the running average kept at each step, in [0, 1); "
                                 f"`{call.func}`'s default is {defaults[key]:g}")
            settings[key] = value
        parts = parse_schedule(schedule.value, lambda e: self.eval(e, env)) if schedule else ()
        spec = OptimizerSpec(call.func, settings, call.span, parts)
        if parts and "decay" in settings:
            raise error("`decay` and `schedule` both change the learning rate; keep one", call.span,
                        hint="Keras' `decay = d` is the rate lr / (1 + d·step)")
        if "clip_norm" in settings and "clip_value" in settings:
            raise error("`clip_norm` and `clip_value` both clip the gradients; keep one", call.span)
        if call.func == "sgd" and spec.setting("nesterov") and not spec.setting("momentum"):
            raise error("Nesterov momentum needs `momentum` > 0", call.span, hint="add `momentum = 0.9`")
        return spec
