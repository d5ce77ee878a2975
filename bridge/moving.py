"""Moving threads to another engine's home, keeping our ids: what `flask migrate-threads` does.

A deployment that changes provider (say from an Assistants server to OpenAI Conversations)
moves its threads with it, and clients keep using the same thread and message ids:

- A thread is copied while it stays where it is: an empty conversation (or thread) is made at
  the target with the thread's metadata, owner stamp included, and the registry's mirror of its
  messages is appended to it, in order, with role and text.
- Progress is recorded in a `ThreadMove` row, committed before anything is made upstream, with
  the container's id as soon as it exists and the copied messages after each batch: a move that
  was interrupted resumes where it stopped, and never makes a second conversation (except when
  its creating call timed out and the upstream did create it: its id was never seen).
- A move can stop after the upstream took a batch and before the batch was recorded (killed, or
  a call that timed out after the upstream made the copies). On resume, the target's messages
  that no record names are compared with the next messages to copy, in order: those that match
  (role and text) are recorded as their copies, the others are deleted. Each message ends with
  exactly one copy, in order.
- The switch is one commit: the thread's home and upstream id, each message's upstream id, and
  the end of the move row. Until then the source engine keeps the thread; after it, the target.
- Threads with an active run are left alone (reported as skipped); finished runs and their
  steps stay as they are, served from the registry.
- Moving to the registry (`local`) copies nothing: the messages are there already, and so are
  the thread's files and vector stores. Moving to a provider copies the vector stores the thread
  names, with their files, to it before the switch (runs there search with its file_search).
- The source's upstream object is deleted only when asked (`delete_source`), after the switch,
  and a failure to delete it does not undo the move.

Both the source and the target engine are built from this app's settings (one API key and base
URL), so deleting the source works when both homes are at the same provider.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from flask import Flask, current_app
from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from .engines import build_named_engine
from .engines.base import EngineError, UpstreamNotFound
from .engines.remote import UpstreamEngine, UpstreamMessage, best_effort
from .extensions import db
from .models import ACTIVE_RUN_STATUSES, Message, Run, RunStep, Thread, ThreadMove
from .schemas import RESERVED_METADATA_KEY

# Engine names and homes, to the home they name.
HOME_NAMES = {"offline": "local", "chat": "local", "local": "local",
              "responses": "responses", "assistants": "assistants"}
# Homes kept upstream, by the engine that keeps them.
UPSTREAM_HOMES = {"responses": "responses", "assistants": "assistants"}
# Messages copied per upstream call (a conversation takes at most 20 items per request), and
# recorded in the move row after each.
BATCH_SIZE = 20


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def home_of(name: str) -> str:
    """The home an engine name (or home) stands for."""
    try:
        return HOME_NAMES[name]
    except KeyError:
        raise ValueError(f"unknown engine or home {name!r}; use one of "
                         f"{', '.join(HOME_NAMES)}") from None


@dataclass
class Outcome:
    """What happened to one thread."""

    thread_id: str
    action: str  # "moved", "skipped" or "failed"
    source: str
    target: str
    reason: str = ""
    messages: int = 0  # messages the thread has at the target
    copied: int = 0  # of which copied by this call
    stores: int = 0  # vector stores the thread names, copied to the target's provider
    resumed: bool = False  # an earlier, interrupted move had copied some already
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False

    def line(self) -> str:
        if self.action == "skipped":
            return f"skipped {self.thread_id}: {self.reason}"
        if self.action == "failed":
            done = (f" ({_count(self.copied, 'message')} copied before the failure; run again "
                    "to resume)") if self.copied else ""
            return f"failed {self.thread_id} ({self.source} -> {self.target}): {self.reason}{done}"
        verb = "would move" if self.dry_run else "moved"
        if self.target == "local":
            detail = f"{_count(self.messages, 'message')}, kept in the registry"
        else:
            detail = f"{_count(self.copied, 'message')} {'to copy' if self.dry_run else 'copied'}"
            if self.resumed:
                detail += f", resuming: {self.messages - self.copied} copied before"
            if self.stores:
                detail += f", {_count(self.stores, 'vector store')} with its files"
        text = f"{verb} {self.thread_id} {self.source} -> {self.target} ({detail})"
        return "; ".join([text, *self.notes])


@dataclass
class Summary:
    """Counts over all threads considered."""

    moved: int = 0
    messages: int = 0
    skipped: int = 0
    failed: int = 0
    dry_run: bool = False

    def add(self, outcome: Outcome) -> None:
        if outcome.action == "moved":
            self.moved += 1
        elif outcome.action == "skipped":
            self.skipped += 1
        else:
            self.failed += 1
        self.messages += outcome.copied

    def line(self) -> str:
        if self.dry_run:
            return (f"dry run: {_count(self.moved, 'thread')} would be moved, "
                    f"{_count(self.messages, 'message')} to copy, {self.skipped} skipped, "
                    f"{self.failed} failed")
        return (f"{_count(self.moved, 'thread')} moved, {_count(self.messages, 'message')} copied, "
                f"{self.skipped} skipped, {self.failed} failed")


class _Engines:
    """Upstream engines built on first use, shut down at the end."""

    def __init__(self, app: Flask):
        self.app = app
        self.built: dict[str, UpstreamEngine] = {}

    def of(self, home: str) -> UpstreamEngine:
        if home not in self.built:
            self.built[home] = build_named_engine(self.app, UPSTREAM_HOMES[home])
        return self.built[home]

    def shutdown(self) -> None:
        for engine in self.built.values():
            engine.shutdown()


def _reason(exc: EngineError) -> str:
    return f"{exc.code}: {exc.log_detail or exc.public_message}"


def move_threads(target: str, *, source: str | None = None, user: str | None = None,
                 limit: int | None = None, dry_run: bool = False, delete_source: bool = False,
                 report: Callable[[Outcome], None] = lambda outcome: None) -> Summary:
    """Move the active threads not yet at `target` there; each outcome is reported as it happens.

    `target` and `source` are engine names or homes; `source` and `user` select threads, `limit`
    caps the threads moved or failed (skipped ones do not count). Needs an app context.
    """
    target_home = home_of(target)
    source_home = home_of(source) if source else None
    if source_home == target_home:
        raise ValueError(f"threads on '{source_home}' are there already")
    query = select(Thread.pk).where(Thread.status == "active", Thread.home != target_home)
    if source_home:
        query = query.where(Thread.home == source_home)
    if user:
        query = query.where(Thread.user_id == user)
    pks = list(db.session.scalars(query.order_by(Thread.pk)))
    summary = Summary(dry_run=dry_run)
    engines = _Engines(current_app._get_current_object())
    try:
        for pk in pks:
            if limit is not None and summary.moved + summary.failed >= limit:
                break
            thread = db.session.get(Thread, pk)
            if thread is None or thread.status != "active" or thread.home == target_home:
                continue  # deleted or moved meanwhile
            outcome = _move(thread, target_home, engines, dry_run=dry_run,
                            delete_source=delete_source)
            summary.add(outcome)
            report(outcome)
            db.session.expunge_all()  # one thread's rows at a time in memory
    finally:
        engines.shutdown()
    return summary


def _active_run(thread_pk: int) -> tuple[str, str] | None:
    """The id and status of the thread's active run, if it has one."""
    row = db.session.execute(select(Run.id, Run.status).where(
        Run.thread_pk == thread_pk, Run.status.in_(ACTIVE_RUN_STATUSES))).first()
    return tuple(row) if row else None


def _message_keys(thread_pk: int) -> list[tuple[int, str]]:
    """(pk, id) of the thread's messages, in order."""
    return [tuple(row) for row in db.session.execute(
        select(Message.pk, Message.id).where(Message.thread_pk == thread_pk).order_by(Message.pk))]


class _Refused(Exception):
    """The thread cannot be moved now, for a reason that is not the upstream's."""

    def __init__(self, action: str, reason: str):
        super().__init__(reason)
        self.action = action


def _move(thread: Thread, target: str, engines: _Engines, *, dry_run: bool,
          delete_source: bool) -> Outcome:
    # Read out first: the engines commit the session (expiring every row) before each call.
    pk, old = thread.pk, thread.upstream_id
    outcome = Outcome(thread.id, "moved", thread.home, target, dry_run=dry_run)
    active = _active_run(pk)
    if active is not None:
        outcome.action, outcome.reason = "skipped", "run {} is {}".format(*active)
        return outcome
    move = db.session.scalar(select(ThreadMove).where(ThreadMove.thread_pk == pk))
    if dry_run:
        keys = _message_keys(pk)
        done = set(move.copied) if move is not None and move.target == target else set()
        outcome.messages = len(keys)
        outcome.copied = 0 if target == "local" else sum(key not in done for _, key in keys)
        outcome.resumed = bool(done)
        if delete_source and old and outcome.source in UPSTREAM_HOMES:
            outcome.notes.append(f"would delete {old} at the source")
        return outcome
    try:
        if move is not None and move.target != target:
            # An unfinished copy to another home (always so when moving to the registry).
            _abandon(move, engines)
            move = None
        if target == "local":
            keys = _message_keys(pk)
            outcome.messages = len(keys)
            _switch(pk, outcome, None, {key: None for _, key in keys})
        else:
            _copy_and_switch(thread, move, outcome, engines.of(target))
    except EngineError as exc:
        db.session.rollback()
        outcome.action, outcome.reason = "failed", _reason(exc)
        return outcome
    except _Refused as exc:
        db.session.rollback()
        outcome.action, outcome.reason = exc.action, str(exc)
        return outcome
    if delete_source and old and outcome.source in UPSTREAM_HOMES:
        try:
            engines.of(outcome.source).discard_container(old)
            outcome.notes.append(f"deleted {old} at the source")
        except UpstreamNotFound:
            outcome.notes.append(f"{old} was already gone at the source")
        except EngineError as exc:
            outcome.notes.append(f"could not delete {old} at the source ({_reason(exc)})")
    return outcome


def _abandon(move: ThreadMove, engines: _Engines) -> None:
    """Give up an unfinished copy to another home than the one asked for now."""
    if move.upstream_id and move.target in UPSTREAM_HOMES:
        container, engine = move.upstream_id, engines.of(move.target)
        best_effort(f"delete the unfinished copy {container}",
                    lambda: engine.discard_container(container))
    db.session.delete(move)
    db.session.commit()


def _copy_and_switch(thread: Thread, move: ThreadMove | None, outcome: Outcome,
                     engine: UpstreamEngine) -> None:
    """Copy the thread to the engine's home, resuming `move`, then switch it there."""
    pk = thread.pk
    if move is None:
        move = ThreadMove(thread_pk=pk, target=engine.home, upstream_id=None, copied={})
        db.session.add(move)
        if RESERVED_METADATA_KEY not in (thread.meta or {}):
            # Threads from before the owner stamp: the copy carries it like every other.
            thread.meta = {**(thread.meta or {}), RESERVED_METADATA_KEY: thread.user_id}
        try:
            db.session.commit()
        except IntegrityError:
            raise _Refused("failed", "another move of this thread is in progress") from None
    outcome.resumed = move.upstream_id is not None
    if move.upstream_id is None:
        move.upstream_id = engine.copy_container(thread)
        db.session.commit()
    container = move.upstream_id
    if outcome.resumed:
        _adopt_unrecorded_copies(pk, move, container, engine)
    while True:
        keys = _message_keys(pk)
        pending = [message_pk for message_pk, key in keys if key not in move.copied]
        if not pending:
            break
        for start in range(0, len(pending), BATCH_SIZE):
            batch = list(db.session.scalars(select(Message).where(
                Message.pk.in_(pending[start:start + BATCH_SIZE])).order_by(Message.pk)))
            ids = [message.id for message in batch]
            upstream_ids = engine.copy_messages(container, batch)
            _record_copies(move, dict(zip(ids, upstream_ids)))
            outcome.copied += len(ids)
        # Ask again: a message may have arrived at the source while copying.
    outcome.messages = len(keys)
    # The files a thread searches go with it (the registry keeps them; the target's provider
    # gets its copies now, not at the thread's first run there).
    outcome.stores = engine.copy_vector_stores(thread)
    copies = dict(move.copied)
    current = {key for _, key in keys}
    for key in [key for key in copies if key not in current]:
        # Deleted at the source after it was copied: the copy goes too.
        upstream_id = copies.pop(key)
        db.session.commit()
        best_effort(f"delete the copy of deleted message {key}",
                    lambda: engine.discard_message(container, upstream_id))
    _switch(pk, outcome, container, copies, move)


def _record_copies(move: ThreadMove, copies: dict[str, str]) -> None:
    """Commit which upstream messages copy which of ours, so a resumed move skips them."""
    move.copied = {**move.copied, **copies}
    db.session.commit()


def _adopt_unrecorded_copies(pk: int, move: ThreadMove, container: str,
                             engine: UpstreamEngine) -> None:
    """Reconcile the move row with what the target holds, after an interruption.

    The upstream messages no record names were appended after every recorded one, by a call
    whose answer was never recorded. Walked in order against the messages still to copy, each
    that matches the next of them (role and text) becomes its copy; the others (say, copies of
    a message deleted at the source since) are deleted upstream.
    """
    recorded = set(move.copied.values())
    unrecorded = [held for held in engine.held_messages(container)
                  if held.upstream_id not in recorded]
    if not unrecorded:
        return
    pending = [message for message in db.session.scalars(
        select(Message).where(Message.thread_pk == pk).order_by(Message.pk))
        if message.id not in move.copied]
    adopted: dict[str, str] = {}
    strays: list[UpstreamMessage] = []
    for held in unrecorded:
        following = pending[len(adopted)] if len(adopted) < len(pending) else None
        copy = engine.copy_of(following) if following is not None else None
        if copy is not None and (held.role, held.text) == (copy.role, copy.content):
            adopted[following.id] = held.upstream_id
        else:
            strays.append(held)
    # Strays go before the adoptions are recorded: a stray left behind by a second interruption
    # could otherwise be taken for the copy of a later message, out of its place.
    for stray in strays:
        try:
            engine.discard_message(container, stray.upstream_id)
        except UpstreamNotFound:
            pass
    _record_copies(move, adopted)


def _switch(pk: int, outcome: Outcome, container: str | None, copies: dict[str, str | None],
            move: ThreadMove | None = None) -> None:
    """Hand the thread to its new home in one commit: home, upstream ids, end of the move."""
    # Conditional on where the thread is, and checked in the same transaction: a concurrent
    # move, or a run or message the source took meanwhile, stops this one instead.
    active = _active_run(pk)
    if active is not None:
        raise _Refused("skipped", "run {} started while copying (status {}); run again when it "
                                  "has finished".format(*active))
    taken = db.session.execute(
        update(Thread).where(Thread.pk == pk, Thread.home == outcome.source,
                             Thread.status == "active")
        .values(home=outcome.target, upstream_id=container)).rowcount
    if not taken:
        raise _Refused("failed", "the thread changed while it was copied; run again")
    arrived = db.session.scalar(select(func.count()).select_from(Message).where(
        Message.thread_pk == pk, Message.id.not_in(list(copies))))
    if arrived:
        raise _Refused("failed", "a message arrived while the thread was switched; run again")
    # The runs (all finished) and their steps were the old home's: their upstream ids mean
    # nothing at the new one. Steps name our message ids, which stay.
    db.session.execute(update(Run).where(Run.thread_pk == pk).values(upstream_id=None))
    db.session.execute(update(RunStep).where(RunStep.thread_pk == pk).values(upstream_id=None))
    if container is None:
        db.session.execute(update(Message).where(Message.thread_pk == pk).values(upstream_id=None))
    elif copies:
        messages = Message.__table__
        db.session.execute(
            update(messages).where(messages.c.thread_pk == pk, messages.c.id == bindparam("key"))
            .values(upstream_id=bindparam("copy")),
            [{"key": key, "copy": copy} for key, copy in copies.items()])
    if move is not None:
        db.session.execute(delete(ThreadMove).where(ThreadMove.pk == move.pk))
    db.session.commit()
