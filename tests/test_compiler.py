"""The compiler driver: imports, hyper-parameter overrides, dtypes, parameter naming, the manifest,
the pass pipeline and the IR printer (golden file)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from dslc.compiler import compile_file
from dslc.passes import PASS_NAMES
from golden import ROOT

MODELS = ROOT / "tests" / "models"


@pytest.fixture(scope="module")
def residual():
    return compile_file(MODELS / "residual.dl")


def test_imported_blocks_repeat_with_their_own_parameters(residual):
    params = [p["name"] for p in residual.manifest["graphs"]["train"]["params"]]
    assert params == [
        "residual_0.dense_0.weight", "residual_0.dense_0.bias", "residual_0.dense_1.weight", "residual_0.dense_1.bias",
        "residual_1.dense_0.weight", "residual_1.dense_0.bias", "residual_1.dense_1.weight", "residual_1.dense_1.bias",
        "head.weight", "head.bias"]


def test_manifest_describes_every_graph_input_and_output(residual):
    m = residual.manifest
    assert m["format"] == "dslc-manifest/2" and m["model"] == "residual_mlp" and m["opset"] == 17
    train = m["graphs"]["train"]
    assert [t["name"] for t in train["inputs"]] == ["x", "label"]
    assert train["inputs"][1] == {"name": "label", "dtype": "int64", "shape": ["B"], "role": "target", "classes": 3}
    assert [(h["name"], h["kind"]) for h in train["hyper"]] == [("lr", "lr"), ("seed", "seed")]
    assert train["hyper"][0]["default"] == pytest.approx(0.01)
    assert [o["name"] for o in train["outputs"]] == ["loss", "accuracy", "top"]
    assert train["state"][0] == {"name": "opt.step", "dtype": "int64", "shape": [], "next": "opt.step.next"}
    assert len(train["state"]) == 1 + 2 * len(train["params"])  # adam: m and v per parameter
    assert m["graphs"]["infer"]["outputs"] == [{"name": "probs", "dtype": "float32", "shape": ["B", 3]},
                                               {"name": "logits", "dtype": "float32", "shape": ["B", 3]}]
    assert m["optimizer"]["kind"] == "adam" and m["optimizer"]["settings"]["weight_decay"] == 1e-4

    model = onnx.load_from_string(residual.graphs["train"])
    graph_inputs = [i.name for i in model.graph.input]
    expected = [t["name"] for t in train["inputs"] + train["hyper"] + train["params"] + train["state"]]
    assert graph_inputs == expected
    assert not {t.name for t in model.graph.initializer} & set(expected)  # every input is fed: no defaults
    outputs = [o.name for o in model.graph.output]
    assert outputs == [t["name"] for t in train["outputs"]] + [t["next"] for t in train["params"] + train["state"]]

    infer = onnx.load_from_string(residual.graphs["infer"])
    assert [i.name for i in infer.graph.input] == ["x"]  # parameters are plain initializers

    init = onnx.load_from_string(residual.graphs["init"])  # no inputs; one output per param and state
    assert m["graphs"]["init"] == {"file": "residual_mlp.init.onnx",
                                   "outputs": [{k: v for k, v in t.items() if k not in ("next", "init")}
                                               for t in train["params"] + train["state"]]}
    assert not init.graph.input and [o.name for o in init.graph.output] == [t["name"] for t in train["params"] + train["state"]]
    from onnx.reference import ReferenceEvaluator
    outputs = dict(zip([o.name for o in init.graph.output], ReferenceEvaluator(init).run(None, {})))
    for name, value in residual.initial_values().items():
        np.testing.assert_array_equal(outputs[name], value)
    assert outputs["opt.step"] == 0 and outputs["residual_0.dense_0.weight"].std() > 0


def test_defines_override_hyper_parameters():
    program = compile_file(MODELS / "residual.dl", defines={"width": "4", "depth": "3"})
    params = program.manifest["graphs"]["train"]["params"]
    assert params[0]["shape"] == [4, 4]
    assert sum(p["name"].endswith("dense_0.weight") for p in params) == 3


def test_float64_builds_double_graphs():
    program = compile_file(MODELS / "residual.dl", dtype="float64")
    assert program.manifest["dtype"] == "float64"
    model = onnx.load_from_string(program.graphs["train"])
    doubles = {i.name for i in model.graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE}
    assert doubles >= {p["name"] for p in program.manifest["graphs"]["train"]["params"]}
    assert {v.dtype for v in program.initial_values().values()} == {np.dtype("float64"), np.dtype("int64")}


def test_initial_values_depend_on_seed_and_name_only():
    a = compile_file(MODELS / "residual.dl", seed=1)
    b = compile_file(MODELS / "residual.dl", seed=1, defines={"depth": "3"})
    c = compile_file(MODELS / "residual.dl", seed=2)

    def init(program, name):
        return program.initial_values()[name]

    name = "residual_0.dense_0.weight"
    np.testing.assert_array_equal(init(a, name), init(b, name))
    assert not np.array_equal(init(a, name), init(c, name))


def test_print_ir_after_each_pass():
    for name in PASS_NAMES:
        text = compile_file(ROOT / "models" / "xor.dl", print_ir_after=name).ir_text
        assert text.startswith("graph xor.")
    after_autodiff = compile_file(ROOT / "models" / "xor.dl", print_ir_after="autodiff").ir_text
    assert "output grad.dense_0.weight" in after_autodiff


def test_ir_text_is_stable(golden, monkeypatch):
    monkeypatch.chdir(ROOT)
    text = compile_file(Path("models") / "xor.dl").ir_text
    assert text == compile_file(Path("models") / "xor.dl").ir_text
    golden(ROOT / "tests" / "golden" / "xor.ir.txt", text)


def test_model_without_loss_builds_inference_only(tmp_path):
    path = tmp_path / "features.dl"
    path.write_text("model features {\n    input x: f32[B, 3]\n    output y = x |> dense(2) |> gelu\n}\n")
    program = compile_file(path)
    assert set(program.graphs) == {"infer"} and set(program.manifest["graphs"]) == {"infer"}


@pytest.mark.parametrize("model", sorted(p.name for p in (ROOT / "models").glob("*.dl")))
def test_every_node_of_the_emitted_graphs_is_read(model):
    """No graph holds a node whose outputs nothing reads (ONNX Runtime would run it): a lowering may read
    past its inputs' nodes (the GRU's input columns from the table they were looked up in)."""
    program = compile_file(ROOT / "models" / model)
    for kind, graph in program.graphs.items():
        proto = graph if isinstance(graph, onnx.ModelProto) else onnx.load_from_string(graph)
        read = {name for node in proto.graph.node for name in node.input} | {o.name for o in proto.graph.output}
        dead = [node.name for node in proto.graph.node if not any(out in read for out in node.output)]
        assert not dead, f"{model} {kind}: {dead}"
        constants = {c.name for c in proto.graph.initializer} - {i.name for i in proto.graph.input}
        assert constants <= read, f"{model} {kind}: unread constants {sorted(constants - read)}"
