#!/usr/bin/env python3
"""What the bridge adds to a request, against a bare Flask app and against the upstream alone.

    cd /path/to/assistants-bridge && .venv/bin/python bench/overhead.py [--seconds 5]
        [--rounds 2] [--postgres URL] [--load wrk|python] [--keep]

It starts, each with `gunicorn -c gunicorn.conf.py` (the production settings), a bare Flask app
that answers `{"object": "hello"}` (hello_app.py beside this file) and the bridge on the
`responses` engine with a fresh registry (SQLite in a temporary folder, or a new database through
--postgres), plus the fake OpenAI upstream (tests/fakes/openai_server.py, TCP_NODELAY on its sockets) in this
process. Rate limits stay on, set too high to refuse anything, so their cost is counted. Then,
each pair measured back to back and repeated --rounds times (the median is printed):

1. `GET /v1/threads/{id}` of an owned thread against the hello app's `GET /`, requests per second
   at 16 and 64 connections;
2. the latency the bridge adds at one client and one upstream call: `POST /v1/threads` on the
   bridge against the same `POST /conversations` sent to the fake directly, both with the openai
   SDK, alternating, p50 and p99;
3. with every upstream answer taking 50 ms, `POST /v1/threads` against `POST /conversations`
   directly, at 64 connections: requests per second, p99 and the slowest request;
4. CPU per request of the gunicorn workers (user + system time over requests served) for the
   owned GET, the hello app and `POST /v1/threads`; upstream calls per bridge request; the
   resident memory of each bridge worker.

Load comes from wrk (Debian's `wrk` package) when it is on PATH, else from a Python generator in
this process (threads with keep-alive connections, slower: it says which it used). Machines here
are noisy, so only the ratios between figures measured in the same run mean anything, and nothing
asserts a timing. Exit status 0, 1 when a server failed to start, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.fakes

import openai  # noqa: E402
import warnings  # noqa: E402

from tests.fakes.openai_server import FakeOpenAI  # noqa: E402
from worker_models import (JWT_SECRET, READY_TIMEOUT, STOP_TIMEOUT, Interrupted,  # noqa: E402
                           Registries, StartFailed, control_socket_args, free_port,
                           gunicorn_executable, http_get, interrupt, mint_token, shielded)

# The SDK flags its Assistants resources as deprecated; serving them is the point.
warnings.filterwarnings("ignore", category=DeprecationWarning, module="openai")
warnings.filterwarnings("ignore", message="The Assistants API is deprecated")

USER = "bench-user"
# High enough that nothing is refused, so the limiter's own cost is measured with the rest.
NO_REFUSALS = "100000000/minute"
SLOW_UPSTREAM_SECONDS = 0.05
LATENCY_CALLS = 300  # per side, alternating
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---- servers -------------------------------------------------------------------------------------

class Server:
    """`gunicorn -c gunicorn.conf.py APP` in its own process group, logging to a file."""

    def __init__(self, name: str, app: str, env: dict[str, str], log_path: Path,
                 ready_path: str, extra_args: tuple[str, ...] = ()):
        self.name = name
        self.port = free_port()
        self.log_path = log_path
        self.ready_path = ready_path
        self.argv = [gunicorn_executable(), "-c", "gunicorn.conf.py", *control_socket_args(),
                     *extra_args, app]
        self.env = {**{k: v for k, v in os.environ.items() if k != "GUNICORN_CMD_ARGS"},
                    "BIND": f"127.0.0.1:{self.port}", "PYTHONUNBUFFERED": "1", **env}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise StartFailed(f"{self.name}: gunicorn exited with status {self.proc.returncode}")
            try:
                if http_get(self.port, self.ready_path)[0] == 200 and len(self.workers()) > 0:
                    return
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise StartFailed(f"{self.name}: {self.ready_path} did not answer within "
                                  f"{READY_TIMEOUT:.0f} s")
            time.sleep(0.2)

    def workers(self) -> list[int]:
        """The pids of gunicorn's worker processes (the master's children)."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in children.split()]

    def cpu_seconds(self) -> float:
        """User plus system time the workers have used so far."""
        total = 0
        for pid in self.workers():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / CLOCK_TICKS

    def rss_mb(self) -> list[float]:
        sizes = []
        for pid in self.workers():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
            if match:
                sizes.append(int(match.group(1)) / 1024)
        return sizes

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(timeout=10)


# ---- load ------------------------------------------------------------------------------------------

@dataclass
class Load:
    """One measured burst of requests."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    cpu_seconds: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_seconds / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Target:
    """What to request: a URL, a method, headers and a body."""

    url: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None


_WRK_SCRIPT = """
wrk.method = {method}
wrk.body = {body}
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def _lua(text: str | None) -> str:
    return "nil" if text is None else json.dumps(text)  # a JSON string is a valid Lua string here


def run_wrk(target: Target, connections: int, seconds: float, folder: Path) -> Load:
    script = folder / "load.lua"
    script.write_text(_WRK_SCRIPT.format(
        method=_lua(target.method), body=_lua(target.body),
        headers="\n".join(f"wrk.headers[{_lua(k)}] = {_lua(v)}" for k, v in target.headers)))
    threads = min(connections, os.cpu_count() or 2)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                          "--timeout", "10s", "-s", str(script), target.url],
                         capture_output=True, text=True, check=True).stdout
    match = re.search(r"^RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$", out, re.M)
    if not match:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    requests, duration_us, p50, p99, slowest, errors = map(int, match.groups())
    return Load(requests, duration_us / 1e6, p50 / 1000, p99 / 1000, slowest / 1000, errors)


def run_python(target: Target, connections: int, seconds: float, folder: Path) -> Load:
    """The fallback generator: one thread and keep-alive connection per simulated client."""
    parts = re.match(r"http://([^:/]+):(\d+)(/.*)", target.url)
    host, port, path = parts.group(1), int(parts.group(2)), parts.group(3)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client():
        conn = http.client.HTTPConnection(host, port, timeout=10)
        mine = []
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                conn.request(target.method, path, body=target.body, headers=dict(target.headers))
                response = conn.getresponse()
                response.read()
                ok = response.status < 400
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
                ok = False
            mine.append(time.perf_counter() - start)
            if not ok:
                with lock:
                    errors[0] += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    started = time.monotonic()
    workers = [threading.Thread(target=client) for _ in range(connections)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started
    return _summary(latencies, elapsed, errors[0])


def _summary(latencies: list[float], elapsed: float, errors: int) -> Load:
    ordered = sorted(latencies) or [0.0]

    def at(share: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    return Load(len(latencies), elapsed, at(0.50), at(0.99), 1000 * ordered[-1], errors)


def measure(server: Server, target: Target, connections: int, seconds: float, folder: Path,
            generator) -> Load:
    """One burst against `server`, with the CPU its workers spent on it."""
    cpu = server.cpu_seconds()
    load = generator(target, connections, seconds, folder)
    load.cpu_seconds = server.cpu_seconds() - cpu
    return load


def median_load(loads: list[Load]) -> Load:
    """The round with the median throughput: one real measurement, not a blend of several."""
    return sorted(loads, key=lambda load: load.rps)[len(loads) // 2]


# ---- the report -----------------------------------------------------------------------------------

def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x" if baseline else "n/a"


def table(rows: list[tuple[str, ...]],
          header: tuple[str, ...] = ("figure", "bridge", "baseline", "ratio", "goal")) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Measure what the bridge adds to a request against a bare Flask app and the "
                    "upstream alone; prints ratios of figures measured in the same run.")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each burst (5)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="times each pair of bursts is repeated; the median is shown (2)")
    parser.add_argument("--postgres", metavar="URL",
                        help="registry on this PostgreSQL server (a new database, dropped after)")
    parser.add_argument("--load", choices=("wrk", "python"),
                        help="load generator (default: wrk when it is on PATH)")
    parser.add_argument("--workers", type=int, help="gunicorn workers of both servers "
                        "(default: gunicorn.conf.py's)")
    parser.add_argument("--threads", type=int, help="threads per worker of both servers "
                        "(default: gunicorn.conf.py's)")
    parser.add_argument("--keep", action="store_true", help="keep the folder with the servers' logs")
    args = parser.parse_args(argv)
    use_wrk = args.load == "wrk" or (args.load is None and shutil.which("wrk"))
    if args.load == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not on PATH (Debian: apt-get install wrk)")
    generator = run_wrk if use_wrk else run_python

    folder = Path(tempfile.mkdtemp(prefix="bridge-overhead-"))
    registries = Registries(folder, args.postgres)
    fake = FakeOpenAI(latency=0.01, max_recorded=100)
    servers: list[Server] = []

    def stop_everything() -> None:
        with shielded():
            for server in servers:
                server.stop()
            fake.stop()
            registries.drop_all()
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    # Both servers run with the same gunicorn settings, overridden here only when asked.
    shape = {name: str(value) for name, value in (("WEB_CONCURRENCY", args.workers),
                                                  ("GUNICORN_THREADS", args.threads)) if value}
    try:
        fake.start()
        hello = Server("hello", "hello_app:app", {"AUTO_MIGRATE": "false", **shape},
                       folder / "hello.log", "/", extra_args=("--pythonpath", "bench"))
        bridge = Server("bridge", "wsgi:app", {
            "DATABASE_URL": registries.new("overhead"), "JWT_SECRET_KEY": JWT_SECRET,
            "JWT_ALGORITHM": "HS256", "JWT_AUDIENCE": "", "JWT_ISSUER": "", "JWT_PUBLIC_KEY": "",
            "BRIDGE_ENGINE": "responses", "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": fake.api_key, "OPENAI_MAX_RETRIES": "0", "AUTO_MIGRATE": "true",
            "RATE_LIMIT_READS": NO_REFUSALS, "RATE_LIMIT_WRITES": NO_REFUSALS,
            "RATE_LIMIT_RUNS": NO_REFUSALS, "LOG_LEVEL": "INFO", **shape}, folder / "bridge.log",
            "/readyz")
        servers += [hello, bridge]
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        report = run_all(args, hello, bridge, fake, folder, generator)
    except StartFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        for server in servers:
            print(f"--- {server.name} log ---\n{server.log_path.read_text(errors='replace')[-3000:]}",
                  file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Interrupted):
        return 130
    finally:
        stop_everything()
    print(report)
    return 0


def run_all(args, hello: Server, bridge: Server, fake: FakeOpenAI, folder: Path, generator) -> str:
    token = mint_token(USER)
    auth = (("Authorization", f"Bearer {token}"),)
    sdk = openai.OpenAI(base_url=bridge.url + "/v1", api_key=token, max_retries=0, timeout=30)
    direct = openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0, timeout=30)
    thread_id = sdk.beta.threads.create().id
    owned_get = Target(f"{bridge.url}/v1/threads/{thread_id}", headers=auth)
    hello_get = Target(hello.url + "/")
    json_body = (("Content-Type", "application/json"),)
    bridge_post = Target(f"{bridge.url}/v1/threads", "POST", auth + json_body, "{}")
    direct_post = Target(f"{fake.base_url}/conversations", "POST",
                         (("Authorization", f"Bearer {fake.api_key}"),) + json_body,
                         json.dumps({"metadata": {"user_id": USER}}))
    # Warm both servers' workers and connections before anything is measured.
    for server, target in ((hello, hello_get), (bridge, owned_get)):
        measure(server, target, 16, 1, folder, generator)

    rows: list[tuple[str, ...]] = []
    gets: dict[int, tuple[Load, Load]] = {}
    calls_before, get_requests = sum(fake.calls().values()), 0
    for connections in (16, 64):
        pairs = [(measure(bridge, owned_get, connections, args.seconds, folder, generator),
                  measure(hello, hello_get, connections, args.seconds, folder, generator))
                 for _ in range(args.rounds)]
        get_requests += sum(pair[0].requests for pair in pairs)
        gets[connections] = (median_load([p[0] for p in pairs]), median_load([p[1] for p in pairs]))
        mine, base = gets[connections]
        rows.append((f"owned `GET /v1/threads/{{id}}`, RPS at c={connections}",
                     f"{mine.rps:,.0f}", f"hello {base.rps:,.0f}", ratio(mine.rps, base.rps),
                     ">= 0.35x"))

    get_calls = sum(fake.calls().values()) - calls_before

    # One client, one upstream call each, alternating so that drift hits both alike.
    bridge_ms, direct_ms = [], []
    calls_before = sum(fake.calls().values())
    for _ in range(LATENCY_CALLS):
        start = time.perf_counter()
        sdk.beta.threads.create()
        bridge_ms.append(1000 * (time.perf_counter() - start))
        start = time.perf_counter()
        direct.conversations.create(metadata={"user_id": USER})
        direct_ms.append(1000 * (time.perf_counter() - start))
    upstream_per_post = (sum(fake.calls().values()) - calls_before - LATENCY_CALLS) / LATENCY_CALLS
    for label, share in (("p50", 0.50), ("p99", 0.99)):
        mine = statistics.quantiles(bridge_ms, n=100)[int(share * 100) - 1]
        base = statistics.quantiles(direct_ms, n=100)[int(share * 100) - 1]
        rows.append((f"added latency at c=1, one upstream call, {label}", f"{mine:.2f} ms",
                     f"direct {base:.2f} ms", f"+{mine - base:.2f} ms",
                     "<= +2 ms" if label == "p50" else ""))

    fake.answer_delay = SLOW_UPSTREAM_SECONDS
    pairs = [(measure(bridge, bridge_post, 64, args.seconds, folder, generator),
              generator(direct_post, 64, args.seconds, folder)) for _ in range(args.rounds)]
    fake.answer_delay = 0.0
    posts, straight = median_load([p[0] for p in pairs]), median_load([p[1] for p in pairs])
    rows += [
        ("50 ms upstream, c=64, `POST /v1/threads` RPS", f"{posts.rps:,.0f}",
         f"direct {straight.rps:,.0f}", ratio(posts.rps, straight.rps), ">= 0.55x"),
        ("... p99", f"{posts.p99_ms:,.0f} ms", f"{straight.p99_ms:,.0f} ms",
         ratio(posts.p99_ms, straight.p99_ms), "<= 2x"),
        ("... slowest", f"{posts.max_ms:,.0f} ms", f"{straight.max_ms:,.0f} ms", "", "<= 1000 ms"),
        ("... errors", str(posts.errors), str(straight.errors), "", "0"),
    ]
    get64, hello64 = gets[64]
    rows += [
        ("CPU per request, owned GET (c=64)", f"{get64.cpu_ms_per_request:.2f} ms",
         f"hello {hello64.cpu_ms_per_request:.2f} ms",
         ratio(get64.cpu_ms_per_request, hello64.cpu_ms_per_request), "< 3x"),
        ("CPU per request, `POST /v1/threads` (c=64)", f"{posts.cpu_ms_per_request:.2f} ms", "",
         "", ""),
        ("upstream calls per request",
         f"GET {get_calls / max(get_requests, 1):.2f}, POST {upstream_per_post:.2f}", "", "",
         "GET 0, POST 1"),
        ("RSS per bridge worker", ", ".join(f"{mb:.0f} MB" for mb in bridge.rss_mb()),
         ", ".join(f"{mb:.0f} MB" for mb in hello.rss_mb()), "", "<= 150 MB"),
    ]
    sdk.close()
    direct.close()
    where = f"registry: {'PostgreSQL' if args.postgres else 'SQLite'}; gunicorn: " + (
        f"{args.workers or 'default'} workers x {args.threads or 'default'} threads")
    load = "wrk" if generator is run_wrk else "a Python generator (wrk not found; figures are lower)"
    return (f"load: {load}; {where}; {args.rounds} rounds of {args.seconds:g} s per burst, the "
            f"median shown\n\n{table(rows)}")


if __name__ == "__main__":
    sys.exit(main())
