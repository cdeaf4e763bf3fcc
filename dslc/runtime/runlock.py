"""One training run per run directory at a time: an exclusive lock held for the whole run.

The lock is an OS lock (`flock` on POSIX, `msvcrt.locking` on Windows) on the file `RUN/.lock`, so the
kernel releases it when the process ends, a crash or `kill -9` included: there is never a stale lock
to remove by hand. The file stays in place between runs; it records the process id of its holder only
so that the refusal can name it. (The stdlib suffices here: `filelock` would add a dependency for the
same `flock` call.) On a file system that cannot lock at all (`ENOLCK`, `EOPNOTSUPP`: some FUSE
mounts), the run goes ahead unlocked rather than not at all.

Under the lock, the leftovers of a run killed inside an atomic write (`.checkpoint.npz.XXXXXXXX.tmp`,
see `dslc.fsutil`) are removed: no other process can be writing them.
"""
from __future__ import annotations

import errno
import functools
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dslc.diagnostics import DataError
from dslc.fsutil import make_directory

LOCK_FILE = ".lock"
# `tempfile.mkstemp(prefix=".<name>.", suffix=".tmp")`: eight characters of its alphabet in the middle
TEMPORARY = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")


def locks_run_directory(fit: Callable) -> Callable:
    """Decorate `fit(..., out_dir=...)` to run under `run_lock(out_dir)`."""
    @functools.wraps(fit)
    def locked(*args, out_dir, **kwargs):
        comm = kwargs.get("comm")  # MPI ranks other than 0 (`dslc/runtime/distributed.py`) only read the run
        if comm is not None and comm.Get_rank() != 0:
            return fit(*args, out_dir=out_dir, **kwargs)
        with run_lock(out_dir):
            return fit(*args, out_dir=out_dir, **kwargs)
    return locked


@contextmanager
def run_lock(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock on run directory `out_dir` (created if missing) for the `with` block; `DataError`
    if another process holds it. A directory this call created is removed again if the block fails
    before writing anything into it, so that a refused run leaves no trace."""
    out_dir = Path(out_dir)
    created = not out_dir.is_dir()
    make_directory(out_dir)
    lock_path = out_dir / LOCK_FILE
    fd = _acquire(lock_path, out_dir)
    _releasing.stack = [*getattr(_releasing, "stack", []), []]
    try:
        remove_temporaries(out_dir)
        yield out_dir
        _run_callbacks(failing=False)
    except BaseException:
        _run_callbacks(failing=True)
        if created and os.listdir(out_dir) == [LOCK_FILE]:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    finally:
        _releasing.stack = _releasing.stack[:-1]
        os.close(fd)  # releases the lock


_releasing = threading.local()  # .stack: per `run_lock` being held by this thread, its callbacks


def when_released(callback: Callable[[bool], None]) -> None:
    """Call `callback(failing)` before the innermost run lock this thread holds is released (`failing`:
    the run raised). Outside a run lock the callback is never called (API callers of internals)."""
    stack = getattr(_releasing, "stack", [])
    if stack:
        stack[-1].append(callback)


def _run_callbacks(failing: bool) -> None:
    callbacks, _releasing.stack[-1] = _releasing.stack[-1], []
    for callback in callbacks:
        callback(failing)


def _acquire(lock_path: Path, out_dir: Path) -> int:
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise DataError(f"cannot lock the run directory `{out_dir}`: {e.strerror}") from None
    try:
        _lock(fd)
    except OSError as e:
        if e.errno in UNSUPPORTED:  # a file system without locks (some FUSE mounts): run unlocked, as before
            return fd
        holder = _read_holder(fd)
        os.close(fd)
        raise DataError(f"`{out_dir}` is in use by another training run{holder}",
                        hint="wait until it ends, or train into another directory") from None
    if not _still_there(fd, lock_path):  # a failing first run removed the directory meanwhile
        os.close(fd)
        raise DataError(f"cannot lock the run directory `{out_dir}`: it was removed meanwhile")
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


# errors of a file system that cannot lock at all, as opposed to a lock held elsewhere
UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS} if os.name != "nt" else set()


def _still_there(fd: int, lock_path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(lock_path))
    except OSError:
        return False


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip() if hasattr(os, "pread") else ""
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (process {text})" if text.isdigit() else ""


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def remove_temporaries(directory: Path) -> list[str]:
    """Delete the temporary files an interrupted atomic write left in `directory`; their names."""
    removed = []
    for name in os.listdir(directory):
        if TEMPORARY.fullmatch(name):
            try:
                os.unlink(directory / name)
                removed.append(name)
            except FileNotFoundError:
                pass
    return sorted(removed)
