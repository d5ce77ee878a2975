"""Per-user rate limits: reads, writes and run creations, in memory or in a shared Redis.

Every limit here is small, so a test exhausts it in a few requests; each app counts in its own
memory, and the Redis tests give each app pair a key prefix of its own and delete its keys after.
Over a limit the answer is a 429 in the error envelope with `Retry-After`, which the official SDK
raises as `openai.RateLimitError` (and, with retries on, waits out and retries).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import jwt
import openai
import pytest
from pydantic import ValidationError

from bridge.api import OPERATIONS
from tests.conftest import make_token

ENVELOPE_FIELDS = {"message", "type", "param", "code"}
LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


@dataclass
class Reply:
    status_code: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def http(method: str, url: str, headers: dict | None = None, body: dict | None = None) -> Reply:
    """One plain HTTP request, so status and headers are seen as sent."""
    data = None if body is None else json.dumps(body).encode()
    request = Request(url, data=data, method=method,
                      headers={**(headers or {}), "Content-Type": "application/json"})
    try:
        with urlopen(request, timeout=10) as response:
            return Reply(response.status, response.headers, response.read())
    except HTTPError as error:
        with error:
            return Reply(error.code, error.headers, error.read())


def create_threads(bridge, user: str, count: int) -> None:
    client = bridge.sdk(user)
    for _ in range(count):
        client.beta.threads.create()


def refused(call) -> openai.RateLimitError:
    with pytest.raises(openai.RateLimitError) as caught:
        call()
    return caught.value


# ---- the answer over a limit ---------------------------------------------------------------------

def test_over_the_write_limit_answers_429_in_the_envelope_with_retry_after(start_bridge):
    bridge = start_bridge("offline", RATE_LIMIT_WRITES="3/minute")
    for remaining in (2, 1, 0):
        reply = http("POST", bridge.api + "/threads", bridge.headers("alice"), {})
        assert reply.status_code == 200
        assert reply.headers["X-RateLimit-Limit"] == "3"
        assert reply.headers["X-RateLimit-Remaining"] == str(remaining)

    reply = http("POST", bridge.api + "/threads", bridge.headers("alice"), {})
    assert reply.status_code == 429
    error = reply.json()["error"]
    assert set(error) == ENVELOPE_FIELDS
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
    assert error["param"] is None
    assert "writes" in error["message"] and "3 per 1 minute" in error["message"]
    assert 55 <= int(reply.headers["Retry-After"]) <= 60  # whole seconds until a slot frees
    assert reply.headers["X-RateLimit-Remaining"] == "0"
    assert int(reply.headers["X-RateLimit-Reset"]) >= time.time() + 50

    # The official SDK sees its RateLimitError, with the envelope's fields.
    error = refused(lambda: bridge.sdk("alice").beta.threads.create())
    assert error.status_code == 429 and error.code == "rate_limit_exceeded"
    assert error.type == "requests"
    assert int(error.response.headers["retry-after"]) >= 55


def test_the_sdk_waits_out_retry_after_and_retries(start_bridge):
    bridge = start_bridge("offline", RATE_LIMIT_WRITES="1/second")
    client = openai.OpenAI(base_url=bridge.api, api_key=bridge.token("alice"), max_retries=2,
                           timeout=10)
    try:
        client.beta.threads.create()
        started = time.monotonic()
        client.beta.threads.create()  # refused once with Retry-After: 1, then retried
        assert 0.9 <= time.monotonic() - started < 5  # about the 1 s Retry-After said
    finally:
        client.close()


# ---- who and what is counted ---------------------------------------------------------------------

def test_each_user_has_a_counter_of_their_own(start_bridge):
    bridge = start_bridge("offline", RATE_LIMIT_WRITES="3/minute")
    create_threads(bridge, "alice", 3)
    refused(lambda: bridge.sdk("alice").beta.threads.create())

    create_threads(bridge, "bob", 3)  # alice's exhausted limit is not bob's
    refused(lambda: bridge.sdk("bob").beta.threads.create())


def test_reads_and_writes_are_counted_apart(start_bridge):
    bridge = start_bridge("offline", RATE_LIMIT_READS="3/minute", RATE_LIMIT_WRITES="2/minute")
    alice = bridge.sdk("alice")
    thread = alice.beta.threads.create()
    alice.beta.threads.update(thread.id, metadata={"k": "v"})
    refused(lambda: alice.beta.threads.create())

    # Writes exhausted, reads untouched: all three pass, on any route, errors included.
    assert alice.beta.threads.retrieve(thread.id).metadata["k"] == "v"
    alice.beta.threads.messages.list(thread_id=thread.id)
    missing = http("GET", bridge.api + "/threads/thread_missing", bridge.headers("alice"))
    assert missing.status_code == 404 and missing.headers["X-RateLimit-Remaining"] == "0"
    error = refused(lambda: alice.beta.threads.retrieve(thread.id))
    assert "reads" in error.message

    # bob's reads and writes are still whole.
    bob = bridge.sdk("bob")
    assert bob.beta.threads.create().id


def test_run_creations_have_their_own_limit_and_count_as_writes_too(start_bridge):
    bridge = start_bridge("offline", RATE_LIMIT_WRITES="5/minute", RATE_LIMIT_RUNS="2/minute")
    assistant_id = bridge.assistant()  # by "admin", who has counters of their own
    alice = bridge.sdk("alice")
    for _ in range(2):
        alice.beta.threads.create_and_run(assistant_id=assistant_id)
    error = refused(lambda: alice.beta.threads.create_and_run(assistant_id=assistant_id))
    assert "run creations" in error.message

    # Runs exhausted, writes not: the two runs used two writes, the refused one none.
    thread = alice.beta.threads.create()
    error = refused(lambda: alice.beta.threads.runs.create(thread_id=thread.id,
                                                           assistant_id=assistant_id))
    assert "run creations" in error.message
    create_threads(bridge, "alice", 2)
    error = refused(lambda: alice.beta.threads.create())
    assert "writes" in error.message


def test_a_run_creation_is_refused_when_the_writes_are_exhausted(start_bridge):
    bridge = start_bridge("offline", RATE_LIMIT_WRITES="2/minute", RATE_LIMIT_RUNS="10/minute")
    assistant_id = bridge.assistant()
    alice = bridge.sdk("alice")
    alice.beta.threads.create_and_run(assistant_id=assistant_id)
    alice.beta.threads.create_and_run(assistant_id=assistant_id)
    error = refused(lambda: alice.beta.threads.create_and_run(assistant_id=assistant_id))
    assert "writes" in error.message


def test_an_empty_setting_turns_its_category_off(start_bridge):
    bridge = start_bridge("offline", RATE_LIMIT_WRITES="", RATE_LIMIT_READS="1/minute")
    for _ in range(8):
        reply = http("POST", bridge.api + "/threads", bridge.headers("alice"), {})
        assert reply.status_code == 200
        assert not any(name in reply.headers for name in LIMIT_HEADERS)
    alice = bridge.sdk("alice")
    thread = alice.beta.threads.create()
    alice.beta.threads.retrieve(thread.id)
    refused(lambda: alice.beta.threads.retrieve(thread.id))


def test_all_settings_empty_means_no_limiter(make_app):
    app = make_app(RATE_LIMIT_READS="", RATE_LIMIT_WRITES=" ", RATE_LIMIT_RUNS="")
    assert "bridge.limits" not in app.extensions
    client = app.test_client()
    headers = {"Authorization": f"Bearer {make_token(app, 'alice')}"}
    for _ in range(5):
        reply = client.post("/v1/threads", headers=headers, json={})
        assert reply.status_code == 200 and "X-RateLimit-Limit" not in reply.headers


@pytest.mark.parametrize("name", ["RATE_LIMIT_READS", "RATE_LIMIT_WRITES", "RATE_LIMIT_RUNS"])
@pytest.mark.parametrize("value", ["lots", "10/fortnight", "0/minute", "10/minute;x"])
def test_an_invalid_limit_stops_the_app_naming_the_setting(make_app, name, value):
    with pytest.raises(ValidationError) as caught:
        make_app(**{name: value})
    message = str(caught.value)
    assert name in message and repr(value) in message and "120/minute" in message


def test_a_valid_limit_in_any_notation_starts(make_app):
    app = make_app(RATE_LIMIT_READS="10/second;500/hour", RATE_LIMIT_WRITES="5 per minute",
                   RATE_LIMIT_RUNS=" 2/2 minutes ")
    assert app.config["BRIDGE_SETTINGS"].RATE_LIMIT_RUNS == "2/2 minutes"


def test_probes_and_docs_are_never_limited(start_bridge):
    bridge = start_bridge("offline", RATE_LIMIT_READS="1/minute")
    auth = bridge.headers("alice")
    for _ in range(4):
        for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
            reply = http("GET", bridge.url + path, auth)
            assert reply.status_code == 200, path
            assert "X-RateLimit-Limit" not in reply.headers
    # An operation declared without authentication is never counted either.
    limits = bridge.app.extensions["bridge.limits"]
    for operation in OPERATIONS:
        assert limits.categories(dataclasses.replace(operation, auth=False)) == []
        assert limits.categories(operation)


def test_unauthenticated_requests_get_401_and_are_not_counted(start_bridge):
    bridge = start_bridge("offline", RATE_LIMIT_WRITES="1/minute", RATE_LIMIT_READS="1/minute")
    forged = jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, "not-the-secret-" * 4,
                        algorithm="HS256")
    for headers in ({}, {"Authorization": "Bearer garbage"},
                    {"Authorization": f"Bearer {forged}"}):
        for _ in range(3):
            assert http("POST", bridge.api + "/threads", headers, {}).status_code == 401
            assert http("GET", bridge.api + "/threads", headers).status_code == 401
    alice = bridge.sdk("alice")
    thread = alice.beta.threads.create()
    alice.beta.threads.retrieve(thread.id)
    refused(lambda: alice.beta.threads.create())
    refused(lambda: alice.beta.threads.retrieve(thread.id))


# ---- storage -------------------------------------------------------------------------------------

def test_a_failing_storage_lets_requests_through_and_recovers(make_app, monkeypatch, caplog):
    import bridge.limits

    monkeypatch.setattr(bridge.limits, "STORAGE_RETRY_SECONDS", 0.0)  # retry on every request
    app = make_app(RATE_LIMIT_WRITES="2/minute")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {make_token(app, 'alice')}"}
    strategy = app.extensions["bridge.limits"].strategy

    def down(*args, **kwargs):
        raise ConnectionError("storage is down")

    caplog.set_level(logging.WARNING, logger="bridge.limits")
    with monkeypatch.context() as patch:
        patch.setattr(strategy, "hit", down)
        for _ in range(4):
            reply = client.post("/v1/threads", headers=headers, json={})
            assert reply.status_code == 200 and "X-RateLimit-Limit" not in reply.headers
    failures = [r for r in caplog.records if "storage failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelno == logging.WARNING  # once per outage

    assert client.post("/v1/threads", headers=headers, json={}).status_code == 200
    assert any("answers again" in r.getMessage() for r in caplog.records)
    assert client.post("/v1/threads", headers=headers, json={}).status_code == 200
    assert client.post("/v1/threads", headers=headers, json={}).status_code == 429


def test_an_unreachable_redis_fails_open(start_bridge, caplog):
    caplog.set_level(logging.WARNING, logger="bridge.limits")
    bridge = start_bridge("offline", REDIS_URL=UNREACHABLE_REDIS, RATE_LIMIT_WRITES="1/minute")
    alice = bridge.sdk("alice")
    thread = alice.beta.threads.create()
    alice.beta.threads.create()
    alice.beta.threads.messages.create(thread_id=thread.id, role="user", content="still here")
    assert alice.beta.threads.retrieve(thread.id).id == thread.id
    assert any("storage failed" in r.getMessage() and "ConnectionError" in r.getMessage()
               for r in caplog.records)


def _redis_url() -> str:
    """TEST_REDIS_URL, which must answer; else the default local one, skipped when absent."""
    import redis

    url = os.environ.get("TEST_REDIS_URL") or "redis://127.0.0.1:6379/15"
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1) as client:
            client.ping()
    except redis.RedisError as exc:
        if os.environ.get("TEST_REDIS_URL"):
            pytest.fail(f"TEST_REDIS_URL={url} does not answer: {exc}")
        pytest.skip(f"no Redis at {url} ({type(exc).__name__}); set TEST_REDIS_URL to run")
    return url


@pytest.fixture
def redis_limits():
    """A reachable Redis and a key prefix of this test's own; its keys are deleted afterwards."""
    import redis

    url = _redis_url()
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield {"REDIS_URL": url, "RATELIMIT_KEY_PREFIX": prefix}
    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=f"*/{prefix}/*"))
        if keys:
            client.delete(*keys)


def test_processes_sharing_a_redis_share_the_counters(make_app, redis_limits):
    import redis

    # Two apps stand for two processes: each has its own limiter and Redis connections.
    first, second = (make_app(RATE_LIMIT_WRITES="3/minute", RATE_LIMIT_READS="50/minute",
                              **redis_limits) for _ in range(2))
    a, b = first.test_client(), second.test_client()
    alice = {"Authorization": f"Bearer {make_token(first, 'alice')}"}
    bob = {"Authorization": f"Bearer {make_token(second, 'bob')}"}

    assert a.post("/v1/threads", headers=alice, json={}).status_code == 200
    assert b.post("/v1/threads", headers=alice, json={}).status_code == 200
    reply = a.post("/v1/threads", headers=alice, json={})
    assert reply.status_code == 200 and reply.headers["X-RateLimit-Remaining"] == "0"
    for client in (b, a):
        reply = client.post("/v1/threads", headers=alice, json={})
        assert reply.status_code == 429
        assert reply.get_json()["error"]["code"] == "rate_limit_exceeded"
        assert 55 <= int(reply.headers["Retry-After"]) <= 60
    assert b.get("/v1/threads", headers=alice).status_code == 200  # reads are apart
    assert b.post("/v1/threads", headers=bob, json={}).status_code == 200  # and so is bob

    # The counters are in Redis, under this test's prefix.
    with redis.Redis.from_url(redis_limits["REDIS_URL"]) as client:
        keys = client.keys(f"*/{redis_limits['RATELIMIT_KEY_PREFIX']}/*")
    assert {tuple(key.decode().split("/")[2:4]) for key in keys} == {
        ("writes", "alice"), ("reads", "alice"), ("writes", "bob")}


# ---- the in-process window ------------------------------------------------------------------------

def test_the_in_process_window_moves_and_forgets_idle_counters(monkeypatch):
    from limits import parse_many

    from bridge.limits import InProcessWindow

    clock = [1000.0]
    monkeypatch.setattr("bridge.limits.time.time", lambda: clock[0])
    window, item = InProcessWindow(), parse_many("2/minute")[0]
    assert window.hit(item, "p", "writes", "alice") and window.hit(item, "p", "writes", "alice")
    assert not window.hit(item, "p", "writes", "alice")
    assert window.get_window_stats(item, "p", "writes", "alice") == (1060.0, 0)
    assert window.hit(item, "p", "writes", "bob")  # counters are apart
    clock[0] += 60.0  # the first two leave the window
    assert window.hit(item, "p", "writes", "alice")
    assert window.get_window_stats(item, "p", "writes", "alice").remaining == 1

    clock[0] += 61.0
    for n in range(InProcessWindow.SWEEP_EVERY):
        window.hit(item, "p", "reads", f"user-{n}")
    assert not any("alice" in key or "bob" in key for key in window._windows)


def test_counting_starts_no_thread_per_request(make_app, monkeypatch):
    app = make_app(RATE_LIMIT_READS="1000/minute")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {make_token(app, 'alice')}"}
    client.get("/v1/threads", headers=headers)
    started = []
    start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start",
                        lambda thread: (started.append(thread.name), start(thread))[1])
    for _ in range(50):
        assert client.get("/v1/threads", headers=headers).status_code == 200
        time.sleep(0.002)  # spaced like real traffic: a timer that expired would start anew
    assert started == []
