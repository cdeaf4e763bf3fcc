"""The compile cache (`dslc/compile_cache.py`) and the onnx-free init-graph reader (`dslc/emit/wire.py`):
a cached program is the compiled one, bit for bit, and is used only while every file it was compiled from
is unchanged; `dslc train` of a cached model imports neither onnx nor lark and trains the same bits."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from dslc import compile_cache
from dslc.compiler import compile_file
from dslc.emit.weights import read_init_graph
from dslc.emit.wire import stored_init_values

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted((ROOT / "models").glob("*.dl")) + [ROOT / "examples" / "digits" / "digits.dl"]
DIGITS = ROOT / "examples" / "digits"


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.delenv("DSLC_NO_CACHE", raising=False)
    monkeypatch.setenv("DSLC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _onnx_init_values(model_bytes: bytes) -> dict[str, np.ndarray]:
    model = onnx.load_from_string(model_bytes)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    values = {n.output[0]: inits[n.input[0]] for n in model.graph.node}
    return {o.name: values[o.name] for o in model.graph.output}


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_wire_reader_reads_what_onnx_reads(path):
    init = compile_file(path, dtype="float64" if path.stem == "xor" else "float32").graphs["init"]
    expected = _onnx_init_values(init)
    got = stored_init_values(init)
    assert list(got) == list(expected)
    for name, value in expected.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)
        assert got[name].flags.writeable


def test_wire_reader_leaves_other_init_graphs_to_onnx():
    """A `Constant` output (as another runtime may write) and typed data fields: the onnx path reads them."""
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    typed = helper.make_tensor("w/initial", onnx.TensorProto.FLOAT, [2, 3], value.ravel().tolist())  # float_data
    nodes = [helper.make_node("Identity", ["w/initial"], ["w"]),
             helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(np.ones(2, np.float32)))]
    outputs = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, s) for n, s in (("w", [2, 3]), ("b", [2]))]
    model = helper.make_model(helper.make_graph(nodes, "init", [], outputs, initializer=[typed]))
    data = model.SerializeToString()
    assert stored_init_values(data) is None
    values = read_init_graph(data)
    np.testing.assert_array_equal(values["w"], value)
    np.testing.assert_array_equal(values["b"], np.ones(2, np.float32))
    assert stored_init_values(b"\x0a\xff") is None  # truncated: not an error of the reader's own


def test_a_cached_program_is_the_compiled_one(cache, monkeypatch):
    first = compile_cache.compile_cached(DIGITS / "digits.dl", defines={"hidden": "16"}, seed=3)
    monkeypatch.setattr("dslc.compiler.compile_file", lambda *a, **k: pytest.fail("compiled again"))
    again = compile_cache.compile_cached(DIGITS / "digits.dl", defines={"hidden": "16"}, seed=3)
    assert again.manifest == first.manifest and again.graphs == first.graphs and again.name == "digits"
    assert again.num_parameters == first.num_parameters
    for name, value in first.initial_values().items():
        np.testing.assert_array_equal(again.initial_values()[name], value)


def test_other_options_or_a_changed_import_compile_again(cache, tmp_path):
    (tmp_path / "blocks").mkdir()
    block = tmp_path / "blocks" / "layer.dl"
    block.write_text("block layer(x, n) {\n    return x |> dense(n) |> relu\n}\n")
    model = tmp_path / "m.dl"
    model.write_text('import "blocks/layer.dl"\nmodel m {\n    input x: f32[B, 4]\n    target t: f32[B, 2]\n'
                     '    h = layer(x, n = 8)\n    output y = dense(h, 2)\n    loss mse(y, t)\n'
                     '    optimizer sgd(lr = 0.1)\n}\n')
    compiles = []
    real = compile_file

    def counting(*args, **kwargs):
        compiles.append(kwargs)
        return real(*args, **kwargs)

    import dslc.compiler
    dslc.compiler.compile_file, saved = counting, dslc.compiler.compile_file
    try:
        first = compile_cache.compile_cached(model)
        compile_cache.compile_cached(model)
        assert len(compiles) == 1
        compile_cache.compile_cached(model, dtype="float64")
        compile_cache.compile_cached(model, seed=1)
        assert len(compiles) == 3
        block.write_text("block layer(x, n) {\n    return x |> dense(n) |> tanh\n}\n")
        changed = compile_cache.compile_cached(model)
        assert len(compiles) == 4 and changed.graphs["train"] != first.graphs["train"]
        compile_cache.compile_cached(model)
        assert len(compiles) == 4
        compile_cache.compile_cached(model, import_path=[str(tmp_path / "blocks")])  # never cached
        compile_cache.compile_cached(model, import_path=[str(tmp_path / "blocks")])
        assert len(compiles) == 6
    finally:
        dslc.compiler.compile_file = saved


def test_damaged_entries_and_warnings_are_not_used(cache, tmp_path):
    model = tmp_path / "w.dl"  # softmax before cross_entropy: a warning, so never cached
    model.write_text("model w {\n    input x: f32[B, 4]\n    target t: i64[B]\n    p = x |> dense(3) |> softmax\n    output q = p\n"
                     "    loss cross_entropy(p, t)\n    optimizer sgd(lr = 0.1)\n}\n")
    assert compile_file(model).warnings
    compile_cache.compile_cached(model)
    assert not cache.exists() or not [p for p in cache.iterdir() if p.is_dir()]
    compile_cache.compile_cached(DIGITS / "digits.dl")
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    graph = entry / "train.onnx"
    graph.write_bytes(graph.read_bytes()[:-10])  # torn
    assert compile_cache._load(entry, "x") is None
    program = compile_cache.compile_cached(DIGITS / "digits.dl")  # compiled and stored anew
    assert compile_cache._load(entry, "x").graphs == program.graphs


def test_no_cache_and_an_unwritable_folder_compile(monkeypatch, tmp_path):
    monkeypatch.setenv("DSLC_NO_CACHE", "1")
    assert compile_cache.cache_dir() is None
    monkeypatch.setenv("DSLC_NO_CACHE", "0")
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("DSLC_CACHE_DIR", str(blocker / "cache"))  # under a file: cannot be created
    assert compile_cache.compile_cached(DIGITS / "digits.dl").name == "digits"


def test_train_of_a_cached_model_imports_neither_onnx_nor_lark(cache, tmp_path):
    script = ("import sys; from dslc.cli import main; code = main(sys.argv[1:]); "
              "print('loaded:', sorted(m for m in ('onnx', 'lark') if m in sys.modules)); sys.exit(code)")
    env = {**os.environ, "DSLC_CACHE_DIR": str(cache)}
    env.pop("DSLC_NO_CACHE", None)
    runs = []
    for run in ("cold", "warm"):
        args = ["train", str(DIGITS / "digits.dl"), "--data", str(DIGITS / "train.npz"), "--epochs", "2",
                "--batch-size", "64", "-q", "-o", str(tmp_path / run)]
        done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        runs.append(done.stdout)
    assert "loaded: ['lark', 'onnx']" in runs[0]
    assert "loaded: []" in runs[1]
    cold, warm = (np.load(tmp_path / run / "checkpoint.npz") for run in ("cold", "warm"))
    for key in cold.files:
        if key != "meta":
            np.testing.assert_array_equal(cold[key], warm[key], err_msg=key)
    assert (tmp_path / "cold" / "digits.train.onnx").read_bytes() == (tmp_path / "warm" / "digits.train.onnx").read_bytes()
