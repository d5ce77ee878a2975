"""Engines whose threads live upstream: the registry mirrors them, runs advance when polled.

The `responses` and `assistants` engines differ only in the upstream calls they make; what is
written to the registry, in which order, and what is undone when a step fails, is decided here:

- A thread's row is written (status "creating") before its upstream object, and made visible
  after: the registry is the only list of a user's threads and must never miss one.
- Objects are created upstream with retries off (creating twice costs twice); when a later step
  of the same request fails, what the earlier steps created is deleted again.
- A run is settled from an upstream snapshot by one conditional update, so of several pollers
  only one writes the reply and the steps, and a run seen terminal is never asked about again.
- Polls within the poll interval are served from the registry: one upstream call per interval
  however many clients poll.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from flask import Flask
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm.exc import ObjectDeletedError

from ..errors import InvalidRequest, NotFound
from ..extensions import db
from ..models import Message, Run, RunStep, Thread, now
from ..registry import new_id, release_connection
from ..schemas import (RESERVED_METADATA_KEY, MessageCreate, MessageModify, RunCreate, RunModify,
                       ThreadCreate, ThreadModify, ToolOutput, ToolOutputsSubmit,
                       message_creation_details, tool_calls_details)
from ..streaming.events import DONE
from ..streaming.follow import emit, follow
from ..streaming.log import RelayBuffer
from ..streaming.publish import RunPublisher, settled_events
from .base import Engine, EngineError, UpstreamNotFound, UpstreamRejected
from .common import (add_usage, check_tool_outputs, deliver_tool_outputs, end_open_steps,
                     insert_run, message_row, message_text, new_run, pending_tool_calls,
                     refuse_while_active, reply_row, require_home, step_error)
from .file_search import run_code_files, run_vector_stores
from .mirror import UpstreamCopies, mapped_annotations, mapped_search_calls, our_file_ids
from .upstream import OpenAIUpstream

log = logging.getLogger(__name__)

# How long polls and the sweeper leave a run to the request relaying its stream, renewed while
# events come: should that request die, polls take the run over after this long.
STREAM_LEASE_SECONDS = 30.0
# Statuses in which the upstream is still working on a run, so a poll asks it.
POLLED_STATUSES = ("queued", "in_progress", "cancelling")


@dataclass(frozen=True)
class UpstreamReply:
    """An assistant message the upstream produced for a run."""

    upstream_id: str
    text: str
    truncated: bool = False
    # In the Assistants shape, naming the provider's file ids (mapped to ours when settled).
    annotations: tuple[dict[str, Any], ...] = ()


def _cited_files(snapshot: "RunSnapshot") -> set[str]:
    """The provider's file ids a snapshot's replies cite and its searches found."""
    found = {(annotation.get("file_citation") or {}).get("file_id")
             for reply in snapshot.replies for annotation in reply.annotations}
    found |= {result.get("file_id") for step in snapshot.steps for call in step.tool_calls
              if call.get("type") == "file_search"
              for result in (call.get("file_search") or {}).get("results") or ()}
    return {file_id for file_id in found if file_id}


@dataclass(frozen=True)
class UpstreamStep:
    """A step of a run as the upstream reports it; `message` is the upstream id of the message a
    `message_creation` step wrote, `tool_calls` the calls of a `tool_calls` step."""

    upstream_id: str
    type: str
    status: str
    created_at: int | None = None
    message: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    cancelled_at: int | None = None
    expired_at: int | None = None
    last_error: dict[str, str] | None = None


@dataclass(frozen=True)
class UpstreamMessage:
    """A message as the upstream holds it: enough to tell which registry message it copies."""

    upstream_id: str
    role: str
    text: str


@dataclass
class RunSnapshot:
    """What the upstream says about a run, already in the Assistants vocabulary."""

    upstream_id: str
    status: str
    completed_at: int | None = None
    failed_at: int | None = None
    cancelled_at: int | None = None
    last_error: dict[str, str] | None = None
    incomplete_details: dict[str, str] | None = None
    # Tool calls in the wire shape, when the run waits for their outputs.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] | None = None
    # True when `usage` counts the whole run, False when only this upstream step.
    usage_is_total: bool = True
    replies: list[UpstreamReply] = field(default_factory=list)
    # In the order the run took them; each with the usage of what it stands for.
    steps: list[UpstreamStep] = field(default_factory=list)
    # True when a request relays this run's upstream stream (and so settles it).
    followed: bool = False


@dataclass
class UpstreamStream:
    """An upstream run (or response) started as a stream: its first state, and the events to
    come, in the upstream's own vocabulary."""

    snapshot: RunSnapshot
    events: Iterator[Any]
    close: Callable[[], None]


@dataclass
class Announced:
    """Our ids a stream already gave what the upstream made: by upstream id, for the registry
    rows that settle it to reuse."""

    messages: dict[str, str] = field(default_factory=dict)
    steps: dict[str, str] = field(default_factory=dict)


class Relay(abc.ABC):
    """One upstream stream turned into the run's progress, event by event."""

    @abc.abstractmethod
    def feed(self, event: Any) -> bool:
        """Take in one upstream event (publishing what it means); True once the run's upstream
        step has ended and the registry is settled."""


@dataclass(frozen=True)
class RunSettings:
    """A run's model settings, read out of the registry before the upstream is called."""

    model: str
    instructions: str
    tools: list[dict[str, Any]]
    metadata: dict[str, str]
    temperature: float | None
    top_p: float | None
    max_prompt_tokens: int | None
    max_completion_tokens: int | None
    response_format: Any
    tool_choice: Any
    parallel_tool_calls: bool
    truncation_strategy: dict[str, Any] | None
    # The provider's copies of the vector stores the run searches, and of the files its
    # code_interpreter may read.
    search_stores: tuple[str, ...] = ()
    code_files: tuple[str, ...] = ()

    @classmethod
    def of(cls, run: Run) -> "RunSettings":
        return cls(model=run.model, instructions=run.instructions, tools=list(run.tools or []),
                   metadata=dict(run.meta or {}), temperature=run.temperature, top_p=run.top_p,
                   max_prompt_tokens=run.max_prompt_tokens,
                   max_completion_tokens=run.max_completion_tokens,
                   response_format=run.response_format, tool_choice=run.tool_choice,
                   parallel_tool_calls=run.parallel_tool_calls,
                   truncation_strategy=run.truncation_strategy)


def best_effort(what: str, operation: Callable[[], Any]) -> None:
    """Undo or tidy something upstream; a failure is logged, never raised over the real error."""
    try:
        operation()
    except EngineError as exc:
        log.warning("could not %s: %s", what, exc.log_detail or exc.public_message)


def _released(events: Iterator[Any]) -> Iterator[Any]:
    """An upstream's events, no registry connection held while the next one is awaited."""
    while True:
        release_connection()
        try:
            event = next(events)
        except StopIteration:
            return
        yield event


class UpstreamEngine(Engine):
    """Threads, messages and runs kept upstream and mirrored in the registry."""

    home: str

    def __init__(self, app: Flask, upstream: OpenAIUpstream, *, poll_interval: float,
                 run_timeout: int = 600):
        super().__init__()
        self.app = app
        self.upstream = upstream
        self.poll_interval = poll_interval
        self.run_timeout = run_timeout
        self.copies = UpstreamCopies(upstream)
        # Upstream streams started by a request, for the relay that follows in it.
        self._relays: dict[str, UpstreamStream] = {}
        self._relays_lock = threading.Lock()

    # ---- the upstream calls an engine makes ---------------------------------------------------

    # `container` is the upstream id of a thread's conversation (or thread); `upstream_run` the
    # upstream id of a run's current response (or run).

    @abc.abstractmethod
    def _create_container(self, metadata: dict[str, str],
                          tool_resources: dict[str, Any] | None) -> str:
        """Create an empty upstream conversation or thread; its id."""

    @abc.abstractmethod
    def _update_container(self, container: str, metadata: dict[str, str],
                          tool_resources: dict[str, Any] | None) -> None:
        """Replace the upstream object's metadata (and tool resources where it has them)."""

    @abc.abstractmethod
    def _delete_container(self, container: str) -> None:
        """Delete the upstream object with everything in it."""

    @abc.abstractmethod
    def _add_messages(self, container: str, messages: list[MessageCreate]) -> list[str]:
        """Append messages upstream, in order; their upstream ids."""

    @abc.abstractmethod
    def _delete_message(self, container: str, upstream_id: str) -> None:
        """Delete one message upstream."""

    @abc.abstractmethod
    def _list_messages(self, container: str) -> list[UpstreamMessage]:
        """Every message of the upstream object, oldest first, across all pages."""

    def _update_message(self, container: str, upstream_id: str, metadata: dict[str, str]) -> None:
        """Replace a message's metadata upstream, where the upstream keeps any."""

    def _upstream_assistant(self, assistant) -> str | None:
        """The upstream id of the assistant a run names, where the upstream keeps assistants."""
        return None

    @abc.abstractmethod
    def _start(self, settings: RunSettings, container: str,
               upstream_assistant: str | None) -> RunSnapshot:
        """Start the run upstream with the settings recorded on it."""

    @abc.abstractmethod
    def _fetch(self, container: str, upstream_run: str) -> RunSnapshot:
        """Ask the upstream where the run is."""

    @abc.abstractmethod
    def _cancel(self, container: str, upstream_run: str) -> RunSnapshot:
        """Cancel the run upstream."""

    @abc.abstractmethod
    def _continue(self, settings: RunSettings, container: str, upstream_run: str,
                  outputs: list[ToolOutput]) -> RunSnapshot:
        """Continue a run that waited for tool outputs."""

    @abc.abstractmethod
    def _abandon_tool_calls(self, container: str, upstream_run: str,
                            calls: list[dict[str, Any]]) -> None:
        """Tidy upstream after a run waiting for tool outputs was cancelled or expired."""

    def _update_run(self, container: str, upstream_run: str, metadata: dict[str, str]) -> None:
        """Replace a run's metadata upstream, where the upstream keeps any."""

    def _call(self, hook: Callable[..., Any], *args: Any) -> Any:
        """Call the upstream, after ending the registry transaction: a slow provider must not
        hold a pooled database connection. The arguments were read before the commit."""
        db.session.commit()
        return hook(*args)

    # ---- threads ------------------------------------------------------------------------------

    def create_thread(self, user_id: str, body: ThreadCreate) -> Thread:
        metadata = {**(body.metadata or {}), RESERVED_METADATA_KEY: user_id}
        thread = Thread(id=new_id("thread"), user_id=user_id, home=self.home, status="creating",
                        created_at=now(), meta=metadata, tool_resources=body.tool_resources)
        db.session.add(thread)
        db.session.flush()
        pk, messages, container = thread.pk, body.messages or [], None
        db.session.commit()
        try:
            container = self._call(self._create_container, metadata, body.tool_resources)
            upstream_ids: list[str] = []
            if messages:
                # Linked first: adding messages can fail half-way, and the row must still
                # name the container to delete.
                self._set_thread(pk, upstream_id=container)
                upstream_ids = self._call(self._add_messages, container, messages)
        except BaseException:
            db.session.rollback()
            if container:
                best_effort(f"delete the upstream object of thread pk {pk}",
                            lambda: self._call(self._delete_container, container))
            db.session.execute(delete(Thread).where(Thread.pk == pk))
            db.session.commit()
            raise
        # Visible, linked and with its messages in one commit.
        db.session.execute(update(Thread).where(Thread.pk == pk)
                           .values(upstream_id=container, status="active"))
        db.session.add_all(message_row(pk, message, upstream_id)
                           for message, upstream_id in zip(messages, upstream_ids))
        db.session.commit()
        return thread

    def _set_thread(self, pk: int, **values: Any) -> None:
        db.session.execute(update(Thread).where(Thread.pk == pk).values(**values))
        db.session.commit()

    def modify_thread(self, thread: Thread, body: ThreadModify) -> Thread:
        require_home(thread, self.home)
        metadata = thread.meta if body.metadata is None else {
            **body.metadata, RESERVED_METADATA_KEY: thread.user_id}
        tool_resources = thread.tool_resources if body.tool_resources is None else body.tool_resources
        self._call(self._update_container, thread.upstream_id, metadata, tool_resources)
        thread.meta, thread.tool_resources = metadata, tool_resources
        db.session.commit()
        return thread

    def delete_thread(self, thread: Thread) -> None:
        require_home(thread, self.home)
        for run in thread.runs:
            if run.status in POLLED_STATUSES and run.upstream_id:
                best_effort(f"cancel {run.id}",
                            lambda run=run: self._call(self._cancel, thread.upstream_id,
                                                       run.upstream_id))
        container = thread.upstream_id
        try:
            self._call(self._delete_container, container)
        except UpstreamNotFound:
            pass  # already gone upstream: finish the job here
        except EngineError as exc:
            # Gone for the client now; the sweeper deletes it upstream later, then here.
            log.warning("thread %s: upstream delete failed, retried later: %s", thread.id,
                        exc.log_detail or exc.public_message)
            thread.status = "deleting"
            db.session.commit()
            return
        db.session.delete(thread)
        db.session.commit()

    def _finish_deletes(self, batch: int = 20) -> None:
        """Retry the upstream deletes of threads a client deleted while the upstream failed."""
        pending = list(db.session.execute(select(Thread.pk, Thread.upstream_id).where(
            Thread.home == self.home, Thread.status == "deleting").limit(batch)))
        for pk, container in pending:
            try:
                if container:
                    self._call(self._delete_container, container)
            except UpstreamNotFound:
                pass
            except EngineError as exc:
                log.info("thread %s: upstream delete failed again: %s", pk, exc.log_detail)
                continue
            db.session.execute(delete(Thread).where(Thread.pk == pk, Thread.status == "deleting"))
            db.session.commit()

    # ---- messages -----------------------------------------------------------------------------

    def create_message(self, thread: Thread, body: MessageCreate) -> Message:
        require_home(thread, self.home)
        refuse_while_active(thread)
        (upstream_id,) = self._call(self._add_messages, thread.upstream_id, [body])
        message = message_row(thread, body, upstream_id)
        db.session.add(message)
        db.session.commit()
        return message

    def modify_message(self, message: Message, body: MessageModify) -> Message:
        require_home(message.thread, self.home)
        if body.metadata is not None:
            if message.upstream_id:
                self._call(self._update_message, message.thread.upstream_id, message.upstream_id,
                                     body.metadata)
            message.meta = body.metadata
        db.session.commit()
        return message

    def delete_message(self, message: Message) -> None:
        require_home(message.thread, self.home)
        if message.upstream_id:
            try:
                self._call(self._delete_message, message.thread.upstream_id, message.upstream_id)
            except UpstreamNotFound:
                pass
        db.session.delete(message)
        db.session.commit()

    # ---- runs ---------------------------------------------------------------------------------

    def create_run(self, thread: Thread, assistant, body: RunCreate) -> Run:
        require_home(thread, self.home)
        # Our one-active-run rule holds before the upstream's conversation lock is reached.
        run = insert_run(new_run(thread, assistant, body, lifetime=self.run_timeout), thread)
        run_pk, thread_id, container = run.pk, thread.id, thread.upstream_id
        added: list[tuple[int, str]] = []  # (pk, upstream id) of the additional messages
        try:
            extra = body.additional_messages or []
            if extra:
                upstream_ids = self._call(self._add_messages, container, extra)
                rows = [message_row(thread, message, upstream_id)
                        for message, upstream_id in zip(extra, upstream_ids)]
                db.session.add_all(rows)
                db.session.flush()
                added = [(row.pk, row.upstream_id) for row in rows]
                db.session.commit()
            started = self._start_run(run, container, assistant, stream=bool(body.stream))
        except BaseException:
            # The client sees an error: leave nothing of this request behind, here or upstream.
            db.session.rollback()
            for _, upstream_id in added:
                best_effort(f"delete message {upstream_id} upstream",
                            lambda upstream_id=upstream_id: self._call(
                                self._delete_message, container, upstream_id))
            # By key: the thread (and so these rows) may have been deleted meanwhile.
            db.session.execute(delete(Message).where(Message.pk.in_([pk for pk, _ in added])))
            db.session.execute(delete(Run).where(Run.pk == run_pk))
            db.session.commit()
            raise
        self._record_start(run, self._keep_stream(run, started))
        if db.session.get(Run, run_pk) is None:
            self._drop_stream(run.id)
            raise NotFound(f"No thread found with id '{thread_id}'.", param="thread_id")
        return run

    def copies_deleted(self, *, files: list[str] = (), vector_stores: list[str] = ()) -> None:
        # A user who deletes a file expects it gone from the provider too.
        for upstream_id in vector_stores:
            if upstream_id:
                best_effort(f"delete vector store {upstream_id}", lambda upstream_id=upstream_id:
                            self.upstream.call(lambda c: c.vector_stores.delete(upstream_id)))
        for upstream_id in files:
            if upstream_id:
                best_effort(f"delete file {upstream_id}", lambda upstream_id=upstream_id:
                            self.upstream.call(lambda c: c.files.delete(upstream_id)))

    def _settings(self, run: Run) -> RunSettings:
        """The run's settings, its vector stores and code_interpreter files copied to the
        provider and in step."""
        stores = tuple(self.copies.store(store) for store in run_vector_stores(run))
        return dataclasses.replace(RunSettings.of(run), search_stores=stores,
                                   code_files=tuple(self.copies.files(run_code_files(run))))

    def _start_run(self, run: Run, container: str, assistant,
                   stream: bool = False) -> RunSnapshot | UpstreamStream:
        settings, upstream_assistant = self._settings(run), self._upstream_assistant(assistant)
        start = self._start_stream if stream else self._start
        try:
            return self._call(start, settings, container, upstream_assistant)
        except UpstreamNotFound:
            # The upstream may have lost the assistant (deleted by hand): make it anew, once.
            fresh = self._replace_upstream_assistant(assistant, upstream_assistant)
            if fresh is None:
                raise
            return self._call(start, settings, container, fresh)

    def _replace_upstream_assistant(self, assistant, upstream_id: str | None) -> str | None:
        """A new upstream copy of an assistant the upstream no longer has, else None."""
        return None

    def _record_start(self, run: Run, snapshot: RunSnapshot,
                      delivered: dict[str, str] | None = None) -> None:
        """Link a run to the upstream run or response just started, and take in its state.

        `delivered` are the tool outputs that started it: the upstream has them, so the step
        that asked for them has ended, whatever happens to the run next.
        """
        # A run a request streams is left to that request for a while (see `_relayed`).
        lease = STREAM_LEASE_SECONDS if snapshot.followed else 0
        linked = db.session.execute(
            update(Run).where(Run.pk == run.pk, Run.status == "queued", Run.upstream_id.is_(None))
            .values(upstream_id=snapshot.upstream_id, polled_at=time.time() + lease)).rowcount
        if delivered is not None:
            deliver_tool_outputs(run, delivered)
        db.session.commit()
        if not linked:
            # Cancelled (or deleted with its thread) while it was being started.
            container = db.session.scalar(
                select(Thread.upstream_id).join(Run).where(Run.pk == run.pk))
            if container:
                best_effort(f"cancel {run.id}",
                            lambda: self._call(self._cancel, container, snapshot.upstream_id))
            if db.session.execute(
                    update(Run).where(Run.pk == run.pk, Run.status == "cancelling")
                    .values(status="cancelled", cancelled_at=now())).rowcount:
                end_open_steps(run.pk, "cancelled")
            db.session.commit()
            return
        if snapshot.status != "queued" or snapshot.usage is not None or snapshot.steps:
            self._settle(run, snapshot)  # it moved on already (or finished at once)

    def refresh_run(self, run: Run) -> Run:
        if run.thread.home != self.home:
            return run  # its upstream is another engine's: ours would not know it
        if run.is_active and run.expires_at is not None and now() >= run.expires_at:
            return self._expire(run)
        if run.status not in POLLED_STATUSES or run.upstream_id is None:
            return run
        stamp = time.time()
        # Claim this poll interval: of concurrent pollers only one asks the upstream.
        claimed = db.session.execute(
            update(Run).where(Run.pk == run.pk, Run.status == run.status,
                              or_(Run.polled_at.is_(None),
                                  Run.polled_at <= stamp - self.poll_interval))
            .values(polled_at=stamp)).rowcount
        db.session.commit()
        if not claimed:
            return run
        try:
            snapshot = self._call(self._fetch, run.thread.upstream_id, run.upstream_id)
        except UpstreamNotFound as exc:
            # The upstream keeps background responses for a limited time only.
            log.warning("run %s: upstream forgot %s: %s", run.id, run.upstream_id, exc.log_detail)
            return self._expire(run)
        except EngineError as exc:
            # A poll does not fail because the provider hiccupped: the registry's state is shown
            # and the next interval asks again.
            log.warning("run %s: poll failed: %s", run.id, exc.log_detail or exc.public_message)
            return run
        self._settle(run, snapshot)
        return run

    def refresh_thread(self, thread: Thread) -> None:
        if thread.home != self.home:
            return
        active = db.session.scalar(select(Run).where(
            Run.thread_pk == thread.pk, Run.status.in_(POLLED_STATUSES)))
        if active is not None:
            self.refresh_run(active)

    def cancel_run(self, run: Run) -> Run:
        require_home(run.thread, self.home)
        if run.status in ("cancelling", "cancelled"):
            return run
        if not run.is_active:
            raise InvalidRequest(f"Cannot cancel run with status '{run.status}'.", param="run_id")
        if run.status == "requires_action":
            calls = pending_tool_calls(run)
            if self._transition(run, "requires_action", status="cancelled", cancelled_at=now(),
                                required_action=None):
                self._tidy_tool_calls(run, calls)
            return run
        if run.upstream_id is None and self._transition(
                run, run.status, Run.upstream_id.is_(None), status="cancelling"):
            return run  # still being started: the starter sees this and cancels upstream
        if run.upstream_id is None:
            return self.cancel_run(run)  # linked meanwhile: cancel what it was linked to
        container = run.thread.upstream_id
        try:
            snapshot = self._call(self._cancel, container, run.upstream_id)
        except UpstreamNotFound:
            return self._expire(run)  # the upstream no longer keeps it: nothing left to stop
        except UpstreamRejected:
            snapshot = self._call(self._fetch, container, run.upstream_id)  # it finished meanwhile
        self._settle(run, snapshot)
        if run.status == "requires_action":
            return self.cancel_run(run)  # it had stopped for tool calls: cancel that wait
        return run

    def submit_tool_outputs(self, run: Run, body: ToolOutputsSubmit) -> Run:
        require_home(run.thread, self.home)
        check_tool_outputs(run, body)
        previous, waiting = run.upstream_id, run.required_action
        # Unlinked while continuing, so a cancel meanwhile waits for the new upstream id.
        if not self._transition(run, "requires_action", status="queued", required_action=None,
                                upstream_id=None):
            raise InvalidRequest(f"Runs in status '{run.status}' do not accept tool outputs.",
                                 param="run_id")
        carry_on = self._continue_stream if body.stream else self._continue
        try:
            started = self._call(carry_on, self._settings(run), run.thread.upstream_id,
                                 previous, body.tool_outputs)
        except BaseException:
            if not self._transition(run, "queued", status="requires_action",
                                    required_action=waiting, upstream_id=previous):
                # Cancelled while the outputs were on their way: finish the cancel.
                if self._transition(run, "cancelling", status="cancelled", cancelled_at=now()):
                    self._tidy_tool_calls(run, waiting["submit_tool_outputs"]["tool_calls"],
                                          upstream_run=previous)
            raise
        self._record_start(run, self._keep_stream(run, started),
                           delivered={o.tool_call_id: o.output for o in body.tool_outputs})
        return run

    def modify_run(self, run: Run, body: RunModify) -> Run:
        require_home(run.thread, self.home)
        if body.metadata is not None:
            if run.upstream_id:
                self._call(self._update_run, run.thread.upstream_id, run.upstream_id, body.metadata)
            run.meta = body.metadata
        db.session.commit()
        return run

    # ---- settling -----------------------------------------------------------------------------

    def _transition(self, run: Run, source: str, *conditions, **values) -> bool:
        """Move a run out of `source` if it is still there; whether this call moved it."""
        moved = db.session.execute(
            update(Run).where(Run.pk == run.pk, Run.status == source, *conditions)
            .values(**values)).rowcount
        if moved:
            end_open_steps(run.pk, values.get("status", source), values.get("last_error"))
        db.session.commit()
        return bool(moved)

    def _settle(self, run: Run, snapshot: RunSnapshot, announced: Announced | None = None) -> None:
        """Write an upstream snapshot to the registry, unless another poller already did. Rows
        a stream `announced` keep the ids it gave them."""
        announced = announced or Announced()
        values: dict[str, Any] = {"status": snapshot.status}
        if snapshot.status != "queued" and run.started_at is None:
            values["started_at"] = now()
        for name in ("completed_at", "failed_at", "cancelled_at", "last_error",
                     "incomplete_details"):
            if getattr(snapshot, name) is not None:
                values[name] = getattr(snapshot, name)
        if snapshot.status == "requires_action":
            values["required_action"] = {"type": "submit_tool_outputs",
                                         "submit_tool_outputs": {"tool_calls": snapshot.tool_calls}}
        if snapshot.usage is not None:
            values["usage"] = snapshot.usage if snapshot.usage_is_total else add_usage(
                run.usage, snapshot.usage)
        source = run.status
        moved = db.session.execute(
            update(Run).where(Run.pk == run.pk, Run.upstream_id == snapshot.upstream_id,
                              Run.status.in_(POLLED_STATUSES))
            .values(**values)).rowcount
        if moved and (snapshot.replies or snapshot.steps):
            # The run's new state, its replies and its steps commit together.
            mirrored = dict(db.session.execute(select(Message.upstream_id, Message.id).where(
                Message.thread_pk == run.thread_pk, Message.run_id == run.id)).all())
            ours = our_file_ids(_cited_files(snapshot))
            for reply in snapshot.replies:
                if reply.upstream_id not in mirrored:
                    row = reply_row(run, reply.text, upstream_id=reply.upstream_id,
                                    truncated=reply.truncated,
                                    message_id=announced.messages.get(reply.upstream_id),
                                    annotations=mapped_annotations(list(reply.annotations), ours))
                    db.session.add(row)
                    mirrored[reply.upstream_id] = row.id
            self._record_steps(run, snapshot.steps, mirrored, announced.steps, ours)
        if moved:
            end_open_steps(run.pk, snapshot.status, snapshot.last_error)
        db.session.commit()
        if moved and source != snapshot.status:
            log.info("run %s: %s -> %s", run.id, source, snapshot.status)

    def _record_steps(self, run: Run, steps: list[UpstreamStep], messages: dict[str, str],
                      announced: dict[str, str] | None = None,
                      files: dict[str, str] | None = None) -> None:
        """Mirror the steps of a snapshot behind our ids: new ones are added, known ones (by
        upstream id) brought up to date. `messages` and `files` map upstream ids to ours."""
        if not steps:
            return
        known = {row.upstream_id: row for row in db.session.scalars(select(RunStep).where(
            RunStep.run_pk == run.pk, RunStep.upstream_id.is_not(None)))}
        for step in steps:
            if step.type == "message_creation":
                if step.message not in messages:
                    continue  # a message we do not mirror: its upstream id must not show
                details = message_creation_details(messages[step.message])
            else:
                details = tool_calls_details(mapped_search_calls(step.tool_calls, files or {}))
            row = known.get(step.upstream_id)
            if row is None:
                row = RunStep(id=(announced or {}).get(step.upstream_id) or new_id("step"),
                              upstream_id=step.upstream_id, run_pk=run.pk,
                              thread_pk=run.thread_pk, assistant_id=run.assistant_id,
                              type=step.type, created_at=step.created_at or now())
                db.session.add(row)
                known[step.upstream_id] = row
            elif row.status != "in_progress" and step.status == "in_progress":
                continue  # ended here (its outputs were delivered): never reopened
            row.status, row.step_details, row.usage = step.status, details, step.usage
            row.completed_at, row.failed_at = step.completed_at, step.failed_at
            row.cancelled_at, row.expired_at = step.cancelled_at, step.expired_at
            row.last_error = step_error(step.last_error)

    def _expire(self, run: Run) -> Run:
        """A run past its `expires_at` ends as `expired`; the upstream is told to stop."""
        calls = pending_tool_calls(run)
        source, container, upstream_run = run.status, run.thread.upstream_id, run.upstream_id
        if upstream_run and source in POLLED_STATUSES:
            best_effort(f"cancel expired {run.id}",
                        lambda: self._call(self._cancel, container, upstream_run))
        if self._transition(run, source, status="expired", required_action=None, last_error={
                "code": "server_error",
                "message": "The run expired before the model provider finished it."}):
            # Also when no calls were seen: the upstream may have asked for some meanwhile.
            self._tidy_tool_calls(run, calls, container, upstream_run)
        return run

    def _tidy_tool_calls(self, run: Run, calls: list[dict[str, Any]],
                         container: str | None = None, upstream_run: str | None = None) -> None:
        """Let the upstream know nobody will answer a run's tool calls (known or not)."""
        container = container or run.thread.upstream_id
        upstream_run = upstream_run or run.upstream_id
        if container:
            best_effort(f"tidy the tool calls of {run.id}",
                        lambda: self._call(self._abandon_tool_calls, container, upstream_run, calls))

    # ---- streams ------------------------------------------------------------------------------

    # A streamed run is started (or continued) upstream as a stream too, and the request that
    # asked for it relays that stream: each upstream event becomes ours through the engine's
    # relay (`_relay`), and the upstream's end settles the registry as a poll would, keeping
    # the ids the stream announced. A client that leaves stops the relay, not the run: polls
    # and the sweeper settle it. A stream whose upstream connection breaks is finished by polls.

    def _start_stream(self, settings: RunSettings, container: str,
                      upstream_assistant: str | None) -> UpstreamStream:
        """Start the run upstream as a stream."""
        raise NotImplementedError

    def _continue_stream(self, settings: RunSettings, container: str, upstream_run: str,
                         outputs: list[ToolOutput]) -> UpstreamStream:
        """Continue a run that waited for tool outputs, as a stream."""
        raise NotImplementedError

    def _relay(self, run: Run, publisher: RunPublisher) -> "Relay":
        """What turns this upstream's stream events into the run's progress."""
        raise NotImplementedError

    def _keep_stream(self, run: Run, started: RunSnapshot | UpstreamStream) -> RunSnapshot:
        """Keep a started upstream stream for the relay that follows in this request."""
        if not isinstance(started, UpstreamStream):
            return started
        with self._relays_lock:
            self._relays[run.id] = started
        started.snapshot.followed = True
        return started.snapshot

    def _lease(self, run: Run, seconds: float) -> None:
        """Polls and the sweeper leave the run to this request for `seconds` (0: from now on,
        again): its stream settles it, with the ids it announced."""
        self._transition(run, run.status, polled_at=time.time() + seconds - self.poll_interval)

    def _drop_stream(self, run_id: str) -> None:
        with self._relays_lock:
            started = self._relays.pop(run_id, None)
        if started is not None:
            started.close()

    def stream(self, run_id: str, order) -> Iterator[bytes]:
        with self._relays_lock:
            started = self._relays.pop(run_id, None)
        if started is None:
            return self._followed_by_polls(run_id, order)
        return self._relayed(run_id, started, order)

    def _relayed(self, run_id: str, started: UpstreamStream, order) -> Iterator[bytes]:
        buffer = RelayBuffer()
        run = db.session.scalar(select(Run).where(Run.id == run_id))
        relay = self._relay(run, RunPublisher(buffer, run))
        ended, kept = False, time.monotonic()
        try:
            for event in _released(started.events):
                ended = relay.feed(event)
                yield from emit(order, buffer.drain())
                if ended:
                    break
                if time.monotonic() - kept > STREAM_LEASE_SECONDS / 3:
                    kept = time.monotonic()
                    self._lease(run, STREAM_LEASE_SECONDS)
        except EngineError as exc:
            log.warning("run %s: its upstream stream broke: %s", run_id,
                        exc.log_detail or exc.public_message)
        finally:
            started.close()
            if not ended:
                self._lease(run, 0)  # a client gone, a stream broken: polls take it from here
        yield from emit(order, buffer.drain())
        if order.terminal is None:
            yield from self._followed_by_polls(run_id, order)  # polls finish what the stream did not
        else:
            yield from emit(order, [DONE])

    def _followed_by_polls(self, run_id: str, order) -> Iterator[bytes]:
        """A stream of the run's end as polls see it (at most one upstream call an interval)."""
        def settle(seen):
            run = db.session.scalar(select(Run).where(Run.id == run_id))
            if run is not None:
                self.refresh_run(run)
            return settled_events(run_id, seen)

        return follow(self.run_log, run_id, order, settle, ping_seconds=self.ping_seconds,
                      check_seconds=self.poll_interval)

    def _announced_rows(self, run: Run, announced: Announced) -> tuple[Run, Message | None,
                                                                       list[RunStep]]:
        """The run, its reply and its steps as settling left them, for the stream's end."""
        db.session.refresh(run)
        message = None
        if announced.messages:
            message = db.session.scalar(select(Message).where(
                Message.id.in_(list(announced.messages.values()))).order_by(Message.pk.desc()))
        steps = list(db.session.scalars(select(RunStep).where(
            RunStep.id.in_([step for step in announced.steps.values() if step]))
            .order_by(RunStep.pk)))
        return run, message, steps

    # ---- the sweeper ----------------------------------------------------------------------------

    def sweep(self, batch: int = 100) -> None:
        """Follow this home's active runs that nobody polls, so they settle (or expire) anyway,
        also after a restart. Polls are claimed as usual: sweepers in several processes cost no
        more upstream calls than one client polling."""
        stamp = time.time()
        runs = list(db.session.scalars(
            select(Run).join(Thread).where(
                Thread.home == self.home, Run.status.in_((*POLLED_STATUSES, "requires_action")),
                or_(Run.polled_at.is_(None), Run.polled_at <= stamp - self.poll_interval,
                    Run.expires_at <= now()))
            .order_by(Run.polled_at.is_not(None), Run.polled_at).limit(batch)))
        for run in runs:
            try:
                self.refresh_run(run)
            except ObjectDeletedError:
                db.session.rollback()  # its thread was deleted meanwhile: nothing to follow
        self._finish_deletes()

    # ---- moving threads -----------------------------------------------------------------------

    def copy_container(self, thread: Thread) -> str:
        """Create an empty upstream object for a registry thread being moved here; its id."""
        return self._call(self._create_container, thread.meta, thread.tool_resources)

    @staticmethod
    def copy_of(message: Message) -> MessageCreate:
        """What the upstream copy of a registry message carries: its role, text and files."""
        return MessageCreate(role=message.role, content=message_text(message) or " ",
                             attachments=message.attachments or None)

    def copy_vector_stores(self, thread: Thread) -> int:
        """Make the provider's copies of the vector stores a thread names (files included), so
        its first run there finds them; how many."""
        store_ids = ((thread.tool_resources or {}).get("file_search") or {}).get(
            "vector_store_ids") or []
        return len(self.copies.stores(list(store_ids)))

    def copy_messages(self, container: str, messages: list[Message]) -> list[str]:
        """Append copies of registry messages to an upstream object; their upstream ids."""
        bodies = [self.copy_of(m) for m in messages]
        return self._call(self._add_messages, container, bodies) if bodies else []

    def held_messages(self, container: str) -> list[UpstreamMessage]:
        """The messages an upstream object this engine made holds, oldest first."""
        return self._call(self._list_messages, container)

    def discard_container(self, container: str) -> None:
        """Delete an upstream object this engine made."""
        self._call(self._delete_container, container)

    def discard_message(self, container: str, upstream_id: str) -> None:
        """Delete one message copy from an upstream object this engine made."""
        self._call(self._delete_message, container, upstream_id)

    # ---- lifecycle ----------------------------------------------------------------------------

    def warm_up(self) -> None:
        self.upstream.warm_up()

    def shutdown(self) -> None:
        self.stop_sweeper()
        self.upstream.close()

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "poll_interval_ms": int(self.poll_interval * 1000)}

