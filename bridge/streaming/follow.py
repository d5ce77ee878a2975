"""Following a run's log as a stream of frames, with the registry as the source of truth.

`follow` reads the run's log and yields each event's frame, in the order `StreamOrder` allows,
until the run's terminal event, then `done`. While the log is quiet it yields a `: ping` comment
every `ping_seconds`, and every `check_seconds` it asks the registry (through `settle`, which
opens and closes its own session: nothing is held while the stream waits) whether the run has
ended meanwhile, say because the process executing it died or the log lost an event. When it has,
the stream closes what it had open and ends with the run's terminal event from the registry.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Iterator

from .events import DONE, PING, Event
from .log import RunLog
from .order import StreamOrder

# What the registry says about a run whose log went quiet: None while it is still active, else
# the events that end the stream (given what the stream has open).
Settle = Callable[[StreamOrder], "list[Event] | None"]


def emit(order: StreamOrder, events: Iterable[Event]) -> Iterator[bytes]:
    """The frames of the events the order admits, in turn."""
    for event in events:
        if order.admits(event):
            order.check(event)
            yield event.frame()


def follow(log: RunLog, run_id: str, order: StreamOrder, settle: Settle, *,
           ping_seconds: float, check_seconds: float = 1.0) -> Iterator[bytes]:
    """The frames of the run's events from its log, ending with `done`."""
    position: str | None = None
    last_frame = last_check = time.monotonic()
    while order.terminal is None and not order.errored:
        wait = max(0.01, min(ping_seconds - (time.monotonic() - last_frame),
                             check_seconds - (time.monotonic() - last_check)))
        batch = log.read(run_id, position, timeout=wait)
        for position, event in batch:
            for frame in emit(order, [event]):
                last_frame = time.monotonic()
                yield frame
            if order.terminal is not None:
                break
        now = time.monotonic()
        if order.terminal is None and now - last_check >= check_seconds:
            last_check = now
            ending = settle(order)
            if ending is not None:
                # The log may still hold the run's last events: take those first.
                for position, event in log.read(run_id, position, timeout=0):
                    yield from emit(order, [event])
                yield from emit(order, ending)
                break
        if order.terminal is None and now - last_frame >= ping_seconds:
            last_frame = now
            yield PING
    yield from emit(order, [DONE])
