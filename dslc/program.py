"""A compiled model: the ONNX graphs and the manifest, plus the verbs users run on them.

    program = dslc.compile("mnist.dl", hidden=128)
    program.build("out/")                                    # the graphs + mnist.dslc.json
    history = program.train(x, y, val=(x_val, y_val), epochs=10, batch_size=128)   # as Keras' fit
    history = program.train("train.npz", val="val.npz", epochs=10, out_dir="runs/mnist")  # or named data
    outputs = program.predict(x_test)                        # dict of output arrays, the last train's weights
    program.predict("test.npz", weights="runs/mnist")        # or a run's
    program.export("mnist.onnx")                             # inference graph with trained weights
    for w in program.warnings: print(dslc.diagnostics.render(w))  # likely mistakes that still compile

How the verbs take Keras' forms of data and refuse its habits is `dslc.keras_calls`.

`warnings` lists `Diagnostic`s of severity "warning" in source order (a loss given probabilities
instead of logits, say); `dslc` prints them on stderr before each verb's output.

The heavy modules (onnx, onnxruntime) are imported by the verbs that need them, not by `import dslc`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dslc.keras_calls import keras_arguments


@dataclass
class Program:
    name: str
    manifest: dict  # the `<model>.dslc.json` contract, see README "Embedding the graphs"
    graphs: dict[str, bytes]  # serialized ModelProtos keyed like manifest["graphs"]: "infer", "train", "eval"
    ir_text: str = ""  # the IR as printed after the last pass (`--emit ir`)
    source_path: str = ""
    extras: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)  # `dslc.diagnostics.Diagnostic`s with severity "warning"
    defines: dict = field(default_factory=dict)  # the model parameters given (`-D hidden=256`), as text
    # what `weights=None` means for `predict`, `evaluate`, `export` and `trained_model`, as a Keras model
    # holds its weights: the `out_dir` of this program's last `train`, or the weights `load_weights` read
    default_weights: object = None

    def __repr__(self) -> str:
        """One line, as a Keras model's: the dataclass's own repr printed the graphs' bytes (1.5 MB for the
        digits model) as a notebook cell's value."""
        weights = ("no loss" if not self.trainable else "not trained" if self.default_weights is None else
                   f"weights {self.default_weights}" if isinstance(self.default_weights, Path) else "weights given")
        where = f" ({self.source_path})" if self.source_path else ""
        return f"<dslc.Program {self.name}{where}: {self.num_parameters:,} parameters, {weights}>"

    def __getattr__(self, name: str):
        """Only for a missing attribute: Keras' and PyTorch's model methods (`fit`, `save`, `state_dict`...)
        name dslc's way in the `AttributeError`."""
        from dslc.keras_calls import KERAS_METHODS

        raise AttributeError(f"'Program' object has no attribute {name!r}"
                             + (f"; {KERAS_METHODS[name]}" if name in KERAS_METHODS else ""))

    @property
    def num_parameters(self) -> int:
        """Number of trainable scalars (the sum of the parameter sizes; 0 without a training graph)."""
        from dslc.runtime.layout import train_keys

        params = {t["name"]: t for k in train_keys(self.manifest)
                  for group in ("params", "frozen") for t in self.manifest["graphs"][k].get(group, [])}
        return sum(math.prod(t["shape"]) for t in params.values())

    @property
    def trainable(self) -> bool:
        """Whether the model has a loss (and so training and evaluation graphs)."""
        from dslc.runtime.layout import train_keys

        return bool(train_keys(self.manifest))

    def header_span(self):
        """The span of `model <name>` in the source file, for diagnostics about the model as a whole;
        None when the source cannot be read or the header not found."""
        import re

        from dslc.source import NotUtf8, SourceFile

        try:
            source = SourceFile.read(self.source_path)
        except (OSError, NotUtf8):
            return None
        found = re.search(rf"^[ \t]*(model[ \t]+{re.escape(self.name)})\b", source.text, re.MULTILINE)
        return source.span(found.start(1), found.end(1)) if found else None

    @property
    def manifest_file(self) -> str:
        return f"{self.name}.dslc.json"

    def build(self, out_dir: str | os.PathLike = ".", durable: bool = True) -> list[Path]:
        """Write every graph under its manifest file name and `<model>.dslc.json`, all or none (a failure
        leaves the directory as it was); return the paths. `durable=False`: without fsync (a run folder's
        copy, which every `dslc train` of the run writes again; see `dslc/fsutil.py`)."""
        from dslc.fsutil import atomic_write_all, make_directory

        out = make_directory(out_dir)
        files = {out / g["file"]: _writer(self.graphs[key]) for key, g in self.manifest["graphs"].items()}
        files[out / self.manifest_file] = _writer((json.dumps(self.manifest, indent=2, allow_nan=False) + "\n").encode("utf-8"))
        return atomic_write_all(files, durable)

    def initial_values(self) -> dict[str, np.ndarray]:
        """The starting value of every parameter, buffer and optimizer-state tensor, by name: the outputs
        of the init graph (`<model>.init.onnx`); empty for a model without a loss."""
        from dslc.emit.weights import read_init_graph

        return read_init_graph(self.graphs["init"]) if "init" in self.graphs else {}

    def export_train_state(self, weights, out_dir: str | os.PathLike) -> list[Path]:
        """Write the graphs and the manifest to `out_dir` (as `build`) with an init graph holding the
        parameters, buffers and optimizer state of the checkpoint `weights` (a run directory or a
        checkpoint path) instead of the initial ones, so the run continues in any runtime. The init
        graph's metadata records `dslc.epoch`, `dslc.global_step` and `dslc.seed`, and the manifest's
        `train_state` the same (see `dslc.train_state`); a run trained with
        another learning rate (`--lr`) gets it as the manifest's `lr` default and `dslc.lr`, and a run whose
        `reduce_lr_on_plateau` had reduced the rate gets the reduced one (`with_lr_reduced`; in `dslc.lr` too
        when its objectives end at one rate), so a loop that feeds the documented defaults continues the
        same run, and `dslc train --resume STATE` says when its rate is not the one the run ended at."""
        from dslc.train_state import export_train_state

        return export_train_state(self, weights, out_dir)

    @keras_arguments
    def train(self, train, val=None, *, epochs: int = 1, batch_size: int = 32, seed: int = 0, device: str = "cpu",
              out_dir: str | os.PathLike | None = None, resume: bool | str | os.PathLike = False,
              lr: float | None = None, reporter=None, threads: int | None = None, verbose: int | str = "auto",
              callbacks=(),
              val_split: float | None = None, early_stopping=None, restore_best: bool | None = None, init_from=None,
              accumulate: int = 1, workers: int | None = None, comm=None, reduce_lr_on_plateau=None,
              class_weight=None, sample_weight=None):
        """Train into `out_dir` (None: a new temporary folder, `history.out_dir`); see
        `dslc.runtime.train.fit`. `train`/`val`: `.npz` paths, dicts of arrays or Keras' `(x, y)` and `(x, y,
        sample_weight)` tuples; `train(x, y, ...)` is Keras' `fit(x, y)` (see `dslc.keras_calls`).
        `epochs=1` and `batch_size=32` by default, as Keras'. Afterwards `predict`, `evaluate` and `export`
        use the run's weights when given none (`default_weights`). `resume=True` continues
        the run in `out_dir`; a path to a state file (an init graph `.onnx` or an `.npz`, one array per
        parameter/buffer/state name, e.g. written back by another runtime) starts the run from those values.
        `verbose` as Keras's (0 silent, 1 or `"auto"` a progress bar on a terminal, 2 a line per epoch); the loop's
        warnings are Python warnings. `callbacks`: objects with `on_epoch_end(epoch, logs)` /
        `on_step_end(step, logs)` (return True to stop), see `dslc.Callback`. Returns a
        `dslc.runtime.callbacks.History`. `reduce_lr_on_plateau`: a `dslc.ReduceLROnPlateau`, its text
        (`"factor=0.5,patience=2"`) or dict, merged with the model's `callback reduce_lr_on_plateau(...)`
        key by key, or `False` to train without it (see `dslc.runtime.plateau`). `class_weight` (`{class:
        weight}`) and `sample_weight` (one number per example) are Keras': they fill the input the loss
        reads as its `sample_weight` (see `dslc.runtime.class_weights`).

        `accumulate=K` computes each batch's gradient in K micro-batches; `workers=N` trains in N local
        MPI processes (`dslc.runtime.distributed`; callbacks, early stopping, a validation split and
        fine-tuning are options of one process), `comm` on the ranks of an MPI communicator the caller
        started. All three need a program compiled with `split=True` and give the single-process step."""
        from dslc.keras_calls import check_callbacks, run_callbacks
        from dslc.runtime.progress import python_reporter
        from dslc.runtime.train import fit

        callbacks, early_stopping, reduce_lr_on_plateau = run_callbacks(callbacks, early_stopping, reduce_lr_on_plateau)
        callbacks = check_callbacks(callbacks, self)
        train, val = self._named_data(train, val)
        if out_dir is None and resume is True:  # Keras' `fit` called again continues: here the last run
            out_dir = self._last_run()
        held = self.default_weights if out_dir is None and resume is False and init_from is None else None
        if out_dir is None:
            import tempfile

            out_dir = tempfile.mkdtemp(prefix=f"dslc-{self.name}-")
        if class_weight is not None or sample_weight is not None:
            from dslc.runtime.class_weights import validation_with_weights, with_weights

            train = with_weights(self, train, class_weight, sample_weight)
            val = validation_with_weights(self, val)
        reporter = reporter or python_reporter(verbose)
        if isinstance(held, Path):  # Keras' `fit` called again continues from the model's weights: say it does not
            from dslc.keras_calls import StartNote

            again = ("pass `resume=True` (`epochs` the new total) to continue that run, or "
                     if held.is_dir() else "pass ")
            note = StartNote(reporter.warn, "this run starts from the model's initial weights, not from those the "
                             f"program holds (`{held}`), which Keras' `fit` would continue from; {again}"
                             f"`init_from=\"{held}\"` to start a new run from them")
            if workers is None:
                callbacks = [*callbacks, note]
            else:  # several processes take no callbacks
                note.on_train_begin({})
        try:
            if workers is not None:
                from dslc.diagnostics import SettingError
                from dslc.runtime.launch import launch

                if callbacks or early_stopping not in (None, False, "off") or val_split is not None or restore_best \
                        or init_from is not None:  # `early_stopping=""` (the flag alone) is early stopping too
                    raise SettingError("`workers=` trains with the loop's basic options only",
                                       hint="drop `callbacks`, `early_stopping`, `val_split`, `restore_best` and "
                                            "`init_from`, or train in one process")
                history = launch(self, workers, train, val, epochs=epochs, batch_size=batch_size, seed=seed,
                                 device=device, out_dir=out_dir, resume=resume, lr=lr, reporter=reporter,
                                 threads=threads, accumulate=accumulate, reduce_lr_on_plateau=reduce_lr_on_plateau)
            else:
                history = fit(self, train, val, epochs=epochs, batch_size=batch_size, seed=seed, device=device,
                              out_dir=out_dir, resume=resume, lr=lr, reporter=reporter, threads=threads,
                              val_split=val_split, callbacks=callbacks, early_stopping=early_stopping,
                              restore_best=restore_best, init_from=init_from, accumulate=accumulate, comm=comm,
                              reduce_lr_on_plateau=reduce_lr_on_plateau)
            self.default_weights = Path(out_dir)
            return history
        finally:
            close = getattr(reporter, "close", None)
            if close is not None:
                close()

    def _named_data(self, train, val):
        """Training and validation data given as Keras gives them (`(x, y)`, arrays) as dicts by name."""
        from dslc.keras_calls import named_arrays
        from dslc.runtime.layout import data_specs, eval_key, train_keys

        keys = train_keys(self.manifest)
        if not keys:  # `fit` says the model has no loss
            return train, val
        return (named_arrays(train, data_specs(self.manifest, keys), "training data",
                             "`train(x, y)`, as Keras' `fit(x, y)`"),
                named_arrays(val, data_specs(self.manifest, [eval_key(k) for k in keys]), "validation data",
                             "`val=(x_val, y_val)`, as Keras' `validation_data`"))

    def _last_run(self) -> Path:
        """The run folder of this program's last `train`, for `resume=True` without `out_dir`."""
        from dslc.diagnostics import DataError

        last = self.default_weights
        if not (isinstance(last, Path) and last.is_dir()):
            loaded = isinstance(last, Path)  # `load_weights` of a checkpoint file
            raise DataError("`resume=True` continues a run, but this program has trained none"
                            + (f" (its weights were loaded from `{last}`)" if loaded else ""),
                            hint=f"pass `resume=\"{last}\"` to start a run from that state" if loaded else
                            "pass the run's `out_dir=` (the folder of an earlier `train`)")
        return last

    @keras_arguments
    def summary(self, batch_size: int = 32, dims: dict[str, int] | None = None):
        """Keras's `model.summary()`: a `dict` of the layers and totals that shows as the table (print
        it, or leave it as a notebook cell's value); FLOPs and memory at `batch_size`, other symbolic
        dimensions sized by `dims`. See `dslc.summary`."""
        from dslc.runtime.data import check_count
        from dslc.summary import summarize

        return summarize(self, check_count(batch_size, "batch_size", "the batch size"), dims)

    @keras_arguments
    def evaluate(self, data, weights=None, *, batch_size: int = 256, device: str = "cpu",
                 threads: int | None = None, verbose: int | str = "auto") -> dict[str, float]:
        """Loss and every metric of `weights` (a run folder, checkpoint or dict of arrays; None: the
        `default_weights`, those of the last `train`) on labelled `data` (as `train` takes it: a path, a dict,
        `(x, y)`, or `evaluate(x, y)` as Keras'); see `dslc.runtime.evaluate.evaluate`. `verbose` is taken
        for Keras code and prints nothing at any level."""
        from dslc.keras_calls import named_arrays
        from dslc.runtime.evaluate import evaluate
        from dslc.runtime.layout import data_specs, eval_key, train_keys
        from dslc.runtime.progress import check_verbose

        check_verbose(verbose)
        keys = train_keys(self.manifest)
        if keys:
            data = named_arrays(data, data_specs(self.manifest, [eval_key(k) for k in keys]), "evaluation data",
                                "`evaluate(x, y)`, as Keras'")
        weights = self.default_weights if weights is None else weights
        return evaluate(self, data, weights, batch_size=batch_size, device=device, threads=threads)

    def load_weights(self, weights) -> None:
        """Keras' `load_weights`: read the parameters of `weights` (a run folder, a checkpoint such as
        `RUN/best.npz`, or a dict of arrays), checked against the model, as the `default_weights` that
        `predict`, `evaluate` and `export` use when given none."""
        from dslc.runtime.state_files import load_params

        params = load_params(weights, self.manifest, self.defines)  # checked now, as Keras' load_weights reads
        self.default_weights = Path(weights) if isinstance(weights, (str, os.PathLike)) else params

    def save_weights(self, path: str | os.PathLike) -> Path:
        """Keras' `save_weights`: write the checkpoint of the `default_weights` (the last `train`'s, or the
        file or run `load_weights` read) to the `.npz` file `path` (atomically), as it is (`RUN/checkpoint.npz`
        or an `.npz` of values by name): `weights=`, `load_weights`, `init_from=` and `resume=` read it."""
        from dslc.diagnostics import DataError
        from dslc.fsutil import atomic_write_bytes
        from dslc.runtime.checkpoint import checkpoint_path
        from dslc.runtime.state_files import load_params
        from dslc.runtime.data import read_bytes

        if Path(path).suffix.lower() != ".npz":
            raise DataError(f"the weights go to an `.npz` file (a dslc checkpoint), not `{os.fspath(path)}`",
                            hint=f"e.g. `program.save_weights(\"{Path(path).stem}.npz\")`")
        if self.default_weights is None:
            raise DataError(f"model `{self.name}` has no weights to save: it has not trained",
                            hint="train it first (`program.train(...)`), or `load_weights` a run or checkpoint")
        if not isinstance(self.default_weights, Path):
            raise DataError("the weights were given as a dict of arrays, not read from a run",
                            hint="save the dict with `numpy.savez`")
        load_params(self.default_weights, self.manifest, self.defines)  # still this model's
        return atomic_write_bytes(path, read_bytes(checkpoint_path(self.default_weights), "checkpoint"))

    def trained_model(self, weights=None) -> bytes:
        """The inference graph with the trained parameters of `weights` (a run directory, a
        `checkpoint.npz` path or a dict of parameter arrays) in place of the initial ones.
        `weights=None`: the `default_weights` (the last `train`'s run, or what `load_weights` read); without
        them only allowed for a model without a loss (nothing to train)."""
        from dslc.diagnostics import DataError
        from dslc.emit.weights import bind_weights
        from dslc.runtime.state_files import load_params
        from dslc.spelling import option

        weights = self.default_weights if weights is None else weights
        if weights is None:
            if self.trainable:
                raise DataError(f"model `{self.name}` is trained, so it needs the weights of a training run",
                                hint=f"pass {option('weights')} or a checkpoint.npz")
            return self.graphs["infer"]
        if not self.trainable:
            raise DataError(f"model `{self.name}` has no loss, so it has no trained weights to load",
                            hint=f"drop {option('no_weights')}")
        params = load_params(weights, self.manifest, self.defines)  # checked against the model's parameters
        return bind_weights(self.graphs["infer"], params, absent_ok=params)  # the inference graph may use fewer

    @keras_arguments
    def predict(self, inputs, weights=None, device: str = "cpu", batch_size: int | None = 256,
                threads: int | None = None, verbose: int | str = "auto") -> dict[str, np.ndarray]:
        """Run the inference graph on `inputs` (an `.npz` path, a dict of arrays, or as Keras' `predict(x)`:
        the array of a model with one input, a list of arrays in the order of several) in batches of
        `batch_size` rows (None: all at once) with `weights` (None: the `default_weights`, those of the last
        `train`); return the outputs by name, a dict also for one output (the model names it). `verbose`
        is taken for Keras code and prints nothing at any level."""
        from dslc.diagnostics import DataError
        from dslc.keras_calls import Outputs, named_arrays
        from dslc.runtime.data import check_count, load_data, num_rows
        from dslc.runtime.progress import check_verbose
        from dslc.runtime.session import Predictor

        check_verbose(verbose)
        if batch_size is not None:
            batch_size = check_count(batch_size, "batch_size", "the batch size")
        spec = self.manifest["graphs"]["infer"]
        arrays = load_data(named_arrays(inputs, spec["inputs"], "input data"), spec["inputs"], "input data")
        if arrays and num_rows(arrays) == 0:  # as `train` and `evaluate`: an empty file is a mistake
            raise DataError("the input data has no samples")
        return Outputs(Predictor(self.trained_model(weights), spec, device, threads).run(arrays, batch_size))

    def export(self, weights, path: str | os.PathLike | None = None) -> Path:  # weights may be None, see trained_model
        """Write a self-contained inference model with the trained weights to `path` (atomically);
        `export(path)` alone, as Keras' `model.export(path)`, writes the `default_weights` (the last `train`'s)."""
        from dslc.fsutil import atomic_write_bytes

        if path is None:
            weights, path = None, weights

        return atomic_write_bytes(path, self.trained_model(weights))


def _writer(data: bytes):
    return lambda f: f.write(data)
