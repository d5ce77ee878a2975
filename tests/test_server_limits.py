"""Everything the served process answers is the error envelope, the HTTP server's own refusals too.

gunicorn runs with gunicorn.conf.py, as `make run` serves (one worker, the offline engine), and
every row of CASES goes to it as raw bytes over a socket, so no client library normalises or
refuses it first. The rows are classes of bad requests: oversized tokens, headers and request
targets (which the app refuses, under gunicorn's limits), and beyond gunicorn's limits a larger
header, a longer request line, too many headers, malformed request lines and framing (which
gunicorn refuses, through bridge/serving.py; a malformed chunked body only shows while the app
reads it); then `//` in a path, a method a path does not serve, and a tab in `Idempotency-Key`.
Each row states the status and `code` it must get and who must answer: the app (its answers carry
`x-request-id`) or gunicorn (they close the connection). Every answer must be JSON with exactly
the four envelope fields and no HTML anywhere, and the server's log must hold no traceback.
"""

from __future__ import annotations

import json
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))  # bench/soak.py imports worker_models from beside it
import soak  # noqa: E402  (its gunicorn helpers: start with the config, wait for /readyz, stop)

ENVELOPE_FIELDS = {"message", "type", "param", "code"}
TOKEN = b"<token>"  # replaced by a valid token of alice's when a row is sent
KIB = 1024
MAX_MESSAGE_CHARS = 400  # no answer quotes the (huge) input back whole


def http(method: str = "GET", target: str = "/v1/threads", *headers: str, body: bytes = b"",
         authorization: str | None = None, chunked: bool = False) -> bytes:
    """A request as raw bytes: alice's token unless `authorization` replaces it; a body has a
    Content-Length unless it is `chunked` (and then sent as given)."""
    auth = authorization if authorization is not None else "Bearer " + TOKEN.decode()
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: {auth}",
             *headers, "Connection: close"]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    status: int
    code: str | None
    by: str  # "app" or "gunicorn"
    param: str | None = None


CASES = [
    # tokens: the app's 401, however large, up to gunicorn's field limit
    Case("9 KiB Authorization", http(authorization="Bearer " + "t" * 9 * KIB),
         401, "invalid_token", "app"),
    Case("64 KiB Authorization", http(authorization="Bearer " + "t" * 64 * KIB),
         401, "invalid_token", "app"),
    # headers
    Case("9 KiB header", http("GET", "/v1/threads", "X-Padding: " + "h" * 9 * KIB),
         431, "header_too_large", "app", "X-Padding"),
    Case("100 KiB header", http("GET", "/v1/threads", "X-Padding: " + "h" * 100 * KIB),
         431, "header_too_large", "app", "X-Padding"),
    Case("1 MiB header", http("GET", "/v1/threads", "X-Padding: " + "h" * 1024 * KIB),
         431, "header_too_large", "gunicorn"),
    Case("more headers than the limit",
         http("GET", "/v1/threads", *(f"X-Extra-{i}: x" for i in range(70))),
         431, "too_many_headers", "gunicorn"),
    # request targets and lines
    Case("5 KiB request target", http("GET", "/v1/threads?pad=" + "a" * 5 * KIB),
         414, "uri_too_long", "app"),
    Case("10 KiB request line", http("GET", "/v1/threads?pad=" + "a" * 10 * KIB),
         414, "uri_too_long", "gunicorn"),
    Case("malformed request line", b"GARBAGE\r\nHost: 127.0.0.1\r\n\r\n",
         400, "malformed_request", "gunicorn"),
    Case("7 KiB malformed request line (not quoted back whole)",
         b"GARBAGE" + b"x" * 7 * KIB + b"\r\nHost: 127.0.0.1\r\n\r\n",
         400, "malformed_request", "gunicorn"),
    Case("unknown HTTP version", b"GET /v1/threads HTTP/7.1\r\nHost: 127.0.0.1\r\n\r\n",
         400, "malformed_request", "gunicorn"),
    Case("invalid method", b"G(T /v1/threads HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
         400, "malformed_request", "gunicorn"),
    Case("header without a colon", http("GET", "/v1/threads", "no colon here"),
         400, "malformed_request", "gunicorn"),
    # framing
    Case("Content-Length not a number", http("POST", "/v1/threads", "Content-Length: ten"),
         400, "malformed_request", "gunicorn"),
    Case("two Content-Lengths", http("POST", "/v1/threads", "Content-Length: 2",
                                     body=b"{}"), 400, "malformed_request", "gunicorn"),
    Case("unsupported transfer coding", http("POST", "/v1/threads", "Transfer-Encoding: zstd"),
         501, "not_implemented", "gunicorn"),
    Case("unknown expectation", http("POST", "/v1/threads", "Expect: 200-ok", body=b"{}"),
         417, "expectation_failed", "gunicorn"),
    Case("malformed chunked body", http("POST", "/v1/threads", "Content-Type: application/json",
                                        body=b"zz\r\n{}\r\n0\r\n\r\n", chunked=True),
         400, "malformed_request", "app"),
    # routing
    Case("// in a path", http("GET", "/v1/threads//messages"), 404, None, "app"),
    Case("a method the path does not serve", http("GET", "/v1/threads/runs"), 405, None, "app"),
    # the Idempotency-Key rule of /openapi.json
    Case("tab in Idempotency-Key", http("POST", "/v1/threads", "Idempotency-Key: a\tb",
                                        "Content-Type: application/json", body=b"{}"),
         400, None, "app", "Idempotency-Key"),
]


@dataclass
class Reply:
    raw: bytes
    status: int
    headers: dict[str, str]
    body: bytes


def exchange(port: int, raw: bytes, timeout: float = 15.0) -> Reply:
    """Send `raw` on a fresh connection and read the answer until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it was all read: the answer may be there all the same
        chunks = []
        while True:
            try:
                chunk = sock.recv(64 * KIB)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 "), data[:300]
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(data, int(status_line.split()[1]), headers, body)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """gunicorn -c gunicorn.conf.py wsgi:app on a fresh SQLite registry, one worker."""
    executable = soak.gunicorn_executable()
    if executable is None:
        pytest.skip("gunicorn is not installed next to this Python nor on PATH")
    folder = tmp_path_factory.mktemp("server-limits")
    env = {
        "DATABASE_URL": f"sqlite:///{folder / 'registry.db'}", "AUTO_MIGRATE": "true",
        "JWT_SECRET_KEY": soak.JWT_SECRET, "JWT_ALGORITHM": "HS256",
        # Set (even empty) so that a .env file cannot change them.
        "JWT_AUDIENCE": "", "JWT_ISSUER": "", "JWT_PUBLIC_KEY": "", "REDIS_URL": "",
        "JWT_USER_CLAIM": "sub", "BRIDGE_ENGINE": "offline", "CORS_ORIGINS": "",
        "RATE_LIMIT_READS": "", "RATE_LIMIT_WRITES": "", "RATE_LIMIT_RUNS": "",
        "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "4", "LOG_LEVEL": "WARNING",
    }
    gunicorn = soak.Gunicorn(executable, env, folder / "gunicorn.log")
    gunicorn.start()
    try:
        gunicorn.wait_ready(timeout=60)
    except soak.StartFailed as exc:
        tail = gunicorn.log_tail()
        gunicorn.stop()
        pytest.skip(f"gunicorn could not start: {exc}\n{tail}")
    yield gunicorn
    gunicorn.stop()


def send(server, raw: bytes) -> Reply:
    return exchange(server.port, raw.replace(TOKEN, soak.mint_token("alice").encode()))


def test_a_plain_request_is_served(server):
    """The control row: the token and the framing the cases use are good."""
    reply = send(server, http("GET", "/v1/threads"))

    assert reply.status == 200, reply.raw[:500]
    assert json.loads(reply.body)["object"] == "list"


def test_a_chunked_body_is_served(server):
    """The control of the malformed chunked body: the same request, framed right."""
    reply = send(server, http("POST", "/v1/threads", "Content-Type: application/json",
                              body=b"2\r\n{}\r\n0\r\n\r\n", chunked=True))

    assert reply.status == 200, reply.raw[:500]
    assert json.loads(reply.body)["object"] == "thread"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_every_refusal_is_the_envelope(server, case):
    reply = send(server, case.raw)

    assert reply.status == case.status, reply.raw[:500]
    assert b"<html" not in reply.raw.lower(), reply.raw[:500]
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.headers
    body = json.loads(reply.body)
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == ENVELOPE_FIELDS
    assert error["type"] == ("server_error" if case.status >= 500 else "invalid_request_error")
    assert (error["code"], error["param"]) == (case.code, case.param)
    assert isinstance(error["message"], str) and 0 < len(error["message"]) < MAX_MESSAGE_CHARS
    if case.by == "app":
        assert reply.headers.get("x-request-id"), "the app answers with its request id"
    else:
        assert "x-request-id" not in reply.headers, "gunicorn answered, not the app"
        assert reply.headers.get("connection") == "close"
    assert "Traceback" not in server.log_text(), server.log_tail()


def test_allow_names_what_the_path_serves(server):
    options = send(server, http("OPTIONS", "/v1/threads/runs"))
    refused = send(server, http("DELETE", "/v1/threads/runs"))

    assert options.status == 200 and b"<html" not in options.raw.lower()
    for reply in (options, refused):
        assert {m.strip() for m in reply.headers["allow"].split(",")} == {"POST", "OPTIONS"}


@pytest.mark.parametrize("target", ["/v1/threads//messages", "/v1//threads", "/v1/threads/",
                                    "/v1/threads/runs/", "/v1//threads/runs"])
def test_extra_slashes_are_a_404_not_a_redirect(server, target):
    reply = send(server, http("GET", target))

    assert reply.status == 404, (target, reply.headers.get("location"), reply.raw[:300])
    assert json.loads(reply.body)["error"]["message"] == "Not found."


@pytest.mark.parametrize("status, reason", [
    (400, "Bad Request"), (403, "Forbidden"), (414, "URI Too Long"), (417, "Expectation Failed"),
    (431, "Request Header Fields Too Large"), (500, "Internal Server Error"),
    (501, "Not Implemented"), (418, "I'm a teapot")])
def test_every_status_gunicorn_writes_is_an_envelope(status, reason):
    """Statuses no raw request above reaches (a proxy or TLS refusal, gunicorn's own failure)."""
    from bridge.serving import MAX_DETAIL_CHARS, error_body

    body = error_body(status, reason, "detail " + "x" * 10 * KIB)

    error = body["error"]
    assert set(body) == {"error"} and set(error) == ENVELOPE_FIELDS
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    assert len(error["message"]) < MAX_DETAIL_CHARS + 100
    if status == 500:
        assert "detail" not in error["message"]  # gunicorn's failure is for its log
    if status == 418:
        assert error["message"].startswith(reason) and error["code"] is None
