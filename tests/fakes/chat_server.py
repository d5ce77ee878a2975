"""A fake OpenAI-compatible Chat Completions server that the real `openai` SDK can call over HTTP."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
REPLY_KEYS = frozenset({"content", "tool_calls", "usage", "status", "headers", "delay", "drop",
                        "finish_reason"})
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
    if body.get("stream"):
        return _error(400, "FakeChatServer does not support 'stream': true; send a non-streaming request.", "stream")
    return None


def _completion(body: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
    """Build a chat.completion object answering `body` as scripted by `reply`."""
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


class LoopbackFake:
    """Start and stop of a fake served on 127.0.0.1 by `server_class`, shared by every fake here."""

    server_class: type[_HTTPServer]

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._stopping = False
        self._httpd: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None

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


class FakeChatServer(LoopbackFake):
    """A stateful fake of an OpenAI-compatible Chat Completions server."""

    def __init__(self, api_key: str = "test-upstream-key"):
        super().__init__()
        self.server_class = _HTTPServer
        self.api_key = api_key
        self._requests: list[dict[str, Any]] = []
        self._replies: deque[dict[str, Any]] = deque()
        self._holding = False
        # Bumped by release(): a held request waits for a change, so an immediate hold() cannot re-block it.
        self._releases = 0

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

    def hold(self) -> None:
        """Block requests received from now on, after recording them, until release()."""
        with self._cond:
            self._holding = True

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

    def _answer_chat(self, path: str, headers: dict[str, str], raw: bytes) -> _Response | None:
        """Record a chat completion request and return its answer, or None to drop the connection."""
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self._cond:
            self._requests.append({"path": path, "headers": headers, "json": body})
            self._cond.notify_all()
            if self._holding:
                releases = self._releases
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
        else:
            response = _Response(200, _completion(body, reply))
        response.headers.update(headers_out)
        return response


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
        elif path == "/v1/models" and self.command == "GET":
            self._send(_Response(200, MODELS))
        else:
            self._send(_error(404, f"Unknown request URL: {self.command} {self.path}.", code="unknown_url"))

    def _send(self, response: _Response | None) -> None:
        """Write a JSON answer, or close the connection without one when given None."""
        if response is None:
            self.close_connection = True
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
