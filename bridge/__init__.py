"""assistants-bridge: OpenAI's Assistants API v2, served per user over pluggable engines."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event

from . import bounds, observability
from .config import Settings

MIGRATIONS = str(Path(__file__).parent / "migrations")
# Bytes of an upload's body beyond the file: part headers, boundaries, the purpose field.
UPLOAD_FORM_OVERHEAD = 64 * 1024


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the app: settings, extensions, blueprints, error handlers, commands, engine."""
    overrides = dict(overrides or {})
    app = Flask(__name__, instance_relative_config=True)
    setting_overrides = {k: overrides.pop(k) for k in list(overrides) if k in Settings.model_fields}
    settings = Settings(**setting_overrides)
    configure(app, settings)
    observability.init_app(app, settings)
    # Next to observability's hooks, ahead of every other: an oversized request is refused
    # before anything reads it, and the refusal still carries its request id.
    bounds.init_app(app)
    app.config.update(overrides)

    register_extensions(app, settings)
    register_blueprints(app)
    register_limits(app, settings)
    # inside the rate limits
    from .idempotency import init_app as init_idempotency
    init_idempotency(app, settings)
    register_errorhandlers(app)
    register_streams(app, settings)
    register_commands(app)
    register_engine(app)
    if settings.AUTO_MIGRATE:
        upgrade_schema(app)
    return app


def database_url(settings: Settings, instance_path: str) -> str:
    """The SQLAlchemy URL: PostgreSQL through psycopg 3, or the default SQLite file."""
    url = settings.DATABASE_URL
    if not url:
        Path(instance_path).mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{Path(instance_path) / 'bridge.db'}"
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def configure(app: Flask, settings: Settings) -> None:
    from . import auth

    url = database_url(settings, app.instance_path)
    # A gthread worker serves GUNICORN_THREADS (32) requests at once: the pool must not make
    # them queue for a connection (SQLAlchemy's default is 5 + 10).
    options: dict[str, Any] = {"pool_size": 10, "max_overflow": 30}
    if url.startswith("sqlite"):
        options["connect_args"] = {"timeout": 30}
    else:
        # A server connection can die in the pool (a restart, an idle timeout); a file cannot.
        options["pool_pre_ping"] = True
    app.config.update(
        BRIDGE_SETTINGS=settings,
        SQLALCHEMY_DATABASE_URI=url,
        SQLALCHEMY_ENGINE_OPTIONS=options,
        MAX_CONTENT_LENGTH=settings.MAX_CONTENT_LENGTH,
        # POST /v1/files alone: a file of FILE_MAX_BYTES, and room for the form around it.
        UPLOAD_CONTENT_LENGTH=settings.FILE_MAX_BYTES + UPLOAD_FORM_OVERHEAD,
    )
    app.json.sort_keys = False  # keep the wire objects in OpenAI's field order
    auth.init_app(app, settings)


def register_extensions(app: Flask, settings: Settings) -> None:
    from .extensions import db, migrate

    from . import retrieval
    from .files import storage

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS)
    storage.init_app(app, settings.FILE_STORAGE_DIR)
    retrieval.init_app(app, settings)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        with app.app_context():
            event.listen(db.engine, "connect", _sqlite_pragmas)


def _sqlite_pragmas(connection, _record) -> None:
    # WAL lets readers proceed while the run executor writes; foreign keys make deletes cascade.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def register_blueprints(app: Flask) -> None:
    from . import chatkit, chatpage
    from .api import register_blueprints as register

    register(app)
    app.register_blueprint(chatkit.bp)
    app.register_blueprint(chatpage.bp)


def register_limits(app: Flask, settings: Settings) -> None:
    from .limits import init_app

    init_app(app, settings)


def register_errorhandlers(app: Flask) -> None:
    from .errors import register_errorhandlers as register
    from .serving import register_errorhandlers as register_server_errors

    register(app)
    register_server_errors(app)


def register_streams(app: Flask, settings: Settings) -> None:
    from .api.streams import init_app

    init_app(app, settings.STREAMS_PER_PROCESS)


def register_commands(app: Flask) -> None:
    from .cli import register_commands as register

    register(app)


def register_engine(app: Flask) -> None:
    from .engines import init_app

    init_app(app)


def upgrade_schema(app: Flask) -> None:
    """Bring the registry schema to the newest migration."""
    from flask_migrate import upgrade

    with app.app_context():
        upgrade(directory=MIGRATIONS)
    logging.getLogger(__name__).debug("registry schema is up to date")
