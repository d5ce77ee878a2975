"""What every request leaves behind: a request id, one access log line, and CORS when asked for.

Settings read: CORS_ORIGINS, LOG_LEVEL, LOG_FORMAT, and OPENAI_API_KEY / JWT_SECRET_KEY (only to
redact them from log records).

- Request ids. An incoming `X-Request-ID` made of 1-128 characters of [A-Za-z0-9._:-] is kept,
  anything else is replaced by a fresh uuid4 hex. Every response carries it as `x-request-id`,
  `flask.g.request_id` holds it, and every record logged under "bridge" during the request gets
  it as the `request_id` field.
- Access log. One INFO record per request on "bridge.access", written when the request ends
  (errors and unhandled exceptions included), with the route template (never the concrete path),
  the status, the latency, the time spent in provider calls, the user id and the engine. Headers,
  query strings and bodies are never logged.
- Redaction. Every record that passes through the "bridge" logger has the configured provider
  key, the JWT secret, JWT-looking strings and `Bearer ...` values replaced by [REDACTED].
- CORS. Off unless CORS_ORIGINS names origins; then flask-cors answers /v1/*, /openapi.json and
  /chatkit for exactly those origins.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, current_app, g, has_request_context, request

if TYPE_CHECKING:
    from .config import Settings

ACCESS_LOGGER = "bridge.access"
REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_ENVIRON_KEY = "bridge.observability"

access_log = logging.getLogger(ACCESS_LOGGER)


# ---- per-request state -----------------------------------------------------------------------

@dataclass
class RequestStats:
    """What the access line reports; kept in the WSGI environ, so it is strictly per request."""

    request_id: str
    started: float
    upstream_seconds: float = 0.0
    upstream_calls: int = 0
    status: int | None = None
    logged: bool = False


def _incoming_request_id() -> str:
    value = request.headers.get(REQUEST_ID_HEADER, "")
    return value if _SANE_REQUEST_ID.fullmatch(value) else uuid.uuid4().hex


def _stats(create: bool = True) -> RequestStats | None:
    stats = request.environ.get(_ENVIRON_KEY)
    if stats is None and create:
        stats = request.environ[_ENVIRON_KEY] = RequestStats(_incoming_request_id(),
                                                             time.perf_counter())
        g.request_id = stats.request_id
    return stats


def current_request_id() -> str | None:
    """The id of the request being served, or None outside a request."""
    if not has_request_context():
        return None
    return _stats().request_id


def record_upstream_call(seconds: float) -> None:
    """Add one provider call to the current request's totals; a no-op outside requests.

    Called by `OpenAIUpstream.call`. Background threads (the run executor) have no request
    context, so their calls are not attributed to whichever request happens to be running.
    """
    if not has_request_context():
        return
    stats = _stats()
    stats.upstream_seconds += seconds
    stats.upstream_calls += 1


_CONVERTER = re.compile(r"<[^<>:]+:")


def route_template(rule: str) -> str:
    """A Flask rule as the log names it, without converters: `/v1/threads/<thread_id>`."""
    return _CONVERTER.sub("<", rule)


def _begin() -> None:
    stats = _stats()
    stats.started = time.perf_counter()


def _stamp(response: Response) -> Response:
    stats = _stats()
    response.headers["x-request-id"] = stats.request_id
    stats.status = response.status_code
    return response


def _user_id() -> str | None:
    """The verified user of the request; None when no token was verified. Never the token."""
    from .auth import current_user_id, verified_claims

    return current_user_id() if verified_claims() is not None else None


def _finish(exc: BaseException | None) -> None:
    stats = _stats()
    if stats.logged:
        return
    stats.logged = True
    rule = request.url_rule
    route = route_template(rule.rule) if rule is not None else "unmatched"
    method = request.method[:16]
    status = stats.status if stats.status is not None else 500
    engine = current_app.extensions.get("bridge.engine")
    fields = {
        "request_id": stats.request_id,
        "method": method,
        "route": route,
        "status": status,
        "latency_ms": round((time.perf_counter() - stats.started) * 1000, 2),
        "upstream_ms": round(stats.upstream_seconds * 1000, 2),
        "upstream_calls": stats.upstream_calls,
        "user": _user_id(),
        "engine": getattr(engine, "name", None),
    }
    access_log.info("%s %s %s", method, route, status, extra=fields)


# ---- redaction -----------------------------------------------------------------------------

_REDACTED = "[REDACTED]"
# Order matters: "Bearer <jwt>" is caught whole by the first alternative.
_ALWAYS = (
    r"(?P<bearer>\b[Bb][Ee][Aa][Rr][Ee][Rr]\s+)[^\s,;\"'<>]+",
    r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",  # a JWT: its header is base64 '{"'
    r"\b[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}",  # any other three-segment token
    r"\bsk-[A-Za-z0-9_*-]{8,}",  # OpenAI-style keys, the configured one or not
)
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName"}


class Redactor(logging.Filter):
    """Rewrites records in place so no secret leaves in any handler that comes after it."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        self._pattern = self._compile()

    def add_secret(self, secret: str | None) -> None:
        # Very short values would redact ordinary words; real keys are long.
        if not secret or len(secret) < 8 or secret in self._secrets:
            return
        with self._lock:
            self._secrets.add(secret)
            self._pattern = self._compile()

    def _compile(self) -> re.Pattern[str]:
        literal = [re.escape(s) for s in sorted(self._secrets, key=len, reverse=True)]
        return re.compile("|".join([*(f"(?:{p})" for p in literal), *_ALWAYS]))

    def redact(self, text: str) -> str:
        return self._pattern.sub(
            lambda m: (m.group("bearer") + _REDACTED) if m.group("bearer") else _REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == ACCESS_LOGGER:
            # Built by `_finish` from route templates, statuses, ids of a checked shape and
            # timings, never from what the client sent: nothing in it to redact.
            return True
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in _extras(record).items():
            if isinstance(value, str):
                setattr(record, key, self.redact(value))
        if not hasattr(record, "request_id") and has_request_context():
            stats = _stats(create=False)
            if stats is not None:
                record.request_id = stats.request_id
        return True


_redactor = Redactor()


# ---- formatting ----------------------------------------------------------------------------

def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items()
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc)
                            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = record.stack_info
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`; newlines in messages are escaped."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().replace("\r", "\\r").replace("\n", "\\n")
        parts = [f"{self.formatTime(record)} {record.levelname} {record.name}: {message}"]
        parts += [f"{key}={json.dumps(value, default=str)}" for key, value in _extras(record).items()]
        line = " ".join(parts)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


class _StderrHandler(logging.StreamHandler):
    """Writes to the process's standard error, file descriptor 2.

    Not to `sys.stderr`, which code may swap for a while (click's CliRunner, pytest's capsys):
    a record logged meanwhile by another thread, such as a request being served, would end up
    in whatever output that code is capturing.
    """

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        import sys

        return sys.__stderr__ or sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass

    def handle(self, record: logging.LogRecord) -> bool:
        """Format outside the handler's lock: request threads queue only for the write itself,
        not for each other's JSON formatting (logging.Handler holds the lock for both)."""
        if not self.filter(record):
            return False
        try:
            line = self.format(record) + self.terminator
            with self.lock:
                self.stream.write(line)
                self.stream.flush()
        except Exception:
            self.handleError(record)
        return True


_setup_lock = threading.Lock()


def configure_logging(settings: "Settings") -> logging.Handler:
    """Give the "bridge" logger its level, one stderr handler (once per process) and redaction.

    The handler sits on "bridge", so records of every "bridge.*" logger pass its redacting filter
    before they propagate to the root logger's handlers (a logger's own filters would only see
    records logged on that very logger). Records still propagate, so an application that
    configures the root logger, and pytest's caplog, see them too.
    """
    from flask.logging import default_handler

    logger = logging.getLogger("bridge")
    with _setup_lock:
        handler = next((h for h in logger.handlers if isinstance(h, _StderrHandler)), None)
        if handler is None:
            handler = _StderrHandler()
            handler.addFilter(_redactor)
            logger.handlers.insert(0, handler)
        if default_handler in logger.handlers:  # Flask's app.logger is "bridge" too
            logger.removeHandler(default_handler)
        handler.setFormatter(JsonFormatter() if settings.LOG_FORMAT == "json" else TextFormatter())
        logger.setLevel(settings.LOG_LEVEL)
    _redactor.add_secret(settings.OPENAI_API_KEY)
    _redactor.add_secret(settings.JWT_SECRET_KEY)
    return handler


# ---- CORS ----------------------------------------------------------------------------------

CORS_METHODS = ["GET", "POST", "DELETE", "OPTIONS"]
CORS_ALLOW_HEADERS = [
    "Authorization", "Content-Type", "Idempotency-Key", "OpenAI-Beta", "OpenAI-Organization",
    "OpenAI-Project", REQUEST_ID_HEADER,
    # The official JS SDK sends x-stainless-os, -arch, -lang, -runtime, -retry-count, ...
    re.compile(r"x-stainless-[a-z0-9-]+\Z", re.IGNORECASE),
]
CORS_EXPOSE_HEADERS = ["x-request-id", "openai-poll-after-ms", "Retry-After"]


def cors_origins(value: str) -> list[str]:
    """The origins of CORS_ORIGINS: comma-separated, blanks and trailing slashes dropped."""
    return [origin.strip().rstrip("/") or origin.strip() for origin in value.split(",")
            if origin.strip()]


def configure_cors(app: Flask, settings: "Settings") -> bool:
    """Turn CORS on for /v1/*, /openapi.json, /chatkit and its attachment uploads when
    CORS_ORIGINS is set; False when off."""
    origins = cors_origins(settings.CORS_ORIGINS)
    if not origins:
        return False
    from flask_cors import CORS

    wildcard = "*" in origins
    # Exact, case-insensitive matches: a configured origin is never read as a regular expression.
    allowed: Any = "*" if wildcard else [re.compile(re.escape(o) + r"\Z", re.IGNORECASE)
                                         for o in origins]
    CORS(app, resources={r"/v1/.*": {}, r"/openapi\.json\Z": {},
                         r"/chatkit(/attachments/[^/]+/upload)?\Z": {}},
         origins=allowed,
         send_wildcard=wildcard, methods=CORS_METHODS, allow_headers=CORS_ALLOW_HEADERS,
         expose_headers=CORS_EXPOSE_HEADERS, max_age=600, supports_credentials=False,
         always_send=False, vary_header=True,
         # Error responses go through after_request too; no need to wrap Flask's handlers.
         intercept_exceptions=False)
    return True


# ---- wiring --------------------------------------------------------------------------------

def init_app(app: Flask, settings: "Settings") -> None:
    """Logging, request ids, the access log and CORS. Call before other request hooks exist.

    The hooks registered here are the app's first: `before_request` runs before every other one,
    and `after_request` / `teardown_request` run after every other one.
    """
    configure_logging(settings)
    app.before_request(_begin)
    app.after_request(_stamp)
    app.teardown_request(_finish)
    configure_cors(app, settings)
