"""Checkpoints: `<run>/checkpoint.npz` holds everything needed to resume or use a training run.

Layout (a plain `.npz`, readable with `numpy.load(path)` and no pickle):

    param/<name>   each trainable parameter, e.g. `param/dense1.W`
    state/<name>   each optimizer state tensor, e.g. `state/opt.step`
    meta           a 0-d string array holding JSON: format, dslc version, model, epoch (epochs
                   completed), global_step, seed, batch_size, lr, data (`{rows, blake2b}` of the
                   training arrays, see `train.data_fingerprint`), manifest_sha256, history
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dslc.diagnostics import DataError
from dslc.fsutil import atomic_save_npz
from dslc.runtime.data import check_finite, read_npz
from dslc.runtime.layout import state_specs, weight_specs

CHECKPOINT_FILE = "checkpoint.npz"
FORMAT = "dslc-checkpoint/1"


@dataclass
class Checkpoint:
    path: Path
    params: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    meta: dict


def manifest_hash(manifest: dict) -> str:
    """sha256 of the manifest as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def checkpoint_path(weights: str | os.PathLike) -> Path:
    """A run directory means its `checkpoint.npz`; any other path is the checkpoint file itself."""
    path = Path(weights)
    return path / CHECKPOINT_FILE if path.is_dir() else path


def save_checkpoint(path: str | os.PathLike, params: Mapping[str, np.ndarray],
                    state: Mapping[str, np.ndarray], meta: dict) -> Path:
    arrays: dict[str, object] = {f"param/{k}": v for k, v in params.items()}
    arrays.update({f"state/{k}": v for k, v in state.items()})
    arrays["meta"] = np.array(json.dumps(meta))
    return atomic_save_npz(path, arrays)


def load_checkpoint(weights: str | os.PathLike) -> Checkpoint:
    """The checkpoint in run directory `weights` (or at that `.npz` path)."""
    path = checkpoint_path(weights)
    if not path.exists() and not Path(weights).suffix:
        raise DataError(
            f"cannot read `{path}`: No such file or directory",
            hint=f"train the model first with `dslc train ... -o {weights}`",
        )
    arrays = read_npz(path, "checkpoint", hint=DAMAGED_HINT)
    if "meta" not in arrays:
        raise DataError(f"`{path}` is not a dslc checkpoint (it has no `meta` entry)")
    try:
        meta = json.loads(str(arrays.pop("meta")[()]))
    except ValueError:
        raise DataError(f"`{path}` is not a dslc checkpoint (its `meta` entry is not JSON)") from None
    if meta.get("format") != FORMAT:
        raise DataError(f"`{path}` has checkpoint format `{meta.get('format')}`, expected `{FORMAT}`")
    for key, value in arrays.items():
        if value.dtype.kind == "f":
            check_finite(value, key, f"checkpoint `{path}`", NON_FINITE_HINT)
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    state = {k[len("state/"):]: v for k, v in arrays.items() if k.startswith("state/")}
    return Checkpoint(path, params, state, meta)


DAMAGED_HINT = ("the checkpoint is damaged (e.g. cut short by a full disk or an interrupted copy); "
                "use another checkpoint or train again")
NON_FINITE_HINT = "trained values must be finite; use a checkpoint from before they went bad, or train again"
MISMATCH_HINT = (
    "the model source or its -D values changed since the checkpoint was written; "
    "compile the model the checkpoint came from, or train into a new directory"
)


def check_fits(ckpt: Checkpoint, manifest: dict, with_state: bool = True) -> None:
    """`DataError` unless the checkpoint holds exactly the model's parameters and buffers (and optimizer
    state), with the same names, dtypes and shapes."""
    model = manifest["model"]
    if ckpt.meta.get("model") != model:
        raise DataError(
            f"checkpoint `{ckpt.path}` was written for model `{ckpt.meta.get('model')}`, not `{model}`",
            hint="pass the run directory of this model",
        )
    groups = [("parameter", weight_specs(manifest), ckpt.params)]
    if with_state:
        groups.append(("optimizer state", state_specs(manifest), ckpt.state))
    for kind, specs, values in groups:
        _check_group(kind, specs, values, f"checkpoint `{ckpt.path}` does not fit model `{model}`",
                     "the checkpoint lacks")


def _check_group(kind: str, specs: list[dict], values: Mapping[str, np.ndarray], head: str,
                 lacks: str) -> None:
    """`lacks` begins the message for a missing entry: `the checkpoint lacks`, `the weights lack`."""
    for spec in specs:
        name = spec["name"]
        if name not in values:
            raise DataError(f"{head}: {lacks} {kind} `{name}`, which the model has", hint=MISMATCH_HINT)
        value, want = values[name], (np.dtype(spec["dtype"]), list(spec["shape"]))
        if (value.dtype, list(value.shape)) != want:
            raise DataError(
                f"{head}: {kind} `{name}` is `{value.dtype}{list(value.shape)}` in the checkpoint "
                f"but `{want[0]}{want[1]}` in the model",
                hint=_dtype_hint(values, want[0]) if list(value.shape) == want[1] else MISMATCH_HINT,
            )
    extra = sorted(set(values) - {s["name"] for s in specs})
    if extra:
        raise DataError(f"{head}: it has {kind} `{extra[0]}`, which the model does not have", hint=MISMATCH_HINT)


def _dtype_hint(values: Mapping[str, np.ndarray], model_dtype: np.dtype) -> str:
    """The `--dtype` to use when every float array of the checkpoint has one dtype, not the model's."""
    trained = {v.dtype for v in values.values() if v.dtype.kind == "f"}
    if len(trained) != 1 or model_dtype in trained:
        return MISMATCH_HINT
    dtype = trained.pop()
    return f"the weights were trained with `--dtype {dtype}`; pass `--dtype {dtype}` to use them"


def load_state_file(path: str | os.PathLike, manifest: dict) -> dict[str, np.ndarray]:
    """Every parameter, buffer and optimizer-state value of the model from a state file: an init graph
    (`.onnx`, as `<model>.init.onnx` or `dslc export --train-state` writes it) or an `.npz` with one array
    per name (`numpy.savez(path, **values)`), checked against the manifest."""
    from dslc.emit.weights import read_init_graph
    from dslc.runtime.data import read_bytes

    path = Path(path)
    if path.suffix == ".onnx":
        values = read_init_graph(read_bytes(path, "state file"), f"state file `{path}`")
    else:
        values = read_npz(path, "state file", hint="a state file is an init graph `.onnx` or an `.npz` "
                                                   "with one array per parameter, buffer and state tensor")
    head = f"state file `{path}` does not fit model `{manifest['model']}`"
    _check_group("parameter", weight_specs(manifest), {k: v for k, v in values.items()
                                                        if k not in {s["name"] for s in state_specs(manifest)}},
                 head, "the state file lacks")
    _check_group("optimizer state", state_specs(manifest), {k: v for k, v in values.items()
                                                            if k in {s["name"] for s in state_specs(manifest)}},
                 head, "the state file lacks")
    for name, value in values.items():
        if value.dtype.kind == "f":
            check_finite(value, name, f"state file `{path}`", NON_FINITE_HINT)
    return values


def state_step(values: Mapping[str, np.ndarray], spec: dict) -> int:
    """The optimizer steps taken, from the step counter of the training graph `spec` (`opt.step`, or
    `opt.<objective>.step`): where a run started from `values` continues counting."""
    counter = next((t["name"] for t in spec.get("state", [])
                    if t["name"].endswith("step") and t["dtype"] == "int64" and t["shape"] == []), None)
    return 0 if counter is None else max(int(values[counter]), 0)


def load_params(weights, manifest: dict) -> dict[str, np.ndarray]:
    """Trained parameters from a run directory, a checkpoint path, or a dict of arrays, checked
    against the manifest's parameters."""
    if isinstance(weights, Mapping):
        params = {k: np.asarray(v) for k, v in weights.items()}
        _check_group("parameter", weight_specs(manifest), params,
                     f"the weights do not fit model `{manifest['model']}`", "the weights lack")
        for name, value in params.items():
            if value.dtype.kind == "f":
                check_finite(value, name, "the weights", NON_FINITE_HINT)
        return params
    ckpt = load_checkpoint(weights)
    check_fits(ckpt, manifest, with_state=False)
    return ckpt.params
