"""The frontend: `.dl` text -> `ast.Module` (syntax only; see `grammar/LANGUAGE.md`)."""
from dslc.frontend.parser import parse, parse_file

__all__ = ["parse", "parse_file"]
