"""Fuzz cases for the compiler: each seed gives one set of `.dl` files, made by one of

- `token`: token-level mutation of a model in models/ (delete, duplicate, swap, replace a number by an
  extreme one, an identifier by a registry name or keyword, insert a stray token);
- `ast`: structure-aware mutation through the parser's spans (swap layers within and across models,
  extreme numbers and dimensions, other dtypes and shapes, `repeat` around a stage, deep nesting,
  deleted or duplicated statements);
- `imports`: a model importing itself, a cycle, a binary file, an absolute path, `..`, a folder, a file
  over the size limit, a very long path;
- `generated`: a random model built from the registry's layers and functions with random arguments
  and input shapes, ending in a dense layer, a loss and a random optimizer.

`check_case` runs one: compiling must succeed or raise `DslcError` (exit 1), whose rendering must not
fail, within `TIME_BOUND`; a model that compiles must pass `onnx.checker` (full check) and take one
training step with finite outputs (`one_training_step`).
"""
from __future__ import annotations

import dataclasses
import random
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import onnx

from dslc.builtins import load_all
from dslc.compiler import compile_file
from dslc.diagnostics import DslcError, render_all
from dslc.frontend.parser import parse
from dslc.optim import OPTIMIZERS
from dslc.source import SourceFile

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted((ROOT / "models").glob("*.dl"))
# Seconds per case, compile and training step (a loaded 2-core machine takes ~0.1-5 s), plus time per byte
# of the graphs: compiling is linear in the weights (drawn, serialized and checked for each graph),
# ~45 s for 1 GB of graphs on that machine; a model of more than `MAX_RUN_BYTES` is compiled, not run
TIME_BOUND = 60.0
SECONDS_PER_GB = 120.0
HARD_STOP = 600.0
MAX_RUN_BYTES = 64 << 20
MAX_FED_ELEMENTS = 2_000_000  # a model that compiles with larger inputs is checked but not run
KINDS = ("token", "ast", "ast", "imports", "generated", "generated")

EXTREME_NUMBERS = ["0", "-1", "1", "2", "0.5", "-0.0", "1e300", "-1e300", "1e308", "1e-300", "3.4e38", "1e39",
                   "65536", "2147483648", "4611686018427387904", "9223372036854775807", "9223372036854775808",
                   "99999999999999999999999", "100000000", "1e5"]
EXTREME_DIMS = ["0", "1", "2", "7", "65536", "2147483648", "4611686018427387904", "9223372036854775807", "T", "B"]
KEYWORDS = ["model", "block", "import", "input", "target", "output", "return", "loss", "optimizer", "metric",
            "objective", "update", "repeat", "true", "false"]
STRAY = ["(", ")", "[", "]", "{", "}", ",", "=", "|>", "+", "-", "*", "/", "@", ":", "\n", "\"", "#", ".", "<",
         "..."]
TOKEN = re.compile(r'"(?:\\.|[^"\\\n])*"|\d+\.?\d*(?:[eE][+-]?\d+)?|[A-Za-z_][A-Za-z_0-9]*|\|>|[<>=!]=|\S')


@dataclasses.dataclass
class Case:
    seed: int
    kind: str
    model: Path
    what: str  # the mutation, for the report


# ---- making cases --------------------------------------------------------------------------------
def make_case(seed: int, folder: Path) -> Case:
    """The files of case `seed` in `folder` (fresh per case); models/blocks is copied next to them."""
    rng = random.Random(seed)
    shutil.copytree(ROOT / "models" / "blocks", folder / "blocks", dirs_exist_ok=True)
    kind = KINDS[seed % len(KINDS)]
    source = rng.choice(MODELS)
    text = source.read_text(encoding="utf-8")
    if kind == "token":
        steps = [token_mutation(rng) for _ in range(rng.choice([1, 1, 2, 3]))]
        for step in steps:
            text = step(text)
        what = f"{source.name}: " + ", ".join(s.__name__ for s in steps)
    elif kind == "ast":
        mutation = rng.choice(AST_MUTATIONS)
        text = mutation(text, rng)
        what = f"{source.name}: {mutation.__name__}"
    elif kind == "imports":
        text, what = import_mutation(text, rng, folder)
        what = f"{source.name}: {what}"
    else:
        text = generated_model(rng, folder)
        what = "generated"
    path = folder / "case.dl"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return Case(seed, kind, path, what)


def token_mutation(rng: random.Random):
    def delete(text):
        return _replace_token(text, rng, lambda t: "")

    def duplicate(text):
        return _replace_token(text, rng, lambda t: t + " " + t)

    def extreme_number(text):
        return _replace_token(text, rng, lambda t: rng.choice(EXTREME_NUMBERS), r"\d")

    def other_name(text):
        names = list(load_all()) + KEYWORDS + re.findall(r"[A-Za-z_]\w*", text)
        return _replace_token(text, rng, lambda t: rng.choice(names), r"[A-Za-z_]")

    def stray_token(text):
        return _replace_token(text, rng, lambda t: t + " " + rng.choice(STRAY))

    def swap_neighbours(text):
        tokens = list(TOKEN.finditer(text))
        if len(tokens) < 2:
            return text
        i = rng.randrange(len(tokens) - 1)
        a, b = tokens[i], tokens[i + 1]
        return text[:a.start()] + b.group() + text[a.end():b.start()] + a.group() + text[b.end():]

    return rng.choice([delete, duplicate, extreme_number, extreme_number, other_name, stray_token, swap_neighbours])


def _replace_token(text: str, rng: random.Random, new, starts: str = "") -> str:
    tokens = [t for t in TOKEN.finditer(text) if not starts or re.match(starts, t.group())]
    if not tokens:
        return text
    t = rng.choice(tokens)
    return text[:t.start()] + new(t.group()) + text[t.end():]


def _nodes(module) -> dict[str, list]:
    """The AST nodes of a module by class name (iteratively: deep models are fine)."""
    found: dict[str, list] = {}
    stack = [module]
    while stack:
        node = stack.pop()
        if isinstance(node, (tuple, list)):
            stack.extend(node)
        elif dataclasses.is_dataclass(node) and not isinstance(node, type):
            if hasattr(node, "span") and not hasattr(node, "text"):
                found.setdefault(type(node).__name__, []).append(node)
            stack.extend(getattr(node, f.name) for f in dataclasses.fields(node) if f.name not in ("span", "source"))
    return found


def _parsed(text: str) -> dict[str, list]:
    return _nodes(parse(SourceFile.from_text("case.dl", text)))


def _splice(text: str, node, new: str) -> str:
    return text[:node.span.start] + new + text[node.span.end:]


def _text(text: str, node) -> str:
    return text[node.span.start:node.span.end]


def _pick(rng, nodes, kind):
    items = nodes.get(kind, [])
    return rng.choice(items) if items else None


def ast_extreme_number(text, rng):
    node = _pick(rng, _parsed(text), "Number")
    return _splice(text, node, rng.choice(EXTREME_NUMBERS)) if node else text


def ast_extreme_dim(text, rng):
    node = _pick(rng, _parsed(text), "Dim")
    return _splice(text, node, rng.choice(EXTREME_DIMS)) if node else text


def ast_other_type(text, rng):
    node = _pick(rng, _parsed(text), "TensorTypeExpr")
    if node is None:
        return text
    dims = ", ".join(["B"] + [rng.choice(["1", "3", "4", "8", "28", "T"]) for _ in range(rng.randrange(0, 4))])
    return _splice(text, node, f"{rng.choice(['f32', 'f64', 'i32', 'i64', 'bool'])}[{dims}]")


def ast_layer_from_another_model(text, rng):
    node = _pick(rng, _parsed(text), "Call")
    other = rng.choice(MODELS).read_text(encoding="utf-8")
    donor = _pick(rng, _parsed(other), "Call")
    return _splice(text, node, _text(other, donor)) if node and donor else text


def ast_swap_layers(text, rng):
    calls = _parsed(text).get("Call", [])
    if len(calls) < 2:
        return text
    a, b = sorted(rng.sample(calls, 2), key=lambda c: c.span.start)
    if a.span.end > b.span.start:  # nested: replace the outer by the inner
        return _splice(text, a, _text(text, b))
    return text[:a.span.start] + _text(text, b) + text[a.span.end:b.span.start] + _text(text, a) + text[b.span.end:]


def ast_repeat_stage(text, rng):
    node = _pick(rng, _parsed(text), "Call")
    count = rng.choice(["0", "1", "3", "50", "100000000", "-1", "2.5"])
    return _splice(text, node, f"repeat({count}) {{ {_text(text, node)} }}") if node else text


def ast_deep_nesting(text, rng):
    node = _pick(rng, _parsed(text), "Name")
    depth = rng.choice([20, 99, 100, 101, 1000])
    return _splice(text, node, "relu(" * depth + _text(text, node) + ")" * depth) if node else text


def ast_statement(text, rng):
    nodes = _parsed(text)
    statements = [s for k in ("Assign", "Output", "InputDecl", "Loss", "Optimizer", "Metric", "Return") for s in nodes.get(k, [])]
    if not statements:
        return text
    stmt = rng.choice(statements)
    return _splice(text, stmt, rng.choice(["", _text(text, stmt) + "\n    " + _text(text, stmt)]))


def ast_keyword_value(text, rng):
    node = _pick(rng, _parsed(text), "Keyword")
    if node is None:
        return text
    value = rng.choice(EXTREME_NUMBERS + ['"same"', '"x"', "true", "(1, 2)", "(0, 0, 0)", "he", "B", "lr"])
    return text[:node.value.span.start] + value + text[node.value.span.end:]


AST_MUTATIONS = [ast_extreme_number, ast_extreme_dim, ast_other_type, ast_layer_from_another_model, ast_swap_layers,
                 ast_repeat_stage, ast_deep_nesting, ast_statement, ast_keyword_value]


def import_mutation(text: str, rng: random.Random, folder: Path) -> tuple[str, str]:
    choice = rng.randrange(9)
    if choice == 0:
        return 'import "case.dl"\n' + text, "imports itself"
    if choice == 1:
        (folder / "a.dl").write_text('import "b.dl"\nblock from_a(x) {\n    return x\n}\n')
        (folder / "b.dl").write_text('import "a.dl"\nimport "case.dl"\n')
        return 'import "a.dl"\n' + text, "an import cycle through the model"
    if choice == 2:
        (folder / "binary.dl").write_bytes(bytes(rng.randrange(256) for _ in range(rng.choice([10, 300, 5000]))))
        return 'import "binary.dl"\n' + text, "a binary import"
    if choice == 3:
        return f'import "{rng.choice(["/etc/passwd", "/proc/self/environ", "/dev/zero", "C:/x.dl"])}"\n' + text, \
            "an absolute import"
    if choice == 4:
        return 'import "' + "../" * rng.randrange(1, 12) + 'etc/passwd"\n' + text, "a `..` import"
    if choice == 5:
        return 'import "blocks"\n' + text, "a folder"
    if choice == 6:
        with open(folder / "big.dl", "wb") as f:
            f.truncate(2 << 20)
        return 'import "big.dl"\n' + text, "a file over the size limit"
    if choice == 7:
        return 'import "' + "d/" * rng.choice([100, 3000]) + 'x.dl"\n' + text, "a long path"
    (folder / "lines.dl").write_text("block b(x) {\n    return x \x1b[31m" + "+ x " * 20000 + "\n}\n")
    return 'import "lines.dl"\n' + text, "an import with a long line and an escape sequence"


# ---- generated models ----------------------------------------------------------------------------
PIPEABLE = [name for name, b in load_all().items()
            if b.category in ("activation", "function", "layer")
            and next(iter(b.signature.parameters.values())).annotation == "Tensor"
            and not any(p.annotation in ("Tensor", "Value") and p.default is p.empty
                        for p in list(b.signature.parameters.values())[1:])
            and name not in ("log", "sqrt", "exp")]  # NaN for negative values, inf for large ones: the model's doing
TRIES = 12


def _compiles(folder: Path, declared: str, stages: list[str]) -> bool:
    path = folder / "trial.dl"
    path.write_text(f"model trial {{\n{declared}\n    target y: f32[B, 1]\n"
                    f"    output h = x |> {' |> '.join(stages)} |> flatten |> dense(1)\n    loss mse(h, y)\n"
                    "    optimizer sgd(lr = 0.1)\n}\n")
    try:
        compile_file(path)
    except DslcError:
        return False
    return True


def _argument(p, rng: random.Random, rank: int) -> str | None:
    kind = p.annotation
    if kind == "int":
        if p.name in ("axes", "axis", "perm", "dims"):
            return str(rng.choice([-1] + list(range(1, max(rank, 2)))))
        return str(rng.choice([1, 2, 3, 4, 8, 8, 16]))
    if kind in ("Size", "Padding", "Stride"):
        return rng.choice(["1", "2", "3", "(1, 2)", "0"] + (['"same"'] if kind == "Padding" else []))
    if kind == "float":
        return rng.choice(["0.0", "0.1", "0.5", "1e-5", "0.9"])
    if kind == "bool":
        return rng.choice(["true", "false"])
    if kind == "str":
        return {"activation": '"relu"', "dtype": '"f32"'}.get(p.name)
    if kind == "Init":
        return rng.choice(["he", "glorot", "normal(std = 0.1)", "uniform(low = -0.1, high = 0.1)", "zeros"])
    return None


def _stage(name: str, rng: random.Random, rank: int) -> str:
    args = []
    for p in list(load_all()[name].signature.parameters.values())[1:]:
        if p.kind is p.VAR_POSITIONAL:
            if p.annotation == "int":  # axes, dims: some of them
                args += [_argument(p, rng, rank) for _ in range(rng.randrange(1, 3))]
            continue
        required = p.default is p.empty
        if p.name == "name" or not (required or rng.random() < 0.3):
            continue
        value = _argument(p, rng, rank)
        if value is None:
            continue
        args.append(value if required and p.kind is p.POSITIONAL_OR_KEYWORD else f"{p.name} = {value}")
    return f"{name}({', '.join(args)})" if args else name


def generated_model(rng: random.Random, folder: Path) -> str:
    """A model whose stages are drawn from the registry; each stage is kept only if the chain so far
    still compiles (up to `TRIES` draws, a check of ~15 ms), so that most generated models are valid."""
    rank = rng.choice([2, 2, 3, 4])
    dims = {2: [rng.choice([1, 3, 8])], 3: [rng.choice([1, 4, 6]), rng.choice([2, 3, 5])],
            4: [rng.choice([1, 3]), rng.choice([4, 8, 9]), rng.choice([4, 8])]}[rank]
    declared = f"    input x: f32[B, {', '.join(map(str, dims))}]"
    stages: list[str] = []
    for _ in range(rng.randrange(1, 6)):
        for _ in range(TRIES):
            stage = _stage(rng.choice(PIPEABLE), rng, rank)
            if _compiles(folder, declared, stages + [stage]):
                stages.append(stage)
                break
    stages = stages or ["relu"]
    units = rng.choice([1, 2, 5])
    classes = rng.random() < 0.4
    optimizer = rng.choice(list(OPTIMIZERS))
    extra = rng.choice(["", ", momentum = 0.9", ", weight_decay = 0.01"]) if optimizer in ("sgd", "rmsprop") else ""
    penalty = rng.choice(["", " + 0.001 * l2(weights)", " + 0.01 * l1(params)"])
    target = f"i64[B]" if classes else f"f32[B, {units}]"
    loss = "cross_entropy" if classes else rng.choice(["mse", "binary_cross_entropy"])
    return "\n".join([
        "model generated {",
        declared,
        f"    target y: {target}",
        f"    h = x |> {' |> '.join(stages)}",
        f"    output p = h |> flatten |> dense({max(units, 2) if classes else units})",
        f"    loss {loss}(p, y){penalty}",
        f"    optimizer {optimizer}(lr = {rng.choice(['0.01', '0.001', '0.1'])}{extra})",
        "}", ""])


# ---- running a case ------------------------------------------------------------------------------
class CaseTimeout(Exception):
    pass


def check_case(case: Case) -> str:
    """Run the case; returns "compiled", "ran" (compiled and took a training step) or "diagnostic".
    Raises `AssertionError` (or the compiler's own exception: an internal error) otherwise."""
    def expired(signum, frame):
        raise CaseTimeout(f"case {case.seed} ran over {HARD_STOP:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, HARD_STOP)
    started = time.monotonic()
    size = 0
    try:
        try:
            program = compile_file(case.model)
        except DslcError as e:
            assert e.diagnostics, "a DslcError without diagnostics"
            render_all(e.diagnostics)  # what the command prints: must not fail either
            return "diagnostic"
        size = sum(len(data) for data in program.graphs.values())
        if size > MAX_RUN_BYTES:
            return "compiled"
        for key, data in program.graphs.items():
            onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
        return "ran" if one_training_step(program) is not None else "compiled"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        bound = TIME_BOUND + SECONDS_PER_GB * size / 1e9
        elapsed = time.monotonic() - started
        assert elapsed < bound, f"case {case.seed} took {elapsed:.0f} s, more than {bound:.0f} s ({size / 1e6:.0f} MB of graphs)"


def one_training_step(program, lr: float = 1e-3) -> dict[str, np.ndarray] | None:
    """One ONNX Runtime step of every training graph of `program` on random data (batch 2, other symbols
    3), fed a small learning rate (a mutated `lr = 1e30` is the model's choice, not a compiler bug);
    asserts that every float output is finite and returns the outputs of the last graph. None when the
    model has no training graph or inputs too large to feed (`MAX_FED_ELEMENTS`).

    The one place that feeds a training graph here: when initial values move out of the graphs
    (a `<model>.init.onnx`), this is what changes."""
    from helpers import TrainDriver

    keys = [k for k in program.manifest["graphs"] if k.split(".")[0] == "train"]
    if not keys:
        return None
    rng = np.random.default_rng(0)
    outputs = None
    for key in keys:
        spec = program.manifest["graphs"][key]
        sizes = {}
        shapes = {i["name"]: [sizes.setdefault(d, 2 if d == "B" else 3) if isinstance(d, str) else d for d in i["shape"]]
                  for i in spec["inputs"]}
        if sum(int(np.prod(s)) for s in shapes.values()) > MAX_FED_ELEMENTS:
            return None
        data = {i["name"]: _random_input(i, shapes[i["name"]], rng) for i in spec["inputs"]}
        driver = TrainDriver(program, graph=key)
        hyper = {h["name"]: lr for h in spec["hyper"] if h.get("kind") == "lr"}
        outputs = driver.step(data, **hyper)
        bad = [name for name, value in outputs.items() if value.dtype.kind == "f" and not np.isfinite(value).all()]
        assert not bad or _overflows_in_torch(program, key, data), \
            f"`{key}` output `{bad[0]}` is not finite after one step (PyTorch's twin stays finite)"
    return outputs


def _overflows_in_torch(program, key: str, data: dict) -> bool:
    """Whether the model overflows by itself (a mutated `leaky_relu(3.4e38)`, say): the PyTorch twin of
    the step (`dslc.twin`: forward, autograd, `torch.optim`) gets a non-finite loss, gradient, parameter
    or optimizer state on the same data too."""
    import torch

    from dslc.twin import TorchTwin

    lowered = program.extras["lowered"]
    twin = TorchTwin(torch, lowered[key], lowered["infer"], lowered[key].notes["optimizer"])
    loss = twin.loss(data)["loss"]
    loss.backward()
    tensors = [loss] + [p.grad for p in twin.params.values() if p.grad is not None]
    twin.optimizer.step()
    tensors += list(twin.params.values()) + [v for state in twin.optimizer.state.values() for v in state.values()
                                             if torch.is_tensor(v) and v.is_floating_point()]
    return not all(bool(torch.isfinite(t).all()) for t in tensors)


def _random_input(spec: dict, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(spec["dtype"])
    if dtype.kind == "f":
        return rng.uniform(0, 1, shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if "classes" in spec:
        return rng.integers(0, spec["classes"], shape).astype(dtype)
    if "range" in spec:
        low, high = spec["range"]
        return rng.integers(int(low), int(high) + 1, shape).astype(dtype)
    return np.zeros(shape, dtype)
