"""Findings of trying dslc as a new user (Keras/PyTorch habits): each test is one finding's regression."""
from __future__ import annotations

import pytest

from dslc.diagnostics import DataError
from dslc.runtime.callbacks import EarlyStopping


# ---- early stopping: Keras's `val_acc` ----------------------------------------------------------------
@pytest.mark.parametrize("monitor, names, validated, hint", [
    # no validation data: the hint names a value the run logs, not `acc` (which it does not)
    ("val_acc", ["loss", "accuracy"], False, "pass validation data (`val=...` or `val_split=...`), or monitor `accuracy`"),
    ("val_loss", ["loss", "accuracy"], False, "pass validation data (`val=...` or `val_split=...`), or monitor `loss`"),
    ("val_gap", ["loss", "accuracy"], False, "pass validation data (`val=...` or `val_split=...`)"),
    ("val_acc", ["loss", "accuracy", "val_loss", "val_accuracy"], True, "did you mean `val_accuracy`?"),
])
def test_early_stopping_hints_name_what_the_run_logs(monitor, names, validated, hint):
    stopping = EarlyStopping.parse(f"monitor={monitor}")
    with pytest.raises(DataError) as e:
        stopping.resolve(names, validated)
    assert e.value.message == f"early stopping monitors `{monitor}`, which the run does not log"
    assert e.value.hint == hint
