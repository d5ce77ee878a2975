"""Tests of FakeOpenAI, driven by the real `openai` SDK over HTTP."""

from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from typing import Any, Callable

import openai
import pytest

from .openai_server import FakeOpenAI

MODEL = "fake-model"
WEATHER_TOOL = {"type": "function", "name": "get_weather", "strict": False,
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
POLICY = b"Our offices close at noon on Fridays. Refunds take 30 days to arrive.\nGift cards never expire."
MENU = b"The canteen serves soup on Mondays and fish on Fridays."
STEP_CONTENT = "step_details.tool_calls[*].file_search.results[*].content"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def client(fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0, timeout=5) as sdk:
        yield sdk


def poll(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 5.0) -> Any:
    """Call fetch until done(result), else fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last result: {result!r}")
        time.sleep(0.005)  # pacing between polls, not synchronisation


def stays(fetch: Callable[[], Any], check: Callable[[Any], bool], seconds: float) -> None:
    """Assert that check(fetch()) holds on every poll for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = fetch()
        assert check(result), result


def raw_request(fake: FakeOpenAI, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """Send a request without the SDK and return its status and decoded JSON body."""
    port = int(fake.base_url.rsplit(":", 1)[1].split("/")[0])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


class CallInThread:
    """Run one call in a thread and keep its outcome."""

    def __init__(self, call: Callable[[], Any]):
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self.result = call()
        except BaseException as exc:  # handed to the test thread to assert on
            self.error = exc

    def join(self) -> Any:
        """Wait for the call and return its result, re-raising its error."""
        self.thread.join(10)
        assert not self.thread.is_alive(), "the call did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def finished(client: openai.OpenAI, response_id: str) -> Any:
    """Poll a response until it leaves queued/in_progress."""
    return poll(lambda: client.responses.retrieve(response_id), lambda r: r.status not in ("queued", "in_progress"))


# ---- auth, validation, envelopes ----------------------------------------------------------------

def test_wrong_or_missing_key_is_401_with_envelope(fake: FakeOpenAI) -> None:
    with openai.OpenAI(base_url=fake.base_url, api_key="wrong", max_retries=0, timeout=5) as bad:
        with pytest.raises(openai.AuthenticationError) as caught:
            bad.conversations.create()
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"

    status, body = raw_request(fake, "POST", "/v1/conversations", {})
    assert status == 401
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert fake.calls("POST /v1/conversations") == 2


def test_missing_required_field_names_param(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/responses", body={"input": "hi"}, cast_to=object)
    assert caught.value.param == "model"
    assert caught.value.code == "missing_required_parameter"

    conversation = client.conversations.create()
    with pytest.raises(openai.BadRequestError) as caught:
        client.post(f"/conversations/{conversation.id}/items", body={}, cast_to=object)
    assert caught.value.param == "items"


@pytest.mark.parametrize("metadata", [
    {f"k{i}": "v" for i in range(17)},
    {"k" * 65: "v"},
    {"k": "v" * 513},
    {"k": 1},
])
def test_metadata_limits_are_enforced(client: openai.OpenAI, metadata: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.conversations.create(metadata=metadata)
    assert caught.value.param is not None and caught.value.param.startswith("metadata")


def test_metadata_at_the_limits_is_accepted(client: openai.OpenAI) -> None:
    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    assert client.conversations.create(metadata=metadata).metadata == metadata


def test_unknown_ids_are_404_with_envelope(client: openai.OpenAI) -> None:
    for call in (lambda: client.conversations.retrieve("conv_nope"),
                 lambda: client.responses.retrieve("resp_nope"),
                 lambda: client.beta.assistants.retrieve("asst_nope"),
                 lambda: client.beta.threads.runs.retrieve("run_nope", thread_id="thread_nope")):
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert set(caught.value.body) == {"message", "type", "param", "code"}
        assert "nope" in caught.value.message


# ---- conversations and items --------------------------------------------------------------------

def test_conversation_crud(client: openai.OpenAI) -> None:
    created = client.conversations.create(metadata={"user": "alice"},
                                          items=[{"role": "user", "content": "hello"}])
    assert created.id.startswith("conv_")
    assert created.object == "conversation"
    assert client.conversations.retrieve(created.id).metadata == {"user": "alice"}

    updated = client.conversations.update(created.id, metadata={"user": "bob"})
    assert updated.metadata == {"user": "bob"}
    assert client.conversations.retrieve(created.id).metadata == {"user": "bob"}

    deleted = client.conversations.delete(created.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (created.id, True, "conversation.deleted")
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(created.id)


def test_items_create_list_paginate_retrieve_delete(client: openai.OpenAI) -> None:
    conversation = client.conversations.create(items=[{"role": "user", "content": "m0"}])
    added = client.conversations.items.create(
        conversation.id, items=[{"role": "user", "content": f"m{i}"} for i in range(1, 5)])
    assert added.object == "list"
    assert [item.content[0].text for item in added.data] == ["m1", "m2", "m3", "m4"]
    assert all(item.id.startswith("msg_") for item in added.data)
    assert (added.first_id, added.last_id) == (added.data[0].id, added.data[-1].id)

    page = client.conversations.items.list(conversation.id, limit=2, order="asc")
    assert [item.content[0].text for item in page.data] == ["m0", "m1"]
    assert page.has_more is True
    assert page.last_id == page.data[-1].id
    assert [item.content[0].text for item in page] == ["m0", "m1", "m2", "m3", "m4"]
    assert [item.content[0].text for item in client.conversations.items.list(conversation.id)] == \
        ["m4", "m3", "m2", "m1", "m0"]

    target = added.data[1]
    assert client.conversations.items.retrieve(target.id, conversation_id=conversation.id).id == target.id
    after_delete = client.conversations.items.delete(target.id, conversation_id=conversation.id)
    assert after_delete.id == conversation.id
    assert "m2" not in [item.content[0].text for item in client.conversations.items.list(conversation.id)]
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(target.id, conversation_id=conversation.id)


# ---- responses ----------------------------------------------------------------------------------

def test_sync_response_echoes_and_appends_to_conversation(client: openai.OpenAI) -> None:
    conversation = client.conversations.create(items=[{"role": "user", "content": "earlier"}])
    response = client.responses.create(model=MODEL, conversation=conversation.id, input="how are you",
                                       instructions="be brief", temperature=0.5, metadata={"k": "v"})
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == "echo: how are you"
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    assert response.output[0].content[0].annotations == []
    assert response.usage.output_tokens == 4
    assert response.usage.total_tokens == response.usage.input_tokens + 4
    assert (response.temperature, response.metadata, response.conversation.id) == (0.5, {"k": "v"},
                                                                                  conversation.id)
    items = list(client.conversations.items.list(conversation.id, order="asc"))
    assert [(item.role, item.content[0].text) for item in items] == [
        ("user", "earlier"), ("user", "how are you"), ("assistant", "echo: how are you")]
    assert client.responses.retrieve(response.id).output_text == "echo: how are you"


def test_scripted_reply_and_usage(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.enqueue({"content": "scripted", "usage": {"input_tokens": 11, "output_tokens": 3}})
    response = client.responses.create(model=MODEL, input="hi")
    assert response.output_text == "scripted"
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (11, 3, 14)
    assert client.responses.create(model=MODEL, input="again").output_text == "echo: again"


def test_background_response_lifecycle_with_hold_and_lock(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.latency = 0.02
    conversation = client.conversations.create()
    fake.hold()
    created = client.responses.create(model=MODEL, conversation=conversation.id, input="ping", background=True)
    assert created.status == "queued"
    assert created.output == []

    poll(lambda: client.responses.retrieve(created.id), lambda r: r.status == "in_progress")
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, conversation=conversation.id, input="second", background=True)
    assert caught.value.code == "conversation_locked"
    stays(lambda: client.responses.retrieve(created.id), lambda r: r.status == "in_progress", 10 * fake.latency)

    fake.release()
    done = finished(client, created.id)
    assert done.status == "completed"
    assert done.output_text == "echo: ping"
    assert done.usage is not None
    follow_up = client.responses.create(model=MODEL, conversation=conversation.id, input="next")
    assert follow_up.output_text == "echo: next"
    assert len(client.conversations.items.list(conversation.id).data) == 4


def test_hold_blocks_a_synchronous_response_until_release(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conversation = client.conversations.create()
    fake.hold()
    call = CallInThread(lambda: client.responses.create(model=MODEL, conversation=conversation.id, input="x"))
    fake.wait_for_requests(1, route="POST /v1/responses")
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, conversation=conversation.id, input="y")
    assert caught.value.code == "conversation_locked"
    call.thread.join(0.2)
    assert call.thread.is_alive()
    fake.release()
    assert call.join().output_text == "echo: x"


def test_cancel_background_response(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conversation = client.conversations.create()
    fake.hold()
    created = client.responses.create(model=MODEL, conversation=conversation.id, input="slow", background=True)
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    fake.release()
    assert client.responses.retrieve(created.id).status == "cancelled"
    assert client.responses.retrieve(created.id).output == []
    # The conversation is free again, and the cancelled response added no output to it.
    assert client.responses.create(model=MODEL, conversation=conversation.id, input="fast").status == "completed"
    roles = [item.role for item in client.conversations.items.list(conversation.id, order="asc")]
    assert roles == ["user", "user", "assistant"]

    sync = client.responses.create(model=MODEL, input="not background")
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(sync.id)


def test_responses_expire_after_retention(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.retention = 0.3
    response = client.responses.create(model=MODEL, input="short-lived")
    assert client.responses.retrieve(response.id).id == response.id

    def gone() -> bool:
        try:
            client.responses.retrieve(response.id)
        except openai.NotFoundError:
            return True
        return False

    poll(gone, bool)


def test_unstored_response_is_not_retrievable_and_background_needs_store(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="ephemeral", store=False)
    assert response.output_text == "echo: ephemeral"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="x", store=False, background=True)
    assert caught.value.param == "store"


def test_function_call_then_continuation(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conversation = client.conversations.create()
    fake.enqueue({"function_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
                 "It is sunny in Paris.")
    first = client.responses.create(model=MODEL, conversation=conversation.id, input="weather in Paris?",
                                    tools=[WEATHER_TOOL], background=True)
    first = finished(client, first.id)
    assert first.status == "completed"
    assert [item.type for item in first.output] == ["function_call"]
    call = first.output[0]
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    assert call.call_id.startswith("call_")

    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, conversation=conversation.id, input="and now?")
    assert call.call_id in caught.value.message and caught.value.param == "input"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, conversation=conversation.id,
                                input=[{"type": "function_call_output", "call_id": "call_unknown", "output": "x"}])

    second = client.responses.create(
        model=MODEL, conversation=conversation.id, tools=[WEATHER_TOOL],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "clear"}'}])
    assert second.output_text == "It is sunny in Paris."
    types = [item.type for item in client.conversations.items.list(conversation.id, order="asc")]
    assert types == ["message", "function_call", "function_call_output", "message"]


def test_assistants_shaped_tools_are_rejected_by_responses(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="x",
                                tools=[{"type": "function", "function": {"name": "f"}}])  # type: ignore[list-item]
    assert caught.value.param == "tools[0].name"


def test_function_tools_are_strict_unless_they_say_otherwise(client: openai.OpenAI) -> None:
    loose = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
             "required": ["city"]}
    for tool in ({"type": "function", "name": "get_weather", "parameters": loose},
                 {"type": "function", "name": "get_weather", "parameters": loose, "strict": True}):
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model=MODEL, input="x", tools=[tool])  # type: ignore[list-item]
        assert (caught.value.param, caught.value.code) == ("tools[0].parameters",
                                                           "invalid_function_parameters")
        assert caught.value.message.endswith(
            "Invalid schema for function 'get_weather': In context=(), 'required' is required to be "
            "supplied and to be an array including every key in properties. Missing 'unit'.")
    nested = {"type": "object", "required": ["where"], "additionalProperties": False,
              "properties": {"where": {"type": "object", "properties": {"city": {"type": "string"}},
                                       "required": ["city"]}}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="x", tools=[  # type: ignore[list-item]
            {"type": "function", "name": "get_weather", "parameters": nested}])
    assert "In context=('properties', 'where'), 'additionalProperties' is required to be supplied " \
        "and to be false." in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="x", tools=[  # type: ignore[list-item]
            {"type": "function", "name": "get_weather", "parameters": loose, "strict": "no"}])
    assert caught.value.param == "tools[0].strict"

    strict = {**loose, "required": ["city", "unit"], "additionalProperties": False}
    for tool in ({"type": "function", "name": "get_weather", "parameters": loose, "strict": False},
                 {"type": "function", "name": "get_weather", "parameters": strict, "strict": True},
                 {"type": "function", "name": "get_weather", "parameters": strict},
                 {"type": "function", "name": "get_time", "parameters": None, "strict": True}):
        assert client.responses.create(model=MODEL, input="x", tools=[tool]).status == "completed"  # type: ignore[list-item]


# ---- assistants, threads, messages, runs --------------------------------------------------------

def test_assistants_crud_and_list(client: openai.OpenAI) -> None:
    ids = [client.beta.assistants.create(model=MODEL, name=f"a{i}").id for i in range(3)]
    assistant = client.beta.assistants.retrieve(ids[0])
    assert (assistant.object, assistant.name, assistant.model) == ("assistant", "a0", MODEL)
    updated = client.beta.assistants.update(ids[0], instructions="be kind", metadata={"v": "2"})
    assert (updated.instructions, updated.metadata, updated.name) == ("be kind", {"v": "2"}, "a0")

    page = client.beta.assistants.list(limit=2)
    assert [a.id for a in page.data] == ids[::-1][:2]
    assert page.has_more is True
    assert [a.id for a in client.beta.assistants.list(limit=2, order="asc")] == ids

    assert client.beta.assistants.delete(ids[1]).deleted is True
    assert [a.id for a in client.beta.assistants.list(order="asc")] == [ids[0], ids[2]]
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.assistants.create(model=MODEL, tools=[{"type": "function", "function": {}}])  # type: ignore
    assert caught.value.param == "tools[0].function.name"


def test_assistants_api_requires_beta_header(fake: FakeOpenAI) -> None:
    status, body = raw_request(fake, "GET", "/v1/assistants", headers={"Authorization": f"Bearer {fake.api_key}"})
    assert status == 400
    assert "OpenAI-Beta" in body["error"]["message"]


def test_threads_and_messages_crud(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "first"}], metadata={"a": "1"})
    assert (thread.object, thread.metadata) == ("thread", {"a": "1"})
    assert client.beta.threads.update(thread.id, metadata={"a": "2"}).metadata == {"a": "2"}
    assert client.beta.threads.retrieve(thread.id).metadata == {"a": "2"}

    second = client.beta.threads.messages.create(thread.id, role="user",
                                                 content=[{"type": "text", "text": "second"}])
    assert second.content[0].text.value == "second"
    assert second.thread_id == thread.id
    listed = client.beta.threads.messages.list(thread.id)
    assert [m.content[0].text.value for m in listed.data] == ["second", "first"]
    assert client.beta.threads.messages.retrieve(second.id, thread_id=thread.id).id == second.id
    assert client.beta.threads.messages.update(second.id, thread_id=thread.id, metadata={"m": "x"}).metadata == \
        {"m": "x"}
    assert client.beta.threads.messages.delete(second.id, thread_id=thread.id).deleted is True
    assert len(client.beta.threads.messages.list(thread.id).data) == 1
    with pytest.raises(openai.BadRequestError) as caught:
        client.post(f"/threads/{thread.id}/messages", body={"content": "x"}, cast_to=object,
                    options={"headers": {"OpenAI-Beta": "assistants=v2"}})
    assert caught.value.param == "role"

    assert client.beta.threads.delete(thread.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve(thread.id)


def test_run_lifecycle_to_completed(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.latency = 0.02
    assistant = client.beta.assistants.create(model=MODEL, instructions="help")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hello run"}])
    fake.hold()
    run = client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, metadata={"r": "1"})
    assert (run.status, run.model, run.instructions) == ("queued", MODEL, "help")
    poll(lambda: client.beta.threads.runs.retrieve(run.id, thread_id=thread.id), lambda r: r.status == "in_progress")
    stays(lambda: client.beta.threads.runs.retrieve(run.id, thread_id=thread.id),
          lambda r: r.status == "in_progress", 10 * fake.latency)
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.messages.create(thread.id, role="user", content="too early")
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    assert client.beta.threads.runs.update(run.id, thread_id=thread.id, metadata={"r": "2"}).metadata == {"r": "2"}
    fake.release()

    done = poll(lambda: client.beta.threads.runs.retrieve(run.id, thread_id=thread.id),
                lambda r: r.status == "completed")
    assert done.usage is not None and done.usage.completion_tokens == 3
    reply = client.beta.threads.messages.list(thread.id).data[0]
    assert (reply.role, reply.run_id, reply.assistant_id) == ("assistant", run.id, assistant.id)
    assert reply.content[0].text.value == "echo: hello run"
    assert [r.id for r in client.beta.threads.runs.list(thread.id)] == [run.id]


def test_run_create_and_poll_follows_poll_hint(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(model=MODEL)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "quick"}])
    fake.enqueue("scripted run reply")
    started = time.monotonic()
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"
    assert time.monotonic() - started < 1.0  # the SDK would wait 1 s between polls without the hint
    assert client.beta.threads.messages.list(thread.id).data[0].content[0].text.value == "scripted run reply"


def test_run_requires_action_then_submit_tool_outputs(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    assistant = client.beta.assistants.create(model=MODEL, tools=[tool])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "look it up"}])
    fake.enqueue({"function_calls": [{"name": "lookup", "arguments": '{"q": "x"}'}]}, "found it")
    run = client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    run = poll(lambda: client.beta.threads.runs.retrieve(run.id, thread_id=thread.id),
               lambda r: r.status == "requires_action")
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [(c.type, c.function.name, c.function.arguments) for c in calls] == [("function", "lookup", '{"q": "x"}')]

    with pytest.raises(openai.BadRequestError):
        client.beta.threads.runs.submit_tool_outputs(run.id, thread_id=thread.id,
                                                     tool_outputs=[{"tool_call_id": "call_wrong", "output": "1"}])
    resumed = client.beta.threads.runs.submit_tool_outputs(
        run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": calls[0].id, "output": "42"}])
    assert resumed.status == "queued" and resumed.required_action is None
    done = poll(lambda: client.beta.threads.runs.retrieve(run.id, thread_id=thread.id),
                lambda r: r.status == "completed")
    assert done.status == "completed"
    assert client.beta.threads.messages.list(thread.id).data[0].content[0].text.value == "found it"


def test_run_cancel(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(model=MODEL)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "wait"}])
    fake.hold()
    run = client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    assert client.beta.threads.runs.cancel(run.id, thread_id=thread.id).status == "cancelling"
    fake.release()
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "cancelled"
    assert [m.role for m in client.beta.threads.messages.list(thread.id)] == ["user"]
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.runs.cancel(run.id, thread_id=thread.id)


def test_run_steps_record_tool_rounds_and_replies(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    assistant = client.beta.assistants.create(model=MODEL, tools=[tool])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "look it up"}])
    fake.enqueue({"function_calls": [{"name": "lookup", "arguments": "{}"}]}, "found it")
    run = client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    run = poll(lambda: client.beta.threads.runs.retrieve(run.id, thread_id=thread.id),
               lambda r: r.status == "requires_action")
    (waiting,) = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
    assert (waiting.type, waiting.status, waiting.step_details.tool_calls[0].function.output) == (
        "tool_calls", "in_progress", None)
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    client.beta.threads.runs.submit_tool_outputs(
        run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call.id, "output": "42"}])
    done = poll(lambda: client.beta.threads.runs.retrieve(run.id, thread_id=thread.id),
                lambda r: r.status == "completed")
    tools, message = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc")
    assert (tools.status, tools.step_details.tool_calls[0].function.output) == ("completed", "42")
    assert message.step_details.message_creation.message_id == \
        client.beta.threads.messages.list(thread.id).data[0].id
    assert message.usage.total_tokens == done.usage.total_tokens


# ---- files, vector stores, file_search ----------------------------------------------------------

def upload(client: openai.OpenAI, filename: str, data: bytes) -> Any:
    """Upload a file for the assistants' tools."""
    return client.files.create(file=(filename, data), purpose="assistants")


def test_files_upload_list_retrieve_download_delete(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    data = b"line one\r\nline two\x00\xff"
    uploaded = client.files.create(file=("notes.bin", data), purpose="user_data")
    assert uploaded.id.startswith("file-")
    assert (uploaded.object, uploaded.bytes, uploaded.filename, uploaded.purpose, uploaded.status) == (
        "file", len(data), "notes.bin", "user_data", "processed")
    assert (uploaded.expires_at, uploaded.status_details) == (None, None)
    expiring = client.files.create(file=("policy.txt", POLICY), purpose="assistants",
                                   expires_after={"anchor": "created_at", "seconds": 3600})
    assert expiring.expires_at == expiring.created_at + 3600

    assert client.files.retrieve(uploaded.id) == uploaded
    assert client.files.content(uploaded.id).content == data
    assert [f.id for f in client.files.list()] == [expiring.id, uploaded.id]
    assert [f.id for f in client.files.list(purpose="assistants")] == [expiring.id]
    assert [f.id for f in client.files.list(order="asc", limit=1)] == [uploaded.id, expiring.id]
    assert fake.files[uploaded.id]["filename"] == "notes.bin" and fake.file_content(uploaded.id) == data
    first_upload = next(r for r in fake.requests if r["route"] == "POST /v1/files")
    assert (first_upload["form"], first_upload["json"]) == (
        {"purpose": "user_data", "file": {"filename": "notes.bin", "bytes": len(data)}}, None)

    deleted = client.files.delete(uploaded.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (uploaded.id, "file", True)
    for call in (lambda: client.files.retrieve(uploaded.id), lambda: client.files.content(uploaded.id),
                 lambda: client.files.delete(uploaded.id)):
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert uploaded.id in caught.value.message
    assert list(fake.files) == [expiring.id]
    assert (fake.calls("POST /v1/files"), fake.calls("GET /v1/files/{id}/content")) == (2, 2)


def test_file_uploads_are_validated(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("a.txt", b"x"), purpose="nonsense")  # type: ignore[arg-type]
    assert caught.value.param == "purpose"
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/files", body={"purpose": "assistants"}, cast_to=object)
    assert (caught.value.param, caught.value.code) == ("file", "missing_required_parameter")
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("a.txt", b"x"), purpose="assistants",
                            expires_after={"anchor": "created_at", "seconds": 60})
    assert caught.value.param == "expires_after.seconds"


def test_vector_store_of_files_is_ready_at_once_and_searchable(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    policy, menu = upload(client, "policy.txt", POLICY), upload(client, "menu.txt", MENU)
    store = client.vector_stores.create(name="docs", file_ids=[policy.id], metadata={"team": "hr"},
                                        expires_after={"anchor": "last_active_at", "days": 2})
    assert store.id.startswith("vs_")
    assert (store.object, store.name, store.status, store.metadata) == ("vector_store", "docs", "completed",
                                                                        {"team": "hr"})
    assert (store.file_counts.completed, store.file_counts.in_progress, store.file_counts.total) == (1, 0, 1)
    assert store.usage_bytes == len(POLICY)
    assert store.expires_at == store.last_active_at + 2 * 86400

    added = client.vector_stores.files.create(store.id, file_id=menu.id, attributes={"kind": "menu", "year": 2024})
    assert (added.id, added.object, added.status, added.vector_store_id, added.last_error) == (
        menu.id, "vector_store.file", "completed", store.id, None)
    assert added.chunking_strategy.to_dict() == {
        "type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}}
    assert client.vector_stores.retrieve(store.id).file_counts.total == 2
    assert [f.id for f in client.vector_stores.files.list(store.id, order="asc")] == [policy.id, menu.id]
    assert client.vector_stores.files.retrieve(menu.id, vector_store_id=store.id).attributes == {
        "kind": "menu", "year": 2024}

    results = client.vector_stores.search(store.id, query="When does the office close on Fridays?").data
    assert [(r.file_id, r.filename) for r in results] == [(policy.id, "policy.txt"), (menu.id, "menu.txt")]
    assert 1 >= results[0].score > results[1].score > 0
    assert [(part.type, part.text) for part in results[0].content] == [("text", POLICY.decode())]
    assert (results[0].attributes, results[1].attributes) == ({}, {"kind": "menu", "year": 2024})
    menus = client.vector_stores.search(store.id, query="Fridays", filters={"type": "eq", "key": "kind",
                                                                            "value": "menu"})
    assert [r.file_id for r in menus] == [menu.id]
    assert [r.file_id for r in client.vector_stores.search(store.id, query="Fridays", max_num_results=1)] == [
        policy.id]
    strict = client.vector_stores.search(store.id, query="close Fridays", ranking_options={"score_threshold": 0.6})
    assert [r.file_id for r in strict] == [policy.id]
    assert client.vector_stores.search(store.id, query="penguins").data == []

    renamed = client.vector_stores.update(store.id, name="handbook", expires_after=None)
    assert (renamed.name, renamed.expires_after, renamed.expires_at) == ("handbook", None, None)
    assert fake.vector_stores[store.id]["name"] == "handbook"
    assert list(fake.vector_store_files(store.id)) == [policy.id, menu.id]
    assert [part.text for part in client.vector_stores.files.content(policy.id, vector_store_id=store.id)] == [
        POLICY.decode()]
    removed = client.vector_stores.files.delete(menu.id, vector_store_id=store.id)
    assert (removed.id, removed.object, removed.deleted) == (menu.id, "vector_store.file.deleted", True)
    with pytest.raises(openai.NotFoundError) as caught:
        client.vector_stores.files.retrieve(menu.id, vector_store_id=store.id)
    assert store.id in caught.value.message
    assert client.files.retrieve(menu.id).id == menu.id  # the file itself stays
    assert client.vector_stores.retrieve(store.id).usage_bytes == len(POLICY)
    assert [s.id for s in client.vector_stores.list()] == [store.id]
    deleted = client.vector_stores.delete(store.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (store.id, "vector_store.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)
    assert fake.calls("POST /v1/vector_stores/{id}/search") == 5


def test_vector_stores_refuse_unknown_files_and_stores(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.vector_stores.create(file_ids=["file-nope"])
    assert caught.value.param == "file_ids" and "file-nope" in caught.value.message
    assert client.vector_stores.list().data == []
    store = client.vector_stores.create()
    assert (store.name, store.file_counts.total, store.usage_bytes) == ("", 0, 0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.vector_stores.files.create(store.id, file_id="file-nope")
    assert caught.value.param == "file_id"
    for call in (lambda: client.vector_stores.retrieve("vs_nope"),
                 lambda: client.vector_stores.search("vs_nope", query="x"),
                 lambda: client.vector_stores.files.list("vs_nope")):
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert "vs_nope" in caught.value.message
    policy = upload(client, "policy.txt", POLICY)
    with pytest.raises(openai.BadRequestError) as caught:
        client.vector_stores.files.create(store.id, file_id=policy.id, chunking_strategy={
            "type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 60}})
    assert caught.value.param == "chunking_strategy.static.chunk_overlap_tokens"
    with pytest.raises(openai.BadRequestError) as caught:
        client.vector_stores.search(store.id, query="x", max_num_results=51)
    assert caught.value.param == "max_num_results"


def test_static_chunks_and_file_batches(client: openai.OpenAI) -> None:
    long_text = " ".join(f"word{i}" for i in range(250)) + " zebra"
    document, policy = upload(client, "long.txt", long_text.encode()), upload(client, "policy.txt", POLICY)
    store = client.vector_stores.create()
    small = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 50}}
    batch = client.vector_stores.file_batches.create_and_poll(store.id, files=[
        {"file_id": document.id, "chunking_strategy": small}, {"file_id": policy.id, "attributes": {"kind": "policy"}}])
    assert batch.id.startswith("vsfb_")
    assert (batch.object, batch.status, batch.vector_store_id, batch.file_counts.completed) == (
        "vector_store.files_batch", "completed", store.id, 2)
    listed = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id)
    assert {(f.id, f.attributes.get("kind")) for f in listed} == {(document.id, None), (policy.id, "policy")}

    # 251 words in chunks of 100, each 50 words after the one before.
    chunks = [part.text for part in client.vector_stores.files.content(document.id, vector_store_id=store.id)]
    assert [len(text.split()) for text in chunks] == [100, 100, 100, 100, 51]
    assert chunks[0].startswith("word0 word1 ") and chunks[1].startswith("word50 ") and chunks[-1].endswith("zebra")
    [hit] = client.vector_stores.search(store.id, query="zebra").data
    assert hit.content[0].text == chunks[-1]
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)


def test_background_response_searches_the_stores_and_cites_a_file(client: openai.OpenAI) -> None:
    policy = upload(client, "policy.txt", POLICY)
    tool = {"type": "file_search", "vector_store_ids": [client.vector_stores.create(file_ids=[policy.id]).id]}
    conversation = client.conversations.create()
    created = client.responses.create(model=MODEL, conversation=conversation.id, input="How long do refunds take?",
                                      tools=[tool], background=True)
    done = finished(client, created.id)

    search, message = done.output
    assert search.id.startswith("fs_")
    assert (search.type, search.status, search.queries, search.results) == (
        "file_search_call", "completed", ["How long do refunds take?"], None)
    text = "According to policy.txt, Refunds take 30 days to arrive."
    assert (message.type, done.output_text) == ("message", text)
    [citation] = message.content[0].annotations
    assert citation.to_dict() == {"type": "file_citation", "file_id": policy.id, "filename": "policy.txt",
                                  "index": len(text)}
    # The results show when a read asks for them ...
    [result] = client.responses.retrieve(created.id, include=["file_search_call.results"]).output[0].results
    assert (result.file_id, result.filename, result.text, result.attributes) == (
        policy.id, "policy.txt", POLICY.decode(), {})
    assert 0 < result.score <= 1
    # ... and the conversation keeps the call as one of its items.
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [item.type for item in items] == ["message", "file_search_call", "message"]
    assert items[1].results is None
    included = client.conversations.items.list(conversation.id, order="asc", include=["file_search_call.results"])
    assert included.data[1].results[0].file_id == policy.id
    assert client.conversations.items.retrieve(search.id, conversation_id=conversation.id,
                                               include=["file_search_call.results"]).results[0].text == POLICY.decode()

    asked = client.responses.create(model=MODEL, input="Do gift cards expire?", tools=[tool], background=True,
                                    include=["file_search_call.results"])
    asked = finished(client, asked.id)
    assert asked.output[0].results[0].text == POLICY.decode()
    assert asked.output_text == "According to policy.txt, Gift cards never expire."


def test_file_search_without_a_hit_and_when_it_is_not_used(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    tool = {"type": "file_search", "vector_store_ids": [
        client.vector_stores.create(file_ids=[upload(client, "menu.txt", MENU).id]).id]}
    missed = client.responses.create(model=MODEL, input="Where are the penguins?", tools=[tool])
    assert [item.type for item in missed.output] == ["file_search_call", "message"]
    assert missed.output_text == "The files say nothing about that."
    assert missed.output[1].content[0].annotations == []

    fake.enqueue("scripted")
    scripted = client.responses.create(model=MODEL, input="Fish on Fridays?", tools=[tool])
    assert ([item.type for item in scripted.output], scripted.output_text) == (["message"], "scripted")
    unused = client.responses.create(model=MODEL, input="Fish on Fridays?", tools=[tool], tool_choice="none")
    assert unused.output_text == "echo: Fish on Fridays?"


def test_file_search_tools_name_known_vector_stores(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model=MODEL, input="x", tools=[
            WEATHER_TOOL, {"type": "file_search", "vector_store_ids": ["vs_nope"]}])  # type: ignore[list-item]
    assert caught.value.param == "tools[1].vector_store_ids" and "vs_nope" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="x", tools=[{"type": "file_search"}])  # type: ignore[list-item]
    assert (caught.value.param, caught.value.code) == ("tools[0].vector_store_ids", "missing_required_parameter")
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="x", include=["everything"])  # type: ignore[list-item]
    assert caught.value.param == "include[0]"


def test_run_searches_the_files_a_message_attaches(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    policy = upload(client, "policy.txt", POLICY)
    assistant = client.beta.assistants.create(model=MODEL, tools=[{"type": "file_search"}])
    thread = client.beta.threads.create(messages=[{
        "role": "user", "content": "When do the offices close on Fridays?",
        "attachments": [{"file_id": policy.id, "tools": [{"type": "file_search"}]}]}])
    # As OpenAI does, the attachment went into a vector store made for the thread.
    [store_id] = thread.tool_resources.file_search.vector_store_ids
    assert list(fake.vector_store_files(store_id)) == [policy.id]
    assert fake.vector_stores[store_id]["expires_after"] == {"anchor": "last_active_at", "days": 7}
    [question] = client.beta.threads.messages.list(thread.id).data
    assert [(a.file_id, [t.type for t in a.tools]) for a in question.attachments] == [(policy.id, ["file_search"])]

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"
    searched, replied = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc")
    assert (searched.type, searched.status, replied.type) == ("tool_calls", "completed", "message_creation")
    [call] = searched.step_details.tool_calls
    assert call.type == "file_search" and call.id.startswith("call_")
    assert call.file_search.ranking_options.to_dict() == {"ranker": "default_2024_08_21", "score_threshold": 0.0}
    [result] = call.file_search.results
    assert (result.file_id, result.file_name, result.content) == (policy.id, "policy.txt", None)
    assert 0 < result.score <= 1
    retrieved = client.beta.threads.runs.steps.retrieve(searched.id, thread_id=thread.id, run_id=run.id,
                                                        include=[STEP_CONTENT])
    assert [(part.type, part.text) for part in retrieved.step_details.tool_calls[0].file_search.results[0].content] \
        == [("text", POLICY.decode())]
    listed = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc", include=[STEP_CONTENT])
    assert listed.data[0].step_details.tool_calls[0].file_search.results[0].content[0].text == POLICY.decode()

    reply = client.beta.threads.messages.retrieve(replied.step_details.message_creation.message_id,
                                                  thread_id=thread.id)
    mark = "【4:0†policy.txt】"
    text = reply.content[0].text
    assert text.value == f"According to policy.txt, Our offices close at noon on Fridays. {mark}"
    [citation] = text.annotations
    assert (citation.type, citation.text, citation.file_citation.file_id) == ("file_citation", mark, policy.id)
    assert (citation.start_index, citation.end_index) == (len(text.value) - len(mark), len(text.value))


def test_tool_resources_and_attachments_name_known_files_and_stores(fake: FakeOpenAI,
                                                                    client: openai.OpenAI) -> None:
    unknown_store = {"file_search": {"vector_store_ids": ["vs_nope"]}}
    for call, param in (
            (lambda: client.beta.assistants.create(model=MODEL, tool_resources=unknown_store),
             "tool_resources.file_search.vector_store_ids"),
            (lambda: client.beta.threads.create(tool_resources=unknown_store),
             "tool_resources.file_search.vector_store_ids"),
            (lambda: client.beta.assistants.create(model=MODEL, tool_resources={
                "code_interpreter": {"file_ids": ["file-nope"]}}), "tool_resources.code_interpreter.file_ids"),
            (lambda: client.beta.threads.create(messages=[{"role": "user", "content": "x", "attachments": [
                {"file_id": "file-nope", "tools": [{"type": "file_search"}]}]}]), "messages[0].attachments[0].file_id"),
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert caught.value.param == param and "nope" in caught.value.message
    assert fake.vector_stores == {} and client.beta.assistants.list().data == []
    two = [client.vector_stores.create().id for _ in range(2)]
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.assistants.create(model=MODEL, tool_resources={"file_search": {"vector_store_ids": two}})
    assert caught.value.code == "array_above_max_length"

    # An assistant's store, made of its files, is searched by its runs.
    policy = upload(client, "policy.txt", POLICY)
    assistant = client.beta.assistants.create(model=MODEL, tools=[{"type": "file_search"}], tool_resources={
        "file_search": {"vector_stores": [{"file_ids": [policy.id]}]}})
    [store_id] = assistant.tool_resources.file_search.vector_store_ids
    assert store_id not in two and list(fake.vector_store_files(store_id)) == [policy.id]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Do gift cards expire?"}])
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.create(thread.id, role="user", content="x", attachments=[
            {"file_id": "file-nope", "tools": [{"type": "code_interpreter"}]}])
    client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert client.beta.threads.messages.list(thread.id).data[0].content[0].text.value == \
        "According to policy.txt, Gift cards never expire. 【4:0†policy.txt】"

    # Without file_search among its tools, told to use none, or scripted, a run does not search.
    for options, scripted in (({"tools": []}, None), ({"tool_choice": "none"}, None), ({}, "scripted")):
        if scripted:
            fake.enqueue(scripted)
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, **options)
        assert [step.type for step in client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)] == [
            "message_creation"]
        assert client.beta.threads.messages.list(thread.id).data[0].content[0].text.value == (
            scripted or "echo: Do gift cards expire?")


# ---- chat completions ---------------------------------------------------------------------------

def test_chat_completions_echo_and_tool_calls(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "hi chat"}]
    assert client.chat.completions.create(model=MODEL, messages=messages).choices[0].message.content == \
        "echo: hi chat"
    fake.enqueue({"function_calls": [{"name": "f", "arguments": {"x": 1}}]})
    choice = client.chat.completions.create(model=MODEL, messages=messages).choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [(c.function.name, c.function.arguments) for c in choice.message.tool_calls] == [("f", '{"x": 1}')]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[])
    assert caught.value.param == "messages"


def test_chat_completion_held_until_release(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.hold()
    call = CallInThread(lambda: client.chat.completions.create(model=MODEL,
                                                               messages=[{"role": "user", "content": "held"}]))
    fake.wait_for_requests(1, route="POST /v1/chat/completions")
    call.thread.join(0.2)
    assert call.thread.is_alive()
    fake.release()
    assert call.join().choices[0].message.content == "echo: held"


# ---- faults -------------------------------------------------------------------------------------

def test_fail_next_maps_to_sdk_errors_on_any_route(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.fail_next(500)
    with pytest.raises(openai.InternalServerError):
        client.conversations.create()
    fake.fail_next(429, headers={"Retry-After": "7"})
    with pytest.raises(openai.RateLimitError) as caught:
        client.beta.assistants.list()
    assert caught.value.response.headers["retry-after"] == "7"
    fake.fail_next(503, count=2)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.responses.retrieve("resp_any")
    assert client.conversations.create().object == "conversation"
    assert fake.calls("POST /v1/conversations") == 2


def test_sdk_retries_through_injected_failures(fake: FakeOpenAI) -> None:
    fake.fail_next(429, headers={"Retry-After-Ms": "1"}, count=2)
    with openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=2, timeout=5) as retrying:
        assert retrying.conversations.create().object == "conversation"
    assert fake.calls("POST /v1/conversations") == 3


def test_timeout_next_delays_the_answer(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.timeout_next(2)
    with pytest.raises(openai.APITimeoutError):
        client.conversations.create(timeout=0.2)
    fake.timeout_next(0.2)
    started = time.monotonic()
    assert client.conversations.create().object == "conversation"
    assert time.monotonic() - started >= 0.2


def test_end_delays_lets_a_delayed_request_go_and_drops_the_rest(fake: FakeOpenAI,
                                                                  client: openai.OpenAI) -> None:
    fake.delay_on("POST /v1/conversations", 30, count=2)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(client.conversations.create)
        fake.wait_for_requests(1, route="POST /v1/conversations")
        fake.end_delays()
        assert waiting.result(timeout=5).object == "conversation"
    started = time.monotonic()
    client.conversations.create()  # the second delay was dropped too
    assert time.monotonic() - started < 5


def test_drop_next_closes_the_connection(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.drop_next()
    with pytest.raises(openai.APIConnectionError) as caught:
        client.responses.create(model=MODEL, input="x")
    assert not isinstance(caught.value, openai.APITimeoutError)
    assert client.responses.create(model=MODEL, input="x").status == "completed"


# ---- counters, controls, lifecycle --------------------------------------------------------------

def test_call_counters_per_route(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="count me", background=True)
    polled = 0

    def retrieve() -> Any:
        nonlocal polled
        polled += 1
        return client.responses.retrieve(response.id)

    poll(retrieve, lambda r: r.status == "completed")
    assert fake.calls("GET /v1/responses/{id}") == polled
    assert fake.calls("POST /v1/responses") == 1
    assert fake.calls() == {"POST /v1/responses": 1, "GET /v1/responses/{id}": polled}
    assert fake.requests[0]["json"]["background"] is True
    with pytest.raises(ValueError):
        fake.calls("GET /v1/nope/{id}")
    fake.reset()
    assert fake.calls("GET /v1/responses/{id}") == 0 and fake.requests == []
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_wait_for_requests_times_out(fake: FakeOpenAI) -> None:
    with pytest.raises(TimeoutError):
        fake.wait_for_requests(1, timeout=0.05)


def test_enqueue_rejects_malformed_replies(fake: FakeOpenAI) -> None:
    with pytest.raises(ValueError):
        fake.enqueue({"text": "x"})
    with pytest.raises(ValueError):
        fake.enqueue({"content": "x", "function_calls": [{"name": "f"}]})
    with pytest.raises(TypeError):
        fake.enqueue(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        fake.fail_next(200)


def test_stop_does_not_hang_on_held_work() -> None:
    fake = FakeOpenAI().start()
    sdk = openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0, timeout=5)
    fake.hold()
    sdk.responses.create(model=MODEL, input="held in background", background=True)
    call = CallInThread(lambda: sdk.responses.create(model=MODEL, input="held in request"))
    fake.wait_for_requests(2, route="POST /v1/responses")
    fake.timeout_next(30)
    delayed = CallInThread(lambda: sdk.conversations.create())
    fake.wait_for_requests(1, route="POST /v1/conversations")
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 2
    for pending in (call, delayed):
        with pytest.raises(openai.APIConnectionError):
            pending.join()
    sdk.close()
