"""Runs: start, poll, list, cancel and modify."""

from functools import partial

from flask import Blueprint, current_app
from sqlalchemy import select

from ..auth import current_user_id, require_user
from ..engines import current_engine
from ..models import Run
from ..registry import assistant_by_id, paginate, run_in_thread, thread_for_user
from ..retrieval import resources
from ..schemas import (ListObject, ListQuery, RunCreate, RunModify, RunObject, ThreadAndRunCreate,
                       ThreadCreate, ToolOutputsSubmit, run_object)
from . import endpoint
from .messages import files_into_thread
from .pages import list_object
from .streams import reserve_stream, run_stream

bp = Blueprint("runs", __name__, url_prefix="/v1")
bp.before_request(require_user)


def _with_poll_hint(run) -> tuple[RunObject, dict[str, str]]:
    # The SDK's create_and_poll waits as long as this header says before polling again.
    headers = {}
    if run.is_active:
        headers["openai-poll-after-ms"] = str(current_app.config["BRIDGE_SETTINGS"].POLL_AFTER_MS)
    return run_object(run, run.thread.id), headers


@endpoint(bp, "/threads/<thread_id>/runs", "POST", body=RunCreate, response=RunObject,
          summary="Create a run")
def create_run(thread_id: str, body: RunCreate):
    """Queue a run on one of the caller's threads; it executes in the background."""
    user_id = current_user_id()
    thread = thread_for_user(thread_id, user_id)
    assistant = assistant_by_id(body.assistant_id)
    files_into_thread(thread, user_id, body.additional_messages or [])
    if body.stream:
        return _streamed(lambda: current_engine().create_run(thread, assistant, body))
    return _with_poll_hint(current_engine().create_run(thread, assistant, body))


def _streamed(start, **options):
    """Start a run (or continue one) and answer with its stream; the slot is taken first, so
    a full server refuses before anything starts."""
    slots = reserve_stream()
    try:
        run = start()
    except BaseException:
        slots.give_back()
        raise
    return run_stream(run, slots, **options)


@endpoint(bp, "/threads/runs", "POST", body=ThreadAndRunCreate, response=RunObject,
          summary="Create a thread and run it")
def create_thread_and_run(body: ThreadAndRunCreate):
    """Create a thread for the caller and queue a run on it."""
    assistant = assistant_by_id(body.assistant_id)
    thread_body = body.thread or ThreadCreate()
    if body.tool_resources is not None and thread_body.tool_resources is None:
        thread_body = thread_body.model_copy(update={"tool_resources": body.tool_resources})
    run_body = RunCreate(**body.model_dump(exclude={"thread", "tool_resources"}, exclude_unset=True))
    user_id = current_user_id()
    thread_body = resources.prepared_thread(user_id, thread_body)

    def start():
        return current_engine().create_thread_and_run(user_id, thread_body, assistant, run_body)

    if body.stream:
        return _streamed(start, thread_created=True)
    return _with_poll_hint(start())


@endpoint(bp, "/threads/<thread_id>/runs", "GET", query=ListQuery, response=ListObject[RunObject],
          summary="List runs")
def list_runs(thread_id: str, query: ListQuery):
    """A page of a thread's runs."""
    thread = thread_for_user(thread_id, current_user_id())
    current_engine().refresh_thread(thread)
    page = paginate(select(Run).where(Run.thread_pk == thread.pk), Run, query)
    return list_object(page, partial(run_object, thread_id=thread.id))


@endpoint(bp, "/threads/<thread_id>/runs/<run_id>", "GET", response=RunObject,
          summary="Retrieve (poll) a run")
def get_run(thread_id: str, run_id: str):
    """A run's current state; carries `openai-poll-after-ms` while it is still active."""
    thread = thread_for_user(thread_id, current_user_id())
    run = current_engine().refresh_run(run_in_thread(thread, run_id))
    return _with_poll_hint(run)


@endpoint(bp, "/threads/<thread_id>/runs/<run_id>", "POST", body=RunModify, response=RunObject,
          summary="Modify a run's metadata")
def modify_run(thread_id: str, run_id: str, body: RunModify):
    """Replace a run's metadata."""
    thread = thread_for_user(thread_id, current_user_id())
    return _with_poll_hint(current_engine().modify_run(run_in_thread(thread, run_id), body))


@endpoint(bp, "/threads/<thread_id>/runs/<run_id>/submit_tool_outputs", "POST",
          body=ToolOutputsSubmit, response=RunObject, summary="Submit tool outputs")
def submit_tool_outputs(thread_id: str, run_id: str, body: ToolOutputsSubmit):
    """Continue a run in `requires_action` with the outputs of its tool calls."""
    thread = thread_for_user(thread_id, current_user_id())
    run = run_in_thread(thread, run_id)
    if body.stream:
        return _streamed(lambda: current_engine().submit_tool_outputs(run, body), resumed=True)
    return _with_poll_hint(current_engine().submit_tool_outputs(run, body))


@endpoint(bp, "/threads/<thread_id>/runs/<run_id>/cancel", "POST", response=RunObject,
          summary="Cancel a run")
def cancel_run(thread_id: str, run_id: str):
    """Cancel a queued or executing run."""
    thread = thread_for_user(thread_id, current_user_id())
    return _with_poll_hint(current_engine().cancel_run(run_in_thread(thread, run_id)))
