"""Data formats besides `.npz`: a folder of `.npy` files (memory-mapped) and CSV; each error names the
file, the array or column, and the index."""
from __future__ import annotations

import mmap
import os

import numpy as np
import pytest
from manifest_graphs import linreg_data, linreg_program

from dslc import cli
from dslc.diagnostics import DataError
from dslc.runtime.data import load_data
from dslc.runtime.datafiles import CsvColumns
from dslc.runtime.train import Reporter, fit

SPECS = linreg_program().manifest["graphs"]["train"]["inputs"]  # x f32[B, 3] (input), y f32[B, 1] (target)
DATA = linreg_data(n=30)


def strip(history):
    return [{k: v for k, v in e.items() if k not in ("time", "samples_per_s")} for e in history]


def write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))


def test_a_folder_of_npy_files_is_memory_mapped_and_trains_like_the_npz(tmp_path):
    (tmp_path / "d").mkdir()
    for name, array in DATA.items():
        np.save(tmp_path / "d" / f"{name}.npy", array)
    np.save(tmp_path / "d" / "unused.npy", np.zeros(2))  # arrays the model does not read are ignored
    arrays = load_data(tmp_path / "d", SPECS)
    base = arrays["x"]
    while getattr(base, "base", None) is not None and not isinstance(base, mmap.mmap):
        base = base.base
    assert isinstance(base, mmap.mmap)  # read from the file, not copied into memory
    a = fit(linreg_program(), tmp_path / "d", epochs=2, batch_size=8, out_dir=tmp_path / "a", reporter=Reporter())
    b = fit(linreg_program(), DATA, epochs=2, batch_size=8, out_dir=tmp_path / "b", reporter=Reporter())
    assert strip(a) == strip(b)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="training data folder `.*empty` holds no `.npy` files"):
        load_data(tmp_path / "empty", SPECS)
    os.mkfifo(tmp_path / "empty" / "x.npy")  # refused, not read (a read would block)
    with pytest.raises(DataError, match="cannot read training data `.*x.npy`: it is not a regular file"):
        load_data(tmp_path / "empty", SPECS)
    np.save(tmp_path / "d" / "y.npy", np.ones((29, 1), np.float32))
    with pytest.raises(DataError, match="arrays in training data `.*d` disagree on dimension `B`"):
        load_data(tmp_path / "d", SPECS)


def test_memory_mapped_data_is_split_and_converted_by_batch_never_held_whole(tmp_path, monkeypatch):
    """A float64 `.npy` folder for a float32 model, with `--val-split`: the arrays stay mapped (the split
    is an index, the conversion per batch), Python's allocations stay far below the data's size, and the
    run is the run on the same arrays in memory, bit for bit (fingerprint included)."""
    import tracemalloc

    from dslc.runtime import rows
    from dslc.runtime.datafiles import split_validation
    from dslc.runtime.rows import RowView

    monkeypatch.setattr(rows, "BLOCK_BYTES", 2**20)  # whole-array passes read 1 MiB at a time (16 MiB normally)
    n, features = 60_000, 64
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(n, features)), "y": rng.normal(size=(n, 1))}  # float64: 30.7 MB and 0.5 MB
    (tmp_path / "d").mkdir()
    for name, array in data.items():
        np.save(tmp_path / "d" / f"{name}.npy", array)
    specs = linreg_program(features=features).manifest["graphs"]["train"]["inputs"]
    arrays = load_data(tmp_path / "d", specs)
    assert all(isinstance(a, RowView) and isinstance(a.base, np.memmap) and a.dtype == np.float32
               for a in arrays.values())
    train, val = split_validation(arrays, 0.1, seed=5)
    assert isinstance(train["x"], RowView) and isinstance(val["x"].base, np.memmap) and len(val["x"]) == 6_000
    held = split_validation({"i": np.arange(n)}, 0.1, seed=5)[1]["i"]  # the held-out rows, in order
    assert np.array_equal(val["x"][[0, 5]], data["x"][held[[0, 5]]].astype(np.float32))

    run = lambda source, name: fit(linreg_program(features=features), source, epochs=1, batch_size=1024,
                                   seed=5, val_split=0.1, out_dir=tmp_path / name, reporter=Reporter())
    in_memory = run(data, "in_memory")  # first: the modules the loop imports are not counted below
    tracemalloc.start()
    mapped = run(tmp_path / "d", "mapped")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < data["x"].nbytes / 8, f"{peak / 2**20:.1f} MiB allocated for {data['x'].nbytes / 2**20:.1f} MiB"
    assert strip(mapped) == strip(in_memory)
    from dslc.runtime.checkpoint import load_checkpoint
    a, b = load_checkpoint(tmp_path / "mapped" / "checkpoint.npz"), load_checkpoint(tmp_path / "in_memory" / "checkpoint.npz")
    assert a.meta["data"] == b.meta["data"] and all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


def test_memory_mapped_checks_name_the_row_past_the_first_block(tmp_path, monkeypatch):
    from dslc.runtime import rows

    monkeypatch.setattr(rows, "BLOCK_BYTES", 8 * 3 * 4)  # 4 rows of x a block
    (tmp_path / "d").mkdir()
    x = DATA["x"].astype(np.float64)
    x[13, 2] = np.nan
    np.save(tmp_path / "d" / "x.npy", x)
    np.save(tmp_path / "d" / "y.npy", DATA["y"])
    with pytest.raises(DataError, match=r"array `x` in training data `.*d` contains nan at index \(13, 2\)"):
        load_data(tmp_path / "d", SPECS)


def test_csv_with_columns_named_after_the_model(tmp_path):
    rows = np.concatenate([DATA["x"], DATA["y"]], axis=1)
    write_csv(tmp_path / "t.csv", ["x_0", "x_1", "x_2", "y"], [[repr(float(v)) for v in r] for r in rows])
    arrays = load_data(tmp_path / "t.csv", SPECS)
    np.testing.assert_array_equal(arrays["x"], DATA["x"])
    np.testing.assert_array_equal(arrays["y"], DATA["y"])


def test_csv_with_chosen_columns_trains_like_the_arrays(tmp_path):
    rows = np.concatenate([DATA["y"], DATA["x"][:, ::-1]], axis=1)  # columns in another order
    write_csv(tmp_path / "t.csv", ["label", "c", "b", "a"], [[repr(float(v)) for v in r] for r in rows])
    source = CsvColumns(str(tmp_path / "t.csv"), inputs=("a", "b", "c"), target=("label",))
    a = fit(linreg_program(), source, epochs=2, batch_size=8, out_dir=tmp_path / "a", reporter=Reporter())
    b = fit(linreg_program(), DATA, epochs=2, batch_size=8, out_dir=tmp_path / "b", reporter=Reporter())
    assert strip(a) == strip(b)


@pytest.mark.parametrize("header, rows, columns, message", [
    (["a", "b", "c", "label"], [[1, 2, 3, 4], [1, "abc", 3, 4]], ("a", "b", "c"),
     "CSV file `{}` column `b` row 1 (line 3): `abc` is not a number"),
    (["a", "b", "c", "label"], [[1, 2, 3, 4], [1, 2, 3]], ("a", "b", "c"),
     "CSV file `{}` row 1 (line 3) has 3 fields, the header 4"),
    (["a", "b", "c", "label"], [[1, 2, 3, 4]], ("a", "bb", "c"), "CSV file `{}` has no column `bb`"),
    (["a", "b", "c", "label"], [[1, 2, 3, 4], [1, 2, 3, "nan"]], ("a", "b", "c"),  # was "array `y` ... index (1, 0)"
     "CSV file `{}` column `label` row 1 (line 3): `nan` is not a finite number"),
    (["a", "b", "c", "label"], [[1, 2, 3, 4], [1, " ", 3, 4]], ("a", "b", "c"),  # was "`` is not a number"
     "CSV file `{}` column `b` row 1 (line 3): the field is empty (a missing value)"),
])
def test_csv_errors_name_the_file_column_and_row(tmp_path, header, rows, columns, message):
    write_csv(tmp_path / "t.csv", header, rows)
    with pytest.raises(DataError) as e:
        load_data(CsvColumns(str(tmp_path / "t.csv"), columns, ("label",)), SPECS)
    assert e.value.message == message.format(tmp_path / "t.csv")


def test_csv_on_the_command_line(linreg_cli, tmp_path, capsys):
    rows = np.concatenate([DATA["x"], DATA["y"]], axis=1)
    write_csv(tmp_path / "t.csv", ["p", "q", "r", "out"], [[repr(float(v)) for v in r] for r in rows])
    assert cli.main(["train", "linreg.dl", "--data", "t.csv", "--inputs", "p,q,r", "--target", "out", "--epochs", "1",
                     "--batch-size", "8", "-o", "run", "-q"]) == 0
    assert cli.main(["evaluate", "linreg.dl", "--weights", "run", "--data", "t.csv", "--inputs", "p,q,r",
                     "--target", "out", "--json"]) == 0
    assert '"loss"' in capsys.readouterr().out
    assert cli.main(["predict", "linreg.dl", "--weights", "run", "--input", "t.csv", "--inputs", "p,q,r",
                     "-o", "y.npz"]) == 0
    assert np.load("y.npz")["pred"].shape == (30, 1)
    assert cli.main(["train", "linreg.dl", "--data", "t.npz", "--inputs", "p", "--epochs", "1", "--batch-size", "8",
                     "-o", "r2"]) == 2
    assert "`t.npz` is not a `.csv` file" in capsys.readouterr().err


def test_one_array_for_a_model_that_reads_one(linreg_cli, capsys):
    """Keras's `predict(x)`: a model with one input predicts from an `.npy` file (memory-mapped) or an
    array, as from a dict naming it; where the model reads more (training: inputs and targets), a single
    array is still refused, saying what to save."""
    np.savez("t.npz", **DATA)
    np.save("x.npy", DATA["x"])
    assert cli.main(["train", "linreg.dl", "--data", "t.npz", "--epochs", "1", "--batch-size", "8", "-o", "run",
                     "-q"]) == 0
    assert cli.main(["predict", "linreg.dl", "--weights", "run", "--input", "x.npy", "-o", "from_npy.npz"]) == 0
    assert cli.main(["predict", "linreg.dl", "--weights", "run", "--input", "t.npz", "-o", "from_npz.npz"]) == 0
    np.testing.assert_array_equal(np.load("from_npy.npz")["pred"], np.load("from_npz.npz")["pred"])
    capsys.readouterr()
    assert cli.main(["predict", "linreg.dl", "--weights", "run", "--input", "missing.npy", "-o", "p.npz"]) == 3
    assert capsys.readouterr().err == "error: cannot read input data `missing.npy`: no such file\n"
    assert cli.main(["train", "linreg.dl", "--data", "x.npy", "--epochs", "1", "--batch-size", "8", "-o", "r2"]) == 3
    assert "it is a single `.npy` array, expected an `.npz` archive of named arrays" in capsys.readouterr().err
    spec = [{"name": "x", "dtype": "float32", "shape": ["B", 3], "role": "input"}]
    mapped = load_data("x.npy", spec, "input data")["x"]
    assert isinstance(mapped, np.memmap)  # read as batches need it
    np.testing.assert_array_equal(load_data(DATA["x"], spec, "input data")["x"], mapped)
