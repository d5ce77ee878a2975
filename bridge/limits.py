"""Per-user rate limits: reads, writes and run creations, counted in Redis or in process memory.

Every authenticated endpoint passes the guard below after the token is verified and before its
body is read. GETs count against RATE_LIMIT_READS, other methods against RATE_LIMIT_WRITES, and
run creations (`create_run`, `create_thread_and_run`) against RATE_LIMIT_RUNS as well. Each
category is one counter per user shared by all its routes. Over a limit the answer is 429 in the
error envelope (type `requests`, code `rate_limit_exceeded`) with `Retry-After`, which the
official SDKs honour; the provider's own 429s reach clients as 503s, so a 429 always means this.

The counting is the `limits` library's moving-window strategy over Redis when REDIS_URL is set;
without Redis, `InProcessWindow` keeps the same windows in this process's memory (limits' own
memory storage expires entries with a timer thread restarted every few milliseconds under load).
The guard is the only path: categories follow the operation rather than the Flask route, and are
checked after authentication.

The strategy is a moving window: a user gets at most N requests in any span of the window's
length, with no burst of 2N across a boundary of fixed windows and no herd of clients all
retrying when a fixed window resets; `Retry-After` is the moment the oldest counted request
leaves the window. It keeps one timestamp per counted request (at most N per user and category).

When the storage fails (Redis down or unreachable), requests are served unlimited rather than
refused: one warning is logged, the storage is left alone for STORAGE_RETRY_SECONDS, then tried
again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol
from urllib.parse import urlsplit

from flask import Flask, Response, after_this_request
from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from limits.util import WindowStats

from .api.guards import add_guard
from .auth import current_user_id
from .config import Settings
from .errors import TooManyRequests

if TYPE_CHECKING:
    from .api import Operation

log = logging.getLogger(__name__)

RUN_CREATIONS = frozenset({"create_run", "create_thread_and_run"})
# After a storage failure, requests pass unlimited for this long before the storage is retried.
STORAGE_RETRY_SECONDS = 5.0
# A Redis that does not answer must not hold requests: short timeouts, one immediate retry
# (for a pooled connection the server closed), no backoff.
REDIS_TIMEOUT_SECONDS = 1.0
EXTENSION_KEY = "bridge.limits"


class Strategy(Protocol):
    """What the guard needs of a rate limiter: limits' strategies and InProcessWindow."""

    def hit(self, item: RateLimitItem, *identifiers: str) -> bool: ...

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats: ...


class InProcessWindow:
    """A moving window of request times per counter, in this process's memory.

    A counter's expired entries go when it is next touched, and idle counters in a sweep every
    SWEEP_EVERY hits: no timer thread, and memory bounded by the requests of one window.
    """

    SWEEP_EVERY = 1000

    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, deque[float]]] = {}
        self._lock = threading.Lock()
        self._hits = 0

    def _entries(self, item: RateLimitItem, identifiers: tuple[str, ...],
                 now: float) -> deque[float]:
        key, length = item.key_for(*identifiers), item.get_expiry()
        _, entries = self._windows.setdefault(key, (length, deque()))
        while entries and entries[0] <= now - length:
            entries.popleft()
        return entries

    def hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        now = time.time()
        with self._lock:
            entries = self._entries(item, identifiers, now)
            if len(entries) >= item.amount:
                return False
            entries.append(now)
            self._hits += 1
            if self._hits % self.SWEEP_EVERY == 0:
                self._sweep(now)
            return True

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        now = time.time()
        with self._lock:
            entries = self._entries(item, identifiers, now)
            reset = entries[0] + item.get_expiry() if entries else now
            return WindowStats(reset, item.amount - len(entries))

    def _sweep(self, now: float) -> None:
        for key, (length, entries) in list(self._windows.items()):
            if not entries or entries[-1] <= now - length:
                del self._windows[key]


@dataclass(frozen=True)
class Category:
    name: str  # part of the counter's key
    label: str  # as the 429 message names it
    items: tuple[RateLimitItem, ...]


class UserLimits:
    """The categories, the counters behind them, and the check a request goes through."""

    def __init__(self, strategy: Strategy, prefix: str, reads: Category | None,
                 writes: Category | None, runs: Category | None):
        self.strategy = strategy
        self.prefix = prefix
        self.reads, self.writes, self.runs = reads, writes, runs
        self._retry_at = 0.0  # monotonic time before which a failed storage is left alone
        self._lock = threading.Lock()

    def categories(self, operation: "Operation") -> list[Category]:
        """What `operation` counts against; the narrowest first, so its refusal costs no write."""
        if not operation.auth:
            return []
        if operation.method == "get":
            found = [self.reads]
        else:
            found = [self.runs if operation.operation_id in RUN_CREATIONS else None, self.writes]
        return [category for category in found if category is not None]

    def check(self, user: str, categories: list[Category]) -> dict[str, str]:
        """Count one request; the X-RateLimit-* headers of the tightest limit, or raise the 429.

        A failing storage lets the request through (and answers no headers).
        """
        if time.monotonic() < self._retry_at:
            return {}
        strategy = self.strategy
        try:
            for category in categories:
                for item in category.items:
                    if not strategy.hit(item, self.prefix, category.name, user):
                        reset, _ = strategy.get_window_stats(item, self.prefix, category.name, user)
                        raise self._refusal(user, category, item, reset)
            stats = [(strategy.get_window_stats(item, self.prefix, category.name, user), item)
                     for category in categories for item in category.items]
        except TooManyRequests:
            self._recovered()
            raise
        except Exception as exc:  # the limiter must never take the API down with it
            self._failed(exc)
            return {}
        self._recovered()
        (reset, remaining), item = min(stats, key=lambda pair: pair[0].remaining)
        return _headers(item, remaining, reset)

    def _refusal(self, user: str, category: Category, item: RateLimitItem,
                 reset: float) -> TooManyRequests:
        retry_after = max(1, math.ceil(reset - time.time()))
        log.info("rate limit %s of %s reached by user %s", item, category.name, user)
        return TooManyRequests(
            f"Rate limit reached for {category.label}: {item} per user. "
            f"Please try again in {retry_after}s.",
            code="rate_limit_exceeded",
            headers={**_headers(item, 0, reset), "Retry-After": str(retry_after)})

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            first = self._retry_at == 0.0
            self._retry_at = time.monotonic() + STORAGE_RETRY_SECONDS
        (log.warning if first else log.debug)(
            "rate-limit storage failed (%s: %s); requests pass unlimited, retrying in %ss",
            type(exc).__name__, exc, STORAGE_RETRY_SECONDS)

    def _recovered(self) -> None:
        if self._retry_at:
            with self._lock:
                was_failing, self._retry_at = bool(self._retry_at), 0.0
            if was_failing:
                log.warning("rate-limit storage answers again; limits apply")


def _headers(item: RateLimitItem, remaining: int, reset: float) -> dict[str, str]:
    return {"X-RateLimit-Limit": str(item.amount), "X-RateLimit-Remaining": str(max(0, remaining)),
            "X-RateLimit-Reset": str(math.ceil(max(reset, time.time())))}


def storage_options(url: str) -> dict:
    """Client options for the storage at `url`: bounded waits when it is a plain Redis."""
    if urlsplit(url).scheme not in ("redis", "rediss", "redis+unix"):
        return {}
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return {"socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
            "socket_timeout": REDIS_TIMEOUT_SECONDS, "retry": Retry(NoBackoff(), 1)}


def _category(name: str, label: str, value: str) -> Category | None:
    return Category(name, label, tuple(parse_many(value))) if value else None


def init_app(app: Flask, settings: Settings) -> UserLimits | None:
    """Create the limiter for `app` and guard every authenticated endpoint with it."""
    reads = _category("reads", "reads", settings.RATE_LIMIT_READS)
    writes = _category("writes", "writes", settings.RATE_LIMIT_WRITES)
    runs = _category("runs", "run creations", settings.RATE_LIMIT_RUNS)
    if not (reads or writes or runs):
        return None
    if app.config.get("RATELIMIT_ENABLED") is False:
        return None
    strategy: Strategy = InProcessWindow()
    if settings.REDIS_URL:
        storage = storage_from_string(settings.REDIS_URL, **storage_options(settings.REDIS_URL))
        strategy = MovingWindowRateLimiter(storage)
    # Keys are LIMITS:LIMITER/<prefix>/<category>/<user>/<limit>; tests give each app its own.
    prefix = app.config.get("RATELIMIT_KEY_PREFIX") or "bridge"
    limits = UserLimits(strategy, prefix, reads, writes, runs)
    app.extensions[EXTENSION_KEY] = limits

    def guard(operation: "Operation", proceed: Callable[[], Response]) -> Response:
        categories = limits.categories(operation)
        if categories:
            headers = limits.check(current_user_id(), categories)
            if headers:
                @after_this_request
                def add_headers(response: Response) -> Response:
                    for name, value in headers.items():
                        response.headers.setdefault(name, value)
                    return response
        return proceed()

    add_guard(app, guard)
    return limits
