"""Deterministic small random batches, generated from the manifest's shapes, dtypes, classes and ranges."""
from __future__ import annotations

import numpy as np

BATCH = 4         # the batch of every run, and the value `--dim B=` pins for static-shape runtimes
DATA_SEED = 2026
RUN_SEED = 7      # the run seed the dropout seeds derive from


def data_entries(manifest: dict) -> dict[str, dict]:
    """Every data input of the inference, training and evaluation graphs, by name (first seen wins)."""
    entries = {}
    for g in manifest["graphs"].values():
        for t in g.get("inputs", []):
            entries.setdefault(t["name"], t)
    return entries


def batches(manifest: dict, count: int, batch: int, seed: int) -> list[dict[str, np.ndarray]]:
    """`count` batches; a symbolic dimension is `batch` (every model's symbolic dimension is its batch)."""
    rng = np.random.default_rng(seed)
    entries = data_entries(manifest)
    out = []
    for _ in range(count):
        feeds = {}
        for name, t in entries.items():
            shape = tuple(batch if isinstance(d, str) else d for d in t["shape"])
            if np.dtype(t["dtype"]).kind in "iu":
                feeds[name] = rng.integers(0, t.get("classes", 2), shape).astype(t["dtype"])
            elif "sample_weight" in t:  # a loss's per-example weights: >= 0
                feeds[name] = rng.uniform(0, 2, shape).astype(t["dtype"])
            elif "range" in t:
                low, high = t["range"]
                feeds[name] = rng.uniform(low, high, shape).astype(t["dtype"])
            else:
                feeds[name] = rng.standard_normal(shape).astype(t["dtype"])
        out.append(feeds)
    return out
