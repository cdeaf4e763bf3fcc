"""Timing for `dslc bench`: jobs run in interleaved blocks, never two at once, and each summarized as its
median with the 10th and 90th percentiles of the single calls.

What makes the spread wide on a shared 2-core machine, measured on LeNet's training step (2 threads):
- Other processes. A block during which some task waited for a CPU (Linux's CPU pressure, "PSI") ran
  12-34 ms against 7.0-7.6 ms for the blocks of the same run with no waiting: the two modes of the
  spread. So a block that ran under pressure is timed again (up to `rounds` more blocks per job) and
  the blocks kept under pressure are counted in the result.
- The previous job's threads. After its last call, ONNX Runtime's pool keeps one core spinning for
  30-40 ms and PyTorch's OpenMP workers 10-30 ms at about half a core (JAX: none); a job timed in that
  tail shares its cores with them. Each block therefore starts once the process has gone idle, and
  calls are grouped in blocks: alternated call by call, the two pools kept the CPU under pressure half
  of the time by themselves (PSI 0.49 on a quiet machine) and the steps ran 1.5-2.4x slower (dslc
  3.9-4.1 -> 5.8-9.2 ms, PyTorch 4.5-5.6 -> 10-11 ms; in blocks, pressure 0.02-0.09).
- The first call after the pause wakes the sleeping pool (3-4% slower): it is run untimed.
A second mode remains that no pressure shows: phases in which the same blocks take ~2x as long for
dslc and ~1.5x for PyTorch at PSI 0.02 (a slow vCPU, see `bench_machine.contention`); interleaving the
blocks spreads such phases over all columns alike.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SETTLE_MAX_S = 0.2  # the longest wait for the process to go idle (spin tails measured: up to 40 ms)
SETTLE_WINDOW_S = 0.005
IDLE_CORES = 0.1  # the process is idle when its threads use less than this over a window
PRESSURE_LIMIT = 0.1  # a block is contended when some task waited for a CPU during more than this share of it
PRESSURE_FILE = "/proc/pressure/cpu"


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call: the median and the 10th-90th percentile spread; `contended_blocks` of the
    `blocks` timed ran while some task waited for a CPU (kept once the retries ran out)."""
    median_ms: float
    p10_ms: float
    p90_ms: float
    blocks: int = 0
    contended_blocks: int = 0

    @classmethod
    def of(cls, seconds: list[float], blocks: int = 0, contended_blocks: int = 0) -> "Timing":
        p10, median, p90 = np.percentile(np.asarray(seconds) * 1e3, [10, 50, 90])
        return cls(float(median), float(p10), float(p90), blocks, contended_blocks)

    def as_json(self) -> dict:
        return {"median_ms": self.median_ms, "p10_ms": self.p10_ms, "p90_ms": self.p90_ms, "blocks": self.blocks,
                "contended_blocks": self.contended_blocks}


def cpu_pressure_us() -> int | None:
    """Microseconds so far during which some runnable task waited for a CPU (Linux PSI); None without it."""
    try:
        with open(PRESSURE_FILE) as f:
            return int(f.readline().split("total=")[1])
    except (OSError, IndexError, ValueError):
        return None


def settle() -> None:
    """Wait until this process's threads have stopped spinning (or SETTLE_MAX_S has passed)."""
    deadline = time.perf_counter() + SETTLE_MAX_S
    while time.perf_counter() < deadline:
        cpu, wall = time.process_time(), time.perf_counter()
        time.sleep(SETTLE_WINDOW_S)
        if time.process_time() - cpu < IDLE_CORES * (time.perf_counter() - wall):
            return


def interleaved(jobs: list[tuple[str, Callable[[], object]]], per_round: int, rounds: int,
                warmup: int, retry_contended: bool = True) -> dict[str, Timing]:
    """The times of each job, every job warmed up first, then timed in `rounds` alternating blocks of
    `per_round` calls, never two at once, so that drifting machine load hits all alike. With
    `retry_contended`, a block that ran under CPU pressure is timed again, at most `rounds` times per job."""
    for _, fn in jobs:
        for _ in range(warmup):
            fn()
    timers: dict[str, list[float]] = {key: [] for key, _ in jobs}
    contended = dict.fromkeys(timers, 0)
    retries = dict.fromkeys(timers, rounds if retry_contended else 0)
    for _ in range(rounds):
        for key, fn in jobs:
            while True:
                settle()
                fn()  # wakes the pool the pause put to sleep
                before, start = cpu_pressure_us(), time.perf_counter()
                times = timed(fn, per_round)
                after = cpu_pressure_us()
                pressed = before is not None and after is not None and \
                    (after - before) * 1e-6 > PRESSURE_LIMIT * (time.perf_counter() - start)
                if not pressed or retries[key] == 0:
                    break
                retries[key] -= 1
            timers[key] += times
            contended[key] += pressed
    return {key: Timing.of(times, rounds, contended[key]) for key, times in timers.items()}


def timed(fn, n: int) -> list[float]:
    """Seconds of each of `n` calls of `fn`."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times
