"""The reference performance workloads, each timed by `dslc bench` in one process against the columns of
`--compare` (the PyTorch twin and its inference exported by torch.onnx.export; the hand-written peers in
examples/bench/peers/: PyTorch eager, torch.compile, JAX), interleaved, never at the same time, every
column checked against dslc's first step before it is timed. Prints markdown tables (medians with the
10th-90th percentile spread) and the machine's state; `--readme FILE` rewrites the block between
`<!-- bench:begin -->` and `<!-- bench:end -->` in FILE with them, so README's table is this output.

    python examples/bench/reference.py [--compare all] [--steps 200] [--memory] [--json bench.json]
                                       [--only mlp-adam ...] [--readme README.md]
    python examples/bench/reference.py --from-json bench.json --readme README.md    # tables of a saved run

Needs PyTorch (the `dev` extra) and, for `jax`, JAX and optax (the `bench` extra).
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
from pathlib import Path

import dslc
from dslc import bench, bench_machine
from dslc.cli_values import positive_int
from dslc.fsutil import atomic_write_text
from dslc.peers import PEERS, parse_compare

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

# name -> (model, -D values, training batch, inference batch)
WORKLOADS = {
    "mlp-sgd-nesterov": ("models/mlp.dl", {}, 128, 1),
    "mlp-adam": ("examples/bench/mlp_adam.dl", {}, 128, 1),
    "lenet-adam": ("models/lenet.dl", {}, 64, 128),
    "gru-adam": ("models/text_rnn.dl", {"vocab": 1000, "length": 40, "dim": 128, "hidden": 128}, 100, 100),
    "transformer-adamw": ("models/transformer_lm.dl", {"rate": 0}, 32, 32),
}
TARGET = 0.8  # issue 14: dslc's training step and inference at most 0.8x the fastest peer's
RSS_TARGET = 1.0  # dslc's training step uses no more memory than PyTorch's
NAMES = {"twin": "twin", "torch-onnx": "torch.onnx.export + ORT", "torch": "PyTorch", "torch-compile": "torch.compile",
         "jax": "JAX"}


def _ms(timing: dict | None) -> str:
    if timing is None:
        return "—"
    return f"{timing['median_ms']:.3f} ({timing['p10_ms']:.3f}–{timing['p90_ms']:.3f})"


def _column(r: dict, name: str, which: str, notes: list[str]) -> str:
    c = r["columns"].get(name)
    if c is None:
        return "—"
    if c["error"]:
        notes.append(f"{r['model']}, {NAMES[name]}: {c['error']}")
        return f"not timed{_superscript(len(notes))}"
    return _ms(c[which])


def _superscript(n: int) -> str:
    return "".join("⁰¹²³⁴⁵⁶⁷⁸⁹"[int(d)] for d in str(n))


def _fastest(r: dict, which: str) -> str:
    found = r["fastest_peer"][which]
    if not found:
        return "—"
    verdict = "met" if found["ratio"] <= TARGET else "not met"
    return f"{found['ratio']:.2f} vs {NAMES[found['column']]} ({verdict})"


def tables(results: dict[str, dict], columns: tuple[str, ...], memory: bool) -> tuple[list[str], list[str]]:
    """The training and inference tables (and with `memory` the peak-RSS one) and their footnotes."""
    notes: list[str] = []
    peers = [c for c in ("twin",) + PEERS if c in columns]
    train = ["| workload | dslc (ms) | " + " | ".join(f"{NAMES[c]} (ms)" for c in peers)
             + f" | ratio to the fastest peer (target ≤ {TARGET}) | roofline bound (ms) | step ÷ bound | FLOP utilization |",
             "|---" * (len(peers) + 6) + "|"]
    infer_columns = (["torch-onnx"] if "twin" in columns else []) + peers
    infer = ["| workload | dslc (ms) | " + " | ".join(f"{NAMES[c]} (ms)" for c in infer_columns)
             + f" | ratio to the fastest peer (target ≤ {TARGET}) |", "|---" * (len(infer_columns) + 3) + "|"]
    rss = ["| workload | train peak RSS dslc / PyTorch twin (MB) | increase over imports dslc / twin (MB) | "
           f"RSS ratio (target ≤ {RSS_TARGET:g}) |", "|---|---|---|---|"]
    for name, r in results.items():
        label = f"{name} (batch {r['batch_size']})"
        utilization = "withheld (contended)" if r["flop_utilization"] is None else f"{100 * r['flop_utilization']:.0f}%"
        train.append("| " + " | ".join([label, _ms({"median_ms": r["train_step_ms"], "p10_ms": r["train_step_p10_ms"],
                                                     "p90_ms": r["train_step_p90_ms"]})]
                                        + [_column(r, c, "train", notes) for c in peers]
                                        + [_fastest(r, "train"), f"{r['roofline_ms']:.3f}",
                                           _over_bound(r), utilization]) + " |")
        infer.append("| " + " | ".join([f"{name} (batch {r['infer_batch_size']})",
                                         _ms({"median_ms": r["infer_ms"], "p10_ms": r["infer_p10_ms"],
                                              "p90_ms": r["infer_p90_ms"]})]
                                        + [_column(r, c, "infer", []) for c in infer_columns]
                                        + [_fastest(r, "infer")]) + " |")
        if memory:
            rss.append(f"| {name} | {r['train_peak_rss_mb']:.0f} / {r['torch_train_peak_rss_mb']:.0f} | "
                       f"{r['train_rss_increase_mb']:.1f} / {r['torch_train_rss_increase_mb']:.1f} | {r['rss_ratio']:.2f} |")
    lines = ["Training step:", "", *train, "", "Inference:", "", *infer]
    if memory:
        lines += ["", "Training-step memory (each side in a fresh process):", "", *rss]
    return lines, notes


def _over_bound(r: dict) -> str:
    over = 1 / r["roofline_fraction"]
    return f"{over:.1f}" if over >= 1 else "below the bound: withheld (contended)"


def command_line(args: argparse.Namespace) -> str:
    """The command that makes the block, with every option that changes it (a block of `--only` workloads
    says so, else it reads as the whole set)."""
    compared = "all" if args.compare == parse_compare("all") else ",".join(args.compare)
    return "python examples/bench/reference.py --compare " + compared + (
        f" --steps {args.steps}" if args.steps != 200 else "") + (
        f" --threads {args.threads}" if args.threads != 2 else "") + (" --memory" if args.memory else "") + (
        " --tune" if args.tune else "") + (" --only " + " ".join(args.only) if args.only else "")


def versions() -> str:
    import onnxruntime

    found = [f"onnxruntime {onnxruntime.__version__}"]
    for module in ("torch", "jax"):
        try:
            found.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            pass
    return ", ".join(found)


def block(results: dict[str, dict], check: dict, columns: tuple[str, ...], steps: int, memory: bool,
          command: str, date: str | None = None, libraries: str | None = None) -> list[str]:
    """The generated README block: how it was made (`date` and `libraries` of a saved run; default: today,
    this environment's), the machine's state, the tables, the footnotes."""
    gemm = max(r["gemm_gflops"] for r in results.values())
    bandwidth = max(r["bandwidth_gbs"] for r in results.values())
    contended = [name for name, r in results.items() if r["machine_check"]["contended"]]
    state = (f"**contended** during {len(contended)} of {len(results)} workloads ({', '.join(contended)}): read "
             f"ratios, not times, and expect them closer to 1 than on an idle machine" if contended else "not contended")
    table, notes = tables(results, columns, memory)
    threads = f"{check['threads']} thread{'s' if check['threads'] > 1 else ''}"
    return [
        f"Generated by `{command}` on {date or datetime.date.today().isoformat()}: {check['cores']} cores "
        f"({bench_machine.machine()['machine']}), {libraries or versions()}; {threads}; medians of {steps} "
        f"calls per column with the 10th–90th percentile in parentheses; measured GEMM peak {gemm:.0f} GFLOP/s, "
        f"memory bandwidth {bandwidth:.1f} GB/s. Machine before the first workload: "
        f"{bench_machine.scaling_text(check)}, load average "
        f"{check['load_average']:.1f} on {check['cores']} cores; {state}.",
        "", *table, *([""] + [f"{_superscript(i + 1)} {note}" for i, note in enumerate(notes)] if notes else []),
        *_warnings(results),
    ]


def _warnings(results: dict[str, dict]) -> list[str]:
    """The bench's warnings of each workload (blocks timed under CPU pressure, withheld utilizations)."""
    found = [f"- {name}: {w}" for name, r in results.items() for w in r.get("warnings", ())]
    return ["", "Warnings of this run:", "", *found] if found else []


def rewrite_readme(path: Path, lines: list[str]) -> None:
    text = path.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no `{BEGIN}` … `{END}` block to rewrite")
    replacement = BEGIN + "\n" + "\n".join(lines) + "\n" + END
    atomic_write_text(path, pattern.sub(lambda _: replacement, text))


def tuned(model: Path, defines: dict, batch: int, threads: int):
    """The program `dslc bench --tune --batch-size BATCH --threads THREADS` runs, its choices printed."""
    from dslc import define_text
    from dslc.compiler import compile_file
    from dslc.runtime.tune import TuneSetting, tuning_lines

    program = compile_file(model, defines={k: define_text(k, v) for k, v in defines.items()},
                           tune=TuneSetting(threads=threads, batch=batch))
    print("\n".join(tuning_lines(program.manifest["tuning"], program.extras["tuned"])), flush=True)
    return program


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", type=parse_compare, default=parse_compare("all"),
                        help="columns beside dslc: `all` (default) or a comma-separated list of twin, torch, "
                             "torch-compile, jax")
    parser.add_argument("--steps", type=positive_int, default=200)
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--memory", action="store_true", help="also measure the training step's peak RSS")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", nargs="*", choices=list(WORKLOADS))
    parser.add_argument("--tune", action="store_true",
                        help="build each workload as `dslc bench --tune` does: kernel choices timed on this machine "
                             "at the workload's batch and --threads")
    parser.add_argument("--readme", type=Path, help=f"rewrite the {BEGIN} … {END} block of this file")
    parser.add_argument("--from-json", type=Path, help="print (and with --readme write) the tables of a run saved "
                                                        "with --json instead of running the workloads")
    return parser


def main() -> None:
    args = arguments().parse_args()
    if args.from_json:
        try:
            saved = json.loads(args.from_json.read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"error: cannot read `{args.from_json}`: {getattr(e, 'strerror', None) or e}") from None
        results = saved["workloads"]
        first = next(iter(results.values()))
        columns = tuple(name for name in ("twin",) + PEERS if name in first["columns"])
        lines = block(results, saved["machine_check"], columns, first["steps"], first["train_peak_rss_mb"] is not None,
                      saved["command"], saved.get("date"), saved.get("versions"))
        print("\n".join(lines))
        if args.readme:
            rewrite_readme(args.readme, lines)
        return
    check = bench_machine.contention(args.threads)
    print(f"machine: {bench_machine.scaling_text(check)}; load average "
          f"{check['load_average']:.1f} on {check['cores']} cores" + ("; CONTENDED: " + "; ".join(check["reasons"])
                                                                       if check["contended"] else ""), flush=True)
    results = {}
    for name, (model, defines, batch, infer_batch) in WORKLOADS.items():
        if args.only and name not in args.only:
            continue
        program = dslc.compile(ROOT / model, **defines) if not args.tune else tuned(ROOT / model, defines, batch,
                                                                                     args.threads)
        results[name] = bench.run(program, batch_size=batch, infer_batch_size=infer_batch, steps=args.steps,
                                  compare=args.compare, memory=args.memory, threads=args.threads).as_json()
        r = results[name]
        print(f"{name}: dslc {r['train_step_ms']:.3f} ms, fastest peer {_fastest(r, 'train')}; inference "
              f"{r['infer_ms']:.3f} ms, {_fastest(r, 'infer')}" + "".join(f"\n  warning: {w}" for w in r["warnings"]),
              flush=True)
    command = command_line(args)
    lines = block(results, check, args.compare, args.steps, args.memory, command)
    print("\n" + "\n".join(lines))
    if args.json:
        atomic_write_text(args.json, json.dumps({"machine": bench_machine.machine(), "machine_check": check,
                                                 "command": command, "date": datetime.date.today().isoformat(),
                                                 "versions": versions(), "workloads": results}, indent=2) + "\n")
    if args.readme:
        rewrite_readme(args.readme, lines)


if __name__ == "__main__":
    main()
