"""The training loop: shuffled mini-batches through the training-step graph, validation through the
evaluation graph, a checkpoint after every epoch, and exact resume.

Reproducibility contract: a run is a pure function of (program, data, seed, batch_size, lr); what it
draws is `dslc.runtime.run_randomness`'s.
"""
from __future__ import annotations

import functools
import math
import numbers
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dslc.diagnostics import DataError
from dslc.runtime.checkpoint import CHECKPOINT_FILE, FORMAT, manifest_hash
from dslc.runtime.batches import EpochBatches
from dslc.runtime.data import check_count, num_rows
from dslc.runtime.faults import armed, fault_point
from dslc.runtime.history import HistoryLog
from dslc.runtime.layout import (
    eval_key,
    objective_of,
    train_keys,
)
from dslc.runtime.metrics import EpochMetrics, output_specs, undefined_areas, undefined_warning
from dslc.runtime.run_randomness import epoch_order, step_seed
from dslc.runtime.runlock import locks_run_directory, when_released
from dslc.runtime.run_start import (
    check_one_sample_batch,
    idle_schedule_warning,
    make_trainer,
    run_data,
    starting_state,
    step_of,
)
from dslc.runtime.run_state import (
    check_finite_values,
    count,
    diverged,
    frozen_setting,
    history_so_far,
    save_epoch,
)
from dslc.runtime.saver import EpochSaver
from dslc.spelling import option

class Reporter:
    """What the training loop tells the outside world. This base ignores everything; the CLI passes
    `dslc.runtime.progress.ConsoleReporter`."""

    def start(self, info: dict) -> None:
        """Before the first epoch. `info`: model, device, samples, val_samples, batch_size,
        steps_per_epoch, epochs, initial_epoch, parameters, out_dir, resumed, lr_changes (whether the
        learning rate may change during the run: a schedule, decay, or `reduce_lr_on_plateau`)."""

    def warn(self, message: str) -> None:
        """Something the user should know that does not stop training."""

    def note(self, message: str) -> None:
        """Something that happened, worth a line (early stopping, restored weights)."""

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        """`epoch` counts from 1."""

    def step_end(self, step: int, logs: Mapping[str, float]) -> None:
        """After step `step` (from 1) of the epoch; `logs` are the running means so far. Called when
        `wants_step(step)` says so."""

    def wants_step(self, step: int) -> bool:
        """Whether `step_end` wants step `step` (from 1): computing the running means for a reporter that
        ignores them was ~1.5 µs of the loop's ~9 µs between two digits steps. By default: whenever
        `step_end` is overridden."""
        return type(self).step_end is not Reporter.step_end

    def epoch_end(self, record: dict) -> None:
        """`record` is the epoch's history entry."""

    def end(self, history: list[dict], info: dict) -> None:
        """After the last epoch; `info` is the start info plus `time` and `checkpoint`."""

    def close(self) -> None:
        """Called by the owner when training stops for any reason, errors included."""


def _spec_by_kind(specs: list[dict], kind: str) -> dict | None:
    return next((t for t in specs if t.get("kind") == kind), None)


def _epoch_values(metrics: EpochMetrics) -> dict:
    """The loss and metrics of an epoch from their batch values (`dslc/runtime/metrics.py`: batch means
    averaged by batch size, count metrics such as F1 computed from summed confusion matrices); summed
    `confusion_matrix` outputs as nested lists under their names."""
    return {**metrics.values(), **metrics.matrices()}


def _prepare(program, epochs: int, batch_size: int, seed: int, lr) -> tuple[int, int, int, float | None]:
    """The arguments checked and turned into plain Python numbers (they go into JSON)."""
    if not train_keys(program.manifest):
        raise DataError(f"model `{program.name}` has no loss, so it cannot be trained",
                        hint="add a `loss` and an `optimizer` to the model")
    epochs = check_count(epochs, "epochs", "the number of epochs")
    batch_size = check_count(batch_size, "batch_size", "the batch size")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise DataError(f"the seed must be a non-negative integer, got {seed!r}")
    if lr is not None and not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr >= 0):
        raise DataError(f"the learning rate must be a finite non-negative number, got {lr!r}")
    if lr is not None and len(train_keys(program.manifest)) > 1:
        raise DataError(f"model `{program.name}` has several objectives, each with its own learning rate",
                        hint=f"set each objective's `lr` in the model (or with -D) and drop {option('lr')}")
    if lr is not None and _spec_by_kind(program.manifest["graphs"]["train"].get("hyper", []), "lr") is None:
        raise DataError(f"model `{program.name}` has no learning rate to override", hint=f"drop {option('lr')}")
    problem = lr_out_of_range(program.manifest, lr)
    if problem:
        raise DataError(problem, hint="a learning rate this large overflows every update; use a smaller one")
    return int(epochs), int(batch_size), int(seed), None if lr is None else float(lr)


def lr_out_of_range(manifest: dict, lr: float | None) -> str | None:
    """Why `lr` cannot be fed to the training graph (it would become inf in the graph's dtype), or None."""
    spec = _spec_by_kind(manifest["graphs"].get("train", {}).get("hyper", []), "lr")
    if lr is None or spec is None:
        return None
    largest = float(np.finfo(np.dtype(spec["dtype"])).max)
    if lr <= largest:
        return None
    return f"the learning rate {lr:g} does not fit in `{spec['dtype']}` (at most {largest:.6g})"


@locks_run_directory
def fit(program, train_data, val_data=None, *, epochs: int, batch_size: int, seed: int = 0,
        device: str = "cpu", out_dir, resume: bool = False, lr: float | None = None,
        reporter: Reporter | None = None, threads: int | None = None, val_split: float | None = None,
        callbacks=(), early_stopping=None, restore_best: bool | None = None, init_from=None, accumulate: int = 1,
        comm=None, reduce_lr_on_plateau=None) -> list[dict]:
    """Train `program` until `epochs` epochs are complete; return the history (one dict per epoch).

    `train_data`/`val_data` are `.npz` paths or dicts of arrays. `epochs` is the total target, so
    with `resume=True` training continues from the checkpoint in `out_dir` to epoch `epochs` (Keras'
    `epochs` with `initial_epoch`). `resume` may instead be the path of a state file (`load_state_file`:
    an init graph or `.npz`, written by another runtime, say): a new run starts from its values, its
    step counter continuing from the state's (so dropout seeds continue too). `lr` overrides the compiled learning rate. The last partial batch
    of an epoch is kept. Holds the lock on `out_dir` for the whole run (`runlock`). Writes to `out_dir`:
    the manifest and graphs at the start, then after every epoch `checkpoint.npz` (atomically) and a line
    of `history.jsonl` (see `dslc.runtime.history`).

    History entries: `epoch` (from 1), `steps` (global steps done), the training loss and metrics
    (means over the epoch weighted by batch size), `val_`-prefixed validation loss and metrics,
    `lr` (the learning rate of the epoch's last step, after any schedule, decay or plateau reduction;
    `<objective>.lr` with several objectives), `time` (the epoch's seconds, validation included),
    `samples_per_s` (training only).

    `val_split` holds out that fraction of the training samples for validation (chosen by `seed`, see
    `datafiles.split_validation`). `callbacks`, `early_stopping` (an `EarlyStopping`, its text, or
    False/"off"; None: the model's `callback early_stopping(...)`, if any) and `restore_best` (None: the
    model's): see `dslc.runtime.callbacks`; `reduce_lr_on_plateau` (a `ReduceLROnPlateau`, its text,
    a dict, or False/"off"; None: the model's `callback reduce_lr_on_plateau(...)`): see
    `dslc.runtime.plateau`. `init_from`: see `dslc.runtime.finetune`. Returns a `callbacks.History`.

    `accumulate` > 1 or an MPI communicator `comm` (`dslc.runtime.distributed`) train through the split
    graphs: each batch of `batch_size` rows is sharded over the ranks and cut into `accumulate`
    micro-batches, and the step equals the single-process one (`dslc.runtime.accumulate`). Only rank 0
    writes the run directory, validates, reports and runs the callbacks; every rank stops where they say.
    """
    from dslc import __version__
    from dslc.runtime.callbacks import History, run_stopping
    from dslc.runtime.devices import SessionAhead
    from dslc.runtime.plateau import STATE_KEY, RunRates, run_plateau
    from dslc.runtime.run_hooks import RunHooks
    from dslc.runtime.session import Evaluator

    writer = comm is None or comm.Get_rank() == 0
    reporter = (reporter if writer else None) or Reporter()
    epochs, batch_size, seed, lr = _prepare(program, epochs, batch_size, seed, lr)
    accumulate = check_count(accumulate, "accumulate", "the number of micro-batches per step")
    manifest = program.manifest
    keys = train_keys(manifest)
    specs = [manifest["graphs"][k] for k in keys]
    spec = specs[0]  # every objective's graph takes the same data inputs and targets
    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT_FILE
    # the common case's sessions are made on threads while the data is read (`SessionAhead`)
    single = accumulate == 1 and comm is None and len(keys) == 1 and not spec.get("frozen")
    train_ahead = SessionAhead(program.graphs[keys[0]], device, threads, memory_pattern=False) if single else None
    eval_ahead = SessionAhead(program.graphs[eval_key(keys[0])], device, threads, keep_spinning=False) \
        if single and writer and (val_data is not None or val_split is not None) \
        and eval_key(keys[0]) in program.graphs else None
    for ahead in (train_ahead, eval_ahead):
        if ahead is not None:
            when_released(lambda failing, ahead=ahead: ahead.wait())

    eval_specs = [manifest["graphs"].get(eval_key(k)) for k in keys]
    arrays, fingerprint, val_arrays = run_data(program.name, train_data, val_data, val_split, seed, spec,
                                                eval_specs[0])
    n, n_val = num_rows(arrays), num_rows(val_arrays) if val_arrays is not None else 0

    settings = {"seed": seed, "batch_size": batch_size, "lr": lr}
    if val_split is not None:  # absent otherwise: checkpoints from before it compare equal
        settings["val_split"] = float(val_split)
    settings.update(frozen_setting(specs))
    settings["defines"] = dict(program.defines)  # in the checkpoint: a mismatch's hint names them
    early_stopping, restore_best = run_stopping(manifest, early_stopping, restore_best)
    plateau = run_plateau(manifest, reduce_lr_on_plateau)
    hooks = RunHooks(out_dir, callbacks, early_stopping, restore_best, reporter, plateau)
    rates = RunRates(manifest, keys, lr, plateau)
    ckpt, initial, global_step = starting_state(program, spec, out_dir, resume, init_from, settings, fingerprint,
                                                 reporter)
    history = history_so_far(out_dir, ckpt, reporter)
    first_epoch = ckpt.meta["epoch"] if ckpt else 0
    # While the sessions are made: what needs neither them nor the run folder (in a new process the first
    # epoch's order imports numpy.random, ~6 ms that were the last thing before the first step), and the
    # saver's thread.
    order = epoch_order(seed, first_epoch, n)
    metric_specs = output_specs(specs)
    model_hash = manifest_hash(manifest)
    if comm is not None:  # before the first all-reduce, which a rank that disagrees would wait in for ever
        from dslc.runtime.distributed import check_same_run

        check_same_run(comm, data=fingerprint, model=model_hash, start=(first_epoch, global_step),
                       settings={**settings, "epochs": epochs, "accumulate": accumulate})
    saver = EpochSaver()
    if writer:
        saver.start()
    # Sessions first: an unusable device fails before anything is written.
    trainer = make_trainer(program, keys, device, threads, initial, accumulate, comm, train_ahead, single)
    evaluators = {}
    if val_arrays and writer:
        for k, es in zip(keys, eval_specs):
            prefix = f"{objective_of(k)}." if len(keys) > 1 else ""
            evaluators[prefix] = Evaluator(program.graphs[eval_key(k)], es, device, threads, ahead=eval_ahead,
                                           keep_spinning=False)
    names = list(trainer.output_names) + [f"val_{p}{k}" for p, e in evaluators.items() for k in e.output_names]
    if writer:
        hooks.check(names, bool(evaluators), history)
    if ckpt is not None:
        rates.resume(ckpt.meta, reporter)
    check_one_sample_batch(trainer, arrays, specs, n, batch_size)
    if writer:  # the run folder's graphs, written by the saver ahead of the first checkpoint while the steps run
        saver.submit(functools.partial(program.build, out_dir, durable=False))
    history_log = HistoryLog(out_dir, history) if writer else None  # restored from the checkpoint after a kill

    lr_spec = _spec_by_kind(spec.get("hyper", []), "lr")
    lr_used = lr if lr is not None else (lr_spec or {}).get("default", float("nan"))
    seed_names = [(_spec_by_kind(s.get("hyper", []), "seed") or {}).get("name") for s in specs]
    objectives = len(keys)
    loss_names = [name for name in trainer.output_names if name == "loss" or name.endswith(".loss")]
    steps = -(-n // batch_size)
    info = {
        "model": program.name, "device": device, "samples": n, "val_samples": n_val,
        "batch_size": batch_size, "steps_per_epoch": steps, "epochs": epochs, "initial_epoch": first_epoch,
        "parameters": program.num_parameters, "out_dir": str(out_dir), "resumed": ckpt is not None,
        "lr_changes": rates.vary,
    }
    if first_epoch >= epochs:
        reporter.warn(f"the checkpoint already has {count(first_epoch, 'epoch')} of training; nothing to do "
                      f"(raise the number of epochs to continue)")
        if writer:
            hooks.restore(history)
        return History(history, out_dir)
    if batch_size > n:
        reporter.warn(f"the batch size ({batch_size}) is larger than the {count(n, 'training sample')}: "
                      f"each epoch is one batch of {n}")
    base_rates = [lr if lr is not None else (_spec_by_kind(s.get("hyper", []), "lr") or {}).get("default", 0.0)
                  for s in specs]
    idle = idle_schedule_warning(manifest, keys, base_rates, global_step, epochs * steps, steps)
    if idle:
        reporter.warn(idle)
    parts = accumulate * (comm.Get_size() if comm is not None else 1)
    if parts > min(batch_size, n):
        rows = min(batch_size, n)
        reporter.warn(f"{parts:,} micro-batches per step ({accumulate} accumulated"
                      + (f" × {comm.Get_size()} ranks" if comm is not None else "") + f") is more than a batch's "
                      f"{count(rows, 'row')}: {parts - rows} of them are empty and skipped, the others hold one row each")
    run_step = step_of(trainer)
    batches = EpochBatches(arrays, trainer)
    lr_feeds = rates.feeds()
    step_fault = armed("step")
    step_logs = bool(hooks.step_hooks)
    if writer:
        hooks.begin(info)
    reporter.start(info)
    started = time.perf_counter()
    stopped = None
    warned_undefined: set[str] = set()
    for epoch in range(first_epoch, epochs):
        reporter.epoch_start(epoch + 1, epochs, steps)
        t0 = time.perf_counter()
        sums = EpochMetrics(metric_specs)
        for i, start in enumerate(range(0, n, batch_size)):
            idx = order[start:start + batch_size]
            hypers = [{**lr_feeds[k], seed_name: step_seed(seed, global_step * objectives + k)}
                      if seed_name is not None else lr_feeds[k] for k, seed_name in enumerate(seed_names)]
            out = run_step(batches.batch(idx), hypers)
            if step_fault:
                fault_point("step")
            for loss_name in loss_names:
                if not math.isfinite(out[loss_name]):
                    saver.wait()  # the hint names the last checkpoint: let a pending save land first
                    raise diverged("the loss", out[loss_name], f"at epoch {epoch + 1}, step {i + 1} "
                                    f"(global step {global_step})", lr_used, ckpt_path, updated=global_step > 0)
            global_step += 1
            sums.add(out, len(idx))
            if step_logs or reporter.wants_step(i + 1):  # the running means only when someone reads them
                logs = sums.values()
                reporter.step_end(i + 1, logs)
            if hooks.step_hooks and _stop_after_step(hooks, i + 1, logs, writer, comm):
                stopped = epoch
                break
        if stopped is not None:
            break
        train_time = time.perf_counter() - t0
        record = {"epoch": epoch + 1, "steps": global_step, **_epoch_values(sums)}
        for prefix, evaluator in evaluators.items():
            values = _evaluate(evaluator, trainer, val_arrays, n_val, batch_size)
            if not math.isfinite(values["loss"]):
                what = "the validation loss" + (f" of objective `{prefix[:-1]}`" if prefix else "")
                saver.wait()
                raise diverged(what, values["loss"], f"after epoch {epoch + 1} (global step {global_step})",
                                lr_used, ckpt_path)
            record.update({f"val_{prefix}{k}": v for k, v in values.items()})
        record.update(rates.in_effect(global_step - 1))
        for name in undefined_areas(record, metric_specs):
            if name not in warned_undefined:
                warned_undefined.add(name)
                reporter.warn(undefined_warning(name, epoch + 1))
        record["time"] = time.perf_counter() - t0
        record["samples_per_s"] = n / max(train_time, 1e-9)
        history.append(record)
        meta = {"format": FORMAT, "dslc": __version__, "model": program.name, "epoch": epoch + 1,
                "global_step": global_step, **settings, "data": fingerprint,
                "manifest_sha256": model_hash, "record": record}
        values = trainer.get_values()
        saver.wait()  # the previous epoch's save (had a whole epoch to finish): its checkpoint is the last good one
        check_finite_values(manifest, values, f"after epoch {epoch + 1} (global step {global_step})",
                             lr_used, ckpt_path)
        stop = hooks.epoch_end(record, history) if writer else False  # they see the epoch before its save
        if comm is not None:  # polling: a blocking bcast spins a core while rank 0 validates
            from dslc.runtime.distributed import from_rank_zero

            decided = plateau.scale if writer and plateau is not None else rates.scale
            stop, rates.scale = from_rank_zero(comm, (stop, decided))  # rank 0's reduction, on every rank
        elif plateau is not None:
            rates.scale = plateau.scale
        if rates.state() is not None:  # the plateau's decision after this epoch, for a resumed run
            meta[STATE_KEY] = rates.state()
            lr_feeds = rates.feeds()
        if not stop and epoch + 1 < epochs:  # now: once the save's thread runs, Python work here waits for the GIL
            order = epoch_order(seed, epoch + 1, n)
        if writer:
            saver.submit(functools.partial(save_epoch, out_dir, manifest, values, meta, history_log,
                                           hooks.after_save(history)))
        reporter.epoch_end(record)
        if hooks.reduced:
            reporter.note(plateau.describe_reduction(epoch + 1, rates.fed(), rates.names))
        if stop:
            stopped = epoch + 1
            break
    saver.wait()
    if stopped is not None:
        reporter.note(hooks.stop_note)
    if writer:
        hooks.end(history)
    reporter.end(history, {**info, "time": time.perf_counter() - started, "checkpoint": str(ckpt_path)})
    result = History(history, out_dir)
    result.stopped_epoch, result.best_epoch = stopped, hooks.best_epoch
    return result


def _stop_after_step(hooks, step: int, logs, writer: bool, comm) -> bool:
    """Whether the step callbacks stop training: rank 0's decision, on every rank."""
    stop = hooks.step_end(step, logs) if writer else False
    return comm.bcast(stop, root=0) if comm is not None else stop


def _evaluate(evaluator, trainer, arrays: Mapping[str, np.ndarray], n: int, batch_size: int) -> dict[str, float]:
    """Loss and metrics over `arrays` in order (`evaluate.over_batches`), current parameters."""
    from dslc.runtime.evaluate import over_batches

    return over_batches(evaluator, trainer.ortvalues(), arrays, batch_size)
