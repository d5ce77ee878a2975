#!/usr/bin/env python3
"""What a ChatKit message costs over the same message and run through /v1, on one server.

    cd /path/to/assistants-bridge && .venv/bin/python bench/chatkit.py [--seconds 40]
        [--rounds N] [--engine responses|offline] [--chunks 20] [--interval-ms 20]
        [--postgres URL] [--keep]

It starts the bridge with `gunicorn -c gunicorn.conf.py` (as `make run` does; rate limits too
high to refuse anything, CHATKIT_ASSISTANT naming an assistant it then creates) on the
`responses` engine in front of the fake OpenAI upstream in a process of its own (every reply
streamed in --chunks deltas, --interval-ms apart), or on the `offline` engine. Each round
makes two empty threads with `POST /v1/threads` (not timed), then, one after the other and
in alternating order:

- /v1: `POST /v1/threads/{id}/messages` and then `POST /v1/threads/{id}/runs` with
  `"stream": true`, timed together from sending the message, since ChatKit stores the
  message too; the run alone is timed from sending it;
- ChatKit: `threads.add_user_message` with the same text, on the other thread.

For each: the time to the first text delta (`thread.message.delta`; ChatKit's
`thread.item.updated` with a text delta) and to the end of the stream, p50 and p99, what
ChatKit adds, and the gunicorn workers' CPU per request. The bridge imports the chatkit
package on a worker's first ChatKit request: each worker's first one is timed on its own,
before anything is measured, and kept out of the medians.

Both sides read the Server-Sent Events with bench/streaming.py's parser. Only figures of one
run compare; nothing here asserts a timing. Exit status 0, 1 when the server did not start, 130
on Ctrl-C.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent

from overhead import CLOCK_TICKS, NO_REFUSALS, Server, table  # noqa: E402
from streaming import (EXPECTED, USER_TEXT, FakeProcess, Reading, _quantile,  # noqa: E402
                       read_stream)
from worker_models import (JWT_SECRET, Interrupted, Registries, StartFailed,  # noqa: E402
                           interrupt, mint_token, shielded)

# This file's name shadows the openai-chatkit package for a script run from this folder.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH]
from chatkit.types import (InferenceOptions, ThreadAddUserMessageParams,  # noqa: E402
                           ThreadsAddUserMessageReq, ThreadStreamEvent, UserMessageInput,
                           UserMessageTextContent)
from pydantic import TypeAdapter  # noqa: E402

ASSISTANT = "bench-chatkit"
WARM_ROUNDS = 3
# Importing the package costs a worker over a second of CPU; a warm request, tens of ms.
IMPORT_CPU_SECONDS = 0.5
COLD_TRIES = 12


@dataclass
class Sample:
    """One timed request: milliseconds from sending it (the message, for /v1)."""

    first_ms: float | None
    end_ms: float
    cpu_ms: float
    right: bool
    run_first_ms: float | None = None  # /v1: from sending the run
    run_end_ms: float | None = None


def _cpu_of(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


class ChatKitBench:
    def __init__(self, bridge: Server, engine: str):
        self.bridge, self.engine = bridge, engine
        self.auth = {"Authorization": f"Bearer {mint_token('bench-user')}"}
        admin = {"Authorization": f"Bearer {mint_token('bench-admin', admin=True)}"}
        self.assistant_id = self._post("/v1/assistants", {"model": "fake-model",
                                                          "name": ASSISTANT}, admin)["id"]
        self.expected = EXPECTED  # the fake's; the offline engine's is read in warm_v1

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
        return self._post("/v1/threads", {})["id"]

    def v1(self, thread_id: str) -> Sample:
        cpu = self.bridge.cpu_seconds()
        sent = time.perf_counter()
        self._post(f"/v1/threads/{thread_id}/messages", {"role": "user", "content": USER_TEXT})
        reading = read_stream("127.0.0.1", self.bridge.port, f"/v1/threads/{thread_id}/runs",
                              self.auth, {"assistant_id": self.assistant_id, "stream": True},
                              "thread.message.delta")
        ended = time.perf_counter()
        first = reading.delta_times[0] if reading.delta_times else None
        return Sample(first_ms=_ms(sent, first), end_ms=1000 * (ended - sent),
                      cpu_ms=1000 * (self.bridge.cpu_seconds() - cpu),
                      right=reading.done and reading.text == self.expected,
                      run_first_ms=reading.first_delta_ms,
                      run_end_ms=1000 * (ended - reading.sent))

    def chatkit(self, thread_id: str) -> Sample:
        cpu = self.bridge.cpu_seconds()
        reading = self._chatkit_reading(thread_id)
        ended = time.perf_counter()
        first = reading.delta_times[0] if reading.delta_times else None
        return Sample(first_ms=_ms(reading.sent, first), end_ms=1000 * (ended - reading.sent),
                      cpu_ms=1000 * (self.bridge.cpu_seconds() - cpu),
                      right=_chatkit_finished(reading) and reading.text == self.expected)

    def _chatkit_reading(self, thread_id: str) -> Reading:
        return read_stream("127.0.0.1", self.bridge.port, "/chatkit", self.auth,
                           json.loads(_add_user_message(thread_id)), "thread.item.updated")

    # ---- before anything is measured -------------------------------------------------------

    def warm_v1(self) -> None:
        """/v1 streamed runs on every worker: concurrent, so that each worker gets some."""
        def user() -> None:
            for _ in range(2):
                self.v1(self.new_thread())

        users = [threading.Thread(target=user) for _ in range(4)]
        for thread in users:
            thread.start()
        for thread in users:
            thread.join()
        if self.engine == "offline":  # its reply is its own: both sides must give /v1's
            probe = self.new_thread()
            self._post(f"/v1/threads/{probe}/messages", {"role": "user", "content": USER_TEXT})
            self.expected = read_stream(
                "127.0.0.1", self.bridge.port, f"/v1/threads/{probe}/runs", self.auth,
                {"assistant_id": self.assistant_id, "stream": True},
                "thread.message.delta").text

    def fresh_workers(self) -> tuple[list[tuple[int, Sample]], list[int]]:
        """Each worker's first ChatKit request, one at a time, told apart by the worker whose
        CPU jumps with the import; workers that none reached are warmed by bursts, untimed."""
        cold = set(self.bridge.workers())
        first: list[tuple[int, Sample]] = []
        for _ in range(COLD_TRIES):
            if not cold:
                break
            thread_id = self.new_thread()
            before = {pid: _cpu_of(pid) for pid in cold}
            sample = self.chatkit(thread_id)
            for pid in [pid for pid in cold if _cpu_of(pid) - before[pid] > IMPORT_CPU_SECONDS]:
                cold.discard(pid)
                first.append((pid, sample))
        burst_warmed = []
        for _ in range(3):
            if not cold:
                break
            before = {pid: _cpu_of(pid) for pid in cold}
            threads = [self.new_thread() for _ in range(8)]
            users = [threading.Thread(target=self.chatkit, args=(t,)) for t in threads]
            for user in users:
                user.start()
            for user in users:
                user.join()
            for pid in [pid for pid in cold if _cpu_of(pid) - before[pid] > IMPORT_CPU_SECONDS]:
                cold.discard(pid)
                burst_warmed.append(pid)
        return first, burst_warmed

    def check_frames(self) -> int:
        """How many frames of one ChatKit answer ChatKit's own types refuse (read untimed)."""
        events = TypeAdapter(ThreadStreamEvent)
        thread_id = self.new_thread()
        conn = http.client.HTTPConnection("127.0.0.1", self.bridge.port, timeout=60)
        try:
            conn.request("POST", "/chatkit", body=_add_user_message(thread_id),
                         headers={**self.auth, "Content-Type": "application/json"})
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        refused = 0
        for frame in filter(str.strip, text.split("\n\n")):
            try:
                events.validate_json(frame.removeprefix("data: "))
            except ValueError:
                refused += 1
        return refused

    # ---- the measurement -------------------------------------------------------------------

    def rounds(self, seconds: float, count: int | None) -> tuple[list[Sample], list[Sample]]:
        for index in range(WARM_ROUNDS):
            self._round(index, [], [])
        v1, chatkit = [], []
        deadline = time.monotonic() + seconds
        index = 0
        while (index < count) if count is not None else (time.monotonic() < deadline):
            self._round(index, v1, chatkit)
            index += 1
        return v1, chatkit

    def _round(self, index: int, v1: list[Sample], chatkit: list[Sample]) -> None:
        threads = self.new_thread(), self.new_thread()
        # Alternating which goes first, so that what one leaves behind (a run's last
        # bookkeeping, a flushed log) falls on each side alike.
        if index % 2 == 0:
            v1.append(self.v1(threads[0]))
            chatkit.append(self.chatkit(threads[1]))
        else:
            chatkit.append(self.chatkit(threads[1]))
            v1.append(self.v1(threads[0]))


def _add_user_message(thread_id: str) -> str:
    return ThreadsAddUserMessageReq(params=ThreadAddUserMessageParams(
        thread_id=thread_id, input=UserMessageInput(
            content=[UserMessageTextContent(text=USER_TEXT)], attachments=[],
            inference_options=InferenceOptions()))).model_dump_json()


def _chatkit_finished(reading: Reading) -> bool:
    # A ChatKit stream has no `done`: it ends after the reply's thread.item.done (the user
    # message has one first), without an error event.
    return reading.events.count("thread.item.done") >= 2 and "error" not in reading.events


def _ms(start: float, at: float | None) -> float | None:
    return None if at is None else 1000 * (at - start)


# ---- the report ------------------------------------------------------------------------------

def _fmt(ms: float) -> str:
    return f"{ms:,.1f} ms"


def report(v1: list[Sample], chatkit: list[Sample], fresh: list[tuple[int, Sample]],
           burst_warmed: list[int], refused_frames: int) -> tuple[str, dict[str, float]]:
    rows: list[tuple[str, ...]] = []
    figures: dict[str, float] = {}
    for label, key, run_key in (("first text delta", "first_ms", "run_first_ms"),
                                ("end of stream", "end_ms", "run_end_ms")):
        mine = [getattr(s, key) for s in chatkit if getattr(s, key) is not None]
        base = [getattr(s, key) for s in v1 if getattr(s, key) is not None]
        alone = [getattr(s, run_key) for s in v1 if getattr(s, run_key) is not None]
        # Each round's pair ran back to back: the median of their differences is steadier
        # against drift than the difference of the medians.
        paired = [getattr(c, key) - getattr(b, key) for c, b in zip(chatkit, v1)
                  if getattr(c, key) is not None and getattr(b, key) is not None]
        for name, share in (("p50", 0.50), ("p99", 0.99)):
            a, b, r = _quantile(mine, share), _quantile(base, share), _quantile(alone, share)
            added = f"{a - b:+,.1f} ms"
            if name == "p50":
                middle = statistics.median(paired) if paired else float("nan")
                added += f" (paired {middle:+,.1f} ms)"
                figures[f"{key} paired"] = middle
            figures.update({f"{key} {name} chatkit": a, f"{key} {name} v1": b,
                            f"{key} {name} run": r})
            rows.append((f"{label}, {name}", _fmt(a), _fmt(b), added, _fmt(r)))
    cpu_ck = statistics.mean(s.cpu_ms for s in chatkit)
    cpu_v1 = statistics.mean(s.cpu_ms for s in v1)
    figures.update({"cpu chatkit": cpu_ck, "cpu v1": cpu_v1})
    rows.append(("worker CPU per request, mean", _fmt(cpu_ck), _fmt(cpu_v1),
                 f"{cpu_ck - cpu_v1:+,.1f} ms", ""))
    rows.append(("replies wrong or unfinished", f"{sum(not s.right for s in chatkit)}"
                 f"/{len(chatkit)}", f"{sum(not s.right for s in v1)}/{len(v1)}", "", ""))
    rows.append(("ChatKit frames its types refuse (one answer)", str(refused_frames), "", "", ""))
    warm_first, warm_end = figures["first_ms p50 chatkit"], figures["end_ms p50 chatkit"]
    for number, (pid, sample) in enumerate(fresh, 1):
        first = sample.first_ms if sample.first_ms is not None else float("nan")
        rows.append((f"first ChatKit request in a fresh worker ({number} of {len(fresh)}, "
                     f"pid {pid}): first delta, end",
                     f"{_fmt(first)}, {_fmt(sample.end_ms)}",
                     f"warm ChatKit p50 {_fmt(warm_first)}, {_fmt(warm_end)}",
                     f"{first - warm_first:+,.0f} ms, {sample.end_ms - warm_end:+,.0f} ms",
                     f"CPU {_fmt(sample.cpu_ms)}"))
    for pid in burst_warmed:
        rows.append((f"fresh worker pid {pid}", "first reached by a burst: not timed", "", "",
                     ""))
    header = ("figure", "ChatKit", "/v1 message + run", "ChatKit adds", "/v1 run alone")
    return table(rows, header), figures


def quote(figures: dict[str, float], fresh: list[tuple[int, Sample]], rounds: int,
          setup: str) -> str:
    """The figures as a sentence, for a closing note."""
    f = figures
    text = (f"ChatKit `threads.add_user_message` against `POST /v1/threads/{{id}}/messages` + "
            f"streamed `POST /runs` ({setup}, {rounds} interleaved rounds): first text delta "
            f"p50 {f['first_ms p50 chatkit']:.1f} vs {f['first_ms p50 v1']:.1f} ms "
            f"({f['first_ms p50 chatkit'] - f['first_ms p50 v1']:+.1f} ms, paired "
            f"{f['first_ms paired']:+.1f} ms; run alone {f['first_ms p50 run']:.1f} ms), "
            f"p99 {f['first_ms p99 chatkit']:.1f} vs {f['first_ms p99 v1']:.1f} ms; "
            f"end of stream p50 {f['end_ms p50 chatkit']:.1f} vs {f['end_ms p50 v1']:.1f} ms "
            f"({f['end_ms p50 chatkit'] - f['end_ms p50 v1']:+.1f} ms), "
            f"p99 {f['end_ms p99 chatkit']:.1f} vs {f['end_ms p99 v1']:.1f} ms; worker CPU "
            f"{f['cpu chatkit']:.1f} vs {f['cpu v1']:.1f} ms per request")
    if fresh:
        text += "; first ChatKit request in a fresh worker: " + ", ".join(
            f"first delta {s.first_ms or float('nan'):,.0f} ms (end {s.end_ms:,.0f} ms)"
            for _, s in fresh)
    return text + "."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Measure what a ChatKit message (threads.add_user_message) adds over the "
                    "same message and streamed run through /v1, on one server, interleaved.")
    parser.add_argument("--seconds", type=float, default=40.0,
                        help="how long to repeat the measured rounds (40)")
    parser.add_argument("--rounds", type=int,
                        help="measure exactly this many rounds instead of --seconds")
    parser.add_argument("--engine", choices=("responses", "offline"), default="responses",
                        help="the bridge's engine (responses, against the fake upstream)")
    parser.add_argument("--chunks", type=int, default=20, help="the fake's deltas per reply (20)")
    parser.add_argument("--interval-ms", type=float, default=20.0,
                        help="milliseconds between the fake's deltas (20)")
    parser.add_argument("--postgres", metavar="URL", help="registry on this PostgreSQL server")
    parser.add_argument("--keep", action="store_true", help="keep the folder with the log")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="bridge-chatkit-"))
    registries = Registries(folder, args.postgres)
    fake = bridge = None
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    try:
        env = {"DATABASE_URL": registries.new("chatkit"), "JWT_SECRET_KEY": JWT_SECRET,
               "JWT_ALGORITHM": "HS256", "JWT_AUDIENCE": "", "JWT_ISSUER": "",
               "JWT_PUBLIC_KEY": "", "BRIDGE_ENGINE": args.engine, "AUTO_MIGRATE": "true",
               "CHATKIT_ASSISTANT": ASSISTANT, "RATE_LIMIT_READS": NO_REFUSALS,
               "RATE_LIMIT_WRITES": NO_REFUSALS, "RATE_LIMIT_RUNS": NO_REFUSALS}
        if args.engine == "responses":
            fake = FakeProcess(args.chunks, args.interval_ms / 1000)
            env.update({"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": fake.api_key,
                        "OPENAI_MAX_RETRIES": "0"})
        bridge = Server("bridge", "wsgi:app", env, folder / "bridge.log", "/readyz")
        bridge.start()
        bridge.wait_ready()
        bench = ChatKitBench(bridge, args.engine)
        bench.warm_v1()
        fresh, burst_warmed = bench.fresh_workers()
        refused = bench.check_frames()
        v1, chatkit = bench.rounds(args.seconds, args.rounds)
        workers = len(bridge.workers())
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
    upstream = (f"fake upstream, {args.chunks} deltas per reply {args.interval_ms:g} ms apart"
                if args.engine == "responses" else "no upstream")
    setup = (f"{args.engine} engine, {upstream}, "
             f"{'PostgreSQL' if args.postgres else 'SQLite'}, {workers} gunicorn workers")
    rendered, figures = report(v1, chatkit, fresh, burst_warmed, refused)
    print(f"{setup}; {len(v1)} rounds, each a /v1 message + streamed run and a ChatKit "
          f"message on threads made alike, in alternating order"
          + ("; with under 100 rounds a p99 is the slowest of its side" if len(v1) < 100 else "")
          + "\n")
    print(rendered)
    print("\n" + quote(figures, fresh, len(v1), setup))
    return 0


if __name__ == "__main__":
    sys.exit(main())
