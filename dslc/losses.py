"""Losses and weight penalties callable from `.dl` files (metrics: `dslc/metrics.py`). Each returns a scalar."""
from __future__ import annotations

import fnmatch

from dslc.builtins import builtin
from dslc.ir.graph import Node
from dslc.ir.types import INT_DTYPES

Tensor = Node
Selector = str


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
def mse(ctx, prediction: Tensor, target: Tensor):
    """mean((prediction - target)²) over all elements"""
    _same_shape(ctx, prediction, target, "mse")
    diff = ctx.b.sub(prediction, target)
    return ctx.b.reduce_mean(ctx.b.mul(diff, diff))


@builtin("loss")
def cross_entropy(ctx, logits: Tensor, target: Tensor, label_smoothing: float = 0.0):
    """Softmax cross-entropy on raw scores (logits, classes on the last axis), averaged over every position:
    the examples of `[B, C]`, the B·T steps of sequence logits `[B, T, C]` (PyTorch's `mean` over
    `[B, C, T]`, which puts the classes on axis 1). `target` is either integer class labels (the logits'
    shape without the class axis) or probabilities / one-hot rows (the logits' shape). `label_smoothing = ε`
    mixes the target with the uniform distribution over the K classes, (1 - ε)·target + ε/K, as PyTorch's
    `label_smoothing`."""
    if not 0 <= label_smoothing <= 1:
        ctx.fail(f"`label_smoothing` must be in [0, 1], got {label_smoothing}", arg="label_smoothing")
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


def _cross_entropy(ctx, logits: Tensor, target: Tensor):
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
        return _batch_mean(ctx, ctx.b.softmax_cross_entropy(logits, target))
    if target.type.dtype != logits.type.dtype or target.type.shape != logits.type.shape:
        ctx.fail(f"targets `{target.type}` do not match logits `{logits.type}`", arg="target",
                 hint="give integer class labels, or one probability per class")
    ctx.note_range(target, 0, 1)
    per_example = ctx.b.neg(ctx.b.reduce_sum(ctx.b.mul(target, ctx.b.log_softmax(logits, axis=-1)), axes=(-1,)))
    return _batch_mean(ctx, per_example)


@builtin("loss")
def binary_cross_entropy(ctx, logits: Tensor, target: Tensor):
    """Sigmoid cross-entropy on raw scores, averaged over all elements: stable for any logit
    (max(x, 0) - x·t + log(1 + e^-|x|)). Targets are 0/1 (or probabilities) of the logits' shape. PyTorch's
    `binary_cross_entropy_with_logits`, Keras' with `from_logits=True`: given probabilities (a `sigmoid`
    output) it warns."""
    _warn_squashed(ctx, logits, "logits", "sigmoid",
                   f"`binary_cross_entropy` applies the sigmoid itself, but {_shown(ctx, 'logits', 'its input')} is "
                   "already a sigmoid output", hint="pass the logits (the value before `sigmoid`)")
    ctx.note_range(target, 0, 1)
    ctx.note_multi_label(target)
    if target.type.dtype in INT_DTYPES or target.type.dtype == "bool":
        target = ctx.b.cast(target, to=logits.type.dtype)
    _same_shape(ctx, logits, target, "binary_cross_entropy")
    return ctx.b.reduce_mean(ctx.b.sigmoid_binary_cross_entropy(logits, target))


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
