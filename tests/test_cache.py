"""The shared cache: many viewers of the same view within the TTL cost one query."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import sqlalchemy as sa

from data import fleet
from tests.helpers import ago, insert_job, insert_robot, utcnow


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
    fleet.fleet_kpis.uncached(engine, "UTC", 90)
    one, counter["n"] = counter["n"], 0   # what one viewer's question costs
    results = []

    def viewer():
        with app.app_context():
            results.append(fleet.fleet_kpis(engine, "UTC", 90))

    threads = [threading.Thread(target=viewer) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter["n"] == one
    assert {r["total_robots"] for r in results} == {1}
    # Another time zone is another question: asked once more.
    with app.app_context():
        fleet.fleet_kpis(engine, "Asia/Tokyo", 90)
    assert counter["n"] == 2 * one


def test_outside_an_app_nothing_is_cached(engine):
    counter = count_queries(engine)
    fleet.fleet_kpis(engine, "UTC", 90)
    one = counter["n"]
    fleet.fleet_kpis(engine, "UTC", 90)
    assert one > 0 and counter["n"] == 2 * one


def test_the_analytics_sections_of_one_page_read_the_window_once(engine, monkeypatch):
    """Sections of one page (separate callbacks) share the window's fact rows: the second section
    sends no query for them. After the kept time, a page load reads them again."""
    from data import analytics as an
    from data import cache, rollups

    now = utcnow()
    starts = [now - timedelta(hours=h) for h in range(3, 24 * 8, 5)]
    with engine.begin() as conn:
        for started in starts:
            insert_job(conn, status="completed", created_at=started - timedelta(seconds=5), started_at=started,
                       completed_at=started + timedelta(seconds=30))
    rollups.refresh(engine)
    f, _ = an.parse_filters({"range": "30d", "tz": "UTC"}, default_tz="UTC", now=now)
    assert rollups.usable_plan(engine, f.start, f.end, f.tz, None) is not None
    counter = count_queries(engine)
    assert an.duration_percentiles(engine, f)["fleet"]["timed_jobs"] == len(starts)
    counter["n"] = 0
    box = an.duration_box_stats(engine, f)   # the same window's durations: nothing left to read
    assert counter["n"] == 0 and box["timed_jobs"].tolist() == [len(starts)]

    monkeypatch.setattr(cache, "KEPT_READ_SECONDS", 0.0)
    cache.forget_kept_reads()
    an.duration_box_stats(engine, f)
    assert counter["n"] > 0


def test_kept_reads_wait_for_the_first_and_drop_the_least_recently_used(engine, monkeypatch):
    from data import cache

    monkeypatch.setattr(cache, "_KEPT_READS", 2)
    cache.forget_kept_reads()
    loads = []

    def read(sql):
        def load():
            loads.append(sql)
            time.sleep(0.05)   # concurrent callers arrive while the first still reads
            return sql.upper()
        return cache.kept_read(engine, sql, {"p": 1}, load)

    threads = [threading.Thread(target=read, args=("a",)) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == ["a"]
    read("b")
    read("a")        # used again: "b" is now the least recently used
    read("c")        # over the limit of 2: "b" goes
    assert read("a") == "A" and loads == ["a", "b", "c"]
    read("b")
    assert loads == ["a", "b", "c", "b"]
