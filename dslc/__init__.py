"""dslc: a compiler for deep-learning models (`.dl` files to ONNX inference and training graphs).

    import dslc
    program = dslc.compile("mnist.dl", hidden=128)     # -> dslc.Program; raises dslc.DslcError
    program.train(x, y, val=(x_val, y_val), epochs=5)  # as Keras' fit; or .npz paths, dicts of arrays
    program.predict(x_test)                            # {"probs": array}, with the weights just trained
"""
from __future__ import annotations

import os
from collections.abc import Mapping

__version__ = "0.2.0"
__all__ = ["Callback", "DataError", "DslcError", "EarlyStopping", "ModelWarning", "Program", "ReduceLROnPlateau",
           "__version__", "compile"]


def __getattr__(name: str):
    """`dslc.Program`, `dslc.DslcError`, `dslc.DataError`, `dslc.Callback`, `dslc.EarlyStopping`,
    `dslc.ReduceLROnPlateau`, imported
    when first used: `import dslc` itself loads nothing, so that the `dslc` command can catch Ctrl-C while
    numpy and onnx load."""
    if name in ("DataError", "DslcError"):
        from dslc import diagnostics

        return getattr(diagnostics, name)
    if name == "Program":
        from dslc.program import Program

        return Program
    if name in ("Callback", "EarlyStopping"):
        from dslc.runtime import callbacks

        return getattr(callbacks, name)
    if name == "ReduceLROnPlateau":
        from dslc.runtime.plateau import ReduceLROnPlateau

        return ReduceLROnPlateau
    raise AttributeError(f"module 'dslc' has no attribute {name!r}")


class ModelWarning(UserWarning):
    """A likely mistake in a model that still compiles (`Program.warnings`), raised by `dslc.compile` as a
    Python warning with the diagnostic as the command line prints it."""


def compile(path: str | os.PathLike, defines: dict | None = None, *, dtype: str = "float32", seed: int = 0,
            dims: Mapping[str, int] | None = None, freeze=(), split: bool = False,
            import_path: str | os.PathLike | list = (), tune: bool | int = False, **hyper) -> "Program":
    """Compile the model in `path`.

    Extra keyword arguments set the model's parameters like `-D name=value` on the command line:
    numbers as written (`hidden=128` is `-D hidden=128`), `True`/`False` as `true`/`false`, strings as
    they are. A parameter named like an argument of this function (`defines`, `dtype`, `seed`, `dims`,
    `freeze`, `split`, `import_path`, `tune`) goes in `defines={...}`. `import_path` (a folder or a list of them)
    is where `import` may also read from, like `--import-path`. `seed` seeds the parameter initializers
    (`dslc train --seed` passes its seed here too). `freeze` lists parameter selectors (`"enc*"`, a layer name, `weights`...) that training leaves
    fixed (`dslc train --freeze`). `split=True` also compiles the gradient and update graphs that gradient
    accumulation and data-parallel training run (`dslc build --split`). Raises `DslcError` for errors in
    the model, `DataError` for bad arguments or unreadable files.
    `tune=True` times each shape-dependent kernel choice (the float32 conv filter gradients'
    formulations) with ONNX Runtime on this machine and on all cores, at the graphs' batch or 64 where it
    is symbolic, and writes the fastest (`dslc build --tune`); `tune=N` measures with N threads (the
    `threads` you will train with). What was chosen is the manifest's `tuning` key.
    Likely mistakes that still compile (a loss given probabilities instead of logits, say) are in the
    returned program's `warnings`, a list of `dslc.diagnostics.Diagnostic` (`dslc.diagnostics.render`
    shows one as the command line does), and each is raised as a Python warning, `dslc.ModelWarning`.
    """
    import numbers

    from dslc.compiler import compile_file
    from dslc.diagnostics import DataError, UnknownDimension

    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"the model path must be a string or a path, not `{type(path).__name__}`")
    text = os.fspath(path)
    if dtype not in ("float32", "float64"):
        raise DataError(f"unknown dtype `{dtype}`", hint="use `float32` or `float64`")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise DataError(f"the seed must be a non-negative integer, got {seed!r}")
    if defines is not None and not isinstance(defines, Mapping):
        raise DataError(f"`defines` must be a dict of model parameters, not `{type(defines).__name__}`",
                        hint="e.g. `defines={\"hidden\": 128}`, or pass them as keywords: `hidden=128`")
    folders = [import_path] if isinstance(import_path, (str, os.PathLike)) else list(import_path)
    if not all(isinstance(f, (str, os.PathLike)) for f in folders):
        raise DataError(f"`import_path` must be a folder or a list of folders, got {import_path!r}")
    from dslc.keras_calls import check_keras_compile

    check_keras_compile(hyper)  # `optimizer="adam"`, `metrics=[...]`: Keras' `model.compile`
    values = {**(defines or {}), **hyper}
    if dims is not None and (not isinstance(dims, Mapping) or not all(
            isinstance(k, str) and isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1
            for k, v in dims.items())):
        raise DataError(f"`dims` must map dimension names to positive integers, got {dims!r}",
                        hint="e.g. `dims={\"B\": 64}`")
    if isinstance(freeze, str):
        freeze = (freeze,)
    try:
        extra = {"dims": {k: int(v) for k, v in dims.items()}} if dims else {}
        if freeze:
            extra["freeze"] = tuple(freeze)
        if split:
            extra["split"] = True
        if tune is not False:
            extra["tune"] = _tune_setting(tune)
        program = compile_file(text, defines={k: define_text(k, v) for k, v in values.items()}, dtype=dtype,
                               seed=int(seed), import_path=[os.fspath(f) for f in folders], **extra)
    except UnknownDimension as e:
        raise DataError(str(e)) from None
    except OSError as e:  # no such file, a directory, an unreadable import
        name = e.filename or text
        hint = "name the model's `.dl` file" if os.path.isdir(name) else ""
        raise DataError(f"cannot read `{name}`: {e.strerror or e}", hint=hint) from None
    if program.warnings:
        import warnings

        from dslc.diagnostics import render

        for diagnostic in program.warnings:
            warnings.warn(render(diagnostic), ModelWarning, stacklevel=2)
    return program


def _tune_setting(tune):
    from dslc.diagnostics import DataError
    from dslc.runtime.devices import default_threads
    from dslc.runtime.tune import TuneSetting

    if tune is True:
        return TuneSetting(threads=default_threads())
    if isinstance(tune, bool) or not isinstance(tune, int) or tune < 1:
        raise DataError(f"`tune` must be True, False or a positive thread count, got {tune!r}")
    return TuneSetting(threads=tune)


def define_text(name, value) -> str:
    """The `-D name=value` text of a model parameter given from Python."""
    import numbers

    from dslc.diagnostics import DataError

    if not isinstance(name, str):
        raise DataError(f"model parameter names must be strings, got {name!r}")
    if isinstance(value, bool):  # before the numbers: `True` is an `int`
        return "true" if value else "false"
    if isinstance(value, (str, numbers.Integral, numbers.Real)):
        return str(value)
    raise DataError(f"model parameter `{name}` must be a number, `True`/`False` or a string, "
                    f"got {value!r} (`{type(value).__name__}`)")
