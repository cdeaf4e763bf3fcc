"""`dslc plot RUN` and `dslc train --plot`: RUN/curves.png from the history, matplotlib optional."""
from __future__ import annotations

import importlib.util
import struct
import subprocess
import sys

import numpy as np
import pytest
from manifest_graphs import linreg_data

from dslc import cli
from dslc.runtime.plot import quantities

pytest.importorskip("matplotlib")


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_quantities_put_losses_first_and_pair_validation():
    history = [{"epoch": 1, "steps": 3, "accuracy": 0.5, "loss": 1.0, "val_accuracy": 0.4, "val_loss": 1.1,
                "val_extra": 2.0, "time": 0.1, "samples_per_s": 10.0, "cm": [[1, 0], [0, 1]]}]
    assert quantities(history) == ["loss", "accuracy", "extra"]
    gan = [{"epoch": 1, "discriminator.accuracy": 1, "discriminator.loss": 1, "generator.loss": 2}]
    assert quantities(gan) == ["discriminator.loss", "generator.loss", "discriminator.accuracy"]
    # a learning rate that changed gets the last panel; a constant one none
    rates = [{"epoch": e, "loss": 1.0, "lr": lr, "d.lr": 0.1} for e, lr in ((1, 0.1), (2, 0.01))]
    assert quantities(rates) == ["loss", "lr"]


def test_plot_a_run_and_train_with_plot(linreg_cli, capsys):
    np.savez("train.npz", **linreg_data(n=40))
    np.savez("val.npz", **linreg_data(n=10, seed=1))
    assert cli.main(["train", "linreg.dl", "--data", "train.npz", "--val", "val.npz", "--epochs", "3",
                     "--batch-size", "8", "-o", "run", "-q", "--plot"]) == 0
    assert capsys.readouterr().err == "wrote run/curves.png\n"
    assert png_size(linreg_cli / "run" / "curves.png") == (840, 320)  # two panels (loss, mse) of 4.2 × 3.2 in, 100 dpi
    assert cli.main(["plot", "run", "-o", "c.png"]) == 0
    assert png_size(linreg_cli / "c.png") == (840, 320)
    assert cli.main(["plot", "nowhere"]) == 3
    assert capsys.readouterr().err.endswith("error: `nowhere` holds no training history (`nowhere/history.jsonl` is "
                                            "missing)\nhint: train into it first: `dslc train ... -o nowhere`\n")


def test_without_matplotlib_the_message_says_how_to_install_it(linreg_cli, monkeypatch, capsys):
    np.savez("train.npz", **linreg_data(n=16))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    args = ["train", "linreg.dl", "--data", "train.npz", "--epochs", "1", "--batch-size", "8", "-o", "run", "--plot"]
    assert cli.main(args) == 3
    assert capsys.readouterr().err == ("error: plotting needs matplotlib, which is not installed\n"
                                       "hint: pip install 'dslc[plot]'\n")
    assert not (linreg_cli / "run").exists()  # refused before training


def test_matplotlib_is_not_imported_by_training():
    code = "import sys, dslc.cli, dslc.runtime.train, dslc.runtime.callbacks; print('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == "False\n"
