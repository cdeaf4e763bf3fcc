"""Writing an `.npz` archive with little Python: what `numpy.savez` writes (a zip of stored, uncompressed
`<name>.npy` members, each an `.npy` header and the array's bytes), for the checkpoint a run writes after
every epoch.

`numpy.savez` goes through `zipfile`, member by member (a `ZipInfo`, a zip64 header rewritten after the data,
an `.npy` header formatted anew): 0.50-0.55 ms of Python for digits' 20 arrays, on the thread that saves
while the next epoch trains, holding the interpreter lock the training thread needs between its steps.
`write_npz` packs the zip headers itself and keeps each `.npy` header by dtype and shape (a run writes the
same ones every epoch). The archive is a plain zip: `numpy.load`, `zipfile` and `dslc.runtime.npz` read it
as they read `numpy.savez`'s, member for member (the zip records the same names, sizes and CRCs; only
`numpy.savez`'s zip64 extra fields are absent, which archives under 4 GiB do not need).
"""
from __future__ import annotations

import functools
import io
import struct
import time
import zlib
from collections.abc import Mapping
from typing import IO

import numpy as np
import numpy.lib.format as npy

ZIP32_LIMIT = 0xFFFF_FFFF  # sizes and offsets beyond this need zip64: `numpy.savez` writes those
_LOCAL = struct.Struct("<IHHHHHIIIHH")  # local file header
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # central directory entry
_END = struct.Struct("<IHHHHIIH")  # end of central directory
_VERSION = 20  # zip 2.0: stored members, as `zipfile` writes without zip64
_MADE_BY = 3 << 8 | _VERSION  # on Unix, as `zipfile` records
_MODE = 0o600 << 16  # the permissions `zipfile.ZipFile.open(name, "w")` records
_UTF8_NAME = 0x800  # general-purpose flag bit 11: the name is UTF-8 (else readers take it as cp437)


@functools.lru_cache(maxsize=4096)
def _npy_header(dtype: np.dtype, shape: tuple[int, ...], fortran: bool) -> bytes:
    """The `.npy` header (format 1.0, padded to 64 bytes) `numpy.save` writes for such an array."""
    out = io.BytesIO()
    npy.write_array_header_1_0(out, {"descr": npy.dtype_to_descr(dtype), "fortran_order": fortran, "shape": shape})
    return out.getvalue()


def _npy_parts(value) -> tuple[bytes, np.ndarray]:
    """The `.npy` header and the bytes (as a flat uint8 array) `numpy.save` writes for `value`: in Fortran
    order for an array only Fortran-contiguous, else in C order."""
    a = np.asanyarray(value)
    fortran = a.flags.f_contiguous and not a.flags.c_contiguous
    flat = a.T if fortran else a if a.flags.c_contiguous else np.ascontiguousarray(a)
    return _npy_header(a.dtype, a.shape, fortran), flat.reshape(-1).view(np.uint8)


def _dos_time(seconds: float) -> tuple[int, int]:
    t = time.localtime(seconds)
    return (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2), ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday


def write_npz(f: IO[bytes], arrays: Mapping[str, object]) -> None:
    """`numpy.savez(f, **arrays)`: member `<name>.npy` holds `np.asarray(arrays[name])`. Arrays of Python
    objects, or archives of 4 GiB or more, are written by `numpy.savez` itself."""
    values = {name: np.asanyarray(value) for name, value in arrays.items()}
    if any(a.dtype.hasobject for a in values.values()) or len(values) >= 0xFFFF or \
            sum(a.nbytes + 4096 for a in values.values()) >= ZIP32_LIMIT:
        np.savez(f, **arrays)
        return
    clock, date = _dos_time(time.time())
    central, offset = [], 0
    for name, value in values.items():
        header, data = _npy_parts(value)
        crc = zlib.crc32(data, zlib.crc32(header))
        size = len(header) + len(data)
        text = f"{name}.npy"
        member = text.encode()
        flags = 0 if text.isascii() else _UTF8_NAME  # a layer may be named in any script
        f.write(_LOCAL.pack(0x04034B50, _VERSION, flags, 0, clock, date, crc, size, size, len(member), 0) + member
                + header)
        f.write(data)
        central.append(_CENTRAL.pack(0x02014B50, _MADE_BY, _VERSION, flags, 0, clock, date, crc, size, size,
                                     len(member), 0, 0, 0, 0, _MODE, offset) + member)
        offset += _LOCAL.size + len(member) + size
    directory = b"".join(central)
    f.write(directory + _END.pack(0x06054B50, 0, 0, len(central), len(central), len(directory), offset, 0))
