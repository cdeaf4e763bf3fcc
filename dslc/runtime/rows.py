"""Data read by rows, as batches need them: a memory-mapped array converted to the model's dtype one
batch at a time, and a subset of rows (the validation split) taken without copying the data.

A `RowView` stands where the training loop, validation and prediction expect an array: it has
`shape`, `dtype` and `len`, and indexing its rows (`view[idx]`, `view[a:b]`) reads only those rows of
the file and returns them converted. So a folder of `.npy` files larger than memory trains whatever
their dtype and with `--val-split`.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

BLOCK_BYTES = 16 * 2**20  # rows read at once by whole-array passes (checks, the data's fingerprint)


class RowView:
    """Rows `rows` of `base` (all when None; a sorted index keeps the data's order) as `dtype`."""

    def __init__(self, base, dtype=None, rows: np.ndarray | None = None):
        if isinstance(base, RowView):  # a split of a converted array: one view on the file
            rows = base.rows if rows is None else (rows if base.rows is None else base.rows[rows])
            dtype, base = dtype or base.dtype, base.base
        self.base, self.rows = base, rows
        self.dtype = np.dtype(dtype or base.dtype)
        self.shape = (len(base) if rows is None else len(rows), *base.shape[1:])
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        picked = self.base[key] if self.rows is None else self.base[self.rows[key]]
        return np.ascontiguousarray(picked, dtype=self.dtype)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:  # the whole array: for small data only
        return np.asarray(self[:], dtype=dtype)

    def __repr__(self) -> str:
        return f"RowView({self.shape}, {self.dtype}, of {type(self.base).__name__})"


def row_blocks(array, block_bytes: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) of `array` in blocks of about `block_bytes` as they are in memory: an array
    already in memory whole, a memory-mapped one or a `RowView` a block at a time (read, then freed)."""
    if not isinstance(array, (np.memmap, RowView)) or array.ndim == 0:
        yield 0, np.asarray(array)
        return
    row_bytes = max(1, int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize)
    step = max(1, (block_bytes or BLOCK_BYTES) // row_bytes)
    for start in range(0, len(array), step):
        yield start, np.asarray(array[start:start + step])


def take_rows(array, rows: np.ndarray):
    """Rows `rows` (sorted) of `array`: copied from an array in memory, a `RowView` of a mapped one."""
    if isinstance(array, (np.memmap, RowView)):
        return RowView(array, rows=rows)
    return array[rows]
