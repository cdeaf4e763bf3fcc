"""The learning rate as Keras and PyTorch users follow it: `lr` in every epoch's history entry (the rate of
the epoch's last step) and `callback reduce_lr_on_plateau(...)` (`--reduce-lr-on-plateau`,
`reduce_lr_on_plateau=`): the rates against a hand computation and against
`torch.optim.lr_scheduler.ReduceLROnPlateau` fed the same monitored values, the weights against numpy SGD
at those rates, exact resume, the overrides, and the errors at their arguments."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from manifest_graphs import W0, linreg_data, linreg_program, numpy_sgd
from test_declared_callbacks import MODEL as DECLARED
from test_training_loop import Crafted

import dslc
from dslc import cli
from dslc.diagnostics import DataError, DslcError
from dslc.runtime.checkpoint import load_checkpoint
from dslc.runtime.plateau import ReduceLROnPlateau
from dslc.runtime.progress import ConsoleReporter
from dslc.runtime.train import Reporter, fit

DATA, VAL = linreg_data(n=40), linreg_data(n=10, seed=1)
# crafted val_loss of epochs 1..12; with patience 2, cooldown 1, factor 0.5, min_lr 0.03 from lr 0.1:
#   4 (4.5, 4.2: two without gain) -> 0.05; 5 improves, in cooldown; 7 (3.1, 3.05) -> 0.025, held at 0.03;
#   8 in cooldown; 12 (2.5, 2.6) would reduce, but the rate is at min_lr already
VALUES = [5, 4, 4.5, 4.2, 3, 3.1, 3.05, 3.2, 3.3, 2, 2.5, 2.6]
BY_HAND = [0.1] * 4 + [0.05] * 3 + [0.03] * 5
SETTINGS = {"patience": 2, "factor": 0.5, "cooldown": 1, "min_lr": 0.03, "min_delta": 0.0}


def run(tmp_path, name, epochs=12, **kw):
    kw.setdefault("reduce_lr_on_plateau", dict(SETTINGS))
    return fit(linreg_program(), DATA, VAL, epochs=epochs, batch_size=8, seed=3, out_dir=tmp_path / name,
               reporter=kw.pop("reporter", Reporter()), callbacks=[Crafted(VALUES)], **kw)


def torch_rates(values, base, *, factor, patience, min_delta, cooldown, min_lr, mode="min"):
    """The rate of each epoch under PyTorch's scheduler stepped after each epoch with its value: dslc's
    `patience` is Keras's (reduce after that many epochs without gain), PyTorch's one more; dslc's `min_delta`
    is absolute, PyTorch's `threshold_mode="abs"`; dslc reduces any rate above `min_lr`, PyTorch only by more
    than its `eps` (1e-8: none below ~1.1e-8 with factor 0.1), 0 here."""
    torch = pytest.importorskip("torch")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=mode, factor=factor, patience=max(patience - 1, 0), threshold=min_delta,
        threshold_mode="abs", cooldown=cooldown, min_lr=min_lr, eps=0.0)
    rates = []
    for value in values:
        rates.append(optimizer.param_groups[0]["lr"])
        scheduler.step(value)
    return rates


def test_the_rates_of_a_crafted_run_by_hand_and_as_pytorch_gives_them(tmp_path):
    reporter = ConsoleReporter(io.StringIO(), tty=False)
    history = run(tmp_path, "r", reporter=reporter)
    assert [h["lr"] for h in history] == pytest.approx(BY_HAND, rel=1e-15)
    assert [h["lr"] for h in history] == pytest.approx(torch_rates(VALUES, 0.1, **SETTINGS), rel=1e-15)
    out = reporter.stream.getvalue()
    assert "epoch 4/12 - " in out and out.count("learning rate ×0.5") == 2  # the 12th: at min_lr, no message
    assert "epoch 4: `reduce_lr_on_plateau`: `val_loss` has not improved for 2 epochs (best 4 at epoch 2); " \
           "learning rate ×0.5: lr 0.05" in out
    assert " - lr 0.05\n" in out  # the epoch lines show the rate in a run where it changes
    # the graph was fed those rates: the weights are numpy SGD's over the same batches at each epoch's rate
    W, b = W0[:3].astype(np.float32), np.zeros(1, np.float32)
    for epoch, rate in enumerate(BY_HAND):
        W, b, _ = numpy_sgd(W, b, DATA, epochs=epoch + 1, batch_size=8, seed=3, lr=rate, first_epoch=epoch)
    params = load_checkpoint(tmp_path / "r").params
    np.testing.assert_allclose(params["lin.W"], W, rtol=0, atol=1e-6)
    assert json.loads((tmp_path / "r" / "history.jsonl").read_text().splitlines()[4])["lr"] == 0.05
    assert (tmp_path / "r" / "metrics.csv").read_text().splitlines()[0].split(",")[2] == "lr"


@pytest.mark.parametrize("seed", range(6))
def test_random_plateaus_reduce_as_pytorch_does(seed):
    rng = np.random.default_rng(seed)
    values = list(np.round(np.cumsum(rng.normal(0.05, 0.3, 60)) * 4) / 4)  # a random walk with ties
    mode = "max" if seed % 2 else "min"
    settings = {"factor": [0.1, 0.5, 0.3][seed % 3], "patience": seed % 4, "min_delta": [0.0, 0.1][seed % 2],
                "cooldown": [0, 2, 1][seed % 3], "min_lr": [0.0, 1e-3][seed // 3]}
    plateau = ReduceLROnPlateau(monitor="m", mode=mode, **settings)
    plateau.resolve(["m"], False)
    plateau.bases = [0.1]
    rates = []
    for epoch, value in enumerate(values, 1):
        rates.append(max(0.1 * plateau.scale, min(0.1, plateau.min_lr)))
        plateau.on_epoch_end(epoch, {"m": value})
    assert rates == pytest.approx(torch_rates(values, 0.1, mode=mode, **settings), rel=1e-12)
    assert len(set(rates)) > 1


def test_a_resumed_run_reduces_where_an_uninterrupted_one_does(tmp_path):
    straight = run(tmp_path, "straight")
    run(tmp_path, "split", epochs=4)  # stopped right after its first reduction
    assert load_checkpoint(tmp_path / "split").meta["reduce_lr_on_plateau"] == {
        "monitor": "val_loss", "mode": "min", "best": 4.0, "best_epoch": 2, "wait": 0, "cooldown": 1, "scale": 0.5,
        "min_lr": 0.03}
    run(tmp_path, "split", epochs=6, resume=True)  # again inside the cooldown and the second plateau
    resumed = run(tmp_path, "split", resume=True)
    assert [h["lr"] for h in resumed] == [h["lr"] for h in straight]
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "split")
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert a.meta["reduce_lr_on_plateau"] == b.meta["reduce_lr_on_plateau"]


def test_resumed_without_it_the_rate_stays_reduced(tmp_path):
    class Warnings(Reporter):
        def __init__(self):
            self.warnings = []

        def warn(self, message):
            self.warnings.append(message)

    run(tmp_path, "r", epochs=8)
    reporter = Warnings()
    history = run(tmp_path, "r", resume=True, reduce_lr_on_plateau="off", reporter=reporter)
    assert [h["lr"] for h in history[8:]] == [0.03] * 4  # as a Keras or PyTorch optimizer's saved rate
    assert any("without it the run continues at the reduced rate (lr 0.03)" in w for w in reporter.warnings)
    assert load_checkpoint(tmp_path / "r").meta["reduce_lr_on_plateau"]["scale"] == 0.25


def test_the_factor_applies_on_top_of_decay(tmp_path, workdir):
    path = workdir / "decay.dl"
    path.write_text(MODEL.replace("sgd(lr = 0.1)", "sgd(lr = 0.1, decay = 0.01)").replace(
        "    callback  reduce_lr_on_plateau(CALL)\n", ""))
    history = dslc.compile(path).train(XY, epochs=4, batch_size=10, out_dir=tmp_path / "r", verbose=0, lr=1e-7,
                                       reduce_lr_on_plateau="monitor=loss,patience=1,factor=0.5")
    fed = [1e-7, 1e-7, 5e-8, 2.5e-8]  # at lr 1e-7 no epoch after the first gains 1e-4: halved after epochs 2 and 3
    decayed = [rate / (1 + 0.01 * (h["steps"] - 1)) for rate, h in zip(fed, history)]  # the epoch's last step
    assert [h["lr"] for h in history] == pytest.approx(decayed, rel=1e-12)


def test_several_objectives_log_each_rate_and_share_the_reduction(tmp_path):
    program = dslc.compile(Path(__file__).resolve().parents[1] / "models" / "gan.dl")
    rng, n = np.random.default_rng(0), 48
    data = {"z": rng.normal(size=(n, 4)).astype(np.float32), "real": rng.normal(size=(n, 2)).astype(np.float32),
            "ones": np.ones((n, 1), np.float32), "zeros": np.zeros((n, 1), np.float32)}
    history = program.train(data, epochs=3, batch_size=16, out_dir=tmp_path / "g", verbose=0,
                            reduce_lr_on_plateau="monitor=generator.loss,patience=1,min_delta=100,factor=0.5")
    assert history.history["generator.lr"] == history.history["discriminator.lr"] == [0.001, 0.001, 0.0005]
    assert "lr" not in history[0]


# ---- declared in the model; the command line and Python override it ---------------------------------
MODEL = DECLARED.replace("early_stopping(CALL)", "reduce_lr_on_plateau(CALL)")
_rng = np.random.default_rng(0)
_x = _rng.normal(size=(60, 4)).astype(np.float32)
XY = {"x": _x, "y": (_x[:, 0] > 0).astype(np.int64) + (_x[:, 1] > 1)}


def test_declared_settings_are_in_the_manifest_and_combine_with_early_stopping(tmp_path):
    path = tmp_path / "m.dl"
    path.write_text(MODEL.replace("CALL", 'monitor = "val_accuracy", factor = 0.5, cooldown = 2').replace(
        "    callback  reduce",
        '    callback  early_stopping(monitor = "val_accuracy", patience = 3)\n    callback  reduce'))
    program = dslc.compile(path)
    assert program.manifest["reduce_lr_on_plateau"] == {"monitor": "val_accuracy", "factor": 0.5, "cooldown": 2}
    assert program.manifest["early_stopping"] == {"monitor": "val_accuracy", "patience": 3}
    # lr 1e-7: the accuracy never moves; early stopping stops after epoch 4, the rate is halved after epoch 2
    # (by the override's patience 1: the declared 10 would not be reached), then the cooldown holds it
    history = program.train(XY, epochs=10, batch_size=20, val_split=0.25, lr=1e-7, out_dir=tmp_path / "r",
                            verbose=0, reduce_lr_on_plateau={"patience": 1})
    assert history.stopped_epoch == 4
    assert [h["lr"] for h in history] == pytest.approx([1e-7, 1e-7, 5e-8, 5e-8], rel=1e-12)


def test_the_command_line_overrides_and_drops_it(tmp_path, monkeypatch, capsys):
    np.savez(tmp_path / "d.npz", **XY)
    (tmp_path / "m.dl").write_text(MODEL.replace("CALL", "patience = 1, factor = 0.5"))
    monkeypatch.chdir(tmp_path)
    base = ["train", "m.dl", "--data", "d.npz", "--val-split", "0.25", "--batch-size", "20", "--epochs", "4",
            "--lr", "1e-7"]
    rates = lambda run: [json.loads(line)["lr"] for line in (tmp_path / run / "history.jsonl").read_text().splitlines()]
    assert cli.main([*base, "-o", "declared"]) == 0
    assert rates("declared") == pytest.approx([1e-7, 1e-7, 5e-8, 2.5e-8], rel=1e-12)
    assert cli.main([*base, "-o", "merged", "--reduce-lr-on-plateau", "factor=0.1,cooldown=1"]) == 0
    assert rates("merged") == pytest.approx([1e-7, 1e-7, 1e-8, 1e-8], rel=1e-12)  # epoch 3 in the cooldown
    assert cli.main([*base, "-o", "off", "--reduce-lr-on-plateau", "off"]) == 0
    assert rates("off") == pytest.approx([1e-7] * 4, rel=1e-12)
    out = capsys.readouterr().out
    assert "epoch 1: `reduce_lr_on_plateau`: `val_loss` has not improved" not in out  # epoch 1 is the first best
    assert "epoch 2: `reduce_lr_on_plateau`: `val_loss` has not improved for 1 epoch" in out
    assert cli.main([*base, "-o", "bad", "--reduce-lr-on-plateau", "factr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "expected `key=value` with a key among `monitor`, `factor`" in err and "did you mean `factor`?" in err
    assert cli.main([*base, "-o", "bad", "--reduce-lr-on-plateau", "factor=2"]) == 2
    assert "factor must be between 0 and 1, got 2.0" in capsys.readouterr().err
    assert cli.main([*base, "-o", "bad", "--reduce-lr-on-plateau", "monitor=val_f1"]) == 2
    err = capsys.readouterr().err
    assert "the model's `callback reduce_lr_on_plateau`" not in err and "monitors `val_f1`, which the run does " \
           "not log" in err
    assert not (tmp_path / "bad" / "checkpoint.npz").exists()


def test_python_errors_name_the_setting():
    for setting, message in [
        ({"factr": 0.5}, "`reduce_lr_on_plateau` has no setting `factr`; its settings are `monitor`, `factor`, "),
        ("threshold=0.01", "`reduce_lr_on_plateau`: expected `key=value` with a key among `monitor`, `factor`, "),
        (3, "`reduce_lr_on_plateau` must be a `dslc.ReduceLROnPlateau`, its text such as \"factor=0.5\" or a dict"),
        ({"patience": -1}, "`reduce_lr_on_plateau`'s patience must be a non-negative integer, got -1"),
        ("mode=up", "`reduce_lr_on_plateau`'s mode must be `min`, `max` or `auto`, got `up`"),
    ]:
        with pytest.raises(DataError) as e:
            ReduceLROnPlateau.for_run({"factor": 0.5}, setting)
        assert e.value.message.startswith(message)
        if "threshold" in message:
            assert e.value.hint.startswith("dslc's `min_delta` is an absolute amount")
    assert dslc.ReduceLROnPlateau is ReduceLROnPlateau


def test_a_metric_cannot_be_named_lr(tmp_path):
    path = tmp_path / "m.dl"
    path.write_text(MODEL.replace("    callback  reduce_lr_on_plateau(CALL)\n", "    metric lr = mean(logits)\n"))
    with pytest.raises(DslcError, match="metric `lr` has the same name as the training graph's learning-rate input"):
        dslc.compile(path)


def test_the_epoch_line_shows_the_rate_only_when_it_can_change(tmp_path):
    quiet = ConsoleReporter(io.StringIO(), tty=False)
    fit(linreg_program(), DATA, epochs=1, batch_size=8, out_dir=tmp_path / "a", reporter=quiet)
    line = quiet.stream.getvalue().splitlines()[1]
    assert line.startswith("epoch 1/1") and " lr " not in line and "- loss" in line


def test_mpi_ranks_follow_rank_zeros_reductions(workdir, tmp_path):
    """Only rank 0 validates and decides; the others feed their graphs the rate it broadcasts (a rank left at
    the base rate would update its copy of the weights otherwise, and its gradients would differ)."""
    pytest.importorskip("mpi4py")
    from helpers import compile_text
    from test_distributed import MODEL as SPLIT_MODEL
    from test_distributed import MPIEXEC
    from test_split import relative_difference

    if not MPIEXEC.exists():
        pytest.skip("the mpich wheel's mpiexec is not installed")
    program = compile_text(workdir, SPLIT_MODEL, "split.dl", split=True)
    rng = np.random.default_rng(2)
    data = {"x": rng.standard_normal((53, 6)).astype(np.float32), "y": rng.integers(0, 3, 53)}
    every_epoch = "monitor=loss,patience=1,min_delta=10,factor=0.5"  # no gain of 10: a reduction after epochs 2, 3
    single = fit(program, data, epochs=4, batch_size=12, out_dir=tmp_path / "single", reduce_lr_on_plateau=every_epoch)
    history = program.train(data, epochs=4, batch_size=12, out_dir=tmp_path / "mpi", workers=2, verbose=0,
                            reduce_lr_on_plateau=every_epoch)
    assert [h["lr"] for h in history] == [h["lr"] for h in single] == pytest.approx([0.01, 0.01, 0.005, 0.0025])
    a, b = load_checkpoint(tmp_path / "single"), load_checkpoint(tmp_path / "mpi")
    for name in a.params:
        assert relative_difference(a.params[name], b.params[name]) < 2e-6, name


def test_the_editor_knows_it(tmp_path):
    from dslc.editor.analysis import analyze
    from dslc.editor.fmt import format_text
    from dslc.editor.lsp import completions

    text = MODEL.replace("CALL", "factor = 0.5")
    assert format_text(text.replace("factor = 0.5", "factor=0.5")) == text
    analysis = analyze(str(tmp_path / "h.dl"), text)
    assert analysis.diagnostics == []
    hover, _ = analysis.hover(text.index("reduce_lr_on_plateau") + 3)
    assert 'callback reduce_lr_on_plateau(monitor = "...", factor = 0.1, patience = 10, min_delta = 0.0001, ' \
           'cooldown = 0, min_lr = 0.0, mode = "...")' in hover and "`--reduce-lr-on-plateau`" in hover
    labels = [item.label for item in completions(text[:text.index("factor")], {})]
    assert labels[:7] == ["monitor =", "factor =", "patience =", "min_delta =", "cooldown =", "min_lr =", "mode ="]


def test_keras_and_pytorch_names_point_at_dslcs(tmp_path):
    for call, hint in [("threshold = 0.01", "dslc's `min_delta` is an absolute amount"),
                       ("epsilon = 0.01", "Keras 2.0's name of `min_delta`"),
                       ("verbose = 1", "dslc always says when it reduces the rate")]:
        path = tmp_path / "m.dl"
        path.write_text(MODEL.replace("CALL", call))
        with pytest.raises(DslcError) as e:
            dslc.compile(path)
        assert f"m.dl:9:36: error: `reduce_lr_on_plateau` has no setting `{call.split()[0]}`" in str(e.value)
        assert f"hint: {hint}" in str(e.value)


def test_a_damaged_plateau_state_is_refused_as_the_checkpoint_is(tmp_path):
    from dslc.runtime.checkpoint import save_checkpoint

    run(tmp_path, "r", epochs=4)
    ckpt = load_checkpoint(tmp_path / "r")
    save_checkpoint(tmp_path / "r" / "checkpoint.npz", ckpt.params, ckpt.state,
                    {**ckpt.meta, "reduce_lr_on_plateau": {**ckpt.meta["reduce_lr_on_plateau"], "scale": "half"}})
    with pytest.raises(DataError, match="checkpoint metadata is invalid in .*: `reduce_lr_on_plateau` is "
                                        r"\{\"monitor\".* expected the state of `reduce_lr_on_plateau`"):
        run(tmp_path, "r", resume=True)


@pytest.mark.parametrize("fault", ["checkpoint-saved:2", "step:9"])  # between epoch 2's two writes; in epoch 2
def test_killed_and_resumed_it_matches_an_uninterrupted_run(tmp_path, fault):
    """SIGKILL, then the command again (`--resume` when an epoch was saved): the rates and weights of a run
    reducing after every epoch but the first (tests/test_fault_injection.py's digits run)."""
    import signal

    from test_fault_injection import assert_same_run, command, snapshot, start

    every_epoch = ["--reduce-lr-on-plateau", "monitor=val_loss,patience=1,min_delta=1000,factor=0.5"]
    assert cli.main(command(tmp_path / "straight", *every_epoch)) == 0
    straight = snapshot(tmp_path / "straight")
    assert [r["lr"] for r in straight[2]] == [0.002, 0.002, 0.001]
    run = tmp_path / "run"
    process = start(run, fault, extra=every_epoch)
    _, err = process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL, err
    resume = ["--resume"] if (run / "checkpoint.npz").exists() else []
    assert cli.main(command(run, *every_epoch, *resume)) == 0
    assert_same_run(run, straight)
