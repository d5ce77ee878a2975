"""gunicorn settings for the bridge: `gunicorn -c gunicorn.conf.py wsgi:app`.

Worker model: gthread, WEB_CONCURRENCY processes (2) of GUNICORN_THREADS threads (32). A request
spends most of its time waiting (on the registry, and on the provider for the engines that call
it while the client waits), so one process must serve many requests at once.

- Worker classes: `bench/worker_models.py` (64 users creating threads, posting messages, running
  and polling against a 50 ms upstream, 2 workers, 2 cores) measured gthread at 1.79x the
  throughput of sync workers and gevent at 1.20x; gevent also finished runs about 3x slower,
  since the database driver and the run executor block its event loop, and it needs
  monkey-patching besides.
- Threads per worker: `bench/overhead.py --rounds 3 --workers W --threads T` (2 cores, SQLite;
  the median of three rounds):

  | workers x threads | owned GET vs hello, c=64 | `POST /v1/threads`, 50 ms upstream, c=64 | p99 | slowest |
  |---|---|---|---|---|
  | 2 x 32 | 0.30x | 146 RPS (0.14x direct) | 1,583 ms | 2,169 ms |
  | 2 x 16 | 0.27x | 172 RPS (0.17x) | 1,126 ms | 1,940 ms |
  | 2 x 8  | 0.22x | 175 RPS (0.17x) | 470 ms | 536 ms |
  | 4 x 8  | 0.29x | 199 RPS (0.18x) | 754 ms | 1,039 ms |

  Throughput barely moves: on two cores the writes are bound by CPU (about 6 to 9 ms of worker
  CPU per `POST /v1/threads` under this load, the SDK call to the provider alone about 1 ms),
  not by threads. Fewer threads shorten the tail once the CPU is saturated (requests wait in the
  listen queue in order instead of taking turns at the interpreter lock), but cap the requests in
  flight: with a real provider's hundreds of milliseconds per call, 2 x 8 threads would serve a
  few dozen writes a second. 32 stays the default; a deployment whose CPU is the limit can set
  GUNICORN_THREADS=8.
- Streams hold their connection, and in gthread a thread, for as long as a run takes, so each
  worker gets a thread for each stream it may hold beyond the GUNICORN_THREADS for requests
  (below). An idle stream costs a sleeping thread and no registry connection; what streams cost
  is the CPU of their events and of starting their runs. `bench/streaming.py` (2 cores, SQLite,
  16 clients polling back to back): with 256 streams open, polls p50 12 ms, p99 123 ms; while
  256 runs start at once, p99 855 ms. An event loop would hold idle
  connections more cheaply, but the registry driver and the SDK block it (see gevent above).
"""

import os

from dotenv import find_dotenv, load_dotenv

# Before anything reads a setting: the master migrates, and the workers serve, the same database.
load_dotenv(find_dotenv(usecwd=True))

bind = os.environ.get("BIND", "127.0.0.1:8000")
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# A stream holds a thread for as long as its run takes: each worker has GUNICORN_THREADS for
# ordinary requests and, beyond them, one for each stream it may hold (the app refuses a stream
# past STREAMS_PER_PROCESS with a 503), so open streams never take the threads polls need.
# gthread starts its threads as they are needed.
threads = int(os.environ.get("GUNICORN_THREADS", "32")) + int(
    os.environ.get("STREAMS_PER_PROCESS", "256"))
# Above OPENAI_TIMEOUT (60 s by default) so a slow provider answers with our 504, not a killed worker.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "90"))
graceful_timeout = 30
keepalive = 5
# The HTTP server's own limits sit above the app's (bridge/bounds.py: a 4096-byte request target,
# 8 KiB per header; bridge/auth.py: 8 KiB tokens), so clients meet the app's answers: a JSON 414
# or 431 naming the header, and the 401 an OpenAI client expects for an oversized token, where
# gunicorn's defaults (a 4094-byte request line, 8190 bytes per header) would answer a 5 KiB URL
# or a 9 KiB Authorization themselves. What is beyond even these, gunicorn refuses itself, and
# post_fork below makes that JSON too.
limit_request_line = 8190  # gunicorn's maximum: a larger value is cut to it, 0 lifts the limit
# A 64 KiB token still reaches the app and gets its 401. (0 does not lift this one: gunicorn
# reads it as 8190.)
limit_request_field_size = 128 * 1024
# gunicorn buffers up to fields x field size for one request's headers: 64 x 128 KiB = 8 MiB.
# The official SDKs send about 15 headers; proxies add a few.
limit_request_fields = 64
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


def post_fork(server, worker):
    """gunicorn's own refusals (a request beyond the limits above, a malformed one) in our JSON
    error envelope instead of its HTML page: see bridge/serving.py."""
    from bridge.serving import install_error_writer

    install_error_writer()


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
