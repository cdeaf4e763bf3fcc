"""The frontend: `.dl` text -> `ast` records with exact spans. Error wording lives in the golden files."""
from __future__ import annotations

import pytest

from dslc.diagnostics import DslcError
from dslc.frontend import ast, parse, parse_file
from dslc.frontend.syntax_errors import _terminal_text
from dslc.source import SourceFile


def parse_text(text: str) -> ast.Module:
    return parse(SourceFile.from_text("t.dl", text))


def model_body(text: str) -> tuple[ast.Stmt, ...]:
    (model,) = parse_text("model m {\n" + text + "\n}\n").models
    return model.body


def expr(text: str) -> ast.Expr:
    (stmt,) = model_body(f"    y = {text}")
    return stmt.value


def text_of(node_or_span) -> str:
    span = getattr(node_or_span, "span", node_or_span)
    return span.source.text[span.start:span.end]


def sexp(node) -> str:
    """A compact, readable shape of an expression: `(+ a (* b 2))`, `(|> x f(k=1) g)`."""
    match node:
        case ast.Number(value) | ast.Bool(value):
            return repr(value)
        case ast.String(value):
            return repr(value)
        case ast.Name(id):
            return id
        case ast.Unary(op, operand):
            return f"({op} {sexp(operand)})"
        case ast.BinOp(op, left, right):
            return f"({op} {sexp(left)} {sexp(right)})"
        case ast.Call(func, args, kwargs):
            return f"{func}(" + ", ".join([sexp(a) for a in args] + [f"{k.name}={sexp(k.value)}" for k in kwargs]) + ")"
        case ast.Pipe(value, stages):
            return "(|> " + " ".join(sexp(s) for s in (value, *stages)) + ")"
        case ast.Repeat(count, stages):
            return f"repeat({sexp(count)}){{" + " |> ".join(sexp(s) for s in stages) + "}"
    raise TypeError(node)


# ---- expressions -------------------------------------------------------------------------------
@pytest.mark.parametrize("text, shape", [
    ("a + b |> relu", "(|> (+ a b) relu)"),
    ("a + b * c", "(+ a (* b c))"),
    ("a - b - c", "(- (- a b) c)"),
    ("a / b * c", "(* (/ a b) c)"),
    ("a @ b + c", "(+ (@ a b) c)"),
    ("(a + b) * 2 - c / d @ e", "(- (* (+ a b) 2) (@ (/ c d) e))"),
    ("-a * b", "(* (- a) b)"),
    ("a * -b", "(* a (- b))"),
    ("- -a", "(- (- a))"),
    ("a - -1", "(- a (- 1))"),
    ("cross_entropy(l, y) + 1e-4 * l2(w)", "(+ cross_entropy(l, y) (* 0.0001 l2(w)))"),
    ("a |> f |> g", "(|> a f g)"),
    ("(a |> f) |> g", "(|> (|> a f) g)"),
    ("(a |> f) + 1", "(+ (|> a f) 1)"),
    ("f(x |> relu, k = a + 1)", "f((|> x relu), k=(+ a 1))"),
    ("x |> dense(64, bias = false, init = he)", "(|> x dense(64, bias=False, init=he))"),
    ("x |> repeat(depth) { residual(h) |> relu }", "(|> x repeat(depth){residual(h) |> relu})"),
    ("x |> repeat(2 * n) { relu } |> softmax", "(|> x repeat((* 2 n)){relu} softmax)"),
    ("x |> repeat(2) { repeat(3) { relu } }", "(|> x repeat(2){repeat(3){relu}})"),
    ("f()", "f()"),
    ("f(a = 1)", "f(a=1)"),
    ("((a))", "a"),
])
def test_expression_shape(text, shape):
    assert sexp(expr(text)) == shape


@pytest.mark.parametrize("text, value, kind", [
    ("128", 128, int),
    ("0", 0, int),
    ("0.01", 0.01, float),
    ("1e-4", 1e-4, float),
    ("1.5e3", 1500.0, float),
    ("2E+2", 200.0, float),
    ("3.0", 3.0, float),
])
def test_number_literals(text, value, kind):
    number = expr(text)
    assert isinstance(number, ast.Number) and number.value == value and type(number.value) is kind


@pytest.mark.parametrize("text, value", [
    ('"blocks.dl"', "blocks.dl"),
    ('""', ""),
    ('"say \\"hi\\""', 'say "hi"'),
    ('"a\\\\b"', "a\\b"),
    ('"line\\nbreak\\tx"', "line\nbreak\tx"),
    ('"# not a comment"', "# not a comment"),
])
def test_string_literals(text, value):
    assert expr(text) == ast.String(value, expr(text).span)


def test_bool_literals():
    assert [type(e) for e in (expr("true"), expr("false"))] == [ast.Bool, ast.Bool]
    assert (expr("true").value, expr("false").value) == (True, False)


def test_call_separates_positional_and_keyword_arguments():
    call = expr("dense(x, 10, bias = false, init = he)")
    assert call.func == "dense"
    assert [sexp(a) for a in call.args] == ["x", "10"]
    assert [(k.name, sexp(k.value)) for k in call.kwargs] == [("bias", "False"), ("init", "he")]


# ---- statements --------------------------------------------------------------------------------
def test_input_and_target_declarations():
    image, digit, scalar = model_body("input image: f32[B, 784]\ntarget digit: i64[B]\ninput t: f64[]")
    assert (image.kind, image.name, image.type.dtype) == ("input", "image", "f32")
    assert [d.value for d in image.type.dims] == ["B", 784]
    assert isinstance(image.type.dims[1].value, int)
    assert (digit.kind, digit.name, digit.type.dtype, [d.value for d in digit.type.dims]) == ("target", "digit", "i64", ["B"])
    assert scalar.type.dims == ()


@pytest.mark.parametrize("dtype", ["f32", "f64", "i32", "i64", "bool"])
def test_every_dtype(dtype):
    (decl,) = model_body(f"input x: {dtype}[N]")
    assert decl.type.dtype == dtype


def test_statements_of_a_model():
    body = model_body("""
        h = x |> relu
        output probs = softmax(h)
        output h
        loss cross_entropy(h, y) + 1e-4 * l2(w)
        optimizer sgd(lr = 0.01, momentum = 0.9, nesterov = true, decay = 1e-6)
        metric accuracy(h, y)
        metric acc2 = accuracy(h, y)
        return h
    """)
    assert [type(s) for s in body] == [ast.Assign, ast.Output, ast.Output, ast.Loss, ast.Optimizer,
                                       ast.Metric, ast.Metric, ast.Return]
    assign, named_out, bare_out, loss, optimizer, metric, named_metric, ret = body
    assert (assign.name, sexp(assign.value)) == ("h", "(|> x relu)")
    assert (named_out.name, sexp(named_out.value)) == ("probs", "softmax(h)")
    assert (bare_out.name, bare_out.value) == ("h", None)
    assert sexp(loss.value) == "(+ cross_entropy(h, y) (* 0.0001 l2(w)))"
    assert sexp(optimizer.call) == "sgd(lr=0.01, momentum=0.9, nesterov=True, decay=1e-06)"
    assert (metric.name, sexp(metric.value)) == (None, "accuracy(h, y)")
    assert (named_metric.name, sexp(named_metric.value)) == ("acc2", "accuracy(h, y)")
    assert sexp(ret.value) == "h"


# ---- file structure ----------------------------------------------------------------------------
EXAMPLE = """\
# comments run from `#` to end of line
import "blocks.dl"
import "more/layers.dl"

block residual(x, width, rate = 0.1) {     # a reusable block
    h = x |> dense(width) |> relu |> dropout(rate)
    return x + h
}

model mnist_mlp(hidden = 128, classes = 10) {
    input  image: f32[B, 784]
    target digit: i64[B]
    logits = image |> dense(hidden) |> relu |> dense(classes)
    output probs = softmax(logits)
    loss cross_entropy(logits, digit)
    optimizer sgd(lr = 0.01)
}

block gated(x) { return x * sigmoid(x) }
model xor { input x: f32[B, 2] }
model xor2() {
}
"""


def test_module_structure():
    module = parse_text(EXAMPLE)
    assert [i.path for i in module.imports] == ["blocks.dl", "more/layers.dl"]
    assert [b.name for b in module.blocks] == ["residual", "gated"]
    assert [m.name for m in module.models] == ["mnist_mlp", "xor", "xor2"]
    residual = module.blocks[0]
    assert [(p.name, p.default and sexp(p.default)) for p in residual.params] == [
        ("x", None), ("width", None), ("rate", "0.1")]
    assert [(p.name, sexp(p.default)) for p in module.models[0].params] == [("hidden", "128"), ("classes", "10")]
    assert module.models[1].params == () and module.models[2].params == ()
    assert module.models[2].body == ()
    assert module.source.path == "t.dl"


@pytest.mark.parametrize("text", ["", "\n\n", "# just a comment", "# a\n\n   # b\n"])
def test_empty_files(text):
    module = parse_text(text)
    assert (module.imports, module.blocks, module.models) == ((), (), ())


def test_parse_file_reads_the_path(tmp_path):
    path = tmp_path / "m.dl"
    path.write_text("model m {\n    input x: f32[B]\n}\n")
    module = parse_file(path)
    assert module.source.path == str(path) and module.models[0].name == "m"
    with pytest.raises(OSError):
        parse_file(tmp_path / "missing.dl")


# ---- layout: newlines, comments, `;` -----------------------------------------------------------
PIPELINE = "(|> x relu dense(3) softmax)"


@pytest.mark.parametrize("text", [
    "y = x |> relu |> dense(3) |> softmax",
    "y = x |>\n    relu |>\n    dense(3) |>\n    softmax",
    "y = x\n    |> relu\n    |> dense(3)\n    |> softmax",
    "y = x   # the input\n    |> relu  # activation\n    # a comment line\n\n    |> dense(3)\n    |> softmax",
    "y = x |> # trailing comment\n    relu |>\n\n    dense(3) |> softmax",
    "y = x |> relu |> dense(\n    3\n) |> softmax",
    "y = (\n    x\n    |> relu\n) |> dense(3) |> softmax",
])
def test_multi_line_pipelines(text):
    (stmt,) = model_body(text)
    assert sexp(stmt.value).replace("(|> (|> x relu) ", "(|> x relu ") == PIPELINE


@pytest.mark.parametrize("text, shape", [
    ("y = a +\n    b", "(+ a b)"),
    ("y = a *\n\n    b", "(* a b)"),
    ("y = a -\n    -b", "(- a (- b))"),
    ("y = f(\n    a,\n    k = 1,\n    j = 2\n)", "f(a, k=1, j=2)"),
    ("y = x |> repeat(2) {\n    dense(3)\n    |> relu\n}", "(|> x repeat(2){dense(3) |> relu})"),
    ("y = x |> repeat(\n  2\n) { relu }", "(|> x repeat(2){relu})"),
])
def test_continuation_lines(text, shape):
    (stmt,) = model_body(text)
    assert sexp(stmt.value) == shape


@pytest.mark.parametrize("text", [
    "model m { input x: f32[B]; y = x |> relu; output y }",
    "model m {\n    input x: f32[B];\n    y = x |> relu;;\n    output y;\n}",
    "model m\n{\n\n    input x: f32[B]\n\n\n    y = x |> relu\n    output y\n\n}\n",
    "model m {\r\n    input x: f32[B]\r\n    y = x |> relu\r\n    output y\r\n}\r\n",
    "\n\n# header\nmodel m {   # the model\n    input x: f32[B]   # x\n    y = x |> relu\n    output y}",
    "model m {\n\tinput x: f32[\n\t\tB\n\t]\n\ty = x |> relu\n\toutput y\n}",
])
def test_statement_separators(text):
    (model,) = parse_text(text).models
    assert [type(s) for s in model.body] == [ast.InputDecl, ast.Assign, ast.Output]


def test_pipes_flatten():
    pipe = expr("x |> f |> g(1) |> h")
    assert isinstance(pipe, ast.Pipe) and len(pipe.stages) == 3
    assert [type(s) for s in pipe.stages] == [ast.Name, ast.Call, ast.Name]


# ---- spans -------------------------------------------------------------------------------------
def test_spans_cover_exactly_their_text():
    module = parse_text(EXAMPLE)
    residual, mlp = module.blocks[0], module.models[0]
    assert text_of(module.imports[0]) == 'import "blocks.dl"'
    assert text_of(residual.name_span) == "residual"
    assert text_of(residual).startswith("block residual(") and text_of(residual).endswith("return x + h\n}")
    assert text_of(residual.params[2]) == "rate = 0.1"
    assert text_of(residual.params[0]) == "x"
    h, ret = residual.body
    assert text_of(h) == "h = x |> dense(width) |> relu |> dropout(rate)"
    assert text_of(h.name_span) == "h"
    assert text_of(h.value) == "x |> dense(width) |> relu |> dropout(rate)"
    assert [text_of(s) for s in h.value.stages] == ["dense(width)", "relu", "dropout(rate)"]
    assert text_of(h.value.stages[0].func_span) == "dense"
    assert text_of(ret) == "return x + h" and text_of(ret.value) == "x + h"
    image, digit, logits, probs, loss, optimizer = mlp.body
    assert text_of(image) == "input  image: f32[B, 784]"
    assert text_of(image.name_span) == "image"
    assert text_of(image.type) == "f32[B, 784]"
    assert [text_of(d) for d in image.type.dims] == ["B", "784"]
    assert text_of(probs) == "output probs = softmax(logits)" and text_of(probs.name_span) == "probs"
    assert text_of(loss) == "loss cross_entropy(logits, digit)"
    assert text_of(optimizer) == "optimizer sgd(lr = 0.01)"
    assert text_of(optimizer.call.kwargs[0]) == "lr = 0.01"
    assert text_of(mlp.name_span) == "mnist_mlp"
    assert (mlp.span.line, mlp.span.col, mlp.name_span.col) == (10, 1, 7)
    assert (logits.span.line, logits.span.col, logits.value.stages[1].span.col) == (13, 5, 40)


@pytest.mark.parametrize("text, sub, piece", [
    ("(a + b) * 2", None, "(a + b) * 2"),
    ("-x", None, "-x"),
    ("f(a, k = g(b))", "kwargs", "k = g(b)"),
    ("a |> repeat(2) { relu |> f(1) }", "stages", "repeat(2) { relu |> f(1) }"),
    ('"a\\"b"', None, '"a\\"b"'),
    ("1e-4", None, "1e-4"),
])
def test_expression_spans(text, sub, piece):
    node = expr(text)
    if sub:
        node = getattr(node, sub)[0]
    assert text_of(node) == piece


def test_multi_line_statement_span():
    (stmt,) = model_body("    y = x\n        |> relu   # comment\n        |> softmax")
    assert text_of(stmt) == "y = x\n        |> relu   # comment\n        |> softmax"


def test_metric_spans():
    unnamed, named = model_body("metric accuracy(a, b)\nmetric top = accuracy(a, b)")
    assert text_of(unnamed) == "metric accuracy(a, b)"
    assert text_of(named) == "metric top = accuracy(a, b)"


# ---- keywords and errors -----------------------------------------------------------------------
KEYWORDS = "model block import input target output return loss optimizer metric objective update callback repeat then true false".split()


def test_reserved_keywords_are_exactly_the_documented_ones():
    assert {text for text in _terminal_text().values() if text.isalpha()} == set(KEYWORDS)


@pytest.mark.parametrize("keyword", KEYWORDS)
def test_keywords_cannot_be_names(keyword):
    for text in (f"    {keyword} = 1", f"    y = {keyword} + 1" if keyword not in ("true", "false") else None):
        if text is None:
            continue
        with pytest.raises(DslcError) as info:
            model_body(text)
        assert info.value.diagnostics[0].message == f"`{keyword}` is a keyword and cannot be used as a name"


def test_names_that_contain_keywords_are_fine():
    stmt, = model_body("inputs = models |> repeated(truest) |> loss_fn")
    assert sexp(stmt.value) == "(|> models repeated(truest) loss_fn)"


@pytest.mark.parametrize("text", [
    "model m {\n    h = dense(x, 128,)\n}",
    "model m {\n    y = x $ 2\n}",
    'import "a.dl',
    "model m {",
    "model m {\n    y = repeat(2) { relu }\n}",
    "model m {\n    y = f(a = 1, 2)\n}",
    "model m {}\nimport \"a.dl\"",
    "model m {\n    input x: float[B]\n}",
])
def test_errors_are_positioned_diagnostics_without_lark_context(text):
    with pytest.raises(DslcError) as info:
        parse_text(text)
    err = info.value
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    assert all(d.span is not None and d.span.source.path == "t.dl" for d in err.diagnostics)
    assert "Token" not in str(err) and "RPAR" not in str(err) and "__ANON" not in str(err)


def test_several_tree_level_errors_are_all_reported():
    with pytest.raises(DslcError) as info:
        model_body("input x: float[B]\ninput y: double[B]\nz = f(a = 1, 2)")
    assert [d.message for d in info.value.diagnostics] == [
        "unknown dtype `float`", "unknown dtype `double`", "positional argument after a keyword argument"]


def test_end_of_file_points_at_the_end_of_the_last_line():
    with pytest.raises(DslcError) as info:
        parse_text("model m {\n    y = x |> relu\n\n# trailing comment\n\n")
    (diag,) = info.value.diagnostics
    assert (diag.message, diag.span.line, diag.span.col) == ("unexpected end of file", 2, 18)


# ---- size: no recursion per nesting level ------------------------------------------------------
N = 1000


def test_a_thousand_stage_pipeline():
    (stmt,) = model_body("    y = x" + " |> relu" * N)
    assert len(stmt.value.stages) == N


def test_a_thousand_stage_pipeline_over_a_thousand_lines():
    (stmt,) = model_body("    y = x\n" + "        |> relu\n" * N)
    assert len(stmt.value.stages) == N


def test_a_thousand_statements():
    body = model_body("".join(f"    x{i} = x{i - 1} |> dense(8) |> relu\n" for i in range(N)))
    assert len(body) == N and body[-1].name == f"x{N - 1}"


@pytest.mark.parametrize("text", [
    "x" + " + x" * N,
    "-" * N + "x",
    "(" * N + "x" + ")" * N,
    "relu(" * N + "x" + ")" * N,
    "x |> repeat(2) { " * 200 + "relu" + " }" * 200,
])
def test_deeply_nested_expressions(text):
    assert expr(text) is not None


def test_the_language_reference_examples_parse():
    from pathlib import Path

    text = (Path(__file__).parents[1] / "grammar" / "LANGUAGE.md").read_text(encoding="utf-8")
    blocks = text.split("```\n")[1::2]
    complete = [b for b in blocks if b.startswith(("import", "block", "model")) and "{" in b and "..." not in b]
    assert complete
    for block in complete:
        parse(SourceFile.from_text("LANGUAGE.md", block))
    snippets = [b for b in blocks if b.startswith(("h = x |> repeat", "input", "output", "loss"))]
    assert len(snippets) == 5
    for snippet in snippets:
        model_body(snippet)


# ---- comparisons and indexing ---------------------------------------------------------------------
def sexp_full(node) -> str:
    """`sexp` extended to comparisons (`(< a b)`) and indexing (`x[0, 1:, ::2, ...]`)."""
    match node:
        case ast.Compare(op, left, right):
            return f"({op} {sexp_full(left)} {sexp_full(right)})"
        case ast.Index(value, subscripts):
            return f"{sexp_full(value)}[" + ", ".join(sexp_full(s) for s in subscripts) + "]"
        case ast.Slice(start, stop, step):
            parts = ["" if p is None else sexp_full(p) for p in (start, stop, step)]
            return ":".join(parts[:2]) + (f":{parts[2]}" if step is not None else "")
        case ast.EllipsisIndex():
            return "..."
        case ast.Unary(op, operand):
            return f"({op} {sexp_full(operand)})"
        case ast.BinOp(op, left, right):
            return f"({op} {sexp_full(left)} {sexp_full(right)})"
        case ast.Call(func, args, kwargs):
            return f"{func}(" + ", ".join([sexp_full(a) for a in args] + [f"{k.name}={sexp_full(k.value)}" for k in kwargs]) + ")"
        case ast.Pipe(value, stages):
            return "(|> " + " ".join(sexp_full(s) for s in (value, *stages)) + ")"
    return sexp(node)


@pytest.mark.parametrize("text, shape", [
    ("a < b", "(< a b)"),
    ("a <= b", "(<= a b)"),
    ("a > b", "(> a b)"),
    ("a >= b", "(>= a b)"),
    ("a == b", "(== a b)"),
    ("a != b", "(!= a b)"),
    ("a + b < c * d", "(< (+ a b) (* c d))"),
    ("-a >= b @ c - 1", "(>= (- a) (- (@ b c) 1))"),
    ("a < b |> f", "(|> (< a b) f)"),
    ("(a < b) == (c > d)", "(== (< a b) (> c d))"),
    ("f(a == 1, k = b != c)", "f((== a 1), k=(!= b c))"),
    ("x[0]", "x[0]"),
    ("x[:, -1]", "x[:, (- 1)]"),
    ("x[:, 1:3]", "x[:, 1:3]"),
    ("x[1:, :2, ::2, 1::3, :4:5, 1:2:3]", "x[1:, :2, ::2, 1::3, :4:5, 1:2:3]"),
    ("x[...]", "x[...]"),
    ("x[..., 0]", "x[..., 0]"),
    ("x[n - 1, a:b + 1]", "x[(- n 1), a:(+ b 1)]"),
    ("x[0][1:]", "x[0][1:]"),
    ("-x[0]", "(- x[0])"),
    ("x[0] * y[1]", "(* x[0] y[1])"),
    ("f(x)[0]", "f(x)[0]"),
    ("(x |> f)[:, -1]", "(|> x f)[:, (- 1)]"),
    ("x[0] |> relu", "(|> x[0] relu)"),
    ("x[:, 0] < 0.5", "(< x[:, 0] 0.5)"),
])
def test_comparison_and_index_shape(text, shape):
    assert sexp_full(expr(text)) == shape


@pytest.mark.parametrize("text", ["a < b < c", "a == b != c", "a <= b > c"])
def test_comparisons_do_not_chain(text):
    with pytest.raises(DslcError) as info:
        expr(text)
    (d,) = info.value.diagnostics
    assert d.message == "comparisons do not chain"
    assert text_of(d.span) == text.split()[3]


def test_index_spans():
    index = expr("x[:, 1:3, ..., -1]")
    assert text_of(index) == "x[:, 1:3, ..., -1]"
    assert [text_of(s) for s in index.subscripts] == [":", "1:3", "...", "-1"]
    compare = expr("h[:, 0] >= 0.5 * y")
    assert (text_of(compare), text_of(compare.left), text_of(compare.right)) == ("h[:, 0] >= 0.5 * y", "h[:, 0]", "0.5 * y")


@pytest.mark.parametrize("text, shape", [
    ("y = x[\n        :,\n        1:3\n    ]", "x[:, 1:3]"),
    ("y = a <\n        b", "(< a b)"),
    ("y = a ==\n        b + 1", "(== a (+ b 1))"),
])
def test_comparison_and_index_continuation_lines(text, shape):
    (stmt,) = model_body("    " + text)
    assert sexp_full(stmt.value) == shape
