#!/usr/bin/env python3
"""Measure gunicorn worker models (sync, gthread, gevent) against the bridge, on this machine.

    cd /work/main && python bench/worker_models.py [--models sync,gthread,gevent]
        [--clients 64] [--seconds 10] [--warmup 2] [--postgres URL]

For each worker model it starts `gunicorn -c gunicorn.conf.py wsgi:app` (2 workers, worker class
overridden on the command line) on a fresh registry, with the chat engine pointed at an in-process
fake Chat Completions server whose every answer takes --upstream-ms (50 ms). Many simulated users,
each with its own JWT, then repeat: create a thread, post a message, start a run, poll it until it
ends (honouring `openai-poll-after-ms`), list the messages. It prints requests/s, errors and
p50/p99 latency per model, and each model's throughput as a ratio of the baseline (sync) measured
in the same run: absolute numbers depend on the machine, so only the ratios mean anything, and
nothing here asserts a timing.

Everything it starts (gunicorn process groups, the fake server, temporary registries) is stopped
or removed on exit, Ctrl-C included. All traffic goes to 127.0.0.1 (and to --postgres, if given).
Exit status: 0 when every requested model ran, 1 when one failed to start (the reason is printed).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.fakes

import jwt  # noqa: E402  (PyJWT)

from tests.fakes.chat_server import FakeChatServer  # noqa: E402

# The worker class is overridden on the command line. `--threads 1` matters for sync: the config
# sets threads=32, and gunicorn silently turns a sync worker with threads > 1 into gthread.
WORKER_MODELS: dict[str, list[str]] = {
    "sync": ["-k", "sync", "--threads", "1"],
    "gthread": ["-k", "gthread", "--threads", "32"],
    "gevent": ["-k", "gevent", "--worker-connections", "256"],
}
BASELINE = "sync"
WEB_CONCURRENCY = 2

JWT_SECRET = "bench-secret-" + "x" * 40  # >= 32 bytes, so PyJWT does not warn about HS256
ASSISTANT_MODEL = "fake-model"
# Statuses after which a client stops polling (requires_action would need tool outputs).
STOP_POLLING = {"completed", "failed", "cancelled", "incomplete", "expired", "requires_action"}

HTTP_TIMEOUT = 30.0          # per request, client side
MAX_POLLS_PER_RUN = 40       # a run still active after this many polls is given up on
MAX_REQUESTS_PER_CLIENT = 200_000
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 40.0          # gunicorn's graceful_timeout is 30 s


class Interrupted(Exception):
    """SIGTERM or SIGHUP: stop like Ctrl-C."""


class StartFailed(Exception):
    """A gunicorn server did not become ready."""


@contextlib.contextmanager
def shielded():
    """Hold off Ctrl-C, SIGTERM and SIGHUP during cleanup, so a second one leaves nothing behind."""
    caught: list[int] = []
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda signum, _frame: caught.append(signum))
                for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        if caught[0] == signal.SIGINT:
            raise KeyboardInterrupt
        raise Interrupted(signal.Signals(caught[0]).name)


# ---- tokens ------------------------------------------------------------------------------------

def mint_token(user: str, *, admin: bool = False, ttl: int = 3600) -> str:
    """An access token as `flask token` mints it; bridge/auth.py requires exp and sub."""
    now = int(time.time())
    claims = {"sub": user, "iat": now, "nbf": now, "exp": now + ttl, "jti": str(uuid.uuid4()),
              "type": "access", "fresh": False}
    if admin:
        claims["role"] = "admin"
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


# ---- the upstream --------------------------------------------------------------------------

class SlowUpstream:
    """A FakeChatServer whose every chat completion takes `delay` seconds.

    The fake answers each request with the next scripted reply, so a thread keeps enough
    `{"delay": ...}` replies queued ahead of the requests it has received.
    """

    def __init__(self, delay: float, low_water: int = 1000, batch: int = 2000):
        self.fake = FakeChatServer()
        self.delay = delay
        self.low_water, self.batch = low_water, batch
        self._enqueued = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return self.fake.base_url

    @property
    def api_key(self) -> str:
        return self.fake.api_key

    def start(self) -> "SlowUpstream":
        self.fake.start()
        self._top_up()
        self._thread = threading.Thread(target=self._run, name="upstream-top-up", daemon=True)
        self._thread.start()
        return self

    def _top_up(self) -> None:
        with self._lock:
            # Invalid requests are recorded without consuming a reply: this errs towards more.
            outstanding = self._enqueued - len(self.fake.requests)
            if outstanding < self.low_water:
                self.fake.enqueue(*([{"delay": self.delay}] * self.batch))
                self._enqueued += self.batch

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._top_up()

    def reset(self) -> None:
        """Forget recorded requests and queued replies (between models), then refill."""
        with self._lock:
            self.fake.reset()
            self._enqueued = 0
        self._top_up()

    def completions(self) -> int:
        return len(self.fake.requests)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.fake.stop()


# ---- registries ----------------------------------------------------------------------------

class Registries:
    """A fresh registry per model: a SQLite file in `folder`, or a new PostgreSQL database."""

    def __init__(self, folder: Path, postgres: str | None):
        self.folder = folder
        self.postgres = postgres
        self._created: list[str] = []

    def describe(self) -> str:
        if self.postgres:
            parts = urlsplit(self.postgres)
            return f"PostgreSQL at {parts.hostname or 'local socket'} (a new database per model)"
        return f"SQLite in {self.folder} (a new file per model)"

    @staticmethod
    def _admin(url: str) -> str:
        for prefix in ("postgresql+psycopg://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql://" + url[len(prefix):]
        return url

    def new(self, model: str) -> str:
        if not self.postgres:
            return f"sqlite:///{self.folder / f'registry-{model}.db'}"
        import psycopg

        name = f"bridge_bench_{model}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self._admin(self.postgres), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        parts = urlsplit(self.postgres)
        return urlunsplit(parts._replace(path="/" + name))

    def drop_all(self) -> None:
        if not self._created:
            return
        import psycopg

        with psycopg.connect(self._admin(self.postgres), autocommit=True) as conn:
            while self._created:
                name = self._created.pop()
                try:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                except psycopg.Error as exc:
                    print(f"warning: could not drop database {name}: {exc}", file=sys.stderr)


# ---- gunicorn ------------------------------------------------------------------------------

def gunicorn_executable() -> str:
    beside = Path(sys.executable).parent / "gunicorn"
    if beside.exists():
        return str(beside)
    found = shutil.which("gunicorn")
    if not found:
        raise SystemExit("gunicorn not found next to this Python nor on PATH")
    return found


def control_socket_args() -> list[str]:
    """gunicorn >= 25 opens a control socket at a fixed path in $HOME by default; a benchmark
    server must not take it over from a gunicorn someone else is running."""
    from gunicorn import config

    return ["--no-control-socket"] if hasattr(config, "ControlSocketDisable") else []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Gunicorn:
    """One `gunicorn -c gunicorn.conf.py wsgi:app` in its own process group, logging to a file."""

    def __init__(self, model: str, database_url: str, upstream: SlowUpstream, log_path: Path,
                 poll_after_ms: int | None):
        self.model = model
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.argv = [gunicorn_executable(), "-c", "gunicorn.conf.py", *WORKER_MODELS[model],
                     *control_socket_args(), "wsgi:app"]
        env = {k: v for k, v in os.environ.items()
               # Leave worker settings and migration to the config file and the command line.
               if k not in ("GUNICORN_CMD_ARGS", "GUNICORN_THREADS", "AUTO_MIGRATE")}
        env.update(
            BIND=f"127.0.0.1:{self.port}",
            WEB_CONCURRENCY=str(WEB_CONCURRENCY),
            DATABASE_URL=database_url,
            JWT_SECRET_KEY=JWT_SECRET,
            JWT_ALGORITHM="HS256",
            # Set (even empty) so that a .env file read by wsgi.py cannot change them.
            JWT_AUDIENCE="", JWT_ISSUER="", JWT_PUBLIC_KEY="",
            JWT_USER_CLAIM="sub", JWT_ADMIN_CLAIM="role", JWT_ADMIN_VALUE="admin",
            BRIDGE_ENGINE="chat",
            OPENAI_BASE_URL=upstream.base_url,
            OPENAI_API_KEY=upstream.api_key,
            PYTHONUNBUFFERED="1",
        )
        if poll_after_ms is not None:
            env["POLL_AFTER_MS"] = str(poll_after_ms)
        self.env = env

    @property
    def command(self) -> str:
        return " ".join(self.argv)

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
                status, _ = http_get(self.port, "/readyz")
                if status == 200:
                    return
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

    def effective_worker(self) -> str:
        """What gunicorn says it runs ("Using worker: ..."), which may differ from what -k asked."""
        found = re.findall(r"Using worker: (\S+)", self.log_text())
        return found[-1] if found else "?"

    def log_problems(self) -> Counter:
        counts: Counter = Counter()
        for line in self.log_text().splitlines():
            if "WORKER TIMEOUT" in line:
                counts["worker timeout"] += 1
            elif "Traceback (most recent call last)" in line:
                counts["traceback"] += 1
            elif "[ERROR]" in line:
                counts["error line"] += 1
            elif "MonkeyPatchWarning" in line:
                counts["MonkeyPatchWarning"] += 1
        return counts

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
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        # Whatever is left in the group (a stuck master, orphaned workers) is killed.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            print(f"warning: gunicorn ({self.model}) pid {proc.pid} did not exit", file=sys.stderr)
        self.proc = None


# ---- the load --------------------------------------------------------------------------------

@dataclass
class Stats:
    """What one client saw inside the measured window."""

    requests: int = 0
    errors: int = 0
    error_kinds: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    cycles: int = 0
    run_statuses: Counter = field(default_factory=Counter)
    polls_capped: int = 0
    poll_after_ms: Counter = field(default_factory=Counter)
    # Seconds from sending "start a run" to seeing it ended (in steps of the poll interval).
    run_turnaround: list[float] = field(default_factory=list)

    def merge(self, other: "Stats") -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.error_kinds.update(other.error_kinds)
        self.latencies.extend(other.latencies)
        self.cycles += other.cycles
        self.run_statuses.update(other.run_statuses)
        self.polls_capped += other.polls_capped
        self.poll_after_ms.update(other.poll_after_ms)
        self.run_turnaround.extend(other.run_turnaround)


class Window:
    """The shared clock: warm-up until `measure_from`, no new requests after `deadline`."""

    def __init__(self, warmup: float, seconds: float):
        now = time.perf_counter()
        self.measure_from = now + warmup
        self.deadline = self.measure_from + seconds
        self.stop = threading.Event()

    def open(self) -> bool:
        return not self.stop.is_set() and time.perf_counter() < self.deadline

    def measuring(self, t: float) -> bool:
        return self.measure_from <= t <= self.deadline

    def sleep(self, seconds: float) -> bool:
        """Sleep, but not past the deadline; False when the window closed meanwhile."""
        remaining = self.deadline - time.perf_counter()
        if remaining <= 0:
            return False
        self.stop.wait(min(seconds, remaining))
        return self.open()


class SimulatedUser(threading.Thread):
    """One user with its own token and keep-alive connection, repeating the chat workflow."""

    def __init__(self, index: int, port: int, assistant_id: str, window: Window):
        super().__init__(name=f"user-{index}", daemon=True)
        self.user = f"bench-user-{index}"
        self.port = port
        self.assistant_id = assistant_id
        self.window = window
        self.stats = Stats()
        self.sent = 0
        self.headers = {"Authorization": f"Bearer {mint_token(self.user)}",
                        "Content-Type": "application/json", "OpenAI-Beta": "assistants=v2"}
        self.conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: dict | None = None):
        """One request: (status, headers, json) or None on a transport error; None also once
        the window closed or the request budget is spent."""
        if not self.window.open() or self.sent >= MAX_REQUESTS_PER_CLIENT:
            return None
        self.sent += 1
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT)
        data = json.dumps(body).encode() if body is not None else None
        start = time.perf_counter()
        try:
            self.conn.request(method, path, body=data, headers=self.headers)
            response = self.conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            end = time.perf_counter()
            self.conn.close()
            self.conn = None
            if self.window.measuring(end):
                self.stats.requests += 1
                self.stats.errors += 1
                self.stats.error_kinds[type(exc).__name__] += 1
            self.window.sleep(0.05)  # do not spin on a refused connection
            return None
        end = time.perf_counter()
        ok = 200 <= response.status < 300
        if self.window.measuring(end):
            self.stats.requests += 1
            self.stats.latencies.append(end - start)
            if not ok:
                self.stats.errors += 1
                self.stats.error_kinds[f"HTTP {response.status}"] += 1
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        return response.status, response.headers, payload

    @staticmethod
    def ok(result) -> bool:
        return result is not None and 200 <= result[0] < 300 and isinstance(result[2], dict)

    def cycle(self, n: int) -> None:
        created = self.call("POST", "/v1/threads", {})
        if not self.ok(created):
            return
        thread_id = created[2]["id"]
        posted = self.call("POST", f"/v1/threads/{thread_id}/messages",
                           {"role": "user", "content": f"Hello from {self.user}, message {n}."})
        if not self.ok(posted):
            return
        run_started = time.perf_counter()
        run = self.call("POST", f"/v1/threads/{thread_id}/runs", {"assistant_id": self.assistant_id})
        if not self.ok(run):
            return
        run_id = run[2]["id"]
        polls = 0
        while run[2].get("status") not in STOP_POLLING:
            if polls >= MAX_POLLS_PER_RUN:
                if self.window.measuring(time.perf_counter()):
                    self.stats.polls_capped += 1
                return
            hint = run[1].get("openai-poll-after-ms")
            try:
                wait_ms = min(max(int(hint), 10), 5000) if hint else 500
            except ValueError:
                wait_ms = 500
            self.stats.poll_after_ms[wait_ms] += 1
            if not self.window.sleep(wait_ms / 1000):
                return
            run = self.call("GET", f"/v1/threads/{thread_id}/runs/{run_id}")
            polls += 1
            if not self.ok(run):
                return
        run_ended = time.perf_counter()
        listed = self.call("GET", f"/v1/threads/{thread_id}/messages?limit=20")
        if not self.ok(listed):
            return
        if self.window.measuring(time.perf_counter()):
            self.stats.cycles += 1
            self.stats.run_statuses[run[2]["status"]] += 1
            self.stats.run_turnaround.append(run_ended - run_started)

    def run(self) -> None:
        n = 0
        try:
            while self.window.open() and self.sent < MAX_REQUESTS_PER_CLIENT:
                n += 1
                self.cycle(n)
        finally:
            if self.conn is not None:
                self.conn.close()


# ---- one model -------------------------------------------------------------------------------

@dataclass
class Result:
    model: str
    effective: str = "?"
    failure: str | None = None
    stats: Stats = field(default_factory=Stats)
    seconds: float = 0.0
    completions: int = 0
    log_problems: Counter = field(default_factory=Counter)
    command: str = ""

    @property
    def rps(self) -> float:
        return self.stats.requests / self.seconds if self.seconds else 0.0

    @property
    def runs_per_second(self) -> float:
        return self.stats.cycles / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Request latency percentile, in milliseconds."""
        return percentile(self.stats.latencies, q) * 1000


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def create_assistant(port: int) -> str:
    admin = {"Authorization": f"Bearer {mint_token('bench-admin', admin=True)}",
             "Content-Type": "application/json", "OpenAI-Beta": "assistants=v2"}
    body = json.dumps({"model": ASSISTANT_MODEL, "name": "bench", "instructions": "Be brief."})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    try:
        conn.request("POST", "/v1/assistants", body=body, headers=admin)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise StartFailed(f"creating the assistant answered {response.status}: {raw[:300]!r}")
    return json.loads(raw)["id"]


def measure(model: str, args, registries: Registries, upstream: SlowUpstream,
            folder: Path) -> Result:
    result = Result(model)
    upstream.reset()
    server = Gunicorn(model, registries.new(model), upstream, folder / f"gunicorn-{model}.log",
                      args.poll_after_ms)
    result.command = server.command
    users: list[SimulatedUser] = []
    window: Window | None = None
    try:
        print(f"[{model}] starting: {server.command} (port {server.port})", flush=True)
        server.start()
        try:
            server.wait_ready()
            assistant_id = create_assistant(server.port)
        except StartFailed as exc:
            result.effective = server.effective_worker()
            result.failure = str(exc)
            print(f"[{model}] FAILED: {exc}\n--- last lines of {server.log_path} ---\n"
                  f"{server.log_tail()}\n---", flush=True)
            return result
        result.effective = server.effective_worker()
        print(f"[{model}] ready (gunicorn says: Using worker: {result.effective}); "
              f"{args.clients} users for {args.warmup:g} s warm-up + {args.seconds:g} s", flush=True)
        window = Window(args.warmup, args.seconds)
        users = [SimulatedUser(i, server.port, assistant_id, window) for i in range(args.clients)]
        for user in users:
            user.start()
        # Count upstream completions inside the window only.
        while time.perf_counter() < window.measure_from:
            time.sleep(0.05)
        before = upstream.completions()
        while time.perf_counter() < window.deadline:
            time.sleep(0.05)
        result.completions = upstream.completions() - before
        join_deadline = time.monotonic() + HTTP_TIMEOUT + 5
        for user in users:
            user.join(timeout=max(0.1, join_deadline - time.monotonic()))
        stuck = sum(user.is_alive() for user in users)
        if stuck:
            print(f"[{model}] warning: {stuck} client threads still waiting on a response",
                  flush=True)
        for user in users:
            result.stats.merge(user.stats)
        result.seconds = args.seconds
        return result
    finally:
        with shielded():
            if window is not None:
                window.stop.set()
            server.stop()
            result.log_problems = server.log_problems()


# ---- report ----------------------------------------------------------------------------------

def report(results: list[Result], baseline: str) -> None:
    base = next((r for r in results if r.model == baseline and r.failure is None), None)
    header = (f"{'model':<8} {'gunicorn worker':<16} {'requests':>8} {'req/s':>8} {'errors':>6} "
              f"{'p50 ms':>7} {'p99 ms':>8} {'runs':>6} {'runs/s':>7} {'run p50 s':>9} "
              f"{'req/s vs ' + baseline:>14}")
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        if r.failure:
            print(f"{r.model:<8} {r.effective:<16} FAILED: {r.failure}")
            continue
        ratio = f"{r.rps / base.rps:.2f}x" if base and base.rps else "n/a"
        print(f"{r.model:<8} {r.effective:<16} {r.stats.requests:>8} {r.rps:>8.1f} "
              f"{r.stats.errors:>6} {r.percentile(0.50):>7.1f} {r.percentile(0.99):>8.1f} "
              f"{r.stats.cycles:>6} {r.runs_per_second:>7.1f} "
              f"{percentile(r.stats.run_turnaround, 0.5):>9.2f} {ratio:>14}")
    print()
    for r in results:
        if r.failure:
            continue
        notes = []
        if r.stats.error_kinds:
            notes.append("errors: " + ", ".join(f"{k} x{v}" for k, v in r.stats.error_kinds.most_common()))
        statuses = ", ".join(f"{k} {v}" for k, v in r.stats.run_statuses.most_common())
        notes.append(f"runs ended: {statuses or 'none'}")
        if r.stats.polls_capped:
            notes.append(f"runs given up after {MAX_POLLS_PER_RUN} polls: {r.stats.polls_capped}")
        notes.append(f"upstream completions: {r.completions}")
        hints = ", ".join(f"{k} ms" for k in sorted(r.stats.poll_after_ms))
        notes.append(f"poll-after: {hints or 'none seen'}")
        if r.log_problems:
            notes.append("server log: " + ", ".join(f"{k} x{v}" for k, v in r.log_problems.items()))
        print(f"{r.model:<8} " + "; ".join(notes))
    if base is None:
        print(f"\nNo ratio: the baseline ({baseline}) did not run.")


# ---- main ----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(WORKER_MODELS),
                        help="comma-separated subset of: " + ", ".join(WORKER_MODELS))
    parser.add_argument("--clients", type=int, default=64, help="concurrent simulated users (64)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per model (10)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of load before measuring, per model (2)")
    parser.add_argument("--upstream-ms", type=float, default=50.0,
                        help="latency of each fake Chat Completions answer (50)")
    parser.add_argument("--poll-after-ms", type=int, default=None,
                        help="set the bridge's POLL_AFTER_MS (default: the bridge's own default)")
    parser.add_argument("--postgres", metavar="URL", default=None,
                        help="use PostgreSQL: a database is created per model through URL and dropped")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (gunicorn logs, SQLite files) and print it")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in WORKER_MODELS]
    if unknown or not models:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(WORKER_MODELS)}")
    args.models = list(dict.fromkeys(models))
    if not 1 <= args.clients <= 1024:
        parser.error("--clients must be between 1 and 1024")
    if not 0 < args.seconds <= 3600 or not 0 <= args.warmup <= 600:
        parser.error("--seconds must be in (0, 3600] and --warmup in [0, 600]")
    if not 0 <= args.upstream_ms <= 60_000:
        parser.error("--upstream-ms must be in [0, 60000]")
    return args


def interrupt(signum, _frame):
    """Turn SIGTERM and SIGHUP into Interrupted, so they stop like Ctrl-C."""
    raise Interrupted(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C stops cleanly even when started from a shell that made SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    baseline = BASELINE if BASELINE in args.models else args.models[0]
    folder = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    registries = Registries(folder, args.postgres)
    upstream = SlowUpstream(args.upstream_ms / 1000)
    results: list[Result] = []
    try:
        import gunicorn

        upstream.start()
        print(f"worker-model benchmark: {', '.join(args.models)}; baseline {baseline}")
        print(f"  {platform.python_implementation()} {platform.python_version()}, gunicorn "
              f"{gunicorn.__version__}, {os.cpu_count()} CPUs; {WEB_CONCURRENCY} workers per server")
        print(f"  registry: {registries.describe()}")
        print(f"  upstream: fake Chat Completions at {upstream.base_url}, "
              f"{args.upstream_ms:g} ms per answer")
        print(f"  load: {args.clients} users, each: create thread, post message, start run, "
              f"poll to the end, list messages", flush=True)
        for model in args.models:
            results.append(measure(model, args, registries, upstream, folder))
        report(results, baseline)
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"\ninterrupted ({type(exc).__name__} {exc}); stopping everything", file=sys.stderr)
        if results:
            report(results, baseline)
        return 130
    finally:
        # A signal arriving now must not cut the cleanup short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        upstream.stop()
        try:
            registries.drop_all()
        finally:
            if args.keep:
                print(f"kept {folder} (gunicorn-<model>.log, registries)")
            else:
                shutil.rmtree(folder, ignore_errors=True)
    return 1 if any(r.failure for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
