"""Retrieval quality, through the SDK on the registry's database (SQLite or PostgreSQL).

On the shipped corpus (tests/corpus: twelve documents, 59 questions), the file that answers a
question ranks first, for every question. Each store is searched as OpenAI's `auto` chunking
leaves it (each document one chunk: none has 800 tokens) and as a small static strategy leaves
it (five to nine chunks a document, so a question's words are spread over several of them and
the best chunk, not the best document, must win). Then how a query is read: stop words, and
neighbouring words that stand near each other in a chunk.
"""

from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select

from bridge.extensions import db
from bridge.models import VectorStoreChunk
from bridge.retrieval import index
from tests import corpus
from tests.conftest import wait_for

DOCUMENTS = corpus.documents()
QUESTIONS = corpus.questions()
STRATEGIES = {
    "auto": None,
    "small": {"type": "static", "static": {"max_chunk_size_tokens": 100,
                                           "chunk_overlap_tokens": 20}},
}


def chunk_count(app) -> int:
    with app.app_context():
        count = db.session.scalar(select(func.count()).select_from(VectorStoreChunk))
        db.session.remove()
        return count


def test_the_corpus_is_what_the_criterion_needs():
    kinds = {name.rpartition(".")[2] for name in DOCUMENTS}
    assert {"txt", "md", "html", "pdf", "docx"} <= kinds
    assert len(DOCUMENTS) >= 10 and len(QUESTIONS) >= 24
    assert {expected for _, expected in QUESTIONS} == set(DOCUMENTS)  # every file is asked about


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_right_file_ranks_first(offline_bridge, strategy):
    alice = offline_bridge.sdk("alice")
    ids = {name: alice.files.create(file=(name, io.BytesIO(data)), purpose="assistants").id
           for name, data in DOCUMENTS.items()}
    options = {"chunking_strategy": STRATEGIES[strategy]} if STRATEGIES[strategy] else {}
    store = alice.vector_stores.create(name=f"corpus-{strategy}", file_ids=list(ids.values()),
                                       **options)
    wait_for(lambda: alice.vector_stores.retrieve(store.id).status == "completed", timeout=30)
    counts = alice.vector_stores.retrieve(store.id).file_counts
    assert counts.completed == len(DOCUMENTS), counts
    if strategy == "small":
        assert chunk_count(offline_bridge.app) >= 5 * len(DOCUMENTS)

    failures = []
    for question, expected in QUESTIONS:
        results = alice.vector_stores.search(store.id, query=question, max_num_results=10).data
        if not results or (results[0].filename, results[0].file_id) != (expected, ids[expected]):
            top = ", ".join(f"{result.filename} {result.score:.3f}" for result in results[:3])
            failures.append(f"{question!r}: expected {expected}, got [{top}]")
    assert not failures, (f"{len(failures)} of {len(QUESTIONS)} questions ranked the wrong "
                          "file first:\n" + "\n".join(failures))


# ---- how a query is read -------------------------------------------------------------------

def test_query_terms_drop_stop_words_and_pair_neighbours():
    words, pairs = index.query_terms(["What is the ring of fire?", "ring fire RING"])
    assert words == ["ring", "fire"]
    assert pairs == [("ring", "fire"), ("fire", "ring")]
    # Underscores split words, as both databases' tokenizers split them.
    assert index.query_terms(["customer_id"]) == (["customer", "id"], [("customer", "id")])
    assert index.query_terms(["how do I do it?", "_"]) == ([], [])


def test_a_long_query_is_read_as_its_first_words_and_pairs_and_still_searched(offline_bridge):
    spoken = [f"w{n}" for n in range(200)]
    # Each query pairs the same words in another order: many more pairs than words.
    queries = [" ".join(spoken[:64]), " ".join(reversed(spoken[:64])), " ".join(spoken[::3])]
    words, pairs = index.query_terms(queries)
    assert words == spoken[:index.MAX_QUERY_WORDS]
    assert len(pairs) == index.MAX_QUERY_WORDS and len(set(pairs)) == len(pairs)

    alice = offline_bridge.sdk("alice")
    file_id = alice.files.create(file=("w.txt", b"w1 w2 w3 and w63"), purpose="assistants").id
    store = alice.vector_stores.create(file_ids=[file_id])
    wait_for(lambda: alice.vector_stores.retrieve(store.id).status == "completed")
    found = alice.vector_stores.search(store.id, query=queries).data
    assert [result.file_id for result in found] == [file_id]


def test_words_near_each_other_rank_above_words_apart(offline_bridge):
    alice = offline_bridge.sdk("alice")
    apart = ("apart.txt", "A ring was found on the beach. Much later that summer a fire burned "
                          "in the dry hills above the town.")
    # The longer of the two, so that only nearness can put it first.
    near = ("near.txt", "Some eclipses leave a ring of fire around the dark moon for a few "
                        "minutes, and then the full light of day returns over the green hills, "
                        "the harbour and the quiet old town.")
    ids = [alice.files.create(file=(name, io.BytesIO(text.encode())),
                              purpose="assistants").id for name, text in (apart, near)]
    store = alice.vector_stores.create(file_ids=ids)
    wait_for(lambda: alice.vector_stores.retrieve(store.id).status == "completed")

    results = alice.vector_stores.search(store.id, query="ring of fire").data
    assert [result.filename for result in results] == ["near.txt", "apart.txt"]
    assert results[0].score > results[1].score
