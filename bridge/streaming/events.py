"""The Assistants v2 stream events, and their Server-Sent Events frames.

An event is a name and a JSON payload: the same objects polling returns (runs, run steps,
messages, threads, with our ids), or a delta of a message's text or of a step's tool calls.
Deltas follow what the official SDKs accumulate: strings are appended, so a tool call's `id`
and `name` come in its first delta only; `index` and `type` are kept, never appended.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

RUN_STATUSES = ("queued", "in_progress", "requires_action", "cancelling", "cancelled", "failed",
                "completed", "incomplete", "expired")
# A run event after which the stream has nothing more to say about the run.
TERMINAL_RUN_EVENTS = frozenset({"thread.run.completed", "thread.run.failed",
                                 "thread.run.cancelled", "thread.run.expired",
                                 "thread.run.incomplete", "thread.run.requires_action"})
STEP_END_STATES = ("completed", "failed", "cancelled", "expired")
MESSAGE_END_STATES = ("completed", "incomplete")
# Every event name a stream may carry, in the order of the Assistants v2 reference.
EVENT_NAMES = ("thread.created", "thread.run.created",
               *(f"thread.run.{status}" for status in RUN_STATUSES),
               "thread.run.step.created", "thread.run.step.in_progress", "thread.run.step.delta",
               *(f"thread.run.step.{state}" for state in STEP_END_STATES),
               "thread.message.created", "thread.message.in_progress", "thread.message.delta",
               *(f"thread.message.{state}" for state in MESSAGE_END_STATES),
               "error", "done")


@dataclass(frozen=True)
class Event:
    """One stream event: `event: name` and `data: payload`."""

    name: str
    data: Any

    def frame(self) -> bytes:
        data = self.data if isinstance(self.data, str) else json.dumps(
            self.data, separators=(",", ":"), ensure_ascii=False)
        return f"event: {self.name}\ndata: {data}\n\n".encode()

    def as_json(self) -> str:
        """For carrying the event between processes."""
        return json.dumps({"event": self.name, "data": self.data}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Event":
        raw = json.loads(text)
        return cls(raw["event"], raw["data"])


DONE = Event("done", "[DONE]")
# A comment line: proxies see traffic on an idle stream, clients ignore it.
PING = b": ping\n\n"


def thread_created(thread: dict[str, Any]) -> Event:
    return Event("thread.created", thread)


def run_created(run: dict[str, Any]) -> Event:
    return Event("thread.run.created", run)


def run_status(run: dict[str, Any]) -> Event:
    """`thread.run.<status>` with the run as it is now."""
    return Event(f"thread.run.{run['status']}", run)


def step_event(step: dict[str, Any], state: str) -> Event:
    """`thread.run.step.created`, `.in_progress`, `.completed`, `.failed`, ..."""
    return Event(f"thread.run.step.{state}", step)


def message_event(message: dict[str, Any], state: str) -> Event:
    """`thread.message.created`, `.in_progress`, `.completed` or `.incomplete`."""
    return Event(f"thread.message.{state}", message)


def text_delta(message_id: str, text: str, *, index: int = 0, first: bool = False) -> Event:
    """More text of a message's content part `index`."""
    part: dict[str, Any] = {"index": index, "type": "text", "text": {"value": text}}
    if first:
        part["text"]["annotations"] = []
    return Event("thread.message.delta", {"id": message_id, "object": "thread.message.delta",
                                          "delta": {"content": [part]}})


def tool_call_delta(step_id: str, index: int, *, call_id: str | None = None,
                    name: str | None = None, arguments: str = "") -> Event:
    """More of a step's function call `index`; its id and name only in its first delta."""
    function: dict[str, Any] = {"arguments": arguments}
    call: dict[str, Any] = {"index": index, "type": "function", "function": function}
    if call_id is not None:
        call["id"] = call_id
        function.update(name=name, output=None)
    return Event("thread.run.step.delta", {
        "id": step_id, "object": "thread.run.step.delta",
        "delta": {"step_details": {"type": "tool_calls", "tool_calls": [call]}}})


def error_event(message: str, *, code: str = "server_error") -> Event:
    return Event("error", {"message": message, "type": "server_error", "param": None,
                           "code": code})
