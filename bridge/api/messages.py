"""Messages of a thread."""

from functools import partial

from flask import Blueprint
from sqlalchemy import select

from ..auth import current_user_id, require_user
from ..engines import current_engine
from ..models import Message
from ..registry import message_in_thread, paginate, run_in_thread, thread_for_user
from ..retrieval import resources
from ..schemas import (DeletedObject, ListObject, MessageCreate, MessageListQuery, MessageModify,
                       MessageObject, ThreadModify, message_object)
from . import endpoint
from .pages import list_object

bp = Blueprint("messages", __name__, url_prefix="/v1")
bp.before_request(require_user)


@endpoint(bp, "/threads/<thread_id>/messages", "POST", body=MessageCreate, response=MessageObject,
          summary="Create a message")
def create_message(thread_id: str, body: MessageCreate):
    """Append a message to one of the caller's threads; its files for file_search go into the
    thread's vector store."""
    user_id = current_user_id()
    thread = thread_for_user(thread_id, user_id)
    files_into_thread(thread, user_id, [body])
    return message_object(current_engine().create_message(thread, body), thread.id)


def files_into_thread(thread, user_id: str, messages: list[MessageCreate]) -> None:
    """Put the messages' file_search attachments into the thread's vector store, making one
    (and naming it in the thread's tool resources) when the thread has none."""
    changed = resources.thread_resources_for(user_id, thread, messages)
    if changed is not None:
        current_engine().modify_thread(thread, ThreadModify(tool_resources=changed))


@endpoint(bp, "/threads/<thread_id>/messages", "GET", query=MessageListQuery,
          response=ListObject[MessageObject], summary="List messages")
def list_messages(thread_id: str, query: MessageListQuery):
    """A page of a thread's messages, optionally only those a run produced."""
    thread = thread_for_user(thread_id, current_user_id())
    current_engine().refresh_thread(thread)  # a reply that arrived upstream shows up at once
    statement = select(Message).where(Message.thread_pk == thread.pk)
    if query.run_id is not None:
        run_in_thread(thread, query.run_id)  # another user's run id is a 404 like any unknown id
        statement = statement.where(Message.run_id == query.run_id)
    page = paginate(statement, Message, query)
    return list_object(page, partial(message_object, thread_id=thread.id))


@endpoint(bp, "/threads/<thread_id>/messages/<message_id>", "GET", response=MessageObject,
          summary="Retrieve a message")
def get_message(thread_id: str, message_id: str):
    """One message of one of the caller's threads."""
    thread = thread_for_user(thread_id, current_user_id())
    return message_object(message_in_thread(thread, message_id), thread.id)


@endpoint(bp, "/threads/<thread_id>/messages/<message_id>", "POST", body=MessageModify,
          response=MessageObject, summary="Modify a message's metadata")
def modify_message(thread_id: str, message_id: str, body: MessageModify):
    """Replace a message's metadata."""
    thread = thread_for_user(thread_id, current_user_id())
    message = message_in_thread(thread, message_id)
    return message_object(current_engine().modify_message(message, body), thread.id)


@endpoint(bp, "/threads/<thread_id>/messages/<message_id>", "DELETE", response=DeletedObject,
          summary="Delete a message")
def delete_message(thread_id: str, message_id: str):
    """Delete one message of one of the caller's threads."""
    thread = thread_for_user(thread_id, current_user_id())
    current_engine().delete_message(message_in_thread(thread, message_id))
    return DeletedObject(id=message_id, object="thread.message.deleted")
