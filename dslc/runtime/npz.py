"""Reading `.npz` archives from untrusted files, one member at a time.

`numpy.load` trusts an archive more than dslc may: it allocates whatever shape a member's header
announces before reading a byte (a `(10**12, 2)` header asks for 7 TiB), hands back the raw bytes of a
member that is not an `.npy` array, and blocks forever on a FIFO. `NpzArchive` instead

- opens only regular files (a FIFO, a device or a directory is refused before anything is read);
- reads the central directory only; a member is decompressed when it is read, so a command never
  inflates the members it does not use;
- parses each member's `.npy` header (at most `MAX_HEADER` bytes) and checks it before allocating:
  a shape of non-negative integers, a dtype without Python objects, and a size no larger than the
  bytes the archive really holds for it (stored members: their size in the file; compressed ones:
  at most `MAX_DEFLATE_RATIO` times it, the most deflate can achieve), and no larger than the
  machine's physical memory. Allocations are therefore bounded by the file's size and the memory.

Every refusal is a `DataError` naming the file and the member.
"""
from __future__ import annotations

import contextlib
import os
import stat
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from typing import IO

import numpy as np
import numpy.lib.format as npy

from dslc.diagnostics import DataError

NPY_MAGIC = b"\x93NUMPY"
MAX_HEADER = 10_000  # numpy's own default limit for the header text
MAX_DEFLATE_RATIO = 1032  # deflate's largest possible expansion (258-byte matches in 2-bit codes)


def open_regular_file(path: str | os.PathLike, what: str, hint: str = "pass the path of an `.npz` file") -> IO[bytes]:
    """`path` opened for reading in binary mode, or `DataError` unless it is a regular file. The open
    does not block (`O_NONBLOCK`), so a FIFO without a writer is refused instead of waited on."""
    path = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise DataError(f"cannot read `{path}`: {e.strerror or e}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise DataError(f"cannot read {what} `{path}`: it is {_file_kind(mode)}, not a regular file", hint=hint)
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _file_kind(mode: int) -> str:
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]
    return next((kind for test, kind in kinds if test(mode)), "a special file")


class NpzArchive(Mapping):
    """The arrays of an `.npz` file as a read-only mapping; `archive[name]` reads and checks one member.
    Use as a context manager (the file stays open until the block ends)."""

    def __init__(self, path: str | os.PathLike, what: str, hint: str):
        self.path, self.what, self.hint = os.fspath(path), what, hint
        self._file = open_regular_file(path, what)
        try:
            magic = self._file.read(len(NPY_MAGIC))
            # np.load would pick the format by these bytes and try unpickling anything not a zip
            if magic.startswith(NPY_MAGIC):
                self._fail("it is a single `.npy` array, expected an `.npz` archive of named arrays")
            if not magic.startswith(b"PK"):
                self._fail("not a valid `.npz` archive (" +
                           ("the file is empty" if not magic else "it is not a zip archive") + ")")
            self._file.seek(0)
            self._zip = zipfile.ZipFile(self._file)
            self._size = os.fstat(self._file.fileno()).st_size
        except (zipfile.BadZipFile, ValueError, EOFError, OSError) as e:
            self._file.close()
            self._fail(f"not a valid `.npz` archive ({type(e).__name__}: {e})")
        except BaseException:
            self._file.close()
            raise
        # numpy.savez names members `<name>.npy`; np.load serves them under `<name>`
        self._members = {info.filename.removesuffix(".npy"): info for info in self._zip.infolist()
                         if not info.is_dir()}

    def _fail(self, reason: str, member: str | None = None):
        where = f"array `{member}` in {self.what} `{self.path}`" if member else f"{self.what} `{self.path}`"
        raise DataError(f"cannot read {where}: {reason}", hint=self.hint)

    def __enter__(self) -> NpzArchive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()
        self._file.close()

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, name) -> bool:
        return name in self._members

    def header(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        """The dtype and shape member `name` announces, checked, without reading its data."""
        with self._open(name) as f:
            return self._read_header(f, name)[:2]

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._members:
            raise KeyError(name)
        with self._open(name) as f:
            dtype, shape, fortran = self._read_header(f, name)
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            memory = physical_memory()
            if memory is not None and nbytes > memory:  # Linux overcommits: np.empty would "succeed"
                self._fail(f"it holds {_size(nbytes)}, more than this machine's memory ({_size(memory)})", name)
            try:
                array = np.empty(shape[::-1] if fortran else shape, dtype)
            except MemoryError:
                self._fail(f"there is not enough memory for its {_size(nbytes)}", name)
            buffer, done = memoryview(array.reshape(-1).view(np.uint8)), 0
            while done < len(buffer):
                got = f.readinto(buffer[done:])
                if not got:
                    self._fail(f"the archive is cut short ({done:,} of {len(buffer):,} bytes)", name)
                done += got
        return array.T if fortran else array

    @contextlib.contextmanager
    def _open(self, name: str) -> Iterator[IO[bytes]]:
        try:
            member = self._zip.open(self._members[name])
        except (zipfile.BadZipFile, NotImplementedError, ValueError, RuntimeError, OSError) as e:
            self._fail(f"the archive is damaged ({type(e).__name__}: {e})", name)
        # zipfile inflates as it reads and checks the CRC-32 once a member's last byte is read, which for
        # a small member is already the header's read
        try:
            with member:
                yield member
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
            self._fail(f"the archive is damaged ({type(e).__name__}: {e})", name)

    def _read_header(self, f: IO[bytes], name: str) -> tuple[np.dtype, tuple[int, ...], bool]:
        info = self._members[name]
        magic = f.read(len(NPY_MAGIC) + 2)
        if not magic.startswith(NPY_MAGIC) or len(magic) < len(NPY_MAGIC) + 2:
            self._fail("it is not a `.npy` array (save the arrays with `numpy.savez`)", name)
        readers = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
        if (magic[-2], magic[-1]) not in readers:
            self._fail(f"its `.npy` format version {magic[-2]}.{magic[-1]} is not supported", name)
        try:
            with warnings.catch_warnings():  # numpy warns before re-parsing headers it cannot read
                warnings.simplefilter("ignore")
                shape, fortran, dtype = readers[magic[-2], magic[-1]](f, max_header_size=MAX_HEADER)
        except Exception:  # noqa: BLE001 - numpy's parser raises ValueError, EOFError, tokenize errors...
            self._fail("its `.npy` header is malformed (not a dictionary of `descr`, `fortran_order` and "
                       "`shape`, or cut short)", name)
        if any(d < 0 for d in shape):
            self._fail(f"its `.npy` header gives the negative shape {shape}", name)
        if dtype.hasobject:
            self._fail("it holds Python objects, which dslc does not load (pickles can run code)", name)
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        header_end = f.tell()
        held = info.file_size - header_end
        bound = info.compress_size * (1 if info.compress_type == zipfile.ZIP_STORED else MAX_DEFLATE_RATIO)
        if nbytes > held or info.file_size > bound or info.compress_size > self._size:
            self._fail(f"its header announces `{dtype}` of shape {shape} ({_size(nbytes)}), but the archive holds "
                       f"{_size(max(min(held, bound), 0))} for it (a damaged or crafted file)", name)
        return dtype, shape, fortran


def physical_memory() -> int | None:
    """The machine's physical memory in bytes, where the OS says (Linux, macOS)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _size(nbytes: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes:,} bytes"
