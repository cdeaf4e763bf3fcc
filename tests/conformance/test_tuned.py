"""`--tune` writes only portable graphs: LeNet built with the formulations the fixed rule does not pick
for it (im2col columns for both filter gradients, where the rule writes row bands and the swapped Conv)
runs on every runtime of the suite like the rule's build. The choice is injected, so the cell does not
depend on this machine's timings; with columns, whose kernels are constants, the symbolic-batch cells
that fail on the rule's build (tract, OpenVINO: an activation as a Conv kernel) pass. Not run on
`onnx.reference` (6.5 s for this model): the suite runs it on columns already (cnn_digits, autoencoder,
batchnorm are built with them by the rule)."""
from __future__ import annotations

from pathlib import Path

import pytest

from data import BATCH, RUN_SEED
from runtimes import RUNTIMES
from test_conformance import ROOT, compare

LENET = ROOT / "models" / "lenet.dl"


def columns_everywhere(models, threads):
    """Columns fastest alone, and the training step fastest with them."""
    from dslc.bench_timing import Timing

    return {name: Timing(*[2.0 if name in ("rule", "swapped", "bands") else 1.0] * 3, blocks=5) for name in models}


@pytest.fixture(scope="module")
def tuned_build(tmp_path_factory, monkeypatch_module):
    from dslc.compiler import compile_file
    from dslc.runtime.tune import TuneSetting

    built = {}

    def get(static: bool) -> Path:
        if static not in built:
            out = tmp_path_factory.mktemp(f"lenet.tuned.{'static' if static else 'symbolic'}")
            program = compile_file(LENET, dims={"B": BATCH} if static else None,
                                   tune=TuneSetting(threads=1, measure=columns_everywhere))
            assert [c["choice"] for c in program.manifest["tuning"]["choices"]] == ["columns", "columns"]
            program.build(out)
            built[static] = out
        return built[static]
    return get


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DSLC_NO_CACHE", "1")
        yield mp


@pytest.mark.parametrize("runtime", [name for name in RUNTIMES if name != "onnx.reference"])
def test_tuned_lenet(runtime, tuned_build, model_batches, reference, tmp_path):
    r = RUNTIMES[runtime]
    result = r.run(tuned_build(r.static), model_batches(LENET), RUN_SEED, tmp_path)
    compare("lenet", result, reference(LENET))
