"""Where a reference workload's time goes inside ONNX Runtime: the training and inference graphs run with
ORT's profiler (`SessionOptions.enable_profiling`), and the kernel times summed per op type (and, with
`--nodes N`, the N slowest nodes), as milliseconds per call and share of the graph's kernel time.

    python examples/bench/ort_profile.py [--only transformer-adamw] [--calls 30] [--threads 2] [--nodes 15]

The profiler adds ~3 µs to every node (FACTS), so small element-wise nodes read high: compare variants
by interleaved A/B, use this to see which op types are worth attacking.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

import dslc
from dslc.bench import synthetic_batch
from dslc.cli_values import positive_int

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import ROOT, WORKLOADS  # noqa: E402


def profile(model_bytes: bytes, feeds: dict[str, np.ndarray], calls: int, threads: int) -> list[dict]:
    """The kernel events of `calls` runs, after 5 warm-up runs (profiled too, and left out)."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        warmup = 5
        for _ in range(warmup + calls):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    start = runs[warmup]["ts"]
    return [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start]


def summary(kernels: list[dict], calls: int, nodes: int) -> list[str]:
    by_type: dict[str, float] = collections.Counter()
    by_node: dict[str, float] = collections.Counter()
    counts: dict[str, set] = collections.defaultdict(set)
    for e in kernels:
        op = e["args"]["op_name"]
        by_type[op] += e["dur"]
        shapes = " ".join("x".join(map(str, next(iter(t.values())))) for t in e["args"].get("input_type_shape", []))
        by_node[(op, e["name"].removesuffix("_kernel_time"), shapes)] += e["dur"]
        counts[op].add(e["name"])
    total = sum(by_type.values())
    lines = [f"  kernel time {total / calls / 1e3:.2f} ms per call"]
    for op, us in sorted(by_type.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {op:28s} {us / calls / 1e3:7.3f} ms {100 * us / total:5.1f}%  {len(counts[op]):4d} nodes")
    if nodes:
        lines.append("  slowest nodes:")
        for (op, name, shapes), us in sorted(by_node.items(), key=lambda kv: -kv[1])[:nodes]:
            shapes = shapes if len(shapes) <= 80 else shapes[:77] + "..."
            lines.append(f"    {us / calls / 1e3:7.3f} ms  {op:16s} {name:45s} {shapes}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(WORKLOADS))
    parser.add_argument("--calls", type=positive_int, default=30)
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--nodes", type=int, default=0, help="also list the N slowest nodes")
    args = parser.parse_args()
    for name, (model, defines, train_batch, infer_batch) in WORKLOADS.items():
        if args.only and name not in args.only:
            continue
        program = dslc.compile(ROOT / model, **defines)
        initial = program.initial_values()
        rng = np.random.default_rng(0)
        for graph, batch in (("train", train_batch), ("infer", infer_batch)):
            spec = program.manifest["graphs"][graph]
            feeds = synthetic_batch(spec["inputs"], {"B": batch}, rng)
            feeds.update({t["name"]: initial[t["name"]] for key in ("params", "frozen", "buffers", "state")
                          for t in spec.get(key, []) if t["name"] in initial})
            feeds.update({t["name"]: np.asarray(t["default"], dtype=t["dtype"]) for t in spec.get("hyper", [])})
            print(f"{name} {graph} (batch {batch}, {args.threads} threads, {args.calls} calls):")
            print("\n".join(summary(profile(program.graphs[graph], feeds, args.calls, args.threads), args.calls,
                                    args.nodes)))


if __name__ == "__main__":
    main()
