"""Registry steps every engine shares: message, run and run step rows, the one-active-run rule,
tool outputs.

Engines differ in where a thread's conversation lives and who answers; what a thread, message or
run looks like in the registry, and when a write is refused, is the same for all of them.
"""

from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict, InvalidRequest
from ..extensions import db
from ..models import ACTIVE_RUN_STATUSES, Message, Run, RunStep, Thread, now
from ..registry import new_id
from ..schemas import (MessageCreate, RunCreate, ToolOutputsSubmit, message_creation_details,
                       text_block, tool_calls_details)

# A run that ends this way ends the step it was in the same way, stamped in this field.
_STEP_ENDINGS = {"cancelled": "cancelled_at", "failed": "failed_at", "expired": "expired_at"}
# A step's `last_error.code` has two of a run's three values.
_STEP_ERROR_CODES = ("server_error", "rate_limit_exceeded")


def require_home(thread: Thread, home: str) -> None:
    """Refuse a write to a thread kept by another engine than the one this process runs."""
    if thread.home != home:
        raise Conflict(
            f"Thread {thread.id} is kept by the '{thread.home}' engine and this bridge runs another; "
            "the operator can move it with `flask migrate-threads`.",
            param="thread_id", code="thread_on_other_engine")


def refuse_while_active(thread: Thread) -> None:
    """Messages can't be added while a run reads the thread, as on OpenAI."""
    active = db.session.scalar(select(Run.id).where(
        Run.thread_pk == thread.pk, Run.status.in_(ACTIVE_RUN_STATUSES)))
    if active:
        raise Conflict(f"Can't add messages to {thread.id} while a run {active} is active.",
                       param="thread_id", code="thread_locked")


def message_row(thread: Thread | int, body: MessageCreate,
                upstream_id: str | None = None) -> Message:
    """The registry row of a message a client sent, in a thread (or the thread of that pk)."""
    thread_pk = thread if isinstance(thread, int) else thread.pk
    return Message(id=new_id("msg"), thread_pk=thread_pk, role=body.role, upstream_id=upstream_id,
                   content=[text_block(text) for text in body.text_parts()],
                   attachments=[attachment.model_dump() for attachment in body.attachments or []],
                   meta=body.metadata or {},
                   status="completed", completed_at=None)


def reply_row(run: Run, text: str, *, upstream_id: str | None = None,
              truncated: bool = False, message_id: str | None = None,
              annotations: list[dict[str, Any]] = ()) -> Message:
    """The registry row of an assistant message a run produced (with the id a stream already
    announced it by, if one did)."""
    return Message(id=message_id or new_id("msg"), thread_pk=run.thread_pk, role="assistant",
                   upstream_id=upstream_id, content=[text_block(text, annotations)],
                   attachments=[], meta={},
                   status="incomplete" if truncated else "completed",
                   completed_at=None if truncated else now(), assistant_id=run.assistant_id,
                   run_id=run.id)


def message_text(message: Message) -> str:
    """A message's text parts joined, as models read them."""
    return "\n".join(part["text"]["value"] for part in message.content if part.get("type") == "text")


def new_run(thread: Thread, assistant, body: RunCreate, *, lifetime: int) -> Run:
    """A queued run: the assistant's settings with the request's overrides applied.

    It expires `lifetime` seconds after creation (RUN_TIMEOUT_SECONDS; OpenAI used ten minutes).
    """
    instructions = body.instructions if body.instructions is not None else (
        assistant.instructions or "")
    if body.additional_instructions:
        instructions = f"{instructions}\n\n{body.additional_instructions}".strip()
    created = now()
    return Run(
        id=new_id("run"), thread_pk=thread.pk, assistant_id=assistant.id, status="queued",
        created_at=created, expires_at=created + lifetime,
        model=body.model or assistant.model, instructions=instructions,
        tools=[t.model_dump(exclude_none=True) for t in body.tools] if body.tools is not None
        else (assistant.tools or []),
        meta=body.metadata or {},
        temperature=body.temperature if body.temperature is not None else assistant.temperature,
        top_p=body.top_p if body.top_p is not None else assistant.top_p,
        max_prompt_tokens=body.max_prompt_tokens,
        max_completion_tokens=body.max_completion_tokens,
        response_format=body.response_format if body.response_format is not None
        else assistant.response_format,
        tool_choice=body.tool_choice,
        parallel_tool_calls=body.parallel_tool_calls if body.parallel_tool_calls is not None
        else True,
        truncation_strategy=body.truncation_strategy)


def insert_run(run: Run, thread: Thread, messages: Iterable[Message] = ()) -> Run:
    """Commit a new run (and messages that come with it), or Conflict if one is already active."""
    db.session.add(run)
    db.session.add_all(list(messages))
    try:
        db.session.commit()
    except IntegrityError:
        # The partial unique index allows one active run per thread; the loser lands here.
        db.session.rollback()
        raise Conflict(f"Thread {thread.id} already has an active run.",
                       param="thread_id", code="thread_locked") from None
    return run


def check_tool_outputs(run: Run, body: ToolOutputsSubmit) -> None:
    """Refuse outputs for a run that is not waiting, or that do not answer each pending call once."""
    if run.status != "requires_action":
        raise InvalidRequest(f"Runs in status '{run.status}' do not accept tool outputs.",
                             param="run_id")
    expected = {call["id"] for call in run.required_action["submit_tool_outputs"]["tool_calls"]}
    given = [output.tool_call_id for output in body.tool_outputs]
    if sorted(given) != sorted(expected):
        missing = sorted(expected - set(given))
        raise InvalidRequest(
            "Submit exactly one output for each pending tool call"
            + (f"; missing: {', '.join(missing)}." if missing else "."), param="tool_outputs")


def pending_tool_calls(run: Run) -> list[dict[str, Any]]:
    """The tool calls a run in `requires_action` waits for, in the wire shape."""
    if not run.required_action:
        return []
    return list(run.required_action["submit_tool_outputs"]["tool_calls"])


def required_action(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The `required_action` of a run waiting for these tool calls."""
    return {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": calls}}


def add_usage(total: dict[str, int] | None, step: dict[str, int] | None) -> dict[str, int] | None:
    """A run that called tools spans several model calls; its usage is their sum."""
    if step is None:
        return total
    return {key: (total or {}).get(key, 0) + value for key, value in step.items()}


# ---- run steps --------------------------------------------------------------------------------

def step_error(error: dict[str, Any] | None) -> dict[str, str] | None:
    """A run's (or an upstream step's) `last_error` in the vocabulary of steps."""
    if not error:
        return None
    code = error.get("code") if error.get("code") in _STEP_ERROR_CODES else "server_error"
    return {"code": code, "message": error.get("message") or "The step failed."}


def tool_calls_step(run: Run, calls: list[dict[str, Any]], usage: dict[str, int] | None, *,
                    step_id: str | None = None) -> RunStep:
    """The open step of a round of tool calls: in progress until their outputs arrive."""
    return RunStep(id=step_id or new_id("step"), run_pk=run.pk, thread_pk=run.thread_pk,
                   assistant_id=run.assistant_id, type="tool_calls", status="in_progress",
                   step_details=tool_calls_details(calls), usage=usage, created_at=now())


def search_step(run: Run, details: dict[str, Any], *, step_id: str | None = None) -> RunStep:
    """The step of file searches the run ran itself, ended as they were."""
    stamp = now()
    return RunStep(id=step_id or new_id("step"), run_pk=run.pk, thread_pk=run.thread_pk,
                   assistant_id=run.assistant_id, type="tool_calls", status="completed",
                   step_details=details, usage=None, created_at=stamp, completed_at=stamp)


def message_step(run: Run, message: Message, usage: dict[str, int] | None, *,
                 step_id: str | None = None) -> RunStep:
    """The step of a reply the run wrote, ended with it."""
    stamp = now()
    return RunStep(id=step_id or new_id("step"), run_pk=run.pk, thread_pk=run.thread_pk,
                   assistant_id=run.assistant_id, type="message_creation", status="completed",
                   step_details=message_creation_details(message.id), usage=usage,
                   created_at=stamp, completed_at=stamp)


def deliver_tool_outputs(run: Run, outputs: dict[str, str]) -> None:
    """Write the submitted outputs into the run's open tool_calls step and end it (no commit)."""
    step = db.session.scalar(select(RunStep).where(
        RunStep.run_pk == run.pk, RunStep.type == "tool_calls", RunStep.status == "in_progress")
        .order_by(RunStep.pk.desc()))
    if step is None:
        return  # a run that asked for tools before steps were recorded
    calls = [{**call, "function": {**call["function"], "output": outputs[call["id"]]}}
             if call.get("type") == "function" and call.get("id") in outputs else call
             for call in step.step_details["tool_calls"]]
    step.step_details = {**step.step_details, "tool_calls": calls}
    step.status, step.completed_at = "completed", now()


def end_open_steps(run_pks: int | list[int], run_status: str,
                   last_error: dict[str, Any] | None = None) -> None:
    """End the steps still in progress of runs that just ended, the way the runs ended (no
    commit): called in the transaction that ends the runs, so a run and its steps agree."""
    stamp_field = _STEP_ENDINGS.get(run_status)
    pks = [run_pks] if isinstance(run_pks, int) else list(run_pks)
    if stamp_field is None or not pks:
        return
    values: dict[str, Any] = {"status": run_status, stamp_field: now()}
    if run_status == "failed":
        values["last_error"] = step_error(last_error)
    db.session.execute(update(RunStep).where(RunStep.run_pk.in_(pks),
                                             RunStep.status == "in_progress").values(**values))
