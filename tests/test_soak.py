"""A short soak: bench/soak.py (gunicorn with its production config, the fake OpenAI upstream,
simulated users on a mixed workload, streamed runs among it) for a few seconds, with and without
upstream faults.

bench/soak.py checks every response for other users' data, lists everything at the end (every
accepted message exactly once, no deleted one, no run left active) and exits 0 only when all of
that held, with no 500 (and, without faults, no 5xx at all). These tests run it as a subprocess,
as an operator would, and assert its exit status; the summary it printed is shown on failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.openai_server import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
SOAK = ROOT / "bench" / "soak.py"
EXIT_NOT_STARTED = 3
TIMEOUT = 150  # seconds; the soak itself takes about 8 s of load plus start, settle and checks


def run_soak(*args: str) -> subprocess.CompletedProcess:
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        pytest.skip("gunicorn is not installed; bench/soak.py needs it")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, str(SOAK), "--users", "6", "--seconds", "8", "--engine", "responses",
         "--seed", "7", "--settle", "30", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    if result.returncode == EXIT_NOT_STARTED:
        pytest.skip("gunicorn could not start:\n" + result.stdout[-3000:] + result.stderr[-2000:])
    return result


def assert_passed(result: subprocess.CompletedProcess) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"soak failed (exit {result.returncode}):\n{output[-8000:]}"
    assert "RESULT: PASS" in result.stdout, output[-8000:]
    assert "leaks: 0" in result.stdout
    assert "non-terminal runs: 0" in result.stdout
    assert "broken streams: 0" in result.stdout


def test_soak_without_faults():
    """No 5xx at all, no leaks, every accepted message listed once, every run ended."""
    result = run_soak()
    assert_passed(result)
    assert "5xx: 0 " in result.stdout, result.stdout[-8000:]
    # Streaming users read runs to their end and checked them against polling, and left some.
    assert re.search(r"streamed runs: .*read whole, completed \d+", result.stdout), \
        result.stdout[-8000:]


def test_soak_with_upstream_faults():
    """10% 5xx, 5% 429, 5% timeouts upstream, clients retrying with Idempotency-Key: no 500,
    no lost or duplicated message, no run left active."""
    result = run_soak("--faults")
    assert_passed(result)
    assert "injected faults: none" not in result.stdout, "the fake injected no fault"


def test_fault_rates_of_the_fake_are_seeded_and_counted():
    """FakeOpenAI.fault_rates: repeatable draws, 429s with Retry-After, counts by kind."""
    import http.client
    import json

    def statuses(seed: int) -> tuple[list[int], dict[str, int], list[str | None]]:
        with FakeOpenAI() as fake:
            fake.fault_rates(error_5xx=0.3, rate_limited=0.3, timeout=0.0, seed=seed, retry_after=2)
            port = int(fake.base_url.split(":")[-1].split("/")[0])
            seen, retry_after = [], []
            for _ in range(40):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("POST", "/v1/conversations", body=json.dumps({}),
                             headers={"Authorization": f"Bearer {fake.api_key}",
                                      "Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                seen.append(response.status)
                if response.status == 429:
                    retry_after.append(response.getheader("Retry-After"))
                conn.close()
            return seen, fake.injected_faults(), retry_after

    first, injected, retry_after = statuses(11)
    again, _, _ = statuses(11)
    assert first == again
    assert {s for s in first if s >= 400} <= {429, 500, 502, 503}
    assert 200 in first and 429 in first and any(s >= 500 for s in first)
    assert sum(injected.values()) == sum(1 for s in first if s != 200)
    assert set(retry_after) == {"2"}
    with pytest.raises(ValueError):
        FakeOpenAI().fault_rates(error_5xx=0.8, rate_limited=0.3)
