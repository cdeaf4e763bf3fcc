"""Keras' `fit(class_weight=, sample_weight=)` for `Program.train`: the per-example weights fed to the input
a loss reads as its `sample_weight` (the manifest's `"sample_weight": {"target": labels}`), computed on
the host. Keras' numbers: each example's loss times the weight of its class (times its given sample
weight), divided by the batch size (`sum_over_batch_size`), not by Σ w_y as PyTorch's `weight` (the
model's `cross_entropy(..., weight = (...))`). Classes missing from `class_weight` weigh 1, as in Keras;
labels are read as Keras reads them: integer labels as they are, one-hot rows by their arg-max, 0/1 scores
`[B]` or `[B, 1]` rounded. Validation data without the weight column gets weights of 1 (Keras weights
validation only by the weights it is given)."""
from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np

from dslc.diagnostics import DataError
from dslc.runtime.data import load_data
from dslc.runtime.layout import train_keys
from dslc.spelling import option

_HINT = ("declare the weights in the model, `target w: f32[B]`, and pass them to the loss: "
         "`cross_entropy(logits, label, sample_weight = w)`")


def weight_column(manifest: dict) -> tuple[dict, dict | None, list[dict]]:
    """The spec of the input that holds the loss's per-example weights, the spec of the labels they go
    with (None when the loss's targets are no input), and every data spec of the training graph."""
    specs = manifest["graphs"][train_keys(manifest)[0]]["inputs"]
    weights = [s for s in specs if "sample_weight" in s]
    if not weights:
        raise DataError(f"model `{manifest['model']}` has no per-example weights for {option('class_weight')} "
                        "to fill", hint=_HINT + "; or weight the classes in the model with "
                        "`cross_entropy(logits, label, weight = (w_0, w_1, ...))` (PyTorch's weighted mean)")
    if len(weights) > 1:
        names = ", ".join(f"`{s['name']}`" for s in weights)
        raise DataError(f"model `{manifest['model']}` has several weight inputs ({names}): {option('class_weight')} "
                        "cannot tell which",
                        hint="feed each weight column with the data instead")
    labels = weights[0]["sample_weight"].get("target")
    return weights[0], next((s for s in specs if s["name"] == labels), None), specs


def with_weights(program, data, class_weight=None, sample_weight=None, what: str = "training data") -> dict:
    """`data` (anything `load_data` reads) as a dict of checked arrays whose weight column is Keras'
    `class_weight` and `sample_weight` applied: the class weight of each example's label times its sample
    weight (given, or the data's column, or 1)."""
    spec, labels_spec, specs = weight_column(program.manifest)
    name = spec["name"]
    if len(spec["shape"]) != 1:
        raise DataError(f"{option('class_weight')} gives one weight per example, but the model's `{name}` "
                        f"holds {spec['dtype']}[{', '.join(map(str, spec['shape']))}]",
                        hint=f"feed `{name}` with the data instead")
    others = [s for s in specs if s["name"] != name]
    arrays = dict(load_data(data, others, what))
    given = _column_of(data, name)
    if sample_weight is not None and given is not None:
        raise DataError(f"the weights `{name}` are given twice: in the {what} and as `sample_weight=`",
                        hint="give one of them")
    rows = len(next(iter(arrays.values())))
    weights = np.ones(rows) if given is None and sample_weight is None else \
        _vector(sample_weight if sample_weight is not None else given, f"`{name}`" if given is not None else
                "`sample_weight=`", rows)
    if class_weight is not None:
        if labels_spec is None:
            raise DataError(f"{option('class_weight')} needs the labels of the loss `{name}` weights, but they "
                            "are no input of the model", hint="compute the weights and feed them as `sample_weight=`")
        weights = weights * _per_example(class_weight, arrays[labels_spec["name"]], labels_spec)
    arrays[name] = weights
    return arrays


def validation_with_weights(program, data, what: str = "validation data"):
    """Validation `data` with a weight column of 1s when it has none (a path or dict of arrays), else as given."""
    if data is None:
        return None
    spec, _, specs = weight_column(program.manifest)
    if _column_of(data, spec["name"]) is not None:
        return data
    arrays = dict(load_data(data, [s for s in specs if s["name"] != spec["name"]], what))
    arrays[spec["name"]] = np.ones(len(next(iter(arrays.values()))))
    return arrays


def _column_of(data, name: str):
    """The array `name` of `data` when it is a mapping holding it (or an `.npz` listing it), else None."""
    if isinstance(data, Mapping):
        return data.get(name)
    import os

    if isinstance(data, (str, os.PathLike)) and os.fspath(data).lower().endswith(".npz"):
        from dslc.runtime.data import open_npz

        with open_npz(data) as archive:
            return np.asarray(archive[name]) if name in archive else None
    return None


def _vector(values, what: str, rows: int) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "biuf" or array.shape != (rows,):
        raise DataError(f"{what} must hold one number per example ({rows}), got an array of shape "
                        f"{list(array.shape)} and dtype {array.dtype}", hint="as Keras' `sample_weight`: shape `[n]`")
    return array.astype(np.float64)


def _per_example(class_weight, labels: np.ndarray, spec: dict) -> np.ndarray:
    """Each example's class weight: `class_weight[label]`, 1 for classes it does not name."""
    if not isinstance(class_weight, Mapping):
        raise DataError(f"`class_weight=` must be a dict from class to weight, got `{type(class_weight).__name__}`",
                        hint="as Keras': `class_weight={0: 1.0, 1: 5.0}`")
    classes = spec.get("classes") or (spec["shape"][-1] if len(spec["shape"]) > 1 and spec["shape"][-1] != 1 else 2)
    table = np.ones(classes)
    for key, value in class_weight.items():
        if isinstance(key, bool) or not isinstance(key, numbers.Integral) or not 0 <= key < classes:
            raise DataError(f"{option('class_weight')} names the class {key!r}, but the labels `{spec['name']}` "
                            f"have classes 0 to {classes - 1}", hint="the keys are class numbers, as Keras'")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0 or not np.isfinite(value):
            raise DataError(f"{option('class_weight')} gives class {key} the weight {value!r}; weights are numbers >= 0",
                            hint="0 leaves a class out, 1 keeps it as it is, larger counts it more")
        table[int(key)] = float(value)
    if labels.dtype.kind in "iu":
        picked = labels
    elif labels.ndim > 1 and labels.shape[-1] != 1:  # one-hot or probability rows
        picked = labels.argmax(axis=-1)
    else:
        picked = np.rint(labels).astype(np.int64)
    picked = picked.reshape(len(labels), -1)
    if picked.shape[1] != 1:  # sequence labels: the weights are per example, the labels per step
        raise DataError(f"{option('class_weight')} weighs each example by the class of its label, but "
                        f"`{spec['name']}` holds {picked.shape[1]} labels per example", hint="compute per-step weights and feed them as data")
    return table[np.clip(picked[:, 0], 0, classes - 1)]
