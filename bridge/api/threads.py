"""Threads: create, retrieve, modify, delete, and list the caller's own."""

from flask import Blueprint

from ..auth import current_user_id, require_user
from ..engines import current_engine
from ..models import Thread
from ..registry import paginate, thread_for_user, threads_of_user
from ..retrieval import resources
from ..schemas import (DeletedObject, ListObject, ListQuery, ThreadCreate, ThreadModify,
                       ThreadObject, thread_object)
from . import endpoint
from .pages import list_object

bp = Blueprint("threads", __name__, url_prefix="/v1")
bp.before_request(require_user)
# `/threads/runs` is a route of its own (runs.py): `id` never reads that word as a thread id.
THREAD = "/threads/<id:thread_id>"


@endpoint(bp, "/threads", "POST", body=ThreadCreate, response=ThreadObject,
          summary="Create a thread, optionally with messages")
def create_thread(body: ThreadCreate):
    """Create a thread owned by the caller."""
    user_id = current_user_id()
    body = resources.prepared_thread(user_id, body)
    return thread_object(current_engine().create_thread(user_id, body))


@endpoint(bp, "/threads", "GET", query=ListQuery, response=ListObject[ThreadObject],
          summary="List the caller's threads (an extension of the Assistants API)")
def list_threads(query: ListQuery):
    """The caller's own threads, newest first by default."""
    page = paginate(threads_of_user(current_user_id()), Thread, query)
    return list_object(page, thread_object)


@endpoint(bp, THREAD, "GET", response=ThreadObject, summary="Retrieve a thread")
def get_thread(thread_id: str):
    """One of the caller's threads."""
    return thread_object(thread_for_user(thread_id, current_user_id()))


@endpoint(bp, THREAD, "POST", body=ThreadModify, response=ThreadObject,
          summary="Modify a thread's metadata")
def modify_thread(thread_id: str, body: ThreadModify):
    """Replace metadata or tool resources of one of the caller's threads."""
    user_id = current_user_id()
    thread = thread_for_user(thread_id, user_id)
    if body.tool_resources is not None:
        body = body.model_copy(update={"tool_resources": resources.checked_tool_resources(
            user_id, body.tool_resources)})
    return thread_object(current_engine().modify_thread(thread, body))


@endpoint(bp, THREAD, "DELETE", response=DeletedObject, summary="Delete a thread")
def delete_thread(thread_id: str):
    """Delete one of the caller's threads with its messages and runs."""
    thread = thread_for_user(thread_id, current_user_id())
    current_engine().delete_thread(thread)
    return DeletedObject(id=thread_id, object="thread.deleted")
