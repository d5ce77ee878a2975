"""Idempotent retries: `Idempotency-Key` on POSTs, through the official SDK and plain HTTP.

A repeat with the same key, route and body replays the first response; another body or route is
a 422, a repeat while the first still runs a 409; failures that let a retry succeed release the
key; keys are per user and expire. Objects are counted through the list endpoints and, on the
`responses` engine, at the fake upstream.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx  # the HTTP client the openai SDK itself uses
import openai
import pytest
from sqlalchemy import func, select, update

from bridge.extensions import db
from bridge.idempotency import IN_FLIGHT_LEASE_SECONDS
from bridge.models import IdempotencyRecord
from tests.conftest import wait_for

KEY = "Idempotency-Key"
CREATE_CONVERSATION = "POST /v1/conversations"


def new_key() -> str:
    return f"key-{uuid.uuid4()}"


def keyed(key: str) -> dict[str, dict[str, str]]:
    """The SDK's way to send the header: OpenAI's client sets no idempotency header itself."""
    return {"extra_headers": {KEY: key}}


def post(bridge, path: str, body=None, *, key: str | None = None, user: str = "alice",
         content: bytes | None = None, timeout: float = 10) -> httpx.Response:
    headers = {**bridge.headers(user), "OpenAI-Beta": "assistants=v2"}
    if key is not None:
        headers[KEY] = key
    if content is not None:
        return httpx.post(bridge.api + path, headers={**headers, "Content-Type": "application/json"},
                          content=content, timeout=timeout)
    return httpx.post(bridge.api + path, headers=headers, json=body, timeout=timeout)


def thread_ids(bridge, user: str = "alice") -> list[str]:
    answer = httpx.get(bridge.api + "/threads?limit=100", headers=bridge.headers(user), timeout=10)
    assert answer.status_code == 200, answer.text
    return [thread["id"] for thread in answer.json()["data"]]


def records(bridge, *where):
    with bridge.app.app_context():
        try:
            return db.session.execute(select(IdempotencyRecord).where(*where)).scalars().all()
        finally:
            db.session.remove()


def record_count(bridge) -> int:
    with bridge.app.app_context():
        try:
            return db.session.execute(select(func.count()).select_from(IdempotencyRecord)).scalar()
        finally:
            db.session.remove()


def change_record(bridge, key: str, **values) -> None:
    with bridge.app.app_context():
        try:
            changed = db.session.execute(update(IdempotencyRecord).where(
                IdempotencyRecord.key == key).values(**values)).rowcount
            db.session.commit()
        finally:
            db.session.remove()
    assert changed == 1


def assert_error(response: httpx.Response, status: int, code: str | None, param: str | None = KEY):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error


# ---- replays ------------------------------------------------------------------------------------

def test_same_key_and_body_replays_the_first_response(offline_bridge):
    key, body = new_key(), {"metadata": {"topic": "bridges"}}
    first = post(offline_bridge, "/threads", body, key=key)
    assert first.status_code == 200, first.text
    assert "Idempotent-Replayed" not in first.headers

    # The same body in another key order and spacing is the same request.
    again = post(offline_bridge, "/threads", key=key,
                 content=b'{ "metadata" : { "topic" : "bridges" } }')
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Content-Type"] == "application/json"
    assert again.content == first.content

    sdk = offline_bridge.sdk("alice").beta.threads.create(metadata={"topic": "bridges"}, **keyed(key))
    assert sdk.id == first.json()["id"]
    assert thread_ids(offline_bridge) == [sdk.id]


def test_messages_and_runs_are_created_once(offline_bridge):
    client = offline_bridge.sdk("alice")
    assistant_id = offline_bridge.assistant()
    thread = client.beta.threads.create()

    message_key = new_key()
    messages = [client.beta.threads.messages.create(thread_id=thread.id, role="user", content="Hi",
                                                    **keyed(message_key)) for _ in range(3)]
    assert {m.id for m in messages} == {messages[0].id}

    run_key = new_key()
    first = post(offline_bridge, f"/threads/{thread.id}/runs", {"assistant_id": assistant_id},
                 key=run_key)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "queued" and "openai-poll-after-ms" in first.headers
    wait_for(lambda: client.beta.threads.runs.retrieve(
        thread_id=thread.id, run_id=first.json()["id"]).status == "completed")

    # Replayed as it was first answered (as Stripe does): the queued run with its poll hint.
    replay = post(offline_bridge, f"/threads/{thread.id}/runs", {"assistant_id": assistant_id},
                  key=run_key)
    assert replay.status_code == 200
    assert replay.content == first.content
    assert replay.headers["openai-poll-after-ms"] == first.headers["openai-poll-after-ms"]
    assert replay.headers["Idempotent-Replayed"] == "true"

    again = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id,
                                            **keyed(run_key))
    assert again.id == first.json()["id"]
    assert [r.id for r in client.beta.threads.runs.list(thread_id=thread.id).data] == [again.id]
    user_messages = [m for m in client.beta.threads.messages.list(thread_id=thread.id).data
                     if m.role == "user"]
    assert [m.id for m in user_messages] == [messages[0].id]


def test_final_client_errors_are_replayed(offline_bridge):
    key = new_key()
    first = post(offline_bridge, "/threads/thread_missing/messages",
                 {"role": "user", "content": "Hi"}, key=key)
    assert first.status_code == 404
    again = post(offline_bridge, "/threads/thread_missing/messages",
                 {"role": "user", "content": "Hi"}, key=key)
    assert again.status_code == 404
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content


# ---- misuse -------------------------------------------------------------------------------------

def test_same_key_with_another_body_is_422(offline_bridge):
    client = offline_bridge.sdk("alice")
    key = new_key()
    thread = client.beta.threads.create(metadata={"n": "1"}, **keyed(key))
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.beta.threads.create(metadata={"n": "2"}, **keyed(key))
    assert caught.value.code == "idempotency_key_reused"
    assert_error(post(offline_bridge, "/threads", key=key, content=b"not json"), 422,
                 "idempotency_key_reused")
    assert thread_ids(offline_bridge) == [thread.id]


def test_same_key_on_another_route_is_422(offline_bridge):
    client = offline_bridge.sdk("alice")
    first, second = client.beta.threads.create(), client.beta.threads.create()
    key = new_key()
    message = {"role": "user", "content": "Hi"}
    assert post(offline_bridge, f"/threads/{first.id}/messages", message, key=key).status_code == 200
    # The same route template on another thread is another request, as is another route.
    assert_error(post(offline_bridge, f"/threads/{second.id}/messages", message, key=key), 422,
                 "idempotency_key_reused")
    assert_error(post(offline_bridge, f"/threads/{first.id}", {}, key=key), 422,
                 "idempotency_key_reused")
    assert client.beta.threads.messages.list(thread_id=second.id).data == []
    assert len(client.beta.threads.messages.list(thread_id=first.id).data) == 1


def test_key_length_and_characters(offline_bridge):
    assert_error(post(offline_bridge, "/threads", {}, key="k" * 256), 400, None)
    assert_error(post(offline_bridge, "/threads", {}, key=""), 400, None)
    headers = {**offline_bridge.headers("alice"), KEY: "caf\xe9".encode("latin-1")}
    assert_error(httpx.post(offline_bridge.api + "/threads", headers=headers, json={}), 400, None)
    assert thread_ids(offline_bridge) == []
    assert record_count(offline_bridge) == 0

    longest = "k" * 255
    first = post(offline_bridge, "/threads", {}, key=longest)
    assert first.status_code == 200
    assert post(offline_bridge, "/threads", {}, key=longest).json()["id"] == first.json()["id"]


# Keys on both sides of the rule: /openapi.json and the bridge must agree on every one.
KEYS_BY_RULE = [
    ("k", True), ("k" * 255, True), ("a key with spaces inside", True),
    ("~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}", True), (str(uuid.uuid4()), True),
    ("", False), ("k" * 256, False), ("tab\there", False), ("caf\xe9", False),
    ("del\x7f", False), ("bell\x07", False),
]


@pytest.mark.parametrize("key, follows_rule", KEYS_BY_RULE)
def test_spec_and_bridge_agree_on_the_key_rule(app, client, token_for, key, follows_rule):
    import jsonschema

    from bridge.idempotency import KEY_RULE

    spec = client.get("/openapi.json").get_json()
    [parameter] = [p for p in spec["paths"]["/v1/threads"]["post"]["parameters"] if p["name"] == KEY]
    schema_accepts = jsonschema.Draft202012Validator(parameter["schema"]).is_valid(key)
    assert KEY_RULE in parameter["description"]

    answer = client.post("/v1/threads", json={},
                         headers={"Authorization": f"Bearer {token_for('alice')}", KEY: key})

    assert schema_accepts == follows_rule
    assert (answer.status_code == 200) == follows_rule, answer.get_data(as_text=True)
    if not follows_rule:
        error = answer.get_json()["error"]
        assert answer.status_code == 400
        assert (error["param"], error["code"]) == (KEY, None)
        assert KEY_RULE in error["message"]


def test_get_and_delete_ignore_the_header(offline_bridge):
    client = offline_bridge.sdk("alice")
    thread = client.beta.threads.create()
    key = new_key()
    for _ in range(2):
        answer = httpx.get(f"{offline_bridge.api}/threads/{thread.id}",
                           headers={**offline_bridge.headers("alice"), KEY: key})
        assert answer.status_code == 200 and "Idempotent-Replayed" not in answer.headers
    deleted = httpx.delete(f"{offline_bridge.api}/threads/{thread.id}",
                           headers={**offline_bridge.headers("alice"), KEY: key})
    assert deleted.status_code == 200
    assert record_count(offline_bridge) == 0
    # The key is still unused: a POST with it runs (no 422 for "another route").
    assert post(offline_bridge, "/threads", {}, key=key).status_code == 200


# ---- scope and lifetime -------------------------------------------------------------------------

def test_keys_are_per_user(offline_bridge):
    key, body = new_key(), {"metadata": {"owner": "whoever"}}
    alice = post(offline_bridge, "/threads", body, key=key, user="alice")
    bob = post(offline_bridge, "/threads", body, key=key, user="bob")
    assert alice.status_code == bob.status_code == 200
    assert "Idempotent-Replayed" not in bob.headers
    assert bob.json()["id"] != alice.json()["id"]
    assert thread_ids(offline_bridge, "alice") == [alice.json()["id"]]
    assert thread_ids(offline_bridge, "bob") == [bob.json()["id"]]
    # Each replays their own.
    assert post(offline_bridge, "/threads", body, key=key, user="bob").json()["id"] == bob.json()["id"]
    # Another body is bob's business only: alice's record does not care.
    assert post(offline_bridge, "/threads", {}, key=new_key(), user="bob").status_code == 200


def test_expired_keys_run_again_and_are_purged(offline_bridge):
    key, old = new_key(), new_key()
    first = post(offline_bridge, "/threads", {}, key=key)
    post(offline_bridge, "/threads", {}, key=old)
    post(offline_bridge, "/threads", {}, key=old, user="bob")
    ttl = 24 * 3600
    (record,) = records(offline_bridge, IdempotencyRecord.key == key)
    assert record.expires_at - record.created_at == ttl
    assert record.state == "done" and record.status == 200 and json.loads(record.body)["id"]

    past = int(time.time()) - ttl - 10
    change_record(offline_bridge, key, created_at=past, expires_at=past + ttl)
    # Another body under the expired key is no misuse: the key is fresh again.
    second = post(offline_bridge, "/threads", {"metadata": {"n": "2"}}, key=key)
    assert second.status_code == 200 and "Idempotent-Replayed" not in second.headers
    assert second.json()["id"] != first.json()["id"]
    assert len(thread_ids(offline_bridge)) == 3

    # Expired rows of the user go when that user claims a key; other users' stay until theirs.
    with offline_bridge.app.app_context():
        db.session.execute(update(IdempotencyRecord).where(IdempotencyRecord.key == old).values(
            created_at=past, expires_at=past + ttl))
        db.session.commit()
        db.session.remove()
    assert post(offline_bridge, "/threads", {}, key=new_key()).status_code == 200
    assert [r.user_id for r in records(offline_bridge, IdempotencyRecord.key == old)] == ["bob"]


def test_a_request_lost_in_flight_frees_its_key_after_the_lease(offline_bridge):
    key = new_key()
    first = post(offline_bridge, "/threads", {}, key=key)
    # As if the worker that ran the request died before storing its answer.
    change_record(offline_bridge, key, state="in_flight", status=None, body=None,
                  created_at=int(time.time()) - 60)
    assert_error(post(offline_bridge, "/threads", {}, key=key), 409, "idempotency_key_in_use")
    change_record(offline_bridge, key, created_at=int(time.time()) - IN_FLIGHT_LEASE_SECONDS - 1)
    # Still bound to its request: another body is refused, the same one runs again.
    assert_error(post(offline_bridge, "/threads", {"metadata": {"a": "b"}}, key=key), 422,
                 "idempotency_key_reused")
    taken = post(offline_bridge, "/threads", {}, key=key)
    assert taken.status_code == 200 and taken.json()["id"] != first.json()["id"]
    assert post(offline_bridge, "/threads", {}, key=key).json()["id"] == taken.json()["id"]


# ---- concurrency, failures and timeouts ---------------------------------------------------------

def test_a_repeat_while_the_first_runs_is_409(responses_bridge):
    fake, key = responses_bridge.fake, new_key()
    fake.delay_on(CREATE_CONVERSATION, 30)  # until end_delays(): the first waits for the repeats
    first: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: first.append(post(responses_bridge, "/threads", {}, key=key)))
    worker.start()
    fake.wait_for_requests(1, route=CREATE_CONVERSATION)

    busy = post(responses_bridge, "/threads", {}, key=key)
    assert_error(busy, 409, "idempotency_key_in_use")
    assert busy.headers["Retry-After"] == "1"
    # A different body is a misuse even while the first runs.
    assert_error(post(responses_bridge, "/threads", {"metadata": {"a": "b"}}, key=key), 422,
                 "idempotency_key_reused")

    fake.end_delays()
    worker.join()
    assert first[0].status_code == 200, first[0].text
    replay = post(responses_bridge, "/threads", {}, key=key)
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.content == first[0].content
    assert fake.calls(CREATE_CONVERSATION) == 1
    assert thread_ids(responses_bridge) == [first[0].json()["id"]]


def test_simultaneous_requests_with_one_key_run_once(responses_bridge):
    fake, key = responses_bridge.fake, new_key()
    fake.delay_on(CREATE_CONVERSATION, 0.3)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(responses_bridge, "/threads", {}, key=key), range(8)))
    ran = [a for a in answers if a.status_code == 200 and "Idempotent-Replayed" not in a.headers]
    assert len(ran) == 1
    assert all(a.status_code == 409 or a.content == ran[0].content for a in answers if a is not ran[0])
    assert fake.calls(CREATE_CONVERSATION) == 1
    assert thread_ids(responses_bridge) == [ran[0].json()["id"]]


def test_a_failed_first_attempt_does_not_poison_the_key(responses_bridge):
    fake, client, key = responses_bridge.fake, responses_bridge.sdk("alice"), new_key()
    fake.fail_on(CREATE_CONVERSATION, 500)
    with pytest.raises(openai.InternalServerError) as caught:
        client.beta.threads.create(metadata={"try": "1"}, **keyed(key))
    assert caught.value.status_code == 502
    assert thread_ids(responses_bridge) == [] and record_count(responses_bridge) == 0

    thread = client.beta.threads.create(metadata={"try": "1"}, **keyed(key))
    assert client.beta.threads.create(metadata={"try": "1"}, **keyed(key)).id == thread.id
    assert thread_ids(responses_bridge) == [thread.id]
    assert fake.calls(CREATE_CONVERSATION) == 2  # the failed call and the one that made it


def test_an_unexpected_error_releases_the_key(offline_bridge, monkeypatch):
    engine = offline_bridge.app.extensions["bridge.engine"]
    create_thread = engine.create_thread
    calls = []

    def fail_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return create_thread(*args, **kwargs)

    monkeypatch.setattr(engine, "create_thread", fail_once)
    key = new_key()
    assert_error(post(offline_bridge, "/threads", {}, key=key), 500, None, None)
    second = post(offline_bridge, "/threads", {}, key=key)
    assert second.status_code == 200 and "Idempotent-Replayed" not in second.headers
    assert thread_ids(offline_bridge) == [second.json()["id"]]


def test_a_thread_locked_409_is_not_kept(start_bridge):
    bridge = start_bridge("offline", OFFLINE_REPLY_DELAY=1)
    client, assistant_id, key = bridge.sdk("alice"), bridge.assistant(), new_key()
    thread = client.beta.threads.create()
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)
    message = {"role": "user", "content": "Hi"}
    assert_error(post(bridge, f"/threads/{thread.id}/messages", message, key=key), 409,
                 "thread_locked", "thread_id")
    wait_for(lambda: client.beta.threads.runs.retrieve(
        thread_id=thread.id, run_id=run.id).status == "completed")
    created = post(bridge, f"/threads/{thread.id}/messages", message, key=key)
    assert created.status_code == 200 and "Idempotent-Replayed" not in created.headers
    user_messages = [m.id for m in client.beta.threads.messages.list(thread_id=thread.id).data
                     if m.role == "user"]
    assert user_messages == [created.json()["id"]]


def test_a_client_retrying_after_a_timeout_creates_one_thread(responses_bridge):
    fake, client, key = responses_bridge.fake, responses_bridge.sdk("alice"), new_key()
    fake.delay_on(CREATE_CONVERSATION, 30)  # until end_delays(): the retry finds it in flight
    with pytest.raises(openai.APITimeoutError):
        client.beta.threads.create(timeout=0.3, **keyed(key))
    with pytest.raises(openai.ConflictError) as caught:
        client.beta.threads.create(timeout=0.3, **keyed(key))
    assert caught.value.response.headers["Retry-After"] == "1"
    fake.end_delays()

    def retry():
        try:
            return client.beta.threads.with_raw_response.create(timeout=0.3, **keyed(key))
        except openai.ConflictError:
            return None

    replay = wait_for(retry, timeout=5, interval=0.1)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert thread_ids(responses_bridge) == [replay.parse().id]
    assert fake.calls(CREATE_CONVERSATION) == 1


def test_the_sdks_own_retries_after_a_timeout_get_the_replay(responses_bridge):
    fake, key = responses_bridge.fake, new_key()
    fake.delay_on(CREATE_CONVERSATION, 1.0)
    client = openai.OpenAI(base_url=responses_bridge.api, api_key=responses_bridge.token("alice"),
                           max_retries=4, timeout=0.3)
    responses_bridge.clients.append(client)
    # Timeout, then 409 with Retry-After while the first attempt runs, then the replay.
    thread = client.beta.threads.create(metadata={"via": "sdk"}, **keyed(key))
    assert thread.metadata["via"] == "sdk"
    assert thread_ids(responses_bridge) == [thread.id]
    assert fake.calls(CREATE_CONVERSATION) == 1


def test_a_chunked_body_reaches_the_view(offline_bridge):
    def chunks():
        yield b'{"metadata": '
        yield b'{"sent": "chunked"}}'

    headers = {**offline_bridge.headers("alice"), KEY: new_key(), "Content-Type": "application/json"}
    first = httpx.post(offline_bridge.api + "/threads", headers=headers, content=chunks())
    assert first.status_code == 200, first.text
    assert first.json()["metadata"]["sent"] == "chunked"
    again = httpx.post(offline_bridge.api + "/threads", headers=headers,
                       content=b'{"metadata": {"sent": "chunked"}}')
    assert again.headers["Idempotent-Replayed"] == "true" and again.content == first.content
