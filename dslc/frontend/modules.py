"""A `.dl` file as the compiler and the editor read it: parsed with every file it imports (`load_module`),
each definition's parameters checked, and its one model picked (`pick_model`)."""
from __future__ import annotations

from pathlib import Path

from dslc.diagnostics import Diagnostic, DslcError, error
from dslc.frontend import ast
from dslc.frontend.imports import ImportRoots, resolve_import, shown_path
from dslc.frontend.parser import TokenBudget, parse, parse_file
from dslc.source import SourceFile


def load_module(path: str | Path, text: str | None = None, import_path=(),
                sources: list | None = None) -> tuple[ast.Module, dict[str, ast.Block]]:
    """Parse a file (or `text`, as the file at `path`: an editor's unsaved buffer) and, transitively,
    its imports; returns the module and every block it can use. Imports read only `.dl` files inside
    the file's folder or an `import_path` folder (`resolve_import`). `sources`, if given, receives the
    (resolved path, text) of every file parsed (the compile cache's dependencies)."""
    roots = ImportRoots.of(path, import_path)
    budget = TokenBudget()  # of all the files together
    root = parse_file(path, budget) if text is None else parse(SourceFile.from_text(str(path), text), budget)
    modules: list[ast.Module] = []  # each after the files it imports: the order its definitions are read in
    seen = {Path(root.source.path).resolve()}
    stack = [(root, iter(root.imports))]
    while stack:
        module, imports = stack[-1]
        imp = next(imports, None)
        if imp is None:
            stack.pop()
            modules.append(module)
            if sources is not None:
                sources.append((str(Path(module.source.path).resolve()), module.source.text))
            continue
        try:
            target = resolve_import(imp, module.source.path, roots)
            if target.resolve() not in seen:
                seen.add(target.resolve())
                child = parse_file(target, budget)
                stack.append((child, iter(child.imports)))
        except OSError as e:  # unreadable, not a regular file, too large, a name too long for the system
            raise error(f"cannot read the imported file `{shown_path(imp.path)}`: {e.strerror or e}", imp.span) from None
    blocks: dict[str, ast.Block] = {}
    errors: list[Diagnostic] = []
    for module in modules:
        for definition in module.blocks + module.models:
            try:
                check_params(definition)
            except DslcError as e:
                errors.extend(e.diagnostics)
        for block in module.blocks:
            if block.name in blocks:
                first = blocks[block.name]
                errors.append(Diagnostic(f"block `{block.name}` is defined twice", block.name_span, "defined again here",
                                         notes=(("first defined here", first.name_span),)))
            else:
                blocks[block.name] = block
    if errors:
        raise DslcError(errors)
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
