"""Speed of dslc's convolutional training step: models/lenet.dl (batch 64, Adam) against the same network
in PyTorch eager, and the ways of computing the max-pool gradient on LeNet's first pool.

    python examples/cnn_digits/bench_lenet.py [--threads 2] [--rounds 15]

Each contender runs in rounds of 30 steps, interleaved with the others in one process (never two at
once), each with the same number of threads; the best round and the median are reported per step.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

import dslc
from dslc.runtime.session import TrainStep

ROOT = Path(__file__).resolve().parents[2]
BATCH = 64


def timed(contenders: dict, rounds: int, steps: int = 30) -> dict[str, tuple[float, float]]:
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            for i in range(3):
                run(i)
            start = time.perf_counter()
            for i in range(steps):
                run(i)
            times[name].append((time.perf_counter() - start) / steps)
    return {name: (min(t), float(np.median(t))) for name, t in times.items()}


def lenet_steps(threads: int) -> dict:
    program = dslc.compile(ROOT / "models" / "lenet.dl")
    step = TrainStep(program.graphs["train"], program.manifest["graphs"]["train"], threads=threads,
                     initial=program.initial_values())
    rng = np.random.default_rng(0)
    batches = [{"image": rng.random((BATCH, 1, 28, 28), dtype=np.float32), "label": rng.integers(0, 10, BATCH)}
               for _ in range(8)]
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                        nn.Linear(84, 10))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    tensors = [(torch.from_numpy(b["image"]), torch.from_numpy(b["label"])) for b in batches]

    def torch_step(i):
        x, y = tensors[i % 8]
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()

    return {"dslc (ONNX Runtime)": lambda i: step.step(batches[i % 8]), "PyTorch eager": torch_step}


def pool_gradients(threads: int) -> dict:
    """Gradient of a 2×2 max pool of `[64, 6, 28, 28]`: three formulations as plain ONNX graphs."""
    n, c, h, k = BATCH, 6, 28, 2
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    y = x.reshape(n, c, h // k, k, h // k, k).max(axis=(3, 5))
    g = rng.standard_normal(y.shape).astype(np.float32)
    f32 = TensorProto.FLOAT
    def i64(values):
        return np.array(values, dtype=np.int64)

    resize = {"mode": "nearest", "nearest_mode": "floor", "coordinate_transformation_mode": "asymmetric"}
    taps = np.zeros((c * k * k, 1, k, k), np.float32)
    for ch in range(c):
        for t in range(k * k):
            taps[ch * k * k + t, 0, t // k, t % k] = 1
    node = helper.make_node
    graphs = {
        "MaxPool indices + ScatterElements": ([
            node("MaxPool", ["x"], ["y2", "i"], kernel_shape=[k, k], strides=[k, k]),
            node("Reshape", ["i", "flat"], ["fi"]), node("Reshape", ["g", "flat"], ["fg"]),
            node("Reshape", ["x", "flat"], ["fx"]), node("Mul", ["fx", "zero"], ["z"]),
            node("ScatterElements", ["z", "fi", "fg"], ["fdx"], reduction="add"),
            node("Reshape", ["fdx", "shape"], ["dx"])],
            {"flat": i64([-1]), "zero": np.float32(0), "shape": i64(x.shape)}),
        "tiles: mask x == upsample(y), ties by avg pool (chosen)": ([
            node("Resize", ["y", "", "scales"], ["yu"], **resize), node("Equal", ["x", "yu"], ["eq"]),
            node("Cast", ["eq"], ["m"], to=f32), node("AveragePool", ["m"], ["ties"], kernel_shape=[k, k], strides=[k, k]),
            node("Mul", ["ties", "taps_per_window"], ["count"]), node("Div", ["g", "count"], ["share"]),
            node("Resize", ["share", "", "scales"], ["su"], **resize), node("Mul", ["m", "su"], ["dx"])],
            {"scales": np.array([1, 1, k, k], np.float32), "taps_per_window": np.float32(k * k)}),
        "any windows: one-hot Conv taps + ConvTranspose": ([
            node("Conv", ["x", "taps"], ["p"], strides=[k, k], group=c), node("Reshape", ["p", "s5"], ["p5"]),
            node("Unsqueeze", ["y", "axis2"], ["y5"]), node("Unsqueeze", ["g", "axis2"], ["g5"]),
            node("Equal", ["p5", "y5"], ["eq"]), node("Cast", ["eq"], ["m"], to=f32),
            node("ReduceSum", ["m", "axis2"], ["count"], keepdims=1), node("Div", ["g5", "count"], ["share"]),
            node("Mul", ["m", "share"], ["w5"]), node("Reshape", ["w5", "s4"], ["w4"]),
            node("ConvTranspose", ["w4", "taps"], ["dx"], strides=[k, k], group=c)],
            {"taps": taps, "s5": i64([0, c, k * k, h // k, h // k]), "axis2": i64([2]),
             "s4": i64([0, c * k * k, h // k, h // k])}),
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    contenders, results = {}, {}
    for name, (nodes, consts) in graphs.items():
        inputs = [helper.make_tensor_value_info(v, f32, a.shape) for v, a in (("x", x), ("y", y), ("g", g))]
        graph = helper.make_graph(nodes, "pool_grad", inputs, [helper.make_tensor_value_info("dx", f32, x.shape)],
                                  initializer=[numpy_helper.from_array(v, key) for key, v in consts.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feeds = {name_: arr for name_, arr in (("x", x), ("y", y), ("g", g)) if name_ in [i.name for i in session.get_inputs()]}
        results[name] = session.run(None, feeds)[0]
        contenders[name] = lambda i, s=session, f=feeds: s.run(None, f)
    first = next(iter(results.values()))
    assert all(np.array_equal(first, r) for r in results.values()), "the formulations disagree"
    return contenders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"LeNet training step, batch {BATCH}, Adam, {args.threads} threads:")
    for name, (best, median) in timed(lenet_steps(args.threads), args.rounds).items():
        print(f"  {name:55s} best {best * 1e3:6.2f} ms   median {median * 1e3:6.2f} ms")
    print(f"max-pool 2×2 gradient of [{BATCH}, 6, 28, 28], {args.threads} threads:")
    for name, (best, median) in timed(pool_gradients(args.threads), args.rounds).items():
        print(f"  {name:55s} best {best * 1e3:6.3f} ms   median {median * 1e3:6.3f} ms")


if __name__ == "__main__":
    main()
