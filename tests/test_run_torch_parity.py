"""A whole `dslc train` run against a PyTorch loop written by hand: dropout, AdamW's decoupled weight
decay, clipping by global norm and a warm-up-then-cosine schedule together, over several epochs with a
last partial batch.

The PyTorch loop visits the samples in `epoch_order`, draws each step's dropout mask with the numpy
twin of the graph's counter-based generator (`uniform_numpy` with `step_seed`), and follows
`torch.optim.AdamW`, `clip_grad_norm_` and `SequentialLR(LinearLR, CosineAnnealingLR)`. The run's
epoch losses (the history, means over the samples) and its final parameters (the checkpoint) must equal
torch's: a change to the loop (order, seeds, batch weighting), to a layer or to the optimizer graph
shows here even where the step-level parity tests still pass.
"""
from __future__ import annotations

import numpy as np
import pytest
from helpers import compile_text

from dslc.ops.random import uniform_numpy
from dslc.runtime.checkpoint import load_checkpoint
from dslc.runtime.run_randomness import epoch_order, step_seed

torch = pytest.importorskip("torch")
F = torch.nn.functional
S = torch.optim.lr_scheduler

N, BATCH, EPOCHS, SEED, RATE = 37, 8, 3, 5, 0.3  # 5 steps per epoch, the last of 5 samples
WARMUP, COSINE = 4, 9  # steps: the cosine ends before the run does (dslc then holds min_lr)
LR, MIN_LR, DECAY, CLIP = 0.02, 0.002, 0.05, 0.5

MODEL = f"""
model regularized {{
    input  x: f64[B, 6]
    target label: i64[B]
    logits = x |> dense(16, init = torch, bias_init = torch) |> relu |> dropout({RATE})
               |> dense(3, init = torch, bias_init = torch)
    output probs = softmax(logits)
    loss      cross_entropy(logits, label)
    optimizer adamw(lr = {LR}, weight_decay = {DECAY}, clip_norm = {CLIP},
                    schedule = linear_warmup({WARMUP}, start_factor = 0.1) then cosine({COSINE}, min_lr = {MIN_LR}))
}}
"""


def torch_run(inits: dict, x: np.ndarray, label: np.ndarray) -> tuple[list[float], dict]:
    """The epoch losses (means over the samples) and the final parameters of the hand-written loop."""
    w0, b0 = (torch.tensor(inits[k], requires_grad=True) for k in ("dense_0.weight", "dense_0.bias"))
    w1, b1 = (torch.tensor(inits[k], requires_grad=True) for k in ("dense_1.weight", "dense_1.bias"))
    params = [w0, b0, w1, b1]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=DECAY)
    # past its T_max PyTorch's cosine climbs back, dslc's holds min_lr: the loop sets the rate itself there
    schedule = S.SequentialLR(opt, [S.LinearLR(opt, start_factor=0.1, total_iters=WARMUP),
                                    S.CosineAnnealingLR(opt, T_max=COSINE, eta_min=MIN_LR)], [WARMUP])
    losses, step = [], 0
    for epoch in range(EPOCHS):
        total = 0.0
        order = epoch_order(SEED, epoch, N)
        for start in range(0, N, BATCH):
            idx = order[start:start + BATCH]
            keep = uniform_numpy((len(idx), 16), step_seed(SEED, step), 1, np.float32) >= np.float32(RATE)
            hidden = torch.relu(torch.from_numpy(x[idx]) @ w0 + b0) * torch.from_numpy(keep / (1 - RATE))
            loss = F.cross_entropy(hidden @ w1 + b1, torch.from_numpy(label[idx]))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, CLIP)
            if step >= WARMUP + COSINE:
                opt.param_groups[0]["lr"] = MIN_LR
            opt.step()
            schedule.step()
            total += loss.item() * len(idx)
            step += 1
        losses.append(total / N)
    return losses, {k: p.detach().numpy() for k, p in zip(("dense_0.weight", "dense_0.bias", "dense_1.weight",
                                                              "dense_1.bias"), params)}


def test_a_run_with_dropout_decay_clipping_and_a_schedule_equals_torch(tmp_path):
    program = compile_text(tmp_path, MODEL, name="regularized.dl", dtype="float64")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, 6))
    label = rng.integers(0, 3, N)
    history = program.train({"x": x, "label": label}, epochs=EPOCHS, batch_size=BATCH, seed=SEED,
                            out_dir=tmp_path / "run", verbose=0)
    losses, params = torch_run(program.initial_values(), x, label)
    assert history[-1]["steps"] == EPOCHS * 5 > WARMUP + COSINE
    np.testing.assert_allclose([r["loss"] for r in history], losses, rtol=1e-10)
    ours = load_checkpoint(tmp_path / "run", program.manifest).params
    for name, theirs in params.items():
        np.testing.assert_allclose(ours[name], theirs, rtol=1e-9, atol=1e-12, err_msg=name)
    assert not np.allclose(ours["dense_0.weight"], program.initial_values()["dense_0.weight"], atol=1e-3)
