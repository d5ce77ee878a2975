"""Engines: where threads live and who answers runs."""

from __future__ import annotations

from flask import Flask, current_app

from .base import Engine

_EXTENSION_KEY = "bridge.engine"


def build_engine(app: Flask) -> Engine:
    """The engine named by BRIDGE_ENGINE, with its responder and upstream client."""
    return build_named_engine(app, app.config["BRIDGE_SETTINGS"].engine)


def build_named_engine(app: Flask, name: str) -> Engine:
    """An engine by name, configured from the app's settings."""
    engine = _engine_named(app, name)
    settings = app.config["BRIDGE_SETTINGS"]
    engine.configure_streams(run_log(settings), settings.STREAM_PING_SECONDS)
    return engine


def run_log(settings):
    """Where streamed runs' events travel: Redis when the processes share one, else memory."""
    from ..streaming.log import LocalRunLog, RedisRunLog

    if not settings.REDIS_URL:
        return LocalRunLog()
    from redis import Redis

    return RedisRunLog(Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2))


def _engine_named(app: Flask, name: str) -> Engine:
    from .local import RegistryEngine
    from .upstream import OpenAIUpstream

    settings = app.config["BRIDGE_SETTINGS"]
    upstream = OpenAIUpstream(api_key=settings.OPENAI_API_KEY, base_url=settings.OPENAI_BASE_URL,
                              timeout=settings.OPENAI_TIMEOUT, max_retries=settings.OPENAI_MAX_RETRIES)
    if name in ("responses", "assistants"):
        from .assistants import AssistantsEngine
        from .responses import ResponsesEngine

        kind = ResponsesEngine if name == "responses" else AssistantsEngine
        return kind(app, upstream, poll_interval=settings.POLL_AFTER_MS / 1000,
                    run_timeout=settings.RUN_TIMEOUT_SECONDS)
    if name == "chat":
        from .chat import ChatCompletionsResponder

        responder = ChatCompletionsResponder(upstream)
    else:
        from .offline import OfflineResponder

        responder = OfflineResponder(delay_seconds=settings.OFFLINE_REPLY_DELAY)
    queue = None
    if settings.RUN_EXECUTOR == "rq":
        from redis import Redis
        from rq import Queue

        queue = Queue(settings.RQ_QUEUE, connection=Redis.from_url(settings.REDIS_URL))
    return RegistryEngine(app, responder, workers=settings.RUN_WORKERS, queue=queue,
                          queue_limit=settings.RUN_QUEUE_LIMIT,
                          run_timeout=settings.RUN_TIMEOUT_SECONDS,
                          step_limit=max(settings.OPENAI_TIMEOUT, settings.OFFLINE_REPLY_DELAY) + 30)


def init_app(app: Flask) -> Engine:
    engine = build_engine(app)
    app.extensions[_EXTENSION_KEY] = engine
    interval = app.config["BRIDGE_SETTINGS"].RUN_SWEEP_SECONDS
    if interval:
        # Started by the process's first request, not here: `flask db upgrade` and the other
        # commands build the app too, before the schema may exist.
        app.before_request(lambda: engine.start_sweeper(app, interval))
    return engine


def current_engine() -> Engine:
    """The engine of the running app."""
    return current_app.extensions[_EXTENSION_KEY]
