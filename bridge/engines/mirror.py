"""Files and vector stores copied to the provider, for the engines whose model searches there.

The registry stays the source of truth. The `responses` and `assistants` engines search with
the provider's own `file_search`, so the stores a run (or a thread, or an assistant) names are
copied there when first needed and brought in step before each run: files uploaded once, the
store's file list made the registry's. The provider's ids stay between the bridge and the
provider: what it answers with is mapped back to our ids, and an id we never copied is dropped,
never shown.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update

from ..extensions import db
from ..files import open_content
from ..models import File, VectorStore, VectorStoreFile
from .base import FileSearchCall, Passage, SearchRound, UpstreamNotFound
from .upstream import OpenAIUpstream

log = logging.getLogger(__name__)


class UpstreamCopies:
    """The provider's copies of the registry's files and vector stores."""

    def __init__(self, upstream: OpenAIUpstream):
        self.upstream = upstream

    def file(self, file: File) -> str:
        """The provider's id of a file, uploaded on first use."""
        if file.upstream_id:
            return file.upstream_id
        with open_content(file) as stream:
            data = stream.read()
        created = self.upstream.create(lambda client: client.files.create(
            file=(file.filename, data), purpose="assistants")).id
        # Conditional: a concurrent run may have uploaded it too; the first copy stays.
        won = db.session.execute(update(File).where(File.pk == file.pk, File.upstream_id.is_(None))
                                 .values(upstream_id=created)).rowcount
        db.session.commit()
        if not won:
            self._forget_file(created)
            db.session.refresh(file)
        return file.upstream_id or created

    def store(self, store: VectorStore) -> str:
        """The provider's id of a store, holding the store's files (all but failed ones)."""
        rows = db.session.scalars(select(VectorStoreFile).where(
            VectorStoreFile.vector_store_pk == store.pk, VectorStoreFile.status != "failed"))
        wanted = {self.file(row.file) for row in rows}
        if store.upstream_id:
            try:
                self._make_hold(store.upstream_id, wanted)
                return store.upstream_id
            except UpstreamNotFound:
                log.warning("vector store %s: the provider lost its copy; copying it again",
                            store.id)
        created = self.upstream.create(lambda client: client.vector_stores.create(
            name=store.name or store.id, file_ids=sorted(wanted))).id
        won = db.session.execute(update(VectorStore).where(
            VectorStore.pk == store.pk, VectorStore.upstream_id.is_not_distinct_from(
                store.upstream_id)).values(upstream_id=created)).rowcount
        db.session.commit()
        if not won:
            self._forget_store(created)
            db.session.refresh(store)
            return self.store(store)
        return created

    def _make_hold(self, upstream_store: str, wanted: set[str]) -> None:
        def held(client) -> set[str]:
            return {item.id for item in client.vector_stores.files.list(upstream_store,
                                                                        limit=100)}

        present = self.upstream.call(held)
        for file_id in sorted(wanted - present):
            self.upstream.create(lambda client: client.vector_stores.files.create(
                upstream_store, file_id=file_id))
        for file_id in sorted(present - wanted):
            self.upstream.call(lambda client: client.vector_stores.files.delete(
                file_id, vector_store_id=upstream_store))

    def stores(self, store_ids: list[str]) -> list[str]:
        """The provider's ids of the registry's stores of these ids (missing ones skipped)."""
        stores = db.session.scalars(select(VectorStore).where(VectorStore.id.in_(store_ids)))
        return [self.store(store) for store in stores]

    def tool_resources(self, resources: dict[str, Any] | None) -> dict[str, Any] | None:
        """`tool_resources` naming the provider's copies instead of the registry's objects."""
        if not resources:
            return resources
        copied: dict[str, Any] = {}
        search = resources.get("file_search") or {}
        if search.get("vector_store_ids"):
            copied["file_search"] = {"vector_store_ids": self.stores(search["vector_store_ids"])}
        files = (resources.get("code_interpreter") or {}).get("file_ids") or []
        if files:
            copied["code_interpreter"] = {"file_ids": self.files(files)}
        return copied

    def files(self, file_ids: list[str]) -> list[str]:
        """The provider's ids of the registry's files of these ids (missing ones skipped)."""
        if not file_ids:
            return []
        return [self.file(row) for row in db.session.scalars(select(File).where(
            File.id.in_(file_ids)))]

    def _forget_file(self, upstream_id: str) -> None:
        try:
            self.upstream.call(lambda client: client.files.delete(upstream_id))
        except Exception:
            log.warning("could not delete the provider's duplicate file %s", upstream_id)

    def _forget_store(self, upstream_id: str) -> None:
        try:
            self.upstream.call(lambda client: client.vector_stores.delete(upstream_id))
        except Exception:
            log.warning("could not delete the provider's duplicate vector store %s", upstream_id)


def our_file_ids(upstream_ids: set[str]) -> dict[str, str]:
    """Our ids of the files whose provider copies these are."""
    if not upstream_ids:
        return {}
    return dict(db.session.execute(select(File.upstream_id, File.id).where(
        File.upstream_id.in_(sorted(upstream_ids)))).all())


def mapped_search_calls(calls: list[dict[str, Any]], ours: dict[str, str]) -> list[dict[str, Any]]:
    """Tool calls with their file_search results' file ids made ours (results of files we
    never copied dropped)."""
    mapped = []
    for call in calls:
        search = call.get("file_search") if call.get("type") == "file_search" else None
        if search and search.get("results"):
            results = [{**result, "file_id": ours[result.get("file_id")]}
                       for result in search["results"] if result.get("file_id") in ours]
            call = {**call, "file_search": {**search, "results": results}}
        mapped.append(call)
    return mapped


def mapped_annotations(annotations: list[dict[str, Any]],
                       ours: dict[str, str]) -> list[dict[str, Any]]:
    """`file_citation` annotations naming our files; others (and unknown files) dropped."""
    mapped = []
    for annotation in annotations:
        if annotation.get("type") != "file_citation":
            continue
        file_id = (annotation.get("file_citation") or {}).get("file_id")
        if file_id in ours:
            mapped.append({**annotation, "file_citation": {"file_id": ours[file_id]}})
    return mapped


def search_round(calls: list[dict[str, Any]], ranking_options: dict[str, Any]) -> SearchRound:
    """The provider's file_search calls (a step's, in the Assistants shape) as a round of
    searches to stream, their file ids made ours."""
    ours = our_file_ids({result.get("file_id") for call in calls
                         for result in (call.get("file_search") or {}).get("results") or ()})
    return SearchRound(ranking_options=ranking_options, calls=tuple(
        FileSearchCall(id=call["id"], queries=(), passages=tuple(
            Passage(file_id=result["file_id"], filename=result.get("file_name") or "",
                    score=result.get("score") or 0.0,
                    text="".join(part.get("text") or "" for part in result.get("content") or ()))
            for result in call["file_search"]["results"]))
        for call in mapped_search_calls(calls, ours) if call.get("type") == "file_search"))
