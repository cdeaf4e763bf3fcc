"""Stopping a command from outside: Ctrl-C (SIGINT) and SIGTERM (`kill`, `docker stop`, a batch scheduler
preempting or timing out a job) end it as an error the user asked for, with exit code 130 or 143 (128 +
the signal, as a shell reports a process the signal killed). SIGTERM raises `Terminated`, a
KeyboardInterrupt, where Ctrl-C raises KeyboardInterrupt, so every path that keeps a run's state on
Ctrl-C keeps it on SIGTERM too: a training run's checkpoint save in flight lands, its completed epochs
stay saved, and `--resume` continues it.

Imported by `python -m dslc` before anything heavy: it uses nothing but the standard library."""
import os
import signal
import sys
import threading
from contextlib import contextmanager

EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143
# what a stopped `dslc train` says once it has saved an epoch
RESUME_HINT = "the last completed epoch is saved; run the same command with `--resume` to continue"


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


def install() -> None:
    """Handle SIGINT and SIGTERM as this module says (the command's entry points call it)."""
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


def stopped(error: KeyboardInterrupt) -> tuple[str, int]:
    """The `error:` line and the exit code of a command stopped by `error`."""
    if isinstance(error, Terminated):
        return "error: terminated (SIGTERM)", EXIT_TERMINATED
    return "error: interrupted", EXIT_INTERRUPTED


def _on_signal(signum, frame) -> None:
    """Raise the signal's KeyboardInterrupt, as Python's own Ctrl-C handler does, unless it lands while a
    module is being imported. A KeyboardInterrupt inside an extension's initialisation (numpy's,
    onnxruntime's) can leave the interpreter broken: numpy's ImportError then no longer names the
    interrupt, and the process may crash on its way out (seen under load: SIGSEGV, SIGABRT). An import
    writes nothing, so the process ends there, at once."""
    error = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            message, code = stopped(error)
            try:
                sys.stdout.flush()
                sys.stderr.write(message + "\n")
                sys.stderr.flush()
            finally:
                os._exit(code)
        frame = frame.f_back
    raise error


def caused_by_interrupt(error: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM behind `error`, if any: numpy turns a KeyboardInterrupt during the import of
    its C extension into an ImportError raised from it."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


@contextmanager
def deferred():
    """Hold Ctrl-C and SIGTERM back while the block runs, then deliver the first one received to the
    handlers the process had: for a step that a signal must not cut in two, as an object under
    construction that cannot be closed yet. A no-op outside the main thread (where signals cannot be
    handled)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    held = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    for number in held:
        signal.signal(number, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for number, handler in held.items():
            signal.signal(number, handler)
    if received:
        signal.raise_signal(received[0])
