"""Hybrid search: with EMBEDDINGS_MODEL set, chunks are embedded at ingestion by the upstream's
/v1/embeddings and a search fuses the lexical rank with the embeddings' (ranked in the
registry's database, SQLite and PostgreSQL alike). The fake's embeddings know a few synonyms,
so meaning can be told from shared words.
"""

from __future__ import annotations

import io

import pytest

from tests.conftest import wait_for

DOCUMENTS = {
    "cars.txt": "Change the car's engine oil every ten thousand kilometres and check the tyre "
                "pressure each month; brakes need a look every year.",
    "bread.txt": "Baking bread needs flour, water, salt and yeast; the dough rises before it "
                 "goes into a hot oven.",
    "pets.txt": "A dog needs a walk twice a day, and a cat likes a warm place to sleep.",
}


def upload(client, name: str) -> str:
    return client.files.create(file=(name, io.BytesIO(DOCUMENTS[name].encode())),
                               purpose="assistants").id


def store_of(client) -> tuple[str, dict[str, str]]:
    ids = {name: upload(client, name) for name in DOCUMENTS}
    store = client.vector_stores.create(file_ids=list(ids.values()))
    wait_for(lambda: client.vector_stores.retrieve(store.id).status == "completed")
    return store.id, ids


@pytest.fixture
def embedding(start_bridge, fake_chat):
    """An offline bridge whose searches are hybrid, embedding at the fake chat server."""
    return start_bridge("offline", EMBEDDINGS_MODEL="fake-embedding",
                        EMBEDDINGS_BASE_URL=fake_chat.base_url,
                        EMBEDDINGS_API_KEY=fake_chat.api_key, OPENAI_MAX_RETRIES=0)


def test_meaning_finds_what_words_do_not(embedding, fake_chat, offline_bridge):
    alice = embedding.sdk("alice")
    store_id, ids = store_of(alice)
    # Every chunk was embedded: one request for this store's three one-chunk files.
    embedded = [r for r in fake_chat.requests if r["path"] == "/v1/embeddings"]
    assert sorted(text for r in embedded for text in r["json"]["input"]) == sorted(
        DOCUMENTS.values())
    assert all(r["json"]["model"] == "fake-embedding" for r in embedded)

    page = alice.vector_stores.search(store_id, query="automobile upkeep for my vehicle")
    assert page.data and page.data[0].file_id == ids["cars.txt"]
    assert 0 < page.data[0].score <= 1
    puppies = alice.vector_stores.search(store_id, query="my puppy and kitten")
    assert puppies.data[0].file_id == ids["pets.txt"]

    # Lexical ranking alone (no embeddings model) finds nothing for those words.
    bob = offline_bridge.sdk("bob")
    lexical_store, _ = store_of(bob)
    assert bob.vector_stores.search(lexical_store, query="automobile upkeep for my vehicle").data \
        == []


def test_words_still_count(embedding):
    alice = embedding.sdk("alice")
    store_id, ids = store_of(alice)
    page = alice.vector_stores.search(store_id, query="flour and yeast")
    assert page.data[0].file_id == ids["bread.txt"]
    scores = [result.score for result in page.data]
    assert scores == sorted(scores, reverse=True)


def test_runs_search_with_embeddings_too(embedding):
    alice = embedding.sdk("alice")
    store_id, ids = store_of(alice)
    assistant = embedding.assistant(tools=[{"type": "file_search"}])
    thread = alice.beta.threads.create(
        tool_resources={"file_search": {"vector_store_ids": [store_id]}},
        messages=[{"role": "user", "content": "How often should my automobile get servicing?"}])
    run = alice.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant,
                                                  poll_interval_ms=20)
    reply = alice.beta.threads.messages.list(thread.id, run_id=run.id).data[0].content[0].text
    assert [a.file_citation.file_id for a in reply.annotations] == [ids["cars.txt"]]


def test_an_embeddings_outage_fails_the_file_and_searches_fall_back(embedding, fake_chat):
    alice = embedding.sdk("alice")
    store_id, ids = store_of(alice)
    fake_chat.embeddings_fail = True
    late = alice.files.create(file=("late.txt", b"Tides follow the moon."), purpose="assistants")
    attached = alice.vector_stores.files.create_and_poll(vector_store_id=store_id,
                                                         file_id=late.id, poll_interval_ms=20)
    assert attached.status == "failed"
    assert attached.last_error.code == "server_error"
    assert "embeddings" in attached.last_error.message
    # The query cannot be embedded: the search is lexical, not an error.
    page = alice.vector_stores.search(store_id, query="flour and yeast")
    assert page.data[0].file_id == ids["bread.txt"]
    # Once the provider is back, attaching the file again indexes it.
    fake_chat.embeddings_fail = False
    alice.vector_stores.files.delete(late.id, vector_store_id=store_id)
    again = alice.vector_stores.files.create_and_poll(vector_store_id=store_id, file_id=late.id,
                                                      poll_interval_ms=20)
    assert again.status == "completed"
    assert alice.vector_stores.search(store_id, query="moon tides").data[0].file_id == late.id


def test_vectors_go_with_their_store(embedding):
    from bridge.extensions import db
    from bridge.models import VectorStoreChunkVector

    alice = embedding.sdk("alice")
    store_id, _ = store_of(alice)

    def vectors() -> int:
        with embedding.app.app_context():
            count = db.session.query(VectorStoreChunkVector).count()
            db.session.remove()
        return count

    assert vectors() == len(DOCUMENTS)
    alice.vector_stores.delete(store_id)
    assert vectors() == 0
