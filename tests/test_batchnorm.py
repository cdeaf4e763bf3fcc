"""batch_norm: PyTorch parity of training steps (parameters and running statistics), of evaluation with
the running statistics, float64 gradients, and trained statistics reaching `predict`."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import check_model_gradients, model_source
from helpers import TrainDriver, compile_text, initializers, make_runner

torch = pytest.importorskip("torch")

GRADIENT_MODELS = {
    "batch_norm_dense_and_sequence": ("""
        input  x: f32[B, 3, 4]
        target y: f32[B, 2]
        h = x |> batch_norm |> flatten |> dense(5) |> batch_norm(momentum = 0.3) |> tanh
        output pred = h |> dense(2)
        loss   mse(pred, y)
    """, {}),
}

MODEL = """
model bn {
    input  x: f32[B, 3, 4]
    target y: f32[B, 2]
    h = x |> batch_norm(momentum = 0.2) |> flatten |> dense(6) |> batch_norm |> relu
    output pred = h |> dense(2)
    loss      mse(pred, y)
    optimizer sgd(lr = 0.05, momentum = 0.9)
}
"""


@pytest.mark.parametrize("name", list(GRADIENT_MODELS))
def test_gradient(name, workdir):
    body, kinds = GRADIENT_MODELS[name]
    check_model_gradients(workdir, name, model_source(name, body), kinds)


def torch_twin(values: dict[str, np.ndarray]):
    t = lambda a: torch.tensor(np.array(a))  # noqa: E731
    bn0, bn1 = torch.nn.BatchNorm1d(3, momentum=0.2), torch.nn.BatchNorm1d(6, momentum=0.1)
    lin0, lin1 = torch.nn.Linear(12, 6), torch.nn.Linear(6, 2)
    with torch.no_grad():
        for bn, name in ((bn0, "batch_norm_0"), (bn1, "batch_norm_1")):
            bn.weight.copy_(t(values[f"{name}.weight"]))
            bn.bias.copy_(t(values[f"{name}.bias"]))
        for lin, name in ((lin0, "dense_0"), (lin1, "dense_1")):
            lin.weight.copy_(t(values[f"{name}.weight"]).T)
            lin.bias.copy_(t(values[f"{name}.bias"]))
    net = torch.nn.Sequential(bn0, torch.nn.Flatten(), lin0, bn1, torch.nn.ReLU(), lin1)
    return net, {"batch_norm_0": bn0, "batch_norm_1": bn1, "dense_0": lin0, "dense_1": lin1}


def test_training_and_evaluation_match_pytorch(workdir):
    torch.set_num_threads(1)
    program = compile_text(workdir, MODEL, name="bn.dl")
    driver = TrainDriver(program)
    spec = program.manifest["graphs"]["train"]
    initial = program.initial_values()
    buffers = {b["name"]: initial[b["name"]] for b in spec["buffers"]}
    assert [float(buffers[n].sum()) for n in sorted(buffers)] == [0.0, 3.0, 0.0, 6.0]  # means 0, variances 1
    net, layers = torch_twin(driver.params)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(0)
    state = dict(driver.state)
    params = dict(driver.params)
    for step in range(20):
        x = (rng.standard_normal((8, 3, 4)) * 2 + 1).astype(np.float32)
        y = rng.standard_normal((8, 2)).astype(np.float32)
        out = driver.run({"x": x, "y": y}, params={**params, **buffers}, state=state)
        net.train()
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(net(torch.tensor(x)), torch.tensor(y))
        loss.backward()
        optimizer.step()
        assert float(out["loss"]) == pytest.approx(loss.item(), rel=1e-4)
        params = {p["name"]: out[p["next"]] for p in spec["params"]}
        buffers = {b["name"]: out[b["next"]] for b in spec["buffers"]}
        state = {s["name"]: out[s["next"]] for s in spec["state"]}
        for layer, module in layers.items():
            for local, tensor in module.named_parameters():
                want = tensor.detach().numpy()
                got = params[f"{layer}.{local}"]
                np.testing.assert_allclose(got, want.T if layer.startswith("dense") and local == "weight" else want,
                                           rtol=1e-4, atol=1e-5, err_msg=f"step {step}: {layer}.{local}")
            if layer.startswith("batch_norm"):
                np.testing.assert_allclose(buffers[f"{layer}.running_mean"], module.running_mean.numpy(), rtol=1e-4, atol=1e-6)
                np.testing.assert_allclose(buffers[f"{layer}.running_var"], module.running_var.numpy(), rtol=1e-4, atol=1e-6)

    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    net.eval()
    want = net(torch.tensor(x)).detach().numpy()
    evaluate = make_runner(program.graphs["eval"])
    got_loss = evaluate({"x": x, "y": np.zeros((5, 2), np.float32), **params, **buffers})["loss"]
    assert float(got_loss) == pytest.approx(float(np.mean(want ** 2)), rel=1e-4)
    predicted = program.predict({"x": x}, weights={**params, **buffers})["pred"]
    np.testing.assert_allclose(predicted, want, rtol=1e-4, atol=1e-5)


def test_trained_statistics_are_checkpointed_and_used_for_prediction(workdir):
    program = compile_text(workdir, MODEL, name="bn_run.dl")
    rng = np.random.default_rng(3)
    data = {"x": (rng.standard_normal((64, 3, 4)) * 3 + 2).astype(np.float32), "y": rng.standard_normal((64, 2)).astype(np.float32)}
    program.train(data, epochs=2, batch_size=16, out_dir=workdir / "run")
    from dslc.runtime.checkpoint import load_checkpoint

    ckpt = load_checkpoint(workdir / "run")
    mean = ckpt.params["batch_norm_0.running_mean"]
    assert mean.shape == (3,) and np.all(mean > 1.0)  # moved from 0 towards the data's mean of 2
    first = program.predict({"x": data["x"][:4]}, weights=workdir / "run")["pred"]
    moved = program.predict({"x": data["x"][:4]}, weights={**ckpt.params, "batch_norm_0.running_mean": mean * 0})["pred"]
    assert not np.allclose(first, moved)
