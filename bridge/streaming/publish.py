"""What an engine tells a run's stream, and what the registry tells it when the engine cannot.

`RunPublisher` is how whoever executes a run (the in-process executor, an RQ worker, a request
relaying an upstream stream) reports progress: the run's status, the reply's text as it comes,
tool calls as they come, and the end. It builds the wire objects and keeps the order rules on
the producer's side: a step and its message are announced before their first delta, with ids
chosen then, which the registry rows written at the end reuse, so what was streamed and what
polling returns are the same objects.

`settled_events` is the other source: the registry's word on a run whose log went quiet. It ends
whatever the stream has open the way the run ended.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ..extensions import db
from ..models import Message, Run, RunStep, now
from ..registry import new_id
from ..schemas import (MessageObject, RunStepObject, file_search_details,
                       message_creation_details, message_object, run_object, run_step_object,
                       text_block, without_search_contents)
from . import events as ev
from .log import RunLog
from .order import StreamOrder

# How an unfinished message ends when its run does (OpenAI's incomplete reasons).
_INCOMPLETE_REASONS = {"failed": "run_failed", "cancelled": "run_cancelled",
                       "expired": "run_expired", "incomplete": "max_tokens"}


def run_payload(run: Run) -> dict[str, Any]:
    return run_object(run, run.thread.id).model_dump(mode="json")


def step_payload(step: RunStep, thread_id: str, run_id: str) -> dict[str, Any]:
    return run_step_object(step, thread_id, run_id).model_dump(mode="json")


def message_payload(message: Message, thread_id: str) -> dict[str, Any]:
    return message_object(message, thread_id).model_dump(mode="json")


class RunPublisher:
    """One execution step of a streamed run, reported to its log in order."""

    def __init__(self, log: RunLog, run: Run):
        self.log = log
        self.run_id, self.thread_id = run.id, run.thread.id
        self.assistant_id = run.assistant_id
        self.message_id: str | None = None  # the reply being written, once announced
        self.message_step_id: str | None = None
        self.tool_step_id: str | None = None
        # Per round of file searches: (message_id, message_step_id) of the text written before
        # it, if any, and the id of its step.
        self.search_steps: list[tuple[str | None, str | None, str]] = []
        self._calls: set[int] = set()
        self._text: list[str] = []
        self._message_open = False
        self._closed = False

    def publish(self, event: ev.Event) -> None:
        if not self._closed:
            self.log.append(self.run_id, event)

    def close(self) -> None:
        """Publish nothing more: the run moved on without this execution (cancelled)."""
        self._closed = True

    def status(self, run: Run) -> None:
        self.publish(ev.run_status(run_payload(run)))

    # ---- the reply ---------------------------------------------------------------------------

    def text(self, piece: str) -> None:
        """More of the reply's text; the first piece announces the step and the message."""
        if not piece:
            return
        first = self.message_id is None
        if first:
            self._announce(new_id("msg"), new_id("step"))
        self._text.append(piece)
        self.publish(ev.text_delta(self.message_id, piece, first=first))

    def _announce(self, message_id: str, step_id: str) -> None:
        """The reply's step and message, created and in progress."""
        self.message_id, self.message_step_id = message_id, step_id
        created = now()
        step = RunStepObject(
            id=self.message_step_id, created_at=created, run_id=self.run_id,
            assistant_id=self.assistant_id, thread_id=self.thread_id,
            type="message_creation", status="in_progress",
            step_details=message_creation_details(self.message_id)).model_dump(mode="json")
        message = MessageObject(
            id=self.message_id, created_at=created, thread_id=self.thread_id,
            status="in_progress", role="assistant", content=[],
            assistant_id=self.assistant_id, run_id=self.run_id,
            metadata={}).model_dump(mode="json")
        for event in (ev.step_event(step, "created"), ev.step_event(step, "in_progress"),
                      ev.message_event(message, "created"),
                      ev.message_event(message, "in_progress")):
            self.publish(event)
        self._message_open = True

    def _message_object(self, status: str) -> dict[str, Any]:
        stamp = now()
        return MessageObject(
            id=self.message_id, created_at=stamp, thread_id=self.thread_id, status=status,
            completed_at=stamp if status == "completed" else None,
            incomplete_at=stamp if status == "incomplete" else None,
            role="assistant", content=[text_block("".join(self._text))],
            assistant_id=self.assistant_id, run_id=self.run_id,
            metadata={}).model_dump(mode="json")

    def _message_step_object(self, status: str) -> dict[str, Any]:
        stamp = now()
        return RunStepObject(
            id=self.message_step_id, created_at=stamp, run_id=self.run_id,
            assistant_id=self.assistant_id, thread_id=self.thread_id, type="message_creation",
            status=status, **({f"{status}_at": stamp} if status != "in_progress" else {}),
            step_details=message_creation_details(self.message_id)).model_dump(mode="json")

    def _end_message(self, message_status: str, step_status: str) -> None:
        """End the announced reply (and its step) before anything else opens."""
        if self._message_open:
            self._message_open = False
            self.publish(ev.message_event(self._message_object(message_status), message_status))
            self.publish(ev.step_event(self._message_step_object(step_status), step_status))

    def searched(self, round) -> None:
        """File searches the responder ran (a `SearchRound`): a tool_calls step, created and
        completed, after any text written before them, which ends as a message of its own."""
        before = (self.message_id, self.message_step_id) if self._message_open else (None, None)
        self._end_message("completed", "completed")
        self.message_id = self.message_step_id = None  # text after the searches is a new message
        self._text = []
        step_id = new_id("step")
        self.search_steps.append((*before, step_id))
        created = now()
        # What a stream carries is what polling shows without `include[]`.
        results = without_search_contents(file_search_details(round.calls, round.ranking_options))
        for status, details in (("in_progress", {"type": "tool_calls", "tool_calls": []}),
                                ("completed", results)):
            step = RunStepObject(
                id=step_id, created_at=created, run_id=self.run_id,
                assistant_id=self.assistant_id, thread_id=self.thread_id, type="tool_calls",
                status=status, completed_at=now() if status == "completed" else None,
                step_details=details).model_dump(mode="json")
            self.publish(ev.step_event(step, "created" if status == "in_progress" else status))

    def tool_call(self, index: int, *, call_id: str | None = None, name: str | None = None,
                  arguments: str = "") -> None:
        """More of a function call; its id and name come with its first piece."""
        if self.tool_step_id is None:
            self._end_message("completed", "completed")  # text before the calls
            self.tool_step_id = new_id("step")
            step = RunStepObject(
                id=self.tool_step_id, created_at=now(), run_id=self.run_id,
                assistant_id=self.assistant_id, thread_id=self.thread_id, type="tool_calls",
                status="in_progress",
                step_details={"type": "tool_calls", "tool_calls": []}).model_dump(mode="json")
            self.publish(ev.step_event(step, "created"))
            self.publish(ev.step_event(step, "in_progress"))
        first = index not in self._calls
        self._calls.add(index)
        self.publish(ev.tool_call_delta(self.tool_step_id, index,
                                        call_id=call_id if first else None,
                                        name=name if first else None, arguments=arguments))

    # ---- the end -------------------------------------------------------------------------------

    def finished(self, run: Run, message: Message | None = None,
                 steps: list[RunStep] = ()) -> None:
        """The run's execution step ended (committed): the reply and its steps as the registry
        has them, then the run's status. A reply announced but not written ends unfinished."""
        if self._message_open and message is not None and message.id == self.message_id:
            self._message_open = False
            self.publish(ev.message_event(message_payload(message, self.thread_id),
                                          message.status))
            for step in steps:
                if step.id == self.message_step_id:
                    self.publish(ev.step_event(step_payload(step, self.thread_id, self.run_id),
                                               step.status))
        elif message is not None and self.message_id is None:
            # Written without a word streamed (an empty reply): announced now, then ended.
            step_id = next((s.id for s in steps if s.type == "message_creation"), new_id("step"))
            self._announce(message.id, step_id)
            self.finished(run, message, steps)
            return
        ending = run.status if run.status in ev.STEP_END_STATES else "failed"
        self._end_message("incomplete", ending)
        self.status(run)


def settled_events(run_id: str, order: StreamOrder) -> list[ev.Event] | None:
    """The events that end a stream whose run has ended in the registry; None while active.

    Opens and closes its own session, so a waiting stream holds no connection.
    """
    try:
        run = db.session.scalar(select(Run).where(Run.id == run_id))
        if run is None or run.is_active:
            return None if run is not None else [ev.error_event("The run no longer exists.",
                                                                code="not_found")]
        thread_id = run.thread.id
        closing: list[ev.Event] = []
        if order.message is not None:
            message = db.session.scalar(select(Message).where(Message.id == order.message))
            if message is not None:
                closing.append(ev.message_event(message_payload(message, thread_id),
                                                message.status))
            else:
                closing.append(ev.message_event(MessageObject(
                    id=order.message, created_at=run.created_at, thread_id=thread_id,
                    status="incomplete", incomplete_at=now(), role="assistant", content=[],
                    incomplete_details={"reason": _INCOMPLETE_REASONS.get(run.status,
                                                                          "run_failed")},
                    assistant_id=run.assistant_id, run_id=run.id,
                    metadata={}).model_dump(mode="json"), "incomplete"))
        if order.step is not None:
            step = db.session.scalar(select(RunStep).where(RunStep.id == order.step))
            if step is not None and step.status != "in_progress":
                closing.append(ev.step_event(step_payload(step, thread_id, run.id), step.status))
            elif run.status != "requires_action":
                closing.append(_ended_step(order.step, run, thread_id, order.last_message))
        closing += _untold_steps(run, thread_id, order)
        closing.append(ev.run_status(run_payload(run)))
        return closing
    finally:
        db.session.remove()


def _untold_steps(run: Run, thread_id: str, order: StreamOrder) -> list[ev.Event]:
    """What the run did that the stream never told (its source went quiet before), step by
    step from the registry: a reply whole, a round of tool calls each in one delta."""
    told = order.ended | {order.step, order.message}
    steps = db.session.scalars(select(RunStep).where(
        RunStep.run_pk == run.pk, RunStep.pk > order.first_step_pk).order_by(RunStep.pk))
    events: list[ev.Event] = []
    for step in steps:
        if step.id in told:
            continue
        payload = step_payload(step, thread_id, run.id)
        events.append(ev.step_event({**payload, "status": "in_progress"}, "created"))
        if step.type == "message_creation":
            message = db.session.scalar(select(Message).where(
                Message.id == step.step_details["message_creation"]["message_id"]))
            if message is not None:
                shown = message_payload(message, thread_id)
                events.append(ev.message_event({**shown, "status": "in_progress",
                                                "content": []}, "created"))
                text = "".join(part["text"]["value"] for part in message.content
                               if part.get("type") == "text")
                if text:
                    events.append(ev.text_delta(message.id, text, first=True))
                events.append(ev.message_event(shown, message.status))
        else:
            for index, call in enumerate(step.step_details.get("tool_calls") or ()):
                function = call.get("function") or {}
                events.append(ev.tool_call_delta(step.id, index, call_id=call.get("id"),
                                                 name=function.get("name"),
                                                 arguments=function.get("arguments") or ""))
        if step.status != "in_progress":
            events.append(ev.step_event(payload, step.status))
    return events


def _ended_step(step_id: str, run: Run, thread_id: str, message_id: str | None) -> ev.Event:
    """A reply's step the registry never recorded (its execution died), ended as its run."""
    status = run.status if run.status in ev.STEP_END_STATES else "failed"
    stamp = now()
    step = RunStepObject(id=step_id, created_at=run.created_at, run_id=run.id,
                         assistant_id=run.assistant_id, thread_id=thread_id,
                         type="message_creation", status=status,
                         **{f"{status}_at": stamp},
                         step_details=message_creation_details(message_id or "")
                         ).model_dump(mode="json")
    return ev.step_event(step, status)
