"""Rewriting passes keep the computation: a graph with the pass and one without it take the same
training step (float64, ties included), and each rewrite fires where it should and only there."""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import onnx
import pytest

from dslc import passes
from dslc.compiler import compile_file
from helpers import TrainDriver, compile_text, make_runner

ROOT = Path(__file__).resolve().parents[1]
phase_pass = importlib.import_module("dslc.passes.phases")  # the package's `phases` is the pass function

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


def assert_same_steps(a: TrainDriver, b: TrainDriver, data, loss_rtol: float, rtol: float, atol: float):
    """Three training steps of `a` and `b` on `data`: the same losses and, after them, the same parameters."""
    for _ in range(3):
        out_a, out_b = a.step(data), b.step(data)
        np.testing.assert_allclose(out_a["loss"], out_b["loss"], rtol=loss_rtol)
    for name in a.params:
        np.testing.assert_allclose(a.params[name], b.params[name], rtol=rtol, atol=atol)


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
    assert_same_steps(TrainDriver(reordered), TrainDriver(plain), data, loss_rtol=1e-13, rtol=1e-12, atol=1e-14)


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


NORMED = """
model normed {
    input  x: f64[B, 3, 5]
    target y: i64[B, 3]
    n = layer_norm(x)
    h = (n |> linear(4) |> tanh) + (n |> linear(4, bias = false))
    flat = h |> layer_norm |> flatten |> layer_norm
    output logits = reshape(flat |> dense(6), 3, 2)
    loss      cross_entropy(logits, y)
    optimizer adam(lr = 0.05)
}
"""


def scrambled_norms(driver, rng):
    """Layer-norm weights and biases away from their initial ones and zeros, where folding them is exact."""
    for name, value in driver.params.items():
        if "layer_norm" in name:
            driver.params[name] = rng.normal(1.0 if name.endswith("weight") else 0.0, 0.5, value.shape)


def test_layer_norm_scale_and_shift_fold_into_the_products_and_take_the_same_step(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(4, 3, 5)), "y": rng.integers(0, 2, size=(4, 3))}
    folded = compile_text(tmp_path, NORMED, dtype="float64")
    without("fold_norm", monkeypatch)
    plain = compile_text(tmp_path, NORMED, dtype="float64")
    # the first and last layer norms are read only by products (two linears on [B, 3, 5] rows, a dense on
    # 2-D rows) and lose their scale-and-shift passes; the middle one is read by `flatten` to [B, 12]
    for program, affine in ((folded, 1), (plain, 3)):
        graph = program.extras["final"]["infer"]
        after_norm = [n for n in graph.nodes() if n.op == "mul" and n.inputs[0].op == "normalize"]
        assert len(after_norm) == affine
    a, b = TrainDriver(folded), TrainDriver(plain)
    scrambled_norms(a, np.random.default_rng(1))
    scrambled_norms(b, np.random.default_rng(1))
    assert_same_steps(a, b, data, loss_rtol=1e-12, rtol=1e-10, atol=1e-12)


def test_a_layer_norm_read_by_anything_but_a_product_keeps_its_scale_and_shift(tmp_path):
    text = NORMED.replace("h = (n |> linear(4) |> tanh) + (n |> linear(4, bias = false))",
                          "h = (n |> linear(4) |> tanh) + (n |> tanh |> linear(4, bias = false))")
    program = compile_text(tmp_path, text, dtype="float64")
    graph = program.extras["final"]["infer"]
    assert len([n for n in graph.nodes() if n.op == "mul" and n.inputs[0].op == "normalize"]) == 2


PHASED = """
model phased {
    input  image: f64[B, 1, %s]
    target label: i64[B]
    features = image |> %s |> tanh |> %s
    logits = features |> flatten |> dense(4)
    output probs = softmax(logits)
    loss      cross_entropy(logits, label)
    optimizer sgd(lr = 0.5)
}
"""


def small_integers(rng, shape):
    return rng.integers(-1, 2, size=shape).astype(np.float64)


@pytest.mark.parametrize("spatial,conv,pool", [
    ("9, 10", "conv2d(3, 3, padding = 1)", "max_pool2d(2)"),            # a row left over by the windows
    ("8, 10", "conv2d(2, (3, 2), bias = false)", "max_pool2d((2, 3))"),  # no bias, rectangular windows
    ("9, 9", "conv2d(2, 4, padding = 2)", "max_pool2d(3)"),
    ("11", "conv1d(3, 3)", "max_pool1d(2)"),
], ids=["remainder", "rectangular", "pool3", "1d"])
def test_a_pooled_one_channel_convolution_in_phases_takes_the_same_step(spatial, conv, pool, tmp_path, monkeypatch):
    monkeypatch.setattr(phase_pass, "PHASE_MAX_GROWTH", float("inf"))  # exact whatever the kernel: the limit is speed
    rng = np.random.default_rng(1)
    shape = tuple(int(s) for s in spatial.split(","))
    data = {"image": small_integers(rng, (6, 1) + shape), "label": rng.integers(0, 4, size=6)}
    text = PHASED % (spatial, conv, pool)
    phased = compile_text(tmp_path, text, dtype="float64")
    assert "max_pool" not in ops_of(phased) and "reduce_max" in ops_of(phased)
    assert "max_pool" in ops_of(phased, "infer")  # inference keeps the pool (no gradient to gain on)
    without("phases", monkeypatch)
    plain = compile_text(tmp_path, text, dtype="float64")
    assert "max_pool" in ops_of(plain)
    a, b = TrainDriver(phased), TrainDriver(plain)
    name = next(n for n in a.params if n.startswith("conv") and n.endswith(".weight"))
    # sums of small integers: the first step's pooling windows are full of exact ties
    a.params[name] = b.params[name] = small_integers(rng, a.params[name].shape)
    assert_same_steps(a, b, data, loss_rtol=1e-13, rtol=1e-12, atol=1e-14)


def test_phases_only_where_they_were_measured_to_pay(tmp_path):
    lenet = ops_of(compile_file(ROOT / "models" / "lenet.dl"))  # 5×5 under 2×2: the first layer, 1 channel
    assert lenet.count("reduce_max") == 1 and lenet.count("max_pool") == 1
    digits = ops_of(compile_file(ROOT / "models" / "cnn_digits.dl"))  # 3×3 under 2×2: 16/9 of the products
    assert "reduce_max" not in digits and digits.count("max_pool") == 2
    several = compile_text(tmp_path, POOLED % "relu", dtype="float64")  # 2 input channels
    assert "reduce_max" not in ops_of(several)


LOOKED_UP = """
model looked_up {
    input  ids: i64[B, 5]
    input  user: i64[B]
    target y: i64[B]
    words = ids |> embedding(7, 4)
    summary = words |> gru(6)
    projected = words |> linear(3) |> tanh |> flatten
    person = user |> embedding(4, 3) |> dense(2)
    logits = concat(summary, projected, person, axis = 1) |> dense(3)
    output probs = softmax(logits)
    loss      cross_entropy(logits, y)
    optimizer adam(lr = 0.05)
}
"""


def lookups_folded(program, graph="train") -> list[str]:
    """The ops whose results rows are looked up in: a folded product is a table's (`matmul`/`add`/`gemm`)."""
    return sorted(n.inputs[0].op for n in program.extras["final"][graph].nodes() if n.op == "gather_rows")


def test_products_of_looked_up_rows_fold_into_the_tables_and_take_the_same_step(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    data = {"ids": rng.integers(-7, 7, size=(6, 5)), "user": rng.integers(0, 4, size=6),
            "y": rng.integers(0, 3, size=6)}
    data["ids"][:2] = 3  # ids repeated within a batch, and negative ones counting from the end
    # `words` is read by the GRU and by `linear`: it stays one lookup; `person`'s dense folds (4 rows < 32 lookups)
    shared = compile_text(tmp_path, LOOKED_UP, dtype="float64")
    assert lookups_folded(shared) == ["gemm", "input"]
    text = LOOKED_UP.replace("projected = words |> linear(3)", "projected = ids |> embedding(7, 4) |> linear(3)")
    folded = compile_text(tmp_path, text, dtype="float64")
    # the GRU's input projection plus its bias (add), linear on sequences and dense (gemm)
    assert lookups_folded(folded) == ["add", "gemm", "gemm"]
    assert lookups_folded(folded, "infer") == ["add", "gemm", "gemm"]
    without("fold_lookup", monkeypatch)
    plain = compile_text(tmp_path, text, dtype="float64")
    assert lookups_folded(plain) == ["input", "input", "input"]
    # the lookups' gradients sort their ids once per ids and table size: `ids` into 7 rows (the GRU's
    # r/z and n blocks, linear's table), `user` into 4
    assert [n.op_type for n in onnx.load_from_string(folded.graphs["train"]).graph.node].count("TopK") == 2
    assert_same_steps(TrainDriver(folded), TrainDriver(plain), data, loss_rtol=1e-12, rtol=1e-10, atol=1e-12)
    infer_folded, infer_plain = make_runner(folded.graphs["infer"]), make_runner(plain.graphs["infer"])
    feeds = {k: v for k, v in data.items() if k != "y"}
    np.testing.assert_allclose(infer_folded(feeds)["probs"], infer_plain(feeds)["probs"], rtol=1e-12)


def test_a_table_with_more_rows_than_a_batch_looks_up_is_not_folded(tmp_path):
    # 5 ids a row at the assumed batch of 32: 160 lookups, against 159 and 160 rows
    for rows, folds in ((159, True), (160, False)):
        program = compile_text(tmp_path, f"""
            model recurrent {{
                input  ids: i64[B, 5]
                output h = ids |> embedding({rows}, 4) |> gru(6)
            }}""", dtype="float64")
        assert lookups_folded(program, "infer") == (["add"] if folds else ["input"]), rows
