"""The timing tools of examples/bench refuse what they cannot compare, with a message and no traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import dslc

ROOT = Path(__file__).resolve().parents[1]
AB_BUILDS = ROOT / "examples" / "bench" / "ab_builds.py"
LENET = ROOT / "models" / "lenet.dl"


def test_ab_builds_refuses_builds_of_other_shapes(tmp_path):
    dslc.compile(LENET).build(tmp_path / "a")
    dslc.compile(LENET, dims={"B": 16}).build(tmp_path / "b")
    run = subprocess.run([sys.executable, str(AB_BUILDS), str(tmp_path / "a"), str(tmp_path / "b")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "inputs: ('image', 'float32', ['B', 1, 28, 28]) vs ('image', 'float32', [16, 1, 28, 28])" in run.stderr


def test_ab_builds_names_a_folder_without_a_build(tmp_path):
    run = subprocess.run([sys.executable, str(AB_BUILDS), str(tmp_path), str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert f"`{tmp_path}` holds no `*.dslc.json` manifests" in run.stderr


def test_bench_names_a_peers_folder_that_is_not_there(tmp_path, capsys):
    from dslc.cli import main

    assert main(["bench", str(ROOT / "models" / "mlp.dl"), "--compare", "torch", "--peers", str(tmp_path / "nope")]) == 3
    assert f"`--peers {tmp_path / 'nope'}`: no such folder" in capsys.readouterr().err


@pytest.mark.parametrize("script, argv", [
    ("train_loop.py", ["--repeats", "0"]), ("ort_profile.py", ["--calls", "0"]), ("reference.py", ["--steps", "0"]),
    ("reference.py", ["--threads", "-1"]), ("ab_builds.py", ["a", "b", "--calls", "0"]),
    ("train_overhead.py", ["--epochs", "0"]), ("reference.py", ["--from-json", "/nonexistent/run.json"]),
    ("ort_contrib.py", ["--calls", "0"]),
])
def test_the_bench_scripts_refuse_counts_below_one_and_missing_files(script, argv):
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "bench" / script), *argv], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode in (1, 2) and "Traceback" not in run.stderr
    assert "expected a positive integer" in run.stderr or "cannot read `/nonexistent/run.json`" in run.stderr


@pytest.mark.parametrize("script, flags, printed", [
    ("examples/text_rnn/benchmark.py", [], "GRU classifier step (embedding input"),
    ("examples/text_rnn/benchmark.py", ["--input", "dense"], "GRU classifier step (dense input"),
    ("examples/cnn_digits/bench_lenet.py", [], "LeNet training step")])
def test_the_example_benchmarks_run(script, flags, printed):
    """The examples' READMEs quote these scripts' numbers: they run (one round), as the runner they time
    changes (`TrainStep` took the initial values from one session on, and both crashed on it)."""
    pytest.importorskip("torch")
    run = subprocess.run([sys.executable, str(ROOT / script), *flags, "--rounds", "1"], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0 and printed in run.stdout, run.stderr[-2000:]
