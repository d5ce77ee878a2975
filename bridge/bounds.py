"""Bounds at the door: what a request may be before anything reads it.

Checked on every route before authentication, rate limits and the view, so an oversized request
costs nothing further and its answer still carries `x-request-id`:

- The request target (path and query string, as sent) is at most MAX_TARGET_BYTES: 414
  `uri_too_long`. The longest URL of the API, a cursor page of a thread's messages filtered by
  run, is under 300 bytes.
- Every header is at most MAX_HEADER_BYTES, name and value: 431 `header_too_large`, naming the
  header in `param`. Authorization is left to `bridge.auth`, whose 401 for a token over
  MAX_TOKEN_BYTES is what an OpenAI client expects from a bad key.

gunicorn.conf.py sets the HTTP server's own limits above these, so these are the ones clients
meet; what is beyond even those, gunicorn refuses itself (`bridge.serving` puts that in the same
envelope).
"""

from __future__ import annotations

from flask import Flask, request

from .errors import HeaderTooLarge, URITooLong

MAX_TARGET_BYTES = 4096
MAX_HEADER_BYTES = 8192
UNCHECKED_HEADERS = frozenset({"authorization"})  # bridge.auth answers for it


def _target_bytes() -> int:
    """The length of the request target as the client sent it."""
    # WSGI strings carry the request's bytes one character each (latin-1), so len() counts bytes.
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw is not None:
        return len(raw)
    query = request.environ.get("QUERY_STRING", "")
    return len(request.environ.get("PATH_INFO", "")) + (len(query) + 1 if query else 0)


def check_bounds() -> None:
    """Refuse a request whose target or a header is over its bound."""
    size = _target_bytes()
    if size > MAX_TARGET_BYTES:
        raise URITooLong(f"Request target too long: {size} bytes, the limit is "
                         f"{MAX_TARGET_BYTES}.", code="uri_too_long")
    for name, value in request.headers.items():
        if name.lower() in UNCHECKED_HEADERS:
            continue
        size = len(name) + len(value)
        if size > MAX_HEADER_BYTES:
            raise HeaderTooLarge(f"Header '{name[:64]}' too large: {size} bytes, the limit is "
                                 f"{MAX_HEADER_BYTES}.", param=name[:64], code="header_too_large")


def init_app(app: Flask) -> None:
    """Check the bounds first: call right after `observability.init_app`, before other hooks."""
    app.before_request(check_bounds)
