"""`dslc fmt`: one canonical layout for `.dl` files, rewritten token by token.

The formatter works on the token stream (comments included), not on the tree, so that every comment
stays exactly where it was written. It keeps the line structure the author chose and canonicalizes
the rest:

- indentation: 4 spaces a block level; a statement continued on the next line (after an operator, or
  a line starting with `|>`) 4 more; inside `(`/`[` aligned after the bracket, or 4 more than the
  line that opened it when the bracket ends its line;
- one space around `=`, `|>` and binary operators, after `,` and `:`, none inside brackets or after
  a unary `-`, none around `:` in slices;
- what follows the keyword of a declaration or a training statement starts at one column
  (`input  image`, `target label`; `loss      ...`, `optimizer ...`), consecutive declarations pad
  their names so that the types line up, and the trailing comments of consecutive lines line up;
- a line longer than `WIDTH` is broken before its `|>`s: the value stays, the stages go on lines
  of their own, as many as fit;
- at most one blank line in a row, none at the start or end of a body or of the file.

`format_source` proves each result: the formatted text must feed the parser the same tokens as the
original (`dslc.frontend.tokens.parsed_stream`), so it always means the same program.
"""
from __future__ import annotations

import difflib
import errno
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from dslc.diagnostics import DataError
from dslc.frontend.parser import not_utf8_error, parse
from dslc.frontend.tokens import Token, parsed_stream, tokens
from dslc.fsutil import WriteError
from dslc.source import BOM, NotUtf8, SourceFile

WIDTH = 110  # of the code on a line; trailing comments may go past it
INDENT = 4

ATOM_END = {"NAME", "INT", "FLOAT", "STRING", "TRUE", "FALSE", "RPAR", "RSQB", "ELLIPSIS"}
OPERATORS = {"PLUS", "MINUS", "STAR", "SLASH", "AT", "LT", "LE", "GT", "GE", "EQ", "NE", "PIPE"}
OPENING = {"LPAR", "LSQB", "LBRACE"}
CLOSING = {"RPAR", "RSQB", "RBRACE"}
DECLARATIONS = {"INPUT", "TARGET"}  # what follows these keywords starts at one column; runs align their types
TRAINING = {"LOSS", "OPTIMIZER", "METRIC", "UPDATE", "CALLBACK"}  # what follows these keywords starts at one column
KEYWORD_COLUMN = {"INPUT": 6, "TARGET": 6, "LOSS": 9, "OPTIMIZER": 9, "METRIC": 9, "UPDATE": 9, "CALLBACK": 9}


class NotFormattable(Exception):
    """The formatter would change the program: a bug in it, reported instead of writing the file."""


@dataclass
class _SourceLine:
    code: list[Token]  # without whitespace and newlines; a `;` is code
    comment: Token | None


@dataclass
class _Open:
    kind: str  # "body" (of a model, block or objective), "brace" (of a `repeat`), "(" or "["
    inner: int  # the indentation of lines inside
    close: int  # the indentation of a line that starts with the closing bracket
    statement: int  # the indentation of the statement around it, restored when it closes
    repeat_args: bool = False


@dataclass
class _Line:
    indent: int
    parts: list[str] = field(default_factory=list)  # per code token: the space before it and its text
    code: list[Token] = field(default_factory=list)
    comment: Token | None = None
    comment_column: int = 0  # where the comment was written (0-based)
    statement: int = 0  # the indentation of the statement this line belongs to
    breakable: bool = False  # in a body, not inside brackets: may be broken before its `|>`s

    def text(self) -> str:
        return " " * self.indent + "".join(self.parts).lstrip(" ") if self.parts else ""


def format_source(source: SourceFile) -> str:
    """The canonical layout of `source`; raises `DslcError` if it does not parse."""
    parse(source)
    lines = _source_lines(tokens(source))
    formatted = _render(_layout(source, lines, _alignment(lines)))
    if parsed_stream(SourceFile.from_text(source.path, formatted)) != parsed_stream(source):
        raise NotFormattable(f"formatting `{source.path}` would change its meaning")
    return formatted


def format_text(text: str, path: str = "<text>") -> str:
    return format_source(SourceFile.from_text(path, text))


def _source_lines(toks: list[Token]) -> list[_SourceLine]:
    lines = [_SourceLine([], None)]
    for tok in toks:
        if tok.kind == "_NL" and tok.text == "\n":
            lines.append(_SourceLine([], None))
        elif tok.kind == "COMMENT":  # without the `\r` of a CRLF line end: the file is written with `\n`s
            lines[-1].comment = Token(tok.kind, tok.text.rstrip("\r"), tok.start, tok.end)
        elif tok.kind != "WS":
            lines[-1].code.append(tok)
    return lines


def _alignment(lines: list[_SourceLine]) -> dict[int, dict[int, int]]:
    """{line: {token index: extra spaces after it}}: declarations and training statements pad their
    keyword (`input  x`, `loss      l`), and runs of consecutive declarations their names."""
    pads: dict[int, dict[int, int]] = {}
    i = 0
    while i < len(lines):
        family = next((f for f in (DECLARATIONS, TRAINING) if lines[i].code and lines[i].code[0].kind in f), None)
        if family is None:
            i += 1
            continue
        run = [i]
        while run[-1] + 1 < len(lines) and lines[run[-1] + 1].code and lines[run[-1] + 1].code[0].kind in family:
            run.append(run[-1] + 1)
        names = [k for k in run if family is DECLARATIONS and [t.kind for t in lines[k].code[1:3]] == ["NAME", "COLON"]]
        name = max((len(lines[k].code[1].text) for k in names), default=0)
        for k in run:
            keyword = lines[k].code[0]
            pads[k] = {0: KEYWORD_COLUMN[keyword.kind] - len(keyword.text)}
            if k in names:
                pads[k][2] = name - len(lines[k].code[1].text)
        i = run[-1] + 1
    return pads


def _gap(prev: Token, tok: Token, unary_before: bool, in_brackets: str | None) -> int:
    """Spaces between two tokens on one line."""
    if unary_before or tok.kind in ("RPAR", "RSQB", "COMMA", "_NL") or prev.kind in ("LPAR", "LSQB"):
        return 0
    if prev.kind in ("COMMA", "_NL"):
        return 1
    if tok.kind == "COLON":
        return 0
    if prev.kind == "COLON":
        return 0 if in_brackets == "[" else 1
    if tok.kind == "LPAR" and prev.kind in ("NAME", "REPEAT"):
        return 0
    if tok.kind == "LSQB" and prev.kind in ATOM_END:
        return 0
    return 1


def _layout(source: SourceFile, lines: list[_SourceLine], pads) -> list[_Line | None]:
    """The formatted lines, `None` for a blank line."""
    layout = _Layout(source)
    for number, line in enumerate(lines):
        layout.add(line, pads.get(number, {}))
    layout.flush_comments(0)  # comments at the end of the file
    return _break_long_lines(layout.out)


class _Layout:
    """Lays out the lines one by one, tracking the open brackets and the statement being written."""

    def __init__(self, source: SourceFile):
        self.source = source
        self.out: list[_Line | None] = []
        self.stack: list[_Open] = []
        self.statement = 0  # the indentation of the current statement
        self.last: Token | None = None  # the last code token so far
        self.closed_repeat_args = False  # the last bracket closed was `repeat(...)`'s: a `{` opens its stages
        self.unary = False  # the last token was a unary minus
        self.blank = False  # blank lines were seen since the last line laid out
        self.comments: list[tuple[bool, Token]] = []  # comment-only lines waiting for the next code line

    def add(self, line: _SourceLine, pads: dict[int, int]) -> None:
        if not line.code:
            if line.comment is None:
                self.blank = True
            else:
                self.comments.append((self.blank, line.comment))
                self.blank = False
            return
        first = line.code[0]
        context = self.stack[-1].kind if self.stack else None
        indent, inside, continuation = self._indentation(first, context)
        self.flush_comments(inside)
        if self.blank and self._blank_allowed() and first.kind not in CLOSING and not continuation \
                and context not in ("(", "["):
            self.out.append(None)
        self.blank = False
        rendered = self._render(line, indent, pads)
        rendered.breakable = context in (None, "body", "brace")
        self.out.append(rendered)

    def _indentation(self, first: Token, context: str | None) -> tuple[int, int, bool]:
        """The indentation of a line starting with `first`, that of a comment line before it, and whether
        it continues the statement of the line before."""
        if first.kind in CLOSING:
            return (self.stack[-1].close, self.stack[-1].inner, False) if self.stack else (0, 0, False)
        if context in ("(", "["):
            return self.stack[-1].inner, self.stack[-1].inner, False
        if first.kind in ("PIPE", "LBRACE") or (self.last is not None and self.last.kind in OPERATORS):
            return self.statement + INDENT, self.statement + INDENT, True
        self.statement = self.stack[-1].inner if self.stack else 0
        return self.statement, self.statement, False

    def _blank_allowed(self) -> bool:
        previous = self.out[-1] if self.out else None
        return previous is not None and not (previous.code and previous.code[-1].kind in OPENING)

    def flush_comments(self, indent: int) -> None:
        for blank_before, comment in self.comments:
            if blank_before and self._blank_allowed():
                self.out.append(None)
            self.out.append(_Line(indent, comment=comment))
        self.comments = []

    def _render(self, line: _SourceLine, indent: int, pads: dict[int, int]) -> _Line:
        rendered = _Line(indent, statement=self.statement, code=list(line.code))
        column = indent
        for j, tok in enumerate(line.code):
            gap = 0 if j == 0 else _gap(line.code[j - 1], tok, self.unary, self.stack[-1].kind if self.stack else None) \
                + pads.get(j - 1, 0)
            self.unary = tok.kind == "MINUS" and (self.last is None or self.last.kind not in ATOM_END)
            rendered.parts.append(" " * gap + tok.text)
            column += gap
            self._track(tok, indent, column, ends_line=j == len(line.code) - 1)
            column += len(tok.text)
            self.last = tok
        if line.comment is not None:
            rendered.comment = line.comment
            rendered.comment_column = self.source.line_col(line.comment.start)[1] - 1
        return rendered

    def _track(self, tok: Token, indent: int, at: int, ends_line: bool) -> None:
        """Open or close a bracket at column `at` of a line indented by `indent`: lines inside a bracket
        that ends its line are indented one level more, else they align after it."""
        last = self.last
        if tok.kind == "LBRACE":
            if last is not None and last.kind == "RPAR" and self.closed_repeat_args:
                self.stack.append(_Open("brace", indent + INDENT if ends_line else at + 2, indent, self.statement))
            else:
                self.stack.append(_Open("body", self.statement + INDENT, self.statement, self.statement))
        elif tok.kind in ("LPAR", "LSQB"):
            self.stack.append(_Open("(" if tok.kind == "LPAR" else "[", indent + INDENT if ends_line else at + 1,
                                    indent, self.statement, repeat_args=last is not None and last.kind == "REPEAT"))
        elif tok.kind in CLOSING and self.stack:
            closed = self.stack.pop()
            self.closed_repeat_args = closed.repeat_args
            if closed.kind in ("body", "brace"):
                self.statement = closed.statement


def _break_long_lines(lines: list[_Line | None]) -> list[_Line | None]:
    out: list[_Line | None] = []
    for line in lines:
        out.extend(_broken(line) if line is not None and line.breakable and len(line.text()) > WIDTH else [line])
    return out


def _broken(line: _Line) -> list[_Line]:
    """A line too long, broken before its `|>`s outside brackets: its value on the first line (unless
    it starts with `|>`), then as many stages a line as fit."""
    depth, cuts = 0, []
    for j, tok in enumerate(line.code):
        if tok.kind in OPENING:
            depth += 1
        elif tok.kind in CLOSING:
            depth -= 1
            if depth < 0:
                return [line]
        elif tok.kind == "PIPE" and depth == 0 and j > 0:
            cuts.append(j)
        elif tok.kind == "_NL":  # several statements on the line
            return [line]
    if depth != 0 or not cuts:
        return [line]
    pieces = [(a, b) for a, b in zip([0] + cuts, cuts + [len(line.code)])]
    indent = line.indent if line.code[0].kind == "PIPE" else line.statement + INDENT
    out: list[_Line] = []
    if line.code[0].kind != "PIPE":
        head, pieces = pieces[0], pieces[1:]
        out.append(_piece(line, line.indent, *head))
    current = pieces[0]
    for a, b in pieces[1:]:
        if len(_piece(line, indent, current[0], b).text()) <= WIDTH:
            current = (current[0], b)
        else:
            out.append(_piece(line, indent, *current))
            current = (a, b)
    out.append(_piece(line, indent, *current))
    out[-1].comment = line.comment  # where it was written is no guide any more: after the code
    return out


def _piece(line: _Line, indent: int, a: int, b: int) -> _Line:
    return _Line(indent, line.parts[a:b], line.code[a:b], statement=line.statement)


def _render(lines: list[_Line | None]) -> str:
    """The text, with the trailing comments of consecutive lines aligned: at the column the first of
    them was written at, or further right where a line's code needs it."""
    while lines and lines[-1] is None:
        lines.pop()
    texts = [line.text() if line is not None else "" for line in lines]
    i = 0
    while i < len(lines):
        line = lines[i]
        if line is None or line.comment is None:
            i += 1
            continue
        if not line.code:
            texts[i] = " " * line.indent + line.comment.text
            i += 1
            continue
        run = [i]
        while run[-1] + 1 < len(lines) and lines[run[-1] + 1] is not None and lines[run[-1] + 1].code \
                and lines[run[-1] + 1].comment is not None:
            run.append(run[-1] + 1)
        column = max([line.comment_column] + [len(texts[k]) + 2 for k in run])
        for k in run:
            texts[k] = texts[k].ljust(column) + lines[k].comment.text
        i = run[-1] + 1
    return "\n".join(texts) + "\n" if texts else ""


def check_formatted(source: SourceFile) -> str | None:
    """The formatted text if it differs from `source`'s, else None."""
    formatted = format_source(source)
    return formatted if formatted != source.text else None



def dl_files(paths: list[str]) -> list[Path]:
    """The `.dl` files named, and those under the folders named (not in hidden folders such as `.venv`),
    in order; raises `DataError` for a path that does not exist."""
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.dl") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:  # `fmt --check` of a mistaken folder would pass, checking nothing
                raise DataError(f"folder `{given}` holds no `.dl` files", hint="name the files or folders to format")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"cannot read `{given}`: No such file or directory")
    return list(dict.fromkeys(files))


def read_stdin(stream: BinaryIO, name: str | None) -> tuple[SourceFile, str]:
    """The text of `dslc fmt -`, named `name` (`--stdin-filename`) or `<stdin>` in errors and the diff,
    and the text as written (with its byte-order mark, if any)."""
    path = name or "<stdin>"
    data = stream.read()
    try:
        written = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise not_utf8_error(NotUtf8(path, data, e.start)) from None
    return SourceFile.from_text(path, written), written


def in_the_written_style(formatted: str, written: str) -> str:
    """`formatted` with the line endings and byte-order mark of the text as `written`, as black and
    rustfmt keep them: CRLF if its first line ends with one (git's `autocrlf` checks files out so on
    Windows). `format_source` gives LF and no mark, so `dslc fmt` rewrote a CRLF file as LF when any
    other part of it changed, and left it CRLF when none did."""
    first_line = written.split("\n", 1)
    if len(first_line) == 2 and first_line[0].endswith("\r"):
        formatted = formatted.replace("\n", "\r\n")
    return BOM + formatted if written.startswith(BOM) else formatted


def read_only_error(paths: list[Path]) -> WriteError:
    """What `dslc fmt` says of files it would rewrite but may not (black, gofmt and rustfmt refuse too):
    an atomic write replaces the file by renaming, which a read-only file's directory still allows."""
    if len(paths) == 1:
        error = WriteError(errno.EACCES, "the file is read-only, so it was not formatted", str(paths[0]))
    else:
        error = WriteError(errno.EACCES, "they are read-only, so they were not formatted",
                           "`, `".join(str(p) for p in paths))
    error.hint = (f"make {'it' if len(paths) == 1 else 'them'} writable (`chmod u+w`), or print the formatted "
                  f"text with `dslc fmt - < {paths[0]}`")
    return error


def diff(path: str, before: str, after: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        f"{path} (as written)", f"{path} (formatted)"))
