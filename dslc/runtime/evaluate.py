"""Loss and metrics of trained weights on labelled data, through the evaluation graphs (no dropout,
no update): `dslc evaluate` and `program.evaluate`. Values are epoch values as the training loop's
validation computes them (`dslc/runtime/metrics.py`)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dslc.diagnostics import DataError
from dslc.runtime.layout import eval_key, objective_of, train_keys


def over_batches(evaluator, params: Mapping, arrays: Mapping[str, np.ndarray], batch_size: int) -> dict:
    """The evaluator's loss and metrics over `arrays` in order, in batches, as epoch values
    (`metrics.EpochMetrics`: batch means weighted by batch size, count metrics such as F1 from the summed
    confusion matrices, `confusion_matrix` outputs as nested lists)."""
    from dslc.runtime.metrics import EpochMetrics, output_specs

    n = len(next(iter(arrays.values())))
    sums = EpochMetrics(output_specs([evaluator.spec]))
    for start in range(0, n, batch_size):
        batch = {k: a[start:start + batch_size] for k, a in arrays.items()}
        sums.add(evaluator.run(batch, params), len(next(iter(batch.values()))))
    return {**sums.values(), **sums.matrices()}


def evaluate(program, data, weights=None, *, batch_size: int = 256, device: str = "cpu",
             threads: int | None = None) -> dict:
    """`{"loss": ..., "<metric>": ...}` of `weights` (a run folder, a checkpoint or a dict of arrays)
    on `data` (a labelled `.npz` path or dict of arrays); a model with several objectives gets
    `<objective>.loss`, ... for each."""
    import onnxruntime as ort

    from dslc.runtime.state_files import load_params
    from dslc.runtime.data import check_count, load_data, num_rows
    from dslc.runtime.devices import parse_device
    from dslc.runtime.session import Evaluator
    from dslc.spelling import option

    keys = train_keys(program.manifest)
    if not keys:
        raise DataError(f"model `{program.name}` has no loss, so there is nothing to evaluate",
                        hint="add a `loss` (and `metric`s) to the model")
    if weights is None:
        raise DataError(f"evaluating model `{program.name}` needs the weights of a training run",
                        hint=f"pass {option('weights')} or a checkpoint.npz")
    batch_size = check_count(batch_size, "batch_size", "the batch size")
    values = load_params(weights, program.manifest, program.defines)
    kind, device_id = parse_device(device)
    results: dict[str, float] = {}
    for key in keys:
        spec = program.manifest["graphs"][eval_key(key)]
        arrays = load_data(data, spec["inputs"], "evaluation data")
        if num_rows(arrays) == 0:
            raise DataError("the evaluation data has no samples")
        evaluator = Evaluator(program.graphs[eval_key(key)], spec, device, threads)
        params = {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(values[name]), kind, device_id)
                  for name in evaluator.param_names}
        prefix = f"{objective_of(key)}." if len(keys) > 1 else ""
        results.update({prefix + k: v for k, v in over_batches(evaluator, params, arrays, batch_size).items()})
    return results
