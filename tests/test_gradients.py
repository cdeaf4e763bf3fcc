"""Float64 gradient checks of whole models through the compiler.

Each model of `MODELS` is compiled with `dtype="float64"` and `optimizer sgd(lr = 1.0)`, so one training
step moves every parameter by exactly its gradient: `grad = p - p.next`. That gradient is compared with
central finite differences of the training graph's `loss` output, perturbing the fed
parameters (same batch, same dropout seed), with `eps = 1e-5`: the loss is one scalar whose rounding
(~1e-15·|loss|) divided by 2·eps would dominate at 1e-6, while the truncation error grows only as eps²
(1e-5 sits near the textbook optimum ε_mach^(1/3) ≈ 6e-6 and gives errors ~1e-8 here, 1e-6 ~5e-7):
- along 3 random directions per parameter: `|fd - an| / max(|fd|, |an|, 1e-8)`;
- per coordinate: `|fd_j - an_j| / max(|fd_j|, |an_j|, 1e-3·max_k |an_k|, 1e-8)` over the elements of
  each parameter (elements 1000x smaller than the parameter's largest gradient element are measured
  against 1/1000 of it: their central difference of a scalar loss is dominated by rounding).
Both must be <= 1e-6. Parameters start from the compiled initializers plus noise, kept at least 0.05
away from 0 (so `l1`'s kink and exactly-zero biases are not probed).
"""
from __future__ import annotations

import re
import zlib

import numpy as np
import pytest

from dslc.builtins import load_all
from helpers import TrainDriver, compile_text

EPS = 1e-5  # see the module docstring
RTOL = 1e-6
DIRECTIONS = 3
BATCH = 4
SEED = 11  # the dropout seed fed to every run of a model

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
    body, _ = MODELS[name]
    blocks, _, body = body.rpartition("---")
    return f"{blocks}\nmodel {name} {{\n{body}\n    optimizer sgd(lr = 1.0)\n}}\n"


def make_data(spec: dict, kinds: dict[str, str], rng: np.random.Generator) -> dict[str, np.ndarray]:
    data = {}
    for entry in spec["inputs"]:
        shape = tuple(BATCH if isinstance(d, str) else d for d in entry["shape"])
        kind = kinds.get(entry["name"], "normal")
        if entry["dtype"].startswith("int"):
            data[entry["name"]] = rng.integers(0, entry["classes"], shape).astype(entry["dtype"])
        elif kind == "probabilities":
            e = np.exp(rng.standard_normal(shape))
            data[entry["name"]] = e / e.sum(axis=-1, keepdims=True)
        elif kind == "binary":
            data[entry["name"]] = (rng.random(shape) < 0.5).astype(np.float64)
        else:
            data[entry["name"]] = rng.standard_normal(shape)
    return data


def start_params(driver: TrainDriver, rng: np.random.Generator) -> dict[str, np.ndarray]:
    params = {}
    for name, value in driver.params.items():
        p = value + 0.3 * rng.standard_normal(value.shape)
        params[name] = np.where(p >= 0, 1.0, -1.0) * (np.abs(p) + 0.05)
    return params


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("gradients")


@pytest.mark.parametrize("name", list(MODELS))
def test_model_gradient(name, workdir):
    program = compile_text(workdir, source(name), name=f"{name}.dl", dtype="float64")
    spec = program.manifest["graphs"]["train"]
    assert [h["name"] for h in spec["hyper"]] == (["lr", "seed"] if name == "dropout" else ["lr"])
    driver = TrainDriver(program)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    data = make_data(spec, MODELS[name][1], rng)
    params = start_params(driver, rng)
    out = driver.run(data, params=params, lr=1.0, seed=SEED)
    grads = {p: params[p] - out[driver.next_of[p]] for p in params}

    def loss(perturbed: dict[str, np.ndarray]) -> float:
        return float(driver.run(data, params={**params, **perturbed}, lr=1.0, seed=SEED)["loss"])

    assert loss({}) == float(out["loss"])
    failures = []
    for p, value in params.items():
        g = grads[p]
        assert np.any(g != 0), f"{name}: the gradient of `{p}` is identically zero"
        for _ in range(DIRECTIONS):
            d = rng.standard_normal(value.shape)
            fd = (loss({p: value + EPS * d}) - loss({p: value - EPS * d})) / (2 * EPS)
            an = float(np.sum(g * d))
            err = abs(fd - an) / max(abs(fd), abs(an), 1e-8)
            if err > RTOL:
                failures.append(f"`{p}` along a random direction: fd {fd:.10g}, autodiff {an:.10g}, relative error {err:.2g}")
        fd = np.zeros_like(value)
        for j in range(value.size):
            step = np.zeros(value.size)
            step[j] = EPS
            step = step.reshape(value.shape)
            fd.flat[j] = (loss({p: value + step}) - loss({p: value - step})) / (2 * EPS)
        floor = max(1e-3 * float(np.max(np.abs(g))), 1e-8)
        err = np.abs(fd - g) / np.maximum(np.maximum(np.abs(fd), np.abs(g)), floor)
        if err.max() > RTOL:
            j = int(np.argmax(err))
            failures.append(f"`{p}` element {np.unravel_index(j, value.shape)}: fd {fd.flat[j]:.10g}, "
                            f"autodiff {g.flat[j]:.10g}, relative error {err.flat[j]:.2g}")
    assert not failures, f"model `{name}`:\n  " + "\n  ".join(failures)


def test_dropout_seed_changes_the_mask(workdir):
    """The dropout model's gradient check is only meaningful if the seed really drives the masks."""
    program = compile_text(workdir, source("dropout"), name="dropout_seed.dl", dtype="float64")
    driver = TrainDriver(program)
    data = make_data(program.manifest["graphs"]["train"], {}, np.random.default_rng(0))
    a, b, c = (float(driver.run(data, seed=s)["loss"]) for s in (SEED, SEED, SEED + 1))
    assert a == b, "the same seed gave different dropout masks"
    assert a != c, "a different seed gave the same loss: dropout does not depend on the seed"


def test_every_builtin_is_gradient_checked():
    """Every layer, activation, function, loss and penalty appears in some model above, as do blocks,
    `repeat`, `@` and a value used twice (fan-out)."""
    text = "\n".join(source(name) for name in MODELS)
    used = set(re.findall(r"([A-Za-z_]\w*)\s*\(", text)) | set(re.findall(r"\|>\s*([A-Za-z_]\w*)", text))
    wanted = {name for name, b in load_all().items() if b.category in ("layer", "activation", "function", "loss", "penalty")}
    assert not wanted - used, f"builtins without a gradient check: {sorted(wanted - used)}"
    for construct in ("block ", "repeat(", " @ ", "concat(", "dropout("):
        assert construct in text, f"no model uses `{construct.strip()}`"
