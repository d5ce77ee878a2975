"""Persistence of the registry: ids, ownership lookups and cursor pagination. Nothing else."""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import Select

from .errors import InvalidRequest, NotFound
from .extensions import db
from .models import (ACTIVE_RUN_STATUSES, Assistant, ChatKitAttachment, File, FileUsage, Message,
                     Run, RunStep, Thread, VectorStore, VectorStoreFile, VectorStoreFileBatch,
                     VectorStoreFileBatchFile)
from .schemas import ListQuery

_ALPHABET = string.ascii_letters + string.digits
_ID_LENGTH = 24  # ~143 bits: unguessable
_RANDOM_PART = re.compile(rf"[A-Za-z0-9]{{{_ID_LENGTH}}}")
# What comes before the random part: `thread_…`, and `file-…` as OpenAI spells file ids.
_ID_HEADS = {"asst": "asst_", "thread": "thread_", "msg": "msg_", "run": "run_", "step": "step_",
             "file": "file-", "cki": "cki_", "vs": "vs_", "vsfb": "vsfb_", "atc": "atc_"}


def new_id(prefix: str) -> str:
    """A fresh public id such as `thread_…` or `file-…`."""
    return _ID_HEADS[prefix] + "".join(secrets.choice(_ALPHABET) for _ in range(_ID_LENGTH))


def _well_formed(value: str, prefix: str) -> bool:
    head = _ID_HEADS[prefix]
    return bool(value) and value.startswith(head) and bool(
        _RANDOM_PART.fullmatch(value, len(head)))


# Each lookup is one statement built once, with its values bound per call: no WHERE clause to
# build and no cache key to compute on every request.
_THREAD_OF_USER = select(Thread).where(Thread.id == bindparam("id"),
                                       Thread.user_id == bindparam("user_id"),
                                       Thread.status == "active")
_MESSAGE_IN_THREAD = select(Message).where(Message.id == bindparam("id"),
                                           Message.thread_pk == bindparam("thread_pk"))
_RUN_IN_THREAD = select(Run).where(Run.id == bindparam("id"), Run.thread_pk == bindparam("thread_pk"))
_STEP_IN_RUN = select(RunStep).where(RunStep.id == bindparam("id"),
                                     RunStep.run_pk == bindparam("run_pk"))
_ASSISTANT = select(Assistant).where(Assistant.id == bindparam("id"))
_FILE_OF_USER = select(File).where(File.id == bindparam("id"), File.user_id == bindparam("user_id"))
_ATTACHMENT_OF_USER = select(ChatKitAttachment).where(
    ChatKitAttachment.id == bindparam("id"), ChatKitAttachment.user_id == bindparam("user_id"))
_VECTOR_STORE_OF_USER = select(VectorStore).where(VectorStore.id == bindparam("id"),
                                                  VectorStore.user_id == bindparam("user_id"))
_FILE_IN_VECTOR_STORE = select(VectorStoreFile).where(
    VectorStoreFile.id == bindparam("id"), VectorStoreFile.vector_store_pk == bindparam("store_pk"))
_FILE_BATCH_IN_VECTOR_STORE = select(VectorStoreFileBatch).where(
    VectorStoreFileBatch.id == bindparam("id"),
    VectorStoreFileBatch.vector_store_pk == bindparam("store_pk"))


def _lookup(statement: Select, prefix: str, noun: str, value: str, *, param: str, **bound):
    # A malformed id can never exist, so it is answered without a query, with the same 404.
    row = None
    if _well_formed(value, prefix):
        row = db.session.scalar(statement, {"id": value, **bound})
    if row is None:
        raise NotFound(f"No {noun} found with id '{value}'.", param=param)
    return row


def release_connection() -> None:
    """End the session's transaction, so whatever waits next (a client reading a stream, an
    upstream's next event) holds no registry connection; objects reload on their next use."""
    if db.session().in_transaction():
        db.session.commit()


def thread_for_user(thread_id: str, user_id: str) -> Thread:
    """The caller's thread, or NotFound: another user's thread looks exactly like a missing one.

    Every route that takes a thread id goes through here; nothing else decides ownership.
    """
    return _lookup(_THREAD_OF_USER, "thread", "thread", thread_id, user_id=user_id,
                   param="thread_id")


def threads_of_user(user_id: str) -> Select:
    """The query of the caller's threads, for listing."""
    return select(Thread).where(Thread.user_id == user_id, Thread.status == "active")


def message_in_thread(thread: Thread, message_id: str) -> Message:
    """A message of an already-authorised thread, or NotFound."""
    return _lookup(_MESSAGE_IN_THREAD, "msg", "message", message_id, thread_pk=thread.pk,
                   param="message_id")


def run_in_thread(thread: Thread, run_id: str) -> Run:
    """A run of an already-authorised thread, or NotFound."""
    return _lookup(_RUN_IN_THREAD, "run", "run", run_id, thread_pk=thread.pk, param="run_id")


def step_in_run(run: Run, step_id: str) -> RunStep:
    """A step of an already-authorised run, or NotFound."""
    return _lookup(_STEP_IN_RUN, "step", "run step", step_id, run_pk=run.pk, param="step_id")


def latest_tool_step(run: Run) -> RunStep | None:
    """The run's most recent round of tool calls."""
    return db.session.scalar(select(RunStep).where(
        RunStep.run_pk == run.pk, RunStep.type == "tool_calls").order_by(RunStep.pk.desc()))


def active_run(thread: Thread) -> Run | None:
    """The thread's run that has not ended, if it has one (it has at most one)."""
    return db.session.scalar(select(Run).where(Run.thread_pk == thread.pk,
                                               Run.status.in_(ACTIVE_RUN_STATUSES)))


def assistant_by_id(assistant_id: str, *, param: str = "assistant_id") -> Assistant:
    """An assistant (shared by all users), or NotFound."""
    return _lookup(_ASSISTANT, "asst", "assistant", assistant_id, param=param)


def assistant_by_name(name: str) -> Assistant | None:
    """The oldest assistant with this name, for idempotent provisioning."""
    return db.session.scalar(select(Assistant).where(Assistant.name == name).order_by(Assistant.pk))


def file_for_user(file_id: str, user_id: str) -> File:
    """The caller's file, or NotFound: another user's file looks exactly like a missing one.

    Every route that takes a file id goes through here.
    """
    return _lookup(_FILE_OF_USER, "file", "file", file_id, user_id=user_id, param="file_id")


def files_for_user(file_ids: list[str], user_id: str) -> list[File]:
    """The caller's files, in the order given, in one query; the first id that is not the
    caller's file is the NotFound `file_for_user` would answer for it alone."""
    wanted = [file_id for file_id in file_ids if _well_formed(file_id, "file")]
    found = {file.id: file for file in db.session.scalars(select(File).where(
        File.id.in_(wanted), File.user_id == user_id))} if wanted else {}
    for file_id in file_ids:
        if file_id not in found:
            raise NotFound(f"No file found with id '{file_id}'.", param="file_id")
    return [found[file_id] for file_id in file_ids]


def attachment_for_user(attachment_id: str, user_id: str, *,
                        param: str = "attachment_id") -> ChatKitAttachment:
    """The caller's ChatKit attachment, or NotFound: another user's looks exactly like a missing
    one. Every ChatKit request and route that names an attachment goes through here."""
    return _lookup(_ATTACHMENT_OF_USER, "atc", "attachment", attachment_id, user_id=user_id,
                   param=param)


def files_of_user(user_id: str, purpose: str | None = None) -> Select:
    """The query of the caller's files, optionally of one purpose, for listing."""
    statement = select(File).where(File.user_id == user_id)
    return statement if purpose is None else statement.where(File.purpose == purpose)


def claim_file_bytes(user_id: str, size: int, quota: int) -> bool:
    """Count `size` more bytes against the user's quota, in the session's transaction, if they fit.

    One conditional update of the user's usage row: concurrent claims of one user wait on its
    row lock (PostgreSQL) or on the database's write lock (SQLite), and each sees the total the
    previous one left, so together they never pass the quota. The caller commits it with the
    file's row, or rolls both back.
    """
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    db.session.execute(insert(FileUsage).values(user_id=user_id, bytes=0)
                       .on_conflict_do_nothing(index_elements=[FileUsage.user_id]))
    claimed = db.session.execute(update(FileUsage).where(
        FileUsage.user_id == user_id, FileUsage.bytes + size <= quota).values(
        bytes=FileUsage.bytes + size)).rowcount
    return claimed == 1


def remove_file(file: File) -> bool:
    """Delete the file's row and give its bytes back to the quota, in the session's transaction.

    False when the row was gone already (a concurrent delete won): its bytes were given back once.
    """
    removed = db.session.execute(delete(File).where(File.pk == file.pk)).rowcount
    if removed == 1:
        db.session.execute(update(FileUsage).where(FileUsage.user_id == file.user_id).values(
            bytes=FileUsage.bytes - file.bytes))
    return removed == 1


def vector_store_for_user(vector_store_id: str, user_id: str) -> VectorStore:
    """The caller's vector store, or NotFound: another user's store looks exactly like a missing
    one. Every route that takes a vector store id goes through here."""
    return _lookup(_VECTOR_STORE_OF_USER, "vs", "vector store", vector_store_id, user_id=user_id,
                   param="vector_store_id")


def vector_stores_of_user(user_id: str) -> Select:
    """The query of the caller's vector stores, for listing."""
    return select(VectorStore).where(VectorStore.user_id == user_id)


def file_in_vector_store(store: VectorStore, file_id: str) -> VectorStoreFile:
    """A file attached to an already-authorised vector store, or NotFound."""
    return _lookup(_FILE_IN_VECTOR_STORE, "file", "vector store file", file_id, store_pk=store.pk,
                   param="file_id")


def files_of_vector_store(store: VectorStore, status: str | None = None) -> Select:
    """The query of a vector store's files, optionally in one status, for listing."""
    statement = select(VectorStoreFile).where(VectorStoreFile.vector_store_pk == store.pk)
    return statement if status is None else statement.where(VectorStoreFile.status == status)


def _file_counts(*where) -> tuple[dict[str, int], int]:
    rows = db.session.execute(select(
        VectorStoreFile.status, func.count(), func.coalesce(func.sum(VectorStoreFile.usage_bytes), 0))
        .where(*where).group_by(VectorStoreFile.status))
    counts, usage = {}, 0
    for status, count, size in rows:
        counts[status] = count
        usage += int(size)
    return counts, usage


def vector_store_file_counts(store: VectorStore) -> tuple[dict[str, int], int]:
    """How many of the store's files are in each status, and the bytes of text they hold."""
    return _file_counts(VectorStoreFile.vector_store_pk == store.pk)


def file_batch_in_vector_store(store: VectorStore, batch_id: str) -> VectorStoreFileBatch:
    """A file batch of an already-authorised vector store, or NotFound."""
    return _lookup(_FILE_BATCH_IN_VECTOR_STORE, "vsfb", "vector store file batch", batch_id,
                   store_pk=store.pk, param="batch_id")


def _in_file_batch(batch: VectorStoreFileBatch):
    return VectorStoreFile.pk.in_(select(VectorStoreFileBatchFile.vector_store_file_pk).where(
        VectorStoreFileBatchFile.batch_pk == batch.pk))


def files_of_file_batch(batch: VectorStoreFileBatch, status: str | None = None) -> Select:
    """The query of a batch's files, optionally in one status, for listing."""
    statement = select(VectorStoreFile).where(_in_file_batch(batch))
    return statement if status is None else statement.where(VectorStoreFile.status == status)


def file_batch_file_counts(batch: VectorStoreFileBatch) -> dict[str, int]:
    """How many of the batch's files are in each status."""
    return _file_counts(_in_file_batch(batch))[0]


def cancel_files_of_file_batch(batch: VectorStoreFileBatch) -> None:
    """Mark the batch's files still `in_progress` `cancelled`, in the session's transaction.

    One conditional update: a file whose ingestion ends first keeps its ending, and an
    ingestion that ends after finds the file cancelled and leaves it so.
    """
    db.session.execute(update(VectorStoreFile).where(
        _in_file_batch(batch), VectorStoreFile.status == "in_progress").values(
        status="cancelled").execution_options(synchronize_session=False))


def renew_ingestion_holds(row_pks: list[int], stamp: int) -> None:
    """Say that this process still holds these files' ingestion, in the session's transaction."""
    for start in range(0, len(row_pks), 500):  # a bounded IN list per statement
        db.session.execute(update(VectorStoreFile).where(
            VectorStoreFile.pk.in_(row_pks[start:start + 500]),
            VectorStoreFile.status == "in_progress").values(held_at=stamp)
            .execution_options(synchronize_session=False))


def _stalled(held_before: int) -> tuple:
    return VectorStoreFile.status == "in_progress", VectorStoreFile.held_at < held_before


def fail_stalled_ingestions(held_before: int, attempts: int, error: dict[str, str]) -> int:
    """End `failed` with `error` the files in_progress that nobody has held since `held_before`
    and that had `attempts` ingestions already, in the session's transaction; how many."""
    return db.session.execute(update(VectorStoreFile).where(
        *_stalled(held_before), VectorStoreFile.ingest_attempts >= attempts).values(
        status="failed", last_error=error).execution_options(synchronize_session=False)).rowcount


def take_over_stalled_ingestions(held_before: int, stamp: int,
                                 limit: int) -> list[tuple[int, int]]:
    """Claim up to `limit` files in_progress that nobody has held since `held_before` for one
    more ingestion each, in the session's transaction: (pk, attempt) of each claimed.

    Sweeps of several processes claim a file once: the update checks the hold again on the row
    it changes, and the first claim renewed it (PostgreSQL re-reads a row another transaction
    changed before updating it; SQLite runs one writer at a time).
    """
    candidates = select(VectorStoreFile.pk).where(*_stalled(held_before)).order_by(
        VectorStoreFile.pk).limit(limit)
    return [tuple(row) for row in db.session.execute(update(VectorStoreFile).where(
        VectorStoreFile.pk.in_(candidates), *_stalled(held_before)).values(
        ingest_attempts=VectorStoreFile.ingest_attempts + 1, held_at=stamp)
        .returning(VectorStoreFile.pk, VectorStoreFile.ingest_attempts)
        .execution_options(synchronize_session=False))]


_PREFIXES = {Assistant: "asst", Thread: "thread", Message: "msg", Run: "run", RunStep: "step",
             File: "file", VectorStore: "vs", VectorStoreFile: "file"}

M = TypeVar("M")


@dataclass
class Page(Generic[M]):
    items: list[M]
    has_more: bool


def paginate(query: Select, model, params: ListQuery) -> Page:
    """One page of `query` in insertion order, with OpenAI's `after`/`before` cursors.

    `after` continues the list past the cursor in the chosen order; `before` returns the items
    that precede it, nearest first fetched and then put back in list order. `has_more` says
    whether more items lie further in the direction of travel.
    """
    descending = params.order == "desc"
    cursor_name, cursor = ("before", params.before) if params.before else ("after", params.after)
    forward = cursor_name == "after"
    if params.after and params.before:
        raise InvalidRequest("Pass either 'after' or 'before', not both.", param="before")
    if cursor is not None:
        # A cursor that is not one of our ids of this kind is refused without a query.
        cursor_pk = db.session.scalar(query.with_only_columns(model.pk).where(
            model.id == cursor)) if _well_formed(cursor, _PREFIXES[model]) else None
        if cursor_pk is None:
            raise InvalidRequest(f"Invalid cursor: no item with id '{cursor}' in this list.",
                                 param=cursor_name)
        newer = (forward and not descending) or (not forward and descending)
        query = query.where(model.pk > cursor_pk if newer else model.pk < cursor_pk)
    # Walk away from the cursor: ascending pks when travelling towards newer items.
    walk_ascending = (not descending) if forward else descending
    query = query.order_by(model.pk.asc() if walk_ascending else model.pk.desc())
    rows = list(db.session.scalars(query.limit(params.limit + 1)))
    has_more = len(rows) > params.limit
    rows = rows[: params.limit]
    if not forward:
        rows.reverse()
    return Page(items=rows, has_more=has_more)
