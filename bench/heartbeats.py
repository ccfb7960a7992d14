"""Dense heartbeat history for the large benchmark database: every 10 s for the last 24 hours.

The demo writes a heartbeat per robot every 60 s for 3 days. A real fleet beats faster; for
1,000 robots every 10 s over 24 hours that is 8.64 M rows, the volume the robot page's queries
must stay fast on. Rather than model robots a second time, this fills each gap of the demo's
own history with the beats a 10-second robot would have sent in between: each inserted beat
repeats the status and running-job count of the beat before it, with a little noise on CPU and
latency. Gaps longer than `max_gap_s` (outages, silent robots) stay gaps, so the robot page
still shows them. All of it is one INSERT ... SELECT with generate_series, inside PostgreSQL.
"""
from __future__ import annotations

import logging
import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine

log = logging.getLogger("bench")

_FILL_SQL = """
INSERT INTO robot_heartbeats (robot_id, "timestamp", status, current_jobs, metrics, ip_address, latency_ms)
WITH beats AS (
    SELECT robot_id, "timestamp" AS ts, status, current_jobs, metrics, ip_address, latency_ms,
           lead("timestamp") OVER (PARTITION BY robot_id ORDER BY "timestamp") AS next_ts
    FROM robot_heartbeats
    WHERE "timestamp" >= now() - make_interval(hours => :hours) - make_interval(secs => :max_gap)
)
SELECT b.robot_id, b.ts + make_interval(secs => k * :every), b.status, b.current_jobs,
       CASE WHEN jsonb_typeof(b.metrics -> 'cpu_percent') = 'number'
            THEN jsonb_set(b.metrics, '{cpu_percent}',
                           to_jsonb(round(least(99, greatest(1, (b.metrics ->> 'cpu_percent')::float8
                                                               + (random() - 0.5) * 8))::numeric, 1)))
            ELSE b.metrics END,
       b.ip_address,
       greatest(1, round(coalesce(b.latency_ms, 18) * (0.8 + random() * 0.4)))::int
FROM beats b, generate_series(1, ceil(CAST(:max_gap AS float8) / :every)::int) AS k
WHERE b.next_ts IS NOT NULL AND b.next_ts - b.ts <= make_interval(secs => :max_gap)
  AND b.ts + make_interval(secs => k * :every) < b.next_ts - make_interval(secs => :every / 2.0)
  AND b.ts + make_interval(secs => k * :every) >= now() - make_interval(hours => :hours)
"""


def densify_heartbeats(engine: Engine, hours: int = 24, every_s: int = 10, max_gap_s: int = 90) -> dict:
    """Fill the last `hours` of robot_heartbeats to one beat every `every_s` seconds per robot.

    Returns ``{"inserted", "rows_last_window", "seconds"}``. Idempotent enough for a build: a
    second run finds gaps of `every_s` and inserts nothing.
    """
    began = time.perf_counter()
    with engine.connect() as conn, conn.begin():
        for setting in ("statement_timeout = 0", "work_mem = '256MB'", "synchronous_commit = off"):
            conn.execute(sa.text(f"SET LOCAL {setting}"))
        inserted = conn.execute(sa.text(_FILL_SQL), {"hours": hours, "every": every_s, "max_gap": max_gap_s}).rowcount
    with engine.connect() as conn:
        in_window = conn.execute(sa.text(
            'SELECT count(*) FROM robot_heartbeats WHERE "timestamp" >= now() - make_interval(hours => :h)'),
            {"h": hours}).scalar()
    stats = {"inserted": int(inserted), "rows_last_window": int(in_window), "hours": hours, "every_s": every_s,
             "seconds": round(time.perf_counter() - began, 1)}
    log.info("heartbeats densified: %s", stats)
    return stats
