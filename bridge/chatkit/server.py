"""ChatKit's protocol served by `openai-chatkit`'s ChatKitServer, its answers runs on the engine.

The library is async and Flask serves a request on one thread, so each request drives a private
event loop of its own: the store and the engine run on it, inside the request's context (tasks
copy Flask's context variables), and a stream is the library's async iterator advanced one frame
at a time from Flask's response generator. Requests the library would fail on after its stream
has begun (a body it cannot parse, another user's thread or attachment) are answered before, in
the envelope.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import time
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Iterator

from chatkit.errors import CustomStreamError
from chatkit.server import ChatKitServer, NonStreamingResult, StreamingResult
from chatkit.store import NotFoundError
from chatkit.types import (AssistantMessageContentPartTextDelta, AssistantMessageItem,
                           AttachmentsDeleteReq, ChatKitReq, ClientToolCallItem, ErrorEvent,
                           FeedbackKind, ItemsFeedbackReq, ThreadItem, ThreadItemAddedEvent, ThreadItemDoneEvent,
                           ThreadItemUpdatedEvent, ThreadMetadata, ThreadsAddClientToolOutputReq,
                           ThreadsAddUserMessageReq, ThreadsRetryAfterItemReq, ThreadStreamEvent,
                           ThreadsUpdateReq, UserMessageItem, is_streaming_req)
from flask import Response, current_app, stream_with_context
from pydantic import TypeAdapter, ValidationError

from ..api.bodies import check_body_bounds
from ..api.streams import HEADERS, reserve_stream, run_frames
from ..engines import current_engine
from ..engines.base import EngineError
from ..errors import APIError, Conflict, InvalidRequest, NotFound
from ..models import Thread
from ..registry import (active_run, assistant_by_id, assistant_by_name, attachment_for_user,
                        release_connection, thread_for_user)
from ..schemas import MessageCreate, RunCreate, ToolOutputsSubmit
from .attachments import attachment_to_send
from .citations import MarkerFilter
from .connection import Connection
from .store import (TITLE_LIMIT, Caller, RegistryAttachmentStore, RegistryStore,
                    assistant_content, client_tool_calls, item_in_thread, owned_thread,
                    run_has_replies, stamp)

_REQUEST = TypeAdapter(ChatKitReq)
FEEDBACK_LIMIT = 100
CANCEL_WAIT_SECONDS = 10.0


class BridgeChatKitServer(ChatKitServer[Caller]):
    """Each user message is answered by a run of CHATKIT_ASSISTANT on the thread, streamed, which
    searches the thread's files (those its messages attached); the run's function calls are
    ChatKit client tool calls, answered by the front end one by one."""

    async def respond(self, thread: ThreadMetadata, input_user_message: UserMessageItem | None,
                      context: Caller) -> AsyncIterator[ThreadStreamEvent]:
        row = owned_thread(thread.id, context)
        engine = current_engine()
        try:
            if input_user_message is None:  # a client tool's output came in
                run = active_run(row)
                if run is None or run.status != "requires_action":
                    raise CustomStreamError("No answer is waiting for a client tool's output.",
                                            allow_retry=False)
                unanswered, outputs = _answers(run, row)
                if unanswered:  # the run asked for several: the front end answers one at a time
                    yield ThreadItemDoneEvent(item=self._client_tool_call(unanswered[0], thread,
                                                                          context))
                    return
                run = engine.submit_tool_outputs(run, ToolOutputsSubmit(tool_outputs=outputs,
                                                                        stream=True))
                frames = run_frames(run, resumed=True)
            else:
                assistant = answering_assistant()
                run = engine.create_run(row, assistant, RunCreate(
                    assistant_id=assistant.id, stream=True, tools=searching_tools(assistant, row)))
                frames = run_frames(run)
            texts: dict[str, MarkerFilter] = {}  # each reply's, by message id
            for name, data in _events(frames):
                if context.connection is not None and context.connection.gone():
                    raise asyncio.CancelledError  # ChatKit's own cancellation path takes over
                if name == "thread.run.requires_action":
                    call = data["required_action"]["submit_tool_outputs"]["tool_calls"][0]
                    yield ThreadItemDoneEvent(item=self._client_tool_call(call, thread, context))
                    continue
                event = _chatkit_event(name, data, thread.id, texts)
                if event is not None:
                    yield event
        except (APIError, EngineError) as exc:
            message = exc.message if isinstance(exc, APIError) else exc.public_message
            raise CustomStreamError(message, allow_retry=True) from None

    async def process_parsed(self, request: ChatKitReq, context: Caller
                             ) -> StreamingResult | NonStreamingResult:
        """`process` for a request already parsed and checked: the library's own parses the body
        again with a TypeAdapter it builds on every call (~3 ms of CPU a request). Its routing
        is the same two calls; the package is pinned to the 1.6 series they belong to."""
        if is_streaming_req(request):
            return StreamingResult(self._process_streaming(request, context))
        return NonStreamingResult(await self._process_non_streaming(request, context))

    def _client_tool_call(self, call: dict[str, Any], thread: ThreadMetadata,
                          context: Caller) -> ClientToolCallItem:
        """A run's function call as the client tool call the front end answers."""
        function = call["function"]
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):  # ChatKit takes an object; keep what the model said
            arguments = {"arguments": function.get("arguments")}
        return ClientToolCallItem(
            id=self.store.generate_item_id("client_tool_call", thread, context),
            thread_id=thread.id, created_at=datetime.now(timezone.utc), call_id=call["id"],
            name=function["name"], arguments=arguments)

    async def handle_stream_cancelled(self, thread: ThreadMetadata,
                                      pending_items: list[ThreadItem], context: Caller):
        # The front end stopped the answer: stop the run too, then keep what was shown of it
        # (the library adds it to the thread, which takes messages once the run has ended).
        row = owned_thread(thread.id, context)
        run = active_run(row)
        if run is not None:
            engine = current_engine()
            try:
                run = engine.cancel_run(run)
            except (APIError, EngineError):
                pass  # it ended meanwhile
            run = await _ended(run, engine)
            if run_has_replies(row, run.id):
                # The engine kept the run's own partial reply (an upstream may): that one stays.
                pending_items = [item for item in pending_items
                                 if not isinstance(item, AssistantMessageItem)]
        await super().handle_stream_cancelled(thread, pending_items, context)

    async def add_feedback(self, thread_id: str, item_ids: list[str], feedback: FeedbackKind,
                           context: Caller) -> None:
        await self.store.save_feedback(thread_id, item_ids, feedback, context)


async def _ended(run, engine, seconds: float = CANCEL_WAIT_SECONDS):
    """Wait for a cancelled run to end: an engine stops it when the model next says something."""
    deadline = time.monotonic() + seconds
    while run.is_active and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        release_connection()  # and see what the run's executor has written since
        run = engine.refresh_run(run)
    return run


def _answers(run, thread: Thread) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The run's tool calls the front end has not answered yet, and the outputs of those it has."""
    calls = run.required_action["submit_tool_outputs"]["tool_calls"]
    answered = {item.call_id: item.output for item in client_tool_calls(thread)
                if item.status == "completed"}
    unanswered = [call for call in calls if call["id"] not in answered]
    outputs = [{"tool_call_id": call["id"], "output": _output_text(answered[call["id"]])}
               for call in calls if call["id"] in answered]
    return unanswered, outputs


def _output_text(result: Any) -> str:
    """A client tool's result as a tool output: text as it is, anything else as JSON."""
    return result if isinstance(result, str) else json.dumps(result)


def answering_assistant():
    """The assistant named by CHATKIT_ASSISTANT (an id, else a name), looked up now; without
    it, the bridge's default assistant (ASSISTANT_ID, which `flask setup-assistant` writes)."""
    settings = current_app.config["BRIDGE_SETTINGS"]
    wanted = settings.CHATKIT_ASSISTANT or settings.ASSISTANT_ID
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


def searching_tools(assistant, thread: Thread) -> list[dict[str, Any]] | None:
    """The tools of a run on a thread with a vector store (the files attached to its messages
    are there): the assistant's, with `file_search` if it lacks it; None keeps the assistant's."""
    tools = list(assistant.tools or [])
    stores = ((thread.tool_resources or {}).get("file_search") or {}).get("vector_store_ids")
    if not stores or any(tool.get("type") == "file_search" for tool in tools):
        return None
    return [*tools, {"type": "file_search"}]


def _events(frames: Iterator[bytes]) -> Iterator[tuple[str, Any]]:
    """A run's stream frames as (event name, data); a ping (an SSE comment) as ("ping", None),
    so that a quiet run still looks at its client; `done` left out."""
    for frame in frames:
        name = data = None
        for line in frame.decode().split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if name is None:
            yield "ping", None
        elif name != "done" and data is not None:
            yield name, json.loads(data)


def _chatkit_event(name: str, data: dict[str, Any], thread_id: str,
                   texts: dict[str, MarkerFilter]) -> ThreadStreamEvent | None:
    """What a run's event is to ChatKit: its reply as an assistant message, as it is written
    (its text through `texts`, each message's marker filter)."""
    if name == "thread.message.created":
        return ThreadItemAddedEvent(item=AssistantMessageItem(
            id=data["id"], thread_id=thread_id, created_at=stamp(data["created_at"]), content=[]))
    if name == "thread.message.delta":
        text = texts.setdefault(data["id"], MarkerFilter()).feed("".join(
            part["text"]["value"] for part in data["delta"].get("content") or ()
            if part.get("type") == "text"))
        if not text:
            return None
        return ThreadItemUpdatedEvent(item_id=data["id"], update=(
            AssistantMessageContentPartTextDelta(content_index=0, delta=text)))
    if name in ("thread.message.completed", "thread.message.incomplete"):
        return ThreadItemDoneEvent(item=AssistantMessageItem(
            id=data["id"], thread_id=thread_id, created_at=stamp(data["created_at"]),
            content=[assistant_content(data["content"])]))
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
    refuse_unserved(request)
    check_input(request)
    thread_id = getattr(request.params, "thread_id", None)
    if thread_id is not None:
        # Another user's thread is a 404 before anything; so is a request the thread's state
        # cannot take, which the library would only find out inside its stream.
        check_request(request, thread_for_user(thread_id, user_id))
    check_attachments(request, user_id)
    server = _server()
    caller = Caller(user_id, Connection.of_request())
    loop = _RequestLoop()
    try:
        result = loop.run(server.process_parsed(request, caller))
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
    response = Response(stream_with_context(_frames(loop, result.__aiter__(), caller.connection)),
                        mimetype="text/event-stream", headers=HEADERS)
    response.call_on_close(slots.give_back)
    return response


# What ChatKit's protocol has and the bridge does not serve (yet): the widgets' actions, voice
# input and structured input (it makes no widgets or forms).
_UNSERVED = {"threads.custom_action": "widget actions", "threads.sync_custom_action":
             "widget actions", "threads.add_structured_input": "structured input",
             "input.transcribe": "voice input"}
# As many as a /v1 message may carry.
ATTACHMENT_LIMIT = 20


def check_input(request: Any) -> None:
    """A user message must be one the thread can take, as a message posted to /v1 must."""
    content = getattr(request.params, "input", None)
    if content is None:
        return
    try:
        MessageCreate(role="user", content="".join(part.text for part in content.content) or " ")
    except ValidationError as exc:
        raise InvalidRequest(f"The message cannot be kept: {exc.errors()[0]['msg']}.",
                             param="input.content", code="invalid_chatkit_request") from None


def refuse_unserved(request: Any) -> None:
    """Refuse, in the envelope, a request for what this bridge does not serve."""
    unserved = _UNSERVED.get(request.type)
    if unserved is not None:
        raise InvalidRequest(f"This bridge does not serve ChatKit {unserved} yet.", param="type",
                             code="unsupported_chatkit_request")


def check_attachments(request: Any, user_id: str) -> None:
    """The attachments a request names must be the caller's (404 otherwise), and those of a
    user message uploaded and not sent with another message yet: the library would only find
    out inside its stream."""
    if isinstance(request, AttachmentsDeleteReq):
        attachment_for_user(request.params.attachment_id, user_id)
        return
    content = getattr(request.params, "input", None)
    named = getattr(content, "attachments", None) or []
    if len(named) > ATTACHMENT_LIMIT:
        raise InvalidRequest(f"A message carries at most {ATTACHMENT_LIMIT} attachments.",
                             param="input.attachments", code="invalid_chatkit_request")
    if len(set(named)) < len(named):
        raise InvalidRequest("The message names one attachment twice.",
                             param="input.attachments", code="invalid_chatkit_request")
    for attachment_id in named:
        attachment_to_send(attachment_id, user_id)


def check_request(request: Any, thread: Thread) -> None:
    """Refuse, in the envelope, what the thread as it is now cannot take."""
    if isinstance(request, ThreadsUpdateReq) and len(request.params.title) > TITLE_LIMIT:
        raise InvalidRequest(f"A title has at most {TITLE_LIMIT} characters.", param="title",
                             code="invalid_chatkit_request")
    if isinstance(request, ItemsFeedbackReq) and len(request.params.item_ids) > FEEDBACK_LIMIT:
        raise InvalidRequest(f"Feedback names at most {FEEDBACK_LIMIT} items at once.",
                             param="item_ids", code="invalid_chatkit_request")
    if isinstance(request, ThreadsRetryAfterItemReq):
        item = item_in_thread(thread, request.params.item_id)
        if item is None:
            raise NotFound(f"No item with id '{request.params.item_id}' in {thread.id}.",
                           param="item_id")
        if not isinstance(item, UserMessageItem):
            raise InvalidRequest("Only an answer to a user message can be retried: name the "
                                 "user message.", param="item_id", code="invalid_chatkit_request")
    run = active_run(thread)
    if isinstance(request, ThreadsAddClientToolOutputReq):
        pending = [item for item in client_tool_calls(thread) if item.status == "pending"]
        if run is None or run.status != "requires_action" or not pending:
            raise Conflict(f"No client tool call of {thread.id} is waiting for its output.",
                           param="thread_id", code="no_pending_client_tool_call")
        try:
            ToolOutputsSubmit(tool_outputs=[{"tool_call_id": pending[0].call_id,
                                             "output": _output_text(request.params.result)}])
        except ValidationError as exc:
            raise InvalidRequest(f"The client tool's result cannot be a tool output: "
                                 f"{exc.errors()[0]['msg']}.", param="result",
                                 code="invalid_chatkit_request") from None
    elif (isinstance(request, (ThreadsAddUserMessageReq, ThreadsRetryAfterItemReq))
          and run is not None and run.status != "requires_action"):
        # (A run waiting for a client tool is given up when the user writes instead.)
        raise Conflict(f"{thread.id} is still answering (run {run.id}); send again when it "
                       "is done.", param="thread_id", code="thread_locked")


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


def _frames(loop: _RequestLoop, stream, connection: Connection) -> Iterator[bytes]:
    """The library's stream, a frame at a time, on the request's loop."""
    ended = False
    try:
        while True:
            try:
                frame = loop.run(stream.__anext__())
            except (StopAsyncIteration, asyncio.CancelledError):
                ended = True
                return
            except Exception as exc:
                # The library logged it; the client gets ChatKit's own error event, which says
                # what went wrong when it is one of the bridge's answers (a thread taken by a
                # run that started meanwhile, say).
                ended = True
                event = (ErrorEvent(code="custom", message=exc.message, allow_retry=True)
                         if isinstance(exc, APIError)
                         else ErrorEvent(code="stream.error", allow_retry=True))
                yield b"data: " + event.model_dump_json().encode() + b"\n\n"
                return
            release_connection()  # a slow reader must not hold one of the pool's connections
            yield frame
    finally:
        if not ended:
            # A write failed: the client has gone. The answer goes on until it next says
            # something, sees the client gone and cancels as ChatKit does.
            connection.dropped = True
            _drain(loop, stream)
        loop.run(stream.aclose())
        loop.close()


def _drain(loop: _RequestLoop, stream) -> None:
    """Run the stream to its end, unread."""
    try:
        while True:
            loop.run(stream.__anext__())
    except (Exception, asyncio.CancelledError):  # its end, its cancellation, or its failure
        return


def _server() -> BridgeChatKitServer:
    extensions = current_app.extensions
    if "bridge.chatkit" not in extensions:
        extensions["bridge.chatkit"] = BridgeChatKitServer(RegistryStore(),
                                                           RegistryAttachmentStore())
    return extensions["bridge.chatkit"]
