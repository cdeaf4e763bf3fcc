"""Batch normalization: the running statistics are buffers, updated by the training graph and read by
the evaluation and inference graphs."""
from __future__ import annotations

import numpy as np

from dslc.builtins import builtin
from dslc.initializers import Initializer
from dslc.ir.graph import Node
from dslc.spelling import option

Tensor = Node


@builtin("layer")
def batch_norm(ctx, x: Tensor, *, momentum: float = 0.1, eps: float = 1e-5, name: str = None):
    """Batch normalization over the channel axis 1 of `[B, C]`, `[B, C, L]` or `[B, C, H, W]` (PyTorch's
    BatchNorm1d/2d): in training, each channel is normalized with the batch's mean and (biased)
    variance, then scaled by `weight` (ones) and shifted by `bias` (zeros); the buffers `running_mean`
    and `running_var` move towards the batch statistics by `momentum` (the variance unbiased), and
    evaluation and inference normalize with them instead. Training needs more than one value per
    channel in a batch (`dslc train` refuses a 1-sample batch of `[B, C]`, as PyTorch does)."""
    b = ctx.b
    if x.type.dtype != ctx.float_dtype:
        what = "a floating-point input" if not x.type.is_float else f"an input of the model's dtype `{ctx.float_dtype}`"
        ctx.fail(f"`batch_norm` needs {what}, got `{x.type}`", arg="x", hint='convert it with `cast(x, "f32")`'
                 + (f", or build with {option('dtype', 'float64')}" if x.type.is_float else ""))
    if x.type.rank < 2:
        ctx.fail(f"`batch_norm` expects `[B, C, ...]`, got `{x.type}`", arg="x")
    channels = x.type.shape[1]
    if not isinstance(channels, int):
        ctx.fail(f"`batch_norm` needs a known number of channels (axis 1), got `{x.type}`", arg="x")
    if not 0.0 <= momentum <= 1.0:
        ctx.fail(f"`batch_norm` momentum must be in [0, 1], got {momentum}", arg="momentum")
    if eps <= 0:
        ctx.fail(f"`batch_norm` eps must be positive, got {eps}", arg="eps")
    _warn_cancelled_bias(ctx, x)
    layer = ctx.new_layer("batch_norm", name)
    weight = ctx.param(layer, "weight", (channels,), Initializer("ones"), "scale", fan_in=channels, fan_out=channels)
    bias = ctx.param(layer, "bias", (channels,), Initializer("zeros"), "bias", fan_in=channels, fan_out=channels)
    running_mean = ctx.buffer(layer, "running_mean", np.zeros(channels))
    running_var = ctx.buffer(layer, "running_var", np.ones(channels))
    per_channel = (1, channels) + (1,) * (x.type.rank - 2)  # broadcasts a [C] vector over x
    axes = (0,) + tuple(range(2, x.type.rank))
    spread = lambda v: b.reshape(v, shape=per_channel)  # noqa: E731
    if ctx.mode == "train":
        mean = b.reduce_mean(x, axes=axes, keepdims=True)
        centered = b.sub(x, mean)
        var = b.reduce_mean(b.mul(centered, centered), axes=axes, keepdims=True)
        count = b.size_of(x, axes=axes)
        unbiased = b.mul(b.reshape(var, shape=(channels,)), b.div(count, b.sub(count, b.scalar_like(1.0, count))))
        keep = b.scalar_like(1.0 - momentum, x)
        step = b.scalar_like(momentum, x)
        ctx.update_buffer(running_mean, b.add(b.mul(keep, running_mean), b.mul(step, b.reshape(mean, shape=(channels,)))))
        ctx.update_buffer(running_var, b.add(b.mul(keep, running_var), b.mul(step, unbiased)))
    else:
        centered = b.sub(x, spread(running_mean))
        var = spread(running_var)
    normalized = b.div(centered, b.sqrt(b.add(var, b.scalar_like(eps, x))))
    return b.add(b.mul(normalized, spread(weight)), spread(bias))


def _warn_cancelled_bias(ctx, x: Tensor) -> None:
    """Warn when `x` is a `dense` or convolution output with a bias: batch normalization subtracts each
    channel's batch mean, bias included, so that bias only ever gets a zero gradient plus rounding
    noise, which Adam scales up to steps of the learning rate's size (the runtimes then disagree on it)."""
    if x.op not in ("gemm", "conv") or len(x.inputs) < 3:
        return
    bias = x.inputs[2]
    if bias.op == "input" and bias.role == "param" and ctx.param_kind(bias) == "bias":
        layer = bias.name.rsplit(".", 1)[0]
        ctx.warn(f"the bias of `{layer}` is cancelled by `batch_norm`, which subtracts each channel's batch mean",
                 arg="x", label="a layer with a bias",
                 hint="build that layer with `bias = false` (batch_norm's own `bias` takes its place)")
