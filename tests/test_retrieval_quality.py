"""Retrieval quality: how a query is read, and what ranks first, through the SDK on the
registry's database (SQLite or PostgreSQL)."""

from __future__ import annotations

import io

from bridge.retrieval import index
from tests.conftest import wait_for


# ---- how a query is read -------------------------------------------------------------------

def test_query_terms_drop_stop_words_and_pair_neighbours():
    words, pairs = index.query_terms(["What is the ring of fire?", "ring fire RING"])
    assert words == ["ring", "fire"]
    assert pairs == [("ring", "fire"), ("fire", "ring")]
    # Underscores split words, as both databases' tokenizers split them.
    assert index.query_terms(["customer_id"]) == (["customer", "id"], [("customer", "id")])
    assert index.query_terms(["how do I do it?", "_"]) == ([], [])


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
