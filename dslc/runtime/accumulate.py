"""Training steps through the split graphs (`dslc build --split`): each global batch's gradient is
computed in micro-batches, optionally sharded over the ranks of an MPI communicator, and applied once.

For one objective and a global batch of B rows, rank r of N takes rows [B·r/N, B·(r+1)/N) of it and
cuts them into `accumulate` micro-batches m of b_m rows (sizes differ by at most one; empty ones are
skipped). Then

    g      = Σ_m b_m · grad(m) / Σ_m b_m          (sums over every micro-batch of every rank: one Allreduce)
    loss   = Σ_m b_m · loss(m) / Σ_m b_m          (metrics and next buffers alike; counts such as a
                                                   confusion matrix, `"reduce": "sum"`, are summed)
    params, state = apply(params, g, state, lr)   (the same on every rank)

which is the step on the whole batch exactly when the loss is a mean over the batch's rows (every
built-in loss is; a penalty such as `l2(weights)` is the same in every micro-batch, and the weights
sum to 1). Sums are taken in float64. Batch statistics are the exception: `batch_norm` normalizes each
micro-batch by its own statistics, and its running statistics become the weighted mean of the
micro-batches' (as in data-parallel PyTorch without SyncBatchNorm).

Dropout: micro-batch m of the step (counting over ranks, r·accumulate + j) draws its masks from seed
`(step_seed + m · 0x9E3779B1) % 2**31`; micro-batch 0 uses the step's own seed, so one micro-batch on
one rank is the fused step. With several, the masks differ from the fused step's (each micro-batch's
rows get fresh masks, as fresh as the fused step's, but not the same ones).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from dslc.diagnostics import DataError
from dslc.runtime.session import _np_dtype, make_session, run_failure

MICRO_SEED_STRIDE = 0x9E3779B1


def split_graph_keys(manifest: dict, train_keys: list[str]) -> list[tuple[str, str]]:
    """(grad key, apply key) of each training graph; `DataError` when the program was built without them."""
    pairs = [("grad" + k[len("train"):], "apply" + k[len("train"):]) for k in train_keys]
    if not all(g in manifest["graphs"] and a in manifest["graphs"] for g, a in pairs):
        raise DataError("gradient accumulation and data-parallel training need the split training graphs",
                        hint="compile with `dslc.compile(path, split=True)` (the command line does this itself)")
    return pairs


def shard(n: int, rank: int, size: int) -> slice:
    """Rank `rank`'s rows of a global batch of `n` rows."""
    return slice(n * rank // size, n * (rank + 1) // size)


class SplitSteps:
    """The training loop's trainer (as `TrainStep`/`SharedSteps`) over split graphs: `step(batch, hypers)`
    with the whole global batch on every rank and `hypers[k]` for objective k; values kept on the host
    (they cross the all-reduce there anyway)."""

    def __init__(self, program, train_keys: list[str], device: str = "cpu", threads: int | None = None, *,
                 initial: Mapping[str, np.ndarray], accumulate: int = 1, comm=None):
        manifest = program.manifest
        self.accumulate = accumulate
        self.comm = comm
        self.rank, self.size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
        self.objectives = []
        specs: dict[str, dict] = {}
        for grad_key, apply_key in split_graph_keys(manifest, train_keys):
            grad, apply = manifest["graphs"][grad_key], manifest["graphs"][apply_key]
            scalars = [t["name"] for t in grad["outputs"]]
            # one float64 vector per step: rows, then Σ b·output (Σ output for counts, such as a confusion
            # matrix: `"reduce": "sum"`), Σ b·gradient, Σ b·next buffer — one Allreduce
            layout, offset = {}, 1
            for name, shape in [(t["name"], tuple(t["shape"])) for t in grad["outputs"]] + [
                    (t["name"], tuple(t["shape"])) for t in grad["grads"]] + [
                    (t["next"], tuple(t["shape"])) for t in grad.get("buffers", [])]:
                layout[name] = (offset, offset + math.prod(shape), shape)
                offset += math.prod(shape)
            self.objectives.append({
                "name": grad.get("objective", ""), "grad": grad, "apply": apply, "scalars": scalars,
                "grad_session": make_session(program.graphs[grad_key], device, threads),
                "apply_session": make_session(program.graphs[apply_key], device, threads),
                "layout": layout, "size": offset,
                "counts": {t["name"] for t in grad["outputs"] if t.get("reduce") == "sum"},
                "dtypes": {t["name"]: _np_dtype(t) for t in grad["grads"]} | {
                    t["next"]: _np_dtype(t) for t in grad.get("buffers", [])},
            })
            for group in (grad["params"], grad.get("frozen", []), grad.get("buffers", []), apply.get("state", [])):
                for t in group:
                    specs.setdefault(t["name"], t)
        self._specs = specs
        several = len(self.objectives) > 1
        self.output_names = [f"{o['name']}.{name}" if several else name for o in self.objectives for name in o["scalars"]]
        self.set_values(initial)

    def set_values(self, values: Mapping[str, np.ndarray]) -> None:
        missing = sorted(set(self._specs) - set(values))
        if missing:
            raise DataError(f"parameter/state values do not match the model: missing {missing}")
        for name, t in self._specs.items():
            value = np.asarray(values[name])
            if value.dtype != _np_dtype(t) or list(value.shape) != list(t["shape"]):
                raise DataError(f"`{name}` is `{value.dtype}{list(value.shape)}`, the model expects "
                                f"`{_np_dtype(t)}{list(t['shape'])}`")
        self._store = {name: np.array(values[name], copy=True) for name in self._specs}

    def get_values(self) -> dict[str, np.ndarray]:
        return {name: value.copy() for name, value in self._store.items()}

    def ortvalues(self) -> dict:
        import onnxruntime as ort

        return {name: ort.OrtValue.ortvalue_from_numpy(value) for name, value in self._store.items()}

    def step(self, batch: Mapping[str, np.ndarray], hypers: list[Mapping[str, object]]) -> dict[str, float]:
        results = {}
        several = len(self.objectives) > 1
        for objective, hyper in zip(self.objectives, hypers):
            scalars = self._objective_step(objective, batch, hyper)
            results.update({f"{objective['name']}.{k}" if several else k: v for k, v in scalars.items()})
        return results

    def _objective_step(self, objective: dict, batch: Mapping[str, np.ndarray], hyper: Mapping[str, object]):
        grad, apply = objective["grad"], objective["apply"]
        n = len(next(iter(batch.values())))
        mine = shard(n, self.rank, self.size)
        rows = np.arange(n)[mine]
        micro = [m for m in np.array_split(rows, self.accumulate) if len(m)]
        buffers = grad.get("buffers", [])
        layout, dtypes = objective["layout"], objective["dtypes"]
        total = np.zeros(objective["size"])
        seed_spec = next((t for t in grad.get("hyper", []) if t.get("kind") == "seed"), None)
        fixed = {t["name"]: self._store[t["name"]] for t in grad["params"] + grad.get("frozen", []) + buffers}
        names = list(layout)
        for j, idx in enumerate(micro):
            feeds = {t["name"]: batch[t["name"]][idx] for t in grad["inputs"]}
            feeds.update(fixed)
            for t in grad.get("hyper", []):
                value = hyper.get(t["name"], t["default"])
                if t is seed_spec:
                    value = (int(value) + (self.rank * self.accumulate + j) * MICRO_SEED_STRIDE) % 2**31
                feeds[t["name"]] = np.asarray(value, dtype=_np_dtype(t))
            outputs = _run(objective["grad_session"], names, feeds, "the gradient graph")
            total[0] += len(idx)
            for name, value in zip(names, outputs):
                start, stop, _ = layout[name]
                weight = 1 if name in objective["counts"] else len(idx)
                total[start:stop] += weight * value.reshape(-1).astype(np.float64)
        if self.comm is not None:
            from mpi4py import MPI

            self.comm.Allreduce(MPI.IN_PLACE, total, op=MPI.SUM)
        means = {name: (total[start:stop] / (1 if name in objective["counts"] else total[0])).reshape(shape)
                 for name, (start, stop, shape) in layout.items()}
        feeds = {t["name"]: self._store[t["name"]] for t in apply["params"] + apply.get("state", [])}
        feeds.update({t["name"]: means[t["name"]].astype(dtypes[t["name"]]) for t in apply["grads"]})
        for t in apply.get("hyper", []):
            feeds[t["name"]] = np.asarray(hyper.get(t["name"], t["default"]), dtype=_np_dtype(t))
        carried = apply["params"] + apply.get("state", [])
        outputs = _run(objective["apply_session"], [t["next"] for t in carried], feeds, "the update graph")
        for t, value in zip(carried, outputs):
            self._store[t["name"]] = value
        for t in buffers:
            value = means[t["next"]]
            self._store[t["name"]] = np.rint(value).astype(dtypes[t["next"]]) if dtypes[t["next"]].kind in "iu" \
                else value.astype(dtypes[t["next"]])
        return {name: float(means[name]) if means[name].ndim == 0 else means[name] for name in objective["scalars"]}


def _run(session, names: list[str], feeds: dict, what: str) -> list[np.ndarray]:
    try:
        return session.run(names, feeds)
    except Exception as e:  # noqa: BLE001 - the graph is checked at compile time: a failure here comes from the data
        raise run_failure(e, what) from None
