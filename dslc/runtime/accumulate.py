"""Training steps through the split graphs (`dslc build --split`): each global batch's gradient is
computed in micro-batches, optionally sharded over the ranks of an MPI communicator, and applied once.

For one objective and a global batch of B rows, rank r of N takes its part of it (`shard`) and cuts
them into `accumulate` micro-batches m of b_m rows (sizes differ by at most one; empty ones are
skipped). Then

    g      = Σ_m b_m · grad(m) / Σ_m b_m          (sums over every micro-batch of every rank: one Allreduce)
    loss   = Σ_m b_m · loss(m) / Σ_m b_m          (metrics and next buffers alike; counts such as a
                                                   confusion matrix, `"reduce": "sum"`, are summed)
    params, state = apply(params, g, state, lr)   (the same on every rank)

which is the step on the whole batch exactly when the loss is a mean over the batch's rows (every
built-in loss is, but for `cross_entropy`'s class `weight`, a ratio over each micro-batch's Σ w_y; a
penalty such as `l2(weights)` is the same in every micro-batch, and the weights sum to 1). Sums are taken in float64. Batch statistics are the exception: `batch_norm` normalizes each
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
import onnxruntime as ort

from dslc.runtime.devices import make_session, parse_device
from dslc.runtime.session import _np_dtype, _run

MICRO_SEED_STRIDE = 0x9E3779B1


def split_graph_keys(manifest: dict, train_keys: list[str]) -> list[tuple[str, str]]:
    """(grad key, apply key) of each training graph; `DataError` when the program was built without them."""
    pairs = [("grad" + k[len("train"):], "apply" + k[len("train"):]) for k in train_keys]
    if not all(g in manifest["graphs"] and a in manifest["graphs"] for g, a in pairs):
        raise DataError("gradient accumulation and data-parallel training need the split training graphs",
                        hint="compile with `dslc.compile(path, split=True)` (the command line does this itself)")
    return pairs


def shard(n: int, rank: int, size: int) -> slice:
    """Rank `rank`'s rows of a global batch of `n` rows: the `rank`-th part of `numpy.array_split`'s (the
    first `n % size` ranks take a row more), as micro-batches are cut, so that `size` ranks cut every batch
    as `--accumulate size` does in one process (the same statistics for `batch_norm`, the same rows under
    each dropout seed), short last batches included."""
    rows, extra = divmod(n, size)
    start = rank * rows + min(rank, extra)
    return slice(start, start + rows + (rank < extra))


class _Binding:
    """An IO binding that binds a name again only when its value is another `OrtValue` than the one
    bound (each bind call costs a few µs of checks in Python: binding a model's every parameter on every
    run made the split step slower than plain `run`)."""

    def __init__(self, session):
        self.io = session.io_binding()
        self._inputs: dict[str, object] = {}
        self._outputs: dict[str, object] = {}

    def inputs(self, values: Mapping[str, object], names) -> None:
        for name in names:
            value = values[name]
            if self._inputs.get(name) is not value:
                self.io.bind_ortvalue_input(name, value)
                self._inputs[name] = value

    def outputs(self, values: Mapping[str, object], names) -> None:
        for name, target in names:
            value = values[name]
            if self._outputs.get(target) is not value:
                self.io.bind_ortvalue_output(target, value)
                self._outputs[target] = value


class SplitSteps:
    """The training loop's trainer (as `TrainStep`/`SharedSteps`) over split graphs: `step(batch, hypers)`
    with the whole global batch on every rank and `hypers[k]` for objective k.

    As in `TrainStep`, parameters and optimizer state stay `OrtValue`s in two sets that take turns: the
    update graph reads one and writes the other, and each graph has one IO binding per set, so a run
    binds only the micro-batch and the seed. The gradient graph writes its outputs into host arrays
    bound once, summed into the step's float64 vector; the update graph reads the mean gradients from
    host arrays bound once. Buffers (running statistics) are host arrays read through `OrtValue`s that
    share their memory, updated in place with the micro-batches' mean."""

    def __init__(self, program, train_keys: list[str], device: str = "cpu", threads: int | None = None, *,
                 initial: Mapping[str, np.ndarray], accumulate: int = 1, comm=None):
        manifest = program.manifest
        self.accumulate = accumulate
        self.comm = comm
        self.rank, self.size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
        self.device, self.device_id = parse_device(device)
        # what crosses the all-reduce: the graphs' float type (float32 halves the bytes of float64)
        self.reduce_dtype = np.dtype(manifest.get("dtype", "float32"))
        self.objectives = []
        specs: dict[str, dict] = {}
        for grad_key, apply_key in split_graph_keys(manifest, train_keys):
            grad, apply = manifest["graphs"][grad_key], manifest["graphs"][apply_key]
            # one vector per step: rows, then Σ b·output (Σ output for counts, such as a confusion
            # matrix: `"reduce": "sum"`), Σ b·gradient, Σ b·next buffer — one Allreduce
            produced = [(t["name"], t) for t in grad["outputs"]] + [(t["name"], t) for t in grad["grads"]] + [
                (t["next"], t) for t in grad.get("buffers", [])]
            layout, offset = {}, 1
            for name, t in produced:
                layout[name] = (offset, offset + math.prod(t["shape"]), tuple(t["shape"]))
                offset += math.prod(t["shape"])
            grad_session = make_session(program.graphs[grad_key], device, threads)
            apply_session = make_session(program.graphs[apply_key], device, threads)
            grad_outputs = {name: np.zeros(t["shape"], _np_dtype(t)) for name, t in produced}
            mean_grads = {t["name"]: np.zeros(t["shape"], _np_dtype(t)) for t in apply["grads"]}
            # (the gradients' names are the same in both graphs: an output of one, an input of the other)
            host_outputs = {name: ort.OrtValue.ortvalue_from_numpy(value) for name, value in grad_outputs.items()}
            host_grads = {name: ort.OrtValue.ortvalue_from_numpy(value) for name, value in mean_grads.items()}
            bindings = [(_Binding(grad_session), _Binding(apply_session)) for _ in range(2)]
            for grad_io, apply_io in bindings:
                grad_io.outputs(host_outputs, [(name, name) for name in grad_outputs])
                apply_io.inputs(host_grads, mean_grads)
            carried = apply["params"] + apply.get("state", [])
            self.objectives.append({
                "name": grad.get("objective", ""), "grad": grad, "apply": apply,
                "scalars": [t["name"] for t in grad["outputs"]],
                "grad_session": grad_session, "apply_session": apply_session, "bindings": bindings, "parity": 0,
                "grad_outputs": grad_outputs, "mean_grads": mean_grads, "host": (host_outputs, host_grads),
                "reads": [t["name"] for t in grad["params"] + grad.get("frozen", []) + grad.get("buffers", [])],
                "updates": [t["name"] for t in carried], "next": [(t["name"], t["next"]) for t in carried],
                "layout": layout, "size": offset,
                "counts": {t["name"] for t in grad["outputs"] if t.get("reduce") == "sum"},
                "seed": next((t for t in grad.get("hyper", []) if t.get("kind") == "seed"), None),
            })
            for group in (grad["params"], grad.get("frozen", []), grad.get("buffers", []), apply.get("state", [])):
                for t in group:
                    specs.setdefault(t["name"], t)
        self._specs = specs
        self._buffers = {t["name"] for o in self.objectives for t in o["grad"].get("buffers", [])}
        self._updated = {name for o in self.objectives for name in o["updates"]}
        several = len(self.objectives) > 1
        self.output_names = [f"{o['name']}.{name}" if several else name for o in self.objectives for name in o["scalars"]]
        self.set_values(initial)

    def _ortvalue(self, value: np.ndarray):
        return ort.OrtValue.ortvalue_from_numpy(value, self.device, self.device_id)

    def set_values(self, values: Mapping[str, np.ndarray]) -> None:
        missing = sorted(set(self._specs) - set(values))
        if missing:
            raise DataError(f"parameter/state values do not match the model: missing {missing}")
        for name, t in self._specs.items():
            value = np.asarray(values[name])
            if value.dtype != _np_dtype(t) or list(value.shape) != list(t["shape"]):
                raise DataError(f"`{name}` is `{value.dtype}{list(value.shape)}`, the model expects "
                                f"`{_np_dtype(t)}{list(t['shape'])}`")
        # buffers on the host (the step writes their means in place; CPU `OrtValue`s share the memory)
        self._host = {name: np.array(values[name], order="C", copy=True) for name in self._buffers}
        self._store = {name: ort.OrtValue.ortvalue_from_numpy(self._host[name]) if name in self._host
                       else self._ortvalue(np.array(values[name], order="C", copy=True)) for name in self._specs}
        self._spare = {name: ort.OrtValue.ortvalue_from_shape_and_type(
            self._specs[name]["shape"], _np_dtype(self._specs[name]), self.device, self.device_id)
            for name in self._updated}

    def get_values(self) -> dict[str, np.ndarray]:
        return {name: np.array(value.numpy(), copy=True) for name, value in self._store.items()}

    def ortvalues(self) -> dict:
        return dict(self._store)

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
        layout, outputs = objective["layout"], objective["grad_outputs"]
        total = np.zeros(objective["size"])
        grad_io, apply_io = objective["bindings"][objective["parity"]]
        grad_io.inputs(self._store, objective["reads"])
        fed = {}  # a CPU OrtValue borrows its numpy buffer: keep both alive until the run is over
        for t in grad.get("hyper", []):
            if t is not objective["seed"]:
                fed[t["name"]] = self._ortvalue(np.asarray(hyper.get(t["name"], t["default"]), dtype=_np_dtype(t)))
        for j, idx in enumerate(micro):
            contiguous = len(micro) == 1 and idx[-1] - idx[0] == len(idx) - 1
            for t in grad["inputs"]:
                fed[t["name"]] = np.ascontiguousarray(batch[t["name"]][idx[0]:idx[-1] + 1] if contiguous
                                                      else batch[t["name"]][idx])
                grad_io.io.bind_cpu_input(t["name"], fed[t["name"]])
            seed = objective["seed"]
            if seed is not None:
                value = (int(hyper.get(seed["name"], seed["default"])) + (self.rank * self.accumulate + j)
                         * MICRO_SEED_STRIDE) % 2**31
                fed[seed["name"]] = self._ortvalue(np.asarray(value, dtype=_np_dtype(seed)))
            grad_io.inputs(fed, [t["name"] for t in grad.get("hyper", [])])
            _run(objective["grad_session"], grad_io.io, "the gradient graph")
            total[0] += len(idx)
            for name, (start, stop, _) in layout.items():
                weight = 1 if name in objective["counts"] else len(idx)
                total[start:stop] += weight * outputs[name].reshape(-1).astype(np.float64)
        if self.comm is not None:
            from mpi4py import MPI

            sent = total.astype(self.reduce_dtype)  # the ranks' float64 sums rounded once, then summed
            self.comm.Allreduce(MPI.IN_PLACE, sent, op=MPI.SUM)
            total = sent.astype(np.float64)
        means = {name: (total[start:stop] / (1 if name in objective["counts"] else total[0])).reshape(shape)
                 for name, (start, stop, shape) in layout.items()}
        for name, target in objective["mean_grads"].items():
            target[...] = means[name]
        apply_io.inputs(self._store, objective["updates"])
        apply_io.outputs(self._spare, objective["next"])
        fed = {t["name"]: self._ortvalue(np.asarray(hyper.get(t["name"], t["default"]), dtype=_np_dtype(t)))
               for t in apply.get("hyper", [])}
        apply_io.inputs(fed, fed)
        _run(objective["apply_session"], apply_io.io, "the update graph")
        for name in objective["updates"]:
            self._store[name], self._spare[name] = self._spare[name], self._store[name]
        objective["parity"] ^= 1
        for t in grad.get("buffers", []):
            target, value = self._host[t["name"]], means[t["next"]]
            target[...] = np.rint(value) if target.dtype.kind in "iu" else value
        return {name: float(means[name]) if means[name].ndim == 0 else means[name] for name in objective["scalars"]}
