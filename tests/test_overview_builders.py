"""Fleet overview builders and refresh, without a browser: the compact robot grid data, the live
feed, and what one refresh sends (the grid only when a robot changed)."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pandas as pd
import sqlalchemy as sa

from components.overview import job_feed, robot_grid_data
from components.theme import ROBOT_STATUS_COLORS, ROBOT_STATUS_LABELS, ROBOT_STATUS_SYMBOLS
from dash import no_update
from tests.helpers import ago, insert_job, insert_robot


def robots_frame():
    return pd.DataFrame({
        "robot_id": ["r-3", "r-1", "r-2", "r-4"],
        "name": ["Gamma", "Alpha", "Beta", "Delta"],
        "hostname": ["gamma.local", "alpha.local", None, "delta.local"],
        "environment": ["dev", "production", "production", None],
        "status": ["busy", "idle", "offline", "maintenance"],
        "last_heartbeat": [pd.Timestamp("2026-07-01 10:00:05", tz="UTC"), pd.Timestamp("2026-01-15 23:30:00", tz="UTC"),
                           pd.NaT, pd.Timestamp("2026-07-01 09:00:00", tz="UTC")],
        "current_workflow": ["Invoice Processing", None, None, None],
    })


def test_robot_grid_data_groups_by_environment_with_every_field():
    data = robot_grid_data(robots_frame(), "Europe/Berlin")
    assert data["total"] == 4
    # Environments sorted; a robot without one goes last, under 'default'; order kept within a group.
    assert [g["env"] for g in data["groups"]] == ["dev", "production", "default"]
    assert [[r[0] for r in g["robots"]] for g in data["groups"]] == [["r-3"], ["r-1", "r-2"], ["r-4"]]
    gamma = data["groups"][0]["robots"][0]
    expected_epoch = int(datetime(2026, 7, 1, 10, 0, 5, tzinfo=timezone.utc).timestamp())
    # Berlin is UTC+2 in July and UTC+1 in January.
    assert gamma == ["r-3", "Gamma", "busy", "gamma.local", expected_epoch, "2026-07-01 12:00:05 UTC+0200",
                     "Invoice Processing"]
    alpha, beta = data["groups"][1]["robots"]
    assert alpha[5] == "2026-01-16 00:30:00 UTC+0100" and alpha[6] is None
    assert beta[3] is None and beta[4] is None and beta[5] == "—"
    assert data["styles"]["offline"] == [ROBOT_STATUS_SYMBOLS["offline"], ROBOT_STATUS_LABELS["offline"],
                                         ROBOT_STATUS_COLORS["offline"]]
    json.dumps(data, allow_nan=False)  # plain JSON: no NaN, no timestamps


def test_robot_grid_data_in_utc_and_empty():
    data = robot_grid_data(robots_frame(), "UTC")
    assert data["groups"][0]["robots"][0][5] == "2026-07-01 10:00:05 UTC"
    empty = robot_grid_data(robots_frame().iloc[0:0], "UTC")
    assert empty["groups"] == [] and empty["total"] == 0


def test_grid_data_is_a_fraction_of_the_component_tree():
    n = 1000
    frame = pd.DataFrame({
        "robot_id": [f"robot-{i:04d}" for i in range(n)], "name": [f"PRD-BOT-{i:04d}" for i in range(n)],
        "hostname": [f"rpa-prd-{i:04d}.corp.example.com" for i in range(n)], "environment": ["production"] * n,
        "status": ["idle"] * n, "last_heartbeat": [pd.Timestamp("2026-07-01 10:00", tz="UTC")] * n,
        "current_workflow": [None] * n,
    })
    size = len(json.dumps(robot_grid_data(frame, "UTC")))
    assert size < 130 * n  # about 100 bytes a robot, against ~700 bytes as Dash components


def test_feed_says_no_robot_in_words():
    changes = pd.DataFrame({
        "job_id": ["j1", "j2"], "workflow_name": ["Payroll", "Invoice"], "robot_id": [None, "robot-a"],
        "change": ["queued", "started"], "status": ["pending", "running"],
        "at": [pd.Timestamp("2026-07-01 10:00", tz="UTC")] * 2,
    })
    changes["robot_id"] = changes["robot_id"].astype(object).where(changes["robot_id"].notna(), float("nan"))
    text = json.dumps(job_feed(changes, "UTC").to_plotly_json(), default=lambda c: c.to_plotly_json())
    assert "NaN" not in text
    rows = job_feed(changes, "UTC").children[1].children
    assert rows[0].children[3].children == "—" and rows[1].children[3].children == "robot-a"


def test_refresh_sends_the_grid_only_when_a_robot_changed(app_client):
    from pages import overview

    app = app_client.application
    engine = app.extensions["fleet_monitor"].engine
    with engine.begin() as c:
        insert_robot(c, "robot-a", status="online", last_heartbeat=ago(seconds=2))
        insert_robot(c, "robot-b", status="online", last_heartbeat=ago(seconds=2))
        insert_job(c, status="running", robot_id="robot-b", created_at=ago(minutes=2), started_at=ago(minutes=1))
    refresh = getattr(overview.refresh, "__wrapped__", overview.refresh)
    with app.app_context():
        first = refresh(1, "UTC", {})
        tiles, grid, queue, throughput, feed, updated, _alert, is_open, state = first
        assert not is_open and updated.startswith("Last updated")
        statuses = {r[0]: r[2] for g in grid["groups"] for r in g["robots"]}
        assert statuses == {"robot-a": "idle", "robot-b": "busy"}
        assert queue is not no_update and feed is not no_update

        # Nothing changed: the screen keeps its grid and charts; the tiles come anyway (small).
        again = refresh(2, "UTC", state)
        assert again[1] is no_update and again[2] is no_update and again[0] == tiles

        # Another time zone: the tooltips' local times change, so the grid comes again.
        assert refresh(3, "Asia/Tokyo", state)[1] is not no_update

    # robot-a stops sending heartbeats: the shared snapshot is rebuilt in the background within
    # seconds, and the next refresh brings the grid again.
    with engine.begin() as c:
        c.execute(sa.text("UPDATE robots SET last_heartbeat = now() - interval '1 hour' WHERE robot_id = 'robot-a'"))
    deadline = time.monotonic() + 15
    while True:
        with app.app_context():
            changed = refresh(4, "UTC", state)
        if changed[1] is not no_update or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    statuses = {r[0]: r[2] for g in changed[1]["groups"] for r in g["robots"]}
    assert statuses == {"robot-a": "offline", "robot-b": "busy"}


def test_each_theme_gets_its_own_charts(app_client):
    from components.theme import TEMPLATES
    from pages import overview

    app = app_client.application
    refresh = getattr(overview.refresh, "__wrapped__", overview.refresh)
    backgrounds = {}
    for theme in ("light", "dark"):
        with app.test_request_context("/", headers={"Cookie": f"fleet_theme={theme}"}):
            queue = refresh(1, "UTC", {})[2]
        backgrounds[theme] = queue["layout"]["template"]["layout"]["paper_bgcolor"]
    assert backgrounds == {t: TEMPLATES[t].layout.paper_bgcolor for t in ("light", "dark")}
    assert backgrounds["light"] != backgrounds["dark"]
