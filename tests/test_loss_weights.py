"""Class and example weights of the losses (`dslc/loss_weights.py`), in float64:

- gradients against central finite differences (`GRADIENT_MODELS`, run here and counted by
  test_gradients' check that every builtin is gradient-checked);
- `cross_entropy(weight = ...)` is PyTorch's `CrossEntropyLoss(weight=)` (labels, label smoothing,
  probability targets, sequences), `binary_cross_entropy(pos_weight = ...)` its `BCEWithLogitsLoss(pos_weight=)`,
  `sample_weight = w` its `(loss(reduction="none") * w).mean()`: the loss and one SGD step to 1e-12;
- Keras 3 (torch backend) `train_on_batch(..., sample_weight=, class_weight=)` gives the same loss and
  step as `sample_weight = w` and `Program.train(class_weight=)`;
- wrong weights are errors at their place: wrong length, negative, a lone number, a sample weight of
  the wrong shape, and in the data a missing, negative or short weight column.
"""
from __future__ import annotations

import numpy as np
import pytest
from gradcheck import check_model_gradients, model_source
from helpers import TrainDriver, compile_text

from dslc.diagnostics import DataError, DslcError

torch = pytest.importorskip("torch")
F = torch.nn.functional

GRADIENT_MODELS: dict[str, tuple[str, dict[str, str]]] = {
    "cross_entropy_class_and_sample_weights": ("""
        input  x: f32[B, 4]
        target y: i64[B]
        target w: f32[B]
        logits = x |> dense(4) |> tanh |> dense(3)
        output logits
        loss   cross_entropy(logits, y, weight = (1, 4, 0.5), sample_weight = w, label_smoothing = 0.1)
    """, {"w": "probabilities"}),
    "cross_entropy_weighted_probabilities": ("""
        input  x: f32[B, 4]
        target p: f32[B, 3]
        logits = x |> dense(3)
        output logits
        loss   cross_entropy(logits, p, weight = (2, 1, 3))
    """, {"p": "probabilities"}),
    "sequence_cross_entropy_step_weights": ("""
        input  x: f32[B, 5, 4]
        target y: i64[B, 5]
        target w: f32[B, 5]
        logits = x |> linear(3)
        output logits
        loss   cross_entropy(logits, y, weight = (1, 2, 3), sample_weight = w)
    """, {"w": "probabilities"}),
    "binary_cross_entropy_pos_weight": ("""
        input  x: f32[B, 3]
        target y: f32[B, 2]
        target w: f32[B]
        logits = x |> dense(4) |> tanh |> dense(2)
        output logits
        loss   binary_cross_entropy(logits, y, pos_weight = (3, 0.5), sample_weight = w)
    """, {"y": "binary", "w": "probabilities"}),
    "mse_sample_weights": ("""
        input  x: f32[B, 3]
        target y: f32[B, 2]
        target w: f32[B]
        output pred = x |> dense(2)
        loss   mse(pred, y, sample_weight = w)
    """, {"w": "probabilities"}),
}


@pytest.mark.parametrize("name", list(GRADIENT_MODELS))
def test_weighted_loss_gradient(name, workdir):
    body, kinds = GRADIENT_MODELS[name]
    check_model_gradients(workdir, name, model_source(name, body), kinds)


LINEAR = """
model weighted {{
    input  x: f64[B, {shape}]
    target y: {target}
    {extra}
    z = x |> linear({units})
    output z
    loss      {loss}
    optimizer sgd(lr = 1.0)
}}"""


def one_step(workdir, loss: str, target: str, data: dict, torch_loss, units: int = 3, shape: str = "4",
             extra: str = ""):
    """dslc's loss and one SGD step of `x |> linear(units)` against PyTorch's `torch_loss(logits)`."""
    program = compile_text(workdir, LINEAR.format(shape=shape, target=target, extra=extra, units=units, loss=loss),
                           dtype="float64")
    init = program.initial_values()
    w = torch.tensor(init["linear_0.weight"], requires_grad=True)
    b = torch.tensor(init["linear_0.bias"], requires_grad=True)
    expected = torch_loss(torch.from_numpy(data["x"]) @ w + b)
    expected.backward()
    driver = TrainDriver(program)
    got = driver.step(data)
    np.testing.assert_allclose(got["loss"], expected.item(), rtol=1e-12)
    np.testing.assert_allclose(driver.params["linear_0.weight"], (w - w.grad).detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(driver.params["linear_0.bias"], (b - b.grad).detach().numpy(), rtol=1e-12, atol=1e-15)
    return program


RNG = np.random.default_rng(3)
X = RNG.standard_normal((7, 4))
LABELS = np.array([0, 1, 2, 1, 1, 0, 2])
EXAMPLE_WEIGHTS = RNG.uniform(0, 2, 7)
CLASS_WEIGHTS = torch.tensor([1.0, 5.0, 0.5], dtype=torch.float64)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_class_weights_are_pytorchs_weighted_mean(workdir, smoothing):
    """Σ w_y·loss / Σ w_y (and PyTorch's smoothing term over the same divisor)."""
    one_step(workdir, f"cross_entropy(z, y, weight = (1, 5, 0.5), label_smoothing = {smoothing})", "i64[B]",
             {"x": X, "y": LABELS},
             lambda z: F.cross_entropy(z, torch.from_numpy(LABELS), weight=CLASS_WEIGHTS, label_smoothing=smoothing))


def test_class_weights_of_probability_targets_average_over_the_examples(workdir):
    p = np.exp(RNG.standard_normal((7, 3)))
    p /= p.sum(axis=1, keepdims=True)
    one_step(workdir, "cross_entropy(z, y, weight = (1, 5, 0.5), label_smoothing = 0.1)", "f64[B, 3]",
             {"x": X, "y": p},
             lambda z: F.cross_entropy(z, torch.from_numpy(p), weight=CLASS_WEIGHTS, label_smoothing=0.1))


def test_sequence_class_weights_divide_by_the_weights_of_every_position(workdir):
    x, y = RNG.standard_normal((3, 5, 4)), RNG.integers(0, 3, (3, 5))
    program_text = "cross_entropy(z, y, weight = (1, 5, 0.5))"
    seq = compile_text(workdir, f"""
    model seq {{
        input  x: f64[B, T, 4]
        target y: i64[B, T]
        z = x |> linear(3)
        output z
        loss      {program_text}
        optimizer sgd(lr = 1.0)
    }}""", name="seq.dl", dtype="float64")
    init = seq.initial_values()
    w = torch.tensor(init["linear_0.weight"])
    b = torch.tensor(init["linear_0.bias"])
    expected = F.cross_entropy((torch.from_numpy(x) @ w + b).permute(0, 2, 1), torch.from_numpy(y), weight=CLASS_WEIGHTS)
    np.testing.assert_allclose(TrainDriver(seq).run({"x": x, "y": y})["loss"], expected.item(), rtol=1e-12)


@pytest.mark.parametrize("pos_weight, torch_weight", [("3", [3.0]), ("(3, 0.5)", [3.0, 0.5])])
def test_pos_weight_is_pytorchs(workdir, pos_weight, torch_weight):
    y = (RNG.random((7, 2)) < 0.3).astype(np.float64)
    y[0] = [0.25, 0.75]  # a probability target too
    one_step(workdir, f"binary_cross_entropy(z, y, pos_weight = {pos_weight})", "f64[B, 2]", {"x": X, "y": y},
             lambda z: F.binary_cross_entropy_with_logits(z, torch.from_numpy(y),
                                                          pos_weight=torch.tensor(torch_weight, dtype=torch.float64)),
             units=2)


def test_sample_weights_scale_each_example_over_the_batch_size(workdir):
    """PyTorch's `(loss(reduction="none") * w).mean()`, with class weights too (their product)."""
    sw = torch.from_numpy(EXAMPLE_WEIGHTS)
    one_step(workdir, "cross_entropy(z, y, sample_weight = w)", "i64[B]", {"x": X, "y": LABELS, "w": EXAMPLE_WEIGHTS},
             lambda z: (F.cross_entropy(z, torch.from_numpy(LABELS), reduction="none") * sw).mean(),
             extra="target w: f64[B]")
    labels = torch.from_numpy(LABELS)
    one_step(workdir, "cross_entropy(z, y, weight = (1, 5, 0.5), sample_weight = w)", "i64[B]",
             {"x": X, "y": LABELS, "w": EXAMPLE_WEIGHTS},
             lambda z: (F.cross_entropy(z, labels, weight=CLASS_WEIGHTS, reduction="none") * sw).sum()
             / CLASS_WEIGHTS[labels].sum(), extra="target w: f64[B]")


def test_binary_and_mse_sample_weights(workdir):
    y = (RNG.random((7, 2)) < 0.5).astype(np.float64)
    sw = torch.from_numpy(EXAMPLE_WEIGHTS)[:, None]
    data = {"x": X, "y": y, "w": EXAMPLE_WEIGHTS}
    one_step(workdir, "binary_cross_entropy(z, y, pos_weight = 2, sample_weight = w)", "f64[B, 2]", data,
             lambda z: (F.binary_cross_entropy_with_logits(z, torch.from_numpy(y), reduction="none",
                                                           pos_weight=torch.tensor([2.0], dtype=torch.float64))
                        * sw).mean(), units=2, extra="target w: f64[B]")
    one_step(workdir, "mse(z, y, sample_weight = w)", "f64[B, 2]", data,
             lambda z: (F.mse_loss(z, torch.from_numpy(y), reduction="none") * sw).mean(), units=2,
             extra="target w: f64[B]")


def test_a_batch_of_zero_weight_classes_has_loss_zero(workdir):
    program = compile_text(workdir, LINEAR.format(shape="4", target="i64[B]", extra="", units=3,
                                                  loss="cross_entropy(z, y, weight = (0, 1, 1))"), dtype="float64")
    out = TrainDriver(program).run({"x": X[:2], "y": np.array([0, 0])})
    assert out["loss"] == 0.0


# ---- errors -------------------------------------------------------------------------------------------
def compile_error(workdir, loss: str, target: str = "i64[B]", extra: str = "", units: int = 3) -> str:
    with pytest.raises(DslcError) as e:
        compile_text(workdir, LINEAR.format(shape="4", target=target, extra=extra, units=units, loss=loss),
                     dtype="float64")
    return e.value.render() if hasattr(e.value, "render") else str(e.value)


@pytest.mark.parametrize("loss, message, hint", [
    ("cross_entropy(z, y, weight = (1, 5))", "`weight` of `cross_entropy` has 2 weights, but the logits have 3 classes",
     "weight = (1, 1, 1)"),
    ("cross_entropy(z, y, weight = (1, -5, 1))", "`weight` of `cross_entropy` must not be negative, got -5",
     "0 leaves it out"),
    ("cross_entropy(z, y, weight = 5)", "`weight` of `cross_entropy` needs one weight per class", "weight = (1, 1, 1)"),
    ("cross_entropy(z, y, weight = (0, 0, 0))", "every weight of `weight` of `cross_entropy` is 0",
     "one number per class"),
    ("cross_entropy(z, y, weight = (1, \"a\", 1))", "expects `weight` to hold numbers", "one per class"),
    ("binary_cross_entropy(z, y, pos_weight = (1, 2))", "`pos_weight` of `binary_cross_entropy` has 2 weights, but "
     "the logits have 3 columns", "one per column"),
    ("binary_cross_entropy(z, y, pos_weight = -1)", "must not be negative", "0 leaves it out"),
])
def test_wrong_class_weights(workdir, loss, message, hint):
    target = "f64[B, 3]" if loss.startswith("binary") else "i64[B]"
    text = compile_error(workdir, loss, target)
    assert message in text and hint in text, text


def test_sample_weights_of_the_wrong_shape(workdir):
    text = compile_error(workdir, "cross_entropy(z, y, sample_weight = w)", extra="target w: f64[B, 3]")
    assert "`sample_weight` `f64[B, 3]` does not match the loss's positions `[B]`" in text, text
    assert "declare it as `target w: f64[B]`" in text, text


@pytest.fixture
def weighted_program(workdir):
    return compile_text(workdir, LINEAR.format(shape="4", target="i64[B]", extra="target w: f64[B]", units=3,
                                               loss="cross_entropy(z, y, sample_weight = w)"), dtype="float64")


@pytest.mark.parametrize("column, message, hint", [
    (None, "has no array `w`", "per-example weights (its `sample_weight`)"),
    (-EXAMPLE_WEIGHTS, "negative weight", "must be >= 0"),
    (EXAMPLE_WEIGHTS[:6], "disagree on dimension `B`", "number of samples"),
])
def test_wrong_sample_weight_data(weighted_program, tmp_path, column, message, hint):
    data = {"x": X, "y": LABELS} if column is None else {"x": X, "y": LABELS, "w": column}
    with pytest.raises(DataError) as e:
        weighted_program.train(data, epochs=1, batch_size=4, out_dir=tmp_path / "run", verbose=0)
    text = str(e.value) + str(getattr(e.value, "hint", ""))
    assert message in text and hint in text, text


# ---- Keras' class_weight and sample_weight ------------------------------------------------------------
@pytest.fixture
def keras(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    floatx = keras.config.floatx()
    keras.config.set_floatx("float64")
    yield keras
    keras.config.set_floatx(floatx)


KERAS_TARGETS = {  # labels -> (dslc's target and loss, Keras' loss, the class weights)
    "sparse": ("i64[B]", "cross_entropy(z, y, sample_weight = w)", "SparseCategoricalCrossentropy",
               {1: 5.0, 2: 0.25}),  # class 0 of three left at 1
    "one-hot": ("f64[B, 3]", "cross_entropy(z, y, sample_weight = w)", "CategoricalCrossentropy", {0: 3.0, 2: 0.5}),
    "binary": ("f64[B, 1]", "binary_cross_entropy(z, y, sample_weight = w)", "BinaryCrossentropy", {0: 0.5, 1: 4.0}),
}


@pytest.mark.parametrize("labels", list(KERAS_TARGETS))
@pytest.mark.parametrize("given", ["class_weight", "sample_weight", "neither"])
def test_keras_class_weight_and_sample_weight(workdir, tmp_path, keras, labels, given):
    """`Program.train(class_weight=)` or `(sample_weight=)` and Keras' `train_on_batch` with the same: the
    same loss and the same weights after one SGD step, for sparse labels, one-hot rows and 0/1 targets
    (Keras 3 refuses both at once; dslc multiplies them, as Keras 2 did). To 1e-6: Keras 3 on torch
    computes the step in float32 somewhere even with `floatx` float64 (its unweighted step, `neither`, is
    as far off)."""
    from dslc.runtime.checkpoint import load_checkpoint

    target, loss, keras_loss_name, class_weight = KERAS_TARGETS[labels]
    y = {"sparse": LABELS, "one-hot": np.eye(3)[LABELS], "binary": (LABELS == 1).astype(np.float64)[:, None]}[labels]
    units = y.shape[1] if labels != "sparse" else 3
    program = compile_text(workdir, LINEAR.format(shape="4", target=target, extra="target w: f64[B]", units=units,
                                                  loss=loss), dtype="float64")
    init = program.initial_values()
    weights = {"class_weight": class_weight, "sample_weight": EXAMPLE_WEIGHTS, "neither": None}[given]
    weights = {given: weights} if weights is not None else {}
    data = {"x": X, "y": y} if weights else {"x": X, "y": y, "w": np.ones(len(X))}
    history = program.train(data, epochs=1, batch_size=len(X), lr=1.0, verbose=0, out_dir=tmp_path / "run", **weights)
    trained = load_checkpoint(tmp_path / "run", program.manifest).params

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units)])
    model.layers[0].set_weights([init["linear_0.weight"], init["linear_0.bias"]])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0),
                  loss=getattr(keras.losses, keras_loss_name)(from_logits=True))
    keras_loss = model.train_on_batch(X, y, **weights)
    kernel, bias = model.layers[0].get_weights()
    np.testing.assert_allclose(trained["linear_0.weight"], kernel, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(trained["linear_0.bias"], bias, rtol=1e-6, atol=1e-6)
    assert history.history["loss"][0] == pytest.approx(float(keras_loss), rel=1e-6)


def test_class_weight_needs_a_weight_input(workdir, tmp_path):
    program = compile_text(workdir, LINEAR.format(shape="4", target="i64[B]", extra="", units=3,
                                                  loss="cross_entropy(z, y)"), dtype="float64")
    with pytest.raises(DataError) as e:
        program.train({"x": X, "y": LABELS}, epochs=1, batch_size=4, out_dir=tmp_path / "run", verbose=0,
                      class_weight={0: 2.0})
    assert "has no per-example weights for `class_weight=`" in e.value.message
    assert "sample_weight = w" in e.value.hint and "weight = (w_0, w_1, ...)" in e.value.hint


@pytest.mark.parametrize("class_weight, sample_weight, message", [
    ({3: 1.0}, None, "names the class 3, but the labels `y` have classes 0 to 2"),
    ({1: -2.0}, None, "gives class 1 the weight -2.0"),
    ([1.0, 2.0, 3.0], None, "must be a dict from class to weight"),
    (None, EXAMPLE_WEIGHTS[:5], "`sample_weight=` must hold one number per example (7)"),
])
def test_wrong_keras_weights(weighted_program, tmp_path, class_weight, sample_weight, message):
    with pytest.raises(DataError) as e:
        weighted_program.train({"x": X, "y": LABELS}, epochs=1, batch_size=4, out_dir=tmp_path / "run", verbose=0,
                               class_weight=class_weight, sample_weight=sample_weight)
    assert message in e.value.message, e.value.message


def test_class_weight_keeps_validation_unweighted(weighted_program, tmp_path):
    """Validation data without the weight column gets weights of 1, as Keras weights validation only by
    the weights it is given: val_loss is the plain cross-entropy."""
    history = weighted_program.train({"x": X, "y": LABELS}, {"x": X, "y": LABELS}, epochs=1, batch_size=7,
                                     lr=0.0, out_dir=tmp_path / "run", verbose=0, class_weight={1: 9.0})
    init = weighted_program.initial_values()
    z = torch.from_numpy(X) @ torch.tensor(init["linear_0.weight"]) + torch.tensor(init["linear_0.bias"])
    assert history.history["val_loss"][0] == pytest.approx(F.cross_entropy(z, torch.from_numpy(LABELS)).item(),
                                                           rel=1e-12)


# ---- the command line ---------------------------------------------------------------------------------
CLI_MODEL = """model m(cw = (1, 5, 1)) {
    input  x: f32[B, 4]
    target y: i64[B]
    target w: f32[B]
    z = x |> dense(3)
    output z
    loss      cross_entropy(z, y, weight = cw, sample_weight = w)
    optimizer sgd(lr = 0.1)
}
"""


def test_the_command_line_trains_with_weights_and_says_what_is_wrong(tmp_path, monkeypatch, capsys):
    """`dslc train --data` feeds the weight column by name; `-D cw=1,5,2` gives the class weights; a negative
    weight in the data exits 3 and a class-weight count that is not the classes' exits 1, each with its
    place and a hint, no traceback."""
    from dslc import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.dl").write_text(CLI_MODEL)
    np.savez("good.npz", x=X, y=LABELS, w=EXAMPLE_WEIGHTS)
    np.savez("negative.npz", x=X, y=LABELS, w=EXAMPLE_WEIGHTS * [1, 1, 1, -1, 1, 1, 1])
    train = ["train", "m.dl", "--epochs", "1", "--batch-size", "4"]
    assert cli.main(train + ["--data", "good.npz", "-D", "cw=1,5,2", "-o", "good"]) == 0
    capsys.readouterr()
    assert cli.main(train + ["--data", "negative.npz", "-o", "negative"]) == 3
    err = capsys.readouterr().err
    assert "error: negative weight" in err and "at index 3" in err and "hint:" in err and "Traceback" not in err
    assert cli.main(train + ["--data", "good.npz", "-D", "cw=1,5", "-o", "short"]) == 1
    err = capsys.readouterr().err
    assert "m.dl:7:35: error: `weight` of `cross_entropy` has 2 weights, but the logits have 3 classes" in err
    assert "^^^^" in err and "hint: give one number per class" in err and "Traceback" not in err


def test_the_command_line_class_weight(tmp_path, monkeypatch, capsys):
    """`dslc train --class-weight 1=5,2=0.25` is `Program.train(class_weight=...)`: the same weights after
    training; a class the labels lack exits 3 naming the flag, a malformed value exits 2."""
    from dslc import cli
    from dslc.runtime.checkpoint import load_checkpoint

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.dl").write_text(CLI_MODEL)
    np.savez("data.npz", x=X, y=LABELS)
    train = ["train", "m.dl", "--data", "data.npz", "--epochs", "2", "--batch-size", "4"]
    assert cli.main(train + ["--class-weight", "1=5,2=0.25", "-o", "cli"]) == 0
    program = compile_text(tmp_path, CLI_MODEL, name="same.dl")
    program.train("data.npz", epochs=2, batch_size=4, out_dir=tmp_path / "python", verbose=0,
                  class_weight={1: 5, 2: 0.25})
    from_cli, from_python = (load_checkpoint(tmp_path / run, program.manifest).params for run in ("cli", "python"))
    for name, value in from_python.items():
        np.testing.assert_array_equal(from_cli[name], value)
    capsys.readouterr()
    assert cli.main(train + ["--class-weight", "3=2", "-o", "three"]) == 3
    assert "error: `--class-weight` names the class 3, but the labels `y` have classes 0 to 2" in capsys.readouterr().err
    assert cli.main(train + ["--class-weight", "1:5", "-o", "colon"]) == 2
    assert "expected CLASS=WEIGHT pairs separated by commas, such as `0=1,1=5`, got `1:5`" in capsys.readouterr().err


def test_a_list_of_weights_gets_the_tuple_hint(workdir):
    text = compile_error(workdir, "cross_entropy(z, y, weight = [1, 5, 1])")
    assert "unexpected `[`" in text and "hint: numbers given together are a tuple, in parentheses: " \
        "`weight = (1, 5, 1)`" in text, text
