"""Reducing the learning rate when a monitored value stops improving: the model's
`callback reduce_lr_on_plateau(...)`, `--reduce-lr-on-plateau`, `reduce_lr_on_plateau=` (Keras's and
PyTorch's `ReduceLROnPlateau`), and the rates of a run that it changes (`RunRates`).

    an epoch improves   when its value beats the best so far by more than `min_delta`, an absolute amount
                        (Keras's `min_delta`; PyTorch's `threshold_mode="abs"`, not its default "rel")
    a reduction         after the epoch that makes `patience` epochs in a row without improvement (Keras's
                        `patience`: PyTorch reduces after patience + 1): the rate is multiplied by `factor`,
                        but not below `min_lr` (a rate already at or below it stays)
    after a reduction   the next `cooldown` epochs count no epoch without improvement (PyTorch's cooldown;
                        Keras's code counts the last of them)

The factor multiplies the rate fed to the training graph (its `lr` input: `--lr`, or the compiled one);
a `schedule` or `decay` then computes each step's rate from the reduced rate as it did from the base.
Each rate fed is max(base · scale, min(base, min_lr)), scale the product of the factors so far. The
callback's state (best, wait, cooldown, scale) is saved in every checkpoint (meta
`reduce_lr_on_plateau`), so a resumed run reduces where an uninterrupted one would have, and keeps its
reduced rate when resumed without the callback (as an optimizer's saved `lr` does in Keras and PyTorch).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from dslc.diagnostics import DataError
from dslc.runtime.callbacks import Monitoring, _is_amount, _is_count
from dslc.runtime.run_state import count
from dslc.schedules import changes_rate, rate_at

STATE_KEY = "reduce_lr_on_plateau"  # of the checkpoint's meta


class ReduceLROnPlateau(Monitoring):
    """Multiply the learning rate by `factor` when `monitor` has not improved by more than `min_delta`
    for `patience` epochs in a row, then count no epoch for `cooldown` epochs; never below `min_lr`.
    `monitor=None`: `val_loss` with validation data, else `loss`; `mode=None` or `"auto"`: from the name."""

    KEYS = ("monitor", "factor", "patience", "min_delta", "cooldown", "min_lr", "mode")
    NUMBERS = {"factor": float, "patience": int, "min_delta": float, "cooldown": int, "min_lr": float}
    SETTING, WHAT = "reduce_lr_on_plateau", "`reduce_lr_on_plateau`"
    EXAMPLE, SHORT = "factor=0.5,patience=2", "factor=0.5"

    def __init__(self, monitor: str | None = None, factor: float = 0.1, patience: int = 10, min_delta: float = 1e-4,
                 cooldown: int = 0, min_lr: float = 0.0, mode: str | None = None):
        if not (_is_amount(factor) and 0 < factor < 1):
            raise DataError(f"{self.WHAT}'s factor must be between 0 and 1, got {factor!r}",
                            hint="the rate is multiplied by it: 0.1 divides it by 10, 0.5 halves it")
        for key, value in (("patience", patience), ("cooldown", cooldown)):
            if not _is_count(value):
                raise DataError(f"{self.WHAT}'s {key} must be a non-negative integer, got {value!r}")
        if not _is_amount(min_lr):
            raise DataError(f"{self.WHAT}'s min_lr must be a non-negative number, got {min_lr!r}")
        self._start(monitor, mode, min_delta)
        self.factor, self.patience, self.cooldown, self.min_lr = float(factor), patience, cooldown, float(min_lr)
        self.cooldown_left = 0
        self.scale = 1.0
        self.bases: list[float] = []  # each objective's base rate, set by the run (`RunRates`)

    def resolve(self, names: Sequence[str], validated: bool) -> None:
        super().resolve(names, validated)
        self.cooldown_left, self.scale = 0, 1.0

    def on_epoch_end(self, epoch: int, logs: dict) -> bool:
        """Whether the rate was reduced after this epoch (`scale` is then the new one)."""
        value = float(logs[self.monitor])
        self.improved = self.improves(value)
        if self.improved:
            self.best, self.best_epoch, self.wait = value, epoch, 0
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
            return False
        if self.improved:
            return False
        self.wait += 1
        if self.wait < self.patience:
            return False
        self.wait, self.cooldown_left = 0, self.cooldown
        if not any(base * self.scale > self.min_lr for base in self.bases):  # every rate at its floor already
            return False
        self.scale *= self.factor
        return True

    def describe_reduction(self, epoch: int, rates: Sequence[float], names: Sequence[str]) -> str:
        now = ", ".join(f"{name} {rate:.6g}" for name, rate in zip(names, rates))
        return (f"epoch {epoch}: {self.WHAT}: `{self.monitor}` has not improved for "
                f"{count(max(self.patience, 1), 'epoch')} ({self.best_text()}); learning rate "
                f"×{self.factor:g}: {now}")

    def state(self) -> dict:
        """What a checkpoint keeps to resume it (JSON)."""
        return {"monitor": self.monitor, "mode": self.mode, "best": self.best, "best_epoch": self.best_epoch,
                "wait": self.wait, "cooldown": self.cooldown_left, "scale": self.scale, "min_lr": self.min_lr}

    def restore(self, state: Mapping) -> None:
        """Continue from a checkpoint's `state()` (the monitored value's best is kept only when the monitor and its
        direction are the ones that saved it)."""
        same = state.get("monitor", self.monitor) == self.monitor and state.get("mode", self.mode) == self.mode
        if same:
            self.best, self.best_epoch = state["best"], state["best_epoch"]
            self.wait, self.cooldown_left = state["wait"], state["cooldown"]
        self.scale = state["scale"]


def check_state(value) -> bool:
    """Whether a checkpoint's `reduce_lr_on_plateau` is a state `ReduceLROnPlateau.restore` reads."""
    if not isinstance(value, dict):
        return False
    number = lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)  # noqa: E731
    return ((value.get("best") is None or number(value.get("best")))
            and (value.get("best_epoch") is None or _is_count(value.get("best_epoch")))
            and _is_count(value.get("wait")) and _is_count(value.get("cooldown"))
            and number(value.get("scale")) and 0 <= value["scale"] <= 1
            and number(value.get("min_lr", 0.0)) and value.get("min_lr", 0.0) >= 0)


class RunRates:
    """The learning rates of a run's objectives: the base of each (`lr` given, else the compiled one), the
    rate fed to each training graph (the base times the plateau's scale), and the rate in effect at a step
    (the fed one through the optimizer's schedule or decay), which every epoch's history entry records."""

    def __init__(self, manifest: dict, keys: Sequence[str], lr: float | None, plateau: ReduceLROnPlateau | None):
        specs = [manifest["graphs"][k] for k in keys]
        hypers = [next((t for t in spec.get("hyper", []) if t.get("kind") == "lr"), None) for spec in specs]
        self.inputs = [None if h is None else h["name"] for h in hypers]
        self.bases = [float(lr) if lr is not None and h is not None else float(h["default"]) if h is not None else 0.0
                      for h in hypers]
        self.optimizers = [spec.get("optimizer") for spec in specs]
        several = len(keys) > 1
        self.names = [f"{k.partition('.')[2]}.lr" if several else "lr" for k in keys]  # their history keys
        self.given = lr is not None
        self.plateau = plateau
        self.scale, self.min_lr = 1.0, plateau.min_lr if plateau is not None else 0.0
        if plateau is not None:
            plateau.bases = self.bases

    @property
    def vary(self) -> bool:
        """Whether the rate may change during the run (shown in the progress lines then)."""
        return self.plateau is not None or self.scale != 1.0 or any(changes_rate(o) for o in self.optimizers)

    def resume(self, meta: Mapping, reporter) -> None:
        """Continue the plateau state of a checkpoint's `meta` (on every rank: each feeds its graphs)."""
        state = meta.get(STATE_KEY)
        if state is None:
            return
        if self.plateau is not None:
            self.plateau.restore(state)
            self.scale = self.plateau.scale
            return
        self.scale, self.min_lr = state["scale"], state.get("min_lr", 0.0)
        if self.scale != 1.0:
            reporter.warn(f"reduce_lr_on_plateau had reduced the learning rate ×{self.scale:.6g} when this checkpoint "
                          f"was saved; without it the run continues at the reduced rate ("
                          + ", ".join(f"{n} {r:.6g}" for n, r in zip(self.names, self.fed())) + ")")

    def fed(self) -> list[float]:
        return [max(base * self.scale, min(base, self.min_lr)) for base in self.bases]

    def feeds(self) -> list[dict[str, float]]:
        """Each objective's hyper-input of the rate; empty where the compiled default is the rate."""
        if not self.given and self.scale == 1.0:
            return [{} for _ in self.bases]
        return [{name: rate} if name is not None else {} for name, rate in zip(self.inputs, self.fed())]

    def in_effect(self, step: int) -> dict[str, float]:
        """The history entries of the rate of step `step` (the optimizer step counter before it: the
        epoch's last step is the global step count after it, less one)."""
        return {name: rate_at(optimizer, rate, step) for name, optimizer, rate, spec in
                zip(self.names, self.optimizers, self.fed(), self.inputs) if spec is not None}

    def state(self) -> dict | None:
        """The checkpoint's `reduce_lr_on_plateau` (None when there is nothing to continue)."""
        if self.plateau is not None:
            return self.plateau.state()
        if self.scale != 1.0:
            return {"best": None, "best_epoch": None, "wait": 0, "cooldown": 0, "scale": self.scale,
                    "min_lr": self.min_lr}
        return None


def run_plateau(manifest: Mapping, setting) -> ReduceLROnPlateau | None:
    """A run's plateau callback: the model's `callback reduce_lr_on_plateau(...)` (the manifest's
    `"reduce_lr_on_plateau"`), its keys replaced by a text's (`factor=0.5`) or a dict's, replaced by a
    `ReduceLROnPlateau`, dropped by `False` or `"off"`."""
    declared = manifest.get(STATE_KEY)
    return ReduceLROnPlateau.for_run(dict(declared) if declared is not None else None, setting)
