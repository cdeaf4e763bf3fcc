"""Checkpoints: `<run>/checkpoint.npz` holds everything needed to resume or use a training run.

Layout (a plain `.npz`, readable with `numpy.load(path)` and no pickle):

    param/<name>   each parameter and buffer, e.g. `param/dense1.W`
    state/<name>   each optimizer state tensor, e.g. `state/opt.step`
    meta           a 0-d string array holding a JSON object (see `check_meta` for its schema):
                   format (`dslc-checkpoint/2`), dslc version, model, epoch (epochs completed),
                   global_step, seed, batch_size, lr, defines (the model's `-D` values as text, `{}` for
                   none; absent before 2026-12-05), data (`{rows, blake2b}` of the training arrays,
                   see `run_state.data_fingerprint`), manifest_sha256, record (the history entry of the
                   last completed epoch), and with `reduce_lr_on_plateau` its state after that epoch
                   (`{monitor, mode, best, best_epoch, wait, cooldown, scale, min_lr}`, dslc.runtime.plateau)

Its size is proportional to the parameters: the run's history is not in it but in
`<run>/history.jsonl` (see `dslc.runtime.history`), which is appended to after each checkpoint and
checked against the checkpoint's `epoch` when read. Format `dslc-checkpoint/1` (dslc 0.1: the whole
history in `meta.history`, rewritten every epoch) is still read.

Reading never trusts the file: members are read one at a time with their headers checked first
(`dslc.runtime.npz`), and, given the model's manifest, only the members the model needs are read.
"""
from __future__ import annotations

import hashlib
import json
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dslc import standard_json
from dslc.diagnostics import DataError
from dslc.fsutil import atomic_write
from dslc.runtime.data import check_finite, open_npz
from dslc.runtime.faults import fault_point
from dslc.runtime.layout import state_specs, train_keys, weight_specs
from dslc.runtime.npz_writer import write_npz
from dslc.spelling import define, on_command_line, option

CHECKPOINT_FILE = "checkpoint.npz"
BEST_FILE = "best.npz"  # a copy of the best epoch's checkpoint (`dslc.runtime.callbacks`)
FORMAT = "dslc-checkpoint/2"
FORMAT_1 = "dslc-checkpoint/1"


@dataclass
class Checkpoint:
    path: Path
    params: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    meta: dict


def manifest_hash(manifest: dict) -> str:
    """sha256 of the manifest as canonical JSON (sorted keys, no whitespace), without the split graphs
    (`grad`, `apply`) and `--tune`'s record (`tuning`): a run may continue with or without gradient
    accumulation, workers or tuning (every formulation computes the same gradient)."""
    graphs = {k: v for k, v in manifest["graphs"].items() if k.split(".")[0] not in ("grad", "apply")}
    kept = {k: v for k, v in manifest.items() if k != "tuning"}
    text = json.dumps({**kept, "graphs": graphs}, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def checkpoint_path(weights: str | os.PathLike) -> Path:
    """A run directory means its `checkpoint.npz`; any other path is the checkpoint file itself."""
    if not isinstance(weights, (str, os.PathLike)):
        raise DataError(f"the weights must be a run directory or a checkpoint path, got {weights!r} "
                        f"(`{type(weights).__name__}`)", hint=f"pass {option('weights')}")
    path = Path(weights)
    return path / CHECKPOINT_FILE if path.is_dir() else path


def save_checkpoint(path: str | os.PathLike, params: Mapping[str, np.ndarray],
                    state: Mapping[str, np.ndarray], meta: dict) -> Path:
    arrays: dict[str, object] = {f"param/{k}": v for k, v in params.items()}
    arrays.update({f"state/{k}": v for k, v in state.items()})
    arrays["meta"] = np.array(standard_json.dumps(meta))

    def write(f) -> None:
        write_npz(f, arrays)
        fault_point("checkpoint-write")
    return atomic_write(path, write)


def load_checkpoint(weights: str | os.PathLike, manifest: dict | None = None, with_state: bool = True,
                    defines: Mapping[str, str] | None = None) -> Checkpoint:
    """The checkpoint in run directory `weights` (or at that `.npz` path). Given the model's `manifest`,
    the checkpoint must fit it (see `check_fits`), which is checked on the members' headers before
    any array is read, and only the model's parameters (and, `with_state`, optimizer state) are read.
    `defines`: the model's `-D` values, which a mismatch's hint compares with the run's."""
    path = checkpoint_path(weights)
    if not path.exists() and not Path(weights).suffix:
        raise DataError(
            f"cannot read `{path}`: No such file or directory",
            hint=f"train the model first with `dslc train ... -o {weights}`" if on_command_line() else
            f"train the model first with `program.train(..., out_dir=\"{weights}\")`",
        )
    with open_npz(path, "checkpoint", hint=DAMAGED_HINT) as archive:
        meta = _read_meta(archive, path)
        groups = {prefix: {k[len(prefix):]: k for k in archive if k.startswith(prefix)} for prefix in ("param/", "state/")}
        if manifest is not None:
            headers = {prefix: MemberHeaders(archive, members) for prefix, members in groups.items()}
            _check_fits_headers(path, meta, manifest, headers["param/"], headers["state/"] if with_state else None,
                                defines)
            wanted = [t["name"] for t in weight_specs(manifest)]
            groups = {"param/": {n: groups["param/"][n] for n in wanted},
                      "state/": {t["name"]: groups["state/"][t["name"]] for t in state_specs(manifest)}
                      if with_state else {}}
        loaded = {prefix: {name: archive[key] for name, key in members.items()} for prefix, members in groups.items()}
    for prefix, members in loaded.items():
        for name, value in members.items():
            if value.dtype.kind == "f":
                check_finite(value, prefix + name, f"checkpoint `{path}`", NON_FINITE_HINT)
    return Checkpoint(path, loaded["param/"], loaded["state/"], meta)


def _read_meta(archive, path: Path) -> dict:
    if "meta" not in archive:
        raise DataError(f"`{path}` is not a dslc checkpoint (it has no `meta` entry)")
    meta_array = archive["meta"]
    try:
        meta = json.loads(str(meta_array[()])) if meta_array.dtype.kind == "U" and meta_array.ndim == 0 else None
    except ValueError:
        meta = None
    if meta is None:
        raise DataError(f"`{path}` is not a dslc checkpoint (its `meta` entry is not JSON)")
    check_meta(meta, path)
    if isinstance(meta.get("record"), dict):
        meta["record"] = standard_json.undefined_as_nan(meta["record"])  # written `null` (dslc.standard_json)
    return meta


def checkpoint_epoch(path: str | os.PathLike) -> int | None:
    """The epoch of the checkpoint file at `path` (its `meta` alone is read), or None if there is no
    readable checkpoint there."""
    try:
        with open_npz(Path(path), "checkpoint", hint=DAMAGED_HINT) as archive:
            return _read_meta(archive, Path(path))["epoch"]
    except (DataError, OSError):
        return None


class MemberHeaders(Mapping):
    """name -> (dtype, shape) of the archive's members, each header read when looked up."""

    def __init__(self, archive, members: dict[str, str]):
        self.archive, self.members = archive, members

    def __getitem__(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        return self.archive.header(self.members[name])

    def __iter__(self):
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)


def _is_count(value, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_record(value) -> bool:
    return isinstance(value, dict) and _is_count(value.get("epoch"), 1)


# key -> (required, test, what the value must be); `record` is checked by format
META_SCHEMA = {
    "format": (True, lambda v: isinstance(v, str), "a string"),
    "model": (True, lambda v: isinstance(v, str), "a string"),
    "epoch": (True, _is_count, "a non-negative integer"),
    "global_step": (True, _is_count, "a non-negative integer"),
    "seed": (False, _is_count, "a non-negative integer"),
    "batch_size": (False, lambda v: _is_count(v, 1), "a positive integer"),
    "lr": (False, lambda v: v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool)), "a number or null"),
    "data": (False, lambda v: v is None or isinstance(v, dict), "an object or null"),
    "manifest_sha256": (False, lambda v: isinstance(v, str), "a string"),
    "dslc": (False, lambda v: isinstance(v, str), "a string"),
    "history": (False, lambda v: isinstance(v, list) and all(_is_record(r) for r in v),
                "a list of history entries (objects with a positive integer `epoch`)"),
    "record": (False, _is_record, "a history entry (an object with a positive integer `epoch`)"),
    "defines": (False, lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
                "an object of the `-D` values as text"),
    "reduce_lr_on_plateau": (False, lambda v: _plateau_state(v),
                             "the state of `reduce_lr_on_plateau` (best, wait, cooldown, scale)"),
}


def _plateau_state(value) -> bool:
    from dslc.runtime.plateau import check_state  # (it imports the callbacks, which import this module)

    return check_state(value)


def check_meta(meta, path: Path) -> None:
    """`DataError` ("checkpoint metadata is invalid: ...") unless `meta` is an object of `META_SCHEMA`
    in a format this dslc reads, whose last history entry is the checkpoint's epoch."""
    def invalid(reason: str) -> DataError:
        return DataError(f"checkpoint metadata is invalid in `{path}`: {reason}", hint=DAMAGED_HINT)

    if not isinstance(meta, dict):
        raise invalid(f"it is a JSON {type(meta).__name__}, expected an object")
    if meta.get("format") not in (FORMAT, FORMAT_1):
        raise DataError(f"`{path}` has checkpoint format `{meta.get('format')}`, expected `{FORMAT}`",
                        hint="it was written by another version of dslc; train again with this one")
    for key, (required, test, what) in META_SCHEMA.items():
        if key not in meta:
            if required:
                raise invalid(f"`{key}` is missing")
        elif not test(meta[key]):
            raise invalid(f"`{key}` is {standard_json.dumps(meta[key])[:60]}, expected {what}")
    last = meta["record"] if meta["format"] == FORMAT else (meta.get("history") or [None])[-1]
    if meta["epoch"] > 0 and (last is None or last["epoch"] != meta["epoch"]):
        key = "record" if meta["format"] == FORMAT else "history"
        raise invalid(f"`{key}` does not end with the entry of epoch {meta['epoch']}, the checkpoint's `epoch`")


DAMAGED_HINT = ("the checkpoint is damaged (e.g. cut short by a full disk or an interrupted copy); "
                "use another checkpoint or train again")
NON_FINITE_HINT = "trained values must be finite; use a checkpoint from before they went bad, or train again"
def mismatch_hint(meta: Mapping | None = None, defines: Mapping[str, str] | None = None) -> str:
    """The hint for weights of another shape: most often a run trained with `-D` values (`hidden=64`) read
    by a command given others or none. A checkpoint records its run's (meta `defines`, since 2026-12-05),
    so given the model's (`defines`) the hint names both; for `predict` and `evaluate` "train into a new
    directory", all it said after "compile the model the checkpoint came from", was no way out."""
    cli = on_command_line()
    values = "the `-D` values" if cli else "the hyper-parameters (keyword arguments of `dslc.compile`)"
    anew = "to train this model anew, train into a new directory"
    trained = (meta or {}).get("defines")
    if trained is None or defines is None:
        return (f"the model source or {values} differ from those the weights were trained with: pass the same ones "
                f"(this checkpoint does not record them); {anew}")

    def listed(given: Mapping[str, str]) -> str:
        return ", ".join(define(k, v) for k, v in sorted(given.items())) or ("no `-D` values" if cli else "none")
    if dict(trained) == dict(defines):
        same = f"the same {listed(trained)}" if trained else "the model's defaults both times"
        return f"the model source differs from the one the weights were trained with ({same}); {anew}"
    now = "you passed" if cli else "this model was compiled with"
    return f"the weights were trained with {listed(trained)}; {now} {listed(defines)}: pass the same ones; {anew}"


def _check_fits_headers(path: Path, meta: dict, manifest: dict, params: Mapping, state: Mapping | None,
                        defines: Mapping[str, str] | None = None) -> None:
    model = manifest["model"]
    if meta.get("model") != model:
        raise DataError(
            f"checkpoint `{path}` was written for model `{meta.get('model')}`, not `{model}`",
            hint="pass the run directory of this model",
        )
    groups = [("parameter", weight_specs(manifest), params)]
    if state is not None:
        groups.append(("optimizer state", state_specs(manifest), state))
    for kind, specs, signatures in groups:
        try:
            check_group(kind, specs, signatures, f"checkpoint `{path}` does not fit model `{model}`",
                         "the checkpoint lacks", mismatch_hint(meta, defines))
        except DataError as e:
            frozen = _freeze_hint(manifest, state) if state is not None else ""
            if not frozen:
                raise
            raise DataError(e.message, hint=frozen) from None


def _freeze_hint(manifest: dict, state: Mapping) -> str:
    """The hint for a checkpoint whose optimizer state covers other parameters than the model trains, when
    that is all that differs: the run was trained with other `--freeze` patterns than given now."""
    graphs = [manifest["graphs"][k] for k in train_keys(manifest)]
    trained = {p["name"] for g in graphs for p in g.get("params", [])}
    frozen = {p["name"] for g in graphs for p in g.get("frozen", [])}
    held = {s["name"] for s in state_specs(manifest)}

    def owners(names) -> set[str] | None:
        """The parameters whose optimizer state these are (`opt.dense_0.weight.m`), None if one has none."""
        found = [{p for p in trained | frozen if f".{p}." in f".{n}."} for n in names]
        return set().union(*found) if all(found) else None

    kept, was_trained = owners(held - set(state)), owners(set(state) - held)
    if kept is None or was_trained is None or not (kept or was_trained) \
            or not (kept <= trained and was_trained <= frozen):
        return ""
    listed = lambda names: ", ".join(f"`{n}`" for n in sorted(names))  # noqa: E731
    did = [f"kept {listed(kept)} frozen"] * bool(kept) + [f"trained {listed(was_trained)}"] * bool(was_trained)
    return f"the run {' and '.join(did)}: pass the {option('freeze')} patterns it was trained with to continue it"


def check_fits(ckpt: Checkpoint, manifest: dict, with_state: bool = True,
               defines: Mapping[str, str] | None = None) -> None:
    """`DataError` unless the checkpoint holds exactly the model's parameters and buffers (and optimizer
    state), with the same names, dtypes and shapes."""
    _check_fits_headers(ckpt.path, ckpt.meta, manifest, signatures_of(ckpt.params),
                        signatures_of(ckpt.state) if with_state else None, defines)


def signatures_of(values: Mapping[str, np.ndarray]) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    return {name: (value.dtype, value.shape) for name, value in values.items()}


def check_group(kind: str, specs: list[dict], signatures: Mapping[str, tuple[np.dtype, tuple[int, ...]]],
                head: str, lacks: str, mismatch: str = "") -> None:
    """`signatures` maps each name to its (dtype, shape). `lacks` begins the message for a missing entry:
    `the checkpoint lacks`, `the weights lack`; `mismatch` is the hint for another shape (`mismatch_hint`)."""
    mismatch = mismatch or mismatch_hint()
    for spec in specs:
        name = spec["name"]
        if name not in signatures:
            raise DataError(f"{head}: {lacks} {kind} `{name}`, which the model has", hint=mismatch)
        (dtype, shape), want = signatures[name], (np.dtype(spec["dtype"]), list(spec["shape"]))
        if (dtype, list(shape)) != want:
            raise DataError(
                f"{head}: {kind} `{name}` is `{dtype}{list(shape)}` in the checkpoint "
                f"but `{want[0]}{want[1]}` in the model",
                hint=_dtype_hint(signatures, want[0], mismatch) if list(shape) == want[1] else mismatch,
            )
    extra = sorted(set(signatures) - {s["name"] for s in specs})
    if extra:
        raise DataError(f"{head}: it has {kind} `{extra[0]}`, which the model does not have", hint=mismatch)


def _dtype_hint(signatures: Mapping[str, tuple[np.dtype, tuple[int, ...]]], model_dtype: np.dtype,
                mismatch: str) -> str:
    """The `--dtype` to use when every float array of the checkpoint has one dtype, not the model's."""
    trained = {dtype for dtype, _ in signatures.values() if dtype.kind == "f"}
    if len(trained) != 1 or model_dtype in trained:
        return mismatch
    dtype = trained.pop()
    return f"the weights are `{dtype}`; pass {option('dtype', dtype)} to use them"
