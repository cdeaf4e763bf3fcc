"""Compiled models agree between ONNX Runtime and the ONNX reference evaluator (`onnx.reference`),
and every emitted graph passes the ONNX checker with full shape inference.

Tolerances (float32 graphs): inference outputs `|ort - ref| <= 1e-6·(|ref| + max|ref|)`; three
training steps (loss, metrics, every `next` output fed back) `<= 1e-5·(|ref| + max|ref|)`. The
float64 compile of the gelu MLP must agree to 1e-12 the same way.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from helpers import TrainDriver, compile_text, make_runner

BATCH = 5

MODELS = {
    "xor": """
        model xor(hidden = 8) {
            input  x: f32[B, 2]
            target y: f32[B, 1]
            logits = x |> dense(hidden, init = he) |> tanh |> dense(1)
            output prob = sigmoid(logits)
            loss      binary_cross_entropy(logits, y) + 1e-3 * l2(weights)
            optimizer sgd(lr = 0.5, momentum = 0.9, nesterov = true)
            metric    accuracy(logits, y)
        }
    """,
    "mlp": """
        model mlp(hidden = 6) {
            input  x: f32[B, 5]
            target label: i64[B]
            h = x |> dense(hidden) |> gelu |> dense(hidden) |> leaky_relu(alpha = 0.1)
            logits = h |> dense(4)
            output probs = softmax(logits)
            output logp = log_softmax(logits)
            loss      cross_entropy(logits, label) + 1e-3 * l2(weights)
            optimizer adam(lr = 0.01)
            metric    accuracy(logits, label)
        }
    """,
    "mix": """
        block res(x, width) {
            h = x |> dense(width) |> relu
            return x + h
        }

        model mix {
            input  x: f32[B, 6]
            input  img: f32[B, 2, 3]
            target y: f32[B, 2]
            a = x |> res(6) |> dropout(0.2)
            m = (a |> reshape(3, 2)) @ (img |> flatten |> dense(4) |> reshape(2, 2))
            j = concat(m |> flatten, img |> flatten, a)
            output pred = j |> dense(2) |> tanh
            loss      mse(pred, y) + 0.01 * l1(biases)
            optimizer rmsprop(lr = 0.01, momentum = 0.5)
        }
    """,
    # grouped convolutions with several channels per group (their input gradients and the grouped
    # transposed convolution are ConvTransposes) and overlapping padded max pooling (its gradient sends
    # the taps back through a ConvTranspose): onnx.reference 1.23 computes a grouped ConvTranspose
    # right only for one channel in and one out per group
    "grouped": """
        model grouped {
            input  img: f32[B, 4, 6, 5]
            target y: f32[B, 3]
            h = img |> conv2d(6, 3, padding = 1, groups = 2) |> relu
                |> conv_transpose2d(4, (2, 3), stride = 2, groups = 2) |> tanh
                |> max_pool2d(3, stride = 2, padding = 1)
            output pred = h |> flatten |> dense(3)
            loss      mse(pred, y)
            optimizer sgd(lr = 0.1)
        }
    """,
}


def compile_model(tmp_path, name: str, dtype: str = "float32"):
    return compile_text(tmp_path, MODELS[name], name=f"{name}.dl", dtype=dtype)


def random_feeds(entries, rng) -> dict[str, np.ndarray]:
    feeds = {}
    for e in entries:
        shape = tuple(BATCH if isinstance(d, str) else d for d in e["shape"])
        if e["dtype"].startswith("int"):
            feeds[e["name"]] = rng.integers(0, e.get("classes", 2), shape).astype(e["dtype"])
        elif e.get("role") == "target" and e["name"] == "y" and shape[-1] == 1:
            feeds[e["name"]] = (rng.random(shape) < 0.5).astype(e["dtype"])
        else:
            feeds[e["name"]] = rng.standard_normal(shape).astype(e["dtype"])
    return feeds


def assert_close(ort_out: dict, ref_out: dict, rtol: float, what: str):
    assert set(ort_out) == set(ref_out)
    for name, ref in ref_out.items():
        got, ref = np.asarray(ort_out[name]), np.asarray(ref)
        assert got.dtype == ref.dtype and got.shape == ref.shape, f"{what}: `{name}` is {got.dtype}{got.shape}, reference {ref.dtype}{ref.shape}"
        if not np.issubdtype(ref.dtype, np.floating):
            np.testing.assert_array_equal(got, ref, err_msg=f"{what}: `{name}`")
            continue
        scale = float(np.max(np.abs(ref), initial=0.0))
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * scale, err_msg=f"{what}: `{name}`")


@pytest.mark.parametrize("name", list(MODELS))
def test_graphs_pass_the_full_checker(name, tmp_path):
    program = compile_model(tmp_path, name)
    assert set(program.graphs) == {"infer", "predict", "init", "eval", "train"}
    for kind, data in program.graphs.items():
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        declared = {o.name: o.type for o in model.graph.output}
        for out in inferred.graph.output:
            assert out.type == declared[out.name], f"{name}.{kind}: output `{out.name}` type changed by shape inference"


@pytest.mark.parametrize("name,dtype", [(n, "float32") for n in MODELS] + [("mlp", "float64")])
def test_inference_agrees(name, dtype, tmp_path):
    program = compile_model(tmp_path, name, dtype)
    feeds = random_feeds(program.manifest["graphs"]["infer"]["inputs"], np.random.default_rng(1))
    ort_out = make_runner(program.graphs["infer"], "ort")(feeds)
    ref_out = make_runner(program.graphs["infer"], "reference")(feeds)
    assert_close(ort_out, ref_out, 1e-6 if dtype == "float32" else 1e-12, f"{name} ({dtype}) inference")


@pytest.mark.parametrize("name", list(MODELS))
def test_eval_agrees(name, tmp_path):
    program = compile_model(tmp_path, name)
    feeds = random_feeds(program.manifest["graphs"]["eval"]["inputs"], np.random.default_rng(2))
    spec, initial = program.manifest["graphs"]["eval"], program.initial_values()
    feeds.update({t["name"]: initial[t["name"]] for t in spec["params"] + spec["buffers"]})
    ort_out = make_runner(program.graphs["eval"], "ort")(feeds)
    ref_out = make_runner(program.graphs["eval"], "reference")(feeds)
    assert_close(ort_out, ref_out, 1e-6, f"{name} evaluation")


@pytest.mark.parametrize("name", list(MODELS))
def test_training_steps_agree(name, tmp_path):
    program = compile_model(tmp_path, name)
    spec = program.manifest["graphs"]["train"]
    ort_driver, ref_driver = TrainDriver(program, "ort"), TrainDriver(program, "reference")
    rng = np.random.default_rng(3)
    for step in range(3):
        data = random_feeds(spec["inputs"], rng)
        hyper = {"seed": step + 5} if "seed" in ort_driver.hyper else {}
        ort_out = ort_driver.step(data, **hyper)
        ref_out = ref_driver.step(data, **hyper)
        assert_close(ort_out, ref_out, 1e-5, f"{name} training step {step}")
    assert int(ort_driver.state["opt.step"]) == 3
    moved = [p for p, v in ort_driver.params.items() if not np.array_equal(v, TrainDriver(program).params[p])]
    assert moved, f"{name}: three training steps left every parameter unchanged"
