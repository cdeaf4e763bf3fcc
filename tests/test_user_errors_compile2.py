"""Compiled graphs that were silently wrong: what a model's inference graph holds."""
from __future__ import annotations

import numpy as np
import onnx
from golden import ROOT

from dslc.compiler import compile_file
from dslc.emit.weights import read_initializers


def test_the_inference_graph_holds_only_the_weights_its_outputs_use(tmp_path):
    """The GAN's output `fake` is the generator's: the discriminator's weights stay out of the inference
    graph (ONNX Runtime would log 'Removing initializer' on every load), and trained weights of both
    still bind for predict and export."""
    program = compile_file(ROOT / "models" / "gan.dl")
    assert sorted(read_initializers(program.graphs["infer"])) == [
        f"gen.dense_{i}.{p}" for i in range(3) for p in ("bias", "weight")]
    trained = {}
    inits = program.initial_values()
    for key, spec in program.manifest["graphs"].items():
        if key.startswith("train."):
            trained.update({t["name"]: inits[t["name"]] * 2 for t in spec["params"]})
    assert any(name.startswith("disc.") for name in trained)

    exported = onnx.load_from_string(program.trained_model(trained))
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in exported.graph.initializer}
    assert sorted(weights) == sorted(read_initializers(program.graphs["infer"]))
    for name, value in weights.items():
        np.testing.assert_array_equal(value, trained[name])
    z = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    assert program.predict({"z": z}, weights=trained)["fake"].shape == (5, 2)
