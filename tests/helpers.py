"""Row builders for tests: insert known robots, jobs and heartbeats with explicit timestamps."""
from __future__ import annotations

import json
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.engine import make_url


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def insert_robot(conn, robot_id: str, *, status="online", last_heartbeat=None, environment="production",
                 name=None, hostname=None, metrics=None, capabilities=None, tags=None, max_concurrent_jobs=1):
    conn.execute(
        sa.text(
            "INSERT INTO robots (robot_id, name, hostname, status, environment, last_heartbeat, metrics, "
            "capabilities, tags, max_concurrent_jobs) VALUES (:id, :name, :host, :status, :env, :hb, "
            "CAST(:metrics AS jsonb), CAST(:caps AS jsonb), CAST(:tags AS jsonb), :mcj)"
        ),
        dict(id=robot_id, name=name or robot_id, host=hostname or f"{robot_id}.local", status=status,
             env=environment, hb=last_heartbeat, metrics=json.dumps(metrics or {}),
             caps=json.dumps(capabilities or []), tags=json.dumps(tags or []), mcj=max_concurrent_jobs),
    )


def insert_job(conn, *, status="completed", workflow_id="wf-a", workflow_name=None, robot_id=None,
               created_at=None, started_at=None, completed_at=None, error_message=None, environment="production",
               priority=1, retry_count=0, result=None, metadata=None, variables=None, job_id=None) -> str:
    job_id = job_id or str(uuid.uuid4())
    conn.execute(
        sa.text(
            "INSERT INTO job_queue (id, workflow_id, workflow_name, workflow_json, status, robot_id, environment, "
            "priority, created_at, started_at, completed_at, error_message, retry_count, result, metadata, variables) "
            "VALUES (:id, :wf, :wfn, '{}', :status, :robot, :env, :prio, :created, :started, :completed, :err, "
            ":retries, CAST(:result AS jsonb), CAST(:meta AS jsonb), CAST(:vars AS jsonb))"
        ),
        dict(id=job_id, wf=workflow_id, wfn=workflow_name or workflow_id, status=status, robot=robot_id,
             env=environment, prio=priority, created=created_at or utcnow(), started=started_at,
             completed=completed_at, err=error_message, retries=retry_count, result=json.dumps(result or {}),
             meta=json.dumps(metadata or {}), vars=json.dumps(variables or {})),
    )
    return job_id


def insert_heartbeat(conn, robot_id: str, at: datetime, *, status="online", metrics=None, current_jobs=0):
    conn.execute(
        sa.text(
            'INSERT INTO robot_heartbeats (robot_id, "timestamp", status, current_jobs, metrics) '
            "VALUES (:id, :at, :status, :jobs, CAST(:metrics AS jsonb))"
        ),
        dict(id=robot_id, at=at, status=status, jobs=current_jobs, metrics=json.dumps(metrics or {})),
    )


def ago(**kw) -> datetime:
    return utcnow() - timedelta(**kw)


@contextmanager
def temporary_database(pg_admin_url: str, prefix: str = "fm_test_"):
    """The URL of a new, empty database on the test server; dropped (with its sessions) after."""
    name = prefix + uuid.uuid4().hex[:12]
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
