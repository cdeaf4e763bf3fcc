"""The Python API's verbs called as Keras's `fit`, `evaluate` and `predict` are: the data as arrays
(`train(x, y)`, `(x, y)` and `(x, y, sample_weight)` tuples, `x=`/`y=`), and the Keras keywords and
callback methods dslc spells otherwise or does without, refused with dslc's way (`ArgumentError`).

How arrays map onto the model's names, as Keras maps them onto a model's inputs and outputs:
- `x` fills the model's `input`s, `y` its `target`s, the third member of a tuple the target the loss
  reads as its `sample_weight`; each is one array when the model has one such name, else a list (in the
  model's declaration order) or a dict of arrays;
- `train(x, y)` and `evaluate(x, y)` are `train((x, y))` and `evaluate((x, y))`: an array (or list) in
  the second place after an array or a dict of inputs is the targets, as in Keras, not validation data
  or weights (a path, dict or tuple there still is `val` for `train`, `weights` for `evaluate`).
Dicts of arrays and paths pass through unchanged; `dslc.runtime.data.load_data` checks everything.

Also Keras' callbacks (`self.model.stop_training`, `dslc.EarlyStopping` in `callbacks=`, its built-in
ones refused), `predict`'s `Outputs`, and the hints for Keras' and PyTorch's model methods (`fit`,
`state_dict`) and for `model.compile`'s keywords given to `dslc.compile`.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping

import numpy as np

from dslc.diagnostics import DataError, suggest


class ArgumentError(DataError, TypeError):
    """A call the API does not take (a keyword, a callback, a Keras habit): a `DataError` (with `.hint`),
    and a `TypeError` as Python's own for an unexpected keyword."""


# Keras's keywords of fit/evaluate/predict/summary -> how dslc does it
KERAS_KEYWORDS = {
    "validation_data": "`validation_data=` is Keras' name: dslc's `train` takes `val=` (a tuple `(x_val, y_val)`, "
                       "a dict of arrays or a path)",
    "validation_split": "`validation_split=` is Keras' name: dslc's is `val_split=` (a fraction held out at "
                        "random by `seed`, where Keras holds out the last rows)",
    "initial_epoch": "dslc continues a run from its checkpoint: pass the run's `out_dir=` and `resume=True`; "
                     "`epochs` is the total, as in Keras",
    "shuffle": "dslc shuffles the training data every epoch, in an order given by `seed=`; drop `shuffle=`",
    "steps_per_epoch": "an epoch is one pass over the training data; pass fewer rows or fewer `epochs`",
    "validation_steps": "validation runs over all the validation data; pass fewer rows",
    "validation_batch_size": "validation runs in batches of `batch_size`; drop `validation_batch_size=`",
    "validation_freq": "dslc validates after every epoch; drop `validation_freq=`",
    "steps": "dslc runs over all the rows given; pass fewer rows",
    "return_dict": "`evaluate` always returns a dict of the loss and metrics; drop `return_dict=`",
    "learning_rate": "dslc's name is `lr=`",
    "use_multiprocessing": "dslc trains in several processes with `workers=N` (MPI); drop `use_multiprocessing=`",
    "max_queue_size": "dslc reads numpy arrays and files, not generators; drop `max_queue_size=`",
    "y": "`predict` reads the inputs only; `evaluate(x, y)` scores the model against targets",
    "print_fn": "`summary()` returns the table (a dict that prints as it): `print_fn(str(program.summary()))`",
    "line_length": "`summary()` sizes its columns to their contents; drop `line_length=`",
    "expand_nested": "`summary()` lists every layer; drop `expand_nested=`",
    "show_trainable": "`summary()` counts frozen parameters (`dslc.compile(..., freeze=...)`); drop `show_trainable=`",
}

# Keras's and PyTorch's methods of a model -> dslc's `Program` way
KERAS_METHODS = {
    "fit": "dslc's is `program.train(x, y, epochs=..., batch_size=...)`",
    "compile": "the loss, optimizer and metrics are declared in the `.dl` file; `dslc.compile(path)` compiled it",
    "save": "`program.save_weights(\"w.npz\")` saves the weights, `program.export(\"model.onnx\")` the inference "
            "model, `program.build(\"out/\")` the graphs and the manifest",
    "get_weights": "the weights are in the run's checkpoint: `dslc.runtime.state_files.load_params("
                   "program.default_weights, program.manifest)` gives them by name",
    "set_weights": "`program.load_weights(...)` takes a run folder, a checkpoint or a dict of arrays by name",
    "count_params": "dslc's is `program.num_parameters`",
    "train_on_batch": "`program.train((x, y), epochs=1, batch_size=len(x))` trains one batch",
    "test_on_batch": "`program.evaluate(x, y)`",
    "predict_on_batch": "`program.predict(x)`",
    "state_dict": "`program.save_weights(\"w.npz\")`, or the run's `checkpoint.npz`",
    "load_state_dict": "`program.load_weights(...)`",
    "parameters": "`program.num_parameters` counts them; the checkpoint holds them by name",
    "eval": "no mode to switch: `predict` and `evaluate` run the graphs without dropout, `train` the one with it",
    "to": "the device is an argument of each verb: `device=\"cuda\"`",
}

# Keras's `model.compile` keywords, which a user may pass to `dslc.compile` -> where dslc has them
KERAS_COMPILE = {
    "optimizer": "the optimizer is declared in the model: `optimizer adam(lr = 0.001)`",
    "loss": "the loss is declared in the model: `loss cross_entropy(logits, label)` (it takes logits)",
    "metrics": "the metrics are declared in the model: `metric accuracy(logits, label)`, one line each",
    "loss_weights": "several losses are weighed in the model's loss: `loss a + 0.5 * b`",
    "weighted_metrics": "metrics stay unweighted; `class_weight=`/`sample_weight=` of `train` weigh the loss",
    "run_eagerly": "the model runs as ONNX graphs, never eagerly; drop `run_eagerly=`",
    "jit_compile": "the graphs are compiled already (ONNX Runtime optimizes them); drop `jit_compile=`",
    "steps_per_execution": "each step is one run of the training graph; drop `steps_per_execution=`",
}


def check_keras_compile(values: Mapping) -> None:
    """`ArgumentError` for a keyword of Keras' `model.compile` given to `dslc.compile` as anything but a
    number (a model's hyper-parameter of that name goes in `defines=`)."""
    import numbers

    for name, value in values.items():
        if name in KERAS_COMPILE and (isinstance(value, bool) or not isinstance(value, numbers.Number)):
            raise ArgumentError(f"`{name}=` is an argument of Keras' `model.compile`; dslc reads it from the model "
                                "file, and takes keyword arguments as the model's hyper-parameters",
                                hint=f"{KERAS_COMPILE[name]}; a hyper-parameter named `{name}` goes in "
                                     f"`defines={{\"{name}\": ...}}`")


# Keras's callback methods dslc's loop does not call -> what it calls instead
KERAS_CALLBACK_METHODS = {
    "on_train_batch_end": "`on_step_end(step, logs)` (step counts from 1 within the epoch)",
    "on_batch_end": "`on_step_end(step, logs)` (step counts from 1 within the epoch)",
    "on_epoch_begin": "`on_epoch_end(epoch, logs)` of the epoch before, or `on_train_begin(info)` for the first",
    "on_train_batch_begin": "`on_step_end(step, logs)` of the step before",
    "on_batch_begin": "`on_step_end(step, logs)` of the step before",
    "on_test_begin": "`on_epoch_end(epoch, logs)`, whose logs hold the `val_` values",
    "on_test_end": "`on_epoch_end(epoch, logs)`, whose logs hold the `val_` values",
    "on_test_batch_end": "`on_epoch_end(epoch, logs)`, whose logs hold the `val_` values",
    "on_predict_begin": "nothing: `predict` takes no callbacks",
    "on_predict_end": "nothing: `predict` takes no callbacks",
    "on_predict_batch_end": "nothing: `predict` takes no callbacks",
}


def keras_arguments(method):
    """`method` (`Program.train`, `evaluate`, `predict`, `summary`) also called as Keras's: `x=`, and for
    `train` and `evaluate` `y=` and two arrays in the first places, become one `(x, y)`; a keyword it does
    not take is an `ArgumentError` naming the close one or dslc's way of doing what the Keras keyword does;
    a call without the data one that says what to pass."""
    parameters = inspect.signature(method).parameters
    verb = f"`program.{method.__name__}`"

    first = next(name for name in parameters if name != "self")
    required = parameters[first].default is inspect.Parameter.empty

    takes_targets = method.__name__ in ("train", "evaluate")

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        args = _keras_xy(verb, args, kwargs, takes_targets)
        if required and not args and first not in kwargs:
            hint = {"train": "`program.train(x, y, epochs=...)` (PyTorch's `model.train()` switches a mode, which "
                             "dslc has not: dropout is on in the training graph only)",
                    "evaluate": "`program.evaluate(x, y)`"}.get(method.__name__, f"`program.{method.__name__}(x)`")
            raise ArgumentError(f"{verb} needs the data", hint=hint)
        for name in kwargs:
            if name not in parameters:
                known = [p for p in parameters if p != "self"]
                raise ArgumentError(f"{verb} has no argument `{name}`",
                                    hint=KERAS_KEYWORDS.get(name) or suggest(name, known) or
                                    f"its arguments: {', '.join(f'`{p}`' for p in known)}")
        return method(self, *args, **kwargs)
    return call


def _keras_xy(verb: str, args: tuple, kwargs: dict, takes_targets: bool) -> tuple:
    """`args` with Keras's `x=`, `y=` (taken out of `kwargs`) and positional `(x, y)` made one tuple (for a
    verb that `takes_targets`)."""
    if "x" in kwargs:
        if args:
            raise ArgumentError(f"{verb} got the data twice: in the first place and as `x=`")
        args = (kwargs.pop("x"),)
    if not takes_targets:
        return args
    if "y" in kwargs:
        if not args:
            raise ArgumentError(f"{verb} got `y=` without `x`", hint="pass `(x, y)` or `x, y`")
        return ((args[0], kwargs.pop("y")), *args[1:])
    if len(args) >= 2 and (is_bare(args[0]) or isinstance(args[0], Mapping)) and is_bare(args[1]):
        return ((args[0], args[1]), *args[2:])  # an array is no validation data nor weights: Keras' `y`
    return args


def is_bare(value) -> bool:
    """An array (a nested list of numbers, or what numpy converts: a PyTorch tensor, a pandas frame) rather
    than named data: a path, a dict, an `(x, y)` tuple."""
    return isinstance(value, (np.ndarray, list)) or (hasattr(value, "__array__") and not isinstance(value, Mapping))


def named_arrays(source, specs: list[dict], what: str, keras_form: str = "`(x, y)`"):
    """`source` as a dict of arrays by name when it is Keras-shaped (an array, a list, an `(x, y[,
    sample_weight])` tuple), else itself (a path, a dict, ...: `load_data` reads those). `keras_form` is how
    the caller passes inputs and targets, for hints."""
    if not (is_bare(source) or isinstance(source, tuple)):
        return source
    inputs = [s for s in specs if s.get("role", "input") == "input"]
    targets = [s for s in specs if s.get("role") == "target" and "sample_weight" not in s]
    weights = [s for s in specs if "sample_weight" in s]
    labelled = any("role" in s for s in specs)  # the training and evaluation graphs' data, not `predict`'s
    if not isinstance(source, tuple) or not labelled:  # `x` alone
        if targets and len(specs) > 1:
            raise DataError(f"{what} gives the model's inputs only, but it also reads {_listing(targets, 'target')}",
                            hint=f"pass inputs and targets: {keras_form}")
        return _group(source, inputs, "input", what)
    if not 1 <= len(source) <= 3:
        raise DataError(f"{what} is a tuple of {len(source)} members; dslc reads `(x, y)` or `(x, y, sample_weight)`, "
                        "as Keras' `validation_data`",
                        hint="list several inputs (or targets) in one member: `([x1, x2], y)` or a dict")
    arrays = _group(source[0], inputs, "input", what)
    if len(source) >= 2:
        if not targets:
            raise DataError(f"{what} gives targets, but the model reads none (its inputs: "
                            f"{_listing(inputs, 'input')})",
                            hint="its loss reads its inputs alone: `train(x)`; validation data goes in `val=`: "
                                 "`train(x, val=x_val)`")
        arrays.update(_group(source[1], targets, "target", what))
    if len(source) == 3:
        if not weights:
            raise DataError(f"{what} gives per-example weights, but the model's loss reads none",
                            hint="declare them, `target w: f32[B]`, and pass them to the loss: "
                                 "`cross_entropy(logits, label, sample_weight = w)`; or drop the third member")
        arrays.update(_group(source[2], weights, "per-example weight", what))
    return arrays


def _group(value, specs: list[dict], kind: str, what: str) -> dict:
    """The arrays of one member (`x`, `y` or the weights) by the names of `specs`."""
    if isinstance(value, Mapping):
        return dict(value)
    if len(specs) == 1:
        return {specs[0]["name"]: value}
    if isinstance(value, (list, tuple)) and len(value) == len(specs):
        return {spec["name"]: array for spec, array in zip(specs, value)}
    names = ", ".join(f'"{s["name"]}": ...' for s in specs)
    raise DataError(f"{what}: the model reads {len(specs)} {kind}s ({_listing(specs, kind)}), given "
                    + (f"a list of {len(value)}" if isinstance(value, (list, tuple)) else "one array"),
                    hint=f"pass a list of {len(specs)} arrays in that order, or a dict: {{{names}}}")


def _listing(specs: list[dict], kind: str) -> str:
    return ", ".join(f"`{s['name']}`" for s in specs) if len(specs) > 1 else f"{kind} `{specs[0]['name']}`"


KERAS_MODULES = ("keras", "tf_keras", "tensorflow")  # where Keras' own classes live

# Keras's built-in callbacks -> what dslc does instead (they drive a Keras model, which a Program is not)
KERAS_BUILTIN_CALLBACKS = {
    "EarlyStopping": "pass `dslc.EarlyStopping(monitor=..., patience=...)` in `callbacks=` (or as `early_stopping=`), "
                     "with `restore_best=True` for `restore_best_weights`",
    "ReduceLROnPlateau": "pass `dslc.ReduceLROnPlateau(factor=..., patience=...)` in `callbacks=` (or as "
                         "`reduce_lr_on_plateau=`)",
    "CSVLogger": "every run writes `RUN/metrics.csv`, with CSVLogger's columns",
    "ModelCheckpoint": "every epoch writes `RUN/checkpoint.npz`; early stopping or `restore_best=True` keeps the best "
                       "epoch's in `RUN/best.npz`",
    "LearningRateScheduler": "declare the schedule in the model: `optimizer adam(lr = 0.001, schedule = ...)`",
    "TerminateOnNaN": "dslc stops a run whose loss is not finite by itself",
    "History": "`train` returns the history",
    "ProgbarLogger": "`verbose=1` shows a progress bar",
    "TensorBoard": "dslc writes no TensorBoard logs: `RUN/history.jsonl` and `RUN/metrics.csv` hold the curves, "
                   "`dslc plot RUN` draws them",
    "BackupAndRestore": "every epoch writes a checkpoint, and `resume=True` continues from it",
}


def run_callbacks(callbacks, early_stopping, reduce_lr_on_plateau) -> tuple[list, object, object]:
    """(the user's callbacks, early stopping, the plateau's reduction): a `dslc.EarlyStopping` or
    `dslc.ReduceLROnPlateau` in `callbacks` goes where Keras' users put theirs, to its option (an
    `ArgumentError` when that is given too); Keras' own built-in callbacks are refused with dslc's way."""
    from dslc.runtime.callbacks import EarlyStopping
    from dslc.runtime.plateau import ReduceLROnPlateau

    if callbacks is None or not isinstance(callbacks, (list, tuple)):
        return callbacks, early_stopping, reduce_lr_on_plateau
    found = {EarlyStopping: early_stopping, ReduceLROnPlateau: reduce_lr_on_plateau}
    options = {EarlyStopping: "early_stopping", ReduceLROnPlateau: "reduce_lr_on_plateau"}
    for cb in callbacks:
        kind = next((k for k in found if isinstance(cb, k)), None)
        name = type(cb).__name__
        if kind is not None:
            if found[kind] is not None:
                raise ArgumentError(f"`dslc.{kind.__name__}` is given twice",
                                    hint=f"pass one, in `callbacks` or as `{options[kind]}=`")
            found[kind] = cb
        elif type(cb).__module__.startswith(KERAS_MODULES) and name in KERAS_BUILTIN_CALLBACKS:
            raise ArgumentError(f"`keras.callbacks.{name}` drives a Keras model, which a dslc program is not",
                                hint=KERAS_BUILTIN_CALLBACKS[name])
    own = [cb for cb in callbacks if not isinstance(cb, tuple(found))]
    return own, found[EarlyStopping], found[ReduceLROnPlateau]


def check_callbacks(callbacks, program) -> list:
    """`callbacks` for the loop, or an `ArgumentError` for a Keras callback method dslc's loop would never
    call (it would be silently skipped) and for a lone callback not in a list. A callback without a `model`
    gets Keras' `self.model` as a `KerasModel` of `program`, whose `stop_training = True` stops training."""
    if callbacks is None:
        return []
    if not isinstance(callbacks, (list, tuple)):
        raise ArgumentError(f"`callbacks` must be a list of callbacks, got `{type(callbacks).__name__}`",
                            hint="as Keras': `callbacks=[MyCallback()]`")
    for cb in callbacks:
        for name, instead in KERAS_CALLBACK_METHODS.items():
            if _written_by_user(cb, name):
                raise ArgumentError(f"callback `{type(cb).__name__}` defines `{name}`, which is Keras' and which "
                                    "dslc's training loop does not call", hint=f"dslc calls {instead}")
    return [cb if getattr(cb, "model", None) is not None and not isinstance(cb.model, KerasModel)
            else _Stoppable(cb, program) for cb in callbacks]  # a new `KerasModel` each run, as Keras resets it


class StartNote:
    """A callback that says `message` (with `say`, the reporter's `warn`) as training starts: after the
    arguments and data are checked, so that a call refused for them says only why."""

    def __init__(self, say, message: str):
        self.say, self.message = say, message

    def on_train_begin(self, info: dict) -> None:
        self.say(self.message)


HOOKS = ("on_train_begin", "on_step_end", "on_epoch_end", "on_train_end")


class KerasModel:
    """Keras' `self.model` in a callback: `stop_training` (set it to `True` to stop after the step or
    epoch, as in Keras) and `program`; other Keras model attributes are an `ArgumentError` saying so."""

    def __init__(self, program):
        self.program, self.stop_training = program, False

    def __getattr__(self, name: str):
        raise ArgumentError(f"a callback's `self.model` has no `{name}`: it is not a Keras model; it has "
                            "`stop_training` and `program` (the `dslc.Program`)",
                            hint="the epoch's loss, metrics and `lr` are in the `logs` of `on_epoch_end(epoch, logs)`")


class _Stoppable:
    """A user's callback with `self.model` set to a `KerasModel`: each of its hooks stops training when it
    returns `True` or sets `self.model.stop_training`."""

    def __init__(self, cb, program):
        self.callback = cb
        if callable(getattr(cb, "set_model", None)):  # a `keras.callbacks.Callback`: `model` is a property
            cb.set_model(KerasModel(program))
        else:
            cb.model = KerasModel(program)
        for name in HOOKS:
            method = getattr(cb, name, None)
            if callable(method):
                setattr(self, name, self._stopping(method))

    def _stopping(self, method):
        def hook(*args):
            return method(*args) is True or self.callback.model.stop_training is True
        return hook

    def __repr__(self) -> str:
        return repr(self.callback)


def _written_by_user(cb, name: str) -> bool:
    """Whether `cb` has method `name` of its own or from a class of the user's (`keras.callbacks.Callback`
    defines every hook as a no-op)."""
    if name in getattr(cb, "__dict__", {}):
        return True
    return any(name in cls.__dict__ and not cls.__module__.startswith(KERAS_MODULES)
               for cls in type(cb).__mro__)


class Outputs(dict):
    """What `predict` returns: the model's outputs by name, a dict also for one output (as Keras' models
    with named outputs). Used as Keras' single array (`.argmax(1)`, `np.argmax(y, 1)`, `y[0]`), it says
    how to take the array out, instead of numpy's or Python's words about a dict."""

    def _how(self) -> str:
        names = list(self)
        return (f"`predict` returns the outputs by name: take the array with `[\"{names[0]}\"]`" if len(names) == 1 else
                f"`predict` returns the outputs by name ({', '.join(f'`{n}`' for n in names)}): take one with "
                f"`[\"{names[0]}\"]`")

    def __getattr__(self, name: str):
        if name.startswith("_") or not hasattr(np.ndarray, name):
            raise AttributeError(f"'Outputs' object has no attribute {name!r}")
        raise AttributeError(f"'Outputs' (a dict) has no attribute {name!r}; {self._how()}")

    def __array__(self, dtype=None, copy=None):
        raise TypeError(f"the outputs are a dict, not an array; {self._how()}")

    def __missing__(self, key):
        if isinstance(key, (int, slice, tuple, np.integer)):
            raise KeyError(f"{key!r}: {self._how()}")
        raise KeyError(key)
