"""gunicorn settings for the bridge: `gunicorn -c gunicorn.conf.py wsgi:app`.

Worker model: gthread. A request spends most of its time waiting (on the registry, and on the
provider for engines that call it synchronously), so one process must serve many requests at
once. `bench/worker_models.py` (64 users creating threads, posting messages, running and polling
against a 50 ms upstream, 2 workers, 2 cores) measured gthread at 1.79x the throughput of sync
workers and gevent at 1.20x; gevent also finished runs about 3x slower, since the database
driver and the run executor block its event loop, and it needs monkey-patching besides.
"""

import os

from dotenv import find_dotenv, load_dotenv

# Before anything reads a setting: the master migrates, and the workers serve, the same database.
load_dotenv(find_dotenv(usecwd=True))

bind = os.environ.get("BIND", "127.0.0.1:8000")
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
# Above OPENAI_TIMEOUT (60 s by default) so a slow provider answers with our 504, not a killed worker.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "90"))
graceful_timeout = 30
keepalive = 5
# No control socket: its default path is shared by every gunicorn of the same user.
control_socket_disable = True
# No gunicorn access log: the app writes one structured line per request on "bridge.access"
# (route template, status, latency, user, request id; no paths, query strings or tokens), and
# gunicorn's own line would duplicate it with the raw URL, query string included.
accesslog = None
errorlog = "-"
# Each worker builds its own app: the run executor's threads must not cross a fork.
preload_app = False


def on_starting(server):
    """Migrate the registry once, in the master, before any worker starts."""
    if os.environ.get("AUTO_MIGRATE", "true").lower() in ("0", "false", "no", "off"):
        return
    from bridge import create_app
    from bridge.extensions import db

    app = create_app()
    with app.app_context():
        db.engine.dispose()
    # Workers inherit this and skip the (already done) upgrade.
    os.environ["AUTO_MIGRATE"] = "false"


def post_worker_init(worker):
    """Import the SDK and open the upstream connection now, not on the first user's request."""
    app = worker.wsgi
    engine = app.extensions.get("bridge.engine")
    if engine is not None:
        engine.warm_up()


def worker_exit(server, worker):
    """Let in-flight runs finish their bookkeeping before the worker goes."""
    app = getattr(worker, "wsgi", None)
    engine = app.extensions.get("bridge.engine") if app is not None else None
    if engine is not None:
        engine.shutdown()
