"""Fuzzing the compiler (tests/fuzzgen.py makes the cases): every case compiles or fails with
diagnostics (exit 1) — never an internal error or another exception — within `TIME_BOUND`, and every
model that compiles passes `onnx.checker`'s full check and takes one ONNX Runtime training step with
finite outputs.

The fixed corpus (`CORPUS` seeds) runs in the normal suite; `pytest tests/test_fuzz.py --fuzz=N` runs N
more, from seed `--fuzz-seed` (default 1000), and prints how many compiled, ran and failed with
diagnostics. A failing case names its seed: `make_case(seed, folder)` writes it again."""
from __future__ import annotations

import collections

import pytest

from fuzzgen import check_case, make_case

CORPUS = 48
OUTCOMES: collections.Counter = collections.Counter()


def pytest_generate_tests(metafunc):
    if "fuzz_seed" in metafunc.fixturenames:
        extra, first = metafunc.config.getoption("--fuzz"), metafunc.config.getoption("--fuzz-seed")
        seeds = list(range(CORPUS)) + list(range(first, first + extra))
        metafunc.parametrize("fuzz_seed", seeds, ids=[f"seed{s}" for s in seeds])


def test_fuzz_case(fuzz_seed, tmp_path):
    case = make_case(fuzz_seed, tmp_path)
    try:
        outcome = check_case(case)
    except Exception as e:
        OUTCOMES["failed"] += 1
        text = case.model.read_text(encoding="utf-8", errors="replace")
        raise AssertionError(f"fuzz case {case.seed} ({case.kind}: {case.what}) raised {type(e).__name__}: {e}\n"
                             f"--- {case.model.name} ---\n{text[:3000]}") from e
    OUTCOMES[outcome] += 1
    OUTCOMES[case.kind] += 1


def test_fuzz_summary(capsys):
    """Runs last in this file: the outcome counts (shown with `-s` or in the long mode's summary)."""
    with capsys.disabled():
        print(f"\nfuzz: {sum(OUTCOMES[k] for k in ('ran', 'compiled', 'diagnostic', 'failed'))} cases: "
              f"{OUTCOMES['ran']} compiled and ran a training step, {OUTCOMES['compiled']} compiled (not run), "
              f"{OUTCOMES['diagnostic']} diagnostics, {OUTCOMES['failed']} failed; by kind: "
              + ", ".join(f"{k} {OUTCOMES[k]}" for k in ('token', 'ast', 'imports', 'generated')))
