"""Tensor functions and operators written by hand in `.dl`: `pow`, `clip`, `where`, comparisons, `max`/`min`,
`transpose`, `cast` and indexing (`x[:, -1]`, `x[:, 1:3]`, `x[..., ::2]`).

- PyTorch parity: each model is also written with `torch` functions on the same parameters (the
  compiled initial values, same layout); a few training steps from identical batches must give the same
  loss (rtol 1e-4) and parameters (rtol 1e-4 element-wise, atol 1e-6 of the tensor's largest magnitude,
  L2-norm relative error 1e-5) — `check_parity`, shared with tests/test_attention.py. With AdamW, which
  moves every element by about lr per step whatever the size of its gradient, an element whose gradient
  changes sign near 0 keeps the rounding of a few such steps: there the differences may also reach
  1e-5·lr (element-wise, and √n·1e-5·lr for the L2 norm of n elements).
- Float64 finite-difference gradients of every model (`GRADIENT_MODELS`, tests/gradcheck.py).
- Compile-time errors with their carets (indices out of range, too many subscripts, symbolic axes...).
"""
from __future__ import annotations

import numpy as np
import pytest

from dslc.diagnostics import DslcError, render_all
from gradcheck import check_model_gradients, model_source
from helpers import TrainDriver, compile_text

torch = pytest.importorskip("torch")
F = torch.nn.functional

RTOL = 1e-4
NORM_RTOL = 1e-5
BATCH = 6


# ---- the parity harness ------------------------------------------------------------------------------
def make_batch(spec: dict, rng: np.random.Generator, kinds: dict[str, str], batch: int = BATCH) -> dict:
    """Random data for the training graph's inputs (`int:N` kinds draw integers from [0, N))."""
    data = {}
    for entry in spec["inputs"]:
        shape = tuple(batch if isinstance(d, str) else d for d in entry["shape"])
        kind = kinds.get(entry["name"], "")
        if kind.startswith("int:"):
            data[entry["name"]] = rng.integers(0, int(kind[4:]), shape).astype(entry["dtype"])
        elif kind == "bool":
            data[entry["name"]] = rng.random(shape) < 0.7
        elif entry["dtype"].startswith("int"):
            data[entry["name"]] = rng.integers(0, entry["classes"], shape).astype(entry["dtype"])
        else:
            data[entry["name"]] = rng.standard_normal(shape).astype(entry["dtype"])
    return data


def torch_optimizer(program, params):
    opt = program.manifest["optimizer"]
    s = opt["settings"]
    if opt["kind"] == "sgd":
        return torch.optim.SGD(params, lr=s["lr"])
    if opt["kind"] == "adamw":
        return torch.optim.AdamW(params, lr=s["lr"], betas=(s["beta1"], s["beta2"]), eps=s["eps"],
                                 weight_decay=s["weight_decay"])
    raise ValueError(opt["kind"])


def assert_params_match(ours: dict[str, np.ndarray], theirs: dict, what: str, step_atol: float = 0.0):
    """Element-wise rtol 1e-4 (atol 1e-6 of the tensor's largest magnitude, or `step_atol`), and the L2
    norm of the difference within 1e-5 of the tensor's (plus √n·`step_atol`)."""
    for name, value in ours.items():
        expected = theirs[name].detach().numpy()
        assert value.shape == expected.shape, f"{what}: `{name}` has shape {value.shape}, torch {expected.shape}"
        scale = float(np.max(np.abs(expected)))
        atol = max(1e-2 * RTOL * scale, step_atol)
        np.testing.assert_allclose(value, expected, rtol=RTOL, atol=atol, err_msg=f"{what}: `{name}`")
        diff = np.linalg.norm(value.astype(np.float64) - expected)
        allowed = NORM_RTOL * np.linalg.norm(expected.astype(np.float64)) + np.sqrt(value.size) * step_atol
        assert diff <= allowed, f"{what}: `{name}` differs from torch by {diff:.3g} in L2 norm (allowed {allowed:.3g})"


def check_parity(program, torch_loss, batches: list[dict], extra_outputs=()):
    """Train `program` and its torch twin `torch_loss(params, data) -> loss` (params: the compiled
    initial values as leaf tensors, by name) on the same batches; loss and params must agree at every step.
    `extra_outputs`: (output name, torch function of (params, data)) pairs of the inference graph, compared
    before training."""
    driver = TrainDriver(program)
    params = {name: torch.tensor(value, requires_grad=True) for name, value in driver.params.items()}
    optimizer = torch_optimizer(program, list(params.values()))
    settings = program.manifest["optimizer"]
    step_atol = 1e-5 * settings["settings"]["lr"] if settings["kind"] in ("adam", "adamw") else 0.0
    for step, batch in enumerate(batches):
        data = {k: torch.from_numpy(v) for k, v in batch.items()}
        optimizer.zero_grad()
        loss = torch_loss(params, data)
        loss.backward()
        optimizer.step()
        out = driver.step(batch)
        np.testing.assert_allclose(out["loss"], loss.item(), rtol=RTOL, err_msg=f"loss at step {step}")
        assert_params_match(driver.params, params, f"after step {step}", step_atol)
    return driver


def check_table_parity(workdir, name: str, body: str, kinds: dict[str, str], twin, optimizer: str, steps: int,
                       seed: int):
    """`model name { body; optimizer ... }` against its torch twin over `steps` random batches."""
    program = compile_text(workdir, f"model {name} {{\n{body}\n    optimizer {optimizer}\n}}", name=f"{name}_parity.dl")
    rng = np.random.default_rng(seed)
    check_parity(program, twin, [make_batch(program.manifest["graphs"]["train"], rng, kinds) for _ in range(steps)])


# ---- the models and their torch twins ----------------------------------------------------------------------
def dense(P, name, x):
    return x @ P[f"{name}.weight"] + P[f"{name}.bias"]


def torch_pow_clip_where(P, d):
    x = d["x"]
    h, g = dense(P, "dense_0", x), dense(P, "dense_1", x)
    a = torch.pow(h.abs() + 0.5, g) + torch.pow(h, 3) + torch.pow(2.0, g.clamp(-0.5, 0.8)) + torch.pow(h, 2.0)
    c = torch.where(h > g, h, g * 0.5) + torch.where(h <= 0.1, 1.0, h) + torch.where(x != h, 0.5, g)
    return F.mse_loss(a + c + h.clamp(-0.3, 0.4), d["y"])


def torch_max_min_transpose(P, d):
    x = d["x"]
    h = dense(P, "linear_0", x)
    t = dense(P, "linear_1", h.transpose(1, 2))
    s = h.amax(1) - h.amin(-2) * 0.5 + t.amax(2) + h.amin((1, 2))[:, None] * 0.25
    pred = s + h.amax() - h.amin() + dense(P, "linear_2", x).amax((1, 2))[:, None]
    return F.mse_loss(pred, d["y"])


def torch_indexing(P, d):
    h = dense(P, "linear_0", d["x"])
    a = h[:, -1] + h[:, 0] * h[..., 2:4, :][:, 1] - h[:, -6, 1:][:, 0:1]
    b = h[:, ::2].sum(1)
    c = h[:, 1:6:2, 1:3].sum(1)
    transposed = h.transpose(1, 2)[:, 3] + h[..., 2]
    f = h[:, 2:5:3, ::3].flatten(1)
    pred = dense(P, "dense_1", torch.cat([a + b, c, dense(P, "dense_0", transposed), f], dim=-1))
    return F.mse_loss(pred, d["y"])


def torch_cast_and_integer_comparisons(P, d):
    x, ids = d["x"], d["ids"]
    h = dense(P, "dense_0", x)
    keep = (ids != 0).float() * (ids < 3).float() + (ids == 2).float() + (ids >= 3).float() * 2.0
    flags = (h >= 0.2).float() + ((h > 0) == (x > 0)).float()
    pred = h * keep + flags + (h * 3.0).long().float() + h.double().float()
    return F.mse_loss(pred, d["y"])


def torch_squeeze(P, d):
    s = dense(P, "dense_0", d["x"]).squeeze(-1)
    pred = s * 2.0 + d["z"].squeeze(2).sum(1) + dense(P, "dense_1", d["z"].squeeze(2)).squeeze(1)
    return F.mse_loss(pred, d["y"])


# name -> (model body without optimizer, data kinds, torch twin: loss of (params, data))
MODELS = {
    "pow_clip_where": ("""
        input  x: f32[B, 5]
        target y: f32[B, 5]
        h = x |> dense(5)
        g = x |> dense(5)
        a = pow(abs(h) + 0.5, g) + pow(h, 3) + pow(2, clip(g, -0.5, 0.8)) + pow(h, 2.0)
        c = where(h > g, h, g * 0.5) + where(h <= 0.1, 1.0, h) + where(x != h, 0.5, g)
        output pred = a + c + clip(h, -0.3, 0.4)
        loss   mse(pred, y)
    """, {}, torch_pow_clip_where),
    "max_min_transpose": ("""
        input  x: f32[B, 3, 4]
        target y: f32[B, 4]
        h = x |> linear(4)
        t = transpose(h, 0, 2, 1) |> linear(2)
        s = max(h, 1) - min(h, -2) * 0.5 + max(t, 2) + reshape(min(h, 1, 2), 1) * 0.25
        output pred = s + max(h) - min(transpose(h)) + reshape(max(x |> linear(4), 1, 2), 1)
        loss   mse(pred, y)
    """, {}, torch_max_min_transpose),
    "indexing": ("""
        input  x: f32[B, 6, 4]
        target y: f32[B, 12]
        h = x |> linear(4)
        a = h[:, -1] + h[:, 0] * h[..., 2:4, :][:, 1] - h[:, -6, 1:][:, 0:1]
        b = h[:, ::2] |> sum(1)
        c = h[:, 1:6:2, 1:3] |> sum(1)
        d = transpose(h, 0, 2, 1)[:, 3] + h[..., 2]
        e = h[:, 2:5:3, ::3] |> flatten
        output pred = concat(a + b, c, d |> dense(6), e) |> dense(12)
        loss   mse(pred, y)
    """, {}, torch_indexing),
    "cast_and_integer_comparisons": ("""
        input  x: f32[B, 4]
        input  ids: i64[B, 4]
        target y: f32[B, 4]
        h = x |> dense(4)
        keep = cast(ids != 0, "f32") * cast(ids < 3, "f32") + cast(ids == 2, "f32") + cast(ids >= 3, "f32") * 2.0
        flags = cast(h >= 0.2, "f32") + cast((h > 0.0) == (x > 0.0), "f32")
        output pred = h * keep + flags + cast(cast(h * 3.0, "i64"), "f32") + cast(cast(h, "f64"), "f32")
        loss   mse(pred, y)
    """, {"ids": "int:5"}, torch_cast_and_integer_comparisons),
    "squeeze": ("""
        input  x: f32[B, 4]
        input  z: f32[B, 3, 1]
        target y: f32[B]
        s = x |> dense(1) |> squeeze
        output pred = s * 2.0 + sum(squeeze(z, 2), 1) + (squeeze(z, -1) |> dense(1) |> squeeze(1))
        loss   mse(pred, y)
    """, {}, torch_squeeze),
}
GRADIENT_MODELS = {name: (body, kinds) for name, (body, kinds, _) in MODELS.items()}


@pytest.mark.parametrize("name", list(GRADIENT_MODELS))
def test_model_gradient(name, workdir):
    body, kinds = GRADIENT_MODELS[name]
    check_model_gradients(workdir, name, model_source(name, body), kinds)


@pytest.mark.parametrize("name", list(MODELS))
def test_torch_parity(name, workdir):
    """Three SGD steps agree with the torch twin: so the values and the gradients do."""
    body, kinds, twin = MODELS[name]
    check_table_parity(workdir, name, body, kinds, twin, "sgd(lr = 0.05)", steps=3, seed=5)


# ---- compile-time errors ----------------------------------------------------------------------------------
ERROR_MODEL = """model m(hidden = 3) {{
    input x: f32[B, 4]
    input ids: i64[B, 4]
    input z: f32[B, 4, 3]
    input s: f32[3]
    {line}
    output y
}}
"""

# the statement on line 6 -> the rendered diagnostic (path shown as `t.dl`)
ERRORS = {
    "y = x[:, 4]": """\
t.dl:6:14: error: index 4 is out of range for axis 1 of `f32[B, 4]` (size 4)
  |
6 |     y = x[:, 4]
  |              ^ out of range
hint: indices on this axis run from -4 to 3""",
    "y = x[:, -5]": """\
t.dl:6:14: error: index -5 is out of range for axis 1 of `f32[B, 4]` (size 4)
  |
6 |     y = x[:, -5]
  |              ^^ out of range
hint: indices on this axis run from -4 to 3""",
    "y = x[:, 1, 2]": """\
t.dl:6:17: error: too many subscripts: `f32[B, 4]` has 2 axes, indexed with 3
  |
6 |     y = x[:, 1, 2]
  |                 ^ no axis left for this
hint: give at most 2 subscripts""",
    "y = s[..., 0, 1]": """\
t.dl:6:19: error: too many subscripts: `f32[3]` has 1 axis, indexed with 2
  |
6 |     y = s[..., 0, 1]
  |                   ^ no axis left for this
hint: give at most 1 subscript""",
    "y = x[0]": """\
t.dl:6:11: error: cannot index axis 0 of `f32[B, 4]`: its size `B` is known only at run time
  |
6 |     y = x[0]
  |           ^ the position cannot be checked
hint: index axes of known size""",
    "y = z[1:3, 0]": """\
t.dl:6:11: error: cannot slice axis 0 of `f32[B, 4, 3]`: its size `B` is known only at run time
  |
6 |     y = z[1:3, 0]
  |           ^^^ the bounds cannot be checked
hint: keep a symbolic axis whole with `:`""",
    "y = x[:, 3:1]": """\
t.dl:6:14: error: the slice selects nothing from axis 1 of `f32[B, 4]` (size 4)
  |
6 |     y = x[:, 3:1]
  |              ^^^ empty slice
hint: positions on this axis run from -4 to 3""",
    "y = x[:, ::-1]": """\
t.dl:6:16: error: slice steps must be positive, got -1
  |
6 |     y = x[:, ::-1]
  |                ^^
hint: reversing an axis is not supported""",
    "y = x[:, 1.5]": """\
t.dl:6:14: error: an index must be a whole number known when the model is built, got the number `1.5`
  |
6 |     y = x[:, 1.5]
  |              ^^^""",
    "y = x[:, ids]": """\
t.dl:6:14: error: an index must be a whole number known when the model is built, got a tensor `i64[B, 4]`
  |
6 |     y = x[:, ids]
  |              ^^^
hint: indexing with a tensor of positions is not supported""",
    "y = x[..., ...]": """\
t.dl:6:16: error: an index can have only one `...`
  |
6 |     y = x[..., ...]
  |                ^^^ a second `...`""",
    "y = hidden[0]": """\
t.dl:6:9: error: only tensors can be indexed, not the number `3`
  |
6 |     y = hidden[0]
  |         ^^^^^^""",
    "y = x > ids": """\
t.dl:6:9: error: cannot compare `f32[B, 4]` with `i64[B, 4]`: the dtypes differ
  |
6 |     y = x > ids
  |         ^^^^^^^
hint: convert one side with `cast`""",
    "y = (x > 0) < (x > 1)": """\
t.dl:6:9: error: `<` orders numbers, not `bool` tensors
  |
6 |     y = (x > 0) < (x > 1)
  |         ^^^^^^^^^^^^^^^^^
hint: compare `bool` tensors with `==` or `!=`""",
    "y = x > z": """\
t.dl:6:9: error: cannot compare `f32[B, 4]` with `f32[B, 4, 3]`: the shapes do not broadcast
  |
6 |     y = x > z
  |         ^^^^^
hint: shapes broadcast when, from the right, each pair of dims is equal or one of them is 1""",
    "y = ids > 0.5": """\
t.dl:6:15: error: 0.5 cannot be combined with the integer tensor `i64[B, 4]`
  |
6 |     y = ids > 0.5
  |               ^^^
hint: cast the tensor first with `cast`""",
    "y = where(x, x, 0)": """\
t.dl:6:15: error: `where` needs a `bool` condition, got `f32[B, 4]`
  |
6 |     y = where(x, x, 0)
  |               ^
hint: compare to get one, as in `where(x > 0, x, 0)`""",
    "y = transpose(z, 0, 1, 1)": """\
t.dl:6:28: error: `transpose` lists axis 1 of `f32[B, 4, 3]` twice
  |
6 |     y = transpose(z, 0, 1, 1)
  |                            ^ already listed
hint: list each of the 3 axes once""",
    "y = z |> transpose(0, 1, 3)": """\
t.dl:6:30: error: axis 3 is out of range for `f32[B, 4, 3]` in `transpose`
  |
6 |     y = z |> transpose(0, 1, 3)
  |                              ^
hint: axes run from -3 to 2""",
    "y = transpose(z, 1, 0)": """\
t.dl:6:22: error: `transpose` of `f32[B, 4, 3]` needs 3 axes, got 2
  |
6 |     y = transpose(z, 1, 0)
  |                      ^
hint: list every axis once, e.g. `transpose(x, 2, 1, 0)`""",
    'y = cast(x, "float")': """\
t.dl:6:17: error: unknown dtype "float"
  |
6 |     y = cast(x, "float")
  |                 ^^^^^^^
hint: dtypes are "f32", "f64", "i32", "i64", "bool\"""",
    "y = squeeze(x, 0)": """\
t.dl:6:20: error: `squeeze` cannot drop the batch axis of `f32[B, 4]`
  |
6 |     y = squeeze(x, 0)
  |                    ^
hint: give an axis after the batch axis, e.g. `squeeze(x, -1)`""",
    "y = squeeze(x)": """\
t.dl:6:9: error: `squeeze` drops an axis of size 1, but axis -1 of `f32[B, 4]` has size 4
  |
6 |     y = squeeze(x)
  |         ^^^^^^^^^^ size 4
hint: pick an axis of size 1, or take one position with `x[:, 0]`""",
    "y = clip(x, 1, 0)": """\
t.dl:6:17: error: `clip` bounds are reversed: low 1.0 is above high 0.0
  |
6 |     y = clip(x, 1, 0)
  |                 ^""",
    "y = max(x, 0, 2)": """\
t.dl:6:19: error: axis 2 is out of range for `f32[B, 4]` in `max`
  |
6 |     y = max(x, 0, 2)
  |                   ^
hint: axes run from -2 to 1""",
}


@pytest.mark.parametrize("line", list(ERRORS))
def test_compile_error(line, workdir):
    path = workdir / "t.dl"
    with pytest.raises(DslcError) as info:
        compile_text(workdir, ERROR_MODEL.format(line=line), name="t.dl")
    assert render_all(info.value.diagnostics).replace(str(path), "t.dl") == ERRORS[line]


# ---- what compiles, and to what -------------------------------------------------------------------------
def run_outputs(workdir, body: str, feeds: dict, name: str) -> dict:
    program = compile_text(workdir, f"model m {{\n{body}\n}}", name=f"{name}.dl")
    from helpers import make_runner

    return make_runner(program.graphs["infer"])(feeds)


def test_indexing_matches_numpy_at_any_batch(workdir):
    """Every subscript form against NumPy, with the batch axis symbolic (kept whole with `:`)."""
    body = """
        input x: f32[B, 5, 6]
        output a = x[:, 0]
        output b = x[:, -1, 1:4]
        output c = x[:, ::2, 1::3]
        output d = x[..., 4]
        output e = x[:, 1:-1, ...][:, 1:, -2:]
        output f = x[:, 3:100, :-10 + 9]
        output g = x[:]
    """
    x = np.arange(7 * 5 * 6, dtype=np.float32).reshape(7, 5, 6)
    out = run_outputs(workdir, body, {"x": x}, "indexing_numpy")
    expected = {"a": x[:, 0], "b": x[:, -1, 1:4], "c": x[:, ::2, 1::3], "d": x[..., 4], "e": x[:, 1:-1, ...][:, 1:, -2:],
                "f": x[:, 3:100, :-1], "g": x}
    for key, value in expected.items():
        np.testing.assert_array_equal(out[key], value, err_msg=key)


def test_comparisons_of_numbers_are_compile_time_booleans(workdir):
    """`2 < 3` is `true` when the model is built, so it can configure layers (here `causal`)."""
    body = """
        input x: f32[B, 3]
        output y = where(x > 0.5, 1.0, 0.0) + cast(x == x, "f32") * cast(x != x + 1.0, "f32")
        output z = x |> dense(2, bias = 3 > 2 == false)
    """
    with pytest.raises(DslcError, match="comparisons do not chain"):
        run_outputs(workdir, body, {}, "chain")
    body = body.replace("3 > 2 == false", "(3 > 2) == false")
    program = compile_text(workdir, f"model m {{\n{body}\n}}", name="numbers.dl")
    assert "dense_0.bias" not in program.ir_text and "dense_0.weight" in program.ir_text
    from helpers import make_runner

    x = np.array([[0.2, 0.7, 0.5]], np.float32)
    np.testing.assert_array_equal(make_runner(program.graphs["infer"])({"x": x})["y"], [[1.0, 2.0, 1.0]])


def test_a_range_test_with_where(workdir):
    """`where` on `bool` values (with `true`/`false` literals) combines comparisons: 0 < x < 1."""
    from helpers import make_runner

    program = compile_text(workdir, """
        model m {
            input x: f32[B, 4]
            inside = where(0.0 < x, x < 1.0, false)
            outside = where(inside, false, true)
            output y = where(inside, x, -1.0) + cast(outside, "f32") * 10.0
        }""", name="range.dl")
    x = np.array([[-0.5, 0.25, 1.0, 0.75]], np.float32)
    np.testing.assert_array_equal(make_runner(program.graphs["infer"])({"x": x})["y"], [[9.0, 0.25, 9.0, 0.75]])
