"""ChatKit's protocol served by `openai-chatkit`'s ChatKitServer, its answers runs on the engine.

The library is async and Flask serves a request on one thread, so each request drives a private
event loop of its own: the store and the engine run on it, inside the request's context (tasks
copy Flask's context variables), and a stream is the library's async iterator advanced one frame
at a time from Flask's response generator. Requests the library would fail on after its stream
has begun (a body it cannot parse, another user's thread) are answered before, in the envelope.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from typing import Any, AsyncIterator, Iterator

from chatkit.errors import CustomStreamError
from chatkit.server import ChatKitServer, NonStreamingResult
from chatkit.store import NotFoundError
from chatkit.types import (AssistantMessageContent, AssistantMessageContentPartTextDelta,
                           AssistantMessageItem, ChatKitReq, ErrorEvent, ThreadItemAddedEvent,
                           ThreadItemDoneEvent, ThreadItemUpdatedEvent, ThreadMetadata,
                           ThreadStreamEvent, UserMessageItem)
from flask import Response, current_app, stream_with_context
from pydantic import TypeAdapter, ValidationError

from ..api.bodies import check_body_bounds
from ..api.streams import HEADERS, reserve_stream, run_frames
from ..engines import current_engine
from ..engines.base import EngineError
from ..errors import APIError, InvalidRequest, NotFound
from ..registry import (assistant_by_id, assistant_by_name, release_connection,
                        thread_for_user)
from ..schemas import RunCreate
from .store import Caller, RegistryStore, owned_thread, stamp

_REQUEST = TypeAdapter(ChatKitReq)


class BridgeChatKitServer(ChatKitServer[Caller]):
    """Each user message is answered by a run of CHATKIT_ASSISTANT on the thread, streamed."""

    async def respond(self, thread: ThreadMetadata, input_user_message: UserMessageItem | None,
                      context: Caller) -> AsyncIterator[ThreadStreamEvent]:
        row = owned_thread(thread.id, context)
        assistant = answering_assistant()
        engine = current_engine()
        try:
            run = engine.create_run(row, assistant, RunCreate(assistant_id=assistant.id,
                                                              stream=True))
            for name, data in _events(run_frames(run)):
                event = _chatkit_event(name, data, thread.id)
                if event is not None:
                    yield event
        except (APIError, EngineError) as exc:
            message = exc.message if isinstance(exc, APIError) else exc.public_message
            raise CustomStreamError(message, allow_retry=True) from None


def answering_assistant():
    """The assistant named by CHATKIT_ASSISTANT (an id, else a name), looked up now."""
    wanted = current_app.config["BRIDGE_SETTINGS"].CHATKIT_ASSISTANT
    assistant = None
    if wanted:
        try:
            assistant = assistant_by_id(wanted)
        except NotFound:
            assistant = assistant_by_name(wanted)
    if assistant is None:
        raise CustomStreamError("No assistant answers here: set CHATKIT_ASSISTANT to an "
                                "assistant's id or name.", allow_retry=False)
    return assistant


def _events(frames: Iterator[bytes]) -> Iterator[tuple[str, Any]]:
    """A run's stream frames as (event name, data); pings and `done` left out."""
    for frame in frames:
        name = data = None
        for line in frame.decode().split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if name is not None and name != "done" and data is not None:
            yield name, json.loads(data)


def _chatkit_event(name: str, data: dict[str, Any], thread_id: str) -> ThreadStreamEvent | None:
    """What a run's event is to ChatKit: its reply as an assistant message, as it is written."""
    if name == "thread.message.created":
        return ThreadItemAddedEvent(item=AssistantMessageItem(
            id=data["id"], thread_id=thread_id, created_at=stamp(data["created_at"]), content=[]))
    if name == "thread.message.delta":
        text = "".join(part["text"]["value"] for part in data["delta"].get("content") or ()
                       if part.get("type") == "text")
        return ThreadItemUpdatedEvent(item_id=data["id"], update=(
            AssistantMessageContentPartTextDelta(content_index=0, delta=text)))
    if name in ("thread.message.completed", "thread.message.incomplete"):
        text = "".join(part["text"]["value"] for part in data["content"]
                       if part.get("type") == "text")
        return ThreadItemDoneEvent(item=AssistantMessageItem(
            id=data["id"], thread_id=thread_id, created_at=stamp(data["created_at"]),
            content=[AssistantMessageContent(text=text)]))
    if name in ("thread.run.failed", "thread.run.expired"):
        error = data.get("last_error") or {}
        raise CustomStreamError(error.get("message") or "The run failed.", allow_retry=True)
    return None


# ---- serving a request -----------------------------------------------------------------------

def serve(body: bytes, user_id: str) -> Response:
    """Answer one ChatKit request of `user_id`: JSON, or an event stream."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("Not a ChatKit request: the body is not JSON.",
                             code="invalid_chatkit_request") from None
    check_body_bounds(data)  # the same bounds as every /v1 body, before anything reads it
    try:
        request = _REQUEST.validate_python(data)
    except ValidationError as exc:
        raise InvalidRequest(f"Not a ChatKit request: {exc.errors()[0]['msg']}.",
                             code="invalid_chatkit_request") from None
    thread_id = getattr(request.params, "thread_id", None)
    if thread_id is not None:
        thread_for_user(thread_id, user_id)  # another user's thread is a 404 before anything
    server = _server()
    caller = Caller(user_id)
    loop = _RequestLoop()
    try:
        result = loop.run(server.process(body, caller))
    except NotFoundError as exc:
        loop.close()
        raise NotFound(str(exc)) from None
    except BaseException:
        loop.close()
        raise
    if isinstance(result, NonStreamingResult):
        loop.close()
        return Response(result.json, mimetype="application/json")
    slots = reserve_stream()
    response = Response(stream_with_context(_frames(loop, result.__aiter__())),
                        mimetype="text/event-stream", headers=HEADERS)
    response.call_on_close(slots.give_back)
    return response


class _RequestLoop:
    """A request's own event loop. Every step runs in one context, copied from the request's
    (Flask's context lives in context variables): what a step sets, the next one sees and may
    reset, as the library's context managers do across the frames of a stream."""

    def __init__(self):
        self._loop = asyncio.new_event_loop()
        self._context = contextvars.copy_context()

    def run(self, awaitable):
        return self._loop.run_until_complete(
            self._loop.create_task(_awaited(awaitable), context=self._context))

    def close(self) -> None:
        self._loop.close()


async def _awaited(awaitable):
    return await awaitable


def _frames(loop: _RequestLoop, stream) -> Iterator[bytes]:
    """The library's stream, a frame at a time, on the request's loop."""
    try:
        while True:
            try:
                frame = loop.run(stream.__anext__())
            except StopAsyncIteration:
                return
            except Exception:
                # The library logged it; the client gets ChatKit's own error event.
                yield b"data: " + ErrorEvent(code="stream.error", allow_retry=True
                                             ).model_dump_json().encode() + b"\n\n"
                return
            release_connection()  # a slow reader must not hold one of the pool's connections
            yield frame
    finally:
        loop.run(stream.aclose())
        loop.close()


def _server() -> BridgeChatKitServer:
    extensions = current_app.extensions
    if "bridge.chatkit" not in extensions:
        extensions["bridge.chatkit"] = BridgeChatKitServer(RegistryStore())
    return extensions["bridge.chatkit"]
