"""The `assistants` engine: a pass-through to servers that still speak the Assistants API v2.

Threads, messages, runs and assistants are created upstream through the SDK's `beta` resources
and mirrored in the registry behind our ids, as are a run's steps when it settles. A run is
started with every setting recorded on it (model, instructions, tools, sampling), so what
clients see does not depend on how current the upstream copy of the assistant is.

Settings read: OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_TIMEOUT, OPENAI_MAX_RETRIES, POLL_AFTER_MS.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import select, update

from ..extensions import db
from ..models import Assistant
from ..schemas import SEARCH_CONTENTS, MessageCreate, ToolOutput
from .base import UpstreamNotFound
from ..streaming.events import TERMINAL_RUN_EVENTS
from ..streaming.publish import RunPublisher
from .mirror import search_round
from .remote import (Announced, Relay, RunSettings, RunSnapshot, UpstreamEngine, UpstreamMessage,
                     UpstreamReply, UpstreamStep, UpstreamStream, best_effort)

log = logging.getLogger(__name__)

_SETTLED = ("completed", "failed", "cancelled", "expired", "incomplete", "requires_action")
_STEP_STATUSES = ("in_progress", "cancelled", "failed", "completed", "expired")
_STEP_STAMPS = ("completed_at", "failed_at", "cancelled_at", "expired_at")
_ASSISTANT_FIELDS = ("name", "description", "model", "instructions", "tools", "temperature",
                     "top_p", "response_format")


def _text(message: dict[str, Any]) -> str:
    return "".join(block["text"]["value"] for block in message.get("content") or []
                   if block.get("type") == "text")


def _annotations(message: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The file citations of a message's text (one text part, as the bridge keeps it)."""
    found, offset = [], 0
    for block in message.get("content") or []:
        if block.get("type") != "text":
            continue
        for annotation in block["text"].get("annotations") or ():
            if annotation.get("type") == "file_citation":
                found.append({**annotation,
                              "start_index": annotation.get("start_index", 0) + offset,
                              "end_index": annotation.get("end_index", 0) + offset})
        offset += len(block["text"]["value"])
    return tuple(found)


def _usage(usage: dict[str, Any] | None) -> dict[str, int] | None:
    if not usage:
        return None
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": usage.get("total_tokens") or prompt + completion}


def _step(step: dict[str, Any]) -> UpstreamStep:
    """An upstream run step; its message id is still the upstream's."""
    details = step.get("step_details") or {}
    status = step.get("status")
    return UpstreamStep(
        upstream_id=step["id"], type=step["type"],
        status=status if status in _STEP_STATUSES else "failed",
        created_at=step.get("created_at"),
        message=(details.get("message_creation") or {}).get("message_id"),
        tool_calls=list(details.get("tool_calls") or []), usage=_usage(step.get("usage")),
        last_error=step.get("last_error"), **{name: step.get(name) for name in _STEP_STAMPS})


class AssistantsEngine(UpstreamEngine):
    """Every object exists upstream too; the registry maps our ids to the upstream ones."""

    name = "assistants"
    home = "assistants"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._provisioning = threading.Lock()

    # ---- assistants ---------------------------------------------------------------------------

    def assistant_saved(self, assistant: Assistant) -> None:
        self._sync_assistant(assistant)

    def assistant_deleted(self, assistant: Assistant) -> None:
        if assistant.upstream_id:
            upstream_id = assistant.upstream_id
            best_effort(f"delete assistant {assistant.id} upstream", lambda: self.upstream.call(
                lambda client: client.beta.assistants.delete(upstream_id)))

    def _sync_assistant(self, assistant: Assistant) -> str:
        """Create or update the upstream copy of an assistant; its upstream id.

        Idempotent by name, like the setup script: an upstream assistant of the same name is
        adopted rather than duplicated.
        """
        fields = {name: getattr(assistant, name) for name in _ASSISTANT_FIELDS
                  if getattr(assistant, name) is not None}
        fields["metadata"] = assistant.meta or {}
        resources = self.copies.tool_resources(assistant.tool_resources)
        if resources is not None:
            fields["tool_resources"] = resources
        pk, known, name = assistant.pk, assistant.upstream_id, assistant.name
        db.session.commit()  # no registry transaction held while the upstream answers
        with self._provisioning:
            upstream_id = known or self._find_assistant(name)
            if upstream_id:
                try:
                    self.upstream.call(lambda client: client.beta.assistants.update(
                        upstream_id, **fields))
                except UpstreamNotFound:
                    upstream_id = None
            if not upstream_id:
                upstream_id = self.upstream.create(
                    lambda client: client.beta.assistants.create(**fields)).id
            if known != upstream_id:
                db.session.execute(update(Assistant).where(Assistant.pk == pk)
                                   .values(upstream_id=upstream_id))
                db.session.commit()
        return upstream_id

    def _find_assistant(self, name: str | None) -> str | None:
        """An upstream assistant of this name that no registry assistant uses yet."""
        if not name:
            return None
        taken = set(db.session.scalars(select(Assistant.upstream_id).where(
            Assistant.upstream_id.is_not(None))))
        db.session.commit()

        def search(client):
            for candidate in client.beta.assistants.list(limit=100, order="asc"):
                if candidate.name == name and candidate.id not in taken:
                    return candidate.id
            return None

        return self.upstream.call(search)

    # ---- threads and messages -----------------------------------------------------------------

    # A thread's tool resources name the registry's files and vector stores: the upstream thread
    # names their copies there.

    def _create_container(self, metadata, tool_resources) -> str:
        options: dict[str, Any] = {"metadata": metadata}
        resources = self.copies.tool_resources(tool_resources)
        if resources:
            options["tool_resources"] = resources
        return self.upstream.create(lambda client: client.beta.threads.create(**options)).id

    def _update_container(self, container, metadata, tool_resources) -> None:
        options: dict[str, Any] = {"metadata": metadata}
        if tool_resources is not None:
            options["tool_resources"] = self.copies.tool_resources(tool_resources) or {}
        self.upstream.call(lambda client: client.beta.threads.update(container, **options))

    def _delete_container(self, container) -> None:
        self.upstream.call(lambda client: client.beta.threads.delete(container))

    def _add_messages(self, container, messages: list[MessageCreate]) -> list[str]:
        ids: list[str] = []
        try:
            for message in messages:
                content = [{"type": "text", "text": text} for text in message.text_parts()]
                options: dict[str, Any] = {"metadata": message.metadata} if message.metadata else {}
                attachments = self._attachments(message)
                if attachments:
                    options["attachments"] = attachments
                ids.append(self.upstream.create(lambda client: client.beta.threads.messages.create(
                    container, role=message.role, content=content, **options)).id)
        except BaseException:
            for message_id in ids:  # one failed: the ones before it go too
                best_effort(f"delete message {message_id}",
                            lambda message_id=message_id: self._delete_message(container, message_id))
            raise
        return ids

    def _attachments(self, message: MessageCreate) -> list[dict[str, Any]]:
        """A message's code_interpreter files, as the upstream's copies; its file_search files
        are in the thread's vector store already."""
        files = [attachment.file_id for attachment in message.attachments or ()
                 if any(tool.type == "code_interpreter" for tool in attachment.tools)]
        return [{"file_id": file_id, "tools": [{"type": "code_interpreter"}]}
                for file_id in self.copies.files(files)]

    def _delete_message(self, container, upstream_id) -> None:
        self.upstream.call(lambda client: client.beta.threads.messages.delete(
            upstream_id, thread_id=container))

    def _list_messages(self, container) -> list[UpstreamMessage]:
        def every_message(client) -> list[UpstreamMessage]:
            # The SDK's page iterator asks for the next page until the last one.
            messages = client.beta.threads.messages.list(container, order="asc", limit=100)
            return [UpstreamMessage(upstream_id=message.id, role=message.role,
                                    text=_text(message.to_dict())) for message in messages]

        return self.upstream.call(every_message)

    def _update_message(self, container, upstream_id, metadata) -> None:
        self.upstream.call(lambda client: client.beta.threads.messages.update(
            upstream_id, thread_id=container, metadata=metadata))

    # ---- runs ---------------------------------------------------------------------------------

    def _upstream_assistant(self, assistant: Assistant) -> str:
        return assistant.upstream_id or self._sync_assistant(assistant)

    def _replace_upstream_assistant(self, assistant: Assistant, upstream_id) -> str | None:
        if upstream_id is None:
            return None
        try:
            self.upstream.call(lambda client: client.beta.assistants.retrieve(upstream_id))
            return None  # it is there: the 404 was about something else
        except UpstreamNotFound:
            pass
        db.session.execute(update(Assistant).where(
            Assistant.pk == assistant.pk, Assistant.upstream_id == upstream_id)
            .values(upstream_id=None))
        db.session.commit()
        return self._sync_assistant(assistant)

    def _start(self, run: RunSettings, container, upstream_assistant) -> RunSnapshot:
        options = _run_options(run)
        upstream_run = self.upstream.create(lambda client: client.beta.threads.runs.create(
            container, assistant_id=upstream_assistant, **options))
        return self._snapshot(container, upstream_run.to_dict())

    def _start_stream(self, run, container, upstream_assistant) -> UpstreamStream:
        options = _run_options(run)
        return self._opened(container, lambda client: client.beta.threads.runs.create(
            container, assistant_id=upstream_assistant, stream=True, **options))

    def _continue_stream(self, run, container, upstream_run, outputs) -> UpstreamStream:
        tool_outputs = [{"tool_call_id": output.tool_call_id, "output": output.output}
                        for output in outputs]
        return self._opened(container, lambda client: client.beta.threads.runs.submit_tool_outputs(
            upstream_run, thread_id=container, tool_outputs=tool_outputs, stream=True))

    def _opened(self, container: str, create) -> UpstreamStream:
        """A run started as a stream, read up to its first run event."""
        stream = self.upstream.create(create)
        events = self.upstream.events(stream)
        try:
            first = next(event for event in events if event.event.startswith("thread.run.")
                         and not event.event.startswith("thread.run.step."))
        except BaseException:
            stream.close()
            raise
        return UpstreamStream(snapshot=self._snapshot(container, first.data.to_dict()),
                              events=events, close=stream.close)

    def _relay(self, run, publisher) -> Relay:
        return AssistantsRelay(self, run, publisher)

    def _fetch(self, container, upstream_run) -> RunSnapshot:
        return self._snapshot(container, self.upstream.call(
            lambda client: client.beta.threads.runs.retrieve(upstream_run, thread_id=container))
            .to_dict())

    def _cancel(self, container, upstream_run) -> RunSnapshot:
        return self._snapshot(container, self.upstream.call(
            lambda client: client.beta.threads.runs.cancel(upstream_run, thread_id=container))
            .to_dict())

    def _continue(self, run, container, upstream_run, outputs: list[ToolOutput]) -> RunSnapshot:
        tool_outputs = [{"tool_call_id": output.tool_call_id, "output": output.output}
                        for output in outputs]
        return self._snapshot(container, self.upstream.create(
            lambda client: client.beta.threads.runs.submit_tool_outputs(
                upstream_run, thread_id=container, tool_outputs=tool_outputs)).to_dict())

    def _abandon_tool_calls(self, container, upstream_run, calls) -> None:
        if not calls or not upstream_run:
            return  # an upstream run that was not waiting has been cancelled already
        self.upstream.call(lambda client: client.beta.threads.runs.cancel(
            upstream_run, thread_id=container))

    def _update_run(self, container, upstream_run, metadata) -> None:
        self.upstream.call(lambda client: client.beta.threads.runs.update(
            upstream_run, thread_id=container, metadata=metadata))

    def _snapshot(self, container: str, run: dict[str, Any]) -> RunSnapshot:
        status = run["status"]
        snapshot = RunSnapshot(
            upstream_id=run["id"], status=status, completed_at=run.get("completed_at"),
            failed_at=run.get("failed_at"), cancelled_at=run.get("cancelled_at"),
            last_error=run.get("last_error"), incomplete_details=run.get("incomplete_details"),
            usage=run.get("usage"), usage_is_total=True)
        if status == "requires_action":
            snapshot.tool_calls = run["required_action"]["submit_tool_outputs"]["tool_calls"]
        if status in _SETTLED:
            # The messages the run wrote; the registry skips those it already mirrors.
            page = self.upstream.call(lambda client: client.beta.threads.messages.list(
                container, run_id=run["id"], order="asc", limit=100))
            snapshot.replies = [UpstreamReply(upstream_id=message.id, text=_text(message.to_dict()),
                                              truncated=message.status == "incomplete",
                                              annotations=_annotations(message.to_dict()))
                                for message in page.data if message.role == "assistant"]
            snapshot.steps = self._steps(container, run["id"])
        return snapshot

    def _steps(self, container: str, upstream_run: str) -> list[UpstreamStep]:
        """Every step of an upstream run, oldest first, across all pages."""
        def every_step(client) -> list[dict[str, Any]]:
            return [step.to_dict() for step in client.beta.threads.runs.steps.list(
                upstream_run, thread_id=container, order="asc", limit=100,
                include=[SEARCH_CONTENTS])]

        return [_step(step) for step in self.upstream.call(every_step)
                if step.get("type") in ("message_creation", "tool_calls")]


def _run_options(run: RunSettings) -> dict[str, Any]:
    """Every setting the run records, so the upstream copy of the assistant does not matter."""
    return {name: value for name, value in (
        ("model", run.model), ("instructions", run.instructions), ("tools", run.tools),
        ("metadata", run.metadata or None), ("temperature", run.temperature),
        ("top_p", run.top_p), ("max_prompt_tokens", run.max_prompt_tokens),
        ("max_completion_tokens", run.max_completion_tokens),
        ("response_format", run.response_format), ("tool_choice", run.tool_choice),
        ("parallel_tool_calls", run.parallel_tool_calls),
        ("truncation_strategy", run.truncation_strategy)) if value is not None}


class AssistantsRelay(Relay):
    """An upstream run's own stream, with its ids rewritten to ours: the text and tool calls go
    on through our publisher, and the run's end is settled like a poll."""

    def __init__(self, engine: "AssistantsEngine", run, publisher: RunPublisher):
        self.engine, self.run, self.publisher = engine, run, publisher
        self.announced = Announced()
        self.message_step: str | None = None  # the upstream ids of the open steps
        self.tool_step: str | None = None

    def feed(self, event: Any) -> bool:
        name, data, publisher = event.event, event.data, self.publisher
        if name == "thread.run.in_progress":
            self.engine._settle(self.run, RunSnapshot(upstream_id=data.id, status="in_progress"))
            publisher.status(self.run)
        elif name == "thread.run.step.created":
            if data.type == "tool_calls":
                self.tool_step = data.id
            else:
                self.message_step = data.id
        elif name == "thread.message.delta":
            for part in data.delta.content or ():
                if part.type == "text" and part.text and part.text.value:
                    publisher.text(part.text.value)
            if publisher.message_id is not None:
                self.announced.messages[data.id] = publisher.message_id
                if self.message_step is not None:
                    self.announced.steps[self.message_step] = publisher.message_step_id
        elif name == "thread.run.step.completed" and data.type == "tool_calls" and any(
                call.type == "file_search" for call in data.step_details.tool_calls):
            # A search the upstream ran: streamed as the bridge streams its own.
            calls = [call.to_dict() for call in data.step_details.tool_calls]
            publisher.searched(search_round(calls, next(
                (call["file_search"].get("ranking_options") for call in calls
                 if call.get("type") == "file_search"), None) or {}))
            self.announced.steps[data.id] = publisher.search_steps[-1][2]
        elif name == "thread.run.step.delta":
            details = data.delta.step_details
            for call in getattr(details, "tool_calls", None) or ():
                if getattr(call, "type", None) != "function":
                    continue  # file_search and code_interpreter calls are the upstream's own
                function = getattr(call, "function", None)
                publisher.tool_call(call.index, call_id=call.id,
                                    name=getattr(function, "name", None),
                                    arguments=getattr(function, "arguments", None) or "")
            if self.tool_step is not None and publisher.tool_step_id is not None:
                self.announced.steps[self.tool_step] = publisher.tool_step_id
        elif name in TERMINAL_RUN_EVENTS:
            container = self.run.thread.upstream_id
            snapshot = self.engine._call(self.engine._snapshot, container, data.to_dict())
            self.engine._settle(self.run, snapshot, self.announced)
            publisher.finished(*self.engine._announced_rows(self.run, self.announced))
            return True
        return False
