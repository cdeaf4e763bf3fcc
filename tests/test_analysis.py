"""What the language server shows, from `dslc.editor.analysis` directly: the compiler's inferred
types at each span, a block called with different shapes, the optimizer's settings, definitions and
symbols, and diagnostics of files with errors or without a model."""
from __future__ import annotations

from pathlib import Path

from dslc.editor.analysis import analyze

ROOT = Path(__file__).resolve().parents[1]

TWO_CALLS = """\
block project(x, width) {
    h = x |> linear(width)
    return h
}

model two(lr = 0.01) {
    input  a: f32[B, 4]
    input  b: f32[B, 6]
    output ya = a |> project(3)
    output yb = b |> project(5)
    loss      mean(ya) + mean(yb)
    optimizer sgd(lr = lr, momentum = 0.9)
}
"""


def hover_at(analysis, needle: str, shift: int = 0) -> str:
    found = analysis.hover(analysis.source.text.index(needle) + shift)
    return found[0] if found else ""


def test_a_block_called_with_two_shapes_shows_both(tmp_path):
    analysis = analyze(str(tmp_path / "two.dl"), TWO_CALLS)
    assert analysis.diagnostics == []
    assert hover_at(analysis, "h = x") == "`h`: one of, by call:\n- `f32[B, 3]`\n- `f32[B, 5]`"
    linear = hover_at(analysis, "linear")
    assert "`linear`: `f32[B, 4]` → `f32[B, 3]`" in linear and "`linear`: `f32[B, 6]` → `f32[B, 5]`" in linear
    assert "`project_1.linear_0.weight`: `f32[6, 5]` (30)" in linear
    assert hover_at(analysis, "sgd") == ("`sgd`: optimizer `sgd(lr = 0.01, momentum = 0.9, nesterov = false, "
                                         "weight_decay = 0.0, decay = 0.0, clip_norm = 0.0, clip_value = 0.0)`")
    assert hover_at(analysis, "lr, momentum").startswith("`lr`: `0.01`")
    assert hover_at(analysis, "lr = 0.01") == "`lr`: `0.01` (known when the model is built)"


def test_definitions_and_symbols(tmp_path):
    analysis = analyze(str(tmp_path / "two.dl"), TWO_CALLS)
    text = TWO_CALLS
    assert analysis.definition(text.index("h\n")).start == text.index("h = x")  # `return h`
    assert analysis.definition(text.index("project(3)")).start == text.index("project(x")
    (block, model) = analysis.symbols()
    assert (block.name, block.kind, [c.name for c in block.children]) == ("project", "block", ["x", "width", "h"])
    assert [(c.name, c.kind) for c in model.children] == [("lr", "parameter"), ("a", "input"), ("b", "input"),
                                                          ("ya", "output"), ("yb", "output")]


def test_errors_still_leave_the_rest_hoverable(tmp_path):
    text = TWO_CALLS.replace("output yb = b |> project(5)", "output yb = b |> projekt(5)")
    analysis = analyze(str(tmp_path / "two.dl"), text)
    (d,) = analysis.diagnostics
    assert d.message == "unknown layer or function `projekt`" and d.hint == "did you mean `project`?"
    assert hover_at(analysis, "ya =") == "`ya`: `f32[B, 3]`"


def test_a_file_of_blocks_is_checked_without_a_model():
    path = ROOT / "models" / "blocks" / "transformer.dl"
    analysis = analyze(str(path), path.read_text(encoding="utf-8"))
    assert analysis.diagnostics == []  # no "defines no model"
    assert hover_at(analysis, "attention(n").startswith("```\nattention(")  # the catalogue entry
    assert [s.name for s in analysis.symbols()] == ["feed_forward", "transformer_block"]


def test_a_repeated_block_is_shown_once_with_its_count():
    path = ROOT / "models" / "transformer_lm.dl"
    text = path.read_text(encoding="utf-8")
    analysis = analyze(str(path), text)
    shown = hover_at(analysis, "transformer_block(")
    assert shown.startswith("`transformer_block`: `f32[B, 64, 128]` → `f32[B, 64, 128]` (2 calls)\n")
    assert "- ... and 5 more\n- 198,144 parameters each" in shown
    # two layer norms, attention (the key without bias), the feed-forward network
    assert 2 * 128 * 2 + (4 * 128 * 128 + 3 * 128) + (128 * 512 + 512 + 512 * 128 + 128) == 198_144
    assert hover_at(analysis, "logits = h") == "`logits`: `f32[B, 64, 256]`"
