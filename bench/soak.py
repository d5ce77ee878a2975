#!/usr/bin/env python3
"""Soak: many users on a mixed workload against gunicorn with its production config, checked.

    cd /work/main && python bench/soak.py [--users 50] [--seconds 300] [--engine responses]
        [--faults] [--postgres URL] [--seed N]

It starts the fake OpenAI upstream (`tests/fakes/openai_server.py`) in this process and
`gunicorn -c gunicorn.conf.py wsgi:app` on a fresh registry (a SQLite file in a temporary folder,
or with --postgres a new database created through that URL and dropped afterwards), with rate
limits off so that the soak measures faults and not limits. An admin creates an assistant; then
--users simulated users (threads of this process, each with its own JWT and keep-alive
connection) loop for --seconds over a mixed workload: create threads (some with initial
messages), post messages, start runs (some with additional messages, some through
`POST /threads/runs`) and poll them to the end honouring `openai-poll-after-ms`, stream runs
(`"stream": true`, read to the end and then held against what polling returns: a terminal run
event and `done` last, the streamed reply the listed one under the same id; or left after a few
lines, the run then polled to its end), post into a
thread whose run is active (a 409 `thread_locked` is an expected answer), list messages, threads
and runs page by page, modify metadata, cancel runs, delete messages and threads.

Every message carries a unique marker naming its user. Every POST carries an `Idempotency-Key`
(a fresh uuid per logical operation); on 502/503/504, a 409 `idempotency_key_in_use` or a
connection error the client sends the SAME request with the SAME key again (at most
--max-attempts times, backing off, honouring `Retry-After`). Every response body is checked for
leaks: no marker, thread, message or run id of another user, and `metadata.user_id` of every
thread object is the requester.

With --faults, the fake fails a random share of the bridge's upstream calls: 10% 5xx, 5% 429
(`Retry-After: 1`) and 5% timeouts (answered after 3 s while the bridge waits OPENAI_TIMEOUT=2 s,
so they become 504s and the upstream still acts on them, as a slow provider does).

After the load stops, active runs are polled until they end (at most --settle seconds), then for
every user all threads and all messages and runs of each are listed (every page), and checked:
every accepted (2xx) message is listed exactly once, no deleted or refused one is listed, every
completed run has exactly one reply, no run is left queued, in_progress, cancelling or
requires_action, every thread created and not deleted is listed once and no deleted one.

Exit status: 0 when there were no 500s, no leaks, no broken streams, no lost, duplicated, resurrected or phantom
messages, no duplicated replies, no lost or resurrected threads and no run left active, and,
without --faults, no 5xx at all; 1 when a check failed; 2 for bad arguments; 3 when gunicorn or
the fake could not start (the reason and the log's tail are printed); 130 on Ctrl-C or SIGTERM.
Everything it starts (gunicorn's process group, the fake, the temporary folder, the database) is
stopped or removed on exit, Ctrl-C included. All traffic stays on 127.0.0.1 (and --postgres).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.fakes

import jwt  # noqa: E402  (PyJWT)

from tests.fakes.openai_server import FakeOpenAI  # noqa: E402
# The process and signal helpers of the worker-model benchmark beside this script.
from worker_models import (Interrupted, StartFailed, control_socket_args,  # noqa: E402
                           free_port)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_STARTED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

JWT_SECRET = "soak-secret-" + "x" * 40  # >= 32 bytes, so PyJWT does not warn about HS256
ASSISTANT_MODEL = "fake-model"
ENGINES = ("responses", "assistants", "chat", "offline")
TERMINAL = frozenset({"completed", "failed", "cancelled", "incomplete", "expired"})
NON_TERMINAL = frozenset({"queued", "in_progress", "cancelling", "requires_action"})
RETRY_STATUSES = frozenset({502, 503, 504})

# The fault mix of --faults (fractions of the bridge's upstream calls).
FAULT_5XX, FAULT_429, FAULT_TIMEOUT = 0.10, 0.05, 0.05
FAULT_TIMEOUT_SECONDS = 3.0       # how late an injected "timeout" is answered
OPENAI_TIMEOUT = 2.0              # the bridge gives up before that: 504
GUNICORN_TIMEOUT = 30             # above OPENAI_TIMEOUT x (1 + retries), so no worker is killed

HTTP_TIMEOUT = 45.0               # client side, per request; above GUNICORN_TIMEOUT
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 40.0               # gunicorn's graceful_timeout is 30 s
MAX_POLL_SECONDS = 60.0           # a run polled this long in the loop is left to the settle phase
MAX_BACKOFF = 5.0
LIVE_THREADS_CAP = 6              # per user; above it the workload prefers deleting threads

MARKER_RE = re.compile(r"SOAK-u(\d+)-n\d+-[0-9a-f]{8}")
ID_RE = re.compile(r"\b(?:thread|msg|run)_[A-Za-z0-9]{24}\b")
PATH_IDS = [(re.compile(r"/thread_[A-Za-z0-9]+"), "/{thread_id}"),
            (re.compile(r"/msg_[A-Za-z0-9]+"), "/{message_id}"),
            (re.compile(r"/run_[A-Za-z0-9]+"), "/{run_id}"),
            (re.compile(r"/asst_[A-Za-z0-9]+"), "/{assistant_id}")]


def mint_token(user: str, *, admin: bool = False, ttl: int = 4 * 3600) -> str:
    """An access token as `flask token` mints it; bridge/auth.py requires exp and sub."""
    now = int(time.time())
    claims = {"sub": user, "iat": now, "nbf": now, "exp": now + ttl, "jti": str(uuid.uuid4()),
              "type": "access", "fresh": False}
    if admin:
        claims["role"] = "admin"
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def route_of(method: str, path: str) -> str:
    """"GET /v1/threads/{thread_id}/messages" for a path with ids (query string dropped)."""
    path = path.split("?", 1)[0]
    for pattern, name in PATH_IDS:
        path = pattern.sub(name, path)
    return f"{method} {path}"


# ---- registry ------------------------------------------------------------------------------

class Registry:
    """A fresh registry: a SQLite file in `folder`, or a new PostgreSQL database (dropped after)."""

    def __init__(self, folder: Path, postgres: str | None):
        self.folder, self.postgres = folder, postgres
        self.created: str | None = None

    @staticmethod
    def _admin(url: str) -> str:
        for prefix in ("postgresql+psycopg://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql://" + url[len(prefix):]
        return url

    def describe(self) -> str:
        if self.postgres:
            return f"PostgreSQL at {urlsplit(self.postgres).hostname or 'local socket'} (new database)"
        return f"SQLite in {self.folder}"

    def new(self) -> str:
        if not self.postgres:
            return f"sqlite:///{self.folder / 'registry.db'}"
        import psycopg

        name = f"bridge_soak_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self._admin(self.postgres), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created = name
        return urlunsplit(urlsplit(self.postgres)._replace(path="/" + name))

    def drop(self) -> None:
        if not self.created:
            return
        import psycopg

        try:
            with psycopg.connect(self._admin(self.postgres), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.created}" WITH (FORCE)')
            self.created = None
        except psycopg.Error as exc:
            print(f"warning: could not drop database {self.created}: {exc}", file=sys.stderr)


# ---- gunicorn ------------------------------------------------------------------------------

def gunicorn_executable() -> str | None:
    beside = Path(sys.executable).parent / "gunicorn"
    if beside.exists():
        return str(beside)
    return shutil.which("gunicorn")


class Gunicorn:
    """`gunicorn -c gunicorn.conf.py wsgi:app` in its own process group, logging to a file."""

    def __init__(self, executable: str, env_overrides: dict[str, str], log_path: Path):
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.argv = [executable, "-c", "gunicorn.conf.py", *control_socket_args(), "wsgi:app"]
        env = {k: v for k, v in os.environ.items()
               if k not in ("GUNICORN_CMD_ARGS", "AUTO_MIGRATE", "WEB_CONCURRENCY",
                            "GUNICORN_THREADS")}
        env.update(env_overrides, BIND=f"127.0.0.1:{self.port}", PYTHONUNBUFFERED="1")
        self.env = env

    @property
    def command(self) -> str:
        return " ".join(["gunicorn", *self.argv[1:]])

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise StartFailed(f"gunicorn exited with status {self.proc.returncode}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                try:
                    conn.request("GET", "/readyz")
                    response = conn.getresponse()
                    response.read()
                    if response.status == 200:
                        return
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise StartFailed(f"/readyz did not answer 200 within {timeout:.0f} s")
            time.sleep(0.2)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_problems(self) -> tuple[Counter, list[str]]:
        """Counts of tracebacks, error lines and worker timeouts, and the first few lines of each."""
        counts: Counter = Counter()
        examples: list[str] = []
        lines = self.log_text().splitlines()
        # The exception each traceback ended with ("sqlite3.OperationalError: database is locked").
        in_traceback = False
        for line in lines:
            if "Traceback (most recent call last)" in line:
                in_traceback = True
            elif in_traceback and line and not line.startswith((" ", "\t")) and \
                    not line.startswith(("During handling", "The above exception")):
                counts["exception " + re.sub(r"0x[0-9a-f]+", "0x...", line)[:160]] += 1
                in_traceback = False
        for line in lines:
            kind = None
            if "WORKER TIMEOUT" in line:
                kind = "worker timeout"
            elif "Traceback (most recent call last)" in line:
                kind = "traceback"
            elif "[CRITICAL]" in line or " CRITICAL " in line:
                kind = "critical line"
            elif "[ERROR]" in line or " ERROR " in line or '"level": "ERROR"' in line:
                kind = "error line"
            if kind:
                counts[kind] += 1
                if len(examples) < 12 and kind != "traceback":
                    examples.append(line[:300])
        return counts, examples

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)  # the master stops its workers gracefully
                proc.wait(timeout=STOP_TIMEOUT)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        try:  # whatever is left in the group (a stuck master, orphaned workers) is killed
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            print(f"warning: gunicorn pid {proc.pid} did not exit", file=sys.stderr)
        self.proc = None


# ---- shared bookkeeping ----------------------------------------------------------------------

@dataclass
class Marker:
    """One message the workload tried to create."""

    user: int
    text: str
    thread_id: str | None
    # accepted: a 2xx answer; refused: a final non-2xx answer; unknown: no answer (connection
    # errors up to the last attempt), so it may or may not exist.
    outcome: str = "pending"
    message_id: str | None = None
    deleted: bool = False          # a DELETE of it answered 2xx (or 404 on a retry)
    maybe_deleted: bool = False    # a DELETE of it got no answer
    thread_deleted: bool = False
    thread_maybe_deleted: bool = False
    how: str = ""


@dataclass
class ThreadState:
    id: str
    user: int
    deleted: bool = False
    maybe_deleted: bool = False
    runs: dict[str, str] = field(default_factory=dict)  # run id -> last status seen
    markers: list[Marker] = field(default_factory=list)


class Ledger:
    """Who owns what, and what the workload believes exists; shared by all users."""

    def __init__(self):
        self.lock = threading.Lock()
        self.owner: dict[str, int] = {}       # thread/msg/run id -> user index
        self.markers: dict[str, Marker] = {}  # marker text -> Marker

    def own(self, object_id: str | None, user: int) -> None:
        if object_id:
            with self.lock:
                self.owner.setdefault(object_id, user)

    def add_marker(self, marker: Marker) -> None:
        with self.lock:
            self.markers[marker.text] = marker


@dataclass
class Stats:
    """What one user saw; merged at the end."""

    by_class: Counter = field(default_factory=Counter)       # "2xx", "4xx", "5xx", "conn"
    by_route: Counter = field(default_factory=Counter)       # (route, status) -> n
    statuses: Counter = field(default_factory=Counter)       # status -> n
    codes: Counter = field(default_factory=Counter)          # (status, error code) -> n
    leaks: list[str] = field(default_factory=list)
    retries: int = 0
    retry_reasons: Counter = field(default_factory=Counter)
    gave_up: Counter = field(default_factory=Counter)       # route -> ops that exhausted retries
    replayed: int = 0
    thread_locked: int = 0
    operations: Counter = field(default_factory=Counter)
    run_final: Counter = field(default_factory=Counter)     # status the loop saw last
    latencies: list[float] = field(default_factory=list)
    streams: Counter = field(default_factory=Counter)       # how streamed runs went
    stream_errors: list[str] = field(default_factory=list)  # streams that broke their promises

    def merge(self, other: "Stats") -> None:
        for name in ("by_class", "by_route", "statuses", "codes", "retry_reasons", "gave_up",
                     "operations", "run_final", "streams"):
            getattr(self, name).update(getattr(other, name))
        self.leaks.extend(other.leaks)
        self.stream_errors.extend(other.stream_errors)
        self.latencies.extend(other.latencies)
        self.retries += other.retries
        self.replayed += other.replayed
        self.thread_locked += other.thread_locked


@dataclass
class Answer:
    status: int | None           # None: no answer (connection error)
    headers: Any = None
    payload: Any = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and isinstance(self.payload, dict)

    @property
    def code(self) -> str | None:
        if isinstance(self.payload, dict) and isinstance(self.payload.get("error"), dict):
            return self.payload["error"].get("code")
        return None


def sse_events(raw: bytes) -> list[tuple[str, Any]]:
    """A stream's events (name, data), pings left out; a frame cut short is left out too."""
    events = []
    for frame in raw.decode("utf-8", errors="replace").split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.split("\n")
                     if line.startswith(("event: ", "data: ")))
        if "event" in lines and "data" in lines:
            data = lines["data"]
            try:
                events.append((lines["event"], data if data == "[DONE]" else json.loads(data)))
            except ValueError:
                pass  # the last, unfinished frame of a stream left early
    return events


class Clock:
    """The load window: no new operations after `deadline` or once `stop` is set."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds
        self.stop = threading.Event()

    def open(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def sleep(self, seconds: float) -> None:
        self.stop.wait(max(0.0, seconds))


# ---- one user ------------------------------------------------------------------------------

class Client:
    """One user's HTTP side: a keep-alive connection, retries with the same key, leak checks."""

    def __init__(self, index: int, port: int, ledger: Ledger, stats: Stats, max_attempts: int,
                 stop: threading.Event, rng: random.Random, *, admin: bool = False):
        self.index = index
        self.user = f"soak-user-{index}" if not admin else "soak-admin"
        self.port = port
        self.ledger = ledger
        self.stats = stats
        self.max_attempts = max_attempts
        self.stop = stop
        self.rng = rng
        self.headers = {"Authorization": f"Bearer {mint_token(self.user, admin=admin)}",
                        "Content-Type": "application/json", "OpenAI-Beta": "assistants=v2"}
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _once(self, method: str, path: str, data: bytes | None, headers: dict[str, str],
              leave_after: int | None = None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT)
        start = time.perf_counter()
        try:
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
            streamed = response.getheader("Content-Type", "").startswith("text/event-stream")
            if streamed and leave_after is not None:
                # A client that goes away mid-stream: a few lines read, then the connection shut.
                raw = b"".join(response.fp.readline() for _ in range(leave_after))
                self.close()
                return response, raw, None
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return None, None, type(exc).__name__
        self.stats.latencies.append(time.perf_counter() - start)
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        return response, raw, None

    def call(self, method: str, path: str, body: dict | None = None, *,
             retry_404_ok: bool = False, leave_after: int | None = None) -> Answer:
        """One logical operation: retried on 502/503/504, 409 idempotency_key_in_use and
        connection errors with the same body (and for POSTs the same Idempotency-Key)."""
        route = route_of(method, path)
        headers = dict(self.headers)
        if method == "POST":
            headers["Idempotency-Key"] = str(uuid.uuid4())
        data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
        attempt = 0
        while True:
            attempt += 1
            response, raw, error = self._once(method, path, data, headers, leave_after)
            if response is None:
                self.stats.by_class["conn"] += 1
                self.stats.by_route[(route, "conn")] += 1
                reason, wait = f"connection error ({error})", None
                answer = Answer(None, attempts=attempt)
            else:
                status = response.status
                try:
                    if response.getheader("Content-Type", "").startswith("text/event-stream"):
                        payload = {"stream": sse_events(raw)}
                    else:
                        payload = json.loads(raw) if raw else None
                except ValueError:
                    payload = None
                answer = Answer(status, response.headers, payload, attempt)
                self.stats.by_class[f"{status // 100}xx"] += 1
                self.stats.by_route[(route, status)] += 1
                self.stats.statuses[status] += 1
                if status >= 400:
                    self.stats.codes[(status, answer.code)] += 1
                if response.getheader("Idempotent-Replayed") == "true":
                    self.stats.replayed += 1
                self.check_leaks(route, raw, payload)
                if attempt > 1 and retry_404_ok and status == 404:
                    # A DELETE retried after an answer that got lost: the first one did it.
                    return Answer(200, response.headers, {"deleted": True, "retried": True}, attempt)
                in_use = status == 409 and answer.code == "idempotency_key_in_use"
                if status not in RETRY_STATUSES and not in_use:
                    return answer
                reason = f"HTTP {status}" + (f" {answer.code}" if answer.code else "")
                wait = response.getheader("Retry-After")
            if attempt >= self.max_attempts or self.stop.is_set():
                self.stats.gave_up[route] += 1
                return answer
            self.stats.retries += 1
            self.stats.retry_reasons[reason] += 1
            backoff = min(MAX_BACKOFF, 0.2 * 2 ** (attempt - 1)) * (0.5 + self.rng.random())
            try:
                if wait is not None:
                    backoff = max(backoff, min(MAX_BACKOFF * 2, float(wait)))
            except ValueError:
                pass
            self.stop.wait(backoff)

    def check_leaks(self, route: str, raw: bytes | None, payload: Any) -> None:
        """Nothing of another user in a response: markers, ids, owner stamps."""
        if not raw:
            return
        text = raw.decode("utf-8", errors="replace")
        me = self.index
        found = []
        for match in MARKER_RE.finditer(text):
            if int(match.group(1)) != me:
                found.append(f"marker {match.group(0)}")
        owner = self.ledger.owner
        for object_id in set(ID_RE.findall(text)):
            who = owner.get(object_id)
            if who is not None and who != me:
                found.append(f"{object_id} of user {who}")
        if isinstance(payload, dict):
            objects = payload.get("data") if payload.get("object") == "list" else [payload]
            for obj in objects if isinstance(objects, list) else []:
                if not isinstance(obj, dict):
                    continue
                metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
                stamp = metadata.get("user_id")
                if obj.get("object") == "thread" and stamp != self.user:
                    found.append(f"thread {obj.get('id')} with metadata.user_id={stamp!r}")
                elif stamp is not None and stamp != self.user:
                    found.append(f"{obj.get('object')} {obj.get('id')} with metadata.user_id={stamp!r}")
        for item in found:
            self.stats.leaks.append(f"{self.user} {route}: {item}")


class User(threading.Thread):
    """One simulated user looping over the mixed workload until the clock closes."""

    def __init__(self, index: int, port: int, assistant_id: str, ledger: Ledger, clock: Clock,
                 max_attempts: int, seed: int, think_ms: float):
        super().__init__(name=f"soak-user-{index}", daemon=True)
        self.index = index
        self.assistant_id = assistant_id
        self.ledger = ledger
        self.clock = clock
        self.rng = random.Random(seed)
        self.think = think_ms / 1000
        self.stats = Stats()
        self.client = Client(index, port, ledger, self.stats, max_attempts, clock.stop, self.rng)
        self.threads: dict[str, ThreadState] = {}
        self.counter = 0
        self.crashed: str | None = None

    # -- helpers --

    def marker(self) -> str:
        self.counter += 1
        return f"SOAK-u{self.index}-n{self.counter}-{uuid.uuid4().hex[:8]}"

    def live_threads(self) -> list[ThreadState]:
        return [t for t in self.threads.values() if not t.deleted and not t.maybe_deleted]

    def pick_thread(self) -> ThreadState | None:
        live = self.live_threads()
        return self.rng.choice(live) if live else None

    def new_marker(self, thread_id: str | None, how: str) -> Marker:
        marker = Marker(self.index, self.marker(), thread_id, how=how)
        self.ledger.add_marker(marker)
        return marker

    def settle_marker(self, marker: Marker, answer: Answer, message_id: str | None = None) -> None:
        if answer.ok:
            marker.outcome = "accepted"
            marker.message_id = message_id
            self.ledger.own(message_id, self.index)
        elif answer.status is None:
            marker.outcome = "unknown"
        else:
            marker.outcome = "refused"

    def register_thread(self, thread_id: str) -> ThreadState:
        self.ledger.own(thread_id, self.index)
        state = self.threads.get(thread_id)
        if state is None:
            state = self.threads[thread_id] = ThreadState(thread_id, self.index)
        return state

    def message_body(self, marker: Marker) -> dict:
        body: dict[str, Any] = {"role": "user", "content": f"{marker.text} says hello"}
        if self.rng.random() < 0.3:
            body["metadata"] = {"soak": "yes", "n": str(self.counter)}
        return body

    # -- operations --

    def op_create_thread(self) -> None:
        count = self.rng.choice((0, 0, 1, 1, 2))
        markers = [self.new_marker(None, "thread create") for _ in range(count)]
        body: dict[str, Any] = {}
        if markers:
            body["messages"] = [self.message_body(m) for m in markers]
        if self.rng.random() < 0.5:
            body["metadata"] = {"topic": f"t{self.counter}"}
        answer = self.client.call("POST", "/v1/threads", body)
        thread = None
        if answer.ok:
            thread = self.register_thread(answer.payload["id"])
        for m in markers:
            m.thread_id = thread.id if thread else None
            self.settle_marker(m, answer)
            if thread:
                thread.markers.append(m)

    def op_post_message(self, thread: ThreadState | None = None) -> Answer | None:
        thread = thread or self.pick_thread()
        if thread is None:
            return None
        marker = self.new_marker(thread.id, "message")
        thread.markers.append(marker)
        answer = self.client.call("POST", f"/v1/threads/{thread.id}/messages",
                                  self.message_body(marker))
        self.settle_marker(marker, answer, answer.payload.get("id") if answer.ok else None)
        if answer.status == 409 and answer.code == "thread_locked":
            self.stats.thread_locked += 1
        return answer

    def poll_run(self, thread: ThreadState, run: dict, headers) -> str:
        """Poll a run until it ends (honouring openai-poll-after-ms); its last status."""
        status = run.get("status")
        started = time.monotonic()
        while status in NON_TERMINAL:
            if self.clock.stop.is_set() or time.monotonic() - started > MAX_POLL_SECONDS:
                break
            hint = headers.get("openai-poll-after-ms") if headers is not None else None
            try:
                wait_ms = min(max(int(hint), 10), 5000) if hint else 500
            except ValueError:
                wait_ms = 500
            self.clock.sleep(wait_ms / 1000)
            answer = self.client.call("GET", f"/v1/threads/{thread.id}/runs/{run['id']}")
            if answer.status == 404 and thread.deleted:
                break
            if not answer.ok:
                continue
            status, headers = answer.payload.get("status"), answer.headers
            thread.runs[run["id"]] = status
        return status

    def op_run(self) -> None:
        thread = self.pick_thread()
        if thread is None:
            return
        body: dict[str, Any] = {"assistant_id": self.assistant_id}
        extra: list[Marker] = []
        if self.rng.random() < 0.25:
            extra = [self.new_marker(thread.id, "additional message")]
            body["additional_messages"] = [self.message_body(m) for m in extra]
            thread.markers.extend(extra)
        if self.rng.random() < 0.2:
            body["metadata"] = {"attempt": str(self.counter)}
        answer = self.client.call("POST", f"/v1/threads/{thread.id}/runs", body)
        for m in extra:
            self.settle_marker(m, answer)
        if answer.status == 409 and answer.code == "thread_locked":
            self.stats.thread_locked += 1
        if not answer.ok:
            return
        run = answer.payload
        self.ledger.own(run["id"], self.index)
        thread.runs[run["id"]] = run.get("status")
        roll = self.rng.random()
        if roll < 0.2 and run.get("status") in NON_TERMINAL:
            # Post while the run is active: 409 thread_locked, or 2xx if it ended meanwhile.
            self.op_post_message(thread)
        elif roll < 0.32 and run.get("status") in NON_TERMINAL:
            cancel = self.client.call("POST", f"/v1/threads/{thread.id}/runs/{run['id']}/cancel")
            self.stats.operations["cancel"] += 1
            if cancel.ok:
                run = cancel.payload
                thread.runs[run["id"]] = run.get("status")
        status = self.poll_run(thread, run, answer.headers)
        self.stats.run_final[status] += 1
        if status in NON_TERMINAL:
            return
        if self.rng.random() < 0.3:
            self.client.call("POST", f"/v1/threads/{thread.id}/runs/{run['id']}",
                             {"metadata": {"checked": "yes"}})

    def op_stream_run(self) -> None:
        """A streamed run, read to its end (and held against what polling then returns), or
        left after a few events: the run must finish without its reader."""
        thread = self.pick_thread()
        if thread is None:
            return
        leave = self.rng.random() < 0.2
        answer = self.client.call("POST", f"/v1/threads/{thread.id}/runs",
                                  {"assistant_id": self.assistant_id, "stream": True},
                                  leave_after=self.rng.randint(2, 12) if leave else None)
        if answer.status == 409 and answer.code == "thread_locked":
            self.stats.thread_locked += 1
        if not answer.ok:
            return
        if "stream" not in answer.payload:  # a replayed request answers with the run object
            self.stats.streams["replayed as JSON"] += 1
            run = answer.payload
        else:
            events = answer.payload["stream"]
            created = next((data for name, data in events if name == "thread.run.created"), None)
            if created is None:
                self.stats.stream_errors.append(f"{thread.id}: no thread.run.created in "
                                                f"{[name for name, _ in events][:5]}")
                return
            run = created
            if not leave:
                self.check_stream(thread, events)
        self.ledger.own(run["id"], self.index)
        thread.runs[run["id"]] = run.get("status")
        if leave:
            self.stats.streams["left early"] += 1
        status = self.poll_run(thread, run, answer.headers)
        self.stats.run_final[status] += 1

    def check_stream(self, thread: ThreadState, events: list[tuple[str, Any]]) -> None:
        """A stream read whole ends with its run's last event and `done`, and its reply is the
        one polling returns, under the same id."""
        names = [name for name, _ in events]
        run_events = [data for name, data in events if name.startswith("thread.run.")
                      and not name.startswith("thread.run.step.")]
        if names[-1:] != ["done"] or not run_events:
            self.stats.stream_errors.append(f"{thread.id}: a stream ended {names[-3:]}")
            return
        run = run_events[-1]
        self.stats.streams[f"read whole, {run['status']}"] += 1
        if run["status"] != "completed":
            return
        text = "".join(part["text"]["value"] for name, data in events
                       if name == "thread.message.delta" for part in data["delta"]["content"]
                       if part.get("type") == "text")
        announced = [data["id"] for name, data in events if name == "thread.message.created"]
        listed = self.client.call("GET", f"/v1/threads/{thread.id}/messages?run_id={run['id']}")
        if not listed.ok:
            return
        replies = [(m["id"], "".join(part["text"]["value"] for part in m["content"]
                                     if part["type"] == "text")) for m in listed.payload["data"]]
        if replies != [(message_id, text) for message_id in announced]:
            self.stats.stream_errors.append(
                f"run {run['id']}: streamed {announced} {text[:40]!r}, listed {replies!r:.120}")

    def op_thread_and_run(self) -> None:
        marker = self.new_marker(None, "thread and run")
        body = {"assistant_id": self.assistant_id,
                "thread": {"messages": [self.message_body(marker)]}}
        answer = self.client.call("POST", "/v1/threads/runs", body)
        if not answer.ok:
            self.settle_marker(marker, answer)
            return
        run = answer.payload
        thread = self.register_thread(run["thread_id"])
        marker.thread_id = thread.id
        thread.markers.append(marker)
        self.settle_marker(marker, answer)
        self.ledger.own(run["id"], self.index)
        thread.runs[run["id"]] = run.get("status")
        self.stats.run_final[self.poll_run(thread, run, answer.headers)] += 1

    def list_all(self, path: str, limit: int, order: str, max_pages: int = 1000) -> list[dict] | None:
        """Every page of a list; None when a page failed."""
        items: list[dict] = []
        after = None
        for _ in range(max_pages):
            query = {"limit": limit, "order": order}
            if after:
                query["after"] = after
            answer = self.client.call("GET", f"{path}?{urlencode(query)}")
            if not answer.ok:
                return None
            data = answer.payload.get("data") or []
            items.extend(data)
            if not answer.payload.get("has_more") or not data:
                return items
            after = answer.payload.get("last_id")
        return items

    def op_list_messages(self) -> None:
        thread = self.pick_thread()
        if thread:
            self.list_all(f"/v1/threads/{thread.id}/messages", self.rng.choice((3, 5, 20)),
                          self.rng.choice(("asc", "desc")), max_pages=5)

    def op_list_threads(self) -> None:
        self.list_all("/v1/threads", self.rng.choice((2, 5, 10)), self.rng.choice(("asc", "desc")),
                      max_pages=5)

    def op_list_runs(self) -> None:
        thread = self.pick_thread()
        if thread:
            self.list_all(f"/v1/threads/{thread.id}/runs", self.rng.choice((2, 10)), "desc",
                          max_pages=3)

    def op_retrieve(self) -> None:
        thread = self.pick_thread()
        if thread is None:
            return
        accepted = [m for m in thread.markers if m.message_id and not m.deleted]
        if accepted and self.rng.random() < 0.5:
            m = self.rng.choice(accepted)
            self.client.call("GET", f"/v1/threads/{thread.id}/messages/{m.message_id}")
        else:
            self.client.call("GET", f"/v1/threads/{thread.id}")

    def op_modify(self) -> None:
        thread = self.pick_thread()
        if thread is None:
            return
        accepted = [m for m in thread.markers if m.message_id and not m.deleted and not m.maybe_deleted]
        if accepted and self.rng.random() < 0.4:
            m = self.rng.choice(accepted)
            self.client.call("POST", f"/v1/threads/{thread.id}/messages/{m.message_id}",
                             {"metadata": {"seen": str(self.counter)}})
        else:
            answer = self.client.call("POST", f"/v1/threads/{thread.id}",
                                      {"metadata": {"topic": f"m{self.counter}", "soak": "yes"}})
            if answer.ok and (answer.payload.get("metadata") or {}).get("user_id") != self.client.user:
                self.stats.leaks.append(f"{self.client.user} modify thread {thread.id}: owner stamp "
                                        f"lost: {answer.payload.get('metadata')!r}")

    def op_delete_message(self) -> None:
        thread = self.pick_thread()
        if thread is None:
            return
        accepted = [m for m in thread.markers if m.message_id and not m.deleted and not m.maybe_deleted]
        if not accepted:
            return
        m = self.rng.choice(accepted)
        answer = self.client.call("DELETE", f"/v1/threads/{thread.id}/messages/{m.message_id}",
                                  retry_404_ok=True)
        if answer.ok:
            m.deleted = True
        elif answer.status is None or answer.status >= 500:
            m.maybe_deleted = True

    def op_delete_thread(self) -> None:
        thread = self.pick_thread()
        if thread is None:
            return
        answer = self.client.call("DELETE", f"/v1/threads/{thread.id}", retry_404_ok=True)
        if answer.ok:
            thread.deleted = True
        elif answer.status is None or answer.status >= 500:
            thread.maybe_deleted = True
        for m in thread.markers:
            m.thread_deleted = thread.deleted
            m.thread_maybe_deleted = thread.maybe_deleted

    OPERATIONS = (
        ("create_thread", 10), ("post_message", 26), ("run", 12), ("stream_run", 6),
        ("thread_and_run", 3),
        ("list_messages", 14), ("list_threads", 7), ("list_runs", 5), ("retrieve", 6),
        ("modify", 7), ("delete_message", 4), ("delete_thread", 2),
    )

    def choose(self) -> str:
        live = len(self.live_threads())
        if live == 0:
            return "create_thread"
        if live > LIVE_THREADS_CAP and self.rng.random() < 0.5:
            return "delete_thread"
        names, weights = zip(*self.OPERATIONS)
        return self.rng.choices(names, weights)[0]

    def run(self) -> None:
        try:
            while self.clock.open():
                name = self.choose()
                self.stats.operations[name] += 1
                getattr(self, "op_" + name)()
                if self.think:
                    self.clock.sleep(self.rng.uniform(0, 2 * self.think))
        except Exception as exc:  # a bug of the soak itself: report it, do not hide it
            import traceback

            self.crashed = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        finally:
            self.client.close()


# ---- final checks ----------------------------------------------------------------------------

@dataclass
class Verdict:
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    resurrected: list[str] = field(default_factory=list)   # deleted (message or thread) but listed
    phantoms: list[str] = field(default_factory=list)      # refused (final error) but listed
    unknown_present: int = 0                               # no answer; listed once (allowed)
    unknown_absent: int = 0                                # no answer; not listed (allowed)
    dup_replies: list[str] = field(default_factory=list)
    missing_replies: list[str] = field(default_factory=list)
    non_terminal: list[str] = field(default_factory=list)
    runs_final: Counter = field(default_factory=Counter)
    threads_lost: list[str] = field(default_factory=list)
    threads_resurrected: list[str] = field(default_factory=list)
    threads_duplicated: list[str] = field(default_factory=list)
    verify_errors: list[str] = field(default_factory=list)
    markers_checked: int = 0
    messages_listed: int = 0
    threads_listed: int = 0
    runs_listed: int = 0
    settle_seconds: float = 0.0
    requests: int = 0


def settle_runs(users: list[User], port: int, ledger: Ledger, settle_seconds: float,
                stats: Stats) -> float:
    """Poll every run last seen active until it ends or `settle_seconds` pass."""
    start = time.monotonic()
    stop = threading.Event()
    pending = [(u, t, run_id) for u in users for t in u.live_threads()
               for run_id, status in t.runs.items() if status in NON_TERMINAL or status is None]
    clients = {u.index: Client(u.index, port, ledger, stats, 6, stop, random.Random(u.index))
               for u in users}
    try:
        while pending and time.monotonic() - start < settle_seconds:
            still = []
            for u, t, run_id in pending:
                answer = clients[u.index].call("GET", f"/v1/threads/{t.id}/runs/{run_id}")
                if answer.ok:
                    t.runs[run_id] = answer.payload.get("status")
                    if t.runs[run_id] in NON_TERMINAL:
                        still.append((u, t, run_id))
                elif answer.status != 404:
                    still.append((u, t, run_id))
            pending = still
            if pending:
                time.sleep(0.3)
    finally:
        for client in clients.values():
            client.close()
    return time.monotonic() - start


def verify(users: list[User], port: int, ledger: Ledger, stats: Stats,
           settle_seconds: float) -> Verdict:
    verdict = Verdict()
    verdict.settle_seconds = settle_runs(users, port, ledger, settle_seconds, stats)
    stop = threading.Event()
    by_user: dict[int, list[Marker]] = defaultdict(list)
    for marker in ledger.markers.values():
        by_user[marker.user].append(marker)
    for user in users:
        lister = User(user.index, port, user.assistant_id, ledger, Clock(0), 8, user.index, 0)
        lister.stats = stats
        lister.client = Client(user.index, port, ledger, stats, 8, stop, random.Random(user.index))
        try:
            threads = lister.list_all("/v1/threads", 100, "asc")
            if threads is None:
                verdict.verify_errors.append(f"{lister.client.user}: listing threads failed")
                continue
            verdict.threads_listed += len(threads)
            listed_ids = Counter(t["id"] for t in threads)
            for thread_id, n in listed_ids.items():
                if n > 1:
                    verdict.threads_duplicated.append(f"{thread_id} listed {n} times")
            for state in user.threads.values():
                n = listed_ids.get(state.id, 0)
                if state.deleted and n:
                    verdict.threads_resurrected.append(f"{state.id} (user {user.index}) deleted but listed")
                elif not state.deleted and not state.maybe_deleted and not n:
                    verdict.threads_lost.append(f"{state.id} (user {user.index}) created but not listed")
            seen: Counter = Counter()
            for thread in threads:
                ledger.own(thread["id"], user.index)
                # Runs first: a run that settles between the two listings then shows its reply
                # too, where the other order would report it completed without one.
                runs = lister.list_all(f"/v1/threads/{thread['id']}/runs", 100, "asc")
                messages = lister.list_all(f"/v1/threads/{thread['id']}/messages", 100, "asc")
                if messages is None or runs is None:
                    verdict.verify_errors.append(f"{lister.client.user}: listing {thread['id']} failed")
                    continue
                verdict.messages_listed += len(messages)
                verdict.runs_listed += len(runs)
                replies: Counter = Counter()
                for message in messages:
                    text = " ".join(part.get("text", {}).get("value", "")
                                    for part in message.get("content") or [] if isinstance(part, dict))
                    if message.get("role") == "user":
                        for match in MARKER_RE.finditer(text):
                            seen[match.group(0)] += 1
                    elif message.get("run_id"):
                        replies[message["run_id"]] += 1
                for run in runs:
                    status = run.get("status")
                    verdict.runs_final[status] += 1
                    if status in NON_TERMINAL:
                        verdict.non_terminal.append(f"{run['id']} in {thread['id']} (user "
                                                    f"{user.index}): {status}")
                    if status == "completed" and replies[run["id"]] == 0:
                        verdict.missing_replies.append(f"{run['id']} in {thread['id']}")
                for run_id, n in replies.items():
                    if n > 1:
                        verdict.dup_replies.append(f"{run_id}: {n} replies")
            for marker in by_user[user.index]:
                n = seen.pop(marker.text, 0)
                verdict.markers_checked += 1
                gone = marker.deleted or marker.thread_deleted
                maybe_gone = marker.maybe_deleted or marker.thread_maybe_deleted
                where = f"{marker.text} ({marker.how}, thread {marker.thread_id})"
                if n > 1:
                    verdict.duplicated.append(f"{where}: listed {n} times")
                elif marker.outcome == "accepted":
                    if gone and n:
                        verdict.resurrected.append(f"{where}: deleted but listed")
                    elif not gone and not maybe_gone and n == 0:
                        verdict.lost.append(f"{where}: accepted but not listed")
                elif marker.outcome == "refused":
                    if n and not gone:
                        verdict.phantoms.append(f"{where}: refused but listed")
                elif marker.outcome == "unknown":
                    if n:
                        verdict.unknown_present += 1
                    else:
                        verdict.unknown_absent += 1
            for text, n in seen.items():  # listed markers this user never sent
                verdict.phantoms.append(f"{text}: listed {n} times but never sent by this user")
        finally:
            lister.client.close()
    return verdict


# ---- report ---------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def show(title: str, items: list[str], limit: int = 8) -> None:
    print(f"  {title}: {len(items)}")
    for item in items[:limit]:
        print(f"      {item}")
    if len(items) > limit:
        print(f"      ... and {len(items) - limit} more")


def report(args, stats: Stats, verdict: Verdict | None, problems: Counter, examples: list[str],
           injected: dict[str, int], upstream_calls: int, crashed: list[str],
           seconds: float) -> list[str]:
    """Print the summary; return the failed checks."""
    print("\n==== soak summary ====")
    print(f"  engine {args.engine}, {args.users} users, {seconds:.0f} s of load, faults "
          f"{'ON' if args.faults else 'off'}, seed {args.seed}")
    total = sum(v for k, v in stats.by_class.items())
    print(f"  requests: {total} ({total / seconds if seconds else 0:.1f}/s), by class: "
          + ", ".join(f"{k} {v}" for k, v in sorted(stats.by_class.items())))
    print(f"  latency: p50 {percentile(stats.latencies, .5) * 1000:.0f} ms, p99 "
          f"{percentile(stats.latencies, .99) * 1000:.0f} ms, max "
          f"{max(stats.latencies, default=0) * 1000:.0f} ms")
    print("  operations: " + ", ".join(f"{k} {v}" for k, v in stats.operations.most_common()))
    print("  by route (status: count):")
    routes: dict[str, Counter] = defaultdict(Counter)
    for (route, status), n in stats.by_route.items():
        routes[route][status] += n
    for route in sorted(routes):
        parts = ", ".join(f"{s}: {n}" for s, n in sorted(routes[route].items(), key=lambda x: str(x[0])))
        print(f"      {route:<52} {parts}")
    s500 = stats.statuses.get(500, 0)
    s5xx = sum(n for s, n in stats.statuses.items() if s >= 500)
    gateway = {s: stats.statuses.get(s, 0) for s in (502, 503, 504)}
    other5 = s5xx - s500 - sum(gateway.values())
    print(f"  5xx: {s5xx} (500: {s500}; 502: {gateway[502]}, 503: {gateway[503]}, 504: {gateway[504]}"
          f"{f'; other 5xx: {other5}' if other5 else ''})")
    errors = ", ".join(f"{s} {c or '-'} x{n}" for (s, c), n in sorted(stats.codes.items(), key=str))
    print(f"  error answers by code: {errors or 'none'}")
    print(f"  expected 409 thread_locked: {stats.thread_locked}; idempotent replays seen: "
          f"{stats.replayed}")
    print(f"  retries: {stats.retries} ("
          + ", ".join(f"{k} x{v}" for k, v in stats.retry_reasons.most_common()) + ")")
    if stats.gave_up:
        print("  operations that exhausted retries: "
              + ", ".join(f"{k} x{v}" for k, v in stats.gave_up.most_common()))
    print(f"  upstream (fake): {upstream_calls} calls; injected faults: "
          + (", ".join(f"{k} x{v}" for k, v in sorted(injected.items())) or "none"))
    print(f"  runs as the users' polling last saw them: "
          + ", ".join(f"{k} {v}" for k, v in stats.run_final.most_common()))
    print("  streamed runs: " + (", ".join(f"{k} {v}" for k, v in stats.streams.most_common())
                                 or "none"))
    show("broken streams", stats.stream_errors)
    show("leaks", stats.leaks)
    failed: list[str] = []
    if verdict is not None:
        print(f"  final check (after {verdict.settle_seconds:.1f} s of settling; "
              f"{verdict.requests} requests): {verdict.threads_listed} threads, {verdict.messages_listed} messages, "
              f"{verdict.runs_listed} runs listed; {verdict.markers_checked} markers checked")
        print(f"  runs by final status: "
              + ", ".join(f"{k} {v}" for k, v in verdict.runs_final.most_common()))
        show("lost messages (accepted, not listed)", verdict.lost)
        show("duplicated messages", verdict.duplicated)
        show("resurrected messages (deleted, listed)", verdict.resurrected)
        show("phantom messages (refused or never sent, listed)", verdict.phantoms)
        print(f"  messages whose POST got no answer at all: {verdict.unknown_present} listed, "
              f"{verdict.unknown_absent} not listed (either is allowed)")
        show("duplicated run replies", verdict.dup_replies)
        show("completed runs without a reply", verdict.missing_replies)
        show("non-terminal runs", verdict.non_terminal)
        show("threads lost", verdict.threads_lost)
        show("threads deleted but listed", verdict.threads_resurrected)
        show("threads listed twice", verdict.threads_duplicated)
        show("verification errors", verdict.verify_errors)
    print("  gunicorn log: " + (", ".join(f"{k} x{v}" for k, v in problems.items()
                                         if not k.startswith("exception ")) or "clean"))
    for k, v in problems.most_common():
        if k.startswith("exception "):
            print(f"      x{v} {k[len('exception '):]}")
    for line in examples:
        print(f"      {line}")
    show("soak client crashes", crashed, limit=3)

    checks = [("500s", s500), ("leaks", len(stats.leaks)),
              ("broken streams", len(stats.stream_errors))]
    if not args.faults:
        checks.append(("5xx", s5xx))
    if verdict is None:
        failed.append("no final check")
    else:
        checks += [("lost messages", len(verdict.lost)), ("duplicated messages", len(verdict.duplicated)),
                   ("resurrected messages", len(verdict.resurrected)),
                   ("phantom messages", len(verdict.phantoms)),
                   ("duplicated replies", len(verdict.dup_replies)),
                   ("non-terminal runs", len(verdict.non_terminal)),
                   ("lost threads", len(verdict.threads_lost)),
                   ("resurrected threads", len(verdict.threads_resurrected)),
                   ("duplicated threads", len(verdict.threads_duplicated)),
                   ("verification errors", len(verdict.verify_errors))]
    checks.append(("soak client crashes", len(crashed)))
    failed += [f"{name}: {n}" for name, n in checks if n]
    print("  RESULT: " + ("PASS" if not failed else "FAIL (" + "; ".join(failed) + ")"))
    return failed


# ---- main ----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50, help="simulated users (50)")
    parser.add_argument("--seconds", type=float, default=300.0, help="seconds of load (300)")
    parser.add_argument("--engine", default="responses", choices=ENGINES, help="BRIDGE_ENGINE (responses)")
    # argparse %-formats help strings: a literal percent sign is written %%.
    parser.add_argument("--faults", action="store_true",
                        help=f"the fake fails {FAULT_5XX:.0%}% 5xx, {FAULT_429:.0%}% 429, "
                             f"{FAULT_TIMEOUT:.0%}% timeouts of the upstream calls")
    parser.add_argument("--postgres", metavar="URL", default=None,
                        help="use PostgreSQL: a new database is created through URL and dropped after")
    parser.add_argument("--seed", type=int, default=None, help="seed of the workload and the faults")
    parser.add_argument("--workers", type=int, default=None,
                        help="WEB_CONCURRENCY (default: the config's own, 2)")
    parser.add_argument("--upstream-latency", type=float, default=0.3,
                        help="seconds the fake takes to finish a response or run (0.3)")
    parser.add_argument("--poll-after-ms", type=int, default=200, help="POLL_AFTER_MS (200)")
    parser.add_argument("--think-ms", type=float, default=50.0,
                        help="mean pause of a user between operations (50)")
    parser.add_argument("--max-attempts", type=int, default=6,
                        help="attempts per operation on 502/503/504 and connection errors (6)")
    parser.add_argument("--settle", type=float, default=60.0,
                        help="at most this many seconds to wait for active runs to end (60)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (gunicorn log, SQLite registry) and print it")
    args = parser.parse_args(argv)
    if not 1 <= args.users <= 1000:
        parser.error("--users must be between 1 and 1000")
    if not 0 < args.seconds <= 24 * 3600:
        parser.error("--seconds must be in (0, 86400]")
    if args.max_attempts < 1:
        parser.error("--max-attempts must be at least 1")
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    return args


def _interrupt(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def create_assistant(port: int, ledger: Ledger, stats: Stats) -> str:
    admin = Client(-1, port, ledger, stats, 6, threading.Event(), random.Random(0), admin=True)
    try:
        answer = admin.call("POST", "/v1/assistants",
                            {"model": ASSISTANT_MODEL, "name": "soak", "instructions": "Be brief."})
    finally:
        admin.close()
    if not answer.ok:
        raise StartFailed(f"creating the assistant answered {answer.status}: {answer.payload!r}")
    return answer.payload["id"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.getsignal(sig) for sig in handled} if in_main_thread else {}
    if in_main_thread:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGHUP, _interrupt)
    executable = gunicorn_executable()
    if executable is None:
        print("gunicorn not found next to this Python nor on PATH", file=sys.stderr)
        return EXIT_NOT_STARTED
    folder = Path(tempfile.mkdtemp(prefix="bridge-soak-"))
    registry = Registry(folder, args.postgres)
    fake = FakeOpenAI(latency=args.upstream_latency, max_recorded=1000)
    server: Gunicorn | None = None
    clock: Clock | None = None
    users: list[User] = []
    stats = Stats()
    try:
        import gunicorn

        fake.start()
        database_url = registry.new()
        env = {
            "DATABASE_URL": database_url, "AUTO_MIGRATE": "true",
            "JWT_SECRET_KEY": JWT_SECRET, "JWT_ALGORITHM": "HS256",
            # Set (even empty) so that a .env file cannot change them.
            "JWT_AUDIENCE": "", "JWT_ISSUER": "", "JWT_PUBLIC_KEY": "", "REDIS_URL": "",
            "JWT_USER_CLAIM": "sub", "JWT_ADMIN_CLAIM": "role", "JWT_ADMIN_VALUE": "admin",
            "BRIDGE_ENGINE": args.engine,
            "OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": fake.api_key,
            "OPENAI_TIMEOUT": f"{OPENAI_TIMEOUT:g}", "GUNICORN_TIMEOUT": str(GUNICORN_TIMEOUT),
            "RATE_LIMIT_READS": "", "RATE_LIMIT_WRITES": "", "RATE_LIMIT_RUNS": "",
            "POLL_AFTER_MS": str(args.poll_after_ms),
            "LOG_LEVEL": "WARNING", "LOG_FORMAT": "text",
        }
        if args.workers:
            env["WEB_CONCURRENCY"] = str(args.workers)
        server = Gunicorn(executable, env, folder / "gunicorn.log")
        print(f"soak: {args.users} users x {args.seconds:g} s, engine {args.engine}, faults "
              f"{'ON' if args.faults else 'off'}, seed {args.seed}")
        print(f"  {platform.python_implementation()} {platform.python_version()}, gunicorn "
              f"{gunicorn.__version__}, {os.cpu_count()} CPUs; registry: {registry.describe()}")
        print(f"  upstream: FakeOpenAI at {fake.base_url}, {args.upstream_latency:g} s per answer; "
              f"OPENAI_TIMEOUT={OPENAI_TIMEOUT:g}, GUNICORN_TIMEOUT={GUNICORN_TIMEOUT}, "
              f"POLL_AFTER_MS={args.poll_after_ms}, rate limits off")
        print(f"  starting: {server.command} (port {server.port})", flush=True)
        server.start()
        ledger = Ledger()
        try:
            server.wait_ready()
            assistant_id = create_assistant(server.port, ledger, stats)
        except StartFailed as exc:
            print(f"FAILED to start: {exc}\n--- last lines of the gunicorn log ---\n"
                  f"{server.log_tail()}\n---", flush=True)
            return EXIT_NOT_STARTED
        if args.faults:
            fake.fault_rates(error_5xx=FAULT_5XX, rate_limited=FAULT_429, timeout=FAULT_TIMEOUT,
                             timeout_seconds=FAULT_TIMEOUT_SECONDS, retry_after=1, seed=args.seed)
        master = random.Random(args.seed)
        clock = Clock(args.seconds)
        users = [User(i, server.port, assistant_id, ledger, clock, args.max_attempts,
                      master.randrange(2 ** 31), args.think_ms) for i in range(args.users)]
        started = time.monotonic()
        for user in users:
            user.start()
        next_report = started + 30
        while any(u.is_alive() for u in users) and time.monotonic() < clock.deadline + HTTP_TIMEOUT * 2:
            time.sleep(0.2)
            if time.monotonic() >= next_report and time.monotonic() < clock.deadline:
                done = sum(sum(u.stats.by_class.values()) for u in users)
                print(f"  ... {time.monotonic() - started:.0f} s, {done} requests", flush=True)
                next_report += 30
        clock.stop.set()
        for user in users:
            user.join(timeout=HTTP_TIMEOUT + 5)
        load_seconds = min(time.monotonic() - started, args.seconds) or args.seconds
        crashed = [f"{u.name}: {u.crashed}" for u in users if u.crashed]
        crashed += [f"{u.name}: still running after the load" for u in users if u.is_alive()]
        for user in users:
            stats.merge(user.stats)
        print(f"  load done: {sum(stats.by_class.values())} requests; settling runs and "
              f"verifying ...", flush=True)
        verify_stats = Stats()
        verdict = verify(users, server.port, ledger, verify_stats, args.settle)
        # Leaks and 5xx during verification count too.
        stats.leaks.extend(verify_stats.leaks)
        for status in (500, 502, 503, 504):
            stats.statuses[status] += verify_stats.statuses.get(status, 0)
        stats.statuses += Counter()  # drop zeros
        verdict.requests = sum(verify_stats.by_class.values())
        injected = fake.injected_faults()
        upstream_calls = sum(fake.calls().values())
        server.stop()
        problems, examples = server.log_problems()
        failed = report(args, stats, verdict, problems, examples, injected, upstream_calls,
                        crashed, load_seconds)
        if failed and not args.keep:
            kept = Path(tempfile.gettempdir()) / f"bridge-soak-{time.strftime('%Y%m%d-%H%M%S')}.log"
            shutil.copyfile(server.log_path, kept)
            print(f"  the gunicorn log is kept in {kept}")
        return EXIT_FAILED if failed else EXIT_OK
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"\ninterrupted ({type(exc).__name__} {exc}); stopping everything", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if in_main_thread:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
        if clock is not None:
            clock.stop.set()
        if server is not None:
            server.stop()
        fake.stop()
        try:
            registry.drop()
        finally:
            if args.keep:
                print(f"kept {folder} (gunicorn.log, registry)")
            else:
                shutil.rmtree(folder, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
