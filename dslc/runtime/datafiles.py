"""Data beyond `.npz` files: the validation split held out of the training data, a folder of `.npy`
files (memory-mapped), and CSV files. `data.load_data` reads them all; every error names the file, the
array or column and the index.
"""
from __future__ import annotations

import csv
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dslc.diagnostics import DataError, suggest
from dslc.runtime.data import num_rows
from dslc.runtime.rows import take_rows

SPLIT_STREAM = 0x5E1F  # the split's random stream, apart from the epochs' (`epoch_order` uses [seed, epoch])


def split_validation(arrays: Mapping[str, np.ndarray], fraction: float,
                     seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(training, validation) arrays: `n - int(n * (1 - fraction))` samples (Keras's count) go to
    validation, the ones `np.random.default_rng([seed, SPLIT_STREAM]).permutation(n)` lists first; both
    parts keep the data's order. A function of the seed alone, so a resumed run validates on the same
    samples. Memory-mapped data is split by index (`rows.RowView`), not copied."""
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction < 1:
        raise DataError(f"the validation split must be a fraction between 0 and 1, got {fraction!r}",
                        hint="e.g. 0.1 holds out 10% of the training samples")
    n = num_rows(arrays)
    n_val = n - int(n * (1 - fraction))
    if n_val >= n:  # n_val >= 1 for any fraction > 0
        raise DataError(f"a validation split of {fraction:g} of {n} samples leaves no training sample",
                        hint="use a smaller split")
    held = np.zeros(n, bool)
    held[np.random.default_rng([seed, SPLIT_STREAM]).permutation(n)[:n_val]] = True
    kept, val = np.flatnonzero(~held), np.flatnonzero(held)
    return ({k: take_rows(a, kept) for k, a in arrays.items()}, {k: take_rows(a, val) for k, a in arrays.items()})


# ---- a folder of `.npy` files ------------------------------------------------------------------------
def read_npy_folder(path: str | os.PathLike, what: str = "data") -> Mapping[str, np.ndarray]:
    """`<name>.npy` of folder `path` as arrays named `<name>`, memory-mapped (read from disk as batches
    need them, so the data may be larger than memory; in another dtype than the model's, each batch is
    converted as it is read: `data.check_arrays`). A file is opened when its array is looked up: files
    the model does not read are never opened (a folder may hold other `.npy` files, as an `.npz` may
    hold other arrays)."""
    folder = Path(path)
    files = sorted(folder.glob("*.npy"))
    if not files:
        raise DataError(f"{what} folder `{folder}` holds no `.npy` files",
                        hint="save one array per file, named after the model's inputs: `numpy.save(\"x.npy\", x)`")
    return _NpyFolder({file.stem: file for file in files}, what)



def read_npy_file(path: str | os.PathLike, name: str, what: str = "data") -> Mapping[str, np.ndarray]:
    """The `.npy` file `path` as the one array `name` of a model that reads one (Keras's `predict(x)`),
    memory-mapped as the arrays of a folder are."""
    file = Path(path)
    if not file.exists():
        raise DataError(f"cannot read {what} `{file}`: no such file")
    return _NpyFolder({name: file}, what)


class _NpyFolder(Mapping):
    """name -> the memory-mapped array of `<name>.npy`, each file checked and opened when looked up."""

    def __init__(self, files: dict[str, Path], what: str):
        self.files, self.what = files, what

    def __getitem__(self, name: str) -> np.ndarray:
        file, what = self.files[name], self.what
        if not file.is_file():  # a FIFO would block the read
            raise DataError(f"cannot read {what} `{file}`: it is not a regular file")
        try:
            with open(file, "rb") as f:
                magic = f.read(6)
            if magic != b"\x93NUMPY":  # numpy would call it pickled data and suggest `allow_pickle`
                raise DataError(f"cannot read {what} `{file}`: it is not an `.npy` file (it does not start with the "
                                "`.npy` signature)", hint="save it with `numpy.save`")
            return np.load(file, mmap_mode="r", allow_pickle=False)
        except OSError as e:
            raise DataError(f"cannot read `{file}`: {e.strerror or e}") from None
        except ValueError as e:  # object arrays, a damaged header
            raise DataError(f"cannot read {what} `{file}`: not a valid `.npy` array ({e})",
                            hint="save it with `numpy.save`") from None

    def __iter__(self):
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


# ---- CSV ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CsvColumns:
    """A CSV file with a header row, and which columns feed the model: `inputs` are stacked (in this
    order) into its one data input, `target` into its one target. Without them, each input or target
    `name` reads the column `name` (a `[B]` or `[B, 1]` array) or the columns `name_0`, `name_1`, ...
    (a `[B, K]` array)."""
    path: str
    inputs: tuple[str, ...] = ()
    target: tuple[str, ...] = ()


def _read_csv(path: str) -> tuple[list[str], list[list[str]], list[int]]:
    """The header, the rows after it that are not blank, and the line each of those rows ends on."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows, lines = [], []
            for row in reader:
                rows.append(row)
                lines.append(reader.line_num)
    except OSError as e:
        raise DataError(f"cannot read `{path}`: {e.strerror or e}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read `{path}` as CSV ({e})") from None
    if not rows:
        raise DataError(f"CSV file `{path}` is empty", hint="the first row names the columns")
    header = [h.strip() for h in rows[0]]
    kept = [i for i in range(1, len(rows)) if rows[i]]  # blank lines (a trailing one) are no rows
    body, lines = [rows[i] for i in kept], [lines[i] for i in kept]  # numbered as the file's lines, blanks too
    for i, row in enumerate(body):
        if len(row) != len(header):
            raise DataError(f"CSV file `{path}` row {i} (line {lines[i]}) has {len(row)} fields, "
                            f"the header {len(header)}")
    return header, body, lines


def _column(path: str, header: list[str], body: list[list[str]], lines: list[int], name: str) -> np.ndarray:
    index = header.index(name)
    values = np.empty(len(body))
    for i, row in enumerate(body):
        text = row[index].strip()
        place = f"CSV file `{path}` column `{name}` row {i} (line {lines[i]})"
        try:
            values[i] = float(text)
        except ValueError:
            what = "the field is empty (a missing value)" if not text else f"`{text}` is not a number"
            raise DataError(f"{place}: {what}",
                            hint="every column the model reads holds numbers (class labels as 0, 1, ...)") from None
        if not np.isfinite(values[i]):  # `nan`, `inf`: named where the file has them, not as an array index
            raise DataError(f"{place}: `{text}` is not a finite number",
                            hint="the data must be finite; replace or drop the NaN/inf entries")
    return values


def read_csv_columns(source: CsvColumns | str | os.PathLike, specs: list[dict]) -> dict[str, np.ndarray]:
    """The model's arrays from a CSV file (see `CsvColumns`)."""
    from dslc.spelling import option

    if not isinstance(source, CsvColumns):
        source = CsvColumns(os.fspath(source))
    path = source.path
    header, body, lines = _read_csv(path)
    chosen: dict[str, tuple[str, ...]] = {}
    for role, names, flag in (("input", source.inputs, "inputs"), ("target", source.target, "target")):
        if not names:
            continue
        of_role = [s for s in specs if s.get("role", "input") == role]
        if len(of_role) != 1:
            listing = ", ".join(f"`{s['name']}`" for s in of_role) or "none"
            raise DataError(f"{option(flag)} needs a model with one {role}; this one has {listing}",
                            hint=f"name the CSV columns after the model's {role}s instead")
        chosen[of_role[0]["name"]] = tuple(names)
    arrays = {}
    for spec in specs:
        name, shape = spec["name"], spec["shape"]
        columns = chosen.get(name)
        if columns is None:
            width = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
            if name in header:
                columns = (name,)
            elif width and all(f"{name}_{k}" in header for k in range(width)):
                columns = tuple(f"{name}_{k}" for k in range(width))
            else:
                raise _no_columns_for(path, header, spec, width, specs)
        for column in columns:
            if column not in header:
                close = suggest(column, header)
                raise DataError(f"CSV file `{path}` has no column `{column}`",
                                hint=close or f"its columns: {_listing(header)}")
            if header.count(column) > 1:  # `header.index` would silently read the first of them
                places = ", ".join(str(i + 1) for i, h in enumerate(header) if h == column)
                raise DataError(f"CSV file `{path}` has {header.count(column)} columns named `{column}` "
                                f"(columns {places})", hint="give each column its own name in the header row")
        stacked = np.stack([_column(path, header, body, lines, c) for c in columns], axis=1)
        arrays[name] = stacked[:, 0] if len(shape) == 1 else stacked
    return arrays


def _listing(header: list[str]) -> str:
    return ", ".join(f"`{h}`" for h in header)


def _no_columns_for(path: str, header: list[str], spec: dict, width: int | None, specs: list[dict]) -> DataError:
    """The error for an input or target of the model that no column of the CSV file is named after."""
    from dslc.runtime.data import format_shape
    from dslc.spelling import option

    name = spec["name"]
    numbered = [f"`{name}_{k}`" for k in range(width or 0)]
    wanted = f"`{name}`" + (f" or {', '.join(numbered) if len(numbered) <= 3 else f'{numbered[0]} ... {numbered[-1]}'}"
                            if len(numbered) > 1 else "")
    role = spec.get("role", "input")
    hint = f"its columns: {_listing(header)}"
    separator = next((s for s in ";\t|" if len(header) == 1 and s in header[0]), None)
    if separator is not None:
        shown = "\\t" if separator == "\t" else separator
        hint = f"the header is one column: dslc reads comma-separated values; write `,` between the fields, not `{shown}`"
    elif sum(s.get("role", "input") == role for s in specs) == 1:
        hint += f"; name them after the model's {role} or choose them with {option(role + 's' if role == 'input' else role)}"
    return DataError(f"CSV file `{path}` has no column for the model's {role} `{name}` "
                     f"`{spec['dtype']}{format_shape(spec['shape'])}`: expected {wanted}", hint=hint)
