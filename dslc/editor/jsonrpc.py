"""What JSON-RPC 2.0 (section 5.1) answers to a message that is not one, for `dslc lsp`'s protocol class.

pygls's reader sent no response to a body that is not JSON, nor to JSON that is not a request (an array,
a string, a request whose `method` is not a string): it logged a traceback on stderr and showed the
editor "Error in server: ..." as a `window/showMessage`. The specification's answers are a response with
the error ParseError (-32700) or InvalidRequest (-32600), whose `id` is the request's when it can be
read and `null` otherwise; a request whose `params` do not fit its method gets InvalidParams (-32602).
A notification is never answered (an editor does not wait for one), unless it cannot be told apart from a
request: then the answer has the id `null`.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

from cattrs import ClassValidationError, transform_error

from dslc import standard_json

VERSION = "2.0"
PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS = -32700, -32600, -32602
logger = logging.getLogger("dslc.lsp")
CONTENT_LENGTH = re.compile(rb"content-length:[ \t]*(\d+)[ \t]*\r?\n$", re.IGNORECASE)


@dataclass(frozen=True)
class Malformed:
    """A JSON value read where a message was expected and not taken as one: the error `code` and
    `message` are the answer, for the request `id` (None: the id could not be read)."""
    id: int | str | None
    code: int
    message: str
    answer: bool = True  # False for a notification whose params do not fit: it is dropped

    def response(self) -> dict:
        return {"jsonrpc": VERSION, "id": self.id, "error": {"code": self.code, "message": self.message}}


def message_id(value) -> int | str | None:
    """The request id of a JSON value, if it has one the protocol allows (an integer or a string)."""
    if isinstance(value, dict) and isinstance(value.get("id"), (int, str)) and not isinstance(value["id"], bool):
        return value["id"]
    return None


def what_is_wrong(value) -> str | None:
    """Why a decoded JSON value is not a JSON-RPC 2.0 message, or None if its shape is one's."""
    if isinstance(value, list):
        return "a batch (a JSON array): the Language Server Protocol sends one message at a time"
    if not isinstance(value, dict):
        kind = {str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")
        return f"a JSON {kind}, not an object"
    if value.get("jsonrpc") != VERSION:
        return f"`jsonrpc` is {standard_json.dumps(value.get('jsonrpc'))}, not \"2.0\""
    if "id" in value and value["id"] is not None and message_id(value) is None:
        return "`id` is neither an integer nor a string"
    if "method" in value:
        if not isinstance(value["method"], str):
            return "`method` is not a string"
        if "params" in value and not isinstance(value["params"], (dict, list, type(None))):
            return "`params` is neither an object nor an array"
    elif "id" not in value:
        return "neither a request (`method`) nor a response (`id`)"
    elif not ("result" in value or "error" in value):
        return "`id` without `method`, `result` or `error`"
    return None


def invalid(value, why: str) -> Malformed:
    return Malformed(message_id(value), INVALID_REQUEST, f"Invalid Request: {why}")


def not_fitting(value, error: Exception) -> Malformed:
    """A message of the right shape that pygls could not read (its `JsonRpcException` raised from the
    converter's error): the params do not fit the method, with what is wrong, or the exception's own
    code and message."""
    is_request = "method" in value and message_id(value) is not None
    cause = error.__cause__
    if isinstance(cause, ClassValidationError):
        # the converter names the Python attributes (`text_document`); the client wrote `textDocument`
        where = "; ".join(re.sub(r"_([a-z])", lambda m: m.group(1).upper(), e) for e in transform_error(cause))
        return Malformed(message_id(value), INVALID_PARAMS,
                         f"Invalid Params of `{value.get('method', 'the response')}`: {where}", answer=is_request)
    return Malformed(message_id(value), error.code, error.message, answer=is_request)


def parse_error(error: ValueError) -> Malformed:
    return Malformed(None, PARSE_ERROR, f"Parse error: the message is not JSON ({error})")


def is_parse_error(error: Exception) -> bool:
    """Whether the reader's `json.loads` of a body failed (not UTF-8 text, or not JSON)."""
    return isinstance(error, (json.JSONDecodeError, UnicodeDecodeError))


class FramedInput:
    """The server's stdin, read by pygls's loop a header line at a time: a header line with bytes before
    its `Content-Length:` (the rest of a body whose `Content-Length` was too short, as from a client that
    counts characters instead of UTF-8 bytes) is read from `Content-Length:` on. pygls's loop, which only
    takes a line that starts with it, then read every later message as part of a header and answered
    nothing more; now the short body gets its ParseError and the next message is read as it should be.
    The header's name is read case-insensitively, the space after its colon optional (HTTP's rules, which
    the protocol's header part follows); pygls waited for ever on `content-length: 52`."""

    def __init__(self, stream):
        self.stream = stream

    def readline(self) -> bytes:
        line = self.stream.readline()
        header = CONTENT_LENGTH.search(line)
        if header is None:
            return line
        if header.start() > 0:
            logger.warning("dropped %d bytes before a `Content-Length` header (the rest of a body longer than its "
                           "`Content-Length` said)", header.start())
        # as pygls's loop takes it; header names are case-insensitive and the space optional, as in HTTP
        return b"Content-Length: %s\r\n" % header.group(1)

    def read(self, n: int) -> bytes:
        return self.stream.read(n)


class DropAnsweredTracebacks(logging.Filter):
    """Drops pygls's tracebacks for a body that is not JSON (its reader's) and for params that do not fit
    (its converter's): the client gets the answer above, and the server's log one line (`logger`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and is_parse_error(record.exc_info[1]):
            return False
        return not str(record.msg).startswith("Unable to deserialize message")


def drop_answered_tracebacks() -> None:
    for name in ("pygls.server", "pygls.protocol.json_rpc"):
        logging.getLogger(name).addFilter(DropAnsweredTracebacks())
