"""Syntax errors as diagnostics: what the parser expected at a token, unclosed brackets, stray
characters, and the syntax of other languages (`**`, `x.shape`, `Dense(10)(x)`) with a hint in the
user's terms. `parser.py` calls `token_error`, `end_of_file_error`, `character_error` and `accepts`."""
from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

from lark import Token
from lark.exceptions import UnexpectedToken
from lark.lexer import PatternStr

from dslc.diagnostics import Diagnostic, suggest
from dslc.frontend.parser import ARITHMETIC, BINARY, COMPARISONS, OPERATORS, lark_parser
from dslc.source import SourceFile, Span

if TYPE_CHECKING:
    from dslc.frontend.parser import _Layout, _Open

_STATEMENT_KEYWORDS = ("input", "target", "output", "loss", "optimizer", "metric", "return", "objective", "update",
                       "callback")
_STATEMENT_START = {"NAME", "INPUT", "TARGET", "OUTPUT", "RETURN", "LOSS", "OPTIMIZER", "METRIC", "OBJECTIVE", "UPDATE",
                    "CALLBACK"}
_EXPRESSION_START = {"NAME", "INT", "FLOAT", "STRING", "TRUE", "FALSE", "LPAR", "MINUS"}
_STAGE_START = {"NAME", "REPEAT"}
_DIM_START = {"INT", "NAME"}
_WORDS = {"NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string",
          "_NL": "a new line", "$END": "the end of the file"}
_ORDER = ["COMMA", "RPAR", "RSQB", "RBRACE", "EQUAL", "COLON", "LSQB", "LPAR", "LBRACE", "PIPE"]
_KEYWORD_HINTS = {
    "loss": "declare the training loss without `=`, as in `loss cross_entropy(logits, y)`, "
            "or choose another name",
    "optimizer": "declare the optimizer without `=`, as in `optimizer sgd(lr = 0.01)`, or choose another name",
    "metric": "name a metric with `metric acc = accuracy(logits, y)`, or choose another name",
    "output": "name an output with `output probs = softmax(logits)`, or choose another name",
    "callback": "declare a callback without `=`, as in `callback early_stopping(patience = 5)`, or choose another name",
}


@functools.cache
def _terminal_text() -> dict[str, str]:
    """Terminal name -> how it is written, for the terminals that are fixed strings (`LPAR` -> `(`)."""
    return {t.name: t.pattern.value for t in lark_parser().terminals if isinstance(t.pattern, PatternStr)}


def _keyword(token: Token | None) -> str | None:
    if token is None:
        return None
    text = _terminal_text().get(token.type, "")
    return text if text.isalpha() else None


def accepts(interactive, err: UnexpectedToken) -> set[str]:
    try:
        return set(interactive.accepts())
    except Exception:  # the exact set is a refinement; the table's is always available
        return set(err.expected)


def _describe_token(token: Token) -> str:
    if token.type == "_NL":
        return "end of line" if token.value == "\n" else "`;`"
    text = str(token)
    return f"`{text if len(text) <= 24 else text[:21] + '...'}`"


def _join_or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _expected(accepts: set[str]) -> str:
    """`expected ...` in words, from the set of terminals the parser could take."""
    left, items = set(accepts), []
    left.discard("THEN")  # `then` joins only schedules: naming it after every expression would mislead
    for group, words in (
        (_STATEMENT_START, "a statement such as `x = ...`, `input ...`, `loss ...`"),
        (_EXPRESSION_START, "an expression"),
        (_STAGE_START, "a pipeline stage such as `relu` or `dense(64)`"),
        (_DIM_START, "a dimension such as `B` or `784`"),
    ):
        if group <= left:
            items.append(words)
            left -= group
            break
    operators = bool(left & ARITHMETIC)  # "an operator" covers `|>`, comparisons and `[` too; alone, `|>` is named
    if operators:
        left -= OPERATORS | {"LPAR", "LSQB"}
    if "_NL" in left:
        left -= {"RBRACE", "$END"}
    if left - {"$END"}:
        left.discard("$END")
    order = {name: i for i, name in enumerate(_ORDER)}
    for name in sorted(left, key=lambda n: (order.get(n, len(order)), n == "_NL", n == "$END", n)):
        items.append(_WORDS.get(name) or f"`{_terminal_text().get(name, name)}`")
    if operators:
        items.append("an operator")
    return "expected " + _join_or(items) if items else ""


def _token_span(source: SourceFile, token: Token) -> Span:
    return source.span(token.start_pos, token.end_pos)


def _rest_of_line(source: SourceFile, offset: int) -> str:
    end = source.text.find("\n", offset)
    return source.text[offset:end if end >= 0 else None].split("#")[0].strip()


def _opened_note(source: SourceFile, opened: _Open) -> tuple[str, Span]:
    if opened.kind == "body" and opened.definition and opened.definition[1] is not None:
        keyword, name = opened.definition
        return (f"the body of `{keyword} {name}` starts here", _token_span(source, opened.token))
    return (f"this `{opened.token}` is never closed", _token_span(source, opened.token))


def _closer(opened: _Open) -> str:
    return {"(": ")", "repeat-args": ")", "[": "]"}.get(opened.kind, "}")


def token_error(source: SourceFile, token: Token, accepts: set[str], layout: _Layout) -> Diagnostic:
    if token.type == "$END":
        return _end_of_file_error(source, accepts, layout)
    prev, prev2 = layout.before(token), layout.before_before(token)
    span = _token_span(source, token)
    if token.type == "_NL" and token.value == "\n" and prev is not None:
        span = source.span(prev.end_pos, prev.end_pos)  # right after the last thing on the line
    message, label, hint, notes = f"unexpected {_describe_token(token)}", _expected(accepts), "", []
    keyword = _keyword(token)
    at_statement_start = prev2 is None or prev2.type in ("_NL", "LBRACE")
    opened_before = [opened for opened in layout.open if opened.token is not token]
    innermost = opened_before[-1] if opened_before else None
    unclosed_earlier = (innermost is not None and token.type not in ("RPAR", "RSQB")
                        and source.line_col(innermost.token.start_pos)[0] < span.line)

    habit = _habit_error(source, token, prev, prev2)
    if habit is not None:
        return habit
    followed_by_equal = re.match(r"[ \t]*=", source.text[token.end_pos:]) is not None
    if innermost is not None and innermost.kind == "body" and token.type in ("MODEL", "BLOCK", "IMPORT") \
            and prev is not None and prev.type in ("_NL", "LBRACE") and not followed_by_equal:
        # a definition inside a body that was never closed
        label = "expected `}` before this"
        hint = f"close the body with `}}` before starting a new `{keyword}`"
        notes.append(_opened_note(source, innermost))
    elif unclosed_earlier and innermost.kind != "body" and token.type not in accepts:
        # `h = dense(x, 128` and a new statement on the next line
        label = f"expected `{_closer(innermost)}` before this"
        line = source.line_col(innermost.token.start_pos)[0]
        hint = f"the `{innermost.token}` on line {line} is never closed"
        notes.append(_opened_note(source, innermost))
    elif token.type == "REPEAT" and "REPEAT" not in accepts and re.match(r"[ \t]*\(", source.text[token.end_pos:]):
        message = "`repeat` can only be used as a pipeline stage"
        label = "`repeat` must follow `|>`"
        hint = "apply it to a value: `h = x |> repeat(3) { dense(64) |> relu }`"
    elif keyword and "NAME" in accepts and token.type not in accepts:
        message, label = f"`{keyword}` is a keyword and cannot be used as a name", "reserved keyword"
        hint = f"choose another name, such as `{keyword}_`"
    elif token.type == "EQUAL" and _keyword(prev) and prev.type not in ("TRUE", "FALSE"):
        word = _keyword(prev)
        message, label = f"`{word}` is a keyword and cannot be used as a name", "reserved keyword"
        span = _token_span(source, prev)
        hint = _KEYWORD_HINTS.get(word, f"choose another name, such as `{word}_`")
    elif token.type == "COLON" and prev is not None and prev.type == "NAME" and at_statement_start:
        type_text = _rest_of_line(source, token.end_pos) or "f32[B, 3]"
        hint = f"declare an input with `input {prev}: {type_text}` or a target with `target {prev}: {type_text}`"
    elif token.type == "EQUAL" and prev2 is not None and prev2.type in ("INPUT", "TARGET"):
        type_text = _rest_of_line(source, token.end_pos) or "f32[B, 3]"
        hint = f"declare {'an input' if prev2.type == 'INPUT' else 'a target'} with `{prev2} {prev}: {type_text}`"
    elif token.type == "LPAR" and prev is not None and prev.type == "NAME" and prev2 is not None \
            and prev2.type == "OUTPUT":
        hint = f"name the output, as in `output y = {prev}(...)`"
    elif token.type == "STRING" and prev is not None and prev.type == "OPTIMIZER":  # Keras' `optimizer="adam"`
        name = str(token)[1:-1].lower()
        hint = f"an optimizer is a call, as in `optimizer {name if name.isidentifier() else 'adam'}(lr = 0.001)`"
    elif accepts == {"LPAR"} and prev2 is not None and prev2.type == "OPTIMIZER":
        hint = f"an optimizer is a call, as in `optimizer {prev}()`"
    elif prev is not None and prev.type == "NAME" and at_statement_start and "EQUAL" in accepts:
        if token.type == "LPAR":
            hint = f"a call cannot stand alone: assign its result, as in `y = {prev}(...)`"
        else:
            hint = suggest(str(prev), _STATEMENT_KEYWORDS) or (
                "a statement is `name = ...` or starts with a keyword such as `input`, `output` or `loss`")
    elif token.type == "RPAR" and prev is not None and prev.type == "LPAR" and (
            prev2 is None or prev2.type not in ("NAME", "REPEAT")):
        hint = "a tuple holds one number per spatial axis, as in `(3, 5)`; one number alone is written `3`"
    elif prev is not None and prev.type == "COMMA" and token.type in ("RPAR", "RSQB"):
        hint = "remove the trailing comma"
    elif token.type in COMPARISONS and prev2 is not None and "PLUS" in accepts and token.type not in accepts:
        message, label = "comparisons do not chain", "a second comparison"
        hint = ("compare two values at a time; to test a range, combine two comparisons, as in "
                "`where(a < b, b < c, false)`" if token.type in ("LT", "LE", "GT", "GE") else
                "compare two values at a time; to compare the `bool` result of a comparison, put it in "
                "parentheses, as in `(a < b) == c`")
    elif token.type == "LSQB" and token.type not in accepts and prev is not None and prev.type == "EQUAL":
        items = re.match(r"\[([^\]\n]*)\]", source.text[token.start_pos:])  # `weight = [1, 5, 1]`, a list
        name = f"{prev2} = " if prev2 is not None and prev2.type == "NAME" else ""
        hint = f"numbers given together are a tuple, in parentheses: `{name}({items.group(1) if items else '1, 5, 1'})`"
    elif token.type == "RSQB" and prev is not None and prev.type == "LSQB":
        hint = "write the positions to take, as in `x[0]`, `x[:, -1]` or `x[:, 1:3]`"
    elif token.type == "COLON" and innermost is not None and innermost.kind == "[" and "RSQB" in accepts:
        hint = "a slice has at most three parts, `start:stop:step`"
    elif token.type in BINARY and "PIPE" in accepts and "PLUS" not in accepts:
        hint = ("a pipeline stage is a call or a name; to compute with the result, put the pipeline "
                f"in parentheses, as in `(x |> f) {_rest_of_line(source, token.start_pos)}`")
    elif token.type == "PIPE" and (prev is None or prev.type in ("_NL", "LBRACE")):
        hint = ("remove the `;`: a line starting with `|>` continues the statement before it"
                if prev is not None and prev.value == ";" else "start a pipeline with a value, as in `y = x |> relu`")
    elif token.type in OPERATORS and prev is not None and prev.type == "_NL":
        hint = f"to continue on the next line, end the line with `{token}` or put the expression in parentheses"
    elif accepts == {"STRING"} and prev is not None and prev.type == "IMPORT":
        hint = 'write the path in double quotes, as in `import "blocks.dl"`'
    elif accepts == {"LSQB"}:
        hint = "give the shape in brackets, as in `f32[B, 3]`; a scalar is `f32[]`"
    elif token.type in ("MODEL", "BLOCK", "IMPORT") and "_NL" in accepts:
        hint = f"start each `{keyword}` on a new line"
    elif accepts <= {"IMPORT", "BLOCK", "MODEL", "$END", "_NL"} and (keyword or token.type == "NAME"):
        hint = (token.type == "NAME" and suggest(str(token), ("model", "block", "import"))) or (
            "statements belong inside the body of a `model` or a `block`")
    elif token.type in _EXPRESSION_START and "COMMA" in accepts and prev is not None \
            and prev.line == token.line:
        kind = innermost.kind if innermost is not None else ""
        hint = "separate subscripts with `,`" if kind == "[" else "separate the numbers of a tuple with `,`" \
            if kind == "(" and (innermost.after is None or innermost.after.type != "NAME") \
            else "separate arguments with `,`"
    elif token.type in _STATEMENT_START and "_NL" in accepts and prev is not None and prev.line == token.line:
        hint = "put each statement on its own line, or separate them with `;`"
    return Diagnostic(message, span, label, hint, tuple(notes))


def _habit_error(source: SourceFile, token: Token, prev: Token | None, prev2: Token | None) -> Diagnostic | None:
    """Python, NumPy, Keras and PyTorch syntax that is not part of the language: `**`, `//`, calling a call's
    result and `Sequential([...])`."""
    text = source.text
    if prev is not None and prev.end_pos == token.start_pos and (prev.type, token.type) in (
            ("STAR", "STAR"), ("SLASH", "SLASH")):
        span = source.span(prev.start_pos, token.end_pos)
        if token.type == "STAR":
            base = str(prev2) if prev2 is not None and prev2.type in ("NAME", "INT", "FLOAT") else "x"
            power = re.match(r"[ \t]*(\w+(?:\.\w+)?)", text[token.end_pos:])
            example = f"pow({base}, {power.group(1) if power else 2})"
            return Diagnostic("there is no `**` operator", span, "", f"raise to a power with `{example}`")
        return Diagnostic("there is no `//` operator", span, "",
                          "there is no integer division: `/` divides exactly (`7 / 2` is 3.5), and sizes accept "
                          "its result where it is whole, as in `dense(hidden / 2)`")
    if token.type == "LPAR" and prev is not None and prev.type == "RPAR":  # Keras' `Dense(10)(x)`
        layer = re.search(r"(\w+)\(([^()\n]*)\)[ \t]*$", text[:token.start_pos])
        value = re.match(r"\(([^()\n]*)\)", text[token.start_pos:])
        if layer is not None:
            example = f"{value.group(1) if value else 'x'} |> {layer.group(1)}({layer.group(2)})"
            return Diagnostic("the result of a call cannot be called", _token_span(source, token), "",
                              f"apply a layer to a value with `|>`, as in `{example}`")
    if token.type == "LSQB" and prev is not None and prev.type == "LPAR" and prev2 is not None \
            and str(prev2) == "Sequential":
        return Diagnostic("there is no `Sequential`: a model is a pipeline", _token_span(source, token), "",
                          "chain the layers with `|>`, as in `logits = x |> dense(64) |> relu |> dense(10)`")
    return None


def _end_of_file_error(source: SourceFile, accepts: set[str], layout: _Layout) -> Diagnostic:
    end = layout.last.end_pos if layout.last else 0
    span = source.span(end, end)
    if not layout.open:
        return Diagnostic("unexpected end of file", span, _expected(accepts))
    innermost = layout.open[-1]
    if innermost.kind == "body":
        keyword = innermost.definition[0] if innermost.definition else "model"
        hint = f"a `{keyword}` body must be closed with `}}`"
    else:
        hint = f"every `{innermost.token}` needs a matching `{_closer(innermost)}`"
    return Diagnostic("unexpected end of file", span, f"expected `{_closer(innermost)}`", hint,
                      (_opened_note(source, innermost),))


_CHARACTER_HINTS = {
    "'": 'strings use double quotes, as in `"blocks.dl"`',
    "|": "the pipeline operator is written `|>`",
    ".": "write numbers with digits on both sides of the `.`, as in `0.5`",
}


def character_error(source: SourceFile, offset: int) -> Diagnostic:
    text = source.text
    char = text[offset]
    if char == '"':
        end = source.text.find("\n", offset)
        span = source.span(offset, end if end >= 0 else len(source.text))
        return Diagnostic("unterminated string", span, "this string is never closed",
                          'end it with `"` on the same line; inside a string write `\\"` for a quote')
    shown = char if char.isprintable() else repr(char)[1:-1]
    attribute = re.match(r"\.([A-Za-z_]\w*)", text[offset:]) if char == "." else None
    if attribute and re.search(r"[A-Za-z_]\w*[ \t]*$", text[:offset]):
        # `x.shape`, `nn.Linear(...)`, `F.relu(x)`
        hint = ("shapes are static: they are written in the `input` declarations"
                if attribute.group(1) in ("shape", "size", "dtype", "ndim") else
                "layers and functions are called by their own name, as in `x |> linear(10)` or `relu(x)`")
        return Diagnostic("there are no attributes or modules: `.` only appears in numbers",
                          source.span(offset, offset + 1), "", hint)
    if char in _CHARACTER_HINTS:
        hint = _CHARACTER_HINTS[char]
    elif char in "!%^&<>~=?":
        hint = ("the operators are `+`, `-`, `*`, `/`, `@` (matrix product), the comparisons `<`, `<=`, `>`, "
                "`>=`, `==`, `!=` and `|>` (pipeline)")
    elif char.isalpha():
        hint = "names use ASCII letters, digits and `_`"
    else:
        hint = ""
    return Diagnostic(f"unexpected character `{shown}`", source.span(offset, offset + 1), "", hint)
