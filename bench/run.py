"""Time every data function behind every page and API endpoint; write bench/RESULTS.md.

    python -m bench.run [--sizes 1m,10m] [--repeat 5] [--check] [--naive on|off] [--only GROUP]
                        [--reuse-baselines] [--rebuild-rollups]
    python -m bench.run --database-url URL [--label tiny] [--output PATH]     # any database

For each size (a benchmark database built by bench.build, built first when missing) and each
page, the harness calls the app's data functions directly (the uncached function behind
``@shared_cache``), once to warm up and then ``--repeat`` times, page by page as a refresh would,
and reports medians: per function and per page (the sum of a pass). Beside each it reports the
same question answered as one plain SQL query on the raw tables (bench.raw) and the naive way,
loading the window's rows with pandas (bench.naive, in a worker process of its own), with the
ratios ours/raw and ours/naive and the growth from the smallest to the largest size.

Before measuring, the rollups (data.rollups.maintain: the analytics rollups and the robots'
rollup, which follow the database's now()) are brought up to date and their maintenance timed;
for the analytics windows longer than 48 hours the exact answers are computed too and the
rollups' percentiles compared with them (RESULTS.md, "Accuracy of the rollups").
``--reuse-baselines`` takes the naive and plain-SQL timings, which do not depend on the app's
code, from the previous results of the same database build (bench/data/results-<size>.json).

Which functions exist is read from the pages and server routes (``discover``): a data function
that a page calls but this file has no recipe for is listed as "not measured", so the report
never silently misses one. Targets (issue 9) are checked at every size; ``--check`` exits 1 when
one is missed.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import json
import logging
import multiprocessing
import os
import platform
import re
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa

from bench import naive, raw
from bench.common import (
    BENCH_DIR, DATA_DIR, RESULTS, VIEWER_TZ, database_exists, database_url, db_name, maintain_rollups, parse_sizes,
    read_meta, server_facts, size_label, start_server,
)
from data.cache import forget_kept_reads
from data.db import make_engine
from server.runtime import freeze_startup_objects

log = logging.getLogger("bench")
PROJECT = BENCH_DIR.parent

# Where the app calls its data functions: pages (callbacks and layouts) and server routes.
CALLER_FILES = ("pages/*.py", "server/api.py", "server/export.py", "server/metrics.py", "server/health.py")
# Helpers that take an engine but are not questions a page asks.
NOT_DATA_MODULES = {"data.db", "data.cache", "data.schema", "data.timeutil", "data.status", "data.errors"}
# Writes (operator and admin actions): not read paths, so not timed here.
WRITES = {
    "data.actions.cancel_job", "data.actions.retry_job", "data.actions.requeue_dead_letter",
    "data.users.create_display_token", "data.users.revoke_display_token", "data.users.create_user",
    "data.users.set_password", "data.users.set_role", "data.users.set_enabled", "data.users.revoke_token",
}

APP_STATEMENT_TIMEOUT_MS = 5000      # the app's default (config.Settings.statement_timeout_ms)
OURS_TIMEOUT_MS = 120_000            # the harness lets a slow function finish, and says so
SLOW_OURS_MS = 10_000               # a function slower than this is timed once, not --repeat times
RAW_TIMEOUT_MS = 30_000
RAW_BUDGET_S = 10.0                  # stop repeating a raw query once it has used this much
NAIVE_TIMEOUT_S = 900
PAGE_SIZE = 50
DEEP_PAGE = 5000
TZ = VIEWER_TZ
OFFLINE_AFTER = 90
LOAD_BEGIN, LOAD_END = "<!-- load:begin -->", "<!-- load:end -->"


# ---------------------------------------------------------------------------------------------
# Targets (issue 9); stated for 10 M jobs and 1,000 robots, checked at every size measured.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    key: str
    text: str
    limit_ms: float | None = None
    min_speedup: float | None = None  # naive / ours
    fix: str = ""


TARGETS = {t.key: t for t in [
    Target("overview", "Fleet overview refresh ≤ 30 ms (1,000 robots, 10 M jobs)", 30,
           fix="viewers already share one snapshot built every 2 s (data.snapshots), so this is the "
               "build's cost, not a viewer's; the KPI tiles' finished jobs come from the robots' rollup, "
               "what is left is summing its 24 hour rows per robot (fleet-wide hour rows would make it 24) "
               "and the robot grid's live statuses"),
    Target("history", "Job history: any page of any filter on an indexed column ≤ 100 ms", 100,
           fix="an index whose leading columns match the filter and the keyset order"),
    Target("search", "Text search in error messages ≤ 500 ms", 500,
           fix="a trigram GIN index on error_message where the server offers pg_trgm "
               "(not in the embedded server); without it the search already reads at most the newest "
               "100,000 jobs with an error message (data.jobs.SEARCH_SCAN_CAP), so a smaller bound"),
    Target("robots_list", "Robots list ≤ 150 ms", 150,
           fix="the 7-day work numbers already come from the per-robot rollup (data.robot_rollup); what "
               "is left is summing 7 days of hourly rows per robot: day rows for the whole days"),
    Target("robot_page", "Robot page (7-day window) ≤ 150 ms", 150,
           fix="hourly utilization from the robots' rollup (today: one robot's jobs found through a bitmap "
               "of every job finished in the window), heartbeat charts from a per-minute rollup"),
    Target("analytics_90d", "Analytics page, 90-day window ≤ 300 ms in total", 300,
           fix="the long-window sections read the rollups (see Accuracy), one read of the window's rows "
               "shared by the page's sections (data.cache.kept_read); what is left is the transfer of the "
               "histogram arrays (run durations and queue waits) and fleet utilization: a rollup of the "
               "default view without the environment and status split (about 40 % fewer bins)"),
    Target("analytics_naive", "Analytics page, 90-day window ≥ 20× faster than the naive pandas way",
           min_speedup=20, fix="the same work as the 300 ms target above (the naive page is fixed by the data)"),
]}


# ---------------------------------------------------------------------------------------------
# Discovery: which data functions the pages and routes call
# ---------------------------------------------------------------------------------------------
def _imports(src: str, pattern: str) -> list[tuple[str, str]]:
    """(module or package, names) of the import statements matching `pattern` (one line or
    parenthesised over several)."""
    found = []
    for m in re.finditer(rf"^\s*from ({pattern}) import (?:\(([^)]*)\)|([^(\n]+)$)", src, re.M):
        found.append((m.group(1), (m.group(2) or m.group(3) or "").replace("\n", " ")))
    return found


def _names(text: str) -> list[tuple[str, str]]:
    """'a, b as c' -> [('a', 'a'), ('b', 'c')] (imported name, local name)."""
    out = []
    for part in text.split(","):
        bits = [b.strip() for b in part.strip().split(" as ")]
        if bits[0] and not bits[0].startswith("#"):
            out.append((bits[0], bits[-1]))
    return out


def _calls_in(path: Path) -> set[tuple[str, str]]:
    src = path.read_text()
    aliases: dict[str, str] = {}
    direct: dict[str, tuple[str, str]] = {}
    for _, names in _imports(src, r"data"):
        for name, local in _names(names):
            aliases[local] = "data." + name
    for module, names in _imports(src, r"data\.\w+"):
        for name, local in _names(names):
            direct[local] = (module, name)
    calls = set()
    for alias, module in aliases.items():
        calls.update((module, name) for name in re.findall(rf"(?<![\w.]){re.escape(alias)}\.(\w+)\(", src))
    for local, (module, name) in direct.items():
        if re.search(rf"(?<![\w.]){re.escape(local)}\(", src):
            calls.add((module, name))
    return calls


def discover() -> dict[str, list[str]]:
    """Data functions (first parameter ``engine``) called from the pages and server routes:
    ``{"data.fleet.fleet_kpis": ["pages/overview.py", ...]}``."""
    found: dict[str, list[str]] = {}
    for pattern in CALLER_FILES:
        for path in sorted(PROJECT.glob(pattern)):
            for module, name in sorted(_calls_in(path)):
                if module in NOT_DATA_MODULES:
                    continue
                try:
                    fn = getattr(importlib.import_module(module), name)
                except (ImportError, AttributeError):
                    continue
                if isinstance(fn, type) or not callable(fn):
                    continue
                try:
                    params = list(inspect.signature(fn).parameters)
                except (TypeError, ValueError):
                    continue
                if params and params[0] == "engine":
                    found.setdefault(f"{module}.{name}", []).append(path.relative_to(PROJECT).as_posix())
    return found


def page_functions(module: str, path: str) -> list[str]:
    """Names of `module`'s data functions that `path` calls, in source order."""
    src = (PROJECT / path).read_text()
    alias = None
    for _, names in _imports(src, r"data"):
        for name, local in _names(names):
            if "data." + name == module:
                alias = local
    if alias is None:
        return []
    names: list[str] = []
    mod = importlib.import_module(module)
    for name in re.findall(rf"(?<![\w.]){re.escape(alias)}\.(\w+)\(", src):
        fn = getattr(mod, name, None)
        if fn is None or name in names or isinstance(fn, type):
            continue
        params = list(inspect.signature(fn).parameters)
        if params[:1] == ["engine"]:
            names.append(name)
    return names


# ---------------------------------------------------------------------------------------------
# What is measured
# ---------------------------------------------------------------------------------------------
@dataclass
class Case:
    label: str
    func: str                         # qualified name of the data function (coverage)
    ours: Callable[[], Any]
    raw: tuple[str, dict] | None = None
    naive: Callable | None = None     # picklable: called as naive(loader) in the worker
    target: str | None = None         # a target this case must meet on its own
    in_total: bool = True
    note: str = ""
    describe: Callable[[Any], str] | None = None  # a note from the function's answer (per size)
    times: list[float] = field(default_factory=list)
    error: str | None = None
    raw_times: list[float] = field(default_factory=list)
    raw_error: str | None = None
    naive_times: list[float] = field(default_factory=list)
    naive_error: str | None = None
    raw_reused: str | None = None     # when the reused plain-SQL timing was measured
    naive_reused: str | None = None   # when the reused naive timing was measured


@dataclass
class Group:
    name: str
    cases: list[Case]
    target: str | None = None         # a target for the page total
    total: bool = True                # report a page total (sum of in_total cases per pass)
    subtotals: dict[str, list[str]] = field(default_factory=dict)
    note: str = ""
    naive_page: bool = True           # also time the whole page the naive way (loads shared)
    passes: list[dict[str, float]] = field(default_factory=list)
    naive_page_times: list[float] = field(default_factory=list)
    naive_page_error: str | None = None
    naive_page_reused: str | None = None
    accuracy: Callable[[], list[dict]] | None = None  # rollup vs exact answers (analytics > 48 h)
    accuracy_rows: list[dict] = field(default_factory=list)


@dataclass
class Context:
    engine: Any
    url: str
    label: str
    jobs: int
    meta: dict
    data_now: datetime
    workflow: str
    robot: str
    environment: str
    error_type: str
    job_id: str
    username: str
    jti: str
    tz: str = TZ
    offline: int = OFFLINE_AFTER
    q_common: str = "timed out"
    q_rare: str = "cost centre 4100"
    q_none: str = "no such error text"


def _uncached(fn):
    return getattr(fn, "uncached", fn)


def _call(fn, *args, **kwargs) -> Callable[[], Any]:
    fn = _uncached(fn)
    return lambda: fn(*args, **kwargs)


def _qualified(fn) -> str:
    fn = _uncached(fn)
    return f"{fn.__module__}.{fn.__name__}"


def build_context(engine, url: str, label: str) -> Context:
    from data.errors import error_type_sql

    meta = read_meta(engine) or {}
    with engine.connect() as conn:
        q = lambda sql, **p: conn.execute(sa.text(sql), p).scalar()  # noqa: E731
        jobs = meta.get("jobs") or q("SELECT reltuples::bigint FROM pg_class WHERE relname = 'job_queue'")
        if not jobs or jobs < 0:
            jobs = q("SELECT count(*) FROM job_queue")
        demo = read_meta(engine, "demo") or {}
        now_text = meta.get("data_now") or demo.get("now")
        data_now = datetime.fromisoformat(now_text) if now_text else q("SELECT max(created_at) FROM job_queue")
        workflow = q("SELECT workflow_id FROM (SELECT workflow_id FROM job_queue ORDER BY created_at DESC LIMIT 20000) s "
                     "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")
        robot = q("SELECT s.robot_id FROM (SELECT robot_id FROM job_queue WHERE robot_id IS NOT NULL "
                  "ORDER BY created_at DESC LIMIT 20000) s JOIN robots r ON r.robot_id::text = s.robot_id "
                  "WHERE r.status <> 'maintenance' AND r.last_heartbeat IS NOT NULL "
                  "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")
        environment = q("SELECT environment FROM robots GROUP BY 1 ORDER BY count(*), 1 LIMIT 1") or "default"
        error_type = q(f"SELECT t FROM (SELECT {error_type_sql('error_message')} AS t FROM job_queue "
                       "WHERE status = 'failed' ORDER BY created_at DESC LIMIT 5000) s "
                       "WHERE t IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1") or "TimeoutError"
        job_id = str(q("SELECT id FROM job_queue WHERE status = 'failed' ORDER BY created_at DESC LIMIT 1 OFFSET 10"))
    username = "bench"
    from data.users import UserError, create_user

    try:
        create_user(engine, username, "bench-password-1", "viewer")
    except UserError:
        pass
    return Context(engine=engine, url=url, label=label, jobs=int(jobs), meta=meta,
                   data_now=data_now.astimezone(timezone.utc), workflow=workflow, robot=robot,
                   environment=environment, error_type=error_type, job_id=job_id, username=username,
                   jti="bench-" + label)


def deep_cursor(ctx: Context, filters, sort: str, page: int) -> tuple[str | None, int]:
    """The cursor that opens page `page` (or the deepest page there is), found with one
    keyset query for the last row of the page before it (setup; not timed)."""
    from data.jobs import encode_cursor, filter_sql

    where, params = filter_sql(filters, ctx.tz)
    if sort == "-duration":
        where = where + ["j.completed_at IS NOT NULL", "j.started_at IS NOT NULL"]
        keys, order = "(j.completed_at - j.started_at) AS k1, j.id AS k2", "(j.completed_at - j.started_at) DESC, j.id DESC"
    else:
        keys, order = "j.created_at AS k1, j.id AS k2", "j.created_at DESC, j.id DESC"
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    with ctx.engine.connect() as conn:
        conn.execute(sa.text("SET statement_timeout = 0"))
        cap = page * PAGE_SIZE
        n = conn.execute(sa.text(f"SELECT count(*) FROM (SELECT 1 FROM job_queue j {clause} LIMIT :cap) s"),
                         {**params, "cap": cap}).scalar()
        page = min(page, n // PAGE_SIZE)
        if page < 2:
            return None, 1
        row = conn.execute(sa.text(f"SELECT {keys} FROM job_queue j {clause} ORDER BY {order} OFFSET :off LIMIT 1"),
                           {**params, "off": (page - 1) * PAGE_SIZE - 1}).mappings().first()
    if row is None:
        return None, 1
    if sort == "-duration":
        td = row["k1"]
        first = td.days * 86_400_000_000 + td.seconds * 1_000_000 + td.microseconds
    else:
        first = row["k1"].isoformat()
    return encode_cursor(sort, 0, [first, str(row["k2"])]), page


def plan(ctx: Context) -> list[Group]:
    """Every page and endpoint, as the groups of cases the harness times."""
    from data import analytics as an
    from data import fleet, jobs, monitoring, queue
    from data import robots as rb

    e, tz, off = ctx.engine, ctx.tz, ctx.offline
    groups: list[Group] = []
    P = functools.partial

    # Fleet overview: the refresh callback (every 5 s; the series and the feed only when a job
    # changed or once a minute, so a light refresh is the first two).
    groups.append(Group("Fleet overview refresh", target="overview", subtotals={
        "light refresh (no job changed: KPIs and robot grid only)": ["fleet_kpis", "robot_statuses"]}, cases=[
        Case("fleet_kpis", _qualified(fleet.fleet_kpis), _call(fleet.fleet_kpis, e, tz, off),
             raw=raw.fleet_kpis(tz, off), naive=P(naive.fleet_kpis, tz=tz, offline_after=off)),
        Case("robot_statuses", _qualified(fleet.robot_statuses), _call(fleet.robot_statuses, e, off),
             raw=raw.robot_statuses(), naive=P(naive.robot_statuses, offline_after=off)),
        Case("queue_depth_series", _qualified(fleet.queue_depth_series), _call(fleet.queue_depth_series, e),
             raw=raw.queue_depth_series(), naive=P(naive.queue_depth_series)),
        Case("throughput_series", _qualified(fleet.throughput_series), _call(fleet.throughput_series, e),
             naive=P(naive.throughput_series)),
        Case("recent_job_changes", _qualified(fleet.recent_job_changes), _call(fleet.recent_job_changes, e),
             raw=raw.recent_job_changes(), naive=P(naive.recent_job_changes)),
    ], note="The refresh callback of pages/overview.py with every output redrawn (a job changed)."))

    groups.append(Group("Wall display refresh", cases=[
        Case("fleet_kpis", _qualified(fleet.fleet_kpis), _call(fleet.fleet_kpis, e, tz, off),
             naive=P(naive.fleet_kpis, tz=tz, offline_after=off)),
        Case("robot_statuses", _qualified(fleet.robot_statuses), _call(fleet.robot_statuses, e, off),
             naive=P(naive.robot_statuses, offline_after=off)),
        Case("queue_depth_series (3 h)", _qualified(fleet.queue_depth_series),
             _call(fleet.queue_depth_series, e, hours=3, step_minutes=5), naive=P(naive.queue_depth_series, hours=3)),
        Case("recent_failures", _qualified(fleet.recent_failures), _call(fleet.recent_failures, e, minutes=60),
             naive=P(naive.recent_failures)),
        Case("sla_breaches", _qualified(fleet.sla_breaches), _call(fleet.sla_breaches, e), naive=P(naive.sla_breaches)),
    ]))

    # Job history: each view's first and a deep page, its capped count and summary.
    start = ctx.data_now - timedelta(days=60)
    views = [
        ("all jobs", {}),
        ("status=failed", {"status": "failed"}),
        ("workflow=W", {"workflow": ctx.workflow}),
        ("robot=R", {"robot": ctx.robot}),
        ("environment=E", {"environment": ctx.environment}),
        ("range=24h", {"range": "24h"}),
        ("range=7d", {"range": "7d"}),
        ("custom 30 days, 2 months back", {"range": "custom", "from": start.isoformat(),
                                           "to": (start + timedelta(days=30)).isoformat()}),
        ("error_type=T", {"error_type": ctx.error_type}),
        ("workflow=W + status=failed + range=30d", {"workflow": ctx.workflow, "status": "failed", "range": "30d"}),
    ]
    history: list[Case] = []
    summaries: list[Case] = []
    for label, query in views:
        filters, problems = jobs.parse_filters(query)
        assert not problems, problems
        history.append(Case(f"list_jobs · {label} · page 1", _qualified(jobs.list_jobs),
                            _call(jobs.list_jobs, e, filters, tz), raw=raw.job_page(filters, tz, 1),
                            naive=P(naive.job_page, filters=filters, tz=tz, page=1), target="history"))
        cursor, page = deep_cursor(ctx, filters, "-created", DEEP_PAGE)
        if cursor:
            history.append(Case(f"list_jobs · {label} · deep page", _qualified(jobs.list_jobs),
                                _call(jobs.list_jobs, e, filters, tz, after=cursor), raw=raw.job_page(filters, tz, page),
                                naive=P(naive.job_page, filters=filters, tz=tz, page=page), target="history",
                                note=f"p. {page:,}"))
        summaries.append(Case(f"count_jobs · {label}", _qualified(jobs.count_jobs), _call(jobs.count_jobs, e, filters, tz),
                              raw=raw.job_count(filters, tz), naive=P(naive.job_count, filters=filters, tz=tz)))
        summaries.append(Case(f"job_summary · {label}", _qualified(jobs.job_summary),
                              _call(jobs.job_summary, e, filters, tz), raw=raw.job_summary(filters, tz),
                              naive=P(naive.job_summary, filters=filters, tz=tz)))
    no_filter = jobs.JobFilters()
    history.append(Case("list_jobs · all jobs, longest first · page 1", _qualified(jobs.list_jobs),
                        _call(jobs.list_jobs, e, no_filter, tz, sort="-duration"),
                        raw=raw.job_page(no_filter, tz, 1, sort="-duration"),
                        naive=P(naive.job_page, filters=no_filter, tz=tz, page=1, sort="-duration"), target="history"))
    cursor, page = deep_cursor(ctx, no_filter, "-duration", DEEP_PAGE)
    if cursor:
        history.append(Case("list_jobs · all jobs, longest first · deep page", _qualified(jobs.list_jobs),
                            _call(jobs.list_jobs, e, no_filter, tz, sort="-duration", after=cursor),
                            raw=raw.job_page(no_filter, tz, page, sort="-duration"),
                            naive=P(naive.job_page, filters=no_filter, tz=tz, page=page, sort="-duration"),
                            target="history", note=f"p. {page:,}"))
    groups.append(Group("Job history pages", cases=history, total=False, naive_page=False,
                        note=f"Page size {PAGE_SIZE}, newest first unless stated; a deep page is page "
                             f"{DEEP_PAGE:,} or the last page of a smaller set (the page reached is given per "
                             "size), opened by its keyset cursor. W, R, E, T: see Data."))

    # Text search: what it reads is bounded (data.jobs.search_scope); the naive way is given the
    # same jobs (the scope's `since`), and each row says what was read, from the answer's `search`.
    searches = []
    describe = functools.partial(describe_search, data_now=ctx.data_now)
    for label, query in [(f"q={ctx.q_common!r}", {"q": ctx.q_common}), (f"q={ctx.q_rare!r}", {"q": ctx.q_rare}),
                         (f"q={ctx.q_none!r} (no match)", {"q": ctx.q_none}),
                         (f"q={ctx.q_rare!r} + range=7d", {"q": ctx.q_rare, "range": "7d"})]:
        filters, _ = jobs.parse_filters(query)
        scope = jobs.search_scope(e, filters, tz)
        since = scope.get("since") if scope else None
        searches.append(Case(f"list_jobs · {label} · page 1", _qualified(jobs.list_jobs),
                             _call(jobs.list_jobs, e, filters, tz),
                             naive=P(naive.job_search_page, filters=filters, tz=tz, search_since=since),
                             target="search", describe=describe))
        searches.append(Case(f"count_jobs · {label}", _qualified(jobs.count_jobs), _call(jobs.count_jobs, e, filters, tz),
                             naive=P(naive.job_count, filters=filters, tz=tz, search_since=since)))
        searches.append(Case(f"job_summary · {label}", _qualified(jobs.job_summary),
                             _call(jobs.job_summary, e, filters, tz),
                             naive=P(naive.job_summary, filters=filters, tz=tz, search_since=since)))
    groups.append(Group("Job history text search", cases=searches, total=False, naive_page=False,
                        note="Without a trigram index (pg_trgm) a search reads the messages of at most the newest "
                             f"{jobs.SEARCH_SCAN_CAP:,} jobs with an error message in the time range; what the "
                             "search read is given per size (the answer's `search` entry). The naive way searches "
                             "the same jobs. The count and the summary are the callback beside the grid (no target)."))

    groups.append(Group("Job history counts and summary", cases=summaries, total=False, naive_page=False,
                        note="The count/summary callback beside the grid (no target in issue 9): counts stop at "
                             f"{jobs.COUNT_CAP:,}, the summary covers the newest {jobs.SUMMARY_CAP:,} jobs."))

    groups.append(Group("Job history filter choices (page layout)", cases=[
        Case("workflow_options", _qualified(jobs.workflow_options), _call(jobs.workflow_options, e),
             raw=raw.distinct("workflow_id"), naive=P(naive.workflow_options)),
        Case("robot_options", _qualified(jobs.robot_options), _call(jobs.robot_options, e),
             raw=raw.distinct("robot_id"), naive=P(naive.robot_options)),
        Case("environment_options", _qualified(jobs.environment_options), _call(jobs.environment_options, e),
             raw=raw.distinct("environment"), naive=P(naive.environment_options)),
        Case("error_type_options", _qualified(jobs.error_type_options), _call(jobs.error_type_options, e),
             naive=P(naive.error_type_options)),
    ], naive_page=False))

    def export():
        rows = 0
        for chunk in jobs.iter_jobs(e, no_filter, tz, cap=jobs.EXPORT_ROW_CAP):
            rows += len(chunk)
        return rows

    from data import actions, users

    job_page = [Case("job_story (a failed job)", _qualified(jobs.job_story), _call(jobs.job_story, e, ctx.job_id),
                     naive=P(naive.job_story, job_id=ctx.job_id))]
    if hasattr(actions, "audit_history"):
        job_page.append(Case("audit_history (the job's operator actions)", _qualified(actions.audit_history),
                             _call(actions.audit_history, e, "job", ctx.job_id)))
    groups.append(Group("Job page and CSV export", total=False, naive_page=False, cases=job_page + [
        Case(f"iter_jobs · CSV export of {jobs.EXPORT_ROW_CAP:,} rows", _qualified(jobs.iter_jobs), export,
             note="server/export.py streams it in chunks"),
    ]))

    # Robots
    stats = rb.robot_work_stats(e, tz) if hasattr(rb, "robot_work_stats") else None
    list_kwargs = {"stats": stats} if stats is not None else {}
    robots_cases = []
    if hasattr(rb, "robot_work_stats"):
        # The page calls cached_robot_work_stats (a minute in the app's cache); outside an app it
        # computes robot_work_stats, i.e. what a cold cache costs.
        work = getattr(rb, "cached_robot_work_stats", rb.robot_work_stats)
        robots_cases.append(Case("cached_robot_work_stats, cache cold (7 days of work, once a minute)",
                                 _qualified(work), _call(work, e, tz),
                                 raw=raw.robot_work_stats(tz), naive=P(naive.robot_list, tz=tz, offline_after=off)))
    robots_cases += [
        Case("robot_list (live part, every refresh)", _qualified(rb.robot_list),
             _call(rb.robot_list, e, tz, off, **list_kwargs), naive=P(naive.robot_list, tz=tz, offline_after=off)),
        Case("robot_list · status=busy, sort -utilization_24h", _qualified(rb.robot_list),
             _call(rb.robot_list, e, tz, off, status="busy", sort="-utilization_24h", **list_kwargs),
             target="robots_list", in_total=False),
        Case("robot_list without cached stats (REST /metrics/robots)", _qualified(rb.robot_list),
             _call(rb.robot_list, e, tz, off), target="robots_list", in_total=False,
             naive=P(naive.robot_list, tz=tz, offline_after=off)),
        Case("robot_filter_options (page layout)", _qualified(rb.robot_filter_options),
             _call(rb.robot_filter_options, e), in_total=False),
    ]
    groups.append(Group("Robots list", target="robots_list", cases=robots_cases,
                        note="Total = the list callback with its minute-long work cache cold. The work numbers "
                             + robot_rollup_note(e, tz) + "."))

    r0, r1 = ctx.data_now - timedelta(days=7), ctx.data_now
    rid = ctx.robot
    robot_cases = [
        Case("robot_detail (header, layout)", _qualified(rb.robot_detail), _call(rb.robot_detail, e, rid, off)),
        Case("has_heartbeat_history", _qualified(rb.has_heartbeat_history), _call(rb.has_heartbeat_history, e, rid)),
        Case("status_timeline", _qualified(rb.status_timeline), _call(rb.status_timeline, e, rid, r0, r1, off),
             raw=raw.heartbeat_rows(rid, r0, r1)),
        Case("metric_series", _qualified(rb.metric_series), _call(rb.metric_series, e, rid, r0, r1),
             raw=raw.heartbeat_series(rid, r0, r1)),
        Case("hourly_utilization", _qualified(rb.hourly_utilization), _call(rb.hourly_utilization, e, [rid], r0, r1, tz)),
    ]
    robot_page_src = (PROJECT / "pages/robot.py").read_text()
    if "utilization_by_hour_of_week(" in robot_page_src:
        robot_cases.append(Case("utilization_by_hour_of_week", _qualified(rb.utilization_by_hour_of_week),
                                _call(rb.utilization_by_hour_of_week, e, [rid], r0, r1, tz)))
    robot_cases += [
        Case("robot_job_counts", _qualified(rb.robot_job_counts), _call(rb.robot_job_counts, e, rid, r0, r1),
             raw=raw.robot_jobs(rid, r0, r1)),
        Case("robot_error_types", _qualified(rb.robot_error_types), _call(rb.robot_error_types, e, rid, r0, r1)),
        Case("robot_workflow_durations", _qualified(rb.robot_workflow_durations),
             _call(rb.robot_workflow_durations, e, rid, r0, r1)),
        Case("robot_latest_jobs", _qualified(rb.robot_latest_jobs), _call(rb.robot_latest_jobs, e, rid)),
    ]
    robot_cases[0].naive = P(naive.robot_page, robot_id=rid, start=r0, end=r1, tz=tz, offline_after=off)
    groups.append(Group("Robot page (7 days, robot R)", target="robot_page", cases=robot_cases, naive_page=False,
                        note="Naive: the robot's heartbeats and jobs of the window loaded and every chart computed "
                             "in pandas (shown on the first row)."))

    # Analytics: every data function the page calls, for 7 (the page's default), 30 and 90 days.
    names = page_functions("data.analytics", "pages/analytics.py")
    for days, target in ((7, None), (30, None), (90, "analytics_90d")):
        f, problems = an.parse_filters({"range": f"{days}d"}, default_tz=tz, now=ctx.data_now)
        cases = []
        for name in names:
            fn = getattr(an, name)
            args = (e, f) if list(inspect.signature(fn).parameters)[1:2] == ["f"] else (e,)
            # The page asks a moment after its window ends (weekly_throughput's "now"): the data's now.
            at = {"now": ctx.data_now} if "now" in inspect.signature(fn).parameters else {}
            cases.append(Case(name, _qualified(fn), _call(fn, *args, **at),
                              raw=raw.ANALYTICS[name](f) if name in raw.ANALYTICS else None,
                              naive=P(naive.analytics_function, name=name, f=f) if naive.has_analytics(name) else None))
        default = " — the page's default view" if f"{days}d" == an.DEFAULT_RANGE else ""
        long_window = f.end - f.start > ROLLUP_MIN_WINDOW
        groups.append(Group(f"Analytics page, {days} days (bucket {f.bucket}){default}", target=target, cases=cases,
                            note="Naive page: the window's rows loaded once, every section computed in pandas."
                                 + (" Windows over 48 hours read the rollups when they are current (see Accuracy)."
                                    if long_window else ""),
                            accuracy=functools.partial(rollup_accuracy, e, f) if long_window else None))

    # The same 90 days seen from a zone whose days are not the rollups' (they keep VIEWER_TZ's).
    other = "America/New_York"
    f, _ = an.parse_filters({"range": "90d"}, default_tz=other, now=ctx.data_now)
    groups.append(Group(f"Analytics page, 90 days (bucket {f.bucket}), viewer in {other}", naive_page=False,
                        note=f"The rollups keep the days and weeks of {TZ} (FLEET_ROLLUP_TIMEZONE): a viewer "
                             f"elsewhere reads hour rows where a local day does not hold whole {TZ} days.",
                        cases=[Case(name, _qualified(getattr(an, name)), _call(getattr(an, name), e, f))
                               for name in names if list(inspect.signature(getattr(an, name)).parameters)[1:2] == ["f"]]))

    # REST API and Prometheus (what their routes call beyond the pages' functions)
    api_names = [n for n in page_functions("data.analytics", "server/api.py")]
    f30, _ = an.parse_filters({"range": "30d"}, default_tz="UTC", now=ctx.data_now)
    groups.append(Group("REST API /metrics/analytics (30 days)", cases=[
        Case(name, _qualified(getattr(an, name)), _call(getattr(an, name), e, f30),
             naive=P(naive.analytics_function, name=name, f=f30) if naive.has_analytics(name) else None)
        for name in api_names]))
    day_ago = ctx.data_now - timedelta(hours=24)
    groups.append(Group("REST API /metrics/robots/<id>", naive_page=False, cases=[
        Case("robot_detail", _qualified(rb.robot_detail), _call(rb.robot_detail, e, rid, off)),
        Case("robot_job_counts (24 h)", _qualified(rb.robot_job_counts), _call(rb.robot_job_counts, e, rid, day_ago, r1)),
        Case("robot_latest_jobs", _qualified(rb.robot_latest_jobs), _call(rb.robot_latest_jobs, e, rid, 20)),
    ]))

    def scrape_advance():
        return monitoring.advance_run_totals(e)

    scrape = [
        Case("robot_status_counts", _qualified(monitoring.robot_status_counts),
             _call(monitoring.robot_status_counts, e, off)),
        Case("queue_breakdown (also REST /metrics/queue)", _qualified(queue.queue_breakdown),
             _call(queue.queue_breakdown, e), naive=P(naive.queue_breakdown)),
        Case("advance_run_totals (rollup step)", _qualified(monitoring.advance_run_totals), scrape_advance),
        Case("run_totals", _qualified(monitoring.run_totals), _call(monitoring.run_totals, e)),
    ]
    from data import rollups

    scrape.append(Case("covered_until (rollup freshness gauge)", _qualified(rollups.covered_until),
                       _call(rollups.covered_until, e)))
    if hasattr(monitoring, "readiness"):
        scrape.append(Case("readiness (/ready)", _qualified(monitoring.readiness), _call(monitoring.readiness, e),
                           in_total=False))
    groups.append(Group("Prometheus scrape (/metrics)", cases=scrape, naive_page=False))

    admin = [Case("session_role (sign-in check on every request)", _qualified(users.session_role),
                  _call(users.session_role, e, ctx.username, ctx.jti, None), in_total=False)]
    for fn in (users.list_users, users.list_display_tokens, actions.audit_list):
        admin.append(Case(fn.__name__, _qualified(fn), _call(fn, e)))
    groups.append(Group("Admin page and every request", cases=admin, naive_page=False))
    return groups


def describe_search(answer, data_now: datetime) -> str:
    """What a text search read, from the `search` entry of list_jobs' answer."""
    search = answer.get("search") if isinstance(answer, dict) else None
    if not search:
        return "no search scope in the answer"
    if search.get("method") == "trigram index":
        return "every message in the range (trigram index)"
    cap = search.get("cap")
    if search.get("complete") or search.get("since") is None:
        return f"every job with a message in the range (fewer than {cap:,})" if cap else "every job in the range"
    since = search["since"].astimezone(timezone.utc)
    days = (data_now - since).total_seconds() / 86400
    return f"the newest {cap:,} jobs with a message: created since {since:%Y-%m-%d %H:%M} UTC ({days:.1f} days of data)"


def robot_rollup_note(engine, tz: str) -> str:
    """Where robot_work_stats reads from right now (data.robot_rollup when it is fresh)."""
    try:
        from data import robot_rollup
        from data import robots as rb

        frame = robot_rollup.work_stats(engine, tz, getattr(rb, "MAX_ROBOTS", 1000))
    except Exception as exc:  # noqa: BLE001
        return f"could not be located ({_error_text(exc)})"
    if frame is None:
        return "come from the raw job rows (the robots' rollup is missing or older than 6 h)"
    return "come from the per-robot hourly rollup (data.robot_rollup), refreshed before the run"


# ---------------------------------------------------------------------------------------------
# Accuracy of the rollups: the same analytics computed exactly (data.rollups.exact_only)
# ---------------------------------------------------------------------------------------------
ROLLUP_MIN_WINDOW = timedelta(hours=48)
_PCT = (50, 90, 95, 99)
_DUR_P = [f"p{p}_duration_ms" for p in _PCT]
_WAIT_P = [f"p{p}_queue_wait_ms" for p in _PCT]


def _key_text(frame, keys: list[str]):
    import pandas as pd

    frame = frame.copy()
    for k in keys:
        col = frame[k]
        if pd.api.types.is_datetime64_any_dtype(col) or (len(col) and isinstance(col.iloc[0], datetime)):
            col = pd.to_datetime(col, utc=True).dt.strftime("%Y-%m-%d %H:%M")
        frame[k] = col.astype(str)
    return frame


def compare_answers(approx, exact, keys: list[str], pcols: list[str], ccols: list[str]) -> dict:
    """Max relative difference of the percentile columns `pcols` (values of at least 1 ms; the
    rollups' error below 1 ms is absolute) and whether the count columns `ccols` are identical,
    row by row on `keys`."""
    import pandas as pd

    m = _key_text(approx, keys).merge(_key_text(exact, keys), on=keys, how="outer", suffixes=("_r", "_x"),
                                       indicator=True)
    problems = []
    one_side = int((m["_merge"] != "both").sum())
    if one_side:
        problems.append(f"{one_side} row(s) on one side only")
    for c in ccols:
        if f"{c}_r" not in m:
            continue
        r, x = pd.to_numeric(m[f"{c}_r"], errors="coerce"), pd.to_numeric(m[f"{c}_x"], errors="coerce")
        bad = ~((r == x) | (r.isna() & x.isna()))
        if bad.any():
            problems.append(f"{c} differs in {int(bad.sum())} row(s)")
    worst, where, values, small = 0.0, "", 0, 0
    for c in pcols:
        if f"{c}_r" not in m:
            continue
        r, x = pd.to_numeric(m[f"{c}_r"], errors="coerce"), pd.to_numeric(m[f"{c}_x"], errors="coerce")
        present = r.notna() & x.notna()
        lonely = r.notna() ^ x.notna()
        if lonely.any():
            problems.append(f"{c} present on one side only in {int(lonely.sum())} row(s)")
        big = present & (x.abs() >= 1.0)
        small += int((present & ~big).sum())
        values += int(big.sum())
        rel = ((r - x).abs() / x.abs())[big]
        if len(rel) and float(rel.max()) >= worst:
            i = rel.idxmax()
            worst = float(rel.max())
            where = f"{c} of {' / '.join(str(m.loc[i, k]) for k in keys)} ({r[i]:,.0f} vs {x[i]:,.0f} ms)"
    return {"values": values, "max_rel": worst, "where": where, "below_1ms": small,
            "counts_identical": not problems, "count_problems": problems}


def rollup_accuracy(engine, f) -> list[dict]:
    """duration_percentiles (fleet and per workflow), time_series and workflow_stats: the rollups'
    answer against the exact one, and the time of each path (one call each, warm)."""
    import pandas as pd

    from data import analytics as an
    from data import rollups

    def both(fn):
        fn = _uncached(fn)
        began = time.perf_counter()
        approx = fn(engine, f)
        rolled_ms = (time.perf_counter() - began) * 1000
        with rollups.exact_only():
            began = time.perf_counter()
            exact = fn(engine, f)
            exact_ms = (time.perf_counter() - began) * 1000
        return approx, exact, rolled_ms, exact_ms

    rows = []
    counts = ["total_jobs", "completed_jobs", "failed_jobs", "cancelled_jobs", "timed_jobs"]
    a, x, r_ms, x_ms = both(an.duration_percentiles)
    used = a.get("exact") is False
    fleet = lambda d: pd.DataFrame([{**d["fleet"], "workflow_id": "fleet"}])  # noqa: E731
    for label, frames, pcols in [
            ("fleet: run duration P50/P90/P95/P99", (fleet(a), fleet(x)), _DUR_P),
            ("per workflow: run duration P50/P90/P95/P99", (a["workflows"], x["workflows"]), _DUR_P),
            ("fleet and per workflow: queue wait P50/P90/P95/P99",
             (pd.concat([fleet(a), a["workflows"]]), pd.concat([fleet(x), x["workflows"]])), _WAIT_P)]:
        rows.append({"function": "duration_percentiles", "columns": label, "rollup": used,
                     **compare_answers(*frames, ["workflow_id"], pcols, counts),
                     "rollup_ms": r_ms, "exact_ms": x_ms})
        r_ms = x_ms = None  # the timing once per function
    a, x, r_ms, x_ms = both(an.time_series)
    rows.append({"function": "time_series", "columns": f"P50/P95 per {f.bucket}", "rollup": a.attrs.get("exact") is False,
                 **compare_answers(a, x, ["bucket"], ["p50_duration_ms", "p95_duration_ms"],
                                   ["total_jobs", "completed", "failed", "cancelled", "timed_jobs"]),
                 "rollup_ms": r_ms, "exact_ms": x_ms})
    a, x, r_ms, x_ms = both(an.workflow_stats)
    rows.append({"function": "workflow_stats", "columns": "P95 per workflow", "rollup": a.attrs.get("exact") is False,
                 **compare_answers(a, x, ["workflow_id"], ["p95_duration_ms"],
                                   ["executions", "completed", "failed", "timed_jobs", "error_types",
                                    "healing_attempts", "healing_successes"]),
                 "rollup_ms": r_ms, "exact_ms": x_ms})
    return rows


# ---------------------------------------------------------------------------------------------
# Reusing the naive and plain-SQL timings of an earlier run of the same build
# ---------------------------------------------------------------------------------------------
_BUILD_KEYS = ("built_at", "jobs", "robots", "seed", "days", "data_now")
# Bumped for a page when its naive or plain-SQL questions change, so older timings are not reused
# (2: the text search's naive way reads the same bounded set of jobs as the app's search).
BASELINE_REVISION = {"Job history text search": 2}


def build_identity(meta: dict | None) -> dict | None:
    """What identifies a database build (None when the database has no build record)."""
    if not meta or not meta.get("built_at"):
        return None
    return {k: meta.get(k) for k in _BUILD_KEYS}


def _old_labels(text: str, ctx: Context) -> str:
    """A label of an older results file in today's form (the chosen workflow, robot,
    environment and error type were spelled out; a deep page was numbered)."""
    for name, value in (("workflow", ctx.workflow), ("robot", ctx.robot), ("environment", ctx.environment),
                        ("error_type", ctx.error_type)):
        text = text.replace(f"{name}={value}", f"{name}={name[0].upper() if name != 'error_type' else 'T'}")
    text = text.replace(f"(7 days, {ctx.robot})", "(7 days, robot R)")
    text = text.replace("workflow + status=failed + range=30d", "workflow=W + status=failed + range=30d")
    return re.sub(r"· page (?!1$)[\d,]+$", "· deep page", text)


def load_baselines(path: Path, ctx: Context) -> tuple[dict | None, str]:
    """The previous results of this size, when they come from the same database build; else
    (None, why not)."""
    if not path.exists():
        return None, f"no earlier results ({path.name})"
    try:
        prev = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"{path.name} unreadable ({exc})"
    mine, theirs = build_identity(ctx.meta), build_identity(prev.get("meta"))
    if mine is None:
        return None, "the database has no build record (bench.build)"
    if mine != theirs:
        return None, f"{path.name} is of another build (built {(theirs or {}).get('built_at')})"
    return prev, ""


def reuse_baselines(groups: list[Group], prev: dict, ctx: Context) -> dict:
    """Copy naive and raw timings of cases whose label (and page) match; returns counts."""
    measured_at = prev.get("measured_at")
    old = {}
    for g in prev.get("groups", []):
        gname = _old_labels(g["name"], ctx)
        if g.get("baseline_revision", 1) != BASELINE_REVISION.get(gname, 1):
            continue  # its questions changed since: measured anew
        old[gname] = g
        for c in g.get("cases", []):
            old[(gname, _old_labels(c["label"], ctx))] = c
    # The naive worker's peak in the run(s) that measured the reused timings.
    rss = [x for x in (prev.get("naive_rss_mb"), (prev.get("reuse") or {}).get("naive_rss_mb")) if x]
    done = {"raw": 0, "naive": 0, "pages": 0, "new": [], "measured_at": measured_at,
            "naive_rss_mb": max(rss) if rss else None, "when": {}}
    for group in groups:
        for case in group.cases:
            c = old.get((group.name, case.label))
            if c is None:
                if case.raw or case.naive:
                    done["new"].append(f"{group.name} · {case.label}")
                continue
            if case.raw is not None and (c.get("raw_ms") is not None or c.get("raw_error")):
                case.raw_times = list(c.get("raw_times") or ([c["raw_ms"]] if c.get("raw_ms") is not None else []))
                case.raw_error = c.get("raw_error")
                case.raw_reused = c.get("raw_measured_at") or measured_at
                done["raw"] += 1
            if case.naive is not None and (c.get("naive_ms") is not None or c.get("naive_error")):
                case.naive_times = list(c.get("naive_times") or ([c["naive_ms"]] if c.get("naive_ms") is not None else []))
                case.naive_error = c.get("naive_error")
                case.naive_reused = c.get("naive_measured_at") or measured_at
                done["naive"] += 1
        g = old.get(group.name)
        for case in group.cases:
            for when in {case.raw_reused, case.naive_reused} - {None}:
                done["when"][_when(when)] = done["when"].get(_when(when), 0) + 1
        if g is not None and group.total and group.naive_page and (g.get("naive_page_ms") is not None):
            members = sorted(c.label for c in group.cases if c.naive is not None and c.in_total)
            before = g.get("naive_page_members")
            reused = all(c.naive_reused for c in group.cases if c.naive is not None and c.in_total)
            if (sorted(before) == members) if before is not None else reused:
                group.naive_page_times = list(g.get("naive_page_times") or [g["naive_page_ms"]])
                group.naive_page_reused = g.get("naive_page_measured_at") or measured_at
                done["pages"] += 1
    return done


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------
def _error_text(exc: BaseException) -> str:
    orig = getattr(exc, "orig", exc)
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return f"{type(orig).__name__}: {text[:160]}"


def measure_ours(groups: list[Group], repeat: int) -> None:
    for group in groups:
        log.info("ours: %s", group.name)
        for n in range(repeat + 1):  # the first pass warms the caches and is not counted
            # Each pass is a fresh page load: what one section read and kept for the page's
            # other sections (data.cache.kept_read) is not there yet.
            forget_kept_reads()
            times: dict[str, float] = {}
            for case in group.cases:
                if case.error or (case.times and case.times[0] > SLOW_OURS_MS):
                    continue  # a very slow function is timed once
                began = time.perf_counter()
                try:
                    answer = case.ours()
                except Exception as exc:  # noqa: BLE001 - shown in RESULTS.md
                    case.error = _error_text(exc)
                    log.warning("%s: %s", case.label, case.error)
                    continue
                ms = (time.perf_counter() - began) * 1000.0
                if case.describe is not None and not n:
                    case.note = case.describe(answer)
                if n:
                    case.times.append(ms)
                    times[case.label] = ms
            if n:
                group.passes.append(times)


def measure_accuracy(groups: list[Group]) -> None:
    """The rollups' answers against the exact ones (analytics windows over 48 hours)."""
    for group in groups:
        if group.accuracy is None:
            continue
        log.info("accuracy: %s", group.name)
        try:
            group.accuracy_rows = group.accuracy()
        except Exception as exc:  # noqa: BLE001 - shown in RESULTS.md
            group.accuracy_rows = [{"function": "(all)", "columns": "", "error": _error_text(exc)}]
            log.warning("accuracy of %s: %s", group.name, _error_text(exc))


def measure_raw(engine, groups: list[Group], repeat: int) -> None:
    for group in groups:
        for case in group.cases:
            if case.raw is None or case.raw_reused:
                continue
            sql, params = case.raw
            spent = 0.0
            for _ in range(max(1, repeat)):
                began = time.perf_counter()
                try:
                    with engine.connect() as conn, conn.begin():
                        conn.execute(sa.text(f"SET LOCAL statement_timeout = {RAW_TIMEOUT_MS}"))
                        conn.execute(sa.text(sql), params).fetchall()
                except sa.exc.OperationalError as exc:
                    case.raw_error = (f"> {RAW_TIMEOUT_MS / 1000:.0f} s (cancelled)"
                                      if "statement timeout" in str(exc) else _error_text(exc))
                    break
                except Exception as exc:  # noqa: BLE001
                    case.raw_error = _error_text(exc)
                    break
                elapsed = time.perf_counter() - began
                case.raw_times.append(elapsed * 1000.0)
                spent += elapsed
                if spent > RAW_BUDGET_S:
                    break


class NaiveWorker:
    """The naive computations run here, in a process of their own."""

    def __init__(self, url: str):
        self.url = url
        self._start()

    def _start(self):
        ctx = multiprocessing.get_context("spawn")
        self.pool = ctx.Pool(1, initializer=naive.init_worker, initargs=(self.url,))
        self.peak_rss_mb = 0.0

    def run(self, fn, group: str, repeat: int) -> dict:
        try:
            result = self.pool.apply_async(naive.run, (fn, group, repeat)).get(timeout=NAIVE_TIMEOUT_S)
        except multiprocessing.TimeoutError:
            self.pool.terminate()
            self._start()
            return {"times_ms": [], "error": f"> {NAIVE_TIMEOUT_S} s (stopped)", "peak_rss_mb": 0.0}
        self.peak_rss_mb = max(self.peak_rss_mb, result["peak_rss_mb"])
        return result

    def close(self):
        self.pool.terminate()


def measure_naive(url: str, groups: list[Group], repeat: int) -> float:
    worker = NaiveWorker(url)
    try:
        for group in groups:
            log.info("naive: %s", group.name)
            for case in group.cases:
                if case.naive is None or case.naive_reused:
                    continue
                result = worker.run(case.naive, group.name, repeat)
                case.naive_times, case.naive_error = result["times_ms"], result["error"]
            page = [c.naive for c in group.cases if c.naive is not None and c.in_total]
            if group.total and group.naive_page and page and not group.naive_page_reused:
                result = worker.run(functools.partial(naive_page, fns=page), group.name + " (page)", repeat)
                group.naive_page_times, group.naive_page_error = result["times_ms"], result["error"]
        return worker.peak_rss_mb
    finally:
        worker.close()


def naive_page(loader, fns) -> None:
    """All of a page's naive functions from one set of loads (loads shared, charged once)."""
    loader.start_group(object())  # a fresh cache: this page loads its rows itself
    charged = loader.charged
    for fn in fns:
        fn(loader)
    loader.charged = charged


# ---------------------------------------------------------------------------------------------
# One size
# ---------------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(url: str, label: str, repeat: int, with_naive: bool = True, with_raw: bool = True,
            only: str | None = None, baselines: Path | None = None, rebuild_rollups: bool = False) -> dict:
    """Measure one database. `baselines`: the previous results file of this size, whose naive and
    plain-SQL timings are reused when it comes from the same build."""
    # The rollups follow the database's now(): bring them up to date before anything is timed.
    log.info("%s: bringing the rollups up to date%s", label, " (rebuilt from scratch)" if rebuild_rollups else "")
    rollup_record = maintain_rollups(url, rebuild=rebuild_rollups)
    engine = make_engine(url, statement_timeout_ms=OURS_TIMEOUT_MS)
    try:
        ctx = build_context(engine, url, label)
        groups = plan(ctx)
        if only:
            groups = [g for g in groups if only.lower() in g.name.lower()]
        reuse = None
        if baselines is not None:
            prev, why = load_baselines(baselines, ctx)
            reuse = reuse_baselines(groups, prev, ctx) if prev else {"not_reused": why}
            log.info("%s: baselines %s", label, reuse if prev else why)
        began = time.perf_counter()
        freeze_startup_objects()   # as the app's workers do once started (gunicorn.conf.py)
        measure_ours(groups, repeat)
        rss = peak_rss_mb()
        measure_accuracy(groups)
        if with_raw:
            measure_raw(engine, groups, repeat)
        naive_rss = measure_naive(url, groups, repeat) if with_naive else None
        facts = server_facts(engine)
        with engine.connect() as conn:
            counts = conn.execute(sa.text(
                "SELECT (SELECT count(*) FROM robots) AS robots, "
                "(SELECT reltuples::bigint FROM pg_class WHERE relname = 'robot_heartbeats') AS heartbeats, "
                "(SELECT count(*) FROM robot_heartbeats WHERE \"timestamp\" >= CAST(:n AS timestamptz) - interval '24 hours') "
                "AS heartbeats_24h, pg_database_size(current_database()) AS db_bytes"), {"n": ctx.data_now}).mappings().one()
        return {"label": label, "jobs": ctx.jobs, "meta": ctx.meta, "groups": groups, "ctx": ctx,
                "rss_mb": rss, "naive_rss_mb": naive_rss, "seconds": time.perf_counter() - began,
                "server": facts, "counts": dict(counts), "repeat": repeat, "rollups": rollup_record,
                "reuse": reuse, "measured_at": datetime.now(timezone.utc)}
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def group_total(group: Group, labels: list[str] | None = None) -> float | None:
    """Median of the per-pass sums; the sum of the medians when a function was timed once."""
    wanted = labels if labels is not None else [c.label for c in group.cases if c.in_total]
    sums = []
    for times in group.passes:
        if all(label in times for label in wanted):
            sums.append(sum(times[label] for label in wanted))
    if sums:
        return med(sums)
    cases = {c.label: c for c in group.cases}
    medians = [med(cases[label].times) for label in wanted if label in cases]
    return None if not medians or None in medians else sum(medians)


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def fmt_ratio(ours: float | None, other: float | None) -> str:
    if ours is None or other is None or other <= 0:
        return "—"
    r = ours / other
    if r >= 10:
        return f"{r:,.0f}"
    if r >= 0.1:
        return f"{r:.2f}"
    return f"{r:.3f}" if r >= 0.001 else f"{r:.1e}"


def _cell_other(times: list[float], error: str | None) -> str:
    if error:
        return error if error.startswith(">") else f"error ({error})"
    return fmt_ms(med(times))


def _machine() -> dict:
    import pandas

    mem = None
    try:
        with open("/proc/meminfo") as fh:
            mem = int(fh.readline().split()[1]) / 1024 / 1024
    except OSError:
        pass
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cores": os.cpu_count(), "ram_gb": mem, "cpu": cpu, "load": os.getloadavg(),
            "python": platform.python_version(), "pandas": pandas.__version__}


def evaluate(results: list[dict]) -> list[dict]:
    """Each target at each size: measured, met or missed."""
    rows = []
    for res in results:
        for group in res["groups"]:
            if group.target:
                t = TARGETS[group.target]
                total = group_total(group)
                rows.append({"target": t, "size": res["label"], "what": group.name + " · total",
                             "value": total, "met": total is not None and total <= t.limit_ms})
                if group.target == "analytics_90d":
                    t2 = TARGETS["analytics_naive"]
                    naive_total = med(group.naive_page_times)
                    speedup = naive_total / total if naive_total and total else None
                    rows.append({"target": t2, "size": res["label"], "what": group.name + " · naive / ours",
                                 "value": speedup, "speedup": True,
                                 "met": speedup is not None and speedup >= t2.min_speedup,
                                 "unmeasured": naive_total is None})
            by_target: dict[str, list[Case]] = {}
            for case in group.cases:
                if case.target:
                    by_target.setdefault(case.target, []).append(case)
            for key, cases in by_target.items():
                t = TARGETS[key]
                worst = max(cases, key=lambda c: (c.error is not None, med(c.times) or 0))
                value = None if worst.error else med(worst.times)
                over = [c for c in cases if c.error or (med(c.times) or 0) > t.limit_ms]
                rows.append({"target": t, "size": res["label"], "what": f"worst: {worst.label}", "value": value,
                             "met": not over, "over": len(over), "of": len(cases)})
    return rows


def _fold(rows: list[dict]) -> list[dict]:
    """One row per target and size (the worst of its rows)."""
    out: dict[tuple, dict] = {}
    for r in rows:
        key = (r["target"].key, r["size"])
        if key not in out or (out[key]["met"] and not r["met"]):
            out[key] = r
        elif key in out and not r.get("speedup") and out[key]["met"] == r["met"] and (r["value"] or 0) > (out[key]["value"] or 0):
            out[key] = r
    return list(out.values())


def render(results: list[dict], command: str, discovered: dict[str, list[str]], load_section: str = "") -> str:
    labels = [r["label"] for r in results]
    machine = _machine()
    server = results[0]["server"]
    lines = ["# Benchmark results", "",
             f"Generated by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. "
             "Regenerate with the same command; `bench/README.md` explains the method.", ""]
    lines += ["## Machine", "",
              f"- {machine['cores']} cores ({machine['cpu']}), {machine['ram_gb']:.0f} GB RAM; load average at the end "
              f"of the run {machine['load'][0]:.1f} / {machine['load'][1]:.1f} / {machine['load'][2]:.1f} "
              "(the machine is shared, so figures vary run to run)",
              f"- {server['version'].split(',')[0]} (embedded, bench/data/pg), pg_trgm "
              f"{'available' if server.get('pg_trgm_available') else 'not available'}; settings: "
              + ", ".join(f"{k} {server.get(k)}" for k in ("shared_buffers", "work_mem", "effective_cache_size",
                                                          "random_page_cost", "max_parallel_workers_per_gather", "jit")),
              f"- Python {machine['python']}, pandas {machine['pandas']}", ""]
    lines += ["## Data", "", "| size | jobs | robots | heartbeats | heartbeats in the last 24 h | database | built | "
              "build time | data age at the run |", "|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in results:
        meta = r["meta"]
        age = r["measured_at"] - r["ctx"].data_now
        built = (meta.get("built_at") or "")[:16].replace("T", " ")
        lines.append(f"| {r['label']} | {r['jobs']:,} | {r['counts']['robots']:,} | {r['counts']['heartbeats']:,} | "
                     f"{r['counts']['heartbeats_24h']:,} | {r['counts']['db_bytes'] / 1024**3:.1f} GB | {built or '—'} | "
                     f"{(str(round(meta['build_seconds'])) + ' s') if meta.get('build_seconds') else '—'} | "
                     f"{age.total_seconds() / 3600:.1f} h |")
    lines += ["", "| size | W: workflow (busiest) | R: robot (busiest) | E: environment (smallest) | "
              "T: error type (most common) | job for the job page |", "|---|---|---|---|---|---|"]
    for r in results:
        c = r["ctx"]
        lines.append(f"| {r['label']} | {c.workflow} | {c.robot} | {c.environment} | {c.error_type} | {c.job_id} |")
    lines += ["", "Generated by `data.demo.generate_demo` (90 days, the demo's workflow mix, failures, retries and "
              "incidents) for 1,000 robots; the largest database also has 24 h of heartbeats every 10 s "
              "(`bench/heartbeats.py`). Indexes: the app's (`data.schema.INDEXES`) and the orchestrator's own. "
              "Time windows end at the data's \"now\"; functions that use the database's `now()` see the data "
              "age above (an older build understates the live queries).", ""]
    lines += rollup_lines(results)

    # Targets
    rows = _fold(evaluate(results))
    missed = [r for r in rows if not r["met"]]
    lines += ["## Targets", "", "| target | size | measured | |", "|---|---|---:|---|"]
    for r in sorted(rows, key=lambda r: (list(TARGETS).index(r["target"].key), labels.index(r["size"]))):
        if r.get("speedup"):
            value = "not measured" if r.get("unmeasured") else f"{r['value']:.1f}×" if r["value"] else "—"
        else:
            value = f"{fmt_ms(r['value'])} ms" if r["value"] is not None else "error"
        extra = f" ({r['over']} of {r['of']} over)" if r.get("over") else ""
        lines.append(f"| {r['target'].text} | {r['size']} | {value} — {r['what']}{extra} | "
                     f"{'met' if r['met'] else '**MISSED**'} |")
    if missed:
        lines += ["", "Missed targets, and what would fix them:", ""]
        seen = set()
        for r in missed:
            if r["target"].key in seen:
                continue
            seen.add(r["target"].key)
            lines.append(f"- **{r['target'].text}**: {r['target'].fix}.")
    lines.append("")

    # Figures
    lines += ["## Figures", "",
              f"Server time in milliseconds, median of {results[0]['repeat']} passes after a warm-up pass (warm cache), "
              "the app's data functions called directly (uncached). *raw*: the same question as one plain SQL query; "
              "*naive*: the window's rows loaded with pandas and computed in Python. Ratios are ours / other "
              "(below 1: ours is faster). *growth*: ours at the largest size / ours at the smallest. "
              f"⚠ marks a function slower than the app's {APP_STATEMENT_TIMEOUT_MS / 1000:.0f} s statement timeout "
              f"(it would fail in the app); a function slower than {SLOW_OURS_MS / 1000:.0f} s is timed once.", ""]
    lines += baseline_lines(results)
    for gi, group in enumerate(results[0]["groups"]):
        per_size = [next((g for g in r["groups"] if g.name == group.name), None) for r in results]
        lines += [f"### {group.name}", ""]
        if group.note:
            lines += [group.note, ""]
        head = ["function"]
        for label in labels:
            head += [f"ours {label}", f"raw {label}", f"naive {label}", f"ours/raw {label}", f"ours/naive {label}"]
        if len(labels) > 1:
            head.append("growth")
        lines += ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
        labels_seen = list(dict.fromkeys(c.label for g in per_size if g for c in g.cases))
        for label in labels_seen:
            matches = [next((c for c in g.cases if c.label == label), None) if g else None for g in per_size]
            case = next(c for c in matches if c is not None)
            notes = [f"{lab}: {c.note}" for lab, c in zip(labels, matches) if c is not None and c.note]
            row = [label + (f" ({' · '.join(notes)})" if notes else "")
                   + ("" if case.in_total or not group.total else " *(not in total)*")]
            ours_values = []
            for c in matches:
                if c is None:
                    row += ["—"] * 5
                    ours_values.append(None)
                    continue
                ours = None if c.error else med(c.times)
                ours_values.append(ours)
                warn = " ⚠" if ours is not None and ours > APP_STATEMENT_TIMEOUT_MS else ""
                row += [(f"error ({c.error})" if c.error else fmt_ms(ours) + warn),
                        _cell_other(c.raw_times, c.raw_error) if c.raw else "—",
                        _cell_other(c.naive_times, c.naive_error) if c.naive else "—",
                        fmt_ratio(ours, med(c.raw_times)) if c.raw else "—",
                        fmt_ratio(ours, med(c.naive_times)) if c.naive else "—"]
            if len(labels) > 1:
                row.append(fmt_ratio(ours_values[-1], ours_values[0]) + "×" if None not in (ours_values[0], ours_values[-1]) else "—")
            lines.append("| " + " | ".join(row) + " |")
        if group.total:
            totals = [(group_total(g) if g else None) for g in per_size]
            naive_totals = [med(g.naive_page_times) if g else None for g in per_size]
            row = ["**page total**"]
            for t, n, g in zip(totals, naive_totals, per_size):
                nt = (g.naive_page_error if g and g.naive_page_error else fmt_ms(n)) if group.naive_page else "—"
                row += [f"**{fmt_ms(t)}**", "—", nt, "—", fmt_ratio(t, n) if group.naive_page else "—"]
            if len(labels) > 1:
                row.append(fmt_ratio(totals[-1], totals[0]) + "×" if None not in (totals[0], totals[-1]) else "—")
            lines.append("| " + " | ".join(row) + " |")
            for name, members in group.subtotals.items():
                subs = [(group_total(g, members) if g else None) for g in per_size]
                row = [f"*{name}*"]
                for s in subs:
                    row += [fmt_ms(s), "—", "—", "—", "—"]
                if len(labels) > 1:
                    row.append(fmt_ratio(subs[-1], subs[0]) + "×" if None not in (subs[0], subs[-1]) else "—")
                lines.append("| " + " | ".join(row) + " |")
        lines.append("")

    lines += accuracy_lines(results)

    # Memory and coverage
    lines += ["## Memory", "", "| size | peak RSS of the harness (the app's functions and raw SQL) | "
              "peak RSS of the naive worker |", "|---|---:|---:|"]
    for r in results:
        naive_rss = f"{r['naive_rss_mb']:,.0f} MB" if r["naive_rss_mb"] else "not run"
        old_rss = (r.get("reuse") or {}).get("naive_rss_mb")
        if old_rss and old_rss > (r["naive_rss_mb"] or 0):
            naive_rss = f"{old_rss:,.0f} MB (in the run whose naive timings were reused)"
        lines.append(f"| {r['label']} | {r['rss_mb']:,.0f} MB (cumulative peak, after this size) | {naive_rss} |")
    lines += ["", "The app's functions bring back only what is drawn, so their memory does not grow with the "
              "history; the naive way holds the window's rows.", ""]
    measured = {c.func for r in results for g in r["groups"] for c in g.cases}
    missing = sorted(set(discovered) - measured - WRITES)
    lines += ["## Coverage", "",
              "Data functions called by the pages and server routes (found by reading pages/*.py and "
              "server/{api,export,metrics,health}.py), and whether this run timed them:", ""]
    for name in sorted(set(discovered) | measured):
        where = ", ".join(sorted(set(discovered.get(name, [])))) or "(measured; called indirectly)"
        status = "timed" if name in measured else ("write, not timed" if name in WRITES else "**NOT MEASURED**")
        lines.append(f"- `{name}` — {status} — {where}")
    if missing:
        lines += ["", f"**{len(missing)} data function(s) have no recipe in bench/run.py yet:** "
                  + ", ".join(f"`{m}`" for m in missing)]
    lines.append("")
    lines += [LOAD_BEGIN, load_section.strip() or "## Load test\n\nNot run yet: `python -m bench.load`.", LOAD_END, ""]
    return "\n".join(lines)


def _when(text) -> str:
    return str(text or "")[:16].replace("T", " ")


def rollup_lines(results: list[dict]) -> list[str]:
    """The rollups' state and maintenance cost, per size."""
    lines = ["### Rollups", "",
             "The analytics rollups (data.rollups) and the robots' rollup (data.robot_rollup) follow the database's "
             "now(), so the run first calls `data.rollups.maintain` until the job rollup is caught up, then times "
             "a few routine passes (what the app's background maintenance does every few minutes: new hours, late "
             "changes, the robots' rollup, the hourly reconciliation when due). *First backfill*: both rollups "
             "built from an empty state (by bench.build after a build, or `--rebuild-rollups`).", "",
             "| size | first backfill | when | catch-up before this run | routine pass (median) | covered until | "
             "robots' rollup until |", "|---|---:|---|---:|---:|---|---|"]
    for r in results:
        rec = r.get("rollups") or {}
        first = rec.get("first_backfill") or {}
        cu = rec.get("catch_up") or {}
        first_txt = (f"{first['seconds']:,.1f} s ({first.get('passes')} pass(es); robots' rollup "
                     f"{first.get('robots_seconds', 0):,.2f} s)") if first.get("seconds") is not None else "not recorded"
        cu_txt = (f"{cu.get('seconds', 0):,.1f} s ({cu.get('passes')} pass(es), {cu.get('new_hours', 0):,} new hours, "
                  f"{cu.get('dirty_hours', 0):,} re-aggregated)")
        routine = rec.get("routine") or {}
        lines.append(f"| {r['label']} | {first_txt} | {_when(first.get('at')) or '—'} | {cu_txt} | "
                     f"{(routine.get('seconds') or 0) * 1000:,.0f} ms | {_when(rec.get('covered_until'))} | "
                     f"{_when(rec.get('robots_watermark'))} |")
    lines.append("")
    return lines


def baseline_lines(results: list[dict]) -> list[str]:
    """Which naive and plain-SQL timings were reused from an earlier run (--reuse-baselines)."""
    lines = []
    for r in results:
        reuse = r.get("reuse")
        if reuse is None:
            continue
        if "not_reused" in reuse:
            lines.append(f"- {r['label']}: naive and plain-SQL timings measured in this run "
                         f"(not reused: {reuse['not_reused']}).")
            continue
        new = reuse.get("new") or []
        when = reuse.get("when") or {_when(reuse.get("measured_at")): reuse["naive"] + reuse["raw"]}
        lines.append(f"- {r['label']}: {reuse['naive']} naive, {reuse['raw']} plain-SQL and {reuse['pages']} naive "
                     f"page timings reused from {path_name(r['label'])} (same database build, built "
                     f"{_when(r['meta'].get('built_at'))} UTC), measured on "
                     + ", ".join(f"{k} UTC ({n} rows)" for k, n in sorted(when.items()))
                     + "; measured in this run: " + (", ".join(new) if new else "none") + ".")
    if lines:
        lines = ["*Baselines* (`--reuse-baselines`: naive and plain-SQL timings do not depend on the app's code, "
                 "so they are taken from an earlier run of the same database build when the row's label matches):",
                 ""] + lines + [""]
    return lines


def path_name(label: str) -> str:
    return f"results-{label}.json"


def accuracy_lines(results: list[dict]) -> list[str]:
    """The rollups' percentiles against the exact ones, per analytics window over 48 hours."""
    rows = [(r["label"], g.name, a) for r in results for g in r["groups"] for a in g.accuracy_rows]
    if not rows:
        return []
    from data.rollups import MAX_RELATIVE_ERROR

    lines = ["## Accuracy of the rollups", "",
             "Analytics windows longer than 48 hours read the rollups when they are current; percentiles then come "
             f"from merged log-bucket histograms, stated to be within {MAX_RELATIVE_ERROR:.2%} of the exact "
             "`percentile_cont`, and counts are exact. Each function below was also computed the exact way "
             "(`data.rollups.exact_only()`) and compared row by row: the largest relative difference of the "
             "percentile columns (values of 1 ms or more), and whether every count column is identical. *ms*: one "
             "warm call of each path.", "",
             "| size | window | function · columns | read the rollups | values | max relative difference | where | "
             "counts identical | rollups ms | exact ms |", "|---|---|---|---|---:|---:|---|---|---:|---:|"]
    worst: dict[str, float] = {}
    for label, group, a in rows:
        window = group.split(" (")[0].replace("Analytics page, ", "")
        if a.get("error"):
            lines.append(f"| {label} | {window} | {a['function']} | — | — | — | error ({a['error']}) | — | — | — |")
            continue
        ok = "yes" if a["counts_identical"] else "**no**: " + "; ".join(a["count_problems"])
        rel = a["max_rel"]
        flag = " **over the bound**" if rel > MAX_RELATIVE_ERROR + 1e-12 else ""
        worst[label] = max(worst.get(label, 0.0), rel)
        lines.append(f"| {label} | {window} | {a['function']} · {a['columns']} | {'yes' if a['rollup'] else '**no** (exact path)'} "
                     f"| {a['values']:,} | {rel:.3%}{flag} | {a['where'] or '—'} | {ok} | "
                     f"{fmt_ms(a.get('rollup_ms')) if a.get('rollup_ms') is not None else ''} | "
                     f"{fmt_ms(a.get('exact_ms')) if a.get('exact_ms') is not None else ''} |")
    lines += ["", "Largest relative difference per size: " + ", ".join(f"{k} {v:.3%}" for k, v in worst.items())
              + f" (bound {MAX_RELATIVE_ERROR:.3%}).", ""]
    return lines


def existing_load_section(path: Path) -> str:
    if not path.exists():
        return ""
    text = path.read_text()
    if LOAD_BEGIN in text and LOAD_END in text:
        return text.split(LOAD_BEGIN, 1)[1].split(LOAD_END, 1)[0]
    return ""


def to_json(res: dict) -> dict:
    out = {k: v for k, v in res.items() if k not in ("groups", "ctx")}
    now = res["measured_at"].isoformat()
    out["measured_at"] = now
    c = res["ctx"]
    out["context"] = {"workflow": c.workflow, "robot": c.robot, "environment": c.environment,
                      "error_type": c.error_type, "job_id": c.job_id, "data_now": c.data_now.isoformat()}
    out["groups"] = [{
        "name": g.name, "target": g.target, "total_ms": group_total(g) if g.total else None,
        "baseline_revision": BASELINE_REVISION.get(g.name, 1), "naive_page_ms": med(g.naive_page_times), "naive_page_times": g.naive_page_times,
        "naive_page_members": sorted(c.label for c in g.cases if c.naive is not None and c.in_total),
        "naive_page_measured_at": (g.naive_page_reused or now) if g.naive_page_times else None,
        "accuracy": g.accuracy_rows, "cases": [{
            "label": c.label, "func": c.func, "note": c.note, "ours_ms": med(c.times), "times": c.times,
            "error": c.error, "raw_ms": med(c.raw_times), "raw_times": c.raw_times, "raw_error": c.raw_error,
            "raw_measured_at": (c.raw_reused or now) if (c.raw_times or c.raw_error) else None,
            "naive_ms": med(c.naive_times), "naive_times": c.naive_times, "naive_error": c.naive_error,
            "naive_measured_at": (c.naive_reused or now) if (c.naive_times or c.naive_error) else None,
            "target": c.target, "in_total": c.in_total} for c in g.cases]}
        for g in res["groups"]]
    return out


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1m,10m", help="benchmark databases to measure (built when missing)")
    parser.add_argument("--database-url", help="measure this database instead of the benchmark ones")
    parser.add_argument("--label", help="name of the --database-url data set in the report")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--naive", choices=("on", "off"), default="on")
    parser.add_argument("--raw", choices=("on", "off"), default="on")
    parser.add_argument("--only", help="only the pages whose name contains this text")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--reuse-baselines", action="store_true",
                        help="take the naive and plain-SQL timings from the previous results-<size>.json of the "
                             "same database build (they do not depend on the app's code); new cases are measured")
    parser.add_argument("--rebuild-rollups", action="store_true",
                        help="empty the rollups first, so the run times their first backfill")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    command = "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:])

    targets: list[tuple[str, str]] = []
    if args.database_url:
        targets.append((args.database_url, args.label or "custom"))
    else:
        from bench.build import build

        sizes = parse_sizes(args.sizes)
        build(sizes)  # reuses complete databases; builds missing ones (one at a time)
        admin = start_server()
        targets += [(database_url(admin, db_name(n)), size_label(n)) for n in sizes]
    discovered = discover()
    results = []
    folder = DATA_DIR if args.output.resolve() == RESULTS.resolve() else args.output.parent
    for url, label in targets:
        log.info("measuring %s", label)
        path = folder / f"results-{label}.json"
        results.append(measure(url, label, args.repeat, with_naive=args.naive == "on", with_raw=args.raw == "on",
                               only=args.only, baselines=path if args.reuse_baselines else None,
                               rebuild_rollups=args.rebuild_rollups))
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(to_json(results[-1]), default=str, indent=1))
    args.output.write_text(render(results, command, discovered, existing_load_section(args.output)))
    rows = _fold(evaluate(results))
    for r in rows:
        print(f"{'met   ' if r['met'] else 'MISSED'} {r['size']:>5}  {r['target'].text}: "
              f"{r['value'] if r['value'] is None else round(r['value'], 1)} ({r['what']})")
    print(f"wrote {args.output}")
    if args.check and any(not r["met"] for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
