"""Losses, penalties, dropout and schedules where Keras and PyTorch users each expect their own convention:
the numbers grammar/LANGUAGE.md ("Next to PyTorch and Keras") states, checked in float64.

- `cross_entropy` of sequence logits `[B, T, C]` (classes last, as Keras) is PyTorch's `cross_entropy` of
  `[B, C, T]` with reduction `mean`: averaged over all B·T positions, label smoothing included; the loss
  and one SGD step agree to 1e-12.
- `weight_decay = λ` (sgd, adam: added to the gradient, every trained parameter) is `λ/2 · l2(params)`
  added to the loss, to 1e-12 over 6 steps; `adamw`'s decoupled decay is not (it differs by ~1e-3).
- `l2(weights)` is Keras's `kernel_regularizer = l2(1)` on every layer: Σ w² of the kernels (not the
  biases, not a norm's scales), without PyTorch's 1/2; `l1(weights)` Σ |w| of the same.
- `dropout(rate)` keeps 1 - rate of the elements and scales them by 1/(1 - rate) (inverted dropout).
- A schedule counts optimizer steps, and a resumed run continues it: 2 + 2 epochs equal 4 bit for bit.
- A loss keyword of PyTorch or Keras (`reduction`, `from_logits`, `class_weight`, BCE's `label_smoothing`) is an
  error whose hint says what dslc does instead.
"""
from __future__ import annotations

import numpy as np
import pytest
from helpers import TrainDriver, compile_text

from dslc.runtime.checkpoint import load_checkpoint
from dslc.runtime.train import Reporter, fit

torch = pytest.importorskip("torch")
F = torch.nn.functional


def test_sequence_cross_entropy_averages_over_every_position(workdir):
    program = compile_text(workdir, """
    model seq {
        input  x: f64[B, T, 4]
        target y: i64[B, T]
        z = x |> linear(3)
        output z
        loss      cross_entropy(z, y, label_smoothing = 0.2)
        optimizer sgd(lr = 1.0)
    }""", dtype="float64")
    init = program.initial_values()
    w = torch.tensor(init["linear_0.weight"], requires_grad=True)
    b = torch.tensor(init["linear_0.bias"], requires_grad=True)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((3, 5, 4)), rng.integers(0, 3, (3, 5))
    logits = torch.from_numpy(x) @ w + b
    loss = F.cross_entropy(logits.permute(0, 2, 1), torch.from_numpy(y), label_smoothing=0.2)  # classes on axis 1
    loss.backward()
    driver = TrainDriver(program)
    out = driver.step({"x": x, "y": y})
    np.testing.assert_allclose(out["loss"], loss.item(), rtol=1e-12)
    np.testing.assert_allclose(driver.params["linear_0.weight"], (w - w.grad).detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(driver.params["linear_0.bias"], (b - b.grad).detach().numpy(), rtol=1e-12)


PENALIZED = """
model wd {{
    input  x: f64[B, 4]
    target y: i64[B]
    z = x |> dense(6, bias_init = uniform()) |> tanh |> dense(3)
    output z
    loss      cross_entropy(z, y){penalty}
    optimizer {optimizer}
}}
"""


def train(workdir, optimizer: str, penalty: str = "", steps: int = 6) -> dict[str, np.ndarray]:
    program = compile_text(workdir, PENALIZED.format(optimizer=optimizer, penalty=penalty),
                           name=f"wd{abs(hash((optimizer, penalty)))}.dl", dtype="float64")
    driver = TrainDriver(program)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        driver.step({"x": rng.standard_normal((8, 4)), "y": rng.integers(0, 3, 8)})
    return driver.params


def largest_difference(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


@pytest.mark.parametrize("optimizer", ["sgd(lr = 0.3, momentum = 0.9)", "adam(lr = 0.05)"])
def test_weight_decay_is_half_an_l2_penalty_on_every_parameter(optimizer, workdir):
    decayed = train(workdir, optimizer.replace(")", ", weight_decay = 0.2)"))
    penalized = train(workdir, optimizer, " + 0.1 * l2(params)")
    assert largest_difference(decayed, penalized) < 1e-12
    kernels_only = train(workdir, optimizer, " + 0.1 * l2(weights)")
    assert largest_difference(decayed, kernels_only) > 1e-4, "the biases are decayed too"


def test_adamw_decay_is_not_an_l2_penalty(workdir):
    decoupled = train(workdir, "adamw(lr = 0.05, weight_decay = 0.2)")
    penalized = train(workdir, "adamw(lr = 0.05, weight_decay = 0.0)", " + 0.1 * l2(params)")
    assert largest_difference(decoupled, penalized) > 1e-4


def test_l2_of_weights_is_the_kernels_sum_of_squares(workdir):
    program = compile_text(workdir, """
    model k {
        input  x: f64[B, 4]
        target y: f64[B, 2]
        z = x |> dense(5, bias_init = uniform()) |> layer_norm |> dense(2, bias_init = uniform())
        output z
        loss      mse(z, y)
        optimizer sgd()
        metric    kernels = l2(weights)
        metric    everything = l2(params)
        metric    absolute = l1(weights)
    }""", dtype="float64")
    init = program.initial_values()
    out = TrainDriver(program).run({"x": np.zeros((2, 4)), "y": np.zeros((2, 2))})
    kernels = [init["dense_0.weight"], init["dense_1.weight"]]
    np.testing.assert_allclose(out["kernels"], sum(float((w ** 2).sum()) for w in kernels), rtol=1e-13)
    np.testing.assert_allclose(out["absolute"], sum(float(np.abs(w).sum()) for w in kernels), rtol=1e-13)
    everything = sum(float((v ** 2).sum()) for k, v in init.items() if not k.startswith("opt."))
    np.testing.assert_allclose(out["everything"], everything, rtol=1e-13)
    assert everything > out["kernels"] + 5  # the layer norm's 5 unit scales count only in `params`


def test_dropout_scales_the_kept_elements(workdir):
    program = compile_text(workdir, """
    model d {
        input  x: f64[B, 1000]
        target y: f64[B, 1]
        h = x |> dropout(0.25)
        z = dense(x, 1)
        output z
        loss      mse(z, y)
        optimizer sgd()
        metric    first = mean(h)
        metric    second = mean(h * h)
    }""", dtype="float64")
    out = TrainDriver(program).run({"x": np.ones((4, 1000)), "y": np.zeros((4, 1))})
    np.testing.assert_allclose(out["second"] / out["first"], 1 / 0.75, rtol=1e-12)  # every kept value is 1/(1-rate)
    assert abs(out["first"] * 0.75 - 0.75) < 0.02  # 3/4 of the 4000 kept


def test_a_resumed_run_continues_the_schedule(workdir):
    program = compile_text(workdir, """
    model r {
        input  x: f64[B, 3]
        target y: f64[B, 1]
        z = x |> dense(1)
        output z
        loss      mse(z, y)
        optimizer sgd(lr = 0.1, momentum = 0.5, schedule = linear_warmup(3) then step(4, factor = 0.5))
    }""", dtype="float64")
    rng = np.random.default_rng(2)
    data = {"x": rng.standard_normal((20, 3)), "y": rng.standard_normal((20, 1))}
    kw = {"batch_size": 8, "seed": 1, "reporter": Reporter()}  # 3 steps an epoch
    fit(program, data, epochs=4, out_dir=workdir / "straight", **kw)
    fit(program, data, epochs=2, out_dir=workdir / "split", **kw)
    fit(program, data, epochs=4, out_dir=workdir / "split", resume=True, **kw)
    straight, split = load_checkpoint(workdir / "straight"), load_checkpoint(workdir / "split")
    assert int(split.state["opt.step"]) == 12
    for name, value in straight.params.items():
        assert np.array_equal(value, split.params[name]), name


@pytest.mark.parametrize("loss, hint", [
    ("mse(z, y, reduction = \"sum\")", "a loss is a mean (over the examples, or every position of a sequence); "
                                       "PyTorch's `reduction = \"sum\"` is that times their count"),
    ("cross_entropy(z, c, from_logits = true)", "the losses take logits (Keras' `from_logits = true`): pass the value "
                                                "before `softmax` or `sigmoid`"),
    ("cross_entropy(z, c, ignore_index = 0)", "no `ignore_index`: `sample_weight = w` with a 0/1 target `w` of the "
     "labels' shape leaves positions out of the sum"),
    ("cross_entropy(z, c, class_weight = (1, 2))", "Keras' `class_weight` is `weight = (w_0, w_1, ...)` here"),
    ("cross_entropy(z, c, pos_weight = 2)", "`cross_entropy` weights classes with `weight = (w_0, w_1, ...)`"),
    ("binary_cross_entropy(z, y, weight = 2)", "`binary_cross_entropy` weights the positive targets with "
                                               "`pos_weight = p`"),
    ("binary_cross_entropy(z, y, label_smoothing = 0.1)",
     "smooth the targets as Keras does: `binary_cross_entropy(logits, target * (1 - ε) + ε / 2)`"),
    ("cross_entropy(z, c, smoothing = 0.1)", "did you mean `label_smoothing`?"),
])
def test_a_torch_or_keras_loss_keyword_gets_dslc_s_answer(loss, hint, workdir):
    from dslc.diagnostics import DslcError

    with pytest.raises(DslcError) as e:
        compile_text(workdir, f"""
        model m {{
            input  x: f32[B, 2]
            target y: f32[B, 3]
            target c: i64[B]
            z = x |> dense(3)
            output z
            loss      {loss}
            optimizer sgd()
        }}""")
    assert "has no argument" in e.value.diagnostics[0].message
    assert e.value.diagnostics[0].hint.startswith(hint)
