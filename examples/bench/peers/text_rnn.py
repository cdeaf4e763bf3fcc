"""The GRU text classifier (models/text_rnn.dl) as a PyTorch user and a JAX user would write it:
`nn.Embedding` → `nn.GRU(batch_first=True)` → `nn.Linear` on the last hidden state; in JAX, the input
projections of all steps as one matrix product and the recurrence as `lax.scan`. dslc names the GRU's
parameters like PyTorch and uses its gate order (r, z, n, the reset gate applied to h·W_hn + b_hn) but
stores the matrices as [in, 3·hidden]: PyTorch's are their transposes."""
from __future__ import annotations

from dslc.peers import Renaming

MODELS = ("text_rnn",)
GRU = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def sizes(weights, graph) -> dict:
    vocab, dim = weights["embedding_0.weight"].shape
    hidden, classes = weights["dense_0.weight"].shape
    return {"vocab": vocab, "dim": dim, "hidden": hidden, "classes": classes}


def renaming(sizes) -> Renaming:
    pairs = [("embedding_0.weight", "embedding.weight", False)]
    pairs += [(f"gru_0.{p}", f"gru.{p}", p.startswith("weight")) for p in GRU]
    pairs += [(f"dense_0.{p}", f"head.{p}", p == "weight") for p in ("weight", "bias")]
    return Renaming(pairs)


def torch_model(torch, sizes):
    nn = torch.nn
    vocab, dim, hidden, classes = sizes["vocab"], sizes["dim"], sizes["hidden"], sizes["classes"]

    class TextRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab, dim)
            self.gru = nn.GRU(dim, hidden, batch_first=True)
            self.head = nn.Linear(hidden, classes)

        def forward(self, ids):
            _, last = self.gru(self.embedding(ids))  # last: [layers, B, hidden]
            return self.head(last[-1])

    return TextRNN()


def torch_loss(torch, model, batch):
    return torch.nn.functional.cross_entropy(model(batch["ids"]), batch["label"])


def torch_infer(torch, model, inputs):
    return {"probs": torch.softmax(model(inputs["ids"]), dim=-1)}


def _jax_logits(jax, params, ids):  # the sizes are the arrays' own
    jnp = jax.numpy
    x = params["embedding_0.weight"][ids]  # [B, T, dim]
    w_hh, b_hh = params["gru_0.weight_hh_l0"], params["gru_0.bias_hh_l0"]
    hidden = w_hh.shape[0]
    projected = x @ params["gru_0.weight_ih_l0"] + params["gru_0.bias_ih_l0"]  # [B, T, 3·hidden], all steps

    def cell(h, p):
        r_x, z_x, n_x = jnp.split(p, 3, axis=-1)
        r_h, z_h, n_h = jnp.split(h @ w_hh + b_hh, 3, axis=-1)
        r, z = jax.nn.sigmoid(r_x + r_h), jax.nn.sigmoid(z_x + z_h)
        n = jnp.tanh(n_x + r * n_h)
        return (1 - z) * n + z * h, None

    h0 = jnp.zeros((ids.shape[0], hidden), x.dtype)
    last, _ = jax.lax.scan(cell, h0, jnp.swapaxes(projected, 0, 1))
    return last @ params["dense_0.weight"] + params["dense_0.bias"]


def jax_loss(jax, optax, sizes, params, batch):
    logits = _jax_logits(jax, params, batch["ids"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()


def jax_infer(jax, sizes, params, inputs):
    return {"probs": jax.nn.softmax(_jax_logits(jax, params, inputs["ids"]), axis=-1)}
