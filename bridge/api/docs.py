"""GET /openapi.json (OpenAPI 3.1) and a readable /docs page, built from the route records."""

from __future__ import annotations

import re
from functools import lru_cache
from html import escape

from flask import Blueprint, Response, jsonify
from pydantic.json_schema import models_json_schema

from .. import bounds, idempotency
from ..schemas import ErrorObject
from ..streaming.events import EVENT_NAMES
from . import OPERATIONS

bp = Blueprint("docs", __name__)

_PATH_PARAM = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")
_ERRORS = {"400": "Bad request", "401": "Missing or invalid token", "404": "Not found",
           "429": "Over the caller's rate limit; see Retry-After"}
# Every authenticated POST takes an Idempotency-Key.
_IDEMPOTENT = {"409": "The request's Idempotency-Key is in use by a request still running",
               "422": "The request's Idempotency-Key was used with another body or path"}
_IDEMPOTENCY_KEY = {
    "name": idempotency.HEADER, "in": "header", "required": False,
    "description": "Makes the POST safe to repeat: the first response is replayed. "
                   f"A key is {idempotency.KEY_RULE}.",
    "schema": {"type": "string", "minLength": idempotency.MIN_KEY_LENGTH,
               "maxLength": idempotency.MAX_KEY_LENGTH, "pattern": idempotency.KEY_PATTERN}}
# Any request may be refused at the door (bridge/bounds.py), whatever its operation.
_BOUNDS = {"414": f"Request target over {bounds.MAX_TARGET_BYTES} bytes",
           "431": f"A header other than Authorization over {bounds.MAX_HEADER_BYTES} bytes"}
# With `"stream": true`, the run's events instead of the run object.
# With `"stream": true`, the run's events instead of the run object: the schema is one event's.
_EVENT_STREAM = {"schema": {
    "type": "object", "required": ["event", "data"],
    "description": (
        "Server-Sent Events: `event: <name>` and `data: <JSON>` per event, the Assistants v2 "
        "stream events (`thread.run.*`, `thread.run.step.*`, `thread.message.*`), "
        "`event: done` with `data: [DONE]` last."),
    "properties": {"event": {"type": "string", "enum": list(EVENT_NAMES)},
                   "data": {"type": "string"}}}}
_BODY_ERRORS = {"413": "Request body too large"}
_UPLOAD_ERRORS = {"413": "The file is over FILE_MAX_BYTES (`file_too_large`)"}
# A file's own bytes, whatever they are: the Content-Type is guessed from its filename.
_FILE_BYTES = {"*/*": {"schema": {
    "type": "string", "format": "binary",
    "description": "The file's bytes, as an attachment; the Content-Type is guessed from the "
                   "filename (application/octet-stream when it says nothing)."}}}
_LOCKED = {"409": "The thread has an active run"}
_ADMIN = {"403": "Needs an admin token"}
_LOCKING_OPERATIONS = {"create_message", "create_run"}


@lru_cache(maxsize=1)
def openapi_spec() -> dict:
    """The spec of every registered operation; the models are the ones that validate requests."""
    # Request bodies in validation mode, responses in serialization mode, all in one $defs.
    wanted = {(model, "validation") for op in OPERATIONS for model in (op.body, op.form)
              if model is not None}
    wanted |= {(op.response, "serialization") for op in OPERATIONS if op.response is not bytes}
    wanted.add((ErrorObject, "serialization"))
    refs, defs = models_json_schema(sorted(wanted, key=lambda item: (item[0].__name__, item[1])),
                                    ref_template="#/components/schemas/{model}")
    ref = {model: refs[(model, mode)] for model, mode in wanted}

    def errors(table: dict[str, str]) -> dict:
        return {code: {"description": text,
                       "content": {"application/json": {"schema": ref[ErrorObject]}}}
                for code, text in table.items()}

    paths: dict[str, dict] = {}
    for op in OPERATIONS:
        path = _PATH_PARAM.sub(r"{\1}", op.path)
        parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                      for name in _PATH_PARAM.findall(op.path)]
        if op.query is not None:
            schema = op.query.model_json_schema()
            for name, prop in schema["properties"].items():
                parameters.append({"name": name, "in": "query",
                                   "required": name in schema.get("required", []),
                                   "schema": prop})
        idempotent = op.idempotent
        if idempotent:
            parameters.append(_IDEMPOTENCY_KEY)
        if op.response is bytes:
            content = _FILE_BYTES
        else:
            content = {"application/json": {"schema": ref[op.response]}}
        if op.body is not None and "stream" in op.body.model_fields:
            content["text/event-stream"] = _EVENT_STREAM
        operation = {
            "operationId": op.operation_id, "summary": op.summary, "tags": [op.tag],
            "parameters": parameters,
            "responses": {
                str(op.status): {"description": "OK", "content": content},
                **(errors(_ERRORS) if op.auth else {}),
                **(errors(_BODY_ERRORS) if op.body is not None else {}),
                **(errors(_UPLOAD_ERRORS) if op.form is not None else {}),
                **(errors(_LOCKED) if op.operation_id in _LOCKING_OPERATIONS else {}),
                **(errors(_ADMIN) if op.admin else {}),
                **(errors(_IDEMPOTENT) if idempotent else {}),
                **errors(_BOUNDS),
            },
        }
        if op.body is not None:
            # An empty body stands for {}, so a body is required only when a field is.
            required = bool(op.body.model_json_schema().get("required"))
            operation["requestBody"] = {"required": required, "content": {
                "application/json": {"schema": ref[op.body]}}}
        if op.form is not None:
            operation["requestBody"] = {"required": True, "content": {
                "multipart/form-data": {"schema": ref[op.form]}}}
        if op.auth:
            operation["security"] = [{"bearerAuth": []}]
        paths.setdefault(path, {})[op.method] = operation

    return {
        "openapi": "3.1.0",
        "info": {"title": "assistants-bridge", "version": "1.0.0",
                 "description": "OpenAI's Assistants API v2, served per user over pluggable engines."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "bearerFormat": "JWT"}},
        },
    }


@bp.get("/openapi.json")
def openapi_json():
    """The OpenAPI 3.1 document."""
    return jsonify(openapi_spec())


@bp.get("/docs")
def docs_page():
    """A self-contained page listing every operation, its parameters and body fields."""
    spec = openapi_spec()
    schemas = spec["components"]["schemas"]
    rows = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            params = ", ".join(p["name"] for p in op["parameters"]) or "—"
            body_content = op.get("requestBody", {}).get("content", {})
            body_ref = next(iter(body_content.values()), {}).get("schema", {}).get("$ref", "")
            body = schemas.get(body_ref.rsplit("/", 1)[-1], {}) if body_ref else {}
            fields = ", ".join(body.get("properties", {})) or "—"
            rows.append(f"<tr><td><code>{method.upper()}</code></td><td><code>{escape(path)}</code>"
                        f"</td><td>{escape(op['summary'])}</td><td>{escape(params)}</td>"
                        f"<td>{escape(fields)}</td></tr>")
    html = (
        "<!doctype html><html><head><meta charset='utf-8'><title>assistants-bridge API</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2rem}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}"
        "</style></head><body><h1>assistants-bridge API</h1>"
        "<p>OpenAI's Assistants API v2 wire format under <code>/v1</code>. Send "
        "<code>Authorization: Bearer &lt;JWT&gt;</code>. The machine-readable spec is "
        "<a href='/openapi.json'>/openapi.json</a>.</p>"
        "<table><tr><th>Method</th><th>Path</th><th>What</th><th>Parameters</th>"
        f"<th>Body fields</th></tr>{''.join(rows)}</table></body></html>")
    return Response(html, mimetype="text/html")
