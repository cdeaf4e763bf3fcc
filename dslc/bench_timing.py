"""Timing for `dslc bench`: jobs run in interleaved blocks, never two at once, and each summarized as its
median with the 10th and 90th percentiles of the single calls."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SETTLE_S = 0.05  # between timed blocks: ONNX Runtime workers keep spinning for a while after a run


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call: the median and the 10th-90th percentile spread."""
    median_ms: float
    p10_ms: float
    p90_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> "Timing":
        p10, median, p90 = np.percentile(np.asarray(seconds) * 1e3, [10, 50, 90])
        return cls(float(median), float(p10), float(p90))

    def as_json(self) -> dict:
        return {"median_ms": self.median_ms, "p10_ms": self.p10_ms, "p90_ms": self.p90_ms}


def interleaved(jobs: list[tuple[str, Callable[[], object]]], per_round: int, rounds: int,
                warmup: int) -> dict[str, Timing]:
    """The times of each job, every job warmed up first, then timed in `rounds` alternating blocks of
    `per_round` calls, never two at once, so that drifting machine load hits all alike."""
    for _, fn in jobs:
        for _ in range(warmup):
            fn()
    timers: dict[str, list[float]] = {key: [] for key, _ in jobs}
    for _ in range(rounds):
        for key, fn in jobs:
            time.sleep(SETTLE_S)  # let the previous job's spinning worker threads go idle (FACTS: pools fight)
            timers[key] += timed(fn, per_round)
    return {key: Timing.of(times) for key, times in timers.items()}


def timed(fn, n: int) -> list[float]:
    """Seconds of each of `n` calls of `fn`."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times
