"""Learning-rate schedules and gradient clipping, computed inside the training graph.

- Schedules: the rate of each of 100 SGD steps, read from a bias whose gradient is exactly 1 (float64
  graph: the bias moves by -lr_t), against `torch.optim.lr_scheduler` (StepLR, ExponentialLR,
  CosineAnnealingLR, LinearLR, SequentialLR) to 1e-12 relative; the base rate stays the `lr` input.
- An MLP trained 30 steps with Adam under a warm-up then cosine schedule, and with clipping by global
  norm and by value, against torch (`clip_grad_norm_`, `clip_grad_value_`), as in test_torch_parity;
  `dslc bench`'s PyTorch twin clips the same way.
- The ONNX reference evaluator runs schedules, clipping, nadam, label smoothing and the count metrics
  as ONNX Runtime does (standard ops only).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from helpers import TrainDriver, compile_text
from test_torch_parity import MLP, RTOL, assert_params_match, batches, clip_like_dslc, torch_linears

from dslc.diagnostics import DslcError
from dslc.runtime.checkpoint import load_checkpoint
from dslc.schedules import rates

torch = pytest.importorskip("torch")
F = torch.nn.functional
STEPS = 100
LR = 0.1

BIAS = """
model sched {{
    input  x: f64[B, 1]
    out = x |> dense(1)
    output out
    loss   mean(out)
    optimizer sgd(lr = {lr}, schedule = {schedule})
}}
"""


def torch_rates(make, steps: int = STEPS, lr: float = LR) -> np.ndarray:
    """The rate torch uses at each step with the scheduler `make(optimizer)`."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    scheduler = make(opt)
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return np.array(rates)


def dslc_rates(workdir, schedule: str, steps: int = STEPS, name: str = "s.dl", **hyper) -> np.ndarray:
    program = compile_text(workdir, BIAS.format(lr=LR, schedule=schedule), name=name, dtype="float64")
    driver = TrainDriver(program)
    x = np.zeros((4, 1))
    rates = []
    for _ in range(steps):
        before = driver.params["dense_0.bias"].copy()
        driver.step({"x": x}, **hyper)
        rates.append(float((before - driver.params["dense_0.bias"])[0]))
    return np.array(rates)


S = torch.optim.lr_scheduler if torch else None
SCHEDULES = {
    "step": ("step(10, factor = 0.5)", lambda o: S.StepLR(o, step_size=10, gamma=0.5)),
    "exponential": ("exponential(0.97)", lambda o: S.ExponentialLR(o, gamma=0.97)),
    "cosine": ("cosine(100, min_lr = 0.001)", lambda o: S.CosineAnnealingLR(o, T_max=100, eta_min=0.001)),
    "linear_warmup": ("linear_warmup(20, start_factor = 0.1)",
                      lambda o: S.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=20)),
    "warmup_then_cosine": ("linear_warmup(10, start_factor = 0.2) then cosine(90, min_lr = 0.01)",
                           lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.2, total_iters=10),
                                                        S.CosineAnnealingLR(o, T_max=90, eta_min=0.01)], [10])),
    "three_parts": ("linear_warmup(10, start_factor = 0.1) then cosine(60, min_lr = 0.02) then step(every = 7)",
                    lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.1, total_iters=10),
                                                 S.CosineAnnealingLR(o, T_max=60, eta_min=0.02),
                                                 S.StepLR(o, step_size=7, gamma=0.1)], [10, 70])),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_matches_torch(name, workdir):
    schedule, make = SCHEDULES[name]
    ours = dslc_rates(workdir, schedule, name=f"{name}.dl")
    np.testing.assert_allclose(ours, torch_rates(make), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_the_numpy_rates_the_loop_checks_match_torch(name, workdir):
    """`schedules.rates` (the rate functions on numpy values, which `dslc train` reads to warn about a
    schedule that stops training) computes what the graph computes."""
    schedule, make = SCHEDULES[name]
    program = compile_text(workdir, BIAS.format(lr=LR, schedule=schedule), name=f"np_{name}.dl", dtype="float64")
    ours = rates(program.manifest["optimizer"]["schedule"], LR, np.arange(STEPS))
    np.testing.assert_allclose(ours, torch_rates(make), rtol=1e-12, atol=1e-15)


def test_schedule_scales_the_lr_input(workdir):
    """`--lr` (the `lr` input) stays the base rate of the schedule."""
    ours = dslc_rates(workdir, "exponential(0.9)", steps=5, name="base.dl", lr=0.5)
    np.testing.assert_allclose(ours, 0.5 * 0.9 ** np.arange(5), rtol=1e-12)


def test_defaults_and_the_end_of_a_cosine(workdir):
    """`linear_warmup` starts at 0 by default; a cosine holds `min_lr` after `total_steps` (PyTorch's
    climbs back up: dslc's is the schedule of the transformer recipe)."""
    ours = dslc_rates(workdir, "linear_warmup(4) then cosine(5)", steps=12, name="defaults.dl")
    t = np.arange(12)
    warm = LR * np.minimum(t, 4) / 4
    cos = LR * (1 + np.cos(np.pi * np.minimum(t - 4, 5) / 5)) / 2
    np.testing.assert_allclose(ours, np.where(t < 4, warm, cos), rtol=1e-12, atol=1e-15)
    assert ours[0] == 0 and ours[-1] == 0


def test_manifest_lists_the_schedule(workdir):
    program = compile_text(workdir, BIAS.format(lr=LR, schedule="linear_warmup(5) then cosine(50)"), name="m.dl",
                           dtype="float64")
    assert program.manifest["optimizer"]["schedule"] == [
        {"kind": "linear_warmup", "steps": 5, "start_factor": 0.0},
        {"kind": "cosine", "total_steps": 50, "min_lr": 0.0}]


@pytest.mark.parametrize("schedule, message", [
    ("cosine()", "`cosine` needs `total_steps`"),
    ("cosine(0)", "`total_steps` must be a positive whole number of steps, got 0"),
    ("cosine(10.5)", "`total_steps` must be a positive whole number of steps, got 10.5"),
    ("exponential(0.9) then cosine(10)", "`exponential` never ends, so nothing can come after it"),
    ("cosin(10)", "unknown schedule `cosin`"),
    ("cosine(10, min=0.1)", "`cosine` has no setting `min`"),
    ("linear_warmup(5, start_factor = 2)", "`start_factor` must be in [0, 1], got 2"),
    ("0.1", "a schedule is a call such as `cosine(1000)`"),
])
def test_schedule_errors(schedule, message, workdir):
    with pytest.raises(DslcError) as e:
        compile_text(workdir, BIAS.format(lr=LR, schedule=schedule), name="bad.dl", dtype="float64")
    assert message in str(e.value)


def test_then_outside_a_schedule(workdir):
    with pytest.raises(DslcError, match="`then` joins learning-rate schedules"):
        compile_text(workdir, "model m {\n input x: f32[B, 2]\n output y = x then x\n}", name="then.dl")


def test_decay_with_schedule_is_an_error(workdir):
    with pytest.raises(DslcError, match="`decay` and `schedule` both change the learning rate"):
        compile_text(workdir, BIAS.format(lr=LR, schedule="cosine(10), decay = 0.1"), name="both.dl", dtype="float64")


# ---- Adam with a schedule, clipping: an MLP against torch --------------------------------------------
CONFIGS = {
    "adam_warmup_cosine": "adam(lr = 0.02, schedule = linear_warmup(5, start_factor = 0.1) then cosine(25))",
    "sgd_clip_norm": "sgd(lr = 0.5, momentum = 0.9, clip_norm = 0.3)",
    "adam_clip_value": "adam(lr = 0.01, clip_value = 0.05, weight_decay = 0.01)",
}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_training_matches_torch(config, workdir):
    program = compile_text(workdir, MLP.format(optimizer=CONFIGS[config]), name=f"{config}.dl")
    s = program.manifest["optimizer"]["settings"]
    layers = torch_linears(program)
    model = torch.nn.Sequential(layers["dense_0"], torch.nn.ReLU(), layers["dense_1"], torch.nn.ReLU(), layers["dense_2"])
    if program.manifest["optimizer"]["kind"] == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    else:
        opt = torch.optim.SGD(model.parameters(), lr=s["lr"], momentum=s["momentum"])
    scheduler = None
    if "schedule" in program.manifest["optimizer"]:
        scheduler = S.SequentialLR(opt, [S.LinearLR(opt, start_factor=0.1, total_iters=5),
                                         S.CosineAnnealingLR(opt, T_max=25)], [5])
    driver = TrainDriver(program)
    clipped = 0
    for step, (x, label) in enumerate(batches(seed=len(config), steps=30)):
        opt.zero_grad()
        loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(label))
        loss.backward()
        clipped += clip_like_dslc(model.parameters(), s)
        opt.step()
        if scheduler:
            scheduler.step()
        out = driver.step({"x": x, "label": label})
        np.testing.assert_allclose(out["loss"], loss.item(), rtol=RTOL, err_msg=f"{config}: loss at step {step}")
        assert_params_match(driver, layers, f"{config}: after step {step}")
    if s["clip_norm"] or s["clip_value"]:
        assert clipped >= 10, "the clipping must act on most steps to be tested"


def test_clip_norm_scale_is_exact(workdir):
    """One SGD step in float64: the update is lr·g·min(1, c / (‖g‖ + 1e-6)) with ‖g‖ over every gradient."""
    text = """
    model c {
        input x: f64[B, 3]
        target y: f64[B, 2]
        out = x |> dense(2)
        output out
        loss mse(out, y)
        optimizer sgd(lr = 1.0, clip_norm = 0.01)
    }"""
    plain = compile_text(workdir, text.replace(", clip_norm = 0.01", ""), name="plain.dl", dtype="float64")
    program = compile_text(workdir, text, name="clip.dl", dtype="float64")
    rng = np.random.default_rng(0)
    data = {"x": rng.standard_normal((8, 3)), "y": rng.standard_normal((8, 2))}
    free, clip = TrainDriver(plain), TrainDriver(program)
    start = dict(free.params)
    free.step(data)
    clip.step(data)
    grads = {k: start[k] - free.params[k] for k in start}
    norm = math.sqrt(sum(float((g ** 2).sum()) for g in grads.values()))
    assert norm > 0.01
    for k in start:
        np.testing.assert_allclose(start[k] - clip.params[k], grads[k] * 0.01 / (norm + 1e-6), rtol=1e-12)


@pytest.mark.parametrize("optimizer", ["nadam(lr = 0.01, clip_norm = 0.3)", "sgd(lr = 0.5, clip_value = 0.01)"])
def test_bench_twin_clips_and_updates_like_the_graph(optimizer, workdir):
    """`dslc bench --compare torch`'s twin clips as the graph does and knows `nadam`: three steps agree."""
    from dslc.twin import TorchTwin

    program = compile_text(workdir, MLP.format(optimizer=optimizer), name="twin.dl")
    lowered = program.extras["lowered"]
    twin = TorchTwin(torch, lowered["train"], lowered["infer"], lowered["train"].notes["optimizer"])
    driver = TrainDriver(program)
    for step, (x, label) in enumerate(batches(seed=5, steps=3)):
        batch = {"x": x, "label": label}
        np.testing.assert_allclose(twin.loss_and_step(batch), driver.step(batch)["loss"], rtol=1e-5,
                                   err_msg=f"step {step}")


def test_bench_twin_has_no_lion(workdir):
    from dslc.twin import MissingTwin, make_optimizer

    program = compile_text(workdir, MLP.format(optimizer="lion()"), name="lion.dl")
    with pytest.raises(MissingTwin, match="no `lion` optimizer"):
        make_optimizer(torch, program.extras["lowered"]["train"].notes["optimizer"], [])


def test_reference_evaluator_runs_the_new_graph_parts(workdir):
    """Schedules, clipping, nadam, label smoothing and the count metrics are standard ONNX: the ONNX
    reference evaluator computes the same three steps as ONNX Runtime."""
    program = compile_text(workdir, """
    model portable {
        input  x: f32[B, 6]
        target label: i64[B]
        logits = x |> dense(8) |> relu |> dense(3)
        output logits
        loss      cross_entropy(logits, label, label_smoothing = 0.1)
        optimizer nadam(lr = 0.01, clip_norm = 0.5, schedule = linear_warmup(2) then cosine(10, min_lr = 0.001))
        metric    f1(logits, label, average = "weighted")
        metric    cm = confusion_matrix(logits, label)
        metric    top_k_accuracy(logits, label, k = 2)
        metric    mae(softmax(logits), softmax(logits) * 0.5)
    }""", name="portable.dl")
    ort_driver, reference = TrainDriver(program), TrainDriver(program, runtime="reference")
    for x, label in batches(seed=9, steps=3):
        ours, theirs = ort_driver.step({"x": x, "label": label}), reference.step({"x": x, "label": label})
        for name in ("loss", "f1", "cm", "top_k_accuracy", "mae"):
            np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-5, atol=1e-6, err_msg=name)
    for name, value in ort_driver.params.items():
        np.testing.assert_allclose(value, reference.params[name], rtol=1e-5, atol=1e-6, err_msg=name)


IDLE = """
model idle {{
    input  x: f32[B, 2]
    target y: f32[B, 1]
    output pred = x |> dense(1)
    loss   mse(pred, y)
    optimizer sgd(lr = 0.1, schedule = {schedule})
}}
"""


@pytest.mark.parametrize("schedule, idle", [("linear_warmup(2) then cosine(3)", (5, 7)), ("exponential(0.1)", (7, 5)),
                                            ("cosine(12)", None), ("cosine(3, min_lr = 0.01)", None),
                                            ("step(2)", None)])
def test_a_schedule_that_stops_training_warns(schedule, idle, tmp_path):
    """`cosine(T)` holds `min_lr` (0 by default) after T steps, and `exponential`/`step` decay every step:
    written with PyTorch's per-epoch schedulers in mind, the rest of the run silently changes (almost)
    nothing. 12 steps (3 epochs of 4); with the cosine, the weights indeed stop at step 5. `step(2)`
    ends at 1e-5 of the rate: above the warning's 1e-6."""
    program = compile_text(tmp_path, IDLE.format(schedule=schedule), name="idle.dl")
    rng = np.random.default_rng(0)
    data = {"x": rng.standard_normal((16, 2)).astype(np.float32), "y": rng.standard_normal((16, 1)).astype(np.float32)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        program.train(data, epochs=3, batch_size=4, out_dir=tmp_path / "run", verbose=0)
    said = [str(w.message) for w in caught if "learning-rate schedule" in str(w.message)]
    if idle is None:
        assert said == []
        return
    assert said == [f"the learning-rate schedule keeps the rate below 1e-06 of its base from step {idle[0]} on, for "
                    f"{idle[1]} of the run's 12 steps, which then barely change the weights: schedule lengths (and "
                    "`every`, and `exponential`'s rate) count optimizer steps (4 per epoch here), not epochs"]
    if "cosine" not in schedule:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        after_5 = program.train(data, epochs=2, batch_size=4, out_dir=tmp_path / "short", verbose=0)  # steps 0..7
    assert after_5[-1]["steps"] == 8
    longer, shorter = load_checkpoint(tmp_path / "run").params, load_checkpoint(tmp_path / "short").params
    assert all(np.array_equal(longer[k], shorter[k]) for k in longer)
