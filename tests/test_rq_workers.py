"""Runs executed by RQ workers on Redis (RUN_EXECUTOR=rq): real `flask run-worker` processes.

Needs Redis at TEST_REDIS_URL (default redis://127.0.0.1:6379/15); skipped with the reason when it
does not answer. Each test uses a queue of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import JWT_SECRET, engine_settings, wait_for

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_url():
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture
def rq_bridge(start_bridge, redis_url, request, tmp_path):
    """Start a bridge whose runs go to a fresh RQ queue, and `worker()` to serve that queue."""
    queue = f"test-runs-{uuid.uuid4().hex[:10]}"
    workers: list[subprocess.Popen] = []

    def start(engine: str = "offline", **overrides):
        settings = {"RUN_EXECUTOR": "rq", "REDIS_URL": redis_url, "RQ_QUEUE": queue, **overrides}
        bridge = start_bridge(engine, **settings)
        _, engine_env = engine_settings(request, engine)
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("OPENAI_", "BRIDGE_", "RUN_", "DATABASE_URL"))}
        env.update({key: str(value) for key, value in {**engine_env, **settings}.items()})
        env.update(DATABASE_URL=bridge.app.config["BRIDGE_SETTINGS"].DATABASE_URL,
                   JWT_SECRET_KEY=JWT_SECRET, AUTO_MIGRATE="false", PYTHONWARNINGS="ignore")

        def worker() -> subprocess.Popen:
            with open(tmp_path / f"worker-{len(workers)}.log", "wb") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "flask", "--app", "bridge", "run-worker"], cwd=ROOT,
                    env=env, stdout=log, stderr=subprocess.STDOUT)
            workers.append(process)
            return process

        bridge.worker = worker
        return bridge

    yield start
    for process in workers:
        process.terminate()
    for process in workers:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    import redis

    connection = redis.Redis.from_url(redis_url)
    for key in connection.scan_iter(f"*{queue}*"):
        connection.delete(key)


@pytest.mark.parametrize("engine", ["offline", "chat"])
def test_a_worker_process_executes_the_runs(rq_bridge, engine):
    bridge = rq_bridge(engine)
    client = bridge.sdk("alice")
    if engine == "chat":
        bridge.fake.enqueue("answered by the worker")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "via redis"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=bridge.assistant())

    # Nothing in the web process executes it: it waits in the queue until a worker comes.
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "queued"
    bridge.worker()

    done = client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=50)
    assert done.status == "completed"
    reply = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data[0]
    expected = "answered by the worker" if engine == "chat" else "via redis"
    assert expected in reply.content[0].text.value
    assert bridge.app.extensions["bridge.engine"]._runs._threads == set()


def test_a_cancel_reaches_the_run_in_the_worker(rq_bridge):
    bridge = rq_bridge("offline", OFFLINE_REPLY_DELAY=30)
    client = bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "slow"}])
    bridge.worker()
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=bridge.assistant())
    wait_for(lambda: client.beta.threads.runs.retrieve(
        run.id, thread_id=thread.id).status == "in_progress", timeout=20)

    client.beta.threads.runs.cancel(run.id, thread_id=thread.id)

    final = client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=50)
    assert final.status == "cancelled"
    # The worker let go of it: it takes the next run at once instead of waiting out the 30 s.
    second = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=bridge.assistant())
    wait_for(lambda: client.beta.threads.runs.retrieve(
        second.id, thread_id=thread.id).status == "in_progress", timeout=10)
    client.beta.threads.runs.cancel(second.id, thread_id=thread.id)
    assert client.beta.threads.runs.poll(second.id, thread_id=thread.id,
                                         poll_interval_ms=50).status == "cancelled"


def test_several_workers_share_one_queue_and_each_run_executes_once(rq_bridge):
    bridge = rq_bridge("offline")
    client = bridge.sdk("alice")
    assistant_id = bridge.assistant()
    threads = [client.beta.threads.create(messages=[{"role": "user", "content": f"n{i}"}])
               for i in range(6)]
    runs = [client.beta.threads.runs.create(thread_id=t.id, assistant_id=assistant_id)
            for t in threads]
    bridge.worker(), bridge.worker()

    for thread, run in zip(threads, runs):
        done = client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=50)
        assert done.status == "completed"
        replies = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data
        assert len(replies) == 1


def test_rq_executor_needs_redis_url(make_app):
    with pytest.raises(Exception, match="RUN_EXECUTOR=rq needs REDIS_URL"):
        make_app(RUN_EXECUTOR="rq")


@pytest.mark.parametrize("engine", ["offline", "chat"])
def test_a_run_a_worker_executes_streams_through_redis(rq_bridge, engine):
    """The worker process appends the run's events to a Redis Stream; the web process's stream
    reads them there."""
    bridge = rq_bridge(engine)
    bridge.worker()
    client = bridge.sdk("alice")
    if engine == "chat":
        bridge.fake.enqueue("streamed from the worker")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])

    with client.beta.threads.runs.stream(thread_id=thread.id,
                                         assistant_id=bridge.assistant()) as stream:
        names = [event.event for event in stream]
        run = stream.get_final_run()
        text = "".join(part.text.value for message in stream.get_final_messages()
                       for part in message.content)

    assert run.status == "completed"
    assert names.count("thread.message.delta") >= 2  # the deltas, not only the registry's end
    (reply,) = client.beta.threads.messages.list(thread.id, run_id=run.id).data
    assert reply.content[0].text.value == text
    if engine == "chat":
        assert text == "streamed from the worker"
