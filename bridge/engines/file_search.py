"""`file_search` as a run's tool: which vector stores a run searches, what it finds, and how a
reply cites it.

A run searches the vector store of its assistant's `tool_resources` and the one of its
thread's, as OpenAI's did. The engine hands the responder a `RunSearcher`; the responder runs
searches whenever it likes, outside any request, so each search opens its own app context and
releases its connection at once. Citations use OpenAI's markers, 【round:result†filename】, which
a reply's text carries and the registry keeps as `file_citation` annotations.
"""

from __future__ import annotations

import re
import time
from typing import Any

from flask import Flask
from sqlalchemy import func, select

from ..extensions import db
from ..models import Assistant, Run, VectorStore, VectorStoreFile, now
from ..retrieval import expires_at, found_chunks
from .base import Citation, FileSearchCall, Passage

# What an unset `max_num_results` means (OpenAI's default for its gpt-4 models).
DEFAULT_MAX_RESULTS = 20
RANKER = "default_2024_08_21"
# How long a search waits for files still being ingested (attached with the message, say).
INGEST_WAIT_SECONDS = 30.0
_INGEST_POLL_SECONDS = 0.1
MARKER = re.compile(r"【(\d+):(\d+)†([^】]*)】")


def marker(round_index: int, result_index: int, filename: str) -> str:
    """The text a reply cites a search result with."""
    return f"【{round_index}:{result_index}†{filename}】"


def citations(text: str, rounds: list[tuple[Passage, ...]]) -> tuple[Citation, ...]:
    """The markers in `text` that name a result of one of the searches, as citations."""
    found = []
    for match in MARKER.finditer(text):
        round_index, result_index = int(match.group(1)), int(match.group(2))
        if round_index < len(rounds) and result_index < len(rounds[round_index]):
            found.append(Citation(text=match.group(0), start_index=match.start(),
                                  end_index=match.end(),
                                  file_id=rounds[round_index][result_index].file_id))
    return tuple(found)


# ---- the stores a run searches -----------------------------------------------------------------

def _store_ids(tool_resources: dict[str, Any] | None) -> list[str]:
    return list(((tool_resources or {}).get("file_search") or {}).get("vector_store_ids") or [])


def search_tool(run: Run) -> dict[str, Any] | None:
    return next((tool for tool in run.tools or [] if tool.get("type") == "file_search"), None)


def run_vector_stores(run: Run) -> list[VectorStore]:
    """The stores a run searches, if it offers `file_search`: its assistant's and its thread's.

    The assistant's store was checked against its creator when it was set; the thread's must
    still be the thread owner's. Expired stores are not searched.
    """
    if search_tool(run) is None:
        return []
    assistant_resources = db.session.scalar(
        select(Assistant.tool_resources).where(Assistant.id == run.assistant_id))
    thread = run.thread
    wanted = [(store_id, None) for store_id in _store_ids(assistant_resources)]
    wanted += [(store_id, thread.user_id) for store_id in _store_ids(thread.tool_resources)]
    stores: dict[int, VectorStore] = {}
    for store_id, owner in wanted:
        store = db.session.scalar(select(VectorStore).where(VectorStore.id == store_id))
        if store is None or (owner is not None and store.user_id != owner):
            continue
        deadline = expires_at(store)
        if deadline is None or deadline > now():
            stores.setdefault(store.pk, store)
    return list(stores.values())


def run_code_files(run: Run) -> list[str]:
    """The files a run's code_interpreter may read, if it offers one: its assistant's and its
    thread's (ids checked as their owners' when they were set)."""
    if not any(tool.get("type") == "code_interpreter" for tool in run.tools or []):
        return []
    assistant_resources = db.session.scalar(
        select(Assistant.tool_resources).where(Assistant.id == run.assistant_id))
    found: list[str] = []
    for resources in (assistant_resources, run.thread.tool_resources):
        found += ((resources or {}).get("code_interpreter") or {}).get("file_ids") or []
    return list(dict.fromkeys(found))


def ranking_options(tool: dict[str, Any]) -> dict[str, Any]:
    """A file_search tool's ranking options as its steps report them."""
    ranking = (tool.get("file_search") or {}).get("ranking_options") or {}
    return {"ranker": RANKER if ranking.get("ranker") in (None, "auto") else ranking["ranker"],
            "score_threshold": float(ranking.get("score_threshold", 0.0))}


def max_results(tool: dict[str, Any]) -> int:
    return (tool.get("file_search") or {}).get("max_num_results") or DEFAULT_MAX_RESULTS


def run_searcher(app: Flask, run: Run) -> "RunSearcher | None":
    """The searcher of a run that offers `file_search` and has stores to search, else None."""
    stores = run_vector_stores(run)
    if not stores:
        return None
    tool = search_tool(run)
    return RunSearcher(app, tuple(store.pk for store in stores), max_results(tool),
                       ranking_options(tool))


class RunSearcher:
    """Searches a run's stores from whichever thread the responder runs in."""

    def __init__(self, app: Flask, store_pks: tuple[int, ...], max_results: int,
                 ranking_options: dict[str, Any],
                 wait_seconds: float = INGEST_WAIT_SECONDS):
        self.app = app
        self.store_pks = store_pks
        self.max_results = max_results
        self.ranking_options = ranking_options
        self.wait_seconds = wait_seconds

    def __call__(self, queries: list[str]) -> tuple[Passage, ...]:
        with self.app.app_context():
            try:
                self._wait_for_ingestion()
                return found_passages(self.store_pks, queries, self.max_results,
                                      self.ranking_options["score_threshold"])
            finally:
                db.session.remove()

    def _wait_for_ingestion(self) -> None:
        # A file attached with the question is searched once it is indexed, as on OpenAI.
        deadline = time.monotonic() + self.wait_seconds
        pending = select(func.count()).select_from(VectorStoreFile).where(
            VectorStoreFile.vector_store_pk.in_(self.store_pks),
            VectorStoreFile.status == "in_progress")
        while db.session.scalar(pending) and time.monotonic() < deadline:
            db.session.rollback()  # see the ingestion's commits, and hold no connection
            time.sleep(_INGEST_POLL_SECONDS)


def found_passages(store_pks: tuple[int, ...], queries: list[str], limit: int,
                   threshold: float = 0.0) -> tuple[Passage, ...]:
    """The best chunks of the stores for the queries, best first, as passages."""
    return tuple(Passage(file_id=chunk.file_id, filename=chunk.filename, score=chunk.score,
                         text=chunk.text)
                 for chunk in found_chunks(store_pks, queries, limit, threshold))
