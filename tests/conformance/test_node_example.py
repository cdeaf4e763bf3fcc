"""examples/node/train.mjs, the JavaScript loop embedders copy, prints the losses ONNX Runtime gives in
Python for the same protocol (protocol.py) on the bundled digits data: one epoch, batches of 32 in order,
and the predict graph's outputs with the trained values."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np

from protocol import run_protocol
from runtimes import node_with_packages, ort_graph
from test_conformance import ROOT

BATCH = 32


def test_node_example_prints_the_losses_of_python(build, tmp_path):
    node = node_with_packages("node")
    out = build(ROOT / "examples/digits/digits.dl", False)
    # the example imports onnxruntime-node; run it beside the conformance suite's installed packages
    for name in ("train.mjs", "npz.mjs"):
        shutil.copy(ROOT / "examples/node" / name, tmp_path / name)
    (tmp_path / "node_modules").symlink_to(ROOT / "tests/conformance/js/node_modules", target_is_directory=True)
    done = subprocess.run([node, str(tmp_path / "train.mjs"), str(out), str(ROOT / "examples/digits/train.npz")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    printed = [float(line.rpartition("loss ")[2]) for line in lines if line.startswith("step ")]
    first_rows = {line.split()[1].rstrip(","): [float(v) for v in line.rpartition(": ")[2].split(",")]
                  for line in lines if line.startswith("predicted ")}

    data = np.load(ROOT / "examples/digits/train.npz")
    rows = len(data["digit"])
    batches = [{name: data[name][start:start + BATCH] for name in data.files} for start in range(0, rows, BATCH)]
    result = run_protocol(out, ort_graph, batches, run_seed=0)
    assert len(printed) == len(batches) == 45
    assert printed == [float(loss) for loss in result["train.-.loss"]]  # onnxruntime-node 1.31 computes what the Python package does, bit for bit
    # inference with the trained values on the first batch, as the protocol's predict step
    assert list(first_rows) == ["probs"]
    assert first_rows["probs"] == [float(v) for v in result["predict.probs"][0]]
