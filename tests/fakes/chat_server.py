"""A fake OpenAI-compatible Chat Completions server that the real `openai` SDK can call over HTTP."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from .sse import LIVENESS_SECONDS, Stream, StreamAbandoned, compact, frame, pieces

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
REPLY_KEYS = frozenset({"content", "tool_calls", "usage", "status", "headers", "delay", "drop",
                        "finish_reason", "drop_after"})
MODELS = {
    "object": "list",
    "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}],
}


@dataclass
class _Response:
    """An HTTP answer: status, JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> _Response:
    """Build an error answer in the OpenAI error envelope."""
    if status == 429:
        kind, code = "requests", code or "rate_limit_exceeded"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    return _Response(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})


def _text(content: Any) -> str:
    """Return the text of a message content given as a str or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def _words(text: str | None) -> int:
    """Count whitespace-separated words."""
    return len(text.split()) if text else 0


def _normalize_reply(reply: str | dict[str, Any]) -> dict[str, Any]:
    """Validate a scripted reply and return it as a dict."""
    if isinstance(reply, str):
        return {"content": reply}
    if not isinstance(reply, dict):
        raise TypeError(f"a scripted reply must be a str or a dict, not {type(reply).__name__}")
    unknown = set(reply) - REPLY_KEYS
    if unknown:
        raise ValueError(f"unknown scripted reply keys: {sorted(unknown)}")
    status = reply.get("status")
    if status is not None and not (isinstance(status, int) and 400 <= status <= 599):
        raise ValueError(f"a scripted status must be an int error status (4xx or 5xx), not {status!r}")
    drop_after = reply.get("drop_after")
    if drop_after is not None and not (isinstance(drop_after, int) and drop_after >= 0):
        raise ValueError(f"drop_after is a number of streamed chunks, not {drop_after!r}")
    return dict(reply)


def _validate(body: Any) -> _Response | None:
    """Return a 400 answer if the chat completion request body is invalid, else None."""
    if not isinstance(body, dict):
        return _error(400, "We could not parse the JSON body of your request: expected a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _error(400, "Missing required parameter: 'model'.", "model", "missing_required_parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error(400, "'messages' must be a non-empty array.", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return _error(400, f"Invalid type for 'messages[{i}]': expected an object.", f"messages[{i}]")
        if message.get("role") not in ROLES:
            return _error(
                400,
                f"Invalid value for 'messages[{i}].role': {message.get('role')!r}. "
                f"Supported values are: {', '.join(sorted(ROLES))}.",
                f"messages[{i}].role",
            )
    stream, options = body.get("stream"), body.get("stream_options")
    if stream is not None and not isinstance(stream, bool):
        return _error(400, "Invalid type for 'stream': expected a boolean.", "stream", "invalid_type")
    if options is not None and not stream:
        return _error(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                      "stream_options", "invalid_value")
    if options is not None and not isinstance(options, dict):
        return _error(400, "Invalid type for 'stream_options': expected an object.", "stream_options",
                      "invalid_type")
    return None


_MARKER = re.compile(r"【\d+:\d+†[^】]*】")


def _searching_reply(body: dict[str, Any]) -> dict[str, Any] | None:
    """Unscripted, a model offered a `file_search` function uses it as a model would: it
    searches for the user's question, then answers from the first passage, citing its marker."""
    offered = {tool.get("function", {}).get("name") for tool in body.get("tools") or []}
    if "file_search" not in offered or body.get("tool_choice") == "none":
        return None
    messages = body["messages"]
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    results = [m for m in messages[last_user + 1:] if m["role"] == "tool"]
    if not results:
        question = _text(messages[last_user]["content"]) if last_user >= 0 else ""
        return {"tool_calls": [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                                "function": {"name": "file_search",
                                             "arguments": json.dumps({"queries": [question]})}}]}
    found = _MARKER.search(_text(results[-1]["content"]) or "")
    if found is None:
        return {"content": "The files say nothing about that."}
    passage = results[-1]["content"][found.end():].strip().split("\n")[0]
    return {"content": f"According to the files, {passage} {found.group(0)}"}


def _completion(body: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
    """Build a chat.completion object answering `body` as scripted by `reply`."""
    if not reply:
        reply = _searching_reply(body) or reply
    messages = body["messages"]
    tool_calls = reply.get("tool_calls")
    if "content" in reply:
        content = reply["content"]
    elif tool_calls:
        content = None
    else:
        last_user = next((m for m in reversed(messages) if m["role"] == "user"), {})
        content = "echo: " + _text(last_user.get("content"))
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    usage = reply.get("usage")
    if usage is None:
        prompt_tokens = sum(_words(_text(m.get("content"))) for m in messages)
        completion_tokens = _words(content)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": reply.get("finish_reason") or ("tool_calls" if tool_calls else "stop"),
                "logprobs": None,
            }
        ],
        "usage": usage,
    }


# ---- streaming ---------------------------------------------------------------------------------

def _include_usage(body: dict[str, Any]) -> bool:
    """Whether a streamed request asked for the closing usage chunk."""
    options = body.get("stream_options") or {}
    return options.get("include_usage") is True


def _chunks(completion: dict[str, Any], count: int, include_usage: bool) -> list[tuple[dict[str, Any], bool]]:
    """The chat.completion.chunk objects that stream `completion`, each with whether it carries a text piece.

    As OpenAI sends them: the role first (with the first tool call when there is no content), the content
    in pieces, each tool call's id and name then its arguments in pieces, a chunk with the finish reason,
    and, when asked for, a last chunk with the usage and no choices.
    """
    choice = completion["choices"][0]
    message = choice["message"]
    content, calls = message.get("content"), message.get("tool_calls") or []

    def chunk(delta: dict[str, Any] | None, finish_reason: str | None = None) -> dict[str, Any]:
        body = {key: completion[key] for key in ("id", "created", "model")}
        body.update(object="chat.completion.chunk", system_fingerprint=None, choices=[] if delta is None else [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}])
        if include_usage:
            body["usage"] = None
        return body

    def call_head(index: int) -> dict[str, Any]:
        call = calls[index]
        return {"index": index, "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}

    opening: dict[str, Any] = {"role": "assistant", "content": "" if content is not None else None, "refusal": None}
    if content is None and calls:
        opening["tool_calls"] = [call_head(0)]
    out = [(chunk(opening), False)]
    out += [(chunk({"content": piece}), True) for piece in pieces(content or "", count)]
    for index, call in enumerate(calls):
        if index or content is not None:
            out.append((chunk({"tool_calls": [call_head(index)]}), False))
        out += [(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}), True)
                for piece in pieces(call["function"]["arguments"], count)]
    out.append((chunk({}, choice["finish_reason"]), False))
    if include_usage:
        out.append((dict(chunk(None), usage=completion["usage"]), False))
    return out


def _chat_frames(chunks: list[tuple[dict[str, Any], bool]],
                 pause: Callable[[int], Generator[None, None, bool]]) -> Iterator[bytes | None]:
    """Frame chat chunks as OpenAI does (data only, `[DONE]` last), pausing after each text piece."""
    deltas = 0
    for chunk, is_delta in chunks:
        yield frame(compact(chunk))
        if is_delta:
            deltas += 1
            if not (yield from pause(deltas)):
                raise StreamAbandoned
    yield frame("[DONE]")


class LoopbackFake:
    """Start and stop of a fake served on 127.0.0.1 by `server_class`, shared by every fake here."""

    server_class: type[_HTTPServer]

    def __init__(self) -> None:
        # One lock guards a fake's state; conditions on it wake only the threads a change concerns.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._stopping = False
        self._httpd: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        # hold() state, read by the subclasses' own hold rules and by _stream_pause().
        self._holding = False
        # Bumped by release(): held work waits for a change, so an immediate hold() cannot re-block it.
        self._releases = 0
        self._hold_after_deltas = 0
        self._open_streams = 0

    def start(self):
        """Bind 127.0.0.1 on a free port and serve in a daemon thread."""
        name = type(self).__name__
        if self._httpd is not None:
            raise RuntimeError(f"{name} is already running")
        with self._cond:
            self._stopping = False
        self._httpd = self.server_class(self)
        self._serve_thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{name}:{self._httpd.server_port}", daemon=True)
        self._serve_thread.start()
        return self

    def stop(self) -> None:
        """Shut down, drop held or delayed requests, and join the server's and the fake's threads."""
        httpd, thread = self._httpd, self._serve_thread
        if httpd is None or thread is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            background = self._detach_background()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        thread.join()
        for worker in background:
            worker.join()
        self._httpd = self._serve_thread = None

    def _detach_background(self) -> list[threading.Thread]:
        """Threads of the fake's own to join on stop (called with the lock held)."""
        return []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The URL to pass as the SDK's base_url."""
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return f"http://127.0.0.1:{self._httpd.server_port}/v1"

    @property
    def open_streams(self) -> int:
        """How many streamed answers are being written now (a client that went away no longer counts)."""
        with self._cond:
            return self._open_streams

    def wait_for_open_streams(self, n: int, timeout: float = 5.0) -> None:
        """Block until exactly n streamed answers are being written, else raise TimeoutError."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._open_streams == n, timeout):
                raise TimeoutError(f"expected {n} open streams, got {self._open_streams}")

    def _stream_opened(self, change: int) -> None:
        """Count a stream that starts (+1) or ends (-1)."""
        with self._cond:
            self._open_streams += change
            self._cond.notify_all()

    def _stream_pause(self, deltas: int, releases: int, interval: float) -> Generator[None, None, bool]:
        """Wait `interval` after a streamed piece, and while hold(after_deltas=...) holds it.

        Yields None now and then so that the writer can see a client that went away; returns False
        when the fake stops.
        """
        deadline = time.monotonic() + interval
        while True:
            with self._cond:
                if self._stopping:
                    return False
                held = self._holding and self._releases == releases and deltas >= self._hold_after_deltas
                remaining = deadline - time.monotonic()
                if not held and remaining <= 0:
                    return True
                self._cond.wait(LIVENESS_SECONDS if held else min(remaining, LIVENESS_SECONDS))
            yield None


class FakeChatServer(LoopbackFake):
    """A stateful fake of an OpenAI-compatible Chat Completions server."""

    def __init__(self, api_key: str = "test-upstream-key", stream_chunks: int = 4, stream_interval: float = 0.0):
        super().__init__()
        self.server_class = _HTTPServer
        self.api_key = api_key
        # A streamed reply's content (and each tool call's arguments) goes out in this many pieces,
        # `stream_interval` seconds apart.
        self.stream_chunks = stream_chunks
        self.stream_interval = stream_interval
        # While True, POST /v1/embeddings answers 503.
        self.embeddings_fail = False
        self._requests: list[dict[str, Any]] = []
        self._replies: deque[dict[str, Any]] = deque()

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A snapshot of the chat completion requests received so far, in order."""
        with self._cond:
            return list(self._requests)

    def enqueue(self, *replies: str | dict[str, Any]) -> None:
        """Script the answers to the next valid requests, consumed in FIFO order when each is answered."""
        normalized = [_normalize_reply(reply) for reply in replies]
        with self._cond:
            self._replies.extend(normalized)

    def hold(self, after_deltas: int = 0) -> None:
        """Block requests received from now on, after recording them, until release().

        With `after_deltas`, streamed requests are not blocked but pause once they have sent that many
        content or argument pieces; requests that do not stream are blocked as without it.
        """
        with self._cond:
            self._holding = True
            self._hold_after_deltas = after_deltas

    def release(self) -> None:
        """Let held requests continue and stop holding new ones."""
        with self._cond:
            self._holding = False
            self._releases += 1
            self._cond.notify_all()

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> None:
        """Block until at least n requests were received, else raise TimeoutError."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(f"expected {n} chat completion requests, got {len(self._requests)}")

    def reset(self) -> None:
        """Forget requests and scripted replies, and release held requests."""
        with self._cond:
            self._requests.clear()
            self._replies.clear()
            self._holding = False
            self._releases += 1
            self._cond.notify_all()

    def _answer_embeddings(self, headers: dict[str, str], raw: bytes) -> _Response:
        """An embeddings request: recorded, then answered, or failed while `embeddings_fail`."""
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self._cond:
            self._requests.append({"path": "/v1/embeddings", "headers": headers, "json": body})
            self._cond.notify_all()
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        if self.embeddings_fail:
            return _error(503, "Scripted embeddings outage of FakeChatServer.")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _error(400, "Missing required parameter: 'model'.", "model")
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
            return _error(400, "'input' must be a string or a non-empty list of strings.", "input")
        tokens = sum(_words(text) for text in inputs)
        return _Response(200, {"object": "list", "model": body["model"], "data": [
            {"object": "embedding", "index": index, "embedding": fake_embedding(text)}
            for index, text in enumerate(inputs)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def _answer_chat(self, path: str, headers: dict[str, str], raw: bytes) -> _Response | Stream | None:
        """Record a chat completion request and return its answer, or None to drop the connection."""
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        streamed = isinstance(body, dict) and body.get("stream") is True
        with self._cond:
            self._requests.append({"path": path, "headers": headers, "json": body})
            self._cond.notify_all()
            releases = self._releases
            if self._holding and not (streamed and self._hold_after_deltas):
                self._cond.wait_for(lambda: self._stopping or self._releases != releases)
            if self._stopping:
                return None
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        invalid = _validate(body)
        if invalid is not None:
            return invalid
        with self._cond:
            reply = self._replies.popleft() if self._replies else {}
            if self._cond.wait_for(lambda: self._stopping, reply.get("delay", 0)):
                return None
        if reply.get("drop"):
            return None
        headers_out = {name: str(value) for name, value in reply.get("headers", {}).items()}
        status = reply.get("status")
        if status is not None:
            response = _error(status, f"Scripted error {status} from FakeChatServer.")
        elif streamed:
            chunks = _chunks(_completion(body, reply), self.stream_chunks, _include_usage(body))
            pause = functools.partial(self._stream_pause, releases=releases, interval=self.stream_interval)
            return Stream(_chat_frames(chunks, pause), headers_out, reply.get("drop_after"))
        else:
            response = _Response(200, _completion(body, reply))
        response.headers.update(headers_out)
        return response


# The fake's embeddings know a few synonyms, so that a test can tell meaning from shared words.
SYNONYMS = {"automobile": "car", "vehicle": "car", "motor": "engine", "upkeep": "maintenance",
            "servicing": "maintenance", "physician": "doctor", "medic": "doctor",
            "canine": "dog", "puppy": "dog", "feline": "cat", "kitten": "cat"}
EMBEDDING_DIMENSIONS = 64


def fake_embedding(text: str) -> list[float]:
    """A deterministic vector of `text`: its words (synonyms made one) hashed into buckets."""
    vector = [0.0] * EMBEDDING_DIMENSIONS
    for word in re.findall(r"[a-z]+", text.lower()):
        word = SYNONYMS.get(word, word)
        if len(word) > 2:
            bucket = int.from_bytes(hashlib.md5(word.encode()).digest()[:4], "big")
            vector[bucket % EMBEDDING_DIMENSIONS] += 1.0
    return vector


class _HTTPServer(ThreadingHTTPServer):
    """The threading HTTP server behind a FakeChatServer, tracking open connections."""

    # Soaks and benchmarks open dozens of connections at once; socketserver's backlog of 5 would
    # drop the rest of their SYNs, which the kernel retries only after a second.
    request_queue_size = 256

    def __init__(self, fake: FakeChatServer):
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._handlers: list[threading.Thread] = []
        self._connections_lock = threading.Lock()
        self._closing = False
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Handle a connection in a daemon thread that server_close() still joins."""
        # ThreadingMixIn never joins daemon threads; daemon they must stay, lest a forgotten stop() block exit.
        thread = threading.Thread(target=self.process_request_thread, args=(request, client_address), daemon=True)
        with self._connections_lock:
            self._handlers = [t for t in self._handlers if t.is_alive()]
            self._handlers.append(thread)
        thread.start()

    def server_close(self) -> None:
        """Close the listening socket and join the handler threads."""
        super().server_close()
        with self._connections_lock:
            handlers, self._handlers = self._handlers, []
        for thread in handlers:
            thread.join()

    def track(self, connection: socket.socket) -> None:
        """Register an open connection; shut it at once if the server is closing."""
        with self._connections_lock:
            self._connections.add(connection)
            if self._closing:
                _shutdown(connection)

    def untrack(self, connection: socket.socket) -> None:
        """Forget a connection before it is closed."""
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        """Shut every open connection, so that handler threads idling on keep-alive reads can end."""
        # Under the lock: a handler untracks its socket before closing it, so we never touch a closed one.
        with self._connections_lock:
            self._closing = True
            for connection in self._connections:
                _shutdown(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay silent about client disconnects; report anything else."""
        if isinstance(sys.exception(), OSError):
            return
        super().handle_error(request, client_address)


def _shutdown(connection: socket.socket) -> None:
    """Shut a socket down in both directions, ignoring one the peer already closed."""
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    """Route requests to the fake and write its answers."""

    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as two writes: without this, Nagle plus delayed ACKs add ~40 ms per answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output free of access logs."""

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _dispatch(self) -> None:
        """Answer one request by path and method."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        path = urlsplit(self.path).path.rstrip("/")
        if path == "/v1/chat/completions":
            if self.command == "POST":
                headers = {name.lower(): value for name, value in self.headers.items()}
                self._send(self.server.fake._answer_chat(self.path, headers, raw))
            else:
                self._send(_error(405, f"Method {self.command} is not allowed on {path}."))
        elif path == "/v1/embeddings" and self.command == "POST":
            headers = {name.lower(): value for name, value in self.headers.items()}
            self._send(self.server.fake._answer_embeddings(headers, raw))
        elif path == "/v1/models" and self.command == "GET":
            self._send(_Response(200, MODELS))
        else:
            self._send(_error(404, f"Unknown request URL: {self.command} {self.path}.", code="unknown_url"))

    def _send(self, response: _Response | Stream | None) -> None:
        """Write a JSON answer, or a stream, or close the connection without one when given None."""
        if response is None:
            self.close_connection = True
            return
        if isinstance(response, Stream):
            self._send_stream(response)
            return
        data = json.dumps(response.body).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_stream(self, stream: Stream) -> None:
        """Write a stream frame by frame as its frames come; a client that goes away ends it quietly."""
        fake = self.server.fake
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        for name, value in stream.headers.items():
            self.send_header(name, value)
        fake._stream_opened(+1)
        sent = 0

        def cut() -> bool:
            # A fault: the body stops short of its end, as when a connection breaks mid-stream.
            return stream.drop_after is not None and sent >= stream.drop_after

        try:
            self.end_headers()
            if cut():
                self.close_connection = True
                return
            for data in stream.frames:
                if data is None:
                    if self._peer_closed():
                        self.close_connection = True
                        return
                    continue
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                sent += 1
                if cut():
                    self.close_connection = True
                    return
            self.wfile.write(b"0\r\n\r\n")
        except (OSError, StreamAbandoned):
            self.close_connection = True
        finally:
            close = getattr(stream.frames, "close", None)
            if close is not None:
                close()
            fake._stream_opened(-1)

    def _peer_closed(self) -> bool:
        """Whether the client closed its end of the connection (a read would see end of file)."""
        try:
            return not self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False  # nothing to read: the client is there, waiting
        except OSError:
            return True
