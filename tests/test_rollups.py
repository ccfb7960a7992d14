"""The analytics rollups: percentiles within the stated bound, exact counts, late changes folded in.

Expected values are worked out here from the generated jobs (numpy and plain Python), not from
the code under test."""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import sqlalchemy as sa

from data import analytics as an
from data import rollups
from tests.helpers import insert_job, utcnow

WORKFLOWS = ("wf-invoice", "wf-payroll", "wf-report")
ENVIRONMENTS = ("production", "staging")
STATUSES = ("completed", "completed", "completed", "failed", "cancelled")
ERRORS = ("TimeoutError: portal slow", "ValueError: bad amount", "connection reset by peer")


def _jobs(now: datetime, n: int = 3000, days: float = 6.0, seed: int = 7) -> list[dict]:
    rng = np.random.default_rng(seed)
    jobs = []
    for i in range(n):
        created = now - timedelta(seconds=float(rng.uniform(60, days * 86400)))
        wait = float(rng.exponential(20.0))
        dur = float(rng.lognormal(np.log(30.0), 0.8))  # seconds, a long right tail
        status = STATUSES[i % len(STATUSES)]
        started = created + timedelta(seconds=wait)
        jobs.append({
            "id": str(uuid.uuid4()), "wf": WORKFLOWS[i % 3], "env": ENVIRONMENTS[(i // 3) % 2], "status": status,
            "created": created, "started": started, "completed": started + timedelta(seconds=dur),
            "err": ERRORS[i % 3] if status == "failed" else None,
            "meta": json.dumps({"healing_attempts": i % 4, "healing_successes": i % 2}),
        })
    return jobs


def _insert(engine, jobs: list[dict]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO job_queue (id, workflow_id, workflow_name, workflow_json, status, environment, created_at, "
            "started_at, completed_at, error_message, metadata) VALUES (:id, :wf, :wf, '{}', :status, :env, "
            ":created, :started, :completed, :err, CAST(:meta AS jsonb))"), jobs)


def _ms(job) -> float:
    return (job["completed"] - job["started"]).total_seconds() * 1000


def _close(value, expected, bound=rollups.MAX_RELATIVE_ERROR) -> bool:
    return abs(value - expected) <= bound * abs(expected) + 1e-9


@pytest.fixture
def history(engine):
    """Six days of known jobs, rolled up."""
    now = utcnow()
    jobs = _jobs(now)
    _insert(engine, jobs)
    done = rollups.refresh(engine)
    assert done.get("steps", 0) >= 1 and not done["behind"]
    return jobs, now


def _filters(now, **query):
    f, problems = an.parse_filters({"range": "7d", **query}, default_tz=query.get("tz", "UTC"), now=now)
    assert not problems
    return f


# ---------------------------------------------------------------------------------------------
# Pure parts
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_from_bins_are_within_the_stated_bound(seed):
    values = np.random.default_rng(seed).lognormal(np.log(40_000), 1.2, size=5_000)
    bins = np.floor(np.log(values) / np.log(1.02)).astype(int)
    ps = (0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0)
    found = rollups.percentiles_from_bins(*np.unique(bins, return_counts=True), ps)
    for p, got in zip(ps, found):
        assert _close(got, np.percentile(values, p * 100)), (p, got)
    assert rollups.MAX_RELATIVE_ERROR < 0.01
    assert rollups.percentiles_from_bins([], [], (0.5,)) == [None]


def test_grouped_percentiles_answer_each_group_as_its_own_histogram():
    rng = np.random.default_rng(5)
    parts = [np.floor(np.log(rng.lognormal(np.log(v), 1.0, size=n)) / np.log(1.02)).astype(int)
             for v, n in ((900, 400), (60_000, 3), (5, 1))]
    ps = (0.5, 0.95, 1.0)
    cells = [np.unique(b, return_counts=True) for b in parts]
    # Group 1 has no cells: groups 0, 2, 3 hold the three samples.
    group = np.concatenate([np.full(len(b), g) for g, (b, _) in zip((0, 2, 3), cells)])
    bins = np.concatenate([b for b, _ in cells])
    counts = np.concatenate([n for _, n in cells])
    totals, values = rollups.grouped_percentiles(group, bins, counts, 4, ps)
    assert totals.tolist() == [400, 0, 3, 1]
    assert np.isnan(values[1]).all()
    for g, sample in zip((0, 2, 3), parts):
        values_ms = rollups.bin_value(sample)
        for p, got in zip(ps, values[g]):
            assert got == pytest.approx(np.percentile(values_ms, p * 100), rel=1e-12)


def _midnight_after(t: datetime, zone: str, days: int) -> datetime:
    """Midnight ``days`` calendar days after the local date of ``t`` in ``zone``, in UTC."""
    local = t.astimezone(ZoneInfo(zone)).date() + timedelta(days=days)
    return datetime(local.year, local.month, local.day, tzinfo=ZoneInfo(zone)).astimezone(timezone.utc)


def _covered(plan: rollups.WindowPlan, zone: str = "UTC") -> list[tuple[datetime, datetime]]:
    parts = ([(w, _midnight_after(w, zone, 7)) for w in plan.weeks] + [(d, _midnight_after(d, zone, 1)) for d in plan.days]
             + [(h, h + timedelta(hours=1)) for h in plan.hours])
    return sorted(parts + list(plan.raw))


@pytest.mark.parametrize("tz,bucket,zone", [
    ("UTC", "day", "UTC"), ("Europe/Berlin", "day", "UTC"), ("America/New_York", "week", "UTC"),
    ("UTC", None, "UTC"), ("Asia/Tokyo", "hour", "UTC"),
    ("Europe/Berlin", "day", "Europe/Berlin"), ("Europe/Berlin", "week", "Europe/Berlin"),
    ("UTC", "day", "Europe/Berlin"), ("America/New_York", None, "Europe/Berlin")])
def test_a_plan_reads_every_instant_once_and_keeps_rollup_rows_inside_one_bucket(tz, bucket, zone):
    start = datetime(2026, 10, 20, 7, 25, tzinfo=timezone.utc)   # across the end of summer time
    end = datetime(2026, 11, 10, 16, 40, tzinfo=timezone.utc)
    covered_until = datetime(2026, 11, 10, 13, 0, tzinfo=timezone.utc)
    plan = rollups.plan_window(start, end, covered_until, tz, bucket, zone)
    parts = _covered(plan, zone)
    assert parts[0][0] == start and parts[-1][1] == end
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))       # no gap, no overlap
    assert plan.raw == ((start, datetime(2026, 10, 20, 8, tzinfo=timezone.utc)), (covered_until, end))
    viewer = ZoneInfo(tz)
    for lo, hi in parts:
        first, last = lo.astimezone(viewer), (hi - timedelta(microseconds=1)).astimezone(viewer)
        if bucket == "day":
            assert first.date() == last.date()
        elif bucket == "week":
            assert first.isocalendar()[:2] == last.isocalendar()[:2]
    for d in plan.days + plan.weeks:     # rows start at the rollup zone's midnight
        assert d.astimezone(ZoneInfo(zone)).time() == datetime.min.time()
    if zone == "UTC" and tz == "UTC" and bucket in ("day", None):
        # whole UTC days come from day rows, whole UTC weeks (Monday to Monday) from week rows
        weeks = (datetime(2026, 10, 26, tzinfo=timezone.utc), datetime(2026, 11, 2, tzinfo=timezone.utc))
        assert plan.weeks == (weeks if bucket is None else ())
        assert len(plan.days) + 7 * len(plan.weeks) == 20
    if tz != zone and bucket == "day":
        assert plan.days == plan.weeks == ()    # a day of one zone straddles two days of the other
    if tz == zone == "Europe/Berlin":
        # Berlin's whole days 21 October to 9 November come from day and week rows; 25 October
        # (midnight at 22:00 UTC, summer time) has 25 hours and is one row.
        assert datetime(2026, 10, 24, 22, tzinfo=timezone.utc) in plan.days
        rows = _covered(rollups.WindowPlan(days=plan.days, weeks=plan.weeks), zone)
        assert rows[0][0] == datetime(2026, 10, 20, 22, tzinfo=timezone.utc)
        assert rows[-1][1] == datetime(2026, 11, 9, 23, tzinfo=timezone.utc)
        assert len(plan.weeks) == (2 if bucket == "week" else 0)
    if zone == "Europe/Berlin" and tz == "America/New_York" and bucket is None:
        assert plan.weeks == (datetime(2026, 10, 25, 23, tzinfo=timezone.utc),
                              datetime(2026, 11, 1, 23, tzinfo=timezone.utc))


def test_zones_with_half_hour_offsets_and_short_windows_use_the_exact_queries(engine):
    now = utcnow()
    assert not rollups.whole_hour_zone("Asia/Kolkata", now)
    assert rollups.usable_plan(engine, now - timedelta(days=7), now, "Asia/Kolkata", "day") is None
    assert rollups.usable_plan(engine, now - timedelta(hours=24), now, "UTC", "hour") is None


@pytest.mark.parametrize("value,accepted", [("", "UTC"), ("Europe/Berlin", "Europe/Berlin"),
                                            ("Asia/Kolkata", None), ("Mars/Olympus", None)])
def test_the_rollup_zone_setting_takes_whole_hour_zones_only(monkeypatch, value, accepted):
    from config import Settings

    monkeypatch.setenv("FLEET_ROLLUP_TIMEZONE", value)
    if accepted:
        assert Settings.from_env().rollup_timezone == accepted
    else:
        with pytest.raises(SystemExit, match="FLEET_ROLLUP_TIMEZONE must be an IANA time zone"):
            Settings.from_env()


# ---------------------------------------------------------------------------------------------
# Analytics from the rollup
# ---------------------------------------------------------------------------------------------

def test_long_window_percentiles_and_counts_come_from_the_rollup(engine, history):
    jobs, now = history
    f = _filters(now)
    assert rollups.usable_plan(engine, f.start, f.end, f.tz, None) is not None
    result = an.duration_percentiles(engine, f)
    assert result["exact"] is False
    finished = [j for j in jobs if j["status"] in ("completed", "failed")]
    fleet = result["fleet"]
    assert fleet["total_jobs"] == len(jobs)
    assert fleet["completed_jobs"] == sum(j["status"] == "completed" for j in jobs)
    assert fleet["cancelled_jobs"] == sum(j["status"] == "cancelled" for j in jobs)
    assert fleet["timed_jobs"] == len(finished)
    durations = np.array([_ms(j) for j in finished])
    assert fleet["average_duration_ms"] == pytest.approx(durations.mean(), rel=1e-9)
    for p in (50, 90, 95, 99):
        assert _close(fleet[f"p{p}_duration_ms"], np.percentile(durations, p))
    waits = np.array([(j["started"] - j["created"]).total_seconds() * 1000 for j in finished])
    assert _close(fleet["p95_queue_wait_ms"], np.percentile(waits, 95))
    by_wf = result["workflows"].set_index("workflow_id")
    for wf in WORKFLOWS:
        mine = np.array([_ms(j) for j in finished if j["wf"] == wf])
        assert by_wf.loc[wf, "timed_jobs"] == len(mine)
        assert _close(by_wf.loc[wf, "p95_duration_ms"], np.percentile(mine, 95))


def test_large_merges_sort_instead_of_counting_densely_with_the_same_answers(engine, history, monkeypatch):
    """Histograms too large for one dense array of groups × bins are merged by sorting: the
    answers are the same."""
    from data import analytics_rollup

    jobs, now = history
    f = _filters(now, bucket="hour")
    calls = [lambda: an.duration_percentiles(engine, f)["workflows"], lambda: an.time_series(engine, f),
             lambda: an.duration_box_stats(engine, f), lambda: an.duration_histogram(engine, f)]
    dense = [call() for call in calls]
    monkeypatch.setattr(analytics_rollup, "DENSE_CELLS", 0)
    for before, call in zip(dense, calls):
        after = call()
        assert len(after) >= 3
        assert after.equals(before)


def test_filters_and_duration_statuses_apply_to_the_rollup(engine, history):
    jobs, now = history
    f = _filters(now, environment="staging", workflow="wf-payroll", status="cancelled")
    fleet = an.duration_percentiles(engine, f)["fleet"]
    mine = [j for j in jobs if j["env"] == "staging" and j["wf"] == "wf-payroll"]
    cancelled = np.array([_ms(j) for j in mine if j["status"] == "cancelled"])
    assert fleet["total_jobs"] == len(mine)
    assert fleet["timed_jobs"] == len(cancelled)
    assert _close(fleet["p50_duration_ms"], np.percentile(cancelled, 50))


def test_daily_series_in_a_zone_counts_each_job_in_its_local_day(engine, history):
    jobs, now = history
    tz = "America/Los_Angeles"
    f = _filters(now, tz=tz)
    series = an.time_series(engine, f)
    assert series.attrs["exact"] is False
    zone = ZoneInfo(tz)
    expected = Counter(j["created"].astimezone(zone).date() for j in jobs)
    got = {b.astimezone(zone).date(): n for b, n in zip(series["bucket"], series["total_jobs"]) if n}
    assert got == dict(expected)
    day = max(expected)
    mine = [_ms(j) for j in jobs if j["created"].astimezone(zone).date() == day
            and j["status"] in ("completed", "failed")]
    row = series[[b.astimezone(zone).date() == day for b in series["bucket"]]].iloc[0]
    assert _close(row["p95_duration_ms"], np.percentile(mine, 95))


def test_a_rollup_kept_in_the_viewers_zone_reads_whole_local_days(engine, history):
    """FLEET_ROLLUP_TIMEZONE: a refresh in another zone rebuilds the rollup with that zone's days;
    its viewers then read day rows, and viewers elsewhere still get every job in its own day."""
    jobs, now = history
    tz = "America/Los_Angeles"
    assert rollups.status(engine)["zone"] == "UTC"
    done = rollups.refresh(engine, zone=tz)
    assert done["new_hours"] > 0 and not done["behind"]       # rebuilt from the raw rows
    assert rollups.status(engine)["zone"] == tz
    rollups.refresh(engine)                                    # no zone given: kept as it is
    assert rollups.status(engine)["zone"] == tz
    for viewer in (tz, "UTC"):
        f = _filters(now, tz=viewer)
        plan = rollups.usable_plan(engine, f.start, f.end, f.tz, f.bucket)
        assert (len(plan.days) >= 5) == (viewer == tz)
        series = an.time_series(engine, f)
        zone = ZoneInfo(viewer)
        expected = Counter(j["created"].astimezone(zone).date() for j in jobs)
        got = {b.astimezone(zone).date(): n for b, n in zip(series["bucket"], series["total_jobs"]) if n}
        assert got == dict(expected)
        day = sorted(expected)[-2]
        mine = [_ms(j) for j in jobs if j["created"].astimezone(zone).date() == day
                and j["status"] in ("completed", "failed")]
        row = series[[b.astimezone(zone).date() == day for b in series["bucket"]]].iloc[0]
        assert _close(row["p95_duration_ms"], np.percentile(mine, 95))


def test_workflow_stats_errors_and_weekly_throughput_from_the_rollup(engine, history):
    jobs, now = history
    f = _filters(now)
    stats = an.workflow_stats(engine, f).set_index("workflow_id")
    for wf in WORKFLOWS:
        mine = [j for j in jobs if j["wf"] == wf and j["status"] in ("completed", "failed")]
        assert stats.loc[wf, "executions"] == len(mine)
        assert stats.loc[wf, "healing_attempts"] == sum(json.loads(j["meta"])["healing_attempts"] for j in mine)
        assert stats.loc[wf, "error_types"] == len({j["err"].split(":")[0] for j in mine if j["err"]})
    by_type = an.errors_by_workflow(engine, f)
    assert by_type["failures"].sum() == sum(j["status"] == "failed" for j in jobs)
    assert set(by_type["error_type"]) == {"TimeoutError", "ValueError", "ConnectionError"}
    top = an.top_error_messages(engine, f, limit=5)
    assert dict(zip(top["error_message"], top["failures"])) == Counter(j["err"] for j in jobs if j["err"])
    latest = max(j["created"] for j in jobs if j["err"] == top["error_message"][0])
    assert top["last_seen"][0] == latest
    weekly = an.weekly_throughput(engine, f, now)
    assert weekly.attrs["exact"] is False
    monday = (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    this_week = [j for j in jobs if j["created"] >= monday and j["status"] in ("completed", "failed")]
    assert weekly.iloc[0]["is_total"] and weekly.iloc[0]["this_week"] == len(this_week)


# ---------------------------------------------------------------------------------------------
# Maintenance
# ---------------------------------------------------------------------------------------------

def _fleet(engine, now) -> dict:
    return an.duration_percentiles(engine, _filters(now))["fleet"]


def test_late_completions_late_inserts_and_deletions_are_folded_in(engine, history, monkeypatch):
    monkeypatch.setattr(rollups, "LAG", timedelta(seconds=1))
    jobs, now = history
    old = now - timedelta(days=3)
    with engine.begin() as conn:
        running = insert_job(conn, status="running", workflow_id="wf-late", created_at=old, started_at=old)
    rollups.reconcile(engine)   # the running job was inserted into an hour already rolled up
    before = _fleet(engine, now)
    assert before["total_jobs"] == len(jobs) + 1 and before["timed_jobs"] == sum(
        j["status"] in ("completed", "failed") for j in jobs)
    # It finishes now, after its creation hour was aggregated: completed_at marks the hour dirty.
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE job_queue SET status = 'completed', completed_at = now() WHERE id = :id"),
                     {"id": running})
        conn.execute(sa.text("DELETE FROM job_queue WHERE id = :id"), {"id": jobs[0]["id"]})
    time.sleep(rollups.LAG.total_seconds() + 0.5)
    assert rollups.refresh(engine)["dirty_hours"] >= 1
    rollups.reconcile(engine)   # the deletion changes no completed_at: the reconciliation finds it
    after = _fleet(engine, now)
    assert after["total_jobs"] == len(jobs)
    assert after["completed_jobs"] == before["completed_jobs"] + 1 - (jobs[0]["status"] == "completed")


def test_a_rollup_of_an_older_layout_is_rebuilt(engine, history):
    """Tables left by an earlier version (here: a state row without the zone) are dropped and
    rebuilt; until then the reads take the exact path."""
    jobs, now = history
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {rollups.STATE} DROP COLUMN zone"))
        conn.execute(sa.text(f"UPDATE {rollups.STATE} SET version = version - 1"))
    assert rollups.coverage(engine) is None
    assert an.duration_percentiles(engine, _filters(now))["exact"] is True
    assert not rollups.refresh(engine)["behind"]
    assert rollups.status(engine)["zone"] == "UTC"
    assert _fleet(engine, now)["total_jobs"] == len(jobs)


def test_concurrent_refreshes_do_not_double_count(engine):
    now = utcnow()
    jobs = _jobs(now, n=800, days=4, seed=3)
    _insert(engine, jobs)
    results = []
    threads = [threading.Thread(target=lambda: results.append(rollups.refresh(engine))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rollups.refresh(engine)
    with engine.connect() as conn:
        hours = conn.execute(sa.text(f"SELECT sum(jobs) FROM {rollups.JOBS} WHERE grain = 'hour'")).scalar()
        days = conn.execute(sa.text(f"SELECT sum(jobs) FROM {rollups.JOBS} WHERE grain = 'day'")).scalar()
        weeks = conn.execute(sa.text(f"SELECT sum(jobs) FROM {rollups.JOBS} WHERE grain = 'week'")).scalar() or 0
        covered = conn.execute(sa.text(f"SELECT covered_until FROM {rollups.STATE}")).scalar()
    assert hours == sum(j["created"] < covered for j in jobs)
    full_days = covered.replace(hour=0)
    assert days == sum(j["created"] < full_days for j in jobs)
    full_weeks = full_days - timedelta(days=full_days.weekday())
    assert weeks == sum(j["created"] < full_weeks for j in jobs)
    assert _fleet(engine, now)["total_jobs"] == len(jobs)


def test_queue_depth_from_the_rollup_counts_the_jobs_waiting_at_each_bucket_start(engine, history):
    jobs, now = history
    # Still waiting, and cancelled before they started (they leave the queue when cancelled).
    with engine.begin() as conn:
        for hours in (100, 30, 2):
            insert_job(conn, status="pending", created_at=now - timedelta(hours=hours))
        insert_job(conn, status="cancelled", created_at=now - timedelta(hours=50),
                   completed_at=now - timedelta(hours=49))
    rollups.reconcile(engine)
    f = _filters(now, tz="Europe/Berlin")
    assert rollups.usable_plan(engine, f.start, f.end, f.tz, f.bucket) is not None
    spans = [(j["created"], j["started"]) for j in jobs]
    spans += [(now - timedelta(hours=h), None) for h in (100, 30, 2)]
    spans.append((now - timedelta(hours=50), now - timedelta(hours=49)))
    series = an.queue_depth_series(engine, f)
    assert len(series) == 8
    for at, depth in zip(series["at"], series["queue_depth"]):
        expected = sum(1 for created, left in spans if created < at and (left is None or left >= at))
        assert depth == expected, at


@pytest.mark.parametrize("days", [3, 30])
def test_anomalies_from_the_rollup_match_the_exact_query(engine, history, days):
    """30 days hold the anomaly buckets (the page's own reads answer them); 3 days do not (the
    baseline reaches back before the window)."""
    jobs, now = history
    f = _filters(now, range="custom", bucket="day", **{"from": str((now - timedelta(days=days)).date()),
                                                        "to": str((now - timedelta(days=1)).date())})
    rolled = an.anomalies(engine, f)
    with rollups.exact_only():
        exact = an.anomalies(engine, f)
    keys = ["workflow_id", "bucket"]
    got, want = (r["series"].set_index(keys).sort_index() for r in (rolled, exact))
    assert len(got) == 3 * 6 and list(got.index) == list(want.index)   # the six days before today
    for col in ("finished", "failed", "timed_jobs"):
        assert got[col].tolist() == want[col].tolist()
    assert got["failure_rate"].tolist() == pytest.approx(want["failure_rate"].tolist())
    assert all(_close(a, b) for a, b in zip(got["p95_duration_ms"], want["p95_duration_ms"]))
    # The daily buckets hold ~170 jobs per workflow: enough for a baseline of the failure rate.
    summary = {(r["workflow_id"], r["metric"]): r for r in rolled["summary"].to_dict("records")}
    expected = {(r["workflow_id"], r["metric"]): r for r in exact["summary"].to_dict("records")}
    assert set(summary) == set(expected) and ("wf-invoice", "failure_rate") in summary
    for key, r in expected.items():
        assert summary[key]["baseline_buckets"] == r["baseline_buckets"]
        if key[1] == "failure_rate":
            assert summary[key]["z"] == pytest.approx(r["z"])


def test_weekly_throughput_from_the_pages_own_reads_matches_the_exact_query(engine, history):
    """A page of weekly buckets over 90 days holds the weekly panel's weeks: the panel answers
    from the page's reads, with the numbers of the exact query."""
    from data import cache

    jobs, now = history
    with engine.begin() as conn:   # weeks before the panel's baseline, inside the page's window
        for days in (45, 50, 60):
            created = now - timedelta(days=days)
            insert_job(conn, status="completed", workflow_id="wf-invoice", created_at=created, started_at=created,
                       completed_at=created + timedelta(seconds=30))
    rollups.reconcile(engine)
    f = _filters(now, range="90d", bucket="week")
    counter = {"reads": 0}
    an.duration_percentiles(engine, f)
    an.time_series(engine, f)   # the page's week-bucket reads, kept
    sa.event.listen(engine, "before_cursor_execute",
                    lambda conn, cur, sql, *a: counter.update(reads=counter["reads"] + ("job_rollup" in sql)))
    weekly = an.weekly_throughput(engine, f, now)
    shared_reads = counter["reads"]
    cache.forget_kept_reads()
    with rollups.exact_only():
        exact = an.weekly_throughput(engine, f, now)
    assert weekly.attrs["exact"] is False and len(weekly) == 1 + len(WORKFLOWS)
    counts = ["this_week", "last_week_to_date", "last_week", "avg_4_weeks"]
    assert weekly[counts].to_dict("list") == exact[counts].to_dict("list")
    assert weekly["success_rate_this_week"].tolist() == pytest.approx(exact["success_rate_this_week"].tolist(), nan_ok=True)
    for col in ("p95_this_week_ms", "p95_last_week_ms"):
        for a, b in zip(weekly[col], exact[col]):
            assert (a is None or np.isnan(a)) == (b is None or np.isnan(b)) and (a is None or np.isnan(a) or _close(a, b))
    assert shared_reads == 1   # last week up to this moment of it; the rest was kept
