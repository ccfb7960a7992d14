"""Robots: the fleet list, one robot's health (status timeline, metrics) and its work
(utilization, job counts, durations, errors, latest jobs).

Robot ids are compared as text: `robots.robot_id` and `robot_heartbeats.robot_id` are uuid in
older orchestrators and varchar in newer ones; `job_queue.robot_id` is varchar. Heartbeat
queries bind the id with the column's own type (see `_heartbeat_id_match`) so the
`(robot_id, "timestamp")` index is used whatever that type is.

Every function is callable on its own (the benchmark harness times them one by one) and every
query is bounded by a time window, a LIMIT or the size of the robots table.

Utilization (used by the robot page, the fleet list and the fleet analytics)
---------------------------------------------------------------------------
For a robot R with capacity c = max(1, robots.max_concurrent_jobs) (1 for a robot id that has
jobs but no row in `robots`), each job j that R ran occupies the interval

    I_j = [started_at, end_j)   end_j = completed_at, or now() for a job whose status is
                                 'running' and completed_at is NULL

(completed, failed and cancelled jobs that started count until they finished; a job with no
started_at, or one re-queued with started_at but no completed_at, did not occupy R). The
concurrency n(t) is the number of intervals containing instant t. For a period P (one hour, or
a whole window), clipped to the requested window and to now() (the future has no capacity):

    busy_seconds(P)     = ∫_P min(n(t), c) dt           (concurrency capped at capacity)
    capacity_seconds(P) = c · |P|                       (seconds)
    utilization(P)      = busy_seconds / capacity_seconds   ∈ [0, 1]

so a robot with c = 1 running two overlapping jobs is busy once, not twice, and a robot with
c = 2 running one job for a whole hour is 50 % utilized. Hours are the viewer's clock hours:
[h, h + 1 h) for every instant h at which the local time in zone `tz` is on the hour (a DST
change gives 23 or 25 such hours in a local day; zones with half-hour offsets get hours on
the half hour UTC). `hour` is returned as that instant (timestamptz, UTC).

It is computed in SQL by an event sweep: each clipped job gives a +1 event at its start and a
-1 event at its end, each hour start gives a 0 event; a running sum ordered by time gives n(t)
on each segment between consecutive events, and min(n, c) × segment length is summed per hour.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timedelta, timezone

import pandas as pd
from sqlalchemy.engine import Engine

from data.db import json_number, read_frame, read_row
from data.errors import error_type_sql
from data.status import LIVE_STATUSES, live_status_sql

MAX_ROBOTS = 5000          # the list's bound; fleets are ~1,000 robots
MAX_SERIES_POINTS = 500    # what a chart can show across a screen
MAX_TIMELINE_BANDS = 5000

# Columns of the fleet list a user may sort on (the page sorts client-side; the data function
# also accepts them so the REST API can sort).
LIST_COLUMNS = [
    "name", "hostname", "status", "environment", "capabilities", "tags", "current_job_id",
    "heartbeat_age_s", "cpu_percent", "memory_percent", "completed_today", "failed_today",
    "success_rate_7d", "utilization_24h",
]


def _as_utc(ts) -> datetime:
    """A window bound as an aware UTC datetime (naive means UTC)."""
    ts = pd.Timestamp(ts)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


# ---------------------------------------------------------------------------------------------
# Utilization
# ---------------------------------------------------------------------------------------------

def concurrency_segments_sql(source: str, marks: str = "") -> str:
    """CTEs `events` and `segments` over job intervals `source(robot_id, s, e)`: per robot, the
    stretches of time between consecutive start/end instants with `n` jobs running (`t` to
    `t_next`). `marks` adds zero-weight events (`UNION ALL SELECT robot_id, t, 0, hour ...`)
    that cut the stretches at hour starts; `hour` is the latest mark at or before `t`."""
    return f"""
    events AS (
        SELECT robot_id, s AS t, 1 AS d, NULL::timestamptz AS hour FROM {source} WHERE e > s
        UNION ALL
        SELECT robot_id, e, -1, NULL FROM {source} WHERE e > s{marks}
    ),
    -- The default RANGE frame makes events at the same instant peers: they all see the
    -- concurrency after every one of them, and only the last has a segment of non-zero length.
    segments AS (
        SELECT robot_id, t, sum(d) OVER w AS n, lead(t) OVER w AS t_next, max(hour) OVER w AS hour
        FROM events
        WINDOW w AS (PARTITION BY robot_id COLLATE "C" ORDER BY t)
    )"""


def capped_busy_sql(column: str = "busy_seconds") -> str:
    """Per robot, the seconds of `segments` with jobs running, concurrency capped at the robot's
    capacity (`robots_all`): the numerator of utilization."""
    return f"""
        SELECT s.robot_id, sum(least(s.n, ra.capacity) * extract(epoch FROM s.t_next - s.t))::float8 AS {column}
        FROM segments s JOIN robots_all ra USING (robot_id)
        WHERE s.n > 0 AND s.t_next IS NOT NULL
        GROUP BY s.robot_id"""


def _utilization_ctes(robot_filter: bool, hourly: bool) -> str:
    """The CTEs shared by the utilization queries (parameters :start, :end, :tz, :ids).

    Leaves `robots_all(robot_id, capacity)`, `win(w0, w1)` and, when hourly, `hours(h)` and
    `busy(robot_id, hour, busy_seconds)`; otherwise `busy(robot_id, busy_seconds)`.
    """
    rf = "AND r.robot_id::text = ANY(CAST(:ids AS text[]))" if robot_filter else ""
    jf = "AND j.robot_id::text = ANY(CAST(:ids AS text[]))" if robot_filter else ""
    ctes = f"""
    win AS (
        SELECT CAST(:start AS timestamptz) AS w0, least(CAST(:end AS timestamptz), now()) AS w1
    ),
    caps AS (
        SELECT r.robot_id::text AS robot_id, greatest(coalesce(r.max_concurrent_jobs, 1), 1) AS capacity
        FROM robots r WHERE true {rf}
        LIMIT {MAX_ROBOTS}
    ),
    -- The bounds are written out (not read from `win`) so the planner sees the time range and
    -- picks the completed_at index: a window is a thin slice of the history.
    jobs AS (
        SELECT j.robot_id::text AS robot_id,
               greatest(j.started_at, CAST(:start AS timestamptz)) AS s,
               least(j.completed_at, CAST(:end AS timestamptz), now()) AS e
        FROM job_queue j
        WHERE j.completed_at > CAST(:start AS timestamptz)
          AND j.started_at < least(CAST(:end AS timestamptz), now())
          AND j.robot_id IS NOT NULL {jf}
        UNION ALL
        SELECT j.robot_id::text, greatest(j.started_at, CAST(:start AS timestamptz)),
               least(CAST(:end AS timestamptz), now())
        FROM job_queue j
        WHERE j.status = 'running' AND j.completed_at IS NULL
          AND j.started_at < least(CAST(:end AS timestamptz), now())
          AND j.robot_id IS NOT NULL {jf}
    ),
    robots_all AS (
        SELECT robot_id, capacity FROM caps
        UNION ALL
        SELECT DISTINCT robot_id, 1 FROM jobs WHERE robot_id NOT IN (SELECT robot_id FROM caps)
    )"""
    if hourly:
        hour_marks = """
        UNION ALL
        SELECT b.robot_id, greatest(hours.h, win.w0), 0, hours.h
        FROM (SELECT DISTINCT robot_id FROM jobs WHERE e > s) b, hours, win"""
        ctes += f""",
    hours AS (
        SELECT g.h FROM win,
             generate_series(date_bin('15 minutes', win.w0, timestamptz '2000-01-01 00:00+00')
                                 - interval '1 hour', win.w1, interval '15 minutes') AS g(h)
        WHERE extract(minute FROM g.h AT TIME ZONE :tz) = 0
          AND g.h + interval '1 hour' > win.w0 AND g.h < win.w1
    ),{concurrency_segments_sql("jobs", hour_marks)},
    busy AS (
        SELECT s.robot_id, s.hour,
               sum(least(s.n, ra.capacity) * extract(epoch FROM s.t_next - s.t))::float8 AS busy_seconds
        FROM segments s JOIN robots_all ra USING (robot_id)
        WHERE s.n > 0 AND s.t_next IS NOT NULL
        GROUP BY s.robot_id, s.hour
    )"""
    else:
        ctes += f""",{concurrency_segments_sql("jobs")},
    busy AS ({capped_busy_sql()}
    )"""
    return ctes


def hourly_utilization_sql(robot_filter: bool = False) -> str:
    """SQL of hourly_utilization(), for callers that aggregate it further in PostgreSQL.

    Parameters: :start, :end (timestamptz), :tz (a validated IANA zone), and :ids (a list of
    robot ids as text) when `robot_filter`. Columns: robot_id, hour, busy_seconds,
    capacity_seconds, utilization. Wrap it as a subquery: `SELECT ... FROM (<sql>) u`.
    """
    return f"""
    WITH {_utilization_ctes(robot_filter, hourly=True)}
    SELECT ra.robot_id, hours.h AS hour,
           coalesce(b.busy_seconds, 0)::float8 AS busy_seconds,
           (ra.capacity * extract(epoch FROM least(hours.h + interval '1 hour', win.w1)
                                            - greatest(hours.h, win.w0)))::float8 AS capacity_seconds,
           (coalesce(b.busy_seconds, 0) / nullif(ra.capacity * extract(epoch FROM
                least(hours.h + interval '1 hour', win.w1) - greatest(hours.h, win.w0)), 0))::float8
               AS utilization
    FROM robots_all ra CROSS JOIN hours CROSS JOIN win
    LEFT JOIN busy b ON b.robot_id = ra.robot_id AND b.hour = hours.h
    """


def _ids_params(robot_ids) -> tuple[bool, dict]:
    if robot_ids is None:
        return False, {}
    if isinstance(robot_ids, str):
        robot_ids = [robot_ids]
    return True, {"ids": [str(r) for r in robot_ids]}


def hourly_utilization(engine: Engine, robot_ids=None, start=None, end=None, tz: str = "UTC") -> pd.DataFrame:
    """Utilization of each robot in each clock hour of [start, end) (see the module docstring).

    `robot_ids`: None for every robot (those in `robots` plus robot ids that ran jobs in the
    window), else an id or a list of ids (compared as text). `start`/`end`: datetimes (naive =
    UTC); default the last 24 hours. `tz` must be a validated zone name (data.timeutil.safe_tz).
    Returns robot_id, hour (timestamptz of the hour's start), busy_seconds, capacity_seconds,
    utilization (0..1; NaN for an hour with no capacity left in the window), ordered by
    robot_id, hour.
    """
    end = _as_utc(end) if end is not None else datetime.now(timezone.utc)
    start = _as_utc(start) if start is not None else end - timedelta(hours=24)
    filtered, params = _ids_params(robot_ids)
    sql = hourly_utilization_sql(filtered) + " ORDER BY ra.robot_id, hours.h"
    frame = read_frame(engine, sql, {"start": start, "end": end, "tz": tz, **params})
    return frame.astype({"busy_seconds": float, "capacity_seconds": float, "utilization": float})


def _environment_ids(engine: Engine, robot_ids, environment) -> list[str] | None:
    """The robot filter as a list of ids: `robot_ids` (None = every robot), narrowed to the
    robots rows of `environment` when one is given (robot ids without a row are then left out)."""
    filtered, params = _ids_params(robot_ids)
    ids = params["ids"] if filtered else None
    if environment is None:
        return ids
    in_env = read_frame(engine, "SELECT robot_id::text AS robot_id FROM robots WHERE environment = :env "
                                f"ORDER BY 1 LIMIT {MAX_ROBOTS}", {"env": str(environment)})["robot_id"].tolist()
    return [r for r in ids if r in set(in_env)] if ids is not None else in_env


def _from_rollup(engine: Engine, robot_ids, environment, start, end, tz=None) -> pd.DataFrame | None:
    from data import robot_rollup

    filtered, params = _ids_params(robot_ids)
    ids = params["ids"] if filtered else None
    frame = robot_rollup.utilization_from_rollup(engine, ids, environment, start, end, tz)
    if frame is None:
        return None
    return frame.astype({"busy_seconds": float, "capacity_seconds": float, "utilization": float})


def utilization(engine: Engine, robot_ids=None, start=None, end=None, *, environment: str | None = None,
                use_rollup: bool = True) -> pd.DataFrame:
    """Utilization of each robot over the whole window [start, end) (same definition, one period).

    `environment`: only the robots rows of that environment (and of `robot_ids`, when given).
    Returns robot_id, busy_seconds, capacity_seconds, utilization; default window: last 24 h.
    Long windows are read from the per-robot rollup (data.robot_rollup: whole UTC days and
    hours from it, the partial hours at the edges and the time after its watermark from the
    raw rows; same numbers); short ones, or with `use_rollup=False`, from the raw rows.
    """
    end = _as_utc(end) if end is not None else datetime.now(timezone.utc)
    start = _as_utc(start) if start is not None else end - timedelta(hours=24)
    if use_rollup:
        frame = _from_rollup(engine, robot_ids, environment, start, end)
        if frame is not None:
            return frame
    if environment is not None:
        robot_ids = _environment_ids(engine, robot_ids, environment)
    filtered, params = _ids_params(robot_ids)
    sql = f"""
    WITH {_utilization_ctes(filtered, hourly=False)}
    SELECT ra.robot_id, coalesce(b.busy_seconds, 0)::float8 AS busy_seconds,
           (ra.capacity * greatest(extract(epoch FROM win.w1 - win.w0), 0))::float8 AS capacity_seconds,
           (coalesce(b.busy_seconds, 0)
               / nullif(ra.capacity * greatest(extract(epoch FROM win.w1 - win.w0), 0), 0))::float8
               AS utilization
    FROM robots_all ra CROSS JOIN win LEFT JOIN busy b USING (robot_id)
    ORDER BY ra.robot_id
    """
    frame = read_frame(engine, sql, {"start": start, "end": end, **params})
    return frame.astype({"busy_seconds": float, "capacity_seconds": float, "utilization": float})


def utilization_by_hour_of_week(engine: Engine, robot_ids=None, start=None, end=None,
                                tz: str = "UTC", *, environment: str | None = None,
                                use_rollup: bool = True) -> pd.DataFrame:
    """Utilization by hour of the week in zone `tz`: busy over capacity of all matching hours.

    Returns weekday (1 = Monday … 7 = Sunday), hour_of_day (0..23), hours (how many hours fell
    in that cell, summed over robots), busy_seconds, capacity_seconds, utilization. Only cells
    with at least one hour are returned. `environment` as in utilization(). Long windows in a
    zone whose clock hours are whole UTC hours are read from the rollup (fleet-wide and
    per-environment hour rows; per-robot hour rows for a robot filter); others from the raw rows.
    """
    end = _as_utc(end) if end is not None else datetime.now(timezone.utc)
    start = _as_utc(start) if start is not None else end - timedelta(days=28)
    if use_rollup:
        frame = _from_rollup(engine, robot_ids, environment, start, end, tz)
        if frame is not None:
            return frame.astype({"weekday": int, "hour_of_day": int, "hours": int})
    if environment is not None:
        robot_ids = _environment_ids(engine, robot_ids, environment)
    filtered, params = _ids_params(robot_ids)
    sql = f"""
    SELECT extract(isodow FROM u.hour AT TIME ZONE :tz)::int AS weekday,
           extract(hour FROM u.hour AT TIME ZONE :tz)::int AS hour_of_day,
           count(*) AS hours,
           sum(u.busy_seconds)::float8 AS busy_seconds,
           sum(u.capacity_seconds)::float8 AS capacity_seconds,
           (sum(u.busy_seconds) / nullif(sum(u.capacity_seconds), 0))::float8 AS utilization
    FROM ({hourly_utilization_sql(filtered)}) u
    GROUP BY 1, 2 ORDER BY 1, 2
    """
    frame = read_frame(engine, sql, {"start": start, "end": end, "tz": tz, **params})
    return frame.astype({"busy_seconds": float, "capacity_seconds": float, "utilization": float})


def hour_of_week_from_hourly(hourly: pd.DataFrame, tz: str) -> pd.DataFrame:
    """utilization_by_hour_of_week() from an hourly_utilization() frame already fetched (no
    second sweep: a page that draws both asks the database once). Same columns and values."""
    columns = ["weekday", "hour_of_day", "hours", "busy_seconds", "capacity_seconds", "utilization"]
    if hourly.empty:
        return pd.DataFrame(columns=columns)
    local = pd.to_datetime(hourly["hour"], utc=True).dt.tz_convert(tz)
    frame = hourly.assign(weekday=local.dt.dayofweek + 1, hour_of_day=local.dt.hour)
    cells = frame.groupby(["weekday", "hour_of_day"], as_index=False).agg(
        hours=("hour", "size"), busy_seconds=("busy_seconds", "sum"), capacity_seconds=("capacity_seconds", "sum"))
    cells["utilization"] = cells["busy_seconds"] / cells["capacity_seconds"].where(cells["capacity_seconds"] > 0)
    return cells[columns].astype({"weekday": int, "hour_of_day": int, "hours": int})


# ---------------------------------------------------------------------------------------------
# The fleet list
# ---------------------------------------------------------------------------------------------

def _split(values) -> list[str]:
    """A filter value from a URL or a dropdown: None, 'a', 'a,b' or ['a', 'b'] -> ['a', 'b']."""
    if values is None:
        return []
    if isinstance(values, str):
        values = values.split(",")
    return [str(v).strip() for v in values if v is not None and str(v).strip()]


# The list's per-robot work numbers (robot_work_stats), merged into the live rows.
STATS_COLUMNS = ["completed_today", "failed_today", "completed_7d", "finished_7d", "success_rate_7d",
                 "utilization_24h"]
WORK_STATS_MAX_AGE_S = 60


def robot_list(engine: Engine, tz: str, offline_after_s: int, *, status=None, environment=None,
               capability=None, tag=None, sort: str | None = None, stats: pd.DataFrame | None = None
               ) -> pd.DataFrame:
    """One row per robot, with its live status and the numbers the fleet list shows.

    Filters (each None, a value, a comma-separated string or a list): `status` live statuses
    (any of), `environment` (any of), `capability` and `tag` (the robot has all of them;
    capabilities and tags are jsonb arrays, matched with `@>`). `sort`: a column of
    LIST_COLUMNS, '-column' for descending, missing values last; default environment, name.
    `stats`: a robot_work_stats() frame to reuse (the page keeps one for a minute); computed
    when None.

    Columns: robot_id, name, hostname, status (live), stored_status, environment, capabilities,
    tags (lists), max_concurrent_jobs, running_jobs, current_job_id, current_workflow,
    last_heartbeat, heartbeat_age_s (None if never), silent (no heartbeat for longer than
    offline_after_s, or never, and not in maintenance), cpu_percent, memory_percent, memory_mb,
    disk_percent (from robots.metrics; None when not reported), and robot_work_stats()'s
    columns (0 for a robot without jobs; success_rate_7d None without finished jobs).
    """
    where, params = [], {"offline_after": int(offline_after_s)}
    statuses = [s for s in _split(status) if s in LIVE_STATUSES]
    if statuses:
        where.append("status = ANY(CAST(:statuses AS text[]))")
        params["statuses"] = statuses
    envs = _split(environment)
    if envs:
        where.append("environment = ANY(CAST(:envs AS text[]))")
        params["envs"] = envs
    caps = _split(capability)
    if caps:
        where.append("capabilities @> CAST(:caps AS jsonb)")
        params["caps"] = json.dumps(caps)
    tags = _split(tag)
    if tags:
        where.append("tags @> CAST(:tags AS jsonb)")
        params["tags"] = json.dumps(tags)
    column, descending = None, False
    if sort and sort.lstrip("-") in LIST_COLUMNS:
        column, descending = sort.lstrip("-"), sort.startswith("-")
    order = "environment, name, robot_id"
    if column and column not in STATS_COLUMNS:
        order = f"{column} {'DESC' if descending else 'ASC'} NULLS LAST, name, robot_id"

    sql = f"""
    WITH running AS (
        SELECT robot_id, count(*) AS running,
               (array_agg(id::text ORDER BY started_at DESC NULLS LAST))[1] AS current_job_id,
               (array_agg(workflow_name ORDER BY started_at DESC NULLS LAST))[1] AS current_workflow
        FROM job_queue WHERE status = 'running' AND robot_id IS NOT NULL
        GROUP BY robot_id
    ),
    listed AS (
        SELECT r.robot_id::text AS robot_id, r.name, r.hostname,
               {live_status_sql("r", "coalesce(rj.running, 0)")} AS status,
               r.status AS stored_status, coalesce(r.environment, 'default') AS environment,
               CASE WHEN jsonb_typeof(r.capabilities) = 'array' THEN r.capabilities ELSE '[]'::jsonb END
                   AS capabilities,
               CASE WHEN jsonb_typeof(r.tags) = 'array' THEN r.tags ELSE '[]'::jsonb END AS tags,
               greatest(coalesce(r.max_concurrent_jobs, 1), 1) AS max_concurrent_jobs,
               coalesce(rj.running, 0) AS running_jobs, rj.current_job_id, rj.current_workflow,
               r.last_heartbeat,
               extract(epoch FROM now() - r.last_heartbeat)::float8 AS heartbeat_age_s,
               (r.status <> 'maintenance' AND (r.last_heartbeat IS NULL
                   OR r.last_heartbeat < now() - make_interval(secs => :offline_after))) AS silent,
               {json_number("r.metrics", "cpu_percent")} AS cpu_percent,
               {json_number("r.metrics", "memory_percent")} AS memory_percent,
               {json_number("r.metrics", "memory_mb")} AS memory_mb,
               {json_number("r.metrics", "disk_percent")} AS disk_percent
        FROM robots r
        LEFT JOIN running rj ON rj.robot_id = r.robot_id::text
    )
    SELECT * FROM listed
    {"WHERE " + " AND ".join(where) if where else ""}
    ORDER BY {order}
    LIMIT {MAX_ROBOTS}
    """
    frame = read_frame(engine, sql, params)
    for name in ("capabilities", "tags"):
        frame[name] = [v if isinstance(v, list) else [] for v in frame[name]]
    if stats is None:
        stats = robot_work_stats(engine, tz)
    frame = merge_work_stats(frame, stats)
    if column in STATS_COLUMNS:
        frame = frame.sort_values(column, ascending=not descending, na_position="last", kind="stable")
        frame = frame.reset_index(drop=True)
    return frame


def merge_work_stats(robots: pd.DataFrame, stats: pd.DataFrame) -> pd.DataFrame:
    """The live rows with their robot_work_stats() columns (0 / None for a robot without jobs)."""
    stats = stats if stats is not None and not stats.empty else pd.DataFrame(columns=["robot_id", *STATS_COLUMNS])
    merged = robots.merge(stats[["robot_id", *STATS_COLUMNS]], on="robot_id", how="left")
    for name in ("completed_today", "failed_today", "completed_7d", "finished_7d"):
        merged[name] = merged[name].fillna(0).astype(int)
    merged["utilization_24h"] = merged["utilization_24h"].astype(float).fillna(0.0)
    merged["success_rate_7d"] = merged["success_rate_7d"].astype(float)
    return merged


def robot_work_stats(engine: Engine, tz: str, *, use_rollup: bool = True) -> pd.DataFrame:
    """Per robot: what it finished today and in 7 days, and its 24-hour utilization.

    The costly part of the fleet list, kept apart so a page can refresh it less often than the
    live status. Returns robot_id, completed_today, failed_today (finished since midnight in
    zone `tz`, by completed_at), completed_7d, finished_7d (completed + failed, finished in the
    last 7 days), success_rate_7d (completed_7d / finished_7d; None when 0), utilization_24h
    (the last 24 hours, see the module docstring). Robots without jobs have a row only when
    they are in `robots` (utilization 0).

    Read from the per-robot hourly rollup (data.robot_rollup: whole hours from the rollup, the
    partial hours at the windows' edges and the time after its watermark from the raw rows;
    same numbers) once it has been refreshed; until then, or with `use_rollup=False`, from
    the raw rows of the last 7 days (robot_work_stats_raw).
    """
    if use_rollup:
        from data import robot_rollup

        frame = robot_rollup.work_stats(engine, tz, MAX_ROBOTS)
        if frame is not None:
            return frame
    return robot_work_stats_raw(engine, tz)


def robot_work_stats_raw(engine: Engine, tz: str) -> pd.DataFrame:
    """robot_work_stats() from the raw rows: every job finished in the last 7 days and an event
    sweep over the last 24 hours of job intervals."""
    now = datetime.now(timezone.utc)
    sql = f"""
    WITH bounds AS (
        SELECT date_trunc('day', now() AT TIME ZONE :tz) AT TIME ZONE :tz AS today_start,
               now() - interval '7 days' AS week_ago
    ),
    finished AS (
        SELECT j.robot_id::text AS robot_id,
               count(*) FILTER (WHERE j.status = 'completed' AND j.completed_at >= b.today_start)
                   AS completed_today,
               count(*) FILTER (WHERE j.status = 'failed' AND j.completed_at >= b.today_start)
                   AS failed_today,
               count(*) FILTER (WHERE j.status = 'completed' AND j.completed_at >= b.week_ago)
                   AS completed_7d,
               count(*) FILTER (WHERE j.completed_at >= b.week_ago) AS finished_7d
        FROM job_queue j, bounds b
        WHERE j.completed_at >= least(b.today_start, b.week_ago)
          AND j.status IN ('completed', 'failed') AND j.robot_id IS NOT NULL
        GROUP BY 1
    ),
    {_utilization_ctes(False, hourly=False)},
    util AS (
        SELECT ra.robot_id, (coalesce(b.busy_seconds, 0)
                   / nullif(ra.capacity * extract(epoch FROM win.w1 - win.w0), 0))::float8 AS utilization
        FROM robots_all ra CROSS JOIN win LEFT JOIN busy b USING (robot_id)
    )
    SELECT coalesce(u.robot_id, f.robot_id) AS robot_id,
           coalesce(f.completed_today, 0) AS completed_today, coalesce(f.failed_today, 0) AS failed_today,
           coalesce(f.completed_7d, 0) AS completed_7d, coalesce(f.finished_7d, 0) AS finished_7d,
           (f.completed_7d::float8 / nullif(f.finished_7d, 0)) AS success_rate_7d,
           coalesce(u.utilization, 0)::float8 AS utilization_24h
    FROM util u FULL JOIN finished f ON f.robot_id = u.robot_id
    LIMIT {MAX_ROBOTS * 2}
    """
    return read_frame(engine, sql, {"tz": tz, "start": now - timedelta(hours=24), "end": now})


def cached_robot_work_stats(engine: Engine, tz: str, max_age_s: int = WORK_STATS_MAX_AGE_S) -> pd.DataFrame:
    """robot_work_stats(), shared by every worker for up to `max_age_s` seconds (the app's cache;
    computed afresh outside a running app)."""
    import flask

    from data.cache import EXTENSION_KEY

    cache = flask.current_app.extensions.get(EXTENSION_KEY) if flask.has_app_context() else None
    if cache is None:
        return robot_work_stats(engine, tz)
    key = "robots-work-stats:" + hashlib.sha256(
        f"{engine.url.render_as_string(hide_password=True)}|{tz}".encode()).hexdigest()
    found = cache.get(key)
    if found is None:
        found = robot_work_stats(engine, tz)
        cache.set(key, found, timeout=max_age_s)
    return found


def robot_filter_options(engine: Engine) -> dict:
    """The values the list's filters offer: environments, capabilities and tags in use."""
    sql = f"""
    SELECT 'environment' AS kind, coalesce(environment, 'default') AS value FROM robots
    UNION
    SELECT 'capability', jsonb_array_elements_text(capabilities) FROM robots
    WHERE jsonb_typeof(capabilities) = 'array'
    UNION
    SELECT 'tag', jsonb_array_elements_text(tags) FROM robots WHERE jsonb_typeof(tags) = 'array'
    ORDER BY 1, 2 LIMIT {MAX_ROBOTS}
    """
    frame = read_frame(engine, sql)
    values = lambda kind: frame.loc[frame["kind"] == kind, "value"].tolist()  # noqa: E731
    return {"environments": values("environment"), "capabilities": values("capability"), "tags": values("tag")}


# ---------------------------------------------------------------------------------------------
# One robot: header, heartbeat history
# ---------------------------------------------------------------------------------------------

def robot_detail(engine: Engine, robot_id: str, offline_after_s: int) -> dict | None:
    """The header of one robot's page, or None when no robot has this id (compared as text).

    Keys: robot_id, name, hostname, status (live), stored_status, environment, capabilities,
    tags, max_concurrent_jobs, running_jobs, current_job_id, current_workflow, last_heartbeat,
    heartbeat_age_s, silent, registered_at, last_seen, tenant_id (None where the orchestrator
    has no such column), cpu_percent, memory_percent, memory_mb, disk_percent, uptime_seconds
    (robots.metrics; None when not reported), has_heartbeat_history (robot_heartbeats holds
    rows for it).
    """
    if robot_id is None or len(str(robot_id)) > 255:
        return None
    sql = f"""
    WITH running AS (
        SELECT count(*) AS running,
               (array_agg(id::text ORDER BY started_at DESC NULLS LAST))[1] AS current_job_id,
               (array_agg(workflow_name ORDER BY started_at DESC NULLS LAST))[1] AS current_workflow
        FROM job_queue WHERE status = 'running' AND robot_id::text = :robot_id
    )
    SELECT r.robot_id::text AS robot_id, r.name, r.hostname,
           {live_status_sql("r", "rj.running")} AS status,
           r.status AS stored_status, coalesce(r.environment, 'default') AS environment,
           CASE WHEN jsonb_typeof(r.capabilities) = 'array' THEN r.capabilities ELSE '[]'::jsonb END
               AS capabilities,
           CASE WHEN jsonb_typeof(r.tags) = 'array' THEN r.tags ELSE '[]'::jsonb END AS tags,
           greatest(coalesce(r.max_concurrent_jobs, 1), 1) AS max_concurrent_jobs,
           rj.running AS running_jobs, rj.current_job_id, rj.current_workflow,
           r.last_heartbeat,
           extract(epoch FROM now() - r.last_heartbeat)::float8 AS heartbeat_age_s,
           (r.status <> 'maintenance' AND (r.last_heartbeat IS NULL
               OR r.last_heartbeat < now() - make_interval(secs => :offline_after))) AS silent,
           (to_jsonb(r) ->> 'registered_at')::timestamptz AS registered_at,
           (to_jsonb(r) ->> 'last_seen')::timestamptz AS last_seen,
           to_jsonb(r) ->> 'tenant_id' AS tenant_id,
           {json_number("r.metrics", "cpu_percent")} AS cpu_percent,
           {json_number("r.metrics", "memory_percent")} AS memory_percent,
           {json_number("r.metrics", "memory_mb")} AS memory_mb,
           {json_number("r.metrics", "disk_percent")} AS disk_percent,
           {json_number("r.metrics", "uptime_seconds")} AS uptime_seconds,
           now() AS as_of
    FROM robots r CROSS JOIN running rj
    WHERE r.robot_id::text = :robot_id
    LIMIT 1
    """
    row = read_row(engine, sql, {"robot_id": str(robot_id), "offline_after": int(offline_after_s)})
    if row is None:
        return None
    row["has_heartbeat_history"] = has_heartbeat_history(engine, row["robot_id"])
    return row


def _heartbeat_id_match(engine: Engine, robot_id: str) -> tuple[str, dict] | None:
    """A predicate on robot_heartbeats (alias hb) selecting this robot's rows by index.

    Returns (sql, params), or None when the table is missing or the id cannot be one of its
    values (a non-uuid id against a uuid column). The id is bound with the column's own type;
    a text comparison on a uuid column could not use the (robot_id, "timestamp") index.
    """
    row = read_row(engine, """
        SELECT format_type(a.atttypid, a.atttypmod) AS type
        FROM pg_attribute a
        WHERE a.attrelid = to_regclass('robot_heartbeats') AND a.attname = 'robot_id'
          AND NOT a.attisdropped""")
    if row is None:
        return None
    if row["type"] == "uuid":
        try:
            value = str(uuid.UUID(str(robot_id)))
        except ValueError:
            return None
        return "hb.robot_id = CAST(:hb_robot_id AS uuid)", {"hb_robot_id": value}
    return "hb.robot_id::text = :hb_robot_id", {"hb_robot_id": str(robot_id)}


def has_heartbeat_history(engine: Engine, robot_id: str) -> bool:
    """Whether robot_heartbeats holds any row for this robot (one index probe)."""
    match = _heartbeat_id_match(engine, robot_id)
    if match is None:
        return False
    predicate, params = match
    row = read_row(engine, f"SELECT EXISTS (SELECT 1 FROM robot_heartbeats hb WHERE {predicate}) AS any", params)
    return bool(row and row["any"])


def status_timeline(engine: Engine, robot_id: str, start, end, offline_after_s: int) -> pd.DataFrame:
    """The robot's status over [start, end) as bands, from robot_heartbeats.

    Each heartbeat's reported status (mapped like the live status: `online` -> idle, `busy` or
    current_jobs > 0 -> busy, `error`, `maintenance`, anything else -> offline) holds until the
    next heartbeat. When the next heartbeat (or now(), after the last one) comes more than
    `offline_after_s` seconds later, the whole gap is an offline period: it starts at the last
    heartbeat before the gap and ends at the heartbeat that ends it (or now(), so a silent
    robot's last band is as long as it has been silent). A robot in maintenance is expected to
    be silent: a gap after a `maintenance` heartbeat stays maintenance. The heartbeat before
    the window gives the status at the window's start (and the one after it, where the last
    band in the window ends); bands are clipped to [start, min(end,
    now())]; consecutive segments with the same status are merged.

    Returns status, start, end, duration_s, heartbeats (how many heartbeats the band covers),
    ordered by start. Empty when there are no heartbeats.
    """
    match = _heartbeat_id_match(engine, robot_id)
    columns = ["status", "start", "end", "duration_s", "heartbeats"]
    if match is None:
        return pd.DataFrame(columns=columns)
    predicate, params = match
    sql = f"""
    WITH win AS (
        SELECT CAST(:start AS timestamptz) AS w0, least(CAST(:end AS timestamptz), now()) AS w1
    ),
    hb AS (
        (SELECT hb."timestamp" AS ts, hb.status, hb.current_jobs
         FROM robot_heartbeats hb, win
         WHERE {predicate} AND hb."timestamp" < win.w0
         ORDER BY hb."timestamp" DESC LIMIT 1)
        UNION ALL
        (SELECT hb."timestamp", hb.status, hb.current_jobs
         FROM robot_heartbeats hb, win
         WHERE {predicate} AND hb."timestamp" >= win.w0 AND hb."timestamp" < win.w1)
        UNION ALL
        (SELECT hb."timestamp", hb.status, hb.current_jobs
         FROM robot_heartbeats hb, win
         WHERE {predicate} AND hb."timestamp" >= win.w1
         ORDER BY hb."timestamp" LIMIT 1)
    ),
    reported AS (
        SELECT ts,
               CASE WHEN status = 'maintenance' THEN 'maintenance'
                    WHEN status = 'error' THEN 'error'
                    WHEN status = 'busy' OR coalesce(current_jobs, 0) > 0 THEN 'busy'
                    WHEN status = 'online' THEN 'idle'
                    ELSE 'offline' END AS st,
               coalesce(lead(ts) OVER (ORDER BY ts), now()) AS next_ts
        FROM hb
    ),
    segments AS (
        SELECT ts AS s, next_ts AS e,
               CASE WHEN st <> 'maintenance' AND next_ts - ts > make_interval(secs => :offline_after)
                    THEN 'offline' ELSE st END AS st
        FROM reported
    ),
    clipped AS (
        SELECT greatest(s, win.w0) AS s, least(e, win.w1) AS e, st
        FROM segments, win WHERE e > win.w0 AND s < win.w1 AND e > s
    ),
    marked AS (
        SELECT s, e, st,
               CASE WHEN st IS DISTINCT FROM lag(st) OVER (ORDER BY s)
                      OR s > lag(e) OVER (ORDER BY s) THEN 1 ELSE 0 END AS new_band
        FROM clipped
    ),
    grouped AS (
        SELECT s, e, st, sum(new_band) OVER (ORDER BY s) AS band FROM marked
    )
    SELECT st AS status, min(s) AS start, max(e) AS "end",
           extract(epoch FROM max(e) - min(s))::float8 AS duration_s, count(*) AS heartbeats
    FROM grouped GROUP BY band, st ORDER BY min(s)
    LIMIT {MAX_TIMELINE_BANDS}
    """
    params.update({"start": _as_utc(start), "end": _as_utc(end), "offline_after": int(offline_after_s)})
    frame = read_frame(engine, sql, params)
    return frame if not frame.empty else pd.DataFrame(columns=columns)


def metric_series(engine: Engine, robot_id: str, start, end, max_points: int = MAX_SERIES_POINTS) -> pd.DataFrame:
    """CPU, memory and disk from robot_heartbeats over [start, end), downsampled in SQL.

    The window is cut into at most `max_points` equal buckets (date_bin, at least 1 s wide);
    each bucket gives the mean and the max of each metric over its heartbeats (NULL when none
    reported it). Buckets without heartbeats are returned with heartbeats = 0 and NULL metrics,
    so a chart shows the gap; no heartbeat at all in the window gives an empty frame. Returns ts (bucket start), bucket_seconds, heartbeats,
    cpu_percent, cpu_percent_max, memory_percent, memory_percent_max, memory_mb, disk_percent.
    """
    start, end = _as_utc(start), _as_utc(end)
    columns = ["ts", "bucket_seconds", "heartbeats", "cpu_percent", "cpu_percent_max", "memory_percent",
               "memory_percent_max", "memory_mb", "disk_percent"]
    match = _heartbeat_id_match(engine, robot_id)
    if match is None or end <= start:
        return pd.DataFrame(columns=columns)
    predicate, params = match
    step = max(1, -(-int((end - start).total_seconds()) // max(1, int(max_points))))
    sql = f"""
    WITH buckets AS (
        SELECT generate_series(CAST(:start AS timestamptz), CAST(:end AS timestamptz)
                               - make_interval(secs => 0.000001), make_interval(secs => :step)) AS ts
    ),
    agg AS (
        SELECT date_bin(make_interval(secs => :step), hb."timestamp", CAST(:start AS timestamptz)) AS ts,
               count(*) AS heartbeats,
               avg({json_number("hb.metrics", "cpu_percent")}) AS cpu_percent,
               max({json_number("hb.metrics", "cpu_percent")}) AS cpu_percent_max,
               avg({json_number("hb.metrics", "memory_percent")}) AS memory_percent,
               max({json_number("hb.metrics", "memory_percent")}) AS memory_percent_max,
               avg({json_number("hb.metrics", "memory_mb")}) AS memory_mb,
               avg({json_number("hb.metrics", "disk_percent")}) AS disk_percent
        FROM robot_heartbeats hb
        WHERE {predicate} AND hb."timestamp" >= :start AND hb."timestamp" < :end
        GROUP BY 1
    )
    SELECT b.ts, :step AS bucket_seconds, coalesce(a.heartbeats, 0) AS heartbeats,
           a.cpu_percent::float8, a.cpu_percent_max::float8, a.memory_percent::float8,
           a.memory_percent_max::float8, a.memory_mb::float8, a.disk_percent::float8
    FROM buckets b LEFT JOIN agg a USING (ts)
    ORDER BY b.ts LIMIT {int(max_points) + 1}
    """
    params.update({"start": start, "end": end, "step": step})
    frame = read_frame(engine, sql, params)
    if frame.empty or frame["heartbeats"].sum() == 0:
        return pd.DataFrame(columns=columns)
    metric_columns = columns[3:]
    frame[metric_columns] = frame[metric_columns].astype(float)
    return frame


# ---------------------------------------------------------------------------------------------
# One robot: its jobs (windows select jobs by created_at)
# ---------------------------------------------------------------------------------------------

def robot_job_counts(engine: Engine, robot_id: str, start, end) -> dict:
    """How many of the robot's jobs created in [start, end) are in each status.

    Returns {status: count} for pending, running, completed, failed, cancelled (0 when none),
    plus total_jobs and success_rate (completed / (completed + failed); None when neither).
    """
    sql = """
    SELECT status, count(*) AS n FROM job_queue
    WHERE robot_id::text = :robot_id AND created_at >= :start AND created_at < :end
    GROUP BY status
    """
    frame = read_frame(engine, sql, {"robot_id": str(robot_id), "start": _as_utc(start), "end": _as_utc(end)})
    counts = {s: 0 for s in ("pending", "running", "completed", "failed", "cancelled")}
    counts.update({str(r.status): int(r.n) for r in frame.itertuples()})
    counts["total_jobs"] = int(frame["n"].sum()) if not frame.empty else 0
    finished = counts["completed"] + counts["failed"]
    counts["success_rate"] = counts["completed"] / finished if finished else None
    return counts


def robot_workflow_durations(engine: Engine, robot_id: str, start, end, limit: int = 50) -> pd.DataFrame:
    """Duration statistics per workflow the robot ran, for its jobs created in [start, end).

    Covers finished jobs that ran (completed and failed, with started_at and completed_at).
    Returns workflow_id, workflow_name, jobs, completed, failed, p50_duration_ms,
    p95_duration_ms, average_duration_ms (milliseconds, percentile_cont), most jobs first.
    """
    sql = """
    WITH d AS (
        SELECT workflow_id, workflow_name, status,
               extract(epoch FROM completed_at - started_at) * 1000.0 AS ms
        FROM job_queue
        WHERE robot_id::text = :robot_id AND created_at >= :start AND created_at < :end
          AND status IN ('completed', 'failed') AND started_at IS NOT NULL AND completed_at IS NOT NULL
    )
    SELECT workflow_id, (array_agg(workflow_name))[1] AS workflow_name, count(*) AS jobs,
           count(*) FILTER (WHERE status = 'completed') AS completed,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::float8 AS p50_duration_ms,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::float8 AS p95_duration_ms,
           avg(ms)::float8 AS average_duration_ms
    FROM d GROUP BY workflow_id ORDER BY count(*) DESC, workflow_id LIMIT :limit
    """
    return read_frame(engine, sql, {"robot_id": str(robot_id), "start": _as_utc(start), "end": _as_utc(end),
                                    "limit": int(limit)})


def robot_error_types(engine: Engine, robot_id: str, start, end, limit: int = 8) -> pd.DataFrame:
    """The robot's top error types (data.errors classification) among its failed jobs created
    in [start, end). Returns error_type, count, last_seen (latest completed_at), most first."""
    sql = f"""
    SELECT {error_type_sql("error_message")} AS error_type, count(*) AS count,
           max(coalesce(completed_at, created_at)) AS last_seen
    FROM job_queue
    WHERE robot_id::text = :robot_id AND created_at >= :start AND created_at < :end AND status = 'failed'
    GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT :limit
    """
    frame = read_frame(engine, sql, {"robot_id": str(robot_id), "start": _as_utc(start), "end": _as_utc(end),
                                     "limit": int(limit)})
    frame["error_type"] = frame["error_type"].fillna("UnknownError")
    return frame


def robot_latest_jobs(engine: Engine, robot_id: str, limit: int = 20) -> pd.DataFrame:
    """The robot's latest jobs, newest first (by created_at).

    Returns job_id, workflow_id, workflow_name, status, created_at, started_at, completed_at,
    duration_ms (None unless both timestamps), retry_count, error_type.
    """
    sql = f"""
    SELECT id::text AS job_id, workflow_id, workflow_name, status, created_at, started_at, completed_at,
           (extract(epoch FROM completed_at - started_at) * 1000.0)::float8 AS duration_ms,
           retry_count, {error_type_sql("error_message")} AS error_type
    FROM job_queue
    WHERE robot_id::text = :robot_id
    ORDER BY created_at DESC, id DESC LIMIT :limit
    """
    return read_frame(engine, sql, {"robot_id": str(robot_id), "limit": int(limit)})
