"""`file_search` in runs, through the official SDK: the run searches its assistant's and its
thread's vector stores, the reply cites the file it quotes, and the run's steps record the
search (result contents only with `include[]`).

The offline engine searches the user's message itself; the chat engine offers the model a
`file_search` function and runs the search when it is called.
"""

from __future__ import annotations

import io
import json
import re

import openai
import pytest

from tests.conftest import wait_for

DOCUMENTS = {
    "volcanoes.md": "# Volcanoes\n\nA volcano erupts when magma rises through the crust. Lava "
                    "flows and ash clouds follow an eruption; Mount Etna erupts often.",
    "bread.txt": "Baking bread needs flour, water, salt and yeast. The dough is kneaded, left "
                 "to rise, and baked in a hot oven until the crust is brown.",
    "chess.txt": "In chess the bishop moves diagonally, the rook moves in straight lines, and "
                 "the knight jumps in an L shape over other pieces.",
}
SEARCH_CONTENTS = "step_details.tool_calls[*].file_search.results[*].content"


def upload(client, name: str, text: str) -> str:
    return client.files.create(file=(name, io.BytesIO(text.encode())), purpose="assistants").id


def ingested_store(client, names=tuple(DOCUMENTS)) -> tuple[str, dict[str, str]]:
    """A store of the client's holding the named documents, ingested; (id, {name: file id})."""
    ids = {name: upload(client, name, DOCUMENTS[name]) for name in names}
    store = client.vector_stores.create(file_ids=list(ids.values()))
    wait_for(lambda: client.vector_stores.retrieve(store.id).status == "completed")
    return store.id, ids


def cited_files(message) -> list[str]:
    text = message.content[0].text
    for annotation in text.annotations:
        assert annotation.type == "file_citation"
        assert text.value[annotation.start_index:annotation.end_index] == annotation.text
    return [annotation.file_citation.file_id for annotation in text.annotations]


def ask(client, assistant: str, question: str, store_id: str | None = None, **options):
    """A new thread (searching `store_id`) asking `question`, run to its end: (thread id, run)."""
    resources = {"file_search": {"vector_store_ids": [store_id]}} if store_id else None
    thread = client.beta.threads.create(tool_resources=resources,
                                        messages=[{"role": "user", "content": question}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant,
                                                   poll_interval_ms=20, **options)
    return thread.id, run


def reply_of(client, thread_id: str, run_id: str):
    return client.beta.threads.messages.list(thread_id, run_id=run_id).data[0]


def search_steps(client, thread_id: str, run_id: str, **options):
    steps = client.beta.threads.runs.steps.list(run_id, thread_id=thread_id, order="asc",
                                                **options).data
    return [step for step in steps if step.type == "tool_calls"
            and any(call.type == "file_search" for call in step.step_details.tool_calls)]


# Engines whose runs the bridge answers, searching in its own registry.
SEARCHING_ENGINES = ("offline", "chat", "responses", "assistants")


@pytest.fixture(params=SEARCHING_ENGINES)
def searching(request, start_bridge):
    return start_bridge(request.param)


@pytest.fixture
def alice(searching):
    return searching.sdk("alice")


def test_run_quotes_and_cites_the_thread_store(searching, alice):
    store_id, ids = ingested_store(alice)
    assistant = searching.assistant(tools=[{"type": "file_search"}])
    thread_id, run = ask(alice, assistant, "How does the knight move in chess?", store_id)

    assert run.status == "completed"
    reply = reply_of(alice, thread_id, run.id)
    assert "knight jumps in an L shape" in reply.content[0].text.value
    assert cited_files(reply) == [ids["chess.txt"]]
    assert re.search(r"【\d+:\d+†chess\.txt】", reply.content[0].text.value)
    if searching.engine == "chat":
        offered = searching.fake.requests[0]["json"]["tools"]
        assert [tool["function"]["name"] for tool in offered] == ["file_search"]
        answered = searching.fake.requests[1]["json"]["messages"][-1]
        assert answered["role"] == "tool" and "【0:0†chess.txt】\nIn chess" in answered["content"]

    steps = alice.beta.threads.runs.steps.list(run.id, thread_id=thread_id, order="asc").data
    assert [step.type for step in steps] == ["tool_calls", "message_creation"]
    search = steps[0].step_details.tool_calls[0]
    assert search.type == "file_search" and steps[0].status == "completed"
    assert search.file_search.ranking_options.ranker == "default_2024_08_21"
    results = search.file_search.results
    assert results[0].file_id == ids["chess.txt"] and results[0].file_name == "chess.txt"
    assert 0 < results[0].score <= 1
    # Contents only when asked, on the list and on one step.
    assert results[0].content is None
    [asked] = search_steps(alice, thread_id, run.id, include=[SEARCH_CONTENTS])
    assert "knight" in asked.step_details.tool_calls[0].file_search.results[0].content[0].text
    one = alice.beta.threads.runs.steps.retrieve(steps[0].id, thread_id=thread_id,
                                                 run_id=run.id, include=[SEARCH_CONTENTS])
    assert one.step_details.tool_calls[0].file_search.results[0].content[0].type == "text"
    plain = alice.beta.threads.runs.steps.retrieve(steps[0].id, thread_id=thread_id,
                                                   run_id=run.id)
    assert plain.step_details.tool_calls[0].file_search.results[0].content is None


def test_run_searches_the_assistant_store(searching, alice):
    admin = searching.sdk("admin", admin=True)
    store_id, ids = ingested_store(admin)
    assistant = searching.assistant(
        tools=[{"type": "file_search", "file_search": {"max_num_results": 2}}],
        tool_resources={"file_search": {"vector_store_ids": [store_id]}})
    thread_id, run = ask(alice, assistant, "What do I need to bake bread?")

    assert cited_files(reply_of(alice, thread_id, run.id)) == [ids["bread.txt"]]
    [step] = search_steps(alice, thread_id, run.id)
    assert len(step.step_details.tool_calls[0].file_search.results) <= 2


def test_nothing_found_is_said_and_recorded(searching, alice):
    store_id, _ = ingested_store(alice)
    assistant = searching.assistant(tools=[{"type": "file_search"}])
    thread_id, run = ask(alice, assistant, "zebra xylophone", store_id)
    assert cited_files(reply_of(alice, thread_id, run.id)) == []
    [step] = search_steps(alice, thread_id, run.id)
    assert step.step_details.tool_calls[0].file_search.results == []


def test_no_search_without_the_tool_or_with_tool_choice_none(searching, alice):
    store_id, _ = ingested_store(alice)
    plain = searching.assistant()
    offering = searching.assistant(tools=[{"type": "file_search"}])
    for assistant, options in ((plain, {}), (offering, {"tool_choice": "none"})):
        thread_id, run = ask(alice, assistant, "How does the knight move?", store_id, **options)
        assert run.status == "completed"
        assert cited_files(reply_of(alice, thread_id, run.id)) == []
        assert search_steps(alice, thread_id, run.id) == []


def test_streamed_run_announces_the_search_then_the_cited_reply(searching, alice):
    store_id, ids = ingested_store(alice)
    assistant = searching.assistant(tools=[{"type": "file_search"}])
    thread = alice.beta.threads.create(
        tool_resources={"file_search": {"vector_store_ids": [store_id]}},
        messages=[{"role": "user", "content": "Why does a volcano erupt?"}])

    with alice.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant) as stream:
        events = [event for event in stream]
        final = stream.get_final_messages()

    names = [event.event for event in events]
    created = names.index("thread.run.step.created")
    assert names[created + 1] == "thread.run.step.completed"
    search = events[created + 1].data
    assert search.step_details.tool_calls[0].type == "file_search"
    assert search.step_details.tool_calls[0].file_search.results[0].file_id == ids["volcanoes.md"]
    assert names.index("thread.message.created") > created + 1
    assert cited_files(final[-1]) == [ids["volcanoes.md"]]
    # What the stream showed is what polling shows.
    polled = search_steps(alice, thread.id, events[-1].data.id)
    assert [step.id for step in polled] == [search.id]
    assert reply_of(alice, thread.id, events[-1].data.id).id == final[-1].id


def test_offline_reply_says_what_it_found(offline_bridge):
    alice = offline_bridge.sdk("alice")
    store_id, _ = ingested_store(alice)
    assistant = offline_bridge.assistant(tools=[{"type": "file_search"}])
    for question, start in (("How does the knight move?", 'From chess.txt: "In chess'),
                            ("zebra xylophone", "Nothing in the files matches")):
        thread_id, run = ask(alice, assistant, question, store_id)
        assert reply_of(alice, thread_id, run.id).content[0].text.value.startswith(start)


# ---- chat: the model calls file_search ----------------------------------------------------------

def _call(name: str, arguments: dict, call_id: str) -> dict:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


@pytest.fixture
def chat_store(chat_bridge):
    alice = chat_bridge.sdk("alice")
    store_id, ids = ingested_store(alice)
    thread = alice.beta.threads.create(
        tool_resources={"file_search": {"vector_store_ids": [store_id]}},
        messages=[{"role": "user", "content": "Tell me about bread and chess."}])
    return alice, thread.id, ids


def test_chat_searches_in_several_rounds_and_numbers_markers_by_round(chat_bridge, chat_store):
    alice, thread_id, ids = chat_store
    chat_bridge.fake.enqueue(
        {"tool_calls": [_call("file_search", {"queries": ["bread flour yeast"]}, "call_a")]},
        {"tool_calls": [_call("file_search", {"query": "knight chess"}, "call_b")]},
        "Bread needs yeast 【0:0†bread.txt】; knights jump 【1:0†chess.txt】 【7:7†none】.")
    assistant = chat_bridge.assistant(tools=[{"type": "file_search"}])

    run = alice.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant,
                                                  poll_interval_ms=20)

    assert run.status == "completed"
    assert cited_files(reply_of(alice, thread_id, run.id)) == [ids["bread.txt"], ids["chess.txt"]]
    steps = search_steps(alice, thread_id, run.id)
    assert [step.step_details.tool_calls[0].id for step in steps] == ["call_a", "call_b"]
    third = chat_bridge.fake.requests[2]["json"]["messages"]
    assert [m["role"] for m in third[-4:]] == ["assistant", "tool", "assistant", "tool"]
    assert third[-1]["content"].startswith("【1:0†chess.txt】")
    # Usage counts every model call of the run.
    assert run.usage.prompt_tokens == sum(
        sum(len(str(m.get("content") or "").split()) for m in request["json"]["messages"])
        for request in chat_bridge.fake.requests)


def test_chat_client_calls_with_searches_wait_and_keep_the_search(chat_bridge, chat_store):
    alice, thread_id, ids = chat_store
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {}}}}
    chat_bridge.fake.enqueue(
        {"tool_calls": [_call("file_search", {"queries": ["bread"]}, "call_s"),
                        _call("get_weather", {}, "call_w")]},
        "Sunny, and bread needs an oven 【0:0†bread.txt】.")
    assistant = chat_bridge.assistant(tools=[{"type": "file_search"}, weather])

    run = alice.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant,
                                                  poll_interval_ms=20)
    assert run.status == "requires_action"
    [pending] = run.required_action.submit_tool_outputs.tool_calls
    assert pending.id == "call_w" and pending.function.name == "get_weather"
    run = alice.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread_id, poll_interval_ms=20,
        tool_outputs=[{"tool_call_id": "call_w", "output": "sunny"}])

    assert run.status == "completed"
    sent = chat_bridge.fake.requests[1]["json"]["messages"]
    assert [m["role"] for m in sent[-3:]] == ["assistant", "tool", "tool"]
    assert [call["id"] for call in sent[-3]["tool_calls"]] == ["call_s", "call_w"]
    assert sent[-2]["tool_call_id"] == "call_s" and "【0:0†bread.txt】" in sent[-2]["content"]
    assert sent[-1] == {"role": "tool", "tool_call_id": "call_w", "content": "sunny"}
    # The searches' citations are numbered as the model read them, across the pause.
    assert [step.type for step in alice.beta.threads.runs.steps.list(
        run.id, thread_id=thread_id, order="asc").data] == [
        "tool_calls", "tool_calls", "message_creation"]


def test_chat_forced_file_search_and_a_client_function_of_that_name(chat_bridge, chat_store):
    alice, thread_id, _ = chat_store
    assistant = chat_bridge.assistant(tools=[{"type": "file_search"}])
    run = alice.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=assistant, poll_interval_ms=20,
        tool_choice={"type": "file_search"})
    assert run.status == "completed"
    first, second = (request["json"] for request in chat_bridge.fake.requests[:2])
    assert first["tool_choice"] == {"type": "function", "function": {"name": "file_search"}}
    assert "tool_choice" not in second

    # The client's own function called file_search is the client's to answer.
    chat_bridge.fake.reset()
    own = {"type": "function", "function": {"name": "file_search", "parameters": {
        "type": "object", "properties": {}}}}
    chat_bridge.fake.enqueue({"tool_calls": [_call("file_search", {}, "call_own")]})
    run = alice.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=chat_bridge.assistant(tools=[{"type": "file_search"},
                                                                       own]),
        poll_interval_ms=20)
    assert run.status == "requires_action"
    assert run.required_action.submit_tool_outputs.tool_calls[0].id == "call_own"
    assert [tool["function"]["name"] for tool in chat_bridge.fake.requests[0]["json"]["tools"]] \
        == ["file_search"]


# ---- files and stores named by threads, assistants and messages ------------------------------

def test_inline_vector_store_is_made_and_searched(searching, alice):
    file_id = upload(alice, "chess.txt", DOCUMENTS["chess.txt"])
    assistant = searching.assistant(tools=[{"type": "file_search"}])
    thread = alice.beta.threads.create(
        tool_resources={"file_search": {"vector_stores": [{"file_ids": [file_id],
                                                            "metadata": {"made": "inline"}}]}},
        messages=[{"role": "user", "content": "How does a bishop move?"}])

    [store_id] = thread.tool_resources.file_search.vector_store_ids
    store = alice.vector_stores.retrieve(store_id)
    assert store.metadata == {"made": "inline"}
    assert [f.id for f in alice.vector_stores.files.list(store_id).data] == [file_id]
    run = alice.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant,
                                                  poll_interval_ms=20)
    assert cited_files(reply_of(alice, thread.id, run.id)) == [file_id]


def test_message_attachments_go_into_the_thread_store(searching, alice):
    assistant = searching.assistant(tools=[{"type": "file_search"}])
    bread = upload(alice, "bread.txt", DOCUMENTS["bread.txt"])
    chess = upload(alice, "chess.txt", DOCUMENTS["chess.txt"])
    thread = alice.beta.threads.create()
    assert thread.tool_resources is None or not thread.tool_resources.file_search

    message = alice.beta.threads.messages.create(
        thread.id, role="user", content="What goes into bread dough?",
        attachments=[{"file_id": bread, "tools": [{"type": "file_search"}]},
                     {"file_id": chess, "tools": [{"type": "code_interpreter"}]}])
    assert [a.file_id for a in message.attachments] == [bread, chess]
    assert message.attachments[0].tools[0].type == "file_search"

    [store_id] = alice.beta.threads.retrieve(thread.id).tool_resources.file_search.vector_store_ids
    store = alice.vector_stores.retrieve(store_id)
    assert store.expires_after.days == 7 and store.expires_after.anchor == "last_active_at"
    # Only the file attached for file_search; the run waits for its ingestion.
    assert [f.id for f in alice.vector_stores.files.list(store_id).data] == [bread]
    run = alice.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant,
                                                  poll_interval_ms=20)
    assert cited_files(reply_of(alice, thread.id, run.id)) == [bread]

    # A later attachment joins the same store, here through a run's additional message.
    run = alice.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant, poll_interval_ms=20,
        additional_messages=[{"role": "user", "content": "How does the knight move in chess?",
                              "attachments": [{"file_id": chess,
                                               "tools": [{"type": "file_search"}]}]}])
    assert alice.beta.threads.retrieve(thread.id).tool_resources.file_search.vector_store_ids \
        == [store_id]
    assert cited_files(reply_of(alice, thread.id, run.id)) == [chess]


def test_create_and_run_with_attachments(searching, alice):
    assistant = searching.assistant(tools=[{"type": "file_search"}])
    volcano = upload(alice, "volcanoes.md", DOCUMENTS["volcanoes.md"])
    run = alice.beta.threads.create_and_run_poll(
        assistant_id=assistant, poll_interval_ms=20,
        thread={"messages": [{"role": "user", "content": "When does a volcano erupt?",
                              "attachments": [{"file_id": volcano,
                                               "tools": [{"type": "file_search"}]}]}]})
    assert run.status == "completed"
    assert cited_files(reply_of(alice, run.thread_id, run.id)) == [volcano]


def test_another_users_files_and_stores_are_not_found_anywhere(offline_bridge):
    alice, bob = offline_bridge.sdk("alice"), offline_bridge.sdk("bob")
    admin = offline_bridge.sdk("admin", admin=True)
    store_id, ids = ingested_store(alice, names=("chess.txt",))
    file_id = ids["chess.txt"]
    bob_thread = bob.beta.threads.create()
    attempts = {
        "thread store": lambda: bob.beta.threads.create(
            tool_resources={"file_search": {"vector_store_ids": [store_id]}}),
        "thread modify": lambda: bob.beta.threads.update(
            bob_thread.id, tool_resources={"file_search": {"vector_store_ids": [store_id]}}),
        "code interpreter file": lambda: bob.beta.threads.create(
            tool_resources={"code_interpreter": {"file_ids": [file_id]}}),
        "inline store file": lambda: bob.beta.threads.create(
            tool_resources={"file_search": {"vector_stores": [{"file_ids": [file_id]}]}}),
        "attachment": lambda: bob.beta.threads.messages.create(
            bob_thread.id, role="user", content="hi",
            attachments=[{"file_id": file_id, "tools": [{"type": "file_search"}]}]),
        "thread message attachment": lambda: bob.beta.threads.create(messages=[{
            "role": "user", "content": "hi", "attachments": [{"file_id": file_id, "tools": []}]}]),
        "assistant store": lambda: admin.beta.assistants.create(
            model="fake-model", tool_resources={"file_search": {"vector_store_ids": [store_id]}}),
        "missing store": lambda: alice.beta.threads.create(
            tool_resources={"file_search": {"vector_store_ids": ["vs_missing"]}}),
    }
    for name, attempt in attempts.items():
        with pytest.raises(openai.NotFoundError) as caught:
            attempt()
        assert caught.value.body["type"] == "invalid_request_error", name
    # Nothing was written on bob's side.
    assert bob.beta.threads.messages.list(bob_thread.id).data == []
    assert bob.vector_stores.list().data == []


def test_both_store_forms_at_once_are_refused(offline_bridge):
    alice = offline_bridge.sdk("alice")
    store_id, ids = ingested_store(alice, names=("bread.txt",))
    with pytest.raises(openai.BadRequestError) as caught:
        alice.beta.threads.create(tool_resources={"file_search": {
            "vector_store_ids": [store_id],
            "vector_stores": [{"file_ids": [ids["bread.txt"]]}]}})
    assert caught.value.body["param"] == "tool_resources.file_search"


# ---- responses and assistants: the provider's copies -------------------------------------------

@pytest.fixture(params=("responses", "assistants"))
def upstream(request, start_bridge):
    return start_bridge(request.param)


def _registry_copies(bridge) -> dict[str, str | None]:
    from bridge.extensions import db
    from bridge.models import File

    with bridge.app.app_context():
        copies = dict(db.session.execute(db.select(File.id, File.upstream_id)).all())
        db.session.remove()
    return copies


def test_provider_copies_follow_the_registry(upstream):
    alice, fake = upstream.sdk("alice"), upstream.fake
    store_id, ids = ingested_store(alice, names=("bread.txt", "chess.txt"))
    assistant = upstream.assistant(tools=[{"type": "file_search"}])
    thread_id, run = ask(alice, assistant, "How does the knight move in chess?", store_id)
    assert cited_files(reply_of(alice, thread_id, run.id)) == [ids["chess.txt"]]

    # One upload per file, one store at the provider holding them; our ids never go there
    # and theirs never come back.
    copies = _registry_copies(upstream)
    assert set(copies) == set(ids.values()) and all(copies.values())
    assert {f["filename"] for f in fake.files.values()} == {"bread.txt", "chess.txt"}
    [copy_id] = fake.vector_stores
    assert set(fake.vector_store_files(copy_id)) == set(copies.values())
    if upstream.engine == "responses":
        sent = [r["json"] for r in fake.requests if r["path"] == "/v1/responses"][0]
        [tool] = [t for t in sent["tools"] if t["type"] == "file_search"]
        assert tool["vector_store_ids"] == [copy_id]
        assert sent["include"] == ["file_search_call.results"]
    steps = search_steps(alice, thread_id, run.id, include=[SEARCH_CONTENTS])
    results = steps[0].step_details.tool_calls[0].file_search.results
    assert {result.file_id for result in results} <= set(ids.values())
    assert "knight" in results[0].content[0].text

    # A file attached later is in the copy before the next run; a detached one leaves it.
    volcano = upload(alice, "volcanoes.md", DOCUMENTS["volcanoes.md"])
    alice.vector_stores.files.create_and_poll(vector_store_id=store_id, file_id=volcano,
                                              poll_interval_ms=20)
    alice.vector_stores.files.delete(ids["bread.txt"], vector_store_id=store_id)
    thread_id, run = ask(alice, assistant, "Why does a volcano erupt?", store_id)
    assert cited_files(reply_of(alice, thread_id, run.id)) == [volcano]
    copies = _registry_copies(upstream)
    assert set(fake.vector_store_files(copy_id)) == {copies[volcano], copies[ids["chess.txt"]]}

    # Deleting here deletes there.
    alice.files.delete(volcano)
    assert copies[volcano] not in fake.files
    alice.vector_stores.delete(store_id)
    assert copy_id not in fake.vector_stores


def test_the_sdk_flow_end_to_end(searching):
    """The official SDK's own helpers, from upload to a cited answer, on every engine."""
    alice = searching.sdk("alice")
    store = alice.vector_stores.create(name="notes")
    first = alice.files.create(file=("bread.txt", io.BytesIO(DOCUMENTS["bread.txt"].encode())),
                               purpose="assistants")
    attached = alice.vector_stores.files.create_and_poll(vector_store_id=store.id,
                                                         file_id=first.id, poll_interval_ms=20)
    assert attached.status == "completed"
    batch = alice.vector_stores.file_batches.upload_and_poll(
        vector_store_id=store.id, poll_interval_ms=20,
        files=[(name, io.BytesIO(DOCUMENTS[name].encode())) for name in ("chess.txt",
                                                                          "volcanoes.md")])
    assert batch.status == "completed" and batch.file_counts.completed == 2
    names = {f.id: f.filename for f in alice.files.list()}
    assert sorted(names.values()) == ["bread.txt", "chess.txt", "volcanoes.md"]

    assistant = searching.assistant(tools=[{"type": "file_search"}])
    thread_id, run = ask(alice, assistant, "Why does a volcano erupt?", store.id)

    assert run.status == "completed"
    [cited] = cited_files(reply_of(alice, thread_id, run.id))
    assert names[cited] == "volcanoes.md"


def test_code_interpreter_files_reach_the_provider(upstream):
    alice, fake = upstream.sdk("alice"), upstream.fake
    data = upload(alice, "data.csv", "city,rain\nOslo,12\n")
    assistant = upstream.assistant(tools=[{"type": "code_interpreter"}])
    thread = alice.beta.threads.create(
        tool_resources={"code_interpreter": {"file_ids": [data]}},
        messages=[{"role": "user", "content": "Plot the rain."}])
    alice.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant,
                                            poll_interval_ms=20)
    copy = _registry_copies(upstream)[data]
    assert copy and fake.file_content(copy) == b"city,rain\nOslo,12\n"
    if upstream.engine == "responses":
        sent = [r["json"] for r in fake.requests if r["path"] == "/v1/responses"][0]
        [tool] = sent["tools"]
        assert tool == {"type": "code_interpreter", "container": {"type": "auto",
                                                                  "file_ids": [copy]}}
    else:
        [upstream_thread] = [r["json"] for r in fake.requests if r["path"] == "/v1/threads"]
        assert upstream_thread["tool_resources"] == {"code_interpreter": {"file_ids": [copy]}}
    # Our thread still names our file.
    assert alice.beta.threads.retrieve(thread.id).tool_resources.code_interpreter.file_ids == [data]
