"""Lexical search over vector store chunks, in the registry's own database.

SQLite ranks with FTS5's bm25 over `vector_store_chunks_fts` (porter stemming); PostgreSQL with
the same BM25 computed in SQL over `to_tsvector('english', text)`, whose GIN index finds the
chunks (see _POSTGRES). Both structures are
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
# BM25 as FTS5 computes it (k1 1.2, b 0.75), over the store's own chunks: `ts_rank` has no
# inverse document frequency, so a word every chunk holds counted as much as the one word that
# names the topic. The GIN index finds the chunks holding any query word; each one's tsvector
# gives a word's count (its positions) and the chunk's length (its distinct lexemes, compared
# with the average over the chunks found, since the store's would mean reading all of them).
# The IDF is Lucene's log(1 + ...), never negative, since small stores are the usual ones.
_POSTGRES = text("""
WITH terms AS (
    SELECT DISTINCT lexeme FROM unnest(to_tsvector('english', :words))
), found AS (
    SELECT c.pk, to_tsvector('english', c.text) AS tsv
    FROM vector_store_chunks c
    WHERE c.vector_store_pk = :store
      AND to_tsvector('english', c.text) @@ to_tsquery('english', :query)
), counts AS (
    SELECT f.pk, t.lexeme, cardinality(t.positions) AS tf,
           length(f.tsv) / CAST(avg(length(f.tsv)) OVER () AS float8) AS relative_length
    FROM found f, unnest(f.tsv) t
    WHERE t.lexeme IN (SELECT lexeme FROM terms)
), idf AS (
    SELECT lexeme, ln(1 + (n.chunks - count(*) + 0.5) / (count(*) + 0.5)) AS idf
    FROM counts, (SELECT CAST(count(*) AS float8) AS chunks FROM vector_store_chunks
                  WHERE vector_store_pk = :store) n
    GROUP BY lexeme, n.chunks
)
SELECT c.pk, sum(i.idf * c.tf * 2.2 / (c.tf + 1.2 * (0.25 + 0.75 * c.relative_length))) AS rank
FROM counts c JOIN idf i USING (lexeme)
GROUP BY c.pk
ORDER BY rank DESC, c.pk
LIMIT :limit""")


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
        statement = _POSTGRES
        params = {"query": " | ".join(words), "words": " ".join(words)}
    else:
        statement = _SQLITE
        params = {"query": " OR ".join('"' + word + '"' for word in words)}
    rows = db.session.execute(statement, {**params, "store": store_pk, "limit": limit})
    return [Hit(pk, max(rank, 0.0) / (1.0 + max(rank, 0.0))) for pk, rank in rows]
