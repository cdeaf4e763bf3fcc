"""Shared test helpers: compile `.dl` text, run ONNX models, drive a training graph step by step.

    program = compile_text(tmp_path, "model m { ... }", dtype="float64")
    driver = TrainDriver(program)                 # parameters and state start at the init graph's values
    out = driver.step({"x": x, "y": y})           # one training step: outputs by name, params updated
    out = driver.run({"x": x, "y": y}, params={...})   # evaluate without updating anything

Sessions are plain `onnxruntime.InferenceSession`s (one thread, warnings off), or the ONNX reference
evaluator with `runtime="reference"`: both answer `run(feeds) -> {output name: array}`.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from dslc.compiler import compile_file

Runner = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


def compile_text(tmp_path: Path, text: str, name: str = "model.dl", **kw):
    """Write `text` (dedented) to `tmp_path/name` and compile it; `kw` go to `compile_file`."""
    path = Path(tmp_path) / name
    path.write_text(textwrap.dedent(text).strip() + "\n", encoding="utf-8")
    return compile_file(path, **kw)


def as_bytes(model) -> bytes:
    return model if isinstance(model, bytes) else model.SerializeToString()


def ort_session(model) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1  # tiny graphs: one thread is fastest and deterministic
    options.inter_op_num_threads = 1
    return ort.InferenceSession(as_bytes(model), options, providers=["CPUExecutionProvider"])


def make_runner(model, runtime: str = "ort") -> Runner:
    """`run(feeds) -> {output name: array}` with ONNX Runtime (`"ort"`) or the reference evaluator."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(model)
    names = [o.name for o in proto.graph.output]
    if runtime == "ort":
        session = ort_session(proto)
        return lambda feeds: dict(zip(names, session.run(None, dict(feeds))))
    if runtime == "reference":
        evaluator = ReferenceEvaluator(proto)
        return lambda feeds: dict(zip(names, evaluator.run(None, dict(feeds))))
    raise ValueError(f"unknown runtime {runtime!r}")


def initializers(model) -> dict[str, np.ndarray]:
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(model)
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


class TrainDriver:
    """Drives a compiled training graph the way the manifest says: feed data, targets, hyper-inputs,
    params and state; read the outputs; feed each `next` output back under the param/state name."""

    def __init__(self, program, runtime: str = "ort", graph: str = "train"):
        self.spec = program.manifest["graphs"][graph]
        model = program.graphs[graph]
        inits = program.initial_values()
        self.params = {p["name"]: inits[p["name"]].copy() for p in self.spec["params"]}
        self.state = {s["name"]: inits[s["name"]].copy() for s in self.spec["state"]}
        self.buffers = {b["name"]: inits[b["name"]].copy() for b in self.spec.get("buffers", [])}
        self.frozen = {f["name"]: inits[f["name"]].copy() for f in self.spec.get("frozen", [])}
        self.hyper = {h["name"]: np.asarray(h["default"], dtype=h["dtype"]) for h in self.spec["hyper"]}
        self.next_of = {e["name"]: e["next"] for e in self.spec["params"] + self.spec["state"]
                        + self.spec.get("buffers", [])}
        self._run = make_runner(model, runtime)

    def feeds(self, data: Mapping[str, np.ndarray], params=None, state=None, **hyper) -> dict[str, np.ndarray]:
        feeds = dict(data)
        feeds.update(self.buffers)
        feeds.update(self.frozen)
        feeds.update(self.params if params is None else params)  # `params` may hold buffers too
        feeds.update(self.state if state is None else state)
        for name, default in self.hyper.items():
            feeds[name] = np.asarray(hyper.get(name, default), dtype=default.dtype)
        return feeds

    def run(self, data: Mapping[str, np.ndarray], params=None, state=None, **hyper) -> dict[str, np.ndarray]:
        """All outputs of one step from the given (or current) params and state; nothing is updated."""
        return self._run(self.feeds(data, params, state, **hyper))

    def step(self, data: Mapping[str, np.ndarray], **hyper) -> dict[str, np.ndarray]:
        """One training step: returns the outputs and moves params and state to their `next` values."""
        out = self.run(data, **hyper)
        self.params = {name: out[self.next_of[name]] for name in self.params}
        self.state = {name: out[self.next_of[name]] for name in self.state}
        self.buffers = {name: out[self.next_of[name]] for name in self.buffers}
        return out


def hang_guard(seconds: float) -> float:
    """A subprocess's timeout: `seconds` on an idle machine, longer in proportion to the load average per
    core, so that it stops a hang but not a slow run (with 50 busy loops on its core, a 2-rank `mpiexec`
    job of tests/test_distributed.py took ~50 s instead of ~2)."""
    import os

    return seconds * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
