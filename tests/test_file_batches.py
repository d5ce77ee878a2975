"""Vector store file batches through the official SDK: create and poll, upload and poll, retrieve,
list a batch's files, cancel, files attached before the batch, isolation, bad input, and the
migration that adds them.
"""

from __future__ import annotations

import io
import json

import openai
import pytest

from tests.conftest import make_token, wait_for
from tests.test_vector_stores import upload

STATIC = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 10}}


@pytest.fixture
def alice(offline_bridge):
    return offline_bridge.sdk("alice")


@pytest.fixture
def bob(offline_bridge):
    return offline_bridge.sdk("bob")


def test_create_and_poll_ingests_every_file(alice):
    store = alice.vector_stores.create(name="batched")
    ids = [upload(alice, f"doc{i}.txt", f"document number {i} about topic{i}") for i in range(3)]

    # No poll interval: the SDK waits as long as the batch's openai-poll-after-ms says.
    batch = alice.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=ids, attributes={"team": "ops", "year": 2026},
        chunking_strategy=STATIC)

    assert batch.object == "vector_store.files_batch" and batch.id.startswith("vsfb_")
    assert batch.vector_store_id == store.id and batch.status == "completed"
    counts = batch.file_counts
    assert (counts.completed, counts.in_progress, counts.failed, counts.cancelled,
            counts.total) == (3, 0, 0, 0, 3)
    for file_id in ids:
        attached = alice.vector_stores.files.retrieve(file_id, vector_store_id=store.id)
        assert attached.attributes == {"team": "ops", "year": 2026}
        assert attached.chunking_strategy.static.max_chunk_size_tokens == 100
    assert alice.vector_stores.retrieve(store.id).file_counts.completed == 3
    best = alice.vector_stores.search(store.id, query="topic1").data[0]
    assert best.file_id == ids[1] and best.attributes == {"team": "ops", "year": 2026}


def test_files_carry_their_own_attributes_and_chunking(alice):
    store = alice.vector_stores.create()
    first, second = upload(alice, "a.txt", "alpha words"), upload(alice, "b.txt", "beta words")

    batch = alice.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, poll_interval_ms=20,
        files=[{"file_id": first, "attributes": {"kind": "a"}, "chunking_strategy": STATIC},
               {"file_id": second}, {"file_id": first, "attributes": {"kind": "again"}}],
        # Ignored with `files`, as OpenAI ignores them.
        attributes={"global": True}, chunking_strategy={"type": "auto"})

    assert batch.file_counts.total == batch.file_counts.completed == 2
    a = alice.vector_stores.files.retrieve(first, vector_store_id=store.id)
    b = alice.vector_stores.files.retrieve(second, vector_store_id=store.id)
    assert a.attributes == {"kind": "a"} and a.chunking_strategy.static.max_chunk_size_tokens == 100
    assert b.attributes is None and b.chunking_strategy.static.max_chunk_size_tokens == 800


def test_upload_and_poll_uploads_then_batches(alice):
    store = alice.vector_stores.create()
    earlier = upload(alice, "earlier.txt", "uploaded before the batch")

    batch = alice.vector_stores.file_batches.upload_and_poll(
        vector_store_id=store.id, file_ids=[earlier], poll_interval_ms=20,
        files=[("one.md", io.BytesIO(b"# One\n\nfirst upload")),
               ("two.txt", io.BytesIO(b"second upload"))])

    assert batch.status == "completed" and batch.file_counts.completed == 3
    listed = alice.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id)
    names = {alice.files.retrieve(item.id).filename for item in listed.data}
    assert names == {"earlier.txt", "one.md", "two.txt"}


def test_retrieve_and_list_files_with_filter_and_cursors(alice):
    store = alice.vector_stores.create()
    good = [upload(alice, f"good{i}.txt", f"good text {i}") for i in range(3)]
    bad = upload(alice, "bad.txt", b"\xff\xfe not utf-8")
    created = alice.vector_stores.file_batches.create(vector_store_id=store.id,
                                                      file_ids=[*good, bad])
    assert created.status in ("in_progress", "completed")
    assert created.file_counts.total == 4

    batch = alice.vector_stores.file_batches.poll(created.id, vector_store_id=store.id,
                                                  poll_interval_ms=20)
    assert batch.status == "completed"  # a failed file does not fail the batch
    assert (batch.file_counts.completed, batch.file_counts.failed) == (3, 1)
    again = alice.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id)
    assert again.model_dump() == batch.model_dump()

    files = alice.vector_stores.file_batches.list_files
    failed = files(batch.id, vector_store_id=store.id, filter="failed").data
    assert [item.id for item in failed] == [bad]
    assert failed[0].last_error.code == "invalid_file"
    assert [item.id for item in files(batch.id, vector_store_id=store.id, filter="completed",
                                      order="asc").data] == good
    assert files(batch.id, vector_store_id=store.id, filter="cancelled").data == []
    page = files(batch.id, vector_store_id=store.id, limit=2, order="asc")
    assert [item.id for item in page.data] == good[:2] and page.has_more
    rest = files(batch.id, vector_store_id=store.id, limit=2, order="asc", after=good[1])
    assert [item.id for item in rest.data] == [good[2], bad] and not rest.has_more
    back = files(batch.id, vector_store_id=store.id, limit=2, order="asc", before=bad)
    assert [item.id for item in back.data] == good[1:]
    # The SDK's auto-pagination walks the whole batch.
    assert [item.id for item in files(batch.id, vector_store_id=store.id, limit=1,
                                      order="asc")] == [*good, bad]


def test_a_file_attached_before_the_batch_counts_in_it_as_it_is(alice):
    store = alice.vector_stores.create()
    before = upload(alice, "before.txt", "attached on its own first")
    alice.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=before,
                                              attributes={"kept": "yes"}, poll_interval_ms=20)
    new = upload(alice, "new.txt", "attached by the batch")

    first = alice.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=[before, new], attributes={"batch": 1},
        poll_interval_ms=20)
    second = alice.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=[new], poll_interval_ms=20)

    assert first.file_counts.total == first.file_counts.completed == 2
    assert second.file_counts.total == 1
    assert alice.vector_stores.files.retrieve(before, vector_store_id=store.id).attributes == {
        "kept": "yes"}
    assert alice.vector_stores.retrieve(store.id).file_counts.total == 2
    assert len(alice.vector_stores.search(store.id, query="attached").data) == 2

    # Detaching a file takes it out of every batch; deleting the store takes the batches.
    alice.vector_stores.files.delete(new, vector_store_id=store.id)
    assert alice.vector_stores.file_batches.retrieve(
        second.id, vector_store_id=store.id).file_counts.total == 0
    alice.vector_stores.delete(store.id)
    with pytest.raises(openai.NotFoundError):
        alice.vector_stores.file_batches.retrieve(first.id, vector_store_id=store.id)


def test_cancel_stops_the_files_still_in_progress(start_bridge, held_extraction):
    # One ingestion thread, so the order is fixed: quick.txt ends, held-a.txt waits mid-way,
    # held-b.txt waits in the queue.
    bridge = start_bridge("offline", INGEST_WORKERS=1)
    alice = bridge.sdk("alice")
    store = alice.vector_stores.create()
    ids = [upload(alice, name, f"{name} apricot") for name in
           ("quick.txt", "held-a.txt", "held-b.txt")]
    batch = alice.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=ids)
    wait_for(lambda: held_extraction.started == ["held-a.txt"])
    assert alice.vector_stores.files.retrieve(ids[0], vector_store_id=store.id).status == \
        "completed"
    assert alice.vector_stores.file_batches.retrieve(
        batch.id, vector_store_id=store.id).status == "in_progress"

    cancelled = alice.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)

    assert cancelled.status == "cancelled"
    counts = cancelled.file_counts
    assert (counts.completed, counts.cancelled, counts.in_progress) == (1, 2, 0)
    # The ingestion under way and the one queued end without changing the cancelled files.
    held_extraction.release()
    # Without cancelling what is queued: held-b.txt's ingestion runs, and finds it cancelled.
    bridge.app.extensions["bridge.ingestion"].pool.shutdown(wait=True)
    assert held_extraction.started == ["held-a.txt"]
    listed = alice.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id,
                                                         filter="cancelled", order="asc")
    assert [item.id for item in listed.data] == ids[1:]
    assert all(item.usage_bytes == 0 for item in listed.data)
    assert [hit.file_id for hit in alice.vector_stores.search(store.id, query="apricot").data] \
        == [ids[0]]
    after = alice.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id)
    assert after.model_dump() == cancelled.model_dump()
    assert alice.vector_stores.retrieve(store.id).status == "completed"

    with pytest.raises(openai.BadRequestError) as again:
        alice.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)
    assert again.value.body["param"] == "batch_id"
    assert "'cancelled'" in again.value.body["message"]


def test_a_finished_batch_cannot_be_cancelled(alice):
    store = alice.vector_stores.create()
    batch = alice.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=[upload(alice, "a.txt", "words")], poll_interval_ms=20)
    with pytest.raises(openai.BadRequestError) as caught:
        alice.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)
    assert caught.value.body["message"] == \
        "Cannot cancel vector store file batch with status 'completed'."
    assert alice.vector_stores.file_batches.retrieve(
        batch.id, vector_store_id=store.id).status == "completed"


# ---- isolation ---------------------------------------------------------------------------------

def test_another_users_file_in_a_batch_is_a_404_and_nothing_is_attached(alice, bob):
    alice_file = upload(alice, "alice.txt", "alice's secret words")
    bob_file = upload(bob, "bob.txt", "bob's own words")
    store = bob.vector_stores.create()
    missing = "file-" + "C" * 24

    def refused(**body) -> dict:
        with pytest.raises(openai.NotFoundError) as caught:
            bob.vector_stores.file_batches.create(vector_store_id=store.id, **body)
        return caught.value.body

    foreign = refused(file_ids=[bob_file, alice_file])
    assert foreign["param"] == "file_id"
    assert foreign["message"].replace(alice_file, "X") == \
        refused(file_ids=[bob_file, missing])["message"].replace(missing, "X")
    assert refused(files=[{"file_id": bob_file}, {"file_id": alice_file}]) == foreign
    assert refused(file_ids=[bob_file, "not-a-file-id"])["param"] == "file_id"
    assert bob.vector_stores.retrieve(store.id).file_counts.total == 0
    assert bob.vector_stores.files.list(vector_store_id=store.id).data == []


def test_another_users_store_or_batch_is_a_404(alice, bob):
    store = alice.vector_stores.create()
    batch = alice.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=[upload(alice, "a.txt", "alice")], poll_interval_ms=20)
    bob_store = bob.vector_stores.create()
    bob_file = upload(bob, "b.txt", "bob")
    batches = bob.vector_stores.file_batches

    for call in (lambda: batches.create(vector_store_id=store.id, file_ids=[bob_file]),
                 lambda: batches.retrieve(batch.id, vector_store_id=store.id),
                 lambda: batches.cancel(batch.id, vector_store_id=store.id),
                 lambda: batches.list_files(batch.id, vector_store_id=store.id)):
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert caught.value.body["param"] == "vector_store_id"

    missing = "vsfb_" + "D" * 24
    for call in (batches.retrieve, batches.cancel, batches.list_files):
        answers = []
        for batch_id in (batch.id, missing):
            with pytest.raises(openai.NotFoundError) as caught:
                call(batch_id, vector_store_id=bob_store.id)
            answers.append(caught.value.response.content.replace(batch_id.encode(), b"<ID>"))
        assert answers[0] == answers[1]
        assert json.loads(answers[0])["error"]["param"] == "batch_id"
    # A batch is found under its own store only, also by its owner.
    with pytest.raises(openai.NotFoundError):
        alice.vector_stores.file_batches.retrieve(
            batch.id, vector_store_id=alice.vector_stores.create().id)
    assert alice.vector_stores.file_batches.retrieve(
        batch.id, vector_store_id=store.id).file_counts.total == 1


# ---- bad input ---------------------------------------------------------------------------------

BAD_BODIES = [
    ({}, "file_ids"),
    ({"file_ids": []}, "file_ids"),
    ({"file_ids": "{file}"}, "file_ids"),
    ({"file_ids": ["{file}"] * 2001}, "file_ids"),
    ({"file_ids": [""]}, "file_ids.0"),
    ({"file_ids": ["{file}"], "files": [{"file_id": "{file}"}]}, "files"),
    ({"files": []}, "files"),
    ({"files": [{}]}, "files.0.file_id"),
    ({"files": [{"file_id": "{file}", "extra": 1}]}, "files.0.extra"),
    ({"files": [{"file_id": "{file}", "chunking_strategy": {"type": "x"}}]},
     "files.0.chunking_strategy"),
    ({"files": [{"file_id": "{file}", "attributes": {"k": [1]}}]}, "files.0.attributes.k"),
    ({"file_ids": ["{file}"], "attributes": {"k": {"a": 1}}}, "attributes.k"),
    ({"file_ids": ["{file}"], "attributes": {f"k{i}": i for i in range(17)}}, "attributes"),
    ({"file_ids": ["{file}"], "chunking_strategy": {"type": "static", "static": {
        "max_chunk_size_tokens": 800, "chunk_overlap_tokens": 401}}}, "chunking_strategy.static"),
    ({"file_ids": ["{file}"], "unknown": 1}, "unknown"),
]


@pytest.mark.parametrize("body, param", BAD_BODIES, ids=[param for _, param in BAD_BODIES])
def test_bad_bodies_are_json_400s_naming_the_param(offline_bridge, alice, body, param):
    store = alice.vector_stores.create()
    file_id = upload(alice, "a.txt", "words")
    response = offline_bridge.app.test_client().post(
        f"/v1/vector_stores/{store.id}/file_batches",
        data=json.dumps(body).replace("{file}", file_id),
        headers={**offline_bridge.headers("alice"), "Content-Type": "application/json"})
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    assert alice.vector_stores.retrieve(store.id).file_counts.total == 0


def test_bad_list_queries_are_400s(offline_bridge, alice):
    store = alice.vector_stores.create()
    batch = alice.vector_stores.file_batches.create(
        vector_store_id=store.id, file_ids=[upload(alice, "a.txt", "words")])
    base = f"/v1/vector_stores/{store.id}/file_batches/{batch.id}/files"
    for query, param in (("filter=done", "filter"), ("limit=0", "limit"), ("limit=101", "limit"),
                         ("order=up", "order"), ("after=file-nope", "after"),
                         ("before=" + "file-" + "E" * 24, "before")):
        response = offline_bridge.app.test_client().get(
            f"{base}?{query}", headers=offline_bridge.headers("alice"))
        assert response.status_code == 400, (query, response.get_data(as_text=True))
        assert response.get_json()["error"]["param"] == param, query


# ---- the migration -----------------------------------------------------------------------------

def _registry_before_batches(app) -> dict[str, str]:
    """At revision 9c1d5e7a3b20: a store of alice's with one file ingested; its ids."""
    import sqlalchemy as sa

    from bridge.extensions import db

    def table(name: str, columns: str, json: str = ""):
        return sa.table(name, *(sa.column(column) for column in columns.split()),
                        *(sa.column(column, sa.JSON) for column in json.split()))

    files = table("files", "pk id user_id created_at filename purpose bytes blob_key")
    stores = table("vector_stores", "pk id user_id created_at name last_active_at",
                   json="metadata expires_after")
    attached = table("vector_store_files",
                     "pk id vector_store_pk file_pk created_at status usage_bytes",
                     json="chunking_strategy last_error attributes")
    chunks = table("vector_store_chunks", "vector_store_pk vector_store_file_pk position text")
    ids = {"file": "file-" + "M" * 24, "store": "vs_" + "M" * 24}
    with app.app_context():
        db.session.execute(files.insert().values(
            pk=1, id=ids["file"], user_id="alice", created_at=1, filename="old.txt",
            purpose="assistants", bytes=14, blob_key="k" * 32))
        db.session.execute(stores.insert().values(
            pk=1, id=ids["store"], user_id="alice", created_at=1, name="old", last_active_at=1,
            metadata={}, expires_after=None))
        db.session.execute(attached.insert().values(
            pk=1, id=ids["file"], vector_store_pk=1, file_pk=1, created_at=1, status="completed",
            usage_bytes=14, chunking_strategy={"type": "static", "static": {
                "max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}},
            last_error=None, attributes=None))
        db.session.execute(chunks.insert().values(
            vector_store_pk=1, vector_store_file_pk=1, position=0, text="migrated words"))
        db.session.commit()
        db.session.remove()
    return ids


def test_the_migration_keeps_existing_stores_and_their_chunks(make_app):
    from flask_migrate import downgrade, upgrade

    from bridge import MIGRATIONS

    app = make_app(AUTO_MIGRATE=False)
    with app.app_context():
        upgrade(directory=MIGRATIONS)  # a PostgreSQL test database may be at head already
        downgrade(directory=MIGRATIONS, revision="9c1d5e7a3b20")
    ids = _registry_before_batches(app)
    with app.app_context():
        upgrade(directory=MIGRATIONS)

    client = app.test_client()
    headers = {"Authorization": f"Bearer {make_token(app, 'alice')}"}
    base = f"/v1/vector_stores/{ids['store']}"
    found = client.post(base + "/search", json={"query": "migrated"}, headers=headers)
    assert [hit["file_id"] for hit in found.get_json()["data"]] == [ids["file"]]
    batch = client.post(base + "/file_batches", json={"file_ids": [ids["file"]]},
                        headers=headers).get_json()
    assert batch["status"] == "completed" and batch["file_counts"]["completed"] == 1

    with app.app_context():  # and back: the batches go, the store and its chunks stay
        downgrade(directory=MIGRATIONS, revision="9c1d5e7a3b20")
        upgrade(directory=MIGRATIONS)
    assert client.post(base + "/search", json={"query": "migrated"},
                       headers=headers).get_json()["data"]
    assert client.get(f"{base}/file_batches/{batch['id']}", headers=headers).status_code == 404
