"""Prometheus /metrics, /health and /ready, request ids and JSON logs, on the test's own rows."""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
from collections import Counter as Tally
from datetime import timedelta

import numpy as np
import pytest
import sqlalchemy as sa
import yaml
from prometheus_client.parser import text_string_to_metric_families

from config import PROJECT_DIR
from data import rollups
from data.monitoring import DURATION_BUCKETS_S
from tests.conftest import create_test_users
from tests.helpers import ago, insert_job, insert_robot, utcnow
from tests.test_api import bearer, clear_shared_cache


@pytest.fixture
def client(app_client):
    collector = app_client.application.extensions["fleet_metrics"]
    collector.cache_seconds = 0  # read the database at every scrape
    collector.run_totals_lag_s = 0  # count jobs finished up to the scrape
    return app_client


@pytest.fixture
def engine_of(client):
    return client.application.extensions["fleet_monitor"].engine


def scrape(client, headers=None) -> dict[str, list]:
    """{sample name: [(labels, value)]} from /metrics, parsed by prometheus_client's parser."""
    clear_shared_cache(client)
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain")
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def value(samples, name, **labels) -> float:
    found = [v for lab, v in samples.get(name, []) if all(lab.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


def series(samples, name) -> dict[tuple, float]:
    return {tuple(sorted(lab.items())): v for lab, v in samples.get(name, [])}


# ---------------------------------------------------------------------------------------------
# Gauges
# ---------------------------------------------------------------------------------------------
def test_gauges_equal_the_rows(client, engine_of):
    robots = [  # id, stored status, heartbeat age (s), environment -> live status
        ("a1", "online", 5, "prod", "idle"), ("a2", "busy", 5, "prod", "busy"), ("a3", "online", 600, "prod", "offline"),
        ("b1", "online", 2, "lab", "idle"), ("b2", "maintenance", 9000, "lab", "maintenance"),
        ("b3", "error", 1, "lab", "error"), ("b4", "busy", 4000, "lab", "offline"),
    ]
    with engine_of.begin() as c:
        for rid, stored, age, env, _ in robots:
            insert_robot(c, rid, status=stored, last_heartbeat=ago(seconds=age), environment=env)
        for env, minutes in (("prod", 50), ("prod", 5), ("lab", 12)):
            insert_job(c, status="pending", environment=env, created_at=ago(minutes=minutes))
        insert_job(c, status="running", robot_id="a2", environment="prod", created_at=ago(minutes=80),
                   started_at=ago(minutes=75))
        insert_job(c, status="running", robot_id="ghost", environment="lab", created_at=ago(minutes=3),
                   started_at=ago(minutes=2))
    samples = scrape(client)
    live = Tally(r[4] for r in robots)
    for status in ("busy", "idle", "error", "maintenance", "offline"):
        assert value(samples, "casare_robots_total", status=status) == live[status]
    per_env = Tally((r[3], r[4]) for r in robots)
    for env in ("prod", "lab"):
        for status in ("busy", "idle", "error", "maintenance", "offline"):
            assert value(samples, "casare_robots_by_environment", environment=env, status=status) == per_env[(env, status)]
    assert value(samples, "casare_jobs_queue_depth") == 3
    assert series(samples, "casare_jobs_queue_depth_by_environment") == {
        (("environment", "lab"),): 1.0, (("environment", "prod"),): 2.0}
    assert value(samples, "casare_jobs_running") == 2
    assert value(samples, "casare_jobs_oldest_pending_age_seconds") == pytest.approx(50 * 60, abs=30)
    assert value(samples, "casare_jobs_longest_running_seconds") == pytest.approx(75 * 60, abs=30)
    assert value(samples, "casare_exporter_database_up") == 1


def test_metrics_scrapes_are_cached(client, engine_of):
    collector = client.application.extensions["fleet_metrics"]
    collector.cache_seconds = 300
    collector.invalidate()
    assert value(scrape(client), "casare_jobs_queue_depth") == 0
    with engine_of.begin() as c:
        insert_job(c, status="pending", created_at=ago(minutes=1))
    assert value(scrape(client), "casare_jobs_queue_depth") == 0  # the cached read
    collector.invalidate()
    assert value(scrape(client), "casare_jobs_queue_depth") == 1


# ---------------------------------------------------------------------------------------------
# Counters and histogram
# ---------------------------------------------------------------------------------------------
def finished(c, workflow, status, seconds, completed_ago_s: float, started=True):
    end = utcnow() - timedelta(seconds=completed_ago_s)
    return insert_job(c, status=status, workflow_id=workflow, created_at=end - timedelta(seconds=(seconds or 0) + 60),
                      started_at=end - timedelta(seconds=seconds) if started else None, completed_at=end)


def expected_histogram(durations):
    bounds = list(DURATION_BUCKETS_S)
    return [int(np.sum(np.asarray(durations) <= b)) for b in bounds], len(durations), float(np.sum(durations))


def check_histogram(samples, workflow, status, durations):
    buckets, count, total = expected_histogram(durations)
    got = {lab["le"]: v for lab, v in samples["casare_workflow_duration_seconds_bucket"]
           if lab["workflow"] == workflow and lab["status"] == status}
    assert [got[str(float(b))] for b in DURATION_BUCKETS_S] == buckets
    assert got["+Inf"] == count
    assert value(samples, "casare_workflow_duration_seconds_count", workflow=workflow, status=status) == count
    assert value(samples, "casare_workflow_duration_seconds_sum", workflow=workflow, status=status) == pytest.approx(total)


def test_counters_and_histogram_move_by_the_jobs_that_finish(client, engine_of):
    runs = {("wf-a", "completed"): [0.4, 3.0, 14.0, 59.9, 60.0], ("wf-a", "failed"): [700.0],
            ("wf-b", "completed"): [1.0, 1.5]}
    with engine_of.begin() as c:
        for (wf, status), durations in runs.items():
            for i, d in enumerate(durations):
                finished(c, wf, status, d, completed_ago_s=3600 + i)
        finished(c, "wf-b", "cancelled", None, completed_ago_s=100, started=False)  # never ran
        finished(c, "wf-old", "completed", 5.0, completed_ago_s=3 * 86400)  # before the backfill window
        insert_job(c, status="running", workflow_id="wf-a", created_at=ago(minutes=2), started_at=ago(minutes=1))
    before = scrape(client)
    for (wf, status), durations in runs.items():
        assert value(before, "casare_workflows_total", workflow=wf, status=status) == len(durations)
        check_histogram(before, wf, status, durations)
    assert value(before, "casare_workflows_total", workflow="wf-b", status="cancelled") == 1
    check_histogram(before, "wf-b", "cancelled", [])  # counted, but no duration
    assert not [lab for lab, _ in before["casare_workflows_total"] if lab["workflow"] == "wf-old"]
    created = value(before, "casare_workflows_created", workflow="wf-a", status="completed")
    assert created == pytest.approx((utcnow() - timedelta(hours=24)).timestamp(), abs=120)

    # More jobs finish (after the first scrape's watermark); one counted job is deleted (moved to
    # the dead-letter queue): counters only move up, by exactly the new jobs.
    new = {("wf-a", "completed"): [2.0, 301.0], ("wf-a", "failed"): [0.2], ("wf-c", "failed"): [7200.0, 9000.0]}
    with engine_of.begin() as c:
        for (wf, status), durations in new.items():
            for d in durations:
                finished(c, wf, status, d, completed_ago_s=0)
        c.execute(sa.text("DELETE FROM job_queue WHERE id = (SELECT id FROM job_queue WHERE workflow_id = 'wf-b' "
                          "AND status = 'completed' LIMIT 1)"))
    after = scrape(client)
    for key in set(runs) | set(new):
        wf, status = key
        total = runs.get(key, []) + new.get(key, [])
        assert value(after, "casare_workflows_total", workflow=wf, status=status) == len(total), key
        check_histogram(after, wf, status, total)
    assert value(after, "casare_workflows_total", workflow="wf-b", status="completed") == 2
    assert value(after, "casare_workflows_created", workflow="wf-a", status="completed") == created
    watermark = value(after, "casare_workflows_counted_until_timestamp_seconds")
    assert watermark == pytest.approx(utcnow().timestamp(), abs=30)


def test_request_metrics_by_route_template(client):
    samples = scrape(client)
    route = "/api/v1/metrics/robots/<robot_id>"
    before = {lab["status"]: v for lab, v in samples.get("fleet_monitor_http_requests_total", [])
              if lab["route"] == route}
    headers = bearer(client)
    for robot in ("x1", "x2", "x3"):
        assert client.get(f"/api/v1/metrics/robots/{robot}", headers=headers).status_code == 404
    assert client.get("/api/v1/metrics/robots/x4").status_code == 401  # turned away by the guard
    samples = scrape(client)
    count = {lab["status"]: v for lab, v in samples["fleet_monitor_http_requests_total"] if lab["route"] == route}
    assert count["404"] - before.get("404", 0) == 3
    assert count["401"] - before.get("401", 0) == 1
    latency = {lab["status"]: v for lab, v in samples["fleet_monitor_http_request_duration_seconds_count"]
               if lab["route"] == route}
    assert latency["404"] >= 3 and latency["401"] >= 1
    routes = {lab["route"] for lab, _ in samples["fleet_monitor_http_requests_total"]}
    assert not any(r.endswith(("x1", "x2", "x3")) for r in routes)  # templates, never raw ids


def test_metrics_token(test_settings):
    from app import create_app

    app = create_app(dataclasses.replace(test_settings, metrics_token="prom-secret"))
    server = app.server
    create_test_users(server.extensions["fleet_monitor"].engine)
    client = server.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer prom-secret"}).status_code == 200


def test_database_outage_reports_exporter_down(client, database_outage):
    database_outage(False)
    samples = scrape(client)
    assert value(samples, "casare_exporter_database_up") == 0
    assert "casare_jobs_queue_depth" not in samples
    database_outage(True)
    client.application.extensions["fleet_monitor"].engine.dispose()
    assert value(scrape(client), "casare_exporter_database_up") == 1


# ---------------------------------------------------------------------------------------------
# Dashboard and alert rules
# ---------------------------------------------------------------------------------------------
METRIC_NAME = re.compile(r"\b(?:casare|fleet_monitor)_[a-z0-9_]+\b")


def referenced_metrics() -> tuple[set[str], list[dict]]:
    dashboard = json.loads((PROJECT_DIR / "monitoring" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    rules = [r for g in yaml.safe_load((PROJECT_DIR / "monitoring" / "alerts.yml").read_text())["groups"]
             for r in g["rules"]]
    exprs += [r["expr"] for r in rules]
    return {m for e in exprs for m in METRIC_NAME.findall(e)}, rules


def test_dashboard_and_alerts_use_only_exported_metrics(client, engine_of):
    with engine_of.begin() as c:
        insert_robot(c, "r1", status="busy", last_heartbeat=ago(seconds=3))
        insert_job(c, status="pending", created_at=ago(minutes=1))
        finished(c, "wf-a", "completed", 3.0, completed_ago_s=10)
    rollups.refresh(engine_of)
    client.get("/health")
    exported = set(scrape(client))
    covered = rollups.covered_until(engine_of).timestamp()
    assert scrape(client)["fleet_monitor_rollup_covered_until_timestamp_seconds"] == [({}, covered)]
    used, rules = referenced_metrics()
    assert used and used <= exported, used - exported
    names = {r["alert"] for r in rules}
    assert {"FleetRobotOffline", "FleetQueueBackingUp", "FleetJobErrorRateHigh", "FleetLongRunningJob"} <= names
    for rule in rules:
        assert {"alert", "expr", "for", "labels", "annotations"} <= set(rule)
        assert rule["labels"]["severity"] in ("warning", "critical")
    dashboard = json.loads((PROJECT_DIR / "monitoring" / "grafana-dashboard.json").read_text())
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


# ---------------------------------------------------------------------------------------------
# Health, readiness, request ids and JSON logs
# ---------------------------------------------------------------------------------------------
def test_health_and_ready_are_public_and_say_little(client, database_outage, db_url):
    health = client.get("/health")
    assert health.status_code == 200 and health.get_json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready", "checks": {"database": "ok", "schema": "ok"}}
    database_outage(False)
    assert client.get("/health").status_code == 200  # alive without the database
    down = client.get("/ready")
    assert down.status_code == 503
    assert down.get_json() == {"status": "unavailable", "checks": {"database": "unreachable", "schema": "unknown"}}
    text = down.get_data(as_text=True).lower()
    database = db_url.rsplit("/", 1)[-1].split("?")[0].lower()
    for secret in (database, "postgres", "psycopg", "localhost", "/tmp", "version"):
        assert secret not in text


def test_ready_reports_a_missing_schema(client, engine_of):
    with engine_of.begin() as c:
        c.execute(sa.text("ALTER TABLE fleet_monitor.audit_log RENAME TO audit_log_moved"))
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"database": "ok", "schema": "missing"}


def test_request_ids_reach_the_json_logs(client, database_outage):
    from server.logging_setup import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("data.monitoring")
    logger.addHandler(handler)
    try:
        database_outage(False)
        mine = client.get("/ready", headers={"X-Request-ID": "lb-1234.abc"})
        junk = client.get("/ready", headers={"X-Request-ID": "bad id; with <spaces>"})
    finally:
        logger.removeHandler(handler)
    assert mine.headers["X-Request-ID"] == "lb-1234.abc"
    assert re.fullmatch(r"[0-9a-f]{32}", junk.headers["X-Request-ID"])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["request_id"] for line in lines] == ["lb-1234.abc", junk.headers["X-Request-ID"]]
    assert all(line["level"] == "WARNING" and line["logger"] == "data.monitoring" for line in lines)
    assert all(line["time"].endswith("+00:00") for line in lines)
