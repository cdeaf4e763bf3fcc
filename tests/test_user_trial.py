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


# ---- CSV files whose header does not name the model's columns ---------------------------------------
XOR_SPECS = [{"name": "x", "dtype": "float32", "shape": ["B", 2], "role": "input"},
             {"name": "y", "dtype": "float32", "shape": ["B", 1], "role": "target"}]


@pytest.mark.parametrize("text, message, hint", [
    ("a,b,label\n0,1,1\n",  # was: "has no array `x` (arrays present: none)"
     "CSV file `{}` has no column for the model's input `x` `float32[B, 2]`: expected `x` or `x_0`, `x_1`",
     "its columns: `a`, `b`, `label`; name them after the model's input or choose them with `inputs=...`"),
    ("x_0;x_1;y\n0;1;1\n",
     "CSV file `{}` has no column for the model's input `x` `float32[B, 2]`: expected `x` or `x_0`, `x_1`",
     "the header is one column: dslc reads comma-separated values; write `,` between the fields, not `;`"),
    ("x_0,x_1,z\n0,1,1\n",
     "CSV file `{}` has no column for the model's target `y` `float32[B, 1]`: expected `y`",
     "its columns: `x_0`, `x_1`, `z`; name them after the model's target or choose them with `target=...`"),
    ("x_0,x_1,y,x_0\n0,1,1,5\n",  # was: the first `x_0` read, the other ignored
     "CSV file `{}` has 2 columns named `x_0` (columns 1, 4)", "give each column its own name in the header row"),
])
def test_csv_errors_name_the_columns_the_model_wants(tmp_path, text, message, hint):
    from dslc.runtime.data import load_data

    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(DataError) as e:
        load_data(path, XOR_SPECS)
    assert (e.value.message, e.value.hint) == (message.format(path), hint)
