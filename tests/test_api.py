"""REST API: each endpoint returns what its page's data function returns, on the test's own rows;
errors share one shape; ETags; operator actions; the OpenAPI document and the docs page."""
from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from data import analytics, fleet, jobs, robots
from data.queue import queue_breakdown
from tests.conftest import api_token
from tests.helpers import ago, insert_job, insert_robot, utcnow

API = "/api/v1"


@pytest.fixture
def client(app_client):
    return app_client


@pytest.fixture
def state(client):
    return client.application.extensions["fleet_monitor"]


def clear_shared_cache(client) -> None:
    """Forget the live-data cache (data.cache), as if its short TTL had passed."""
    cache = client.application.extensions.get("fleet_monitor_cache")
    if cache is not None:
        cache.clear()


def bearer(client, role="viewer") -> dict:
    return {"Authorization": f"Bearer {api_token(client, role)}"}


def get(client, path, role="viewer", **kw):
    return client.get(API + path, headers=bearer(client, role), **kw)


# -- comparing API JSON with data-function values -------------------------------------------------
def same(api_value, data_value) -> bool:
    """API JSON value vs the data function's value: times compared as instants (the API's carry
    an offset), floats approximately, NaN/NaT/None alike."""
    if data_value is None or (isinstance(data_value, float) and math.isnan(data_value)) or data_value is pd.NaT:
        return api_value is None
    if isinstance(data_value, (datetime, pd.Timestamp)):
        parsed = datetime.fromisoformat(api_value)
        assert parsed.utcoffset() is not None, f"{api_value} has no offset"
        return parsed == pd.Timestamp(data_value).to_pydatetime()
    if isinstance(data_value, (np.integer, int)) and not isinstance(data_value, bool):
        return api_value == int(data_value)
    if isinstance(data_value, (np.floating, float)):
        return api_value is not None and math.isclose(api_value, float(data_value), rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(data_value, (list, tuple, np.ndarray)):
        return len(api_value) == len(data_value) and all(same(a, d) for a, d in zip(api_value, data_value))
    return api_value == data_value


# Values that move with the clock between the API's query and the test's own call.
CLOCK = {"heartbeat_age_s", "as_of", "elapsed_ms", "waiting_ms", "lease_remaining_ms"}


def assert_rows_match(api_rows: list[dict], frame: pd.DataFrame):
    assert len(api_rows) == len(frame)
    for api_row, data_row in zip(api_rows, frame.to_dict("records")):
        for col in api_row.keys():
            if col in CLOCK or col not in data_row:
                continue
            if col == "utilization_24h":  # a running job's busy time grows with the clock
                assert api_row[col] == pytest.approx(data_row[col], abs=1e-3)
                continue
            assert same(api_row[col], data_row[col]), (col, api_row[col], data_row[col])


# -- fixtures of rows ---------------------------------------------------------------------------
def fleet_rows(engine):
    """5 robots (one per live status) and jobs: 2 pending, 1 running, 3 finished in the last day."""
    durations_s = [12.5, 30.0, 61.25]
    with engine.begin() as c:
        insert_robot(c, "r-busy", status="busy", last_heartbeat=ago(seconds=5), environment="prod",
                     capabilities=["browser"], metrics={"cpu_percent": 55.5, "memory_mb": 2048})
        insert_robot(c, "r-idle", status="online", last_heartbeat=ago(seconds=10), environment="prod",
                     capabilities=["browser", "desktop"])
        insert_robot(c, "r-off", status="online", last_heartbeat=ago(minutes=30), environment="test")
        insert_robot(c, "r-maint", status="maintenance", last_heartbeat=ago(days=2), environment="test")
        insert_robot(c, "r-err", status="error", last_heartbeat=ago(seconds=3), environment="prod")
        insert_job(c, status="pending", created_at=ago(minutes=20), environment="prod", priority=5)
        insert_job(c, status="pending", created_at=ago(minutes=3), environment="test", priority=1)
        insert_job(c, status="running", robot_id="r-busy", created_at=ago(minutes=9), started_at=ago(minutes=8),
                   environment="prod")
        for i, d in enumerate(durations_s):
            start = ago(hours=2, minutes=i)
            insert_job(c, status="failed" if i == 2 else "completed", robot_id="r-idle", workflow_id=f"wf-{i % 2}",
                       created_at=start - timedelta(seconds=30), started_at=start,
                       completed_at=start + timedelta(seconds=d), error_message="TimeoutError: x" if i == 2 else None)
    return durations_s


# ---------------------------------------------------------------------------------------------
# Fleet and queue
# ---------------------------------------------------------------------------------------------
def test_fleet_matches_fleet_kpis(client, state):
    durations_s = fleet_rows(state.engine)
    response = get(client, "/metrics/fleet?tz=Europe/Berlin")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    expected = fleet.fleet_kpis(state.engine, "Europe/Berlin", state.settings.offline_after_seconds)
    for key, value in expected.items():
        if key in ("change_token", "as_of", "oldest_pending_age_seconds"):
            continue
        assert same(body[key], value), (key, body[key], value)
    # Independently from the rows inserted above.
    assert (body["total_robots"], body["active_robots"], body["idle_robots"], body["offline_robots"],
            body["error_robots"], body["maintenance_robots"]) == (5, 1, 1, 1, 1, 1)
    assert body["robots_by_status"] == {"busy": 1, "idle": 1, "offline": 1, "error": 1, "maintenance": 1}
    assert (body["queue_depth"], body["active_jobs"], body["finished_jobs_24h"]) == (2, 1, 3)
    assert body["average_job_duration_ms"] == pytest.approx(np.mean(durations_s) * 1000)
    assert body["average_job_duration_seconds"] == pytest.approx(np.mean(durations_s))
    assert body["success_rate_24h"] == pytest.approx(2 / 3)
    assert 20 * 60 - 5 < body["oldest_pending_age_seconds"] < 20 * 60 + 60
    assert datetime.fromisoformat(body["as_of"]).utcoffset() == timedelta(0)
    assert body["tz"] == "Europe/Berlin" and "change_token" not in body


def test_queue_matches_queue_breakdown(client, state):
    with state.engine.begin() as c:
        insert_robot(c, "r1", environment="idle-env", last_heartbeat=ago(seconds=5))
        waits = {("prod", 5): [ago(minutes=30), ago(minutes=10)], ("prod", 1): [ago(minutes=40)],
                 ("test", 5): [ago(minutes=2)]}
        for (env, prio), created in waits.items():
            for at in created:
                insert_job(c, status="pending", environment=env, priority=prio, created_at=at)
        insert_job(c, status="running", environment="prod", robot_id="r1", created_at=ago(minutes=50),
                   started_at=ago(minutes=45))
        insert_job(c, status="completed", environment="prod", created_at=ago(minutes=5), started_at=ago(minutes=4),
                   completed_at=ago(minutes=3))
        # A delayed retry: pending, not visible for another 10 minutes.
        delayed = insert_job(c, status="pending", environment="test", priority=1, created_at=ago(minutes=1))
        c.execute(sa.text("UPDATE job_queue SET visible_after = now() + interval '10 minutes' WHERE id = :id"),
                  {"id": delayed})
    body = get(client, "/metrics/queue").get_json()
    data = queue_breakdown(state.engine)
    for key in ("queue_depth", "delayed_jobs", "running_jobs", "oldest_pending_created_at",
                "oldest_running_started_at"):
        assert same(body[key], data[key]), key
    for section in ("by_environment", "by_priority", "by_environment_priority"):
        assert len(body[section]) == len(data[section])
        for api_row, row in zip(body[section], data[section]):
            for key, value in row.items():
                if not key.endswith("age_seconds"):
                    assert same(api_row[key], value), (section, key)
    # By hand: 5 pending (prod 3, test 2), 1 running, 1 delayed; idle-env listed with 0.
    assert (body["queue_depth"], body["running_jobs"], body["delayed_jobs"]) == (5, 1, 1)
    envs = {e["environment"]: (e["queue_depth"], e["running_jobs"]) for e in body["by_environment"]}
    assert envs == {"idle-env": (0, 0), "prod": (3, 1), "test": (2, 0)}
    assert [(p["priority"], p["queue_depth"]) for p in body["by_priority"]] == [(5, 3), (1, 2)]
    assert 40 * 60 - 5 < body["oldest_pending_age_seconds"] < 40 * 60 + 60
    assert 45 * 60 - 5 < body["longest_running_seconds"] < 45 * 60 + 60


# ---------------------------------------------------------------------------------------------
# Robots
# ---------------------------------------------------------------------------------------------
def test_robots_match_robot_list_with_filters(client, state):
    fleet_rows(state.engine)
    offline = state.settings.offline_after_seconds
    everyone = get(client, "/metrics/robots").get_json()
    assert_rows_match(everyone["robots"], robots.robot_list(state.engine, "UTC", offline))
    assert everyone["count"] == 5

    response = get(client, "/metrics/robots?status=busy,idle&environment=prod&capability=browser&sort=-cpu_percent")
    body = response.get_json()
    frame = robots.robot_list(state.engine, "UTC", offline, status=["busy", "idle"], environment=["prod"],
                              capability=["browser"], sort="-cpu_percent")
    assert_rows_match(body["robots"], frame)
    assert [r["robot_id"] for r in body["robots"]] == ["r-busy", "r-idle"]  # by hand
    busy = body["robots"][0]
    assert (busy["cpu_percent"], busy["memory_mb"], busy["running_jobs"]) == (55.5, 2048.0, 1)
    assert busy["current_job_id"] is not None and busy["status"] == "busy"

    repeated = get(client, "/metrics/robots?status=busy&status=idle&environment=prod&capability=browser")
    assert [r["robot_id"] for r in repeated.get_json()["robots"]] == ["r-busy", "r-idle"]


def test_robot_detail_and_unknown_robot(client, state):
    fleet_rows(state.engine)
    body = get(client, "/metrics/robots/r-idle").get_json()
    detail = robots.robot_detail(state.engine, "r-idle", state.settings.offline_after_seconds)
    for key, value in detail.items():
        if key not in CLOCK:
            assert same(body[key], value), key
    assert body["job_counts_24h"]["completed"] == 2 and body["job_counts_24h"]["failed"] == 1
    latest = robots.robot_latest_jobs(state.engine, "r-idle", 20)
    assert_rows_match(body["latest_jobs"], latest)
    missing = get(client, "/metrics/robots/no-such-robot")
    assert missing.status_code == 404
    assert missing.get_json()["error"]["code"] == "not_found"


# ---------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------
def test_jobs_keyset_pages_match_list_jobs(client, state):
    base = utcnow() - timedelta(hours=3)
    ids = []
    with state.engine.begin() as c:
        for i in range(7):
            status = "failed" if i % 3 == 0 else "completed"
            ids.append(insert_job(c, status=status, workflow_id="wf-a" if i < 5 else "wf-b", robot_id="r1",
                                  created_at=base + timedelta(minutes=i), started_at=base + timedelta(minutes=i, seconds=5),
                                  completed_at=base + timedelta(minutes=i, seconds=5 + i),
                                  error_message="ConnectionError: down" if status == "failed" else None))
    seen, cursor, pages = [], None, 0
    while True:
        path = "/metrics/jobs?limit=3" + (f"&cursor={cursor}" if cursor else "")
        body = get(client, path).get_json()
        page = jobs.list_jobs(state.engine, jobs.JobFilters(), "UTC", after=cursor, limit=3)
        assert_rows_match(body["jobs"], page["jobs"])
        assert body["next_cursor"] == page["next_cursor"]
        seen += [j["job_id"] for j in body["jobs"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids)) and pages == 3  # newest first, 3 + 3 + 1

    body = get(client, "/metrics/jobs?status=failed&workflow=wf-a&error_type=ConnectionError").get_json()
    filters, _ = jobs.parse_filters({"status": "failed", "workflow": "wf-a", "error_type": "ConnectionError"})
    assert_rows_match(body["jobs"], jobs.list_jobs(state.engine, filters, "UTC")["jobs"])
    assert {j["job_id"] for j in body["jobs"]} == {ids[0], ids[3]}
    assert body["filters"] == {"status": "failed", "workflow": "wf-a", "error_type": "ConnectionError"}
    first = body["jobs"][0]
    assert first["duration_ms"] == pytest.approx(3000.0) and first["queue_wait_ms"] == pytest.approx(5000.0)

    longest = get(client, "/metrics/jobs?sort=-duration&limit=2").get_json()
    assert [j["job_id"] for j in longest["jobs"]] == [ids[6], ids[5]]


def test_job_detail_with_steps_and_unknown_ids(client, state):
    steps = [
        {"node_id": "open", "node_type": "browser", "status": "success", "duration_ms": 1200},
        {"node_id": "type", "node_type": "input", "status": "error", "duration_ms": 300, "error": "TimeoutError: no field"},
    ]
    with state.engine.begin() as c:
        job = insert_job(c, status="failed", robot_id="r1", created_at=ago(minutes=10), started_at=ago(minutes=9),
                         completed_at=ago(minutes=8), error_message="TimeoutError: no field", retry_count=2,
                         result={"node_executions": steps}, variables={"customer": 42})
    body = get(client, f"/metrics/jobs/{job}").get_json()
    story = jobs.job_story(state.engine, job)
    for key in ("job_id", "workflow_id", "status", "robot_id", "retry_count", "error_message", "error_type",
                "claimed_at", "created_at", "completed_at", "duration_ms", "steps_source", "variables"):
        assert same(body[key], story[key]), key
    assert [(s["node_id"], s["status"], s["duration_ms"]) for s in body["node_executions"]] == [
        ("open", "completed", 1200.0), ("type", "failed", 300.0)]
    assert body["error_type"] == "TimeoutError" and body["retry_count"] == 2
    assert body["duration_ms"] == pytest.approx(60_000, abs=1)
    for unknown in (str(uuid.uuid4()), "not-a-uuid"):
        response = get(client, f"/metrics/jobs/{unknown}")
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"


# ---------------------------------------------------------------------------------------------
# Analytics
# ---------------------------------------------------------------------------------------------
def test_analytics_matches_analytics_functions(client, state):
    durations = {"wf-fast": [1.0, 2.0, 3.5, 4.0], "wf-slow": [40.0, 90.0, 120.5]}
    errors = ["TimeoutError: a", "TimeoutError: b", "ConnectionError: c"]
    with state.engine.begin() as c:
        k = 0
        for wf, values in durations.items():
            for d in values:
                start = ago(hours=5, minutes=k)
                failed = wf == "wf-slow" or k == 0
                insert_job(c, status="failed" if failed else "completed", workflow_id=wf, robot_id="r1",
                           created_at=start - timedelta(seconds=10), started_at=start,
                           completed_at=start + timedelta(seconds=d),
                           error_message=errors[k % 3] if failed else None,
                           metadata={"healing_attempts": 2, "healing_successes": 1} if wf == "wf-fast" else {})
                k += 1
        insert_job(c, status="pending", workflow_id="wf-fast", created_at=ago(minutes=1))
    body = get(client, "/metrics/analytics?range=7d&tz=Europe/Berlin").get_json()
    f, problems = analytics.parse_filters({"range": "7d", "tz": "Europe/Berlin"})
    assert not problems
    percentiles = analytics.duration_percentiles(state.engine, f)
    for key, value in percentiles["fleet"].items():
        assert same(body[key], value), key
    assert_rows_match(body["workflows"], percentiles["workflows"])
    assert_rows_match(body["efficiency"], analytics.workflow_efficiency(state.engine, f))
    assert_rows_match(body["weekly_throughput"], analytics.weekly_throughput(state.engine, f))
    assert_rows_match(body["time_series"], analytics.time_series(state.engine, f))
    # By hand (numpy's linear percentiles, as percentile_cont).
    all_ms = np.array([d * 1000 for values in durations.values() for d in values])
    assert body["total_jobs"] == 8 and body["timed_jobs"] == 7
    for p in (50, 90, 99):
        assert body[f"p{p}_duration_ms"] == pytest.approx(np.percentile(all_ms, p))
    assert body["success_rate"] == pytest.approx(3 / 7) and body["failure_rate"] == pytest.approx(4 / 7)
    assert [w["workflow_id"] for w in body["slowest_workflows"]] == ["wf-slow", "wf-fast"]
    assert body["slowest_workflows"][0]["average_duration_ms"] == pytest.approx(np.mean(durations["wf-slow"]) * 1000)
    # Failed: k = 0 (wf-fast) and k = 4, 5, 6 (wf-slow): messages errors[0], errors[1], errors[2], errors[0].
    assert body["error_distribution"] == [{"error_type": "TimeoutError", "count": 3},
                                          {"error_type": "ConnectionError", "count": 1}]
    assert body["self_healing_success_rate"] == pytest.approx(0.5)
    assert body["filters"]["tz"] == "Europe/Berlin" and body["filters"]["range"] == "7d"

    targeted = get(client, "/metrics/analytics?targets=wf-slow:30").get_json()
    assert {e["workflow_id"]: e["p95_target_s"] for e in targeted["efficiency"]} == {"wf-slow": 30.0, "wf-fast": 60.0}

    bad = get(client, "/metrics/analytics?range=custom&from=2025-03-10&to=2025-03-01")
    assert bad.status_code == 400 and "not before" in bad.get_json()["error"]["message"]


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
def error_of(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"} and {"status", "code", "message"} <= set(body["error"])
    assert body["error"]["status"] == status
    return body["error"]


def test_invalid_parameters_are_named(client):
    err = error_of(get(client, "/metrics/jobs?limit=501&status=done&colour=red"), 400)
    assert {p["parameter"] for p in err["problems"]} == {"limit", "status", "colour"}
    assert "colour: unknown parameter" in err["message"] and "limit:" in err["message"]
    err = error_of(get(client, "/metrics/jobs?cursor=bm90LWEtY3Vyc29y"), 400)
    assert err["problems"][0]["parameter"] == "cursor"
    err = error_of(get(client, "/metrics/fleet?tz=Mars/Olympus"), 400)
    assert err["problems"][0]["parameter"] == "tz" and "time zone" in err["message"]
    err = error_of(get(client, "/metrics/queue?anything=1"), 400)
    assert err["problems"] == [{"parameter": "anything", "problem": "unknown parameter"}]
    err = error_of(get(client, "/metrics/robots?tz=UTC&tz=Europe/Paris"), 400)
    assert "more than once" in err["message"]
    err = error_of(get(client, "/metrics/jobs?range=custom&from=yesterday"), 400)
    assert "from" in err["message"]


def test_errors_share_one_shape(client):
    error_of(client.get(API + "/metrics/fleet"), 401)
    error_of(get(client, "/no/such/route"), 404)
    err = error_of(client.post(API + "/metrics/fleet", headers=bearer(client)), 405)
    assert "GET" in err["message"]
    err = error_of(client.get(API + "/auth/login", headers=bearer(client)), 405)
    assert "POST" in err["message"]
    err = error_of(client.post(f"{API}/jobs/{uuid.uuid4()}/cancel", headers=bearer(client, "operator"),
                               data="{not json", content_type="application/json"), 400)
    assert err["code"] == "invalid_body"
    err = error_of(client.post(f"{API}/jobs/{uuid.uuid4()}/cancel", headers=bearer(client, "operator"),
                               json={"expected_status": "completed", "extra": 1}), 400)
    assert {p["parameter"] for p in err["problems"]} == {"body.expected_status", "body.extra"}


def test_options_request_is_not_a_server_error(client):
    assert client.options(API + "/metrics/fleet", headers=bearer(client)).status_code < 500


def test_database_outage_is_a_503(client, database_outage):
    headers = bearer(client)
    database_outage(False)
    err = error_of(client.get(API + "/metrics/queue", headers=headers), 503)
    assert err["code"] == "database_unavailable" and "postgres" not in err["message"].lower()


# ---------------------------------------------------------------------------------------------
# Conditional requests
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/metrics/fleet", "/metrics/queue", "/metrics/robots", "/metrics/robots/r-busy"])
def test_etag_gives_304_until_something_changes(client, state, path):
    fleet_rows(state.engine)
    headers = bearer(client)
    first = client.get(API + path, headers=headers)
    tag = first.headers["ETag"]
    assert first.status_code == 200 and tag.startswith('W/"')
    again = client.get(API + path, headers={**headers, "If-None-Match": tag})
    assert again.status_code == 304 and again.get_data() == b"" and again.headers["ETag"] == tag
    with state.engine.begin() as c:
        insert_job(c, status="running", robot_id="r-busy", environment="prod", created_at=ago(seconds=30),
                   started_at=ago(seconds=20))
        c.execute(sa.text("UPDATE robots SET metrics = '{\"cpu_percent\": 99}' WHERE robot_id = 'r-busy'"))
    clear_shared_cache(client)
    changed = client.get(API + path, headers={**headers, "If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag


# ---------------------------------------------------------------------------------------------
# Operator actions and audit
# ---------------------------------------------------------------------------------------------
def status_of(engine, job_id):
    with engine.connect() as c:
        return c.execute(sa.text("SELECT status FROM job_queue WHERE id = :id"), {"id": job_id}).scalar_one()


def test_operator_actions_roles_idempotency_and_audit(client, state):
    with state.engine.begin() as c:
        pending = insert_job(c, status="pending", created_at=ago(minutes=2))
        failed = insert_job(c, status="failed", created_at=ago(minutes=9), started_at=ago(minutes=8),
                            completed_at=ago(minutes=7), error_message="boom")
        done = insert_job(c, status="completed", created_at=ago(minutes=9), started_at=ago(minutes=8),
                          completed_at=ago(minutes=7))
        entry = c.execute(sa.text(
            "INSERT INTO job_queue_dlq (original_job_id, workflow_id, workflow_name, workflow_json, error_message) "
            "VALUES (gen_random_uuid(), 'wf-d', 'Dead', '{}', 'x') RETURNING id::text")).scalar_one()
    viewer, operator = bearer(client, "viewer"), bearer(client, "operator")
    err = error_of(client.post(f"{API}/jobs/{pending}/cancel", headers=viewer), 403)
    assert "operator" in err["message"] and status_of(state.engine, pending) == "pending"

    key = {"Idempotency-Key": "click-1"}
    first = client.post(f"{API}/jobs/{pending}/cancel", headers={**operator, **key}, json={"expected_status": "pending"})
    assert first.status_code == 200 and first.get_json()["outcome"] == "done"
    assert status_of(state.engine, pending) == "cancelled"
    second = client.post(f"{API}/jobs/{pending}/cancel", headers={**operator, **key}, json={"expected_status": "pending"})
    assert second.status_code == 200 and second.get_json()["outcome"] == "repeated"

    err = error_of(client.post(f"{API}/jobs/{done}/cancel", headers=operator), 409)
    assert err["code"] == "refused" and err["current_status"] == "completed"
    error_of(client.post(f"{API}/jobs/{uuid.uuid4()}/retry", headers=operator), 404)

    retried = client.post(f"{API}/jobs/{failed}/retry", headers=operator, json={"expected_status": "failed"}).get_json()
    assert retried["outcome"] == "done" and status_of(state.engine, retried["new_job_id"]) == "pending"
    requeued = client.post(f"{API}/dlq/{entry}/requeue", headers=operator).get_json()
    assert requeued["outcome"] == "done" and status_of(state.engine, requeued["new_job_id"]) == "pending"
    error_of(client.post(f"{API}/dlq/{entry}/requeue", headers=operator), 409)

    error_of(client.get(API + "/admin/audit", headers=operator), 403)
    page = client.get(API + "/admin/audit?limit=3", headers=bearer(client, "admin")).get_json()
    # Audited, newest first: requeue refused, requeue done, retry done, cancel refused, cancel done.
    # The viewer was turned away before acting and the repeated click acted no more: no records.
    assert [e["action"] for e in page["entries"]] == ["requeue", "requeue", "retry"]
    assert page["entries"][0]["outcome"] == "refused" and page["entries"][2]["username"] == "otto"
    rest = client.get(f"{API}/admin/audit?limit=3&before_id={page['next_before_id']}",
                      headers=bearer(client, "admin")).get_json()
    assert [(e["action"], e["outcome"]) for e in rest["entries"]] == [("cancel", "refused"), ("cancel", "done")]
    assert rest["next_before_id"] is None


# ---------------------------------------------------------------------------------------------
# The document and the docs page
# ---------------------------------------------------------------------------------------------
def test_openapi_document_covers_every_route(client):
    from server.api import api

    doc = get(client, "/openapi.json").get_json()
    assert doc == json.loads(json.dumps(api.document()))  # what the Schemathesis test reads
    assert doc["openapi"].startswith("3.1") and doc["servers"] == [{"url": API}]
    documented = {(m.upper(), API + p) for p, ops in doc["paths"].items() for m in ops}
    import re

    served = set()
    for rule in client.application.url_map.iter_rules():
        if rule.endpoint.startswith("fleet_api.") and rule.endpoint not in (
                "fleet_api.openapi_document", "fleet_api.docs_page", "fleet_api.unknown_route"):
            path = re.sub(r"<(?:[a-z]+:)?(\w+)>", r"{\1}", rule.rule)
            served |= {(m, path) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert served == documented
    schemas = doc["components"]["schemas"]
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert refs <= set(schemas)
    params = {p["name"] for p in doc["paths"]["/metrics/jobs"]["get"]["parameters"]}
    assert {"cursor", "limit", "from", "to", "status", "workflow"} <= params
    assert schemas["JobsResponse"]["properties"]["next_cursor"]


def test_docs_page_is_rendered_from_the_document(client):
    response = get(client, "/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    doc = get(client, "/openapi.json").get_json()
    for path in doc["paths"]:
        assert API + path in page
    assert "<script" not in page and "cdn" not in page.lower() and "https://" not in page
    assert 'href="/assets/vendor/bootstrap.min.css"' in page
