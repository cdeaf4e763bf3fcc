"""Named tensors in one file, read and written by the Python and the JavaScript drivers alike.

Layout: a little-endian uint32 header length, the JSON header `[{"name", "dtype", "shape", "offset"}]`,
then each tensor's little-endian bytes at `offset` from the end of the header (8-byte aligned, so a
reader can view int64 data in place). `js/tensorfile.mjs` is the same format in JavaScript.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

DTYPES = ("float32", "float64", "int64", "int32", "bool")


def write(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, offset = [], [], 0
    for name, value in tensors.items():
        value = np.ascontiguousarray(value)
        if value.dtype.name not in DTYPES:
            raise TypeError(f"{name}: dtype {value.dtype} is not one of {DTYPES}")
        blob = value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes()
        header.append({"name": name, "dtype": value.dtype.name, "shape": list(value.shape), "offset": offset})
        blobs.append(blob + b"\0" * (-len(blob) % 8))
        offset += len(blobs[-1])
    head = json.dumps(header).encode()
    head += b" " * (-(len(head) + 4) % 8)
    Path(path).write_bytes(struct.pack("<I", len(head)) + head + b"".join(blobs))


def read(path: Path) -> dict[str, np.ndarray]:
    raw = Path(path).read_bytes()
    (size,) = struct.unpack_from("<I", raw)
    start = 4 + size
    tensors = {}
    for t in json.loads(raw[4:start]):
        dtype = np.dtype(t["dtype"]).newbyteorder("<")
        count = int(np.prod(t["shape"], dtype=np.int64))
        flat = np.frombuffer(raw, dtype, count, start + t["offset"])
        tensors[t["name"]] = flat.reshape(t["shape"]).astype(dtype.newbyteorder("="))
    return tensors
