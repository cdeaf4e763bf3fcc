"""Learning-rate schedules, computed inside the training graph from the optimizer's step counter.

`optimizer adam(lr = 0.001, schedule = linear_warmup(100) then cosine(1000))`. The graph's `lr` input
stays the base rate (so `--lr` and embedders still set it); the rate of a step is a function of it and
of `opt.step` (t, the steps taken before this one), so every runtime that runs the graph gets the same
schedule. Each entry gives the rate at its own step count t (from 0), PyTorch's equivalent in brackets:

    step(every, factor = 0.1)              lr · factor^⌊t / every⌋                     [StepLR(step_size, gamma)]
    exponential(rate)                      lr · rate^t                                  [ExponentialLR(gamma)]
    cosine(total_steps, min_lr = 0)        min_lr + (lr - min_lr) · (1 + cos(π · min(t, T) / T)) / 2
                                           [CosineAnnealingLR(T_max, eta_min); past T dslc holds min_lr,
                                           PyTorch's cosine climbs back]
    linear_warmup(steps, start_factor = 0) lr · (s + (1 - s) · min(t, steps) / steps)   [LinearLR(s, 1, steps)]

`a then b` runs `a` for its length (`steps` of a warm-up, `total_steps` of a cosine), then `b` with t
counted from where `b` starts (PyTorch's SequentialLR with the lengths as milestones); only the last part
may be endless. The rate is computed in float64 and cast to the graph's float type.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from dslc.diagnostics import error, suggest

REQUIRED = object()


@dataclass(frozen=True)
class ScheduleDef:
    name: str
    settings: dict  # setting -> default (REQUIRED), in positional order
    rate: Callable  # (b, lr, t, **settings) -> the rate at step t; lr and t are float64 scalars
    length: str | None  # the setting that is the schedule's length in steps; None: endless
    doc: str


SCHEDULES: dict[str, ScheduleDef] = {}


def schedule(name: str, length: str | None = None, **settings):
    def register(fn):
        SCHEDULES[name] = ScheduleDef(name, settings, fn, length, (fn.__doc__ or "").strip())
        return fn
    return register


def _c(b, value: float):
    return b.const(value, "float64")


@schedule("step", every=REQUIRED, factor=0.1)
def _step(b, lr, t, *, every, factor):
    """lr · factor^⌊t / every⌋: the rate times `factor` every `every` steps (PyTorch's StepLR)"""
    return b.mul(lr, b.pow(_c(b, factor), b.floor(b.div(t, _c(b, every)))))


@schedule("exponential", rate=REQUIRED)
def _exponential(b, lr, t, *, rate):
    """lr · rate^t (PyTorch's ExponentialLR)"""
    return b.mul(lr, b.pow(_c(b, rate), t))


@schedule("cosine", length="total_steps", total_steps=REQUIRED, min_lr=0.0)
def _cosine(b, lr, t, *, total_steps, min_lr):
    """min_lr + (lr - min_lr)·(1 + cos(π·min(t, total_steps)/total_steps))/2: half a cosine from lr down
    to min_lr, then min_lr (PyTorch's CosineAnnealingLR up to T_max)"""
    phase = b.mul(b.clip(t, low=None, high=float(total_steps)), _c(b, math.pi / total_steps))
    half = b.mul(b.add(_c(b, 1.0), b.cos(phase)), _c(b, 0.5))
    return b.add(_c(b, min_lr), b.mul(b.sub(lr, _c(b, min_lr)), half))


@schedule("linear_warmup", length="steps", steps=REQUIRED, start_factor=0.0)
def _linear_warmup(b, lr, t, *, steps, start_factor):
    """lr · (s + (1 - s)·min(t, steps)/steps) with s = `start_factor`: a straight line from s·lr to lr
    over `steps` steps (PyTorch's LinearLR with end_factor 1)"""
    ramp = b.mul(b.clip(t, low=None, high=float(steps)), _c(b, (1.0 - start_factor) / steps))
    return b.mul(lr, b.add(_c(b, start_factor), ramp))


# settings that count steps (positive integers); the others are non-negative numbers, these in [0, 1]
_COUNTS = ("every", "total_steps", "steps")
_FRACTIONS = ("start_factor",)


@dataclass(frozen=True)
class Schedule:
    """One part of a schedule: a `SCHEDULES` entry and its settings (defaults filled in)."""
    kind: str
    settings: dict

    def as_json(self) -> dict:
        return {"kind": self.kind, **self.settings}

    @property
    def length(self) -> int | None:
        key = SCHEDULES[self.kind].length
        return None if key is None else self.settings[key]


def parse_schedule(expr, evaluate) -> tuple[Schedule, ...]:
    """The parts of `schedule = a then b ...`; `evaluate(expr)` gives the value of an argument."""
    from dslc.frontend import ast  # here: the training loop reads `rates` without loading the parser

    parts = []
    while isinstance(expr, ast.BinOp) and expr.op == "then":
        parts.append(expr.right)
        expr = expr.left
    parts.append(expr)
    schedules = [_parse_one(part, evaluate) for part in reversed(parts)]
    calls = list(reversed(parts))
    for part, call in zip(schedules[:-1], calls[:-1]):
        if part.length is None:
            raise error(f"`{part.kind}` never ends, so nothing can come after it", call.span,
                        hint="put it last, or use a schedule with a length (`linear_warmup`, `cosine`)")
    return tuple(schedules)


def _parse_one(call, evaluate) -> Schedule:
    from dslc.frontend import ast

    if not isinstance(call, ast.Call):
        raise error("a schedule is a call such as `cosine(1000)`", call.span,
                    hint=f"schedules: {', '.join(f'`{name}`' for name in SCHEDULES)}")
    if call.func not in SCHEDULES:
        raise error(f"unknown schedule `{call.func}`", call.func_span,
                    hint=suggest(call.func, SCHEDULES) or f"schedules: {', '.join(f'`{n}`' for n in SCHEDULES)}")
    definition = SCHEDULES[call.func]
    names = list(definition.settings)
    if len(call.args) > len(names):
        raise error(f"`{call.func}` takes at most {len(names)} arguments", call.args[len(names)].span,
                    hint=f"`{call.func}({', '.join(names)})`")
    given = [(names[i], a.span, a) for i, a in enumerate(call.args)] + [(k.name, k.span, k.value) for k in call.kwargs]
    settings = {}
    for key, span, expr in given:
        if key not in definition.settings:
            raise error(f"`{call.func}` has no setting `{key}`", span,
                        hint=suggest(key, names) or f"its settings: {', '.join(names)}")
        if key in settings:
            raise error(f"`{key}` is given twice", span)
        settings[key] = _check(key, evaluate(expr), expr.span)
    missing = [k for k, v in definition.settings.items() if v is REQUIRED and k not in settings]
    if missing:
        raise error(f"`{call.func}` needs `{missing[0]}`", call.span, hint=f"`{call.func}({', '.join(names)})`")
    return Schedule(call.func, {k: settings.get(k, v) for k, v in definition.settings.items()})


def _check(key: str, value, span):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise error(f"`{key}` must be a number known when the model is built", span)
    if key in _COUNTS:
        if not isinstance(value, int) or value < 1:
            raise error(f"`{key}` must be a positive whole number of steps, got {value}", span)
        return value
    if value < 0 or (key in _FRACTIONS and value > 1):
        raise error(f"`{key}` must be {'in [0, 1]' if key in _FRACTIONS else 'non-negative'}, got {value}", span)
    return float(value)


def scheduled_rate(b, schedules: tuple[Schedule, ...], lr, step, dtype: str):
    """The rate of the step counted by `step` (int64): each part from where it starts, the parts chosen
    by `Where` on t (a scalar, so no cost)."""
    lr64, t = b.cast(lr, to="float64"), b.cast(step, to="float64")
    starts, start = [], 0
    for part in schedules:
        starts.append(start)
        start += part.length or 0
    rates = [SCHEDULES[part.kind].rate(b, lr64, b.sub(t, _c(b, begin)) if begin else t, **part.settings)
             for part, begin in zip(schedules, starts)]
    rate = rates[-1]
    for part_rate, begin, part in reversed(list(zip(rates[:-1], starts[:-1], schedules[:-1]))):
        rate = b.where(b.less(t, _c(b, begin + part.length)), part_rate, rate)
    return b.cast(rate, to=dtype)


class _Rates:
    """The builder methods the rate functions call, on float64 numpy values: `rates` computes a schedule
    for many steps at once with the formulas the graph runs."""
    const = staticmethod(lambda value, dtype: np.float64(value))
    cast = staticmethod(lambda x, to: np.asarray(x, dtype=np.float64))
    add, sub, mul, div, pow = np.add, np.subtract, np.multiply, np.divide, np.power
    floor, cos, less, where = np.floor, np.cos, np.less, np.where
    clip = staticmethod(lambda x, low, high: np.clip(x, low, high))


def rates(parts: list[dict], lr: float, steps: np.ndarray) -> np.ndarray:
    """The learning rate at each of `steps` (global step counts from 0) of a schedule as the manifest
    records it (`Schedule.as_json` of each part), in float64."""
    schedules = tuple(Schedule(p["kind"], {k: v for k, v in p.items() if k != "kind"}) for p in parts)
    return scheduled_rate(_Rates, schedules, np.float64(lr), np.asarray(steps), "float64")


def rate_at(optimizer: dict | None, lr: float, step: int) -> float:
    """The rate of the step whose counter `opt.step` is `step` (the steps taken before it), for an
    optimizer as the manifest records it (its `schedule` parts, else its `decay`) fed the rate `lr`, in
    float64 (the graph rounds it to its float type)."""
    optimizer = optimizer or {}
    if optimizer.get("schedule"):
        return float(rates(optimizer["schedule"], lr, np.asarray([step]))[0])
    decay = (optimizer.get("settings") or {}).get("decay") or 0.0
    return lr / (1.0 + decay * step) if decay else lr


def changes_rate(optimizer: dict | None) -> bool:
    """Whether an optimizer's rate changes from step to step (a schedule or `decay`)."""
    optimizer = optimizer or {}
    return bool(optimizer.get("schedule") or (optimizer.get("settings") or {}).get("decay"))
