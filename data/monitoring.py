"""What the Prometheus exporter and the health checks read.

Robot counts reuse the Fleet overview's live-status SQL (data.fleet.ROBOT_STATUS_SQL), grouped
in PostgreSQL.

Job counters and the run-duration histogram (``casare_workflows_total``,
``casare_workflow_duration_seconds``) come from a rollup kept in the app's own schema,
``fleet_monitor.run_totals``: per workflow and final status, how many jobs finished, how many of
them ran (both timestamps), the sum of their durations and cumulative counts per duration
bucket (DURATION_BUCKETS_S). The rollup only ever adds, so the exported counters never go
down, whichever app process answers a scrape, after restarts, and when the orchestrator deletes
jobs (dead-letter moves, retention). It advances by ``completed_at``:

- a *watermark* says up to which ``completed_at`` jobs are counted; each advance counts the
  finished jobs with ``watermark < completed_at <= now() - lag`` (an index range on
  ``fm_job_finished``) and moves the watermark, in one transaction. ``lag``
  (RUN_TOTALS_LAG_SECONDS) leaves time for the orchestrator's transaction that set
  ``completed_at = now()`` to commit; a job whose ``completed_at`` is written further in the
  past than that is not counted;
- one advance covers at most RUN_TOTALS_MAX_STEP of ``completed_at`` (catching up after a long
  pause takes a few scrapes, each one cheap);
- on first use (or when the bucket list changes) the rollup starts from scratch, counting the
  jobs finished in the RUN_TOTALS_BACKFILL before; ``since`` (exported as the counters'
  ``_created`` time) records that start;
- concurrent advances (several workers) are serialised by a transaction-level advisory lock; a
  worker that does not get it skips advancing and reads the totals as they are.
"""
from __future__ import annotations

import logging
from datetime import timedelta

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from data.cache import shared_cache
from data.db import _UNAVAILABLE, _translate, read_frame
from data.fleet import ROBOT_STATUS_SQL
from data.schema import APP_SCHEMA

log = logging.getLogger(__name__)

# Upper bounds (seconds) of the run-duration histogram; +Inf is implied.
DURATION_BUCKETS_S: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
RUN_TOTALS_LAG_SECONDS = 30.0
RUN_TOTALS_BACKFILL = timedelta(hours=24)
RUN_TOTALS_MAX_STEP = timedelta(hours=24)
FINAL_STATUSES = ("completed", "failed", "cancelled")

_LOCK_KEY = 0x466D5254  # "FmRT"
_TOTALS = f"{APP_SCHEMA}.run_totals"
_STATE = f"{APP_SCHEMA}.run_totals_state"
_DDL = [
    f"""CREATE TABLE IF NOT EXISTS {_TOTALS} (
            workflow_id text NOT NULL,
            status text NOT NULL,
            runs bigint NOT NULL,
            timed_runs bigint NOT NULL,
            duration_sum_s double precision NOT NULL,
            bucket_counts bigint[] NOT NULL,
            PRIMARY KEY (workflow_id, status)
        )""",
    f"""CREATE TABLE IF NOT EXISTS {_STATE} (
            id integer PRIMARY KEY CHECK (id = 1),
            buckets double precision[] NOT NULL,
            since timestamptz NOT NULL,
            watermark timestamptz NOT NULL
        )""",
]


# ---------------------------------------------------------------------------------------------
# Gauges
# ---------------------------------------------------------------------------------------------
@shared_cache
def robot_status_counts(engine: Engine, offline_after_s: int) -> pd.DataFrame:
    """Robots per live status and environment: columns ``status``, ``environment``, ``robots``.

    The live status is the Fleet overview's (stored status corrected by heartbeat age)."""
    sql = f"""
    SELECT s.status, coalesce(s.environment, 'default') AS environment, count(*) AS robots
    FROM ({ROBOT_STATUS_SQL}) s
    GROUP BY 1, 2 ORDER BY 1, 2
    """
    frame = read_frame(engine, sql, {"offline_after": int(offline_after_s)})
    frame["robots"] = frame["robots"].astype("int64")
    return frame


# ---------------------------------------------------------------------------------------------
# Run totals rollup
# ---------------------------------------------------------------------------------------------
def _bucket_sql() -> str:
    """ARRAY[count(*) FILTER (WHERE d <= b) ...] over the fixed bucket list (constants only)."""
    parts = [f"count(*) FILTER (WHERE d <= {float(b)!r})" for b in DURATION_BUCKETS_S]
    return f"ARRAY[{', '.join(parts)}]::bigint[]"


_ADVANCE_SQL = f"""
WITH finished AS (
    SELECT j.workflow_id, j.status,
           CASE WHEN j.started_at IS NOT NULL THEN extract(epoch FROM j.completed_at - j.started_at)::float8 END AS d
    FROM job_queue j
    WHERE j.completed_at > :lo AND j.completed_at <= :hi AND j.status IN ('completed', 'failed', 'cancelled')
),
agg AS (
    SELECT workflow_id, status, count(*) AS runs, count(d) AS timed_runs,
           coalesce(sum(d), 0)::float8 AS duration_sum_s, {_bucket_sql()} AS bucket_counts
    FROM finished GROUP BY workflow_id, status
)
INSERT INTO {_TOTALS} AS t (workflow_id, status, runs, timed_runs, duration_sum_s, bucket_counts)
SELECT workflow_id, status, runs, timed_runs, duration_sum_s, bucket_counts FROM agg
ON CONFLICT (workflow_id, status) DO UPDATE SET
    runs = t.runs + EXCLUDED.runs,
    timed_runs = t.timed_runs + EXCLUDED.timed_runs,
    duration_sum_s = t.duration_sum_s + EXCLUDED.duration_sum_s,
    bucket_counts = (SELECT array_agg(a + b ORDER BY i)
                     FROM unnest(t.bucket_counts, EXCLUDED.bucket_counts) WITH ORDINALITY AS u(a, b, i))
"""


def advance_run_totals(engine: Engine, *, lag_s: float = RUN_TOTALS_LAG_SECONDS,
                       backfill: timedelta = RUN_TOTALS_BACKFILL,
                       max_step: timedelta = RUN_TOTALS_MAX_STEP) -> bool:
    """Count the jobs finished since the watermark into the rollup (see the module docstring).

    Returns True when it advanced, False when another process held the lock or nothing was due.
    Creates the rollup's tables on first use. Raises DatabaseUnavailable when the database
    cannot be reached."""
    buckets = [float(b) for b in DURATION_BUCKETS_S]
    try:
        with engine.begin() as conn:
            if not conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _LOCK_KEY}).scalar():
                return False
            present = conn.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL AND to_regclass(:s) IS NOT NULL"),
                                   {"t": _TOTALS, "s": _STATE}).scalar()
            if not present:
                for ddl in _DDL:
                    conn.execute(sa.text(ddl))
            state = conn.execute(
                sa.text(f"SELECT buckets, watermark, now() AS now FROM {_STATE} WHERE id = 1 FOR UPDATE")
            ).mappings().first()
            now = conn.execute(sa.text("SELECT now()")).scalar() if state is None else state["now"]
            if state is None or [float(b) for b in state["buckets"]] != buckets:
                start = now - backfill
                conn.execute(sa.text(f"DELETE FROM {_TOTALS}"))
                conn.execute(
                    sa.text(f"INSERT INTO {_STATE} (id, buckets, since, watermark) VALUES (1, :b, :t, :t) "
                            "ON CONFLICT (id) DO UPDATE SET buckets = EXCLUDED.buckets, since = EXCLUDED.since, "
                            "watermark = EXCLUDED.watermark"),
                    {"b": buckets, "t": start},
                )
                watermark = start
            else:
                watermark = state["watermark"]
            hi = min(now - timedelta(seconds=lag_s), watermark + max_step)
            if hi <= watermark:
                return False
            conn.execute(sa.text(_ADVANCE_SQL), {"lo": watermark, "hi": hi})
            conn.execute(sa.text(f"UPDATE {_STATE} SET watermark = :hi WHERE id = 1"), {"hi": hi})
            return True
    except _UNAVAILABLE as exc:
        raise _translate(exc, engine) from exc


def run_totals(engine: Engine) -> dict:
    """The rollup as it stands: ``{"since", "watermark", "buckets", "rows"}``.

    ``rows`` has one row per workflow and final status: ``workflow_id``, ``status``, ``runs``
    (finished jobs), ``timed_runs`` (those with a duration), ``duration_sum_s`` and
    ``bucket_counts`` (cumulative: jobs with a duration <= each of ``buckets``, in seconds).
    ``since`` is None (and ``rows`` empty) before the first advance."""
    present = read_frame(engine, "SELECT to_regclass(:t) IS NOT NULL AND to_regclass(:s) IS NOT NULL AS ok",
                         {"t": _TOTALS, "s": _STATE})
    empty = pd.DataFrame(columns=["workflow_id", "status", "runs", "timed_runs", "duration_sum_s", "bucket_counts"])
    if not bool(present["ok"].iloc[0]):
        return {"since": None, "watermark": None, "buckets": list(DURATION_BUCKETS_S), "rows": empty}
    frame = read_frame(
        engine,
        f"SELECT s.since, s.watermark, s.buckets, t.workflow_id, t.status, t.runs, t.timed_runs, t.duration_sum_s, "
        f"t.bucket_counts FROM {_STATE} s LEFT JOIN {_TOTALS} t ON true WHERE s.id = 1 "
        f"ORDER BY t.workflow_id, t.status",
    )
    if frame.empty:
        return {"since": None, "watermark": None, "buckets": list(DURATION_BUCKETS_S), "rows": empty}
    first = frame.iloc[0]
    rows = frame[frame["workflow_id"].notna()][list(empty.columns)].reset_index(drop=True)
    return {"since": first["since"].to_pydatetime(), "watermark": first["watermark"].to_pydatetime(),
            "buckets": [float(b) for b in first["buckets"]], "rows": rows}


# ---------------------------------------------------------------------------------------------
# Readiness
# ---------------------------------------------------------------------------------------------
READY_TABLES = ("job_queue", "robots", f"{APP_SCHEMA}.users", f"{APP_SCHEMA}.audit_log")


def readiness(engine: Engine, timeout_ms: int = 2000) -> dict:
    """``{"database": bool, "schema": bool}``: the database answers (within ``timeout_ms``) and
    the tables the app needs exist. Never raises; says nothing about why (callers may be
    anonymous)."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT set_config('statement_timeout', :t, true)"), {"t": str(int(timeout_ms))})
            missing = conn.execute(
                sa.text("SELECT count(*) FROM unnest(CAST(:names AS text[])) AS n WHERE to_regclass(n) IS NULL"),
                {"names": list(READY_TABLES)},
            ).scalar()
            conn.rollback()
    except Exception as exc:  # any failure means "not ready"; the reason goes to the log only
        log.warning("readiness check failed: %s", type(exc).__name__)
        return {"database": False, "schema": False}
    return {"database": True, "schema": missing == 0}
