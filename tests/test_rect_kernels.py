"""Sizes per spatial axis: tuple literals `(a, b)`, `(a,)` in the grammar and the AST, and rectangular
kernels, strides, paddings and dilations in the conv and pool layers.

The layers' values and gradients against PyTorch are cases of tests/test_conv.py (`LAYERS`, `*rectangular*`,
and the `rectangular` finite-difference model); the wrong sizes are golden files
(tests/diagnostics/tuple_*.dl). Here: the syntax, and the output shapes of "same" padding, which must be
Keras's ⌈size / stride⌉ on every axis.
"""
from __future__ import annotations

import math

import pytest

from dslc.diagnostics import DslcError
from dslc.frontend import ast, parse
from dslc.source import SourceFile
from helpers import compile_text


def expr(text: str) -> ast.Expr:
    (model,) = parse(SourceFile.from_text("t.dl", f"model m {{\n    y = {text}\n}}\n")).models
    return model.body[0].value


def text_of(node) -> str:
    return node.span.source.text[node.span.start:node.span.end]


@pytest.mark.parametrize("text,items", [("(3, 5)", 2), ("(3,)", 1), ("(3, 5,)", 2), ("(k, 2 * k, 1)", 3),
                                        ("(\n  3,\n  5\n)", 2)])
def test_a_tuple_is_parsed_with_its_span(text, items):
    value = expr(text)
    assert isinstance(value, ast.Tuple) and len(value.items) == items
    assert text_of(value) == text


def test_parentheses_still_group():
    value = expr("(x + 1) * 2")
    assert isinstance(value, ast.BinOp) and isinstance(value.left, ast.BinOp)
    assert isinstance(expr("(3)"), ast.Number)


def test_a_tuple_is_an_argument():
    call = expr("conv2d(x, 4, (3, 5), stride = (2, 1))")
    assert isinstance(call.args[2], ast.Tuple) and isinstance(call.kwargs[0].value, ast.Tuple)


def test_the_empty_tuple_is_a_syntax_error():
    with pytest.raises(DslcError):
        expr("()")


def output_shape(workdir, name: str, in_shape: tuple[int, ...], call: str) -> tuple:
    program = compile_text(workdir, f"""
        model {name} {{
            input  x: f32[B, {", ".join(map(str, in_shape))}]
            output y = x |> {call}
        }}""", name=f"{name}.dl")
    return shape_of(program)


def shape_of(program) -> tuple:
    """The shape of the model's one output, without the batch axis."""
    (output,) = program.manifest["graphs"]["infer"]["outputs"]
    return tuple(output["shape"][1:])


@pytest.mark.parametrize("size", [(7, 6), (8, 9), (5, 5)])
def test_same_padding_keeps_the_size_at_stride_1(size, workdir):
    name = f"same_{size[0]}x{size[1]}"
    assert output_shape(workdir, name, (2,) + size, 'conv2d(3, (3, 5), padding = "same")') == (3,) + size


@pytest.mark.parametrize("size,stride,dilation", [((7, 6), (2, 1), (1, 1)), ((8, 9), (2, 1), (1, 2)),
                                                  ((9, 10), (3, 2), (2, 1)), ((5, 4), (1, 3), (1, 1))])
def test_same_padding_gives_ceil_size_over_stride(size, stride, dilation, workdir):
    """Keras's "same": ⌈size / stride⌉ outputs on each axis, whatever the kernel and dilation."""
    name = "same_" + "_".join(f"{a}x{b}" for a, b in (size, stride, dilation))
    call = f'conv2d(3, (3, 5), stride = {stride}, dilation = {dilation}, padding = "same")'
    expected = (3,) + tuple(math.ceil(n / s) for n, s in zip(size, stride))
    assert output_shape(workdir, name, (2,) + size, call) == expected


def test_a_tuple_can_be_named(workdir):
    program = compile_text(workdir, """
        model named(kernel = (3, 1)) {
            input  x: f32[B, 1, 6, 6]
            k = kernel
            output y = x |> conv2d(2, k) |> max_pool2d((1, 2), stride = k)
        }""", name="named.dl")
    assert shape_of(program) == (2, 2, 5)  # conv: 4×6; pool (1, 2) moved by (3, 1): 2×5
