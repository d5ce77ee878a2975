"""Registry tables: our stable ids, their upstream ids, ownership and run state.

Every table has an integer `pk` that orders rows by insertion (timestamps are whole seconds and
tie often) and a public `id` that clients see. Upstream ids stay behind our ids so a deployment
can change engine without breaking clients.
"""

from __future__ import annotations

import time
from array import array
from typing import Any

from sqlalchemy import (JSON, BigInteger, Float, ForeignKey, Index, Integer, LargeBinary, String, Text,
                        UniqueConstraint, text)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import REAL, TypeDecorator

from .extensions import db


ACTIVE_RUN_STATUSES = ("queued", "in_progress", "requires_action", "cancelling")
# Where a thread's conversation is kept: our registry, OpenAI Conversations, or an Assistants server.
THREAD_HOMES = ("local", "responses", "assistants")
TERMINAL_RUN_STATUSES = ("completed", "failed", "cancelled", "incomplete", "expired")


def now() -> int:
    """Unix seconds, the timestamp unit of the wire format."""
    return int(time.time())


class Assistant(db.Model):
    __tablename__ = "assistants"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    upstream_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    name: Mapped[str | None] = mapped_column(String(256), index=True)
    description: Mapped[str | None] = mapped_column(String(512))
    model: Mapped[str] = mapped_column(String(256))
    instructions: Mapped[str | None] = mapped_column(Text)
    tools: Mapped[list[Any]] = mapped_column(JSON, default=list)
    tool_resources: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    meta: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    temperature: Mapped[float | None] = mapped_column(Float)
    top_p: Mapped[float | None] = mapped_column(Float)
    response_format: Mapped[Any | None] = mapped_column(JSON)


class Thread(db.Model):
    __tablename__ = "threads"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    upstream_id: Mapped[str | None] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(256), index=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    meta: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    tool_resources: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # One of THREAD_HOMES; only the engine of that home may change the thread.
    home: Mapped[str] = mapped_column(String(16), default="local", server_default="local")
    # "creating" while the upstream object is being made: the row exists first so the registry
    # never misses an upstream conversation, but clients only ever see "active" threads.
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")

    messages: Mapped[list["Message"]] = relationship(
        back_populates="thread", cascade="all, delete-orphan", passive_deletes=True)
    runs: Mapped[list["Run"]] = relationship(
        back_populates="thread", cascade="all, delete-orphan", passive_deletes=True)


class Message(db.Model):
    __tablename__ = "messages"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    upstream_id: Mapped[str | None] = mapped_column(String(128))
    thread_pk: Mapped[int] = mapped_column(ForeignKey("threads.pk", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    role: Mapped[str] = mapped_column(String(16))
    # Content parts in the wire shape: [{"type": "text", "text": {"value", "annotations"}}]
    content: Mapped[list[Any]] = mapped_column(JSON, default=list)
    attachments: Mapped[list[Any] | None] = mapped_column(JSON)
    meta: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="completed")
    assistant_id: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    completed_at: Mapped[int | None] = mapped_column(Integer)

    thread: Mapped[Thread] = relationship(back_populates="messages")


class Run(db.Model):
    __tablename__ = "runs"
    __table_args__ = (
        # At most one active run per thread, enforced by the database rather than check-then-insert.
        Index("uq_runs_one_active_per_thread", "thread_pk", unique=True,
              sqlite_where=text("status IN ('queued', 'in_progress', 'requires_action', 'cancelling')"),
              postgresql_where=text("status IN ('queued', 'in_progress', 'requires_action', 'cancelling')")),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    upstream_id: Mapped[str | None] = mapped_column(String(128))
    thread_pk: Mapped[int] = mapped_column(ForeignKey("threads.pk", ondelete="CASCADE"), index=True)
    assistant_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    status: Mapped[str] = mapped_column(String(32), default="queued", index=True)
    model: Mapped[str] = mapped_column(String(256))
    instructions: Mapped[str] = mapped_column(Text, default="")
    tools: Mapped[list[Any]] = mapped_column(JSON, default=list)
    meta: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    temperature: Mapped[float | None] = mapped_column(Float)
    top_p: Mapped[float | None] = mapped_column(Float)
    max_completion_tokens: Mapped[int | None] = mapped_column(Integer)
    max_prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    response_format: Mapped[Any | None] = mapped_column(JSON)
    tool_choice: Mapped[Any | None] = mapped_column(JSON)
    parallel_tool_calls: Mapped[bool] = mapped_column(default=True)
    truncation_strategy: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    started_at: Mapped[int | None] = mapped_column(Integer)
    expires_at: Mapped[int | None] = mapped_column(Integer)
    completed_at: Mapped[int | None] = mapped_column(Integer)
    failed_at: Mapped[int | None] = mapped_column(Integer)
    cancelled_at: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[dict[str, str] | None] = mapped_column(JSON)
    incomplete_details: Mapped[dict[str, str] | None] = mapped_column(JSON)
    required_action: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Tool calls the model made during this run and the outputs the client submitted, in Chat
    # Completions message form, replayed to the model when the run continues.
    tool_exchange: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    usage: Mapped[dict[str, int] | None] = mapped_column(JSON)
    # When the upstream was last asked about this run (Unix seconds, fractional): polls within the
    # poll interval are served from the registry, so many pollers cost one upstream call.
    polled_at: Mapped[float | None] = mapped_column(Float)

    thread: Mapped[Thread] = relationship(back_populates="runs")
    steps: Mapped[list["RunStep"]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True)

    @property
    def thread_id(self) -> str:
        return self.thread.id

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_RUN_STATUSES


class RunStep(db.Model):
    """One step of a run: a message it wrote, or a round of tool calls it asked for."""

    __tablename__ = "run_steps"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    # The upstream's own step, or the response or message item the step stands for.
    upstream_id: Mapped[str | None] = mapped_column(String(128))
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.pk", ondelete="CASCADE"), index=True)
    thread_pk: Mapped[int] = mapped_column(ForeignKey("threads.pk", ondelete="CASCADE"), index=True)
    assistant_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32))  # "message_creation" or "tool_calls"
    status: Mapped[str] = mapped_column(String(16), default="in_progress")
    # In the wire shape, with our message ids: {"type": "message_creation", "message_creation":
    # {"message_id"}} or {"type": "tool_calls", "tool_calls": [...]}
    step_details: Mapped[dict[str, Any]] = mapped_column(JSON)
    usage: Mapped[dict[str, int] | None] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    completed_at: Mapped[int | None] = mapped_column(Integer)
    failed_at: Mapped[int | None] = mapped_column(Integer)
    cancelled_at: Mapped[int | None] = mapped_column(Integer)
    expired_at: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[dict[str, str] | None] = mapped_column(JSON)

    run: Mapped[Run] = relationship(back_populates="steps")


class ThreadMove(db.Model):
    """A thread being copied to another home by `flask migrate-threads`, so a copy can resume."""

    __tablename__ = "thread_moves"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    thread_pk: Mapped[int] = mapped_column(ForeignKey("threads.pk", ondelete="CASCADE"), unique=True)
    target: Mapped[str] = mapped_column(String(16))
    upstream_id: Mapped[str | None] = mapped_column(String(128))
    # Our message id -> the id of its copy at the target, for the messages copied so far.
    copied: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[int] = mapped_column(Integer, default=now)


class IdempotencyRecord(db.Model):
    """A POST's `Idempotency-Key` and the first response to it, kept for IDEMPOTENCY_TTL_HOURS.

    The unique (user_id, key) pair decides between concurrent requests with one key: the first to
    insert its row runs, the others see the row.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("user_id", "key", name="uq_idempotency_keys_user_key"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(256))
    key: Mapped[str] = mapped_column(String(255))
    # The request the key was first used for: method, concrete path and a sha256 of its body.
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    # "in_flight" while the first request runs, "done" once its response is stored.
    state: Mapped[str] = mapped_column(String(16), default="in_flight")
    status: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[str | None] = mapped_column(Text)  # the response body, JSON text
    headers: Mapped[dict[str, str] | None] = mapped_column(JSON)  # the response headers replayed
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    expires_at: Mapped[int] = mapped_column(Integer)


class ChatKitThread(db.Model):
    """What ChatKit keeps of a thread beyond the registry's own: its title."""

    __tablename__ = "chatkit_threads"

    thread_pk: Mapped[int] = mapped_column(ForeignKey("threads.pk", ondelete="CASCADE"),
                                           primary_key=True)
    title: Mapped[str | None] = mapped_column(String(512))


class ChatKitItem(db.Model):
    """A ChatKit thread item that is not a message (hidden context, a client tool call, a
    widget), kept whole in ChatKit's own shape beside the thread's messages."""

    __tablename__ = "chatkit_items"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    thread_pk: Mapped[int] = mapped_column(ForeignKey("threads.pk", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    # The pk of the thread's newest message when the item was added (0: none): the item is
    # listed right after it, as ChatKit showed it.
    follows_message_pk: Mapped[int] = mapped_column(Integer, default=0)
    type: Mapped[str] = mapped_column(String(32))
    item: Mapped[dict[str, Any]] = mapped_column(JSON)


class ChatKitFeedback(db.Model):
    """A user's latest thumbs up or down on an item of a ChatKit thread."""

    __tablename__ = "chatkit_feedback"
    __table_args__ = (UniqueConstraint("thread_pk", "item_id"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    thread_pk: Mapped[int] = mapped_column(ForeignKey("threads.pk", ondelete="CASCADE"))
    item_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[int] = mapped_column(Integer, default=now)


class ChatKitAttachment(db.Model):
    """A file a ChatKit front end attaches to a message: made by `attachments.create` with the
    name, type and size the client declared, it becomes one of its owner's files when the bytes
    are uploaded, and belongs to a thread once a message carries it."""

    __tablename__ = "chatkit_attachments"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    user_id: Mapped[str] = mapped_column(String(256), index=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    name: Mapped[str] = mapped_column(String(255))
    mime_type: Mapped[str] = mapped_column(String(255))
    # What `attachments.create` declared; the file's own `bytes` is what was received.
    size: Mapped[int] = mapped_column(BigInteger)
    # None until the upload; deleting the file (here or through /v1) deletes the attachment.
    file_pk: Mapped[int | None] = mapped_column(ForeignKey("files.pk", ondelete="CASCADE"),
                                                unique=True)
    # The thread of the message that carries it, once one does.
    thread_pk: Mapped[int | None] = mapped_column(ForeignKey("threads.pk", ondelete="CASCADE"),
                                                  index=True)

    file: Mapped["File | None"] = relationship()
    thread: Mapped[Thread | None] = relationship()


class File(db.Model):
    """An uploaded file: its metadata and owner. The bytes are in the blob store under `blob_key`,
    a random key of ours, never derived from what the client sent."""

    __tablename__ = "files"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    user_id: Mapped[str] = mapped_column(String(256), index=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    blob_key: Mapped[str] = mapped_column(String(64), unique=True)
    # The provider's copy, for engines that search there (responses, assistants).
    upstream_id: Mapped[str | None] = mapped_column(String(128), index=True)


class FileBlob(db.Model):
    """A piece of a file's contents, for FILE_STORAGE=database (see bridge/files/storage.py)."""

    __tablename__ = "file_blobs"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class FileUsage(db.Model):
    """The bytes a user's files take, kept beside them so that the quota check is one conditional
    update of this row: concurrent uploads of one user queue on it instead of both passing."""

    __tablename__ = "file_usage"

    user_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class VectorStore(db.Model):
    """A user's collection of files prepared for search."""

    __tablename__ = "vector_stores"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    user_id: Mapped[str] = mapped_column(String(256), index=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    name: Mapped[str] = mapped_column(String(256), default="")
    meta: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    # {"anchor": "last_active_at", "days": n}, or None: never expires.
    expires_after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    last_active_at: Mapped[int] = mapped_column(Integer, default=now)
    # The provider's copy, for engines that search there (responses, assistants).
    upstream_id: Mapped[str | None] = mapped_column(String(128))


class VectorStoreFile(db.Model):
    """A file attached to a vector store, and how far its ingestion got. Its public id is the
    file's own id, unique within the store."""

    __tablename__ = "vector_store_files"
    __table_args__ = (UniqueConstraint("vector_store_pk", "file_pk",
                                       name="uq_vector_store_files_store_file"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), index=True)
    vector_store_pk: Mapped[int] = mapped_column(
        ForeignKey("vector_stores.pk", ondelete="CASCADE"), index=True)
    # Deleting the file takes it out of every store, as OpenAI does.
    file_pk: Mapped[int] = mapped_column(ForeignKey("files.pk", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    status: Mapped[str] = mapped_column(String(16), default="in_progress")
    last_error: Mapped[dict[str, str] | None] = mapped_column(JSON)
    # {"type": "static", "static": {"max_chunk_size_tokens", "chunk_overlap_tokens"}}
    chunking_strategy: Mapped[dict[str, Any]] = mapped_column(JSON)
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The bytes of text extracted and indexed.
    usage_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # Ingestions started for this file: 1 on attaching, one more when a sweep takes over a file
    # whose process stopped holding it. An ingestion ends the file only while this is still its
    # own number, so one that was taken over writes nothing.
    ingest_attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # While `in_progress`: when the process that queued or runs its ingestion last said so (on
    # attaching, then at each of that process's sweeps). INGEST_STALE_SECONDS older means
    # nobody holds it any more.
    held_at: Mapped[int] = mapped_column(Integer, default=now, server_default="0")

    vector_store: Mapped[VectorStore] = relationship()
    file: Mapped[File] = relationship()


class VectorStoreFileBatch(db.Model):
    """Files attached to a store in one request. Its status is its files': `in_progress` while
    any of them is, `completed` after, unless it was cancelled first."""

    __tablename__ = "vector_store_file_batches"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    vector_store_pk: Mapped[int] = mapped_column(
        ForeignKey("vector_stores.pk", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    cancelled_at: Mapped[int | None] = mapped_column(Integer)


class VectorStoreFileBatchFile(db.Model):
    """One file of a batch. A file attached before the batch is the same attachment, so it
    counts in every batch that named it, as OpenAI counts it."""

    __tablename__ = "vector_store_file_batch_files"

    batch_pk: Mapped[int] = mapped_column(
        ForeignKey("vector_store_file_batches.pk", ondelete="CASCADE"), primary_key=True)
    # Detaching the file takes it out of its batches.
    vector_store_file_pk: Mapped[int] = mapped_column(
        ForeignKey("vector_store_files.pk", ondelete="CASCADE"), primary_key=True, index=True)


class VectorStoreChunk(db.Model):
    """One chunk of a vector store file's text. The full-text index over `text` is the
    database's own (migrations 9c1d5e7a3b20, c283bb5cb070): FTS5 on SQLite; on PostgreSQL a
    stored generated `tsv` column, which no model names, under a GIN index."""

    __tablename__ = "vector_store_chunks"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    vector_store_pk: Mapped[int] = mapped_column(
        ForeignKey("vector_stores.pk", ondelete="CASCADE"), index=True)
    vector_store_file_pk: Mapped[int] = mapped_column(
        ForeignKey("vector_store_files.pk", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)


class Embedding(TypeDecorator):
    """A vector: `real[]` on PostgreSQL, packed 32-bit floats elsewhere (SQLite)."""

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(REAL()))
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        return list(value) if dialect.name == "postgresql" else array("f", value).tobytes()

    def process_result_value(self, value, dialect):
        if value is None or dialect.name == "postgresql":
            return value
        vector = array("f")
        vector.frombytes(value)
        return list(vector)


class VectorStoreChunkVector(db.Model):
    """A chunk's embedding, when EMBEDDINGS_MODEL is set (see bridge/retrieval/embeddings.py)."""

    __tablename__ = "vector_store_chunk_vectors"

    chunk_pk: Mapped[int] = mapped_column(
        ForeignKey("vector_store_chunks.pk", ondelete="CASCADE"), primary_key=True,
        autoincrement=False)
    vector_store_pk: Mapped[int] = mapped_column(
        ForeignKey("vector_stores.pk", ondelete="CASCADE"), index=True)
    embedding: Mapped[list[float]] = mapped_column(Embedding)
