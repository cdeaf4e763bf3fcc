"""How `train.npz` and `test.npz` were made (run once; not needed to use them).

The data are the UCI "Optical Recognition of Handwritten Digits" 8×8 images (1,797 examples,
CC BY 4.0), taken from the copy scikit-learn bundles (`sklearn.datasets.load_digits`). Pixels are
scaled from 0..16 to 0..1; a fixed, stratified 80/20 split gives 1,438 training and 359 test examples.

    pip install scikit-learn && python examples/digits/make_data.py
"""
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

here = Path(__file__).parent
digits = load_digits()
x = (digits.data / 16.0).astype(np.float32)
y = digits.target.astype(np.int64)
rng = np.random.default_rng(20260101)
test_index = np.concatenate([rng.permutation(np.flatnonzero(y == k))[: round(0.2 * np.sum(y == k))] for k in range(10)])
is_test = np.zeros(len(y), dtype=bool)
is_test[test_index] = True
np.savez_compressed(here / "train.npz", image=x[~is_test], digit=y[~is_test])
np.savez_compressed(here / "test.npz", image=x[is_test], digit=y[is_test])
print(f"train {np.sum(~is_test)}, test {np.sum(is_test)}")
