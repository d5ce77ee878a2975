"""Runs never stay active forever: the run sweeper after a restart, overdue runs, unpolled runs."""

from __future__ import annotations

import openai
import pytest
from sqlalchemy import select, update

from bridge.extensions import db
from bridge.models import Message, Run, Thread, now
from tests.conftest import wait_for

SWEEP = {"RUN_SWEEP_SECONDS": 0.1}


def database_of(bridge) -> str:
    return bridge.app.config["BRIDGE_SETTINGS"].DATABASE_URL


def run_row(bridge, run_id: str) -> Run:
    with bridge.app.app_context():
        run = db.session.scalar(select(Run).where(Run.id == run_id))
        db.session.expunge(run)
        return run


def set_run(bridge, run_id: str, **values) -> None:
    with bridge.app.app_context():
        db.session.execute(update(Run).where(Run.id == run_id).values(**values))
        db.session.commit()


def wake(bridge) -> None:
    """The sweeper starts with a process's first request."""
    bridge.sdk("nobody").beta.assistants.list()


def test_runs_expire_after_the_configured_timeout(start_bridge):
    bridge = start_bridge("offline", RUN_TIMEOUT_SECONDS=45)
    client = bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])

    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=bridge.assistant())

    assert run.expires_at - run.created_at == 45


def test_queued_runs_left_by_a_stopped_process_are_executed(start_bridge):
    # The first process queued a run and stopped before executing it.
    first = start_bridge("offline", OFFLINE_REPLY_DELAY=30, RUN_WORKERS=1)
    client = first.sdk("alice")
    assistant_id = first.assistant()
    busy = client.beta.threads.create(messages=[{"role": "user", "content": "busy"}])
    stuck = client.beta.threads.runs.create(thread_id=busy.id, assistant_id=assistant_id)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "left behind"}])
    left = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)
    assert run_row(first, left.id).status == "queued"
    first.app.extensions["bridge.engine"]._runs.shutdown(wait=False, cancel_futures=True)

    second = start_bridge("offline", DATABASE_URL=database_of(first), **SWEEP)
    wake(second)

    done = wait_for(lambda: (r := run_row(second, left.id)).status == "completed" and r)
    assert done.completed_at
    replies = second.sdk("alice").beta.threads.messages.list(thread_id=thread.id, run_id=left.id)
    assert "left behind" in replies.data[0].content[0].text.value
    client.beta.threads.runs.cancel(stuck.id, thread_id=busy.id)  # lets the first process stop


def test_interrupted_runs_fail_with_a_reason(start_bridge):
    bridge = start_bridge("offline", **SWEEP)
    client = bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                   assistant_id=bridge.assistant(),
                                                   poll_interval_ms=20)
    # As a process that died mid-step leaves it: in progress, started long ago, nobody on it.
    set_run(bridge, run.id, status="in_progress", completed_at=None, started_at=now() - 3600)

    failed = wait_for(lambda: (r := run_row(bridge, run.id)).status == "failed" and r)

    assert failed.failed_at and failed.last_error["code"] == "server_error"
    assert "interrupted" in failed.last_error["message"]
    # The thread takes new runs again.
    again = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                     assistant_id=bridge.assistant(),
                                                     poll_interval_ms=20)
    assert again.status == "completed"


def test_a_run_executing_now_is_not_taken_for_interrupted(start_bridge):
    bridge = start_bridge("offline", OFFLINE_REPLY_DELAY=1.0, **SWEEP)
    client = bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])

    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id,
                                                   assistant_id=bridge.assistant(),
                                                   poll_interval_ms=50)

    assert run.status == "completed"


@pytest.mark.parametrize("status", ["queued", "in_progress", "requires_action"])
def test_overdue_local_runs_expire(start_bridge, status):
    bridge = start_bridge("offline", OFFLINE_REPLY_DELAY=30, **SWEEP)
    client = bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=bridge.assistant())
    wait_for(lambda: run_row(bridge, run.id).status == "in_progress")
    set_run(bridge, run.id, status=status, expires_at=now() - 1)

    expired = wait_for(lambda: (r := run_row(bridge, run.id)).status == "expired" and r)

    assert expired.last_error["code"] == "server_error" and expired.required_action is None
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "expired"


@pytest.mark.parametrize("engine", ["responses", "assistants"])
def test_upstream_runs_nobody_polls_settle_after_a_restart(start_bridge, engine):
    first = start_bridge(engine)
    client = first.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "unpolled"}])
    first.fake.hold()
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=first.assistant())
    first.app.extensions["bridge.engine"].shutdown()  # the process goes away
    first.fake.release()

    second = start_bridge(engine, DATABASE_URL=database_of(first), **SWEEP)
    wake(second)

    # Nobody polls the run: the sweeper follows it to the end and keeps the reply.
    done = wait_for(lambda: (r := run_row(second, run.id)).status == "completed" and r)
    assert done.usage["total_tokens"] > 0
    with second.app.app_context():
        thread_pk = db.session.scalar(select(Thread.pk).where(Thread.id == thread.id))
        replies = list(db.session.scalars(select(Message).where(
            Message.thread_pk == thread_pk, Message.run_id == run.id)))
        assert [m.role for m in replies] == ["assistant"]
        assert "unpolled" in replies[0].content[0]["text"]["value"]


@pytest.mark.parametrize("engine", ["responses", "assistants"])
def test_overdue_upstream_runs_expire_and_stop_upstream(start_bridge, engine):
    bridge = start_bridge(engine, **SWEEP)
    client = bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    bridge.fake.hold()
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=bridge.assistant())
    set_run(bridge, run.id, expires_at=now() - 1)
    cancels = "POST /v1/responses/{id}/cancel" if engine == "responses" else \
        "POST /v1/threads/{id}/runs/{run_id}/cancel"

    expired = wait_for(lambda: (r := run_row(bridge, run.id)).status == "expired" and r)

    assert expired.last_error["code"] == "server_error"
    assert bridge.fake.calls(cancels) >= 1
    bridge.fake.release()


@pytest.mark.parametrize("engine", ["responses", "assistants"])
def test_a_delete_the_upstream_failed_is_retried_later_not_forgotten(start_bridge, engine):
    bridge = start_bridge(engine)
    client = bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "bye"}])
    route = {"responses": "DELETE /v1/conversations/{id}",
             "assistants": "DELETE /v1/threads/{id}"}[engine]
    bridge.fake.fail_on(route, 500)

    assert client.beta.threads.delete(thread.id).deleted  # gone for the client at once
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve(thread.id)
    listed = bridge.sdk("alice").get("/threads", cast_to=object)  # the bridge's own list route
    assert thread.id not in [t["id"] for t in listed["data"]]
    with bridge.app.app_context():
        pending = db.session.scalar(select(Thread).where(Thread.id == thread.id))
        assert pending.status == "deleting"
        upstream = pending.upstream_id

    with bridge.app.app_context():
        bridge.app.extensions["bridge.engine"].sweep()  # what the sweeper does on its next pass

    assert bridge.fake.calls(route) == 2
    with bridge.app.app_context():
        assert db.session.scalar(select(Thread).where(Thread.id == thread.id)) is None
    with bridge.fake._cond:
        kept = bridge.fake._conversations if engine == "responses" else bridge.fake._threads
        assert upstream not in kept
