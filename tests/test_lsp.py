"""`dslc lsp` end to end: a small JSON-RPC client starts the server as a process and talks the Language
Server Protocol with it over stdio, as an editor does.

Set `LSP_TRANSCRIPT=FILE` to write every message of the session (both ways) to FILE as JSON lines.
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("pygls", reason="the language server needs the `lsp` extra")

ROOT = Path(__file__).resolve().parents[1]

BROKEN = """\
model m(hidden = 32) {
    input  image: f32[B, 8, 8]
    target label: i64[B]

    logits = image |> dense(hidden) |> relu |> dense(10)
    output probs = softmax(logits)
}
"""

GOOD = """\
model m(hidden = 32) {
    input  image: f32[B, 64]
    target label: i64[B]

    logits = image |> dense(hidden) |> relu |> dense(10)
    output probs = softmax(logits)

    loss      cross_entropy(logits, label)
    optimizer adam(lr = 0.01)
}
"""


class Client:
    """A JSON-RPC 2.0 client over the server's stdin/stdout, with `Content-Length` framing."""

    def __init__(self, cwd: Path, env: dict[str, str]):
        self.process = subprocess.Popen([sys.executable, "-m", "dslc", "lsp"], cwd=cwd, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env={**os.environ, "PYTHONPATH": str(ROOT), **env})
        self.messages: queue.Queue = queue.Queue()
        self.transcript: list[tuple[str, dict]] = []
        self.notifications: list[dict] = []
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stream = self.process.stdout
        while True:
            headers = {}
            while True:
                line = stream.readline()
                if not line:
                    return
                line = line.decode("ascii").strip()
                if not line:
                    break
                key, _, value = line.partition(":")
                headers[key.lower()] = value.strip()
            body = json.loads(stream.read(int(headers["content-length"])))
            self.transcript.append(("server", body))
            self.messages.put(body)

    def send(self, message: dict) -> None:
        message = {"jsonrpc": "2.0", **message}
        self.transcript.append(("client", message))
        data = json.dumps(message).encode("utf-8")
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(data) + data)
        self.process.stdin.flush()

    def notify(self, method: str, params: dict) -> None:
        self.send({"method": method, "params": params})

    def request(self, method: str, params: dict, timeout: float = 60):
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        deadline = time.monotonic() + timeout
        while True:
            message = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if message.get("id") == self.next_id and "method" not in message:
                assert "error" not in message, message
                return message["result"]
            self.notifications.append(message)

    def notification(self, method: str, timeout: float = 60) -> dict:
        """The next notification `method` (one received already, or the next to come)."""
        for i, message in enumerate(self.notifications):
            if message.get("method") == method:
                return self.notifications.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            message = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if message.get("method") == method:
                return message
            self.notifications.append(message)

    def close(self) -> None:
        try:
            self.request("shutdown", None, timeout=10)
            self.notify("exit", None)
            self.process.wait(timeout=10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            if os.environ.get("LSP_TRANSCRIPT"):
                with open(os.environ["LSP_TRANSCRIPT"], "a", encoding="utf-8") as f:
                    for who, message in self.transcript:
                        f.write(json.dumps({"from": who, "message": message}) + "\n")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lsp")
    c = Client(folder, {"DSLC_LSP_DEBOUNCE": "0.3"})
    result = c.request("initialize", {"processId": os.getpid(), "rootUri": folder.as_uri(), "capabilities": {}})
    capabilities = result["capabilities"]
    assert capabilities["hoverProvider"] and capabilities["definitionProvider"]
    assert capabilities["documentFormattingProvider"] and capabilities["documentSymbolProvider"]
    assert "(" in capabilities["completionProvider"]["triggerCharacters"]
    c.notify("initialized", {})
    c.folder = folder
    yield c
    c.close()


def open_file(client: Client, name: str, text: str) -> str:
    path = client.folder / name
    path.write_text(text, encoding="utf-8")
    uri = path.as_uri()
    client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "dl", "version": 1,
                                                            "text": text}})
    return uri


def diagnostics_of(client: Client, uri: str) -> dict:
    while True:
        params = client.notification("textDocument/publishDiagnostics")["params"]
        if params["uri"] == uri:
            return params


def test_an_error_is_published_at_its_range(client):
    uri = open_file(client, "broken.dl", BROKEN)
    published = diagnostics_of(client, uri)
    (d,) = published["diagnostics"]
    assert d["message"].startswith("`dense` expects a 2-D input, got `f32[B, 8, 8]`")
    assert "hint: insert `flatten` before `dense`" in d["message"]
    assert d["severity"] == 1 and d["source"] == "dslc"
    assert d["range"] == {"start": {"line": 4, "character": 13}, "end": {"line": 4, "character": 18}}  # `image`
    assert BROKEN.splitlines()[4][13:18] == "image"


def test_hover_shows_the_inferred_shapes(client):
    uri = open_file(client, "good.dl", GOOD)
    assert diagnostics_of(client, uri)["diagnostics"] == []
    line = GOOD.splitlines()[4]  # logits = image |> dense(hidden) |> relu |> dense(10)
    hover = client.request("textDocument/hover", {"textDocument": {"uri": uri},
                                                  "position": {"line": 4, "character": line.index("dense") + 2}})
    text = hover["contents"]["value"]
    assert "`dense`: `f32[B, 64]` → `f32[B, 32]`" in text
    assert "`dense_0.weight`: `f32[64, 32]` (2,048)" in text and "2,080 parameters" in text
    assert "dense(x, units" in text  # the catalogue entry
    assert hover["range"] == {"start": {"line": 4, "character": line.index("dense")},
                              "end": {"line": 4, "character": line.index("dense") + 5}}
    value = client.request("textDocument/hover", {"textDocument": {"uri": uri},
                                                  "position": {"line": 5, "character": GOOD.splitlines()[5].index("logits") + 1}})
    assert value["contents"]["value"] == "`logits`: `f32[B, 10]`"
    relu = client.request("textDocument/hover", {"textDocument": {"uri": uri},
                                                 "position": {"line": 4, "character": line.index("relu")}})
    assert relu["contents"]["value"].startswith("`relu`: `f32[B, 32]` → `f32[B, 32]`")


def test_completion_offers_layers_and_keyword_arguments(client):
    uri = open_file(client, "complete.dl", GOOD)
    diagnostics_of(client, uri)
    line = GOOD.splitlines()[4]
    result = client.request("textDocument/completion", {"textDocument": {"uri": uri},
                                                        "position": {"line": 4, "character": line.index("hidden")}})
    labels = [item["label"] for item in result["items"]]
    assert "dense" in labels and "conv2d" in labels and "adam" in labels and "he" in labels
    assert labels[:4] == ["units =", "bias =", "init =", "bias_init ="]  # dense's keywords first
    outside = client.request("textDocument/completion", {"textDocument": {"uri": uri},
                                                         "position": {"line": 4, "character": 4}})
    outside = [i["label"] for i in outside["items"]]
    assert "dense" in outside and "units =" not in outside
    assert {"hidden", "image", "label", "logits", "probs"} <= set(outside)  # the model's names


def test_definition_symbols_and_formatting(client):
    uri = open_file(client, "nav.dl", GOOD.replace("    loss      cross", "    loss cross"))
    diagnostics_of(client, uri)
    target = client.request("textDocument/definition", {"textDocument": {"uri": uri},
                                                        "position": {"line": 7, "character": 27}})  # `logits`
    assert target["uri"] == uri and target["range"]["start"] == {"line": 4, "character": 4}
    symbols = client.request("textDocument/documentSymbol", {"textDocument": {"uri": uri}})
    (model,) = symbols
    assert model["name"] == "m" and [c["name"] for c in model["children"]] == ["hidden", "image", "label", "logits",
                                                                               "probs"]
    edits = client.request("textDocument/formatting", {"textDocument": {"uri": uri},
                                                       "options": {"tabSize": 4, "insertSpaces": True}})
    assert [e["newText"] for e in edits] == [GOOD]
    # a CRLF document keeps its line endings, as `dslc fmt` keeps a file's: none to make if it is formatted
    crlf = open_file(client, "crlf.dl", GOOD.replace("\n", "\r\n"))
    assert client.request("textDocument/formatting", {"textDocument": {"uri": crlf},
                                                      "options": {"tabSize": 4, "insertSpaces": True}}) == []


def test_notes_become_related_locations(client):
    text = GOOD.replace("    output probs", "    logits = image |> dense(10)\n    output probs")
    uri = open_file(client, "twice.dl", text)
    (d,) = diagnostics_of(client, uri)["diagnostics"]
    assert d["message"] == "`logits` is defined twice (defined again here)\nhint: give the new value another name"
    assert d["range"]["start"] == {"line": 5, "character": 4}
    (note,) = d["relatedInformation"]
    assert note["message"] == "first defined here"
    assert note["location"] == {"uri": uri, "range": {"start": {"line": 4, "character": 4},
                                                      "end": {"line": 4, "character": 10}}}


def test_a_warning_is_published_as_a_warning(client):
    text = GOOD.replace("output probs = softmax(logits)", "output p = logits |> sigmoid") \
        .replace("target label: i64[B]", "target label: f32[B, 10]") \
        .replace("cross_entropy(logits, label)", "binary_cross_entropy(p, label)")
    uri = open_file(client, "warn.dl", text)
    (d,) = diagnostics_of(client, uri)["diagnostics"]
    assert d["severity"] == 2 and d["message"].startswith("`binary_cross_entropy` applies the sigmoid itself")
    assert d["relatedInformation"][0]["message"] == "the `sigmoid` is here"


def test_changes_are_checked_once_after_a_burst(client):
    uri = open_file(client, "burst.dl", GOOD)
    diagnostics_of(client, uri)
    for version, text in enumerate([GOOD.replace("64", "8, 8"), GOOD.replace("dense(10)", "dense(1"), BROKEN], 2):
        client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                 "contentChanges": [{"text": text}]})
    published = diagnostics_of(client, uri)
    assert published["version"] == 4  # only the last text was checked
    assert published["diagnostics"][0]["range"]["start"] == {"line": 4, "character": 13}
    time.sleep(0.6)  # no other publication follows
    client.request("textDocument/hover", {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 0}})
    assert not [n for n in client.notifications if n.get("method") == "textDocument/publishDiagnostics"]


def test_an_imported_block_and_a_syntax_error(client):
    (client.folder / "lib.dl").write_text("block twice(x, width) {\n    return x |> dense(width) |> dense(width)\n}\n",
                                          encoding="utf-8")
    text = 'import "lib.dl"\n\nmodel u {\n    input  x: f32[B, 4]\n    output y = x |> twice(3)\n}\n'
    uri = open_file(client, "user.dl", text)
    assert diagnostics_of(client, uri)["diagnostics"] == []
    hover = client.request("textDocument/hover", {"textDocument": {"uri": uri},
                                                  "position": {"line": 4, "character": 22}})
    assert "`twice`: `f32[B, 4]` → `f32[B, 3]`" in hover["contents"]["value"]
    assert "27 parameters" in hover["contents"]["value"]  # 4·3 + 3 + 3·3 + 3
    target = client.request("textDocument/definition", {"textDocument": {"uri": uri},
                                                        "position": {"line": 4, "character": 22}})
    assert target["uri"] == (client.folder / "lib.dl").as_uri() and target["range"]["start"] == {"line": 0,
                                                                                                  "character": 6}
    imported = client.request("textDocument/definition", {"textDocument": {"uri": uri},
                                                          "position": {"line": 0, "character": 10}})  # "lib.dl"
    assert imported["uri"] == (client.folder / "lib.dl").as_uri() and imported["range"]["start"] == {"line": 0,
                                                                                                    "character": 0}
    client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                             "contentChanges": [{"text": text.replace("twice(3)", "twice(3")}]})
    (d,) = diagnostics_of(client, uri)["diagnostics"]
    assert d["message"] == "unexpected `}` (expected `,` or `)`)"
    assert d["range"] == {"start": {"line": 5, "character": 0}, "end": {"line": 5, "character": 1}}


def test_an_error_in_an_imported_file_is_shown_at_the_import_that_reads_it(client):
    # it was shown at the file's first import, whichever file it was in (and at 0:0 for a syntax error)
    (client.folder / "fine.dl").write_text("block same(x) {\n    return x\n}\n", encoding="utf-8")
    (client.folder / "outer.dl").write_text('import "inner.dl"\nblock outer(x) {\n    return x |> inner\n}\n',
                                            encoding="utf-8")
    (client.folder / "inner.dl").write_text("block inner(x) {\n    return x |> relux\n}\n", encoding="utf-8")
    text = 'import "fine.dl"\nimport "outer.dl"  # 😀\n\nmodel u {\n    input  x: f32[B, 4]\n    output y = x |> outer\n}\n'
    uri = open_file(client, "imports.dl", text)
    (d,) = diagnostics_of(client, uri)["diagnostics"]
    assert d["message"].startswith(f"{client.folder / 'inner.dl'}:2:17: unknown layer or function `relux`")
    assert d["range"] == {"start": {"line": 1, "character": 0}, "end": {"line": 1, "character": 17}}
    here = d["relatedInformation"][0]
    assert here["message"] == "the error is here" and here["location"] == {
        "uri": (client.folder / "inner.dl").as_uri(),
        "range": {"start": {"line": 1, "character": 16}, "end": {"line": 1, "character": 21}}}
    (client.folder / "inner.dl").write_text("block inner(x) {\n    return x |> relu |>\n}\n", encoding="utf-8")
    client.notify("textDocument/didSave", {"textDocument": {"uri": uri}})
    (d,) = diagnostics_of(client, uri)["diagnostics"]
    assert d["message"].startswith(f"{client.folder / 'inner.dl'}:3:1: unexpected `}}`")
    assert d["range"]["start"] == {"line": 1, "character": 0}
    # fixed and saved in the editor: the file importing it is checked again (it kept the error)
    inner = open_file(client, "inner.dl", "block inner(x) {\n    return x |> relu\n}\n")
    assert diagnostics_of(client, inner)["diagnostics"] == []
    client.notify("textDocument/didSave", {"textDocument": {"uri": inner}})
    assert diagnostics_of(client, uri)["diagnostics"] == []


@pytest.mark.parametrize("encoding, unit", [("utf-8", lambda t: len(t.encode("utf-8"))),
                                            ("utf-32", len)])
def test_positions_count_the_code_units_agreed_at_initialize(tmp_path, encoding, unit):
    # a client offering UTF-8 first (Neovim does) was told `positionEncoding: utf-8` and sent UTF-16 columns
    c = Client(tmp_path, {"DSLC_LSP_DEBOUNCE": "0.1"})
    c.folder = tmp_path
    try:
        result = c.request("initialize", {"processId": os.getpid(), "rootUri": tmp_path.as_uri(), "capabilities": {
            "general": {"positionEncodings": [encoding, "utf-16"]}}})
        assert result["capabilities"]["positionEncoding"] == encoding
        c.notify("initialized", {})
        line = '    output y = x |> dense(3, name = "é😀") |> dense(2, bogus = 1)'
        uri = open_file(c, "units.dl", "model m {\n    input  x: f32[B, 4]\n" + line + "\n}\n")
        (d,) = diagnostics_of(c, uri)["diagnostics"]
        start = line.index("name =")
        assert d["range"] == {"start": {"line": 2, "character": unit(line[:start])},
                              "end": {"line": 2, "character": unit(line[:line.index(")")])}}, d
        hover = c.request("textDocument/hover", {"textDocument": {"uri": uri}, "position": {
            "line": 2, "character": unit(line[:line.rindex("dense") + 2])}})
        assert hover["range"]["start"] == {"line": 2, "character": unit(line[:line.rindex("dense")])}
    finally:
        c.close()


def test_requests_about_a_file_that_cannot_be_read_answer_as_for_an_empty_one(client):
    # a document not open is read from disk: a missing file made pygls answer with an internal error and
    # the Python traceback in its `data`
    missing = {"uri": (client.folder / "gone.dl").as_uri()}
    at = {"textDocument": missing, "position": {"line": 0, "character": 0}}
    assert client.request("textDocument/hover", at) is None
    assert client.request("textDocument/definition", at) is None
    assert client.request("textDocument/documentSymbol", {"textDocument": missing}) == []
    assert client.request("textDocument/formatting", {"textDocument": missing, "options": {
        "tabSize": 4, "insertSpaces": True}}) == []
    assert "dense" in [item["label"] for item in client.request("textDocument/completion", at)["items"]]


def test_messages_before_initialize_get_the_specifications_answer(tmp_path):
    """A request before `initialize` is answered with ServerNotInitialized (-32002), a notification is
    dropped; then `initialize` and requests work as usual."""
    c = Client(tmp_path, {})
    model = tmp_path / "m.dl"
    model.write_text("model m { input x: f32[B, 2]\n output y = x |> dense(1) }\n", encoding="utf-8")
    doc = {"textDocument": {"uri": model.as_uri()}}
    c.notify("textDocument/didOpen", {"textDocument": {"uri": model.as_uri(), "languageId": "dl", "version": 1,
                                                       "text": model.read_text(encoding="utf-8")}})
    c.send({"id": 100, "method": "textDocument/documentSymbol", "params": doc})
    answer = c.messages.get(timeout=60)
    assert answer["id"] == 100 and answer["error"]["code"] == -32002 and "result" not in answer, answer
    assert "Traceback" not in json.dumps(answer)
    c.request("initialize", {"processId": os.getpid(), "rootUri": tmp_path.as_uri(), "capabilities": {}})
    c.notify("initialized", {})
    assert [s["name"] for s in c.request("textDocument/documentSymbol", doc)][:1] == ["m"]
    c.close()
    assert c.process.returncode == 0


def test_a_content_length_counting_characters_costs_one_message_not_the_session(tmp_path):
    """A client that counts characters instead of UTF-8 bytes sends a Content-Length too short for a
    message with non-ASCII text: that message gets a ParseError, and the next ones are read as usual
    (pygls's reader took every later message for part of a header and answered nothing more)."""
    c = Client(tmp_path, {})
    c.request("initialize", {"processId": os.getpid(), "rootUri": tmp_path.as_uri(), "capabilities": {}})
    c.notify("initialized", {})
    uri = (tmp_path / "café.dl").as_uri()
    text = json.dumps({"jsonrpc": "2.0", "id": 20, "method": "textDocument/hover",
                       "params": {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 0}},
                       "comment": "é😀 counted as characters"}, ensure_ascii=False)
    c.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(text) + text.encode("utf-8"))
    c.process.stdin.flush()
    answer = c.messages.get(timeout=60)
    assert answer["id"] is None and answer["error"]["code"] == -32700, answer
    assert c.request("textDocument/documentSymbol", {"textDocument": {"uri": uri}}) == []
    data = json.dumps({"jsonrpc": "2.0", "id": 21, "method": "textDocument/documentSymbol",
                       "params": {"textDocument": {"uri": uri}}}).encode()
    c.process.stdin.write(b"content-length:%d\r\n\r\n" % len(data) + data)  # HTTP's header rules
    c.process.stdin.flush()
    assert c.messages.get(timeout=60) == {"jsonrpc": "2.0", "id": 21, "result": []}
    c.close()
    assert c.process.returncode == 0
    short = len(text.encode("utf-8")) - len(text)
    assert f"dropped {short} bytes before a `Content-Length` header" in c.process.stderr.read().decode()


def test_a_request_after_shutdown_is_answered_with_invalid_request(tmp_path):
    # the specification's rule; pygls dropped it with a log line, so the client waited for the answer
    c = Client(tmp_path, {})
    c.request("initialize", {"processId": os.getpid(), "rootUri": tmp_path.as_uri(), "capabilities": {}})
    c.notify("initialized", {})
    assert c.request("shutdown", None) is None
    c.send({"id": 50, "method": "textDocument/documentSymbol",
            "params": {"textDocument": {"uri": (tmp_path / "m.dl").as_uri()}}})
    answer = c.messages.get(timeout=60)
    assert answer["id"] == 50 and answer["error"]["code"] == -32600, answer
    c.notify("exit", None)
    assert c.process.wait(timeout=30) == 0


def test_exit_without_shutdown_exits_with_1(tmp_path):
    # the protocol's rule; the server exited 0 (pygls's sys.exit(1) is swallowed by its loop)
    c = Client(tmp_path, {})
    c.request("initialize", {"processId": os.getpid(), "rootUri": tmp_path.as_uri(), "capabilities": {}})
    c.notify("initialized", {})
    c.notify("exit", None)
    assert c.process.wait(timeout=30) == 1
    c = Client(tmp_path, {})
    c.request("initialize", {"processId": os.getpid(), "rootUri": tmp_path.as_uri(), "capabilities": {}})
    c.close()
    assert c.process.returncode == 0


def test_messages_that_are_not_json_rpc_get_the_specifications_errors(tmp_path):
    """JSON-RPC 2.0's answers to a body that is not JSON (ParseError, id null), JSON that is not a request
    (InvalidRequest, with the request's id where it can be read) and params that do not fit the method
    (InvalidParams); a notification is not answered. pygls answered none of them (a `window/showMessage`
    "Error in server" and a traceback on stderr), so a client waiting for the id waited for ever."""
    c = Client(tmp_path, {})
    c.request("initialize", {"processId": os.getpid(), "rootUri": tmp_path.as_uri(), "capabilities": {}})
    c.notify("initialized", {})

    def answer_to(body: bytes) -> dict:
        c.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        c.process.stdin.flush()
        message = c.messages.get(timeout=60)
        assert "result" not in message and set(message) == {"jsonrpc", "id", "error"}, message
        return message

    cut = b'{"jsonrpc": "2.0", "id": 2, "method": "shutdown"'  # a Content-Length shorter than the message
    for body, code, id_ in [(cut, -32700, None), (b"\xff\xfe{}", -32700, None), (b"[1, 2]", -32600, None),
                            (b'"hello"', -32600, None), (b'{"jsonrpc": "2.0", "id": 7, "method": 5}', -32600, 7),
                            (b'{"jsonrpc": "1.0", "id": "a", "method": "shutdown"}', -32600, "a"),
                            (b'{"jsonrpc": "2.0", "id": 8, "method": "textDocument/hover", "params": {}}', -32602, 8),
                            (b'{"jsonrpc": "2.0", "id": 9, "method": "textDocument/hover"}', -32602, 9),
                            (b'{"jsonrpc": "2.0", "id": 10, "method": "dslc/unknown"}', -32601, 10)]:
        message = answer_to(body)
        assert (message["id"], message["error"]["code"]) == (id_, code), (body, message)
        if id_ == 8:
            assert "`textDocument/hover`" in message["error"]["message"], message
            assert "$.params.position" in message["error"]["message"], message
    assert "dslc/unknown" in message["error"]["message"]
    c.notify("textDocument/didOpen", {"x": 1})  # not answered: the next message is the next request's answer
    assert c.request("textDocument/documentSymbol", {"textDocument": {"uri": (tmp_path / "none.dl").as_uri()}}) == []
    c.close()
    assert c.process.returncode == 0
    stderr = c.process.stderr.read().decode()
    assert "Traceback" not in stderr and "Parse error: the message is not JSON" in stderr, stderr
