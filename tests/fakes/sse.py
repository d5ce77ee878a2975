"""Server-Sent Events pieces shared by the fakes: the streamed answer, its frames, and logs readers follow."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# How long a stream waiting for its next event goes before it lets the writer check that its client is
# still there: a closed socket only tells on a read or a write, and nothing is written while a stream waits.
LIVENESS_SECONDS = 0.25


class StreamAbandoned(Exception):
    """Raised by a stream's frames when the fake drops the work behind it (stop, reset): the writer cuts the
    connection, so the client sees a broken stream rather than one that ended."""


@dataclass
class Stream:
    """An HTTP answer sent as Server-Sent Events, in chunked encoding, as its frames come.

    `frames` yields encoded frames, or None while nothing is ready (the writer then checks its client).
    """

    frames: Iterator[bytes | None]
    headers: dict[str, str] = field(default_factory=dict)
    # A fault: cut the connection once this many frames went out, without ending the body.
    drop_after: int | None = None


def frame(data: str, event: str | None = None) -> bytes:
    """Encode one Server-Sent Event."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


def compact(payload: Any) -> str:
    """JSON as OpenAI streams it: one line, no spaces."""
    return json.dumps(payload, separators=(",", ":"))


def pieces(text: str, count: int) -> list[str]:
    """Split text into at most `count` non-empty pieces of near-equal length that join back into it."""
    count = max(1, min(count, len(text)))
    bounds = [len(text) * i // count for i in range(count + 1)]
    return [text[start:end] for start, end in zip(bounds, bounds[1:]) if end > start]


class EventLog:
    """The events of one stream in order, kept so that readers can replay them and follow new ones live.

    Responses events carry their type and a sequence number (their index here) in the data; Assistants
    events are the bare object, named by the SSE `event` field. The fake's lock guards every log; the
    log's own condition on that lock wakes its readers only, so hundreds of streams stay cheap.
    """

    def __init__(self, numbered: bool, lock: threading.RLock):
        self.numbered = numbered
        self.cond = threading.Condition(lock)
        self.frames: list[bytes] = []
        self.types: list[str] = []
        self.ended = False

    def add(self, kind: str, payload: dict[str, Any]) -> None:
        """Append an event (its payload encoded now, so later changes to the objects do not show)."""
        if self.ended:
            return
        if self.numbered:
            data = compact({"type": kind, "sequence_number": len(self.frames), **payload})
        else:
            data = compact(payload)
        self.frames.append(frame(data, kind))
        self.types.append(kind)
        self.cond.notify_all()

    def end(self, done: bool = False) -> None:
        """Let readers finish once they have the events so far; `done` adds Assistants' closing frame."""
        if done and not self.ended:
            self.frames.append(frame("[DONE]", "done"))
            self.types.append("done")
        self.ended = True
        self.cond.notify_all()


def follow(log: EventLog, start: int,
           alive: Callable[[], bool]) -> Iterator[bytes | None]:
    """Yield a log's frames from index `start` on, waiting for new ones, until the log ends.

    The lock is taken only to look at the log, never while a frame is written; `alive()` (checked under
    the lock, at least every LIVENESS_SECONDS) turning false means the fake dropped the work, and the
    stream is abandoned.
    """
    position = start
    while True:
        with log.cond:
            log.cond.wait_for(lambda: len(log.frames) > position or log.ended or not alive(), LIVENESS_SECONDS)
            if not alive():
                raise StreamAbandoned
            frames = log.frames[position:]
            finished = log.ended
        position += len(frames)
        yield from frames
        if finished:
            return
        if not frames:
            yield None
