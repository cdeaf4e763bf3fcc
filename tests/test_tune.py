"""`--tune` (dslc/runtime/tune.py, dslc/tune_cache.py): every formulation of a shape computes the same
filter gradient; the tuner writes the formulation it is told is fastest into the graphs and the manifest;
a second tuned build measures nothing; misuse is a usage error. Timing is injected (`TuneSetting.measure`)
except in one test that times LeNet's two layers for real at batch 2."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from dslc.bench_timing import Timing
from dslc.cli import main
from dslc.compile_cache import compile_cached
from dslc.compiler import compile_file
from dslc.ir.types import TensorType
from dslc.ops.conv_math import conv_weight_grad_numpy
from dslc.ops.registry import get_op
from dslc.runtime import tune as tuner
from dslc.runtime.tune import TuneSetting

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "models" / "lenet.dl"

# (x shape, g shape, attrs): a one-channel first layer (three candidates), strided/dilated, grouped, 1-D
SHAPES = [
    ((3, 1, 8, 6), (3, 4, 8, 6), {"kernel": (3, 3), "pads": (1, 1, 1, 1)}),
    ((2, 1, 9, 7), (2, 3, 6, 3), {"kernel": (5, 3), "pads": (1, 0, 0, 0), "dilations": (1, 2)}),
    ((2, 3, 9, 8), (2, 4, 4, 7), {"kernel": (3, 3), "strides": (2, 1), "dilations": (1, 1), "pads": (0, 0, 0, 1)}),
    ((2, 4, 7, 6), (2, 6, 5, 4), {"kernel": (3, 3), "group": 2}),
    ((3, 2, 11), (3, 5, 5), {"kernel": (3,), "strides": (2,), "pads": (1, 0)}),
]


def formulations_in(model: onnx.ModelProto) -> list[str]:
    """The filter-gradient formulation of each such Conv of a graph, by what feeds it: a constant kernel
    (the one-hot taps) is `columns`, row bands concatenated are `bands`, a transposed gradient as the
    kernel is `swapped`. A layer's forward Conv (a parameter, or its phase filters, as kernel) is none of
    them: only the Convs a `conv_weight_grad` lowered to count."""
    constants = {i.name for i in model.graph.initializer}
    producer = {out: n.op_type for n in model.graph.node for out in n.output}
    found = []
    for n in model.graph.node:
        if n.op_type != "Conv" or not n.output[0].startswith("conv_weight_grad"):
            continue
        if n.input[1] in constants:
            found.append("columns")
        elif producer.get(n.input[0]) == "Concat":
            found.append("bands")
        elif producer.get(n.input[1]) in ("Transpose", "Reshape"):
            found.append("swapped")
    return sorted(found)


WEIGHT_GRAD = get_op("conv_weight_grad")


@pytest.mark.parametrize("x_shape, g_shape, attrs", SHAPES, ids=[str(s[0]) for s in SHAPES])
def test_every_formulation_gives_the_same_gradient(x_shape, g_shape, attrs):
    rng = np.random.default_rng(1)
    types = [TensorType("float32", x_shape), TensorType("float32", g_shape)]
    attrs = WEIGHT_GRAD.complete_attrs(attrs)
    options = WEIGHT_GRAD.formulations(*types, **attrs)
    assert len(options.candidates) >= 2 and options.rule in options.candidates
    if x_shape[1] == 1 and len(x_shape) == 4 and g_shape[2] % 2 == 0:
        assert "bands" in options.candidates
    x, g = rng.standard_normal(x_shape), rng.standard_normal(g_shape)
    expected = conv_weight_grad_numpy(x, g, **attrs)
    for name in options.candidates:
        model, _ = tuner._probe("conv_weight_grad", types, attrs, name)
        assert formulations_in(onnx.load_from_string(model)) == [name]
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        (dw,) = session.run(None, {"in0": x.astype(np.float32), "in1": g.astype(np.float32)})
        np.testing.assert_allclose(dw, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max(), err_msg=name)


class Timer:
    """An injected `measure`: the medians it is told, and the calls it got. `probe`: the formulation
    fastest alone (one for all shapes, or a list, one per probe in order); `step`: whether the training
    step is fastest with the probes' choices (`"probe"`) or the rule's (`"rule"`)."""

    def __init__(self, probe: str | list[str], step: str = "probe"):
        self.probe, self.step = probe, step
        self.calls: list[tuple[list[str], int]] = []

    def __call__(self, models, threads):
        self.calls.append((list(models), threads))
        if "rule" in models:  # the step check: the rule's step, and one with each probe's choice
            return {name: timing(1.0 if (name == "rule") == (self.step == "rule") else 2.0) for name in models}
        pick = self.probe[len(self.calls) - 1] if isinstance(self.probe, list) else self.probe
        return {name: timing(1.0 if name == pick else 2.0 + k) for k, name in enumerate(models)}


def timing(ms: float, contended_blocks: int = 0) -> Timing:
    return Timing(ms, ms, ms, blocks=5, contended_blocks=contended_blocks)


def train_graph(program) -> onnx.ModelProto:
    return onnx.load_from_string(program.graphs["train"])


def test_the_tuner_writes_what_it_was_told_is_fastest(monkeypatch, tmp_path):
    monkeypatch.setenv("DSLC_NO_CACHE", "1")
    # the rule; the first layer trains in its pool's phases (passes/phases.py): a stride-2 gradient, no bands
    assert formulations_in(train_graph(compile_file(LENET))) == ["swapped", "swapped"]
    timer = Timer(["columns", "columns"])
    program = compile_file(LENET, tune=TuneSetting(threads=3, batch=16, measure=timer))
    shapes = [c["shape"] for c in program.manifest["tuning"]["choices"]]
    assert timer.calls == [(["columns", "swapped"], 3), (["columns", "swapped"], 3), (["rule"] + shapes, 3)]
    assert formulations_in(train_graph(program)) == ["columns", "columns"]
    timer = Timer(["swapped", "columns"])
    assert formulations_in(train_graph(compile_file(LENET, tune=TuneSetting(threads=1, measure=timer)))) == \
        ["columns", "swapped"]

    tuning = program.manifest["tuning"]
    assert tuning["threads"] == 3 and tuning["batch"] == 16 and program.manifest["format"] == "dslc-manifest/2"
    lines = LENET.read_text().splitlines()
    for choice, rule, x_shape in zip(tuning["choices"], ["swapped", "swapped"], ["[16, 1, 28, 28]", "[16, 6, 14, 14]"]):
        assert choice["choice"] == choice["probe"] == "columns" and choice["rule"] == rule and x_shape in choice["shape"]
        assert choice["median_ms"]["columns"] == 1.0
        assert choice["step_ms"] == {"rule": 2.0, "columns": 1.0, "disturbed": False}
        path, line, col = choice["at"].rsplit(":", 2)
        assert Path(path) == LENET and lines[int(line) - 1][int(col) - 1:].startswith("conv2d")
    program.build(tmp_path)
    assert json.loads((tmp_path / "lenet.dslc.json").read_text())["tuning"] == tuning


def test_a_probe_choice_that_slows_the_step_is_dropped(monkeypatch):
    monkeypatch.setenv("DSLC_NO_CACHE", "1")
    timer = Timer("columns", step="rule")
    program = compile_file(LENET, tune=TuneSetting(threads=1, measure=timer))
    assert len(timer.calls) == 3 and formulations_in(train_graph(program)) == ["swapped", "swapped"]
    for choice in program.manifest["tuning"]["choices"]:
        assert choice["probe"] == "columns" and choice["choice"] == choice["rule"]
        assert choice["step_ms"] == {"rule": 1.0, "columns": 2.0, "disturbed": False}


def test_a_step_check_other_processes_disturbed_keeps_the_rule(monkeypatch):
    monkeypatch.setenv("DSLC_NO_CACHE", "1")

    def measure(models, threads):  # columns faster everywhere, but the step's blocks mostly contended
        return {name: timing(1.0 if name not in ("rule", "swapped", "bands") else 2.0,
                             contended_blocks=3 if "rule" in models else 0) for name in models}

    program = compile_file(LENET, tune=TuneSetting(threads=1, measure=measure))
    assert formulations_in(train_graph(program)) == ["swapped", "swapped"]
    assert all(c["probe"] == "columns" and c["step_ms"]["disturbed"] for c in program.manifest["tuning"]["choices"])


def test_a_second_tuned_build_measures_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("DSLC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DSLC_NO_CACHE", raising=False)
    setting = lambda timer: TuneSetting(threads=2, batch=8, measure=timer)
    first = Timer("columns")
    program = compile_cached(LENET, tune=setting(first))
    assert len(first.calls) == 3 and program.extras["tuned"]
    again = Timer("swapped")
    cached = compile_cached(LENET, tune=setting(again))
    assert again.calls == [] and "tuned" not in cached.extras  # the compile cache's entry
    assert cached.manifest["tuning"] == program.manifest["tuning"]
    assert compile_file(LENET, tune=setting(again)).manifest["tuning"]["choices"] == program.manifest["tuning"]["choices"]
    assert again.calls == []  # compiled again: the measurements came from the tune cache
    assert "tuning" not in compile_cached(LENET).manifest  # untuned builds are other entries

    for file in (tmp_path / "cache" / "tune").iterdir():  # measurements gone: the compiled entry is stale
        file.unlink()
    retuned = compile_cached(LENET, tune=setting(again))  # swapped is both layers' rule: no step check
    assert len(again.calls) == 2 and formulations_in(train_graph(retuned)) == ["swapped", "swapped"]
    other_threads = Timer("columns")
    compile_cached(LENET, tune=TuneSetting(threads=1, batch=8, measure=other_threads))
    assert len(other_threads.calls) == 3  # another thread count is another machine


def test_real_timing_of_lenet_layers(monkeypatch):
    monkeypatch.setenv("DSLC_NO_CACHE", "1")
    choices = compile_file(LENET, tune=TuneSetting(threads=1, batch=2)).manifest["tuning"]["choices"]
    assert [sorted(c["median_ms"]) for c in choices] == [["columns", "swapped"], ["columns", "swapped"]]
    for c in choices:
        assert all(ms > 0 for ms in c["median_ms"].values())
        assert c["probe"] == min(c["median_ms"], key=c["median_ms"].get)
        if c["probe"] == c["rule"]:
            assert c["choice"] == c["rule"] and "step_ms" not in c
        else:  # the step decided
            faster = c["step_ms"][c["probe"]] < (1 - tuner.STEP_MARGIN) * c["step_ms"]["rule"]
            assert (c["choice"] == c["probe"]) == (faster and not c["step_ms"]["disturbed"])


def test_float64_has_nothing_to_tune(monkeypatch):
    monkeypatch.setenv("DSLC_NO_CACHE", "1")
    timer = Timer("columns")
    program = compile_file(LENET, dtype="float64", tune=TuneSetting(threads=1, measure=timer))
    assert timer.calls == [] and program.manifest["tuning"]["choices"] == []


def test_cli_tune_prints_the_table(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DSLC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DSLC_NO_CACHE", raising=False)
    monkeypatch.setattr(tuner, "_measure", Timer(["swapped", "columns"]))
    assert main(["build", str(LENET), "--tune", "--threads", "1", "-o", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "1 thread, batch 64" in err and "2 measured now" in err
    assert "lenet.dl:8:12  conv_weight_grad f32[64, 1, 28, 28], f32[64, 24, 14, 14]" in err  # in phases
    assert "columns 2.000 ms  swapped 1.000 ms  -> swapped\n" in err  # the rule's own: no step to check
    assert "-> columns (rule: swapped; training step" in err
    assert main(["build", str(LENET), "--tune", "--threads", "1", "-o", str(tmp_path / "out")]) == 0
    assert "all from the cache" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["check", "--tune"], "`dslc check` writes and runs no training graph"),
    (["predict", "--tune", "--input", "x.npz", "-o", "y.npz"], "`dslc predict` writes and runs no training graph"),
    (["build", "--threads", "2"], "`--threads` sets what `--tune` measures with"),
    (["build", "--tune", "--emit", "ir"], "`--emit ir` writes none"),
    (["train", "--tune", "--device", "cuda", "--data", "d.npz", "--epochs", "1", "--batch-size", "4", "-o", "r"],
     "drop it with `--device cuda`"),
])
def test_tune_misuse_is_a_usage_error(argv, message, capsys):
    assert main([argv[0], str(LENET), *argv[1:]]) == 2
    assert message in capsys.readouterr().err


TWO_OBJECTIVES = """
model two(lr = 0.01) {
    input  x: f32[B, 1, 12, 12]
    target y: i64[B]

    output a = x |> conv2d(4, 3, padding = 1, name = "ca") |> flatten |> dense(3, name = "ha")
    output b = x |> conv2d(2, 5, name = "cb") |> flatten |> dense(3, name = "hb")

    objective first {
        loss      cross_entropy(a, y)
        optimizer sgd(lr = lr)
        update    "ca", "ha"
    }
    objective second {
        loss      cross_entropy(b, y)
        optimizer sgd(lr = lr)
        update    "cb", "hb"
    }
}
"""


def test_a_choice_is_checked_in_the_training_step_that_holds_it(monkeypatch, tmp_path):
    monkeypatch.setenv("DSLC_NO_CACHE", "1")
    (tmp_path / "two.dl").write_text(TWO_OBJECTIVES)
    steps = []

    def measure(models, threads):
        if "rule" in models:
            steps.append({onnx.load_from_string(model).graph.name for model, _ in models.values()})
        return {name: timing(2.0 if name in ("rule", "swapped", "bands") else 1.0) for name in models}

    program = compile_file(tmp_path / "two.dl", tune=TuneSetting(threads=1, batch=4, measure=measure))
    first, second = program.manifest["tuning"]["choices"]
    assert (first["rule"], first["choice"], "step" in first) == ("columns", "columns", False)  # 3×3: nothing to check
    assert (second["rule"], second["choice"]) == ("bands", "columns") and steps == [{"two.train.second"}]
    assert formulations_in(onnx.load_from_string(program.graphs["train.second"])) == ["columns"]


def test_the_table_names_the_batch_a_pinned_dimension_measures_at(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DSLC_NO_CACHE", "1")
    monkeypatch.setattr(tuner, "_measure", Timer("swapped"))
    assert main(["build", str(LENET), "--tune", "--threads", "1", "--dim", "B=16", "-o", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "1 thread, batch 16," in err and "f32[16, 1, 28, 28]" in err
    assert json.loads((tmp_path / "lenet.dslc.json").read_text())["tuning"]["batch"] == 16


@pytest.mark.parametrize("damage", [
    lambda r: r["shapes"].update({k: "garbage" for k in r["shapes"]}),
    lambda r: [v.update(choice="bogus") for v in r["shapes"].values()],
    lambda r: [v["median_ms"].update(columns=float("nan")) for v in r["shapes"].values()],
    lambda r: [s.update({k: {} for k in s}) for s in r["steps"].values()],
    lambda r: [s.update({k: {"rule": 1.0, "disturbed": False} for k in s}) for s in r["steps"].values()],
    lambda r: r.update(shapes=[1], steps="x"),
])
def test_a_damaged_tune_cache_is_measured_again(monkeypatch, tmp_path, damage):
    """A tune file edited by hand or damaged: its broken records are measured again, never trusted or a crash."""
    monkeypatch.setenv("DSLC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DSLC_NO_CACHE", raising=False)
    first = Timer("columns")
    expected = compile_file(LENET, tune=TuneSetting(threads=1, batch=8, measure=first)).manifest["tuning"]["choices"]
    [file] = (tmp_path / "cache" / "tune").iterdir()
    record = json.loads(file.read_text())
    damage(record)
    file.write_text(json.dumps(record))
    again = Timer("columns")
    program = compile_file(LENET, tune=TuneSetting(threads=1, batch=8, measure=again))
    assert again.calls  # something was measured again
    assert [c["choice"] for c in program.manifest["tuning"]["choices"]] == [c["choice"] for c in expected]


@pytest.mark.parametrize("argv, env, batch, threads", [
    (["--batch-size", "32", "--accumulate", "3"], {}, 11, 4),          # micro-batches of 11, 11, 10 rows
    (["--batch-size", "32", "--workers", "2"], {}, 16, 2),             # each rank's half, each on half the cores
    (["--batch-size", "33", "--workers", "2", "--accumulate", "2", "--threads", "3"], {}, 9, 3),
    (["--batch-size", "64"], {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, 16, 2),  # mpiexec
])
def test_train_tunes_at_one_ranks_micro_batch_and_threads(monkeypatch, argv, env, batch, threads):
    from dslc.cli_program import tune_setting
    from dslc.cli_args import build_parser

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(4)))
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = build_parser()[0].parse_args(["train", "m.dl", "--data", "d.npz", "--epochs", "1", "-o", "r", "--tune", *argv])
    setting = tune_setting(args)
    assert (setting.batch, setting.threads) == (batch, threads)


def test_a_run_resumed_with_tune_warns_of_nothing(monkeypatch, tmp_path, capsys):
    """--tune changes how the gradient is computed, not the model: resuming an untuned run with it (or the
    other way round) is the same run."""
    monkeypatch.setenv("DSLC_NO_CACHE", "1")
    monkeypatch.setattr(tuner, "_measure", Timer("columns"))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", image=rng.random((16, 1, 28, 28), dtype=np.float32), label=rng.integers(0, 10, 16))
    argv = ["train", str(LENET), "--data", str(tmp_path / "d.npz"), "--batch-size", "8", "-o", str(tmp_path / "r"),
            "-q", "--threads", "1"]
    assert main([*argv, "--epochs", "1"]) == 0
    assert main([*argv, "--epochs", "2", "--resume", "--tune"]) == 0
    assert "differs" not in capsys.readouterr().err


def test_the_table_lists_the_choices_in_source_order():
    """The graphs hold a GAN's discriminator before its generator (the order autodiff reaches them); the
    table reads as the model does. A layer without a place goes last."""
    from dslc.runtime.tune import tuning_lines

    def choice(at):
        return {"at": at, "shape": "conv_weight_grad(f32[2, 1, 8, 8], f32[2, 3, 8, 8]; k=3)",
                "median_ms": {"columns": 0.1, "swapped": 0.2}, "probe": "columns", "choice": "columns",
                "rule": "columns"}

    tuning = {"threads": 2, "batch": 2, "onnxruntime": "1.32.0", "cpu": "cpu",
              "choices": [choice("m.dl:12:5"), choice("?"), choice("m.dl:4:12"), choice("m.dl:4:3")]}
    places = [line.split()[0] for line in tuning_lines(tuning, None)[1:]]
    assert places == ["m.dl:4:3", "m.dl:4:12", "m.dl:12:5", "?"]


def test_the_tune_cache_keeps_the_most_recently_measured(monkeypatch, tmp_path):
    """Like the compile cache's 32 entries, a machine's tune file stays bounded: the newest `KEEP_SHAPES`
    shapes and `KEEP_STEPS` steps, a shape measured again counting as new."""
    from dslc import tune_cache

    monkeypatch.setenv("DSLC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("DSLC_NO_CACHE", raising=False)
    monkeypatch.setattr(tune_cache, "KEEP_SHAPES", 3)
    monkeypatch.setattr(tune_cache, "KEEP_STEPS", 2)
    setting = tune_cache.machine(2)

    def probe(ms):
        return {"median_ms": {"columns": ms, "swapped": 1.0}, "choice": "columns"}

    def step(ms):
        return {"shape": {"rule": ms, "columns": 1.0}}

    for i in range(4):
        tune_cache.store(setting, {f"s{i}": probe(0.1 * i)}, {f"t{i}": step(0.1 * i)})
    tune_cache.store(setting, {"s1": probe(0.5)}, {})  # measured again: newest
    known = tune_cache.load(setting)
    assert list(known["shapes"]) == ["s2", "s3", "s1"] and known["shapes"]["s1"] == probe(0.5)
    assert list(known["steps"]) == ["t2", "t3"]
