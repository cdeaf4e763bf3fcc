"""Layer normalization (batch normalization, which keeps running statistics, is in `batchnorm.py`)."""
from __future__ import annotations

from dslc.builtins import builtin
from dslc.initializers import Initializer
from dslc.ir.graph import Node

Tensor = Node


@builtin("layer")
def layer_norm(ctx, x: Tensor, *, eps: float = 1e-5, name: str = None):
    """Layer normalization over the last axis (PyTorch's `nn.LayerNorm(D)`): each vector `x[..., :]` is
    normalized to mean 0 and variance 1 (biased variance, `eps` added), then scaled by `weight`
    (ones) and shifted by `bias` (zeros), both `[D]`. Any rank ≥ 1 with a known last dimension."""
    width = x.type.shape[-1] if x.type.rank else None
    if not x.type.is_float:
        ctx.fail(f"`layer_norm` needs floating-point values, got `{x.type}`", arg="x")
    if not isinstance(width, int):
        ctx.fail(f"`layer_norm` needs a known last dimension, got `{x.type}`", arg="x",
                 hint="it normalizes the vectors along the last axis, so that axis needs a fixed size")
    if not eps > 0:
        ctx.fail(f"`layer_norm` eps must be positive, got {eps}", arg="eps")
    layer = ctx.new_layer("layer_norm", name)
    weight = ctx.param(layer, "weight", (width,), Initializer("ones"), "scale", fan_in=width, fan_out=width)
    bias = ctx.param(layer, "bias", (width,), Initializer("zeros"), "bias", fan_in=width, fan_out=width)
    return ctx.b.add(ctx.b.mul(ctx.b.normalize(x, eps=eps), weight), bias)
