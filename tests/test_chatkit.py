"""POST /chatkit: ChatKit's protocol, as a ChatKit front end speaks it, on every engine.

Requests are built with `chatkit.types` and every frame of an answer is decoded with
`TypeAdapter(ThreadStreamEvent)`; the client does what ChatKit's front end does: it creates a
thread with its first message, learns the thread's id from `thread.created`, and sends the next
message to that id. What ChatKit holds must be what `/v1` serves: the same thread, the same
messages under the same ids, for the same user only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from chatkit.types import (InferenceOptions, ThreadAddUserMessageParams, ThreadCreateParams,
                           ThreadsAddUserMessageReq, ThreadsCreateReq, ThreadStreamEvent,
                           UserMessageInput, UserMessageTextContent)
from pydantic import TypeAdapter

from tests.conftest import ENGINES

EVENTS = TypeAdapter(ThreadStreamEvent)
ROOT = Path(__file__).resolve().parents[1]


def user_input(text: str) -> UserMessageInput:
    return UserMessageInput(content=[UserMessageTextContent(text=text)], attachments=[],
                            inference_options=InferenceOptions())


def post(bridge, request: Any, user: str = "alice") -> httpx.Response:
    body = request if isinstance(request, (bytes, str)) else (
        json.dumps(request) if isinstance(request, dict) else request.model_dump_json())
    return httpx.post(bridge.url + "/chatkit", content=body, timeout=30,
                      headers={**bridge.headers(user), "Content-Type": "application/json"})


def streamed(response: httpx.Response) -> list:
    """Every frame of a ChatKit stream, decoded as ChatKit's front end decodes it."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = [frame for frame in response.text.split("\n\n") if frame.strip()]
    assert all(frame.startswith("data: ") for frame in frames), frames
    return [EVENTS.validate_json(frame[len("data: "):]) for frame in frames]


def reply_of(events: list) -> tuple[str, str]:
    """The assistant message the stream wrote: its id and its text, from its deltas."""
    added = [event.item for event in events if event.type == "thread.item.added"
             and event.item.type == "assistant_message"]
    assert len(added) == 1, [event.type for event in events]
    deltas = "".join(event.update.delta for event in events if event.type == "thread.item.updated"
                     and event.item_id == added[0].id)
    done = [event.item for event in events if event.type == "thread.item.done"
            and event.item.id == added[0].id]
    assert done and done[0].content[0].text == deltas
    return added[0].id, deltas


def v1_threads(bridge, user: str = "alice") -> list[str]:
    """The ids GET /v1/threads lists for the user, oldest first (the SDK has no such call)."""
    answer = httpx.get(bridge.api + "/threads?order=asc&limit=100", headers=bridge.headers(user))
    return [thread["id"] for thread in answer.json()["data"]]


@pytest.fixture
def chatkit_bridge(start_bridge, request):
    bridge = start_bridge(request.param, CHATKIT_ASSISTANT="helper")
    bridge.assistant(name="helper")
    return bridge


@pytest.mark.parametrize("chatkit_bridge", ENGINES, indirect=True)
def test_two_messages_make_one_thread_that_v1_serves(chatkit_bridge):
    bridge = chatkit_bridge
    first = streamed(post(bridge, ThreadsCreateReq(params=ThreadCreateParams(
        input=user_input("Hello there")))))
    assert first[0].type == "thread.created"
    thread_id = first[0].thread.id
    assert thread_id.startswith("thread_")
    first_reply = reply_of(first)

    # The front end sends the next message to the id it learnt from thread.created.
    second = streamed(post(bridge, ThreadsAddUserMessageReq(params=ThreadAddUserMessageParams(
        thread_id=thread_id, input=user_input("And again")))))
    second_reply = reply_of(second)

    client = bridge.sdk("alice")
    assert v1_threads(bridge) == [thread_id]
    messages = client.beta.threads.messages.list(thread_id, order="asc").data
    users = [event.item.id for event in first + second if event.type == "thread.item.done"
             and event.item.type == "user_message"]
    assert [(m.id, m.role) for m in messages] == [
        (users[0], "user"), (first_reply[0], "assistant"),
        (users[1], "user"), (second_reply[0], "assistant")]
    assert messages[0].content[0].text.value == "Hello there"
    assert [messages[1].content[0].text.value, messages[3].content[0].text.value] == [
        first_reply[1], second_reply[1]]
    assert first_reply[1] and second_reply[1]


def test_a_thread_begun_with_the_sdk_goes_on_in_chatkit(start_bridge):
    bridge = start_bridge("offline", CHATKIT_ASSISTANT="helper")
    assistant_id = bridge.assistant(name="helper")
    client = bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "From the SDK"}])
    client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id)

    listed = post(bridge, {"type": "items.list", "params": {"thread_id": thread.id,
                                                            "order": "asc"}}).json()
    assert [(item["type"], item["id"]) for item in listed["data"]] == [
        ("user_message" if m.role == "user" else "assistant_message", m.id)
        for m in client.beta.threads.messages.list(thread.id, order="asc").data]

    events = streamed(post(bridge, ThreadsAddUserMessageReq(params=ThreadAddUserMessageParams(
        thread_id=thread.id, input=user_input("From ChatKit")))))
    reply_id, _ = reply_of(events)
    assert client.beta.threads.messages.list(thread.id).data[0].id == reply_id


@pytest.mark.parametrize("request_for", [
    lambda thread_id: {"type": "items.list", "params": {"thread_id": thread_id}},
    lambda thread_id: {"type": "threads.get_by_id", "params": {"thread_id": thread_id}},
    lambda thread_id: {"type": "threads.delete", "params": {"thread_id": thread_id}},
    lambda thread_id: {"type": "threads.update", "params": {"thread_id": thread_id,
                                                            "title": "mine now"}},
    lambda thread_id: json.loads(ThreadsAddUserMessageReq(params=ThreadAddUserMessageParams(
        thread_id=thread_id, input=user_input("hi"))).model_dump_json()),
], ids=["items.list", "threads.get_by_id", "threads.delete", "threads.update",
        "threads.add_user_message"])
def test_another_users_thread_is_answered_like_a_missing_one(start_bridge, request_for):
    bridge = start_bridge("offline", CHATKIT_ASSISTANT="helper")
    bridge.assistant(name="helper")
    theirs = bridge.sdk("bob").beta.threads.create(messages=[{"role": "user", "content": "x"}])
    missing = "thread_" + "A" * 24

    answers = [post(bridge, request_for(thread_id), user="alice")
               for thread_id in (theirs.id, missing)]

    for answer in answers:
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/json"
    shown = [answer.json()["error"] for answer in answers]
    assert shown[0] == {**shown[1], "message": shown[1]["message"].replace(missing, theirs.id)}
    assert bridge.sdk("bob").beta.threads.retrieve(theirs.id).metadata.get("user_id") == "bob"
    assert len(bridge.sdk("bob").beta.threads.messages.list(theirs.id).data) == 1


def test_titles_lists_and_deletes_are_the_registrys(start_bridge):
    bridge = start_bridge("offline", CHATKIT_ASSISTANT="helper")
    bridge.assistant(name="helper")
    made = [streamed(post(bridge, ThreadsCreateReq(params=ThreadCreateParams(
        input=user_input(f"thread {n}")))))[0].thread.id for n in range(3)]

    renamed = post(bridge, {"type": "threads.update",
                            "params": {"thread_id": made[1], "title": "Renamed"}})
    assert renamed.status_code == 200 and renamed.json()["title"] == "Renamed"
    page = post(bridge, {"type": "threads.list", "params": {"limit": 2, "order": "asc"}}).json()
    assert [thread["id"] for thread in page["data"]] == made[:2] and page["has_more"]
    assert page["data"][1]["title"] == "Renamed"
    rest = post(bridge, {"type": "threads.list", "params": {"limit": 2, "order": "asc",
                                                            "after": page["after"]}}).json()
    assert [thread["id"] for thread in rest["data"]] == made[2:] and not rest["has_more"]

    assert post(bridge, {"type": "threads.delete", "params": {"thread_id": made[0]}}).status_code == 200
    assert v1_threads(bridge) == made[1:]


def test_without_an_answering_assistant_the_stream_says_so(start_bridge):
    bridge = start_bridge("offline")  # no CHATKIT_ASSISTANT

    events = streamed(post(bridge, ThreadsCreateReq(params=ThreadCreateParams(
        input=user_input("Anyone there?")))))

    errors = [event for event in events if event.type == "error"]
    assert len(errors) == 1 and "CHATKIT_ASSISTANT" in errors[0].message
    assert not errors[0].allow_retry


@pytest.mark.parametrize("body, status, code", [
    (b"{}", 400, "invalid_chatkit_request"),
    (b"not json", 400, "invalid_chatkit_request"),
    (b'{"type": "threads.delete", "params": {}}', 400, "invalid_chatkit_request"),
    (b'{"type": "threads.list", "params": {}, "metadata": {"x": ' + b"[" * 40 + b"]" * 40 + b"}}",
     400, "nested_too_deeply"),
])
def test_a_body_that_is_not_a_chatkit_request_is_a_json_400(offline_bridge, body, status, code):
    answer = post(offline_bridge, body)
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code


def test_chatkit_needs_a_token(offline_bridge):
    answer = httpx.post(offline_bridge.url + "/chatkit", content=b'{"type": "threads.list", '
                        b'"params": {}}', headers={"Content-Type": "application/json"})
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "invalid_request_error"


def test_a_browser_on_a_configured_origin_may_call_chatkit(make_app):
    origin = "https://chat.example.org"
    client = make_app(CORS_ORIGINS=origin).test_client()

    answer = client.options("/chatkit", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})

    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == origin
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]
    other = client.options("/chatkit", headers={"Origin": "https://elsewhere.example.org",
                                                "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_only_chatkit_requests_load_the_chatkit_package(tmp_path):
    # openai-chatkit imports the Agents SDK (seconds of start-up); /v1 must not pay for it.
    script = f"""
import sys
from bridge import create_app
app = create_app({{"DATABASE_URL": "sqlite:///{tmp_path / 'lazy.db'}", "JWT_SECRET_KEY": "x" * 40,
                  "RUN_SWEEP_SECONDS": 0, "AUTO_MIGRATE": True}})
client = app.test_client()
assert client.get("/v1/threads").status_code == 401
assert "chatkit" not in sys.modules and "agents" not in sys.modules, "loaded early"
from bridge.auth import tokens
with app.app_context():
    token = tokens().mint("alice", ttl=600)
client.post("/chatkit", data=b'{{"type": "threads.list", "params": {{}}}}',
            headers={{"Authorization": "Bearer " + token}})
assert "chatkit" in sys.modules
print("lazy")
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "lazy" in done.stdout, done.stdout + done.stderr[-3000:]
