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
"""
from __future__ import annotations

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
                out[name] = from_confusion(total, spec["value"], spec["average"]) if np.ndim(total) else 0.0
        return out

    def matrices(self) -> dict[str, list]:
        """The summed count outputs without a single value (`confusion_matrix`), as nested lists of ints."""
        return {name: np.asarray(total).astype(np.int64).tolist() for name, total in self.sums.items()
                if self.specs.get(name, {}).get("reduce") == "sum" and "value" not in self.specs[name]}


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
