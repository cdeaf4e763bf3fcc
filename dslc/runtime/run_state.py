"""A run folder's state between epochs: the epoch's checkpoint and history entry (`save_epoch`), the checks
before they are written (`check_finite_values`), and resuming from them (`resume_from`, `history_so_far`,
with the training data's `data_fingerprint`). `dslc.runtime.train` runs the epochs."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dslc.diagnostics import DataError
from dslc.runtime.checkpoint import (
    BEST_FILE,
    CHECKPOINT_FILE,
    checkpoint_epoch,
    load_checkpoint,
    manifest_hash,
    save_checkpoint,
)
from dslc.runtime.data import non_finite_mask, num_rows
from dslc.runtime.faults import fault_point
from dslc.runtime.history import HistoryLog, last_logged_epoch, read_history
from dslc.runtime.layout import state_specs, train_keys, weight_specs
from dslc.spelling import define, option

if TYPE_CHECKING:
    from dslc.runtime.train import Reporter


def data_fingerprint(arrays: Mapping[str, np.ndarray]) -> dict:
    """`{"rows", "blake2b"}` of the training arrays the model reads: a 16-byte blake2b over each
    array's name, dtype, shape and raw bytes, in name order. Stored in the checkpoint so that resuming
    on other data warns (the data is part of what makes a resumed run match an uninterrupted one)."""
    from dslc.runtime.rows import row_blocks

    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        array = arrays[name]
        digest.update(f"{name}\0{array.dtype.str}\0{tuple(array.shape)}\0".encode())
        for _, block in row_blocks(array):  # memory-mapped data a block at a time: the same digest
            digest.update(np.ascontiguousarray(block).reshape(-1).view(np.uint8))
    return {"rows": num_rows(arrays), "blake2b": digest.hexdigest()}


def resume_from(ckpt_path: Path, manifest: dict, settings: dict, data: dict, reporter: "Reporter"):
    ckpt = load_checkpoint(ckpt_path, manifest, defines=settings.get("defines"))
    meta = ckpt.meta
    if meta.get("manifest_sha256") != manifest_hash(manifest) and meta.get("frozen") == settings.get("frozen") \
            and meta.get("defines", settings.get("defines")) == settings.get("defines"):  # else said by name below
        reporter.warn("the compiled model differs from the one that wrote the checkpoint (another model file, "
                      "`-D` value or dslc; its parameters still fit, so training continues from it)")
    warn_changed_settings(meta, settings, "the checkpoint's", reporter)
    before = meta.get("data")
    if before is not None and before != data:  # checkpoints from before dslc recorded it: no warning
        rows = (f" ({count(data['rows'], 'sample')} now, {before.get('rows')} before)"
                if before.get("rows") != data["rows"] else "")
        reporter.warn(f"the training data differs from the checkpoint's{rows}: "
                      "the run will not match an uninterrupted one")
    return ckpt


def frozen_setting(specs: list[dict]) -> dict:
    """`{"frozen": [names]}`: the parameters no objective updates (`--freeze`), a run setting recorded in
    its checkpoints; {} when there are none, so that checkpoints from before it compare equal."""
    frozen = set.intersection(*({t["name"] for t in spec.get("frozen", [])} for spec in specs))
    return {"frozen": sorted(frozen)} if frozen else {}


def warn_changed_settings(before: Mapping, settings: Mapping, whose: str, reporter: "Reporter") -> None:
    """A warning for each of `settings` (seed, batch size, lr, validation split, frozen parameters, `-D`
    values) that `before` holds another value of (an absent one counts as None; absent `-D` values, from
    before checkpoints recorded them, are not compared): the run then no longer continues that one exactly."""
    labels = {"seed": "seed", "batch_size": "batch size", "lr": "learning rate", "val_split": "validation split"}
    shown = lambda v: "the default" if v is None else v  # lr None: the compiled default
    for key in dict.fromkeys([*settings, "frozen"]):
        value = settings.get(key)
        if before.get(key) == value:
            continue
        if key == "defines":
            if key in before:
                given = lambda v: ", ".join(define(k, x) for k, x in sorted(v.items())) or "none"  # noqa: E731
                reporter.warn(f"the model parameters differ from {whose} ({given(value)} now, {given(before[key])} "
                              "before): the run will not match an uninterrupted one")
            continue
        if key == "frozen":  # resumed without the run's `--freeze`, or with other patterns
            names = lambda v: ", ".join(f"`{n}`" for n in v) if v else "none"
            again = f"; pass the run's {option('freeze')} patterns again to keep them fixed" if before.get(key) else ""
            reporter.warn(f"the frozen parameters differ from {whose} ({names(value)} now, {names(before.get(key))} "
                          f"before): the run will not match an uninterrupted one{again}")
            continue
        reporter.warn(f"the {labels[key]} differs from {whose} ({shown(value)} now, "
                      f"{shown(before.get(key))} before): the run will not match an uninterrupted one")


def history_so_far(out_dir: Path, ckpt, reporter: "Reporter") -> list[dict]:
    """The history up to the checkpoint being resumed (none for a fresh run)."""
    if ckpt is None:
        return []
    history, warning = read_history(out_dir, ckpt.meta)
    if warning:
        reporter.warn(warning)
    epoch, last = ckpt.meta["epoch"], last_logged_epoch(out_dir)
    if last > epoch and checkpoint_epoch(out_dir / BEST_FILE) == epoch:  # `restore_best` made it the checkpoint
        later = f"epoch {last}" if last == epoch + 1 else f"epochs {epoch + 1} to {last}"
        reporter.warn(f"the checkpoint is epoch {epoch}'s, the best epoch, restored at the end of the last run: the "
                      f"history's {later} {'is' if last == epoch + 1 else 'are'} dropped and trained again")
    return history


def save_epoch(out_dir: Path, manifest: dict, values: Mapping[str, np.ndarray], meta: dict,
                history_log: HistoryLog, then=None) -> None:
    """`checkpoint.npz` (parameters and buffers, optimizer state; replaced atomically), then the
    epoch's entry appended to `history.jsonl` (see `dslc.runtime.history` for why this order), then
    `then()` (`run_hooks.RunHooks.after_save`: best.npz, metrics.csv)."""
    save_checkpoint(out_dir / CHECKPOINT_FILE, {t["name"]: values[t["name"]] for t in weight_specs(manifest)},
                    {t["name"]: values[t["name"]] for t in state_specs(manifest)}, meta)
    fault_point("checkpoint-saved")
    history_log.append(meta["record"])
    if then is not None:
        then()


def check_finite_values(manifest: dict, values: Mapping[str, np.ndarray], when: str, lr: float,
                         ckpt_path: Path) -> None:
    """`DataError` naming the first parameter, buffer or optimizer-state tensor about to be saved that
    holds a NaN/inf (the loss can stay finite while they overflow, e.g. a huge learning rate in the
    last step, or Adam's second moment). Raised before the checkpoint is written: the last good one
    stays in place."""
    graphs = [manifest["graphs"][k] for k in train_keys(manifest)]
    kinds = {"params": "parameter", "frozen": "parameter", "buffers": "buffer", "state": "optimizer state"}
    with np.errstate(over="ignore", invalid="ignore"):  # entered once: per tensor it was half of digits' check
        for group, kind in kinds.items():
            for name in dict.fromkeys(t["name"] for g in graphs for t in g.get(group, [])):
                value = values[name]
                if value.dtype.kind != "f" or np.isfinite(value.sum()):  # NaN/inf make the sum non-finite
                    continue
                bad = non_finite_mask(value)  # or the sum overflowed: look at each value
                if bad is not None:
                    raise diverged(f"{kind} `{name}`", value[bad][0], when, lr, ckpt_path)


def diverged(what: str, loss: float, when: str, lr: float, ckpt_path: Path, updated: bool = True) -> DataError:
    """`updated=False`: no update has been applied yet, so the learning rate cannot be the cause."""
    last = f"the last good checkpoint is `{ckpt_path}`" if ckpt_path.exists() else "no checkpoint was written"
    if not updated:
        return DataError(f"{what} is {loss} {when}, before any update", hint="the learning rate is not the cause: "
                         "check the data and the loss for a `log`, `sqrt` or division of a value that can be 0 or "
                         f"negative; {last}")
    return DataError(f"{what} became {loss} {when}", hint=f"lower the learning rate ({option('lr')}, now {lr:g}); {last}")


def count(n: int, noun: str) -> str:
    """`1 step`, `2 steps`, `1,438 samples`."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
