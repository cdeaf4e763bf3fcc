"""`write_npz` writes what `numpy.savez` writes: the same members, `.npy` headers and bytes, read back alike
by `numpy.load`, `zipfile` (CRCs checked) and dslc's own reader."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from dslc.runtime import npz_writer
from dslc.runtime.npz import NpzArchive
from dslc.runtime.npz_writer import write_npz

ARRAYS = {
    "param/dense_0.weight": np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32),
    "param/dense_0.bias": np.zeros(128, np.float32),
    "state/opt.step": np.array(7, np.int64),
    "state/adam.m": np.arange(6, dtype=np.float64).reshape(2, 3),
    "empty": np.zeros((0, 4), np.float32),
    "mask": np.array([True, False, True]),
    "big_endian": np.arange(5, dtype=">i4"),
    "fortran": np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
    "meta": np.array(json.dumps({"epoch": 3, "record": {"loss": 0.25, "name": "é"}})),
    "param/été_0.weight": np.ones((2, 2), np.float32),  # a layer named in another script: a UTF-8 member name
}


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.testzip() is None  # every CRC right
        assert all(info.compress_type == zipfile.ZIP_STORED for info in z.infolist())
        return {info.filename: z.read(info) for info in z.infolist()}


def test_members_are_numpy_savez_s_byte_for_byte_and_read_back(tmp_path):
    ours, theirs = io.BytesIO(), io.BytesIO()
    write_npz(ours, ARRAYS)
    np.savez(theirs, **ARRAYS)
    assert members(ours.getvalue()) == members(theirs.getvalue())
    loaded = np.load(io.BytesIO(ours.getvalue()))
    for name, value in ARRAYS.items():
        assert loaded[name].dtype == value.dtype and np.array_equal(loaded[name], value)
    path = tmp_path / "x.npz"
    path.write_bytes(ours.getvalue())
    with NpzArchive(path, "checkpoint", "") as archive:
        assert list(archive) == list(ARRAYS)
        assert all(np.array_equal(archive[name], value) for name, value in ARRAYS.items())


def test_object_arrays_and_archives_too_large_for_zip32_go_through_numpy_savez(monkeypatch):
    used = []
    monkeypatch.setattr(npz_writer.np, "savez", lambda f, **arrays: used.append(sorted(arrays)))
    write_npz(io.BytesIO(), {"x": np.zeros(3)})
    assert used == []
    write_npz(io.BytesIO(), {"x": np.array([{"a": 1}], dtype=object)})
    monkeypatch.setattr(npz_writer, "ZIP32_LIMIT", 10_000)
    write_npz(io.BytesIO(), {"x": np.zeros(2000)})
    assert used == [["x"], ["x"]]


@pytest.mark.parametrize("epochs", [1, 3])
def test_checkpoints_written_by_the_loop_load_as_before(tmp_path, epochs):
    from manifest_graphs import linreg_data, linreg_program

    from dslc.runtime.checkpoint import load_checkpoint
    from dslc.runtime.train import Reporter, fit

    program, d = linreg_program(), linreg_data(n=20)
    history = fit(program, d, epochs=epochs, batch_size=8, out_dir=tmp_path, reporter=Reporter())
    ckpt = load_checkpoint(tmp_path, program.manifest)
    assert ckpt.meta["epoch"] == epochs and ckpt.meta["record"] == history[-1]
    assert set(np.load(tmp_path / "checkpoint.npz")) == {f"param/{k}" for k in ckpt.params} | \
        {f"state/{k}" for k in ckpt.state} | {"meta"}
