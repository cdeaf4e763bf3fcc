"""`dslc fmt`: the canonical layout, idempotent, comments kept, and the same program.

- every `.dl` of models/ and examples/ is formatted (CI also runs `dslc fmt --check models examples`);
- formatting is idempotent on every `.dl` in the repository that parses, and on a fuzzed corpus made
  from the bundled models (random spaces, blank lines and line breaks where the layout allows them);
- the fuzzed layouts of a model all format to the same code (the layout is canonical), and the
  graphs built from the formatted file are byte-identical to those of the original;
- the layout rules, case by case; the command line's exit codes and diff.
"""
from __future__ import annotations

import errno
import io
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dslc import cli
from dslc.compiler import compile_file
from dslc.diagnostics import DslcError
from dslc.editor.fmt import WIDTH, format_source, format_text
from dslc.frontend.tokens import parsed_stream, tokens
from dslc.source import SourceFile
from golden import parsing_dl_files

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = sorted((ROOT / "models").rglob("*.dl")) + sorted((ROOT / "examples").rglob("*.dl")) + \
    sorted((ROOT / "tests" / "models").glob("*.dl"))
MODELS = [p for p in BUNDLED if "model " in p.read_text(encoding="utf-8") and p.name != "bad.dl"]  # bad.dl: an error




def fuzz(text: str, seed: int, newlines: bool = True) -> str:
    """`text` laid out differently where that cannot change its meaning: more spaces between tokens and
    indentation, and with `newlines`, blank lines and line breaks before `|>` and after `(` and `,`
    (the formatter keeps the author's line breaks and single blank lines)."""
    rng = random.Random(seed)
    source = SourceFile.from_text("fuzz.dl", text)
    out, depth = [], 0
    for tok in tokens(source):
        if tok.kind == "WS":
            out.append(" " * rng.randint(1, 4))
            continue
        if tok.kind == "_NL" and tok.text == "\n":
            out.append("\n" * (rng.choice([1, 1, 1, 2, 3]) if newlines else 1) + " " * rng.randint(0, 9))
            continue
        if tok.kind == "PIPE" and newlines and rng.random() < 0.3:
            out.append("\n" + " " * rng.randint(0, 12))
        out.append(" " * rng.choice([0, 0, 1, 2]) if tok.kind != "COMMENT" else " ")
        out.append(tok.text)
        depth += tok.kind in ("LPAR", "LSQB") or -(tok.kind in ("RPAR", "RSQB"))
        if depth > 0 and tok.kind in ("LPAR", "COMMA") and newlines and rng.random() < 0.2:
            out.append("\n" + " " * rng.randint(0, 12))
    return "".join(out)


def without_comments(text: str) -> list[str]:
    """The lines of `text` with their comments cut off (trailing comments align by where they were written)."""
    source = SourceFile.from_text("x.dl", text)
    cut = list(text)
    for tok in tokens(source):
        if tok.kind == "COMMENT":
            cut[tok.start:tok.end] = [""] * (tok.end - tok.start)
    return [line.rstrip() for line in "".join(cut).splitlines()]


def comments(text: str) -> list[str]:
    return [t.text for t in tokens(SourceFile.from_text("x.dl", text)) if t.kind == "COMMENT"]


# ---- the repository ----------------------------------------------------------------------------
@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: str(p.relative_to(ROOT)))
def test_bundled_files_are_formatted(path):
    text = path.read_text(encoding="utf-8")
    assert format_text(text, str(path)) == text, f"run `dslc fmt {path.relative_to(ROOT)}`"


def test_every_parsing_file_formats_idempotently():
    checked = 0
    for path in parsing_dl_files():
        once = format_source(SourceFile.read(path))
        assert format_text(once, str(path)) == once, path
        assert comments(once) == comments(path.read_text(encoding="utf-8")), path
        checked += 1
    assert checked > 100  # the models, examples, and most diagnostic fixtures


# ---- the fuzzed corpus -------------------------------------------------------------------------
@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: str(p.relative_to(ROOT)))
def test_fuzzed_layouts_format_to_one_layout(path):
    text = path.read_text(encoding="utf-8")
    for seed in range(10):
        messy = fuzz(text, seed, newlines=False)
        assert messy != text
        formatted = format_text(messy)
        assert without_comments(formatted) == without_comments(text), seed
        assert comments(formatted) == comments(text)
        assert format_text(formatted) == formatted, seed


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: str(p.relative_to(ROOT)))
def test_fuzzed_line_breaks_format_idempotently(path):
    text = path.read_text(encoding="utf-8")
    for seed in range(10):
        messy = fuzz(text, seed)
        formatted = format_text(messy)
        assert format_text(formatted) == formatted, seed
        assert parsed_stream(SourceFile.from_text("a", formatted)) == parsed_stream(SourceFile.from_text("b", text))
        assert comments(formatted) == comments(text)


@pytest.mark.parametrize("path", MODELS, ids=lambda p: str(p.relative_to(ROOT)))
def test_formatting_keeps_the_graphs_byte_identical(path, tmp_path, monkeypatch):
    """A fuzzed layout of the model, formatted, builds the same ONNX bytes and manifest as the original."""
    monkeypatch.chdir(ROOT)
    original = compile_file(path.relative_to(ROOT))
    copy = tmp_path / path.relative_to(ROOT)
    shutil.copytree(path.parent, copy.parent)  # with the files it imports
    copy.write_text(format_text(fuzz(path.read_text(encoding="utf-8"), seed=7)), encoding="utf-8")
    assert copy.read_text(encoding="utf-8") != fuzz(path.read_text(encoding="utf-8"), seed=7)
    monkeypatch.chdir(tmp_path)
    formatted = compile_file(path.relative_to(ROOT))
    assert formatted.graphs == original.graphs
    assert formatted.manifest == original.manifest


# ---- the rules ---------------------------------------------------------------------------------
MESSY = """\
# header


import   "blocks.dl"
block  res( x,width ,rate=0.0 ){

  # leading comment
  h=x|>dense( width )|>relu  # c1
  return x+h   # c2

}
model m(a=1,b = -2) {
input x:f32[B,4]
target yy : i64[ B ]
    z = x[:, 1:3] |> dense(a*2 , init=normal(std=0.01)) |> relu |> dense(10) |> relu |> dense(10) |> relu |> dense(10) |> softmax
    w = (x[...,::2],)
    q = -x * -(1 + 2)
    k = x |> repeat(2) {
        dense(4)
        |> relu
    }
    v = f(a,
      b,
            c)
    u = g(
  a, b
  )
    output o = z +
        w
    loss mse(z,y); metric acc = 1
        # trailing body comment
    metric  top=accuracy(z, y)
}
# end
"""

TIDY = """\
# header

import "blocks.dl"
block res(x, width, rate = 0.0) {
    # leading comment
    h = x |> dense(width) |> relu  # c1
    return x + h                   # c2
}
model m(a = 1, b = -2) {
    input  x:  f32[B, 4]
    target yy: i64[B]
    z = x[:, 1:3]
        |> dense(a * 2, init = normal(std = 0.01)) |> relu |> dense(10) |> relu |> dense(10) |> relu
        |> dense(10) |> softmax
    w = (x[..., ::2],)
    q = -x * -(1 + 2)
    k = x |> repeat(2) {
        dense(4)
            |> relu
    }
    v = f(a,
          b,
          c)
    u = g(
        a, b
    )
    output o = z +
        w
    loss      mse(z, y); metric acc = 1
    # trailing body comment
    metric    top = accuracy(z, y)
}
# end
"""


def test_the_layout_rules():
    assert format_text(MESSY) == TIDY
    assert format_text(TIDY) == TIDY


def test_a_long_pipeline_is_broken_before_its_stages():
    stages = " |> ".join(f"dense({n})" for n in range(100, 130))
    text = f"model m {{\n    input  x: f32[B, 4]\n    output y = x |> {stages}  # why\n}}\n"
    formatted = format_text(text)
    lines = formatted.splitlines()
    assert lines[2] == "    output y = x"
    assert all(line.startswith("        |> dense(") for line in lines[3:-1])
    assert all(len(line) <= WIDTH for line in lines[3:-2]) and lines[-2].endswith("  # why")
    assert max(len(line.split("  #")[0]) for line in lines) <= WIDTH
    assert " ".join(line.strip() for line in lines[2:-1]).replace("  # why", "") == f"output y = x |> {stages}"
    assert format_text(formatted) == formatted


def test_trailing_comments_line_up_on_consecutive_lines():
    """At the column of the first, or two spaces after the longest code."""
    text = "model m {\n    input  x: f32[B, 4]   # a\n    target y: f32[B, 4] # b\n\n    h = x # c\n    k = x\n}\n"
    assert format_text(text) == ("model m {\n    input  x: f32[B, 4]   # a\n    target y: f32[B, 4]   # b\n\n"
                                 "    h = x  # c\n    k = x\n}\n")


def test_crlf_tabs_and_a_bom_become_the_canonical_text():
    text = "\ufeffmodel m {\r\n\tinput x: f32[B, 4]  # c\r\n\toutput y = x\r\n}\r\n"
    assert format_text(text) == "model m {\n    input  x: f32[B, 4]  # c\n    output y = x\n}\n"


def test_a_syntax_error_is_reported_not_formatted():
    with pytest.raises(DslcError) as info:
        format_text("model m {\n    x = = 1\n}\n", "bad.dl")
    assert info.value.diagnostics[0].span.line == 2


# ---- the command line ----------------------------------------------------------------------------
def test_fmt_rewrites_and_check_reports(tmp_path, capsys):
    messy = tmp_path / "m.dl"
    messy.write_text(MESSY, encoding="utf-8")
    tidy = tmp_path / "sub" / "t.dl"
    tidy.parent.mkdir()
    tidy.write_text(TIDY, encoding="utf-8")
    assert cli.main(["fmt", "--check", str(tmp_path)]) == 4  # not formatted: 4, not a model error's 1
    out, err = capsys.readouterr()
    assert f"--- {messy} (as written)" in out and "+    target yy: i64[B]" in out and str(tidy) not in out
    assert "1 file not formatted" in err
    assert messy.read_text(encoding="utf-8") == MESSY  # --check writes nothing
    assert cli.main(["fmt", str(messy), str(tidy)]) == 0
    assert messy.read_text(encoding="utf-8") == TIDY
    assert f"formatted {messy}" in capsys.readouterr().err
    assert cli.main(["fmt", "--check", str(tmp_path)]) == 0


def test_fmt_says_what_it_formatted_when_another_file_does_not_parse(tmp_path, capsys):
    """The other files are formatted and named, and `--check` counts them, before the errors (exit 1):
    the files were rewritten without a word, and `--check` gave only the diagnostics."""
    (tmp_path / "bad.dl").write_text("model m {\n    x = = 1\n}\n", encoding="utf-8")
    messy = tmp_path / "messy.dl"
    messy.write_text(MESSY, encoding="utf-8")
    assert cli.main(["fmt", "--check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"1 file not formatted: run `dslc fmt` on {messy}" in err and "bad.dl:2:" in err
    locked = tmp_path / "locked.dl"
    locked.write_text(MESSY, encoding="utf-8")
    locked.chmod(0o444)
    assert cli.main(["fmt", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"formatted {messy}" in err and "bad.dl:2:" in err and f"cannot write `{locked}`" in err
    assert messy.read_text(encoding="utf-8") == TIDY and locked.read_text(encoding="utf-8") == MESSY


def test_fmt_errors_exit_codes(tmp_path, capsys):
    """A file that does not parse is a model error (1, as `dslc check` says of it), with `--check` too, where
    a file that is not formatted is 4: black, rustfmt and ruff tell the two apart (1 and 123 or 2), and
    dslc's `--check` said 1 for both; a parse error wins over files to format."""
    bad = tmp_path / "bad.dl"
    bad.write_text("model m {\n    x = = 1\n}\n", encoding="utf-8")
    assert cli.main(["fmt", str(bad)]) == 1
    assert f"{bad}:2:" in capsys.readouterr().err
    assert cli.main(["fmt", "--check", str(bad)]) == 1 == cli.main(["check", str(bad)])
    messy = tmp_path / "messy.dl"
    messy.write_text(MESSY, encoding="utf-8")
    assert cli.main(["fmt", "--check", str(messy)]) == 4
    assert cli.main(["fmt", "--check", str(messy), str(bad)]) == 1
    capsys.readouterr()
    messy.unlink()
    assert bad.read_text(encoding="utf-8") == "model m {\n    x = = 1\n}\n"
    assert cli.main(["fmt", str(tmp_path / "missing.dl")]) == 3
    (tmp_path / "latin1.dl").write_bytes("model m { # caf\xe9\n}\n".encode("latin-1"))
    assert cli.main(["fmt", "--check", str(tmp_path / "latin1.dl")]) == 1
    assert "error: the file is not UTF-8 text" in capsys.readouterr().err


def test_fmt_dash_reads_stdin_and_writes_stdout(monkeypatch, capsys):
    """`dslc fmt -` as editors and pipes call black, rustfmt and gofmt: the formatted text on stdout, and
    with `--check` the diff and exit 1 (0 when formatted); errors name `--stdin-filename`. It was a usage
    error: `cannot read `-``."""
    def fmt(data: bytes, *flags: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        code = cli.main(["fmt", *flags, "-"])
        return (code, *capsys.readouterr())

    assert fmt(MESSY.encode()) == (0, TIDY, "")
    assert fmt(TIDY.encode(), "--check") == (0, "", "")
    code, out, err = fmt(MESSY.encode(), "--check", "--stdin-filename", "src/m.dl")
    assert code == 4 and "--- src/m.dl (as written)" in out and "+    target yy: i64[B]" in out
    assert "1 file not formatted: src/m.dl" in err
    code, out, err = fmt(b"model m {\n    x = = 1\n}\n", "--stdin-filename", "bad.dl")
    assert (code, out) == (1, "") and "bad.dl:2:" in err
    code, out, err = fmt("model m { # caf\xe9\n}\n".encode("latin-1"))
    assert (code, out) == (1, "") and "<stdin>:1:" in err and "not UTF-8" in err
    assert cli.main(["fmt", "-", str(ROOT / "models" / "xor.dl")]) == 2
    assert "`-` (standard input) is formatted alone" in capsys.readouterr().err
    assert cli.main(["fmt", "--stdin-filename", "m.dl", str(ROOT / "models" / "xor.dl")]) == 2
    assert "give `-` as the file" in capsys.readouterr().err


def test_fmt_refuses_read_only_files_and_writes_through_links(tmp_path, capsys):
    """A read-only file is not rewritten (the atomic rename replaced it, mode 444 kept: black, gofmt and
    rustfmt refuse), exit 3 naming it, after the other files are formatted; a symbolic link's file is
    formatted and the link kept (the rename replaced the link by a formatted copy, the file unchanged)."""
    locked, other = tmp_path / "locked.dl", tmp_path / "other.dl"
    for path in (locked, other):
        path.write_text(MESSY, encoding="utf-8")
    locked.chmod(0o444)
    assert cli.main(["fmt", str(locked), str(other)]) == 3
    err = capsys.readouterr().err
    assert f"error: cannot write `{locked}`: the file is read-only" in err and "chmod u+w" in err
    assert f"dslc fmt - < {locked}" in err and f"formatted {other}" in err
    assert locked.read_text(encoding="utf-8") == MESSY and other.read_text(encoding="utf-8") == TIDY
    assert cli.main(["fmt", "--check", str(locked)]) == 4  # checking reads only
    (tmp_path / "real").mkdir()
    real, link = tmp_path / "real" / "m.dl", tmp_path / "link.dl"
    real.write_text(MESSY, encoding="utf-8")
    link.symlink_to(real)
    assert cli.main(["fmt", str(link)]) == 0
    assert link.is_symlink() and real.read_text(encoding="utf-8") == TIDY


def test_fmt_keeps_hard_links(tmp_path, capsys):
    """A file with other hard links is written in place, as black and rustfmt write, so every name sees the
    formatted text (the atomic rename gave the name a new file and left the other names on the old text);
    nothing is left beside it, and a file with one link is still replaced by rename."""
    first, second = tmp_path / "a.dl", tmp_path / "sub" / "b.dl"
    second.parent.mkdir()
    first.write_text(MESSY, encoding="utf-8")
    os.link(first, second)
    inode = first.stat().st_ino
    assert cli.main(["fmt", str(first)]) == 0
    assert first.stat().st_ino == second.stat().st_ino == inode and first.stat().st_nlink == 2
    assert second.read_text(encoding="utf-8") == TIDY
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.dl", "b.dl", "sub"]
    single = tmp_path / "single.dl"
    single.write_text(MESSY, encoding="utf-8")
    inode = single.stat().st_ino
    assert cli.main(["fmt", str(single)]) == 0
    assert single.read_text(encoding="utf-8") == TIDY and single.stat().st_ino != inode  # renamed into place


@pytest.mark.parametrize("restored", [True, False])
def test_fmt_of_a_hard_link_that_cannot_be_written_keeps_the_old_text(tmp_path, capsys, monkeypatch, restored):
    """A full disk in the middle of the in-place write: the old text is put back (exit 3, "the file is
    unchanged"), or, if that fails too, the message names the backup that holds it."""
    from dslc import fsutil

    first, second = tmp_path / "a.dl", tmp_path / "b.dl"
    first.write_text(MESSY, encoding="utf-8")
    os.link(first, second)
    writes = []

    def full_disk(fd, data):
        writes.append(data)
        if len(writes) == 1 or not restored:
            os.write(fd, data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")
        os.write(fd, data)
    monkeypatch.setattr(fsutil, "_write_all", full_disk)
    assert cli.main(["fmt", str(first)]) == 3
    err = capsys.readouterr().err
    left = sorted(p.name for p in tmp_path.iterdir())
    if restored:
        assert err == f"error: cannot write `{first}`: No space left on device (the file is unchanged)\n"
        assert second.read_text(encoding="utf-8") == MESSY and left == ["a.dl", "b.dl"]
    else:
        backup = tmp_path / next(name for name in left if name.startswith(".a.dl."))
        assert err == f"error: cannot write `{first}`: No space left on device; its contents before are in `{backup}`\n"
        assert backup.read_text(encoding="utf-8") == MESSY and len(left) == 3


def test_fmt_keeps_the_files_line_endings_and_byte_order_mark(tmp_path, monkeypatch, capsys):
    """As black and rustfmt: a CRLF file stays CRLF, a BOM stays. `dslc fmt` rewrote a CRLF file as LF
    when anything else in it changed and left it CRLF when nothing did (it compared newline-translated
    text), so `--check` passed a CRLF file that `fmt` would have rewritten after one edit."""
    crlf, bom = tmp_path / "crlf.dl", tmp_path / "bom.dl"
    crlf.write_bytes(MESSY.replace("\n", "\r\n").encode())
    bom.write_bytes(("\ufeff" + MESSY).encode())
    assert cli.main(["fmt", "--check", str(crlf), str(bom)]) == 4
    assert cli.main(["fmt", str(crlf), str(bom)]) == 0
    assert crlf.read_bytes() == TIDY.replace("\n", "\r\n").encode()
    assert bom.read_bytes() == ("\ufeff" + TIDY).encode()
    assert cli.main(["fmt", "--check", str(crlf), str(bom)]) == 0
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(MESSY.replace("\n", "\r\n").encode())))
    assert cli.main(["fmt", "-"]) == 0
    assert capsys.readouterr().out == TIDY.replace("\n", "\r\n")


def test_ci_check_passes_on_the_repository():
    """The line CI runs."""
    result = subprocess.run([sys.executable, "-m", "dslc", "fmt", "--check", "models", "examples"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lsp_without_its_extra_says_what_to_install():
    code = "import sys; sys.modules['pygls'] = None; from dslc.cli import main; sys.exit(main(['lsp']))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 3, result.stderr
    assert "`dslc lsp` needs the `lsp` extra" in result.stderr and "pip install 'dslc[lsp]'" in result.stderr
