"""`dslc lsp`: the language server, on stdin/stdout, built on pygls (the `lsp` extra).

- diagnostics (errors and warnings with their hints and notes) when a document is opened or saved, and
  `DEBOUNCE` seconds after the last of a burst of changes;
- hover: the type the compiler inferred for a value, input or call, the parameters a layer call makes,
  and the catalogue entry of a built-in (`dslc.editor.analysis`);
- go to definition (names, blocks, imported files), document symbols, completion of the functions
  and of a call's keyword arguments, and formatting by `dslc fmt`.

Positions: the protocol counts code units in a line (UTF-16 unless the client and server agree on UTF-8 or
UTF-32 at `initialize`), the compiler characters in the file.
"""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException, JsonRpcServerNotInitialized
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.uris import from_fs_path

from dslc import __version__, standard_json
from dslc.builtins import load_all
from dslc.declared_callbacks import CALLBACKS
from dslc.diagnostics import Diagnostic, DslcError
from dslc.editor import jsonrpc
from dslc.editor.analysis import Analysis, analyze, catalogue_entry, import_leading_to
from dslc.editor.fmt import NotFormattable, format_text, in_the_written_style
from dslc.frontend.tokens import keywords
from dslc.initializers import INITIALIZERS
from dslc.optim import OPTIMIZERS
from dslc.source import SourceFile, Span

DEBOUNCE = float(os.environ.get("DSLC_LSP_DEBOUNCE", "0.3"))  # seconds of quiet before a changed file is checked
SYMBOL_KINDS = {"model": lsp.SymbolKind.Class, "block": lsp.SymbolKind.Function, "objective": lsp.SymbolKind.Namespace,
                "parameter": lsp.SymbolKind.Constant, "input": lsp.SymbolKind.Field, "target": lsp.SymbolKind.Field,
                "value": lsp.SymbolKind.Variable, "output": lsp.SymbolKind.Property}


# ---- positions -----------------------------------------------------------------------------------
# the length of a text in each position encoding's code units (the protocol's default is UTF-16; a client
# may offer others, and pygls picks the client's first choice: Neovim offers UTF-8 first)
CODE_UNITS = {"utf-8": lambda text: len(text.encode("utf-8")),
              "utf-16": lambda text: len(text.encode("utf-16-le")) // 2,
              "utf-32": len}


def position(source: SourceFile, offset: int, encoding: str) -> lsp.Position:
    line, col = source.line_col(offset)
    return lsp.Position(line - 1, CODE_UNITS[encoding](source.line_text(line)[:col - 1]))


def to_range(span: Span, encoding: str) -> lsp.Range:
    return lsp.Range(position(span.source, span.start, encoding),
                     position(span.source, max(span.start, span.end), encoding))


def offset_of(source: SourceFile, pos: lsp.Position, encoding: str) -> int:
    lines = source.text.split("\n")
    if pos.line >= len(lines):
        return len(source.text)
    start = sum(len(line) + 1 for line in lines[:pos.line])
    units = 0
    for i, ch in enumerate(lines[pos.line]):
        if units >= pos.character:
            return start + i
        units += CODE_UNITS[encoding](ch)
    return start + len(lines[pos.line])


def path_of(uri: str) -> str:
    return unquote(urlparse(uri).path)


# ---- the server ----------------------------------------------------------------------------------
class _Protocol(LanguageServerProtocol):
    """pygls's protocol with the specification's rules where pygls has none of its own: before
    `initialize` a request is answered with the error ServerNotInitialized (-32002) and a notification
    other than `exit` is dropped (pygls ran them, and a request about a document answered an internal
    error with its traceback); after `shutdown` a request is answered with InvalidRequest (pygls dropped
    it); a message that is not JSON-RPC gets JSON-RPC's answer (`dslc.editor.jsonrpc`)."""

    def _initialized(self) -> bool:
        return self._workspace is not None

    def _handle_request(self, msg_id, method_name, params):
        if method_name == lsp.INITIALIZE or self._initialized():
            return super()._handle_request(msg_id, method_name, params)
        error = JsonRpcServerNotInitialized(f"`{method_name}` before `initialize`: the server is not initialized")
        self._send_response(msg_id, None, error.to_response_error())

    def _handle_notification(self, method_name, params):
        if method_name == lsp.EXIT or self._initialized():
            return super()._handle_notification(method_name, params)

    # JSON that is not a message the server can read is answered as JSON-RPC says (`dslc.editor.jsonrpc`)
    def structure_message(self, data):
        if "jsonrpc" not in data:  # pygls's hook sees every object of a message; only the message has it
            return data
        why = jsonrpc.what_is_wrong(data)
        if why:
            return jsonrpc.invalid(data, why)
        if "method" in data and "params" not in data:  # JSON-RPC lets a request leave them out; pygls's
            data = {**data, "params": None}  # type of a method it does not know required them (InternalError)
        try:
            return super().structure_message(data)
        except JsonRpcException as e:
            return jsonrpc.not_fitting(data, e)

    def handle_message(self, message):
        if self._shutdown and isinstance(getattr(message, "id", None), (int, str)) and hasattr(message, "method"):
            # the specification's answer to a request after `shutdown`; pygls dropped it, and the client waited
            message = jsonrpc.Malformed(message.id, jsonrpc.INVALID_REQUEST,
                                        f"Invalid Request: `{message.method}` after `shutdown`")
        if not isinstance(message, jsonrpc.Malformed) and hasattr(message, "jsonrpc"):
            return super().handle_message(message)
        if not isinstance(message, jsonrpc.Malformed):  # an array, a string, an object without `jsonrpc`
            message = jsonrpc.invalid(message, jsonrpc.what_is_wrong(message) or "not a JSON-RPC 2.0 message")
        self.answer(message)

    def answer(self, malformed: jsonrpc.Malformed) -> None:
        jsonrpc.logger.warning("%s (%s)", malformed.message,
                               f"id {standard_json.dumps(malformed.id)}" if malformed.answer else "a notification: dropped")
        if malformed.answer:  # a dict: the converter of pygls's ResponseErrorMessage leaves out an `id` of null
            self._send_data(malformed.response())


class DlServer(LanguageServer):
    def __init__(self):
        super().__init__("dslc", __version__, text_document_sync_kind=lsp.TextDocumentSyncKind.Full,
                         protocol_cls=_Protocol)
        self.analyses: dict[str, tuple[int | None, Analysis]] = {}
        self.pending: dict[str, asyncio.TimerHandle] = {}
        self.shut_down = False

    def report_server_error(self, error: Exception, source) -> None:
        """A body that is not JSON gets a ParseError response (pygls showed the editor "Error in server")."""
        if jsonrpc.is_parse_error(error):
            return self.protocol.answer(jsonrpc.parse_error(error))
        super().report_server_error(error, source)

    @property
    def encoding(self) -> str:
        """The position encoding agreed with the client at `initialize`."""
        agreed = self.workspace.position_encoding or "utf-16"
        return getattr(agreed, "value", agreed)  # a `PositionEncodingKind`, or the string a client sent

    def text(self, uri: str) -> str:
        """The document's text: the editor's, or for a document not open, the file's ("" when it cannot be
        read: a request about a file deleted or not UTF-8 answers as for an empty one, where pygls
        answered with an internal error and its traceback)."""
        try:
            return self.workspace.get_text_document(uri).source
        except (OSError, UnicodeDecodeError):
            return ""

    def analysis(self, uri: str) -> Analysis:
        """The analysis of the document's current text (made now if the text changed since the last)."""
        document = self.workspace.get_text_document(uri)
        cached = self.analyses.get(uri)
        if cached is None or cached[0] != document.version or document.version is None:
            cached = (document.version, analyze(path_of(uri), self.text(uri)))
            self.analyses[uri] = cached
        return cached[1]

    def publish(self, uri: str, analysis: Analysis | None = None) -> None:
        document = self.workspace.get_text_document(uri)
        analysis = analysis or self.analysis(uri)
        diagnostics = [_diagnostic(d, analysis, self.encoding) for d in analysis.diagnostics]
        self.text_document_publish_diagnostics(
            lsp.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics, version=document.version))

    def publish_later(self, uri: str) -> None:
        """Check the document `DEBOUNCE` seconds from now, unless it changes again before: the compiler
        then runs in a worker thread, so that hover and completion keep answering meanwhile."""
        if uri in self.pending:
            self.pending[uri].cancel()
        loop = asyncio.get_running_loop()
        self.pending[uri] = loop.call_later(DEBOUNCE, lambda: loop.create_task(self._check(uri)))

    async def _check(self, uri: str) -> None:
        self.pending.pop(uri, None)
        version, text = self.workspace.get_text_document(uri).version, self.text(uri)
        analysis = await asyncio.get_running_loop().run_in_executor(None, analyze, path_of(uri), text)
        if self.workspace.get_text_document(uri).version != version:
            return  # changed meanwhile: the check of the newer text publishes
        self.analyses[uri] = (version, analysis)
        self.publish(uri, analysis)


def _diagnostic(d: Diagnostic, analysis: Analysis, encoding: str) -> lsp.Diagnostic:
    source = analysis.source
    message = d.message + (f" ({d.label})" if d.label else "") + (f"\nhint: {d.hint}" if d.hint else "")
    if d.span is not None and d.span.source.path == source.path:
        where = to_range(d.span, encoding)
    else:  # in an imported file (or of the whole file): shown at the import, with the place in the message
        if d.span is not None:
            message = f"{d.span.source.path}:{d.span.line}:{d.span.col}: {message}"
        imp = import_leading_to(source, d.span.source.path) if d.span is not None else None
        where = to_range(imp.span, encoding) if imp is not None else lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0))
    notes = list(d.notes)
    if d.span is not None and d.span.source.path != source.path:  # the place itself, for the editor to go to
        notes.insert(0, ("the error is here", d.span))
    related = [lsp.DiagnosticRelatedInformation(lsp.Location(from_fs_path(str(Path(span.source.path).resolve())),
                                                             to_range(span, encoding)), note) for note, span in notes]
    severity = lsp.DiagnosticSeverity.Warning if d.severity == "warning" else lsp.DiagnosticSeverity.Error
    return lsp.Diagnostic(range=where, message=message, severity=severity, source="dslc",
                          related_information=related or None)


server = DlServer()


@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: DlServer, params: lsp.DidOpenTextDocumentParams):
    ls.publish(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
async def did_save(ls: DlServer, params: lsp.DidSaveTextDocumentParams):
    # the saved file may be imported by the others open (and by itself, a file it imports may have
    # changed on disk): their analyses, cached by document version, would keep errors already fixed
    ls.analyses.clear()
    ls.publish(params.text_document.uri)
    for uri in ls.workspace.text_documents:
        if uri != params.text_document.uri:
            ls.publish_later(uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
async def did_change(ls: DlServer, params: lsp.DidChangeTextDocumentParams):
    ls.publish_later(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: DlServer, params: lsp.DidCloseTextDocumentParams):
    uri = params.text_document.uri
    if uri in ls.pending:
        ls.pending.pop(uri).cancel()
    ls.analyses.pop(uri, None)
    ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, diagnostics=[]))


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
def hover(ls: DlServer, params: lsp.HoverParams) -> lsp.Hover | None:
    analysis = ls.analysis(params.text_document.uri)
    found = analysis.hover(offset_of(analysis.source, params.position, ls.encoding))
    if found is None:
        return None
    text, span = found
    return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text),
                     range=to_range(span, ls.encoding))


@server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
def definition(ls: DlServer, params: lsp.DefinitionParams) -> lsp.Location | None:
    analysis = ls.analysis(params.text_document.uri)
    span = analysis.definition(offset_of(analysis.source, params.position, ls.encoding))
    if span is None:
        return None
    return lsp.Location(from_fs_path(str(Path(span.source.path).resolve())), to_range(span, ls.encoding))


@server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
def document_symbols(ls: DlServer, params: lsp.DocumentSymbolParams) -> list[lsp.DocumentSymbol]:
    def convert(symbol) -> lsp.DocumentSymbol:
        return lsp.DocumentSymbol(name=symbol.name, kind=SYMBOL_KINDS[symbol.kind], detail=symbol.kind,
                                  range=to_range(symbol.span, ls.encoding),
                                  selection_range=to_range(symbol.name_span, ls.encoding),
                                  children=[convert(c) for c in symbol.children])

    return [convert(s) for s in ls.analysis(params.text_document.uri).symbols()]


@server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=["(", ",", " "]))
def completion(ls: DlServer, params: lsp.CompletionParams) -> lsp.CompletionList:
    source = SourceFile.from_text(path_of(params.text_document.uri), ls.text(params.text_document.uri))
    cached = ls.analyses.get(params.text_document.uri)  # of the last text checked: the text being typed may not parse
    offset = offset_of(source, params.position, ls.encoding)
    items = completions(source.text[:offset], cached[1].blocks if cached else {})
    if cached:
        for symbol in cached[1].names_in_scope(offset):
            items.append(lsp.CompletionItem(label=symbol.name, kind=lsp.CompletionItemKind.Variable, detail=symbol.kind,
                                            sort_text=f"1{symbol.name}"))
    return lsp.CompletionList(is_incomplete=False, items=items)


@server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
def formatting(ls: DlServer, params: lsp.DocumentFormattingParams) -> list[lsp.TextEdit]:
    text = ls.text(params.text_document.uri)
    source = SourceFile.from_text(path_of(params.text_document.uri), text)
    try:
        formatted = in_the_written_style(format_text(text, source.path), text)  # CRLF stays, as `dslc fmt`
    except (DslcError, NotFormattable):
        return []  # a file that does not parse is left as it is; its diagnostics say why
    if formatted == text:
        return []
    end = position(source, len(source.text), ls.encoding)
    return [lsp.TextEdit(lsp.Range(lsp.Position(0, 0), end), formatted)]


# ---- completion ----------------------------------------------------------------------------------
def enclosing_call(before: str) -> str | None:
    """The name of the call whose parentheses are open at the end of `before`, if any."""
    depth = 0
    i = len(before) - 1
    in_string = False
    while i >= 0:
        ch = before[i]
        if ch == '"':
            in_string = not in_string
        elif not in_string and ch in ")]":
            depth += 1
        elif not in_string and ch in "([":
            if depth == 0:
                if ch == "[":
                    return None
                j = i
                while j > 0 and (before[j - 1].isalnum() or before[j - 1] == "_"):
                    j -= 1
                return before[j:i] or None
            depth -= 1
        elif ch == "\n" and before[:i].rstrip().endswith("{"):
            return None
        i -= 1
    return None


def completions(before: str, blocks: dict) -> list[lsp.CompletionItem]:
    """Keyword arguments of the call open at the cursor first, then the functions, blocks, initializers,
    optimizers and keywords."""
    items: list[lsp.CompletionItem] = []
    builtins = load_all()
    call = enclosing_call(before)
    if call is not None:
        if call in builtins:
            names = [p.name for p in builtins[call].signature.parameters.values()][1:]  # the first is the input
        elif call in OPTIMIZERS:
            names = list(OPTIMIZERS[call][0])
        elif call in CALLBACKS:
            names = list(CALLBACKS[call])
        elif call in INITIALIZERS:
            names = list(INITIALIZERS[call][0])
        elif call in blocks:
            names = [p.name for p in blocks[call].params][1:] + ["name"]
        else:
            names = []
        for name in names:
            items.append(lsp.CompletionItem(label=f"{name} =", kind=lsp.CompletionItemKind.Property,
                                            insert_text=f"{name} = ", sort_text=f"0{name}", detail=f"argument of `{call}`"))
    for name, fn in sorted(builtins.items()):
        items.append(lsp.CompletionItem(label=name, kind=lsp.CompletionItemKind.Function, detail=fn.usage(),
                                        documentation=lsp.MarkupContent(lsp.MarkupKind.Markdown, fn.doc),
                                        sort_text=f"1{name}"))
    for name in sorted(blocks):
        items.append(lsp.CompletionItem(label=name, kind=lsp.CompletionItemKind.Class, detail="block",
                                        documentation=lsp.MarkupContent(lsp.MarkupKind.Markdown,
                                                                        catalogue_entry(name, blocks)),
                                        sort_text=f"1{name}"))
    for name in INITIALIZERS:
        items.append(lsp.CompletionItem(label=name, kind=lsp.CompletionItemKind.Value, detail="initializer",
                                        sort_text=f"2{name}"))
    for name in OPTIMIZERS:
        items.append(lsp.CompletionItem(label=name, kind=lsp.CompletionItemKind.Constructor, detail="optimizer",
                                        sort_text=f"2{name}"))
    for name in CALLBACKS:
        items.append(lsp.CompletionItem(label=name, kind=lsp.CompletionItemKind.Event, detail="callback",
                                        documentation=lsp.MarkupContent(lsp.MarkupKind.Markdown,
                                                                        catalogue_entry(name, blocks)),
                                        sort_text=f"2{name}"))
    for word in keywords():
        items.append(lsp.CompletionItem(label=word, kind=lsp.CompletionItemKind.Keyword, sort_text=f"3{word}"))
    return items


@server.feature(lsp.SHUTDOWN)
def shutdown(ls: DlServer, params) -> None:
    ls.shut_down = True


def serve() -> int:
    """Run the server on stdin/stdout until the client exits; the exit code the protocol asks for: 0 after
    a `shutdown` request, else 1 (pygls exits with it through `sys.exit`, which its loop swallows)."""
    jsonrpc.drop_answered_tracebacks()
    server.start_io(stdin=jsonrpc.FramedInput(sys.stdin.buffer))
    return 0 if server.shut_down else 1
