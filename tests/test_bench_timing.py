"""`dslc.bench_timing`: blocks timed under CPU pressure are timed again, and counted when kept."""
from __future__ import annotations

import itertools
import time

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


def test_settle_waits_for_a_busy_thread_to_stop(monkeypatch):
    monkeypatch.setattr(bench_timing, "SETTLE_MAX_S", 1.0)
    import threading

    stop_at = time.perf_counter() + 0.08

    def spin():
        while time.perf_counter() < stop_at:
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    bench_timing.settle()
    assert time.perf_counter() >= stop_at - bench_timing.SETTLE_WINDOW_S
    spinner.join()
