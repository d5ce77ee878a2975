"""Lexical search over vector store chunks, in the registry's own database.

SQLite ranks with FTS5's bm25 over `vector_store_chunks_fts` (porter stemming); PostgreSQL with
`ts_rank` over `to_tsvector('english', text)`, which its GIN index serves. Both structures are
made by migration 9c1d5e7a3b20. A query's words are OR-ed, so a question finds the chunks that
share any of its words and ranks those sharing the rarest ones first. Scores are squashed into
0..1 (`r / (1 + r)`), keeping the order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import text

from ..extensions import db

_WORD = re.compile(r"\w+")
MAX_QUERY_WORDS = 64

_SQLITE = text(
    "SELECT c.pk, -bm25(vector_store_chunks_fts) AS rank FROM vector_store_chunks_fts "
    "JOIN vector_store_chunks c ON c.pk = vector_store_chunks_fts.rowid "
    "WHERE vector_store_chunks_fts MATCH :query AND c.vector_store_pk = :store "
    "ORDER BY rank DESC, c.pk LIMIT :limit")
_POSTGRES = text(
    "SELECT c.pk, ts_rank(to_tsvector('english', c.text), q) AS rank "
    "FROM vector_store_chunks c, to_tsquery('english', :query) q "
    "WHERE c.vector_store_pk = :store AND to_tsvector('english', c.text) @@ q "
    "ORDER BY rank DESC, c.pk LIMIT :limit")


@dataclass
class Hit:
    chunk_pk: int
    score: float


def query_words(queries: list[str]) -> list[str]:
    """The distinct words of the queries, in order, at most MAX_QUERY_WORDS."""
    words: list[str] = []
    for query in queries:
        for word in _WORD.findall(query.lower()):
            if word not in words:
                words.append(word)
    return words[:MAX_QUERY_WORDS]


def search_chunks(store_pk: int, queries: list[str], limit: int) -> list[Hit]:
    """The store's best chunks for the queries, best first."""
    words = query_words(queries)
    if not words:
        return []
    if db.session.get_bind().dialect.name == "postgresql":
        # Words are \w+ only, so none carries tsquery syntax.
        statement, query = _POSTGRES, " | ".join(words)
    else:
        statement, query = _SQLITE, " OR ".join('"' + word + '"' for word in words)
    rows = db.session.execute(statement, {"query": query, "store": store_pk, "limit": limit})
    return [Hit(pk, max(rank, 0.0) / (1.0 + max(rank, 0.0))) for pk, rank in rows]
