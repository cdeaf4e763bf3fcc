"""What the tests of the embedding examples (examples/python, examples/node) share: the models they train,
their data, and the epoch lines both examples print (`epoch E: loss L accuracy A`), read back to be
compared with `dslc train`'s history."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from data import batches
from runtimes import RuntimeUnavailable, node_with_packages
from test_conformance import ROOT

# dropout (seeds), batch norm (buffers), a GRU, momentum SGD, two objectives in turn (frozen parameters),
MODELS = {"digits": ROOT / "examples/digits/digits.dl", "batchnorm": ROOT / "tests/conformance/models/batchnorm.dl",
          "text_rnn": ROOT / "models/text_rnn.dl", "mlp": ROOT / "models/mlp.dl", "gan": ROOT / "models/gan.dl",
          # a schedule, macro F1 and top-3; binary F1 and recall, ROC and PR AUC; class and sample weights
          "digits_recipe": ROOT / "examples/digits/digits_recipe.dl",
          "binary_text": ROOT / "tests/conformance/models/binary_text.dl",
          "weighted_losses": ROOT / "tests/conformance/models/weighted_losses.dl"}
ROWS, BATCH, SEED = 50, 16, 3  # three full batches and a partial one


def model_data(program, path: Path, bundled: bool = True, split: str = "train") -> Path:
    """The bundled digits data for digits (`bundled`; its test.npz for the `val` split); otherwise ROWS random
    rows of the training inputs (another draw for `val`), written to `path`."""
    if program.name.startswith("digits") and bundled:
        return ROOT / f"examples/digits/{'train' if split == 'train' else 'test'}.npz"
    train_inputs = {t["name"] for key, g in program.manifest["graphs"].items() if key.split(".")[0] == "train"
                    for t in g["inputs"]}
    (rows,) = batches(program.manifest, 1, ROWS, seed=11 if split == "train" else 12)
    np.savez(path, **{name: value for name, value in rows.items() if name in train_inputs})
    return path


def epoch_lines(stdout: str) -> list[dict[str, float]]:
    epochs = []
    for line in stdout.splitlines():
        if line.startswith("epoch "):
            words = line.partition(": ")[2].split()
            epochs.append({"epoch": int(line.split()[1].rstrip(":")),
                           **{name: float(value) for name, value in zip(words[::2], words[1::2])}})
    return epochs


def logged(history) -> list[dict[str, float]]:
    """`dslc train`'s epochs, as `epoch_lines` reads the examples': the epoch, the losses and the metrics."""
    kept = [key for key, value in history[0].items() if key not in ("steps", "time", "samples_per_s")
            and key.split(".")[-1] != "lr" and not isinstance(value, list)]  # summed matrices: not printed
    return [{key: float(entry[key]) for key in kept} for entry in history]


def assert_same_epochs(printed: list[dict[str, float]], expected: list[dict[str, float]], rtol: float):
    assert [e["epoch"] for e in printed] == [e["epoch"] for e in expected]
    for mine, theirs in zip(printed, expected):
        assert mine.keys() == theirs.keys()
        np.testing.assert_allclose([mine[k] for k in theirs], list(theirs.values()), rtol=rtol)


def node_example(backend: str, directory: Path, script: str = "train.mjs") -> list[str]:
    """The command running examples/node/`script` with onnxruntime-`backend` (skips where node or the package is
    absent): a copy of the example in `directory`, beside the conformance suite's installed packages."""
    try:
        node = node_with_packages(backend)
    except RuntimeUnavailable as e:
        pytest.skip(str(e))
    for source in (ROOT / "examples/node").glob("*.mjs"):
        shutil.copy(source, directory / source.name)
    if not (directory / "node_modules").exists():
        (directory / "node_modules").symlink_to(ROOT / "tests/conformance/js/node_modules", target_is_directory=True)
    flags = ["--liftoff-only"] if backend == "web" else []  # see runtimes.js_runtime
    return [node, *flags, str(directory / script), "--backend", backend]
