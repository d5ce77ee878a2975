"""Per-user isolation: another user's thread, message, run, step, file, vector store or file
batch id behaves exactly like a missing one.

Alice owns a thread with a message and a completed run (with its step), a file, and a vector
store holding it through a file batch; Bob owns a thread with a completed run and a vector store
of his own with a batch of his own file. For every /v1 route that takes a thread, message, run,
step, file, vector store or batch id (one table, `ROUTES`), and for every id kind the route takes
(in its path, query or body), Bob sends Alice's id and must get the very same answer as for a
well-formed id that never existed and for a malformed id: same status (404), same headers, same
body byte for byte once the id string itself is replaced by a placeholder. Message and run ids
are tried under Bob's own thread, step ids under Bob's own run, and file and batch ids in Bob's
own store, so the check of what holds them cannot be what stops him. After every attempt both
users' data must be unchanged.

`test_table_covers_every_id_route` ties the table to `app.url_map`, so a new route that takes one
of these ids fails the suite until it is added to the matrix.

Also here: listing threads shows only the caller's; list cursors naming another user's items act
like unknown cursors; `metadata.user_id` is the owner stamp, which no client can set or change.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest

from bridge.observability import route_template
from tests.conftest import ENGINES, engine_settings, make_token, wait_for

KINDS = ("thread_id", "message_id", "run_id", "step_id", "file_id", "vector_store_id", "batch_id")
# What precedes an id's random part: OpenAI spells file ids `file-…`.
PREFIX = {"thread_id": "thread_", "message_id": "msg_", "run_id": "run_", "step_id": "step_",
          "file_id": "file-", "vector_store_id": "vs_", "batch_id": "vsfb_"}
PLACEHOLDER = b"<ID>"
TERMINAL = {"completed", "failed", "cancelled", "incomplete", "expired"}
ID_SLOT = re.compile(r"\{(thread_id|message_id|run_id|step_id|file_id|vector_store_id|batch_id)\}")


# ---- the matrix table ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Route:
    """One /v1 operation; `{thread_id}`, `{message_id}`, `{run_id}`, `{step_id}`, `{file_id}`,
    `{vector_store_id}`, `{batch_id}` mark where ids go."""

    method: str
    template: str
    body: dict[str, Any] | None = None

    @property
    def rule(self) -> str:
        """The Flask rule this row exercises, e.g. `/v1/threads/<thread_id>`."""
        return ID_SLOT.sub(r"<\1>", self.template.split("?")[0])

    @property
    def kinds(self) -> list[str]:
        """Every id kind this row sends, in the path, the query string or the body."""
        return ID_SLOT.findall(self.template) + self.body_kinds

    @property
    def body_kinds(self) -> list[str]:
        return ID_SLOT.findall(json.dumps(self.body)) if self.body is not None else []

    @property
    def query_kinds(self) -> list[str]:
        return ID_SLOT.findall(self.template.partition("?")[2])


# Bodies are valid, so that any difference comes from the ids. Bob's writes carry "bob" markers.
BOB_METADATA = {"metadata": {"note": "bob was here"}}
ROUTES = [
    Route("GET", "/v1/threads/{thread_id}"),
    Route("POST", "/v1/threads/{thread_id}", BOB_METADATA),
    Route("DELETE", "/v1/threads/{thread_id}"),
    Route("POST", "/v1/threads/{thread_id}/messages", {"role": "user", "content": "bob was here"}),
    Route("GET", "/v1/threads/{thread_id}/messages"),
    Route("GET", "/v1/threads/{thread_id}/messages?run_id={run_id}"),
    Route("GET", "/v1/threads/{thread_id}/messages/{message_id}"),
    Route("POST", "/v1/threads/{thread_id}/messages/{message_id}", BOB_METADATA),
    Route("DELETE", "/v1/threads/{thread_id}/messages/{message_id}"),
    Route("POST", "/v1/threads/{thread_id}/runs", {"assistant_id": "{assistant_id}"}),
    Route("GET", "/v1/threads/{thread_id}/runs"),
    Route("GET", "/v1/threads/{thread_id}/runs/{run_id}"),
    Route("POST", "/v1/threads/{thread_id}/runs/{run_id}", BOB_METADATA),
    Route("POST", "/v1/threads/{thread_id}/runs/{run_id}/cancel"),
    Route("POST", "/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs",
          {"tool_outputs": [{"tool_call_id": "call_1", "output": "bob"}]}),
    Route("GET", "/v1/threads/{thread_id}/runs/{run_id}/steps"),
    Route("GET", "/v1/threads/{thread_id}/runs/{run_id}/steps/{step_id}"),
    Route("GET", "/v1/files/{file_id}"),
    Route("GET", "/v1/files/{file_id}/content"),
    Route("DELETE", "/v1/files/{file_id}"),
    Route("POST", "/v1/vector_stores", {"name": "bob", "file_ids": ["{file_id}"]}),
    Route("GET", "/v1/vector_stores/{vector_store_id}"),
    Route("POST", "/v1/vector_stores/{vector_store_id}", {"name": "bob was here"}),
    Route("DELETE", "/v1/vector_stores/{vector_store_id}"),
    Route("POST", "/v1/vector_stores/{vector_store_id}/files", {"file_id": "{file_id}"}),
    Route("GET", "/v1/vector_stores/{vector_store_id}/files"),
    Route("GET", "/v1/vector_stores/{vector_store_id}/files/{file_id}"),
    Route("DELETE", "/v1/vector_stores/{vector_store_id}/files/{file_id}"),
    Route("POST", "/v1/vector_stores/{vector_store_id}/search", {"query": "alice"}),
    Route("POST", "/v1/vector_stores/{vector_store_id}/file_batches", {"file_ids": ["{file_id}"]}),
    Route("GET", "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}"),
    Route("POST", "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel"),
    Route("GET", "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/files"),
]

# One matrix cell per (route, id kind): 33 routes, 51 cells.
MATRIX = [pytest.param(route, kind, id=f"{route.method} {route.template} [{kind}]")
          for route in ROUTES for kind in route.kinds]


def malformed_ids(kind: str, world: "World") -> list[str]:
    """Ids that cannot exist: wrong shape, wrong length, wrong case, or another kind's id."""
    other = world.alice_run if kind != "run_id" else world.alice_message
    return ["not-an-id-at-all", f"{PREFIX[kind]}tooShort", PREFIX[kind].upper() + "A" * 24,
            other]


def missing_id(kind: str) -> str:
    """A well-formed id (right prefix, alphabet and length) that was never issued."""
    alphabet = string.ascii_letters + string.digits
    return PREFIX[kind] + "".join(secrets.choice(alphabet) for _ in range(24))


def swapped_case(real_id: str) -> str:
    """A real id with its random part's case swapped: well formed, and not the same id."""
    head = next(head for head in PREFIX.values() if real_id.startswith(head))
    return head + real_id[len(head):].swapcase()


# ---- the world: Alice's data, Bob's thread ------------------------------------------------------

@dataclass
class World:
    app: Any
    assistant_id: str = ""
    alice_thread: str = ""
    alice_message: str = ""
    alice_run: str = ""
    alice_step: str = ""
    alice_file: str = ""
    alice_store: str = ""
    alice_batch: str = ""
    bob_thread: str = ""
    bob_run: str = ""
    bob_store: str = ""
    bob_batch: str = ""
    tokens: dict[str, str] = field(default_factory=dict)

    def request(self, user: str, method: str, url: str, body: dict | None = None, *,
                admin: bool = False):
        """One request through the Flask test client."""
        token = self.tokens.setdefault(user, make_token(self.app, user, admin=admin))
        data = None if body is None else json.dumps(body)
        # Buffered: the response is read whole and closed, as a server does (a file's download
        # holds the file open until then).
        return self.app.test_client().open(
            url, method=method, data=data, content_type="application/json",
            headers={"Authorization": f"Bearer {token}"}, buffered=True)

    def create(self, user: str, url: str, body: dict, *, admin: bool = False) -> dict:
        response = self.request(user, "POST", url, body, admin=admin)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def finished(self, user: str, thread_id: str, run_id: str) -> str:
        """Poll a run until it reaches a terminal status, and return that status."""

        def terminal():
            status = self.request(user, "GET", f"/v1/threads/{thread_id}/runs/{run_id}"
                                  ).get_json()["status"]
            return status if status in TERMINAL else None

        return wait_for(terminal)

    def snapshot(self) -> dict[str, Any]:
        """Everything both users can see of their threads, messages, runs and steps."""
        seen = {}
        for user, thread, run in (("alice", self.alice_thread, self.alice_run),
                                  ("bob", self.bob_thread, self.bob_run)):
            for url in ("/v1/threads?limit=100", f"/v1/threads/{thread}",
                        f"/v1/threads/{thread}/messages?limit=100&order=asc",
                        f"/v1/threads/{thread}/runs?limit=100",
                        f"/v1/threads/{thread}/runs/{run}/steps?limit=100"):
                response = self.request(user, "GET", url)
                seen[user, url] = (response.status_code, response.get_json())
            files = self.request(user, "GET", "/v1/files")
            seen[user, "/v1/files"] = (files.status_code, files.get_json())
            stores = self.request(user, "GET", "/v1/vector_stores?limit=100")
            seen[user, "/v1/vector_stores"] = (stores.status_code, stores.get_json())
        for user, store, batch in (("alice", self.alice_store, self.alice_batch),
                                   ("bob", self.bob_store, self.bob_batch)):
            for url in (f"/v1/vector_stores/{store}", f"/v1/vector_stores/{store}/files",
                        f"/v1/vector_stores/{store}/file_batches/{batch}",
                        f"/v1/vector_stores/{store}/file_batches/{batch}/files"):
                response = self.request(user, "GET", url)
                seen[user, url] = (response.status_code, response.get_json())
        content = self.request("alice", "GET", f"/v1/files/{self.alice_file}/content")
        seen["alice", "content"] = (content.status_code, content.get_data())
        return seen


def upload(world: World, user: str) -> str:
    """A file of `user`'s; its id."""
    token = world.tokens.setdefault(user, make_token(world.app, user))
    uploaded = world.app.test_client().post(
        "/v1/files", headers={"Authorization": f"Bearer {token}"},
        data={"purpose": "assistants", "file": (io.BytesIO(f"{user}'s file".encode()),
                                                f"{user}.txt")})
    assert uploaded.status_code == 200, uploaded.get_data(as_text=True)
    return uploaded.get_json()["id"]


def build_world(app) -> World:
    """Alice: a thread with a message and a completed run, all with metadata. Bob: a thread with
    a completed run."""
    world = World(app=app)
    world.assistant_id = build_assistant(app)
    world.alice_thread = world.create("alice", "/v1/threads", {
        "metadata": {"topic": "alice's secret"},
        "messages": [{"role": "user", "content": "hello from alice",
                      "metadata": {"tag": "alice"}}]})["id"]
    messages = world.request("alice", "GET", f"/v1/threads/{world.alice_thread}/messages")
    world.alice_message = messages.get_json()["data"][0]["id"]
    world.alice_run = world.create("alice", f"/v1/threads/{world.alice_thread}/runs", {
        "assistant_id": world.assistant_id, "metadata": {"tag": "alice"}})["id"]
    assert world.finished("alice", world.alice_thread, world.alice_run) == "completed"
    steps = world.request("alice", "GET",
                          f"/v1/threads/{world.alice_thread}/runs/{world.alice_run}/steps")
    world.alice_step = steps.get_json()["data"][0]["id"]
    world.alice_file = upload(world, "alice")
    world.alice_store = world.create("alice", "/v1/vector_stores", {"name": "alice's store"})["id"]
    world.alice_batch = world.create("alice", f"/v1/vector_stores/{world.alice_store}/file_batches",
                                     {"file_ids": [world.alice_file]})["id"]
    world.bob_store = world.create("bob", "/v1/vector_stores", {"name": "bob's store"})["id"]
    world.bob_batch = world.create("bob", f"/v1/vector_stores/{world.bob_store}/file_batches",
                                   {"file_ids": [upload(world, "bob")]})["id"]
    # Ingested before any snapshot, so that only Bob's requests could change what Alice sees.
    for user, store in (("alice", world.alice_store), ("bob", world.bob_store)):
        wait_for(lambda: world.request(user, "GET", f"/v1/vector_stores/{store}")
                 .get_json()["status"] == "completed")
    world.bob_thread = world.create("bob", "/v1/threads", {
        "messages": [{"role": "user", "content": "hello from bob"}]})["id"]
    world.bob_run = world.create("bob", f"/v1/threads/{world.bob_thread}/runs", {
        "assistant_id": world.assistant_id})["id"]
    assert world.finished("bob", world.bob_thread, world.bob_run) == "completed"
    return world


@pytest.fixture(params=ENGINES)
def world(request, make_app) -> World:
    """The world on each engine, through the Flask test client (no HTTP server to stop)."""
    _, settings = engine_settings(request, request.param)
    return build_world(make_app(**settings))


@pytest.fixture
def offline_world(app) -> World:
    return build_world(app)


@pytest.fixture
def sdk(bridge):
    """`sdk(user)`: an official SDK client of `bridge` over HTTP, closed after the test."""
    clients = []

    def make(user: str):
        clients.append(bridge.sdk(user))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


# ---- helpers ------------------------------------------------------------------------------------

def fill(route: Route, world: World, kind: str, value: str) -> tuple[str, dict | None]:
    """The URL and body Bob sends, with `value` in the `kind` slot.

    The thread slot holds Alice's thread when the thread id is under test, and Bob's own thread
    otherwise; the run slot holds Bob's own run when a step id is under test; the other slots hold
    Alice's real ids. The vector store slot, like the thread slot, holds Bob's own store unless
    the store id is under test.
    """
    ids = {"thread_id": world.alice_thread if kind == "thread_id" else world.bob_thread,
           "vector_store_id": world.alice_store if kind == "vector_store_id" else world.bob_store,
           "batch_id": world.alice_batch,
           "message_id": world.alice_message,
           "run_id": world.bob_run if kind == "step_id" else world.alice_run,
           "step_id": world.alice_step, "file_id": world.alice_file, kind: value}
    url = route.template.format(**ids)
    body = None
    if route.body is not None:
        text = json.dumps(route.body).replace("{assistant_id}", world.assistant_id)
        body = json.loads(ID_SLOT.sub(lambda slot: ids[slot.group(1)], text))
    return url, body


def normalized(response, id_value: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body with the id replaced; Content-Length follows the id's length,
    x-request-id is new on every response, and x-ratelimit-* count the caller's requests."""
    headers = {name: value.replace(id_value, PLACEHOLDER.decode())
               for name, value in response.headers.items()
               if name.lower() not in ("content-length", "x-request-id")
               and not name.lower().startswith("x-ratelimit-")}
    return response.status_code, headers, response.get_data().replace(
        id_value.encode(), PLACEHOLDER)


def assert_not_found_envelope(response, param: str) -> None:
    assert response.status_code == 404, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == param


# ---- the matrix ---------------------------------------------------------------------------------

@pytest.mark.parametrize("route, kind", MATRIX)
def test_foreign_id_is_indistinguishable_from_missing_id(world, route, kind):
    before = world.snapshot()
    foreign = {"thread_id": world.alice_thread, "message_id": world.alice_message,
               "run_id": world.alice_run, "step_id": world.alice_step,
               "file_id": world.alice_file, "vector_store_id": world.alice_store,
               "batch_id": world.alice_batch}[kind]

    def attempt(value: str):
        url, body = fill(route, world, kind, value)
        return world.request("bob", route.method, url, body)

    answer = attempt(foreign)
    assert_not_found_envelope(answer, param=kind)
    expected = normalized(answer, foreign)

    for unknown in (missing_id(kind), swapped_case(foreign)):
        assert len(unknown) == len(foreign)  # the same shape as a real id
        assert normalized(attempt(unknown), unknown) == expected, unknown
    for malformed in malformed_ids(kind, world):
        assert normalized(attempt(malformed), malformed) == expected, malformed

    assert world.snapshot() == before


def test_matrix_size():
    """33 routes; 16 take one id kind, 16 take two, 1 takes three: 51 cells, each tried with 7
    ids."""
    assert len(ROUTES) == len({(r.method, r.template) for r in ROUTES}) == 33
    assert len(MATRIX) == 51


def test_table_covers_every_id_route(app):
    """Every url_map rule with a thread/message/run/step/file id, for every method, is a row of
    ROUTES."""
    in_app = {(method, route_template(rule.rule))
              for rule in app.url_map.iter_rules()
              if rule.rule.startswith("/v1/") and set(rule.arguments) & set(KINDS)
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    in_table = {(route.method, route.rule) for route in ROUTES if "<" in route.rule}
    assert in_app == in_table


def test_table_covers_every_id_in_query_or_body():
    """Ids taken from a query string or a body (e.g. `run_id` filtering messages) are rows too."""
    from bridge.api import OPERATIONS

    taken = set()
    for op in OPERATIONS:
        if not op.path.startswith("/v1/"):
            continue
        for where, model in (("query", op.query), ("body", op.body)):
            for name in (model.model_fields if model is not None else ()):
                if name in KINDS:
                    taken.add((op.method.upper(), op.path, where, name))
    in_table = {(route.method, route.rule, "query", kind)
                for route in ROUTES for kind in route.query_kinds} | {
        (route.method, route.rule, "body", kind)
        for route in ROUTES for kind in route.body_kinds if kind in model_fields(route)}
    assert taken == in_table


def model_fields(route: Route) -> set[str]:
    """The body fields of the operation a row exercises (a list such as `file_ids` is a row's
    body id too, but not a field named after an id kind)."""
    from bridge.api import OPERATIONS

    return {name for op in OPERATIONS if op.method.upper() == route.method and op.path == route.rule
            and op.body is not None for name in op.body.model_fields}


# ---- the same through the official SDK, over HTTP -----------------------------------------------

def test_sdk_sees_foreign_ids_as_not_found(bridge, sdk):
    world = build_world(bridge.app)
    bob = sdk("bob")
    calls = {
        "thread_id": lambda v: bob.beta.threads.retrieve(v),
        "message_id": lambda v: bob.beta.threads.messages.retrieve(v, thread_id=world.bob_thread),
        "run_id": lambda v: bob.beta.threads.runs.retrieve(v, thread_id=world.bob_thread),
        "step_id": lambda v: bob.beta.threads.runs.steps.retrieve(
            v, thread_id=world.bob_thread, run_id=world.bob_run),
    }
    foreign = {"thread_id": world.alice_thread, "message_id": world.alice_message,
               "run_id": world.alice_run, "step_id": world.alice_step}
    for kind, call in calls.items():
        errors = {}
        for label, value in (("foreign", foreign[kind]), ("missing", missing_id(kind))):
            with pytest.raises(openai.NotFoundError) as caught:
                call(value)
            errors[label] = (caught.value.status_code, caught.value.param,
                             caught.value.response.content.replace(value.encode(), PLACEHOLDER))
        assert errors["foreign"] == errors["missing"]
        assert errors["foreign"][:2] == (404, kind)


# ---- lists and cursors --------------------------------------------------------------------------

def test_list_threads_shows_only_the_callers_threads(offline_world):
    world = offline_world
    second = world.request("alice", "POST", "/v1/threads", {}).get_json()["id"]

    def listed(user):
        response = world.request(user, "GET", "/v1/threads?limit=100")
        assert response.status_code == 200
        return response.get_json()["data"]

    alice, bob, carol = listed("alice"), listed("bob"), listed("carol")
    assert sorted(t["id"] for t in alice) == sorted([world.alice_thread, second])
    assert {t["metadata"]["user_id"] for t in alice} == {"alice"}
    assert [t["id"] for t in bob] == [world.bob_thread]
    assert bob[0]["metadata"] == {"user_id": "bob"}
    assert carol == []


# (path template, cursor parameter, kind of the cursor id); paths are Bob's own lists.
CURSORS = [
    pytest.param(path, cursor, kind, id=f"{path}?{cursor}=<{kind}>")
    for path, kind in (("/v1/threads", "thread_id"),
                       ("/v1/threads/{bob_thread}/messages", "message_id"),
                       ("/v1/threads/{bob_thread}/runs", "run_id"),
                       ("/v1/threads/{bob_thread}/runs/{bob_run}/steps", "step_id"),
                       ("/v1/files", "file_id"),
                       ("/v1/vector_stores", "vector_store_id"),
                       ("/v1/vector_stores/{bob_store}/files", "file_id"),
                       ("/v1/vector_stores/{bob_store}/file_batches/{bob_batch}/files", "file_id"))
    for cursor in ("after", "before")
]


@pytest.mark.parametrize("path, cursor, kind", CURSORS)
def test_foreign_cursor_is_indistinguishable_from_unknown_cursor(offline_world, path, cursor, kind):
    world = offline_world
    foreign = {"thread_id": world.alice_thread, "message_id": world.alice_message,
               "run_id": world.alice_run, "step_id": world.alice_step,
               "file_id": world.alice_file, "vector_store_id": world.alice_store}[kind]
    url = path.format(bob_thread=world.bob_thread, bob_run=world.bob_run,
                      bob_store=world.bob_store, bob_batch=world.bob_batch)

    def attempt(value):
        return world.request("bob", "GET", f"{url}?{cursor}={value}")

    answer = attempt(foreign)
    assert answer.status_code in (400, 404), answer.get_data(as_text=True)
    assert foreign not in json.dumps(answer.get_json().get("data", []))
    unknown = missing_id(kind)
    assert normalized(attempt(unknown), unknown) == normalized(answer, foreign)


# ---- metadata.user_id: the owner stamp ----------------------------------------------------------

def build_assistant(app) -> str:
    world = World(app=app)
    return world.create("admin", "/v1/assistants", {"model": "fake-model"}, admin=True)["id"]


def threads_of(app, user: str) -> list[dict]:
    response = World(app=app).request(user, "GET", "/v1/threads?limit=100")
    assert response.status_code == 200
    return response.get_json()["data"]


@pytest.mark.parametrize("claimed", ["bob", "alice", ""])
def test_create_thread_cannot_set_user_id(bridge, sdk, claimed):
    alice = sdk("alice")
    with pytest.raises(openai.BadRequestError) as caught:
        alice.beta.threads.create(metadata={"user_id": claimed, "topic": "x"})
    assert caught.value.status_code == 400
    assert caught.value.param == "metadata.user_id"
    assert threads_of(bridge.app, "alice") == []  # nothing was created


def test_thread_carries_owner_stamp(bridge, sdk):
    thread = sdk("alice").beta.threads.create(metadata={"topic": "x"})
    assert thread.metadata == {"topic": "x", "user_id": "alice"}


@pytest.mark.parametrize("claimed", ["bob", "alice"])
def test_modify_thread_cannot_change_user_id(bridge, sdk, claimed):
    alice = sdk("alice")
    thread = alice.beta.threads.create(metadata={"topic": "x"})
    with pytest.raises(openai.BadRequestError) as caught:
        alice.beta.threads.update(thread.id, metadata={"user_id": claimed})
    assert caught.value.param == "metadata.user_id"
    assert alice.beta.threads.retrieve(thread.id).metadata == {"topic": "x", "user_id": "alice"}


def test_replacing_metadata_keeps_owner_stamp(bridge, sdk):
    alice = sdk("alice")
    thread = alice.beta.threads.create(metadata={"topic": "x"})
    assert alice.beta.threads.update(thread.id, metadata={"mood": "calm"}).metadata == {
        "mood": "calm", "user_id": "alice"}
    assert alice.beta.threads.update(thread.id, metadata={}).metadata == {"user_id": "alice"}
    assert alice.beta.threads.retrieve(thread.id).metadata == {"user_id": "alice"}


@pytest.mark.parametrize("claimed", ["bob", "alice"])
def test_create_thread_and_run_cannot_set_user_id(bridge, sdk, claimed):
    alice = sdk("alice")
    assistant_id = build_assistant(bridge.app)
    with pytest.raises(openai.BadRequestError) as caught:
        alice.beta.threads.create_and_run(assistant_id=assistant_id,
                                          thread={"metadata": {"user_id": claimed}})
    assert caught.value.param == "thread.metadata.user_id"
    assert threads_of(bridge.app, "alice") == []


def test_create_thread_and_run_stamps_owner(bridge, sdk):
    alice = sdk("alice")
    run = alice.beta.threads.create_and_run(
        assistant_id=build_assistant(bridge.app),
        thread={"metadata": {"topic": "x"}, "messages": [{"role": "user", "content": "hi"}]})
    assert alice.beta.threads.retrieve(run.thread_id).metadata == {"topic": "x", "user_id": "alice"}
    assert World(app=bridge.app).finished("alice", run.thread_id, run.id) == "completed"
    with pytest.raises(openai.NotFoundError):
        sdk("bob").beta.threads.retrieve(run.thread_id)
