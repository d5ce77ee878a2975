"""Lexical search over vector store chunks, in the registry's own database.

Both rank with BM25 (k1 1.2, b 0.75), a word's rarity taken from the searched store's own
chunks: what other users' stores hold never moves a store's scores or order. SQLite finds the
chunks with FTS5 over `vector_store_chunks_fts` (porter stemming) and takes the frequency part
of each word's score from FTS5's bm25 (see _sqlite_ranked_chunks); PostgreSQL computes BM25 in
SQL from each chunk's stored `to_tsvector('english', text)`, whose GIN index finds them (see
_POSTGRES).
The structures are made by migrations 9c1d5e7a3b20 and c283bb5cb070.

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

import math
import re
from dataclasses import dataclass

from sqlalchemy import TextClause, text

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

# A query's chunks in the store. CROSS JOIN keeps the FTS5 query the outer loop: left to
# itself, SQLite walks the store's chunks and runs the query once for each (50 ms for 1,200
# chunks, against 1 ms).
_SQLITE_IN_STORE = ("FROM vector_store_chunks_fts CROSS JOIN vector_store_chunks c "
                    "ON c.pk = vector_store_chunks_fts.rowid "
                    "WHERE vector_store_chunks_fts MATCH :q{number} AND c.vector_store_pk = :store")


def _sqlite_counts(words: int) -> TextClause:
    """How many chunks hold each word: in the whole index, then in the store; how many chunks
    there are, in the index and in the store."""
    return text("SELECT " + ", ".join([
        *(f"(SELECT count(*) FROM vector_store_chunks_fts "
          f"WHERE vector_store_chunks_fts MATCH :q{number})" for number in range(words)),
        *(f"(SELECT count(*) {_SQLITE_IN_STORE.format(number=number)})"
          for number in range(words)),
        "(SELECT count(*) FROM vector_store_chunks)",
        "(SELECT count(*) FROM vector_store_chunks WHERE vector_store_pk = :store)"]))


def _sqlite_ranked(queries: int) -> TextClause:
    """The store's best chunks by the sum of each query's bm25 times its weight :w<number>."""
    scored = " UNION ALL ".join(
        f"SELECT c.pk, -bm25(vector_store_chunks_fts) * :w{number} AS rank "
        f"{_SQLITE_IN_STORE.format(number=number)}" for number in range(queries))
    # Materialized: bm25 is only to be had in the query over the FTS5 table itself.
    return text(f"WITH scored AS MATERIALIZED ({scored}) SELECT pk, sum(rank) AS rank "
                "FROM scored GROUP BY pk ORDER BY rank DESC, pk LIMIT :limit")


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
    (with only stop words between: "ring of fire" is the pair ring, fire), as many at most."""
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
            if previous is not None and previous != word and (previous, word) not in pairs \
                    and len(pairs) < MAX_QUERY_WORDS:
                pairs.append((previous, word))
            previous = word
    return words, pairs


def _store_idf(chunks: float, holding: int) -> float:
    """A word's rarity in a store of `chunks` chunks, `holding` of which hold it: Lucene's IDF,
    never negative, since small stores are the usual ones (the same as on PostgreSQL)."""
    return math.log(1 + (chunks - holding + 0.5) / (holding + 0.5))


def _sqlite_ranked_chunks(store_pk: int, words: list[str], pairs: list[tuple[str, str]],
                          limit: int) -> list[tuple[int, float]]:
    """The store's best chunks and their BM25, on SQLite.

    FTS5's bm25 of a one-word query is that word's IDF in the whole index times the frequency
    part (how often the chunk holds it, against its length): FTS5's own IDF,
    log((N - n + 0.5) / (n + 0.5)) and never below 1e-6, from the index's N chunks and n holding
    the word, is divided out and the store's multiplied in. A pair of neighbouring words, whose
    NEAR query scores both words, is weighed the same way by the two words' IDFs together. The
    frequency part compares a chunk's length with the whole index's average chunk length, which
    tells nothing of the words other stores hold.
    """
    # Words are letters and digits only, so a quoted one is a plain FTS5 string.
    queries = [f'"{word}"' for word in words]
    queries += [f'NEAR("{first}" "{second}", {NEAR_TOKENS})' for first, second in pairs]
    params = {"store": store_pk, **{f"q{number}": query for number, query in enumerate(queries)}}
    *holding, everywhere, here = db.session.execute(_sqlite_counts(len(words)), params).one()
    index_idf = [max(math.log((everywhere - n + 0.5) / (n + 0.5)), 1e-6)
                 for n in holding[:len(words)]]
    store_idf = [_store_idf(here, n) for n in holding[len(words):]]
    weights = [store / index for store, index in zip(store_idf, index_idf)]
    number_of = {word: number for number, word in enumerate(words)}
    for pair in pairs:
        both = [number_of[word] for word in pair]
        weights.append(sum(store_idf[n] for n in both) / sum(index_idf[n] for n in both))
    params.update({f"w{number}": weight for number, weight in enumerate(weights)}, limit=limit)
    return db.session.execute(_sqlite_ranked(len(queries)), params).all()


def search_chunks(store_pk: int, queries: list[str], limit: int) -> list[Hit]:
    """The store's best chunks for the queries, best first."""
    words, pairs = query_terms(queries)
    if not words:
        return []
    if db.session.get_bind().dialect.name == "postgresql":
        # Words are letters and digits only, so none carries tsquery syntax.
        rows = db.session.execute(_POSTGRES, {
            "query": " | ".join(words), "words": " ".join(words),
            "firsts": [first for first, _ in pairs], "seconds": [second for _, second in pairs],
            "reach": NEAR_TOKENS + 1, "store": store_pk, "limit": limit}).all()
    else:
        rows = _sqlite_ranked_chunks(store_pk, words, pairs, limit)
    return [Hit(pk, max(rank, 0.0) / (1.0 + max(rank, 0.0))) for pk, rank in rows]
