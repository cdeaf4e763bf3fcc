"""The compiler driver: `.dl` file → lowered IR → pass pipelines → ONNX graphs + manifest."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from dslc import __version__
from dslc.diagnostics import DataError, Diagnostic, DslcError, UnknownDimension, error
from dslc.emit import manifest as mf
from dslc.emit.onnx import OPSET, check, emit_graph, emit_init_graph, serialize
from dslc.frontend import ast
from dslc.frontend.modules import load_module, pick_model
from dslc.ir.graph import Graph, toposort
from dslc.ir.printer import print_graph
from dslc.lower import MAX_WEIGHT_BYTES, LoweredModel, Lowering, byte_size, name_plain_layers
from dslc.objectives import objectives
from dslc.passes import PASS_NAMES, run
from dslc.passes.lower_optimizer import NEXT_SUFFIX
from dslc.passes.split import SPLIT_PASSES
from dslc.program import Program

DTYPES = ("float32", "float64")


def compile_file(path: str | Path, defines: dict[str, str] | None = None, dtype: str = "float32", seed: int = 0,
                 print_ir_after: str | None = None, dims: dict[str, int] | None = None,
                 text: str | None = None, freeze: tuple[str, ...] = (), split: bool = False,
                 import_path=(), tune=None) -> Program:
    """Compile a `.dl` file (`text`: its contents, if not those on disk). Raises `DslcError` (the user's
    model is wrong), `OSError` (no file, or not a readable model file) or `DataError` (an `import_path`
    entry that is not a folder).

    `dims` pins symbolic dimensions to sizes in every graph (`{"B": 64}`: static shapes for runtimes
    and accelerators that need them); a name the model does not declare raises `UnknownDimension`.
    `freeze`: parameter selectors (layer names, globs such as `enc*`, `weights`...) that no training
    graph updates: they become `frozen` inputs, read but not written (fine-tuning).
    `split` also emits each training step cut at the gradients (`grad` and `apply` graphs, see
    `dslc/passes/split.py`), for gradient accumulation and data-parallel training.
    `tune` (a `dslc.runtime.tune.TuneSetting`) writes each shape-dependent choice's fastest formulation
    as measured on this machine instead of the fixed rule's (`dslc build --tune`)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}")
    if print_ir_after is not None and print_ir_after not in PASS_NAMES:
        raise ValueError(f"no pass `{print_ir_after}`; passes: {', '.join(PASS_NAMES)}")
    if print_ir_after in SPLIT_PASSES:  # they only run on the split graphs
        split = True
    for folder in import_path:
        if not os.path.isdir(folder):
            raise DataError(f"the import path `{folder}` is not a folder",
                            hint="`--import-path DIR` names a folder that imported files are looked up in")
    sources: list[tuple[str, str]] = []
    module, blocks = load_module(path, text, import_path, sources)
    model = pick_model(module)
    errors: list[Diagnostic] = []
    warnings: list[Diagnostic] = []
    symbols: set[str] = set()
    drawn: dict = {}  # the parameters' initial values, drawn once for all the graphs

    def lowered(mode: str, objective: str = "") -> LoweredModel | None:
        lowering = Lowering(model, blocks, mode, dtype, seed, defines, objective, dims, tuple(freeze), drawn)
        try:
            return lowering.run()
        except DslcError as e:  # lower the other graphs too: errors in training statements, say
            errors.extend(e.diagnostics)
            return None
        finally:
            warnings.extend(lowering.ctx.warnings)
            symbols.update(lowering.symbols)

    infer = lowered("infer")
    try:
        trained = {o.name: (lowered("train", o.name), lowered("eval", o.name), o) for o in objectives(model)}
    except DslcError as e:  # objectives that cannot be told apart
        errors.extend(e.diagnostics)
    # the graphs share statements, and so errors and warnings: each once; a failed compile reports its
    # warnings with its errors (`DslcError` sorts them by position)
    warnings = list(dict.fromkeys(warnings))
    if errors:
        raise DslcError(list(dict.fromkeys(errors)) + warnings)
    unknown = sorted(set(dims or {}) - symbols)
    if unknown:
        raise UnknownDimension(unknown, sorted(symbols))
    check_freeze(model.name, trained, freeze)
    try:
        callbacks = declared_callbacks(infer, trained)
        program = build_program(infer, trained, dtype, str(path), print_ir_after, dims, split, callbacks, tune)
    except DslcError as e:
        raise DslcError(list(e.diagnostics) + warnings) from None
    program.warnings = sorted(warnings, key=Diagnostic.sort_key)
    program.defines = dict(defines or {})
    program.extras["sources"] = sources if text is None else []  # an editor's buffer is not the file
    layers: dict = {}  # every layer's (kind, output type), inference graph's first
    for lowered_model in [infer] + [t for t, _, _ in trained.values()]:
        for layer, entry in lowered_model.layers.items():
            layers.setdefault(layer, entry)
    program.extras["layers"] = name_plain_layers(layers)
    return program


def declared_callbacks(infer: LoweredModel, trained: dict) -> dict[str, dict]:
    """The settings of the model's `callback`s for the manifest, their monitors checked against the
    loss and metrics training logs (`<objective>.loss`... with several objectives; no matrices)."""
    from dslc.declared_callbacks import check_monitor

    if infer.callbacks and not trained:
        stmt = next(iter(infer.callbacks.values()))[1]
        raise error(f"model `{infer.name}` declares a callback of training, but has no `loss`", stmt.span,
                    hint="add a `loss` and an `optimizer`, or remove the callback")
    logged = []
    for objective, (train, _, _) in trained.items():
        prefix = f"{objective}." if len(trained) > 1 else ""
        logged += [prefix + name for name in ["loss", *(m for m, _ in train.metrics)]
                   if not ("counts" in train.metric_reduce.get(name, {}) and "value" not in train.metric_reduce[name])]
    for settings, stmt in infer.callbacks.values():
        check_monitor(settings, stmt, logged)
    return {func: settings for func, (settings, _) in infer.callbacks.items()}


def check_freeze(model: str, trained: dict, freeze) -> None:
    """`DataError` when a `freeze` selector picks no parameter, or when they leave nothing to train."""
    from dslc.diagnostics import DataError
    from dslc.losses import matches, nothing_selected_hint
    from dslc.spelling import option

    lowered = [t for t, _, _ in trained.values()]
    params = {p.name: p for t in lowered for p in t.params}
    kinds = {name: kind for t in lowered for name, kind in t.param_kinds.items()}
    for selector in freeze:
        if not any(matches(selector, name, kinds[name]) for name in params):
            raise DataError(f"{option('freeze')} `{selector}` selects no parameter of model `{model}`",
                            hint=nothing_selected_hint(selector, list(params.values())))
    if freeze and lowered and not any(p.role == "param" for t in lowered for p in t.params):
        raise DataError(f"{option('freeze')} leaves model `{model}` nothing to train", hint="freeze some layers, not all")


def _check_infer_outputs(infer: LoweredModel) -> None:
    for name, node in infer.outputs:
        for dep in toposort([node]):
            if dep.op == "input" and dep.role == "target":
                raise error(f"output `{name}` depends on the target `{dep.name}`", infer.output_spans[name],
                            hint="targets are fed only during training and evaluation; compute outputs from inputs")


def graph_keys(objective: str) -> tuple[str, str]:
    """The manifest keys of an objective's training and evaluation graphs (also their file infixes)."""
    return ("train", "eval") if not objective else (f"train.{objective}", f"eval.{objective}")


def split_keys(objective: str) -> tuple[str, str]:
    """The manifest keys of an objective's gradient and update graphs (`dslc build --split`)."""
    return ("grad", "apply") if not objective else (f"grad.{objective}", f"apply.{objective}")


def _training_graphs(name: str, objective: ast.Objective, train: LoweredModel, ev: LoweredModel, dtype: str):
    where = f"objective `{objective.name}`" if objective.name else f"model `{name}`"
    if train.loss is None:
        raise error(f"{where} has no `loss`", objective.name_span if objective.name else objective.body[0].span,
                    hint="add a line such as `loss cross_entropy(logits, label)`")
    if train.optimizer is None:
        raise error(f"{where} has a `loss` but no `optimizer`", train.loss_span,
                    hint="add a line such as `optimizer adam(lr = 0.001)`")
    train_key, eval_key = graph_keys(objective.name)
    evaluation = Graph(f"{name}.{eval_key}", ev.inputs + ev.params + ev.buffers, [("loss", ev.loss)] + ev.metrics)
    hyper = [train.seed] if train.seed is not None else []
    buffer_next = [(b.name + NEXT_SUFFIX, train.buffer_updates.get(b.name, b)) for b in train.buffers]
    update = next((s.span for s in objective.body if isinstance(s, ast.Update)), None)
    notes = {"loss": "loss", "optimizer": train.optimizer, "float_dtype": dtype,
             "state_prefix": f"{objective.name}." if objective.name else "", "loss_span": train.loss_span,
             "update_span": update}
    training = Graph(f"{name}.{train_key}", train.inputs + hyper + train.params + train.buffers,
                     [("loss", train.loss)] + train.metrics + buffer_next, notes=notes)
    return {train_key: training, eval_key: evaluation}


def build_program(infer: LoweredModel, trained: dict, dtype: str, source_path: str,
                  print_ir_after: str | None, dims: dict[str, int] | None = None, split: bool = False,
                  callbacks: dict[str, dict] | None = None, tune=None) -> Program:
    name = infer.name
    _check_infer_outputs(infer)
    used = {n.id for _, out in infer.outputs for n in toposort([out])}
    # what the outputs need: a GAN's inference graph holds the generator, not the discriminator
    data_inputs = [n for n in infer.inputs if n.role == "data" and n.id in used]
    weights = [n for n in infer.params + infer.buffers if n.id in used]
    ir_graphs: dict[str, Graph] = {"infer": Graph(f"{name}.infer", data_inputs + weights, infer.outputs)}
    errors: list[Diagnostic] = []
    for objective_name, (train, ev, objective) in trained.items():
        try:
            ir_graphs.update(_training_graphs(name, objective, train, ev, dtype))
        except DslcError as e:  # report every objective's missing statements at once
            errors.extend(e.diagnostics)
            continue
        if split:  # the same lowered step, run through the grad and apply pipelines
            step = ir_graphs[graph_keys(objective_name)[0]]
            for key in split_keys(objective_name):
                ir_graphs[key] = Graph(f"{name}.{key}", step.inputs, step.outputs, dict(step.notes))
    if errors:
        raise DslcError(errors)

    printed: list[str] = []
    final = {}
    for key, g in ir_graphs.items():
        try:
            final[key] = run(g, key.split(".")[0], print_ir_after, printed)
            if key.startswith("train"):
                final[key] = _carried_in_input_order(final[key])
        except DslcError as e:  # a loss without gradients, say: each objective's is reported
            errors.extend(e.diagnostics)
    if errors:
        raise DslcError(errors)
    for key, g in final.items():
        if key.startswith("train"):
            _check_weight_size(g)
    tuned = []
    if tune is not None:
        from dslc.runtime.tune import tune as tune_choices

        tune = tune.at_graphs(final)
        tuned = tune_choices(final, tune)
    chosen = {c.key: c.choice for c in tuned}
    metadata = {"dslc.version": __version__, "dslc.model": name}
    graphs, files = {}, {}
    for key, g in final.items():
        model = emit_graph(g, doc=f"dslc {key} graph of model `{name}`", metadata={**metadata, "dslc.graph": key},
                           constant_roles=("param", "buffer") if key == "infer" else (), choices=chosen)
        check(model)
        graphs[key] = serialize(model)
        files[key] = f"{name}.{key}.onnx"
    if trained and final["infer"].inputs_with_role("param", "buffer"):
        # the inference graph with the weights as inputs: a runtime that trained them (onnxruntime-node,
        # tract, OpenVINO) cannot replace `infer`'s initializers, and onnxruntime-node ignores feeds of them
        model = emit_graph(final["infer"], doc=f"dslc predict graph of model `{name}`",
                           metadata={**metadata, "dslc.graph": "predict"}, choices=chosen)
        check(model)
        graphs["predict"], files["predict"] = serialize(model), f"{name}.predict.onnx"

    initial = _initial_values(final)
    if initial:
        init = emit_init_graph(f"{name}.init", initial, doc=f"dslc initial values of model `{name}`",
                               metadata={**metadata, "dslc.graph": "init"})
        check(init)
        graphs["init"] = serialize(init)
        files["init"] = f"{name}.init.onnx"

    entries = {"infer": mf.infer_entry(final["infer"], files["infer"], infer.target_classes)}
    if "predict" in graphs:
        entries["predict"] = mf.predict_entry(final["infer"], files["predict"], infer.target_classes)
    if initial:
        entries["init"] = mf.init_entry(files["init"], initial)
    optimizers = {}
    for objective_name, (train, ev, _) in trained.items():
        classes = {**ev.target_classes, **train.target_classes}
        ranges = {**ev.target_ranges, **train.target_ranges}
        train_key, eval_key = graph_keys(objective_name)
        optimizers[objective_name] = {"kind": train.optimizer.kind,
                                      "settings": {**_defaults(train.optimizer), **train.optimizer.settings}}
        if train.optimizer.schedule:
            optimizers[objective_name]["schedule"] = [part.as_json() for part in train.optimizer.schedule]
        entries[train_key] = mf.train_entry(final[train_key], files[train_key], classes, ranges, NEXT_SUFFIX,
                                            objective_name, optimizers[objective_name], train.metric_reduce)
        # what the step computes, which the entry's inputs and outputs do not show (a `-D` rate of dropout,
        # a layer's activation): a run resumed with another warns; spans left out, so moving the file does not
        ir = print_graph(final[train_key], with_spans=False)
        entries[train_key]["ir_sha256"] = hashlib.sha256(ir.encode("utf-8")).hexdigest()
        entries[eval_key] = mf.eval_entry(final[eval_key], files[eval_key], classes, ranges, ev.metric_reduce)
        weights = {**ev.sample_weights, **train.sample_weights}
        for key in (train_key, eval_key):
            mf.mark_sample_weights(entries[key], weights)
        if split:
            grad_key, apply_key = split_keys(objective_name)
            entries[grad_key] = mf.grad_entry(final[grad_key], files[grad_key], classes, ranges, NEXT_SUFFIX,
                                              objective_name, train.metric_reduce)
            mf.mark_sample_weights(entries[grad_key], weights)
            entries[apply_key] = mf.apply_entry(final[apply_key], files[apply_key], NEXT_SUFFIX, objective_name,
                                                optimizers[objective_name])
    tuning = {**tune.key(), "choices": [c.as_json() for c in tuned]} if tune is not None else None
    manifest = mf.manifest(name, __version__, OPSET, dtype, entries, optimizers.get(""), dims, callbacks, tuning)
    ir_text = "\n\n".join(printed) if print_ir_after else "\n\n".join(print_graph(g) for g in final.values())
    return Program(name=name, manifest=manifest, graphs=graphs, ir_text=ir_text, source_path=source_path,
                   extras={"lowered": ir_graphs, "final": final, "tuned": tuned})


def _carried_in_input_order(training: Graph) -> Graph:
    """The training graph with its outputs as the manifest lists them: loss and metrics, then the next
    value of each parameter, buffer and state tensor in the order of the inputs (a runtime that returns
    outputs by position, as tract does, then pairs them with the manifest's entries)."""
    rank = {f"{n.name}{NEXT_SUFFIX}": i for i, n in enumerate(training.inputs)}
    first = [(name, node) for name, node in training.outputs if name not in rank]
    carried = sorted(((name, node) for name, node in training.outputs if name in rank), key=lambda o: rank[o[0]])
    return Graph(training.name, training.inputs, first + carried, training.notes)


def _initial_values(final: dict[str, Graph]) -> list[tuple[str, object, object]]:
    """(name, type, value) of every parameter, buffer and optimizer-state tensor of the training graphs,
    each once, in graph order: the outputs of the init graph."""
    seen: dict[str, tuple] = {}
    for key, g in final.items():
        if key.startswith("train"):
            for n in g.inputs:
                if n.role in ("param", "frozen", "buffer", "state") and n.name not in seen:
                    seen[n.name] = (n.name, n.type, n.attrs["default"])
    return list(seen.values())


def _check_weight_size(training: Graph) -> None:
    """The parameters alone fit in a file (`Lowering.new_param` checks); with the optimizer's state
    (one or two copies of them) the training graph may not."""
    sizes = {"state": 0, "other": 0}
    for n in training.inputs:
        if n.attrs.get("default") is not None:
            sizes["state" if n.role == "state" else "other"] += n.attrs["default"].nbytes
    total, optimizer = sizes["state"] + sizes["other"], training.notes["optimizer"]
    if total > MAX_WEIGHT_BYTES:
        raise error(f"the training graph needs {byte_size(total)} for the parameters ({byte_size(sizes['other'])}) "
                    f"and the state of `{optimizer.kind}` ({byte_size(sizes['state'])})", optimizer.span,
                    hint=f"the weights of a graph must fit in one ONNX file, at most {MAX_WEIGHT_BYTES / 2**30:g} GiB: "
                         "make the model smaller, or use an optimizer with less state "
                         "(`sgd` without momentum has none)")


def _defaults(spec) -> dict:
    from dslc.optim import OPTIMIZERS

    return dict(OPTIMIZERS[spec.kind][0])
