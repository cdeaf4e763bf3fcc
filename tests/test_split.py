"""Split training graphs (`dslc build --split`): the gradient graph followed by the update graph is the
fused training step, and gradient accumulation over micro-batches is one step on the whole batch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from dslc.compiler import compile_file
from dslc.runtime.checkpoint import load_checkpoint
from dslc.runtime.train import fit
from helpers import compile_text, make_runner

ROOT = Path(__file__).resolve().parent.parent

# measured: bit-identical for every model but xor (sgd momentum: 1.7e-7) and the transformer (adam:
# 7e-6): `fuse` folds the optimizer's first operation on a gradient (v = μ·v + g; Adam's √(1-β2)·g)
# into the Gemm that computes it, which the cut puts in the other graph — one rounding apart per
# element, which Adam's division by √v magnifies where a gradient is tiny
MODELS = ["models/xor.dl", "models/mlp.dl", "examples/digits/digits.dl", "models/cnn_digits.dl", "models/gan.dl"]


def random_data(spec: dict, rows: int, rng) -> dict[str, np.ndarray]:
    data = {}
    for t in spec["inputs"]:
        shape = [rows if isinstance(d, str) else d for d in t["shape"]]
        if "classes" in t:
            data[t["name"]] = rng.integers(0, t["classes"], shape).astype(t["dtype"])
        elif "range" in t:
            data[t["name"]] = rng.uniform(*t["range"], shape).astype(t["dtype"])
        else:
            data[t["name"]] = rng.standard_normal(shape).astype(t["dtype"])
    return data


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    return float(np.max(np.abs(a.astype(np.float64) - b))) / scale if scale else float(np.max(np.abs(b), initial=0))


@pytest.fixture(scope="module", params=MODELS, ids=lambda p: Path(p).stem)
def split_program(request):
    return compile_file(ROOT / request.param, split=True)


def test_grad_then_apply_is_the_fused_step(split_program):
    program = split_program
    graphs = program.manifest["graphs"]
    values = program.initial_values()
    rng = np.random.default_rng(0)
    for key in [k for k in graphs if k.split(".")[0] == "train"]:
        suffix = key[len("train"):]
        feeds = {**values, **random_data(graphs[key], 8, rng)}
        for h in graphs[key]["hyper"]:
            feeds[h["name"]] = np.array(12345 if h["kind"] == "seed" else h["default"], h["dtype"])
        run = lambda k, f: make_runner(program.graphs[k])(  # noqa: E731
            {i.name: f[i.name] for i in onnx.load_from_string(program.graphs[k]).graph.input})
        fused = run(key, feeds)
        grads = run("grad" + suffix, feeds)
        applied = run("apply" + suffix, {**feeds, **grads})
        split = {**grads, **applied}
        assert set(fused) <= set(split)
        for name, value in fused.items():
            assert relative_difference(value, split[name]) <= 1e-6, (key, name)


def test_split_graphs_are_driven_by_the_manifest_alone(split_program):
    program = split_program
    graphs = program.manifest["graphs"]
    for key in [k for k in graphs if k.split(".")[0] in ("grad", "apply")]:
        entry, proto = graphs[key], onnx.load_from_string(program.graphs[key])
        assert entry["file"] == f"{program.name}.{key}.onnx"
        assert proto.graph.name == f"{program.name}.{key}"
        inputs = {i.name for i in proto.graph.input}
        assert not inputs & {t.name for t in proto.graph.initializer}  # every input is fed
        declared = [t["name"] for group in ("inputs", "hyper", "params", "frozen", "buffers", "grads", "state")
                    for t in entry.get(group, []) if not (key.startswith("grad") and group == "grads")]
        assert sorted(declared) == sorted(i.name for i in proto.graph.input)
        produced = [t["name"] for t in entry.get("outputs", [])] + [t["next"] for g in ("params", "buffers", "state")
                                                                   for t in entry.get(g, []) if "next" in t]
        if key.startswith("grad"):
            produced += [t["name"] for t in entry["grads"]]
            assert [t["name"] for t in entry["grads"]] == [p["name"] + ".grad" for p in entry["params"]]
            objective = key[len("grad"):]
            assert [t["name"] for t in entry["grads"]] == [t["name"] for t in graphs["apply" + objective]["grads"]]
        assert sorted(produced) == sorted(o.name for o in proto.graph.output)


ACCUMULATE_MODEL = """
model acc {
    input  x: f32[B, 6]
    target y: i64[B]
    h = x |> dense(16) |> tanh |> dense(16) |> relu
    output logits = h |> dense(3)
    loss      cross_entropy(logits, y) + 1e-3 * l2(weights)
    optimizer OPTIMIZER
    metric    accuracy(logits, y)
    metric    f1(logits, y)
    metric    confusion_matrix(logits, y)
    metric    auc(logits, y)
}
"""


@pytest.mark.parametrize("optimizer", [
    "sgd(lr = 0.1, momentum = 0.9, nesterov = true)", "adam(lr = 0.01)",
    # the update graph clips the mean gradient of the whole batch, as the fused step does
    "adamw(lr = 0.01, clip_norm = 0.3, schedule = linear_warmup(3) then cosine(20))"])
def test_accumulation_equals_one_step_on_the_whole_batch(tmp_path, optimizer):
    program = compile_text(tmp_path, ACCUMULATE_MODEL.replace("OPTIMIZER", optimizer), split=True)
    rng = np.random.default_rng(1)
    data = {"x": rng.standard_normal((53, 6)).astype(np.float32), "y": rng.integers(0, 3, 53)}
    # batches of 12: 4 full ones and a short last one of 5; 5 micro-batches: 3,3,2,2,2 and 1,1,1,1,1
    fused = fit(program, data, epochs=3, batch_size=12, out_dir=tmp_path / "fused")
    accumulated = fit(program, data, epochs=3, batch_size=12, out_dir=tmp_path / "acc", accumulate=5)
    a, b = (load_checkpoint(tmp_path / run) for run in ("fused", "acc"))
    assert len(a.params) == 6
    for name in a.params:  # measured 2.5e-7 (summation order: float64 sums of float32 micro-batch gradients)
        assert relative_difference(a.params[name], b.params[name]) < 2e-6, name
    for key in ("loss", "accuracy", "f1"):
        assert accumulated[-1][key] == pytest.approx(fused[-1][key], rel=1e-5)
    assert accumulated[-1]["confusion_matrix"] == fused[-1]["confusion_matrix"]  # summed, not averaged
    # auc from the summed [3, 200, 2, 2] threshold counts: a probability within rounding of a threshold may
    # fall on its other side (a count of 1 moves the area by ~1e-4 here)
    assert accumulated[-1]["auc"] == pytest.approx(fused[-1]["auc"], abs=1e-3)
    assert 0.5 < fused[-1]["auc"] < 1
    assert np.sum(fused[-1]["confusion_matrix"]) == 53
    assert fused[-1]["loss"] < fused[0]["loss"]



def test_more_micro_batches_than_rows_warns(tmp_path):
    """`--accumulate 8` on batches of 4 rows: 4 micro-batches are empty and skipped (the step is still the
    batch's), which the run says rather than silently computing fewer than asked."""
    from dslc.runtime.train import Reporter

    class Warnings(Reporter):
        def __init__(self):
            super().__init__()
            self.messages = []

        def warn(self, message):
            self.messages.append(message)

    program = compile_text(tmp_path, ACCUMULATE_MODEL.replace("OPTIMIZER", "adam(lr = 0.01)"), split=True)
    rng = np.random.default_rng(2)
    data = {"x": rng.standard_normal((8, 6)).astype(np.float32), "y": rng.integers(0, 3, 8)}
    reporter = Warnings()
    fit(program, data, epochs=1, batch_size=4, out_dir=tmp_path / "run", accumulate=8, reporter=reporter)
    assert reporter.messages == ["8 micro-batches per step (8 accumulated) is more than a batch's 4 rows: 4 of them "
                                 "are empty and skipped, the others hold one row each"]
    fit(program, data, epochs=1, batch_size=4, out_dir=tmp_path / "fine", accumulate=4, reporter=reporter)
    assert len(reporter.messages) == 1

def test_training_without_split_graphs_is_refused(tmp_path):
    from dslc.diagnostics import DataError

    program = compile_text(tmp_path, ACCUMULATE_MODEL.replace("OPTIMIZER", "sgd(lr = 0.1)"))
    data = {"x": np.zeros((4, 6), np.float32), "y": np.zeros(4, np.int64)}
    with pytest.raises(DataError, match="split training graphs"):
        fit(program, data, epochs=1, batch_size=4, out_dir=tmp_path / "run", accumulate=2)


def test_objectives_accumulate_like_their_fused_steps(tmp_path):
    program = compile_file(ROOT / "models/gan.dl", split=True)
    rng = np.random.default_rng(5)
    data = random_data(program.manifest["graphs"]["train.discriminator"], 37, rng)
    fused = fit(program, data, epochs=2, batch_size=16, out_dir=tmp_path / "fused")
    accumulated = fit(program, data, epochs=2, batch_size=16, out_dir=tmp_path / "acc", accumulate=3)
    a, b = (load_checkpoint(tmp_path / run) for run in ("fused", "acc"))
    for name in a.params:  # measured 2e-7
        assert relative_difference(a.params[name], b.params[name]) < 2e-6, name
    assert set(accumulated[-1]) == set(fused[-1])
    assert accumulated[-1]["generator.loss"] == pytest.approx(fused[-1]["generator.loss"], rel=1e-5)


def test_build_split_on_the_command_line(tmp_path, capsys):
    from dslc.cli import main

    assert main(["build", str(ROOT / "models/xor.dl"), "--split", "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"xor.{k}.onnx" for k in ("infer", "predict", "init", "train", "eval", "grad", "apply")] + ["xor.dslc.json"])
    assert main(["build", str(ROOT / "models/xor.dl"), "-o", str(tmp_path / "plain")]) == 0
    assert not list((tmp_path / "plain").glob("*.grad.onnx"))
