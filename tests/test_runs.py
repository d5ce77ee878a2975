"""Run lifecycle through the official SDK, on every engine."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import wait_for


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
