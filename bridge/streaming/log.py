"""A run's events on their way from whoever executes it to whoever streams it.

The executor appends each event to the run's log; a stream reads the log from the start (so it
misses nothing that came before it subscribed) and then waits for more. Two kinds:

- `LocalRunLog`, in this process's memory: enough when the run executes in the process that
  serves its stream (the in-process run executor).
- `RedisRunLog`, a Redis Stream per run (`XADD` with a length cap, an expiry, `XREAD BLOCK`):
  when the run executes elsewhere (RQ workers, another host) or several processes serve streams.

Only runs somebody streams are logged: the stream opens the run's log before the run is queued
(or resumed), and the executor asks `is_open` once per execution step. A log is a convenience,
not the source of truth: a stream that finds nothing in it for a while asks the registry where
the run is. Logs are kept for `keep_seconds` after they were last written.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from .events import Event

log = logging.getLogger(__name__)

DEFAULT_KEEP_SECONDS = 600
MAX_EVENTS = 10_000  # per run: a long reply streams a few hundred deltas


class RunLog(Protocol):
    def open(self, run_id: str) -> None:
        """Start the run's log afresh: a stream will read it. (A run continued with its tool
        outputs opens a new log; the old one ended with `requires_action`.)"""

    def is_open(self, run_id: str) -> bool:
        """Whether somebody streams the run, so its events are worth appending."""

    def append(self, run_id: str, event: Event) -> None:
        """Add an event to an open run's log; never raises (streams fall back to the registry)."""

    def read(self, run_id: str, after: str | None, timeout: float) -> list[tuple[str, Event]]:
        """The events after position `after` (None: from the start), waiting up to `timeout`
        seconds for the first; each with its position."""


class LocalRunLog:
    """Run logs in this process's memory, dropped `keep_seconds` after their last event."""

    def __init__(self, keep_seconds: float = DEFAULT_KEEP_SECONDS):
        self.keep_seconds = keep_seconds
        self._events: dict[str, list[Event]] = {}
        self._touched: dict[str, float] = {}
        self._changed = threading.Condition()

    def open(self, run_id: str) -> None:
        with self._changed:
            self._forget_old()
            self._events[run_id] = []
            self._touched[run_id] = time.monotonic()

    def is_open(self, run_id: str) -> bool:
        with self._changed:
            return run_id in self._events

    def append(self, run_id: str, event: Event) -> None:
        with self._changed:
            events = self._events.get(run_id)
            if events is None:
                return  # nobody streams this run
            if len(events) < MAX_EVENTS:
                events.append(event)
            self._touched[run_id] = time.monotonic()
            self._changed.notify_all()

    def read(self, run_id: str, after: str | None, timeout: float) -> list[tuple[str, Event]]:
        start = 0 if after is None else int(after) + 1
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._events.get(run_id, ())) <= start:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._changed.wait(remaining)
            events = self._events[run_id]
            return [(str(position), events[position]) for position in range(start, len(events))]

    def _forget_old(self) -> None:
        cutoff = time.monotonic() - self.keep_seconds
        for run_id in [run_id for run_id, at in self._touched.items() if at < cutoff]:
            self._events.pop(run_id, None)
            self._touched.pop(run_id, None)


class RedisRunLog:
    """A Redis Stream per run, `bridge:run-events:<run id>`, capped and expiring."""

    def __init__(self, redis, keep_seconds: float = DEFAULT_KEEP_SECONDS,
                 prefix: str = "bridge:run-events:"):
        self.redis = redis
        self.keep_seconds = int(keep_seconds)
        self.prefix = prefix

    def open(self, run_id: str) -> None:
        try:
            with self.redis.pipeline() as pipe:
                pipe.delete(self.prefix + run_id)
                pipe.set(self.prefix + run_id + ":open", 1, ex=self.keep_seconds)
                pipe.execute()
        except Exception as exc:
            log.warning("run %s: could not open its event log: %s", run_id, exc)

    def is_open(self, run_id: str) -> bool:
        try:
            return bool(self.redis.exists(self.prefix + run_id + ":open"))
        except Exception as exc:
            log.warning("run %s: could not look for its event log: %s", run_id, exc)
            return False

    def append(self, run_id: str, event: Event) -> None:
        key = self.prefix + run_id
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(key, {"event": event.as_json()}, maxlen=MAX_EVENTS, approximate=True)
                pipe.expire(key, self.keep_seconds)
                pipe.execute()
        except Exception as exc:  # streams fall back to the registry; the run goes on
            log.warning("run %s: could not publish %s: %s", run_id, event.name, exc)

    def read(self, run_id: str, after: str | None, timeout: float) -> list[tuple[str, Event]]:
        key = self.prefix + run_id
        try:
            answer = self.redis.xread({key: after or "0-0"}, count=500,
                                      block=max(1, int(timeout * 1000)))
        except Exception as exc:
            log.warning("run %s: could not read its events: %s", run_id, exc)
            time.sleep(min(timeout, 1.0))
            return []
        found = []
        for _key, entries in answer or ():
            for position, fields in entries:
                position = position.decode() if isinstance(position, bytes) else position
                raw = fields.get(b"event", fields.get("event"))
                found.append((position, Event.from_json(raw)))
        return found


class RelayBuffer:
    """The events of a run relayed within one request: appended, then drained at once."""

    def __init__(self) -> None:
        self._events: list[Event] = []

    def open(self, run_id: str) -> None:
        pass

    def is_open(self, run_id: str) -> bool:
        return True

    def append(self, run_id: str, event: Event) -> None:
        self._events.append(event)

    def drain(self) -> list[Event]:
        events, self._events = self._events, []
        return events
