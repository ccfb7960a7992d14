"""The Fleet overview's numbers: KPI tiles, robot status grid, queue and throughput, live feed.

Every query here is bounded by an index range (recent time or active statuses), so the cost
does not grow with the job history.
"""
from __future__ import annotations

import pandas as pd
from sqlalchemy.engine import Engine

from data import robot_rollup
from data.cache import shared_cache
from data.db import json_number, read_frame, read_row
from data.status import live_status_sql

# Window bounds written inline (not in a CTE) so the planner sees their values and picks the
# time indexes; :tz, :step and :hours are bound parameters.
TODAY_START = "(date_trunc('day', now() AT TIME ZONE :tz) AT TIME ZONE :tz)"
WINDOW_START = ("date_bin(make_interval(mins => :step), now() - make_interval(hours => :hours), "
                "timestamptz '2000-01-03')")

# Running jobs per robot; robot ids are compared as text (they may be uuid or varchar).
_RUNNING_BY_ROBOT = """
    SELECT robot_id, count(*) AS running,
           (array_agg(id::text ORDER BY started_at DESC NULLS LAST))[1] AS current_job_id,
           (array_agg(workflow_name ORDER BY started_at DESC NULLS LAST))[1] AS current_workflow
    FROM job_queue WHERE status = 'running' AND robot_id IS NOT NULL
    GROUP BY robot_id
"""

ROBOT_STATUS_SQL = f"""
    WITH running AS ({_RUNNING_BY_ROBOT})
    SELECT r.robot_id::text AS robot_id, r.name, r.hostname, r.environment,
           r.status AS stored_status,
           {live_status_sql("r", "coalesce(j.running, 0)")} AS status,
           r.last_heartbeat,
           extract(epoch FROM now() - r.last_heartbeat)::float8 AS heartbeat_age_s,
           coalesce(j.running, 0) AS running_jobs,
           j.current_job_id, j.current_workflow,
           {json_number("r.metrics", "cpu_percent")} AS cpu_percent,
           {json_number("r.metrics", "memory_percent")} AS memory_percent,
           {json_number("r.metrics", "memory_mb")} AS memory_mb
    FROM robots r LEFT JOIN running j ON j.robot_id = r.robot_id::text
"""


@shared_cache
def robot_statuses(engine: Engine, offline_after_s: int) -> pd.DataFrame:
    """One row per robot with its live status, heartbeat age, current job and latest metrics."""
    sql = ROBOT_STATUS_SQL + " ORDER BY r.environment, r.name, r.robot_id::text"
    return read_frame(engine, sql, {"offline_after": offline_after_s})


# The KPI tiles' finished jobs, in one pass for today and the last 24 hours (today always started
# less than 24 hours ago, except on the 25-hour day of a daylight-saving change: hence least()).
_FINISHED_RAW = f"""
        SELECT count(*) FILTER (WHERE status = 'completed' AND completed_at >= {TODAY_START}) AS completed_today,
               count(*) FILTER (WHERE status = 'failed' AND completed_at >= {TODAY_START}) AS failed_today,
               count(*) FILTER (WHERE status = 'completed' AND completed_at >= now() - interval '24 hours')
                   AS completed_24h,
               count(*) FILTER (WHERE status = 'failed' AND completed_at >= now() - interval '24 hours')
                   AS failed_24h,
               avg(extract(epoch FROM completed_at - started_at))
                   FILTER (WHERE started_at IS NOT NULL AND completed_at >= now() - interval '24 hours')
                   AS avg_duration_s
        FROM job_queue
        WHERE completed_at >= least({TODAY_START}, now() - interval '24 hours')
          AND status IN ('completed', 'failed')"""
# The same figures when the robots' rollup has them (data.robot_rollup.finished_totals).
_FINISHED_ROLLED = """
        SELECT CAST(:completed_today AS bigint) AS completed_today, CAST(:failed_today AS bigint) AS failed_today,
               CAST(:completed_24h AS bigint) AS completed_24h, CAST(:failed_24h AS bigint) AS failed_24h,
               CAST(:dur_sum_s AS float8) / nullif(CAST(:timed_24h AS bigint), 0) AS avg_duration_s"""


@shared_cache
def fleet_kpis(engine: Engine, tz: str, offline_after_s: int) -> dict:
    """The KPI tiles, with the orchestrator's field names where it has one.

    `today` is the calendar day in time zone `tz`. Success rate and average duration cover
    jobs that finished (completed or failed) in the last 24 hours. `change_token` changes
    whenever a job is created, started or finished, so a refresh can skip heavier queries.
    The finished jobs come from the robots' rollup (data.robot_rollup) once it runs, else from
    one pass over the index of finished jobs.
    """
    rolled = robot_rollup.finished_totals(engine, tz)
    sql = f"""
    WITH running AS ({_RUNNING_BY_ROBOT}),
    robots_live AS (
        SELECT {live_status_sql("r", "coalesce(j.running, 0)")} AS status
        FROM robots r LEFT JOIN running j ON j.robot_id = r.robot_id::text
    ),
    robot_counts AS (
        SELECT count(*) AS total_robots,
               count(*) FILTER (WHERE status = 'busy') AS busy,
               count(*) FILTER (WHERE status = 'idle') AS idle,
               count(*) FILTER (WHERE status = 'offline') AS offline,
               count(*) FILTER (WHERE status = 'error') AS error,
               count(*) FILTER (WHERE status = 'maintenance') AS maintenance
        FROM robots_live
    ),
    active AS (
        SELECT count(*) FILTER (WHERE status = 'pending') AS queue_depth,
               count(*) FILTER (WHERE status = 'running') AS running_jobs,
               min(created_at) FILTER (WHERE status = 'pending') AS oldest_pending
        FROM job_queue WHERE status IN ('pending', 'running')
    ),
    finished AS ({_FINISHED_RAW if rolled is None else _FINISHED_ROLLED})
    SELECT rc.*, a.queue_depth, a.running_jobs,
           extract(epoch FROM now() - a.oldest_pending)::float8 AS oldest_pending_age_s,
           ft.completed_today, ft.failed_today,
           (SELECT count(*) FROM job_queue WHERE created_at >= {TODAY_START}) AS total_jobs_today,
           ft.completed_24h, ft.failed_24h, ft.avg_duration_s::float8 AS avg_duration_s,
           (SELECT max(created_at) FROM job_queue) AS last_created,
           (SELECT max(started_at) FROM job_queue WHERE started_at IS NOT NULL) AS last_started,
           (SELECT max(completed_at) FROM job_queue WHERE completed_at IS NOT NULL) AS last_completed,
           now() AS as_of
    FROM robot_counts rc, active a, finished ft
    """
    row = read_row(engine, sql, {"tz": tz, "offline_after": offline_after_s, **(rolled or {})})
    finished = row["completed_24h"] + row["failed_24h"]
    return {
        "total_robots": row["total_robots"],
        "active_robots": row["busy"],
        "idle_robots": row["idle"],
        "online_robots": row["busy"] + row["idle"],
        "offline_robots": row["offline"],
        "error_robots": row["error"],
        "maintenance_robots": row["maintenance"],
        "queue_depth": row["queue_depth"],
        "active_jobs": row["running_jobs"],
        "oldest_pending_age_seconds": row["oldest_pending_age_s"],
        "total_jobs_today": row["total_jobs_today"],
        "completed_jobs_today": row["completed_today"],
        "failed_jobs_today": row["failed_today"],
        "success_rate_24h": (row["completed_24h"] / finished) if finished else None,
        "finished_jobs_24h": finished,
        "average_job_duration_seconds": row["avg_duration_s"],
        "as_of": row["as_of"],
        "change_token": "|".join(
            str(row[k]) for k in ("last_created", "last_started", "last_completed", "queue_depth", "running_jobs")
        ),
    }


@shared_cache
def queue_depth_series(engine: Engine, hours: int = 6, step_minutes: int = 5, version: str = "") -> pd.DataFrame:
    """Jobs waiting (created, not yet started or cancelled) at each step over the last hours.

    A job is waiting at instant t when created_at <= t < coalesce(started_at, completed_at).
    Only jobs that were still waiting at the window start can matter; they are the pending ones
    plus those started or finished inside the window, all reachable by index.
    """
    sql = f"""
    WITH edges AS (
        SELECT generate_series({WINDOW_START}, now(), make_interval(mins => :step)) AS t
        UNION ALL SELECT now()
    ),
    candidates AS (
        SELECT created_at, coalesce(started_at, completed_at) AS left_at
        FROM job_queue WHERE status = 'pending'
        UNION ALL
        SELECT created_at, started_at FROM job_queue WHERE started_at >= {WINDOW_START}
        UNION ALL
        SELECT created_at, completed_at FROM job_queue
        WHERE completed_at >= {WINDOW_START} AND started_at IS NULL AND status <> 'pending'
    )
    SELECT e.t AS ts, count(c.created_at) AS queue_depth
    FROM edges e LEFT JOIN candidates c
      ON c.created_at <= e.t AND (c.left_at IS NULL OR c.left_at > e.t)
    GROUP BY e.t ORDER BY e.t
    """
    return read_frame(engine, sql, {"hours": hours, "step": step_minutes})


@shared_cache
def throughput_series(engine: Engine, hours: int = 6, step_minutes: int = 15, version: str = "") -> pd.DataFrame:
    """Jobs completed and failed per step over the last hours, by completed_at."""
    sql = f"""
    WITH edges AS (
        SELECT generate_series({WINDOW_START}, now(), make_interval(mins => :step)) AS t
    ),
    finished AS (
        SELECT date_bin(make_interval(mins => :step), completed_at, timestamptz '2000-01-03') AS t,
               count(*) FILTER (WHERE status = 'completed') AS completed,
               count(*) FILTER (WHERE status = 'failed') AS failed
        FROM job_queue
        WHERE completed_at >= {WINDOW_START} AND status IN ('completed', 'failed')
        GROUP BY 1
    )
    SELECT e.t AS ts, coalesce(f.completed, 0) AS completed, coalesce(f.failed, 0) AS failed
    FROM edges e LEFT JOIN finished f USING (t) ORDER BY e.t
    """
    return read_frame(engine, sql, {"hours": hours, "step": step_minutes})


@shared_cache
def recent_job_changes(engine: Engine, limit: int = 15, version: str = "") -> pd.DataFrame:
    """The latest job status changes (created, started, finished), newest first.

    `version` (here and in the series above) is the caller's fleet_kpis change token: the SQL
    ignores it, but the shared cache keys on it, so a new token never gets an older answer."""
    sql = """
    SELECT * FROM (
        (SELECT id::text AS job_id, workflow_name, robot_id, 'queued' AS change, status,
                created_at AS at FROM job_queue ORDER BY created_at DESC LIMIT :n)
        UNION ALL
        (SELECT id::text, workflow_name, robot_id, 'started', status, started_at
         FROM job_queue WHERE started_at IS NOT NULL ORDER BY started_at DESC LIMIT :n)
        UNION ALL
        (SELECT id::text, workflow_name, robot_id, status, status, completed_at
         FROM job_queue WHERE completed_at IS NOT NULL ORDER BY completed_at DESC LIMIT :n)
    ) changes ORDER BY at DESC, job_id LIMIT :n
    """
    return read_frame(engine, sql, {"n": limit})


@shared_cache
def recent_failures(engine: Engine, minutes: int = 60, limit: int = 8) -> dict:
    """Jobs that finished in the last minutes: failure count and rate, and the workflows failing most."""
    sql = """
    WITH finished AS (
        SELECT workflow_name, status, completed_at FROM job_queue
        WHERE completed_at >= now() - make_interval(mins => :m) AND status IN ('completed', 'failed')
    )
    SELECT workflow_name, count(*) FILTER (WHERE status = 'failed') AS failed, count(*) AS finished,
           max(completed_at) FILTER (WHERE status = 'failed') AS last_failed_at
    FROM finished GROUP BY workflow_name
    """
    frame = read_frame(engine, sql, {"m": minutes})
    failed = int(frame["failed"].sum()) if not frame.empty else 0
    finished = int(frame["finished"].sum()) if not frame.empty else 0
    top = frame[frame["failed"] > 0].sort_values(["failed", "workflow_name"], ascending=[False, True]).head(limit)
    return {
        "minutes": minutes,
        "failed": failed,
        "finished": finished,
        "failure_rate": failed / finished if finished else None,
        "by_workflow": top.reset_index(drop=True),
    }


@shared_cache
def sla_breaches(engine: Engine, hours: int = 24, success_target: float = 0.99,
                 p95_target_ms: float = 60_000) -> pd.DataFrame:
    """Workflows whose jobs finished in the last hours missed the success-rate or P95 target.

    Covers finished jobs that ran (completed and failed with both timestamps), by completed_at.
    """
    sql = """
    SELECT workflow_id, workflow_name,
           count(*) AS finished,
           avg((status = 'completed')::int)::float8 AS success_rate,
           percentile_cont(0.95) WITHIN GROUP (
               ORDER BY extract(epoch FROM completed_at - started_at) * 1000)::float8 AS p95_duration_ms
    FROM job_queue
    WHERE completed_at >= now() - make_interval(hours => :h) AND status IN ('completed', 'failed')
      AND started_at IS NOT NULL
    GROUP BY workflow_id, workflow_name
    HAVING avg((status = 'completed')::int) < :s
        OR percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at) * 1000) > :p
    ORDER BY avg((status = 'completed')::int), workflow_name
    """
    return read_frame(engine, sql, {"h": hours, "s": success_target, "p": p95_target_ms})
