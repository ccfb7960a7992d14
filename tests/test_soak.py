"""A wall screen runs for days: many refreshes must not grow the page (DOM nodes, timers)."""
from __future__ import annotations

import time

from tests.conftest import console_errors
from tests.helpers import ago, insert_job, insert_robot

# Counts live timers from the first script on, by wrapping the browser's own timer functions.
COUNT_TIMERS = """
(function () {
  var live = new Set();
  var set = window.setInterval, clear = window.clearInterval;
  window.setInterval = function () { var id = set.apply(window, arguments); live.add(id); return id; };
  window.clearInterval = function (id) { live.delete(id); return clear.call(window, id); };
  window.__liveIntervals = function () { return live.size; };
})();
"""
SOAK_SECONDS = 120


def page_size(dash_duo) -> tuple[int, int]:
    return tuple(dash_duo.driver.execute_script(
        "return [document.getElementsByTagName('*').length, window.__liveIntervals()]"))


def test_display_does_not_grow_over_many_refreshes(dash_duo, start_app, engine):
    with engine.begin() as c:
        for i in range(20):
            insert_robot(c, f"robot-{i:02d}", status="online", last_heartbeat=ago(seconds=2))
    dash_duo.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": COUNT_TIMERS})
    start_app(path="/display")  # refreshes every second in tests
    dash_duo.wait_for_contains_text("#display-updated", "Updated", timeout=15)
    time.sleep(20)  # let the page settle before the baseline
    baseline = page_size(dash_duo)

    deadline = time.time() + SOAK_SECONDS
    while time.time() < deadline:
        # Keep the data moving so every refresh really redraws.
        with engine.begin() as c:
            insert_job(c, status="pending", created_at=ago(seconds=1))
        time.sleep(5)
    dash_duo.wait_for_element("#display-stale.d-none")
    nodes, intervals = page_size(dash_duo)
    assert intervals == baseline[1]
    assert nodes <= baseline[0] * 1.05, (baseline, nodes)
    assert console_errors(dash_duo) == []
