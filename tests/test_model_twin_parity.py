"""Differential testing: every model in models/ trained 50 steps with each optimizer by the compiled ONNX
training graphs (ONNX Runtime) and by its PyTorch twin (`dslc.twin.TorchTwin`: the same forward IR run by
PyTorch eager, differentiated by autograd, updated by `torch.optim`), from the same initial values on the
same batches. Models are shrunk with `-D` where their defaults are large, dropout is set to 0 (the two
draw different masks). The GAN alternates its objectives as `dslc train` does, the twins sharing their
parameters.

Each case prints the worst relative error over the 50 steps — of the loss, and of each parameter tensor
(L2 norm of the difference over the norm of torch's) — and asserts it is below `TOLERANCE`.
"""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dslc.bench import symbols, synthetic_batch  # noqa: E402
from dslc.compiler import compile_file  # noqa: E402
from dslc.twin import TorchTwin, make_optimizer  # noqa: E402
from golden import ROOT  # noqa: E402
from helpers import TrainDriver  # noqa: E402

torch.set_num_threads(1)

STEPS = 50
BATCH = 2
TOLERANCE = 2e-3  # float32 over 50 steps; measured worst ~1e-4 (see the printed table)
MODELS = sorted(p.stem for p in (ROOT / "models").glob("*.dl"))
SMALL = {  # -D settings that keep each model's 50 steps × 5 optimizers within a few seconds
    "mlp": {"hidden": "16"},
    "cnn_digits": {"width": "4", "hidden": "16", "rate": "0"},
    "lenet": {},
    "transformer_lm": {"vocab": "16", "width": "16", "heads": "2", "hidden": "32", "seq": "8", "rate": "0"},
    "seq2seq": {"hidden": "16", "dim": "8"},
    "text_rnn": {"length": "8", "hidden": "8", "dim": "8"},
    "lstm_regression": {"steps": "6", "hidden": "8"},
    "gan": {"width": "8"},
    "autoencoder": {"width": "4"},
}
OPTIMIZERS = {
    "sgd": "sgd(lr = 0.01, momentum = 0.9, nesterov = true, weight_decay = 0.001)",
    "rmsprop": "rmsprop(lr = 0.001, momentum = 0.5)",
    "adagrad": "adagrad(lr = 0.01)",
    "adam": "adam(lr = 0.001, beta1 = 0.8)",
    "adamw": "adamw(lr = 0.001, weight_decay = 0.05)",
}
OPTIMIZER_STATEMENT = re.compile(r"optimizer\s+\w+\([^()]*\)")


def relative(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.linalg.norm(b))
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64))) / (scale if scale > 1e-12 else 1.0)


def compiled_with(name: str, optimizer: str, folder):
    text = (ROOT / "models" / f"{name}.dl").read_text(encoding="utf-8")
    assert OPTIMIZER_STATEMENT.search(text), f"{name}: no optimizer statement to replace"
    path = folder / f"{name}.dl"
    path.write_text(OPTIMIZER_STATEMENT.sub(lambda m: f"optimizer {optimizer}", text), encoding="utf-8")
    shutil.copytree(ROOT / "models" / "blocks", folder / "blocks", dirs_exist_ok=True)
    return compile_file(path, defines=SMALL.get(name, {}))


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("name", MODELS)
def test_model_matches_its_torch_twin_over_50_steps(name, optimizer, tmp_path):
    program = compiled_with(name, OPTIMIZERS[optimizer], tmp_path)
    keys = [k for k in program.manifest["graphs"] if k.split(".")[0] == "train"]  # objectives in order
    lowered = program.extras["lowered"]
    drivers = {k: TrainDriver(program, graph=k) for k in keys}
    twins = {k: TorchTwin(torch, lowered[k], lowered["infer"], lowered[k].notes["optimizer"]) for k in keys}
    shared = twins[keys[0]].params  # one set of parameters, each objective updating its own
    for k in keys[1:]:
        twins[k].params = shared
        twins[k].optimizer = make_optimizer(torch, lowered[k].notes["optimizer"],
                                            [shared[n.name] for n in lowered[k].inputs if n.role == "param"])
    params = {name: value for driver in drivers.values() for name, value in driver.params.items()}
    dims = {d: BATCH if d == "B" else 6 for d in symbols(program.manifest)}
    rng = np.random.default_rng(5)
    worst_loss = worst_param = 0.0
    for step in range(STEPS):
        for k in keys:
            batch = synthetic_batch(program.manifest["graphs"][k]["inputs"], dims, rng)
            driver = drivers[k]
            driver.params = {n: params[n] for n in driver.params}
            driver.frozen = {n: params[n] for n in driver.frozen}  # the other objectives' parameters
            out = driver.step(batch)
            params.update(driver.params)
            torch_loss = twins[k].loss_and_step(batch)
            worst_loss = max(worst_loss, abs(float(out["loss"]) - torch_loss) / max(abs(torch_loss), 1e-6))
        for n, value in params.items():
            worst_param = max(worst_param, relative(value, shared[n].detach().numpy()))
    print(f"\n{name:16s} {optimizer:8s} worst relative error over {STEPS} steps: loss {worst_loss:.2e}, "
          f"parameters {worst_param:.2e}")
    assert worst_loss < TOLERANCE and worst_param < TOLERANCE, (worst_loss, worst_param)
