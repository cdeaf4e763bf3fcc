"""How much of `dslc train`'s time goes outside the training and evaluation steps (checkpoints, history,
reporting, the loop itself): issue 14's "≤ 5% of wall time" target, measured on examples/digits.

    python examples/bench/train_overhead.py [--epochs 100] [--batch-size 32] [--threads 1]

An epoch's `time` in the history covers its training steps and validation; the time from one epoch's
start to the next's minus that is the epoch's overhead. Startup (sessions, data loading, writing the
graphs; compiling is not counted) is reported apart. The run folder goes to a temporary directory on the
same file system as the current directory, since the checkpoint's cost is the disk's fsync.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import dslc
from dslc.cli_values import positive_int
from dslc.runtime.train import Reporter

DIGITS = Path(__file__).resolve().parents[1] / "digits"


class EpochClock(Reporter):
    def __init__(self):
        self.starts: list[float] = []
        self.finished = 0.0

    def epoch_start(self, epoch, epochs, steps):
        self.starts.append(time.perf_counter())

    def end(self, history, info):
        self.finished = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=positive_int, default=100)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--threads", type=positive_int, default=1)
    args = parser.parse_args()
    program = dslc.compile(DIGITS / "digits.dl")
    clock = EpochClock()
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        started = time.perf_counter()
        history = program.train(DIGITS / "train.npz", val=DIGITS / "test.npz", epochs=args.epochs,
                                batch_size=args.batch_size, out_dir=Path(tmp) / "run", threads=args.threads,
                                reporter=clock)
        wall = time.perf_counter() - started
        size = os.path.getsize(Path(tmp) / "run" / "checkpoint.npz")
    loop = clock.finished - clock.starts[0]
    steps = sum(r["time"] for r in history)
    overhead = [(b - a) - r["time"] for a, b, r in zip(clock.starts, [*clock.starts[1:], clock.finished], history)]
    print(f"digits, {args.epochs} epochs of batch {args.batch_size}, {args.threads} thread(s), load "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"  wall {wall:.2f} s = startup {wall - loop:.2f} s + loop {loop:.2f} s (steps and validation {steps:.2f} s)")
    print(f"  outside the steps, per epoch: median {1e3 * statistics.median(overhead):.2f} ms, "
          f"mean {1e3 * statistics.mean(overhead):.2f} ms = {100 * (loop - steps) / loop:.1f}% of the loop, "
          f"{100 * (wall - steps) / wall:.1f}% of the wall time")
    print(f"  checkpoint {size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
