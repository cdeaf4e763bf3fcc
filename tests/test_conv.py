"""Convolutional layers, pooling and upsampling (dslc/layers/conv.py on dslc/ops/conv.py, pool.py).

- Gradients: float64 finite differences of small models using every layer with stride, padding
  ("same" included, asymmetric), dilation, groups and `output_padding` (`GRADIENT_MODELS`, the method
  of tests/gradcheck.py). The ops themselves are checked sample by sample by tests/test_ops.py.
- PyTorch, layer by layer: the loss and one SGD step of a one-layer model against `torch.nn.functional`,
  in float64 (loss and gradient to 1e-9) and float32 (loss 1e-5, parameters after the step rtol 1e-4).
- Max-pool gradient on ties: each window's gradient is shared equally among the elements at its
  maximum, on both gradient paths (tiling windows, and overlapping padded windows).
- The PyTorch twin of the benchmark (the ops' `torch` methods) takes the same training step.
- PyTorch, whole models: models/lenet.dl, models/cnn_digits.dl (without dropout) and
  models/autoencoder.dl, 20 Adam steps from the same weights on the same batches: loss and every
  parameter at every step within rtol 1e-4 (atol 1e-6 of the tensor's largest magnitude), each
  parameter tensor within 1e-5 in relative L2 norm.
- The CNN on the 8×8 digits reaches >= 97% test accuracy; the autoencoder's test reconstruction error
  falls below a third of the baseline of predicting the mean training image.
- The graphs run the same in the ONNX reference evaluator (inference 1e-6, a training step 1e-5).
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import dslc
from dslc.compiler import compile_file
from dslc.emit.onnx import emit_graph
from dslc.ir.graph import Builder, Graph
from dslc.ir.types import TensorType
from dslc.passes.autodiff import gradients
from golden import ROOT
from gradcheck import check_model_gradients, model_source
from helpers import TrainDriver, compile_text, initializers, make_runner, ort_session

torch = pytest.importorskip("torch")
F = torch.nn.functional
torch.set_num_threads(1)

DIGITS = ROOT / "examples" / "digits"

# ---- gradients (float64 finite differences) ----------------------------------------------------------
GRADIENT_MODELS: dict[str, tuple[str, dict[str, str]]] = {
    "conv2d_stride_padding_dilation": ("""
        input  x: f32[B, 2, 6, 6]
        target y: f32[B, 2]
        h = x |> conv2d(3, 3, stride = 2, padding = 1) |> tanh
        output pred = h |> conv2d(2, 2, dilation = 2, bias = false) |> flatten
        loss   mse(pred, y)
    """, {}),
    "conv2d_groups_same": ("""
        input  x: f32[B, 4, 5, 5]
        target y: f32[B, 2]
        h = x |> conv2d(4, 3, padding = "same", groups = 2) |> tanh
        output pred = h |> conv2d(2, 2, stride = 2, padding = "same") |> global_avg_pool
        loss   mse(pred, y) + 0.01 * l2(weights)
    """, {}),
    "conv1d_pools": ("""
        input  x: f32[B, 2, 9]
        target y: f32[B, 2]
        h = x |> conv1d(4, 3, dilation = 2, padding = "same", groups = 2) |> tanh |> max_pool1d(3, stride = 2, padding = 1)
        output pred = h |> conv1d(3, 2, stride = 2, padding = 1) |> avg_pool1d(2) |> flatten |> dense(2)
        loss   mse(pred, y)
    """, {}),
    "conv_transpose": ("""
        input  x: f32[B, 2, 3, 3]
        input  z: f32[B, 2, 4]
        target y: f32[B, 3]
        a = x |> conv_transpose2d(3, 3, stride = 2, padding = 1, output_padding = 1) |> tanh
        b = a |> conv2d(2, 3, stride = 2) |> global_max_pool
        c = z |> conv_transpose1d(4, 3, stride = 3, dilation = 2, output_padding = 2, groups = 2, bias = false) |> avg_pool1d(4)
        output pred = concat(b, c |> flatten |> dense(1))
        loss   mse(pred, y)
    """, {}),
    "pools_upsample": ("""
        input  x: f32[B, 2, 7, 7]
        target y: f32[B, 6]
        h = x |> conv2d(2, 2) |> max_pool2d(3, stride = 2, padding = 1)
        a = h |> avg_pool2d(2, stride = 1, padding = 1) |> max_pool2d(2)
        u = a |> upsample(3) |> avg_pool2d(2) |> conv2d(1, 2) |> flatten
        output pred = concat(u, h |> max_pool2d(2) |> flatten)
        loss   mse(pred, y)
    """, {}),
    "rectangular": ("""
        input  x: f32[B, 2, 7, 6]
        target y: f32[B, 3]
        h = x |> conv2d(3, (3, 2), stride = (2, 1), padding = "same", dilation = (1, 2)) |> tanh
        a = h |> max_pool2d((2, 3), stride = (1, 2), padding = (1, 0)) |> avg_pool2d((1, 2))
        b = h |> conv_transpose2d(2, (2, 3), stride = (1, 2), output_padding = (0, 1)) |> upsample((1, 2))
        output pred = concat(a |> flatten, b |> global_max_pool) |> dense(3)
        loss   mse(pred, y)
    """, {}),
}


@pytest.mark.parametrize("name", list(GRADIENT_MODELS))
def test_model_gradient(name, workdir):
    body, kinds = GRADIENT_MODELS[name]
    check_model_gradients(workdir, name, model_source(name, body), kinds)


# ---- PyTorch, layer by layer -----------------------------------------------------------------------
# name -> (input shape, layer call(s), output shape, torch function of (x, params))
LAYERS = {
    "conv1d": ((2, 9), "conv1d(4, 3)", (4, 7),
               lambda x, p: F.conv1d(x, p["conv1d_0.weight"], p["conv1d_0.bias"])),
    "conv1d_same_stride_dilation_groups": (
        (2, 9), 'conv1d(4, 3, stride = 2, padding = "same", dilation = 2, groups = 2)', (4, 5),
        # Keras "same": ceil(9 / 2) = 5 outputs need 4 padding zeros, 2 on each side
        lambda x, p: F.conv1d(F.pad(x, (2, 2)), p["conv1d_0.weight"], p["conv1d_0.bias"], stride=2, dilation=2, groups=2)),
    "conv2d_same": ((2, 6, 5), 'conv2d(3, 3, padding = "same")', (3, 6, 5),
                    lambda x, p: F.conv2d(x, p["conv2d_0.weight"], p["conv2d_0.bias"], padding="same")),
    "conv2d_same_even_kernel_dilation": (
        (2, 6, 6), 'conv2d(3, 2, padding = "same", dilation = 3)', (3, 6, 6),
        lambda x, p: F.conv2d(x, p["conv2d_0.weight"], p["conv2d_0.bias"], padding="same", dilation=3)),
    "conv2d_same_stride": (
        (1, 7, 6), 'conv2d(2, 3, stride = 2, padding = "same")', (2, 4, 3),
        # rows: ceil(7/2) = 4 need 2 zeros (1, 1); columns: ceil(6/2) = 3 need 1 zero, at the end
        lambda x, p: F.conv2d(F.pad(x, (0, 1, 1, 1)), p["conv2d_0.weight"], p["conv2d_0.bias"], stride=2)),
    "conv2d_stride_padding_groups": (
        (2, 7, 7), "conv2d(4, 3, stride = 2, padding = 1, groups = 2, bias = false)", (4, 4, 4),
        lambda x, p: F.conv2d(x, p["conv2d_0.weight"], stride=2, padding=1, groups=2)),
    "conv2d_depthwise_dilation": (
        (3, 8, 8), "conv2d(6, 3, groups = 3, dilation = 2, stride = 3)", (6, 2, 2),
        lambda x, p: F.conv2d(x, p["conv2d_0.weight"], p["conv2d_0.bias"], groups=3, dilation=2, stride=3)),
    "conv_transpose2d_output_padding": (
        (2, 3, 3), "conv_transpose2d(3, 3, stride = 2, padding = 1, output_padding = 1)", (3, 6, 6),
        lambda x, p: F.conv_transpose2d(x, p["conv_transpose2d_0.weight"], p["conv_transpose2d_0.bias"], stride=2,
                                        padding=1, output_padding=1)),
    "conv_transpose2d_groups": (
        (2, 3, 4), "conv_transpose2d(4, 2, stride = 2, groups = 2)", (4, 6, 8),
        lambda x, p: F.conv_transpose2d(x, p["conv_transpose2d_0.weight"], p["conv_transpose2d_0.bias"], stride=2,
                                        groups=2)),
    "conv_transpose1d_dilation": (
        (2, 4), "conv_transpose1d(4, 3, stride = 3, dilation = 2, padding = 2, output_padding = 2, groups = 2)", (4, 12),
        lambda x, p: F.conv_transpose1d(x, p["conv_transpose1d_0.weight"], p["conv_transpose1d_0.bias"], stride=3,
                                        dilation=2, padding=2, output_padding=2, groups=2)),
    "max_pool2d_tiles_with_remainder": (
        (2, 5, 7), "conv2d(2, 1) |> max_pool2d(2)", (2, 2, 3),
        lambda x, p: F.max_pool2d(F.conv2d(x, p["conv2d_0.weight"], p["conv2d_0.bias"]), 2)),
    "max_pool2d_overlapping_padded": (
        (2, 7, 7), "conv2d(2, 1) |> max_pool2d(3, stride = 2, padding = 1)", (2, 4, 4),
        lambda x, p: F.max_pool2d(F.conv2d(x, p["conv2d_0.weight"], p["conv2d_0.bias"]), 3, stride=2, padding=1)),
    "max_pool1d_stride_1": (
        (2, 8), "conv1d(2, 1) |> max_pool1d(3, stride = 1, padding = 1)", (2, 8),
        lambda x, p: F.max_pool1d(F.conv1d(x, p["conv1d_0.weight"], p["conv1d_0.bias"]), 3, stride=1, padding=1)),
    "avg_pool2d_padded": (
        (2, 7, 6), "conv2d(2, 1) |> avg_pool2d(3, stride = 2, padding = 1)", (2, 4, 3),
        lambda x, p: F.avg_pool2d(F.conv2d(x, p["conv2d_0.weight"], p["conv2d_0.bias"]), 3, stride=2, padding=1)),
    "avg_pool1d_tiles": (
        (2, 9), "conv1d(2, 1) |> avg_pool1d(2)", (2, 4),
        lambda x, p: F.avg_pool1d(F.conv1d(x, p["conv1d_0.weight"], p["conv1d_0.bias"]), 2)),
    "global_pools": (
        (2, 4, 3), "conv2d(3, 2) |> global_avg_pool", (3,),
        lambda x, p: F.conv2d(x, p["conv2d_0.weight"], p["conv2d_0.bias"]).mean(dim=(2, 3))),
    "global_max_pool": (
        (2, 4, 3), "conv2d(3, 2) |> global_max_pool", (3,),
        lambda x, p: F.conv2d(x, p["conv2d_0.weight"], p["conv2d_0.bias"]).amax(dim=(2, 3))),
    "upsample2d": (
        (2, 3, 2), "conv2d(2, 1) |> upsample(2)", (2, 6, 4),
        lambda x, p: F.interpolate(F.conv2d(x, p["conv2d_0.weight"], p["conv2d_0.bias"]), scale_factor=2, mode="nearest")),
    "upsample1d": (
        (2, 3), "conv1d(2, 1) |> upsample(3)", (2, 9),
        lambda x, p: F.interpolate(F.conv1d(x, p["conv1d_0.weight"], p["conv1d_0.bias"]), scale_factor=3, mode="nearest")),
    # rectangular sizes: a tuple with one number per spatial axis, as Keras and PyTorch take them
    "conv2d_rectangular": (
        (2, 9, 8), "conv2d(3, (3, 5), stride = (2, 1), padding = (1, 2), dilation = (1, 2))", (3, 5, 4),
        lambda x, p: F.conv2d(x, p["conv2d_0.weight"], p["conv2d_0.bias"], stride=(2, 1), padding=(1, 2),
                              dilation=(1, 2))),
    "conv2d_rectangular_same": ((2, 7, 6), 'conv2d(3, (3, 5), padding = "same")', (3, 7, 6),
                                lambda x, p: F.conv2d(x, p["conv2d_0.weight"], p["conv2d_0.bias"], padding="same")),
    "conv2d_rectangular_same_stride": (
        (1, 8, 6), 'conv2d(2, (3, 5), stride = (2, 1), padding = "same")', (2, 4, 6),
        # Keras: rows ceil(8/2) = 4 need 1 zero, at the end; columns ceil(6/1) = 6 need 4, 2 on each side
        lambda x, p: F.conv2d(F.pad(x, (2, 2, 0, 1)), p["conv2d_0.weight"], p["conv2d_0.bias"], stride=(2, 1))),
    "conv1d_one_tuple": ((2, 9), "conv1d(4, (3,), stride = (2,))", (4, 4),
                         lambda x, p: F.conv1d(x, p["conv1d_0.weight"], p["conv1d_0.bias"], stride=2)),
    "conv_transpose2d_rectangular": (
        (2, 3, 4), "conv_transpose2d(3, (4, 3), stride = (2, 1), padding = (1, 0), output_padding = (1, 0))",
        (3, 7, 6),
        lambda x, p: F.conv_transpose2d(x, p["conv_transpose2d_0.weight"], p["conv_transpose2d_0.bias"],
                                        stride=(2, 1), padding=(1, 0), output_padding=(1, 0))),
    "max_pool2d_rectangular": (
        (2, 5, 7), "conv2d(2, 1) |> max_pool2d((2, 1))", (2, 2, 7),
        lambda x, p: F.max_pool2d(F.conv2d(x, p["conv2d_0.weight"], p["conv2d_0.bias"]), (2, 1))),
    "max_pool2d_rectangular_stride_padding": (
        (2, 5, 7), "conv2d(2, 1) |> max_pool2d((3, 2), stride = (1, 2), padding = (1, 0))", (2, 5, 3),
        lambda x, p: F.max_pool2d(F.conv2d(x, p["conv2d_0.weight"], p["conv2d_0.bias"]), (3, 2), stride=(1, 2),
                                  padding=(1, 0))),
    "avg_pool2d_rectangular": (
        (2, 5, 7), "conv2d(2, 1) |> avg_pool2d((3, 2), stride = (1, 2))", (2, 3, 3),
        lambda x, p: F.avg_pool2d(F.conv2d(x, p["conv2d_0.weight"], p["conv2d_0.bias"]), (3, 2), stride=(1, 2))),
    "upsample2d_per_axis": (
        (2, 3, 2), "conv2d(2, 1) |> upsample((2, 3))", (2, 6, 6),
        lambda x, p: F.interpolate(F.conv2d(x, p["conv2d_0.weight"], p["conv2d_0.bias"]), scale_factor=(2, 3),
                                   mode="nearest")),
}
LAYER_BATCH = 3


def dims(shape) -> str:
    return ", ".join(str(d) for d in shape)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")  # torch pads a copy: fine
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_matches_torch(name, dtype, workdir):
    """Loss and one SGD step (lr 1: the parameters move by exactly their gradient) against torch."""
    in_shape, call, out_shape, torch_fn = LAYERS[name]
    program = compile_text(workdir, f"""
        model {name} {{
            input  x: f32[B, {dims(in_shape)}]
            target t: f32[B, {dims(out_shape)}]
            output y = x |> {call}
            loss      mse(y, t)
            optimizer sgd(lr = 1.0)
        }}""", name=f"layer_{name}_{dtype}.dl", dtype=dtype)
    rng = np.random.default_rng(len(name))
    np_dtype = np.dtype(dtype)
    x = rng.standard_normal((LAYER_BATCH,) + in_shape).astype(np_dtype)
    t = rng.standard_normal((LAYER_BATCH,) + out_shape).astype(np_dtype)
    driver = TrainDriver(program)
    before = {k: v.copy() for k, v in driver.params.items()}
    params = {k: torch.tensor(v, requires_grad=True) for k, v in before.items()}
    loss = F.mse_loss(torch_fn(torch.from_numpy(x), params), torch.from_numpy(t))
    loss.backward()
    out = driver.step({"x": x, "t": t})
    if dtype == "float64":
        np.testing.assert_allclose(out["loss"], loss.item(), rtol=1e-12, err_msg=f"{name}: loss")
        for k, p in params.items():
            grad = before[k] - driver.params[k]
            theirs = p.grad.numpy()
            scale = float(np.max(np.abs(theirs)))
            np.testing.assert_allclose(grad, theirs, rtol=1e-9, atol=1e-12 * scale, err_msg=f"{name}: gradient of `{k}`")
    else:
        np.testing.assert_allclose(out["loss"], loss.item(), rtol=1e-5, err_msg=f"{name}: loss")
        for k, p in params.items():
            theirs = (p - p.grad).detach().numpy()
            scale = float(np.max(np.abs(theirs)))
            np.testing.assert_allclose(driver.params[k], theirs, rtol=1e-4, atol=1e-6 * scale, err_msg=f"{name}: `{k}`")


@pytest.mark.parametrize("layer,fan_in,fan_out", [
    ("conv2d(32, 3, init = INIT)", 16 * 9, 32 * 9),
    ("conv2d(32, 3, groups = 4, init = INIT)", 4 * 9, 32 * 9),
    ("conv_transpose2d(32, 3, init = INIT)", 32 * 9, 16 * 9),  # PyTorch's and Keras' fans of [C, F, k, k]
    ("conv2d(32, (3, 5), init = INIT)", 16 * 15, 32 * 15),
])
@pytest.mark.parametrize("init", ["he_uniform", "glorot"])
def test_initializer_fans(layer, fan_in, fan_out, init, workdir):
    """Uniform initializers reach their bound, which the fans set: √(6/fan_in) and √(6/(fan_in + fan_out))."""
    program = compile_text(workdir, f"""
        model fans {{
            input x: f32[B, 16, 6, 6]
            output y = x |> {layer.replace("INIT", init)}
        }}""", name=f"fans_{init}.dl")
    weight = next(v for k, v in initializers(program.graphs["infer"]).items() if k.endswith(".weight"))
    limit = np.sqrt(6 / fan_in) if init == "he_uniform" else np.sqrt(6 / (fan_in + fan_out))
    assert 0.98 * limit < np.abs(weight).max() <= limit


# ---- max-pool gradient on ties ----------------------------------------------------------------------
def pool_gradient(x: np.ndarray, g: np.ndarray, **attrs) -> np.ndarray:
    """d Σ(max_pool(x)·g) / dx through dslc's gradient rule, run by ONNX Runtime."""
    dtype = {np.float32: "float32", np.float64: "float64"}[x.dtype.type]
    b = Builder()
    xin = b.input("x", TensorType(dtype, x.shape), "data")
    y = b.max_pool(xin, **attrs)
    gin = b.input("g", y.type, "data")
    (dx,) = gradients(b.reduce_sum(b.mul(y, gin)), [xin])
    model = emit_graph(Graph("pool_grad", [xin, gin], [("dx", dx)]))
    return ort_session(model).run(None, {"x": x, "g": g})[0]


def shared_ties(x: np.ndarray, g: np.ndarray, kernel, strides, pads) -> np.ndarray:
    """The rule in numpy: each window's gradient, split equally among its elements equal to its max."""
    h, w = x.shape[2:]
    xp = np.pad(x, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])], constant_values=-np.inf)
    dx = np.zeros(xp.shape)
    for i in range(g.shape[2]):
        for j in range(g.shape[3]):
            rows = slice(i * strides[0], i * strides[0] + kernel[0])
            cols = slice(j * strides[1], j * strides[1] + kernel[1])
            window = xp[:, :, rows, cols]
            top = window == window.max(axis=(2, 3), keepdims=True)
            dx[:, :, rows, cols] += top * (g[:, :, i, j] / top.sum(axis=(2, 3)))[:, :, None, None]
    return dx[:, :, pads[0]:pads[0] + h, pads[1]:pads[1] + w]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", [
    {"kernel": (2, 2)},  # tiling windows: the upsampled-mask path
    {"kernel": (2, 3), "strides": (2, 3)},  # tiling with a remainder row and column
    {"kernel": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)},  # overlapping, padded: the one-hot conv path
    {"kernel": (2, 2), "strides": (1, 1)},
], ids=["tiles", "tiles_remainder", "overlap_padded", "overlap"])
def test_max_pool_gradient_shares_ties_equally(geometry, dtype):
    rng = np.random.default_rng(5)
    # few distinct values: most windows hold ties, including ties at 0 next to the zero padding
    x = rng.integers(-1, 2, (2, 3, 7, 8)).astype(dtype)
    x[0, 0] = 0.0  # one plane all ties
    kernel = geometry["kernel"]
    strides = geometry.get("strides", kernel)
    pads = geometry.get("pads", (0, 0, 0, 0))
    out = [(7 + pads[0] + pads[2] - kernel[0]) // strides[0] + 1, (8 + pads[1] + pads[3] - kernel[1]) // strides[1] + 1]
    g = rng.standard_normal((2, 3, *out)).astype(dtype)
    got = pool_gradient(x, g, **geometry)
    expected = shared_ties(x.astype(np.float64), g.astype(np.float64), kernel, strides, pads)
    np.testing.assert_allclose(got, expected, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-6)
    assert np.isclose(got.sum(), g.sum(), rtol=1e-5), "the windows' gradients must be passed on in full"


def test_tiling_pools_train_without_maxpool_indices_or_convolutions(workdir):
    """LeNet's 2×2 pools take the fast gradient path: no MaxPool indices, no scatter, and no
    convolutions beyond the model's own (2 forward, 1 input gradient, 2 filter gradients)."""
    program = compile_file(ROOT / "models" / "lenet.dl")
    graph = onnx.load_from_string(program.graphs["train"]).graph
    ops = [n.op_type for n in graph.node]
    assert all(len(n.output) == 1 for n in graph.node if n.op_type == "MaxPool")
    assert "ScatterElements" not in ops and "ScatterND" not in ops
    assert ops.count("Conv") == 4 and ops.count("ConvTranspose") == 1, sorted(ops)


def test_lenet_training_step_flops():
    """The benchmark's FLOP count of a LeNet step: each layer's forward, filter gradient and input
    gradient (none for the first convolution, whose input is data); the pools' gradients add none.
    The first convolution runs in its pool's phase form (passes/phases.py): 6×6 filters, the 5×5
    taps shifted in them, and the products laying out and folding back the shifted filters."""
    from dslc.twin import flops

    program = compile_file(ROOT / "models" / "lenet.dl")
    b = 32
    conv1, conv2 = 2 * b * 6 * 28 * 28 * 36, 2 * b * 16 * 10 * 10 * 6 * 25
    phase_filters = 2 * 6 * 25 * (4 * 36)
    dense = [2 * b * i * o for i, o in ((400, 120), (120, 84), (84, 10))]
    expected = 2 * conv1 + 2 * phase_filters + 3 * conv2 + 3 * sum(dense)  # every dense layer's input is computed
    assert flops(program.extras["final"]["train"], {"B": b}) == expected


# ---- PyTorch, whole models -------------------------------------------------------------------------
STEPS = 20
PARITY_BATCH = 16


def torch_modules(program, spec: list[tuple]):
    """torch layers holding the compiled initial weights; `spec` lists (dslc layer name, module)."""
    inits = program.initial_values()
    modules = {}
    for name, module in spec:
        w = inits[f"{name}.weight"]
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(np.array(w.T if isinstance(module, torch.nn.Linear) else w)))
            module.bias.copy_(torch.from_numpy(np.array(inits[f"{name}.bias"])))
        modules[name] = module
    return modules


def torch_value(modules, name: str) -> np.ndarray:
    layer, kind = name.rsplit(".", 1)
    module = modules[layer]
    value = getattr(module, kind).detach().numpy()
    return value.T if kind == "weight" and isinstance(module, torch.nn.Linear) else value


def assert_params_match(driver, modules, what: str):
    for name, ours in driver.params.items():
        theirs = torch_value(modules, name)
        assert ours.shape == theirs.shape, f"{what}: `{name}` has shape {ours.shape}, torch {theirs.shape}"
        scale = float(np.max(np.abs(theirs)))
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6 * scale, err_msg=f"{what}: `{name}`")
        norm = np.linalg.norm(ours.astype(np.float64) - theirs) / max(np.linalg.norm(theirs.astype(np.float64)), 1e-30)
        assert norm <= 1e-5, f"{what}: `{name}` differs from torch by {norm:.3g} (L2 relative)"


def lenet_case(program):
    nn = torch.nn
    m = torch_modules(program, [("conv2d_0", nn.Conv2d(1, 6, 5, padding=2)), ("conv2d_1", nn.Conv2d(6, 16, 5)),
                                ("dense_0", nn.Linear(400, 120)), ("dense_1", nn.Linear(120, 84)),
                                ("dense_2", nn.Linear(84, 10))])
    net = nn.Sequential(m["conv2d_0"], nn.ReLU(), nn.MaxPool2d(2), m["conv2d_1"], nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), m["dense_0"], nn.ReLU(), m["dense_1"], nn.ReLU(), m["dense_2"])
    rng = np.random.default_rng(1)
    batches = [{"image": rng.random((PARITY_BATCH, 1, 28, 28), dtype=np.float32),
                "label": rng.integers(0, 10, PARITY_BATCH)} for _ in range(STEPS)]
    loss = lambda b: F.cross_entropy(net(torch.from_numpy(b["image"])), torch.from_numpy(b["label"]))
    return m, loss, batches


def digit_batches(names: tuple[str, ...]):
    data = np.load(DIGITS / "train.npz")
    return [{name: data[name][k * PARITY_BATCH:(k + 1) * PARITY_BATCH] for name in names} for k in range(STEPS)]


def cnn_digits_case(program):
    nn = torch.nn
    m = torch_modules(program, [("conv2d_0", nn.Conv2d(1, 16, 3, padding="same")),
                                ("conv2d_1", nn.Conv2d(16, 32, 3, padding="same")),
                                ("dense_0", nn.Linear(128, 64)), ("dense_1", nn.Linear(64, 10))])
    net = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), m["conv2d_0"], nn.ReLU(), nn.MaxPool2d(2), m["conv2d_1"], nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), m["dense_0"], nn.ReLU(), m["dense_1"])
    weights = [m[k].weight for k in m]

    def loss(b):
        ce = F.cross_entropy(net(torch.from_numpy(b["image"])), torch.from_numpy(b["digit"]))
        return ce + 1e-5 * sum((w * w).sum() for w in weights)
    return m, loss, digit_batches(("image", "digit"))


def autoencoder_case(program):
    nn = torch.nn
    m = torch_modules(program, [("conv2d_0", nn.Conv2d(1, 16, 3, stride=2, padding=1)),
                                ("conv2d_1", nn.Conv2d(16, 4, 3, stride=2, padding=1)),
                                ("conv_transpose2d_0", nn.ConvTranspose2d(4, 16, 3, stride=2, padding=1, output_padding=1)),
                                ("conv_transpose2d_1", nn.ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1))])
    net = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), m["conv2d_0"], nn.ReLU(), m["conv2d_1"], m["conv_transpose2d_0"],
                        nn.ReLU(), m["conv_transpose2d_1"], nn.Sigmoid(), nn.Flatten())

    def loss(b):
        x = torch.from_numpy(b["image"])
        return F.mse_loss(net(x), x)
    return m, loss, digit_batches(("image",))


PARITY = {"lenet": (lenet_case, {}), "cnn_digits": (cnn_digits_case, {"rate": "0"}), "autoencoder": (autoencoder_case, {})}


@pytest.mark.parametrize("name", list(PARITY))
def test_model_matches_torch_over_20_adam_steps(name):
    case, defines = PARITY[name]
    program = compile_file(ROOT / "models" / f"{name}.dl", defines=defines)
    settings = program.manifest["optimizer"]["settings"]
    assert program.manifest["optimizer"]["kind"] == "adam"
    modules, torch_loss, batches = case(program)
    params = [p for module in modules.values() for p in module.parameters()]
    optimizer = torch.optim.Adam(params, lr=settings["lr"], betas=(settings["beta1"], settings["beta2"]), eps=settings["eps"])
    driver = TrainDriver(program)
    assert_params_match(driver, modules, f"{name}: initial values")
    assert len(driver.params) == len(params)
    for step, batch in enumerate(batches):
        optimizer.zero_grad()
        loss = torch_loss(batch)
        loss.backward()
        optimizer.step()
        out = driver.step(batch)
        np.testing.assert_allclose(out["loss"], loss.item(), rtol=1e-4, err_msg=f"{name}: loss at step {step}")
        assert_params_match(driver, modules, f"{name}: after step {step}")


@pytest.mark.parametrize("name", list(PARITY))
def test_the_torch_twin_takes_the_same_step(name):
    """`dslc bench --compare torch` runs the IR with the ops' `torch` twins: the same loss and update."""
    from dslc.bench import synthetic_batch
    from dslc.twin import TorchTwin

    program = compile_file(ROOT / "models" / f"{name}.dl", defines=PARITY[name][1])
    lowered = program.extras["lowered"]
    twin = TorchTwin(torch, lowered["train"], lowered["infer"], lowered["train"].notes["optimizer"])
    spec = program.manifest["graphs"]["train"]
    batch = synthetic_batch(spec["inputs"], {"B": 8}, np.random.default_rng(1))
    out = TrainDriver(program).run(batch)
    assert twin.loss_and_step(batch) == pytest.approx(float(out["loss"]), rel=1e-5)
    for p in spec["params"]:
        np.testing.assert_allclose(twin.params[p["name"]].detach().numpy(), out[p["next"]], rtol=1e-4, atol=1e-6,
                                   err_msg=p["name"])


# ---- the models learn ------------------------------------------------------------------------------
def test_cnn_digits_reaches_97_percent(tmp_path):
    program = dslc.compile(ROOT / "models" / "cnn_digits.dl")
    program.train(DIGITS / "train.npz", epochs=20, batch_size=32, out_dir=tmp_path / "run")
    test = np.load(DIGITS / "test.npz")
    probs = program.predict({"image": test["image"]}, weights=tmp_path / "run")["probs"]
    accuracy = float(np.mean(probs.argmax(axis=1) == test["digit"]))
    assert accuracy >= 0.97, f"test accuracy {accuracy:.4f}"


def test_autoencoder_reconstructs_far_better_than_the_mean_image(tmp_path):
    program = dslc.compile(ROOT / "models" / "autoencoder.dl")
    train, test = np.load(DIGITS / "train.npz"), np.load(DIGITS / "test.npz")
    history = program.train({"image": train["image"]}, epochs=20, batch_size=32, out_dir=tmp_path / "run")
    reconstruction = program.predict({"image": test["image"]}, weights=tmp_path / "run")["reconstruction"]
    error = float(np.mean((reconstruction - test["image"]) ** 2))
    baseline = float(np.mean((test["image"] - train["image"].mean(axis=0)) ** 2))
    assert history[-1]["loss"] < history[0]["loss"]
    assert error < baseline / 3, f"reconstruction error {error:.4f}, mean-image baseline {baseline:.4f}"


# ---- other runtimes -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lenet", "autoencoder"])
def test_reference_evaluator_agrees(name):
    """ONNX's reference evaluator runs the graphs (Conv, ConvTranspose, MaxPool, AveragePool, Resize)
    as ONNX Runtime does: inference to 1e-6, one training step to 1e-5 (relative to each output's scale)."""
    program = compile_file(ROOT / "models" / f"{name}.dl")
    rng = np.random.default_rng(4)
    spec = program.manifest["graphs"]["train"]
    data = {}
    for entry in spec["inputs"]:
        shape = tuple(3 if isinstance(d, str) else d for d in entry["shape"])
        data[entry["name"]] = (rng.integers(0, 10, shape) if entry["dtype"] == "int64"
                               else rng.random(shape, dtype=np.float32))
    feeds = {e["name"]: data[e["name"]] for e in program.manifest["graphs"]["infer"]["inputs"]}
    for runtime_outputs, rtol, what in [
        ((make_runner(program.graphs["infer"], "ort")(feeds), make_runner(program.graphs["infer"], "reference")(feeds)),
         1e-6, "inference"),
        ((TrainDriver(program, "ort").step(data), TrainDriver(program, "reference").step(data)), 1e-5, "training step"),
    ]:
        ours, reference = runtime_outputs
        assert set(ours) == set(reference)
        for key, ref in reference.items():
            scale = float(np.max(np.abs(ref), initial=0.0))
            np.testing.assert_allclose(ours[key], ref, rtol=rtol, atol=rtol * scale, err_msg=f"{name} {what}: `{key}`")
