"""ChatKit attachments: the two-phase upload onto the user's own files, messages that carry
them, and replies that cite them.

`attachments.create` declares a file and answers with an upload descriptor; the bytes go to the
URL it names (multipart with a `file` part, as ChatKit's front end sends them, or the raw
body), and become a /v1 file of the user's. A user message with the attachment is a /v1
message attaching the file for `file_search`, the file goes into the thread's vector store, the
run searches it, and the reply's citation is a ChatKit annotation naming the file, in the
streamed item and in `items.list`. Another user's attachment is a 404 everywhere.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx2 as httpx
import pytest
from chatkit.types import (Annotation, FileAttachment, FileSource, InferenceOptions,
                           ThreadAddUserMessageParams, ThreadCreateParams, ThreadItem,
                           ThreadsAddUserMessageReq, ThreadsCreateReq, UserMessageInput,
                           UserMessageTextContent)
from pydantic import TypeAdapter
from sqlalchemy import func, select, update

from bridge.chatkit import attachments
from bridge.extensions import db
from bridge.models import ChatKitAttachment
from tests.conftest import ENGINES, wait_for
from tests.test_chatkit import post, reply_of, streamed

ITEMS = TypeAdapter(list[ThreadItem])
CHESS = b"In chess the bishop moves diagonally, and the knight jumps in an L shape."
BREAD = b"Baking bread needs flour, water, salt and yeast, and a hot oven."


def message(text: str, *attachment_ids: str) -> UserMessageInput:
    return UserMessageInput(content=[UserMessageTextContent(text=text)],
                            attachments=list(attachment_ids), inference_options=InferenceOptions())


def declare(bridge, name: str, size: int, mime_type: str = "text/plain",
            user: str = "alice") -> httpx.Response:
    return post(bridge, {"type": "attachments.create",
                         "params": {"name": name, "size": size, "mime_type": mime_type}}, user=user)


def upload(bridge, attachment: dict[str, Any], data: bytes, *, user: str = "alice",
           raw: bool = False) -> httpx.Response:
    """Send the bytes as ChatKit's front end does: a POST of a form with a `file` part."""
    descriptor = attachment["upload_descriptor"]
    headers = {**descriptor.get("headers", {}), **bridge.headers(user)}
    if raw:
        return httpx.request(descriptor["method"], descriptor["url"], content=data,
                             headers={**headers, "Content-Type": "application/octet-stream"})
    return httpx.request(descriptor["method"], descriptor["url"], headers=headers,
                         files={"file": (attachment["name"], data, attachment["mime_type"])})


def attached(bridge, name: str, data: bytes, user: str = "alice") -> dict[str, Any]:
    """An attachment of the user's, declared and uploaded."""
    made = declare(bridge, name, len(data), user=user)
    assert made.status_code == 200, made.text
    sent = upload(bridge, made.json(), data, user=user)
    assert sent.status_code == 200, sent.text
    return sent.json()


def v1(bridge, path: str, user: str = "alice") -> httpx.Response:
    return httpx.get(bridge.api + path, headers=bridge.headers(user))


def listed_items(bridge, thread_id: str, user: str = "alice") -> list:
    page = post(bridge, {"type": "items.list", "params": {"thread_id": thread_id,
                                                          "order": "asc"}}, user=user)
    assert page.status_code == 200, page.text
    return ITEMS.validate_python(page.json()["data"])


def done_items(events: list, kind: str) -> list:
    return [event.item for event in events
            if event.type == "thread.item.done" and event.item.type == kind]


def attachment_rows(bridge) -> int:
    with bridge.app.app_context():
        try:
            return db.session.scalar(select(func.count()).select_from(ChatKitAttachment))
        finally:
            db.session.remove()


@pytest.fixture(params=ENGINES)
def searching(request, start_bridge):
    """A bridge whose ChatKit assistant has no tools of its own, on each engine (the upstream
    ones search the provider's copies of the thread's store)."""
    bridge = start_bridge(request.param, CHATKIT_ASSISTANT="helper")
    bridge.assistant(name="helper")
    return bridge


@pytest.fixture
def offline(start_bridge):
    bridge = start_bridge("offline", CHATKIT_ASSISTANT="helper")
    bridge.assistant(name="helper")
    return bridge


def script_search(bridge, question: str) -> None:
    """The chat model searches for the question, then quotes and cites what it found."""
    if bridge.engine == "chat":
        bridge.fake.enqueue(
            {"tool_calls": [{"id": "call_s", "type": "function", "function": {
                "name": "file_search", "arguments": json.dumps({"queries": [question]})}}]},
            "The knight jumps in an L shape 【0:0†chess.txt】.")


# ---- the whole flow --------------------------------------------------------------------------

def test_an_attached_file_is_searched_and_the_reply_cites_it(searching):
    bridge = searching
    made = declare(bridge, "chess.txt", len(CHESS))
    assert made.status_code == 200, made.text
    created = made.json()
    assert created["type"] == "file" and created["id"].startswith("atc_")
    assert (created["name"], created["mime_type"]) == ("chess.txt", "text/plain")
    descriptor = created["upload_descriptor"]
    assert descriptor["method"] == "POST"
    assert descriptor["url"] == f"{bridge.url}/chatkit/attachments/{created['id']}/upload"

    sent = upload(bridge, created, CHESS)
    assert sent.status_code == 200, sent.text
    assert sent.json() == {key: created[key] for key in ("type", "id", "name", "mime_type")}

    question = "How does the knight move in chess?"
    script_search(bridge, question)
    events = streamed(post(bridge, ThreadsCreateReq(params=ThreadCreateParams(
        input=message(question, created["id"])))))

    thread_id = events[0].thread.id
    (asked,) = done_items(events, "user_message")
    expected_attachment = FileAttachment(id=created["id"], name="chess.txt",
                                         mime_type="text/plain", thread_id=thread_id)
    assert asked.attachments == [expected_attachment]
    assert not [event for event in events if event.type == "error"], events
    (reply,) = done_items(events, "assistant_message")
    (content,) = reply.content
    assert "knight jumps in an L shape" in content.text
    # ChatKit shows the text without /v1's marker, and cites where the marker stood; so does
    # the text the front end built from the stream.
    assert "【" not in content.text and "†" not in content.text
    assert reply_of(events) == (reply.id, content.text)

    # /v1 sees the same: the file, the message attaching it, the thread's store holding it.
    files = v1(bridge, "/files").json()["data"]
    assert [(f["filename"], f["purpose"], f["bytes"]) for f in files] == [
        ("chess.txt", "assistants", len(CHESS))]
    file_id = files[0]["id"]
    assert v1(bridge, f"/files/{file_id}/content").content == CHESS
    messages = v1(bridge, f"/threads/{thread_id}/messages?order=asc").json()["data"]
    assert [m["id"] for m in messages] == [asked.id, reply.id]
    assert messages[0]["attachments"] == [{"file_id": file_id,
                                           "tools": [{"type": "file_search"}]}]
    annotation = messages[1]["content"][0]["text"]["annotations"][0]
    assert annotation["file_citation"]["file_id"] == file_id
    marked = messages[1]["content"][0]["text"]["value"]
    assert re.fullmatch(r"【\d+:\d+†chess\.txt】", annotation["text"])
    assert marked.replace(annotation["text"], "") == content.text
    cited = Annotation(source=FileSource(filename="chess.txt", title="chess.txt"),
                       index=annotation["start_index"])
    assert content.annotations == [cited]
    thread = v1(bridge, f"/threads/{thread_id}").json()
    (store_id,) = thread["tool_resources"]["file_search"]["vector_store_ids"]
    store_files = v1(bridge, f"/vector_stores/{store_id}/files").json()["data"]
    assert [(f["id"], f["status"]) for f in store_files] == [(file_id, "completed")]
    # The assistant has no tools: the run was given file_search, since the thread has a store.
    (run,) = v1(bridge, f"/threads/{thread_id}/runs").json()["data"]
    assert run["tools"] == [{"type": "file_search"}]

    # After a reload, the front end lists the same items: the attachment, the annotation.
    items = listed_items(bridge, thread_id)
    assert [item.id for item in items] == [asked.id, reply.id]
    assert items[0].attachments == [expected_attachment]
    assert items[1].content == [content]
    page = post(bridge, {"type": "threads.get_by_id", "params": {"thread_id": thread_id}})
    assert ITEMS.validate_python(page.json()["items"]["data"]) == items


def test_a_later_message_adds_its_file_to_the_same_store(offline):
    bridge = offline
    bread = attached(bridge, "bread.txt", BREAD)
    first = streamed(post(bridge, ThreadsCreateReq(params=ThreadCreateParams(
        input=message("What goes into bread?", bread["id"])))))
    thread_id = first[0].thread.id
    (store_id,) = v1(bridge, f"/threads/{thread_id}").json()[
        "tool_resources"]["file_search"]["vector_store_ids"]

    chess = attached(bridge, "chess.txt", CHESS)
    second = streamed(post(bridge, ThreadsAddUserMessageReq(params=ThreadAddUserMessageParams(
        thread_id=thread_id, input=message("How does the bishop move?", chess["id"])))))

    (reply,) = done_items(second, "assistant_message")
    assert "bishop moves diagonally" in reply.content[0].text
    assert [a.source.filename for a in reply.content[0].annotations] == ["chess.txt"]
    thread = v1(bridge, f"/threads/{thread_id}").json()
    assert thread["tool_resources"]["file_search"]["vector_store_ids"] == [store_id]
    assert len(v1(bridge, f"/vector_stores/{store_id}/files").json()["data"]) == 2
    # A message without attachments is answered from the thread's store as well.
    third = streamed(post(bridge, ThreadsAddUserMessageReq(params=ThreadAddUserMessageParams(
        thread_id=thread_id, input=message("What does bread dough need?")))))
    (reply,) = done_items(third, "assistant_message")
    assert [a.source.filename for a in reply.content[0].annotations] == ["bread.txt"]


def test_an_assistant_with_file_search_keeps_its_own_and_a_thread_without_files_adds_none(
        start_bridge):
    bridge = start_bridge("offline", CHATKIT_ASSISTANT="helper")
    search = {"type": "file_search", "file_search": {"max_num_results": 3}}
    bridge.assistant(name="helper", tools=[search])
    chess = attached(bridge, "chess.txt", CHESS)
    events = streamed(post(bridge, ThreadsCreateReq(params=ThreadCreateParams(
        input=message("How does the knight move?", chess["id"])))))
    (run,) = v1(bridge, f"/threads/{events[0].thread.id}/runs").json()["data"]
    assert run["tools"] == [search]

    bare = start_bridge("offline", CHATKIT_ASSISTANT="bare")
    bare.assistant(name="bare")
    unfiled = streamed(post(bare, ThreadsCreateReq(params=ThreadCreateParams(
        input=message("No files here")))))
    (run,) = v1(bare, f"/threads/{unfiled[0].thread.id}/runs").json()["data"]
    assert run["tools"] == []


def test_the_upload_takes_a_raw_body_and_only_once(offline):
    bridge = offline
    made = declare(bridge, "notes.md", len(BREAD), mime_type="").json()
    assert made["mime_type"] == "text/markdown"  # guessed from the name when the browser had none

    sent = upload(bridge, made, BREAD, raw=True)
    assert sent.status_code == 200, sent.text
    (file,) = v1(bridge, "/files").json()["data"]
    assert (file["filename"], file["bytes"]) == ("notes.md", len(BREAD))
    assert v1(bridge, f"/files/{file['id']}/content").content == BREAD

    again = upload(bridge, made, CHESS)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "attachment_already_uploaded"
    assert len(v1(bridge, "/files").json()["data"]) == 1


def test_the_upload_needs_the_token_and_the_file_part(offline):
    bridge = offline
    made = declare(bridge, "chess.txt", len(CHESS)).json()
    url = made["upload_descriptor"]["url"]

    anonymous = httpx.post(url, files={"file": ("chess.txt", CHESS)})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "invalid_request_error"
    wrong_part = httpx.post(url, files={"document": ("chess.txt", CHESS)},
                            headers=bridge.headers("alice"))
    assert wrong_part.status_code == 400 and wrong_part.json()["error"]["param"] == "file"
    assert v1(bridge, "/files").json()["data"] == []
    assert upload(bridge, made, CHESS).status_code == 200


def test_a_message_may_only_carry_uploaded_attachments_once(offline):
    bridge = offline
    pending = declare(bridge, "chess.txt", len(CHESS)).json()

    early = post(bridge, ThreadsCreateReq(params=ThreadCreateParams(
        input=message("Read this", pending["id"]))))
    assert (early.status_code, early.headers["content-type"]) == (400, "application/json")
    assert early.json()["error"]["code"] == "attachment_not_uploaded"
    assert early.json()["error"]["param"] == "input.attachments"

    upload(bridge, pending, CHESS)
    twice = post(bridge, ThreadsCreateReq(params=ThreadCreateParams(
        input=message("Read this", pending["id"], pending["id"]))))
    assert twice.status_code == 400 and twice.json()["error"]["code"] == "invalid_chatkit_request"
    assert v1(bridge, "/threads").json()["data"] == []

    events = streamed(post(bridge, ThreadsCreateReq(params=ThreadCreateParams(
        input=message("Read this", pending["id"])))))
    reused = post(bridge, ThreadsAddUserMessageReq(params=ThreadAddUserMessageParams(
        thread_id=events[0].thread.id, input=message("And again", pending["id"]))))
    assert reused.status_code == 400
    assert reused.json()["error"]["code"] == "attachment_already_sent"
    assert len(v1(bridge, f"/threads/{events[0].thread.id}/messages").json()["data"]) == 2


def test_a_file_of_the_assistants_store_is_cited_by_name_also_once_deleted(start_bridge):
    bridge = start_bridge("offline", CHATKIT_ASSISTANT="helper")
    admin = bridge.sdk("admin", admin=True)
    file_id = admin.files.create(file=("chess.txt", CHESS), purpose="assistants").id
    store = admin.vector_stores.create(file_ids=[file_id])
    wait_for(lambda: admin.vector_stores.retrieve(store.id).status == "completed")
    bridge.assistant(name="helper", tools=[{"type": "file_search"}],
                     tool_resources={"file_search": {"vector_store_ids": [store.id]}})

    events = streamed(post(bridge, ThreadsCreateReq(params=ThreadCreateParams(
        input=message("How does the knight move?")))))
    (reply,) = done_items(events, "assistant_message")
    (marked,) = bridge.sdk("alice").beta.threads.messages.list(
        events[0].thread.id, order="asc").data[1].content
    (citation,) = marked.text.annotations
    assert reply.content[0].text == marked.text.value.replace(citation.text, "")
    expected = [Annotation(source=FileSource(filename="chess.txt", title="chess.txt"),
                           index=citation.start_index)]
    assert reply.content[0].annotations == expected

    admin.files.delete(file_id)  # the marker still names it
    assert listed_items(bridge, events[0].thread.id)[1].content[0].annotations == expected


# ---- sizes and quota -------------------------------------------------------------------------

def test_sizes_over_the_limit_are_refused_before_anything(start_bridge):
    bridge = start_bridge("offline", CHATKIT_ASSISTANT="helper", FILE_MAX_BYTES=100,
                          FILE_QUOTA_BYTES=150)

    too_large = declare(bridge, "big.txt", 101)
    assert (too_large.status_code, too_large.headers["content-type"]) == (413, "application/json")
    assert too_large.json()["error"] | {"message": None} == {
        "message": None, "type": "invalid_request_error", "param": "size",
        "code": "file_too_large"}
    assert "100 bytes" in too_large.json()["error"]["message"]
    empty = declare(bridge, "empty.txt", 0)
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_file"
    nameless = declare(bridge, "../", 10)
    assert nameless.status_code == 400 and nameless.json()["error"]["param"] == "name"
    assert attachment_rows(bridge) == 0

    # Declared small, sent large: the upload is refused and the attachment still waits.
    made = declare(bridge, "notes.txt", 10).json()
    sent = upload(bridge, made, b"x" * 101)
    assert sent.status_code == 413 and sent.json()["error"]["code"] == "file_too_large"
    raw = upload(bridge, made, b"x" * 101, raw=True)
    assert raw.status_code == 413 and raw.json()["error"]["code"] == "file_too_large"
    assert v1(bridge, "/files").json()["data"] == []
    assert upload(bridge, made, b"x" * 100).status_code == 200

    # The quota holds 150 bytes: 100 are taken.
    over = declare(bridge, "more.txt", 51)
    assert over.status_code == 400 and over.json()["error"]["code"] == "storage_quota_exceeded"
    fits = declare(bridge, "more.txt", 50).json()
    assert upload(bridge, fits, b"y" * 60).json()["error"]["code"] == "storage_quota_exceeded"
    assert upload(bridge, fits, b"y" * 50).status_code == 200


def test_declarations_waiting_for_their_bytes_are_bounded_and_abandoned_ones_go(offline,
                                                                                 monkeypatch):
    bridge = offline
    monkeypatch.setattr(attachments, "PENDING_LIMIT", 3)
    sent = attached(bridge, "sent.txt", CHESS)  # uploaded: it no longer waits
    waiting = [declare(bridge, f"w{n}.txt", 10).json() for n in range(3)]
    assert declare(bridge, "w3.txt", 10, user="bob").status_code == 200  # Bob's are his own

    refused = declare(bridge, "one-more.txt", 10)
    assert (refused.status_code, refused.headers["content-type"]) == (400, "application/json")
    assert refused.json()["error"]["code"] == "too_many_pending_attachments"
    assert "3 attachments are waiting" in refused.json()["error"]["message"]
    # Uploading one makes room; the uploaded one stays whatever its age.
    assert upload(bridge, waiting[0], b"x" * 10).status_code == 200
    assert declare(bridge, "room.txt", 10).status_code == 200
    assert declare(bridge, "full.txt", 10).status_code == 400

    # An hour later the others are uploads that never came: the next declaration removes them.
    with bridge.app.app_context():
        db.session.execute(update(ChatKitAttachment).values(
            created_at=ChatKitAttachment.created_at - attachments.PENDING_SECONDS - 1))
        db.session.commit()
        db.session.remove()
    assert declare(bridge, "later.txt", 10).status_code == 200
    gone = upload(bridge, waiting[1], b"x" * 10)
    assert gone.status_code == 404 and gone.headers["content-type"] == "application/json"
    assert upload(bridge, declare(bridge, "w.txt", 10, user="bob").json(), b"x" * 10,
                  user="bob").status_code == 200
    names = sorted(f["filename"] for f in v1(bridge, "/files").json()["data"])
    assert names == sorted([sent["name"], waiting[0]["name"]])
    # Alice's two uploaded and her latest; Bob's upload (his old declaration went with it).
    assert attachment_rows(bridge) == 3 + 1


# ---- another user's attachment -----------------------------------------------------------------

def test_another_users_attachment_is_a_404_everywhere(offline):
    bridge = offline
    uploaded = attached(bridge, "chess.txt", CHESS)
    pending = declare(bridge, "bread.txt", len(BREAD)).json()
    missing = "atc_" + "A" * 24
    bob_thread = streamed(post(bridge, ThreadsCreateReq(params=ThreadCreateParams(
        input=message("bob's own"))), user="bob"))[0].thread.id

    def answers(attachment_id: str) -> dict[str, httpx.Response]:
        url = f"{bridge.url}/chatkit/attachments/{attachment_id}/upload"
        return {
            "upload": httpx.post(url, files={"file": ("x.txt", b"bob's bytes")},
                                 headers=bridge.headers("bob")),
            "raw upload": httpx.post(url, content=b"bob's bytes", headers=bridge.headers("bob")),
            "delete": post(bridge, {"type": "attachments.delete",
                                    "params": {"attachment_id": attachment_id}}, user="bob"),
            "new thread": post(bridge, ThreadsCreateReq(params=ThreadCreateParams(
                input=message("hi", attachment_id))), user="bob"),
            "message": post(bridge, ThreadsAddUserMessageReq(params=ThreadAddUserMessageParams(
                thread_id=bob_thread, input=message("hi", attachment_id))), user="bob"),
        }

    baseline = answers(missing)
    for theirs in (uploaded["id"], pending["id"]):
        for name, answer in answers(theirs).items():
            assert (answer.status_code, answer.headers["content-type"]) == (
                404, "application/json"), name
            expected = baseline[name].json()
            expected["error"]["message"] = expected["error"]["message"].replace(missing, theirs)
            assert answer.json() == expected, name

    # Nothing of Bob's was written, and Alice's attachments are as they were.
    assert v1(bridge, "/files", user="bob").json()["data"] == []
    assert len(v1(bridge, "/threads", user="bob").json()["data"]) == 1
    assert len(v1(bridge, f"/threads/{bob_thread}/messages", user="bob").json()["data"]) == 2
    assert upload(bridge, pending, BREAD).status_code == 200
    events = streamed(post(bridge, ThreadsCreateReq(params=ThreadCreateParams(
        input=message("How does the knight move?", uploaded["id"], pending["id"])))))
    (asked,) = done_items(events, "user_message")
    assert [a.id for a in asked.attachments] == [uploaded["id"], pending["id"]]


# ---- deleting ----------------------------------------------------------------------------------

def test_delete_removes_the_attachment_and_its_file(offline):
    bridge = offline
    waiting = declare(bridge, "never.txt", 5).json()
    done = post(bridge, {"type": "attachments.delete", "params": {"attachment_id": waiting["id"]}})
    assert (done.status_code, done.json()) == (200, {})
    assert upload(bridge, waiting, b"late!").status_code == 404

    chess = attached(bridge, "chess.txt", CHESS)
    (file,) = v1(bridge, "/files").json()["data"]
    done = post(bridge, {"type": "attachments.delete", "params": {"attachment_id": chess["id"]}})
    assert done.status_code == 200
    assert v1(bridge, f"/files/{file['id']}").status_code == 404
    assert attachment_rows(bridge) == 0
    again = post(bridge, {"type": "attachments.delete", "params": {"attachment_id": chess["id"]}})
    assert again.status_code == 404
    gone = post(bridge, ThreadsCreateReq(params=ThreadCreateParams(
        input=message("Read it", chess["id"]))))
    assert gone.status_code == 404


def test_a_sent_attachment_goes_with_its_file_wherever_it_is_deleted(offline):
    bridge = offline
    chess = attached(bridge, "chess.txt", CHESS)
    bread = attached(bridge, "bread.txt", BREAD)
    events = streamed(post(bridge, ThreadsCreateReq(params=ThreadCreateParams(
        input=message("Read these", chess["id"], bread["id"])))))
    thread_id = events[0].thread.id
    chess_file, bread_file = (f["file_id"] for f in v1(
        bridge, f"/threads/{thread_id}/messages?order=asc").json()["data"][0]["attachments"])
    (store_id,) = v1(bridge, f"/threads/{thread_id}").json()[
        "tool_resources"]["file_search"]["vector_store_ids"]

    # Through ChatKit, and through /v1: the attachment and its file go together.
    post(bridge, {"type": "attachments.delete", "params": {"attachment_id": chess["id"]}})
    deleted = httpx.delete(f"{bridge.api}/files/{bread_file}", headers=bridge.headers("alice"))
    assert deleted.status_code == 200

    assert attachment_rows(bridge) == 0
    assert v1(bridge, f"/vector_stores/{store_id}/files").json()["data"] == []
    assert listed_items(bridge, thread_id)[0].attachments == []
    bread_delete = post(bridge, {"type": "attachments.delete",
                                 "params": {"attachment_id": bread["id"]}})
    assert bread_delete.status_code == 404
    # The /v1 message keeps naming the files, as a message does once its file is deleted.
    assert [a["file_id"] for a in v1(bridge, f"/threads/{thread_id}/messages?order=asc"
                                     ).json()["data"][0]["attachments"]] == [chess_file, bread_file]


# ---- messages from /v1, and browsers elsewhere -------------------------------------------------

def test_a_file_attached_through_v1_shows_as_an_attachment(offline):
    bridge = offline
    client = bridge.sdk("alice")
    file_id = client.files.create(file=("chess.txt", CHESS), purpose="assistants").id
    thread = client.beta.threads.create(messages=[{
        "role": "user", "content": "From the SDK",
        "attachments": [{"file_id": file_id, "tools": [{"type": "file_search"}]}]}])

    (item,) = listed_items(bridge, thread.id)
    assert item.attachments == [FileAttachment(id=file_id, name="chess.txt",
                                               mime_type="text/plain", thread_id=thread.id)]
    events = streamed(post(bridge, ThreadsAddUserMessageReq(params=ThreadAddUserMessageParams(
        thread_id=thread.id, input=message("How does the knight move?")))))
    (reply,) = done_items(events, "assistant_message")
    assert [a.source.filename for a in reply.content[0].annotations] == ["chess.txt"]


def test_a_browser_on_a_configured_origin_may_upload(make_app):
    origin = "https://chat.example.org"
    client = make_app(CORS_ORIGINS=origin).test_client()

    answer = client.options("/chatkit/attachments/atc_x/upload", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization"})

    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == origin


def test_the_upload_url_uses_the_public_base_url(start_bridge):
    bridge = start_bridge("offline", PUBLIC_BASE_URL="https://chat.example.org/bridge/")
    made = declare(bridge, "chess.txt", 10).json()
    assert made["upload_descriptor"]["url"] == (
        f"https://chat.example.org/bridge/chatkit/attachments/{made['id']}/upload")
