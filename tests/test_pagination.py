"""Cursor pagination of every list route: the envelope, limits, orders and `after`/`before` walks.

Every list route answers `{"object": "list", "data", "first_id", "last_id", "has_more"}`, as
OpenAI's did. The same table of collections (threads, messages, runs, assistants) runs through
every edge: empty lists, exactly full pages, one item more than the limit, default limit 20 and
order desc, walking forward with `after` and backwards with `before` in both orders, and the 400s
for bad cursors and bad query parameters. The last tests page through the official SDK.

GET /v1/threads is our extension of the API (OpenAI had no such route), so the SDK has no
method for it; it is read with the Flask test client or `client.get_api_list`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from openai.pagination import SyncCursorPage
from openai.types.beta import Thread

from bridge.registry import new_id
from tests.conftest import wait_for

KINDS = ("threads", "messages", "runs", "assistants")
ENVELOPE_KEYS = {"object", "data", "first_id", "last_id", "has_more"}
MAX_PAGES = 50  # a walk longer than this is a cursor that never moves


# ---- seeding collections ------------------------------------------------------------------------

@dataclass
class Listing:
    """One list route of one user, and the ids it should hold in creation order."""

    client: Any
    headers: dict[str, str]
    path: str
    ids: list[str] = field(default_factory=list)

    def get(self, **params):
        return self.client.get(self.path, headers=self.headers, query_string=params)

    def page(self, **params) -> dict:
        """One page, checked against the list envelope's invariants."""
        response = self.get(**params)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert set(body) == ENVELOPE_KEYS
        assert body["object"] == "list"
        ids = [item["id"] for item in body["data"]]
        assert body["first_id"] == (ids[0] if ids else None)
        assert body["last_id"] == (ids[-1] if ids else None)
        assert isinstance(body["has_more"], bool)
        return body


class Seeder:
    """Creates threads, messages, runs and assistants through the API, as a given user."""

    def __init__(self, client, token_for):
        self.client = client
        self.token_for = token_for
        self._assistant_id: str | None = None

    def headers(self, user: str, *, admin: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token_for(user, admin=admin)}"}

    def post(self, path: str, body: dict, user: str, *, admin: bool = False) -> dict:
        response = self.client.post(path, json=body, headers=self.headers(user, admin=admin))
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def assistant_id(self) -> str:
        if self._assistant_id is None:
            self._assistant_id = self.post("/v1/assistants", {"model": "fake-model"}, "admin",
                                           admin=True)["id"]
        return self._assistant_id

    def finished_run(self, thread_id: str, user: str) -> str:
        """Create a run and wait until it completes, so the thread is free for the next one."""
        run = self.post(f"/v1/threads/{thread_id}/runs", {"assistant_id": self.assistant_id()}, user)
        url = f"/v1/threads/{thread_id}/runs/{run['id']}"
        wait_for(lambda: self.client.get(url, headers=self.headers(user)).get_json()["status"]
                 == "completed")
        return run["id"]

    def listing(self, kind: str, n: int, user: str = "alice") -> Listing:
        """A list route of `kind` for `user` holding `n` fresh items."""
        headers = self.headers(user)
        if kind == "threads":
            ids = [self.post("/v1/threads", {"metadata": {"i": str(i)}}, user)["id"]
                   for i in range(n)]
            return Listing(self.client, headers, "/v1/threads", ids)
        if kind == "assistants":
            ids = [self.post("/v1/assistants", {"model": "fake-model", "name": f"a{i}"}, "admin",
                             admin=True)["id"] for i in range(n)]
            return Listing(self.client, headers, "/v1/assistants", ids)
        thread_id = self.post("/v1/threads", {}, user)["id"]
        if kind == "messages":
            ids = [self.post(f"/v1/threads/{thread_id}/messages",
                             {"role": "user", "content": f"m{i}"}, user)["id"] for i in range(n)]
            return Listing(self.client, headers, f"/v1/threads/{thread_id}/messages", ids)
        if kind == "runs":
            ids = [self.finished_run(thread_id, user) for _ in range(n)]
            return Listing(self.client, headers, f"/v1/threads/{thread_id}/runs", ids)
        raise AssertionError(kind)


@pytest.fixture
def seeder(client, token_for) -> Seeder:
    return Seeder(client, token_for)


def in_order(ids: list[str], order: str) -> list[str]:
    """Creation-ordered ids as the list should show them."""
    return list(ids) if order == "asc" else list(reversed(ids))


def walk_after(listing: Listing, *, order: str, limit: int) -> tuple[list[str], list[bool]]:
    """Follow `after=last_id` from the first page; returns the ids seen and each page's has_more."""
    ids: list[str] = []
    flags: list[bool] = []
    params: dict[str, Any] = {"limit": limit, "order": order}
    for _ in range(MAX_PAGES):
        page = listing.page(**params)
        assert len(page["data"]) <= limit
        ids += [item["id"] for item in page["data"]]
        flags.append(page["has_more"])
        if not page["has_more"]:
            return ids, flags
        params["after"] = page["last_id"]
    raise AssertionError("the `after` cursor never reached the end of the list")


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    return response.get_json()["error"]


# ---- the envelope ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_empty_list(seeder, kind):
    listing = seeder.listing(kind, 0)

    assert listing.get().get_json() == {"object": "list", "data": [], "first_id": None,
                                        "last_id": None, "has_more": False}


@pytest.mark.parametrize("kind", KINDS)
def test_items_carry_their_object_type(seeder, kind):
    listing = seeder.listing(kind, 1)
    expected = {"threads": "thread", "messages": "thread.message", "runs": "thread.run",
                "assistants": "assistant"}[kind]

    [item] = listing.page()["data"]

    assert item["id"] == listing.ids[0] and item["object"] == expected


@pytest.mark.parametrize("kind", KINDS)
def test_exactly_one_full_page_has_no_more(seeder, kind):
    listing = seeder.listing(kind, 3)

    page = listing.page(limit=3)

    assert [item["id"] for item in page["data"]] == in_order(listing.ids, "desc")
    assert page["has_more"] is False


@pytest.mark.parametrize("kind", KINDS)
def test_one_item_past_the_limit_has_more(seeder, kind):
    listing = seeder.listing(kind, 3)

    page = listing.page(limit=2)

    assert [item["id"] for item in page["data"]] == in_order(listing.ids, "desc")[:2]
    assert page["has_more"] is True


@pytest.mark.parametrize("kind", KINDS)
def test_default_limit_is_20_newest_first(seeder, kind):
    listing = seeder.listing(kind, 21)

    page = listing.page()

    assert [item["id"] for item in page["data"]] == in_order(listing.ids, "desc")[:20]
    assert page["has_more"] is True


@pytest.mark.parametrize("kind", KINDS)
def test_default_order_is_desc_and_asc_reverses_it(seeder, kind):
    listing = seeder.listing(kind, 3)

    newest_first = [item["id"] for item in listing.page()["data"]]
    explicit_desc = [item["id"] for item in listing.page(order="desc")["data"]]
    oldest_first = [item["id"] for item in listing.page(order="asc")["data"]]

    assert newest_first == explicit_desc == in_order(listing.ids, "desc")
    assert oldest_first == in_order(listing.ids, "asc")


@pytest.mark.parametrize("limit", [1, 100])
def test_limit_bounds_are_accepted(seeder, limit):
    listing = seeder.listing("threads", 2)

    page = listing.page(limit=limit)

    assert len(page["data"]) == min(limit, 2)
    assert page["has_more"] is (limit < 2)


# ---- walking with cursors ---------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("kind", KINDS)
def test_after_walks_every_page_once(seeder, kind, order):
    listing = seeder.listing(kind, 5)

    ids, flags = walk_after(listing, order=order, limit=2)

    assert ids == in_order(listing.ids, order), "an item was skipped, repeated or misplaced"
    assert flags == [True, True, False]


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_after_walk_ends_on_an_exactly_full_page(seeder, order):
    listing = seeder.listing("messages", 4)

    ids, flags = walk_after(listing, order=order, limit=2)

    assert ids == in_order(listing.ids, order)
    assert flags == [True, False]


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("kind", KINDS)
def test_before_walks_backwards_to_the_start(seeder, kind, order):
    listing = seeder.listing(kind, 5)
    full = in_order(listing.ids, order)

    seen: list[str] = []
    flags: list[bool] = []
    cursor = full[-1]
    for _ in range(MAX_PAGES):
        page = listing.page(limit=2, order=order, before=cursor)
        ids = [item["id"] for item in page["data"]]
        # Each page is in list order and ends right before the cursor.
        assert ids == full[full.index(cursor) - len(ids):full.index(cursor)]
        seen = ids + seen
        flags.append(page["has_more"])
        if not page["has_more"]:
            break
        cursor = page["first_id"]

    assert seen == full[:-1]
    assert flags == [True, False]


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("direction, cursor, window, has_more", [
    # 5 items, limit 2; `cursor` is a position in list order, `window` the expected slice of it.
    pytest.param("after", 1, slice(2, 4), True, id="after-second"),
    pytest.param("after", 2, slice(3, 5), False, id="after-middle-reaches-end"),
    pytest.param("after", 4, slice(5, 5), False, id="after-last-is-empty"),
    pytest.param("before", 3, slice(1, 3), True, id="before-fourth"),
    pytest.param("before", 2, slice(0, 2), False, id="before-middle-reaches-start"),
    pytest.param("before", 0, slice(0, 0), False, id="before-first-is-empty"),
])
def test_cursor_windows(seeder, order, direction, cursor, window, has_more):
    listing = seeder.listing("messages", 5)
    full = in_order(listing.ids, order)

    page = listing.page(order=order, limit=2, **{direction: full[cursor]})

    assert [item["id"] for item in page["data"]] == full[window]
    assert page["has_more"] is has_more


def test_threads_list_only_the_callers_own(seeder):
    alice = seeder.listing("threads", 2, user="alice")
    bob = seeder.listing("threads", 1, user="bob")

    assert [t["id"] for t in alice.page(order="asc")["data"]] == alice.ids
    assert [t["id"] for t in bob.page()["data"]] == bob.ids


# ---- rejected queries ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_after_and_before_together_are_rejected(seeder, kind):
    listing = seeder.listing(kind, 3)

    error = error_of(listing.get(after=listing.ids[0], before=listing.ids[2]), 400)

    assert error["param"] in ("after", "before")
    assert "after" in error["message"] and "before" in error["message"]


def _unknown_cursor(seeder: Seeder, kind: str) -> str:
    prefix = {"threads": "thread", "messages": "msg", "runs": "run", "assistants": "asst"}[kind]
    return new_id(prefix)


def _foreign_cursor(seeder: Seeder, kind: str) -> str:
    """An id of the same kind in a list the caller does not see: bob's."""
    return seeder.listing(kind, 1, user="bob").ids[0]


def _other_thread_cursor(seeder: Seeder, kind: str) -> str:
    """An id of the caller's own, but from another thread's list."""
    return seeder.listing(kind, 1, user="alice").ids[0]


@pytest.mark.parametrize("param", ["after", "before"])
@pytest.mark.parametrize("kind, cursor_of", [
    *[pytest.param(kind, _unknown_cursor, id=f"{kind}-unknown") for kind in KINDS],
    pytest.param("assistants", lambda s, k: "asst_short", id="assistants-malformed"),
    *[pytest.param(kind, _foreign_cursor, id=f"{kind}-another-users")
      for kind in ("threads", "messages", "runs")],
    *[pytest.param(kind, _other_thread_cursor, id=f"{kind}-another-thread")
      for kind in ("messages", "runs")],
])
def test_cursor_outside_the_list_is_rejected(seeder, kind, cursor_of, param):
    listing = seeder.listing(kind, 2)
    cursor = cursor_of(seeder, kind)

    error = error_of(listing.get(**{param: cursor}), 400)

    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert cursor in error["message"]


@pytest.mark.parametrize("limit", [0, 101, -1, "abc", "1.5", ""])
@pytest.mark.parametrize("kind", KINDS)
def test_bad_limit_is_rejected(seeder, kind, limit):
    listing = seeder.listing(kind, 0)

    error = error_of(listing.get(limit=limit), 400)

    assert error["param"] == "limit"
    assert "limit" in error["message"]


@pytest.mark.parametrize("order", ["sideways", "", "ascending"])
@pytest.mark.parametrize("kind", KINDS)
def test_bad_order_is_rejected(seeder, kind, order):
    listing = seeder.listing(kind, 0)

    error = error_of(listing.get(order=order), 400)

    assert error["param"] == "order"


@pytest.mark.parametrize("param", ["after", "before"])
def test_empty_cursor_is_rejected(seeder, param):
    listing = seeder.listing("threads", 1)

    assert error_of(listing.get(**{param: ""}), 400)["param"] == param


# ---- through the official SDK --------------------------------------------------------------------------

def test_sdk_auto_pagination_yields_every_message_once(bridge):
    client = bridge.sdk("alice")
    thread = client.beta.threads.create()
    created = [client.beta.threads.messages.create(thread_id=thread.id, role="user",
                                                   content=f"message {i}").id for i in range(5)]

    newest_first = [m.id for m in client.beta.threads.messages.list(thread_id=thread.id, limit=2)]
    oldest_first = [m.id for m in client.beta.threads.messages.list(thread_id=thread.id, limit=2,
                                                                    order="asc")]

    assert newest_first == created[::-1]
    assert oldest_first == created


def test_sdk_pages_expose_cursor_fields(offline_bridge):
    client = offline_bridge.sdk("alice")
    thread = client.beta.threads.create()
    created = [client.beta.threads.messages.create(thread_id=thread.id, role="user",
                                                   content=f"m{i}").id for i in range(3)]

    first = client.beta.threads.messages.list(thread_id=thread.id, limit=2, order="asc")
    second = first.get_next_page()

    assert [m.id for m in first.data] == created[:2] and first.has_more is True
    assert [m.id for m in second.data] == created[2:] and second.has_more is False
    assert not second.has_next_page()


def test_sdk_generic_list_pages_through_threads(offline_bridge):
    alice = offline_bridge.sdk("alice")
    created = [alice.beta.threads.create().id for _ in range(5)]
    offline_bridge.sdk("bob").beta.threads.create()

    pages = alice.get_api_list("/threads", model=Thread, page=SyncCursorPage[Thread],
                               options={"params": {"limit": 2, "order": "asc"}})
    listed = [thread.id for thread in pages]

    assert listed == created
    assert all(isinstance(thread, Thread) for thread in pages.data)


@pytest.mark.parametrize("cursor", ["thread_x' OR '1'='1", "msg_" + "a" * 24, "thread_short",
                                    "run_" + "b" * 24])
def test_malformed_cursor_never_reaches_a_query(app, client, token_for, cursor):
    from sqlalchemy import event

    from bridge.extensions import db

    seen: list = []
    with app.app_context():
        engine = db.engine

    def record(conn, cursor_, statement, parameters, context, executemany):
        seen.append(repr(parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        response = client.get("/v1/threads", query_string={"after": cursor},
                              headers={"Authorization": f"Bearer {token_for('alice')}"})
    finally:
        event.remove(engine, "before_cursor_execute", record)

    assert response.status_code == 400 and response.get_json()["error"]["param"] == "after"
    assert not any(cursor in parameters for parameters in seen)
