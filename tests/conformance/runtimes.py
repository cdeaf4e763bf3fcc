"""The six runtimes of the conformance suite, each driven through the embedder's protocol (tract and
OpenVINO twice: on the static build, and on the symbolic one to show what needs static shapes).

A runtime is `run(out_dir, batches, run_seed, workdir) -> {name: array}` (the result of
`protocol.run_protocol`). The Python runtimes plug a graph loader (`*_graph(path, inputs, outputs)
-> run(feeds) -> {output: array}`) into `protocol.py`; the two
JavaScript runtimes run the same protocol in `js/driver.mjs` under node, exchanging tensors through
`tensorfile` files. `static` runtimes get a build whose symbolic dimensions are pinned (`--dim B=4`).
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import tensorfile
from protocol import run_protocol

JS_DIR = Path(__file__).resolve().parent / "js"
JS_INSTALL = "(cd tests/conformance/js && ONNXRUNTIME_NODE_INSTALL=skip npm ci)"


class RuntimeUnavailable(Exception):
    """The runtime's package is not installed: the message says how to install it."""


def ort_graph(path: Path, inputs: list[str], outputs: list[str]):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda feeds: dict(zip(outputs, session.run(outputs, feeds)))


def reference_graph(path: Path, inputs: list[str], outputs: list[str]):
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(str(path))
    return lambda feeds: dict(zip(outputs, evaluator.run(outputs, feeds)))


def tract_graph(path: Path, inputs: list[str], outputs: list[str]):
    try:
        import tract
    except ImportError as e:
        raise RuntimeUnavailable("tract is not installed: pip install '.[conformance]'") from e
    model = tract.onnx().load(str(path)).into_model()
    order = [model.input_name(i) for i in range(model.input_count())]
    runnable = model.into_runnable()

    def run(feeds):
        values = runnable.run([feeds[n] for n in order])
        # tract names outputs after the nodes that compute them; the graph's output order is the manifest's
        return {n: v.to_numpy() for n, v in zip(outputs, values)}
    return run


# The CPU plugin computes in bf16 on CPUs that have it unless told otherwise. Its element-wise fusion
# ("snippets") fails to compile some static training graphs (2026.4: "[TokenizeSnippets] ... Topological
# order is required, but not set", on the summed gradients of several projections of one sequence, as in
# self-attention: models/attn_classifier.dl, `--dim B=4`); without it the same graphs compile and agree.
OPENVINO_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "SNIPPETS_MODE": "DISABLE"}


def openvino_graph(path: Path, inputs: list[str], outputs: list[str]):
    try:
        import openvino as ov
    except ImportError as e:
        raise RuntimeUnavailable("openvino is not installed: pip install '.[conformance]'") from e
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", OPENVINO_CONFIG)

    def run(feeds):
        values = compiled(feeds)
        # by name, not `any_name`: an output computed by a Reshape it folds away also carries the name of
        # the tensor before it, and `any_name` may give that one
        return {n: np.asarray(values[compiled.output(n)]) for n in outputs}
    return run


def python_runtime(open_graph):
    def run(out_dir, batches, run_seed, workdir):
        return run_protocol(out_dir, open_graph, batches, run_seed)
    return run


def node_with_packages(backend: str) -> str:
    """The path of node, once onnxruntime-<backend> is installed in js/."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeUnavailable(f"node is not on PATH: install Node.js >= 18, then {JS_INSTALL}")
    if not (JS_DIR / "node_modules" / f"onnxruntime-{backend}").is_dir():
        raise RuntimeUnavailable(f"onnxruntime-{backend} is not installed: {JS_INSTALL}")
    return node


def js_runtime(backend: str):
    """onnxruntime-node or onnxruntime-web (wasm), run by `js/driver.mjs` in node."""
    def run(out_dir, batches, run_seed, workdir):
        node = node_with_packages(backend)
        data, result = Path(workdir) / f"{backend}.data.bin", Path(workdir) / f"{backend}.result.bin"
        tensorfile.write(data, {f"{s}.{n}": v for s, batch in enumerate(batches) for n, v in batch.items()})
        # V8 compiles onnxruntime-web's large wasm module with its optimizing tier in the background, which
        # held each run up by 3-5 s; the baseline compiler alone runs these small graphs in about 1 s
        flags = ["--liftoff-only"] if backend == "web" else []
        done = subprocess.run([node, *flags, str(JS_DIR / "driver.mjs"), backend, str(out_dir), str(data), str(len(batches)),
                               str(run_seed), str(result)], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"onnxruntime-{backend}: {done.stderr.strip() or done.stdout.strip()}")
        return tensorfile.read(result)
    return run


@dataclass(frozen=True)
class Runtime:
    name: str         # as the README's table shows it
    run: Callable
    static: bool      # needs the symbolic dimensions pinned


RUNTIMES = {r.name: r for r in [
    Runtime("onnxruntime", python_runtime(ort_graph), static=False),
    Runtime("onnx.reference", python_runtime(reference_graph), static=False),
    Runtime("tract", python_runtime(tract_graph), static=True),
    Runtime("openvino", python_runtime(openvino_graph), static=True),
    # where they need static shapes: the same two runtimes on the symbolic build
    Runtime("tract, symbolic B", python_runtime(tract_graph), static=False),
    Runtime("openvino, symbolic B", python_runtime(openvino_graph), static=False),
    Runtime("onnxruntime-node", js_runtime("node"), static=False),
    Runtime("onnxruntime-web", js_runtime("web"), static=False),
]}
