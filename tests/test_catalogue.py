"""grammar/LANGUAGE.md lists every builtin, initializer and optimizer as the registries define them."""
from dslc.catalogue import catalogue, replace_catalogue
from dslc.builtins import load_all
from golden import ROOT

LANGUAGE = ROOT / "grammar" / "LANGUAGE.md"


def test_language_reference_catalogue_is_current(golden):
    text = LANGUAGE.read_text(encoding="utf-8")
    golden(LANGUAGE, replace_catalogue(text))


def test_every_builtin_is_documented():
    text = catalogue()
    for name, fn in load_all().items():
        assert fn.doc, f"builtin `{name}` has no docstring"
        assert f"`{fn.usage()}`" in text
