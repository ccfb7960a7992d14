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
from zoneinfo import ZoneInfo

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
    assert out["backfilled"] > 0 and not out["behind"]
    got = _check(engine, _expected(fleet["jobs"], fleet["caps"], fleet["midnight"]), fleet["tz"])
    r1 = got.set_index("robot_id").loc["r1"]
    assert (r1.completed_today, r1.failed_today, r1.completed_7d, r1.finished_7d) == (1, 1, 3, 4)
    # Repeating it changes nothing (recomputes, never adds).
    assert rr.refresh(engine)["backfilled"] == 0
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
    # No job: nothing to backfill, an empty range at the watermark.
    assert out["backfilled"] == 0 and not out["behind"] and out["watermark"] == out["lo"]
    assert rd.robot_work_stats(engine, "UTC").empty


# ---------------------------------------------------------------------------------------------
# Long windows: utilization and utilization_by_hour_of_week from the rollup
# ---------------------------------------------------------------------------------------------
# The test's own arithmetic, over the utilization definition of data.robots: job intervals
# (finished jobs that started; running jobs up to now), clipped to the window, concurrency
# capped at capacity. Hours are the instants where the zone's clock is on the hour.

def _floor_hour(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def _robot_intervals(jobs: list[dict], now: datetime) -> dict[str, list[tuple[datetime, datetime]]]:
    out: dict[str, list] = {}
    for j in jobs:
        if not j.get("robot_id") or j.get("started_at") is None:
            continue
        end = j.get("completed_at") or (now if j["status"] == "running" else None)
        if end is not None:
            out.setdefault(j["robot_id"], []).append((j["started_at"], end))
    return out


def _sweep(intervals, cap: int, a: datetime, b: datetime) -> float:
    clipped = [(max(s, a), min(e, b)) for s, e in intervals if min(e, b) > max(s, a)]
    points = sorted({t for iv in clipped for t in iv})
    busy = 0.0
    for p, q in zip(points, points[1:]):
        n = sum(1 for s, e in clipped if s <= p and e >= q)
        busy += min(n, cap) * (q - p).total_seconds()
    return busy


def _window_robots(jobs, robots: dict[str, tuple[int, str]], start, w1, ids=None, env=None) -> dict[str, int]:
    """The robots a window reports, with their capacity: robots rows (of `ids`, of `env`) and,
    without an environment, robot ids without a row that ran a job in the window."""
    chosen = {r: cap for r, (cap, e) in robots.items()
              if (ids is None or r in ids) and (env is None or e == env)}
    if env is None:
        for j in jobs:
            r = j.get("robot_id")
            if not r or r in robots or (ids is not None and r not in ids) or j.get("started_at") is None:
                continue
            if j["status"] == "running" and j.get("completed_at") is None:
                ran = j["started_at"] < w1
            else:
                ran = j.get("completed_at") is not None and j["completed_at"] > start and j["started_at"] < w1
            if ran:
                chosen[r] = 1
    return chosen


def _expected_per_robot(jobs, robots, start, end, ids=None, env=None) -> pd.DataFrame:
    now = utcnow()
    w1 = min(end, now)
    chosen = _window_robots(jobs, robots, start, w1, ids, env)
    ivs = _robot_intervals(jobs, now)
    rows = []
    for r, cap in sorted(chosen.items()):
        busy = _sweep(ivs.get(r, []), cap, start, w1)
        capacity = cap * max((w1 - start).total_seconds(), 0)
        rows.append({"robot_id": r, "busy_seconds": busy, "capacity_seconds": capacity,
                     "utilization": busy / capacity if capacity else float("nan")})
    return pd.DataFrame(rows, columns=["robot_id", "busy_seconds", "capacity_seconds", "utilization"])


def _expected_hour_of_week(jobs, robots, start, end, tz, ids=None, env=None) -> pd.DataFrame:
    from zoneinfo import ZoneInfo

    now = utcnow()
    w1 = min(end, now)
    chosen = _window_robots(jobs, robots, start, w1, ids, env)
    ivs = _robot_intervals(jobs, now)
    zone = ZoneInfo(tz)
    cells: dict[tuple[int, int], list[float]] = {}
    h = _floor_hour(start) - timedelta(hours=1)
    while h < w1:
        local = h.astimezone(zone)
        if local.minute == 0 and h + timedelta(hours=1) > start:
            a, b = max(h, start), min(h + timedelta(hours=1), w1)
            cell = cells.setdefault((local.isoweekday(), local.hour), [0, 0.0, 0.0])
            for r, cap in chosen.items():
                cell[0] += 1
                cell[1] += _sweep(ivs.get(r, []), cap, a, b)
                cell[2] += cap * (b - a).total_seconds()
        h += timedelta(minutes=15)
    rows = [{"weekday": w, "hour_of_day": hd, "hours": n, "busy_seconds": busy, "capacity_seconds": cap,
             "utilization": busy / cap if cap else float("nan")}
            for (w, hd), (n, busy, cap) in sorted(cells.items()) if n]
    return pd.DataFrame(rows, columns=["weekday", "hour_of_day", "hours", "busy_seconds", "capacity_seconds",
                                       "utilization"])


def _same(got: pd.DataFrame, want: pd.DataFrame, keys: list[str], what: str, moving: bool = False) -> None:
    got = got.sort_values(keys).reset_index(drop=True)
    want = want.sort_values(keys).reset_index(drop=True)
    assert len(got) == len(want), (what, got, want)
    for col in want.columns:
        if col in keys or col == "hours":
            assert got[col].tolist() == want[col].tolist(), (what, col)
        else:
            # A running job ends at now(), which moves a little between two calls (`moving`).
            tol = (1e-5 if col == "utilization" else 1.0) if moving else 1e-6
            assert got[col].astype(float).tolist() == pytest.approx(
                want[col].astype(float).tolist(), rel=1e-9, abs=tol, nan_ok=True), (what, col)


def _check_window(engine, hist, start, end, *, ids=None, env=None, tzs=("UTC",), rollup=True) -> None:
    """utilization and utilization_by_hour_of_week equal the test's arithmetic and the raw path,
    and (when `rollup`) the rollup answered them."""
    jobs, robots = hist["jobs"], hist["robots"]
    moving = end > utcnow()
    if rollup:
        assert rr.utilization_from_rollup(engine, ids, env, start, end) is not None
    got = rd.utilization(engine, ids, start, end, environment=env)
    raw = rd.utilization(engine, ids, start, end, environment=env, use_rollup=False)
    want = _expected_per_robot(jobs, robots, start, end, ids, env)
    _same(got, want, ["robot_id"], "per robot vs arithmetic", moving)
    _same(got, raw, ["robot_id"], "per robot vs raw path", moving)
    for tz in tzs:
        if rollup and tz != "Asia/Kolkata":
            assert rr.utilization_from_rollup(engine, ids, env, start, end, tz) is not None
        got = rd.utilization_by_hour_of_week(engine, ids, start, end, tz, environment=env)
        raw = rd.utilization_by_hour_of_week(engine, ids, start, end, tz, environment=env, use_rollup=False)
        want = _expected_hour_of_week(jobs, robots, start, end, tz, ids, env)
        _same(got, want, ["weekday", "hour_of_day"], f"hour of week {tz} vs arithmetic", moving)
        _same(got, raw, ["weekday", "hour_of_day"], f"hour of week {tz} vs raw path", moving)


@pytest.fixture
def history(engine):
    """Forty days of jobs on four robots (capacities 1 and 2, two environments) and a robot id
    without a robots row: jobs across UTC midnights and hours, overlapping jobs above capacity,
    a job of 30 hours, one still running, one never started."""
    now = utcnow()
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    robots = {"a": (1, "prod"), "b": (2, "prod"), "c": (1, "staging"), "d": (3, "staging")}
    jobs: list[dict] = []
    with engine.begin() as conn:
        for robot, (cap, env) in robots.items():
            insert_robot(conn, robot, max_concurrent_jobs=cap, environment=env, last_heartbeat=now)
        for k in range(2, 38, 3):          # every third day, back to 37 days ago
            m = day - timedelta(days=k)    # a UTC midnight
            # a: across midnight, and two overlapping jobs (busy once at capacity 1).
            _job(conn, jobs, robot_id="a", status="completed", started_at=m - timedelta(minutes=25),
                 completed_at=m + timedelta(minutes=35))
            _job(conn, jobs, robot_id="a", status="failed", started_at=m + timedelta(hours=5, minutes=10),
                 completed_at=m + timedelta(hours=7, minutes=2), error_message="TimeoutError: x")
            _job(conn, jobs, robot_id="a", status="completed", started_at=m + timedelta(hours=6),
                 completed_at=m + timedelta(hours=6, minutes=45))
            # b (capacity 2): three overlapping jobs, a cancelled one that ran.
            for s, e in ((9 * 60 + 5, 12 * 60), (9 * 60 + 40, 11 * 60 + 20), (10 * 60 + 10, 10 * 60 + 50)):
                _job(conn, jobs, robot_id="b", status="completed", started_at=m + timedelta(minutes=s),
                     completed_at=m + timedelta(minutes=e))
            _job(conn, jobs, robot_id="b", status="cancelled", started_at=m + timedelta(hours=20),
                 completed_at=m + timedelta(hours=20, minutes=30))
            # d (capacity 3): four at once for twenty minutes.
            for i in range(4):
                _job(conn, jobs, robot_id="d", status="completed", started_at=m + timedelta(hours=14, minutes=i),
                     completed_at=m + timedelta(hours=14, minutes=20 + i))
            # A robot id without a robots row.
            _job(conn, jobs, robot_id="ghost", status="completed", started_at=m + timedelta(hours=3),
                 completed_at=m + timedelta(hours=3, minutes=50))
        # c: a 30-hour job across two midnights, and one running now for 3 hours.
        _job(conn, jobs, robot_id="c", status="completed", started_at=day - timedelta(days=20, hours=3),
             completed_at=day - timedelta(days=19, hours=-3))
        _job(conn, jobs, robot_id="c", status="running", started_at=now - timedelta(hours=3, minutes=7))
        _job(conn, jobs, robot_id="a", status="completed", started_at=now - timedelta(minutes=50),
             completed_at=now - timedelta(minutes=10))
        _job(conn, jobs, robot_id=None, status="cancelled", completed_at=now - timedelta(hours=2))
    return {"robots": robots, "jobs": jobs, "day": day}


def test_long_windows_from_the_rollup_equal_arithmetic_and_raw(engine, history):
    out = rr.refresh(engine)
    assert not out["behind"] and out["backfilled"] >= 24 * 35   # 35 days back to the oldest job
    now, day = utcnow(), history["day"]
    # 40 days to now, starting inside an hour; DST (New York) and whole-hour zones from the
    # rollup, half-hour zones from the raw rows.
    _check_window(engine, history, now - timedelta(days=40, minutes=-17), now + timedelta(days=1),
                  tzs=("UTC", "America/New_York", "Asia/Tokyo", "Asia/Kolkata"))
    # A window that ends in the past inside an hour, and one on exact UTC day edges.
    _check_window(engine, history, day - timedelta(days=30, minutes=41), day - timedelta(days=4, minutes=-23),
                  tzs=("UTC", "Europe/Berlin"))
    _check_window(engine, history, day - timedelta(days=20), day - timedelta(days=19))
    _check_window(engine, history, day - timedelta(days=26), day - timedelta(days=5))
    # Robot and environment filters (an environment leaves out robot ids without a row).
    start, end = now - timedelta(days=39, minutes=3), now
    _check_window(engine, history, start, end, ids=["b", "ghost"], tzs=("UTC", "Asia/Tokyo"))
    _check_window(engine, history, start, end, env="staging", tzs=("UTC", "America/New_York"))
    _check_window(engine, history, start, end, env="prod", ids=["a", "c", "ghost"])
    _check_window(engine, history, start, end, env="nowhere")
    # Half-hour zones and short windows are the raw path's.
    assert rr.utilization_from_rollup(engine, None, None, start, end, "Asia/Kolkata") is None
    assert rr.utilization_from_rollup(engine, None, None, now - timedelta(hours=3), now) is None


def test_rollup_day_and_fleet_rows_add_up_the_hours(engine, history):
    rr.refresh(engine)
    with engine.connect() as conn:
        hourly = pd.DataFrame(conn.execute(sa.text(
            f"SELECT robot_id, hour, busy FROM {rr.HOURLY} WHERE busy IS NOT NULL")).mappings().all())
        daily = pd.DataFrame(conn.execute(sa.text(f"SELECT robot_id, day, busy FROM {rr.DAILY}")).mappings().all())
        weekly = pd.DataFrame(conn.execute(sa.text(f"SELECT robot_id, week, busy FROM {rr.WEEKLY}")).mappings().all())
        fleet = pd.DataFrame(conn.execute(sa.text(
            f"SELECT hour, environment, capacity, busy FROM {rr.FLEET}")).mappings().all())
        cov = rr.coverage(conn)
    # b's day 9 days back: three overlapping jobs (levels 1..3) and the cancelled one.
    m = history["day"] - timedelta(days=8)
    b = daily[(daily.robot_id == "b") & (pd.to_datetime(daily.day, utc=True) == pd.Timestamp(m))].busy.iloc[0]
    levels = [175 * 60 + 30 * 60, 100 * 60, 40 * 60]
    assert b == pytest.approx([levels[0], levels[0] + levels[1], sum(levels)])  # accumulated
    # Every day row is the accumulated level sum of its hours; only whole days below the
    # watermark have one.
    hourly["day"] = pd.to_datetime(hourly.hour, utc=True).dt.floor("D")
    for row in daily.itertuples():
        hours = hourly[(hourly.robot_id == row.robot_id) & (hourly.day == pd.Timestamp(row.day))].busy
        width = max((len(x) for x in hours), default=0)
        sums = [sum(x[k] for x in hours if len(x) > k) for k in range(width)]
        assert list(row.busy) == pytest.approx([sum(sums[:k + 1]) for k in range(width)])
        assert pd.Timestamp(row.day) + pd.Timedelta(days=1) <= pd.Timestamp(cov.watermark)
    # Every week row (Monday to Monday) is the same over its hours; the history spans 5 whole weeks.
    hourly["week"] = hourly.day - pd.to_timedelta(hourly.day.dt.dayofweek, unit="D")
    assert len({w for w in weekly.week if pd.Timestamp(w) >= pd.Timestamp(cov.lo)}) >= 4
    for row in weekly.itertuples():
        assert pd.Timestamp(row.week).dayofweek == 0
        if pd.Timestamp(row.week) < pd.Timestamp(cov.lo):
            continue   # partial below the rollup's start, never read
        hours = hourly[(hourly.robot_id == row.robot_id) & (hourly.week == pd.Timestamp(row.week))].busy
        width = max((len(x) for x in hours), default=0)
        sums = [sum(x[k] for x in hours if len(x) > k) for k in range(width)]
        assert list(row.busy) == pytest.approx([sum(sums[:k + 1]) for k in range(width)])
        assert pd.Timestamp(row.week) + pd.Timedelta(days=7) <= pd.Timestamp(cov.watermark)
    # Fleet rows: capped by each robot's capacity, grouped by environment.
    caps = {r: c for r, (c, _) in history["robots"].items()}
    hourly["capped"] = [sum(x[:caps.get(r, 1)]) for r, x in zip(hourly.robot_id, hourly.busy)]
    assert fleet.busy.sum() == pytest.approx(hourly.capped.sum())
    staging = hourly[hourly.robot_id.isin(["c", "d"])].capped.sum()
    assert fleet[fleet.environment == "staging"].busy.sum() == pytest.approx(staging)


def test_backfill_goes_back_in_bounded_steps(engine, history):
    out = rr.refresh(engine, budget_s=0)
    assert out["behind"] and out["lo"] == out["watermark"] and out["steps"] == []
    with engine.connect() as conn:
        assert rr.coverage(conn) is None  # nothing covered yet: the raw path answers
    now = utcnow()
    start, end = now - timedelta(days=40, minutes=-17), now + timedelta(days=1)
    _check_window(engine, history, start, end, rollup=False)
    # Two steps: the last two days in the rollup, the rest from the raw rows.
    for _ in range(2):
        step = rr._backfill_step(engine, None)
        assert step["hours"] <= 24 and step["behind"]
    _check_window(engine, history, start, end, tzs=("UTC", "Asia/Tokyo"))
    # The rest, one day per transaction.
    out = rr.refresh(engine)
    assert not out["behind"] and len(out["steps"]) >= 33
    with engine.connect() as conn:
        lo = rr.coverage(conn).lo
    oldest = min(j["completed_at"] for j in history["jobs"] if j.get("completed_at"))
    assert lo == _floor_hour(oldest)
    _check_window(engine, history, start, end, env="prod", tzs=("UTC", "America/New_York"))


def test_late_changes_in_long_windows(engine, history):
    rr.refresh(engine)
    jobs, robots = history["jobs"], history["robots"]
    now = utcnow()
    start, end = now - timedelta(days=39), now
    with engine.begin() as conn:
        # b's capacity goes from 2 to 1, d moves from staging to prod: read at once (before a
        # refresh moves them in the fleet rows), then after it.
        conn.execute(sa.text("UPDATE robots SET max_concurrent_jobs = 1 WHERE robot_id = 'b'"))
        conn.execute(sa.text("UPDATE robots SET environment = 'prod' WHERE robot_id = 'd'"))
        robots.update(b=(1, "prod"), d=(3, "prod"))
        # The robot id without a row is registered, in staging with capacity 2.
        insert_robot(conn, "ghost", max_concurrent_jobs=2, environment="staging", last_heartbeat=now)
        robots["ghost"] = (2, "staging")
    for env in (None, "prod", "staging"):
        _check_window(engine, history, start, end, env=env, tzs=("UTC", "Asia/Tokyo"))
    out = rr.refresh(engine)
    assert out["rebased"] == 3
    for env in (None, "prod", "staging"):
        _check_window(engine, history, start, end, env=env)
    with engine.begin() as conn:
        # a's job of 29 days ago is re-run in place on c, 20 minutes ago (found by its id keys).
        old = next(j for j in jobs if j["robot_id"] == "a" and j["started_at"] < now - timedelta(days=28))
        new = {"robot_id": "c", "status": "completed", "started_at": now - timedelta(minutes=30),
               "completed_at": now - timedelta(minutes=20)}
        conn.execute(sa.text("UPDATE job_queue SET robot_id = :robot_id, status = :status, started_at = :started_at, "
                             "completed_at = :completed_at WHERE id = :id"), {**new, "id": old["id"]})
        old.update(new)
        # A job finished 90 minutes ago written only now, and a dead-letter move of a job of 11 days ago.
        _job(conn, jobs, robot_id="b", status="completed", started_at=now - timedelta(hours=4),
             completed_at=now - timedelta(minutes=90))
        dead = next(j for j in jobs if j["robot_id"] == "d" and j["started_at"] < now - timedelta(days=10))
        conn.execute(sa.text("INSERT INTO job_queue_dlq (original_job_id, workflow_id, workflow_name, error_message) "
                             "VALUES (:id, 'wf-a', 'wf-a', 'x')"), {"id": dead["id"]})
        conn.execute(sa.text("DELETE FROM job_queue WHERE id = :id"), {"id": dead["id"]})
    jobs[:] = [j for j in jobs if j["id"] != dead["id"]]
    out = rr.refresh(engine)
    assert out["dirty"] > 0
    for env in (None, "staging"):
        _check_window(engine, history, start, end, env=env, tzs=("UTC", "America/New_York"))
    _check_window(engine, history, start, end, ids=["a", "c"])



def _kpi_expected(jobs: list[dict], tz: str) -> dict:
    """The KPI tiles' finished figures by the test's own arithmetic."""
    now = utcnow()
    midnight = now.astimezone(ZoneInfo(tz)).replace(hour=0, minute=0, second=0, microsecond=0)
    done = [j for j in jobs if j["status"] in ("completed", "failed") and j.get("completed_at")]
    today = [j for j in done if j["completed_at"] >= midnight]
    last = [j for j in done if j["completed_at"] >= now - timedelta(hours=24)]
    runs = [(j["completed_at"] - j["started_at"]).total_seconds() for j in last if j.get("started_at")]
    return {"completed_jobs_today": sum(j["status"] == "completed" for j in today),
            "failed_jobs_today": sum(j["status"] == "failed" for j in today),
            "finished_jobs_24h": len(last),
            "success_rate_24h": sum(j["status"] == "completed" for j in last) / len(last),
            "average_job_duration_seconds": sum(runs) / len(runs)}


def test_kpi_tiles_finished_jobs_from_the_rollup_and_the_raw_rows(engine, fleet):
    """Jobs without a robot, jobs after the watermark and today's edge in a half-hour zone are
    read raw, the rest from the rollup's hours; the figures are the same either way."""
    from data import fleet as fleet_data

    jobs = list(fleet["jobs"])
    with engine.begin() as conn:
        _job(conn, jobs, robot_id=None, status="completed", started_at=ago(hours=5, minutes=3), completed_at=ago(hours=5))
        _job(conn, jobs, robot_id=None, status="failed", completed_at=ago(hours=2))   # never started
        _job(conn, jobs, robot_id="r2", status="completed", started_at=ago(minutes=9), completed_at=ago(minutes=4))
    zones = (fleet["tz"], "Asia/Kolkata", "America/St_Johns")
    keys = list(_kpi_expected(jobs, "UTC"))
    raw = {tz: fleet_data.fleet_kpis.uncached(engine, tz, 60) for tz in zones}   # no rollup yet
    rr.refresh(engine)
    for tz in zones:
        assert rr.finished_totals(engine, tz) is not None
        rolled = fleet_data.fleet_kpis.uncached(engine, tz, 60)
        want = _kpi_expected(jobs, tz)
        for got in (raw[tz], rolled):
            assert {k: got[k] for k in keys} == pytest.approx(want), tz


def test_tables_of_an_older_version_gain_the_new_columns_and_start_over(engine, fleet):
    rr.refresh(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {rr.HOURLY} DROP COLUMN dur_sum, DROP COLUMN timed"))
        conn.execute(sa.text(f"ALTER TABLE {rr.FLEET} DROP COLUMN completed, DROP COLUMN failed, "
                             "DROP COLUMN dur_sum, DROP COLUMN timed"))
        conn.execute(sa.text(f"UPDATE {rr.STATE} SET version = version - 1"))
    out = rr.refresh(engine)
    assert out.get("reset") and not out["behind"]
    with engine.connect() as conn:
        timed = conn.execute(sa.text(f"SELECT sum(timed) FROM {rr.HOURLY}")).scalar()
        sums = conn.execute(sa.text(f"SELECT (SELECT row(sum(completed), sum(failed), sum(timed))::text FROM {rr.HOURLY}) "
                                    f"= (SELECT row(sum(completed), sum(failed), sum(timed))::text FROM {rr.FLEET})")).scalar()
    assert sums   # the fleet rows add up the robots' hours
    assert timed == sum(1 for j in fleet["jobs"] if j["status"] in ("completed", "failed") and j.get("started_at")
                        and j.get("completed_at") and j["completed_at"] < out["watermark"])
