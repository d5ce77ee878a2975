"""Files and vector stores named by threads, assistants and messages: checked against their
owner, and made where the request asks for them.

`tool_resources` may name only the caller's own files and stores (another user's id is the 404
a missing one gets), and `file_search.vector_stores` creates the store it describes, which is
then named by id, as on OpenAI. A message's attachments for `file_search` go into its thread's
vector store; a thread without one gets one, which expires a week after it was last used.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..errors import InvalidRequest, NotFound, validation_message
from ..models import File
from ..registry import file_for_user, vector_store_for_user
from ..schemas import Attachment, MessageCreate, ThreadCreate, VectorStoreCreate
from . import attach_files, create_vector_store

THREAD_STORE_EXPIRY = {"anchor": "last_active_at", "days": 7}


def checked_tool_resources(user_id: str,
                           resources: dict[str, Any] | None) -> dict[str, Any] | None:
    """`tool_resources` with every id checked as the caller's and inline stores created."""
    if not resources:
        return resources
    checked = dict(resources)
    for file_id in (resources.get("code_interpreter") or {}).get("file_ids") or ():
        file_for_user(file_id, user_id)
    search = resources.get("file_search")
    if search is not None:
        named, inline = search.get("vector_store_ids") or [], search.get("vector_stores") or []
        if named and inline:
            raise InvalidRequest("Give 'vector_store_ids' or 'vector_stores', not both: a "
                                 "thread or an assistant has one vector store.",
                                 param="tool_resources.file_search")
        for store_id in named:
            vector_store_for_user(store_id, user_id)
        if inline:
            try:
                body = VectorStoreCreate(**inline[0])
            except ValidationError as exc:  # what POST /v1/vector_stores would refuse
                message, param = validation_message(exc)
                raise InvalidRequest(message, param="tool_resources.file_search.vector_stores.0"
                                     + (f".{param}" if param else "")) from None
            store = create_vector_store(user_id, body)
            checked["file_search"] = {"vector_store_ids": [store.id]}
    return checked


def attachment_files(user_id: str, messages: list[MessageCreate]) -> list[File]:
    """The caller's files that the messages attach for `file_search`, each once (checked
    before anything is written: another user's file is a 404)."""
    files: dict[str, File] = {}
    for message in messages:
        for attachment in message.attachments or ():
            file = file_for_user(attachment.file_id, user_id)
            if _for_search(attachment):
                files.setdefault(file.id, file)
    return list(files.values())


def _for_search(attachment: Attachment) -> bool:
    return any(tool.type == "file_search" for tool in attachment.tools)


def with_attached_files(user_id: str, resources: dict[str, Any] | None,
                        files: list[File]) -> dict[str, Any] | None:
    """The thread's `tool_resources` once `files` are in its vector store (made if it has
    none); unchanged when there are no files or its store already held them."""
    if not files:
        return resources
    resources = dict(resources or {})
    search = dict(resources.get("file_search") or {})
    store_ids = search.get("vector_store_ids") or []
    if store_ids:
        try:
            attach_files(vector_store_for_user(store_ids[0], user_id), files)
            return resources
        except NotFound:
            pass  # its store was deleted since: the files go into a new one
    store = create_vector_store(user_id, VectorStoreCreate(expires_after=THREAD_STORE_EXPIRY))
    attach_files(store, files)
    search["vector_store_ids"] = [store.id]
    resources["file_search"] = search
    return resources


def prepared_thread(user_id: str, body: ThreadCreate) -> ThreadCreate:
    """A new thread's body with its tool resources checked and made, and its messages' files
    in its vector store."""
    files = attachment_files(user_id, body.messages or [])
    resources = checked_tool_resources(user_id, body.tool_resources)
    resources = with_attached_files(user_id, resources, files)
    return body.model_copy(update={"tool_resources": resources})


def thread_resources_for(user_id: str, thread, messages: list[MessageCreate]
                         ) -> dict[str, Any] | None:
    """The tool resources an existing thread needs once the messages' files are in its store,
    or None when it keeps the ones it has."""
    files = attachment_files(user_id, messages)
    if not files:
        return None
    resources = with_attached_files(user_id, thread.tool_resources, files)
    return resources if resources != thread.tool_resources else None
