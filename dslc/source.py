"""Source text and spans: byte offsets into a file, turned into line/column only when shown."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

BOM = "\ufeff"
# A model file is a few kilobytes; the limit keeps a mistaken argument (a data file, a disk image) from
# being read whole
MAX_SOURCE_BYTES = 1 << 20


class UnreadableSource(OSError):
    """A path that names no model text: not a regular file (a FIFO, a device, a folder), or too large."""


def read_source_bytes(path: str | Path) -> bytes:
    """The bytes of a regular file of at most `MAX_SOURCE_BYTES`. Opened without blocking, so that a FIFO
    is refused rather than waited on; raises `UnreadableSource` (an `OSError`) naming the problem."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableSource(0, f"not a regular file ({_file_kind(info.st_mode)})", str(path))
        if info.st_size > MAX_SOURCE_BYTES:
            raise UnreadableSource(0, f"the file has {info.st_size:,} bytes; a model file has at most "
                                      f"{MAX_SOURCE_BYTES:,}", str(path))
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_SOURCE_BYTES + 1)  # a file that grows while being read stops here too
    finally:
        os.close(fd)
    if len(data) > MAX_SOURCE_BYTES:
        raise UnreadableSource(0, f"the file has more than {MAX_SOURCE_BYTES:,} bytes", str(path))
    return data


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a file")


@dataclass(frozen=True)
class SourceFile:
    path: str
    text: str
    _line_starts: tuple[int, ...] = field(default=(), compare=False, repr=False)

    @staticmethod
    def read(path: str | Path) -> "SourceFile":
        """The file's text; raises `NotUtf8` at the first byte that is not UTF-8, `UnreadableSource` for
        what is not a regular file of at most `MAX_SOURCE_BYTES`."""
        data = read_source_bytes(path)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise NotUtf8(str(path), data, e.start) from None
        return SourceFile.from_text(str(path), text)

    @staticmethod
    def from_text(path: str, text: str) -> "SourceFile":
        """`text` as a source file; a leading byte-order mark is not part of it."""
        text = text.removeprefix(BOM)
        starts = [0]
        for i, ch in enumerate(text):
            if ch == "\n":
                starts.append(i + 1)
        return SourceFile(path, text, tuple(starts))

    def line_col(self, offset: int) -> tuple[int, int]:
        """1-based line and column of a character offset."""
        lo, hi = 0, len(self._line_starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._line_starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1, offset - self._line_starts[lo] + 1

    def line_text(self, line: int) -> str:
        start = self._line_starts[line - 1]
        end = self.text.find("\n", start)
        return self.text[start:] if end < 0 else self.text[start:end]

    def span(self, start: int, end: int) -> "Span":
        return Span(self, start, end)


@dataclass(frozen=True)
class Span:
    source: SourceFile
    start: int
    end: int

    @property
    def line(self) -> int:
        return self.source.line_col(self.start)[0]

    @property
    def col(self) -> int:
        return self.source.line_col(self.start)[1]

    def to(self, other: "Span") -> "Span":
        """The span from the start of this one to the end of `other`."""
        return Span(self.source, min(self.start, other.start), max(self.end, other.end))

    def __repr__(self) -> str:
        return f"{self.source.path}:{self.line}:{self.col}"


class NotUtf8(Exception):
    """A source file that does not decode as UTF-8; `offset` is the first bad byte's position in
    `source`, a readable rendering of the file up to that line (bad bytes and control characters
    shown as U+FFFD)."""

    def __init__(self, path: str, data: bytes, bad_byte: int):
        prefix = data[:bad_byte].decode("utf-8").removeprefix(BOM)
        line_start = prefix.rfind("\n") + 1
        # the line of the bad byte, up to a little past it: a binary file may have no newline for megabytes
        rest = data[bad_byte:bad_byte + 40].split(b"\n", 1)[0].decode("utf-8", errors="replace")
        shown = "".join(c if c.isprintable() or c == "\t" else "\ufffd" for c in prefix[line_start:] + rest)
        self.source = SourceFile.from_text(path, prefix[:line_start] + shown)
        self.offset = len(prefix)
        self.byte = data[bad_byte]
        super().__init__(f"{path}: byte {bad_byte} is not UTF-8")
