"""A robot's live status: its stored status corrected by the age of its last heartbeat."""
from __future__ import annotations

# Live statuses, in the order the pages list them.
LIVE_STATUSES = ["busy", "idle", "error", "maintenance", "offline"]


def live_status_sql(robot: str = "r", running_jobs: str = "0") -> str:
    """SQL expression for the live status of robot alias `robot`.

    Needs the bound parameter :offline_after (seconds). `maintenance` is kept as is (a robot in
    maintenance is expected to be silent); otherwise a robot whose last heartbeat is missing or
    older than the threshold is `offline` whatever its row says. A responding robot is `busy`
    when its row says so or it holds running jobs, `idle` when its row says `online`.
    """
    return f"""CASE
        WHEN {robot}.status = 'maintenance' THEN 'maintenance'
        WHEN {robot}.last_heartbeat IS NULL
          OR {robot}.last_heartbeat < now() - make_interval(secs => :offline_after) THEN 'offline'
        WHEN {robot}.status = 'error' THEN 'error'
        WHEN {robot}.status = 'busy' OR {running_jobs} > 0 THEN 'busy'
        WHEN {robot}.status = 'online' THEN 'idle'
        ELSE 'offline' END"""
