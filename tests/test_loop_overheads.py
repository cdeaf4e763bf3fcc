"""What the training loop does between the steps, made cheap without changing what a step sees: batches
gathered into host arrays the step bound once (`dslc/runtime/batches.py`, `TrainStep.bind_batch`), the
running means computed only for a reporter that reads them (`Reporter.wants_step`), the per-step fault
point asked once per run (`faults.armed`)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from golden import ROOT
from manifest_graphs import LR, W0, linreg_data, linreg_program

import dslc
from dslc import fsutil
from dslc.runtime import devices, faults, session
from dslc.runtime.batches import EpochBatches
from dslc.runtime.progress import ConsoleReporter, JsonLinesReporter
from dslc.runtime.rows import RowView
from dslc.runtime.train import Reporter, fit


def train_step(program):
    return session.TrainStep(program.graphs["train"], program.manifest["graphs"]["train"], threads=1,
                             initial=program.initial_values())


def test_bound_batch_arrays_are_read_when_the_step_runs():
    """Steps fed the bound arrays, refilled in place, equal steps fed fresh arrays bit for bit, through
    both buffer sets, a second bound set of another length, and plain arrays in between."""
    program, d = linreg_program(), linreg_data(n=40)
    bound, plain = train_step(program), train_step(program)
    full = {k: np.empty((8, *a.shape[1:]), a.dtype) for k, a in d.items()}
    last = {k: np.empty((5, *a.shape[1:]), a.dtype) for k, a in d.items()}
    bound.bind_batch(full)
    rng = np.random.default_rng(0)
    for k, rows in enumerate([8, 8, 5, 8, 3, 8, 8, 5, 5, 8]):
        idx = rng.permutation(40)[:rows]
        fresh = {name: a[idx] for name, a in d.items()}
        if rows == 3:  # not a bound set: bound as given, the bound sets stay usable
            fed = fresh
        else:
            fed = full if rows == 8 else last
            if rows == 5 and k in (2, 7):
                bound.bind_batch(last)
            elif rows == 8 and k in (3, 9):
                bound.bind_batch(full)
            for name, a in d.items():
                fed[name][...] = a[idx]
        assert bound.step(fed) == plain.step(fresh)
    a, b = bound.get_values(), plain.get_values()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_set_values_forgets_the_bound_batch():
    program, d = linreg_program(), linreg_data(n=8)
    step = train_step(program)
    buffers = {k: a.copy() for k, a in d.items()}
    step.bind_batch(buffers)
    step.set_values(program.initial_values())  # new bindings: the batch is bound again by the next step
    reference = train_step(program)
    assert step.step(buffers) == reference.step(d)


def test_epoch_batches_gather_into_reused_bound_arrays():
    d = linreg_data(n=10)
    bound = []

    class Trainer:
        def bind_batch(self, buffers):
            bound.append(buffers)

    batches = EpochBatches(d, Trainer())
    order = np.random.default_rng(1).permutation(10)
    first = batches.batch(order[:4])
    assert all(np.array_equal(first[k], d[k][order[:4]]) for k in d)
    second = batches.batch(order[4:8])
    assert second is first and all(np.array_equal(second[k], d[k][order[4:8]]) for k in d)
    tail = batches.batch(order[8:])
    assert tail is not first and all(np.array_equal(tail[k], d[k][order[8:]]) for k in d)
    again = batches.batch(order[:4])
    assert again is first and [id(b) for b in bound] == [id(first), id(tail), id(first)]  # bound on each switch


def test_epoch_batches_read_unbound_for_rows_views_and_other_trainers():
    d = linreg_data(n=10)
    rows = np.array([3, 1, 4])
    views = {k: RowView(a) for k, a in d.items()}
    batch = EpochBatches(views, session.TrainStep.__new__(session.TrainStep)).batch(rows)
    assert all(np.array_equal(batch[k], d[k][rows]) for k in d)
    plain = EpochBatches(d, object())  # e.g. `SharedSteps`: fresh arrays every batch
    one, two = plain.batch(rows), plain.batch(rows)
    assert one is not two and all(np.array_equal(one[k], d[k][rows]) for k in d)


class Steps(Reporter):
    def __init__(self):
        self.seen = []

    def step_end(self, step, logs):
        self.seen.append((step, dict(logs)))


def test_a_reporter_that_overrides_step_end_sees_every_step_and_its_running_means(tmp_path):
    program, d = linreg_program(), linreg_data(n=20)
    reporter = Steps()
    history = fit(program, d, epochs=2, batch_size=8, seed=1, out_dir=tmp_path, reporter=reporter)
    assert [s for s, _ in reporter.seen] == [1, 2, 3, 1, 2, 3]
    assert reporter.seen[2][1]["loss"] == pytest.approx(history[0]["loss"], rel=1e-12)  # the epoch's mean
    assert not Reporter().wants_step(1)


def test_console_and_jsonl_reporters_want_only_the_steps_they_print():
    text = ConsoleReporter(io.StringIO(), tty=False, log_every=3)
    jsonl = JsonLinesReporter(io.StringIO(), log_every=2)
    assert [s for s in range(1, 8) if text.wants_step(s)] == [3, 6]
    assert [s for s in range(1, 8) if jsonl.wants_step(s)] == [2, 4, 6]
    assert not any(ConsoleReporter(io.StringIO(), tty=False).wants_step(s) for s in range(1, 8))

    class EveryStep(ConsoleReporter):
        def step_end(self, step, logs):
            pass

    assert all(EveryStep(io.StringIO(), tty=False).wants_step(s) for s in range(1, 8))


def test_fault_points_are_armed_by_name(monkeypatch):
    monkeypatch.delenv("DSLC_FAULT", raising=False)
    assert not faults.armed("step")
    monkeypatch.setenv("DSLC_FAULT", "step:3:STOP")
    assert faults.armed("step") and not faults.armed("checkpoint-write")


def test_evaluator_rebinds_only_changed_parameters_and_reads_bound_outputs():
    """The same values as a fresh evaluator's, as the parameters change under it (the ping-pong buffer
    sets of the training step, then new values altogether)."""
    program, d = linreg_program(), linreg_data(n=12)
    step = train_step(program)
    spec = program.manifest["graphs"]["eval"]
    kept = session.Evaluator(program.graphs["eval"], spec, threads=1)
    results = []
    for k in range(4):
        first = kept.run(d, step.ortvalues())
        assert first == kept.run(d, step.ortvalues())  # bound once, same answer
        assert first == session.Evaluator(program.graphs["eval"], spec, threads=1).run(d, step.ortvalues())
        results.append(first["loss"])
        step.step(d) if k != 2 else step.set_values(program.initial_values())
    assert results[0] == results[3] and len(set(results[:3])) == 3


def test_sessions_made_ahead_are_the_sessions_steps_use(tmp_path):
    """`SessionAhead` hands over the session its thread made, or raises the error making it raised, in
    the caller's thread; `fit` with sessions made ahead trains as before (bit for bit)."""
    program, d = linreg_program(), linreg_data(n=20)
    ahead = devices.SessionAhead(program.graphs["train"], "cpu", 1, memory_pattern=False)
    step = session.TrainStep(program.graphs["train"], program.manifest["graphs"]["train"], threads=1,
                             initial=program.initial_values(), ahead=ahead)
    assert step.session is ahead.result() and step.step(d) == train_step(program).step(d)
    with pytest.raises(session.DataError, match="unknown device `tpu`"):
        devices.SessionAhead(program.graphs["train"], "tpu").result()
    with pytest.raises(session.DataError, match="the number of threads"):
        fit(program, d, d, epochs=1, batch_size=8, out_dir=tmp_path / "bad", reporter=Reporter(), threads=0)
    assert not (tmp_path / "bad").exists()  # failed before writing, as without the threads


def spinning_stop(sess) -> str:
    """A session's `session.force_spinning_stop`, or "unset"."""
    try:
        return sess.get_session_options().get_session_config_entry("session.force_spinning_stop")
    except Exception:  # noqa: BLE001 - ONNX Runtime raises for an entry never set
        return "unset"


def test_the_validation_session_stops_spinning_when_its_runs_return(tmp_path, monkeypatch):
    """The training loop's validation session is made with `session.force_spinning_stop` (its pool spun
    on after validation and took a core from the training steps; timed by examples/bench), the training
    session and a lone evaluation session without it."""
    program, d = linreg_program(), linreg_data(n=20)
    made = []
    original = devices.make_session

    def recording(*args, **kwargs):
        sess = original(*args, **kwargs)
        made.append(spinning_stop(sess))
        return sess

    monkeypatch.setattr(devices, "make_session", recording)
    fit(program, d, d, epochs=2, batch_size=8, out_dir=tmp_path / "run", reporter=Reporter(), threads=1)
    assert sorted(made) == ["1", "unset"]  # the validation session's, the training session's
    lone = session.Evaluator(program.graphs["eval"], program.manifest["graphs"]["eval"], threads=1)
    assert spinning_stop(lone.session) == "unset"  # ONNX Runtime's default: spinning on between runs


def test_the_graphs_of_several_objectives_stop_spinning_between_their_turns():
    """A GAN's discriminator and generator sessions run in turn: each stops its pool spinning when its
    run returns; one objective's `SharedSteps` (a `--freeze` run) keeps spinning between its steps."""
    program = dslc.compile(ROOT / "models" / "gan.dl")
    graphs = [(k, program.graphs[k], program.manifest["graphs"][k]) for k in ("train.discriminator", "train.generator")]
    both = session.SharedSteps(graphs, threads=1, initial=program.initial_values())
    assert [spinning_stop(g["session"]) for g in both.graphs] == ["1", "1"]
    one = session.SharedSteps(graphs[:1], threads=1, initial=program.initial_values())
    assert [spinning_stop(g["session"]) for g in one.graphs] == ["unset"]


def test_hyper_parameters_written_only_when_they_change():
    """A step feeds what it is given, else the compiled default, whatever the steps before were fed: the
    numpy SGD of tests/manifest_graphs.py with each step's learning rate."""
    program, d = linreg_program(), linreg_data(n=8)
    step = train_step(program)
    f32 = np.float32
    W, b = W0[:3].astype(f32), np.zeros(1, f32)
    for hyper in [None, {"lr": 0.05}, {"lr": 0.05}, None, {"lr": 0.2}, None, None, {"lr": 0.02}]:
        step.step(d, hyper)
        lr = f32((hyper or {}).get("lr", LR))
        g = (d["x"] @ W + b - d["y"]) * f32(2) / f32(len(d["y"]))
        W, b = W - lr * (d["x"].T @ g), b - lr * g.sum(0)
        np.testing.assert_allclose(step.get_values()["lin.W"], W, rtol=0, atol=1e-6)


def test_train_loop_benchmark_splits_the_whole_wall_time_at_the_runs(monkeypatch, tmp_path):
    """examples/bench/train_loop.py's in-process split: the runs and the time around them add up to the
    run's wall time, and the steps it times hold the runs."""
    import sys
    from pathlib import Path

    monkeypatch.setenv("DSLC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples" / "bench"))
    import train_loop

    parts = train_loop.dslc_breakdown(2, 64, 1)
    sys.modules.pop("train_loop", None)
    around = sum(parts[k] for k in ("runs_s", "before_first_run_s", "between_training_runs_s", "around_validation_s",
                                    "after_last_run_s"))
    assert around == pytest.approx(parts["wall_s"], rel=1e-9)
    assert parts["training_run_gaps"] == 2 * (23 - 1)  # inside each epoch of 23 steps (1,438 rows, batches of 64)
    assert parts["runs_s"] < parts["train_steps_s"] + parts["eval_steps_s"] < parts["loop_s"] < parts["wall_s"]
    assert "main_cpu_s" not in parts

    cpu = train_loop.dslc_breakdown(2, 64, 1, cpu=True)  # the main thread's CPU clock split the same way
    main = sum(cpu[k] for k in ("runs_cpu_s", "before_first_run_cpu_s", "between_training_runs_cpu_s",
                                "around_validation_cpu_s", "after_last_run_cpu_s"))
    assert main == pytest.approx(cpu["main_cpu_s"], rel=1e-9)
    assert 0 < cpu["runs_cpu_s"] < cpu["main_cpu_s"] and cpu["other_threads_cpu_s"] > 0  # the sessions made ahead


def test_the_run_folders_graphs_land_before_the_first_checkpoint_and_their_error_stops_the_run(tmp_path, monkeypatch):
    """The graphs and manifest are written on the saver's thread while the first epoch trains: they are in
    place when the first epoch ends (before its checkpoint), and a failure writing them is the run's error,
    with no checkpoint written after it."""
    program, d = linreg_program(), linreg_data(n=20)
    seen = []

    class Look:
        def on_epoch_end(self, epoch, logs):
            seen.append((epoch, sorted(p.name for p in tmp_path.joinpath("ok").iterdir() if not p.name.startswith("."))))

    fit(program, d, epochs=2, batch_size=8, out_dir=tmp_path / "ok", reporter=Reporter(), callbacks=[Look()])
    graphs = sorted([g["file"] for g in program.manifest["graphs"].values()] + [program.manifest_file])
    assert seen[0] == (1, graphs)  # the callback sees the epoch before its checkpoint is saved

    def full_disk(self, out_dir, durable=True):
        raise fsutil.WriteError(28, "No space left on device", str(out_dir))

    monkeypatch.setattr(type(program), "build", full_disk)
    with pytest.raises(fsutil.WriteError, match="No space left"):
        fit(program, d, epochs=2, batch_size=8, out_dir=tmp_path / "full", reporter=Reporter())
    assert not (tmp_path / "full" / "checkpoint.npz").exists()
