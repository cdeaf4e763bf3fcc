"""The language in the editor: the formatter (`dslc fmt`), the language server (`dslc lsp`) and the
Pygments lexer. Nothing in the compiler imports this package."""
