"""`dslc bench`: time a model's training step and inference in ONNX Runtime, optionally against other ways
to run the same model (`--compare`, see `dslc/peers.py`): the PyTorch twin (dslc's IR run by PyTorch op by
op) with its inference exported by `torch.onnx.export` and run by ONNX Runtime, and the hand-written peers —
idiomatic PyTorch eager, the same step under `torch.compile`, and JAX with `jax.jit` + optax. Every column
is timed in one process, interleaved with the others and never at the same time; each is checked against
dslc's first step before it is timed. The training step is also related to the machine's measured GEMM
peak and memory bandwidth (`dslc/bench_machine.py`), and optionally its peak memory is measured.

    ratio               = dslc time / the column's time            (below 1: dslc is faster)
    infer_vs_torch_onnx = dslc inference / exported inference
    flop_utilization    = training-step FLOPs / step time / measured GEMM FLOP/s   (never above 1: see below)
    roofline_ms         = max(FLOPs / GEMM peak, bytes the step must move / bandwidth)
    rss_ratio           = dslc's peak-RSS increase / PyTorch's (each in a fresh process, see dslc/bench_memory.py)

Times are medians with the 10th and 90th percentiles of the single calls. A utilization above 100% or a
step faster than its roofline cannot be real: the GEMM peak or the bandwidth was measured while the
machine was busy. Such a value is not reported as a result (None in the JSON, the raw value beside it)
and the run is flagged, as it is when the thread-scaling check finds the machine contended.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dslc.bench_machine import bandwidth_gbs, contention, gemm_gflops, machine  # noqa: F401  (the bench's face)
from dslc.bench_export import exported_inference
from dslc.bench_timing import Timing, interleaved
from dslc.diagnostics import DataError
from dslc.runtime.layout import train_keys

EXPORT_RTOL = 1e-4
# a column's first step against dslc's: the loss and the inference outputs (from the initial weights)
# within CHECK_RTOL; the updated parameters element-wise within PARAM_RTOL of each tensor's scale (see
# `compare_outputs`) and each parameter's update (new - initial) within UPDATE_RTOL in L2 norm. Adam's
# first update is ±lr wherever |gradient| ≫ eps but turns on the rounding of gradients the size of eps
# (1e-8): the transformer has such elements, where PyTorch and JAX sum in another order than ONNX Runtime
# (largest element difference 2e-4 of a 0.4 scale; update L2 difference ≤ 1.5e-3).
CHECK_RTOL = 1e-4
PARAM_RTOL = 1e-3
UPDATE_RTOL = 1e-2
MEMORY_FIELDS = ("train_peak_rss_mb", "train_rss_increase_mb", "torch_train_peak_rss_mb",
                 "torch_train_rss_increase_mb", "rss_ratio", "memory_steps")


def _ratio(ours: Timing, theirs: Timing | None) -> float | None:
    """dslc's median over another column's (below 1: dslc is faster); None when that was not timed."""
    return None if theirs is None else ours.median_ms / theirs.median_ms


@dataclass
class Column:
    """One way of running the model besides dslc: its timings (None: not timed), its first-step check
    and why it was not timed."""
    train: Timing | None = None
    infer: Timing | None = None
    check: dict = field(default_factory=dict)
    error: str | None = None

    def as_json(self, dslc_train: Timing, dslc_infer: Timing) -> dict:
        return {"train": self.train and self.train.as_json(), "infer": self.infer and self.infer.as_json(),
                "train_ratio": _ratio(dslc_train, self.train), "infer_ratio": _ratio(dslc_infer, self.infer),
                "check": self.check, "error": self.error}


@dataclass
class BenchResult:
    model: str
    batch_size: int
    infer_batch_size: int
    steps: int
    threads: int
    gemm_gflops: float
    train_flops: int
    train: Timing
    infer: Timing
    train_bytes: int = 0
    bandwidth_gbs: float | None = None
    machine_check: dict = field(default_factory=dict)  # see `bench_machine.contention`
    columns: dict[str, Column] = field(default_factory=dict)  # "twin", "torch-onnx", "torch", "torch-compile", "jax"
    memory: dict = field(default_factory=dict)  # see `measure_memory`

    @property
    def train_step_ms(self) -> float:
        return self.train.median_ms

    @property
    def infer_ms(self) -> float:
        return self.infer.median_ms

    @property
    def measured_utilization(self) -> float:
        return self.train_flops / (self.train_step_ms * 1e-3) / (self.gemm_gflops * 1e9)

    @property
    def flop_utilization(self) -> float | None:
        """The share of the GEMM peak the step reaches; None when the measurement says more than all of it."""
        return self.measured_utilization if self.measured_utilization <= 1 else None

    @property
    def roofline_ms(self) -> float | None:
        """The least time the step can take here: max(FLOPs / GEMM peak, bytes moved / bandwidth)."""
        if not self.bandwidth_gbs:
            return None
        return 1e3 * max(self.train_flops / (self.gemm_gflops * 1e9), self.train_bytes / (self.bandwidth_gbs * 1e9))

    @property
    def warnings(self) -> list[str]:
        """Why the timings of this run should not be taken as results."""
        notes = [f"contended machine: {reason}" for reason in self.machine_check.get("reasons", [])]
        if self.flop_utilization is None:
            notes.append(f"the step reached {100 * self.measured_utilization:.0f}% of the GEMM peak measured before "
                         f"it: the peak was measured while the machine was busy, so no utilization is reported")
        if self.roofline_ms is not None and self.train_step_ms < self.roofline_ms:
            notes.append(f"the step ({self.train_step_ms:.3g} ms) beat its roofline bound ({self.roofline_ms:.3g} ms): "
                         f"the peak or the bandwidth was measured while the machine was busy")
        notes += self._pressed_blocks()
        return notes

    def _pressed_blocks(self) -> list[str]:
        timed = [("dslc", "train", self.train), ("dslc", "infer", self.infer)]
        timed += [(name, which, getattr(c, which)) for name, c in self.columns.items() for which in ("train", "infer")]
        pressed = [f"{name} {which} {t.contended_blocks}/{t.blocks}" for name, which, t in timed
                   if t is not None and t.contended_blocks]
        if not pressed:
            return []
        return ["blocks timed while other tasks waited for a CPU, after retries (" + ", ".join(pressed) + "): "
                "their calls run up to 2-4x slower, widening the spread"]

    def fastest_peer(self, which: str) -> tuple[str, Timing] | None:
        """The fastest hand-written peer (torch, torch-compile, jax) for "train" or "infer"."""
        from dslc.peers import PEERS

        timed = [(name, getattr(c, which)) for name, c in self.columns.items()
                 if name in PEERS and getattr(c, which) is not None]
        return min(timed, key=lambda pair: pair[1].median_ms) if timed else None

    def _twin(self, which: str) -> Timing | None:
        column = self.columns.get("twin")
        return getattr(column, which) if column else None

    def _twin_loss_check(self) -> dict:
        loss = self.columns["twin"].check.get("loss") if "twin" in self.columns else None
        return {"dslc": loss["dslc"], "torch": loss["column"]} if loss else {}

    def as_json(self) -> dict:
        twin_train, twin_infer = self._twin("train"), self._twin("infer")
        exported = self.columns.get("torch-onnx")
        onnx_infer = exported.infer if exported else None
        ratio = _ratio
        fastest = {}
        for which, ours in (("train", self.train), ("infer", self.infer)):
            found = self.fastest_peer(which)
            fastest[which] = found and {"column": found[0], "median_ms": found[1].median_ms,
                                        "ratio": ours.median_ms / found[1].median_ms}
        return {
            "model": self.model, "batch_size": self.batch_size, "infer_batch_size": self.infer_batch_size,
            "steps": self.steps, "threads": self.threads, "gemm_gflops": self.gemm_gflops,
            "bandwidth_gbs": self.bandwidth_gbs, "machine_check": self.machine_check, "warnings": self.warnings,
            "train_gflop_per_step": self.train_flops / 1e9, "train_mb_per_step": self.train_bytes / 1e6,
            "train_step_ms": self.train_step_ms, "train_step_p10_ms": self.train.p10_ms,
            "train_step_p90_ms": self.train.p90_ms, "infer_ms": self.infer_ms, "infer_p10_ms": self.infer.p10_ms,
            "infer_p90_ms": self.infer.p90_ms,
            "flop_utilization": self.flop_utilization, "measured_flop_utilization": self.measured_utilization,
            "roofline_ms": self.roofline_ms,
            "roofline_fraction": None if self.roofline_ms is None else self.roofline_ms / self.train_step_ms,
            # the PyTorch twin under its names of round 1
            "torch_train_step_ms": twin_train and twin_train.median_ms, "train_ratio": ratio(self.train, twin_train),
            "torch_infer_ms": twin_infer and twin_infer.median_ms, "infer_ratio": ratio(self.infer, twin_infer),
            "loss_check": self._twin_loss_check(),
            "torch_onnx_infer_ms": onnx_infer and onnx_infer.median_ms,
            "infer_vs_torch_onnx": ratio(self.infer, onnx_infer),
            "torch_onnx_check": exported.check if exported else {}, "torch_onnx_error": exported and exported.error,
            "columns": {name: c.as_json(self.train, self.infer) for name, c in self.columns.items()},
            "fastest_peer": fastest,
            **{key: self.memory.get(key) for key in MEMORY_FIELDS},
        }


def symbols(manifest: dict) -> set[str]:
    """The symbolic dimensions (`B`, `T`, ...) of the inputs of a model's training and inference graphs."""
    graphs = [g for key, g in manifest["graphs"].items() if key in ("train", "infer")]
    return {d for g in graphs for t in g["inputs"] for d in t["shape"] if isinstance(d, str)}


def _concrete(shape, dims: dict[str, int], name: str) -> tuple[int, ...]:
    out = []
    for d in shape:
        if isinstance(d, int):
            out.append(d)
        elif d in dims:
            out.append(dims[d])
        else:
            raise DataError(f"input `{name}` has the symbolic dimension `{d}`, which needs a size",
                            hint=f"pass `--dim {d}=N`")
    return tuple(out)


def synthetic_batch(specs: list[dict], dims: dict[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random data of the declared shapes: floats N(0, 1), integers in [0, classes) (0 and 1 without a
    class count), booleans at random."""
    batch = {}
    for t in specs:
        shape = _concrete(t["shape"], dims, t["name"])
        dtype = np.dtype(t["dtype"])
        if dtype.kind == "f":
            batch[t["name"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            batch[t["name"]] = rng.integers(0, t.get("classes", 2), shape).astype(dtype)
        else:
            batch[t["name"]] = rng.random(shape) < 0.5
    return batch


def compare_outputs(got: dict[str, np.ndarray], want: dict[str, np.ndarray], rtol: float = EXPORT_RTOL) -> dict:
    """Whether every output in `got` equals the one in `want` within `rtol` of its own size plus `rtol`
    of the output's largest magnitude (an element near zero, such as a logit that cancels out, is judged
    against the scale of its tensor). Returns the outputs compared, the largest absolute difference,
    `rtol` and `passed`."""
    worst, passed = 0.0, True
    for name, expected in want.items():
        actual = np.asarray(got.get(name))
        if actual.shape != expected.shape:
            passed, worst = False, float("inf")
            continue
        scale = float(np.max(np.abs(expected))) if expected.size else 0.0
        difference = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        worst = max(worst, float(difference.max()) if difference.size else 0.0)
        passed = passed and bool(np.all(difference <= rtol * (np.abs(expected) + scale)))
    return {"outputs": list(want), "max_abs_diff": worst, "rtol": rtol, "passed": passed}


def error_line(e: Exception) -> str:
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first[:300]}"


def check_first_step(column, batch: dict, infer_inputs: dict, want: dict) -> dict:
    """`column`'s inference on the initial weights and its first training step against dslc's (`want`:
    `loss`, `initial` and updated `params`, `infer` outputs), with the tolerances at the top of this file."""
    got_infer = column.infer(column.prepare(infer_inputs))
    loss = column.step(column.prepare(batch))
    weights = column.weights()
    loss_check = {"dslc": want["loss"], "column": loss, "rel_diff": abs(loss - want["loss"]) / max(abs(want["loss"]), 1e-30)}
    params = compare_outputs(weights, want["params"], PARAM_RTOL)
    worst_update = 0.0
    for name, expected in want["params"].items():
        if name in weights and weights[name].shape == expected.shape:
            update = expected.astype(np.float64) - want["initial"][name]
            error = np.linalg.norm(weights[name] - expected.astype(np.float64)) / max(np.linalg.norm(update), 1e-30)
            worst_update = max(worst_update, float(error))
    params.update(update_rel_l2=worst_update, update_rtol=UPDATE_RTOL)
    infer = compare_outputs(got_infer, want["infer"], CHECK_RTOL)
    passed = loss_check["rel_diff"] <= CHECK_RTOL and params["passed"] and worst_update <= UPDATE_RTOL and infer["passed"]
    return {"loss": loss_check, "params": params, "infer": infer, "passed": bool(passed)}


def _failed_check(check: dict) -> str:
    parts = []
    if check["loss"]["rel_diff"] > CHECK_RTOL:
        parts.append(f"loss {check['loss']['column']:.6g} vs dslc's {check['loss']['dslc']:.6g}")
    if not check["params"]["passed"] or check["params"]["update_rel_l2"] > UPDATE_RTOL:
        parts.append(f"updated parameters (largest difference {check['params']['max_abs_diff']:.3g}, update L2 "
                     f"{check['params']['update_rel_l2']:.3g})")
    if not check["infer"]["passed"]:
        parts.append(f"inference outputs (largest difference {check['infer']['max_abs_diff']:.3g})")
    return "its first step differs from dslc's: " + ", ".join(parts)


def _checked(name: str, make, batch, infer_inputs, want, jobs) -> Column:
    """The column `make()` builds, checked against dslc's first step and, when it agrees, added to `jobs`
    (its data prepared once, as a data loader would). Any failure is reported, not raised."""
    from dslc.peers import PeerError

    try:
        column = make()
        check = check_first_step(column, batch, infer_inputs, want)
    except PeerError as e:
        return Column(error=str(e))
    except Exception as e:  # noqa: BLE001 - a peer library's failure (a compiler missing, ...) skips its column
        return Column(error=f"failed: {error_line(e)}")
    if not check["passed"]:
        return Column(check=check, error=_failed_check(check))
    prepared, prepared_inputs = column.prepare(batch), column.prepare(infer_inputs)
    jobs += [(f"{name}:train", lambda: column.step(prepared)), (f"{name}:infer", lambda: column.infer(prepared_inputs))]
    return Column(check=check)


def run(program, *, batch_size: int, infer_batch_size: int | None = None, steps: int = 50, warmup: int = 10,
        dims: dict[str, int] | None = None, compare: tuple[str, ...] = (), memory: bool = False,
        threads: int | None = None, rounds: int = 5, peers_folder=None) -> BenchResult:
    """Benchmark `program` (a single-objective model). Times are taken over `steps` calls per column, in
    `rounds` alternating blocks of all columns so that drifting machine load hits all alike. `compare`
    names the columns beside dslc (`dslc.peers.COLUMNS`: "twin" adds the exported inference too);
    `memory` adds the peak RSS of `steps` training steps of dslc and of the twin, after the timings,
    each in a fresh process."""
    from dslc.peers import COLUMNS, PEERS, TwinColumn, import_library, make_column
    from dslc.runtime.devices import default_threads
    from dslc.runtime.session import Predictor, TrainStep
    from dslc.twin import flops, io_bytes

    keys = train_keys(program.manifest)
    if not keys:
        raise DataError(f"`dslc bench` times a training step; `{program.name}` has no loss",
                        hint="benchmark a model with a `loss` and an `optimizer`")
    if keys != ["train"]:
        raise DataError(f"`dslc bench` times models with one training objective; `{program.name}` has {len(keys)} "
                        f"(`objective` blocks, run one after another per batch)",
                        hint="time the objectives' graphs from Python with `dslc.runtime.session.SharedSteps`")
    threads = threads or default_threads()
    infer_batch_size = infer_batch_size or batch_size
    spec = program.manifest["graphs"]["train"]
    infer_spec = program.manifest["graphs"]["infer"]
    rng = np.random.default_rng(0)
    symbols = {"B": batch_size, **(dims or {})}
    batch = synthetic_batch(spec["inputs"], symbols, rng)
    infer_inputs = synthetic_batch(infer_spec["inputs"], {**symbols, "B": infer_batch_size}, rng)
    libraries = {column: import_library(column) for column in compare}  # a missing library fails before timing

    machine_check = contention(threads, dtype=program.manifest["dtype"])
    bandwidth = bandwidth_gbs(threads)
    final = program.extras["final"]["train"]

    initial = program.initial_values()
    trainer = TrainStep(program.graphs["train"], spec, "cpu", threads, initial=initial)
    predictor = Predictor(program.graphs["infer"], infer_spec, "cpu", threads)
    jobs = [("dslc:train", lambda: trainer.step(batch)), ("dslc:infer", lambda: predictor.run(infer_inputs))]

    columns: dict[str, Column] = {}
    if compare:
        weights = {t["name"]: initial[t["name"]] for t in spec["params"]}
        first = TrainStep(program.graphs["train"], spec, "cpu", threads, initial=initial)
        want = {"loss": first.step(batch)["loss"], "initial": weights, "infer": predictor.run(infer_inputs)}
        after = first.get_values()
        want["params"] = {name: after[name] for name in weights}
        for column, library in libraries.items():
            if column != "jax":
                library.set_num_threads(threads)
    if "twin" in compare:
        from dslc.twin import MissingTwin, TorchTwin

        torch = libraries["twin"]
        lowered = program.extras["lowered"]
        try:
            twin = TorchTwin(torch, lowered["train"], lowered["infer"], lowered["train"].notes["optimizer"])
        except MissingTwin as e:  # an op, or an optimizer (`lion`), PyTorch has no counterpart of
            columns["twin"] = Column(error=f"no PyTorch twin: {e}")
        else:
            # exported before the twin's first step, so its weights are the ones dslc's inference graph holds
            exported, onnx_check, onnx_error = exported_inference(torch, twin, infer_spec, infer_inputs,
                                                                   want["infer"], threads)
            columns["torch-onnx"] = Column(check=onnx_check, error=onnx_error)
            if exported is not None:
                # next to dslc's inference, not just before dslc's training step: there, in about half of the
                # runs, it made the MLP step ~1.5x slower (ONNX Runtime's workers spin ~30 ms after a run)
                jobs.insert(2, ("torch-onnx:infer", exported))
            columns["twin"] = _checked("twin", lambda: TwinColumn(twin), batch, infer_inputs, want, jobs)
    for name in PEERS:
        if name in compare:
            columns[name] = _checked(name, lambda name=name: make_column(name, program, weights, peers_folder),
                                     batch, infer_inputs, want, jobs)
    columns = {name: columns[name] for name in ("torch-onnx",) + COLUMNS if name in columns}

    rounds = min(rounds, steps)
    per_round = -(-steps // rounds)
    timings = interleaved(jobs, per_round, rounds, warmup)
    for key, timing in timings.items():
        name, which = key.split(":")
        if name != "dslc":
            setattr(columns[name], which, timing)
    result = BenchResult(program.name, batch_size, infer_batch_size, per_round * rounds, threads,
                         machine_check["gemm_gflops"], flops(final, symbols), timings["dslc:train"],
                         timings["dslc:infer"], io_bytes(final, symbols), bandwidth, machine_check, columns)
    if memory:
        from dslc.bench_memory import measure_memory

        result.memory = measure_memory(program, batch, steps=per_round * rounds, threads=threads)
    return result
