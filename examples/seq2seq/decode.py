"""Train the digit-reversal encoder–decoder and decode the test set greedily.

    python examples/seq2seq/decode.py [--epochs 15] [--out runs/seq2seq]

Training uses teacher forcing (the decoder reads the true previous tokens). Decoding cannot: it
starts from the start token and feeds back its own arg-max, one step per run of the inference
graph — the decoder reads left to right, so the steps not yet decoded do not affect the ones before.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

import dslc

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
START = 10


def greedy_decode(program, weights, source: np.ndarray) -> np.ndarray:
    """The decoded sequence for each row of `source` (the model's own predictions fed back)."""
    previous = np.full_like(source, START)
    for k in range(source.shape[1]):
        probs = program.predict({"source": source, "previous": previous}, weights=weights, batch_size=None)["probs"]
        step = probs[:, k].argmax(axis=-1)
        if k + 1 < source.shape[1]:
            previous[:, k + 1] = step
        else:
            last = step
    return np.concatenate([previous[:, 1:], last[:, None]], axis=1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", default=str(ROOT / "runs" / "seq2seq"))
    args = parser.parse_args(argv)
    if (Path(args.out) / "checkpoint.npz").exists():  # as examples/gan/train.py: a message, not a traceback
        raise SystemExit(f"{args.out} holds a run already; choose another --out")
    program = dslc.compile(ROOT / "models" / "seq2seq.dl")
    program.train(HERE / "train.npz", HERE / "test.npz", epochs=args.epochs, batch_size=32, out_dir=args.out)
    test = np.load(HERE / "test.npz")
    decoded = greedy_decode(program, args.out, test["source"])
    tokens = float(np.mean(decoded == test["reversed"]))
    sequences = float(np.mean((decoded == test["reversed"]).all(axis=1)))
    for row in range(3):
        print(f"{test['source'][row]} -> {decoded[row]}")
    print(f"greedy decoding on the test set: {tokens:.1%} of the tokens, {sequences:.1%} of the sequences right")
    return 0


if __name__ == "__main__":
    sys.exit(main())
