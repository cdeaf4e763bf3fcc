"""The GPT-style character model (models/transformer_lm.dl) as a PyTorch user and a JAX user would write it,
after nanoGPT: token and position `nn.Embedding`s, pre-norm blocks of `nn.LayerNorm`, one fused
query-key-value `nn.Linear`, `F.scaled_dot_product_attention(is_causal=True)` and a GELU feed-forward,
a final `nn.LayerNorm` and an `nn.Linear` head; in JAX, the same on a dict of arrays with
`jax.nn.dot_product_attention`.

dslc's attention has separate query, key and value projections stored [in, out] and no key bias (it adds
the same amount to every score of a query, which softmax ignores); the fused PyTorch weight is the three
transposed matrices stacked, its key bias starts at zero and is dropped when reading the weights back
(any value it takes leaves the model's outputs unchanged). The number of heads is not in the weights: it
is read from the IR's head split (a reshape to [B, T, heads, width/heads])."""
from __future__ import annotations

import numpy as np

from dslc.ir.graph import toposort
from dslc.peers import Renaming

MODELS = ("transformer_lm",)


def sizes(weights, graph) -> dict:
    blocks = sum(1 for name in weights if name.endswith(".attention_0.query.weight"))
    splits = {n.attrs["shape"][2] for n in toposort([n for _, n in graph.outputs])
              if n.op == "reshape" and len(n.attrs["shape"]) == 4}
    if len(splits) != 1:
        raise ValueError(f"cannot tell the number of heads from the IR (head splits seen: {sorted(splits)})")
    vocab, width = weights["embedding_0.weight"].shape
    return {"vocab": vocab, "width": width, "seq": weights["positional_embedding_0.weight"].shape[0],
            "hidden": weights["transformer_block_0.feed_forward_0.linear_0.weight"].shape[1], "blocks": blocks,
            "heads": splits.pop()}


def _block_pairs(k: int) -> list[tuple[str, str, bool]]:
    dslc, torch = f"transformer_block_{k}", f"blocks.{k}"
    pairs = [(f"{dslc}.layer_norm_0.{p}", f"{torch}.ln1.{p}", False) for p in ("weight", "bias")]
    pairs += [(f"{dslc}.layer_norm_1.{p}", f"{torch}.ln2.{p}", False) for p in ("weight", "bias")]
    pairs += [(f"{dslc}.attention_0.out.{p}", f"{torch}.out.{p}", p == "weight") for p in ("weight", "bias")]
    for dslc_name, torch_name in (("linear_0", "fc1"), ("linear_1", "fc2")):
        pairs += [(f"{dslc}.feed_forward_0.{dslc_name}.{p}", f"{torch}.{torch_name}.{p}", p == "weight")
                  for p in ("weight", "bias")]
    return pairs


class FusedAttentionRenaming(Renaming):
    """`Renaming` plus each block's query, key and value projections as one [3·width, width] weight and
    [3·width] bias."""

    def __init__(self, blocks: int):
        pairs = [("embedding_0.weight", "token.weight", False), ("positional_embedding_0.weight", "position.weight", False),
                 ("layer_norm_0.weight", "ln_f.weight", False), ("layer_norm_0.bias", "ln_f.bias", False),
                 ("head.weight", "head.weight", True), ("head.bias", "head.bias", False)]
        super().__init__(pairs + [pair for k in range(blocks) for pair in _block_pairs(k)])
        self.blocks = blocks

    def to_torch(self, weights):
        state = super().to_torch(weights)
        for k in range(self.blocks):
            attention = f"transformer_block_{k}.attention_0"
            state[f"blocks.{k}.qkv.weight"] = np.concatenate(
                [weights[f"{attention}.{p}.weight"].T for p in ("query", "key", "value")])
            bias = weights[f"{attention}.query.bias"]
            state[f"blocks.{k}.qkv.bias"] = np.concatenate([bias, np.zeros_like(bias), weights[f"{attention}.value.bias"]])
        return state

    def from_torch(self, state):
        weights = super().from_torch(state)
        for k in range(self.blocks):
            attention = f"transformer_block_{k}.attention_0"
            query, key, value = np.split(state[f"blocks.{k}.qkv.weight"], 3)
            query_bias, _, value_bias = np.split(state[f"blocks.{k}.qkv.bias"], 3)
            weights.update({f"{attention}.query.weight": query.T, f"{attention}.key.weight": key.T,
                            f"{attention}.value.weight": value.T, f"{attention}.query.bias": query_bias,
                            f"{attention}.value.bias": value_bias})
        return weights


def renaming(sizes) -> Renaming:
    return FusedAttentionRenaming(sizes["blocks"])


def torch_model(torch, sizes):
    nn, F = torch.nn, torch.nn.functional
    width, heads = sizes["width"], sizes["heads"]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.fc1, self.fc2 = nn.Linear(width, sizes["hidden"]), nn.Linear(sizes["hidden"], width)

        def forward(self, x):
            batch, steps, _ = x.shape
            q, k, v = (t.view(batch, steps, heads, width // heads).transpose(1, 2)
                       for t in self.qkv(self.ln1(x)).split(width, dim=2))
            mixed = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.out(mixed.transpose(1, 2).reshape(batch, steps, width))
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))

    class TransformerLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.token = nn.Embedding(sizes["vocab"], width)
            self.position = nn.Embedding(sizes["seq"], width)
            self.blocks = nn.ModuleList(Block() for _ in range(sizes["blocks"]))
            self.ln_f = nn.LayerNorm(width)
            self.head = nn.Linear(width, sizes["vocab"])

        def forward(self, ids):
            x = self.token(ids) + self.position.weight[: ids.shape[1]]
            for block in self.blocks:
                x = block(x)
            return self.head(self.ln_f(x))

    return TransformerLM()


def torch_loss(torch, model, batch):
    logits = model(batch["ids"])
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["next"].flatten())


def torch_infer(torch, model, inputs):
    return {"logits": model(inputs["ids"])}


def _layer_norm(jax, x, weight, bias, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(variance + eps) * weight + bias


def _jax_logits(jax, sizes, params, ids):
    batch, steps = ids.shape
    width, heads = sizes["width"], sizes["heads"]
    x = params["embedding_0.weight"][ids] + params["positional_embedding_0.weight"][:steps]
    for k in range(sizes["blocks"]):
        p = lambda name: params[f"transformer_block_{k}.{name}"]  # noqa: E731
        n = _layer_norm(jax, x, p("layer_norm_0.weight"), p("layer_norm_0.bias"))
        split = lambda t: t.reshape(batch, steps, heads, width // heads)  # noqa: E731  [B, T, H, D/H]
        q = split(n @ p("attention_0.query.weight") + p("attention_0.query.bias"))
        key = split(n @ p("attention_0.key.weight"))
        v = split(n @ p("attention_0.value.weight") + p("attention_0.value.bias"))
        mixed = jax.nn.dot_product_attention(q, key, v, is_causal=True).reshape(batch, steps, width)
        x = x + mixed @ p("attention_0.out.weight") + p("attention_0.out.bias")
        n = _layer_norm(jax, x, p("layer_norm_1.weight"), p("layer_norm_1.bias"))
        hidden = jax.nn.gelu(n @ p("feed_forward_0.linear_0.weight") + p("feed_forward_0.linear_0.bias"),
                             approximate=False)
        x = x + hidden @ p("feed_forward_0.linear_1.weight") + p("feed_forward_0.linear_1.bias")
    x = _layer_norm(jax, x, params["layer_norm_0.weight"], params["layer_norm_0.bias"])
    return x @ params["head.weight"] + params["head.bias"]


def jax_loss(jax, optax, sizes, params, batch):
    logits = _jax_logits(jax, sizes, params, batch["ids"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["next"]).mean()


def jax_infer(jax, sizes, params, inputs):
    return {"logits": _jax_logits(jax, sizes, params, inputs["ids"])}
