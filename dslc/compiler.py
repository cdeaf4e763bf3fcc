"""The compiler driver: `.dl` file → lowered IR → pass pipelines → ONNX graphs + manifest."""
from __future__ import annotations

from pathlib import Path

from dslc import __version__
from dslc.diagnostics import Diagnostic, DslcError, error
from dslc.emit import manifest as mf
from dslc.emit.onnx import OPSET, check, emit_graph, serialize
from dslc.frontend import ast
from dslc.frontend.parser import parse
from dslc.ir.graph import Graph, toposort
from dslc.ir.printer import print_graph
from dslc.lower import LoweredModel, lower_model
from dslc.passes import PASS_NAMES, run
from dslc.passes.lower_optimizer import NEXT_SUFFIX
from dslc.program import Program
from dslc.source import SourceFile

DTYPES = ("float32", "float64")


def load_module(path: str | Path) -> tuple[ast.Module, dict[str, ast.Block]]:
    """Parse a file and, transitively, its imports; returns the module and every block it can use."""
    root = parse(SourceFile.read(path))
    blocks: dict[str, ast.Block] = {}
    seen: set[Path] = set()
    pending = [root]
    while pending:
        module = pending.pop()
        shown = Path(module.source.path)
        here = shown.resolve()
        if here in seen:
            continue
        seen.add(here)
        for definition in module.blocks + module.models:
            check_params(definition)
        for block in module.blocks:
            if block.name in blocks:
                first = blocks[block.name]
                raise DslcError(Diagnostic(f"block `{block.name}` is defined twice", block.name_span, "defined again here",
                                           notes=(("first defined here", first.name_span),)))
            blocks[block.name] = block
        for imp in module.imports:
            target = here.parent / imp.path
            if not target.is_file():
                raise error(f"cannot find the imported file `{imp.path}`", imp.span,
                            hint=f"import paths are relative to the importing file's folder, `{shown.parent.as_posix()}/`")
            if target.resolve() not in seen:
                pending.append(parse(SourceFile.read(shown.parent / imp.path)))
    return root, blocks


def check_params(definition: ast.Block | ast.Model) -> None:
    seen: dict[str, ast.Param] = {}
    with_default = None
    for p in definition.params:
        if p.name in seen:
            raise DslcError(Diagnostic(f"parameter `{p.name}` is declared twice", p.span, "declared again here",
                                       notes=(("first declared here", seen[p.name].span),)))
        seen[p.name] = p
        if p.default is not None:
            with_default = p
        elif with_default is not None and isinstance(definition, ast.Block):
            raise DslcError(Diagnostic(f"parameter `{p.name}` has no default but follows `{with_default.name}`, which has one",
                                       p.span, hint="put parameters with defaults last"))


def pick_model(module: ast.Module) -> ast.Model:
    if not module.models:
        raise DslcError(Diagnostic(f"`{module.source.path}` defines no model",
                                   hint="declare one with `model name { ... }`"))
    if len(module.models) > 1:
        second = module.models[1]
        raise DslcError(Diagnostic("a file defines one model", second.name_span, "a second model",
                                   hint="put each model in its own file and share blocks with `import`",
                                   notes=(("the first model", module.models[0].name_span),)))
    return module.models[0]


def compile_file(path: str | Path, defines: dict[str, str] | None = None, dtype: str = "float32", seed: int = 0,
                 print_ir_after: str | None = None) -> Program:
    """Compile a `.dl` file. Raises `DslcError` (the user's model is wrong) or `OSError` (no file)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}")
    if print_ir_after is not None and print_ir_after not in PASS_NAMES:
        raise ValueError(f"no pass `{print_ir_after}`; passes: {', '.join(PASS_NAMES)}")
    module, blocks = load_module(path)
    model = pick_model(module)
    lowered = {mode: lower_model(model, blocks, mode, dtype, seed, defines) for mode in ("infer", "eval", "train")}
    return build_program(lowered, dtype, str(path), print_ir_after)


def _check_infer_outputs(infer: LoweredModel) -> None:
    for name, node in infer.outputs:
        for dep in toposort([node]):
            if dep.op == "input" and dep.role == "target":
                raise error(f"output `{name}` depends on the target `{dep.name}`", infer.output_spans[name],
                            hint="targets are fed only during training and evaluation; compute outputs from inputs")


def build_program(lowered: dict[str, LoweredModel], dtype: str, source_path: str, print_ir_after: str | None) -> Program:
    infer, name = lowered["infer"], lowered["infer"].name
    _check_infer_outputs(infer)
    data_inputs = [n for n in infer.inputs if n.role == "data"]
    ir_graphs: dict[str, Graph] = {
        "infer": Graph(f"{name}.infer", data_inputs + infer.params, infer.outputs),
    }
    train = lowered["train"]
    if train.loss is not None:
        if train.optimizer is None:
            raise error(f"model `{name}` has a `loss` but no `optimizer`", train.loss_span,
                        hint="add a line such as `optimizer adam(lr = 0.001)`")
        ev = lowered["eval"]
        ir_graphs["eval"] = Graph(f"{name}.eval", ev.inputs + ev.params, [("loss", ev.loss)] + ev.metrics)
        hyper = [train.seed] if train.seed is not None else []
        ir_graphs["train"] = Graph(f"{name}.train", train.inputs + hyper + train.params,
                                   [("loss", train.loss)] + train.metrics,
                                   notes={"loss": "loss", "optimizer": train.optimizer, "float_dtype": dtype})
    elif train.optimizer is not None:
        raise error(f"model `{name}` has an `optimizer` but no `loss`", train.optimizer.span,
                    hint="add a line such as `loss cross_entropy(logits, label)`")

    printed: list[str] = []
    final = {kind: run(g, kind, print_ir_after, printed) for kind, g in ir_graphs.items()}
    files = {"infer": f"{name}.infer.onnx", "eval": f"{name}.eval.onnx", "train": f"{name}.train.onnx"}
    metadata = {"dslc.version": __version__, "dslc.model": name}
    graphs = {}
    for kind, g in final.items():
        model = emit_graph(g, doc=f"dslc {kind} graph of model `{name}`", metadata={**metadata, "dslc.graph": kind},
                           constant_roles=("param",) if kind == "infer" else ())
        check(model)
        graphs[kind] = serialize(model)

    classes = {**lowered["eval"].target_classes, **train.target_classes}
    entries = {"infer": mf.infer_entry(final["infer"], files["infer"])}
    if "train" in final:
        entries["train"] = mf.train_entry(final["train"], files["train"], classes, NEXT_SUFFIX)
        entries["eval"] = mf.eval_entry(final["eval"], files["eval"], classes)
    optimizer = None
    if train.optimizer is not None:
        optimizer = {"kind": train.optimizer.kind, "settings": {**_defaults(train.optimizer), **train.optimizer.settings}}
    manifest = mf.manifest(name, __version__, OPSET, dtype, entries, optimizer)
    ir_text = "\n\n".join(printed) if print_ir_after else "\n\n".join(print_graph(g) for g in final.values())
    return Program(name=name, manifest=manifest, graphs=graphs, ir_text=ir_text, source_path=source_path)


def _defaults(spec) -> dict:
    from dslc.optim import OPTIMIZERS

    return dict(OPTIMIZERS[spec.kind][0])
