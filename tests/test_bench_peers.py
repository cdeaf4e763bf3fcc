"""The hand-written peers of `dslc bench --compare` (examples/bench/peers/) and the harness around them, in
short mode: each peer's first step equals dslc's before it is timed, a peer that disagrees is not timed,
the JSON holds every column's median and p10-p90 spread, a utilization above 100% is never reported as a
result, and a contended machine is named. The JAX peers need the `bench` extra (jax, optax): without it
they skip, saying so."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import dslc
from dslc import bench, bench_machine, peers
from dslc.bench import BenchResult, Column, Timing
from dslc.bench_report import report_lines
from dslc.cli import main
from dslc.peers import PeerError
from dslc.runtime.session import Predictor, TrainStep
from golden import ROOT

torch = pytest.importorskip("torch")
PEERS = ROOT / "examples" / "bench" / "peers"  # explicit: CI installs dslc without its examples

# the reference workloads of examples/bench/reference.py, at small batches
WORKLOADS = {
    "mlp": ("models/mlp.dl", {}, 8),
    "mlp_adam": ("examples/bench/mlp_adam.dl", {}, 8),
    "lenet": ("models/lenet.dl", {}, 4),
    "text_rnn": ("models/text_rnn.dl", {"vocab": 1000, "length": 40, "dim": 128, "hidden": 128}, 4),
    "transformer_lm": ("models/transformer_lm.dl", {"rate": 0}, 2),
}


def _jax_or_skip():
    pytest.importorskip("jax", reason="the JAX peers need the `bench` extra: pip install 'dslc[bench]'")
    pytest.importorskip("optax", reason="the JAX peers need the `bench` extra: pip install 'dslc[bench]'")


def _dslc_first_step(program, batch_size):
    spec, infer_spec = program.manifest["graphs"]["train"], program.manifest["graphs"]["infer"]
    batch = bench.synthetic_batch(spec["inputs"], {"B": batch_size}, np.random.default_rng(3))
    inputs = {t["name"]: batch[t["name"]] for t in infer_spec["inputs"]}
    initial = program.initial_values()
    weights = {t["name"]: initial[t["name"]] for t in spec["params"]}
    step = TrainStep(program.graphs["train"], spec, "cpu", 1, initial=initial)
    want = {"loss": step.step(batch)["loss"], "initial": weights,
            "infer": Predictor(program.graphs["infer"], infer_spec, "cpu", 1).run(inputs)}
    after = step.get_values()
    want["params"] = {name: after[name] for name in weights}
    return batch, inputs, weights, want


@pytest.mark.parametrize("column", ["torch", "jax"])
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_each_peer_takes_dslc_first_step(workload, column):
    if column == "jax":
        _jax_or_skip()
    torch.set_num_threads(1)
    path, defines, batch_size = WORKLOADS[workload]
    program = dslc.compile(ROOT / path, **defines)
    batch, inputs, weights, want = _dslc_first_step(program, batch_size)
    peer = peers.make_column(column, program, weights, PEERS)
    check = bench.check_first_step(peer, batch, inputs, want)
    assert check["passed"], check
    assert check["loss"]["rel_diff"] <= 1e-5  # the losses agree far inside the tolerance
    # the check compared every parameter and output, and the step moved the parameters
    assert set(peer.weights()) == set(weights)
    assert check["params"]["outputs"] == list(weights) and check["infer"]["outputs"] == list(want["infer"])
    assert any(not np.array_equal(peer.weights()[name], weights[name]) for name in weights)


def test_the_check_catches_a_peer_that_differs():
    """A transposed dense weight (dslc's [in, out] read as PyTorch's [out, in]) would still run on a square
    layer: the check must see it. Here: the middle 128×128 layer of the MLP loaded untransposed."""
    program = dslc.compile(ROOT / "models" / "mlp.dl")
    batch, inputs, weights, want = _dslc_first_step(program, 8)
    peer = peers.make_column("torch", program, weights, PEERS)
    with torch.no_grad():
        peer.model.layers[1].weight.copy_(torch.from_numpy(weights["dense_1.weight"]))
    check = bench.check_first_step(peer, batch, inputs, want)
    assert not check["passed"] and not check["infer"]["passed"]
    assert bench._failed_check(check).startswith("its first step differs from dslc's: loss ")


def _bench_json(tmp_path, *args) -> dict:
    out = tmp_path / "bench.json"
    peers_folder = [] if "--peers" in args else ["--peers", str(PEERS)]
    assert main(["bench", *args, *peers_folder, "--steps", "4", "--json", str(out)]) == 0
    return json.loads(out.read_text())["workloads"]


def test_bench_reports_every_column_with_its_spread(tmp_path, capsys):
    columns = "twin,torch,jax" if _has("jax") else "twin,torch"
    result = _bench_json(tmp_path, str(ROOT / "models" / "mlp.dl"), "--batch-size", "16", "--infer-batch-size", "2",
                         "--compare", columns)["mlp"]
    assert result["train_step_p10_ms"] <= result["train_step_ms"] <= result["train_step_p90_ms"]
    assert result["infer_p10_ms"] <= result["infer_ms"] <= result["infer_p90_ms"]
    assert list(result["columns"]) == ["torch-onnx"] + columns.split(",")
    for name in columns.split(","):
        c = result["columns"][name]
        assert c["error"] is None and c["check"]["passed"], name
        for which, dslc_ms in (("train", result["train_step_ms"]), ("infer", result["infer_ms"])):
            t = c[which]
            assert 0 < t["p10_ms"] <= t["median_ms"] <= t["p90_ms"], (name, which)
            assert c[f"{which}_ratio"] == pytest.approx(dslc_ms / t["median_ms"])
    # the twin keeps its round-1 fields
    assert result["torch_train_step_ms"] == result["columns"]["twin"]["train"]["median_ms"]
    peers_timed = [n for n in columns.split(",") if n != "twin"]
    fastest = min(peers_timed, key=lambda n: result["columns"][n]["train"]["median_ms"])
    assert result["fastest_peer"]["train"]["column"] == fastest
    # the machine and the roofline
    check = result["machine_check"]
    assert check["threads"] == result["threads"] and check["speedup"] > 0 and isinstance(check["contended"], bool)
    assert result["bandwidth_gbs"] > 0.1 and result["roofline_ms"] > 0
    params = 784 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    # parameters and velocities in and out, the step counter, lr, a float image and an int64 label per row, the loss and accuracy
    io = 4 * params * 4 + 2 * 8 + 4 + 16 * (784 * 4 + 8) + 2 * 4
    assert result["train_mb_per_step"] * 1e6 == pytest.approx(io)
    printed = capsys.readouterr().out
    assert "machine: a GEMM on " in printed or "machine: one thread" in printed
    assert "roofline bound" in printed
    assert "first step against dslc's: twin passed" in printed


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def test_a_peer_that_disagrees_is_not_timed(tmp_path):
    folder = tmp_path / "peers"
    folder.mkdir()
    source = (ROOT / "examples/bench/peers/mlp.py").read_text()
    (folder / "mlp.py").write_text(source.replace('F.relu(layer(x))', 'F.gelu(layer(x))'))
    result = _bench_json(tmp_path, str(ROOT / "models" / "mlp.dl"), "--batch-size", "8", "--compare", "torch",
                         "--peers", str(folder))["mlp"]
    column = result["columns"]["torch"]
    assert column["error"].startswith("its first step differs from dslc's: loss ")
    assert column["train"] is None and column["train_ratio"] is None and not column["check"]["passed"]
    assert result["fastest_peer"]["train"] is None


def test_a_model_without_a_peer_still_gets_its_twin(tmp_path):
    result = _bench_json(tmp_path, str(ROOT / "models" / "xor.dl"), "--batch-size", "4", "--compare", "twin,torch")["xor"]
    assert result["columns"]["torch"]["error"].startswith("no hand-written peer for `xor` in ")
    assert result["columns"]["twin"]["check"]["passed"]


@pytest.mark.parametrize("value", ["torch,pytorch", "", "all,jax"])
def test_compare_takes_known_columns(value, capsys):
    assert main(["bench", str(ROOT / "models" / "mlp.dl"), "--compare", value]) == 2
    assert "expected `all` or a comma-separated list of twin, torch, torch-compile, jax" in capsys.readouterr().err


def _result(step_ms: float, gemm_gflops: float, **kwargs) -> BenchResult:
    timing = Timing(step_ms, step_ms * 0.9, step_ms * 1.2)
    return BenchResult("m", 8, 8, 10, 2, gemm_gflops, int(1e9), timing, timing, train_bytes=int(1e6),
                       bandwidth_gbs=10.0, machine_check={"threads": 2, "speedup": 1.9, "load_average": 0.5,
                                                          "cores": 2, "contended": False, "reasons": []}, **kwargs)


def test_a_utilization_above_100_percent_is_not_a_result():
    # 1 GFLOP in 2 ms is 500 GFLOP/s: 50% of a 1000 GFLOP/s peak, 125% of a 400 GFLOP/s one
    assert _result(2.0, 1000.0).as_json()["flop_utilization"] == pytest.approx(0.5)
    assert _result(2.0, 1000.0).warnings == []
    r = _result(2.0, 400.0).as_json()
    assert r["flop_utilization"] is None and r["measured_flop_utilization"] == pytest.approx(1.25)
    assert any("125% of the GEMM peak" in w for w in r["warnings"])
    # the roofline: 1 GFLOP at 400 GFLOP/s is 2.5 ms, 1 MB at 10 GB/s is 0.1 ms; a 2 ms step beat it
    assert r["roofline_ms"] == pytest.approx(2.5)
    assert any("beat its roofline bound" in w for w in r["warnings"])
    lines = report_lines(r)
    assert not any("125%" in line for line in lines if not line.startswith("warning:"))
    assert any("not reported (see the warnings)" in line for line in lines)


def test_a_memory_bound_step_has_a_bandwidth_roofline():
    r = _result(2.0, 1000.0, ).as_json()
    assert r["roofline_ms"] == pytest.approx(1.0)  # 1 GFLOP / 1000 GFLOP/s; the bytes take 0.1 ms
    heavy = _result(2.0, 1000.0)
    heavy.train_bytes = int(15e6)  # 15 MB / 10 GB/s = 1.5 ms
    assert heavy.roofline_ms == pytest.approx(1.5)


@pytest.mark.parametrize("one_ms, many_ms, load, contended", [
    (20.0, 10.5, 0.3, False),   # 1.9x: idle
    (20.0, 18.0, 0.3, True),    # 1.1x: a busy sibling core
    (20.0, 10.5, 7.5, True),    # scaling fine at that moment, but 7.5 processes want 2 cores
])
def test_a_contended_machine_is_named(monkeypatch, one_ms, many_ms, load, contended):
    monkeypatch.setattr(bench_machine, "interleaved", lambda jobs, *a, **k: {"1": Timing(one_ms, one_ms, one_ms),
                                                                        "2": Timing(many_ms, many_ms, many_ms)})
    monkeypatch.setattr(bench_machine, "_gemm_job", lambda threads, size, dtype="float32": None)
    monkeypatch.setattr(bench_machine.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(bench_machine.os, "cpu_count", lambda: 2)
    check = bench_machine.contention(2)
    assert check["contended"] is contended and check["speedup"] == pytest.approx(one_ms / many_ms)
    assert len(check["reasons"]) == int(contended)
    r = _result(2.0, 1000.0)
    r.machine_check = check
    assert any(w.startswith("contended machine: ") for w in r.warnings) is contended
    assert ("CONTENDED" in report_lines(r.as_json())[1]) is contended


def test_torch_compile_peer_takes_dslc_first_step():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile's inductor needs a C compiler")
    torch.set_num_threads(1)
    program = dslc.compile(ROOT / "examples/bench/mlp_adam.dl")
    batch, inputs, weights, want = _dslc_first_step(program, 8)
    check = bench.check_first_step(peers.make_column("torch-compile", program, weights, PEERS), batch, inputs, want)
    assert check["passed"], check


def test_the_readme_table_is_generated(tmp_path):
    """examples/bench/reference.py --readme rewrites only its marked block, with every column's median and
    spread, the ratio to the fastest peer against the 0.8 target, and a footnote for an untimed column."""
    import sys

    sys.path.insert(0, str(ROOT / "examples" / "bench"))
    import reference

    r = _result(2.0, 1000.0, columns={"twin": Column(Timing(4.0, 3.5, 5.0), Timing(1.0, 0.9, 1.1)),
                                      "torch": Column(Timing(2.4, 2.2, 2.6), Timing(0.5, 0.4, 0.6)),
                                      "jax": Column(check={}, error="failed: ImportError: no jax")})
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{reference.BEGIN}\nold table\n{reference.END}\nrest\n")
    results = {"mlp-adam": r.as_json()}
    lines = reference.block(results, r.machine_check, ("twin", "torch", "jax"), 10, False, "the command")
    reference.rewrite_readme(readme, lines)
    text = readme.read_text()
    assert text.startswith(f"intro\n{reference.BEGIN}\nGenerated by `the command`") and text.endswith(f"{reference.END}\nrest\n")
    assert "old table" not in text and "not contended" in text
    train_row = next(line for line in text.splitlines() if line.startswith("| mlp-adam (batch 8) | 2.000 (1.800–2.400)"))
    assert "| 4.000 (3.500–5.000) | 2.400 (2.200–2.600) | not timed¹ | 0.83 vs PyTorch (not met) |" in train_row
    assert "¹ m, JAX: failed: ImportError: no jax" in text
    infer_row = [line for line in text.splitlines() if line.startswith("| mlp-adam (batch 8) |")][1]
    assert infer_row.endswith("| 4.00 vs PyTorch (not met) |")


def test_the_readme_block_names_every_option_that_shaped_it():
    """A block of some workloads, or on another thread count, says so in its `Generated by` command."""
    import sys

    sys.path.insert(0, str(ROOT / "examples" / "bench"))
    import reference

    command = lambda argv: reference.command_line(reference.arguments().parse_args(argv))  # noqa: E731
    assert command([]) == "python examples/bench/reference.py --compare all"
    assert command(["--only", "mlp-adam", "lenet-adam", "--steps", "30", "--threads", "1", "--compare", "twin"]) == \
        "python examples/bench/reference.py --compare twin --steps 30 --threads 1 --only mlp-adam lenet-adam"


def test_a_float64_build_has_no_float32_peer():
    program = dslc.compile(ROOT / "models" / "mlp.dl", dtype="float64")
    with pytest.raises(PeerError, match="the peers are written in float32; this build is float64"):
        peers.make_column("torch", program, program.initial_values(), PEERS)


def test_the_gemm_peak_is_measured_in_the_models_dtype(monkeypatch):
    made = []
    monkeypatch.setattr(bench_machine, "_matmul_model", lambda size, dtype="float32": made.append(dtype) or
                        _real_matmul_model(size, dtype))
    check = bench_machine.contention(1, rounds=1, per_round=1, size=64, dtype="float64")
    assert made == ["float64"] and check["gemm_gflops"] > 0


_real_matmul_model = bench_machine._matmul_model
