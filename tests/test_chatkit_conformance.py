"""ChatKit's front end, scripted: its state machine against POST /chatkit, on every engine.

`FrontEnd` does what ChatKit's client does with a stream: it learns the thread's id from
`thread.created`, adds, updates, replaces and removes items as the events say, answers client
tool calls, retries after a user message and stops an answer by dropping the connection. After
every step what it shows must be what the server lists (`items.list`) and what `/v1` serves.
Requests are built with `chatkit.types`; every frame is decoded with `TypeAdapter(ThreadStreamEvent)`.
"""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from chatkit.types import (AssistantMessageItem, ClientToolCallItem, ItemFeedbackParams,
                           ItemsFeedbackReq, ThreadAddClientToolOutputParams,
                           ThreadAddUserMessageParams, ThreadCreateParams,
                           ThreadRetryAfterItemParams, ThreadsAddClientToolOutputReq,
                           ThreadsAddUserMessageReq, ThreadsCreateReq, ThreadsRetryAfterItemReq,
                           UserMessageItem)
from sqlalchemy import select

from bridge.extensions import db
from bridge.models import ChatKitFeedback
from tests.conftest import ENGINES, wait_for
from tests.test_chatkit import EVENTS, post, user_input
from tests.test_chatkit import v1_threads as v1_thread_ids
from tests.test_run_steps import script_failure

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
CLOCK = {"type": "function", "function": {"name": "get_time"}}


def item_text(item) -> str:
    return "".join(part.text for part in getattr(item, "content", ()))


class FrontEnd:
    """One user's ChatKit front end on one thread."""

    def __init__(self, bridge, user: str = "alice"):
        self.bridge, self.user = bridge, user
        self.thread_id: str | None = None
        self.items: dict[str, Any] = {}  # in the order they appeared
        self.events: list = []

    # ---- requests ------------------------------------------------------------------------

    def say(self, text: str) -> list:
        if self.thread_id is None:
            return self.stream(ThreadsCreateReq(params=ThreadCreateParams(input=user_input(text))))
        return self.stream(ThreadsAddUserMessageReq(params=ThreadAddUserMessageParams(
            thread_id=self.thread_id, input=user_input(text))))

    def answer_tool(self, result: Any) -> list:
        call = self.pending_tool_call()
        call.status, call.output = "completed", result  # as the client shows it once sent
        return self.stream(ThreadsAddClientToolOutputReq(params=ThreadAddClientToolOutputParams(
            thread_id=self.thread_id, result=result)))

    def retry_after(self, item_id: str) -> list:
        # The client drops what follows the user message before it asks again.
        ids = list(self.items)
        for later in ids[ids.index(item_id) + 1:]:
            del self.items[later]
        return self.stream(ThreadsRetryAfterItemReq(params=ThreadRetryAfterItemParams(
            thread_id=self.thread_id, item_id=item_id)))

    def stream(self, request) -> list:
        answer = post(self.bridge, request, user=self.user)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/event-stream")
        frames = [frame for frame in answer.text.split("\n\n") if frame.strip()]
        assert all(frame.startswith("data: ") for frame in frames), frames
        events = [EVENTS.validate_json(frame[len("data: "):]) for frame in frames]
        for event in events:
            self.apply(event)
        return events

    def stop_after(self, request, first_text: bool) -> list:
        """Send `request` and drop the connection once the answer's first text (or, without
        `first_text`, its stream options) has arrived: ChatKit's stop button."""
        url = urlsplit(self.bridge.url)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=20)
        conn.request("POST", "/chatkit", body=request.model_dump_json(), headers={
            **self.bridge.headers(self.user), "Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        seen = []
        while True:
            line = response.readline()
            assert line, "the stream ended before it could be stopped"
            if not line.startswith(b"data: "):
                continue
            event = EVENTS.validate_json(line[len(b"data: "):])
            self.apply(event)
            seen.append(event)
            if (event.type == "thread.item.updated" if first_text
                    else event.type == "stream_options"):
                break
        conn.close()
        return seen

    # ---- what the client does with events ------------------------------------------------

    def apply(self, event) -> None:
        self.events.append(event)
        if event.type == "thread.created":
            self.thread_id = event.thread.id
        elif event.type in ("thread.item.added", "thread.item.done", "thread.item.replaced"):
            self.items[event.item.id] = event.item
        elif event.type == "thread.item.updated" and event.update.type == (
                "assistant_message.content_part.text_delta"):
            item = self.items[event.item_id]
            if not item.content:
                item.content = [type(item).model_fields["content"].annotation.__args__[0](text="")]
            item.content[event.update.content_index].text += event.update.delta
        elif event.type == "thread.item.removed":
            self.items.pop(event.item_id, None)

    def shown(self) -> list[tuple[str, str, str]]:
        return [(item.type, item.id, item_text(item)) for item in self.items.values()
                if item.type in ("user_message", "assistant_message")]

    def pending_tool_call(self) -> ClientToolCallItem:
        (call,) = [item for item in self.items.values()
                   if isinstance(item, ClientToolCallItem) and item.status == "pending"]
        return call

    # ---- what the server holds -------------------------------------------------------------

    def listed(self) -> list[tuple[str, str, str]]:
        page = post(self.bridge, {"type": "items.list", "params": {
            "thread_id": self.thread_id, "order": "asc", "limit": 100}}, user=self.user).json()
        return [(item["type"], item["id"], "".join(part["text"] for part in item["content"]))
                for item in page["data"] if item["type"] in ("user_message", "assistant_message")]

    def v1_messages(self) -> list[tuple[str, str, str]]:
        messages = self.bridge.sdk(self.user).beta.threads.messages.list(
            self.thread_id, order="asc", limit=100).data
        return [("user_message" if m.role == "user" else "assistant_message", m.id,
                 "".join(block.text.value for block in m.content if block.type == "text"))
                for m in messages]

    def assert_in_step(self) -> None:
        """The front end, the ChatKit store and /v1 agree on the conversation."""
        assert self.shown() == self.listed() == self.v1_messages()


def script_reply(bridge, text: str) -> None:
    if bridge.fake is not None:
        bridge.fake.enqueue(text)


def script_tool_calls(bridge, *cities: str) -> str:
    """The next model call asks for get_weather of each city (offline: of the first only),
    then replies; the user message that makes it so."""
    if bridge.engine == "offline":
        return f'Use get_weather for {{"city": "{cities[0]}"}}'
    if bridge.engine == "chat":
        bridge.fake.enqueue({"tool_calls": [
            {"id": f"call_{city}", "type": "function", "function": {
                "name": "get_weather", "arguments": json.dumps({"city": city})}}
            for city in cities]}, "Noted the weather.")
    else:
        bridge.fake.enqueue({"function_calls": [{"name": "get_weather", "arguments": {"city": city}}
                                                for city in cities]}, "Noted the weather.")
    return "What is the weather?"


@pytest.fixture
def chatkit_bridge(start_bridge, request):
    engine, *settings = request.param if isinstance(request.param, tuple) else (request.param,)
    bridge = start_bridge(engine, CHATKIT_ASSISTANT="helper", **dict(settings))
    bridge.assistant(name="helper", tools=[WEATHER, CLOCK])
    return bridge


# ---- the conversation ------------------------------------------------------------------------

@pytest.mark.parametrize("chatkit_bridge", ENGINES, indirect=True)
def test_create_add_list_and_retry_keep_client_store_and_v1_in_step(chatkit_bridge):
    bridge, front = chatkit_bridge, FrontEnd(chatkit_bridge)

    script_reply(bridge, "First answer.")
    first = front.say("Hello there")
    assert first[0].type == "thread.created" and front.thread_id.startswith("thread_")
    script_reply(bridge, "Second answer.")
    front.say("And again")
    front.assert_in_step()
    assert [kind for kind, _, _ in front.shown()] == ["user_message", "assistant_message"] * 2

    second_question = front.shown()[2][1]
    old_answer = front.shown()[3]
    script_reply(bridge, "A better second answer.")
    retried = front.retry_after(second_question)

    assert not any(event.type == "thread.created" for event in retried)
    new_answer = front.shown()[3]
    assert new_answer[1] != old_answer[1] and new_answer[2]
    if bridge.engine != "offline":
        assert new_answer[2] == "A better second answer."
    front.assert_in_step()
    assert len(front.shown()) == 4


# ---- client tools ----------------------------------------------------------------------------

@pytest.mark.parametrize("chatkit_bridge", ENGINES, indirect=True)
def test_a_function_call_is_a_client_tool_call_whose_output_continues_the_run(chatkit_bridge):
    bridge, front = chatkit_bridge, FrontEnd(chatkit_bridge)

    asked = front.say(script_tool_calls(bridge, "Oslo"))

    call = front.pending_tool_call()
    assert (call.name, call.arguments) == ("get_weather", {"city": "Oslo"})
    assert asked[-1].type == "thread.item.done" and asked[-1].item.id == call.id
    client = bridge.sdk("alice")
    (run,) = client.beta.threads.runs.list(front.thread_id).data
    assert run.status == "requires_action"
    assert run.required_action.submit_tool_outputs.tool_calls[0].id == call.call_id

    continued = front.answer_tool({"forecast": "rain", "celsius": 4})

    assert not any(event.type == "error" for event in continued), continued
    reply = front.shown()[-1]
    assert reply[0] == "assistant_message"
    if bridge.engine == "offline":
        assert 'get_weather returned "{"forecast": "rain", "celsius": 4}"' in reply[2]
    else:
        assert reply[2] == "Noted the weather."
    assert client.beta.threads.runs.retrieve(run.id, thread_id=front.thread_id).status == "completed"
    steps = client.beta.threads.runs.steps.list(run.id, thread_id=front.thread_id, order="asc").data
    (tool_call,) = steps[0].step_details.tool_calls
    assert json.loads(tool_call.function.output) == {"forecast": "rain", "celsius": 4}
    front.assert_in_step()
    listed = post(bridge, {"type": "items.list", "params": {"thread_id": front.thread_id,
                                                            "order": "asc"}}).json()["data"]
    (kept,) = [item for item in listed if item["type"] == "client_tool_call"]
    assert (kept["status"], kept["output"]) == ("completed", {"forecast": "rain", "celsius": 4})


@pytest.mark.parametrize("chatkit_bridge", ["chat", "responses", "assistants"], indirect=True)
def test_several_calls_of_one_run_are_answered_one_at_a_time(chatkit_bridge):
    bridge, front = chatkit_bridge, FrontEnd(chatkit_bridge)
    front.say(script_tool_calls(bridge, "Oslo", "Paris"))

    first = front.pending_tool_call()
    front.answer_tool("rain")
    second = front.pending_tool_call()  # the run still waits: the next call, not an answer
    assert [first.arguments, second.arguments] == [{"city": "Oslo"}, {"city": "Paris"}]
    front.answer_tool("sun")

    assert front.shown()[-1][2] == "Noted the weather."
    client = bridge.sdk("alice")
    (run,) = client.beta.threads.runs.list(front.thread_id).data
    steps = client.beta.threads.runs.steps.list(run.id, thread_id=front.thread_id, order="asc").data
    assert [c.function.output for c in steps[0].step_details.tool_calls] == ["rain", "sun"]


def test_writing_instead_of_answering_gives_the_tool_call_up(start_bridge):
    bridge = start_bridge("offline", CHATKIT_ASSISTANT="helper")
    bridge.assistant(name="helper", tools=[WEATHER])
    front = FrontEnd(bridge)
    front.say(script_tool_calls(bridge, "Oslo"))
    front.pending_tool_call()

    front.say("Never mind, hello")

    client = bridge.sdk("alice")
    runs = client.beta.threads.runs.list(front.thread_id, order="asc").data
    assert [run.status for run in runs] == ["cancelled", "completed"]
    assert "Never mind, hello" in front.shown()[-1][2]
    listed = post(bridge, {"type": "items.list", "params": {"thread_id": front.thread_id}}).json()
    assert not [item for item in listed["data"] if item["type"] == "client_tool_call"]
    late = post(bridge, ThreadsAddClientToolOutputReq(params=ThreadAddClientToolOutputParams(
        thread_id=front.thread_id, result="too late")))
    assert late.status_code == 409 and late.json()["error"]["code"] == "no_pending_client_tool_call"


@pytest.mark.parametrize("chatkit_bridge", ["chat", "responses", "assistants"], indirect=True)
def test_a_failed_answer_is_an_error_event_and_a_retry_answers_it(chatkit_bridge):
    bridge, front = chatkit_bridge, FrontEnd(chatkit_bridge)
    script_failure(bridge)

    events = front.say("Are you there?")

    (error,) = [event for event in events if event.type == "error"]
    assert error.allow_retry and error.message
    question = front.shown()[0]
    assert front.shown() == [question] == front.listed() == front.v1_messages()
    (run,) = bridge.sdk("alice").beta.threads.runs.list(front.thread_id).data
    assert run.status == "failed"

    script_reply(bridge, "Here now.")
    front.retry_after(question[1])

    assert [text for _, _, text in front.shown()] == ["Are you there?", "Here now."]
    front.assert_in_step()


# ---- stopping an answer ----------------------------------------------------------------------

@pytest.mark.parametrize("chatkit_bridge", [(engine, ("STREAM_PING_SECONDS", 0.1),
                                             ("OFFLINE_REPLY_DELAY", 3)) for engine in ENGINES],
                         indirect=True, ids=ENGINES)
def test_a_stopped_answer_cancels_the_run_and_keeps_what_was_shown(chatkit_bridge):
    bridge, front = chatkit_bridge, FrontEnd(chatkit_bridge)
    upstream = bridge.fake is not None
    if upstream:  # the offline reply waits before it starts; an upstream's pauses mid-way
        bridge.fake.enqueue("one two three four five six seven eight nine ten")
        bridge.fake.hold(after_deltas=1)

    front.stop_after(ThreadsCreateReq(params=ThreadCreateParams(input=user_input("Tell me"))),
                     first_text=upstream)

    client = bridge.sdk("alice")

    def run_status() -> str:
        return client.beta.threads.runs.list(front.thread_id).data[0].status

    # Cancelling while the upstream holds its answer; cancelled once the engine is told.
    wait_for(lambda: run_status() in ("cancelling", "cancelled"), timeout=15, interval=0.1)
    if upstream:
        bridge.fake.release()
    wait_for(lambda: run_status() == "cancelled", timeout=15, interval=0.1)
    if upstream:
        # ChatKit keeps what was shown once the run has ended, a moment after it has.
        wait_for(lambda: len(front.v1_messages()) > 1, timeout=15, interval=0.1)
    kept = front.v1_messages()
    assert kept[0][0] == "user_message" and kept[0][2] == "Tell me"
    if upstream:
        # The piece the user saw stays, as ChatKit showed it, in ChatKit and in /v1 (under the
        # id it is kept by, which the front end learns when it next loads the thread).
        shown = front.shown()[-1]
        assert shown[0] == "assistant_message" and shown[2]
        assert "one two three four five six seven eight nine ten".startswith(shown[2].strip())
        assert [kind for kind, _, _ in kept] == ["user_message", "assistant_message"], (kept, shown)
        assert kept[1][2].strip() == shown[2].strip()
    else:
        assert len(kept) == 1  # nothing was shown, nothing is kept
    assert front.listed() == kept

    script_reply(bridge, "Back again.")
    front.say("Still there?")
    assert front.v1_messages()[-1][0] == "assistant_message"


# ---- feedback, titles and requests the thread cannot take ------------------------------------

def test_feedback_is_kept_per_item_and_only_for_the_threads_items(start_bridge):
    bridge = start_bridge("offline", CHATKIT_ASSISTANT="helper")
    bridge.assistant(name="helper")
    front = FrontEnd(bridge)
    front.say("Rate me")
    (question, answer) = [item_id for _, item_id, _ in front.shown()]

    def feedback(item_ids, kind, user="alice"):
        return post(bridge, ItemsFeedbackReq(params=ItemFeedbackParams(
            thread_id=front.thread_id, item_ids=item_ids, kind=kind)), user=user)

    assert feedback([answer], "negative").status_code == 200
    assert feedback([answer, answer], "positive").status_code == 200
    assert feedback(["msg_" + "A" * 24], "positive").status_code == 404
    assert feedback([answer], "negative", user="bob").status_code == 404
    assert feedback([answer] * 101, "positive").status_code == 400
    with bridge.app.app_context():
        kept = db.session.execute(select(ChatKitFeedback.item_id, ChatKitFeedback.kind)).all()
    assert [tuple(row) for row in kept] == [(answer, "positive")]


def test_requests_the_thread_cannot_take_are_refused_before_any_stream(start_bridge):
    bridge = start_bridge("offline", CHATKIT_ASSISTANT="helper")
    bridge.assistant(name="helper")
    front = FrontEnd(bridge)
    front.say("Hello")
    question, answer = [item_id for _, item_id, _ in front.shown()]

    refusals = {
        "retry an answer": ThreadsRetryAfterItemReq(params=ThreadRetryAfterItemParams(
            thread_id=front.thread_id, item_id=answer)),
        "retry a missing item": ThreadsRetryAfterItemReq(params=ThreadRetryAfterItemParams(
            thread_id=front.thread_id, item_id="msg_" + "B" * 24)),
        "a tool output nobody asked for": ThreadsAddClientToolOutputReq(
            params=ThreadAddClientToolOutputParams(thread_id=front.thread_id, result={"x": 1})),
        "a title too long": {"type": "threads.update",
                             "params": {"thread_id": front.thread_id, "title": "t" * 513}},
        "a message too long": ThreadsAddUserMessageReq(params=ThreadAddUserMessageParams(
            thread_id=front.thread_id, input=user_input("x" * 256_001))),
        "a new thread's message too long": ThreadsCreateReq(params=ThreadCreateParams(
            input=user_input("x" * 256_001))),
    }
    answers = {name: post(bridge, request) for name, request in refusals.items()}

    assert {name: (answer.status_code, answer.headers["content-type"])
            for name, answer in answers.items()} == {
        "retry an answer": (400, "application/json"),
        "retry a missing item": (404, "application/json"),
        "a tool output nobody asked for": (409, "application/json"),
        "a title too long": (400, "application/json"),
        "a message too long": (400, "application/json"),
        "a new thread's message too long": (400, "application/json")}
    assert len(v1_thread_ids(bridge)) == 1  # no thread was made for the refused one
    front.assert_in_step()
    assert isinstance(front.items[question], UserMessageItem)
    assert isinstance(front.items[answer], AssistantMessageItem)


def test_items_page_through_in_both_orders_with_chatkits_own_items_in_place(start_bridge):
    bridge = start_bridge("offline", CHATKIT_ASSISTANT="helper")
    bridge.assistant(name="helper", tools=[WEATHER])
    front = FrontEnd(bridge)
    front.say("One")
    front.say(script_tool_calls(bridge, "Oslo"))
    front.answer_tool("rain")
    front.say("Three")
    expected = [item.id for item in front.items.values()
                if item.type in ("user_message", "assistant_message", "client_tool_call")]
    assert len(expected) == 7  # the tool call between its question and its answer

    def pages(order: str) -> list[list[str]]:
        seen, after = [], None
        while True:
            params = {"thread_id": front.thread_id, "order": order, "limit": 2}
            page = post(bridge, {"type": "items.list", "params": {
                **params, **({"after": after} if after else {})}}).json()
            seen.append([item["id"] for item in page["data"]])
            if not page["has_more"]:
                return seen
            after = page["after"]
            assert after == seen[-1][-1]

    ascending, descending = pages("asc"), pages("desc")
    assert [len(page) for page in ascending] == [2, 2, 2, 1]
    assert sum(ascending, []) == expected
    assert sum(descending, []) == expected[::-1]
    gone = post(bridge, {"type": "items.list", "params": {
        "thread_id": front.thread_id, "after": "msg_" + "C" * 24}}).json()
    assert gone["data"] == [] and not gone["has_more"]


@pytest.mark.parametrize("request_for", [
    lambda thread_id: {"type": "input.transcribe",
                       "params": {"audio_base64": "AAAA", "mime_type": "audio/webm"}},
    lambda thread_id: {"type": "threads.custom_action", "params": {
        "thread_id": thread_id, "item_id": None, "action": {"type": "x", "payload": {}}}},
    lambda thread_id: {"type": "threads.sync_custom_action", "params": {
        "thread_id": thread_id, "item_id": None, "action": {"type": "x", "payload": {}}}},
    lambda thread_id: {"type": "threads.add_structured_input",
                       "params": {"thread_id": thread_id, "item_id": "cki_x", "input": {}}},
], ids=["input.transcribe", "custom_action", "sync_custom_action", "add_structured_input"])
def test_what_the_bridge_does_not_serve_is_a_json_400_and_changes_nothing(start_bridge,
                                                                       request_for):
    bridge = start_bridge("offline", CHATKIT_ASSISTANT="helper")
    bridge.assistant(name="helper")
    front = FrontEnd(bridge)
    front.say("Hello")

    answer = post(bridge, request_for(front.thread_id))

    assert (answer.status_code, answer.headers["content-type"]) == (400, "application/json")
    assert answer.json()["error"]["code"] == "unsupported_chatkit_request"
    front.assert_in_step()
