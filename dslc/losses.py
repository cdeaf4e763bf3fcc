"""Losses and weight penalties callable from `.dl` files (metrics: `dslc/metrics.py`). Each returns a scalar."""
from __future__ import annotations

import fnmatch

from dslc.builtins import builtin
from dslc.ir.graph import Node
from dslc.ir.types import INT_DTYPES
from dslc.loss_weights import class_weights, sample_weights, weighted_mean

Tensor = Node
Selector = str
Weights = float  # a number or a tuple of numbers: `lower_calls.weights_value`


def _batch_mean(ctx, per_example: Tensor) -> Tensor:
    return ctx.b.reduce_mean(per_example, axes=None)


_SHAPE_ONLY = ("reshape", "flatten", "squeeze", "unsqueeze")


def _output_of(value: Tensor, op: str) -> Tensor | None:
    """The `op` node whose output `value` is, directly or through shape-only ops (`reshape`, `flatten`)."""
    while value.op in _SHAPE_ONLY:
        value = value.inputs[0]
    return value if value.op == op else None


def _shown(ctx, arg: str, fallback: str) -> str:
    """Argument `arg` as written, in backticks when it is short, else `fallback`."""
    text = ctx.arg_text(arg)
    return f"`{text}`" if len(text) <= 24 and "\n" not in text else fallback


def _warn_squashed(ctx, value: Tensor, arg: str, op: str, message: str, hint: str) -> bool:
    """Warn that `value` is already the output of `op` (`sigmoid`, `softmax`); whether it was."""
    node = _output_of(value, op)
    if node is None:
        return False
    span = ctx.arg_span(arg)
    notes = ((f"the `{op}` is here", node.span),) if node.span is not None and span is not None \
        and not (span.start <= node.span.start and node.span.end <= span.end) else ()
    ctx.warn(message, arg=arg, label=f"a {op} output", hint=hint, notes=notes)
    return True


@builtin("loss")
def mse(ctx, prediction: Tensor, target: Tensor, sample_weight: Tensor = None):
    """mean((prediction - target)²) over all elements; `sample_weight = w` (a target of the prediction's
    leading axes, `[B]`) scales each example's terms, the divisor unchanged (Keras' `sample_weight`)"""
    _same_shape(ctx, prediction, target, "mse")
    diff = ctx.b.sub(prediction, target)
    if sample_weight is None:
        return ctx.b.reduce_mean(ctx.b.mul(diff, diff))
    weights = sample_weights(ctx, sample_weight, prediction.type.shape, prediction.type.dtype, "mse", target)
    return weighted_mean(ctx, ctx.b.mul(diff, diff), weights)


@builtin("loss")
def cross_entropy(ctx, logits: Tensor, target: Tensor, label_smoothing: float = 0.0, weight: Weights = None,
                  sample_weight: Tensor = None):
    """Softmax cross-entropy on raw scores (logits, classes on the last axis), averaged over every position:
    the examples of `[B, C]`, the B·T steps of sequence logits `[B, T, C]` (PyTorch's `mean` over
    `[B, C, T]`, which puts the classes on axis 1). `target` is either integer class labels (the logits'
    shape without the class axis) or probabilities / one-hot rows (the logits' shape). `label_smoothing = ε`
    mixes the target with the uniform distribution over the K classes, (1 - ε)·target + ε/K, as PyTorch's
    `label_smoothing`. `weight = (w_0, ..., w_{K-1})`: PyTorch's class weights, the mean weighted by the
    true classes' weights, Σ w_y·loss / Σ w_y (with probability targets the loss is -Σ w_k·t_k·log p_k and
    the mean is over the positions). `sample_weight = w`: per-example weights fed as data (a target `[B]`,
    or `[B, T]` for sequences), as Keras' `sample_weight`: each position's loss times its weight, the
    divisor unchanged."""
    if not 0 <= label_smoothing <= 1:
        ctx.fail(f"`label_smoothing` must be in [0, 1], got {label_smoothing}", arg="label_smoothing")
    _check_cross_entropy(ctx, logits, target)
    if weight is not None or sample_weight is not None:
        return _weighted_cross_entropy(ctx, logits, target, label_smoothing, weight, sample_weight)
    loss = _cross_entropy(ctx, logits, target)
    if not label_smoothing:
        return loss
    # (1-ε)·CE(target) + ε·CE(uniform): the cross-entropy is linear in the target
    uniform = ctx.b.reduce_mean(ctx.b.neg(ctx.b.reduce_mean(ctx.b.log_softmax(logits, axis=-1), axes=(-1,))))
    return ctx.b.add(ctx.b.mul(loss, ctx.b.scalar_like(1.0 - label_smoothing, loss)),
                     ctx.b.mul(uniform, ctx.b.scalar_like(label_smoothing, uniform)))


def one_score_per_example(ctx, t) -> bool:
    """Scores `[B]`: the only axis is the batch (symbolic, or pinned by `--dim`), so the last axis is no
    class axis (an arg-max or softmax along it would mix the examples)."""
    return t.rank == 1 and (not isinstance(t.shape[0], int) or t.shape[0] in ctx.pinned_sizes)


def _check_cross_entropy(ctx, logits: Tensor, target: Tensor):
    _warn_squashed(ctx, logits, "logits", "softmax",
                   f"`cross_entropy` applies the softmax itself, but {_shown(ctx, 'logits', 'its input')} is already a "
                   "softmax output", hint="pass the logits (the value before `softmax`)")
    if not logits.type.is_float or logits.type.rank < 1:
        ctx.fail(f"`cross_entropy` needs floating-point logits with a class axis, got `{logits.type}`", arg="logits")
    if one_score_per_example(ctx, logits.type):
        ctx.fail(f"`cross_entropy` of logits `{logits.type}` would take the softmax across the batch", arg="logits",
                 label="one score per example, no class axis",
                 hint="two classes with one score per example are `binary_cross_entropy(logits, target)` with 0/1 "
                      "targets of the logits' shape; otherwise give one score per class, e.g. `dense(2)`")
    if logits.type.shape[-1] == 1:  # a softmax over one class is 1: the loss is 0 and nothing would learn
        ctx.fail(f"`cross_entropy` of logits `{logits.type}` with one class is always 0", arg="logits",
                 label="a class axis of size 1",
                 hint="two classes with one score per example are `binary_cross_entropy(logits, target)` with 0/1 "
                      "targets of the logits' shape; otherwise give one score per class, e.g. `dense(2)`")
    if target.type.dtype in INT_DTYPES:
        if target.type.shape != logits.type.shape[:-1]:
            ctx.fail(f"class labels `{target.type}` do not match logits `{logits.type}`", arg="target",
                     hint="integer labels have the logits' shape without the last (class) axis")
        ctx.note_classes(target, logits.type.shape[-1])
        return
    if target.type.dtype != logits.type.dtype or target.type.shape != logits.type.shape:
        ctx.fail(f"targets `{target.type}` do not match logits `{logits.type}`", arg="target",
                 hint="give integer class labels, or one probability per class")
    ctx.note_range(target, 0, 1)


def _cross_entropy(ctx, logits: Tensor, target: Tensor):
    if target.type.dtype in INT_DTYPES:
        return _batch_mean(ctx, ctx.b.softmax_cross_entropy(logits, target))
    per_example = ctx.b.neg(ctx.b.reduce_sum(ctx.b.mul(target, ctx.b.log_softmax(logits, axis=-1)), axes=(-1,)))
    return _batch_mean(ctx, per_example)


def _weighted_cross_entropy(ctx, logits: Tensor, target: Tensor, smoothing: float, weight, sample_weight):
    """The cross-entropy with class weights (PyTorch's `weight`) and/or example weights (`loss_weights`)."""
    b, dtype, classes = ctx.b, logits.type.dtype, logits.type.shape[-1]
    values = class_weights(ctx, weight, classes, "cross_entropy", "weight")
    samples = sample_weights(ctx, sample_weight, logits.type.shape[:-1], dtype, "cross_entropy", target)
    w = None if values is None else b.const(values, dtype)
    divisor = None
    if target.type.dtype in INT_DTYPES:
        per = b.softmax_cross_entropy(logits, target)
        if w is not None:
            true_weights = b.gather_rows(w, target)
            per, divisor = b.mul(per, true_weights), b.reduce_sum(true_weights, axes=None)
        if smoothing:  # PyTorch: (1-ε)·w_y·(-log p_y) + ε/K·Σ_k w_k·(-log p_k), over the same Σ w_y
            log_p = b.log_softmax(logits, axis=-1)
            spread = b.neg(b.reduce_mean(log_p if w is None else b.mul(log_p, w), axes=(-1,)))
            per = b.add(b.mul(per, b.scalar_like(1.0 - smoothing, per)), b.mul(spread, b.scalar_like(smoothing, spread)))
    else:
        mixed = target if not smoothing else b.add(b.mul(target, b.scalar_like(1.0 - smoothing, target)),
                                                   b.scalar_like(smoothing / classes, target))
        mixed = mixed if w is None else b.mul(mixed, w)
        per = b.neg(b.reduce_sum(b.mul(mixed, b.log_softmax(logits, axis=-1)), axes=(-1,)))
    return weighted_mean(ctx, per, samples, divisor)


@builtin("loss")
def binary_cross_entropy(ctx, logits: Tensor, target: Tensor, pos_weight: Weights = None,
                         sample_weight: Tensor = None):
    """Sigmoid cross-entropy on raw scores, averaged over all elements: stable for any logit
    (max(x, 0) - x·t + log(1 + e^-|x|)). Targets are 0/1 (or probabilities) of the logits' shape. PyTorch's
    `binary_cross_entropy_with_logits`, Keras' with `from_logits=True`: given probabilities (a `sigmoid`
    output) it warns. `pos_weight = p` (a number, or one per column of the last axis): PyTorch's, the
    positives' term weighted, -(p·t·log σ(x) + (1 - t)·log(1 - σ(x))). `sample_weight = w`: per-example
    weights fed as data (a target of the logits' leading axes, `[B]`), as Keras' `sample_weight`: each
    element's loss times its example's weight, the divisor unchanged."""
    _warn_squashed(ctx, logits, "logits", "sigmoid",
                   f"`binary_cross_entropy` applies the sigmoid itself, but {_shown(ctx, 'logits', 'its input')} is "
                   "already a sigmoid output", hint="pass the logits (the value before `sigmoid`)")
    ctx.note_range(target, 0, 1)
    ctx.note_multi_label(target)
    labels = target
    if target.type.dtype in INT_DTYPES or target.type.dtype == "bool":
        target = ctx.b.cast(target, to=logits.type.dtype)
    _same_shape(ctx, logits, target, "binary_cross_entropy")
    per = ctx.b.sigmoid_binary_cross_entropy(logits, target)
    if pos_weight is None and sample_weight is None:
        return ctx.b.reduce_mean(per)
    b, dtype = ctx.b, logits.type.dtype
    columns = logits.type.shape[-1] if logits.type.rank >= 2 else 1
    values = class_weights(ctx, pos_weight, columns, "binary_cross_entropy", "pos_weight", per="column")
    samples = sample_weights(ctx, sample_weight, logits.type.shape, dtype, "binary_cross_entropy", labels)
    if values is not None:
        # + (p - 1)·t·(-log σ(x)), where -log σ(x) = loss - (1 - t)·x
        x, t = logits, target
        softplus_neg = b.sub(per, b.mul(b.sub(b.scalar_like(1.0, t), t), x))
        per = b.add(per, b.mul(b.const(values - 1.0, dtype), b.mul(t, softplus_neg)))
    return weighted_mean(ctx, per, samples)


def _same_shape(ctx, a: Tensor, b: Tensor, fn: str):
    if not a.type.is_float:
        ctx.fail(f"`{fn}` needs floating-point predictions, got `{a.type}`", arg=0)
    if a.type.dtype != b.type.dtype or a.type.shape != b.type.shape:
        hint = "the shapes must be equal: no silent broadcasting in losses"
        if a.type.shape[:-1] == b.type.shape and a.type.shape[-1:] == (1,):
            first, target = ctx.written(0), ctx.written(1)
            short = first is not None and target is not None and len(first + target) <= 40 and "\n" not in first + target
            hint = (f"the target has no trailing axis of size 1: declare it as `{_shape_text(a)}`, or drop the "
                    f"prediction's with `squeeze`" + (f": `{fn}(squeeze({first}), {target})`" if short else ""))
        ctx.fail(f"`{fn}` of `{a.type}` and `{b.type}`: shapes or dtypes differ", arg=1, hint=hint)


def _shape_text(t: Tensor) -> str:
    return str(t.type)


# ---- penalties ----------------------------------------------------------------------------------
def matches(selector: str, name: str, kind: str) -> bool:
    """Whether a parameter selector picks parameter `name` of `kind`: `weights` (all kernels), `biases`,
    `params` (everything), a layer name (`head` picks `head.weight` and `head.bias`) or a glob pattern."""
    if selector == "weights":
        return kind == "weight"
    if selector == "biases":
        return kind == "bias"
    if selector == "params":
        return True
    return fnmatch.fnmatchcase(name, selector) or name.startswith(selector + ".")


class ValueName(str):
    """A selector written as a bare name that is also a tensor value of the model (`l2(logits)`)."""


def nothing_selected_hint(selector: str, params: list[Tensor]) -> str:
    from dslc.diagnostics import suggest

    layers = sorted({p.name.rsplit(".", 1)[0] for p in params})
    hint = suggest(selector, layers) or (f"layers here: {', '.join(f'`{name}`' for name in layers)}" if layers
                                         else "the model has no parameters")
    if isinstance(selector, ValueName):
        return (f"`{selector}` is a value, not a layer: parameters are selected by `weights`, `biases`, `params`, "
                f"or layer names and patterns such as `\"dense_0\"`; {hint}")
    return hint


def select_params(ctx, selectors: tuple[str, ...], fn: str) -> list[Tensor]:
    """The parameters picked by `selectors` (see `matches`); all kernels when none are given."""
    if not selectors:
        selectors = ("weights",)
    chosen: dict[str, Tensor] = {}
    for index, sel in enumerate(selectors):
        found = [p for p in ctx.params if matches(sel, p.name, ctx.param_kind(p))]
        if not found:
            ctx.fail(f"`{fn}` selects no parameters with `{sel}`", arg=index, hint=nothing_selected_hint(sel, ctx.params))
        for p in found:
            chosen[p.name] = p
    return list(chosen.values())


@builtin("penalty")
def l2(ctx, *selectors: Selector):
    """Σ w² over the selected parameters: `l2(weights)` (all kernels, the default), `l2(params)`,
    `l2(biases)`, or layer names / glob patterns such as `l2("dense_0", "enc*")`. No 1/2: Keras'
    `kernel_regularizer = l2(λ)` is `λ * l2("layer")`; PyTorch's `weight_decay = λ` is `λ/2 * l2(params)`."""
    params = select_params(ctx, selectors, "l2")
    terms = [ctx.b.reduce_sum(ctx.b.mul(p, p)) for p in params]
    return _total(ctx, terms)


@builtin("penalty")
def l1(ctx, *selectors: Selector):
    """Σ |w| over the selected parameters (selection as for `l2`)."""
    params = select_params(ctx, selectors, "l1")
    return _total(ctx, [ctx.b.reduce_sum(ctx.b.abs(p)) for p in params])


def _total(ctx, terms: list[Tensor]) -> Tensor:
    total = terms[0]
    for term in terms[1:]:
        total = ctx.b.add(total, term)
    return total
