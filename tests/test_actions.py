"""Operator actions: row locks, idempotency, refusals and the audit trail, on a real database."""
from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from data import actions
from data.actions import Actor
from tests.helpers import ago, insert_job

OTTO = Actor("otto", "operator", "10.0.0.1")
OLGA = Actor("olga", "operator", "10.0.0.2")


def status_of(engine, job_id):
    with engine.connect() as c:
        return c.execute(sa.text("SELECT status FROM job_queue WHERE id = :id"), {"id": job_id}).scalar_one()


def audit_rows(engine, job_id):
    with engine.connect() as c:
        return c.execute(sa.text("SELECT username, action, outcome, before_status, after_status, client_addr "
                                 "FROM fleet_monitor.audit_log WHERE target_id = :id ORDER BY id"),
                         {"id": job_id}).all()


def test_cancel_pending_job_is_audited(engine):
    with engine.begin() as c:
        job = insert_job(c, status="pending", created_at=ago(minutes=1))
    result = actions.cancel_job(engine, job, OTTO, expected_status="pending", idempotency_key="k1")
    assert result.outcome == "done" and status_of(engine, job) == "cancelled"
    assert audit_rows(engine, job) == [("otto", "cancel", "done", "pending", "cancelled", "10.0.0.1")]
    assert list(actions.audit_history(engine, "job", job)["outcome"]) == ["done"]


def test_double_click_acts_once(engine):
    with engine.begin() as c:
        job = insert_job(c, status="running", robot_id="r1", created_at=ago(minutes=2), started_at=ago(minutes=1))
    first = actions.cancel_job(engine, job, OTTO, idempotency_key="same-click")
    second = actions.cancel_job(engine, job, OTTO, idempotency_key="same-click")
    assert (first.outcome, second.outcome) == ("done", "repeated")
    assert len(audit_rows(engine, job)) == 1


def test_refusals_say_why_and_change_nothing(engine):
    with engine.begin() as c:
        done = insert_job(c, status="completed", created_at=ago(minutes=5), started_at=ago(minutes=4),
                          completed_at=ago(minutes=3))
        waiting = insert_job(c, status="pending", created_at=ago(minutes=1))
    refused = actions.cancel_job(engine, done, OTTO)
    assert refused.outcome == "refused" and "only pending or running" in refused.message
    assert status_of(engine, done) == "completed"
    stale = actions.cancel_job(engine, waiting, OTTO, expected_status="running")
    assert stale.outcome == "refused" and "changed from running to pending" in stale.message
    assert status_of(engine, waiting) == "pending"
    with pytest.raises(actions.NotFound):
        actions.cancel_job(engine, "00000000-0000-0000-0000-000000000000", OTTO)
    with pytest.raises(actions.NotFound):
        actions.cancel_job(engine, "not-a-uuid'; drop table job_queue; --", OTTO)
    with pytest.raises(actions.Forbidden):
        actions.cancel_job(engine, waiting, Actor("vera", "viewer"))


def test_retry_creates_a_linked_pending_job_once(engine):
    with engine.begin() as c:
        job = insert_job(c, status="failed", workflow_id="wf-pay", workflow_name="Payroll", priority=7,
                         environment="finance", variables={"month": "2026-10"}, created_at=ago(minutes=5),
                         started_at=ago(minutes=4), completed_at=ago(minutes=3), error_message="TimeoutError: x")
    result = actions.retry_job(engine, job, OTTO)
    assert result.outcome == "done"
    with engine.connect() as c:
        new = c.execute(sa.text("SELECT workflow_id, workflow_name, priority, environment, status, variables, "
                                "metadata FROM job_queue WHERE id = :id"), {"id": result.new_job_id}).mappings().one()
        original = c.execute(sa.text("SELECT status, metadata FROM job_queue WHERE id = :id"), {"id": job}).mappings().one()
    assert (new["workflow_id"], new["workflow_name"], new["priority"], new["environment"], new["status"]) == \
        ("wf-pay", "Payroll", 7, "finance", "pending")
    assert new["variables"] == {"month": "2026-10"} and new["metadata"]["retry_of"] == job
    assert original["status"] == "failed" and original["metadata"]["retried_as"] == result.new_job_id
    again = actions.retry_job(engine, job, OLGA)
    assert again.outcome == "refused" and "already retried" in again.message


def _race(engine, job_id, calls):
    """Hold the job's row lock while both calls start, then let them go at once."""
    results, ready = [], threading.Barrier(len(calls) + 1)

    def run(call):
        ready.wait()
        results.append(call())

    with engine.connect() as holder:
        holder.execute(sa.text("SELECT 1 FROM job_queue WHERE id = :id FOR UPDATE"), {"id": job_id})
        threads = [threading.Thread(target=run, args=(call,)) for call in calls]
        for t in threads:
            t.start()
        ready.wait()
        threading.Event().wait(0.3)  # both are now waiting on the lock
        holder.rollback()
    for t in threads:
        t.join(10)
    return results


def test_two_operators_cancelling_at_once(engine):
    with engine.begin() as c:
        job = insert_job(c, status="running", robot_id="r1", created_at=ago(minutes=2), started_at=ago(minutes=1))
    results = _race(engine, job, [lambda: actions.cancel_job(engine, job, OTTO, expected_status="running"),
                                  lambda: actions.cancel_job(engine, job, OLGA, expected_status="running")])
    assert sorted(r.outcome for r in results) == ["done", "refused"]
    assert sorted(row.outcome for row in audit_rows(engine, job)) == ["done", "refused"]
    assert status_of(engine, job) == "cancelled"


def test_two_operators_retrying_at_once_make_one_new_job(engine):
    with engine.begin() as c:
        job = insert_job(c, status="failed", created_at=ago(minutes=5), started_at=ago(minutes=4),
                         completed_at=ago(minutes=3))
    results = _race(engine, job, [lambda: actions.retry_job(engine, job, OTTO),
                                  lambda: actions.retry_job(engine, job, OLGA)])
    assert sorted(r.outcome for r in results) == ["done", "refused"]
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM job_queue WHERE metadata ->> 'retry_of' = :id"),
                         {"id": job}).scalar_one() == 1


def test_requeue_dead_letter_entry(engine):
    with engine.begin() as c:
        entry = c.execute(sa.text(
            "INSERT INTO job_queue_dlq (original_job_id, workflow_id, workflow_name, workflow_json, variables, "
            "error_message, retry_count, first_failed_at, last_failed_at) VALUES (gen_random_uuid(), 'wf-x', "
            "'Export', '{}', '{\"a\": 1}', 'ConnectionError: sftp', 3, now(), now()) RETURNING id::text")).scalar_one()
    result = actions.requeue_dead_letter(engine, entry, OTTO)
    assert result.outcome == "done"
    with engine.connect() as c:
        job = c.execute(sa.text("SELECT status, workflow_id, variables FROM job_queue WHERE id = :id"),
                        {"id": result.new_job_id}).one()
        reprocessed_by = c.execute(sa.text("SELECT reprocessed_by FROM job_queue_dlq WHERE id = :id"),
                                   {"id": entry}).scalar_one()
    assert tuple(job) == ("pending", "wf-x", {"a": 1}) and reprocessed_by == "otto"
    assert actions.requeue_dead_letter(engine, entry, OLGA).outcome == "refused"


def test_cancel_racing_a_robots_completion(engine):
    """Whichever locks the row first wins; a cancel that was accepted is never overwritten."""
    from data.simulator import _FINISH_SQL

    def robot_finishes(job_id):
        with engine.begin() as c:
            return c.execute(sa.text(_FINISH_SQL), {"id": job_id, "robot_id": "r1", "now": ago(seconds=0),
                                                    "status": "completed", "error": None, "result": "{}",
                                                    "metadata": "{}"}).rowcount

    with engine.begin() as c:
        first = insert_job(c, status="running", robot_id="r1", created_at=ago(minutes=2), started_at=ago(minutes=1))
        raced = insert_job(c, status="running", robot_id="r1", created_at=ago(minutes=2), started_at=ago(minutes=1))
    # Cancel first: the robot's later completion changes nothing.
    assert actions.cancel_job(engine, first, OTTO).outcome == "done"
    assert robot_finishes(first) == 0
    assert status_of(engine, first) == "cancelled"
    # At the same moment: exactly one of them acts, and an accepted cancel stands.
    results = _race(engine, raced, [lambda: actions.cancel_job(engine, raced, OTTO, expected_status="running"),
                                    lambda: robot_finishes(raced)])
    cancel = next(r for r in results if isinstance(r, actions.ActionResult))
    finished = next(r for r in results if isinstance(r, int))
    if cancel.outcome == "done":
        assert finished == 0 and status_of(engine, raced) == "cancelled"
    else:
        assert finished == 1 and status_of(engine, raced) == "completed"
