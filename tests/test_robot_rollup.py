"""The per-robot hourly rollup (data.robot_rollup) behind the fleet list's work numbers.

Every test builds jobs by hand, computes the expected numbers itself (counts by completed_at,
utilization by its own sweep over the clipped intervals) and checks that robot_work_stats gives
them after a refresh, and that they equal the raw path's. Job intervals stay at least half an
hour inside the 24-hour window so the moment the test runs does not matter; "today" is taken in
a fixed-offset zone whose midnight is about twelve hours ago, so jobs can sit on both sides of it.
"""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
import sqlalchemy as sa

from data import robot_rollup as rr
from data import robots as rd
from tests.helpers import ago, insert_job, insert_robot, utcnow


def _zone_with_midnight_about_12h_ago() -> tuple[str, datetime]:
    """A fixed-offset zone where it is about noon now, and the UTC instant of its midnight."""
    now = utcnow()
    offset = 12 - now.hour  # local hour ~ 12
    if offset > 14:
        offset -= 24
    if offset < -12:
        offset += 24
    tz = "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"  # Etc/GMT-5 is UTC+5
    local = now + timedelta(hours=offset)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(hours=offset)
    return tz, midnight


def _expected(jobs: list[dict], capacities: dict[str, int], today_start: datetime) -> pd.DataFrame:
    """The test's own arithmetic: counts by completed_at, utilization by an exact sweep."""
    now = utcnow()
    week_ago, day_ago = now - timedelta(days=7), now - timedelta(hours=24)
    rows = {}
    for robot in set(capacities) | {j["robot_id"] for j in jobs if j.get("robot_id")}:
        mine = [j for j in jobs if j.get("robot_id") == robot]
        fin = [j for j in mine if j["status"] in ("completed", "failed") and j.get("completed_at")]
        completed_7d = sum(1 for j in fin if j["status"] == "completed" and j["completed_at"] >= week_ago)
        finished_7d = sum(1 for j in fin if j["completed_at"] >= week_ago)
        # Intervals: finished jobs that started, and running jobs up to now; clipped to the window.
        intervals = []
        for j in mine:
            if j.get("started_at") is None:
                continue
            end = j.get("completed_at") or (now if j["status"] == "running" else None)
            if end is None:
                continue
            s, e = max(j["started_at"], day_ago), min(end, now)
            if e > s:
                intervals.append((s, e))
        cap = capacities.get(robot, 1)
        points = sorted({t for iv in intervals for t in iv})
        busy = 0.0
        for a, b in zip(points, points[1:]):
            n = sum(1 for s, e in intervals if s <= a and e >= b)
            busy += min(n, cap) * (b - a).total_seconds()
        rows[robot] = {
            "robot_id": robot,
            "completed_today": sum(1 for j in fin if j["status"] == "completed" and j["completed_at"] >= today_start),
            "failed_today": sum(1 for j in fin if j["status"] == "failed" and j["completed_at"] >= today_start),
            "completed_7d": completed_7d, "finished_7d": finished_7d,
            "success_rate_7d": completed_7d / finished_7d if finished_7d else None,
            "utilization_24h": busy / (cap * 86400.0),
        }
    return pd.DataFrame(sorted(rows.values(), key=lambda r: r["robot_id"]))


def _check(engine, expected: pd.DataFrame, tz: str, *, rollup_expected: bool = True) -> pd.DataFrame:
    """robot_work_stats (rollup) equals the expected frame and the raw path's frame."""
    if rollup_expected:
        with engine.connect() as conn:
            assert rr.coverage(conn) is not None, "the rollup should be in use"
    got = rd.robot_work_stats(engine, tz).sort_values("robot_id").reset_index(drop=True)
    raw = rd.robot_work_stats(engine, tz, use_rollup=False).sort_values("robot_id").reset_index(drop=True)
    for frame, name in ((expected, "arithmetic"), (raw, "raw path")):
        assert list(got["robot_id"]) == list(frame["robot_id"]), name
        for col in ("completed_today", "failed_today", "completed_7d", "finished_7d"):
            assert got[col].astype(int).tolist() == frame[col].astype(int).tolist(), (name, col)
        for col in ("success_rate_7d", "utilization_24h"):
            a, b = got[col].astype(float).tolist(), frame[col].astype(float).tolist()
            # A running job ends at now(), which moves a few milliseconds between the calls.
            tol = 1e-6 if col == "utilization_24h" else 1e-9
            assert a == pytest.approx(b, rel=1e-9, abs=tol, nan_ok=True), (name, col)
    return got


def _job(conn, jobs, **kw) -> str:
    jid = insert_job(conn, created_at=kw.get("started_at") or ago(days=8), **kw)
    jobs.append({"id": jid, **kw})
    return jid


@pytest.fixture
def fleet(engine):
    """Three robots (one with capacity 2) and jobs across hour and day boundaries."""
    tz, midnight = _zone_with_midnight_about_12h_ago()
    caps = {"r1": 1, "r2": 2, "r3": 1}
    jobs: list[dict] = []
    with engine.begin() as conn:
        for robot, cap in caps.items():
            insert_robot(conn, robot, max_concurrent_jobs=cap, last_heartbeat=utcnow())
        m = midnight
        # r1: one across midnight, one just before, one just after (failed); one 3 days ago, one 8 days ago.
        _job(conn, jobs, robot_id="r1", status="completed", started_at=m - timedelta(minutes=25),
             completed_at=m + timedelta(minutes=35))
        _job(conn, jobs, robot_id="r1", status="completed", started_at=m - timedelta(minutes=70),
             completed_at=m - timedelta(minutes=30))
        _job(conn, jobs, robot_id="r1", status="failed", started_at=m + timedelta(minutes=40),
             completed_at=m + timedelta(minutes=100), error_message="TimeoutError: x")
        _job(conn, jobs, robot_id="r1", status="completed", started_at=ago(days=3, minutes=10), completed_at=ago(days=3))
        _job(conn, jobs, robot_id="r1", status="completed", started_at=ago(days=8, minutes=10), completed_at=ago(days=8))
        # r2 (capacity 2): three overlapping jobs spanning several hours; one cancelled after running.
        _job(conn, jobs, robot_id="r2", status="completed", started_at=ago(hours=9, minutes=5), completed_at=ago(hours=6))
        _job(conn, jobs, robot_id="r2", status="failed", started_at=ago(hours=8, minutes=40),
             completed_at=ago(hours=7, minutes=20))
        _job(conn, jobs, robot_id="r2", status="completed", started_at=ago(hours=8, minutes=10),
             completed_at=ago(hours=7, minutes=50))
        _job(conn, jobs, robot_id="r2", status="cancelled", started_at=ago(hours=5), completed_at=ago(hours=4, minutes=30))
        # r3: overlapping jobs at capacity 1 (busy once), a job still running, 6 days ago.
        _job(conn, jobs, robot_id="r3", status="completed", started_at=ago(hours=3, minutes=50),
             completed_at=ago(hours=2, minutes=10))
        _job(conn, jobs, robot_id="r3", status="completed", started_at=ago(hours=3), completed_at=ago(hours=1, minutes=5))
        _job(conn, jobs, robot_id="r3", status="running", started_at=ago(minutes=50))
        _job(conn, jobs, robot_id="r3", status="failed", started_at=ago(days=6, minutes=3), completed_at=ago(days=6))
        # A robot id with jobs but no row in robots (capacity 1), and a job never started.
        _job(conn, jobs, robot_id="ghost", status="completed", started_at=ago(hours=20), completed_at=ago(hours=19))
        _job(conn, jobs, robot_id=None, status="cancelled", completed_at=ago(hours=2))
    return {"tz": tz, "midnight": midnight, "caps": caps, "jobs": jobs}


def test_raw_path_until_the_first_refresh(engine, fleet):
    with engine.connect() as conn:
        assert rr.coverage(conn) is None
    _check(engine, _expected(fleet["jobs"], fleet["caps"], fleet["midnight"]), fleet["tz"], rollup_expected=False)


def test_refresh_backfills_and_matches_arithmetic_and_raw(engine, fleet):
    out = rr.refresh(engine)
    assert out["backfilled"] is True
    got = _check(engine, _expected(fleet["jobs"], fleet["caps"], fleet["midnight"]), fleet["tz"])
    r1 = got.set_index("robot_id").loc["r1"]
    assert (r1.completed_today, r1.failed_today, r1.completed_7d, r1.finished_7d) == (1, 1, 3, 4)
    # Repeating it changes nothing (recomputes, never adds).
    assert rr.refresh(engine)["backfilled"] is False
    _check(engine, _expected(fleet["jobs"], fleet["caps"], fleet["midnight"]), fleet["tz"])
    # A zone with a half-hour offset: the edges are half hours; same numbers as the raw path.
    for tz in ("Asia/Kolkata", "America/St_Johns"):
        a = rd.robot_work_stats(engine, tz).sort_values("robot_id").reset_index(drop=True)
        b = rd.robot_work_stats(engine, tz, use_rollup=False).sort_values("robot_id").reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_dtype=False, rtol=1e-9, atol=1e-6)


def test_rollup_rows_hold_hourly_counts_and_busy_levels(engine, fleet):
    rr.refresh(engine)
    with engine.connect() as conn:
        rows = pd.DataFrame(conn.execute(sa.text(
            f"SELECT robot_id, hour, completed, failed, busy FROM {rr.HOURLY} ORDER BY hour")).mappings().all())
    r2 = rows[rows.robot_id == "r2"]
    assert r2.completed.sum() == 2 and r2.failed.sum() == 1
    # Concurrency 3 happened on r2 (all three jobs between 8h10m and 7h50m ago): level 3 recorded.
    assert max(len(b) for b in r2.busy if b is not None) == 3
    # Levels sum to the total interval time: sum over hours of busy[k] = time with >= k jobs.
    total = sum(sum(b) for b in r2.busy if b)
    assert total == pytest.approx((185 + 80 + 20 + 30) * 60, abs=0.01)


def test_job_finishing_after_a_refresh_and_a_late_write(engine, fleet):
    rr.refresh(engine)
    jobs = fleet["jobs"]
    running = next(j for j in jobs if j["status"] == "running")
    with engine.begin() as conn:
        done = ago(minutes=1)
        conn.execute(sa.text("UPDATE job_queue SET status = 'completed', completed_at = :c WHERE id = :id"),
                     {"c": done, "id": running["id"]})
        running.update(status="completed", completed_at=done)
        # Written now, but finished 70 minutes ago (an hour the rollup already holds).
        _job(conn, jobs, robot_id="r1", status="completed", started_at=ago(minutes=80), completed_at=ago(minutes=70))
    rr.refresh(engine)
    _check(engine, _expected(jobs, fleet["caps"], fleet["midnight"]), fleet["tz"])


def test_rerun_job_moves_and_is_counted_once(engine, fleet):
    rr.refresh(engine)
    jobs = fleet["jobs"]
    # r2's 9-hour-old job is re-run in place on r1: new start, new end, now failed.
    job = next(j for j in jobs if j["robot_id"] == "r2" and j["status"] == "completed")
    new = {"robot_id": "r1", "status": "failed", "started_at": ago(minutes=45), "completed_at": ago(minutes=35)}
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE job_queue SET robot_id = :robot_id, status = :status, started_at = :started_at, "
                             "completed_at = :completed_at WHERE id = :id"), {**new, "id": job["id"]})
    job.update(new)
    out = rr.refresh(engine)
    assert out["dirty"] > 0  # the hours it left, 6 to 9 hours ago, were found and recomputed
    got = _check(engine, _expected(jobs, fleet["caps"], fleet["midnight"]), fleet["tz"])
    assert got.set_index("robot_id").loc["r2", "finished_7d"] == 2


def test_requeued_running_job_and_dead_letter_move(engine, fleet):
    jobs = fleet["jobs"]
    with engine.begin() as conn:
        long_run = _job(conn, jobs, robot_id="r1", status="running", started_at=ago(hours=5))
    rr.refresh(engine)
    with engine.begin() as conn:
        # The orchestrator re-queues the job whose lease expired: it no longer occupied r1.
        conn.execute(sa.text("UPDATE job_queue SET status = 'pending', robot_id = NULL, started_at = NULL, "
                             "retry_count = retry_count + 1 WHERE id = :id"), {"id": long_run})
        # r3's failed job of 6 days ago moves to the dead-letter queue (deleted from job_queue).
        dead = next(j for j in jobs if j["robot_id"] == "r3" and j["status"] == "failed")
        conn.execute(sa.text("INSERT INTO job_queue_dlq (original_job_id, workflow_id, workflow_name, error_message) "
                             "VALUES (:id, 'wf-a', 'wf-a', 'x')"), {"id": dead["id"]})
        conn.execute(sa.text("DELETE FROM job_queue WHERE id = :id"), {"id": dead["id"]})
    jobs[:] = [j for j in jobs if j["id"] not in (long_run, dead["id"])]
    rr.refresh(engine)
    _check(engine, _expected(jobs, fleet["caps"], fleet["midnight"]), fleet["tz"])


def test_concurrent_refreshes_do_not_double_count(engine, fleet):
    rr.refresh(engine)
    with engine.begin() as conn:
        _job(conn, fleet["jobs"], robot_id="r1", status="completed", started_at=ago(hours=1, minutes=30),
             completed_at=ago(minutes=5))
    barrier = threading.Barrier(4)
    results, errors = [], []

    def run():
        try:
            barrier.wait()
            results.append(rr.refresh(engine))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert any("skipped" not in r for r in results)
    rr.refresh(engine)
    _check(engine, _expected(fleet["jobs"], fleet["caps"], fleet["midnight"]), fleet["tz"])


def test_refresh_on_an_empty_database_and_ensure_tables(engine):
    rr.ensure_tables(engine)
    rr.ensure_tables(engine)  # idempotent
    out = rr.refresh(engine)
    assert out["backfilled"] is True and out["watermark"] > out["lo"]
    assert rd.robot_work_stats(engine, "UTC").empty
