"""Run steps through the official SDK, on every engine: what each run records, and how it is served.

A reply is one `message_creation` step naming it; a round of function calls is one `tool_calls`
step, in progress (usage not shown yet) until the outputs are submitted, then completed with
them. The steps' usage adds up to the run's. A run that ends cancelled, expired or failed ends
the step it was in the same way. Steps are listed with cursors like every list, and another
user's step, or a step of another run, is a 404 like a missing one.
"""

from __future__ import annotations

import json
import re
import time

import openai
import pytest
from openai.types.beta.threads.runs import RunStep
from sqlalchemy import func, select, update

from bridge.extensions import db
from bridge.models import Run, RunStep as RunStepRow
from tests.conftest import ENGINES, wait_for

OUR_STEP_ID = re.compile(r"^step_[A-Za-z0-9]{24}$")
POLL = {"poll_interval_ms": 20}
# Engines whose runs ask for tools (the offline responder never calls any).
TOOL_ENGINES = ("chat", "responses", "assistants")
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
INCLUDE = ["step_details.tool_calls[*].file_search.results[*].content"]


# ---- helpers ----------------------------------------------------------------------------------

def script_tool_round(bridge, city: str, tokens: tuple[int, int] = (10, 3)) -> None:
    """The engine's upstream answers its next model call with one get_weather call."""
    prompt, completion = tokens
    if bridge.engine == "chat":
        bridge.fake.enqueue({"tool_calls": [{"id": f"call_{city}", "type": "function", "function": {
            "name": "get_weather", "arguments": json.dumps({"city": city})}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}})
    else:
        bridge.fake.enqueue({"function_calls": [{"name": "get_weather", "arguments": {"city": city}}],
                             "usage": {"input_tokens": prompt, "output_tokens": completion}})


def script_reply(bridge, text: str, tokens: tuple[int, int] = (20, 6)) -> None:
    """The engine's upstream answers its next model call with `text`."""
    prompt, completion = tokens
    if bridge.engine == "chat":
        bridge.fake.enqueue({"content": text, "usage": {
            "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}})
    else:
        bridge.fake.enqueue({"content": text,
                             "usage": {"input_tokens": prompt, "output_tokens": completion}})


def script_failure(bridge) -> None:
    """The engine's upstream fails its next model call."""
    if bridge.engine == "chat":
        bridge.fake.enqueue({"status": 500})
    else:
        bridge.fake.enqueue({"status": "failed",
                             "error": {"code": "server_error", "message": "Boom."}})


def steps_of(client, run) -> list[RunStep]:
    """A run's steps, oldest first, every page."""
    return list(client.beta.threads.runs.steps.list(run.id, thread_id=run.thread_id, order="asc"))


def raw_get(bridge, user: str, url: str):
    return bridge.app.test_client().get(url, headers=bridge.headers(user))


def waiting_for_weather(bridge, client, thread_id: str | None = None):
    """A run of a weather assistant that asked for one get_weather call and waits for it."""
    assistant_id = bridge.assistant(tools=[WEATHER_TOOL])
    if thread_id is None:
        thread_id = client.beta.threads.create(
            messages=[{"role": "user", "content": "Weather in Paris?"}]).id
    script_tool_round(bridge, "Paris")
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id,
                                                   **POLL)
    assert run.status == "requires_action"
    return run


def upstream_usages(bridge, run) -> list[dict[str, int] | None]:
    """The usage of each step of a run's upstream run, at the fake Assistants server."""
    with bridge.app.app_context():
        row = db.session.scalar(select(Run).where(Run.id == run.id))
        container, upstream_run = row.thread.upstream_id, row.upstream_id
        db.session.remove()
    with openai.OpenAI(base_url=bridge.fake.base_url, api_key=bridge.fake.api_key,
                       max_retries=0, timeout=10) as upstream:
        return [step.usage.to_dict() if step.usage else None for step in
                upstream.beta.threads.runs.steps.list(upstream_run, thread_id=container,
                                                      order="asc")]


def assert_usage_adds_up(bridge, steps: list[RunStep], run) -> None:
    """The steps' usage adds up to the run's; on `assistants`, each step's is its upstream copy's
    (the fake's run usage counts its last round only, its steps each their own)."""
    if bridge.engine == "assistants":
        assert [step.usage.to_dict() if step.usage else None for step in steps] == \
            upstream_usages(bridge, run)
        return
    counted = [step.usage for step in steps if step.usage is not None]
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        expected = getattr(run.usage, name) if run.usage is not None else 0
        assert sum(getattr(usage, name) for usage in counted) == expected, name


# ---- what a run records -----------------------------------------------------------------------

def test_a_reply_is_one_message_creation_step_naming_it(bridge):
    client = bridge.sdk("alice")
    assistant_id = bridge.assistant()
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hello"}])

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id,
                                                   **POLL)

    assert run.status == "completed"
    (reply,) = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data
    (step,) = steps_of(client, run)
    assert OUR_STEP_ID.match(step.id)
    assert (step.object, step.type, step.status) == ("thread.run.step", "message_creation",
                                                     "completed")
    assert (step.thread_id, step.run_id, step.assistant_id) == (thread.id, run.id, assistant_id)
    assert step.step_details.type == "message_creation"
    assert step.step_details.message_creation.message_id == reply.id
    assert step.completed_at and step.created_at <= step.completed_at
    assert (step.cancelled_at, step.failed_at, step.expired_at, step.last_error) == (None,) * 4
    assert step.usage.to_dict() == run.usage.to_dict()
    assert client.beta.threads.runs.steps.retrieve(step.id, thread_id=thread.id,
                                                   run_id=run.id) == step
    # Exactly OpenAI's object: every field the SDK knows, and nothing else.
    raw = raw_get(bridge, "alice", f"/v1/threads/{thread.id}/runs/{run.id}/steps/{step.id}")
    assert raw.status_code == 200
    assert set(raw.get_json()) == set(RunStep.model_fields)
    assert raw.get_json()["metadata"] == {}


@pytest.mark.parametrize("engine", TOOL_ENGINES)
def test_a_function_tool_round_is_a_tool_calls_step_then_the_reply(start_bridge, engine):
    bridge = start_bridge(engine)
    client = bridge.sdk("alice")
    run = waiting_for_weather(bridge, client)
    (pending,) = run.required_action.submit_tool_outputs.tool_calls

    (step,) = steps_of(client, run)

    assert (step.type, step.status, step.usage, step.completed_at) == (
        "tool_calls", "in_progress", None, None)  # OpenAI counts a step's tokens when it ends
    (call,) = step.step_details.tool_calls
    assert (call.id, call.type, call.function.name) == (pending.id, "function", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.function.output is None
    assert client.beta.threads.runs.steps.retrieve(step.id, thread_id=run.thread_id,
                                                   run_id=run.id) == step

    script_reply(bridge, "Sunny in Paris.")
    done = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=run.thread_id, **POLL,
        tool_outputs=[{"tool_call_id": pending.id, "output": '{"sky": "sunny"}'}])

    assert done.status == "completed"
    (reply,) = client.beta.threads.messages.list(thread_id=run.thread_id, run_id=run.id).data
    tools, message = steps_of(client, done)
    assert (tools.id, tools.type, tools.status) == (step.id, "tool_calls", "completed")
    assert tools.completed_at
    (call,) = tools.step_details.tool_calls
    assert (call.id, call.function.output) == (pending.id, '{"sky": "sunny"}')
    assert (message.type, message.status) == ("message_creation", "completed")
    assert message.step_details.message_creation.message_id == reply.id
    assert_usage_adds_up(bridge, [tools, message], done)
    if engine != "assistants":
        assert (tools.usage.total_tokens, message.usage.total_tokens) == (13, 26)


@pytest.mark.parametrize("engine", TOOL_ENGINES)
def test_cursors_and_order(start_bridge, engine):
    bridge = start_bridge(engine)
    client = bridge.sdk("alice")
    run = waiting_for_weather(bridge, client)
    for city in ("Oslo", "Lima"):
        script_tool_round(bridge, city)
        (call,) = run.required_action.submit_tool_outputs.tool_calls
        run = client.beta.threads.runs.submit_tool_outputs_and_poll(
            run_id=run.id, thread_id=run.thread_id, **POLL,
            tool_outputs=[{"tool_call_id": call.id, "output": "mild"}])
        assert run.status == "requires_action"
    script_reply(bridge, "Mild everywhere.")
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=run.thread_id, **POLL,
        tool_outputs=[{"tool_call_id": call.id, "output": "mild"}])
    assert run.status == "completed"
    steps = client.beta.threads.runs.steps

    oldest_first = steps_of(client, run)
    ids = [step.id for step in oldest_first]
    assert [step.type for step in oldest_first] == ["tool_calls"] * 3 + ["message_creation"]
    assert [step.status for step in oldest_first] == ["completed"] * 4
    assert_usage_adds_up(bridge, oldest_first, run)
    newest_first = steps.list(run.id, thread_id=run.thread_id)  # desc by default
    assert [step.id for step in newest_first.data] == ids[::-1]
    assert (newest_first.first_id, newest_first.last_id, newest_first.has_more) == (
        ids[-1], ids[0], False)
    page = steps.list(run.id, thread_id=run.thread_id, order="asc", limit=2, after=ids[0])
    assert ([step.id for step in page.data], page.has_more) == (ids[1:3], True)
    page = steps.list(run.id, thread_id=run.thread_id, order="asc", limit=2, before=ids[3])
    assert ([step.id for step in page.data], page.has_more) == (ids[1:3], True)
    page = steps.list(run.id, thread_id=run.thread_id, order="desc", limit=3, after=ids[3],
                      include=INCLUDE)
    assert ([step.id for step in page.data], page.has_more) == (ids[2::-1], False)
    paged = list(steps.list(run.id, thread_id=run.thread_id, order="asc", limit=1))
    assert [step.id for step in paged] == ids

    # A cursor that is not a step of this run, even one of the caller's own, is refused.
    other = client.beta.threads.create_and_run_poll(
        assistant_id=run.assistant_id, thread={"messages": [{"role": "user", "content": "hi"}]},
        **POLL)
    (foreign,) = steps_of(client, other)
    with pytest.raises(openai.BadRequestError) as caught:
        steps.list(run.id, thread_id=run.thread_id, after=foreign.id)
    assert caught.value.param == "after"


def test_include_takes_the_documented_value_and_nothing_else(offline_bridge):
    bridge = offline_bridge
    client = bridge.sdk("alice")
    run = client.beta.threads.create_and_run_poll(
        assistant_id=bridge.assistant(), thread={"messages": [{"role": "user", "content": "hi"}]},
        **POLL)
    (step,) = steps_of(client, run)
    base = f"/v1/threads/{run.thread_id}/runs/{run.id}/steps"

    for url in (base, f"{base}/{step.id}"):
        plain = raw_get(bridge, "alice", url).get_json()
        included = raw_get(bridge, "alice", f"{url}?include[]={INCLUDE[0]}")
        assert included.status_code == 200 and included.get_json() == plain
        refused = raw_get(bridge, "alice", f"{url}?include[]={INCLUDE[0]}&include[]=bogus")
        assert refused.status_code == 400
        assert refused.get_json()["error"]["param"] == "include[].1"


# ---- how a run's end ends its steps -----------------------------------------------------------

@pytest.mark.parametrize("engine", TOOL_ENGINES)
def test_a_cancelled_run_leaves_its_tool_calls_step_cancelled(start_bridge, engine):
    bridge = start_bridge(engine)
    client = bridge.sdk("alice")
    run = waiting_for_weather(bridge, client)

    cancelled = client.beta.threads.runs.cancel(run.id, thread_id=run.thread_id)

    assert cancelled.status == "cancelled"
    (step,) = steps_of(client, run)
    assert (step.type, step.status) == ("tool_calls", "cancelled")
    assert step.cancelled_at and step.completed_at is None
    assert step.step_details.tool_calls[0].function.output is None
    assert_usage_adds_up(bridge, [step],
                         client.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id))


@pytest.mark.parametrize("engine", TOOL_ENGINES)
def test_an_expired_run_leaves_its_tool_calls_step_expired(start_bridge, engine):
    # The registry engines expire runs in the sweeper, the upstream ones when polled, too.
    bridge = start_bridge(engine, RUN_SWEEP_SECONDS=0.05)
    client = bridge.sdk("alice")
    run = waiting_for_weather(bridge, client)
    with bridge.app.app_context():
        db.session.execute(update(Run).where(Run.id == run.id)
                           .values(expires_at=int(time.time()) - 1))
        db.session.commit()
        db.session.remove()

    expired = wait_for(lambda: (r := client.beta.threads.runs.retrieve(
        run.id, thread_id=run.thread_id)).status == "expired" and r)

    (step,) = steps_of(client, expired)
    assert (step.type, step.status) == ("tool_calls", "expired")
    assert step.expired_at and step.completed_at is None and step.cancelled_at is None


@pytest.mark.parametrize("engine", TOOL_ENGINES)
def test_a_run_failing_after_a_tool_round_keeps_that_round_and_leaves_nothing_open(
        start_bridge, engine):
    bridge = start_bridge(engine)
    client = bridge.sdk("alice")
    run = waiting_for_weather(bridge, client)
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    script_failure(bridge)

    failed = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=run.thread_id, **POLL,
        tool_outputs=[{"tool_call_id": call.id, "output": "sunny"}])

    assert failed.status == "failed"
    (step,) = steps_of(client, failed)  # the failed model call wrote nothing
    assert (step.type, step.status) == ("tool_calls", "completed")
    assert step.step_details.tool_calls[0].function.output == "sunny"


@pytest.mark.parametrize("ending", ["fails", "is cancelled"])
def test_a_step_open_while_its_run_executes_ends_with_the_run(chat_bridge, ending):
    # Today's responders answer whole, so their steps open and end at once; one that streams
    # opens its step first. Whatever ends the run ends that step the same way.
    bridge = chat_bridge
    client = bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    if ending == "fails":
        bridge.fake.enqueue({"status": 500})
    bridge.fake.hold()
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=bridge.assistant())
    bridge.fake.wait_for_requests(1)
    with bridge.app.app_context():
        row = db.session.scalar(select(Run).where(Run.id == run.id))
        db.session.add(RunStepRow(id="step_" + "o" * 24, run_pk=row.pk, thread_pk=row.thread_pk,
                                  assistant_id=row.assistant_id, type="message_creation",
                                  status="in_progress", usage=None, step_details={
                                      "type": "message_creation",
                                      "message_creation": {"message_id": "msg_" + "o" * 24}}))
        db.session.commit()
        db.session.remove()
    if ending == "is cancelled":
        client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    bridge.fake.release()

    final = client.beta.threads.runs.poll(run.id, thread_id=thread.id, **POLL)

    (step,) = steps_of(client, final)
    if ending == "fails":
        assert final.status == "failed"
        assert (step.status, step.last_error.code) == ("failed", "server_error")
        assert step.failed_at and step.last_error.message == final.last_error.message
    else:
        assert final.status == "cancelled"
        assert (step.status, step.last_error) == ("cancelled", None)
        assert step.cancelled_at


# ---- isolation ----------------------------------------------------------------------------------

def _not_found(call) -> tuple[int, str | None, bytes]:
    with pytest.raises(openai.NotFoundError) as caught:
        call()
    return caught.value.status_code, caught.value.param, caught.value.response.content


def test_another_users_step_and_another_runs_step_are_404_like_a_missing_one(bridge):
    alice, bob = bridge.sdk("alice"), bridge.sdk("bob")
    assistant_id = bridge.assistant()
    thread = alice.beta.threads.create(messages=[{"role": "user", "content": "one"}])
    first = alice.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id,
                                                    **POLL)
    alice.beta.threads.messages.create(thread.id, role="user", content="two")
    second = alice.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                     assistant_id=assistant_id, **POLL)
    (first_step,) = steps_of(alice, first)
    bobs = bob.beta.threads.create_and_run_poll(
        assistant_id=assistant_id, thread={"messages": [{"role": "user", "content": "bob"}]},
        **POLL)
    missing = "step_" + "Z" * 24

    def answer(client, thread_id, run_id, step_id):
        status, param, body = _not_found(lambda: client.beta.threads.runs.steps.retrieve(
            step_id, thread_id=thread_id, run_id=run_id))
        return status, param, body.replace(step_id.encode(), b"<ID>")

    expected = answer(alice, thread.id, second.id, missing)
    assert expected[:2] == (404, "step_id")
    # A step of the same user's other run, in the same thread.
    assert answer(alice, thread.id, second.id, first_step.id) == expected
    # Alice's step under Bob's own thread and run.
    assert answer(bob, bobs.thread_id, bobs.id, first_step.id) == expected
    # Alice's run under Bob's thread: the run is what is not found.
    status, param, _ = _not_found(lambda: bob.beta.threads.runs.steps.list(
        first.id, thread_id=bobs.thread_id))
    assert (status, param) == (404, "run_id")
    assert [step.id for step in steps_of(alice, first)] == [first_step.id]


def test_steps_go_with_their_thread(bridge):
    client = bridge.sdk("alice")
    run = client.beta.threads.create_and_run_poll(
        assistant_id=bridge.assistant(), thread={"messages": [{"role": "user", "content": "hi"}]},
        **POLL)
    assert len(steps_of(client, run)) == 1

    client.beta.threads.delete(run.thread_id)

    with bridge.app.app_context():
        left = db.session.scalar(select(func.count()).select_from(RunStepRow))
        db.session.remove()
    assert left == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_a_run_still_executing_has_no_steps_yet(start_bridge, engine):
    if engine == "offline":
        bridge = start_bridge(engine, OFFLINE_REPLY_DELAY=30)
    else:
        bridge = start_bridge(engine)
        bridge.fake.hold()
    client = bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=bridge.assistant())

    page = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)

    assert (page.data, page.first_id, page.last_id, page.has_more) == ([], None, None, False)
    client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    if bridge.fake is not None:
        bridge.fake.release()
