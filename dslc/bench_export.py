"""The PyTorch twin's inference exported by `torch.onnx.export` and run by ONNX Runtime: a column of
`dslc bench` (`dslc/bench.py`) that differs from dslc's inference only in the graphs."""
from __future__ import annotations

import numpy as np

EXPORT_OPSET = 17


class _TensorFeeds:
    """`torch` for a twin being traced: its `from_numpy` lets the traced input tensors through (the twin
    reads its inputs with `T.from_numpy`); everything else is torch's own."""

    def __init__(self, T):
        self._T = T

    def __getattr__(self, name):
        return getattr(self._T, name)

    def from_numpy(self, value):
        return value if isinstance(value, self._T.Tensor) else self._T.from_numpy(value)


def export_twin_inference(T, twin, spec: dict, inputs: dict[str, np.ndarray]) -> bytes:
    """The twin's inference as an ONNX model by `torch.onnx.export`: `TorchTwin.infer` wrapped in a module
    that takes the inference inputs and returns the outputs, both in manifest order; opset 17, traced on
    `inputs`, each leading symbolic axis (the batch) dynamic.

    torch 2.13's default exporter (`dynamo=True`) needs the `onnxscript` package, which is no dependency
    of dslc; the TorchScript exporter (`dynamo=False`, deprecated but shipped) needs nothing more. It
    traces the twin's ops as they run, so an op whose PyTorch code turns a traced size into a Python
    value (a shape check, a size list built from `x.shape`) fails here and the bench reports it.
    """
    import copy
    import io
    import warnings

    names = [t["name"] for t in spec["inputs"]]
    outputs = [t["name"] for t in spec["outputs"]]
    dynamic = {t["name"]: {0: t["shape"][0]} for t in spec["inputs"] + spec["outputs"]
               if t["shape"] and isinstance(t["shape"][0], str)}
    traced = copy.copy(twin)
    traced.T = _TensorFeeds(T)

    class Inference(T.nn.Module):
        def __init__(self):
            super().__init__()
            # registered, so that the tracer stores them as initializers (it refuses to make constants
            # of tensors that require grad)
            self.weights = T.nn.ParameterList(twin.params.values())

        def forward(self, *tensors):
            values = traced.infer(dict(zip(names, tensors)))
            return tuple(values[name] for name in outputs)

    model = io.BytesIO()
    # torch 2.13's TorchScript exporter turns its log on whatever `verbose` says (it tests the function
    # `_jit_is_onnx_log_enabled`, not its result) and so prints the whole traced graph to stdout when an
    # export fails; the bench reports the error's first line instead
    log, log_was_on = T._C._jit_onnx_log, T._C._jit_is_onnx_log_enabled()
    T._C._jit_onnx_log = lambda *args: None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notice and the tracer's warnings
            T.onnx.export(Inference(), tuple(T.from_numpy(inputs[name]) for name in names), model, dynamo=False,
                          opset_version=EXPORT_OPSET, input_names=names, output_names=outputs,
                          dynamic_axes=dynamic)
    finally:
        T._C._jit_onnx_log = log
        T._C._jit_set_onnx_log_enabled(log_was_on)
    return model.getvalue()


def exported_inference(T, twin, spec: dict, inputs: dict[str, np.ndarray], expected: dict[str, np.ndarray],
                        threads: int):
    """(timing job or None, output check, error or None) for the twin's inference exported to ONNX and
    run by dslc's own `Predictor` (the session settings and the per-call work of dslc's inference, so
    that only the graphs differ). Any failure to export, load or run is reported, not raised."""
    from dslc.bench import compare_outputs, error_line
    from dslc.runtime.session import Predictor

    try:
        exported = Predictor(export_twin_inference(T, twin, spec, inputs), spec, "cpu", threads)
        check = compare_outputs(exported.run(inputs), expected)
    except Exception as e:  # noqa: BLE001 - the exporter's failures are many; the bench goes on without it
        return None, {}, f"torch.onnx.export + ONNX Runtime failed: {error_line(e)}"
    if not check["passed"]:
        return None, check, (f"the exported model's outputs differ from dslc's (largest difference "
                             f"{check['max_abs_diff']:.3g}, rtol {check['rtol']:g})")
    return (lambda: exported.run(inputs)), check, None
