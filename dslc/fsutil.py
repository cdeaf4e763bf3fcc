"""Atomic file writes: every file dslc writes goes through here.

A write goes to a temporary file in the target's directory (`.<name>.<random>.tmp`), is flushed and
fsync'ed, then renamed over the target with `os.replace`, which is atomic on POSIX and Windows. A crash
or an exception mid-write therefore leaves either the old file or the new one, never a torn file, and
the temporary file is removed on failure.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

_umask: int | None = None


class WriteError(OSError):
    """Writing `filename` failed; raised with the target path, not the temporary one."""


def _default_mode() -> int:
    """0o666 minus the umask: the mode `open(path, "w")` would give a new file (mkstemp gives 0o600)."""
    global _umask
    if _umask is None:
        _umask = os.umask(0o022)
        os.umask(_umask)
    return 0o666 & ~_umask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(f)` on a temporary binary file, then atomically replace `path` with it."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise WriteError(e.errno, e.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        mode = os.stat(path).st_mode & 0o7777 if path.exists() else _default_mode()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(e.errno, e.strerror, str(path)) from e
        raise
    _fsync_dir(directory)
    return path


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npz(path: str | os.PathLike, arrays: Mapping[str, object]) -> Path:
    """`numpy.savez(path, **arrays)`, atomically. Keys may contain `/` and `.` (`param/dense.W`)."""
    import numpy as np  # the only non-stdlib import here, kept local so the module stays light

    return atomic_write(path, lambda f: np.savez(f, **arrays))
