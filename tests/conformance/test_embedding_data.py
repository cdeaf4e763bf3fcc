"""The embedding examples (examples/python/train.py, examples/node/train.mjs) read data files as `dslc train`
does: float64 features and int32 or whole-float labels are cast (and train as the model's dtypes would), and
what ONNX Runtime would refuse with a message naming no file, or accept and compute wrong, stops with the
same message in both, naming the file, the array and the row, and dslc's exit code for data (3)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from embedding import epoch_lines, node_example
from test_conformance import ROOT

DIGITS = ROOT / "examples/digits/train.npz"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from dslc.compiler import compile_file

    out = tmp_path_factory.mktemp("digits")
    compile_file(ROOT / "examples/digits/digits.dl").build(out)
    return out


def run(example: str, out_dir, data, *args: str, tmp_path) -> subprocess.CompletedProcess:
    if example == "python":
        command = [sys.executable, str(ROOT / "examples/python/train.py")]
    else:
        command = node_example("node", tmp_path)
    return subprocess.run([*command, str(out_dir), str(data), *args], capture_output=True, text=True, timeout=120)


def digits(**changes) -> dict[str, np.ndarray]:
    arrays = dict(np.load(DIGITS))
    for name, change in changes.items():
        arrays[name] = change(arrays[name].copy())
    return arrays


def set_at(row, value):
    def change(array):
        array.reshape(len(array), -1)[row, 0] = value
        return array
    return change


BAD = {
    "a label out of range": (digits(digit=set_at(17, 10)),
                             "data.npz: `digit`, row 17: 10 is outside [0, 10), the manifest's `classes`"),
    "a negative label": (digits(digit=set_at(3, -1)),
                         "data.npz: `digit`, row 3: -1 is outside [0, 10), the manifest's `classes`"),
    "a fractional label": (digits(digit=lambda a: a + 0.5),
                           "data.npz: `digit`, row 0: a fraction, where the model reads int64"),
    "NaN": (digits(image=set_at(5, np.nan)), "data.npz: `image`, row 5: NaN or infinity"),
    "a missing array": ({"image": np.load(DIGITS)["image"], "label": np.load(DIGITS)["digit"]},
                        "data.npz has no array `digit`; it holds `image`, `label`, and the model reads `image`, `digit`"),
    "a wrong width": (digits(image=lambda a: a[:, :60]),
                      "data.npz: `image` has shape [1438, 60]; the model reads [B, 64]"),
    "rows that differ": (digits(image=lambda a: a[:-1]),
                         "data.npz: the arrays have different numbers of rows: `image` 1437, `digit` 1438"),
}


@pytest.mark.parametrize("example", ["python", "node"])
@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_stops_the_examples_with_the_file_array_and_row(example, case, built, tmp_path):
    arrays, message = BAD[case]
    np.savez(tmp_path / "data.npz", **arrays)
    done = run(example, built, tmp_path / "data.npz", tmp_path=tmp_path)
    assert done.returncode == 3, done.stderr
    assert done.stderr.replace(str(tmp_path) + "/", "") == f"error: {message}\n"
    assert done.stdout == ""


@pytest.mark.parametrize("example", ["python", "node"])
def test_the_examples_cast_data_as_dslc_train_does(example, built, tmp_path):
    np.savez(tmp_path / "wide.npz", **digits(image=lambda a: a.astype(np.float64), digit=lambda a: a.astype(np.int32)))
    np.savez(tmp_path / "floats.npz", **digits(digit=lambda a: a.astype(np.float32)))
    runs = [run(example, built, path, "--epochs", "1", tmp_path=tmp_path) for path in (DIGITS, tmp_path / "wide.npz", tmp_path / "floats.npz")]
    assert all(done.returncode == 0 for done in runs), [done.stderr for done in runs]
    assert epoch_lines(runs[0].stdout) == epoch_lines(runs[1].stdout) == epoch_lines(runs[2].stdout)
    assert epoch_lines(runs[0].stdout)[0]["loss"] > 0


@pytest.mark.parametrize("example", ["python", "node"])
def test_a_folder_without_a_manifest_is_a_usage_error(example, tmp_path):
    (tmp_path / "empty").mkdir()
    done = run(example, tmp_path / "empty", DIGITS, tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stderr == f"error: {tmp_path / 'empty'} holds no manifests (`<model>.dslc.json`); give the folder `dslc build -o` wrote\n"


@pytest.mark.parametrize("example", ["python", "node"])
def test_a_model_without_a_loss_has_nothing_to_train(example, tmp_path):
    from dslc.compiler import compile_file

    source = tmp_path / "score.dl"
    source.write_text("model score {\n    input x: f32[B, 2]\n    output y = x |> dense(1)\n}\n")
    compile_file(source).build(tmp_path / "out")
    np.savez(tmp_path / "data.npz", x=np.zeros((4, 2), np.float32))
    done = run(example, tmp_path / "out", tmp_path / "data.npz", tmp_path=tmp_path)
    assert done.returncode == 1
    assert done.stderr == "error: model `score` has no loss, so no training graph: score.infer.onnx is its inference\n"


@pytest.mark.parametrize("example", ["python", "node"])
def test_a_build_with_a_pinned_batch_takes_full_batches_only(example, tmp_path):
    """`dslc build --dim B=16` (static shapes): the examples ask for that batch size, leave out the last partial
    batch with a note, and otherwise train as on the symbolic build."""
    from dslc.compiler import compile_file

    source = ROOT / "examples/digits/digits.dl"
    compile_file(source, dims={"B": 16}).build(tmp_path / "pinned")
    compile_file(source).build(tmp_path / "symbolic")
    arrays = dict(np.load(DIGITS))
    np.savez(tmp_path / "48.npz", **{name: value[:48] for name, value in arrays.items()})
    np.savez(tmp_path / "50.npz", **{name: value[:50] for name, value in arrays.items()})

    wrong = run(example, tmp_path / "pinned", tmp_path / "48.npz", "--batch-size", "32", tmp_path=tmp_path)
    assert wrong.returncode == 2
    assert wrong.stderr == "error: this build pins the batch to 16 rows (`dslc build --dim`): pass --batch-size 16\n"

    partial = run(example, tmp_path / "pinned", tmp_path / "50.npz", "--batch-size", "16", tmp_path=tmp_path)
    assert partial.returncode == 0, partial.stderr
    assert partial.stderr == ("note: each epoch leaves out the last 2 rows of the training data: the build pins "
                              "the batch to 16 rows\n")
    assert len(epoch_lines(partial.stdout)) == 1

    pinned, symbolic = (run(example, tmp_path / build, tmp_path / "48.npz", "--batch-size", "16", tmp_path=tmp_path)
                        for build in ("pinned", "symbolic"))
    assert pinned.stderr == symbolic.stderr == ""
    assert epoch_lines(pinned.stdout) == epoch_lines(symbolic.stdout)


@pytest.mark.parametrize("example", ["python", "node"])
def test_a_seed_other_than_the_exported_runs_is_a_usage_error(example, tmp_path):
    """The manifest's `train_state` sets the seed of a continued run; another --seed would draw other masks
    and another order than the run's."""
    from dslc.compiler import compile_file

    program = compile_file(ROOT / "examples/digits/digits.dl", seed=2)
    data = tmp_path / "data.npz"
    np.savez(data, **{name: value[:40] for name, value in np.load(DIGITS).items()})
    program.train(str(data), epochs=1, batch_size=16, seed=2, out_dir=tmp_path / "run", verbose=0)
    program.export_train_state(tmp_path / "run", tmp_path / "state")
    done = run(example, tmp_path / "state", data, "--seed", "0", tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "error: this build continues a run with seed 2 (the manifest's `train_state`): leave out --seed\n"
    assert run(example, tmp_path / "state", data, "--seed", "2", tmp_path=tmp_path).returncode == 0
