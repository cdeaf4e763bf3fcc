"""Habits from Keras and PyTorch that used to build another model without a word, or could not be written.

- Layer options (`stride`, `padding`, `dilation`, `groups`, `bias`, ...) are keyword-only: PyTorch's
  positional order (`conv1d(1, 25, 5, 2, 1)`) is an error whose hint gives both readings (the messages
  are golden files: tests/diagnostics/pytorch_positional_options.stderr).
- `sqrt`, `pow`, `exp`, `log`, `abs` of numbers are computed when the model is built, so PyTorch's
  bounds can be written: `uniform(low = -1 / sqrt(40))`.
- The initializers `torch` (PyTorch's defaults, their bounds checked against torch's own layers) and
  `lecun`.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import compile_text, initializers

from dslc.diagnostics import DslcError

torch = pytest.importorskip("torch")


def params_of(program) -> dict[str, np.ndarray]:
    return initializers(program.graphs["train" if "train" in program.graphs else "infer"])


def test_named_options_build_the_pytorch_layer(tmp_path):
    program = compile_text(tmp_path, """
    model m {
        input x: f32[B, 1, 100]
        output y = x |> conv1d(25, 5, stride = 2, padding = 1) |> flatten
    }""")
    w = params_of(program)["conv1d_0.weight"]
    assert w.shape == (25, 1, 5)
    assert program.manifest["graphs"]["infer"]["outputs"][0]["shape"] == ["B", 25 * 49]


@pytest.mark.parametrize("call", ["conv1d(1, 25, 5, 2, 1)", "dense(20, 10)", "max_pool1d(2, 2)"])
def test_positional_options_are_errors(call, tmp_path):
    with pytest.raises(DslcError, match="positional argument"):
        compile_text(tmp_path, f"model m {{\n input x: f32[B, 1, 20]\n output y = x |> {call}\n}}")


def test_number_functions_at_build_time(tmp_path):
    program = compile_text(tmp_path, """
    model m(fan = 40) {
        input x: f32[B, 40]
        output y = x |> dense(400, init = uniform(low = -1 / sqrt(fan), high = 1 / sqrt(fan)),
                              bias_init = constant(pow(2, 0.5) + exp(log(3)) + abs(-1)))
        output z = sqrt(abs(x)) + pow(x, 2)
    }""")
    p = params_of(program)
    bound = 1 / math.sqrt(40)
    assert np.abs(p["dense_0.weight"]).max() <= bound and np.abs(p["dense_0.weight"]).max() > 0.99 * bound
    np.testing.assert_allclose(p["dense_0.bias"], math.sqrt(2) + 3 + 1, rtol=1e-6)


@pytest.mark.parametrize("expr, message", [
    ("sqrt(-1)", "`sqrt(-1)` has no finite real value"),
    ("log(0)", "`log(0)` has no finite real value"),
    ("pow(-8, 0.5)", "`pow(-8, 0.5)` has no finite real value"),
    ("exp(1000)", "`exp(1000)` has no finite real value"),
])
def test_number_function_errors(expr, message, tmp_path):
    with pytest.raises(DslcError) as e:
        compile_text(tmp_path, f"model m {{\n input x: f32[B, 4]\n output y = x * {expr}\n}}")
    assert message in str(e.value)


def _bound_of(values: np.ndarray, bound: float):
    """`values` fill U(±bound): none outside, some near each end."""
    assert np.abs(values).max() <= bound * (1 + 1e-6)
    assert values.max() > 0.97 * bound and values.min() < -0.97 * bound


def test_torch_init_matches_pytorch_bounds(tmp_path):
    program = compile_text(tmp_path, """
    model m {
        input x: f32[B, 3, 16]
        h = x |> conv1d(64, 5, groups = 1, init = torch, bias_init = torch) |> flatten
        output y = h |> dense(300, init = torch, bias_init = torch)
        output z = x |> gru(50, init = torch, bias_init = torch)
    }""")
    p = params_of(program)
    torch.manual_seed(0)
    conv, linear, gru = torch.nn.Conv1d(3, 64, 5), torch.nn.Linear(64 * 12, 300), torch.nn.GRU(16, 50)
    cases = [(p["conv1d_0.weight"], conv.weight), (p["conv1d_0.bias"], conv.bias),
             (p["dense_0.weight"], linear.weight), (p["dense_0.bias"], linear.bias),
             (p["gru_0.weight_ih_l0"], gru.weight_ih_l0), (p["gru_0.weight_hh_l0"], gru.weight_hh_l0),
             (p["gru_0.bias_ih_l0"], gru.bias_ih_l0), (p["gru_0.bias_hh_l0"], gru.bias_hh_l0)]
    for ours, theirs in cases:
        bound = float(theirs.detach().abs().max())  # torch's own draw, near its bound
        assert ours.size == theirs.numel()
        expected = {64 * 3 * 5: 1 / math.sqrt(15), 64: 1 / math.sqrt(15), 768 * 300: 1 / math.sqrt(768),
                    300: 1 / math.sqrt(768)}.get(ours.size, 1 / math.sqrt(50))
        assert bound <= expected * (1 + 1e-6) and bound > 0.8 * expected, "the formula is torch's"
        _bound_of(ours, expected)


def test_lecun_init(tmp_path):
    program = compile_text(tmp_path, """
    model m {
        input x: f32[B, 200]
        output y = x |> dense(300, init = lecun) |> dense(300, init = lecun_uniform)
    }""")
    p = params_of(program)
    assert p["dense_0.weight"].std() == pytest.approx(1 / math.sqrt(200), rel=0.02)
    _bound_of(p["dense_1.weight"], math.sqrt(3 / 300))
