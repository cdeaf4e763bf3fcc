"""Row lookups and their adjoint: `gather_rows` (an embedding lookup) and `scatter_add_rows` (its gradient).

Indices are integers in `[0, rows)`. ONNX Runtime's `Gather` rejects an index outside `[-rows, rows)`
with a run-time error (it cannot be checked at compile time: the ids are data); a negative index in
`[-rows, 0)` counts from the end, as in numpy, both in the lookup and in its gradient.

The gradient is a scatter-add: the update rows sorted by id (`TopK`), their running sums (`CumSum`, in
float64) and each id's sum the difference of the running sums at the ends of its run of rows. Measured
on ORT 1.32 (N = B·T = 4000 ids into 1000 rows): for rows of 128 values it takes 1.4 ms against
`ScatterElements(reduction="add")`'s 2.2 on one thread (the scatter stays on one thread whatever the
pool); for rows of 384 (the GRU's input projection, `fold_lookup`) the GRU workload's training step is
0.95x with it. Summing in float64 makes it exact to float32 rounding, where `ScatterElements` adds
float32 rows one after another (relative errors ~2e-6 over 20,000 rows into 3 ids). Rejected: a float32
`CumSum` (2.7x faster than `ScatterElements`, but a difference of running sums in float32 loses the
small sums after large ones: relative errors of 5e-5); `ScatterND(reduction="add")` (~20x faster but
wrong with more than one thread: its parallel kernel races on repeated ids); a one-hot matrix product
(exact, but O(rows·N·columns): 7 ms for 64 columns, 65 ms for 10,000 rows × 128).
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
        rows = table.type.shape[0]
        if g.op == "concat" and g.attrs["axis"] in (-1, g.type.rank - 1) and table.type.rank >= 2:
            # a gradient joined from column blocks (the GRU's input projections): each block scattered
            # on its own and the tables' columns joined, rows × columns instead of lookups × columns
            return [b.concat(*(b.scatter_add_rows(ids, part, rows=rows) for part in g.inputs), axis=-1), None]
        return [b.scatter_add_rows(ids, g, rows=rows), None]


@op("scatter_add_rows", rows=REQUIRED)
class ScatterAddRows(OpDef):
    """y = zeros `[rows, d...]` with y[ids[i...]] += updates[i...] for every index (repeated ids add up);
    `updates` has shape `ids.shape + [d...]`. Sorted running sums (module docstring)."""

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
        # the update rows sorted by id, their running sums in float64, and each id's sum the difference
        # of the running sums at the ends of its run: a sort, a gather and a scan, where ScatterElements
        # adds one element at a time on one thread (module docstring)
        row = updates.type.shape[ids.type.rank:]
        width = int(np.prod(row, dtype=np.int64))
        runs = e.cached(("sorted ids", ids.name, rows), lambda: _Runs(e, ids, rows))
        sorted_rows = e.node("Gather", e.node("Reshape", updates, e.int64s([-1, width])), runs.order, axis=0)
        if updates.type.dtype != "float64":
            sorted_rows = e.node("Cast", sorted_rows, to=e.onnx_dtype("float64"))
        running = e.node("CumSum", sorted_rows, e.int64s(0, scalar=True))
        total = e.node("Sub", runs.sum_before(e, running, runs.ends), runs.sum_before(e, running, runs.starts))
        if updates.type.dtype != "float64":
            total = e.node("Cast", total, to=e.onnx_dtype(updates.type.dtype))
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


class _Runs:
    """The ids of a scatter sorted: the order that sorts them, and for each table row where its run of
    ids starts and ends in that order (as the index of the run's last row before it, -1 for none). The
    scatters of one lookup's gradient blocks share them."""

    def __init__(self, e, ids, rows: int):
        if ids.type.dtype != "int64":
            ids = e.node("Cast", ids, to=e.onnx_dtype("int64"))
        # a negative id counts from the end; an id out of range wraps, so that the lookup it came from
        # (`Gather`) is the node that fails, whatever order a runtime runs the step's nodes in
        flat = e.node("Mod", e.node("Reshape", ids, e.int64s([-1])), e.int64s(rows, scalar=True))
        ones = e.node("Expand", e.int64s([1]), e.node("Shape", flat))
        # TopK's k as a value rather than a shape: tract cannot run a TopK whose k is a symbolic dimension.
        # The ids sorted as int32 (they lie below `rows`): tract 0.23 holds an int64 that a Cast made (int32
        # ids, a binary confusion matrix's pairs) in its type for symbolic sizes, which its TopK refuses to
        # sort ("TDim is not a number")
        keys = e.node("Cast", flat, to=e.onnx_dtype("int32")) if rows < 2**31 else flat
        _, self.order = e.node_outputs("TopK", 2, keys, e.node("ReduceSum", ones, keepdims=1), largest=0, sorted=1)
        counts = e.node("ScatterElements", e.const(np.zeros(rows, np.int64)), flat, ones, axis=0, reduction="add")
        ends = e.node("CumSum", counts, e.int64s(0, scalar=True))
        self.ends, self.starts = self._last_row(e, ends), self._last_row(e, e.node("Sub", ends, counts))

    @staticmethod
    def _last_row(e, count_before):
        """(index of the last sorted row among the first `count_before[v]`, whether there is none) per row v."""
        last = e.node("Sub", count_before, e.int64s(1, scalar=True))
        return last, e.node("Unsqueeze", e.node("Equal", count_before, e.int64s(0, scalar=True)), e.int64s([1]))

    @staticmethod
    def sum_before(e, running, boundary):
        """Per table row, the running sum at `boundary` (a `_last_row`): zeros where no row precedes it."""
        last, none = boundary
        return e.node("Where", none, e.scalar(0, "float64"), e.node("Gather", running, last, axis=0))
