"""Threads kept in our own registry; runs executed in-process by a bounded pool.

The `offline` and `chat` engines are this class with different responders. Settings read:
RUN_WORKERS, RUN_QUEUE_LIMIT.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from flask import Flask
from sqlalchemy import select, update

from ..errors import InvalidRequest, ServiceUnavailable
from ..extensions import db
from ..models import Message, Run, RunStep, Thread, now
from ..registry import new_id
from ..schemas import (RESERVED_METADATA_KEY, MessageCreate, MessageModify, RunCreate, RunModify,
                       ThreadCreate, ThreadModify, ToolOutputsSubmit, file_search_details)
from .base import (CancelSignal, Engine, EngineError, Reply, Responder, RunFailed, RunRequest, Turn,
                   UpstreamRateLimited)
from ..streaming.publish import RunPublisher
from .common import (add_usage, check_tool_outputs, deliver_tool_outputs, end_open_steps,
                     insert_run, message_row, message_step, message_text, new_run,
                     refuse_while_active, reply_row, require_home, required_action, search_step,
                     tool_calls_step)
from .file_search import run_searcher

log = logging.getLogger(__name__)

_CANCEL_CHECK_SECONDS = 0.25


class _Unstreamed:
    """A run nobody streams: nothing was announced, every id is new."""

    message_id = message_step_id = tool_step_id = None
    search_steps = ()


class RegistryEngine(Engine):
    """Threads and messages live in the registry; a `Responder` answers runs."""

    home = "local"

    def __init__(self, app: Flask, responder: Responder, *, workers: int, queue_limit: int,
                 run_timeout: int = 600, step_limit: float = 90.0, queue=None):
        super().__init__()
        self.app = app
        # An RQ queue: runs execute in `flask run-worker` processes instead of this one's pool.
        self.queue = queue
        self.run_timeout = run_timeout
        # No executing step outlives this (its responder call is bounded by OPENAI_TIMEOUT or the
        # offline delay): an older `in_progress` step has lost its process.
        self.step_limit = step_limit
        self.responder = responder
        self.name = responder.name
        self._workers = workers
        self._capacity = workers + queue_limit
        # Pools start their threads on first use, so each forked gunicorn worker gets its own.
        self._runs = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"run-{self.name}")
        # Responder calls run apart from the executions so that a cancel need not wait for them.
        self._calls = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"call-{self.name}")
        self._pending = threading.BoundedSemaphore(self._capacity)
        self._cancel_events: dict[str, threading.Event] = {}

    # ---- threads and messages ---------------------------------------------------------------

    def create_thread(self, user_id: str, body: ThreadCreate) -> Thread:
        thread = Thread(id=new_id("thread"), user_id=user_id,
                        meta={**(body.metadata or {}), RESERVED_METADATA_KEY: user_id},
                        tool_resources=body.tool_resources, home=self.home)
        db.session.add(thread)
        db.session.flush()
        for message in body.messages or []:
            db.session.add(message_row(thread, message))
        db.session.commit()
        return thread

    def modify_thread(self, thread: Thread, body: ThreadModify) -> Thread:
        require_home(thread, self.home)
        if body.metadata is not None:
            # The owner stamp survives any replacement of the client's metadata.
            thread.meta = {**body.metadata, RESERVED_METADATA_KEY: thread.user_id}
        if body.tool_resources is not None:
            thread.tool_resources = body.tool_resources
        db.session.commit()
        return thread

    def delete_thread(self, thread: Thread) -> None:
        require_home(thread, self.home)
        for run in thread.runs:
            if run.is_active:
                self._signal_cancel(run.id)
        db.session.delete(thread)
        db.session.commit()

    def create_message(self, thread: Thread, body: MessageCreate) -> Message:
        require_home(thread, self.home)
        refuse_while_active(thread)
        message = message_row(thread, body)
        db.session.add(message)
        db.session.commit()
        return message

    def modify_message(self, message: Message, body: MessageModify) -> Message:
        require_home(message.thread, self.home)
        if body.metadata is not None:
            message.meta = body.metadata
        db.session.commit()
        return message

    def delete_message(self, message: Message) -> None:
        require_home(message.thread, self.home)
        db.session.delete(message)
        db.session.commit()

    # ---- runs --------------------------------------------------------------------------------

    def create_run(self, thread: Thread, assistant, body: RunCreate) -> Run:
        require_home(thread, self.home)
        self._reserve_slot()
        try:
            run = insert_run(new_run(thread, assistant, body, lifetime=self.run_timeout), thread,
                             [message_row(thread, extra) for extra in body.additional_messages or []])
        except BaseException:
            self._pending.release()
            raise
        if body.stream:
            self.run_log.open(run.id)  # before it executes: the stream misses none of its events
        self._submit(run.id)
        return run

    def _reserve_slot(self) -> None:
        if self.queue is not None:
            return  # the workers' queue holds waiting runs, not this process
        # Bounded: past RUN_WORKERS executing and RUN_QUEUE_LIMIT waiting, refuse rather than pile up.
        if not self._pending.acquire(blocking=False):
            raise ServiceUnavailable("Too many runs are waiting to execute. Try again shortly.",
                                     code="engine_overloaded", headers={"Retry-After": "2"})

    def cancel_run(self, run: Run) -> Run:
        require_home(run.thread, self.home)
        if run.status in ("cancelling", "cancelled"):
            return run
        if not run.is_active:
            raise InvalidRequest(f"Cannot cancel run with status '{run.status}'.", param="run_id")
        stamp = now()
        # Conditional updates: the executor may move the run at the same moment.
        for source, target, fields in (
                ("queued", "cancelled", {"cancelled_at": stamp}),
                ("requires_action", "cancelled", {"cancelled_at": stamp, "required_action": None}),
                ("in_progress", "cancelling", {})):
            changed = db.session.execute(
                update(Run).where(Run.pk == run.pk, Run.status == source)
                .values(status=target, **fields)).rowcount
            if changed:
                end_open_steps(run.pk, target)
                break
        db.session.commit()
        self._signal_cancel(run.id)
        db.session.refresh(run)
        return run

    def submit_tool_outputs(self, run: Run, body: ToolOutputsSubmit) -> Run:
        require_home(run.thread, self.home)
        check_tool_outputs(run, body)
        self._reserve_slot()
        outputs = [{"role": "tool", "tool_call_id": o.tool_call_id, "content": o.output}
                   for o in body.tool_outputs]
        # Conditional: a cancel may have moved the run meanwhile.
        resumed = db.session.execute(
            update(Run).where(Run.pk == run.pk, Run.status == "requires_action")
            .values(status="queued", required_action=None,
                    tool_exchange=[*(run.tool_exchange or []), *outputs])).rowcount
        if resumed:
            deliver_tool_outputs(run, {o.tool_call_id: o.output for o in body.tool_outputs})
        db.session.commit()
        if not resumed:
            self._pending.release()
            db.session.refresh(run)
            raise InvalidRequest(f"Runs in status '{run.status}' do not accept tool outputs.",
                                 param="run_id")
        if body.stream:
            self.run_log.open(run.id)
        self._submit(run.id)
        db.session.refresh(run)
        return run

    def modify_run(self, run: Run, body: RunModify) -> Run:
        require_home(run.thread, self.home)
        if body.metadata is not None:
            run.meta = body.metadata
        db.session.commit()
        return run

    # ---- execution ---------------------------------------------------------------------------

    def _submit(self, run_id: str) -> None:
        if self.queue is not None:
            # The same execution, in a worker process; cancels reach it through the registry.
            self.queue.enqueue("bridge.jobs.execute_run", run_id,
                               job_timeout=int(self.step_limit) + 60, result_ttl=0)
            return
        self._cancel_events[run_id] = threading.Event()
        try:
            self._runs.submit(self._execute, run_id)
        except RuntimeError:  # shutting down
            self._pending.release()
            raise

    def _signal_cancel(self, run_id: str) -> None:
        event = self._cancel_events.get(run_id)
        if event is not None:
            event.set()

    def _execute(self, run_id: str) -> None:
        try:
            self.execute(run_id)
        except Exception:  # the pool would swallow it silently
            log.exception("run %s: executor failed", run_id)
        finally:
            self._pending.release()

    def execute(self, run_id: str) -> None:
        """Execute one queued run step to its end, here: in the pool, or in an RQ worker."""
        self._cancel_events.setdefault(run_id, threading.Event())
        try:
            with self.app.app_context():
                try:
                    self._execute_in_context(run_id)
                finally:
                    db.session.remove()
        finally:
            self._cancel_events.pop(run_id, None)

    def _execute_in_context(self, run_id: str) -> None:
        begun = self._begin(run_id)
        if begun is None:
            return
        request, publisher = begun
        # Release the connection before the (possibly slow) upstream call.
        db.session.remove()
        cancelled = self._cancel_events.setdefault(run_id, threading.Event())
        abandoned, answered = threading.Event(), threading.Event()
        call = self._calls.submit(self.responder.respond, request,
                                  CancelSignal(wait=abandoned.wait), publisher)
        call.add_done_callback(lambda _: answered.set())
        # Wait for the answer, but stop when the run is cancelled, here or in another worker
        # process (seen in the registry); an abandoned call finishes on its own. A cancel that
        # lands after the answer is settled by _complete/_fail.
        while not answered.wait(_CANCEL_CHECK_SECONDS):
            if cancelled.is_set() or self._cancel_requested(run_id):
                abandoned.set()
                if publisher is not None:
                    publisher.close()  # the stream ends from the registry: cancelled
                self._still_executing(run_id)  # settles the cancel
                return
        try:
            reply = call.result()
        except RunFailed as failure:
            self._fail(run_id, failure.code, failure.message, publisher)
        except UpstreamRateLimited as exc:
            self._fail(run_id, "rate_limit_exceeded", exc.public_message, publisher)
        except EngineError as exc:
            log.warning("run %s: upstream failure: %s", run_id, exc.log_detail)
            self._fail(run_id, "server_error", exc.public_message, publisher)
        except Exception:
            log.exception("run %s: responder %s failed", run_id, self.name)
            self._fail(run_id, "server_error", "The run failed because of an internal error.",
                       publisher)
        else:
            self._complete(run_id, reply, publisher)

    def _cancel_requested(self, run_id: str) -> bool:
        status = db.session.scalar(select(Run.status).where(Run.id == run_id))
        db.session.remove()
        return status != "in_progress"

    def _begin(self, run_id: str) -> tuple[RunRequest, RunPublisher | None] | None:
        """Take a queued run in progress; what its responder needs, and its stream if any."""
        started = db.session.execute(
            update(Run).where(Run.id == run_id, Run.status == "queued")
            .values(status="in_progress", started_at=now())).rowcount
        db.session.commit()
        if not started:  # cancelled (or deleted) while queued
            return None
        run = db.session.scalar(select(Run).where(Run.id == run_id))
        publisher = RunPublisher(self.run_log, run) if self.run_log.is_open(run_id) else None
        if publisher is not None:
            publisher.status(run)
        messages = db.session.scalars(
            select(Message).where(Message.thread_pk == run.thread_pk).order_by(Message.pk))
        turns = tuple(Turn(role=m.role, text=message_text(m)) for m in messages)
        return RunRequest(run_id=run.id, model=run.model, instructions=run.instructions,
                          turns=turns, temperature=run.temperature, top_p=run.top_p,
                          max_completion_tokens=run.max_completion_tokens,
                          tools=tuple(t for t in run.tools or [] if t.get("type") == "function"),
                          tool_choice=run.tool_choice,
                          parallel_tool_calls=run.parallel_tool_calls,
                          tool_exchange=tuple(run.tool_exchange or ()),
                          file_search=run_searcher(self.app, run)), publisher

    def _still_executing(self, run_id: str) -> Run | None:
        """The run, locked, if it is still in progress; otherwise settle a pending cancel.

        The thread may have been deleted meanwhile, or the run cancelled: then the executor's
        result is dropped.
        """
        run = db.session.scalar(select(Run).where(Run.id == run_id).with_for_update())
        if run is not None and run.status == "in_progress":
            return run
        if run is not None and run.status == "cancelling":
            run.status = "cancelled"
            run.cancelled_at = now()
            end_open_steps(run.pk, "cancelled")
        db.session.commit()
        return None

    def _complete(self, run_id: str, reply: Reply, publisher: RunPublisher | None = None) -> None:
        run = self._still_executing(run_id)
        if run is None:
            return
        usage = reply.usage.as_dict()
        run.usage = add_usage(run.usage, usage)
        # What a stream announced keeps its ids here.
        streamed = publisher or _Unstreamed()
        messages, steps = self._search_rows(run, reply, streamed)
        message = None
        # The run's new state, its reply and its steps commit together.
        if reply.tool_calls:
            calls = [call.as_required_action() for call in reply.tool_calls]
            if streamed.message_id is not None:
                # Text streamed before the calls: it is a message of the run, as announced.
                message = reply_row(run, reply.text, message_id=streamed.message_id)
                steps.append(message_step(run, message, None, step_id=streamed.message_step_id))
            run.status = "requires_action"
            run.required_action = required_action(calls)
            run.tool_exchange = [*(run.tool_exchange or []), *(
                reply.exchange if reply.exchange is not None else
                [{"role": "assistant", "content": reply.text or None, "tool_calls": calls}])]
            steps.append(tool_calls_step(run, calls, usage, step_id=streamed.tool_step_id))
        else:
            truncated = reply.finish_reason == "length"
            message = reply_row(run, reply.text, truncated=truncated,
                                message_id=streamed.message_id,
                                annotations=[c.as_annotation() for c in reply.citations])
            steps.append(message_step(run, message, usage, step_id=streamed.message_step_id))
            if truncated:
                run.status = "incomplete"
                run.incomplete_details = {"reason": "max_completion_tokens"}
            else:
                run.status = "completed"
                run.completed_at = now()
        db.session.add_all([*messages, *([message] if message is not None else []), *steps])
        db.session.commit()
        if publisher is not None:
            publisher.finished(run, message, steps)

    @staticmethod
    def _search_rows(run: Run, reply: Reply, streamed) -> tuple[list[Message], list[RunStep]]:
        """The rows of the file searches the responder ran: per round, the text written before
        it (a message) and its step, under the ids a stream announced them by."""
        messages, steps = [], []
        announced = list(streamed.search_steps)
        for position, round in enumerate(reply.searches):
            message_id, message_step_id, step_id = (
                announced[position] if position < len(announced) else (None, None, None))
            if round.text_before:
                before = reply_row(run, round.text_before, message_id=message_id)
                messages.append(before)
                steps.append(message_step(run, before, None, step_id=message_step_id))
            steps.append(search_step(run, file_search_details(round.calls,
                                                              round.ranking_options),
                                     step_id=step_id))
        return messages, steps

    def _fail(self, run_id: str, code: str, message: str,
              publisher: RunPublisher | None = None) -> None:
        run = self._still_executing(run_id)
        if run is None:
            return
        run.status = "failed"
        run.failed_at = now()
        run.last_error = {"code": code, "message": message}
        end_open_steps(run.pk, "failed", run.last_error)
        db.session.commit()
        if publisher is not None:
            publisher.finished(run)

    # ---- the sweeper ----------------------------------------------------------------------------

    def sweep(self) -> None:
        """End overdue and interrupted runs, and restart queued runs no process is executing.

        Several processes may sweep at once: every change is a conditional update, and a run
        submitted twice executes once (`_begin` takes it out of `queued`).
        """
        stamp = now()
        local = select(Thread.pk).where(Thread.home == self.home)
        overdue = Run.thread_pk.in_(local), Run.expires_at <= stamp
        # Each update names the runs it ended, so that their open steps end with them.
        expired = db.session.scalars(update(Run).where(*overdue, Run.status.in_(
            ("queued", "in_progress", "requires_action"))).values(
            status="expired", required_action=None, last_error={
                "code": "server_error",
                "message": "The run did not finish within the bridge's run timeout."})
            .returning(Run.pk)).all()
        end_open_steps(expired, "expired")
        cancelled = db.session.scalars(update(Run).where(*overdue, Run.status == "cancelling")
                                       .values(status="cancelled", cancelled_at=stamp)
                                       .returning(Run.pk)).all()
        end_open_steps(cancelled, "cancelled")
        interrupted = {"code": "server_error",
                       "message": "The run was interrupted (the server restarted); start a new run."}
        failed = db.session.scalars(update(Run).where(
            Run.thread_pk.in_(local), Run.status == "in_progress",
            Run.started_at <= stamp - self.step_limit, Run.id.not_in(list(self._cancel_events)))
            .values(status="failed", failed_at=stamp, last_error=interrupted)
            .returning(Run.pk)).all()
        end_open_steps(failed, "failed", interrupted)
        db.session.commit()
        if self.queue is not None:
            return  # queued runs wait in Redis, which outlives this process
        waiting = list(db.session.scalars(select(Run.id).where(
            Run.thread_pk.in_(local), Run.status == "queued").order_by(Run.pk).limit(100)))
        db.session.remove()
        for run_id in waiting:
            if run_id in self._cancel_events:
                continue  # this process has it already
            if not self._pending.acquire(blocking=False):
                break  # full: the next pass tries again
            try:
                self._submit(run_id)
            except RuntimeError:
                break

    def warm_up(self) -> None:
        self.responder.warm_up()

    def shutdown(self) -> None:
        self.stop_sweeper()
        # Runs in flight finish (their upstream calls are bounded by timeouts); queued ones stay
        # queued in the registry.
        self._runs.shutdown(wait=True, cancel_futures=True)
        self._calls.shutdown(wait=False, cancel_futures=True)
        self.responder.close()

    def describe(self) -> dict:
        return {"engine": self.name, "workers": self._workers}
