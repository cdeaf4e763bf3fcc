"""Semantic errors (names, arguments, shapes, training statements): each case in
tests/diagnostics/*.dl whose name does not start with `syntax_` must fail to compile with exactly
the diagnostics in its `.stderr` golden file. A first line `# args: -D name=value ...` passes defines."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from dslc.compiler import compile_file
from dslc.diagnostics import DslcError, render_all
from dslc.spelling import command_line
from golden import ROOT, relative

CASES = sorted(p for p in (ROOT / "tests" / "diagnostics").glob("*.dl") if not p.name.startswith("syntax_"))


def _defines(path: Path) -> dict[str, str]:
    first = path.read_bytes().decode("utf-8", errors="replace").splitlines()[0]  # a case may not be UTF-8
    if not first.startswith("# args:"):
        return {}
    words = shlex.split(first[len("# args:"):])
    return dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "-D")


@pytest.mark.parametrize("case", CASES, ids=[p.stem for p in CASES])
def test_semantic_error(case: Path, golden, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(DslcError) as info, command_line():  # the goldens are what `dslc build` prints
        compile_file(relative(case), defines=_defines(case))
    golden(case.with_suffix(".stderr"), render_all(info.value.diagnostics))


def test_every_case_has_a_golden_file():
    missing = [relative(p) for p in CASES if not p.with_suffix(".stderr").exists()]
    assert not missing, f"run `pytest --bless` and review: {missing}"
