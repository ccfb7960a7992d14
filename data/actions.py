"""Operator actions on jobs: cancel, retry, requeue from the dead-letter queue.

Each action is one transaction that locks the row it changes (`FOR UPDATE`), so concurrent
requests act one after the other; it refuses, with a message, when the row's status is not one
it may act on (or not the status the operator saw); it is idempotent through a client-supplied
key (a repeated request returns the first outcome and acts no more); and it writes an audit
record whatever the outcome.

Retry semantics: a failed or cancelled job is never reset in place (its history stays as it
was). Retry enqueues a new pending job with the same workflow, variables, priority and
environment, linked both ways through metadata (`retry_of` on the new job, `retried_as` on the
original). A job can be retried once; retry the new job if it fails again.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from data.db import _UNAVAILABLE, _translate, read_frame
from data.users import has_role

CANCELLABLE = ("pending", "running")
RETRYABLE = ("failed", "cancelled")


@dataclass(frozen=True)
class Actor:
    username: str
    role: str
    client_addr: str = ""


@dataclass(frozen=True)
class ActionResult:
    outcome: str  # done | refused | repeated
    message: str
    target_id: str
    before_status: str | None = None
    after_status: str | None = None
    new_job_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in ("done", "repeated")


class NotFound(LookupError):
    """No job (or dead-letter entry) with that id."""


class Forbidden(PermissionError):
    """The actor's role may not take this action."""


def _valid_uuid(value: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise NotFound(f"No job with id {value!r}.") from None


def _audit(conn: Connection, actor: Actor, action: str, target_type: str, result: ActionResult, key: str | None,
           detail: dict | None = None) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO fleet_monitor.audit_log (username, role, action, target_type, target_id, before_status, "
            "after_status, outcome, detail, client_addr, idempotency_key) VALUES (:u, :r, :a, :tt, :tid, :b, :af, "
            ":o, CAST(:d AS jsonb), :addr, :k)"
        ),
        dict(u=actor.username, r=actor.role, a=action, tt=target_type, tid=result.target_id, b=result.before_status,
             af=result.after_status, o=result.outcome, d=json.dumps({"message": result.message, **(detail or {})}),
             addr=actor.client_addr, k=key),
    )


def _previous(conn: Connection, key: str | None) -> ActionResult | None:
    """The outcome of an earlier request with the same idempotency key, if any."""
    if not key:
        return None
    # Serialise requests that carry the same key, so a double click cannot slip past this check.
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": key})
    row = conn.execute(
        sa.text("SELECT target_id, before_status, after_status, outcome, detail FROM fleet_monitor.audit_log "
                "WHERE idempotency_key = :k"), {"k": key},
    ).mappings().first()
    if row is None:
        return None
    return ActionResult("repeated" if row["outcome"] == "done" else row["outcome"],
                        row["detail"].get("message", ""), row["target_id"], row["before_status"],
                        row["after_status"], row["detail"].get("new_job_id"))


def _run(engine: Engine, actor: Actor, action: str, target_type: str, key: str | None, body) -> ActionResult:
    if not has_role(actor.role, "operator"):
        raise Forbidden(f"{action} needs the operator role; {actor.username} is {actor.role}.")
    try:
        with engine.begin() as conn:
            earlier = _previous(conn, key)
            if earlier:
                return earlier
            result = body(conn)
            _audit(conn, actor, action, target_type, result, key, {"new_job_id": result.new_job_id})
            return result
    except _UNAVAILABLE as exc:
        raise _translate(exc, engine) from exc


def _lock_job(conn: Connection, job_id: str) -> dict:
    row = conn.execute(
        sa.text("SELECT id::text AS id, status, metadata FROM job_queue WHERE id = :id FOR UPDATE"), {"id": job_id}
    ).mappings().first()
    if row is None:
        raise NotFound(f"No job with id {job_id}.")
    return dict(row)


def _changed(job: dict, expected_status: str | None) -> str | None:
    if expected_status and job["status"] != expected_status:
        return f"The job changed from {expected_status} to {job['status']} meanwhile; nothing was done."
    return None


def cancel_job(engine: Engine, job_id: str, actor: Actor, *, expected_status: str | None = None,
               idempotency_key: str | None = None) -> ActionResult:
    """Cancel a pending or running job. A robot finishing it later does not undo the cancel."""
    job_id = _valid_uuid(job_id)

    def body(conn):
        job = _lock_job(conn, job_id)
        before = job["status"]
        refusal = _changed(job, expected_status) or (
            None if before in CANCELLABLE else f"The job is {before}; only pending or running jobs can be cancelled.")
        if refusal:
            return ActionResult("refused", refusal, job_id, before, before)
        conn.execute(
            sa.text("UPDATE job_queue SET status = 'cancelled', completed_at = now(), "
                    "metadata = coalesce(metadata, '{}') || jsonb_build_object('cancelled_by', CAST(:u AS text)) "
                    "WHERE id = :id"),
            {"id": job_id, "u": actor.username},
        )
        return ActionResult("done", f"Cancelled (was {before}).", job_id, before, "cancelled")

    return _run(engine, actor, "cancel", "job", idempotency_key, body)


def retry_job(engine: Engine, job_id: str, actor: Actor, *, expected_status: str | None = None,
              idempotency_key: str | None = None) -> ActionResult:
    """Enqueue a new pending run of a failed or cancelled job (see the module docstring)."""
    job_id = _valid_uuid(job_id)

    def body(conn):
        job = _lock_job(conn, job_id)
        before = job["status"]
        retried_as = (job["metadata"] or {}).get("retried_as")
        refusal = (
            _changed(job, expected_status)
            or (None if before in RETRYABLE else f"The job is {before}; only failed or cancelled jobs can be retried.")
            or (f"The job was already retried as {retried_as}." if retried_as else None)
        )
        if refusal:
            return ActionResult("refused", refusal, job_id, before, before)
        new_id = conn.execute(
            sa.text(
                "INSERT INTO job_queue (workflow_id, workflow_name, workflow_json, priority, status, environment, "
                "variables, max_retries, metadata) "
                "SELECT workflow_id, workflow_name, workflow_json, priority, 'pending', environment, variables, "
                "max_retries, jsonb_build_object('retry_of', id::text, 'retried_by', CAST(:u AS text)) "
                "FROM job_queue WHERE id = :id RETURNING id::text"
            ),
            {"id": job_id, "u": actor.username},
        ).scalar_one()
        conn.execute(
            sa.text("UPDATE job_queue SET metadata = coalesce(metadata, '{}') || "
                    "jsonb_build_object('retried_as', CAST(:new AS text)) WHERE id = :id"),
            {"id": job_id, "new": new_id},
        )
        return ActionResult("done", f"Retried as a new job {new_id}.", job_id, before, before, new_id)

    return _run(engine, actor, "retry", "job", idempotency_key, body)


def requeue_dead_letter(engine: Engine, entry_id: str, actor: Actor, *,
                        idempotency_key: str | None = None) -> ActionResult:
    """Enqueue a dead-letter entry again as a new pending job and mark the entry reprocessed."""
    entry_id = _valid_uuid(entry_id)

    def body(conn):
        entry = conn.execute(
            sa.text("SELECT id::text AS id, reprocessed_at FROM job_queue_dlq WHERE id = :id FOR UPDATE"),
            {"id": entry_id},
        ).mappings().first()
        if entry is None:
            raise NotFound(f"No dead-letter entry with id {entry_id}.")
        if entry["reprocessed_at"] is not None:
            return ActionResult("refused", "This dead-letter entry was already requeued.", entry_id,
                                "reprocessed", "reprocessed")
        new_id = conn.execute(
            sa.text(
                "INSERT INTO job_queue (workflow_id, workflow_name, workflow_json, status, variables, metadata) "
                "SELECT workflow_id, coalesce(workflow_name, workflow_id), coalesce(workflow_json, '{}'), 'pending', "
                "coalesce(variables, '{}'), jsonb_build_object('requeued_from_dlq', id::text, "
                "'original_job_id', original_job_id::text, 'retried_by', CAST(:u AS text)) "
                "FROM job_queue_dlq WHERE id = :id RETURNING id::text"
            ),
            {"id": entry_id, "u": actor.username},
        ).scalar_one()
        conn.execute(
            sa.text("UPDATE job_queue_dlq SET reprocessed_at = now(), reprocessed_by = :u WHERE id = :id"),
            {"id": entry_id, "u": actor.username},
        )
        return ActionResult("done", f"Requeued as a new job {new_id}.", entry_id, "dead-letter", "reprocessed", new_id)

    return _run(engine, actor, "requeue", "dlq", idempotency_key, body)


def audit_history(engine: Engine, target_type: str, target_id: str, limit: int = 100) -> pd.DataFrame:
    """The audit records of one job or dead-letter entry, newest first."""
    return read_frame(
        engine,
        "SELECT at, username, role, action, before_status, after_status, outcome, detail ->> 'message' AS message, "
        "client_addr FROM fleet_monitor.audit_log WHERE target_type = :t AND target_id = :id "
        "ORDER BY at DESC, id DESC LIMIT :n",
        {"t": target_type, "id": target_id, "n": limit},
    )


def audit_list(engine: Engine, limit: int = 200, before_id: int | None = None) -> pd.DataFrame:
    """All audit records, newest first, paged by id."""
    return read_frame(
        engine,
        "SELECT id, at, username, role, action, target_type, target_id, before_status, after_status, outcome, "
        "detail ->> 'message' AS message, client_addr FROM fleet_monitor.audit_log "
        "WHERE CAST(:before AS bigint) IS NULL OR id < CAST(:before AS bigint) ORDER BY id DESC LIMIT :n",
        {"before": before_id, "n": limit},
    )
