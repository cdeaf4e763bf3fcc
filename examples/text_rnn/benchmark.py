"""Time one training step of a GRU classifier, dslc (ONNX Runtime) against PyTorch eager.

    python examples/text_rnn/benchmark.py [--input embedding|dense] [--threads 2] [--rounds 8]

The model is models/text_rnn.dl at the benchmark shape: token ids `[100, 40]` → `embedding(1000, 128)`
(or, with `--input dense`, float features `[100, 40, 128]` fed straight in) → `gru(128)` → `dense(2)`,
softmax cross-entropy, Adam. dslc runs the compiled training graph through `TrainStep` (what
`dslc train` uses); torch runs the same network with `nn.Embedding`, `nn.GRU` and `nn.Linear`. Both use
the same number of threads and run alternately, never at the same time; each round times 10 steps of
each, and the medians over the rounds are printed. Needs PyTorch (the `dev` extra).
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import dslc
from dslc.runtime.session import TrainStep

ROOT = Path(__file__).resolve().parents[2]
BATCH, LENGTH, VOCAB, WIDTH, HIDDEN = 100, 40, 1000, 128, 128


def dslc_step(kind: str, threads: int):
    if kind == "embedding":
        program = dslc.compile(ROOT / "models" / "text_rnn.dl", vocab=VOCAB, length=LENGTH, dim=WIDTH, hidden=HIDDEN)
    else:  # the same model without its embedding: float features in
        text = (ROOT / "models" / "text_rnn.dl").read_text()
        for old, new in (("input  ids:   i64[B, length]", "input  x:     f32[B, length, dim]"),
                         ("ids |> embedding(vocab, dim) |> gru", "x |> gru")):
            assert old in text, f"models/text_rnn.dl changed: no `{old}`"
            text = text.replace(old, new)
        path = Path(tempfile.mkdtemp()) / "text_rnn_dense.dl"
        path.write_text(text)
        program = dslc.compile(path, length=LENGTH, dim=WIDTH, hidden=HIDDEN)
    spec = program.manifest["graphs"]["train"]
    return TrainStep(program.graphs["train"], spec, threads=threads, initial=program.initial_values()), spec


class TorchNet(torch.nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.embedding = torch.nn.Embedding(VOCAB, WIDTH) if kind == "embedding" else None
        self.gru = torch.nn.GRU(WIDTH, HIDDEN, batch_first=True)
        self.dense = torch.nn.Linear(HIDDEN, 2)

    def forward(self, x):
        h = self.embedding(x) if self.embedding is not None else x
        return self.dense(self.gru(h)[1][-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", choices=["embedding", "dense"], default="embedding")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, BATCH)
    if args.input == "embedding":
        batch = {"ids": rng.integers(0, VOCAB, (BATCH, LENGTH)), "label": label}
    else:
        batch = {"x": rng.standard_normal((BATCH, LENGTH, WIDTH)).astype(np.float32), "label": label}
    step, spec = dslc_step(args.input, args.threads)
    lr = next(h["default"] for h in spec["hyper"] if h["name"] == "lr")

    torch.set_num_threads(args.threads)
    net = TorchNet(args.input)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    inputs = torch.from_numpy(batch["ids" if args.input == "embedding" else "x"])
    target = torch.from_numpy(label)

    def torch_step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(inputs), target).backward()
        optimizer.step()

    for _ in range(5):  # warm up both
        step.step(batch)
        torch_step()
    ours, theirs = [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(10):
            step.step(batch)
        ours.append((time.perf_counter() - start) / 10 * 1e3)
        start = time.perf_counter()
        for _ in range(10):
            torch_step()
        theirs.append((time.perf_counter() - start) / 10 * 1e3)
    ratio = np.median(ours) / np.median(theirs)
    print(f"GRU classifier step ({args.input} input, batch {BATCH}, seq {LENGTH}, hidden {HIDDEN}, Adam, "
          f"{args.threads} threads): dslc {np.median(ours):.1f} ms, torch eager {np.median(theirs):.1f} ms "
          f"({ratio:.2f}x)")


if __name__ == "__main__":
    main()
