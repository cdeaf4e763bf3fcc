"""Fixtures of the conformance suite: each model built once per session (with symbolic dimensions,
and with them pinned for the runtimes that need static shapes), its batches, and ONNX Runtime's
results, the reference every other runtime is compared with. The options live in tests/conftest.py."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import BATCH, DATA_SEED, RUN_SEED, batches  # noqa: E402
from protocol import load_manifest  # noqa: E402
from runtimes import RUNTIMES  # noqa: E402
import matrix  # noqa: E402

STEPS = {"quick": 20, "full": 100}


@pytest.fixture(scope="session")
def conformance_steps(request) -> int:
    steps = STEPS[request.config.getoption("--conformance")]
    request.config.stash[matrix.STEPS] = steps
    return steps


@pytest.fixture(scope="session")
def build(tmp_path_factory):
    """`build(model_path, static) -> out_dir`: what `dslc build` writes (`--dim B=4` when static), once per
    model and variant."""
    from dslc.compiler import compile_file

    built = {}

    def get(source: Path, static: bool) -> Path:
        key = (source, static)
        if key not in built:
            out = tmp_path_factory.mktemp(f"{source.stem}.{'static' if static else 'symbolic'}")
            compile_file(source, dims={"B": BATCH} if static else None).build(out)
            built[key] = out
        return built[key]
    return get


@pytest.fixture(scope="session")
def model_batches(build, conformance_steps):
    cache = {}

    def get(source: Path):
        if source not in cache:
            cache[source] = batches(load_manifest(build(source, False)), conformance_steps, BATCH, DATA_SEED)
        return cache[source]
    return get


@pytest.fixture(scope="session")
def reference(build, model_batches, tmp_path_factory):
    """ONNX Runtime (Python) on the symbolic build: the results every cell is compared with."""
    cache = {}

    def get(source: Path):
        if source not in cache:
            workdir = tmp_path_factory.mktemp(f"{source.stem}.reference")
            cache[source] = RUNTIMES["onnxruntime"].run(build(source, False), model_batches(source), RUN_SEED, workdir)
        return cache[source]
    return get


def pytest_sessionfinish(session, exitstatus):
    target = session.config.getoption("--conformance-table")
    if target:
        from test_conformance import MODELS, ROOT

        labels = {m.stem: f"[{m.stem}]({m.relative_to(ROOT).as_posix()})" for m in MODELS}
        matrix.write_table(session.config, Path(target), labels, list(RUNTIMES))
