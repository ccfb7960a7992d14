"""What the harness shares: the benchmark PostgreSQL server, database names and sizes, metadata.

The benchmark databases live in their own embedded PostgreSQL under bench/data/pg (gitignored),
apart from the demo's .pgdata, so building ten million jobs never touches the demo or the tests.
The server outlives the harness process, so a build is reused by later runs.
"""
from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from data.db import sqlalchemy_url
from data.schema import APP_SCHEMA

log = logging.getLogger("bench")

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / "data"
PG_DIR = DATA_DIR / "pg"
RESULTS = BENCH_DIR / "RESULTS.md"

# The fleet every benchmark database has (issue 9: "1,000 robots").
ROBOTS = 1000
DAYS = 90
SEED = 42
# The zone the harness views the pages in; the rollups keep its days and weeks whole, as an
# operator does with FLEET_ROLLUP_TIMEZONE for the zone most viewers are in.
VIEWER_TZ = "Europe/Berlin"
META_KEY = "bench"

# Server settings of the benchmark PostgreSQL (applied with ALTER SYSTEM; restart when changed).
# Sized for a 2-core machine with ~8 GB or more of RAM; recorded in RESULTS.md. The build
# benefits from maintenance_work_mem and the large WAL; queries from shared_buffers/work_mem.
SERVER_SETTINGS = {
    "shared_buffers": "2GB",
    "effective_cache_size": "8GB",
    "work_mem": "32MB",
    "maintenance_work_mem": "1GB",
    "max_parallel_maintenance_workers": "2",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "30min",
    "random_page_cost": "1.1",
    "effective_io_concurrency": "200",
    "max_connections": "200",
    "jit": "off",
}
# The settings that only take effect on a restart.
_RESTART = {"shared_buffers", "max_connections"}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_size(text: str) -> int:
    """'1m' -> 1,000,000 jobs, '200k' -> 200,000, '5000' -> 5,000."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 20k, 1m, 10m)")
    factor = {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2).lower()]
    return int(round(float(m.group(1)) * factor))


def size_label(jobs: int) -> str:
    """1,000,000 -> '1m', 200,000 -> '200k'."""
    if jobs % 1_000_000 == 0:
        return f"{jobs // 1_000_000}m"
    if jobs % 1_000 == 0:
        return f"{jobs // 1_000}k"
    return str(jobs)


def parse_sizes(text: str) -> list[int]:
    sizes = [parse_size(s) for s in str(text).split(",") if s.strip()]
    if not sizes:
        raise ValueError("no sizes given")
    return sizes


def db_name(jobs: int) -> str:
    return f"bench_{size_label(jobs)}"


def _server_handle(pg_dir: Path):
    import pgserver

    pg_dir.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server keeps running after this process, so builds are reused.
    return pgserver.get_server(pg_dir, cleanup_mode=None)


def _auto_conf(pg_dir: Path) -> dict[str, str]:
    path = pg_dir / "postgresql.auto.conf"
    found: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            m = re.match(r"^\s*(\w+)\s*=\s*'?(.*?)'?\s*$", line)
            if m and not line.lstrip().startswith("#"):
                found[m.group(1)] = m.group(2)
    return found


def start_server(pg_dir: Path = PG_DIR) -> str:
    """Start (or reuse) the benchmark PostgreSQL with SERVER_SETTINGS; return its admin URL."""
    server = _server_handle(pg_dir)
    url = sqlalchemy_url(server.get_uri())
    wanted = {k: v for k, v in SERVER_SETTINGS.items() if _auto_conf(pg_dir).get(k) != v}
    if wanted:
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name, value in wanted.items():
                conn.execute(sa.text(f"ALTER SYSTEM SET {name} = '{value}'"))
            conn.execute(sa.text("SELECT pg_reload_conf()"))
        admin.dispose()
        if _RESTART & set(wanted):
            log.info("restarting the benchmark server to apply %s", ", ".join(sorted(_RESTART & set(wanted))))
            server = _restart(server, pg_dir)
            url = sqlalchemy_url(server.get_uri())
    return url


def _restart(server, pg_dir: Path):
    import pgserver
    from pgserver._commands import pg_ctl
    from pgserver.postgres_server import PostgresServer

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
    PostgresServer._instances.pop(server.pgdata, None)
    time.sleep(0.5)
    return pgserver.get_server(pg_dir, cleanup_mode=None)


def database_url(admin_url: str, name: str) -> str:
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def database_exists(admin_url: str, name: str) -> bool:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return bool(conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar())
    finally:
        admin.dispose()


def read_meta(engine: Engine, key: str = META_KEY) -> dict | None:
    """The harness's record of a benchmark database (fleet_monitor.meta), or None."""
    try:
        with engine.connect() as conn:
            value = conn.execute(sa.text(f"SELECT value FROM {APP_SCHEMA}.meta WHERE key = :k"), {"k": key}).scalar()
    except sa.exc.ProgrammingError:
        return None
    if isinstance(value, str):
        value = json.loads(value)
    return value


def write_meta(engine: Engine, value: dict, key: str = META_KEY) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(
            f"INSERT INTO {APP_SCHEMA}.meta (key, value, updated_at) VALUES (:k, CAST(:v AS jsonb), now()) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at"),
            {"k": key, "v": json.dumps(value, default=str)})


def server_facts(engine: Engine) -> dict:
    """PostgreSQL version and the settings that matter to the figures."""
    names = list(SERVER_SETTINGS) + ["max_parallel_workers_per_gather", "server_version"]
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT name, current_setting(name) AS value FROM pg_settings "
                                    "WHERE name = ANY(:n)"), {"n": names}).all()
        version = conn.execute(sa.text("SELECT version()")).scalar()
        trgm = conn.execute(sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_trgm'")).scalar()
    facts = {r.name: r.value for r in rows}
    facts["version"] = version
    facts["pg_trgm_available"] = bool(trgm)
    return facts


# ---------------------------------------------------------------------------------------------
# Rollups: the analytics rollups (data.rollups) and the robots' rollup (data.robot_rollup)
# ---------------------------------------------------------------------------------------------
ROLLUP_META_KEY = "bench_rollups"
ROLLUP_TIMEOUT_MS = 3_600_000   # a first backfill of 10 M jobs is a long statement; let it finish
ROUTINE_PASSES = 3


def _maintain_once(engine, wait_s: float = 600.0) -> tuple[dict, float]:
    """One ``data.rollups.maintain`` pass that got both locks (another process, e.g. a running
    app, may hold one: then wait and try again); its result and its seconds."""
    from data import rollups

    waited = 0.0
    while True:
        began = time.perf_counter()
        done = rollups.maintain(engine, VIEWER_TZ)
        seconds = time.perf_counter() - began
        if not done["jobs"].get("skipped") and not (done.get("robots") or {}).get("skipped"):
            return done, seconds
        if waited > wait_s:
            raise RuntimeError(f"rollup maintenance kept being skipped (another process holds its lock): {done}")
        time.sleep(1.0)
        waited += 1.0 + seconds


def _robot_seconds(robots: dict) -> float:
    """Seconds the robots' rollup spent in one refresh (its recent part and backfill steps)."""
    steps = robots.get("steps")
    extra = sum(float(x) for x in steps if isinstance(x, (int, float))) if isinstance(steps, list) else 0.0
    return float(robots.get("seconds") or 0.0) + extra


def maintain_rollups(url: str, *, rebuild: bool = False) -> dict:
    """Bring the rollups up to the database's now(): ``data.rollups.maintain`` until the job
    rollup reports it is caught up (``behind`` False), then a few routine passes. ``rebuild``
    empties both rollups first, so the passes time a first backfill.

    Returns ``{"covered_before", "covered_until", "robots_watermark", "catch_up": {"seconds",
    "passes", "new_hours", "dirty_hours", "robots_seconds", "backfill"}, "routine": {"seconds"
    (median), "samples"}, "at"}`` and records it in fleet_monitor.meta (key bench_rollups),
    keeping the last first-backfill timing under ``"first_backfill"``."""
    from datetime import datetime, timezone

    from data import robot_rollup, rollups
    from data.db import make_engine

    engine = make_engine(url, statement_timeout_ms=ROLLUP_TIMEOUT_MS)
    try:
        rollups.ensure_tables(engine)
        robot_rollup.ensure_tables(engine)
        if rebuild:
            with engine.begin() as conn:
                conn.execute(sa.text(f"UPDATE {rollups.STATE} SET covered_until = NULL WHERE id = 1"))
                conn.execute(sa.text(f"DELETE FROM {robot_rollup.STATE}"))
        before = rollups.covered_until(engine)
        passes, robots_s, robots_backfill = [], 0.0, False
        while True:
            done, seconds = _maintain_once(engine)
            robots = done.get("robots") or {}
            robots_s += _robot_seconds(robots)
            robots_backfill = robots_backfill or bool(robots.get("backfilled"))
            log.info("rollups: pass %d in %.1f s: jobs %s; robots behind: %s", len(passes) + 1, seconds,
                     done["jobs"], robots.get("behind"))
            passes.append({**done, "seconds": seconds})
            # Caught up: the job rollup says so, and the robots' rollup (when it reports it) too.
            if done["jobs"].get("behind") is False and not robots.get("behind"):
                break
        catch_up = {
            "seconds": round(sum(p["seconds"] for p in passes), 2), "passes": len(passes),
            "new_hours": sum(p["jobs"].get("new_hours", 0) for p in passes),
            "dirty_hours": sum(p["jobs"].get("dirty_hours", 0) for p in passes),
            "robots_seconds": round(robots_s, 2), "robots_backfill": robots_backfill,
            "backfill": before is None,
        }
        routine = []
        for _ in range(ROUTINE_PASSES):
            _, seconds = _maintain_once(engine)
            routine.append(round(seconds, 3))
        record = {"covered_before": before, "covered_until": rollups.covered_until(engine),
                  "catch_up": catch_up, "routine": {"seconds": sorted(routine)[len(routine) // 2], "samples": routine},
                  "at": datetime.now(timezone.utc).isoformat()}
        with engine.connect() as conn:
            record["robots_watermark"] = conn.execute(sa.text(f"SELECT watermark FROM {robot_rollup.STATE} WHERE id = 1")).scalar()
        previous = read_meta(engine, ROLLUP_META_KEY) or {}
        first = previous.get("first_backfill")
        if catch_up["backfill"]:
            first = {**catch_up, "at": record["at"]}
        record["first_backfill"] = first
        write_meta(engine, record, ROLLUP_META_KEY)
        return json.loads(json.dumps(record, default=str))
    finally:
        engine.dispose()
