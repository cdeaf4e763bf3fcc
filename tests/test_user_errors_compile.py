"""User mistakes the compiler must report as diagnostics (exit 1), never as an internal error (exit 101):
files that are not UTF-8, integer and `bool` tensors where an op or layer needs floats, numbers too
large for a graph, parameters too large for a file, expressions nested too deeply; and the reporting
itself: several errors at once, each reported once, and `python -m dslc`.

The model-level cases with fixed text are golden files in tests/diagnostics; the tables here run every
op of the registry and every builtin with inputs of every dtype.
"""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import unicodedata

import pytest

import dslc
from dslc import cli, compiler, lower, lower_exprs
from dslc.builtins import load_all
from dslc.diagnostics import DslcError, render_all
from dslc.emit.onnx import check, emit_graph
from dslc.ir.graph import Builder, Graph
from dslc.ir.types import DTYPES, TensorType
from dslc.ops import REGISTRY
from dslc.spelling import command_line
from golden import ROOT
from helpers import compile_text, ort_session  # a session fails where ORT has no kernel

SHORT = [short for short, _ in DTYPES.values()]  # f32, f64, i32, i64, bool


def diagnostics(tmp_path, text: str, **kw) -> list[str]:
    """`line:col: message` of each diagnostic of a model that must fail to compile."""
    with pytest.raises(DslcError) as info:
        compile_text(tmp_path, text, **kw)
    return [f"{d.span.line}:{d.span.col}: {d.message}" for d in info.value.diagnostics]


# ---- files that are not UTF-8 text --------------------------------------------------------------------
def test_a_binary_file_is_a_diagnostic_at_its_first_bad_byte(tmp_path, capsys):
    path = tmp_path / "x4.npz"
    path.write_bytes(b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00!\x00\x8e\xf6\x00\x01\x02model" + bytes(range(256)))
    assert cli.main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:1:15: error: the file is not UTF-8 text\n"), err
    assert "internal compiler error" not in err and "\x00" not in err and "\x1b" not in err


def test_an_imported_file_that_is_not_utf8_is_reported_at_its_bad_byte(tmp_path):
    (tmp_path / "lib.dl").write_bytes(b"# bl\xf6cke\nblock b(x) {\n    return x\n}\n")
    messages = diagnostics(tmp_path, 'import "lib.dl"\nmodel m {\n    input x: f32[B, 4]\n    output y = b(x)\n}')
    assert messages == ["1:5: the file is not UTF-8 text"]


def test_a_leading_byte_order_mark_is_skipped(tmp_path):
    path = tmp_path / "bom.dl"
    path.write_bytes("\ufeffmodel m {\n    input x: f32[B, 4]\n    output y = relu(x)\n}\n".encode())
    assert compiler.compile_file(path).name == "m"


# ---- carets under lines with tabs and wide characters ----------------------------------------------------
@pytest.mark.parametrize("line, name", [
    ("\t\toutput h = x |>\tfoo", "foo"),
    ('    output h = x |> dense(3, name = "結果") |> foo', "foo"),
    ("\toutput h = x |> dense(3) |> foo # é", "foo"),
])
def test_the_caret_stands_under_the_name_as_shown(tmp_path, line, name):
    with pytest.raises(DslcError) as info:
        compile_text(tmp_path, f"model m {{\n    input x: f32[B, 4]\n{line}\n}}")
    shown, carets = render_all(info.value.diagnostics).splitlines()[2:4]
    assert "\t" not in shown
    before = shown[:shown.rindex(name)]
    column = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in before)  # terminal columns
    assert carets[column:].rstrip() == "^" * len(name) and set(carets[:column]) <= {" ", "|"}


# ---- dtypes: every op of the registry, every builtin, every dtype ------------------------------------
def _kind_and_shape(spec) -> tuple[str, tuple]:
    """A sample input: a float shape, or `(kind, shape, ...)` (see `dslc.ops.registry.Sample`)."""
    return (spec[0], tuple(spec[1])) if spec and isinstance(spec[0], str) else ("float", tuple(spec))


def _one_op_variants():
    """(op, sample index, input index or None for all, dtype): the sample's float inputs with
    `dtype`, one at a time or all together (integer and bool sample inputs stay as they are)."""
    for name, opdef in REGISTRY.items():
        if name in ("input", "const"):
            continue
        for k, sample in enumerate(opdef.samples):
            floats = [i for i, spec in enumerate(sample.inputs) if _kind_and_shape(spec)[0] in ("float", "positive")]
            for dtype in DTYPES:
                for which in [None] + (floats if len(floats) > 1 else []):
                    yield name, k, which, dtype


@pytest.mark.parametrize("name, k, which, dtype", list(_one_op_variants()))
def test_every_op_rejects_the_dtypes_onnx_cannot_run(name, k, which, dtype):
    """Either the op's rules reject the input dtypes (a diagnostic), or the one-op graph passes the
    ONNX checker and ONNX Runtime has a kernel for it."""
    sample = REGISTRY[name].samples[k]
    b = Builder()
    inputs = []
    for i, spec in enumerate(sample.inputs):
        kind, shape = _kind_and_shape(spec)
        t = {"int": "int64", "bool": "bool"}.get(kind, dtype if which in (None, i) else "float32")
        inputs.append(b.input(f"in{i}", TensorType(t, shape), "data"))
    try:
        out = b.emit(name, *inputs, **sample.attrs)
    except DslcError:
        return
    model = emit_graph(Graph(name, inputs, [("out", out)]))
    check(model)
    ort_session(model)


# Every builtin with tensor arguments, called with inputs `name: [dims]` (f32 unless a dtype is given).
CALLS = {
    "abs": ("x: [B, 4]", "abs(x)"), "exp": ("x: [B, 4]", "exp(x)"), "log": ("x: [B, 4]", "log(x)"),
    "sqrt": ("x: [B, 4]", "sqrt(x)"), "relu": ("x: [B, 4]", "relu(x)"), "sigmoid": ("x: [B, 4]", "sigmoid(x)"),
    "tanh": ("x: [B, 4]", "tanh(x)"), "gelu": ("x: [B, 4]", "gelu(x)"), "leaky_relu": ("x: [B, 4]", "leaky_relu(x)"),
    "softmax": ("x: [B, 4]", "softmax(x)"), "log_softmax": ("x: [B, 4]", "log_softmax(x)"),
    "accuracy": ("s: [B, 3]; t: i64[B]", "accuracy(s, t)"),
    "precision": ("s: [B, 3]; t: i64[B]", "precision(s, t)"), "recall": ("s: [B, 1]; t: [B, 1]", "recall(s, t)"),
    "f1": ("s: [B, 3]; t: [B, 3]", 'f1(s, t, average = "micro")'),
    "confusion_matrix": ("s: [B, 3]; t: i64[B]", "confusion_matrix(s, t)"),
    "auc": ("s: [B, 3]; t: [B, 3]", "auc(s, t, multi_label = true)"),
    "top_k_accuracy": ("s: [B, 3]; t: i64[B]", "top_k_accuracy(s, t, k = 2)"), "mae": ("a: [B, 3]; b: [B, 3]", "mae(a, b)"),
    "attention": ("q: [B, 5, 4]; m: bool[B, 5]", "attention(q, q, q, 2, key_mask = m)"),
    "avg_pool1d": ("x: [B, 2, 6]", "avg_pool1d(x, 2)"), "avg_pool2d": ("x: [B, 2, 6, 6]", "avg_pool2d(x, 2)"),
    "max_pool1d": ("x: [B, 2, 6]", "max_pool1d(x, 2)"), "max_pool2d": ("x: [B, 2, 6, 6]", "max_pool2d(x, 2)"),
    "batch_norm": ("x: [B, 3]", "batch_norm(x)"),
    "binary_cross_entropy": ("a: [B, 3]; t: [B, 3]", "binary_cross_entropy(a, t)"),
    "cast": ("x: [B, 4]", 'cast(x, "i64")'), "clip": ("x: [B, 4]", "clip(x, 0, 1)"),
    "concat": ("x: [B, 4]; y: [B, 2]", "concat(x, y)"),
    "conv1d": ("x: [B, 2, 6]", "conv1d(x, 2, 3)"), "conv2d": ("x: [B, 2, 6, 6]", "conv2d(x, 2, 3)"),
    "conv_transpose1d": ("x: [B, 2, 6]", "conv_transpose1d(x, 2, 3)"),
    "conv_transpose2d": ("x: [B, 2, 6, 6]", "conv_transpose2d(x, 2, 3)"),
    "cross_entropy": ("a: [B, 3]; t: i64[B]", "cross_entropy(a, t)"),
    "dense": ("x: [B, 4]", "dense(x, 3)"), "linear": ("x: [B, 5, 4]", "linear(x, 3)"),
    "dropout": ("x: [B, 4]", "dropout(x, 0.5)"), "embedding": ("ids: i64[B, 5]", "embedding(ids, 10, 4)"),
    "flatten": ("x: [B, 2, 3]", "flatten(x)"),
    "global_avg_pool": ("x: [B, 2, 3, 3]", "global_avg_pool(x)"),
    "global_max_pool": ("x: [B, 2, 3, 3]", "global_max_pool(x)"),
    "rnn": ("x: [B, 5, 4]; h: [B, 3]", "rnn(x, 3, initial_state = h)"),
    "gru": ("x: [B, 5, 4]; h: [B, 3]", "gru(x, 3, initial_state = h)"),
    "lstm": ("x: [B, 5, 4]; h: [B, 6]", "lstm(x, 3, initial_state = h)"),
    "layer_norm": ("x: [B, 4]", "layer_norm(x)"),
    "max": ("x: [B, 4]", "max(x, 1)"), "min": ("x: [B, 4]", "min(x, 1)"), "mean": ("x: [B, 4]", "mean(x, 1)"),
    "sum": ("x: [B, 4]", "sum(x, 1)"), "mse": ("a: [B, 3]; b: [B, 3]", "mse(a, b)"),
    "positional_embedding": ("x: [B, 5, 4]", "positional_embedding(x, 8)"),
    "pow": ("x: [B, 4]; y: [B, 4]", "pow(x, y)"), "reshape": ("x: [B, 4]", "reshape(x, 2, 2)"),
    "squeeze": ("x: [B, 4, 1]", "squeeze(x)"),
    "sinusoidal_position": ("x: [B, 5, 4]", "sinusoidal_position(x)"),
    "transpose": ("x: [B, 3, 4]", "transpose(x, 0, 2, 1)"), "upsample": ("x: [B, 2, 3, 3]", "upsample(x, 2)"),
    "where": ("c: bool[B, 4]; x: [B, 4]; y: [B, 4]", "where(c, x, y)"),
    "+": ("x: [B, 4]; y: [B, 4]", "x + y"), "-": ("x: [B, 4]; y: [B, 4]", "x - y"),
    "*": ("x: [B, 4]; y: [B, 4]", "x * y"), "/": ("x: [B, 4]; y: [B, 4]", "x / y"),
    "@": ("x: [B, 4]; w: [4, 3]", "x @ w"), "neg": ("x: [B, 4]", "-x"),
    "<": ("x: [B, 4]; y: [B, 4]", "x < y"), "==": ("x: [B, 4]; y: [B, 4]", "x == y"),
    "index": ("x: [B, 4]", "x[:, 1:3]"), "number": ("x: [B, 4]", "2 * x + 1"),
}


def test_the_table_calls_every_builtin_with_tensor_arguments():
    with_tensors = {name for name, fn in load_all().items() if fn.category != "penalty"}
    assert with_tensors <= set(CALLS), sorted(with_tensors - set(CALLS))


def _declarations(spec: str) -> list[tuple[str, str, str]]:
    out = []
    for part in spec.split(";"):
        name, dtype, dims = re.fullmatch(r"\s*(\w+): (\w+)?(\[.*\])\s*", part).groups()
        out.append((name, dtype or "f32", dims))
    return out


@pytest.mark.parametrize("call, which, dtype", [(call, i, dtype) for call, (spec, _) in CALLS.items()
                                                 for i in range(len(_declarations(spec))) for dtype in SHORT])
def test_every_builtin_rejects_the_dtypes_onnx_cannot_run(tmp_path, call, which, dtype):
    """The builtin with one tensor argument of `dtype`, in a model that trains: a diagnostic, or
    graphs that pass the ONNX checker and that ONNX Runtime can run."""
    spec, expr = CALLS[call]
    decls = "\n".join(f"input {name}: {dtype if i == which else given}{dims}"
                      for i, (name, given, dims) in enumerate(_declarations(spec)))
    text = f'model m {{\n{decls}\noutput out = {expr}\nloss mean(cast(out, "f32"))\noptimizer sgd()\n}}'
    try:
        program = compile_text(tmp_path, text)
    except DslcError as e:
        assert all(d.span is not None for d in e.diagnostics)
        return
    for graph in program.graphs.values():
        ort_session(graph)


def test_integer_and_bool_inputs_get_the_floating_point_diagnostic(tmp_path):
    assert diagnostics(tmp_path, """
        model m {
            input i: i64[B, 4]
            input b: bool[B, 4]
            output d = dense(i, 3)
            output s = b + b
            output p = b @ b
            output r = relu(i)
        }""") == ["4:22: `dense` needs a floating-point input, got `i64[B, 4]`",
                  "5:16: expected a numeric input, got `bool[B, 4]`",
                  "6:16: expected a numeric input, got `bool[B, 4]`",
                  "7:16: expected a floating-point input, got `i64[B, 4]`"]


def test_reductions_of_a_scalar_compile(tmp_path):
    program = compile_text(tmp_path, """
        model m {
            input x: f32[B, 3]
            target t: f32[B, 3]
            output y = x |> dense(3)
            loss mean(mse(y, t)) + sum(max(min(mse(y, t))))
            optimizer sgd()
        }""")
    assert set(program.graphs) == {"infer", "predict", "init", "train", "eval"}


# ---- numbers too large, and -D values ---------------------------------------------------------------
MLP = """
    model m(hidden = 8, lr = 0.1) {
        input x: f32[B, 4]
        target t: f32[B, 2]
        output y = x |> dense(hidden) |> dense(2)
        loss mse(y, t)
        optimizer sgd(lr = lr)
    }"""


@pytest.mark.parametrize("define, message", [
    ("lr=nan", "`-D lr=nan` is not a finite number"),
    ("lr=inf", "`-D lr=inf` is not a finite number"),
    ("lr=-Infinity", "`-D lr=-Infinity` is not a finite number"),
    ("lr=1e999", "`-D lr=1e999` is not a finite number"),
    ("hidden=99999999999999999999", "`-D hidden=99999999999999999999` is too large"),
    ("hidden=abc", '`dense` expects `units` to be a whole number, got the string "abc" (from `-D hidden=abc`)'),
])
def test_unusable_define_values_are_diagnostics_that_name_the_define(tmp_path, define, message):
    name, value = define.split("=")
    with command_line():
        (found,) = diagnostics(tmp_path, MLP, defines={name: value})
    assert found.split(": ", 1)[1] == message
    (found,) = diagnostics(tmp_path, MLP, defines={name: value})  # from Python: a keyword argument
    assert found.split(": ", 1)[1] == message.replace("-D ", "")


def test_unknown_hyper_parameter_is_named_as_the_caller_gave_it(tmp_path):
    (path := tmp_path / "m.dl").write_text(MLP)
    with pytest.raises(DslcError) as e:
        dslc.compile(path, hiden=64)
    assert e.value.diagnostics[0].message == "model `m` has no hyper-parameter `hiden` (a keyword argument of " \
                                             "`dslc.compile`)"
    with pytest.raises(DslcError) as e, command_line():
        dslc.compile(path, hiden=64)
    assert e.value.diagnostics[0].message == "model `m` has no hyper-parameter `hiden` (given with -D)"


def test_huge_dense_layers_fail_before_their_weights_are_drawn(tmp_path):
    (found,) = diagnostics(tmp_path, MLP, defines={"hidden": "1000000000"})
    assert found == "4:21: layer `dense_0` needs 14.9 GiB for its parameter `weight` `f32[4, 1000000000]`"


def test_parameters_that_fit_alone_but_not_together_are_reported_at_the_layer_that_overflows(tmp_path, monkeypatch):
    monkeypatch.setattr(lower, "MAX_WEIGHT_BYTES", 4 * (4 * 8 + 8 + 8 * 2))  # dense_0, and dense_1's weight
    (found,) = diagnostics(tmp_path, MLP)
    assert found == "4:38: layer `dense_1` needs 8 bytes for its parameter `bias` `f32[2]`, " \
                    "232 bytes with the parameters before it"


def test_a_training_graph_too_large_with_the_optimizer_state_is_reported_at_the_optimizer(tmp_path, monkeypatch):
    limit = 300  # the parameters take 232 bytes; SGD's state is a step counter, Adam's two more copies of them
    monkeypatch.setattr(lower, "MAX_WEIGHT_BYTES", limit)
    monkeypatch.setattr(compiler, "MAX_WEIGHT_BYTES", limit)
    compile_text(tmp_path, MLP)
    with pytest.raises(DslcError) as info:
        compile_text(tmp_path, MLP.replace("sgd(lr = lr)", "adam(lr = lr)"))
    (d,) = info.value.diagnostics
    assert (d.span.line, d.message) == (6, "the training graph needs 708 bytes for the parameters (236 bytes) and "
                                           "the state of `adam` (472 bytes)")


# ---- nesting ----------------------------------------------------------------------------------------
NESTED = {
    "calls": lambda n: "relu(" * n + "x" + ")" * n,
    "minus": lambda n: "-" * n + "x",
    "sums to the right": lambda n: "x + (" * n + "x" + ")" * n,
    "pipelines in arguments": lambda n: "concat(" * n + "x |> relu" + ", x |> relu)" * n,
    "indexing": lambda n: "x" + "[:, 0:4]" * n,
    "repeats": lambda n: "x |> " + "repeat(1) { " * n + "relu" + " }" * n,
}


@pytest.mark.parametrize("kind", list(NESTED))
def test_expressions_nest_up_to_the_limit_and_no_deeper(tmp_path, kind):
    body = "model m {{\n    input x: f32[B, 4]\n    output y = {}\n}}"
    compile_text(tmp_path, body.format(NESTED[kind](lower_exprs.MAX_NESTING - 1)))
    (found,) = diagnostics(tmp_path, body.format(NESTED[kind](lower_exprs.MAX_NESTING + 1)))
    assert found.endswith(": expression nested too deeply")


def test_blocks_count_towards_the_nesting_limit(tmp_path):
    blocks = "".join(f"block b{i}(x) {{\n    return relu(x) |> b{i + 1}\n}}\n" for i in range(120))
    text = blocks + "block b120(x) {\n    return x\n}\nmodel m {\n    input x: f32[B, 4]\n    output y = x |> b0\n}"
    messages = diagnostics(tmp_path, text)
    assert len(messages) == 1 and messages[0].endswith(": expression nested too deeply")


def test_long_sums_and_pipelines_do_not_nest(tmp_path):
    text = "model m {{\n    input x: f32[B, 4]\n    output y = {}\n    output z = {}\n}}"
    compile_text(tmp_path, text.format("x" + " + x" * 3000, "x" + " |> relu" * 3000))


# ---- several errors, each reported once ------------------------------------------------------------
def test_errors_in_the_forward_pass_and_in_training_statements_are_reported_together_once(tmp_path):
    assert diagnostics(tmp_path, """
        model m {
            input x: f32[B, 4]
            target t: f32[B, 2]
            h = x |> dense(2) |> foo
            output y = h |> relu
            output z = x |> dense(2, bias = 3)
            loss mse(x |> dense(2), tt)
            optimizer sgd(lr = -1)
        }""") == ["4:26: unknown layer or function `foo`", "6:30: `dense` expects `bias` to be `true` or `false`, "
                  "got the number `3`", "7:29: unknown name `tt`", "8:24: `lr` must be a non-negative number, "
                  "got the number `-1`"]


def test_a_poisoned_name_is_not_reported_again_and_a_redefinition_still_is(tmp_path):
    assert diagnostics(tmp_path, """
        model m {
            input x: f32[B, 4]
            h = x |> nope
            h = x |> relu
            output h
        }""") == ["3:14: unknown layer or function `nope`", "4:5: `h` is defined twice"]


# ---- python -m dslc --------------------------------------------------------------------------------
def test_python_dash_m_dslc_runs_the_command_line(tmp_path):
    path = tmp_path / "bad.dl"
    path.write_text(textwrap.dedent("""
        model m {
            input x: f32[B, 4]
            output y = x |> relu |> nope
        }"""), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "dslc", "check", str(path)], capture_output=True, text=True,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert done.returncode == 1, done.stderr
    assert "error: unknown layer or function `nope`" in done.stderr
    ok = subprocess.run([sys.executable, "-m", "dslc", "check", str(ROOT / "models" / "xor.dl")],
                        capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert (ok.returncode, ok.stderr) == (0, "checked xor: 17 parameters\n")
