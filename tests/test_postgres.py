"""The registry on PostgreSQL: migrations, the one-active-run index, an end-to-end cycle.

Runs against TEST_DATABASE_URL when that is PostgreSQL, otherwise against the local server at
TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test) when it is reachable, each
test in a database of its own; skipped with the reason when no server answers.
"""

from __future__ import annotations

import os
import uuid

import openai
import pytest
from sqlalchemy import text

from bridge.extensions import db
from tests.conftest import Bridge, race_run_creates

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _server_url() -> str:
    configured = os.environ.get("TEST_DATABASE_URL", "")
    if configured.startswith("postgres"):
        return configured
    return os.environ.get("TEST_POSTGRES_URL", DEFAULT_URL)


@pytest.fixture
def postgres_url():
    psycopg = pytest.importorskip("psycopg")
    admin = _server_url().replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {admin}: {exc}")
    name = f"bridge_pg_{uuid.uuid4().hex[:12]}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield admin.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_bridge(postgres_url, start_bridge) -> Bridge:
    return start_bridge("offline", DATABASE_URL=postgres_url, OFFLINE_REPLY_DELAY=30)


def test_migrations_build_the_schema_with_the_partial_unique_index(pg_bridge):
    with pg_bridge.app.app_context():
        assert db.engine.dialect.name == "postgresql"
        tables = set(db.session.scalars(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")))
        index = db.session.scalar(text(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'uq_runs_one_active_per_thread'"))
    assert {"assistants", "threads", "messages", "runs", "alembic_version"} <= tables
    assert "UNIQUE" in index and "WHERE" in index and "in_progress" in index


def test_concurrent_runs_on_one_thread_one_wins(pg_bridge):
    client = pg_bridge.sdk("alice")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])

    winners = race_run_creates(pg_bridge, thread.id, pg_bridge.assistant(), attempts=10)

    assert len(winners) == 1
    final = client.beta.threads.runs.cancel(winners[0], thread_id=thread.id)
    assert final.status in ("cancelling", "cancelled")
    assert client.beta.threads.runs.poll(winners[0], thread_id=thread.id,
                                         poll_interval_ms=20).status == "cancelled"


def test_thread_message_run_cycle(postgres_url, start_bridge):
    bridge = start_bridge("offline", DATABASE_URL=postgres_url)
    client = bridge.sdk("alice")
    run = client.beta.threads.create_and_run_poll(
        assistant_id=bridge.assistant(), poll_interval_ms=20,
        thread={"messages": [{"role": "user", "content": "on postgres"}]})
    assert run.status == "completed"
    reply = client.beta.threads.messages.list(thread_id=run.thread_id).data[0]
    assert "on postgres" in reply.content[0].text.value
    client.beta.threads.delete(run.thread_id)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)


@pytest.mark.parametrize("engine", ["offline", "responses"])
def test_fifty_concurrent_message_posts_are_all_kept_once_in_a_stable_order(
        postgres_url, start_bridge, engine):
    from concurrent.futures import ThreadPoolExecutor

    bridge = start_bridge(engine, DATABASE_URL=postgres_url)
    thread = bridge.sdk("alice").beta.threads.create()
    clients = [bridge.sdk("alice") for _ in range(10)]

    def post(i: int) -> str:
        return clients[i % len(clients)].beta.threads.messages.create(
            thread_id=thread.id, role="user", content=f"marker-{i}").id

    with ThreadPoolExecutor(25) as pool:
        posted = list(pool.map(post, range(50)))

    def listing(order: str) -> list:
        return list(bridge.sdk("alice").beta.threads.messages.list(
            thread_id=thread.id, order=order, limit=7))  # auto-paginates across 8 pages

    ascending, descending = listing("asc"), listing("desc")
    texts = [m.content[0].text.value for m in ascending]
    assert sorted(texts) == sorted(f"marker-{i}" for i in range(50))  # none lost, none doubled
    assert {m.id for m in ascending} == set(posted) and len(posted) == 50
    assert [m.id for m in descending] == [m.id for m in ascending][::-1]  # one stable order
    assert [m.id for m in listing("asc")] == [m.id for m in ascending]


def test_the_database_itself_refuses_a_second_active_run(pg_bridge):
    # Enforced by the partial unique index, not by a check in the code: a raw insert fails too.
    import sqlalchemy.exc

    client = pg_bridge.sdk("alice")
    thread = client.beta.threads.create()
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=pg_bridge.assistant())
    with pg_bridge.app.app_context():
        with pytest.raises(sqlalchemy.exc.IntegrityError):
            db.session.execute(text(
                "INSERT INTO runs (id, thread_pk, assistant_id, created_at, status, model, "
                "instructions, tools, metadata, parallel_tool_calls) "
                "SELECT 'run_second', thread_pk, assistant_id, created_at, 'queued', model, "
                "instructions, tools, metadata, parallel_tool_calls FROM runs WHERE id = :id"),
                {"id": run.id})
        db.session.rollback()
    client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
