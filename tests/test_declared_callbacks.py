"""Early stopping declared in the model, `callback early_stopping(...)`: the syntax, its diagnostics at
file:line:col, the manifest's `"early_stopping"`, the training loop following it (the exact stopping
epoch on a crafted run), `--early-stopping` / `early_stopping=` overriding it key by key or dropping
it, and what `dslc fmt`, the language server and the highlighters know of it; the diagnostics of
`callback reduce_lr_on_plateau(...)` too (its run: tests/test_plateau.py)."""
from __future__ import annotations

import json

import pytest
from manifest_graphs import linreg_data, linreg_program
from test_training_loop import Crafted

import dslc
from dslc import cli
from dslc.diagnostics import DataError, DslcError
from dslc.editor.analysis import analyze
from dslc.editor.fmt import format_text
from dslc.runtime.callbacks import EarlyStopping, run_stopping
from dslc.runtime.train import Reporter, fit

MODEL = """\
model clf(wait = 2) {
    input  x: f32[B, 4]
    target y: i64[B]
    logits = x |> dense(8) |> relu |> dense(3)
    output probs = softmax(logits)
    loss      cross_entropy(logits, y)
    optimizer sgd(lr = 0.1)
    metric    accuracy(logits, y)
    callback  early_stopping(CALL)
}
"""


def model(tmp_path, call: str, name: str = "clf.dl", callback: str = "early_stopping"):
    path = tmp_path / name
    path.write_text(MODEL.replace("early_stopping(CALL)", f"{callback}({call})"))
    return path


def test_the_declaration_is_in_the_manifest_as_given(tmp_path):
    program = dslc.compile(model(tmp_path, 'monitor = "val_accuracy", patience = wait, restore_best = true'), wait=4)
    assert program.manifest["early_stopping"] == {"monitor": "val_accuracy", "patience": 4, "restore_best": True}
    program.build(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "clf.dslc.json").read_text())["early_stopping"]["patience"] == 4
    (tmp_path / "none.dl").write_text(MODEL.replace("    callback  early_stopping(CALL)\n", ""))
    assert "early_stopping" not in dslc.compile(tmp_path / "none.dl").manifest


@pytest.mark.parametrize("callback, call, line_col, message", [("early_stopping", *row) for row in [
    ("patience = -1", "9:41", "`patience` must be a whole number of epochs, at least 0, got the number `-1`"),
    ("patience = 2.5", "9:41", "`patience` must be a whole number of epochs, at least 0, got the number `2.5`"),
    ('min_delta = "a"', "9:42", "`min_delta` must be a non-negative number, got the string \"a\""),
    ('mode = "up"', "9:37", '`mode` must be "min", "max" or "auto", got the string "up"'),
    ('monitor = "val_probs", mode = "auto"', "9:40", "early stopping monitors `val_probs`, which training does not log"),
    ("restore_best = 1", "9:45", "`restore_best` must be `true` or `false`, got the number `1`"),
    ('monitor = "val_acc"', "9:40", "early stopping monitors `val_acc`, which training does not log"),
    ('monitor = "val_probs"', "9:40", "early stopping monitors `val_probs`, which training does not log"),
    ("patiense = 3", "9:30", "`early_stopping` has no setting `patiense`"),
    ("3", "9:30", "`early_stopping` takes its settings by name"),
]] + [("reduce_lr_on_plateau", *row) for row in [
    ("factor = 1.5", "9:45", "`factor` must be a number between 0 and 1, got the number `1.5`"),
    ("factor = 0", "9:45", "`factor` must be a number between 0 and 1, got the number `0`"),
    ("cooldown = -1", "9:47", "`cooldown` must be a whole number of epochs, at least 0, got the number `-1`"),
    ("min_lr = -0.1", "9:45", "`min_lr` must be a non-negative number, got the number `-0.1`"),
    ('monitor = "val_acc"', "9:46", "`reduce_lr_on_plateau` monitors `val_acc`, which training does not log"),
    ("restore_best = true", "9:36", "`reduce_lr_on_plateau` has no setting `restore_best`"),
    ("0.5", "9:36", "`reduce_lr_on_plateau` takes its settings by name"),
]])
def test_bad_settings_are_diagnostics_at_the_argument(tmp_path, callback, call, line_col, message):
    path = model(tmp_path, call, callback=callback)
    with pytest.raises(DslcError) as e:
        dslc.compile(path)
    assert f"clf.dl:{line_col}: error: {message}" in str(e.value)


def test_other_misuses(tmp_path):
    (tmp_path / "m.dl").write_text(MODEL.replace("early_stopping(CALL)", "early_stoping(patience = 3)"))
    with pytest.raises(DslcError, match=r"m.dl:9:15: error: unknown callback `early_stoping`[\s\S]*did you mean "
                                        "`early_stopping`"):
        dslc.compile(tmp_path / "m.dl")
    (tmp_path / "twice.dl").write_text(MODEL.replace("CALL", "").replace(
        "    callback  early_stopping()\n", "    callback early_stopping()\n    callback early_stopping(patience = 1)\n"))
    with pytest.raises(DslcError, match="twice.dl:10:5: error: a model declares `callback early_stopping` once"):
        dslc.compile(tmp_path / "twice.dl")
    (tmp_path / "infer.dl").write_text("model m {\n    input x: f32[B, 2]\n    output y = relu(x)\n"
                                       "    callback early_stopping()\n}\n")
    with pytest.raises(DslcError, match="infer.dl:4:5: error: model `m` declares a callback of training, but has no"):
        dslc.compile(tmp_path / "infer.dl")
    (tmp_path / "custom.dl").write_text(MODEL.replace("CALL", 'monitor = "val_spread"').replace(
        "    metric    accuracy(logits, y)\n", "    metric    spread = mean(logits)\n"))
    with pytest.raises(DslcError, match="cannot tell whether `val_spread` is better lower or higher"):
        dslc.compile(tmp_path / "custom.dl")
    (tmp_path / "custom.dl").write_text(MODEL.replace("CALL", 'monitor = "val_spread", mode = "max"').replace(
        "    metric    accuracy(logits, y)\n", "    metric    spread = mean(logits)\n"))
    assert dslc.compile(tmp_path / "custom.dl").manifest["early_stopping"]["mode"] == "max"
    (tmp_path / "name.dl").write_text("model m {\n    input x: f32[B, 2]\n    callback = relu(x)\n}\n")
    with pytest.raises(DslcError, match="`callback` is a keyword and cannot be used as a name"):
        dslc.compile(tmp_path / "name.dl")


# ---- the training loop follows it; the flag and the argument override it -----------------------
DATA, VAL = linreg_data(n=40), linreg_data(n=10, seed=1)
VALUES = [5, 4, 3, 3.5, 3.2, 3.0, 3.1, 2.9, 1, 1]  # crafted val_loss: with patience 3, stops after epoch 6


def declared(**settings):
    program = linreg_program()
    program.manifest["early_stopping"] = settings  # as `callback early_stopping(...)` puts it
    return program


def run(tmp_path, program, name, **kw):
    return fit(program, DATA, VAL, epochs=10, batch_size=8, seed=3, out_dir=tmp_path / name, reporter=Reporter(),
               callbacks=[Crafted(VALUES)], **kw)


def test_the_loop_stops_where_the_declaration_says(tmp_path):
    history = run(tmp_path, declared(patience=3), "declared")
    assert history.stopped_epoch == 6 and history.best_epoch == 3 and (tmp_path / "declared" / "best.npz").exists()
    # the flag's keys replace the declared ones; the others stay (min_delta 0.25: 3.2 and 3.0 are no gains over 3)
    history = run(tmp_path, declared(patience=3, min_delta=0.25), "override", early_stopping="patience=1")
    assert history.stopped_epoch == 4 and history.best_epoch == 3
    history = run(tmp_path, declared(patience=3, min_delta=0.25), "merged", early_stopping="patience=5")
    assert history.stopped_epoch == 8 and history.best_epoch == 3
    assert run(tmp_path, declared(patience=3), "off", early_stopping="off").stopped_epoch is None
    assert run(tmp_path, declared(patience=3), "false", early_stopping=False).stopped_epoch is None
    whole = run(tmp_path, declared(patience=1, min_delta=0.25), "object", early_stopping=EarlyStopping(patience=4))
    assert whole.stopped_epoch == 7  # the object replaces the declaration whole: min_delta 0


@pytest.mark.parametrize("callback", ["early_stopping", "reduce_lr_on_plateau"])
def test_mode_auto_tells_the_direction_from_the_name_as_keras_does(tmp_path, capsys, callback):
    """Keras's default `mode="auto"`: accepted in the model, the flag and Python, the direction from the name
    as without a mode (`max` for accuracy, AUC, F1, precision, recall; `min` for losses and errors), and a name
    that does not say is refused, as Keras 3 refuses it."""
    from dslc.runtime.plateau import ReduceLROnPlateau

    kind = EarlyStopping if callback == "early_stopping" else ReduceLROnPlateau
    program = dslc.compile(model(tmp_path, 'monitor = "val_accuracy", mode = "auto"', callback=callback))
    assert program.manifest[callback] == {"monitor": "val_accuracy", "mode": "auto"}
    made = kind.for_run(program.manifest[callback], None)
    made.resolve(["loss", "accuracy", "val_loss", "val_accuracy"], True)
    assert made.mode == "max"
    names = ["val_loss", "val_accuracy", "auc", "gen.f1", "val_precision", "recall", "val_mse", "d.loss", "error_rate"]
    for text in ("mode=auto", "mode=auto,patience=1"):
        got = []
        for name in names:
            made = kind.parse(f"{text},monitor={name}")
            made.resolve(names, True)
            got.append(made.mode)
        assert got == ["min", "max", "max", "max", "max", "max", "min", "min", "min"]
    made = kind.of({"mode": "auto", "monitor": "spread"})
    with pytest.raises(DataError, match="cannot tell whether `spread` is better lower or higher"):
        made.resolve(["loss", "spread"], False)
    with pytest.raises(DataError, match="mode must be `min`, `max` or `auto`, got `up`"):
        kind.parse("mode=up")
    (tmp_path / "spread.dl").write_text(MODEL.replace("early_stopping(CALL)", f'{callback}(monitor = "val_spread", '
                                                      'mode = "auto")').replace(
        "    metric    accuracy(logits, y)\n", "    metric    spread = mean(logits)\n"))
    with pytest.raises(DslcError, match=r"cannot tell whether `val_spread` is better lower or higher[\s\S]*its name "
                                        "does not say"):
        dslc.compile(tmp_path / "spread.dl")
    # a run: `auto` on `val_loss` is `min` (crafted values: min and max stop or reduce at different epochs)
    option = "early_stopping" if callback == "early_stopping" else "reduce_lr_on_plateau"
    runs = {mode: run(tmp_path, linreg_program(), f"{callback}_{mode}", **{option: f"mode={mode},patience=1"})
            for mode in ("auto", "min", "max")}
    seen = {mode: (h.stopped_epoch, [r["lr"] for r in h]) for mode, h in runs.items()}
    assert seen["auto"] == seen["min"] != seen["max"]


def test_restore_best_comes_from_the_declaration_unless_given():
    manifest = {"early_stopping": {"patience": 2, "restore_best": True}}
    stopping, restore = run_stopping(manifest, None, None)
    assert (stopping.patience, restore) == (2, True) and "the model's" in stopping.origin
    assert run_stopping(manifest, None, False)[1] is False
    assert run_stopping(manifest, "off", None) == (None, False)
    assert run_stopping({}, None, None) == (None, False)
    stopping, _ = run_stopping({"early_stopping": {"monitor": "val_accuracy"}}, None, None)
    with pytest.raises(DataError, match="the model's `callback early_stopping` monitors `val_accuracy`, which the"):
        stopping.resolve(["loss", "accuracy"], False)


def test_a_real_model_on_the_command_line(tmp_path, monkeypatch, capsys):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=(x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1))
    model(tmp_path, 'monitor = "val_loss", patience = 0, restore_best = true')
    monkeypatch.chdir(tmp_path)
    base = ["train", "clf.dl", "--data", "d.npz", "--val-split", "0.2", "--batch-size", "16", "--epochs", "50"]
    assert cli.main([*base, "-o", "a", "--lr", "0"]) == 0  # nothing changes: stops after the second epoch
    out = capsys.readouterr().out
    assert "early stopping: `val_loss` has not improved for 1 epoch (best" in out and "at epoch 1)" in out
    assert len((tmp_path / "a" / "history.jsonl").read_text().splitlines()) == 2
    assert cli.main([*base, "-o", "b", "--lr", "0", "--early-stopping", "off"]) == 0
    assert len((tmp_path / "b" / "history.jsonl").read_text().splitlines()) == 50
    assert cli.main([*base[:-1], "3", "-o", "c", "--lr", "0", "--early-stopping", "patience=2"]) == 0
    assert len((tmp_path / "c" / "history.jsonl").read_text().splitlines()) == 3
    capsys.readouterr()


# ---- the editor side -------------------------------------------------------------------------------
def test_fmt_aligns_it_with_the_training_statements():
    text = MODEL.replace("CALL", "patience=2").replace("    callback  early", "    callback early")
    assert format_text(text) == MODEL.replace("CALL", "patience = 2")


def test_hover_and_completion(tmp_path):
    text = MODEL.replace("CALL", "patience = 2")
    analysis = analyze(str(tmp_path / "h.dl"), text)
    assert analysis.diagnostics == []
    hover, _ = analysis.hover(text.index("early_stopping") + 3)
    assert "callback early_stopping(monitor = \"...\", patience = 5, min_delta = 0.0, mode = \"...\", " \
           "restore_best = false)" in hover and "`--early-stopping`" in hover
    from dslc.editor.lsp import completions
    before = text[:text.index("patience")]
    labels = [item.label for item in completions(before, {})]
    assert labels[:5] == ["monitor =", "patience =", "min_delta =", "mode =", "restore_best ="]
    assert "early_stopping" in labels and "callback" in labels


def test_the_recipe_example_trains_with_everything_it_declares(tmp_path):
    """examples/digits/digits_recipe.dl: torch init, label smoothing, clipping, warm-up then cosine,
    F1/top-3/confusion matrix and declared early stopping, end to end on the bundled digits."""
    import numpy as np

    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "examples" / "digits"
    program = dslc.compile(root / "digits_recipe.dl")
    manifest = program.manifest
    assert manifest["early_stopping"] == {"monitor": "val_accuracy", "patience": 8, "restore_best": True}
    assert manifest["optimizer"]["settings"]["clip_norm"] == 1.0
    assert [p["kind"] for p in manifest["optimizer"]["schedule"]] == ["linear_warmup", "cosine"]
    assert {p["init"] for p in manifest["graphs"]["train"]["params"]} == {"torch"}
    history = program.train(root / "train.npz", epochs=40, batch_size=32, val_split=0.1, out_dir=tmp_path / "r",
                            verbose=0)
    assert history.stopped_epoch is not None and history.stopped_epoch < 40
    assert history.best_epoch == history.stopped_epoch - 8
    scores = program.evaluate(root / "test.npz", weights=tmp_path / "r")
    assert scores["accuracy"] > 0.96 and scores["f1"] > 0.96 and scores["top3"] > 0.99
    assert np.asarray(scores["confusion_matrix"]).sum() == 359
