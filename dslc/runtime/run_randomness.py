"""What a training run draws, as pure functions of its `--seed`: epoch e (counting from 0) visits the
samples in the order `epoch_order(seed, e, n)`, and training step k (counting from 0 over the whole run)
is fed `step_seed(seed, k)`. Neither needs RNG state to be saved, so training 2 epochs and resuming to 4
gives the same bits as training 4 epochs straight.
"""
from __future__ import annotations

import numpy as np

SEED_MULTIPLIER = 1_000_003


def step_seed(run_seed: int, global_step: int) -> int:
    """The value fed to the training graph's `seed` hyper-parameter at a given step:

        step_seed = (run_seed * 1_000_003 + global_step) % 2**31

    `run_seed` is the run's `--seed`; `global_step` counts optimizer steps from 0 over the whole run
    (it does not restart at each epoch or on resume). The graph turns (seed, element position) into
    its dropout masks with a pure function, so each step gets fresh masks and the same step always
    gets the same ones. The multiplier (a prime above any realistic step count) keeps the seed
    sequences of runs with nearby `--seed` values from overlapping.
    """
    return (run_seed * SEED_MULTIPLIER + global_step) % 2**31


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The sample order of epoch `epoch` (from 0): `np.random.default_rng([seed, epoch]).permutation(n)`."""
    return np.random.default_rng([seed, epoch]).permutation(n)
