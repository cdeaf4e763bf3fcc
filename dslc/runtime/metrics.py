"""Epoch values of the loss and metrics from their batch values, as the manifest says for each output.

- `"reduce": "mean"` (the loss, `accuracy`, `top_k_accuracy`, `mae`, any scalar expression): the batch
  value is a mean over the batch; the epoch value is the mean of the batch values weighted by batch size.
- `"reduce": "sum"` with `"counts": "confusion_matrix"` (`confusion_matrix`, `precision`, `recall`, `f1`):
  the batch value is the batch's `[K, K]` confusion matrix C (C[i, j]: examples of true class i predicted
  as j); the matrices are summed, and `"value"` names the metric computed from the sum, with `"average"`:
  tp = diag C, fp = column sums - tp, fn = row sums - tp, support = row sums;
  per class precision tp/(tp+fp), recall tp/(tp+fn), f1 2tp/(2tp+fp+fn), 0 where 0/0;
  `binary`: class 1's; `micro`: the same ratios of tp, fp, fn summed over classes; `macro`: the mean over
  the classes that occur (support + predicted > 0); `weighted`: the mean weighted by support.
  Without `"value"` (`confusion_matrix`) the epoch value is the summed matrix.
These are scikit-learn's definitions (`precision_recall_fscore_support`, `zero_division=0`).
- `"reduce": "sum"` with `"counts": "thresholds"` (`auc`): the batch value is `[K, T, 2, 2]`, the binary
  confusion matrix C[k, j] of column k (K = 1 for one score per example; else one class or label against
  the rest) with predictions `p > threshold j`, thresholds ascending; summed over the batches, then for
  each column tp = C[.., 1, 1], fp = C[.., 0, 1], fn = C[.., 1, 0], tn = C[.., 0, 0] per threshold and
  (`"curve": "roc"`) x = fp / (fp + tn), y = tp / (tp + fn), or (`"pr"`) x = tp / (tp + fn),
  y = tp / (tp + fp) (0 where tp + fp = 0, as Keras's); the area Σ_j (x_j - x_j+1) · h_j with h_j = (y_j + y_j+1) / 2
  (`"summation_method": "interpolation"`), min(y_j, y_j+1) (`"minoring"`), max (`"majoring"`) or y_j
  (`"step"`: for PR, scikit-learn's average precision Σ (R_j - R_j+1)·P_j); PR with
  `"interpolation"` instead integrates precision with tp and tp + fp linear between thresholds (Davis &
  Goadrich; Keras's `interpolate_pr_auc`): Σ_j s_j · (Δtp_j + (tp_j+1 - s_j · P_j+1) · ln(P_j / P_j+1)) / pos,
  P = tp + fp, s_j = Δtp_j / ΔP_j (0 where ΔP_j = 0), the log term 0 where P_j+1 = 0, pos = tp + fn.
  A column's area is NaN when the curve is undefined (ROC: no positive or no negative; PR: no positive).
  `"average"`: `macro` the mean of the defined columns' areas, `weighted` weighted by their positives,
  `micro` the area of the counts summed over the columns. Keras's `AUC` computes the same numbers.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def from_confusion(matrix: np.ndarray, value: str, average: str) -> float:
    """`precision`, `recall` or `f1` of a confusion matrix (rows: true class, columns: predicted)."""
    c = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(c)
    fp, fn = c.sum(axis=0) - tp, c.sum(axis=1) - tp
    if average == "micro":
        tp, fp, fn = tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True)
    per_class = {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn),
                 "f1": _ratio(2 * tp, 2 * tp + fp + fn)}[value]
    if average == "binary":
        return float(per_class[1])
    if average == "micro":
        return float(per_class[0])
    support = c.sum(axis=1)
    if average == "weighted":
        return float(np.sum(per_class * support) / support.sum()) if support.sum() else 0.0
    present = (support + c.sum(axis=0)) > 0
    return float(per_class[present].mean()) if present.any() else 0.0


def _curve_area(c: np.ndarray, curve: str, summation_method: str) -> float:
    """The area under one column's curve from its `[T, 2, 2]` summed confusion matrices."""
    tp, fp, fn, tn = c[:, 1, 1], c[:, 0, 1], c[:, 1, 0], c[:, 0, 0]
    positives, negatives = tp[0] + fn[0], fp[0] + tn[0]
    if positives == 0 or (curve == "roc" and negatives == 0):
        return float("nan")
    if curve == "pr" and summation_method == "interpolation":
        predicted = tp + fp
        dtp, dp = tp[:-1] - tp[1:], predicted[:-1] - predicted[1:]
        slope = _ratio(dtp, dp)
        intercept = tp[1:] - slope * predicted[1:]
        log_ratio = np.log(_ratio(predicted[:-1], predicted[1:]), out=np.zeros_like(dp, dtype=np.float64),
                           where=(predicted[1:] > 0) & (predicted[:-1] > 0))
        return float(np.sum(slope * (dtp + intercept * log_ratio)) / positives)
    recall = tp / positives
    if curve == "roc":
        x, y = fp / negatives, recall
    else:
        x, y = recall, _ratio(tp, tp + fp)
    heights = {"interpolation": (y[:-1] + y[1:]) / 2, "minoring": np.minimum(y[:-1], y[1:]),
               "majoring": np.maximum(y[:-1], y[1:]), "step": y[:-1]}[summation_method]
    return float(np.sum((x[:-1] - x[1:]) * heights))


def from_thresholds(counts: np.ndarray, curve: str, summation_method: str, average: str) -> float:
    """`auc` of summed `[K, T, 2, 2]` confusion matrices (see the module's docstring)."""
    c = np.asarray(counts, dtype=np.float64)
    if average == "micro":
        return _curve_area(c.sum(axis=0), curve, summation_method)
    areas = np.array([_curve_area(column, curve, summation_method) for column in c])
    defined = ~np.isnan(areas)
    if not defined.any():
        return float("nan")
    if average == "weighted":
        positives = c[:, 0, 1, :].sum(axis=1)
        return float(np.sum(areas[defined] * positives[defined]) / positives[defined].sum())
    return float(areas[defined].mean())


def epoch_value(total, spec: Mapping) -> float:
    """The value of a count metric (`"value"` in its manifest entry) from its summed batch values."""
    if spec.get("counts") == "thresholds":
        return from_thresholds(total, spec["curve"], spec["summation_method"], spec["average"])
    return from_confusion(total, spec["value"], spec["average"])


class EpochMetrics:
    """Sums of the batch values of loss and metrics, and the epoch values computed from them; `specs`
    are their manifest output entries by the names the session reports (`output_specs`)."""

    def __init__(self, specs: Mapping[str, dict]):
        self.specs = dict(specs)
        self.sums: dict[str, object] = {}
        self.rows = 0
        self._summed = {name for name, spec in self.specs.items() if spec.get("reduce") == "sum"}

    def add(self, values: Mapping[str, object], rows: int) -> None:
        """One batch of `rows` examples; `values` are the graph's outputs for it."""
        self.rows += rows
        for name, value in values.items():
            if name in self._summed:
                self.sums[name] = self.sums.get(name, 0.0) + np.asarray(value, dtype=np.float64)
            else:
                self.sums[name] = self.sums.get(name, 0.0) + float(value) * rows

    def values(self) -> dict[str, float]:
        """The epoch (or running) value of each scalar output; summed matrices are in `matrices()`."""
        out = {}
        for name, total in self.sums.items():
            spec = self.specs.get(name, {})
            if spec.get("reduce") != "sum":
                out[name] = total / max(self.rows, 1)
            elif "value" in spec:
                out[name] = epoch_value(total, spec) if np.ndim(total) else 0.0
        return out

    def matrices(self) -> dict[str, list]:
        """The summed count outputs without a single value (`confusion_matrix`), as nested lists of ints."""
        return {name: np.asarray(total).astype(np.int64).tolist() for name, total in self.sums.items()
                if self.specs.get(name, {}).get("reduce") == "sum" and "value" not in self.specs[name]}


def undefined_areas(record: Mapping[str, object], specs: Mapping[str, dict]) -> list[str]:
    """The `auc` values of an epoch's `record` (`auc`, `val_auc`, `<objective>.auc`) that are NaN: their
    data held one class only (no metric name starts with `val_`)."""
    return [name for name, value in record.items() if isinstance(value, float) and math.isnan(value)
            and specs.get(name.removeprefix("val_"), {}).get("counts") == "thresholds"]


def undefined_warning(name: str, epoch: int | None = None) -> str:
    """Why `name` is NaN: after epoch `epoch` of training, or (None) in an evaluation."""
    if epoch is None:
        return (f"`{name}` is NaN: the data holds examples of one class only, and the area under a curve "
                "needs both (a precision-recall curve, a positive)")
    data = "validation" if name.startswith("val_") else "training"
    return (f"`{name}` is NaN from epoch {epoch}: the {data} data holds examples of one class only, and the "
            "area under a curve needs both (a precision-recall curve, a positive); NaN never counts as an "
            "improvement (early stopping, reduce_lr_on_plateau)")


def output_specs(graph_specs) -> dict[str, dict]:
    """The loss and metric entries of manifest graph entries (training or evaluation), keyed as sessions
    report them: `<name>`, and `<objective>.<name>` for the graphs of an objective (`SharedSteps`)."""
    out = {}
    for spec in graph_specs:
        for t in spec["outputs"]:
            out[t["name"]] = t
            if "objective" in spec:
                out[f"{spec['objective']}.{t['name']}"] = t
    return out
