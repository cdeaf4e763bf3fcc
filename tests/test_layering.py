"""Layering rules, checked on the syntax tree of every `dslc/**/*.py` (imports inside functions count):

- `lark` is imported only under `dslc/frontend/`;
- `onnx` (and `onnx.*`) only under `dslc/emit/`;
- `onnxruntime` only under `dslc/runtime/`;
- `pygls` and `lsprotocol` only in `dslc/editor/lsp.py`, `pygments` only in `dslc/editor/highlight.py`
  (optional dependencies), and `dslc.editor` only by itself and the CLI: the compiler knows no editor;
- only `dslc/cli.py` prints or exits: no bare `print(...)`, `sys.exit`, `exit()`/`quit()` or `os._exit`
  elsewhere (`dslc/runtime/progress.py` writes through a rich `Console` it is given or creates; that is
  an attribute call, `console.print(...)`, and is allowed).
Each test reports every violation as `path:line: what`.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dslc"

# top-level module -> the folder (relative to the repository root) that alone may import it
IMPORT_HOMES = {
    "lark": "dslc/frontend/",
    "onnx": "dslc/emit/",
    "onnxruntime": "dslc/runtime/",
    "pygls": "dslc/editor/lsp.py",
    "lsprotocol": "dslc/editor/lsp.py",
    "pygments": "dslc/editor/highlight.py",
}
PRINTS_AND_EXITS = ("dslc/cli.py", "dslc/__main__.py", "dslc/interrupts.py")


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imported_modules(tree: ast.Module):
    """(line, top-level module name) of every absolute import, including `importlib.import_module("x")`
    and `__import__("x")` with a constant name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == "__import__") or \
                    (isinstance(f, ast.Attribute) and f.attr == "import_module"):
                yield node.lineno, node.args[0].value.split(".")[0]


def output_calls(tree: ast.Module):
    """(line, description) of bare `print(...)`, `exit()`/`quit()`, `sys.exit`, `os._exit`, and
    `from sys import exit`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("print", "exit", "quit"):
            yield node.lineno, f"`{node.func.id}(...)`"
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                (node.value.id, node.attr) in (("sys", "exit"), ("os", "_exit")):
            yield node.lineno, f"`{node.value.id}.{node.attr}`"
        elif isinstance(node, ast.ImportFrom) and node.module in ("sys", "os") and \
                any(a.name in ("exit", "_exit") for a in node.names):
            yield node.lineno, f"`from {node.module} import ...exit`"


def test_the_package_is_found():
    files = [relative(p) for p in sources()]
    assert "dslc/cli.py" in files and "dslc/emit/onnx.py" in files and len(files) > 20, files


@pytest.mark.parametrize("module", list(IMPORT_HOMES))
def test_heavy_dependency_has_one_home(module):
    home = IMPORT_HOMES[module]
    violations = []
    for path in sources():
        rel = relative(path)
        if rel.startswith(home):
            continue
        for line, name in sorted(imported_modules(parse(path))):
            if name == module:
                violations.append(f"{rel}:{line}: imports `{module}` (allowed only under `{home}`)")
    assert not violations, f"`{module}` imported outside `{home}`:\n  " + "\n  ".join(violations)


def test_only_the_cli_uses_the_editor_package():
    violations = []
    for path in sources():
        rel = relative(path)
        if rel.startswith("dslc/editor/") or rel == "dslc/cli.py":
            continue
        for node in ast.walk(parse(path)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "dslc.editor" or n.startswith("dslc.editor.") for n in names):
                violations.append(f"{rel}:{node.lineno}: imports `dslc.editor`")
    assert not violations, "\n  ".join(violations)


def test_only_the_cli_prints_or_exits():
    violations = []
    for path in sources():
        rel = relative(path)
        if rel in PRINTS_AND_EXITS:
            continue
        for line, what in sorted(output_calls(parse(path))):
            violations.append(f"{rel}:{line}: {what} (only `dslc/cli.py` prints or exits; return values or "
                              f"raise `DslcError`)")
    assert not violations, "printing or exiting outside the CLI:\n  " + "\n  ".join(violations)


def test_the_checks_see_violations():
    """The detectors themselves: each rule fires on a snippet that breaks it, and not on its look-alikes."""
    bad = ast.parse("import onnx.helper\nfrom lark import Lark\nimport importlib\nimportlib.import_module('onnxruntime')\n"
                    "def f():\n    import onnx\n")
    assert sorted(name for _, name in imported_modules(bad)) == ["importlib", "lark", "onnx", "onnx", "onnxruntime"]
    ok = ast.parse("import onnxruntime_extensions\nfrom .onnx import emit_graph\nfrom dslc.emit.onnx import check\n")
    assert [name for _, name in imported_modules(ok)] == ["onnxruntime_extensions", "dslc"]
    prints = ast.parse("print('x')\nimport sys\nsys.exit(1)\nexit()\nfrom sys import exit\n"
                       "console.print('fine')\nself.console.print('fine')\nfile.write('fine')\n")
    assert sorted(line for line, _ in output_calls(prints)) == [1, 3, 4, 5]
