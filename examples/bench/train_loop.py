"""A whole training run, end to end: `dslc train` of examples/digits against the plain PyTorch loop a user
would write for the same model (`DataLoader`, `for x, y in loader: loss.backward(); opt.step()`, an
evaluation pass and a `torch.save` checkpoint per epoch), and where `dslc train`'s wall time goes.

    python examples/bench/train_loop.py [--epochs 30] [--batch-size 32] [--repeats 3] [--threads N] [--cpu]
                                        [--json FILE]

`--threads N` gives both sides N threads (`dslc train --threads N`, `torch.set_num_threads(N)`); by default
each takes its own default (all cores). On a contended machine PyTorch's spinning threads suffer much
more than ONNX Runtime's, so compare with `--threads 1` there.

Two measurements:
  * each side as a fresh process, timed from outside (Python start-up and imports included: what a user
    waits for), the sides alternating `--repeats` times;
  * inside one process, `dslc train` (the CLI's `main`, compile included) with the training and
    evaluation steps timed as they run: the share of the wall time spent outside them (compiling,
    batching, metrics, checkpoints, the console) — issue 14's target is ≤ 5%. (train_overhead.py measures
    the same share per epoch from the history's epoch times, without wrapping anything.)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dslc.cli_values import positive_int

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits"


def torch_run(epochs: int, batch_size: int, out_dir: Path, threads: int | None = None) -> float:
    """The PyTorch loop for digits.dl (64-128-128-10, ReLU, dropout 0.2, Adam lr 0.002, cross-entropy plus
    1e-5·Σw² on the weights); returns the final test accuracy."""
    import numpy as np
    import torch
    if threads:
        torch.set_num_threads(threads)
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    train, test = np.load(DIGITS / "train.npz"), np.load(DIGITS / "test.npz")
    loader = DataLoader(TensorDataset(torch.from_numpy(train["image"]), torch.from_numpy(train["digit"])),
                        batch_size=batch_size, shuffle=True)
    test_loader = DataLoader(TensorDataset(torch.from_numpy(test["image"]), torch.from_numpy(test["digit"])),
                             batch_size=batch_size)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 128), nn.ReLU(),
                          nn.Dropout(0.2), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.002)
    weights = [m.weight for m in model if isinstance(m, nn.Linear)]
    accuracy = 0.0
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y) + 1e-5 * sum((w ** 2).sum() for w in weights)
            loss.backward()
            opt.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test_loader:
                correct += int((model(x).argmax(1) == y).sum())
        accuracy = correct / len(test["digit"])
        torch.save(model.state_dict(), out_dir / "model.pt")
    return accuracy


def dslc_args(epochs: int, batch_size: int, out_dir: Path, threads: int | None = None) -> list[str]:
    return ["train", str(DIGITS / "digits.dl"), "--data", str(DIGITS / "train.npz"), "--val", str(DIGITS / "test.npz"),
            "--epochs", str(epochs), "--batch-size", str(batch_size), "-o", str(out_dir)] + \
        (["--threads", str(threads)] if threads else [])


def dslc_breakdown(epochs: int, batch_size: int, threads: int | None = None, cpu: bool = False) -> dict:
    """`dslc train` in this process (the CLI's `main`, its output discarded) with its parts timed as they
    run: compiling, creating the ONNX Runtime sessions, the training loop (`fit`) and inside it the
    training steps and the evaluation runs. Seconds of each.

    `cpu`: also the main thread's CPU time around the runs (`*_cpu_s`; with one thread ONNX Runtime computes
    on the calling thread, so this is the Python and system work outside the runs, which a loaded machine
    does not inflate as it does wall time) and the other threads' (the sessions made ahead, the saver).
    Reading a thread's CPU clock is a system call (~1 µs), which the wall times then include."""
    import contextlib
    import io

    from dslc import compile_cache
    from dslc.cli import main
    from dslc.runtime import session, train

    spent = {"compile": 0.0, "sessions": 0.0, "loop": 0.0, "train_steps": 0.0, "eval_steps": 0.0}
    # compiling, or reading the program compiled by the fresh processes before (`dslc/compile_cache.py`)
    timers = [(compile_cache, "compile_cached", "compile"), (session.TrainStep, "__init__", "sessions"),
              (session.Evaluator, "__init__", "sessions"), (train, "fit", "loop"),
              (session.TrainStep, "step", "train_steps"), (session.Evaluator, "run", "eval_steps")]

    runs: list[tuple[float, float, str]] = []  # (start, end, what) of every ONNX Runtime run
    cpu_marks: list[tuple[float, float]] = []  # with `cpu`: the main thread's CPU clock at their start, end
    run_original = session._run

    def run(sess, binding, what):
        t0 = time.perf_counter()
        try:
            return run_original(sess, binding, what)
        finally:
            runs.append((t0, time.perf_counter(), what))

    def run_cpu(sess, binding, what):
        c0 = time.thread_time()
        try:
            return run(sess, binding, what)
        finally:
            cpu_marks.append((c0, time.thread_time()))

    def timed(original, key):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - t0
        return wrapper

    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in timers] + [(session, "_run", run_original)]
    for (owner, name, key), (_, _, original) in zip(timers, originals):
        setattr(owner, name, timed(original, key))
    session._run = run_cpu if cpu else run
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            c0, process0 = time.thread_time(), time.process_time()
            t0 = time.perf_counter()
            code = main(dslc_args(epochs, batch_size, Path(tmp) / "run", threads))
            wall = time.perf_counter() - t0
            c1, process1 = time.thread_time(), time.process_time()
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
    if code != 0:
        raise SystemExit(f"dslc train failed with exit code {code}")
    steps = spent["train_steps"] + spent["eval_steps"]
    gaps = [(b[0] - a[1], a[2] == b[2] == "the training step") for a, b in zip(runs, runs[1:])]
    cpu_parts = {}
    if cpu:
        training = [training for _, training in gaps]
        cpu_gaps = [b[0] - a[1] for a, b in zip(cpu_marks, cpu_marks[1:])]
        cpu_parts = {"main_cpu_s": c1 - c0, "other_threads_cpu_s": (process1 - process0) - (c1 - c0),
                     "runs_cpu_s": sum(end - start for start, end in cpu_marks),
                     "before_first_run_cpu_s": cpu_marks[0][0] - c0,
                     "between_training_runs_cpu_s": sum(g for g, t in zip(cpu_gaps, training) if t),
                     "around_validation_cpu_s": sum(g for g, t in zip(cpu_gaps, training) if not t),
                     "after_last_run_cpu_s": c1 - cpu_marks[-1][1]}
    return {"wall_s": wall, **{f"{k}_s": v for k, v in spent.items()}, "outside_steps_share": 1 - steps / wall,
            "loop_outside_steps_share": 1 - steps / spent["loop"],
            # the same wall time split at ONNX Runtime's runs: the runs, then what lies between them
            "runs_s": sum(end - start for start, end, _ in runs), "before_first_run_s": runs[0][0] - t0,
            "between_training_runs_s": sum(g for g, training in gaps if training),
            "training_run_gaps": sum(training for _, training in gaps),
            "around_validation_s": sum(g for g, training in gaps if not training),
            "after_last_run_s": t0 + wall - runs[-1][1], **cpu_parts}


def child_seconds(command: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=positive_int, default=30)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--threads", type=positive_int, help="threads of both sides (default: each its own default)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cpu", action="store_true",
                        help="also split the main thread's CPU time at the runs (a second in-process run; with "
                             "--threads 1 the measure a loaded machine disturbs least)")
    parser.add_argument("--torch-child", type=Path, help=argparse.SUPPRESS)  # run the PyTorch loop, write accuracy
    args = parser.parse_args()
    if args.torch_child:
        args.torch_child.write_text(str(torch_run(args.epochs, args.batch_size, args.torch_child.parent, args.threads)))
        return

    times = {"dslc": [], "torch": []}
    with tempfile.TemporaryDirectory() as tmp:
        accuracy_file = Path(tmp) / "accuracy.txt"
        # untimed: the program compiled once before, as after any earlier run or `dslc build` (compile cache)
        child_seconds([sys.executable, "-m", "dslc", *dslc_args(1, args.batch_size, Path(tmp) / "warm", args.threads)])
        for repeat in range(args.repeats):  # a fresh run directory each time: dslc train refuses to overwrite a run
            times["dslc"].append(child_seconds([sys.executable, "-m", "dslc", *dslc_args(
                args.epochs, args.batch_size, Path(tmp) / f"run{repeat}", args.threads)]))
            threads = ["--threads", str(args.threads)] if args.threads else []
            times["torch"].append(child_seconds([sys.executable, __file__, "--epochs", str(args.epochs), "--batch-size",
                                                 str(args.batch_size), *threads, "--torch-child", str(accuracy_file)]))
        torch_accuracy = float(accuracy_file.read_text())
    dslc_s, torch_s = statistics.median(times["dslc"]), statistics.median(times["torch"])
    inside = dslc_breakdown(args.epochs, args.batch_size, args.threads)
    threads = f"{args.threads} thread(s) each" if args.threads else "default threads"
    print(f"digits, {args.epochs} epochs of batch {args.batch_size}, {threads}, each side a fresh process (medians "
          f"of {args.repeats}, alternating; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores):")
    print(f"  dslc train     {dslc_s:7.2f} s  {sorted(round(t, 2) for t in times['dslc'])}")
    print(f"  PyTorch loop   {torch_s:7.2f} s  {sorted(round(t, 2) for t in times['torch'])}   final test accuracy "
          f"{torch_accuracy:.3f}")
    print(f"  PyTorch / dslc {torch_s / dslc_s:7.2f}×  (issue 14's target: ≥ 3)")
    print(f"inside one process: `dslc train` {inside['wall_s']:.2f} s: compiling {inside['compile_s']:.2f} s, "
          f"the training loop {inside['loop_s']:.2f} s, of which making the sessions {inside['sessions_s']:.2f} s, "
          f"training steps {inside['train_steps_s']:.2f} s and evaluation {inside['eval_steps_s']:.2f} s")
    print(f"  outside the training and evaluation steps: {100 * inside['outside_steps_share']:.0f}% of the wall time "
          f"(target ≤ 5%); {100 * inside['loop_outside_steps_share']:.0f}% of the training loop's")
    between = inside["between_training_runs_s"]
    print(f"  split at ONNX Runtime's runs ({inside['runs_s']:.2f} s; the steps above also hold their own Python: "
          f"binding, reading the loss): before the first {1e3 * inside['before_first_run_s']:.1f} ms, between two "
          f"training steps {1e3 * between:.1f} ms ({1e6 * between / max(inside['training_run_gaps'], 1):.1f} µs each), "
          f"around validation and the epochs' ends {1e3 * inside['around_validation_s']:.1f} ms, after the last "
          f"{1e3 * inside['after_last_run_s']:.1f} ms")
    cpu = dslc_breakdown(args.epochs, args.batch_size, args.threads, cpu=True) if args.cpu else None
    if cpu:
        between = cpu["between_training_runs_cpu_s"]
        print(f"  main thread's CPU time (a second run in this process): {1e3 * cpu['main_cpu_s']:.0f} ms, of which "
              f"outside the runs {1e3 * (cpu['main_cpu_s'] - cpu['runs_cpu_s']):.1f} ms: before the first "
              f"{1e3 * cpu['before_first_run_cpu_s']:.1f}, between two training steps {1e3 * between:.1f} "
              f"({1e6 * between / max(cpu['training_run_gaps'], 1):.1f} µs each), around validation and the epochs' "
              f"ends {1e3 * cpu['around_validation_cpu_s']:.1f}, after the last "
              f"{1e3 * cpu['after_last_run_cpu_s']:.1f}; "
              f"other threads (sessions made ahead, the saver) {1e3 * cpu['other_threads_cpu_s']:.1f} ms")
    if args.json:
        args.json.write_text(json.dumps({"dslc_s": times["dslc"], "torch_s": times["torch"], "ratio": torch_s / dslc_s,
                                         "torch_accuracy": torch_accuracy, "inside": inside, "cpu": cpu},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
