"""The job queue right now: depth by environment and priority, oldest pending job, running jobs.

One query over the live rows only (status pending or running, read through the partial index
``fm_job_active``), so its cost follows the size of the queue, not of the job history. The
queue depth is the number of ``pending`` jobs, as in the Fleet overview's KPI tiles; a pending
job whose ``visible_after`` lies in the future (a delayed retry, an expired lease put back) is
counted in the depth and also reported as ``delayed_jobs``.

Inside the running app the result is shared by all workers for the cache's short TTL
(data.cache), so many pollers and scrapers cost one query.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine

from data.cache import shared_cache
from data.db import read_frame

# Environments of the robots table are listed too (with zero jobs), so that a queue that drains
# to nothing shows a 0 instead of disappearing.
_QUEUE_SQL = """
WITH n AS (SELECT now() AS as_of),
live AS (
    SELECT j.environment, j.priority,
           count(*) FILTER (WHERE j.status = 'pending') AS queue_depth,
           count(*) FILTER (WHERE j.status = 'pending' AND j.visible_after > n.as_of) AS delayed_jobs,
           count(*) FILTER (WHERE j.status = 'running') AS running_jobs,
           min(j.created_at) FILTER (WHERE j.status = 'pending') AS oldest_pending_created_at,
           min(j.started_at) FILTER (WHERE j.status = 'running') AS oldest_running_started_at
    FROM job_queue j, n
    WHERE j.status IN ('pending', 'running')
    GROUP BY j.environment, j.priority
),
idle_envs AS (
    SELECT DISTINCT coalesce(r.environment, 'default') AS environment FROM robots r
    WHERE coalesce(r.environment, 'default') NOT IN (SELECT environment FROM live)
),
rows_ AS (
    SELECT false AS filler, environment, priority, queue_depth, delayed_jobs, running_jobs,
           oldest_pending_created_at, oldest_running_started_at FROM live
    UNION ALL
    SELECT true, environment, NULL, 0, 0, 0, NULL, NULL FROM idle_envs
)
SELECT n.as_of, x.* FROM n LEFT JOIN rows_ x ON true
ORDER BY x.environment, x.priority DESC NULLS LAST
"""


def _age(as_of: datetime, then) -> float | None:
    if then is None:
        return None
    return (as_of - then).total_seconds()


def _earliest(values):
    present = [v for v in values if v is not None]
    return min(present) if present else None


@shared_cache
def queue_breakdown(engine: Engine) -> dict:
    """The queue now, with the orchestrator's field names where it has one.

    Returns ``{"as_of", "queue_depth", "delayed_jobs", "running_jobs",
    "oldest_pending_created_at", "oldest_pending_age_seconds", "oldest_running_started_at",
    "longest_running_seconds", "by_environment", "by_priority", "by_environment_priority"}``:

    - ``by_environment``: one dict per environment (those with live jobs, plus the robots'
      environments with none), sorted by name: ``environment``, ``queue_depth``,
      ``delayed_jobs``, ``running_jobs``, ``oldest_pending_created_at``,
      ``oldest_pending_age_seconds``;
    - ``by_priority``: pending jobs per priority, highest priority first (claimed first):
      ``priority`` (None for a job without one), ``queue_depth``, ``delayed_jobs``,
      ``oldest_pending_created_at``, ``oldest_pending_age_seconds``;
    - ``by_environment_priority``: the same per environment and priority.

    Ages are seconds between the job's timestamp and ``as_of`` (the database's clock).
    """
    frame = read_frame(engine, _QUEUE_SQL)
    as_of = frame["as_of"].iloc[0].to_pydatetime()
    rows = [
        {k: (None if _missing(v) else v) for k, v in r.items()}
        for r in frame[frame["environment"].notna()].to_dict("records")
    ]
    for r in rows:
        for key in ("oldest_pending_created_at", "oldest_running_started_at"):
            if r[key] is not None and hasattr(r[key], "to_pydatetime"):
                r[key] = r[key].to_pydatetime()
        for key in ("queue_depth", "delayed_jobs", "running_jobs"):
            r[key] = int(r[key])
        if r["priority"] is not None:
            r["priority"] = int(r["priority"])
    live = [r for r in rows if not r["filler"]]

    by_env: dict[str, dict] = {}
    for r in rows:
        e = by_env.setdefault(r["environment"], {"environment": r["environment"], "queue_depth": 0,
                                                 "delayed_jobs": 0, "running_jobs": 0, "_oldest": []})
        e["queue_depth"] += r["queue_depth"]
        e["delayed_jobs"] += r["delayed_jobs"]
        e["running_jobs"] += r["running_jobs"]
        e["_oldest"].append(r["oldest_pending_created_at"])
    by_environment = []
    for name in sorted(by_env):
        e = by_env[name]
        oldest = _earliest(e.pop("_oldest"))
        by_environment.append({**e, "oldest_pending_created_at": oldest,
                               "oldest_pending_age_seconds": _age(as_of, oldest)})

    by_prio: dict = {}
    for r in live:
        if r["queue_depth"] == 0:
            continue
        p = by_prio.setdefault(r["priority"], {"priority": r["priority"], "queue_depth": 0, "delayed_jobs": 0,
                                               "_oldest": []})
        p["queue_depth"] += r["queue_depth"]
        p["delayed_jobs"] += r["delayed_jobs"]
        p["_oldest"].append(r["oldest_pending_created_at"])
    by_priority = []
    for key in sorted(by_prio, key=lambda k: (k is None, -(k or 0))):
        p = by_prio[key]
        oldest = _earliest(p.pop("_oldest"))
        by_priority.append({**p, "oldest_pending_created_at": oldest,
                            "oldest_pending_age_seconds": _age(as_of, oldest)})

    by_environment_priority = [
        {"environment": r["environment"], "priority": r["priority"], "queue_depth": r["queue_depth"],
         "delayed_jobs": r["delayed_jobs"], "oldest_pending_created_at": r["oldest_pending_created_at"],
         "oldest_pending_age_seconds": _age(as_of, r["oldest_pending_created_at"])}
        for r in live if r["queue_depth"] > 0
    ]

    oldest_pending = _earliest(r["oldest_pending_created_at"] for r in live)
    oldest_running = _earliest(r["oldest_running_started_at"] for r in live)
    return {
        "as_of": as_of,
        "queue_depth": sum(r["queue_depth"] for r in live),
        "delayed_jobs": sum(r["delayed_jobs"] for r in live),
        "running_jobs": sum(r["running_jobs"] for r in live),
        "oldest_pending_created_at": oldest_pending,
        "oldest_pending_age_seconds": _age(as_of, oldest_pending),
        "oldest_running_started_at": oldest_running,
        "longest_running_seconds": _age(as_of, oldest_running),
        "by_environment": by_environment,
        "by_priority": by_priority,
        "by_environment_priority": by_environment_priority,
    }


def _missing(value) -> bool:
    try:
        return value is None or value != value  # NaN / NaT
    except (TypeError, ValueError):
        return False
