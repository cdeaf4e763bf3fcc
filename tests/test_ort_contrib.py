"""examples/bench/ort_contrib.py's rewrites of dslc's inference graphs into ONNX Runtime's `com.microsoft`
fused kernels: they find dslc's subgraphs, compute the same outputs (float32, 1e-5 of the largest), and
leave alone what they do not recognize exactly (a key-masked attention, a model without attention)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import dslc
from dslc.bench import synthetic_batch

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("ort_contrib", ROOT / "examples" / "bench" / "ort_contrib.py")
ort_contrib = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ort_contrib)

SMALL_LM = dict(vocab=16, width=32, heads=2, hidden=64, blocks=1, seq=8)
KEY_MASKED = """
model key_masked {
    input  x: f32[B, 5, 4]
    input  m: f32[B, 5]
    h = x |> linear(4)
    keep = m > -1.0
    a = attention(h, h, h, 2, key_mask = keep)
    output pred = attention(a, h, h, 1, causal = true, key_mask = cast(keep, "f32")) |> layer_norm |> linear(3)
}
"""


def outputs(model_bytes: bytes, feeds: dict) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"]).run(None, feeds)


def rewrite_all(program) -> dict[str, tuple[dict, list, list]]:
    """Each variant's match counts, outputs and the portable outputs."""
    portable = onnx.load_from_string(program.graphs["infer"])
    feeds = synthetic_batch(program.manifest["graphs"]["infer"]["inputs"], {"B": 3}, np.random.default_rng(0))
    expected = outputs(program.graphs["infer"], feeds)
    found = {}
    for variant, rewrites in ort_contrib.REWRITES.items():
        graph, counts = ort_contrib.rewritten(portable, rewrites)
        onnx.checker.check_model(graph)
        found[variant] = (counts, outputs(graph.SerializeToString(), feeds), expected)
    return found


def test_the_transformer_rewrites_match_and_compute_the_same():
    found = rewrite_all(dslc.compile(ROOT / "models" / "transformer_lm.dl", **SMALL_LM))
    # one attention core, three normalized residual sums (the embedding's, the block's two), one gelu
    assert found["all"][0] == {"mha": 1, "skip_norm": 3, "bias_gelu": 1}
    assert found["attention"][0]["attention"] in (0, 1)  # 0 once the projections are one product
    for variant, (_, got, expected) in found.items():
        for a, b in zip(got, expected):
            assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max(), variant


def test_a_key_masked_attention_is_left_portable(tmp_path):
    source = tmp_path / "key_masked.dl"
    source.write_text(KEY_MASKED)
    found = rewrite_all(dslc.compile(source))
    assert found["all"][0] == {"mha": 0, "skip_norm": 0, "bias_gelu": 0}
    for _, got, expected in found.values():
        assert all(np.array_equal(a, b) for a, b in zip(got, expected))


@pytest.mark.parametrize("model", ["mlp.dl", "lenet.dl"])
def test_models_without_attention_are_unchanged(model):
    program = dslc.compile(ROOT / "models" / model)
    portable = onnx.load_from_string(program.graphs["infer"])
    graph, counts = ort_contrib.rewritten(portable, ort_contrib.REWRITES["all"])
    assert set(counts.values()) == {0}
    assert [n.op_type for n in graph.graph.node] == [n.op_type for n in portable.graph.node]
