"""Make sure the orchestrator's tables and the indexes our queries need exist.

The orchestrator owns job_queue, robots, robot_heartbeats and job_queue_dlq: we create a table
only when it is missing and never alter an existing one's columns. Our own tables live in the
``fleet_monitor`` schema.
"""
from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from data.db import _translate, _UNAVAILABLE
from data.errors import error_type_sql

log = logging.getLogger(__name__)

APP_SCHEMA = "fleet_monitor"

ORCHESTRATOR_TABLES = {
    "job_queue": """
        CREATE TABLE IF NOT EXISTS job_queue (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            workflow_id varchar(255) NOT NULL,
            workflow_name varchar(255) NOT NULL,
            workflow_json text NOT NULL,
            priority integer DEFAULT 1 CHECK (priority BETWEEN 0 AND 20),
            status varchar(50) NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
            robot_id varchar(255),
            environment varchar(100) NOT NULL DEFAULT 'default',
            visible_after timestamptz NOT NULL DEFAULT now(),
            created_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            completed_at timestamptz,
            error_message text,
            result jsonb DEFAULT '{}',
            retry_count integer NOT NULL DEFAULT 0,
            max_retries integer NOT NULL DEFAULT 3,
            variables jsonb DEFAULT '{}',
            metadata jsonb DEFAULT '{}'
        )""",
    "robots": """
        CREATE TABLE IF NOT EXISTS robots (
            robot_id varchar(255) PRIMARY KEY,
            name varchar(255) NOT NULL,
            hostname varchar(255),
            status varchar(50) NOT NULL DEFAULT 'offline',
            environment varchar(100) DEFAULT 'default',
            capabilities jsonb DEFAULT '[]',
            tags jsonb DEFAULT '[]',
            metrics jsonb DEFAULT '{}',
            max_concurrent_jobs integer DEFAULT 1,
            current_job_ids jsonb DEFAULT '[]',
            tenant_id varchar(255),
            registered_at timestamptz DEFAULT now(),
            last_heartbeat timestamptz,
            last_seen timestamptz,
            created_at timestamptz DEFAULT now(),
            updated_at timestamptz DEFAULT now()
        )""",
    "robot_heartbeats": """
        CREATE TABLE IF NOT EXISTS robot_heartbeats (
            heartbeat_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            robot_id varchar(255) NOT NULL,
            "timestamp" timestamptz DEFAULT now(),
            status varchar(50) NOT NULL,
            current_jobs integer DEFAULT 0,
            metrics jsonb DEFAULT '{}',
            ip_address inet,
            latency_ms integer
        )""",
    "job_queue_dlq": """
        CREATE TABLE IF NOT EXISTS job_queue_dlq (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            original_job_id uuid UNIQUE,
            workflow_id varchar(255),
            workflow_name varchar(255),
            workflow_json text,
            variables jsonb DEFAULT '{}',
            error_message text,
            error_details jsonb DEFAULT '{}',
            retry_count integer DEFAULT 0,
            first_failed_at timestamptz,
            last_failed_at timestamptz,
            created_at timestamptz DEFAULT now(),
            reprocessed_at timestamptz,
            reprocessed_by varchar(255)
        )""",
}

# The orchestrator's own indexes, created with job_queue when we create the table (the demo, a
# fresh database) so that our queries meet the same planner choices as on a real orchestrator.
ORCHESTRATOR_INDEXES = [
    "CREATE INDEX IF NOT EXISTS job_queue_claim_idx ON job_queue (status, visible_after, priority DESC, created_at) "
    "WHERE status = 'pending'",
    "CREATE INDEX IF NOT EXISTS job_queue_robot_status_idx ON job_queue (robot_id, status)",
    "CREATE INDEX IF NOT EXISTS job_queue_env_status_idx ON job_queue (environment, status)",
    "CREATE INDEX IF NOT EXISTS job_queue_workflow_status_idx ON job_queue (workflow_id, status)",
    "CREATE INDEX IF NOT EXISTS job_queue_completed_idx ON job_queue (completed_at DESC) "
    "WHERE status IN ('completed', 'failed')",
]

# Text search in error messages, where the server offers pg_trgm (the app never requires it).
TRIGRAM_INDEX = ("CREATE INDEX CONCURRENTLY IF NOT EXISTS fm_job_error_trgm ON job_queue "
                 "USING gin (error_message gin_trgm_ops)")

# Indexes behind the hot queries. Named fm_* so they never collide with the orchestrator's.
INDEXES = [
    ("job_queue", "fm_job_created", "(created_at, id)", ""),
    ("job_queue", "fm_job_workflow_created", "(workflow_id, created_at, id)", ""),
    ("job_queue", "fm_job_robot_created", "(robot_id, created_at, id)", ""),
    ("job_queue", "fm_job_status_created", "(status, created_at, id)", ""),
    ("job_queue", "fm_job_env_created", "(environment, created_at, id)", ""),
    ("job_queue", "fm_job_active", "(status, created_at)", "WHERE status IN ('pending', 'running')"),
    # Finished jobs by completion time; status and started_at included so the KPI tiles' and the
    # robots list's counts are index-only scans.
    ("job_queue", "fm_job_finished", "(completed_at) INCLUDE (status, started_at)", "WHERE completed_at IS NOT NULL"),
    ("job_queue", "fm_job_started_at", "(started_at)", "WHERE started_at IS NOT NULL"),
    ("job_queue", "fm_job_duration", "((completed_at - started_at), id)", "WHERE completed_at IS NOT NULL AND started_at IS NOT NULL"),
    # One robot's finished jobs by time (its page's utilization; the robots' rollup by robot).
    ("job_queue", "fm_job_robot_finished", "(robot_id, completed_at)", "WHERE completed_at IS NOT NULL"),
    # The newest jobs with an error message, for text search without a trigram index.
    ("job_queue", "fm_job_error_created", "(created_at, id)", "WHERE error_message IS NOT NULL"),
    # The job history's error-type filter: same expression as the query, so it is used and has statistics.
    ("job_queue", "fm_job_error_type", f"(({error_type_sql('error_message')}), created_at, id)", "WHERE error_message IS NOT NULL"),
    # Analytics: window aggregates as index-only scans (the heap carries workflow_json and results).
    ("job_queue", "fm_job_analytics", "(created_at) INCLUDE (workflow_id, workflow_name, status, started_at, completed_at, environment, robot_id)", ""),
    ("robot_heartbeats", "fm_hb_robot_ts", '(robot_id, "timestamp" DESC)', ""),
    ("robot_heartbeats", "fm_hb_ts", '("timestamp" DESC)', ""),
]

# Indexes of earlier versions that a replacement in INDEXES now serves (dropped after it is built).
RETIRED_INDEXES = ["fm_job_completed_at"]

APP_TABLES = [
    f"CREATE SCHEMA IF NOT EXISTS {APP_SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {APP_SCHEMA}.meta (
            key text PRIMARY KEY,
            value jsonb NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        )""",
    f"""CREATE TABLE IF NOT EXISTS {APP_SCHEMA}.users (
            username text PRIMARY KEY,
            password_hash text NOT NULL,
            role text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
            enabled boolean NOT NULL DEFAULT true,
            created_at timestamptz NOT NULL DEFAULT now(),
            last_login_at timestamptz,
            failed_attempts integer NOT NULL DEFAULT 0
        )""",
    # Failed sign-ins, for throttling per user and per client address across all workers.
    f"""CREATE TABLE IF NOT EXISTS {APP_SCHEMA}.login_failures (
            id bigserial PRIMARY KEY,
            username text NOT NULL,
            client_addr text NOT NULL,
            at timestamptz NOT NULL DEFAULT now()
        )""",
    f"CREATE INDEX IF NOT EXISTS login_failures_user ON {APP_SCHEMA}.login_failures (username, at)",
    f"CREATE INDEX IF NOT EXISTS login_failures_addr ON {APP_SCHEMA}.login_failures (client_addr, at)",
    # Revoked JWTs (logout); rows are kept until the token would have expired anyway.
    f"""CREATE TABLE IF NOT EXISTS {APP_SCHEMA}.revoked_tokens (
            jti text PRIMARY KEY,
            expires_at timestamptz NOT NULL,
            revoked_at timestamptz NOT NULL DEFAULT now()
        )""",
    f"""CREATE TABLE IF NOT EXISTS {APP_SCHEMA}.display_tokens (
            id bigserial PRIMARY KEY,
            name text NOT NULL,
            token_hash text NOT NULL UNIQUE,
            created_by text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            last_used_at timestamptz,
            revoked_at timestamptz
        )""",
    f"""CREATE TABLE IF NOT EXISTS {APP_SCHEMA}.audit_log (
            id bigserial PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT now(),
            username text NOT NULL,
            role text NOT NULL,
            action text NOT NULL,
            target_type text NOT NULL,
            target_id text NOT NULL,
            before_status text,
            after_status text,
            outcome text NOT NULL,
            detail jsonb NOT NULL DEFAULT '{{}}',
            client_addr text,
            idempotency_key text UNIQUE
        )""",
    f"CREATE INDEX IF NOT EXISTS audit_log_target ON {APP_SCHEMA}.audit_log (target_type, target_id, at)",
    f"CREATE INDEX IF NOT EXISTS audit_log_at ON {APP_SCHEMA}.audit_log (at DESC)",
]

# Serialises schema set-up when several workers start at once.
_SCHEMA_LOCK_KEY = 0x466C6565


def existing_tables(conn) -> set[str]:
    rows = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
        )
    )
    return {r[0] for r in rows}


def _trigram_available(conn) -> bool:
    """pg_trgm is installed, or offered and ours to install; False (and no error) otherwise."""
    if conn.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")).first():
        return True
    if not conn.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")).first():
        return False
    try:
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        return True
    except sa.exc.ProgrammingError as exc:  # not allowed to create extensions here
        log.info("pg_trgm is offered but cannot be installed (%s); text search runs without it", exc.orig)
        return False


def ensure_schema(engine: Engine) -> list[str]:
    """Create what is missing; return a list of what was created (for the log)."""
    created: list[str] = []
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            # Index builds on a large orchestrator table may take longer than a request may.
            conn.execute(sa.text("SET statement_timeout = 0"))
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _SCHEMA_LOCK_KEY})
            try:
                tables = existing_tables(conn)
                for name, ddl in ORCHESTRATOR_TABLES.items():
                    if name not in tables:
                        conn.execute(sa.text(ddl))
                        created.append(f"table {name}")
                        if name == "job_queue":
                            for index in ORCHESTRATOR_INDEXES:
                                conn.execute(sa.text(index))
                for ddl in APP_TABLES:
                    conn.execute(sa.text(ddl))
                for table, name, columns, where in INDEXES:
                    # CONCURRENTLY: never block the orchestrator's writes while building.
                    conn.execute(
                        sa.text(
                            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} {columns} {where}"
                        )
                    )
                for name in RETIRED_INDEXES:
                    conn.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                if _trigram_available(conn):
                    conn.execute(sa.text(TRIGRAM_INDEX))
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _SCHEMA_LOCK_KEY})
    except _UNAVAILABLE as exc:
        raise _translate(exc, engine) from exc
    for item in created:
        log.info("created %s", item)
    return created
