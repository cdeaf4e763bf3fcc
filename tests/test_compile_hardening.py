"""Inputs that broke the compiler (issue 10), beyond the golden diagnostics in tests/diagnostics
(`init_*`, `optimizer_lr_out_of_range`, `layer_number_out_of_range`, `zero_dimension`, `shape_*`,
`penalty_as_stage`, `limit_*`): no numpy warning leaks from them, the limits fail fast, and Ctrl-C
while the command's imports load exits 130 without a traceback."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from dslc.compiler import compile_file
from dslc.diagnostics import DslcError
from dslc.frontend.parser import MAX_TOKENS
from dslc.limits import MAX_OPERATIONS, MAX_RECURRENT_STEPS
from golden import ROOT
from helpers import compile_text

CASES = ROOT / "tests" / "diagnostics"
NUMBERS = sorted([*CASES.glob("init_*.dl"), CASES / "optimizer_lr_out_of_range.dl",
                  CASES / "layer_number_out_of_range.dl"])


@pytest.mark.parametrize("case", NUMBERS, ids=[p.stem for p in NUMBERS])
def test_numbers_beyond_the_float_type_are_errors_without_a_numpy_warning(case: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning ("overflow encountered in cast") fails the test
        with pytest.raises(DslcError):
            compile_file(case)


def test_uniform_bounds_whose_width_overflows_float64(tmp_path):
    text = """
        model m {
            input x: f32[B, 4]
            output p = x |> dense(2, init = uniform(low = -1e308, high = 1e308))
        }"""
    with pytest.raises(DslcError, match=r"the width `high - low` is beyond the range of `float64`"):
        compile_text(tmp_path, text, dtype="float64")
    # bounds at the edge of float32 whose width does not fit float32 draw fine (in float64)
    program = compile_text(tmp_path, text.replace("1e308", "3e38"))
    weight = program.extras["final"]["infer"].inputs[1].attrs["default"]
    assert abs(weight).max() <= 3e38 and abs(weight).max() > 1e37


def test_derived_dimensions_at_the_edge_of_the_limit_still_compile(tmp_path):
    program = compile_text(tmp_path, """
        model m {
            input x: f32[B, 2147483648, 2147483648]
            output p = x |> flatten
        }""")
    assert str(program.extras["final"]["infer"].outputs[0][1].type) == "f32[B, 4611686018427387904]"


@pytest.mark.parametrize("body", [
    "output p = x |> repeat(100000000) { relu }",
    "output p = x |> repeat(10000) { repeat(10000) { same } }",
    "output p = x |> repeat(100000) { dense(4) |> relu }",
    "output p = reshape(x, 10, 4) |> gru(4, layers = 100000)",
])
def test_a_model_beyond_the_limits_fails_within_seconds(tmp_path, body):
    started = time.monotonic()
    with pytest.raises(DslcError, match="operations|time steps"):
        compile_text(tmp_path, f"block same(x) {{\n    return x\n}}\nmodel m {{\n    input x: f32[B, 40]\n    {body}\n}}")
    assert time.monotonic() - started < 60  # minutes (and gigabytes) before; ~3 s on a loaded 2-core machine


def test_a_model_of_too_many_tokens_fails_within_seconds(tmp_path):
    """200,000 terms in a 800 kB file (within the byte limit) took a minute to parse."""
    started = time.monotonic()
    with pytest.raises(DslcError, match=f"more than {MAX_TOKENS:,} tokens") as info:
        compile_text(tmp_path, "model m {\n    input x: f32[B, 4]\n    output y = x" + " + x" * 200_000 + "\n}")
    assert time.monotonic() - started < 60
    assert len(str(info.value)) < 1000  # the line of 800,000 characters is shown as a window
    # imported files count with the model
    (tmp_path / "lib.dl").write_text("block b(x) {\n    return x" + " + x" * (MAX_TOKENS // 2) + "\n}\n")
    with pytest.raises(DslcError, match="tokens"):
        compile_text(tmp_path, 'import "lib.dl"\nmodel m {\n    input x: f32[B, 4]\n    output y = x'
                     + " + x" * (MAX_TOKENS // 2) + "\n}")


def test_recurrent_steps_are_counted_over_the_whole_graph(tmp_path):
    half = MAX_RECURRENT_STEPS // 2
    text = f"""
        model m {{
            input x: f32[B, {half}, 1]
            output a = x |> gru(2)
            output b = x |> gru(2, bidirectional = true)
        }}"""
    with pytest.raises(DslcError) as info:
        compile_text(tmp_path, text)
    [d] = info.value.diagnostics
    assert d.span.line == 4 and f"({half:,} before it)" in d.message
    assert compile_text(tmp_path, text.replace("output b", "# output b")).name == "m"


def test_the_operation_limit_counts_operations(tmp_path):
    layers = MAX_OPERATIONS // 4 + 1  # a dense with relu is 4 (matmul, add, relu, and the bias)
    with pytest.raises(DslcError, match=f"more than {MAX_OPERATIONS:,} operations"):
        compile_text(tmp_path, f"model m {{\n    input x: f32[B, 4]\n    output p = x |> repeat({layers}) {{ dense(4) |> relu }}\n}}")


# ---- Ctrl-C --------------------------------------------------------------------------------------
READY = "import sys; sys.stdout.write('ready\\n'); sys.stdout.flush(); from dslc.__main__ import run; sys.exit(run())"


STOPS = {signal.SIGINT: (130, "error: interrupted\n"), signal.SIGTERM: (143, "error: terminated (SIGTERM)\n")}


def deep_model(folder: Path) -> Path:
    """A model whose `dslc check` takes ~1.4 s of CPU (400 layers), so that a signal sent in its first
    ~0.6 s finds the command still running: mlp.dl's check ends in ~0.3 s."""
    model = folder / "deep.dl"
    model.write_text("model deep {\n    input x: f32[B, 8]\n    target y: f32[B, 8]\n"
                     "    p = x |> repeat(400) { dense(8) |> relu }\n    output q = p\n    loss mse(p, y)\n"
                     "    optimizer adam()\n}\n")
    return model


@pytest.mark.parametrize("signum, delay", [(signal.SIGINT, 0.02), (signal.SIGINT, 0.1), (signal.SIGINT, 0.3),
                                           (signal.SIGINT, 0.6), (signal.SIGTERM, 0.1), (signal.SIGTERM, 0.6)])
def test_ctrl_c_or_sigterm_while_the_imports_load_exits_quietly(signum, delay, tmp_path):
    """SIGINT or SIGTERM `delay` seconds after the interpreter is up, while numpy, onnx and lark are
    imported (the first ~0.2 s of CPU) or the model compiles (a 400-layer model: ~1.4 s of CPU, so that
    the latest signal still finds the command running): `error: interrupted` and exit 130, or
    `error: terminated` and exit 143, no traceback."""
    child = subprocess.Popen([sys.executable, "-c", READY, "check", str(deep_model(tmp_path))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    time.sleep(delay)
    child.send_signal(signum)
    _, err = child.communicate(timeout=120)
    assert (child.returncode, err) == STOPS[signum]


@pytest.mark.parametrize("signum", list(STOPS))
def test_a_stop_inside_an_import_ends_the_process_at_once_and_elsewhere_raises(signum):
    """`dslc.interrupts._on_signal`: a SIGINT or SIGTERM landing in a frame of importlib (a module being
    imported) exits 130 or 143 with its `error:` line at once, without unwinding (a KeyboardInterrupt inside
    numpy's C initialisation was exit 101 or a SIGSEGV/SIGABRT on the way out, 6 of 100 runs under load);
    anywhere else it is the KeyboardInterrupt (`Terminated` for SIGTERM) the training loop handles, keeping
    its last epoch."""
    inside_import = ("import signal, sys; from dslc.interrupts import _on_signal\n"
                     "frame = eval(compile('sys._getframe()', '<frozen importlib._bootstrap>', 'eval'))\n"
                     "print('flushed before exiting', end='')\n"
                     f"_on_signal({int(signum)}, frame)\n"
                     "sys.exit(0)\n")
    child = subprocess.run([sys.executable, "-c", inside_import], capture_output=True, text=True, timeout=60)
    code, message = STOPS[signum]
    assert (child.returncode, child.stdout, child.stderr) == (code, "flushed before exiting", message)
    from dslc.interrupts import Terminated, _on_signal

    with pytest.raises(Terminated if signum == signal.SIGTERM else KeyboardInterrupt) as raised:
        _on_signal(signum, sys._getframe())
    assert isinstance(raised.value, KeyboardInterrupt)


def test_an_import_error_raised_from_ctrl_c_is_an_interrupt(monkeypatch, capsys):
    """numpy turns a SIGINT that lands in the import of its C extension into an ImportError raised from the
    KeyboardInterrupt: that is a Ctrl-C (exit 130), not a bug in dslc (it was exit 101 about once a run of
    the test above under load)."""
    from dslc import cli

    def interrupted_import(args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise ImportError("Importing the numpy C-extensions failed.") from interrupt

    monkeypatch.setattr(cli, "_run", interrupted_import)
    assert cli.main(["check", str(ROOT / "models" / "mlp.dl")]) == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "error: interrupted\n"
    monkeypatch.setattr(cli, "_run", lambda args: __import__("no_such_module_of_dslc"))
    assert cli.main(["check", str(ROOT / "models" / "mlp.dl")]) == cli.EXIT_BUG

def test_the_console_script_runs_the_quiet_entry_point(tmp_path):
    script = Path(sys.executable).parent / "dslc"
    if not script.exists():
        pytest.skip("the `dslc` console script is not installed next to this interpreter")
    assert "from dslc.__main__ import run" in script.read_text()
    child = subprocess.Popen([str(script), "check", str(deep_model(tmp_path))], stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130 and "Traceback" not in err, (child.returncode, err)


# ---- found by the fuzzer (tests/test_fuzz.py --fuzz) ---------------------------------------------------
@pytest.mark.parametrize("call, message", [
    # seed 1387: the size of a 309-digit shape was formatted as a float (OverflowError)
    ('conv2d(4, 3, padding = 1e308)', "is too large: its static dimensions multiply to more than 2^62 elements"),
    # seed 1496: the bytes of a parameter of 10^616 elements were divided as floats (OverflowError)
    ('conv2d(4, 1e308, padding = "same")', "needs about 10^605 TiB for its parameter `weight`"),
])
def test_absurd_sizes_are_diagnostics(tmp_path, call, message):
    with pytest.raises(DslcError, match=re.escape(message)):
        compile_text(tmp_path, f"model m {{\n    input x: f32[B, 1, 8, 8]\n    output y = x |> {call}\n}}")


def test_parameters_are_drawn_only_once_the_model_fits(tmp_path):
    """Seed 5010: `lstm(100000000)` made a first parameter of 1.6 GB (within the weight limit) and drew it
    (65 s, 3 GB) before the second one crossed the limit; values are now drawn after the whole model is
    lowered, once for all graphs."""
    started = time.monotonic()
    with pytest.raises(DslcError, match="needs 145,519.2 TiB for its parameter `weight_hh_l0`"):
        compile_text(tmp_path, "model m {\n    input x: f32[B, 20, 1]\n    output y = x |> lstm(100000000)\n}")
    assert time.monotonic() - started < 20
    program = compile_text(tmp_path, "model m {\n    input x: f32[B, 4]\n    target t: f32[B, 2]\n"
                                     "    output y = x |> dense(2)\n    loss mse(y, t)\n    optimizer sgd(lr = 0.1)\n}")
    infer, train = program.extras["final"]["infer"], program.extras["final"]["train"]
    weight = lambda g: next(n for n in g.inputs if n.name == "dense_0.weight").attrs["default"]  # noqa: E731
    assert weight(infer) is weight(train)  # one draw, shared
