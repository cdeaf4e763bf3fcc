"""A run's training state exported for a loop in another runtime (`dslc export --train-state`): the
graphs and a manifest whose `lr` defaults, optimizer settings and `train_state` say where the run
stood, and an init graph holding its parameters, buffers and optimizer state, with the same in its
metadata (`dslc.epoch`, `dslc.global_step`, `dslc.seed`, `dslc.lr`)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def export_train_state(program, weights, out_dir: str | os.PathLike) -> list[Path]:
    """`Program.export_train_state`."""
    from dslc.diagnostics import DataError
    from dslc.emit.weights import init_graph_bytes
    from dslc.program import Program
    from dslc.runtime.checkpoint import load_checkpoint
    from dslc.runtime.plateau import STATE_KEY as PLATEAU_STATE_KEY

    if not program.trainable:
        raise DataError(f"model `{program.name}` has no loss, so it has no training state to export",
                        hint="export the inference model with `--weights` instead")
    # checked on the headers before reading
    ckpt = load_checkpoint(weights, program.manifest, defines=program.defines)
    meta = {"dslc.version": program.manifest["dslc"], "dslc.model": program.name, "dslc.graph": "init",
            **{f"dslc.{k}": str(ckpt.meta[k]) for k in ("epoch", "global_step", "seed") if k in ckpt.meta}}
    manifest = with_train_state(program.manifest, ckpt.meta)
    if ckpt.meta.get("lr") is not None:
        meta["dslc.lr"] = repr(float(ckpt.meta["lr"]))
        manifest = with_lr_default(manifest, float(ckpt.meta["lr"]))
    plateau = ckpt.meta.get(PLATEAU_STATE_KEY) or {}
    if plateau.get("scale", 1.0) != 1.0:
        manifest = with_lr_reduced(manifest, plateau["scale"], plateau.get("min_lr", 0.0))
        rates = {h["default"] for graph in manifest["graphs"].values() for h in graph.get("hyper", [])
                 if h.get("kind") == "lr"}
        if len(rates) == 1:  # the rate the run ended at, which `--resume STATE` compares its own with
            meta["dslc.lr"] = repr(rates.pop())
    init = init_graph_bytes(program.name, manifest["graphs"]["init"]["outputs"], {**ckpt.params, **ckpt.state},
                            meta)
    return Program(program.name, manifest, {**program.graphs, "init": init}).build(out_dir)


def with_train_state(manifest: dict, meta: dict) -> dict:
    """A copy of `manifest` with `"train_state"`: where the exported run stood (`epoch` epochs and
    `global_step` batch steps done, its `seed`), which a loop continuing it needs for the dropout seeds and
    the sample order, and which runtimes without access to ONNX metadata (onnxruntime-node and -web)
    cannot read from the init graph."""
    state = {key: int(meta[key]) for key in ("epoch", "global_step", "seed") if key in meta}
    return {**manifest, "train_state": state} if state else manifest


def with_lr_reduced(manifest: dict, scale: float, min_lr: float) -> dict:
    """A copy of `manifest` whose `lr` defaults and optimizer settings are the rates a run's
    `reduce_lr_on_plateau` had reduced them to: each max(base · scale, min(base, min_lr)), the rate
    `dslc.runtime.plateau.RunRates` feeds (as a float32's shortest decimal, the value the graph reads)."""
    return _with_rates(manifest, lambda base: float(str(np.float32(max(base * scale, min(base, min_lr))))))


def with_lr_default(manifest: dict, lr: float) -> dict:
    """A copy of `manifest` whose `lr` hyper-inputs (the training graph's, and the update graph's of a
    `--split` build) default to `lr`, and whose optimizer settings say so: the rate a run was trained
    with, for a loop that feeds the defaults."""
    return _with_rates(manifest, lambda base: lr)


def _with_rates(manifest: dict, rate) -> dict:
    """A copy of `manifest` with `rate(base)` for each learning rate: the optimizers' `lr` settings and the
    `lr` hyper-inputs' defaults."""
    copy = json.loads(json.dumps(manifest, allow_nan=False))
    optimizers = [copy.get("optimizer")] + [graph.get("optimizer") for graph in copy["graphs"].values()]
    for optimizer in optimizers:
        if optimizer is not None and "lr" in optimizer.get("settings", {}):
            optimizer["settings"]["lr"] = rate(optimizer["settings"]["lr"])
    for graph in copy["graphs"].values():
        for hyper in graph.get("hyper", []):
            if hyper.get("kind") == "lr":
                hyper["default"] = rate(hyper["default"])
    return copy
