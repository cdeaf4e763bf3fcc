"""Metrics against scikit-learn on random data, to 1e-6.

The metrics read the model's inputs directly (scores fed as data), so the expected values do not depend
on the parameters. The evaluation graph runs in uneven batches (103 examples in batches of 16) and the
epoch values come from `dslc.runtime.metrics.EpochMetrics` as the manifest says: count metrics (F1 is not
a mean of batch F1s) from summed confusion matrices, the others as batch means weighted by batch size.
One end-to-end run of `fit` checks the history's values too.
"""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from helpers import compile_text

from dslc.runtime.metrics import EpochMetrics, from_confusion, output_specs
from dslc.runtime.session import Evaluator
from dslc.runtime.train import fit

sk = pytest.importorskip("sklearn.metrics")

N, BATCH = 103, 16
AVERAGES = ("macro", "micro", "weighted")

MULTICLASS = """
model multi {
    input  s: f32[B, 5]
    target y: i64[B]
    z = s |> dense(5)
    output z
    loss   cross_entropy(z, y)
    optimizer sgd(lr = 0.1)
    metric accuracy(s, y)
    metric top2 = top_k_accuracy(s, y, k = 2)
    metric cm = confusion_matrix(s, y)
""" + "".join(f"""
    metric {m}_{a} = {m}(s, y, average = "{a}")""" for m in ("precision", "recall", "f1") for a in AVERAGES) + """
    metric f1_default = f1(s, y)
}
"""


def epoch(program, data: dict) -> dict:
    spec = program.manifest["graphs"]["eval"]
    evaluator = Evaluator(program.graphs["eval"], spec)
    params = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in program.initial_values().items()}
    sums = EpochMetrics(output_specs([spec]))
    for start in range(0, N, BATCH):
        batch = {k: v[start:start + BATCH] for k, v in data.items()}
        sums.add(evaluator.run(batch, params), len(batch["s"]))
    return {**sums.values(), **sums.matrices()}


def multiclass_data(seed: int) -> dict:
    """Scores and labels of 5 classes; class 4 is never the label and never predicted (scikit-learn's
    macro average leaves such a class out), and class 3 is rare."""
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((N, 5)).astype(np.float32)
    s[:, 4] -= 100
    y = rng.choice(4, N, p=[0.4, 0.3, 0.25, 0.05]).astype(np.int64)
    s[y == 1, 1] += 1.0  # some skill, so the metrics are not all alike
    return {"s": s, "y": y}


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory):
    return compile_text(tmp_path_factory.mktemp("metrics"), MULTICLASS, name="multi.dl")


@pytest.mark.parametrize("seed", [0, 1])
def test_multiclass_metrics_match_sklearn(multiclass, seed):
    data = multiclass_data(seed)
    got = epoch(multiclass, data)
    y, s = data["y"], data["s"]
    pred = s.argmax(axis=1)
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, pred), abs=1e-6)
    assert got["top2"] == pytest.approx(sk.top_k_accuracy_score(y, s, k=2, labels=range(5)), abs=1e-6)
    assert got["cm"] == sk.confusion_matrix(y, pred, labels=range(5)).tolist()
    for name, fn in (("precision", sk.precision_score), ("recall", sk.recall_score), ("f1", sk.f1_score)):
        for average in AVERAGES:
            expected = fn(y, pred, average=average, zero_division=0)
            assert got[f"{name}_{average}"] == pytest.approx(expected, abs=1e-6), f"{name} {average}"
    assert got["f1_default"] == got["f1_macro"]
    assert len({round(got[f"f1_{a}"], 6) for a in AVERAGES}) == 3, "the averages must differ on this data"


def test_the_manifest_says_how_to_aggregate(multiclass):
    outputs = {t["name"]: t for t in multiclass.manifest["graphs"]["eval"]["outputs"]}
    assert outputs["loss"]["reduce"] == "mean" and outputs["accuracy"]["reduce"] == "mean"
    assert {k: outputs["f1_weighted"][k] for k in ("reduce", "counts", "value", "average", "shape")} == {
        "reduce": "sum", "counts": "confusion_matrix", "value": "f1", "average": "weighted", "shape": [5, 5]}
    assert "value" not in outputs["cm"] and outputs["cm"]["reduce"] == "sum"
    train_outputs = {t["name"]: t for t in multiclass.manifest["graphs"]["train"]["outputs"]}
    assert train_outputs["f1_micro"]["reduce"] == "sum"


BINARY = """
model bin {
    input  s: f32[B, 1]
    target t: f32[B, 1]
    z = s |> dense(1)
    output z
    loss   binary_cross_entropy(z, t)
    optimizer sgd(lr = 0.1)
    metric f1(s, t)
    metric precision(s, t)
    metric recall(s, t)
    metric p05 = precision(s, t, threshold = 0.5)
    metric cm = confusion_matrix(s, t)
    metric mae(s, t)
}
"""


def test_binary_metrics_match_sklearn(tmp_path):
    program = compile_text(tmp_path, BINARY, name="bin.dl")
    rng = np.random.default_rng(5)
    t = (rng.random((N, 1)) < 0.4).astype(np.float32)
    s = (rng.standard_normal((N, 1)) + t).astype(np.float32)
    got = epoch(program, {"s": s, "t": t})
    y, pred = t[:, 0].astype(int), (s[:, 0] > 0).astype(int)
    assert got["f1"] == pytest.approx(sk.f1_score(y, pred), abs=1e-6)
    assert got["precision"] == pytest.approx(sk.precision_score(y, pred), abs=1e-6)
    assert got["recall"] == pytest.approx(sk.recall_score(y, pred), abs=1e-6)
    assert got["p05"] == pytest.approx(sk.precision_score(y, (s[:, 0] > 0.5).astype(int)), abs=1e-6)
    assert got["cm"] == sk.confusion_matrix(y, pred).tolist()
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(t, s), abs=1e-6)
    assert got["f1"] != got["precision"] != got["recall"]


def test_one_score_per_example_as_a_vector(tmp_path):
    """Scores `[B]` (a Keras user's squeezed logit) against 0/1 targets `[B]`, float or integer, are binary
    predictions: the metrics once took the arg-max across the batch (accuracy 0 or 1 for the batch)."""
    program = compile_text(tmp_path, """
    model vec {
        input  s: f32[B]
        input  x: f32[B, 2]
        target t: f32[B]
        target l: i64[B]
        z = (x |> dense(1))[:, 0]
        output z
        loss   binary_cross_entropy(z, t)
        optimizer sgd(lr = 0.1)
        metric accuracy(s, t)
        metric label_accuracy = accuracy(s, l)
        metric f1(s, t)
        metric cm = confusion_matrix(s, l)
    }""", name="vec.dl")
    rng = np.random.default_rng(6)
    t = (rng.random(N) < 0.4).astype(np.float32)
    s = (rng.standard_normal(N) + t - 0.5).astype(np.float32)
    got = epoch(program, {"s": s, "x": rng.standard_normal((N, 2)).astype(np.float32), "t": t, "l": t.astype(np.int64)})
    y, pred = t.astype(int), (s > 0).astype(int)
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, pred), abs=1e-6)
    assert got["label_accuracy"] == pytest.approx(sk.accuracy_score(y, pred), abs=1e-6)
    assert got["f1"] == pytest.approx(sk.f1_score(y, pred), abs=1e-6)
    assert got["cm"] == sk.confusion_matrix(y, pred).tolist()
    # a static build (`--dim B=16`) means the same: its [16] scores are not 16 classes
    static = compile_text(tmp_path, (tmp_path / "vec.dl").read_text(), name="vec.dl", dims={"B": BATCH})
    assert [o["shape"] for o in static.manifest["graphs"]["eval"]["outputs"] if o["name"] == "cm"] == [[2, 2]]


def test_cross_entropy_of_one_score_per_example_is_an_error(tmp_path):
    from dslc.diagnostics import DslcError

    with pytest.raises(DslcError) as e:
        compile_text(tmp_path, """
        model vec {
            input  x: f32[B, 3]
            target t: f32[B]
            z = (x |> dense(1))[:, 0]
            output z
            loss   cross_entropy(z, t)
            optimizer sgd(lr = 0.1)
        }""", name="vec.dl")
    assert "`cross_entropy` of logits `f32[B]` would take the softmax across the batch" in str(e.value)
    assert "binary_cross_entropy(logits, target)" in str(e.value)


def test_two_class_logits_and_probability_targets(tmp_path):
    """Two score columns default to the binary average (class 1), as scikit-learn does for 0/1 labels;
    one-hot or probability targets count their arg-max."""
    program = compile_text(tmp_path, """
    model two {
        input  s: f32[B, 2]
        target p: f32[B, 2]
        z = s |> dense(2)
        output z
        loss   cross_entropy(z, p)
        optimizer sgd(lr = 0.1)
        metric f1(s, p)
        metric macro = recall(s, p, average = "macro")
    }""", name="two.dl")
    rng = np.random.default_rng(2)
    s = rng.standard_normal((N, 2)).astype(np.float32)
    e = np.exp(3 * rng.standard_normal((N, 2)))
    p = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    got = epoch(program, {"s": s, "p": p})
    y, pred = p.argmax(1), s.argmax(1)
    assert got["f1"] == pytest.approx(sk.f1_score(y, pred), abs=1e-6)
    assert got["macro"] == pytest.approx(sk.recall_score(y, pred, average="macro"), abs=1e-6)


def test_fit_history_aggregates_from_counts(multiclass, tmp_path):
    """In `fit`, the epoch's F1 comes from the summed counts (a mean of batch F1s would differ)."""
    train, val = multiclass_data(3), multiclass_data(4)
    history = fit(multiclass, train, val, epochs=1, batch_size=BATCH, out_dir=tmp_path / "run")
    record = history[0]
    y, pred = val["y"], val["s"].argmax(1)
    assert record["val_f1_macro"] == pytest.approx(sk.f1_score(y, pred, average="macro"), abs=1e-6)
    assert record["f1_macro"] == pytest.approx(sk.f1_score(train["y"], train["s"].argmax(1), average="macro"),
                                               abs=1e-6)
    batch_means = np.mean([sk.f1_score(y[i:i + BATCH], pred[i:i + BATCH], average="macro", zero_division=0)
                           for i in range(0, N, BATCH)])
    assert abs(batch_means - record["val_f1_macro"]) > 1e-3
    assert record["val_cm"] == sk.confusion_matrix(y, pred, labels=range(5)).tolist()
    saved = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert saved[0]["val_cm"] == record["val_cm"]


def test_zero_division_and_absent_classes():
    c = np.array([[3, 0, 0], [2, 0, 0], [0, 0, 0]])
    # class 1 is never predicted (precision 0/0 -> 0), class 2 neither occurs nor is predicted (left out)
    assert from_confusion(c, "precision", "macro") == pytest.approx(sk.precision_score(
        [0, 0, 0, 1, 1], [0, 0, 0, 0, 0], average="macro", zero_division=0))
    assert from_confusion(np.zeros((2, 2)), "f1", "binary") == 0.0


@pytest.mark.parametrize("text, message", [
    ('f1(s, y, average = "mean")', "`f1` averages with one of `binary`, `macro`, `micro`, `weighted`, got `mean`"),
    ('precision(s, y, average = "binary")', "`precision` with `average = \"binary\"` needs two classes, got 5"),
    ("top_k_accuracy(s, y, k = 0)", "`k` must be at least 1, got 0"),
    ("2 * f1(s, y)", "a metric must be a floating-point scalar, got `f32[5, 5]`"),
])
def test_metric_errors(text, message, tmp_path):
    from dslc.diagnostics import DslcError

    with pytest.raises(DslcError) as e:
        compile_text(tmp_path, MULTICLASS.replace("metric f1_default = f1(s, y)", f"metric bad = {text}"),
                     name="bad.dl")
    assert message in str(e.value)


MULTI_LABEL = """
model tags {{
    input  s: f32[B, 3]
    target t: f32[B, 3]
    z = s |> dense(3)
    output z
    loss   binary_cross_entropy(z, t)
    optimizer sgd(lr = 0.1)
    metric {metrics}
}}
"""


def test_an_argmax_metric_on_multi_label_targets_warns_and_the_hinted_form_scores_each_label(tmp_path):
    """`accuracy(s, t)` with multi-hot `t` (the target of `binary_cross_entropy` over 3 columns) compared
    arg-maxes, silently: an example with labels {0, 2} and scores (3, -1, 2) counted as right. The
    compiler warns at the target, and the form its hint gives is Keras's `binary_accuracy` and
    scikit-learn's micro F1 over the labels."""
    argmax = compile_text(tmp_path, MULTI_LABEL.format(metrics="accuracy(s, t)\n    metric f1(s, t)"), name="a.dl")
    messages = [str(w) for w in argmax.warnings]
    assert len(messages) == 2 and all("scores its 3 columns as labels of their own" in m for m in messages)
    assert "`accuracy(reshape(s, 3, 1), reshape(t, 3, 1))`" in messages[0]
    hinted = compile_text(tmp_path, MULTI_LABEL.format(
        metrics="accuracy(reshape(s, 3, 1), reshape(t, 3, 1))\n    metric f1(reshape(s, 3, 1), reshape(t, 3, 1))"),
        name="b.dl")
    assert hinted.warnings == []
    rng = np.random.default_rng(2)
    t = (rng.random((N, 3)) < 0.5).astype(np.float32)
    s = (rng.standard_normal((N, 3)) + t - 0.5).astype(np.float32)
    got = epoch(hinted, {"s": s, "t": t})
    assert got["accuracy"] == pytest.approx(np.mean((s > 0) == (t > 0.5)), abs=1e-6)
    assert got["f1"] == pytest.approx(sk.f1_score(t.astype(int), (s > 0).astype(int), average="micro"), abs=1e-6)
    one_class = compile_text(tmp_path, MULTI_LABEL.replace("binary_cross_entropy", "cross_entropy").format(
        metrics="accuracy(s, t)"), name="c.dl")
    assert one_class.warnings == []  # one-hot or probability rows: the arg-max is the class
