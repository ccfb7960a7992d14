"""The same questions as one plain SQL query on the raw tables.

What someone would write without the app's shaping: OFFSET paging, exact counts, percentiles
over the whole filtered set, one full pass for the KPI tiles, DISTINCT for filter choices. The
planner may still use an index where the plain query allows it. A question whose plain query
is what the app already runs has no entry here ("—" in RESULTS.md).

Each function returns (sql, params); bench.run runs it with a statement timeout.
"""
from __future__ import annotations

from data.errors import error_type_sql

DUR = "extract(epoch FROM completed_at - started_at) * 1000"


def fleet_kpis(tz: str, offline_after: int) -> tuple[str, dict]:
    return f"""
    SELECT (SELECT count(*) FROM robots) AS total_robots,
           (SELECT count(*) FROM robots WHERE last_heartbeat >= now() - make_interval(secs => :o)) AS online,
           count(*) FILTER (WHERE status = 'pending') AS queue_depth,
           count(*) FILTER (WHERE status = 'running') AS running,
           count(*) FILTER (WHERE created_at >= date_trunc('day', now() AT TIME ZONE :tz) AT TIME ZONE :tz) AS today,
           count(*) FILTER (WHERE status = 'completed' AND completed_at >= now() - interval '24 hours') AS completed_24h,
           count(*) FILTER (WHERE status = 'failed' AND completed_at >= now() - interval '24 hours') AS failed_24h,
           avg({DUR}) FILTER (WHERE status IN ('completed', 'failed') AND completed_at >= now() - interval '24 hours')
    FROM job_queue""", {"tz": tz, "o": offline_after}


def robot_statuses() -> tuple[str, dict]:
    return """
    SELECT r.robot_id, r.name, r.status, r.last_heartbeat, r.metrics, count(j.id) AS running
    FROM robots r LEFT JOIN job_queue j ON j.robot_id = r.robot_id AND j.status = 'running'
    GROUP BY r.robot_id ORDER BY r.environment, r.name""", {}


def queue_depth_series(hours: int = 6, step_minutes: int = 5) -> tuple[str, dict]:
    return """
    WITH edges AS (SELECT generate_series(now() - make_interval(hours => :h), now(), make_interval(mins => :s)) AS t)
    SELECT e.t, count(j.id) FROM edges e
    LEFT JOIN job_queue j ON j.created_at <= e.t
         AND (j.status = 'pending' OR coalesce(j.started_at, j.completed_at) > e.t)
    GROUP BY e.t ORDER BY e.t""", {"h": hours, "s": step_minutes}


def recent_job_changes(limit: int = 15) -> tuple[str, dict]:
    return """
    SELECT id, workflow_name, status, greatest(created_at, started_at, completed_at) AS at
    FROM job_queue ORDER BY at DESC NULLS LAST LIMIT :n""", {"n": limit}


def _where(filters, tz: str) -> tuple[str, dict]:
    from data.jobs import filter_sql

    where, params = filter_sql(filters, tz)
    return ("WHERE " + " AND ".join(where)) if where else "", params


def job_page(filters, tz: str, page: int, sort: str = "-created", page_size: int = 50) -> tuple[str, dict]:
    from data.jobs import LIST_COLUMNS

    where, params = _where(filters, tz)
    if sort == "-duration":
        where = (where + " AND " if where else "WHERE ") + "j.completed_at IS NOT NULL AND j.started_at IS NOT NULL"
        order = "(j.completed_at - j.started_at) DESC, j.id DESC"
    else:
        order = "j.created_at DESC, j.id DESC"
    return (f"SELECT {LIST_COLUMNS} FROM job_queue j {where} ORDER BY {order} OFFSET :off LIMIT :lim",
            {**params, "off": (page - 1) * page_size, "lim": page_size})


def job_count(filters, tz: str) -> tuple[str, dict]:
    where, params = _where(filters, tz)
    return f"SELECT count(*) FROM job_queue j {where}", params


def job_summary(filters, tz: str) -> tuple[str, dict]:
    where, params = _where(filters, tz)
    timed = "j.status IN ('completed', 'failed') AND j.started_at IS NOT NULL AND j.completed_at IS NOT NULL"
    return f"""
    SELECT j.status, count(*),
           percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY extract(epoch FROM j.completed_at - j.started_at))
               FILTER (WHERE {timed})
    FROM job_queue j {where} GROUP BY j.status""", params


def distinct(column: str) -> tuple[str, dict]:
    return f"SELECT DISTINCT {column} FROM job_queue ORDER BY 1", {}


def robot_work_stats(tz: str) -> tuple[str, dict]:
    return """
    SELECT robot_id,
           count(*) FILTER (WHERE status = 'completed' AND completed_at >= date_trunc('day', now() AT TIME ZONE :tz) AT TIME ZONE :tz),
           count(*) FILTER (WHERE status = 'completed'), count(*),
           sum(extract(epoch FROM least(completed_at, now()) - greatest(started_at, now() - interval '24 hours')))
               FILTER (WHERE completed_at >= now() - interval '24 hours')
    FROM job_queue WHERE completed_at >= now() - interval '7 days' AND status IN ('completed', 'failed')
    GROUP BY robot_id""", {"tz": tz}


def heartbeat_rows(robot_id: str, start, end) -> tuple[str, dict]:
    sql = ('SELECT "timestamp", status, current_jobs, metrics FROM robot_heartbeats '
           'WHERE robot_id = :r AND "timestamp" >= :s AND "timestamp" < :e ORDER BY "timestamp"')
    return sql, {"r": robot_id, "s": start, "e": end}


def heartbeat_series(robot_id: str, start, end, points: int = 500) -> tuple[str, dict]:
    step = max(1, int((end - start).total_seconds() // points))
    return """
    SELECT date_bin(make_interval(secs => :step), "timestamp", CAST(:s AS timestamptz)) AS ts,
           avg((metrics ->> 'cpu_percent')::float8), max((metrics ->> 'cpu_percent')::float8),
           avg((metrics ->> 'memory_percent')::float8), avg((metrics ->> 'memory_mb')::float8),
           avg((metrics ->> 'disk_percent')::float8)
    FROM robot_heartbeats WHERE robot_id = :r AND "timestamp" >= :s AND "timestamp" < :e
    GROUP BY 1 ORDER BY 1""", {"r": robot_id, "s": start, "e": end, "step": step}


def robot_jobs(robot_id: str, start, end) -> tuple[str, dict]:
    return f"""
    SELECT workflow_id, status, count(*),
           percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY {DUR})
    FROM job_queue WHERE robot_id = :r AND created_at >= :s AND created_at < :e
    GROUP BY workflow_id, status""", {"r": robot_id, "s": start, "e": end}


# Analytics: each section as the one GROUP BY a straightforward implementation would send.
def _window(f) -> dict:
    return {"s": f.start, "e": f.end, "tz": f.tz, "st": list(f.statuses)}


def an_duration_percentiles(f) -> tuple[str, dict]:
    return f"""
    SELECT workflow_id, count(*),
           percentile_cont(ARRAY[0.5, 0.9, 0.95, 0.99]) WITHIN GROUP (ORDER BY {DUR})
               FILTER (WHERE status = ANY(:st) AND started_at IS NOT NULL AND completed_at IS NOT NULL)
    FROM job_queue WHERE created_at >= :s AND created_at < :e GROUP BY workflow_id""", _window(f)


def an_time_series(f) -> tuple[str, dict]:
    return f"""
    SELECT date_trunc(:b, created_at AT TIME ZONE :tz) AS bucket, status, count(*),
           percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY {DUR})
    FROM job_queue WHERE created_at >= :s AND created_at < :e GROUP BY 1, 2 ORDER BY 1""", {**_window(f), "b": f.bucket}


def an_workflow_stats(f) -> tuple[str, dict]:
    return f"""
    SELECT workflow_id, count(*) FILTER (WHERE status IN ('completed', 'failed')),
           count(*) FILTER (WHERE status = 'completed'),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY {DUR}) FILTER (WHERE status = ANY(:st)),
           count(DISTINCT {error_type_sql('error_message')}) FILTER (WHERE status = 'failed')
    FROM job_queue WHERE created_at >= :s AND created_at < :e GROUP BY workflow_id""", _window(f)


def an_errors(f) -> tuple[str, dict]:
    return f"""
    SELECT date_trunc(:b, created_at AT TIME ZONE :tz), workflow_id, {error_type_sql('error_message')}, count(*)
    FROM job_queue WHERE created_at >= :s AND created_at < :e AND status = 'failed'
    GROUP BY 1, 2, 3""", {**_window(f), "b": f.bucket}


def an_histogram(f, bins: int = 40) -> tuple[str, dict]:
    return f"""
    WITH d AS (SELECT status, {DUR} AS v FROM job_queue
               WHERE created_at >= :s AND created_at < :e AND status = ANY(:st) AND started_at IS NOT NULL
                 AND completed_at IS NOT NULL),
    r AS (SELECT min(v) AS lo, max(v) AS hi FROM d)
    SELECT width_bucket(v, lo, hi + 1e-9, :bins), status, count(*) FROM d, r GROUP BY 1, 2""", {**_window(f), "bins": bins}


ANALYTICS = {
    "duration_percentiles": an_duration_percentiles, "time_series": an_time_series,
    "workflow_stats": an_workflow_stats, "workflow_efficiency": an_workflow_stats,
    "errors_over_time": an_errors, "errors_by_workflow": an_errors, "duration_histogram": an_histogram,
}
