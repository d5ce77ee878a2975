"""Every failure is OpenAI's JSON error envelope, with the right status, and never HTML or a trace.

The envelope is `{"error": {"message", "type", "param", "code"}}`. The tables below walk through
malformed bodies, wrong types, unknown and missing fields, the documented size limits, unknown
routes and methods, oversized bodies, unexpected exceptions, authentication, and the 409 a thread
answers while a run is active. A few go through the official SDK to show its exception classes
(BadRequestError, NotFoundError, ConflictError, AuthenticationError) map onto our statuses.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

import openai
import pytest

from bridge.registry import new_id
from tests.conftest import make_token, wait_for

ENVELOPE_FIELDS = {"message", "type", "param", "code"}
TRACE_MARKERS = ("Traceback", 'File "', "<html", "<!doctype", "Werkzeug")


def assert_envelope(status: int, content_type: str, text: str, expected_status: int) -> dict:
    """Check one error reply and return its `error` object."""
    assert status == expected_status, text
    assert content_type.startswith("application/json"), content_type
    for marker in TRACE_MARKERS:
        assert marker.lower() not in text.lower(), f"{marker!r} leaked into the error reply"
    body = json.loads(text)
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == ENVELOPE_FIELDS
    assert isinstance(error["message"], str) and error["message"].strip()
    assert error["type"] in ("invalid_request_error", "server_error")
    assert error["param"] is None or isinstance(error["param"], str)
    assert error["code"] is None or isinstance(error["code"], str)
    return error


def error_of(response, status: int) -> dict:
    """The `error` object of a Flask test-client reply, after checking the envelope."""
    return assert_envelope(response.status_code, response.content_type or "",
                           response.get_data(as_text=True), status)


def sdk_error_of(exc: openai.APIStatusError, status: int) -> dict:
    """The same checks on the HTTP reply behind an SDK exception."""
    response = exc.response
    error = assert_envelope(response.status_code, response.headers.get("content-type", ""),
                            response.text, status)
    assert (exc.param, exc.code, exc.type) == (error["param"], error["code"], error["type"])
    return error


# ---- a caller with a thread and an assistant ------------------------------------------------------

ROUTES = {
    "thread": "/v1/threads",
    "modify_thread": "/v1/threads/{thread}",
    "message": "/v1/threads/{thread}/messages",
    "run": "/v1/threads/{thread}/runs",
    "thread_and_run": "/v1/threads/runs",
    "assistant": "/v1/assistants",
}


@dataclass
class Api:
    client: object
    headers: dict[str, str]
    admin_headers: dict[str, str]
    thread_id: str
    assistant_id: str

    def url(self, route: str) -> str:
        return ROUTES[route].format(thread=self.thread_id)

    def post(self, route: str, body=None, *, data=None, admin: bool = False, headers=None):
        headers = {**(self.admin_headers if admin else self.headers), **(headers or {})}
        if body is not None:
            return self.client.post(self.url(route), json=body, headers=headers)
        return self.client.post(self.url(route), data=data, headers=headers,
                                content_type="application/json")

    def valid(self, route: str) -> dict:
        """The smallest body the route accepts."""
        return {"thread": {}, "modify_thread": {}, "assistant": {"model": "fake-model"},
                "message": {"role": "user", "content": "hi"},
                "run": {"assistant_id": self.assistant_id},
                "thread_and_run": {"assistant_id": self.assistant_id}}[route]


ADMIN_ROUTES = {"assistant"}
BODY_ROUTES = ("thread", "modify_thread", "message", "run", "thread_and_run", "assistant")


def make_api(app) -> Api:
    client = app.test_client()
    headers = {"Authorization": f"Bearer {make_token(app, 'alice')}"}
    admin = {"Authorization": f"Bearer {make_token(app, 'admin', admin=True)}"}
    assistant = client.post("/v1/assistants", json={"model": "fake-model"}, headers=admin)
    thread = client.post("/v1/threads", json={}, headers=headers)
    assert assistant.status_code == thread.status_code == 200
    return Api(client, headers, admin, thread.get_json()["id"], assistant.get_json()["id"])


@pytest.fixture
def api(app) -> Api:
    return make_api(app)


def post_with(api: Api, route: str, **fields):
    """POST the route's valid body with `fields` merged over it."""
    return api.post(route, {**api.valid(route), **fields}, admin=route in ADMIN_ROUTES)


# ---- malformed bodies -----------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    pytest.param(b"{bad", id="truncated"),
    pytest.param(b"{'single': 'quotes'}", id="python-literal"),
    pytest.param(b'{"a": 1,}', id="trailing-comma"),
    pytest.param(b"\xff\xfe{}", id="not-utf8"),
    pytest.param(b"NaN-ish", id="garbage"),
])
@pytest.mark.parametrize("route", BODY_ROUTES)
def test_malformed_json_body(api, route, raw):
    error = error_of(api.post(route, data=raw, admin=route in ADMIN_ROUTES), 400)

    assert error["code"] == "invalid_json"
    assert "JSON" in error["message"]


@pytest.mark.parametrize("raw", [b"[]", b'[{"role": "user"}]', b'"text"', b"42", b"null", b"true"])
@pytest.mark.parametrize("route", ["thread", "message", "run"])
def test_body_that_is_not_a_json_object(api, route, raw):
    error = error_of(api.post(route, data=raw), 400)

    assert error["code"] == "invalid_json"
    assert "object" in error["message"]


@pytest.mark.parametrize("raw", [b'{"tool_resources": {"x": NaN}}',
                                 b'{"tool_resources": {"x": -Infinity}}'], ids=["NaN", "Infinity"])
def test_non_standard_json_tokens_are_rejected(api, raw):
    assert error_of(api.post("thread", data=raw), 400)["code"] == "invalid_json"


def test_empty_body_counts_as_an_empty_object(api):
    assert api.post("thread", data=b"").status_code == 200
    error = error_of(api.post("run", data=b"  \n"), 400)
    assert error["param"] == "assistant_id"


# ---- field validation -----------------------------------------------------------------------------

@pytest.mark.parametrize("route, fields, param", [
    ("thread", {"metadata": ["a"]}, "metadata"),
    ("thread", {"metadata": "k=v"}, "metadata"),
    ("thread", {"messages": "hello"}, "messages"),
    ("thread", {"tool_resources": "none"}, "tool_resources"),
    ("message", {"role": "system"}, "role"),
    ("message", {"role": 1}, "role"),
    ("message", {"attachments": "file_1"}, "attachments"),
    ("message", {"metadata": 7}, "metadata"),
    pytest.param("message", {"content": 5}, "content", id="message-content-number"),
    pytest.param("message", {"content": {"text": "hi"}}, "content", id="message-content-object"),
    ("run", {"temperature": "hot"}, "temperature"),
    ("run", {"temperature": 2.5}, "temperature"),
    ("run", {"top_p": -0.1}, "top_p"),
    ("run", {"max_completion_tokens": "many"}, "max_completion_tokens"),
    ("run", {"max_prompt_tokens": 10}, "max_prompt_tokens"),
    ("run", {"tools": {"type": "function"}}, "tools"),
    ("run", {"assistant_id": 123}, "assistant_id"),
    ("run", {"assistant_id": ""}, "assistant_id"),
    ("run", {"parallel_tool_calls": "maybe"}, "parallel_tool_calls"),
    ("run", {"reasoning_effort": "extreme"}, "reasoning_effort"),
    ("run", {"instructions": ["be", "brief"]}, "instructions"),
    ("thread_and_run", {"thread": []}, "thread"),
    ("thread_and_run", {"temperature": "hot"}, "temperature"),
    ("assistant", {"model": 7}, "model"),
    ("assistant", {"name": "n" * 257}, "name"),
])
def test_wrong_type_names_the_field(api, route, fields, param):
    error = error_of(post_with(api, route, **fields), 400)

    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert param in error["message"]


@pytest.mark.parametrize("route, fields, param_prefix", [
    ("thread", {"messages": [{"role": "user", "content": "x", "foo": 1}]}, "messages.0"),
    ("thread", {"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ("run", {"tools": [{"type": "web_browser"}]}, "tools.0"),
    ("run", {"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools.0"),
    ("run", {"additional_messages": [{"role": "user"}]}, "additional_messages.0.content"),
    ("thread_and_run", {"thread": {"metadata": {"k": 1}}}, "thread.metadata.k"),
])
def test_nested_errors_name_the_path(api, route, fields, param_prefix):
    error = error_of(post_with(api, route, **fields), 400)

    assert error["param"].startswith(param_prefix)


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_unknown_top_level_field_is_named(api, route):
    error = error_of(post_with(api, route, colour="blue"), 400)

    assert error["param"] == "colour"
    assert "Unrecognized request argument" in error["message"] and "colour" in error["message"]


@pytest.mark.parametrize("route, body, param", [
    ("run", {}, "assistant_id"),
    ("run", {"model": "fake-model"}, "assistant_id"),
    ("thread_and_run", {"thread": {}}, "assistant_id"),
    ("message", {"content": "hi"}, "role"),
    ("message", {"role": "user"}, "content"),
    ("message", {}, "role"),
    ("assistant", {"name": "no model"}, "model"),
])
def test_missing_required_field(api, route, body, param):
    error = error_of(api.post(route, body, admin=route in ADMIN_ROUTES), 400)

    assert error["param"] == param
    assert error["message"] == f"Missing required parameter: '{param}'."


# ---- documented limits ----------------------------------------------------------------------------

KEY_65 = "k" * 65


@pytest.mark.parametrize("metadata, param", [
    pytest.param({f"k{i}": "v" for i in range(17)}, "metadata", id="17-keys"),
    pytest.param({KEY_65: "v"}, "metadata", id="65-char-key"),
    pytest.param({"": "v"}, "metadata", id="empty-key"),
    pytest.param({"k": "v" * 513}, "metadata.k", id="513-char-value"),
    pytest.param({"k": 5}, "metadata.k", id="number-value"),
    pytest.param({"k": None}, "metadata.k", id="null-value"),
    pytest.param({"k": {"nested": "v"}}, "metadata.k", id="object-value"),
])
@pytest.mark.parametrize("route", ["thread", "message", "run", "modify_thread"])
def test_metadata_limits(api, route, metadata, param):
    error = error_of(post_with(api, route, metadata=metadata), 400)

    assert error["param"].startswith(param)


@pytest.mark.parametrize("route, fields, param", [
    ("thread", {"metadata": {"user_id": "mallory"}}, "metadata.user_id"),
    ("modify_thread", {"metadata": {"user_id": "mallory"}}, "metadata.user_id"),
    ("thread_and_run", {"thread": {"metadata": {"user_id": "mallory"}}}, "thread.metadata.user_id"),
])
def test_thread_metadata_user_id_is_reserved(api, route, fields, param):
    error = error_of(post_with(api, route, **fields), 400)

    assert error["param"] == param
    assert "reserved" in error["message"]


@pytest.mark.parametrize("route", ["thread", "modify_thread"])
def test_thread_metadata_keeps_a_key_for_the_owner(api, route):
    error = error_of(post_with(api, route, metadata={f"k{i}": "v" for i in range(16)}), 400)

    assert error["param"] == "metadata"
    assert "15" in error["message"]


def test_metadata_key_error_names_metadata(api):
    error = error_of(post_with(api, "thread", metadata={KEY_65: "v"}), 400)

    assert error["param"] in ("metadata", f"metadata.{KEY_65}")


# A thread keeps one of the 16 metadata keys for its owner stamp.
METADATA_KEYS = {"thread": 15, "modify_thread": 15, "message": 16, "run": 16}


@pytest.mark.parametrize("route", sorted(METADATA_KEYS))
def test_metadata_at_the_limits_is_accepted(api, route):
    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(METADATA_KEYS[route])}

    response = post_with(api, route, metadata=metadata)

    assert response.status_code == 200, response.get_json()
    assert {k: v for k, v in response.get_json()["metadata"].items() if k != "user_id"} == metadata


@pytest.mark.parametrize("content", [
    pytest.param("x" * 256_001, id="string"),
    pytest.param([{"type": "text", "text": "x" * 256_001}], id="text-part"),
    pytest.param([], id="no-parts"),
    pytest.param([{"type": "text", "text": "x"}] * 101, id="101-parts"),
    pytest.param([{"type": "image_file", "image_file": {"file_id": "f"}}], id="image-part"),
])
def test_message_content_limits(api, content):
    error = error_of(post_with(api, "message", content=content), 400)

    assert error["param"].startswith("content")


@pytest.mark.parametrize("content", ["x" * 256_001, [{"type": "text", "text": "x" * 256_001}]],
                         ids=["string", "text-part"])
def test_message_content_error_names_content(api, content):
    error = error_of(post_with(api, "message", content=content), 400)

    assert error["param"] in ("content", "content.0.text")
    assert "valid string" not in error["message"]


def test_message_content_at_the_limit_is_accepted(api):
    response = post_with(api, "message", content="x" * 256_000)

    assert response.status_code == 200
    assert len(response.get_json()["content"][0]["text"]["value"]) == 256_000


@pytest.mark.parametrize("route, field, count, status", [
    ("thread", "messages", 32, 200),
    ("thread", "messages", 33, 400),
    ("run", "additional_messages", 33, 400),
])
def test_message_count_limit(api, route, field, count, status):
    messages = [{"role": "user", "content": f"m{i}"} for i in range(count)]

    response = post_with(api, route, **{field: messages})

    if status == 400:
        assert error_of(response, 400)["param"] == field
    else:
        assert response.status_code == 200, response.get_json()


@pytest.mark.parametrize("route", ["run", "thread_and_run"])
def test_stream_true_answers_an_event_stream(api, route):
    response = post_with(api, route, stream=True)

    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert response.get_data(as_text=True).endswith("event: done\ndata: [DONE]\n\n")


@pytest.mark.parametrize("route", ["run", "thread_and_run"])
def test_stream_must_be_a_boolean(api, route):
    error = error_of(post_with(api, route, stream="yes"), 400)

    assert error["param"] == "stream"


@pytest.mark.parametrize("route", ["run", "thread_and_run"])
def test_stream_false_is_accepted(api, route):
    assert post_with(api, route, stream=False).status_code == 200


# ---- not found, method not allowed ------------------------------------------------------------------

@pytest.mark.parametrize("route", ["run", "thread_and_run"])
def test_unknown_assistant_on_run_create(api, route):
    unknown = new_id("asst")

    error = error_of(post_with(api, route, assistant_id=unknown), 404)

    assert error["param"] == "assistant_id" and unknown in error["message"]
    threads = api.client.get("/v1/threads", headers=api.headers).get_json()["data"]
    assert [t["id"] for t in threads] == [api.thread_id], "a failed create left a thread behind"


@pytest.mark.parametrize("method, path, param", [
    ("GET", "/v1/nope", None),
    ("GET", "/nope", None),
    ("POST", "/v1/threads/{thread}/nope", None),
    ("GET", "/v1/threads/thread_missing", "thread_id"),
    ("POST", "/v1/threads/thread_missing/messages", "thread_id"),
    ("GET", "/v1/threads/{thread}/runs/run_missing", "run_id"),
    ("GET", "/v1/threads/{thread}/messages/msg_missing", "message_id"),
    ("GET", "/v1/assistants/asst_missing", "assistant_id"),
])
def test_not_found_is_json(api, method, path, param):
    response = api.client.open(path.format(thread=api.thread_id), method=method,
                               headers=api.headers, json={"role": "user", "content": "hi"})

    error = error_of(response, 404)

    assert error["param"] == param


@pytest.mark.parametrize("method, path, allowed", [
    ("PUT", "/v1/threads", {"GET", "POST"}),
    ("DELETE", "/v1/threads", {"GET", "POST"}),
    ("PATCH", "/v1/threads/thread_x", {"GET", "POST", "DELETE"}),
    ("GET", "/v1/threads/thread_x/runs/run_x/cancel", {"POST"}),
    ("PUT", "/v1/assistants", {"GET", "POST"}),
    ("POST", "/openapi.json", {"GET"}),
])
def test_wrong_method_is_405_with_allow(api, method, path, allowed):
    response = api.client.open(path, method=method, headers=api.headers)

    error_of(response, 405)

    advertised = {m.strip() for m in response.headers["Allow"].split(",")}
    assert allowed <= advertised
    assert method not in advertised


# ---- oversized bodies -------------------------------------------------------------------------------

@pytest.fixture
def small_api(make_app) -> Api:
    return make_api(make_app(MAX_CONTENT_LENGTH=2048))


def padded(body: bytes, size: int) -> bytes:
    """Valid JSON of exactly `size` bytes: whitespace after the object."""
    assert len(body) <= size
    return body + b" " * (size - len(body))


@pytest.mark.parametrize("route", ["thread", "message"])
def test_body_over_max_content_length_is_413(small_api, route):
    body = b'{"metadata": {"k": "' + b"v" * 3000 + b'"}}'

    error = error_of(small_api.post(route, data=body), 413)

    assert "2048" in error["message"]


def test_body_at_max_content_length_is_read(small_api):
    response = small_api.post("message", data=padded(b'{"role": "user", "content": "hi"}', 2048))

    assert response.status_code == 200


def test_chunked_body_over_max_content_length_is_413(make_app, serve):
    app = make_app(MAX_CONTENT_LENGTH=2048)
    url = urlsplit(serve(app))

    body = b'{"metadata": {"k": "' + b"v" * 3000 + b'"}}'
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request("POST", "/v1/threads", body=iter([body[:1000], body[1000:]]),
                     encode_chunked=True,
                     headers={"Authorization": f"Bearer {make_token(app, 'alice')}",
                              "Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        response = conn.getresponse()
        text = response.read().decode()
        status, content_type = response.status, response.getheader("Content-Type", "")
    finally:
        conn.close()

    assert_envelope(status, content_type, text, 413)


# ---- unexpected failures, authentication --------------------------------------------------------------

SECRET = "secret-detail-9f2c"


def test_unexpected_exception_is_a_500_envelope(make_app):
    app = make_app()

    def boom():
        raise RuntimeError(f"database password is {SECRET}")

    app.add_url_rule("/boom", view_func=boom)
    app.config["PROPAGATE_EXCEPTIONS"] = False

    response = app.test_client().get("/boom")

    error = error_of(response, 500)
    assert error["type"] == "server_error"
    assert SECRET not in response.get_data(as_text=True)
    assert "RuntimeError" not in response.get_data(as_text=True)


def test_exception_inside_an_api_route_is_a_500_envelope(app, monkeypatch):
    api = make_api(app)
    app.config["PROPAGATE_EXCEPTIONS"] = False

    def broken(*args, **kwargs):
        raise KeyError(SECRET)

    monkeypatch.setattr(app.extensions["bridge.engine"], "create_thread", broken)

    response = api.post("thread", {})

    assert error_of(response, 500)["type"] == "server_error"
    assert SECRET not in response.get_data(as_text=True)


@pytest.mark.parametrize("headers", [
    pytest.param({}, id="no-token"),
    pytest.param({"Authorization": "Bearer not-a-jwt"}, id="garbage-token"),
    pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic-auth"),
])
def test_authentication_failure_is_a_401_envelope(client, headers):
    response = client.post("/v1/threads", json={}, headers=headers)

    error = error_of(response, 401)

    assert error["code"] == "invalid_token"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_non_admin_assistant_create_is_a_403_envelope(api):
    response = api.client.post("/v1/assistants", json={"model": "m"}, headers=api.headers)

    assert error_of(response, 403)["code"] == "forbidden"


# ---- a thread with an active run ---------------------------------------------------------------------

def _cancel_and_settle(client, headers, thread_id: str, run_id: str) -> None:
    url = f"/v1/threads/{thread_id}/runs/{run_id}"
    assert client.post(url + "/cancel", headers=headers).status_code == 200
    wait_for(lambda: client.get(url, headers=headers).get_json()["status"] == "cancelled")


def test_active_run_locks_the_thread_with_409(make_app):
    api = make_api(make_app(OFFLINE_REPLY_DELAY=30))
    run = post_with(api, "run").get_json()
    assert run["status"] in ("queued", "in_progress")

    message = error_of(post_with(api, "message"), 409)
    second_run = error_of(post_with(api, "run"), 409)

    assert message["code"] == second_run["code"] == "thread_locked"
    assert message["param"] == second_run["param"] == "thread_id"
    assert run["id"] in message["message"]
    assert "active run" in second_run["message"]
    # Reading and modifying the thread stay allowed while it is locked.
    assert api.client.get(api.url("message"), headers=api.headers).status_code == 200
    assert post_with(api, "modify_thread", metadata={"k": "v"}).status_code == 200

    _cancel_and_settle(api.client, api.headers, api.thread_id, run["id"])
    assert post_with(api, "message").status_code == 200


# ---- through the official SDK -------------------------------------------------------------------------

def test_sdk_maps_400_to_bad_request(offline_bridge):
    client = offline_bridge.sdk("alice")
    thread = client.beta.threads.create()

    with pytest.raises(openai.BadRequestError) as unknown_field:
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content="hi",
                                            extra_body={"colour": "blue"})
    with pytest.raises(openai.BadRequestError) as streaming:
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=offline_bridge.assistant(),
                                        extra_body={"stream": "yes"})

    assert sdk_error_of(unknown_field.value, 400)["param"] == "colour"
    assert sdk_error_of(streaming.value, 400)["param"] == "stream"


def test_sdk_maps_404_to_not_found(offline_bridge):
    client = offline_bridge.sdk("alice")
    thread = client.beta.threads.create()

    with pytest.raises(openai.NotFoundError) as caught:
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=new_id("asst"))
    with pytest.raises(openai.NotFoundError) as other_users:
        offline_bridge.sdk("bob").beta.threads.retrieve(thread.id)

    assert sdk_error_of(caught.value, 404)["param"] == "assistant_id"
    assert sdk_error_of(other_users.value, 404)["param"] == "thread_id"


def test_sdk_maps_409_to_conflict(start_bridge):
    bridge = start_bridge("offline", OFFLINE_REPLY_DELAY=30)
    client = bridge.sdk("alice")
    assistant_id = bridge.assistant()
    thread = client.beta.threads.create()
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)

    with pytest.raises(openai.ConflictError) as message:
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content="more")
    with pytest.raises(openai.ConflictError) as second_run:
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)

    assert sdk_error_of(message.value, 409)["code"] == "thread_locked"
    assert sdk_error_of(second_run.value, 409)["code"] == "thread_locked"
    client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    wait_for(lambda: client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status
             == "cancelled")


def test_sdk_maps_401_to_authentication_error(offline_bridge):
    client = openai.OpenAI(base_url=offline_bridge.api, api_key="not-a-jwt", max_retries=0,
                           timeout=10)

    with pytest.raises(openai.AuthenticationError) as caught:
        client.beta.threads.create()

    assert sdk_error_of(caught.value, 401)["code"] == "invalid_token"
