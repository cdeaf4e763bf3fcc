"""Peak memory of the training step for `dslc bench --memory`, dslc against the PyTorch twin.

A process's peak RSS is a high-water mark that cannot be lowered, so each side runs in a process of its own: one that imports what its training step needs, notes its peak RSS so far (the imports), builds the step from files, runs it, and notes the peak again. The increase is what the training step itself costs; both peaks are reported.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from dslc.bench_machine import _matmul_model


def measure_memory(program, batch: dict[str, np.ndarray], *, steps: int, threads: int) -> dict:
    """Peak RSS (MiB) of `steps` training steps on `batch` by dslc (ONNX Runtime, `TrainStep`) and by the
    PyTorch twin, each in a fresh `python -m dslc.bench_memory memory` process, one after the other.

    dslc's child reads the training graph and its manifest entry (what `dslc build` writes); the twin's
    child reads the lowered IR (pickled). `rss_ratio` is dslc's increase over its imports divided by
    PyTorch's: the memory of the training step itself, without the libraries' code and data.
    """
    import json
    import pickle
    import tempfile

    from dslc.ir.graph import toposort

    lowered = program.extras["lowered"]
    train, infer = lowered["train"], lowered["infer"]
    # pickled inputs-first: pickle recurses through a node's inputs unless they are already memoized,
    # and a 1,000-layer model is deeper than the recursion limit
    nodes = toposort([n for _, n in train.outputs + infer.outputs] + list(train.inputs) + list(infer.inputs))
    with tempfile.TemporaryDirectory(prefix="dslc-bench-") as tmp:
        folder = Path(tmp)
        (folder / "train.onnx").write_bytes(program.graphs["train"])
        (folder / "spec.json").write_text(json.dumps(program.manifest["graphs"]["train"], allow_nan=False))
        (folder / "init.onnx").write_bytes(program.graphs["init"])
        np.savez(folder / "batch.npz", **batch)
        (folder / "twin.pickle").write_bytes(pickle.dumps((nodes, train, infer, train.notes["optimizer"])))
        peaks = {kind: _run_child(kind, folder, steps, threads) for kind in ("dslc", "torch")}
    mib = {kind: (p["peak_kib"] / 1024, (p["peak_kib"] - p["baseline_kib"]) / 1024) for kind, p in peaks.items()}
    return {"train_peak_rss_mb": mib["dslc"][0], "train_rss_increase_mb": mib["dslc"][1],
            "torch_train_peak_rss_mb": mib["torch"][0], "torch_train_rss_increase_mb": mib["torch"][1],
            "rss_ratio": mib["dslc"][1] / mib["torch"][1] if mib["torch"][1] > 0 else None, "memory_steps": steps}


def _run_child(kind: str, folder: Path, steps: int, threads: int) -> dict:
    import json
    import subprocess

    import dslc

    # the child must import this very dslc, however this process found it (pytest's rootdir, a script's
    # folder, an installed package)
    env = dict(os.environ)
    root = str(Path(dslc.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    done = subprocess.run([sys.executable, "-m", "dslc.bench_memory", "memory", kind, str(folder), str(steps), str(threads)],
                          check=False, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the {kind} memory measurement failed (exit {done.returncode}): "
                           f"{done.stderr.strip()[-2000:]}")
    return json.loads((folder / f"{kind}.json").read_text())


def _peak_rss_kib() -> int:
    """This process's peak resident set size in KiB: on Linux the kernel's `VmHWM`, not `ru_maxrss`,
    which a child inherits from its parent across fork and exec (a child of a 400 MB bench process
    reports at least 400 MB whatever it does)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:  # not Linux: ru_maxrss, with the inheritance caveat
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB elsewhere


def memory_child(kind: str, folder: str, steps: int, threads: int) -> None:
    """The child process of `measure_memory`: writes `<folder>/<kind>.json` with its peak RSS after the
    imports (`baseline_kib`) and after `steps` training steps (`peak_kib`)."""
    import json

    # The baseline includes each library's one-off start-up, done on a 256×256 matrix product: ONNX
    # Runtime's environment and first session (~9 MB); for torch, autograd, its thread pool and the
    # first `torch.optim` optimizer, whose constructor imports torch._dynamo and sympy (~800 modules,
    # ~70 MB). Neither grows with the model; counting them would compare the libraries, not the steps.
    if kind == "dslc":
        from dslc.runtime.devices import make_session
        from dslc.runtime.session import TrainStep

        warm = np.ones((256, 256), np.float32)
        make_session(_matmul_model(256), "cpu", threads).run(None, {"a": warm, "b": warm})
    else:
        import pickle

        import torch

        import dslc.optim  # noqa: F401 - unpickling the IR imports it
        from dslc.twin import TorchTwin

        torch.set_num_threads(threads)
        warm = torch.nn.Parameter(torch.ones(256, 256))
        (warm @ warm).sum().backward()
        torch.optim.SGD([warm], lr=0.1).step()
    baseline = _peak_rss_kib()
    folder = Path(folder)
    with np.load(folder / "batch.npz") as data:
        batch = dict(data)
    if kind == "dslc":
        from dslc.emit.weights import read_init_graph

        trainer = TrainStep((folder / "train.onnx").read_bytes(), json.loads((folder / "spec.json").read_text()),
                            "cpu", threads, initial=read_init_graph((folder / "init.onnx").read_bytes()))
        step = lambda: trainer.step(batch)["loss"]  # noqa: E731
    else:
        _, train, infer, optimizer = pickle.loads((folder / "twin.pickle").read_bytes())
        twin = TorchTwin(torch, train, infer, optimizer)
        step = lambda: twin.loss_and_step(batch)  # noqa: E731
    losses = [step() for _ in range(steps)]
    report = {"baseline_kib": baseline, "peak_kib": _peak_rss_kib(), "first_loss": losses[0], "last_loss": losses[-1]}
    (folder / f"{kind}.json").write_text(json.dumps(report, allow_nan=False))


if __name__ == "__main__":  # started by `_run_child` only, so a wrong command line is a bug: raise
    if len(sys.argv) != 6 or sys.argv[1] != "memory" or sys.argv[2] not in ("dslc", "torch"):
        raise ValueError(f"usage: python -m dslc.bench_memory memory dslc|torch DIR STEPS THREADS, got {sys.argv[1:]}")
    memory_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
