"""gunicorn settings for Fleet Monitor (read automatically by `gunicorn app:server` in this folder).

    DATABASE_URL=postgresql://... FLEET_JWT_SECRET=... gunicorn app:server

Environment (all optional):
    FLEET_BIND             address to listen on (default HOST:PORT, i.e. 127.0.0.1:8050)
    FLEET_WORKERS          worker processes (default: 2 per CPU, at most 8); WEB_CONCURRENCY too
    FLEET_THREADS          threads per worker (default 4; Dash callbacks mostly wait on PostgreSQL)
    FLEET_WORKER_TIMEOUT   seconds a silent worker may take before it is restarted (default 60)
    FLEET_GRACEFUL_TIMEOUT seconds running requests get to finish on shutdown (default 30)
    FLEET_KEEPALIVE        seconds an idle connection is kept open (default 10: longer than the live
                           pages' 5 s refresh, so a screen keeps its connection between refreshes)
    FLEET_MAX_REQUESTS     restart a worker after this many requests (default 0: never)
    FLEET_LOG_LEVEL        debug, info (default), warning, error
    FLEET_CONTROL_SOCKET   path of gunicorn's control socket (gunicornc); default: none
    PROMETHEUS_MULTIPROC_DIR  where workers keep their request metrics (default: a fresh temp folder)

Logs are JSON lines on stderr (the app and gunicorn) and stdout (access log), each with the
request id (X-Request-ID). SIGTERM stops gracefully: no new connections, running requests get
FLEET_GRACEFUL_TIMEOUT seconds. Each worker builds its own app (no preload), so a worker that
dies takes nothing with it; the workers share the database and the metrics folder.
"""
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from server.logging_setup import GunicornJsonLogger  # noqa: E402
from server.runtime import freeze_startup_objects  # noqa: E402


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {raw!r}") from None


chdir = str(HERE)
bind = [os.environ.get("FLEET_BIND") or f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8050')}"]
workers = _int("FLEET_WORKERS", _int("WEB_CONCURRENCY", min(2 * (os.cpu_count() or 1), 8)))
worker_class = "gthread"
threads = _int("FLEET_THREADS", 4)
timeout = _int("FLEET_WORKER_TIMEOUT", 60)
graceful_timeout = _int("FLEET_GRACEFUL_TIMEOUT", 30)
# gunicorn 24+ (gthread) lets a pool thread wait up to 5 s for the first bytes of a new
# connection before handing it to the poller (gunicorn issue #3634): a few screens, or browser
# pre-connections, that open a connection and send a moment later hold all of a worker's threads
# while the requests of every other screen wait (seconds, in the load test). Hand such a connection
# to the poller after 50 ms instead; it is served as soon as its request arrives.
try:
    from gunicorn.workers import gthread as _gthread

    if hasattr(_gthread, "DEFAULT_WORKER_DATA_TIMEOUT"):
        _gthread.DEFAULT_WORKER_DATA_TIMEOUT = 0.05
except ImportError:  # pragma: no cover - gthread is part of gunicorn
    pass

# Longer than the live pages' refresh interval: with a shorter one the server closes a screen's
# idle connection just as its next refresh is sent, and the screen reconnects every time.
keepalive = _int("FLEET_KEEPALIVE", 10)
max_requests = _int("FLEET_MAX_REQUESTS", 0)
max_requests_jitter = max_requests // 10
preload_app = False
proc_name = "fleet-monitor"
# gunicorn's control socket (gunicornc) defaults to one path per user, which two instances on a
# host would share: off unless FLEET_CONTROL_SOCKET names a path for this instance.
control_socket_disable = not os.environ.get("FLEET_CONTROL_SOCKET")
if os.environ.get("FLEET_CONTROL_SOCKET"):
    control_socket = os.environ["FLEET_CONTROL_SOCKET"]
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"  # worker heartbeats off the (possibly slow) disk

# Logging: JSON lines with the request id.
logger_class = GunicornJsonLogger
loglevel = os.environ.get("FLEET_LOG_LEVEL", "info")
accesslog = "-"
errorlog = "-"

# Prometheus multiprocess mode: set before any worker imports prometheus_client.
_own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fleet-monitor-metrics-")
METRICS_DIR = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])


def on_starting(server):
    # Files of an earlier run would add its counts to this one's.
    METRICS_DIR.mkdir(parents=True, exist_ok=True)
    for stale in METRICS_DIR.glob("*.db"):
        stale.unlink()
    server.log.info("request metrics in %s", METRICS_DIR)


def child_exit(server, worker):
    # The worker's counters stay (they are summed), its live gauges go.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, str(METRICS_DIR))


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(METRICS_DIR, ignore_errors=True)


def post_worker_init(worker):
    # Dash sets itself up on its first request, and a thread of the worker that serves a request
    # while another is still in that set-up finds no callbacks (HTTP 500 "Callback function not
    # found"): screens switched on together after a (re)start hit exactly that. One request
    # through the app here, before the worker takes connections, does the set-up.
    try:
        worker.wsgi.test_client().get("/login")
    except Exception:  # noqa: BLE001 - without the warm-up the worker still serves
        worker.log.exception("warm-up request failed")
    freeze_startup_objects()
