"""Robots pages: the builders on their own, then the list and a robot's page in a real browser."""
from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

import pandas as pd
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from components import robots as rc
from data import robots as rd
from tests.conftest import console_errors, save_screenshot
from tests.helpers import ago, insert_heartbeat, insert_job, insert_robot, utcnow

THRESHOLD = 90


# --------------------------------------------------------------------------------------------
# Builders (no browser)
# --------------------------------------------------------------------------------------------

def test_list_rows_and_columns(engine):
    with engine.begin() as c:
        insert_robot(c, "odd [id] (1)", name="Odd *name* [x]", last_heartbeat=ago(minutes=12),
                     metrics={"memory_mb": 2048})
        insert_robot(c, "ok", last_heartbeat=ago(seconds=3), metrics={"cpu_percent": 41.6, "memory_percent": 50},
                     capabilities=["browser", "sap"], tags=["eu"])
        job = insert_job(c, status="running", robot_id="ok", workflow_name="Invoices_[EU]",
                         created_at=ago(minutes=2), started_at=ago(minutes=1))
    frame = rd.robot_list(engine, "Europe/Berlin", THRESHOLD)
    rows = {r["robot_id"]: r for r in rc.list_rows(frame, "Europe/Berlin")}
    odd, ok = rows["odd [id] (1)"], rows["ok"]
    assert odd["name_md"] == r"[Odd \*name\* \[x\]](/robots/odd%20%5Bid%5D%20%281%29)"
    assert odd["silent"] and odd["status_text"] == "✕ Offline"
    assert odd["heartbeat_text"].startswith("silent 12 min") and odd["heartbeat_age_s"] > 720
    assert odd["memory_text"] == "2,048 MB" and odd["cpu_text"] == "—" and odd["cpu_percent"] is None
    assert ok["status_text"] == "▶ Busy" and not ok["silent"]
    assert ok["current_job_md"] == rf"[Invoices\_\[EU\]](/executions/{job})"
    assert ok["cpu_text"] == "42 %" and ok["memory_text"] == "50 %"
    assert ok["capabilities_text"] == "browser, sap" and ok["heartbeat_text"].endswith(" s ago")
    assert ok["heartbeat_title"].endswith("UTC+0100") or ok["heartbeat_title"].endswith("UTC+0200")
    assert rc.STATUS_RANK["offline"] < rc.STATUS_RANK["idle"]  # offline sorts first

    defs = {d["colId"]: d for d in rc.list_column_defs("-heartbeat_age_s")}
    assert set(defs) == set(rc.LIST_HEADERS) and defs["heartbeat_age_s"]["sort"] == "desc"
    assert not any("sort" in d for k, d in defs.items() if k != "heartbeat_age_s")
    assert rc.parse_sort("bogus") is None and rc.parse_sort("name") == ("name", "asc")

    banner = rc.silent_banner(frame, THRESHOLD)
    assert "1 robot silent" in str(banner) and "silent 12 min" in str(banner)
    assert rc.silent_banner(frame[~frame["silent"]], THRESHOLD) is None


def test_figures_say_why_they_are_empty():
    start, end = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=7), pd.Timestamp.now(tz="UTC")
    no_history = rc.timeline_figure(None, "UTC", start, end, has_history=False)
    assert "No heartbeat history" in no_history.layout.annotations[0].text
    assert "No heartbeat history" in rc.metrics_figure(None, "UTC", has_history=False).layout.annotations[0].text
    empty = pd.DataFrame(columns=["status", "start", "end", "duration_s", "heartbeats"])
    assert "No heartbeats" in rc.timeline_figure(empty, "UTC", start, end).layout.annotations[0].text
    bands = pd.DataFrame({"status": ["idle", "offline", "idle"],
                          "start": pd.to_datetime([start, start + pd.Timedelta(hours=1), start + pd.Timedelta(hours=2)]),
                          "end": pd.to_datetime([start + pd.Timedelta(hours=1), start + pd.Timedelta(hours=2), end]),
                          "duration_s": [3600.0, 3600.0, (end - start).total_seconds() - 7200], "heartbeats": [1, 1, 1]})
    fig = rc.timeline_figure(bands, "Asia/Tokyo", start, end)
    assert [t.name for t in fig.data] == ["✕ Offline", "● Idle"]  # one legend entry per status, text + symbol
    assert list(fig.data[0].x) == [3600_000.0]
    assert fig.data[0].base[0] == (start + pd.Timedelta(hours=1)).tz_convert("Asia/Tokyo").strftime("%Y-%m-%d %H:%M:%S")
    assert "No jobs" in str(rc.job_counts({"total_jobs": 0}, "r", "7d"))
    assert rc.no_such_robot("x" * 200).children[1].children[1].children.endswith("…")


# --------------------------------------------------------------------------------------------
# Browser
# --------------------------------------------------------------------------------------------

def grid_names(dash_duo, ordered: bool = False) -> list[str]:
    """The robot names the grid shows (read in one script: the grid re-renders on refresh)."""
    names = dash_duo.driver.execute_script("""
        var rows = document.querySelectorAll('#robots-grid .ag-pinned-left-cols-container .ag-row');
        return Array.from(rows)
            .sort(function(a, b) { return +a.getAttribute('row-index') - +b.getAttribute('row-index'); })
            .map(function(r) { var a = r.querySelector('a'); return a ? a.textContent : ''; });
    """)
    return names if ordered else sorted(names)


def wait_for_names(dash_duo, expected: list[str], timeout: float = 15):
    from dash.testing.wait import until

    until(lambda: grid_names(dash_duo) == sorted(expected), timeout=timeout,
          msg=lambda: f"grid shows {grid_names(dash_duo)}, expected {sorted(expected)}")


def test_list_filters_and_links_to_a_robot(dash_duo, start_app, engine):
    with engine.begin() as c:
        insert_robot(c, "r-1", name="Alpha", environment="production", last_heartbeat=ago(seconds=2),
                     capabilities=["browser", "desktop"], tags=["eu"], metrics={"cpu_percent": 35, "memory_percent": 60})
        insert_robot(c, "r-2", name="Bravo", environment="production", last_heartbeat=ago(minutes=25),
                     capabilities=["desktop"], tags=["us"])
        insert_robot(c, "r-3", name="Charlie", environment="finance", last_heartbeat=ago(seconds=1),
                     capabilities=["browser"], tags=["eu"], status="busy")
        insert_robot(c, "r-4", name="Delta", environment="finance", status="maintenance", last_heartbeat=ago(days=1))
        insert_job(c, status="running", robot_id="r-3", workflow_name="Month End", created_at=ago(minutes=5),
                   started_at=ago(minutes=4))
        insert_job(c, status="completed", robot_id="r-1", created_at=ago(minutes=30), started_at=ago(minutes=30),
                   completed_at=ago(minutes=29))

    start_app(path="/robots?capability=browser")
    wait_for_names(dash_duo, ["Alpha", "Charlie"])
    # Bravo went silent: it stands out above the list even though the filter hides its row.
    dash_duo.wait_for_contains_text("#robots-summary", "2 robots")

    # Filter by environment through the dropdown: the list and the URL follow.
    dropdown = dash_duo.find_element("#robots-filter-environment")
    dropdown.click()
    search = dash_duo.wait_for_element("#robots-filter-environment input, .dash-dropdown-search, input[type=search]")
    search.send_keys("finance")
    search.send_keys(Keys.ENTER)
    search.send_keys(Keys.ESCAPE)
    wait_for_names(dash_duo, ["Charlie"])
    assert "environment=finance" in dash_duo.driver.current_url
    assert "capability=browser" in dash_duo.driver.current_url

    # The current job links to its job page.
    dash_duo.wait_for_element("#robots-grid a[href^='/executions/']")

    # Malformed parameters are named and ignored.
    dash_duo.wait_for_page(url=dash_duo.server_url + "/robots?status=bogus&sort=nope")
    dash_duo.wait_for_contains_text("#robots-notes", "Unknown status 'bogus' ignored", timeout=15)
    assert "Cannot sort by 'nope'" in dash_duo.find_element("#robots-notes").text
    wait_for_names(dash_duo, ["Alpha", "Bravo", "Charlie", "Delta"])

    # Without filters, the silent robot stands out with how long it has been silent.
    dash_duo.wait_for_page(url=dash_duo.server_url + "/robots?sort=-heartbeat_age_s")
    wait_for_names(dash_duo, ["Alpha", "Bravo", "Charlie", "Delta"])
    dash_duo.wait_for_contains_text("#robots-silent-alert", "Bravo")
    assert "silent 25 min" in dash_duo.find_element("#robots-silent-alert").text
    assert dash_duo.driver.find_elements(By.CSS_SELECTOR, "#robots-grid .robot-row-silent")
    # Sorted by heartbeat age from the URL, oldest first (the maintenance robot's day-old one).
    assert grid_names(dash_duo, ordered=True) == ["Delta", "Bravo", "Alpha", "Charlie"]
    save_screenshot(dash_duo, "robots_list")

    # A robot's name links to its page.
    dash_duo.driver.find_element(By.LINK_TEXT, "Alpha").click()
    dash_duo.wait_for_contains_text("#robot-header", "Alpha", timeout=15)
    assert dash_duo.driver.current_url.split("?")[0].endswith("/robots/r-1")
    assert console_errors(dash_duo) == []


def test_robot_page_renders_its_charts(dash_duo, start_app, engine):
    now = utcnow()
    with engine.begin() as c:
        insert_robot(c, "bot-7", name="Robot Seven", status="busy", last_heartbeat=ago(seconds=4),
                     max_concurrent_jobs=2, metrics={"cpu_percent": 55, "memory_percent": 40, "disk_percent": 71},
                     capabilities=["browser"], tags=["eu"])
        insert_robot(c, "no-hb", name="No History", status="online", last_heartbeat=ago(seconds=4),
                     metrics={"cpu_percent": 12})
        for i in range(0, 6 * 360):  # six hours of heartbeats every 10 s, with a 20-minute outage
            at = now - timedelta(hours=6) + timedelta(seconds=10 * i)
            if timedelta(hours=2) <= at - (now - timedelta(hours=6)) < timedelta(hours=2, minutes=20):
                continue
            insert_heartbeat(c, "bot-7", at, status="busy" if i % 500 < 300 else "online",
                             metrics={"cpu_percent": 20 + (i % 60), "memory_percent": 45, "disk_percent": 70})
        for k in range(12):
            started = now - timedelta(hours=5, minutes=-25 * k)
            insert_job(c, status="failed" if k % 4 == 0 else "completed", robot_id="bot-7",
                       workflow_id=f"wf-{k % 3}", workflow_name=f"Workflow {k % 3}", created_at=started,
                       started_at=started, completed_at=started + timedelta(minutes=18),
                       error_message="TimeoutError: portal" if k % 4 == 0 else None)
        insert_job(c, status="running", robot_id="bot-7", workflow_name="Long Run", created_at=ago(minutes=30),
                   started_at=ago(minutes=29))

    start_app(path="/robots/bot-7?range=24h")
    dash_duo.wait_for_contains_text("#robot-header", "Robot Seven", timeout=15)
    header = dash_duo.find_element("#robot-header").text
    assert "Busy" in header and "Last heartbeat" in header and "Long Run" in header
    for graph in ("robot-timeline", "robot-metrics", "robot-utilization", "robot-heatmap"):
        dash_duo.wait_for_element(f"#{graph} .main-svg", timeout=15)
    dash_duo.wait_for_element("#robot-timeline .barlayer .point")  # bands drawn
    dash_duo.wait_for_element("#robot-metrics .scatterlayer .trace")
    dash_duo.wait_for_contains_text("#robot-errors", "TimeoutError")
    dash_duo.wait_for_contains_text("#robot-workflows", "Workflow 1")
    dash_duo.wait_for_contains_text("#robot-latest", "Long Run")
    assert dash_duo.find_element("#robot-count-failed .job-count-value").text == "3"
    assert dash_duo.find_element("#robot-count-completed .job-count-value").text == "9"
    dash_duo.driver.set_window_size(1400, 2700)
    save_screenshot(dash_duo, "robot_page")
    dash_duo.driver.set_window_size(1400, 1000)

    # Another window: the URL follows.
    labels = dash_duo.driver.find_elements(By.CSS_SELECTOR, "#robot-range label")
    next(lbl for lbl in labels if lbl.text == "7 days").click()
    from dash.testing.wait import until
    until(lambda: "range=7d" in dash_duo.driver.current_url, timeout=10)
    dash_duo.wait_for_element("#robot-timeline .main-svg")

    # A robot whose orchestrator writes no heartbeat history (and a range that does not exist).
    dash_duo.wait_for_page(url=dash_duo.server_url + "/robots/no-hb?range=99y")
    dash_duo.wait_for_contains_text(".robot-page", "Unknown range '99y'", timeout=15)
    dash_duo.wait_for_contains_text("#robot-header", "No History", timeout=15)
    dash_duo.wait_for_contains_text("#robot-metrics", "No heartbeat history", timeout=15)
    dash_duo.wait_for_contains_text("#robot-timeline", "No heartbeat history")
    assert "CPU 12 %" in dash_duo.find_element("#robot-header").text

    # Unknown ids, including odd characters, give a clear page.
    for odd, shown in (("%27;drop", "';drop"), (quote("no such bot", safe=""), "no such bot"),
                       ("%3Cscript%3E", "<script>")):
        dash_duo.wait_for_page(url=dash_duo.server_url + "/robots/" + odd)
        dash_duo.wait_for_text_to_equal("#robot-not-found h1", "No such robot", timeout=15)
        assert dash_duo.find_element("#robot-not-found code").text == shown
    assert console_errors(dash_duo) == []
