"""The demo generator: the fleet and history it writes look like a real orchestrator's.

One data set is generated per module (20k jobs, 40 robots) and every test checks it with its
own SQL or pandas, not with the generator's code.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from config import Settings
from data.db import make_engine, read_frame, read_row
from data.demo import (
    WORKFLOWS, DatabaseNotEmpty, allocate, ensure_demo_data, generate_demo, hourly_weights,
)
from data.errors import classify_error
from data.schema import ensure_schema
from tests.helpers import temporary_database

JOBS, ROBOTS = 20_000, 40


@contextmanager
def fresh_database(pg_admin_url):
    """An engine on a new database with the tables created (the `engine` fixture, any scope)."""
    with temporary_database(pg_admin_url, "fm_demo_") as url:
        engine = make_engine(url)
        try:
            ensure_schema(engine)
            yield engine
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def demo(pg_admin_url):
    """(engine, stats, now) for one generated data set shared by this module's tests."""
    with fresh_database(pg_admin_url) as engine:
        now = datetime.now(timezone.utc).replace(microsecond=0)
        stats = generate_demo(engine, jobs=JOBS, robots=ROBOTS, now=now)
        yield engine, stats, now


def frame(demo, sql, **params) -> pd.DataFrame:
    return read_frame(demo[0], sql, {"now": demo[2], **params})


# -- pure helpers ------------------------------------------------------------------------------

def test_allocate_adds_up_exactly():
    parts = allocate(1000, [0.2, 0.0, 1.3, 7.5])
    assert parts.sum() == 1000 and parts[1] == 0
    assert allocate(0, [1, 2]).tolist() == [0, 0]


def test_hourly_weights_have_daily_and_weekly_rhythm():
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)  # a Monday
    w = hourly_weights(start, 14 * 24, np.random.default_rng(1)).reshape(14, 24)
    assert w[:5, 0:5].mean() < 0.3 * w[:5, 9:17].mean()  # nights vs weekday office hours
    assert w[5:7].mean() < 0.5 * w[0:5].mean()  # weekend vs weekdays


def test_workflow_profiles():
    ids = [w.workflow_id for w in WORKFLOWS]
    assert len(set(ids)) == len(ids) >= 15
    assert "wf-invoice-processing" in ids
    assert all(0.005 <= w.failure_rate <= 0.15 for w in WORKFLOWS)
    assert len({(w.median_s, w.sigma) for w in WORKFLOWS}) == len(WORKFLOWS)
    assert any(w.alt_share > 0 for w in WORKFLOWS)  # at least one bimodal
    assert all(len(w.workflow_json()) < 2000 for w in WORKFLOWS)


# -- the generated data set --------------------------------------------------------------------

def test_counts_and_stats(demo):
    engine, stats, _ = demo
    counts = read_row(engine, "SELECT (SELECT count(*) FROM job_queue) AS jobs, "
                              "(SELECT count(*) FROM robots) AS robots, (SELECT count(*) FROM job_queue_dlq) AS dlq")
    assert counts == {"jobs": JOBS, "robots": ROBOTS, "dlq": stats["dlq"]}
    assert counts["dlq"] >= 3
    assert stats["jobs"] == JOBS and stats["seconds"] > 0


def test_table_fills_in_time_order(demo):
    """Rows lie in created_at order on disk, as in an orchestrator's table (plans depend on it)."""
    stats = frame(demo, "SELECT attname, correlation FROM pg_stats "
                        "WHERE tablename = 'job_queue' AND attname IN ('created_at', 'robot_id')")
    correlation = dict(zip(stats.attname, stats.correlation))
    assert correlation["created_at"] > 0.95 and abs(correlation["robot_id"]) < 0.5


def test_fleet(demo):
    robots = frame(demo, "SELECT robot_id, name, hostname, environment, status, capabilities, tags, "
                         "metrics, max_concurrent_jobs FROM robots")
    assert robots.robot_id.str.fullmatch(r"robot-\d{2}").all()
    assert robots.hostname.is_unique and robots.name.is_unique
    assert robots.environment.nunique() >= 2
    assert set(robots.environment) <= {"production", "staging", "finance"}
    assert robots.capabilities.map(len).min() >= 1 and robots.tags.map(len).min() >= 1
    assert set(robots.max_concurrent_jobs) == {1, 2}
    assert (robots.max_concurrent_jobs == 1).mean() > 0.7
    keys = {"cpu_percent", "memory_percent", "memory_mb", "disk_percent", "uptime_seconds"}
    assert robots.metrics.map(lambda m: keys <= set(m)).all()
    assert robots.metrics.map(lambda m: 0 < m["cpu_percent"] <= 100 and 0 < m["memory_percent"] < 100).all()


def test_maintenance_silent_and_fresh_robots(demo):
    now = demo[2]
    robots = frame(demo, "SELECT robot_id, status, extract(epoch FROM :now - last_heartbeat)::float8 AS age FROM robots")
    assert (robots.status == "maintenance").sum() == 1
    others = robots[robots.status != "maintenance"]
    silent = others[others.age > 120]
    assert len(silent) == 1
    assert silent.status.iloc[0] == "online" and 20 * 60 <= silent.age.iloc[0] <= 40 * 60
    assert (others.drop(silent.index).age < 30).all()
    # The silent robot's heartbeats stop at its last heartbeat; it ran no job since.
    last = frame(demo, "SELECT max(\"timestamp\") AS ts FROM robot_heartbeats WHERE robot_id = :r",
                 r=silent.robot_id.iloc[0]).ts.iloc[0]
    assert (now - last).total_seconds() >= 20 * 60
    late = frame(demo, "SELECT count(*) AS n FROM job_queue WHERE robot_id = :r AND started_at > :t",
                 r=silent.robot_id.iloc[0], t=last)
    assert late.n.iloc[0] == 0


def test_statuses_satisfy_the_check_constraints(demo):
    jobs = frame(demo, "SELECT DISTINCT status FROM job_queue")
    assert set(jobs.status) == {"pending", "running", "completed", "failed", "cancelled"}
    robots = frame(demo, "SELECT DISTINCT status FROM robots")
    assert set(robots.status) <= {"offline", "online", "busy", "error", "maintenance"}
    beats = frame(demo, "SELECT DISTINCT status FROM robot_heartbeats")
    assert set(beats.status) <= {"offline", "online", "busy", "error", "maintenance"}
    bounds = frame(demo, "SELECT min(priority) AS lo, max(priority) AS hi, max(retry_count) AS retries, "
                         "max(length(workflow_json)) AS json_len FROM job_queue")
    assert 0 <= bounds.lo[0] and bounds.hi[0] <= 20 and bounds.retries[0] <= 3 and bounds.json_len[0] < 2000


def test_workflows_in_history(demo):
    per_wf = frame(demo, """
        SELECT workflow_id, workflow_name, count(DISTINCT environment) AS envs,
               avg((status = 'failed')::int)::float8 AS failure_rate,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at))
                   FILTER (WHERE status = 'completed') AS median_s,
               count(DISTINCT priority) AS priorities
        FROM job_queue GROUP BY 1, 2""")
    assert len(per_wf) >= 15
    assert per_wf.workflow_id.str.fullmatch(r"wf-[a-z0-9-]+").all()
    assert per_wf.median_s.max() / per_wf.median_s.min() > 10
    assert per_wf.failure_rate.max() > 0.1 and per_wf.failure_rate.min() < 0.02
    assert per_wf.envs.max() == 2  # some workflows run in two pools


def test_error_messages(demo):
    errors = frame(demo, "SELECT workflow_id, error_message, count(*) AS n FROM job_queue "
                         "WHERE status = 'failed' GROUP BY 1, 2")
    assert errors.error_message.notna().all()
    errors["type"] = errors.error_message.map(classify_error)
    types = set(errors.type)
    assert {"TimeoutError", "ConnectionError", "NotFoundError", "PermissionError", "ValidationError"} <= types
    assert len(types) >= 12
    # keyword-only messages exist beside SomethingError/SomethingException tokens
    assert errors.error_message.str.match(r"^[A-Za-z]+(Error|Exception):").any()
    assert errors.error_message.str.contains("timed out|connection refused|element not found|"
                                             "permission denied|validation failed").any()
    per_wf = errors.groupby("workflow_id").type.nunique()
    assert (per_wf >= 2).mean() > 0.8


def test_span_and_seasonality(demo):
    now = demo[2]
    span = frame(demo, "SELECT min(created_at) AS lo, max(created_at) AS hi FROM job_queue")
    assert timedelta(days=89) < now - span.lo[0] <= timedelta(days=90)
    assert span.hi[0] <= now and now - span.hi[0] < timedelta(minutes=10)
    hourly = frame(demo, """
        SELECT extract(hour FROM created_at AT TIME ZONE 'UTC')::int AS hour,
               extract(isodow FROM created_at AT TIME ZONE 'UTC')::int AS dow, count(*) AS n
        FROM job_queue GROUP BY 1, 2""")
    by_hour = hourly.groupby("hour").n.sum()
    assert by_hour.loc[0:5].mean() < 0.3 * by_hour.loc[9:16].mean()
    by_dow = hourly.groupby("dow").n.sum()
    assert by_dow.loc[6:7].mean() < 0.5 * by_dow.loc[1:5].mean()


def test_timestamps_are_ordered(demo):
    bad = frame(demo, """
        SELECT count(*) FILTER (WHERE started_at < created_at) AS start_before_create,
               count(*) FILTER (WHERE completed_at < started_at) AS end_before_start,
               count(*) FILTER (WHERE completed_at < created_at) AS end_before_create,
               count(*) FILTER (WHERE greatest(created_at, started_at, completed_at) > :now) AS future,
               count(*) FILTER (WHERE status IN ('completed', 'failed')
                                  AND (started_at IS NULL OR completed_at IS NULL OR robot_id IS NULL)) AS finished,
               count(*) FILTER (WHERE status = 'running'
                                  AND (started_at IS NULL OR completed_at IS NOT NULL OR robot_id IS NULL)) AS running,
               count(*) FILTER (WHERE status = 'pending'
                                  AND (started_at IS NOT NULL OR completed_at IS NOT NULL OR robot_id IS NOT NULL)) AS pending,
               count(*) FILTER (WHERE status = 'cancelled' AND completed_at IS NULL) AS cancelled,
               count(*) FILTER (WHERE visible_after < created_at
                                  OR visible_after < started_at) AS lease
        FROM job_queue""")
    assert bad.iloc[0].to_dict() == {k: 0 for k in bad.columns}


def test_cancellations_and_retries(demo):
    row = frame(demo, """
        SELECT count(*) FILTER (WHERE status = 'cancelled' AND started_at IS NULL) AS cancelled_queued,
               count(*) FILTER (WHERE status = 'cancelled' AND started_at IS NOT NULL) AS cancelled_running,
               count(*) FILTER (WHERE status = 'completed' AND retry_count > 0) AS completed_retried,
               count(*) FILTER (WHERE status = 'failed' AND retry_count = max_retries) AS failed_exhausted,
               count(*) FILTER (WHERE status = 'failed' AND retry_count = 0) AS failed_at_once
        FROM job_queue""").iloc[0]
    assert (row > 0).all(), row.to_dict()


def test_queue_wait_is_realistic(demo):
    # (Whether peaks or nightly batches wait longer on average depends on the hour the data is
    # generated at; the shape of the distribution does not.)
    waits = frame(demo, """
        SELECT extract(epoch FROM started_at - created_at)::float8 AS wait_s
        FROM job_queue WHERE started_at IS NOT NULL""")
    assert 1 < waits.wait_s.median() < 120
    assert waits.wait_s.quantile(0.99) > 120


def test_a_robot_never_runs_more_jobs_than_its_slots(demo):
    over = frame(demo, """
        WITH events AS (
            SELECT robot_id, started_at AS t, 1 AS d FROM job_queue WHERE started_at IS NOT NULL
            UNION ALL
            SELECT robot_id, completed_at, -1 FROM job_queue
            WHERE started_at IS NOT NULL AND completed_at IS NOT NULL
        ), load AS (
            SELECT robot_id, sum(d) OVER (PARTITION BY robot_id ORDER BY t, d) AS running FROM events
        )
        SELECT l.robot_id, max(l.running) AS peak, r.max_concurrent_jobs
        FROM load l JOIN robots r USING (robot_id) GROUP BY 1, 3
        HAVING max(l.running) > r.max_concurrent_jobs""")
    assert over.empty, over


def test_node_executions(demo):
    nodes = frame(demo, """
        SELECT j.id, j.status, j.error_message,
               extract(epoch FROM j.started_at)::float8 AS job_start, extract(epoch FROM j.completed_at)::float8 AS job_end,
               n.ord, n.e ->> 'status' AS node_status, n.e ->> 'error' AS node_error,
               (n.e ->> 'duration_ms')::float8 AS duration_ms,
               extract(epoch FROM (n.e ->> 'started_at')::timestamptz)::float8 AS node_start,
               extract(epoch FROM (n.e ->> 'completed_at')::timestamptz)::float8 AS node_end,
               jsonb_array_length(j.result -> 'node_executions') AS n_nodes
        FROM job_queue j, jsonb_array_elements(j.result -> 'node_executions') WITH ORDINALITY AS n(e, ord)
        WHERE j.status IN ('completed', 'failed')""")
    finished = frame(demo, "SELECT count(*) AS n FROM job_queue WHERE status IN ('completed', 'failed')").n[0]
    assert nodes.id.nunique() == finished  # every finished job has its nodes
    keys = frame(demo, "SELECT DISTINCT jsonb_object_keys(result -> 'node_executions' -> 0) AS k "
                       "FROM job_queue WHERE status = 'completed'")
    assert set(keys.k) == {"node_id", "node_type", "status", "started_at", "completed_at", "duration_ms", "error"}
    eps = 0.002
    assert (nodes.node_start >= nodes.job_start - eps).all()
    assert (nodes.node_end <= nodes.job_end + eps).all()
    assert ((nodes.node_end - nodes.node_start) * 1000 - nodes.duration_ms).abs().max() < 2
    per_job = nodes.groupby("id").agg(total_ms=("duration_ms", "sum"), start=("job_start", "first"),
                                      end=("job_end", "first"), count=("ord", "size"))
    assert (per_job.total_ms <= (per_job.end - per_job.start) * 1000 + 2).all()
    assert per_job["count"].between(2, 12).all()
    # Within a job the nodes follow each other.
    ordered = nodes.sort_values(["id", "ord"])
    prev_end = ordered.groupby("id").node_end.shift()
    assert (prev_end.isna() | (ordered.node_start >= prev_end - eps)).all()
    completed = nodes[nodes.status == "completed"]
    assert (completed.node_status == "completed").all() and completed.node_error.isna().all()
    failed = nodes[nodes.status == "failed"]
    last = failed[failed.ord == failed.n_nodes]
    assert (last.node_status == "failed").all() and (last.node_error == last.error_message).all()
    assert (failed[failed.ord < failed.n_nodes].node_status == "completed").all()


def test_metadata_variables_and_results(demo):
    row = frame(demo, """
        SELECT count(*) FILTER (WHERE metadata ? 'healing_attempts') AS healed,
               count(*) FILTER (WHERE (metadata ->> 'healing_successes')::int
                                      > (metadata ->> 'healing_attempts')::int) AS impossible,
               count(*) FILTER (WHERE variables = '{}'::jsonb) AS no_variables,
               count(*) FILTER (WHERE status NOT IN ('completed', 'failed') AND result <> '{}'::jsonb) AS stray
        FROM job_queue WHERE status <> 'pending'""").iloc[0]
    assert row.healed > 100 and row.impossible == 0 and row.no_variables == 0 and row.stray == 0


def test_live_edge(demo):
    running = frame(demo, "SELECT j.id::text AS id, j.robot_id, j.environment, r.environment AS robot_env, "
                          "r.status AS robot_status, r.current_job_ids, j.started_at "
                          "FROM job_queue j JOIN robots r USING (robot_id) WHERE j.status = 'running'")
    assert len(running) >= 4
    assert (running.environment == running.robot_env).all()
    assert (running.robot_status == "busy").all()
    assert running.apply(lambda r: r.id in r.current_job_ids, axis=1).all()
    busy = frame(demo, "SELECT robot_id, current_job_ids FROM robots WHERE status = 'busy'")
    assert set(busy.robot_id) == set(running.robot_id)
    pending = frame(demo, "SELECT created_at FROM job_queue WHERE status = 'pending'")
    assert len(pending) >= 5
    assert (demo[2] - pending.created_at.max()) < timedelta(minutes=5)


def test_heartbeats(demo):
    now = demo[2]
    beats = frame(demo, """
        SELECT h.robot_id, h."timestamp" AS ts, h.status, h.current_jobs, h.metrics, h.latency_ms,
               r.status AS robot_status
        FROM robot_heartbeats h JOIN robots r USING (robot_id)""")
    assert timedelta(days=2) < now - beats.ts.min() <= timedelta(days=3, minutes=1)
    assert beats.robot_id.nunique() == ROBOTS
    beats = beats.sort_values(["robot_id", "ts"])
    beats["gap"] = beats.groupby("robot_id").ts.diff().dt.total_seconds()
    gaps = beats.groupby("robot_id").gap.max()
    assert (gaps.between(50, 70)).sum() >= ROBOTS - 2  # about every minute
    assert (gaps > 3600).sum() == 1  # one robot had an outage of hours
    assert set(beats.status) == {"online", "busy", "maintenance"}
    assert ((beats.status == "busy") == (beats.current_jobs > 0)).all()
    cpu = beats.metrics.map(lambda m: m["cpu_percent"])
    assert cpu.between(0, 100).all()
    assert cpu[beats.current_jobs > 0].mean() > cpu[beats.current_jobs == 0].mean() + 15
    assert beats.latency_ms.between(1, 2000).all()


def test_refuses_a_database_with_data(demo):
    with pytest.raises(DatabaseNotEmpty):
        generate_demo(demo[0], jobs=100, robots=10)
    assert read_row(demo[0], "SELECT count(*) AS n FROM job_queue")["n"] == JOBS


def test_same_seed_same_data(engine, pg_admin_url):
    now = datetime(2026, 3, 4, 10, 30, tzinfo=timezone.utc)
    jobs_sql = """SELECT md5(string_agg(concat_ws('|', workflow_id, status, robot_id, created_at, started_at,
                      completed_at, error_message, result::text, retry_count, metadata::text), ','
                      ORDER BY created_at, workflow_id)) AS h FROM job_queue"""
    beats_sql = """SELECT md5(string_agg(concat_ws('|', robot_id, "timestamp", status, current_jobs,
                       metrics::text), ',' ORDER BY robot_id, "timestamp")) AS h FROM robot_heartbeats"""
    generate_demo(engine, jobs=3_000, robots=8, days=10, now=now)
    with fresh_database(pg_admin_url) as other:
        generate_demo(other, jobs=3_000, robots=8, days=10, now=now)
        for sql in (jobs_sql, beats_sql):
            assert read_row(engine, sql) == read_row(other, sql)


# -- ensure_demo_data --------------------------------------------------------------------------

def test_ensure_demo_data_runs_once(engine):
    settings = Settings(demo_jobs=2_000, demo_robots=12)
    first = ensure_demo_data(engine, settings)
    assert first and first["jobs"] == 2_000 and first["robots"] == 12
    meta = read_row(engine, "SELECT value FROM fleet_monitor.meta WHERE key = 'demo'")
    assert meta["value"]["jobs"] == 2_000
    assert ensure_demo_data(engine, settings) is None
    assert read_row(engine, "SELECT count(*) AS n FROM job_queue")["n"] == 2_000


def test_ensure_demo_data_from_many_workers_generates_once(engine):
    settings = Settings(demo_jobs=2_000, demo_robots=12)
    results = []
    workers = [threading.Thread(target=lambda: results.append(ensure_demo_data(engine, settings)))
               for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert len(results) == 3 and sum(r is not None for r in results) == 1
    assert read_row(engine, "SELECT count(*) AS n FROM robots")["n"] == 12


def test_ensure_demo_data_leaves_an_orchestrator_database_alone(engine):
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO robots (robot_id, name) VALUES ('r-1', 'existing robot')"))
    assert ensure_demo_data(engine, Settings(demo_jobs=2_000, demo_robots=12)) is None
    assert read_row(engine, "SELECT count(*) AS n FROM job_queue")["n"] == 0


@pytest.mark.skipif(not os.environ.get("FLEET_TIME_DEMO"), reason="timing run: set FLEET_TIME_DEMO=1")
def test_default_size_generation_time(engine):
    began = time.perf_counter()
    stats = generate_demo(engine)
    elapsed = time.perf_counter() - began
    print(f"\n150k jobs generated in {elapsed:.1f} s: {stats}")
    assert stats["jobs"] == 150_000 and elapsed < 60
