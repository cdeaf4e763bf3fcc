"""Rewriting passes keep the computation: a graph with the pass and one without it take the same
training step (float64, ties included), and each rewrite fires where it should and only there."""
from __future__ import annotations

import numpy as np
import pytest

from dslc import passes
from helpers import TrainDriver, compile_text

POOLED = """
model pooled {
    input  image: f64[B, 2, 8, 8]
    target label: i64[B]
    features = image |> conv2d(3, 3, padding = 1) |> %s |> max_pool2d(2)
    logits = features |> flatten |> dense(4)
    output probs = softmax(logits)
    loss      cross_entropy(logits, label)
    optimizer sgd(lr = 0.5)
}
"""


def without(pass_name: str, monkeypatch):
    pipelines = {kind: tuple(p for p in steps if p[0] != pass_name) for kind, steps in passes.PIPELINES.items()}
    monkeypatch.setattr(passes, "PIPELINES", pipelines)


def ops_of(program, graph="train"):
    return [n.op for n in program.extras["final"][graph].nodes()]


def tied_images(rng, n=6):
    """Images of constant 2×2 blocks: every pooling window of the convolution holds ties."""
    blocks = rng.integers(-2, 3, size=(n, 2, 4, 4)).astype(np.float64)
    return blocks.repeat(2, axis=2).repeat(2, axis=3)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "leaky_relu(alpha = 0.2)"])
def test_pooling_before_the_activation_takes_the_same_step(activation, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    data = {"image": tied_images(rng), "label": rng.integers(0, 4, size=6)}
    reordered = compile_text(tmp_path, POOLED % activation, dtype="float64")
    op = activation.split("(")[0]
    final = ops_of(reordered)
    assert final.index("max_pool") < final.index(op)  # the activation now reads the pooled tensor
    without("reorder", monkeypatch)
    plain = compile_text(tmp_path, POOLED % activation, dtype="float64")
    plain_ops = ops_of(plain)
    assert plain_ops.index(op) < plain_ops.index("max_pool")
    a, b = TrainDriver(reordered), TrainDriver(plain)
    for _ in range(3):
        out_a, out_b = a.step(data), b.step(data)
        np.testing.assert_allclose(out_a["loss"], out_b["loss"], rtol=1e-13)
    for name in a.params:
        np.testing.assert_allclose(a.params[name], b.params[name], rtol=1e-12, atol=1e-14)


def test_activations_that_do_not_commute_with_max_stay_first(tmp_path):
    for activation in ("leaky_relu(alpha = -0.5)", "gelu"):
        program = compile_text(tmp_path, POOLED % activation, dtype="float64")
        ops = ops_of(program, "infer")
        op = activation.split("(")[0]
        assert ops.index(op) < ops.index("max_pool"), activation


def test_an_activation_read_elsewhere_too_is_left_in_place(tmp_path):
    text = POOLED.replace("features = image |> conv2d(3, 3, padding = 1) |> %s |> max_pool2d(2)",
                          "act = image |> conv2d(3, 3, padding = 1) |> relu\n"
                          "    features = act |> max_pool2d(2)\n    output act_map = act")
    program = compile_text(tmp_path, text, dtype="float64")
    ops = ops_of(program, "infer")
    assert ops.index("relu") < ops.index("max_pool")
