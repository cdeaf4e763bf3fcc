"""A Pygments lexer for `.dl` files, registered under the entry point `pygments.lexers` (name `dl`), so
that `pygmentize`, Sphinx and Markdown renderers that use Pygments highlight ```` ```dl ```` blocks.

The keywords and dtypes are those of grammar/dl.lark and `dslc.ir.types` (tests/test_highlight.py
compares); the lexer itself imports nothing of dslc, so that Pygments can load it cheaply.
"""
from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Whitespace

KEYWORDS = ("block", "callback", "import", "input", "loss", "metric", "model", "objective", "optimizer", "output",
            "repeat", "return", "target", "then", "update")
CONSTANTS = ("true", "false")
DTYPES = ("f32", "f64", "i32", "i64", "bool")
IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"


class DlLexer(RegexLexer):
    name = "dslc model"
    aliases = ["dl", "dslc"]
    filenames = ["*.dl"]

    tokens = {
        "root": [
            (r"[ \t\f\r\n]+", Whitespace),
            (r"#[^\n]*", Comment.Single),
            (r'"(\\.|[^"\\\n])*"', String.Double),
            (r"(model|block|objective)([ \t]+)(" + IDENTIFIER + ")", bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            (r"(input|target|output)([ \t]+)(" + IDENTIFIER + ")", bygroups(Keyword, Whitespace, Name.Variable)),
            (words(KEYWORDS, suffix=r"\b"), Keyword),
            (words(CONSTANTS, suffix=r"\b"), Keyword.Constant),
            (words(DTYPES, suffix=r"(?=\[)"), Keyword.Type),
            (r"\d+\.\d+([eE][+-]?\d+)?|\d+[eE][+-]?\d+", Number.Float),
            (r"\d+", Number.Integer),
            (IDENTIFIER + r"(?=\s*\()", Name.Function),
            (r"(" + IDENTIFIER + r")([ \t]*)(=)(?!=)", bygroups(Name.Variable, Whitespace, Operator)),
            (IDENTIFIER, Name),
            (r"\|>|<=|>=|==|!=|\.\.\.|[-+*/@<>=]", Operator),
            (r"[()\[\]{},:;]", Punctuation),
        ],
    }
