"""Run lifecycle through the official SDK, on every engine (the `bridge` fixture runs each test on all four)."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from sqlalchemy import update

from bridge.extensions import db
from bridge.models import ACTIVE_RUN_STATUSES, Run
from tests.conftest import ENGINES, race_run_creates, wait_for


def test_create_and_poll_completes_with_reply(bridge):
    client = bridge.sdk("alice")
    assistant_id = bridge.assistant()
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hello there"}])

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id,
                                                   poll_interval_ms=20)

    assert run.status == "completed"
    assert run.thread_id == thread.id and run.assistant_id == assistant_id
    assert run.started_at and run.completed_at and run.usage.total_tokens > 0
    messages = client.beta.threads.messages.list(thread_id=thread.id, order="asc").data
    assert [m.role for m in messages] == ["user", "assistant"]
    reply = messages[1]
    assert reply.run_id == run.id and reply.assistant_id == assistant_id
    assert "hello there" in reply.content[0].text.value
    only_run = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data
    assert [m.id for m in only_run] == [reply.id]


def test_chat_engine_sends_instructions_and_thread(chat_bridge):
    bridge = chat_bridge
    client = bridge.sdk("alice")
    assistant_id = bridge.assistant(instructions="Answer in French.", model="fake-model")
    bridge.fake.enqueue({"content": "Bonjour", "usage": {"prompt_tokens": 7, "completion_tokens": 1,
                                                         "total_tokens": 8}})
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Hi"}])

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id,
                                                   temperature=0.5, poll_interval_ms=20)

    assert run.status == "completed"
    assert run.usage.prompt_tokens == 7 and run.usage.total_tokens == 8
    sent = bridge.fake.requests[-1]["json"]
    assert sent["model"] == "fake-model" and sent["temperature"] == 0.5
    assert sent["messages"] == [{"role": "system", "content": "Answer in French."},
                                {"role": "user", "content": "Hi"}]
    reply = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert reply.content[0].text.value == "Bonjour"


def _slow_bridge(start_bridge, engine: str = "offline", **settings):
    """A bridge whose runs stay in progress until cancelled."""
    if engine == "offline":
        # The offline responder waits this long unless the run is cancelled first.
        return start_bridge("offline", OFFLINE_REPLY_DELAY=30, **settings)
    bridge = start_bridge(engine, **settings)
    bridge.fake.hold()  # the fake upstream keeps every answer in progress
    return bridge


def test_run_is_queued_at_once_then_completes(bridge):
    client = bridge.sdk("alice")
    assistant_id = bridge.assistant()
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])

    response = client.beta.threads.runs.with_raw_response.create(thread_id=thread.id,
                                                                 assistant_id=assistant_id)
    run = response.parse()

    assert run.status == "queued" and run.started_at is None and run.usage is None
    assert int(response.headers["openai-poll-after-ms"]) == 20
    done = wait_for(lambda: (r := client.beta.threads.runs.retrieve(
        run.id, thread_id=thread.id)).status == "completed" and r)
    assert done.completed_at >= done.started_at >= done.created_at


def test_finished_run_poll_has_no_poll_hint(bridge):
    client = bridge.sdk("alice")
    run = client.beta.threads.create_and_run_poll(
        assistant_id=bridge.assistant(), poll_interval_ms=20,
        thread={"messages": [{"role": "user", "content": "hi"}]})
    response = client.beta.threads.runs.with_raw_response.retrieve(run.id, thread_id=run.thread_id)
    assert response.parse().status == "completed"
    assert "openai-poll-after-ms" not in response.headers


@pytest.mark.parametrize("engine", ENGINES)
def test_cancel_stops_a_run_in_flight(start_bridge, engine):
    bridge = _slow_bridge(start_bridge, engine)
    client = bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=bridge.assistant())
    wait_for(lambda: client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status
             == "in_progress")

    cancelled = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert cancelled.status in ("cancelling", "cancelled")
    final = client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=20)

    assert final.status == "cancelled" and final.cancelled_at is not None
    assert final.completed_at is None and final.usage is None
    # No reply was stored, and the thread is free for the next run.
    assert [m.role for m in client.beta.threads.messages.list(thread_id=thread.id)] == ["user"]
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="again")


def test_cancel_chat_run_while_upstream_is_answering(chat_bridge):
    bridge = chat_bridge
    client = bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    bridge.fake.hold()
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=bridge.assistant())
    bridge.fake.wait_for_requests(1)

    client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    final = client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=20)
    bridge.fake.release()

    assert final.status == "cancelled"
    assert [m.role for m in client.beta.threads.messages.list(thread_id=thread.id)] == ["user"]


def test_expires_at_is_shown_only_while_a_run_can_still_expire(bridge):
    client = bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])

    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=bridge.assistant())

    assert run.status == "queued" and run.expires_at == run.created_at + 600
    done = client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=20)
    assert done.status == "completed" and done.expires_at is None
    assert [(r.id, r.expires_at) for r in client.beta.threads.runs.list(thread.id)] == \
        [(run.id, None)]


@pytest.mark.parametrize("engine", ENGINES)
def test_cancelled_and_expired_runs_have_no_expires_at(start_bridge, engine):
    bridge = _slow_bridge(start_bridge, engine, RUN_SWEEP_SECONDS=0.05)
    client = bridge.sdk("alice")
    assistant_id = bridge.assistant()
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    first = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)
    assert first.expires_at == first.created_at + 600

    client.beta.threads.runs.cancel(first.id, thread_id=thread.id)
    cancelled = client.beta.threads.runs.poll(first.id, thread_id=thread.id, poll_interval_ms=20)

    assert cancelled.status == "cancelled" and cancelled.expires_at is None
    second = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)
    with bridge.app.app_context():
        db.session.execute(update(Run).where(Run.id == second.id)
                           .values(expires_at=int(time.time()) - 1))
        db.session.commit()
        db.session.remove()
    expired = wait_for(lambda: (r := client.beta.threads.runs.retrieve(
        second.id, thread_id=thread.id)).status == "expired" and r)
    assert expired.expires_at is None
    assert [r.expires_at for r in client.beta.threads.runs.list(thread.id)] == [None, None]


def test_cancel_finished_run_is_refused(bridge):
    client = bridge.sdk("alice")
    run = client.beta.threads.create_and_run_poll(
        assistant_id=bridge.assistant(), poll_interval_ms=20,
        thread={"messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.threads.runs.cancel(run.id, thread_id=run.thread_id)
    assert "completed" in caught.value.message


@pytest.mark.parametrize("engine", ENGINES)
def test_one_active_run_per_thread(start_bridge, engine):
    bridge = _slow_bridge(start_bridge, engine)
    client = bridge.sdk("alice")
    assistant_id = bridge.assistant()
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    first = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)

    with pytest.raises(openai.ConflictError) as second:
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)
    assert "already has an active run" in second.value.message
    with pytest.raises(openai.ConflictError):
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content="more")

    client.beta.threads.runs.cancel(first.id, thread_id=thread.id)
    client.beta.threads.runs.poll(first.id, thread_id=thread.id, poll_interval_ms=20)
    again = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)
    assert again.id != first.id
    client.beta.threads.runs.cancel(again.id, thread_id=thread.id)


@pytest.mark.parametrize("engine", ENGINES)
def test_concurrent_run_creates_yield_exactly_one(start_bridge, engine):
    bridge = _slow_bridge(start_bridge, engine)
    client = bridge.sdk("alice")
    thread = client.beta.threads.create()

    winners = race_run_creates(bridge, thread.id, bridge.assistant(), attempts=8)

    assert len(winners) == 1
    assert [r.id for r in client.beta.threads.runs.list(thread_id=thread.id)] == winners
    client.beta.threads.runs.cancel(winners[0], thread_id=thread.id)


def test_run_overrides_and_additional_messages(bridge):
    client = bridge.sdk("alice")
    assistant_id = bridge.assistant(instructions="Base.", model="model-a")
    thread = client.beta.threads.create()

    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant_id, model="model-b",
        additional_instructions="Also this.", metadata={"k": "v"}, poll_interval_ms=20,
        additional_messages=[{"role": "user", "content": "from additional"}])

    assert run.model == "model-b" and run.instructions == "Base.\n\nAlso this."
    assert run.metadata == {"k": "v"}
    texts = [m.content[0].text.value for m in client.beta.threads.messages.list(
        thread_id=thread.id, order="asc")]
    assert texts[0] == "from additional" and "from additional" in texts[1]
    updated = client.beta.threads.runs.update(run.id, thread_id=thread.id, metadata={"k": "w"})
    assert updated.metadata == {"k": "w"}


@pytest.mark.parametrize("reply, code", [
    ({"status": 500}, "server_error"),
    ({"status": 429, "headers": {"retry-after": "3"}}, "rate_limit_exceeded"),
    ({"status": 401}, "server_error"),
    ({"drop": True}, "server_error"),
])
def test_chat_upstream_failure_fails_the_run(chat_bridge, reply, code):
    bridge = chat_bridge
    client = bridge.sdk("alice")
    bridge.fake.enqueue(reply)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                   assistant_id=bridge.assistant(),
                                                   poll_interval_ms=20)

    assert run.status == "failed" and run.failed_at is not None
    assert run.last_error.code == code
    # The provider's words and the bridge's key never reach the client.
    assert "test-upstream-key" not in run.last_error.message
    assert len(bridge.fake.requests) == 1, "a failed completion is not resent"


def test_chat_upstream_timeout_fails_the_run(start_bridge, fake_chat):
    bridge = start_bridge("chat", OPENAI_TIMEOUT=0.3)
    fake_chat.enqueue({"delay": 1.0, "content": "late"})
    client = bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                   assistant_id=bridge.assistant(),
                                                   poll_interval_ms=20)
    assert run.status == "failed" and "in time" in run.last_error.message


def test_length_cut_reply_makes_run_incomplete(chat_bridge):
    bridge = chat_bridge
    client = bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    bridge.fake.enqueue({"content": "partial", "finish_reason": "length"})

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                   assistant_id=bridge.assistant(),
                                                   max_completion_tokens=16, poll_interval_ms=20)

    assert bridge.fake.requests[-1]["json"]["max_completion_tokens"] == 16
    assert run.status == "incomplete"
    assert run.incomplete_details.reason == "max_completion_tokens"
    reply = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert reply.status == "incomplete" and reply.content[0].text.value == "partial"


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def _tool_call(call_id: str, city: str) -> dict:
    return {"id": call_id, "type": "function",
            "function": {"name": "get_weather", "arguments": f'{{"city": "{city}"}}'}}


def test_chat_function_tool_round_trip(chat_bridge):
    bridge = chat_bridge
    client = bridge.sdk("alice")
    assistant_id = bridge.assistant(tools=[WEATHER_TOOL])
    bridge.fake.enqueue(
        {"tool_calls": [_tool_call("call_1", "Paris"), _tool_call("call_2", "Oslo")],
         "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}},
        {"content": "Sunny in Paris, snow in Oslo.",
         "usage": {"prompt_tokens": 30, "completion_tokens": 8, "total_tokens": 38}})
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Weather?"}])

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id,
                                                   poll_interval_ms=20)

    assert run.status == "requires_action"
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [(c.id, c.function.name) for c in calls] == [("call_1", "get_weather"),
                                                        ("call_2", "get_weather")]
    assert bridge.fake.requests[0]["json"]["tools"] == [WEATHER_TOOL]

    done = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, poll_interval_ms=20,
        tool_outputs=[{"tool_call_id": "call_1", "output": "sunny"},
                      {"tool_call_id": "call_2", "output": "snow"}])

    assert done.status == "completed" and done.required_action is None
    assert done.usage.total_tokens == 15 + 38
    replayed = bridge.fake.requests[1]["json"]["messages"]
    assert replayed[-3]["tool_calls"][0]["id"] == "call_1"
    assert replayed[-2:] == [{"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                             {"role": "tool", "tool_call_id": "call_2", "content": "snow"}]
    reply = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert reply.run_id == run.id and reply.content[0].text.value == "Sunny in Paris, snow in Oslo."


def test_tool_outputs_must_answer_every_pending_call(chat_bridge):
    bridge = chat_bridge
    client = bridge.sdk("alice")
    bridge.fake.enqueue({"tool_calls": [_tool_call("call_1", "Paris"),
                                        _tool_call("call_2", "Oslo")]})
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Weather?"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=bridge.assistant(tools=[WEATHER_TOOL]),
        poll_interval_ms=20)

    for outputs in ([{"tool_call_id": "call_1", "output": "x"}],
                    [{"tool_call_id": "call_1", "output": "x"},
                     {"tool_call_id": "call_9", "output": "y"}]):
        with pytest.raises(openai.BadRequestError) as caught:
            client.beta.threads.runs.submit_tool_outputs(run.id, thread_id=thread.id,
                                                         tool_outputs=outputs)
        assert caught.value.param == "tool_outputs"
    # A run waiting for tool outputs still holds the thread, and can be cancelled.
    with pytest.raises(openai.ConflictError):
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=run.assistant_id)
    assert client.beta.threads.runs.cancel(run.id, thread_id=thread.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_1", "output": "x"},
                                                       {"tool_call_id": "call_2", "output": "y"}])


# Engines whose runs can stop in `requires_action` (the offline responder never calls tools).
TOOL_ENGINES = ("chat", "responses", "assistants")


def _script_weather_call(bridge) -> None:
    """The engine's upstream answers the next run with one get_weather call."""
    if bridge.engine == "chat":
        bridge.fake.enqueue({"tool_calls": [_tool_call("call_1", "Paris")]})
    else:
        bridge.fake.enqueue({"function_calls": [{"name": "get_weather",
                                                 "arguments": {"city": "Paris"}}]})


@pytest.mark.parametrize("engine", TOOL_ENGINES)
def test_a_cancelled_run_that_waited_for_tool_outputs_has_no_required_action(start_bridge, engine):
    bridge = start_bridge(engine)
    client = bridge.sdk("alice")
    _script_weather_call(bridge)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Weather?"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=bridge.assistant(tools=[WEATHER_TOOL]),
        poll_interval_ms=20)
    assert run.status == "requires_action" and run.required_action is not None
    assert run.expires_at == run.created_at + 600  # a run waiting for outputs can still expire

    cancelled = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)

    assert cancelled.status == "cancelled" and cancelled.required_action is None
    assert cancelled.expires_at is None
    shown = client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert shown.status == "cancelled" and shown.required_action is None
    assert [(r.id, r.required_action) for r in client.beta.threads.runs.list(thread.id)] == \
        [(run.id, None)]


def test_full_executor_refuses_new_runs_with_503(start_bridge):
    bridge = start_bridge("offline", OFFLINE_REPLY_DELAY=30, RUN_WORKERS=1, RUN_QUEUE_LIMIT=1)
    client = bridge.sdk("alice")
    assistant_id = bridge.assistant()
    threads = [client.beta.threads.create().id for _ in range(3)]
    accepted = [client.beta.threads.runs.create(thread_id=t, assistant_id=assistant_id)
                for t in threads[:2]]

    response = bridge.app.test_client().post(
        f"/v1/threads/{threads[2]}/runs", json={"assistant_id": assistant_id},
        headers=bridge.headers("alice"))

    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "engine_overloaded"
    assert response.headers["Retry-After"] == "2"
    assert client.beta.threads.runs.list(thread_id=threads[2]).data == []
    for run in accepted:
        client.beta.threads.runs.cancel(run.id, thread_id=run.thread_id)
    for run in accepted:
        assert client.beta.threads.runs.poll(run.id, thread_id=run.thread_id,
                                             poll_interval_ms=20).status == "cancelled"


# ---- status and reply become visible together --------------------------------------------------


def _replies(client, thread_id: str) -> Counter:
    """How many replies each run has in the thread's message list."""
    page = client.beta.threads.messages.list(thread_id, order="asc", limit=100)
    return Counter(m.run_id for m in page.data if m.role == "assistant")


def _statuses(client, thread_id: str) -> dict[str, str]:
    return {r.id: r.status for r in client.beta.threads.runs.list(thread_id, limit=100).data}


@pytest.mark.parametrize("engine", ENGINES)
def test_a_run_seen_completed_always_has_its_reply_listed(start_bridge, engine):
    # Runs are settled by whoever gets there first: a poll, a list, the sweeper (every 20 ms) or
    # the executor. Whichever it is, status, reply and step commit together, so a client never
    # sees a completed run without its reply and the step naming it; it may see the reply while a
    # listing taken before still showed the run active.
    bridge = start_bridge(engine, RUN_SWEEP_SECONDS=0.02, POLL_AFTER_MS=10,
                          OFFLINE_REPLY_DELAY=0.05 if engine == "offline" else 0,
                          RATE_LIMIT_READS="", RATE_LIMIT_WRITES="", RATE_LIMIT_RUNS="")
    assistant_id = bridge.assistant()
    users, rounds = [f"user{n}" for n in range(4)], 4
    problems: list[str] = []
    windows = Counter()  # orders of listing in which one listing is older than the other: allowed
    stop = threading.Event()

    def poll_runs(user: str, thread_id: str) -> None:
        client, pace = bridge.sdk(user), random.Random(user)
        for _ in range(rounds):
            run = client.beta.threads.runs.create(thread_id=thread_id, assistant_id=assistant_id)
            deadline = time.monotonic() + 20
            while run.status in ACTIVE_RUN_STATUSES:
                assert time.monotonic() < deadline, f"{run.id} still {run.status}"
                # Uneven polling, so that the sweeper or a list often settles the run first.
                time.sleep(pace.choice((0, 0.005, 0.03, 0.06)))
                run = client.beta.threads.runs.retrieve(run.id, thread_id=thread_id)
            replies = client.beta.threads.messages.list(thread_id, run_id=run.id).data
            if run.status != "completed" or [m.role for m in replies] != ["assistant"]:
                problems.append(f"{run.id} polled {run.status}, run's replies {len(replies)}")
            steps = client.beta.threads.runs.steps.list(run.id, thread_id=thread_id).data
            named = [s.step_details.message_creation.message_id for s in steps
                     if s.type == "message_creation" and s.status == "completed"]
            if named != [m.id for m in replies][:1] or len(steps) != 1:
                problems.append(f"{run.id} polled {run.status}, steps {[s.type for s in steps]}")
            if _replies(client, thread_id)[run.id] != 1:
                problems.append(f"{run.id} polled {run.status}, not listed once in the thread")

    def list_both_ways(user: str, thread_id: str) -> None:
        client = bridge.sdk(user)
        while not stop.is_set():
            statuses, replies = _statuses(client, thread_id), _replies(client, thread_id)
            for run_id, status in statuses.items():
                if status == "completed" and replies[run_id] != 1:
                    problems.append(f"{run_id} listed completed, then {replies[run_id]} replies")
                active = status in ACTIVE_RUN_STATUSES
                windows["active, then its reply"] += active and replies[run_id] == 1
            replies, statuses = _replies(client, thread_id), _statuses(client, thread_id)
            for run_id, count in replies.items():
                if count and statuses.get(run_id) in ACTIVE_RUN_STATUSES:
                    problems.append(f"{run_id} replied, then listed {statuses[run_id]}")
            windows["no reply, then completed"] += sum(
                status == "completed" and not replies[run_id]
                for run_id, status in statuses.items())

    threads = {user: bridge.sdk(user).beta.threads.create(
        messages=[{"role": "user", "content": f"hello from {user}"}]).id for user in users}
    with ThreadPoolExecutor(2 * len(users)) as pool:
        listers = [pool.submit(list_both_ways, user, threads[user]) for user in users]
        try:
            for poller in [pool.submit(poll_runs, user, threads[user]) for user in users]:
                poller.result()
        finally:
            stop.set()
        for lister in listers:
            lister.result()

    assert problems == [], (problems, windows)
    for user, thread_id in threads.items():
        client = bridge.sdk(user)
        statuses, replies = _statuses(client, thread_id), _replies(client, thread_id)
        assert sorted(statuses.values()) == ["completed"] * rounds
        assert {run_id: replies[run_id] for run_id in statuses} == dict.fromkeys(statuses, 1)
