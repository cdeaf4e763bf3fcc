"""The runtime × model matrix: each cell's outcome, and the README table written from them
(`pytest tests/conformance --conformance-table README.md` rewrites the text between the markers)."""
from __future__ import annotations

from pathlib import Path

import pytest

CELLS = pytest.StashKey[dict]()
STEPS = pytest.StashKey[int]()
BEGIN, END = "<!-- conformance-table -->", "<!-- /conformance-table -->"


def record(config, model: str, runtime: str, outcome: str, detail: str = "") -> None:
    """outcome: "pass" (detail: the largest relative difference of the final parameters), "xfail" or "fail"
    (detail: the error)."""
    config.stash.setdefault(CELLS, {})[model, runtime] = (outcome, detail)


def table(cells: dict, models: dict[str, str], runtimes: list[str], steps: int) -> str:
    """`models`: the table's label of each model, by name. Cells failing for the same reason share a note."""
    notes: dict[str, int] = {}
    lines = ["| model | " + " | ".join(runtimes) + " |", "|---|" + "---|" * len(runtimes)]
    for model, label in models.items():
        row = []
        for runtime in runtimes:
            outcome, detail = cells.get((model, runtime), ("not run", ""))
            if outcome == "pass":
                row.append(f"✓ {detail}" if detail else "✓")
            elif outcome == "not run":
                row.append("—")
            else:
                number = notes.setdefault(detail, len(notes) + 1)
                row.append(f"✗ [{number}]" + (" (expected)" if outcome == "xfail" else ""))
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    text = "\n".join(lines) + "\n"
    if notes:
        text += "\n" + "\n".join(f"{number}. {detail}" for detail, number in notes.items()) + "\n"
    return (f"Inference, {steps} training steps, evaluation and inference with the trained values (`predict`), "
            f"compared with ONNX Runtime (Python); a number "
            f"after ✓ is the relative difference of the final values where it exceeds 1e-6. tract and openvino "
            f"run the `--dim B=4` build, and ONNX Runtime's own column checks it against the symbolic one; "
            f"the \"symbolic B\" columns run tract and OpenVINO on the symbolic build.\n\n" + text)


def write_table(config, readme: Path, models: dict[str, str], runtimes: list[str]) -> None:
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise pytest.UsageError(f"--conformance-table {readme}: the file has no {BEGIN} ... {END} markers")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    generated = table(config.stash.get(CELLS, {}), models, runtimes, config.stash.get(STEPS, 0))
    readme.write_text(text[:start] + "\n" + generated + text[end:], encoding="utf-8")
