"""Every hot query reads job_queue and robot_heartbeats through an index, never a Seq Scan.

The test builds one moderately sized database for the module (the demo generator's 200,000
jobs, then ANALYZE), calls each hot data function with an engine that records the statements
it sends (``before_cursor_execute``), and EXPLAINs exactly those statements with exactly those
parameters. So it checks the SQL the app really runs, including what the functions assemble
from filters and cursors.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from data.db import make_engine
from data.schema import ensure_schema
from tests.helpers import temporary_database

BIG_TABLES = {"job_queue", "robot_heartbeats"}
INDEX_NODES = {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}
JOBS = 200_000


@pytest.fixture(scope="module")
def plan_db(pg_admin_url):
    """A database with the app's schema and the demo's 200,000 jobs, analyzed; dropped after."""
    from data.demo import generate_demo

    with temporary_database(pg_admin_url, "fm_plans_") as url:
        engine = make_engine(url, statement_timeout_ms=60_000)
        try:
            ensure_schema(engine)
            stats = generate_demo(engine, jobs=JOBS, robots=48, days=90, seed=7)
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                    sa.text("VACUUM ANALYZE job_queue, robots, robot_heartbeats"))
                facts = conn.execute(sa.text("""
                    SELECT (SELECT robot_id FROM job_queue WHERE status = 'completed' AND robot_id IS NOT NULL
                            ORDER BY created_at DESC LIMIT 1) AS robot,
                           (SELECT workflow_id FROM job_queue ORDER BY created_at DESC LIMIT 1) AS workflow,
                           (SELECT id::text FROM job_queue WHERE status = 'failed' ORDER BY created_at DESC LIMIT 1) AS job
                """)).mappings().one()
            yield {"engine": engine, "stats": stats, **facts}
        finally:
            engine.dispose()


@contextmanager
def recorded(engine):
    """The (statement, parameters) pairs the engine sends inside the block."""
    sent: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        sent.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def explain(engine, statement: str, parameters) -> dict:
    with engine.connect() as conn:
        raw = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).scalar()
    return (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]


def index_tables(engine) -> dict[str, str]:
    """Index name -> table, for the orchestrator's tables and the app's own (a Bitmap Index Scan
    node names its index only)."""
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT indexname, tablename FROM pg_indexes "
                                         "WHERE schemaname IN (current_schema(), 'fleet_monitor')")).all())


def plan_findings(engine, sent, tables=BIG_TABLES, explain_with=None) -> tuple[list[str], set[str]]:
    """Seq Scans on `tables` (the big ones by default), and which of `tables` were read through
    an index, in the plans `explain_with` (default: explain) gives for the statements sent."""
    explain_with = explain_with or explain
    seq, indexed = [], set()
    index_table = index_tables(engine)
    for statement, parameters in sent:
        head = statement.lstrip().split(None, 1)[0].upper()
        if head not in ("SELECT", "WITH", "("):
            continue
        for node in _nodes(explain_with(engine, statement, parameters)):
            table = node.get("Relation Name")
            if node["Node Type"] == "Seq Scan" and table in tables:
                seq.append(f"Seq Scan on {table} in: {' '.join(statement.split())[:300]}")
            if node["Node Type"] in INDEX_NODES:
                read = index_table.get(node.get("Index Name", ""), table)
                if read in tables:
                    indexed.add(read)
    return seq, indexed


def _filters(query):
    from data.jobs import parse_filters

    filters, problems = parse_filters(query)
    assert problems == []
    return filters


def _deep_cursor(engine, filters, offset=2_000):
    """The keyset cursor of a page far from the first (one keyset query for its boundary row)."""
    from data.jobs import encode_cursor, filter_sql

    where, params = filter_sql(filters)
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    with engine.connect() as conn:
        row = conn.execute(sa.text(f"SELECT j.created_at, j.id FROM job_queue j {clause} "
                                   "ORDER BY j.created_at DESC, j.id DESC OFFSET :o LIMIT 1"),
                           {**params, "o": offset}).one()
    return encode_cursor("-created", 0, [row.created_at.isoformat(), str(row.id)])


def _hot_queries():
    """(name, call(db) -> None, big tables it must read through an index)."""
    from data import fleet, jobs
    from data import robots as rb

    def window(db):
        end = datetime.now(timezone.utc)
        return end - timedelta(days=7), end

    overview = [
        ("fleet_kpis", lambda db: fleet.fleet_kpis.uncached(db["engine"], "Europe/Berlin", 90), {"job_queue"}),
        ("robot_statuses", lambda db: fleet.robot_statuses.uncached(db["engine"], 90), {"job_queue"}),
        ("queue_depth_series", lambda db: fleet.queue_depth_series.uncached(db["engine"]), {"job_queue"}),
        ("throughput_series", lambda db: fleet.throughput_series.uncached(db["engine"]), {"job_queue"}),
        ("recent_job_changes", lambda db: fleet.recent_job_changes.uncached(db["engine"]), {"job_queue"}),
    ]
    pages = [
        ("history: no filter", lambda db: jobs.list_jobs(db["engine"], _filters({}))),
        ("history: status", lambda db: jobs.list_jobs(db["engine"], _filters({"status": "failed"}))),
        ("history: status, two values", lambda db: jobs.list_jobs(db["engine"], _filters({"status": "failed,cancelled"}))),
        ("history: workflow", lambda db: jobs.list_jobs(db["engine"], _filters({"workflow": db["workflow"]}))),
        ("history: robot", lambda db: jobs.list_jobs(db["engine"], _filters({"robot": db["robot"]}))),
        ("history: environment", lambda db: jobs.list_jobs(db["engine"], _filters({"environment": "finance"}))),
        ("history: range 24h", lambda db: jobs.list_jobs(db["engine"], _filters({"range": "24h"}))),
        ("history: range 7d", lambda db: jobs.list_jobs(db["engine"], _filters({"range": "7d"}))),
        ("history: custom range", lambda db: jobs.list_jobs(db["engine"], _filters(
            {"range": "custom", "from": "2000-01-01T00:00:00+00:00", "to": "2100-01-01T00:00:00+00:00"}))),
        ("history: error type", lambda db: jobs.list_jobs(db["engine"], _filters({"error_type": "TimeoutError"}))),
        ("history: workflow + status + range", lambda db: jobs.list_jobs(db["engine"], _filters(
            {"workflow": db["workflow"], "status": "failed", "range": "30d"}))),
        ("history: longest first", lambda db: jobs.list_jobs(db["engine"], _filters({}), sort="-duration")),
        ("history: deep page", lambda db: jobs.list_jobs(db["engine"], _filters({}),
                                                         after=_deep_cursor(db["engine"], _filters({}))),),
        ("history: deep page, environment", lambda db: jobs.list_jobs(
            db["engine"], _filters({"environment": "finance"}),
            after=_deep_cursor(db["engine"], _filters({"environment": "finance"}), 500))),
    ]
    robot = [
        ("robot_detail", lambda db: rb.robot_detail(db["engine"], db["robot"], 90), {"job_queue", "robot_heartbeats"}),
        ("status_timeline", lambda db: rb.status_timeline(db["engine"], db["robot"], *window(db), 90),
         {"robot_heartbeats"}),
        ("metric_series", lambda db: rb.metric_series(db["engine"], db["robot"], *window(db)), {"robot_heartbeats"}),
        ("hourly_utilization", lambda db: rb.hourly_utilization(db["engine"], [db["robot"]], *window(db)),
         {"job_queue"}),
        ("robot_job_counts", lambda db: rb.robot_job_counts(db["engine"], db["robot"], *window(db)), {"job_queue"}),
        ("robot_error_types", lambda db: rb.robot_error_types(db["engine"], db["robot"], *window(db)), {"job_queue"}),
        ("robot_workflow_durations", lambda db: rb.robot_workflow_durations(db["engine"], db["robot"], *window(db)),
         {"job_queue"}),
        ("robot_latest_jobs", lambda db: rb.robot_latest_jobs(db["engine"], db["robot"]), {"job_queue"}),
    ]
    return overview + [(n, f, {"job_queue"}) for n, f in pages] + robot


HOT = _hot_queries()


@pytest.mark.parametrize("name,call,tables", HOT, ids=[h[0] for h in HOT])
def test_hot_query_reads_through_an_index(plan_db, name, call, tables):
    engine = plan_db["engine"]
    with recorded(engine) as sent:
        call(plan_db)
    assert sent, f"{name} sent no statement"
    seq, indexed = plan_findings(engine, sent)
    assert seq == [], "\n".join(seq)
    assert tables <= indexed, f"{name} should read {sorted(tables)} by index; by index: {sorted(indexed)}"


def test_recording_sees_the_statements_and_their_parameters(plan_db):
    """The recorder gives the statement as sent with its bound values: EXPLAIN sees the real query."""
    from data import jobs

    engine = plan_db["engine"]
    with recorded(engine) as sent:
        jobs.list_jobs(engine, _filters({"robot": plan_db["robot"]}))
    statements = [(s, p) for s, p in sent if "FROM job_queue" in s]
    assert len(statements) == 1
    statement, parameters = statements[0]
    assert plan_db["robot"] in parameters.values()
    plan = explain(engine, statement, parameters)
    assert plan["Node Type"] == "Limit"


def test_a_seq_scan_is_reported(plan_db):
    """The check itself: a query that cannot use an index is caught."""
    engine = plan_db["engine"]
    with recorded(engine) as sent, engine.connect() as conn:
        conn.execute(sa.text("SELECT count(*) FROM job_queue WHERE retry_count + 0 = :n"), {"n": 2}).scalar()
    seq, _ = plan_findings(engine, sent)
    assert len(seq) == 1 and "Seq Scan on job_queue" in seq[0]


# ---------------------------------------------------------------------------------------------
# The bounded text search, and the reads from the rollups
# ---------------------------------------------------------------------------------------------
ROLLUP_TABLES = {"job_rollup", "error_rollup", "robot_hourly"}


def _explain_no_seqscan(engine, statement: str, parameters) -> dict:
    """The plan with sequential scans priced out: a Seq Scan left in it means no index can serve
    the query (on a small table the planner rightly prefers a Seq Scan otherwise)."""
    with engine.connect() as conn, conn.begin():
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        raw = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).scalar()
    return (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]


def _seq_scans(engine, sent, tables) -> tuple[list[str], set[str]]:
    """Seq Scans on `tables` that no index can avoid, and which of `tables` were read through an
    index."""
    return plan_findings(engine, sent, tables, _explain_no_seqscan)


@pytest.mark.parametrize("cap", [None, 1_000], ids=["every message", "newest 1,000"])
@pytest.mark.parametrize("function", ["list_jobs", "count_jobs", "job_summary"])
def test_text_search_reads_through_an_index(plan_db, function, cap):
    """Without pg_trgm (the embedded server) a search reads the newest jobs with a message through
    the partial index, with or without the bound on how many it reads."""
    from data import jobs

    engine = plan_db["engine"]
    kwargs = {} if cap is None else {"search_cap": cap}
    with recorded(engine) as sent:
        answer = getattr(jobs, function)(engine, _filters({"q": "no such error text"}), "UTC", **kwargs)
    search = answer["search"]
    assert search["method"] in ("newest jobs", "trigram index")
    if cap is not None and search["method"] == "newest jobs":
        assert search["complete"] is False and search["since"] is not None
    seq, indexed = plan_findings(engine, sent)
    assert seq == [], "\n".join(seq)
    assert "job_queue" in indexed


def test_rollup_reads_use_their_indexes(plan_db):
    """Long analytics windows and the robots' list, once the rollups are up to date: the rollup
    tables can be read by their keys (the test's tables are small, so the planner may still pick
    a Seq Scan for them: checked with sequential scans priced out), and job_queue (the raw
    edges) is read through an index as the planner chooses."""
    from data import analytics as an
    from data import robots as rb
    from data import rollups

    engine = plan_db["engine"]
    # The robots' rollup fills its history in steps of bounded time: on a slow machine one pass
    # is not always enough.
    for _ in range(20):
        done = rollups.maintain(engine)
        if done["jobs"].get("behind") is False and done["robots"].get("behind") is False:
            break
    assert done["jobs"].get("behind") is False and done["robots"].get("behind") is False, done
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            sa.text("ANALYZE fleet_monitor.job_rollup, fleet_monitor.error_rollup, fleet_monitor.robot_hourly"))
    f, problems = an.parse_filters({"range": "30d"}, default_tz="Europe/Berlin")
    assert problems == []
    with recorded(engine) as sent:
        assert an.duration_percentiles(engine, f)["exact"] is False
        assert an.time_series(engine, f).attrs.get("exact") is False
        an.workflow_stats(engine, f)
        an.errors_by_workflow(engine, f)
        rb.robot_work_stats(engine, "Europe/Berlin")
    seq, indexed = plan_findings(engine, sent)
    assert seq == [], "\n".join(seq)
    seq, indexed = _seq_scans(engine, sent, ROLLUP_TABLES)
    assert seq == [], "\n".join(seq)
    assert {"job_rollup", "robot_hourly"} <= indexed, indexed
