"""User and display-token commands, run through Flask's CLI runner on the real database."""
from __future__ import annotations

import re

import pytest

from data import users


@pytest.fixture
def cli(app_client):
    runner = app_client.application.test_cli_runner()
    engine = app_client.application.extensions["fleet_monitor"].engine
    return runner, engine


def test_user_lifecycle(cli):
    runner, engine = cli
    result = runner.invoke(args=["users", "create", "carla", "--role", "operator", "--password", "carla-pass-1"])
    assert result.exit_code == 0, result.output
    assert users.authenticate(engine, "carla", "carla-pass-1", "127.0.0.1").role == "operator"

    assert runner.invoke(args=["users", "set-role", "carla", "admin"]).exit_code == 0
    assert runner.invoke(args=["users", "set-password", "carla", "--password", "new-pass-22"]).exit_code == 0
    assert users.authenticate(engine, "carla", "new-pass-22", "127.0.0.1").role == "admin"

    assert runner.invoke(args=["users", "disable", "carla"]).exit_code == 0
    assert users.authenticate(engine, "carla", "new-pass-22", "127.0.0.1") is None
    listing = runner.invoke(args=["users", "list"]).output
    assert re.search(r"carla\s+admin\s+False", listing)


def test_bad_requests_say_why(cli):
    runner, _ = cli
    duplicate = runner.invoke(args=["users", "create", "vera", "--password", "whatever-123"])
    assert duplicate.exit_code != 0 and "already exists" in duplicate.output
    short = runner.invoke(args=["users", "create", "newbie", "--password", "short"])
    assert short.exit_code != 0 and "at least 8" in short.output
    missing = runner.invoke(args=["users", "set-role", "ghost", "viewer"])
    assert missing.exit_code != 0 and "No user 'ghost'" in missing.output


def test_display_token_create_use_revoke(cli, app_client):
    runner, _ = cli
    created = runner.invoke(args=["display-tokens", "create", "Ops room TV"])
    token_id, token = re.search(r"Display token (\d+) .*token=(\S+)", created.output).groups()

    opened = app_client.get(f"/?token={token}")
    assert opened.status_code == 302 and "token=" not in opened.headers["Location"]
    assert app_client.get("/_dash-layout").status_code == 200  # a read-only session started
    listing = runner.invoke(args=["display-tokens", "list"]).output
    assert "Ops room TV" in listing and token not in listing  # stored hashed, never shown again

    assert runner.invoke(args=["display-tokens", "revoke", token_id]).exit_code == 0
    assert app_client.get("/_dash-layout").status_code == 401  # stops at the next refresh
    assert app_client.get(f"/?token={token}").status_code == 401


def test_rollup_commands(cli):
    from datetime import timedelta

    from tests.helpers import insert_job, utcnow

    runner, engine = cli
    with engine.begin() as conn:
        for days in (5, 3, 1):
            insert_job(conn, created_at=utcnow() - timedelta(days=days, minutes=5))
    refreshed = runner.invoke(args=["rollups", "refresh"])
    assert refreshed.exit_code == 0, refreshed.output
    assert re.search(r"\d+ new hours, 0 changed hours; covered until", refreshed.output)
    status = runner.invoke(args=["rollups", "status"]).output
    assert "covered until" in status and "'hour': 3, 'day': 3" in status  # one job in each
    assert "days and weeks of UTC" in status
    assert runner.invoke(args=["rollups", "reconcile"]).output.strip() == "0 hours rebuilt."


def test_rollup_commands_say_when_the_database_is_away(cli, database_outage):
    runner, _ = cli
    database_outage(False)
    for command in ("refresh", "reconcile", "status"):
        result = runner.invoke(args=["rollups", command])
        assert result.exit_code == 1, result.output
        assert "Cannot reach PostgreSQL" in result.output and "Traceback" not in result.output
