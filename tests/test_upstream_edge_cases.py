"""Edge cases of the upstream engines: races with cancel and delete, dangling tool calls, lost
upstream objects, moved runs, and the Responses vocabulary mapped onto the Assistants one."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from sqlalchemy import select, update

from bridge.engines.base import UpstreamUnavailable
from bridge.engines.responses import snapshot_of
from bridge.extensions import db
from bridge.models import Run
from tests.conftest import wait_for
from tests.test_upstream_engines import (POLL, START, WEATHER_TOOL, forget,
                                         upstream_client, upstream_id, upstream_run_status,
                                         write_registry)

CALL = {"function_calls": [{"name": "get_weather", "arguments": {"city": "Lima"}}]}


def test_expired_run_that_asked_for_tools_leaves_the_conversation_usable(responses_bridge):
    bridge = responses_bridge
    fake, client = bridge.fake, bridge.sdk("alice")
    assistant_id = bridge.assistant(tools=[WEATHER_TOOL])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Lima?"}])
    fake.enqueue(CALL)
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)
    # The client goes away; the response asks for the tool upstream; nobody polls for 10 minutes.
    wait_for(lambda: upstream_run_status(bridge, thread.id, run.id) == "completed", timeout=5)
    write_registry(bridge, update(Run).where(Run.id == run.id)
                   .values(expires_at=int(time.time()) - 1))

    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "expired"

    fake.enqueue("Again.")
    again = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                     assistant_id=assistant_id, **POLL)
    assert again.status == "completed"


def test_forgotten_response_that_asked_for_tools_leaves_the_conversation_usable(responses_bridge):
    bridge = responses_bridge
    fake, client = bridge.fake, bridge.sdk("alice")
    assistant_id = bridge.assistant(tools=[WEATHER_TOOL])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Lima?"}])
    fake.enqueue(CALL)
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)
    wait_for(lambda: upstream_run_status(bridge, thread.id, run.id) == "completed", timeout=5)
    forget(bridge, run.id)
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "expired"

    fake.enqueue("Again.")
    again = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                     assistant_id=assistant_id, **POLL)
    assert again.status == "completed"


@pytest.mark.parametrize("engine", ["responses", "assistants"])
def test_cancel_during_a_failing_tool_output_submit_ends_cancelled(start_bridge, engine,
                                                                        monkeypatch):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    assistant_id = bridge.assistant(tools=[WEATHER_TOOL])
    fake.enqueue(CALL)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Lima?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id,
                                                   **POLL)
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    cancelled = threading.Event()
    kind = type(bridge.app.extensions["bridge.engine"])

    def slow_failing_continue(self, *args, **kwargs):
        cancelled.wait(5)  # the upstream takes a while, then answers 5xx
        raise UpstreamUnavailable("injected: 503 after a delay")

    monkeypatch.setattr(kind, "_continue", slow_failing_continue)
    with ThreadPoolExecutor(1) as pool:
        submitting = pool.submit(lambda: bridge.sdk("alice").beta.threads.runs.submit_tool_outputs(
            run_id=run.id, thread_id=thread.id,
            tool_outputs=[{"tool_call_id": call.id, "output": "warm"}]))
        wait_for(lambda: client.beta.threads.runs.retrieve(
            run.id, thread_id=thread.id).status == "queued", timeout=5)
        assert client.beta.threads.runs.cancel(run.id, thread_id=thread.id).status == "cancelling"
        cancelled.set()
        with pytest.raises(openai.APIStatusError):
            submitting.result(timeout=10)
    monkeypatch.undo()

    time.sleep(0.2)
    final = client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert final.status not in ("cancelling", "queued"), final.status
    fake.enqueue("Again.")
    again = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                     assistant_id=assistant_id, **POLL)
    assert again.status == "completed"


@pytest.mark.parametrize("engine", ["responses", "assistants"])
def test_cancel_racing_the_link_of_a_started_run_is_kept(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    assistant_id = bridge.assistant()
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    fake.delay_on(START[engine], 30)  # until end_delays(): the start waits for the test
    engine_ = bridge.app.extensions["bridge.engine"]

    with ThreadPoolExecutor(1) as pool:
        creating = pool.submit(lambda: bridge.sdk("alice").beta.threads.runs.create(
            thread_id=thread.id, assistant_id=assistant_id))
        run_id = wait_for(lambda: [r.id for r in client.beta.threads.runs.list(
            thread_id=thread.id).data], timeout=5)[0]
        with bridge.app.app_context():
            # The cancel request reads the run while it is still being started...
            run = db.session.scalar(select(Run).where(Run.id == run_id))
            assert run.status == "queued" and run.upstream_id is None
            # ...and the starter links it upstream before the cancel writes.
            fake.end_delays()
            assert creating.result(timeout=10).status == "queued"
            answer = engine_.cancel_run(run).status
            db.session.remove()

    # The cancel reached what the run was linked to: the client is never told "cancelling" for a
    # run that then completes. (It may have completed upstream before the cancel arrived.)
    final = client.beta.threads.runs.poll(run_id, thread_id=thread.id, **POLL)
    assert (answer, final.status) in (("cancelling", "cancelled"), ("cancelled", "cancelled"),
                                      ("completed", "completed"))


def test_cancel_of_a_run_that_already_asked_for_tools_upstream(responses_bridge):
    bridge = responses_bridge
    fake, client = bridge.fake, bridge.sdk("alice")
    assistant_id = bridge.assistant(tools=[WEATHER_TOOL])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Lima?"}])
    fake.enqueue(CALL)
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)
    wait_for(lambda: upstream_run_status(bridge, thread.id, run.id) == "completed", timeout=5)

    answer = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)

    assert answer.status in ("cancelling", "cancelled"), answer.status


def test_modify_an_old_run_after_moving_to_assistants(start_bridge):
    source = start_bridge("responses")
    assistant_id = source.assistant()
    alice = source.sdk("alice")
    thread = alice.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = alice.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id,
                                                  **POLL)
    assert run.status == "completed"
    target = start_bridge("assistants",
                          DATABASE_URL=source.app.config["BRIDGE_SETTINGS"].DATABASE_URL)
    result = target.app.test_cli_runner().invoke(
        args=["migrate-threads", "--to", "assistants", "--from", "responses"])
    assert result.exit_code == 0, result.output

    modified = target.sdk("alice").beta.threads.runs.update(run.id, thread_id=thread.id,
                                                            metadata={"k": "v"})
    assert modified.metadata == {"k": "v"}


def test_an_assistant_deleted_upstream_is_made_anew(assistants_bridge):
    bridge = assistants_bridge
    client = bridge.sdk("alice")
    from bridge.models import Assistant

    assistant_id = bridge.assistant()
    with upstream_client(bridge.fake) as upstream:
        upstream.beta.assistants.delete(upstream_id(bridge, Assistant, assistant_id))
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id,
                                                   **POLL)
    assert run.status == "completed"


def test_incomplete_reasons_stay_in_the_assistants_vocabulary():
    cut = snapshot_of({"id": "resp_1", "status": "incomplete", "output": [],
                       "incomplete_details": {"reason": "max_output_tokens"}})
    filtered = snapshot_of({"id": "resp_2", "status": "incomplete", "output": [],
                            "incomplete_details": {"reason": "content_filter"}})

    assert (cut.status, cut.incomplete_details) == (
        "incomplete", {"reason": "max_completion_tokens"})
    # The Assistants API has no reason for a filtered reply: it is reported as a failure.
    assert filtered.status == "failed" and filtered.incomplete_details is None
    assert filtered.last_error["code"] == "server_error"
    assert "content_filter" in filtered.last_error["message"]


@pytest.mark.parametrize("engine", ["responses", "assistants"])
def test_deleting_the_thread_while_its_run_starts_is_not_a_500(start_bridge, engine):
    bridge = start_bridge(engine)
    fake, client = bridge.fake, bridge.sdk("alice")
    assistant_id = bridge.assistant()
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    fake.delay_on(START[engine], 30)  # until end_delays(): the start waits for the delete
    with ThreadPoolExecutor(1) as pool:
        creating = pool.submit(lambda: bridge.sdk("alice").beta.threads.runs.create(
            thread_id=thread.id, assistant_id=assistant_id))
        wait_for(lambda: client.beta.threads.runs.list(thread_id=thread.id).data, timeout=5)
        client.beta.threads.delete(thread.id)
        fake.end_delays()
        with pytest.raises(openai.APIStatusError) as caught:
            creating.result(timeout=10)
    # The thread went first: a 404 for it, or the upstream's 502 for the vanished conversation.
    assert caught.value.status_code in (404, 502)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve(thread.id)
