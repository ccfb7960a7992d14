"""Job history and job detail data functions against rows the test inserts.

Expected values are worked out here from the test's own rows (Python filtering and sorting,
numpy percentiles), never copied from the code under test.
"""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
import uuid
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import flask
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from config import Settings
from data import jobs
from data.db import read_frame
from data.errors import classify_error
from server.state import EXTENSION_KEY, FleetState
from tests.helpers import insert_job, utcnow

NOW = utcnow()


def zone_away_from_midnight() -> str:
    for name in ("Asia/Tokyo", "America/New_York", "Asia/Kolkata", "Pacific/Honolulu", "Europe/Berlin"):
        if 3 <= datetime.now(ZoneInfo(name)).hour <= 20:
            return name
    raise AssertionError("no suitable zone")


# ---------------------------------------------------------------------------------------------
# A known history
# ---------------------------------------------------------------------------------------------
MESSAGES = [
    None,
    "TimeoutError: portal did not answer",
    "connection refused by sap01",
    "Invoice 50%_off not found",
    "Invoice 500 off not found",
    "Invoice 50Xyoff rejected",
    "ValueError: amount under_score",
    "Permission denied on \\\\share\\in",
    "'; DROP TABLE job_queue; --",
]


def _job_rows(tz: str) -> list[dict]:
    """Rows with every combination the filters care about, created at known offsets from now."""
    today_start = datetime.now(ZoneInfo(tz)).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = []
    ages = [timedelta(minutes=20), timedelta(hours=3), timedelta(days=2), timedelta(days=10),
            timedelta(days=45), timedelta(days=120)]
    statuses = ["completed", "failed", "pending", "running", "cancelled"]
    i = 0
    for w, workflow in enumerate(["wf-invoice", "wf-payroll", "wf-report"]):
        for a, age in enumerate(ages):
            for s, status in enumerate(statuses):
                i += 1
                created = NOW - age - timedelta(seconds=i)
                robot = [None, "robot-1", "robot-2"][(i + s) % 3] if status != "pending" else None
                started = created + timedelta(seconds=5 + i % 7) if status in ("completed", "failed", "running") else None
                if status == "cancelled" and i % 2:
                    started = created + timedelta(seconds=2)
                completed = (started + timedelta(milliseconds=1500 + 137 * i)) if status in ("completed", "failed") else None
                if status == "cancelled":
                    completed = created + timedelta(seconds=30)
                message = MESSAGES[i % len(MESSAGES)] if status in ("failed", "cancelled") else None
                rows.append(dict(
                    job_id=str(uuid.uuid4()), workflow_id=workflow, workflow_name=workflow.replace("wf-", "").title(),
                    status=status, robot_id=robot, environment=["production", "finance"][(w + a) % 2],
                    created_at=created, started_at=started, completed_at=completed, error_message=message,
                    priority=i % 5, retry_count=i % 3,
                ))
    # Two jobs "today" in the viewer's zone, well after midnight, and one just before it.
    rows.append(dict(job_id=str(uuid.uuid4()), workflow_id="wf-report", workflow_name="Report", status="completed",
                     robot_id="robot-1", environment="production",
                     created_at=min(today_start + timedelta(minutes=30), NOW - timedelta(minutes=1)),
                     started_at=None, completed_at=None, error_message=None, priority=1, retry_count=0))
    rows.append(dict(job_id=str(uuid.uuid4()), workflow_id="wf-report", workflow_name="Report", status="failed",
                     robot_id="robot-2", environment="finance", created_at=today_start - timedelta(minutes=30),
                     started_at=None, completed_at=None, error_message="TimeoutError: late", priority=1,
                     retry_count=0))
    return rows


def _insert(engine, rows):
    with engine.begin() as c:
        for r in rows:
            insert_job(c, job_id=r["job_id"], status=r["status"], workflow_id=r["workflow_id"],
                       workflow_name=r["workflow_name"], robot_id=r["robot_id"], created_at=r["created_at"],
                       started_at=r["started_at"], completed_at=r["completed_at"], error_message=r["error_message"],
                       environment=r["environment"], priority=r["priority"], retry_count=r["retry_count"])


@pytest.fixture
def tz():
    return zone_away_from_midnight()


@pytest.fixture
def history(engine, tz):
    rows = _job_rows(tz)
    _insert(engine, rows)
    return rows


def _all_pages(engine, filters, tz, sort="-created", limit=7) -> list[str]:
    ids, cursor = [], None
    while True:
        page = jobs.list_jobs(engine, filters, tz, sort=sort, after=cursor, limit=limit)
        ids += list(page["jobs"]["job_id"])
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


def _newest_first(rows) -> list[str]:
    return [r["job_id"] for r in sorted(rows, key=lambda r: (r["created_at"], uuid.UUID(r["job_id"])), reverse=True)]


# ---------------------------------------------------------------------------------------------
# Parsing filters from the URL
# ---------------------------------------------------------------------------------------------
def test_parse_filters_reads_the_link_contract():
    filters, problems = jobs.parse_filters({
        "status": "failed,completed", "workflow": "wf-a,wf-b", "robot": "robot-1", "environment": "finance",
        "range": "custom", "from": "2025-01-01T00:00:00+01:00", "to": "2025-01-02T00:00:00Z",
        "error_type": "TimeoutError", "q": "  50%_off ",
    })
    assert problems == []
    assert filters.status == ("failed", "completed")
    assert filters.workflow == ("wf-a", "wf-b")
    assert filters.start == datetime(2025, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    assert filters.end == datetime(2025, 1, 2, tzinfo=timezone.utc)
    assert filters.q == "50%_off"
    again, problems = jobs.parse_filters(filters.to_query())
    assert again == filters and problems == []


@pytest.mark.parametrize("query,fragment", [
    ({"status": "failed,exploded"}, "Unknown status 'exploded'"),
    ({"range": "5y"}, "Unknown time range"),
    ({"range": "custom", "from": "yesterday"}, "'from' is not an ISO 8601"),
    ({"range": "custom", "from": "2025-02-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"}, "'from' is not before 'to'"),
    ({"error_type": "Timeout Error; DROP"}, "not a valid type name"),
    ({"robot": "r" * 300}, "longer than 255"),
    ({"range": "7d", "from": "2025-01-01"}, "only with range=custom"),
    ({"q": "x" * 500}, "cut to 200"),
])
def test_parse_filters_reports_and_ignores_malformed_values(query, fragment):
    filters, problems = jobs.parse_filters(query)
    assert any(fragment in p for p in problems), problems
    # The malformed value is ignored, the rest of the view still works.
    assert "exploded" not in filters.status
    assert filters.range in (None, "7d")


def test_parse_filters_never_raises_on_odd_input():
    for query in ({"status": ["failed", "completed"]}, {"status": None}, {"from": "\x00"}, {"to": "9999-99-99"},
                  {"workflow": "," * 100}, {"range": ""}, {}):
        filters, problems = jobs.parse_filters(query)
        assert isinstance(problems, list)
    assert jobs.parse_filters({"status": ["failed", "completed"]})[0].status == ("failed", "completed")
    assert jobs.parse_sort("sideways") == ("-created", ["Unknown sort 'sideways' ignored (expected -created, "
                                                        "created, -duration, duration)."])


# ---------------------------------------------------------------------------------------------
# Filters against the database
# ---------------------------------------------------------------------------------------------
def _expected(rows, tz, **f):
    def keep(r):
        if "status" in f and r["status"] not in f["status"]:
            return False
        if "workflow" in f and r["workflow_id"] not in f["workflow"]:
            return False
        if "robot" in f and r["robot_id"] != f["robot"]:
            return False
        if "environment" in f and r["environment"] != f["environment"]:
            return False
        if "since" in f and r["created_at"] < f["since"]:
            return False
        if "until" in f and r["created_at"] >= f["until"]:
            return False
        if "error_type" in f and classify_error(r["error_message"]) != f["error_type"]:
            return False
        if "q" in f and (r["error_message"] is None or f["q"].lower() not in r["error_message"].lower()):
            return False
        return True

    return _newest_first([r for r in rows if keep(r)])


def _cases(tz):
    today = datetime.now(ZoneInfo(tz)).replace(hour=0, minute=0, second=0, microsecond=0)
    paris = ZoneInfo("Europe/Paris")
    start_local = (NOW - timedelta(days=11)).astimezone(paris).replace(tzinfo=None, microsecond=0)
    return [
        ({"status": "failed"}, {"status": ["failed"]}),
        ({"status": "pending,running"}, {"status": ["pending", "running"]}),
        ({"workflow": "wf-payroll"}, {"workflow": ["wf-payroll"]}),
        ({"workflow": "wf-payroll,wf-report"}, {"workflow": ["wf-payroll", "wf-report"]}),
        ({"robot": "robot-2"}, {"robot": "robot-2"}),
        ({"environment": "finance"}, {"environment": "finance"}),
        ({"range": "1h"}, {"since": NOW - timedelta(hours=1)}),
        ({"range": "24h"}, {"since": NOW - timedelta(hours=24)}),
        ({"range": "7d"}, {"since": NOW - timedelta(days=7)}),
        ({"range": "30d"}, {"since": NOW - timedelta(days=30)}),
        ({"range": "90d"}, {"since": NOW - timedelta(days=90)}),
        ({"range": "today"}, {"since": today}),
        ({"range": "custom", "from": (NOW - timedelta(days=11)).isoformat(), "to": (NOW - timedelta(days=1)).isoformat()},
         {"since": NOW - timedelta(days=11), "until": NOW - timedelta(days=1)}),
        # No offset: read in the viewer's zone (Europe/Paris here, see ZONES).
        ({"range": "custom", "from": start_local.isoformat()}, {"since": start_local.replace(tzinfo=paris)}),
        ({"error_type": "TimeoutError"}, {"error_type": "TimeoutError"}),
        ({"error_type": "NotFoundError"}, {"error_type": "NotFoundError"}),
        ({"error_type": "ValueError"}, {"error_type": "ValueError"}),
        ({"error_type": "PermissionError"}, {"error_type": "PermissionError"}),
        ({"error_type": "UnknownError"}, {"error_type": "UnknownError"}),
        ({"q": "REFUSED"}, {"q": "refused"}),
        ({"status": "failed", "workflow": "wf-invoice", "range": "30d"},
         {"status": ["failed"], "workflow": ["wf-invoice"], "since": NOW - timedelta(days=30)}),
        ({"robot": "robot-1", "environment": "production", "status": "completed,failed,running"},
         {"robot": "robot-1", "environment": "production", "status": ["completed", "failed", "running"]}),
        ({"error_type": "NotFoundError", "workflow": "wf-report,wf-invoice", "range": "90d"},
         {"error_type": "NotFoundError", "workflow": ["wf-report", "wf-invoice"], "since": NOW - timedelta(days=90)}),
    ]


def test_each_filter_alone_and_combined_returns_exactly_the_expected_rows(engine, history, tz):
    for query, expect in _cases(tz):
        naive = "from" in query and jobs.parse_instant(query["from"]).tzinfo is None
        zone = "Europe/Paris" if naive else tz
        filters, problems = jobs.parse_filters(query)
        assert problems == [], (query, problems)
        expected = _expected(history, zone, **expect)
        assert expected, f"the test data should have rows for {query}"
        got = _all_pages(engine, filters, zone, limit=6)
        assert got == expected, query
        count = jobs.count_jobs(engine, filters, zone)
        search = count.pop("search")
        assert count == {"count": len(expected), "exact": True, "more_than": None, "estimate": None}, query
        # A few dozen jobs: a search reads every message.
        assert (search is None) == ("q" not in query) and (search is None or search["complete"]), query


def test_search_treats_sql_like_text_as_text(engine, history, tz):
    messages = {r["job_id"]: r["error_message"] for r in history}
    for text in ["50%_off", "%", "_", "'; DROP TABLE job_queue; --", "\\\\share", "under_score", "50_", "%_off"]:
        filters, _ = jobs.parse_filters({"q": text})
        got = set(_all_pages(engine, filters, tz, limit=50))
        expected = {j for j, m in messages.items() if m is not None and text.lower() in m.lower()}
        assert got == expected, text
    # '50%_off' must not match '500 off' or '50Xyoff' (wildcards would).
    filters, _ = jobs.parse_filters({"q": "50%_off"})
    assert {messages[j] for j in _all_pages(engine, filters, tz)} == {"Invoice 50%_off not found"}
    # The table is still there.
    assert read_frame(engine, "SELECT count(*) AS n FROM job_queue")["n"][0] == len(history)


# ---------------------------------------------------------------------------------------------
# Text search without a trigram index: the newest jobs with a message, and the rest on request
# ---------------------------------------------------------------------------------------------
def _search_rows():
    """60 jobs a minute apart; every other one failed with a message, 'needle' in every third of those;
    the completed ones between have none (they are not read and never match)."""
    rows = []
    base = NOW - timedelta(hours=2)
    for i in range(60):
        failed = i % 2 == 0
        created = base + timedelta(minutes=i)
        message = None
        if failed:
            message = f"Job {i}: {'NEEDLE in the portal' if i % 3 == 0 else 'portal timed out'}"
        rows.append(dict(job_id=str(uuid.uuid4()), workflow_id=["wf-a", "wf-b"][i % 4 // 2], workflow_name="Search",
                         status="failed" if failed else "completed", robot_id="robot-1", environment="production",
                         created_at=created, started_at=created + timedelta(seconds=1),
                         completed_at=created + timedelta(seconds=2 + i), error_message=message, priority=1,
                         retry_count=0))
    return rows


def test_a_search_reads_the_newest_jobs_with_a_message_and_says_since_when(engine):
    rows = _search_rows()
    _insert(engine, rows)
    with engine.begin() as c:  # where the server offers pg_trgm, work as on one that does not
        c.execute(sa.text("DROP INDEX IF EXISTS fm_job_error_trgm"))
    assert jobs.has_trigram_index(engine) is False
    with_message = sorted((r for r in rows if r["error_message"]), key=lambda r: r["created_at"], reverse=True)
    cap = 12
    edge = with_message[cap - 1]["created_at"]  # the 12th newest job with a message
    read = [r for r in rows if r["created_at"] >= edge]

    def matching(subset, **f):
        return _expected(subset, "UTC", q="needle", **f)

    filters, _ = jobs.parse_filters({"q": "needle"})
    scope = jobs.search_scope(engine, filters, "UTC", cap)
    assert scope["complete"] is False and scope["since"] == edge and scope["cap"] == cap
    assert scope["method"] == "newest jobs"

    # Every page of the search reads the same jobs, whatever arrives meanwhile; the cursor carries them.
    ids, cursor, pages = [], None, 0
    while True:
        page = jobs.list_jobs(engine, filters, "UTC", after=cursor, limit=3, search_cap=cap)
        assert page["search"] == scope
        ids += list(page["jobs"]["job_id"])
        pages += 1
        with engine.begin() as c:  # new failures keep arriving, newer than everything
            insert_job(c, status="failed", created_at=utcnow(), error_message="another NEEDLE")
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert ids == matching(read) and len(ids) == 4 and pages == 2

    # Count and summary cover the same jobs (and say so); the new failures are now the newest.
    with engine.begin() as c:
        c.execute(sa.text("DELETE FROM job_queue WHERE error_message = 'another NEEDLE'"))
    count = jobs.count_jobs(engine, filters, "UTC", search_cap=cap)
    assert count["count"] == 4 and count["search"] == scope
    summary = jobs.job_summary(engine, filters, "UTC", search_cap=cap)
    assert summary["total_jobs"] == 4 and summary["by_status"]["failed"] == 4 and summary["search"] == scope

    # Other filters narrow the results, not what is read.
    wf_filters, _ = jobs.parse_filters({"q": "needle", "workflow": "wf-a"})
    page = jobs.list_jobs(engine, wf_filters, "UTC", search_cap=cap)
    assert list(page["jobs"]["job_id"]) == matching(read, workflow=["wf-a"]) and page["search"]["since"] == edge

    # The link to the rest searches exactly the jobs before `since`; following such links until a
    # search is complete finds every match once (30 jobs with a message, 12 read at a time).
    older_query = jobs.older_search_query(filters, scope, "UTC")
    assert older_query == {"q": "needle", "range": "custom", "to": edge.isoformat()}
    found, scopes, query = list(ids), [scope], older_query
    while query is not None:
        older, problems = jobs.parse_filters(query)
        assert problems == []
        page = jobs.list_jobs(engine, older, "UTC", limit=100, search_cap=cap)
        upper = older.end
        lower = page["search"]["since"]
        expected = [r for r in rows if r["created_at"] < upper and (lower is None or r["created_at"] >= lower)]
        assert list(page["jobs"]["job_id"]) == matching(expected)
        found += list(page["jobs"]["job_id"])
        scopes.append(page["search"])
        query = jobs.older_search_query(older, page["search"], "UTC")
    assert [s["complete"] for s in scopes] == [False, False, True]
    assert sorted(found) == sorted(matching(rows)) and len(found) == len(set(found))

    # A time range bounds what is read: the 12 jobs with a message since 85 minutes ago are all read.
    ranged = [r for r in rows if r["created_at"] >= NOW - timedelta(minutes=85)]
    assert len([r for r in ranged if r["error_message"]]) == cap
    custom, _ = jobs.parse_filters({"q": "needle", "from": (NOW - timedelta(minutes=85)).isoformat()})
    page = jobs.list_jobs(engine, custom, "UTC", limit=100, search_cap=cap)
    assert page["search"]["complete"] is True and list(page["jobs"]["job_id"]) == matching(ranged)

    # Exactly `cap` jobs with a message: all were read, nothing is older.
    exact = jobs.search_scope(engine, filters, "UTC", len(with_message))
    assert exact["complete"] is True and exact["since"] is None


def test_with_a_trigram_index_a_search_reads_every_message(engine):
    """Where the server offers pg_trgm, data/schema.py creates the trigram index and the search
    reads the whole time range; a text too short for the index still reads the newest jobs."""
    with engine.connect() as c:
        offered = c.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")).first()
    if not offered:
        pytest.skip("this PostgreSQL does not offer pg_trgm (set TEST_DATABASE_URL to one that does)")
    rows = _search_rows()
    _insert(engine, rows)
    assert jobs.has_trigram_index(engine) is True
    filters, _ = jobs.parse_filters({"q": "needle"})
    page = jobs.list_jobs(engine, filters, "UTC", limit=100, search_cap=5)
    assert page["search"] == {"text": "needle", "method": "trigram index", "complete": True, "since": None, "cap": None}
    assert list(page["jobs"]["job_id"]) == _expected(rows, "UTC", q="needle")
    assert jobs.count_jobs(engine, filters, "UTC", search_cap=5)["count"] == len(_expected(rows, "UTC", q="needle"))
    short, _ = jobs.parse_filters({"q": "1:"})  # no three letters or digits in a row: the index cannot help
    scope = jobs.search_scope(engine, short, "UTC", 5)
    assert scope["method"] == "newest jobs" and scope["complete"] is False
    # Any valid trigram index on the column counts, whatever its name; one on an expression does not.
    with engine.begin() as c:
        c.execute(sa.text("DROP INDEX fm_job_error_trgm"))
        c.execute(sa.text("CREATE INDEX lower_trgm ON job_queue USING gin (lower(error_message) gin_trgm_ops)"))
    assert jobs.has_trigram_index(engine) is False
    with engine.begin() as c:
        c.execute(sa.text("CREATE INDEX dba_trgm ON job_queue USING gist (error_message gist_trgm_ops)"))
    assert jobs.has_trigram_index(engine) is True


def test_a_search_cursor_with_a_damaged_scope_is_a_clear_error(engine):
    filters, _ = jobs.parse_filters({"q": "x"})
    bad = jobs.encode_cursor("-created", 0, ["2025-01-01T00:00:00+00:00", str(uuid.uuid4())])
    import base64 as b64
    raw = json.loads(b64.urlsafe_b64decode(bad + "=" * (-len(bad) % 4)))
    raw["c"] = {"since": "yesterday", "m": "newest jobs", "n": 5}
    damaged = b64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")
    with pytest.raises(ValueError, match="not valid"):
        jobs.list_jobs(engine, filters, "UTC", after=damaged)


def test_count_is_exact_when_small_and_capped_otherwise(engine, history, tz):
    everything = jobs.JobFilters()
    exact = jobs.count_jobs(engine, everything, tz)
    assert exact["count"] == len(history) and exact["exact"]
    capped = jobs.count_jobs(engine, everything, tz, cap=10)
    assert capped["exact"] is False and capped["count"] is None and capped["more_than"] == 10
    failed = [r for r in history if r["status"] == "failed"]
    assert jobs.count_jobs(engine, jobs.JobFilters(status=("failed",)), tz, cap=len(failed))["count"] == len(failed)
    assert jobs.count_jobs(engine, jobs.JobFilters(status=("failed",)), tz, cap=len(failed) - 1)["exact"] is False


def test_summary_counts_and_percentiles_match_numpy(engine, history, tz):
    def durations(rows):
        return np.array([(r["completed_at"] - r["started_at"]).total_seconds() * 1000 for r in rows
                         if r["status"] in ("completed", "failed") and r["started_at"] and r["completed_at"]])

    summary = jobs.job_summary(engine, jobs.JobFilters(), tz)
    assert summary["total_jobs"] == len(history) and summary["capped"] is False
    for status in jobs.STATUSES:
        assert summary["by_status"][status] == sum(r["status"] == status for r in history)
    d = durations(history)
    assert summary["duration_jobs"] == len(d)
    assert summary["p50_duration_ms"] == pytest.approx(np.percentile(d, 50), rel=1e-9)
    assert summary["p95_duration_ms"] == pytest.approx(np.percentile(d, 95), rel=1e-9)

    # A status filter narrows the duration set; a workflow filter narrows everything.
    only = [r for r in history if r["status"] == "completed" and r["workflow_id"] == "wf-payroll"]
    s2 = jobs.job_summary(engine, jobs.JobFilters(status=("completed",), workflow=("wf-payroll",)), tz)
    assert s2["total_jobs"] == len(only)
    assert s2["p95_duration_ms"] == pytest.approx(np.percentile(durations(only), 95), rel=1e-9)

    # Capped: the newest `cap` jobs only, and it says so.
    s3 = jobs.job_summary(engine, jobs.JobFilters(), tz, cap=20)
    newest = sorted(history, key=lambda r: r["created_at"], reverse=True)[:20]
    assert s3["capped"] is True and s3["total_jobs"] == 20
    assert s3["by_status"]["failed"] == sum(r["status"] == "failed" for r in newest)

    empty = jobs.job_summary(engine, jobs.JobFilters(workflow=("nope",)), tz)
    assert empty["total_jobs"] == 0 and empty["p50_duration_ms"] is None


def test_list_rows_carry_the_orchestrator_fields(engine, history, tz):
    page = jobs.list_jobs(engine, jobs.JobFilters(status=("failed",)), tz, limit=500)
    frame = page["jobs"]
    assert list(frame.columns) == jobs.JOB_COLUMNS
    by_id = {r["job_id"]: r for r in history}
    for row in frame.to_dict("records"):
        r = by_id[row["job_id"]]
        assert row["workflow_name"] == r["workflow_name"]
        assert (None if pd.isna(row["error_type"]) else row["error_type"]) == classify_error(r["error_message"])
        expected_ms = (r["completed_at"] - r["started_at"]).total_seconds() * 1000 if r["started_at"] else None
        if expected_ms is None:
            assert np.isnan(row["duration_ms"])
        else:
            assert row["duration_ms"] == pytest.approx(expected_ms, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Keyset paging
# ---------------------------------------------------------------------------------------------
def _paging_rows():
    """137 jobs; created_at values come in groups of 4 equal instants (ties broken by id)."""
    rows = []
    base = NOW - timedelta(days=3)
    for i in range(137):
        created = base + timedelta(minutes=i // 4)
        has_duration = i % 5 != 0
        started = created + timedelta(seconds=1) if has_duration else None
        # Durations also tie in groups (i // 3), so the duration sort needs its id tie-break.
        completed = started + timedelta(milliseconds=250 * ((i * 7) % 11 // 3 + 1)) if has_duration else None
        status = "completed" if has_duration else ["pending", "running", "cancelled"][i % 3]
        rows.append(dict(job_id=str(uuid.uuid4()), workflow_id="wf-page", workflow_name="Paging", status=status,
                         robot_id="robot-1", environment="production", created_at=created, started_at=started,
                         completed_at=completed, error_message=None, priority=1, retry_count=0))
    return rows


def test_keyset_paging_returns_every_row_once_in_order_while_jobs_arrive(engine):
    rows = _paging_rows()
    _insert(engine, rows)
    expected = _newest_first(rows)
    seen, cursor, pages = [], None, 0
    while True:
        page = jobs.list_jobs(engine, jobs.JobFilters(), "UTC", after=cursor, limit=10)
        seen += list(page["jobs"]["job_id"])
        pages += 1
        # New jobs keep arriving, newer than everything, as the orchestrator enqueues them:
        # they are not on the pages still to come and shift nothing.
        with engine.begin() as c:
            insert_job(c, workflow_id="wf-page", created_at=utcnow(), status="pending")
            if pages == 5:
                # One lands in the stretch not paged yet (older than every row): listed once, last.
                late = insert_job(c, workflow_id="wf-page", created_at=NOW - timedelta(days=30), status="pending")
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert pages == 14
    assert len(seen) == len(set(seen))
    assert seen == expected + [late]


def test_keyset_paging_oldest_first_and_back(engine):
    rows = _paging_rows()
    _insert(engine, rows)
    expected = list(reversed(_newest_first(rows)))
    pages, cursor = [], None
    while True:
        page = jobs.list_jobs(engine, jobs.JobFilters(), "UTC", sort="created", after=cursor, limit=20)
        pages.append(page)
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert [j for p in pages for j in p["jobs"]["job_id"]] == expected
    # Walk back with the previous-page cursors: the same pages, in reverse.
    back = pages[-1]
    for original in reversed(pages[:-1]):
        back = jobs.list_jobs(engine, jobs.JobFilters(), "UTC", sort="created", before=back["prev_cursor"], limit=20)
        assert list(back["jobs"]["job_id"]) == list(original["jobs"]["job_id"])
    assert back["prev_cursor"] is None


def test_duration_sort_pages_through_ties_and_nulls(engine):
    rows = _paging_rows()
    _insert(engine, rows)

    def dur(r):
        return r["completed_at"] - r["started_at"] if r["started_at"] and r["completed_at"] else None

    timed = [r for r in rows if dur(r) is not None]
    untimed = [r for r in rows if dur(r) is None]
    tail = _newest_first(untimed)  # jobs without a duration come last, newest first
    longest = [r["job_id"] for r in sorted(timed, key=lambda r: (dur(r), uuid.UUID(r["job_id"])), reverse=True)]
    shortest = [r["job_id"] for r in sorted(timed, key=lambda r: (dur(r), uuid.UUID(r["job_id"])))]
    assert _all_pages(engine, jobs.JobFilters(), "UTC", sort="-duration", limit=9) == longest + tail
    assert _all_pages(engine, jobs.JobFilters(), "UTC", sort="duration", limit=9) == shortest + tail

    # Backwards across the boundary between the two phases.
    first = jobs.list_jobs(engine, jobs.JobFilters(), "UTC", sort="-duration", limit=len(timed) - 3)
    second = jobs.list_jobs(engine, jobs.JobFilters(), "UTC", sort="-duration", after=first["next_cursor"], limit=len(timed) - 3)
    assert list(second["jobs"]["job_id"]) == (longest + tail)[len(timed) - 3: 2 * (len(timed) - 3)]
    back = jobs.list_jobs(engine, jobs.JobFilters(), "UTC", sort="-duration", before=second["prev_cursor"], limit=len(timed) - 3)
    assert list(back["jobs"]["job_id"]) == list(first["jobs"]["job_id"])


def test_a_malformed_cursor_is_a_clear_error(engine):
    for cursor in ["garbage", "eyJzIjoiLWNyZWF0ZWQiLCJwIjowLCJrIjpbIngiLCJ5Il19", jobs.encode_cursor("created", 0, ["2025-01-01T00:00:00+00:00", str(uuid.uuid4())])]:
        with pytest.raises(ValueError, match="not valid"):
            jobs.list_jobs(engine, jobs.JobFilters(), "UTC", after=cursor)


def test_paging_uses_the_index_not_offset(engine):
    """Page 1 and a deep page read the same index range: the plan is an index scan with a LIMIT."""
    rows = _paging_rows()
    _insert(engine, rows)
    with engine.begin() as c:
        c.execute(sa.text("ANALYZE job_queue"))
    page = jobs.list_jobs(engine, jobs.JobFilters(), "UTC", limit=5)
    where, params = jobs.filter_sql(jobs.JobFilters(), "UTC")
    phase = jobs._SORT_PHASES["-created"][0]
    bound = jobs.decode_cursor(page["next_cursor"], "-created")[1]
    sql, p = jobs._phase_query(phase, where, params, bound, True, 6)
    with engine.connect() as c:
        c.execute(sa.text("SET enable_seqscan = off"))  # a tiny table would otherwise be scanned
        plan = "\n".join(r[0] for r in c.execute(sa.text("EXPLAIN " + sql), p))
    assert "fm_job_created" in plan and "OFFSET" not in sql.upper()

    # The error-type filter reads an index in created order: its expression index, or (on a
    # table this small the planner may prefer it) the one of jobs with an error message.
    where, params = jobs.filter_sql(jobs.JobFilters(error_type="TimeoutError"), "UTC")
    sql, p = jobs._phase_query(phase, where, params, None, True, 6)
    with engine.connect() as c:
        c.execute(sa.text("SET enable_seqscan = off"))
        plan = "\n".join(r[0] for r in c.execute(sa.text("EXPLAIN " + sql), p))
    assert ("fm_job_error_type" in plan or "fm_job_error_created" in plan) and "Sort" not in plan


# ---------------------------------------------------------------------------------------------
# CSV export
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def export_client(engine):
    from server.export import register_export

    server = flask.Flask(__name__)
    server.extensions[EXTENSION_KEY] = FleetState(settings=Settings.from_env(database_url="x"), engine=engine)
    register_export(server)
    return server.test_client()


def _csv(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def test_csv_export_equals_the_filtered_rows_with_zone_offsets(engine, export_client):
    # Winter and summer rows: Europe/Paris is +01:00 in January and +02:00 in July.
    rows = []
    for month, day in ((1, 15), (7, 15), (1, 20), (7, 20)):
        created = datetime(2024, month, day, 9, 30, 15, 123456, tzinfo=timezone.utc)
        for status in ("completed", "failed"):
            rows.append(dict(job_id=str(uuid.uuid4()), workflow_id="wf-csv", workflow_name="=HYPERLINK(\"x\")",
                             status=status, robot_id="robot-9", environment="production", created_at=created,
                             started_at=created + timedelta(seconds=3), completed_at=created + timedelta(seconds=63.5),
                             error_message="TimeoutError: slow, \"quoted\"\nsecond line" if status == "failed" else None,
                             priority=2, retry_count=1))
    rows.append(dict(job_id=str(uuid.uuid4()), workflow_id="wf-other", workflow_name="Other", status="failed",
                     robot_id=None, environment="production", created_at=datetime(2024, 1, 16, tzinfo=timezone.utc),
                     started_at=None, completed_at=None, error_message="x", priority=1, retry_count=0))
    _insert(engine, rows)

    response = export_client.get("/executions/export.csv", query_string={
        "workflow": "wf-csv", "status": "failed,completed", "range": "custom",
        "from": "2024-01-01T00:00:00+00:00", "to": "2024-12-31T00:00:00+00:00", "tz": "Europe/Paris"})
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["X-Row-Cap"] == str(jobs.EXPORT_ROW_CAP)
    got = _csv(response)
    expected = [r for r in rows if r["workflow_id"] == "wf-csv"]
    assert [g["job_id"] for g in got] == _newest_first(expected)
    assert list(got[0].keys()) == jobs.JOB_COLUMNS
    by_id = {r["job_id"]: r for r in expected}
    for g in got:
        r = by_id[g["job_id"]]
        offset = "+01:00" if r["created_at"].month == 1 else "+02:00"
        for column in ("created_at", "started_at", "completed_at"):
            assert g[column].endswith(offset), g[column]
            assert datetime.fromisoformat(g[column]) == r[column]
        assert g["created_at"] == ("2024-01-" if r["created_at"].month == 1 else "2024-07-") + \
            f'{r["created_at"].day}T{9 + int(offset[2])}:30:15.123456{offset}'
        assert float(g["duration_ms"]) == 60500.0 and float(g["queue_wait_ms"]) == 3000.0
        assert g["status"] == r["status"] and g["robot_id"] == "robot-9" and g["priority"] == "2"
        assert g["workflow_name"] == "'=HYPERLINK(\"x\")"  # neutralised formula
        assert g["error_message"] == (r["error_message"] or "")
        assert g["error_type"] == ("TimeoutError" if r["status"] == "failed" else "")


def test_csv_export_rejects_bad_input_and_honours_the_cap(engine, export_client, monkeypatch):
    bad = export_client.get("/executions/export.csv?status=exploded&tz=Mars/Olympus")
    assert bad.status_code == 400
    text = bad.get_data(as_text=True)
    assert "exploded" in text and "Mars/Olympus" in text

    rows = _paging_rows()[:9]
    _insert(engine, rows)
    monkeypatch.setattr(jobs, "EXPORT_ROW_CAP", 4)
    capped = _csv(export_client.get("/executions/export.csv?sort=created"))
    assert [g["job_id"] for g in capped] == list(reversed(_newest_first(rows)))[:4]
    utc = _csv(export_client.get("/executions/export.csv"))
    assert all(g["created_at"].endswith("+00:00") for g in utc)


# ---------------------------------------------------------------------------------------------
# One job
# ---------------------------------------------------------------------------------------------
def test_job_detail_for_finished_running_unknown_and_malformed_ids(engine):
    created = NOW - timedelta(minutes=10)
    result = {"node_executions": [
        {"node_id": "open", "node_type": "browser", "status": "success", "started_at": (created + timedelta(seconds=5)).isoformat(),
         "completed_at": (created + timedelta(seconds=7)).isoformat(), "duration_ms": 2000},
        {"node_id": "submit", "node_type": "click", "status": "failed", "started_at": (created + timedelta(seconds=7)).isoformat(),
         "duration_ms": 450.5, "error": "ElementNotFound: #go", "extra": "ignored"},
    ], "other": 1}
    with engine.begin() as c:
        done = insert_job(c, status="failed", workflow_id="wf-x", workflow_name="X", robot_id="robot-1",
                          created_at=created, started_at=created + timedelta(seconds=5),
                          completed_at=created + timedelta(seconds=8, milliseconds=250),
                          error_message="ElementNotFoundException: #go", result=result,
                          variables={"invoice": 42}, metadata={"healing_attempts": 1}, retry_count=2)
        running = insert_job(c, status="running", workflow_id="wf-x", robot_id="robot-2",
                             created_at=utcnow() - timedelta(minutes=3), started_at=utcnow() - timedelta(minutes=2))
        c.execute(sa.text("UPDATE job_queue SET visible_after = now() + interval '90 seconds' WHERE id = :id"), {"id": running})
    job = jobs.job_detail(engine, done.upper())  # ids are case-insensitive
    assert job["job_id"] == done and job["error_type"] == "ElementNotFoundException"
    assert job["duration_ms"] == pytest.approx(3250.0) and job["queue_wait_ms"] == pytest.approx(5000.0)
    assert job["claimed_at"] == job["started_at"] and job["retry_count"] == 2 and job["max_retries"] == 3
    assert job["variables"] == {"invoice": 42} and job["metadata"] == {"healing_attempts": 1}
    assert "workflow_json" not in job

    story = jobs.job_story(engine, done)
    steps = story["node_executions"]
    assert story["steps_source"] == "result.node_executions"
    assert [(s["node_id"], s["node_type"], s["status"], s["duration_ms"]) for s in steps] == [
        ("open", "browser", "completed", 2000.0), ("submit", "click", "failed", 450.5)]
    assert steps[1]["error"] == "ElementNotFound: #go"
    assert steps[0]["started_at"] == created + timedelta(seconds=5)

    live = jobs.job_detail(engine, running)
    assert 120_000 <= live["elapsed_ms"] <= 125_000
    assert 85_000 <= live["lease_remaining_ms"] <= 90_000

    assert jobs.job_detail(engine, str(uuid.uuid4())) is None
    for bad in ["not-a-uuid", "", "1' OR '1'='1", "../../etc", None, 42, "0" * 200]:
        assert jobs.job_detail(engine, bad) is None
        assert jobs.job_story(engine, bad) is None


def test_a_job_in_the_dead_letter_queue(engine):
    with engine.begin() as c:
        kept = insert_job(c, status="failed", error_message="ConnectionError: sap", created_at=NOW - timedelta(hours=1))
        gone = str(uuid.uuid4())
        for job_id in (kept, gone):
            c.execute(sa.text(
                "INSERT INTO job_queue_dlq (original_job_id, workflow_id, workflow_name, workflow_json, variables, "
                "error_message, error_details, retry_count, first_failed_at, last_failed_at) VALUES "
                "(:id, 'wf-dlq', 'DLQ flow', '{\"big\": true}', '{\"a\": 1}', 'ConnectionError: sap', "
                "'{\"attempts\": [1, 2, 3]}', 3, now() - interval '2 hours', now() - interval '1 hour')"), {"id": job_id})
    entry = jobs.dlq_entry(engine, kept)
    assert entry["retry_count"] == 3 and entry["error_details"] == {"attempts": [1, 2, 3]}
    assert entry["pending"] is True and "workflow_json" not in entry
    # Moved to the DLQ and deleted from job_queue: the job page still finds it.
    story = jobs.job_story(engine, gone)
    assert story["source"] == "dlq" and story["workflow_name"] == "DLQ flow"
    assert story["error_type"] == "ConnectionError" and story["dlq"]["original_job_id"] == gone


def test_neighbours_and_duration_comparison(engine):
    base = NOW - timedelta(days=1)
    ids, durations = [], []
    with engine.begin() as c:
        for i in range(15):
            created = base + timedelta(minutes=10 * i)
            d = 1000 + (i * 733) % 5000
            status = "completed" if i % 4 else "failed"
            ids.append(insert_job(c, status=status, workflow_id="wf-n", created_at=created,
                                  started_at=created + timedelta(seconds=1),
                                  completed_at=created + timedelta(seconds=1, milliseconds=d)))
            durations.append(d)
        insert_job(c, status="completed", workflow_id="wf-other", created_at=base + timedelta(minutes=45),
                   started_at=base, completed_at=base + timedelta(seconds=1))
        insert_job(c, status="pending", workflow_id="wf-n", created_at=base + timedelta(minutes=1))
    target = 8
    job = jobs.job_detail(engine, ids[target])
    near = jobs.neighbour_runs(engine, "wf-n", job["created_at"], ids[target], n=3)
    prev = near[near["position"] == "previous"]["job_id"].tolist()
    nxt = near[near["position"] == "next"]["job_id"].tolist()
    assert prev == ids[5:8] and nxt == ids[9:12]

    cmp = jobs.workflow_duration_comparison(engine, "wf-n", job["created_at"], job["duration_ms"])
    earlier = np.array(durations[:target], dtype=float)
    assert cmp["runs"] == target
    assert cmp["p50_duration_ms"] == pytest.approx(np.percentile(earlier, 50))
    assert cmp["p95_duration_ms"] == pytest.approx(np.percentile(earlier, 95))
    assert cmp["rank"] == pytest.approx((earlier <= durations[target]).mean())
    assert cmp["share_shorter"] == pytest.approx((earlier < durations[target]).mean())
    capped = jobs.workflow_duration_comparison(engine, "wf-n", job["created_at"], job["duration_ms"], runs=3)
    assert capped["runs"] == 3 and capped["p50_duration_ms"] == pytest.approx(np.percentile(earlier[-3:], 50))


# ---------------------------------------------------------------------------------------------
# Step shapes (pure)
# ---------------------------------------------------------------------------------------------
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("result,source,expected", [
    ({"node_executions": [{"node_id": "a", "node_type": "t", "status": "completed", "duration_ms": 5}]},
     "result.node_executions", [("a", "completed", 5.0)]),
    ({"node_timings": {"login": 1200, "scrape": {"duration_ms": 300, "status": "error", "error": "boom"}}},
     "result.node_timings", [("login", "unknown", 1200.0), ("scrape", "failed", 300.0)]),
    ({"step_results": [{"step": "s1", "success": True, "duration": 1.5}, {"name": "s2", "success": False,
                                                                           "error": {"type": "X", "message": "y"}}]},
     "result.step_results", [("s1", "completed", 1500.0), ("s2", "failed", None)]),
    ({"nodes": [{"id": "n1", "type": "start", "execution": {"status": "ok", "started_at": T0.isoformat(),
                                                            "completed_at": (T0 + timedelta(seconds=2)).isoformat()}},
                {"id": "n2", "type": "end"}]},
     "result.nodes[].execution", [("n1", "completed", 2000.0)]),
    ({"execution_log": [
        {"node_id": "a", "event": "node_started", "timestamp": T0.isoformat()},
        {"node_id": "b", "event": "node_started", "timestamp": (T0 + timedelta(seconds=1)).isoformat()},
        {"node_id": "a", "event": "node_completed", "timestamp": (T0 + timedelta(seconds=3)).isoformat()},
        {"node_id": "b", "event": "node_failed", "timestamp": (T0 + timedelta(seconds=4)).isoformat(), "message": "bad"}]},
     "result.execution_log", [("a", "completed", 3000.0), ("b", "failed", 3000.0)]),
    ({"execution_log": [{"node_id": "x", "started_at": T0.timestamp(), "completed_at": T0.timestamp() + 0.25}]},
     "result.execution_log", [("x", "unknown", 250.0)]),
    ({}, None, []),
    ("not json", None, []),
    ({"node_executions": "garbage"}, None, []),
])
def test_steps_from_every_known_result_shape(result, source, expected):
    steps, got_source = jobs.steps_from_result(result)
    assert got_source == source
    assert [(s["node_id"], s["status"], s["duration_ms"]) for s in steps] == expected
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1))


def test_layout_steps_places_duration_only_steps_after_each_other():
    steps, _ = jobs.steps_from_result({"node_timings": {"a": 1000, "b": 500}})
    placed = jobs.layout_steps(steps, T0)
    assert [(p["bar_start"], p["bar_end"], p["estimated"]) for p in placed] == [
        (T0, T0 + timedelta(seconds=1), True), (T0 + timedelta(seconds=1), T0 + timedelta(seconds=1.5), True)]
    assert jobs.layout_steps(steps, None) == []


# ---------------------------------------------------------------------------------------------
# DBOS: the real package running a workflow against the test database
# ---------------------------------------------------------------------------------------------
DBOS_SCRIPT = textwrap.dedent("""
    import sys, time
    from dbos import DBOS, SetWorkflowID

    url, job_id = sys.argv[1], sys.argv[2]
    DBOS(config={"name": "fleet-monitor-test", "system_database_url": url, "log_level": "ERROR"})

    @DBOS.step()
    def fetch_invoices(n):
        time.sleep(0.05)
        return {"invoices": n}

    @DBOS.step()
    def post_to_ledger(batch):
        time.sleep(0.02)
        return batch["invoices"] * 2

    @DBOS.step(retries_allowed=False)
    def notify():
        raise ValueError("ValidationError: mail server rejected the report")

    @DBOS.workflow()
    def invoice_run(n):
        posted = post_to_ledger(fetch_invoices(n))
        try:
            notify()
        except ValueError:
            pass
        return posted

    DBOS.launch()
    with SetWorkflowID(job_id):
        print(invoice_run(21))
    DBOS.destroy()
""")


def test_steps_come_from_dbos_when_it_ran_the_job(engine, db_url, tmp_path):
    pytest.importorskip("dbos")
    job_id = str(uuid.uuid4())
    with engine.begin() as c:
        insert_job(c, job_id=job_id, status="completed", workflow_id="wf-dbos", created_at=NOW - timedelta(minutes=1),
                   started_at=NOW - timedelta(seconds=50), completed_at=NOW - timedelta(seconds=40),
                   result={"node_executions": [{"node_id": "from-result", "duration_ms": 1}]})
        other = insert_job(c, status="completed", workflow_id="wf-dbos", created_at=NOW - timedelta(minutes=2),
                           result={"node_executions": [{"node_id": "from-result", "duration_ms": 1}]})
    script = tmp_path / "run_dbos.py"
    script.write_text(DBOS_SCRIPT)
    run = subprocess.run([sys.executable, str(script), db_url, job_id], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "42"

    truth = read_frame(engine, "SELECT function_id, function_name, started_at_epoch_ms, completed_at_epoch_ms, "
                               "error IS NOT NULL AS failed FROM dbos.operation_outputs WHERE workflow_uuid = :id "
                               "ORDER BY function_id", {"id": job_id})
    story = jobs.job_story(engine, job_id)
    assert story["steps_source"] == "dbos.operation_outputs"
    assert story["dbos"]["workflow_status"] == "SUCCESS"
    steps = story["node_executions"]
    assert [s["node_id"] for s in steps] == list(truth["function_name"]) == ["fetch_invoices", "post_to_ledger", "notify"]
    assert [s["status"] for s in steps] == ["completed", "completed", "failed"]
    for step, t in zip(steps, truth.itertuples()):
        assert step["started_at"] == datetime.fromtimestamp(t.started_at_epoch_ms / 1000, tz=timezone.utc)
        assert step["duration_ms"] == pytest.approx(float(t.completed_at_epoch_ms - t.started_at_epoch_ms))
    assert steps[0]["duration_ms"] >= 50
    assert steps[0]["output"] == json.dumps({"invoices": 21})
    assert steps[1]["output"] == "42"
    assert steps[2]["error"] == "ValueError: ValidationError: mail server rejected the report"

    # A job DBOS did not run keeps its result's steps.
    assert jobs.job_story(engine, other)["steps_source"] == "result.node_executions"

    # An older DBOS without step times: steps are still listed, without timings.
    with engine.begin() as c:
        c.execute(sa.text("ALTER TABLE dbos.operation_outputs DROP COLUMN started_at_epoch_ms, "
                          "DROP COLUMN completed_at_epoch_ms"))
    old = jobs.dbos_steps(engine, job_id)["steps"]
    assert [s["node_id"] for s in old] == ["fetch_invoices", "post_to_ledger", "notify"]
    assert all(s["started_at"] is None and s["timing"] == "none" for s in old)


def test_dbos_values_are_decoded_without_running_code():
    import base64
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch /tmp/fleet-monitor-pwned",))

    evil = base64.b64encode(pickle.dumps(Evil())).decode()
    assert "not decoded" in jobs.decode_dbos_value(evil, "py_pickle")
    assert not os.path.exists("/tmp/fleet-monitor-pwned")
    error = base64.b64encode(pickle.dumps(TimeoutError("portal"))).decode()
    assert jobs.decode_dbos_value(error, "py_pickle", as_error=True) == "TimeoutError: portal"
    assert jobs.decode_dbos_value('{"a":[1,2]}', "portable_json") == '{"a": [1, 2]}'
    assert jobs.decode_dbos_value(None, "py_pickle") is None


def test_filter_choices(engine, history):
    workflows = jobs.workflow_options(engine)
    assert list(workflows["workflow_id"]) == ["wf-invoice", "wf-payroll", "wf-report"]
    latest = {}
    for r in sorted(history, key=lambda r: r["created_at"]):
        latest[r["workflow_id"]] = r["workflow_name"]
    assert dict(zip(workflows["workflow_id"], workflows["workflow_name"])) == latest
    assert jobs.environment_options(engine) == sorted({r["environment"] for r in history})
    assert set(jobs.robot_options(engine)["robot_id"]) == {r["robot_id"] for r in history if r["robot_id"]}
    types = {classify_error(r["error_message"]) for r in history} - {None}
    assert list(jobs.error_type_options(engine)["error_type"]) == sorted(types)
