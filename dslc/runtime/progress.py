"""Training progress for people: a rich progress bar per epoch on a terminal, one Keras-style line
per epoch otherwise (logs stay small: no carriage-return updates in files).

    epoch 3/10 - 0.4s - 4312 samples/s - loss 0.2310 - accuracy 0.9412 - val_loss 0.2501 - val_accuracy 0.9333

and, in a run whose learning rate changes (a schedule, `decay`, `reduce_lr_on_plateau`), the rate of the
epoch's last step at the end: `... - lr 0.001`.

The CLI creates the reporter with the stream to write to (`make_reporter`: text, `-q`, `--log-format
jsonl`); `python_reporter` gives `program.train` Keras's `verbose` levels, with the loop's warnings
raised as Python warnings. The training loop only calls the reporters' methods.
"""
from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Mapping
from typing import IO

from dslc import standard_json
from dslc.runtime.plot import is_rate
from dslc.runtime.train import Reporter, count

_NOT_METRICS = {"epoch", "steps", "time", "samples_per_s"}


def format_number(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4f}"
    return f"{value:.4e}"


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-less stream
        return False


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
                      if k not in _NOT_METRICS and not is_rate(k) and isinstance(v, (int, float)))  # not a matrix


def format_epoch(record: Mapping, epochs: int, rates: bool = False) -> str:
    """The Keras-style line for one history entry; `rates`: with its learning rates."""
    parts = [f"epoch {record['epoch']}/{epochs}", format_seconds(record["time"]),
             f"{record['samples_per_s']:.0f} samples/s"]
    metrics = format_metrics(record)
    shown = [f"{k} {v:.4g}" for k, v in record.items() if rates and is_rate(k)]
    return " - ".join(parts + ([metrics] if metrics else []) + shown)


class ConsoleReporter(Reporter):
    """Writes progress to `stream`, a live bar only when `tty` (default: `stream.isatty()`), and warnings to
    `warnings` (default: `stream`; `dslc train`'s is stderr, so that a warning reaches the terminal when the
    progress goes to a file, as a compiler's warnings do)."""

    def __init__(self, stream: IO[str], tty: bool | None = None, refresh_every: float = 0.1,
                 log_every: int | None = None, warnings: IO[str] | None = None):
        self.stream = stream
        self.warnings = warnings
        self.log_every = log_every
        self.epoch = 0
        self.tty = stream.isatty() if tty is None else tty
        self.refresh_every = refresh_every
        self.epochs = 0
        self.rates = False  # whether the epoch lines show the learning rate
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
        self.rates = bool(info.get("lr_changes"))
        what = (f"resuming {info['model']} at epoch {info['initial_epoch'] + 1}/{info['epochs']}" if info["resumed"]
                else f"training {info['model']} for {count(info['epochs'], 'epoch')}")
        val = f", {count(info['val_samples'], 'validation sample')}" if info["val_samples"] else ""
        self._line(f"{what} on {info['device']}: {count(info['samples'], 'sample')}{val}, batch size "
                   f"{info['batch_size']} ({count(info['steps_per_epoch'], 'step')} per epoch), "
                   f"{count(info['parameters'], 'parameter')}")

    def warn(self, message: str) -> None:
        if self.warnings is None or self.warnings is self.stream or (self.tty and _is_tty(self.warnings)):
            self._line(f"warning: {message}")  # on the bar's terminal: printed above the bar, not through it
        else:
            self.warnings.write(f"warning: {message}\n")
            self.warnings.flush()

    def note(self, message: str) -> None:
        self._line(message)

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch, self.steps = epoch, steps
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

    def wants_step(self, step: int) -> bool:
        if type(self).step_end is not ConsoleReporter.step_end:  # a subclass's own step_end sees every step
            return True
        return bool(self.log_every and step % self.log_every == 0) or (
            self._progress is not None and time.monotonic() - self._last_refresh >= self.refresh_every)

    def step_end(self, step: int, logs: Mapping[str, float]) -> None:
        if self.log_every and step % self.log_every == 0:
            self._line(f"epoch {self.epoch}/{self.epochs} - step {step}/{self.steps} - {format_metrics(logs)}")
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
        self._line(format_epoch(record, self.epochs, self.rates))

    def end(self, history: list[dict], info: dict) -> None:
        if not history:
            return
        last = history[-1]
        done = last["epoch"] - info["initial_epoch"]
        metrics = format_metrics(last)
        self._line(f"trained {info['model']} for {count(done, 'epoch')} in "
                   f"{format_seconds(info['time'])}" + (f" - {metrics}" if metrics else ""))
        self._line(f"weights: {info['checkpoint']}")


class QuietReporter(Reporter):
    """`-q`: warnings only, on `stream` (stderr)."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def warn(self, message: str) -> None:
        self.stream.write(f"warning: {message}\n")
        self.stream.flush()


class JsonLinesReporter(Reporter):
    """`--log-format jsonl`: one JSON object per line and event, `{"event": ...}`: `start` (the run's
    info), `warning` and `note` (`message`), `step` (every `log_every` steps: `epoch`, `step` and the
    running means), `epoch` (the history entry), `end` (`epochs` trained, `time`, `checkpoint`). A run
    that fails or is stopped ends with the command's `error` event instead (`exit`, `message`: `dslc.cli`)."""

    def __init__(self, stream: IO[str], log_every: int | None = None):
        self.stream, self.log_every = stream, log_every
        self.epoch = 0

    def _emit(self, event: str, fields: Mapping) -> None:
        self.stream.write(standard_json.dumps({"event": event, **fields}) + "\n")
        self.stream.flush()

    def start(self, info: dict) -> None:
        self._emit("start", info)

    def warn(self, message: str) -> None:
        self._emit("warning", {"message": message})

    def note(self, message: str) -> None:
        self._emit("note", {"message": message})

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch = epoch

    def wants_step(self, step: int) -> bool:
        if type(self).step_end is not JsonLinesReporter.step_end:
            return True
        return bool(self.log_every and step % self.log_every == 0)

    def step_end(self, step: int, logs: Mapping[str, float]) -> None:
        if self.log_every and step % self.log_every == 0:
            self._emit("step", {"epoch": self.epoch, "step": step, **logs})

    def epoch_end(self, record: dict) -> None:
        self._emit("epoch", record)

    def end(self, history: list[dict], info: dict) -> None:
        done = (history[-1]["epoch"] - info["initial_epoch"]) if history else 0
        self._emit("end", {"epochs": done, "time": info["time"], "checkpoint": info["checkpoint"]})


def make_reporter(log_format: str = "text", quiet: bool = False, log_every: int | None = None) -> Reporter:
    """The reporter of `dslc train`'s options: jsonl on stdout, quiet (warnings on stderr), or text."""
    if log_format == "jsonl":
        return JsonLinesReporter(sys.stdout, log_every)
    if quiet:
        return QuietReporter(sys.stderr)
    return ConsoleReporter(sys.stdout, log_every=log_every, warnings=sys.stderr)


class _PythonWarnings:
    """Mixed into a reporter: warnings become `warnings.warn(message, UserWarning)`."""

    def warn(self, message: str) -> None:
        warnings.warn(message, UserWarning, stacklevel=_first_caller_outside_dslc())


def _first_caller_outside_dslc() -> int:
    """The `stacklevel` that points a warning at the user's line (`program.train(...)`)."""
    import os

    import dslc

    root = os.path.dirname(dslc.__file__)
    frame, level = sys._getframe(1), 1  # the frame of `warn`, which is level 1
    while frame is not None and frame.f_code.co_filename.startswith(root):
        frame, level = frame.f_back, level + 1
    return level


class SilentPythonReporter(_PythonWarnings, Reporter):
    pass


class PythonConsoleReporter(_PythonWarnings, ConsoleReporter):
    pass


def check_verbose(verbose) -> None:
    """`DataError` unless `verbose` is one of Keras's levels: 0, 1, 2 or `"auto"`."""
    if isinstance(verbose, bool) or verbose not in (0, 1, 2, "auto"):
        from dslc.diagnostics import DataError

        raise DataError(f"`verbose` must be 0, 1, 2 or \"auto\", got {verbose!r}")


def python_reporter(verbose: int | str = 1) -> Reporter:
    """Keras's `verbose` for `program.train`: 0 silent, 1 (or Keras's default `"auto"`) a bar on a terminal
    (a line per epoch otherwise), 2 a line per epoch; warnings are Python warnings at every level."""
    check_verbose(verbose)
    if verbose == 0:
        return SilentPythonReporter()
    if verbose == "auto":
        verbose = 1
    return PythonConsoleReporter(sys.stdout, tty=None if verbose == 1 else False)
