"""The engines whose threads live upstream (`responses`, `assistants`), end to end.

Clients are the official SDK talking to the bridge over HTTP; what happened upstream is read off
the FakeOpenAI (its recorded requests, per-route counters and state). Behaviour both engines
share is parametrized over them; what only one engine has (retention of background responses,
conversation locks, upstream assistants) is tested on that engine.
"""

from __future__ import annotations

import copy
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from sqlalchemy import func, select, update

from bridge.extensions import db
from bridge.models import Assistant, Message, Run, Thread
from tests.conftest import race_run_creates, wait_for

ENGINES = ("responses", "assistants")
both_engines = pytest.mark.parametrize("engine", ENGINES)

# Our public ids: a prefix and 24 base62 characters. Upstream ids (conv_/resp_/msg_/run_/thread_
# followed by 32 hex characters at the fake) never match.
OUR_ID = re.compile(r"^(asst|thread|msg|run)_[A-Za-z0-9]{24}$")

# The fake's route keys, per engine, for the upstream call behind each bridge step.
CREATE_CONTAINER = {"responses": "POST /v1/conversations", "assistants": "POST /v1/threads"}
DELETE_CONTAINER = {"responses": "DELETE /v1/conversations/{id}",
                    "assistants": "DELETE /v1/threads/{id}"}
CONTINUE = {"responses": "POST /v1/responses",
            "assistants": "POST /v1/threads/{id}/runs/{run_id}/submit_tool_outputs"}
ADD_MESSAGES = {"responses": "POST /v1/conversations/{id}/items",
                "assistants": "POST /v1/threads/{id}/messages"}
START = {"responses": "POST /v1/responses", "assistants": "POST /v1/threads/{id}/runs"}
RETRIEVE = {"responses": "GET /v1/responses/{id}",
            "assistants": "GET /v1/threads/{id}/runs/{run_id}"}

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
POLL = {"poll_interval_ms": 20}


# ---- helpers ----------------------------------------------------------------------------------

def upstream_client(fake) -> openai.OpenAI:
    """An SDK client talking straight to the fake, as another program sharing the account would."""
    return openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0, timeout=5)


def registry(bridge, statement):
    """Run one query against the bridge's registry."""
    with bridge.app.app_context():
        try:
            return db.session.execute(statement).all()
        finally:
            db.session.remove()


def upstream_id(bridge, model, our_id: str) -> str:
    (row,) = registry(bridge, select(model.upstream_id).where(model.id == our_id))
    assert row[0], f"{our_id} is not linked upstream"
    return row[0]


def write_registry(bridge, statement) -> None:
    with bridge.app.app_context():
        try:
            db.session.execute(statement)
            db.session.commit()
        finally:
            db.session.remove()


def count_rows(bridge, model) -> int:
    return registry(bridge, select(func.count()).select_from(model))[0][0]


def containers(bridge) -> dict[str, dict[str, str]]:
    """The upstream conversations (responses) or threads (assistants): id -> metadata."""
    fake = bridge.fake
    with fake._cond:
        store = fake._conversations if bridge.engine == "responses" else fake._threads
        return {key: copy.deepcopy(value.obj["metadata"]) for key, value in store.items()}


def upstream_texts(bridge, container: str) -> list[str]:
    """The texts of an upstream conversation's messages (items) or thread's messages, in order."""
    fake = bridge.fake
    with fake._cond:
        if bridge.engine == "responses":
            return [" ".join(part["text"] for part in item["content"])
                    for item in fake._conversations[container].items if item["type"] == "message"]
        return [" ".join(block["text"]["value"] for block in message["content"])
                for message in fake._threads[container].messages]


def upstream_items(bridge, container: str) -> list[dict[str, Any]]:
    with bridge.fake._cond:
        return copy.deepcopy(bridge.fake._conversations[container].items)


def upstream_run_status(bridge, thread_id: str, run_id: str) -> str:
    """The status of a run's upstream response (responses) or run (assistants), at the fake."""
    fake, upstream = bridge.fake, upstream_id(bridge, Run, run_id)
    with fake._cond:
        if bridge.engine == "responses":
            return fake._responses[upstream].obj["status"]
        return fake._threads[upstream_id(bridge, Thread, thread_id)].runs[upstream].obj["status"]


def upstream_statuses(bridge) -> list[str]:
    """The statuses of every response (responses) or run (assistants) at the fake, sorted."""
    fake = bridge.fake
    with fake._cond:
        if bridge.engine == "responses":
            return sorted(job.obj["status"] for job in fake._responses.values())
        return sorted(job.obj["status"] for thread in fake._threads.values()
                      for job in thread.runs.values())


def sent(fake, route: str) -> list[dict[str, Any]]:
    """The JSON bodies of the requests the fake received on a route."""
    return [request["json"] for request in fake.requests if request["route"] == route]


def total_calls(fake) -> int:
    return sum(fake.calls().values())


def list_threads(bridge, user: str) -> list[str]:
    """GET /v1/threads (our extension, not in the SDK): the ids of a user's threads."""
    answer = bridge.app.test_client().get("/v1/threads", headers=bridge.headers(user))
    assert answer.status_code == 200, answer.text
    return [thread["id"] for thread in answer.get_json()["data"]]


def forget(bridge, run_id: str) -> None:
    """Let the fake's retention run out for the response behind a run, now, and only for it."""
    fake, response_id = bridge.fake, upstream_id(bridge, Run, run_id)
    with fake._cond:
        kept, fake.retention = fake.retention, 0
    try:
        with upstream_client(fake) as client, pytest.raises(openai.NotFoundError):
            client.responses.retrieve(response_id)  # the fake drops it on this lookup
    finally:
        with fake._cond:
            fake.retention = kept
    with fake._cond:
        assert response_id not in fake._responses


def status_error(call) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    return caught.value


# ---- 1. function tools ------------------------------------------------------------------------

@both_engines
def test_function_tool_round_trip(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    assistant_id = bridge.assistant(tools=[WEATHER_TOOL])
    fake.enqueue({"function_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
                  "usage": {"input_tokens": 10, "output_tokens": 3}},
                 {"content": "It is sunny in Paris.", "usage": {"input_tokens": 20, "output_tokens": 6}})
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Weather in Paris?"}])

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id,
                                                   **POLL)

    assert run.status == "requires_action"
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [(c.type, c.function.name) for c in calls] == [("function", "get_weather")]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data == []

    done = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, **POLL,
        tool_outputs=[{"tool_call_id": calls[0].id, "output": '{"sky": "sunny"}'}])

    assert done.status == "completed" and done.id == run.id
    assert done.required_action is None and done.completed_at
    messages = client.beta.threads.messages.list(thread_id=thread.id, order="asc").data
    assert [m.role for m in messages] == ["user", "assistant"]
    reply = messages[1]
    assert reply.content[0].text.value == "It is sunny in Paris."
    assert reply.run_id == run.id and reply.assistant_id == assistant_id
    assert [m.id for m in client.beta.threads.messages.list(thread_id=thread.id,
                                                             run_id=run.id).data] == [reply.id]
    if engine == "responses":
        first, second = sent(fake, "POST /v1/responses")
        assert first["background"] is True
        assert first["tools"] == [{"type": "function", "name": "get_weather",
                                   "description": "The weather in a city.",
                                   "parameters": WEATHER_TOOL["function"]["parameters"],
                                   "strict": False}]
        assert second["conversation"] == first["conversation"] == upstream_id(bridge, Thread, thread.id)
        assert second["input"] == [{"type": "function_call_output", "call_id": calls[0].id,
                                    "output": '{"sky": "sunny"}'}]
        # A run that called a tool spans two responses: its usage is their sum.
        assert (done.usage.prompt_tokens, done.usage.completion_tokens,
                done.usage.total_tokens) == (30, 9, 39)
    else:
        (submitted,) = sent(fake, "POST /v1/threads/{id}/runs/{run_id}/submit_tool_outputs")
        assert submitted["tool_outputs"] == [{"tool_call_id": calls[0].id,
                                              "output": '{"sky": "sunny"}'}]
        assert done.usage.total_tokens == 26  # the upstream run's own total


def test_function_tools_reach_responses_as_the_assistant_declared_them(responses_bridge):
    # A Responses function tool requires `parameters` and `strict`, and one that leaves `strict`
    # out is strict, which refuses schemas the Assistants API took (optional properties, no
    # `additionalProperties: false`): the bridge says what the Assistants tool said.
    bridge = responses_bridge
    fake, client = bridge.fake, bridge.sdk("alice")
    optional_unit = {"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}}}
    strict_lookup = {"type": "object", "required": ["query"], "additionalProperties": False,
                     "properties": {"query": {"type": "string"}}}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": optional_unit,
                                               "description": "The weather in a city."}},
             {"type": "function", "function": {"name": "get_time"}},
             {"type": "function", "function": {"name": "lookup", "parameters": strict_lookup,
                                               "strict": True}}]
    fake.enqueue({"function_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]})
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Oslo?"}])

    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=bridge.assistant(tools=tools), **POLL)

    assert run.status == "requires_action"
    (request,) = sent(fake, "POST /v1/responses")
    assert request["tools"] == [
        {"type": "function", "name": "get_weather", "description": "The weather in a city.",
         "parameters": optional_unit, "strict": False},
        {"type": "function", "name": "get_time", "parameters": None, "strict": False},
        {"type": "function", "name": "lookup", "parameters": strict_lookup, "strict": True}]


@both_engines
def test_failed_and_incomplete_model_outputs(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    assistant_id = bridge.assistant()
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    fake.enqueue({"status": "failed",
                  "error": {"code": "rate_limit_exceeded", "message": "Slow down."}})

    failed = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                      assistant_id=assistant_id, **POLL)

    assert failed.status == "failed" and failed.failed_at
    assert (failed.last_error.code, failed.last_error.message) == ("rate_limit_exceeded",
                                                                   "Slow down.")
    assert client.beta.threads.messages.list(thread_id=thread.id, run_id=failed.id).data == []

    fake.enqueue({"content": "Cut sh", "status": "incomplete"})
    cut = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                   assistant_id=assistant_id, **POLL)

    assert cut.status == "incomplete"
    assert cut.incomplete_details.reason == "max_completion_tokens"
    (reply,) = client.beta.threads.messages.list(thread_id=thread.id, run_id=cut.id).data
    assert reply.status == "incomplete" and reply.content[0].text.value == "Cut sh"


@both_engines
def test_failed_tool_output_submit_leaves_the_run_waiting(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    fake.enqueue({"function_calls": [{"name": "get_weather", "arguments": {"city": "Lima"}}]},
                 "Mild in Lima.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Lima?"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=bridge.assistant(tools=[WEATHER_TOOL]), **POLL)
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    outputs = [{"tool_call_id": call.id, "output": "mild"}]
    fake.fail_on(CONTINUE[engine], 500)

    error = status_error(lambda: client.beta.threads.runs.submit_tool_outputs(
        run_id=run.id, thread_id=thread.id, tool_outputs=outputs))

    assert error.status_code == 502
    waiting = client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert waiting.status == "requires_action"
    assert [c.id for c in waiting.required_action.submit_tool_outputs.tool_calls] == [call.id]
    done = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, tool_outputs=outputs, **POLL)
    assert done.status == "completed"
    assert [m.content[0].text.value for m in client.beta.threads.messages.list(
        thread_id=thread.id, run_id=run.id).data] == ["Mild in Lima."]


@both_engines
@pytest.mark.parametrize("state", ["running", "requires_action"])
def test_a_run_past_its_expiry_expires_and_is_stopped_upstream(start_bridge, engine, state):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    assistant_id = bridge.assistant(tools=[WEATHER_TOOL])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    if state == "running":
        fake.hold()
        run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)
    else:
        fake.enqueue({"function_calls": [{"name": "get_weather", "arguments": {}}]})
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                       assistant_id=assistant_id, **POLL)
        assert run.status == "requires_action"
    write_registry(bridge, update(Run).where(Run.id == run.id).values(expires_at=int(time.time()) - 1))

    expired = client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)

    assert expired.status == "expired" and expired.required_action is None
    assert expired.last_error.code == "server_error"
    if engine == "responses" and state == "requires_action":
        items = upstream_items(bridge, upstream_id(bridge, Thread, thread.id))
        assert [i["type"] for i in items][-2:] == ["function_call", "function_call_output"]
    else:
        assert upstream_run_status(bridge, thread.id, run.id) == "cancelled"
    fake.release()
    fake.enqueue("Again.")
    again = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                     assistant_id=assistant_id, **POLL)
    assert again.status == "completed"


@both_engines
def test_concurrent_tool_output_submits_continue_the_run_once(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    fake.enqueue({"function_calls": [{"name": "get_weather", "arguments": {"city": "Kyiv"}}]})
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Kyiv?"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=bridge.assistant(tools=[WEATHER_TOOL]), **POLL)
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    continues = fake.calls(CONTINUE[engine])

    def submit(_):
        try:
            return bridge.sdk("alice").beta.threads.runs.submit_tool_outputs(
                run_id=run.id, thread_id=thread.id,
                tool_outputs=[{"tool_call_id": call.id, "output": "cold"}]).status
        except openai.BadRequestError:
            return 400

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(submit, range(4)))

    assert sorted(answers, key=str).count(400) == 3, answers
    assert fake.calls(CONTINUE[engine]) - continues == 1
    assert client.beta.threads.runs.poll(run.id, thread_id=thread.id, **POLL).status == "completed"


# ---- 2. what polling costs upstream -----------------------------------------------------------

@both_engines
def test_poll_cost_is_one_upstream_call_per_interval(start_bridge, engine):
    # An interval long enough for twenty concurrent polls on a busy machine. One retry, as in
    # production: a keep-alive connection the fake closed while idle must not turn the
    # interval's one call into none.
    interval = 3.0
    bridge = start_bridge(engine, POLL_AFTER_MS=int(interval * 1000), OPENAI_MAX_RETRIES=1)
    fake, client = bridge.fake, bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    assistant_id = bridge.assistant()
    pollers = [bridge.sdk("alice") for _ in range(20)]

    def poll_all() -> list[str]:
        with ThreadPoolExecutor(len(pollers)) as pool:
            return list(pool.map(lambda c: c.beta.threads.runs.retrieve(
                run.id, thread_id=thread.id).status, pollers))

    fake.hold()
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)
    created = time.monotonic()
    retrieves, everything = fake.calls(RETRIEVE[engine]), total_calls(fake)

    # Within the interval that started with the run's creation: served from the registry.
    statuses = poll_all()
    assert time.monotonic() - created < interval, "the first burst outlasted the interval"
    assert set(statuses) <= {"queued", "in_progress"}
    assert (fake.calls(RETRIEVE[engine]) - retrieves, total_calls(fake) - everything) == (0, 0)

    # The next interval: twenty concurrent pollers, one upstream call.
    time.sleep(max(0.0, created + interval + 0.02 - time.monotonic()))
    burst = time.monotonic()
    statuses = poll_all()
    assert time.monotonic() - burst < interval, "the second burst outlasted the interval"
    assert set(statuses) <= {"queued", "in_progress"}
    assert fake.calls(RETRIEVE[engine]) - retrieves == 1
    assert total_calls(fake) - everything == 1

    # A finished run is never asked about again, however often it is polled or listed.
    fake.release()
    wait_for(lambda: client.beta.threads.runs.retrieve(
        run.id, thread_id=thread.id).status == "completed", timeout=5, interval=0.1)
    everything = total_calls(fake)
    statuses = poll_all()
    for _ in range(5):
        client.beta.threads.runs.list(thread_id=thread.id)
        client.beta.threads.messages.list(thread_id=thread.id)
    assert set(statuses) == {"completed"}
    assert total_calls(fake) - everything == 0


@both_engines
def test_a_failed_poll_shows_the_registry_state_and_the_next_one_asks_again(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    fake.hold()
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=bridge.assistant())
    fake.fail_on(RETRIEVE[engine], 500)
    time.sleep(0.03)  # past the 20 ms poll interval: the next poll asks upstream

    polled = client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)

    assert polled.status in ("queued", "in_progress")
    assert fake.calls(RETRIEVE[engine]) == 1
    fake.release()
    done = client.beta.threads.runs.poll(run.id, thread_id=thread.id, **POLL)
    assert done.status == "completed"


# ---- 3. retention of background responses -----------------------------------------------------

def test_run_seen_terminal_is_served_after_the_upstream_forgot_it(responses_bridge):
    bridge = responses_bridge
    fake, client = bridge.fake, bridge.sdk("alice")
    fake.enqueue({"content": "Kept.", "usage": {"input_tokens": 4, "output_tokens": 2}})
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                   assistant_id=bridge.assistant(), **POLL)
    assert run.status == "completed"
    forget(bridge, run.id)
    before = fake.calls()

    again = client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    listed = client.beta.threads.runs.list(thread_id=thread.id).data
    messages = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data

    assert again.status == "completed" and again.completed_at == run.completed_at
    assert again.usage.total_tokens == 6 and again.usage.prompt_tokens == 4
    assert [r.status for r in listed] == ["completed"]
    assert [m.content[0].text.value for m in messages] == ["Kept."]
    assert fake.calls() == before


def test_tool_outputs_are_accepted_after_the_upstream_forgot_the_response(responses_bridge):
    bridge = responses_bridge
    fake, client = bridge.fake, bridge.sdk("alice")
    fake.enqueue({"function_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
                 "Snow in Oslo.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Oslo?"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=bridge.assistant(tools=[WEATHER_TOOL]), **POLL)
    assert run.status == "requires_action"
    forget(bridge, run.id)

    (call,) = run.required_action.submit_tool_outputs.tool_calls
    done = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call.id,
                                                           "output": "snow"}], **POLL)

    assert done.status == "completed"
    reply = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data
    assert [m.content[0].text.value for m in reply] == ["Snow in Oslo."]


def test_run_forgotten_upstream_before_it_was_seen_terminal_expires(responses_bridge):
    bridge = responses_bridge
    client = bridge.sdk("alice")
    assistant_id = bridge.assistant()
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)
    assert run.status in ("queued", "in_progress")
    # The response finishes upstream and is forgotten there before anyone polls the bridge.
    wait_for(lambda: upstream_run_status(bridge, thread.id, run.id) == "completed", timeout=5)
    forget(bridge, run.id)

    polled = client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)

    assert polled.status == "expired"
    assert polled.last_error.code == "server_error" and polled.last_error.message
    assert client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data == []
    # The thread is not stuck: the next run works.
    nxt = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id,
                                                   **POLL)
    assert nxt.status == "completed"


def test_cancel_after_the_upstream_forgot_the_response_expires_the_run(responses_bridge):
    bridge = responses_bridge
    client = bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=bridge.assistant())
    wait_for(lambda: upstream_run_status(bridge, thread.id, run.id) == "completed", timeout=5)
    forget(bridge, run.id)

    try:
        answer: Any = client.beta.threads.runs.cancel(run.id, thread_id=thread.id).status
    except openai.APIStatusError as exc:
        answer = exc.status_code

    assert answer in ("expired", "cancelled", 400), f"cancel answered {answer}"
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "expired"


# ---- 4. upstream stamping, and ids ------------------------------------------------------------

@both_engines
def test_upstream_objects_carry_the_owner_and_only_our_ids_are_shown(start_bridge, engine):
    bridge = start_bridge(engine)
    alice, bob = bridge.sdk("alice"), bridge.sdk("bob")
    assistant_id = bridge.assistant()
    thread = alice.beta.threads.create(metadata={"topic": "weather"},
                                       messages=[{"role": "user", "content": "hi"}])
    bobs = bob.beta.threads.create()
    via_run = alice.beta.threads.create_and_run_poll(
        assistant_id=assistant_id, thread={"metadata": {"via": "run"},
                                           "messages": [{"role": "user", "content": "yo"}]}, **POLL)

    upstream = containers(bridge)
    assert upstream[upstream_id(bridge, Thread, thread.id)] == {"topic": "weather",
                                                                "user_id": "alice"}
    assert upstream[upstream_id(bridge, Thread, bobs.id)] == {"user_id": "bob"}
    assert upstream[upstream_id(bridge, Thread, via_run.thread_id)] == {"via": "run",
                                                                        "user_id": "alice"}
    alice.beta.threads.update(thread.id, metadata={"topic": "rain"})
    assert containers(bridge)[upstream_id(bridge, Thread, thread.id)] == {"topic": "rain",
                                                                          "user_id": "alice"}

    # Everything a client reads names our objects by our ids; no upstream id leaks.
    run = alice.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id,
                                                  **POLL)
    assert run.status == "completed"
    headers, raw = bridge.headers("alice"), bridge.app.test_client()
    bodies = [raw.get("/v1" + path, headers=headers) for path in (
        f"/threads/{thread.id}", f"/threads/{thread.id}/messages", f"/threads/{thread.id}/runs",
        f"/threads/{thread.id}/runs/{run.id}", f"/threads/{via_run.thread_id}/messages",
        f"/threads/{via_run.thread_id}/runs", "/threads", f"/assistants/{assistant_id}")]
    assert all(body.status_code == 200 for body in bodies)
    text = "\n".join(body.get_data(as_text=True) for body in bodies)
    with bridge.fake._cond:
        fake = bridge.fake
        leaked = set(fake._conversations) | set(fake._responses) | set(fake._threads) | set(
            fake._assistants)
        leaked |= {item["id"] for c in fake._conversations.values() for item in c.items}
        leaked |= {m["id"] for t in fake._threads.values() for m in t.messages}
        leaked |= {r for t in fake._threads.values() for r in t.runs}
    assert len(leaked) >= 6
    assert [upstream for upstream in leaked if upstream in text] == []
    shown = {thread.id, bobs.id, via_run.thread_id, run.id, via_run.id, assistant_id}
    for body in bodies:
        data = body.get_json().get("data", [body.get_json()])
        shown |= {obj["id"] for obj in data}
        shown |= {obj[key] for obj in data for key in ("thread_id", "run_id", "assistant_id")
                  if obj.get(key)}
    assert shown and all(OUR_ID.match(value) for value in shown), shown


# ---- 5. a failure leaves nothing behind -------------------------------------------------------

@both_engines
def test_failed_thread_create_leaves_nothing(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    fake.fail_on(CREATE_CONTAINER[engine], 500)

    error = status_error(lambda: client.beta.threads.create(metadata={"a": "b"}))

    assert error.status_code == 502 and error.code == "upstream_error"
    assert list_threads(bridge, "alice") == []
    assert containers(bridge) == {}
    assert count_rows(bridge, Thread) == 0  # not even a row left "creating"


@both_engines
@pytest.mark.parametrize("fault", ["fail", "drop"])
def test_failure_adding_the_first_messages_deletes_the_new_upstream_thread(start_bridge, engine,
                                                                            fault):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    if fault == "fail":
        fake.fail_on(ADD_MESSAGES[engine], 500)
    else:
        fake.drop_on(ADD_MESSAGES[engine])

    error = status_error(lambda: client.beta.threads.create(
        messages=[{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]))

    assert error.status_code == 502
    assert fake.calls(CREATE_CONTAINER[engine]) == 1
    assert fake.calls(DELETE_CONTAINER[engine]) == 1
    assert containers(bridge) == {}
    assert list_threads(bridge, "alice") == []
    assert count_rows(bridge, Thread) == count_rows(bridge, Message) == 0


@both_engines
def test_failed_run_start_leaves_no_run_and_the_thread_usable(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    assistant_id = bridge.assistant()
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "first"}])
    container = upstream_id(bridge, Thread, thread.id)
    fake.fail_on(START[engine], 500)

    error = status_error(lambda: client.beta.threads.runs.create(
        thread_id=thread.id, assistant_id=assistant_id,
        additional_messages=[{"role": "user", "content": "extra"}]))

    assert error.status_code == 502 and error.code == "upstream_error"
    assert client.beta.threads.runs.list(thread_id=thread.id).data == []
    assert count_rows(bridge, Run) == 0
    # The additional message went upstream before the start failed: it was taken back.
    assert [m.content[0].text.value for m in client.beta.threads.messages.list(
        thread_id=thread.id).data] == ["first"]
    assert upstream_texts(bridge, container) == ["first"]

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id,
                                                   **POLL)
    assert run.status == "completed"
    assert [r.id for r in client.beta.threads.runs.list(thread_id=thread.id).data] == [run.id]


@both_engines
def test_rate_limited_run_start_is_503_with_retry_after(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    thread = client.beta.threads.create()
    fake.fail_on(START[engine], 429, headers={"Retry-After": "7"})

    error = status_error(lambda: client.beta.threads.runs.create(
        thread_id=thread.id, assistant_id=bridge.assistant()))

    assert error.status_code == 503 and error.code == "upstream_rate_limited"
    assert error.response.headers["retry-after"] == "7"
    assert fake.calls(START[engine]) == 1  # creates are not retried
    assert client.beta.threads.runs.list(thread_id=thread.id).data == []


@both_engines
def test_run_start_timeout_is_504_and_leaves_no_run(start_bridge, engine):
    bridge = start_bridge(engine, OPENAI_TIMEOUT=0.5)
    fake, client = bridge.fake, bridge.sdk("alice")
    thread = client.beta.threads.create()
    fake.delay_on(START[engine], 10)

    started = time.monotonic()
    error = status_error(lambda: client.beta.threads.runs.create(
        thread_id=thread.id, assistant_id=bridge.assistant()))

    assert error.status_code == 504 and error.code == "upstream_timeout"
    assert time.monotonic() - started < 5  # the bridge's 0.5 s timeout, not the fake's 10 s
    fake.end_delays()
    assert client.beta.threads.runs.list(thread_id=thread.id).data == []
    assert count_rows(bridge, Run) == 0


@both_engines
def test_failed_create_and_run_leaves_no_thread(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    assistant_id = bridge.assistant()
    fake.fail_on(START[engine], 500)

    error = status_error(lambda: client.beta.threads.create_and_run(
        assistant_id=assistant_id, thread={"messages": [{"role": "user", "content": "hi"}]}))

    assert error.status_code == 502
    assert list_threads(bridge, "alice") == []
    assert containers(bridge) == {}


# ---- 6. cancel --------------------------------------------------------------------------------

@both_engines
def test_cancel_a_running_run(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    assistant_id = bridge.assistant()
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    fake.hold()
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)

    answer = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)

    assert answer.status in ("cancelling", "cancelled")
    final = client.beta.threads.runs.poll(run.id, thread_id=thread.id, **POLL)
    assert final.status == "cancelled" and final.cancelled_at
    assert upstream_run_status(bridge, thread.id, run.id) == "cancelled"
    fake.release()
    assert client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data == []
    again = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                     assistant_id=assistant_id, **POLL)
    assert again.status == "completed"


@both_engines
def test_cancel_a_run_waiting_for_tool_outputs_keeps_the_thread_usable(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    assistant_id = bridge.assistant(tools=[WEATHER_TOOL])
    fake.enqueue({"function_calls": [{"name": "get_weather", "arguments": {"city": "Rome"}}]})
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Rome?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id,
                                                   **POLL)
    assert run.status == "requires_action"
    (call,) = run.required_action.submit_tool_outputs.tool_calls

    cancelled = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)

    assert cancelled.status == "cancelled" and cancelled.required_action is None
    if engine == "responses":
        # The dangling function call got an output, or the conversation refuses every response.
        outputs = [item for item in upstream_items(bridge, upstream_id(bridge, Thread, thread.id))
                   if item["type"] == "function_call_output"]
        assert [item["call_id"] for item in outputs] == [call.id]
    else:
        assert upstream_run_status(bridge, thread.id, run.id) == "cancelled"
    fake.enqueue("Fine.")
    again = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                     assistant_id=assistant_id, **POLL)
    assert again.status == "completed"
    assert [m.content[0].text.value for m in client.beta.threads.messages.list(
        thread_id=thread.id, run_id=again.id).data] == ["Fine."]


@both_engines
def test_cancel_while_the_run_is_being_started_cancels_it_upstream(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    assistant_id = bridge.assistant()
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    fake.delay_on(START[engine], 30)  # until end_delays(): the start waits for the cancel
    fake.hold()  # and the upstream run cannot finish before the bridge gets to cancel it

    with ThreadPoolExecutor(1) as pool:
        creating = pool.submit(lambda: bridge.sdk("alice").beta.threads.runs.create(
            thread_id=thread.id, assistant_id=assistant_id))
        run_id = wait_for(lambda: [r.id for r in client.beta.threads.runs.list(
            thread_id=thread.id).data], timeout=5)[0]
        answer = client.beta.threads.runs.cancel(run_id, thread_id=thread.id)
        assert answer.status == "cancelling"
        fake.end_delays()
        created = creating.result(timeout=10)
    fake.release()

    assert created.id == run_id and created.status == "cancelled"
    final = client.beta.threads.runs.retrieve(run_id, thread_id=thread.id)
    assert final.status == "cancelled" and final.cancelled_at
    assert upstream_statuses(bridge) == ["cancelled"]


@both_engines
def test_cancel_of_a_run_that_already_finished_upstream_keeps_its_reply(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    fake.enqueue("Too late to cancel.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=bridge.assistant())
    wait_for(lambda: upstream_run_status(bridge, thread.id, run.id) == "completed", timeout=5)

    answer = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)

    assert answer.status == "completed"
    assert [m.content[0].text.value for m in client.beta.threads.messages.list(
        thread_id=thread.id, run_id=run.id).data] == ["Too late to cancel."]


@both_engines
def test_cancel_while_tool_outputs_are_being_sent_cancels_the_continuation(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    assistant_id = bridge.assistant(tools=[WEATHER_TOOL])
    fake.enqueue({"function_calls": [{"name": "get_weather", "arguments": {"city": "Riga"}}]})
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Riga?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id,
                                                   **POLL)
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    fake.hold()
    fake.delay_on(CONTINUE[engine], 30)  # until end_delays(): the continuation waits for the cancel

    with ThreadPoolExecutor(1) as pool:
        submitting = pool.submit(lambda: bridge.sdk("alice").beta.threads.runs.submit_tool_outputs(
            run_id=run.id, thread_id=thread.id,
            tool_outputs=[{"tool_call_id": call.id, "output": "grey"}]))
        wait_for(lambda: client.beta.threads.runs.retrieve(
            run.id, thread_id=thread.id).status == "queued", timeout=5)
        answer = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
        assert answer.status == "cancelling"
        fake.end_delays()
        submitted = submitting.result(timeout=10)

    assert submitted.status == "cancelled"
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "cancelled"
    # The continuation started upstream after the cancel: the starter cancelled it there.
    assert upstream_statuses(bridge) == (["cancelled", "completed"] if engine == "responses"
                                         else ["cancelled"])
    fake.release()
    again = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                     assistant_id=assistant_id, **POLL)
    assert again.status == "completed"


# ---- 7. deletes propagate ---------------------------------------------------------------------

@both_engines
def test_message_and_thread_deletes_propagate_upstream(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    fake.enqueue("Reply.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "one"},
                                                  {"role": "user", "content": "two"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                   assistant_id=bridge.assistant(), **POLL)
    container = upstream_id(bridge, Thread, thread.id)
    one, two, reply = client.beta.threads.messages.list(thread_id=thread.id, order="asc").data
    assert upstream_texts(bridge, container) == ["one", "two", "Reply."]

    client.beta.threads.messages.delete(message_id=one.id, thread_id=thread.id)
    client.beta.threads.messages.delete(message_id=reply.id, thread_id=thread.id)

    assert upstream_texts(bridge, container) == ["two"]
    assert [m.id for m in client.beta.threads.messages.list(thread_id=thread.id).data] == [two.id]
    assert run.status == "completed"

    deleted = client.beta.threads.delete(thread.id)

    assert deleted.deleted is True
    assert container not in containers(bridge)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve(thread.id)
    assert count_rows(bridge, Message) == count_rows(bridge, Run) == 0


@both_engines
def test_deleting_a_thread_stops_its_running_run_upstream(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    fake.hold()
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=bridge.assistant())
    upstream_run = upstream_id(bridge, Run, run.id)
    container = upstream_id(bridge, Thread, thread.id)

    client.beta.threads.delete(thread.id)

    assert container not in containers(bridge)
    if engine == "responses":
        with fake._cond:
            assert fake._responses[upstream_run].obj["status"] == "cancelled"
    else:
        (cancel,) = [r for r in fake.requests
                     if r["route"] == "POST /v1/threads/{id}/runs/{run_id}/cancel"]
        assert cancel["path"].endswith(f"/runs/{upstream_run}/cancel")
    assert list_threads(bridge, "alice") == []


@both_engines
def test_deletes_finish_when_the_upstream_object_is_already_gone(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "one"}])
    (message,) = client.beta.threads.messages.list(thread_id=thread.id).data
    container = upstream_id(bridge, Thread, thread.id)
    with upstream_client(fake) as other:
        if engine == "responses":
            other.conversations.items.delete(upstream_id(bridge, Message, message.id),
                                             conversation_id=container)
        else:
            other.beta.threads.messages.delete(upstream_id(bridge, Message, message.id),
                                               thread_id=container)

    assert client.beta.threads.messages.delete(message_id=message.id, thread_id=thread.id).deleted
    assert client.beta.threads.messages.list(thread_id=thread.id).data == []

    with upstream_client(fake) as other:
        if engine == "responses":
            other.conversations.delete(container)
        else:
            other.beta.threads.delete(container)
    assert client.beta.threads.delete(thread.id).deleted
    assert list_threads(bridge, "alice") == []


@both_engines
def test_metadata_changes_reach_the_upstream_or_fail_whole(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    thread = client.beta.threads.create(metadata={"v": "1"},
                                        messages=[{"role": "user", "content": "hi"}])
    container = upstream_id(bridge, Thread, thread.id)
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                   assistant_id=bridge.assistant(), **POLL)
    (message, _reply) = client.beta.threads.messages.list(thread_id=thread.id, order="asc").data

    fake.fail_on("POST /v1/conversations/{id}" if engine == "responses"
                 else "POST /v1/threads/{id}", 500)
    assert status_error(lambda: client.beta.threads.update(
        thread.id, metadata={"v": "2"})).status_code == 502
    assert client.beta.threads.retrieve(thread.id).metadata == {"v": "1", "user_id": "alice"}
    assert containers(bridge)[container] == {"v": "1", "user_id": "alice"}

    fake.fail_on(ADD_MESSAGES[engine], 500)
    assert status_error(lambda: client.beta.threads.messages.create(
        thread_id=thread.id, role="user", content="lost")).status_code == 502
    assert len(client.beta.threads.messages.list(thread_id=thread.id).data) == 2
    assert "lost" not in upstream_texts(bridge, container)

    client.beta.threads.messages.update(message.id, thread_id=thread.id, metadata={"m": "1"})
    client.beta.threads.runs.update(run.id, thread_id=thread.id, metadata={"r": "1"})
    assert client.beta.threads.messages.retrieve(message.id, thread_id=thread.id).metadata == {
        "m": "1"}
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).metadata == {"r": "1"}
    if engine == "assistants":  # conversation items and responses keep no such metadata
        with fake._cond:
            upstream_thread = fake._threads[container]
            (upstream_message,) = [m for m in upstream_thread.messages if m["role"] == "user"]
            (upstream_run,) = upstream_thread.runs.values()
            assert upstream_message["metadata"] == {"m": "1"}
            assert upstream_run.obj["metadata"] == {"r": "1"}


def test_many_messages_go_upstream_in_batches_in_order(responses_bridge):
    bridge = responses_bridge
    client = bridge.sdk("alice")
    texts = [f"message {i}" for i in range(25)]

    thread = client.beta.threads.create(messages=[{"role": "user", "content": t} for t in texts])

    assert [len(body["items"]) for body in sent(bridge.fake, ADD_MESSAGES["responses"])] == [20, 5]
    assert upstream_texts(bridge, upstream_id(bridge, Thread, thread.id)) == texts
    listed = client.beta.threads.messages.list(thread_id=thread.id, order="asc", limit=100).data
    assert [m.content[0].text.value for m in listed] == texts


# ---- 8. conflicts -----------------------------------------------------------------------------

@both_engines
def test_second_run_on_a_busy_thread_is_409_before_the_upstream(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    assistant_id = bridge.assistant()
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    fake.hold()
    first = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)

    with pytest.raises(openai.ConflictError) as second:
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)
    with pytest.raises(openai.ConflictError) as message:
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content="more")

    assert second.value.code == message.value.code == "thread_locked"
    assert fake.calls(START[engine]) == 1
    assert fake.calls(ADD_MESSAGES[engine]) == 1  # the thread's first message only
    assert [r.id for r in client.beta.threads.runs.list(thread_id=thread.id).data] == [first.id]
    fake.release()
    assert client.beta.threads.runs.poll(first.id, thread_id=thread.id,
                                         **POLL).status == "completed"


@both_engines
def test_racing_run_creates_start_one_upstream_run(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    fake.hold()

    winners = race_run_creates(bridge, thread.id, bridge.assistant(), attempts=8)

    assert len(winners) == 1
    assert fake.calls(START[engine]) == 1
    assert [r.id for r in client.beta.threads.runs.list(thread_id=thread.id).data] == winners
    fake.release()


def test_upstream_conversation_lock_is_409(responses_bridge):
    bridge = responses_bridge
    fake, client = bridge.fake, bridge.sdk("alice")
    assistant_id = bridge.assistant()
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    (conversation,) = containers(bridge)
    fake.hold()
    with upstream_client(fake) as other:  # another program on the same account
        outsider = other.responses.create(model="fake-model", conversation=conversation,
                                          background=True, input="me first")

    with pytest.raises(openai.ConflictError) as locked:
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)

    assert locked.value.status_code == 409 and locked.value.code == "thread_locked"
    assert client.beta.threads.runs.list(thread_id=thread.id).data == []
    assert count_rows(bridge, Run) == 0
    fake.release()
    with upstream_client(fake) as other:
        wait_for(lambda: other.responses.retrieve(outsider.id).status == "completed", timeout=5)
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id,
                                                   **POLL)
    assert run.status == "completed"


# ---- 9. a thread stays with the engine that made it -------------------------------------------

@pytest.mark.parametrize("maker, other", [("offline", "responses"), ("responses", "offline"),
                                          ("responses", "assistants")])
def test_writes_to_a_thread_kept_by_another_engine_are_409_reads_work(start_bridge, maker, other):
    first = start_bridge(maker)
    url = first.app.config["BRIDGE_SETTINGS"].DATABASE_URL
    assert url
    second = start_bridge(other, DATABASE_URL=url)
    owner, visitor = first.sdk("alice"), second.sdk("alice")
    assistant_id = first.assistant()
    thread = owner.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = owner.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id,
                                                  **POLL)
    assert run.status == "completed"
    fake = first.fake or second.fake
    calls_before = fake.calls()

    # Reads through the other engine's bridge work.
    assert visitor.beta.threads.retrieve(thread.id).id == thread.id
    messages = visitor.beta.threads.messages.list(thread_id=thread.id, order="asc").data
    assert [m.role for m in messages] == ["user", "assistant"]
    assert visitor.beta.threads.messages.retrieve(messages[0].id, thread_id=thread.id).id
    assert [r.id for r in visitor.beta.threads.runs.list(thread_id=thread.id).data] == [run.id]
    assert visitor.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "completed"

    # Writes are refused, each with the same 409.
    writes = [
        lambda: visitor.beta.threads.messages.create(thread_id=thread.id, role="user",
                                                     content="x"),
        lambda: visitor.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id),
        lambda: visitor.beta.threads.update(thread.id, metadata={"a": "b"}),
        lambda: visitor.beta.threads.messages.update(messages[0].id, thread_id=thread.id,
                                                     metadata={"a": "b"}),
        lambda: visitor.beta.threads.messages.delete(messages[0].id, thread_id=thread.id),
        lambda: visitor.beta.threads.runs.update(run.id, thread_id=thread.id,
                                                 metadata={"a": "b"}),
        lambda: visitor.beta.threads.delete(thread.id),
    ]
    for write in writes:
        error = status_error(write)
        assert (error.status_code, error.code) == (409, "thread_on_other_engine")

    assert fake.calls() == calls_before  # nothing was sent upstream
    assert len(owner.beta.threads.messages.list(thread_id=thread.id).data) == 2
    assert owner.beta.threads.retrieve(thread.id).metadata.get("a") is None


@pytest.mark.parametrize("maker, other", [("assistants", "responses"), ("responses", "assistants")])
def test_polling_a_run_kept_by_another_engine_leaves_it_alone(start_bridge, maker, other):
    first = start_bridge(maker)
    second = start_bridge(other, DATABASE_URL=first.app.config["BRIDGE_SETTINGS"].DATABASE_URL)
    fake, owner, visitor = first.fake, first.sdk("alice"), second.sdk("alice")
    thread = owner.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    fake.hold()
    run = owner.beta.threads.runs.create(thread_id=thread.id, assistant_id=first.assistant())
    time.sleep(0.05)  # past the poll interval: a poll may ask the upstream

    seen = visitor.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status
    visitor.beta.threads.messages.list(thread_id=thread.id)

    fake.release()
    final = owner.beta.threads.runs.poll(run.id, thread_id=thread.id, **POLL).status
    # The visitor sees the registry's state and asks no upstream; the run goes on.
    assert seen in ("queued", "in_progress") and final == "completed"
    assert fake.calls(RETRIEVE[other]) == 0


# ---- 10. the assistants engine keeps assistants upstream --------------------------------------

def upstream_assistants(fake) -> dict[str, dict[str, Any]]:
    with fake._cond:
        return copy.deepcopy(fake._assistants)


def test_assistants_are_mirrored_upstream(assistants_bridge):
    bridge = assistants_bridge
    fake, admin, client = bridge.fake, bridge.sdk("admin", admin=True), bridge.sdk("alice")

    created = admin.beta.assistants.create(model="fake-model", name="mirror",
                                           instructions="Be brief.", tools=[WEATHER_TOOL],
                                           metadata={"team": "a"})

    assert OUR_ID.match(created.id)
    ((upstream_key, upstream),) = upstream_assistants(fake).items()
    assert upstream_key != created.id
    assert (upstream["name"], upstream["model"], upstream["instructions"]) == (
        "mirror", "fake-model", "Be brief.")
    assert upstream["tools"] == [WEATHER_TOOL] and upstream["metadata"] == {"team": "a"}

    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=created.id,
                                                   **POLL)
    assert run.status == "completed" and run.assistant_id == created.id
    (started,) = sent(fake, "POST /v1/threads/{id}/runs")
    assert started["assistant_id"] == upstream_key
    assert started["instructions"] == "Be brief." and started["model"] == "fake-model"

    admin.beta.assistants.update(created.id, instructions="Be thorough.")
    mirrored = upstream_assistants(fake)
    assert list(mirrored) == [upstream_key]
    assert mirrored[upstream_key]["instructions"] == "Be thorough."

    admin.beta.assistants.delete(created.id)
    assert upstream_assistants(fake) == {}
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.retrieve(created.id)


def test_failed_upstream_assistant_create_leaves_no_assistant(assistants_bridge):
    bridge = assistants_bridge
    fake, admin = bridge.fake, bridge.sdk("admin", admin=True)
    fake.fail_on("POST /v1/assistants", 500)

    error = status_error(lambda: admin.beta.assistants.create(model="fake-model", name="broken"))

    assert error.status_code == 502
    assert admin.beta.assistants.list().data == []
    assert upstream_assistants(fake) == {}


def test_assistants_with_the_same_name_keep_separate_upstream_copies(assistants_bridge):
    bridge = assistants_bridge
    admin, client = bridge.sdk("admin", admin=True), bridge.sdk("alice")
    first = bridge.assistant(name="helper", instructions="First.")
    second = bridge.assistant(name="helper", instructions="Second.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])

    admin.beta.assistants.delete(second)

    try:
        status: Any = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=first, **POLL).status
    except openai.APIStatusError as exc:
        status = (exc.status_code, exc.code)
    assert status == "completed"
    assert len(upstream_assistants(bridge.fake)) == 1


def test_setup_command_provisions_the_assistant_upstream_once(assistants_bridge):
    bridge = assistants_bridge
    runner = bridge.app.test_cli_runner()
    command = ["setup-assistant", "--name", "support", "--model", "fake-model",
               "--instructions", "Be brief."]

    first = runner.invoke(args=command)
    again = runner.invoke(args=[*command[:-1], "Be thorough."])

    assert first.exit_code == 0 and again.exit_code == 0, (first.output, again.output)
    assert first.stdout.strip() == again.stdout.strip()  # idempotent by name, here ...
    ((upstream_key, upstream),) = upstream_assistants(bridge.fake).items()  # ... and upstream
    assert (upstream["name"], upstream["instructions"]) == ("support", "Be thorough.")
    with bridge.app.app_context():
        stored = db.session.scalar(select(Assistant).where(Assistant.name == "support"))
        assert stored.upstream_id == upstream_key and stored.id == first.stdout.strip()


def test_setup_command_adopts_an_upstream_assistant_of_the_same_name(assistants_bridge):
    # A fresh registry in front of an upstream that has the assistant already: no duplicate.
    bridge = assistants_bridge
    upstream = openai.OpenAI(base_url=bridge.fake.base_url, api_key=bridge.fake.api_key,
                             max_retries=0)
    made = upstream.beta.assistants.create(model="fake-model", name="support")
    upstream.close()

    result = bridge.app.test_cli_runner().invoke(
        args=["setup-assistant", "--name", "support", "--model", "fake-model"])

    assert result.exit_code == 0, result.output
    assert list(upstream_assistants(bridge.fake)) == [made.id]
    with bridge.app.app_context():
        stored = db.session.scalar(select(Assistant).where(Assistant.name == "support"))
        assert stored.upstream_id == made.id
