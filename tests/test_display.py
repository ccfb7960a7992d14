"""The wall display in a real browser: fills the screen, rotates, says when data is stale."""
from __future__ import annotations

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from components.display import DisplayOptions, attention_items, parse_display_options
from tests.conftest import console_errors, save_screenshot
from tests.helpers import ago, insert_job, insert_robot


def set_viewport(dash_duo, width, height):
    dash_duo.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def scroll_size(dash_duo):
    return dash_duo.driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")


@pytest.fixture
def small_fleet(engine):
    with engine.begin() as c:
        for i in range(1, 31):
            insert_robot(c, f"robot-{i:02d}", name=f"PRD-BOT-{i:02d}", status="busy" if i % 3 == 0 else "online",
                         last_heartbeat=ago(seconds=3))
        insert_robot(c, "robot-99", name="PRD-BOT-99", status="online", last_heartbeat=ago(minutes=20))
        insert_job(c, status="pending", created_at=ago(minutes=2))
        for i in range(6):
            insert_job(c, status="failed", workflow_name="Invoice Processing", created_at=ago(minutes=20),
                       started_at=ago(minutes=19), completed_at=ago(minutes=18), error_message="TimeoutError: x")
    return engine


def test_parse_options_reports_bad_values():
    options, problems = parse_display_options({"panels": "robots,bogus", "rotate": "ten", "queue_alert": "5"})
    assert options.panels == ("robots",) and options.rotate_seconds == 0 and options.queue_alert == 5
    assert any("bogus" in p for p in problems) and any("rotate" in p for p in problems)


def test_attention_is_said_in_words():
    kpis = {"offline_robots": 2, "error_robots": 0, "queue_depth": 60}
    failures = {"failure_rate": 0.5, "failed": 6}
    items = attention_items(kpis, failures, DisplayOptions(queue_alert=50))
    assert items == ["2 robots offline", "Queue backing up: 60 waiting (alert at 50)",
                     "Failure rate 50 % in the last hour (6 failed)"]


@pytest.mark.parametrize("width,height", [(1920, 1080), (3840, 2160)])
def test_display_fills_the_screen_without_scrollbars(dash_duo, start_app, small_fleet, width, height):
    start_app(path="/display")
    set_viewport(dash_duo, width, height)
    dash_duo.wait_for_text_to_equal("[aria-label='Offline'] .d-value", "1", timeout=15)
    dash_duo.wait_for_contains_text("#display-attention", "1 robot offline")
    dash_duo.wait_for_contains_text("#display-failures", "Invoice Processing")
    dash_duo.wait_for_element("#display-queue .main-svg")
    assert "d-none" in dash_duo.find_element("#app-navbar").get_attribute("class").split()  # chrome-less
    assert scroll_size(dash_duo) == [width, height]
    save_screenshot(dash_duo, f"display-{width}x{height}")
    assert console_errors(dash_duo) == []


def test_stale_banner_follows_the_database(dash_duo, start_app, small_fleet, database_outage):
    start_app(path="/display")
    dash_duo.wait_for_contains_text("#display-updated", "Updated", timeout=15)
    dash_duo.wait_for_element("#display-stale.d-none")
    database_outage(False)
    # Refresh is 1 s in tests: stale after 2 s without data.
    dash_duo.wait_for_contains_text("#display-stale", "DATA IS STALE", timeout=20)
    assert "is-stale" in dash_duo.find_element("#display-root").get_attribute("class")
    save_screenshot(dash_duo, "display-stale")
    database_outage(True)
    dash_duo.wait_for_element("#display-stale.d-none", timeout=20)
    assert "is-stale" not in dash_duo.find_element("#display-root").get_attribute("class")


def test_rotation_moves_between_panels(dash_duo, start_app, small_fleet):
    start_app(path="/display?rotate=2&panels=tiles,robots,queue")

    def visible():
        # One read of all panels at once, so a rotation between two reads cannot mislead the test.
        return dash_duo.driver.execute_script(
            "return ['robots', 'queue', 'failures', 'sla'].filter(function (p) {"
            " return !document.getElementById('display-panel-' + p).classList.contains('d-none'); });")

    dash_duo.wait_for_element("#display-tiles .d-tile", timeout=15)
    seen = set()

    def both_seen(_driver):
        shown = visible()
        assert len(shown) == 1 and shown[0] in ("robots", "queue"), shown
        seen.add(shown[0])
        return seen == {"robots", "queue"}

    WebDriverWait(dash_duo.driver, 10, poll_frequency=0.2).until(both_seen)
