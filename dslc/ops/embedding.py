"""Row lookups and their adjoint: `gather_rows` (an embedding lookup) and `scatter_add_rows` (its gradient).

Indices are integers in `[0, rows)`. ONNX Runtime's `Gather` rejects an index outside `[-rows, rows)`
with a run-time error (it cannot be checked at compile time: the ids are data); a negative index in
`[-rows, 0)` counts from the end, as in numpy, both in the lookup and in its gradient.

The gradient is a scatter-add, `ScatterElements(reduction="add")` (opset 16+) on the flattened table.
Measured on ORT 1.32 (N = B·T = 4000 ids, 1000 rows, 2 threads): `ScatterND(reduction="add")` is
~20x faster but wrong with more than one thread — its parallel kernel races on repeated ids (errors
of ~3 on sums of ~4 terms of size 1); a one-hot matrix product is exact but costs O(rows·N·columns)
(7 ms for 64 columns, 65 ms for 10,000 rows × 128); `ScatterElements` is exact: 2.3 ms for 128
columns flattened to one axis, 3.2 ms as rows × columns.
"""
from __future__ import annotations

import numpy as np

from dslc.ir.graph import OpError
from dslc.ir.types import INT_DTYPES, TensorType, num_elements
from dslc.ops.registry import REQUIRED, OpDef, Sample, op


def _expect_ids(ids: TensorType, what: str):
    if ids.dtype not in INT_DTYPES:
        raise OpError(f"{what} needs integer indices, got `{ids}`")


@op("gather_rows")
class GatherRows(OpDef):
    """y[i...] = table[ids[i...]]: rows of `table` (`[rows, d...]`) picked by integer `ids` of any shape;
    y has shape `ids.shape + [d...]` (ONNX Gather on axis 0)."""

    samples = [Sample(((6, 3), ("int", (4, 5), 6))), Sample(((5, 2), ("int", (2, 3, 4), 5))),
               Sample(((4, 2, 3), ("int", (3,), 4))), Sample(((3, 2), ("int", (2, 7), 3)))]

    def infer(self, table, ids):
        _expect_ids(ids, "a row lookup")
        if table.rank < 1:
            raise OpError(f"cannot look up rows of the scalar `{table}`")
        if not isinstance(table.shape[0], int):
            raise OpError(f"a row lookup needs a table with a fixed number of rows, got `{table}`")
        return table.with_shape(ids.shape + table.shape[1:])

    def lower(self, e, table, ids):
        return e.node("Gather", table, ids, axis=0)

    def evaluate(self, table, ids):
        return table[ids]

    def torch(self, T, table, ids):
        return table[ids.long()]

    def grad(self, b, g, out, table, ids):
        return [b.scatter_add_rows(ids, g, rows=table.type.shape[0]), None]


@op("scatter_add_rows", rows=REQUIRED)
class ScatterAddRows(OpDef):
    """y = zeros `[rows, d...]` with y[ids[i...]] += updates[i...] for every index (repeated ids add up);
    `updates` has shape `ids.shape + [d...]`. ONNX ScatterElements with reduction "add"."""

    samples = [Sample((("int", (4, 5), 6), (4, 5, 3)), {"rows": 6}),
               Sample((("int", (2, 3), 4), (2, 3, 2, 2)), {"rows": 4}),
               Sample((("int", (9,), 3), (9, 2)), {"rows": 3})]

    def infer(self, ids, updates, *, rows):
        _expect_ids(ids, "a row scatter")
        if updates.shape[:ids.rank] != ids.shape:
            raise OpError(f"scatter of `{updates}` at indices `{ids}`: the leading dims must be the indices' shape")
        row = updates.shape[ids.rank:]
        if num_elements(row) is None:
            raise OpError(f"scatter of `{updates}`: the row shape {list(row)} must be static")
        return updates.with_shape((rows,) + row)

    def lower(self, e, ids, updates, *, rows):
        # flat: element (i, k) of the updates goes to ids[i]·width + k of the flattened output (a
        # negative id still lands in its row counted from the end); faster than scattering rows
        row = updates.type.shape[ids.type.rank:]
        width = int(np.prod(row, dtype=np.int64))
        flat = e.int64s([-1])
        if ids.type.dtype != "int64":
            ids = e.node("Cast", ids, to=e.onnx_dtype("int64"))
        index = e.node("Add", e.node("Mul", e.node("Reshape", ids, e.int64s([-1, 1])), e.int64s(width, scalar=True)),
                       e.int64s(np.arange(width)))
        zeros = e.node("Expand", e.scalar(0, updates.type.dtype), e.int64s([rows * width]))
        total = e.node("ScatterElements", zeros, e.node("Reshape", index, flat), e.node("Reshape", updates, flat),
                       axis=0, reduction="add")
        return e.node("Reshape", total, e.int64s([rows, *row]))

    def evaluate(self, ids, updates, *, rows):
        row = updates.shape[ids.ndim:]
        out = np.zeros((rows,) + row, dtype=updates.dtype)
        np.add.at(out, ids.reshape(-1), updates.reshape((-1,) + row))
        return out

    def torch(self, T, ids, updates, *, rows):
        row = tuple(updates.shape[ids.dim():])
        flat = updates.reshape((-1,) + row)
        return flat.new_zeros((rows,) + row).index_add(0, ids.reshape(-1).long() % rows, flat)

    def grad(self, b, g, out, ids, updates, *, rows):
        return [None, b.gather_rows(g, ids)]

