"""The training loop around the steps: early stopping and the best checkpoint, the validation split,
metrics.csv and the log formats, callbacks, and `program.train` as Keras's `fit` (verbose levels,
Python warnings, a temporary run folder, texts in Python's terms). Runs the hand-built linear
regression of tests/manifest_graphs.py, whose runs are bit-for-bit reproducible."""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import warnings

import numpy as np
import pytest
from manifest_graphs import linreg_data, linreg_program

from dslc import cli
from dslc.diagnostics import DataError, SettingError
from dslc.runtime import checkpoint
from dslc.runtime.callbacks import Callback, EarlyStopping, better_direction
from dslc.runtime.datafiles import split_validation
from dslc.runtime.train import Reporter, fit

QUIET = Reporter()


class Crafted(Callback):
    """Replaces the logged `val_loss` of epoch e by `values[e - 1]`: a run whose validation loss we choose."""

    def __init__(self, values):
        self.values = values

    def on_epoch_end(self, epoch, logs):
        logs["val_loss"] = self.values[epoch - 1]


def params(path):
    return checkpoint.load_checkpoint(path).params


def same_params(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


DATA, VAL = linreg_data(n=40), linreg_data(n=10, seed=1)


# ---- early stopping and the best checkpoint ----------------------------------------------------
@pytest.mark.parametrize("values, spec, stopped, best", [
    ([5, 4, 3, 3.5, 3.2, 3.0, 3.1, 2.9, 1, 1], "patience=3", 6, 3),          # 3.0 does not beat 3.0
    ([5, 4, 3.8, 3.76, 3.6, 1, 1, 1, 1, 1], "patience=2,min_delta=0.25", 4, 2),  # 3.8, 3.76: < 0.25 better
    ([5, 4, 3, 2, 1, 0.5, 0.4, 0.3, 0.2, 0.1], "patience=1", None, 10),        # always improving: runs to the end
    ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "monitor=val_loss,mode=max,patience=2", None, 10),
    ([3, 2, 2, 2, 2, 2, 2, 2, 2, 2], "patience=0", 3, 2),
])
def test_early_stopping_stops_at_the_exact_epoch_and_keeps_the_best(tmp_path, values, spec, stopped, best):
    program = linreg_program()
    history = fit(program, DATA, VAL, epochs=10, batch_size=8, seed=3, out_dir=tmp_path / "run", reporter=QUIET,
                  callbacks=[Crafted(values)], early_stopping=spec)
    assert len(history) == (stopped or 10) and history.stopped_epoch == stopped and history.best_epoch == best
    # best.npz is the checkpoint of the best epoch: the same bits as a run trained for that many epochs
    fit(program, DATA, VAL, epochs=best, batch_size=8, seed=3, out_dir=tmp_path / "short", reporter=QUIET)
    assert same_params(params(tmp_path / "run" / "best.npz"), params(tmp_path / "short"))
    assert checkpoint.load_checkpoint(tmp_path / "run" / "best.npz").meta["epoch"] == best


def test_restore_best_makes_the_best_epoch_the_runs_checkpoint(tmp_path):
    program, notes = linreg_program(), []
    reporter = Reporter()
    reporter.note = notes.append
    fit(program, DATA, VAL, epochs=10, batch_size=8, seed=3, out_dir=tmp_path / "run", reporter=reporter,
        callbacks=[Crafted([5, 4, 3, 3.5, 3.2, 3.0, 1, 1, 1, 1])], early_stopping="patience=3", restore_best=True)
    fit(program, DATA, VAL, epochs=3, batch_size=8, seed=3, out_dir=tmp_path / "short", reporter=QUIET)
    assert same_params(params(tmp_path / "run"), params(tmp_path / "short"))
    assert notes == ["early stopping: `val_loss` has not improved for 3 epochs (best 3 at epoch 3)",
                     "restored the weights of epoch 3 (best `val_loss` 3) into checkpoint.npz"]
    # without early stopping, restore_best alone tracks val_loss and never stops
    history = fit(program, DATA, VAL, epochs=4, batch_size=8, seed=3, out_dir=tmp_path / "alone", reporter=QUIET,
                  callbacks=[Crafted([2, 1, 3, 4])], restore_best=True)
    assert len(history) == 4 and history.best_epoch == 2
    fit(program, DATA, VAL, epochs=2, batch_size=8, seed=3, out_dir=tmp_path / "two", reporter=QUIET)
    assert same_params(params(tmp_path / "alone"), params(tmp_path / "two"))


def test_early_stopping_on_real_values_and_resume(tmp_path):
    """lr = 0: the validation loss never moves, so the run stops after 1 + patience epochs; a resumed
    run replays the history and stops where the uninterrupted one did."""
    program = linreg_program()
    history = fit(program, DATA, VAL, epochs=20, batch_size=8, lr=0.0, out_dir=tmp_path / "a", reporter=QUIET,
                  early_stopping="patience=4")
    assert len(history) == 5 and history.stopped_epoch == 5 and history.best_epoch == 1
    fit(program, DATA, VAL, epochs=3, batch_size=8, lr=0.0, out_dir=tmp_path / "b", reporter=QUIET,
        early_stopping="patience=4")
    resumed = fit(program, DATA, VAL, epochs=20, batch_size=8, lr=0.0, out_dir=tmp_path / "b", reporter=QUIET,
                  early_stopping="patience=4", resume=True)
    assert len(resumed) == 5 and resumed.stopped_epoch == 5
    # resuming the stopped run with more epochs: the replayed patience is spent, and the run says so first
    warned = []
    reporter = Reporter()
    reporter.warn = warned.append
    again = fit(program, DATA, VAL, epochs=30, batch_size=8, lr=0.0, out_dir=tmp_path / "a", reporter=reporter,
                early_stopping="patience=4", resume=True)
    assert len(again) == 6 and again.stopped_epoch == 6
    assert warned == ["early stopping stopped this run after epoch 5 (`val_loss` has not improved for 4 epochs (best "
                      f"{again[0]['val_loss']:.6g} at epoch 1)), so the resumed run stops again after one more epoch; "
                      "to train on, resume with `early_stopping=False` or a larger patience "
                      '(`early_stopping="patience=10"`)']
    longer = fit(program, DATA, VAL, epochs=8, batch_size=8, lr=0.0, out_dir=tmp_path / "a", reporter=QUIET,
                 early_stopping="patience=10", resume=True)
    assert len(longer) == 8 and longer.stopped_epoch is None


def test_an_early_stopping_object_serves_several_runs(tmp_path):
    stopping = EarlyStopping(patience=2)
    for run in ("a", "b"):  # the second run starts from a clean state, monitoring what its data allows
        history = linreg_program().train(DATA, VAL if run == "a" else None, epochs=10, batch_size=8, lr=0.0,
                                         out_dir=tmp_path / run, verbose=0, early_stopping=stopping)
        assert len(history) == 3 and stopping.monitor == ("val_loss" if run == "a" else "loss")


def test_early_stopping_monitor_and_mode():
    assert [better_direction(n) for n in ("val_loss", "mse", "val_mae", "gen.loss", "val_accuracy", "f1")] == [
        "min", "min", "min", "min", "max", "max"]
    with pytest.raises(DataError, match="cannot tell whether `val_gap` is better lower or higher"):
        better_direction("val_gap")
    es = EarlyStopping.parse("monitor=val_mse, patience=7,min_delta=0.5,mode=max")
    assert (es.monitor, es.patience, es.min_delta, es.mode) == ("val_mse", 7, 0.5, "max")
    with pytest.raises(DataError) as e:
        EarlyStopping.parse("patients=3")
    assert e.value.hint == "did you mean `patience`?"
    with pytest.raises(DataError, match="`patience` must be a number, got `x`"):
        EarlyStopping.parse("patience=x")


def test_a_nan_monitored_value_is_never_the_best():
    """As in Keras's comparisons: a NaN epoch never improves, even the first; before, a NaN first epoch
    became the best for good ("best nan at epoch 1"), and `restore_best` restored its weights."""
    stopping = EarlyStopping(monitor="gap_loss", patience=2)
    stopping.resolve(["gap_loss"], False)
    assert [stopping.on_epoch_end(e, {"gap_loss": v}) for e, v in ((1, math.nan), (2, 0.5), (3, math.nan))] == [
        False, False, False]
    assert (stopping.best, stopping.best_epoch, stopping.on_epoch_end(4, {"gap_loss": 0.7})) == (0.5, 2, True)
    stopping.resolve(["gap_loss"], False)
    assert [stopping.on_epoch_end(e, {"gap_loss": math.nan}) for e in (1, 2)] == [False, True]
    assert stopping.best_epoch is None
    assert stopping.describe_stop() == ("early stopping: `gap_loss` has not improved for 2 epochs "
                                        "(it was NaN in every epoch)")


def test_resuming_a_run_whose_best_epoch_was_restored_says_what_it_drops(tmp_path):
    """`restore_best` makes the best epoch's checkpoint the run's; resumed, the run continues from it and
    the history's later epochs are trained again: said, no longer silently."""
    settings = dict(epochs=10, batch_size=8, lr=0.0, out_dir=tmp_path / "r", verbose=0, early_stopping="patience=2",
                    restore_best=True)
    first = linreg_program().train(DATA, VAL, **settings)
    assert (len(first), first.best_epoch) == (3, 1)  # lr 0: no epoch beats the first
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = linreg_program().train(DATA, VAL, **settings, resume=True)
    assert [str(w.message) for w in caught] == [
        "the checkpoint is epoch 1's, the best epoch, restored at the end of the last run: the history's epochs 2 "
        "to 3 are dropped and trained again"]
    assert [r["epoch"] for r in again] == [1, 2, 3]


def test_restore_best_on_a_run_with_no_epoch_left(tmp_path):
    """A run resumed with nothing left to train (stopped between its last save and the restore, or resumed
    to ask for the best epoch) returned at once and kept the last epoch's weights."""
    settings = dict(epochs=3, batch_size=8, lr=0.0, out_dir=tmp_path / "r", verbose=0, early_stopping="patience=50")
    linreg_program().train(DATA, VAL, **settings)  # tracks best.npz (epoch 1: lr 0 never improves on it)
    assert checkpoint.load_checkpoint(tmp_path / "r").meta["epoch"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "nothing to do"
        linreg_program().train(DATA, VAL, **settings, resume=True, restore_best=True)
    assert checkpoint.load_checkpoint(tmp_path / "r").meta["epoch"] == 1


def test_early_stopping_checks_its_monitor_before_writing(tmp_path):
    with pytest.raises(DataError) as e:
        fit(linreg_program(), DATA, epochs=2, batch_size=8, out_dir=tmp_path / "r", reporter=QUIET,
            early_stopping="monitor=val_loss")
    assert e.value.message == "early stopping monitors `val_loss`, which the run does not log"
    assert e.value.hint == "pass validation data (`val=...` or `val_split=...`), or monitor `loss`"
    assert isinstance(e.value, SettingError) and e.value.exit_code == 2  # the command line's `dslc train` exit code
    assert not (tmp_path / "r").exists()
    with pytest.raises(DataError) as e:
        fit(linreg_program(), DATA, VAL, epochs=2, batch_size=8, out_dir=tmp_path / "r", reporter=QUIET,
            early_stopping="monitor=val_mae")
    assert e.value.hint == "did you mean `val_mse`?"
    history = fit(linreg_program(), DATA, epochs=2, batch_size=8, out_dir=tmp_path / "t", reporter=QUIET,
                  early_stopping="")  # the default monitor without validation data: `loss`
    assert history.best_epoch == 2


# ---- the validation split ------------------------------------------------------------------------
def test_val_split_is_a_function_of_the_seed(tmp_path):
    data = {"x": np.arange(20.0).reshape(20, 1), "y": np.arange(20)}
    train, val = split_validation(data, 0.25, seed=4)
    assert len(val["x"]) == 5 and len(train["x"]) == 15
    assert sorted(np.concatenate([train["y"], val["y"]]).tolist()) == list(range(20))
    assert np.all(np.diff(val["y"]) > 0) and np.array_equal(val["x"][:, 0], val["y"])  # rows stay whole, in order
    again, other = split_validation(data, 0.25, seed=4)[1], split_validation(data, 0.25, seed=5)[1]
    assert np.array_equal(again["y"], val["y"]) and not np.array_equal(other["y"], val["y"])
    assert len(split_validation(data, 0.1, seed=0)[1]["y"]) == 2  # Keras's count: 20 - int(20 * 0.9)
    assert len(split_validation(data, 0.001, seed=0)[1]["y"]) == 1  # rounded up
    with pytest.raises(DataError, match="a validation split of 0.99 of 20 samples leaves no training sample"):
        split_validation(data, 0.99, seed=0)
    with pytest.raises(DataError, match="between 0 and 1, got 1.5"):
        split_validation(data, 1.5, seed=0)


def test_val_split_trains_on_the_rest_and_validates_on_the_held_out(tmp_path):
    program = linreg_program()
    history = fit(program, DATA, epochs=2, batch_size=8, seed=6, val_split=0.2, out_dir=tmp_path / "s",
                  reporter=QUIET)
    train, val = split_validation(DATA, 0.2, seed=6)
    explicit = fit(program, train, val, epochs=2, batch_size=8, seed=6, out_dir=tmp_path / "e", reporter=QUIET)
    strip = lambda h: [{k: v for k, v in e.items() if k not in ("time", "samples_per_s")} for e in h]
    assert strip(history) == strip(explicit)
    assert checkpoint.load_checkpoint(tmp_path / "s").meta["val_split"] == 0.2
    with pytest.raises(DataError, match="give validation data or a validation split, not both"):
        fit(program, DATA, VAL, epochs=1, batch_size=8, val_split=0.2, out_dir=tmp_path / "x", reporter=QUIET)
    warned = []
    reporter = Reporter()
    reporter.warn = warned.append
    fit(program, DATA, epochs=3, batch_size=8, seed=6, val_split=0.3, out_dir=tmp_path / "s", resume=True,
        reporter=reporter)
    assert warned == ["the validation split differs from the checkpoint's (0.3 now, 0.2 before): the run will not "
                      "match an uninterrupted one"]


# ---- logs ----------------------------------------------------------------------------------------
def test_metrics_csv_has_keras_csvlogger_columns(tmp_path):
    history = fit(linreg_program(), DATA, VAL, epochs=3, batch_size=8, out_dir=tmp_path, reporter=QUIET)
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "loss", "lr", "mse", "samples_per_s", "steps", "time", "val_loss", "val_mse"]
    assert [int(r[0]) for r in rows[1:]] == [1, 2, 3]
    for row, record in zip(rows[1:], history):
        assert [float(v) for v in row[1:]] == [record[k] for k in rows[0][1:]]




def test_metrics_csv_appends_a_row_an_epoch_and_rewrites_only_when_it_must(tmp_path, monkeypatch):
    """Rewritten every epoch, the file cost time growing with the run (3.6 ms an epoch at epoch 1,000)."""
    from dslc.runtime import run_hooks

    rewrites = []
    original = run_hooks.atomic_write_bytes
    monkeypatch.setattr(run_hooks, "atomic_write_bytes", lambda path, data, durable: (rewrites.append(data),
                                                                                      original(path, data, durable)))
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,loss\n1,9.0\n2,9.0\n3,9.0\n4,9.0\n")  # a resumed run's: rows past its checkpoint
    history = [{"epoch": e, "loss": 1.0 / e, "steps": 4 * e} for e in (1, 2)]
    table = run_hooks.MetricsCsv(path)

    def rows():
        with open(path, newline="") as f:
            return list(csv.reader(f))

    table.write(history)  # the first write of this process: the whole file
    assert rows() == [["epoch", "loss", "steps"], ["1", "1.0", "4"], ["2", "0.5", "8"]] and len(rewrites) == 1
    for epoch in range(3, 40):
        history.append({"epoch": epoch, "loss": 1.0 / epoch, "steps": 4 * epoch})
        table.write(list(history))
    assert len(rewrites) == 1 and len(rows()) == 40 and rows()[-1] == ["39", repr(1 / 39), "156"]
    history.append({"epoch": 40, "loss": 0.025, "steps": 160, "lr": 0.5})  # a key appears: new columns
    table.write(list(history))
    assert len(rewrites) == 2 and rows()[0] == ["epoch", "loss", "lr", "steps"]
    assert rows()[1] == ["1", "1.0", "", "4"] and rows()[-1] == ["40", "0.025", "0.5", "160"]
    path.write_text("edited\n")  # not as the run left it: written whole again
    history.append({"epoch": 41, "loss": 0.02, "steps": 164, "lr": 0.5})
    table.write(list(history))
    assert len(rewrites) == 3 and len(rows()) == 42
    path.unlink()
    history.append({"epoch": 42, "loss": 0.01, "steps": 168, "lr": 0.5})
    table.write(list(history))
    assert len(rewrites) == 4 and len(rows()) == 43 and rows()[0][0] == "epoch"
@pytest.fixture
def fake_compiler(linreg_cli):
    np.savez(linreg_cli / "train.npz", **DATA)
    np.savez(linreg_cli / "val.npz", **VAL)


def train_cli(*flags):
    return cli.main(["train", "linreg.dl", "--data", "train.npz", "--batch-size", "8", *flags])


def test_jsonl_log_format(fake_compiler, capsys):
    assert train_cli("--val", "val.npz", "--epochs", "2", "-o", "run", "--log-format", "jsonl", "--log-every", "2") == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == ["start"] + ["step", "step", "epoch"] * 2 + ["end"]
    assert events[0]["samples"] == 40 and events[0]["steps_per_epoch"] == 5
    assert [(e["epoch"], e["step"]) for e in events if e["event"] == "step"] == [(1, 2), (1, 4), (2, 2), (2, 4)]
    history = [json.loads(line) for line in open("run/history.jsonl")]
    assert [{k: v for k, v in e.items() if k != "event"} for e in events if e["event"] == "epoch"] == history
    assert events[-1]["epochs"] == 2 and events[-1]["checkpoint"].endswith("checkpoint.npz")


def test_jsonl_log_format_ends_a_failed_run_with_an_error_event(fake_compiler, capsys):
    """A script reading the events learns why the run stopped: the last event is `error`, with the exit
    code and the lines stderr shows."""
    assert train_cli("--val", "missing.npz", "--epochs", "1", "-o", "run", "--log-format", "jsonl") == cli.EXIT_DATA
    out, err = capsys.readouterr()
    last = json.loads(out.splitlines()[-1])
    assert last == {"event": "error", "exit": cli.EXIT_DATA, "message": err.rstrip("\n")}
    assert last["message"].startswith("error: ") and "missing.npz" in last["message"]
    assert train_cli("--epochs", "1", "-o", "run2") == cli.EXIT_OK  # text logs: stdout holds no event
    assert "event" not in capsys.readouterr().out


def test_quiet_prints_only_warnings_and_log_every_prints_steps(fake_compiler, capsys):
    assert train_cli("--epochs", "1", "-o", "run", "-q") == 0
    assert capsys.readouterr() == ("", "")
    assert train_cli("--epochs", "2", "--batch-size", "4", "-o", "run", "-q", "--resume") == 0
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("warning: the batch size differs from the checkpoint's (4 now, 8 before)")
    assert train_cli("--epochs", "1", "-o", "steps", "--log-every", "2") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" - ")[:2] for line in lines if " - step " in line] == [["epoch 1/1", "step 2/5"],
                                                                             ["epoch 1/1", "step 4/5"]]


def test_cli_early_stopping_val_split_and_restore_best(fake_compiler, capsys):
    assert train_cli("--epochs", "30", "-o", "run", "--lr", "0", "--val-split", "0.25",
                     "--early-stopping", "patience=2", "--restore-best") == 0
    out = capsys.readouterr().out
    assert "early stopping: `val_loss` has not improved for 2 epochs (best " in out and "at epoch 1)" in out
    assert "30 samples, 10 validation samples" in out
    assert len(open("run/history.jsonl").readlines()) == 3
    assert train_cli("--epochs", "3", "-o", "bad", "--early-stopping", "monitor=val_loss") == 2  # a usage error
    assert capsys.readouterr().err == ("error: early stopping monitors `val_loss`, which the run does not log\n"
                                       "hint: pass validation data (`--val` or `--val-split`), or monitor `loss`\n")
    for flags in (["--reduce-lr-on-plateau", "monitor=val_loss"], ["--early-stopping", "monitor=spread"],
                  ["--early-stopping", "--workers", "2"]):  # settings that do not hold together: exit 2 as well
        assert train_cli("--epochs", "3", "-o", "bad", *flags) == 2, flags
        assert capsys.readouterr().err.startswith("error: ")
    assert not os.path.exists("bad")
    assert train_cli("--epochs", "3", "-o", "bad", "--val-split", "1.5") == 2
    assert "expected a fraction between 0 and 1, got `1.5`" in capsys.readouterr().err


# ---- callbacks and program.train as fit ------------------------------------------------------------
def test_callbacks_see_each_step_and_epoch_and_can_stop(tmp_path):
    class Stopper(Callback):
        def __init__(self):
            self.seen = []

        def on_train_begin(self, info):
            self.seen.append(("begin", info["epochs"]))

        def on_step_end(self, step, logs):
            self.seen.append(("step", step, round(logs["loss"], 6)))
            return len(self.seen) == 9  # the 2nd step of epoch 2

        def on_epoch_end(self, epoch, logs):
            self.seen.append(("epoch", epoch))

        def on_train_end(self, history):
            self.seen.append(("end", len(history)))

    stopper = Stopper()
    history = fit(linreg_program(), linreg_data(n=20), epochs=5, batch_size=4, out_dir=tmp_path, reporter=QUIET,
                  callbacks=[stopper])
    assert [s[:2] for s in stopper.seen] == [("begin", 5)] + [("step", i) for i in range(1, 6)] + [("epoch", 1)] + [
        ("step", 1), ("step", 2), ("end", 1)]
    assert len(history) == 1 and history.stopped_epoch == 1
    assert checkpoint.load_checkpoint(tmp_path).meta["epoch"] == 1  # the last whole epoch

    class Epochs:  # any object with the methods will do
        def on_epoch_end(self, epoch, logs):
            return epoch == 2

    assert len(fit(linreg_program(), DATA, epochs=5, batch_size=8, out_dir=tmp_path / "b", reporter=QUIET,
                   callbacks=[Epochs()])) == 2
    with pytest.raises(DataError, match="has none of the methods"):
        fit(linreg_program(), DATA, epochs=1, batch_size=8, out_dir=tmp_path / "c", callbacks=[object()])


def test_program_train_verbose_levels_and_temporary_run(capsys, tmp_path):
    program = linreg_program()
    history = program.train(DATA, VAL, epochs=2, batch_size=8, verbose=0)
    assert capsys.readouterr().out == ""
    assert (history.out_dir / "checkpoint.npz").exists() and history.out_dir.name.startswith("dslc-linreg-")
    shutil.rmtree(history.out_dir)
    assert history.history["val_loss"] == [h["val_loss"] for h in history]
    program.train(DATA, epochs=2, batch_size=8, verbose=2, out_dir=tmp_path)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("training linreg for 2 epochs on cpu: 40 samples")
    assert [line.split(" - ")[0] for line in lines[1:3]] == ["epoch 1/2", "epoch 2/2"]
    with pytest.raises(DataError, match="`verbose` must be 0, 1, 2 or \"auto\", got 3"):
        program.train(DATA, epochs=1, batch_size=8, verbose=3)


def test_program_train_warns_as_python_and_speaks_python(tmp_path):
    program = linreg_program()
    program.train(DATA, epochs=1, batch_size=8, out_dir=tmp_path, verbose=0)
    with pytest.warns(UserWarning, match="the batch size differs from the checkpoint's") as caught:
        program.train(DATA, epochs=2, batch_size=4, out_dir=tmp_path, resume=True, verbose=0)
    assert caught[0].filename == __file__  # pointed at the caller's line
    with pytest.raises(DataError) as e:
        program.train(DATA, epochs=1, batch_size=8, out_dir=tmp_path, verbose=0)
    assert e.value.hint == "pass `resume=True` to continue it, or choose another output directory"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        program.train(DATA, epochs=1, batch_size=8, out_dir=tmp_path / "quiet", verbose=0)
