"""What the training loop does around each epoch besides training (`RunHooks`): the user's callbacks,
reducing the rate on a plateau, early stopping, the best checkpoint and `metrics.csv`.

    RUN/checkpoint.npz  the last epoch (train.py)          RUN/history.jsonl  every epoch (train.py)
    RUN/best.npz        a copy of the checkpoint of the best epoch so far (with early stopping or
                        `restore_best`); `--restore-best` copies it over checkpoint.npz at the end
    RUN/metrics.csv     one row per epoch: `epoch`, then the other history keys sorted (the columns of
                        Keras's CSVLogger; dslc's `epoch` counts from 1, as in history.jsonl), appended
                        as history.jsonl is: a kill mid-append tears the last row, which the next run
                        in the folder rewrites from the checkpoint's history
"""
from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from dslc.diagnostics import DataError
from dslc.fsutil import append_bytes, atomic_write, atomic_write_bytes
from dslc.runtime.callbacks import EarlyStopping, Monitoring
from dslc.runtime.checkpoint import BEST_FILE, CHECKPOINT_FILE, checkpoint_epoch

METRICS_CSV = "metrics.csv"


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
        self.metrics_csv = MetricsCsv(self.out_dir / METRICS_CSV)

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
            self.metrics_csv.write(rows)
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


class MetricsCsv:
    """`RUN/metrics.csv`: `epoch`, then every other key of the history sorted (Keras's CSVLogger columns),
    one row per epoch. Each epoch's row is appended. The whole file is written (atomically) when this
    process writes it first (a resumed run's file may hold rows the checkpoint does not), when a key
    appears, or when the file is not as this process left it. Rewritten every epoch, it cost the saving
    thread CPU time growing with the run (3.6 ms at epoch 1,000): 8.8 of the 11.7 s of 2,000 epochs of
    models/xor.dl."""

    def __init__(self, path: Path):
        self.path = path
        self._columns: list[str] = []
        self._rows = 0  # history rows in the file
        self._size = -1  # its size in bytes after this process's last write; -1: not written yet

    def write(self, history: Sequence[dict]) -> None:
        new = history[self._rows:]
        if len(history) < self._rows or any(k not in self._columns and k != "epoch" for r in new for k in r) \
                or self._size != _size(self.path):
            self._columns = sorted({k for record in history for k in record} - {"epoch"})
            data = self._text([["epoch", *self._columns]], history)
            atomic_write_bytes(self.path, data, durable=False)
            self._size = len(data)
        elif new:
            data = self._text([], new)
            append_bytes(self.path, data)
            self._size += len(data)
        self._rows = len(history)

    def _text(self, header: list[list[str]], records: Sequence[dict]) -> bytes:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerows(header)
        writer.writerows([record["epoch"], *(_cell(record.get(k)) for k in self._columns)] for record in records)
        return text.getvalue().encode("utf-8")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -2  # missing: never equal to a size written


def _cell(value) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)
