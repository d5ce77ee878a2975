"""The order a stream's events must come in: one place for every engine and every source.

The rules are what the official SDKs need (openai-python's `lib/streaming/_assistants.py`, and
the stricter Node SDK 7.x):

- a thread stream opens with `thread.created`, a run stream with `thread.run.created`;
- a message is created before its deltas, and ends (`completed`/`incomplete`) once;
- a run step is created before its deltas, and ends (`completed`/`failed`/...) once;
- at most one message and one step are open at a time;
- exactly one terminal run event (`completed`, `failed`, `cancelled`, `expired`,
  `incomplete`, `requires_action`), after every message and step of the run has ended, but for
  the `tool_calls` step a `requires_action` leaves open (it ends once the outputs arrive, in the
  stream that submits them: `StreamOrder.resuming(step_id)`);
- `done` last, after the terminal event or an `error`.

`StreamOrder.check` raises `OutOfOrder` for an event that breaks a rule; the stream that serves
events asks `admits` first and leaves out what would break one (a duplicate after a resume, a
late delta).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .events import MESSAGE_END_STATES, STEP_END_STATES, TERMINAL_RUN_EVENTS, Event


class OutOfOrder(ValueError):
    """An event the stream may not carry at this point."""


@dataclass
class StreamOrder:
    """The state of one stream, checked event by event."""

    opened: bool = False
    run_created: bool = False
    errored: bool = False
    message: str | None = None  # the open message's id
    last_message: str | None = None  # the latest message opened, open or not
    step: str | None = None  # the open step's id
    ended: set[str] = field(default_factory=set)  # ids of messages and steps that ended
    # Steps of the run recorded before this stream began are not its to tell (registry pks).
    first_step_pk: int = 0
    terminal: str | None = None
    done: bool = False

    @classmethod
    def resuming(cls, step_id: str | None, step_pk: int = 0) -> "StreamOrder":
        """A stream that continues a run already announced: tool outputs submitted to it, with
        its `tool_calls` step (registry pk `step_pk`) still open."""
        return cls(opened=True, run_created=True, step=step_id, first_step_pk=step_pk)

    def admits(self, event: Event) -> bool:
        try:
            self._rule(event)
        except OutOfOrder:
            return False
        return True

    def check(self, event: Event) -> None:
        """Take `event` into the state, or raise OutOfOrder."""
        self._rule(event)
        self._take(event)

    def _rule(self, event: Event) -> None:
        name, data = event.name, event.data
        if self.done:
            raise OutOfOrder(f"{name} after done")
        if name == "done":
            if self.terminal is None and not self.errored:
                raise OutOfOrder("done before a terminal run event or an error")
            return
        if name == "error":
            return
        if not self.opened:
            if name not in ("thread.created", "thread.run.created"):
                raise OutOfOrder(f"the stream opens with {name}")
            return
        if self.terminal is not None:
            raise OutOfOrder(f"{name} after {self.terminal}")
        if name in ("thread.created", "thread.run.created"):
            if name == "thread.created" or self.run_created:
                raise OutOfOrder(f"a second {name}")
            return
        object_id = data.get("id") if isinstance(data, dict) else None
        if name == "thread.message.created":
            self._opening(object_id, self.message, "message")
        elif name in ("thread.message.in_progress", "thread.message.delta"):
            if self.message != object_id:
                raise OutOfOrder(f"{name} of {object_id}, which is not the open message")
        elif name.startswith("thread.message."):
            if self.message != object_id:
                raise OutOfOrder(f"{name} of {object_id}, which is not the open message")
        elif name == "thread.run.step.created":
            self._opening(object_id, self.step, "step")
        elif name.startswith("thread.run.step."):
            if self.step != object_id:
                raise OutOfOrder(f"{name} of {object_id}, which is not the open step")
        elif name in TERMINAL_RUN_EVENTS:
            step_may_stay = name == "thread.run.requires_action"
            if self.message is not None or (self.step is not None and not step_may_stay):
                raise OutOfOrder(f"{name} while message {self.message} / step {self.step} is open")
        elif not name.startswith("thread.run."):
            raise OutOfOrder(f"unknown event {name}")

    def _opening(self, object_id: str | None, current: str | None, kind: str) -> None:
        if not object_id:
            raise OutOfOrder(f"a {kind} without an id")
        if object_id in self.ended:
            raise OutOfOrder(f"{kind} {object_id} again after it ended")
        if current is not None:
            raise OutOfOrder(f"{kind} {object_id} while {kind} {current} is open")

    def _take(self, event: Event) -> None:
        name, data = event.name, event.data
        object_id = data.get("id") if isinstance(data, dict) else None
        if name == "done":
            self.done = True
        elif name == "error":
            self.errored = True
        elif name in ("thread.created", "thread.run.created"):
            self.opened = True
            self.run_created = self.run_created or name == "thread.run.created"
        elif name == "thread.message.created":
            self.message = self.last_message = object_id
        elif name.startswith("thread.message.") and name.rsplit(".", 1)[1] in MESSAGE_END_STATES:
            self.message = None
            self.ended.add(object_id)
        elif name == "thread.run.step.created":
            self.step = object_id
        elif name.startswith("thread.run.step.") and name.rsplit(".", 1)[1] in STEP_END_STATES:
            self.step = None
            self.ended.add(object_id)
        elif name in TERMINAL_RUN_EVENTS:
            self.terminal = name
