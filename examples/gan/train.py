"""Train models/gan.dl on a 2-D Gaussian and show that the generator learns it.

    python examples/gan/train.py [--epochs 60] [--out runs/gan]

The target is N(mean, cov) with mean (2, -1) and a correlation of 0.8; the noise is N(0, I) in 4
dimensions. Each epoch draws new points and noise (so the run sees fresh noise, as a GAN should),
then training resumes from the previous epoch's checkpoint. At the end the script prints the mean
and covariance of generated points next to the target's.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

import dslc

ROOT = Path(__file__).resolve().parents[2]
MEAN = np.array([2.0, -1.0])
COV = np.array([[0.25, 0.2], [0.2, 0.25]])
LATENT = 4


def epoch_data(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "z": rng.standard_normal((n, LATENT)).astype(np.float32),
        "real": rng.multivariate_normal(MEAN, COV, n).astype(np.float32),
        "ones": np.ones((n, 1), np.float32),
        "zeros": np.zeros((n, 1), np.float32),
    }


def train(epochs: int, out: Path, n: int = 4096, batch_size: int = 128, seed: int = 0, quiet: bool = False):
    """Train for `epochs` epochs of fresh data; returns (program, generated points)."""
    program = dslc.compile(ROOT / "models" / "gan.dl", seed=seed)
    rng = np.random.default_rng(seed)
    for epoch in range(1, epochs + 1):
        with warnings.catch_warnings():  # each epoch draws fresh data, which resuming warns about: the point here
            warnings.filterwarnings("ignore", message="the training data differs from the checkpoint's")
            history = program.train(epoch_data(rng, n), epochs=epoch, batch_size=batch_size, seed=seed,
                                    out_dir=out, resume=epoch > 1, verbose=0)
        if not quiet and epoch % 10 == 0:
            last = history[-1]
            print(f"epoch {epoch}: discriminator loss {last['discriminator.loss']:.3f}, "
                  f"generator loss {last['generator.loss']:.3f}")
    noise = rng.standard_normal((8192, LATENT)).astype(np.float32)
    fake = program.predict({"z": noise}, weights=out)["fake"]
    return program, fake


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)  # what tests/test_objectives.py checks
    parser.add_argument("--out", type=Path, default=Path("runs/gan"))
    args = parser.parse_args()
    if (args.out / "checkpoint.npz").exists():
        raise SystemExit(f"{args.out} holds a run already; choose another --out")
    _, fake = train(args.epochs, args.out)
    print("target    mean", MEAN, "cov", COV.ravel())
    print("generated mean", fake.mean(axis=0).round(3), "cov", np.cov(fake.T).ravel().round(3))


if __name__ == "__main__":
    main()
