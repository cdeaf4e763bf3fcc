"""Comparisons: broadcasting, `bool` results, no gradient (`not_equal` is in `dslc/ops/math.py`)."""
from __future__ import annotations

import numpy as np

from dslc.ops.elementwise import Binary, binary_type
from dslc.ops.registry import ANY, NUMBERS, Sample, op


class Compare(Binary):
    """Comparisons give `bool` tensors and have no gradient."""

    samples = [Sample(((3, 4), (3, 4)), grad=False)]

    def infer(self, a, b):
        return binary_type(a, b, self.name).with_dtype("bool")


for _name, _onnx, _np, _torch in [("greater", "Greater", np.greater, "gt"), ("less", "Less", np.less, "lt"),
                                  ("greater_equal", "GreaterOrEqual", np.greater_equal, "ge"),
                                  ("less_equal", "LessOrEqual", np.less_equal, "le"), ("equal", "Equal", np.equal, "eq")]:
    op(_name)(type(_name.title().replace("_", ""), (Compare,), {
        "onnx": _onnx, "evaluate": staticmethod(_np), "__doc__": f"y = {_name}(a, b) as bool",
        "dtypes": ANY if _name == "equal" else NUMBERS,
        "torch": lambda self, T, a, b, _f=_torch: getattr(T, _f)(a, b)}))
