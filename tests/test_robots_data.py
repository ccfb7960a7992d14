"""Robots data: live status, the fleet list, utilization, status timeline, metrics and jobs.

Every expected value is computed here from the rows the test inserts (hand arithmetic, a
brute-force Python integration, numpy percentiles), never copied from the code's output.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from data import robots as rd
from data.errors import classify_error
from data.schema import ensure_schema
from tests.helpers import ago, insert_heartbeat, insert_job, insert_robot, utcnow

THRESHOLD = 90
H = 3600.0


def floor_hour(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def by_id(frame: pd.DataFrame) -> dict:
    return {r["robot_id"]: r for r in frame.to_dict("records")}


# --------------------------------------------------------------------------------------------
# Live status
# --------------------------------------------------------------------------------------------

def test_live_status_from_stored_status_and_heartbeat_age(engine):
    with engine.begin() as c:
        insert_robot(c, "fresh-online", status="online", last_heartbeat=ago(seconds=5))
        insert_robot(c, "stale-online", status="online", last_heartbeat=ago(seconds=THRESHOLD + 30))
        insert_robot(c, "stale-busy", status="busy", last_heartbeat=ago(minutes=30))
        insert_robot(c, "never", status="online", last_heartbeat=None)
        insert_robot(c, "fresh-busy", status="busy", last_heartbeat=ago(seconds=5))
        insert_robot(c, "online-with-job", status="online", last_heartbeat=ago(seconds=5))
        insert_robot(c, "fresh-error", status="error", last_heartbeat=ago(seconds=5))
        insert_robot(c, "stale-maintenance", status="maintenance", last_heartbeat=ago(days=2))
        insert_robot(c, "stored-offline-fresh", status="offline", last_heartbeat=ago(seconds=5))
        job = insert_job(c, status="running", robot_id="online-with-job", workflow_name="Payroll",
                         created_at=ago(minutes=3), started_at=ago(minutes=2))

    rows = by_id(rd.robot_list(engine, "UTC", THRESHOLD))
    expected = {
        "fresh-online": "idle", "stale-online": "offline", "stale-busy": "offline", "never": "offline",
        "fresh-busy": "busy", "online-with-job": "busy", "fresh-error": "error",
        "stale-maintenance": "maintenance", "stored-offline-fresh": "offline",
    }
    assert {k: r["status"] for k, r in rows.items()} == expected
    silent = {k for k, r in rows.items() if r["silent"]}
    assert silent == {"stale-online", "stale-busy", "never"}  # maintenance is expected to be silent
    assert rows["stale-online"]["heartbeat_age_s"] == pytest.approx(THRESHOLD + 30, abs=5)
    assert rows["stale-busy"]["heartbeat_age_s"] == pytest.approx(1800, abs=5)
    assert pd.isna(rows["never"]["heartbeat_age_s"])
    assert rows["online-with-job"]["current_job_id"] == job
    assert rows["online-with-job"]["current_workflow"] == "Payroll"
    assert rows["online-with-job"]["running_jobs"] == 1

    # The same rule in one robot's header.
    for robot_id, status in expected.items():
        assert rd.robot_detail(engine, robot_id, THRESHOLD)["status"] == status
    # A longer threshold makes the 2-minute-old robot responsive again.
    assert rd.robot_detail(engine, "stale-online", 600)["status"] == "idle"


OLD_ROBOTS = """
CREATE TABLE robots (
    robot_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name varchar(255) NOT NULL, hostname varchar(255) UNIQUE,
    status varchar(50) NOT NULL DEFAULT 'offline', environment varchar(100) DEFAULT 'default',
    capabilities jsonb DEFAULT '[]', tags jsonb DEFAULT '[]', metrics jsonb DEFAULT '{}',
    max_concurrent_jobs integer DEFAULT 1, current_job_ids jsonb DEFAULT '[]',
    registered_at timestamptz, last_heartbeat timestamptz, last_seen timestamptz,
    created_at timestamptz, updated_at timestamptz
)"""
OLD_HEARTBEATS = """
CREATE TABLE robot_heartbeats (
    heartbeat_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    robot_id uuid NOT NULL REFERENCES robots(robot_id),
    "timestamp" timestamptz DEFAULT now(), status varchar(50) NOT NULL,
    current_jobs integer DEFAULT 0, metrics jsonb DEFAULT '{}', ip_address inet, latency_ms integer
)"""


def test_uuid_robot_ids_compare_as_text(raw_engine):
    engine = raw_engine
    with engine.begin() as c:
        c.execute(sa.text(OLD_ROBOTS))
        c.execute(sa.text(OLD_HEARTBEATS))
    ensure_schema(engine)  # leaves the existing uuid tables alone
    stale = "6f1c1f9e-8a43-4d0a-9d55-2f1b7c3f0a11"
    maint = "0b7e0f5a-1111-4c3b-8d2e-000000000002"
    busy = "0b7e0f5a-1111-4c3b-8d2e-000000000003"
    with engine.begin() as c:
        for rid, status, hb in ((stale, "online", ago(minutes=5)), (maint, "maintenance", ago(hours=3)),
                                (busy, "online", ago(seconds=3))):
            c.execute(sa.text("INSERT INTO robots (robot_id, name, status, last_heartbeat, max_concurrent_jobs) "
                              "VALUES (:id, :name, :status, :hb, 2)"),
                      {"id": rid, "name": f"bot {rid[:4]}-{status}", "status": status, "hb": hb})
        job = insert_job(c, status="running", robot_id=busy, created_at=ago(minutes=40), started_at=ago(minutes=30))
        insert_job(c, status="completed", robot_id=busy, created_at=ago(minutes=50), started_at=ago(minutes=50),
                   completed_at=ago(minutes=45))
        base = floor_hour(utcnow()) - timedelta(hours=3)
        for i in range(6):
            insert_heartbeat(c, busy, base + timedelta(seconds=10 * i), status="online",
                             metrics={"cpu_percent": 10.0 * i})

    rows = by_id(rd.robot_list(engine, "UTC", THRESHOLD))
    assert rows[stale]["status"] == "offline" and rows[stale]["silent"]
    assert rows[maint]["status"] == "maintenance" and not rows[maint]["silent"]
    assert rows[busy]["status"] == "busy" and rows[busy]["current_job_id"] == job
    # 24-h utilization of the busy robot (capacity 2): 5 min done + 30 min running, over 2 × 24 h.
    assert rows[busy]["utilization_24h"] == pytest.approx((300 + 1800) / (2 * 86400), abs=2 / 86400)

    detail = rd.robot_detail(engine, busy, THRESHOLD)
    assert detail["robot_id"] == busy and detail["status"] == "busy" and detail["has_heartbeat_history"]
    assert rd.robot_detail(engine, stale, THRESHOLD)["has_heartbeat_history"] is False
    # Heartbeats are found through the uuid column.
    bands = rd.status_timeline(engine, busy, base - timedelta(minutes=1), base + timedelta(minutes=5), THRESHOLD)
    assert bands["status"].tolist() == ["idle", "offline"]
    series = rd.metric_series(engine, busy, base, base + timedelta(minutes=1), max_points=6)
    assert series["cpu_percent"].tolist() == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    hourly = rd.hourly_utilization(engine, [busy], base, base + timedelta(hours=3), "UTC")
    assert len(hourly) == 3 and hourly["robot_id"].unique().tolist() == [busy]
    # Ids that cannot be uuids are simply unknown: no error.
    for odd in ("robot-01", "%27;drop", "'; DROP TABLE robots; --", stale.upper() + "x"):
        assert rd.robot_detail(engine, odd, THRESHOLD) is None
        assert rd.status_timeline(engine, odd, base, base + timedelta(hours=1), THRESHOLD).empty
        assert rd.metric_series(engine, odd, base, base + timedelta(hours=1)).empty
        assert rd.robot_job_counts(engine, odd, base, utcnow())["total_jobs"] == 0


def test_unknown_and_odd_robot_ids(engine):
    with engine.begin() as c:
        insert_robot(c, "robot-01", last_heartbeat=ago(seconds=1))
        insert_robot(c, "we/ird %27 id", last_heartbeat=ago(seconds=1))
    for odd in ("nope", "%27;drop", "' OR '1'='1", "robot-01;", "x" * 300, ""):
        assert rd.robot_detail(engine, odd, THRESHOLD) is None
    assert rd.robot_detail(engine, "we/ird %27 id", THRESHOLD)["name"] == "we/ird %27 id"
    assert rd.robot_latest_jobs(engine, "%27;drop").empty


# --------------------------------------------------------------------------------------------
# The fleet list: filters, sorting, metrics, counts
# --------------------------------------------------------------------------------------------

def test_list_filters_sorting_metrics_and_counts(engine):
    now = utcnow()
    with engine.begin() as c:
        insert_robot(c, "a", name="Alpha", environment="production", last_heartbeat=ago(seconds=2),
                     capabilities=["browser", "desktop"], tags=["eu", "invoices"],
                     metrics={"cpu_percent": 42.5, "memory_percent": 61, "memory_mb": 2048, "disk_percent": 70})
        insert_robot(c, "b", name="Bravo", environment="finance", last_heartbeat=ago(seconds=5),
                     capabilities=["desktop"], tags=["us"], metrics={"cpu_percent": "12.5"})
        insert_robot(c, "c", name="Charlie", environment="production", status="busy",
                     last_heartbeat=ago(minutes=20), capabilities=["browser"], tags=["eu"],
                     metrics={"cpu_percent": "n/a", "memory_percent": None})
        c.execute(sa.text("UPDATE robots SET metrics = NULL, capabilities = NULL WHERE robot_id = 'c'"))
        # Jobs of robot a: 3 completed + 1 failed in the last 7 days, of which today (UTC) some.
        finished = [("completed", ago(days=3)), ("completed", ago(days=6)), ("failed", ago(days=2)),
                    ("completed", ago(days=8))]  # the last one is older than 7 days
        for status, at in finished:
            insert_job(c, status=status, robot_id="a", created_at=at - timedelta(minutes=5),
                       started_at=at - timedelta(minutes=1), completed_at=at, error_message="boom" if status == "failed" else None)
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        today_done = [midnight + (now - midnight) * f for f in (0.2, 0.5)]
        for at in today_done:
            insert_job(c, status="completed", robot_id="a", created_at=at, started_at=at, completed_at=at)
        insert_job(c, status="failed", robot_id="a", created_at=now - timedelta(seconds=1),
                   started_at=now - timedelta(seconds=1), completed_at=now - timedelta(milliseconds=500))
        if midnight > now - timedelta(days=1):
            insert_job(c, status="failed", robot_id="b", created_at=midnight - timedelta(minutes=2),
                       started_at=midnight - timedelta(minutes=2), completed_at=midnight - timedelta(minutes=1))

    full = rd.robot_list(engine, "UTC", THRESHOLD)
    rows = by_id(full)
    a, b, c_ = rows["a"], rows["b"], rows["c"]
    assert (a["cpu_percent"], a["memory_percent"], a["memory_mb"], a["disk_percent"]) == (42.5, 61.0, 2048.0, 70.0)
    assert b["cpu_percent"] == 12.5 and pd.isna(b["memory_percent"])  # missing key
    assert pd.isna(c_["cpu_percent"]) and pd.isna(c_["memory_percent"])  # NULL metrics, garbage value
    assert c_["capabilities"] == [] and a["capabilities"] == ["browser", "desktop"]
    assert a["completed_today"] == 2 and a["failed_today"] == 1
    assert b["completed_today"] == 0 and b["failed_today"] == 0  # b's failure was before midnight
    # 7 days: completed 3 days, 6 days ago and twice today; failed 2 days ago and just now.
    assert a["completed_7d"] == 4 and a["finished_7d"] == 6
    assert a["success_rate_7d"] == pytest.approx(4 / 6)
    assert pd.isna(c_["success_rate_7d"])

    def ids(**filters):
        return rd.robot_list(engine, "UTC", THRESHOLD, **filters)["robot_id"].tolist()

    assert ids(environment="production") == ["a", "c"]
    assert ids(environment="finance,production") == ["b", "a", "c"]  # default order: environment, name
    assert ids(capability="browser") == ["a"]  # c's capabilities are NULL
    assert ids(capability=["browser", "desktop"]) == ["a"]
    assert ids(capability="desktop") == ["b", "a"]
    assert ids(tag="eu") == ["a", "c"]
    assert ids(tag="eu", environment="finance") == []
    assert ids(status="offline") == ["c"]
    assert ids(status="idle,offline", tag="eu") == ["a", "c"]
    assert ids(status="bogus") == ["b", "a", "c"]  # unknown values are ignored
    assert ids(capability="'); DROP TABLE robots; --") == []
    assert ids(sort="-cpu_percent") == ["a", "b", "c"]  # NULLs last
    assert ids(sort="name") == ["a", "b", "c"]
    assert ids(sort="-name") == ["c", "b", "a"]
    assert ids(sort="heartbeat_age_s") == ["a", "b", "c"]
    assert ids(sort="-heartbeat_age_s") == ["c", "b", "a"]
    assert ids(sort="nonsense; drop") == ["b", "a", "c"]
    # Sorting on the work numbers (merged from robot_work_stats): missing values last.
    assert ids(sort="-success_rate_7d") == ["a", "b", "c"]  # 4/6, 0/1, none
    assert ids(sort="success_rate_7d") == ["b", "a", "c"]
    assert ids(sort="-completed_today") == ["a", "b", "c"]  # ties keep environment, name
    # The list can reuse a stats frame computed earlier (the page keeps one for a minute).
    stats = rd.cached_robot_work_stats(engine, "UTC")  # no app running: computed afresh
    reused = rd.robot_list(engine, "UTC", THRESHOLD, stats=stats)
    pd.testing.assert_frame_equal(reused.drop(columns=["heartbeat_age_s"]),
                                  full.drop(columns=["heartbeat_age_s"]))

    options = rd.robot_filter_options(engine)
    assert options == {"environments": ["finance", "production"], "capabilities": ["browser", "desktop"],
                       "tags": ["eu", "invoices", "us"]}


def test_completed_today_follows_the_viewers_zone(engine):
    tz = "Pacific/Kiritimati"  # UTC+14: its midnight is far from UTC's
    local_midnight = datetime.now(ZoneInfo(tz)).replace(hour=0, minute=0, second=0, microsecond=0)
    with engine.begin() as c:
        insert_robot(c, "r", last_heartbeat=ago(seconds=1))
        for at in (local_midnight + timedelta(seconds=30), local_midnight - timedelta(seconds=30)):
            if at < utcnow():
                insert_job(c, status="completed", robot_id="r", created_at=at, started_at=at, completed_at=at)
    row = by_id(rd.robot_list(engine, tz, THRESHOLD))["r"]
    expected_today = int(local_midnight + timedelta(seconds=30) < utcnow())
    assert row["completed_today"] == expected_today
    assert row["completed_7d"] == 1 + expected_today


# --------------------------------------------------------------------------------------------
# Utilization
# --------------------------------------------------------------------------------------------

def reference_hourly(intervals, capacity, hours, window_end):
    """Brute force: for each hour, integrate min(concurrency, capacity) piecewise."""
    out = {}
    for h in hours:
        h_end = min(h + timedelta(hours=1), window_end)
        cuts = sorted({h, h_end, *[t for s, e in intervals for t in (s, e) if h < t < h_end]})
        busy = 0.0
        for lo, hi in zip(cuts, cuts[1:]):
            mid = lo + (hi - lo) / 2
            n = sum(1 for s, e in intervals if s <= mid < e)
            busy += min(n, capacity) * (hi - lo).total_seconds()
        out[h] = busy
    return out


def hourly_dict(frame, robot_id):
    part = frame[frame["robot_id"] == robot_id]
    return {pd.Timestamp(h).to_pydatetime(): (b, cap, u)
            for h, b, cap, u in zip(part["hour"], part["busy_seconds"], part["capacity_seconds"], part["utilization"])}


def test_utilization_hand_built_intervals(engine):
    b = floor_hour(utcnow()) - timedelta(hours=30)  # a past hour: every value is exact
    hh = lambda hours, minutes=0: b + timedelta(hours=hours, minutes=minutes)  # noqa: E731
    jobs = [  # (start, end) for robots one (capacity 1) and two (capacity 2): same intervals
        (hh(0, 30), hh(2, 15)),   # spans three hours
        (hh(1, 0), hh(1, 30)),    # overlaps the first one
        (hh(1, 15), hh(1, 45)),   # a third at once during 1:15-1:30
        (hh(4, 50), hh(5, 10)),   # across an hour boundary
    ]
    with engine.begin() as c:
        insert_robot(c, "one", max_concurrent_jobs=1, last_heartbeat=ago(seconds=1))
        insert_robot(c, "two", max_concurrent_jobs=2, last_heartbeat=ago(seconds=1))
        insert_robot(c, "idle", max_concurrent_jobs=1, last_heartbeat=ago(seconds=1))
        for robot in ("one", "two"):
            for s, e in jobs:
                insert_job(c, status="completed", robot_id=robot, created_at=s, started_at=s, completed_at=e)
        # Ignored: never started; re-queued (started, no end, not running); ends before it starts.
        insert_job(c, status="pending", robot_id="one", created_at=hh(3))
        insert_job(c, status="pending", robot_id="one", created_at=hh(3), started_at=hh(3))
        insert_job(c, status="completed", robot_id="one", created_at=hh(3), started_at=hh(3, 30), completed_at=hh(3, 10))
        # A cancelled job that ran counts; a robot id without a robots row has capacity 1.
        insert_job(c, status="cancelled", robot_id="one", created_at=hh(6), started_at=hh(6, 0), completed_at=hh(6, 6))
        # ... and one that starts the instant it ends.
        insert_job(c, status="completed", robot_id="one", created_at=hh(6), started_at=hh(6, 6), completed_at=hh(6, 30))
        insert_job(c, status="failed", robot_id="ghost", created_at=hh(0), started_at=hh(0, 0), completed_at=hh(0, 45))
        insert_job(c, status="failed", robot_id="ghost", created_at=hh(0), started_at=hh(0, 15), completed_at=hh(0, 30))

    frame = rd.hourly_utilization(engine, None, b, hh(8), "UTC")
    assert sorted(frame["robot_id"].unique()) == ["ghost", "idle", "one", "two"]
    one, two = hourly_dict(frame, "one"), hourly_dict(frame, "two")
    hours = [hh(i) for i in range(8)]
    assert sorted(one) == hours

    # Hand arithmetic, capacity 1: 0h 30 min; 1h whole hour (overlaps count once); 2h 15 min;
    # 4h 10 min; 5h 10 min; 6h the cancelled job's 6 min and the next one's 24 min.
    hand_one = {0: 1800, 1: 3600, 2: 900, 3: 0, 4: 600, 5: 600, 6: 1800, 7: 0}
    # Capacity 2: 1h is 60 min of job 1 + 30 min of job 2 + 30 min of job 3, but during 1:15-1:30
    # three run at once, capped at two: 60 + 30 + 30 - 15 = 105 min.
    hand_two = {0: 1800, 1: 105 * 60, 2: 900, 3: 0, 4: 600, 5: 600, 6: 0, 7: 0}
    for i in range(8):
        busy, cap, util = one[hh(i)]
        assert busy == pytest.approx(hand_one[i]) and cap == 3600 and util == pytest.approx(hand_one[i] / 3600)
        busy, cap, util = two[hh(i)]
        assert busy == pytest.approx(hand_two[i]) and cap == 7200 and util == pytest.approx(hand_two[i] / 7200)
    # The same numbers by brute force over the intervals.
    ref = reference_hourly(jobs, 2, hours, hh(8))
    assert {h: v[0] for h, v in two.items()} == pytest.approx(ref)
    ghost = hourly_dict(frame, "ghost")
    assert ghost[hh(0)][0] == pytest.approx(2700) and ghost[hh(0)][1] == 3600
    assert all(v[0] == 0 for v in hourly_dict(frame, "idle").values())

    # A window that starts and ends inside hours clips both the jobs and the capacity.
    part = hourly_dict(rd.hourly_utilization(engine, "two", hh(1, 20), hh(4, 55), "UTC"), "two")
    assert sorted(part) == [hh(1), hh(2), hh(3), hh(4)]
    # 1:20-2:00: job 1 whole 40 min, job 2 10 min, job 3 25 min; 1:20-1:30 three at once (cap 2).
    assert part[hh(1)][0] == pytest.approx((40 + 10 + 25 - 10) * 60) and part[hh(1)][1] == 2 * 40 * 60
    assert part[hh(4)][0] == pytest.approx(300) and part[hh(4)][1] == 2 * 55 * 60

    week = rd.utilization_by_hour_of_week(engine, None, b, hh(8), "UTC")
    pd.testing.assert_frame_equal(rd.hour_of_week_from_hourly(frame, "UTC"), week, check_dtype=False)
    assert week["busy_seconds"].sum() == pytest.approx(sum(hand_one.values()) + sum(hand_two.values()) + 2700)

    # The whole-window figure is the sum of the hours.
    whole = rd.utilization(engine, ["one", "two"], b, hh(8)).set_index("robot_id")
    assert whole.loc["one", "busy_seconds"] == pytest.approx(sum(hand_one.values()))
    assert whole.loc["two", "utilization"] == pytest.approx(sum(hand_two.values()) / (2 * 8 * 3600))


def test_utilization_across_midnight_in_a_half_hour_zone(engine):
    tz = ZoneInfo("Asia/Kolkata")  # UTC+05:30: local hours start at :30 UTC
    day = (utcnow().astimezone(tz) - timedelta(days=3)).replace(hour=23, minute=15, second=0, microsecond=0)
    start, end = day, day + timedelta(minutes=90)  # 23:15 -> 00:45 the next local day
    with engine.begin() as c:
        insert_robot(c, "r", last_heartbeat=ago(seconds=1))
        insert_job(c, status="completed", robot_id="r", created_at=start, started_at=start, completed_at=end)
    window_start = day.replace(hour=22, minute=0)
    frame = rd.hourly_utilization(engine, ["r"], window_start, window_start + timedelta(hours=4), "Asia/Kolkata")
    got = {pd.Timestamp(h).tz_convert(tz).strftime("%d %H:%M"): b for h, b in zip(frame["hour"], frame["busy_seconds"])}
    d0, d1 = day.strftime("%d"), (day + timedelta(days=1)).strftime("%d")
    assert got == {f"{d0} 22:00": 0, f"{d0} 23:00": 45 * 60, f"{d1} 00:00": 45 * 60, f"{d1} 01:00": 0}
    assert all(pd.Timestamp(h).minute == 30 for h in frame["hour"])  # in UTC

    week = rd.utilization_by_hour_of_week(engine, ["r"], window_start, window_start + timedelta(hours=4), "Asia/Kolkata")
    cells = {(w, h): u for w, h, u in zip(week["weekday"], week["hour_of_day"], week["utilization"])}
    assert cells[(day.isoweekday(), 23)] == pytest.approx(0.75)
    assert cells[((day + timedelta(days=1)).isoweekday(), 0)] == pytest.approx(0.75)
    assert cells[(day.isoweekday(), 22)] == 0
    # The page derives the same cells from the hourly frame it already has.
    derived = rd.hour_of_week_from_hourly(frame, "Asia/Kolkata")
    pd.testing.assert_frame_equal(derived.reset_index(drop=True), week.reset_index(drop=True), check_dtype=False)


def test_utilization_of_a_job_still_running(engine):
    now = utcnow()
    top = floor_hour(now)
    started = top - timedelta(hours=1, minutes=20)
    with engine.begin() as c:
        insert_robot(c, "r", max_concurrent_jobs=2, last_heartbeat=ago(seconds=1))
        insert_job(c, status="running", robot_id="r", created_at=started, started_at=started)
    # A window ending on the hour (in the past): exact.
    past = hourly_dict(rd.hourly_utilization(engine, "r", top - timedelta(hours=3), top, "UTC"), "r")
    assert {h: v[0] for h, v in past.items()} == pytest.approx(
        {top - timedelta(hours=3): 0, top - timedelta(hours=2): 20 * 60, top - timedelta(hours=1): 3600})
    assert all(v[1] == 7200 for v in past.values())
    # A window up to now: the current hour counts until now(), capacity too.
    before = utcnow()
    frame = rd.hourly_utilization(engine, "r", top - timedelta(hours=1), top + timedelta(hours=1), "UTC")
    after = utcnow()
    current = hourly_dict(frame, "r")[top]
    lo, hi = (before - top).total_seconds(), (after - top).total_seconds()
    assert lo - 0.5 <= current[0] <= hi + 0.5
    assert 2 * lo - 1 <= current[1] <= 2 * hi + 1
    assert current[2] == pytest.approx(0.5, abs=1e-3) or lo < 1  # one job on a 2-slot robot


# --------------------------------------------------------------------------------------------
# Status timeline and metrics from heartbeats
# --------------------------------------------------------------------------------------------

def test_heartbeat_gaps_become_offline_periods(engine):
    t0 = utcnow().replace(microsecond=0) - timedelta(hours=2)
    at = lambda s: t0 + timedelta(seconds=s)  # noqa: E731
    with engine.begin() as c:
        insert_robot(c, "r", last_heartbeat=at(1250))
        for s in (0, 10, 20, 30):
            insert_heartbeat(c, "r", at(s), status="online")
        for s in (330, 340):  # 300 s gap before them (> 90 s threshold)
            insert_heartbeat(c, "r", at(s), status="busy")
        insert_heartbeat(c, "r", at(350), status="online", current_jobs=1)  # busy by its job count
        insert_heartbeat(c, "r", at(400), status="online")  # 50 s gap: not offline
        for s in (500, 510):  # 100 s gap before them
            insert_heartbeat(c, "r", at(s), status="maintenance")
        insert_heartbeat(c, "r", at(1200), status="error")  # maintenance stays maintenance over a gap
        insert_heartbeat(c, "r", at(1250), status="online")  # then silent until now
        insert_heartbeat(c, "other", at(100), status="online")  # another robot's heartbeat

    window_end = utcnow() + timedelta(minutes=5)
    before = utcnow()
    bands = rd.status_timeline(engine, "r", at(-60), window_end, THRESHOLD)
    got = [(r.status, r.start.to_pydatetime(), r.end.to_pydatetime()) for r in bands.itertuples()]
    expected = [
        ("idle", at(0), at(30)),
        ("offline", at(30), at(330)),   # starts at the last heartbeat, ends at the next one
        ("busy", at(330), at(400)),
        ("offline", at(400), at(500)),  # 100 s without a heartbeat
        ("maintenance", at(500), at(1200)),  # a gap after `maintenance` stays maintenance
        ("error", at(1200), at(1250)),
        ("offline", at(1250), None),    # silent since its last heartbeat
    ]
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    assert [g[2] for g in got[:-1]] == [e[2] for e in expected[:-1]]
    assert before <= got[-1][2] <= utcnow() + timedelta(seconds=1)  # ends now
    assert bands["duration_s"].iloc[1] == 300
    assert bands["heartbeats"].tolist()[:3] == [3, 1, 3]

    # A window starting inside a band takes the status of the heartbeat before it.
    clipped = rd.status_timeline(engine, "r", at(100), at(345), THRESHOLD)
    assert [(r.status, r.start.to_pydatetime(), r.end.to_pydatetime()) for r in clipped.itertuples()] == [
        ("offline", at(100), at(330)), ("busy", at(330), at(345))]
    # A longer threshold: the 300 s gap is no longer an outage.
    relaxed = rd.status_timeline(engine, "r", at(0), at(400), 600)
    assert relaxed["status"].tolist() == ["idle", "busy"]
    assert relaxed["start"].iloc[1].to_pydatetime() == at(330)


def test_no_heartbeat_history(engine):
    with engine.begin() as c:
        insert_robot(c, "quiet", last_heartbeat=ago(seconds=3), metrics={"cpu_percent": 5})
    detail = rd.robot_detail(engine, "quiet", THRESHOLD)
    assert detail["has_heartbeat_history"] is False and detail["status"] == "idle" and detail["cpu_percent"] == 5
    assert rd.status_timeline(engine, "quiet", ago(days=7), utcnow(), THRESHOLD).empty
    assert rd.metric_series(engine, "quiet", ago(days=7), utcnow()).empty
    with engine.begin() as c:
        c.execute(sa.text("DROP TABLE robot_heartbeats"))  # an orchestrator that has no such table
    assert rd.robot_detail(engine, "quiet", THRESHOLD)["has_heartbeat_history"] is False
    assert rd.status_timeline(engine, "quiet", ago(days=7), utcnow(), THRESHOLD).empty


def test_metric_series_is_downsampled_in_sql(engine):
    start = floor_hour(utcnow()) - timedelta(hours=5)
    rng = np.random.default_rng(7)
    rows = []
    with engine.begin() as c:
        insert_robot(c, "r", last_heartbeat=ago(seconds=1))
        for i in range(720):  # every 10 s for 2 hours, with a silent stretch in the middle
            if 300 <= i < 420:
                continue
            ts = start + timedelta(seconds=10 * i)
            m = {"cpu_percent": float(rng.uniform(0, 100)), "disk_percent": 50.0}
            if i % 3:
                m["memory_percent"] = float(rng.uniform(20, 80))
            rows.append((ts, m))
            insert_heartbeat(c, "r", ts, metrics=m)
    end = start + timedelta(hours=2)
    series = rd.metric_series(engine, "r", start, end, max_points=48)
    step = 7200 / 48  # 150 s
    assert len(series) == 48 and (series["bucket_seconds"] == step).all()
    frame = pd.DataFrame({"ts": [t for t, _ in rows], "cpu": [m["cpu_percent"] for _, m in rows],
                          "mem": [m.get("memory_percent", np.nan) for _, m in rows]})
    frame["bucket"] = ((frame["ts"] - start).dt.total_seconds() // step).astype(int)
    expected = frame.groupby("bucket").agg(cpu=("cpu", "mean"), cpu_max=("cpu", "max"), mem=("mem", "mean"),
                                           n=("cpu", "size"))
    got = series.assign(bucket=range(48)).set_index("bucket")
    assert got.loc[expected.index, "cpu_percent"].to_numpy() == pytest.approx(expected["cpu"].to_numpy())
    assert got.loc[expected.index, "cpu_percent_max"].to_numpy() == pytest.approx(expected["cpu_max"].to_numpy())
    assert got.loc[expected.index, "memory_percent"].to_numpy() == pytest.approx(expected["mem"].to_numpy())
    assert got.loc[expected.index, "heartbeats"].tolist() == expected["n"].tolist()
    silent = sorted(set(range(48)) - set(expected.index))
    assert silent == list(range(20, 28))  # 3000 s .. 4200 s: the gap shows as empty buckets
    assert got.loc[silent, "cpu_percent"].isna().all() and (got.loc[silent, "heartbeats"] == 0).all()
    assert (got["disk_percent"].dropna() == 50).all()
    # A 7-day window stays within what a screen shows.
    assert len(rd.metric_series(engine, "r", utcnow() - timedelta(days=7), utcnow())) <= rd.MAX_SERIES_POINTS + 1


# --------------------------------------------------------------------------------------------
# One robot's jobs
# --------------------------------------------------------------------------------------------

def test_robot_jobs_counts_durations_errors_latest(engine):
    rng = np.random.default_rng(3)
    base = utcnow() - timedelta(days=2)
    durations = {"wf-a": [], "wf-b": []}
    errors = []
    latest = []
    with engine.begin() as c:
        insert_robot(c, "r", last_heartbeat=ago(seconds=1))
        for i in range(40):
            wf = "wf-a" if i % 3 else "wf-b"
            created = base + timedelta(minutes=30 * i)
            ms = round(float(rng.uniform(500, 90_000)), 3)  # the database keeps microseconds
            status = "failed" if i % 7 == 0 else "completed"
            message = [None, "TimeoutError: page", "connection refused", "Login timed out"][i % 4] if status == "failed" else None
            if status == "failed":
                errors.append(classify_error(message) or "UnknownError")
            started = created + timedelta(seconds=5)
            job = insert_job(c, status=status, workflow_id=wf, workflow_name=wf.upper(), robot_id="r", created_at=created,
                             started_at=started, completed_at=started + timedelta(milliseconds=ms),
                             error_message=message)
            durations[wf].append(ms)
            latest.append((created, job))
        insert_job(c, status="running", robot_id="r", created_at=utcnow(), started_at=utcnow())
        insert_job(c, status="pending", robot_id="r", created_at=ago(seconds=1))
        insert_job(c, status="completed", robot_id="r", created_at=ago(days=20), started_at=ago(days=20),
                   completed_at=ago(days=20))  # outside the window
        insert_job(c, status="completed", robot_id="other", created_at=base, started_at=base, completed_at=base)

    window = (utcnow() - timedelta(days=7), utcnow() + timedelta(seconds=5))
    counts = rd.robot_job_counts(engine, "r", *window)
    n_failed = len(errors)
    assert counts == {"pending": 1, "running": 1, "completed": 40 - n_failed, "failed": n_failed, "cancelled": 0,
                      "total_jobs": 42, "success_rate": (40 - n_failed) / 40}

    per_wf = rd.robot_workflow_durations(engine, "r", *window).set_index("workflow_id")
    for wf, values in durations.items():
        assert per_wf.loc[wf, "jobs"] == len(values)
        assert per_wf.loc[wf, "workflow_name"] == wf.upper()
        assert per_wf.loc[wf, "p50_duration_ms"] == pytest.approx(np.percentile(values, 50), rel=1e-9)
        assert per_wf.loc[wf, "p95_duration_ms"] == pytest.approx(np.percentile(values, 95), rel=1e-9)

    top = rd.robot_error_types(engine, "r", *window)
    expected = pd.Series(errors).value_counts()
    assert dict(zip(top["error_type"], top["count"])) == expected.to_dict()
    assert top["count"].is_monotonic_decreasing

    jobs = rd.robot_latest_jobs(engine, "r", limit=5)
    assert len(jobs) == 5 and jobs["status"].tolist()[:2] == ["running", "pending"]
    assert jobs["job_id"].tolist()[2:] == [j for _, j in sorted(latest, reverse=True)[:3]]
    assert "workflow_json" not in jobs.columns
