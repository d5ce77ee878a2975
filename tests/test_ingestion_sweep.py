"""The ingestion sweep: a vector store file that a dead process left `in_progress` is ingested by
another sweep once, and ends `failed` if it stalls again; files a live process holds are left to
it; sweeps of several processes take a file over once.

A crash is simulated by attaching with the pool's `submit` dropped (the attachment is committed,
its ingestion never queued) and by ageing `held_at` past INGEST_STALE_SECONDS directly.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from bridge import retrieval
from bridge.extensions import db
from tests.conftest import wait_for
from tests.test_vector_stores import upload

STALE = 300  # INGEST_STALE_SECONDS' default, which the tests keep


def pool(bridge) -> retrieval.Ingestion:
    return bridge.app.extensions["bridge.ingestion"]


def sweep(app) -> None:
    """One pass of the app's ingestion sweeper, as its thread runs it."""
    with app.app_context():
        try:
            retrieval.sweep_ingestion()
        finally:
            db.session.remove()


def attachment(app, file_id: str) -> dict:
    with app.app_context():
        row = db.session.execute(text(
            "SELECT status, ingest_attempts, held_at, last_error FROM vector_store_files "
            "WHERE id = :id"), {"id": file_id}).mappings().one()
        db.session.remove()
    return dict(row)


def age(app, file_id: str, seconds: int = STALE + 1) -> None:
    """Make the file's hold `seconds` older, as if nobody had renewed it."""
    with app.app_context():
        db.session.execute(text("UPDATE vector_store_files SET held_at = held_at - :seconds "
                                "WHERE id = :id"), {"seconds": seconds, "id": file_id})
        db.session.commit()
        db.session.remove()


def orphan(bridge, monkeypatch, client, name: str, words: str) -> tuple[str, str]:
    """A store with a file attached by a process that died before ingesting it: (store, file)."""
    file_id = upload(client, name, words)
    store = client.vector_stores.create()
    with monkeypatch.context() as patch:
        patch.setattr(pool(bridge), "submit", lambda *args: None)
        client.vector_stores.files.create(vector_store_id=store.id, file_id=file_id)
    return store.id, file_id


@pytest.fixture
def alice(offline_bridge):
    return offline_bridge.sdk("alice")


def test_a_file_left_in_progress_is_ingested_by_the_next_sweep(offline_bridge, alice,
                                                                monkeypatch):
    store_id, file_id = orphan(offline_bridge, monkeypatch, alice, "lost.txt", "lost words")
    sweep(offline_bridge.app)  # within the bound: it may still be some process's
    assert attachment(offline_bridge.app, file_id)["ingest_attempts"] == 1

    age(offline_bridge.app, file_id)
    sweep(offline_bridge.app)

    done = alice.vector_stores.files.poll(file_id, vector_store_id=store_id, poll_interval_ms=20)
    assert done.status == "completed" and done.last_error is None
    assert attachment(offline_bridge.app, file_id)["ingest_attempts"] == 2
    assert [hit.file_id for hit in alice.vector_stores.search(store_id, query="lost").data] == [
        file_id]


def test_a_file_that_stalls_again_ends_failed(offline_bridge, alice, monkeypatch):
    store_id, file_id = orphan(offline_bridge, monkeypatch, alice, "doomed.txt", "doomed")
    batch = alice.vector_stores.file_batches.create(vector_store_id=store_id, file_ids=[file_id])
    with monkeypatch.context() as patch:
        # The process that takes it over dies too, before ingesting it.
        patch.setattr(pool(offline_bridge), "submit", lambda *args: None)
        age(offline_bridge.app, file_id)
        sweep(offline_bridge.app)
    assert attachment(offline_bridge.app, file_id)["ingest_attempts"] == 2
    sweep(offline_bridge.app)  # the takeover renewed the hold
    assert attachment(offline_bridge.app, file_id)["held_at"] > 0
    assert alice.vector_stores.files.retrieve(file_id, vector_store_id=store_id).status == \
        "in_progress"

    age(offline_bridge.app, file_id)
    sweep(offline_bridge.app)

    failed = alice.vector_stores.files.retrieve(file_id, vector_store_id=store_id)
    assert failed.status == "failed"
    assert failed.last_error.code == "server_error"
    assert "interrupted" in failed.last_error.message
    assert alice.vector_stores.retrieve(store_id).file_counts.failed == 1
    ended = alice.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store_id)
    assert ended.status == "completed" and ended.file_counts.failed == 1
    sweep(offline_bridge.app)  # nothing left to do
    assert attachment(offline_bridge.app, file_id)["status"] == "failed"


def test_files_this_process_holds_are_renewed_not_taken_over(start_bridge, held_extraction):
    # One ingestion thread: held-a.txt waits mid-way, held-b.txt waits in the queue.
    bridge = start_bridge("offline", INGEST_WORKERS=1)
    alice = bridge.sdk("alice")
    store = alice.vector_stores.create()
    ids = [upload(alice, name, "slow words") for name in ("held-a.txt", "held-b.txt")]
    alice.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=ids)
    wait_for(lambda: held_extraction.started == ["held-a.txt"])
    for file_id in ids:  # older than the bound, as after a long ingestion
        age(bridge.app, file_id)

    sweep(bridge.app)

    for file_id in ids:
        row = attachment(bridge.app, file_id)
        assert (row["status"], row["ingest_attempts"]) == ("in_progress", 1)
        assert row["held_at"] > 0
    held_extraction.release()
    pool(bridge).pool.shutdown(wait=True)  # every queued ingestion runs to its end
    assert held_extraction.started == ["held-a.txt", "held-b.txt"]
    assert {attachment(bridge.app, file_id)["status"] for file_id in ids} == {"completed"}
    assert pool(bridge).held() == []


def test_an_ingestion_taken_over_meanwhile_writes_nothing(offline_bridge, alice, held_extraction):
    store = alice.vector_stores.create()
    file_id = upload(alice, "held.txt", "contested words")
    alice.vector_stores.files.create(vector_store_id=store.id, file_id=file_id)
    wait_for(lambda: held_extraction.started)
    # Another process's sweep takes the file over while this ingestion still runs (this
    # process was slow to renew its hold).
    with offline_bridge.app.app_context():
        db.session.execute(text("UPDATE vector_store_files SET ingest_attempts = 2 "
                                "WHERE id = :id"), {"id": file_id})
        db.session.commit()
        db.session.remove()

    held_extraction.release()
    pool(offline_bridge).pool.shutdown(wait=True)

    assert attachment(offline_bridge.app, file_id)["status"] == "in_progress"
    assert alice.vector_stores.search(store.id, query="contested").data == []
    with offline_bridge.app.app_context():  # the other process's ingestion, attempt 2
        pk = db.session.scalar(text("SELECT pk FROM vector_store_files WHERE id = :id"),
                               {"id": file_id})
        retrieval.ingest(pk, 2)
        db.session.remove()
    assert attachment(offline_bridge.app, file_id)["status"] == "completed"
    assert len(alice.vector_stores.search(store.id, query="contested").data) == 1


def test_sweeps_of_several_processes_take_a_file_over_once(offline_bridge, alice, make_app,
                                                           monkeypatch):
    store_id, file_id = orphan(offline_bridge, monkeypatch, alice, "shared.txt", "shared words")
    age(offline_bridge.app, file_id)
    # Four more processes on the same registry and file storage, sweeping at the same moment.
    settings = offline_bridge.app.config["BRIDGE_SETTINGS"]
    apps = [offline_bridge.app, *(make_app(DATABASE_URL=settings.DATABASE_URL,
                                           FILE_STORAGE_DIR=settings.FILE_STORAGE_DIR)
                                  for _ in range(4))]
    submitted = []
    for app in apps:
        monkeypatch.setattr(app.extensions["bridge.ingestion"], "submit",
                            lambda pk, attempt, app=app: submitted.append((app, pk, attempt)))
    start, errors = threading.Barrier(len(apps)), []

    def sweep_at_once(app):
        start.wait()
        try:
            sweep(app)
        except Exception as exc:  # a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=sweep_at_once, args=(app,)) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert len(submitted) == 1 and submitted[0][2] == 2
    assert attachment(offline_bridge.app, file_id)["ingest_attempts"] == 2
    owner, pk, attempt = submitted[0]
    with owner.app_context():
        retrieval.ingest(pk, attempt)
        db.session.remove()
    assert alice.vector_stores.files.retrieve(file_id, vector_store_id=store_id).status == \
        "completed"


def test_the_sweeper_thread_finishes_a_stale_file(start_bridge, monkeypatch):
    bridge = start_bridge("offline", RUN_SWEEP_SECONDS=0.05)
    alice = bridge.sdk("alice")
    store_id, file_id = orphan(bridge, monkeypatch, alice, "later.txt", "later words")
    age(bridge.app, file_id)
    # Any request starts the process's sweeper, as the first one does in a server.
    done = alice.vector_stores.files.poll(file_id, vector_store_id=store_id, poll_interval_ms=20)
    assert done.status == "completed"


def test_the_stale_bound_leaves_room_for_several_sweeps():
    from pydantic import ValidationError

    from bridge.config import Settings

    assert Settings(RUN_SWEEP_SECONDS=5, INGEST_STALE_SECONDS=15).INGEST_STALE_SECONDS == 15
    assert Settings(RUN_SWEEP_SECONDS=0, INGEST_STALE_SECONDS=10).INGEST_STALE_SECONDS == 10
    with pytest.raises(ValidationError, match="INGEST_STALE_SECONDS"):
        Settings(RUN_SWEEP_SECONDS=5, INGEST_STALE_SECONDS=14)


def test_files_attached_before_the_migration_are_swept_too(offline_bridge, alice, monkeypatch):
    """A file that a process dying before this revision left in_progress: no hold, attempt 1."""
    from flask_migrate import downgrade, upgrade

    from bridge import MIGRATIONS

    store_id, file_id = orphan(offline_bridge, monkeypatch, alice, "ancient.txt", "ancient")
    with offline_bridge.app.app_context():
        db.session.remove()
        downgrade(directory=MIGRATIONS, revision="d3a6f8b1c0e4")
        upgrade(directory=MIGRATIONS)
    row = attachment(offline_bridge.app, file_id)
    assert (row["status"], row["ingest_attempts"], row["held_at"]) == ("in_progress", 1, 0)

    sweep(offline_bridge.app)

    done = alice.vector_stores.files.poll(file_id, vector_store_id=store_id, poll_interval_ms=20)
    assert done.status == "completed"
