"""A paper estimate of the all-reduce cost of data-parallel training, per step, for each bundled model:
a ring all-reduce sends and receives `bytes = parameters × 4 × 2(N−1)/N` per rank (float32 gradients),
so its time is at least bytes / bandwidth, whatever the batch. Adding machines pays when that time is
small next to the compute of a rank's share of the batch.

    python examples/scale/allreduce_estimate.py        # a markdown table (README "Scaling out")

dslc's `Allreduce` carries the row-weighted sums in the graphs' float type (float32 unless compiled with
`--dtype float64`), so these are its bytes, plus a few for the loss and metrics.
"""
from __future__ import annotations

from pathlib import Path

import dslc

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "models").glob("*.dl")) + ["examples/digits/digits.dl"]
LINKS = {"10 Gbit/s": 10e9 / 8, "100 Gbit/s": 100e9 / 8}  # bytes per second
WORKERS = (2, 8)


def ring_bytes(parameters: int, workers: int, bytes_per_value: int = 4) -> float:
    return parameters * bytes_per_value * 2 * (workers - 1) / workers


def main() -> None:
    header = ["model", "parameters"] + [f"MB per step, N={n}" for n in WORKERS]
    header += [f"ms at {link}, N={n}" for link in LINKS for n in WORKERS]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for path in MODELS:
        program = dslc.compile(ROOT / path)
        p = program.num_parameters
        cells = [f"[{Path(path).stem}]({path})", f"{p:,}"]
        cells += [f"{ring_bytes(p, n) / 1e6:.3f}" for n in WORKERS]
        cells += [f"{1e3 * ring_bytes(p, n) / speed:.3f}" for speed in LINKS.values() for n in WORKERS]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
