"""Golden files: compare text with a checked-in expectation, or rewrite it under `pytest --bless`.

    from golden import assert_golden
    assert_golden(case.with_suffix(".stderr"), rendered, bless)   # `bless` is the conftest fixture
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def relative(path: Path) -> str:
    """`path` relative to the repository root, with `/`: what diagnostics show, on any machine."""
    return Path(path).resolve().relative_to(ROOT).as_posix()


def assert_golden(path: Path, actual: str, bless: bool) -> None:
    """Check `actual` against the file at `path`; with `bless`, write it there instead."""
    path = Path(path)
    actual = actual.rstrip("\n") + "\n"
    if bless:
        if not path.exists() or path.read_text(encoding="utf-8") != actual:
            path.write_text(actual, encoding="utf-8")
        return
    if not path.exists():
        raise AssertionError(f"{relative(path)} does not exist; run `pytest --bless` to create it")
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{relative(path)} differs (run `pytest --bless` to accept the new output)"


def parsing_dl_files() -> list[Path]:
    """Every `.dl` file of the repository that parses: the models, examples and most test fixtures
    (not the syntax-error cases, nor the one that is not UTF-8)."""
    from dslc.diagnostics import DslcError
    from dslc.frontend.parser import parse
    from dslc.source import NotUtf8, SourceFile

    files = []
    for path in sorted(ROOT.rglob("*.dl")):
        if ".venv" in path.parts:
            continue
        try:
            parse(SourceFile.read(path))
        except (DslcError, NotUtf8):
            continue
        files.append(path)
    return files
