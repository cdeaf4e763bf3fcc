"""The reference performance workloads of issue 4, each timed by `dslc bench --compare torch` in one
process (dslc, PyTorch eager and the PyTorch twin's inference exported by `torch.onnx.export` and run by
ONNX Runtime, interleaved, never at the same time), as a markdown table and JSON. `--memory` adds the
training step's peak RSS, dslc and PyTorch each in a fresh process (`dslc bench --memory`).

    python examples/bench/reference.py [--steps 200] [--memory] [--json bench.json] [--only mlp-adam ...]

Needs PyTorch (the `dev` extra). README's performance table is this script's output.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import dslc
from dslc import bench

ROOT = Path(__file__).resolve().parents[2]

# name -> (model, -D values, training batch, inference batch, targets: train ratio, inference ratio)
WORKLOADS = {
    "mlp-sgd-nesterov": ("models/mlp.dl", {}, 128, 1, 0.5, 0.3),
    "mlp-adam": ("examples/bench/mlp_adam.dl", {}, 128, 1, 0.5, 0.3),
    "lenet-adam": ("models/lenet.dl", {}, 64, 128, 0.7, 0.35),
    "gru-adam": ("models/text_rnn.dl", {"vocab": 1000, "length": 40, "dim": 128, "hidden": 128}, 100, 100, 0.8, None),
    "transformer-adamw": ("models/transformer_lm.dl", {"rate": 0}, 32, 32, 0.8, None),
}
RSS_TARGET = 1.0  # dslc's training step uses no more memory than PyTorch's


def row(name: str, batch: int, infer_batch: int, train_target: float, infer_target: float | None, r: dict,
        memory: bool) -> str:
    infer_goal = f" (≤ {infer_target})" if infer_target else ""
    cells = [f"{name} (batch {batch}, inference {infer_batch})", f"{r['train_step_ms']:.3f}",
             f"{r['torch_train_step_ms']:.3f}", f"{r['train_ratio']:.2f} (≤ {train_target})",
             f"{100 * r['flop_utilization']:.0f}%", f"{r['infer_ms']:.3f}", f"{r['torch_infer_ms']:.3f}",
             f"{r['infer_ratio']:.2f}{infer_goal}"]
    if r["torch_onnx_infer_ms"] is not None:
        cells += [f"{r['torch_onnx_infer_ms']:.3f}", f"{r['infer_vs_torch_onnx']:.2f}"]
    else:
        cells += ["export failed¹", "—"]
    if memory:
        cells += [f"{r['train_peak_rss_mb']:.0f} / {r['torch_train_peak_rss_mb']:.0f}",
                  f"{r['train_rss_increase_mb']:.1f} / {r['torch_train_rss_increase_mb']:.1f}",
                  f"{r['rss_ratio']:.2f} (≤ {RSS_TARGET:g})"]
    return "| " + " | ".join(cells) + " |"


def contended(threads: int, steps: int = 160) -> tuple[float, float]:
    """Median MLP training-step times (ms) with 1 and with `threads` threads, interleaved. On an
    uncontended machine more threads are faster; on a VM with a busy sibling vCPU, one thread wins
    and every ratio drifts towards 1 (see README, Performance)."""
    import numpy as np

    from dslc.runtime.session import TrainStep

    program = dslc.compile(ROOT / "models/mlp.dl")
    spec = program.manifest["graphs"]["train"]
    batch = bench.synthetic_batch(spec["inputs"], {"B": 128}, np.random.default_rng(0))
    trainers = {n: TrainStep(program.graphs["train"], spec, "cpu", n) for n in (1, threads)}
    ms = bench.interleaved([(str(n), lambda t=t: t.step(batch)) for n, t in trainers.items()], steps // 4, 4, 5)
    return ms["1"], ms[str(threads)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory", action="store_true", help="also measure the training step's peak RSS")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", nargs="*", choices=list(WORKLOADS))
    args = parser.parse_args()
    results = {}
    header = ["workload", "train step (ms)", "PyTorch (ms)", "ratio (target)", "FLOP utilization", "inference (ms)",
              "PyTorch (ms)", "ratio (target)", "torch.onnx.export + ORT (ms)", "ratio"]
    if args.memory:
        header += ["train peak RSS dslc / PyTorch (MB)", "increase over imports dslc / PyTorch (MB)",
                   "RSS ratio (target)"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    if args.threads > 1:
        one, many = contended(args.threads)
        print(f"MLP step: {one:.3f} ms on 1 thread, {many:.3f} ms on {args.threads}")
        if one <= many:
            print("warning: one thread is as fast as several: the machine looks contended; the ratios below will "
                  "read closer to 1 than on an idle machine")
    for name, (model, defines, batch, infer_batch, train_target, infer_target) in WORKLOADS.items():
        if args.only and name not in args.only:
            continue
        program = dslc.compile(ROOT / model, **defines)
        r = bench.run(program, batch_size=batch, infer_batch_size=infer_batch, steps=args.steps, compare_torch=True,
                      memory=args.memory, threads=args.threads).as_json()
        results[name] = r
        rows.append(row(name, batch, infer_batch, train_target, infer_target, r, args.memory))
        print(rows[-1], flush=True)
    gemm = max(r["gemm_gflops"] for r in results.values())
    print(f"\nmeasured float32 GEMM peak: {gemm:.0f} GFLOP/s ({args.threads} threads); machine: {bench.machine()}")
    print("\n".join(rows))
    failed = {name: r["torch_onnx_error"] for name, r in results.items() if r["torch_onnx_error"]}
    if failed:
        print("\n¹ " + "; ".join(f"{name}: {error}" for name, error in failed.items()))
    if args.json:
        args.json.write_text(json.dumps({"machine": bench.machine(), "workloads": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
