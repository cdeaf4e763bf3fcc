"""Train models/transformer_lm.dl on corpus.txt (this repository's own documentation) and sample from it.

    python examples/transformer_lm/train.py [--epochs 6] [--rate 0.1] [--out runs/transformer_lm]
                                            [--length 600] [--temperature 0.8] [--prompt "model "]

The model is models/transformer_lm.dl at its default (benchmark) size with dropout `--rate`. The text
is read as bytes (vocabulary 256). The first 90% trains, the rest validates. Training windows
are `seq` bytes long, taken every `--stride` bytes: the input is a window and the target the same
window shifted by one byte. The script prints the unigram entropy of the training text (the loss of the
best model that ignores context) next to the trained model's training and validation loss, then samples
text autoregressively with `program.predict`: the last `seq` bytes of the text so far go in (left-aligned:
with causal attention, padding after the last byte does not change its prediction), the logits at the
last position are divided by the temperature and one byte is drawn from their softmax.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

import dslc
from dslc.runtime.state_files import load_params

HERE = Path(__file__).resolve().parent
MODEL = HERE.parents[1] / "models" / "transformer_lm.dl"


def windows(ids: np.ndarray, seq: int, stride: int) -> dict[str, np.ndarray]:
    """(ids, next ids) pairs: every `stride`-th window of `seq` bytes and the same window one byte later."""
    starts = np.arange(0, len(ids) - seq - 1, stride)
    return {"ids": np.stack([ids[s:s + seq] for s in starts]), "next": np.stack([ids[s + 1:s + seq + 1] for s in starts])}


def unigram_entropy(ids: np.ndarray) -> float:
    """Entropy (nats) of the byte frequencies."""
    counts = np.bincount(ids, minlength=256).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def sample(program, weights: dict, prompt: bytes, length: int, temperature: float, seq: int,
           rng: np.random.Generator) -> bytes:
    """Extend `prompt` by `length` bytes, one `predict` call per byte."""
    text = list(prompt)
    for _ in range(length):
        context = text[-seq:]
        window = np.zeros((1, seq), np.int64)
        window[0, :len(context)] = context
        logits = program.predict({"ids": window}, weights=weights)["logits"][0, len(context) - 1].astype(np.float64)
        z = logits / temperature
        p = np.exp(z - z.max())
        text.append(int(rng.choice(256, p=p / p.sum())))
    return bytes(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--stride", type=int, default=16, help="bytes between the starts of training windows")
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--rate", type=float, default=0.1, help="dropout rate")
    parser.add_argument("--out", type=Path, default=Path("runs/transformer_lm"))
    parser.add_argument("--length", type=int, default=600, help="bytes to sample")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--prompt", default="model ")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if (Path(args.out) / "checkpoint.npz").exists():  # as examples/gan/train.py: a message, not a traceback
        raise SystemExit(f"{args.out} holds a run already; choose another --out")

    program = dslc.compile(MODEL, lr=args.lr, rate=args.rate)
    seq = program.manifest["graphs"]["infer"]["inputs"][0]["shape"][1]
    ids = np.frombuffer((HERE / "corpus.txt").read_bytes(), dtype=np.uint8).astype(np.int64)
    split = int(0.9 * len(ids))
    train, val = windows(ids[:split], seq, args.stride), windows(ids[split:], seq, seq)
    baseline = unigram_entropy(ids[:split])
    print(f"{len(ids)} bytes: {len(train['ids'])} training windows, {len(val['ids'])} validation windows of {seq}; "
          f"{program.num_parameters:,} parameters")

    start = time.perf_counter()
    history = program.train(train, val=val, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                            out_dir=args.out)
    elapsed = time.perf_counter() - start
    for record in history:
        print(f"epoch {record['epoch']:3d}  loss {record['loss']:.3f}  val_loss {record['val_loss']:.3f}")
    last = history[-1]
    bits = 1 / math.log(2)
    print(f"unigram entropy of the training text: {baseline:.3f} nats ({baseline * bits:.2f} bits/byte)")
    print(f"after {args.epochs} epochs ({elapsed:.0f} s, {elapsed / last['steps'] * 1e3:.1f} ms/step): "
          f"training loss {last['loss']:.3f} nats ({last['loss'] * bits:.2f} bits/byte), "
          f"validation {last['val_loss']:.3f} nats ({last['val_loss'] * bits:.2f} bits/byte)")

    weights = load_params(args.out, program.manifest)  # read the checkpoint once, not per sampled byte
    text = sample(program, weights, args.prompt.encode(), args.length, args.temperature, seq,
                  np.random.default_rng(args.seed))
    print(f"\n--- sample (temperature {args.temperature}) ---\n{text.decode('utf-8', errors='replace')}")


if __name__ == "__main__":
    main()
