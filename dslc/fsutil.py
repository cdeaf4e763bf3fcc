"""Atomic file writes: every file dslc writes goes through here.

A write goes to a temporary file in the target's directory (`.<name>.<random>.tmp`), is flushed and
fsync'ed, then renamed over the target with `os.replace`, which is atomic on POSIX and Windows. A crash
or an exception mid-write therefore leaves either the old file or the new one, never a torn file, and
the temporary file is removed on failure.

`durable=False` skips the fsyncs (3-16 ms per file on a shared VM disk; more than a small model's epoch)
for files that are rewritten from what they derive from: a run's graphs and manifest (written again by
every `dslc train` of the run) and `metrics.csv` (a view of `history.jsonl`, itself appended without
fsync). The rename still makes a killed process leave the old file or the new one; only a power loss may
lose the latest write.

`append_bytes` is the one write that is not atomic: the logs a run extends by a line an epoch
(`history.jsonl`, `metrics.csv`), which the next run in the folder first rewrites from the checkpoint.
"""
from __future__ import annotations

import errno
import os
import signal
import tempfile
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from dslc.diagnostics import DataError

_umask: int | None = None


class WriteError(OSError, DataError):
    """Writing `filename` failed; raised with the target path, not the temporary one.

    Constructed like an `OSError` (errno, strerror, filename), and also a `DataError` (`message`,
    `hint`), so that API users catch every file problem as `dslc.DataError`."""

    hint = ""

    @property
    def message(self) -> str:
        reason = self.strerror or super().__str__()
        return f"cannot write `{self.filename}`: {reason}" if self.filename else reason

    def __str__(self) -> str:
        return self.message


def _default_mode() -> int:
    """0o666 minus the umask: the mode `open(path, "w")` would give a new file (mkstemp gives 0o600)."""
    global _umask
    if _umask is None:
        _umask = os.umask(0o022)
        os.umask(_umask)
    return 0o666 & ~_umask


def check_writable(path: str | os.PathLike) -> Path:
    """`path` as a `Path` if a file could be written there now; `WriteError` otherwise (a directory, a
    missing or read-only parent directory), so that long jobs fail before their work, not after."""
    target, shown = _file_target(path)
    # a real probe: permission bits say nothing for root or for special file systems
    os.unlink(_write_temporary(target, lambda f: None, shown))
    return target


def _file_target(path: str | os.PathLike) -> tuple[Path, str]:
    """`path` and its text (for messages: `Path` drops a trailing `/`), if neither says it cannot name a
    file: not a directory, in a directory that exists. Whether it is writable is found by writing."""
    text = os.fspath(path)
    target = Path(text)
    if text.endswith((os.sep, "/")) or target.is_dir():
        raise WriteError(errno.EISDIR, "it is a directory; name the file to write", text)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        reason = errno.ENOTDIR if directory.exists() else errno.ENOENT
        raise WriteError(reason, f"{os.strerror(reason)} (`{directory}`)", text)
    return target, text


def make_directory(path: str | os.PathLike) -> Path:
    """`path` and its missing parents created as directories; `WriteError` naming the obstacle if a
    file stands at `path` or at one of its parents."""
    path = Path(path)
    for part in [path, *path.parents]:
        if part.is_symlink() and not part.exists():  # mkdir would say "File exists"
            what = "it is" if part == path else f"`{part}` is"
            raise WriteError(errno.ENOENT, f"{what} a symbolic link to `{os.readlink(part)}`, which does not exist",
                             str(path))
        if part.exists() and not part.is_dir():
            raise WriteError(errno.ENOTDIR, "it is a file, not a directory" if part == path else
                             f"`{part}` is a file, not a directory", str(path))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(e.errno, e.strerror, str(path)) from None
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], durable: bool = True) -> Path:
    """Call `write(f)` on a temporary binary file, then atomically replace `path` with it."""
    return atomic_write_all({path: write}, durable)[0]


def atomic_write_all(files: Mapping[str | os.PathLike, Callable[[IO[bytes]], None]],
                     durable: bool = True) -> list[Path]:
    """Write every file to a temporary first and rename them into place only once all are written: a
    failure leaves none of them changed (short of a failing rename, which needs a vanished directory)."""
    staged: list[tuple[Path, str]] = []
    current = None
    try:
        for target, write in files.items():
            current, shown = _file_target(target)  # the temporary file is the probe of `check_writable`
            staged.append((current, _write_temporary(current, write, shown, durable)))
        for current, tmp in staged:
            mode = os.stat(current).st_mode & 0o7777 if current.exists() else _default_mode()
            os.chmod(tmp, mode)
            os.replace(tmp, current)
    except BaseException as e:
        for _, tmp in staged:
            try:
                os.unlink(tmp)
            except FileNotFoundError:  # already renamed into place
                pass
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(e.errno, e.strerror, str(current)) from e
        raise
    for directory in {path.parent if str(path.parent) else Path(".") for path, _ in staged} if durable else ():
        _fsync_dir(directory)
    return [path for path, _ in staged]


def _write_temporary(path: Path, write: Callable[[IO[bytes]], None], shown: str, durable: bool = True) -> str:
    """A flushed and fsync'ed temporary file beside `path` holding what `write` wrote; its name.
    `shown`: the path as errors name it."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise WriteError(e.errno, e.strerror, shown) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
    except BaseException as e:
        os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(e.errno, e.strerror, shown) from e
        raise
    return tmp


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> Path:
    return atomic_write(path, lambda f: f.write(data), durable)


def atomic_write_text(path: str | os.PathLike, text: str, durable: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), durable)


def rewrite_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Replace the contents of the existing file `path` with `data`: atomically by rename, unless the file
    has other hard links. A rename gives `path` a new file and leaves the other names on the old one, so
    such a file is written in place, as black and rustfmt write every file: its old contents are first
    kept in a backup beside it (`.<name>.<random>.tmp`, fsync'ed), SIGINT and SIGTERM wait while the
    new contents are written and fsync'ed, and a failed write (a full disk) puts the old contents back.
    Only a crash in the middle of the write leaves the file torn, with the backup beside it."""
    target = Path(path)
    if os.stat(target).st_nlink <= 1:
        return atomic_write_bytes(target, data)
    before = target.read_bytes()
    backup = _write_temporary(target, lambda f: f.write(before), str(path))
    try:
        with _signals_held():
            _overwrite(target, data)
    except OSError as e:
        try:
            with _signals_held():
                _overwrite(target, before)
        except OSError:
            raise WriteError(e.errno, f"{e.strerror}; its contents before are in `{backup}`", str(path)) from None
        os.unlink(backup)
        raise WriteError(e.errno, f"{e.strerror} (the file is unchanged)", str(path)) from None
    os.unlink(backup)
    return target


def _overwrite(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        _write_all(fd, data)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _signals_held():
    """SIGINT and SIGTERM delivered only at the end of the block (its Python handlers run then)."""
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def atomic_save_npz(path: str | os.PathLike, arrays: Mapping[str, object],
                    then: Callable[[], None] = lambda: None) -> Path:
    """`numpy.savez(path, **arrays)`, atomically. Keys may contain `/` and `.` (`param/dense.W`). `then`
    is called once the arrays are in the temporary file, before it is renamed (fault-injection tests)."""
    import numpy as np  # the only non-stdlib import here, kept local so the module stays light

    def write(f: IO[bytes]) -> None:
        np.savez(f, **arrays)
        then()

    return atomic_write(path, write)


def append_bytes(path: str | os.PathLike, data: bytes, between: Callable[[], None] = lambda: None) -> None:
    """Append `data` to `path` (created if missing) with `O_APPEND`, in two halves with `between()` called
    between them (fault-injection tests: a kill there leaves a torn last line)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            half = len(data) // 2
            _write_all(fd, data[:half])
            between()
            _write_all(fd, data[half:])
        finally:
            os.close(fd)
    except OSError as e:
        raise WriteError(e.errno, e.strerror, str(path)) from None


def _write_all(fd: int, data: bytes) -> None:
    """`os.write` until all of `data` is written (a write may take part of it)."""
    while data:
        data = data[os.write(fd, data):]
