"""Data beyond a dict of arrays: the validation split held out of the training data.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np

from dslc.diagnostics import DataError
from dslc.runtime.data import num_rows

SPLIT_STREAM = 0x5E1F  # the split's random stream, apart from the epochs' (`epoch_order` uses [seed, epoch])


def split_validation(arrays: Mapping[str, np.ndarray], fraction: float,
                     seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(training, validation) arrays: `n - int(n * (1 - fraction))` samples (Keras's count) go to
    validation, the ones `np.random.default_rng([seed, SPLIT_STREAM]).permutation(n)` lists first; both
    parts keep the data's order. A function of the seed alone, so a resumed run validates on the same
    samples."""
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction < 1:
        raise DataError(f"the validation split must be a fraction between 0 and 1, got {fraction!r}",
                        hint="e.g. 0.1 holds out 10% of the training samples")
    n = num_rows(arrays)
    n_val = n - int(n * (1 - fraction))
    if n_val >= n:  # n_val >= 1 for any fraction > 0
        raise DataError(f"a validation split of {fraction:g} of {n} samples leaves no training sample",
                        hint="use a smaller split")
    held = np.zeros(n, bool)
    held[np.random.default_rng([seed, SPLIT_STREAM]).permutation(n)[:n_val]] = True
    return ({k: a[~held] for k, a in arrays.items()}, {k: a[held] for k, a in arrays.items()})
