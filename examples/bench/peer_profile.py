"""Where the transformer's time goes in dslc (ONNX Runtime's profiler) and in its peers (PyTorch eager and
torch.compile, torch.profiler), side by side in the same categories: the linear layers' matrix products
(forward and weight/input gradients), attention (its batched products, mask, softmax, head transposes
and their gradients; PyTorch runs one fused flash-attention kernel each way), GELU, layer norm with the
residual and bias additions, the loss, AdamW's update, the embedding, and copies/reshapes.

    python examples/bench/peer_profile.py [--threads 1] [--calls 20] [--peers torch torch-compile]

Milliseconds per call of kernel (ORT) or operator self time (PyTorch), summed per category. Both
profilers add a few µs to every node or operator, so the categories made of many small ones read high;
the totals are checked against the unprofiled step's median. Interpret differences of a category, not
the third digit. torch.compile's generated kernels are named after the ops they fuse
(`cpp_fused_gelu_gelu_backward_…`); a kernel fusing two categories is counted under the first that its
name matches in the order of `TORCH_RULES`.
"""
from __future__ import annotations

import argparse
import collections
import re
import sys
import time
from pathlib import Path

import numpy as np

import dslc
from dslc.bench import synthetic_batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ort_profile import profile  # noqa: E402
from reference import ROOT, WORKLOADS  # noqa: E402

CATEGORIES = ("linear GEMMs", "attention GEMMs", "attention other", "GELU", "layer norm, residual, bias",
              "loss", "optimizer", "embedding", "copies, reshapes", "other")
WORKLOAD = "transformer-adamw"
MOVES = {"Transpose", "Reshape", "Flatten", "Shape", "Expand", "Unsqueeze", "Squeeze", "Identity", "Concat",
         "Split", "Slice", "Gather", "Cast", "Size", "ReduceProd"}
GEMMS = {"Gemm", "MatMul", "FusedMatMul"}


def ort_category(event: dict, batch: int) -> str:
    """The category of one ORT kernel event, from its op type, node name and input shapes: activations
    are the tensors whose first dimension is the batch (B or B·T rows); a node that reads none is
    AdamW's update (the parameters, their gradients and moments) unless it only moves data."""
    op, name = event["args"]["op_name"], event["name"]
    shapes = [next(iter(t.values())) for t in event["args"].get("input_type_shape", [])]
    shapes = [s for s in shapes if s]
    batched = [s for s in shapes if s[0] in (batch, batch * 64)]
    if name.startswith(("scatter_add_rows", "gather_rows")) or op == "ScatterElements":
        return "embedding"
    if op in GEMMS:
        return "attention GEMMs" if len(shapes) >= 2 and all(len(s) == 4 for s in shapes[:2]) else "linear GEMMs"
    if op == "Transpose" or op in MOVES:
        return "copies, reshapes" if batched or op == "Transpose" else "other"
    if not batched:
        return "optimizer"
    widest = max(batched, key=len)
    if len(widest) == 4:
        return "attention other"
    if widest[-1] == 512 or name.startswith(("gelu", "erf")):
        return "GELU"
    if widest[-1] == 256 or name.startswith(("softmax_cross_entropy", "one_hot")) or op == "LogSoftmax":
        return "loss"
    return "layer norm, residual, bias"


def dslc_profile(graph: str, threads: int, calls: int) -> dict[str, float]:
    model, defines, batch_size, _ = WORKLOADS[WORKLOAD]
    program = dslc.compile(ROOT / model, **defines)
    initial = program.initial_values()
    spec = program.manifest["graphs"][graph]
    feeds = synthetic_batch(spec["inputs"], {"B": batch_size}, np.random.default_rng(0))
    feeds.update({t["name"]: initial[t["name"]] for key in ("params", "frozen", "buffers", "state")
                  for t in spec.get(key, []) if t["name"] in initial})
    feeds.update({t["name"]: np.asarray(t["default"], dtype=t["dtype"]) for t in spec.get("hyper", [])})
    totals: dict[str, float] = collections.Counter()
    for event in profile(program.graphs[graph], feeds, calls, threads):
        totals[ort_category(event, batch_size)] += event["dur"] / 1e3 / calls
    return totals


# (category, patterns searched in an aten op's, an autograd node's or an Inductor kernel's name), first match wins
TORCH_RULES = tuple((category, re.compile(pattern)) for category, pattern in (
    ("optimizer", r"optimizer\.step|_foreach|adam"),
    ("embedding", r"embedding|index_select"),
    ("attention other", r"scaled_dot_product|flash_attention|softmax_backward_data|aten::_softmax$"),
    ("loss", r"log_softmax|nll_loss|cross_entropy"),
    ("GELU", r"gelu"),
    ("layer norm, residual, bias", r"layer_norm|^aten::(add|sum|mul|div|sub)_?$"),
    ("linear GEMMs", r"^aten::(mm|addmm|bmm)$"),
    ("copies, reshapes", r"copy|clone|contiguous|cat|transpose|fill_|zero|empty|^aten::(t|to|view|as_strided|expand"
                         r"|reshape|slice|select|narrow|split|flatten|detach|resize_|slice_backward)$"),
))


def torch_category(name: str) -> str | None:
    """The category a profiler event's own name says, None when it says none."""
    lower = name.lower()
    for category, pattern in TORCH_RULES:
        if pattern.search(lower):
            return category
    return None


def torch_event_category(event) -> str:
    """An event's category: its own name's for compute, else the nearest enclosing op's (a copy inside
    the flash-attention backward is attention's), else copies when it is one, else "other" (the
    wrappers' own time: Dynamo's guards, the compiled graph's launcher, the autograd engine)."""
    own = torch_category(event.name)
    if own is not None and own != "copies, reshapes":
        return own
    parent = event.cpu_parent
    while parent is not None:
        found = torch_category(parent.name)
        if found is not None and found not in ("copies, reshapes", "linear GEMMs"):
            return found
        parent = parent.cpu_parent
    return own or "other"


def warmed_call(column: str, graph: str, threads: int):
    """A call of the workload's step (`graph` "train") or inference by dslc (ONNX Runtime, IO binding as
    in `dslc train`) or by a PyTorch peer, on `threads` threads, called 5 times already."""
    model, defines, batch_size, _ = WORKLOADS[WORKLOAD]
    program = dslc.compile(ROOT / model, **defines)
    spec = program.manifest["graphs"][graph]
    data = synthetic_batch(spec["inputs"], {"B": batch_size}, np.random.default_rng(0))
    if column == "dslc":
        from dslc.runtime.session import Predictor, TrainStep

        if graph == "train":
            runner = TrainStep(program.graphs["train"], spec, "cpu", threads, initial=program.initial_values())
            call = lambda: runner.step(data)  # noqa: E731
        else:
            runner = Predictor(program.graphs["infer"], spec, "cpu", threads)
            call = lambda: runner.run(data)  # noqa: E731
    else:
        import torch

        from dslc.peers import make_column

        torch.set_num_threads(threads)
        peer = make_column(column, program, program.initial_values())
        data = peer.prepare(data)
        call = (lambda: peer.step(data)) if graph == "train" else (lambda: peer.infer(data))
    for _ in range(5):
        call()
    return call


def torch_profile(column: str, graph: str, threads: int, calls: int) -> tuple[dict[str, float], dict[str, float]]:
    """Self CPU time per category of `calls` steps (or inferences) of a PyTorch peer, and the largest
    names counted as "other"."""
    import torch._inductor.config as inductor_config
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_prof

    inductor_config.cpp.enable_kernel_profile = True  # Inductor's kernels as profiler events, by name
    call = warmed_call(column, graph, threads)
    with torch_prof(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            call()
    totals: dict[str, float] = collections.Counter()
    others: dict[str, float] = collections.Counter()
    for event in prof.events():
        category = torch_event_category(event)
        ms = event.self_cpu_time_total / 1e3 / calls
        totals[category] += ms
        if category == "other":
            others[event.name[:60]] += ms
    return totals, others


def step_ms(column: str, graph: str, threads: int, calls: int) -> float:
    """The unprofiled median wall time of a call, for checking the profiles' totals."""
    call = warmed_call(column, graph, threads)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--peers", nargs="*", default=["torch", "torch-compile"])
    parser.add_argument("--graphs", nargs="*", default=["train", "infer"])
    args = parser.parse_args()
    for graph in args.graphs:
        columns = {"dslc": dslc_profile(graph, args.threads, args.calls)}
        others = {}
        for peer in args.peers:
            columns[peer], others[peer] = torch_profile(peer, graph, args.threads, args.calls)
        medians = {name: step_ms(name, graph, args.threads, args.calls) for name in columns}
        print(f"\n{WORKLOAD} {graph}, {args.threads} thread(s), ms per call ({args.calls} calls)\n")
        print("| category | " + " | ".join(columns) + " |")
        print("|---" * (len(columns) + 1) + "|")
        for category in CATEGORIES:
            print(f"| {category} | " + " | ".join(f"{c.get(category, 0.0):.2f}" for c in columns.values()) + " |")
        print("| sum of the profile | " + " | ".join(f"{sum(c.values()):.2f}" for c in columns.values()) + " |")
        print("| unprofiled median | " + " | ".join(f"{medians[n]:.2f}" for n in columns) + " |")
        for peer, names in others.items():
            top = sorted(names.items(), key=lambda kv: -kv[1])[:8]
            if top:
                print(f"\n{peer} 'other': " + ", ".join(f"{k} {v:.2f}" for k, v in top))


if __name__ == "__main__":
    main()
