"""Per-robot rollup behind the fleet list's work numbers (data.robots.robot_work_stats), the KPI
tiles' finished jobs (data.fleet.fleet_kpis) and the utilization of long windows
(data.robots.utilization, utilization_by_hour_of_week).

The list shows, per robot, jobs completed and failed today, completed and finished in 7 days and
utilization over the last 24 hours; the analytics show utilization per robot and by hour of the
week over windows of up to a year. Read from the raw rows that is every job of the window (10 M
rows for 90 days at 10 M jobs) and an event sweep over all their intervals. This module keeps, in
the app's own schema:

``fleet_monitor.robot_hourly`` (robot_id, hour), one row per robot and UTC hour:
    ``completed``, ``failed``: jobs with ``completed_at`` in the hour, by final status;
    ``busy``: seconds of the hour during which the robot ran at least k jobs, for k = 1, 2, …
    (``busy[k]``; the array is as long as the hour's highest concurrency). The utilization
    definition of data.robots caps concurrency at the robot's capacity c, and
    ``∫ min(n(t), c) dt = busy[1] + … + busy[c]``, so the rollup does not depend on c (a
    capacity change needs no rebuild). NULL when no job overlapped the hour (the row exists
    for the counts only), ``'{}'`` when a job touched it without running time;
    ``max_dur``: the longest ``completed_at - started_at`` (seconds) of the jobs that finished
    in the hour (any status), which bounds how far back a job that finished later started;
    ``dur_sum``, ``timed``: the sum of those durations and how many, over the completed and
    failed jobs that have both timestamps (the fleet's KPI tiles: average duration).

``fleet_monitor.robot_daily`` (robot_id, day): per robot and whole UTC day below the watermark,
    ``busy`` summed level by level over the day's hours and accumulated, ``busy[c]`` = the day's
    seconds at concurrency capped at c (c at most the array's length; robots that ran in the day
    only), so a 90-day window reads 90 rows per robot instead of 2,160, one element each.

``fleet_monitor.robot_weekly`` (robot_id, week): the same per whole UTC week (Monday to Monday),
    summed from the day rows, so that 90-day window reads 13 rows per robot.

``fleet_monitor.robot_fleet_hourly`` (hour, environment, capacity): per UTC hour, the capped
    busy seconds (busy[1] + … + busy[c]) summed over the robots of one environment and capacity,
    the hour's longest job (``max_dur``) and the sums of ``completed``, ``failed``, ``dur_sum``
    and ``timed``: the hour-of-week heatmap of the fleet or of one environment, and the KPI
    tiles' finished jobs, read one row per hour and group. Environment and capacity are the ones recorded
    for each robot in ``fleet_monitor.robot_rollup_members`` when it first appeared (a robot id
    without a robots row: no environment, capacity 1). When a robot's row changes, readers
    correct for it from its hour rows (take it out of its recorded group, add it to its current
    one), and each refresh moves up to 50 such robots for good (rows of differences, folded
    into the hour's row when the hour is next recomputed).

``fleet_monitor.robot_hour_keys`` (robot_id, hour)
    ``id_keys``, ``state_keys``: for every job counted in or overlapping the hour, a 64-bit hash
    of its id and of the state it was counted with (status, robot, started_at, completed_at).
    They find the hours a job left (see below) without keeping a copy of the jobs.

``fleet_monitor.robot_rollup_state`` (one row)
    ``lo`` and ``watermark`` (UTC hours): the rollup holds every hour in [lo, watermark).

Readers take whole hours (and whole UTC days and weeks) inside [lo, watermark) from the rollup and read the
raw rows only for the partial hours at a window's edges and for the time after the watermark
(under an hour plus ``LAG``), so the numbers equal the raw computation. Before the first refresh
(or while the backfill has not reached back far enough) they return None and the caller reads the
raw rows. Zones whose clock hours are not whole UTC hours (India, Newfoundland…) read the
hour-of-week heatmap from the raw rows.

Maintenance: ``refresh(engine)``, called by the app's background maintenance loop (data.rollups)
or by anyone (it is idempotent). Each transaction runs under a transaction-level advisory lock; a
caller that does not get the lock skips (``{"skipped": "locked"}``). It only reads the
orchestrator's tables. Each call:

1. on first use (or a new ``VERSION``), empties the tables and starts from an empty range at the
   watermark;
2. recomputes the hours [old watermark - RECHECK, new watermark), new watermark = the last
   full hour before now() - LAG. The recheck catches jobs whose ``completed_at`` was written in
   the past (a slow commit, an orchestrator that backdates) up to RECHECK late;
3. finds the hours before that range that no longer match the jobs, and recomputes them, for
   the robots concerned. The candidates are the jobs that finished in the recomputed range (a
   job re-run in place has a new ``completed_at`` there), the running jobs, the pending jobs
   that were already tried (a running job re-queued by the orchestrator no longer occupies its
   robot), and the jobs moved to the dead-letter queue since DLQ_LOOKBACK before the old
   watermark (deleted from ``job_queue``). An hour is dirty when it holds a candidate's id with
   another state (the job left or changed: a re-run is uncounted from its old hour, not counted
   twice), or when a candidate now overlaps the hour without being in it (a long job re-run on
   another robot). At most ``MAX_DIRTY`` robot-hours per call; the rest stay dirty and are found
   next time. The day and fleet rows of the recomputed hours are rebuilt from their hour rows;
4. drops hours older than RETENTION (400 days);
5. then, in transactions of their own, backfills the history below ``lo`` one STEP (a day) per
   transaction, back to the oldest finished job or RETENTION, until done or BACKFILL_BUDGET_S
   has passed (the next call goes on). A first backfill is therefore many short transactions,
   newest day first, and the fleet list uses the rollup once 7 days are in.

Recomputing an hour replaces its rows, it never adds, so a refresh can be repeated or
interrupted (the transaction rolls back) without counting a job twice.

What it does not see: a job deleted from ``job_queue`` other than by a dead-letter move, a job
whose ``completed_at`` is written more than RECHECK in the past, and a status change that leaves
both timestamps alone (e.g. ``failed`` rewritten as ``completed``) more than RECHECK ago. Those
hours stay as they were counted until they fall out of the retention window.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from data.db import _UNAVAILABLE, _translate, frame_of
from data.robots import capped_busy_sql, concurrency_segments_sql
from data.rollups import ceil_hour, floor_hour, period_end, period_start
from data.schema import APP_SCHEMA

log = logging.getLogger(__name__)

VERSION = 6
RETENTION = timedelta(days=400)   # analytics windows reach a year back; the job history may be shorter
RECENT = timedelta(days=8)        # what the fleet list reads (7 days and the edge hours)
STEP = timedelta(days=1)          # hours of history one backfill transaction computes
BACKFILL_BUDGET_S = 20.0          # a refresh starts no backfill step after this long
DLQ_LOOKBACK = timedelta(days=8)  # dead-letter moves looked for before the old watermark
RECHECK = timedelta(hours=2)
LAG = timedelta(seconds=30)       # lets the orchestrator's transaction that set completed_at commit
MAX_DIRTY = 2000                  # robot-hours recomputed per call outside the recheck range
HOUR = timedelta(hours=1)
_ORIGIN = "timestamptz '2000-01-01 00:00:00+00'"

_LOCK_KEY = 0x466D5252  # "FmRR"
HOURLY = f"{APP_SCHEMA}.robot_hourly"
KEYS = f"{APP_SCHEMA}.robot_hour_keys"
STATE = f"{APP_SCHEMA}.robot_rollup_state"
DAILY = f"{APP_SCHEMA}.robot_daily"
WEEKLY = f"{APP_SCHEMA}.robot_weekly"
FLEET = f"{APP_SCHEMA}.robot_fleet_hourly"
MEMBERS = f"{APP_SCHEMA}.robot_rollup_members"
_WEEK_ORIGIN = datetime(2000, 1, 3, tzinfo=timezone.utc)   # a Monday: date_bin's origin for weeks


def _span_ddl(table: str, column: str) -> str:
    """A table of per-robot sums over a span of whole UTC days (robot_daily, robot_weekly)."""
    return f"""CREATE TABLE IF NOT EXISTS {table} (
            {column} timestamptz NOT NULL,
            robot_id text NOT NULL,
            busy float8[] NOT NULL,
            PRIMARY KEY ({column}, robot_id)
        )"""


_DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {APP_SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {HOURLY} (
            hour timestamptz NOT NULL,
            robot_id text NOT NULL,
            completed integer NOT NULL,
            failed integer NOT NULL,
            busy float8[],
            max_dur float8,
            PRIMARY KEY (hour, robot_id)
        )""",
    f"""CREATE TABLE IF NOT EXISTS {KEYS} (
            hour timestamptz NOT NULL,
            robot_id text NOT NULL,
            id_keys bigint[] NOT NULL,
            state_keys bigint[] NOT NULL,
            PRIMARY KEY (hour, robot_id)
        )""",
    f"CREATE INDEX IF NOT EXISTS robot_hour_keys_ids ON {KEYS} USING gin (id_keys)",
    f"CREATE INDEX IF NOT EXISTS robot_hourly_robot ON {HOURLY} (robot_id, hour)",
    _span_ddl(DAILY, "day"),
    _span_ddl(WEEKLY, "week"),
    f"""CREATE TABLE IF NOT EXISTS {FLEET} (
            hour timestamptz NOT NULL,
            environment text,
            capacity integer,
            busy float8 NOT NULL,
            max_dur float8
        )""",
    f"CREATE INDEX IF NOT EXISTS robot_fleet_hourly_hour ON {FLEET} (hour)",
    f"""CREATE TABLE IF NOT EXISTS {MEMBERS} (
            robot_id text PRIMARY KEY,
            environment text,
            capacity integer NOT NULL
        )""",
    f"""CREATE TABLE IF NOT EXISTS {STATE} (
            id integer PRIMARY KEY CHECK (id = 1),
            version integer NOT NULL,
            lo timestamptz NOT NULL,
            watermark timestamptz NOT NULL,
            refreshed_at timestamptz NOT NULL
        )""",
    # Columns added since the first layout: tables made before gain them (their rows are emptied
    # when VERSION changes).
    *(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column}"
      for table, column in ((HOURLY, "dur_sum float8 NOT NULL DEFAULT 0"), (HOURLY, "timed integer NOT NULL DEFAULT 0"),
                            (FLEET, "completed integer NOT NULL DEFAULT 0"), (FLEET, "failed integer NOT NULL DEFAULT 0"),
                            (FLEET, "dur_sum float8 NOT NULL DEFAULT 0"), (FLEET, "timed integer NOT NULL DEFAULT 0"))),
]


# Zero-weight events at each hour a job overlaps (the `overlapped` CTE), so segments split by hour.
_OVERLAP_MARKS = """
        UNION ALL
        SELECT DISTINCT robot_id, hour, 0, hour FROM overlapped"""


def ensure_tables(engine_or_conn) -> None:
    """Create the rollup's tables in the app's schema when missing (never touches others)."""
    if isinstance(engine_or_conn, Connection):
        for ddl in _DDL:
            engine_or_conn.execute(sa.text(ddl))
        return
    try:
        with engine_or_conn.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            ensure_tables(conn)
    except _UNAVAILABLE as exc:
        raise _translate(exc, engine_or_conn) from exc


# ---------------------------------------------------------------------------------------------
# Recomputing hours
# ---------------------------------------------------------------------------------------------
# Job state as counted: a job whose hash differs from the one stored with an hour has changed.
_STATE_HASH = ("hashtextextended(concat_ws('|', j.status, j.robot_id::text, "
               "extract(epoch FROM j.started_at), extract(epoch FROM j.completed_at)), 0)")
_ID_HASH = "hashtextextended(j.id::text, 0)"


def _compute_sql(robot_filter: bool) -> str:
    """Rows of [:a, :b) (whole UTC hours, :b <= now()) for every robot, or for :ids.

    The job intervals are the utilization definition's (data.robots), clipped to [:a, :b);
    a running job occupies its robot up to :b (it is running now, after :b)."""
    rf = "AND j.robot_id::text = ANY(CAST(:ids AS text[]))" if robot_filter else ""
    return f"""
    WITH base AS MATERIALIZED (
        -- One pass over the rows: those finished in [:a, :b) and those that ran in it. No job
        -- that finished in [:cmax, :w) started before :b (:cmax >= :b), so the scan of
        -- completed_at stops at :cmax and goes on from :w (a backfill step far in the past
        -- does not read everything that finished since).
        SELECT j.robot_id::text AS robot_id, {_ID_HASH} AS ik, {_STATE_HASH} AS sk, j.status,
               j.started_at, j.completed_at
        FROM job_queue j
        WHERE j.completed_at >= CAST(:a AS timestamptz) AND j.completed_at < CAST(:cmax AS timestamptz)
          AND (j.completed_at < CAST(:b AS timestamptz) OR j.started_at < CAST(:b AS timestamptz))
          AND j.robot_id IS NOT NULL {rf}
        UNION ALL
        SELECT j.robot_id::text AS robot_id, {_ID_HASH} AS ik, {_STATE_HASH} AS sk, j.status,
               j.started_at, j.completed_at
        FROM job_queue j
        WHERE j.completed_at >= greatest(CAST(:w AS timestamptz), CAST(:cmax AS timestamptz), CAST(:a AS timestamptz))
          AND j.started_at < CAST(:b AS timestamptz)
          AND j.robot_id IS NOT NULL {rf}
    ),
    jobs AS (
        SELECT robot_id, ik, sk, greatest(started_at, CAST(:a AS timestamptz)) AS s,
               least(completed_at, CAST(:b AS timestamptz)) AS e
        FROM base
        WHERE completed_at > CAST(:a AS timestamptz) AND started_at < CAST(:b AS timestamptz)
        UNION ALL
        SELECT j.robot_id::text, {_ID_HASH}, {_STATE_HASH},
               greatest(j.started_at, CAST(:a AS timestamptz)), CAST(:b AS timestamptz)
        FROM job_queue j
        WHERE j.status = 'running' AND j.completed_at IS NULL AND j.started_at < CAST(:b AS timestamptz)
          AND j.robot_id IS NOT NULL {rf}
    ),
    finished AS (
        SELECT robot_id, date_bin('1 hour', completed_at, {_ORIGIN}) AS hour, ik, sk, status,
               extract(epoch FROM completed_at - started_at)::float8 AS dur
        FROM base
        WHERE completed_at < CAST(:b AS timestamptz)
    ),
    counts AS (
        SELECT robot_id, hour,
               count(*) FILTER (WHERE status = 'completed') AS completed,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               max(dur) AS max_dur,
               coalesce(sum(dur) FILTER (WHERE status IN ('completed', 'failed')), 0) AS dur_sum,
               count(dur) FILTER (WHERE status IN ('completed', 'failed')) AS timed
        FROM finished GROUP BY robot_id, hour
    ),
    -- Hours each job overlaps (a job without running time still marks its first hour).
    overlapped AS (
        SELECT j.robot_id, g.h AS hour, j.ik, j.sk
        FROM jobs j,
             generate_series(date_bin('1 hour', j.s, {_ORIGIN}),
                             greatest(date_bin('1 hour', j.s, {_ORIGIN}),
                                      date_bin('1 hour', j.e - interval '1 microsecond', {_ORIGIN})),
                             interval '1 hour') AS g(h)
    ),
{concurrency_segments_sql("jobs", _OVERLAP_MARKS)},
    by_n AS (
        SELECT robot_id, hour, n::int AS n, sum(extract(epoch FROM t_next - t))::float8 AS seconds
        FROM segments WHERE n > 0 AND t_next IS NOT NULL AND t_next > t
        GROUP BY robot_id, hour, n
    ),
    levels AS (
        SELECT robot_id, hour, k, sum(seconds) AS seconds
        FROM by_n, generate_series(1, n) AS k
        GROUP BY robot_id, hour, k
    ),
    level_arrays AS (
        SELECT robot_id, hour, array_agg(seconds ORDER BY k) AS busy FROM levels GROUP BY robot_id, hour
    ),
    busy AS (
        SELECT o.robot_id, o.hour, coalesce(l.busy, '{{}}') AS busy
        FROM (SELECT DISTINCT robot_id, hour FROM overlapped) o
        LEFT JOIN level_arrays l ON l.robot_id = o.robot_id AND l.hour = o.hour
    ),
    keyed AS (
        SELECT robot_id, hour, ik, sk FROM overlapped
        UNION
        SELECT robot_id, hour, ik, sk FROM finished
    ),
    ins_keys AS (
        INSERT INTO {KEYS} (hour, robot_id, id_keys, state_keys)
        SELECT hour, robot_id, array_agg(ik ORDER BY ik, sk), array_agg(sk ORDER BY ik, sk)
        FROM keyed GROUP BY hour, robot_id
        RETURNING 1
    )
    INSERT INTO {HOURLY} (hour, robot_id, completed, failed, busy, max_dur, dur_sum, timed)
    SELECT coalesce(c.hour, b.hour), coalesce(c.robot_id, b.robot_id),
           coalesce(c.completed, 0), coalesce(c.failed, 0), b.busy, c.max_dur,
           coalesce(c.dur_sum, 0), coalesce(c.timed, 0)
    FROM counts c FULL JOIN busy b ON b.robot_id = c.robot_id AND b.hour = c.hour
    """


def _recompute(conn: Connection, a: datetime, b: datetime, robot_ids: list[str] | None = None,
               cmax: datetime | None = None, w: datetime | None = None) -> None:
    """Replace the rows of hours [a, b) (of every robot, or of `robot_ids`) by fresh ones.

    `cmax`, `w` (default: both `b`): no job that finished in [cmax, w) started before `b`."""
    if b <= a:
        return
    cmax = b if cmax is None else max(cmax, b)
    w = cmax if w is None else max(w, cmax)
    params = {"a": a, "b": b, "cmax": cmax, "w": w}
    rf = ""
    if robot_ids is not None:
        params["ids"] = list(robot_ids)
        rf = "AND robot_id = ANY(CAST(:ids AS text[]))"
    for table in (HOURLY, KEYS):
        conn.execute(sa.text(f"DELETE FROM {table} WHERE hour >= :a AND hour < :b {rf}"), params)
    conn.execute(sa.text(_compute_sql(robot_ids is not None)), params)


# The robot-hours before :r1 that no longer match the jobs (see the module docstring, step 3).
_DIRTY_SQL = f"""
WITH cand AS (
    SELECT DISTINCT ON (ik) * FROM (
        SELECT {_ID_HASH} AS ik, {_STATE_HASH} AS sk, j.robot_id::text AS robot_id,
               -- occupies its robot (the utilization definition's intervals) from started_at to ended
               CASE WHEN j.completed_at IS NOT NULL OR j.status = 'running' THEN j.started_at END AS started_at,
               coalesce(j.completed_at, CAST(:r1 AS timestamptz)) AS ended
        FROM job_queue j
        WHERE j.completed_at >= CAST(:r1 AS timestamptz)
           OR j.status = 'running' OR (j.status = 'pending' AND j.retry_count > 0)
        UNION ALL
        SELECT hashtextextended(d.original_job_id::text, 0), NULL::bigint, NULL::text, NULL::timestamptz,
               NULL::timestamptz
        FROM {{dlq}} d
        WHERE d.original_job_id IS NOT NULL AND d.created_at >= CAST(:dlq_since AS timestamptz)
    ) c
    ORDER BY ik, sk NULLS LAST
),
stale AS (
    SELECT k.robot_id, k.hour
    FROM {KEYS} k
    CROSS JOIN LATERAL unnest(k.id_keys, k.state_keys) AS u(ik, sk)
    JOIN cand c ON c.ik = u.ik
    WHERE k.hour < CAST(:r1 AS timestamptz)
      AND k.id_keys && (SELECT array_agg(ik) FROM cand)
      AND u.sk IS DISTINCT FROM c.sk
),
missing AS (
    SELECT c.robot_id, g.h AS hour
    FROM cand c,
         generate_series(date_bin('1 hour', greatest(c.started_at, CAST(:lo AS timestamptz)), {_ORIGIN}),
                         least(c.ended, CAST(:r1 AS timestamptz)) - interval '1 microsecond',
                         interval '1 hour') AS g(h)
    WHERE c.robot_id IS NOT NULL AND c.started_at IS NOT NULL
      AND c.started_at < CAST(:r1 AS timestamptz) AND c.ended > CAST(:lo AS timestamptz)
      AND NOT EXISTS (
          SELECT 1 FROM {KEYS} k, unnest(k.id_keys, k.state_keys) AS u(ik, sk)
          WHERE k.hour = g.h AND k.robot_id = c.robot_id AND u.ik = c.ik AND u.sk = c.sk)
)
SELECT robot_id, hour FROM (SELECT * FROM stale UNION SELECT * FROM missing) d
ORDER BY hour DESC, robot_id LIMIT {MAX_DIRTY}
"""


def _dirty(conn: Connection, lo: datetime, r1: datetime, dlq_since: datetime) -> pd.DataFrame:
    dlq = conn.execute(sa.text("SELECT to_regclass('job_queue_dlq') IS NOT NULL")).scalar()
    source = "job_queue_dlq" if dlq else "(SELECT NULL::uuid AS original_job_id, NULL::timestamptz AS created_at)"
    result = conn.execute(sa.text(_DIRTY_SQL.replace("{dlq}", source)),
                          {"lo": lo, "r1": r1, "dlq_since": max(lo, dlq_since)})
    return frame_of(["robot_id", "hour"], result.fetchall())


def capped_sql(busy: str, cap: str) -> str:
    """busy[1] + … + busy[cap] (0 for NULL): the seconds at concurrency capped at `cap`."""
    return (f"(CASE WHEN {busy} IS NULL THEN 0::float8 WHEN {cap} = 1 THEN coalesce({busy}[1], 0)::float8 "
            f"ELSE (SELECT coalesce(sum(v), 0)::float8 FROM unnest({busy}[1:{cap}]) AS l(v)) END)")


_CURRENT_MAPPING = """
    SELECT r.robot_id::text AS robot_id, r.environment::text AS environment,
           greatest(coalesce(r.max_concurrent_jobs, 1), 1) AS capacity
    FROM robots r"""

# Members whose environment or capacity in `robots` is no longer the one their fleet rows used
# (a robot id without a robots row is environment NULL, capacity 1).
MISMATCH_SQL = f"""
    SELECT m.robot_id, m.environment AS old_env, m.capacity AS old_cap,
           r.environment AS new_env, coalesce(r.capacity, 1) AS new_cap
    FROM {MEMBERS} m LEFT JOIN ({_CURRENT_MAPPING}) r USING (robot_id)
    WHERE m.environment IS DISTINCT FROM r.environment OR m.capacity <> coalesce(r.capacity, 1)"""


def _clear_span(conn: Connection, table: str, column: str, a: datetime, b: datetime,
                robot_ids: list[str] | None) -> tuple[dict, str]:
    """Delete the day or week rows starting in [a, b) (of `robot_ids` when given); returns the
    parameters and the robot filter for rebuilding them."""
    params: dict = {"a": a, "b": b}
    rf = ""
    if robot_ids is not None:
        params["ids"] = list(robot_ids)
        rf = "AND robot_id = ANY(CAST(:ids AS text[]))"
    conn.execute(sa.text(f"DELETE FROM {table} WHERE {column} >= :a AND {column} < :b {rf}"), params)
    return params, rf


def _rebuild_days(conn: Connection, a: datetime, b: datetime, watermark: datetime,
                  robot_ids: list[str] | None = None) -> None:
    """Day rows (level sums of the day's hours) of the UTC days meeting [a, b) that end by the
    watermark, of every robot or of `robot_ids`. A day not yet whole below ``lo`` is a partial
    sum until the backfill reaches its start (readers use only days inside [lo, watermark))."""
    da = _floor("day", a)
    db = min(_ceil("day", b), _floor("day", watermark))
    if db <= da:
        return
    params, rf = _clear_span(conn, DAILY, "day", da, db, robot_ids)
    conn.execute(sa.text(f"""
        WITH h AS (
            SELECT date_bin('1 day', hour, {_ORIGIN}) AS day, robot_id, busy FROM {HOURLY}
            WHERE hour >= :a AND hour < :b AND busy IS NOT NULL {rf}
        ),
        lv AS (
            SELECT day, robot_id, u.k, sum(u.v) AS s
            FROM h, unnest(h.busy) WITH ORDINALITY AS u(v, k) GROUP BY 1, 2, 3
        ),
        cum AS (SELECT day, robot_id, k, sum(s) OVER (PARTITION BY day, robot_id ORDER BY k) AS c FROM lv),
        arr AS (SELECT day, robot_id, array_agg(c ORDER BY k) AS busy FROM cum GROUP BY 1, 2)
        INSERT INTO {DAILY} (day, robot_id, busy)
        SELECT p.day, p.robot_id, coalesce(arr.busy, '{{}}')
        FROM (SELECT DISTINCT day, robot_id FROM h) p LEFT JOIN arr USING (day, robot_id)
        """), params)
    _rebuild_weeks(conn, da, db, watermark, robot_ids)


def _rebuild_weeks(conn: Connection, a: datetime, b: datetime, watermark: datetime,
                   robot_ids: list[str] | None = None) -> None:
    """Week rows (Monday to Monday, UTC) meeting [a, b) that end by the watermark, from their
    day rows: a cumulative array summed level by level, a day's last level standing for the
    levels above it (no time at a higher concurrency). Partial below ``lo`` like the days."""
    wa = _floor("week", a)
    wb = min(_ceil("week", b), _floor("week", watermark))
    if wb <= wa:
        return
    params, rf = _clear_span(conn, WEEKLY, "week", wa, wb, robot_ids)
    params["origin"] = _WEEK_ORIGIN
    conn.execute(sa.text(f"""
        WITH d AS (
            SELECT date_bin('7 days', day, CAST(:origin AS timestamptz)) AS week, robot_id, busy FROM {DAILY}
            WHERE day >= :a AND day < :b {rf}
        ),
        k AS (SELECT week, robot_id, max(cardinality(busy)) AS n FROM d GROUP BY 1, 2),
        lv AS (
            SELECT d.week, d.robot_id, g.i, sum(coalesce(d.busy[least(g.i, cardinality(d.busy))], 0)) AS s
            FROM d JOIN k USING (week, robot_id) CROSS JOIN LATERAL generate_series(1, k.n) AS g(i)
            GROUP BY 1, 2, 3
        )
        INSERT INTO {WEEKLY} (week, robot_id, busy)
        SELECT k.week, k.robot_id, coalesce(array_agg(lv.s ORDER BY lv.i) FILTER (WHERE lv.i IS NOT NULL), '{{}}')
        FROM k LEFT JOIN lv USING (week, robot_id) GROUP BY 1, 2
        """), params)


def _rebuild_fleet(conn: Connection, a: datetime, b: datetime) -> None:
    """Fleet rows of hours [a, b): per environment × capacity (as recorded in MEMBERS), the
    capped busy seconds summed over robots, and the longest job that finished in the hour."""
    if b <= a:
        return
    params = {"a": a, "b": b}
    conn.execute(sa.text(f"""
        INSERT INTO {MEMBERS} (robot_id, environment, capacity)
        SELECT h.robot_id, r.environment, coalesce(r.capacity, 1)
        FROM (SELECT DISTINCT robot_id FROM {HOURLY} WHERE hour >= :a AND hour < :b) h
        LEFT JOIN ({_CURRENT_MAPPING}) r USING (robot_id)
        ON CONFLICT (robot_id) DO NOTHING"""), params)
    conn.execute(sa.text(f"DELETE FROM {FLEET} WHERE hour >= :a AND hour < :b"), params)
    conn.execute(sa.text(f"""
        INSERT INTO {FLEET} (hour, environment, capacity, busy, max_dur, completed, failed, dur_sum, timed)
        SELECT h.hour, m.environment, m.capacity, sum({capped_sql("h.busy", "m.capacity")}), max(h.max_dur),
               sum(h.completed), sum(h.failed), sum(h.dur_sum), sum(h.timed)
        FROM {HOURLY} h JOIN {MEMBERS} m USING (robot_id)
        WHERE h.hour >= :a AND h.hour < :b
        GROUP BY 1, 2, 3"""), params)


def _rebase(conn: Connection, limit: int = 50) -> int:
    """Move up to `limit` robots whose environment or capacity changed to their new fleet group:
    their capped seconds are taken out of the old group and added to the new one (rows of
    differences; a later rebuild of the hour folds them in). Readers correct for the robots not
    yet moved, so this only keeps that correction small."""
    return conn.execute(sa.text(f"""
        WITH x AS MATERIALIZED ({MISMATCH_SQL} ORDER BY 1 LIMIT {int(limit)}),
        d AS (
            SELECT h.hour, x.old_env AS env, x.old_cap AS cap, -{capped_sql("h.busy", "x.old_cap")} AS v
            FROM {HOURLY} h JOIN x USING (robot_id) WHERE h.busy IS NOT NULL
            UNION ALL
            SELECT h.hour, x.new_env, x.new_cap, {capped_sql("h.busy", "x.new_cap")}
            FROM {HOURLY} h JOIN x USING (robot_id) WHERE h.busy IS NOT NULL
        ),
        ins AS (
            INSERT INTO {FLEET} (hour, environment, capacity, busy, max_dur)
            SELECT hour, env, cap, sum(v), NULL FROM d GROUP BY 1, 2, 3
            RETURNING 1
        ),
        upd AS (
            UPDATE {MEMBERS} m SET environment = x.new_env, capacity = x.new_cap
            FROM x WHERE m.robot_id = x.robot_id RETURNING 1
        )
        SELECT (SELECT count(*) FROM upd) + 0 * (SELECT count(*) FROM ins)""")).scalar() or 0


def _floor(grain: str, ts: datetime) -> datetime:
    """The start of the UTC day or week (Monday) that holds ``ts`` (as the job rollup's days)."""
    return period_start(grain, ts, "UTC")


def _ceil(grain: str, ts: datetime) -> datetime:
    floor = _floor(grain, ts)
    return floor if floor == ts else period_end(grain, floor, "UTC")


def _target_lo(conn: Connection, now: datetime, watermark: datetime) -> datetime:
    """Where the rollup should start: RETENTION back, or the oldest finished job if later."""
    oldest = conn.execute(sa.text("SELECT min(completed_at) FROM job_queue WHERE completed_at IS NOT NULL")).scalar()
    lo = floor_hour(now - RETENTION)
    if oldest is None:
        return watermark
    return min(max(lo, floor_hour(oldest)), watermark)


def _begin_locked(conn: Connection) -> bool:
    conn.execute(sa.text("SET LOCAL statement_timeout = 0"))
    return bool(conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _LOCK_KEY}).scalar())


def _save_state(conn: Connection, lo: datetime, watermark: datetime) -> None:
    conn.execute(
        sa.text(f"INSERT INTO {STATE} (id, version, lo, watermark, refreshed_at) "
                "VALUES (1, :v, :lo, :w, now()) ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, "
                "lo = EXCLUDED.lo, watermark = EXCLUDED.watermark, refreshed_at = EXCLUDED.refreshed_at"),
        {"v": VERSION, "lo": lo, "w": watermark})


def _elapsed(conn: Connection, started) -> float:
    return round(float(conn.execute(sa.text("SELECT extract(epoch FROM clock_timestamp() - :t)::float8"),
                                    {"t": started}).scalar()), 3)


def refresh(engine: Engine, *, now: datetime | None = None, budget_s: float = BACKFILL_BUDGET_S) -> dict:
    """Bring the rollup up to date (see the module docstring). Returns what it did:
    ``{"skipped": "locked"}`` when another process is refreshing, else ``backfilled`` (hours of
    history added below ``lo`` by this call), ``behind`` (history still to backfill), ``lo``,
    ``watermark``, ``recomputed`` ([from, to) of the recheck range), ``dirty`` (robot-hours
    recomputed outside it), ``rebased`` (robots moved to a new fleet group), ``steps`` and
    ``seconds`` (of each transaction). `now` is for tests (default: the database's now());
    `budget_s`: no backfill step starts after this long (0: none in this call)."""
    clock = time.monotonic()
    out = _refresh_recent(engine, now)
    if "skipped" in out:
        return out
    out.update(backfilled=0, steps=[])
    while out["behind"] and time.monotonic() - clock < budget_s:
        step = _backfill_step(engine, now)
        if "skipped" in step:
            break
        out["steps"].append(step["seconds"])
        out["backfilled"] += step["hours"]
        out.update(lo=step["lo"], behind=step["behind"])
    return out


@contextlib.contextmanager
def _locked(engine: Engine, now: datetime | None):
    """A transaction holding the rollup's lock: yields (connection, its clock at the start, now:
    `now` or the database's), or None when another process holds the lock. Connection failures
    read as data.db.DatabaseUnavailable."""
    try:
        with engine.begin() as conn:
            if not _begin_locked(conn):
                yield None
                return
            started = conn.execute(sa.text("SELECT clock_timestamp()")).scalar()
            if now is None:
                now = conn.execute(sa.text("SELECT now()")).scalar()
            yield conn, started, now
    except _UNAVAILABLE as exc:
        raise _translate(exc, engine) from exc


def _refresh_recent(engine: Engine, now: datetime | None) -> dict:
    """One transaction: start afresh (new table layout), or recompute the recheck range and the
    dirty hours, advance the watermark and drop hours older than RETENTION."""
    with _locked(engine, now) as held:
        if held is None:
            return {"skipped": "locked"}
        conn, started, now = held
        tables = (STATE, HOURLY, KEYS, DAILY, WEEKLY, FLEET, MEMBERS)
        present = conn.execute(sa.text("SELECT bool_and(to_regclass(t) IS NOT NULL) FROM unnest(CAST(:t AS text[])) t"),
                               {"t": list(tables)}).scalar()
        if not present:
            ensure_tables(conn)
        state = conn.execute(sa.text(f"SELECT version, lo, watermark FROM {STATE} WHERE id = 1 FOR UPDATE")
                             ).mappings().first()
        watermark = floor_hour(now - LAG)
        retention_lo = floor_hour(now - RETENTION)
        out = {"dirty": 0, "rebased": 0}
        if state is None or state["version"] != VERSION or state["watermark"] <= retention_lo:
            # From scratch: an empty range at the watermark; backfill steps extend it back.
            ensure_tables(conn)
            for table in (HOURLY, KEYS, DAILY, WEEKLY, FLEET, MEMBERS):
                conn.execute(sa.text(f"DELETE FROM {table}"))
            lo = watermark
            out.update(recomputed=(watermark, watermark), reset=True)
        else:
            lo, old = max(state["lo"], retention_lo), state["watermark"]
            r1 = max(lo, min(old, watermark) - RECHECK)
            dirty = _dirty(conn, lo, r1, old - DLQ_LOOKBACK)
            fleet_hours = []
            for (a, b), robots in _ranges(dirty).items():
                _recompute(conn, a, b, robots, cmax=watermark)
                _rebuild_days(conn, a, b, watermark, robots)
                fleet_hours.append((a, b))
            _recompute(conn, r1, watermark)
            _rebuild_days(conn, r1, watermark, watermark)
            fleet_hours.append((r1, watermark))
            for a, b in _merge(fleet_hours):
                _rebuild_fleet(conn, a, b)
            out["rebased"] = _rebase(conn)
            for table in (HOURLY, KEYS, FLEET):
                conn.execute(sa.text(f"DELETE FROM {table} WHERE hour < :lo"), {"lo": lo})
            conn.execute(sa.text(f"DELETE FROM {DAILY} WHERE day + interval '1 day' <= :lo"), {"lo": lo})
            conn.execute(sa.text(f"DELETE FROM {WEEKLY} WHERE week + interval '7 days' <= :lo"), {"lo": lo})
            out.update(recomputed=(r1, watermark), dirty=len(dirty))
        _save_state(conn, lo, watermark)
        target = _target_lo(conn, now, watermark)
        out.update(lo=lo, watermark=watermark, behind=lo > target, seconds=_elapsed(conn, started))
        return out


def _backfill_step(engine: Engine, now: datetime | None) -> dict:
    """One transaction: compute the STEP of history just below ``lo`` (every robot)."""
    with _locked(engine, now) as held:
        if held is None:
            return {"skipped": "locked"}
        conn, started, now = held
        state = conn.execute(sa.text(f"SELECT version, lo, watermark FROM {STATE} WHERE id = 1 FOR UPDATE")
                             ).mappings().first()
        if state is None or state["version"] != VERSION:
            return {"skipped": "no state"}
        lo, watermark = state["lo"], state["watermark"]
        target = _target_lo(conn, now, watermark)
        if lo <= target:
            return {"lo": lo, "behind": False, "hours": 0, "seconds": 0.0}
        a = max(target, lo - STEP)
        # Jobs that finished in a rollup hour H >= lo started at most max_dur(H) before it.
        _recompute(conn, a, lo, cmax=_bound(conn, lo, lo, watermark) or lo, w=watermark)
        _rebuild_days(conn, a, lo, watermark)
        _rebuild_fleet(conn, a, lo)
        _save_state(conn, a, watermark)
        return {"lo": a, "behind": a > target, "hours": int((lo - a) / HOUR),
                "seconds": _elapsed(conn, started)}


def _ranges(dirty: pd.DataFrame) -> dict[tuple[datetime, datetime], list[str]]:
    """Dirty robot-hours grouped into (hour range -> robots) for as few statements as possible:
    each robot's run of consecutive hours is one range; robots with the same range share it."""
    out: dict[tuple[datetime, datetime], list[str]] = {}
    if dirty.empty:
        return out
    for robot_id, hours in dirty.groupby("robot_id")["hour"]:
        hours = sorted(pd.Timestamp(h).to_pydatetime() for h in hours)
        start = prev = hours[0]
        for h in hours[1:] + [None]:
            if h is not None and h == prev + HOUR:
                prev = h
                continue
            out.setdefault((start, prev + HOUR), []).append(str(robot_id))
            if h is not None:
                start = prev = h
    return out


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
@dataclass
class Coverage:
    lo: datetime
    watermark: datetime


def coverage(conn: Connection) -> Coverage | None:
    """The hours the rollup holds, or None before the first refresh."""
    present = conn.execute(sa.text("SELECT to_regclass(:s) IS NOT NULL AND to_regclass(:h) IS NOT NULL"),
                           {"s": STATE, "h": HOURLY}).scalar()
    if not present:
        return None
    row = conn.execute(sa.text(f"SELECT version, lo, watermark FROM {STATE} WHERE id = 1")).mappings().first()
    if row is None or row["version"] != VERSION or row["watermark"] <= row["lo"]:
        return None
    return Coverage(row["lo"], row["watermark"])


def _merge(intervals: list[tuple[datetime, datetime | None]]) -> list[tuple[datetime, datetime | None]]:
    """Union of [a, b) intervals (b None = unbounded) as sorted disjoint intervals."""
    items = sorted((a, b) for a, b in intervals if b is None or b > a)
    out: list[tuple[datetime, datetime | None]] = []
    for a, b in items:
        if out and (out[-1][1] is None or a <= out[-1][1]):
            last_a, last_b = out[-1]
            out[-1] = (last_a, None if (last_b is None or b is None) else max(last_b, b))
        else:
            out.append((a, b))
    return out


def _completed_in(ranges: list[tuple[datetime, datetime | None]], params: dict) -> str:
    """SQL: j.completed_at in one of the [a, b) ranges (b None: unbounded), their bounds added to
    ``params`` as :ra0, :rb0, …"""
    conds = []
    for i, (a, b) in enumerate(ranges):
        params[f"ra{i}"] = a
        if b is None:
            conds.append(f"j.completed_at >= :ra{i}")
        else:
            params[f"rb{i}"] = b
            conds.append(f"(j.completed_at >= :ra{i} AND j.completed_at < :rb{i})")
    return " OR ".join(conds) or "false"


def work_stats_sql(cov: Coverage, now: datetime, today_start: datetime, dmax_s: float,
                   max_robots: int) -> tuple[str, dict]:
    """The robot_work_stats query from the rollup plus the raw edges (see the module docstring).

    Same columns and values as the raw query in data.robots; `dmax_s` is max(max_dur) of the
    rollup hours of the utilization window (work_stats reads it first)."""
    week_ago, day_ago = now - timedelta(days=7), now - timedelta(hours=24)
    w = cov.watermark
    rt0 = max(ceil_hour(today_start), cov.lo)    # today's rollup hours: [rt0, w)
    rb0 = max(ceil_hour(week_ago), cov.lo)       # 7 days' rollup hours: [rb0, w)
    c0 = max(ceil_hour(day_ago), cov.lo)         # 24 h utilization's rollup hours: [c0, w)
    rt0, rb0, c0 = min(rt0, w), min(rb0, w), min(c0, w)
    params: dict = {"now": now, "t": today_start, "b7": week_ago, "s": day_ago, "w": w,
                    "rt0": rt0, "rb0": rb0, "c0": c0, "dmax": float(dmax_s)}

    # Raw rows for the counts: what the two count windows hold outside their rollup hours.
    raw_where = _completed_in(_merge([(week_ago, rb0), (today_start, rt0), (w, None)]), params)
    in_roll_t = "(j.completed_at >= :rt0 AND j.completed_at < :w)"
    in_roll_7 = "(j.completed_at >= :rb0 AND j.completed_at < :w)"

    sql = f"""
    WITH caps AS (
        SELECT r.robot_id::text AS robot_id, greatest(coalesce(r.max_concurrent_jobs, 1), 1) AS capacity
        FROM robots r LIMIT {int(max_robots)}
    ),
    raw_counts AS (
        SELECT j.robot_id::text AS robot_id,
               count(*) FILTER (WHERE j.status = 'completed' AND j.completed_at >= :t AND NOT {in_roll_t}) AS ct,
               count(*) FILTER (WHERE j.status = 'failed' AND j.completed_at >= :t AND NOT {in_roll_t}) AS ft,
               count(*) FILTER (WHERE j.status = 'completed' AND j.completed_at >= :b7 AND NOT {in_roll_7}) AS c7,
               count(*) FILTER (WHERE j.completed_at >= :b7 AND NOT {in_roll_7}) AS f7
        FROM job_queue j
        WHERE ({raw_where}) AND j.status IN ('completed', 'failed') AND j.robot_id IS NOT NULL
        GROUP BY 1
    ),
    roll_counts AS (
        SELECT robot_id,
               coalesce(sum(completed) FILTER (WHERE hour >= :rt0), 0) AS ct,
               coalesce(sum(failed) FILTER (WHERE hour >= :rt0), 0) AS ft,
               sum(completed) AS c7, sum(completed + failed) AS f7
        FROM {HOURLY} WHERE hour >= :rb0 AND hour < :w
        GROUP BY 1
    ),
    finished AS (
        SELECT robot_id, sum(ct) AS completed_today, sum(ft) AS failed_today,
               sum(c7) AS completed_7d, sum(f7) AS finished_7d
        FROM (SELECT * FROM raw_counts UNION ALL SELECT * FROM roll_counts) x
        GROUP BY 1 HAVING sum(f7) > 0
    ),
    -- Utilization: the rollup hours [c0, w), the raw job intervals in [s, c0) and [w, now).
    raw_jobs AS (
        SELECT j.robot_id::text AS robot_id, j.started_at AS s0, j.completed_at AS e0
        FROM job_queue j
        WHERE j.completed_at > :s AND j.completed_at <= :c0 AND j.started_at < :now AND j.robot_id IS NOT NULL
        UNION ALL
        SELECT j.robot_id::text, j.started_at, j.completed_at
        FROM job_queue j
        WHERE j.completed_at > :c0 AND j.completed_at < :w
          AND j.started_at >= CAST(:c0 AS timestamptz) - make_interval(secs => :dmax) AND j.started_at < :c0
          AND j.robot_id IS NOT NULL
        UNION ALL
        SELECT j.robot_id::text, j.started_at, j.completed_at
        FROM job_queue j
        WHERE j.completed_at >= :w AND j.completed_at > :s AND j.started_at < :now AND j.robot_id IS NOT NULL
        UNION ALL
        SELECT j.robot_id::text, j.started_at, CAST(:now AS timestamptz)
        FROM job_queue j
        WHERE j.status = 'running' AND j.completed_at IS NULL AND j.started_at < :now AND j.robot_id IS NOT NULL
    ),
    pieces AS (
        SELECT robot_id, greatest(s0, :s) AS s, least(e0, :c0, :now) AS e FROM raw_jobs
        UNION ALL
        SELECT robot_id, greatest(s0, :w), least(e0, :now) FROM raw_jobs
    ),
{concurrency_segments_sql("pieces")},
    -- busy[1] + ... + busy[capacity]: seconds at concurrency capped at capacity (1 without a robots row).
    roll_busy AS (
        SELECT h.robot_id, sum({capped_sql("h.busy", "coalesce(c.capacity, 1)")})::float8 AS busy_seconds
        FROM {HOURLY} h LEFT JOIN caps c USING (robot_id)
        WHERE h.hour >= :c0 AND h.hour < :w AND h.busy IS NOT NULL
        GROUP BY h.robot_id
    ),
    robots_all AS (
        SELECT robot_id, capacity FROM caps
        UNION ALL
        SELECT robot_id, 1 FROM (SELECT robot_id FROM raw_jobs UNION SELECT robot_id FROM roll_busy) ran
        WHERE robot_id NOT IN (SELECT robot_id FROM caps)
    ),
    busy AS ({capped_busy_sql()}
        UNION ALL
        SELECT robot_id, busy_seconds FROM roll_busy
    ),
    util AS (
        SELECT ra.robot_id,
               (coalesce(b.busy_seconds, 0)
                / nullif(ra.capacity * extract(epoch FROM CAST(:now AS timestamptz) - CAST(:s AS timestamptz)), 0)
               )::float8 AS utilization
        FROM robots_all ra
        LEFT JOIN (SELECT robot_id, sum(busy_seconds) AS busy_seconds FROM busy GROUP BY 1) b USING (robot_id)
    )
    SELECT coalesce(u.robot_id, f.robot_id) AS robot_id,
           coalesce(f.completed_today, 0)::bigint AS completed_today,
           coalesce(f.failed_today, 0)::bigint AS failed_today,
           coalesce(f.completed_7d, 0)::bigint AS completed_7d, coalesce(f.finished_7d, 0)::bigint AS finished_7d,
           (f.completed_7d::float8 / nullif(f.finished_7d, 0)) AS success_rate_7d,
           coalesce(u.utilization, 0)::float8 AS utilization_24h
    FROM util u FULL JOIN finished f ON f.robot_id = u.robot_id
    ORDER BY 1
    LIMIT {int(max_robots) * 2}
    """
    return sql, params


@contextlib.contextmanager
def _snapshot(engine: Engine):
    """A REPEATABLE READ transaction, so the rollup's state and the rows it describes come from one
    snapshot: yields (connection, coverage), or None before the first refresh. Connection
    failures read as data.db.DatabaseUnavailable."""
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                cov = coverage(conn)
                yield None if cov is None else (conn, cov)
    except _UNAVAILABLE as exc:
        raise _translate(exc, engine) from exc


@contextlib.contextmanager
def _current_snapshot(engine: Engine, tz: str):
    """_snapshot, yielding (connection, coverage, the database's now, the start of today in
    ``tz``); None also when the rollup is more than 6 hours behind (the raw rows are then cheaper
    than its long edge)."""
    with _snapshot(engine) as held:
        if held is None:
            yield None
            return
        conn, cov = held
        row = conn.execute(sa.text(
            "SELECT now() AS now, date_trunc('day', now() AT TIME ZONE :tz) AT TIME ZONE :tz AS today"),
            {"tz": tz}).mappings().first()
        yield None if row["now"] - cov.watermark > timedelta(hours=6) else (conn, cov, row["now"], row["today"])


def work_stats(engine: Engine, tz: str, max_robots: int) -> pd.DataFrame | None:
    """robot_work_stats() from the rollup, or None when the rollup has not run yet (or does not
    cover the window), in which case the caller reads the raw rows. One REPEATABLE READ
    transaction: the state and the rows it describes are read from one snapshot."""
    with _current_snapshot(engine, tz) as held:
        if held is None:
            return None
        conn, cov, now, today = held
        if cov.lo > ceil_hour(now - timedelta(days=7)):
            return None  # partial: the raw rows are cheaper than a long edge
        c0 = min(max(ceil_hour(now - timedelta(hours=24)), cov.lo), cov.watermark)
        dmax = conn.execute(sa.text(f"SELECT coalesce(max(max_dur), 0) FROM {HOURLY} "
                                    "WHERE hour >= :c0 AND hour < :w"), {"c0": c0, "w": cov.watermark}
                            ).scalar()
        sql, params = work_stats_sql(cov, now, today, max(float(dmax or 0), 0.0), max_robots)
        result = conn.execute(sa.text(sql), params)
        return frame_of(list(result.keys()), result.fetchall())


def finished_totals(engine: Engine, tz: str) -> dict | None:
    """The KPI tiles' finished jobs (data.fleet.fleet_kpis) from the rollup plus the raw edges:
    completed and failed since local midnight in ``tz`` and in the last 24 hours, and the sum and
    number of run durations (seconds) of the latter. Jobs without a robot are not in the rollup:
    they are read raw (an index range). None when the rollup has not run or is behind."""
    with _current_snapshot(engine, tz) as held:
        if held is None:
            return None
        conn, cov, now, today = held
        day_ago, w = now - timedelta(hours=24), cov.watermark
        rt0 = min(max(ceil_hour(today), cov.lo), w)     # today's rollup hours: [rt0, w)
        r24 = min(max(ceil_hour(day_ago), cov.lo), w)   # the last 24 hours': [r24, w)
        params = {"t": today, "s": day_ago, "w": w, "rt0": rt0, "r24": r24}
        raw_where = _completed_in(_merge([(day_ago, r24), (today, rt0), (w, None)]), params)
        # A raw row counts where the rollup does not: outside its hours, or without a robot.
        outside = "(NOT x.robot OR NOT (x.completed_at >= {0} AND x.completed_at < :w))"
        today_raw, day_raw = outside.format(":rt0"), outside.format(":r24")
        timed = f"x.started_at IS NOT NULL AND x.completed_at >= :s AND {day_raw}"
        sql = f"""
        WITH raw AS (
            SELECT true AS robot, j.status, j.started_at, j.completed_at FROM job_queue j
            WHERE ({raw_where}) AND j.robot_id IS NOT NULL
              AND j.status IN ('completed', 'failed')
            UNION ALL
            SELECT false, j.status, j.started_at, j.completed_at FROM job_queue j
            WHERE j.robot_id IS NULL AND j.completed_at >= least(:t, :s) AND j.status IN ('completed', 'failed')
        ),
        raw_sums AS (
            SELECT count(*) FILTER (WHERE x.status = 'completed' AND x.completed_at >= :t AND {today_raw}) AS ct,
                   count(*) FILTER (WHERE x.status = 'failed' AND x.completed_at >= :t AND {today_raw}) AS ft,
                   count(*) FILTER (WHERE x.status = 'completed' AND x.completed_at >= :s AND {day_raw}) AS c24,
                   count(*) FILTER (WHERE x.status = 'failed' AND x.completed_at >= :s AND {day_raw}) AS f24,
                   coalesce(sum(extract(epoch FROM x.completed_at - x.started_at)) FILTER (WHERE {timed}), 0)
                       AS dur_sum,
                   count(*) FILTER (WHERE {timed}) AS timed
            FROM raw x
        ),
        roll_sums AS (
            SELECT coalesce(sum(completed) FILTER (WHERE hour >= :rt0), 0) AS ct,
                   coalesce(sum(failed) FILTER (WHERE hour >= :rt0), 0) AS ft,
                   coalesce(sum(completed) FILTER (WHERE hour >= :r24), 0) AS c24,
                   coalesce(sum(failed) FILTER (WHERE hour >= :r24), 0) AS f24,
                   coalesce(sum(dur_sum) FILTER (WHERE hour >= :r24), 0) AS dur_sum,
                   coalesce(sum(timed) FILTER (WHERE hour >= :r24), 0) AS timed
            FROM {FLEET} WHERE hour >= least(:rt0, :r24) AND hour < :w
        )
        SELECT (r.ct + h.ct)::bigint AS completed_today, (r.ft + h.ft)::bigint AS failed_today,
               (r.c24 + h.c24)::bigint AS completed_24h, (r.f24 + h.f24)::bigint AS failed_24h,
               (r.dur_sum + h.dur_sum)::float8 AS dur_sum_s, (r.timed + h.timed)::bigint AS timed_24h
        FROM raw_sums r, roll_sums h"""
        return dict(conn.execute(sa.text(sql), params).mappings().one())


# ---------------------------------------------------------------------------------------------
# Utilization over long windows (data.robots.utilization, utilization_by_hour_of_week)
# ---------------------------------------------------------------------------------------------
MIN_ROLLUP = timedelta(hours=6)   # shorter rollup parts: the raw rows are as cheap


def _robot_filters(robot_ids: list[str] | None, environment: str | None) -> tuple[str, callable, str, dict]:
    """(predicate on robots r, predicate maker on a robot_id column, predicate on MEMBERS m for the
    robots without a robots row that may count, params). An environment takes robots rows only
    (of `robot_ids`, when given too)."""
    params: dict = {}
    rf_caps = ""
    if robot_ids is not None:
        rf_caps += " AND r.robot_id::text = ANY(CAST(:ids AS text[]))"
        params["ids"] = [str(r) for r in robot_ids]
    if environment is not None:
        rf_caps += " AND r.environment = :env"
        params["env"] = str(environment)
        return rf_caps, lambda col: f"AND {col} IN (SELECT robot_id FROM caps)", "false", params
    if robot_ids is not None:
        return (rf_caps, lambda col: f"AND {col} = ANY(CAST(:ids AS text[]))",
                "m.robot_id = ANY(CAST(:ids AS text[]))", params)
    return "", lambda col: "", "true", params


def _common_ctes(rf_caps: str, rfc, hourly_marks: bool) -> str:
    """caps, raw_jobs (every job of the window that the raw edges need) and pieces (those jobs
    clipped to [:start, :r0) and [:r1, :w1)); then events and segments of the sweep over them."""
    jf = rfc("j.robot_id::text")
    marks = ""
    if hourly_marks:
        marks = """
        UNION ALL
        SELECT b.robot_id, greatest(hours.h, CAST(:start AS timestamptz)), 0, hours.h
        FROM (SELECT DISTINCT robot_id FROM pieces WHERE e > s) b, hours
        WHERE hours.h < CAST(:r0 AS timestamptz) OR hours.h >= CAST(:r1 AS timestamptz)"""
    return f"""
    caps AS (
        SELECT r.robot_id::text AS robot_id, greatest(coalesce(r.max_concurrent_jobs, 1), 1) AS capacity
        FROM robots r WHERE true {rf_caps}
        LIMIT 5000
    ),
    -- Jobs that may run in [:start, :r0) or [:r1, :w1): a job finishing in a rollup hour H
    -- started at most max_dur(H) before it, which bounds the completed_at ranges (:e0, :e1).
    raw_jobs AS (
        SELECT j.robot_id::text AS robot_id, j.started_at AS s0, j.completed_at AS e0
        FROM job_queue j
        WHERE ((j.completed_at > CAST(:start AS timestamptz) AND j.completed_at < CAST(:e0 AS timestamptz))
               OR (j.completed_at > CAST(:r1 AS timestamptz) AND j.completed_at < CAST(:e1 AS timestamptz))
               OR j.completed_at >= CAST(:w AS timestamptz))
          AND j.completed_at > CAST(:start AS timestamptz) AND j.started_at < CAST(:w1 AS timestamptz)
          AND j.robot_id IS NOT NULL {jf}
        UNION ALL
        SELECT j.robot_id::text, j.started_at, CAST(:w1 AS timestamptz)
        FROM job_queue j
        WHERE j.status = 'running' AND j.completed_at IS NULL AND j.started_at < CAST(:w1 AS timestamptz)
          AND j.robot_id IS NOT NULL {jf}
    ),
    pieces AS (
        SELECT robot_id, greatest(s0, CAST(:start AS timestamptz)) AS s, least(e0, CAST(:r0 AS timestamptz)) AS e
        FROM raw_jobs
        UNION ALL
        SELECT robot_id, greatest(s0, CAST(:r1 AS timestamptz)), least(e0, CAST(:w1 AS timestamptz)) FROM raw_jobs
    ),
{concurrency_segments_sql("pieces", marks)}"""


def _bound(conn: Connection, h: datetime, t: datetime, w: datetime) -> datetime | None:
    """The end of the last rollup hour H in [h, w) in which a job that finished may have started
    before t (H < t + the longest job that finished in H), or None."""
    last = conn.execute(sa.text(f"""
        SELECT max(hour) FROM (
            SELECT hour, max(max_dur) AS md FROM {FLEET} WHERE hour >= :h AND hour < :w GROUP BY hour
        ) x WHERE hour < CAST(:t AS timestamptz) + make_interval(secs => md)"""), {"h": h, "w": w, "t": t}).scalar()
    return None if last is None else last + HOUR


def utilization_from_rollup(engine: Engine, robot_ids: list[str] | None, environment: str | None,
                            start: datetime, end: datetime, tz: str | None = None) -> pd.DataFrame | None:
    """data.robots.utilization (tz None) or utilization_by_hour_of_week (tz given) over
    [start, min(end, now())) with the same columns and values, from the rollup: whole UTC weeks
    and days from the week and day rows, the other whole hours from the hour rows (per robot) or
    the fleet rows (fleet-wide or per environment, with the robots whose environment or capacity changed since
    corrected from their hour rows), the partial hours at the edges and the time after the
    watermark from the raw rows. None when the rollup cannot answer (not refreshed yet, under
    MIN_ROLLUP of the window in it, or a zone whose hours are not whole UTC hours)."""
    with _snapshot(engine) as held:
        if held is None:
            return None
        conn, cov = held
        now = conn.execute(sa.text("SELECT now()")).scalar()
        w1 = min(end, now)
        r0 = max(ceil_hour(start), cov.lo)
        r1 = min(floor_hour(w1), cov.watermark)
        if r1 - r0 < MIN_ROLLUP:
            return None
        if tz is not None and not conn.execute(sa.text(
                "SELECT bool_and(date_trunc('hour', g AT TIME ZONE :tz) = g AT TIME ZONE :tz) "
                "FROM generate_series(CAST(:a AS timestamptz), CAST(:b AS timestamptz), interval '1 hour') g"),
                {"tz": tz, "a": floor_hour(start), "b": w1}).scalar():
            return None
        e0 = _bound(conn, r0, r0, cov.watermark) or r0
        e1 = max(w1, _bound(conn, floor_hour(w1), w1, cov.watermark) or w1)
        # Hash joins and aggregates: sorting 100,000 day rows by robot id (in the
        # database's collation) would cost more than everything else.
        conn.execute(sa.text("SET LOCAL enable_sort = off"))
        conn.execute(sa.text("SET LOCAL enable_mergejoin = off"))
        rf_caps, rfc, mf, params = _robot_filters(robot_ids, environment)
        params.update(start=start, w1=w1, r0=r0, r1=r1, w=cov.watermark, e0=e0, e1=e1)
        if tz is None:
            sql = _per_robot_sql(rf_caps, rfc, mf, r0, r1, params)
        else:
            params.update(tz=tz, h0=floor_hour(start))
            sql = _hour_of_week_sql(rf_caps, rfc, mf, robot_ids, environment)
        result = conn.execute(sa.text(sql), params)
        return frame_of(list(result.keys()), result.fetchall())


def _robots_all_sql(mf: str) -> str:
    """CTE robots_all: the robots rows (with their capacity) and, at capacity 1, the robot ids
    without one that ran in the window: in the raw rows, or in the rollup hours [:r0, :r1)."""
    return f"""robots_all AS (
        SELECT robot_id, capacity FROM caps
        UNION ALL
        SELECT robot_id, 1 FROM (
            SELECT robot_id FROM raw_jobs
            UNION
            SELECT m.robot_id FROM {MEMBERS} m
            WHERE {mf} AND m.robot_id NOT IN (SELECT robot_id FROM caps)
              AND EXISTS (SELECT 1 FROM {HOURLY} h WHERE h.robot_id = m.robot_id AND h.hour >= CAST(:r0 AS timestamptz)
                          AND h.hour < CAST(:r1 AS timestamptz) AND h.busy IS NOT NULL)
        ) ran
        WHERE robot_id NOT IN (SELECT robot_id FROM caps)
    )"""


def _per_robot_sql(rf_caps: str, rfc, mf: str, r0: datetime, r1: datetime, params: dict) -> str:
    d0, d1 = _ceil("day", r0), _floor("day", r1)
    hour_ranges = [(r0, d0), (d1, r1)] if d0 < d1 else [(r0, r1)]
    if d0 >= d1:
        d0 = d1 = r0
    # Whole weeks from the week rows, the other whole days from the day rows.
    wk0, wk1 = _ceil("week", d0), _floor("week", d1)
    if wk0 >= wk1:
        wk0 = wk1 = d1
    params.update(d0=d0, d1=d1, wk0=wk0, wk1=wk1)
    conds = []
    for i, (a, b) in enumerate(hour_ranges):
        if b > a:
            params[f"ha{i}"], params[f"hb{i}"] = a, b
            conds.append(f"(hour >= :ha{i} AND hour < :hb{i})")
    hour_cond = " OR ".join(conds) or "false"
    return f"""
    WITH {_common_ctes(rf_caps, rfc, hourly_marks=False)},
    roll AS (
        SELECT robot_id, busy, true AS cumulative FROM {WEEKLY} WHERE week >= :wk0 AND week < :wk1 {rfc("robot_id")}
        UNION ALL
        SELECT robot_id, busy, true FROM {DAILY}
        WHERE ((day >= :d0 AND day < :wk0) OR (day >= :wk1 AND day < :d1)) {rfc("robot_id")}
        UNION ALL
        SELECT robot_id, busy, false FROM {HOURLY} WHERE ({hour_cond}) AND busy IS NOT NULL {rfc("robot_id")}
    ),
    {_robots_all_sql(mf)},
    busy AS ({capped_busy_sql("b")}
        UNION ALL
        SELECT r.robot_id, sum(CASE WHEN r.cumulative
                                    THEN coalesce(r.busy[least(ra.capacity, cardinality(r.busy))], 0)
                                    ELSE {capped_sql("r.busy", "ra.capacity")} END)
        FROM roll r JOIN robots_all ra USING (robot_id)
        GROUP BY r.robot_id
    ),
    total AS (SELECT robot_id, sum(b) AS busy_seconds FROM busy GROUP BY robot_id)
    SELECT ra.robot_id, coalesce(t.busy_seconds, 0)::float8 AS busy_seconds,
           (ra.capacity * greatest(extract(epoch FROM CAST(:w1 AS timestamptz) - CAST(:start AS timestamptz)), 0)
           )::float8 AS capacity_seconds,
           (coalesce(t.busy_seconds, 0) / nullif(ra.capacity * greatest(extract(epoch FROM
                CAST(:w1 AS timestamptz) - CAST(:start AS timestamptz)), 0), 0))::float8 AS utilization
    FROM robots_all ra LEFT JOIN total t USING (robot_id)
    ORDER BY ra.robot_id
    """


def _hour_of_week_sql(rf_caps: str, rfc, mf: str, robot_ids, environment) -> str:
    in_roll = "h.hour >= CAST(:r0 AS timestamptz) AND h.hour < CAST(:r1 AS timestamptz)"
    if robot_ids is not None:
        roll_h = f"""
        SELECT h.hour, {capped_sql("h.busy", "ra.capacity")} AS busy
        FROM {HOURLY} h JOIN robots_all ra USING (robot_id)
        WHERE {in_roll} AND h.busy IS NOT NULL {rfc("h.robot_id")}"""
    else:
        ef = lambda col: f"AND {col} = :env" if environment is not None else ""  # noqa: E731
        roll_h = f"""
        SELECT h.hour, h.busy FROM {FLEET} h WHERE {in_roll} {ef("h.environment")}
        UNION ALL
        SELECT h.hour, -{capped_sql("h.busy", "x.old_cap")}
        FROM {HOURLY} h JOIN mism x USING (robot_id) WHERE {in_roll} AND h.busy IS NOT NULL {ef("x.old_env")}
        UNION ALL
        SELECT h.hour, {capped_sql("h.busy", "x.new_cap")}
        FROM {HOURLY} h JOIN mism x USING (robot_id) WHERE {in_roll} AND h.busy IS NOT NULL {ef("x.new_env")}"""
    return f"""
    WITH hours AS (
        SELECT g.h, extract(epoch FROM least(g.h + interval '1 hour', CAST(:w1 AS timestamptz))
                                       - greatest(g.h, CAST(:start AS timestamptz)))::float8 AS len
        FROM generate_series(CAST(:h0 AS timestamptz), CAST(:w1 AS timestamptz) - interval '1 microsecond',
                             interval '1 hour') AS g(h)
    ),
    {_common_ctes(rf_caps, rfc, hourly_marks=True)},
    mism AS MATERIALIZED ({MISMATCH_SQL}),
    {_robots_all_sql(mf)},
    raw_h AS (
        SELECT s.hour, sum(least(s.n, ra.capacity) * extract(epoch FROM s.t_next - s.t))::float8 AS busy
        FROM segments s JOIN robots_all ra USING (robot_id)
        WHERE s.n > 0 AND s.t_next IS NOT NULL
        GROUP BY s.hour
    ),
    roll_h AS ({roll_h}
    ),
    per_hour AS (
        SELECT hour, sum(busy) AS busy FROM (SELECT hour, busy FROM raw_h UNION ALL SELECT hour, busy FROM roll_h) x
        GROUP BY hour
    ),
    nr AS (SELECT count(*) AS n, sum(capacity) AS c FROM robots_all)
    SELECT extract(isodow FROM hours.h AT TIME ZONE :tz)::int AS weekday,
           extract(hour FROM hours.h AT TIME ZONE :tz)::int AS hour_of_day,
           (count(*) * nr.n) AS hours,
           coalesce(sum(p.busy), 0)::float8 AS busy_seconds,
           (sum(hours.len) * nr.c)::float8 AS capacity_seconds,
           (coalesce(sum(p.busy), 0) / nullif(sum(hours.len) * nr.c, 0))::float8 AS utilization
    FROM hours CROSS JOIN nr LEFT JOIN per_hour p ON p.hour = hours.h
    WHERE nr.n > 0
    GROUP BY 1, 2, nr.n, nr.c
    ORDER BY 1, 2
    """
