"""Hourly and daily rollups of the job history, kept in the app's own schema.

Long analytics windows (a month, a quarter) would otherwise read millions of job rows for every
chart. The rollup keeps, per UTC hour (and per day and week, Monday to Monday, of the rollup's
zone: ``FLEET_ROLLUP_TIMEZONE``, UTC by default) × workflow × environment × status:

- ``jobs`` (created in that hour), ``timed`` (both timestamps present), sums of run duration
  and queue wait (ms), sums of the self-healing counts;
- two mergeable histograms, run duration and queue wait, as sparse arrays (``*_bin``: bin
  numbers, ``*_n``: counts). Bin ``b`` holds durations in ``[R**b, R**(b+1))`` ms with
  ``R = 1.02``; durations below 1 ms fall in bin -1. A percentile read from merged histograms
  takes each order statistic at the geometric middle of its bin, so it is within
  ``sqrt(R) - 1`` (0.995 %) of the exact ``percentile_cont`` value, and interpolating between two
  order statistics keeps that bound. Below 1 ms the error is absolute (under 1 ms).

- for the queue depth: ``queued`` (jobs that wait or waited: pending, or with a start or end
  time) and when they left the queue (``left_bin``: UTC hours since the epoch, ``left_n``);

and per hour/day/week × workflow × environment × error type × message (its first 500
characters) the failures and the latest creation time (``error_rollup``).

Maintenance (``refresh``, run in the background by ``start_maintenance``; one process at a time
through an advisory lock; it never locks the orchestrator's tables, it only reads them):

- ``covered_until`` (a UTC hour) says up to where the rollup holds every hour. Each refresh
  advances it to the last full hour, at most ``MAX_STEP`` per transaction (a first backfill of a
  long history goes in steps, each bounded), re-aggregating the new hours from the raw rows;
- a job whose ``started_at`` or ``completed_at`` is set or moves (it started, finished, was
  cancelled or re-run) after its hour was aggregated makes that hour *dirty*: every refresh
  looks up the jobs with either after the last look (the ``fm_job_started_at`` and
  ``fm_job_finished`` indexes) and re-aggregates their creation hours whole, so nothing is
  counted twice;
- ``reconcile`` (hourly) compares per-hour counts by status with the raw table and
  re-aggregates hours that differ: jobs inserted late with an old ``created_at``, jobs deleted
  (dead-letter moves, retention), status changes that leave ``completed_at`` alone;
- a day row is the merge of its hour rows (23 to 25 across a daylight-saving change), a week
  row the merge of its 7 day rows; each is rebuilt whenever one of its parts is, once the rollup
  covers it whole. The rollup zone must keep a whole-hour offset from UTC, so its days are made
  of whole UTC hours; changing it rebuilds the rollup.

Reads (``plan_window`` + ``facts_sql``): a window is answered from week and day rows where a
whole week or day of the rollup zone lies inside it (and inside one chart bucket of the viewer's
zone: a viewer in the rollup zone reads whole days and weeks), hour rows for the remaining
whole hours, and the raw rows for the partial hours at its edges and the time after
``covered_until``. The counts are therefore exact; only percentiles carry the bound above. Time zones with offsets
that are not whole hours, robot filters and short windows use the exact queries instead.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from data.cache import forget_kept_reads, kept_read
from data.db import _UNAVAILABLE, DatabaseUnavailable, _translate, json_number, read_row
from data.errors import error_type_sql
from data.schema import APP_SCHEMA
from data.timeutil import whole_hour_zone

log = logging.getLogger(__name__)

RATIO = 1.02
# Bumped when the tables' layout or meaning changes: the rollup is then rebuilt.
LAYOUT_VERSION = 5
# The bound on a percentile's relative error (see the module docstring).
MAX_RELATIVE_ERROR = math.sqrt(RATIO) - 1

HOUR = timedelta(hours=1)
FINER = {"day": "hour", "week": "day"}
# How long after a job's completed_at is written its transaction may still commit.
LAG = timedelta(seconds=30)
# One transaction aggregates at most this much new history.
MAX_STEP = timedelta(days=2)
# A refresh stops starting new steps after this long (the next one goes on).
REFRESH_BUDGET_S = 30.0
MAINTENANCE_TIMEOUT = "600s"
RECONCILE_EVERY = timedelta(hours=1)
# Windows up to this long use the exact queries (they read few rows anyway).
EXACT_MAX_WINDOW = timedelta(hours=48)
# The rollup is used when it is at most this far behind the window's end.
MAX_LAG_BEHIND = timedelta(hours=3)

_LOCK_KEY = 0x466D524C  # "FmRL"
JOBS = f"{APP_SCHEMA}.job_rollup"
ERRORS = f"{APP_SCHEMA}.error_rollup"
STATE = f"{APP_SCHEMA}.rollup_state"

# The leading key columns both rollup tables share.
_PERIOD_KEY = ("grain text NOT NULL CHECK (grain IN ('hour', 'day', 'week')), period_start timestamptz NOT NULL, "
               "workflow_id text NOT NULL, environment text NOT NULL")

TABLES = [
    f"""CREATE TABLE IF NOT EXISTS {JOBS} (
            {_PERIOD_KEY},
            status text NOT NULL,
            workflow_name text,
            jobs bigint NOT NULL,
            timed bigint NOT NULL,
            dur_sum_ms double precision NOT NULL,
            wait_sum_ms double precision NOT NULL,
            healing_attempts double precision NOT NULL,
            healing_successes double precision NOT NULL,
            dur_bin integer[] NOT NULL,
            dur_n integer[] NOT NULL,
            wait_bin integer[] NOT NULL,
            wait_n integer[] NOT NULL,
            queued bigint NOT NULL,
            left_bin integer[] NOT NULL,
            left_n integer[] NOT NULL,
            PRIMARY KEY (grain, period_start, workflow_id, environment, status)
        )""",
    f"""CREATE TABLE IF NOT EXISTS {ERRORS} (
            {_PERIOD_KEY},
            error_type text NOT NULL,
            message text NOT NULL,
            workflow_name text,
            failures bigint NOT NULL,
            last_seen timestamptz NOT NULL,
            PRIMARY KEY (grain, period_start, workflow_id, environment, error_type, message)
        )""",
    f"""CREATE TABLE IF NOT EXISTS {STATE} (
            id integer PRIMARY KEY CHECK (id = 1),
            version integer NOT NULL,
            ratio double precision NOT NULL,
            zone text NOT NULL,
            covered_until timestamptz,
            completed_mark timestamptz,
            reconciled_at timestamptz
        )""",
]


# ---------------------------------------------------------------------------------------------
# Histograms (pure)
# ---------------------------------------------------------------------------------------------

def bin_sql(value: str) -> str:
    """SQL: the histogram bin of a duration in ms (see the module docstring)."""
    return f"(CASE WHEN {value} < 1 THEN -1 ELSE floor(ln({value}) / {math.log(RATIO)!r})::int END)"


def bin_value(b) -> np.ndarray:
    """The value that stands for bin ``b``: the geometric middle of its range (0 for bin -1)."""
    b = np.asarray(b, dtype="float64")
    return np.where(b < 0, 0.0, RATIO ** (b + 0.5))


def bin_edges(b) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper end of bin ``b`` (bin -1 is [0, 1) ms)."""
    b = np.asarray(b, dtype="float64")
    return np.where(b < 0, 0.0, RATIO ** b), RATIO ** (b + 1)


def percentiles_from_bins(bins, counts, ps) -> list[float | None]:
    """``percentile_cont(p)`` of the values a histogram describes, for each p in ``ps``.

    Like percentile_cont, the p-quantile lies at position (n - 1) × p of the sorted values and
    is interpolated between the two order statistics around it; each order statistic is taken
    at the middle of its bin. ``bins`` need not be sorted or unique."""
    bins = np.asarray(bins, dtype="int64")
    order = np.argsort(bins, kind="stable")
    _, values = grouped_percentiles(np.zeros(len(bins), np.int64), bins[order],
                                    np.asarray(counts, dtype="int64")[order], 1, ps)
    return [None if math.isnan(v) else float(v) for v in values[0]]


def grouped_percentiles(group: np.ndarray, bins: np.ndarray, counts: np.ndarray, groups: int,
                        ps) -> tuple[np.ndarray, np.ndarray]:
    """percentiles_from_bins for many histograms at once: cells sorted by ``group`` (0 ..
    ``groups`` - 1) and then by bin. Returns each group's total and a groups × ps array of
    percentiles (NaN where the total is 0)."""
    totals = np.bincount(group, weights=counts, minlength=groups).astype(np.int64)
    cum = np.cumsum(counts)
    # What the cells before each group's first hold (a group's cells are contiguous).
    before = np.concatenate([[0], cum])[np.searchsorted(group, np.arange(groups))]
    values = np.append(bin_value(bins), np.nan)   # the NaN answers the groups without cells
    out = np.full((groups, len(ps)), np.nan)
    for i, p in enumerate(ps):
        h = np.maximum(totals - 1, 0) * float(p)
        lo, hi = np.floor(h), np.ceil(h)
        v_lo = values[np.where(totals > 0, np.searchsorted(cum, before + lo, side="right"), len(bins))]
        v_hi = values[np.where(totals > 0, np.searchsorted(cum, before + hi, side="right"), len(bins))]
        out[:, i] = v_lo + (h - lo) * (v_hi - v_lo)
    return totals, out


# ---------------------------------------------------------------------------------------------
# Aggregation SQL (maintenance and the raw edges of a read)
# ---------------------------------------------------------------------------------------------

_DUR = "greatest(date_part('epoch', j.completed_at - j.started_at) * 1000, 0)"
_WAIT = "greatest(date_part('epoch', j.started_at - j.created_at) * 1000, 0)"
_TIMED = "(j.started_at IS NOT NULL AND j.completed_at IS NOT NULL)"
_KEYS = "workflow_id, environment, status"
# When a job left the queue (data.analytics.queue_depth_series): a pending job has not.
_LEFT = "CASE WHEN j.status <> 'pending' THEN coalesce(j.started_at, j.completed_at) END"
_QUEUED = "(j.status = 'pending' OR coalesce(j.started_at, j.completed_at) IS NOT NULL)"


def raw_facts_sql(where: str) -> str:
    """One fact row per job matching ``where`` (alias j), in the rollup's shape, ``t`` = its
    created_at. Merged by ``merge_sql`` or read directly at a window's edges."""
    return f"""
    SELECT j.created_at AS t, j.workflow_id, j.environment, j.status, j.workflow_name,
           1 AS jobs, CASE WHEN {_TIMED} THEN 1 ELSE 0 END AS timed,
           CASE WHEN {_TIMED} THEN {_DUR} ELSE 0 END AS dur_sum_ms,
           CASE WHEN {_TIMED} THEN {_WAIT} ELSE 0 END AS wait_sum_ms,
           coalesce({json_number('j.metadata', 'healing_attempts')}, 0) AS healing_attempts,
           coalesce({json_number('j.metadata', 'healing_successes')}, 0) AS healing_successes,
           CASE WHEN {_TIMED} THEN ARRAY[{bin_sql(_DUR)}] ELSE '{{}}'::int[] END AS dur_bin,
           CASE WHEN {_TIMED} THEN ARRAY[1] ELSE '{{}}'::int[] END AS dur_n,
           CASE WHEN {_TIMED} THEN ARRAY[{bin_sql(_WAIT)}] ELSE '{{}}'::int[] END AS wait_bin,
           CASE WHEN {_TIMED} THEN ARRAY[1] ELSE '{{}}'::int[] END AS wait_n,
           CASE WHEN {_QUEUED} THEN 1 ELSE 0 END AS queued,
           CASE WHEN {_LEFT} IS NOT NULL THEN ARRAY[floor(date_part('epoch', {_LEFT}) / 3600)::int]
                ELSE '{{}}'::int[] END AS left_bin,
           CASE WHEN {_LEFT} IS NOT NULL THEN ARRAY[1] ELSE '{{}}'::int[] END AS left_n
    FROM job_queue j WHERE {where}"""


def _merged_hist(metric: str, t_expr: str) -> str:
    return f"""
    SELECT t, {_KEYS}, array_agg(b ORDER BY b) AS bins, array_agg(n ORDER BY b) AS ns
    FROM (SELECT {t_expr} AS t, {_KEYS}, u.b, sum(u.n)::int AS n
          FROM src, unnest(src.{metric}_bin, src.{metric}_n) AS u(b, n)
          GROUP BY 1, 2, 3, 4, 5) x
    GROUP BY 1, 2, 3, 4"""


def merge_sql(source: str, t_expr: str) -> str:
    """Fact rows of ``source`` merged per ``t_expr`` × workflow × environment × status."""
    return f"""
    WITH src AS MATERIALIZED ({source}),
    scalars AS (
        SELECT {t_expr} AS t, {_KEYS}, max(workflow_name) AS workflow_name, sum(jobs)::bigint AS jobs,
               sum(timed)::bigint AS timed, sum(dur_sum_ms)::float8 AS dur_sum_ms,
               sum(wait_sum_ms)::float8 AS wait_sum_ms, sum(healing_attempts)::float8 AS healing_attempts,
               sum(healing_successes)::float8 AS healing_successes, sum(queued)::bigint AS queued
        FROM src GROUP BY 1, 2, 3, 4
    ),
    dh AS ({_merged_hist('dur', t_expr)}),
    wh AS ({_merged_hist('wait', t_expr)}),
    lh AS ({_merged_hist('left', t_expr)})
    SELECT s.t, s.workflow_id, s.environment, s.status, s.workflow_name, s.jobs, s.timed, s.dur_sum_ms,
           s.wait_sum_ms, s.healing_attempts, s.healing_successes,
           coalesce(dh.bins, '{{}}') AS dur_bin, coalesce(dh.ns, '{{}}') AS dur_n,
           coalesce(wh.bins, '{{}}') AS wait_bin, coalesce(wh.ns, '{{}}') AS wait_n,
           s.queued, coalesce(lh.bins, '{{}}') AS left_bin, coalesce(lh.ns, '{{}}') AS left_n
    FROM scalars s LEFT JOIN dh USING (t, {_KEYS}) LEFT JOIN wh USING (t, {_KEYS}) LEFT JOIN lh USING (t, {_KEYS})"""


_COLUMNS = ("workflow_id, environment, status, workflow_name, jobs, timed, dur_sum_ms, wait_sum_ms, "
            "healing_attempts, healing_successes, dur_bin, dur_n, wait_bin, wait_n, queued, left_bin, left_n")
ERROR_TYPE = f"coalesce({error_type_sql('j.error_message')}, 'UnknownError')"


def raw_errors_sql(where: str) -> str:
    """One row per failed job matching ``where`` (alias j), in the error rollup's shape."""
    return f"""
    SELECT j.created_at AS t, j.workflow_id, j.environment, {ERROR_TYPE} AS error_type,
           coalesce(left(j.error_message, 500), '') AS message, j.workflow_name, 1 AS failures,
           j.created_at AS last_seen
    FROM job_queue j WHERE j.status = 'failed' AND {where}"""


_ERROR_COLUMNS = "workflow_id, environment, error_type, message, workflow_name, failures, last_seen"


def _insert_errors(conn, grain: str, t_expr: str, source: str, params: dict) -> None:
    """Error rollup rows of ``grain`` merged from ``source`` (rows in its shape, column t)."""
    conn.execute(sa.text(f"""
        INSERT INTO {ERRORS} (grain, period_start, {_ERROR_COLUMNS})
        SELECT '{grain}', {t_expr}, workflow_id, environment, error_type, message, max(workflow_name),
               sum(failures), max(last_seen)
        FROM ({source}) e GROUP BY 2, 3, 4, 5, 6"""), params)


def _insert_hours(conn, where: str, params: dict, join: str = "") -> None:
    """Hour rows of both tables from the raw rows matching ``where`` (after ``join``)."""
    def raw(sql: str) -> str:
        return sql.replace("FROM job_queue j WHERE", f"FROM {join}job_queue j{' ON ' + where if join else ''} "
                                                     f"WHERE {'TRUE' if join else where} AND")
    conn.execute(sa.text(f"INSERT INTO {JOBS} (grain, period_start, {_COLUMNS}) SELECT 'hour', t, {_COLUMNS} FROM ("
                         f"{merge_sql(raw(raw_facts_sql('TRUE')), _HOUR_OF_T)}) m"), params)
    _insert_errors(conn, "hour", _HOUR_OF_T, raw(raw_errors_sql("TRUE")), params)


# ---------------------------------------------------------------------------------------------
# Maintenance
# ---------------------------------------------------------------------------------------------

_HOUR_OF_T = "date_trunc('hour', t, 'UTC')"
_HOURS_WHERE = ("j.created_at >= h.start AND j.created_at < h.start + interval '1 hour'")


def _rebuild_hours(conn, hours: list[datetime]) -> None:
    """Re-aggregate the given UTC hours whole from the raw rows."""
    if not hours:
        return
    params = {"hours": hours}
    for table in (JOBS, ERRORS):
        conn.execute(sa.text(f"DELETE FROM {table} WHERE grain = 'hour' AND period_start = ANY(:hours)"), params)
    # The hours join keeps each hour an index range on created_at.
    _insert_hours(conn, _HOURS_WHERE, params, join="unnest(CAST(:hours AS timestamptz[])) AS h(start) JOIN ")


def _rebuild_range(conn, lo: datetime, hi: datetime) -> None:
    """Re-aggregate the UTC hours in [lo, hi) (hour-aligned) from one range scan."""
    params = {"lo": lo, "hi": hi}
    for table in (JOBS, ERRORS):
        conn.execute(sa.text(f"DELETE FROM {table} WHERE grain = 'hour' AND period_start >= :lo "
                             "AND period_start < :hi"), params)
    _insert_hours(conn, "j.created_at >= :lo AND j.created_at < :hi", params)


def _rebuild_periods(conn, grain: str, starts: list[datetime], covered_until: datetime, zone: str) -> None:
    """Rebuild the rows of the given days or weeks (of ``zone``) that the rollup covers
    completely, by merging the rows of the next finer grain. The periods' bounds come from
    period_end(), as the reads' plans do."""
    finer = FINER[grain]
    periods = sorted({(s, period_end(grain, s, zone)) for s in starts})
    periods = [(s, e) for s, e in periods if e <= covered_until]
    if not periods:
        return
    params = {"starts": [s for s, _ in periods], "stops": [e for _, e in periods], "lo": periods[0][0],
              "hi": periods[-1][1], "grain": grain, "finer": finer}
    for table in (JOBS, ERRORS):
        conn.execute(sa.text(f"DELETE FROM {table} WHERE grain = :grain AND period_start = ANY(:starts)"), params)
    parts = ("SELECT {cols} FROM {table} f "
             "JOIN unnest(CAST(:starts AS timestamptz[]), CAST(:stops AS timestamptz[])) AS p(s, e) "
             "ON f.period_start >= p.s AND f.period_start < p.e "
             "WHERE f.grain = :finer AND f.period_start >= :lo AND f.period_start < :hi")
    source = parts.format(table=JOBS, cols=f"p.s AS t, {_COLUMNS}")
    merged = merge_sql(source, "t")
    conn.execute(sa.text(f"INSERT INTO {JOBS} (grain, period_start, {_COLUMNS}) SELECT :grain, t, {_COLUMNS} "
                         f"FROM ({merged}) m"), params)
    _insert_errors(conn, grain, "t", parts.format(table=ERRORS, cols=f"p.s AS t, {_ERROR_COLUMNS}"), params)


def _rebuild_coarse(conn, hours: list[datetime], covered_until: datetime, zone: str) -> None:
    """Rebuild the day and then the week rows that contain the given hours."""
    days = {period_start("day", h, zone) for h in hours}
    _rebuild_periods(conn, "day", list(days), covered_until, zone)
    _rebuild_periods(conn, "week", [period_start("week", d, zone) for d in days], covered_until, zone)


def period_start(grain: str, t: datetime, zone: str) -> datetime:
    """The start of the hour, or of the day or week (Monday) of ``zone``, that holds ``t``."""
    if grain == "hour":
        return floor_hour(t)
    local = t.astimezone(ZoneInfo(zone)).date()
    if grain == "week":
        local -= timedelta(days=local.weekday())
    return _midnight(local, zone)


def period_end(grain: str, start: datetime, zone: str) -> datetime:
    """The end of the period of ``grain`` that begins at ``start``."""
    if grain == "hour":
        return start + HOUR
    days = 7 if grain == "week" else 1
    return _midnight(start.astimezone(ZoneInfo(zone)).date() + timedelta(days=days), zone)


def _midnight(day, zone: str) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)).astimezone(timezone.utc)


def floor_hour(t: datetime) -> datetime:
    return t.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def ceil_hour(t: datetime) -> datetime:
    f = floor_hour(t)
    return f if f == t else f + HOUR


def ensure_tables(engine: Engine, zone: str | None = None) -> None:
    """Create the rollup tables when missing, of an older layout, or (when ``zone`` is given)
    kept in another zone (serialised: workers may start together). Such a rollup is dropped and
    rebuilt from the raw rows; a new one is kept in ``zone`` (UTC when None)."""
    current = f"SELECT 1 FROM {STATE} WHERE version = :v AND (CAST(:zone AS text) IS NULL OR zone = :zone)"
    with _writing(engine) as conn:
        if _has_layout(conn, current, zone):
            return
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY + 1})
        if _has_layout(conn, current, zone):
            return
        for table in (STATE, JOBS, ERRORS):
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        for ddl in TABLES:
            conn.execute(sa.text(ddl))
        conn.execute(sa.text(f"INSERT INTO {STATE} (id, version, ratio, zone, covered_until, completed_mark) "
                             "VALUES (1, :v, :r, :zone, NULL, NULL)"),
                     {"v": LAYOUT_VERSION, "r": RATIO, "zone": zone or "UTC"})


@contextlib.contextmanager
def _writing(engine: Engine):
    """A transaction whose connection failures read as data.db.DatabaseUnavailable."""
    try:
        with engine.begin() as conn:
            yield conn
    except _UNAVAILABLE as exc:
        raise _translate(exc, engine) from exc


def _has_layout(conn, current: str, zone: str | None) -> bool:
    if not conn.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": STATE}).scalar():
        return False
    # Older layouts lack columns the check reads: such a table is out of date.
    columns = conn.execute(sa.text(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = :s AND table_name = 'rollup_state' "
        "AND column_name IN ('version', 'zone')"), {"s": APP_SCHEMA}).scalar()
    return columns == 2 and conn.execute(sa.text(current), {"v": LAYOUT_VERSION, "zone": zone}).first() is not None


def _locked_step(engine: Engine, step) -> Any:
    """Run ``step(conn, state)`` in a transaction holding the rollup's advisory lock; returns
    ``(False, None)`` when another process holds it."""
    with _writing(engine) as conn:
        conn.execute(sa.text(f"SET LOCAL statement_timeout = '{MAINTENANCE_TIMEOUT}'"))
        if not conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _LOCK_KEY}).scalar():
            return False, None
        state = conn.execute(sa.text(f"SELECT * FROM {STATE} WHERE id = 1")).mappings().first()
        now = conn.execute(sa.text("SELECT now()")).scalar()
        state = dict(state)
        if state["covered_until"] is None:
            state.update(_start_over(conn, now))
        done = step(conn, state, now)
    forget_kept_reads()  # fact rows kept for the analytics sections may be out of date now
    return True, done


def _start_over(conn, now: datetime) -> dict:
    """Empty rollup, covering from the first job's hour (or now when there is none)."""
    for table in (JOBS, ERRORS):
        conn.execute(sa.text(f"TRUNCATE {table}"))
    first = conn.execute(sa.text("SELECT min(created_at) FROM job_queue")).scalar()
    covered = floor_hour(first if first is not None else now - LAG)
    state = {"covered_until": covered, "completed_mark": now - LAG, "reconciled_at": None}
    _save(conn, state)
    return state


def _save(conn, state: dict) -> None:
    conn.execute(sa.text(f"UPDATE {STATE} SET covered_until = :covered_until, completed_mark = :completed_mark, "
                         "reconciled_at = :reconciled_at WHERE id = 1"), state)


def _advance(conn, state: dict, now: datetime) -> dict:
    """One bounded step: fold in late changes, then aggregate the next new hours."""
    covered, mark, hi = state["covered_until"], state["completed_mark"], now - LAG
    dirty = [r[0] for r in conn.execute(sa.text("""
        SELECT DISTINCT date_trunc('hour', created_at, 'UTC') FROM job_queue
        WHERE ((completed_at > :mark AND completed_at <= :hi) OR (started_at > :mark AND started_at <= :hi))
          AND created_at < :covered"""),
        {"mark": mark, "hi": hi, "covered": covered})]
    _rebuild_hours(conn, dirty)
    target = min(floor_hour(hi), covered + MAX_STEP)
    new_hours = []
    if target > covered:
        _rebuild_range(conn, covered, target)
        new_hours = [covered + HOUR * i for i in range(int((target - covered) / HOUR))]
    state.update(covered_until=max(covered, target), completed_mark=max(mark, hi))
    _rebuild_coarse(conn, dirty + new_hours, state["covered_until"], state["zone"])
    _save(conn, state)
    return {"dirty_hours": len(dirty), "new_hours": int(max(target - covered, timedelta(0)) / HOUR),
            "behind": floor_hour(hi) > state["covered_until"]}


def refresh(engine: Engine, budget_s: float = REFRESH_BUDGET_S, zone: str | None = None) -> dict:
    """Bring the rollup up to date (bounded steps until caught up or ``budget_s`` is spent); a
    rollup kept in another zone than ``zone`` (when given) is rebuilt in it. Returns what was
    done; ``{"skipped": True}`` when another process is refreshing."""
    ensure_tables(engine, zone)
    started, done = time.monotonic(), {"dirty_hours": 0, "new_hours": 0, "steps": 0}
    while True:
        got, step = _locked_step(engine, _advance)
        if not got:
            return {"skipped": True}
        done["steps"] += 1
        done["dirty_hours"] += step["dirty_hours"]
        done["new_hours"] += step["new_hours"]
        if not step["behind"] or time.monotonic() - started > budget_s:
            done["behind"] = step["behind"]
            return done


def _reconcile(conn, state: dict, now: datetime) -> dict:
    differ = [r[0] for r in conn.execute(sa.text(f"""
        WITH raw AS (
            SELECT date_trunc('hour', created_at, 'UTC') AS t, status, count(*) AS n FROM job_queue
            WHERE created_at < :covered GROUP BY 1, 2
        ),
        kept AS (SELECT period_start AS t, status, sum(jobs) AS n FROM {JOBS} WHERE grain = 'hour' GROUP BY 1, 2)
        SELECT DISTINCT coalesce(raw.t, kept.t) FROM raw FULL JOIN kept USING (t, status)
        WHERE raw.n IS DISTINCT FROM kept.n"""), {"covered": state["covered_until"]})]
    _rebuild_hours(conn, differ)
    _rebuild_coarse(conn, differ, state["covered_until"], state["zone"])
    state["reconciled_at"] = now
    _save(conn, state)
    return {"rebuilt_hours": len(differ)}


def reconcile(engine: Engine) -> dict:
    """Re-aggregate every covered hour whose job counts by status differ from the raw table."""
    ensure_tables(engine)
    got, result = _locked_step(engine, _reconcile)
    return result if got else {"skipped": True}


def reconcile_due(engine: Engine) -> bool:
    row = read_row(engine, f"SELECT reconciled_at, now() AS now FROM {STATE} WHERE id = 1")
    return row is not None and (row["reconciled_at"] is None or row["now"] - row["reconciled_at"] >= RECONCILE_EVERY)


def status(engine: Engine) -> dict:
    """How far the rollup reaches: ``covered_until``, ``behind`` (how far before now, as a
    timedelta), ``reconciled_at``, ``zone`` (of its days and weeks) and rows per grain."""
    ensure_tables(engine)
    row = read_row(engine, f"SELECT covered_until, reconciled_at, zone, now() AS now FROM {STATE} WHERE id = 1")
    grains = read_row(engine, f"""SELECT count(*) FILTER (WHERE grain = 'hour') AS hour,
        count(*) FILTER (WHERE grain = 'day') AS day, count(*) FILTER (WHERE grain = 'week') AS week
        FROM {JOBS}""")
    covered = row["covered_until"]
    return {"covered_until": covered, "behind": None if covered is None else row["now"] - covered,
            "reconciled_at": row["reconciled_at"], "zone": row["zone"], "rows": dict(grains)}


def maintain(engine: Engine, zone: str | None = None) -> dict:
    """One maintenance pass: the job rollup (kept in ``zone``, see refresh), the robots' rollup,
    the hourly reconciliation."""
    done = {"jobs": refresh(engine, zone=zone)}
    try:
        from data import robot_rollup
    except ImportError:
        robot_rollup = None
    if robot_rollup is not None:
        done["robots"] = robot_rollup.refresh(engine)
    if reconcile_due(engine):
        done["reconcile"] = reconcile(engine)
    return done


def start_maintenance(engine: Engine, interval_s: float, zone: str = "UTC") -> threading.Thread | None:
    """Run ``maintain`` (rollup zone ``zone``) every ``interval_s`` seconds in a daemon thread
    (0: never)."""
    if interval_s <= 0:
        return None

    def loop():
        while True:
            try:
                done = maintain(engine, zone)
                log.debug("rollup maintenance: %s", done)
            except (DatabaseUnavailable, sa.exc.DBAPIError) as exc:
                log.warning("rollup maintenance failed, retrying in %s s: %s", interval_s, exc)
            except Exception:  # a bug must not stop the loop for good
                log.exception("rollup maintenance failed")
            time.sleep(interval_s)

    thread = threading.Thread(target=loop, name="rollup-maintenance", daemon=True)
    thread.start()
    return thread


# ---------------------------------------------------------------------------------------------
# Reads
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WindowPlan:
    """Where each part of a window is read from: week, day and hour rows (by start), raw ranges."""

    weeks: tuple[datetime, ...] = ()
    days: tuple[datetime, ...] = ()
    hours: tuple[datetime, ...] = ()
    raw: tuple[tuple[datetime, datetime], ...] = field(default_factory=tuple)


def _bucket_key(t: datetime, bucket: str, tz: str):
    local = t.astimezone(ZoneInfo(tz))
    if bucket == "day":
        return local.date()
    if bucket == "week":
        return local.date() - timedelta(days=local.weekday())
    return (local.date(), local.hour)


def plan_window(start: datetime, end: datetime, covered_until: datetime, tz: str = "UTC",
                bucket: str | None = None, zone: str = "UTC") -> WindowPlan:
    """Split [start, end) into rollup rows (days and weeks of the rollup zone ``zone``) and raw
    ranges so that each job is read once and, when ``bucket`` is given, every rollup row lies
    inside one bucket of that size in ``tz``."""
    hs, he = ceil_hour(start), min(floor_hour(end), covered_until)
    if he <= hs:
        return WindowPlan(raw=((start, end),))
    raw = tuple(r for r in ((start, hs), (he, end)) if r[0] < r[1])
    rows: dict[str, list[datetime]] = {"week": [], "day": [], "hour": []}
    t = hs
    while t < he:
        for grain in ("week", "day", "hour"):
            stop = period_end(grain, t, zone)
            if t == period_start(grain, t, zone) and stop <= he and (
                    grain == "hour" or bucket is None
                    or _bucket_key(t, bucket, tz) == _bucket_key(stop - HOUR, bucket, tz)):
                rows[grain].append(t)
                t = stop
                break
    return WindowPlan(weeks=tuple(rows["week"]), days=tuple(rows["day"]), hours=tuple(rows["hour"]), raw=raw)


@dataclass(frozen=True)
class Coverage:
    until: datetime   # every hour before it is in the rollup
    zone: str         # of its day and week rows


def coverage(engine: Engine) -> Coverage | None:
    """How far the rollup reaches and the zone of its days, or None before its first refresh.

    Kept for the page's sections like their fact rows (data.cache.kept_read): a plan made with
    an older ``until`` is still right, it reads more raw rows."""
    sql, params = f"SELECT covered_until, zone FROM {STATE} WHERE id = 1 AND version = :v", {"v": LAYOUT_VERSION}

    def load() -> Coverage | None:
        try:
            row = read_row(engine, sql, params)
        except sa.exc.ProgrammingError:  # no rollup tables yet, or of an older layout
            return None
        return Coverage(row["covered_until"], row["zone"]) if row and row["covered_until"] else None

    return kept_read(engine, sql, params, load)


def covered_until(engine: Engine) -> datetime | None:
    cov = coverage(engine)
    return cov.until if cov else None


_EXACT_ONLY = contextvars.ContextVar("rollups_exact_only", default=False)


@contextlib.contextmanager
def exact_only():
    """Within the block (this thread or task), reads use the exact queries, never the rollups."""
    token = _EXACT_ONLY.set(True)
    try:
        yield
    finally:
        _EXACT_ONLY.reset(token)


def usable_plan(engine: Engine, start: datetime, end: datetime, tz: str, bucket: str | None,
                robots=()) -> WindowPlan | None:
    """A plan when the rollup can answer this window, else None (use the exact queries)."""
    if _EXACT_ONLY.get() or robots or end - start <= EXACT_MAX_WINDOW or not whole_hour_zone(tz, start, end):
        return None
    cov = coverage(engine)
    if cov is None or cov.until < min(end, datetime.now(timezone.utc)) - MAX_LAG_BEHIND:
        return None
    return plan_window(start, end, cov.until, tz, bucket, cov.zone)


def _plan_params(plan: WindowPlan) -> dict:
    params: dict[str, Any] = {"r_weeks": list(plan.weeks), "r_days": list(plan.days), "r_hours": list(plan.hours)}
    for i, (lo, hi) in enumerate(plan.raw):
        params[f"r_lo{i}"], params[f"r_hi{i}"] = lo, hi
    return params


def facts_sql(plan: WindowPlan, filters: str, table: str = "jobs") -> tuple[str, dict]:
    """SQL for the fact rows of a planned window (rollup rows and raw rows in one shape,
    column ``t`` = period or job start), with ``filters`` applied (conditions on workflow_id and
    environment written with an ``{a}`` prefix: the raw rows' alias); and its parameters."""
    raw_range = " OR ".join(f"(j.created_at >= :r_lo{i} AND j.created_at < :r_hi{i})"
                            for i in range(len(plan.raw))) or "FALSE"
    raw_filters, filters = filters.format(a="j."), filters.format(a="")
    if table == "jobs":
        cols, raw = _COLUMNS, raw_facts_sql(f"({raw_range}) AND {raw_filters}")
        name = JOBS
    else:
        cols, raw = _ERROR_COLUMNS, raw_errors_sql(f"({raw_range}) AND {raw_filters}")
        name = ERRORS
    sql = f"""
        SELECT period_start AS t, {cols} FROM {name}
        WHERE grain = 'week' AND period_start = ANY(CAST(:r_weeks AS timestamptz[])) AND {filters}
        UNION ALL
        SELECT period_start AS t, {cols} FROM {name}
        WHERE grain = 'day' AND period_start = ANY(CAST(:r_days AS timestamptz[])) AND {filters}
        UNION ALL
        SELECT period_start AS t, {cols} FROM {name}
        WHERE grain = 'hour' AND period_start = ANY(CAST(:r_hours AS timestamptz[])) AND {filters}
        UNION ALL
        SELECT t, {cols} FROM ({raw}) r"""
    return sql, _plan_params(plan)
