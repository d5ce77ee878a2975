"""The engine interface the routes call, and the errors engines raise at their edge.

Two questions are kept apart: where threads live (an `Engine`) and who answers a run (a
`Responder`). Nothing here knows about HTTP requests.
"""

from __future__ import annotations

import abc
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

if TYPE_CHECKING:
    from ..schemas import (MessageCreate, MessageModify, RunCreate, RunModify, ThreadCreate,
                           ThreadModify, ToolOutputsSubmit)

log = logging.getLogger(__name__)


# ---- errors -------------------------------------------------------------------------------

class EngineError(Exception):
    """An upstream failure, already stripped of anything the client must not see."""

    status = 502
    code = "upstream_error"
    public_message = "The model provider failed to answer. Try again later."

    def __init__(self, log_detail: str = ""):
        super().__init__(log_detail or self.public_message)
        self.log_detail = log_detail


class UpstreamUnavailable(EngineError):
    status = 502
    code = "upstream_unavailable"
    public_message = "The model provider could not be reached. Try again later."


class UpstreamTimeout(EngineError):
    status = 504
    code = "upstream_timeout"
    public_message = "The model provider did not answer in time. Try again later."


class UpstreamRateLimited(EngineError):
    status = 503
    code = "upstream_rate_limited"
    public_message = "The model provider is rate limiting this service. Try again later."

    def __init__(self, log_detail: str = "", retry_after: int | None = None):
        super().__init__(log_detail)
        self.retry_after = retry_after


class UpstreamMisconfigured(EngineError):
    """The provider refused the bridge's own credentials: the operator's problem, not the user's."""

    status = 502
    code = "upstream_auth_failed"
    public_message = "The bridge is not authorised by its model provider. Contact the operator."


class UpstreamRejected(EngineError):
    """The provider refused a request as invalid (for example an unknown model)."""

    status = 502
    code = "upstream_rejected"
    public_message = "The model provider rejected the request."


class UpstreamConflict(EngineError):
    """The provider is busy with another response on the same conversation."""

    status = 409
    code = "thread_locked"
    public_message = "The thread is busy with another run. Try again when it has finished."


class UpstreamNotFound(UpstreamRejected):
    """The provider no longer knows an object the registry points at."""

    code = "upstream_not_found"
    public_message = "The model provider no longer has this object."


# ---- what a responder sees and returns ------------------------------------------------------

@dataclass(frozen=True)
class Turn:
    """One message of the conversation, flattened to text."""

    role: str
    text: str


@dataclass(frozen=True)
class ToolCall:
    """A function the model asks the client to run."""

    id: str
    name: str
    arguments: str

    def as_required_action(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class Passage:
    """A piece of a file that a file search found."""

    file_id: str
    filename: str
    score: float
    text: str


@dataclass(frozen=True)
class FileSearchCall:
    """One file search a responder ran for its model, and what it found."""

    id: str
    queries: tuple[str, ...]
    passages: tuple[Passage, ...]


@dataclass(frozen=True)
class Citation:
    """A marker in the reply's text that cites a file, such as 【0:0†notes.md】."""

    text: str
    start_index: int
    end_index: int
    file_id: str

    def as_annotation(self) -> dict[str, Any]:
        return {"type": "file_citation", "text": self.text, "start_index": self.start_index,
                "end_index": self.end_index, "file_citation": {"file_id": self.file_id}}


class FileSearcher(Protocol):
    """The run's `file_search` tool: the bridge's own search over the run's vector stores."""

    # As a run step reports them: {"ranker": ..., "score_threshold": ...}
    ranking_options: dict[str, Any]

    def __call__(self, queries: list[str]) -> tuple[Passage, ...]:
        """The best passages for the queries, best first; waits for files still ingesting."""


@dataclass(frozen=True)
class SearchRound:
    """File searches a responder ran in one model turn, with any text the model wrote first."""

    calls: tuple[FileSearchCall, ...]
    ranking_options: dict[str, Any]
    text_before: str = ""


@dataclass(frozen=True)
class RunRequest:
    """Everything a responder needs, copied out of the registry so no session is held."""

    run_id: str
    model: str
    instructions: str
    turns: tuple[Turn, ...]
    temperature: float | None = None
    top_p: float | None = None
    max_completion_tokens: int | None = None
    # Function tools in the Assistants shape: [{"type": "function", "function": {...}}]
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: Any = None
    parallel_tool_calls: bool = True
    # Tool calls already made in this run and their outputs, in Chat Completions message form.
    tool_exchange: tuple[dict[str, Any], ...] = ()
    # Set when the run offers `file_search` and has vector stores to search.
    file_search: FileSearcher | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}


@dataclass(frozen=True)
class Reply:
    text: str
    usage: Usage
    # "stop", or "length" when the token limit cut the reply short (the run is then incomplete).
    finish_reason: str = "stop"
    # When set, the run waits in `requires_action` for the client's tool outputs.
    tool_calls: tuple[ToolCall, ...] = ()
    # File searches the responder ran before it wrote the reply (each a `tool_calls` step).
    searches: tuple[SearchRound, ...] = ()
    citations: tuple[Citation, ...] = ()
    # With `tool_calls` after searches: the Chat Completions messages the run's tool exchange
    # goes on with (the searches' calls and results, then the calls the client answers).
    exchange: tuple[dict[str, Any], ...] | None = None


@dataclass
class CancelSignal:
    """Lets a responder notice, while it waits, that its run was cancelled."""

    wait: Callable[[float], bool] = field(default=lambda timeout: False)


class RunFailed(Exception):
    """A run ended in failure; `code` is one of the run's `last_error` codes."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class ReplyStream(Protocol):
    """Where a responder reports its reply as it is written, when somebody streams the run."""

    def text(self, piece: str) -> None:
        """More of the reply's text."""

    def tool_call(self, index: int, *, call_id: str | None = None, name: str | None = None,
                  arguments: str = "") -> None:
        """More of function call `index`; its id and name come with its first piece."""

    def searched(self, round: SearchRound) -> None:
        """File searches the responder ran, each finished; text reported before them ended
        a message."""


class Responder(abc.ABC):
    """Answers a run: the only thing that differs between registry-backed engines."""

    name: str

    @abc.abstractmethod
    def respond(self, request: RunRequest, cancel: CancelSignal,
                stream: ReplyStream | None = None) -> Reply:
        """Produce the assistant's reply, or raise RunFailed; with `stream`, report it there
        piece by piece as well."""

    def warm_up(self) -> None:
        """Pay one-off start-up costs (imports, first connection) before the first user does."""

    def close(self) -> None:
        """Release connections."""


class Engine(abc.ABC):
    """Where threads live, plus who answers runs on them.

    Views read through the registry (ownership, lists) and write through an engine, so an engine
    that mirrors threads upstream only has to override the writes and the run lifecycle.
    """

    name: str

    def __init__(self):
        from ..streaming.log import LocalRunLog

        # Streamed runs' events, from whoever executes them to whoever streams them.
        self.run_log = LocalRunLog()
        self.ping_seconds = 15.0
        self._sweeping = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._sweeper_lock = threading.Lock()

    @abc.abstractmethod
    def create_thread(self, user_id: str, body: "ThreadCreate"):
        """Create a thread owned by `user_id`, with its initial messages."""

    @abc.abstractmethod
    def modify_thread(self, thread, body: "ThreadModify"):
        """Replace a thread's metadata or tool resources."""

    @abc.abstractmethod
    def delete_thread(self, thread) -> None:
        """Delete a thread with its messages and runs."""

    @abc.abstractmethod
    def create_message(self, thread, body: "MessageCreate"):
        """Append a message to a thread."""

    @abc.abstractmethod
    def modify_message(self, message, body: "MessageModify"):
        """Replace a message's metadata."""

    @abc.abstractmethod
    def delete_message(self, message) -> None:
        """Delete one message."""

    @abc.abstractmethod
    def create_run(self, thread, assistant, body: "RunCreate"):
        """Queue a run on a thread and start executing it."""

    def create_thread_and_run(self, user_id: str, thread_body: "ThreadCreate", assistant,
                              run_body: "RunCreate"):
        """Create a thread and start a run on it; if the run can't start, the thread goes too.

        The client gets an error and no thread id, so a thread left behind would be lost to it.
        """
        from ..extensions import db

        thread = self.create_thread(user_id, thread_body)
        try:
            return self.create_run(thread, assistant, run_body)
        except BaseException:
            db.session.rollback()  # a failed flush leaves the session waiting for it
            try:
                self.delete_thread(thread)
            except Exception:
                log.exception("could not delete thread %s after its run failed to start", thread.id)
            raise

    @abc.abstractmethod
    def cancel_run(self, run):
        """Stop a run: at once if queued, through `cancelling` if executing."""

    @abc.abstractmethod
    def modify_run(self, run, body: "RunModify"):
        """Replace a run's metadata."""

    @abc.abstractmethod
    def submit_tool_outputs(self, run, body: "ToolOutputsSubmit"):
        """Continue a run in `requires_action` with the outputs of its tool calls."""

    def configure_streams(self, run_log, ping_seconds: float) -> None:
        """Where streamed runs' events travel, and how often an idle stream pings."""
        self.run_log, self.ping_seconds = run_log, ping_seconds

    def stream(self, run_id: str, order) -> Iterator[bytes]:
        """The frames of a streamed run after those the caller sent, in `order`, to its end.

        From the run's log, with the registry as the source of truth when the log goes quiet.
        """
        from ..streaming.follow import follow
        from ..streaming.publish import settled_events

        return follow(self.run_log, run_id, order, lambda seen: settled_events(run_id, seen),
                      ping_seconds=self.ping_seconds)

    def refresh_run(self, run):
        """Bring a run up to date before it is shown; registry-backed runs already are."""
        return run

    def refresh_thread(self, thread) -> None:
        """Bring a thread's active run up to date before its messages or runs are listed."""

    def assistant_saved(self, assistant) -> None:
        """An assistant was created or changed in the registry; upstreams that keep assistants
        are told."""

    def assistant_deleted(self, assistant) -> None:
        """An assistant was deleted from the registry."""

    def copies_deleted(self, *, files: list[str] = (), vector_stores: list[str] = ()) -> None:
        """Files or vector stores were deleted from the registry; these are the upstream ids of
        their copies at the provider, if any were made."""

    def sweep(self) -> None:
        """One pass over runs nobody is looking after (overdue, interrupted, unpolled)."""

    def start_sweeper(self, app, interval: float) -> None:
        """Sweep now and then every `interval` seconds in a daemon thread of this process."""
        if self._sweeper is not None:
            return
        with self._sweeper_lock:
            if self._sweeper is not None or self._sweeping.is_set():
                return
            self._sweeper = threading.Thread(target=self._sweep_forever, args=(app, interval),
                                             name=f"sweeper-{self.name}", daemon=True)
            self._sweeper.start()

    def _sweep_forever(self, app, interval: float) -> None:
        from ..extensions import db

        while not self._sweeping.is_set():
            try:
                with app.app_context():
                    try:
                        self.sweep()
                    finally:
                        db.session.remove()
            except Exception:
                log.exception("run sweeper: pass failed")
            self._sweeping.wait(interval)

    def stop_sweeper(self) -> None:
        self._sweeping.set()
        if self._sweeper is not None and self._sweeper is not threading.current_thread():
            self._sweeper.join(timeout=10)

    def warm_up(self) -> None:
        """Pay start-up costs when a worker starts, not on the first user's request."""

    def shutdown(self) -> None:
        """Stop background work."""

    def describe(self) -> dict[str, Any]:
        """What /readyz reports about this engine."""
        return {"engine": self.name}
