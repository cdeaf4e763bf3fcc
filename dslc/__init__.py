"""dslc: a compiler for deep-learning models (`.dl` files to ONNX inference and training graphs).

    import dslc
    program = dslc.compile("mnist.dl", hidden=128)     # -> dslc.Program; raises dslc.DslcError
    program.train("train.npz", epochs=5, batch_size=128, out_dir="runs/mnist")
"""
from __future__ import annotations

import os

from dslc.diagnostics import DataError, DslcError
from dslc.program import Program

__version__ = "0.1.0"
__all__ = ["compile", "Program", "DslcError", "DataError", "__version__"]


def compile(path: str | os.PathLike, *, dtype: str = "float32", **defines) -> Program:  # noqa: A001
    """Compile the model in `path`. Keyword arguments set the model's parameters like `-D name=value`
    on the command line: each value is passed as `str(value)` (so `hidden=128` is `-D hidden=128`)."""
    from dslc.compiler import compile_file

    return compile_file(os.fspath(path), defines={k: str(v) for k, v in defines.items()}, dtype=dtype)
