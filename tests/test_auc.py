"""`auc` against exact areas and hand-computed thresholded ones.

Exact: the Mann-Whitney statistic computed here by sorting (ties count one half), on probabilities at
the centres of the threshold intervals, where the thresholds make no difference (the trapezoids of the
ROC curve are then exactly the Mann-Whitney count). Thresholded: three thresholds (-ε, 0.5, 1+ε) on four
examples, the ROC and PR areas worked out by hand in the comments. The evaluation graph runs in uneven
batches and the epoch value comes from the summed counts, as the manifest says (`"counts": "thresholds"`).
"""
from __future__ import annotations

import json
import math

import numpy as np
import onnxruntime as ort
import pytest
from helpers import compile_text

from dslc.diagnostics import DslcError, render
from dslc.runtime.metrics import EpochMetrics, from_thresholds, output_specs
from dslc.runtime.session import Evaluator

T = 200
BINARY = """
model bin {{
    input  s: f32[B]
    target y: f32[B]
    z = reshape(s, 1) |> dense(1)
    output z
    loss   binary_cross_entropy(squeeze(z), y)
    optimizer sgd(lr = 0.1)
    {metrics}
}}
"""


def mann_whitney(scores: np.ndarray, truth: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + P(equal) / 2, from the ranks of the sorted scores
    (tied scores share their mean rank)."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    pos = truth == 1
    p, n = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - p * (p + 1) / 2) / (p * n))


def on_bin_centres(rng, n: int, skill: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """0/1 targets and probabilities (i + 0.5) / (T - 1): each in its own threshold interval; only 40
    distinct values, so many ties across the classes."""
    y = (rng.random(n) < 0.35).astype(np.float32)
    bins = np.clip(np.round(rng.normal(20 + 6 * skill * y, 8)), 0, 39).astype(int) * 5
    return (bins + 0.5).astype(np.float32) / (T - 1), y


def evaluate(program, data: dict, batch: int) -> dict:
    spec = program.manifest["graphs"]["eval"]
    evaluator = Evaluator(program.graphs["eval"], spec)
    params = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in program.initial_values().items()}
    sums = EpochMetrics(output_specs([spec]))
    n = len(next(iter(data.values())))
    for start in range(0, n, batch):
        part = {k: v[start:start + batch] for k, v in data.items()}
        sums.add(evaluator.run(part, params), len(next(iter(part.values()))))
    return sums.values()


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    metrics = """
    metric auc(s, y, from_logits = false)
    metric logit_auc = auc(log(s / (1 - s)), y)
    metric sigmoid_auc = auc(sigmoid(log(s / (1 - s))), y)
    metric pr = auc(s, y, curve = "pr", from_logits = false)
    metric ap = auc(s, y, curve = "pr", summation_method = "step", from_logits = false)
    """
    return compile_text(tmp_path_factory.mktemp("auc"), BINARY.format(metrics=metrics), name="bin.dl")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_is_the_mann_whitney_statistic(binary, seed):
    """Logits (a sigmoid applied in the graph), a sigmoid output (read as probabilities) and
    probabilities with `from_logits = false` give the exact area, from any batching."""
    s, y = on_bin_centres(np.random.default_rng(seed), 301)
    exact = mann_whitney(s, y)
    assert 0.6 < exact < 0.95
    for batch in (301, 16, 7):
        got = evaluate(binary, {"s": s, "y": y}, batch)
        for name in ("auc", "logit_auc", "sigmoid_auc"):
            assert got[name] == pytest.approx(exact, abs=1e-12), (name, batch)


@pytest.mark.parametrize("seed", [0, 1])
def test_pr_step_is_scikit_learns_average_precision(binary, seed):
    """`curve = "pr", summation_method = "step"` on bin-centre data is `average_precision_score` exactly
    (and Keras's interpolated PR area another number)."""
    sk = pytest.importorskip("sklearn.metrics")
    s, y = on_bin_centres(np.random.default_rng(seed), 257)
    got = evaluate(binary, {"s": s, "y": y}, 40)
    assert got["ap"] == pytest.approx(sk.average_precision_score(y, s), abs=1e-12)
    assert abs(got["pr"] - got["ap"]) > 1e-4


def test_the_epoch_value_is_not_a_mean_of_batch_values(binary):
    """Batches sorted by class hold one class each (their own AUCs are undefined), and batches of mixed
    classes average to another number; the epoch value is the one-batch value all the same."""
    s, y = on_bin_centres(np.random.default_rng(7), 160)
    order = np.argsort(y, kind="stable")
    s, y = s[order], y[order]
    one_batch = evaluate(binary, {"s": s, "y": y}, 160)
    assert one_batch["auc"] == pytest.approx(mann_whitney(s, y), abs=1e-12)
    by_class = evaluate(binary, {"s": s, "y": y}, 8)
    assert by_class["auc"] == one_batch["auc"] and by_class["pr"] == one_batch["pr"]
    shuffled = np.random.default_rng(1).permutation(160)
    batch_aucs = [mann_whitney(s[shuffled][i:i + 20], y[shuffled][i:i + 20]) for i in range(0, 160, 20)]
    assert abs(np.mean(batch_aucs) - one_batch["auc"]) > 1e-3
    assert evaluate(binary, {"s": s[shuffled], "y": y[shuffled]}, 20)["auc"] == one_batch["auc"]


HAND = """
    metric roc = auc(s, y, num_thresholds = 3, from_logits = false)
    metric pr = auc(s, y, curve = "pr", num_thresholds = 3, from_logits = false)
    metric pr_min = auc(s, y, curve = "pr", num_thresholds = 3, summation_method = "minoring", from_logits = false)
    metric pr_max = auc(s, y, curve = "pr", num_thresholds = 3, summation_method = "majoring", from_logits = false)
    metric roc_min = auc(s, y, num_thresholds = 3, summation_method = "minoring", from_logits = false)
"""


def test_three_thresholds_by_hand(tmp_path):
    """p = 0.1, 0.4, 0.6, 0.9 with classes 0, 1, 0, 1; thresholds -ε, 0.5, 1+ε.
    tp = 2, 1, 0; fp = 2, 1, 0 (fn = 0, 1, 2; tn = 0, 1, 2): tpr = fpr = 1, 0.5, 0.
    ROC trapezoids: 0.5·(1 + 0.5)/2 + 0.5·(0.5 + 0)/2 = 0.5 (the exact area is 3/4: the thresholds
    matter here); minoring 0.5·0.5 + 0.5·0 = 0.25.
    PR: recall 1, 0.5, 0; precision 0.5, 0.5, 0 (0/0 is 0, as Keras's); minoring 0.5·0.5 + 0.5·0 = 0.25,
    majoring 0.5·0.5 + 0.5·0.5 = 0.5. Interpolation (Davis & Goadrich): P = tp + fp = 4, 2, 0; both
    intervals have slope Δtp/ΔP = 1/2 and intercept tp_B - slope·P_B = 0, so each adds 1/2·Δtp = 1/2;
    the sum 1 over 2 positives is 0.5."""
    program = compile_text(tmp_path, BINARY.format(metrics=HAND), name="hand.dl")
    data = {"s": np.array([0.1, 0.4, 0.6, 0.9], np.float32), "y": np.array([0, 1, 0, 1], np.float32)}
    got = evaluate(program, data, 4)
    assert got == pytest.approx({"loss": got["loss"], "roc": 0.5, "pr": 0.5, "pr_min": 0.25, "pr_max": 0.5,
                                 "roc_min": 0.25}, abs=1e-12)
    assert mann_whitney(data["s"], data["y"]) == 0.75
    counts = Evaluator(program.graphs["eval"], program.manifest["graphs"]["eval"]).run(
        data, {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in program.initial_values().items()})["roc"]
    # [K = 1, T = 3, true class, predicted class]
    assert counts.tolist() == [[[[0, 2], [0, 2]], [[1, 1], [1, 1]], [[2, 0], [2, 0]]]]


def test_pr_interpolation_with_a_curved_segment():
    """A segment whose precision changes: tp 4 -> 1, P = tp + fp 5 -> 2: slope 1, intercept
    1 - 1·2 = -1; its area is slope · (Δtp + intercept·ln(P_A / P_B)) / positives = (3 - ln 2.5) / 4."""
    c = np.zeros((1, 3, 2, 2))
    tp, fp = [4, 1, 0], [1, 1, 0]
    for j in range(3):
        c[0, j] = [[1 - fp[j], fp[j]], [4 - tp[j], tp[j]]]
    second = 1 / 2 * (1 + 0) / 4  # tp 1 -> 0, P 2 -> 0: slope 1/2, intercept 0
    assert from_thresholds(c, "pr", "interpolation", "macro") == pytest.approx((3 - math.log(2.5)) / 4 + second,
                                                                                abs=1e-12)


def test_undefined_areas_are_nan():
    c = np.zeros((1, 3, 2, 2))
    c[0, :, 0, :] = [[0, 5], [2, 3], [5, 0]]  # negatives only
    assert math.isnan(from_thresholds(c, "roc", "interpolation", "macro"))
    assert math.isnan(from_thresholds(c, "pr", "interpolation", "macro"))
    positives_only = c[:, :, ::-1, :]
    assert math.isnan(from_thresholds(positives_only, "roc", "interpolation", "macro"))
    # recall 1, 0.6, 0; precision 1, 1 and 0/0 = 0 at the last threshold: 0.4·1 + 0.6·0
    assert from_thresholds(positives_only, "pr", "minoring", "macro") == pytest.approx(0.4, abs=1e-12)


def test_the_manifest_entry(binary):
    (entry,) = [t for t in binary.manifest["graphs"]["eval"]["outputs"] if t["name"] == "pr"]
    assert entry == {"name": "pr", "dtype": "float32", "shape": [1, T, 2, 2], "reduce": "sum",
                     "counts": "thresholds", "value": "auc", "curve": "pr", "summation_method": "interpolation",
                     "average": "macro"}
    train = {t["name"]: t for t in binary.manifest["graphs"]["train"]["outputs"]}
    assert train["auc"]["counts"] == "thresholds"
    json.dumps(binary.manifest)


CLASSES = """
model multi {{
    input  s: f32[B, 4]
    target y: {target}
    z = s |> dense(4)
    output z
    loss   {loss}
    optimizer sgd(lr = 0.1)
    {metrics}
}}
"""


def class_scores(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels of 4 classes (class 3 never occurs) and per-class probabilities on the bin centres."""
    y = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    bins = np.clip(np.round(rng.normal(15, 7, (n, 4))), 0, 39).astype(int)
    bins[np.arange(n), y] = np.clip(bins[np.arange(n), y] + rng.integers(0, 12, n), 0, 39)
    return ((bins * 5 + 0.5) / (T - 1)).astype(np.float32), y


def test_one_class_against_the_rest_matches_scikit_learn(tmp_path):
    """Integer labels: each class against the rest; macro leaves out the class that never occurs (its ROC
    is undefined), weighted weighs by positives, micro is the area of all (example, class) pairs."""
    sk = pytest.importorskip("sklearn.metrics")
    metrics = "\n    ".join(f'metric {a} = auc(s, y, from_logits = false, average = "{a}")'
                           for a in ("macro", "weighted", "micro"))
    program = compile_text(tmp_path, CLASSES.format(target="i64[B]", loss="cross_entropy(z, y)", metrics=metrics),
                           name="multi.dl")
    p, y = class_scores(np.random.default_rng(3), 250)
    got = evaluate(program, {"s": p, "y": y}, 32)
    per_class = [sk.roc_auc_score(y == k, p[:, k]) for k in range(3)]
    assert per_class == pytest.approx([mann_whitney(p[:, k], (y == k).astype(int)) for k in range(3)], abs=1e-12)
    assert got["macro"] == pytest.approx(np.mean(per_class), abs=1e-12)
    assert got["weighted"] == pytest.approx(np.average(per_class, weights=np.bincount(y)), abs=1e-12)
    one_hot = np.eye(4)[y]
    assert got["micro"] == pytest.approx(sk.roc_auc_score(one_hot.ravel(), p.ravel()), abs=1e-12)
    assert len({round(got[a], 6) for a in ("macro", "weighted", "micro")}) == 3


def test_class_logits_take_a_softmax(tmp_path):
    """Class logits and their `softmax` output give the same counts; probabilities computed outside agree
    up to the thresholds that float rounding puts on the other side."""
    metrics = "metric logits = auc(s, y, from_logits = true)\n    metric probs = auc(softmax(s), y)\n    metric given = auc(q, y, from_logits = false)"
    text = CLASSES.format(target="i64[B]", loss="cross_entropy(z, y)", metrics=metrics)
    program = compile_text(tmp_path, text.replace("target y", "input  q: f32[B, 4]\n    target y"), name="logits.dl")
    rng = np.random.default_rng(4)
    y = rng.choice(4, 200)
    s = (rng.normal(0, 1.5, (200, 4)) + np.eye(4)[y]).astype(np.float32)
    q = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    got = evaluate(program, {"s": s, "q": q, "y": y}, 50)
    assert got["logits"] == got["probs"]
    assert got["given"] == pytest.approx(got["logits"], abs=1e-3)
    assert 0.6 < got["logits"] < 0.9


def test_multi_label_matches_scikit_learn(tmp_path):
    """0/1 targets of 4 columns scored by `binary_cross_entropy`: each label on its own (Keras's
    `multi_label=True`), whether the scores are logits, a sigmoid output or said with `multi_label`."""
    sk = pytest.importorskip("sklearn.metrics")
    metrics = ("metric labels = auc(log(s / (1 - s)), y)\n    metric sigmoids = auc(sigmoid(log(s / (1 - s))), y)\n"
               "    metric said = auc(s, y, multi_label = true, from_logits = false)\n"
               '    metric micro = auc(s, y, multi_label = true, from_logits = false, average = "micro")\n'
               '    metric pr = auc(s, y, multi_label = true, from_logits = false, curve = "pr")')
    program = compile_text(tmp_path, CLASSES.format(target="f32[B, 4]", loss="binary_cross_entropy(z, y)",
                                                    metrics=metrics), name="tags.dl")
    rng = np.random.default_rng(5)
    t = (rng.random((220, 4)) < [0.5, 0.3, 0.2, 0.1]).astype(np.float32)
    bins = np.clip(np.round(rng.normal(15 + 8 * t, 7)), 0, 39).astype(int)
    p = ((bins * 5 + 0.5) / (T - 1)).astype(np.float32)
    got = evaluate(program, {"s": p, "y": t}, 64)
    expected = sk.roc_auc_score(t, p, average="macro")
    assert got["labels"] == got["sigmoids"] == got["said"] == pytest.approx(expected, abs=1e-12)
    assert got["micro"] == pytest.approx(sk.roc_auc_score(t, p, average="micro"), abs=1e-12)
    assert 0 < got["pr"] < 1 and got["pr"] != got["said"]


@pytest.mark.parametrize("text, message", [
    ('auc(s, y, curve = "ROC")', "`auc` has curves `roc`, `pr`, got `ROC`"),
    ('auc(s, y, summation_method = "trapezoid")',
     "`auc` sums with one of `interpolation`, `minoring`, `majoring`, `step`, got `trapezoid`"),
    ('auc(s, y, average = "binary")', "`auc` averages with one of `macro`, `weighted`, `micro`, got `binary`"),
    ("auc(s, y, num_thresholds = 2)", "`num_thresholds` must lie in 3..10000, got 2"),
    ("auc(s, y, multi_label = true)", "`auc` with `multi_label = true` needs 0/1 targets of the scores' shape"),
    ("auc(s[:, 0:1], y)", "`auc` of scores `f32[B, 1]` and targets `i64[B]`: one score per example needs a "
                          "target of its shape"),
    ("auc(s, s[:, 0:2])", "`auc` of scores `f32[B, 4]` and targets `f32[B, 2]`: shapes do not fit"),
    ("auc(y, y)", "`auc` needs floating-point scores with a batch axis, got `i64[B]`"),
])
def test_errors_point_at_the_argument(text, message, tmp_path):
    """Each error at its argument, with what to write instead."""
    with pytest.raises(DslcError) as e:
        compile_text(tmp_path, CLASSES.format(target="i64[B]", loss="cross_entropy(z, y)", metrics=f"metric bad = {text}"),
                     name="bad.dl")
    assert message in str(e.value)
    assert "bad.dl:8:" in str(e.value)


def test_the_wrong_reading_of_scores_warns(tmp_path):
    """Explicit `from_logits = true` on a sigmoid output squashes twice; one-hot reading of targets that
    `binary_cross_entropy` scores as labels is warned about after the statements."""
    twice = compile_text(tmp_path, BINARY.format(metrics="metric auc(sigmoid(s), y, from_logits = true)"),
                         name="twice.dl")
    (w,) = [render(w) for w in twice.warnings if "auc" in w.message]
    assert "applies the sigmoid itself" in w and "hint: pass the logits" in w and "twice.dl:8:" in w
    late = CLASSES.format(target="f32[B, 4]", loss="binary_cross_entropy(z, y)", metrics="metric auc(z, y)")
    late = late.replace("    loss   binary_cross_entropy(z, y)\n", "").replace(
        "metric auc(z, y)", "metric auc(z, y)\n    loss   binary_cross_entropy(z, y)")
    program = compile_text(tmp_path, late, name="late.dl")
    (w,) = [render(w) for w in program.warnings if "auc" in w.message]
    assert "`auc` reads one class per row of `y`" in w and "`multi_label = true`" in w
    # scores fed as data may be either: said, or warned about
    fed = compile_text(tmp_path, BINARY.format(metrics="metric auc(s, y)\n    metric said = auc(s, y, from_logits = true)"),
                       name="fed.dl")
    (w,) = [render(w) for w in fed.warnings if "auc" in w.message]
    assert "fed.dl:8:16: warning: `auc` reads `s` as logits and applies the sigmoid" in w
    assert "hint: say which: `from_logits = false` for probabilities" in w


LEARNER = """
model learner {
    input  x: f32[B, 3]
    target y: f32[B]
    logit = squeeze(x |> dense(1))
    output p = sigmoid(logit)
    loss      binary_cross_entropy(logit, y)
    optimizer sgd(lr = 0.5)
    metric    auc(logit, y)
    metric    pr = auc(p, y, curve = "pr")
    callback  early_stopping(monitor = "val_auc", patience = 20, restore_best = true)
}
"""


def learner_data(seed: int, n: int) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    y = (x @ [1.0, -1.0, 0.5] + rng.normal(0, 1.5, n) > 0.8).astype(np.float32)
    return {"x": x, "y": y}


def test_fit_logs_auc_and_early_stopping_keeps_the_best_val_auc(tmp_path, monkeypatch, capsys):
    """The history has `auc`, `pr` and their `val_` values; the model's callback monitors `val_auc` with
    mode "max" (from the name), so the best epoch is the first highest `val_auc`; `program.evaluate` and
    `dslc evaluate` of the restored weights give that epoch's value; with 200 thresholds the value is
    within 5e-3 of scikit-learn's exact area of the predictions."""
    sk = pytest.importorskip("sklearn.metrics")
    import dslc
    from dslc import cli
    from dslc.runtime.train import fit

    (tmp_path / "learner.dl").write_text(LEARNER)
    program = dslc.compile(tmp_path / "learner.dl")
    assert program.manifest["early_stopping"]["monitor"] == "val_auc"
    train, val = learner_data(0, 300), learner_data(1, 97)
    history = fit(program, train, val, epochs=6, batch_size=32, out_dir=tmp_path / "run")
    assert {"auc", "pr", "val_auc", "val_pr"} <= set(history[0])
    val_aucs = [r["val_auc"] for r in history]
    assert len(set(val_aucs)) > 1, "the weights must move for this test to show the mode"
    assert history.best_epoch == int(np.argmax(val_aucs)) + 1
    got = program.evaluate(val, tmp_path / "run", batch_size=13)
    assert got["auc"] == pytest.approx(max(val_aucs), abs=1e-12)
    p = program.predict(val, tmp_path / "run")["p"]
    assert got["auc"] == pytest.approx(sk.roc_auc_score(val["y"], p), abs=5e-3)
    assert got["pr"] == pytest.approx(sk.average_precision_score(val["y"], p), abs=5e-2)
    monkeypatch.chdir(tmp_path)
    np.savez("val.npz", **val)
    assert cli.main(["evaluate", "learner.dl", "--weights", "run", "--data", "val.npz", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert printed["auc"] == pytest.approx(got["auc"], abs=1e-12)


def test_one_class_data_gives_nan_and_says_why_once(tmp_path, monkeypatch, capsys):
    """Validation data without a positive: `val_auc` is NaN (scikit-learn refuses such data, Keras says 0),
    training says why once, early stopping never counts it as an improvement, and `dslc evaluate` warns."""
    import dslc
    from dslc import cli
    from dslc.runtime.train import Reporter, fit

    (tmp_path / "learner.dl").write_text(LEARNER.replace("    callback  early_stopping(monitor = \"val_auc\", "
                                                         "patience = 20, restore_best = true)\n", ""))
    program = dslc.compile(tmp_path / "learner.dl")
    train, val = learner_data(0, 120), learner_data(1, 200)
    val = {k: v[val["y"] == 0] for k, v in val.items()}
    warned = []
    reporter = Reporter()
    reporter.warn = warned.append
    history = fit(program, train, val, epochs=4, batch_size=32, out_dir=tmp_path / "run", reporter=reporter,
                  early_stopping="monitor=val_auc,patience=2")
    assert all(math.isnan(r["val_auc"]) and math.isnan(r["val_pr"]) for r in history)
    assert not math.isnan(history[-1]["auc"])
    assert warned == [
        "`val_auc` is NaN from epoch 1: the validation data holds examples of one class only, and the area under a "
        "curve needs both (a precision-recall curve, a positive); NaN never counts as an improvement (early "
        "stopping, reduce_lr_on_plateau)", warned[1]]
    assert warned[1].startswith("`val_pr` is NaN from epoch 1")
    # as Keras's: no epoch is ever better, so patience 2 stops after the second (warned once over both)
    assert len(history) == 2 and history.stopped_epoch == 2 and history.best_epoch is None
    monkeypatch.chdir(tmp_path)
    np.savez("val.npz", **val)
    assert cli.main(["evaluate", "learner.dl", "--weights", "run", "--data", "val.npz"]) == 0
    captured = capsys.readouterr()
    assert "warning: `auc` is NaN: the data holds examples of one class only" in captured.err
    assert "  auc   nan" in captured.out


KERAS_SETTINGS = {  # dslc's settings -> keras.metrics.AUC's
    "roc": ("", {}),
    "roc50min": (", num_thresholds = 50, summation_method = \"minoring\"", {"num_thresholds": 50, "summation_method": "minoring"}),
    "roc_major": (', summation_method = "majoring"', {"summation_method": "majoring"}),
    "pr": (', curve = "pr"', {"curve": "PR"}),
    "pr_min": (', curve = "pr", summation_method = "minoring"', {"curve": "PR", "summation_method": "minoring"}),
    "pr30": (', curve = "pr", num_thresholds = 30', {"curve": "PR", "num_thresholds": 30}),
}


def test_keras_auc_gives_the_same_numbers(tmp_path, monkeypatch):
    """Logits against `keras.metrics.AUC(from_logits=True)` (torch backend), one score per example and
    4 labels (`multi_label=True`: the macro mean; `False`: the columns flattened, dslc's micro), every
    curve and summation, fed in uneven batches to both."""
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    metrics = "\n    ".join(
        [f"metric one_{k} = auc(s[:, 0], y[:, 0]{a})" for k, (a, _) in KERAS_SETTINGS.items()]
        + [f"metric labels_{k} = auc(s, y, multi_label = true{a})" for k, (a, _) in KERAS_SETTINGS.items()]
        + [f'metric flat_{k} = auc(s, y, multi_label = true, average = "micro"{a})' for k, (a, _) in KERAS_SETTINGS.items()])
    program = compile_text(tmp_path, CLASSES.format(target="f32[B, 4]", loss="binary_cross_entropy(z, y)",
                                                    metrics=metrics), name="keras.dl")
    rng = np.random.default_rng(11)
    y = (rng.random((333, 4)) < [0.5, 0.3, 0.2, 0.1]).astype(np.float32)
    s = (rng.normal(0, 2, (333, 4)) + 1.5 * y).astype(np.float32)
    got = evaluate(program, {"s": s, "y": y}, 50)
    for key, (_, settings) in KERAS_SETTINGS.items():
        for name, labels, multi in (("one", slice(0, 1), False), ("labels", slice(0, 4), True),
                                    ("flat", slice(0, 4), False)):
            reference = keras.metrics.AUC(from_logits=True, multi_label=multi, **settings)
            for start in range(0, 333, 50):
                reference.update_state(y[start:start + 50, labels], s[start:start + 50, labels])
            assert got[f"{name}_{key}"] == pytest.approx(float(reference.result()), abs=2e-6), f"{name}_{key}"


def test_probabilities_fed_as_data_are_checked(binary):
    """`from_logits = false` on an input: values outside [0, 1] are a data error naming the column and row,
    not a silent clip."""
    from dslc.diagnostics import DataError

    s, y = on_bin_centres(np.random.default_rng(0), 20)
    s[7] = 1.5
    with pytest.raises(DataError) as e:
        binary.evaluate({"s": s, "y": y}, {k: v for k, v in binary.initial_values().items()
                                           if not k.startswith("opt.")})
    assert "`s`" in str(e.value) and "1.5" in str(e.value)


@pytest.mark.parametrize("statement, hint", [
    ("metric e = 1 - auc(z, y)", "hint: `auc` is computed from counts summed over an epoch, after the graph has run: "
                                 "give it a `metric` of its own (`metric name = auc(...)`), not inside an expression"),
    ("loss auc(z, y)", "hint: `auc` is computed from counts summed over an epoch, after the graph has run: train "
                       "with a loss such as `cross_entropy` and report it with `metric`"),
])
def test_an_area_inside_an_expression_or_as_the_loss_says_why_not(statement, hint, tmp_path):
    """Not the generic "reduce it with `mean(...)`": a mean of the counts would be no AUC."""
    text = CLASSES.format(target="i64[B]", loss="cross_entropy(z, y)", metrics="")
    text = text.replace("    loss   cross_entropy(z, y)", f"    {statement}" if statement.startswith("loss") else
                        "    loss   cross_entropy(z, y)\n    " + statement)
    with pytest.raises(DslcError) as e:
        compile_text(tmp_path, text, name="expr.dl")
    shown = render(e.value.diagnostics[0])
    assert "must be a floating-point scalar, got `f32[4, 200, 2, 2]`" in shown and hint in shown
