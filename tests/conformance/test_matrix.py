"""The README's portability table, written from the cells' outcomes."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

import matrix

CELLS = {("a", "rt1"): ("pass", "3e-05"), ("a", "rt2"): ("xfail", "rt2: no kernel"),
         ("b", "rt1"): ("fail", "rt1: crashed"), ("b", "rt2"): ("xfail", "rt2: no kernel")}


def test_table_rows_cells_and_shared_notes():
    text = matrix.table(CELLS, {"a": "[a](models/a.dl)", "b": "b", "c": "c"}, ["rt1", "rt2"], 20)
    assert "20 training steps" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows == ["| model | rt1 | rt2 |",
                    "| [a](models/a.dl) | ✓ 3e-05 | ✗ [1] (expected) |",
                    "| b | ✗ [2] | ✗ [1] (expected) |",
                    "| c | — | — |"]
    assert text.endswith("1. rt2: no kernel\n2. rt1: crashed\n")


def test_write_table_replaces_the_text_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{matrix.BEGIN}\nold\n{matrix.END}\nafter\n")
    config = SimpleNamespace(stash=pytest.Stash())  # not this session's config, whose cells the table of a real run needs
    config.stash[matrix.CELLS] = dict(CELLS)
    config.stash[matrix.STEPS] = 20
    matrix.write_table(config, readme, {"a": "a", "b": "b"}, ["rt1", "rt2"])
    text = readme.read_text()
    assert text.startswith(f"# x\n{matrix.BEGIN}\nInference") and text.endswith(f"{matrix.END}\nafter\n")
    assert "old" not in text and "| a | ✓ 3e-05 | ✗ [1] (expected) |" in text
    readme.write_text("no markers")
    with pytest.raises(pytest.UsageError, match="markers"):
        matrix.write_table(config, readme, {}, [])
