"""Analytics data functions against a real PostgreSQL.

Each test inserts its own rows and compares the SQL results with numpy/pandas (or hand
arithmetic) computed here from those same rows.
"""
from __future__ import annotations

import json
import math
import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from data import analytics as A
from data.errors import classify_error

UTC = timezone.utc
BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def job(created, *, wf="wf-a", status="completed", wait_s=1.0, run_s=10.0, robot="robot-1", env="prod",
        error=None, metadata=None, name=None):
    """One job row; started/completed follow from wait and run (None leaves them empty)."""
    started = created + timedelta(seconds=wait_s) if wait_s is not None else None
    completed = started + timedelta(seconds=run_s) if (started is not None and run_s is not None) else None
    if status in ("pending",):
        started = completed = None
    if status == "running":
        completed = None
    return {
        "workflow_id": wf, "workflow_name": name or f"Workflow {wf}", "workflow_json": "{}", "status": status,
        "robot_id": robot, "environment": env, "created_at": created, "started_at": started,
        "completed_at": completed, "error_message": error,
        "metadata": json.dumps(metadata if metadata is not None else {}),
    }


def insert(engine, rows):
    with engine.begin() as conn:
        conn.execute(sa.text("""
            INSERT INTO job_queue (workflow_id, workflow_name, workflow_json, status, robot_id, environment,
                                   created_at, started_at, completed_at, error_message, metadata)
            VALUES (:workflow_id, :workflow_name, :workflow_json, :status, :robot_id, :environment,
                    :created_at, :started_at, :completed_at, :error_message, CAST(:metadata AS jsonb))
        """), rows)
    return pd.DataFrame(rows)


def filters(**query):
    now = query.pop("now", None)
    f, problems = A.parse_filters({k: v for k, v in query.items()}, now=now)
    assert problems == []
    return f


def timed(frame, statuses=("completed", "failed")):
    t = frame[frame["status"].isin(statuses) & frame["started_at"].notna() & frame["completed_at"].notna()].copy()
    t["dur_ms"] = [(c - s) / timedelta(milliseconds=1) for c, s in zip(t["completed_at"], t["started_at"])]
    t["wait_ms"] = [(s - c) / timedelta(milliseconds=1) for s, c in zip(t["started_at"], t["created_at"])]
    return t


def pct(values, q):
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-9)


def local_floor(ts: pd.Series, tz: str, unit: str) -> pd.Series:
    """Bucket starts computed by pandas: local calendar day or Monday, back to UTC."""
    naive = pd.to_datetime(ts, utc=True).dt.tz_convert(tz).dt.tz_localize(None)
    day = naive.dt.normalize()
    if unit == "week":
        day = day - pd.to_timedelta(day.dt.weekday, unit="D")
    return day.dt.tz_localize(tz).dt.tz_convert("UTC")


def random_jobs(rng, start, hours, n, workflows=("wf-a", "wf-b", "wf-c")):
    rows = []
    for i in range(n):
        created = start + timedelta(seconds=rng.uniform(0, hours * 3600), microseconds=rng.randint(0, 999_999))
        status = rng.choice(["completed"] * 6 + ["failed"] * 2 + ["cancelled", "pending", "running"])
        run = rng.lognormvariate(2.5, 0.9) + rng.random() / 1000
        wait = rng.uniform(0, 40) + rng.random() / 1000
        if status == "cancelled" and rng.random() < 0.5:
            wait = None  # cancelled before it started
        wf = rng.choice(workflows)
        error = rng.choice(["TimeoutError: page", "connection reset", "Invoice 7 not found", "boom"]) \
            if status == "failed" else None
        rows.append(job(created, wf=wf, status=status, wait_s=wait, run_s=run, robot=f"robot-{i % 4}",
                        env="prod" if i % 5 else "test", error=error))
    return rows


# ---------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------

NOW = datetime(2024, 11, 6, 15, 0, tzinfo=UTC)


def test_parse_defaults():
    f, problems = A.parse_filters({}, default_tz=BERLIN, now=NOW)
    assert problems == []
    assert (f.range, f.bucket, f.tz, f.tz_from_query) == ("7d", "day", BERLIN, False)
    assert f.end == NOW and f.start == NOW - timedelta(days=7)
    assert f.statuses == ("completed", "failed")
    assert f.to_query() == {}


@pytest.mark.parametrize("query,fragment", [
    ({"range": "fortnight"}, "Unknown time window"),
    ({"bucket": "minute"}, "Unknown bucket"),
    ({"tz": "Mars/Olympus"}, "Unknown time zone"),
    ({"range": "custom", "from": "yesterday"}, "custom window needs dates"),
    ({"from": "2024-03-10", "to": "2024-03-01"}, "not before its end"),
    ({"status": "completed,exploded"}, "ignored 'exploded'"),
    ({"sla_success": "abc"}, "must be a number"),
    ({"sla_success": "150"}, "at most 100"),
    ({"p95_target": "-5"}, "above 0"),
    ({"targets": "wf-a"}, "workflow-id:seconds"),
    ({"targets": "wf-a:fast"}, "must be a number"),
    ({"log": "maybe"}, "log must be 1 or 0"),
    ({"from": "2024-01-01", "to": "2024-05-01", "bucket": "hour"}, "too many"),
    ({"from": "2020-01-01", "to": "2024-01-01"}, "at most 366 days"),
])
def test_parse_reports_problems_and_falls_back(query, fragment):
    f, problems = A.parse_filters(query, default_tz="UTC", now=NOW)
    assert any(fragment in p for p in problems), problems
    assert f.start < f.end and f.bucket in A.BUCKETS and A.is_valid_tz(f.tz)


def test_parse_custom_window_in_zone_and_round_trip():
    f, problems = A.parse_filters(
        {"from": "2024-03-25", "to": "2024-03-31", "tz": BERLIN, "bucket": "hour", "workflow": "wf-a,wf-b,wf-a",
         "robot": ["robot-1", "robot-2"], "environment": "prod", "status": "completed", "sla_success": "95",
         "p95_target": "90", "targets": "wf-a:120,ns:wf:b:30", "log": "1"},
        now=NOW, p95_targets={"wf-c": 45},
    )
    assert problems == []
    # Dates are local midnights; the 'to' date is included (the window ends at the next midnight,
    # after the spring-forward change on 31 March: 23 hours that day).
    assert f.start == datetime(2024, 3, 24, 23, 0, tzinfo=UTC)
    assert f.end == datetime(2024, 3, 31, 22, 0, tzinfo=UTC)
    assert f.workflows == ("wf-a", "wf-b") and f.robots == ("robot-1", "robot-2")
    assert f.statuses == ("completed",)
    assert f.success_target == pytest.approx(0.95) and f.p95_target_s == 90
    assert dict(f.p95_targets) == {"wf-a": 120, "ns:wf:b": 30, "wf-c": 45}
    assert f.target_for("wf-a") == 120 and f.target_for("zzz") == 90
    again, problems = A.parse_filters(f.to_query(), now=NOW)
    assert problems == [] and again == f
    assert A.AnalyticsFilters.from_dict(json.loads(json.dumps(f.to_dict()))) == f
    link = f.executions_query(status="failed")
    assert link["range"] == "custom" and link["from"].startswith("2024-03-25T00:00+01:00")
    assert link["workflow"] == ["wf-a", "wf-b"] and "robot" not in link and link["status"] == "failed"


# ---------------------------------------------------------------------------------------------
# 1. percentiles and success rates
# ---------------------------------------------------------------------------------------------

def test_percentiles_and_success_rates_match_numpy(engine):
    rng = random.Random(7)
    start = datetime(2024, 5, 1, tzinfo=UTC)
    frame = insert(engine, random_jobs(rng, start, 72, 600))
    insert(engine, random_jobs(rng, start - timedelta(days=3), 48, 50))  # outside the window
    f = filters(**{"from": start.isoformat(), "to": (start + timedelta(hours=72)).isoformat(), "tz": "UTC"})
    result = A.duration_percentiles(engine, f)
    assert result["exact"] is True and "completed and failed" in result["covers"]

    def check(row, part, statuses=("completed", "failed")):
        t = timed(part, statuses)
        n_c, n_f = (part["status"] == "completed").sum(), (part["status"] == "failed").sum()
        assert row["total_jobs"] == len(part)
        assert row["timed_jobs"] == len(t)
        assert row["success_rate"] == approx(n_c / (n_c + n_f))
        assert row["failure_rate"] == approx(n_f / (n_c + n_f))
        assert row["average_duration_ms"] == approx(t["dur_ms"].mean())
        for q in (50, 90, 95, 99):
            assert row[f"p{q}_duration_ms"] == approx(pct(t["dur_ms"], q))
            assert row[f"p{q}_queue_wait_ms"] == approx(pct(t["wait_ms"], q))

    check(result["fleet"], frame)
    per = result["workflows"].set_index("workflow_id")
    assert sorted(per.index) == ["wf-a", "wf-b", "wf-c"]
    for wf, part in frame.groupby("workflow_id"):
        check(per.loc[wf], part)

    # A status filter narrows the duration set (not the counts); other filters narrow both.
    g = filters(**{"from": start.isoformat(), "to": (start + timedelta(hours=72)).isoformat(),
                   "status": "completed", "environment": "prod", "robot": "robot-1,robot-2"})
    narrowed = A.duration_percentiles(engine, g)
    part = frame[(frame["environment"] == "prod") & frame["robot_id"].isin(["robot-1", "robot-2"])]
    check(narrowed["fleet"], part, ("completed",))
    assert narrowed["covers"].startswith("completed jobs")


def test_percentiles_of_an_empty_window(engine):
    f = filters(range="24h")
    result = A.duration_percentiles(engine, f)
    assert result["fleet"]["total_jobs"] == 0 and result["fleet"]["p95_duration_ms"] is None
    assert result["fleet"]["success_rate"] is None and result["workflows"].empty


# ---------------------------------------------------------------------------------------------
# 2. time series: buckets across daylight-saving changes and week boundaries
# ---------------------------------------------------------------------------------------------

def dst_rows():
    """Jobs around Berlin's 2024 changes (31 March, 27 October) and New York's (10 March, 3 November)."""
    rng = random.Random(11)
    rows = []
    for anchor in (datetime(2024, 3, 30, 12, tzinfo=UTC), datetime(2024, 10, 26, 12, tzinfo=UTC),
                   datetime(2024, 3, 9, 12, tzinfo=UTC), datetime(2024, 11, 2, 12, tzinfo=UTC)):
        rows += random_jobs(rng, anchor, 48, 150)
    # Exactly on and just before local midnights and the repeated autumn hour.
    for ts in ("2024-03-31T21:59:59.999999+00:00", "2024-03-31T22:00:00+00:00",   # Berlin midnight (CEST)
               "2024-10-27T00:30:00+00:00", "2024-10-27T01:30:00+00:00",         # 02:30 CEST and 02:30 CET
               "2024-10-27T22:59:59+00:00", "2024-10-27T23:00:00+00:00",         # Berlin Monday 00:00 (CET)
               "2024-11-03T05:30:00+00:00", "2024-11-03T06:30:00+00:00",         # 01:30 EDT and 01:30 EST
               "2024-11-04T04:59:59.5+00:00", "2024-11-04T05:00:00+00:00"):     # New York Monday 00:00 (EST)
        rows.append(job(datetime.fromisoformat(ts), wf="wf-edge", status="completed", run_s=3.25))
    return rows


@pytest.mark.parametrize("tz,bucket,start,end", [
    (BERLIN, "hour", "2024-03-30T12:00+00:00", "2024-04-01T12:00+00:00"),
    (BERLIN, "hour", "2024-10-26T12:00+00:00", "2024-10-28T12:00+00:00"),
    (BERLIN, "day", "2024-03-29", "2024-04-02"),
    (BERLIN, "day", "2024-10-25", "2024-10-29"),
    (BERLIN, "week", "2024-03-18", "2024-11-10"),
    (NEW_YORK, "day", "2024-11-01", "2024-11-05"),
    (NEW_YORK, "week", "2024-03-01", "2024-11-30"),
])
def test_time_series_matches_pandas(engine, tz, bucket, start, end):
    frame = insert(engine, dst_rows())
    f = filters(**{"from": start, "to": end, "tz": tz, "bucket": bucket})
    series = A.time_series(engine, f)
    part = frame[(frame["created_at"] >= f.start) & (frame["created_at"] < f.end)].copy()
    if bucket == "hour":  # Berlin and New York offsets are whole hours: local hours are UTC hours
        part["bucket"] = pd.to_datetime(part["created_at"], utc=True).dt.floor("h")
        expected_buckets = pd.date_range(pd.Timestamp(f.start).floor("h"), f.end - timedelta(microseconds=1), freq="h")
    else:
        part["bucket"] = local_floor(part["created_at"], tz, bucket)
        first = local_floor(pd.Series([f.start]), tz, bucket).iloc[0].tz_convert(tz)
        last = pd.Timestamp(f.end - timedelta(microseconds=1)).tz_convert(tz)
        expected_buckets = pd.date_range(first, last, freq="D" if bucket == "day" else "W-MON").tz_convert("UTC")
    got = series.set_index(pd.to_datetime(series["bucket"], utc=True))
    assert list(got.index) == list(expected_buckets)  # every bucket, empty ones too, in order
    for b, grp in part.groupby("bucket"):
        row = got.loc[b]
        n_c, n_f = (grp["status"] == "completed").sum(), (grp["status"] == "failed").sum()
        assert row["total_jobs"] == len(grp)
        assert (row["completed"], row["failed"]) == (n_c, n_f)
        assert row["cancelled"] == (grp["status"] == "cancelled").sum()
        if n_c + n_f:
            assert row["success_rate"] == approx(n_c / (n_c + n_f))
        t = timed(grp)
        assert row["timed_jobs"] == len(t)
        if len(t):
            assert row["p50_duration_ms"] == approx(pct(t["dur_ms"], 50))
            assert row["p95_duration_ms"] == approx(pct(t["dur_ms"], 95))
    assert got["total_jobs"].sum() == len(part)


def test_buckets_at_dst_and_monday_midnight(engine):
    """The edge rows land where a person reading a local calendar expects them."""
    insert(engine, dst_rows())
    edge = {"workflow": "wf-edge"}

    def counts(tz, bucket, start, end):
        s = A.time_series(engine, filters(**{"from": start, "to": end, "tz": tz, "bucket": bucket, **edge}))
        s = s[s["total_jobs"] > 0]
        local = pd.to_datetime(s["bucket"], utc=True).dt.tz_convert(tz)
        return {ts.isoformat(): int(n) for ts, n in zip(local, s["total_jobs"])}

    # Berlin, autumn: the two 02:30 jobs fall in two different 02:00 hours (+02:00 then +01:00).
    got = counts(BERLIN, "hour", "2024-10-26T22:00+00:00", "2024-10-27T03:00+00:00")
    assert got == {"2024-10-27T02:00:00+02:00": 1, "2024-10-27T02:00:00+01:00": 1}
    # Berlin, spring: 23:59:59.999999 is still 31 March; midnight is 1 April.
    got = counts(BERLIN, "day", "2024-03-31", "2024-04-01")
    assert got == {"2024-03-31T00:00:00+01:00": 1, "2024-04-01T00:00:00+02:00": 1}
    # Berlin weeks start Monday 00:00 local (28 October, CET): Sunday 23:59:59 is the week
    # before; the two New York rows of 3 November (06:30 and 07:30 in Berlin) the week after.
    got = counts(BERLIN, "week", "2024-10-21", "2024-11-03")
    assert got == {"2024-10-21T00:00:00+02:00": 3, "2024-10-28T00:00:00+01:00": 3}
    # New York: both 01:30 jobs of 3 November and 23:59:59.5 in one local day (25 hours long);
    # Monday 00:00 EST starts the next day and the next week.
    got = counts(NEW_YORK, "day", "2024-11-03", "2024-11-04")
    assert got == {"2024-11-03T00:00:00-04:00": 3, "2024-11-04T00:00:00-05:00": 1}
    got = counts(NEW_YORK, "week", "2024-10-28", "2024-11-10")
    assert got == {"2024-10-28T00:00:00-04:00": 3, "2024-11-04T00:00:00-05:00": 1}


def test_queue_depth_matches_definition(engine):
    rng = random.Random(5)
    start = datetime(2024, 6, 3, 8, tzinfo=UTC)
    rows = []
    for _ in range(300):
        created = start + timedelta(minutes=rng.uniform(-180, 720))
        status = rng.choice(["completed", "completed", "failed", "running", "pending", "cancelled"])
        wait = rng.uniform(0, 150) * 60
        if status == "cancelled" and rng.random() < 0.5:
            wait = None
        rows.append(job(created, status=status, wait_s=wait, run_s=120, wf=rng.choice(["wf-a", "wf-b"])))
        if status == "cancelled" and wait is None:
            rows[-1]["completed_at"] = created + timedelta(minutes=rng.uniform(1, 200))
    frame = insert(engine, rows)
    f = filters(**{"from": "2024-06-03T09:30+00:00", "to": "2024-06-03T18:00+00:00", "bucket": "hour", "tz": "UTC"})
    series = A.queue_depth_series(engine, f)
    left = [None if s == "pending" else (st if st is not None and not pd.isna(st) else c)
            for s, st, c in zip(frame["status"], frame["started_at"], frame["completed_at"])]
    frame["left"] = left
    for at, depth in zip(pd.to_datetime(series["at"], utc=True), series["queue_depth"]):
        waiting = [(c < at) and (lft is None or pd.isna(lft) or lft >= at) for c, lft in zip(frame["created_at"], frame["left"])]
        assert depth == sum(waiting), at
    assert pd.to_datetime(series["at"], utc=True).iloc[0] == pd.Timestamp(f.start)


# ---------------------------------------------------------------------------------------------
# 3. weekly throughput
# ---------------------------------------------------------------------------------------------

def test_weekly_throughput_matches_pandas(engine):
    tz = NEW_YORK
    now = datetime(2024, 11, 6, 20, 15, tzinfo=UTC)  # Wednesday 15:15 EST, the week after DST ended
    rng = random.Random(3)
    rows = random_jobs(rng, datetime(2024, 9, 20, tzinfo=UTC), 24 * 48, 1500, workflows=("wf-a", "wf-b"))
    # Monday 00:00 local boundaries: last instant of a week and first of the next.
    for ts in ("2024-11-04T04:59:59.999999+00:00", "2024-11-04T05:00:00+00:00",
               "2024-10-28T03:59:59+00:00", "2024-10-28T04:00:00+00:00",
               # last week at the same local time: Wednesday 15:15 EDT (19:15 UTC, not 20:15)
               "2024-10-30T19:14:59+00:00", "2024-10-30T19:15:00+00:00"):
        rows.append(job(datetime.fromisoformat(ts), wf="wf-b", status="completed", run_s=2))
    rows = [r for r in rows if r["created_at"] <= now]
    frame = insert(engine, rows)
    f = filters(**{"tz": tz})
    got = A.weekly_throughput(engine, f, now=now).set_index("workflow_name")

    this_week = pd.Timestamp("2024-11-04T00:00", tz=tz)
    last_week = pd.Timestamp("2024-10-28T00:00", tz=tz)
    done = frame[frame["status"].isin(["completed", "failed"])].copy()
    done["week"] = local_floor(done["created_at"], tz, "week")
    assert set(done["week"].dt.tz_convert(tz)) >= {this_week, last_week}

    def expect(part):
        def finished(week):
            return part[part["week"] == week.tz_convert("UTC")]
        tw, lw = finished(this_week), finished(last_week)
        before = [finished(last_week - pd.Timedelta(weeks=k)) for k in range(1, 5)]
        avg4 = sum(len(b) for b in before) / 4
        lw_to_date = lw[lw["created_at"] < pd.Timestamp("2024-10-30T15:15", tz=tz)]
        return {
            "this_week": len(tw), "last_week": len(lw), "avg_4_weeks": avg4,
            "last_week_to_date": len(lw_to_date),
            "change_pct": (len(lw) - avg4) / avg4 * 100,
            "pace_change_pct": (len(tw) - len(lw_to_date)) / len(lw_to_date) * 100,
            "success_rate_this_week": (tw["status"] == "completed").mean(),
            "success_rate_last_week": (lw["status"] == "completed").mean(),
            "p95_this_week_ms": pct(timed(tw)["dur_ms"], 95),
            "p95_last_week_ms": pct(timed(lw)["dur_ms"], 95),
        }

    assert got.index[0] == "All workflows" and bool(got["is_total"].iloc[0])
    for name, part in [("All workflows", done)] + [(f"Workflow {wf}", p) for wf, p in done.groupby("workflow_id")]:
        for key, value in expect(part).items():
            assert got.loc[name, key] == approx(value), (name, key)


# ---------------------------------------------------------------------------------------------
# 4. efficiency score and SLA (hand arithmetic)
# ---------------------------------------------------------------------------------------------

T0 = datetime(2024, 7, 1, 8, tzinfo=UTC)


def efficiency_rows():
    rows = []
    at = lambda i: T0 + timedelta(minutes=i)  # noqa: E731
    # all succeed fast: 10 × 5 s
    rows += [job(at(i), wf="fast", run_s=5) for i in range(10)]
    # half fail, one error type (TimeoutError, once by token and once by keyword)
    rows += [job(at(i), wf="half", run_s=5) for i in range(5)]
    rows += [job(at(i), wf="half", status="failed", run_s=5,
                 error="TimeoutError: page" if i % 2 else "operation timed out") for i in range(5)]
    # slow: every run 180 s, so P95 = 180 s
    rows += [job(at(i), wf="slow", run_s=180) for i in range(8)]
    # many error types: 4 succeed, 6 fail with 6 distinct types
    rows += [job(at(i), wf="errors", run_s=5) for i in range(4)]
    rows += [job(at(i), wf="errors", status="failed", run_s=5, error=e) for i, e in enumerate(
        ["TimeoutError: x", "connection refused", "Invoice 1 not found", "permission denied",
         "Validation failed", "SAPGuiError: crash"])]
    # healing metadata: 8 executions, 2 attempts in total (a number, a numeric string; junk ignored)
    meta = [{"healing_attempts": 1, "healing_successes": 1}, {"healing_attempts": "1"},
            {"healing_attempts": "lots"}, {"healing_attempts": [3]}, {}, {}, {}, {}]
    rows += [job(at(i), wf="healing", run_s=5, metadata=m) for i, m in enumerate(meta)]
    # very slow, with a per-workflow target of 400 s: P95 = 1200 s
    rows += [job(at(i), wf="batch", run_s=1200) for i in range(4)]
    # jobs that do not count as executions
    rows += [job(at(30), wf="fast", status="pending"), job(at(31), wf="fast", status="cancelled", run_s=900)]
    return rows


def test_efficiency_score_hand_cases(engine):
    insert(engine, efficiency_rows())
    f = filters(**{"from": "2024-07-01", "to": "2024-07-02", "targets": "batch:400"})
    table = A.workflow_efficiency(engine, f).set_index("workflow_id")
    expected = {
        #            success  duration          healing  diversity
        "fast":     (100.0, 100.0, 100.0, 100.0),
        "half":     (50.0, 100.0, 100.0, 80.0),
        "slow":     (100.0, (300 - 180) / (300 - 60) * 100, 100.0, 100.0),
        "errors":   (40.0, 100.0, 100.0, 20.0),
        "healing":  (100.0, 100.0, 100 - 2 / 8 * 100, 100.0),
        # target 400 s >= 300 s: the zero point is 5 × 400 = 2000 s
        "batch":    (100.0, (2000 - 1200) / (2000 - 400) * 100, 100.0, 100.0),
    }
    for wf, (s, d, h, e) in expected.items():
        row = table.loc[wf]
        assert (row["success_score"], row["duration_score"], row["healing_score"], row["error_diversity_score"]) \
            == (approx(s), approx(d), approx(h), approx(e)), wf
        score = 0.40 * s + 0.30 * d + 0.15 * h + 0.15 * e
        assert row["efficiency_score"] == approx(score), wf
        points = row[["success_points", "duration_points", "healing_points", "error_diversity_points"]].sum()
        assert points == approx(score)
    assert table.loc["fast", "executions"] == 10  # pending and cancelled are not executions
    assert table.loc["half", "error_types"] == 1 and table.loc["errors", "error_types"] == 6
    assert table.loc["healing", "self_healing_success_rate"] == approx(0.5)
    # ranked best first
    ranked = list(table.sort_values("rank").index)
    scores = {wf: 0.4 * s + 0.3 * d + 0.15 * h + 0.15 * e for wf, (s, d, h, e) in expected.items()}
    assert ranked == sorted(scores, key=lambda w: -scores[w])


@pytest.mark.parametrize("p95_s,target,score", [
    (60, 60, 100.0), (59.9, 60, 100.0), (180, 60, 50.0), (300, 60, 0.0), (900, 60, 0.0),
    (180, 120, (300 - 180) / 180 * 100), (250, 299, 100.0), (310, 299, 0.0),
    (600, 300, (1500 - 600) / 1200 * 100), (3000, 600, 0.0), (None, 60, None),
])
def test_duration_score_rule(p95_s, target, score):
    got = A.duration_score(None if p95_s is None else p95_s * 1000, target)
    assert got == (None if score is None else approx(score))


@pytest.mark.parametrize("types,score", [(0, 100), (1, 80), (2, 80), (3, 50), (5, 50), (6, 20), (40, 20)])
def test_error_diversity_rule(types, score):
    assert A.error_diversity_score(types) == score


def test_healing_rule_floors_at_zero():
    assert A.healing_score(0, 10) == 100 and A.healing_score(5, 10) == 50 and A.healing_score(30, 10) == 0


def test_sla_breaches_and_how_far_off(engine):
    insert(engine, efficiency_rows())
    f = filters(**{"from": "2024-07-01", "to": "2024-07-02", "sla_success": "90", "p95_target": "100",
                   "targets": "batch:1500"})
    sla = A.sla_report(engine, f).set_index("workflow_id")
    assert bool(sla.loc["half", "success_breach"]) and sla.loc["half", "success_shortfall_pp"] == approx(40.0)
    assert bool(sla.loc["errors", "success_breach"]) and sla.loc["errors", "success_shortfall_pp"] == approx(50.0)
    assert bool(sla.loc["slow", "p95_breach"]) and sla.loc["slow", "p95_excess_ms"] == approx(80_000.0)
    assert sla.loc["slow", "p95_excess_pct"] == approx(80.0)
    assert not sla.loc["batch", "breached"] and sla.loc["batch", "p95_target_ms"] == 1_500_000
    assert not sla.loc["fast", "breached"]
    assert list(sla["breached"]) == sorted(sla["breached"], reverse=True)  # breaches first


# ---------------------------------------------------------------------------------------------
# 5. distributions
# ---------------------------------------------------------------------------------------------

def test_histogram_and_box_stats_match_numpy(engine):
    rng = random.Random(21)
    start = datetime(2024, 8, 5, tzinfo=UTC)
    frame = insert(engine, random_jobs(rng, start, 24, 500))
    f = filters(**{"from": start.isoformat(), "to": (start + timedelta(days=1)).isoformat()})
    t = timed(frame)
    for log in (False, True):
        hist = A.duration_histogram(engine, f, bins=30, log=log)
        values = np.log(np.maximum(t["dur_ms"], 1)) if log else t["dur_ms"]
        counts, edges = np.histogram(values, bins=30)
        got = hist.groupby("bin")["jobs"].sum().reindex(range(1, 31), fill_value=0)
        assert list(got) == list(counts)
        ends = hist.drop_duplicates("bin").set_index("bin")["bin_end_ms"]
        want = np.exp(edges[1:]) if log else edges[1:]
        for b, e in ends.items():
            assert e == pytest.approx(want[b - 1], rel=1e-9)
        by_status = hist.groupby("status")["jobs"].sum()
        assert by_status.to_dict() == t["status"].value_counts().to_dict()

    box = A.duration_box_stats(engine, f).set_index("workflow_id")
    for wf, part in t.groupby("workflow_id"):
        v = part["dur_ms"].to_numpy()
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        row = box.loc[wf]
        assert (row["q1_ms"], row["median_ms"], row["q3_ms"]) == (approx(q1), approx(med), approx(q3))
        assert row["p99_ms"] == approx(np.percentile(v, 99))
        iqr = q3 - q1
        assert row["lowerfence_ms"] == approx(v[v >= q1 - 1.5 * iqr].min())
        assert row["upperfence_ms"] == approx(v[v <= q3 + 1.5 * iqr].max())
        assert row["timed_jobs"] == len(v)


# ---------------------------------------------------------------------------------------------
# 6. errors
# ---------------------------------------------------------------------------------------------

def test_errors_by_type_over_time_and_workflow(engine):
    rng = random.Random(9)
    start = datetime(2024, 9, 2, tzinfo=UTC)
    frame = insert(engine, random_jobs(rng, start, 72, 400) + [
        job(start + timedelta(hours=1), status="failed", error=None, wf="wf-x")])
    f = filters(**{"from": "2024-09-02", "to": "2024-09-04", "tz": "UTC"})
    failed = frame[(frame["status"] == "failed") & (frame["created_at"] < f.end)].copy()
    failed["error_type"] = [(classify_error(m) if isinstance(m, str) else None) or "UnknownError"
                            for m in failed["error_message"]]
    failed["bucket"] = local_floor(failed["created_at"], "UTC", "day")

    over_time = A.errors_over_time(engine, f)
    over_time["bucket"] = pd.to_datetime(over_time["bucket"], utc=True)
    want = failed.groupby(["bucket", "error_type"]).size()
    assert over_time.set_index(["bucket", "error_type"])["failures"].sort_index().to_dict() == want.to_dict()

    by_wf = A.errors_by_workflow(engine, f).set_index(["workflow_id", "error_type"])["failures"]
    assert by_wf.sort_index().to_dict() == failed.groupby(["workflow_id", "error_type"]).size().to_dict()

    top = A.top_error_messages(engine, f, limit=3)
    counts = failed["error_message"].dropna().value_counts()
    assert list(top["failures"]) == list(counts.iloc[:3])
    assert set(top["error_message"]) <= set(counts.index)
    assert top.iloc[0]["error_type"] == classify_error(top.iloc[0]["error_message"])


# ---------------------------------------------------------------------------------------------
# 7. anomalies
# ---------------------------------------------------------------------------------------------

def test_anomaly_flags_regression_not_noise(engine):
    day0 = datetime(2024, 10, 1, tzinfo=UTC)  # 9 daily buckets: 8 baseline days, then the latest
    baseline_failures = [4, 5, 3, 4, 6, 4, 5, 4]
    rng = random.Random(2)
    rows = []
    for d in range(9):
        for wf in ("steady", "regressed"):
            failures = baseline_failures[d] if d < 8 else (5 if wf == "steady" else 20)
            for i in range(40):
                run = 10 * (1 + 0.05 * rng.uniform(-1, 1))
                if d == 8 and wf == "regressed":
                    run *= 4
                rows.append(job(day0 + timedelta(days=d, minutes=10 + i * 20), wf=wf, run_s=run,
                                status="failed" if i < failures else "completed", error="TimeoutError: x"))
    frame = insert(engine, rows)
    f = filters(**{"from": "2024-10-09", "to": "2024-10-09", "tz": "UTC", "bucket": "day"})  # ends 10 Oct 00:00
    result = A.anomalies(engine, f)
    assert pd.Timestamp(result["latest_bucket"]) == pd.Timestamp("2024-10-09", tz="UTC")
    s = result["summary"].set_index(["workflow_id", "metric"])
    assert not s["flagged"].loc["steady"].any()
    assert s.loc[("regressed", "failure_rate"), "flagged"] and s.loc[("regressed", "p95_duration_ms"), "flagged"]
    assert s.loc[("regressed", "failure_rate"), "direction"] == "worse"

    # The z-score equals hand arithmetic on the rows: median/MAD of the 8 baseline failure rates.
    rates = np.array(baseline_failures) / 40
    med = np.median(rates)
    mad = np.median(np.abs(rates - med))
    scale = max(1.4826 * mad, 0.05, math.sqrt(med * (1 - med) / 40))
    assert s.loc[("regressed", "failure_rate"), "z"] == approx((20 / 40 - med) / scale)
    assert s.loc[("steady", "failure_rate"), "z"] == approx((5 / 40 - med) / scale)
    assert s.loc[("regressed", "failure_rate"), "baseline_median"] == approx(med)
    # P95 in log space, from the rows' own durations.
    t = timed(frame)
    t["day"] = pd.to_datetime(t["created_at"], utc=True).dt.floor("D")
    lp = {d: math.log(pct(g["dur_ms"], 95)) for d, g in t[t["workflow_id"] == "regressed"].groupby("day")}
    days = sorted(lp)
    base = np.array([lp[d] for d in days[:-1]])
    lmed = np.median(base)
    lscale = max(1.4826 * np.median(np.abs(base - lmed)), math.log(1.1))
    assert s.loc[("regressed", "p95_duration_ms"), "z"] == approx((lp[days[-1]] - lmed) / lscale)
    assert s.loc[("regressed", "p95_duration_ms"), "baseline_median"] == approx(math.exp(lmed))
    assert result["series"]["is_latest"].sum() == 2


def test_anomaly_needs_enough_data(engine):
    insert(engine, [job(datetime(2024, 10, 8, 12, tzinfo=UTC), wf="tiny", status="failed", error="boom")])
    f = filters(**{"from": "2024-10-08", "to": "2024-10-08", "tz": "UTC"})
    assert A.anomalies(engine, f)["summary"].empty


# ---------------------------------------------------------------------------------------------
# filter choices
# ---------------------------------------------------------------------------------------------

def test_filter_options(engine):
    insert(engine, [job(T0, wf="wf-b", name="Beta", env="test"), job(T0, wf="wf-a", name="Alpha old"),
                    job(T0 + timedelta(hours=1), wf="wf-a", name="Alpha")])
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO robots (robot_id, name, environment) VALUES ('r-1', 'Robot one', 'lab')"))
    opts = A.filter_options(engine)
    assert opts["environments"] == ["lab", "prod", "test"]
    assert opts["workflows"] == [{"workflow_id": "wf-a", "workflow_name": "Alpha"},
                                 {"workflow_id": "wf-b", "workflow_name": "Beta"}]
    assert opts["robots"] == [{"robot_id": "r-1", "name": "Robot one"}]
