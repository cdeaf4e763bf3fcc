"""Callbacks of the training loop: the user's (`Callback`), the history `fit` returns, and early stopping
(`Monitoring`, `EarlyStopping`); `dslc.runtime.run_hooks` calls them around each epoch and keeps the
run folder's best checkpoint and `metrics.csv`.

Early stopping follows Keras's `EarlyStopping`: an epoch improves when its monitored value beats the
best so far by more than `min_delta` (lower for losses, higher for accuracies); training stops after
the epoch that makes `patience` epochs in a row without improvement. Its state is a function of the
history, so a resumed run stops where an uninterrupted one would have.

Reducing the learning rate on a plateau shares early stopping's monitoring (`Monitoring`) and lives in
`dslc.runtime.plateau`; at an epoch's end the user's callbacks run first, then the reduction, then early
stopping.

A user callback is any object with some of the methods of `Callback`; a method returning `True` stops
training (after that step or epoch; a step's stop leaves the checkpoint of the last whole epoch).
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from dslc.declared_callbacks import FOREIGN, MODES, direction
from dslc.diagnostics import DataError, SettingError, suggest



class Callback:
    """Hooks of the training loop; subclass it or write any object with some of these methods.
    A method that returns `True` stops training (from `program.train`, so does Keras'
    `self.model.stop_training = True`: see `dslc.keras_calls`)."""

    def on_train_begin(self, info: dict) -> bool | None:
        """Before the first epoch; `info` as `Reporter.start` gets it."""

    def on_step_end(self, step: int, logs: Mapping[str, float]) -> bool | None:
        """After step `step` (from 1) of the epoch; `logs` are the epoch's running means."""

    def on_epoch_end(self, epoch: int, logs: dict) -> bool | None:
        """After epoch `epoch` (from 1), as its checkpoint is saved; `logs` is its history entry."""

    def on_train_end(self, history: list[dict]) -> None:
        """After the last epoch (or the stop)."""


class History(list):
    """The history `train` returns: one dict per epoch (a list, as before), plus `out_dir` (the run
    folder: a temporary one when none was given), `stopped_epoch` (the epoch after which early stopping
    or a callback stopped training, else None), `best_epoch` (of the monitored value, when one is) and
    `history` (Keras's `History.history`: the loss's, metrics' and `lr`'s values over the epochs, their
    `val_` twins; the bookkeeping `steps`, `time` and `samples_per_s` stay in the epoch dicts, so that
    `pandas.DataFrame(history.history).plot()` draws the curves alone, as with Keras)."""

    BOOKKEEPING = ("epoch", "steps", "time", "samples_per_s")

    def __init__(self, records=(), out_dir: Path | None = None):
        super().__init__(records)
        self.out_dir = out_dir
        self.stopped_epoch: int | None = None
        self.best_epoch: int | None = None

    @property
    def epoch(self) -> list[int]:
        """The epochs' numbers, from 1 (Keras' `History.epoch` counts from 0): `plt.plot(history.epoch,
        history.history["loss"])`."""
        return [record["epoch"] for record in self]

    @property
    def history(self) -> dict[str, list]:
        keys = dict.fromkeys(k for record in self for k in record if k not in self.BOOKKEEPING)
        return {k: [record.get(k) for record in self] for k in keys}


def better_direction(name: str, setting: str = "early_stopping") -> str:
    """`min` or `max` for a metric's name (`val_loss`, `gen.accuracy`), or `SettingError` (its hint names
    the option of `setting`, the callback that monitors it)."""
    found = direction(name)
    if found is not None:
        return found
    what = "early stopping" if setting == "early_stopping" else f"`{setting}`"
    raise SettingError(f"{what} cannot tell whether `{name}` is better lower or higher",
                    hint=f"add `mode=min` or `mode=max` to {option_text(setting)}")


def _logged_name(name: str, names: Sequence[str]) -> str | None:
    """`name` if an epoch logs it, else the logged name closest to it (Keras's `acc` is `accuracy`)."""
    if name in names:
        return name
    close = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.6)
    if close:
        return close[0]
    return next((n for n in names if n.startswith(name)), None)


def option_text(name: str) -> str:
    from dslc.spelling import option

    return option(name)


def _is_count(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 0


def _is_amount(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


class Monitoring(Callback):
    """What early stopping and `ReduceLROnPlateau` share: a monitored value, which way is better (`mode`),
    the best value so far and when an epoch improves on it by more than `min_delta` (Keras's comparisons:
    absolute). Subclasses name their settings (`KEYS`, the numbers' types in `NUMBERS`), the callback
    (`SETTING`, as the model and the option write it) and how messages call it (`WHAT`)."""

    KEYS: tuple[str, ...] = ()
    NUMBERS: dict[str, type] = {}
    SETTING = WHAT = ""
    EXAMPLE = SHORT = ""  # a text of its settings and of one of them, for hints

    def _start(self, monitor: str | None, mode: str | None, min_delta: float) -> None:
        if mode is not None and mode not in MODES:
            raise DataError(f"{self.WHAT}'s mode must be `min`, `max` or `auto`, got `{mode}`",
                            hint="`auto`, as leaving it out, tells from the monitored name")
        mode = None if mode == "auto" else mode
        if not _is_amount(min_delta):
            raise DataError(f"{self.WHAT}'s min_delta must be a non-negative number, got {min_delta!r}")
        self.requested = (monitor, mode)  # as given: a run fills in the defaults, the next one starts again
        self.origin = self.WHAT  # in messages; the model's `callback` names itself
        self.monitor, self.min_delta, self.mode = monitor, float(min_delta), mode
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0

    @classmethod
    def parse(cls, text: str, declared: Mapping | None = None):
        """`key=value,...` of `KEYS`, every key optional (`""`: the defaults), each replacing the `declared`
        one (the model's `callback ...(...)`)."""
        settings: dict[str, object] = {k: v for k, v in (declared or {}).items() if k in cls.KEYS}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, eq, value = (s.strip() for s in item.partition("="))
            if not eq or key not in cls.KEYS:
                close = FOREIGN[cls.SETTING].get(key) or suggest(key, cls.KEYS)
                raise DataError(f"{cls.WHAT}: expected `key=value` with a key among "
                                f"{', '.join(f'`{k}`' for k in cls.KEYS)}, got `{item}`",
                                hint=close or f"e.g. `{cls.EXAMPLE}`")
            try:
                settings[key] = cls.NUMBERS.get(key, str)(value)
            except ValueError:
                raise DataError(f"{cls.WHAT}: `{key}` must be a number, got `{value}`") from None
        return cls(**settings)

    @classmethod
    def of(cls, setting):
        """One from itself, its text (`"patience=3"`), a dict of its settings (`{"patience": 3}`, as Keras's
        keywords) or `True` (the defaults); None for None/False. `for_run` merges a text or dict with the
        model's declaration first."""
        if setting is None or setting is False or isinstance(setting, cls):
            return setting or None
        if setting is True:
            return cls()
        if isinstance(setting, str):
            return cls.parse(setting)
        if isinstance(setting, Mapping):
            for key in setting:
                if key not in cls.KEYS:
                    example = "{" + ", ".join(f'"{k}": {v if cls.NUMBERS.get(k) else repr(v)}'.replace("'", '"')
                                              for k, v in (p.split("=") for p in cls.EXAMPLE.split(","))) + "}"
                    raise DataError(f"{cls.WHAT} has no setting `{key}`; its settings are "
                                    f"{', '.join(f'`{k}`' for k in cls.KEYS)}",
                                    hint=FOREIGN[cls.SETTING].get(key) or suggest(str(key), cls.KEYS)
                                    or f"e.g. {example}")
            return cls(**setting)
        raise DataError(f"`{cls.SETTING}` must be a `dslc.{cls.__name__}`, its text such as \"{cls.SHORT}\" or "
                        f"a dict of its settings, got {setting!r} (`{type(setting).__name__}`)")

    @classmethod
    def for_run(cls, declared: Mapping | None, setting):
        """A run's callback: the model's declaration (the manifest's settings, None without one), its keys
        replaced by those of a text given (`patience=3`) or a dict, replaced whole by an instance, dropped by
        `False` or `"off"`; None when there is none."""
        if setting is False or (isinstance(setting, str) and setting.strip().lower() in OFF):
            return None
        if setting is True:  # as the flag alone
            setting = ""
        if isinstance(setting, str):
            return cls.parse(setting, declared)
        if isinstance(setting, Mapping):  # its keys replace the declared ones, as a text's do
            return cls.of({**(declared or {}), **setting})
        if setting is None and declared is not None:
            made = cls(**declared)
            made.origin = f"the model's `callback {cls.SETTING}`"
            return made
        return cls.of(setting)

    def resolve(self, names: Sequence[str], validated: bool) -> None:
        """Start a run: fix the monitored name and direction against the names an epoch will log
        (`SettingError`, exit code 2, when it cannot: the run's settings, not its data, are wrong)."""
        self.monitor, self.mode = self.requested
        self.best, self.best_epoch, self.wait = None, None, 0
        if self.monitor is None:
            self.monitor = "val_loss" if "val_loss" in names else "loss" if "loss" in names else names[0]
        if self.monitor not in names:
            hint = suggest(self.monitor, names) or f"the run logs {', '.join(f'`{n}`' for n in names)}"
            if self.monitor.startswith("val_") and not validated:
                hint = f"pass validation data ({option_text('val')} or {option_text('val_split')})"
                logged = _logged_name(self.monitor[len("val_"):], names)
                hint += f", or monitor `{logged}`" if logged else ""
            raise SettingError(f"{self.origin} monitors `{self.monitor}`, which the run does not log", hint=hint)
        self.mode = self.mode or better_direction(self.monitor, self.SETTING)

    def improves(self, value: float) -> bool:
        if math.isnan(value):  # never better, as in Keras's comparisons: not the best epoch, even the first
            return False
        if self.best is None:
            return True
        return value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta

    def best_text(self) -> str:
        return (f"best {self.best:.6g} at epoch {self.best_epoch}" if self.best is not None else
                "it was NaN in every epoch")


class EarlyStopping(Monitoring):
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs in a row.
    `monitor=None`: `val_loss` with validation data, else `loss`; `mode=None` or `"auto"`: from the name (losses
    and errors `min`, accuracies and F-scores `max`). `patience=None` never stops: it only tracks the
    best epoch (for `restore_best`)."""

    KEYS = ("monitor", "patience", "min_delta", "mode")
    NUMBERS = {"patience": int, "min_delta": float}
    SETTING, WHAT = "early_stopping", "early stopping"
    EXAMPLE, SHORT = "monitor=val_loss,patience=5,min_delta=0", "patience=5"

    def __init__(self, monitor: str | None = None, patience: int | None = 5, min_delta: float = 0.0,
                 mode: str | None = None):
        if patience is not None and not _is_count(patience):
            raise DataError(f"early stopping's patience must be a non-negative integer, got {patience!r}")
        self._start(monitor, mode, min_delta)
        self.patience = patience

    def on_epoch_end(self, epoch: int, logs: dict) -> bool:
        """Whether to stop; `improved` says whether this epoch became the best."""
        value = float(logs[self.monitor])
        self.improved = self.improves(value)
        if self.improved:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return False
        self.wait += 1
        return self.patience is not None and self.wait >= self.patience

    def describe_stop(self) -> str:
        return f"early stopping: {self.why_stopped()}"

    def why_stopped(self) -> str:
        return f"`{self.monitor}` has not improved for {self.wait} epoch{'s' * (self.wait != 1)} ({self.best_text()})"


OFF = ("off", "none", "false", "no")


def run_stopping(manifest: Mapping, early_stopping, restore_best: bool | None) -> tuple[EarlyStopping | None, bool]:
    """A run's early stopping and `restore_best`: the model's `callback early_stopping(...)` (the
    manifest's `"early_stopping"`), its keys replaced by those of a text given (`patience=3`), replaced
    whole by an `EarlyStopping`, dropped by `False` or `"off"` (with its `restore_best`, unless that is
    given); `restore_best=None`: the declared one."""
    declared = manifest.get("early_stopping")
    declared = dict(declared) if declared is not None else None
    declared_restore = bool((declared or {}).pop("restore_best", False))
    stopping = EarlyStopping.for_run(declared, early_stopping)
    if stopping is None and early_stopping is not None:  # dropped: with its `restore_best`, unless that is given
        return None, bool(restore_best)
    return stopping, declared_restore if restore_best is None else bool(restore_best)
