"""`dslc.bench_timing`: blocks timed under CPU pressure are timed again, and counted when kept."""
from __future__ import annotations

import itertools

import pytest

from dslc import bench_timing


def _pressure_clock(monkeypatch, pressed_blocks: set[int]):
    """A fake PSI counter: block k (counted from 0) of all jobs together ran under full pressure when k is in
    `pressed_blocks` (each block reads the counter twice: before and after)."""
    reads = itertools.count()
    total = [0]

    def fake() -> int:
        n = next(reads)
        if n % 2 == 1 and n // 2 in pressed_blocks:
            total[0] += 10 ** 9  # 1000 s of waiting: more than any block's length
        return total[0]

    monkeypatch.setattr(bench_timing, "cpu_pressure_us", fake)


def test_a_block_under_pressure_is_timed_again(monkeypatch):
    _pressure_clock(monkeypatch, pressed_blocks={0})
    calls = {"a": 0, "b": 0}
    jobs = [(key, lambda key=key: calls.__setitem__(key, calls[key] + 1)) for key in calls]
    timings = bench_timing.interleaved(jobs, per_round=3, rounds=2, warmup=1)
    # a: warmup 1, its pressed block (1 waking call + 3) redone, 2 blocks of 1 + 3; b: 1 + 2 blocks of 4
    assert calls == {"a": 1 + 4 + 2 * 4, "b": 1 + 2 * 4}
    assert timings["a"].blocks == 2 and timings["a"].contended_blocks == 0


def test_pressure_that_outlasts_the_retries_is_counted(monkeypatch):
    _pressure_clock(monkeypatch, pressed_blocks=set(range(100)))
    timings = bench_timing.interleaved([("a", lambda: None)], per_round=2, rounds=3, warmup=0)
    assert timings["a"].contended_blocks == 3 and timings["a"].as_json()["contended_blocks"] == 3


def test_without_retries_pressure_is_only_counted(monkeypatch):
    _pressure_clock(monkeypatch, pressed_blocks={0})
    calls = []
    timings = bench_timing.interleaved([("a", lambda: calls.append(1))], per_round=2, rounds=2, warmup=0,
                                       retry_contended=False)
    assert len(calls) == 2 * 3 and timings["a"].contended_blocks == 1


class Process:
    """A fake clock for `settle`: this process's threads use `cores` of CPU until wall time `busy_until`, then
    none; `time.sleep` advances the wall clock. A real spinning thread is not a test of `settle`: on a loaded
    machine it waits for a CPU for whole windows, which `settle` rightly reads as idle (it failed at load > 50)."""

    def __init__(self, busy_until: float, cores: float = 1.0):
        self.wall, self.busy_until, self.cores, self.sleeps = 0.0, busy_until, cores, 0

    def perf_counter(self) -> float:
        return self.wall

    def process_time(self) -> float:
        return self.cores * min(self.wall, self.busy_until)

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        assert self.sleeps < 10_000, "settle does not stop"
        self.wall += seconds


@pytest.mark.parametrize("busy_until, cores, returns_at", [
    (0.08, 1.0, 0.08),   # a pool's spin tail: the first whole idle window after it
    (0.08, 0.5, 0.08),   # half a core is still busy
    (0.08, 0.05, 0.0),   # under IDLE_CORES: idle from the start
    (0.0, 1.0, 0.0),     # already idle
    (9.0, 2.0, 1.0),     # never idle within SETTLE_MAX_S: it gives up
])
def test_settle_waits_for_the_process_to_go_idle(monkeypatch, busy_until, cores, returns_at):
    monkeypatch.setattr(bench_timing, "SETTLE_MAX_S", 1.0)
    process = Process(busy_until, cores)
    monkeypatch.setattr(bench_timing, "time", process)
    bench_timing.settle()
    window = bench_timing.SETTLE_WINDOW_S
    assert returns_at <= process.wall <= returns_at + 2 * window + 1e-9
