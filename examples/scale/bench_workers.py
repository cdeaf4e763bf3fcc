"""Training and batch-inference throughput with 1 and 2 workers on this machine (README "Scaling out").

    python examples/scale/bench_workers.py [--epochs 4]

Training: samples/s of `dslc train` (the median epoch after the first, start-up excluded) in one process
with the fused step, in one process with `--accumulate 2` (the split graphs), and data-parallel in 2 MPI
workers (`--workers 2`, one ONNX Runtime thread each; the single process gets both cores). Inference:
rows/s of `dslc predict --dask` on a LocalCluster of 1 and of 2 workers over a memory-mapped `.npy`.
Needs the `mpi` and `dask` extras.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import dslc
from dslc.runtime import dask_predict

ROOT = Path(__file__).resolve().parents[2]

# name -> (model, -D values, batch size, rows of synthetic data, or None for the bundled digits)
WORKLOADS = {
    "digits": ("examples/digits/digits.dl", {"rate": 0}, 64, None),
    "mlp": ("models/mlp.dl", {}, 128, 16384),
    "lenet": ("models/lenet.dl", {}, 64, 2048),
}


def training_data(program, rows: int | None) -> dict[str, np.ndarray]:
    if rows is None:
        with np.load(ROOT / "examples/digits/train.npz") as d:
            return {k: d[k] for k in d.files}
    rng = np.random.default_rng(0)
    data = {}
    for t in program.manifest["graphs"]["train"]["inputs"]:
        shape = [rows, *t["shape"][1:]]
        data[t["name"]] = (rng.integers(0, t["classes"], shape) if "classes" in t
                           else rng.random(shape, dtype=np.float32))
    return data


def samples_per_s(history: list[dict]) -> float:
    return statistics.median(h["samples_per_s"] for h in history[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    print("| workload | 1 process, fused step (samples/s) | 1 process, --accumulate 2 | 2 MPI workers | "
          "2 workers / 1 process | predict --dask, 1 worker (rows/s) | 2 workers |")
    print("|---|---|---|---|---|---|---|")
    for name, (path, defines, batch, rows) in WORKLOADS.items():
        program = dslc.compile(ROOT / path, split=True, **defines)
        data = training_data(program, rows)
        with tempfile.TemporaryDirectory() as tmp:
            runs = {}
            for label, extra in (("fused", {}), ("accumulate", {"accumulate": 2}), ("mpi", {"workers": 2})):
                history = program.train(data, epochs=args.epochs, batch_size=batch, out_dir=Path(tmp) / label,
                                        **extra)
                runs[label] = samples_per_s(history)
            spec = program.manifest["graphs"]["infer"]
            x = np.random.default_rng(1).random([200_000, *spec["inputs"][0]["shape"][1:]], dtype=np.float32)
            np.save(Path(tmp) / "x.npy", x)
            predict = {}
            for workers in (1, 2):
                started = time.perf_counter()
                dask_predict.predict(program, Path(tmp) / "x.npy", Path(tmp) / f"y{workers}.npz", Path(tmp) / "fused",
                                     workers=workers, chunk_rows=16384)
                predict[workers] = len(x) / (time.perf_counter() - started)
        print(f"| {name} (batch {batch}) | {runs['fused']:,.0f} | {runs['accumulate']:,.0f} | {runs['mpi']:,.0f} | "
              f"{runs['mpi'] / runs['fused']:.2f} | {predict[1]:,.0f} | {predict[2]:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
