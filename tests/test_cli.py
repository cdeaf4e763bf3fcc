"""The `dslc` command line: verbs, messages on stderr and exit codes (0 ok, 1 model error, 2 usage,
3 data/files/device, 101 internal error).

Most tests call `main()` in-process with the compiler replaced by the hand-built program of
tests/manifest_graphs.py; a few run the real process to check the exit codes end to end. Tests that
need the real compiler are skipped while it is unavailable.
"""
from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from manifest_graphs import linreg_data, linreg_program

import dslc
from dslc import cli
from dslc.diagnostics import Diagnostic, DslcError
from dslc.source import SourceFile

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
DIGITS = ROOT / "examples" / "digits"

try:
    import dslc.compiler  # noqa: F401

    compiler_available = True
except ImportError:
    compiler_available = False
needs_compiler = pytest.mark.skipif(not compiler_available, reason="dslc.compiler is not available yet")

# A `python -c` prelude that swaps in the hand-built program for the compiler, then runs the CLI.
FAKE_COMPILER = (
    f"import sys, types; sys.path.insert(0, {str(TESTS)!r}); import manifest_graphs; "
    "fake = types.ModuleType('dslc.compiler'); "
    "fake.compile_file = lambda path, defines=None, dtype='float32', **kw: manifest_graphs.linreg_program(dtype); "
    "sys.modules['dslc.compiler'] = fake; "
    "from dslc.cli import main; sys.exit(main(sys.argv[1:]))"
)


def run(*args, cwd, fake=True, env=None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", FAKE_COMPILER] if fake else [sys.executable, "-m", "dslc.cli"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(command + [str(a) for a in args], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.fixture
def fake_compiler(monkeypatch, tmp_path):
    """Replace the compiler with the hand-built program; records the calls; returns the model path."""
    calls = []
    fake = types.ModuleType("dslc.compiler")

    def compile_file(path, defines=None, dtype="float32", **kwargs):
        calls.append((path, defines, dtype, kwargs))
        return linreg_program(dtype)

    fake.compile_file = compile_file
    fake.calls = calls
    monkeypatch.setitem(sys.modules, "dslc.compiler", fake)
    model = tmp_path / "linreg.dl"
    model.write_text("# compiled by the fake compiler\n")
    monkeypatch.chdir(tmp_path)
    return fake


@pytest.fixture
def npz(tmp_path):
    np.savez(tmp_path / "train.npz", **linreg_data(n=40))
    np.savez(tmp_path / "val.npz", **linreg_data(n=10, seed=1))
    np.savez(tmp_path / "x.npz", x=linreg_data(n=7, seed=2)["x"])


# ---- usage errors: exit 2 (argparse) -----------------------------------------------------------
def test_usage_errors_exit_2(tmp_path):
    r = run(cwd=tmp_path, fake=False)
    assert r.returncode == 2 and "usage: dslc" in r.stderr
    r = run("build", "m.dl", "-D", "hidden", cwd=tmp_path, fake=False)
    assert r.returncode == 2 and "argument -D: expected `name=value`, got `hidden`" in r.stderr


@pytest.mark.parametrize("argv, message", [
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["train", "m.dl", "--data", "t.npz", "--batch-size", "8", "-o", "run"], "required: --epochs"),
    (["train", "m.dl", "--data", "t.npz", "--epochs", "0", "--batch-size", "8", "-o", "run"],
     "argument --epochs: expected a positive integer, got `0`"),
    (["train", "m.dl", "--data", "t.npz", "--epochs", "1", "--batch-size", "8", "-o", "r", "--lr", "-1"],
     "argument --lr: expected a non-negative number, got `-1`"),
    (["train", "m.dl", "--data", "t.npz", "--epochs", "1", "--batch-size", "8", "-o", "r", "--device", "tpu"],
     "argument --device: expected `cpu`, `cuda` or `cuda:N`, got `tpu`"),
    (["build", "m.dl", "--emit", "llvm"], "argument --emit: invalid choice"),
    (["predict", "m.dl", "--input", "x.npz"], "required: -o"),
])
def test_usage_errors_in_process(capsys, argv, message):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "dslc 0.2.0"


# ---- data and file errors: exit 3 --------------------------------------------------------------
def test_missing_data_file_exits_3(tmp_path):
    (tmp_path / "linreg.dl").write_text("")
    r = run("train", "linreg.dl", "--data", "missing.npz", "--epochs", "1", "--batch-size", "8", "-o", "run",
            cwd=tmp_path)
    assert r.returncode == 3
    assert r.stderr == "error: cannot read `missing.npz`: No such file or directory\n"
    assert not (tmp_path / "run").exists()


def test_missing_model_file_exits_3(tmp_path):
    r = run("check", "nope.dl", cwd=tmp_path, fake=False)
    assert (r.returncode, r.stderr) == (3, "error: cannot read `nope.dl`: No such file or directory\n")


def test_data_error_prints_error_and_hint(fake_compiler, npz, tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", xs=np.zeros((4, 3), np.float32), y=np.zeros((4, 1), np.float32))
    assert cli.main(["train", "linreg.dl", "--data", "bad.npz", "--epochs", "1", "--batch-size", "2", "-o", "r"]) == 3
    assert capsys.readouterr().err == ("error: training data `bad.npz` has no array `x` (arrays present: `xs`, `y`)\n"
                                       "hint: the data has `xs` but the model reads `x`: rename `xs` to `x`\n")


def test_cuda_on_a_cpu_machine_exits_3(fake_compiler, npz, capsys, monkeypatch):
    monkeypatch.setattr("dslc.runtime.devices.ort.get_available_providers", lambda: ["CPUExecutionProvider"])
    argv = ["train", "linreg.dl", "--data", "train.npz", "--epochs", "1", "--batch-size", "8", "-o", "r",
            "--device", "cuda"]
    assert cli.main(argv) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: CUDA was requested but this onnxruntime has no CUDA support")
    assert "hint: install `dslc[gpu]` (onnxruntime-gpu)" in err


def test_unwritable_output_exits_3(fake_compiler, npz, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(["train", "linreg.dl", "--data", "train.npz", "--epochs", "1", "--batch-size", "8",
                     "-o", str(run_dir)]) == 0
    capsys.readouterr()
    target = tmp_path / "no" / "such" / "dir" / "y.npz"
    assert cli.main(["predict", "linreg.dl", "--weights", str(run_dir), "--input", "x.npz", "-o", str(target)]) == 3
    assert capsys.readouterr().err == f"error: cannot write `{target}`: No such file or directory (`{target.parent}`)\n"


# ---- model errors (1) and internal errors (101) ------------------------------------------------
def test_model_error_exits_1_with_rendered_diagnostics(monkeypatch, tmp_path, capsys):
    source = SourceFile.from_text("m.dl", "model m {\n    x = nope\n}\n")
    fake = types.ModuleType("dslc.compiler")

    def compile_file(path, defines=None, dtype="float32", **kwargs):
        raise DslcError(Diagnostic("unknown name `nope`", source.span(18, 22), "not defined", hint="define it"))

    fake.compile_file = compile_file
    monkeypatch.setitem(sys.modules, "dslc.compiler", fake)
    (tmp_path / "m.dl").write_text(source.text)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["check", "m.dl"]) == 1
    assert capsys.readouterr().err == (
        "m.dl:2:9: error: unknown name `nope`\n"
        "  |\n"
        "2 |     x = nope\n"
        "  |         ^^^^ not defined\n"
        "hint: define it\n"
    )


@pytest.mark.parametrize("backtrace", [False, True])
def test_internal_error_exits_101(fake_compiler, capsys, monkeypatch, backtrace):
    def broken(*args, **kwargs):
        raise KeyError("node 17")

    monkeypatch.setattr(fake_compiler, "compile_file", broken)
    monkeypatch.setenv("DSLC_BACKTRACE", "1" if backtrace else "0")
    assert cli.main(["check", "linreg.dl"]) == 101
    err = capsys.readouterr().err
    assert err.startswith("error: internal compiler error: KeyError: 'node 17'\n"
                          "note: this is a bug in dslc; please report it with the model file\n")
    assert ("Traceback (most recent call last)" in err) == backtrace
    assert ("DSLC_BACKTRACE=1" in err) != backtrace


def test_interrupted_training_exits_130_with_a_resume_hint(fake_compiler, npz, capsys, monkeypatch):
    argv = ["train", "linreg.dl", "--data", "train.npz", "--epochs", "1", "--batch-size", "8", "-o", "run"]
    assert cli.main(argv) == 0

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("dslc.runtime.train.fit", interrupt)
    capsys.readouterr()
    assert cli.main(argv[:5] + ["2"] + argv[6:] + ["--resume"]) == 130
    assert capsys.readouterr().err == ("error: interrupted\nhint: the last completed epoch is saved; "
                                       "run the same command with `--resume` to continue\n")


# ---- the verbs ---------------------------------------------------------------------------------
def test_check_and_defines(fake_compiler, capsys):
    assert cli.main(["check", "linreg.dl", "-D", "hidden=128", "-Dact=relu=x", "--dtype", "float64"]) == 0
    assert capsys.readouterr() == ("", "checked linreg: 4 parameters\n")
    assert fake_compiler.calls == [("linreg.dl", {"hidden": "128", "act": "relu=x"}, "float64", {"seed": 0, "import_path": []})]


def test_build_writes_files_and_emit_ir_writes_nothing(fake_compiler, tmp_path, capsys):
    assert cli.main(["build", "linreg.dl", "--emit", "ir"]) == 0
    out, err = capsys.readouterr()
    assert out == "graph linreg.train { ... }\n" and err == ""
    assert cli.main(["build", "linreg.dl", "--emit", "ir", "-o", "out"]) == 2  # -o would be ignored
    assert "argument -o: `--emit ir` prints the IR and writes nothing; drop `-o`" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert cli.main(["build", "linreg.dl", "-o", "out"]) == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["linreg.dslc.json", "linreg.eval.onnx", "linreg.infer.onnx", "linreg.init.onnx",
                                                    "linreg.train.onnx"]
    assert capsys.readouterr().err.startswith("built linreg: out/linreg.infer.onnx, ")


def test_train_resume_predict_export(fake_compiler, npz, tmp_path, capsys):
    base = ["train", "linreg.dl", "--data", "train.npz", "--val", "val.npz", "--batch-size", "8", "-o", "run"]
    assert cli.main(base + ["--epochs", "1", "--seed", "3"]) == 0
    assert fake_compiler.calls[-1][3]["seed"] == 3  # the seed also seeds the initial weights
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("training linreg for 1 epoch on cpu: 40 samples, 10 validation samples")
    assert out[1].startswith("epoch 1/1 - ") and " - val_loss " in out[1]
    assert cli.main(base + ["--epochs", "2", "--seed", "3", "--lr", "0.05", "--resume"]) == 0
    printed = capsys.readouterr()
    out = printed.out.splitlines()
    assert printed.err.splitlines() == [  # warnings on stderr, as a compiler's
        "warning: the learning rate differs from the checkpoint's (0.05 now, the default before): the run will not "
        "match an uninterrupted one"]
    assert out[0].startswith("resuming linreg at epoch 2/2") and out[1].startswith("epoch 2/2 - ")

    assert cli.main(["predict", "linreg.dl", "--weights", "run", "--input", "x.npz", "-o", "y.npz",
                     "--batch-size", "3"]) == 0
    assert capsys.readouterr().err == "wrote y.npz: `pred` float32[7, 1]\n"
    assert cli.main(["export", "linreg.dl", "--weights", "run/checkpoint.npz", "-o", "model.onnx"]) == 0
    assert capsys.readouterr().err == "exported linreg to model.onnx\n"

    import onnxruntime as ort

    x = np.load(tmp_path / "x.npz")["x"]
    exported = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert np.array_equal(exported.run(None, {"x": x})[0], np.load(tmp_path / "y.npz")["pred"])


def test_train_end_to_end_in_a_subprocess(tmp_path, npz):
    (tmp_path / "linreg.dl").write_text("")
    r = run("train", "linreg.dl", "--data", "train.npz", "--epochs", "2", "--batch-size", "16", "-o", "run",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [line.split(" - ")[0] for line in lines[1:3]] == ["epoch 1/2", "epoch 2/2"]
    assert lines[-1] == "weights: run/checkpoint.npz" and r.stderr == ""



def _with_stdout_closed(*args, cwd, after_lines=0) -> tuple[int, str]:
    """Run the CLI with its stdout a pipe whose reader leaves after `after_lines` lines (`dslc ... | head -N`)."""
    command = [sys.executable, "-c", FAKE_COMPILER] + [str(a) for a in args]
    proc = subprocess.Popen(command, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for _ in range(after_lines):
        proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    return proc.wait(timeout=120), err


def test_a_reader_that_leaves_stops_the_command_quietly_with_141(tmp_path, npz):
    """`dslc summary M.dl | head -1`: a closed pipe is not bad data (it was `error: Broken pipe`, exit 3);
    dslc stops as a command killed by SIGPIPE would, and `train` says its last epoch is kept."""
    (tmp_path / "linreg.dl").write_text("")
    code, err = _with_stdout_closed("summary", "linreg.dl", cwd=tmp_path)
    assert (code, err) == (cli.EXIT_PIPE, "")
    code, err = _with_stdout_closed("train", "linreg.dl", "--data", "train.npz", "--epochs", "5000", "--batch-size",
                                    "16", "--log-format", "jsonl", "-o", "run", cwd=tmp_path, after_lines=2)
    assert code == 141 and err.startswith("note: the output's reader left, so training stopped"), err
    assert (tmp_path / "run" / "checkpoint.npz").exists()

# ---- with the real compiler --------------------------------------------------------------------
@needs_compiler
def test_real_compiler_check_build_and_ir(tmp_path, capsys):
    model = str(DIGITS / "digits.dl")
    assert cli.main(["check", model, "-D", "hidden=16"]) == 0
    assert capsys.readouterr().err.startswith("checked digits: ")
    assert cli.main(["build", model, "--emit", "ir"]) == 0
    assert capsys.readouterr().out.strip()
    assert cli.main(["build", model, "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "digits.dslc.json").exists()
    assert cli.main(["build", model, "--print-ir-after", "autodiff"]) == 0
    assert capsys.readouterr().out.strip()
    assert cli.main(["build", model, "--print-ir-after", "autodif"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: dslc build ")  # the verb's usage, not the top-level one
    assert "dslc build: error: argument --print-ir-after: no pass `autodif`; passes: " in err


@needs_compiler
def test_real_compiler_train_predict_export(tmp_path):
    model = DIGITS / "digits.dl"
    r = run("train", model, "-D", "hidden=16", "--data", DIGITS / "train.npz", "--val", DIGITS / "test.npz",
            "--epochs", "2", "--batch-size", "64", "-o", "run", cwd=tmp_path, fake=False)
    assert r.returncode == 0, r.stderr
    assert "epoch 2/2 - " in r.stdout and "val_accuracy" in r.stdout
    r = run("train", model, "-D", "hidden=16", "--data", DIGITS / "train.npz", "--epochs", "3", "--batch-size", "64",
            "-o", "run", "--resume", cwd=tmp_path, fake=False)
    assert r.returncode == 0, r.stderr
    assert cli.main(["predict", str(model), "-D", "hidden=16", "--weights", str(tmp_path / "run"),
                     "--input", str(DIGITS / "test.npz"), "-o", str(tmp_path / "y.npz")]) == 0
    assert cli.main(["export", str(model), "-D", "hidden=16", "--weights", str(tmp_path / "run"),
                     "-o", str(tmp_path / "digits.onnx")]) == 0
    assert (tmp_path / "digits.onnx").exists()


def test_the_readme_error_example_is_what_dslc_prints(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = readme.split("Mistakes are reported at compile time, with the place and a hint:\n\n```\n", 1)[1]
    shown = shown.split("```", 1)[0]
    assert cli.main(["check", "examples/bad.dl"]) == 1
    assert capsys.readouterr().err == shown


@pytest.mark.parametrize("rate", [0.2, 0])  # without dropout the training graph has no `seed` input
def test_the_readme_training_loop_trains(rate, tmp_path, monkeypatch, capfd):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    loop = readme.split("A complete loop in Python (any runtime with an ONNX loader looks the same):\n\n```python\n", 1)[1]
    assert cli.main(["build", str(ROOT / "examples" / "digits" / "digits.dl"), "-D", f"rate={rate}",
                     "-o", str(tmp_path / "out")]) == 0
    monkeypatch.chdir(tmp_path)
    data = np.load(ROOT / "examples" / "digits" / "train.npz")
    x_test = np.load(ROOT / "examples" / "digits" / "test.npz")["image"]
    namespace = {"batches": [(data["image"][i:i + 32], data["digit"][i:i + 32]) for i in range(0, 640, 32)],
                 "x_test": x_test}
    capfd.readouterr()
    exec(loop.split("```", 1)[0], namespace)
    assert capfd.readouterr().err == ""  # no ONNX Runtime warnings with the options shown
    assert float(namespace["out"]["loss"]) < 2.0  # 20 steps from ~2.3 (10 classes at random)
    # its inference with the trained values is dslc's with those values
    program = dslc.compile(ROOT / "examples" / "digits" / "digits.dl", rate=rate)
    assert any(h["name"] == "seed" for h in program.manifest["graphs"]["train"]["hyper"]) == (rate > 0)
    trained = {t["name"]: namespace["feeds"][t["name"]] for t in program.manifest["graphs"]["train"]["params"]}
    np.testing.assert_allclose(namespace["probs"], program.predict(x_test, weights=trained)["probs"],
                               rtol=1e-5, atol=1e-7)


def test_resuming_with_a_define_that_changes_only_the_graphs_warns(tmp_path, capsys):
    """`-D rate=0.5` changes the dropout the training step computes, not its inputs, outputs or
    parameters: the manifest's `ir_sha256` of the step tells the runs apart (the same `-D` does not warn)."""
    digits = ROOT / "examples" / "digits"
    base = ["train", str(digits / "digits.dl"), "-D", "hidden=8", "--data", str(digits / "train.npz"),
            "--batch-size", "256", "--threads", "1", "-o", str(tmp_path / "run")]
    assert cli.main(base + ["-D", "rate=0.1", "--epochs", "1"]) == 0
    capsys.readouterr()
    assert cli.main(base + ["-D", "rate=0.1", "--epochs", "2", "--resume"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert cli.main(base + ["-D", "rate=0.5", "--epochs", "3", "--resume"]) == 0
    assert capsys.readouterr().err.splitlines()[0] == (  # the checkpoint's `-D` values say which
        "warning: the model parameters differ from the checkpoint's (`-D hidden=8`, `-D rate=0.5` now, "
        "`-D hidden=8`, `-D rate=0.1` before): the run will not match an uninterrupted one")
