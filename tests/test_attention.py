"""`layer_norm`, `attention` and the transformer language model (models/transformer_lm.dl).

- PyTorch parity: each model also written with `torch.nn.functional` on the same parameters —
  `F.layer_norm`, and `F.multi_head_attention_forward` (what `nn.MultiheadAttention` runs) with the
  query/key/value weights packed as its `in_proj_weight` — trained with AdamW from identical weights on
  identical batches: loss and parameters agree at every step (tolerances as in tests/test_tensor_ops.py:
  rtol 1e-4 element-wise, 1e-5 L2). Self-, cross-, causal and key-masked attention, and the LM over 20 steps.
  The key-mask data (keys kept where a normal variate exceeds -1) leave some causal queries with no key
  to see (9 in the key_mask batches): those get zeros, as in PyTorch.
- Float64 finite-difference gradients of every model (`GRADIENT_MODELS`), causal and masked included.
- The causal mask for a sequence length known only at run time, against torch at two lengths.
- The LM learns: a small configuration trained for a few seconds on the example corpus ends clearly
  below the unigram entropy of the text.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dslc.compiler import compile_file
from gradcheck import check_model_gradients, model_source
from helpers import compile_text, make_runner
from test_tensor_ops import check_parity, check_table_parity, dense, make_batch

torch = pytest.importorskip("torch")
F = torch.nn.functional

ROOT = Path(__file__).resolve().parents[1]
LM_FILE = ROOT / "models" / "transformer_lm.dl"
BLOCKS = (ROOT / "models" / "blocks" / "transformer.dl").read_text(encoding="utf-8")
CORPUS = ROOT / "examples" / "transformer_lm" / "corpus.txt"


# ---- torch twins ---------------------------------------------------------------------------------------
def layer_norm(P, name, x, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], P[f"{name}.weight"], P[f"{name}.bias"], eps)


def attention(P, name, q, k, v, heads, causal=False, key_mask=None):
    """`nn.MultiheadAttention(batch_first=True)` on dslc's parameters: in_proj_weight is the three
    projections transposed and stacked, the key projection has no bias (zeros)."""
    width = q.shape[-1]
    packed = torch.cat([P[f"{name}.query.weight"].T, P[f"{name}.key.weight"].T, P[f"{name}.value.weight"].T])
    bias = torch.cat([P[f"{name}.query.bias"], torch.zeros(width, dtype=q.dtype), P[f"{name}.value.bias"]])
    mask = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool).triu(1) if causal else None  # True: not allowed
    padding = None if key_mask is None else ~key_mask.bool()
    out, _ = F.multi_head_attention_forward(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), width, heads, packed, bias, None, None, False, 0.0,
        P[f"{name}.out.weight"].T, P[f"{name}.out.bias"], training=True, key_padding_mask=padding,
        need_weights=False, attn_mask=mask)
    return out.transpose(0, 1)


def torch_layer_norm(P, d):
    h = layer_norm(P, "layer_norm_0", dense(P, "linear_0", d["x"]))
    z = layer_norm(P, "layer_norm_1", dense(P, "dense_0", d["x"].flatten(1)), eps=0.01)
    return F.mse_loss(dense(P, "linear_1", h).sum(1) + z, d["y"])


def torch_self_attention(P, d):
    h = dense(P, "linear_0", d["x"])
    return F.mse_loss(dense(P, "linear_1", attention(P, "attention_0", h, h, h, 2)), d["y"])


def torch_causal(P, d):
    h = dense(P, "linear_0", d["x"])
    a = attention(P, "attention_0", h, h, h, 4, causal=True)
    return F.mse_loss(dense(P, "linear_1", a + h), d["y"])


def torch_key_mask(P, d):
    h = dense(P, "linear_0", d["x"])
    keep = d["m"] > -1.0
    a = attention(P, "attention_0", h, h, h, 2, key_mask=keep)
    b = attention(P, "attention_1", a, h, h, 1, causal=True, key_mask=keep.float())
    return F.mse_loss(dense(P, "linear_1", b), d["y"])


def torch_cross(P, d):
    q = dense(P, "linear_0", d["x"])
    memory = torch.tanh(dense(P, "linear_1", d["memory"]))
    keep = d["m"] > -1.0
    a = attention(P, "attention_0", q, memory, memory, 2)
    b = attention(P, "attention_1", a, memory, memory, 2, causal=True, key_mask=keep)
    return F.mse_loss(dense(P, "linear_2", layer_norm(P, "layer_norm_0", a + b)), d["y"])


# name -> (model body without optimizer, data kinds, torch twin)
MODELS = {
    "layer_norm": ("""
        input  x: f32[B, 3, 6]
        target y: f32[B, 2]
        h = x |> linear(6) |> layer_norm
        z = x |> flatten |> dense(2) |> layer_norm(eps = 0.01)
        output pred = (h |> linear(2) |> sum(1)) + z
        loss   mse(pred, y)
    """, {}, torch_layer_norm),
    "self_attention": ("""
        input  x: f32[B, 5, 8]
        target y: f32[B, 5, 3]
        h = x |> linear(8)
        output pred = attention(h, h, h, 2) |> linear(3)
        loss   mse(pred, y)
    """, {}, torch_self_attention),
    "causal_self_attention": ("""
        input  x: f32[B, 5, 8]
        target y: f32[B, 5, 3]
        h = x |> linear(8)
        output pred = (attention(h, h, h, 4, causal = true) + h) |> linear(3)
        loss   mse(pred, y)
    """, {}, torch_causal),
    "key_mask": ("""
        input  x: f32[B, 5, 4]
        input  m: f32[B, 5]
        target y: f32[B, 5, 3]
        h = x |> linear(4)
        keep = m > -1.0
        a = attention(h, h, h, 2, key_mask = keep)
        output pred = attention(a, h, h, 1, causal = true, key_mask = cast(keep, "f32")) |> linear(3)
        loss   mse(pred, y)
    """, {}, torch_key_mask),
    "cross_attention": ("""
        input  x: f32[B, 3, 4]
        input  memory: f32[B, 6, 5]
        input  m: f32[B, 6]
        target y: f32[B, 3, 2]
        q = x |> linear(4)
        mem = memory |> linear(4) |> tanh
        a = attention(q, mem, mem, 2)
        b = attention(a, mem, mem, 2, causal = true, key_mask = m > -1.0)
        output pred = a + b |> layer_norm |> linear(2)
        loss   mse(pred, y)
    """, {}, torch_cross),
}

LM_GRADIENT = (BLOCKS + """
---
        input  ids:  i64[B, 5]
        target next: i64[B, 5]
        x = ids |> embedding(7, 8) |> positional_embedding(5)
        h = x |> repeat(1) { transformer_block(8, 2, 16) } |> layer_norm
        output logits = h |> linear(7, name = "head")
        loss   cross_entropy(logits, next)
""", {"ids": "int:7"})

GRADIENT_MODELS = {**{name: (body, kinds) for name, (body, kinds, _) in MODELS.items()},
                   "transformer_lm": LM_GRADIENT}


@pytest.mark.parametrize("name", list(GRADIENT_MODELS))
def test_model_gradient(name, workdir):
    body, kinds = GRADIENT_MODELS[name]
    check_model_gradients(workdir, name, model_source(name, body), kinds)


@pytest.mark.parametrize("name", list(MODELS))
def test_torch_parity(name, workdir):
    """Ten AdamW steps agree with the torch twin."""
    body, kinds, twin = MODELS[name]
    check_table_parity(workdir, name, body, kinds, twin, "adamw(lr = 0.01)", steps=10, seed=17)


# ---- the transformer language model ------------------------------------------------------------------
SMALL = {"vocab": 11, "width": 16, "heads": 2, "hidden": 32, "blocks": 2, "seq": 8}


def torch_lm(P, d, blocks: int, heads: int):
    ids = d["ids"]
    x = P["embedding_0.weight"][ids] + P["positional_embedding_0.weight"][: ids.shape[1]]
    for i in range(blocks):
        pre = f"transformer_block_{i}."
        n = layer_norm(P, pre + "layer_norm_0", x)
        x = x + attention(P, pre + "attention_0", n, n, n, heads, causal=True)
        n = layer_norm(P, pre + "layer_norm_1", x)
        x = x + dense(P, pre + "feed_forward_0.linear_1", F.gelu(dense(P, pre + "feed_forward_0.linear_0", n)))
    logits = dense(P, "head", layer_norm(P, "layer_norm_0", x))
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), d["next"].reshape(-1))


def compile_lm(**settings):
    return compile_file(LM_FILE, defines={k: str(v) for k, v in settings.items()})


def test_transformer_lm_torch_parity():
    """The LM file at a small size: 20 AdamW steps from identical weights on identical batches."""
    program = compile_lm(**SMALL)
    spec = program.manifest["graphs"]["train"]
    assert program.manifest["optimizer"]["kind"] == "adamw"
    rng = np.random.default_rng(3)
    batches = [make_batch(spec, rng, {"ids": f"int:{SMALL['vocab']}"}, batch=4) for _ in range(20)]
    check_parity(program, lambda P, d: torch_lm(P, d, SMALL["blocks"], SMALL["heads"]), batches)


def test_transformer_lm_parameters():
    """The benchmark shape's parameters: as many as the PyTorch model's (less the key biases)."""
    program = compile_lm()
    names = [p["name"] for p in program.manifest["graphs"]["train"]["params"]]
    assert "transformer_block_1.attention_0.out.weight" in names and "head.weight" in names
    assert not any(n.endswith("key.bias") for n in names)
    width, hidden, vocab, seq = 128, 512, 256, 64
    per_block = 4 * width * width + 3 * width + 2 * width * hidden + hidden + width + 4 * width
    assert program.num_parameters == vocab * width + seq * width + 2 * per_block + 2 * width + width * vocab + vocab


def test_causal_mask_with_a_run_time_length(workdir):
    """`causal = true` on `[B, T, D]` with T symbolic builds the mask at run time: equal to torch at two
    lengths (the inference graph, float32)."""
    program = compile_text(workdir, """
        model m {
            input x: f32[B, T, 6]
            output y = attention(x, x, x, 3, causal = true)
        }""", name="symbolic_t.dl")
    weights = {p: torch.from_numpy(v) for p, v in _initializers(program).items()}
    run = make_runner(program.graphs["infer"])
    for length in (3, 7):
        x = np.random.default_rng(length).standard_normal((2, length, 6)).astype(np.float32)
        xt = torch.from_numpy(x)
        with torch.no_grad():
            expected = attention(weights, "attention_0", xt, xt, xt, 3, causal=True).numpy()
        np.testing.assert_allclose(run({"x": x})["y"], expected, rtol=1e-5, atol=1e-6)


def _initializers(program) -> dict[str, np.ndarray]:
    from helpers import initializers

    inits = initializers(program.graphs["infer"])
    return {name: value.copy() for name, value in inits.items() if name.startswith("attention_0.")}


def unigram_entropy(ids: np.ndarray) -> float:
    """Entropy in nats of the character frequencies: the loss of the best model that ignores context."""
    counts = np.bincount(ids.ravel()).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def windows(text: bytes, seq: int, stride: int) -> dict[str, np.ndarray]:
    ids = np.frombuffer(text, dtype=np.uint8).astype(np.int64)
    starts = np.arange(0, len(ids) - seq - 1, stride)
    return {"ids": np.stack([ids[s:s + seq] for s in starts]), "next": np.stack([ids[s + 1:s + seq + 1] for s in starts])}


def test_transformer_lm_learns_the_corpus(tmp_path):
    """Width 32, one block, windows of 16: a few seconds of training take the loss clearly below the
    unigram entropy of the text (which is what a model without context could at best reach)."""
    text = CORPUS.read_bytes()[:20000]
    data = windows(text, seq=16, stride=4)
    baseline = unigram_entropy(np.frombuffer(text, dtype=np.uint8))
    program = compile_lm(width=32, heads=2, hidden=64, blocks=1, seq=16, lr=0.01)
    history = program.train(data, epochs=3, batch_size=32, out_dir=tmp_path / "run", threads=2)
    final = history[-1]["loss"]
    assert baseline > 2.5, f"the corpus is too repetitive for this test (unigram entropy {baseline:.2f})"
    assert final < baseline - 0.5, f"loss {final:.3f} nats after training, unigram entropy {baseline:.3f}"
