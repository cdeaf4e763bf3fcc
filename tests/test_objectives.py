"""Several training objectives in one model (a GAN), and layers shared by name.

- each objective is its own training graph, updating only its parameters and reading the others;
- `dslc train` runs them one after another per batch, sharing parameters, and resumes exactly;
- the GAN of models/gan.dl learns a 2-D Gaussian (examples/gan/train.py).
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

import dslc
from dslc.diagnostics import DataError
from dslc.runtime.checkpoint import load_checkpoint
from golden import ROOT
from helpers import TrainDriver, compile_text

sys.path.insert(0, str(ROOT / "examples" / "gan"))
import train as gan_example  # noqa: E402

TWO_HEADS = """
model two_heads {
    input  x: f32[B, 3]
    target y: f32[B, 1]
    h = x |> dense(4, name = "shared") |> tanh
    a = h |> dense(1, name = "head_a")
    b = h |> dense(1, name = "head_b")
    output a
    objective first {
        loss      mse(a, y)
        optimizer sgd(lr = 0.1)
        update    "head_a", "shared"
    }
    objective second {
        loss      mse(b, y)
        optimizer sgd(lr = 0.1, momentum = 0.5)
        update    "head_b"
    }
}
"""


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    return compile_text(tmp_path_factory.mktemp("objectives"), TWO_HEADS, name="two_heads.dl")


def test_each_objective_is_a_graph_with_its_own_parameters(two_heads):
    graphs = two_heads.manifest["graphs"]
    assert list(graphs) == ["infer", "predict", "init", "train.first", "eval.first", "train.second", "eval.second"]
    first, second = graphs["train.first"], graphs["train.second"]
    assert first["file"] == "two_heads.train.first.onnx" and first["objective"] == "first"
    assert [p["name"] for p in first["params"]] == ["shared.weight", "shared.bias", "head_a.weight", "head_a.bias"]
    assert [p["name"] for p in first["frozen"]] == ["head_b.weight", "head_b.bias"]
    assert [p["name"] for p in second["params"]] == ["head_b.weight", "head_b.bias"]
    assert {p["name"] for p in second["frozen"]} == {"shared.weight", "shared.bias", "head_a.weight", "head_a.bias"}
    assert [s["name"] for s in second["state"]] == ["opt.second.step", "opt.second.head_b.weight.velocity",
                                                   "opt.second.head_b.bias.velocity"]
    assert first["optimizer"]["kind"] == "sgd" and second["optimizer"]["settings"]["momentum"] == 0.5
    assert "optimizer" not in two_heads.manifest  # one per objective instead


def test_a_step_changes_only_the_objective_s_parameters(two_heads):
    rng = np.random.default_rng(0)
    data = {"x": rng.standard_normal((8, 3)).astype(np.float32), "y": rng.standard_normal((8, 1)).astype(np.float32)}
    driver = TrainDriver(two_heads, graph="train.second")
    before = dict(driver.params)
    out = driver.run(data)
    spec = two_heads.manifest["graphs"]["train.second"]
    for p in spec["params"]:
        assert not np.array_equal(out[p["next"]], before[p["name"]])
    assert {p["name"] for p in spec["params"]}.isdisjoint(p["name"] for p in spec["frozen"])


def test_training_alternates_objectives_and_resumes_exactly(two_heads, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    data = {"x": x, "y": np.tanh(x[:, :1] - x[:, 1:2]).astype(np.float32)}
    history = two_heads.train(data, data, epochs=4, batch_size=16, out_dir=tmp_path / "straight")
    assert set(history[0]) >= {"first.loss", "second.loss", "val_first.loss", "val_second.loss"}
    assert history[-1]["first.loss"] < history[0]["first.loss"]
    assert history[-1]["second.loss"] < history[0]["second.loss"]
    two_heads.train(data, epochs=2, batch_size=16, out_dir=tmp_path / "split")
    two_heads.train(data, epochs=4, batch_size=16, out_dir=tmp_path / "split", resume=True)
    straight, split = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "split")
    assert set(straight.state) == {"opt.first.step", "opt.second.step", "opt.second.head_b.weight.velocity",
                                   "opt.second.head_b.bias.velocity"}
    for name, value in {**straight.params, **straight.state}.items():
        np.testing.assert_array_equal(value, {**split.params, **split.state}[name], err_msg=name)
    assert int(straight.state["opt.first.step"]) == 16


def test_one_learning_rate_override_is_refused_for_several_objectives(two_heads, tmp_path):
    data = {"x": np.zeros((4, 3), np.float32), "y": np.zeros((4, 1), np.float32)}
    with pytest.raises(DataError, match="several objectives"):
        two_heads.train(data, epochs=1, batch_size=4, out_dir=tmp_path / "r", lr=0.5)


def test_a_named_layer_called_twice_shares_its_weights(tmp_path):
    program = compile_text(tmp_path, """
        block tower(x) {
            return x |> dense(4) |> relu |> dense(2)
        }
        model siamese {
            input  a: f32[B, 3]
            input  b: f32[B, 3]
            target same: f32[B, 2]
            ea = a |> tower(name = "tower")
            eb = b |> tower(name = "tower")
            output d = ea - eb |> dense(2, name = "proj") |> dense(2, name = "proj")
            loss mse(d, same)
            optimizer sgd()
        }
    """)
    names = [p["name"] for p in program.manifest["graphs"]["train"]["params"]]
    assert names == ["tower.dense_0.weight", "tower.dense_0.bias", "tower.dense_1.weight", "tower.dense_1.bias",
                     "proj.weight", "proj.bias"]
    w = TrainDriver(program).params
    a = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    out = program.predict({"a": a, "b": a}, weights=w)  # the same tower on both sides: ea - eb = 0
    proj = lambda v: v @ w["proj.weight"] + w["proj.bias"]  # noqa: E731
    np.testing.assert_allclose(out["d"], proj(proj(np.zeros((5, 2), np.float32))), rtol=1e-6, atol=1e-6)


def test_the_gan_learns_a_2d_gaussian(tmp_path):
    program, fake = gan_example.train(60, tmp_path / "run", quiet=True)
    assert set(program.manifest["graphs"]) == {"infer", "predict", "init", "train.discriminator",
                                              "eval.discriminator", "train.generator", "eval.generator"}
    mean, cov = fake.mean(axis=0), np.cov(fake.T)
    assert np.linalg.norm(mean - gan_example.MEAN) < 0.6, mean
    np.testing.assert_allclose(cov, gan_example.COV, atol=0.12)
    assert cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]) > 0.6


def test_the_gan_matches_pytorch_over_20_alternating_steps():
    """models/gan.dl against the same GAN in PyTorch: per batch a discriminator step (generated points
    detached), then a generator step through the updated discriminator; identical weights and batches."""
    torch = pytest.importorskip("torch")
    from dslc.runtime.session import SharedSteps

    torch.set_num_threads(1)
    program = dslc.compile(ROOT / "models" / "gan.dl")
    graphs = [(k, program.graphs[k], program.manifest["graphs"][k]) for k in ("train.discriminator", "train.generator")]
    steps = SharedSteps(graphs, threads=1, initial=program.initial_values())
    values = steps.get_values()

    def tower(prefix: str, sizes):
        layers = []
        for k, (i, o) in enumerate(sizes):
            linear = torch.nn.Linear(i, o)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(values[f"{prefix}.dense_{k}.weight"].T.copy()))
                linear.bias.copy_(torch.from_numpy(values[f"{prefix}.dense_{k}.bias"]))
            layers += [linear, torch.nn.LeakyReLU(0.2)]
        return torch.nn.Sequential(*layers[:-1])

    gen, disc = tower("gen", [(4, 32), (32, 32), (32, 2)]), tower("disc", [(2, 32), (32, 32), (32, 1)])
    opt_d = torch.optim.Adam(disc.parameters(), lr=0.001, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(gen.parameters(), lr=0.001, betas=(0.5, 0.999))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    rng = np.random.default_rng(0)
    for step in range(20):
        batch = gan_example.epoch_data(rng, 16)
        out = steps.step(batch, [{}, {}])
        z, real = torch.from_numpy(batch["z"]), torch.from_numpy(batch["real"])
        ones, zeros = torch.ones(16, 1), torch.zeros(16, 1)
        opt_d.zero_grad()
        loss_d = bce(disc(real), ones) + bce(disc(gen(z).detach()), zeros)
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        loss_g = bce(disc(gen(z)), ones)
        loss_g.backward()
        opt_g.step()
        assert out["discriminator.loss"] == pytest.approx(loss_d.item(), rel=1e-4), step
        assert out["generator.loss"] == pytest.approx(loss_g.item(), rel=1e-4), step
        current = steps.get_values()
        for prefix, net in (("gen", gen), ("disc", disc)):
            for k in range(3):
                linear = net[2 * k]
                got_w, got_b = current[f"{prefix}.dense_{k}.weight"], current[f"{prefix}.dense_{k}.bias"]
                want_w = linear.weight.detach().numpy().T
                np.testing.assert_allclose(got_w, want_w, rtol=1e-4, atol=1e-6, err_msg=f"step {step} {prefix} {k}")
                np.testing.assert_allclose(got_b, linear.bias.detach().numpy(), rtol=1e-4, atol=1e-6)
                assert np.linalg.norm(got_w - want_w) <= 1e-5 * np.linalg.norm(want_w)
