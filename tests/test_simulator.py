"""The live simulator behaves like the orchestrator and its robots, on a real database."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from config import Settings
from data.db import make_engine, read_frame, read_row
from data.demo import generate_demo
from data.schema import ensure_schema
from data.simulator import SILENT_AFTER_S, Simulator, start_simulator


@pytest.fixture
def fleet(engine):
    """A small generated fleet; returns (engine, the generation's now)."""
    now = datetime.now(timezone.utc)
    generate_demo(engine, jobs=3_000, robots=12, days=7, now=now)
    return engine, now


def run(sim: Simulator, start: datetime, seconds: float, every: float = 2.0) -> datetime:
    t = start
    while t < start + timedelta(seconds=seconds):
        t += timedelta(seconds=every)
        sim.step(t)
    return t


def add_robot(engine, robot_id: str, environment: str, now: datetime, slots: int = 1) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO robots (robot_id, name, status, environment, max_concurrent_jobs, last_heartbeat) "
            "VALUES (:r, :r, 'online', :env, :slots, :now)"), {"r": robot_id, "env": environment, "slots": slots,
                                                             "now": now})


def add_job(engine, workflow_id: str, environment: str, priority: int, created_at: datetime) -> str:
    with engine.begin() as conn:
        return str(conn.execute(sa.text(
            "INSERT INTO job_queue (workflow_id, workflow_name, workflow_json, priority, environment, "
            "created_at, visible_after) VALUES (:wf, :wf, '{}', :p, :env, :t, :t) RETURNING id"),
            {"wf": workflow_id, "p": priority, "env": environment, "t": created_at}).scalar())


def test_the_fleet_moves(fleet):
    engine, t0 = fleet
    before = read_frame(engine, "SELECT robot_id, status, last_heartbeat FROM robots").set_index("robot_id")
    waiting = read_frame(engine, "SELECT id FROM job_queue WHERE status = 'pending' AND visible_after <= :t",
                         {"t": t0})
    running = read_frame(engine, "SELECT id FROM job_queue WHERE status = 'running'")
    assert len(waiting) and len(running)

    sim = Simulator(engine, seed=7)
    end = run(sim, t0, 600, every=3)
    sim.stop()

    jobs = read_frame(engine, "SELECT id, status, robot_id, environment, created_at, started_at, completed_at, "
                              "result, retry_count FROM job_queue WHERE created_at >= :t OR started_at >= :t "
                              "OR completed_at >= :t OR id = ANY(:ids)",
                      {"t": t0, "ids": list(waiting.id) + list(running.id)}).set_index("id")
    # Every job that was waiting got claimed, like the orchestrator claims: robot, start time.
    # (A job still pending at the end was claimed, failed and re-queued: its retry count rose.)
    claimed = jobs.loc[list(waiting.id)]
    assert ((claimed.status != "pending") | (claimed.retry_count > 0)).all()
    started = claimed[claimed.status != "pending"]
    assert started.robot_id.notna().all() and (started.started_at >= t0).all()
    # Jobs that were running finished (or were re-queued), with node records when they completed.
    was_running = jobs.loc[list(running.id)]
    assert ((was_running.status != "running") | (was_running.retry_count > 0)).all()
    done = jobs[jobs.completed_at.notna() & (jobs.completed_at >= t0)]
    assert len(done) >= len(running)
    completed = done[done.status == "completed"]
    assert completed.result.map(lambda r: len(r["node_executions"]) >= 2).all()
    # New jobs arrived, and some already ran to the end.
    new = jobs[jobs.created_at > t0]
    assert len(new) > 5 and (new.status.isin(["completed", "failed"])).any()
    assert (jobs.started_at.dropna() >= jobs.created_at[jobs.started_at.notna()]).all()
    assert (jobs.completed_at.dropna() >= jobs.started_at[jobs.completed_at.notna()]).all()

    # Robots heartbeat (rows and robots.last_heartbeat), except the maintenance and silent ones.
    after = read_frame(engine, "SELECT robot_id, status, last_heartbeat FROM robots").set_index("robot_id")
    beats = read_frame(engine, 'SELECT robot_id, count(*) AS n FROM robot_heartbeats WHERE "timestamp" > :t '
                               "GROUP BY 1", {"t": t0}).set_index("robot_id").n
    frozen = before[(before.status == "maintenance")
                    | (before.last_heartbeat < t0 - timedelta(seconds=SILENT_AFTER_S))].index
    assert len(frozen) == 2
    assert (after.loc[frozen].last_heartbeat == before.loc[frozen].last_heartbeat).all()
    assert set(beats.index).isdisjoint(frozen)
    live = after.drop(frozen)
    assert (live.last_heartbeat > t0).all() and (end - live.last_heartbeat < timedelta(minutes=5)).all()
    assert beats.max() >= 80  # about every 5 s

    # Never more running jobs on a robot than its slots, never outside its pool.
    load = read_frame(engine, """
        SELECT j.robot_id, count(*) AS n, r.max_concurrent_jobs AS slots,
               bool_and(j.environment = r.environment) AS same_pool,
               bool_and(r.current_job_ids ? j.id::text) AS listed, min(r.status) AS status
        FROM job_queue j JOIN robots r USING (robot_id) WHERE j.status = 'running' GROUP BY 1, 3""")
    assert (load.n <= load.slots).all() and load.same_pool.all()
    assert load.listed.all() and (load.status == "busy").all()


def test_claims_by_priority_then_age(engine):
    now = datetime.now(timezone.utc)
    add_robot(engine, "solo", "lab", now)
    low = add_job(engine, "wf-email-triage", "lab", 1, now - timedelta(minutes=9))
    old = add_job(engine, "wf-email-triage", "lab", 5, now - timedelta(minutes=5))
    young = add_job(engine, "wf-email-triage", "lab", 5, now - timedelta(minutes=1))
    later = add_job(engine, "wf-email-triage", "lab", 9, now + timedelta(minutes=1))
    sim = Simulator(engine, seed=3)
    sim.step(now + timedelta(seconds=10))
    sim.stop()
    jobs = read_frame(engine, "SELECT id::text AS id, status, robot_id, started_at, visible_after "
                              "FROM job_queue").set_index("id")
    assert jobs.loc[old].status == "running" and jobs.loc[old].robot_id == "solo"
    assert jobs.loc[old].started_at == now + timedelta(seconds=10)
    assert jobs.loc[old].visible_after > jobs.loc[old].started_at  # the lease
    assert jobs.loc[[low, young, later]].status.eq("pending").all()
    robot = read_row(engine, "SELECT status, current_job_ids FROM robots WHERE robot_id = 'solo'")
    assert robot == {"status": "busy", "current_job_ids": [old]}


def test_failures_are_retried_then_fail(engine):
    now = datetime.now(timezone.utc)
    for k in range(6):
        add_robot(engine, f"lab-{k}", "lab", now)
    # Vendor Portal Sync fails often, mostly with retryable errors.
    ids = [add_job(engine, "wf-vendor-portal-sync", "lab", 1, now - timedelta(seconds=k)) for k in range(120)]
    sim = Simulator(engine, seed=11)
    run(sim, now, 1800, every=5)
    sim.stop()
    jobs = read_frame(engine, "SELECT status, retry_count, error_message, result FROM job_queue "
                              "WHERE id = ANY(CAST(:ids AS uuid[]))", {"ids": ids})
    assert (jobs.retry_count > 0).any()
    assert jobs.status.eq("completed").sum() > 90
    retried_ok = jobs[(jobs.status == "completed") & (jobs.retry_count > 0)]
    assert len(retried_ok) > 0
    failed = jobs[jobs.status == "failed"]
    assert failed.error_message.notna().all()
    assert all(r["node_executions"][-1]["error"] == e for r, e in zip(failed.result, failed.error_message))


def test_only_one_simulator_leads(fleet):
    engine, now = fleet
    first, second = Simulator(engine, seed=1), Simulator(engine, seed=2)
    try:
        assert first.step(now)["leader"] and first.is_leader
        assert second.step(now) == {"leader": False} and not second.is_leader
        assert second.step(now + timedelta(seconds=10)) == {"leader": False}
        first.stop()
        # The lock is free again; the second takes over on its next try (every few seconds).
        assert second.step(now + timedelta(seconds=20))["leader"]
        assert not first.step(now + timedelta(seconds=30))["leader"]
    finally:
        first.stop()
        second.stop()


def test_background_thread_starts_and_stops(fleet):
    engine, _ = fleet
    sim = start_simulator(engine, Settings(simulator=True))
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sim.totals["heartbeats"] == 0:
            time.sleep(0.2)
        assert sim.totals["heartbeats"] > 0 and sim.is_leader
    finally:
        began = time.monotonic()
        sim.stop()
    assert time.monotonic() - began < 3 and not sim._thread.is_alive()
    assert start_simulator(engine, Settings(simulator=False)) is None


def test_survives_the_database_going_away(pg_admin_url, caplog):
    """Dropping the database pauses the simulator with one log line; it resumes on its own."""
    name = "fm_sim_" + str(int(time.time() * 1000))
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")

    def create():
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine = make_engine(make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False))
        ensure_schema(engine)
        generate_demo(engine, jobs=500, robots=6, days=3)
        engine.dispose()

    def drop():
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    create()
    engine = make_engine(make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False))
    sim = Simulator(engine, tick_seconds=0.2, seed=5)
    caplog.set_level(logging.INFO, logger="data.simulator")
    try:
        sim.start()
        wait_for(lambda: sim.totals["heartbeats"] > 0)
        drop()
        wait_for(lambda: "database unavailable" in caplog.text)
        time.sleep(1)
        assert sim._thread.is_alive() and not sim.is_leader
        create()
        beats = sim.totals["heartbeats"]
        wait_for(lambda: sim.totals["heartbeats"] > beats, timeout=30)
        messages = [r.getMessage() for r in caplog.records if r.name == "data.simulator"]
        assert sum("database unavailable" in m for m in messages) == 1
        assert not any(r.exc_info for r in caplog.records)
    finally:
        sim.stop()
        engine.dispose()
        drop()
        admin.dispose()


def wait_for(condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)
