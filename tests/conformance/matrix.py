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
    """`models`: the table's label of each model, by name."""
    notes: list[str] = []
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
                notes.append(f"{runtime} on {model}: {detail}")
                row.append(f"✗ [{len(notes)}]" + (" (expected)" if outcome == "xfail" else ""))
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    text = "\n".join(lines) + "\n"
    if notes:
        text += "\n" + "\n".join(f"{i}. {note}" for i, note in enumerate(notes, 1)) + "\n"
    return (f"Inference, {steps} training steps and evaluation against ONNX Runtime (Python); ✓ shows the largest "
            f"relative difference of the final parameters where it exceeds 1e-6.\n\n" + text)


def write_table(config, readme: Path, models: dict[str, str], runtimes: list[str]) -> None:
    text = readme.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    generated = table(config.stash.get(CELLS, {}), models, runtimes, config.stash.get(STEPS, 0))
    readme.write_text(text[:start] + "\n" + generated + text[end:], encoding="utf-8")
