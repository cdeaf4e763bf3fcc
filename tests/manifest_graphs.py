"""A hand-built compiled program for testing the runtime without the compiler.

Linear regression `pred = x @ W + b` with mean squared error and plain SGD, emitted directly with
`onnx.helper` in the exact shape the manifest contract describes:

    train  inputs  x [B, F], y [B, 1]           (data, target)
           hyper   lr [] (default 0.1)          (+ seed [] int64 when with_seed)
           params  lin.W [F, 1], lin.b [1]      (initial values from the init graph; next = <name>.next)
           state   opt.step [] int64            (+ noise.seed_sum [] int64 when with_seed)
           outputs loss, mse, then every `.next`
    eval   x, y, lin.W, lin.b -> loss, mse
    init   () -> lin.W, lin.b, opt.step (+ noise.seed_sum)
    infer  x -> pred (lin.W, lin.b plain initializers)

The seed variant accumulates the fed seeds in `noise.seed_sum`, so a test can check exactly which
seeds the driver fed. The numpy equivalent of one step:

    diff = x @ W + b - y;  loss = mean(diff**2);  g = 2 * diff / diff.size
    W -= lr * x.T @ g;  b -= lr * g.sum(0);  step += 1
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dslc.program import Program

OPSET = 17
W0 = np.array([[0.1], [-0.2], [0.3], [0.05], [-0.1]])
LR = 0.1


def _vi(name: str, dtype, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape)


def _model(name: str, nodes, inputs, outputs, inits) -> bytes:
    graph = helper.make_graph(nodes, name, inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dslc-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _forward(dt):
    """Nodes computing loss and mse from x, y, lin.W, lin.b."""
    return [
        helper.make_node("MatMul", ["x", "lin.W"], ["xw"]),
        helper.make_node("Add", ["xw", "lin.b"], ["pred"]),
        helper.make_node("Sub", ["pred", "y"], ["diff"]),
        helper.make_node("Mul", ["diff", "diff"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["loss"], keepdims=0),
        helper.make_node("Identity", ["loss"], ["mse"]),
    ]


def linreg_program(dtype: str = "float32", features: int = 3, with_seed: bool = False,
                   name: str = "linreg") -> Program:
    dt = np.dtype(dtype)
    W = W0[:features].astype(dt) if features <= len(W0) else np.full((features, 1), 0.1, dt)
    b = np.zeros(1, dt)
    T = lambda n, shape, d=dtype, **kw: {"name": n, "dtype": d, "shape": shape, **kw}

    data_in = [_vi("x", dt, ["B", features]), _vi("y", dt, ["B", 1])]
    param_in = [_vi("lin.W", dt, [features, 1]), _vi("lin.b", dt, [1])]
    hyper_in = [_vi("lr", dt, [])] + ([_vi("seed", np.int64, [])] if with_seed else [])
    state_in = [_vi("opt.step", np.int64, [])] + ([_vi("noise.seed_sum", np.int64, [])] if with_seed else [])
    nodes = _forward(dt) + [
        helper.make_node("Size", ["diff"], ["n_int"]),
        helper.make_node("Cast", ["n_int"], ["n"], to=helper.np_dtype_to_tensor_dtype(dt)),
        helper.make_node("Mul", ["diff", "two"], ["diff2"]),
        helper.make_node("Div", ["diff2", "n"], ["g"]),
        helper.make_node("Transpose", ["x"], ["xt"]),
        helper.make_node("MatMul", ["xt", "g"], ["dW"]),
        helper.make_node("ReduceSum", ["g", "axis0"], ["db"], keepdims=0),
        helper.make_node("Mul", ["lr", "dW"], ["uW"]),
        helper.make_node("Sub", ["lin.W", "uW"], ["lin.W.next"]),
        helper.make_node("Mul", ["lr", "db"], ["ub"]),
        helper.make_node("Sub", ["lin.b", "ub"], ["lin.b.next"]),
        helper.make_node("Add", ["opt.step", "one"], ["opt.step.next"]),
    ]
    next_out = [_vi("lin.W.next", dt, [features, 1]), _vi("lin.b.next", dt, [1]), _vi("opt.step.next", np.int64, [])]
    consts = {"two": np.array(2, dt), "one": np.array(1, np.int64), "axis0": np.array([0], np.int64)}
    initial = {"lin.W": W, "lin.b": b, "opt.step": np.array(0, np.int64)}
    if with_seed:
        nodes.append(helper.make_node("Add", ["noise.seed_sum", "seed"], ["noise.seed_sum.next"]))
        next_out.append(_vi("noise.seed_sum.next", np.int64, []))
        initial["noise.seed_sum"] = np.array(0, np.int64)
    metrics_out = [_vi("loss", dt, []), _vi("mse", dt, [])]
    train = _model(f"{name}.train", nodes, data_in + hyper_in + param_in + state_in, metrics_out + next_out, consts)
    evaluate = _model(f"{name}.eval", _forward(dt), data_in + param_in, metrics_out, {})
    infer = _model(f"{name}.infer", _forward(dt)[:2], data_in[:1], [_vi("pred", dt, ["B", 1])], {"lin.W": W, "lin.b": b})
    init = _model(f"{name}.init", [helper.make_node("Identity", [k + "/initial"], [k]) for k in initial], [],
                  [_vi(k, v.dtype, list(v.shape)) for k, v in initial.items()], {k + "/initial": v for k, v in initial.items()})

    hyper = [T("lr", [], default=LR, kind="lr")] + ([T("seed", [], "int64", default=0, kind="seed")] if with_seed else [])
    state = [T("opt.step", [], "int64", next="opt.step.next")]
    if with_seed:
        state.append(T("noise.seed_sum", [], "int64", next="noise.seed_sum.next"))
    params = [T("lin.W", [features, 1], next="lin.W.next"), T("lin.b", [1], next="lin.b.next")]
    data = [T("x", ["B", features], role="input"), T("y", ["B", 1], role="target")]
    outputs = [T("loss", []), T("mse", [])]
    manifest = {
        "format": "dslc-manifest/2", "dslc": "0.2.0", "model": name, "opset": OPSET, "dtype": dtype,
        "graphs": {
            "infer": {"file": f"{name}.infer.onnx", "inputs": [T("x", ["B", features])], "outputs": [T("pred", ["B", 1])]},
            "init": {"file": f"{name}.init.onnx", "outputs": [{k: v for k, v in t.items() if k != "next"}
                                                            for t in params + state]},
            "train": {"file": f"{name}.train.onnx", "inputs": data, "hyper": hyper, "params": params,
                      "state": state, "outputs": outputs},
            "eval": {"file": f"{name}.eval.onnx", "inputs": data, "params": [T("lin.W", [features, 1]), T("lin.b", [1])],
                     "outputs": outputs},
        },
    }
    return Program(name=name, manifest=manifest, graphs={"init": init, "infer": infer, "train": train, "eval": evaluate},
                   ir_text=f"graph {name}.train {{ ... }}\n", source_path=f"{name}.dl")


def linreg_data(n: int = 100, features: int = 3, seed: int = 0, dtype: str = "float32") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features))
    w_true = np.arange(1, features + 1, dtype=np.float64).reshape(features, 1) / features
    y = x @ w_true + 0.5 + 0.01 * rng.normal(size=(n, 1))
    return {"x": x.astype(dtype), "y": y.astype(dtype)}


def numpy_sgd(W, b, data, *, epochs: int, batch_size: int, seed: int, lr: float = LR, first_epoch: int = 0):
    """The reference: the same SGD, in numpy, over the same shuffled batches. Returns W, b, losses."""
    x, y = data["x"], data["y"]
    dt = x.dtype.type
    lr = dt(lr)
    n, losses = len(x), []
    for epoch in range(first_epoch, epochs):
        order = np.random.default_rng([seed, epoch]).permutation(n)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            xb, yb = x[idx], y[idx]
            diff = xb @ W + b - yb
            total += float(np.mean(diff * diff)) * len(idx)
            g = diff * dt(2) / dt(diff.size)
            W = W - lr * (xb.T @ g)
            b = b - lr * g.sum(axis=0)
        losses.append(total / n)
    return W, b, losses
