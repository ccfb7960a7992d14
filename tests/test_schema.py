"""Schema set-up: create only what is missing, leave an orchestrator's tables alone."""
from __future__ import annotations

import os
import subprocess
import sys

import sqlalchemy as sa

from data import fleet
from data.schema import ensure_schema
from tests.conftest import ROOT, api_token, create_test_users
from tests.helpers import ago, insert_job

OLD_ORCHESTRATOR_ROBOTS = """
CREATE TABLE robots (
    robot_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name varchar(255) NOT NULL,
    hostname varchar(255) UNIQUE,
    status varchar(50) NOT NULL DEFAULT 'offline',
    environment varchar(100) DEFAULT 'default',
    capabilities jsonb DEFAULT '[]',
    tags jsonb DEFAULT '[]',
    metrics jsonb DEFAULT '{}',
    max_concurrent_jobs integer DEFAULT 1,
    current_job_ids jsonb DEFAULT '[]',
    registered_at timestamptz, last_heartbeat timestamptz, last_seen timestamptz,
    created_at timestamptz, updated_at timestamptz
)"""

OLD_ORCHESTRATOR_HEARTBEATS = """
CREATE TABLE robot_heartbeats (
    heartbeat_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    robot_id uuid NOT NULL REFERENCES robots(robot_id),
    "timestamp" timestamptz DEFAULT now(),
    status varchar(50) NOT NULL,
    current_jobs integer DEFAULT 0,
    metrics jsonb DEFAULT '{}',
    ip_address inet,
    latency_ms integer
)"""


def columns(engine, table):
    with engine.connect() as c:
        rows = c.execute(sa.text(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = :t ORDER BY ordinal_position"), {"t": table})
        return [tuple(r) for r in rows]


def test_creates_missing_tables_once(raw_engine):
    created = ensure_schema(raw_engine)
    assert created == ["table job_queue", "table robots", "table robot_heartbeats", "table job_queue_dlq"]
    assert ensure_schema(raw_engine) == []
    with raw_engine.connect() as c:
        indexes = {r[0] for r in c.execute(sa.text("SELECT indexname FROM pg_indexes WHERE indexname LIKE 'fm_%'"))}
        schemas = {r[0] for r in c.execute(sa.text("SELECT nspname FROM pg_namespace"))}
    assert "fm_job_created" in indexes and "fm_hb_robot_ts" in indexes
    assert "fleet_monitor" in schemas


def test_uuid_robot_ids_are_left_alone_and_compared_as_text(raw_engine):
    with raw_engine.begin() as c:
        c.execute(sa.text(OLD_ORCHESTRATOR_ROBOTS))
        c.execute(sa.text(OLD_ORCHESTRATOR_HEARTBEATS))
    before = columns(raw_engine, "robots"), columns(raw_engine, "robot_heartbeats")
    created = ensure_schema(raw_engine)
    assert "table robots" not in created and "table robot_heartbeats" not in created
    assert (columns(raw_engine, "robots"), columns(raw_engine, "robot_heartbeats")) == before

    robot_id = "6f1c1f9e-8a43-4d0a-9d55-2f1b7c3f0a11"
    with raw_engine.begin() as c:
        c.execute(sa.text("INSERT INTO robots (robot_id, name, status, last_heartbeat) VALUES (:id, 'uuid bot', 'online', now())"),
                  {"id": robot_id})
        insert_job(c, status="running", robot_id=robot_id, created_at=ago(minutes=2), started_at=ago(minutes=1))
    statuses = fleet.robot_statuses(raw_engine, 90)
    assert statuses.loc[0, "robot_id"] == robot_id
    assert statuses.loc[0, "status"] == "busy"  # its running job is matched by text comparison
    assert fleet.fleet_kpis(raw_engine, "UTC", 90)["active_robots"] == 1


def test_app_starts_without_heartbeat_table_and_with_uuid_ids(raw_engine, test_settings):
    with raw_engine.begin() as c:
        c.execute(sa.text(OLD_ORCHESTRATOR_ROBOTS))
    from app import create_app

    app = create_app(test_settings)
    create_test_users(app.server.extensions["fleet_monitor"].engine)
    client = app.server.test_client()
    headers = {"Authorization": f"Bearer {api_token(client)}"}
    assert client.get("/", headers=headers).status_code == 200
    assert client.get("/_dash-layout", headers=headers).status_code == 200


def test_unreachable_database_says_where_without_password():
    env = {**os.environ, "DATABASE_URL": "postgresql://fleet:s3cr3t-pw@127.0.0.1:1/orchestrator", "PORT": "1"}
    proc = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2
    assert "127.0.0.1:1/orchestrator" in output
    assert "s3cr3t-pw" not in output
    assert "Traceback" not in output


def test_trigram_index_exactly_where_the_server_offers_pg_trgm(engine):
    with engine.connect() as c:
        offered = c.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")).first()
        index = c.execute(sa.text("SELECT 1 FROM pg_indexes WHERE indexname = 'fm_job_error_trgm'")).first()
        orchestrators_own = c.execute(sa.text(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'job_queue' AND indexname LIKE 'job_queue_%_idx'"
        )).scalar_one()
    assert bool(index) == bool(offered)
    assert orchestrators_own == 5
