"""Class and example weights of the losses: PyTorch's `weight` and `pos_weight`, Keras' `sample_weight`.

- `weight = (w_0, ..., w_{K-1})` of `cross_entropy`, a constant of the graph: each position's loss is
  scaled by the weight of its true class, and the mean is PyTorch's weighted mean Σ w_y·l / Σ w_y over
  the batch's positions (with probability targets -Σ_k w_k·t_k·log p_k, averaged over the positions, as
  PyTorch does). A batch whose positions all have weight 0 has loss 0, where PyTorch's is NaN.
- `pos_weight = p` (or one per column) of `binary_cross_entropy` scales the loss of the positive targets,
  -(p·t·log σ(x) + (1 - t)·log(1 - σ(x))), averaged over all elements as PyTorch's.
- `sample_weight = w` of every loss: a data tensor (a `target`, fed like the labels), its shape the leading
  axes of the loss's positions (`[B]`, or `[B, T]` for sequences); each position's loss is scaled by its
  weight and the divisor stays what it was (Keras' `sum_over_batch_size`, PyTorch's
  `(loss(reduction = "none") * w).mean()`). The loader rejects negative weights.
"""
from __future__ import annotations

import numpy as np

from dslc.diagnostics import Diagnostic, DslcError
from dslc.ir.graph import Node
from dslc.ir.types import INT_DTYPES, TensorType

Tensor = Node


def class_weights(ctx, weight, classes, fn: str, arg: str, per: str = "class") -> np.ndarray | None:
    """`weight` (a number or a tuple, `lower_calls.weights_value`) as an array, `[K]` or a scalar, checked:
    one per class or column (`classes`, the size of the last axis), none negative, not all 0 (classes)."""
    if weight is None:
        return None
    values = weight if isinstance(weight, tuple) else None
    spans = getattr(weight, "spans", ())
    if values is None:
        if per == "class":  # one weight for every class changes nothing in a weighted mean
            ctx.fail(f"`{arg}` of `{fn}` needs one weight per class, got the number {weight:g}", arg=arg,
                     hint=_per_class_hint(classes))
        values = (weight,)
    elif not isinstance(classes, int):
        ctx.fail(f"`{arg}` of `{fn}` needs a known number of classes; the class axis is `{classes}`", arg=arg,
                 hint="give the logits a fixed class axis, e.g. `dense(3)`")
    elif len(values) != classes:
        ctx.fail(f"`{arg}` of `{fn}` has {len(values)} weight{'s' * (len(values) != 1)}, but the logits have "
                 f"{classes} {per}{'es' if per == 'class' else 's'}", arg=arg,
                 label=f"{len(values)} weight{'s' * (len(values) != 1)}",
                 hint=_per_class_hint(classes) if per == "class" else
                 f"give one number (every column) or {classes}, one per column")
    for i, value in enumerate(values):
        if value < 0 or not np.isfinite(value):
            span = spans[i] if i < len(spans) else ctx.arg_span(arg)
            raise DslcError(Diagnostic(f"`{arg}` of `{fn}` must not be negative, got {value:g}" if value < 0 else
                                       f"`{arg}` of `{fn}` must be finite, got {value:g}", span,
                                       "a negative weight" if value < 0 else "not a finite number",
                                       "weights scale each term of the loss: 0 leaves it out, 1 keeps it as it "
                                       "is, larger counts it more"))
    if per == "class" and not any(values):
        ctx.fail(f"every weight of `{arg}` of `{fn}` is 0: no example would count", arg=arg,
                 hint=_per_class_hint(classes))
    return np.asarray(values if isinstance(weight, tuple) else weight, dtype=np.float64)


def _per_class_hint(classes) -> str:
    shown = ", ".join(["1"] * classes) if isinstance(classes, int) and classes <= 8 else "1, 1, ..."
    return f"give one number per class, in class order, as PyTorch's `weight`: `weight = ({shown})`"


def sample_weights(ctx, sample_weight: Tensor | None, positions: tuple, dtype: str, fn: str,
                   target: Tensor | None = None) -> Node | None:
    """`sample_weight` as a tensor of the losses' `dtype` that broadcasts against the positions' shape
    (`[B]` for `[B, T]` gets a trailing axis), after checking that its shape is their leading axes.
    Records it for the manifest and the loader (`Context.note_sample_weight`)."""
    if sample_weight is None:
        return None
    shape = sample_weight.type.shape
    if not positions:
        ctx.fail(f"`{fn}` of scalars has no examples to weight", arg="sample_weight")
    if sample_weight.type.dtype not in INT_DTYPES + ("bool",) and not sample_weight.type.is_float:
        ctx.fail(f"`sample_weight` of `{fn}` must be numbers, got `{sample_weight.type}`", arg="sample_weight")
    if not shape or tuple(shape) != tuple(positions[:len(shape)]):
        shapes = [TensorType(dtype, tuple(positions[:n])) for n in range(1, len(positions) + 1)]
        name = sample_weight.name if sample_weight.op == "input" else "w"
        ctx.fail(f"`sample_weight` `{sample_weight.type}` does not match the loss's positions "
                 f"`[{', '.join(map(str, positions))}]`", arg="sample_weight", label="one weight per example",
                 hint=f"declare it as `target {name}: {shapes[0]}`, one weight per example"
                 + (f" (or `{shapes[-1]}`, one per position)" if len(shapes) > 1 else ""))
    ctx.note_sample_weight(sample_weight, target)
    weights = sample_weight if sample_weight.type.dtype == dtype else ctx.b.cast(sample_weight, to=dtype)
    extra = len(positions) - len(shape)
    return ctx.b.unsqueeze(weights, axes=tuple(range(len(shape), len(shape) + extra))) if extra else weights


def weighted_mean(ctx, per_position: Tensor, samples: Node | None, divisor: Node | None = None) -> Node:
    """Σ s·l / divisor (the number of positions when `divisor` is None) over the loss's positions; a
    divisor of 0 (every class weight of the batch 0) gives 0."""
    scaled = per_position if samples is None else ctx.b.mul(per_position, samples)
    if divisor is None:
        return ctx.b.reduce_mean(scaled, axes=None)
    b = ctx.b
    zero = b.equal(divisor, b.scalar_like(0.0, divisor))
    safe = b.where(zero, b.scalar_like(1.0, divisor), divisor)
    return b.div(b.reduce_sum(scaled, axes=None), safe)
