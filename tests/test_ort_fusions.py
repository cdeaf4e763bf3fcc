"""The standard-op patterns dslc emits so that ONNX Runtime's graph optimizer fuses them into one kernel:
each test loads a compiled graph the way dslc's sessions do (optimization level ALL), reads ORT's
optimized model and checks that the fusion fired and the result still matches the unfused graph."""
from __future__ import annotations

import collections
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from helpers import compile_text, make_runner


def optimized_ops(model_bytes: bytes, tmp_path) -> collections.Counter:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    model = onnx.load(options.optimized_model_filepath)
    return collections.Counter(f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in model.graph.node)


def test_linear_on_sequences_is_a_gemm_with_its_bias_and_gelu_one_kernel(tmp_path):
    """`linear` on `[B, T, F]` is one 2-D Gemm over the B·T rows with the bias inside (ORT fuses no 3-D
    MatMul with an Add), and the GELU after it ORT's Gelu kernel."""
    program = compile_text(tmp_path, """
        model m {
            input x: f32[B, 5, 6]
            output y = x |> linear(8) |> gelu
        }""")
    ops = optimized_ops(program.graphs["infer"], tmp_path)
    assert ops["Gemm"] == 1 and ops["com.microsoft.Gelu"] == 1, ops
    assert ops["MatMul"] == ops["Add"] == ops["Erf"] == 0, ops
    x = np.random.default_rng(0).standard_normal((3, 5, 6)).astype(np.float32)
    proto = onnx.load_from_string(program.graphs["infer"])
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    pre = x @ weights["linear_0.weight"] + weights["linear_0.bias"]
    want = 0.5 * pre * (1 + np.vectorize(math.erf)(pre / math.sqrt(2)))
    np.testing.assert_allclose(make_runner(program.graphs["infer"])({"x": x})["y"], want, rtol=1e-5, atol=1e-6)


def test_gelu_gradient_shares_the_forward_erf(tmp_path):
    """The backward's erf(x/√2) is the forward's, node for node, so ORT computes it once."""
    program = compile_text(tmp_path, """
        model m {
            input x: f32[B, 6]
            target y: f32[B, 4]
            output p = x |> dense(4) |> gelu
            loss mse(p, y)
            optimizer sgd(lr = 0.1)
        }""")
    assert optimized_ops(program.graphs["train"], tmp_path)["Erf"] == 1


def test_cross_entropy_and_its_gradient_compare_the_labels_once(tmp_path):
    """The loss picks the label's log-probability with the same Equal the gradient's one-hot is cast
    from, so ORT's common-subexpression pass leaves one comparison, and no OneHot kernel (0.8 ms of the
    transformer step for [2048, 256])."""
    program = compile_text(tmp_path, """
        model m {
            input x: f32[B, 6]
            target y: i64[B]
            output logits = x |> dense(5)
            loss cross_entropy(logits, y)
            optimizer sgd(lr = 0.1)
        }""")
    ops = optimized_ops(program.graphs["train"], tmp_path)
    assert ops["Equal"] == 1 and ops["OneHot"] == 0, ops


@pytest.mark.parametrize("runtime", ["ort", "reference"])
def test_linear_rows_return_to_two_symbolic_leading_dims(tmp_path, runtime):
    """With more than one symbolic leading dim the Gemm's rows are reshaped to the input's run-time shape."""
    program = compile_text(tmp_path, """
        model m {
            input x: f32[B, T, 6]
            output y = x |> linear(4)
        }""")
    proto = onnx.load_from_string(program.graphs["infer"])
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    run = make_runner(program.graphs["infer"], runtime)
    for shape in ((2, 3, 6), (1, 7, 6)):
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        want = x @ weights["linear_0.weight"] + weights["linear_0.bias"]
        np.testing.assert_allclose(run({"x": x})["y"], want, rtol=1e-5, atol=1e-6)
