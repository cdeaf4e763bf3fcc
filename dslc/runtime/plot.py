"""Training curves: `dslc plot RUN` (and `dslc train --plot`) draws `RUN/curves.png` from the run's
history (`RUN/history.jsonl`), one panel per quantity (the loss first, then each metric), training and validation in each,
and a last panel of the learning rate (log scale) when it changed during the run.

matplotlib is an optional extra (`pip install 'dslc[plot]'`), imported only here and only when a plot
is drawn (its import takes ~0.6 s); without it the command says how to install it.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from dslc.diagnostics import DataError
from dslc.fsutil import atomic_write
from dslc.runtime.history import HISTORY_FILE

CURVES_FILE = "curves.png"
_NOT_CURVES = ("epoch", "steps", "time", "samples_per_s")


def is_rate(key: str) -> bool:
    """Whether a history key is a learning rate (`lr`, `<objective>.lr`)."""
    return key == "lr" or key.endswith(".lr")


def quantities(history: list[dict]) -> list[str]:
    """The plotted quantities: each training key (not `val_`), the losses first, in the history's order;
    then the learning rates that changed."""
    numbers = dict.fromkeys(k for r in history for k, v in r.items()  # not confusion matrices
                            if isinstance(v, (int, float)) and k not in _NOT_CURVES)
    keys = [k for k in numbers if not k.startswith("val_") and not is_rate(k)]
    keys += [k[4:] for k in numbers if k.startswith("val_") and k[4:] not in keys]  # validation-only quantities
    rates = [k for k in numbers if is_rate(k) and len({r.get(k) for r in history} - {None}) > 1]
    return sorted(keys, key=lambda k: not k.rsplit(".", 1)[-1] == "loss") + rates


def check_matplotlib() -> None:
    """`DataError` with the install command when matplotlib is missing (found without importing it)."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise DataError("plotting needs matplotlib, which is not installed", hint="pip install 'dslc[plot]'")


def read_history(run: str | os.PathLike) -> list[dict]:
    """The epochs of `RUN/history.jsonl` (see `dslc.runtime.history`), up to a torn or damaged line."""
    path = Path(run) / HISTORY_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"`{run}` holds no training history (`{path}` is missing)",
                        hint=f"train into it first: `dslc train ... -o {run}`") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read `{path}`: {getattr(e, 'strerror', None) or e}") from None
    history = []
    for text in lines:
        try:
            record = json.loads(text)
        except ValueError:
            break  # a line cut short by a killed run
        if not isinstance(record, dict) or "epoch" not in record:
            break
        history.append(record)
    if not history:
        raise DataError(f"`{path}` holds no epochs", hint="train at least one epoch")
    return history


def plot_run(run: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    """Draw the curves of run folder `run` into `path` (default `RUN/curves.png`); returns the path."""
    history = read_history(run)
    check_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = quantities(history)
    epochs = [r["epoch"] for r in history]
    columns = min(len(names), 3)
    rows = math.ceil(len(names) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for key, label in ((name, "learning rate"),) if is_rate(name) else ((name, "training"), (f"val_{name}", "validation")):
            points = [(e, r[key]) for e, r in zip(epochs, history) if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), marker="o" if len(points) < 30 else None, markersize=3, label=label)
        if is_rate(name) and all(r[name] > 0 for r in history if r.get(name) is not None):
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    figure.tight_layout()
    target = Path(path) if path is not None else Path(run) / CURVES_FILE
    atomic_write(target, lambda f: figure.savefig(f, format="png", dpi=100))
    plt.close(figure)
    return target
