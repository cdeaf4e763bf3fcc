"""The epoch metrics of the embedding examples (examples/python/train.py, examples/node/metrics.mjs) against
dslc's own (dslc/runtime/metrics.py) on random counts, for every value, average, curve and summation method
the manifest may name (the bundled models use a few: test_python_example, test_node_example)."""
from __future__ import annotations

import importlib.util
import json
import subprocess

import numpy as np
import pytest

from dslc.runtime import metrics
from embedding import node_example
from test_conformance import ROOT

CONFUSION = [{"name": f"{value}_{average}", "shape": [k, k], "reduce": "sum", "counts": "confusion_matrix",
              "value": value, "average": average}
             for value in ("precision", "recall", "f1") for average, k in
             (("binary", 2), ("macro", 4), ("micro", 4), ("weighted", 4))]
THRESHOLDS = [{"name": f"{curve}_{summation}_{average}", "shape": [3, 7, 2, 2], "reduce": "sum", "counts": "thresholds",
               "value": "auc", "curve": curve, "summation_method": summation, "average": average}
              for curve in ("roc", "pr") for summation in ("interpolation", "minoring", "majoring", "step")
              for average in ("macro", "micro", "weighted")]


def random_counts(rng, t: dict) -> np.ndarray:
    if t["counts"] == "confusion_matrix":
        counts = rng.integers(0, 20, t["shape"]).astype(np.float64)
        counts[-1, :] = 0  # a class that never occurs as the truth: 0/0 cases
        return counts
    k, thresholds = t["shape"][:2]
    scores, truth = rng.random((k, 40)), rng.random((k, 40)) < 0.4
    truth[0] = False  # a column without positives: its curve is undefined
    edges = np.concatenate([[-1e-7], np.arange(1, thresholds - 1) / (thresholds - 1), [1 + 1e-7]])
    predicted = scores[:, None, :] > edges[None, :, None]
    counts = np.zeros((k, thresholds, 2, 2))
    for a in (0, 1):
        for b in (0, 1):
            counts[:, :, a, b] = ((truth[:, None, :] == a) & (predicted == b)).sum(axis=2)
    return counts


@pytest.fixture(scope="module")
def cases():
    rng = np.random.default_rng(5)
    return [(t, random_counts(rng, t)) for t in CONFUSION + THRESHOLDS]


def expected(t, counts) -> float:
    return metrics.epoch_value(counts, t)


def test_the_python_example_computes_dslcs_metrics(cases):
    spec = importlib.util.spec_from_file_location("embedding_train", ROOT / "examples/python/train.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    values = example.epoch_values({t["name"]: (t, counts) for t, counts in cases}, rows=1)
    assert list(values) == [t["name"] for t, _ in cases]
    for t, counts in cases:
        np.testing.assert_allclose(values[t["name"]], expected(t, counts), rtol=1e-12, err_msg=t["name"])


def test_the_node_example_computes_dslcs_metrics(cases, tmp_path):
    command = node_example("node", tmp_path)
    (tmp_path / "cases.json").write_text(json.dumps([[t, counts.ravel().tolist()] for t, counts in cases]))
    script = ("import { readFileSync } from 'node:fs'; import { epochValues } from './metrics.mjs';"
              "const cases = JSON.parse(readFileSync('cases.json'));"
              "const sums = Object.fromEntries(cases.map(([t, c]) => [t.name, { t, total: Float64Array.from(c) }]));"
              "console.log(JSON.stringify(epochValues(sums, 1).map(([n, v]) => [n, Number.isNaN(v) ? 'NaN' : v])));")
    done = subprocess.run([command[0], "--input-type=module", "-e", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    values = {name: float(value) for name, value in json.loads(done.stdout)}
    assert list(values) == [t["name"] for t, _ in cases]
    for t, counts in cases:
        np.testing.assert_allclose(values[t["name"]], expected(t, counts), rtol=1e-12, err_msg=t["name"])
