"""The graph interface every runtime can drive (dslc-manifest/2): no input has an initializer, initial
values come from the init graph, symbolic dimensions can be pinned, and a run's state moves out of
dslc and back in."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

import dslc
from dslc import cli
from dslc.emit.weights import read_init_graph
from dslc.runtime.checkpoint import load_checkpoint
from dslc.runtime.session import TrainStep
from dslc.runtime.run_randomness import epoch_order, step_seed

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits"
MODELS = sorted((ROOT / "models").glob("*.dl")) + [DIGITS / "digits.dl"]


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_no_graph_input_has_an_initializer_and_the_init_graph_feeds_every_carried_input(path):
    program = dslc.compile(path)
    initial = program.initial_values()
    for key, data in program.graphs.items():
        model = onnx.load_from_string(data)
        inputs = {i.name for i in model.graph.input}
        assert not inputs & {t.name for t in model.graph.initializer}, key
        if key.startswith(("train", "eval")):
            spec = program.manifest["graphs"][key]
            carried = [t["name"] for group in ("params", "frozen", "buffers", "state") for t in spec.get(group, [])]
            assert set(carried) <= set(initial) and set(carried) <= inputs
    init = program.manifest["graphs"].get("init")
    if init is not None:  # one run of the init graph in another runtime gives the same values
        model = onnx.load_from_string(program.graphs["init"])
        outputs = dict(zip([o.name for o in model.graph.output], ReferenceEvaluator(model).run(None, {})))
        assert list(outputs) == [t["name"] for t in init["outputs"]] == list(initial)
        for name, value in initial.items():
            np.testing.assert_array_equal(outputs[name], value)


@pytest.mark.parametrize("path", [DIGITS / "digits.dl", ROOT / "models" / "gan.dl", ROOT / "models" / "text_rnn.dl",
                                  ROOT / "tests" / "conformance" / "models" / "batchnorm.dl"], ids=lambda p: p.stem)
def test_the_predict_graph_runs_inference_with_values_trained_anywhere(path, tmp_path):
    """`infer`'s weights are initializers, which onnxruntime-node, tract and OpenVINO cannot replace
    (onnxruntime-node ignores feeds of them, silently): `predict` takes the parameters and buffers as
    inputs, and gives what dslc's own inference with those values gives."""
    program = dslc.compile(path)
    entry = program.manifest["graphs"]["predict"]
    infer = program.manifest["graphs"]["infer"]
    assert entry["file"] == f"{program.name}.predict.onnx"
    assert entry["inputs"] == infer["inputs"] and entry["outputs"] == infer["outputs"]
    weights = {t["name"] for t in entry["params"] + entry["buffers"]}
    model = onnx.load_from_string(program.graphs["predict"])
    inputs = [i.name for i in model.graph.input]
    assert inputs == [t["name"] for t in entry["inputs"]] + [t["name"] for t in entry["params"] + entry["buffers"]]
    assert not set(inputs) & {i.name for i in model.graph.initializer}  # constants only
    infer_constants = {i.name for i in onnx.load_from_string(program.graphs["infer"]).graph.initializer}
    assert weights == infer_constants - {i.name for i in model.graph.initializer}

    rng = np.random.default_rng(0)
    trained = {name: (value + rng.normal(size=value.shape)).astype(value.dtype)
               for name, value in program.initial_values().items() if name in weights}
    shape = lambda t: [5 if d == "B" else d for d in t["shape"]]  # noqa: E731
    inputs = {t["name"]: rng.integers(0, 10, shape(t)).astype(t["dtype"]) if t["dtype"].startswith("int")
              else rng.normal(size=shape(t)).astype(t["dtype"]) for t in entry["inputs"]}
    state = {t["name"] for key, g in program.manifest["graphs"].items() if key.startswith("train") for t in g["state"]}
    every_weight = {name: value for name, value in program.initial_values().items() if name not in state}
    got = ReferenceEvaluator(model).run(None, {**inputs, **trained})
    want = program.predict(inputs, weights={**every_weight, **trained}, batch_size=None)
    initial = program.predict(inputs, weights=every_weight, batch_size=None)
    for t, value in zip(entry["outputs"], got):
        np.testing.assert_allclose(value, want[t["name"]], rtol=1e-4, atol=1e-5)  # onnx.reference vs ONNX Runtime
        assert not np.allclose(value, initial[t["name"]])


def test_build_dim_pins_the_batch_in_every_graph_and_the_manifest(tmp_path, capsys):
    assert cli.main(["build", str(DIGITS / "digits.dl"), "--dim", "B=16", "-o", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "digits.dslc.json").read_text())
    assert manifest["dims"] == {"B": 16}
    assert manifest["graphs"]["train"]["inputs"][0]["shape"] == [16, 64]
    for key, entry in manifest["graphs"].items():
        model = onnx.load(tmp_path / entry["file"])
        for value in list(model.graph.input) + list(model.graph.output):
            dims = value.type.tensor_type.shape.dim
            assert all(d.HasField("dim_value") for d in dims), f"{key}: `{value.name}` is not static"
    capsys.readouterr()
    assert cli.main(["build", str(DIGITS / "digits.dl"), "--dim", "T=3", "-o", str(tmp_path / "x")]) == 2
    assert "`--dim T=...`: the model has no symbolic dimension `T` (its symbolic dimensions: `B`)" in capsys.readouterr().err
    with pytest.raises(dslc.DataError, match="no symbolic dimension `T`"):
        dslc.compile(DIGITS / "digits.dl", dims={"T": 3})
    with pytest.raises(dslc.DataError, match="positive integers"):
        dslc.compile(DIGITS / "digits.dl", dims={"B": 0})


def test_a_pinned_build_trains_like_the_symbolic_one():
    data = np.load(DIGITS / "train.npz")
    batch = {"image": data["image"][:8], "digit": data["digit"][:8]}
    losses = []
    for dims in (None, {"B": 8}):
        program = dslc.compile(DIGITS / "digits.dl", dims=dims)
        step = TrainStep(program.graphs["train"], program.manifest["graphs"]["train"], threads=1,
                         initial=program.initial_values())
        losses.append([step.step(batch, {"seed": s})["loss"] for s in range(3)])
    assert losses[0] == losses[1]


def test_train_state_leaves_dslc_and_comes_back(tmp_path, capsys):
    """export --train-state writes the run's values as an init graph; train --resume STATE continues from
    it (its step counter, so the dropout seeds, carry on) — from the init graph or an `.npz` alike."""
    model, data = str(DIGITS / "digits.dl"), str(DIGITS / "train.npz")
    common = ["--data", data, "--batch-size", "256", "--seed", "4"]
    assert cli.main(["train", model, *common, "--epochs", "1", "-o", str(tmp_path / "a")]) == 0
    assert cli.main(["export", model, "--train-state", str(tmp_path / "a"), "-o", str(tmp_path / "state")]) == 0
    capsys.readouterr()
    ckpt = load_checkpoint(tmp_path / "a")
    init_bytes = (tmp_path / "state" / "digits.init.onnx").read_bytes()
    exported = read_init_graph(init_bytes)
    for name, value in {**ckpt.params, **ckpt.state}.items():
        np.testing.assert_array_equal(exported[name], value)
    meta = {p.key: p.value for p in onnx.load_from_string(init_bytes).metadata_props}
    assert meta["dslc.epoch"] == "1" and meta["dslc.global_step"] == str(ckpt.meta["global_step"])
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [
        "digits.dslc.json", "digits.eval.onnx", "digits.infer.onnx", "digits.init.onnx", "digits.predict.onnx",
        "digits.train.onnx"]

    np.savez(tmp_path / "state.npz", **exported)
    for source, run in ((tmp_path / "state" / "digits.init.onnx", "b"), (tmp_path / "state.npz", "c")):
        assert cli.main(["train", model, *common, "--epochs", "1", "--resume", str(source), "-o", str(tmp_path / run)]) == 0
        said = f"starting from the training state in `{source}` (optimizer step {ckpt.meta['global_step']})"
        assert said in capsys.readouterr().out
    b, c = load_checkpoint(tmp_path / "b"), load_checkpoint(tmp_path / "c")
    steps = ckpt.meta["global_step"]
    assert b.meta["global_step"] == c.meta["global_step"] == 2 * steps
    for name in b.params:
        np.testing.assert_array_equal(b.params[name], c.params[name])

    # what run b did, step by step: the exported values, epoch 0's order, the seeds after the first run's
    program = dslc.compile(model, seed=4)
    arrays = dict(np.load(data))
    trainer = TrainStep(program.graphs["train"], program.manifest["graphs"]["train"], threads=1, initial=exported)
    order = epoch_order(4, 0, len(arrays["digit"]))
    for i, start in enumerate(range(0, len(order), 256)):
        rows = order[start:start + 256]
        trainer.step({k: v[rows] for k, v in arrays.items()}, {"seed": step_seed(4, steps + i)})
    for name, value in trainer.get_values().items():
        np.testing.assert_array_equal(value, b.params.get(name, b.state.get(name)), err_msg=name)


def test_train_state_of_a_run_with_another_lr_carries_that_lr(tmp_path, capsys):
    """A loop following README feeds each hyper-input's `default`: after `--lr 0.01` the exported manifest
    must say 0.01, or the run continues elsewhere at the model's 0.002 without a word."""
    model = str(DIGITS / "digits.dl")
    assert cli.main(["train", model, "--data", str(DIGITS / "train.npz"), "--batch-size", "256", "--epochs", "1",
                     "--lr", "0.01", "-o", str(tmp_path / "a")]) == 0
    out = tmp_path / "state"
    assert cli.main(["export", model, "--train-state", str(tmp_path / "a"), "-o", str(out)]) == 0
    graphs = json.loads((out / "digits.dslc.json").read_text())["graphs"]
    assert [h["default"] for g in graphs.values() for h in g.get("hyper", []) if h["kind"] == "lr"] == [0.01]
    manifest = json.loads((out / "digits.dslc.json").read_text())
    assert manifest["optimizer"]["settings"]["lr"] == graphs["train"]["optimizer"]["settings"]["lr"] == 0.01
    meta = {p.key: p.value for p in onnx.load(out / "digits.init.onnx").metadata_props}
    assert float(meta["dslc.lr"]) == 0.01
    assert dslc.compile(model).manifest["graphs"]["train"]["hyper"][0]["default"] == pytest.approx(0.002)


def test_train_state_of_objectives_at_different_rates_after_a_plateau_carries_each(tmp_path):
    """A GAN whose objectives train at different rates, both reduced by the plateau they share: each training
    graph's `lr` default and optimizer setting is its own reduced rate (`with_lr_reduced` on each base)."""
    source = (ROOT / "models" / "gan.dl").read_text().replace(
        "optimizer adam(lr = lr, beta1 = 0.5)\n        update    \"gen\"",
        "optimizer adam(lr = 0.004, beta1 = 0.5)\n        update    \"gen\"")
    (tmp_path / "gan.dl").write_text(source)
    program = dslc.compile(tmp_path / "gan.dl")
    rng, n = np.random.default_rng(0), 48
    data = {"z": rng.normal(size=(n, 4)).astype(np.float32), "real": rng.normal(size=(n, 2)).astype(np.float32),
            "ones": np.ones((n, 1), np.float32), "zeros": np.zeros((n, 1), np.float32)}
    history = program.train(data, epochs=2, batch_size=16, out_dir=tmp_path / "g", verbose=0,
                            reduce_lr_on_plateau="monitor=generator.loss,patience=1,min_delta=100,factor=0.5")
    assert history.history["generator.lr"] == [0.004, 0.004]  # halved after epoch 2: the run ends at 0.002
    program.export_train_state(tmp_path / "g", tmp_path / "state")
    graphs = json.loads((tmp_path / "state" / "gan.dslc.json").read_text())["graphs"]
    rates = {key: (g["hyper"][0]["default"], g["optimizer"]["settings"]["lr"]) for key, g in graphs.items()
             if key.startswith("train.")}
    assert rates == {"train.discriminator": (0.0005, 0.0005), "train.generator": (0.002, 0.002)}


def test_train_state_of_a_run_with_frozen_parameters_exports_with_its_freeze_patterns(tmp_path, capsys):
    """The refusal's hint says to pass the run's `--freeze` patterns, so `export` must take them."""
    model = str(DIGITS / "digits.dl")
    assert cli.main(["train", model, "--data", str(DIGITS / "train.npz"), "--batch-size", "256", "--epochs", "1",
                     "--freeze", "dense_0*", "-o", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    assert cli.main(["export", model, "--train-state", str(tmp_path / "a"), "-o", str(tmp_path / "no")]) == 3
    assert "pass the `--freeze` patterns it was trained with" in capsys.readouterr().err
    assert cli.main(["export", model, "--train-state", str(tmp_path / "a"), "--freeze", "dense_0*",
                     "-o", str(tmp_path / "state")]) == 0
    train = json.loads((tmp_path / "state" / "digits.dslc.json").read_text())["graphs"]["train"]
    assert [t["name"] for t in train["frozen"]] == ["dense_0.weight", "dense_0.bias"]
    exported = read_init_graph((tmp_path / "state" / "digits.init.onnx").read_bytes())
    ckpt = load_checkpoint(tmp_path / "a")
    for name, value in {**ckpt.params, **ckpt.state}.items():
        np.testing.assert_array_equal(exported[name], value)


def test_a_run_started_from_a_state_file_warns_when_its_seed_or_lr_differ_from_the_states_run(tmp_path, capsys):
    """The step counter continues from the state; the dropout seeds and the rate only with the run's own
    `--seed` and `--lr`, which the exported init graph and a checkpoint record."""
    model, data = str(DIGITS / "digits.dl"), str(DIGITS / "train.npz")
    common = ["--data", data, "--batch-size", "256", "--epochs", "1", "-q"]
    assert cli.main(["train", model, *common, "--seed", "4", "--lr", "0.01", "-o", str(tmp_path / "a")]) == 0
    assert cli.main(["export", model, "--train-state", str(tmp_path / "a"), "-o", str(tmp_path / "state")]) == 0
    capsys.readouterr()
    init, ckpt = tmp_path / "state" / "digits.init.onnx", tmp_path / "a" / "checkpoint.npz"
    for i, (source, flags, warned) in enumerate([
            (init, ["--seed", "4", "--lr", "0.01"], []),
            (init, [], ["the seed differs from the state file's run (0 now, 4 before)",
                        "the learning rate differs from the state file's run (the default now, 0.01 before)"]),
            (ckpt, ["--seed", "4"],
             ["the learning rate differs from the state file's run (the default now, 0.01 before)"]),
            (DIGITS / "train.npz", [], None)]):  # not a state file: refused as before, no warning
        code = cli.main(["train", model, *common, *flags, "--resume", str(source), "-o", str(tmp_path / f"r{i}")])
        err = capsys.readouterr().err
        if warned is None:
            assert code == 3 and "warning" not in err
            continue
        assert code == 0
        assert [line for line in err.splitlines() if line.startswith("warning: ")] == [
            f"warning: {w}: the run will not match an uninterrupted one" for w in warned]


def test_a_state_file_that_does_not_fit_is_a_data_error(tmp_path, capsys):
    program = dslc.compile(DIGITS / "digits.dl")
    values = program.initial_values()
    np.savez(tmp_path / "short.npz", **{k: v for k, v in values.items() if k != "dense_0.bias"})
    bad = dict(values, **{"dense_0.weight": np.full(values["dense_0.weight"].shape, np.nan, np.float32)})
    np.savez(tmp_path / "nan.npz", **bad)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    cases = {"short.npz": "the state file lacks parameter `dense_0.bias`", "nan.npz": "dense_0.weight",
             "junk.onnx": "is not an ONNX model"}
    for name, message in cases.items():
        assert cli.main(["train", str(DIGITS / "digits.dl"), "--data", str(DIGITS / "train.npz"), "--epochs", "1",
                         "--batch-size", "64", "--resume", str(tmp_path / name), "-o", str(tmp_path / f"run-{name}")]) == 3
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert not (tmp_path / f"run-{name}" / "checkpoint.npz").exists()


def test_the_noise_is_float32_throughout_and_needs_no_flat_index(tmp_path):
    """No float64 a runtime could narrow (OpenVINO computed the old float64 hash in float32: 28.5% of the
    mask bits differed) and no `Range` over the flat index (tract could not plan it with a symbolic batch).
    (Adam's bias corrections are float64 scalars by design: see dslc/optim.py.)"""
    path = tmp_path / "drop.dl"
    path.write_text("""model drop {
    input x: f32[B, T, 8]
    target y: f32[B, T, 8]
    output z = x |> dropout(0.3) |> linear(8) |> dropout(0.5)
    loss mse(z, y)
    optimizer sgd(lr = 0.1, momentum = 0.9)
}
""")
    model = onnx.load_from_string(dslc.compile(path).graphs["train"])
    assert not {n.op_type for n in model.graph.node} & {"Range", "RandomUniformLike", "RandomUniform", "Dropout"}
    doubles = [n.name for n in model.graph.node if n.op_type == "Cast"
               and any(a.name == "to" and a.i == onnx.TensorProto.DOUBLE for a in n.attribute)]
    assert doubles == [] and not any(t.data_type == onnx.TensorProto.DOUBLE for t in model.graph.initializer)
