"""Generate the bundled digit-reversal data: `python examples/seq2seq/make_data.py`.

Each example is 6 random digits (`source`, ids 0-9), the same digits reversed (`reversed`), and the
decoder's teacher-forcing input `previous`: the start token 10 followed by the first 5 reversed
digits. Seeded, so reproducible: train.npz (5000 examples), test.npz (1000), arrays i64[N, 6].
"""
from pathlib import Path

import numpy as np

LENGTH, START = 6, 10


def examples(count: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    source = rng.integers(0, 10, (count, LENGTH)).astype(np.int64)
    reversed_ = source[:, ::-1].copy()
    previous = np.concatenate([np.full((count, 1), START, dtype=np.int64), reversed_[:, :-1]], axis=1)
    return {"source": source, "previous": previous, "reversed": reversed_}


def main() -> None:
    here = Path(__file__).resolve().parent
    rng = np.random.default_rng(7)
    for name, count in (("train", 5000), ("test", 1000)):
        np.savez_compressed(here / f"{name}.npz", **examples(count, rng))


if __name__ == "__main__":
    main()
