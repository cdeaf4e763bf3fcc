"""Diagnostics: errors are values carrying a span, rendered once (by the CLI) in rustc style.

    models/mlp.dl:7:23: error: `dense` expects a 2-D input, got `f32[B, 28, 28]`
      7 |     logits = image |> dense(hidden) |> relu
        |                       ^^^^^^^^^^^^^ this input is 3-D
    hint: insert `flatten` before `dense`

A diagnostic with `severity="warning"` renders the same way (`warning: ...`); warnings do not stop
compilation and are carried on `Program.warnings`.
"""
from __future__ import annotations

import difflib
import unicodedata
from dataclasses import dataclass, replace
from typing import Iterable

from dslc.source import Span

TAB = 4  # columns between tab stops when a source line is shown
# What a diagnostic echoes is bounded: a source line is shown as a window of this many columns around
# its span, a message, label or hint up to this many characters (a file of one 20 MB line, or a name
# made of megabytes, must not flood the terminal)
EXCERPT_COLUMNS = 160
MAX_TEXT = 1000


@dataclass(frozen=True)
class Diagnostic:
    message: str
    span: Span | None = None
    label: str = ""
    hint: str = ""
    notes: tuple[tuple[str, Span], ...] = ()
    severity: str = "error"

    def sort_key(self):
        if self.span is None:
            return ("", 0)
        return (self.span.source.path, self.span.start)


class DslcError(Exception):
    """One or more diagnostics about the user's model (exit code 1)."""

    exit_code = 1

    def __init__(self, diagnostics: Diagnostic | Iterable[Diagnostic]):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = sorted(diagnostics, key=Diagnostic.sort_key)
        super().__init__(render_all(self.diagnostics))

    def with_note(self, note: str, span: Span) -> "DslcError":
        """The same error with `note` at `span` added to each diagnostic (after its other notes)."""
        return DslcError([replace(d, notes=d.notes + ((note, span),)) for d in self.diagnostics])


class DataError(Exception):
    """Bad data, a missing file or a runtime failure outside the model text (exit code 3)."""

    exit_code = 3

    def __init__(self, message: str, hint: str = ""):
        self.message, self.hint = message, hint
        super().__init__(message + (f"\nhint: {hint}" if hint else ""))


class SettingError(DataError):
    """Settings of a run that do not hold together, found once the run starts (early stopping monitoring
    `val_loss` without validation data): a mistake on the command line, exit code 2 as argparse's usage
    errors; from Python a `DataError` like the other bad arguments."""

    exit_code = 2


def error(message: str, span: Span | None = None, label: str = "", hint: str = "") -> DslcError:
    return DslcError(Diagnostic(message, span, label, hint))


def warning(message: str, span: Span | None = None, label: str = "", hint: str = "") -> Diagnostic:
    return Diagnostic(message, span, label, hint, severity="warning")


# Keyword names from Keras and PyTorch -> dslc's, for `suggest` (used only when dslc's names are candidates)
RENAMED_KEYWORDS: dict[str, tuple[str, ...]] = {
    "learning_rate": ("lr",), "betas": ("beta1", "beta2"), "epsilon": ("eps",), "alpha": ("rho",),
    "lr_decay": ("decay",),
    "kernel_size": ("kernel",), "pool_size": ("kernel",), "strides": ("stride",), "use_bias": ("bias",),
    "out_features": ("units",), "hidden_size": ("units",), "out_channels": ("filters",),
    "num_layers": ("layers",), "num_heads": ("heads",), "negative_slope": ("alpha",), "dim": ("axis",),
    "p": ("rate",), "kernel_initializer": ("init",), "bias_initializer": ("bias_init",),
    "num_embeddings": ("vocab",), "input_dim": ("vocab",), "embedding_dim": ("dim",), "output_dim": ("dim",),
}


def suggest(name: str, candidates: Iterable[str]) -> str:
    """`hint: did you mean `x`?` for the closest candidate, or empty. A Keras/PyTorch keyword name
    (`learning_rate`, `betas`, ...) is pointed at dslc's name for it when that is a candidate."""
    candidates = set(candidates)
    renamed = RENAMED_KEYWORDS.get(name)
    if renamed and all(r in candidates for r in renamed):
        return f"write `{', '.join(f'{r} = ...' for r in renamed)}` instead"
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else ""


def escape(ch: str) -> str:
    """A character as shown: itself when printable, else an escape (`\\x1b`, `\\u202e`), so that text
    from a file cannot move the cursor, recolour the terminal or reorder what is shown (ANSI escape
    sequences start with the control character ESC; bidirectional overrides are format characters)."""
    if ch.isprintable() or ch == " ":
        return ch
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str, limit: int = MAX_TEXT) -> str:
    """`text` with every non-printable character escaped (line breaks kept), cut after `limit` characters."""
    cut = len(text) > limit
    text = text[:limit]
    shown = "".join(ch if ch == "\n" else escape(ch) for ch in text)
    return shown + ("…" if cut else "")


def _expand(text: str) -> tuple[str, list[int]]:
    """`text` as shown, tabs expanded to stops of `TAB` columns, other non-printable characters escaped,
    and the screen column at which each character starts (plus one for the end): wide (CJK) characters
    take two columns, combining marks none."""
    shown, columns = [], [0]
    for ch in text:
        column = columns[-1]
        if ch == "\t":
            width = TAB - column % TAB
            ch = " " * width
        elif not ch.isprintable() and ch != " ":
            ch = escape(ch)
            width = len(ch)
        else:
            width = 0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        shown.append(ch)
        columns.append(column + width)
    return "".join(shown), columns


def _window(line: str, first: int, last: int) -> tuple[str, int, int]:
    """The characters of `line` shown for a span over characters `first`..`last`: all of them when the
    line is short, else a window of about `EXCERPT_COLUMNS` characters from a little before the span,
    marked `…` where cut. Returns the text and the span's new `first` and `last`."""
    if len(line) <= EXCERPT_COLUMNS:
        return line, first, last
    start = max(0, min(first - EXCERPT_COLUMNS // 4, len(line) - EXCERPT_COLUMNS))
    end = start + EXCERPT_COLUMNS
    lead = "…" if start > 0 else ""
    text = lead + line[start:end] + ("…" if end < len(line) else "")
    shift = len(lead) - start
    return text, first + shift, min(last + shift, len(text))


def _render_snippet(span: Span, label: str, marker: str) -> list[str]:
    source = span.source
    line, col = source.line_col(span.start)
    end_line, end_col = source.line_col(max(span.start, span.end - 1))
    raw = source.line_text(line)
    last = min(end_col, len(raw)) if end_line == line else len(raw)  # a span may end at the newline
    raw, first, last = _window(raw, col - 1, last)
    text, columns = _expand(raw)
    width = len(str(line))
    start = columns[first]
    carets = marker * max(1, columns[last] - start)
    gutter = " " * width
    out = [f"{gutter} |", f"{line} | {text}", f"{gutter} | {' ' * start}{carets}" + (f" {label}" if label else "")]
    return out


def render(d: Diagnostic) -> str:
    """The diagnostic as text; whatever came from a file (names, paths, source lines) is shown printable
    and bounded (`printable`, `EXCERPT_COLUMNS`)."""
    head = f"{d.severity}: {printable(d.message)}"
    if d.span is not None:
        head = f"{printable(d.span.source.path)}:{d.span.line}:{d.span.col}: {head}"
    lines = [head]
    if d.span is not None:
        lines += _render_snippet(d.span, printable(d.label), "^")
    for note, span in d.notes:
        lines.append(f"note: {printable(note)}")
        lines.append(f"  --> {printable(span.source.path)}:{span.line}:{span.col}")
        lines += _render_snippet(span, "", "-")
    if d.hint:
        lines.append(f"hint: {printable(d.hint)}")
    return "\n".join(lines)


def render_all(diagnostics: Iterable[Diagnostic]) -> str:
    return "\n\n".join(render(d) for d in diagnostics)


class UnknownDimension(DataError):
    """Dimensions pinned with `dims` that the model does not declare (a bad argument from Python; the
    command line makes it a usage error, exit 2)."""

    def __init__(self, unknown: list[str], known: list[str]):
        self.unknown, self.known = unknown, known
        names = ", ".join(f"`{d}`" for d in known) or "none"
        super().__init__(f"the model has no symbolic dimension {', '.join(f'`{d}`' for d in unknown)} "
                         f"(its symbolic dimensions: {names})")
