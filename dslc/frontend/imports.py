"""Where an `import "path"` may read from.

The rule (grammar/LANGUAGE.md, "Imports"): the path is relative — to the importing file's folder first,
then to each `--import-path` folder in order — and names a `.dl` file that lies, after following
symbolic links, inside the project root (the folder of the model file given to dslc) or inside an
`--import-path` folder. Absolute paths and paths that leave those folders (`..`, a link pointing out)
are refused before anything outside is looked at, so a model cannot make dslc read (and echo in a
syntax error) `/proc/self/environ` or `~/.ssh/id_rsa`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from dslc.diagnostics import error
from dslc.frontend import ast

SUFFIX = ".dl"


@dataclass(frozen=True)
class ImportRoots:
    """The folders imports may read from: the project root first, then the `--import-path` folders
    (`shown` as given, for lookups and messages; `real` with links resolved, for containment)."""

    shown: tuple[Path, ...]
    real: tuple[str, ...]

    @staticmethod
    def of(model_path: str | os.PathLike, import_path=()) -> "ImportRoots":
        shown = (Path(model_path).parent, *(Path(p) for p in import_path))
        return ImportRoots(shown, tuple(os.path.realpath(p) for p in shown))

    def contains(self, path: str | os.PathLike) -> bool:
        real = os.path.realpath(path)
        return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in self.real)


def resolve_import(imp: ast.Import, importing_file: str, roots: ImportRoots) -> Path:
    """The file `imp` names, as shown in diagnostics; raises a `DslcError` at the import otherwise."""
    text = imp.path
    shown = shown_path(text)
    if any(not ch.isprintable() for ch in text):
        raise error("the import path contains a control character", imp.span,
                    hint="an import path is a relative path such as `\"blocks/transformer.dl\"`")
    if PurePosixPath(text).is_absolute() or PureWindowsPath(text).anchor:
        raise error(f"the import path `{shown}` is absolute", imp.span,
                    hint="imports are relative to the importing file's folder; to use a library folder "
                         "elsewhere, pass it with `--import-path DIR` and import relative to it")
    here = Path(importing_file).parent
    candidates = [here / text] + [root / text for root in roots.shown[1:]]
    inside = [c for c in candidates if roots.contains(c)]
    if not inside:
        where = "the project folder" + (" or the `--import-path` folders" if len(roots.shown) > 1 else "")
        raise error(f"the import path `{shown}` leads outside {where}", imp.span,
                    hint=f"imports read `.dl` files inside the model's folder `{_shown_folder(roots.shown[0])}`; "
                         "pass another folder with `--import-path DIR` to import from it")
    for candidate in inside:
        if candidate.is_dir():
            raise error(f"the imported path `{shown}` is a folder, not a file", imp.span,
                        hint=f"import a file in it, such as `import \"{shown.rstrip('/')}/blocks.dl\"`")
        if candidate.exists():
            if candidate.suffix != SUFFIX:
                raise error(f"the imported file `{shown}` is not a `{SUFFIX}` file", imp.span,
                            hint=f"imports read model files, whose names end in `{SUFFIX}`")
            return candidate
    hint = f"import paths are relative to the importing file's folder, `{here.as_posix()}/`"
    if len(roots.shown) > 1:
        hint += ", then to each `--import-path` folder"
    raise error(f"cannot find the imported file `{shown}`", imp.span, hint=hint)


def shown_path(text: str, limit: int = 80) -> str:
    """An import path for a message: at most `limit` characters, the middle elided."""
    return text if len(text) <= limit else f"{text[:limit // 2]}…{text[-limit // 2:]}"


def _shown_folder(path: Path) -> str:
    return path.as_posix() + "/" if str(path) not in ("", ".") else "./"
