"""Every model in models/ and examples/ (and the suite's own in models/: a batch-norm CNN, convolution
options, an attention classifier over padded ids, a binary text classifier) × six ONNX runtimes, each driven only by the manifest and the
`.onnx` files (protocol.py, js/driver.mjs): inference, 20 training steps (dropout, batch-norm
buffers and the GAN's two objectives included), evaluation and inference with the trained values (the
`predict` graph), compared with ONNX Runtime (Python).

Relative difference of a tensor: max|x - ref| / max|ref|, and for the final values, whose single
elements Adam's division by sqrt(v) + eps can move by a step of lr where a gradient is the size of
eps, the L2 norms ||x - ref|| / ||ref||. Bounds: inference outputs and each step's loss and metrics
1e-5; final parameters, buffers and optimizer state, and the evaluation of and inference with them,
1e-4; initial values bit-identical. Models where the runtimes' summation orders take the final values further
have their own bound below, with the measured figure. ONNX Runtime's own cell runs the static
(`--dim B=4`) build against the symbolic one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import matrix
from data import RUN_SEED
from runtimes import RUNTIMES, RuntimeUnavailable

ROOT = Path(__file__).resolve().parents[2]
# examples/bad.dl is the README's compile-error example; tests/conformance/models adds batch-norm buffers,
# grouped and strided convolutions and overlapping pools, self-attention with a key mask, and binary
# metrics of one score per example with int32 ids
MODELS = (sorted(ROOT.glob("models/*.dl")) + sorted(p for p in ROOT.glob("examples/**/*.dl") if p.name != "bad.dl")
          + sorted(Path(__file__).parent.glob("models/*.dl")))

BOUNDS = {"infer": 1e-5, "train": 1e-5, "final": 1e-4, "eval": 1e-4, "predict": 1e-4}
MODEL_BOUNDS = {
    # the GRUs' Adam steps: final values 1.0e-4 (OpenVINO), 5e-5 (onnx.reference, onnxruntime-web),
    # 4e-5 (tract) after 20 steps
    "seq2seq": {"final": 5e-4},
}

# Cells that fail, with the runtime's own error (xfail strict: they turn red when they start passing)
EXPECTED_FAILURES = {
    # the filter gradient of a convolution is a Conv whose kernel is an activation, [B, ...] with B symbolic
    **{(model, "tract, symbolic B"): "tract: Translating node \"conv_weight_grad_…/Conv\" ConvHir ToTypedTranslator: "
                                     "Expect concrete shape for kernel"
       for model in ("lenet", "autoencoder", "conv_variants")},
    **{(model, "openvino, symbolic B"): "OpenVINO CPU plugin: Unsupported operation of type: (Group)Convolution name: "
                                        "conv_weight_grad_…/Conv: Doesn't support dynamic weights shape"
       for model in ("lenet", "autoencoder", "conv_variants")},
}


def cells():
    for source in MODELS:
        for runtime in RUNTIMES:
            reason = EXPECTED_FAILURES.get((source.stem, runtime))
            marks = [pytest.mark.xfail(strict=True, reason=reason, raises=(AssertionError, RuntimeFailure))] if reason else []
            yield pytest.param(source, runtime, marks=marks, id=f"{source.stem}-{runtime}")


def relative(x: np.ndarray, ref: np.ndarray, norm=np.max) -> float:
    """norm(x - ref) / norm(ref), with norm the largest magnitude or the L2 norm."""
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    if x.shape != ref.shape:
        raise AssertionError(f"shape {x.shape}, ONNX Runtime's {ref.shape}")
    if ref.size == 0:
        return 0.0
    scale = norm(np.abs(ref))
    diff = norm(np.abs(x - ref))
    return float(diff / scale) if scale > 0 else float(diff)


def l2(x: np.ndarray) -> float:
    return float(np.sqrt(np.sum(x * x)))


def compare(model: str, result: dict, ref: dict) -> float:
    """Asserts every tensor of `result` against `ref`; returns the largest difference of the final values."""
    assert sorted(result) == sorted(ref), f"different results: {sorted(set(result) ^ set(ref))}"
    bounds = BOUNDS | MODEL_BOUNDS.get(model, {})
    failures, worst_final = [], 0.0
    for name, value in ref.items():
        kind = name.partition(".")[0]
        if kind == "init":
            ok = np.array_equal(result[name], value)
            detail = "differs"
        elif kind == "train":  # one row per step: each step's loss (or metric) on its own
            errors = [relative(a, b) for a, b in zip(result[name], value)]
            ok, detail = max(errors) <= bounds[kind], f"step {int(np.argmax(errors))}: {max(errors):.2e}"
        else:
            error = relative(result[name], value, l2 if kind == "final" else np.max)
            ok, detail = error <= bounds[kind], f"{error:.2e}"
            if kind == "final":
                worst_final = max(worst_final, error)
        if not ok:
            failures.append(f"{name}: {detail} > {bounds.get(kind, 0):g}")
    assert not failures, "\n".join(failures[:10]) + (f"\n... {len(failures) - 10} more" if len(failures) > 10 else "")
    return worst_final


class RuntimeFailure(RuntimeError):
    """The runtime raised (refused a graph or failed running it)."""


@pytest.mark.parametrize("source, runtime", list(cells()))
def test_conformance(source, runtime, build, model_batches, reference, tmp_path, request):
    r = RUNTIMES[runtime]
    try:
        try:
            result = r.run(build(source, r.static or runtime == "onnxruntime"), model_batches(source), RUN_SEED, tmp_path)
        except RuntimeUnavailable:
            raise
        except Exception as e:
            raise RuntimeFailure(f"{runtime}: {e}") from e
        worst = compare(source.stem, result, reference(source))
    except RuntimeUnavailable as e:  # not installed: a failure, expected or not
        matrix.record(request.config, source.stem, runtime, "fail", str(e))
        pytest.fail(str(e))
    except (AssertionError, RuntimeFailure) as e:
        expected = (source.stem, runtime) in EXPECTED_FAILURES
        matrix.record(request.config, source.stem, runtime, "xfail" if expected else "fail",
                      EXPECTED_FAILURES.get((source.stem, runtime), str(e).splitlines()[0]))
        raise
    matrix.record(request.config, source.stem, runtime, "pass", f"{worst:.0e}" if worst > 1e-6 else "")
