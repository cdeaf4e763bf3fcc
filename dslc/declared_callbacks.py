"""Callbacks declared in a model: `callback early_stopping(monitor = "val_accuracy", patience = 5)`,
`callback reduce_lr_on_plateau(factor = 0.5, patience = 3)`.

A callback is a setting of the training loop, not of the graphs. Its arguments are checked when the
model compiles (each error at its argument) and the settings given are recorded in the manifest
(`"early_stopping": {"patience": 5, ...}`), where `dslc train` and `program.train` read them; the
command line's `--early-stopping k=v,...` and `early_stopping=` replace them key by key, and
`--early-stopping off` / `early_stopping=False` drop them (`dslc.runtime.callbacks.run_stopping`); the
same for `reduce_lr_on_plateau` (`dslc.runtime.plateau.run_plateau`).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from dslc.diagnostics import error, suggest

if TYPE_CHECKING:  # annotations only: the training loop imports `direction` without the parser (lark)
    from dslc.frontend import ast

# callback -> its settings and their defaults; None: chosen by the run (the monitor: `val_loss` with
# validation data, else `loss`; the mode: from the monitor's name)
CALLBACKS = {
    "early_stopping": {"monitor": None, "patience": 5, "min_delta": 0.0, "mode": None, "restore_best": False},
    "reduce_lr_on_plateau": {"monitor": None, "factor": 0.1, "patience": 10, "min_delta": 1e-4, "cooldown": 0,
                             "min_lr": 0.0, "mode": None},
}
DOCS = {
    "early_stopping": "callback of the training loop: stop when `monitor` (default `val_loss` with validation data, "
                      "else `loss`) has not improved by more than `min_delta` for `patience` epochs in a row; "
                      "`mode` from the name unless given; `restore_best` makes the best epoch's weights the run's "
                      "checkpoint. `--early-stopping` and `early_stopping=` override it key by key.",
    "reduce_lr_on_plateau": "callback of the training loop: multiply the learning rate (the `lr` input, before any "
                            "schedule or decay) by `factor` when `monitor` (default `val_loss` with validation data, "
                            "else `loss`) has not improved by more than `min_delta` for `patience` epochs in a row, "
                            "not below `min_lr`, then count no epoch for `cooldown` epochs. `--reduce-lr-on-plateau` "
                            "and `reduce_lr_on_plateau=` override it key by key.",
}
EXAMPLES = {
    "early_stopping": 'callback early_stopping(monitor = "val_loss", patience = 5, min_delta = 0.0, mode = "min", '
                      'restore_best = true)',
    "reduce_lr_on_plateau": 'callback reduce_lr_on_plateau(monitor = "val_loss", factor = 0.5, patience = 3, '
                            'min_lr = 1e-5)',
}
# settings of Keras's and PyTorch's callbacks that dslc names otherwise or does without -> the error's hint
FOREIGN = {
    "early_stopping": {
        "restore_best_weights": "dslc's `restore_best`",
        "verbose": "dslc always says when early stopping stops a run",
    },
    "reduce_lr_on_plateau": {
        "threshold": "dslc's `min_delta` is an absolute amount: PyTorch's threshold with threshold_mode \"abs\"",
        "threshold_mode": "`min_delta` is absolute (PyTorch's \"abs\"): a relative one is not offered",
        "epsilon": "Keras 2.0's name of `min_delta`",
        "eps": "dslc reduces any rate above `min_lr` (PyTorch skips a reduction smaller than `eps`)",
        "verbose": "dslc always says when it reduces the rate",
    },
}
# how messages call each callback
WHAT = {"early_stopping": "early stopping", "reduce_lr_on_plateau": "`reduce_lr_on_plateau`"}

# `mode`: "auto" (or none) tells from the monitored name, as Keras's "auto": `direction`
MODES = ("min", "max", "auto")
# words in metric names that say which way is better (Keras 2's "auto" mode looked for "acc" alone; Keras 3
# asks the metric, and refuses a name it cannot tell, as dslc does)
_HIGHER = ("acc", "f1", "precision", "recall", "auc", "iou", "r2")
_LOWER = ("loss", "mse", "mae", "error", "entropy", "perplexity", "nll", "rmse")


def usage(name: str) -> str:
    """`early_stopping(monitor = "...", patience = 5, ...)`: a callback with its defaults."""
    shown = lambda v: '"..."' if v is None else "true" if v is True else "false" if v is False else str(v)
    return f"{name}({', '.join(f'{k} = {shown(v)}' for k, v in CALLBACKS[name].items())})"


def direction(name: str) -> str | None:
    """`min` or `max` for a logged name (`val_loss`, `gen.accuracy`), None when its words do not say."""
    base = name.rsplit(".", 1)[-1].lower()
    if any(word in base for word in _LOWER):
        return "min"
    if any(word in base for word in _HIGHER):
        return "max"
    return None


def declare(stmt: ast.Callback, evaluate: Callable) -> dict:
    """The settings a `callback` statement gives (`evaluate(expr)` computes an argument: numbers,
    strings, hyper-parameters); errors point at the argument."""
    call = stmt.call
    if call.func not in CALLBACKS:
        raise error(f"unknown callback `{call.func}`", call.func_span,
                    hint=suggest(call.func, CALLBACKS) or f"callbacks: {', '.join(CALLBACKS)}")
    defaults = CALLBACKS[call.func]
    if call.args:
        raise error(f"`{call.func}` takes its settings by name", call.args[0].span,
                    hint=f"as in `{EXAMPLES[call.func]}`")
    settings: dict = {}
    for kw in call.kwargs:
        if kw.name not in defaults:
            raise error(f"`{call.func}` has no setting `{kw.name}`", kw.span,
                        hint=FOREIGN[call.func].get(kw.name) or suggest(kw.name, defaults)
                        or f"its settings: {', '.join(defaults)}")
        if kw.name in settings:
            raise error(f"argument `{kw.name}` given twice", kw.span)
        settings[kw.name] = _checked(kw.name, evaluate(kw.value), kw.value.span)
    return settings


def _checked(key: str, value, span):
    from dslc.lower_calls import describe  # (the runtime imports `direction` without the lowering)

    got = describe(value)
    if key == "monitor":
        if not isinstance(value, str) or not value:
            raise error(f"`monitor` must name a logged value as a string, got {got}", span,
                        hint='as in `monitor = "val_loss"` or `monitor = "val_accuracy"`')
    elif key == "mode":
        if not isinstance(value, str) or value not in MODES:
            raise error(f'`mode` must be "min", "max" or "auto", got {got}', span,
                        hint='"min" when lower is better (losses), "max" when higher is (accuracies), "auto" (as '
                             'leaving it out) to tell from the name')
    elif key == "restore_best":
        if not isinstance(value, bool):
            raise error(f"`restore_best` must be `true` or `false`, got {got}", span)
    elif key in ("patience", "cooldown"):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise error(f"`{key}` must be a whole number of epochs, at least 0, got {got}", span)
    elif key == "factor":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise error(f"`factor` must be a number between 0 and 1, got {got}", span,
                        hint="the learning rate is multiplied by it: 0.1 divides it by 10, 0.5 halves it")
        value = float(value)
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise error(f"`{key}` must be a non-negative number, got {got}", span,
                    hint="the least change of the monitored value that counts as an improvement" if key == "min_delta"
                    else "the learning rate is not reduced below it")
    else:
        value = float(value)
    return value


def check_monitor(settings: dict, stmt: ast.Callback, logged: list[str]) -> None:
    """The declared monitor must be a value the run logs (`logged`: the training graph's loss and
    metrics; `val_` ones with validation data), and its direction known (from its name or `mode`)."""
    monitor = settings.get("monitor")
    if monitor is None:
        return
    span = next(k.value.span for k in stmt.call.kwargs if k.name == "monitor")
    names = logged + [f"val_{n}" for n in logged]
    if monitor not in names:
        raise error(f"{WHAT[stmt.call.func]} monitors `{monitor}`, which training does not log", span,
                    hint=suggest(monitor, names) or f"it logs {', '.join(f'`{n}`' for n in names)}")
    if settings.get("mode", "auto") == "auto" and direction(monitor) is None:
        raise error(f"{WHAT[stmt.call.func]} cannot tell whether `{monitor}` is better lower or higher", span,
                    hint='its name does not say: add `mode = "min"` or `mode = "max"`')
