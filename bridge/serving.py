"""The gunicorn integration: what gunicorn refuses by itself is answered in our error envelope too.

Some requests never reach the app: a request line over `limit_request_line`, a header field over
`limit_request_field_size`, more headers than `limit_request_fields`, a malformed request line,
method, version or header, a bad Content-Length. gunicorn picks the status for each in
`Worker.handle_error`, logs it, and writes the answer with `gunicorn.util.write_error`, as an
HTML page. `install_error_writer` replaces that one writer, not a worker class: every worker class
(gthread, sync, the async ones) ends in it, so gunicorn keeps choosing statuses, logging and
closing the connection, whichever `-k` a deployment passes, and only the bytes on the wire change.

The answer keeps gunicorn's status and reason, is `Content-Type: application/json` with
`Connection: close`, and its message quotes at most MAX_DETAIL_CHARS of gunicorn's detail, which
can hold the client's own request line.

A body's framing (chunk sizes and terminators, trailers, a body shorter than its Content-Length)
is only checked while the app reads it: gunicorn raises into the view then, and
`register_errorhandlers` makes that the client's 400 rather than our 500. gunicorn closes such a
connection after the answer, since where the next request would start is unknown.
"""

from __future__ import annotations

import json

from flask import Flask
from gunicorn import util
from gunicorn.http.errors import LimitRequestHeaders, NoMoreData, ParseException

from .errors import error_response

MAX_DETAIL_CHARS = 120

# gunicorn's status -> our code and a sentence saying what was wrong with the request.
_REFUSALS = {
    400: ("malformed_request", "The server could not parse the request"),
    403: ("forbidden", "The request is forbidden"),
    414: ("uri_too_long", "The request line is longer than the server accepts"),
    417: ("expectation_failed", "The server cannot meet the request's Expect header"),
    431: ("header_too_large", "The request's headers are larger than the server accepts"),
    501: ("not_implemented", "The server does not support the request's transfer coding"),
}
# gunicorn says which header limit a 431 hit only in its message (gunicorn.http.message).
_TOO_MANY_HEADERS = "limit request headers fields'"
_SERVER_ERROR = "The server had an error while processing your request."


def _truncated(detail: str) -> str:
    detail = detail.strip()
    return detail[:MAX_DETAIL_CHARS] + "..." if len(detail) > MAX_DETAIL_CHARS else detail


def error_body(status: int, reason: str, detail: str) -> dict:
    """The envelope for one of gunicorn's own refusals; `detail` is gunicorn's message."""
    if status >= 500 and status not in _REFUSALS:
        # gunicorn's detail of its own failure is for its log, as the app's 500s are.
        return {"error": {"message": _SERVER_ERROR, "type": "server_error", "param": None,
                          "code": None}}
    code, summary = _REFUSALS.get(status, (None, reason))
    if status == 431 and detail.endswith(_TOO_MANY_HEADERS):
        code, summary = "too_many_headers", "The request has more headers than the server accepts"
    detail = _truncated(detail)
    message = f"{summary}: {detail}" if detail else f"{summary}."
    error_type = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def write_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """`gunicorn.util.write_error` with our JSON envelope instead of an HTML page."""
    body = json.dumps(error_body(status_int, reason, mesg), separators=(",", ":")).encode("ascii")
    head = (f"HTTP/1.1 {status_int} {reason}\r\n"
            "Connection: close\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


def install_error_writer() -> None:
    """Make gunicorn write its own refusals with `write_error` above; call from gunicorn.conf.py."""
    util.write_error = write_error


def register_errorhandlers(app: Flask) -> None:
    """A body gunicorn finds malformed while the view reads it is a 400 in the envelope."""

    @app.errorhandler(ParseException)
    @app.errorhandler(NoMoreData)
    def malformed_body(exc: Exception):
        if isinstance(exc, LimitRequestHeaders):  # the trailer section, after a chunked body
            return error_response(431, f"The request's trailers are larger than the server "
                                       f"accepts: {_truncated(str(exc))}", code="header_too_large")
        return error_response(400, f"The request body is malformed: {_truncated(str(exc))}",
                              code="malformed_request")
