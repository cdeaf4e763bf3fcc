"""Tensor types with symbolic dimensions: `f32[B, 784]`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

Dim = Union[int, str]  # a size, or a symbol such as "B"

# IR dtype name -> (short name used in .dl files and messages, numpy dtype)
DTYPES = {
    "float32": ("f32", np.float32),
    "float64": ("f64", np.float64),
    "int32": ("i32", np.int32),
    "int64": ("i64", np.int64),
    "bool": ("bool", np.bool_),
}
SHORT_TO_DTYPE = {short: name for name, (short, _) in DTYPES.items()}
FLOAT_DTYPES = ("float32", "float64")
INT_DTYPES = ("int32", "int64")


def numpy_dtype(dtype: str) -> np.dtype:
    return np.dtype(DTYPES[dtype][1])


def dtype_of_numpy(dt: np.dtype) -> str:
    for name, (_, np_dt) in DTYPES.items():
        if np.dtype(np_dt) == np.dtype(dt):
            return name
    raise ValueError(f"unsupported numpy dtype {dt}")


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: tuple[Dim, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def with_shape(self, shape) -> "TensorType":
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: str) -> "TensorType":
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        return f"{DTYPES[self.dtype][0]}[{', '.join(str(d) for d in self.shape)}]"


def scalar(dtype: str) -> TensorType:
    return TensorType(dtype, ())


def broadcast_shapes(a: tuple[Dim, ...], b: tuple[Dim, ...]) -> tuple[Dim, ...] | None:
    """numpy broadcasting; a symbol only matches itself or 1. None when incompatible."""
    out = []
    for i in range(max(len(a), len(b))):
        da = a[len(a) - 1 - i] if i < len(a) else 1
        db = b[len(b) - 1 - i] if i < len(b) else 1
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            return None
    return tuple(reversed(out))


def fits(number: int | float, dtype: str) -> bool:
    """Whether a constant of `dtype` holds `number` exactly (integers) or without overflow (floats)."""
    if dtype in INT_DTYPES:
        info = np.iinfo(numpy_dtype(dtype))
        return float(number).is_integer() and info.min <= number <= info.max
    return dtype not in FLOAT_DTYPES or abs(number) <= float(np.finfo(numpy_dtype(dtype)).max)


def normalize_axis(axis: int, rank: int) -> int | None:
    if -rank <= axis < rank:
        return axis % rank
    return None


def num_elements(shape: tuple[Dim, ...]) -> int | None:
    n = 1
    for d in shape:
        if not isinstance(d, int):
            return None
        n *= d
    return n
