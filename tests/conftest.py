"""Fixtures: an app per test on a fresh registry, served over real HTTP; real JWTs; fake upstreams.

The registry is SQLite in a temporary folder, or PostgreSQL when TEST_DATABASE_URL names one
(each test session gets its own database there, emptied between tests).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
from werkzeug.serving import make_server

from bridge import create_app
from bridge.extensions import db
from tests.fakes.chat_server import FakeChatServer
from tests.fakes.openai_server import FakeOpenAI

JWT_SECRET = "test-secret-" + "x" * 40
ENGINES = ("offline", "chat", "responses", "assistants")
# Engines whose threads live upstream, at the FakeOpenAI.
UPSTREAM_ENGINES = ("responses", "assistants")


# ---- registry database -------------------------------------------------------------------------

def _postgres_admin_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> Callable[[], str]:
    """A factory of registry URLs: a fresh SQLite file, or the session's PostgreSQL database."""
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        folder = tmp_path_factory.mktemp("registry")
        yield lambda: f"sqlite:///{folder / (uuid.uuid4().hex + '.db')}"
        return

    import psycopg

    name = f"bridge_test_{uuid.uuid4().hex[:12]}"
    admin = _postgres_admin_url(base)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0] + f"/{name}"
    yield lambda: url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _empty_registry(app) -> None:
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            tables = ", ".join(t.name for t in db.metadata.sorted_tables)
            db.session.execute(db.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            db.session.commit()
        db.session.remove()
        db.engine.dispose()


# ---- apps and servers -------------------------------------------------------------------------

@dataclass
class Bridge:
    """A running bridge: the app, its base URL, and helpers to act as a user."""

    app: Any
    url: str
    engine: str
    # The upstream the engine talks to: FakeChatServer (chat), FakeOpenAI (responses,
    # assistants) or None (offline).
    fake: FakeChatServer | FakeOpenAI | None = None
    clients: list = field(default_factory=list)

    @property
    def api(self) -> str:
        return self.url + "/v1"

    def token(self, user: str, *, admin: bool = False, **claims) -> str:
        return make_token(self.app, user, admin=admin, **claims)

    def sdk(self, user: str, *, admin: bool = False):
        import openai

        client = openai.OpenAI(base_url=self.api, api_key=self.token(user, admin=admin),
                               max_retries=0, timeout=10)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def headers(self, user: str, *, admin: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user, admin=admin)}"}

    def assistant(self, **fields) -> str:
        """Create an assistant through the admin API and return its id."""
        body = {"model": "fake-model", "name": "helper", "instructions": "Be brief.", **fields}
        return self.sdk("admin", admin=True).beta.assistants.create(**body).id


def make_token(app, user: str | None, *, admin: bool = False, **claims) -> str:
    from bridge.auth import tokens

    settings = app.config["BRIDGE_SETTINGS"]
    extra = dict(claims)
    if admin:
        extra[settings.JWT_ADMIN_CLAIM] = settings.JWT_ADMIN_VALUE
    with app.app_context():
        return tokens().mint(user, ttl=30 * 60, claims=extra)


class _Server:
    def __init__(self, app):
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def make_app(database_url, tmp_path) -> Callable[..., Any]:
    """Build apps with test settings; every app built is shut down and its registry emptied."""
    apps = []

    def build(**overrides):
        settings = {"DATABASE_URL": database_url(), "JWT_SECRET_KEY": JWT_SECRET,
                    "BRIDGE_ENGINE": "offline", "POLL_AFTER_MS": 20,
                    # Tests that count upstream calls or executor slots need no background
                    # sweeper; tests of the sweeper turn it on.
                    "RUN_SWEEP_SECONDS": 0,
                    # Rate-limit counters of their own, also when tests share one Redis.
                    "RATELIMIT_KEY_PREFIX": f"test-{uuid.uuid4().hex[:12]}",
                    # Uploaded files' contents stay in the test's own folder.
                    "FILE_STORAGE_DIR": str(tmp_path / f"files-{len(apps)}"), **overrides}
        app = create_app({"TESTING": True, **settings})
        apps.append(app)
        return app

    yield build
    # Every app's background threads stop before any registry is emptied: apps may share one.
    for app in apps:
        app.extensions["bridge.engine"].shutdown()
        app.extensions["bridge.ingestion"].shutdown()
    for app in apps:
        _empty_registry(app)


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def token_for(app) -> Callable[..., str]:
    return lambda user, **kw: make_token(app, user, **kw)


@pytest.fixture
def fake_chat():
    with FakeChatServer() as server:
        yield server


@pytest.fixture
def fake_openai():
    with FakeOpenAI(latency=0.05, poll_after_ms=10) as server:
        yield server


@pytest.fixture
def serve():
    """Serve an app over real HTTP on 127.0.0.1; returns its base URL."""
    servers = []

    def start(app) -> str:
        server = _Server(app)
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


def engine_settings(request, engine: str) -> tuple[Any, dict[str, Any]]:
    """The fake upstream an engine talks to in tests (None for offline), and the app settings."""
    fake = None
    if engine == "chat":
        fake = request.getfixturevalue("fake_chat")
    elif engine in UPSTREAM_ENGINES:
        fake = request.getfixturevalue("fake_openai")
    settings: dict[str, Any] = {"BRIDGE_ENGINE": engine}
    if fake is not None:
        settings.update(OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY=fake.api_key,
                        OPENAI_TIMEOUT=10, OPENAI_MAX_RETRIES=0)
    return fake, settings


@pytest.fixture
def start_bridge(make_app, serve, request) -> Callable[..., Bridge]:
    """Start a bridge on an engine, served over HTTP; engines with an upstream talk to a fake."""
    bridges: list[Bridge] = []

    def start(engine: str = "offline", **overrides) -> Bridge:
        fake, settings = engine_settings(request, engine)
        app = make_app(**{**settings, **overrides})
        bridge = Bridge(app=app, url=serve(app), engine=engine, fake=fake)
        bridges.append(bridge)
        return bridge

    yield start
    for bridge in bridges:
        bridge.close()


@pytest.fixture(params=ENGINES)
def bridge(request, start_bridge) -> Bridge:
    """A bridge served over HTTP, once per engine."""
    return start_bridge(request.param)


@pytest.fixture
def offline_bridge(start_bridge) -> Bridge:
    return start_bridge("offline")


@pytest.fixture
def chat_bridge(start_bridge) -> Bridge:
    return start_bridge("chat")


@pytest.fixture
def responses_bridge(start_bridge) -> Bridge:
    return start_bridge("responses")


@pytest.fixture
def assistants_bridge(start_bridge) -> Bridge:
    return start_bridge("assistants")


def race_run_creates(bridge: Bridge, thread_id: str, assistant_id: str, attempts: int) -> list[str]:
    """Start `attempts` runs on one thread at once, each from its own client; the ids that won."""
    from concurrent.futures import ThreadPoolExecutor

    import openai

    def attempt(_):
        try:
            return bridge.sdk("alice").beta.threads.runs.create(
                thread_id=thread_id, assistant_id=assistant_id).id
        except openai.ConflictError:
            return None

    with ThreadPoolExecutor(attempts) as pool:
        return [run_id for run_id in pool.map(attempt, range(attempts)) if run_id]


@pytest.fixture
def held_extraction(monkeypatch):
    """Ingestion of files whose name starts with "held" waits, mid-way, until `release()`;
    `started` lists the names of those that reached the wait, in order."""
    from types import SimpleNamespace

    from bridge.retrieval import extract

    gate, started, extract_text = threading.Event(), [], extract.extract_text

    def waiting(filename: str, data: bytes, limit: int) -> str:
        if filename.startswith("held"):
            started.append(filename)
            gate.wait(30)
        return extract_text(filename, data, limit)

    monkeypatch.setattr(extract, "extract_text", waiting)
    yield SimpleNamespace(release=gate.set, started=started)
    gate.set()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02):
    """Poll `predicate` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
