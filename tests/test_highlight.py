"""Highlighting: the Pygments lexer (found through its entry point) and the TextMate grammar of the
VS Code extension tokenize every `.dl` file of the repository that parses, with no error token and no
character left unscoped, and know the language's keywords and dtypes."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dslc.frontend.tokens import keywords
from dslc.ir.types import SHORT_TO_DTYPE
from dslc.source import SourceFile

pygments = pytest.importorskip("pygments")
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename  # noqa: E402
from pygments.token import Comment, Error, Keyword, Name, Number, Operator, String  # noqa: E402

from dslc.editor.highlight import CONSTANTS, DTYPES, KEYWORDS, DlLexer  # noqa: E402
from golden import parsing_dl_files  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEXTMATE = ROOT / "editors" / "textmate" / "dl.tmLanguage.json"
VSCODE = ROOT / "editors" / "vscode"


FILES = parsing_dl_files()


def test_the_lexer_is_registered_by_its_entry_point():
    assert type(get_lexer_by_name("dl")) is DlLexer
    assert type(get_lexer_for_filename("models/lenet.dl")) is DlLexer


def test_the_lexer_knows_the_keywords_and_dtypes():
    assert sorted(KEYWORDS + CONSTANTS) == keywords()
    assert set(DTYPES) == set(SHORT_TO_DTYPE)


def test_every_file_tokenizes_without_errors():
    assert len(FILES) > 100
    lexer = DlLexer()
    for path in FILES:
        text = SourceFile.read(path).text
        tokens = list(lexer.get_tokens(text))
        errors = [(kind, value) for kind, value in tokens if kind in Error]
        assert not errors, f"{path}: {errors[:5]}"
        assert "".join(value for _, value in tokens) == text + ("\n" if not text.endswith("\n") else "")


def test_the_lexer_names_what_it_sees():
    line = 'model lenet(lr = 0.001) {  # LeNet\n    input  image: f32[B, 1]\n    x = image |> conv2d(6, "same")\n}\n'
    kinds = {value: kind for kind, value in DlLexer().get_tokens(line) if value.strip()}
    assert kinds["model"] in Keyword.Declaration and kinds["lenet"] in Name.Class
    assert kinds["# LeNet"] in Comment and kinds['"same"'] in String and kinds["0.001"] in Number.Float
    assert kinds["f32"] in Keyword.Type and kinds["conv2d"] in Name.Function and kinds["|>"] in Operator
    assert kinds["input"] in Keyword and kinds["image"] in Name


# ---- TextMate ------------------------------------------------------------------------------------
def _grammar() -> dict:
    return json.loads(TEXTMATE.read_text(encoding="utf-8"))


def _scan(grammar: dict, line: str) -> list[tuple[str, str]]:
    """(scope, text) of a line, applying the top-level patterns TextMate-style: at each position the
    first pattern that matches there wins (the grammar's patterns are all single-line `match` rules)."""
    rules = [grammar["repository"][p["include"][1:]] for p in grammar["patterns"]]
    compiled = [(re.compile(r["match"]), r) for r in rules]
    out, i = [], 0
    while i < len(line):
        if line[i].isspace():
            i += 1
            continue
        for regex, rule in compiled:
            m = regex.match(line, i)
            if m and m.end() > i:
                scope = rule.get("name") or rule["captures"]["1"]["name"]
                out.append((scope, m.group(0)))
                i = m.end()
                break
        else:
            out.append(("", line[i]))
            i += 1
    return out


def test_the_textmate_grammar_is_the_extension_s():
    assert (VSCODE / "syntaxes" / "dl.tmLanguage.json").read_text(encoding="utf-8") == TEXTMATE.read_text(encoding="utf-8")
    package = json.loads((VSCODE / "package.json").read_text(encoding="utf-8"))
    (language,) = package["contributes"]["languages"]
    (grammar,) = package["contributes"]["grammars"]
    assert language["extensions"] == [".dl"] and grammar["scopeName"] == _grammar()["scopeName"] == "source.dl"
    assert (VSCODE / grammar["path"]).is_file() and (VSCODE / language["configuration"]).is_file()
    assert package["contributes"]["configuration"]["properties"]["dslc.command"]["default"] == ["dslc", "lsp"]
    configuration = json.loads((VSCODE / "language-configuration.json").read_text(encoding="utf-8"))
    assert configuration["comments"] == {"lineComment": "#"}
    assert ["(", ")"] in configuration["brackets"] and ["{", "}"] in configuration["brackets"]


def test_the_textmate_grammar_knows_the_keywords():
    repo = _grammar()["repository"]
    words = set(re.findall(r"[a-z]+", repo["keyword"]["match"] + repo["declaration"]["match"].split("\\s")[0]
                           + repo["constant"]["match"])) - {"b"}
    assert sorted(words) == keywords()
    assert set(re.findall(r"[a-z]+\d*", repo["tensor-type"]["match"])) - {"b"} == set(SHORT_TO_DTYPE)


def test_the_textmate_grammar_scopes_every_character():
    grammar = _grammar()
    for path in FILES:
        for number, line in enumerate(SourceFile.read(path).text.splitlines(), 1):
            unscoped = [text for scope, text in _scan(grammar, line) if not scope]
            assert not unscoped, f"{path}:{number}: {unscoped}"
    scopes = dict((text, scope) for scope, text in _scan(grammar, 'model m(rate = 0.5) {  # why'))
    assert scopes["model m"] == "storage.type.dl" and scopes["# why"] == "comment.line.number-sign.dl"
    scopes = dict((text, scope) for scope, text in _scan(grammar, '    h = x |> dense(8, init = he) |> relu'))
    assert scopes["dense"] == "entity.name.function.dl" and scopes["|>"] == "keyword.operator.dl"
    assert scopes["8"] == "constant.numeric.dl" and scopes["init ="] == "variable.parameter.dl"
