"""What FakeOpenAI's vector stores do with a file's text: chunk it, rank chunks for a query, filter
them by attributes, and pick the sentence a reply cites.

Ranking is word overlap, not embeddings: a chunk scores the share of the query's words (lowercased
`\\w+` words, stop words left out) that it contains, in 0..1, so a test can tell what will be found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# OpenAI's `auto` chunking: 800-token chunks overlapping by 400. A word stands for a token here.
AUTO_CHUNK_TOKENS = 800
AUTO_OVERLAP_TOKENS = 400
STOP_WORDS = frozenset("""
    a about an and any are as at be been but by can could did do does for from had has have how i if in
    into is it its me my no not of on or our please say says should so some tell than that the their them
    then there these they this those to us was we were what when where which who whom why will with would
    you your
""".split())
_WORD = re.compile(r"\w+")
_TOKEN = re.compile(r"\S+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Passage:
    """One chunk of a file in a vector store."""

    file_id: str
    filename: str
    text: str
    attributes: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Hit:
    """A passage found for a query, with its score."""

    passage: Passage
    score: float


def text_of(data: bytes) -> str:
    """A file's text: its bytes as UTF-8, undecodable bytes replaced."""
    return data.decode("utf-8", errors="replace")


def terms(text: str) -> set[str]:
    """The words of a text that count for ranking: lowercased, stop words left out."""
    return {word for word in _WORD.findall(text.lower()) if word not in STOP_WORDS}


def chunk(text: str, max_tokens: int = AUTO_CHUNK_TOKENS, overlap: int = AUTO_OVERLAP_TOKENS) -> list[str]:
    """Cut a text into runs of at most `max_tokens` words, each starting `max_tokens - overlap` words
    after the one before; each chunk is a slice of the text, so its spacing and lines are kept."""
    spans = [match.span() for match in _TOKEN.finditer(text)]
    step = max(1, max_tokens - overlap)
    chunks = []
    for start in range(0, len(spans), step):
        window = spans[start:start + max_tokens]
        chunks.append(text[window[0][0]:window[-1][1]])
        if start + max_tokens >= len(spans):
            break
    return chunks


def score(query: set[str], passage: str) -> float:
    """The share of the query's words that the passage contains (0 for a query of stop words only)."""
    if not query:
        return 0.0
    return len(query & terms(passage)) / len(query)


def matches(condition: dict[str, Any] | None, attributes: dict[str, Any]) -> bool:
    """Whether a file's attributes pass a comparison (eq, ne, gt, gte, lt, lte, in, nin) or compound
    (and, or) filter; a comparison on an attribute the file lacks fails, except ne and nin."""
    if condition is None:
        return True
    kind = condition["type"]
    if kind in ("and", "or"):
        outcomes = (matches(sub, attributes) for sub in condition["filters"])
        return all(outcomes) if kind == "and" else any(outcomes)
    key, wanted = condition["key"], condition["value"]
    if key not in attributes:
        return kind in ("ne", "nin")
    value = attributes[key]
    if kind == "eq":
        return value == wanted
    if kind == "ne":
        return value != wanted
    if kind == "in":
        return value in wanted
    if kind == "nin":
        return value not in wanted
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (value, wanted))
    if not numbers and not (isinstance(value, str) and isinstance(wanted, str)):
        return False
    return {"gt": value > wanted, "gte": value >= wanted, "lt": value < wanted, "lte": value <= wanted}[kind]


def search(passages: Iterable[Passage], query: str, limit: int, threshold: float = 0.0,
           condition: dict[str, Any] | None = None) -> list[Hit]:
    """The passages that share words with the query, best first (ties in the order given), at most
    `limit` of them, none scoring below `threshold` and all passing the attribute filter."""
    wanted = terms(query)
    hits = [Hit(passage, score(wanted, passage.text)) for passage in passages
            if matches(condition, passage.attributes)]
    hits = [hit for hit in hits if hit.score > 0 and hit.score >= threshold]
    hits.sort(key=lambda hit: -hit.score)
    return hits[:limit]


def cited_sentence(passage: str, query: str) -> str:
    """The passage's sentence sharing the most words with the query (the first of those on a tie),
    on one line and without its closing punctuation, for a reply to quote."""
    sentences = [s for s in _SENTENCE_END.split(passage.strip()) if s.strip()] or [passage]
    wanted = terms(query)
    best = max(sentences, key=lambda sentence: len(wanted & terms(sentence)))
    return " ".join(best.split()).rstrip(".!?")
