"""Vector stores through the official SDK: create, attach and ingest files, list, search by
meaning of words (lexical ranking in the registry's database), statuses, isolation, bad input.
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from bridge.retrieval import chunking, extract
from tests.conftest import wait_for

CORPUS = {
    "volcanoes.md": "# Volcanoes\n\nA volcano erupts when magma rises through the crust. Lava "
                    "flows and ash clouds follow an eruption; Mount Etna erupts often.",
    "bread.txt": "Baking bread needs flour, water, salt and yeast. The dough is kneaded, left "
                 "to rise, and baked in a hot oven until the crust is brown.",
    "tides.html": "<html><head><title>ignored title</title><style>p {color: red}</style></head>"
                  "<body><h1>Tides</h1><p>Ocean tides are caused by the gravity of the moon "
                  "and the sun pulling on the seas.</p><script>var moon = 1;</script></body>"
                  "</html>",
    "chess.txt": "In chess the bishop moves diagonally, the rook moves in straight lines, and "
                 "the knight jumps in an L shape over other pieces.",
}
QUESTIONS = [
    ("What happens when a volcano erupts?", "volcanoes.md"),
    ("how long to bake the dough in the oven", "bread.txt"),
    ("What causes ocean tides?", "tides.html"),
    ("How does the knight move in chess?", "chess.txt"),
]


def upload(client, name: str, data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return client.files.create(file=(name, io.BytesIO(raw)), purpose="assistants").id


@pytest.fixture
def alice(offline_bridge):
    return offline_bridge.sdk("alice")


@pytest.fixture
def bob(offline_bridge):
    return offline_bridge.sdk("bob")


@pytest.fixture
def corpus(alice):
    """Alice's store holding CORPUS, every file ingested; (store id, {filename: file id})."""
    ids = {name: upload(alice, name, text) for name, text in CORPUS.items()}
    store = alice.vector_stores.create(name="knowledge", file_ids=list(ids.values()),
                                       metadata={"topic": "mixed"})
    assert store.object == "vector_store" and store.name == "knowledge"
    assert store.metadata == {"topic": "mixed"}
    wait_for(lambda: alice.vector_stores.retrieve(store.id).status == "completed")
    return store.id, ids


def test_create_and_poll_ingests_a_file(alice):
    store = alice.vector_stores.create(name="notes")
    assert store.status == "completed" and store.file_counts.total == 0
    file_id = upload(alice, "notes.md", "# Notes\n\nThe meeting moved to Thursday.")

    attached = alice.vector_stores.files.create_and_poll(
        vector_store_id=store.id, file_id=file_id, attributes={"team": "ops", "year": 2026})

    assert attached.id == file_id and attached.vector_store_id == store.id
    assert attached.status == "completed" and attached.last_error is None
    assert attached.usage_bytes == len("# Notes\n\nThe meeting moved to Thursday.")
    assert attached.attributes == {"team": "ops", "year": 2026}
    # OpenAI's `auto` strategy, spelled out.
    assert attached.chunking_strategy.type == "static"
    assert attached.chunking_strategy.static.max_chunk_size_tokens == 800
    assert attached.chunking_strategy.static.chunk_overlap_tokens == 400
    again = alice.vector_stores.retrieve(store.id)
    assert again.file_counts.completed == again.file_counts.total == 1
    assert again.usage_bytes == attached.usage_bytes
    listed = alice.vector_stores.files.list(vector_store_id=store.id)
    assert [item.id for item in listed.data] == [file_id]


def test_search_returns_the_right_file_first(alice, corpus):
    store_id, ids = corpus
    for question, expected in QUESTIONS:
        page = alice.vector_stores.search(store_id, query=question)
        assert page.data, question
        best = page.data[0]
        assert (best.filename, best.file_id) == (expected, ids[expected]), question
        assert 0 <= best.score <= 1
        assert [result.score for result in page.data] == sorted(
            (result.score for result in page.data), reverse=True)
        assert best.content[0].type == "text"
    assert alice.vector_stores.search(store_id, query="zebra xylophone").data == []


def test_search_shapes_and_options(alice, corpus):
    store_id, ids = corpus
    page = alice.vector_stores.search(store_id, query=["volcano", "bread"], max_num_results=1,
                                      rewrite_query=True)
    assert page.search_query == ["volcano", "bread"]
    assert len(page.data) == 1
    html = alice.vector_stores.search(store_id, query="gravity of the moon").data[0]
    # Tags, scripts and styles are gone; the text of the page stays.
    assert "Ocean tides are caused" in html.content[0].text
    assert "<p>" not in html.content[0].text and "var moon" not in html.content[0].text
    assert "color" not in html.content[0].text


def test_bad_utf8_fails_with_last_error(alice):
    good = upload(alice, "good.txt", "plain words")
    bad = upload(alice, "bad.txt", b"caf\xe9 au lait \xff\xfe")
    odd = upload(alice, "image.png", b"\x89PNG\r\n\x1a\n")
    store = alice.vector_stores.create(file_ids=[good, bad, odd])

    failed = alice.vector_stores.files.poll(bad, vector_store_id=store.id, poll_interval_ms=20)
    assert failed.status == "failed"
    assert failed.last_error.code == "invalid_file" and "UTF-8" in failed.last_error.message
    unsupported = alice.vector_stores.files.poll(odd, vector_store_id=store.id,
                                                 poll_interval_ms=20)
    assert unsupported.status == "failed" and unsupported.last_error.code == "unsupported_file"
    alice.vector_stores.files.poll(good, vector_store_id=store.id, poll_interval_ms=20)
    counts = alice.vector_stores.retrieve(store.id).file_counts
    assert (counts.completed, counts.failed, counts.in_progress, counts.total) == (1, 2, 0, 3)
    failed_only = alice.vector_stores.files.list(vector_store_id=store.id, filter="failed")
    assert {item.id for item in failed_only.data} == {bad, odd}


def test_list_update_delete(alice, corpus):
    store_id, ids = corpus
    other = alice.vector_stores.create(name="second")
    listed = alice.vector_stores.list(order="asc")
    assert [store.id for store in listed.data] == [store_id, other.id]
    page = alice.vector_stores.list(limit=1)
    assert [store.id for store in page.data] == [other.id] and page.has_more

    changed = alice.vector_stores.update(store_id, name="renamed", metadata={"k": "v"},
                                         expires_after={"anchor": "last_active_at", "days": 7})
    assert changed.name == "renamed" and changed.metadata == {"k": "v"}
    assert changed.expires_after.days == 7
    assert changed.expires_at == changed.last_active_at + 7 * 86_400

    removed = alice.vector_stores.files.delete(ids["bread.txt"], vector_store_id=store_id)
    assert removed.deleted and removed.object == "vector_store.file.deleted"
    assert alice.vector_stores.retrieve(store_id).file_counts.total == len(CORPUS) - 1
    assert all(result.filename != "bread.txt" for result in
               alice.vector_stores.search(store_id, query="bread dough oven").data)
    assert alice.files.retrieve(ids["bread.txt"]).id == ids["bread.txt"]  # the file stays

    alice.files.delete(ids["chess.txt"])  # a deleted file leaves every store
    assert alice.vector_stores.retrieve(store_id).file_counts.total == len(CORPUS) - 2

    deleted = alice.vector_stores.delete(store_id)
    assert deleted.deleted and deleted.object == "vector_store.deleted"
    with pytest.raises(openai.NotFoundError):
        alice.vector_stores.retrieve(store_id)
    assert alice.files.retrieve(ids["volcanoes.md"]).id == ids["volcanoes.md"]


def test_attaching_a_file_again_while_it_is_ingested_ingests_it_once(offline_bridge, alice,
                                                                    held_extraction):
    file_id = upload(alice, "held.txt", "one two three")
    store = alice.vector_stores.create()
    alice.vector_stores.files.create(vector_store_id=store.id, file_id=file_id)
    wait_for(lambda: held_extraction.started)
    again = alice.vector_stores.files.create(vector_store_id=store.id, file_id=file_id)
    assert again.id == file_id and again.status == "in_progress"

    held_extraction.release()
    # Every ingestion queued runs to its end, none cancelled.
    offline_bridge.app.extensions["bridge.ingestion"].pool.shutdown(wait=True)
    assert held_extraction.started == ["held.txt"]
    assert alice.vector_stores.files.retrieve(file_id, vector_store_id=store.id).status == \
        "completed"
    assert len(alice.vector_stores.search(store.id, query="two").data) == 1


def test_the_same_file_attached_at_once_by_several_requests_is_one_attachment(offline_bridge,
                                                                            alice):
    # Each request finds the file unattached; all but one then meet the one that attached it.
    stores = [alice.vector_stores.create().id for _ in range(5)]
    file_id = upload(alice, "raced.txt", "raced attachments")
    clients = [offline_bridge.sdk("alice") for _ in range(4)]

    def attach(client, store_id: str, batch: bool) -> str:
        if batch:
            return client.vector_stores.file_batches.create(
                vector_store_id=store_id, file_ids=[file_id]).vector_store_id
        return client.vector_stores.files.create(vector_store_id=store_id, file_id=file_id).id

    for store_id in stores:
        with ThreadPoolExecutor(len(clients)) as pool:
            answers = list(pool.map(lambda index: attach(clients[index], store_id, index % 2 == 1),
                                    range(len(clients))))
        assert answers == [file_id, store_id] * (len(clients) // 2)
        attached = alice.vector_stores.files.list(store_id).data
        assert [row.id for row in attached] == [file_id]
        wait_for(lambda: alice.vector_stores.retrieve(store_id).file_counts.completed == 1)
        assert alice.vector_stores.retrieve(store_id).file_counts.total == 1


def test_static_chunking_splits_by_tokens(alice):
    words = " ".join(f"w{i}" for i in range(250))
    file_id = upload(alice, "words.txt", words)
    store = alice.vector_stores.create(
        file_ids=[file_id], chunking_strategy={"type": "static", "static": {
            "max_chunk_size_tokens": 100, "chunk_overlap_tokens": 50}})
    attached = alice.vector_stores.files.poll(file_id, vector_store_id=store.id,
                                              poll_interval_ms=20)
    assert attached.chunking_strategy.static.max_chunk_size_tokens == 100
    found = alice.vector_stores.search(store.id, query="w120", max_num_results=50).data
    # w120 is in the chunks starting at tokens 50 and 100.
    assert sorted(result.content[0].text.split()[0] for result in found) == ["w100", "w50"]


def test_chunks_overlap_and_cover_the_text():
    text = " ".join(str(i) for i in range(10))
    assert list(chunking.chunks(text, 4, 2)) == ["0 1 2 3", "2 3 4 5", "4 5 6 7", "6 7 8 9"]
    assert list(chunking.chunks("a  b\nc", 800, 400)) == ["a  b\nc"]


# ---- isolation ---------------------------------------------------------------------------------

def test_other_users_chunks_never_move_a_stores_scores_or_order(offline_bridge, alice, bob):
    # A word's rarity is the store's own: Bob's many chunks saying "zebra" would make it common
    # across the index. His chunks are as long as Alice's, since the length part of a score
    # compares a chunk with the whole index's average length.
    def ingested(client, names_texts) -> str:
        store = client.vector_stores.create(file_ids=[upload(client, name, text)
                                                      for name, text in names_texts]).id
        wait_for(lambda: client.vector_stores.retrieve(store).status == "completed")
        return store

    store = ingested(alice, [("zoo.txt", "zebra apple pear"), ("farm.txt", "apple apple cow"),
                             ("orchard.txt", "apple pear plum")])

    def results() -> list[tuple[str, float]]:
        return [(result.filename, result.score) for result in
                alice.vector_stores.search(store, query="zebra apple").data]

    before = results()
    assert [name for name, _ in before] == ["zoo.txt", "farm.txt", "orchard.txt"]
    ingested(bob, [(f"stripes{n}.txt", "zebra zebra plum") for n in range(6)])
    ingested(bob, [("fruit.txt", "apple pear fig")])

    after = results()
    assert [name for name, _ in after] == [name for name, _ in before]
    assert [score for _, score in after] == pytest.approx([score for _, score in before],
                                                           abs=2e-6)


def test_another_users_vector_store_is_a_404_everywhere(offline_bridge, alice, bob, corpus):
    store_id, ids = corpus
    file_id = ids["bread.txt"]
    bob_file = upload(bob, "bob.txt", "bob's words about bread")
    calls = [
        lambda: bob.vector_stores.retrieve(store_id),
        lambda: bob.vector_stores.update(store_id, name="bob"),
        lambda: bob.vector_stores.delete(store_id),
        lambda: bob.vector_stores.files.create(vector_store_id=store_id, file_id=bob_file),
        lambda: bob.vector_stores.files.list(vector_store_id=store_id),
        lambda: bob.vector_stores.files.retrieve(file_id, vector_store_id=store_id),
        lambda: bob.vector_stores.files.delete(file_id, vector_store_id=store_id),
        lambda: bob.vector_stores.search(store_id, query="bread"),
    ]
    missing = "vs_" + "A" * 24
    for call in calls:
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert caught.value.body["param"] == "vector_store_id"
        assert caught.value.body["message"].replace(store_id, missing) == \
            f"No vector store found with id '{missing}'."
    assert bob.vector_stores.list().data == []
    # Alice's store is untouched.
    assert alice.vector_stores.retrieve(store_id).file_counts.total == len(CORPUS)


def test_another_users_file_id_in_a_body_is_a_404(alice, bob):
    alice_file = upload(alice, "alice.txt", "alice's secret words")
    with pytest.raises(openai.NotFoundError) as caught:
        bob.vector_stores.create(file_ids=[alice_file])
    assert caught.value.body["param"] == "file_id"
    assert bob.vector_stores.list().data == []  # nothing was created
    store = bob.vector_stores.create()
    with pytest.raises(openai.NotFoundError) as attach:
        bob.vector_stores.files.create(vector_store_id=store.id, file_id=alice_file)
    with pytest.raises(openai.NotFoundError) as missing:
        bob.vector_stores.files.create(vector_store_id=store.id, file_id="file-" + "B" * 24)
    assert attach.value.body["message"].replace(alice_file, "X") == \
        missing.value.body["message"].replace("file-" + "B" * 24, "X")
    # A file of the caller's that is not in this store is not found there either.
    with pytest.raises(openai.NotFoundError):
        alice.vector_stores.files.retrieve(alice_file, vector_store_id=alice.vector_stores
                                           .create().id)


# ---- bad inputs --------------------------------------------------------------------------------

BAD_BODIES = [
    ("/vector_stores", {"name": 5}, "name"),
    ("/vector_stores", {"file_ids": "file-x"}, "file_ids"),
    ("/vector_stores", {"unknown": 1}, "unknown"),
    ("/vector_stores", {"expires_after": {"anchor": "created_at", "days": 1}},
     "expires_after.anchor"),
    ("/vector_stores", {"expires_after": {"anchor": "last_active_at", "days": 0}},
     "expires_after.days"),
    ("/vector_stores", {"chunking_strategy": {"type": "auto"}}, "chunking_strategy"),
    ("/vector_stores/{store}/files", {}, "file_id"),
    ("/vector_stores/{store}/files", {"file_id": "{file}", "chunking_strategy": {
        "type": "static", "static": {"max_chunk_size_tokens": 99, "chunk_overlap_tokens": 0}}},
     "chunking_strategy.static.max_chunk_size_tokens"),
    ("/vector_stores/{store}/files", {"file_id": "{file}", "chunking_strategy": {
        "type": "static", "static": {"max_chunk_size_tokens": 4097, "chunk_overlap_tokens": 0}}},
     "chunking_strategy.static.max_chunk_size_tokens"),
    ("/vector_stores/{store}/files", {"file_id": "{file}", "chunking_strategy": {
        "type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 401}}},
     "chunking_strategy.static"),
    ("/vector_stores/{store}/files", {"file_id": "{file}", "chunking_strategy": {"type": "x"}},
     "chunking_strategy"),
    ("/vector_stores/{store}/search", {}, "query"),
    ("/vector_stores/{store}/search", {"query": "a", "max_num_results": 0}, "max_num_results"),
    ("/vector_stores/{store}/search", {"query": "a", "max_num_results": 51}, "max_num_results"),
    ("/vector_stores/{store}/search", {"query": []}, "query"),
    ("/vector_stores/{store}/search", {"query": "a", "filters": {
        "type": "eq", "key": "team", "value": "ops"}}, "filters"),
    # A store made inline by tool_resources keeps the same chunking rule.
    ("/threads", {"tool_resources": {"file_search": {"vector_stores": [{"chunking_strategy": {
        "type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 51}}}]}}},
     "tool_resources.file_search.vector_stores.0.chunking_strategy.static"),
    ("/threads", {"tool_resources": {"file_search": {"vector_stores": [{
        "file_ids": ["file-x"] * 501}]}}},
     "tool_resources.file_search.vector_stores.0.file_ids"),
]


@pytest.mark.parametrize("path, body, param", BAD_BODIES,
                         ids=[f"{path}-{param}" for path, _, param in BAD_BODIES])
def test_bad_bodies_are_json_400s(offline_bridge, alice, path, body, param):
    store = alice.vector_stores.create()
    file_id = upload(alice, "a.txt", "words")
    text = json.dumps(body).replace("{file}", file_id)
    response = offline_bridge.app.test_client().post(
        "/v1" + path.replace("{store}", store.id), data=text,
        headers={**offline_bridge.headers("alice"), "Content-Type": "application/json"})
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"].startswith(param), error


def test_bad_list_queries_are_400s(offline_bridge, alice):
    store = alice.vector_stores.create()
    for path in ("/vector_stores?limit=0", "/vector_stores?after=vs_nope",
                 f"/vector_stores/{store.id}/files?filter=done"):
        response = offline_bridge.app.test_client().get(
            "/v1" + path, headers=offline_bridge.headers("alice"))
        assert response.status_code == 400, (path, response.get_data(as_text=True))
        assert response.get_json()["error"]["type"] == "invalid_request_error"


# ---- PDF ---------------------------------------------------------------------------------------

def tiny_pdf(text: str) -> bytes:
    """A one-page PDF showing `text` in Helvetica, with a correct cross-reference table."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def test_pdf_text_is_searchable_and_a_broken_pdf_fails(alice):
    good = upload(alice, "glaciers.pdf", tiny_pdf("Glaciers carve valleys as they slowly move"))
    broken = upload(alice, "broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R")
    store = alice.vector_stores.create(file_ids=[good, broken])

    assert alice.vector_stores.files.poll(good, vector_store_id=store.id,
                                          poll_interval_ms=20).status == "completed"
    failed = alice.vector_stores.files.poll(broken, vector_store_id=store.id, poll_interval_ms=20)
    assert failed.status == "failed" and failed.last_error.code == "invalid_file"
    best = alice.vector_stores.search(store.id, query="how do glaciers move").data[0]
    assert best.filename == "glaciers.pdf" and "carve valleys" in best.content[0].text


# ---- DOCX --------------------------------------------------------------------------------------

def tiny_docx(*paragraphs: str) -> bytes:
    import docx

    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zip_bomb(size: int) -> bytes:
    """A .docx-shaped archive whose one member inflates to `size` bytes."""
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"\0" * size)
    return out.getvalue()


def test_docx_text_is_searchable_and_bombs_and_junk_fail(alice, monkeypatch):
    # A small limit, so that the bomb need not be large: the check is the same.
    monkeypatch.setattr(extract, "MAX_DOCX_INFLATED_BYTES", 1024 * 1024)
    good = upload(alice, "orchard.docx", tiny_docx("Apple trees are pruned in late winter.",
                                                   "Pears ripen after picking."))
    bomb = upload(alice, "bomb.docx", zip_bomb(2 * 1024 * 1024))
    junk = upload(alice, "junk.docx", b"PK\x03\x04 not really a zip")
    store = alice.vector_stores.create(file_ids=[good, bomb, junk])

    assert alice.vector_stores.files.poll(good, vector_store_id=store.id,
                                          poll_interval_ms=20).status == "completed"
    for file_id in (bomb, junk):
        failed = alice.vector_stores.files.poll(file_id, vector_store_id=store.id,
                                                poll_interval_ms=20)
        assert failed.status == "failed" and failed.last_error.code == "invalid_file", file_id
    assert "inflates" in alice.vector_stores.files.retrieve(
        bomb, vector_store_id=store.id).last_error.message
    best = alice.vector_stores.search(store.id, query="when are apple trees pruned").data[0]
    assert best.filename == "orchard.docx" and "late winter" in best.content[0].text
