"""The shared cache: many viewers of the same view within the TTL cost one query."""
from __future__ import annotations

import threading

import sqlalchemy as sa

from data import fleet
from tests.helpers import ago, insert_robot


def count_queries(engine):
    counter = {"n": 0}

    def count(*_):
        counter["n"] += 1

    sa.event.listen(engine, "before_cursor_execute", count)
    return counter


def test_many_viewers_one_query(app_client):
    app = app_client.application
    engine = app.extensions["fleet_monitor"].engine
    with engine.begin() as c:
        insert_robot(c, "robot-a", status="online", last_heartbeat=ago(seconds=1))
    counter = count_queries(engine)
    results = []

    def viewer():
        with app.app_context():
            results.append(fleet.fleet_kpis(engine, "UTC", 90))

    threads = [threading.Thread(target=viewer) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter["n"] == 1
    assert {r["total_robots"] for r in results} == {1}
    # Another time zone is another question: one more query.
    with app.app_context():
        fleet.fleet_kpis(engine, "Asia/Tokyo", 90)
    assert counter["n"] == 2


def test_outside_an_app_nothing_is_cached(engine):
    counter = count_queries(engine)
    fleet.fleet_kpis(engine, "UTC", 90)
    fleet.fleet_kpis(engine, "UTC", 90)
    assert counter["n"] == 2
