"""Fleet overview numbers against rows the test inserts, with expected values worked out here."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from data import fleet
from tests.helpers import ago, insert_job, insert_robot, utcnow

OFFLINE_AFTER = 90


def zone_away_from_midnight() -> str:
    """A non-UTC zone where it is not near midnight now, so 'today' has room on both sides."""
    for name in ("Asia/Tokyo", "America/New_York", "Asia/Kolkata", "Pacific/Honolulu", "Europe/Berlin"):
        if 3 <= datetime.now(ZoneInfo(name)).hour <= 20:
            return name
    raise AssertionError("no suitable zone")


@pytest.fixture
def fleet_rows(engine):
    with engine.begin() as c:
        insert_robot(c, "r-idle", status="online", last_heartbeat=ago(seconds=5))
        insert_robot(c, "r-busy", status="busy", last_heartbeat=ago(seconds=10))
        insert_robot(c, "r-runs", status="online", last_heartbeat=ago(seconds=20))  # has a running job
        insert_robot(c, "r-stale", status="online", last_heartbeat=ago(seconds=OFFLINE_AFTER + 60))
        insert_robot(c, "r-never", status="online", last_heartbeat=None)
        insert_robot(c, "r-maint", status="maintenance", last_heartbeat=ago(days=2))
        insert_robot(c, "r-error", status="error", last_heartbeat=ago(seconds=3))
        insert_robot(c, "r-said-off", status="offline", last_heartbeat=ago(seconds=3))
        insert_job(c, status="running", robot_id="r-runs", created_at=ago(minutes=3), started_at=ago(minutes=2))
        insert_job(c, status="pending", created_at=ago(seconds=300))
        insert_job(c, status="pending", created_at=ago(seconds=60))
    return engine


def test_robot_counts_use_heartbeat_age(fleet_rows):
    k = fleet.fleet_kpis(fleet_rows, "UTC", OFFLINE_AFTER)
    # busy: r-busy and r-runs; idle: r-idle; offline: r-stale, r-never, r-said-off.
    assert (k["total_robots"], k["active_robots"], k["idle_robots"]) == (8, 2, 1)
    assert (k["offline_robots"], k["error_robots"], k["maintenance_robots"]) == (3, 1, 1)
    assert k["online_robots"] == 3


def test_robot_statuses_per_robot(fleet_rows):
    frame = fleet.robot_statuses(fleet_rows, OFFLINE_AFTER).set_index("robot_id")
    assert frame["status"].to_dict() == {
        "r-idle": "idle", "r-busy": "busy", "r-runs": "busy", "r-stale": "offline", "r-never": "offline",
        "r-maint": "maintenance", "r-error": "error", "r-said-off": "offline",
    }
    assert frame.loc["r-runs", "running_jobs"] == 1
    assert frame.loc["r-stale", "heartbeat_age_s"] == pytest.approx(OFFLINE_AFTER + 60, abs=5)


def test_queue_and_oldest_pending(fleet_rows):
    k = fleet.fleet_kpis(fleet_rows, "UTC", OFFLINE_AFTER)
    assert k["queue_depth"] == 2
    assert k["active_jobs"] == 1
    assert k["oldest_pending_age_seconds"] == pytest.approx(300, abs=5)


def test_today_is_the_viewers_day(engine):
    tz = zone_away_from_midnight()
    local_midnight = datetime.now(ZoneInfo(tz)).replace(hour=0, minute=0, second=0, microsecond=0)
    before, after = local_midnight - timedelta(minutes=30), local_midnight + timedelta(minutes=30)
    with engine.begin() as c:
        for status, count in (("completed", 3), ("failed", 2)):
            for _ in range(count):
                insert_job(c, status=status, created_at=after - timedelta(minutes=5),
                           started_at=after - timedelta(minutes=4), completed_at=after)
        # Finished before the viewer's midnight: not today, though it may be today in UTC.
        insert_job(c, status="completed", created_at=before - timedelta(minutes=5),
                   started_at=before - timedelta(minutes=4), completed_at=before)
    k = fleet.fleet_kpis(engine, tz, OFFLINE_AFTER)
    assert (k["completed_jobs_today"], k["failed_jobs_today"]) == (3, 2)
    assert k["total_jobs_today"] == 5


def test_success_rate_and_average_duration_over_24h(engine):
    durations = {"completed": [10.0, 20.0, 30.0], "failed": [40.0]}
    with engine.begin() as c:
        for status, values in durations.items():
            for seconds in values:
                end = ago(hours=2)
                insert_job(c, status=status, created_at=end - timedelta(seconds=seconds + 5),
                           started_at=end - timedelta(seconds=seconds), completed_at=end)
        # Outside the 24-hour window, and a cancelled job: neither counts.
        insert_job(c, status="failed", created_at=ago(hours=30), started_at=ago(hours=30), completed_at=ago(hours=29))
        insert_job(c, status="cancelled", created_at=ago(hours=1), completed_at=ago(minutes=50))
    k = fleet.fleet_kpis(engine, "UTC", OFFLINE_AFTER)
    assert k["success_rate_24h"] == pytest.approx(3 / 4)
    assert k["average_job_duration_seconds"] == pytest.approx(sum([10, 20, 30, 40]) / 4)


def test_empty_database(engine):
    k = fleet.fleet_kpis(engine, "UTC", OFFLINE_AFTER)
    assert k["total_robots"] == 0 and k["queue_depth"] == 0
    assert k["success_rate_24h"] is None and k["oldest_pending_age_seconds"] is None


def test_queue_depth_series_counts_waiting_jobs_at_each_edge(engine):
    now = utcnow()
    with engine.begin() as c:
        # Waited from 100 to 40 minutes ago, then ran.
        insert_job(c, status="completed", created_at=now - timedelta(minutes=100),
                   started_at=now - timedelta(minutes=40), completed_at=now - timedelta(minutes=30))
        # Still waiting since 50 minutes ago.
        insert_job(c, status="pending", created_at=now - timedelta(minutes=50))
        # Cancelled while waiting, 20 minutes ago.
        insert_job(c, status="cancelled", created_at=now - timedelta(minutes=70), completed_at=now - timedelta(minutes=20))
    series = fleet.queue_depth_series(engine, hours=3, step_minutes=5)
    spans = [(now - timedelta(minutes=100), now - timedelta(minutes=40)),
             (now - timedelta(minutes=50), None),
             (now - timedelta(minutes=70), now - timedelta(minutes=20))]
    for ts, depth in zip(series["ts"], series["queue_depth"]):
        t = ts.to_pydatetime()
        expected = sum(1 for start, end in spans if start <= t and (end is None or end > t))
        assert depth == expected, t
    assert series["queue_depth"].iloc[-1] == 1


def test_throughput_series_buckets_by_completion(engine):
    with engine.begin() as c:
        for minutes, status in ((5, "completed"), (6, "completed"), (7, "failed"), (200, "completed")):
            end = ago(minutes=minutes)
            insert_job(c, status=status, created_at=end - timedelta(minutes=1), started_at=end - timedelta(seconds=30),
                       completed_at=end)
    series = fleet.throughput_series(engine, hours=2, step_minutes=15)
    assert (series["completed"].sum(), series["failed"].sum()) == (2, 1)


def test_recent_changes_newest_first(engine):
    with engine.begin() as c:
        job = insert_job(c, status="completed", created_at=ago(minutes=10), started_at=ago(minutes=9),
                         completed_at=ago(minutes=1))
    changes = fleet.recent_job_changes(engine, limit=10)
    assert list(changes["change"]) == ["completed", "started", "queued"]
    assert set(changes["job_id"]) == {job}
