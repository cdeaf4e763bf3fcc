"""The values of an init graph read straight from the protobuf wire format, without importing onnx
(0.7–1.4 s here): what `dslc train` of a cached program needs to start (`compile_cache`).

Only the form dslc writes is read: initializers with `raw_data` of a plain numeric type, each output an
`Identity` of one. Anything else (typed data fields, `Constant` nodes, external data, inputs) gives None,
and the caller reads the model with onnx (`weights.read_init_graph`), which also explains what is wrong.
Field numbers are those of onnx.proto3 (ModelProto.graph = 7, metadata_props = 14 of
StringStringEntryProto key = 1, value = 2; GraphProto.node = 1, initializer = 5,
input = 11, output = 12; NodeProto.input = 1, output = 2, op_type = 4; TensorProto.dims = 1,
data_type = 2, name = 8, raw_data = 9, data_location = 14; ValueInfoProto.name = 1).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# TensorProto.DataType -> numpy dtype, little-endian as raw_data is
_DTYPES = {1: "<f4", 2: "u1", 3: "i1", 4: "<u2", 5: "<i2", 6: "<i4", 7: "<i8", 9: "?", 10: "<f2", 11: "<f8",
           12: "<u4", 13: "<u8"}
_TENSOR_DATA_FIELDS = {4, 5, 6, 7, 10, 11, 13}  # float/int32/string/int64/double/uint64 data, external_data


class _Unsupported(Exception):
    """A model this reader leaves to onnx."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _Unsupported("truncated")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def fields(buf: memoryview) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of each field of a message: an int for varints, a memoryview for
    length-delimited fields, bytes for fixed-size ones."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise _Unsupported("truncated")
            value, pos = buf[pos:pos + size], pos + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, pos = bytes(buf[pos:pos + width]), pos + width
        else:
            raise _Unsupported(f"wire type {wire}")
        yield number, wire, value


def _tensor(buf: memoryview) -> tuple[str, np.ndarray]:
    dims: list[int] = []
    dtype = name = raw = None
    for number, wire, value in fields(buf):
        if number == 1 and wire == 0:
            dims.append(value)
        elif number == 1 and wire == 2:  # packed dims
            pos = 0
            while pos < len(value):
                dim, pos = _varint(value, pos)
                dims.append(dim)
        elif number == 2:
            dtype = _DTYPES.get(value)
        elif number == 8:
            name = bytes(value).decode("utf-8")
        elif number == 9:
            raw = value
        elif number in _TENSOR_DATA_FIELDS or (number == 14 and value != 0):
            raise _Unsupported("tensor data outside raw_data")
    if dtype is None or name is None or raw is None:
        raise _Unsupported("a tensor this reader does not know")
    array = np.frombuffer(raw, dtype=dtype)
    if array.size != int(np.prod(dims, dtype=np.int64)):
        raise _Unsupported("raw_data of the wrong size")
    return name, array.reshape(dims).astype(np.dtype(dtype).newbyteorder("="), copy=True)


def _strings(buf: memoryview, number: int) -> list[str]:
    return [bytes(v).decode("utf-8") for n, _, v in fields(buf) if n == number]


def stored_init_values(model_bytes: bytes) -> dict[str, np.ndarray] | None:
    """The outputs of an init graph written as dslc writes them (see the module's docstring), by name, in
    output order; None for any other model."""
    try:
        graph = next((v for n, _, v in fields(memoryview(model_bytes)) if n == 7), None)
        if graph is None:
            return None
        values: dict[str, np.ndarray] = {}
        nodes: list[memoryview] = []  # serialized before the initializers (field order)
        outputs: list[str] = []
        for number, _, value in fields(graph):
            if number == 5:
                name, array = _tensor(value)
                values[name] = array
            elif number == 1:
                nodes.append(value)
            elif number == 11:
                return None
            elif number == 12:
                outputs.append(_strings(value, 1)[0])
        for node in nodes:
            op_type = "".join(bytes(v).decode("utf-8") for n, _, v in fields(node) if n == 4)
            inputs, produced = _strings(node, 1), _strings(node, 2)
            if op_type != "Identity" or len(inputs) != 1 or len(produced) != 1 or inputs[0] not in values:
                return None
            values[produced[0]] = values[inputs[0]]
        if not all(name in values for name in outputs):
            return None
        return {name: values[name] for name in outputs}
    except (_Unsupported, UnicodeDecodeError, IndexError, ValueError):
        return None


def stored_metadata(model_bytes: bytes) -> dict[str, str]:
    """A model's `metadata_props` (dslc's init graphs record `dslc.seed`, `dslc.lr`, ...); {} when the bytes
    are not a model this reader can walk."""
    try:
        entries = [v for n, _, v in fields(memoryview(model_bytes)) if n == 14]
        return {"".join(_strings(e, 1)): "".join(_strings(e, 2)) for e in entries}
    except (_Unsupported, UnicodeDecodeError):
        return {}
