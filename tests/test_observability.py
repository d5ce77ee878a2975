"""Hygiene: CORS off unless configured, an x-request-id on every response, one structured access
line per request with the route template, user, status, latency and upstream time, and no token,
key, query string or message text in any log record.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bridge import observability
from tests.conftest import make_token
from tests.fakes.openai_server import FakeOpenAI

ORIGIN = "https://app.example.com"
HEX_ID = re.compile(r"[0-9a-f]{32}")
PREFLIGHT_HEADERS = ("authorization", "content-type", "openai-beta", "idempotency-key",
                     "x-stainless-os", "x-stainless-arch", "x-stainless-retry-count")
ACCESS_FIELDS = {"request_id", "method", "route", "status", "latency_ms", "upstream_ms",
                 "upstream_calls", "user", "engine"}


def cors_headers(response) -> dict[str, str]:
    return {name.lower(): value for name, value in response.headers.items()
            if name.lower().startswith("access-control-")}


def preflight(client, origin: str = ORIGIN, path: str = "/v1/threads"):
    return client.options(path, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": ", ".join(PREFLIGHT_HEADERS)})


def access_records(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == observability.ACCESS_LOGGER]


def auth(app, user: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(app, user)}"}


# ---- CORS ----------------------------------------------------------------------------------

def test_cors_is_off_by_default(app, client):
    reply = client.get("/v1/threads", headers={"Origin": ORIGIN, **auth(app)})
    assert reply.status_code == 200
    assert cors_headers(reply) == {}

    answer = preflight(client)
    assert cors_headers(answer) == {}
    assert cors_headers(client.get("/v1/threads", headers={"Origin": ORIGIN})) == {}  # a 401


def test_cors_allows_a_configured_origin_and_only_it(make_app):
    app = make_app(CORS_ORIGINS=f" {ORIGIN}/ , https://other.example.org")
    client = app.test_client()

    answer = preflight(client)
    assert answer.status_code == 200
    headers = cors_headers(answer)
    assert headers["access-control-allow-origin"] == ORIGIN
    assert {m.strip() for m in headers["access-control-allow-methods"].split(",")} == {
        "GET", "POST", "DELETE", "OPTIONS"}
    allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
    assert allowed == set(PREFLIGHT_HEADERS)
    assert "Origin" in answer.headers.get("Vary", "")

    reply = client.get("/v1/threads", headers={"Origin": ORIGIN, **auth(app)})
    assert reply.status_code == 200
    assert reply.headers["Access-Control-Allow-Origin"] == ORIGIN
    exposed = {h.strip().lower() for h in reply.headers["Access-Control-Expose-Headers"].split(",")}
    assert exposed == {"x-request-id", "openai-poll-after-ms", "retry-after"}
    # Errors carry it too, or a browser could not read the envelope.
    refused = client.get("/v1/threads", headers={"Origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == ORIGIN
    # The second configured origin, in another case (origins compare case-insensitively).
    other = client.get("/v1/threads", headers={"Origin": "https://OTHER.example.org", **auth(app)})
    assert other.headers["Access-Control-Allow-Origin"] == "https://OTHER.example.org"

    for stranger in ("https://evil.example", ORIGIN + ".evil.example", "http://app.example.com",
                     "null"):
        assert cors_headers(preflight(client, stranger)) == {}, stranger
        assert cors_headers(client.get("/v1/threads", headers={"Origin": stranger,
                                                                **auth(app)})) == {}, stranger
    # Only the API and its spec are shared; probes and the docs page are not.
    assert cors_headers(client.get("/healthz", headers={"Origin": ORIGIN})) == {}
    assert client.get("/openapi.json", headers={"Origin": ORIGIN}).headers[
        "Access-Control-Allow-Origin"] == ORIGIN
    # No Origin, no CORS headers, even when CORS is on.
    assert cors_headers(client.get("/v1/threads", headers=auth(app))) == {}


def test_cors_wildcard_allows_any_origin(make_app):
    client = make_app(CORS_ORIGINS="*").test_client()
    headers = cors_headers(preflight(client, "https://anywhere.example"))
    assert headers["access-control-allow-origin"] == "*"
    assert "x-stainless-os" in headers["access-control-allow-headers"].lower()


# ---- request ids ---------------------------------------------------------------------------

def test_every_response_carries_a_request_id(make_app):
    app = make_app(PROPAGATE_EXCEPTIONS=False, MAX_CONTENT_LENGTH=1024)

    def boom():
        raise RuntimeError("boom")

    app.add_url_rule("/boom", "boom", boom)
    client = app.test_client()
    headers = {**auth(app), "Content-Type": "application/json"}
    replies = {
        200: client.get("/v1/threads", headers=headers),
        400: client.post("/v1/threads", headers=headers, data="{not json"),
        401: client.get("/v1/threads"),
        404: client.get("/v1/no-such-route", headers=headers),
        405: client.delete("/v1/threads", headers=headers),
        413: client.post("/v1/threads", headers=headers, data="x" * 2048),
        500: client.get("/boom"),
    }
    ids = set()
    for status, reply in replies.items():
        assert reply.status_code == status, (status, reply.get_data(as_text=True))
        assert HEX_ID.fullmatch(reply.headers.get("x-request-id", "")), status
        ids.add(reply.headers["x-request-id"])
    assert len(ids) == len(replies)


@pytest.mark.parametrize("incoming", ["req-1", "a.b:c_d-E9", "r" * 128, "0"])
def test_a_sane_request_id_is_echoed(client, incoming):
    assert client.get("/healthz", headers={"X-Request-ID": incoming}).headers["x-request-id"] == incoming


@pytest.mark.parametrize("incoming", ["r" * 129, "has space", "a\nb", "semi;colon", "quote\"", ""])
def test_an_odd_request_id_is_replaced(client, incoming):
    reply = client.get("/healthz", environ_overrides={"HTTP_X_REQUEST_ID": incoming})
    assert HEX_ID.fullmatch(reply.headers["x-request-id"])


# ---- the access line -----------------------------------------------------------------------

def test_access_line_has_the_route_template_user_and_timings(app, client, caplog):
    caplog.set_level(logging.INFO, logger=observability.ACCESS_LOGGER)
    thread_id = client.post("/v1/threads", headers=auth(app), json={}).get_json()["id"]
    caplog.clear()

    reply = client.get(f"/v1/threads/{thread_id}/messages?order=asc",
                       headers={**auth(app), "X-Request-ID": "trace-42"})
    assert reply.status_code == 200
    [line] = access_records(caplog)
    fields = {name: getattr(line, name) for name in ACCESS_FIELDS}
    assert fields["latency_ms"] >= 0 and isinstance(fields["latency_ms"], float)
    del fields["latency_ms"]
    assert fields == {"request_id": "trace-42", "method": "GET",
                      "route": "/v1/threads/<thread_id>/messages", "status": 200,
                      "upstream_ms": 0.0, "upstream_calls": 0, "user": "alice", "engine": "offline"}
    assert line.levelno == logging.INFO
    assert thread_id not in line.getMessage() and "order" not in line.getMessage()

    caplog.clear()
    client.get(f"/v1/nothing/{thread_id}", headers=auth(app))
    client.get("/v1/threads", headers={"Authorization": "Bearer not-a-jwt"})
    client.delete("/v1/threads", headers=auth(app))
    unmatched, unauthorized, not_allowed = access_records(caplog)
    assert (unmatched.route, unmatched.status) == ("unmatched", 404)
    assert (unauthorized.route, unauthorized.status, unauthorized.user) == ("/v1/threads", 401, None)
    assert (not_allowed.route, not_allowed.status) == ("unmatched", 405)
    assert all(thread_id not in r.getMessage() and thread_id not in str(r.__dict__)
               for r in caplog.records)


def test_access_line_for_an_exception_that_escapes_flask(app, client, caplog):
    caplog.set_level(logging.INFO, logger=observability.ACCESS_LOGGER)

    @app.after_request
    def broken(response):
        raise RuntimeError("after_request broke")

    with pytest.raises(RuntimeError):  # TESTING propagates it out of the app
        client.get("/healthz")
    [line] = access_records(caplog)
    assert (line.route, line.status, line.method) == ("/healthz", 500, "GET")


def test_upstream_time_is_the_time_spent_in_provider_calls(start_bridge, caplog):
    caplog.set_level(logging.INFO, logger=observability.ACCESS_LOGGER)
    bridge = start_bridge("responses")
    bridge.fake.delay_on("POST /v1/conversations", 0.2)
    client = bridge.sdk("alice")
    client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    post = access_records(caplog)[-1]
    assert (post.route, post.user, post.engine) == ("/v1/threads", "alice", "responses")
    # Every call the fake saw so far came from this request: the conversation, then its items.
    assert post.upstream_calls == sum(bridge.fake.calls().values()) >= 2
    assert 200 <= post.upstream_ms <= post.latency_ms

    caplog.clear()
    assistant_id = bridge.assistant()  # registry only on this engine
    [create_assistant] = access_records(caplog)
    assert create_assistant.status == 200 and assistant_id
    assert (create_assistant.upstream_calls, create_assistant.upstream_ms) == (0, 0.0)


def test_background_provider_calls_are_not_charged_to_requests(chat_bridge, caplog):
    caplog.set_level(logging.INFO, logger=observability.ACCESS_LOGGER)
    client = chat_bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                   assistant_id=chat_bridge.assistant())
    assert run.status == "completed"
    assert chat_bridge.fake.requests  # the executor did call the provider
    lines = access_records(caplog)
    assert len(lines) >= 4
    assert all(line.upstream_calls == 0 and line.engine == "chat" for line in lines)


# ---- nothing secret in the logs --------------------------------------------------------------

class _KeyEchoingProvider:
    """An OpenAI-compatible server that refuses every request, quoting the key it was sent."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def _refuse(self):
                key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                body = json.dumps({"error": {
                    "message": f"Incorrect API key provided: {key}. Find your key at example.",
                    "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}).encode()
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _refuse

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_no_token_key_query_or_message_text_in_any_log_record(make_app, caplog, capfd):
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="bridge")
    unique = uuid.uuid4().hex
    key, echoed_key = f"sk-test-{unique}", f"provider-key-{unique}"
    secret_text, secret_query = f"my secret message {unique}", f"cursor{unique}"

    with FakeOpenAI(api_key=key, latency=0.01) as fake, _KeyEchoingProvider() as echoing:
        app = make_app(BRIDGE_ENGINE="responses", OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY=key,
                       OPENAI_TIMEOUT=10, OPENAI_MAX_RETRIES=0, LOG_LEVEL="DEBUG")
        client, headers = app.test_client(), auth(app)
        token = headers["Authorization"].removeprefix("Bearer ")
        thread_id = client.post("/v1/threads", headers=headers, json={}).get_json()["id"]
        assert client.post(f"/v1/threads/{thread_id}/messages", headers=headers,
                           json={"role": "user", "content": secret_text}).status_code == 200
        client.get(f"/v1/threads/{thread_id}/messages?order=asc&after={secret_query}", headers=headers)
        client.get(f"/v1/threads?limit=3&before={secret_query}", headers=headers)
        fake.fail_next(500)
        assert client.post(f"/v1/threads/{thread_id}/messages", headers=headers,
                           json={"role": "user", "content": secret_text}).status_code == 502

        # A provider whose error message quotes the key the bridge sent.
        leaky = make_app(BRIDGE_ENGINE="responses", OPENAI_BASE_URL=echoing.base_url,
                         OPENAI_API_KEY=echoed_key, OPENAI_TIMEOUT=10, OPENAI_MAX_RETRIES=0)
        refused = leaky.test_client().post("/v1/threads", headers=auth(leaky),
                                           json={"messages": [{"role": "user", "content": secret_text}]})
        assert refused.status_code == 502

    # The failures were logged (so there was something to leak), with the key redacted.
    details = [r.getMessage() for r in caplog.records if "upstream failure" in r.getMessage()]
    assert any("Incorrect API key provided: [REDACTED]" in d for d in details), details
    assert len(access_records(caplog)) == 6

    secrets = (key, echoed_key, token, secret_text, secret_query, unique)
    for record in caplog.records:
        texts = [record.getMessage(), record.exc_text or "", str(record.__dict__)]
        for secret in secrets:
            assert not any(secret in text for text in texts), (secret, record.name, record.getMessage())
    written = caplog.text + capfd.readouterr().err
    assert '"logger": "bridge.access"' in written  # the handler's own output is checked too
    for secret in secrets:
        assert secret not in written


def test_redaction_covers_jwts_bearer_values_and_the_configured_key(make_app, caplog):
    key = f"sk-proj-{uuid.uuid4().hex}"
    app = make_app(OPENAI_API_KEY=key, BRIDGE_ENGINE="offline")
    jwt = make_token(app, "alice")
    opaque = uuid.uuid4().hex
    caplog.set_level(logging.DEBUG, logger="bridge")
    log = logging.getLogger("bridge.engines.somewhere")

    log.warning("provider said %s; sent %s and %s", f"bad key {key}", jwt,
                f"Authorization: Bearer {opaque}")
    try:
        raise ValueError(f"key {key} token {jwt}")
    except ValueError:
        log.exception("failed")
    log.info("plain %s", "text with dots a.b.c and run_123", extra={"detail": f"bearer {opaque}"})

    warning, failure, plain = caplog.records[-3:]
    assert warning.getMessage() == ("provider said bad key [REDACTED]; sent [REDACTED] and "
                                    "Authorization: Bearer [REDACTED]")
    assert key not in failure.exc_text and jwt not in failure.exc_text
    assert "[REDACTED]" in failure.exc_text
    assert plain.getMessage() == "plain text with dots a.b.c and run_123"
    assert plain.detail == "bearer [REDACTED]"
    for secret in (key, jwt, opaque):
        assert secret not in caplog.text


# ---- formats and setup ---------------------------------------------------------------------

def test_json_format_writes_one_object_per_line(make_app, capfd):
    app = make_app(LOG_FORMAT="json")
    client = app.test_client()
    capfd.readouterr()
    client.get("/v1/threads", headers={**auth(app, "bob"), "X-Request-ID": "json-1"})
    client.get("/v1/missing")
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]
    access = [e for e in entries if e["logger"] == observability.ACCESS_LOGGER]
    assert len(access) == 2
    first = access[0]
    assert {"time", "level", "logger", "message"} | ACCESS_FIELDS <= set(first)
    assert (first["level"], first["request_id"], first["user"], first["route"], first["status"]) == (
        "INFO", "json-1", "bob", "/v1/threads", 200)
    assert first["time"].endswith("Z")
    assert (access[1]["route"], access[1]["status"], access[1]["user"]) == ("unmatched", 404, None)


def test_text_format_and_log_level(make_app, capfd):
    app = make_app(LOG_FORMAT="text")
    capfd.readouterr()
    app.test_client().get("/healthz")
    [line] = [line for line in capfd.readouterr().err.splitlines() if "bridge.access" in line]
    assert " INFO bridge.access: GET /healthz 200 " in line and 'route="/healthz"' in line
    with pytest.raises(ValueError):
        json.loads(line)

    quiet = make_app(LOG_LEVEL="WARNING")
    capfd.readouterr()
    quiet.test_client().get("/healthz")
    assert "bridge.access" not in capfd.readouterr().err


def test_one_handler_per_process_however_many_apps(make_app):
    for _ in range(3):
        make_app()
    handlers = [h for h in logging.getLogger("bridge").handlers
                if isinstance(h, observability._StderrHandler)]
    assert len(handlers) == 1
    from flask.logging import default_handler

    assert default_handler not in logging.getLogger("bridge").handlers
