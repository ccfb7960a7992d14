"""Live snapshots (data/snapshots.py): one build for every screen and worker, kept warm while
watched, rebuilt by whoever asks when it is too old."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from data import snapshots
from data.snapshots import live_snapshot, refresh_due, snapshot_key
from tests.helpers import ago, insert_job, insert_robot


@pytest.fixture
def no_background(monkeypatch):
    """Rebuilds only when the test calls refresh_due()."""
    monkeypatch.setattr(snapshots, "REFRESH_IN_BACKGROUND", False)
    time.sleep(2 * snapshots.POLL_SECONDS)  # a refresher of an earlier test sees it and ends


def counting_build(value="v", delay=0.0):
    calls = {"n": 0}

    def build():
        calls["n"] += 1
        time.sleep(delay)
        return f"{value}{calls['n']}"

    return build, calls


def test_outside_an_app_it_just_builds():
    build, calls = counting_build()
    assert live_snapshot("t", ("x",), build, 60) == "v1"
    assert live_snapshot("t", ("x",), build, 60) == "v2"


def test_many_askers_one_build(app_client):
    app = app_client.application
    build, calls = counting_build(delay=0.2)
    name = "t-" + uuid.uuid4().hex
    results = []

    def ask():
        with app.app_context():
            results.append(live_snapshot(name, (1,), build, 30))

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls["n"] == 1 and results == ["v1"] * 20
    with app.app_context():
        assert live_snapshot(name, (2,), build, 30) == "v2"  # other key parts: another snapshot


def first_snapshot(app_client):
    """A new snapshot (key part 1, refreshed every second) after its first build:
    (app, cache, build, calls, its name, its cache key)."""
    app = app_client.application
    build, calls = counting_build()
    name = "t-" + uuid.uuid4().hex
    with app.app_context():
        assert live_snapshot(name, (1,), build, 1) == "v1"
    return app, app.extensions["fleet_monitor_cache"], build, calls, name, snapshot_key(name, 1)


def test_refresher_rebuilds_once_when_due_and_respects_another_workers_claim(app_client, no_background):
    app, cache, build, calls, name, key = first_snapshot(app_client)
    assert refresh_due() >= 0 and calls["n"] == 1  # fresh: nothing to do for it
    time.sleep(1.1)
    cache.add(key + ":claim", -1, timeout=5)  # another worker is rebuilding it
    refresh_due()
    assert calls["n"] == 1
    cache.delete(key + ":claim")
    refresh_due()
    assert calls["n"] == 2
    with app.app_context():
        assert live_snapshot(name, (1,), build, 1) == "v2"  # read from the cache, not built here
    assert calls["n"] == 2


def test_a_snapshot_too_old_is_built_by_the_asker(app_client, no_background):
    app = app_client.application
    cache = app.extensions["fleet_monitor_cache"]
    build, calls = counting_build()
    name = "t-" + uuid.uuid4().hex
    key = snapshot_key(name, 1)
    cache.set(key, (time.time() - 10, "old"), timeout=60)  # three periods old: not served
    with app.app_context():
        assert live_snapshot(name, (1,), build, 2) == "v1"
    cache.set(key, (time.time() - 3, "recent"), timeout=60)  # stale but within three periods: served
    with app.app_context():
        assert live_snapshot(name, (1,), build, 2) == "recent"


def test_watching_ends_when_nobody_asks(app_client, no_background, monkeypatch):
    app = app_client.application
    build, calls = counting_build()
    name = "t-" + uuid.uuid4().hex
    monkeypatch.setattr(snapshots, "WATCH_SECONDS", 0.5)
    with app.app_context():
        live_snapshot(name, (1,), build, 0.2)
    time.sleep(0.7)
    refresh_due()
    assert snapshot_key(name, 1) not in snapshots._watched


def test_twenty_screens_cost_the_database_what_one_costs(app_client):
    from pages import overview

    app = app_client.application
    engine = app.extensions["fleet_monitor"].engine
    with engine.begin() as c:
        insert_robot(c, "robot-a", status="online", last_heartbeat=ago(seconds=2))
        insert_job(c, status="running", robot_id="robot-a", created_at=ago(minutes=2), started_at=ago(minutes=1))
    statements = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    refresh = getattr(overview.refresh, "__wrapped__", overview.refresh)
    answers = []

    def screen():
        with app.app_context():
            answers.append(refresh(1, "UTC", {}))

    threads = [threading.Thread(target=screen) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 20 and all(a[7] is False for a in answers)
    # One refresh's statements: the KPIs (after asking whether the robots' rollup can answer their
    # finished jobs: not yet), the robots, the queue and throughput series, the feed.
    assert len(statements) == 6, statements


def test_a_lapsed_claim_does_not_block_refreshes(app_client, no_background):
    app, cache, build, calls, name, key = first_snapshot(app_client)
    cache.set(key + ":claim", 12345, timeout=1)  # a worker that died while rebuilding
    time.sleep(2.1)
    refresh_due()
    assert calls["n"] == 2
