"""Streamed answers: `text/event-stream` responses of a run's frames, within this process's cap.

A stream holds its connection (and, under gthread, a worker thread) for as long as its run takes,
so each process serves at most STREAMS_PER_PROCESS at once; one more is refused with 503
`engine_overloaded` before anything starts, and ordinary requests keep the threads beyond them.
The frames come from `bridge.streaming` through the engine; this module only wraps them.
"""

from __future__ import annotations

import threading
from typing import Iterator

from flask import Flask, Response, current_app, stream_with_context

from ..engines import current_engine
from ..errors import ServiceUnavailable
from ..registry import latest_tool_step, release_connection
from ..schemas import run_object, thread_object
from ..streaming import events as ev
from ..streaming.follow import emit
from ..streaming.order import StreamOrder
from ..streaming.publish import run_payload, step_payload

_EXTENSION_KEY = "bridge.stream_slots"
HEADERS = {
    "Cache-Control": "no-cache",
    # nginx and similar proxies would otherwise hold the frames back until their buffer fills.
    "X-Accel-Buffering": "no",
}


class StreamSlots:
    """At most `limit` open streams in this process."""

    def __init__(self, limit: int):
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)
        self._open = 0
        self._lock = threading.Lock()

    def take(self) -> None:
        if not self._free.acquire(blocking=False):
            raise ServiceUnavailable(
                f"This server holds {self.limit} open streams already. Try again shortly, or "
                "poll the run instead.", code="engine_overloaded", headers={"Retry-After": "2"})
        with self._lock:
            self._open += 1

    def give_back(self) -> None:
        with self._lock:
            self._open -= 1
        self._free.release()

    @property
    def open(self) -> int:
        return self._open


def init_app(app: Flask, limit: int) -> StreamSlots:
    slots = StreamSlots(limit)
    app.extensions[_EXTENSION_KEY] = slots
    return slots


def reserve_stream() -> StreamSlots:
    """Take a stream slot of this process, or refuse with 503 before anything starts."""
    slots: StreamSlots = current_app.extensions[_EXTENSION_KEY]
    slots.take()
    return slots


def stream_response(frames: Iterator[bytes], slots: StreamSlots, *,
                    replay_body: str | None = None) -> Response:
    """The frames as an event stream; the slot goes back when the stream ends or is dropped.

    `replay_body` is what a repeat of this request with the same Idempotency-Key is answered:
    the object the stream was about, as JSON (a stream is not replayed).
    """
    def served() -> Iterator[bytes]:
        try:
            for frame in frames:
                release_connection()  # a slow reader must not hold one of the pool's connections
                yield frame
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()  # a client gone mid-way: the source stops reading, the run goes on

    response = Response(stream_with_context(served()), mimetype="text/event-stream",
                        headers=HEADERS)
    # Called once when the server is done with the response, sent whole or not at all.
    response.call_on_close(slots.give_back)
    response.replay_body = replay_body
    return response


def run_stream(run, slots: StreamSlots, *, thread_created: bool = False,
               resumed: bool = False) -> Response:
    """The stream of a run just created (or, `resumed`, given its tool outputs)."""
    replay = run_object(run, run.thread.id).model_dump_json()
    return stream_response(run_frames(run, thread_created=thread_created, resumed=resumed),
                           slots, replay_body=replay)


def run_frames(run, *, thread_created: bool = False, resumed: bool = False) -> Iterator[bytes]:
    """A run's frames: its opening events from the run as the request left it (the thread
    first, when it was made with the run), the rest from the engine."""
    payload = run_payload(run)
    if resumed:
        step = latest_tool_step(run)
        order = StreamOrder.resuming(step.id if step is not None else None,
                                     step.pk if step is not None else 0)
        opening = [ev.run_status(payload)]
        if step is not None:
            opening.append(ev.step_event(step_payload(step, run.thread.id, run.id), step.status))
    else:
        order = StreamOrder()
        opening = [ev.run_created(payload), ev.run_status(payload)]
        if thread_created:
            thread = thread_object(run.thread).model_dump(mode="json")
            opening.insert(0, ev.thread_created(thread))
    engine, run_id = current_engine(), run.id

    def frames() -> Iterator[bytes]:
        yield from emit(order, opening)
        yield from engine.stream(run_id, order)

    return frames()
