"""Vector stores: a user's files, extracted, chunked and indexed for search.

The pieces are separate: `extract` (bytes to text), `chunking` (text to chunks), `index` (the
database's full-text search over chunks), `embeddings` (the provider's vectors of chunks, when
an embeddings model is configured) and `ranking` (which of them a search uses, and how they
are fused); this module owns the objects and the ingestion that runs them in order. Files are
attached one at a time or in file batches; a batch only names attachments, and its status and
counts are those of its files.

Ingestion never runs in a request: attaching a file commits it `in_progress` and hands its row
to a small thread pool of this process (INGEST_WORKERS), which ends it `completed` or `failed`
with `last_error`, whatever the file holds, unless a batch cancel ended it `cancelled` first.

A process that dies takes the ingestions it queued or was running with it. So each process
holds its files: attaching stamps `held_at`, and every pass of the process's ingestion sweeper
(every RUN_SWEEP_SECONDS) stamps again the files its pool holds. A file `in_progress` that
nobody has stamped for INGEST_STALE_SECONDS is taken over by the next sweep of any process and
ingested there, once (`ingest_attempts` 2); if it stalls again it ends `failed` with a
`server_error` saying it was interrupted. Several processes may sweep at once: every change is a
conditional update, and an ingestion ends its file only while the attempt is still its own, so a
file taken over from a process that was only slow is ingested once.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from flask import Flask, current_app
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from ..errors import InvalidRequest
from ..extensions import db
from ..files import open_content
from ..models import (File, VectorStore, VectorStoreChunk, VectorStoreChunkVector, VectorStoreFile,
                      VectorStoreFileBatch, VectorStoreFileBatchFile, now)
from ..config import Settings
from ..registry import (cancel_files_of_file_batch, fail_stalled_ingestions,
                        file_batch_file_counts, file_for_user, files_for_user, new_id,
                        renew_ingestion_holds, take_over_stalled_ingestions,
                        vector_store_file_counts)
from ..schemas import (FileCounts, SearchContent, SearchResult, SearchResultsPage,
                       VectorStoreCreate, VectorStoreFileBatchCreate, VectorStoreFileBatchObject,
                       VectorStoreFileCreate, VectorStoreFileObject, VectorStoreModify,
                       VectorStoreObject, VectorStoreSearch)
from . import chunking, embeddings, extract, ranking

log = logging.getLogger(__name__)
_EXTENSION_KEY = "bridge.ingestion"
DAY = 86_400
T = TypeVar("T")


# ---- the ingestion pool ------------------------------------------------------------------------

# The first ingestion, and one more after a sweep took the file over.
MAX_INGEST_ATTEMPTS = 2
# Files one sweep takes over at most; the next pass, or another process, takes the rest.
TAKEOVERS_PER_SWEEP = 100
INTERRUPTED = {"code": "server_error",
               "message": "The file's ingestion was interrupted twice (the server stopped "
                          "while ingesting it). Detach the file and attach it again to retry."}


class Ingestion:
    """The app's ingestion threads, the files they hold (queued or running), and the sweeper
    that renews this process's hold on them. The pool starts its threads on first use, and the
    sweeper on the first request, so each forked worker process gets its own."""

    def __init__(self, app: Flask, workers: int):
        self.app = app
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest")
        # Row pk -> how many of its ingestions this process has queued or is running.
        self._held: dict[int, int] = {}
        self._held_lock = threading.Lock()
        self._stopping = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._sweeper_lock = threading.Lock()

    def submit(self, vector_store_file_pk: int, attempt: int = 1) -> None:
        """Queue ingestion `attempt` of the file; this process holds it until that ends."""
        with self._held_lock:
            self._held[vector_store_file_pk] = self._held.get(vector_store_file_pk, 0) + 1
        try:
            self.pool.submit(self._run, vector_store_file_pk, attempt)
        except RuntimeError:  # shutting down: the file is left to the sweeps, as after a crash
            self._release(vector_store_file_pk)
            log.warning("vector store file %s: not ingested, shutting down", vector_store_file_pk)

    def _release(self, vector_store_file_pk: int) -> None:
        with self._held_lock:
            left = self._held.pop(vector_store_file_pk) - 1
            if left:
                self._held[vector_store_file_pk] = left

    def _run(self, vector_store_file_pk: int, attempt: int) -> None:
        try:
            with self.app.app_context():
                ingest(vector_store_file_pk, attempt)
        except Exception:  # the pool would swallow it silently
            log.exception("vector store file %s: ingestion failed", vector_store_file_pk)
        finally:
            self._release(vector_store_file_pk)

    def held(self) -> list[int]:
        """The files whose ingestion this process has queued or is running."""
        with self._held_lock:
            return list(self._held)

    def start_sweeper(self, interval: float) -> None:
        """Sweep now and then every `interval` seconds in a daemon thread of this process."""
        if self._sweeper is not None:
            return
        with self._sweeper_lock:
            if self._sweeper is not None or self._stopping.is_set():
                return
            self._sweeper = threading.Thread(target=self._sweep_forever, args=(interval,),
                                             name="sweeper-ingestion", daemon=True)
            self._sweeper.start()

    def _sweep_forever(self, interval: float) -> None:
        while not self._stopping.is_set():
            try:
                with self.app.app_context():
                    try:
                        sweep_ingestion()
                    finally:
                        db.session.remove()
            except Exception:
                log.exception("ingestion sweeper: pass failed")
            self._stopping.wait(interval)

    def shutdown(self) -> None:
        self._stopping.set()
        if self._sweeper is not None and self._sweeper is not threading.current_thread():
            self._sweeper.join(timeout=10)
        self.pool.shutdown(wait=True, cancel_futures=True)


def init_app(app: Flask, settings: Settings) -> None:
    pool = Ingestion(app, settings.INGEST_WORKERS)
    app.extensions[_EXTENSION_KEY] = pool
    embeddings.init_app(app, settings)
    if settings.RUN_SWEEP_SECONDS:
        # Started by the process's first request, as the run sweeper is: `flask db upgrade` and
        # the other commands build the app too, before the schema may exist.
        app.before_request(lambda: pool.start_sweeper(settings.RUN_SWEEP_SECONDS))


def ingestion() -> Ingestion:
    return current_app.extensions[_EXTENSION_KEY]


def sweep_ingestion() -> None:
    """One pass: renew this process's hold on its files, end `failed` the stalled files that had
    their last attempt, and take over the other stalled files, queueing them here.

    A file is stalled when it is `in_progress` and nobody has held it for INGEST_STALE_SECONDS.
    """
    pool = ingestion()
    stamp = now()
    # First, so that no file of this process's is ever stalled in the statements after.
    renew_ingestion_holds(pool.held(), stamp)
    held_before = stamp - current_app.config["BRIDGE_SETTINGS"].INGEST_STALE_SECONDS
    failed = fail_stalled_ingestions(held_before, MAX_INGEST_ATTEMPTS, INTERRUPTED)
    taken = take_over_stalled_ingestions(held_before, stamp, TAKEOVERS_PER_SWEEP)
    db.session.commit()
    if failed or taken:
        log.warning("ingestion sweeper: %d stalled file(s) failed, %d taken over", failed,
                    len(taken))
    for row_pk, attempt in taken:
        pool.submit(row_pk, attempt)


# ---- ingestion of one file ---------------------------------------------------------------------

def _finish(row_pk: int, attempt: int, status: str, *, error: dict[str, str] | None = None,
            usage: int = 0) -> None:
    # Conditional: a file detached meanwhile has no row left to update, one that a cancel or
    # another ingestion ended first keeps that ending, and one a sweep took over belongs to the
    # newer attempt; the chunks of this one then go with the rollback.
    ended = db.session.execute(update(VectorStoreFile).where(
        VectorStoreFile.pk == row_pk, VectorStoreFile.status == "in_progress",
        VectorStoreFile.ingest_attempts == attempt).values(
        status=status, last_error=error, usage_bytes=usage)).rowcount
    if ended:
        db.session.commit()
    else:
        db.session.rollback()


def _embedded(pieces: list[str]) -> list[list[float]] | None:
    """The chunks' embeddings, when an embeddings model is configured. Made before anything is
    written, so no transaction waits on the provider."""
    model = embeddings.embedder()
    if model is None or not pieces:
        return None
    db.session.commit()  # nothing written yet: release the connection while the provider works
    return model.embed(pieces)


def ingest(row_pk: int, attempt: int = 1) -> None:
    """Extract, chunk and index one attached file (ingestion `attempt` of it); it ends
    `completed` or `failed`."""
    row = db.session.get(VectorStoreFile, row_pk)
    if row is None or row.status != "in_progress" or row.ingest_attempts != attempt:
        return  # detached, ended, or taken over by a sweep, before this attempt started
    file, strategy, store_pk = row.file, row.chunking_strategy["static"], row.vector_store_pk
    limit = current_app.config["BRIDGE_SETTINGS"].INGEST_MAX_TEXT_BYTES
    try:
        try:
            with open_content(file) as stream:
                data = stream.read()
            text = extract.extract_text(file.filename, data, limit)
            size = len(text.encode())
            if size > limit:
                raise extract.ExtractionError(
                    "invalid_file", f"The file yields {size} bytes of text; at most {limit} "
                                    "can be indexed.")
        except extract.ExtractionError as exc:
            db.session.rollback()
            _finish(row_pk, attempt, "failed", error={"code": exc.code, "message": exc.message})
            return
        pieces = list(chunking.chunks(text, strategy["max_chunk_size_tokens"],
                                      strategy["chunk_overlap_tokens"]))
        try:
            vectors = _embedded(pieces)
        except embeddings.EmbeddingError as exc:
            log.warning("vector store file %s: not embedded: %s", row_pk, exc)
            db.session.rollback()
            _finish(row_pk, attempt, "failed", error={
                "code": "server_error",
                "message": "The embeddings model did not answer; attach the file again later."})
            return
        rows = [VectorStoreChunk(vector_store_pk=store_pk, vector_store_file_pk=row_pk,
                                 position=position, text=piece)
                for position, piece in enumerate(pieces)]
        db.session.add_all(rows)
        db.session.flush()
        if vectors is not None:
            db.session.add_all(VectorStoreChunkVector(chunk_pk=chunk.pk, vector_store_pk=store_pk,
                                                      embedding=vector)
                               for chunk, vector in zip(rows, vectors))
        _finish(row_pk, attempt, "completed", usage=size)
    except Exception as exc:
        db.session.rollback()
        if db.session.get(VectorStoreFile, row_pk) is None:
            return  # detached, or its store or file deleted, meanwhile
        log.exception("vector store file %s: ingestion failed", row_pk)
        _finish(row_pk, attempt, "failed", error={"code": "server_error",
                                                  "message": f"The file could not be indexed "
                                                             f"({type(exc).__name__})."})


# ---- objects -----------------------------------------------------------------------------------

def _strategy(requested) -> dict[str, Any]:
    if requested is None or requested.type == "auto":
        return chunking.AUTO
    return {"type": "static", "static": requested.static.model_dump()}


def expires_at(store: VectorStore) -> int | None:
    if not store.expires_after:
        return None
    return store.last_active_at + store.expires_after["days"] * DAY


def _file_counts_object(counts: dict[str, int]) -> FileCounts:
    return FileCounts(**{key: counts.get(key, 0) for key in
                         ("in_progress", "completed", "failed", "cancelled")},
                      total=sum(counts.values()))


def vector_store_object(store: VectorStore) -> VectorStoreObject:
    counts, usage = vector_store_file_counts(store)
    deadline = expires_at(store)
    if deadline is not None and deadline <= now():
        status = "expired"
    else:
        status = "in_progress" if counts.get("in_progress") else "completed"
    return VectorStoreObject(
        id=store.id, created_at=store.created_at, name=store.name, usage_bytes=usage,
        file_counts=_file_counts_object(counts), status=status,
        expires_after=store.expires_after, expires_at=deadline,
        last_active_at=store.last_active_at, metadata=store.meta or {})


def _file_batch_status(batch: VectorStoreFileBatch, counts: dict[str, int]) -> str:
    if batch.cancelled_at is not None:
        return "cancelled"
    return "in_progress" if counts.get("in_progress") else "completed"


def file_batch_object(batch: VectorStoreFileBatch, store_id: str) -> VectorStoreFileBatchObject:
    counts = file_batch_file_counts(batch)
    return VectorStoreFileBatchObject(
        id=batch.id, created_at=batch.created_at, vector_store_id=store_id,
        status=_file_batch_status(batch, counts), file_counts=_file_counts_object(counts))


def vector_store_file_object(row: VectorStoreFile, store_id: str) -> VectorStoreFileObject:
    return VectorStoreFileObject(
        id=row.id, usage_bytes=row.usage_bytes, created_at=row.created_at,
        vector_store_id=store_id, status=row.status, last_error=row.last_error,
        chunking_strategy=row.chunking_strategy, attributes=row.attributes)


def _attach(store: VectorStore, files: list[tuple[File, dict[str, Any], dict[str, Any] | None]]
            ) -> list[tuple[VectorStoreFile, bool]]:
    """Each (file, chunking strategy, attributes)'s attachment to the store, and whether it is
    new; the files are distinct. One query finds those attached already."""
    existing = {row.file_pk: row for row in db.session.scalars(select(VectorStoreFile).where(
        VectorStoreFile.vector_store_pk == store.pk,
        VectorStoreFile.file_pk.in_([file.pk for file, _, _ in files])))} if files else {}
    attached = []
    for file, strategy, attributes in files:
        if file.pk in existing:
            attached.append((existing[file.pk], False))  # attaching twice is the one attachment
            continue
        row = VectorStoreFile(id=file.id, vector_store_pk=store.pk, file_pk=file.pk,
                              chunking_strategy=strategy, attributes=attributes,
                              status="in_progress", usage_bytes=0)
        db.session.add(row)
        attached.append((row, True))
    return attached


def _committed(attach: Callable[[], T]) -> T:
    """`attach`'s rows, committed. A request attaching one of the same files at the same moment
    may commit first: the store's unique attachment index refuses ours, and a second go finds
    that attachment as one made before."""
    try:
        attached = attach()
        db.session.commit()
        return attached
    except IntegrityError:
        db.session.rollback()
    attached = attach()
    db.session.commit()
    return attached


def _ingest_after_commit(rows: list[VectorStoreFile]) -> None:
    # After the commit, so the ingestion thread finds the rows. Only new attachments: one made
    # before is ingested already, or is being ingested by whoever queued it.
    for row in rows:
        ingestion().submit(row.pk)


def create_vector_store(user_id: str, body: VectorStoreCreate) -> VectorStore:
    """A new vector store of the caller's, with its files attached and queued for ingestion."""
    if body.chunking_strategy is not None and not body.file_ids:
        raise InvalidRequest("'chunking_strategy' is only applicable if 'file_ids' is non-empty.",
                             param="chunking_strategy")
    # Every file is the caller's, or the whole request is the 404 a missing file gets.
    files = files_for_user(list(dict.fromkeys(body.file_ids or [])), user_id)
    store = VectorStore(id=new_id("vs"), user_id=user_id, name=body.name or "",
                        meta=body.metadata or {},
                        expires_after=body.expires_after.model_dump() if body.expires_after
                        else None)
    db.session.add(store)
    db.session.flush()
    strategy = _strategy(body.chunking_strategy)
    attached = _attach(store, [(file, strategy, None) for file in files])
    db.session.commit()
    _ingest_after_commit([row for row, _ in attached])
    return store


def modify_vector_store(store: VectorStore, body: VectorStoreModify) -> VectorStore:
    """Change the name, metadata or expiry of the caller's store; unset fields are kept."""
    sent = body.model_fields_set
    if "name" in sent and body.name is not None:
        store.name = body.name
    if "metadata" in sent and body.metadata is not None:
        store.meta = body.metadata
    if "expires_after" in sent:
        store.expires_after = body.expires_after.model_dump() if body.expires_after else None
    db.session.commit()
    return store


def delete_vector_store(store: VectorStore) -> None:
    """Delete a store with its attachments and chunks; the files themselves stay."""
    db.session.delete(store)
    db.session.commit()


def attach_file(store: VectorStore, user_id: str, body: VectorStoreFileCreate) -> VectorStoreFile:
    """Attach one of the caller's files to the store and queue its ingestion."""
    file = file_for_user(body.file_id, user_id)
    strategy = _strategy(body.chunking_strategy)
    [(row, new)] = _committed(lambda: _attach(store, [(file, strategy, body.attributes)]))
    _ingest_after_commit([row] if new else [])
    return row


def attach_files(store: VectorStore, files: list[File]) -> None:
    """Attach files already checked as the store owner's, with the default chunking."""
    attached = _committed(lambda: _attach(store, [(file, chunking.AUTO, None) for file in files]))
    _ingest_after_commit([row for row, new in attached if new])


def create_file_batch(store: VectorStore, user_id: str,
                      body: VectorStoreFileBatchCreate) -> VectorStoreFileBatch:
    """Attach several of the caller's files to the store as one batch and queue their ingestion.

    Every file is the caller's, or the whole request is the 404 a missing file gets and nothing
    is attached. A file attached before is the batch's too, as it is (its attributes and
    chunking stay); a file named twice is attached once, as first named.
    """
    if body.file_ids is not None and body.files is not None:
        raise InvalidRequest("'file_ids' and 'files' are mutually exclusive: send one of them.",
                             param="files")
    if body.files is not None:
        wanted: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {}
        for entry in body.files:
            wanted.setdefault(entry.file_id, (_strategy(entry.chunking_strategy),
                                              entry.attributes))
    elif body.file_ids is not None:
        shared = (_strategy(body.chunking_strategy), body.attributes)
        wanted = {file_id: shared for file_id in body.file_ids}
    else:
        raise InvalidRequest("Missing required parameter: 'file_ids' (or 'files').",
                             param="file_ids")
    files = files_for_user(list(wanted), user_id)

    def add_batch() -> tuple[VectorStoreFileBatch, list[tuple[VectorStoreFile, bool]]]:
        batch = VectorStoreFileBatch(id=new_id("vsfb"), vector_store_pk=store.pk)
        db.session.add(batch)
        attached = _attach(store, [(file, *wanted[file.id]) for file in files])
        db.session.flush()
        db.session.add_all(VectorStoreFileBatchFile(batch_pk=batch.pk,
                                                    vector_store_file_pk=row.pk)
                           for row, _ in attached)
        return batch, attached

    batch, attached = _committed(add_batch)
    _ingest_after_commit([row for row, new in attached if new])
    return batch


def cancel_file_batch(batch: VectorStoreFileBatch) -> VectorStoreFileBatch:
    """Stop a batch: its files still in_progress end `cancelled` (an ingestion under way finds
    them so and keeps nothing), the others keep how they ended."""
    status = _file_batch_status(batch, file_batch_file_counts(batch))
    if status != "in_progress":
        raise InvalidRequest(f"Cannot cancel vector store file batch with status '{status}'.",
                             param="batch_id")
    cancel_files_of_file_batch(batch)
    batch.cancelled_at = now()
    db.session.commit()
    return batch


def detach_file(row: VectorStoreFile) -> None:
    """Take a file out of a store, with its chunks; the file itself stays."""
    db.session.delete(row)
    db.session.commit()


@dataclass(frozen=True)
class FoundChunk:
    """A chunk a search found, with its file."""

    file_id: str
    filename: str
    attributes: dict[str, Any] | None
    text: str
    score: float


def found_chunks(store_pks: tuple[int, ...], queries: list[str], limit: int,
                 threshold: float = 0.0) -> list[FoundChunk]:
    """The stores' best chunks for the queries, best first, scoring at least `threshold`."""
    hits = [hit for hit in ranking.ranked_chunks(store_pks, queries, limit)
            if hit.score >= threshold]
    if not hits:
        return []
    rows = db.session.execute(
        select(VectorStoreChunk.pk, VectorStoreChunk.text, VectorStoreFile.id,
               VectorStoreFile.attributes, File.filename)
        .join(VectorStoreFile, VectorStoreFile.pk == VectorStoreChunk.vector_store_file_pk)
        .join(File, File.pk == VectorStoreFile.file_pk)
        .where(VectorStoreChunk.pk.in_([hit.chunk_pk for hit in hits])))
    chunks = {pk: (text, file_id, attributes, filename)
              for pk, text, file_id, attributes, filename in rows}
    return [FoundChunk(file_id=chunks[hit.chunk_pk][1], filename=chunks[hit.chunk_pk][3],
                       attributes=chunks[hit.chunk_pk][2], text=chunks[hit.chunk_pk][0],
                       score=round(hit.score, 6))
            for hit in hits if hit.chunk_pk in chunks]


def search(store: VectorStore, body: VectorStoreSearch) -> SearchResultsPage:
    """The store's chunks that best match the query, best first."""
    if body.filters is not None:
        raise InvalidRequest("Attribute filters are not supported yet: search without "
                             "'filters'.", param="filters", code="unsupported_parameter")
    queries = [body.query] if isinstance(body.query, str) else list(body.query)
    found = found_chunks((store.pk,), queries, body.max_num_results,
                         body.ranking_options.score_threshold if body.ranking_options else 0.0)
    store.last_active_at = now()
    db.session.commit()
    data = [SearchResult(file_id=chunk.file_id, filename=chunk.filename, score=chunk.score,
                         attributes=chunk.attributes or {},
                         content=[SearchContent(text=chunk.text)]) for chunk in found]
    return SearchResultsPage(search_query=queries, data=data)
