"""Lexical search over vector store chunks, in the registry's own database.

SQLite ranks with FTS5's bm25 over `vector_store_chunks_fts` (porter stemming), whose
statistics are the whole index's: every store's chunks weigh in the rarity of a word.
PostgreSQL ranks with BM25 computed in SQL over the searched store's own chunks, from each
one's stored `to_tsvector('english', text)`, whose GIN index finds them (see _POSTGRES). The
structures are made by migrations 9c1d5e7a3b20 and c283bb5cb070.

A query's words (runs of letters and digits: both databases split at underscores too) are
OR-ed, so a question finds the chunks that share any of its words and ranks those sharing the
rarest ones first. Stop words ("how", "do", "the") are left out on both databases: a chunk that
merely shares them says nothing about the question, yet on SQLite a rare one ("should") weighed
like a topic word. Words that neighbour each other in the query count once more in a chunk
where they stand within NEAR_TOKENS tokens of each other, so the chunk saying "ring of fire"
ranks above one holding a ring here and a fire there. Scores are squashed into 0..1
(`r / (1 + r)`), keeping the order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import text

from ..extensions import db

_WORD = re.compile(r"[^\W_]+")
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

# At most this many tokens between two neighbouring query words for them to count as near.
NEAR_TOKENS = 2

_SQLITE = text(
    "SELECT c.pk, -bm25(vector_store_chunks_fts) AS rank FROM vector_store_chunks_fts "
    "JOIN vector_store_chunks c ON c.pk = vector_store_chunks_fts.rowid "
    "WHERE vector_store_chunks_fts MATCH :query AND c.vector_store_pk = :store "
    "ORDER BY rank DESC, c.pk LIMIT :limit")
# BM25 as FTS5 computes it (k1 1.2, b 0.75), over the store's own chunks: `ts_rank` has no
# inverse document frequency, so a word every chunk holds counted as much as the one word that
# names the topic. The GIN index over the stored `tsv` column (migration c283bb5cb070) finds the
# chunks holding any query word; of each one's tsvector, setweight and ts_filter keep the query
# words with their positions, whose count is a word's frequency, and its number of lexemes is
# the chunk's length, compared with the average over the chunks found (the store's would mean
# reading all of them). The IDF is Lucene's log(1 + ...), never negative, since small stores
# are the usual ones. Neighbouring query words count once more where they stand near each
# other, as FTS5 counts the NEAR groups of the SQLite query: each occurrence of one with the
# other close by (stop words keep their positions in a tsvector: "ring of fire" is ring:1
# fire:3).
_POSTGRES = text("""
WITH terms AS (
    SELECT array_agg(DISTINCT lexeme) AS lexemes FROM unnest(to_tsvector('english', :words))
), pairs AS (
    SELECT DISTINCT a.lexeme AS first, b.lexeme AS second
    FROM unnest(CAST(:firsts AS text[]), CAST(:seconds AS text[])) AS p(first, second),
         unnest(to_tsvector('english', p.first)) a, unnest(to_tsvector('english', p.second)) b
    WHERE a.lexeme <> b.lexeme
), found AS MATERIALIZED (
    SELECT c.pk, length(c.tsv) AS lexemes,
           ts_filter(setweight(c.tsv, 'A', terms.lexemes), '{a}') AS matched
    FROM vector_store_chunks c, terms
    WHERE c.vector_store_pk = :store AND c.tsv @@ to_tsquery('english', :query)
), counts AS (
    SELECT f.pk, t.lexeme, t.positions, cardinality(t.positions) AS tf,
           f.lexemes / CAST(avg(f.lexemes) OVER () AS float8) AS relative_length
    FROM found f, unnest(f.matched) t
), idf AS (
    SELECT lexeme, ln(1 + (n.chunks - count(*) + 0.5) / (count(*) + 0.5)) AS idf
    FROM counts, (SELECT CAST(count(*) AS float8) AS chunks FROM vector_store_chunks
                  WHERE vector_store_pk = :store) n
    GROUP BY lexeme, n.chunks
), near AS (
    SELECT x.pk, x.lexeme, x.relative_length,
           (SELECT count(*) FROM unnest(x.positions) px WHERE EXISTS (
                SELECT 1 FROM unnest(y.positions) py WHERE abs(py - px) <= :reach)) AS tf
    FROM (SELECT first, second FROM pairs UNION ALL SELECT second, first FROM pairs) p
    JOIN counts x ON x.lexeme = p.first
    JOIN counts y ON y.pk = x.pk AND y.lexeme = p.second
), features AS (
    SELECT pk, lexeme, tf, relative_length FROM counts
    UNION ALL
    SELECT pk, lexeme, tf, relative_length FROM near WHERE tf > 0
)
SELECT f.pk, sum(i.idf * f.tf * 2.2 / (f.tf + 1.2 * (0.25 + 0.75 * f.relative_length))) AS rank
FROM features f JOIN idf i USING (lexeme)
GROUP BY f.pk
ORDER BY rank DESC, f.pk
LIMIT :limit""")


@dataclass
class Hit:
    chunk_pk: int
    score: float


def query_terms(queries: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The distinct words of the queries that are not stop words, in order, at most
    MAX_QUERY_WORDS; and the distinct pairs of them that neighbour each other in a query
    (with only stop words between: "ring of fire" is the pair ring, fire)."""
    words: list[str] = []
    pairs: list[tuple[str, str]] = []
    for query in queries:
        previous = None
        for word in _WORD.findall(query.lower()):
            if word in STOP_WORDS:
                continue
            if word not in words:
                if len(words) == MAX_QUERY_WORDS:
                    break
                words.append(word)
            if previous is not None and previous != word and (previous, word) not in pairs:
                pairs.append((previous, word))
            previous = word
    return words, pairs


def _fts5_query(words: list[str], pairs: list[tuple[str, str]]) -> str:
    # Words are letters and digits only, so a quoted one is a plain FTS5 string.
    quoted = ['"' + word + '"' for word in words]
    near = [f'NEAR("{first}" "{second}", {NEAR_TOKENS})' for first, second in pairs]
    return " OR ".join(quoted + near)


def search_chunks(store_pk: int, queries: list[str], limit: int) -> list[Hit]:
    """The store's best chunks for the queries, best first."""
    words, pairs = query_terms(queries)
    if not words:
        return []
    if db.session.get_bind().dialect.name == "postgresql":
        # Words are letters and digits only, so none carries tsquery syntax.
        statement = _POSTGRES
        params = {"query": " | ".join(words), "words": " ".join(words),
                  "firsts": [first for first, _ in pairs],
                  "seconds": [second for _, second in pairs], "reach": NEAR_TOKENS + 1}
    else:
        statement = _SQLITE
        params = {"query": _fts5_query(words, pairs)}
    rows = db.session.execute(statement, {**params, "store": store_pk, "limit": limit})
    return [Hit(pk, max(rank, 0.0) / (1.0 + max(rank, 0.0))) for pk, rank in rows]
