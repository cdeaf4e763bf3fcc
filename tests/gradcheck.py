"""Float64 gradient checks of whole models through the compiler (shared by the gradient tests).

Each model is compiled with `dtype="float64"` and `optimizer sgd(lr = 1.0)`, so one training
step moves every parameter by exactly its gradient: `grad = p - p.next`. That gradient is compared with
central finite differences of the training graph's `loss` output, perturbing the fed
parameters (same batch, same dropout seed), with `eps = 1e-5`: the loss is one scalar whose rounding
(~1e-15·|loss|) divided by 2·eps would dominate at 1e-6, while the truncation error grows only as eps²
(1e-5 sits near the textbook optimum ε_mach^(1/3) ≈ 6e-6 and gives errors ~1e-8 here, 1e-6 ~5e-7):
- along 3 random directions per parameter: `|fd - an| / max(|fd|, |an|, 1e-8)`;
- per coordinate: `|fd_j - an_j| / max(|fd_j|, |an_j|, 1e-3·max_k |an_k|, 1e-8)` over the elements of
  each parameter (elements 1000x smaller than the parameter's largest gradient element are measured
  against 1/1000 of it: their central difference of a scalar loss is dominated by rounding).
Both must be <= 1e-6. Parameters start from the compiled initializers plus noise, kept at least 0.05
away from 0 (so `l1`'s kink and exactly-zero biases are not probed).
"""
from __future__ import annotations

import zlib

import numpy as np

from helpers import TrainDriver, compile_text

EPS = 1e-5  # see the module docstring
RTOL = 1e-6
DIRECTIONS = 3
BATCH = 4
SEED = 11  # the dropout seed fed to every run of a model


def model_source(name: str, body: str) -> str:
    """A model named `name` around `body`; text before a `---` line goes above the model (blocks)."""
    blocks, _, body = body.rpartition("---")
    return f"{blocks}\nmodel {name} {{\n{body}\n    optimizer sgd(lr = 1.0)\n}}\n"


def make_data(spec: dict, kinds: dict[str, str], rng: np.random.Generator) -> dict[str, np.ndarray]:
    data = {}
    for entry in spec["inputs"]:
        shape = tuple(BATCH if isinstance(d, str) else d for d in entry["shape"])
        kind = kinds.get(entry["name"], "normal")
        if kind.startswith("int:"):  # integer data such as token ids: `int:N` draws from [0, N)
            data[entry["name"]] = rng.integers(0, int(kind[4:]), shape).astype(entry["dtype"])
        elif entry["dtype"].startswith("int"):
            data[entry["name"]] = rng.integers(0, entry["classes"], shape).astype(entry["dtype"])
        elif kind == "probabilities":
            e = np.exp(rng.standard_normal(shape))
            data[entry["name"]] = e / e.sum(axis=-1, keepdims=True)
        elif kind == "binary":
            data[entry["name"]] = (rng.random(shape) < 0.5).astype(np.float64)
        else:
            data[entry["name"]] = rng.standard_normal(shape)
    return data


def start_params(driver: TrainDriver, rng: np.random.Generator) -> dict[str, np.ndarray]:
    params = {}
    for name, value in driver.params.items():
        p = value + 0.3 * rng.standard_normal(value.shape)
        params[name] = np.where(p >= 0, 1.0, -1.0) * (np.abs(p) + 0.05)
    return params



def check_model_gradients(workdir, name: str, text: str, kinds: dict[str, str] | None = None) -> None:
    """Compile `text` in float64 and compare its parameter gradients with finite differences."""
    program = compile_text(workdir, text, name=f"{name}.dl", dtype="float64")
    spec = program.manifest["graphs"]["train"]
    driver = TrainDriver(program)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    data = make_data(spec, kinds or {}, rng)
    params = start_params(driver, rng)
    out = driver.run(data, params=params, lr=1.0, seed=SEED)
    grads = {p: params[p] - out[driver.next_of[p]] for p in params}

    def loss(perturbed: dict[str, np.ndarray]) -> float:
        return float(driver.run(data, params={**params, **perturbed}, lr=1.0, seed=SEED)["loss"])

    assert loss({}) == float(out["loss"])
    failures = []
    for p, value in params.items():
        g = grads[p]
        assert np.any(g != 0), f"{name}: the gradient of `{p}` is identically zero"
        for _ in range(DIRECTIONS):
            d = rng.standard_normal(value.shape)
            fd = (loss({p: value + EPS * d}) - loss({p: value - EPS * d})) / (2 * EPS)
            an = float(np.sum(g * d))
            err = abs(fd - an) / max(abs(fd), abs(an), 1e-8)
            if err > RTOL:
                failures.append(f"`{p}` along a random direction: fd {fd:.10g}, autodiff {an:.10g}, relative error {err:.2g}")
        fd = np.zeros_like(value)
        for j in range(value.size):
            step = np.zeros(value.size)
            step[j] = EPS
            step = step.reshape(value.shape)
            fd.flat[j] = (loss({p: value + step}) - loss({p: value - step})) / (2 * EPS)
        floor = max(1e-3 * float(np.max(np.abs(g))), 1e-8)
        err = np.abs(fd - g) / np.maximum(np.maximum(np.abs(fd), np.abs(g)), floor)
        if err.max() > RTOL:
            j = int(np.argmax(err))
            failures.append(f"`{p}` element {np.unravel_index(j, value.shape)}: fd {fd.flat[j]:.10g}, "
                            f"autodiff {g.flat[j]:.10g}, relative error {err.flat[j]:.2g}")
    assert not failures, f"model `{name}`:\n  " + "\n  ".join(failures)
