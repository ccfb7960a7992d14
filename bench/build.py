"""Build (or reuse) the benchmark databases.

    python -m bench.build --sizes 1m,10m [--force] [--heartbeats auto|on|off]

Each size gets its own database (bench_1m, bench_10m) in the benchmark PostgreSQL under
bench/data/pg, filled SQL-side by the demo generator (data.demo.generate_demo: 1,000 robots, 90
days, the demo's distributions). The 10 M database also gets 24 hours of heartbeats every 10 s
(bench.heartbeats). Then the indexes: the orchestrator's own (schema.md lists them; a real
orchestrator database has them) and the app's (data.schema.INDEXES, built here without
CONCURRENTLY because nothing else uses the database yet, then ensure_schema to confirm), and
VACUUM ANALYZE (statistics and the visibility map, as autovacuum would leave them), and the
first backfill of the rollups (data.rollups.maintain until caught up; timed and recorded).

A database whose record in fleet_monitor.meta (key 'bench') says it is complete with the same
number of jobs is reused; anything else under that name is dropped and rebuilt. Builds never run
two at a time (a lock file), because the machines have two cores.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import sys
import time
from datetime import datetime, timezone

import sqlalchemy as sa

from bench.common import (
    DATA_DIR, DAYS, ROBOTS, SEED, database_exists, database_url, db_name, log, maintain_rollups, parse_sizes,
    read_meta, server_facts, size_label, start_server, write_meta,
)
from data.db import make_engine
from data.schema import APP_TABLES, INDEXES, ORCHESTRATOR_TABLES, ensure_schema

# The orchestrator's own indexes on job_queue (schema.md), so plans face what production has.
ORCHESTRATOR_INDEXES = [
    ("job_queue", "orch_job_claim", "(status, visible_after, priority DESC, created_at)", "WHERE status = 'pending'"),
    ("job_queue", "orch_job_robot_status", "(robot_id, status)", ""),
    ("job_queue", "orch_job_env_status", "(environment, status)", ""),
    ("job_queue", "orch_job_workflow_status", "(workflow_id, status)", ""),
    ("job_queue", "orch_job_completed", "(completed_at DESC)", "WHERE status IN ('completed', 'failed')"),
]
# Sizes from which the dense heartbeat history is added by default.
HEARTBEATS_FROM_JOBS = 10_000_000
TABLES = ("job_queue", "robots", "robot_heartbeats", "job_queue_dlq")


@contextlib.contextmanager
def build_lock():
    """One build at a time on this machine (the harness's other processes wait here too)."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    with open(DATA_DIR / "build.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another build is running; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _timed(phases: dict, name: str):
    @contextlib.contextmanager
    def block():
        began = time.perf_counter()
        log.info("%s ...", name)
        yield
        phases[name] = round(time.perf_counter() - began, 1)
        log.info("%s: %.1f s", name, phases[name])
    return block()


def _create_database(admin_url: str, name: str, drop: bool) -> None:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if drop:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


def table_sizes(engine) -> dict:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT c.relname AS name, c.reltuples::bigint AS rows, pg_total_relation_size(c.oid) AS bytes, "
            "pg_indexes_size(c.oid) AS index_bytes FROM pg_class c "
            "WHERE c.relname = ANY(:t) AND c.relkind = 'r'"), {"t": list(TABLES)}).mappings().all()
        total = conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar()
    return {"tables": {r["name"]: {"rows": int(r["rows"]), "bytes": int(r["bytes"]),
                                   "index_bytes": int(r["index_bytes"])} for r in rows},
            "database_bytes": int(total)}


def build_one(admin_url: str, jobs: int, *, force: bool = False, heartbeats: str = "auto",
              orchestrator_indexes: bool = True, robots: int = ROBOTS) -> dict:
    """Build the database for `jobs` jobs unless a complete one exists; return its record."""
    name = db_name(jobs)
    url = database_url(admin_url, name)
    exists = database_exists(admin_url, name)
    if exists and not force:
        meta = complete_build(admin_url, jobs, robots)
        if meta:
            log.info("%s: reusing (built %s, %s jobs)", name, meta.get("built_at"), f"{jobs:,}")
            return meta
        log.info("%s: incomplete or different build; rebuilding", name)
    dense = heartbeats == "on" or (heartbeats == "auto" and jobs >= HEARTBEATS_FROM_JOBS)
    phases: dict[str, float] = {}
    began = time.perf_counter()
    _create_database(admin_url, name, drop=exists)
    engine = make_engine(url, statement_timeout_ms=0)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            for ddl in ORCHESTRATOR_TABLES.values():
                conn.execute(sa.text(ddl))
            for ddl in APP_TABLES:
                conn.execute(sa.text(ddl))
        from data.demo import generate_demo, record_demo

        with _timed(phases, "generate jobs, robots, heartbeats (data.demo)"):
            stats = generate_demo(engine, jobs=jobs, robots=robots, days=DAYS, seed=SEED)
        with engine.begin() as conn:
            record_demo(conn, stats)
        hb = None
        if dense:
            from bench.heartbeats import densify_heartbeats

            with _timed(phases, "heartbeats every 10 s for 24 h (bench.heartbeats)"):
                hb = densify_heartbeats(engine, hours=24, every_s=10)
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(sa.text("SET maintenance_work_mem = '1GB'"))
            conn.execute(sa.text("SET max_parallel_maintenance_workers = 2"))
            wanted = (ORCHESTRATOR_INDEXES if orchestrator_indexes else []) + list(INDEXES)
            for table, index, columns, where in wanted:
                with _timed(phases, f"index {index}"):
                    conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS {index} ON {table} {columns} {where}"))
        with _timed(phases, "ensure_schema (the app's own set-up)"):
            ensure_schema(engine)
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            for table in TABLES:
                with _timed(phases, f"vacuum analyze {table}"):
                    conn.execute(sa.text(f"VACUUM (ANALYZE) {table}"))
        # A fresh database comes with its rollups (the analytics' and the robots'), as an app
        # that has run for a while has them; the first backfill is timed (fleet_monitor.meta).
        with _timed(phases, "rollups: first backfill (data.rollups.maintain)"):
            maintain_rollups(url)
        seconds = round(time.perf_counter() - began, 1)
        sizes = table_sizes(engine)
        meta = {
            "complete": True, "jobs": jobs, "label": size_label(jobs), "robots": robots, "days": DAYS,
            "seed": SEED, "built_at": datetime.now(timezone.utc).isoformat(), "data_now": stats["now"],
            "build_seconds": seconds, "phases": phases, "demo": stats, "heartbeats": hb,
            "orchestrator_indexes": orchestrator_indexes, "sizes": sizes, "server": server_facts(engine),
        }
        write_meta(engine, meta)
        log.info("%s built in %.0f s: %s", name, seconds, {k: v["rows"] for k, v in sizes["tables"].items()})
        return {**meta, "reused": False}
    finally:
        engine.dispose()


def complete_build(admin_url: str, jobs: int, robots: int = ROBOTS) -> dict | None:
    """The record of a complete database for `jobs` jobs, or None."""
    name = db_name(jobs)
    if not database_exists(admin_url, name):
        return None
    engine = make_engine(database_url(admin_url, name), statement_timeout_ms=0)
    try:
        meta = read_meta(engine)
    finally:
        engine.dispose()
    if meta and meta.get("complete") and meta.get("jobs") == jobs and meta.get("robots") == robots:
        return {**meta, "reused": True}
    return None


def build(sizes: list[int], *, force: bool = False, heartbeats: str = "auto",
          orchestrator_indexes: bool = True, robots: int = ROBOTS) -> list[dict]:
    """Build what is missing (one build at a time on this machine); reuse the rest."""
    admin_url = start_server()
    done = {} if force else {n: m for n in sizes if (m := complete_build(admin_url, n, robots))}
    missing = [n for n in sizes if n not in done]
    if missing:
        with build_lock():
            for jobs in missing:
                done[jobs] = build_one(admin_url, jobs, force=force, heartbeats=heartbeats,
                                       orchestrator_indexes=orchestrator_indexes, robots=robots)
    return [done[n] for n in sizes]


def _gb(n: int) -> str:
    return f"{n / 1024**3:.1f} GB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1m,10m", help="comma-separated job counts: 20k, 1m, 10m (default 1m,10m)")
    parser.add_argument("--force", action="store_true", help="rebuild even when a complete database exists")
    parser.add_argument("--heartbeats", choices=("auto", "on", "off"), default="auto",
                        help="24 h of heartbeats every 10 s (auto: for 10 M jobs and more)")
    parser.add_argument("--no-orchestrator-indexes", action="store_true",
                        help="only the app's indexes (not the orchestrator's own)")
    parser.add_argument("--robots", type=int, default=ROBOTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as exc:
        parser.error(str(exc))
    for meta in build(sizes, force=args.force, heartbeats=args.heartbeats,
                      orchestrator_indexes=not args.no_orchestrator_indexes, robots=args.robots):
        rows = {k: f"{v['rows']:,}" for k, v in meta["sizes"]["tables"].items()}
        how = "reused" if meta["reused"] else f"built in {meta['build_seconds']:.0f} s"
        print(f"{db_name(meta['jobs'])}: {how}; {_gb(meta['sizes']['database_bytes'])}; rows {rows}")
        if not meta["reused"]:
            for phase, secs in meta["phases"].items():
                print(f"    {secs:8.1f} s  {phase}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
