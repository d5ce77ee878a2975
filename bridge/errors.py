"""One JSON error envelope for everything: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import logging
import re

from flask import Flask, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from .engines.base import EngineError, UpstreamRateLimited

log = logging.getLogger(__name__)


class APIError(Exception):
    """An error the client sees, with the status and envelope fields OpenAI used."""

    status = 400
    type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}


class InvalidRequest(APIError):
    status = 400


class Unauthorized(APIError):
    status = 401
    type = "invalid_request_error"


class Forbidden(APIError):
    status = 403


class NotFound(APIError):
    status = 404


class Conflict(APIError):
    status = 409


class PayloadTooLarge(APIError):
    status = 413


class URITooLong(APIError):
    status = 414


class HeaderTooLarge(APIError):
    status = 431


class TooManyRequests(APIError):
    """The caller's own per-user rate limit (the provider's 429 is a 503 instead)."""

    status = 429
    type = "requests"  # OpenAI's type for request-count limits ("tokens" for token limits)


class ServiceUnavailable(APIError):
    status = 503
    type = "server_error"


def error_response(status: int, message: str, *, type: str = "invalid_request_error",
                   param: str | None = None, code: str | None = None, headers=None):
    """Build the envelope response; every error path ends here."""
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


# A field, or a list parameter of a query string as clients name it (`include[]`).
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[\])?$")


def _location(error: dict) -> str | None:
    # pydantic's own labels in a location (union branches such as "plain-text", "[key]") are not
    # fields the client sent, so `param` leaves them out.
    parts = [str(p) for p in error.get("loc", ())
             if isinstance(p, int) or _FIELD_NAME.match(str(p))]
    return ".".join(parts) or None


def validation_message(exc: ValidationError) -> tuple[str, str | None]:
    """A short message naming the first offending field, as OpenAI's 400s did."""
    first = exc.errors(include_url=False)[0]
    param = _location(first)
    reason = first.get("msg", "is invalid")
    if first.get("type") == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", param
    if first.get("type") == "reserved_key":
        key = first["ctx"]["key"]
        param = f"{param}.{key}" if param else key
        return f"Invalid value for '{param}': {reason}.", param
    if first.get("type") == "missing":
        return f"Missing required parameter: '{param}'.", param
    return (f"Invalid value for '{param}': {reason}." if param else f"Invalid request: {reason}."), param


def register_errorhandlers(app: Flask) -> None:
    """Route every failure, expected or not, into the envelope."""

    @app.errorhandler(APIError)
    def handle_api_error(exc: APIError):
        return error_response(exc.status, exc.message, type=exc.type, param=exc.param,
                              code=exc.code, headers=exc.headers)

    @app.errorhandler(EngineError)
    def handle_engine_error(exc: EngineError):
        log.warning("upstream failure: %s", exc.log_detail)
        headers = {}
        if isinstance(exc, UpstreamRateLimited) and exc.retry_after is not None:
            headers["Retry-After"] = str(exc.retry_after)
        return error_response(exc.status, exc.public_message, type="server_error",
                              code=exc.code, headers=headers)

    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException):
        status = exc.code or 500
        messages = {
            404: "Not found.",
            405: "Method not allowed.",
            413: f"Request body too large: the limit is {app.config['MAX_CONTENT_LENGTH']} bytes.",
        }
        message = messages.get(status) or exc.description or exc.name
        headers = {}
        valid_methods = getattr(exc, "valid_methods", None)
        if status == 405 and valid_methods:
            headers["Allow"] = ", ".join(sorted(valid_methods))
        error_type = "server_error" if status >= 500 else "invalid_request_error"
        return error_response(status, message, type=error_type, headers=headers)

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "The server had an error while processing your request.",
                              type="server_error")
