"""Streamed runs, as the official Python SDK consumes them, on every engine.

Every stream is read twice over: by the SDK's helpers (`runs.stream` with an
`AssistantEventHandler`, `create_and_run_stream`, `submit_tool_outputs_stream`), and raw, where
each event is validated against the SDK's own type for it and the whole sequence against the
order rules (`bridge/streaming/order.py`). What a stream says must be what polling then returns:
the same run, message and step ids and contents. Also: a client that leaves mid-stream does not
stop the run, idle streams ping, another user's run is a JSON 404 and never a stream, a full
server refuses a stream with 503 before starting the run, a replayed Idempotency-Key starts no
second run, and a stream whose log goes quiet ends from the registry.
"""

from __future__ import annotations

import http.client
import json
import typing
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from openai import AssistantEventHandler
from openai.types.beta import AssistantStreamEvent

from bridge.streaming import events as ev
from bridge.streaming.order import StreamOrder
from tests.conftest import ENGINES, wait_for

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
TOOL_ENGINES = ENGINES  # offline calls tools by its rule, the others as scripted
EVENT_TYPES = {typing.get_args(cls.model_fields["event"].annotation)[0]: cls
               for cls in typing.get_args(typing.get_args(AssistantStreamEvent)[0])}


# ---- scripting each engine's reply ------------------------------------------------------------------

def script_reply(bridge, text: str) -> str:
    """Make the run's reply `text` (offline: the message it will quote); the user's message."""
    if bridge.engine == "offline":
        return text
    bridge.fake.enqueue(text)
    return "hello"


def expected_reply(bridge, text: str) -> str:
    if bridge.engine == "offline":
        return (f'You said: "{text}". This is the offline responder of assistants-bridge; '
                "configure a model provider to get real answers.")
    return text


def script_tool_call(bridge, then: str) -> str:
    """Make the run ask for get_weather({"city": "Oslo"}), then reply `then`; the message."""
    if bridge.engine == "offline":
        return 'Use get_weather for {"city": "Oslo"}'
    if bridge.engine == "chat":
        bridge.fake.enqueue({"tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Oslo"}'}}]}, then)
    else:
        bridge.fake.enqueue({"function_calls": [{"name": "get_weather",
                                                 "arguments": {"city": "Oslo"}}]}, then)
    return "Weather in Oslo?"


# ---- reading streams raw -------------------------------------------------------------------------------

def raw_events(bridge, path: str, body: dict[str, Any], *, user: str = "alice",
               headers: dict[str, str] | None = None) -> tuple[int, str, list[ev.Event], list[bytes]]:
    """POST and read the answer to its end: status, content type, the events and every frame."""
    url = urlsplit(bridge.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=20)
    try:
        conn.request("POST", "/v1" + path, body=json.dumps(body), headers={
            **bridge.headers(user), "Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        raw = response.read()
        kind = response.getheader("Content-Type", "")
        headers_seen = dict(response.getheaders())
    finally:
        conn.close()
    if not kind.startswith("text/event-stream"):
        return response.status, kind, [], [raw]
    assert headers_seen.get("Cache-Control") == "no-cache"
    assert headers_seen.get("X-Accel-Buffering") == "no"
    frames = [frame + b"\n\n" for frame in raw.split(b"\n\n") if frame]
    events = []
    for frame in frames:
        if frame.startswith(b":"):
            continue
        name_line, data_line = frame.decode().strip().split("\n")
        name, data = name_line.removeprefix("event: "), data_line.removeprefix("data: ")
        events.append(ev.Event(name, data if data == "[DONE]" else json.loads(data)))
    return response.status, kind, events, frames


def open_stream(bridge, thread_id: str, assistant_id: str):
    """Start a streamed run and leave its answer unread: the connection and the response."""
    url = urlsplit(bridge.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    conn.request("POST", f"/v1/threads/{thread_id}/runs", headers={
        **bridge.headers("alice"), "Content-Type": "application/json"},
        body=json.dumps({"assistant_id": assistant_id, "stream": True}))
    return conn, conn.getresponse()


def assert_valid(events: list[ev.Event], order: StreamOrder | None = None) -> None:
    """The SDK's types take every event, and the sequence keeps the order rules."""
    order = order or StreamOrder()
    for event in events:
        if event.name != "done":
            EVENT_TYPES[event.name].model_validate({"event": event.name, "data": event.data})
        order.check(event)
    assert order.done, [event.name for event in events]


def text_of(events: list[ev.Event]) -> str:
    return "".join(part["text"]["value"] for event in events if event.name == "thread.message.delta"
                   for part in event.data["delta"]["content"])


def first(events: list[ev.Event], name: str) -> dict[str, Any]:
    return next(event.data for event in events if event.name == name)


# ---- the streams -----------------------------------------------------------------------------------------

@pytest.fixture
def setup(bridge):
    client = bridge.sdk("alice")
    return bridge, client, bridge.assistant(tools=[WEATHER])


def test_a_streamed_reply_is_what_polling_then_returns(setup):
    bridge, client, assistant_id = setup
    message = script_reply(bridge, "Streams are rivers of events.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": message}])

    status, kind, events, _ = raw_events(bridge, f"/threads/{thread.id}/runs",
                                         {"assistant_id": assistant_id, "stream": True})

    assert status == 200 and kind.startswith("text/event-stream")
    assert_valid(events)
    names = [event.name for event in events]
    assert names[:3] == ["thread.run.created", "thread.run.queued", "thread.run.in_progress"]
    assert names[-2:] == ["thread.run.completed", "done"]
    assert names.count("thread.message.delta") >= 2  # streamed, not sent whole
    expected = expected_reply(bridge, message if bridge.engine == "offline"
                              else "Streams are rivers of events.")
    assert text_of(events) == expected
    # The same objects, ids included, as polling shows them afterwards.
    run = first(events, "thread.run.completed")
    polled = client.beta.threads.runs.retrieve(run["id"], thread_id=thread.id).to_dict()
    assert {key: polled[key] for key in ("id", "status", "usage", "model")} == \
        {key: run[key] for key in ("id", "status", "usage", "model")}
    done = first(events, "thread.message.completed")
    (reply,) = client.beta.threads.messages.list(thread.id, run_id=run["id"]).data
    assert reply.id == done["id"] == first(events, "thread.message.created")["id"]
    assert reply.content[0].text.value == expected == done["content"][0]["text"]["value"]
    (step,) = client.beta.threads.runs.steps.list(run["id"], thread_id=thread.id).data
    assert step.id == first(events, "thread.run.step.created")["id"]
    assert step.step_details.message_creation.message_id == reply.id


def test_the_sdk_helpers_stream_a_tool_round_trip(setup):
    bridge, client, assistant_id = setup
    message = script_tool_call(bridge, then="Take an umbrella.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": message}])
    seen: list[str] = []

    class Recorder(AssistantEventHandler):
        def on_event(self, event) -> None:
            seen.append(event.event)

    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant_id,
                                         event_handler=Recorder()) as stream:
        stream.until_done()
        run = stream.get_final_run()
    assert run.status == "requires_action" and seen[-1] == "thread.run.requires_action"
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather",
                                                                         {"city": "Oslo"})
    assert "thread.run.step.delta" in seen

    with client.beta.threads.runs.submit_tool_outputs_stream(
            thread_id=thread.id, run_id=run.id,
            tool_outputs=[{"tool_call_id": call.id, "output": "rain"}]) as stream:
        deltas = list(stream.text_deltas)
        final = stream.get_final_run()
        messages = stream.get_final_messages()
    assert final.status == "completed"
    expected = ('get_weather returned "rain"' if bridge.engine == "offline"
                else "Take an umbrella.")
    assert expected in "".join(deltas) == messages[0].content[0].text.value
    steps = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc").data
    assert [(s.type, s.status) for s in steps] == [("tool_calls", "completed"),
                                                   ("message_creation", "completed")]
    assert steps[0].step_details.tool_calls[0].function.output == "rain"


def test_a_submitted_tool_output_streams_in_order(setup):
    bridge, client, assistant_id = setup
    thread = client.beta.threads.create(messages=[{"role": "user", "content": script_tool_call(
        bridge, then="Rain.")}])
    _, _, asking, _ = raw_events(bridge, f"/threads/{thread.id}/runs",
                                 {"assistant_id": assistant_id, "stream": True})
    assert_valid(asking)
    run = first(asking, "thread.run.requires_action")
    step_id = first(asking, "thread.run.step.created")["id"]
    call_id = run["required_action"]["submit_tool_outputs"]["tool_calls"][0]["id"]

    _, _, answered, _ = raw_events(
        bridge, f"/threads/{thread.id}/runs/{run['id']}/submit_tool_outputs",
        {"tool_outputs": [{"tool_call_id": call_id, "output": "rain"}], "stream": True})

    assert_valid(answered, StreamOrder.resuming(step_id))
    assert first(answered, "thread.run.step.completed")["id"] == step_id
    assert answered[-2].name == "thread.run.completed"


def test_create_and_run_stream_starts_with_the_thread(setup):
    bridge, client, assistant_id = setup
    message = script_reply(bridge, "A new thread.")

    with client.beta.threads.create_and_run_stream(
            assistant_id=assistant_id,
            thread={"messages": [{"role": "user", "content": message}]}) as stream:
        events = [event.event for event in stream]
        run = stream.get_final_run()

    assert events[:2] == ["thread.created", "thread.run.created"]
    assert run.status == "completed"
    assert client.beta.threads.retrieve(run.thread_id).metadata["user_id"] == "alice"


# ---- leaving, waiting, refusing -------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_a_client_that_leaves_does_not_stop_the_run(start_bridge, engine):
    bridge = start_bridge(engine, OFFLINE_REPLY_DELAY=0.5)
    client, assistant_id = bridge.sdk("alice"), bridge.assistant()
    message = script_reply(bridge, "Still written.")
    if bridge.fake is not None:
        bridge.fake.hold()
    thread = client.beta.threads.create(messages=[{"role": "user", "content": message}])
    conn, response = open_stream(bridge, thread.id, assistant_id)
    assert response.readline().startswith(b"event: thread.run.created")
    conn.close()  # gone, mid-stream
    if bridge.fake is not None:
        bridge.fake.release()

    run = wait_for(lambda: next((r for r in client.beta.threads.runs.list(thread.id).data
                                 if r.status == "completed"), None), timeout=15, interval=0.1)
    replies = client.beta.threads.messages.list(thread.id, run_id=run.id).data
    assert [m.content[0].text.value for m in replies] == [expected_reply(bridge, message)
                                                          if engine == "offline"
                                                          else "Still written."]


def test_an_idle_stream_pings(start_bridge):
    bridge = start_bridge("offline", OFFLINE_REPLY_DELAY=0.6, STREAM_PING_SECONDS=0.1)
    thread = bridge.sdk("alice").beta.threads.create(messages=[{"role": "user", "content": "x"}])

    _, _, events, frames = raw_events(bridge, f"/threads/{thread.id}/runs",
                                      {"assistant_id": bridge.assistant(), "stream": True})

    assert ev.PING in frames
    assert_valid(events)


@pytest.mark.parametrize("path", ["/threads/{thread}/runs", "/threads/{thread}/runs/{run}/"
                                  "submit_tool_outputs"])
def test_a_stream_of_another_users_thread_is_a_json_404(offline_bridge, path):
    bridge = offline_bridge
    bobs = bridge.sdk("bob").beta.threads.create()
    run = bridge.sdk("bob").beta.threads.runs.create_and_poll(
        thread_id=bobs.id, assistant_id=bridge.assistant(), poll_interval_ms=20)
    body = {"assistant_id": bridge.assistant(), "stream": True,
            "tool_outputs": [{"tool_call_id": "call_1", "output": "x"}]}
    if "submit" in path:
        body.pop("assistant_id")
    else:
        body.pop("tool_outputs")

    status, kind, events, (raw,) = raw_events(bridge, path.format(thread=bobs.id, run=run.id),
                                              body, user="alice")

    assert status == 404 and kind.startswith("application/json") and not events
    assert json.loads(raw)["error"]["param"] == "thread_id"


def test_a_full_server_refuses_a_stream_before_starting_the_run(start_bridge):
    bridge = start_bridge("offline", STREAMS_PER_PROCESS=1, OFFLINE_REPLY_DELAY=1.0)
    client, assistant_id = bridge.sdk("alice"), bridge.assistant()
    busy = client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    other = client.beta.threads.create(messages=[{"role": "user", "content": "y"}])
    holder, held = open_stream(bridge, busy.id, assistant_id)
    assert held.readline().startswith(b"event:")

    status, _, _, (raw,) = raw_events(bridge, f"/threads/{other.id}/runs",
                                      {"assistant_id": assistant_id, "stream": True})

    assert status == 503 and json.loads(raw)["error"]["code"] == "engine_overloaded"
    assert client.beta.threads.runs.list(other.id).data == []  # nothing was started
    assert client.beta.threads.retrieve(other.id).id == other.id  # polls go on
    held.read()
    holder.close()
    wait_for(lambda: raw_events(bridge, f"/threads/{other.id}/runs",
                                {"assistant_id": assistant_id, "stream": True})[0] == 200)


def test_a_replayed_streaming_request_starts_no_second_run(offline_bridge):
    bridge = offline_bridge
    client = bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "once"}])
    body = {"assistant_id": bridge.assistant(), "stream": True}
    key = {"Idempotency-Key": uuid.uuid4().hex}

    status, _, events, _ = raw_events(bridge, f"/threads/{thread.id}/runs", body, headers=key)
    replay_status, kind, _, (raw,) = raw_events(bridge, f"/threads/{thread.id}/runs", body,
                                                headers=key)

    assert status == replay_status == 200 and kind.startswith("application/json")
    replayed = json.loads(raw)
    assert replayed["object"] == "thread.run"
    assert replayed["id"] == first(events, "thread.run.created")["id"]
    assert [run.id for run in client.beta.threads.runs.list(thread.id).data] == [replayed["id"]]


@pytest.mark.parametrize("kept_deltas", [1, 0], ids=["lost mid-reply", "lost before the reply"])
def test_a_stream_whose_log_goes_quiet_ends_from_the_registry(start_bridge, monkeypatch,
                                                              kept_deltas):
    bridge = start_bridge("offline")
    log = bridge.app.extensions["bridge.engine"].run_log
    appended = log.append
    # The executor's reports are lost from some point on (a log that broke, a dead worker).
    state = {"deltas": 0}

    def lossy(run_id, event):
        state["deltas"] += event.name in ("thread.message.delta", "thread.run.step.created")
        if state["deltas"] <= kept_deltas:
            appended(run_id, event)

    monkeypatch.setattr(log, "append", lossy)
    thread = bridge.sdk("alice").beta.threads.create(messages=[{"role": "user", "content": "x"}])

    _, _, events, _ = raw_events(bridge, f"/threads/{thread.id}/runs",
                                 {"assistant_id": bridge.assistant(), "stream": True})

    assert_valid(events)
    assert [event.name for event in events][-4:] == [
        "thread.message.completed", "thread.run.step.completed", "thread.run.completed", "done"]
    # What the registry had: the whole reply, under the id the stream announced.
    assert first(events, "thread.message.completed")["id"] == \
        first(events, "thread.message.created")["id"]
    if not kept_deltas:  # nothing of the reply came: the registry tells it whole
        reply = bridge.sdk("alice").beta.threads.messages.list(thread.id).data[0]
        assert text_of(events) == reply.content[0].text.value


@pytest.mark.parametrize("engine", ENGINES)
def test_a_stream_waiting_mid_reply_holds_no_registry_connection(start_bridge, engine):
    # Hundreds of open streams would otherwise take every connection of the pool, and each
    # other request would wait for one.
    bridge = start_bridge(engine, OFFLINE_REPLY_DELAY=3.0)
    message = script_reply(bridge, "Held after the first piece.")
    if bridge.fake is not None:
        bridge.fake.hold(after_deltas=1)
    thread = bridge.sdk("alice").beta.threads.create(messages=[{"role": "user", "content": message}])
    conn, response = open_stream(bridge, thread.id, bridge.assistant())
    # offline waits before its reply, the others after its first piece
    awaited = b"event: thread.run.in_progress" if engine == "offline" else \
        b"event: thread.message.delta"
    while not response.readline().startswith(awaited):
        pass
    with bridge.app.app_context():
        from bridge.extensions import db
        try:  # a moment for the request to hand back what it used before it waits
            held = wait_for(lambda: db.engine.pool.checkedout() == 0, timeout=0.5)
        except AssertionError:
            held = False
        checked_out = db.engine.pool.checkedout()
    if bridge.fake is not None:
        bridge.fake.release()
    rest = response.read()
    conn.close()
    assert held, f"{checked_out} registry connections held while the stream waits"
    assert b"event: thread.run.completed" in rest
