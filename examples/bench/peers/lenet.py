"""LeNet-5 (models/lenet.dl) as a PyTorch user and a JAX user would write it: `nn.Conv2d`, `F.max_pool2d`,
`nn.Linear`; in JAX, `lax.conv_general_dilated` and `lax.reduce_window`. dslc's convolution weights are
PyTorch's ([out, in, kh, kw]); its dense weights are [in, out]."""
from __future__ import annotations

from dslc.peers import Renaming

MODELS = ("lenet",)
CONVS = (("conv2d_0", "conv1", 2), ("conv2d_1", "conv2", 0))  # dslc layer, torch module, padding
DENSES = (("dense_0", "fc1"), ("dense_1", "fc2"), ("dense_2", "fc3"))


def sizes(weights, graph) -> dict:
    return {name: weights[name].shape for name in weights if name.endswith(".weight")}


def renaming(sizes) -> Renaming:
    pairs = [(f"{dslc}.{p}", f"{torch}.{p}", False) for dslc, torch, _ in CONVS for p in ("weight", "bias")]
    pairs += [(f"{dslc}.{p}", f"{torch}.{p}", p == "weight") for dslc, torch in DENSES for p in ("weight", "bias")]
    return Renaming(pairs)


def torch_model(torch, sizes):
    nn, F = torch.nn, torch.nn.functional

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            for dslc, name, padding in CONVS:
                out_channels, in_channels, kernel, _ = sizes[f"{dslc}.weight"]
                setattr(self, name, nn.Conv2d(in_channels, out_channels, kernel, padding=padding))
            for dslc, name in DENSES:
                setattr(self, name, nn.Linear(*sizes[f"{dslc}.weight"]))

        def forward(self, image):
            x = F.max_pool2d(F.relu(self.conv1(image)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = x.flatten(1)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            return self.fc3(x)

    return LeNet()


def torch_loss(torch, model, batch):
    return torch.nn.functional.cross_entropy(model(batch["image"]), batch["label"])


def torch_infer(torch, model, inputs):
    return {"probs": torch.softmax(model(inputs["image"]), dim=-1)}


def _jax_logits(jax, params, image):  # the sizes are the arrays' own
    lax = jax.lax
    x = image
    for dslc, _, padding in CONVS:
        x = lax.conv_general_dilated(x, params[f"{dslc}.weight"], (1, 1), [(padding, padding)] * 2,
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
        x = jax.nn.relu(x + params[f"{dslc}.bias"][None, :, None, None])
        x = lax.reduce_window(x, -jax.numpy.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    x = x.reshape(x.shape[0], -1)
    for k, (dslc, _) in enumerate(DENSES):
        x = x @ params[f"{dslc}.weight"] + params[f"{dslc}.bias"]
        if k < len(DENSES) - 1:
            x = jax.nn.relu(x)
    return x


def jax_loss(jax, optax, sizes, params, batch):
    logits = _jax_logits(jax, params, batch["image"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()


def jax_infer(jax, sizes, params, inputs):
    return {"probs": jax.nn.softmax(_jax_logits(jax, params, inputs["image"]), axis=-1)}
