#!/usr/bin/env python3
"""Count the upstream calls that client polls of a run cost, on the engines whose runs live upstream.

    cd /path/to/assistants-bridge && .venv/bin/python bench/poll_cost.py [--clients 20]
        [--seconds 3] [--poll-after-ms 500] [--engines responses,assistants]

For each engine it serves the bridge on 127.0.0.1 (a temporary SQLite registry) in front of the
fake OpenAI upstream (`tests/fakes/openai_server.py`), starts one run while the fake holds the
model's output, and lets --clients clients poll that run as fast as they can for --seconds
(ignoring `openai-poll-after-ms`, the worst case). It counts the polls the bridge answered and
the retrieve calls the fake received: for a running run, and again for the same run once it has
finished. Counts, not timings: they do not depend on the machine.

The bridge asks the upstream about an active run at most once per poll interval, however many
clients poll, and never about a finished one; so the expected upstream calls for the running run
are at most seconds / interval (+1), and 0 for the finished run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.fakes

from werkzeug.serving import make_server  # noqa: E402

from bridge import create_app  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI  # noqa: E402

RETRIEVE = {"responses": "GET /v1/responses/{id}",
            "assistants": "GET /v1/threads/{id}/runs/{run_id}"}


def _token(app, user: str, admin: bool = False) -> str:
    from bridge.auth import tokens

    with app.app_context():
        return tokens().mint(user, ttl=3600, claims={"role": "admin"} if admin else {})


class _Client:
    """A keep-alive JSON client of the bridge for one user."""

    def __init__(self, port: int, token: str):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        self.connection.request(method, "/v1" + path, headers=self.headers,
                                body=json.dumps(body) if body is not None else None)
        response = self.connection.getresponse()
        answer = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status} {answer}")
        return answer

    def close(self) -> None:
        self.connection.close()


def _hammer(port: int, token: str, path: str, clients: int, seconds: float) -> int:
    """Poll `path` from `clients` threads for `seconds`; the number of answered polls."""
    deadline = time.monotonic() + seconds
    counts = [0] * clients

    def poll(index: int) -> None:
        client = _Client(port, token)
        try:
            while time.monotonic() < deadline:
                client.request("GET", path)
                counts[index] += 1
        finally:
            client.close()

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(poll, range(clients)))
    return sum(counts)


def measure(engine: str, clients: int, seconds: float, poll_after_ms: int) -> dict[str, float]:
    with FakeOpenAI(latency=0.05) as fake, tempfile.TemporaryDirectory() as folder:
        app = create_app({"DATABASE_URL": f"sqlite:///{folder}/bench.db",
                          "JWT_SECRET_KEY": "bench-" + "x" * 40, "BRIDGE_ENGINE": engine,
                          "OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.base_url,
                          "POLL_AFTER_MS": poll_after_ms})
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_port
        admin, user = _Client(port, _token(app, "ops", admin=True)), _Client(port, _token(app, "alice"))
        try:
            assistant = admin.request("POST", "/assistants", {"model": "fake-model"})["id"]
            thread = user.request("POST", "/threads", {
                "messages": [{"role": "user", "content": "hello"}]})["id"]
            fake.hold()
            run = user.request("POST", f"/threads/{thread}/runs", {"assistant_id": assistant})["id"]
            path = f"/threads/{thread}/runs/{run}"
            before = fake.calls(RETRIEVE[engine])
            running_polls = _hammer(port, _token(app, "alice"), path, clients, seconds)
            running_calls = fake.calls(RETRIEVE[engine]) - before
            fake.release()
            status = "in_progress"
            for _ in range(200):
                status = user.request("GET", path)["status"]
                if status == "completed":
                    break
                time.sleep(poll_after_ms / 1000)
            if status != "completed":
                raise RuntimeError(f"{engine}: the run did not complete ({status})")
            before = fake.calls(RETRIEVE[engine])
            finished_polls = _hammer(port, _token(app, "alice"), path, clients, seconds)
            finished_calls = fake.calls(RETRIEVE[engine]) - before
        finally:
            admin.close()
            user.close()
            server.shutdown()
            app.extensions["bridge.engine"].shutdown()
    return {"running_polls": running_polls, "running_calls": running_calls,
            "finished_polls": finished_polls, "finished_calls": finished_calls}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--poll-after-ms", type=int, default=500)
    parser.add_argument("--engines", default="responses,assistants")
    options = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per poll
    bound = int(options.seconds * 1000 / options.poll_after_ms) + 1
    print(f"{options.clients} clients polling one run for {options.seconds:g} s each, "
          f"POLL_AFTER_MS={options.poll_after_ms} (at most {bound} upstream calls expected "
          "while running, 0 once finished)")
    print(f"{'engine':<11} {'run':<9} {'client polls':>12} {'upstream calls':>14} "
          f"{'calls per poll':>14}")
    for engine in options.engines.split(","):
        figures = measure(engine, options.clients, options.seconds, options.poll_after_ms)
        for state in ("running", "finished"):
            polls, calls = figures[f"{state}_polls"], figures[f"{state}_calls"]
            print(f"{engine:<11} {state:<9} {polls:>12} {calls:>14} {calls / max(polls, 1):>14.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
