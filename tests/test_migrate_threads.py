"""`flask migrate-threads`: threads move to another engine's home and clients keep their ids.

Threads are made on a source bridge through the SDK; the command runs on an app configured for
the target engine over the same registry database, as an operator changing provider would run it.
"""

from __future__ import annotations

import openai
import pytest
from sqlalchemy import select, update

from bridge import moving
from bridge.engines.assistants import AssistantsEngine
from bridge.engines.base import UpstreamUnavailable
from bridge.engines.responses import ResponsesEngine
from bridge.extensions import db
from bridge.models import Message, RunStep, Thread, ThreadMove
from tests.conftest import UPSTREAM_ENGINES, wait_for

# The fake's routes for appending and deleting messages, per target.
ADD_MESSAGES = {"responses": "POST /v1/conversations/{id}/items",
                "assistants": "POST /v1/threads/{id}/messages"}
DELETE_MESSAGE = {"responses": "DELETE /v1/conversations/{id}/items/{item_id}",
                  "assistants": "DELETE /v1/threads/{id}/messages/{message_id}"}


def _database(bridge) -> str:
    return bridge.app.config["BRIDGE_SETTINGS"].DATABASE_URL


def _migrate(app, *args: str):
    return app.test_cli_runner().invoke(args=["migrate-threads", *args])


def _lines(result) -> dict[str, str]:
    """The per-thread lines of the command's output by thread id, and the summary under ''."""
    lines = result.output.strip().splitlines()
    found = {"": lines[-1]}
    for line in lines[:-1]:
        thread_id = next(word for word in line.split() if word.startswith("thread_"))
        found[thread_id.rstrip(":")] = line
    return found


def _registry(app, thread_id: str) -> tuple[str, str | None, list[tuple[str, str | None]]]:
    """A thread's home, upstream id, and (message id, upstream id) in order, as the registry has them."""
    with app.app_context():
        thread = db.session.scalar(select(Thread).where(Thread.id == thread_id))
        messages = db.session.scalars(select(Message).where(Message.thread_pk == thread.pk)
                                      .order_by(Message.pk))
        result = thread.home, thread.upstream_id, [(m.id, m.upstream_id) for m in messages]
        db.session.remove()
        return result


def _moves(app) -> int:
    with app.app_context():
        count = len(db.session.scalars(select(ThreadMove)).all())
        db.session.remove()
        return count


def _messages(client, thread_id: str) -> list[tuple[str, str, str]]:
    """(id, role, text) of a thread's messages, oldest first, through the SDK (every page)."""
    page = client.beta.threads.messages.list(thread_id, order="asc", limit=100)
    return [(m.id, m.role, "".join(part.text.value for part in m.content)) for m in page]


def _upstream(fake) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0, timeout=10)


def _items(fake, conversation: str) -> list[tuple[str, str, str]]:
    """(id, role, text) of a conversation's items at the fake, oldest first (every page)."""
    with _upstream(fake) as client:
        page = client.conversations.items.list(conversation, order="asc", limit=100)
        return [(item.id, item.role, "".join(part.text for part in item.content))
                for item in page]


def _held(fake, target: str, container: str) -> list[tuple[str, str, str]]:
    """(id, role, text) of the messages a conversation (responses) or thread (assistants) holds,
    oldest first (every page)."""
    if target == "responses":
        return _items(fake, container)
    with _upstream(fake) as client:
        page = client.beta.threads.messages.list(container, order="asc", limit=100)
        return [(m.id, m.role, "".join(part.text.value for part in m.content)) for m in page]


class Killed(Exception):
    """The command's process dies here."""


def _kill_once_when_recording(monkeypatch, when=lambda copies: True) -> None:
    """The next recording of copies that `when` picks dies after the upstream made them."""
    record = moving._record_copies

    def killed(move, copies):
        if not when(copies):
            return record(move, copies)
        monkeypatch.setattr(moving, "_record_copies", record)
        raise Killed

    monkeypatch.setattr(moving, "_record_copies", killed)


def _run(client, thread_id: str, assistant_id: str):
    return client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id,
                                                    poll_interval_ms=20)


def test_offline_threads_move_to_responses_keeping_ids_owner_and_metadata(start_bridge):
    source = start_bridge("offline")
    assistant_id = source.assistant()
    alice, bob = source.sdk("alice"), source.sdk("bob")
    first = alice.beta.threads.create(metadata={"topic": "travel"},
                                      messages=[{"role": "user", "content": "Hello"}])
    alice.beta.threads.messages.create(first.id, role="user", content="Where should I go?")
    old_run = _run(alice, first.id, assistant_id)
    assert old_run.status == "completed"
    empty = alice.beta.threads.create()
    bobs = bob.beta.threads.create(messages=[{"role": "user", "content": "Bob here"}])
    before = {thread_id: _messages(client, thread_id)
              for client, thread_id in ((alice, first.id), (alice, empty.id), (bob, bobs.id))}
    metadata = alice.beta.threads.retrieve(first.id).metadata

    target = start_bridge("responses", DATABASE_URL=_database(source))
    alice, bob = target.sdk("alice"), target.sdk("bob")
    with pytest.raises(openai.ConflictError):  # not moved yet: the target refuses writes
        alice.beta.threads.messages.create(first.id, role="user", content="too early")

    result = _migrate(target.app, "--to", "responses")

    assert result.exit_code == 0, result.output
    lines = _lines(result)
    assert lines[""] == "3 threads moved, 4 messages copied, 0 skipped, 0 failed"
    assert lines[first.id] == f"moved {first.id} local -> responses (3 messages copied)"
    assert lines[empty.id] == f"moved {empty.id} local -> responses (0 messages copied)"
    assert lines[bobs.id] == f"moved {bobs.id} local -> responses (1 message copied)"
    assert _moves(target.app) == 0
    for client, thread_id, owner in ((alice, first.id, "alice"), (alice, empty.id, "alice"),
                                     (bob, bobs.id, "bob")):
        assert _messages(client, thread_id) == before[thread_id]
        home, conversation, rows = _registry(target.app, thread_id)
        assert home == "responses" and conversation.startswith("conv_")
        items = _items(target.fake, conversation)
        assert [(role, text) for _, role, text in items] == \
            [(role, text) for _, role, text in before[thread_id]]
        assert [upstream for _, upstream in rows] == [item_id for item_id, _, _ in items]
        with _upstream(target.fake) as upstream:
            stamp = upstream.conversations.retrieve(conversation).metadata["user_id"]
        assert stamp == owner
    assert alice.beta.threads.retrieve(first.id).metadata == metadata
    with _upstream(target.fake) as upstream:
        assert upstream.conversations.retrieve(
            _registry(target.app, first.id)[1]).metadata == {"topic": "travel", "user_id": "alice"}

    # The moved thread is the target's now: clients carry on with the same ids.
    assert alice.beta.threads.runs.retrieve(old_run.id, thread_id=first.id).status == "completed"
    alice.beta.threads.messages.create(first.id, role="user", content="And Rome?")
    run = _run(alice, first.id, assistant_id)
    assert run.status == "completed"
    after = _messages(alice, first.id)
    assert after[:3] == before[first.id]
    assert after[3][2] == "And Rome?" and after[4][1:] == ("assistant", "echo: And Rome?")
    assert len(_items(target.fake, _registry(target.app, first.id)[1])) == 5
    # ... and ownership did not move with it.
    with pytest.raises(openai.NotFoundError):
        bob.beta.threads.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        bob.beta.threads.messages.list(first.id)
    with pytest.raises(openai.NotFoundError):
        alice.beta.threads.retrieve(bobs.id)


def test_assistants_threads_move_to_responses_and_the_source_is_deleted(start_bridge):
    source = start_bridge("assistants")
    assistant_id = source.assistant()
    alice = source.sdk("alice")
    thread = alice.beta.threads.create(metadata={"project": "x"},
                                       messages=[{"role": "user", "content": "First"}])
    old_run = _run(alice, thread.id, assistant_id)
    assert old_run.status == "completed"
    old_steps = list(alice.beta.threads.runs.steps.list(old_run.id, thread_id=thread.id))
    assert [step.type for step in old_steps] == ["message_creation"]
    alice.beta.threads.messages.create(thread.id, role="user", content="Second")
    before = _messages(alice, thread.id)
    assert [text for _, _, text in before] == ["First", "echo: First", "Second"]
    old = _registry(source.app, thread.id)[1]
    assert old.startswith("thread_")

    target = start_bridge("responses", DATABASE_URL=_database(source))
    assert target.fake is source.fake
    result = _migrate(target.app, "--to", "responses", "--from", "assistants", "--delete-source")

    assert result.exit_code == 0, result.output
    lines = _lines(result)
    assert lines[thread.id] == (f"moved {thread.id} assistants -> responses (3 messages copied); "
                                f"deleted {old} at the source")
    assert lines[""] == "1 thread moved, 3 messages copied, 0 skipped, 0 failed"
    with _upstream(target.fake) as upstream, pytest.raises(openai.NotFoundError):
        upstream.beta.threads.retrieve(old)
    home, conversation, rows = _registry(target.app, thread.id)
    assert home == "responses"
    items = _items(target.fake, conversation)
    assert [(role, text) for _, role, text in items] == [(role, text) for _, role, text in before]
    assert [upstream for _, upstream in rows] == [item_id for item_id, _, _ in items]
    with _upstream(target.fake) as upstream:
        assert upstream.conversations.retrieve(conversation).metadata == {
            "project": "x", "user_id": "alice"}

    client = target.sdk("alice")
    assert _messages(client, thread.id) == before
    # The old run's steps are still served, naming our message ids, with no upstream left behind.
    assert list(client.beta.threads.runs.steps.list(old_run.id, thread_id=thread.id)) == old_steps
    assert old_steps[0].step_details.message_creation.message_id == before[1][0]
    with target.app.app_context():
        assert db.session.scalars(select(RunStep.upstream_id)).all() == [None]
        db.session.remove()
    run = _run(client, thread.id, assistant_id)
    assert run.status == "completed"
    assert _messages(client, thread.id)[-1][1:] == ("assistant", "echo: Second")
    (reply_step,) = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
    assert reply_step.step_details.message_creation.message_id == _messages(client, thread.id)[-1][0]


def test_an_interrupted_move_resumes_without_a_second_conversation_or_duplicates(
        start_bridge, monkeypatch):
    source = start_bridge("offline")
    alice = source.sdk("alice")
    short = alice.beta.threads.create(messages=[{"role": "user", "content": f"s{i}"} for i in range(2)])
    long = alice.beta.threads.create(messages=[{"role": "user", "content": f"m{i}"} for i in range(25)])
    last = alice.beta.threads.create(messages=[{"role": "user", "content": "only"}])
    long_ids = [message_id for message_id, _, _ in _messages(alice, long.id)]

    target = start_bridge("responses", DATABASE_URL=_database(source))
    fake = target.fake
    copy_messages = ResponsesEngine.copy_messages

    def fail_second_batch(self, container, messages):
        if messages[0].id == long_ids[20]:
            fake.fail_next(500)  # the upstream fails half way through the long thread
        return copy_messages(self, container, messages)

    monkeypatch.setattr(ResponsesEngine, "copy_messages", fail_second_batch)
    fake.fail_next(500)  # ... and at the very first call: the short thread's conversation

    first = _migrate(target.app, "--to", "responses")

    assert first.exit_code == 1, first.output
    lines = _lines(first)
    assert lines[short.id].startswith(f"failed {short.id} (local -> responses): upstream_error: 500")
    assert lines[long.id].startswith(f"failed {long.id} (local -> responses): upstream_error: 500")
    assert "20 messages copied before the failure" in lines[long.id]
    assert lines[last.id] == f"moved {last.id} local -> responses (1 message copied)"
    assert lines[""] == "1 thread moved, 21 messages copied, 0 skipped, 2 failed"
    assert _registry(target.app, short.id)[0] == "local"
    assert _registry(target.app, long.id)[0] == "local"
    assert _moves(target.app) == 2
    assert fake.calls("POST /v1/conversations") == 3  # one of them failed
    with pytest.raises(openai.ConflictError):  # still the source's until switched
        target.sdk("alice").beta.threads.messages.create(long.id, role="user", content="x")

    monkeypatch.undo()  # the upstream is well again
    second = _migrate(target.app, "--to", "responses")

    assert second.exit_code == 0, second.output
    lines = _lines(second)
    assert lines[long.id] == (f"moved {long.id} local -> responses "
                              "(5 messages copied, resuming: 20 copied before)")
    assert lines[short.id] == f"moved {short.id} local -> responses (2 messages copied)"
    assert lines[""] == "2 threads moved, 7 messages copied, 0 skipped, 0 failed"
    assert fake.calls("POST /v1/conversations") == 4  # a new one for the short thread only
    assert _moves(target.app) == 0
    home, conversation, rows = _registry(target.app, long.id)
    assert home == "responses"
    items = _items(fake, conversation)
    assert [text for _, _, text in items] == [f"m{i}" for i in range(25)]
    assert [(message_id, upstream) for message_id, upstream in rows] == \
        list(zip(long_ids, [item_id for item_id, _, _ in items]))
    assert [text for _, _, text in _items(fake, _registry(target.app, short.id)[1])] == ["s0", "s1"]

    third = _migrate(target.app, "--to", "responses")  # nothing left to do
    assert third.exit_code == 0 and third.output == \
        "0 threads moved, 0 messages copied, 0 skipped, 0 failed\n"


@pytest.mark.parametrize("target", UPSTREAM_ENGINES)
def test_a_move_killed_before_recording_a_batch_adopts_it_when_resumed(start_bridge, monkeypatch,
                                                                       target):
    source = start_bridge("offline")
    alice = source.sdk("alice")
    thread = alice.beta.threads.create(messages=[
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Plans?"}, {"role": "assistant", "content": "Rome."}])
    before = _messages(alice, thread.id)
    destination = start_bridge(target, DATABASE_URL=_database(source))
    _kill_once_when_recording(monkeypatch)

    killed = _migrate(destination.app, "--to", target)

    assert isinstance(killed.exception, Killed)
    with destination.app.app_context():
        container, copied = db.session.execute(
            select(ThreadMove.upstream_id, ThreadMove.copied)).one()
        db.session.remove()
    assert copied == {}  # the upstream has the batch, the move row does not know it
    assert [(role, text) for _, role, text in _held(destination.fake, target, container)] == \
        [(role, text) for _, role, text in before]
    added = destination.fake.calls(ADD_MESSAGES[target])

    resumed = _migrate(destination.app, "--to", target)

    assert resumed.exit_code == 0, resumed.output
    held = _held(destination.fake, target, container)
    assert [(role, text) for _, role, text in held] == [(role, text) for _, role, text in before]
    assert destination.fake.calls(ADD_MESSAGES[target]) == added  # nothing copied twice
    assert _lines(resumed)[thread.id] == (f"moved {thread.id} local -> {target} "
                                          "(0 messages copied, resuming: 4 copied before)")
    home, upstream_id, rows = _registry(destination.app, thread.id)
    assert (home, upstream_id) == (target, container)
    assert [upstream for _, upstream in rows] == [held_id for held_id, _, _ in held]
    assert _messages(destination.sdk("alice"), thread.id) == before
    assert _moves(destination.app) == 0


@pytest.mark.parametrize("target", UPSTREAM_ENGINES)
def test_a_resumed_move_deletes_unrecorded_copies_of_messages_gone_at_the_source(
        start_bridge, monkeypatch, target):
    source = start_bridge("offline")
    alice = source.sdk("alice")
    thread = alice.beta.threads.create(messages=[{"role": "user", "content": f"m{i}"}
                                                 for i in range(30)])
    for i in range(30, 105):
        alice.beta.threads.messages.create(thread.id, role="assistant" if i % 2 else "user",
                                           content=f"m{i}")
    ids = [message_id for message_id, _, _ in _messages(alice, thread.id)]
    destination = start_bridge(target, DATABASE_URL=_database(source))
    # Killed after the sixth batch (m100 to m104) reached the upstream: 105 messages there, so
    # reading them back takes two pages.
    _kill_once_when_recording(monkeypatch, when=lambda copies: ids[100] in copies)
    assert isinstance(_migrate(destination.app, "--to", target).exception, Killed)
    # Meanwhile, at the source: one of the unrecorded batch is deleted and a message arrives.
    alice.beta.threads.messages.delete(ids[101], thread_id=thread.id)
    alice.beta.threads.messages.create(thread.id, role="user", content="m105")
    before = _messages(alice, thread.id)
    assert len(before) == 105

    resumed = _migrate(destination.app, "--to", target)

    assert resumed.exit_code == 0, resumed.output
    home, container, rows = _registry(destination.app, thread.id)
    assert home == target
    held = _held(destination.fake, target, container)
    assert [(role, text) for _, role, text in held] == [(role, text) for _, role, text in before]
    assert [upstream for _, upstream in rows] == [held_id for held_id, _, _ in held]
    assert destination.fake.calls(DELETE_MESSAGE[target]) == 1  # the copy of the deleted one
    assert _lines(resumed)[thread.id] == (f"moved {thread.id} local -> {target} "
                                          "(1 message copied, resuming: 104 copied before)")
    assert _messages(destination.sdk("alice"), thread.id) == before


def test_a_run_started_at_the_source_while_copying_stops_the_switch(start_bridge, monkeypatch):
    source = start_bridge("offline", OFFLINE_REPLY_DELAY=30)
    assistant_id = source.assistant()
    alice = source.sdk("alice")
    thread = alice.beta.threads.create(messages=[{"role": "user", "content": "one"},
                                                 {"role": "user", "content": "two"}])
    target = start_bridge("responses", DATABASE_URL=_database(source))
    copy_messages = ResponsesEngine.copy_messages
    started = []

    def meanwhile(self, container, messages):
        upstream_ids = copy_messages(self, container, messages)
        # A client of the old deployment starts a run while the copy is being made.
        started.append(alice.beta.threads.runs.create(thread_id=thread.id,
                                                      assistant_id=assistant_id))
        return upstream_ids

    monkeypatch.setattr(ResponsesEngine, "copy_messages", meanwhile)
    result = _migrate(target.app, "--to", "responses")

    assert result.exit_code == 0, result.output
    (run,) = started
    assert _lines(result)[thread.id].startswith(
        f"skipped {thread.id}: run {run.id} started while copying")
    assert _lines(result)[""] == "0 threads moved, 2 messages copied, 1 skipped, 0 failed"
    assert _registry(target.app, thread.id)[:2] == ("local", None)
    assert _moves(target.app) == 1
    monkeypatch.undo()
    alice.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    wait_for(lambda: alice.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status
             == "cancelled")

    again = _migrate(target.app, "--to", "responses")

    assert again.exit_code == 0, again.output
    assert _lines(again)[thread.id] == (f"moved {thread.id} local -> responses "
                                        "(0 messages copied, resuming: 2 copied before)")
    assert target.fake.calls("POST /v1/conversations") == 1
    home, conversation, rows = _registry(target.app, thread.id)
    assert home == "responses"
    items = _items(target.fake, conversation)
    assert [text for _, _, text in items] == ["one", "two"]
    assert [upstream for _, upstream in rows] == [item_id for item_id, _, _ in items]


def test_an_unfinished_copy_to_another_engine_is_discarded(start_bridge, monkeypatch):
    source = start_bridge("offline")
    thread = source.sdk("alice").beta.threads.create(messages=[{"role": "user", "content": "Hi"}])
    to_assistants = start_bridge("assistants", DATABASE_URL=_database(source))

    def unreachable(self, container, messages):
        raise UpstreamUnavailable("connection reset")

    monkeypatch.setattr(AssistantsEngine, "copy_messages", unreachable)
    result = _migrate(to_assistants.app, "--to", "assistants")
    assert result.exit_code == 1, result.output
    assert _lines(result)[thread.id] == (f"failed {thread.id} (local -> assistants): "
                                         "upstream_unavailable: connection reset")
    with to_assistants.app.app_context():
        move = db.session.scalar(select(ThreadMove))
        partial, target, copied = move.upstream_id, move.target, move.copied
        db.session.remove()
    assert (target, copied) == ("assistants", {})
    with _upstream(to_assistants.fake) as upstream:
        assert upstream.beta.threads.retrieve(partial).metadata == {"user_id": "alice"}
    monkeypatch.undo()

    # The operator changes their mind: the thread goes to Conversations instead.
    to_responses = start_bridge("responses", DATABASE_URL=_database(source))
    result = _migrate(to_responses.app, "--to", "responses")

    assert result.exit_code == 0, result.output
    assert _lines(result)[thread.id] == f"moved {thread.id} local -> responses (1 message copied)"
    with _upstream(to_responses.fake) as upstream, pytest.raises(openai.NotFoundError):
        upstream.beta.threads.retrieve(partial)
    assert _moves(to_responses.app) == 0
    assert _registry(to_responses.app, thread.id)[0] == "responses"


def test_dry_run_reports_and_changes_nothing(start_bridge):
    source = start_bridge("offline")
    alice, bob = source.sdk("alice"), source.sdk("bob")
    one = alice.beta.threads.create(messages=[{"role": "user", "content": "a"},
                                              {"role": "user", "content": "b"}])
    two = bob.beta.threads.create(messages=[{"role": "user", "content": "c"}])
    target = start_bridge("responses", DATABASE_URL=_database(source))

    result = _migrate(target.app, "--to", "responses", "--dry-run", "--delete-source")

    assert result.exit_code == 0, result.output
    lines = _lines(result)
    assert lines[one.id] == f"would move {one.id} local -> responses (2 messages to copy)"
    assert lines[two.id] == f"would move {two.id} local -> responses (1 message to copy)"
    assert lines[""] == "dry run: 2 threads would be moved, 3 messages to copy, 0 skipped, 0 failed"
    assert target.fake.requests == []
    assert _moves(target.app) == 0
    for thread_id in (one.id, two.id):
        home, upstream_id, rows = _registry(target.app, thread_id)
        assert home == "local" and upstream_id is None
        assert all(upstream is None for _, upstream in rows)
    with pytest.raises(openai.ConflictError):
        target.sdk("alice").beta.threads.messages.create(one.id, role="user", content="x")


def test_threads_with_an_active_run_are_skipped_until_it_ends(start_bridge):
    source = start_bridge("offline", OFFLINE_REPLY_DELAY=30)
    assistant_id = source.assistant()
    alice = source.sdk("alice")
    busy = alice.beta.threads.create(messages=[{"role": "user", "content": "busy"}])
    idle = alice.beta.threads.create(messages=[{"role": "user", "content": "idle"}])
    run = alice.beta.threads.runs.create(thread_id=busy.id, assistant_id=assistant_id)
    wait_for(lambda: alice.beta.threads.runs.retrieve(run.id, thread_id=busy.id).status
             == "in_progress")
    target = start_bridge("responses", DATABASE_URL=_database(source))

    result = _migrate(target.app, "--to", "responses")

    assert result.exit_code == 0, result.output
    lines = _lines(result)
    assert lines[busy.id] == f"skipped {busy.id}: run {run.id} is in_progress"
    assert lines[""] == "1 thread moved, 1 message copied, 1 skipped, 0 failed"
    assert _registry(target.app, busy.id)[:2] == ("local", None)
    assert _registry(target.app, idle.id)[0] == "responses"
    assert _moves(target.app) == 0
    assert target.fake.calls("POST /v1/conversations") == 1

    alice.beta.threads.runs.cancel(run.id, thread_id=busy.id)
    wait_for(lambda: alice.beta.threads.runs.retrieve(run.id, thread_id=busy.id).status
             == "cancelled")
    again = _migrate(target.app, "--to", "responses")

    assert again.exit_code == 0, again.output
    assert _lines(again)[""] == "1 thread moved, 1 message copied, 0 skipped, 0 failed"
    assert _registry(target.app, busy.id)[0] == "responses"
    assert target.sdk("alice").beta.threads.runs.retrieve(
        run.id, thread_id=busy.id).status == "cancelled"


def test_user_source_and_limit_select_threads(start_bridge):
    source = start_bridge("offline")
    alice, bob = source.sdk("alice"), source.sdk("bob")
    first = alice.beta.threads.create(messages=[{"role": "user", "content": "a1"}])
    second = alice.beta.threads.create()
    bobs = bob.beta.threads.create(messages=[{"role": "user", "content": "b1"}])
    target = start_bridge("responses", DATABASE_URL=_database(source))

    def homes():
        return [_registry(target.app, t)[0] for t in (first.id, second.id, bobs.id)]

    assert _migrate(target.app, "--to", "responses", "--from", "offline", "--to", "offline") \
        .exit_code == 2
    assert _migrate(target.app, "--to", "nowhere").exit_code == 2

    result = _migrate(target.app, "--to", "responses", "--from", "assistants")
    assert (result.exit_code, result.output) == (
        0, "0 threads moved, 0 messages copied, 0 skipped, 0 failed\n")
    result = _migrate(target.app, "--to", "responses", "--user", "bob")
    assert _lines(result)[""] == "1 thread moved, 1 message copied, 0 skipped, 0 failed"
    assert homes() == ["local", "local", "responses"]
    result = _migrate(target.app, "--to", "responses", "--limit", "1")
    assert _lines(result)[""] == "1 thread moved, 1 message copied, 0 skipped, 0 failed"
    assert homes() == ["responses", "local", "responses"]
    with target.app.app_context():  # a thread from before the owner stamp was kept in metadata
        db.session.execute(update(Thread).where(Thread.id == second.id).values(meta={"k": "v"}))
        db.session.commit()
        db.session.remove()
    result = _migrate(target.app, "--to", "responses", "--from", "local")
    assert _lines(result)[""] == "1 thread moved, 0 messages copied, 0 skipped, 0 failed"
    assert homes() == ["responses", "responses", "responses"]
    with _upstream(target.fake) as upstream:
        assert upstream.conversations.retrieve(_registry(target.app, second.id)[1]).metadata == {
            "k": "v", "user_id": "alice"}


def test_moving_back_to_the_registry_makes_no_upstream_calls(start_bridge):
    source = start_bridge("offline")
    assistant_id = source.assistant()
    alice = source.sdk("alice")
    thread = alice.beta.threads.create(metadata={"k": "v"},
                                       messages=[{"role": "user", "content": "Hi"}])
    target = start_bridge("responses", DATABASE_URL=_database(source))
    assert _migrate(target.app, "--to", "responses").exit_code == 0
    on_responses = target.sdk("alice")
    assert _run(on_responses, thread.id, assistant_id).status == "completed"
    before = _messages(on_responses, thread.id)
    assert [text for _, _, text in before] == ["Hi", "echo: Hi"]
    requests = len(target.fake.requests)

    result = _migrate(source.app, "--to", "offline")

    assert result.exit_code == 0, result.output
    lines = _lines(result)
    assert lines[thread.id] == \
        f"moved {thread.id} responses -> local (2 messages, kept in the registry)"
    assert lines[""] == "1 thread moved, 0 messages copied, 0 skipped, 0 failed"
    assert len(target.fake.requests) == requests
    home, upstream_id, rows = _registry(source.app, thread.id)
    assert (home, upstream_id) == ("local", None)
    assert all(upstream is None for _, upstream in rows)
    assert _messages(alice, thread.id) == before
    assert alice.beta.threads.retrieve(thread.id).metadata == {"k": "v", "user_id": "alice"}
    with pytest.raises(openai.ConflictError):  # the responses bridge no longer keeps it
        on_responses.beta.threads.messages.create(thread.id, role="user", content="x")
    alice.beta.threads.messages.create(thread.id, role="user", content="Back home")
    assert _run(alice, thread.id, assistant_id).status == "completed"
    assert _messages(alice, thread.id)[-1][2].startswith('You said: "Back home"')


@pytest.mark.parametrize("target_engine", UPSTREAM_ENGINES)
def test_a_moved_thread_takes_its_vector_store_and_files(start_bridge, tmp_path, target_engine):
    shared = {"FILE_STORAGE_DIR": str(tmp_path / "files")}  # one deployment, one file store
    source = start_bridge("offline", **shared)
    alice = source.sdk("alice")
    notes = alice.files.create(file=("tides.md", b"# Tides\n\nThe moon pulls the seas."),
                               purpose="assistants")
    store = alice.vector_stores.create(file_ids=[notes.id])
    wait_for(lambda: alice.vector_stores.retrieve(store.id).status == "completed")
    thread = alice.beta.threads.create(
        tool_resources={"file_search": {"vector_store_ids": [store.id]}},
        messages=[{"role": "user", "content": "What pulls the seas?"}])

    target = start_bridge(target_engine, DATABASE_URL=_database(source), **shared)
    result = _migrate(target.app, "--to", target_engine)

    assert result.exit_code == 0, result.output
    assert _lines(result)[thread.id] == (f"moved {thread.id} local -> {target_engine} "
                                         "(1 message copied, 1 vector store with its files)")
    [copy] = target.fake.vector_stores.values()
    assert [f["filename"] for f in target.fake.files.values()] == ["tides.md"]
    assert len(target.fake.vector_store_files(copy["id"])) == 1
    alice = target.sdk("alice")
    run = alice.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=target.assistant(tools=[{"type": "file_search"}]),
        poll_interval_ms=20)
    reply = alice.beta.threads.messages.list(thread.id, run_id=run.id).data[0].content[0].text
    assert [a.file_citation.file_id for a in reply.annotations] == [notes.id]
