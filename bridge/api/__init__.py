"""HTTP routes. Views only translate HTTP: validate with a schema, call the engine, serialize.

`endpoint` registers a view together with the pydantic models it reads and writes; the same
records generate /openapi.json.
"""

from __future__ import annotations

import functools
import json
import types
from dataclasses import dataclass
from typing import Any, Callable, Union, get_args, get_origin

from flask import Blueprint, Flask, Response, current_app, g, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import BaseConverter

from ..auth import require_admin
from ..errors import InvalidRequest, validation_message
from ..files import too_large
from .bodies import check_body_bounds, too_deep_to_parse
from .guards import guarded


@dataclass(frozen=True)
class Operation:
    """One documented route, as the OpenAPI generator sees it."""

    path: str
    method: str
    operation_id: str
    summary: str
    tag: str
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: Any
    status: int
    auth: bool
    admin: bool
    # A multipart/form-data body (uploads), instead of a JSON `body`.
    form: type[BaseModel] | None = None

    @property
    def idempotent(self) -> bool:
        """Whether the operation takes an Idempotency-Key. An upload does not: its body is
        streamed to storage, never held whole for a fingerprint."""
        return self.auth and self.method == "post" and self.form is None


OPERATIONS: list[Operation] = []


def validate(model: type[BaseModel], data: Any) -> BaseModel:
    """Validate client input; a failure is the client's 400, naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message(exc)
        raise InvalidRequest(message, param=param) from None


def _is_list(annotation: Any) -> bool:
    if get_origin(annotation) is list:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_is_list(member) for member in get_args(annotation))
    return False


@functools.lru_cache(maxsize=None)
def _list_parameters(model: type[BaseModel]) -> frozenset[str]:
    """The query parameters of a model that take a list, by the name clients send."""
    return frozenset(field.alias or name for name, field in model.model_fields.items()
                     if _is_list(field.annotation))


def read_query(model: type[BaseModel]) -> BaseModel:
    """Validate the query string: a list parameter (`include[]=a&include[]=b`) takes every
    value it is given, any other parameter its first."""
    many = _list_parameters(model)
    args = request.args
    return validate(model, {key: args.getlist(key) if key in many else args[key] for key in args})


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _read_body() -> bytes:
    if request.content_length is not None:
        return request.get_data(cache=False)  # Werkzeug already refused one over the limit
    if "wsgi.input_terminated" not in request.environ:
        return b""  # no length and no server-side framing: nothing can be read safely
    # A chunked body declares no length: read one byte past the limit to tell.
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    stream, chunks, size = request.environ["wsgi.input"], [], 0
    while size <= limit:
        chunk = stream.read(min(64 * 1024, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise RequestEntityTooLarge()
    return b"".join(chunks)


def request_body() -> bytes:
    """The raw request body, read once: a guard that looks at it leaves it to the view."""
    if "request_body" not in g:
        g.request_body = _read_body()
    return g.request_body


def read_json_body(model: type[BaseModel]) -> BaseModel:
    """Parse the request body as a JSON object and validate it; an empty body is `{}`."""
    raw = request_body()
    if not raw.strip():
        data: Any = {}
    else:
        try:
            data = json.loads(raw, parse_constant=_refuse_constant)
        except RecursionError:
            raise too_deep_to_parse() from None
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequest(
                "We could not parse the JSON body of your request. The body must be valid JSON.",
                code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    check_body_bounds(data)
    return validate(model, data)


def read_form(model: type[BaseModel]) -> BaseModel:
    """Parse a multipart/form-data upload and validate its fields with `model`.

    The body may be as large as UPLOAD_CONTENT_LENGTH (a file of FILE_MAX_BYTES and the rest of
    the form), on this request only; the parser spools file parts to temporary files, so an
    upload is never held in memory. A field that is a file is given as the parser's
    FileStorage; a field of the model sent without a filename is refused, as is any other field.
    """
    if request.mimetype != "multipart/form-data":
        raise InvalidRequest("The request body must be multipart/form-data, with the file in "
                             "the 'file' part.", code="invalid_content_type")
    request.max_content_length = current_app.config["UPLOAD_CONTENT_LENGTH"]
    try:
        form, files = request.form, request.files
    except RequestEntityTooLarge:
        raise too_large(current_app.config["BRIDGE_SETTINGS"].FILE_MAX_BYTES) from None
    data: dict[str, Any] = {}
    for name in (*files, *form):
        if name not in model.model_fields:
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}",
                                 param=name[:64])
    for name in files:
        data[name] = files[name]
    for name in form:
        if name in data:
            continue
        if name == "file":
            raise InvalidRequest("Invalid value for 'file': it must be a file, a part sent with "
                                 "a filename.", param="file")
        data[name] = form[name]
    return validate(model, data)


def endpoint(bp: Blueprint, rule: str, method: str, *, summary: str, response: Any,
             body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
             form: type[BaseModel] | None = None, status: int = 200, auth: bool = True,
             admin: bool = False) -> Callable:
    """Register `view` on `bp` and record it for the spec.

    The view receives the path parameters, plus `body` (JSON), `form` (multipart) and/or
    `query` as validated models, and returns a pydantic model, a (model, headers) pair, or a
    Response of its own (a stream, a file's bytes: `response=bytes` documents the latter).
    `admin` routes refuse other callers before reading the body, so a non-admin learns nothing
    about the schema.
    """

    def decorator(view: Callable) -> Callable:
        def handle(**path_params):
            kwargs = dict(path_params)
            if admin:
                require_admin()
            if query is not None:
                kwargs["query"] = read_query(query)
            if body is not None:
                kwargs["body"] = read_json_body(body)
            if form is not None:
                kwargs["form"] = read_form(form)
            result = view(**kwargs)
            if isinstance(result, Response):
                return result  # a stream (bridge/api/streams.py)
            headers = {}
            if isinstance(result, tuple):
                result, headers = result
            # Serialised once, by pydantic-core, in the models' field order.
            reply = current_app.response_class(result.model_dump_json(), status=status,
                                               mimetype="application/json")
            reply.headers.update(headers)
            return reply

        operation = Operation(
            path=(bp.url_prefix or "") + rule, method=method.lower(),
            operation_id=view.__name__, summary=summary, tag=bp.name, body=body, query=query,
            response=response, status=status, auth=auth, admin=admin, form=form)

        @functools.wraps(view)
        def wrapper(**path_params):
            return guarded(operation, lambda: handle(**path_params))

        bp.add_url_rule(rule, view.__name__, wrapper, methods=[method])
        OPERATIONS.append(operation)
        return wrapper

    return decorator


class IdConverter(BaseConverter):
    """`<id:…>`: an object id that ends a path beside a route of its own, `/v1/threads/runs`.

    It matches any segment but `runs`, so that word belongs to `POST /v1/threads/runs` for every
    method: a GET there is a 405 naming POST, and OPTIONS advertises POST alone, instead of a
    lookup of thread "runs" and the methods of `/v1/threads/<thread_id>`. Any other malformed id
    still matches and gets the registry's 404, the same as a missing one.
    """

    regex = r"(?!runs\Z)[^/]+"


def register_blueprints(app: Flask) -> None:
    # One URL, one answer: werkzeug would answer `//` in a path with a 308 to the merged path.
    # Set before any rule is added, since each rule takes the map's setting when it is added.
    app.url_map.merge_slashes = False
    app.url_map.converters["id"] = IdConverter
    from . import assistants, docs, files, health, messages, runs, steps, threads, vector_stores

    for module in (health, docs, threads, messages, runs, steps, assistants, files,
                   vector_stores):
        app.register_blueprint(module.bp)
