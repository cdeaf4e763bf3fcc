"""Every optimizer setting against `torch.optim`, in float64 to 1e-10: parameters after each of 12 steps.

The model is a 5-7-3 MLP (tanh, softmax cross-entropy) built with `dtype="float64"`, so rounding cannot
hide a wrong formula: the float32 tests (test_torch_parity.py) allow 1e-4 relative, enough to let a
misplaced epsilon or a bias correction that is off by one step through. Torch gets the manifest's
settings (defaults included) through its own keywords — Adagrad's `lr_decay` for dslc's `decay`, which
both define as lr / (1 + decay·(steps taken)) — and clips with `clip_grad_norm_`/`clip_grad_value_`.
Torch keeps the optimizer's step counter in the default dtype, so the test sets it to float64. A wrong
formula shows at once: RMSprop with eps inside the square root (Keras's) instead of outside differs
from torch by 3e-4 to 1e-2 after the first step here.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import TrainDriver, compile_text
from test_torch_parity import apply_keras_decay, clip_like_dslc, torch_optimizer

torch = pytest.importorskip("torch")
F = torch.nn.functional

STEPS = 12
BATCH = 8
TOLERANCE = 1e-10  # max |dslc - torch| / max |torch| per tensor

MLP = """
model mlp {{
    input  x: f64[B, 5]
    target label: i64[B]
    logits = x |> dense(7, bias_init = uniform()) |> tanh |> dense(3, bias_init = uniform())
    output logits
    loss      cross_entropy(logits, label)
    optimizer {optimizer}
}}
"""

CASES = {
    "sgd": "sgd(lr = 0.3)",
    "sgd_momentum": "sgd(lr = 0.1, momentum = 0.9)",
    "sgd_nesterov_weight_decay": "sgd(lr = 0.1, momentum = 0.8, nesterov = true, weight_decay = 0.05)",
    "sgd_decay": "sgd(lr = 0.3, weight_decay = 0.1, decay = 0.2)",
    "rmsprop": "rmsprop(lr = 0.01)",
    "rmsprop_rho_eps": "rmsprop(lr = 0.01, rho = 0.5, eps = 1e-3)",
    "rmsprop_momentum_weight_decay": "rmsprop(lr = 0.005, momentum = 0.7, weight_decay = 0.1, decay = 0.1)",
    "rmsprop_centered": "rmsprop(lr = 0.01, centered = true, eps = 1e-4)",
    "rmsprop_centered_momentum": "rmsprop(lr = 0.003, rho = 0.8, centered = true, momentum = 0.6, weight_decay = 0.1)",
    "adagrad": "adagrad(lr = 0.1)",
    "adagrad_eps_weight_decay_decay": "adagrad(lr = 0.1, eps = 1e-2, weight_decay = 0.1, decay = 0.3)",
    "adam": "adam(lr = 0.01)",
    "adam_betas_eps": "adam(lr = 0.01, beta1 = 0.5, beta2 = 0.9, eps = 1e-2)",
    "adam_weight_decay_decay": "adam(lr = 0.01, weight_decay = 0.2, decay = 0.1)",
    "adam_amsgrad": "adam(lr = 0.02, amsgrad = true, beta2 = 0.9)",
    "adamw": "adamw(lr = 0.01)",
    "adamw_amsgrad": "adamw(lr = 0.02, amsgrad = true, beta1 = 0.5, beta2 = 0.8, weight_decay = 0.3)",
    "adamw_settings": "adamw(lr = 0.02, beta1 = 0.8, beta2 = 0.95, eps = 1e-3, weight_decay = 0.5, decay = 0.05)",
    "nadam": "nadam(lr = 0.01, momentum_decay = 0.05, eps = 1e-3, weight_decay = 0.1)",
    "sgd_clip_norm": "sgd(lr = 0.3, momentum = 0.5, clip_norm = 0.2)",
    "adam_clip_value": "adam(lr = 0.01, clip_value = 0.02, weight_decay = 0.1)",
    "adamw_clip_norm_schedule":
        "adamw(lr = 0.05, clip_norm = 0.3, schedule = linear_warmup(4, start_factor = 0.25) then cosine(8))",
}


def torch_schedule(opt, schedule: list[dict] | None):
    """Torch's scheduler for the manifest's `schedule` (the parts this file uses)."""
    if not schedule:
        return None
    S = torch.optim.lr_scheduler
    warmup, cosine = schedule
    return S.SequentialLR(opt, [S.LinearLR(opt, start_factor=warmup["start_factor"],
                                           total_iters=warmup["steps"]),
                                S.CosineAnnealingLR(opt, T_max=cosine["total_steps"], eta_min=cosine["min_lr"])],
                          [warmup["steps"]])


def linears(program) -> list:
    """torch.nn.Linear layers (float64) holding the compiled initial values; dslc's weights are [in, out]."""
    inits = program.initial_values()
    layers = []
    for i in range(2):
        w, bias = inits[f"dense_{i}.weight"], inits[f"dense_{i}.bias"]
        lin = torch.nn.Linear(*w.shape, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.T.copy()))
            lin.bias.copy_(torch.from_numpy(bias.copy()))
        layers.append(lin)
    return layers


def assert_close(driver, layers, what):
    for i, lin in enumerate(layers):
        for kind in ("weight", "bias"):
            theirs = getattr(lin, kind).detach().numpy()
            theirs = theirs.T if kind == "weight" else theirs
            ours = driver.params[f"dense_{i}.{kind}"]
            err = float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))
            assert err <= TOLERANCE, f"{what}: `dense_{i}.{kind}` differs from torch by {err:.3g}"


@pytest.fixture
def torch_float64():
    """Torch keeps an optimizer's scalars (`step`, NAdam's `mu_product`) in the default dtype: float32
    would differ from the float64 graph by ~4e-10."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(saved)


@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_matches_torch_in_float64(case, workdir, torch_float64):
    program = compile_text(workdir, MLP.format(optimizer=CASES[case]), name=f"{case}.dl", dtype="float64")
    manifest = program.manifest["optimizer"]
    s = manifest["settings"]
    layers = linears(program)
    model = torch.nn.Sequential(layers[0], torch.nn.Tanh(), layers[1])
    opt = torch_optimizer(manifest["kind"], s, model.parameters())
    scheduler = torch_schedule(opt, manifest.get("schedule"))
    driver = TrainDriver(program)
    rng = np.random.default_rng(len(case))
    clipped = 0
    for step in range(STEPS):
        x, label = 2 * rng.standard_normal((BATCH, 5)), rng.integers(0, 3, BATCH)
        apply_keras_decay(opt, manifest["kind"], s, step)
        opt.zero_grad()
        F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(label)).backward()
        clipped += clip_like_dslc(model.parameters(), s)
        opt.step()
        if scheduler:
            scheduler.step()
        driver.step({"x": x, "label": label})
        assert_close(driver, layers, f"{case}: after step {step}")
    if s["clip_norm"] or s["clip_value"]:
        assert clipped >= STEPS // 2, "the clipping must act on most steps to be tested"


@pytest.mark.parametrize("optimizer, hint", [
    ("rmsprop(alpha = 0.99)", "write `rho = ...` instead"),
    ("adagrad(lr_decay = 0.1)", "write `decay = ...` instead"),
    ("adam(betas = 0.9)", "write `beta1 = ..., beta2 = ...` instead"),
    ("adagrad(initial_accumulator_value = 0.1)",
     "the accumulator starts at 0 (PyTorch's default; Keras starts it at 0.1)"),
    ("sgd(momentum = 0.9, dampening = 0.1)", "momentum has no dampening here (PyTorch's default, dampening = 0)"),
    ("adam(nesterov = true)", "Nesterov momentum is `sgd(momentum = 0.9, nesterov = true)`, or Adam's variant `nadam`"),
    ("sgd(amsgrad = true)", "AMSGrad is `adam(amsgrad = true)` or `adamw(amsgrad = true)`"),
    ("adam(decoupled_weight_decay = true)",
     "`adamw` decouples its weight decay; `adam` adds weight_decay·p to the gradient"),
])
def test_a_torch_or_keras_setting_gets_dslc_s_answer(optimizer, hint, workdir):
    from dslc.diagnostics import DslcError

    with pytest.raises(DslcError) as e:
        compile_text(workdir, MLP.format(optimizer=optimizer), dtype="float64")
    key = re.findall(r"(\w+) =", optimizer)[-1]
    assert e.value.diagnostics[0].message.endswith(f"has no setting `{key}`")
    assert e.value.diagnostics[0].hint == hint


def test_centered_rmsprop_survives_a_constant_gradient_in_float32(workdir):
    """s - a² of a constant gradient is 0 plus rounding, negative for some elements after ~135 float32
    steps at rho 0.9: its root was NaN (torch.optim.RMSprop(centered=True) gives NaN at step 132)."""
    program = compile_text(workdir, """
    model c {
        input x: f32[B, 50]
        out = x |> dense(4)
        output out
        loss mean(out)
        optimizer rmsprop(lr = 1e-6, centered = true)
    }""")
    driver = TrainDriver(program)
    x = np.random.default_rng(0).standard_normal((1, 50)).astype(np.float32)
    for _ in range(200):
        driver.step({"x": x})
    assert all(np.isfinite(value).all() for value in driver.params.values())
