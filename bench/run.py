"""Time every data function behind every page and API endpoint; write bench/RESULTS.md.

    python -m bench.run [--sizes 1m,10m] [--repeat 5] [--check] [--naive on|off] [--only GROUP]
    python -m bench.run --database-url URL [--label tiny] [--output PATH]     # any database

For each size (a benchmark database built by bench.build, built first when missing) and each
page, the harness calls the app's data functions directly (the uncached function behind
``@shared_cache``), once to warm up and then ``--repeat`` times, page by page as a refresh would,
and reports medians: per function and per page (the sum of a pass). Beside each it reports the
same question answered as one plain SQL query on the raw tables (bench.raw) and the naive way,
loading the window's rows with pandas (bench.naive, in a worker process of its own), with the
ratios ours/raw and ours/naive and the growth from the smallest to the largest size.

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
    BENCH_DIR, DATA_DIR, RESULTS, database_exists, database_url, db_name, parse_sizes, read_meta, server_facts,
    size_label, start_server,
)
from data.db import make_engine

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
TZ = "Europe/Berlin"
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
           fix="cheaper change detection and the shared cache (one query per TTL for all screens); "
               "the queue/throughput series from the hourly rollup"),
    Target("history", "Job history: any page of any filter on an indexed column ≤ 100 ms", 100,
           fix="an index whose leading columns match the filter and the keyset order"),
    Target("search", "Text search in error messages ≤ 500 ms", 500,
           fix="a trigram GIN index on error_message where the server offers pg_trgm "
               "(not in the embedded server), or bounding the search to a time range by default"),
    Target("robots_list", "Robots list ≤ 150 ms", 150,
           fix="the 7-day work numbers from a per-robot hourly rollup instead of the job rows"),
    Target("robot_page", "Robot page (7-day window) ≤ 150 ms", 150,
           fix="heartbeat downsampling in a rollup (per robot per minute), utilization from the rollup"),
    Target("analytics_90d", "Analytics page, 90-day window ≤ 300 ms in total", 300,
           fix="incremental rollups (workflow × robot × hour with mergeable duration histograms); "
               "percentiles over long windows from the histograms"),
    Target("analytics_naive", "Analytics page, 90-day window ≥ 20× faster than the naive pandas way",
           min_speedup=20, fix="the rollups above"),
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
    times: list[float] = field(default_factory=list)
    error: str | None = None
    raw_times: list[float] = field(default_factory=list)
    raw_error: str | None = None
    naive_times: list[float] = field(default_factory=list)
    naive_error: str | None = None


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

    searches = []
    for label, query in [(f"q={ctx.q_common!r}", {"q": ctx.q_common}), (f"q={ctx.q_rare!r}", {"q": ctx.q_rare}),
                         (f"q={ctx.q_none!r} (no match: reads every message)", {"q": ctx.q_none}),
                         (f"q={ctx.q_rare!r} + range=7d", {"q": ctx.q_rare, "range": "7d"})]:
        filters, _ = jobs.parse_filters(query)
        searches.append(Case(f"list_jobs · {label} · page 1", _qualified(jobs.list_jobs),
                             _call(jobs.list_jobs, e, filters, tz), naive=P(naive.job_search_page, filters=filters, tz=tz),
                             target="search"))
    groups.append(Group("Job history text search", cases=searches, total=False, naive_page=False))

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
                        note="Total = the list callback with its minute-long work cache cold."))

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

    # Analytics: every data function the page calls, for 30 and 90 days.
    names = page_functions("data.analytics", "pages/analytics.py")
    for days, target in ((30, None), (90, "analytics_90d")):
        f, problems = an.parse_filters({"range": f"{days}d"}, default_tz=tz, now=ctx.data_now)
        cases = []
        for name in names:
            fn = getattr(an, name)
            args = (e, f) if list(inspect.signature(fn).parameters)[1:2] == ["f"] else (e,)
            cases.append(Case(name, _qualified(fn), _call(fn, *args),
                              raw=raw.ANALYTICS[name](f) if name in raw.ANALYTICS else None,
                              naive=P(naive.analytics_function, name=name, f=f) if naive.has_analytics(name) else None))
        groups.append(Group(f"Analytics page, {days} days (bucket {f.bucket})", target=target, cases=cases,
                            note="Naive page: the window's rows loaded once, every section computed in pandas."))

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
            times: dict[str, float] = {}
            for case in group.cases:
                if case.error or (case.times and case.times[0] > SLOW_OURS_MS):
                    continue  # a very slow function is timed once
                began = time.perf_counter()
                try:
                    case.ours()
                except Exception as exc:  # noqa: BLE001 - shown in RESULTS.md
                    case.error = _error_text(exc)
                    log.warning("%s: %s", case.label, case.error)
                    continue
                ms = (time.perf_counter() - began) * 1000.0
                if n:
                    case.times.append(ms)
                    times[case.label] = ms
            if n:
                group.passes.append(times)


def measure_raw(engine, groups: list[Group], repeat: int) -> None:
    for group in groups:
        for case in group.cases:
            if case.raw is None:
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
                if case.naive is None:
                    continue
                result = worker.run(case.naive, group.name, repeat)
                case.naive_times, case.naive_error = result["times_ms"], result["error"]
            page = [c.naive for c in group.cases if c.naive is not None and c.in_total]
            if group.total and group.naive_page and page:
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
            only: str | None = None) -> dict:
    engine = make_engine(url, statement_timeout_ms=OURS_TIMEOUT_MS)
    try:
        ctx = build_context(engine, url, label)
        groups = plan(ctx)
        if only:
            groups = [g for g in groups if only.lower() in g.name.lower()]
        began = time.perf_counter()
        measure_ours(groups, repeat)
        rss = peak_rss_mb()
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
                "server": facts, "counts": dict(counts), "repeat": repeat,
                "measured_at": datetime.now(timezone.utc)}
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

    # Memory and coverage
    lines += ["## Memory", "", "| size | peak RSS of the harness (the app's functions and raw SQL) | "
              "peak RSS of the naive worker |", "|---|---:|---:|"]
    for r in results:
        naive_rss = f"{r['naive_rss_mb']:,.0f} MB" if r["naive_rss_mb"] else "not run"
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


def existing_load_section(path: Path) -> str:
    if not path.exists():
        return ""
    text = path.read_text()
    if LOAD_BEGIN in text and LOAD_END in text:
        return text.split(LOAD_BEGIN, 1)[1].split(LOAD_END, 1)[0]
    return ""


def to_json(res: dict) -> dict:
    out = {k: v for k, v in res.items() if k not in ("groups", "ctx")}
    out["measured_at"] = res["measured_at"].isoformat()
    out["groups"] = [{
        "name": g.name, "target": g.target, "total_ms": group_total(g) if g.total else None,
        "naive_page_ms": med(g.naive_page_times), "cases": [{
            "label": c.label, "func": c.func, "ours_ms": med(c.times), "times": c.times, "error": c.error,
            "raw_ms": med(c.raw_times), "raw_error": c.raw_error, "naive_ms": med(c.naive_times),
            "naive_error": c.naive_error, "target": c.target, "in_total": c.in_total} for c in g.cases]}
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
    for url, label in targets:
        log.info("measuring %s", label)
        results.append(measure(url, label, args.repeat, with_naive=args.naive == "on", with_raw=args.raw == "on",
                               only=args.only))
        folder = DATA_DIR if args.output.resolve() == RESULTS.resolve() else args.output.parent
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"results-{label}.json").write_text(json.dumps(to_json(results[-1]), default=str, indent=1))
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
