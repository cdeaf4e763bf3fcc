"""Golden syntax errors: each `tests/diagnostics/syntax_*.dl` must fail to parse with its `.stderr`.

Regenerate with `pytest tests/test_syntax_errors.py --bless` and review the diff.
"""
from pathlib import Path

import pytest

from dslc.diagnostics import DslcError, render_all
from dslc.frontend import parse
from dslc.source import SourceFile
from golden import relative

CASES = sorted((Path(__file__).parent / "diagnostics").glob("syntax_*.dl"))


@pytest.mark.parametrize("case", CASES, ids=[case.stem for case in CASES])
def test_syntax_error(case: Path, golden):
    source = SourceFile.from_text(relative(case), case.read_text(encoding="utf-8"))
    with pytest.raises(DslcError) as info:
        parse(source)
    golden(case.with_suffix(".stderr"), render_all(info.value.diagnostics))


def test_cases_are_found():
    assert len(CASES) >= 20
