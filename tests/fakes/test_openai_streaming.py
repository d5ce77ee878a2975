"""Tests of FakeOpenAI's streams, read by the real `openai` SDK's own streaming helpers over HTTP.

Every event is also validated against the SDK's type for it (the SDK itself builds events without
validating them), so a shape the SDK would only half understand fails here.
"""

from __future__ import annotations

import http.client
import json
import time
import typing
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from openai import AssistantEventHandler
from openai.types.beta import AssistantStreamEvent
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent

from .openai_server import FakeOpenAI
from .test_openai_server import POLICY, STEP_CONTENT, WEATHER_TOOL, finished, poll, upload

MODEL = "fake-model"
TEXT_EVENTS = ["response.output_item.added", "response.content_part.added"] + \
    ["response.output_text.delta"] * 4 + \
    ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
MESSAGE_EVENTS = ["thread.run.step.created", "thread.run.step.in_progress", "thread.message.created",
                  "thread.message.in_progress"] + ["thread.message.delta"] * 4 + \
    ["thread.message.completed", "thread.run.step.completed"]
RUN_START = ["thread.run.created", "thread.run.queued", "thread.run.in_progress"]
FILE_SEARCH_EVENTS = ["response.output_item.added", "response.file_search_call.in_progress",
                      "response.file_search_call.searching", "response.file_search_call.completed",
                      "response.output_item.done"]
CITED_TEXT_EVENTS = [*TEXT_EVENTS[:-3], "response.output_text.annotation.added", *TEXT_EVENTS[-3:]]
SEARCH_STEP_EVENTS = ["thread.run.step.created", "thread.run.step.in_progress", "thread.run.step.delta",
                      "thread.run.step.completed"]


def _types_by(union: Any, key: str) -> dict[str, type]:
    """The SDK's event classes of a discriminated union, by the value of their discriminator."""
    members = typing.get_args(typing.get_args(union)[0])
    return {typing.get_args(cls.model_fields[key].annotation)[0]: cls for cls in members}


RESPONSE_EVENT_TYPES = _types_by(ResponseStreamEvent, "type")
ASSISTANT_EVENT_TYPES = _types_by(AssistantStreamEvent, "event")


def checked(event: Any) -> Any:
    """Validate an event the SDK built against the SDK's own type for it, and return it."""
    data = event.to_dict()
    if "sequence_number" in data:
        RESPONSE_EVENT_TYPES[data["type"]].model_validate(data)
    elif "event" in data:
        ASSISTANT_EVENT_TYPES[data["event"]].model_validate(data)
    else:
        ChatCompletionChunk.model_validate(data)
    return event


def read(stream: Any) -> list[Any]:
    """Read a raw SDK stream to its end, validating each event."""
    with stream:
        return [checked(event) for event in stream]


def read_until(stream: Any, kind: str, count: int = 1) -> list[Any]:
    """Read a raw Responses stream until `count` events of type `kind` came."""
    events = []
    for event in stream:
        events.append(checked(event))
        if sum(e.type == kind for e in events) == count:
            return events
    raise AssertionError(f"the stream ended before {count} {kind}: {[e.type for e in events]}")


def raw_stream(fake: FakeOpenAI, method: str, path: str, body: Any = None) -> tuple[str, list[str]]:
    """Send a request without the SDK and return the answer's content type and raw SSE frames."""
    port = int(fake.base_url.rsplit(":", 1)[1].split("/")[0])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Authorization": f"Bearer {fake.api_key}", "OpenAI-Beta": "assistants=v2"}
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = conn.getresponse()
        assert response.status == 200, response.read()
        frames = response.read().decode().split("\n\n")
        return response.getheader("Content-Type"), [frame for frame in frames if frame]
    finally:
        conn.close()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(latency=0.01) as server:
        yield server
        server.release()


@pytest.fixture
def client(fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0, timeout=5) as sdk:
        yield sdk


# ---- responses ----------------------------------------------------------------------------------

def test_streamed_response_sends_openai_events_in_order(client: openai.OpenAI) -> None:
    conversation = client.conversations.create()
    events = read(client.responses.create(model=MODEL, input="hello there", conversation=conversation.id,
                                          stream=True))

    assert [e.type for e in events] == ["response.created", "response.in_progress", *TEXT_EVENTS,
                                        "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    created, completed = events[0].response, events[-1].response
    assert (created.status, created.output, completed.status) == ("in_progress", [], "completed")
    added, part, *deltas, text_done, part_done, item_done = events[2:-1]
    assert (added.item.type, added.item.status, added.item.content, added.output_index) == (
        "message", "in_progress", [], 0)
    assert (part.part.type, part.part.text, part.item_id, part.content_index) == ("output_text", "", added.item.id, 0)
    assert [d.delta for d in deltas] == ["echo", ": he", "llo ", "there"]
    assert {(d.item_id, d.output_index, d.content_index) for d in deltas} == {(added.item.id, 0, 0)}
    assert text_done.text == part_done.part.text == "echo: hello there"
    assert (item_done.item.status, item_done.item.content[0].text) == ("completed", "echo: hello there")
    assert completed.output_text == "echo: hello there" and completed.usage is not None
    assert client.responses.retrieve(created.id).output_text == "echo: hello there"
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [(item.role, item.content[0].text) for item in items] == [
        ("user", "hello there"), ("assistant", "echo: hello there")]


def test_background_stream_starts_queued(client: openai.OpenAI) -> None:
    events = read(client.responses.create(model=MODEL, input="hi", background=True, stream=True))

    assert [e.type for e in events[:3]] == ["response.created", "response.queued", "response.in_progress"]
    assert [e.response.status for e in events[:3]] == ["queued", "queued", "in_progress"]
    assert events[-1].type == "response.completed"
    assert client.responses.retrieve(events[0].response.id).status == "completed"


def test_stream_helper_accumulates_text_and_function_calls(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="hello there") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "echo: hello there"

    fake.enqueue({"function_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}},
                                     {"name": "get_weather", "arguments": {"city": "Rome"}}]})
    with client.responses.stream(model=MODEL, input="weather?", tools=[WEATHER_TOOL]) as stream:
        events = [checked(event) for event in stream]
        final = stream.get_final_response()
    call_events = ["response.output_item.added"] + ["response.function_call_arguments.delta"] * 4 + \
        ["response.function_call_arguments.done", "response.output_item.done"]
    assert [e.type for e in events] == ["response.created", "response.in_progress", *call_events, *call_events,
                                        "response.completed"]
    first = events[2].item
    assert (first.type, first.name, first.arguments, first.status) == ("function_call", "get_weather", "",
                                                                      "in_progress")
    assert [e.snapshot for e in events[3:7]][-1] == '{"city": "Paris"}'
    assert events[7].arguments == '{"city": "Paris"}'
    assert [(c.type, c.name, json.loads(c.arguments), c.status) for c in final.output] == [
        ("function_call", "get_weather", {"city": "Paris"}, "completed"),
        ("function_call", "get_weather", {"city": "Rome"}, "completed")]
    assert final.output[0].call_id != final.output[1].call_id


def test_stream_chunks_sets_how_many_pieces(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.stream_chunks = 2
    fake.enqueue("one two three")
    events = read(client.responses.create(model=MODEL, input="x", stream=True))

    assert [e.delta for e in events if e.type == "response.output_text.delta"] == ["one tw", "o three"]


@pytest.mark.parametrize(("reply", "last", "status"), [
    ({"status": "failed", "error": {"code": "server_error", "message": "boom"}}, "response.failed", "failed"),
    ({"status": "incomplete", "content": "cut"}, "response.incomplete", "incomplete"),
])
def test_scripted_end_states_end_the_stream(fake: FakeOpenAI, client: openai.OpenAI, reply: dict[str, Any],
                                             last: str, status: str) -> None:
    fake.enqueue(reply)
    events = read(client.responses.create(model=MODEL, input="x", background=True, stream=True))

    assert events[-1].type == last and events[-1].response.status == status
    assert [e.type for e in events].count(last) == 1
    if status == "failed":
        assert [e.type for e in events] == ["response.created", "response.queued", "response.in_progress", last]
        assert events[-1].response.error.message == "boom"
    else:
        assert events[-2].item.status == "incomplete"
        assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert client.responses.retrieve(events[0].response.id).status == status


def test_a_dropped_stream_resumes_after_the_last_event_seen(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.drop_stream_after(5)
    seen = []
    with pytest.raises(openai.APIConnectionError):
        for event in client.responses.create(model=MODEL, input="hello there", background=True, stream=True):
            seen.append(checked(event))
    assert [e.sequence_number for e in seen] == [0, 1, 2, 3, 4]
    response_id = seen[0].response.id

    rest = read(client.responses.retrieve(response_id, stream=True, starting_after=seen[-1].sequence_number))

    events = seen + rest
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "echo: hello there"
    assert rest[-1].type == "response.completed"
    with client.responses.stream(response_id=response_id, starting_after=7) as stream:
        assert [event.sequence_number for event in stream] == [e.sequence_number for e in events[8:]]
        assert stream.get_final_response().output_text == "echo: hello there"


def test_streaming_again_replays_every_event(client: openai.OpenAI) -> None:
    events = read(client.responses.create(model=MODEL, input="again", background=True, stream=True))

    replayed = read(client.responses.retrieve(events[0].response.id, stream=True))

    assert [e.to_dict() for e in replayed] == [e.to_dict() for e in events]
    assert read(client.responses.retrieve(events[0].response.id, stream=True,
                                          starting_after=len(events) - 1)) == []


def test_a_second_reader_follows_a_stream_live(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.hold(after_deltas=2)
    first = client.responses.create(model=MODEL, input="hello there", background=True, stream=True)
    seen = read_until(first, "response.output_text.delta", 2)
    second = client.responses.retrieve(seen[0].response.id, stream=True, starting_after=3)
    fake.wait_for_open_streams(2)

    fake.release()

    rest = read(first)
    assert [e.to_dict() for e in read(second)] == [e.to_dict() for e in seen[4:] + rest]
    assert rest[-1].response.output_text == "echo: hello there"


def test_streaming_again_needs_a_streamed_background_response(client: openai.OpenAI) -> None:
    streamed = read(client.responses.create(model=MODEL, input="x", stream=True))[0].response
    polled = client.responses.create(model=MODEL, input="x", background=True)
    for response_id in (streamed.id, polled.id):
        with pytest.raises(openai.BadRequestError) as caught:
            read(client.responses.retrieve(response_id, stream=True))
        assert caught.value.param == "stream"
    background = read(client.responses.create(model=MODEL, input="x", background=True, stream=True))[0].response
    with pytest.raises(openai.BadRequestError) as caught:
        client.get(f"/responses/{background.id}", cast_to=object,
                   options={"params": {"stream": "true", "starting_after": "two"}})
    assert caught.value.param == "starting_after"
    with pytest.raises(openai.NotFoundError):
        read(client.responses.retrieve("resp_nope", stream=True))


def test_a_client_leaving_a_background_stream_does_not_stop_the_response(fake: FakeOpenAI,
                                                                         client: openai.OpenAI) -> None:
    conversation = client.conversations.create()
    fake.hold(after_deltas=1)
    stream = client.responses.create(model=MODEL, input="hello there", conversation=conversation.id,
                                     background=True, stream=True)
    response_id = read_until(stream, "response.output_text.delta")[0].response.id
    fake.wait_for_open_streams(1)

    stream.close()

    fake.wait_for_open_streams(0)  # while the response is still held: the fake saw the client go
    assert client.responses.retrieve(response_id).status == "in_progress"
    fake.release()
    assert finished(client, response_id).output_text == "echo: hello there"
    assert len(client.conversations.items.list(conversation.id).data) == 2


def test_a_client_leaving_a_foreground_stream_does_not_stop_the_response(fake: FakeOpenAI,
                                                                         client: openai.OpenAI) -> None:
    fake.hold(after_deltas=1)
    stream = client.responses.create(model=MODEL, input="hello there", stream=True)
    response_id = read_until(stream, "response.output_text.delta")[0].response.id
    stream.close()
    fake.wait_for_open_streams(0)

    fake.release()

    assert finished(client, response_id).output_text == "echo: hello there"


def test_cancel_ends_the_stream_with_the_cancelled_response(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conversation = client.conversations.create()
    fake.hold(after_deltas=2)
    stream = client.responses.create(model=MODEL, input="hello there", conversation=conversation.id,
                                     background=True, stream=True)
    seen = read_until(stream, "response.output_text.delta", 2)

    assert client.responses.cancel(seen[0].response.id).status == "cancelled"

    rest = read(stream)
    assert [e.type for e in rest] == ["response.incomplete"]
    cancelled = rest[0].response
    assert cancelled.status == "cancelled"
    assert [(item.status, item.content[0].text) for item in cancelled.output] == [("incomplete", "echo: he")]
    assert client.responses.retrieve(cancelled.id).status == "cancelled"
    fake.release()
    # The conversation is free again, and the cancelled response added nothing to it.
    assert client.responses.create(model=MODEL, input="next", conversation=conversation.id).status == "completed"
    assert [item.role for item in client.conversations.items.list(conversation.id, order="asc")] == [
        "user", "user", "assistant"]


def test_streamed_file_search_sends_the_call_then_the_cited_message(client: openai.OpenAI) -> None:
    policy = upload(client, "policy.txt", POLICY)
    tools = [{"type": "file_search", "vector_store_ids": [client.vector_stores.create(file_ids=[policy.id]).id]}]
    conversation = client.conversations.create()
    events = read(client.responses.create(model=MODEL, input="How long do refunds take?", tools=tools,
                                          conversation=conversation.id, include=["file_search_call.results"],
                                          stream=True))

    assert [e.type for e in events] == ["response.created", "response.in_progress", *FILE_SEARCH_EVENTS,
                                        *CITED_TEXT_EVENTS, "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    added, in_progress, searching, searched, call_done = events[2:7]
    assert (added.output_index, added.item.type, added.item.status, added.item.queries, added.item.results) == (
        0, "file_search_call", "in_progress", [], None)
    assert {(e.item_id, e.output_index) for e in (in_progress, searching, searched)} == {(added.item.id, 0)}
    assert (call_done.item.status, call_done.item.queries) == ("completed", ["How long do refunds take?"])
    assert [(r.file_id, r.filename, r.text) for r in call_done.item.results] == [
        (policy.id, "policy.txt", POLICY.decode())]
    text = "According to policy.txt, Refunds take 30 days to arrive."
    [annotated] = [e for e in events if e.type == "response.output_text.annotation.added"]
    message_id = events[7].item.id
    assert (annotated.item_id, annotated.output_index, annotated.content_index, annotated.annotation_index) == (
        message_id, 1, 0, 0)
    assert annotated.annotation.to_dict() == {"type": "file_citation", "file_id": policy.id,
                                              "filename": "policy.txt", "index": len(text)}
    assert events[-2].item.content[0].annotations[0].file_id == policy.id
    final = events[-1].response
    assert [item.type for item in final.output] == ["file_search_call", "message"]
    assert final.output_text == text and final.output[0].results[0].file_id == policy.id
    assert [item.type for item in client.conversations.items.list(conversation.id, order="asc")] == [
        "message", "file_search_call", "message"]

    with client.responses.stream(model=MODEL, input="Do gift cards expire?", tools=tools) as stream:
        final = stream.get_final_response()
    assert final.output_text == "According to policy.txt, Gift cards never expire."
    assert final.output[0].results is None


def test_hold_keeps_a_stream_in_progress_while_other_requests_go_on(fake: FakeOpenAI,
                                                                    client: openai.OpenAI) -> None:
    fake.hold()
    stream = client.responses.create(model=MODEL, input="held", background=True, stream=True)
    seen = read_until(stream, "response.in_progress")
    response_id = seen[0].response.id

    # The stream waits without the fake's lock: polls and other requests are answered meanwhile.
    assert client.responses.retrieve(response_id).status == "in_progress"
    assert client.conversations.create().object == "conversation"
    fake.release()

    assert [e.type for e in read(stream)] == [*TEXT_EVENTS, "response.completed"]


def test_faults_apply_before_a_stream_starts(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.fail_next(500)
    with pytest.raises(openai.InternalServerError):
        read(client.responses.create(model=MODEL, input="x", stream=True))
    fake.drop_next()
    with pytest.raises(openai.APIConnectionError):
        read(client.responses.create(model=MODEL, input="x", stream=True))
    fake.timeout_next(0.2)
    started = time.monotonic()
    assert read(client.responses.create(model=MODEL, input="x", stream=True))[-1].type == "response.completed"
    assert time.monotonic() - started >= 0.2
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="x", stream_options={"include_obfuscation": False})
    assert caught.value.param == "stream_options"


def test_drop_stream_after_can_target_one_route(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.drop_stream_after(1, route="GET /v1/responses/{id}")
    events = read(client.responses.create(model=MODEL, input="x", background=True, stream=True))

    with pytest.raises(openai.APIConnectionError):
        read(client.responses.retrieve(events[0].response.id, stream=True))
    assert len(read(client.responses.retrieve(events[0].response.id, stream=True))) == len(events)
    with pytest.raises(ValueError):
        fake.drop_stream_after(1, route="GET /v1/nope")


def test_stream_interval_paces_the_pieces(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.stream_interval = 0.05

    started = time.monotonic()
    read(client.responses.create(model=MODEL, input="paced", stream=True))

    assert time.monotonic() - started >= 4 * 0.05


def test_responses_frames_name_their_event_and_carry_a_sequence_number(fake: FakeOpenAI) -> None:
    content_type, frames = raw_stream(fake, "POST", "/v1/responses",
                                      {"model": MODEL, "input": "raw", "stream": True})

    assert content_type.startswith("text/event-stream")
    for number, frame in enumerate(frames):
        event_line, data_line = frame.split("\n")
        data = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {data['type']}"
        assert data["sequence_number"] == number
    assert json.loads(frames[-1].split("\n")[1].removeprefix("data: "))["type"] == "response.completed"


def test_stop_and_reset_cut_open_streams() -> None:
    fake = FakeOpenAI(latency=0.01).start()
    sdk = openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0, timeout=5)
    fake.hold(after_deltas=1)
    reset_stream = sdk.responses.create(model=MODEL, input="x", background=True, stream=True)
    read_until(reset_stream, "response.output_text.delta")
    fake.reset()
    with pytest.raises(openai.APIConnectionError):
        read(reset_stream)

    fake.hold(after_deltas=1)
    stopped_stream = sdk.responses.create(model=MODEL, input="x", background=True, stream=True)
    read_until(stopped_stream, "response.output_text.delta")
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 2
    with pytest.raises(openai.APIConnectionError):
        read(stopped_stream)
    sdk.close()


# ---- assistants ---------------------------------------------------------------------------------

class Recorder(AssistantEventHandler):
    """An event handler that validates every event and records what the SDK called it with."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []
        self.calls: list[tuple[Any, ...]] = []

    def on_event(self, event: Any) -> None:
        self.events.append(checked(event).event)

    def on_message_created(self, message: Any) -> None:
        self.calls.append(("message_created", message.status))

    def on_text_delta(self, delta: Any, snapshot: Any) -> None:
        self.calls.append(("text_delta", delta.value, snapshot.value))

    def on_message_done(self, message: Any) -> None:
        self.calls.append(("message_done", message.status, message.content[0].text.value))

    def on_run_step_created(self, run_step: Any) -> None:
        self.calls.append(("step_created", run_step.type))

    def on_run_step_done(self, run_step: Any) -> None:
        self.calls.append(("step_done", run_step.type, run_step.status))

    def on_tool_call_created(self, tool_call: Any) -> None:
        self.calls.append(("tool_call_created", tool_call.function.name if tool_call.type == "function"
                           else tool_call.type))

    def on_tool_call_delta(self, delta: Any, snapshot: Any) -> None:
        self.calls.append(("tool_call_delta", delta.function.arguments, snapshot.function.arguments))

    def on_tool_call_done(self, tool_call: Any) -> None:
        self.calls.append(("tool_call_done", tool_call.function.arguments if tool_call.type == "function"
                           else tool_call.type))


@pytest.fixture
def assistant_id(client: openai.OpenAI) -> str:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    return client.beta.assistants.create(model=MODEL, instructions="help", tools=[tool]).id


@pytest.fixture
def thread_id(client: openai.OpenAI) -> str:
    return client.beta.threads.create(messages=[{"role": "user", "content": "hello there"}]).id


def test_run_stream_sends_the_assistants_events_in_order(client: openai.OpenAI, assistant_id: str,
                                                         thread_id: str) -> None:
    with client.beta.threads.runs.stream(thread_id=thread_id, assistant_id=assistant_id,
                                         event_handler=Recorder()) as handler:
        run = handler.get_final_run()
        messages, steps = handler.get_final_messages(), handler.get_final_run_steps()

    assert handler.events == [*RUN_START, *MESSAGE_EVENTS, "thread.run.completed"]
    assert handler.calls == [
        ("step_created", "message_creation"), ("message_created", "in_progress"),
        ("text_delta", "echo", "echo"), ("text_delta", ": he", "echo: he"), ("text_delta", "llo ", "echo: hello "),
        ("text_delta", "there", "echo: hello there"), ("message_done", "completed", "echo: hello there"),
        ("step_done", "message_creation", "completed")]
    assert (run.status, run.thread_id, run.assistant_id) == ("completed", thread_id, assistant_id)
    assert run.usage is not None and run.usage.completion_tokens == 3
    [message] = messages
    assert (message.role, message.run_id, message.content[0].text.value) == ("assistant", run.id,
                                                                           "echo: hello there")
    # The handler keeps each step as `thread.run.step.created` had it; the fake lists it as it is now.
    [step] = steps
    assert (step.type, step.step_details.message_creation.message_id) == ("message_creation", message.id)
    assert client.beta.threads.messages.list(thread_id).data[0].id == message.id
    [listed] = client.beta.threads.runs.steps.list(run.id, thread_id=thread_id).data
    assert (listed.id, listed.status, listed.usage.total_tokens) == (step.id, "completed", run.usage.total_tokens)
    assert client.beta.threads.runs.steps.retrieve(step.id, thread_id=thread_id, run_id=run.id).id == step.id


def test_text_deltas_of_a_run_stream(client: openai.OpenAI, assistant_id: str, thread_id: str) -> None:
    with client.beta.threads.runs.stream(thread_id=thread_id, assistant_id=assistant_id) as handler:
        assert "".join(handler.text_deltas) == "echo: hello there"


def test_tool_calls_stream_then_submit_tool_outputs_stream(fake: FakeOpenAI, client: openai.OpenAI,
                                                          assistant_id: str, thread_id: str) -> None:
    fake.enqueue({"function_calls": [{"name": "lookup", "arguments": {"q": "x"}}]}, "found it")
    with client.beta.threads.runs.stream(thread_id=thread_id, assistant_id=assistant_id,
                                         event_handler=Recorder()) as handler:
        run = handler.get_final_run()
        [step] = handler.get_final_run_steps()

    assert handler.events == [*RUN_START, "thread.run.step.created", "thread.run.step.in_progress",
                              *["thread.run.step.delta"] * 5, "thread.run.requires_action"]
    assert handler.calls == [
        ("step_created", "tool_calls"), ("tool_call_created", "lookup"),
        ("tool_call_delta", '{"', '{"'), ("tool_call_delta", 'q":', '{"q":'), ("tool_call_delta", ' "', '{"q": "'),
        ("tool_call_delta", 'x"}', '{"q": "x"}'), ("tool_call_done", '{"q": "x"}')]
    assert run.status == "requires_action"
    [call] = run.required_action.submit_tool_outputs.tool_calls
    assert (call.function.name, call.function.arguments) == ("lookup", '{"q": "x"}')
    assert (step.status, step.step_details.tool_calls[0].id) == ("in_progress", call.id)

    with client.beta.threads.runs.submit_tool_outputs_stream(
            thread_id=thread_id, run_id=run.id, tool_outputs=[{"tool_call_id": call.id, "output": "42"}],
            event_handler=Recorder()) as handler:
        done = handler.get_final_run()
        [message] = handler.get_final_messages()

    assert handler.events == ["thread.run.queued", "thread.run.in_progress", "thread.run.step.completed",
                              *MESSAGE_EVENTS, "thread.run.completed"]
    assert (done.id, done.status, message.content[0].text.value) == (run.id, "completed", "found it")
    steps = client.beta.threads.runs.steps.list(run.id, thread_id=thread_id, order="asc").data
    assert [(s.type, s.status) for s in steps] == [("tool_calls", "completed"), ("message_creation", "completed")]
    assert (steps[0].step_details.tool_calls[0].function.output, steps[0].completed_at is not None) == ("42", True)


@pytest.mark.parametrize("include", [[], [STEP_CONTENT]])
def test_run_stream_with_file_search_sends_the_search_step_then_the_cited_message(
        client: openai.OpenAI, include: list[str]) -> None:
    policy = upload(client, "policy.txt", POLICY)
    assistant = client.beta.assistants.create(model=MODEL, tools=[{"type": "file_search"}])
    thread = client.beta.threads.create(messages=[{
        "role": "user", "content": "When do the offices close on Fridays?",
        "attachments": [{"file_id": policy.id, "tools": [{"type": "file_search"}]}]}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id, include=include,
                                         event_handler=Recorder()) as handler:
        run = handler.get_final_run()
        [message] = handler.get_final_messages()
        searched = next(step for step in handler.get_final_run_steps() if step.type == "tool_calls")

    assert handler.events == [*RUN_START, *SEARCH_STEP_EVENTS, *MESSAGE_EVENTS, "thread.run.completed"]
    assert handler.calls[:5] == [("step_created", "tool_calls"), ("tool_call_created", "file_search"),
                                 ("tool_call_done", "file_search"), ("step_done", "tool_calls", "completed"),
                                 ("step_created", "message_creation")]
    assert run.status == "completed"
    mark = "【4:0†policy.txt】"
    text = message.content[0].text
    assert text.value == f"According to policy.txt, Our offices close at noon on Fridays. {mark}"
    [citation] = text.annotations
    assert (citation.type, citation.text, citation.start_index, citation.end_index,
            citation.file_citation.file_id) == ("file_citation", mark, len(text.value) - len(mark),
                                                len(text.value), policy.id)
    # The handler keeps each step as it was created; the completed one has the search's results.
    [step] = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, limit=1, order="asc").data
    assert step.id == searched.id
    [result] = step.step_details.tool_calls[0].file_search.results
    assert (result.file_id, result.file_name, result.content) == (policy.id, "policy.txt", None)


def test_run_stream_events_carry_search_content_only_when_included(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    policy = upload(client, "policy.txt", POLICY)
    store = client.vector_stores.create(file_ids=[policy.id])
    assistant = client.beta.assistants.create(model=MODEL, tools=[{"type": "file_search"}],
                                              tool_resources={"file_search": {"vector_store_ids": [store.id]}})
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Do gift cards expire?"}])
    for query, content in (("", None), ("?include[]=" + STEP_CONTENT, [{"type": "text", "text": POLICY.decode()}])):
        _, frames = raw_stream(fake, "POST", f"/v1/threads/{thread.id}/runs{query}",
                               {"assistant_id": assistant.id, "stream": True})
        events = [frame.split("\n") for frame in frames]
        [completed] = [json.loads(data.removeprefix("data: ")) for kind, data in events
                       if kind == "event: thread.run.step.completed" and '"tool_calls"' in data]
        [result] = completed["step_details"]["tool_calls"][0]["file_search"]["results"]
        assert result.get("content") == content
        deltas = [json.loads(data.removeprefix("data: ")) for kind, data in events
                  if kind == "event: thread.message.delta"]
        assert [d["delta"]["content"][0]["text"]["annotations"] != [] for d in deltas] == [False] * 3 + [True]
        assert deltas[-1]["delta"]["content"][0]["text"]["annotations"][0]["file_citation"] == {"file_id": policy.id}


def test_create_and_run_stream_opens_with_the_thread(client: openai.OpenAI, assistant_id: str) -> None:
    with client.beta.threads.create_and_run_stream(
            assistant_id=assistant_id, event_handler=Recorder(),
            thread={"messages": [{"role": "user", "content": "new thread"}], "metadata": {"k": "v"}}) as handler:
        run = handler.get_final_run()

    assert handler.events == ["thread.created", *RUN_START, *MESSAGE_EVENTS, "thread.run.completed"]
    assert client.beta.threads.retrieve(run.thread_id).metadata == {"k": "v"}
    assert [m.content[0].text.value for m in client.beta.threads.messages.list(run.thread_id, order="asc")] == [
        "new thread", "echo: new thread"]


def test_create_and_run_without_stream_and_steps_of_polled_runs(fake: FakeOpenAI, client: openai.OpenAI,
                                                                assistant_id: str) -> None:
    run = client.beta.threads.create_and_run_poll(assistant_id=assistant_id,
                                                  thread={"messages": [{"role": "user", "content": "polled"}]})
    assert run.status == "completed"
    [step] = client.beta.threads.runs.steps.list(run.id, thread_id=run.thread_id).data
    assert (step.type, step.status, step.run_id) == ("message_creation", "completed", run.id)
    message = client.beta.threads.messages.retrieve(step.step_details.message_creation.message_id,
                                                    thread_id=run.thread_id)
    assert message.content[0].text.value == "echo: polled"

    fake.enqueue({"function_calls": [{"name": "lookup", "arguments": "{}"}]}, "ok")
    run = client.beta.threads.runs.create_and_poll(thread_id=run.thread_id, assistant_id=assistant_id)
    [step] = client.beta.threads.runs.steps.list(run.id, thread_id=run.thread_id).data
    assert (run.status, step.type, step.status) == ("requires_action", "tool_calls", "in_progress")
    call_id = run.required_action.submit_tool_outputs.tool_calls[0].id
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=run.thread_id, tool_outputs=[{"tool_call_id": call_id, "output": "1"}])
    steps = client.beta.threads.runs.steps.list(run.id, thread_id=run.thread_id, order="asc", limit=1)
    assert [(s.type, s.status) for s in steps] == [("tool_calls", "completed"), ("message_creation", "completed")]
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.runs.steps.retrieve("step_nope", thread_id=run.thread_id, run_id=run.id)
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.threads.create_and_run(assistant_id=assistant_id, thread={"messages": [{"content": "x"}]})
    assert caught.value.param == "thread.messages[0].role"


def test_assistants_frames_are_bare_objects_and_end_with_done(fake: FakeOpenAI, assistant_id: str,
                                                              thread_id: str) -> None:
    content_type, frames = raw_stream(fake, "POST", f"/v1/threads/{thread_id}/runs",
                                      {"assistant_id": assistant_id, "stream": True})

    assert content_type.startswith("text/event-stream")
    assert frames[-1] == "event: done\ndata: [DONE]"
    first_event, first_data = frames[0].split("\n")
    assert first_event == "event: thread.run.created"
    assert json.loads(first_data.removeprefix("data: "))["object"] == "thread.run"


@pytest.mark.parametrize(("reply", "tail"), [
    ({"status": "failed"}, ["thread.run.failed"]),
    ({"status": "incomplete", "content": "cut short"},
     [*MESSAGE_EVENTS[:-2], "thread.message.incomplete", "thread.run.step.completed", "thread.run.incomplete"]),
])
def test_scripted_end_states_end_the_run_stream(fake: FakeOpenAI, client: openai.OpenAI, assistant_id: str,
                                                thread_id: str, reply: dict[str, Any], tail: list[str]) -> None:
    fake.enqueue(reply)
    with client.beta.threads.runs.stream(thread_id=thread_id, assistant_id=assistant_id,
                                         event_handler=Recorder()) as handler:
        run = handler.get_final_run()

    assert handler.events == [*RUN_START, *tail]
    assert run.status == reply["status"]


def test_a_client_leaving_a_run_stream_does_not_stop_the_run(fake: FakeOpenAI, client: openai.OpenAI,
                                                             assistant_id: str, thread_id: str) -> None:
    fake.hold(after_deltas=1)
    with client.beta.threads.runs.stream(thread_id=thread_id, assistant_id=assistant_id) as handler:
        run_id = next(event.data.id for event in handler if event.event == "thread.run.created")
        next(event for event in handler if event.event == "thread.message.delta")
    fake.wait_for_open_streams(0)
    assert client.beta.threads.runs.retrieve(run_id, thread_id=thread_id).status == "in_progress"

    fake.release()

    run = poll(lambda: client.beta.threads.runs.retrieve(run_id, thread_id=thread_id),
               lambda r: r.status == "completed")
    assert client.beta.threads.messages.list(thread_id).data[0].content[0].text.value == "echo: hello there"
    assert run.usage is not None


def test_a_dropped_run_stream_leaves_the_run_going(fake: FakeOpenAI, client: openai.OpenAI, assistant_id: str,
                                                   thread_id: str) -> None:
    fake.drop_stream_after(4, route="POST /v1/threads/{id}/runs")
    handler = Recorder()
    # The Assistants helpers raise the transport's own error for a broken stream, not the SDK's.
    with pytest.raises(httpx2.RemoteProtocolError):
        with client.beta.threads.runs.stream(thread_id=thread_id, assistant_id=assistant_id,
                                             event_handler=handler) as stream:
            stream.until_done()
    assert handler.events == [*RUN_START, "thread.run.step.created"]

    run = poll(lambda: client.beta.threads.runs.list(thread_id).data[0], lambda r: r.status == "completed")
    assert client.beta.threads.runs.steps.list(run.id, thread_id=thread_id).data[0].status == "completed"


def test_cancel_ends_the_run_stream(fake: FakeOpenAI, client: openai.OpenAI, assistant_id: str,
                                    thread_id: str) -> None:
    fake.hold(after_deltas=1)
    handler = Recorder()
    with client.beta.threads.runs.stream(thread_id=thread_id, assistant_id=assistant_id,
                                         event_handler=handler) as stream:
        run_id = next(event.data.id for event in stream if event.event == "thread.run.created")
        next(event for event in stream if event.event == "thread.message.delta")
        assert client.beta.threads.runs.cancel(run_id, thread_id=thread_id).status == "cancelling"
        run = stream.get_final_run()

    assert handler.events[-4:] == ["thread.run.cancelling", "thread.message.incomplete",
                                   "thread.run.step.cancelled", "thread.run.cancelled"]
    assert run.status == "cancelled"
    [message] = client.beta.threads.messages.list(thread_id, run_id=run_id).data
    assert (message.status, message.incomplete_details.reason, message.content[0].text.value) == (
        "incomplete", "run_cancelled", "echo")
    [step] = client.beta.threads.runs.steps.list(run_id, thread_id=thread_id).data
    assert step.status == "cancelled" and step.cancelled_at is not None


def test_run_stream_flag_is_validated(client: openai.OpenAI, assistant_id: str, thread_id: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.post(f"/threads/{thread_id}/runs", body={"assistant_id": assistant_id, "stream": "yes"},
                    cast_to=object, options={"headers": {"OpenAI-Beta": "assistants=v2"}})
    assert caught.value.param == "stream"


# ---- chat completions ---------------------------------------------------------------------------

def test_chat_completion_stream_with_tool_calls_and_usage(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "call it"}]
    fake.enqueue({"function_calls": [{"name": "f", "arguments": {"x": 1}}]})
    chunks = read(client.chat.completions.create(model=MODEL, messages=messages, stream=True,
                                                 stream_options={"include_usage": True}))

    opening = chunks[0].choices[0].delta
    assert opening.role == "assistant" and opening.tool_calls is not None
    assert [(t.index, t.function.name, t.function.arguments) for t in opening.tool_calls] == [(0, "f", "")]
    assert "".join(c.choices[0].delta.tool_calls[0].function.arguments for c in chunks[1:-2]) == '{"x": 1}'
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None

    with client.chat.completions.stream(model=MODEL, messages=messages) as stream:
        assert stream.get_final_completion().choices[0].message.content == "echo: call it"


def test_chat_completion_stream_held_after_deltas(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.hold(after_deltas=1)
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "held"}],
                                            stream=True)
    first = [checked(next(stream)) for _ in range(2)]
    with pytest.raises(TimeoutError):  # a bounded wait: the stream stays open while held
        fake.wait_for_open_streams(0, timeout=0.2)

    fake.release()

    rest = read(stream)
    assert "".join(c.choices[0].delta.content or "" for c in first + rest) == "echo: held"
