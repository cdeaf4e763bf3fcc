"""Fine-tuning: a new run that starts from the matching weights of another (`--init-from`).

The source is a run folder, a checkpoint `.npz` (`best.npz` too), or an `.onnx` model such as
`dslc export` writes (its initializers). Each parameter and buffer of the model takes the source's value
of the same name when the shapes agree (float values are cast to the model's dtype); the others keep
their initial values. The optimizer state starts fresh. A resumed run ignores the source: its own
checkpoint holds the values.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dslc.diagnostics import DataError
from dslc.runtime.layout import weight_specs


@dataclass
class InitReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (name, source shape, model shape)
    missing: list[str] = field(default_factory=list)  # the model's, not in the source: initial values
    unused: list[str] = field(default_factory=list)  # the source's, not in the model

    def text(self) -> str:
        parts = [f"initialized {len(self.loaded)} of {len(self.loaded) + len(self.mismatched) + len(self.missing)} "
                 f"weights from `{self.source}`"]
        if self.mismatched:
            parts.append("shapes differ (initial values kept): " + ", ".join(
                f"`{n}` {list(a)} there, {list(b)} here" for n, a, b in self.mismatched))
        if self.missing:
            parts.append("not in the source (initial values kept): " + ", ".join(f"`{n}`" for n in self.missing))
        if self.unused:
            parts.append("skipped (not in this model): " + ", ".join(f"`{n}`" for n in self.unused))
        return "; ".join(parts)


def read_source(source) -> dict[str, np.ndarray]:
    """The named arrays of a run folder, a checkpoint or an `.onnx` model."""
    path = Path(os.fspath(source))
    if path.suffix == ".onnx":
        from dslc.emit.weights import read_initializers

        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read `{path}`: {e.strerror or e}") from None
        try:
            return read_initializers(data)
        except Exception as e:  # noqa: BLE001 - protobuf's errors for a file that is not a model
            raise DataError(f"cannot read `{path}` as an ONNX model ({type(e).__name__}: {e})") from None
    from dslc.runtime.checkpoint import load_checkpoint

    return load_checkpoint(path).params


def initial_weights(source, manifest: dict) -> tuple[dict[str, np.ndarray], InitReport]:
    """The model's weights found in `source` (by name, shapes equal), and what was and was not taken."""
    arrays = read_source(source)
    report = InitReport(os.fspath(source))
    values = {}
    for spec in weight_specs(manifest):
        name, shape, dtype = spec["name"], tuple(spec["shape"]), np.dtype(spec["dtype"])
        if name not in arrays:
            report.missing.append(name)
            continue
        value = np.asarray(arrays[name])
        if value.shape != shape:
            report.mismatched.append((name, value.shape, shape))
        elif value.dtype != dtype and not (value.dtype.kind == dtype.kind == "f"):
            report.mismatched.append((name, value.shape, shape))
        else:
            values[name] = value.astype(dtype)
            report.loaded.append(name)
    known = {s["name"] for s in weight_specs(manifest)}
    report.unused = sorted(k for k in arrays if k not in known)
    if not values:
        raise DataError(f"`{report.source}` has no weight of model `{manifest['model']}` (by name and shape)",
                        hint=report.text())
    return values, report
