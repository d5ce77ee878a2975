"""Lexical search over vector store chunks, in the registry's own database.

SQLite ranks with FTS5's bm25 over `vector_store_chunks_fts` (porter stemming); PostgreSQL with
`ts_rank` over `to_tsvector('english', text)`, which its GIN index serves. Both structures are
made by migration 9c1d5e7a3b20. A query's words are OR-ed, so a question finds the chunks that
share any of its words and ranks those sharing the rarest ones first. Stop words ("how", "do",
"the") are left out of the query on both databases: a chunk that merely shares them says nothing
about the question, yet on SQLite a rare one ("should") weighed like a topic word. Scores are squashed into
0..1 (`r / (1 + r)`), keeping the order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import text

from ..extensions import db

_WORD = re.compile(r"\w+")
MAX_QUERY_WORDS = 64
# PostgreSQL's english.stop (the Snowball list), which its `english` configuration drops from
# documents and queries alike; dropped on SQLite too, whose FTS5 index keeps every word.
STOP_WORDS = frozenset("""
    i me my myself we our ours ourselves you your yours yourself yourselves he him his himself
    she her hers herself it its itself they them their theirs themselves what which who whom
    this that these those am is are was were be been being have has had having do does did
    doing a an the and but if or because as until while of at by for with about against between
    into through during before after above below to from up down in out on off over under again
    further then once here there when where why how all any both each few more most other some
    such no nor not only own same so than too very s t can will just don should now
""".split())

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
    """The distinct words of the queries that are not stop words, in order, at most
    MAX_QUERY_WORDS."""
    words: list[str] = []
    for query in queries:
        for word in _WORD.findall(query.lower()):
            if word not in words and word not in STOP_WORDS:
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
