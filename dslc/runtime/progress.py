"""Training progress for people: a rich progress bar per epoch on a terminal, one Keras-style line
per epoch otherwise (logs stay small: no carriage-return updates in files).

    epoch 3/10 - 0.4s - 4312 samples/s - loss 0.2310 - accuracy 0.9412 - val_loss 0.2501 - val_accuracy 0.9333

The CLI creates the reporter with the stream to write to; the training loop only calls its methods.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import IO

from dslc.runtime.train import Reporter, count

_NOT_METRICS = {"epoch", "steps", "time", "samples_per_s"}


def format_number(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4f}"
    return f"{value:.4e}"


def format_seconds(seconds: float) -> str:
    if seconds < 0.1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def format_metrics(logs: Mapping[str, float]) -> str:
    return " - ".join(f"{k} {format_number(v)}" for k, v in logs.items()
                      if k not in _NOT_METRICS and isinstance(v, (int, float)))  # not a confusion matrix


def format_epoch(record: Mapping, epochs: int) -> str:
    """The Keras-style line for one history entry."""
    parts = [f"epoch {record['epoch']}/{epochs}", format_seconds(record["time"]),
             f"{record['samples_per_s']:.0f} samples/s"]
    metrics = format_metrics(record)
    return " - ".join(parts + ([metrics] if metrics else []))


class ConsoleReporter(Reporter):
    """Writes progress to `stream`; a live bar only when `tty` (default: `stream.isatty()`)."""

    def __init__(self, stream: IO[str], tty: bool | None = None, refresh_every: float = 0.1):
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.refresh_every = refresh_every
        self.epochs = 0
        self._progress = None
        self._task = None
        self._last_refresh = 0.0
        if self.tty:
            from rich.console import Console

            self.console = Console(file=stream, force_terminal=True, highlight=False)

    def _line(self, text: str) -> None:
        if self.tty:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def start(self, info: dict) -> None:
        self.epochs = info["epochs"]
        what = (f"resuming {info['model']} at epoch {info['initial_epoch'] + 1}/{info['epochs']}" if info["resumed"]
                else f"training {info['model']} for {count(info['epochs'], 'epoch')}")
        val = f", {count(info['val_samples'], 'validation sample')}" if info["val_samples"] else ""
        self._line(f"{what} on {info['device']}: {count(info['samples'], 'sample')}{val}, batch size "
                   f"{info['batch_size']} ({count(info['steps_per_epoch'], 'step')} per epoch), "
                   f"{count(info['parameters'], 'parameter')}")

    def warn(self, message: str) -> None:
        self._line(f"warning: {message}")

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        if not self.tty:
            return
        from rich.markup import escape
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn(escape(f"epoch {epoch}/{epochs}")), BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[logs]}", markup=False),
            console=self.console, transient=True, auto_refresh=False,
            redirect_stdout=False, redirect_stderr=False,
        )
        self._task = self._progress.add_task("train", total=steps, logs="")
        self._progress.start()
        self._last_refresh = 0.0

    def step_end(self, step: int, logs: Mapping[str, float]) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if now - self._last_refresh >= self.refresh_every:  # a redraw per step would cost more than the step
            self._progress.update(self._task, completed=step, logs=format_metrics(logs))
            self._progress.refresh()
            self._last_refresh = now

    def close(self) -> None:
        """Take down a live bar (training ended, possibly with an error)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def epoch_end(self, record: dict) -> None:
        self.close()
        self._line(format_epoch(record, self.epochs))

    def end(self, history: list[dict], info: dict) -> None:
        if not history:
            return
        last = history[-1]
        done = last["epoch"] - info["initial_epoch"]
        metrics = format_metrics(last)
        self._line(f"trained {info['model']} for {count(done, 'epoch')} in "
                   f"{format_seconds(info['time'])}" + (f" - {metrics}" if metrics else ""))
        self._line(f"weights: {info['checkpoint']}")
