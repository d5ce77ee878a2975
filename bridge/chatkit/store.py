"""ChatKit's store over the registry: a ChatKit thread is a bridge thread, its user messages and
assistant replies are the thread's messages, so `/v1` and ChatKit see one conversation.

What only ChatKit has (a thread's title; items that are not messages: hidden context, client
tool calls, widgets) lives in tables of its own. Every lookup goes through the caller's
ownership, and another user's thread or item is ChatKit's NotFoundError, like a missing one.
The methods are async because ChatKit's interface is; they run on the request's own loop and
use the request's registry session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from chatkit.store import NotFoundError, Store
from chatkit.types import (AssistantMessageContent, AssistantMessageItem, ClientToolCallItem,
                           FeedbackKind, InferenceOptions, Page, ThreadItem, ThreadMetadata,
                           UserMessageItem, UserMessageTextContent)
from pydantic import TypeAdapter
from sqlalchemy import delete, func, literal, select, tuple_, union_all

from ..engines import current_engine
from ..errors import NotFound
from ..extensions import db
from ..models import ChatKitFeedback, ChatKitItem, ChatKitThread, Message, Thread, now
from ..registry import active_run, new_id, paginate, thread_for_user, threads_of_user
from ..schemas import ListQuery, MessageCreate, ThreadCreate
from .connection import Connection

_ITEM = TypeAdapter(ThreadItem)
TITLE_LIMIT = 512  # the column's size


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


def message_item(message: Message, thread_id: str) -> ThreadItem:
    """A registry message as ChatKit shows it."""
    text = "".join(block["text"]["value"] for block in message.content
                   if block.get("type") == "text")
    if message.role == "user":
        return UserMessageItem(id=message.id, thread_id=thread_id,
                               created_at=stamp(message.created_at),
                               content=[UserMessageTextContent(text=text)],
                               inference_options=InferenceOptions())
    return AssistantMessageItem(id=message.id, thread_id=thread_id,
                                created_at=stamp(message.created_at),
                                content=[AssistantMessageContent(text=text)])


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
        return message_item(message, thread.id)
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
    messages = {m.pk: message_item(m, thread.id) for m in db.session.scalars(
        select(Message).where(Message.pk.in_(wanted[0])))} if wanted[0] else {}
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
            message = current_engine().create_message(
                thread, MessageCreate(role="user", content=user_text(item) or " "))
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

    # ---- attachments: files are not served yet -------------------------------------------------

    async def save_attachment(self, attachment: Any, context: Caller) -> None:
        raise NotImplementedError("Attachments are not supported by this bridge yet.")

    async def load_attachment(self, attachment_id: str, context: Caller) -> Any:
        raise NotFoundError(f"Attachment {attachment_id} not found")

    async def delete_attachment(self, attachment_id: str, context: Caller) -> None:
        raise NotFoundError(f"Attachment {attachment_id} not found")
