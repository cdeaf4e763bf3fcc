"""Train a dslc model with plain ONNX Runtime and numpy, driven by its manifest alone (no dslc import):

    dslc build examples/digits/digits.dl -o out/digits
    python examples/python/train.py out/digits examples/digits/train.npz --epochs 2 --batch-size 32

Needs only `pip install onnxruntime numpy`. The .npz arrays are named as the model's inputs and targets.
It visits the samples in the order `dslc train` does and feeds the seeds it does, so with the same
`--seed` (`dslc build --seed S` writes the initial values `dslc train --seed S` starts from) it prints
each epoch's loss and metrics as `dslc train` logs them, to the last digit (with `--val VAL.npz`, the
evaluation graphs' `val_` values too). Given the folder `dslc export --train-state` wrote, it continues
that run (its manifest's `train_state` says where the run stood).
Then it runs the predict graph with the trained values on the first rows and prints each output's
first row, and with `--save FILE.npz` writes every trained value (`dslc train --resume FILE.npz`
continues from it).
"""
from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

SEED_MULTIPLIER = 1_000_003


def step_seed(run_seed: int, step: int) -> int:
    """What `dslc train` feeds a dropout model's `seed` at training step `step` (from 0 over the run;
    with K objectives, objective k of batch step s is step s * K + k): a new seed every step."""
    return (run_seed * SEED_MULTIPLIER + step) % 2**31


def epoch_order(run_seed: int, epoch: int, rows: int) -> np.ndarray:
    """The order in which `dslc train` visits the samples in epoch `epoch` (from 0)."""
    return np.random.default_rng([run_seed, epoch]).permutation(rows)


def fail(message: str, code: int) -> None:
    """Stop with dslc's exit codes: 1 for the model's graphs, 2 for the command line, 3 for the data."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def names(items) -> str:
    return ", ".join(f"`{item}`" for item in items) or "nothing"


def first_row(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))[0])


def checked_data(path: Path, graphs: dict) -> dict[str, np.ndarray]:
    """The arrays of `path` the graphs read, checked and cast to the manifest's dtypes as `dslc train` does:
    any number for a float input, whole numbers for an integer one (ONNX Runtime refuses a float64 array
    for a float32 input), the shape after the batch axis, the same number of rows, integer ids and labels
    in [0, classes), values in a declared `range` (probability targets), no NaN or infinity."""
    specs = {t["name"]: t for key, g in graphs.items() if key.split(".")[0] in ("train", "predict") for t in g["inputs"]}
    try:
        arrays = dict(np.load(path))
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        fail(f"{path}: cannot read it as an .npz file ({e})", 3)
    missing = [name for name in specs if name not in arrays]
    if missing:
        fail(f"{path} has no array {names(missing)}; it holds {names(arrays)}, and the model reads {names(specs)}", 3)
    out = {}
    for name, t in specs.items():
        array, want, where = arrays[name], np.dtype(t["dtype"]), f"{path}: `{name}`"
        shape = ", ".join(map(str, t["shape"]))
        sizes = zip(t["shape"][1:], array.shape[1:])  # after the batch axis, which a build may pin (`--dim`)
        if array.ndim != len(t["shape"]) or any(isinstance(d, int) and d != n for d, n in sizes):
            fail(f"{where} has shape {list(array.shape)}; the model reads [{shape}]", 3)
        if array.dtype.kind not in "biuf":
            fail(f"{where} holds {array.dtype} values; the model reads {want}", 3)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            fail(f"{where}, row {first_row(~np.isfinite(array))}: NaN or infinity", 3)
        if want.kind in "iu" and array.dtype.kind == "f" and (array != np.round(array)).any():
            fail(f"{where}, row {first_row(array != np.round(array))}: a fraction, where the model reads {want}", 3)
        array = array.astype(want)
        if "classes" in t and ((array < 0) | (array >= t["classes"])).any():
            row = first_row((array < 0) | (array >= t["classes"]))
            fail(f"{where}, row {row}: {array[row].min() if array[row].min() < 0 else array[row].max()} is "
                 f"outside [0, {t['classes']}), the manifest's `classes`", 3)
        if "range" in t and ((array < t["range"][0]) | (array > t["range"][1])).any():
            fail(f"{where}, row {first_row((array < t['range'][0]) | (array > t['range'][1]))}: a value outside "
                 f"{t['range']}, the manifest's `range`", 3)
        out[name] = array
    if len({len(array) for array in out.values()}) > 1:
        fail(f"{path}: the arrays have different numbers of rows: "
             + ", ".join(f"`{name}` {len(array)}" for name, array in out.items()), 3)
    return out


def add_batch(sums: dict, prefix: str, key: str, outputs: list[dict], out: dict, size: int, objectives: int):
    """Add one batch's loss and metrics to `sums` ({label: (output entry, total)}): a `"reduce": "mean"` value
    weighted by the batch's size, `"sum"` counts as they are. Named as `dslc train` logs them:
    `<objective>.<name>` for a model with several objectives."""
    for t in outputs:
        label = prefix + (t["name"] if objectives == 1 else f"{key.partition('.')[2]}.{t['name']}")
        weight = size if t["reduce"] == "mean" else 1
        sums[label] = (t, sums.get(label, (t, 0))[1] + weight * out[t["name"]].astype(np.float64))


def epoch_values(sums: dict, rows: int) -> dict[str, float]:
    """The epoch value of each output (README, step 2): a batch mean's weighted mean; a precision, recall or
    F1's from the summed confusion matrix; an `auc`'s from the summed counts over thresholds. The summed
    matrices without a value (`confusion_matrix`) are left out."""
    values = {}
    for label, (t, total) in sums.items():
        if t["reduce"] == "mean":
            values[label] = total / rows
        elif t.get("counts") == "confusion_matrix" and "value" in t:
            values[label] = from_confusion(total, t["value"], t["average"])
        elif t.get("counts") == "thresholds":
            values[label] = from_thresholds(total, t["curve"], t["summation_method"], t["average"])
    return values


def from_confusion(matrix: np.ndarray, value: str, average: str) -> float:
    """scikit-learn's precision, recall or F1 (`zero_division=0`) of a summed confusion matrix (rows: the
    true class): per class tp / (tp + fp), tp / (tp + fn), 2tp / (2tp + fp + fn); `binary` class 1's,
    `micro` of tp, fp, fn summed, `macro` the mean over the classes that occur, `weighted` by support."""
    tp = np.diag(matrix)
    fp, fn = matrix.sum(axis=0) - tp, matrix.sum(axis=1) - tp
    if average == "micro":
        tp, fp, fn = tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True)
    num, den = {"precision": (tp, tp + fp), "recall": (tp, tp + fn), "f1": (2 * tp, 2 * tp + fp + fn)}[value]
    per_class = ratio(num, den)
    support = matrix.sum(axis=1)
    if average in ("binary", "micro"):
        return float(per_class[1 if average == "binary" else 0])
    if average == "weighted":
        return float(np.sum(per_class * support) / support.sum()) if support.sum() else 0.0
    present = support + matrix.sum(axis=0) > 0
    return float(per_class[present].mean()) if present.any() else 0.0


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def from_thresholds(counts: np.ndarray, curve: str, summation: str, average: str) -> float:
    """Keras's `AUC` of summed [K, T, 2, 2] counts (column k, threshold j ascending, [true, predicted]):
    the area of each column's curve, then `macro` their mean over the columns where the curve is defined,
    `weighted` by positives, `micro` the area of the counts summed over the columns; NaN if none is."""
    if average == "micro":
        return curve_area(counts.sum(axis=0), curve, summation)
    areas = np.array([curve_area(column, curve, summation) for column in counts])
    defined = ~np.isnan(areas)
    if not defined.any():
        return float("nan")
    if average == "weighted":
        positives = counts[defined, 0, 1, :].sum(axis=1)
        return float(np.sum(areas[defined] * positives) / positives.sum())
    return float(areas[defined].mean())


def curve_area(c: np.ndarray, curve: str, summation: str) -> float:
    """The area under one column's ROC (x = fp / negatives, y = recall) or PR (x = recall, y = precision)
    curve by trapezoids (`interpolation`; for PR, Davis & Goadrich's interpolation of tp against tp + fp),
    the lower (`minoring`) or upper (`majoring`) step, or `step` (y at the lower threshold)."""
    tp, fp, fn, tn = c[:, 1, 1], c[:, 0, 1], c[:, 1, 0], c[:, 0, 0]
    positives, negatives = tp[0] + fn[0], fp[0] + tn[0]
    if positives == 0 or (curve == "roc" and negatives == 0):
        return float("nan")
    if curve == "pr" and summation == "interpolation":
        predicted = tp + fp
        dtp, dp = tp[:-1] - tp[1:], predicted[:-1] - predicted[1:]
        slope = ratio(dtp, dp)
        both = (predicted[1:] > 0) & (predicted[:-1] > 0)
        log_ratio = np.log(ratio(predicted[:-1], predicted[1:]), out=np.zeros_like(dp), where=both)
        return float(np.sum(slope * (dtp + (tp[1:] - slope * predicted[1:]) * log_ratio)) / positives)
    x, y = (fp / negatives, tp / positives) if curve == "roc" else (tp / positives, ratio(tp, tp + fp))
    heights = {"interpolation": (y[:-1] + y[1:]) / 2, "minoring": np.minimum(y[:-1], y[1:]),
               "majoring": np.maximum(y[:-1], y[1:]), "step": y[:-1]}[summation]
    return float(np.sum((x[:-1] - x[1:]) * heights))


def evaluate(evals: list, data: dict, used: int, values: dict, batch_size: int) -> dict[str, float]:
    """The `val_` loss and metrics of `data`: every evaluation graph on its batches in order."""
    sums = {}
    for start in range(0, used, batch_size):
        for key, g, eval_session in evals:
            feeds = {t["name"]: data[t["name"]][start:start + batch_size] for t in g["inputs"]}
            feeds.update({t["name"]: values[t["name"]] for t in g["params"] + g["buffers"]})
            names = [t["name"] for t in g["outputs"]]
            out = dict(zip(names, eval_session.run(names, feeds)))
            add_batch(sums, "val_", key, g["outputs"], out, min(batch_size, used - start), len(evals))
    return epoch_values(sums, used)


def batched_rows(what: str, rows: int, batch_size: int, batch_dims: list) -> int:
    """How many rows an epoch trains on: all of them, unless the build pins the batch (`dslc build --dim B=4`,
    for runtimes that need static shapes), whose graphs take batches of exactly that size only."""
    pinned = sorted({d for d in batch_dims if isinstance(d, int)})
    if not pinned:
        return rows
    if batch_size != pinned[0]:
        fail(f"this build pins the batch to {pinned[0]} rows (`dslc build --dim`): pass --batch-size {pinned[0]}", 2)
    if rows < batch_size:
        fail(f"{what} has {rows} rows, fewer than the build's pinned batch of {batch_size}", 3)
    if rows % batch_size:
        print(f"note: each epoch leaves out the last {rows % batch_size} rows of {what}: the build pins the batch "
              f"to {batch_size} rows", file=sys.stderr)
    return rows - rows % batch_size


def session(out_dir: Path, graph: dict) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(out_dir / graph["file"]), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("out_dir", type=Path, help="what `dslc build` (or `dslc export --train-state`) wrote")
    parser.add_argument("data", type=Path, help=".npz with one array per input and target")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, help="the run's seed (`dslc train --seed`; default 0)")
    parser.add_argument("--val", type=Path, help="validation data: after each epoch, the evaluation graphs on it")
    parser.add_argument("--save", type=Path, help="write the trained values to this .npz")
    args = parser.parse_args()
    for flag, value, least in (("--epochs", args.epochs, 0), ("--batch-size", args.batch_size, 1), ("--seed", args.seed, 0)):
        if value is not None and value < least:
            parser.error(f"{flag} must be a whole number >= {least}, got {value}")

    manifests = sorted(args.out_dir.glob("*.dslc.json"))
    if len(manifests) != 1:
        fail(f"{args.out_dir} holds {len(manifests) or 'no'} manifests (`<model>.dslc.json`); give the folder "
             "`dslc build -o` wrote", 2)
    manifest = json.loads(manifests[0].read_text())
    graphs = manifest["graphs"]
    # where an exported run stood; a fresh build starts at epoch 0, step 0
    where = manifest.get("train_state", {"epoch": 0, "global_step": 0, "seed": args.seed or 0})
    if args.seed is not None and args.seed != where["seed"]:
        fail(f"this build continues a run with seed {where['seed']} (the manifest's `train_state`): leave out --seed", 2)
    run_seed, first_epoch, step = where["seed"], where["epoch"], where["global_step"]

    # one training graph per objective: "train", or "train.<objective>" for a model with several
    objectives = [(key, g, session(args.out_dir, g)) for key, g in graphs.items() if key.split(".")[0] == "train"]
    if not objectives:
        fail(f"model `{manifest['model']}` has no loss, so no training graph: {graphs['infer']['file']} is its "
             "inference", 1)
    data = checked_data(args.data, graphs)
    rows = len(next(iter(data.values())))
    batch_dims = [t["shape"][0] for _, g, _ in objectives for t in g["inputs"]]
    used = batched_rows("the training data", rows, args.batch_size, batch_dims)
    # the evaluation graphs (no dropout, batch norm's running statistics, no update), one per objective
    evals = [(key, g, session(args.out_dir, g)) for key, g in graphs.items() if key.split(".")[0] == "eval"]
    val = checked_data(args.val, graphs) if args.val else None
    val_used = batched_rows("the validation data", len(next(iter(val.values()))), args.batch_size, batch_dims) \
        if val is not None else 0

    # 1. the init graph has no inputs: the first value of every parameter, buffer and optimizer state
    init = session(args.out_dir, graphs["init"])
    values = dict(zip([o.name for o in init.get_outputs()], init.run(None, {})))

    for epoch in range(first_epoch, first_epoch + args.epochs):
        order = epoch_order(run_seed, epoch, rows)
        sums = {}
        for start in range(0, used, args.batch_size):  # the last, partial batch is kept (unless the batch is pinned)
            batch = order[start:start + args.batch_size]
            for k, (key, g, step_session) in enumerate(objectives):
                # 2. every input, every step, by name: data, hyper-inputs, current values
                feeds = {t["name"]: data[t["name"]][batch] for t in g["inputs"]}
                for h in g["hyper"]:
                    value = step_seed(run_seed, step * len(objectives) + k) if h["kind"] == "seed" else h["default"]
                    feeds[h["name"]] = np.array(value, h["dtype"])  # float32 lr, int64 seed: scalars of their dtype
                for part in ("params", "frozen", "buffers", "state"):
                    feeds.update({t["name"]: values[t["name"]] for t in g[part]})
                names = [t["name"] for t in g["outputs"]] + [t["next"] for part in ("params", "buffers", "state")
                                                              for t in g[part]]
                out = dict(zip(names, step_session.run(names, feeds)))
                # 3. each `next` is the value of its input on the next step (buffers too: batch-norm statistics)
                for part in ("params", "buffers", "state"):
                    values.update({t["name"]: out[t["next"]] for t in g[part]})
                add_batch(sums, "", key, g["outputs"], out, len(batch), len(objectives))
            step += 1
        logs = epoch_values(sums, used)
        if val is not None:  # 5. validation: the evaluation graphs with the current parameters and buffers
            logs.update(evaluate(evals, val, val_used, values, args.batch_size))
        print(f"epoch {epoch + 1}: " + " ".join(f"{label} {float(value)!r}" for label, value in logs.items()))

    # 4. inference with the trained values: the predict graph takes them as inputs (infer.onnx holds
    # the initial values as initializers, and onnxruntime-node ignores feeds of those without a word)
    if "predict" in graphs:
        p = graphs["predict"]
        feeds = {t["name"]: data[t["name"]][:args.batch_size] for t in p["inputs"]}
        feeds.update({t["name"]: values[t["name"]] for t in p["params"] + p["buffers"]})
        predicted = session(args.out_dir, p).run([t["name"] for t in p["outputs"]], feeds)
        for t, value in zip(p["outputs"], predicted):
            print(f"predicted {t['name']}, first row: " + ",".join(repr(float(v)) for v in np.ravel(value[0])))
    if args.save:
        np.savez(args.save, **values)


if __name__ == "__main__":
    main()
