"""Metrics of classifiers and regressors, callable from `.dl` files.

A metric is either a per-batch mean (`accuracy`, `top_k_accuracy`, `mae`): its epoch value is the mean of
the batch values weighted by batch size — or per-batch counts (`precision`, `recall`, `f1`,
`confusion_matrix`): the graph outputs the batch's confusion matrix `[K, K]` (rows: true class, columns:
predicted), a driver sums it over the batches and computes the metric from the sum, since F1 is not a mean
of batch F1s. Each count metric tells the manifest how (`ctx.note_metric`; formulas in
`dslc/runtime/metrics.py`).
"""
from __future__ import annotations

from dslc.builtins import builtin
from dslc.ir.graph import Node
from dslc.ir.types import INT_DTYPES
from dslc.losses import _same_shape, _shown, _warn_squashed, one_score_per_example

Tensor = Node
AVERAGES = ("binary", "macro", "micro", "weighted")


def predictions(ctx, scores: Tensor, target: Tensor, threshold: float, fn: str) -> tuple[Tensor, Tensor, int]:
    """(predicted class, true class, number of classes K), both int64 of the same shape. Several classes
    (last axis > 1): the arg-max of `scores` against integer labels or the arg-max of one-hot/probability
    targets. One score per example: `scores > threshold` against `target > 0.5`, classes 0 and 1."""
    b = ctx.b
    s, t = scores.type, target.type
    classes = s.rank >= 1 and s.shape[-1] != 1 and not one_score_per_example(ctx, s)
    if classes and t.dtype in INT_DTYPES and t.shape == s.shape[:-1]:
        ctx.note_classes(target, s.shape[-1])
        return b.argmax(scores, axis=-1), b.cast(target, to="int64"), s.shape[-1]
    if classes and t.shape == s.shape and t.is_float:
        ctx.note_one_class_per_row(target, fn)
        return b.argmax(scores, axis=-1), b.argmax(target, axis=-1), s.shape[-1]
    if t.shape == s.shape:
        if threshold <= 0:
            p, y = _shown(ctx, "scores", "`scores`"), _shown(ctx, "target", "`target`")
            _warn_squashed(ctx, scores, "scores", "sigmoid",
                           f"`{fn}` thresholds at {threshold:g}, but {p} is a sigmoid output in (0, 1): every "
                           "prediction counts as positive", hint="pass the logits (the value before `sigmoid`), or "
                           f"write `{fn}({p[1:-1]}, {y[1:-1]}, threshold = 0.5)`")
        predicted = b.greater(scores, b.scalar_like(threshold, scores))
        actual = b.greater(b.cast(target, to=s.dtype), b.scalar_like(0.5, scores))
        return b.cast(predicted, to="int64"), b.cast(actual, to="int64"), 2
    if s.rank >= 1 and s.shape[-1] == 1 and t.shape == s.shape[:-1]:
        ctx.fail(f"`{fn}` of scores `{s}` and targets `{t}`: one score per example needs a target of its shape",
                 arg="target", hint=f"one score column is a binary prediction against 0/1 targets of shape "
                                    f"[{', '.join(map(str, s.shape))}] (`scores > threshold`); class labels need "
                                    "a score column per class")
    ctx.fail(f"`{fn}` of scores `{s}` and targets `{t}`: shapes do not fit", arg="target",
             hint="give integer labels (the scores' shape without the class axis) or targets of the scores' shape")


def _float(ctx, scores: Tensor) -> str:
    return scores.type.dtype if scores.type.is_float else ctx.float_dtype


@builtin("metric")
def accuracy(ctx, scores: Tensor, target: Tensor, threshold: float = 0.0):
    """Fraction of correct predictions. Several classes (last axis > 1): the arg-max of `scores`
    against integer labels or the arg-max of one-hot/probability targets. One score per example:
    `scores > threshold` against `target > 0.5` (threshold 0 suits logits; use 0.5 for probabilities).
    Epoch value: the mean over examples."""
    predicted, actual, _ = predictions(ctx, scores, target, threshold, "accuracy")
    return ctx.b.reduce_mean(ctx.b.cast(ctx.b.equal(predicted, actual), to=_float(ctx, scores)))


def _confusion(ctx, scores: Tensor, target: Tensor, threshold: float, fn: str) -> tuple[Tensor, int]:
    b = ctx.b
    predicted, actual, k = predictions(ctx, scores, target, threshold, fn)
    # a 1 added at true·K + predicted for each example: the counts of the K·K (true, predicted) pairs, in
    # memory of the batch's size (a one-hot of the pairs would take B·K² values)
    pair = b.add(b.mul(actual, b.const(k, "int64")), predicted)
    ones = b.expand_like(b.const(1.0, _float(ctx, scores)), pair)
    return b.reshape(b.scatter_add_rows(pair, ones, rows=k * k), shape=(k, k)), k


@builtin("metric")
def confusion_matrix(ctx, scores: Tensor, target: Tensor, threshold: float = 0.0):
    """The `[K, K]` counts of (true class, predicted class) pairs, predictions as in `accuracy` (one
    score per example: K = 2). Epoch value: the sum over batches (a matrix, not shown while training)."""
    counts, _ = _confusion(ctx, scores, target, threshold, "confusion_matrix")
    return ctx.note_metric(counts, reduce="sum", counts="confusion_matrix")


def _from_counts(ctx, fn: str, scores: Tensor, target: Tensor, average: str, threshold: float):
    counts, k = _confusion(ctx, scores, target, threshold, fn)
    if average is None:
        average = "binary" if k == 2 else "macro"
    if average not in AVERAGES:
        ctx.fail(f"`{fn}` averages with one of {', '.join(f'`{a}`' for a in AVERAGES)}, got `{average}`",
                 arg="average")
    if average == "binary" and k != 2:
        ctx.fail(f"`{fn}` with `average = \"binary\"` needs two classes, got {k}", arg="average",
                 hint="average over the classes: `average = \"macro\"`, `\"micro\"` or `\"weighted\"`")
    return ctx.note_metric(counts, reduce="sum", counts="confusion_matrix", value=fn, average=average)


_AVERAGE_DOC = """`average`: `"binary"` (class 1 of two; the default with two classes), `"macro"` (the
    unweighted mean over classes; the default with several classes), `"micro"` (from the counts of all
    classes together) or `"weighted"` (weighted by each class's true count); as scikit-learn's, classes
    neither present nor predicted left out and 0 where a ratio is 0/0. Predictions as in `accuracy`.
    Epoch value: from the confusion matrix summed over the batches."""


def _documented(doc: str):
    def set_doc(fn):
        fn.__doc__ = doc + " " + _AVERAGE_DOC
        return fn
    return set_doc


@builtin("metric")
@_documented("tp / (tp + fp) of the predicted classes.")
def precision(ctx, scores: Tensor, target: Tensor, average: str = None, threshold: float = 0.0):
    return _from_counts(ctx, "precision", scores, target, average, threshold)


@builtin("metric")
@_documented("tp / (tp + fn) of the true classes.")
def recall(ctx, scores: Tensor, target: Tensor, average: str = None, threshold: float = 0.0):
    return _from_counts(ctx, "recall", scores, target, average, threshold)


@builtin("metric")
@_documented("2·tp / (2·tp + fp + fn), the harmonic mean of precision and recall.")
def f1(ctx, scores: Tensor, target: Tensor, average: str = None, threshold: float = 0.0):
    return _from_counts(ctx, "f1", scores, target, average, threshold)


@builtin("metric")
def top_k_accuracy(ctx, scores: Tensor, target: Tensor, k: int = 5):
    """Fraction of examples whose true class (integer label) is among the `k` highest scores (ties
    counted in the label's favour). Epoch value: the mean over examples."""
    b = ctx.b
    s, t = scores.type, target.type
    if not (s.is_float and s.rank >= 1 and t.dtype in INT_DTYPES and t.shape == s.shape[:-1]):
        ctx.fail(f"`top_k_accuracy` of scores `{s}` and targets `{t}`: needs class scores and integer labels",
                 arg="target", hint="labels have the scores' shape without the last (class) axis")
    if k < 1:
        ctx.fail(f"`k` must be at least 1, got {k}", arg="k")
    ctx.note_classes(target, s.shape[-1])
    true_score = b.reduce_sum(b.mul(scores, b.one_hot(target, depth=s.shape[-1], dtype=s.dtype)), axes=(-1,),
                              keepdims=True)
    above = b.reduce_sum(b.cast(b.greater(scores, true_score), to=s.dtype), axes=(-1,))
    return b.reduce_mean(b.cast(b.less(above, b.scalar_like(k, above)), to=s.dtype))


@builtin("metric")
def mae(ctx, prediction: Tensor, target: Tensor):
    """mean |prediction - target| over all elements (also a loss: PyTorch's `l1_loss`). Epoch value:
    the mean over examples."""
    _same_shape(ctx, prediction, target, "mae")
    return ctx.b.reduce_mean(ctx.b.abs(ctx.b.sub(prediction, target)))
