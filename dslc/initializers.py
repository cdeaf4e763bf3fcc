"""Parameter initializers. Values are drawn at build time from a generator seeded by the build
seed and the parameter's name, so a parameter's initial value does not depend on what else the
model contains."""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Initializer:
    kind: str
    args: dict = field(default_factory=dict)

    def sample(self, shape: tuple[int, ...], fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
        return INITIALIZERS[self.kind][1](shape, fan_in, fan_out, rng, **self.args)

    def recurrent(self, units: int) -> "Initializer":
        """This initializer for the weights and biases of a recurrent layer of `units`: PyTorch draws all of
        them from U(±1/√units), whatever their fans."""
        return Initializer("torch", {"fan": units}) if self.kind == "torch" else self

    def __str__(self) -> str:
        return self.kind + (f"({', '.join(f'{k} = {v}' for k, v in self.args.items())})" if self.args else "")


def rng_for(seed: int, param_name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(param_name.encode())])


def _glorot_uniform(shape, fan_in, fan_out, rng):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape)


def _glorot_normal(shape, fan_in, fan_out, rng):
    return rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), shape)


def _he_normal(shape, fan_in, fan_out, rng):
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)


def _he_uniform(shape, fan_in, fan_out, rng):
    limit = np.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, shape)


def _torch(shape, fan_in, fan_out, rng, fan=None):
    # nn.Linear/ConvNd: kaiming_uniform(a=√5) is U(±√(6/((1 + 5)·fan_in))) = U(±1/√fan_in), and the bias
    # U(±1/√fan_in) with the weight's fan_in; nn.RNN/GRU/LSTM: every tensor U(±1/√hidden_size) (`fan`)
    bound = 1.0 / np.sqrt(fan or fan_in)
    return rng.uniform(-bound, bound, shape)


def _lecun_normal(shape, fan_in, fan_out, rng):
    return rng.normal(0.0, np.sqrt(1.0 / fan_in), shape)


def _lecun_uniform(shape, fan_in, fan_out, rng):
    limit = np.sqrt(3.0 / fan_in)
    return rng.uniform(-limit, limit, shape)


def _normal(shape, fan_in, fan_out, rng, std=0.05, mean=0.0):
    return rng.normal(mean, std, shape)


def _uniform(shape, fan_in, fan_out, rng, low=-0.05, high=0.05):
    return rng.uniform(low, high, shape)


def _constant(shape, fan_in, fan_out, rng, value=0.0):
    return np.full(shape, value)


def argument_problem(kind: str, args: dict[str, float], dtype: str) -> tuple[str, str, str] | None:
    """The first argument of initializer `kind` that cannot give finite weights of the float `dtype`
    (`float32`, `float64`): (its name, the message, a hint); None when all can."""
    largest = float(np.finfo(dtype).max)
    for key, value in args.items():
        if not abs(value) <= largest:
            return key, f"`{kind}` argument `{key} = {value:g}` is beyond the range of `{dtype}`", \
                f"`{dtype}` holds magnitudes up to {largest:.3g}"
    if kind == "normal":
        if args.get("std", 0.05) < 0:
            return "std", f"`normal` needs `std` >= 0, got {args['std']:g}", "`std` is the standard deviation"
        if abs(args.get("mean", 0.0)) + NORMAL_REACH * args.get("std", 0.05) > largest:
            return "std", f"`normal(std = {args.get('std', 0.05):g})` draws weights beyond the range of `{dtype}`", \
                f"draws reach the mean ± {NORMAL_REACH:g} std; `{dtype}` holds magnitudes up to {largest:.3g}"
    if kind == "uniform":
        low, high = args.get("low", -0.05), args.get("high", 0.05)
        if low > high:
            return "high", f"`uniform` needs `low` <= `high`, got `low = {low:g}`, `high = {high:g}`", \
                "swap them"
        if not np.isfinite(high - low):  # numpy draws low + (high - low) * u in float64
            return "high", f"`uniform(low = {low:g}, high = {high:g})`: the width `high - low` is beyond the " \
                "range of `float64`, in which the values are drawn", "narrow the interval"
    return None


NORMAL_REACH = 10.0  # a normal draw beyond 10 std has a probability of ~1e-23

# name -> (parameters with defaults, sampler, doc)
INITIALIZERS = {
    "glorot": ({}, _glorot_uniform, "U(±√(6/(fan_in + fan_out))) — Glorot/Xavier uniform, the default for `dense`"),
    "glorot_normal": ({}, _glorot_normal, "N(0, 2/(fan_in + fan_out))"),
    "he": ({}, _he_normal, "N(0, 2/fan_in) — He/Kaiming normal, for ReLU layers"),
    "he_uniform": ({}, _he_uniform, "U(±√(6/fan_in))"),
    "lecun": ({}, _lecun_normal, "N(0, 1/fan_in) — LeCun normal, for SELU and tanh layers"),
    "lecun_uniform": ({}, _lecun_uniform, "U(±√(3/fan_in))"),
    "torch": ({}, _torch, "PyTorch's defaults: U(±1/√fan_in) for the weights and biases of `dense`/`linear` and "
              "convolutions (fan_in of the weight), U(±1/√units) for every tensor of `rnn`, `gru` and `lstm`; "
              "give it to both: `init = torch, bias_init = torch`"),
    "normal": ({"std": 0.05, "mean": 0.0}, _normal, "N(mean, std²)"),
    "uniform": ({"low": -0.05, "high": 0.05}, _uniform, "U(low, high)"),
    "zeros": ({}, lambda shape, fi, fo, rng: np.zeros(shape), "all 0 — the default for biases"),
    "ones": ({}, lambda shape, fi, fo, rng: np.ones(shape), "all 1"),
    "constant": ({"value": 0.0}, _constant, "all `value`"),
}
