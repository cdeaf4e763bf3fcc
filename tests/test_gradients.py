"""Float64 gradient checks of whole models through the compiler: every core builtin (the method is in
tests/gradcheck.py).

"""
from __future__ import annotations

import importlib
import re

import numpy as np
import pytest

from dslc.builtins import load_all
from golden import ROOT
from gradcheck import SEED, check_model_gradients, make_data, model_source
from helpers import TrainDriver, compile_text

# name -> (model body, data kinds for inputs that are not standard normal floats)
MODELS: dict[str, tuple[str, dict[str, str]]] = {
    "dense_relu_mse": ("""
        input  x: f32[B, 3]
        target y: f32[B, 2]
        output pred = x |> dense(4, init = he) |> relu |> dense(2, bias_init = normal(std = 0.5))
        loss   mse(pred, y)
    """, {}),
    "smooth_activations": ("""
        input  x: f32[B, 3]
        target y: f32[B, 2]
        h = x |> dense(4) |> sigmoid |> dense(4) |> tanh |> dense(4) |> gelu
        output pred = h |> dense(4, bias = false) |> softmax |> dense(2)
        loss   mse(pred, y)
    """, {}),
    "piecewise_activations": ("""
        input  x: f32[B, 3]
        target y: f32[B, 2]
        h = x |> dense(5) |> leaky_relu(alpha = 0.2) |> dense(4) |> leaky_relu |> dense(3) |> log_softmax
        output pred = h |> dense(2) |> abs
        loss   mse(pred, y)
    """, {}),
    "functions_and_arithmetic": ("""
        input  x: f32[B, 3]
        target y: f32[B]
        h = x |> dense(4)
        p = exp(h) + 1.0
        q = log(p) * sqrt(p) - abs(h) / (p + 2.0)
        r = -q + 0.5 * h - h * h
        output s = sum(r, 1) + mean(r * r, 1) + 0.1 * sum(r) - mean(h)
        loss   mean((s - y) * (s - y))
    """, {}),
    "cross_entropy_labels": ("""
        input  x: f32[B, 4]
        target label: i64[B]
        logits = x |> dense(5) |> tanh |> dense(3)
        output probs = softmax(logits)
        loss   cross_entropy(logits, label) + 0.01 * l2(weights)
        metric accuracy(logits, label)
    """, {}),
    "cross_entropy_int32_labels": ("""
        input  x: f32[B, 3]
        target label: i32[B]
        logits = x |> dense(4)
        output probs = softmax(logits)
        loss   cross_entropy(logits, label)
        metric accuracy(logits, label)
    """, {}),
    "cross_entropy_probabilities": ("""
        input  x: f32[B, 4]
        target p: f32[B, 3]
        logits = x |> dense(4) |> relu |> dense(3)
        output probs = softmax(logits)
        loss   cross_entropy(logits, p)
        metric accuracy(logits, p)
    """, {"p": "probabilities"}),
    "binary_cross_entropy": ("""
        input  x: f32[B, 3]
        target y: f32[B, 1]
        logits = x |> dense(4) |> tanh |> dense(1)
        output prob = sigmoid(logits)
        loss   binary_cross_entropy(logits, y) + 1e-2 * l2(weights)
        metric accuracy(logits, y)
    """, {"y": "binary"}),
    "penalties_on_subsets": ("""
        input  x: f32[B, 3]
        target y: f32[B, 2]
        h = x |> dense(4, name = "enc_a") |> tanh |> dense(3, name = "enc_b") |> relu
        output pred = h |> dense(2, name = "head")
        loss   mse(pred, y) + 0.1 * l1(weights) + 0.05 * l2(biases) + 0.02 * l2("enc*") + 0.03 * l1("head") + 0.01 * l2(params) + 0.02 * l1(biases, "enc_b")
    """, {}),
    "blocks_repeat_skip": ("""
        block res(x, width) {
            h = x |> dense(width) |> tanh
            return x + h
        }
        block pair(x, width) {
            a = x |> res(width)
            return a |> res(width) |> relu
        }
        ---
        input  x: f32[B, 3]
        target y: f32[B, 3]
        h = x |> res(3) |> repeat(2) { pair(3) |> dense(3) }
        output pred = h * x + h
        loss   mse(pred, y)
    """, {}),
    "matmul_concat_reshape_flatten": ("""
        input  x: f32[B, 4]
        input  z: f32[B, 2, 3]
        target y: f32[B, 2]
        a = x |> dense(4) |> reshape(2, 2)
        b = x |> dense(4, bias = false) |> reshape(2, -1)
        m = (a @ b) |> flatten
        c = z |> flatten |> dense(3)
        j = concat(m, c, x |> dense(2)) |> concat(x, axis = 1)
        output pred = j |> dense(2)
        loss   mse(pred, y)
    """, {}),
    "linear_per_position": ("""
        input  x: f32[B, 3, 4]
        target y: f32[B, 3, 2]
        h = x |> linear(5) |> tanh |> linear(3, bias = false)
        output pred = concat(h, x |> linear(2, name = "skip"), axis = 2) |> linear(2)
        loss   mse(pred, y)
    """, {}),
    "dropout": ("""
        input  x: f32[B, 3]
        target y: f32[B, 2]
        h = x |> dense(5) |> relu |> dropout(0.4) |> dense(4) |> tanh |> dropout(0.25)
        output pred = h |> dense(2)
        loss   mse(pred, y)
    """, {}),
}


def source(name: str) -> str:
    return model_source(name, MODELS[name][0])


@pytest.mark.parametrize("name", list(MODELS))
def test_model_gradient(name, workdir):
    check_model_gradients(workdir, name, source(name), MODELS[name][1])


def test_dropout_seed_changes_the_mask(workdir):
    """The dropout model's gradient check is only meaningful if the seed really drives the masks."""
    program = compile_text(workdir, source("dropout"), name="dropout_seed.dl", dtype="float64")
    driver = TrainDriver(program)
    data = make_data(program.manifest["graphs"]["train"], {}, np.random.default_rng(0))
    a, b, c = (float(driver.run(data, seed=s)["loss"]) for s in (SEED, SEED, SEED + 1))
    assert a == b, "the same seed gave different dropout masks"
    assert a != c, "a different seed gave the same loss: dropout does not depend on the seed"


def all_gradient_models() -> dict:
    """`MODELS` here plus the `GRADIENT_MODELS` of the other test modules (layer families)."""
    models = dict(MODELS)
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        if path.stem != "test_gradients" and "GRADIENT_MODELS" in path.read_text(encoding="utf-8"):
            models.update(importlib.import_module(path.stem).GRADIENT_MODELS)
    return models


def test_every_builtin_is_gradient_checked():
    """Every layer, activation, function, loss and penalty appears in some gradient-checked model (here
    or in another test module's `GRADIENT_MODELS`), as do blocks, `repeat`, `@` and fan-out."""
    text = "\n".join(model_source(name, body) for name, (body, _) in all_gradient_models().items())
    used = set(re.findall(r"([A-Za-z_]\w*)\s*\(", text)) | set(re.findall(r"\|>\s*([A-Za-z_]\w*)", text))
    wanted = {name for name, b in load_all().items() if b.category in ("layer", "activation", "function", "loss", "penalty")}
    assert not wanted - used, f"builtins without a gradient check: {sorted(wanted - used)}"
    for construct in ("block ", "repeat(", " @ ", "concat(", "dropout("):
        assert construct in text, f"no model uses `{construct.strip()}`"
