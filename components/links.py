"""URLs between pages. The job history's query parameters are the contract every chart uses to
link to the jobs behind it:

    status       comma-separated job statuses (pending,running,completed,failed,cancelled)
    workflow     comma-separated workflow ids
    robot        a robot id
    environment  an environment name
    range        1h | 24h | 7d | 30d | 90d | today | custom (custom uses from/to)
    from, to     ISO 8601 instants (with offset) for range=custom
    error_type   a classified error type (e.g. TimeoutError)
    q            text searched in error messages
"""
from __future__ import annotations

from urllib.parse import quote, urlencode


def executions_link(**filters) -> str:
    """A link to the job history with the given filters (lists become comma-separated)."""
    query = {
        k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v
        for k, v in filters.items()
        if v not in (None, "", [], ())
    }
    return "/executions" + (f"?{urlencode(query)}" if query else "")


def job_link(job_id: str) -> str:
    return f"/executions/{quote(str(job_id), safe='')}"


def robot_link(robot_id: str) -> str:
    return f"/robots/{quote(str(robot_id), safe='')}"
