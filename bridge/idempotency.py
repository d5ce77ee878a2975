"""Idempotent retries: an `Idempotency-Key` header makes a POST safe to repeat.

The first request with a key claims it by inserting a row; the unique (user_id, key) constraint
decides between concurrent requests, so exactly one of them runs. Its response is stored and every
later request with the same key, route and body gets that response again (status, body and the
headers that belong to it) with `Idempotent-Replayed: true`. The same key on another route or with
another body is a 422; a repeat while the first request still runs is a 409 with `Retry-After`
(the codes of the IETF Idempotency-Key draft). Keys are per user and kept IDEMPOTENCY_TTL_HOURS
from their first use; expired ones are deleted when their user claims a key. A request still in
flight after IN_FLIGHT_LEASE_SECONDS is taken to have died with its process, and the next request
with its key and body runs instead.

What is stored: 2xx answers and the 4xx answers that are final for that request (validation, not
found, forbidden), since repeating the request could only give the same answer. Not stored, so a
retry with the same key runs again: 5xx (including the 502/503/504 of a failed provider call) and
the 4xx that say "not now" (408, 409 such as `thread_locked`, 425, 429), and anything that raised
past the error handlers. No failed request leaves anything behind (the engines undo partial
work), so running it again is safe.

The records are written on connections of their own, in short transactions of their own, never
through the view's session: a claim is committed before the view starts and the outcome after it
ended.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from flask import Flask, Response, current_app, request
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from .api import request_body
from .api.guards import add_guard
from .auth import current_user_id
from .config import Settings
from .errors import error_response
from .extensions import db
from .models import IdempotencyRecord, now

if TYPE_CHECKING:
    from .api import Operation

log = logging.getLogger(__name__)


def _release_session() -> None:
    """Hand the request session's connection back first: a request holding one pooled connection
    while it waits for a second could, with enough threads, wait on the others forever."""
    db.session.close()

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# The key's rule, stated once: the check below, the 400 it answers and the header's schema in
# /openapi.json (bridge/api/docs.py) all use these. Printable ASCII, space to "~": no control
# characters (a tab at either end would be stripped by the HTTP server) and no bytes beyond
# ASCII, which HTTP stacks decode differently, so one key cannot arrive in two spellings.
MIN_KEY_LENGTH, MAX_KEY_LENGTH = 1, 255
KEY_PATTERN = r"^[\x20-\x7e]*$"  # a JSON Schema (ECMA-262) pattern, and a Python one
KEY_RULE = f"{MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} printable ASCII characters (space to '~')"
_KEY_SHAPE = re.compile(KEY_PATTERN)

IN_FLIGHT = "in_flight"
DONE = "done"
# Response headers that are part of the answer and replayed with it. Headers other layers add
# (rate limits, CORS, request ids) are added to the replay by those layers again.
KEPT_HEADERS = ("Content-Type", "openai-poll-after-ms")
# 4xx answers that mean "not now" rather than "not this request": a retry may succeed.
TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})
# A request still in flight after this long is taken to have died with its process (a killed
# worker cannot release its key); the next request with the key takes it over.
IN_FLIGHT_LEASE_SECONDS = 15 * 60
_CLAIM_ATTEMPTS = 5


@dataclass(frozen=True)
class Claim:
    """The row this request owns: its primary key and the claim time that identifies the claim."""

    pk: int
    created_at: int


def init_app(app: Flask, settings: Settings) -> None:
    """Guard every authenticated POST with idempotent replays."""
    add_guard(app, _guard_for(settings.IDEMPOTENCY_TTL_HOURS * 3600))


def _guard_for(ttl: int) -> Callable[["Operation", Callable[[], Response]], Response]:
    def idempotency_guard(operation: "Operation", proceed: Callable[[], Response]) -> Response:
        if not operation.idempotent:
            return proceed()
        key = request.headers.get(HEADER)
        if key is None:
            return proceed()
        if not valid_key(key):
            return error_response(400, f"Invalid '{HEADER}' header: it must be {KEY_RULE}.",
                                  param=HEADER)
        fingerprint = _fingerprint(request_body())
        outcome = _claim(current_user_id(), key, request.method, request.path, fingerprint, ttl)
        if isinstance(outcome, Response):
            return outcome
        return _run(outcome, proceed)

    return idempotency_guard


def valid_key(key: str) -> bool:
    """Whether `key` follows KEY_RULE."""
    return MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH and bool(_KEY_SHAPE.fullmatch(key))


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _fingerprint(raw: bytes) -> str:
    """sha256 of the body's canonical JSON, so key order and spacing do not matter.

    An empty body counts as `{}`, as the views read it; a body that is not JSON is hashed as is.
    """
    try:
        data = json.loads(raw, parse_constant=_refuse_constant) if raw.strip() else {}
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(b"json\0" + canonical.encode("utf-8")).hexdigest()
    except (ValueError, UnicodeError, RecursionError):
        return hashlib.sha256(b"raw\0" + raw).hexdigest()


# ---- claiming a key -----------------------------------------------------------------------------

def _claim(user_id: str, key: str, method: str, path: str, fingerprint: str,
           ttl: int) -> Claim | Response:
    """Own the key (a Claim), or the answer for a key another request owns (a Response)."""
    table = IdempotencyRecord
    request_fields = {"method": method, "path": path, "fingerprint": fingerprint}
    for _ in range(_CLAIM_ATTEMPTS):
        claimed_at = now()
        fresh = {**request_fields, "state": IN_FLIGHT, "status": None, "body": None,
                 "headers": None, "created_at": claimed_at, "expires_at": claimed_at + ttl}
        try:
            _release_session()
            with db.engine.begin() as conn:
                result = conn.execute(insert(table).values(user_id=user_id, key=key, **fresh))
        except IntegrityError:
            pass  # the key is taken: look at the request that took it
        else:
            _purge(user_id, claimed_at)
            return Claim(pk=result.inserted_primary_key[0], created_at=claimed_at)

        _release_session()

        with db.engine.connect() as conn:
            row = conn.execute(select(table).where(table.user_id == user_id,
                                                   table.key == key)).one_or_none()
        if row is None:
            continue  # released meanwhile (the first attempt failed): claim it again
        if row.expires_at > claimed_at:
            if (row.method, row.path, row.fingerprint) != (method, path, fingerprint):
                return error_response(
                    422, f"This {HEADER} was already used for a different request (another "
                         "route or body). Use a new key for a new request.",
                    param=HEADER, code="idempotency_key_reused")
            if row.state == DONE:
                return _replay(row)
            if row.created_at > claimed_at - IN_FLIGHT_LEASE_SECONDS:
                return _in_use()
            log.warning("idempotency key of user %s taken over after %ss in flight",
                        user_id, claimed_at - row.created_at)
        # Expired, or lost in flight: take the row over; if another request got there first, the
        # update matches nothing and the next attempt sees what that request made of it.
        _release_session()
        with db.engine.begin() as conn:
            taken = conn.execute(update(table).where(
                table.pk == row.pk, table.state == row.state,
                table.created_at == row.created_at).values(**fresh)).rowcount
        if taken == 1:
            _purge(user_id, claimed_at)
            return Claim(pk=row.pk, created_at=claimed_at)
    return _in_use()  # the key changed hands on every attempt; the client may retry shortly


def _purge(user_id: str, moment: int) -> None:
    """Delete the user's expired keys: lazily, on a claim, with no background job.

    Rows another transaction holds are skipped (PostgreSQL), so concurrent claims never wait on
    each other here; what is left goes with a later claim.
    """
    table = IdempotencyRecord
    expired = select(table.pk).where(table.user_id == user_id, table.expires_at <= moment) \
        .with_for_update(skip_locked=True).scalar_subquery()
    try:
        _release_session()
        with db.engine.begin() as conn:
            conn.execute(delete(table).where(table.pk.in_(expired)))
    except DBAPIError:
        log.warning("could not purge expired idempotency keys", exc_info=True)


def _in_use() -> Response:
    return error_response(
        409, f"A request with this {HEADER} is still being processed. Retry after it finished "
             "to get its response.",
        param=HEADER, code="idempotency_key_in_use", headers={"Retry-After": "1"})


def _replay(row) -> Response:
    response = current_app.response_class(row.body, status=row.status, mimetype="application/json")
    for name, value in (row.headers or {}).items():
        response.headers[name] = value
    response.headers[REPLAYED_HEADER] = "true"
    return response


# ---- running the request and keeping its outcome -----------------------------------------------

def _run(claim: Claim, proceed: Callable[[], Response]) -> Response:
    """Run the request under the claim; store its response, or release the key for a retry."""
    settled = False
    try:
        try:
            response = proceed()
        except Exception as exc:
            # The view's transaction is over; teardown would roll it back anyway, and on SQLite an
            # open write would lock out the record written below.
            db.session.rollback()
            # Render the error as Flask would, to know its status (re-raises when unhandled).
            response = current_app.make_response(current_app.handle_user_exception(exc))
        if _keeps(response):
            settled = True  # stored, or left in flight if the store fails: never run twice
            _store(claim, response)
        return response
    finally:
        if not settled:
            _release(claim)


def _keeps(response: Response) -> bool:
    status = response.status_code
    if response.is_streamed:
        # A stream is not replayed; what is kept is the object it was about (bridge/api/streams).
        return getattr(response, "replay_body", None) is not None
    return 200 <= status < 300 or (400 <= status < 500 and status not in TRANSIENT_STATUSES)


def _mine(claim: Claim):
    table = IdempotencyRecord
    return (table.pk == claim.pk, table.state == IN_FLIGHT, table.created_at == claim.created_at)


def _store(claim: Claim, response: Response) -> None:
    if response.is_streamed:
        body, headers = response.replay_body, {"Content-Type": "application/json"}
    else:
        body = response.get_data(as_text=True)
        headers = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
    try:
        _release_session()
        with db.engine.begin() as conn:
            conn.execute(update(IdempotencyRecord).where(*_mine(claim)).values(
                state=DONE, status=response.status_code, body=body, headers=headers))
    except Exception:
        # The request succeeded: keep the key in flight (until its lease ends) rather than let a
        # retry run it a second time.
        log.exception("could not store the response for an idempotency key")


def _release(claim: Claim) -> None:
    try:
        _release_session()
        with db.engine.begin() as conn:
            conn.execute(delete(IdempotencyRecord).where(*_mine(claim)))
    except Exception:
        log.exception("could not release an idempotency key")
