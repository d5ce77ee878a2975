"""A stateful fake of OpenAI (Conversations, Responses, Assistants v2, Chat Completions, Files, Vector
Stores and `file_search`) for the real SDK."""

from __future__ import annotations

import copy
import io
import json
import random
import re
import socket
import threading
import time
import uuid
import weakref
from collections import Counter, deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, NamedTuple
from urllib.parse import parse_qs, urlsplit

from werkzeug.formparser import parse_form_data

from . import retrieval
from .chat_server import (MODELS, LoopbackFake, _chat_frames, _chunks, _completion, _error, _Handler,
                          _HTTPServer, _include_usage, _Response, _validate)
from .sse import EventLog, Stream, follow, pieces

REPLY_KEYS = frozenset({"content", "function_calls", "usage", "status", "error"})
# Scripted end states besides "completed": a failed or a length-cut (incomplete) model output.
SCRIPTED_STATUSES = ("completed", "failed", "incomplete")
RESPONSE_ACTIVE = ("queued", "in_progress")
RUN_ACTIVE = ("queued", "in_progress", "requires_action", "cancelling")
MESSAGE_ROLES = ("user", "assistant", "system", "developer")
ASSISTANT_TOOLS = ("code_interpreter", "file_search", "function")
FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ASSISTANT_FIELDS = ("name", "description", "instructions", "temperature", "top_p", "response_format",
                    "tool_resources")
FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
RESPONSE_INCLUDABLE = ("file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
                       "message.input_image.image_url", "computer_call_output.output.image_url",
                       "code_interpreter_call.outputs", "reasoning.encrypted_content",
                       "message.output_text.logprobs")
STEP_CONTENT = "step_details.tool_calls[*].file_search.results[*].content"
SEARCH_RESULTS = "file_search_call.results"
# How many results a search returns unless told: OpenAI's defaults for a store search and Responses,
# and for Assistants on its gpt-4 models.
DEFAULT_MAX_RESULTS = 10
ASSISTANT_MAX_RESULTS = 20
ASSISTANT_RANKER = "default_2024_08_21"
NOTHING_FOUND = "The files say nothing about that."
# Where an Assistants reply cites its best result, as OpenAI marks citations: 【message:result†file】.
CITATION_MARK = "【4:0†{filename}】"
_INVALID_JSON = object()

# (method, route template, handler method name); the route template is also the key of calls().
ROUTES = (
    ("GET", "/v1/models", "_models"),
    ("POST", "/v1/chat/completions", "_chat"),
    ("POST", "/v1/conversations", "_conversation_create"),
    ("GET", "/v1/conversations/{id}", "_conversation_get"),
    ("POST", "/v1/conversations/{id}", "_conversation_update"),
    ("DELETE", "/v1/conversations/{id}", "_conversation_delete"),
    ("POST", "/v1/conversations/{id}/items", "_items_create"),
    ("GET", "/v1/conversations/{id}/items", "_items_list"),
    ("GET", "/v1/conversations/{id}/items/{item_id}", "_item_get"),
    ("DELETE", "/v1/conversations/{id}/items/{item_id}", "_item_delete"),
    ("POST", "/v1/responses", "_response_create"),
    ("GET", "/v1/responses/{id}", "_response_get"),
    ("POST", "/v1/responses/{id}/cancel", "_response_cancel"),
    ("POST", "/v1/assistants", "_assistant_create"),
    ("GET", "/v1/assistants", "_assistant_list"),
    ("GET", "/v1/assistants/{id}", "_assistant_get"),
    ("POST", "/v1/assistants/{id}", "_assistant_update"),
    ("DELETE", "/v1/assistants/{id}", "_assistant_delete"),
    ("POST", "/v1/threads", "_thread_create"),
    # Before the /v1/threads/{id} routes, which would take "runs" for a thread id.
    ("POST", "/v1/threads/runs", "_thread_create_and_run"),
    ("GET", "/v1/threads/{id}", "_thread_get"),
    ("POST", "/v1/threads/{id}", "_thread_update"),
    ("DELETE", "/v1/threads/{id}", "_thread_delete"),
    ("POST", "/v1/threads/{id}/messages", "_message_create"),
    ("GET", "/v1/threads/{id}/messages", "_message_list"),
    ("GET", "/v1/threads/{id}/messages/{message_id}", "_message_get"),
    ("POST", "/v1/threads/{id}/messages/{message_id}", "_message_update"),
    ("DELETE", "/v1/threads/{id}/messages/{message_id}", "_message_delete"),
    ("POST", "/v1/threads/{id}/runs", "_run_create"),
    ("GET", "/v1/threads/{id}/runs", "_run_list"),
    ("GET", "/v1/threads/{id}/runs/{run_id}", "_run_get"),
    ("POST", "/v1/threads/{id}/runs/{run_id}", "_run_update"),
    ("POST", "/v1/threads/{id}/runs/{run_id}/cancel", "_run_cancel"),
    ("POST", "/v1/threads/{id}/runs/{run_id}/submit_tool_outputs", "_run_submit_tool_outputs"),
    ("GET", "/v1/threads/{id}/runs/{run_id}/steps", "_step_list"),
    ("GET", "/v1/threads/{id}/runs/{run_id}/steps/{step_id}", "_step_get"),
    ("POST", "/v1/files", "_file_create"),
    ("GET", "/v1/files", "_file_list"),
    ("GET", "/v1/files/{id}", "_file_get"),
    ("DELETE", "/v1/files/{id}", "_file_delete"),
    ("GET", "/v1/files/{id}/content", "_file_content"),
    ("POST", "/v1/vector_stores", "_store_create"),
    ("GET", "/v1/vector_stores", "_store_list"),
    ("GET", "/v1/vector_stores/{id}", "_store_get"),
    ("POST", "/v1/vector_stores/{id}", "_store_update"),
    ("DELETE", "/v1/vector_stores/{id}", "_store_delete"),
    ("POST", "/v1/vector_stores/{id}/search", "_store_search"),
    ("POST", "/v1/vector_stores/{id}/files", "_store_file_create"),
    ("GET", "/v1/vector_stores/{id}/files", "_store_file_list"),
    ("GET", "/v1/vector_stores/{id}/files/{file_id}", "_store_file_get"),
    ("POST", "/v1/vector_stores/{id}/files/{file_id}", "_store_file_update"),
    ("DELETE", "/v1/vector_stores/{id}/files/{file_id}", "_store_file_delete"),
    ("GET", "/v1/vector_stores/{id}/files/{file_id}/content", "_store_file_content"),
    ("POST", "/v1/vector_stores/{id}/file_batches", "_batch_create"),
    ("GET", "/v1/vector_stores/{id}/file_batches/{batch_id}", "_batch_get"),
    ("POST", "/v1/vector_stores/{id}/file_batches/{batch_id}/cancel", "_batch_cancel"),
    ("GET", "/v1/vector_stores/{id}/file_batches/{batch_id}/files", "_batch_files"),
)
ROUTE_KEYS = frozenset(f"{method} {template}" for method, template, _ in ROUTES)
_PATTERNS = [
    (method, template, name, re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "([^/]+)", re.escape(template)) + "$"))
    for method, template, name in ROUTES
]


class _Reject(Exception):
    """Abort a request with an error answer."""

    def __init__(self, response: _Response):
        super().__init__(response.body["error"]["message"])
        self.response = response


@dataclass
class _Request:
    """A parsed, authenticated request."""

    body: dict[str, Any]
    query: dict[str, str]
    # Every value of each query parameter, for the repeated ones (`include[]`).
    lists: dict[str, list[str]] = field(default_factory=dict)

    def includes(self, allowed: tuple[str, ...]) -> frozenset[str]:
        """The query's `include[]` values, each one of `allowed`."""
        values = self.lists.get("include[]", []) + self.lists.get("include", [])
        for value in values:
            if value not in allowed:
                raise _bad(f"Invalid value for 'include[]': {value!r}. Supported values are: "
                           f"{', '.join(allowed)}.", "include", "invalid_value")
        return frozenset(values)


@dataclass
class _Upload:
    """The file part of a multipart/form-data body."""

    filename: str
    data: bytes


@dataclass
class _Bytes:
    """An HTTP answer whose body is raw bytes: a file's content."""

    data: bytes
    content_type: str = "application/octet-stream"


@dataclass
class _Fault:
    """One injected fault: fail with a status, answer late, or drop the connection."""

    kind: str
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class _FaultRates:
    """Random faults: each request (on `routes`, or any) draws one of them with these probabilities."""

    error_5xx: float
    rate_limited: float
    timeout: float
    timeout_seconds: float
    retry_after: float
    statuses: tuple[int, ...]
    routes: frozenset[str] | None
    rng: random.Random


@dataclass
class _Job:
    """A response or run in the works, with what its worker needs."""

    obj: dict[str, Any]
    t0: float
    releases: int
    epoch: int
    conversation: str | None = None
    thread: str | None = None
    stored: bool = True
    context: list[dict[str, Any]] = field(default_factory=list)
    # The events of the stream that follows this work, when it was asked for with "stream": true (a run
    # has one per stretch: from its start, or from submitted tool outputs, to a pause or its end).
    log: EventLog | None = None
    # A run's steps, in order.
    steps: list[dict[str, Any]] = field(default_factory=list)
    # Tool outputs submitted to a run, by call id, until its tool_calls step records them.
    tool_outputs: dict[str, str] = field(default_factory=dict)
    # What the request asked to include: Responses' `include`, a run's `include[]`.
    include: frozenset[str] = frozenset()
    # A response's `file_search` tool, when its model is to search.
    search: dict[str, Any] | None = None
    # A run's `tool_choice` as asked for, and the tool resources it was started with (create-and-run).
    tool_choice: Any = None
    tool_resources: dict[str, Any] | None = None


class _Event(NamedTuple):
    """A stream event of model output; `piece` marks the text or argument pieces streams are paced by."""

    kind: str
    payload: dict[str, Any]
    piece: bool = False


@dataclass
class _Conversation:
    """A conversation, its items in order and its in-flight response."""

    obj: dict[str, Any]
    items: list[dict[str, Any]] = field(default_factory=list)
    active: str | None = None


@dataclass
class _Thread:
    """A thread, its messages in order, its runs and its active run."""

    obj: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)
    runs: dict[str, _Job] = field(default_factory=dict)
    active: str | None = None
    # Vector stores its tool resources ask to be made of files, made once the thread is stored.
    inline_stores: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _File:
    """An uploaded file and its bytes."""

    obj: dict[str, Any]
    data: bytes


@dataclass
class _Batch:
    """A vector store's file batch and the files it added."""

    obj: dict[str, Any]
    file_ids: list[str]


@dataclass
class _VectorStore:
    """A vector store: its files' vector_store.file objects and their chunks, and its file batches.

    A file's chunks are cut when it is added (ingestion is instant), from the text it had then.
    """

    obj: dict[str, Any]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    chunks: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # file id -> (filename, chunks)
    batches: dict[str, _Batch] = field(default_factory=dict)


def _id(prefix: str) -> str:
    """Return a fresh OpenAI-style object id."""
    return f"{prefix}_{uuid.uuid4().hex}"


def _now() -> int:
    """Return the Unix time in whole seconds."""
    return int(time.time())


def _bad(message: str, param: str | None = None, code: str | None = None) -> _Reject:
    """Build a 400 rejection."""
    return _Reject(_error(400, message, param, code))


def _missing(param: str) -> _Reject:
    """Build the rejection of a request lacking a required parameter."""
    return _bad(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _not_found(kind: str, object_id: str, param: str | None = None) -> _Reject:
    """Build the 404 rejection of an unknown id."""
    return _Reject(_error(404, f"No {kind} found with id '{object_id}'.", param))


def _invalid_type(param: str, expected: str) -> _Reject:
    """Build the rejection of a parameter of the wrong type."""
    return _bad(f"Invalid type for '{param}': expected {expected}.", param, "invalid_type")


def _words(text: str) -> int:
    """Count whitespace-separated words."""
    return len(text.split())


def _metadata(value: Any, param: str = "metadata") -> dict[str, str]:
    """Validate metadata as OpenAI does and return it ({} for None)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid_type(param, "an object")
    if len(value) > 16:
        raise _bad(f"Invalid '{param}': too many properties. Expected an object with at most 16 properties, "
                   f"but got an object with {len(value)} properties instead.", param, "object_above_max_properties")
    for key, item in value.items():
        if len(key) > 64:
            raise _bad(f"Invalid '{param}': key {key!r} is too long; keys have at most 64 characters.",
                       param, "string_above_max_length")
        if not isinstance(item, str):
            raise _invalid_type(f"{param}.{key}", "a string")
        if len(item) > 512:
            raise _bad(f"Invalid '{param}.{key}': string too long. Expected a string with maximum length 512, "
                       f"but got a string with length {len(item)} instead.", param, "string_above_max_length")
    return dict(value)


def _number(body: dict[str, Any], name: str, high: float, param: str | None = None) -> float | None:
    """Validate an optional number parameter in [0, high]."""
    param = param or name
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid_type(param, "a number")
    if not 0 <= value <= high:
        raise _bad(f"Invalid '{param}': {value} is not between 0 and {high}.", param, "invalid_value")
    return value


def _string(body: dict[str, Any], name: str, required: bool = False) -> str | None:
    """Validate an optional (or required) string parameter."""
    value = body.get(name)
    if value is None:
        if required:
            raise _missing(name)
        return None
    if not isinstance(value, str) or (required and not value):
        raise _invalid_type(name, "a non-empty string" if required else "a string")
    return value


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    """Validate an optional boolean parameter."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _invalid_type(name, "a boolean")
    return value


def _stream_flag(body: dict[str, Any]) -> bool:
    """Validate the optional `stream` parameter and `stream_options`, which needs it."""
    stream = _flag(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and not stream:
        raise _bad("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options",
                   "invalid_value")
    if options is not None and not isinstance(options, dict):
        raise _invalid_type("stream_options", "an object")
    return stream


def _response_tools(value: Any) -> list[dict[str, Any]]:
    """Validate tools in the Responses shape ({"type": "function", "name": ...})."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid_type("tools", "an array")
    for i, tool in enumerate(value):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise _missing(f"tools[{i}].type")
        if tool["type"] == "function":
            name = tool.get("name")
            if name is None:
                raise _missing(f"tools[{i}].name")
            if not isinstance(name, str) or not FUNCTION_NAME.match(name):
                raise _bad(f"Invalid 'tools[{i}].name': {name!r}.", f"tools[{i}].name", "invalid_value")
            parameters, strict = tool.get("parameters"), tool.get("strict")
            if parameters is not None and not isinstance(parameters, dict):
                raise _invalid_type(f"tools[{i}].parameters", "an object")
            if strict is not None and not isinstance(strict, bool):
                raise _invalid_type(f"tools[{i}].strict", "a boolean")
            # As OpenAI does: a function tool that does not say `strict: false` is strict.
            problem = _strict_schema_problem(parameters) if strict is not False else None
            if problem:
                raise _bad(f"Invalid schema for function '{name}': {problem}", f"tools[{i}].parameters",
                           "invalid_function_parameters")
        elif tool["type"] == "file_search":
            param = f"tools[{i}]"
            if tool.get("vector_store_ids") is None:
                raise _missing(f"{param}.vector_store_ids")
            _string_list(tool["vector_store_ids"], f"{param}.vector_store_ids")
            _integer(tool, "max_num_results", 1, 50, f"{param}.max_num_results")
            _ranking_options(tool.get("ranking_options"), f"{param}.ranking_options", ("auto", "default-2024-11-15"))
            _file_filter(tool.get("filters"), f"{param}.filters")
    return copy.deepcopy(value)


def _strict_schema_problem(schema: Any, context: tuple[str, ...] = ()) -> str | None:
    """What strict mode refuses in a JSON schema, in OpenAI's words, or None.

    Every object must list all its properties in `required` and set `additionalProperties: false`.
    """
    if not isinstance(schema, dict):
        return None
    children: list[tuple[tuple[str, ...], Any]] = []
    kind = schema.get("type")
    if kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in schema:
        properties = schema.get("properties") or {}
        required = schema.get("required")
        missing = [key for key in properties if not isinstance(required, list) or key not in required]
        if missing:
            return (f"In context={context}, 'required' is required to be supplied and to be an array "
                    f"including every key in properties. Missing '{missing[0]}'.")
        if schema.get("additionalProperties") is not False:
            return (f"In context={context}, 'additionalProperties' is required to be supplied and to be "
                    "false.")
        children += [(("properties", key), sub) for key, sub in properties.items()]
    if "items" in schema:
        children.append((("items",), schema["items"]))
    for keyword in ("anyOf", "oneOf", "allOf"):
        children += [((keyword, str(n)), sub) for n, sub in enumerate(schema.get(keyword) or [])]
    for keyword in ("$defs", "definitions"):
        children += [((keyword, name), sub) for name, sub in (schema.get(keyword) or {}).items()]
    for path, subschema in children:
        problem = _strict_schema_problem(subschema, (*context, *path))
        if problem:
            return problem
    return None


def _assistant_tools(value: Any) -> list[dict[str, Any]]:
    """Validate tools in the Assistants shape ({"type": "function", "function": {"name": ...}})."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid_type("tools", "an array")
    for i, tool in enumerate(value):
        if not isinstance(tool, dict) or tool.get("type") not in ASSISTANT_TOOLS:
            raise _bad(f"Invalid value for 'tools[{i}].type'. Supported values are: {', '.join(ASSISTANT_TOOLS)}.",
                       f"tools[{i}].type", "invalid_value")
        if tool["type"] == "function":
            function = tool.get("function")
            if not isinstance(function, dict) or function.get("name") is None:
                raise _missing(f"tools[{i}].function.name")
            if not isinstance(function["name"], str) or not FUNCTION_NAME.match(function["name"]):
                raise _bad(f"Invalid 'tools[{i}].function.name'.", f"tools[{i}].function.name", "invalid_value")
        if tool["type"] == "file_search" and tool.get("file_search") is not None:
            options, param = tool["file_search"], f"tools[{i}].file_search"
            if not isinstance(options, dict):
                raise _invalid_type(param, "an object")
            _integer(options, "max_num_results", 1, 50, f"{param}.max_num_results")
            ranking = options.get("ranking_options")
            _ranking_options(ranking, f"{param}.ranking_options", ("auto", ASSISTANT_RANKER))
            if ranking is not None and "score_threshold" not in ranking:
                raise _missing(f"{param}.ranking_options.score_threshold")
    return copy.deepcopy(value)


# ---- files, vector stores and searches: validation -----------------------------------------------

def _integer(body: dict[str, Any], name: str, low: int, high: int, param: str | None = None) -> int | None:
    """Validate an optional integer parameter in [low, high]."""
    param = param or name
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid_type(param, "an integer")
    if not low <= value <= high:
        raise _bad(f"Invalid '{param}': integer {value} is not between {low} and {high}.", param, "invalid_value")
    return value


def _string_list(value: Any, param: str, max_items: int | None = None) -> list[str]:
    """Validate an array of strings, at most `max_items` long."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _invalid_type(param, "an array of strings")
    if max_items is not None and len(value) > max_items:
        raise _bad(f"Invalid '{param}': array too long. Expected an array with maximum length {max_items}, "
                   f"but got an array with length {len(value)} instead.", param, "array_above_max_length")
    return list(value)


def _ranking_options(value: Any, param: str, rankers: tuple[str, ...]) -> dict[str, Any]:
    """Validate a search's ranking options ({} when unset)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid_type(param, "an object")
    ranker = value.get("ranker")
    if ranker is not None and ranker not in rankers:
        raise _bad(f"Invalid value for '{param}.ranker': {ranker!r}. Supported values are: {', '.join(rankers)}.",
                   f"{param}.ranker", "invalid_value")
    _number(value, "score_threshold", 1, f"{param}.score_threshold")
    return dict(value)


def _file_filter(value: Any, param: str) -> dict[str, Any] | None:
    """Validate an attribute filter: a comparison {type, key, value} or a compound {type, filters}."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid_type(param, "an object")
    kind = value.get("type")
    if kind in ("and", "or"):
        filters = value.get("filters")
        if not isinstance(filters, list):
            raise _invalid_type(f"{param}.filters", "an array")
        for i, sub in enumerate(filters):
            _file_filter(sub, f"{param}.filters[{i}]")
        return value
    if kind not in ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"):
        raise _bad(f"Invalid value for '{param}.type': {kind!r}. Supported values are: eq, ne, gt, gte, lt, lte, "
                   "in, nin, and, or.", f"{param}.type", "invalid_value")
    _required_str(value, param, "key")
    if "value" not in value:
        raise _missing(f"{param}.value")
    if kind in ("in", "nin") and not isinstance(value["value"], list):
        raise _invalid_type(f"{param}.value", "an array")
    return value


def _attributes(value: Any, param: str = "attributes") -> dict[str, Any]:
    """Validate a vector store file's attributes: at most 16, with string, number or boolean values."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid_type(param, "an object")
    if len(value) > 16:
        raise _bad(f"Invalid '{param}': too many properties. Expected an object with at most 16 properties, "
                   f"but got an object with {len(value)} properties instead.", param, "object_above_max_properties")
    for key, item in value.items():
        if len(key) > 64:
            raise _bad(f"Invalid '{param}': key {key!r} is too long; keys have at most 64 characters.",
                       param, "string_above_max_length")
        if not isinstance(item, (str, int, float, bool)):
            raise _invalid_type(f"{param}.{key}", "a string, number or boolean")
        if isinstance(item, str) and len(item) > 512:
            raise _bad(f"Invalid '{param}.{key}': string too long. Expected a string with maximum length 512, "
                       f"but got a string with length {len(item)} instead.", param, "string_above_max_length")
    return dict(value)


class _Chunking(NamedTuple):
    """A validated chunking strategy: as a vector store file reports it, and its sizes in tokens."""

    strategy: dict[str, Any]
    max_tokens: int
    overlap: int


def _chunking(value: Any, param: str = "chunking_strategy") -> _Chunking:
    """Validate a chunking strategy; `auto` (or none) is OpenAI's static 800 tokens overlapping by 400."""
    if value is None or (isinstance(value, dict) and value.get("type") == "auto"):
        max_tokens, overlap = retrieval.AUTO_CHUNK_TOKENS, retrieval.AUTO_OVERLAP_TOKENS
    elif isinstance(value, dict) and value.get("type") == "static":
        static = value.get("static")
        if not isinstance(static, dict):
            raise _missing(f"{param}.static")
        for name in ("max_chunk_size_tokens", "chunk_overlap_tokens"):
            if static.get(name) is None:
                raise _missing(f"{param}.static.{name}")
        max_tokens = _integer(static, "max_chunk_size_tokens", 100, 4096, f"{param}.static.max_chunk_size_tokens")
        overlap = _integer(static, "chunk_overlap_tokens", 0, 4096, f"{param}.static.chunk_overlap_tokens")
        assert max_tokens is not None and overlap is not None
        if overlap > max_tokens // 2:
            raise _bad(f"Invalid '{param}.static.chunk_overlap_tokens': {overlap} is more than half of "
                       f"max_chunk_size_tokens ({max_tokens}).", f"{param}.static.chunk_overlap_tokens",
                       "invalid_value")
    else:
        kind = value.get("type") if isinstance(value, dict) else value
        raise _bad(f"Invalid value for '{param}.type': {kind!r}. Supported values are: auto, static.",
                   f"{param}.type", "invalid_value")
    strategy = {"type": "static", "static": {"max_chunk_size_tokens": max_tokens, "chunk_overlap_tokens": overlap}}
    return _Chunking(strategy, max_tokens, overlap)


def _store_expiry(value: Any, param: str = "expires_after") -> dict[str, Any] | None:
    """Validate a vector store's expiration policy {anchor: last_active_at, days}."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid_type(param, "an object")
    if value.get("anchor") != "last_active_at":
        raise _bad(f"Invalid value for '{param}.anchor': {value.get('anchor')!r}. Supported values are: "
                   "last_active_at.", f"{param}.anchor", "invalid_value")
    if value.get("days") is None:
        raise _missing(f"{param}.days")
    return {"anchor": "last_active_at", "days": _integer(value, "days", 1, 365, f"{param}.days")}


def _store_ids(tool_resources: dict[str, Any] | None) -> list[str]:
    """The vector store ids that tool resources name for file_search."""
    return list(((tool_resources or {}).get("file_search") or {}).get("vector_store_ids") or [])


def _may_search(tool_choice: Any) -> bool:
    """Whether a tool choice lets the model use file_search."""
    if isinstance(tool_choice, dict):
        return tool_choice.get("type") == "file_search"
    return tool_choice in (None, "auto", "required")


def _form(raw: bytes, content_type: str) -> dict[str, Any]:
    """The fields of a multipart/form-data body: strings, and an _Upload for each file part."""
    environ = {"REQUEST_METHOD": "POST", "CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(raw)),
               "wsgi.input": io.BytesIO(raw)}
    _, form, files = parse_form_data(environ)
    fields: dict[str, Any] = {name: form[name] for name in form}
    for name, part in files.items():
        try:
            fields[name] = _Upload(part.filename or "", part.read())
        finally:
            part.close()  # werkzeug spools each part to a temporary file
    return fields


def _required_str(raw: dict[str, Any], param: str, name: str) -> str:
    """Return raw[name], a string, or reject naming param.name."""
    value = raw.get(name)
    if value is None:
        raise _missing(f"{param}.{name}")
    if not isinstance(value, str):
        raise _invalid_type(f"{param}.{name}", "a string")
    return value


def _item(raw: Any, param: str) -> dict[str, Any]:
    """Validate a Responses input item and return it as a stored conversation item."""
    if not isinstance(raw, dict):
        raise _invalid_type(param, "an object")
    kind = raw.get("type", "message" if "role" in raw else None)
    if kind == "message":
        role = raw.get("role")
        if role not in MESSAGE_ROLES:
            raise _bad(f"Invalid value for '{param}.role': {role!r}. Supported values are: "
                       f"{', '.join(MESSAGE_ROLES)}.", f"{param}.role", "invalid_value")
        content = raw.get("content")
        if isinstance(content, str):
            part_type = "output_text" if role == "assistant" else "input_text"
            parts = [{"type": part_type, "text": content}]
        elif isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("type"), str)
                                               for p in content):
            parts = copy.deepcopy(content)
        elif content is None:
            raise _missing(f"{param}.content")
        else:
            raise _invalid_type(f"{param}.content", "a string or an array of content parts")
        for part in parts:
            if part["type"] == "output_text":
                part.setdefault("annotations", [])
        return {"id": _id("msg"), "type": "message", "role": role, "status": "completed", "content": parts}
    if kind == "function_call":
        return {"id": _id("fc"), "type": "function_call", "call_id": _required_str(raw, param, "call_id"),
                "name": _required_str(raw, param, "name"), "arguments": _required_str(raw, param, "arguments"),
                "status": "completed"}
    if kind == "function_call_output":
        output = raw.get("output")
        if output is None:
            raise _missing(f"{param}.output")
        return {"id": _id("fco"), "type": "function_call_output", "call_id": _required_str(raw, param, "call_id"),
                "output": output, "status": "completed"}
    if kind == "file_search_call":
        queries = raw.get("queries")
        if queries is None:
            raise _missing(f"{param}.queries")
        status = raw.get("status", "completed")
        if status not in ("in_progress", "searching", "completed", "incomplete", "failed"):
            raise _bad(f"Invalid value for '{param}.status': {status!r}.", f"{param}.status", "invalid_value")
        results = raw.get("results")
        if results is not None and not (isinstance(results, list) and all(isinstance(r, dict) for r in results)):
            raise _invalid_type(f"{param}.results", "an array of objects")
        return {"id": _required_str(raw, param, "id"), "type": "file_search_call", "status": status,
                "queries": _string_list(queries, f"{param}.queries"), "results": copy.deepcopy(results)}
    raise _bad(f"Invalid value for '{param}.type': {kind!r}. Supported values are: 'message', 'function_call', "
               "'function_call_output' and 'file_search_call'.", f"{param}.type", "invalid_value")


def _items(value: Any, param: str) -> list[dict[str, Any]]:
    """Validate a list of Responses input items."""
    if not isinstance(value, list):
        raise _invalid_type(param, "an array")
    return [_item(raw, f"{param}[{i}]") for i, raw in enumerate(value)]


def _item_text(item: dict[str, Any]) -> str:
    """Return the text of a conversation item (message parts or tool output)."""
    if item["type"] == "message":
        return " ".join(p["text"] for p in item["content"] if isinstance(p.get("text"), str))
    if item["type"] == "function_call_output":
        return item["output"] if isinstance(item["output"], str) else ""
    return item.get("arguments", "")


def _last_user_text(items: list[dict[str, Any]]) -> str:
    """Return the text of the last user message among conversation items."""
    for item in reversed(items):
        if item["type"] == "message" and item["role"] == "user":
            return _item_text(item)
    return ""


def _check_tool_outputs(known: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
    """Reject outputs for unknown calls and function calls left without an output, as OpenAI does."""
    items = known + new
    calls = [item["call_id"] for item in items if item["type"] == "function_call"]
    outputs = {item["call_id"] for item in items if item["type"] == "function_call_output"}
    for item in new:
        if item["type"] == "function_call_output" and item["call_id"] not in calls:
            raise _bad(f"No tool call found for function call output with call_id {item['call_id']}.", "input")
    for call_id in calls:
        if call_id not in outputs:
            raise _bad(f"No tool output found for function call {call_id}.", "input")


def _message_content(value: Any, param: str) -> list[dict[str, Any]]:
    """Validate Assistants message content and return it as content blocks."""
    if isinstance(value, str):
        return [{"type": "text", "text": {"value": value, "annotations": []}}]
    if value is None:
        raise _missing(param)
    if not isinstance(value, list) or not value:
        raise _invalid_type(param, "a string or a non-empty array of content parts")
    blocks = []
    for i, part in enumerate(value):
        if not isinstance(part, dict) or part.get("type") not in ("text", "image_file", "image_url"):
            raise _bad(f"Invalid value for '{param}[{i}].type'.", f"{param}[{i}].type", "invalid_value")
        if part["type"] == "text":
            blocks.append({"type": "text", "text": {"value": _required_str(part, f"{param}[{i}]", "text"),
                                                    "annotations": []}})
        else:
            blocks.append(copy.deepcopy(part))
    return blocks


def _thread_message(raw: Any, param: str, thread_id: str) -> dict[str, Any]:
    """Validate an Assistants message to create and return the thread.message object."""
    prefix = f"{param}." if param else ""
    if not isinstance(raw, dict):
        raise _invalid_type(param, "an object")
    role = raw.get("role")
    if role is None:
        raise _missing(f"{prefix}role")
    if role not in ("user", "assistant"):
        raise _bad(f"Invalid value for '{prefix}role': {role!r}. Supported values are: user, assistant.",
                   f"{prefix}role", "invalid_value")
    attachments = raw.get("attachments")
    if attachments is not None and not isinstance(attachments, list):
        raise _invalid_type(f"{prefix}attachments", "an array")
    for i, attachment in enumerate(attachments or []):
        where = f"{prefix}attachments[{i}]"
        if not isinstance(attachment, dict):
            raise _invalid_type(where, "an object")
        _required_str(attachment, where, "file_id")
        tools = attachment.get("tools") or []
        if not isinstance(tools, list):
            raise _invalid_type(f"{where}.tools", "an array")
        for j, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type") not in ("code_interpreter", "file_search"):
                raise _bad(f"Invalid value for '{where}.tools[{j}].type'. Supported values are: code_interpreter, "
                           "file_search.", f"{where}.tools[{j}].type", "invalid_value")
    now = _now()
    return {
        "id": _id("msg"), "object": "thread.message", "created_at": now, "thread_id": thread_id, "role": role,
        "content": _message_content(raw.get("content"), f"{prefix}content"), "assistant_id": None,
        "run_id": None, "attachments": copy.deepcopy(attachments or []),
        "metadata": _metadata(raw.get("metadata"), f"{prefix}metadata"), "status": "completed",
        "completed_at": now, "incomplete_at": None, "incomplete_details": None,
    }


def _message_text(message: dict[str, Any]) -> str:
    """Return the text of an Assistants message."""
    return " ".join(block["text"]["value"] for block in message["content"] if block["type"] == "text")


def _step_delta(step: dict[str, Any], tool_call: dict[str, Any]) -> dict[str, Any]:
    """A thread.run.step.delta carrying one change to one of a tool_calls step's calls."""
    return {"id": step["id"], "object": "thread.run.step.delta",
            "delta": {"step_details": {"type": "tool_calls", "tool_calls": [tool_call]}}}


def _step_view(step: dict[str, Any], include: frozenset[str]) -> dict[str, Any]:
    """A copy of a run step as a read shows it: its file_search results' content only when included."""
    view = copy.deepcopy(step)
    if STEP_CONTENT not in include:
        for call in view["step_details"].get("tool_calls") or []:
            for result in (call.get("file_search") or {}).get("results") or []:
                result.pop("content", None)
    return view


def _page(objects: list[dict[str, Any]], query: dict[str, str], max_limit: int = 100,
          default_limit: int = 20) -> dict[str, Any]:
    """Paginate objects (in creation order) by limit/order/after/before into a list envelope."""
    try:
        limit = int(query.get("limit", str(default_limit)))
    except ValueError:
        raise _invalid_type("limit", "an integer") from None
    if not 1 <= limit <= max_limit:
        raise _bad(f"Invalid 'limit': integer {limit} is not between 1 and {max_limit}.", "limit", "invalid_value")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise _bad(f"Invalid value for 'order': {order!r}. Supported values are: 'asc' and 'desc'.", "order",
                   "invalid_value")
    seq = objects if order == "asc" else objects[::-1]
    ids = [obj["id"] for obj in seq]
    for name in ("after", "before"):
        cursor = query.get(name)
        if cursor is not None and cursor not in ids:
            raise _bad(f"Invalid '{name}': no object with id {cursor!r} in this list.", name, "invalid_value")
    if "before" in query:
        seq = seq[:ids.index(query["before"])]
    if "after" in query:
        seq = seq[ids.index(query["after"]) + 1:]
    data = copy.deepcopy(seq[:limit])
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(seq) > limit}


def _script(reply: str | dict[str, Any]) -> dict[str, Any]:
    """Validate a scripted reply and return it as a dict."""
    if isinstance(reply, str):
        return {"content": reply}
    if not isinstance(reply, dict):
        raise TypeError(f"a scripted reply must be a str or a dict, not {type(reply).__name__}")
    unknown = set(reply) - REPLY_KEYS
    if unknown:
        raise ValueError(f"unknown scripted reply keys: {sorted(unknown)}")
    if "content" in reply and "function_calls" in reply:
        raise ValueError("a scripted reply has content or function_calls, not both")
    if "content" in reply and not isinstance(reply["content"], str):
        raise ValueError("scripted content must be a str")
    status = reply.get("status", "completed")
    if status not in SCRIPTED_STATUSES:
        raise ValueError(f"scripted status must be one of {SCRIPTED_STATUSES}, not {status!r}")
    if status != "completed" and "function_calls" in reply:
        raise ValueError(f"a {status} reply has no function_calls")
    if "error" in reply and (status != "failed" or not isinstance(reply["error"], dict)):
        raise ValueError("error is a dict {code, message} of a reply with status 'failed'")
    script = dict(reply)
    if "function_calls" in reply:
        calls = reply["function_calls"]
        if not isinstance(calls, list) or not calls:
            raise ValueError("function_calls must be a non-empty list of {name, arguments}")
        script["function_calls"] = []
        for call in calls:
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                raise ValueError(f"a function call needs a str name: {call!r}")
            arguments = call.get("arguments", "{}")
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments)
            script["function_calls"].append({"name": call["name"], "arguments": arguments})
    usage = reply.get("usage")
    if usage is not None and not (isinstance(usage, dict) and all(isinstance(v, int) for v in usage.values())):
        raise ValueError("usage must be a dict of int token counts")
    return script


def _token_counts(reply: dict[str, Any], prompt: int, completion: int) -> tuple[int, int]:
    """Return (input, output) tokens: the scripted usage in either API's names, else the word counts."""
    usage = reply.get("usage")
    if usage is None:
        return prompt, completion
    return (usage.get("input_tokens", usage.get("prompt_tokens", 0)),
            usage.get("output_tokens", usage.get("completion_tokens", 0)))


class FakeOpenAI(LoopbackFake):
    """A stateful fake of OpenAI's Conversations, Responses, Assistants v2 and Chat Completions APIs.

    With "stream": true each API answers with its Server-Sent Events as OpenAI sends them; the output is
    made step by step by the same code whether it is streamed or not, so both read back alike.
    """

    def __init__(self, api_key: str = "test-openai-key", latency: float = 0.05, retention: float = 600.0,
                 poll_after_ms: int = 10, max_recorded: int | None = None, stream_chunks: int = 4,
                 stream_interval: float = 0.0):
        super().__init__()
        # Keep only about the last `max_recorded` requests in `requests` (long soaks); None keeps all.
        self.max_recorded = max_recorded
        self.server_class = _Server
        self.api_key = api_key
        self.latency = latency
        self.retention = retention
        self.poll_after_ms = poll_after_ms
        # Seconds every request waits before it is answered (benchmarks of a slow upstream).
        self.answer_delay = 0.0
        # Streamed output: each text (or function arguments) goes out in this many pieces, each followed
        # by `stream_interval` seconds (0 streams as fast as the client reads).
        self.stream_chunks = stream_chunks
        self.stream_interval = stream_interval
        self._delay_epoch = 0  # end_delays() moves it on
        self._workers: list[threading.Thread] = []
        self._epoch = 0
        self._logs: weakref.WeakSet[EventLog] = weakref.WeakSet()  # of streams not yet collected
        self._clear()

    def _clear(self) -> None:
        """Forget all state (caller holds the lock or owns the object)."""
        self._requests: list[dict[str, Any]] = []
        self._calls: Counter[str] = Counter()
        self._replies: deque[dict[str, Any]] = deque()
        self._faults: deque[_Fault] = deque()
        # Faults for one route only ("POST /v1/responses"), consumed before the route-less ones.
        self._route_faults: dict[str, deque[_Fault]] = {}
        # Random faults (fault_rates()), drawn for a request no queued fault applies to.
        self._fault_rates: _FaultRates | None = None
        self._injected: Counter[str] = Counter()
        # Streams to cut short (drop_stream_after()): (route or None for any, frames to send first).
        self._stream_cuts: deque[tuple[str | None, int]] = deque()
        self._conversations: dict[str, _Conversation] = {}
        self._responses: dict[str, _Job] = {}
        self._assistants: dict[str, dict[str, Any]] = {}
        self._threads: dict[str, _Thread] = {}
        self._files: dict[str, _File] = {}
        self._vector_stores: dict[str, _VectorStore] = {}
        # Every file_search_call's results by item id: responses and conversation items show them
        # only when asked to include them.
        self._search_results: dict[str, list[dict[str, Any]]] = {}

    # ---- lifecycle -----------------------------------------------------------------------------

    def _detach_background(self) -> list[threading.Thread]:
        self._wake_streams()  # their readers see the fake stopping
        workers, self._workers = self._workers, []
        return workers

    def _new_log(self, numbered: bool) -> EventLog:
        log = EventLog(numbered=numbered, lock=self._lock)
        self._logs.add(log)
        return log

    def _wake_streams(self) -> None:
        """Let every stream's readers look again (lock held): the fake dropped their work."""
        for log in list(self._logs):
            log.cond.notify_all()

    # ---- test controls -------------------------------------------------------------------------

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A snapshot of all requests received (method, path, route, query, headers, json, form), in order.

        `form` holds a multipart upload's fields, its file as {"filename", "bytes"} (None for other
        requests, whose JSON body is `json`).
        """
        with self._cond:
            return copy.deepcopy(self._requests)

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        """A snapshot of the uploaded files' objects by id, in upload order (file_content() has their bytes)."""
        with self._cond:
            return {file_id: copy.deepcopy(stored.obj) for file_id, stored in self._files.items()}

    def file_content(self, file_id: str) -> bytes:
        """The bytes of an uploaded file (KeyError for an unknown id)."""
        with self._cond:
            return self._files[file_id].data

    @property
    def vector_stores(self) -> dict[str, dict[str, Any]]:
        """A snapshot of the vector stores' objects by id, in creation order."""
        with self._cond:
            return {store_id: copy.deepcopy(store.obj) for store_id, store in self._vector_stores.items()}

    def vector_store_files(self, store_id: str) -> dict[str, dict[str, Any]]:
        """A snapshot of one vector store's vector_store.file objects by file id (KeyError for an unknown store)."""
        with self._cond:
            return copy.deepcopy(self._vector_stores[store_id].files)

    def calls(self, route: str | None = None) -> Any:
        """Return how many requests hit a route such as "GET /v1/responses/{id}", or all counts as a dict."""
        with self._cond:
            if route is None:
                return dict(self._calls)
            if route not in ROUTE_KEYS and route not in self._calls:
                raise ValueError(f"unknown route {route!r}; known routes: {sorted(ROUTE_KEYS)}")
            return self._calls[route]

    def wait_for_requests(self, n: int, timeout: float = 5.0, route: str | None = None) -> None:
        """Block until at least n requests (to route, if given) were received, else raise TimeoutError."""
        def count() -> int:
            return sum(1 for r in self._requests if route is None or r["route"] == route)

        with self._cond:
            if not self._cond.wait_for(lambda: count() >= n, timeout):
                raise TimeoutError(f"expected {n} requests{' to ' + route if route else ''}, got {count()}")

    def enqueue(self, *replies: str | dict[str, Any]) -> None:
        """Script the next model outputs (responses, runs or chat completions), consumed in FIFO order."""
        scripts = [_script(reply) for reply in replies]
        with self._cond:
            self._replies.extend(scripts)

    def fail_next(self, status: int, headers: dict[str, str] | None = None, count: int = 1) -> None:
        """Answer the next `count` requests, whatever their route, with an error status and headers."""
        if not (isinstance(status, int) and 400 <= status <= 599):
            raise ValueError(f"status must be an int error status (4xx or 5xx), not {status!r}")
        extra = {name: str(value) for name, value in (headers or {}).items()}
        self._add_faults(_Fault("fail", status=status, headers=extra), count)

    def timeout_next(self, seconds: float, count: int = 1) -> None:
        """Wait `seconds` before handling each of the next `count` requests."""
        self._add_faults(_Fault("timeout", seconds=seconds), count)

    def drop_next(self, count: int = 1) -> None:
        """Close the connection of the next `count` requests without answering."""
        self._add_faults(_Fault("drop"), count)

    def _add_faults(self, fault: _Fault, count: int) -> None:
        """Queue count copies of a fault."""
        with self._cond:
            self._faults.extend(copy.deepcopy(fault) for _ in range(count))

    def fail_on(self, route: str, status: int, headers: dict[str, str] | None = None, count: int = 1) -> None:
        """Answer the next `count` requests to one route (a key of calls()) with an error status."""
        if not (isinstance(status, int) and 400 <= status <= 599):
            raise ValueError(f"status must be an int error status (4xx or 5xx), not {status!r}")
        extra = {name: str(value) for name, value in (headers or {}).items()}
        self._add_route_faults(route, _Fault("fail", status=status, headers=extra), count)

    def delay_on(self, route: str, seconds: float, count: int = 1) -> None:
        """Wait `seconds` before handling each of the next `count` requests to one route."""
        self._add_route_faults(route, _Fault("timeout", seconds=seconds), count)

    def end_delays(self) -> None:
        """End the delays of delay_on() and timeout_next(): waiting requests go on at once, and
        those still queued for requests to come are dropped."""
        with self._cond:
            self._delay_epoch += 1
            self._faults = deque(f for f in self._faults if f.kind != "timeout")
            for route, faults in self._route_faults.items():
                self._route_faults[route] = deque(f for f in faults if f.kind != "timeout")
            self._cond.notify_all()

    def drop_on(self, route: str, count: int = 1) -> None:
        """Close the connection of the next `count` requests to one route without answering."""
        self._add_route_faults(route, _Fault("drop"), count)

    def drop_stream_after(self, events: int, count: int = 1, route: str | None = None) -> None:
        """Cut each of the next `count` streamed answers (to `route`, if given) after `events` events.

        The connection closes mid-body, as a broken network would leave it: the SDK raises
        APIConnectionError. The work behind the stream goes on (a background response can be
        streamed again from where the client got to, a run keeps running).
        """
        if not (isinstance(events, int) and events >= 0):
            raise ValueError(f"events must be a non-negative int, not {events!r}")
        if route is not None and route not in ROUTE_KEYS:
            raise ValueError(f"unknown route {route!r}; known routes: {sorted(ROUTE_KEYS)}")
        with self._cond:
            self._stream_cuts.extend((route, events) for _ in range(count))

    def _stream_cut(self, route: str) -> int | None:
        """Take the cut for a stream on `route`, if one is queued (caller holds the lock)."""
        for cut in self._stream_cuts:
            if cut[0] in (None, route):
                self._stream_cuts.remove(cut)
                return cut[1]
        return None

    def _add_route_faults(self, route: str, fault: _Fault, count: int) -> None:
        """Queue count copies of a fault for one route."""
        if route not in ROUTE_KEYS:
            raise ValueError(f"unknown route {route!r}; known routes: {sorted(ROUTE_KEYS)}")
        with self._cond:
            self._route_faults.setdefault(route, deque()).extend(copy.deepcopy(fault) for _ in range(count))

    def fault_rates(self, error_5xx: float = 0.0, rate_limited: float = 0.0, timeout: float = 0.0, *,
                    timeout_seconds: float = 3.0, retry_after: float = 1.0,
                    statuses: tuple[int, ...] = (500, 502, 503), routes: list[str] | None = None,
                    seed: int | None = None) -> None:
        """Fail a random fraction of requests from now on, until reset() or fault_rates() with zeros.

        Each request that no queued fault (fail_next, fail_on, ...) applies to draws once: with
        probability `error_5xx` it is answered with one of `statuses` (picked at random), with
        `rate_limited` a 429 carrying `Retry-After: retry_after`, with `timeout` it is handled only
        after `timeout_seconds` (a client with a shorter timeout gives up, and the request still
        takes effect, as a slow provider's would). `routes` (keys of calls()) limits the faults to
        those routes. `seed` makes the draws repeatable. injected_faults() counts what was injected.
        """
        rates = (error_5xx, rate_limited, timeout)
        if any(not isinstance(rate, (int, float)) or not 0 <= rate <= 1 for rate in rates) or sum(rates) > 1:
            raise ValueError(f"fault rates must be in [0, 1] and sum to at most 1, not {rates!r}")
        if timeout_seconds < 0 or retry_after < 0:
            raise ValueError("timeout_seconds and retry_after must not be negative")
        if not statuses or any(not (isinstance(s, int) and 500 <= s <= 599) for s in statuses):
            raise ValueError(f"statuses must be 5xx ints, not {statuses!r}")
        unknown = sorted(set(routes or ()) - ROUTE_KEYS)
        if unknown:
            raise ValueError(f"unknown route(s) {unknown}; known routes: {sorted(ROUTE_KEYS)}")
        config = None
        if sum(rates) > 0:
            config = _FaultRates(error_5xx, rate_limited, timeout, float(timeout_seconds), float(retry_after),
                                 tuple(statuses), frozenset(routes) if routes is not None else None,
                                 random.Random(seed))
        with self._cond:
            self._fault_rates = config

    def injected_faults(self) -> dict[str, int]:
        """How many random faults fault_rates() injected, by kind ("500", "429", "timeout", ...)."""
        with self._cond:
            return dict(self._injected)

    def _random_fault(self, route: str) -> _Fault | None:
        """Draw a random fault for a request (caller holds the lock)."""
        config = self._fault_rates
        if config is None or (config.routes is not None and route not in config.routes):
            return None
        draw = config.rng.random()
        if draw < config.error_5xx:
            status = config.rng.choice(config.statuses)
            self._injected[str(status)] += 1
            return _Fault("fail", status=status)
        draw -= config.error_5xx
        if draw < config.rate_limited:
            self._injected["429"] += 1
            return _Fault("fail", status=429, headers={"Retry-After": f"{config.retry_after:g}"})
        draw -= config.rate_limited
        if draw < config.timeout:
            self._injected["timeout"] += 1
            return _Fault("timeout", seconds=config.timeout_seconds)
        return None

    def hold(self, after_deltas: int = 0) -> None:
        """Keep model output from now on (responses, runs, chat) in progress until release().

        With `after_deltas`, streamed output starts and pauses once it has streamed that many text or
        argument pieces; output that is not streamed is made at once, so it is held before it starts.
        """
        with self._cond:
            self._holding = True
            self._hold_after_deltas = after_deltas

    def release(self) -> None:
        """Let held model output complete and stop holding new work."""
        with self._cond:
            self._holding = False
            self._releases += 1
            self._cond.notify_all()

    def reset(self) -> None:
        """Forget all objects, requests, counters, scripted replies and faults, and release held work."""
        with self._cond:
            self._clear()
            self._epoch += 1
            self._holding = False
            self._releases += 1
            self._cond.notify_all()
            self._wake_streams()

    # ---- dispatch ------------------------------------------------------------------------------

    def _handle(self, method: str, path: str, query_string: str, headers: dict[str, str],
                raw: bytes) -> _Response | _Bytes | Stream | None:
        """Record a request, apply faults and checks, and route it; None means drop the connection."""
        path = path.rstrip("/") or "/"
        route, handler, params, path_known = f"{method} {path}", None, (), False
        for route_method, template, name, pattern in _PATTERNS:
            match = pattern.match(path)
            if match:
                path_known = True
                if route_method == method:
                    route, handler, params = f"{method} {template}", getattr(self, name), match.groups()
                    break
        content_type = headers.get("content-type", "")
        form = None
        if content_type.startswith("multipart/form-data"):
            body = _form(raw, content_type)
            form = {name: {"filename": value.filename, "bytes": len(value.data)} if isinstance(value, _Upload)
                    else value for name, value in body.items()}
        else:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = _INVALID_JSON
        lists = parse_qs(query_string)
        query = {name: values[-1] for name, values in lists.items()}
        with self._cond:
            recorded = None if body is _INVALID_JSON or form is not None else body
            self._requests.append({"method": method, "path": path, "route": route, "query": query,
                                   "headers": headers, "json": recorded, "form": form})
            self._calls[route] += 1
            if self.max_recorded is not None and len(self._requests) > 2 * self.max_recorded:
                del self._requests[:-self.max_recorded]
            self._cond.notify_all()
            routed = self._route_faults.get(route)
            fault = routed.popleft() if routed else self._faults.popleft() if self._faults else None
            if fault is None:
                fault = self._random_fault(route)
            if fault is not None:
                if fault.kind == "drop":
                    return None
                if fault.kind == "fail":
                    response = _error(fault.status, f"Injected error {fault.status} from FakeOpenAI.")
                    response.headers.update(fault.headers)
                    return response
                epoch = self._delay_epoch
                self._cond.wait_for(lambda: self._stopping or self._delay_epoch != epoch,
                                    fault.seconds)
                if self._stopping:
                    return None
            # A slow provider: every answer takes this long (the lock is released meanwhile).
            if self.answer_delay and self._cond.wait_for(lambda: self._stopping, self.answer_delay):
                return None
            if self._stopping:
                return None
            authorization = headers.get("authorization")
            if not authorization:
                return _error(401, "You didn't provide an API key. You need to provide your API key in an "
                                   "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
            if authorization != f"Bearer {self.api_key}":
                return _error(401, "Incorrect API key provided.", code="invalid_api_key")
            if handler is None:
                if path_known:
                    return _error(405, f"Method {method} is not allowed on {path}.")
                return _error(404, f"Unknown request URL: {method} {path}.", code="unknown_url")
            if path.startswith(("/v1/assistants", "/v1/threads")) and \
                    "assistants=v2" not in headers.get("openai-beta", ""):
                return _error(400, "You must provide the 'OpenAI-Beta' header to access the Assistants API. "
                                   "Please try again by setting the header 'OpenAI-Beta: assistants=v2'.")
            if body is _INVALID_JSON or (body is not None and not isinstance(body, dict)):
                return _error(400, "We could not parse the JSON body of your request: expected a JSON object.")
            try:
                answer = handler(_Request(body or {}, query, lists), *params)
            except _Reject as rejection:
                return rejection.response
            if isinstance(answer, Stream):
                answer.drop_after = self._stream_cut(route)
            return answer

    # ---- model output and background work ------------------------------------------------------

    def _next_reply(self) -> dict[str, Any]:
        """Pop the next scripted reply, or {} for the default echo."""
        return self._replies.popleft() if self._replies else {}

    def _spawn(self, target: Callable[[_Job], None], job: _Job) -> None:
        """Run a job's worker in a daemon thread that stop() joins."""
        worker = threading.Thread(target=target, args=(job,), daemon=True)
        self._workers = [w for w in self._workers if w.is_alive()]
        self._workers.append(worker)
        worker.start()

    def _wait(self, job: _Job, until: float, active: tuple[str, ...], deltas: int | None = None) -> bool:
        """Wait (lock held) until `until` and while hold() holds the job, having streamed `deltas` pieces
        (None: hold() does not apply); False if the job was dropped or left the `active` statuses."""
        while True:
            if self._stopping or job.epoch != self._epoch or job.obj["status"] not in active:
                return False
            held = deltas is not None and self._held(job, deltas)
            remaining = until - time.monotonic()
            if not held and remaining <= 0:
                return True
            self._cond.wait(None if held else remaining)

    def _held(self, job: _Job, deltas: int) -> bool:
        """Whether hold() keeps a job that has streamed `deltas` pieces from going on."""
        if not self._holding or self._releases != job.releases:
            return False
        # Output that is not streamed is made in one go, so it can only be held before it starts.
        return deltas >= (self._hold_after_deltas if job.log is not None else 0)

    def _log(self, job: _Job, kind: str, payload: dict[str, Any]) -> None:
        """Add an event to the job's stream, if it has one (caller holds the lock); it wakes the
        stream's readers."""
        if job.log is not None:
            job.log.add(kind, payload)

    def _follow(self, job: _Job, start: int = 0) -> Stream:
        """A streamed answer that sends the job's events from index `start` on, then follows new ones."""
        assert job.log is not None
        return Stream(follow(job.log, start, lambda: not self._stopping and job.epoch == self._epoch))

    def _play(self, job: _Job, output: Iterator[_Event], active: tuple[str, ...]) -> bool:
        """Make a job's output (lock held); when it is streamed, log each event and pace its pieces.

        False if the job was cancelled or dropped on the way (the lock is free while a stream is paced).
        """
        deltas = 0
        for event in output:
            if job.log is None:
                continue
            self._log(job, event.kind, event.payload)
            if event.piece:
                deltas += 1
                if not self._wait(job, time.monotonic() + self.stream_interval, active, deltas):
                    output.close()
                    return False
        self._cond.notify_all()
        return True

    # ---- responses: background work and output -------------------------------------------------

    def _work_response(self, job: _Job) -> None:
        """Take a background or streamed response to its end: queued -> in_progress -> its output."""
        with self._cond:
            until = job.t0
            if job.obj["status"] == "queued":
                if not self._wait(job, job.t0 + self.latency / 2, RESPONSE_ACTIVE):
                    return
                job.obj["status"] = "in_progress"
                self._log(job, "response.in_progress", {"response": job.obj})
                self._cond.notify_all()
                until = job.t0 + self.latency
            if self._wait(job, until, RESPONSE_ACTIVE, 0) and \
                    self._play(job, self._response_output(job), RESPONSE_ACTIVE) and job.log is not None:
                job.log.end()

    def _response_output(self, job: _Job) -> Iterator[_Event]:
        """Make a response's output from the next reply, yielding each change's stream event once it is made.

        Items are added to the response as they are streamed; the conversation gets them at the end.
        """
        obj = job.obj
        conversation = self._conversations.get(job.conversation or "")
        context = conversation.items if conversation else job.context
        # Unscripted, a model offered file_search searches for the user's words and answers from them.
        searching = job.search is not None and not self._replies
        reply = self._next_reply()
        if reply.get("status") == "failed":
            obj.update(status="failed", output=[], error=dict(reply.get("error") or {
                "code": "server_error", "message": "The model failed (scripted)."}))
            yield _Event("response.failed", {"response": obj})
            return
        incomplete = reply.get("status") == "incomplete"
        if "function_calls" in reply:
            for call in reply["function_calls"]:
                yield from self._function_call_events(obj, call["name"], call["arguments"])
            produced = " ".join(call["arguments"] for call in reply["function_calls"])
        elif searching:
            produced = yield from self._file_search_events(job, _last_user_text(context))
        else:
            produced = reply.get("content", "echo: " + _last_user_text(context))
            yield from self._message_events(obj, produced, "incomplete" if incomplete else "completed")
        prompt = _words(obj["instructions"] or "") + sum(_words(_item_text(item)) for item in context)
        input_tokens, output_tokens = _token_counts(reply, prompt, _words(produced))
        obj.update(status="completed", completed_at=_now(), usage={
            "input_tokens": input_tokens, "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        })
        if incomplete:
            obj.update(status="incomplete", completed_at=None, incomplete_details={"reason": "max_output_tokens"})
        if conversation is not None:
            conversation.items.extend(self._keep_results(copy.deepcopy(obj["output"])))
        yield _Event("response.incomplete" if incomplete else "response.completed", {"response": obj})

    def _file_search_events(self, job: _Job, question: str) -> Generator[_Event, None, str]:
        """Add a file_search_call searching the response's stores for the question, then a message
        quoting the best passage and citing its file; return the message's text.

        The call's results show in the response only when the request included them; they are kept
        for later reads that ask for them.
        """
        obj, tool = job.obj, job.search
        assert tool is not None
        item = {"id": _id("fs"), "type": "file_search_call", "status": "in_progress", "queries": [], "results": None}
        index = len(obj["output"])
        obj["output"].append(item)
        where = {"item_id": item["id"], "output_index": index}
        yield _Event("response.output_item.added", {"output_index": index, "item": item})
        yield _Event("response.file_search_call.in_progress", where)
        item.update(status="searching", queries=[question])
        yield _Event("response.file_search_call.searching", where)
        ranking = tool.get("ranking_options") or {}
        hits = self._search(tool["vector_store_ids"], question, tool.get("max_num_results") or DEFAULT_MAX_RESULTS,
                            ranking.get("score_threshold") or 0.0, tool.get("filters"))
        results = [{"file_id": hit.passage.file_id, "filename": hit.passage.filename, "score": hit.score,
                    "text": hit.passage.text, "attributes": copy.deepcopy(hit.passage.attributes)} for hit in hits]
        self._search_results[item["id"]] = results
        item.update(status="completed", results=copy.deepcopy(results) if SEARCH_RESULTS in job.include else None)
        yield _Event("response.file_search_call.completed", where)
        yield _Event("response.output_item.done", {"output_index": index, "item": item})
        if not hits:
            yield from self._message_events(obj, NOTHING_FOUND, "completed")
            return NOTHING_FOUND
        best = hits[0].passage
        text = f"According to {best.filename}, {retrieval.cited_sentence(best.text, question)}."
        citation = {"type": "file_citation", "file_id": best.file_id, "filename": best.filename, "index": len(text)}
        yield from self._message_events(obj, text, "completed", (citation,))
        return text

    def _keep_results(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Items to store: file_search_calls' results go to the fake's record of them, so that a read
        shows them only when it asks to include them."""
        for item in items:
            if item["type"] == "file_search_call":
                if item["results"] is not None:
                    self._search_results[item["id"]] = item["results"]
                item["results"] = None
        return items

    def _with_results(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Items (copies) as read with `include: ["file_search_call.results"]`."""
        for item in items:
            if item["type"] == "file_search_call" and item["id"] in self._search_results:
                item["results"] = copy.deepcopy(self._search_results[item["id"]])
        return items

    def _message_events(self, obj: dict[str, Any], text: str, status: str,
                        annotations: tuple[dict[str, Any], ...] = ()) -> Iterator[_Event]:
        """Add an assistant message to a response's output: its item, its text part, the text in pieces,
        then the text's annotations."""
        item = {"id": _id("msg"), "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        index = len(obj["output"])
        obj["output"].append(item)
        yield _Event("response.output_item.added", {"output_index": index, "item": item})
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        item["content"].append(part)
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        yield _Event("response.content_part.added", {**where, "part": part})
        for piece in pieces(text, self.stream_chunks):
            part["text"] += piece
            yield _Event("response.output_text.delta", {**where, "delta": piece, "logprobs": []}, piece=True)
        for number, annotation in enumerate(annotations):
            part["annotations"].append(copy.deepcopy(annotation))
            yield _Event("response.output_text.annotation.added", {**where, "annotation_index": number,
                                                                   "annotation": annotation})
        yield _Event("response.output_text.done", {**where, "text": text, "logprobs": []})
        yield _Event("response.content_part.done", {**where, "part": part})
        item["status"] = status
        yield _Event("response.output_item.done", {"output_index": index, "item": item})

    def _function_call_events(self, obj: dict[str, Any], name: str, arguments: str) -> Iterator[_Event]:
        """Add a function call to a response's output: its item, then its arguments in pieces."""
        item = {"id": _id("fc"), "type": "function_call", "status": "in_progress", "call_id": _id("call"),
                "name": name, "arguments": ""}
        index = len(obj["output"])
        obj["output"].append(item)
        yield _Event("response.output_item.added", {"output_index": index, "item": item})
        where = {"item_id": item["id"], "output_index": index}
        for piece in pieces(arguments, self.stream_chunks):
            item["arguments"] += piece
            yield _Event("response.function_call_arguments.delta", {**where, "delta": piece}, piece=True)
        yield _Event("response.function_call_arguments.done", {**where, "arguments": arguments})
        item["status"] = "completed"
        yield _Event("response.output_item.done", {"output_index": index, "item": item})

    # ---- runs: background work, steps and output -----------------------------------------------

    def _work_run(self, job: _Job) -> None:
        """Move a run queued -> in_progress -> its output: a message (completed), or tool calls to submit."""
        with self._cond:
            if not self._wait(job, job.t0 + self.latency / 2, RUN_ACTIVE):
                return
            job.obj["status"] = "in_progress"
            job.obj["started_at"] = job.obj["started_at"] or _now()
            self._log(job, "thread.run.in_progress", job.obj)
            self._record_tool_outputs(job)
            self._cond.notify_all()
            if self._wait(job, job.t0 + self.latency, ("in_progress",), 0) and \
                    self._play(job, self._run_output(job), ("in_progress",)) and job.log is not None:
                job.log.end(done=True)

    def _new_step(self, job: _Job, details: dict[str, Any]) -> dict[str, Any]:
        """Record an in-progress run step of the kind `details` describe."""
        run = job.obj
        step = {"id": _id("step"), "object": "thread.run.step", "created_at": _now(), "run_id": run["id"],
                "assistant_id": run["assistant_id"], "thread_id": run["thread_id"], "type": details["type"],
                "status": "in_progress", "cancelled_at": None, "completed_at": None, "expired_at": None,
                "failed_at": None, "last_error": None, "step_details": details, "usage": None, "metadata": {}}
        job.steps.append(step)
        return step

    def _record_tool_outputs(self, job: _Job) -> None:
        """Complete the tool_calls step whose outputs were submitted, now that the run goes on."""
        if not job.tool_outputs:
            return
        step = job.steps[-1]
        for call in step["step_details"]["tool_calls"]:
            call["function"]["output"] = job.tool_outputs.get(call["id"])
        arguments = sum(_words(call["function"]["arguments"]) for call in step["step_details"]["tool_calls"])
        step.update(status="completed", completed_at=_now(), usage={
            "prompt_tokens": 0, "completion_tokens": arguments, "total_tokens": arguments})
        job.tool_outputs = {}
        self._log(job, "thread.run.step.completed", step)

    def _run_output(self, job: _Job) -> Iterator[_Event]:
        """Make a run's output from the next reply, yielding each change's stream event once it is made:
        an assistant message (in a message_creation step), or tool calls (a tool_calls step) to submit."""
        run = job.obj
        thread = self._threads.get(job.thread or "")
        if thread is None:
            run.update(status="failed", failed_at=_now(),
                       last_error={"code": "server_error", "message": "The thread was deleted."})
            yield _Event("thread.run.failed", run)
            return
        # Unscripted, a run offered file_search with stores to search searches for the user's words.
        stores = None if self._replies else self._run_stores(job, thread)
        reply = self._next_reply()
        if reply.get("status") == "failed":
            run.update(status="failed", failed_at=_now(), last_error=dict(reply.get("error") or {
                "code": "server_error", "message": "The model failed (scripted)."}))
            yield _Event("thread.run.failed", run)
            return
        if "function_calls" in reply:
            yield from self._tool_call_events(job, reply["function_calls"])
            return
        incomplete = reply.get("status") == "incomplete"
        last_user = next((m for m in reversed(thread.messages) if m["role"] == "user"), None)
        question = _message_text(last_user) if last_user else ""
        annotations: list[dict[str, Any]] = []
        if stores:
            text, annotations = yield from self._file_search_step_events(job, stores, question)
        else:
            text = reply.get("content", "echo: " + question)
        prompt = _words(run["instructions"]) + sum(_words(_message_text(m)) for m in thread.messages)
        message = {
            "id": _id("msg"), "object": "thread.message", "created_at": _now(), "thread_id": thread.obj["id"],
            "role": "assistant", "content": [], "assistant_id": run["assistant_id"], "run_id": run["id"],
            "attachments": [], "metadata": {}, "status": "in_progress", "completed_at": None,
            "incomplete_at": None, "incomplete_details": None,
        }
        step = self._new_step(job, {"type": "message_creation", "message_creation": {"message_id": message["id"]}})
        yield _Event("thread.run.step.created", step)
        yield _Event("thread.run.step.in_progress", step)
        thread.messages.append(message)
        yield _Event("thread.message.created", message)
        yield _Event("thread.message.in_progress", message)
        block = {"type": "text", "text": {"value": "", "annotations": []}}
        message["content"].append(block)
        parts = pieces(text, self.stream_chunks)
        for number, piece in enumerate(parts):
            block["text"]["value"] += piece
            delta = {"value": piece, "annotations": []}
            if number == len(parts) - 1 and annotations:
                # The citations come with the last piece, which ends with their markers.
                block["text"]["annotations"] = copy.deepcopy(annotations)
                delta["annotations"] = [{"index": i, **annotation} for i, annotation in enumerate(annotations)]
            yield _Event("thread.message.delta", {"id": message["id"], "object": "thread.message.delta", "delta": {
                "content": [{"index": 0, "type": "text", "text": delta}]}}, piece=True)
        now = _now()
        if incomplete:
            message.update(status="incomplete", incomplete_at=now, incomplete_details={"reason": "max_tokens"})
            yield _Event("thread.message.incomplete", message)
        else:
            message.update(status="completed", completed_at=now)
            yield _Event("thread.message.completed", message)
        prompt_tokens, completion_tokens = _token_counts(reply, prompt, _words(text))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        step.update(status="completed", completed_at=now, usage=usage)
        yield _Event("thread.run.step.completed", step)
        run.update(status="completed", completed_at=now, usage=usage)
        if incomplete:
            run.update(status="incomplete", completed_at=None, incomplete_details={"reason": "max_completion_tokens"})
        yield _Event("thread.run.incomplete" if incomplete else "thread.run.completed", run)

    def _run_stores(self, job: _Job, thread: _Thread) -> list[str] | None:
        """The vector stores a run's file_search searches (its thread's, then its assistant's or those the
        run was started with), or None when it offers no file_search or may not use it."""
        run = job.obj
        if not any(tool["type"] == "file_search" for tool in run["tools"]) or not _may_search(job.tool_choice):
            return None
        own = job.tool_resources
        if own is None:
            own = (self._assistants.get(run["assistant_id"]) or {}).get("tool_resources")
        wanted = dict.fromkeys(_store_ids(thread.obj["tool_resources"]) + _store_ids(own))
        return [store_id for store_id in wanted if store_id in self._vector_stores] or None

    def _file_search_step_events(self, job: _Job, stores: list[str],
                                 question: str) -> Generator[_Event, None, tuple[str, list[dict[str, Any]]]]:
        """Make a tool_calls step whose file_search searches the stores for the question; return the text
        of the reply quoting the best passage with its citation marker, and the marker's annotation.

        Read back, the step's results carry their content only when the read (or the run's creation,
        for its stream) includes it.
        """
        tool = next(tool for tool in job.obj["tools"] if tool["type"] == "file_search")
        options = tool.get("file_search") or {}
        ranking = options.get("ranking_options") or {}
        threshold = float(ranking.get("score_threshold") or 0.0)
        ranker = ranking.get("ranker") or "auto"
        step = self._new_step(job, {"type": "tool_calls", "tool_calls": []})
        yield _Event("thread.run.step.created", step)
        yield _Event("thread.run.step.in_progress", step)
        call = {"id": _id("call"), "type": "file_search", "file_search": {
            "ranking_options": {"ranker": ASSISTANT_RANKER if ranker == "auto" else ranker,
                                "score_threshold": threshold},
            "results": []}}
        step["step_details"]["tool_calls"].append(call)
        yield _Event("thread.run.step.delta", _step_delta(step, {
            "index": 0, "id": call["id"], "type": "file_search", "file_search": {}}))
        hits = self._search(stores, question, options.get("max_num_results") or ASSISTANT_MAX_RESULTS, threshold)
        call["file_search"]["results"] = [
            {"file_id": hit.passage.file_id, "file_name": hit.passage.filename, "score": hit.score,
             "content": [{"type": "text", "text": hit.passage.text}]} for hit in hits]
        step.update(status="completed", completed_at=_now(),
                    usage={"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
        yield _Event("thread.run.step.completed", _step_view(step, job.include))
        if not hits:
            return NOTHING_FOUND, []
        best = hits[0].passage
        mark = CITATION_MARK.format(filename=best.filename)
        text = f"According to {best.filename}, {retrieval.cited_sentence(best.text, question)}. {mark}"
        return text, [{"type": "file_citation", "text": mark, "start_index": len(text) - len(mark),
                       "end_index": len(text), "file_citation": {"file_id": best.file_id}}]

    def _tool_call_events(self, job: _Job, calls: list[dict[str, str]]) -> Iterator[_Event]:
        """Make a tool_calls step, each call's id and name then its arguments in pieces, and pause the run
        for their outputs; the step completes when they are submitted."""
        step = self._new_step(job, {"type": "tool_calls", "tool_calls": []})
        yield _Event("thread.run.step.created", step)
        yield _Event("thread.run.step.in_progress", step)
        for index, call in enumerate(calls):
            tool_call = {"id": _id("call"), "type": "function",
                         "function": {"name": call["name"], "arguments": "", "output": None}}
            step["step_details"]["tool_calls"].append(tool_call)
            yield _Event("thread.run.step.delta", _step_delta(step, {"index": index, **tool_call}))
            for piece in pieces(call["arguments"], self.stream_chunks):
                tool_call["function"]["arguments"] += piece
                yield _Event("thread.run.step.delta", _step_delta(step, {
                    "index": index, "type": "function", "function": {"arguments": piece}}), piece=True)
        job.obj.update(status="requires_action", required_action={
            "type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": [
                {"id": tool_call["id"], "type": "function",
                 "function": {"name": tool_call["function"]["name"], "arguments": tool_call["function"]["arguments"]}}
                for tool_call in step["step_details"]["tool_calls"]]}})
        yield _Event("thread.run.requires_action", job.obj)

    # ---- chat completions and models -----------------------------------------------------------

    def _models(self, req: _Request) -> _Response:
        """List the one fake model."""
        return _Response(200, copy.deepcopy(MODELS))

    def _chat(self, req: _Request) -> _Response | Stream | None:
        """Answer a chat completion, whole or streamed, honouring hold() and scripted replies."""
        invalid = _validate(req.body)
        if invalid is not None:
            return invalid
        streamed = req.body.get("stream") is True
        job = _Job({"status": "in_progress"}, time.monotonic(), self._releases, self._epoch)
        # A stream held after some pieces starts at once; anything else is held before it starts.
        holdable = None if streamed and self._hold_after_deltas else 0
        if not self._wait(job, job.t0, ("in_progress",), holdable):
            return None
        reply = self._next_reply()
        chat_reply: dict[str, Any] = {}
        if "content" in reply:
            chat_reply["content"] = reply["content"]
        if "function_calls" in reply:
            chat_reply["tool_calls"] = [{"id": _id("call"), "type": "function", "function": dict(call)}
                                        for call in reply["function_calls"]]
        if "usage" in reply:
            prompt, completion = _token_counts(reply, 0, 0)
            chat_reply["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion,
                                   "total_tokens": prompt + completion}
        completion = _completion(req.body, chat_reply)
        if not streamed:
            return _Response(200, completion)
        chunks = _chunks(completion, self.stream_chunks, _include_usage(req.body))
        return Stream(_chat_frames(chunks, partial(self._stream_pause, releases=job.releases,
                                                   interval=self.stream_interval)))

    # ---- conversations -------------------------------------------------------------------------

    def _conversation(self, conversation_id: str) -> _Conversation:
        """Return a conversation or reject with 404."""
        conversation = self._conversations.get(conversation_id)
        if conversation is None:
            raise _not_found("conversation", conversation_id)
        return conversation

    def _conversation_create(self, req: _Request) -> _Response:
        """Create a conversation with optional metadata and initial items."""
        metadata = _metadata(req.body.get("metadata"))
        raw_items = req.body.get("items")
        items = [] if raw_items is None else _items(raw_items, "items")
        if len(items) > 20:
            raise _bad(f"Invalid 'items': array too long. Expected at most 20 items, got {len(items)}.",
                       "items", "array_above_max_length")
        obj = {"id": _id("conv"), "object": "conversation", "created_at": _now(), "metadata": metadata}
        self._conversations[obj["id"]] = _Conversation(obj, self._keep_results(items))
        return _Response(200, copy.deepcopy(obj))

    def _conversation_get(self, req: _Request, conversation_id: str) -> _Response:
        """Retrieve a conversation."""
        return _Response(200, copy.deepcopy(self._conversation(conversation_id).obj))

    def _conversation_update(self, req: _Request, conversation_id: str) -> _Response:
        """Replace a conversation's metadata."""
        conversation = self._conversation(conversation_id)
        if "metadata" not in req.body:
            raise _missing("metadata")
        conversation.obj["metadata"] = _metadata(req.body["metadata"])
        return _Response(200, copy.deepcopy(conversation.obj))

    def _conversation_delete(self, req: _Request, conversation_id: str) -> _Response:
        """Delete a conversation and its items."""
        self._conversation(conversation_id)
        del self._conversations[conversation_id]
        return _Response(200, {"id": conversation_id, "object": "conversation.deleted", "deleted": True})

    def _items_create(self, req: _Request, conversation_id: str) -> _Response:
        """Append items to a conversation and return them in a list envelope."""
        conversation = self._conversation(conversation_id)
        if "items" not in req.body:
            raise _missing("items")
        items = _items(req.body["items"], "items")
        if not 1 <= len(items) <= 20:
            raise _bad("Invalid 'items': expected between 1 and 20 items.", "items", "invalid_value")
        conversation.items.extend(self._keep_results(items))
        data = copy.deepcopy(items)
        return _Response(200, {"object": "list", "data": data, "first_id": data[0]["id"],
                               "last_id": data[-1]["id"], "has_more": False})

    def _items_list(self, req: _Request, conversation_id: str) -> _Response:
        """List a conversation's items (limit, order, after, include)."""
        page = _page(self._conversation(conversation_id).items, req.query)
        if SEARCH_RESULTS in req.includes(RESPONSE_INCLUDABLE):
            self._with_results(page["data"])
        return _Response(200, page)

    def _conversation_item(self, conversation_id: str, item_id: str) -> tuple[_Conversation, dict[str, Any]]:
        """Return a conversation and one of its items, or reject with 404."""
        conversation = self._conversation(conversation_id)
        item = next((item for item in conversation.items if item["id"] == item_id), None)
        if item is None:
            raise _not_found("item", item_id)
        return conversation, item

    def _item_get(self, req: _Request, conversation_id: str, item_id: str) -> _Response:
        """Retrieve one conversation item (include)."""
        item = copy.deepcopy(self._conversation_item(conversation_id, item_id)[1])
        if SEARCH_RESULTS in req.includes(RESPONSE_INCLUDABLE):
            self._with_results([item])
        return _Response(200, item)

    def _item_delete(self, req: _Request, conversation_id: str, item_id: str) -> _Response:
        """Delete one conversation item and return the conversation."""
        conversation, item = self._conversation_item(conversation_id, item_id)
        conversation.items.remove(item)
        return _Response(200, copy.deepcopy(conversation.obj))

    # ---- responses -----------------------------------------------------------------------------

    def _locked(self, conversation: _Conversation) -> bool:
        """Whether a conversation has a queued or in-progress response."""
        job = self._responses.get(conversation.active or "")
        return job is not None and job.obj["status"] in RESPONSE_ACTIVE

    def _response_job(self, response_id: str) -> _Job:
        """Return a stored, unexpired response or reject with 404."""
        job = self._responses.get(response_id)
        if job is not None and time.monotonic() - job.t0 >= self.retention:
            del self._responses[response_id]
            job = None
        if job is None or not job.stored:
            raise _Reject(_error(404, f"Response with id '{response_id}' not found."))
        return job

    def _response_create(self, req: _Request) -> _Response | Stream | None:
        """Create a response, in the background or synchronously, optionally in a conversation, and answer
        with it or, with "stream": true, with its events as it is made."""
        body = req.body
        model = _string(body, "model", required=True)
        stream = _stream_flag(body)
        reference = body.get("conversation")
        if isinstance(reference, dict):
            reference = reference.get("id")
        if reference is not None and not isinstance(reference, str):
            raise _invalid_type("conversation", "a string or an object with an 'id'")
        conversation = None
        if reference is not None:
            conversation = self._conversations.get(reference)
            if conversation is None:
                raise _Reject(_error(404, f"Conversation with id '{reference}' not found.", "conversation"))
            if self._locked(conversation):
                raise _bad("Another process is currently operating on this conversation. "
                           "Please retry in a few seconds.", None, "conversation_locked")
        raw_input = body.get("input")
        if raw_input is None and conversation is None:
            raise _missing("input")
        if raw_input is None:
            items = []
        elif isinstance(raw_input, str):
            items = [_item({"role": "user", "content": raw_input}, "input")]
        else:
            items = _items(raw_input, "input")
        instructions = _string(body, "instructions")
        tools = _response_tools(body.get("tools"))
        for i, tool in enumerate(tools):
            for store_id in tool.get("vector_store_ids", []) if tool["type"] == "file_search" else []:
                self._known_store(store_id, f"tools[{i}].vector_store_ids")
        search = next((tool for tool in tools if tool["type"] == "file_search"), None)
        include = body.get("include")
        if include is not None:
            for i, value in enumerate(_string_list(include, "include")):
                if value not in RESPONSE_INCLUDABLE:
                    raise _bad(f"Invalid value: {value!r}. Supported values are: {', '.join(RESPONSE_INCLUDABLE)}.",
                               f"include[{i}]", "invalid_value")
        temperature = _number(body, "temperature", 2)
        top_p = _number(body, "top_p", 1)
        metadata = _metadata(body.get("metadata"))
        background = _flag(body, "background", False)
        store = _flag(body, "store", True)
        if background and not store:
            raise _bad("Background responses must be stored: drop 'store': false.", "store", "invalid_value")
        _check_tool_outputs(conversation.items if conversation else [], items)
        obj = {
            "id": _id("resp"), "object": "response", "created_at": _now(),
            "status": "queued" if background else "in_progress", "background": background, "model": model,
            "instructions": instructions, "tools": tools, "tool_choice": "auto", "parallel_tool_calls": True,
            "temperature": temperature, "top_p": top_p, "metadata": metadata, "store": store,
            "conversation": {"id": reference} if reference else None, "output": [], "usage": None,
            "error": None, "incomplete_details": None, "completed_at": None, "previous_response_id": None,
        }
        job = _Job(obj, time.monotonic(), self._releases, self._epoch, conversation=reference, stored=store,
                   context=items, include=frozenset(include or ()),
                   search=search if _may_search(body.get("tool_choice")) else None)
        self._responses[obj["id"]] = job
        if conversation is not None:
            conversation.items.extend(self._keep_results(copy.deepcopy(items)))
            conversation.active = obj["id"]
        if stream:
            # A streamed response is made by a worker, so that it goes on when its client goes away.
            job.log = self._new_log(numbered=True)
            job.log.add("response.created", {"response": obj})
            job.log.add("response.queued" if background else "response.in_progress", {"response": obj})
            self._spawn(self._work_response, job)
            return self._follow(job)
        if background:
            self._spawn(self._work_response, job)
        elif self._wait(job, job.t0, ("in_progress",), 0):
            self._play(job, self._response_output(job), ("in_progress",))
        else:
            return None
        return _Response(200, copy.deepcopy(obj))

    def _response_get(self, req: _Request, response_id: str) -> _Response | Stream:
        """Retrieve a response until it expires; with stream=true, stream a background response's events
        again, those after sequence number `starting_after` (all of them without it), then the new ones."""
        job = self._response_job(response_id)
        if req.query.get("stream") != "true":
            answer = copy.deepcopy(job.obj)
            if SEARCH_RESULTS in req.includes(RESPONSE_INCLUDABLE):
                self._with_results(answer["output"])
            return _Response(200, answer)
        if job.log is None or not job.obj["background"]:
            raise _bad("Only responses created with background=true and stream=true can be streamed again.",
                       "stream", "invalid_value")
        after = req.query.get("starting_after", "-1")
        try:
            start = int(after) + 1
        except ValueError:
            raise _invalid_type("starting_after", "an integer") from None
        if start < 0:
            raise _bad(f"Invalid 'starting_after': {after} is below 0.", "starting_after", "invalid_value")
        return self._follow(job, start)

    def _response_cancel(self, req: _Request, response_id: str) -> _Response:
        """Cancel a queued or in-progress background response; its stream, if any, ends with it."""
        job = self._response_job(response_id)
        obj = job.obj
        if not obj["background"]:
            raise _bad("Only responses created with background=true can be cancelled.")
        if obj["status"] in RESPONSE_ACTIVE:
            obj["status"] = "cancelled"
            for item in obj["output"]:
                if item["status"] == "in_progress":
                    item["status"] = "incomplete"
            # The SDK knows no "response.cancelled" event: the stream's last event is the one a response
            # cut short ends with, carrying the response with status "cancelled".
            self._log(job, "response.incomplete", {"response": obj})
            if job.log is not None:
                job.log.end()
            self._cond.notify_all()
        elif obj["status"] != "cancelled":
            raise _bad(f"Cannot cancel a response with status '{obj['status']}'.")
        return _Response(200, copy.deepcopy(obj))

    # ---- assistants ----------------------------------------------------------------------------

    def _assistant(self, assistant_id: str, param: str | None = None) -> dict[str, Any]:
        """Return an assistant or reject with 404."""
        assistant = self._assistants.get(assistant_id)
        if assistant is None:
            raise _not_found("assistant", assistant_id, param)
        return assistant

    def _assistant_fields(self, body: dict[str, Any]) -> dict[str, Any]:
        """Validate the settable fields of an assistant present in body."""
        fields = {name: copy.deepcopy(body[name]) for name in ASSISTANT_FIELDS if name in body}
        for name in ("name", "description", "instructions"):
            _string(body, name)
        _number(body, "temperature", 2)
        _number(body, "top_p", 1)
        if "model" in body:
            fields["model"] = _string(body, "model", required=True)
        if "tools" in body:
            fields["tools"] = _assistant_tools(body["tools"])
        if "metadata" in body:
            fields["metadata"] = _metadata(body["metadata"])
        if "tool_resources" in body:
            resources, inline = self._tool_resources(body["tool_resources"], "tool_resources")
            fields["tool_resources"] = self._make_inline_stores(resources, inline)
        return fields

    def _tool_resources(self, raw: Any, param: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Validate tool resources, whose files and vector stores must exist, and return them with the
        vector stores they ask to be made (`file_search.vector_stores`), for _make_inline_stores()."""
        if raw is None:
            return {}, []
        if not isinstance(raw, dict):
            raise _invalid_type(param, "an object")
        resources: dict[str, Any] = {}
        interpreter = raw.get("code_interpreter")
        if interpreter is not None:
            if not isinstance(interpreter, dict):
                raise _invalid_type(f"{param}.code_interpreter", "an object")
            file_ids = _string_list(interpreter.get("file_ids") or [], f"{param}.code_interpreter.file_ids", 20)
            for file_id in file_ids:
                self._known_file(file_id, f"{param}.code_interpreter.file_ids")
            resources["code_interpreter"] = {"file_ids": file_ids}
        search = raw.get("file_search")
        inline: list[dict[str, Any]] = []
        if search is not None:
            where = f"{param}.file_search"
            if not isinstance(search, dict):
                raise _invalid_type(where, "an object")
            if search.get("vector_store_ids") is not None and search.get("vector_stores") is not None:
                raise _bad(f"Invalid '{where}': give 'vector_store_ids' or 'vector_stores', not both.", where,
                           "invalid_value")
            # OpenAI's limit: one vector store per assistant, and one per thread.
            store_ids = _string_list(search.get("vector_store_ids") or [], f"{where}.vector_store_ids", 1)
            for store_id in store_ids:
                self._known_store(store_id, f"{where}.vector_store_ids")
            specs = search.get("vector_stores") or []
            if not isinstance(specs, list):
                raise _invalid_type(f"{where}.vector_stores", "an array")
            if len(specs) > 1:
                raise _bad(f"Invalid '{where}.vector_stores': array too long. Expected an array with maximum "
                           f"length 1, but got an array with length {len(specs)} instead.",
                           f"{where}.vector_stores", "array_above_max_length")
            for i, spec in enumerate(specs):
                at = f"{where}.vector_stores[{i}]"
                if not isinstance(spec, dict):
                    raise _invalid_type(at, "an object")
                file_ids = _string_list(spec.get("file_ids") or [], f"{at}.file_ids", 10000)
                for file_id in file_ids:
                    self._known_file(file_id, f"{at}.file_ids")
                inline.append({"file_ids": file_ids, "chunking": _chunking(spec.get("chunking_strategy"),
                                                                           f"{at}.chunking_strategy"),
                               "metadata": _metadata(spec.get("metadata"), f"{at}.metadata")})
            resources["file_search"] = {"vector_store_ids": store_ids}
        return resources, inline

    def _make_inline_stores(self, resources: dict[str, Any], inline: list[dict[str, Any]]) -> dict[str, Any]:
        """Make the vector stores tool resources asked for and name them in the resources."""
        for spec in inline:
            store = self._new_store(file_ids=spec["file_ids"], chunking=spec["chunking"], metadata=spec["metadata"])
            resources["file_search"]["vector_store_ids"].append(store.obj["id"])
        return resources

    def _assistant_create(self, req: _Request) -> _Response:
        """Create an assistant."""
        _string(req.body, "model", required=True)
        obj = {"id": _id("asst"), "object": "assistant", "created_at": _now(), "name": None,
               "description": None, "instructions": None, "tools": [], "metadata": {}, "temperature": 1.0,
               "top_p": 1.0, "response_format": "auto", "tool_resources": {}}
        obj.update(self._assistant_fields(req.body))
        self._assistants[obj["id"]] = obj
        return _Response(200, copy.deepcopy(obj))

    def _assistant_list(self, req: _Request) -> _Response:
        """List assistants."""
        return _Response(200, _page(list(self._assistants.values()), req.query))

    def _assistant_get(self, req: _Request, assistant_id: str) -> _Response:
        """Retrieve an assistant."""
        return _Response(200, copy.deepcopy(self._assistant(assistant_id)))

    def _assistant_update(self, req: _Request, assistant_id: str) -> _Response:
        """Update an assistant's given fields."""
        assistant = self._assistant(assistant_id)
        assistant.update(self._assistant_fields(req.body))
        return _Response(200, copy.deepcopy(assistant))

    def _assistant_delete(self, req: _Request, assistant_id: str) -> _Response:
        """Delete an assistant."""
        self._assistant(assistant_id)
        del self._assistants[assistant_id]
        return _Response(200, {"id": assistant_id, "object": "assistant.deleted", "deleted": True})

    # ---- threads and messages ------------------------------------------------------------------

    def _thread(self, thread_id: str) -> _Thread:
        """Return a thread or reject with 404."""
        thread = self._threads.get(thread_id)
        if thread is None:
            raise _not_found("thread", thread_id)
        return thread

    def _active_run(self, thread: _Thread) -> str | None:
        """Return the id of the thread's active run, if any."""
        job = thread.runs.get(thread.active or "")
        return job.obj["id"] if job is not None and job.obj["status"] in RUN_ACTIVE else None

    def _new_thread(self, raw: dict[str, Any], param: str = "") -> _Thread:
        """Validate a thread to create (its messages, metadata, tool resources) and build it, unstored."""
        prefix = f"{param}." if param else ""
        thread_id = _id("thread")
        raw_messages = raw.get("messages")
        if raw_messages is not None and not isinstance(raw_messages, list):
            raise _invalid_type(f"{prefix}messages", "an array")
        messages = [self._new_message(m, f"{prefix}messages[{i}]", thread_id) for i, m in enumerate(raw_messages or [])]
        metadata = _metadata(raw.get("metadata"), f"{prefix}metadata")
        resources, inline = self._tool_resources(raw.get("tool_resources"), f"{prefix}tool_resources")
        obj = {"id": thread_id, "object": "thread", "created_at": _now(), "metadata": metadata,
               "tool_resources": resources}
        return _Thread(obj, messages, inline_stores=inline)

    def _store_thread(self, thread: _Thread) -> None:
        """Store a new thread, making the vector stores its tool resources and attachments ask for."""
        self._threads[thread.obj["id"]] = thread
        self._make_inline_stores(thread.obj["tool_resources"], thread.inline_stores)
        thread.inline_stores = []
        self._attach_files(thread, thread.messages)

    def _new_message(self, raw: Any, param: str, thread_id: str) -> dict[str, Any]:
        """Validate a message to add to a thread, whose attachments must name known files."""
        message = _thread_message(raw, param, thread_id)
        prefix = f"{param}." if param else ""
        for i, attachment in enumerate(message["attachments"]):
            self._known_file(attachment["file_id"], f"{prefix}attachments[{i}].file_id")
        return message

    def _attach_files(self, thread: _Thread, messages: list[dict[str, Any]]) -> None:
        """Put the files that messages attach for file_search into the thread's vector store, made
        (and named in the thread's tool resources) if it has none, as OpenAI does."""
        for message in messages:
            for attachment in message["attachments"]:
                if not any(tool.get("type") == "file_search" for tool in attachment.get("tools") or []):
                    continue
                store = next((self._vector_stores[store_id] for store_id in _store_ids(thread.obj["tool_resources"])
                              if store_id in self._vector_stores), None)
                if store is None:
                    store = self._new_store(expires_after={"anchor": "last_active_at", "days": 7})
                    thread.obj["tool_resources"]["file_search"] = {"vector_store_ids": [store.obj["id"]]}
                if attachment["file_id"] not in store.files:
                    self._add_store_file(store, attachment["file_id"])

    def _thread_create(self, req: _Request) -> _Response:
        """Create a thread with optional messages, metadata and tool resources."""
        thread = self._new_thread(req.body)
        self._store_thread(thread)
        return _Response(200, copy.deepcopy(thread.obj))

    def _thread_get(self, req: _Request, thread_id: str) -> _Response:
        """Retrieve a thread."""
        return _Response(200, copy.deepcopy(self._thread(thread_id).obj))

    def _thread_update(self, req: _Request, thread_id: str) -> _Response:
        """Update a thread's metadata and tool resources."""
        thread = self._thread(thread_id)
        if "metadata" in req.body:
            thread.obj["metadata"] = _metadata(req.body["metadata"])
        if "tool_resources" in req.body:
            resources, inline = self._tool_resources(req.body["tool_resources"], "tool_resources")
            thread.obj["tool_resources"] = self._make_inline_stores(resources, inline)
        return _Response(200, copy.deepcopy(thread.obj))

    def _thread_delete(self, req: _Request, thread_id: str) -> _Response:
        """Delete a thread with its messages and runs."""
        self._thread(thread_id)
        del self._threads[thread_id]
        return _Response(200, {"id": thread_id, "object": "thread.deleted", "deleted": True})

    def _message_create(self, req: _Request, thread_id: str) -> _Response:
        """Add a message to a thread without an active run."""
        thread = self._thread(thread_id)
        message = self._new_message(req.body, "", thread_id)
        active = self._active_run(thread)
        if active:
            raise _bad(f"Can't add messages to {thread_id} while a run {active} is active.")
        thread.messages.append(message)
        self._attach_files(thread, [message])
        return _Response(200, copy.deepcopy(message))

    def _message_list(self, req: _Request, thread_id: str) -> _Response:
        """List a thread's messages (limit, order, after, before, run_id)."""
        messages = self._thread(thread_id).messages
        run_id = req.query.get("run_id")
        if run_id is not None:
            messages = [m for m in messages if m["run_id"] == run_id]
        return _Response(200, _page(messages, req.query))

    def _message(self, thread_id: str, message_id: str) -> tuple[_Thread, dict[str, Any]]:
        """Return a thread and one of its messages, or reject with 404."""
        thread = self._thread(thread_id)
        message = next((m for m in thread.messages if m["id"] == message_id), None)
        if message is None:
            raise _not_found("message", message_id)
        return thread, message

    def _message_get(self, req: _Request, thread_id: str, message_id: str) -> _Response:
        """Retrieve a message."""
        return _Response(200, copy.deepcopy(self._message(thread_id, message_id)[1]))

    def _message_update(self, req: _Request, thread_id: str, message_id: str) -> _Response:
        """Replace a message's metadata."""
        message = self._message(thread_id, message_id)[1]
        message["metadata"] = _metadata(req.body.get("metadata"))
        return _Response(200, copy.deepcopy(message))

    def _message_delete(self, req: _Request, thread_id: str, message_id: str) -> _Response:
        """Delete a message."""
        thread, message = self._message(thread_id, message_id)
        thread.messages.remove(message)
        return _Response(200, {"id": message_id, "object": "thread.message.deleted", "deleted": True})

    # ---- runs ----------------------------------------------------------------------------------

    def _run_answer(self, obj: dict[str, Any]) -> _Response:
        """Answer with a run snapshot and the poll hint the SDK's polling helpers follow."""
        return _Response(200, copy.deepcopy(obj), {"openai-poll-after-ms": str(self.poll_after_ms)})

    def _run(self, thread_id: str, run_id: str) -> _Job:
        """Return a run's job or reject with 404."""
        job = self._thread(thread_id).runs.get(run_id)
        if job is None:
            raise _not_found("run", run_id)
        return job

    def _run_create(self, req: _Request, thread_id: str) -> _Response | Stream:
        """Start a run of an assistant on a thread."""
        thread = self._thread(thread_id)
        stream = _stream_flag(req.body)
        include = req.includes((STEP_CONTENT,))
        obj, messages = self._new_run(req.body, thread_id, thread)
        return self._start_run(thread, obj, messages, stream, include=include, tool_choice=req.body.get("tool_choice"))

    def _thread_create_and_run(self, req: _Request) -> _Response | Stream:
        """Create a thread and start a run on it; a stream of it opens with `thread.created`."""
        raw_thread = req.body.get("thread")
        if raw_thread is not None and not isinstance(raw_thread, dict):
            raise _invalid_type("thread", "an object")
        stream = _stream_flag(req.body)
        thread = self._new_thread(raw_thread or {}, "thread")
        obj, messages = self._new_run(req.body, thread.obj["id"])
        # The run's own resources, for the assistant's tools in its place.
        resources, inline = self._tool_resources(req.body.get("tool_resources"), "tool_resources")
        self._store_thread(thread)
        return self._start_run(thread, obj, messages, stream, opening=[("thread.created", thread.obj)],
                               tool_choice=req.body.get("tool_choice"),
                               tool_resources=self._make_inline_stores(resources, inline)
                               if req.body.get("tool_resources") is not None else None)

    def _new_run(self, body: dict[str, Any], thread_id: str,
                 thread: _Thread | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Validate a run to start on a thread (an existing one must have no active run) and build it and
        its additional messages, unstored."""
        assistant_id = _string(body, "assistant_id", required=True)
        assistant = self._assistant(assistant_id, "assistant_id")
        active = self._active_run(thread) if thread is not None else None
        if active:
            raise _bad(f"Thread {thread_id} already has an active run {active}.")
        model = _string(body, "model") or assistant["model"]
        instructions = _string(body, "instructions")
        if instructions is None:
            instructions = assistant["instructions"] or ""
        additional = _string(body, "additional_instructions")
        if additional:
            instructions = f"{instructions}\n\n{additional}" if instructions else additional
        tools = _assistant_tools(body["tools"]) if body.get("tools") is not None else copy.deepcopy(
            assistant["tools"])
        raw_messages = body.get("additional_messages")
        if raw_messages is not None and not isinstance(raw_messages, list):
            raise _invalid_type("additional_messages", "an array")
        messages = [self._new_message(m, f"additional_messages[{i}]", thread_id)
                    for i, m in enumerate(raw_messages or [])]
        now = _now()
        obj = {
            "id": _id("run"), "object": "thread.run", "created_at": now, "assistant_id": assistant_id,
            "thread_id": thread_id, "status": "queued", "started_at": None, "expires_at": now + 600,
            "cancelled_at": None, "failed_at": None, "completed_at": None, "required_action": None,
            "last_error": None, "model": model, "instructions": instructions, "tools": tools,
            "metadata": _metadata(body.get("metadata")), "usage": None,
            "temperature": _number(body, "temperature", 2), "top_p": _number(body, "top_p", 1),
            "max_completion_tokens": body.get("max_completion_tokens"),
            "max_prompt_tokens": body.get("max_prompt_tokens"),
            "truncation_strategy": {"type": "auto", "last_messages": None}, "incomplete_details": None,
            "response_format": "auto", "tool_choice": "auto", "parallel_tool_calls": True,
        }
        return obj, messages

    def _start_run(self, thread: _Thread, obj: dict[str, Any], messages: list[dict[str, Any]], stream: bool,
                   opening: list[tuple[str, dict[str, Any]]] = (), *, include: frozenset[str] = frozenset(),
                   tool_choice: Any = None, tool_resources: dict[str, Any] | None = None) -> _Response | Stream:
        """Store a new run and its messages, set it going, and answer with it or with its stream."""
        job = _Job(obj, time.monotonic(), self._releases, self._epoch, thread=thread.obj["id"], include=include,
                   tool_choice=tool_choice, tool_resources=tool_resources)
        thread.messages.extend(messages)
        self._attach_files(thread, messages)
        thread.runs[obj["id"]] = job
        thread.active = obj["id"]
        if stream:
            job.log = self._new_log(numbered=False)
            for kind, payload in [*opening, ("thread.run.created", obj), ("thread.run.queued", obj)]:
                job.log.add(kind, payload)
        self._spawn(self._work_run, job)
        return self._follow(job) if stream else self._run_answer(obj)

    def _run_list(self, req: _Request, thread_id: str) -> _Response:
        """List a thread's runs."""
        return _Response(200, _page([job.obj for job in self._thread(thread_id).runs.values()], req.query))

    def _run_get(self, req: _Request, thread_id: str, run_id: str) -> _Response:
        """Retrieve a run."""
        return self._run_answer(self._run(thread_id, run_id).obj)

    def _run_update(self, req: _Request, thread_id: str, run_id: str) -> _Response:
        """Replace a run's metadata."""
        obj = self._run(thread_id, run_id).obj
        obj["metadata"] = _metadata(req.body.get("metadata"))
        return self._run_answer(obj)

    def _run_cancel(self, req: _Request, thread_id: str, run_id: str) -> _Response:
        """Cancel an active run: answer `cancelling`, and the run is `cancelled` from then on.

        What it had made stays, cut short: its message in progress is incomplete and its steps in
        progress are cancelled; a stream of it ends with those changes and `thread.run.cancelled`.
        """
        job = self._run(thread_id, run_id)
        obj = job.obj
        if obj["status"] not in RUN_ACTIVE:
            raise _bad(f"Cannot cancel run with status '{obj['status']}'.")
        answer = dict(obj, status="cancelling")
        self._log(job, "thread.run.cancelling", answer)
        now = _now()
        obj.update(status="cancelled", cancelled_at=now, required_action=None)
        thread = self._threads.get(job.thread or "")
        for message in thread.messages if thread else []:
            if message["run_id"] == obj["id"] and message["status"] == "in_progress":
                message.update(status="incomplete", incomplete_at=now, incomplete_details={"reason": "run_cancelled"})
                self._log(job, "thread.message.incomplete", message)
        for step in job.steps:
            if step["status"] == "in_progress":
                step.update(status="cancelled", cancelled_at=now)
                self._log(job, "thread.run.step.cancelled", step)
        self._log(job, "thread.run.cancelled", obj)
        if job.log is not None:
            job.log.end(done=True)
        self._cond.notify_all()
        return self._run_answer(answer)

    def _run_submit_tool_outputs(self, req: _Request, thread_id: str, run_id: str) -> _Response | Stream:
        """Accept the outputs of every requested tool call and resume the run, streamed if asked."""
        job = self._run(thread_id, run_id)
        obj = job.obj
        stream = _stream_flag(req.body)
        if obj["status"] != "requires_action":
            raise _bad(f'Runs in status "{obj["status"]}" do not accept tool outputs.')
        outputs = req.body.get("tool_outputs")
        if outputs is None:
            raise _missing("tool_outputs")
        if not isinstance(outputs, list):
            raise _invalid_type("tool_outputs", "an array")
        for i, output in enumerate(outputs):
            if not isinstance(output, dict):
                raise _invalid_type(f"tool_outputs[{i}]", "an object")
            _required_str(output, f"tool_outputs[{i}]", "tool_call_id")
            _required_str(output, f"tool_outputs[{i}]", "output")
        expected = sorted(call["id"] for call in obj["required_action"]["submit_tool_outputs"]["tool_calls"])
        given = sorted(output["tool_call_id"] for output in outputs)
        if given != expected:
            raise _bad(f"Expected tool outputs for call_ids {expected}, got {given}.", "tool_outputs")
        obj.update(status="queued", required_action=None)
        job.t0, job.releases = time.monotonic(), self._releases
        job.tool_outputs = {output["tool_call_id"]: output["output"] for output in outputs}
        job.log = self._new_log(numbered=False) if stream else None
        self._log(job, "thread.run.queued", obj)
        self._spawn(self._work_run, job)
        return self._follow(job) if stream else self._run_answer(obj)

    def _step_list(self, req: _Request, thread_id: str, run_id: str) -> _Response:
        """List a run's steps (limit, order, after, before, include)."""
        include = req.includes((STEP_CONTENT,))
        steps = [_step_view(step, include) for step in self._run(thread_id, run_id).steps]
        return _Response(200, _page(steps, req.query))

    def _step_get(self, req: _Request, thread_id: str, run_id: str, step_id: str) -> _Response:
        """Retrieve a run step (include)."""
        include = req.includes((STEP_CONTENT,))
        step = next((step for step in self._run(thread_id, run_id).steps if step["id"] == step_id), None)
        if step is None:
            raise _not_found("run step", step_id)
        return _Response(200, _step_view(step, include))

    # ---- files ---------------------------------------------------------------------------------

    def _file(self, file_id: str) -> _File:
        """Return an uploaded file or reject with OpenAI's 404 for the Files routes."""
        stored = self._files.get(file_id)
        if stored is None:
            raise _Reject(_error(404, f"No such File object: {file_id}", "id"))
        return stored

    def _known_file(self, file_id: str, param: str) -> _File:
        """Return the file a parameter names or reject with 404."""
        stored = self._files.get(file_id)
        if stored is None:
            raise _not_found("file", file_id, param)
        return stored

    def _file_create(self, req: _Request) -> _Response:
        """Upload a file (multipart/form-data: `file` with its filename, `purpose`, optional `expires_after`)."""
        upload = req.body.get("file")
        if not isinstance(upload, _Upload):
            raise _missing("file")
        purpose = req.body.get("purpose")
        if purpose is None:
            raise _missing("purpose")
        if purpose not in FILE_PURPOSES:
            raise _bad(f"Invalid value for 'purpose': {purpose!r}. Supported values are: {', '.join(FILE_PURPOSES)}.",
                       "purpose", "invalid_value")
        now = _now()
        expires_at = None
        anchor, seconds = req.body.get("expires_after[anchor]"), req.body.get("expires_after[seconds]")
        if anchor is not None or seconds is not None:
            if anchor != "created_at":
                raise _bad(f"Invalid value for 'expires_after.anchor': {anchor!r}. Supported values are: created_at.",
                           "expires_after.anchor", "invalid_value")
            if not (isinstance(seconds, str) and seconds.isdigit() and 3600 <= int(seconds) <= 2592000):
                raise _bad(f"Invalid 'expires_after.seconds': {seconds!r} is not an integer between 3600 and "
                           "2592000.", "expires_after.seconds", "invalid_value")
            expires_at = now + int(seconds)
        obj = {"id": f"file-{uuid.uuid4().hex}", "object": "file", "bytes": len(upload.data), "created_at": now,
               "filename": upload.filename, "purpose": purpose, "status": "processed", "expires_at": expires_at,
               "status_details": None}
        self._files[obj["id"]] = _File(obj, upload.data)
        return _Response(200, copy.deepcopy(obj))

    def _file_list(self, req: _Request) -> _Response:
        """List files (purpose, limit up to 10,000, order, after)."""
        purpose = req.query.get("purpose")
        objects = [stored.obj for stored in self._files.values() if purpose is None or stored.obj["purpose"] == purpose]
        return _Response(200, _page(objects, req.query, max_limit=10000, default_limit=10000))

    def _file_get(self, req: _Request, file_id: str) -> _Response:
        """Retrieve a file's object."""
        return _Response(200, copy.deepcopy(self._file(file_id).obj))

    def _file_content(self, req: _Request, file_id: str) -> _Bytes:
        """Download a file's bytes."""
        return _Bytes(self._file(file_id).data)

    def _file_delete(self, req: _Request, file_id: str) -> _Response:
        """Delete a file; vector stores keep what they made of it, as OpenAI's do until told."""
        self._file(file_id)
        del self._files[file_id]
        return _Response(200, {"id": file_id, "object": "file", "deleted": True})

    # ---- vector stores -------------------------------------------------------------------------

    def _vector_store(self, store_id: str) -> _VectorStore:
        """Return a vector store or reject with 404."""
        store = self._vector_stores.get(store_id)
        if store is None:
            raise _not_found("vector store", store_id)
        return store

    def _known_store(self, store_id: str, param: str) -> _VectorStore:
        """Return the vector store a tool or tool resource names, or reject with 404 as OpenAI does."""
        store = self._vector_stores.get(store_id)
        if store is None:
            raise _Reject(_error(404, f"Vector store with id '{store_id}' not found.", param))
        return store

    def _new_store(self, name: str | None = None, file_ids: list[str] = (), chunking: _Chunking | None = None,
                   metadata: dict[str, str] | None = None,
                   expires_after: dict[str, Any] | None = None) -> _VectorStore:
        """Make and store a vector store of (known) files, ingested at once."""
        now = _now()
        obj = {"id": _id("vs"), "object": "vector_store", "created_at": now, "name": name or "", "usage_bytes": 0,
               "file_counts": {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0, "total": 0},
               "status": "completed", "expires_after": expires_after, "expires_at": None, "last_active_at": now,
               "metadata": metadata or {}}
        store = _VectorStore(obj)
        self._vector_stores[obj["id"]] = store
        for file_id in file_ids:
            self._add_store_file(store, file_id, chunking=chunking)
        self._refresh_store(store)
        return store

    def _refresh_store(self, store: _VectorStore) -> None:
        """Bring a store's file counts, usage and expiry up to date with its files."""
        obj = store.obj
        statuses = Counter(vs_file["status"] for vs_file in store.files.values())
        obj["file_counts"] = {**{status: statuses[status] for status in ("in_progress", "completed", "failed",
                                                                          "cancelled")},
                              "total": len(store.files)}
        obj["usage_bytes"] = sum(vs_file["usage_bytes"] for vs_file in store.files.values())
        expiry = obj["expires_after"]
        obj["expires_at"] = obj["last_active_at"] + expiry["days"] * 86400 if expiry else None

    def _add_store_file(self, store: _VectorStore, file_id: str, attributes: dict[str, Any] | None = None,
                        chunking: _Chunking | None = None) -> dict[str, Any]:
        """Add a known file to a store, its text chunked at once, and return its vector_store.file object."""
        stored = self._files[file_id]
        chunking = chunking or _chunking(None)
        vs_file = {"id": file_id, "object": "vector_store.file", "usage_bytes": len(stored.data),
                   "created_at": _now(), "vector_store_id": store.obj["id"], "status": "completed",
                   "last_error": None, "chunking_strategy": chunking.strategy, "attributes": attributes or {}}
        store.files[file_id] = vs_file
        store.chunks[file_id] = (stored.obj["filename"], retrieval.chunk(
            retrieval.text_of(stored.data), chunking.max_tokens, chunking.overlap))
        self._refresh_store(store)
        return vs_file

    def _search(self, store_ids: list[str], query: str, limit: int, threshold: float = 0.0,
                condition: dict[str, Any] | None = None) -> list[retrieval.Hit]:
        """Search the chunks of the stores' files (stores since deleted are skipped); each store searched
        becomes active now."""
        passages = []
        for store_id in dict.fromkeys(store_ids):
            store = self._vector_stores.get(store_id)
            if store is None:
                continue
            store.obj["last_active_at"] = _now()
            self._refresh_store(store)
            for file_id, (filename, chunks) in store.chunks.items():
                attributes = store.files[file_id]["attributes"]
                passages += [retrieval.Passage(file_id, filename, text, attributes) for text in chunks]
        return retrieval.search(passages, query, limit, threshold, condition)

    def _store_create(self, req: _Request) -> _Response:
        """Create a vector store, optionally of files (which must exist), ingested at once."""
        body = req.body
        name = _string(body, "name")
        _string(body, "description")
        file_ids = _string_list(body.get("file_ids") or [], "file_ids", 500)
        for file_id in file_ids:
            self._known_file(file_id, "file_ids")
        chunking = _chunking(body.get("chunking_strategy"))
        metadata = _metadata(body.get("metadata"))
        expires_after = _store_expiry(body.get("expires_after"))
        store = self._new_store(name, file_ids, chunking, metadata, expires_after)
        return _Response(200, copy.deepcopy(store.obj))

    def _store_list(self, req: _Request) -> _Response:
        """List vector stores."""
        return _Response(200, _page([store.obj for store in self._vector_stores.values()], req.query))

    def _store_get(self, req: _Request, store_id: str) -> _Response:
        """Retrieve a vector store."""
        return _Response(200, copy.deepcopy(self._vector_store(store_id).obj))

    def _store_update(self, req: _Request, store_id: str) -> _Response:
        """Change a vector store's name, metadata or expiration policy (null clears it)."""
        store = self._vector_store(store_id)
        body = req.body
        changes: dict[str, Any] = {}
        if body.get("name") is not None:
            changes["name"] = _string(body, "name")
        if "metadata" in body:
            changes["metadata"] = _metadata(body["metadata"])
        if "expires_after" in body:
            changes["expires_after"] = _store_expiry(body["expires_after"])
        store.obj.update(changes)
        self._refresh_store(store)
        return _Response(200, copy.deepcopy(store.obj))

    def _store_delete(self, req: _Request, store_id: str) -> _Response:
        """Delete a vector store; the files stay."""
        self._vector_store(store_id)
        del self._vector_stores[store_id]
        return _Response(200, {"id": store_id, "object": "vector_store.deleted", "deleted": True})

    def _store_search(self, req: _Request, store_id: str) -> _Response:
        """Search a vector store for a query (or several, searched as one): its best chunks, best first."""
        store = self._vector_store(store_id)
        body = req.body
        query = body.get("query")
        if query is None:
            raise _missing("query")
        queries = [query] if isinstance(query, str) else _string_list(query, "query")
        limit = _integer(body, "max_num_results", 1, 50) or DEFAULT_MAX_RESULTS
        ranking = _ranking_options(body.get("ranking_options"), "ranking_options",
                                   ("none", "auto", "default-2024-11-15"))
        condition = _file_filter(body.get("filters"), "filters")
        _flag(body, "rewrite_query", False)
        hits = self._search([store.obj["id"]], " ".join(queries), limit, ranking.get("score_threshold") or 0.0,
                            condition)
        data = [{"file_id": hit.passage.file_id, "filename": hit.passage.filename, "score": hit.score,
                 "attributes": copy.deepcopy(hit.passage.attributes),
                 "content": [{"type": "text", "text": hit.passage.text}]} for hit in hits]
        return _Response(200, {"object": "vector_store.search_results.page", "search_query": queries, "data": data,
                               "has_more": False, "next_page": None})

    # ---- vector store files and file batches ---------------------------------------------------

    def _store_file(self, store: _VectorStore, file_id: str) -> dict[str, Any]:
        """Return a vector store's file or reject with 404."""
        vs_file = store.files.get(file_id)
        if vs_file is None:
            raise _Reject(_error(404, f"No file found with id '{file_id}' in vector store '{store.obj['id']}'."))
        return vs_file

    def _store_file_create(self, req: _Request, store_id: str) -> _Response:
        """Add a file (which must exist) to a vector store, with attributes and a chunking strategy."""
        store = self._vector_store(store_id)
        file_id = _string(req.body, "file_id", required=True)
        self._known_file(file_id, "file_id")
        attributes = _attributes(req.body.get("attributes"))
        chunking = _chunking(req.body.get("chunking_strategy"))
        return _Response(200, copy.deepcopy(self._add_store_file(store, file_id, attributes, chunking)))

    def _store_files_page(self, files: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
        """A page of vector store files, filtered by `filter` (a status)."""
        status = query.get("filter")
        statuses = ("in_progress", "completed", "failed", "cancelled")
        if status is not None and status not in statuses:
            raise _bad(f"Invalid value for 'filter': {status!r}. Supported values are: {', '.join(statuses)}.",
                       "filter", "invalid_value")
        return _page([vs_file for vs_file in files if status in (None, vs_file["status"])], query)

    def _store_file_list(self, req: _Request, store_id: str) -> _Response:
        """List a vector store's files (filter, limit, order, after, before)."""
        return _Response(200, self._store_files_page(list(self._vector_store(store_id).files.values()), req.query))

    def _store_file_get(self, req: _Request, store_id: str, file_id: str) -> _Response:
        """Retrieve a vector store's file."""
        return _Response(200, copy.deepcopy(self._store_file(self._vector_store(store_id), file_id)))

    def _store_file_update(self, req: _Request, store_id: str, file_id: str) -> _Response:
        """Replace a vector store file's attributes."""
        vs_file = self._store_file(self._vector_store(store_id), file_id)
        if "attributes" not in req.body:
            raise _missing("attributes")
        vs_file["attributes"] = _attributes(req.body["attributes"])
        return _Response(200, copy.deepcopy(vs_file))

    def _store_file_delete(self, req: _Request, store_id: str, file_id: str) -> _Response:
        """Take a file out of a vector store; the file itself stays."""
        store = self._vector_store(store_id)
        self._store_file(store, file_id)
        del store.files[file_id], store.chunks[file_id]
        self._refresh_store(store)
        return _Response(200, {"id": file_id, "object": "vector_store.file.deleted", "deleted": True})

    def _store_file_content(self, req: _Request, store_id: str, file_id: str) -> _Response:
        """The text a vector store made of one of its files, as a page of text parts."""
        store = self._vector_store(store_id)
        self._store_file(store, file_id)
        data = [{"type": "text", "text": text} for text in store.chunks[file_id][1]]
        return _Response(200, {"object": "vector_store.file_content.page", "data": data, "has_more": False,
                               "next_page": None})

    def _batch_create(self, req: _Request, store_id: str) -> _Response:
        """Add files to a vector store in one batch (`file_ids` with shared attributes and chunking, or
        `files` each with its own), ingested at once."""
        store = self._vector_store(store_id)
        body = req.body
        if body.get("file_ids") is not None and body.get("files") is not None:
            raise _bad("Give 'file_ids' or 'files', not both.", "files", "invalid_value")
        attributes = _attributes(body.get("attributes"))
        chunking = _chunking(body.get("chunking_strategy"))
        wanted: list[tuple[str, dict[str, Any], _Chunking]] = []
        if body.get("files") is not None:
            if not isinstance(body["files"], list):
                raise _invalid_type("files", "an array")
            for i, spec in enumerate(body["files"]):
                if not isinstance(spec, dict):
                    raise _invalid_type(f"files[{i}]", "an object")
                wanted.append((_required_str(spec, f"files[{i}]", "file_id"),
                               _attributes(spec.get("attributes"), f"files[{i}].attributes") or attributes,
                               _chunking(spec["chunking_strategy"], f"files[{i}].chunking_strategy")
                               if spec.get("chunking_strategy") is not None else chunking))
        elif body.get("file_ids") is not None:
            wanted = [(file_id, attributes, chunking) for file_id in _string_list(body["file_ids"], "file_ids", 2000)]
        else:
            raise _missing("file_ids")
        for i, (file_id, _, _) in enumerate(wanted):
            self._known_file(file_id, f"files[{i}].file_id" if body.get("files") is not None else "file_ids")
        for file_id, file_attributes, file_chunking in wanted:
            self._add_store_file(store, file_id, file_attributes, file_chunking)
        count = len(dict.fromkeys(file_id for file_id, _, _ in wanted))
        obj = {"id": _id("vsfb"), "object": "vector_store.files_batch", "created_at": _now(),
               "vector_store_id": store_id, "status": "completed",
               "file_counts": {"in_progress": 0, "completed": count, "failed": 0, "cancelled": 0, "total": count}}
        store.batches[obj["id"]] = _Batch(obj, [file_id for file_id, _, _ in wanted])
        return _Response(200, copy.deepcopy(obj))

    def _batch(self, store_id: str, batch_id: str) -> _Batch:
        """Return a vector store's file batch or reject with 404."""
        batch = self._vector_store(store_id).batches.get(batch_id)
        if batch is None:
            raise _not_found("file batch", batch_id)
        return batch

    def _batch_get(self, req: _Request, store_id: str, batch_id: str) -> _Response:
        """Retrieve a file batch."""
        return _Response(200, copy.deepcopy(self._batch(store_id, batch_id).obj))

    def _batch_cancel(self, req: _Request, store_id: str, batch_id: str) -> _Response:
        """Refuse to cancel a batch: ingestion is instant, so every batch has completed."""
        batch = self._batch(store_id, batch_id)
        raise _bad(f"Cannot cancel a batch with status '{batch.obj['status']}'.")

    def _batch_files(self, req: _Request, store_id: str, batch_id: str) -> _Response:
        """List the files a batch added that are still in the store (filter, limit, order, after, before)."""
        store = self._vector_store(store_id)
        batch = self._batch(store_id, batch_id)
        files = [store.files[file_id] for file_id in dict.fromkeys(batch.file_ids) if file_id in store.files]
        return _Response(200, self._store_files_page(files, req.query))


class _Server(_HTTPServer):
    """The threading HTTP server behind a FakeOpenAI."""

    def __init__(self, fake: FakeOpenAI):
        super().__init__(fake)  # type: ignore[arg-type]
        self.RequestHandlerClass = _OpenAIHandler


class _OpenAIHandler(_Handler):
    """Hand every request to the FakeOpenAI and write its answer."""

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as two writes: without this, Nagle plus delayed ACKs add ~40 ms per answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _dispatch(self) -> None:
        """Answer one request."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        raw = self.rfile.read(length) if length > 0 else b""
        url = urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        self._send(self.server.fake._handle(self.command, url.path, url.query, headers, raw))

    def _send(self, response: _Response | _Bytes | Stream | None) -> None:
        """Write an answer; a file's bytes go out as they are."""
        if not isinstance(response, _Bytes):
            super()._send(response)
            return
        self.send_response(200)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.data)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        self.end_headers()
        self.wfile.write(response.data)
