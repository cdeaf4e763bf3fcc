"""Optimizers as IR: (params, grads, state) -> (next params, next state), PyTorch's update rules.

Every optimizer takes a learning rate `lr` (a hyper-input of the training graph, so drivers can
schedule it), `weight_decay` and Keras-style learning-rate `decay`:

    t = step + 1                               # `opt.step` counts the steps taken
    lr_t = lr / (1 + decay * step)            # or the `schedule`'s rate (dslc/schedules.py)
    if clip_value: grads = [clip(g, -clip_value, clip_value) for g in grads]
    if clip_norm:                              # torch.nn.utils.clip_grad_norm_
        norm = sqrt(sum((g ** 2).sum() for g in grads))
        grads = [g * min(clip_norm / (norm + 1e-6), 1) for g in grads]
    for p, g in zip(params, grads):
        if weight_decay and kind != "adamw":  g = g + weight_decay * p
        sgd:      v = momentum * v + g;  d = g + momentum * v if nesterov else v (d = g without momentum)
                  p = p - lr_t * d
        rmsprop:  s = rho * s + (1 - rho) * g²
                  if centered: a = rho * a + (1 - rho) * g;  d = √max(s - a², 0) + eps   # else d = √s + eps
                  if momentum: u = momentum * u + g / d; p = p - lr_t * u
                  else:        p = p - lr_t * g / d
        adagrad:  s = s + g²;  p = p - lr_t * g / (√s + eps)
        adam:     m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g²
                  if amsgrad: v_max = max(v_max, v); v = v_max (in the step only)
                  p = p - lr_t / (1 - beta1^t) * m / (√(v / (1 - beta2^t)) + eps)
        adamw:    p = p * (1 - lr_t * weight_decay), then the adam step
        nadam:    mu = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay));  mu' = the same at t + 1
                  mu_product = mu_product * mu                       # `opt.mu_product`, from 1
                  m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g²
                  d = √(v / (1 - beta2^t)) + eps
                  p = p - lr_t * (1 - mu) / (1 - mu_product) * g / d - lr_t * mu' / (1 - mu_product * mu') * m / d
        lion:     p = p * (1 - lr_t * weight_decay)
                  p = p - lr_t * sign(beta1 * m + (1 - beta1) * g);  m = beta2 * m + (1 - beta2) * g
(nadam is PyTorch's NAdam; lion is Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms",
Algorithm 2, with its decoupled weight decay.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dslc.ir.graph import Builder, Node
from dslc.ir.types import TensorType, numpy_dtype
from dslc.schedules import Schedule, scheduled_rate
from dslc.source import Span

# name -> (defaults of its settings, state slots per parameter)
OPTIMIZERS: dict[str, tuple[dict[str, float | bool], tuple[str, ...]]] = {
    "sgd": ({"lr": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0, "decay": 0.0}, ("velocity",)),
    "rmsprop": ({"lr": 0.001, "rho": 0.9, "eps": 1e-7, "momentum": 0.0, "centered": False, "weight_decay": 0.0,
                 "decay": 0.0}, ("square_avg", "momentum_buffer", "grad_avg")),
    "adagrad": ({"lr": 0.01, "eps": 1e-10, "weight_decay": 0.0, "decay": 0.0}, ("sum_squares",)),
    "adam": ({"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "amsgrad": False, "weight_decay": 0.0,
              "decay": 0.0}, ("m", "v", "v_max")),
    "adamw": ({"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "amsgrad": False, "weight_decay": 0.01,
               "decay": 0.0}, ("m", "v", "v_max")),
    "nadam": ({"lr": 0.002, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "momentum_decay": 0.004, "weight_decay": 0.0,
               "decay": 0.0}, ("m", "v")),
    "lion": ({"lr": 0.0001, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.0, "decay": 0.0}, ("m",)),
}
# settings of torch.optim / Keras optimizers that dslc does not offer -> what dslc does instead (the error's hint)
NOT_OFFERED = {
    "dampening": "momentum has no dampening here (PyTorch's default, dampening = 0)",
    "initial_accumulator_value": "the accumulator starts at 0 (PyTorch's default; Keras starts it at 0.1)",
    "decoupled_weight_decay": "`adamw` decouples its weight decay; `adam` adds weight_decay·p to the gradient",
    "maximize": "the optimizer minimizes the loss: negate it to maximize",
    "nesterov": "Nesterov momentum is `sgd(momentum = 0.9, nesterov = true)`, or Adam's variant `nadam`",
    "amsgrad": "AMSGrad is `adam(amsgrad = true)` or `adamw(amsgrad = true)`",
    "centered": "the centered variant is `rmsprop(centered = true)`",
    "ema_momentum": "dslc keeps no moving average of the weights",
    "use_ema": "dslc keeps no moving average of the weights",
}
# state shared by all parameters besides `opt.step`: name -> initial value
SHARED_STATE = {"nadam": {"mu_product": 1.0}}
DECOUPLED_WEIGHT_DECAY = ("adamw", "lion")  # p · (1 - lr·weight_decay); the others add weight_decay·p to g
STEP = "step"
# settings every optimizer has: gradient clipping by value and by global norm (0: off)
CLIPPING = {"clip_norm": 0.0, "clip_value": 0.0}
for _defaults, _slots in OPTIMIZERS.values():
    _defaults.update(CLIPPING)


@dataclass(frozen=True)
class OptimizerSpec:
    kind: str
    settings: dict = field(default_factory=dict)
    span: Span | None = None
    schedule: tuple[Schedule, ...] = ()

    def setting(self, key):
        return self.settings.get(key, OPTIMIZERS[self.kind][0][key])

    def slots(self) -> tuple[str, ...]:
        """The state slots of each parameter: those of `OPTIMIZERS` that the settings use."""
        defaults = OPTIMIZERS[self.kind][0]
        off = lambda key: not self.settings.get(key, defaults.get(key))  # noqa: E731
        unused = {"velocity": off("momentum"), "momentum_buffer": off("momentum"), "grad_avg": off("centered"),
                  "v_max": off("amsgrad")}
        return tuple(slot for slot in OPTIMIZERS[self.kind][1] if not unused.get(slot, False))


def state_name(prefix: str, param: str, slot: str) -> str:
    """`opt.<param>.<slot>`, or `opt.<objective>.<param>.<slot>` in a model with named objectives."""
    return f"opt.{prefix}{param}.{slot}"


def state_inputs(b: Builder, spec: OptimizerSpec, params: list[Node], prefix: str = "") -> list[Node]:
    """The state tensors, zero-initialized: the step counter `opt.step` (`opt.<objective>.step`), then
    each parameter's slots."""
    states = [b.input(f"opt.{prefix}{STEP}", TensorType("int64", ()), "state", default=np.array(0, dtype=np.int64),
                      slot=STEP)]
    dtype = params[0].type.dtype if params else "float32"
    for slot, initial in SHARED_STATE.get(spec.kind, {}).items():
        states.append(b.input(f"opt.{prefix}{slot}", TensorType(dtype, ()), "state",
                              default=np.array(initial, dtype=numpy_dtype(dtype)), slot=slot))
    for p in params:
        for slot in spec.slots():
            zeros = np.zeros(p.type.shape, dtype=numpy_dtype(p.type.dtype))
            states.append(b.input(state_name(prefix, p.name, slot), p.type, "state", default=zeros, slot=slot,
                                  param=p.name))
    return states


def clipped(b: Builder, spec: OptimizerSpec, grads: list[Node]) -> list[Node]:
    """The gradients clipped element-wise to ±clip_value, or scaled by min(1, clip_norm / (‖g‖ + 1e-6))
    with ‖g‖ the norm of all of them together (PyTorch's `clip_grad_value_` / `clip_grad_norm_`)."""
    clip_value, clip_norm = spec.setting("clip_value"), spec.setting("clip_norm")
    if clip_value:
        return [b.clip(g, low=-float(clip_value), high=float(clip_value)) for g in grads]
    if not clip_norm:
        return grads
    total = b.reduce_sum(b.mul(grads[0], grads[0]), axes=None)
    for g in grads[1:]:
        total = b.add(total, b.reduce_sum(b.mul(g, g), axes=None))
    c = lambda v: b.scalar_like(v, total)  # noqa: E731
    scale = b.clip(b.div(c(clip_norm), b.add(b.sqrt(total), c(1e-6))), low=None, high=1.0)
    return [b.mul(g, scale) for g in grads]


def _nadam_factors(b: Builder, spec: OptimizerSpec, step: Node, mu_product: Node, lr_t: Node, next_state: dict):
    """NAdam's step as p - (a·g + c·m') / (√v' + ε̂): a = lr_t·(1-μ)/(1-Πμ)·√bc2, c = lr_t·μ'/(1-Πμ·μ')·√bc2,
    ε̂ = ε·√bc2 with bc2 = 1 - β2^t (the scalars in float64); sets the next `mu_product`."""
    dtype = lr_t.type.dtype
    c64 = lambda v: b.const(v, "float64")  # noqa: E731
    beta1, beta2, psi = spec.setting("beta1"), spec.setting("beta2"), spec.setting("momentum_decay")
    t = b.add(b.cast(step, to="float64"), c64(1.0))
    mu = b.mul(c64(beta1), b.sub(c64(1.0), b.mul(c64(0.5), b.pow(c64(0.96), b.mul(t, c64(psi))))))
    mu_next = b.mul(c64(beta1), b.sub(c64(1.0), b.mul(c64(0.5), b.pow(c64(0.96), b.mul(b.add(t, c64(1.0)), c64(psi))))))
    product = b.mul(b.cast(mu_product, to="float64"), mu)
    next_state[mu_product.name] = b.cast(product, to=dtype)
    root_bc2 = b.sqrt(b.sub(c64(1.0), b.pow(c64(beta2), t)))
    lr64 = b.cast(lr_t, to="float64")
    a = b.div(b.mul(b.mul(lr64, b.sub(c64(1.0), mu)), root_bc2), b.sub(c64(1.0), product))
    c = b.div(b.mul(b.mul(lr64, mu_next), root_bc2), b.sub(c64(1.0), b.mul(product, mu_next)))
    eps_hat = b.mul(c64(spec.setting("eps")), root_bc2)
    return b.cast(a, to=dtype), b.cast(c, to=dtype), b.cast(eps_hat, to=dtype)


def apply_updates(b: Builder, spec: OptimizerSpec, params: list[Node], grads: list[Node], lr: Node,
                  states: list[Node]) -> tuple[list[Node], list[Node]]:
    """Next values of `params` and of `states` (same order as `state_inputs`)."""
    step = next(s for s in states if s.attrs["slot"] == STEP)
    shared = {s.attrs["slot"]: s for s in states if s.attrs.get("param") is None}
    slots = {(s.attrs["param"], s.attrs["slot"]): s for s in states if s.attrs.get("param") is not None}
    dtype = lr.type.dtype
    c = lambda v: b.const(v, dtype)  # noqa: E731
    step_f = b.cast(step, to=dtype)
    decay = spec.setting("decay")
    if spec.schedule:
        lr_t = scheduled_rate(b, spec.schedule, lr, step, dtype)
    else:
        lr_t = b.div(lr, b.add(c(1.0), b.mul(c(decay), step_f))) if decay else lr
    grads = clipped(b, spec, grads)
    wd = spec.setting("weight_decay")
    kind = spec.kind

    if kind == "sgd" and spec.setting("momentum") and spec.setting("nesterov"):
        lr_nesterov_new = b.mul(lr_t, c(1.0 + spec.setting("momentum")))
        lr_nesterov_old = b.mul(lr_t, c(spec.setting("momentum")))
    if kind in ("adam", "adamw"):
        beta1, beta2, eps = spec.setting("beta1"), spec.setting("beta2"), spec.setting("eps")
        # lr_t/(1-β1^t) · m / (√(v/(1-β2^t)) + ε) = α · m / (√v + ε̂) with α = lr_t·√(1-β2^t)/(1-β1^t), ε̂ = ε·√(1-β2^t).
        # The corrections are computed in float64: in float32, 1 - 0.999^t is off by ~1.3e-5 relative
        # (0.999 is not a float32), which would scale every early Adam step by ~1 + 6e-6.
        c64 = lambda v: b.const(v, "float64")  # noqa: E731
        t64 = b.add(b.cast(step, to="float64"), c64(1.0))
        root_bc2 = b.sqrt(b.sub(c64(1.0), b.pow(c64(beta2), t64)))
        alpha = b.mul(lr_t, b.cast(b.div(root_bc2, b.sub(c64(1.0), b.pow(c64(beta1), t64))), to=dtype))
        eps_hat = b.cast(b.mul(c64(eps), root_bc2), to=dtype)
    decay_factor = b.sub(c(1.0), b.mul(lr_t, c(wd))) if kind in DECOUPLED_WEIGHT_DECAY and wd else None
    next_state = {step.name: b.add(step, b.const(1, "int64"))}
    if kind == "nadam":
        nadam_g, nadam_m, eps_hat = _nadam_factors(b, spec, step, shared["mu_product"], lr_t, next_state)
    if kind == "lion":
        beta1, beta2 = spec.setting("beta1"), spec.setting("beta2")

    next_params = []
    for p, g in zip(params, grads):
        with b.at(p.span):
            if wd and kind not in DECOUPLED_WEIGHT_DECAY:
                g = b.add(g, b.mul(c(wd), p))
            slot = lambda name: slots[(p.name, name)]  # noqa: E731
            if kind == "sgd":
                mu = spec.setting("momentum")
                if mu and spec.setting("nesterov"):
                    # p - lr·(g + μ·v') = p - lr·(1+μ)·v' + lr·μ·v: g is used once, so the `fuse` pass
                    # can compute v' = μ·v + g inside the gradient's Gemm
                    v = b.add(b.mul(c(mu), slot("velocity")), g)
                    next_state[slot("velocity").name] = v
                    new_p = b.add(b.sub(p, b.mul(lr_nesterov_new, v)), b.mul(lr_nesterov_old, slot("velocity")))
                elif mu:
                    v = b.add(b.mul(c(mu), slot("velocity")), g)
                    next_state[slot("velocity").name] = v
                    new_p = b.sub(p, b.mul(lr_t, v))
                else:
                    new_p = b.sub(p, b.mul(lr_t, g))
            elif kind == "rmsprop":
                rho, mu, eps = spec.setting("rho"), spec.setting("momentum"), spec.setting("eps")
                s = b.add(b.mul(c(rho), slot("square_avg")), b.mul(c(1.0 - rho), b.mul(g, g)))
                next_state[slot("square_avg").name] = s
                if spec.setting("centered"):
                    a = b.add(b.mul(c(rho), slot("grad_avg")), b.mul(c(1.0 - rho), g))
                    next_state[slot("grad_avg").name] = a
                    # the variance estimate s - a²: rounding makes it negative (a NaN root) once a constant
                    # gradient has filled both averages (float32, after ~135 steps at rho 0.9)
                    s = b.clip(b.sub(s, b.mul(a, a)), low=0.0, high=None)
                scaled = b.div(g, b.add(b.sqrt(s), c(eps)))
                if mu:
                    u = b.add(b.mul(c(mu), slot("momentum_buffer")), scaled)
                    next_state[slot("momentum_buffer").name] = u
                    scaled = u
                new_p = b.sub(p, b.mul(lr_t, scaled))
            elif kind == "adagrad":
                s = b.add(slot("sum_squares"), b.mul(g, g))
                next_state[slot("sum_squares").name] = s
                new_p = b.sub(p, b.mul(lr_t, b.div(g, b.add(b.sqrt(s), c(spec.setting("eps"))))))
            elif kind == "lion":
                m = slot("m")
                direction = b.sign(b.add(b.mul(c(beta1), m), b.mul(c(1.0 - beta1), g)))
                next_state[m.name] = b.add(b.mul(c(beta2), m), b.mul(c(1.0 - beta2), g))
                base = b.mul(p, decay_factor) if decay_factor is not None else p
                new_p = b.sub(base, b.mul(lr_t, direction))
            elif kind == "nadam":
                beta1, beta2 = spec.setting("beta1"), spec.setting("beta2")
                m = b.add(b.mul(c(beta1), slot("m")), b.mul(c(1.0 - beta1), g))
                v = b.add(b.mul(c(beta2), slot("v")), b.mul(c(1.0 - beta2), b.mul(g, g)))
                next_state[slot("m").name], next_state[slot("v").name] = m, v
                step_dir = b.add(b.mul(nadam_g, g), b.mul(nadam_m, m))
                new_p = b.sub(p, b.div(step_dir, b.add(b.sqrt(v), eps_hat)))
            else:
                # with gs = √(1-β2)·g: v' = β2·v + gs², m' = β1·m + (1-β1)/√(1-β2)·gs. One op fewer, and a
                # gradient computed by a Gemm gets the scale from `fuse` for free (as its alpha)
                gs = b.mul(c(math.sqrt(1.0 - beta2)), g)
                m = b.add(b.mul(c(beta1), slot("m")), b.mul(c((1.0 - beta1) / math.sqrt(1.0 - beta2)), gs))
                v = b.add(b.mul(c(beta2), slot("v")), b.mul(gs, gs))
                next_state[slot("m").name], next_state[slot("v").name] = m, v
                if spec.setting("amsgrad"):
                    v = b.where(b.less(slot("v_max"), v), v, slot("v_max"))
                    next_state[slot("v_max").name] = v
                base = b.mul(p, decay_factor) if decay_factor is not None else p
                new_p = b.sub(base, b.mul(alpha, b.div(m, b.add(b.sqrt(v), eps_hat))))
            next_params.append(new_p)
    return next_params, [next_state[s.name] for s in states]
