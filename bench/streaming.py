#!/usr/bin/env python3
"""What streaming through the bridge costs, and how many open streams it holds.

    cd /path/to/assistants-bridge && .venv/bin/python bench/streaming.py [--streams 32,64,128,256]
        [--samples 30] [--chunks 20] [--interval-ms 20] [--capacity-interval-ms 1000]
        [--postgres URL] [--keep]

It starts the fake OpenAI upstream (tests/fakes/openai_server.py) in a process of its own,
streaming every reply in --chunks deltas --interval-ms apart, and the bridge on the `responses`
engine with `gunicorn -c gunicorn.conf.py` (rate limits too high to refuse anything). Then:

1. Latency, one stream at a time, alternating: a run streamed through the bridge
   (`POST /v1/threads/{id}/runs` with `"stream": true`) against the same background response
   streamed from the fake directly (`POST /v1/responses` with `"stream": true` on a conversation
   that holds the same message, as the bridge asks for it): the time from
   sending the request to the first text delta, and the gaps between deltas; p50 and p99 of
   each, and what the bridge adds.
2. Capacity: for each N of --streams, N streams at once, each on its own thread, while 16
   clients poll (`GET /v1/threads/{id}/runs/{run_id}` of finished runs, back to back): whether
   every stream ended with `done` and the reply's full text, and the polls' p99 in two parts:
   while the streams open (N runs created and started at once, a burst of writes) and while
   all N are open. The fake's deltas come --capacity-interval-ms apart here, so a stream lasts
   long enough for all N to be open together.

Both sides read the Server-Sent Events with the same small parser over http.client, so the
client costs the same on each. Only figures measured in the same run compare; nothing here
asserts a timing. Exit status 0, 1 when a server did not start, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from overhead import CLOCK_TICKS, NO_REFUSALS, Server, table  # noqa: E402
from worker_models import (JWT_SECRET, Interrupted, Registries, StartFailed,  # noqa: E402
                           interrupt, mint_token, shielded)

POLLERS = 16
USER_TEXT = "Tell me about streams"
EXPECTED = "echo: " + USER_TEXT  # the fake's reply to a user message it is not scripted for


# ---- the fake upstream, in a process of its own --------------------------------------------------

_FAKE = """
import sys, time
sys.path.insert(0, {root!r})
from tests.fakes.openai_server import FakeOpenAI
fake = FakeOpenAI(latency=0.0, max_recorded=100, stream_chunks={chunks},
                  stream_interval={interval})
fake.start()
print(fake.base_url, fake.api_key, flush=True)
for line in sys.stdin:  # a new pause between deltas, in seconds
    fake.stream_interval = float(line)
    print("ok", flush=True)
"""


class FakeProcess:
    """FakeOpenAI in a child process, so its work does not share this one's interpreter."""

    def __init__(self, chunks: int, interval: float):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _FAKE.format(root=str(ROOT), chunks=chunks, interval=interval)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.base_url, self.api_key = self.proc.stdout.readline().split()

    def pace(self, interval: float) -> None:
        """From now on, `interval` seconds between a reply's deltas."""
        self.proc.stdin.write(f"{interval}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.terminate()
            self.proc.wait(timeout=10)


# ---- reading a stream ----------------------------------------------------------------------------

@dataclass
class Reading:
    """What one stream delivered, and when."""

    sent: float
    delta_times: list[float] = field(default_factory=list)
    text: str = ""
    done: bool = False
    events: list[str] = field(default_factory=list)

    @property
    def first_delta_ms(self) -> float | None:
        return 1000 * (self.delta_times[0] - self.sent) if self.delta_times else None

    @property
    def gaps_ms(self) -> list[float]:
        times = self.delta_times
        return [1000 * (b - a) for a, b in zip(times, times[1:])]


def read_stream(host: str, port: int, path: str, headers: dict[str, str], body: dict,
                delta_event: str) -> Reading:
    """POST `body` and read the event stream to its end, timing each `delta_event`."""
    conn = http.client.HTTPConnection(host, port, timeout=120)
    reading = Reading(sent=time.perf_counter())
    try:
        conn.request("POST", path, body=json.dumps(body),
                     headers={**headers, "Content-Type": "application/json",
                              "Accept": "text/event-stream"})
        response = conn.getresponse()
        if response.status != 200:
            reading.events.append(f"HTTP {response.status}: {response.read()[:200]!r}")
            return reading
        name = None
        for raw in response:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
                kind = name or (json.loads(data).get("type") if data.startswith("{") else None)
                reading.events.append(kind)
                if kind == delta_event:
                    at = time.perf_counter()
                    text = _delta_text(kind, json.loads(data))
                    if text is not None:
                        reading.delta_times.append(at)
                        reading.text += text
                if kind == "done" or data == "[DONE]" or kind in ("response.completed",
                                                                  "response.failed"):
                    reading.done = True
                    break
    finally:
        conn.close()
    return reading


def _delta_text(kind: str, data: dict) -> str | None:
    """The text a delta event adds; None for an event of that name that is not a text delta."""
    if kind == "thread.message.delta":
        return "".join(part["text"]["value"] for part in data["delta"]["content"]
                       if part.get("type") == "text")
    if kind == "thread.item.updated":  # ChatKit's (bench/chatkit.py): only its text deltas count
        update = data["update"]
        return (update["delta"] if update.get("type") == "assistant_message.content_part.text_delta"
                else None)
    return data.get("delta", "")  # response.output_text.delta


# ---- the measurements ----------------------------------------------------------------------------

class Bench:
    def __init__(self, bridge: Server, fake: FakeProcess):
        self.bridge, self.fake = bridge, fake
        self.token = mint_token("bench-user")
        self.auth = {"Authorization": f"Bearer {self.token}"}
        admin = {"Authorization": f"Bearer {mint_token('bench-admin', admin=True)}"}
        self.assistant_id = self._post("/v1/assistants", {"model": "fake-model"}, admin)["id"]
        fake_url = fake.base_url.split("//", 1)[1]
        self.fake_host, rest = fake_url.split(":", 1)
        self.fake_port = int(rest.split("/", 1)[0])

    def _post(self, path: str, body: dict, headers: dict | None = None) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.bridge.port, timeout=30)
        try:
            conn.request("POST", path, body=json.dumps(body),
                         headers={**(headers or self.auth), "Content-Type": "application/json"})
            response = conn.getresponse()
            answer = json.loads(response.read())
            if response.status != 200:
                raise RuntimeError(f"POST {path}: {response.status} {answer}")
            return answer
        finally:
            conn.close()

    def new_thread(self) -> str:
        return self._post("/v1/threads", {"messages": [{"role": "user", "content": USER_TEXT}]})["id"]

    def through_bridge(self, thread_id: str) -> Reading:
        return read_stream("127.0.0.1", self.bridge.port, f"/v1/threads/{thread_id}/runs",
                           self.auth, {"assistant_id": self.assistant_id, "stream": True},
                           "thread.message.delta")

    def direct(self) -> Reading:
        # The request the bridge makes for a run: a background response on a conversation that
        # holds the user's message (made beforehand, as the bridge's thread was).
        headers = {"Authorization": f"Bearer {self.fake.api_key}", "Content-Type": "application/json"}
        conn = http.client.HTTPConnection(self.fake_host, self.fake_port, timeout=30)
        try:
            conn.request("POST", "/v1/conversations", headers=headers, body=json.dumps(
                {"items": [{"type": "message", "role": "user", "content": USER_TEXT}]}))
            conversation = json.loads(conn.getresponse().read())["id"]
        finally:
            conn.close()
        return read_stream(self.fake_host, self.fake_port, "/v1/responses", headers,
                           {"model": "fake-model", "conversation": conversation, "stream": True,
                            "background": True, "store": True}, "response.output_text.delta")

    def latency(self, samples: int) -> list[tuple[str, ...]]:
        bridge, direct = [], []
        for _ in range(3):  # warm both paths
            self.through_bridge(self.new_thread())
            self.direct()
        for _ in range(samples):
            bridge.append(self.through_bridge(self.new_thread()))
            direct.append(self.direct())
        rows = []
        for label, pick in (("time to first delta", lambda r: [r.first_delta_ms]),
                            ("time between deltas", lambda r: r.gaps_ms)):
            mine = [v for r in bridge for v in pick(r) if v is not None]
            base = [v for r in direct for v in pick(r) if v is not None]
            for name, share in (("p50", 0.50), ("p99", 0.99)):
                a, b = _quantile(mine, share), _quantile(base, share)
                goal = {"time to first delta": "<= +5 ms", "time between deltas": "<= +1 ms"}[label]
                rows.append((f"{label}, {name}", f"{a:.2f} ms", f"direct {b:.2f} ms",
                             f"+{a - b:.2f} ms", goal if name == "p50" else ""))
        wrong = sum(not r.done or r.text != EXPECTED for r in bridge)
        rows.append(("streams with a wrong or unfinished reply", str(wrong), "", "", "0"))
        return rows

    def capacity(self, n: int, finished: list[str]) -> tuple[str, ...]:
        threads = [self.new_thread() for _ in range(n)]
        results: list[Reading] = []
        lock = threading.Lock()
        start = threading.Barrier(n + 1)

        def stream(thread_id: str) -> None:
            start.wait()
            reading = self.through_bridge(thread_id)
            with lock:
                results.append(reading)

        streamers = [threading.Thread(target=stream, args=(t,)) for t in threads]
        for streamer in streamers:
            streamer.start()
        stop = threading.Event()
        latencies: list[tuple[float, float]] = []
        pollers = [threading.Thread(target=self._poll, args=(finished, stop, latencies, lock))
                   for _ in range(POLLERS)]
        start.wait()
        started = time.perf_counter()
        cpu = self.bridge.cpu_seconds(), self.fake.cpu_seconds()
        for poller in pollers:
            poller.start()
        for streamer in streamers:
            streamer.join()
        stop.set()
        for poller in pollers:
            poller.join()
        wall = time.perf_counter() - started
        bridge_cpu, fake_cpu = self.bridge.cpu_seconds() - cpu[0], self.fake.cpu_seconds() - cpu[1]
        good = sum(r.done and r.text == EXPECTED for r in results)
        refused = sum(any(str(e).startswith("HTTP 503") for e in r.events) for r in results)
        # While they open (each run created and started) and then while all of them are open:
        # from the last stream's first delta to the first stream's last.
        all_open = max((r.delta_times[0] for r in results if r.delta_times), default=0.0)
        first_end = min((r.delta_times[-1] for r in results if r.delta_times), default=0.0)
        opening = [ms for at, ms in latencies if at < all_open]
        held = [ms for at, ms in latencies if all_open <= at and at + ms / 1000 <= first_end]
        return (f"{n} streams open while {POLLERS} clients poll (CPU: bridge {bridge_cpu:.1f} s, "
                f"fake {fake_cpu:.1f} s, in {wall:.1f} s)", f"{good}/{n} complete"
                + (f", {refused} refused (503)" if refused else ""),
                f"poll p99 {_quantile(opening, 0.99):.0f} ms while they open "
                f"({(all_open - started) * 1000:.0f} ms)",
                f"poll p99 {_quantile(held, 0.99):.0f} ms while all are open "
                f"(p50 {_quantile(held, 0.5):.0f} ms, {len(held)} polls)",
                "all complete, p99 < 250 ms")

    def finished_runs(self) -> list[str]:
        """A finished run for each poller to read."""
        paths = []
        for _ in range(POLLERS):
            thread_id = self.new_thread()
            reading = self.through_bridge(thread_id)
            assert reading.done, reading.events[-3:]
            run = self._get(f"/v1/threads/{thread_id}/runs?limit=1")["data"][0]
            paths.append(f"/v1/threads/{thread_id}/runs/{run['id']}")
        return paths

    def _get(self, path: str) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.bridge.port, timeout=30)
        try:
            conn.request("GET", path, headers=self.auth)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def _poll(self, paths: list[str], stop: threading.Event,
              latencies: list[tuple[float, float]],
              lock: threading.Lock) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.bridge.port, timeout=30)
        mine, index = [], 0
        while not stop.is_set():
            started = time.perf_counter()
            conn.request("GET", paths[index % len(paths)], headers=self.auth)
            conn.getresponse().read()
            mine.append((started, 1000 * (time.perf_counter() - started)))
            index += 1
        conn.close()
        with lock:
            latencies.extend(mine)


def _quantile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Measure the latency streaming through the bridge adds, and how many open "
                    "streams it holds while other clients poll.")
    parser.add_argument("--streams", default="32,64,128,256",
                        help="how many streams to hold at once, comma-separated (32,64,128,256)")
    parser.add_argument("--samples", type=int, default=30, help="streams per side for latency (30)")
    parser.add_argument("--chunks", type=int, default=20, help="deltas per reply (20)")
    parser.add_argument("--interval-ms", type=float, default=20.0,
                        help="milliseconds between the fake's deltas (20)")
    parser.add_argument("--capacity-interval-ms", type=float, default=1000.0,
                        help="milliseconds between deltas while measuring capacity (1000)")
    parser.add_argument("--postgres", metavar="URL", help="registry on this PostgreSQL server")
    parser.add_argument("--keep", action="store_true", help="keep the folder with the logs")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.streams.split(",") if n.strip()]

    folder = Path(tempfile.mkdtemp(prefix="bridge-streaming-"))
    registries = Registries(folder, args.postgres)
    fake = bridge = None
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    try:
        fake = FakeProcess(args.chunks, args.interval_ms / 1000)
        bridge = Server("bridge", "wsgi:app", {
            "DATABASE_URL": registries.new("streaming"), "JWT_SECRET_KEY": JWT_SECRET,
            "JWT_ALGORITHM": "HS256", "JWT_AUDIENCE": "", "JWT_ISSUER": "", "JWT_PUBLIC_KEY": "",
            "BRIDGE_ENGINE": "responses", "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": fake.api_key, "OPENAI_MAX_RETRIES": "0", "AUTO_MIGRATE": "true",
            "RATE_LIMIT_READS": NO_REFUSALS, "RATE_LIMIT_WRITES": NO_REFUSALS,
            "RATE_LIMIT_RUNS": NO_REFUSALS}, folder / "bridge.log", "/readyz")
        bridge.start()
        bridge.wait_ready()
        bench = Bench(bridge, fake)
        rows = bench.latency(args.samples)
        finished = bench.finished_runs()
        # Streams long enough that all of them are open at once for a while.
        fake.pace(args.capacity_interval_ms / 1000)
        rows += [bench.capacity(n, finished) for n in counts]
    except StartFailed as exc:
        print(f"error: {exc}\n{(folder / 'bridge.log').read_text(errors='replace')[-3000:]}",
              file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Interrupted):
        return 130
    finally:
        with shielded():
            if bridge is not None:
                bridge.stop()
            if fake is not None:
                fake.stop()
            registries.drop_all()
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    print(f"fake upstream: {args.chunks} deltas per reply, {args.interval_ms:g} ms apart; "
          f"registry: {'PostgreSQL' if args.postgres else 'SQLite'}\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
