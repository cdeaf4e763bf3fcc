"""The Python API as a Keras user meets it (`dslc.keras_calls`, `dslc.program`): Keras' forms of the data
(`train(x, y)`, `(x, y)` tuples, `x=`/`y=`), its defaults (`epochs=1`, `batch_size=32`, `verbose="auto"`),
weights kept by the program after `train` (`predict(x)`, `evaluate(x, y)`, `export(path)`, `load_weights`,
`resume=True`), `history.history`, callbacks (`self.model.stop_training`), and the errors of Keras habits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import compile_text

from dslc.diagnostics import DataError

ROOT = Path(__file__).resolve().parents[1]

CLASSIFIER = """
model clf {
    input x: f32[B, 4]
    target y: i64[B]
    logits = x |> dense(8) |> tanh |> dense(3)
    output probs = softmax(logits)
    loss cross_entropy(logits, y)
    optimizer sgd(lr = 0.1)
    metric accuracy(logits, y)
}
"""

WEIGHTED = CLASSIFIER.replace("target y: i64[B]", "target y: i64[B]\n    target w: f32[B]").replace(
    "loss cross_entropy(logits, y)", "loss cross_entropy(logits, y, sample_weight = w)")

TWO_INPUTS = """
model two {
    input a: f32[B, 2]
    input b: f32[B, 3]
    target y: f32[B, 1]
    h = concat(a, b, axis = 1) |> dense(1)
    output h
    loss mse(h, y)
    optimizer sgd(lr = 0.1)
}
"""


def data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1)


@pytest.fixture
def clf(tmp_path):
    return compile_text(tmp_path, CLASSIFIER)


def losses(history):
    return history.history["loss"]


def test_keras_forms_of_the_data_train_as_the_dict(clf, tmp_path):
    """`fit(x, y)`, `fit(x=x, y=y)`, `fit((x, y))` and `validation_data=(x, y)`-like `val=` were refused (a
    tuple or a bare array was "not `tuple`"/"not `ndarray`"); each now trains as the dict of the same arrays."""
    (x, y), (xv, yv) = data(40), data(20, seed=1)
    runs = iter(range(100))

    def train(*args, **kwargs):
        return clf.train(*args, epochs=2, batch_size=8, verbose=0, out_dir=tmp_path / f"r{next(runs)}", **kwargs)

    want = train({"x": x, "y": y}, {"x": xv, "y": yv})
    assert set(want.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    for got in (train((x, y), (xv, yv)), train(x, y, val=(xv, yv)), train(x=x, y=y, val={"x": xv, "y": yv}),
                train(x.astype(np.float64), y.astype(np.int32), val=(xv.tolist(), yv.tolist()))):
        assert got.history == {k: v for k, v in want.history.items()}  # float64/int32/lists: converted silently
    assert losses(train(x, y, val_split=0.25)) == losses(train((x, y), val_split=0.25))


def test_train_defaults_to_one_epoch_of_batches_of_32_as_keras(clf, tmp_path):
    """`train` without `epochs`/`batch_size` was a TypeError (both required)."""
    x, y = data(70)
    history = clf.train(x, y, out_dir=tmp_path / "run", verbose="auto")
    assert [r["steps"] for r in history] == [3]  # ceil(70 / 32)


def test_the_program_keeps_the_weights_of_its_last_train(clf, tmp_path):
    """`predict(x)`, `evaluate(x, y)` and `export(path)` after `train` needed `weights=` (a Keras model holds
    its weights); `evaluate(x, y)` was "got multiple values for argument 'weights'"."""
    (x, y), (xt, yt) = data(40), data(16, seed=2)
    clf.train(x, y, epochs=2, batch_size=8, verbose=0, out_dir=tmp_path / "run")
    probs = clf.predict(xt, weights=tmp_path / "run")["probs"]
    np.testing.assert_array_equal(clf.predict(xt, verbose=0)["probs"], probs)
    assert clf.evaluate(xt, yt, verbose=0) == clf.evaluate({"x": xt, "y": yt}, tmp_path / "run")
    assert clf.export(tmp_path / "m.onnx").read_bytes() == clf.trained_model(tmp_path / "run")
    fresh = compile_text(tmp_path, CLASSIFIER, "fresh.dl")
    with pytest.raises(DataError, match="needs the weights of a training run"):
        fresh.predict(xt)
    with pytest.raises(DataError) as e:
        fresh.save_weights(tmp_path / "w.npz")
    assert e.value.message == "model `clf` has no weights to save: it has not trained"
    clf.save_weights(tmp_path / "w.npz")  # Keras' save_weights/load_weights: a checkpoint file
    fresh.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(fresh.predict(xt)["probs"], probs)
    values = dict(np.load(tmp_path / "w.npz"))  # a loop's numpy.savez of the parameters, as the embedding examples
    np.savez(tmp_path / "plain.npz", **{k[len("param/"):]: v for k, v in values.items() if k.startswith("param/")})
    fresh.load_weights(tmp_path / "plain.npz")
    np.testing.assert_array_equal(fresh.predict(xt)["probs"], probs)
    fresh.save_weights(tmp_path / "again.npz")
    assert (tmp_path / "again.npz").read_bytes() == (tmp_path / "plain.npz").read_bytes()
    fresh.load_weights(tmp_path / "w.npz")
    with pytest.raises(DataError) as e:
        clf.save_weights(tmp_path / "w.weights.h5")
    assert e.value.message == f"the weights go to an `.npz` file (a dslc checkpoint), not `{tmp_path / 'w.weights.h5'}`"
    # Keras' `fit` called again continues: `resume=True` without `out_dir` continues the last run
    history = clf.train(x, y, epochs=3, batch_size=8, verbose=0, resume=True)
    assert history.out_dir == tmp_path / "run" and [r["epoch"] for r in history] == [1, 2, 3]
    with pytest.raises(DataError) as e:
        fresh.train(x, y, epochs=3, verbose=0, resume=True)
    assert e.value.message == ("`resume=True` continues a run, but this program has trained none (its weights were "
                               f"loaded from `{tmp_path / 'w.npz'}`)")
    assert e.value.hint == f"pass `resume=\"{tmp_path / 'w.npz'}\"` to start a run from that state"
    history = fresh.train(x, y, epochs=1, batch_size=8, verbose=0, resume=tmp_path / "w.npz")
    assert history[-1]["steps"] == 2 * 5 + 5  # the saved state (2 epochs of 5 steps)'s optimizer step, continued


def test_history_history_holds_the_curves_only(clf, tmp_path):
    """`history.history` held `steps`, `time` and `samples_per_s` beside the loss: `pandas.DataFrame(
    history.history).plot()` drew the throughput (tens of thousands) over the curves."""
    x, y = data(40)
    history = clf.train(x, y, epochs=2, batch_size=8, verbose=0, out_dir=tmp_path / "run")
    assert list(history.history) == ["loss", "accuracy", "lr"]
    assert history.history["loss"] == [r["loss"] for r in history] and history[0]["steps"] == 5
    assert history.epoch == [1, 2]  # Keras' `History.epoch`, dslc's numbers


@pytest.mark.parametrize("kwargs, message, hint", [
    ({"epoch": 2}, "`program.train` has no argument `epoch`", "did you mean `epochs`?"),
    ({"validation_data": ()}, "`program.train` has no argument `validation_data`",
     "`validation_data=` is Keras' name: dslc's `train` takes `val=` (a tuple `(x_val, y_val)`, a dict of arrays or "
     "a path)"),
    ({"validation_split": 0.1}, "`program.train` has no argument `validation_split`",
     "`validation_split=` is Keras' name: dslc's is `val_split=` (a fraction held out at random by `seed`, where "
     "Keras holds out the last rows)"),
    ({"initial_epoch": 2}, "`program.train` has no argument `initial_epoch`",
     "dslc continues a run from its checkpoint: pass the run's `out_dir=` and `resume=True`; `epochs` is the "
     "total, as in Keras"),
    ({"shuffle": False}, "`program.train` has no argument `shuffle`",
     "dslc shuffles the training data every epoch, in an order given by `seed=`; drop `shuffle=`"),
    ({"learning_rate": 0.1}, "`program.train` has no argument `learning_rate`", "dslc's name is `lr=`"),
    ({"callbacks": object()}, "`callbacks` must be a list of callbacks, got `object`",
     "as Keras': `callbacks=[MyCallback()]`"),
])
def test_keras_keywords_name_dslcs_way(clf, tmp_path, kwargs, message, hint):
    """Each was Python's bare `TypeError: got an unexpected keyword argument` (no hint), or ignored."""
    x, y = data(8)
    with pytest.raises(DataError) as e:
        clf.train(x, y, verbose=0, out_dir=tmp_path / "run", **kwargs)
    assert (e.value.message, e.value.hint) == (message, hint)
    assert isinstance(e.value, TypeError)  # also what Python raises for an unexpected keyword
    assert not (tmp_path / "run").exists()


def test_other_verbs_check_their_keywords_too(clf, tmp_path):
    x, y = data(8)
    with pytest.raises(DataError) as e:
        clf.evaluate(x, y, return_dict=True)
    assert e.value.hint == "`evaluate` always returns a dict of the loss and metrics; drop `return_dict=`"
    with pytest.raises(DataError) as e:
        clf.predict(x, batchsize=4)
    assert (e.value.message, e.value.hint) == ("`program.predict` has no argument `batchsize`",
                                               "did you mean `batch_size`?")
    with pytest.raises(DataError) as e:
        clf.predict(x, y=y)
    assert e.value.hint == "`predict` reads the inputs only; `evaluate(x, y)` scores the model against targets"
    with pytest.raises(DataError) as e:
        clf.summary(print_fn=print)
    assert e.value.hint == ("`summary()` returns the table (a dict that prints as it): "
                            "`print_fn(str(program.summary()))`")


@pytest.mark.parametrize("call, message, hint", [
    (lambda p, x, y: p.train(x, epochs=1, verbose=0),
     "training data gives the model's inputs only, but it also reads target `y`",
     "pass inputs and targets: `train(x, y)`, as Keras' `fit(x, y)`"),
    (lambda p, x, y: p.train((x, y, y, y), epochs=1, verbose=0),
     "training data is a tuple of 4 members; dslc reads `(x, y)` or `(x, y, sample_weight)`, as Keras' "
     "`validation_data`", "list several inputs (or targets) in one member: `([x1, x2], y)` or a dict"),
    (lambda p, x, y: p.train((x, y, np.ones(len(y))), epochs=1, verbose=0),
     "training data gives per-example weights, but the model's loss reads none",
     "declare them, `target w: f32[B]`, and pass them to the loss: "
     "`cross_entropy(logits, label, sample_weight = w)`; or drop the third member"),
    (lambda p, x, y: p.predict(x[0]), "array `x` in input data has shape `[4]`, expected `[B, 4]`",
     "one example needs its batch axis too: `x[None]` (or `x.reshape(1, ...)`)"),
    (lambda p, x, y: p.train(x, y[:, None], epochs=1, verbose=0),
     "array `y` in training data has shape `[8, 1]`, expected `[B]`",
     "`y` holds [B]: drop the last axis, `y[..., 0]` (or `y.ravel()`)"),
    (lambda p, x, y: p.train(x, np.eye(3)[y], epochs=1, verbose=0),
     "array `y` in training data has shape `[8, 3]`, expected `[B]`",
     "these look like one-hot rows, but `y` holds class indices: pass `y.argmax(-1)`, or declare the target "
     "`f32[B, 3]` for probability targets"),
])
def test_data_mistakes_say_how_to_fix_them(clf, call, message, hint):
    x, y = data(8)
    with pytest.raises(DataError) as e:
        call(clf, x, y)
    assert (e.value.message, e.value.hint) == (message, hint)


def test_several_inputs_as_a_list_in_the_models_order_or_a_dict(tmp_path):
    program = compile_text(tmp_path, TWO_INPUTS)
    rng = np.random.default_rng(0)
    a, b, y = (rng.normal(size=(12, k)).astype(np.float32) for k in (2, 3, 1))
    want = program.train({"a": a, "b": b, "y": y}, epochs=2, batch_size=4, verbose=0, out_dir=tmp_path / "d")
    got = program.train([a, b], y, epochs=2, batch_size=4, verbose=0, out_dir=tmp_path / "l")
    assert losses(got) == losses(want)
    got = program.train({"a": a, "b": b}, y, epochs=2, batch_size=4, verbose=0, out_dir=tmp_path / "n")
    assert losses(got) == losses(want)  # Keras' `fit({"a": a, "b": b}, y)`
    np.testing.assert_array_equal(program.predict([a, b])["h"], program.predict({"a": a, "b": b})["h"])
    with pytest.raises(DataError) as e:
        program.train(a, y, verbose=0)
    assert e.value.message == "training data: the model reads 2 inputs (`a`, `b`), given one array"
    assert e.value.hint == 'pass a list of 2 arrays in that order, or a dict: {"a": ..., "b": ...}'


def test_sample_weights_as_the_third_member_of_a_tuple(tmp_path):
    program = compile_text(tmp_path, WEIGHTED)
    (x, y), (xv, yv) = data(16), data(8, seed=3)
    w = np.linspace(0, 2, 16).astype(np.float32)
    want = program.train({"x": x, "y": y, "w": w}, {"x": xv, "y": yv, "w": np.ones(8, np.float32)}, epochs=2,
                         batch_size=4, verbose=0, out_dir=tmp_path / "d")
    got = program.train((x, y, w), val=(xv, yv, np.ones(8)), epochs=2, batch_size=4, verbose=0,
                        out_dir=tmp_path / "t")
    assert got.history == want.history
    classes = {0: 0.5, 2: 3.0}  # Keras' class_weight with Keras' (x, y) and validation_data
    want = program.train({"x": x, "y": y}, {"x": xv, "y": yv}, class_weight=classes, epochs=2, batch_size=4,
                         verbose=0, out_dir=tmp_path / "cd")
    got = program.train(x, y, val=(xv, yv), class_weight=classes, epochs=2, batch_size=4, verbose=0,
                        out_dir=tmp_path / "ct")
    assert got.history == want.history


def test_callbacks_as_keras_writes_them(clf, tmp_path):
    """`self.model.stop_training = True` was an AttributeError from inside the loop, and a Keras hook such
    as `on_train_batch_end` was never called, silently."""
    x, y = data(16)

    class Stop:
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                self.model.stop_training = True

    stop = Stop()
    history = clf.train(x, y, epochs=5, batch_size=8, verbose=0, out_dir=tmp_path / "a", callbacks=[stop])
    assert len(history) == 2 and history.stopped_epoch == 2
    history = clf.train(x, y, epochs=3, batch_size=8, verbose=0, out_dir=tmp_path / "b", callbacks=[stop])
    assert len(history) == 2  # a new `self.model` each run: Keras resets `stop_training` in `fit` too

    class Batches:
        def on_train_batch_end(self, batch, logs=None):
            pass

    with pytest.raises(DataError) as e:
        clf.train(x, y, verbose=0, callbacks=[Batches()])
    assert e.value.message == ("callback `Batches` defines `on_train_batch_end`, which is Keras' and which dslc's "
                               "training loop does not call")
    assert e.value.hint == "dslc calls `on_step_end(step, logs)` (step counts from 1 within the epoch)"

    class Optimizer:
        def on_epoch_end(self, epoch, logs=None):
            return self.model.optimizer

    with pytest.raises(DataError) as e:
        clf.train(x, y, batch_size=8, verbose=0, out_dir=tmp_path / "c", callbacks=[Optimizer()])
    assert e.value.message.startswith("a callback's `self.model` has no `optimizer`: it is not a Keras model")


def test_a_keras_callback_subclass_runs_its_own_hooks_only(clf, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")  # as tests/test_loss_weights.py: Keras 3 on the torch wheel
    keras = pytest.importorskip("keras")
    x, y = data(16)
    seen = []

    class Log(keras.callbacks.Callback):  # Keras' base class defines every hook, `on_train_batch_end` included
        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, round(logs["loss"], 12)))

    history = clf.train(x, y, epochs=2, batch_size=8, verbose=0, out_dir=tmp_path / "run", callbacks=[Log()])
    assert seen == [(r["epoch"], round(r["loss"], 12)) for r in history]


def test_tensors_train_as_arrays_and_a_string_is_shown_as_one(clf, tmp_path):
    """A PyTorch tensor was "not `Tensor`"; `lr="0.1"` was "got 0.1", as if the number were refused."""
    torch = pytest.importorskip("torch")
    x, y = data(16)
    want = clf.train(x, y, epochs=1, batch_size=8, verbose=0, out_dir=tmp_path / "a")
    got = clf.train(torch.from_numpy(x), torch.from_numpy(y), epochs=1, batch_size=8, verbose=0, out_dir=tmp_path / "b")
    assert got.history == want.history
    with pytest.raises(DataError) as e:
        clf.train(x, y, lr="0.1", verbose=0, out_dir=tmp_path / "c")
    assert e.value.message == "the learning rate must be a finite non-negative number, got '0.1'"
    with pytest.raises(DataError) as e:
        clf.predict(torch.ones(2, 4, requires_grad=True))
    assert e.value.message.startswith("array `x` in input data is not a regular array (")


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    """README's tour shows the API as above; run it (from a scratch folder: it writes runs/py, digits.onnx, out/)."""
    root = ROOT
    readme = (root / "README.md").read_text(encoding="utf-8")
    tour = readme[readme.index("**From Python.**"):]
    code = tour[tour.index("```python\n") + len("```python\n"):tour.index("```\n", tour.index("```python"))]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(root / "examples")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 (the README's own code)
    assert scope["probs"].shape == (359, 10) and len(scope["history"].history["val_accuracy"]) == 10
    assert (tmp_path / "digits.onnx").exists() and (tmp_path / "out" / "digits.dslc.json").exists()
    accuracy = float((scope["probs"].argmax(1) == scope["y_test"]).mean())
    assert accuracy > 0.9 and scope["program"].evaluate(scope["x_test"], scope["y_test"])["accuracy"] == \
        pytest.approx(accuracy, abs=1e-6)


def test_keras_and_pytorch_method_names_say_dslcs(clf):
    """`program.fit(...)` was a bare AttributeError and PyTorch's `program.train()` "missing 1 required
    positional argument: 'train'"."""
    import copy

    with pytest.raises(AttributeError) as e:
        clf.fit
    assert str(e.value) == ("'Program' object has no attribute 'fit'; dslc's is `program.train(x, y, epochs=..., "
                            "batch_size=...)`")
    with pytest.raises(AttributeError, match=r"^'Program' object has no attribute 'nothing'$"):
        clf.nothing
    assert not hasattr(clf, "state_dict") and copy.deepcopy(clf).name == "clf"
    # a notebook cell's value: one line (the dataclass's repr held the graphs' bytes)
    assert repr(clf) == f"<dslc.Program clf ({clf.source_path}): 67 parameters, not trained>"  # 4*8+8 + 8*3+3
    with pytest.raises(DataError) as e:
        clf.train()
    assert e.value.message == "`program.train` needs the data"
    assert e.value.hint.startswith("`program.train(x, y, epochs=...)` (PyTorch's `model.train()` switches a mode")


def test_dslc_early_stopping_and_plateau_in_callbacks_as_keras_users_pass_them(clf, tmp_path):
    """`callbacks=[dslc.EarlyStopping(...)]` (where Keras' users put it) was `KeyError: None` from inside the
    loop: it ran as a user callback, its monitor never resolved."""
    import dslc

    x, y = data(16)

    def run(name, **kwargs):
        return clf.train(x, y, epochs=4, batch_size=8, verbose=0, out_dir=tmp_path / name, **kwargs)

    stopping = {"monitor": "loss", "patience": 1, "min_delta": 10.0}  # no epoch improves by 10
    plateau = {"monitor": "loss", "patience": 1, "min_delta": 10.0, "factor": 0.5}
    want = run("a", early_stopping=stopping)
    got = run("b", callbacks=[dslc.EarlyStopping(**stopping)])
    assert got.history == want.history and got.stopped_epoch == want.stopped_epoch == 2
    want = run("c", reduce_lr_on_plateau=plateau)
    got = run("d", callbacks=[dslc.ReduceLROnPlateau(**plateau)])
    assert got.history == want.history and got.history["lr"] == [0.1, 0.1, 0.05, 0.025]
    with pytest.raises(DataError) as e:
        run("e", callbacks=[dslc.EarlyStopping()], early_stopping="patience=2")
    assert (e.value.message, e.value.hint) == ("`dslc.EarlyStopping` is given twice",
                                               "pass one, in `callbacks` or as `early_stopping=`")


def test_keras_built_in_callbacks_name_dslcs_counterpart(clf, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    x, y = data(16)
    with pytest.raises(DataError) as e:
        clf.train(x, y, batch_size=8, verbose=0, out_dir=tmp_path / "run",
                  callbacks=[keras.callbacks.EarlyStopping(patience=2)])
    assert e.value.message == "`keras.callbacks.EarlyStopping` drives a Keras model, which a dslc program is not"
    assert e.value.hint.startswith("pass `dslc.EarlyStopping(monitor=..., patience=...)` in `callbacks=`")
    seen = []
    lambda_callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch))
    clf.train(x, y, epochs=2, batch_size=8, verbose=0, out_dir=tmp_path / "run", callbacks=[lambda_callback])
    assert seen == [1, 2]


def test_keras_compile_arguments_to_dslc_compile_say_where_dslc_has_them(tmp_path):
    """`dslc.compile(path, metrics=["accuracy"])` said the value "must be a number, `True`/`False` or a
    string", and `optimizer="adam"` that the model has no such hyper-parameter."""
    import dslc

    (tmp_path / "m.dl").write_text(CLASSIFIER)
    with pytest.raises(DataError) as e:
        dslc.compile(tmp_path / "m.dl", metrics=["accuracy"])
    assert e.value.message == ("`metrics=` is an argument of Keras' `model.compile`; dslc reads it from the model "
                               "file, and takes keyword arguments as the model's hyper-parameters")
    assert e.value.hint == ("the metrics are declared in the model: `metric accuracy(logits, label)`, one line each; "
                            "a hyper-parameter named `metrics` goes in `defines={\"metrics\": ...}`")
    with pytest.raises(DataError, match="`optimizer=` is an argument of Keras' `model.compile`"):
        dslc.compile(tmp_path / "m.dl", optimizer="adam")


def test_a_model_without_targets_trains_on_x_alone(tmp_path):
    """`train(x, x)`, Keras' autoencoder call, made one array of both (shape `[2, n, 64]`) and said the shape
    was wrong."""
    import dslc

    program = dslc.compile(ROOT / "models" / "autoencoder.dl")
    x = np.random.default_rng(0).uniform(size=(16, 64)).astype(np.float32)
    want = program.train({"image": x}, epochs=1, batch_size=8, verbose=0, out_dir=tmp_path / "a")
    assert program.train(x, epochs=1, batch_size=8, verbose=0, out_dir=tmp_path / "b").history == want.history
    with pytest.raises(DataError) as e:
        program.train(x, x, verbose=0)
    assert e.value.message == "training data gives targets, but the model reads none (its inputs: input `image`)"
    assert e.value.hint == ("its loss reads its inputs alone: `train(x)`; validation data goes in `val=`: "
                            "`train(x, val=x_val)`")


def test_predictions_used_as_keras_single_array_say_how_to_take_it(clf, tmp_path):
    """`program.predict(x).argmax(1)` was "'dict' object has no attribute 'argmax'", `np.argmax(y, 1)` numpy's
    "axis 1 is out of bounds for array of dimension 0"."""
    x, y = data(8)
    clf.train(x, y, batch_size=4, verbose=0, out_dir=tmp_path / "run")
    outputs = clf.predict(x)
    how = '`predict` returns the outputs by name: take the array with `["probs"]`'
    assert isinstance(outputs, dict) and list(outputs) == ["probs"] and outputs["probs"].shape == (8, 3)
    with pytest.raises(AttributeError) as e:
        outputs.argmax(1)
    assert str(e.value) == f"'Outputs' (a dict) has no attribute 'argmax'; {how}"
    with pytest.raises(TypeError) as e:
        np.argmax(outputs, axis=1)
    assert str(e.value) == f"the outputs are a dict, not an array; {how}"
    with pytest.raises(KeyError, match=r"0: `predict` returns"):
        outputs[0]
    assert not hasattr(outputs, "no_such_thing")


def test_a_second_train_says_it_does_not_continue_as_keras_fit_would(clf, tmp_path):
    """A second `train(x, y)` restarted from the initial weights without a word (Keras' `fit` continues)."""
    import warnings

    x, y = data(16)
    first = clf.train(x, y, epochs=1, batch_size=8, verbose=0)
    with pytest.warns(UserWarning) as caught:
        clf.train(x, y, epochs=1, batch_size=8, verbose=0)
    assert str(caught[0].message) == (
        f"this run starts from the model's initial weights, not from those the program holds (`{first.out_dir}`), "
        "which Keras' `fit` would continue from; pass `resume=True` (`epochs` the new total) to continue that run, "
        f"or `init_from=\"{first.out_dir}\"` to start a new run from them")
    assert caught[0].filename == __file__  # at the user's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a call refused for its arguments says only why
        with pytest.raises(DataError, match="the learning rate must be"):
            clf.train(x, y, epochs=1, batch_size=8, verbose=0, lr=-1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none for a run folder of its own, a resumed run, or one started from weights
        clf.train(x, y, epochs=1, batch_size=8, verbose=0, out_dir=tmp_path / "new")
        clf.train(x, y, epochs=2, batch_size=8, verbose=0, resume=True)
        clf.train(x, y, epochs=1, batch_size=8, verbose=0, init_from=first.out_dir)
