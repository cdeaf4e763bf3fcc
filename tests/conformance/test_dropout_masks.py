"""Dropout draws the same masks, bit for bit, in all six runtimes: 100 training steps (100 seeds) of a
small model whose training graph also outputs its dropout's keep mask (the `GreaterOrEqual` of the
noise, shaped like the layer's input, and the rate, added as a graph output after the loss), and the keep rate is 1 - rate within
sampling error."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from data import BATCH, DATA_SEED, batches
from protocol import load_manifest
from runtimes import RUNTIMES

STEPS = 100
# step seeds (run_seed * 1000003 + step) near 2^31: the seed's bits above 24 are used (OpenVINO divides
# int64 through float32, which the graph's seed split corrects; see dslc/ops/random.py)
RUN_SEED = 2147
RATE = 0.2
MODEL = f"""
model masks {{
    input  x: f32[B, 64]
    target y: f32[B, 64]
    output pred = x |> dense(64) |> dropout({RATE})
    loss      mse(pred, y)
    optimizer sgd(lr = 0.01)
}}
"""


def expose_mask(out_dir) -> None:
    """Adds the keep mask to the training graph's outputs (and to the manifest's), after the loss."""
    manifest_path = next(out_dir.glob("*.dslc.json"))
    manifest = json.loads(manifest_path.read_text())
    train = manifest["graphs"]["train"]
    model = onnx.load(out_dir / train["file"])
    shape = [d if isinstance(d, int) else str(d) for d in next(t for t in train["inputs"] if t["name"] == "x")["shape"]]
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    # the comparison of the noise, shaped like x, with the rate (the random op's own comparisons are scalars)
    (mask,) = [n.output[0] for n in model.graph.node if n.op_type == "GreaterOrEqual" and ranks.get(n.output[0]) == len(shape)]
    position = len(train["outputs"])
    model.graph.output.insert(position, onnx.helper.make_tensor_value_info(mask, onnx.TensorProto.BOOL, shape))
    onnx.save(model, out_dir / train["file"])
    train["outputs"].append({"name": mask, "dtype": "bool", "shape": shape})
    manifest_path.write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def mask_builds(build, tmp_path_factory):
    """{static: the build's directory, its training graph outputting the mask}"""
    source = tmp_path_factory.mktemp("masks") / "masks.dl"
    source.write_text(MODEL)
    builds = {static: build(source, static) for static in (False, True)}
    for out in builds.values():
        expose_mask(out)
    return builds


@pytest.fixture(scope="module")
def reference_masks(mask_builds, tmp_path_factory):
    data = batches(load_manifest(mask_builds[False]), STEPS, BATCH, DATA_SEED)
    result = RUNTIMES["onnxruntime"].run(mask_builds[False], data, RUN_SEED, tmp_path_factory.mktemp("masks.ort"))
    (masks,) = [v for k, v in result.items() if k.startswith("train.") and v.dtype == bool]
    return data, masks


def test_the_keep_rate_is_one_minus_the_rate(reference_masks):
    _, masks = reference_masks
    assert masks.shape == (STEPS, BATCH, 64)
    sigma = np.sqrt(RATE * (1 - RATE) / masks.size)
    assert abs(masks.mean() - (1 - RATE)) < 4 * sigma
    assert len({m.tobytes() for m in masks}) == STEPS  # every seed its own mask


@pytest.mark.parametrize("runtime", [r for r in RUNTIMES if r != "onnxruntime" and "symbolic" not in r])
def test_masks_are_bit_identical(runtime, mask_builds, reference_masks, tmp_path):
    data, expected = reference_masks
    r = RUNTIMES[runtime]
    result = r.run(mask_builds[r.static], data, RUN_SEED, tmp_path)
    (masks,) = [v for k, v in result.items() if k.startswith("train.") and v.dtype == bool]
    differing = int(np.sum(masks != expected))
    assert differing == 0, f"{differing} of {masks.size} mask elements differ from ONNX Runtime's"
