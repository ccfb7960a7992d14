"""Prometheus metrics at /metrics: the fleet and queue read from the database, and the app's own
request metrics.

Fleet, queue and job metrics are read from the database at scrape time by a custom collector
(one set of queries, cached CACHE_SECONDS per process, so many scrapers cost one read):

====================================================  =========  ==================================
metric                                                type       labels
====================================================  =========  ==================================
casare_robots_total                                   gauge      status (live status, all five)
casare_robots_by_environment                          gauge      environment, status
casare_jobs_queue_depth                               gauge      (pending jobs)
casare_jobs_queue_depth_by_environment                gauge      environment
casare_jobs_running                                   gauge
casare_jobs_oldest_pending_age_seconds                gauge      (0 when nothing waits)
casare_jobs_longest_running_seconds                   gauge      (0 when nothing runs)
casare_workflows_total                                counter    workflow (id), status (final)
casare_workflow_duration_seconds                      histogram  workflow, status
casare_workflows_counted_until_timestamp_seconds      gauge      (the run totals' watermark)
casare_exporter_database_up                           gauge      (1 when the read succeeded)
casare_exporter_read_duration_seconds                 gauge      (how long that read took)
fleet_monitor_http_requests_total                     counter    method, route (template), status
fleet_monitor_http_request_duration_seconds           histogram  method, route, status
====================================================  =========  ==================================

``casare_jobs_queue_depth``, ``casare_robots_total{status}``, ``casare_workflows_total{status}``
and ``casare_workflow_duration_seconds`` are the names the orchestrator's docs promise
(``sum by (status)`` gives the orchestrator's fleet-wide series). The job counters and the
histogram come from the run-totals rollup in data/monitoring.py: they count jobs by
``completed_at``, about RUN_TOTALS_LAG_SECONDS behind real time, and never go down. Labels are
bounded: workflow ids and statuses, never job ids or error messages.

Request metrics are labelled by the route's template (``/api/v1/metrics/jobs/<job_id>``, Dash
pages share ``/<path:path>``), so their label set stays small. Under gunicorn with several
workers they use prometheus-client's multiprocess mode: gunicorn.conf.py sets
PROMETHEUS_MULTIPROC_DIR before the workers import anything, and each scrape sums the workers'
files (including workers that have exited), so counters add up whichever worker answers.

/metrics is open unless FLEET_METRICS_TOKEN is set; then it needs ``Authorization: Bearer
<token>`` (or a signed-in session). The sign-in guard (server.auth.metrics_token_ok) checks it.
"""
from __future__ import annotations

import logging
import os
import threading
import time

import flask
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

from data import monitoring, rollups
from data.db import DatabaseUnavailable
from data.queue import queue_breakdown
from data.status import LIVE_STATUSES
from server.state import EXTENSION_KEY, FleetState

log = logging.getLogger(__name__)

METRICS_KEY = "fleet_metrics"
CACHE_SECONDS = 5.0
KNOWN_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# One set per process (module level), registered in each app's registry. In multiprocess mode
# their values live in PROMETHEUS_MULTIPROC_DIR.
REQUESTS = Counter("fleet_monitor_http_requests", "HTTP requests answered, by route template and status.",
                   ["method", "route", "status"], registry=None)
LATENCY = Histogram("fleet_monitor_http_request_duration_seconds",
                    "Time to answer an HTTP request (until the response is ready), by route template and status.",
                    ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=None)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir") or None


class FleetCollector:
    """Reads the fleet, the queue and the run totals from the database, at most once per
    `cache_seconds` (concurrent scrapes wait for the one read in progress)."""

    def __init__(self, state: FleetState, cache_seconds: float = CACHE_SECONDS,
                 run_totals_lag_s: float = monitoring.RUN_TOTALS_LAG_SECONDS):
        self.state = state
        self.cache_seconds = cache_seconds
        self.run_totals_lag_s = run_totals_lag_s
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._families: list = []

    def describe(self):
        return []  # names are dynamic; do not read the database when registered

    def invalidate(self) -> None:
        with self._lock:
            self._read_at = None

    def collect(self):
        with self._lock:
            now = time.monotonic()
            if self._read_at is None or now - self._read_at >= self.cache_seconds:
                self._families = self._read()
                self._read_at = time.monotonic()
            return list(self._families)

    # -- reading ---------------------------------------------------------------------------
    def _read(self) -> list:
        started = time.perf_counter()
        families: list = []
        engine, settings = self.state.engine, self.state.settings
        try:
            robots = monitoring.robot_status_counts(engine, settings.offline_after_seconds)
            queue = queue_breakdown(engine)
            families += _robot_families(robots) + _queue_families(queue)
            families += self._run_total_families()
            families += _rollup_families(engine)
            up = 1.0
        except DatabaseUnavailable as exc:
            log.warning("metrics: database unavailable: %s", exc)
            families, up = [], 0.0
        families.append(_gauge("casare_exporter_database_up",
                               "1 when the exporter's last read of the database succeeded, else 0.", up))
        families.append(_gauge("casare_exporter_read_duration_seconds",
                               "How long the exporter's last read of the database took.",
                               time.perf_counter() - started))
        return families

    def _run_total_families(self) -> list:
        engine = self.state.engine
        try:
            monitoring.advance_run_totals(engine, lag_s=self.run_totals_lag_s)
        except DatabaseUnavailable:
            raise
        except Exception:  # e.g. no write permission on the app schema: the gauges still work
            log.exception("metrics: could not advance the run totals")
        try:
            totals = monitoring.run_totals(engine)
        except DatabaseUnavailable:
            raise
        except Exception:
            log.exception("metrics: could not read the run totals")
            return []
        if totals["since"] is None:
            return []
        created = totals["since"].timestamp()
        counter = CounterMetricFamily(
            "casare_workflows_total",
            "Jobs finished, by workflow id and final status (counted by completed_at, from the app's run totals).",
            labels=["workflow", "status"])
        histogram = HistogramMetricFamily(
            "casare_workflow_duration_seconds",
            "Run duration (completed_at - started_at) of finished jobs that ran, by workflow id and final status.",
            labels=["workflow", "status"])
        bounds = [floatToGoString(b) for b in totals["buckets"]]
        for r in totals["rows"].itertuples(index=False):
            labels = [str(r.workflow_id), str(r.status)]
            counter.add_metric(labels, float(r.runs), created=created)
            buckets = [(le, float(n)) for le, n in zip(bounds, r.bucket_counts)]
            buckets.append(("+Inf", float(r.timed_runs)))
            histogram.add_metric(labels, buckets=buckets, sum_value=float(r.duration_sum_s))
        watermark = _gauge("casare_workflows_counted_until_timestamp_seconds",
                           "Jobs finished up to this time (Unix seconds) are counted in casare_workflows_total.",
                           totals["watermark"].timestamp())
        return [counter, histogram, watermark]


def _rollup_families(engine) -> list:
    """How far the analytics rollups reach (an alert when maintenance stops)."""
    until = rollups.covered_until(engine)
    if until is None:
        return []
    return [_gauge("fleet_monitor_rollup_covered_until_timestamp_seconds",
                   "The analytics rollups hold every job created before this time (Unix seconds).",
                   until.timestamp())]


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], float(value))
    return family


def _robot_families(robots) -> list:
    total = GaugeMetricFamily("casare_robots_total", "Robots by live status (stored status corrected by heartbeat age).",
                              labels=["status"])
    by_status = robots.groupby("status")["robots"].sum().to_dict() if not robots.empty else {}
    for status in LIVE_STATUSES:
        total.add_metric([status], float(by_status.get(status, 0)))
    per_env = GaugeMetricFamily("casare_robots_by_environment", "Robots by environment and live status.",
                                labels=["environment", "status"])
    counts = {(r.environment, r.status): int(r.robots) for r in robots.itertuples(index=False)}
    for environment in sorted({env for env, _ in counts}):
        for status in LIVE_STATUSES:
            per_env.add_metric([environment, status], float(counts.get((environment, status), 0)))
    return [total, per_env]


def _queue_families(queue: dict) -> list:
    depth_env = GaugeMetricFamily("casare_jobs_queue_depth_by_environment", "Pending jobs by environment.",
                                  labels=["environment"])
    for row in queue["by_environment"]:
        depth_env.add_metric([row["environment"]], float(row["queue_depth"]))
    return [
        _gauge("casare_jobs_queue_depth", "Jobs waiting in the queue (status pending).", queue["queue_depth"]),
        depth_env,
        _gauge("casare_jobs_running", "Jobs running now.", queue["running_jobs"]),
        _gauge("casare_jobs_oldest_pending_age_seconds",
               "Age of the oldest pending job in seconds (0 when nothing waits).",
               queue["oldest_pending_age_seconds"] or 0.0),
        _gauge("casare_jobs_longest_running_seconds",
               "How long the longest-running job has been running, in seconds (0 when nothing runs).",
               queue["longest_running_seconds"] or 0.0),
    ]


# ---------------------------------------------------------------------------------------------
# Request metrics
# ---------------------------------------------------------------------------------------------
def _start_timer():
    flask.g.fleet_request_started = time.perf_counter()


def _observe(response):
    started = flask.g.pop("fleet_request_started", None)
    rule = flask.request.url_rule
    route = rule.rule if rule is not None else "<unmatched>"
    method = flask.request.method if flask.request.method in KNOWN_METHODS else "other"
    labels = (method, route, str(response.status_code))
    REQUESTS.labels(*labels).inc()
    if started is not None:
        LATENCY.labels(*labels).observe(time.perf_counter() - started)
    return response


def _build_registry(collector: FleetCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REQUESTS)
        registry.register(LATENCY)
        # The process's default registry: process_* and python_* metrics, and counters other
        # modules keep there (data.db's fleet_monitor_db_queries). In multiprocess mode those
        # counters come from the workers' files instead.
        registry.register(REGISTRY)
    registry.register(collector)
    return registry


def register_metrics(server: flask.Flask, cache_seconds: float = CACHE_SECONDS) -> FleetCollector:
    """Add /metrics and the request metrics to the server; returns the fleet collector (also in
    ``server.extensions["fleet_metrics"]``). Idempotent."""
    existing = server.extensions.get(METRICS_KEY)
    if existing is not None:
        return existing
    collector = FleetCollector(server.extensions[EXTENSION_KEY], cache_seconds)
    registry = _build_registry(collector)
    server.extensions[METRICS_KEY] = collector

    def metrics():
        encoder, content_type = choose_encoder(flask.request.headers.get("Accept", ""))
        response = flask.Response(encoder(registry), mimetype=None)
        response.headers["Content-Type"] = content_type
        response.headers["Cache-Control"] = "no-store"
        return response

    server.add_url_rule("/metrics", "fleet_metrics", metrics, methods=["GET"])
    # First of all before-request hooks, so requests the sign-in guard answers are timed too.
    server.before_request_funcs.setdefault(None, []).insert(0, _start_timer)
    server.after_request(_observe)
    return collector
