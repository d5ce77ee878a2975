"""ChatKit's store over the registry: a ChatKit thread is a bridge thread, its user messages and
assistant replies are the thread's messages, so `/v1` and ChatKit see one conversation.

What only ChatKit has (a thread's title; items that are not messages: hidden context, client
tool calls, widgets; attachments) lives in tables of its own. Every lookup goes through the
caller's ownership, and another user's thread, item or attachment is ChatKit's NotFoundError,
like a missing one.

An attachment is one of the owner's files (see `attachments`): a user message that carries it
is a message whose `attachments` name the file for `file_search`, which puts it in the thread's
vector store, and a reply's `file_citation` annotations are ChatKit annotations of the file,
placed where the reply's citation marker stood (ChatKit shows no markers: see `citations`).

The methods are async because ChatKit's interface is; they run on the request's own loop and
use the request's registry session.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from chatkit.store import AttachmentStore, NotFoundError, Store
from chatkit.types import (Annotation, AssistantMessageContent, AssistantMessageItem, Attachment,
                           AttachmentCreateParams, ClientToolCallItem, FeedbackKind, FileAttachment,
                           FileSource, InferenceOptions, Page, ThreadItem, ThreadMetadata,
                           UserMessageItem, UserMessageTextContent)
from pydantic import TypeAdapter
from sqlalchemy import delete, func, literal, select, tuple_, union_all

from ..api.messages import files_into_thread
from ..engines import current_engine
from ..errors import Conflict, NotFound
from ..extensions import db
from ..models import (ChatKitAttachment, ChatKitFeedback, ChatKitItem, ChatKitThread, File, Message,
                      Thread, now)
from ..registry import (active_run, attachment_for_user, new_id, paginate, thread_for_user,
                        threads_of_user)
from ..schemas import ListQuery, MessageCreate, ThreadCreate
from .attachments import (DEFAULT_MIME_TYPE, attachment_fields, declare_attachment,
                          place_in_thread, remove_attachment)
from .citations import MARKER, unmarked
from .connection import Connection

_ITEM = TypeAdapter(ThreadItem)
_ATTACHMENT = TypeAdapter(Attachment)
TITLE_LIMIT = 512  # the column's size
# The files messages name: id -> the file and, for one a ChatKit front end attached, its
# attachment.
Files = dict[str, tuple[File, ChatKitAttachment | None]]


@dataclass(frozen=True)
class Caller:
    """Who a ChatKit request is for (the verified `sub` of its token), and its connection."""

    user_id: str
    connection: Connection | None = field(default=None, compare=False)


def stamp(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def owned_thread(thread_id: str, caller: Caller) -> Thread:
    try:
        return thread_for_user(thread_id, caller.user_id)
    except NotFound:
        raise NotFoundError(f"Thread {thread_id} not found") from None


def owned_attachment(attachment_id: str, caller: Caller) -> ChatKitAttachment:
    try:
        return attachment_for_user(attachment_id, caller.user_id)
    except NotFound:
        raise NotFoundError(f"Attachment {attachment_id} not found") from None


def attachment_item(attachment: ChatKitAttachment) -> Attachment:
    return _ATTACHMENT.validate_python(attachment_fields(attachment))


def _cited_ids(blocks: list[dict[str, Any]]) -> set[str]:
    return {annotation["file_citation"]["file_id"] for block in blocks
            if block.get("type") == "text"
            for annotation in block["text"].get("annotations") or ()
            if annotation.get("type") == "file_citation"}


def _named_ids(message: Message) -> set[str]:
    if message.role == "user":
        return {attachment["file_id"] for attachment in message.attachments or ()}
    return _cited_ids(message.content)


def files_named(file_ids: set[str]) -> Files:
    """The files of these ids that exist, with their ChatKit attachments."""
    if not file_ids:
        return {}
    rows = db.session.execute(
        select(File, ChatKitAttachment)
        .outerjoin(ChatKitAttachment, ChatKitAttachment.file_pk == File.pk)
        .where(File.id.in_(file_ids)))
    return {file.id: (file, attachment) for file, attachment in rows}


def assistant_content(blocks: list[dict[str, Any]], files: Files | None = None
                      ) -> AssistantMessageContent:
    """A reply's text parts as ChatKit's one content part, without citation markers: each file
    citation is an annotation at the index where its marker stood."""
    if files is None:
        files = files_named(_cited_ids(blocks))
    text, annotations = "", []
    for block in blocks:
        if block.get("type") != "text":
            continue
        cited = [annotation for annotation in block["text"].get("annotations") or ()
                 if annotation.get("type") == "file_citation"]
        value, placed = unmarked(block["text"]["value"], cited)
        for index, citation in placed:
            file_id = citation["file_citation"]["file_id"]
            # A cited file may be another user's (in the assistant's store): only its name is
            # shown, which the marker shows already, and the marker names one deleted since.
            named = files.get(file_id)
            marked = MARKER.fullmatch(citation.get("text") or "")
            filename = (named[0].filename if named is not None
                        else marked.group(3) if marked else file_id)
            annotations.append(Annotation(source=FileSource(filename=filename, title=filename),
                                          index=len(text) + index))
        text += value
    return AssistantMessageContent(text=text, annotations=annotations)


def _attachments_of(message: Message, thread: Thread, files: Files) -> list[Attachment]:
    """What ChatKit shows as a user message's attachments: its files that are still there,
    as the attachments they were sent as (one attached through /v1, as the file itself)."""
    shown = []
    for attached in message.attachments or ():
        found = files.get(attached["file_id"])
        if found is None or found[0].user_id != thread.user_id:
            continue
        file, attachment = found
        if attachment is not None:
            shown.append(FileAttachment(id=attachment.id, name=attachment.name,
                                        mime_type=attachment.mime_type, thread_id=thread.id))
        else:
            shown.append(FileAttachment(
                id=file.id, name=file.filename, thread_id=thread.id,
                mime_type=mimetypes.guess_type(file.filename)[0] or DEFAULT_MIME_TYPE))
    return shown


def message_item(message: Message, thread: Thread, files: Files | None = None) -> ThreadItem:
    """A registry message as ChatKit shows it (`files`: those it names, when already looked
    up)."""
    if files is None:
        files = files_named(_named_ids(message))
    if message.role == "user":
        text = "".join(block["text"]["value"] for block in message.content
                       if block.get("type") == "text")
        return UserMessageItem(id=message.id, thread_id=thread.id,
                               created_at=stamp(message.created_at),
                               content=[UserMessageTextContent(text=text)],
                               attachments=_attachments_of(message, thread, files),
                               inference_options=InferenceOptions())
    return AssistantMessageItem(id=message.id, thread_id=thread.id,
                                created_at=stamp(message.created_at),
                                content=[assistant_content(message.content, files)])


def user_text(item: UserMessageItem) -> str:
    """What a user message says, its tags as their text."""
    return "".join(part.text for part in item.content)


def client_tool_calls(thread: Thread) -> list[ClientToolCallItem]:
    """The thread's client tool calls, oldest first."""
    rows = db.session.scalars(select(ChatKitItem.item).where(
        ChatKitItem.thread_pk == thread.pk, ChatKitItem.type == "client_tool_call")
        .order_by(ChatKitItem.pk))
    return [ClientToolCallItem.model_validate(row) for row in rows]


def item_in_thread(thread: Thread, item_id: str) -> ThreadItem | None:
    """One item of an already-authorised thread: a message, or one of ChatKit's own."""
    message = db.session.scalar(select(Message).where(Message.thread_pk == thread.pk,
                                                      Message.id == item_id))
    if message is not None:
        return message_item(message, thread)
    row = db.session.scalar(select(ChatKitItem.item).where(ChatKitItem.thread_pk == thread.pk,
                                                           ChatKitItem.id == item_id))
    return None if row is None else _ITEM.validate_python(row)


def run_has_replies(thread: Thread, run_id: str) -> bool:
    """Whether the thread holds an assistant message the run wrote."""
    return db.session.scalar(select(Message.pk).where(
        Message.thread_pk == thread.pk, Message.run_id == run_id,
        Message.role == "assistant").limit(1)) is not None


def give_up_client_tool_calls(thread: Thread) -> None:
    """The user wrote instead of letting the front end answer: the run waiting for it ends
    (a thread takes no message while a run is active) and its calls are no longer pending."""
    run = active_run(thread)
    if run is not None and run.status == "requires_action":
        current_engine().cancel_run(run)
    db.session.execute(delete(ChatKitItem).where(
        ChatKitItem.thread_pk == thread.pk, ChatKitItem.type == "client_tool_call",
        ChatKitItem.item["status"].as_string() == "pending"))
    db.session.commit()


def _item_keys(thread: Thread):
    """Where each of the thread's items stands, messages and ChatKit's own in one order: the
    messages in the order /v1 lists them, each ChatKit item right after the message it follows."""
    messages = select(Message.pk.label("at"), literal(0).label("kind"), Message.pk.label("pk"),
                      Message.id.label("id")).where(Message.thread_pk == thread.pk)
    extras = select(ChatKitItem.follows_message_pk, literal(1), ChatKitItem.pk, ChatKitItem.id
                    ).where(ChatKitItem.thread_pk == thread.pk)
    return union_all(messages, extras).subquery()


def _items_at(thread: Thread, positions: list[tuple[int, int]]) -> list[ThreadItem]:
    """The items at (kind, pk) positions, in that order."""
    wanted = {kind: [pk for k, pk in positions if k == kind] for kind in (0, 1)}
    rows = list(db.session.scalars(select(Message).where(Message.pk.in_(wanted[0])))
                ) if wanted[0] else []
    files = files_named(set().union(*(_named_ids(row) for row in rows)))
    messages = {row.pk: message_item(row, thread, files) for row in rows}
    extras = {x.pk: _ITEM.validate_python(x.item) for x in db.session.scalars(
        select(ChatKitItem).where(ChatKitItem.pk.in_(wanted[1])))} if wanted[1] else {}
    return [(messages if kind == 0 else extras)[pk] for kind, pk in positions]


class RegistryStore(Store[Caller]):
    def generate_thread_id(self, context: Caller) -> str:
        # ChatKit names a thread before it saves it: the thread is made now, by the engine,
        # so that its id is a bridge thread's from the first event on.
        return current_engine().create_thread(context.user_id, ThreadCreate()).id

    def generate_item_id(self, item_type, thread: ThreadMetadata, context: Caller) -> str:
        # Messages get the registry's id when they are added (see add_thread_item).
        return new_id("cki")

    # ---- threads -----------------------------------------------------------------------------

    async def load_thread(self, thread_id: str, context: Caller) -> ThreadMetadata:
        thread = owned_thread(thread_id, context)
        title = db.session.scalar(select(ChatKitThread.title).where(
            ChatKitThread.thread_pk == thread.pk))
        return ThreadMetadata(id=thread.id, created_at=stamp(thread.created_at), title=title)

    async def save_thread(self, thread: ThreadMetadata, context: Caller) -> None:
        row = owned_thread(thread.id, context)
        kept = db.session.get(ChatKitThread, row.pk)
        if kept is None:
            db.session.add(ChatKitThread(thread_pk=row.pk, title=thread.title))
        else:
            kept.title = thread.title
        db.session.commit()

    async def load_threads(self, limit: int, after: str | None, order: str,
                           context: Caller) -> Page[ThreadMetadata]:
        # The same threads and cursors as GET /v1/threads.
        page = paginate(threads_of_user(context.user_id), Thread, ListQuery(limit=min(limit, 100), order=order, after=after))
        titles = dict(db.session.execute(select(ChatKitThread.thread_pk, ChatKitThread.title)
                                         .where(ChatKitThread.thread_pk.in_(
                                             [thread.pk for thread in page.items]))).all())
        data = [ThreadMetadata(id=thread.id, created_at=stamp(thread.created_at),
                               title=titles.get(thread.pk)) for thread in page.items]
        return Page(data=data, has_more=page.has_more,
                    after=data[-1].id if page.has_more and data else None)

    async def delete_thread(self, thread_id: str, context: Caller) -> None:
        current_engine().delete_thread(owned_thread(thread_id, context))

    # ---- items -------------------------------------------------------------------------------

    async def load_thread_items(self, thread_id: str, after: str | None, limit: int, order: str,
                                context: Caller) -> Page[ThreadItem]:
        thread = owned_thread(thread_id, context)
        keys = _item_keys(thread)
        position = (keys.c.at, keys.c.kind, keys.c.pk)
        query = select(*position)
        if after is not None:
            cursor = db.session.execute(select(*position).where(keys.c.id == after)).first()
            if cursor is None:
                return Page(data=[], has_more=False)
            query = query.where(tuple_(*position) < tuple_(*cursor) if order == "desc"
                                else tuple_(*position) > tuple_(*cursor))
        query = query.order_by(*(column.desc() if order == "desc" else column
                                 for column in position)).limit(limit + 1)
        found = db.session.execute(query).all()
        has_more = len(found) > limit
        page = _items_at(thread, [(kind, pk) for _, kind, pk in found[:limit]])
        return Page(data=page, has_more=has_more, after=page[-1].id if has_more else None)

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: Caller) -> None:
        thread = owned_thread(thread_id, context)
        if isinstance(item, UserMessageItem):
            give_up_client_tool_calls(thread)
            # Its attachments' files are attached for file_search, into the thread's store.
            attached = [owned_attachment(attachment.id, context).file
                        for attachment in item.attachments]
            body = MessageCreate(role="user", content=user_text(item) or " ", attachments=[
                {"file_id": file.id, "tools": [{"type": "file_search"}]}
                for file in attached if file is not None] or None)
            files_into_thread(thread, context.user_id, [body])
            message = current_engine().create_message(thread, body)
            # ChatKit sends the item it passed here in its next event: from then on it carries
            # the message's registry id, which /v1 shows too.
            item.id = message.id
            return
        if isinstance(item, AssistantMessageItem):
            if db.session.scalar(select(Message.pk).where(Message.thread_pk == thread.pk,
                                                          Message.id == item.id)) is None:
                # A reply the run did not store (a stream the client cancelled): kept as ChatKit
                # had it.
                text = "".join(part.text for part in item.content)
                message = current_engine().create_message(
                    thread, MessageCreate(role="assistant", content=text or " "))
                item.id = message.id
            return
        newest = db.session.scalar(select(func.max(Message.pk)).where(
            Message.thread_pk == thread.pk))
        db.session.add(ChatKitItem(id=item.id, thread_pk=thread.pk,
                                   created_at=int(item.created_at.timestamp()),
                                   follows_message_pk=newest or 0, type=item.type,
                                   item=item.model_dump(mode="json")))
        db.session.commit()

    async def save_item(self, thread_id: str, item: ThreadItem, context: Caller) -> None:
        thread = owned_thread(thread_id, context)
        row = db.session.scalar(select(ChatKitItem).where(ChatKitItem.thread_pk == thread.pk,
                                                          ChatKitItem.id == item.id))
        if row is None:
            await self.add_thread_item(thread_id, item, context)
            return
        row.item = item.model_dump(mode="json")
        db.session.commit()

    async def load_item(self, thread_id: str, item_id: str, context: Caller) -> ThreadItem:
        item = item_in_thread(owned_thread(thread_id, context), item_id)
        if item is None:
            raise NotFoundError(f"Item {item_id} not found")
        return item

    async def delete_thread_item(self, thread_id: str, item_id: str, context: Caller) -> None:
        thread = owned_thread(thread_id, context)
        message = db.session.scalar(select(Message).where(Message.thread_pk == thread.pk,
                                                          Message.id == item_id))
        if message is not None:
            current_engine().delete_message(message)
            return
        row = db.session.scalar(select(ChatKitItem).where(ChatKitItem.thread_pk == thread.pk,
                                                          ChatKitItem.id == item_id))
        if row is not None:
            db.session.delete(row)
            db.session.commit()

    async def save_feedback(self, thread_id: str, item_ids: list[str], kind: FeedbackKind,
                            context: Caller) -> None:
        """The user's latest feedback on each item; every item must be the thread's."""
        thread = owned_thread(thread_id, context)
        for item_id in dict.fromkeys(item_ids):
            if item_in_thread(thread, item_id) is None:
                raise NotFoundError(f"Item {item_id} not found")
        kept = {row.item_id: row for row in db.session.scalars(select(ChatKitFeedback).where(
            ChatKitFeedback.thread_pk == thread.pk, ChatKitFeedback.item_id.in_(item_ids)))}
        for item_id in dict.fromkeys(item_ids):
            row = kept.get(item_id)
            if row is None:
                db.session.add(ChatKitFeedback(thread_pk=thread.pk, item_id=item_id, kind=kind))
            else:
                row.kind, row.created_at = kind, now()
        db.session.commit()

    # ---- attachments ---------------------------------------------------------------------------

    async def save_attachment(self, attachment: Attachment, context: Caller) -> None:
        # The row was made by `attachments.create`; what ChatKit saves later is the thread of
        # the message that carries it.
        row = owned_attachment(attachment.id, context)
        if attachment.thread_id is not None:
            thread = owned_thread(attachment.thread_id, context)
            if not place_in_thread(row, thread):
                raise Conflict(f"Attachment {attachment.id} was sent with another message "
                               "meanwhile.", param="input.attachments",
                               code="attachment_already_sent")

    async def load_attachment(self, attachment_id: str, context: Caller) -> Attachment:
        return attachment_item(owned_attachment(attachment_id, context))

    async def delete_attachment(self, attachment_id: str, context: Caller) -> None:
        # RegistryAttachmentStore.delete_attachment, which ChatKit calls first, removed it.
        row = db.session.scalar(select(ChatKitAttachment).where(
            ChatKitAttachment.id == attachment_id, ChatKitAttachment.user_id == context.user_id))
        if row is not None:
            remove_attachment(row)


class RegistryAttachmentStore(AttachmentStore[Caller]):
    """ChatKit's two-phase upload onto the owner's files (see `attachments`)."""

    async def create_attachment(self, input: AttachmentCreateParams, context: Caller
                                ) -> Attachment:
        return attachment_item(declare_attachment(context.user_id, input.name, input.size,
                                                  input.mime_type))

    async def delete_attachment(self, attachment_id: str, context: Caller) -> None:
        remove_attachment(owned_attachment(attachment_id, context))
