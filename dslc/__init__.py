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
__all__ = ["DataError", "DslcError", "Program", "__version__", "compile"]


def compile(path: str | os.PathLike, defines: dict | None = None, *, dtype: str = "float32", seed: int = 0,
            **hyper) -> Program:
    """Compile the model in `path`.

    Extra keyword arguments set the model's parameters like `-D name=value` on the command line;
    each value is passed as `str(value)` (so `hidden=128` is `-D hidden=128`). A parameter named
    like an argument of this function (`defines`, `dtype`, `seed`) goes in `defines={...}`.
    `seed` seeds the parameter initializers (`dslc train --seed` passes its seed here too).
    """
    from dslc.compiler import compile_file

    values = {**(defines or {}), **hyper}
    return compile_file(os.fspath(path), defines={k: str(v) for k, v in values.items()}, dtype=dtype, seed=seed)
