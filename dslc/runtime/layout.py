"""Where things are in a manifest: the training graphs (one per objective), and the weights and
optimizer state a run carries across them."""
from __future__ import annotations


def train_keys(manifest: dict) -> list[str]:
    """The manifest keys of the training graphs, in the model's order: `train`, or `train.<objective>`..."""
    return [k for k in manifest["graphs"] if k == "train" or k.startswith("train.")]


def eval_key(train_key: str) -> str:
    return "eval" + train_key[len("train"):]


def objective_of(train_key: str) -> str:
    return train_key[len("train."):] if train_key.startswith("train.") else ""


def _union(groups) -> list[dict]:
    seen: dict[str, dict] = {}
    for group in groups:
        for spec in group:
            seen.setdefault(spec["name"], spec)
    return list(seen.values())


def weight_specs(manifest: dict) -> list[dict]:
    """Everything the inference graph needs from training: every parameter and buffer (batch-norm
    statistics, ...), each once, in graph order."""
    graphs = [manifest["graphs"][k] for k in train_keys(manifest)]
    return [{k: v for k, v in spec.items() if k != "next"}
            for spec in _union(g.get(group, []) for g in graphs for group in ("params", "frozen", "buffers"))]


def state_specs(manifest: dict) -> list[dict]:
    """The optimizer state of every objective."""
    return [{k: v for k, v in spec.items() if k != "next"}
            for spec in _union(manifest["graphs"][k].get("state", []) for k in train_keys(manifest))]


def data_specs(manifest: dict, keys: list[str]) -> list[dict]:
    """The data inputs of the graphs `keys` (manifest keys), each name once, in their order."""
    return _union(manifest["graphs"][k]["inputs"] for k in keys)
