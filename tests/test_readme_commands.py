"""README.md's command line table against the command line itself: every flag of every verb is in its
verb's rows, and every flag a row shows is one of its verb's (a new user reads the table, not `--help`)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from dslc import cli
from dslc.cli_args import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# flags every compiling verb takes, described once under the table
COMMON = {"-D", "--dtype", "--import-path"}


def table_rows() -> dict[str, str]:
    """Each verb's rows of the Command line table (first cell and description), joined."""
    section = README[README.index("## Command line"):README.index("### The run folder")]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = re.split(r"(?<!\\)\|", line)
        if not line.startswith("| `dslc") or len(cells) < 3:
            continue
        for verb in re.findall(r"`dslc ((?:[a-z]+\\\|)*[a-z]+)", cells[1]):
            for name in verb.split("\\|"):
                rows[name] = rows.get(name, "") + " " + cells[1] + " " + cells[2]
    return rows


def flags_in(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[A-Za-z])(?![\w-])", text))


VERBS = build_parser(None)[1]


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_flag_is_in_the_readme_table_and_every_flag_there_exists(verb):
    rows = table_rows()
    assert verb in rows, f"README's Command line table has no row for `dslc {verb}`"
    declared = {o for a in VERBS[verb]._actions if a.help != "==SUPPRESS==" for o in a.option_strings}
    declared -= {"-h", "--help"}
    shown = flags_in(rows[verb].replace("`mpiexec -n N", ""))
    missing = declared - COMMON - shown
    assert not missing, f"`dslc {verb}` flags missing from its README rows: {sorted(missing)}"
    every = {o for a in VERBS[verb]._actions for o in a.option_strings}
    assert not shown - every, f"README rows of `dslc {verb}` show flags it does not take: {sorted(shown - every)}"


def test_common_flags_are_described_under_the_table():
    below = README[README.index("## Command line"):README.index("### The run folder")]
    assert all(f"`{flag}" in below for flag in COMMON)
    assert all(flag in {o for a in VERBS[v]._actions for o in a.option_strings}
               for flag in COMMON for v in VERBS if v not in ("plot", "fmt", "lsp"))


def test_the_language_reference_d_example_compiles(capsys):
    text = (ROOT / "grammar" / "LANGUAGE.md").read_text(encoding="utf-8")
    command = re.search(r"^dslc build (models/mlp\.dl(?: -D \S+)+)$", text, re.M).group(1).split()
    assert cli.main(["check", *[str(ROOT / w) if w.endswith(".dl") else w for w in command]]) == 0
    assert "checked mlp" in capsys.readouterr().err


@pytest.mark.parametrize("doc", ["README.md", "grammar/LANGUAGE.md"])
def test_the_first_model_of_the_doc_compiles_as_written(doc, tmp_path, capsys):
    """The model a reader sees first, saved as a file and checked (LANGUAGE.md's imported a `blocks.dl`
    that does not exist: 'cannot find the imported file')."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    model = next(body for body in re.findall(r"```\w*\n(.*?)```", text, re.S) if re.search(r"^model ", body, re.M))
    (tmp_path / "m.dl").write_text(model, encoding="utf-8")
    assert cli.main(["check", str(tmp_path / "m.dl")]) == 0, capsys.readouterr().err


def test_weights_trained_with_d_values_need_them_again(tmp_path, capsys):
    """README under the table: `predict` of a run trained with `-D` needs the same `-D` (exit 3), and the
    hint says so; it said "train into a new directory", no way out for `predict`."""
    model, data = str(ROOT / "models" / "xor.dl"), str(ROOT / "examples" / "xor" / "xor.npz")
    run = str(tmp_path / "run")
    assert cli.main(["train", model, "-D", "hidden=8", "--data", data, "--epochs", "1", "--batch-size", "4",
                     "-o", run, "-q"]) == 0
    predict = ["predict", model, "--weights", run, "--input", data, "-o", str(tmp_path / "p.npz")]
    assert cli.main(predict) == 3
    assert ("hint: the weights were trained with `-D hidden=8`; you passed no `-D` values: pass the same ones"
            in capsys.readouterr().err)
    assert cli.main([*predict, "-D", "hidden=8"]) == 0


FENCED = re.compile(r"^```.*?^```", re.M | re.S)  # code blocks, whose `#` lines are not headings
DOCS = ["README.md", "grammar/LANGUAGE.md", "editors/vscode/README.md",
        *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "examples").glob("*/README.md")))]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces to `-`."""
    headings = re.findall(r"^#+ (.*)$", FENCED.sub("", path.read_text(encoding="utf-8")), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("doc", DOCS)
def test_the_docs_links_resolve(doc):
    path = ROOT / doc
    text = FENCED.sub("", path.read_text(encoding="utf-8"))
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    assert not broken, f"{doc}: links that do not resolve: {broken}"
