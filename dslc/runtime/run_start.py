"""What a training run starts from, before its first epoch (`dslc.runtime.train.fit` runs the epochs): the
training and validation rows (`run_data`), the values the parameters start at (`starting_state`: resumed,
read from a state file, initial, fine-tuned), the training steps that run them (`make_trainer`), and a
check that no batch of one sample breaks batch normalization (`check_one_sample_batch`); `step_of` is how
the loop calls a step of any of them."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dslc.diagnostics import DataError, SettingError
from dslc.runtime.checkpoint import CHECKPOINT_FILE
from dslc.runtime.state_files import load_state_file, state_file_settings, state_step, unchanged_buffers
from dslc.runtime.data import load_data, num_rows
from dslc.runtime.run_state import data_fingerprint, resume_from, warn_changed_settings
from dslc.spelling import option


def run_data(model: str, train_data, val_data, val_split, seed: int, spec: dict, eval_spec: dict | None):
    """The training rows, the fingerprint of all the training data (a split is a setting), and the
    validation rows (given, or `val_split` of the training data's; None without either)."""
    from dslc.runtime.datafiles import split_validation

    arrays = load_data(train_data, spec["inputs"], "training data")
    if num_rows(arrays) == 0:
        raise DataError("the training data has no samples")
    fingerprint = data_fingerprint(arrays)
    if val_split is not None:
        if val_data is not None:
            raise SettingError("give validation data or a validation split, not both",
                            hint=f"drop {option('val')} or {option('val_split')}")
        arrays, val_data = split_validation(arrays, val_split, seed)
    if val_data is None:
        return arrays, fingerprint, None
    if eval_spec is None:
        raise DataError(f"model `{model}` has no evaluation graph, so it cannot be validated",
                        hint="rebuild the model with this version of dslc, or drop the validation data")
    val_arrays = load_data(val_data, eval_spec["inputs"], "validation data")
    if num_rows(val_arrays) == 0:
        raise DataError("the validation data has no samples")
    return arrays, fingerprint, val_arrays


def starting_state(program, spec: dict, out_dir: Path, resume, init_from, settings: dict, fingerprint: str,
                    reporter):
    """(the checkpoint resumed or None, the values training starts from, the global step): `resume=True`
    continues `out_dir`'s checkpoint, a path starts from that state file, else the initial values;
    `init_from` then overlays another run's weights where they fit (not on resume)."""
    manifest, ckpt_path = program.manifest, out_dir / CHECKPOINT_FILE
    if resume is True:
        if not ckpt_path.exists():
            raise DataError(f"there is no checkpoint to resume in `{out_dir}`",
                            hint=f"train {option('no_resume')} to start a new run")
        ckpt = resume_from(ckpt_path, manifest, settings, fingerprint, reporter)
        return ckpt, {**ckpt.params, **ckpt.state}, ckpt.meta["global_step"]
    if ckpt_path.exists():
        raise DataError(f"`{out_dir}` already holds a training run ({CHECKPOINT_FILE})",
                        hint=f"pass {option('resume')} to continue it, or choose another output directory")
    if resume is not False and resume is not None:  # a state file, e.g. from another runtime
        initial = load_state_file(resume, manifest, program.defines)
        global_step = state_step(initial, spec)
        stale = unchanged_buffers(initial, program.initial_values(), spec, global_step)
        if stale:
            reporter.warn(stale)
        before = state_file_settings(resume)
        warn_changed_settings(before, {k: settings[k] for k in before}, "the state file's run", reporter)
        # said as --init-from says what it loaded: the run's first line named neither the file nor the step
        reporter.note(f"starting from the training state in `{resume}` (optimizer step {global_step})")
    else:
        initial, global_step = program.initial_values(), 0
    if init_from is not None:  # fine-tuning: another run's weights where they fit
        from dslc.runtime.finetune import initial_weights

        loaded, report = initial_weights(init_from, manifest)
        initial = {**initial, **loaded}
        reporter.note(report.text())
    return None, initial, global_step


def make_trainer(program, keys: list[str], device: str, threads, initial, accumulate: int, comm, ahead, single: bool):
    """The training steps: the split graphs when accumulating or data-parallel (`SplitSteps`), one
    training graph (`single`: `TrainStep`, its session made by `ahead`), or several objectives' or a
    graph with frozen parameters (`SharedSteps`)."""
    from dslc.runtime.session import SharedSteps, TrainStep

    if accumulate > 1 or comm is not None:
        from dslc.runtime.accumulate import SplitSteps

        return SplitSteps(program, keys, device, threads, initial=initial, accumulate=accumulate, comm=comm)
    specs = [program.manifest["graphs"][k] for k in keys]
    if single:
        return TrainStep(program.graphs[keys[0]], specs[0], device, threads, initial=initial, ahead=ahead)
    return SharedSteps([(k, program.graphs[k], s) for k, s in zip(keys, specs)], device, threads, initial=initial)


def check_one_sample_batch(trainer, arrays: Mapping[str, np.ndarray], specs: list[dict], n: int,
                           batch_size: int) -> None:
    """`DataError` if a batch of one sample makes a buffer non-finite: batch normalization over `[B, C]`
    then has one value per channel, and its unbiased running variance (times n/(n-1)) becomes NaN.
    Whether it does depends on the shapes inside the graph, so one step is tried and undone. Through the
    split graphs (`trainer.size` ranks, `trainer.accumulate` micro-batches) each micro-batch is normalized
    on its own, so a micro-batch of one row counts too: a batch of 4 on 2 ranks with `--accumulate 2`."""
    ranks, accumulate = getattr(trainer, "size", 1), getattr(trainer, "accumulate", 1)
    buffers = [t["name"] for s in specs for t in s.get("buffers", [])]
    if not buffers or not has_one_row_part(n, batch_size, ranks, accumulate):
        return
    saved = trainer.get_values()
    step_of(trainer)({k: a[:1] for k, a in arrays.items()}, [{} for _ in specs])
    after = trainer.get_values()
    trainer.set_values(saved)
    bad = next((name for name in buffers if not np.isfinite(after[name]).all()), None)
    if bad is None:
        return
    if n == 1:
        where, hint = "the training data has 1 sample", "train on 2 or more samples, or remove `batch_norm`"
    else:
        if batch_size == 1:
            where = "with a batch size of 1 every batch has 1 sample"
        elif n % batch_size == 1:
            where = f"the last batch of each epoch has 1 sample ({n} samples in batches of {batch_size})"
        else:
            split = " of ".join(([f"{ranks} ranks' shares"] if ranks > 1 else []) + (
                [f"{accumulate} micro-batches"] if accumulate > 1 else []))
            where = f"{n:,} samples in batches of {batch_size}, each cut into {split}, give parts of 1 sample"
        below = next((b for b in range(batch_size - 1, 1, -1) if not has_one_row_part(n, b, ranks, accumulate)), None)
        above = next((b for b in range(batch_size + 1, n + 2) if not has_one_row_part(n, b, ranks, accumulate)), None)
        sizes = " or ".join(option("batch_size_of", b) for b in (below, above) if b is not None)
        hint = f"choose a batch size that leaves no batch of 1 sample, e.g. {sizes}" if sizes else \
            "train on more samples, or remove `batch_norm`"
    raise DataError(f"{where}, but batch normalization needs more than one value per channel when training "
                    f"(`{bad}` would become {after[bad][~np.isfinite(after[bad])][0]})", hint=hint)


def has_one_row_part(n: int, batch_size: int, ranks: int, accumulate: int) -> bool:
    """Whether some batch of an epoch of `n` samples is cut into a micro-batch of one row."""
    return any(1 in micro_batch_rows(rows, ranks, accumulate) for rows in batch_rows(n, batch_size))


def batch_rows(n: int, batch_size: int) -> set[int]:
    """The row counts of an epoch's batches: full ones, and the last."""
    return {min(batch_size, n)} | ({n % batch_size} if n > batch_size and n % batch_size else set())


def micro_batch_rows(rows: int, ranks: int, accumulate: int) -> set[int]:
    """The row counts of the non-empty micro-batches a batch of `rows` is cut into: each rank's shard
    (`accumulate.shard`) in `accumulate` parts (`numpy.array_split`)."""
    shards = {rows * (r + 1) // ranks - rows * r // ranks for r in range(ranks)}
    return {size for m in shards for size in (m // accumulate, m // accumulate + 1)
            if size and (size == m // accumulate or m % accumulate)}


def step_of(trainer):
    """`step(batch, hypers)`: one training step of every objective of `trainer`, `hypers[k]` objective k's
    hyper-inputs (a `TrainStep` takes its one objective's alone)."""
    from dslc.runtime.session import TrainStep

    return (lambda batch, hypers: trainer.step(batch, hypers[0])) if isinstance(trainer, TrainStep) else trainer.step


IDLE_RATE = 1e-6  # of the base rate: below it a step barely moves the weights
IDLE_SHARE = 0.1  # of the run's steps, at such rates, before a warning
MAX_CHECKED_STEPS = 10_000_000  # rates computed for the warning (80 MB of float64 at most)


def idle_schedule_warning(manifest: dict, keys: list[str], lrs: list[float], first_step: int, last_step: int,
                          steps_per_epoch: int) -> str | None:
    """A warning when a schedule keeps the learning rate below `IDLE_RATE` of its base from some step to
    the end, for more than `IDLE_SHARE` of the run's steps [first_step, last_step): a cosine to 0 that ends early, or a per-step
    `exponential`/`step` decay written with PyTorch's per-epoch schedulers in mind (`cosine(40)` for
    `CosineAnnealingLR(T_max=40)` stepped once per epoch stops training after 40 steps). `lrs`: each
    objective's base rate."""
    from dslc.schedules import rates

    if not 0 < last_step - first_step <= MAX_CHECKED_STEPS:
        return None
    steps = np.arange(first_step, last_step)
    for key, lr in zip(keys, lrs):
        parts = (manifest["graphs"][key].get("optimizer") or {}).get("schedule")
        if not parts or not lr > 0:
            continue
        moving = np.flatnonzero(rates(parts, lr, steps) >= IDLE_RATE * lr)  # a warm-up may start at 0: not idle
        idle = len(steps) - (moving[-1] + 1 if len(moving) else 0)  # the steps from the last moving one to the end
        if idle <= IDLE_SHARE * len(steps):
            continue
        who = f" of objective `{key.partition('.')[2]}`" if "." in key else ""
        return (f"the learning-rate schedule{who} keeps the rate below {IDLE_RATE:g} of its base from step "
                f"{last_step - idle:,} on, for {idle:,} of the run's {len(steps):,} steps, which "
                f"then barely change the weights: schedule lengths (and `every`, and `exponential`'s rate) count "
                f"optimizer steps ({steps_per_epoch:,} per epoch here), not epochs")
    return None
