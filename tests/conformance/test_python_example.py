"""examples/python/train.py, the loop of README's "Embedding the graphs" as a program with plain ONNX
Runtime and numpy (dslc cannot be imported while it runs), logs the epochs `dslc train` logs, validation included: the
same initial values (`dslc build --seed S`), sample order, dropout seeds and carried buffers. Models with
dropout (digits), batch norm (batchnorm), a GRU (text_rnn) and momentum SGD (mlp); and a run exported
with `dslc export --train-state` continues in it as it does in `dslc train`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from embedding import BATCH, MODELS, SEED, assert_same_epochs, epoch_lines, logged, model_data
from protocol import load_manifest
from test_conformance import ROOT

EXAMPLE = ROOT / "examples/python/train.py"


def run_example(out_dir: Path, data: Path, *args: str) -> list[dict[str, float]]:
    """The example's epoch lines, run with `import dslc` failing."""
    guard = ("import runpy, sys; sys.modules['dslc'] = None; sys.argv = sys.argv[1:]; "
             "runpy.run_path(sys.argv[0], run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", guard, str(EXAMPLE), str(out_dir), str(data), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return epoch_lines(done.stdout)


@pytest.mark.parametrize("name", list(MODELS))
def test_the_python_example_logs_the_epochs_of_dslc_train(name, tmp_path):
    from dslc.compiler import compile_file

    program = compile_file(MODELS[name], seed=SEED)
    data = model_data(program, tmp_path / "data.npz")
    val = model_data(program, tmp_path / "val.npz", split="val")
    history = program.train(str(data), str(val), epochs=2, batch_size=BATCH, seed=SEED, out_dir=tmp_path / "run",
                            verbose=0)
    assert "val_loss" in history[0] or "val_discriminator.loss" in history[0]
    program.build(tmp_path / "out")  # `dslc build --seed 3`
    printed = run_example(tmp_path / "out", data, "--epochs", "2", "--batch-size", str(BATCH), "--seed", str(SEED),
                          "--val", str(val))
    assert_same_epochs(printed, logged(history), rtol=1e-6)


@pytest.mark.parametrize("name", ["digits", "batchnorm"])
def test_a_run_exported_with_its_train_state_continues_in_the_python_example(name, tmp_path):
    from dslc.compiler import compile_file

    program = compile_file(MODELS[name], seed=SEED)
    data = model_data(program, tmp_path / "data.npz")
    whole = program.train(str(data), epochs=2, batch_size=BATCH, seed=SEED, out_dir=tmp_path / "whole", verbose=0)
    program.train(str(data), epochs=1, batch_size=BATCH, seed=SEED, out_dir=tmp_path / "half", verbose=0)
    program.export_train_state(tmp_path / "half", tmp_path / "state")
    steps = -(-len(np.load(data)[program.manifest["graphs"]["train"]["inputs"][0]["name"]]) // BATCH)
    assert load_manifest(tmp_path / "state")["train_state"] == {"epoch": 1, "global_step": steps, "seed": SEED}
    # the example takes the seed, the epoch and the step from the manifest: its --seed is not needed
    printed = run_example(tmp_path / "state", data, "--epochs", "1", "--batch-size", str(BATCH),
                          "--save", str(tmp_path / "trained.npz"))
    assert_same_epochs(printed, logged(whole)[1:], rtol=1e-6)
    # and the values it saved are where `dslc train` got to
    from dslc.runtime.checkpoint import load_checkpoint

    final = np.load(tmp_path / "trained.npz")
    ckpt = load_checkpoint(tmp_path / "whole", program.manifest)
    theirs = {**ckpt.params, **ckpt.state}
    assert sorted(final.files) == sorted(theirs)
    for key in final.files:
        np.testing.assert_allclose(final[key], theirs[key], rtol=1e-5, atol=1e-6)

def test_a_fresh_build_has_no_train_state(tmp_path):
    from dslc.compiler import compile_file

    compile_file(MODELS["digits"]).build(tmp_path)
    assert "train_state" not in json.loads((tmp_path / "digits.dslc.json").read_text())


def test_a_run_whose_plateau_reduced_the_rate_continues_at_the_reduced_rate(tmp_path, capsys):
    """`dslc export --train-state` of a run whose reduce_lr_on_plateau had reduced the rate writes the reduced
    rate as the `lr` default (it wrote the model's: a loop feeding the defaults went on at 4x the rate)."""
    from dslc.compiler import compile_file

    program = compile_file(MODELS["digits"], seed=SEED)
    data = model_data(program, tmp_path / "data.npz", bundled=False)
    plateau = "monitor=loss,factor=0.5,patience=0,min_delta=10"  # halves the rate after every epoch
    whole = program.train(str(data), epochs=4, batch_size=BATCH, seed=SEED, out_dir=tmp_path / "whole", verbose=0,
                          reduce_lr_on_plateau=plateau)
    program.train(str(data), epochs=3, batch_size=BATCH, seed=SEED, out_dir=tmp_path / "part", verbose=0,
                  reduce_lr_on_plateau=plateau)
    program.export_train_state(tmp_path / "part", tmp_path / "state")
    (lr,) = [h for h in load_manifest(tmp_path / "state")["graphs"]["train"]["hyper"] if h["kind"] == "lr"]
    assert lr["default"] == 0.002 / 4 == whole[3]["lr"]  # reduced after epochs 2 and 3: epoch 4's rate
    init = onnx.load(tmp_path / "state" / "digits.init.onnx")
    assert float({p.key: p.value for p in init.metadata_props}["dslc.lr"]) == 0.002 / 4
    printed = run_example(tmp_path / "state", data, "--epochs", "1", "--batch-size", str(BATCH))
    assert_same_epochs(printed, logged(whole)[3:], rtol=1e-6)
    # dslc train --resume STATE at the model's rate says it is not the one the exported run ended at
    from dslc import cli

    resume = ["train", str(MODELS["digits"]), "--data", str(data), "--epochs", "4", "--batch-size", str(BATCH),
              "--seed", str(SEED), "--resume", str(tmp_path / "state" / "digits.init.onnx")]
    capsys.readouterr()
    assert cli.main([*resume, "-o", str(tmp_path / "r1")]) == 0
    assert "the learning rate differs from the state file's run (the default now, 0.0005 before)" in \
        capsys.readouterr().err
    assert cli.main([*resume, "--lr", "0.0005", "-o", str(tmp_path / "r2")]) == 0
    assert "learning rate differs" not in capsys.readouterr().err


def test_a_state_file_with_the_parameters_only_says_so(tmp_path, capsys):
    """A loop of one's own that saved the parameters only: `dslc train --resume` says the optimizer state is
    missing (it blamed the model source or `-D` values), exit 3."""
    from dslc import cli
    from dslc.compiler import compile_file

    model = str(MODELS["digits"])
    data = str(ROOT / "examples/digits/train.npz")
    compile_file(MODELS["digits"]).build(tmp_path / "out")
    run_example(tmp_path / "out", data, "--save", str(tmp_path / "all.npz"))
    values = np.load(tmp_path / "all.npz")
    np.savez(tmp_path / "params.npz", **{k: values[k] for k in values.files if not k.startswith("opt.")})
    common = ["train", model, "--data", data, "--epochs", "1", "--batch-size", "32"]
    assert cli.main([*common, "--resume", str(tmp_path / "params.npz"), "-o", str(tmp_path / "a")]) == 3
    assert capsys.readouterr().err == (
        f"error: state file `{tmp_path / 'params.npz'}` does not fit model `digits`: it holds no optimizer state "
        "(`opt.step` and 12 more)\n"
        "hint: a state file holds every `params`, `buffers` and `state` value of the manifest's training graph "
        "(the init graph's outputs, with each `next` fed back): save them all\n")
    assert cli.main([*common, "--resume", str(tmp_path / "all.npz"), "-o", str(tmp_path / "b")]) == 0


def test_a_state_file_whose_buffers_were_not_carried_warns(tmp_path, capsys):
    """Batch norm's running statistics left at their initial values by a loop that did not feed the buffers'
    `next` back: `dslc train --resume` warns (the values are valid, but evaluation and inference normalize with
    the initial statistics); carried, no warning."""
    from dslc import cli
    from dslc.compiler import compile_file

    program = compile_file(MODELS["batchnorm"])
    data = model_data(program, tmp_path / "data.npz")
    program.build(tmp_path / "out")
    run_example(tmp_path / "out", data, "--batch-size", str(BATCH), "--save", str(tmp_path / "all.npz"))
    saved, initial = dict(np.load(tmp_path / "all.npz")), program.initial_values()
    buffers = [t["name"] for t in program.manifest["graphs"]["train"]["buffers"]]
    np.savez(tmp_path / "stale.npz", **{**saved, **{n: initial[n] for n in buffers}})
    common = ["train", str(MODELS["batchnorm"]), "--data", str(data), "--epochs", "1", "--batch-size", str(BATCH)]
    assert cli.main([*common, "--resume", str(tmp_path / "stale.npz"), "-o", str(tmp_path / "a")]) == 0
    assert (f"warning: the state file's buffers (`{buffers[0]}` and 3 more) still hold their initial values after 4 "
            "optimizer steps: the loop that wrote it did not feed each buffer's `next` output back, so evaluation "
            "and inference normalize with the initial statistics") in capsys.readouterr().err
    assert cli.main([*common, "--resume", str(tmp_path / "all.npz"), "-o", str(tmp_path / "b")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_dslc_evaluates_and_predicts_with_the_values_a_loop_saved(tmp_path, capsys):
    """`--weights` takes the .npz a loop of one's own saved (one array per name, optimizer state ignored):
    `dslc evaluate` gives the example's val_ values, `dslc predict` its predict graph's outputs."""
    from dslc import cli
    from dslc.compiler import compile_file

    program = compile_file(MODELS["batchnorm"])
    data, val = model_data(program, tmp_path / "data.npz"), model_data(program, tmp_path / "val.npz", split="val")
    program.build(tmp_path / "out")
    (epoch,) = run_example(tmp_path / "out", data, "--batch-size", str(BATCH), "--val", str(val),
                           "--save", str(tmp_path / "trained.npz"))
    model = str(MODELS["batchnorm"])
    capsys.readouterr()
    assert cli.main(["evaluate", model, "--weights", str(tmp_path / "trained.npz"), "--data", str(val),
                     "--batch-size", str(BATCH), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose([evaluated["loss"], evaluated["accuracy"]], [epoch["val_loss"], epoch["val_accuracy"]],
                               rtol=1e-6)
    assert cli.main(["predict", model, "--weights", str(tmp_path / "trained.npz"), "--input", str(val),
                     "-o", str(tmp_path / "p.npz")]) == 0
    saved = np.load(tmp_path / "trained.npz")
    predict = program.manifest["graphs"]["predict"]
    feeds = {t["name"]: np.load(val)[t["name"]] for t in predict["inputs"]}
    feeds.update({t["name"]: saved[t["name"]] for t in predict["params"] + predict["buffers"]})
    from runtimes import ort_graph

    outputs = [t["name"] for t in predict["outputs"]]
    expected = ort_graph(tmp_path / "out" / predict["file"], list(feeds), outputs)(feeds)
    for name in outputs:
        np.testing.assert_allclose(np.load(tmp_path / "p.npz")[name], expected[name], rtol=1e-5, atol=1e-7)
