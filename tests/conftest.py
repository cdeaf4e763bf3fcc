"""Shared test options: `pytest --bless` rewrites golden files instead of comparing with them."""
import functools
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `from golden import assert_golden`

from golden import assert_golden  # noqa: E402

# Tests compile every time (and subprocesses inherit it): no test sees another's cached program, and none
# writes to the user's cache folder. tests/test_compile_cache.py turns the cache on in a temporary folder.
os.environ["DSLC_NO_CACHE"] = "1"


def pytest_addoption(parser):
    parser.addoption("--bless", action="store_true", default=False,
                     help="rewrite golden files (tests/diagnostics/*.stderr, ...) with the current output")
    parser.addoption("--fault-kills", type=int, default=0, metavar="N",
                     help="also SIGKILL `dslc train` at N random moments, resuming each (tests/test_fault_injection.py)")
    parser.addoption("--conformance", choices=["quick", "full"], default="quick",
                     help="tests/conformance: 20 training steps per model and runtime (quick) or 100 (full)")
    parser.addoption("--conformance-table", metavar="README.md",
                     help="write the runtime x model matrix of tests/conformance between its markers in this file")
    parser.addoption("--fuzz", type=int, default=0, metavar="N",
                     help="also run N fuzz cases after the fixed corpus of tests/test_fuzz.py (seeds from --fuzz-seed)")
    parser.addoption("--fuzz-seed", type=int, default=1000, metavar="S",
                     help="first seed of the --fuzz cases (default 1000)")


@pytest.fixture
def bless(request) -> bool:
    return request.config.getoption("--bless")


@pytest.fixture
def golden(bless):
    """`golden(path, actual)`: `assert_golden` with the `--bless` setting filled in."""
    return functools.partial(assert_golden, bless=bless)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, request):
    """A directory shared by one test module's tests for the `.dl` files they compile."""
    return tmp_path_factory.mktemp(request.module.__name__.removeprefix("test_"))


@pytest.fixture
def linreg_cli(monkeypatch, tmp_path):
    """Run `dslc` in `tmp_path` on `linreg.dl`, compiled to the hand-built linear regression of
    tests/manifest_graphs.py (any flags reach it; none change it)."""
    import types

    from manifest_graphs import linreg_program

    fake = types.ModuleType("dslc.compiler")
    fake.compile_file = lambda path, defines=None, dtype="float32", **kw: linreg_program(dtype)
    monkeypatch.setitem(sys.modules, "dslc.compiler", fake)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "linreg.dl").write_text("# compiled by the fake compiler\n")
    return tmp_path
