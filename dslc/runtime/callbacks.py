"""What the training loop does around each epoch besides training: early stopping, the best
checkpoint, `metrics.csv`, and the user's callbacks.

    RUN/checkpoint.npz  the last epoch (train.py)          RUN/history.jsonl  every epoch (train.py)
    RUN/best.npz        a copy of the checkpoint of the best epoch so far (with early stopping or
                        `restore_best`); `--restore-best` copies it over checkpoint.npz at the end
    RUN/metrics.csv     one row per epoch: `epoch`, then the other history keys sorted (the columns of
                        Keras's CSVLogger; dslc's `epoch` counts from 1, as in history.jsonl)

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

import csv
import difflib
import io
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from dslc.declared_callbacks import FOREIGN, direction
from dslc.diagnostics import DataError, suggest
from dslc.fsutil import atomic_write, atomic_write_text
from dslc.runtime.checkpoint import BEST_FILE, CHECKPOINT_FILE, checkpoint_epoch

METRICS_CSV = "metrics.csv"


class Callback:
    """Hooks of the training loop; subclass it or write any object with some of these methods.
    A method that returns `True` stops training."""

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
    `history` (Keras's `History.history`: each key's values over the epochs)."""

    def __init__(self, records=(), out_dir: Path | None = None):
        super().__init__(records)
        self.out_dir = out_dir
        self.stopped_epoch: int | None = None
        self.best_epoch: int | None = None

    @property
    def history(self) -> dict[str, list]:
        keys = dict.fromkeys(k for record in self for k in record if k != "epoch")
        return {k: [record.get(k) for record in self] for k in keys}


def better_direction(name: str, setting: str = "early_stopping") -> str:
    """`min` or `max` for a metric's name (`val_loss`, `gen.accuracy`), or `DataError` (its hint names
    the option of `setting`, the callback that monitors it)."""
    found = direction(name)
    if found is not None:
        return found
    what = "early stopping" if setting == "early_stopping" else f"`{setting}`"
    raise DataError(f"{what} cannot tell whether `{name}` is better lower or higher",
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
        if mode not in (None, "min", "max"):
            raise DataError(f"{self.WHAT}'s mode must be `min` or `max`, got `{mode}`")
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
        """Start a run: fix the monitored name and direction against the names an epoch will log."""
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
            raise DataError(f"{self.origin} monitors `{self.monitor}`, which the run does not log", hint=hint)
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
    `monitor=None`: `val_loss` with validation data, else `loss`; `mode=None`: from the name (losses
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


class RunHooks:
    """The loop's side of callbacks: called by `fit` at the start, after each step and each
    checkpointed epoch, and at the end. Returns `True` where training must stop."""

    def __init__(self, out_dir: Path, callbacks: Sequence = (), early_stopping: EarlyStopping | None = None,
                 restore_best: bool = False, reporter=None, plateau: Monitoring | None = None):
        self.out_dir = Path(out_dir)
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not any(callable(getattr(cb, m, None)) for m in ("on_train_begin", "on_step_end", "on_epoch_end",
                                                                 "on_train_end")):
                raise DataError(f"callback {cb!r} has none of the methods `on_train_begin`, `on_step_end`, "
                                "`on_epoch_end`, `on_train_end`", hint="subclass `dslc.Callback`")
        self.tracker = early_stopping or (EarlyStopping(patience=None) if restore_best else None)
        self.restore_best = restore_best
        self.reporter = reporter
        self.step_hooks = [cb.on_step_end for cb in self.callbacks if callable(getattr(cb, "on_step_end", None))]
        self.stop_note = ""
        self.plateau = plateau  # a `dslc.runtime.plateau.ReduceLROnPlateau`
        self.reduced = False  # whether it reduced the rate after the last epoch

    def check(self, names: Sequence[str], validated: bool, history: Sequence[dict]) -> None:
        """Before anything is written: check the monitored names, then replay a resumed run's history to
        early stopping (the plateau's state is the checkpoint's, `RunRates.resume`)."""
        if self.plateau is not None:
            self.plateau.resolve(list(names), validated)
        if self.tracker is not None:
            self.tracker.resolve(list(names), validated)
            for record in history:
                if self.tracker.monitor in record:
                    self.tracker.on_epoch_end(record["epoch"], record)
            if history:
                self._settle_best_file(history[-1]["epoch"])
                self._warn_stopped_already(history[-1]["epoch"])

    def _warn_stopped_already(self, last_epoch: int) -> None:
        """A resumed run continues the run it resumes: if that one's early stopping had stopped it, the
        replayed patience is spent, and the next epoch stops it again (a Keras `fit` called again would
        start its patience afresh), so say so before that epoch is trained."""
        tracker = self.tracker
        if self.reporter is None or tracker.patience is None or tracker.wait < tracker.patience:
            return
        from dslc.spelling import on_command_line

        off, larger = (("`--early-stopping off`", "`--early-stopping patience=10`") if on_command_line() else
                       ("`early_stopping=False`", '`early_stopping="patience=10"`'))
        self.reporter.warn(f"early stopping stopped this run after epoch {last_epoch} ({tracker.why_stopped()}), so "
                           f"the resumed run stops again after one more epoch; to train on, resume with {off} or a "
                           f"larger patience ({larger})")

    def _settle_best_file(self, resumed_epoch: int) -> None:
        """A resumed run's `best.npz` must hold the best epoch so far: a kill after the checkpoint of an
        improving epoch and before its copy leaves the previous best there (the checkpoint resumed is then
        the best, and is copied now); a run resumed with another `monitor`, or first run without early
        stopping, may find the best epoch's weights gone, and restores none of them (a warning says so)."""
        best = self.tracker.best_epoch
        if best is None or checkpoint_epoch(self.out_dir / BEST_FILE) == best:
            return
        if best == resumed_epoch:
            copy_file(self.out_dir / CHECKPOINT_FILE, self.out_dir / BEST_FILE)
        elif self.restore_best and self.reporter is not None:
            self.reporter.warn(self._lost_best())

    def _lost_best(self) -> str:
        held = checkpoint_epoch(self.out_dir / BEST_FILE)
        return (f"the weights of epoch {self.tracker.best_epoch}, the best `{self.tracker.monitor}` so far, were not "
                f"kept ({BEST_FILE} " + (f"holds epoch {held}'s" if held is not None else "is missing") +
                "): only an epoch that beats it can be restored")

    def begin(self, info: dict) -> None:
        for cb in self.callbacks:
            if callable(getattr(cb, "on_train_begin", None)):
                cb.on_train_begin(info)

    def step_end(self, step: int, logs: Mapping[str, float]) -> bool:
        stop = False
        for hook in self.step_hooks:
            stop = hook(step, logs) is True or stop
        if stop:
            self.stop_note = f"a callback stopped training at step {step} of the epoch; the checkpoint is the " \
                             "last whole epoch's"
        return stop

    def epoch_end(self, record: dict, history: Sequence[dict]) -> bool:
        """After the epoch, before its save: the callbacks, the plateau's reduction, then early stopping
        (Keras's order with the built-in callbacks after the user's); whether to stop."""
        epoch = record["epoch"]
        stop = False
        for cb in self.callbacks:
            if callable(getattr(cb, "on_epoch_end", None)) and cb.on_epoch_end(epoch, record) is True:
                stop = True
                self.stop_note = f"a callback stopped training after epoch {epoch}"
        self.reduced = self.plateau is not None and self.plateau.on_epoch_end(epoch, record)
        if self.tracker is not None and self.tracker.on_epoch_end(epoch, record):
            stop = True
            self.stop_note = self.tracker.describe_stop()
        return stop

    def after_save(self, history: Sequence[dict]):
        """What to write once the epoch's checkpoint is saved (on the saving thread): best.npz when the
        epoch improved, and metrics.csv, as of `history` now."""
        improved = self.tracker is not None and self.tracker.improved
        rows = list(history)

        def write() -> None:
            if improved:
                copy_file(self.out_dir / CHECKPOINT_FILE, self.out_dir / BEST_FILE)
            write_metrics_csv(self.out_dir / METRICS_CSV, rows)
        return write

    def end(self, history: list[dict]) -> None:
        """Restore the best checkpoint when asked, then the callbacks' `on_train_end`."""
        self.restore(history)
        for cb in self.callbacks:
            if callable(getattr(cb, "on_train_end", None)):
                cb.on_train_end(history)

    def restore(self, history: list[dict]) -> None:
        """Make the best epoch's checkpoint the run's when `restore_best` asks for it (also when a resumed run
        has no epoch left to train: it was stopped before its restore, or is resumed to ask for one)."""
        if self.restore_best and self.tracker is not None and self.tracker.best_epoch is not None:
            self._restore_best(history[-1]["epoch"])

    def _restore_best(self, last_epoch: int) -> None:
        best = self.out_dir / BEST_FILE
        if checkpoint_epoch(best) != self.tracker.best_epoch:  # never another epoch's weights under its name
            if self.reporter is not None:
                self.reporter.warn(self._lost_best().replace("can be restored", "could be restored; "
                                                             f"{CHECKPOINT_FILE} is the last epoch's"))
            return
        if self.tracker.best_epoch != last_epoch and self.reporter is not None:
            self.reporter.note(f"restored the weights of epoch {self.tracker.best_epoch} "
                               f"(best `{self.tracker.monitor}` {self.tracker.best:.6g}) into {CHECKPOINT_FILE}")
        copy_file(best, self.out_dir / CHECKPOINT_FILE)

    @property
    def best_epoch(self) -> int | None:
        return None if self.tracker is None else self.tracker.best_epoch


def copy_file(source: Path, target: Path) -> None:
    with open(source, "rb") as f:
        atomic_write(target, lambda out: shutil.copyfileobj(f, out))


def write_metrics_csv(path: Path, history: Sequence[dict]) -> None:
    """`epoch`, then every other key of the history sorted (Keras's CSVLogger columns), one row per epoch."""
    keys = sorted({k for record in history for k in record} - {"epoch"})
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for record in history:
        writer.writerow([record["epoch"], *(_cell(record.get(k)) for k in keys)])
    atomic_write_text(path, text.getvalue(), durable=False)  # rewritten from the history every epoch


def _cell(value) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)
