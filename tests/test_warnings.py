"""Warnings: likely mistakes that still compile (a loss or metric given probabilities where it expects
logits). They are carried on `Program.warnings`, once each although the model is lowered for
inference, training and evaluation, and printed by the command line before a verb's output."""
from __future__ import annotations

import textwrap
import warnings

import pytest

import dslc
from dslc import cli
from dslc.compiler import compile_file
from dslc.diagnostics import DslcError, render_all

HEADER = """\
model m {
    input x: f32[B, 4]
    target y: f32[B, 1]
    target c: i64[B]
"""


def warnings_of(tmp_path, body: str) -> list[str]:
    path = tmp_path / "m.dl"
    path.write_text(HEADER + textwrap.indent(textwrap.dedent(body), "    ") + "    optimizer adam(lr = 0.01)\n}\n")
    with warnings.catch_warnings(record=True):  # each also a `dslc.ModelWarning`, checked above
        return [d.message for d in dslc.compile(path).warnings]


def test_binary_cross_entropy_of_a_sigmoid_renders_like_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.dl").write_text(HEADER + """\
    p = x |> dense(1) |> sigmoid
    output p
    loss binary_cross_entropy(p, y)
    optimizer adam(lr = 0.01)
}
""")
    with pytest.warns(dslc.ModelWarning) as caught:  # from Python, each is also a Python warning
        program = dslc.compile("m.dl")
    assert [str(w.message) for w in caught] == [render_all(program.warnings)]
    assert caught[0].filename == __file__
    assert render_all(program.warnings) == """\
m.dl:7:31: warning: `binary_cross_entropy` applies the sigmoid itself, but `p` is already a sigmoid output
  |
7 |     loss binary_cross_entropy(p, y)
  |                               ^ a sigmoid output
note: the `sigmoid` is here
  --> m.dl:5:26
  |
5 |     p = x |> dense(1) |> sigmoid
  |                          -------
hint: pass the logits (the value before `sigmoid`)"""
    assert [d.severity for d in program.warnings] == ["warning"]  # one, though lowered for training and evaluation


@pytest.mark.parametrize("body, message", [
    ("q = x |> dense(3) |> softmax\noutput q\nloss cross_entropy(q, c)\n",
     "`cross_entropy` applies the softmax itself, but `q` is already a softmax output"),
    ("output q = x |> dense(3)\nloss cross_entropy(softmax(q) |> reshape(3), c)\n",  # through a shape-only op
     "`cross_entropy` applies the softmax itself, but `softmax(q) |> reshape(3)` is already a softmax output"),
    ("output p = x |> dense(1)\nloss binary_cross_entropy(p, y)\nmetric accuracy(sigmoid(p), y)\n",
     "`accuracy` thresholds at 0, but `sigmoid(p)` is a sigmoid output in (0, 1): every prediction counts as positive"),
])
def test_probabilities_where_logits_are_expected(tmp_path, body, message):
    assert warnings_of(tmp_path, body) == [message]


@pytest.mark.parametrize("body", [
    "output p = x |> dense(1)\nloss binary_cross_entropy(p, y)\nmetric accuracy(p, y)\n",
    "output p = x |> dense(1)\nloss binary_cross_entropy(p, y)\nmetric accuracy(sigmoid(p), y, threshold = 0.5)\n",
    "output q = x |> dense(3)\nloss cross_entropy(q, c)\nmetric accuracy(softmax(q), c)\n",  # arg-max: fine
    # log_softmax is idempotent under softmax: cross_entropy(log_softmax(q)) = cross_entropy(q)
    "output q = x |> dense(3)\nloss cross_entropy(log_softmax(q), c)\n",
    "output p = x |> dense(1)\nloss binary_cross_entropy(sigmoid(p) * 2 - 1, y)\n",  # not a sigmoid any more
])
def test_no_warning_for_logits(tmp_path, body):
    assert warnings_of(tmp_path, body) == []


def test_command_line_prints_warnings_before_the_output(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.dl").write_text(HEADER + """\
    output p = x |> dense(1) |> sigmoid
    loss binary_cross_entropy(p, y)
    optimizer adam(lr = 0.01)
}
""")
    assert cli.main(["check", "m.dl"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("m.dl:6:31: warning: `binary_cross_entropy` applies the sigmoid itself")
    assert err.endswith("hint: pass the logits (the value before `sigmoid`)\n\nchecked m: 5 parameters\n")
    assert cli.main(["build", "m.dl", "-o", "out"]) == 0
    err = capsys.readouterr().err
    assert err.index("warning:") < err.index("built m:")


def test_a_failed_compile_reports_its_warnings_with_its_errors(workdir):
    (workdir / "both.dl").write_text("""model both {
    input  x: f32[B, 4]
    target y: f32[B, 1]
    p = x |> dense(1) |> sigmoid
    q = x |> dense(7) |> nothing
    output p
    loss binary_cross_entropy(p, y)
    optimizer sgd()
}
""")
    with pytest.raises(DslcError) as e:
        compile_file(workdir / "both.dl")
    assert [(d.severity, d.span.line) for d in e.value.diagnostics] == [("error", 5), ("warning", 7)]


def test_a_bias_before_batch_norm_is_named_with_the_fix(tmp_path):
    """The channel's batch mean cancels a dense or convolution bias right before `batch_norm`: its gradient
    is zero plus rounding noise, which Adam turns into lr-sized steps. Not a bias on another axis (`linear`
    over a sequence's features, normalized over its time axis 1), nor a layer built without one."""
    found = warnings_of(tmp_path, """\
        h = x |> dense(6) |> batch_norm |> relu
        s = reshape(x, 1, 2, 2) |> conv2d(3, 2) |> batch_norm |> flatten
        t = reshape(x, 2, 2) |> linear(5) |> batch_norm |> flatten
        u = x |> dense(6, bias = false) |> batch_norm
        p = concat(h, s, t, u, axis = 1) |> dense(1)
        output p
        loss mse(p, y)
    """)
    assert sorted(found) == [f"the bias of `{layer}` is cancelled by `batch_norm`, which subtracts each channel's "
                             f"batch mean" for layer in ("conv2d_0", "dense_0")]


def test_conv1d_over_an_embeddings_steps_first_output_is_named(tmp_path):
    """conv1d reads `[B, C, L]` (PyTorch's layout); an embedding gives `[B, T, D]` (Keras' Conv1D layout), so
    feeding it straight in takes the T steps as channels. Transposed first, nothing is said."""
    path = tmp_path / "m.dl"
    path.write_text(textwrap.dedent("""\
        model m {
            input  tokens: i64[B, 20]
            target label: i64[B]
            a = tokens |> embedding(100, 16) |> conv1d(8, 3) |> flatten
            b = tokens |> embedding(100, 16) |> transpose(0, 2, 1) |> conv1d(8, 3) |> flatten
            logits = concat(a, b, axis = 1) |> dense(2)
            output probs = softmax(logits)
            loss cross_entropy(logits, label)
            optimizer adam(lr = 0.01)
        }
        """))
    with warnings.catch_warnings(record=True):
        found = dslc.compile(path).warnings
    assert [(d.message, d.span.line, d.hint) for d in found] == [(
        "conv1d reads `[B, C, L]` (channels first, as PyTorch's Conv1d), but this is an embedding's `f32[B, 20, 16]` "
        "(steps first, as Keras' Conv1D reads it): its 20 steps would be the channels", 4,
        "put the embedding's features first: `conv1d(transpose(e, 0, 2, 1), ...)`")]
