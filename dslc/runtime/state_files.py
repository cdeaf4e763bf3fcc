"""Values of a model from outside its run folder's own resume: state files that start a run
(`dslc train --resume STATE`: an init graph `.onnx`, an `.npz` with one array per name as a loop of one's
own saves it, another run's checkpoint) and trained weights for `predict`, `evaluate` and `export`
(a run, a checkpoint, a plain `.npz`, a dict). Each is checked against the model's manifest with the
checkpoint's checks (`dslc.runtime.checkpoint`), which also reads the checkpoints among them.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from dslc.diagnostics import DataError
from dslc.runtime.checkpoint import (
    DAMAGED_HINT,
    NON_FINITE_HINT,
    MemberHeaders,
    check_group,
    load_checkpoint,
    signatures_of,
)
from dslc.runtime.data import check_finite, open_npz
from dslc.runtime.layout import state_specs, weight_specs


def load_state_file(path: str | os.PathLike, manifest: dict, defines: Mapping[str, str] | None = None
                    ) -> dict[str, np.ndarray]:
    """Every parameter, buffer and optimizer-state value of the model from a state file: an init graph
    (`.onnx`, as `<model>.init.onnx` or `dslc export --train-state` writes it), an `.npz` with one array
    per name (`numpy.savez(path, **values)`) or a run's checkpoint (`checkpoint.npz`, `best.npz`),
    checked against the manifest."""
    from dslc.emit.weights import read_init_graph
    from dslc.runtime.data import read_bytes

    path = Path(path)
    head = f"state file `{path}` does not fit model `{manifest['model']}`"
    state_names = {s["name"] for s in state_specs(manifest)}

    def check(signatures: Callable[[Iterable[str]], Mapping[str, tuple[np.dtype, tuple[int, ...]]]],
              names: Iterable[str]) -> None:
        """`signatures(names)`: (dtype, shape) by name, looked up lazily (an `.npz` reads only the headers
        of the names the model has)."""
        check_group("parameter", weight_specs(manifest), signatures([n for n in names if n not in state_names]),
                     head, "the state file lacks")
        check_group("optimizer state", state_specs(manifest), signatures([n for n in names if n in state_names]),
                     head, "the state file lacks")

    if path.suffix == ".onnx":
        values = read_init_graph(read_bytes(path, "state file"), f"state file `{path}`")
        check(lambda names: signatures_of({n: values[n] for n in names}), list(values))
    else:
        with open_npz(path, "state file", hint="a state file is an init graph `.onnx` or an `.npz` with one "
                                               "array per parameter, buffer and state tensor") as archive:
            is_checkpoint = "meta" in archive  # `RUN/checkpoint.npz`, `RUN/best.npz`: `param/<name>`, `state/<name>`
            if not is_checkpoint:
                _check_holds_state(list(archive), [s["name"] for s in state_specs(manifest)], head)
                check(lambda names: MemberHeaders(archive, {n: n for n in names}), list(archive))  # before reading any array
                values = {name: archive[name] for name in archive}
        if is_checkpoint:
            ckpt = load_checkpoint(path, manifest, defines=defines)
            return {**ckpt.params, **ckpt.state}
    for name, value in values.items():
        if value.dtype.kind == "f":
            check_finite(value, name, f"state file `{path}`", NON_FINITE_HINT)
    return values


def _check_holds_state(names: list[str], state_names: list[str], head: str) -> None:
    """An `.npz` written by a loop of one's own that kept the parameters only: said as such (the message for
    one missing name blamed the model source or `-D` values)."""
    if state_names and not set(state_names) & set(names):
        more = f" and {len(state_names) - 1} more" if len(state_names) > 1 else ""
        raise DataError(f"{head}: it holds no optimizer state (`{state_names[0]}`{more})",
                        hint="a state file holds every `params`, `buffers` and `state` value of the manifest's "
                             "training graph (the init graph's outputs, with each `next` fed back): save them all")


def state_file_settings(path: str | os.PathLike) -> dict:
    """The `seed` and `lr` of the run a state file comes from, where it records them: the init graph of
    `dslc export --train-state` (`dslc.seed`, `dslc.lr` in its metadata; no `dslc.lr`: the model's rate)
    or a run's checkpoint; {} for any other state file. Read after `load_state_file` checked the file."""
    from dslc.emit.wire import stored_metadata
    from dslc.runtime.data import read_bytes

    path = Path(path)
    if path.suffix == ".onnx":
        meta = stored_metadata(read_bytes(path, "state file"))
        if "dslc.seed" not in meta:  # an init graph of `dslc build`, or another program's
            return {}
        try:
            return {"seed": int(meta["dslc.seed"]), "lr": float(meta["dslc.lr"]) if "dslc.lr" in meta else None}
        except ValueError:
            return {}
    with open_npz(path, "state file", hint=DAMAGED_HINT) as archive:
        if "meta" not in archive:  # one array per name
            return {}
        meta = json.loads(str(archive["meta"][()]))  # checked by `load_state_file`'s `load_checkpoint`
    return {key: meta.get(key) for key in ("seed", "lr")}


def state_step(values: Mapping[str, np.ndarray], spec: dict) -> int:
    """The optimizer steps taken, from the step counter of the training graph `spec` (`opt.step`, or
    `opt.<objective>.step`): where a run started from `values` continues counting."""
    counter = next((t["name"] for t in spec.get("state", [])
                    if t["name"].endswith("step") and t["dtype"] == "int64" and t["shape"] == []), None)
    return 0 if counter is None else max(int(values[counter]), 0)


def _plain_npz(weights, manifest: dict) -> dict[str, np.ndarray] | None:
    """The parameters and buffers of `weights` if it names an `.npz` that is not a dslc checkpoint (as
    `numpy.savez(path, **values)` writes the values a loop trained: examples/python/train.py and
    examples/node/train.mjs `--save`), else None."""
    if not isinstance(weights, (str, os.PathLike)) or Path(weights).suffix != ".npz" or not Path(weights).is_file():
        return None
    state_names = {s["name"] for s in state_specs(manifest)}
    try:
        with open_npz(weights, "weights file") as archive:
            if "meta" in archive:
                return None
            return {name: archive[name] for name in archive if name not in state_names}
    except DataError:  # not readable as an .npz: said as of a checkpoint (a damaged one, most likely)
        return None


def unchanged_buffers(values: Mapping[str, np.ndarray], initial: Mapping[str, np.ndarray], spec: dict,
                      steps: int) -> str | None:
    """A warning if a state file's buffers all still hold their initial values after `steps` > 0 optimizer
    steps: a loop of one's own that fed the parameters' and the state's `next` back but not the buffers'
    (batch norm's running statistics stay at mean 0, variance 1, and evaluation and inference normalize
    with them: wrong numbers, no error)."""
    names = [t["name"] for t in spec.get("buffers", [])]
    if steps == 0 or not names or not all(np.array_equal(values[n], initial[n]) for n in names):
        return None
    return (f"the state file's buffers (`{names[0]}`{f' and {len(names) - 1} more' if len(names) > 1 else ''}) "
            f"still hold their initial values after {steps} optimizer steps: the loop that wrote it did not feed "
            "each buffer's `next` output back, so evaluation and inference normalize with the initial statistics")


def load_params(weights, manifest: dict, defines: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """Trained parameters from a run directory, a checkpoint path, a state file of another runtime's loop (an
    `.npz` with one array per name, without a checkpoint's `meta`: its optimizer state is not read), or a
    dict of arrays, checked against the manifest's parameters."""
    plain = _plain_npz(weights, manifest)
    if plain is not None:
        return load_params(plain, manifest)
    if isinstance(weights, Mapping):
        params = {k: np.asarray(v) for k, v in weights.items()}
        check_group("parameter", weight_specs(manifest), signatures_of(params),
                     f"the weights do not fit model `{manifest['model']}`", "the weights lack")
        for name, value in params.items():
            if value.dtype.kind == "f":
                check_finite(value, name, "the weights", NON_FINITE_HINT)
        return params
    return load_checkpoint(weights, manifest, with_state=False, defines=defines).params
