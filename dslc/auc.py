"""`auc`: the area under the ROC or precision-recall curve, as Keras's `AUC` approximates it.

The graph outputs, for each batch, the binary confusion matrix of every one of T thresholds for each of
K one-vs-rest columns, `[K, T, 2, 2]` (K = 1 for one score per example; C[k, j, i, l]: examples of true
class i of column k whose prediction `p > threshold j` is l). A driver sums them over an epoch and
computes the area from the sum (`dslc/runtime/metrics.py`, manifest `"counts": "thresholds"`): an
epoch's AUC is not the mean of its batches' AUCs, and only summed counts make one.
"""
from __future__ import annotations

from dslc.builtins import builtin
from dslc.ir.graph import Node
from dslc.ir.types import INT_DTYPES
from dslc.losses import _output_of, _shown, _warn_squashed, one_score_per_example

Tensor = Node
CURVES = ("roc", "pr")
SUMMATIONS = ("interpolation", "minoring", "majoring", "step")
AUC_AVERAGES = ("macro", "weighted", "micro")
EPSILON = 1e-7  # Keras's: the outer thresholds lie just outside [0, 1], so every probability is counted


def thresholds(count: int) -> list[float]:
    """Keras's thresholds: -ε, 1/(T-1), 2/(T-1), ..., (T-2)/(T-1), 1+ε (a prediction is `p > threshold`)."""
    return [-EPSILON] + [i / (count - 1) for i in range(1, count - 1)] + [1 + EPSILON]


def _rows_of(b, x: Tensor) -> Tensor:
    """`x` as `[N, K]`: every axis but the last one multiplied into rows."""
    return b.flatten(x, axis=x.type.rank - 1) if x.type.rank > 2 else x


def _one_column(b, x: Tensor) -> Tensor:
    """Every element of `x` as a row of `[N, 1]`."""
    return b.unsqueeze(x, axes=(1,)) if x.type.rank == 1 else b.flatten(x, axis=x.type.rank)


def _columns(ctx, scores: Tensor, target: Tensor, from_logits, multi_label) -> tuple[Tensor, Tensor]:
    """(probabilities, 0/1 truth), both `[N, K]`: one column per class or label, or one column of every
    score for one score per example."""
    b = ctx.b
    s, t = scores.type, target.type
    if not s.is_float or s.rank == 0:
        ctx.fail(f"`auc` needs floating-point scores with a batch axis, got `{s}`", arg="scores")
    classes = s.rank >= 1 and s.shape[-1] != 1 and not one_score_per_example(ctx, s)
    dtype = s.dtype
    if classes and t.dtype in INT_DTYPES and t.shape == s.shape[:-1]:
        if multi_label:
            ctx.fail("`auc` with `multi_label = true` needs 0/1 targets of the scores' shape, got class labels "
                     f"`{t}`", arg="target", hint="class labels are scored one class against the rest: drop "
                                                  "`multi_label`")
        ctx.note_classes(target, s.shape[-1])
        truth = b.one_hot(target, depth=s.shape[-1], dtype=dtype)
        return _rows_of(b, _probabilities(ctx, scores, from_logits, "softmax")), _rows_of(b, truth)
    if t.shape == s.shape and (t.is_float or t.dtype in INT_DTYPES or t.dtype == "bool"):
        if classes and not _labels(ctx, scores, target, multi_label):
            ctx.note_one_class_per_row(target, "auc", reads="reads one class per row of",
                                       hint="score every column as a label of its own: `multi_label = true`")
            truth = b.one_hot(b.argmax(target, axis=-1), depth=s.shape[-1], dtype=dtype)
            return _rows_of(b, _probabilities(ctx, scores, from_logits, "softmax")), _rows_of(b, truth)
        ctx.note_range(target, 0, 1)
        truth = b.cast(b.greater(b.cast(target, to=dtype), b.scalar_like(0.5, scores)), to=dtype)
        p = _probabilities(ctx, scores, from_logits, "sigmoid")
        if classes:
            return _rows_of(b, p), _rows_of(b, truth)
        return _one_column(b, p), _one_column(b, truth)
    if s.rank >= 1 and s.shape[-1] == 1 and t.shape == s.shape[:-1]:
        ctx.fail(f"`auc` of scores `{s}` and targets `{t}`: one score per example needs a target of its shape",
                 arg="target", hint=f"one score column is a binary prediction against 0/1 targets of shape "
                                    f"[{', '.join(map(str, s.shape))}]; class labels need a score column per class")
    ctx.fail(f"`auc` of scores `{s}` and targets `{t}`: shapes do not fit", arg="target",
             hint="give 0/1 targets of the scores' shape, or integer class labels (the scores' shape without the "
                  "class axis)")


def _labels(ctx, scores: Tensor, target: Tensor, multi_label) -> bool:
    """Whether float targets `[.., K]` are K labels of their own (not one class per row): as given, else
    from the scores (a `sigmoid` output: labels; a `softmax` output: classes), else from the loss
    (`binary_cross_entropy` of this target, written before the metric)."""
    if multi_label is not None:
        return multi_label
    if _output_of(scores, "sigmoid") is not None:
        return True
    if _output_of(scores, "softmax") is not None:
        return False
    return ctx.scored_as_labels(target)


def _probabilities(ctx, scores: Tensor, from_logits, squash: str) -> Tensor:
    """`scores` as probabilities in [0, 1]. `from_logits` unset: a `sigmoid`/`softmax` output is taken as
    it is, anything else as logits (the `squash` applied here). `from_logits = false`: clipped to [0, 1]."""
    b = ctx.b
    given = next((op for op in ("sigmoid", "softmax") if _output_of(scores, op) is not None), None)
    if from_logits is None:
        from_logits = given is None
        if _output_of(scores, "input") is not None:  # scores fed as data: logits or probabilities, who knows
            p = _shown(ctx, "scores", "the scores")
            ctx.warn(f"`auc` reads {p} as logits and applies the {squash}: probabilities would be squashed twice",
                     arg="scores", label="an input of the model",
                     hint="say which: `from_logits = false` for probabilities, `from_logits = true` for logits")
    if from_logits:
        if given is not None:
            p = _shown(ctx, "scores", "`scores`")
            _warn_squashed(ctx, scores, "scores", given,
                           f"`auc` with `from_logits = true` applies the {squash} itself, but {p} is already a "
                           f"{given} output: the probabilities are squashed twice and crowd a few thresholds",
                           hint=f"pass the logits (the value before `{given}`), or drop `from_logits` (a "
                                f"{given} output is read as probabilities)")
        return b.softmax(scores, axis=-1) if squash == "softmax" else b.sigmoid(scores)
    ctx.note_range(scores, 0, 1)  # probabilities fed as data are checked when loaded
    return b.clip(scores, low=0.0, high=1.0)


def _counts(ctx, p: Tensor, truth: Tensor, num_thresholds: int) -> Tensor:
    """The `[K, T, 2, 2]` confusion matrices of probabilities `p` and 0/1 `truth`, both `[N, K]`: K·N·T
    comparisons and one MatMul. (A histogram of threshold buckets, `scatter_add_rows` then a triangular
    MatMul, does K·N work but measured slower at batch 128 on the MLP's training step: +25% with 10
    classes, +9% with one score per example, against this graph's +20% and +5-13%.)"""
    b = ctx.b
    k, dtype = p.type.shape[-1], p.type.dtype
    cuts = b.const([[thresholds(num_thresholds)]], dtype)  # [1, 1, T]
    by_column = b.unsqueeze(b.transpose(p, perm=(1, 0)), axes=(2,))  # [K, N, 1]
    above = b.cast(b.greater(by_column, cuts), to=dtype)  # [K, N, T]: predicted positive
    positive = b.unsqueeze(b.transpose(truth, perm=(1, 0)), axes=(1,))  # [K, 1, N]
    negative = b.sub(b.scalar_like(1.0, positive), positive)
    truths = b.concat(negative, positive, axis=1)  # [K, 2, N]: true class 0, 1
    predicted_1 = b.matmul(truths, above)  # [K, 2, T]
    predicted_0 = b.sub(b.reduce_sum(truths, axes=(2,), keepdims=True), predicted_1)
    pairs = b.concat(b.unsqueeze(predicted_0, axes=(2,)), b.unsqueeze(predicted_1, axes=(2,)), axis=2)  # [K, 2, 2, T]
    return b.reshape(b.transpose(pairs, perm=(0, 3, 1, 2)), shape=(k, num_thresholds, 2, 2))


@builtin("metric")
def auc(ctx, scores: Tensor, target: Tensor, curve: str = "roc", num_thresholds: int = 200,
        summation_method: str = "interpolation", from_logits: bool = None, multi_label: bool = None,
        average: str = "macro"):
    """Area under the ROC curve (`curve = "roc"`: true-positive rate against false-positive rate) or the
    precision-recall curve (`"pr"`), as Keras's `AUC`: the confusion matrices of `num_thresholds`
    thresholds evenly spaced over [0, 1], summed over the batches, and a Riemann sum over them;
    `summation_method = "interpolation"` (trapezoids for ROC, Davis & Goadrich's interpolation for PR),
    `"minoring"`, `"majoring"` or `"step"` (each interval at the height of its lower threshold: with
    `curve = "pr"`, the average precision of scikit-learn and torchmetrics). Scores: logits (a sigmoid is applied, a softmax for class scores); a
    `sigmoid` or `softmax` output is read as probabilities; `from_logits = false` reads any scores as
    probabilities (an input's checked to lie in [0, 1] when loaded, others clipped to it); scores that are an input of the model warn unless it is given. One score per example against 0/1 targets of its shape; class
    scores against integer labels or one-hot rows: one class against the rest; against 0/1 targets of
    several columns with `multi_label = true` (the default for a `sigmoid` output or a target of
    `binary_cross_entropy`): each label on its own. `average` over the columns: `"macro"` (the mean of
    their AUCs), `"weighted"` (by their positives) or `"micro"` (one AUC of all their counts together).
    Epoch value: from the counts summed over the batches; a column whose curve is undefined (ROC: no
    positive or no negative example; PR: no positive) is left out of the average, and the value is NaN
    when every column's is (scikit-learn refuses such data; Keras reports 0)."""
    if curve not in CURVES:
        ctx.fail(f"`auc` has curves {', '.join(f'`{c}`' for c in CURVES)}, got `{curve}`", arg="curve",
                 hint='`"roc"` (Keras\'s `curve="ROC"`) or `"pr"` (precision-recall, for rare positives)')
    if summation_method not in SUMMATIONS:
        ctx.fail(f"`auc` sums with one of {', '.join(f'`{m}`' for m in SUMMATIONS)}, got `{summation_method}`",
                 arg="summation_method")
    if average not in AUC_AVERAGES:
        ctx.fail(f"`auc` averages with one of {', '.join(f'`{a}`' for a in AUC_AVERAGES)}, got `{average}`",
                 arg="average")
    if not 2 < num_thresholds <= 10_000:
        ctx.fail(f"`num_thresholds` must lie in 3..10000, got {num_thresholds}", arg="num_thresholds",
                 hint="Keras's default is 200; more thresholds approximate the exact area more closely")
    p, truth = _columns(ctx, scores, target, from_logits, multi_label)
    counts = _counts(ctx, p, truth, num_thresholds)
    return ctx.note_metric(counts, reduce="sum", counts="thresholds", value="auc", curve=curve,
                           summation_method=summation_method, average=average)
