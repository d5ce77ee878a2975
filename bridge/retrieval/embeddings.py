"""Embeddings of chunks, from the provider's `/v1/embeddings`, ranked in the registry's database.

Only when EMBEDDINGS_MODEL is set: ingestion then embeds every chunk (a file whose chunks cannot
be embedded fails, rather than being searchable in one way only), and a search embeds its
query and ranks the store's chunks by cosine similarity, next to the lexical rank (see
`ranking`). Vectors are normalised when made, so similarity is a dot product, computed where
the chunks are: on PostgreSQL over a `real[]` column with `unnest`, on SQLite by a function
registered on each connection. Both scan the store's own chunks exactly; no index is needed at
the sizes one user's stores have.
"""

from __future__ import annotations

import logging
import math
from array import array
from dataclasses import dataclass
from typing import Any

import openai
from flask import Flask, current_app
from sqlalchemy import event, text

from ..extensions import db

log = logging.getLogger(__name__)
_EXTENSION_KEY = "bridge.embeddings"
# Inputs per embeddings request (OpenAI takes up to 2048; smaller requests fail less at once).
BATCH = 64


class EmbeddingError(Exception):
    """The provider did not embed the text."""


def _normalised(vector: list[float]) -> list[float]:
    length = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / length for x in vector]


def _dot(left: bytes | None, right: bytes | None) -> float | None:
    """SQLite's similarity of two packed vectors."""
    if left is None or right is None:
        return None
    a, b = array("f"), array("f")
    a.frombytes(left)
    b.frombytes(right)
    return sum(x * y for x, y in zip(a, b))


@dataclass
class Embedder:
    """The provider's embeddings model."""

    client: Any
    model: str

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One normalised vector per text, in order."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), BATCH):
            batch = texts[start:start + BATCH]
            try:
                answer = self.client.embeddings.create(model=self.model, input=batch)
            except openai.APIError as exc:
                raise EmbeddingError(f"{type(exc).__name__}: {exc}") from exc
            ordered = sorted(answer.data, key=lambda item: item.index)
            if len(ordered) != len(batch):
                raise EmbeddingError(f"{len(ordered)} vectors for {len(batch)} inputs")
            vectors += [_normalised(list(item.embedding)) for item in ordered]
        return vectors


def init_app(app: Flask, settings) -> None:
    """The app's embedder when EMBEDDINGS_MODEL is set, and SQLite's similarity function."""
    if not settings.EMBEDDINGS_MODEL:
        app.extensions[_EXTENSION_KEY] = None
        return
    client = openai.OpenAI(api_key=settings.EMBEDDINGS_API_KEY or settings.OPENAI_API_KEY or "none",
                           base_url=settings.EMBEDDINGS_BASE_URL or settings.OPENAI_BASE_URL,
                           timeout=settings.OPENAI_TIMEOUT, max_retries=settings.OPENAI_MAX_RETRIES)
    app.extensions[_EXTENSION_KEY] = Embedder(client, settings.EMBEDDINGS_MODEL)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        with app.app_context():
            event.listen(db.engine, "connect", lambda connection, _: connection.create_function(
                "bridge_dot", 2, _dot, deterministic=True))


def embedder() -> Embedder | None:
    """The current app's embedder, or None when only lexical ranking is configured."""
    return current_app.extensions.get(_EXTENSION_KEY)


_NEAREST = {
    "postgresql": text(
        "SELECT v.chunk_pk, (SELECT sum(a * b) FROM unnest(v.embedding, CAST(:query AS real[])) "
        "AS t(a, b)) AS similarity FROM vector_store_chunk_vectors v "
        "WHERE v.vector_store_pk = :store ORDER BY similarity DESC, v.chunk_pk LIMIT :limit"),
    "sqlite": text(
        "SELECT v.chunk_pk, bridge_dot(v.embedding, :query) AS similarity "
        "FROM vector_store_chunk_vectors v WHERE v.vector_store_pk = :store "
        "ORDER BY similarity DESC, v.chunk_pk LIMIT :limit"),
}


def nearest_chunks(store_pk: int, vector: list[float], limit: int) -> list[tuple[int, float]]:
    """(chunk pk, cosine similarity) of the store's chunks nearest the vector, nearest first."""
    dialect = db.session.get_bind().dialect.name
    query = list(vector) if dialect == "postgresql" else array("f", vector).tobytes()
    rows = db.session.execute(_NEAREST[dialect], {"query": query, "store": store_pk,
                                                  "limit": limit})
    return [(pk, float(similarity)) for pk, similarity in rows if similarity is not None]
