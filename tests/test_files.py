"""/v1/files through the official SDK and raw HTTP, on the offline engine (files do not depend
on the engine): bytes round trip, lists and cursors, ownership, limits, refusals, storage."""

from __future__ import annotations

import io
import json
import secrets
import string
import threading
from pathlib import Path

import httpx2 as httpx  # the HTTP client the openai SDK itself uses
import openai
import pytest

from bridge.extensions import db
from bridge.models import File, FileUsage

ALL_BYTES = bytes(range(256)) * 4


def blobs(bridge) -> list[Path]:
    """Every file in the bridge's blob directory, temporary ones included."""
    return sorted(bridge.app.extensions["bridge.blobs"].root.iterdir())


def rows(bridge) -> list[File]:
    with bridge.app.app_context():
        found = list(db.session.scalars(db.select(File)))
        db.session.remove()
        return found


def usage(bridge, user: str) -> int:
    with bridge.app.app_context():
        row = db.session.get(FileUsage, user)
        db.session.remove()
        return row.bytes if row else 0


def upload(bridge, user: str, *, files=None, data=None, content=None, headers=None):
    """A raw POST /v1/files, for bodies the SDK would not send."""
    return httpx.post(f"{bridge.api}/files", files=files, data=data, content=content,
                      headers={**bridge.headers(user), **(headers or {})}, timeout=10)


def assert_error(response, status: int, *, param=None, code=None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"]) == (param, code), error
    return error


def missing_file_id() -> str:
    return "file-" + "".join(secrets.choice(string.ascii_letters + string.digits)
                             for _ in range(24))


# ---- round trip ---------------------------------------------------------------------------

@pytest.mark.parametrize("filename, data", [
    ("notes.txt", b"plain text\n"),
    ("binary.bin", ALL_BYTES),
    ("résumé 日本語 🙂.pdf", b"%PDF-1.4 \x00\xff\xfe"),
])
def test_round_trip(offline_bridge, filename, data):
    alice = offline_bridge.sdk("alice")
    created = alice.files.create(file=(filename, data), purpose="assistants")

    assert created.id.startswith("file-") and len(created.id) == len("file-") + 24
    assert (created.object, created.bytes, created.filename, created.purpose) == (
        "file", len(data), filename, "assistants")
    assert (created.status, created.expires_at, created.status_details) == (
        "processed", None, None)
    assert alice.files.retrieve(created.id) == created
    assert alice.files.content(created.id).read() == data
    assert [f.id for f in alice.files.list()] == [created.id]


def test_wire_shapes(offline_bridge):
    headers = offline_bridge.headers("alice")
    created = upload(offline_bridge, "alice", files={"file": ("a.txt", b"abc")},
                     data={"purpose": "user_data"}).json()
    assert list(created) == ["id", "object", "bytes", "created_at", "expires_at", "filename",
                             "purpose", "status", "status_details"]
    deleted = httpx.delete(f"{offline_bridge.api}/files/{created['id']}", headers=headers)
    assert deleted.json() == {"id": created["id"], "object": "file", "deleted": True}


@pytest.mark.parametrize("filename, content_type", [
    ("data.json", "application/json"),
    ("page.html", "text/html"),
    ("photo.png", "image/png"),
    ("no-extension", "application/octet-stream"),
    ("archive.tar.gz", "application/x-tar"),
])
def test_content_headers(offline_bridge, filename, content_type):
    alice = offline_bridge.sdk("alice")
    file = alice.files.create(file=(filename, b"\x1f\x8b bytes"), purpose="assistants")
    response = alice.files.with_raw_response.content(file.id)

    assert response.headers["content-type"] == content_type  # no charset is claimed
    assert "content-encoding" not in response.headers  # a .gz stays the bytes uploaded
    assert response.headers["content-disposition"] == f'attachment; filename={filename}'
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "private, no-store"
    assert response.headers["content-length"] == str(len(b"\x1f\x8b bytes"))
    assert response.content == b"\x1f\x8b bytes"


def test_content_disposition_of_a_non_ascii_name(offline_bridge):
    alice = offline_bridge.sdk("alice")
    file = alice.files.create(file=('naïve "quote".txt', b"x"), purpose="assistants")
    disposition = alice.files.with_raw_response.content(file.id).headers["content-disposition"]

    assert disposition == ("attachment; filename=\"naive \\\"quote\\\".txt\"; "
                           "filename*=UTF-8''na%C3%AFve%20%22quote%22.txt")


def test_delete_removes_row_and_blob(offline_bridge):
    alice = offline_bridge.sdk("alice")
    keep = alice.files.create(file=("keep.txt", b"keep"), purpose="assistants")
    gone = alice.files.create(file=("gone.txt", b"gone"), purpose="assistants")
    assert len(blobs(offline_bridge)) == 2

    deleted = alice.files.delete(gone.id)

    assert (deleted.id, deleted.object, deleted.deleted) == (gone.id, "file", True)
    assert [f.id for f in alice.files.list()] == [keep.id]
    assert len(blobs(offline_bridge)) == 1
    assert usage(offline_bridge, "alice") == len(b"keep")
    for call in (alice.files.retrieve, alice.files.content, alice.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(gone.id)
    assert alice.files.content(keep.id).read() == b"keep"


def test_files_survive_a_restart(start_bridge, tmp_path):
    storage = str(tmp_path / "shared-files")
    first = start_bridge("offline", FILE_STORAGE_DIR=storage)
    file = first.sdk("alice").files.create(file=("a.bin", ALL_BYTES), purpose="batch")
    url = first.app.config["SQLALCHEMY_DATABASE_URI"]
    second = start_bridge("offline", FILE_STORAGE_DIR=storage,
                          DATABASE_URL=url.replace("postgresql+psycopg://", "postgresql://"))
    assert second.sdk("alice").files.content(file.id).read() == ALL_BYTES


# ---- lists --------------------------------------------------------------------------------

def test_list_filter_order_and_cursors(offline_bridge):
    alice = offline_bridge.sdk("alice")
    purposes = ["assistants", "batch", "assistants", "vision", "assistants", "user_data"]
    made = [alice.files.create(file=(f"f{i}.txt", b"x" * (i + 1)), purpose=purpose).id
            for i, purpose in enumerate(purposes)]

    assert [f.id for f in alice.files.list()] == made[::-1]  # newest first, all by default
    assert [f.id for f in alice.files.list(order="asc")] == made
    assert [f.id for f in alice.files.list(purpose="assistants")] == [made[4], made[2], made[0]]
    assert [f.id for f in alice.files.list(purpose="fine-tune")] == []

    first = alice.files.list(limit=2, order="asc")
    assert ([f.id for f in first.data], first.has_more) == (made[:2], True)
    # The SDK follows `after` from page to page.
    assert [f.id for f in alice.files.list(limit=2, order="asc")] == made
    assert [f.id for f in alice.files.list(limit=1, purpose="assistants")] == [
        made[4], made[2], made[0]]
    page = alice.files.list(limit=10, after=made[3])
    assert ([f.id for f in page.data], page.has_more) == ([made[2], made[1], made[0]], False)


@pytest.mark.parametrize("query, param", [
    ("limit=0", "limit"), ("limit=10001", "limit"), ("order=up", "order"),
    ("after=thread_abc", "after"), ("after=not-a-file", "after"),
])
def test_list_refuses_bad_parameters(offline_bridge, query, param):
    response = httpx.get(f"{offline_bridge.api}/files?{query}",
                         headers=offline_bridge.headers("alice"))
    assert_error(response, 400, param=param)


def test_list_limit_takes_openai_range(offline_bridge):
    alice = offline_bridge.sdk("alice")
    alice.files.create(file=("a.txt", b"a"), purpose="assistants")
    assert len(alice.files.list(limit=10_000).data) == 1


# ---- ownership ----------------------------------------------------------------------------

def _normalized(response, value: str):
    headers = {k: v for k, v in response.headers.items()
               if k.lower() not in ("content-length", "x-request-id", "date")
               and not k.lower().startswith("x-ratelimit-")}
    return response.status_code, headers, response.content.replace(value.encode(), b"<ID>")


@pytest.mark.parametrize("method, template", [
    ("GET", "/files/{id}"),
    ("GET", "/files/{id}/content"),
    ("DELETE", "/files/{id}"),
    ("GET", "/files?after={id}"),
])
def test_another_users_file_is_a_missing_file(offline_bridge, method, template):
    alice = offline_bridge.sdk("alice")
    secret = alice.files.create(file=("secret.txt", b"alice's secret"), purpose="assistants")
    offline_bridge.sdk("bob").files.create(file=("bob.txt", b"bob's"), purpose="assistants")
    swapped = "file-" + secret.id[len("file-"):].swapcase()

    def attempt(value):
        return httpx.request(method, offline_bridge.api + template.format(id=value),
                             headers=offline_bridge.headers("bob"))

    answer = attempt(secret.id)
    assert answer.status_code in (400, 404)
    assert b"alice" not in answer.content
    expected = _normalized(answer, secret.id)
    for other in (missing_file_id(), swapped, "file-short", "not-an-id", "thread_" + "a" * 24):
        assert _normalized(attempt(other), other) == expected, other
    if "after" not in template:
        assert_error(answer, 404, param="file_id")

    assert alice.files.retrieve(secret.id) == secret
    assert alice.files.content(secret.id).read() == b"alice's secret"
    assert [f.filename for f in offline_bridge.sdk("bob").files.list()] == ["bob.txt"]


def test_lists_show_only_the_callers_files(offline_bridge):
    alice, bob = offline_bridge.sdk("alice"), offline_bridge.sdk("bob")
    mine = alice.files.create(file=("a.txt", b"a"), purpose="assistants")
    theirs = bob.files.create(file=("b.txt", b"b"), purpose="assistants")

    assert [f.id for f in alice.files.list()] == [mine.id]
    assert [f.id for f in bob.files.list(purpose="assistants")] == [theirs.id]
    assert list(offline_bridge.sdk("carol").files.list()) == []


def test_sdk_sees_another_users_file_as_not_found(offline_bridge):
    secret = offline_bridge.sdk("alice").files.create(file=("s.txt", b"s"), purpose="assistants")
    bob = offline_bridge.sdk("bob")
    for call in (bob.files.retrieve, bob.files.content, bob.files.delete):
        errors = []
        for value in (secret.id, missing_file_id()):
            with pytest.raises(openai.NotFoundError) as caught:
                call(value)
            errors.append((caught.value.param,
                           caught.value.response.content.replace(value.encode(), b"<ID>")))
        assert errors[0] == errors[1]
    assert offline_bridge.sdk("alice").files.content(secret.id).read() == b"s"


# ---- limits -------------------------------------------------------------------------------

def test_file_over_the_limit_is_413(start_bridge):
    bridge = start_bridge("offline", FILE_MAX_BYTES=1000)
    alice = bridge.sdk("alice")
    assert alice.files.create(file=("fits.bin", b"x" * 1000), purpose="assistants").bytes == 1000

    with pytest.raises(openai.APIStatusError) as caught:
        alice.files.create(file=("big.bin", b"x" * 1001), purpose="assistants")

    assert caught.value.status_code == 413
    assert (caught.value.code, caught.value.param) == ("file_too_large", "file")
    assert [f.filename for f in alice.files.list()] == ["fits.bin"]
    assert len(blobs(bridge)) == 1
    assert usage(bridge, "alice") == 1000


def test_body_over_the_upload_limit_is_413_before_it_is_read(make_app, token_for):
    app = make_app(FILE_MAX_BYTES=1000)
    client = app.test_client()
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n"
            ).encode() + b"x" * (app.config["UPLOAD_CONTENT_LENGTH"] + 1)
    response = client.post("/v1/files", data=body, headers={
        "Authorization": f"Bearer {token_for('alice')}",
        "Content-Type": f"multipart/form-data; boundary={boundary}"})

    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "file_too_large"
    assert list(app.extensions["bridge.blobs"].root.iterdir()) == []


def test_uploads_are_not_bound_by_max_content_length(start_bridge):
    bridge = start_bridge("offline", MAX_CONTENT_LENGTH=1024)
    data = secrets.token_bytes(64 * 1024)
    alice = bridge.sdk("alice")
    file = alice.files.create(file=("big.bin", data), purpose="assistants")
    assert alice.files.content(file.id).read() == data
    # JSON bodies keep their own limit.
    too_big = httpx.post(f"{bridge.api}/threads", headers=bridge.headers("alice"),
                         json={"metadata": {"k": "v" * 500}, "messages": [
                             {"role": "user", "content": "x" * 2000}]})
    assert too_big.status_code == 413


def test_quota_per_user(start_bridge):
    bridge = start_bridge("offline", FILE_QUOTA_BYTES=100)
    alice, bob = bridge.sdk("alice"), bridge.sdk("bob")
    first = alice.files.create(file=("a", b"a" * 60), purpose="assistants")

    with pytest.raises(openai.BadRequestError) as caught:
        alice.files.create(file=("b", b"b" * 41), purpose="assistants")

    assert (caught.value.code, caught.value.param) == ("storage_quota_exceeded", "file")
    assert alice.files.create(file=("c", b"c" * 40), purpose="assistants").bytes == 40
    assert bob.files.create(file=("d", b"d" * 100), purpose="assistants").bytes == 100
    alice.files.delete(first.id)
    assert alice.files.create(file=("e", b"e" * 60), purpose="assistants").bytes == 60
    assert sorted(f.filename for f in alice.files.list()) == ["c", "e"]
    assert (usage(bridge, "alice"), usage(bridge, "bob")) == (100, 100)
    assert len(blobs(bridge)) == 3


def test_concurrent_uploads_never_pass_the_quota(start_bridge):
    bridge = start_bridge("offline", FILE_QUOTA_BYTES=500, RATE_LIMIT_WRITES="")
    clients = [bridge.sdk("alice") for _ in range(10)]
    barrier = threading.Barrier(len(clients))
    outcomes: list[str] = []

    def attempt(client, index):
        barrier.wait()
        try:
            client.files.create(file=(f"{index}.bin", b"z" * 100), purpose="assistants")
            outcomes.append("stored")
        except openai.BadRequestError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=attempt, args=(client, i))
               for i, client in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["storage_quota_exceeded"] * 5 + ["stored"] * 5
    assert usage(bridge, "alice") == 500
    assert len(rows(bridge)) == len(blobs(bridge)) == 5


# ---- refusals -----------------------------------------------------------------------------

def test_empty_file_is_400(offline_bridge):
    with pytest.raises(openai.BadRequestError) as caught:
        offline_bridge.sdk("alice").files.create(file=("empty.txt", b""), purpose="assistants")
    assert (caught.value.code, caught.value.param) == ("empty_file", "file")
    assert blobs(offline_bridge) == [] and rows(offline_bridge) == []


@pytest.mark.parametrize("purpose", ["assistants_output", "Assistants", "", "fine_tune"])
def test_unknown_purpose_is_400(offline_bridge, purpose):
    response = upload(offline_bridge, "alice", files={"file": ("a.txt", b"a")},
                      data={"purpose": purpose})
    assert_error(response, 400, param="purpose")
    assert blobs(offline_bridge) == []


@pytest.mark.parametrize("purpose", ["assistants", "batch", "fine-tune", "vision", "user_data",
                                     "evals"])
def test_every_documented_purpose_is_taken(offline_bridge, purpose):
    file = offline_bridge.sdk("alice").files.create(file=("a.jsonl", b"{}"), purpose=purpose)
    assert file.purpose == purpose


@pytest.mark.parametrize("files, data, param", [
    (None, {"purpose": "assistants"}, "file"),  # no file at all
    ({"file": ("a.txt", b"a")}, None, "purpose"),  # no purpose
    ({"other": ("a.txt", b"a")}, {"purpose": "assistants"}, "other"),  # an unknown part
    ({"file": ("a.txt", b"a")}, {"purpose": "assistants", "expires_after[seconds]": "3600"},
     "expires_after[seconds]"),  # not served yet
])
def test_missing_or_unknown_fields_are_400(offline_bridge, files, data, param):
    if files is None:  # httpx sends a urlencoded body without files: force multipart
        files = {"purpose": (None, data.pop("purpose"))}
    response = upload(offline_bridge, "alice", files=files, data=data)
    assert_error(response, 400, param=param)
    assert blobs(offline_bridge) == [] and rows(offline_bridge) == []


def test_file_sent_as_a_plain_field_is_400(offline_bridge):
    response = upload(offline_bridge, "alice",
                      files={"file": (None, b"no filename"), "purpose": (None, b"assistants")})
    assert_error(response, 400, param="file")


@pytest.mark.parametrize("content, content_type", [
    (json.dumps({"purpose": "assistants", "file": "abc"}), "application/json"),
    ("purpose=assistants&file=abc", "application/x-www-form-urlencoded"),
    ("", None),
])
def test_body_that_is_not_multipart_is_400(offline_bridge, content, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = upload(offline_bridge, "alice", content=content, headers=headers)
    assert_error(response, 400, code="invalid_content_type")


@pytest.mark.parametrize("body", [b"garbage without boundaries", b"--b0undary\r\nbroken",
                                  b"--b0undary--\r\n"])
def test_malformed_multipart_is_400(offline_bridge, body):
    response = upload(offline_bridge, "alice", content=body,
                      headers={"Content-Type": "multipart/form-data; boundary=b0undary"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] in ("file", "purpose")


# ---- filenames ----------------------------------------------------------------------------

@pytest.mark.parametrize("sent, kept", [
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\alice\\report.docx", "report.docx"),
    ("  spaced.txt  ", "spaced.txt"),
    ("evil\u202etxt.exe", "eviltxt.exe"),
    ("a" * 300 + ".pdf", "a" * 251 + ".pdf"),
    ("b" * 300, "b" * 255),
    ("日本" * 200 + ".md", "日本" * 126 + ".md"),
])
def test_filenames_keep_their_safe_base_name(offline_bridge, sent, kept):
    response = upload(offline_bridge, "alice", files={"file": (sent, b"x")},
                      data={"purpose": "assistants"})
    assert response.status_code == 200, response.text
    assert response.json()["filename"] == kept
    assert len(kept) <= 255
    assert [path.name for path in blobs(offline_bridge)] != [kept]  # keys are never the name


def raw_upload(bridge, filename: bytes):
    """An upload whose filename goes on the wire as these bytes: httpx would percent-encode
    control characters."""
    body = (b'--b0undary\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants'
            b'\r\n--b0undary\r\nContent-Disposition: form-data; name="file"; filename="'
            + filename + b'"\r\nContent-Type: application/octet-stream\r\n\r\nx\r\n--b0undary--\r\n')
    return upload(bridge, "alice", content=body,
                  headers={"Content-Type": "multipart/form-data; boundary=b0undary"})


@pytest.mark.parametrize("sent, kept", [
    (b"tab\there\x01\x1f\x7f.txt", "tabhere.txt"),
    ("caf\u00e9\u0085.txt".encode(), "caf\u00e9.txt"),  # a C1 control, sent as UTF-8
])
def test_control_characters_are_removed(offline_bridge, sent, kept):
    response = raw_upload(offline_bridge, sent)
    assert response.status_code == 200, response.text
    assert response.json()["filename"] == kept


@pytest.mark.parametrize("sent", [b"dir/", b"..", b".", b"\x01\x02", b" / ", b"a/\x7f"])
def test_unusable_filename_is_400(offline_bridge, sent):
    assert_error(raw_upload(offline_bridge, sent), 400, param="file", code="invalid_filename")
    assert blobs(offline_bridge) == [] and rows(offline_bridge) == []


def test_empty_filename_is_400(offline_bridge):
    response = upload(offline_bridge, "alice", files={"file": ("", b"x")},
                      data={"purpose": "assistants"})
    # The form parser reads a part with an empty filename as a plain field.
    assert_error(response, 400, param="file", code=None)
    assert blobs(offline_bridge) == [] and rows(offline_bridge) == []


# ---- storage ------------------------------------------------------------------------------

def test_a_failed_insert_leaves_no_blob(offline_bridge, monkeypatch):
    import bridge.files

    def claim_fails(*args, **kwargs):
        raise RuntimeError("the registry went away")

    monkeypatch.setattr(bridge.files, "claim_file_bytes", claim_fails)
    response = upload(offline_bridge, "alice", files={"file": ("a.txt", b"abc")},
                      data={"purpose": "assistants"})
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert blobs(offline_bridge) == [] and rows(offline_bridge) == []


def test_blob_keys_are_ours_and_temporary_files_are_gone(offline_bridge):
    file = offline_bridge.sdk("alice").files.create(file=("../x.txt", b"x"), purpose="assistants")
    (stored,) = rows(offline_bridge)
    assert [path.name for path in blobs(offline_bridge)] == [stored.blob_key]
    assert stored.blob_key not in file.id and "x.txt" not in stored.blob_key


def test_store_refuses_keys_that_are_not_ours(tmp_path):
    from bridge.files.storage import LocalDirectoryStore

    store = LocalDirectoryStore(tmp_path / "blobs")
    for key in ("../escape", "a/b", "", ".hidden", "x" * 65):
        with pytest.raises(ValueError):
            store.put(key, io.BytesIO(b"x"))
    assert list((tmp_path / "blobs").iterdir()) == []
    assert not (tmp_path / "escape").exists()


def test_store_put_that_fails_midway_leaves_nothing(tmp_path):
    from bridge.files.storage import LocalDirectoryStore

    class Broken:
        def __init__(self):
            self.calls = 0

        def read(self, size=-1):
            self.calls += 1
            if self.calls > 1:
                raise OSError("connection lost")
            return b"partial"

    store = LocalDirectoryStore(tmp_path)
    with pytest.raises(OSError):
        store.put("key1", Broken())
    assert list(tmp_path.iterdir()) == []


def test_upload_ignores_idempotency_key(offline_bridge):
    key = {"Idempotency-Key": "same-key"}
    first = upload(offline_bridge, "alice", files={"file": ("a.txt", b"a")},
                   data={"purpose": "assistants"}, headers=key)
    second = upload(offline_bridge, "alice", files={"file": ("a.txt", b"a")},
                    data={"purpose": "assistants"}, headers=key)
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] != second.json()["id"]
    assert "idempotent-replayed" not in second.headers


# ---- FILE_STORAGE=database: the store every host shares -------------------------------------------

def test_hosts_sharing_the_registry_share_files_in_the_database(start_bridge, tmp_path):
    # Two hosts: each its own instance folder and FILE_STORAGE_DIR, one registry database.
    first = start_bridge("offline", FILE_STORAGE="database",
                         FILE_STORAGE_DIR=str(tmp_path / "host-a"))
    url = first.app.config["SQLALCHEMY_DATABASE_URI"]
    second = start_bridge("offline", FILE_STORAGE="database",
                          FILE_STORAGE_DIR=str(tmp_path / "host-b"),
                          DATABASE_URL=url.replace("postgresql+psycopg://", "postgresql://"))
    big = bytes(range(256)) * 9000  # over two of the store's 1 MiB rows
    file = first.sdk("alice").files.create(file=("big.bin", big), purpose="assistants")

    assert second.sdk("alice").files.content(file.id).read() == big
    assert not (tmp_path / "host-a").exists() or not any((tmp_path / "host-a").iterdir())
    # Ingested on the other host, from the same bytes.
    notes = second.sdk("alice").files.create(file=("notes.md", b"# Tides\n\nThe moon pulls."),
                                             purpose="assistants")
    store = first.sdk("alice").vector_stores.create(file_ids=[notes.id])
    attached = first.sdk("alice").vector_stores.files.poll(notes.id, vector_store_id=store.id,
                                                           poll_interval_ms=20)
    assert attached.status == "completed"

    second.sdk("alice").files.delete(file.id)
    with first.app.app_context():
        from bridge.extensions import db
        from bridge.models import FileBlob

        keys = set(db.session.scalars(db.select(FileBlob.key)))
        db.session.remove()
    assert len(keys) == 1  # only notes.md is left


def test_database_store_round_trip_and_refusals(make_app):
    from bridge.extensions import db
    from bridge.files.storage import DatabaseStore

    app = make_app()
    with app.app_context():
        store = DatabaseStore(db.engine)
        data = bytes(range(256)) * 5000
        assert store.put("key1", io.BytesIO(data)) == len(data)
        with store.open("key1") as stream:
            assert stream.read(10) == data[:10]
            assert stream.read() == data[10:]
        with pytest.raises(FileNotFoundError):
            store.open("missing")
        for key in ("../escape", "a/b", "", "x" * 65):
            with pytest.raises(ValueError):
                store.put(key, io.BytesIO(b"x"))

        class Broken:
            calls = 0

            def read(self, size=-1):
                Broken.calls += 1
                if Broken.calls > 1:
                    raise OSError("connection lost")
                return b"partial"

        with pytest.raises(OSError):
            store.put("key2", Broken())
        with pytest.raises(FileNotFoundError):
            store.open("key2")  # a failed put leaves nothing
        store.delete("key1")
        store.delete("key1")  # a missing blob is not an error
        with pytest.raises(FileNotFoundError):
            store.open("key1")
        db.session.remove()
