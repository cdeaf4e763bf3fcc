"""Findings of trying dslc as a new user (Keras/PyTorch habits): each test is one finding's regression."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import compile_text
from test_user_errors_runtime import xy

from dslc.diagnostics import DataError
from dslc.runtime import checkpoint, state_files
from dslc.runtime.callbacks import EarlyStopping
from dslc.runtime.train import Reporter, fit

ADAM_MLP = """
model mlp {
    input x: f32[B, 4]
    target y: f32[B, 1]
    h = x |> dense(3) |> tanh |> dense(1)
    output h
    loss mse(h, y)
    optimizer adam(lr = 0.01)
}
"""


# ---- early stopping: Keras's `val_acc` ----------------------------------------------------------------
@pytest.mark.parametrize("monitor, names, validated, hint", [
    # no validation data: the hint names a value the run logs, not `acc` (which it does not)
    ("val_acc", ["loss", "accuracy"], False, "pass validation data (`val=...` or `val_split=...`), or monitor `accuracy`"),
    ("val_loss", ["loss", "accuracy"], False, "pass validation data (`val=...` or `val_split=...`), or monitor `loss`"),
    ("val_gap", ["loss", "accuracy"], False, "pass validation data (`val=...` or `val_split=...`)"),
    ("val_acc", ["loss", "accuracy", "val_loss", "val_accuracy"], True, "did you mean `val_accuracy`?"),
])
def test_early_stopping_hints_name_what_the_run_logs(monitor, names, validated, hint):
    stopping = EarlyStopping.parse(f"monitor={monitor}")
    with pytest.raises(DataError) as e:
        stopping.resolve(names, validated)
    assert e.value.message == f"early stopping monitors `{monitor}`, which the run does not log"
    assert e.value.hint == hint


# ---- CSV files whose header does not name the model's columns ---------------------------------------
XOR_SPECS = [{"name": "x", "dtype": "float32", "shape": ["B", 2], "role": "input"},
             {"name": "y", "dtype": "float32", "shape": ["B", 1], "role": "target"}]


@pytest.mark.parametrize("text, message, hint", [
    ("a,b,label\n0,1,1\n",  # was: "has no array `x` (arrays present: none)"
     "CSV file `{}` has no column for the model's input `x` `float32[B, 2]`: expected `x` or `x_0`, `x_1`",
     "its columns: `a`, `b`, `label`; name them after the model's input or choose them with `inputs=...`"),
    ("x_0;x_1;y\n0;1;1\n",
     "CSV file `{}` has no column for the model's input `x` `float32[B, 2]`: expected `x` or `x_0`, `x_1`",
     "the header is one column: dslc reads comma-separated values; write `,` between the fields, not `;`"),
    ("x_0,x_1,z\n0,1,1\n",
     "CSV file `{}` has no column for the model's target `y` `float32[B, 1]`: expected `y`",
     "its columns: `x_0`, `x_1`, `z`; name them after the model's target or choose them with `target=...`"),
    ("x_0,x_1,y,x_0\n0,1,1,5\n",  # was: the first `x_0` read, the other ignored
     "CSV file `{}` has 2 columns named `x_0` (columns 1, 4)", "give each column its own name in the header row"),
])
def test_csv_errors_name_the_columns_the_model_wants(tmp_path, text, message, hint):
    from dslc.runtime.data import load_data

    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(DataError) as e:
        load_data(path, XOR_SPECS)
    assert (e.value.message, e.value.hint) == (message.format(path), hint)


# ---- a run's checkpoint as the state a new run starts from --------------------------------------------
def test_a_checkpoint_or_best_npz_is_a_state_file_for_a_new_run(tmp_path):
    """`dslc train ... -o NEW --resume RUN/checkpoint.npz` was refused: "the state file lacks parameter
    `dense_0.weight`" (its members are `param/<name>`), with a hint that the model had changed."""
    program = compile_text(tmp_path, ADAM_MLP)
    fit(program, xy(12), epochs=2, batch_size=4, out_dir=tmp_path / "a", reporter=Reporter(),
        early_stopping="monitor=loss", restore_best=True)
    for name in ("checkpoint.npz", "best.npz"):
        ckpt = checkpoint.load_checkpoint(tmp_path / "a" / name, program.manifest)
        values = state_files.load_state_file(tmp_path / "a" / name, program.manifest)
        expected = {**ckpt.params, **ckpt.state}
        assert sorted(values) == sorted(expected) and int(values["opt.step"]) == 3 * ckpt.meta["epoch"]
        assert all(np.array_equal(values[k], v) for k, v in expected.items())
    history = fit(program, xy(12), epochs=1, batch_size=4, out_dir=tmp_path / "b", reporter=Reporter(),
                  resume=tmp_path / "a" / "checkpoint.npz")
    assert history[-1]["steps"] == 9  # cumulative: the step counter continues from the state's
    assert int(checkpoint.load_checkpoint(tmp_path / "b", program.manifest).state["opt.step"]) == 9


def test_a_checkpoint_of_another_model_as_state_file_names_the_model(tmp_path):
    program = compile_text(tmp_path, ADAM_MLP)
    other = compile_text(tmp_path, ADAM_MLP.replace("model mlp", "model other"), "other.dl")
    fit(other, xy(8), epochs=1, batch_size=4, out_dir=tmp_path / "o", reporter=Reporter())
    with pytest.raises(DataError) as e:
        state_files.load_state_file(tmp_path / "o" / "checkpoint.npz", program.manifest)
    assert e.value.message == f"checkpoint `{tmp_path / 'o' / 'checkpoint.npz'}` was written for model `other`, not `mlp`"


# ---- `dslc predict -o` that cannot be written -------------------------------------------------------------
def test_predict_checks_its_output_before_predicting(tmp_path, capsys, monkeypatch):
    """The outputs of every row were computed, then the write failed (a mistyped folder)."""
    from dslc import cli
    from dslc.program import Program

    (tmp_path / "m.dl").write_text(ADAM_MLP.replace("    loss mse(h, y)\n    optimizer adam(lr = 0.01)\n", ""))
    np.savez(tmp_path / "x.npz", **xy(4))
    monkeypatch.setattr(Program, "predict", lambda *a, **k: pytest.fail("predicted before checking `-o`"))
    out = tmp_path / "no-such-folder" / "y.npz"
    assert cli.main(["predict", str(tmp_path / "m.dl"), "--input", str(tmp_path / "x.npz"), "-o", str(out)]) == 3
    assert capsys.readouterr().err == (f"error: cannot write `{out}`: No such file or directory "
                                       f"(`{out.parent}`)\n")
    assert not out.parent.exists()


# ---- program.train(early_stopping=...) as a Keras user writes it ----------------------------------------
def test_early_stopping_takes_a_dict_or_true_and_refuses_other_values(tmp_path):
    """A dict (Keras's keywords) or `True` failed with `AttributeError: 'dict' object has no attribute 'resolve'`."""
    program = compile_text(tmp_path, ADAM_MLP)
    history = program.train(xy(12), epochs=10, batch_size=4, lr=0.0, verbose=0, out_dir=tmp_path / "d",
                            early_stopping={"monitor": "loss", "patience": 1, "min_delta": 1e-3})
    assert len(history) == 2 and history.stopped_epoch == 2  # lr 0: no epoch improves on the first
    defaults = EarlyStopping.of(True)  # as `--early-stopping` alone
    assert (defaults.requested, defaults.patience, defaults.min_delta) == ((None, None), 5, 0.0)
    assert EarlyStopping.of(False) is None and EarlyStopping.of(None) is None
    for setting, message, hint in [
        ({"patiense": 3}, "early stopping has no setting `patiense`; its settings are `monitor`, `patience`, "
                          "`min_delta`, `mode`", "did you mean `patience`?"),
        (3, "`early_stopping` must be a `dslc.EarlyStopping`, its text such as \"patience=5\" or a dict of its "
            "settings, got 3 (`int`)", ""),
    ]:
        with pytest.raises(DataError) as e:
            program.train(xy(12), epochs=1, batch_size=4, verbose=0, out_dir=tmp_path / "x", early_stopping=setting)
        assert (e.value.message, e.value.hint) == (message, hint)
        assert not (tmp_path / "x").exists()


def test_weights_of_another_type_are_a_data_error(tmp_path):
    """`program.predict(x, weights=3)` raised `TypeError: expected str, bytes or os.PathLike object`."""
    program = compile_text(tmp_path, ADAM_MLP)
    for call in (lambda: program.predict(xy(4), weights=3), lambda: program.evaluate(xy(4), weights=3.0),
                 lambda: program.export(3, tmp_path / "m.onnx")):
        with pytest.raises(DataError) as e:
            call()
        assert e.value.message.startswith("the weights must be a run directory or a checkpoint path, got 3")
        assert e.value.hint == "pass `weights=RUN` (the `out_dir` of `train`)"


# ---- odd flags: empty paths, a repeated --dim -------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["train", "{m}", "--data", "{d}", "--epochs", "1", "--batch-size", "2", "-o", ""],  # trained into the cwd
     "dslc train: error: argument -o: expected a path, got an empty string"),
    (["build", "{m}", "-o", ""], "dslc build: error: argument -o: expected a path, got an empty string"),
    (["check", ""], "dslc check: error: argument MODEL.dl: expected a path, got an empty string"),
    (["predict", "{m}", "--input", "", "-o", "y.npz"], "dslc predict: error: argument --input: expected a path, "
                                                        "got an empty string"),
    (["train", "{m}", "--data", "{d}", "--epochs", "1", "--batch-size", "2", "-o", "r", "--resume", ""],
     "dslc train: error: argument --resume: expected a path, got an empty string"),
    (["build", "{m}", "--dim", "B=4", "--dim", "B=8", "-o", "out"],  # B=8 silently won
     "dslc build: error: argument --dim: `B` is given twice (`B=4` and `B=8`)"),
    (["predict", "{m}", "--input", "{d}", "-o", "y.npy"],  # wrote an `.npz` archive named y.npy
     "dslc predict: error: argument -o: the outputs go to an `.npz` file, not `y.npy` (an `.npy` holds one array)"),
    (["predict", "{m}", "--input", "{d}", "-o", "y.csv"],  # wrote an `.npz` archive named y.csv, exit 0
     "dslc predict: error: argument -o: the outputs go to an `.npz` file, not `y.csv` (dslc writes the outputs "
     "as an `.npz` archive)"),
    (["export", "{m}", "--weights", "r", "-o", "m.npz"],  # wrote an ONNX model named m.npz
     "dslc export: error: argument -o: the model goes to an `.onnx` file, not `m.npz`"),
    # flag values that were exit 3 ("bad data"), found once the data had been read
    (["train", "{m}", "--data", "{d}", "--epochs", "1", "--batch-size", "2", "-o", "r", "--early-stopping", "patience=x"],
     "dslc train: error: argument --early-stopping: `patience` must be a number, got `x`"),
    (["train", "{m}", "--data", "{d}", "--epochs", "1", "--batch-size", "2", "-o", "r", "--early-stopping", "mode=up"],
     "dslc train: error: argument --early-stopping: early stopping's mode must be `min`, `max` or `auto`, got `up` "
     "(`auto`, as leaving it out, tells from the monitored name)"),
    (["train", "{m}", "--data", "{d}", "--val", "{d}", "--val-split", "0.5", "--epochs", "1", "--batch-size", "2",
      "-o", "r"], "dslc train: error: give validation data (`--val`) or a validation split (`--val-split`), not both"),
])
def test_odd_paths_and_flags_are_usage_errors(tmp_path, monkeypatch, capsys, argv, message):
    from dslc import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.dl").write_text(ADAM_MLP)
    np.savez(tmp_path / "d.npz", **xy(4))
    assert cli.main([a.format(m="m.dl", d="d.npz") for a in argv]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "m.dl"]  # nothing written


# ---- a folder of `.npy` files with files the model does not read ------------------------------------------
def test_an_npy_folder_opens_only_the_files_the_model_reads(tmp_path):
    """Every `*.npy` of the folder was opened: an unrelated file stopped training, and a file that is not
    `.npy` at all was called "pickled (object) data" with numpy's advice to pass `allow_pickle=`."""
    from dslc.runtime.data import load_data

    folder = tmp_path / "data"
    folder.mkdir()
    arrays = {"x": np.arange(8, dtype=np.float32).reshape(4, 2), "y": np.ones((4, 1), np.float32)}
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
    (folder / "notes.npy").write_text("not an array")
    np.save(folder / "meta.npy", np.array([{"a": 1}], dtype=object))
    loaded = load_data(folder, XOR_SPECS)
    assert sorted(loaded) == ["x", "y"] and all(np.array_equal(loaded[k], v) for k, v in arrays.items())
    (folder / "y.npy").write_text("not an array")
    with pytest.raises(DataError) as e:
        load_data(folder, XOR_SPECS)
    assert e.value.message == (f"cannot read training data `{folder / 'y.npy'}`: it is not an `.npy` file (it does not "
                               "start with the `.npy` signature)")


def test_data_given_as_keras_tuples_trains_as_the_dict_and_a_bare_array_predicts(tmp_path):
    """Keras's `fit((x, y))` was refused with the dict to write; since 2026-12-05 it trains as the dict does
    (tests/test_python_api.py has the rest of Keras' forms). `predict(x)` of a model with one input takes the
    array itself, as Keras does."""
    program = compile_text(tmp_path, ADAM_MLP)
    x, y = xy(4).values()
    from_tuple = program.train((x, y), epochs=1, batch_size=2, verbose=0, out_dir=tmp_path / "tuple")
    from_dict = program.train({"x": x, "y": y}, epochs=1, batch_size=2, verbose=0, out_dir=tmp_path / "run")
    assert from_tuple.history["loss"] == from_dict.history["loss"]
    np.testing.assert_array_equal(program.predict(x, weights=tmp_path / "run")["h"],
                                  program.predict({"x": x}, weights=tmp_path / "run")["h"])


# ---- resuming a fine-tuning run without its --freeze --------------------------------------------------------
def test_resuming_with_other_freeze_patterns_says_so(tmp_path):
    """The hint said the model source or its -D values had changed."""
    frozen = compile_text(tmp_path, ADAM_MLP, freeze=("dense_0",))
    fit(frozen, xy(8), epochs=1, batch_size=4, out_dir=tmp_path / "run", reporter=Reporter())
    with pytest.raises(DataError) as e:
        fit(compile_text(tmp_path, ADAM_MLP), xy(8), epochs=2, batch_size=4, out_dir=tmp_path / "run",
            reporter=Reporter(), resume=True)
    assert e.value.message.endswith("the checkpoint lacks optimizer state `opt.dense_0.weight.m`, which the model has")
    assert e.value.hint == ("the run kept `dense_0.bias`, `dense_0.weight` frozen: pass the `freeze=...` patterns it "
                            "was trained with to continue it")
    with pytest.raises(DataError) as e:
        fit(compile_text(tmp_path, ADAM_MLP, freeze=("dense_1",)), xy(8), epochs=2, batch_size=4,
            out_dir=tmp_path / "run", reporter=Reporter(), resume=True)
    assert e.value.hint == ("the run kept `dense_0.bias`, `dense_0.weight` frozen and trained `dense_1.bias`, "
                            "`dense_1.weight`: pass the `freeze=...` patterns it was trained with to continue it")
    fit(frozen, xy(8), epochs=2, batch_size=4, out_dir=tmp_path / "run", reporter=Reporter(), resume=True)


def test_an_early_stopping_dict_replaces_the_keys_the_model_declares(tmp_path):
    declared = ADAM_MLP.replace("optimizer adam(lr = 0.01)\n",
                                "optimizer adam(lr = 0.01)\n    callback early_stopping(monitor = \"loss\", patience = 1)\n")
    program = compile_text(tmp_path, declared)
    history = program.train(xy(12), epochs=10, batch_size=4, lr=0.0, verbose=0, out_dir=tmp_path / "d",
                            early_stopping={"min_delta": 1e-3})  # monitor and patience stay the model's
    assert len(history) == 2 and history.stopped_epoch == 2
    history = program.train(xy(12), epochs=4, batch_size=4, lr=0.0, verbose=0, out_dir=tmp_path / "t",
                            early_stopping={"patience": 9})
    assert len(history) == 4 and history.stopped_epoch is None


def test_fmt_check_of_a_folder_without_models_is_an_error(tmp_path, capsys):
    """`dslc fmt --check src/` checked nothing and passed (exit 0)."""
    from dslc import cli

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("x")
    assert cli.main(["fmt", "--check", str(tmp_path / "src")]) == 3
    assert capsys.readouterr().err == (f"error: folder `{tmp_path / 'src'}` holds no `.dl` files\n"
                                       "hint: name the files or folders to format\n")


def test_csv_errors_count_lines_as_the_file_does(tmp_path):
    """A blank line in the middle shifted every later line number by one."""
    from dslc.runtime.data import load_data

    path = tmp_path / "t.csv"
    path.write_text("x_0,x_1,y\n0,1,1\n\n1,abc,0\n")
    with pytest.raises(DataError) as e:
        load_data(path, XOR_SPECS)
    assert e.value.message == f"CSV file `{path}` column `x_1` row 1 (line 4): `abc` is not a number"


# ---- a full disk in the middle of a run ------------------------------------------------------------------
def test_a_run_stopped_by_a_full_disk_says_its_last_epoch_is_kept(tmp_path, monkeypatch, capsys):
    """The error had no hint; Ctrl-C's says how to continue, and the same holds here."""
    import errno

    from dslc import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.dl").write_text(ADAM_MLP)
    np.savez("d.npz", **xy(8))
    write_npz, calls = checkpoint.write_npz, []

    def second_checkpoint_fails(f, arrays):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        write_npz(f, arrays)

    monkeypatch.setattr(checkpoint, "write_npz", second_checkpoint_fails)
    argv = ["train", "m.dl", "--data", "d.npz", "--epochs", "3", "--batch-size", "4", "-o", "run", "-q"]
    assert cli.main(argv) == 3
    assert capsys.readouterr().err == (
        "error: cannot write `run/checkpoint.npz`: No space left on device\n"
        "hint: the last completed epoch is saved; free some space and run the same command with `--resume` to continue\n")
    monkeypatch.setattr(checkpoint, "write_npz", write_npz)
    assert cli.main(argv + ["--resume"]) == 0
    assert checkpoint.load_checkpoint(tmp_path / "run").meta["epoch"] == 3


# ---- predict --dask: Dask's own log records ------------------------------------------------------------------
def test_dask_logs_below_errors_stay_quiet_while_dslc_drives_it(capfd):
    """`dslc predict --dask` printed, now and then, distributed's INFO record of a comm closed at shutdown
    with its traceback, and on Ctrl-C one warning per cancelled chunk."""
    import logging

    pytest.importorskip("distributed")
    from dslc.runtime.dask_predict import quiet_distributed_logs

    before = {n: logging.getLogger(n).level for n in ("distributed", "distributed.client", "distributed.batched")}
    with quiet_distributed_logs():
        try:
            raise ConnectionError("comm closed")
        except ConnectionError:
            logging.getLogger("distributed.batched").info("Batched Comm Closed", exc_info=True)
        logging.getLogger("distributed.worker.state_machine").warning("Async instruction ended with CancelledError")
        logging.getLogger("distributed.client").warning("a client warning")
    assert capfd.readouterr().err == ""
    assert {n: logging.getLogger(n).level for n in before} == before


def test_evaluate_takes_threads_as_train_and_predict_do(tmp_path, monkeypatch, capsys):
    """`dslc evaluate --threads 1` was "unrecognized arguments" (exit 2); `program.evaluate` took it."""
    from dslc import cli
    from dslc.program import Program

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.dl").write_text(ADAM_MLP)
    np.savez("d.npz", **xy(8))
    assert cli.main(["train", "m.dl", "--data", "d.npz", "--epochs", "1", "--batch-size", "4", "-o", "run", "-q"]) == 0
    seen = []
    evaluate = Program.evaluate
    monkeypatch.setattr(Program, "evaluate", lambda self, *a, **k: seen.append(k["threads"]) or evaluate(self, *a, **k))
    assert cli.main(["evaluate", "m.dl", "--weights", "run", "--data", "d.npz", "--threads", "1", "--json"]) == 0
    assert seen == [1] and '"loss": ' in capsys.readouterr().out


def test_the_seq2seq_example_rerun_into_its_folder_says_so(tmp_path):
    """Running examples/seq2seq/decode.py twice ended in a Python traceback (`already holds a training run`)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "seq2seq" / "decode.py"
    spec = importlib.util.spec_from_file_location("seq2seq_decode_rerun", path)
    decode = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(decode)
    (tmp_path / "checkpoint.npz").write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        decode.main(["--epochs", "1", "--out", str(tmp_path)])
    assert e.value.code == f"{tmp_path} holds a run already; choose another --out"
