"""The columns `dslc bench --compare` times beside dslc: the PyTorch twin (dslc's own IR run by PyTorch op by
op, see `dslc/twin.py`) and the *peers* — a reference workload written by hand as a user would write it, in
PyTorch eager (`torch`), the same PyTorch step under `torch.compile` (`torch-compile`) and JAX with
`jax.jit`, optax and donated buffers (`jax`). All start from dslc's initial weights.

A peer is a Python file in a peers folder (`examples/bench/peers/` of the source tree by default), found by
the model names in its `MODELS` tuple. It defines, with the libraries passed in (torch and JAX are
benchmark-only dependencies, never imported by dslc itself):

    MODELS                                  dslc model names the file stands for
    sizes(weights, graph) -> dict           the model's sizes, read from dslc's initial weights (and from its
                                            lowered training IR where the weights cannot tell, e.g. heads)
    renaming(sizes) -> Renaming             dslc's parameters as the PyTorch module's state_dict and back
    torch_model(torch, sizes) -> nn.Module
    torch_loss(torch, model, batch)         the scalar loss of a batch of tensors (inputs and targets)
    torch_infer(torch, model, inputs)       a dict of the inference graph's outputs
    jax_loss(jax, optax, sizes, params, batch), jax_infer(jax, sizes, params, inputs)
                                            the same on `params`, a dict with dslc's names and layouts

Every column has the same face: `prepare(values)` turns numpy arrays into the library's (once, outside
the timings, as a data loader would), `step(batch)` runs one training step and returns the loss as a float
(so the step has finished), `infer(inputs)` returns numpy outputs, `weights()` the current parameters
under dslc's names and layouts.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from dslc.diagnostics import DataError

PEERS = ("torch", "torch-compile", "jax")
COLUMNS = ("twin",) + PEERS
LIBRARY = {"twin": "torch", "torch": "torch", "torch-compile": "torch", "jax": "jax"}
INSTALL_HINT = {"torch": "pip install 'dslc[dev]' (torch==2.13.0, CPU)", "jax": "pip install 'dslc[bench]' (jax, optax)"}


def parse_compare(text: str) -> tuple[str, ...]:
    """`--compare`'s value: a comma-separated list of COLUMNS, or `all`; `ValueError` otherwise."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return COLUMNS
    unknown = [name for name in names if name not in COLUMNS]
    if unknown or not names:
        raise ValueError(f"expected `all` or a comma-separated list of {', '.join(COLUMNS)}, got `{text}`")
    return tuple(name for name in COLUMNS if name in names)


class PeerError(Exception):
    """A peer cannot be built for this model (none written, an optimizer it has no equivalent for)."""


class Renaming:
    """dslc parameter names to PyTorch state_dict names, one to one: `pairs` of (dslc name, torch name,
    transposed) — dslc stores dense and recurrent matrices as [in, out], PyTorch as [out, in]."""

    def __init__(self, pairs: list[tuple[str, str, bool]]):
        self.pairs = pairs

    def to_torch(self, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {torch: np.ascontiguousarray(weights[dslc].T if transposed else weights[dslc])
                for dslc, torch, transposed in self.pairs}

    def from_torch(self, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {dslc: np.ascontiguousarray(state[torch].T if transposed else state[torch])
                for dslc, torch, transposed in self.pairs}


def default_folder() -> Path:
    """`examples/bench/peers/` of the source tree dslc runs from or, for an installed dslc (the wheel
    holds no examples), of the working directory."""
    source_tree = Path(__file__).resolve().parents[1] / "examples" / "bench" / "peers"
    return source_tree if source_tree.is_dir() else Path.cwd() / "examples" / "bench" / "peers"


def find_peer(model: str, folder: Path | None = None):
    """The peer module in `folder` whose `MODELS` names `model`; `PeerError` when there is none."""
    folder = Path(folder) if folder is not None else default_folder()
    for path in sorted(folder.glob("*.py")) if folder.is_dir() else []:
        spec = importlib.util.spec_from_file_location(f"dslc_peer_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if model in getattr(module, "MODELS", ()):
            return module
    raise PeerError(f"no hand-written peer for `{model}` in {folder}")


def import_library(column: str, flag: str | None = None):
    """The library a column needs, imported, or `DataError` naming `flag` (default `--compare <column>`)
    with the extra to install."""
    name = LIBRARY[column]
    try:
        if name == "jax":
            import jax
            import optax

            return jax, optax
        import torch

        return torch
    except ImportError:
        raise DataError(f"`{flag or '--compare ' + column}` needs {'JAX and optax' if name == 'jax' else 'PyTorch'}",
                        hint=INSTALL_HINT[name]) from None


class TwinColumn:
    """The PyTorch twin (`dslc.twin.TorchTwin`) with the face of a peer; it reads numpy arrays itself."""

    def __init__(self, twin):
        self.twin = twin

    def prepare(self, values):
        return values

    def step(self, batch) -> float:
        return self.twin.loss_and_step(batch)

    def infer(self, inputs) -> dict[str, np.ndarray]:
        return {name: value.numpy() for name, value in self.twin.infer(inputs).items()}

    def weights(self) -> dict[str, np.ndarray]:
        return {name: p.detach().numpy().copy() for name, p in self.twin.params.items()}


class TorchPeer:
    """The peer's `nn.Module` trained by `torch.optim` with `foreach=True` (one multi-tensor update instead
    of a Python loop over parameters). With `compiled`, the whole step function (zero_grad, forward,
    backward, optimizer step) and the inference function go through `torch.compile` (default mode)."""

    def __init__(self, torch, peer, sizes: dict, weights: dict[str, np.ndarray], optimizer, compiled: bool = False):
        from dslc.twin import make_optimizer

        self.T, self.peer = torch, peer
        self.renaming = peer.renaming(sizes)
        self.model = peer.torch_model(torch, sizes)
        state = {name: torch.from_numpy(value.copy()) for name, value in self.renaming.to_torch(weights).items()}
        self.model.load_state_dict(state, strict=True)  # every module parameter comes from dslc's weights
        self.optimizer = make_optimizer(torch, optimizer, list(self.model.parameters()), foreach=True)

        def step(batch):
            self.optimizer.zero_grad(set_to_none=True)
            loss = peer.torch_loss(torch, self.model, batch)
            loss.backward()
            self.optimizer.step()
            return loss.detach()

        def infer(inputs):
            with torch.no_grad():
                return peer.torch_infer(torch, self.model, inputs)

        self._step = torch.compile(step) if compiled else step
        self._infer = torch.compile(infer) if compiled else infer

    def prepare(self, values):
        return {name: self.T.from_numpy(value) for name, value in values.items()}

    def step(self, batch) -> float:
        return float(self._step(batch))

    def infer(self, inputs) -> dict[str, np.ndarray]:
        return {name: value.numpy() for name, value in self._infer(inputs).items()}

    def weights(self) -> dict[str, np.ndarray]:
        return self.renaming.from_torch({name: value.detach().numpy().copy()
                                         for name, value in self.model.state_dict().items()})


def optax_optimizer(optax, spec):
    """The optax transformation that updates as `torch.optim` (and dslc) do for a dslc `OptimizerSpec`."""
    s = spec.setting
    if s("decay"):
        raise PeerError("optax has no Keras-style `decay`; the JAX peer needs a model without it")
    weight_decay = s("weight_decay")
    if spec.kind == "adamw":
        return optax.adamw(s("lr"), b1=s("beta1"), b2=s("beta2"), eps=s("eps"), weight_decay=weight_decay)
    if spec.kind == "adam":
        update = optax.adam(s("lr"), b1=s("beta1"), b2=s("beta2"), eps=s("eps"))
    elif spec.kind == "sgd":
        update = optax.sgd(s("lr"), momentum=s("momentum") or None, nesterov=s("nesterov"))
    else:
        raise PeerError(f"the JAX peer has no optax equivalent checked for `{spec.kind}`")
    # torch.optim's (coupled) weight decay adds weight_decay·p to the gradient before the update
    return optax.chain(optax.add_decayed_weights(weight_decay), update) if weight_decay else update


class JaxPeer:
    """The peer's loss differentiated by `jax.value_and_grad` and updated by optax in one `jax.jit` step
    whose parameters and optimizer state are donated (updated in place); inference is jitted too.
    Integer inputs become int32 (JAX's default integers without x64). XLA sizes its own thread pool (all
    cores); `--threads` does not reach it."""

    def __init__(self, jax, optax, peer, sizes: dict, weights: dict[str, np.ndarray], optimizer):
        self.jax = jax
        transform = optax_optimizer(optax, optimizer)
        params = {name: jax.numpy.asarray(value) for name, value in weights.items()}
        self.state = (params, transform.init(params))

        def step(params, opt_state, batch):
            loss, grads = jax.value_and_grad(lambda p: peer.jax_loss(jax, optax, sizes, p, batch))(params)
            updates, opt_state = transform.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self._step = jax.jit(step, donate_argnums=(0, 1))
        self._infer = jax.jit(lambda params, inputs: peer.jax_infer(jax, sizes, params, inputs))

    def prepare(self, values):
        return {name: self.jax.device_put(value.astype(np.int32) if value.dtype.kind in "iu" else value)
                for name, value in values.items()}

    def step(self, batch) -> float:
        params, opt_state, loss = self._step(*self.state, batch)
        self.state = (params, opt_state)
        return float(loss)

    def infer(self, inputs) -> dict[str, np.ndarray]:
        return {name: np.asarray(value) for name, value in self._infer(self.state[0], inputs).items()}

    def weights(self) -> dict[str, np.ndarray]:
        return {name: np.array(value) for name, value in self.state[0].items()}


def make_column(column: str, program, weights: dict[str, np.ndarray], folder: Path | None = None):
    """The peer `column` (one of PEERS) of `program`, started from `weights` (dslc's initial parameters)."""
    lowered = program.extras["lowered"]["train"]
    peer = find_peer(program.name, folder)
    sizes = peer.sizes(weights, lowered)
    optimizer = lowered.notes["optimizer"]
    if optimizer.setting("clip_norm") or optimizer.setting("clip_value"):
        raise PeerError("the peers do not clip gradients; this model's optimizer does")
    dtypes = sorted({str(w.dtype) for w in weights.values()} - {"float32"})
    if dtypes:
        raise PeerError(f"the peers are written in float32; this build is {', '.join(dtypes)} (compare the twin, or "
                        f"bench without `--dtype`)")
    if column == "jax":
        jax, optax = import_library(column)
        return JaxPeer(jax, optax, peer, sizes, weights, optimizer)
    return TorchPeer(import_library(column), peer, sizes, weights, optimizer, compiled=column == "torch-compile")
