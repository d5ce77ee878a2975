"""Schemathesis against the app's own /openapi.json, in process, on every operation.

Every generated request goes through the WSGI app with a valid token of one of two users (alice,
an admin, and bob), chosen from the generated data so that a replayed example keeps its user.
Most requests aim at real objects: path parameters (and a body's `assistant_id` and file ids, a
list's `run_id` filter) are replaced by the ids of a thread, message, run, run step, assistant,
file, vector store and file batch seeded for that user, or for the other user. Each response must pass schemathesis' checks: no 5xx, a documented
status code, a documented content type, a body that matches the documented schema. On top:

- a request whose Authorization is not one of our tokens (schemathesis' negative cases drop or
  garble it) is answered 401, unless routing refused it first (404/405 without a `param`);
- a request for the other user's objects is answered 404 (or a 400/413 about the
  body or query), never 2xx, 403 or 409, and never a 400 about the object itself.

What runs: schemathesis' examples and coverage phases (deterministic: boundary values, missing
and malformed parameters and bodies, other methods), then FUZZ_EXAMPLES random cases per
operation in the fuzzing phase: 50 by default, the short fuzz of every `make test`. The full fuzz:

    FUZZ_EXAMPLES=300 .venv/bin/pytest tests/test_fuzz.py

`test_fuzz_summary`, the last fuzz test, checks that every operation was exercised and reached
real objects, prints "fuzz: N requests, F failures, ..." and writes fuzz-summary.json to pytest's
base temporary folder. The tests after it pin bugs the fuzz found.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
import zlib
from collections import Counter
from typing import Any

import hypothesis
import pytest
import schemathesis
import werkzeug.test
from hypothesis import HealthCheck
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from bridge import create_app
from bridge.extensions import db
from bridge.models import Thread
from tests.conftest import JWT_SECRET, make_token

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
USERS = ("alice", "bob")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# On the offline engine, runs are over before a fuzzed cancel arrives and never ask for tool
# outputs, and a batch of one small file is ingested before a fuzzed cancel arrives: these
# cannot answer 2xx, but must still reach real runs and batches.
NO_2XX_EXPECTED = {"cancel_run", "submit_tool_outputs", "cancel_vector_store_file_batch"}
PATH_OBJECTS = {"thread_id": "thread", "message_id": "message", "run_id": "run",
                "step_id": "step", "assistant_id": "assistant", "file_id": "file",
                "vector_store_id": "vector_store", "batch_id": "file_batch"}
TARGETS = ("generated", "own", "own", "other", "own thread only")
TOKEN_LIMITS = ("max_prompt_tokens", "max_completion_tokens")


def build_app():
    """Built at import, since the schema is: a SQLite registry of its own, and no sweeper thread
    (it would start with the schema request and outlive a deselected fuzz)."""
    folder = tempfile.TemporaryDirectory(prefix="bridge-fuzz-")
    app = create_app({
        "TESTING": True, "DATABASE_URL": f"sqlite:///{folder.name}/fuzz.db",
        "JWT_SECRET_KEY": JWT_SECRET, "BRIDGE_ENGINE": "offline", "POLL_AFTER_MS": 20,
        "RUN_SWEEP_SECONDS": 0, "LOG_LEVEL": "WARNING", "FILE_STORAGE_DIR": f"{folder.name}/files",
        # Thousands of requests from two users: per-user rate limits would answer 429.
        "RATE_LIMIT_READS": "", "RATE_LIMIT_WRITES": "", "RATE_LIMIT_RUNS": ""})
    app.extensions["tests.fuzz_folder"] = folder  # deleted with the app
    return app


APP = build_app()
schema = schemathesis.openapi.from_wsgi("/openapi.json", APP, config=schemathesis.Config.from_dict(
    # Failure reports keep `max_prompt_tokens` and the (test) tokens readable.
    {"output": {"sanitization": {"enabled": False}}}))


class World:
    """The fuzzed app's users, their seeded objects, and what the fuzz saw."""

    def __init__(self, app):
        self.client = app.test_client()
        self.tokens = {"alice": make_token(app, "alice", admin=True),
                       "bob": make_token(app, "bob")}
        self.assistant = self.post("alice", "/v1/assistants",
                                   {"model": "fuzz-model", "name": "fuzz"})["id"]
        self.seeds = {user: self.seed(user) for user in USERS}
        self.requests = 0
        self.failures = 0
        self.started = time.monotonic()
        self.statuses: dict[str, Counter] = {}
        self.reached: dict[str, set[str]] = {}  # operation id -> {"2xx", "real"}

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def post(self, user: str, url: str, body: dict) -> dict[str, Any]:
        response = self.client.post(url, json=body, headers=self.auth(user))
        assert response.status_code == 200, (url, response.get_data(as_text=True))
        return response.get_json()

    def seed(self, user: str) -> dict[str, str]:
        """A thread with a message and a completed run (and its step), for `user`."""
        thread = self.post(user, "/v1/threads", {
            "metadata": {"seed": user},
            "messages": [{"role": "user", "content": f"hello from {user}"}]})
        run = self.post(user, f"/v1/threads/{thread['id']}/runs", {"assistant_id": self.assistant})
        deadline = time.monotonic() + 10
        while run["status"] in ("queued", "in_progress") and time.monotonic() < deadline:
            time.sleep(0.01)
            run = self.client.get(f"/v1/threads/{thread['id']}/runs/{run['id']}",
                                  headers=self.auth(user)).get_json()
        assert run["status"] == "completed", run
        messages = self.client.get(f"/v1/threads/{thread['id']}/messages",
                                   headers=self.auth(user)).get_json()["data"]
        steps = self.client.get(f"/v1/threads/{thread['id']}/runs/{run['id']}/steps",
                                headers=self.auth(user)).get_json()["data"]
        file_id = self.upload(user)
        store = self.post(user, "/v1/vector_stores", {"name": user, "file_ids": [file_id]})
        batch = self.post(user, f"/v1/vector_stores/{store['id']}/file_batches",
                          {"file_ids": [file_id]})
        return {"thread": thread["id"], "run": run["id"], "message": messages[-1]["id"],
                "step": steps[0]["id"], "assistant": self.assistant, "file": file_id,
                "vector_store": store["id"], "file_batch": batch["id"]}

    def upload(self, user: str) -> str:
        """A file of `user`'s; its id."""
        response = self.client.post("/v1/files", headers=self.auth(user), data={
            "purpose": "assistants", "file": (io.BytesIO(f"from {user}".encode()), "seed.txt")})
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()["id"]

    def disposable(self, user: str, operation_id: str) -> dict[str, str]:
        """The user's seeds, with a fresh object for a delete to remove."""
        seeds = dict(self.seeds[user])
        if operation_id == "delete_thread":
            seeds["thread"] = self.post(user, "/v1/threads", {})["id"]
        elif operation_id == "delete_message":
            seeds["message"] = self.post(user, f"/v1/threads/{seeds['thread']}/messages",
                                         {"role": "user", "content": "to delete"})["id"]
        elif operation_id == "delete_file":
            seeds["file"] = self.upload(user)
        elif operation_id == "delete_vector_store":
            seeds["vector_store"] = self.post(user, "/v1/vector_stores", {})["id"]
        elif operation_id == "delete_vector_store_file":
            seeds["file"] = self.post(user, f"/v1/vector_stores/{seeds['vector_store']}/files",
                                      {"file_id": self.upload(user)})["id"]
        elif operation_id == "delete_assistant" and user == "alice":
            seeds["assistant"] = self.post(user, "/v1/assistants", {"model": "m"})["id"]
        return seeds

    def record(self, case, status: int, target: str) -> None:
        self.requests += 1
        self.statuses.setdefault(operation_id(case), Counter())[status] += 1
        reached = self.reached.setdefault(operation_id(case), set())
        if case.method.upper() != case.operation.method.upper():
            return  # another method: Flask's automatic OPTIONS answers 200 anywhere
        real = target != "generated"
        if 200 <= status < 300:
            reached.add("2xx")
        if real and status not in (401, 404, 405):
            reached.add("real")


@pytest.fixture(scope="module")
def world():
    yield World(APP)
    APP.extensions["bridge.engine"].shutdown()
    APP.extensions["bridge.ingestion"].shutdown()


def operation_id(case) -> str:
    return case.operation.definition.raw["operationId"]


def digest(case) -> int:
    """A number drawn from the generated data: replaying an example repeats its choices."""
    data = [case.operation.label, case.method, case.path_parameters, case.query, case.body]
    text = json.dumps(data, sort_keys=True, default=lambda value: type(value).__name__)
    return zlib.crc32(text.encode())


def aim(case, world: World) -> tuple[str, str]:
    """Pick the user and what the ids point at, and rewrite the case to match."""
    number = digest(case)
    user = USERS[number & 1]
    target = TARGETS[(number >> 1) % len(TARGETS)]
    names = [name for name in (case.path_parameters or {}) if name in PATH_OBJECTS]
    if not names:
        target = "generated"
    elif names == ["assistant_id"] and target != "generated":
        target = "own"  # assistants are shared: nobody else's
    if target != "generated":
        owner = USERS[1 - USERS.index(user)] if target == "other" else user
        deleting = case.method.upper() == "DELETE" and target != "other"
        seeds = world.disposable(owner, operation_id(case)) if deleting else world.seeds[owner]
        for name in names:
            if target != "own thread only" or name == "thread_id":
                case.path_parameters[name] = seeds[PATH_OBJECTS[name]]
    body, query = case.body, case.query
    # A body's file ids name the caller's real file half the time, and always when the path
    # names the caller's own objects: attaching files to a vector store needs both to succeed.
    if isinstance(body, dict) and ((number >> 4) & 1 or target == "own"):
        own_file = world.seeds[user]["file"]
        if "file_id" in body:
            body["file_id"] = own_file
        if isinstance(body.get("file_ids"), list):
            body["file_ids"] = [own_file for _ in body["file_ids"]]
        for entry in body.get("files") if isinstance(body.get("files"), list) else ():
            if isinstance(entry, dict) and "file_id" in entry:
                entry["file_id"] = own_file
    # `filters` in a search is refused (not supported yet): a body aimed at the caller's own
    # objects leaves it out, so that a search can succeed however the fuzz draws.
    if isinstance(body, dict) and target == "own":
        body.pop("filters", None)
    # The fuzz draws few distinct Idempotency-Keys, so most requests reused one with another
    # body (422): aimed at the caller's own objects, a key is made the body's own, so that a
    # create can succeed however the fuzz draws. The other aims still reuse keys.
    headers = case.headers or {}
    if target == "own" and isinstance(headers.get("Idempotency-Key"), str):
        headers["Idempotency-Key"] += f"-{number:08x}"
    if (number >> 4) & 1:
        if isinstance(body, dict) and "assistant_id" in body:
            body["assistant_id"] = world.assistant
        if isinstance(query, dict) and "run_id" in query:
            query["run_id"] = world.seeds[user]["run"]
    return user, target


def error_of(response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return (body.get("error") or {}) if isinstance(body, dict) else {}


def check_access(case, response, world: World, target: str) -> None:
    """Tokens and ownership, beyond the spec: see the module docstring."""
    if case.method.upper() != case.operation.method.upper():
        return  # schemathesis also tries other methods (405, or Flask's automatic OPTIONS)
    status, error = response.status_code, error_of(response)
    routed = not (status in (404, 405) and error.get("param") is None)
    sent = response.request.headers.get("Authorization")
    if sent not in {f"Bearer {token}" for token in world.tokens.values()}:
        assert status == 401 or not routed, (
            f"{case.method} {case.formatted_path} without a valid token answered {status}")
    elif target == "other" and routed:
        about_the_object = error.get("param") in case.path_parameters
        # The caller's own Idempotency-Key is checked before the object is looked up: a 409 or
        # 422 about the key says nothing about the other user's object.
        about_the_key = status in (409, 422) and error.get("param") == "Idempotency-Key"
        assert status == 404 or about_the_key or (
            status in (400, 413) and not about_the_object), (
            f"another user's object: {case.method} {case.formatted_path} answered {status} "
            f"{error}")


class BufferedClient(werkzeug.test.Client):
    """A client that reads the whole response and closes it, as a WSGI server does. schemathesis
    reads a response's body without closing it, which would leave a downloaded file open."""

    def open(self, *args, **kwargs):
        kwargs["buffered"] = True
        return super().open(*args, **kwargs)


# Operations whose response holds an open file until it is closed.
BUFFERED = {"get_file_content": BufferedClient(APP)}


@schema.parametrize()
@hypothesis.settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, print_blob=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                            HealthCheck.data_too_large])
def test_api(case, world):
    user, target = aim(case, world)
    response = case.call(headers=world.auth(user), session=BUFFERED.get(operation_id(case)))
    world.record(case, response.status_code, target)
    try:
        case.validate_response(response, checks=CHECKS)
        check_access(case, response, world, target)
    except BaseException:
        world.failures += 1
        raise


def test_fuzz_summary(world, request, tmp_path_factory, capsys):
    """Every operation was fuzzed and got past 401/404 on real ids; reports the counts."""
    if not world.requests:
        pytest.skip("the fuzz did not run (deselected)")
    elapsed = time.monotonic() - world.started
    statuses = sum(world.statuses.values(), Counter())
    line = (f"fuzz: {world.requests} requests, {world.failures} failures, {elapsed:.1f} s, "
            f"{len(world.statuses)} operations, FUZZ_EXAMPLES={FUZZ_EXAMPLES}; statuses "
            + ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items())))
    summary = {"requests": world.requests, "failures": world.failures,
               "seconds": round(elapsed, 1), "fuzz_examples": FUZZ_EXAMPLES,
               "statuses": {op: dict(sorted(counter.items()))
                            for op, counter in sorted(world.statuses.items())}}
    (tmp_path_factory.getbasetemp() / "fuzz-summary.json").write_text(json.dumps(summary, indent=1))
    with capsys.disabled():
        print(f"\n{line}")

    paths = schema.raw_schema["paths"]
    operations = {op["operationId"] for item in paths.values() for op in item.values()}
    selected = [item for item in request.session.items
                if item.path == request.path and item.name.startswith("test_api[")]
    if len(selected) < len(operations):
        pytest.skip(f"{len(selected)} of the {len(operations)} operations were selected")
    with_ids = {op["operationId"] for path, item in paths.items() if "{" in path
                for op in item.values()}
    assert set(world.statuses) == operations, sorted(operations - set(world.statuses))
    no_real = sorted(op for op in with_ids if "real" not in world.reached.get(op, ()))
    assert not no_real, f"never got past 401/404 with real ids: {no_real}"
    no_success = sorted(op for op in operations - NO_2XX_EXPECTED
                        if "2xx" not in world.reached.get(op, ()))
    assert not no_success, f"never answered 2xx: {no_success}"
    assert world.failures == 0, line


# ---- bugs the fuzz found ------------------------------------------------------------------------

def run_request(client, headers, assistant_id, route, fields):
    if route == "thread and run":
        return client.post("/v1/threads/runs", json={"assistant_id": assistant_id, **fields},
                           headers=headers)
    thread = client.post("/v1/threads", json={}, headers=headers).get_json()["id"]
    return client.post(f"/v1/threads/{thread}/runs", json={"assistant_id": assistant_id, **fields},
                       headers=headers)


@pytest.mark.parametrize("route", ["run", "thread and run"])
@pytest.mark.parametrize("field", TOKEN_LIMITS)
def test_token_limits_beyond_the_database_integer_are_not_a_500(make_app, field, route):
    app = make_app()
    client = app.test_client()
    headers = {"Authorization": f"Bearer {make_token(app, 'alice', admin=True)}"}
    assistant = client.post("/v1/assistants", json={"model": "m"}, headers=headers).get_json()["id"]
    before = client.get("/v1/threads", headers=headers).get_json()["data"]
    response = run_request(client, headers, assistant, route, {field: 2**63})
    assert response.status_code in (200, 400), response.get_data(as_text=True)
    if response.status_code == 400:
        assert response.get_json()["error"]["param"] == field
        after = client.get("/v1/threads", headers=headers).get_json()["data"]
        assert len(after) == len(before) + (route == "run")  # only the test's own thread


def test_thread_and_run_leaves_no_thread_when_the_run_insert_fails(make_app, monkeypatch):
    app = make_app()
    engine = app.extensions["bridge.engine"]

    def create_run_whose_insert_fails(thread, assistant, body):
        db.session.add(Thread())  # NOT NULL columns missing: the flush fails, as an overflow does
        db.session.flush()

    monkeypatch.setattr(engine, "create_run", create_run_whose_insert_fails)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {make_token(app, 'alice', admin=True)}"}
    assistant = client.post("/v1/assistants", json={"model": "m"}, headers=headers).get_json()["id"]
    response = client.post("/v1/threads/runs", json={"assistant_id": assistant}, headers=headers)
    assert response.status_code == 500
    assert client.get("/v1/threads", headers=headers).get_json()["data"] == []
