"""The embedder's protocol, driven by the manifest and the `.onnx` files alone (no dslc import).

`run_protocol(out_dir, open_graph, batches, run_seed)` does what any program embedding dslc's graphs
does, with one runtime's `open_graph(path, input_names, output_names) -> run(feeds) -> {name: array}`:

1. run the init graph once: the initial value of every parameter, buffer and optimizer state;
2. run the inference graph on the first batch;
3. one training step per batch and objective, in the manifest's objective order, feeding `lr` its
   default, `seed = (run_seed * 1000003 + s * K + k) % 2**31` for objective k of batch s (K objectives),
   the current value of every params/frozen/buffers/state entry by name, then keeping each `next`;
4. run every evaluation graph on the first batch with the final values;
5. run the predict graph (inference with the weights as inputs) on the first batch with the final values.

It returns one flat dict of arrays, the form both drivers write (see `js/driver.mjs`, the same
protocol in JavaScript): `init.<name>`, `infer.<output>`, `train.<objective>.<output>` (one row per
step: the loss and the metrics), `final.<name>`, `eval.<objective>.<output>`, `predict.<output>`; `<objective>` is `-`
for a model with one objective.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SEED_PRIME = 1000003


def load_manifest(out_dir: Path) -> dict:
    (path,) = Path(out_dir).glob("*.dslc.json")
    return json.loads(path.read_text())


def objectives(manifest: dict, kind: str) -> list[tuple[str, dict]]:
    """[(objective, graph entry)] of the `train` or `eval` graphs, in manifest order."""
    graphs = manifest["graphs"]
    return [(key.partition(".")[2] or "-", g) for key, g in graphs.items() if key.partition(".")[0] == kind]


def train_signature(g: dict) -> tuple[list[str], list[str]]:
    inputs = [t["name"] for part in ("inputs", "hyper", "params", "frozen", "buffers", "state") for t in g.get(part, [])]
    updated = [t["next"] for part in ("params", "buffers", "state") for t in g.get(part, [])]
    return inputs, [t["name"] for t in g["outputs"]] + updated


def eval_signature(g: dict) -> tuple[list[str], list[str]]:
    inputs = [t["name"] for part in ("inputs", "params", "buffers") for t in g.get(part, [])]
    return inputs, [t["name"] for t in g["outputs"]]


def scalar(entry: dict, value) -> np.ndarray:
    return np.array(value, dtype=entry["dtype"])


def step_seed(run_seed: int, step: int) -> int:
    return (run_seed * SEED_PRIME + step) % 2**31


def run_protocol(out_dir: Path, open_graph, batches: list[dict[str, np.ndarray]], run_seed: int) -> dict[str, np.ndarray]:
    out_dir = Path(out_dir)
    manifest = load_manifest(out_dir)
    graphs = manifest["graphs"]
    result = {}

    init = graphs["init"]
    names = [t["name"] for t in init["outputs"]]
    values = open_graph(out_dir / init["file"], [], names)({})
    result.update({f"init.{n}": values[n] for n in names})

    infer = graphs["infer"]
    inputs, outputs = [t["name"] for t in infer["inputs"]], [t["name"] for t in infer["outputs"]]
    predicted = open_graph(out_dir / infer["file"], inputs, outputs)({n: batches[0][n] for n in inputs})
    result.update({f"infer.{n}": predicted[n] for n in outputs})

    steps = [(objective, g, open_graph(out_dir / g["file"], *train_signature(g))) for objective, g in objectives(manifest, "train")]
    rows = {objective: [] for objective, _, _ in steps}
    for s, batch in enumerate(batches):
        for k, (objective, g, run) in enumerate(steps):
            feeds = {t["name"]: batch[t["name"]] for t in g["inputs"]}
            for h in g["hyper"]:
                value = step_seed(run_seed, s * len(steps) + k) if h["kind"] == "seed" else h["default"]
                feeds[h["name"]] = scalar(h, value)
            for part in ("params", "frozen", "buffers", "state"):
                feeds.update({t["name"]: values[t["name"]] for t in g.get(part, [])})
            out = run(feeds)
            rows[objective].append([out[t["name"]] for t in g["outputs"]])
            for part in ("params", "buffers", "state"):
                values.update({t["name"]: out[t["next"]] for t in g.get(part, [])})
    for objective, g, _ in steps:
        for i, t in enumerate(g["outputs"]):
            result[f"train.{objective}.{t['name']}"] = np.stack([row[i] for row in rows[objective]])
    result.update({f"final.{n}": v for n, v in values.items()})

    for objective, g in objectives(manifest, "eval"):
        inputs, outputs = eval_signature(g)
        feeds = {n: batches[0][n] if n in batches[0] else values[n] for n in inputs}
        out = open_graph(out_dir / g["file"], inputs, outputs)(feeds)
        result.update({f"eval.{objective}.{n}": out[n] for n in outputs})

    predict = graphs["predict"]
    weights = [t["name"] for part in ("params", "buffers") for t in predict[part]]
    inputs, outputs = [t["name"] for t in predict["inputs"]], [t["name"] for t in predict["outputs"]]
    feeds = {**{n: batches[0][n] for n in inputs}, **{n: values[n] for n in weights}}
    predicted = open_graph(out_dir / predict["file"], inputs + weights, outputs)(feeds)
    result.update({f"predict.{n}": predicted[n] for n in outputs})
    return result
