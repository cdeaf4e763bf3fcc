"""Which of ONNX Runtime's graph fusions fire on dslc's graphs: each reference workload's training and
inference graph is loaded with dslc's session settings (optimization level ALL) and ORT's optimized model
saved (`SessionOptions.optimized_model_filepath`); the op types that appear or disappear are printed.

    python examples/bench/ort_fusions.py [--only mlp-adam ...]

Ops in the `com.microsoft` domain (FusedGemm, FusedConv, FusedMatMul, Gelu, BiasGelu, LayerNormalization,
SkipLayerNormalization, Attention, ...) are ORT's fused kernels; the count of nodes before and after says
how much per-node overhead the optimizer removed.
"""
from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort

import dslc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import ROOT, WORKLOADS  # noqa: E402


def op_counts(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in model.graph.node)


def optimized(model_bytes: bytes) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 4
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(WORKLOADS))
    args = parser.parse_args()
    for name, (model, defines, *_) in WORKLOADS.items():
        if args.only and name not in args.only:
            continue
        program = dslc.compile(ROOT / model, **defines)
        for graph in ("train", "infer"):
            before = op_counts(onnx.load_from_string(program.graphs[graph]))
            after = op_counts(optimized(program.graphs[graph]))
            changed = sorted(set(before) | set(after), key=lambda op: (after[op] - before[op], op))
            diff = ", ".join(f"{op} {before[op]}→{after[op]}" for op in changed if before[op] != after[op])
            print(f"{name} {graph}: {sum(before.values())} → {sum(after.values())} nodes; {diff or 'no fusion'}")


if __name__ == "__main__":
    main()
