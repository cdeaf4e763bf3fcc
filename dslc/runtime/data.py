"""Loading and checking the arrays a graph is fed: `.npz` files or dicts of numpy arrays.

Each array is checked against its manifest spec `{"name", "dtype", "shape", ["classes"]}`; the first
problem found is raised as a `DataError` that names the array and says what was expected.

Dtype policy (decided here, applied the same way to every verb):
- float inputs (`float16/32/64`) accept any float, integer or bool array, cast to the model's dtype;
  float64 -> float32 is silent, as in Keras. Values must be finite (NaN/inf in data is an error).
- integer inputs and targets (`int32/int64`...) accept any integer or bool array whose values fit, and
  float arrays whose values are all whole numbers (labels saved as floats); other floats are an error.
- bool inputs accept only bool arrays.
- anything else (strings, objects, complex) is an error.
- integer specs with `"classes": K` must hold values in `[0, K)`.
- specs with `"range": [lo, hi]` (probability targets) must hold values in `[lo, hi]`.
- specs with `"sample_weight"` (a loss's per-example weights) must hold values >= 0.
Symbolic dims (`B`, `T`...) take their size from the first array that has them; every other array
with the same symbol must agree. Arrays the model does not read are ignored.
"""
from __future__ import annotations

import difflib
import numbers
import os
from collections.abc import Iterable, Mapping

import numpy as np

from dslc.diagnostics import DataError
from dslc.runtime.rows import RowView, row_blocks
from dslc.spelling import option


def check_count(value, argument: str, what: str, minimum: int = 1) -> int:
    """`value` as an `int`, or `DataError` naming the Python `argument` unless it is an integer (not a
    bool, a float or a string) of at least `minimum`; `what` names it in the range message."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DataError(f"`{argument}` must be an integer, got {value!r} (`{type(value).__name__}`)")
    if value < minimum:
        raise DataError(f"{what} must be at least {minimum}, got {value}")
    return int(value)


def format_shape(dims) -> str:
    """`[B, 784]` for a spec shape, `[32, 784]` for an actual one."""
    return "[" + ", ".join(str(d) for d in dims) + "]"


def describe(spec: dict) -> str:
    return f"`{spec['name']}` `{spec['dtype']}{format_shape(spec['shape'])}`"


def open_npz(path: str | os.PathLike, what: str = "data", names: Iterable[str] = (), hint: str = ""):
    """The `.npz` file at `path` as a lazy `NpzArchive` (a context manager), or `DataError` saying why it
    cannot be read. `names` (the arrays the caller wants) only make the default hint concrete; `hint`
    replaces it (e.g. for checkpoints, which dslc writes itself)."""
    from dslc.runtime.npz import NpzArchive

    hint = hint or f"save the arrays with `numpy.savez(path, {', '.join(f'{n}=...' for n in names) or 'name=array, ...'})`"
    return NpzArchive(path, what, hint)


def read_bytes(path: str | os.PathLike, what: str) -> bytes:
    """The whole file, or `DataError` naming it (or saying it is a FIFO, a device...: not read)."""
    from dslc.runtime.npz import open_regular_file

    try:
        with open_regular_file(path, what, hint="pass the path of a file") as f:
            return f.read()
    except OSError as e:
        raise DataError(f"cannot read {what} `{os.fspath(path)}`: {e.strerror or e}") from None


def load_npz(path: str | os.PathLike, specs: list[dict], what: str = "training data") -> dict[str, np.ndarray]:
    """The arrays of `path` named by `specs`, checked and cast (see the module docstring); the other
    members of the archive are never read."""
    with open_npz(path, what, [s["name"] for s in specs]) as archive:
        return check_arrays(archive, specs, f"{what} `{os.fspath(path)}`")


def load_data(source, specs: list[dict], what: str = "training data") -> dict[str, np.ndarray]:
    """`source` is an `.npz` path, a folder of `.npy` files, a `.csv` path (or `datafiles.CsvColumns`),
    or a mapping of arrays; for a model that reads one array (`specs` has one), also an `.npy` path or an
    array. Returns the checked arrays."""
    from dslc.runtime import datafiles

    if isinstance(source, datafiles.CsvColumns) or (
            isinstance(source, (str, os.PathLike)) and os.fspath(source).lower().endswith(".csv")):
        path = source.path if isinstance(source, datafiles.CsvColumns) else os.fspath(source)
        return check_arrays(datafiles.read_csv_columns(source, specs), specs, f"{what} `{path}`")
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        return check_arrays(datafiles.read_npy_folder(source, what), specs, f"{what} `{os.fspath(source)}`")
    if len(specs) == 1 and isinstance(source, np.ndarray):  # one array for the model's one (Keras's `predict(x)`)
        return check_arrays({specs[0]["name"]: source}, specs, what)
    if len(specs) == 1 and isinstance(source, (str, os.PathLike)) and os.fspath(source).lower().endswith(".npy"):
        arrays = datafiles.read_npy_file(source, specs[0]["name"], what)
        return check_arrays(arrays, specs, f"{what} `{os.fspath(source)}`")
    if isinstance(source, (str, os.PathLike)):
        return load_npz(source, specs, what)
    if isinstance(source, Mapping):
        bad = next((k for k in source if not isinstance(k, str)), None)
        if bad is not None:
            raise DataError(f"{what} must map array names (strings) to arrays, got the key {bad!r}",
                            hint=f"the model reads {', '.join(describe(s) for s in specs)}")
        return check_arrays(source, specs, what)
    named = ", ".join(f'"{s["name"]}": ...' for s in specs)  # Keras's `fit((x, y))`, `predict(x)`
    raise DataError(f"{what} must be an `.npz` path, a folder of `.npy` files, a `.csv` path or a dict of arrays, "
                    f"not `{type(source).__name__}`", hint=f"name each array after the model's: {{{named}}}")


def check_arrays(arrays: Mapping[str, object], specs: list[dict], where: str) -> dict[str, np.ndarray]:
    """Check each spec'd array of `arrays` (named in messages as `where`) and return them cast."""
    out: dict[str, np.ndarray] = {}
    sizes: dict[str, tuple[int, str]] = {}  # symbol -> (size, array that fixed it)
    for spec in specs:
        name = spec["name"]
        if name not in arrays:
            present = ", ".join(f"`{k}`" for k in arrays) or "none"
            close = difflib.get_close_matches(name, sorted(arrays), n=1, cutoff=0.6)
            hint = (f"the data has `{close[0]}` but the model reads `{name}`: rename `{close[0]}` to `{name}`"
                    if close else f"the model reads {', '.join(describe(s) for s in specs)}")
            if "sample_weight" in spec:
                hint = (f"`{name}` holds the loss's per-example weights (its `sample_weight`): add one weight per "
                        f"example, `numpy.ones(n)` weighting every example the same; {hint}")
            raise DataError(f"{where} has no array `{name}` (arrays present: {present})", hint=hint)
        array = arrays[name]
        if isinstance(array, (np.memmap, RowView)) and array.ndim:  # larger than memory: checked block by block
            _check_shape(array, spec, where, sizes)
            out[name] = _mapped(array, spec, where)
            continue
        try:
            array = np.asarray(array)
        except (ValueError, TypeError, RuntimeError) as e:  # ragged nested lists; a tensor that requires grad
            raise DataError(f"array `{name}` in {where} is not a regular array ({e})",
                            hint="every row must have the same shape; pass numpy arrays") from None
        _check_shape(array, spec, where, sizes)
        out[name] = _checked(array, spec, where)
    return out


def _checked(array: np.ndarray, spec: dict, where: str, first_row: int = 0) -> np.ndarray:
    """`array` (rows from `first_row` on of the named array) cast to its spec's dtype, its values checked."""
    out = _cast(array, spec, where, first_row)
    if "classes" in spec and np.issubdtype(out.dtype, np.integer):
        _check_labels(out, spec["classes"], spec["name"], where, spec.get("role") == "target", first_row)
    if "range" in spec:
        _check_range(out, *spec["range"], spec["name"], where, first_row)
    if "sample_weight" in spec:
        _check_weights(out, spec["name"], where, first_row)
    return out


def _check_weights(values: np.ndarray, name: str, where: str, first_row: int = 0) -> None:
    bad = values < 0
    if bad.any():
        at = _index(bad, values.shape, first_row)
        raise DataError(f"negative weight {values[bad][0]} in array `{name}` at index {at}",
                        hint=f"`{name}` holds the loss's per-example weights (`sample_weight`), which must be >= 0 "
                             f"(0 leaves an example out); check {where}")


def _mapped(array, spec: dict, where: str):
    """A memory-mapped array (or a `RowView` of one) checked a block of rows at a time (never whole in
    memory), and kept mapped: as it is in the model's dtype, else a `RowView` converting each batch as it
    is read."""
    for start, block in row_blocks(array):
        _checked(block, spec, where, start)
    want = np.dtype(spec["dtype"])
    return array if array.dtype == want else RowView(array, want)


def _check_shape(array: np.ndarray, spec: dict, where: str, sizes: dict) -> None:
    name, expected = spec["name"], spec["shape"]
    mismatch = array.ndim != len(expected) or any(
        isinstance(d, int) and d != n for d, n in zip(expected, array.shape)
    )
    if mismatch:
        raise DataError(
            f"array `{name}` in {where} has shape `{format_shape(array.shape)}`, "
            f"expected `{format_shape(expected)}`", hint=_shape_hint(tuple(array.shape), spec)
        )
    for axis, (d, n) in enumerate(zip(expected, array.shape)):
        if isinstance(d, str):
            if d not in sizes:
                sizes[d] = (n, name)
            elif sizes[d][0] != n:
                other_n, other = sizes[d]
                raise DataError(
                    f"arrays in {where} disagree on dimension `{d}`: "
                    f"`{other}` has {d} = {other_n} but `{name}` has {d} = {n}",
                    hint=f"`{d}` must be the same size in every array"
                    + (" (it is the number of samples)" if axis == 0 else ""),
                )


def _shape_hint(shape: tuple, spec: dict) -> str:
    """The fix of the shape mistakes of habit: one example without its batch axis, labels as a column or
    one-hot rows where the model reads class indices, a column vector's axis left out."""
    name, expected = spec["name"], spec["shape"]
    fits = lambda have, want: len(have) == len(want) and all(not isinstance(d, int) or d == n  # noqa: E731
                                                             for d, n in zip(want, have))
    if fits((1, *shape), expected):
        return f"one example needs its batch axis too: `{name}[None]` (or `{name}.reshape(1, ...)`)"
    if shape and shape[-1] == 1 and fits(shape[:-1], expected):
        return f"`{name}` holds {format_shape(expected)}: drop the last axis, `{name}[..., 0]` (or `{name}.ravel()`)"
    if shape and "classes" in spec and shape[-1] == spec["classes"] and fits(shape[:-1], expected):
        return (f"these look like one-hot rows, but `{name}` holds class indices: pass `{name}.argmax(-1)`, or declare "
                f"the target `f32{format_shape([*expected, spec['classes']])}` for probability targets")
    if expected and expected[-1] == 1 and fits((*shape, 1), expected):
        return (f"`{name}` holds {format_shape(expected)}: add the last axis, `{name}[..., None]` "
                f"(or `{name}.reshape(-1, 1)`)")
    return ""


def _cast(array: np.ndarray, spec: dict, where: str, first_row: int = 0) -> np.ndarray:
    name, want = spec["name"], np.dtype(spec["dtype"])
    have = array.dtype
    wrong = f"array `{name}` in {where} has dtype `{have}`, expected `{want}`"
    if np.issubdtype(want, np.floating):
        if not (np.issubdtype(have, np.floating) or np.issubdtype(have, np.integer) or have == np.bool_):
            raise DataError(wrong)
        with np.errstate(over="ignore", invalid="ignore"):  # values too large for `want` become inf: see below
            out = np.asarray(array, dtype=want, order="C")
        bad = non_finite_mask(out)
        if bad is not None:
            at, value = _index(bad, array.shape, first_row), array[bad][0]
            if np.isfinite(value):
                larger = f" or compile with {option('dtype', 'float64')}" if want == np.float32 else ""
                raise DataError(
                    f"array `{name}` in {where} has the value {value} at index {at}, which does not fit in `{want}`",
                    hint=f"`{want}` holds magnitudes up to {np.finfo(want).max:.3g}; rescale the data{larger}",
                )
            raise DataError(f"array `{name}` in {where} contains {value} at index {at}",
                            hint="the data must be finite; replace or drop the NaN/inf entries")
        return out
    if np.issubdtype(want, np.integer):
        if np.issubdtype(have, np.floating):
            whole = np.isfinite(array) & (np.floor(array) == array)
            if not whole.all():
                at = _index(~whole, array.shape, first_row)
                raise DataError(
                    f"array `{name}` in {where} has dtype `{have}` with the non-integer value "
                    f"{array[~whole][0]} at index {at}, expected `{want}`",
                    hint=f"`{name}` holds integers (e.g. class indices)",
                )
        elif not (np.issubdtype(have, np.integer) or have == np.bool_):
            raise DataError(wrong)
        if array.size and have != np.bool_:
            info = np.iinfo(want)
            lo, hi = array.min(), array.max()
            if lo < info.min or hi > info.max:
                raise DataError(f"array `{name}` in {where} has values from {lo} to {hi}, which do not fit in `{want}`")
        return np.asarray(array, dtype=want, order="C")
    if want == np.bool_ and have == np.bool_:
        return np.asarray(array, order="C")
    raise DataError(wrong)


def _check_labels(labels: np.ndarray, classes: int, name: str, where: str, target: bool, first_row: int = 0) -> None:
    bad = (labels < 0) | (labels >= classes)
    if bad.any():
        value, at = labels[bad][0], _index(bad, labels.shape, first_row)
        if target:
            raise DataError(
                f"label {value} out of range for {classes} classes in array `{name}` at index {at}",
                hint=f"class labels must lie in 0..{classes - 1}; check {where}",
            )
        raise DataError(
            f"id {value} out of range for {classes} entries in array `{name}` at index {at}",
            hint=f"ids (e.g. of an `embedding`) must lie in 0..{classes - 1}; check {where}",
        )


def _check_range(values: np.ndarray, lo: float, hi: float, name: str, where: str, first_row: int = 0) -> None:
    bad = (values < lo) | (values > hi)
    if bad.any():
        at = _index(bad, values.shape, first_row)
        raise DataError(
            f"value {values[bad][0]} out of range [{lo}, {hi}] in array `{name}` at index {at}",
            hint=f"`{name}` holds probabilities (e.g. 0/1 labels), which must lie in [{lo}, {hi}]; check {where}",
        )


def check_finite(array: np.ndarray, name: str, where: str, hint: str) -> None:
    """`DataError` at the first NaN/inf of float `array`."""
    bad = non_finite_mask(array)
    if bad is not None:
        raise DataError(f"array `{name}` in {where} contains {array[bad][0]} at index {_index(bad, array.shape)}",
                        hint=hint)


def non_finite_mask(array: np.ndarray) -> np.ndarray | None:
    """The mask of the NaN/inf entries of float `array`, or None when every entry is finite."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(array.sum()):  # fast path: NaN/inf make the sum non-finite (6x faster than isfinite)
            return None
    bad = ~np.isfinite(array)  # the sum may also have overflowed: look at each value
    return bad if bad.any() else None


def _index(mask: np.ndarray, shape, first_row: int = 0) -> str:
    """Position of the first True in `mask`: `57` for 1-D arrays, `(3, 5)` otherwise; `mask` covers the
    rows from `first_row` on."""
    flat = int(np.flatnonzero(mask)[0])
    if len(shape) == 1:
        return str(flat + first_row)
    at = [int(i) for i in np.unravel_index(flat, shape)]
    return str(tuple([at[0] + first_row, *at[1:]]))


def num_rows(arrays: Mapping[str, np.ndarray]) -> int:
    """The common length of axis 0, or `DataError` if the arrays disagree."""
    lengths = {name: a.shape[0] if a.ndim else 0 for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"`{k}` has {v}" for k, v in lengths.items())
        raise DataError(f"arrays have different numbers of samples: {listing}")
    return next(iter(lengths.values()), 0)
