"""PyTorch parity: compiled training steps against `torch.optim` and `torch.nn.functional`.

- An MLP 6-8-8-3 (relu, softmax cross-entropy on integer labels) trained 20 steps with each optimizer
  configuration, from identical initial weights (the training graph's initializers; dense weights are
  `[in, out]`, `torch.nn.Linear` stores `[out, in]`) on identical batches. The optimizer settings given to
  torch are the compiled manifest's (so its defaults are checked too); Keras-style `decay` is applied
  by setting the torch param group's lr to `lr / (1 + decay·step)` before each step. Lion, which torch
  lacks, is compared with a torch optimizer written here from the paper's algorithm. At every step the
  loss and every parameter must agree element-wise to rtol 1e-4 (atol 1e-6 of the tensor's largest
  magnitude, for elements that cross 0), and each parameter tensor to an L2-norm relative error 1e-5.
- Each loss alone (mse, cross-entropy with labels and with probabilities, with and without label
  smoothing, binary cross-entropy on
  logits, l1/l2 penalties added to a loss) and `accuracy`: loss, metric and one SGD step.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from helpers import TrainDriver, compile_text  # noqa: E402

torch.set_num_threads(1)

STEPS = 20
BATCH = 16
RTOL = 1e-4
NORM_RTOL = 1e-5

MLP = """
model mlp {{
    input  x: f32[B, 6]
    target label: i64[B]
    logits = x |> dense(8) |> relu |> dense(8) |> relu |> dense(3)
    output probs = softmax(logits)
    loss      cross_entropy(logits, label)
    optimizer {optimizer}
}}
"""

OPTIMIZERS = {
    "sgd": "sgd(lr = 0.1)",
    "sgd_momentum": "sgd(lr = 0.1, momentum = 0.9)",
    "sgd_nesterov": "sgd(lr = 0.1, momentum = 0.9, nesterov = true)",
    "sgd_weight_decay_decay": "sgd(lr = 0.2, momentum = 0.5, weight_decay = 0.01, decay = 0.05)",
    "rmsprop": "rmsprop(lr = 0.01)",
    "rmsprop_momentum": "rmsprop(lr = 0.005, rho = 0.8, momentum = 0.9, eps = 1e-6)",
    "adagrad": "adagrad(lr = 0.1)",
    "adam": "adam(lr = 0.01)",
    "adam_weight_decay": "adam(lr = 0.01, weight_decay = 0.05, beta1 = 0.8)",
    "adam_decay": "adam(lr = 0.02, decay = 0.1)",
    "adamw": "adamw(lr = 0.01)",
    "adamw_weight_decay_decay": "adamw(lr = 0.01, weight_decay = 0.1, beta2 = 0.99, decay = 0.02)",
    "nadam": "nadam(lr = 0.01)",
    "nadam_weight_decay": "nadam(lr = 0.005, beta1 = 0.8, momentum_decay = 0.01, weight_decay = 0.05, decay = 0.1)",
    "lion": "lion(lr = 0.001)",
    "lion_weight_decay": "lion(lr = 0.002, beta1 = 0.8, beta2 = 0.95, weight_decay = 0.5)",
}


class Lion(torch.optim.Optimizer):
    """Lion as in Chen et al. 2023 (Algorithm 2): the reference, since torch has none."""

    def __init__(self, params, lr, beta1, beta2, weight_decay):
        super().__init__(params, {"lr": lr, "beta1": beta1, "beta2": beta2, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                m = self.state[p].setdefault("m", torch.zeros_like(p))
                update = (group["beta1"] * m + (1 - group["beta1"]) * p.grad).sign()
                p.mul_(1 - group["lr"] * group["weight_decay"]).sub_(group["lr"] * update)
                m.mul_(group["beta2"]).add_((1 - group["beta2"]) * p.grad)


def torch_optimizer(kind: str, s: dict, params):
    """The torch optimizer with the manifest's settings (`s`: every setting, defaults filled in)."""
    if kind == "sgd":
        return torch.optim.SGD(params, lr=s["lr"], momentum=s["momentum"], nesterov=s["nesterov"],
                               weight_decay=s["weight_decay"])
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=s["lr"], alpha=s["rho"], eps=s["eps"], momentum=s["momentum"],
                                   centered=s["centered"], weight_decay=s["weight_decay"])
    if kind == "adagrad":
        return torch.optim.Adagrad(params, lr=s["lr"], lr_decay=s["decay"], eps=s["eps"],
                                   weight_decay=s["weight_decay"])
    if kind in ("adam", "adamw"):
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        return cls(params, lr=s["lr"], betas=(s["beta1"], s["beta2"]), eps=s["eps"], weight_decay=s["weight_decay"],
                   amsgrad=s["amsgrad"])
    if kind == "nadam":
        return torch.optim.NAdam(params, lr=s["lr"], betas=(s["beta1"], s["beta2"]), eps=s["eps"],
                                 weight_decay=s["weight_decay"], momentum_decay=s["momentum_decay"])
    if kind == "lion":
        return Lion(params, s["lr"], s["beta1"], s["beta2"], s["weight_decay"])
    raise ValueError(kind)


def apply_keras_decay(optimizer, kind: str, s: dict, step: int):
    """dslc's `decay`, lr / (1 + decay·step), as torch's param-group lr (Adagrad has it built in as `lr_decay`)."""
    if s["decay"] and kind != "adagrad":
        for group in optimizer.param_groups:
            group["lr"] = s["lr"] / (1 + s["decay"] * step)


def clip_like_dslc(parameters, s: dict) -> bool:
    """Torch's `clip_grad_norm_` / `clip_grad_value_` with the manifest's settings; whether they changed
    the gradients."""
    parameters = list(parameters)
    if s["clip_norm"]:
        return float(torch.nn.utils.clip_grad_norm_(parameters, s["clip_norm"])) > s["clip_norm"]
    if s["clip_value"]:
        acted = max(float(p.grad.abs().max()) for p in parameters) > s["clip_value"]
        torch.nn.utils.clip_grad_value_(parameters, s["clip_value"])
        return acted
    return False


def dense_names(spec) -> list[str]:
    """Layer names (`dense_0`, ...) in parameter order."""
    names = []
    for p in spec["params"]:
        layer = p["name"].rsplit(".", 1)[0]
        if layer not in names:
            names.append(layer)
    return names


def torch_linears(program) -> dict[str, "torch.nn.Linear"]:
    """One `torch.nn.Linear` per dense layer, holding the compiled initial values."""
    spec = program.manifest["graphs"]["train"]
    inits = program.initial_values()
    layers = {}
    for name in dense_names(spec):
        w = inits[f"{name}.weight"]
        bias = f"{name}.bias" in inits
        lin = torch.nn.Linear(w.shape[0], w.shape[1], bias=bias)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.T.copy()))
            if bias:
                lin.bias.copy_(torch.from_numpy(inits[f"{name}.bias"].copy()))
        layers[name] = lin
    return layers


def torch_param(layers, name: str) -> np.ndarray:
    layer, kind = name.rsplit(".", 1)
    value = getattr(layers[layer], kind).detach().numpy()
    return value.T if kind == "weight" else value


def assert_params_match(driver: TrainDriver, layers, what: str):
    for name, ours in driver.params.items():
        theirs = torch_param(layers, name)
        assert ours.shape == theirs.shape, f"{what}: `{name}` has shape {ours.shape}, torch {theirs.shape}"
        scale = float(np.max(np.abs(theirs)))
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=1e-2 * RTOL * scale, err_msg=f"{what}: `{name}`")
        norm_err = np.linalg.norm(ours.astype(np.float64) - theirs) / max(np.linalg.norm(theirs.astype(np.float64)), 1e-30)
        assert norm_err <= NORM_RTOL, f"{what}: `{name}` differs from torch by {norm_err:.3g} (L2 relative)"


def batches(seed: int, steps: int = STEPS):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((BATCH, 6)).astype(np.float32), rng.integers(0, 3, BATCH).astype(np.int64))
            for _ in range(steps)]


@pytest.mark.parametrize("config", list(OPTIMIZERS))
def test_optimizer_parity(config, workdir):
    program = compile_text(workdir, MLP.format(optimizer=OPTIMIZERS[config]), name=f"{config}.dl")
    opt = program.manifest["optimizer"]
    settings = opt["settings"]
    driver = TrainDriver(program)
    layers = torch_linears(program)
    model = torch.nn.Sequential(layers["dense_0"], torch.nn.ReLU(), layers["dense_1"], torch.nn.ReLU(), layers["dense_2"])
    optimizer = torch_optimizer(opt["kind"], settings, model.parameters())
    assert_params_match(driver, layers, f"{config}: initial values")

    for step, (x, label) in enumerate(batches(seed=len(config))):
        apply_keras_decay(optimizer, opt["kind"], settings, step)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(label))
        loss.backward()
        optimizer.step()
        out = driver.step({"x": x, "label": label})
        np.testing.assert_allclose(out["loss"], loss.item(), rtol=RTOL, err_msg=f"{config}: loss at step {step}")
        assert_params_match(driver, layers, f"{config}: after step {step}")
    assert int(driver.state["opt.step"]) == STEPS


# ---- each loss alone -------------------------------------------------------------------------------
LOSS_MODELS = {
    "mse": ("""
        input  x: f32[B, 4]
        target y: f32[B, 2]
        out = x |> dense(2)
        output pred = out
        loss   mse(out, y)
    """, lambda out, t, layers: F.mse_loss(out, t["y"])),
    "cross_entropy_labels": ("""
        input  x: f32[B, 4]
        target y: i64[B]
        out = x |> dense(3)
        output pred = out
        loss   cross_entropy(out, y)
    """, lambda out, t, layers: F.cross_entropy(out, t["y"])),
    "cross_entropy_probabilities": ("""
        input  x: f32[B, 4]
        target y: f32[B, 3]
        out = x |> dense(3)
        output pred = out
        loss   cross_entropy(out, y)
    """, lambda out, t, layers: F.cross_entropy(out, t["y"])),
    "cross_entropy_label_smoothing": ("""
        input  x: f32[B, 4]
        target y: i64[B]
        out = x |> dense(3)
        output pred = out
        loss   cross_entropy(out, y, label_smoothing = 0.1)
    """, lambda out, t, layers: F.cross_entropy(out, t["y"], label_smoothing=0.1)),
    "cross_entropy_probabilities_label_smoothing": ("""
        input  x: f32[B, 4]
        target y: f32[B, 3]
        out = x |> dense(3)
        output pred = out
        loss   cross_entropy(out, y, label_smoothing = 0.25)
    """, lambda out, t, layers: F.cross_entropy(out, t["y"], label_smoothing=0.25)),
    "binary_cross_entropy": ("""
        input  x: f32[B, 4]
        target y: f32[B, 2]
        out = x |> dense(2)
        output pred = out
        loss   binary_cross_entropy(out, y)
    """, lambda out, t, layers: F.binary_cross_entropy_with_logits(out, t["y"])),
    "penalties": ("""
        input  x: f32[B, 4]
        target y: f32[B, 2]
        out = x |> dense(3) |> tanh |> dense(2, name = "head")
        output pred = out
        loss   mse(out, y) + 0.1 * l1(weights) + 0.01 * l2(params) + 0.3 * l2("head")
    """, lambda out, t, layers: (F.mse_loss(out, t["y"])
                                 + 0.1 * sum(lin.weight.abs().sum() for lin in layers.values())
                                 + 0.01 * sum((p * p).sum() for lin in layers.values() for p in lin.parameters())
                                 + 0.3 * sum((p * p).sum() for p in layers["head"].parameters()))),
}


def loss_targets(name: str, rng) -> np.ndarray:
    if name in ("cross_entropy_labels", "cross_entropy_label_smoothing"):
        return rng.integers(0, 3, BATCH).astype(np.int64)
    if name in ("cross_entropy_probabilities", "cross_entropy_probabilities_label_smoothing"):
        e = np.exp(rng.standard_normal((BATCH, 3)))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    if name == "binary_cross_entropy":
        return rng.random((BATCH, 2)).astype(np.float32)  # probabilities, not only 0/1
    return rng.standard_normal((BATCH, 2)).astype(np.float32)


@pytest.mark.parametrize("name", list(LOSS_MODELS))
def test_loss_parity(name, workdir):
    """The loss value and one SGD step (so the loss's gradient) agree with torch."""
    text, torch_loss = LOSS_MODELS[name]
    program = compile_text(workdir, f"model {name} {{\n{text}\n    optimizer sgd(lr = 0.5)\n}}", name=f"loss_{name}.dl")
    layers = torch_linears(program)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((BATCH, 4)).astype(np.float32)
    y = loss_targets(name, rng)
    h = torch.from_numpy(x)
    for i, lin in enumerate(layers.values()):
        h = lin(h)
        if name == "penalties" and i == 0:
            h = torch.tanh(h)
    loss = torch_loss(h, {"y": torch.from_numpy(y)}, layers)
    loss.backward()
    with torch.no_grad():
        for lin in layers.values():
            for p in lin.parameters():
                p -= 0.5 * p.grad

    driver = TrainDriver(program)
    out = driver.step({"x": x, "y": y})
    np.testing.assert_allclose(out["loss"], loss.item(), rtol=RTOL, err_msg=f"{name}: loss")
    assert_params_match(driver, layers, f"{name}: after one SGD step")


ACCURACY = {
    "labels": ("scores: f32[B, 4]", "t: i64[B]", "scores |> dense(4)"),
    "probabilities": ("scores: f32[B, 4]", "t: f32[B, 4]", "scores |> dense(4)"),
    "binary": ("scores: f32[B, 1]", "t: f32[B, 1]", "scores |> dense(1)"),
}


@pytest.mark.parametrize("kind", list(ACCURACY))
def test_accuracy_parity(kind, workdir):
    inp, target, logits = ACCURACY[kind]
    loss = {"labels": "cross_entropy(z, t)", "probabilities": "cross_entropy(z, t)",
            "binary": "binary_cross_entropy(z, t)"}[kind]
    program = compile_text(workdir, f"""
        model acc {{
            input  {inp}
            target {target}
            z = {logits}
            output z
            loss      {loss}
            optimizer sgd(lr = 0.1)
            metric    accuracy(z, t)
        }}""", name=f"accuracy_{kind}.dl")
    rng = np.random.default_rng(3)
    n = 64
    x = rng.standard_normal((n, 4 if kind != "binary" else 1)).astype(np.float32)
    if kind == "labels":
        t = rng.integers(0, 4, n).astype(np.int64)
    elif kind == "probabilities":
        e = np.exp(2 * rng.standard_normal((n, 4)))
        t = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    else:
        t = (rng.random((n, 1)) < 0.5).astype(np.float32)
    layer = torch_linears(program)["dense_0"]
    with torch.no_grad():
        z = layer(torch.from_numpy(x))
        tt = torch.from_numpy(t)
        if kind == "labels":
            expected = (z.argmax(-1) == tt).float().mean().item()
        elif kind == "probabilities":
            expected = (z.argmax(-1) == tt.argmax(-1)).float().mean().item()
        else:
            expected = ((z > 0) == (tt > 0.5)).float().mean().item()
    out = TrainDriver(program).run({"scores": x, "t": t})
    assert 0.0 < expected < 1.0, "pick data on which accuracy is informative"
    assert float(out["accuracy"]) == pytest.approx(expected, abs=1e-6)
