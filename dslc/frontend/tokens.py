"""The tokens of a `.dl` file as plain records, comments and whitespace included, for tools that work on
the text rather than the tree (`dslc fmt`, the language server); and the token stream the parser
sees, by which a tool proves that a rewrite of the text means the same program.

The grammar ignores `WS` and `COMMENT`; `Lark.lex(dont_ignore=True)` keeps them.
"""
from __future__ import annotations

from dataclasses import dataclass

from lark.exceptions import UnexpectedCharacters

from dslc.diagnostics import DslcError
from dslc.frontend.parser import _Layout, lark_parser
from dslc.source import SourceFile


@dataclass(frozen=True)
class Token:
    kind: str  # the grammar's terminal name: NAME, INT, PIPE, LPAR, _NL (a newline or `;`), COMMENT, WS, ...
    text: str
    start: int  # character offsets into the source text
    end: int


def tokens(source: SourceFile) -> list[Token]:
    """Every token of `source` in order, `WS` and `COMMENT` included; raises `DslcError` at a character
    that starts no token."""
    try:
        return [Token(t.type, t.value, t.start_pos, t.end_pos)
                for t in lark_parser().lex(source.text, dont_ignore=True)]
    except UnexpectedCharacters as err:
        from dslc.frontend.syntax_errors import character_error

        raise DslcError(character_error(source, err.pos_in_stream)) from None


def parsed_stream(source: SourceFile) -> list[tuple[str, str]]:
    """(kind, text) of the tokens the parser is fed after the newline layout, a `;` and a newline both
    being `_NL`: two texts with the same stream parse to the same tree."""
    layout = _Layout()
    return [(t.type, "" if t.type == "_NL" else t.value) for t in layout.process(lark_parser().lex(source.text))]


def keywords() -> list[str]:
    """The reserved words of the language, from the grammar."""
    return sorted(t.pattern.value for t in lark_parser().terminals
                  if t.pattern.type == "str" and t.pattern.value.isidentifier())
