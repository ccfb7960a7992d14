"""Operator actions on the job page: shown by role, confirmed, audited; refused server-side for viewers."""
from __future__ import annotations

import json

import sqlalchemy as sa

from tests.conftest import TEST_USERS, console_errors
from tests.helpers import ago, insert_job


def test_operator_cancels_a_pending_job(dash_duo, start_app, engine):
    with engine.begin() as c:
        job = insert_job(c, status="pending", workflow_name="Invoice Processing", created_at=ago(minutes=1))
    start_app(path=f"/executions/{job}", role="operator")
    dash_duo.wait_for_element("#job-cancel-button", timeout=15).click()
    dash_duo.driver.switch_to.alert.accept()
    dash_duo.wait_for_contains_text("#job-action-result", "Cancelled (was pending)", timeout=15)
    dash_duo.wait_for_contains_text("#job-audit", "otto", timeout=15)
    assert "cancelled" in dash_duo.find_element("#job-audit").text
    dash_duo.wait_for_no_elements("#job-cancel-button")
    dash_duo.wait_for_element("#job-retry-button")  # a cancelled job can be retried
    assert console_errors(dash_duo) == []


def test_viewer_sees_no_buttons(dash_duo, start_app, engine):
    with engine.begin() as c:
        job = insert_job(c, status="pending", created_at=ago(minutes=1))
    start_app(path=f"/executions/{job}", role="viewer")
    dash_duo.wait_for_contains_text("#job-audit", "No operator has acted", timeout=15)
    assert not dash_duo.driver.find_elements("css selector", "#job-cancel-button")


def test_the_server_refuses_a_viewer_who_calls_the_action_anyway(app_client):
    engine = app_client.application.extensions["fleet_monitor"].engine
    with engine.begin() as c:
        job = insert_job(c, status="pending", created_at=ago(minutes=1))
    username, password = TEST_USERS["viewer"]
    app_client.post("/login", data={"username": username, "password": password})
    csrf = app_client.get_cookie("csrf_access_token").value
    action_id = {"type": "job-action", "action": "cancel"}
    payload = {
        "output": "..job-action-result.children...job-refresh.data..",
        "outputs": [{"id": "job-action-result", "property": "children"}, {"id": "job-refresh", "property": "data"}],
        "inputs": [[{"id": action_id, "property": "submit_n_clicks", "value": 1}]],
        "changedPropIds": [json.dumps(action_id, separators=(",", ":"), sort_keys=True) + ".submit_n_clicks"],
        "state": [{"id": "job-id", "property": "data", "value": job},
                  {"id": "job-action-state", "property": "data", "value": {"status": "pending", "key": "k"}},
                  {"id": "job-refresh", "property": "data", "value": 0}],
    }
    app_client.get("/_dash-layout")  # the app registers its callbacks on the first request
    response = app_client.post("/_dash-update-component", json=payload, headers={"X-CSRF-TOKEN": csrf})
    assert response.status_code == 200
    assert "needs the operator role" in response.get_data(as_text=True)
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT status FROM job_queue WHERE id = :id"), {"id": job}).scalar_one() == "pending"
