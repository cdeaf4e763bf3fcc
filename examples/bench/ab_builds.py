"""Interleaved A/B of two builds of one model (`dslc build M.dl -o DIR` before and after a change): the
training step and inference of each, timed by the CPU time of the calling thread with one intra-op
thread, so that other processes on a shared machine change little (a wall-clock A/B there drifts by
tens of percent). Each side gets two sessions, made in the orders A, B and B, A: a session made second
runs 2-4% faster even against an identical one, and the ratio printed (B/A) is the geometric mean of
the two pairings, which cancels that.

    python examples/bench/ab_builds.py BEFORE_DIR AFTER_DIR [--batch 32] [--reps 3] [--calls 8] [--threads 1]

With `--threads N` above 1 the pool's other threads do work the calling thread's CPU time misses, so
each session's calls are timed by wall time instead, in interleaved blocks that start once the process
has gone idle (`dslc.bench_timing.interleaved`, as `dslc bench`): run it under `flock` on a quiet
machine, and read the blocks that ran under CPU pressure (counted per repetition) as suspect.

Both builds must have the same inputs, parameters and state (their first losses are printed, and
inference outputs compared, as a check that they compute the same model).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dslc.bench import synthetic_batch
from dslc.bench_timing import interleaved
from dslc.cli_values import positive_int
from dslc.runtime.session import Predictor, TrainStep


def load(folder: Path) -> tuple[dict, dict[str, bytes]]:
    found = sorted(folder.glob("*.dslc.json"))
    if len(found) != 1:
        raise SystemExit(f"error: `{folder}` holds {'no' if not found else len(found)} `*.dslc.json` manifests; "
                         f"give folders that each hold one build (`dslc build M.dl -o {folder}`)")
    manifest = json.loads(found[0].read_text())
    return manifest, {key: (folder / g["file"]).read_bytes() for key, g in manifest["graphs"].items()}


def differences(before: dict, after: dict) -> list[str]:
    """What the two training graphs' manifests give differently: inputs, parameters, buffers or state by
    name, dtype and shape (a pinned `--dim B=16` against a symbolic `B` is a difference: the batches would)."""
    differ = []
    for key in ("inputs", "params", "buffers", "state"):
        a, b = ([(t["name"], t["dtype"], t["shape"]) for t in side["graphs"]["train"].get(key, [])]
                for side in (before, after))
        differ += [f"{key}: {x} vs {y}" for x, y in zip(a, b) if x != y] + (
            [f"{key}: {len(a)} vs {len(b)}"] if len(a) != len(b) else [])
    return differ


def initial_values(init_graph: bytes) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(init_graph, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {})))


def thread_seconds(fn) -> float:
    start = time.thread_time()
    fn()
    return time.thread_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--batch", type=positive_int, default=32)
    parser.add_argument("--reps", type=positive_int, default=3)
    parser.add_argument("--calls", type=positive_int, default=8, help="timed calls per session and repetition")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="intra-op threads (above 1: wall time in blocks)")
    args = parser.parse_args()
    differ = differences(load(args.before)[0], load(args.after)[0])
    if differ:
        raise SystemExit("error: the two builds do not take the same inputs and weights, so their times cannot be "
                         "compared:\n  " + "\n  ".join(differ[:5]) + "\nhint: build both with the same `-D`, "
                         "`--dim` and `--dtype`")
    sides = {}
    for tag, folder in (("A", args.before), ("B", args.after), ("b", args.after), ("a", args.before)):
        manifest, graphs = load(folder)
        train, infer = manifest["graphs"]["train"], manifest["graphs"]["infer"]
        batch = synthetic_batch(train["inputs"], {"B": args.batch}, np.random.default_rng(0))
        inputs = synthetic_batch(infer["inputs"], {"B": args.batch}, np.random.default_rng(1))
        step = TrainStep(graphs["train"], train, "cpu", args.threads, initial=initial_values(graphs["init"]))
        predictor = Predictor(graphs["infer"], infer, "cpu", args.threads)
        loss, outputs = step.step(batch)["loss"], predictor.run(inputs)
        sides[tag] = (lambda s=step, x=batch: s.step(x), lambda p=predictor, x=inputs: p.run(x), loss, outputs)
    worst = max(float(np.abs(sides["A"][3][k] - sides["B"][3][k]).max()) for k in sides["A"][3])
    print(f"first loss A {sides['A'][2]:.7f} B {sides['B'][2]:.7f}; inference outputs differ by at most {worst:.2e}")
    for rep in range(args.reps):
        if args.threads > 1:
            ms, pressed = wall_ms(sides, args.calls)
            note = f" ({pressed} of {3 * len(ms)} blocks under CPU pressure)"
        else:
            ms, note = cpu_ms(sides, args.calls), ""
        line = []
        for which in ("train", "infer"):
            ratio = (ms[("B", which)] / ms[("A", which)] * ms[("b", which)] / ms[("a", which)]) ** 0.5
            line.append(f"{which} A {ms[('A', which)]:.2f}/{ms[('a', which)]:.2f} ms, "
                        f"B {ms[('B', which)]:.2f}/{ms[('b', which)]:.2f} ms, B/A {ratio:.3f}")
        print(f"rep {rep}: " + "; ".join(line) + note)


def cpu_ms(sides: dict, calls: int) -> dict:
    """Median CPU time of the calling thread per (session, graph), the sessions alternated call by call."""
    times = {(tag, which): [] for tag in sides for which in ("train", "infer")}
    for call in range(calls):
        for tag in ("ABba" if call % 2 == 0 else "abBA"):
            for which, fn in (("train", sides[tag][0]), ("infer", sides[tag][1])):
                times[(tag, which)].append(thread_seconds(fn))
    return {key: 1e3 * float(np.median(v)) for key, v in times.items()}


def wall_ms(sides: dict, calls: int) -> tuple[dict, int]:
    """Median wall time per (session, graph) in interleaved blocks of `calls` calls, and how many blocks
    ran while some task waited for a CPU."""
    jobs = [((tag, which), fn) for tag in "ABba" for which, fn in (("train", sides[tag][0]), ("infer", sides[tag][1]))]
    timings = interleaved(jobs, per_round=calls, rounds=3, warmup=2)
    return {key: t.median_ms for key, t in timings.items()}, sum(t.contended_blocks for t in timings.values())


if __name__ == "__main__":
    main()
