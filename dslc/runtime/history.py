"""A run's history: `<run>/history.jsonl`, one JSON object per completed epoch, one per line.

Each epoch writes its checkpoint first (atomically, its metadata holding the epoch's own history entry
as `record`), then appends the entry to this file. The cost is one line per epoch, not the whole
history, and no fsync: the page cache outlives a killed process, and after a power loss the
checkpoint (fsync'ed) restores the last entry, a warning naming any earlier ones lost. The checkpoint is the truth: a kill between the two writes leaves the file one
epoch behind, a kill inside the append leaves a torn last line, and the next run in the folder
(`--resume`) restores the file from the checkpoint (`read_history`, then `HistoryLog` rewrites it
atomically if it differs) before appending again. A fresh run replaces any history left without a
checkpoint. Read it with `[json.loads(line) for line in open(path)]` or
`pandas.read_json(path, lines=True)`.
"""
from __future__ import annotations

import json
from pathlib import Path

from dslc import standard_json
from dslc.fsutil import append_bytes, atomic_write_text
from dslc.runtime.faults import fault_point

HISTORY_FILE = "history.jsonl"


def line(record: dict) -> str:
    return standard_json.dumps(record) + "\n"


def read_history(out_dir: Path, meta: dict) -> tuple[list[dict], str | None]:
    """The run's history up to the checkpoint whose metadata is `meta`, and a warning if the history
    file lost entries (deleted or damaged by hand) that the checkpoint cannot restore."""
    epoch = meta["epoch"]
    if "history" in meta:  # format dslc-checkpoint/1 carried the whole history
        return [standard_json.undefined_as_nan(r) for r in meta["history"] if r["epoch"] <= epoch], None
    kept: list[dict] = []
    try:
        with open(out_dir / HISTORY_FILE, encoding="utf-8") as f:
            for text in f:
                record = _parse(text)
                if record is None or record["epoch"] != len(kept) + 1 or record["epoch"] >= epoch:
                    break  # a torn line, a gap, or entries past the checkpoint's (never trusted)
                kept.append(record)
    except (OSError, UnicodeDecodeError):
        pass
    warning = None
    if len(kept) < epoch - 1:
        warning = (f"`{out_dir / HISTORY_FILE}` lacks the entries of epochs {len(kept) + 1} to {epoch - 1}; "
                   "the history continues without them")
    return [*kept, meta["record"]], warning


def last_logged_epoch(out_dir: Path) -> int:
    """The last epoch of the history file's entries in order from epoch 1 (0 for none)."""
    last = 0
    try:
        with open(out_dir / HISTORY_FILE, encoding="utf-8") as f:
            for text in f:
                record = _parse(text)
                if record is None or record["epoch"] != last + 1:
                    break
                last = record["epoch"]
    except (OSError, UnicodeDecodeError):
        pass
    return last


def _parse(text: str) -> dict | None:
    if not text.endswith("\n"):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    epoch = record.get("epoch") if isinstance(record, dict) else None
    return standard_json.undefined_as_nan(record) if isinstance(epoch, int) and not isinstance(epoch, bool) else None


class HistoryLog:
    """Appends to `<run>/history.jsonl`, whose content it first makes equal to `history`."""

    def __init__(self, out_dir: Path, history: list[dict]):
        self.path = out_dir / HISTORY_FILE
        text = "".join(line(r) for r in history)
        try:
            current = self.path.read_text(encoding="utf-8") if self.path.exists() else None
        except (OSError, UnicodeDecodeError):
            current = None
        if current != text and (history or current is not None):
            atomic_write_text(self.path, text)

    def append(self, record: dict) -> None:
        append_bytes(self.path, line(record).encode("utf-8"), lambda: fault_point("history-write"))
