"""Text -> `ast.Module`: the Lark LALR parser and the newline layout; syntax errors become diagnostics
in `syntax_errors.py`.

    tokens = lark.lex(text)          # basic lexer: keywords are reserved everywhere
    tokens = _Layout().process(...)  # newlines -> statement separators, only where a statement may end
    tree   = LALR parser             # propagate_positions: every node knows its offsets
    module = to_ast.build(tree)      # `dslc.frontend.ast` records with spans

Any Lark exception is turned into one positioned `Diagnostic` and re-raised `from None`.
"""
from __future__ import annotations

import functools
import importlib.resources
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedToken

from dslc.diagnostics import Diagnostic, DslcError
from dslc.frontend import ast, to_ast
from dslc.source import NotUtf8, SourceFile


# Tokens of a model file and its imports together. Parsing takes 50-150 µs a token (Lark's LALR parser in
# Python), so the limit keeps any input parsed within seconds; the bundled models have 80-260 each.
MAX_TOKENS = 20_000


@dataclass
class TokenBudget:
    """The tokens still allowed to the files of one compilation (`MAX_TOKENS` in all)."""

    left: int = MAX_TOKENS


def parse(source: SourceFile, budget: TokenBudget | None = None) -> ast.Module:
    """Parse one `.dl` file; raises `DslcError` with a positioned diagnostic on a syntax error, or when
    the file takes more tokens than `budget` has left (a fresh `TokenBudget` when not given)."""
    budget = budget if budget is not None else TokenBudget()
    lark = lark_parser()
    layout = _Layout()
    interactive = lark.parse_interactive()
    try:
        for token in layout.process(lark.lex(source.text)):
            budget.left -= 1
            if budget.left < 0:
                raise DslcError(Diagnostic(
                    f"the model has more than {MAX_TOKENS:,} tokens", source.span(token.start_pos, token.end_pos),
                    "the limit is crossed here", hint="a model file and its imports together are limited to this "
                    "many tokens (names, numbers, operators), so that parsing stays fast: make the model smaller"))
            interactive.feed_token(token)
        end = layout.last.end_pos if layout.last else 0
        tree = interactive.feed_token(Token("$END", "", end, end_pos=end))
    except UnexpectedCharacters as err:
        from dslc.frontend.syntax_errors import character_error

        raise DslcError(character_error(source, err.pos_in_stream)) from None
    except UnexpectedToken as err:
        from dslc.frontend.syntax_errors import accepts, token_error  # it imports this module

        raise DslcError(token_error(source, err.token, accepts(interactive, err), layout)) from None
    return to_ast.build(tree, source)


def parse_file(path: str | Path, budget: TokenBudget | None = None) -> ast.Module:
    """Read and parse a file; the path is shown in diagnostics as given."""
    return parse(read_source(path), budget)


def read_source(path: str | Path) -> SourceFile:
    """Read a `.dl` file; raises `DslcError` at the first byte that is not UTF-8."""
    try:
        return SourceFile.read(path)
    except NotUtf8 as e:
        raise not_utf8_error(e) from None


def not_utf8_error(e: NotUtf8) -> DslcError:
    span = e.source.span(e.offset, e.offset + 1)
    return DslcError(Diagnostic("the file is not UTF-8 text", span, f"this byte (0x{e.byte:02x}) is not UTF-8",
                                "model files are UTF-8 text: save it as UTF-8, or check that "
                                "this is the file you meant"))


@functools.cache
def lark_parser() -> Lark:
    """The parser; its LALR tables (~0.2 s to build) are kept in the compile cache's folder, where Lark
    checks them against the grammar's and its own version's hash before using them."""
    from dslc.compile_cache import cache_dir

    folder = cache_dir()
    cache: bool | str = False
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            cache = str(folder / "lark-tables.pickle")
        except OSError:
            pass
    return Lark(_grammar_text(), parser="lalr", lexer="basic", propagate_positions=True, maybe_placeholders=True,
                cache=cache)


def _grammar_text() -> str:
    try:  # installed: grammar/ ships inside the wheel as dslc.grammar
        return (importlib.resources.files("dslc.grammar") / "dl.lark").read_text(encoding="utf-8")
    except (ModuleNotFoundError, OSError):  # a source checkout
        return (Path(__file__).parents[2] / "grammar" / "dl.lark").read_text(encoding="utf-8")


# ---- layout: which newlines end a statement ---------------------------------------------------
ARITHMETIC = {"PLUS", "MINUS", "STAR", "SLASH", "AT"}
COMPARISONS = {"LT", "LE", "GT", "GE", "EQ", "NE"}
BINARY = ARITHMETIC | COMPARISONS
OPERATORS = BINARY | {"PIPE"}
CLOSING = {"RPAR", "RSQB", "RBRACE"}


@dataclass
class _Open:
    """An open bracket. `kind`: `(`, `[`, `repeat-args` (the `(` of `repeat(n)`), `repeat` (its `{`) or
    `body` (the `{` of a model or block, the only one in which newlines separate statements)."""

    token: Token
    kind: str
    definition: tuple[Token, Token | None] | None = None  # (`model`/`block` keyword, name) of a body
    after: Token | None = None  # the token before the bracket: a `(` after a name opens a call


class _Layout:
    """Keeps a newline only where it separates two statements, and remembers what it saw.

    A newline is dropped inside `(...)`, `[...]` and `repeat(n) {...}`, after a line ending with `|>`
    or a binary operator, before a line starting with `|>` (or `{`), after `{`, and at the start
    and end of the file; several in a row count as one. `;` is an explicit separator.
    """

    def __init__(self):
        self.open: list[_Open] = []
        self.emitted: deque[Token] = deque(maxlen=3)  # the last tokens fed to the parser, for errors
        self.last: Token | None = None  # the last token that is not a separator
        self._definition: list = []  # [keyword, name] of the `model`/`block` being declared
        self._closed_repeat_args = False

    def process(self, tokens: Iterable[Token]) -> Iterator[Token]:
        pending = None  # a separator waiting to see the next token
        for token in tokens:
            if token.type == "_NL":
                newline = token.value == "\n"
                if self._joining():
                    if not newline:
                        yield self._emit(token)  # `;` inside brackets is an error: let the parser say so
                    continue
                if self.last is None or self.last.type == "LBRACE" or (newline and self.last.type in OPERATORS):
                    continue
                if pending is None or not newline:
                    pending = token  # keep a `;` over a newline: it is the one that cannot be dropped
                continue
            if pending is not None:
                if not (pending.value == "\n" and token.type in ("PIPE", "LBRACE")):
                    yield self._emit(pending)
                pending = None
            self._track(token)
            yield self._emit(token)

    def _emit(self, token: Token) -> Token:
        self.emitted.append(token)
        if token.type != "_NL":
            self.last = token
        return token

    def _joining(self) -> bool:
        return bool(self.open) and self.open[-1].kind != "body"

    def _track(self, token: Token) -> None:
        kind, previous = token.type, self.last
        if kind in ("MODEL", "BLOCK"):
            self._definition = [token, None]
        elif kind == "NAME" and self._definition and self._definition[1] is None:
            self._definition[1] = token
        elif kind == "LPAR":
            self.open.append(_Open(token, "repeat-args" if previous and previous.type == "REPEAT" else "(",
                                   after=previous))
        elif kind == "LSQB":
            self.open.append(_Open(token, "["))
        elif kind == "LBRACE":
            if previous is not None and previous.type == "RPAR" and self._closed_repeat_args:
                self.open.append(_Open(token, "repeat"))
            else:
                definition = tuple(self._definition) if self._definition else None
                self.open.append(_Open(token, "body", definition))
                self._definition = []
        elif kind in CLOSING and self.open:
            closed = self.open.pop()
            self._closed_repeat_args = closed.kind == "repeat-args"

    def before(self, token: Token) -> Token | None:
        """The token fed to the parser just before `token` (the last one, if `token` was not fed)."""
        if self.emitted and self.emitted[-1] is token:
            return self.emitted[-2] if len(self.emitted) > 1 else None
        return self.emitted[-1] if self.emitted else None

    def before_before(self, token: Token) -> Token | None:
        if self.emitted and self.emitted[-1] is token:
            return self.emitted[-3] if len(self.emitted) > 2 else None
        return self.emitted[-2] if len(self.emitted) > 1 else None
