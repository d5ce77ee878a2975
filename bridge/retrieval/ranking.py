"""The rank of a search: lexical alone, or lexical and embeddings fused.

Without an embeddings model, a search is the lexical rank of `index`. With one, the query is
embedded too, and the two rankings of the store's chunks are fused by reciprocal rank
(each chunk scores 1 / (RRF_K + rank) in each ranking it appears in), which needs no
calibration between bm25 and cosine scores. The fused score is scaled so that a chunk first in
both rankings scores 1. A query the provider cannot embed is ranked lexically.
"""

from __future__ import annotations

import logging

from . import embeddings, index
from .index import Hit

log = logging.getLogger(__name__)
RRF_K = 60
# Each ranking offers this many times the results wanted, so the fusion has some to reorder.
CANDIDATES = 4


def ranked_chunks(store_pks: tuple[int, ...] | list[int], queries: list[str],
                  limit: int) -> list[Hit]:
    """The stores' best chunks for the queries, best first, at most `limit`."""
    model = embeddings.embedder()
    wanted = limit * CANDIDATES if model is not None else limit
    lexical = sorted((hit for store_pk in store_pks
                      for hit in index.search_chunks(store_pk, queries, wanted)),
                     key=lambda hit: (-hit.score, hit.chunk_pk))[:wanted]
    if model is None:
        return lexical[:limit]
    try:
        [vector] = model.embed([" ".join(queries)])
    except embeddings.EmbeddingError as exc:
        log.warning("search ranked lexically: the query could not be embedded (%s)", exc)
        return lexical[:limit]
    semantic = sorted((near for store_pk in store_pks
                       for near in embeddings.nearest_chunks(store_pk, vector, wanted)),
                      key=lambda near: (-near[1], near[0]))[:wanted]
    fused: dict[int, float] = {}
    for rank, hit in enumerate(lexical):
        fused[hit.chunk_pk] = fused.get(hit.chunk_pk, 0.0) + 1.0 / (RRF_K + rank + 1)
    for rank, (chunk_pk, similarity) in enumerate(semantic):
        if similarity > 0:  # a chunk unrelated to the query is not a result of it
            fused[chunk_pk] = fused.get(chunk_pk, 0.0) + 1.0 / (RRF_K + rank + 1)
    best = 2.0 / (RRF_K + 1)
    order = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return [Hit(chunk_pk, score / best) for chunk_pk, score in order]
