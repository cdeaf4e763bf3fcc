"""Fused loss ops whose gradients are simpler and stabler than their decomposition."""
from __future__ import annotations

import numpy as np

from dslc.ir.graph import OpError
from dslc.ir.types import INT_DTYPES, TensorType
from dslc.ops.nn import label_hits
from dslc.ops.registry import OpDef, Sample, expect_float, op


@op("softmax_cross_entropy")
class SoftmaxCrossEntropy(OpDef):
    """loss[...] = -log softmax(logits)[..., labels[...]] per element; classes on the last axis.
    Gradient: (softmax(logits) - one_hot(labels)) · grad_out."""

    samples = [Sample(((5, 4), ("int", (5,), 4))), Sample(((2, 3, 4), ("int", (2, 3), 4)))]

    def infer(self, logits, labels):
        expect_float(logits, "logits tensor")
        if labels.dtype not in INT_DTYPES:
            raise OpError(f"class labels must be integers, got `{labels}`")
        if logits.rank < 1 or labels.shape != logits.shape[:-1]:
            raise OpError(f"labels `{labels}` do not match logits `{logits}`",
                          hint="labels have the logits' shape without the last (class) axis")
        return TensorType(logits.dtype, labels.shape)

    def lower(self, e, logits, labels):
        # The label's entry is picked by a comparison with the class numbers, not `GatherElements`:
        # onnx.reference implements that with `np.choose`, which takes at most 64 classes.
        last = logits.type.rank - 1
        log_probs = e.node("LogSoftmax", logits, axis=last)
        hit = label_hits(e, labels, logits.type.shape[-1])  # the gradient's one_hot shares it
        # Where, not a multiply by the cast hits: a -inf log-probability of another class stays out of the sum
        picked = e.node("Where", hit, log_probs, e.scalar(0.0, logits.type.dtype))
        return e.node("Neg", e.node("ReduceSum", picked, e.int64s([last]), keepdims=0))

    def torch(self, T, logits, labels):
        flat = T.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1).long(),
                                             reduction="none")
        return flat.reshape(labels.shape)

    def evaluate(self, logits, labels):
        z = logits - logits.max(axis=-1, keepdims=True)
        log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        return -np.take_along_axis(log_probs, labels[..., None].astype(np.int64), axis=-1)[..., 0]

    def grad(self, b, g, out, logits, labels):
        classes = logits.type.shape[-1]
        diff = b.sub(b.softmax(logits, axis=-1), b.one_hot(labels, depth=classes, dtype=logits.type.dtype))
        return [b.mul(diff, b.unsqueeze(g, axes=(-1,))), None]


@op("sigmoid_binary_cross_entropy")
class SigmoidBinaryCrossEntropy(OpDef):
    """loss = max(x, 0) - x·t + log(1 + exp(-|x|)) element-wise, for logits x and targets t in [0, 1]
    (stable for any x). Gradient: (sigmoid(x) - t) · grad_out, and -x · grad_out for t."""

    samples = [Sample(((4, 3), (4, 3)))]

    def infer(self, x, t):
        expect_float(x, "logits tensor")
        if t.dtype != x.dtype or t.shape != x.shape:
            raise OpError(f"targets `{t}` do not match logits `{x}`", hint="give one target per logit, as floats")
        return x

    def lower(self, e, x, t):
        softplus = e.node("Log", e.node("Add", e.scalar(1.0, x.type.dtype), e.node("Exp", e.node("Neg", e.node("Abs", x)))))
        return e.node("Add", e.node("Sub", e.node("Relu", x), e.node("Mul", x, t)), softplus)

    def torch(self, T, x, t):
        return T.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none")

    def evaluate(self, x, t):
        return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))

    def grad(self, b, g, out, x, t):
        return [b.mul(g, b.sub(b.sigmoid(x), t)), b.neg(b.mul(g, x))]
