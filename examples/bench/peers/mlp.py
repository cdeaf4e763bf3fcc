"""The MNIST multi-layer perceptron (models/mlp.dl, examples/bench/mlp_adam.dl) as a PyTorch user and a
JAX user would write it: `nn.Linear` layers with ReLU between them and `F.cross_entropy`; in JAX, `x @ W + b`
on a dict of arrays and optax's cross-entropy. The layer sizes are read from the weights, so `-D hidden=...`
works. dslc stores a dense weight as [in, out], `nn.Linear` as [out, in]."""
from __future__ import annotations

from dslc.peers import Renaming

MODELS = ("mlp", "mlp_adam")


def sizes(weights, graph) -> dict:
    count = sum(1 for name in weights if name.startswith("dense_") and name.endswith(".weight"))
    return {"layers": [weights[f"dense_{k}.weight"].shape for k in range(count)]}


def renaming(sizes) -> Renaming:
    return Renaming([(f"dense_{k}.{p}", f"layers.{k}.{p}", p == "weight")
                     for k in range(len(sizes["layers"])) for p in ("weight", "bias")])


def torch_model(torch, sizes):
    nn, F = torch.nn, torch.nn.functional

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(fan_in, fan_out) for fan_in, fan_out in sizes["layers"])

        def forward(self, image):
            x = image
            for layer in self.layers[:-1]:
                x = F.relu(layer(x))
            return self.layers[-1](x)

    return MLP()


def torch_loss(torch, model, batch):
    return torch.nn.functional.cross_entropy(model(batch["image"]), batch["label"])


def torch_infer(torch, model, inputs):
    return {"probs": torch.softmax(model(inputs["image"]), dim=-1)}


def _jax_logits(jax, sizes, params, image):
    x = image
    count = len(sizes["layers"])
    for k in range(count):
        x = x @ params[f"dense_{k}.weight"] + params[f"dense_{k}.bias"]
        if k < count - 1:
            x = jax.nn.relu(x)
    return x


def jax_loss(jax, optax, sizes, params, batch):
    logits = _jax_logits(jax, sizes, params, batch["image"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()


def jax_infer(jax, sizes, params, inputs):
    return {"probs": jax.nn.softmax(_jax_logits(jax, sizes, params, inputs["image"]), axis=-1)}
