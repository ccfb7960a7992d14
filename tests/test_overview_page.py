"""Fleet overview in a real browser: shows the test's numbers and follows changes by itself."""
from __future__ import annotations

import sqlalchemy as sa

from tests.conftest import console_errors, save_screenshot
from tests.helpers import ago, insert_heartbeat, insert_job, insert_robot


def tile(dash_duo, label: str) -> str:
    return dash_duo.find_element(f"[aria-label='{label}'] .kpi-value").text


def test_overview_shows_kpis_and_follows_changes(dash_duo, start_app, engine):
    with engine.begin() as c:
        insert_robot(c, "robot-a", status="online", last_heartbeat=ago(seconds=2))
        insert_robot(c, "robot-b", status="busy", last_heartbeat=ago(seconds=2))
        insert_robot(c, "robot-c", status="online", last_heartbeat=ago(minutes=10))
        insert_job(c, status="running", robot_id="robot-b", workflow_name="Invoice Processing",
                   created_at=ago(minutes=3), started_at=ago(minutes=2))
        insert_job(c, status="pending", created_at=ago(minutes=1))
        for _ in range(3):
            insert_job(c, status="completed", created_at=ago(minutes=30), started_at=ago(minutes=29),
                       completed_at=ago(minutes=28))
        insert_job(c, status="failed", created_at=ago(minutes=30), started_at=ago(minutes=29),
                   completed_at=ago(minutes=28), error_message="TimeoutError: portal")

    start_app()
    dash_duo.wait_for_text_to_equal("[aria-label='Robots online'] .kpi-value", "2 / 3", timeout=15)
    assert tile(dash_duo, "Offline") == "1"
    assert tile(dash_duo, "Queue depth") == "1"
    assert tile(dash_duo, "Running jobs") == "1"
    assert tile(dash_duo, "Success rate 24 h") == "75.0 %"
    dash_duo.wait_for_element(".robot-cell.robot-offline")
    dash_duo.wait_for_contains_text("#overview-feed", "Invoice Processing")
    dash_duo.wait_for_element("#overview-queue .main-svg")
    save_screenshot(dash_duo, "overview")

    # The robot comes back and a job is enqueued: the next refresh shows it, without a reload.
    with engine.begin() as c:
        # A heartbeat, as the orchestrator records it: the history row and the robot's own row.
        insert_heartbeat(c, "robot-c", ago(seconds=0))
        c.execute(sa.text("UPDATE robots SET last_heartbeat = now() WHERE robot_id = 'robot-c'"))
        insert_job(c, status="pending", workflow_name="Payroll Run", created_at=ago(seconds=1))
    dash_duo.wait_for_text_to_equal("[aria-label='Robots online'] .kpi-value", "3 / 3", timeout=15)
    dash_duo.wait_for_text_to_equal("[aria-label='Queue depth'] .kpi-value", "2", timeout=15)
    dash_duo.wait_for_contains_text("#overview-feed", "Payroll Run", timeout=15)
    assert console_errors(dash_duo) == []


def test_overview_keeps_last_data_while_database_is_away(dash_duo, start_app, engine, database_outage):
    with engine.begin() as c:
        insert_robot(c, "robot-a", status="online", last_heartbeat=ago(seconds=2))
    start_app()
    dash_duo.wait_for_text_to_equal("[aria-label='Robots online'] .kpi-value", "1 / 1", timeout=15)

    database_outage(False)
    dash_duo.wait_for_contains_text("#overview-alert", "Database unreachable", timeout=30)
    assert tile(dash_duo, "Robots online") == "1 / 1"  # the last good data stays on screen

    database_outage(True)
    dash_duo.wait_for_no_elements("#overview-alert", timeout=30)
    dash_duo.wait_for_contains_text("#overview-updated", "Last updated")
