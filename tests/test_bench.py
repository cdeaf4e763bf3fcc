"""`dslc bench` in its short mode (the harness, not the timings): the JSON it writes, the inference
exported by `torch.onnx.export` checked against dslc's, the peak-memory children, the FLOP count taken
from the IR, and the PyTorch twin computing the same training step as the ONNX graphs. The hand-written
peers (`--compare torch,torch-compile,jax`) are in test_bench_peers.py."""
from __future__ import annotations

import json

import numpy as np
import pytest

import dslc
from dslc import bench, bench_export
from dslc.bench import synthetic_batch
from dslc.cli import main
from dslc.twin import TorchTwin, flops
from golden import ROOT
from helpers import TrainDriver

torch = pytest.importorskip("torch")

FIELDS = ("train_step_ms", "torch_train_step_ms", "train_ratio", "infer_ms", "torch_infer_ms", "infer_ratio",
          "measured_flop_utilization", "torch_onnx_infer_ms", "infer_vs_torch_onnx", "train_peak_rss_mb",
          "torch_train_peak_rss_mb", "rss_ratio")


def test_bench_writes_every_field(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", str(ROOT / "models" / "mlp.dl"), "--batch-size", "16", "--infer-batch-size", "1",
                 "--steps", "3", "--compare", "twin", "--memory", "--json", str(out)])
    assert code == 0
    document = json.loads(out.read_text())
    result = document["workloads"]["mlp"]
    for field in FIELDS:
        assert isinstance(result[field], float) and result[field] > 0, field
    assert result["train_ratio"] == pytest.approx(result["train_step_ms"] / result["torch_train_step_ms"])
    # a utilization is a result only when it is possible (see test_bench_peers.py for the guard)
    assert result["flop_utilization"] in (None, result["measured_flop_utilization"])
    assert result["columns"]["twin"]["check"]["passed"]
    assert result["loss_check"]["dslc"] == pytest.approx(result["loss_check"]["torch"], rel=1e-5)
    # the exported model was run on the benchmark inputs and agreed with dslc's inference graph
    assert result["torch_onnx_error"] is None
    assert result["torch_onnx_check"] == {"outputs": ["probs"], "max_abs_diff": pytest.approx(0, abs=1e-6),
                                          "rtol": 1e-4, "passed": True}
    assert result["infer_vs_torch_onnx"] == pytest.approx(result["infer_ms"] / result["torch_onnx_infer_ms"])
    # each child holds its library (onnxruntime ~70 MB, torch ~300 MB) and a few MB of training step
    assert 10 < result["train_peak_rss_mb"] < 1000 and 10 < result["torch_train_peak_rss_mb"] < 2000
    assert result["torch_train_peak_rss_mb"] > result["train_peak_rss_mb"]  # torch alone outweighs onnxruntime
    for side in ("train", "torch_train"):
        assert 0 < result[f"{side}_rss_increase_mb"] < result[f"{side}_peak_rss_mb"], side
    assert result["rss_ratio"] == pytest.approx(result["train_rss_increase_mb"] / result["torch_train_rss_increase_mb"])
    assert result["memory_steps"] == result["steps"]
    printed = capsys.readouterr().out
    assert "ratio" in printed and "torch.onnx.export" in printed and "train RSS" in printed


def test_bench_goes_on_when_the_export_fails(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("Unsupported: ONNX export of operator `frobnicate`\nsecond line of the trace")

    monkeypatch.setattr(bench_export, "export_twin_inference", refuse)
    out = tmp_path / "bench.json"
    assert main(["bench", str(ROOT / "models" / "mlp.dl"), "--batch-size", "8", "--steps", "2",
                 "--compare", "twin", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["workloads"]["mlp"]
    assert result["torch_onnx_error"] == ("torch.onnx.export + ONNX Runtime failed: RuntimeError: Unsupported: "
                                          "ONNX export of operator `frobnicate`")
    assert result["torch_onnx_infer_ms"] is None and result["infer_vs_torch_onnx"] is None
    assert result["torch_infer_ms"] > 0  # the rest of the comparison still ran
    assert result["train_peak_rss_mb"] is None  # no `--memory`
    assert "not timed: torch.onnx.export + ONNX Runtime failed" in capsys.readouterr().out


def test_exported_outputs_must_match():
    want = {"y": np.array([[1.0, 1e-7], [-2.0, 3.0]], np.float32)}
    # an element near zero is judged against the tensor's scale, not its own size
    assert bench.compare_outputs({"y": want["y"] + np.float32(1e-5)}, want)["passed"]
    check = bench.compare_outputs({"y": want["y"] * np.float32(1.01)}, want)
    assert not check["passed"] and check["max_abs_diff"] == pytest.approx(0.03, rel=1e-3)
    assert not bench.compare_outputs({"y": want["y"][:1]}, want)["passed"]


def test_bench_needs_sizes_for_symbolic_dims(tmp_path, capsys):
    path = tmp_path / "seq.dl"
    path.write_text("model seq {\n    input x: f32[B, T, 3]\n    target y: f32[B, T, 2]\n"
                    "    output p = x |> linear(2)\n    loss mse(p, y)\n    optimizer sgd()\n}\n")
    assert main(["bench", str(path), "--steps", "1"]) == 2  # a bad command line, found once compiled
    assert "dslc bench: error: `seq` has the symbolic dimension(s) `T`; give their sizes with `--dim T=N`" in \
        capsys.readouterr().err
    assert main(["bench", str(path), "--steps", "1", "--dim", "T=5"]) == 0


@pytest.mark.parametrize("dim, message", [
    ("B=5", "`--dim B=...`: the batch size is set by `--batch-size` (and `--infer-batch-size`)"),
    ("T=5", "`--dim T=...`: `mlp` has no dimension `T` (its dimensions: none besides the batch `B`)"),
    ("T=0", "argument --dim: expected `NAME=N` with a positive integer N, got `T=0`"),
])
def test_bench_rejects_dims_the_model_does_not_take(dim, message, capsys):
    assert main(["bench", str(ROOT / "models" / "mlp.dl"), "--steps", "1", "--dim", dim]) == 2
    assert f"dslc bench: error: {message}\n" in capsys.readouterr().err


def test_bench_checks_its_json_path_before_timing(tmp_path, capsys):
    for path, reason in [(tmp_path / "missing" / "b.json", f"No such file or directory (`{tmp_path / 'missing'}`)"),
                         (f"{tmp_path}/", "it is a directory; name the file to write")]:
        assert main(["bench", str(ROOT / "models" / "mlp.dl"), "--steps", "1", "--json", str(path)]) == 3
        out, err = capsys.readouterr()
        assert out == ""  # nothing timed
        assert err == f"error: cannot write `{path}`: {reason}\n"


def test_bench_refuses_several_objectives_with_a_fitting_hint(capsys):
    assert main(["bench", str(ROOT / "models" / "gan.dl"), "--steps", "1"]) == 3
    assert capsys.readouterr().err == (
        "error: `dslc bench` times models with one training objective; `gan` has 2 (`objective` blocks, run one "
        "after another per batch)\nhint: time the objectives' graphs from Python with "
        "`dslc.runtime.session.SharedSteps`\n")


def test_training_step_flops_come_from_the_ir():
    program = dslc.compile(ROOT / "models" / "mlp.dl")
    b = 32
    layers = [(784, 128), (128, 128), (128, 10)]
    forward = sum(2 * b * i * o for i, o in layers)
    weight_grads = forward
    input_grads = sum(2 * b * i * o for i, o in layers[1:])  # no gradient for the data itself
    assert flops(program.extras["final"]["train"], {"B": b}) == forward + weight_grads + input_grads


@pytest.mark.parametrize("model", ["models/mlp.dl", "models/xor.dl", "examples/digits/digits.dl",
                                   "models/cnn_digits.dl"])
def test_the_torch_twin_takes_the_same_step(model):
    """Dropout included (digits, cnn_digits): the twin draws dslc's masks, else `dslc bench --compare twin`
    could never time a model with dropout (its first step differed)."""
    torch.set_num_threads(1)
    program = dslc.compile(ROOT / model)
    lowered = program.extras["lowered"]
    twin = TorchTwin(torch, lowered["train"], lowered["infer"], lowered["train"].notes["optimizer"])
    spec = program.manifest["graphs"]["train"]
    batch = synthetic_batch(spec["inputs"], {"B": 8}, np.random.default_rng(1))
    driver = TrainDriver(program)
    out = driver.run(batch)
    loss = twin.loss_and_step(batch)
    assert loss == pytest.approx(float(out["loss"]), rel=1e-5)
    for p in spec["params"]:
        np.testing.assert_allclose(twin.params[p["name"]].detach().numpy(), out[p["next"]], rtol=1e-4, atol=1e-6,
                                   err_msg=p["name"])
    inputs = {t["name"]: batch[t["name"]] for t in program.manifest["graphs"]["infer"]["inputs"]}
    infer = program.predict(inputs, weights={k: v.detach().numpy() for k, v in twin.params.items()})
    for name, value in twin.infer(inputs).items():
        np.testing.assert_allclose(value.numpy(), infer[name], rtol=1e-4, atol=1e-6)
