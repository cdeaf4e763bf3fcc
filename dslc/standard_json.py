"""The JSON dslc writes: standard JSON (RFC 8259), which has no NaN or infinity.

Python's `json` writes a non-finite float as the bare words `NaN`, `Infinity` and `-Infinity`, which
JavaScript's `JSON.parse`, `jq` and other strict parsers refuse. dslc writes such a number as `null`, as
Keras's JSON logs (`JSONLogger`) and pandas' `to_json` do: an undefined `auc` (data of one class only)
in `history.jsonl`, the `--log-format jsonl` events, `dslc evaluate --json` and the checkpoint's
metadata; `dslc bench --json`'s `max_abs_diff` of outputs of different shapes. In a history entry a
`null` stands for NaN, and dslc reads it back as NaN (`undefined_as_nan`), as `pandas.read_json` does;
histories written before this rule hold `NaN`, which Python's `json` reads too.

Every `json.dumps` in the package passes `allow_nan=False` (tests/test_standard_json.py checks it), so
a non-finite number that reaches a writer without going through `dumps` here fails loudly.
"""
from __future__ import annotations

import json
import math


def finite(value):
    """`value` with every non-finite float in it (in dicts, lists and tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value, **options) -> str:
    """`json.dumps(value, **options)` with non-finite floats written as `null`."""
    return json.dumps(finite(value), allow_nan=False, **options)


def undefined_as_nan(record: dict) -> dict:
    """A history entry read back from JSON: its `null` values (undefined metrics) as NaN, the value the
    run that wrote it held."""
    return {k: (math.nan if v is None else v) for k, v in record.items()}
