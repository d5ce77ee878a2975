"""Hostile request bodies, by class, each with the status and envelope it must get.

Every row is sent to the route it names; a refusal must be the error envelope with its status,
`param` and `code`, and must leave the registry as it was (nothing half-stored that a later read
could trip over). Rows with status 200 mark the edge of a bound: just inside it is accepted, and
what was accepted reads back. Limits the HTTP server itself enforces (request line, headers) are
in tests/test_server_limits.py; malformed JSON, unknown fields and documented size limits in
tests/test_errors.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from bridge.api.bodies import MAX_JSON_DEPTH
from bridge.extensions import db
from bridge.models import Assistant, Message, Run, Thread
from bridge.schemas import MAX_FREE_FORM_BYTES
from tests.test_errors import ROUTES, Api, error_of, make_api


def nested(levels: int, leaf: Any = 1, key: str | None = "a") -> Any:
    """A value `levels` objects (or arrays, when `key` is None) deep around `leaf`."""
    value = leaf
    for _ in range(levels):
        value = [value] if key is None else {key: value}
    return value


def raw_nested(levels: int) -> bytes:
    """A body of `levels` nested arrays: beyond what a recursive parser survives."""
    return b"[" * levels + b"]" * levels


def function_tool(parameters: Any) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": "f", "parameters": parameters}}]


def json_schema_format(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}


# Levels a free-form field may nest, itself included, counting the body as the first level:
# body > tools > tool > function > parameters.
PARAMETERS_DEPTH = MAX_JSON_DEPTH - 4
# body > response_format > json_schema > schema.
SCHEMA_DEPTH = MAX_JSON_DEPTH - 3


def deep_under(field: str) -> dict[str, Any]:
    """The expected answer to a document nested too deeply under `field`."""
    return {"param": field, "code": "nested_too_deeply", "param_is_prefix": True}


@dataclass(frozen=True)
class Row:
    """One hostile input: where it goes, and what it must be answered."""

    klass: str
    name: str
    route: str
    fields: dict[str, Any] | None = None  # merged over the route's smallest valid body
    raw: bytes | None = None  # sent as is instead
    status: int = 400
    param: str | None = None
    code: str | None = None
    # `param` is where the bad value lies; with this set, the path into it may follow.
    param_is_prefix: bool = False

    @property
    def id(self) -> str:
        return f"{self.klass}/{self.name}"


ROWS = [
    # ---- nesting: the whole body is bounded, so no free-form field can store a deep document ---
    *[Row("deep-json", f"10000-levels-{route}", route, raw=raw_nested(10_000),
          code="nested_too_deeply") for route in ROUTES],
    Row("deep-json", "10000-levels-in-tool-resources", "thread",
        raw=b'{"tool_resources": ' + raw_nested(10_000) + b"}", code="nested_too_deeply"),
    Row("deep-json", "over-limit-parameters-run", "run",
        {"tools": function_tool(nested(PARAMETERS_DEPTH + 1))},
        **deep_under("tools.0.function.parameters")),
    Row("deep-json", "over-limit-parameters-assistant", "assistant",
        {"tools": function_tool(nested(PARAMETERS_DEPTH + 1))},
        **deep_under("tools.0.function.parameters")),
    Row("deep-json", "over-limit-json-schema", "assistant",
        {"response_format": json_schema_format(nested(SCHEMA_DEPTH + 1))},
        **deep_under("response_format.json_schema.schema")),
    Row("deep-json", "over-limit-tool-resources", "thread",
        {"tool_resources": nested(MAX_JSON_DEPTH)}, **deep_under("tool_resources")),
    Row("deep-json", "over-limit-truncation-strategy", "run",
        {"truncation_strategy": nested(MAX_JSON_DEPTH, key=None)},
        **deep_under("truncation_strategy")),
    Row("deep-json", "over-limit-thread-and-run", "thread_and_run",
        {"thread": {"messages": [{"role": "user", "content": "hi",
                                  "metadata": nested(MAX_JSON_DEPTH)}]}},
        **deep_under("thread.messages.0.metadata")),
    Row("deep-json", "at-limit-parameters-run", "run",
        {"tools": function_tool(nested(PARAMETERS_DEPTH))}, status=200),
    Row("deep-json", "at-limit-parameters-assistant", "assistant",
        {"tools": function_tool(nested(PARAMETERS_DEPTH, key="properties"))}, status=200),
    Row("deep-json", "at-limit-json-schema", "run",
        {"response_format": json_schema_format(nested(SCHEMA_DEPTH))}, status=200),

    # ---- JSON types OpenAI refuses --------------------------------------------------------------
    Row("strict-types", "temperature-string", "run", {"temperature": "1.5"}, param="temperature"),
    Row("strict-types", "temperature-bool", "run", {"temperature": True}, param="temperature"),
    Row("strict-types", "temperature-bool-assistant", "assistant", {"temperature": True},
        param="temperature"),
    Row("strict-types", "top-p-string", "run", {"top_p": "0.5"}, param="top_p"),
    Row("strict-types", "top-p-string-assistant", "assistant", {"top_p": "0.5"}, param="top_p"),
    Row("strict-types", "max-prompt-tokens-string", "run", {"max_prompt_tokens": "300"},
        param="max_prompt_tokens"),
    Row("strict-types", "max-prompt-tokens-float", "run", {"max_prompt_tokens": 300.0},
        param="max_prompt_tokens"),
    Row("strict-types", "max-completion-tokens-bool", "run", {"max_completion_tokens": True},
        param="max_completion_tokens"),
    Row("strict-types", "parallel-tool-calls-int", "run", {"parallel_tool_calls": 1},
        param="parallel_tool_calls"),
    Row("strict-types", "parallel-tool-calls-string", "run", {"parallel_tool_calls": "yes"},
        param="parallel_tool_calls"),
    Row("strict-types", "stream-zero", "run", {"stream": 0}, param="stream"),
    Row("strict-types", "stream-zero-thread-and-run", "thread_and_run", {"stream": 0},
        param="stream"),
    Row("strict-types", "function-strict-string", "assistant",
        {"tools": [{"type": "function", "function": {"name": "f", "strict": "true"}}]},
        param="tools.0.function.strict"),
    Row("strict-types", "truncation-last-messages-float", "run",
        {"truncation_strategy": {"type": "last_messages", "last_messages": 3.0}},
        param="truncation_strategy.last_messages"),
    Row("strict-types", "temperature-integer-is-a-number", "run", {"temperature": 1}, status=200),

    # ---- the documented shapes of options --------------------------------------------------------
    *[Row("option-shapes", f"response-format-{name}-{route}", route, {"response_format": value},
          param="response_format")
      for route in ("run", "assistant")
      for name, value in (("42", 42), ("list", []), ("true", True), ("bogus", "bogus"),
                          ("unknown-type", {"type": "xml"}), ("no-type", {}))],
    Row("option-shapes", "response-format-json-schema-without-name", "run",
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
        param="response_format.json_schema.name"),
    Row("option-shapes", "response-format-extra-field", "assistant",
        {"response_format": {"type": "text", "strict": True}}, param="response_format.strict"),
    *[Row("option-shapes", f"tool-choice-{name}", "run", {"tool_choice": value},
          param="tool_choice")
      for name, value in (("42", 42), ("list", []), ("true", True), ("bogus", "bogus"),
                          ("function-without-name", {"type": "function"}),
                          )],
    Row("option-shapes", "tool-choice-unknown-type", "run", {"tool_choice": {"type": "web_search"}},
        param="tool_choice.type"),
    Row("option-shapes", "tool-choice-function-name-invalid", "thread_and_run",
        {"tool_choice": {"type": "function", "function": {"name": "a b"}}},
        param="tool_choice.function.name"),
    Row("option-shapes", "truncation-unknown-type", "run", {"truncation_strategy": {"type": "x"}},
        param="truncation_strategy.type"),
    Row("option-shapes", "truncation-not-an-object", "run", {"truncation_strategy": "auto"},
        param="truncation_strategy"),
    Row("option-shapes", "tool-resources-unknown-tool", "thread",
        {"tool_resources": {"web": {}}}, param="tool_resources.web"),
    Row("option-shapes", "tool-resources-too-many-files", "assistant",
        {"tool_resources": {"code_interpreter": {"file_ids": ["file_1"] * 21}}},
        param="tool_resources.code_interpreter.file_ids"),
    Row("option-shapes", "file-search-settings-out-of-range", "assistant",
        {"tools": [{"type": "file_search", "file_search": {"max_num_results": 51}}]},
        param="tools.0.file_search.max_num_results"),
    Row("option-shapes", "tool-unknown-type", "run", {"tools": [{"type": "browser"}]},
        param="tools.0"),
    *[Row("option-shapes", f"documented-{name}", "run", {field: value}, status=200)
      for name, field, value in (
          ("response-format-auto", "response_format", "auto"),
          ("response-format-text", "response_format", {"type": "text"}),
          ("response-format-json-object", "response_format", {"type": "json_object"}),
          ("response-format-json-schema", "response_format", json_schema_format({"type": "object"})),
          ("tool-choice-none", "tool_choice", "none"),
          ("tool-choice-required", "tool_choice", "required"),
          ("tool-choice-function", "tool_choice", {"type": "function", "function": {"name": "f"}}),
          ("tool-choice-file-search", "tool_choice", {"type": "file_search"}),
          ("truncation-last-messages", "truncation_strategy",
           {"type": "last_messages", "last_messages": 4}))],

    # ---- numbers JSON cannot carry back out --------------------------------------------------------
    Row("numbers", "overflowing-float-in-parameters", "assistant",
        raw=b'{"model": "m", "tools": [{"type": "function", "function": {"name": "f", '
            b'"parameters": {"maximum": 1e400}}}]}',
        param="tools.0.function.parameters.maximum", code="invalid_number"),
    Row("numbers", "overflowing-temperature", "run", raw=b'{"assistant_id": "x", "temperature": -1e999}',
        param="temperature", code="invalid_number"),
    Row("numbers", "nan-literal", "run", raw=b'{"assistant_id": "x", "top_p": NaN}',
        code="invalid_json"),

    # ---- strings the registry cannot store ---------------------------------------------------------
    Row("strings", "nul-in-content", "message", {"content": "a\u0000b"}, param="content",
        code="invalid_string"),
    Row("strings", "nul-in-text-part", "message",
        {"content": [{"type": "text", "text": "\u0000"}]}, param="content.0.text",
        code="invalid_string"),
    Row("strings", "nul-in-metadata-key", "thread", {"metadata": {"k\u0000": "v"}},
        param="metadata", code="invalid_string"),
    Row("strings", "nul-in-metadata-value", "run", {"metadata": {"k": "\u0000"}},
        param="metadata.k", code="invalid_string"),
    Row("strings", "nul-in-assistant-name", "assistant", {"name": "help\u0000er"}, param="name",
        code="invalid_string"),
    Row("strings", "nul-in-model", "run", {"model": "gpt\u0000"}, param="model",
        code="invalid_string"),
    Row("strings", "nul-in-instructions", "assistant", {"instructions": "\u0000"},
        param="instructions", code="invalid_string"),
    Row("strings", "lone-surrogate-in-content", "message",
        raw=b'{"role": "user", "content": "\\ud800"}', param="content", code="invalid_string"),
    Row("strings", "lone-surrogate-in-metadata", "thread",
        raw=b'{"metadata": {"k": "x\\udfff"}}', param="metadata.k", code="invalid_string"),
    Row("strings", "lone-surrogate-in-parameters-key", "run",
        raw=b'{"assistant_id": "x", "tools": [{"type": "function", "function": {"name": "f", '
            b'"parameters": {"\\ud83d": 1}}}]}',
        param="tools.0.function.parameters", code="invalid_string"),
    Row("strings", "escaped-surrogate-pair-is-an-emoji", "message",
        raw=b'{"role": "user", "content": "\\ud83d\\ude00"}', status=200),

    # ---- free-form objects are bounded in size ----------------------------------------------------------
    Row("free-form-size", "parameters-over-limit", "assistant",
        {"tools": function_tool({"description": "x" * MAX_FREE_FORM_BYTES})},
        param="tools.0.function.parameters"),
    Row("free-form-size", "json-schema-over-limit", "run",
        {"response_format": json_schema_format({"description": "x" * MAX_FREE_FORM_BYTES})},
        param="response_format.json_schema.schema"),
    Row("free-form-size", "parameters-at-limit", "run",
        {"tools": function_tool({"description": "x" * (MAX_FREE_FORM_BYTES - 20)})}, status=200),
]


def _counts(app) -> dict[str, int]:
    with app.app_context():
        counts = {model.__tablename__: db.session.scalar(select(func.count()).select_from(model))
                  for model in (Thread, Message, Run, Assistant)}
        db.session.remove()
        return counts


def _send(api: Api, row: Row):
    admin = row.route == "assistant"
    if row.raw is not None:
        raw = row.raw
        if b'"assistant_id": "x"' in raw:
            raw = raw.replace(b'"assistant_id": "x"', f'"assistant_id": "{api.assistant_id}"'.encode())
        return api.post(row.route, data=raw, admin=admin)
    return api.post(row.route, {**api.valid(row.route), **(row.fields or {})}, admin=admin)


@pytest.fixture
def api(app) -> Api:
    return make_api(app)


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_hostile_input_is_answered_as_the_table_says(app, api, row):
    before = _counts(app)

    response = _send(api, row)

    if row.status == 200:
        assert response.status_code == 200, response.get_data(as_text=True)
        created = response.get_json()
        assert _readable(api, row.route, created), "an accepted object does not read back"
        return
    error = error_of(response, row.status)
    if row.param_is_prefix:
        assert error["param"] == row.param or error["param"].startswith(row.param + ".")
    else:
        assert error["param"] == row.param
    if row.code is not None:
        assert error["code"] == row.code
    if row.param is not None:
        assert row.param in error["message"]
    assert _counts(app) == before, "a refused request stored something"


def _readable(api: Api, route: str, created: dict[str, Any]) -> bool:
    """The object the route made reads back as it was answered, alone and in its list."""
    headers = api.admin_headers if route == "assistant" else api.headers
    if route == "assistant":
        paths = [f"/v1/assistants/{created['id']}", "/v1/assistants?limit=100"]
    elif route == "message":
        paths = [f"/v1/threads/{api.thread_id}/messages/{created['id']}",
                 f"/v1/threads/{api.thread_id}/messages?limit=100"]
    elif route in ("run", "thread_and_run"):
        paths = [f"/v1/threads/{created['thread_id']}/runs/{created['id']}",
                 f"/v1/threads/{created['thread_id']}/runs?limit=100"]
    else:
        paths = [f"/v1/threads/{created['id']}", "/v1/threads?limit=100"]
    single = api.client.get(paths[0], headers=headers)
    listing = api.client.get(paths[1], headers=headers)
    if single.status_code != 200 or listing.status_code != 200:
        return False
    listed = {item["id"]: item for item in listing.get_json()["data"]}
    mine = single.get_json()
    stable = {key: value for key, value in created.items()
              if key not in ("status", "started_at", "completed_at", "usage", "expires_at",
                             "required_action")}
    return all(mine[key] == value for key, value in stable.items()) and created["id"] in listed


def test_every_class_has_a_refusal_and_an_edge():
    """The table keeps both sides of each bound it tests."""
    classes = {row.klass for row in ROWS}
    refused = {row.klass for row in ROWS if row.status != 200}
    accepted = {row.klass for row in ROWS if row.status == 200}
    assert refused == classes
    assert accepted == classes - {"numbers"}  # finite numbers are everywhere else


@pytest.mark.parametrize("levels, code", [(MAX_JSON_DEPTH, None),
                                          (MAX_JSON_DEPTH + 1, "nested_too_deeply")])
def test_the_depth_limit_counts_the_body_as_the_first_level(api, levels, code):
    """MAX_JSON_DEPTH levels, the body included, pass the bounds; one more does not."""
    # An unknown field, so a body within the bounds is refused by validation instead: the code
    # tells which of the two refused it.
    body = {"x": nested(levels - 2, leaf=[], key=None)}

    error = error_of(api.post("thread", data=json.dumps(body).encode()), 400)

    assert error["code"] == code
