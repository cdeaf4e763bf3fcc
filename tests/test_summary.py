"""`dslc summary` and `program.summary()`: layers, parameter counts, FLOPs, memory, node counts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import dslc
from dslc import cli
from dslc.ir.graph import Builder, Graph
from dslc.ir.types import TensorType
from dslc.summary import peak_activation_bytes

ROOT = Path(__file__).resolve().parent.parent


def test_summary_of_the_digits_model():
    program = dslc.compile(ROOT / "examples" / "digits" / "digits.dl")
    s = program.summary(batch_size=32)
    hidden = ("f32[B, 128]", 0)
    assert [(l["name"], l["kind"], l["output"], l["params"]) for l in s["layers"]] == [
        ("dense_0", "dense", "f32[B, 128]", 64 * 128 + 128), ("relu_0", "relu", *hidden),
        ("dropout_0", "dropout", *hidden),
        ("dense_1", "dense", "f32[B, 128]", 128 * 128 + 128), ("relu_1", "relu", *hidden),
        ("dropout_1", "dropout", *hidden),
        ("dense_2", "dense", "f32[B, 10]", 128 * 10 + 10), ("softmax_0", "softmax", "f32[B, 10]", 0)]
    assert s["trainable"] == program.num_parameters == 26_122 and s["frozen"] == s["buffers"] == 0
    assert s["weight_bytes"] == 4 * 26_122 and s["state_bytes"] == 2 * 4 * 26_122 + 8  # Adam's m, v and its step
    assert s["infer_flops_per_example"] == 2 * (64 * 128 + 128 * 128 + 128 * 10)  # multiply-adds of the matrices
    # the step: forward, the weight gradients, and the input gradients of every layer but the first
    assert s["train_flops_per_example"] == 2 * (64 * 128 + 128 * 128 + 128 * 10) * 3 - 2 * 64 * 128
    assert s["nodes"]["infer"] > 0 and s["nodes"]["train"] > s["nodes"]["eval"] > s["nodes"]["infer"]
    text = str(s)
    assert "dense_1    dense    f32[B, 128]  16,512" in text and "parameters: 26,122 (26,122 trainable, 0 frozen)" in text
    assert repr(s) == text  # a notebook shows the table


def test_every_layer_is_listed_with_its_output_as_keras_lists_them():
    """Pooling, flatten, activations given as stages, reshape: a row each with 0 parameters, in call order."""
    s = dslc.compile(ROOT / "models" / "lenet.dl").summary()
    assert [(l["name"], l["output"], l["params"]) for l in s["layers"]] == [
        ("conv2d_0", "f32[B, 6, 28, 28]", 156), ("relu_0", "f32[B, 6, 28, 28]", 0),
        ("max_pool2d_0", "f32[B, 6, 14, 14]", 0), ("conv2d_1", "f32[B, 16, 10, 10]", 2416),
        ("relu_1", "f32[B, 16, 10, 10]", 0), ("max_pool2d_1", "f32[B, 16, 5, 5]", 0),
        ("flatten_0", "f32[B, 400]", 0), ("dense_0", "f32[B, 120]", 48120), ("relu_2", "f32[B, 120]", 0),
        ("dense_1", "f32[B, 84]", 10164), ("relu_3", "f32[B, 84]", 0), ("dense_2", "f32[B, 10]", 850),
        ("softmax_0", "f32[B, 10]", 0)]
    assert "max_pool2d_1  max_pool2d  f32[B, 16, 5, 5]         0" in str(s)


def test_layers_without_parameters_in_blocks_repeats_and_shared_scopes(tmp_path):
    (tmp_path / "m.dl").write_text("""
block unit(x) {
    return x |> dense(8) |> tanh
}
model m {
    input  x: f32[B, 12]
    target y: f32[B, 8]
    h = x |> reshape(3, 4) |> flatten |> repeat(2) { dense(12) |> relu }
    a = unit(h, name = "u")
    b = unit(h, name = "u")
    output p = a + b
    loss mse(p, y) + mean(sigmoid(p))
    optimizer sgd(lr = 0.1)
}
""")
    s = dslc.compile(tmp_path / "m.dl").summary()
    assert [(l["name"], l["kind"], l["output"]) for l in s["layers"]] == [
        ("reshape_0", "reshape", "f32[B, 3, 4]"), ("flatten_0", "flatten", "f32[B, 12]"),
        ("dense_0", "dense", "f32[B, 12]"), ("relu_0", "relu", "f32[B, 12]"),
        ("dense_1", "dense", "f32[B, 12]"), ("relu_1", "relu", "f32[B, 12]"),
        ("u.dense_0", "dense", "f32[B, 8]"), ("u.tanh_0", "tanh", "f32[B, 8]"),  # the shared scope once
        ("sigmoid_0", "sigmoid", "f32[B, 8]")]  # in the loss: the training graph's
    assert sum(l["params"] for l in s["layers"]) == s["trainable"] == 2 * (12 * 12 + 12) + 12 * 8 + 8


def test_every_parameter_belongs_to_one_layer():
    s = dslc.compile(ROOT / "models" / "transformer_lm.dl").summary()
    attention = next(l for l in s["layers"] if l["kind"] == "attention")
    assert attention["params"] == 4 * 128 * 128 + 3 * 128  # query, key, value, out; the key has no bias
    assert sum(l["params"] for l in s["layers"]) == s["trainable"]


BN = """
model bn{loss} {{
    input  img: f32[B, 3, 8, 8]
    target y: i64[B]
    output logits = img |> conv2d(4, 3, bias = false) |> batch_norm |> relu |> flatten |> dense(5)
    {training}
}}
"""


def test_batch_norm_statistics_are_buffers_with_or_without_a_loss(tmp_path):
    """A model without a loss counted batch norm's running mean and variance among its parameters (16 for
    4 channels, "buffers: 0"); PyTorch's `BatchNorm2d(4)` has 8 parameters and 8 buffers, as the trained
    model's summary says."""
    counts = []
    for loss, training in (("", ""), ("_trained", "loss cross_entropy(logits, y)\n    optimizer sgd(lr = 0.1)")):
        path = tmp_path / f"bn{loss}.dl"
        path.write_text(BN.format(loss=loss, training=training))
        s = dslc.compile(path).summary()
        counts.append((s["trainable"], s["buffers"], [l["params"] for l in s["layers"]]))
    conv, norm, dense = 4 * 3 * 3 * 3, 2 * 4, 4 * 6 * 6 * 5 + 5
    assert counts[0] == counts[1] == (conv + norm + dense, 2 * 4, [conv, norm, 0, 0, dense])


def test_peak_activation_estimate_on_a_hand_built_graph():
    """x [B, 10] -> a = relu(x) -> b = a * a -> c = b + a -> output c: a lives until c, so a, b and c
    (3 × 40 bytes per example) are alive at once."""
    b = Builder()
    x = b.input("x", TensorType("float32", ("B", 10)), "data")
    a = b.relu(x)
    sq = b.mul(a, a)
    c = b.add(sq, a)
    graph = Graph("g", [x], [("c", c)])
    assert peak_activation_bytes(graph, {"B": 8}) == 3 * 8 * 10 * 4
    chain = Graph("h", [x], [("r", b.relu(b.relu(b.relu(x))))])  # each value dies at its only use
    assert peak_activation_bytes(chain, {"B": 8}) == 2 * 8 * 10 * 4


def test_summary_on_the_command_line(capsys):
    model = str(ROOT / "models" / "text_rnn.dl")
    assert cli.main(["summary", model, "-B", "16", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert [l["kind"] for l in s["layers"]] == ["embedding", "gru", "dense", "softmax"] and s["batch_size"] == 16
    assert s["layers"][0]["output"].startswith("f32[B, ") and s["peak_activation_bytes"] > 0
    assert cli.main(["summary", model]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model text_rnn\n") and "training step's peak activation memory at batch 32" in out


def test_summary_counts_the_parameters_freeze_would_keep_fixed(capsys):
    """`dslc summary --freeze`, as `dslc train --freeze` trains them (Keras's non-trainable count); the
    frozen column of the totals was always 0 on the command line, which had no way to say what is frozen."""
    model = str(ROOT / "examples" / "digits" / "digits.dl")
    assert cli.main(["summary", model, "--freeze", "dense_0*", "--freeze", "biases"]) == 0
    out = capsys.readouterr().out
    assert "parameters: 26,122 (17,664 trainable, 8,458 frozen)" in out  # dense_0's 8,320 and 138 more biases
    assert "dense_0 (frozen)" in out
    assert cli.main(["summary", model, "--freeze", "enc*"]) == 3
    assert "`enc*` selects no parameter" in capsys.readouterr().err


@pytest.mark.parametrize("dims, shown", [((), "needs the size of `T` (`--dim T=N`)"), (("--dim", "T=20"), "kFLOP")])
def test_summary_needs_the_other_symbolic_dims_for_flops(tmp_path, capsys, dims, shown):
    (tmp_path / "seq.dl").write_text("""
model seq {
    input x: f32[B, T, 4]
    target y: f32[B, T, 2]
    output p = x |> linear(8) |> tanh |> linear(2)
    loss mse(p, y)
    optimizer sgd(lr = 0.1)
}
""")
    assert cli.main(["summary", str(tmp_path / "seq.dl"), *dims]) == 0
    out = capsys.readouterr().out
    assert "linear_0  linear  f32[B, T, 8]" in out and shown in out


def test_summary_refuses_a_dim_the_model_does_not_declare_as_build_does(tmp_path, capsys):
    """`--dim t=20` for `T` sized nothing and printed the table as if given (exit 0)."""
    model = str(ROOT / "models" / "text_rnn.dl")
    assert cli.main(["summary", model, "--dim", "T=20"]) == 2
    assert capsys.readouterr().err.endswith(
        "dslc summary: error: `--dim T=...`: the model has no symbolic dimension `T` (its symbolic dimensions: `B`)\n")
    with pytest.raises(dslc.DataError, match="no symbolic dimension `T`"):
        dslc.compile(model).summary(dims={"T": 20})


def test_readme_shows_the_digits_summary_as_dslc_prints_it(capsys):
    """README's sample is `dslc summary examples/digits/digits.dl` verbatim, node counts included: a
    change to the graphs fails here until the sample is pasted again from that command."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sample = readme.split("**Summary.**", 1)[1].split("```\n", 2)[1]
    assert cli.main(["summary", str(ROOT / "examples" / "digits" / "digits.dl")]) == 0
    assert capsys.readouterr().out == sample, "paste `dslc summary examples/digits/digits.dl` into README's Summary"
