"""What a failed `dslc` command exits with, and the lines that say why (`dslc.cli` prints them).

Exit codes: 0 ok; 1 the model has errors (diagnostics on stderr; for `dslc fmt`, a file that does not
parse); 4 `dslc fmt --check` found a file that is not formatted; 2 bad command line (argparse's,
`UsageError`, and a run's `SettingError`: flags that do not hold together once it starts); 3 bad data,
missing files or an unusable device (`error:`/`hint:` on stderr); 101 a bug in dslc itself
(`DSLC_BACKTRACE=1` shows the traceback); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM); 141 the
reader of the output left (a closed pipe, as `dslc summary M.dl | head -1`: quiet, as for a command
killed by SIGPIPE)."""
from __future__ import annotations

import errno
import os
import traceback

from dslc import interrupts
from dslc.diagnostics import DataError, DslcError, printable, render_all

EXIT_OK, EXIT_MODEL, EXIT_USAGE, EXIT_DATA, EXIT_BUG = 0, 1, 2, 3, 101
EXIT_INTERRUPTED, EXIT_TERMINATED = interrupts.EXIT_INTERRUPTED, interrupts.EXIT_TERMINATED
EXIT_PIPE = 141  # 128 + SIGPIPE
# `dslc fmt --check`: a file is not in the canonical layout. Not 1, which says the model text has errors
# (a file that does not parse, as for every verb); black, rustfmt and ruff use 1 for this, and 123 or 2
# for a file they cannot parse, so that scripts can tell the two apart: dslc's 1 was already taken.
EXIT_NOT_FORMATTED = 4


class UsageError(Exception):
    """A command line that only turns out wrong once the model is compiled (exit 2, like argparse's)."""

    exit_code = EXIT_USAGE


def exit_code(e: BaseException) -> int:
    """The exit code of a command that raised `e` (an MPI rank aborts with it too)."""
    if isinstance(e, (UsageError, DataError)):
        return e.exit_code  # a DataError's is EXIT_DATA, or rank 0's (`distributed.RankZeroStopped`)
    if isinstance(e, DslcError):
        return EXIT_MODEL
    if isinstance(e, BrokenPipeError):
        return EXIT_PIPE
    if isinstance(e, OSError):
        return EXIT_DATA
    stop = e if isinstance(e, KeyboardInterrupt) else interrupts.caused_by_interrupt(e)
    if stop is not None:
        return interrupts.stopped(stop)[1]
    return EXIT_BUG


def failure(args, e: BaseException) -> tuple[int, list[str]]:
    """The exit code of a command that raised `e`, and the lines that say why (the command prints them on
    stderr, after the verb's usage for a `UsageError`). A closed output pipe says nothing."""
    code = exit_code(e)
    if isinstance(e, UsageError):
        return code, [f"dslc {args.verb}: error: {e}"]
    if isinstance(e, DslcError):
        return code, [render_all(e.diagnostics)]
    if isinstance(e, DataError):
        hint = e.hint or _full_disk_hint(args, e)
        return code, [printable(f"error: {e.message}" + (f"\nhint: {hint}" if hint else ""))]
    if isinstance(e, BrokenPipeError):
        return code, []
    if isinstance(e, OSError):
        return code, [printable(f"error: {_os_error_message(e)}")]
    stop = e if isinstance(e, KeyboardInterrupt) else interrupts.caused_by_interrupt(e)
    if stop is not None:  # Ctrl-C, or SIGTERM (`interrupts.Terminated`)
        message = interrupts.stopped(stop)[0]
        if isinstance(e, KeyboardInterrupt) and checkpoint_saved(args):
            return code, [message, f"hint: {interrupts.RESUME_HINT}"]
        return code, [message]
    lines = [f"error: internal compiler error: {type(e).__name__}: {e}",
             "note: this is a bug in dslc; please report it with the model file"]
    if os.environ.get("DSLC_BACKTRACE") == "1":
        lines.append("".join(traceback.format_exception(e)).rstrip())
    else:
        lines.append("note: run with `DSLC_BACKTRACE=1` to see the traceback")
    return EXIT_BUG, lines


def _os_error_message(e: OSError) -> str:
    """A file problem other than a failed write (`fsutil.WriteError` is a `DataError`)."""
    reason = e.strerror or str(e)
    return f"cannot access `{e.filename}`: {reason}" if e.filename else reason


def to_devnull(stream) -> None:
    """Point `stream`'s file descriptor at /dev/null, so that the interpreter's last flush of it at exit
    cannot fail again (and turn the exit code into 120), or so that nothing more reaches the terminal."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    except (OSError, ValueError):
        pass


def run_checkpoint(args) -> str:
    """The checkpoint a `dslc train` command writes (`RUN/checkpoint.npz`)."""
    return os.path.join(args.out, "checkpoint.npz")


def checkpoint_saved(args) -> bool:
    """Whether the command is a `dslc train` whose run has a checkpoint to `--resume` from."""
    return args.verb == "train" and os.path.exists(run_checkpoint(args))


def _full_disk_hint(args, e: DataError) -> str:
    """A training run stopped by a full disk keeps its last whole epoch, as one stopped by Ctrl-C does."""
    if args.verb != "train" or getattr(e, "errno", None) not in (errno.ENOSPC, errno.EDQUOT):
        return ""
    if checkpoint_saved(args):
        return "the last completed epoch is saved; free some space and run the same command with `--resume` to continue"
    return "free some space and train again"
