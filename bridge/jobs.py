"""RQ jobs: run execution moved out of the web processes (RUN_EXECUTOR=rq).

`flask run-worker` serves the queue with the app it was started with; a plain `rq worker` builds
the app from the environment on its first job. Either way the job runs the same code as the
in-process pool: `RegistryEngine.execute`.
"""

from __future__ import annotations

import threading

from flask import Flask

_app: Flask | None = None
_lock = threading.Lock()


def use_app(app: Flask) -> None:
    """Execute jobs with this app (its settings, registry and engine)."""
    global _app
    _app = app


def _worker_app() -> Flask:
    global _app
    with _lock:
        if _app is None:
            from . import create_app

            _app = create_app()
    return _app


def execute_run(run_id: str) -> None:
    """Execute a queued run of the `offline` or `chat` engine."""
    _worker_app().extensions["bridge.engine"].execute(run_id)
