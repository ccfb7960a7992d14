"""Theme and time zone: chosen once, remembered per browser, applied to pages and figures."""
from __future__ import annotations

from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import choose_option, console_errors, save_screenshot
from tests.helpers import ago, insert_job, insert_robot


def theme_of(dash_duo) -> str:
    return dash_duo.driver.execute_script("return document.documentElement.getAttribute('data-bs-theme')")


def figure_background(dash_duo, graph_id: str) -> str:
    """The figure's background, '' while it is not drawn (a refresh may be redrawing it)."""
    return dash_duo.driver.execute_script(
        f"const svg = document.querySelector('#{graph_id} .main-svg'); return svg ? svg.style.background : ''")


def seed(engine):
    with engine.begin() as c:
        insert_robot(c, "robot-a", status="online", last_heartbeat=ago(seconds=2))
        insert_job(c, status="completed", workflow_name="Invoice Processing", robot_id="robot-a",
                   created_at=ago(minutes=40), started_at=ago(minutes=39), completed_at=ago(minutes=38))


def test_theme_toggle_changes_page_and_figures_and_is_remembered(dash_duo, start_app, engine):
    seed(engine)
    start_app()
    dash_duo.wait_for_element("#overview-queue .main-svg", timeout=15)
    light_background = figure_background(dash_duo, "overview-queue")
    assert theme_of(dash_duo) in (None, "light")
    save_screenshot(dash_duo, "overview-light")

    dash_duo.find_element("#theme-toggle").click()
    # The page reloads with the figures drawn in the dark template.
    WebDriverWait(dash_duo.driver, 15).until(lambda d: theme_of(dash_duo) == "dark")
    WebDriverWait(dash_duo.driver, 15).until(
        lambda d: figure_background(dash_duo, "overview-queue") not in ("", light_background))
    save_screenshot(dash_duo, "overview-dark")

    dash_duo.driver.refresh()
    dash_duo.wait_for_element("#overview-queue .main-svg", timeout=15)
    assert theme_of(dash_duo) == "dark"
    assert figure_background(dash_duo, "overview-queue") != light_background
    assert console_errors(dash_duo) == []


def test_time_zone_choice_changes_times_and_axes(dash_duo, start_app, engine):
    seed(engine)
    start_app()
    dash_duo.wait_for_contains_text("#overview-feed", "Invoice Processing", timeout=15)
    choose_option(dash_duo, "#tz-choice", "UTC", "UTC")
    dash_duo.wait_for_contains_text("#overview-feed", "UTC", timeout=15)
    dash_duo.wait_for_contains_text("#overview-queue", "time (UTC)")

    choose_option(dash_duo, "#tz-choice", "New York", "America/New York")
    dash_duo.wait_for_contains_text("#overview-queue", "time (America/New_York)", timeout=15)
    feed = dash_duo.find_element("#overview-feed").text
    assert "UTC-05" in feed or "UTC-04" in feed  # New York's offset, shown beside every time
    assert dash_duo.find_element("#tz-label").text in ("UTC-5", "UTC-4")

    dash_duo.driver.refresh()  # remembered per browser
    dash_duo.wait_for_contains_text("#overview-queue", "time (America/New_York)", timeout=15)
    assert console_errors(dash_duo) == []


def test_screenshots_of_key_pages_in_both_themes(dash_duo, start_app, engine):
    """Saved as artifacts (tests/artifacts/) for a person to look at; the display is always dark."""
    seed(engine)
    start_app()
    for theme in ("light", "dark"):
        dash_duo.driver.execute_script(
            f"localStorage.setItem('theme', JSON.stringify('{theme}'));"
            f"document.cookie = 'fleet_theme={theme}; path=/';")
        for path, ready in (("/", "#overview-queue .main-svg"), ("/analytics", "#analytics-ts-fig .main-svg"),
                            ("/display", "#display-queue .main-svg")):
            dash_duo.driver.get(dash_duo.server_url + path)
            dash_duo.wait_for_element(ready, timeout=20)
            if path != "/display":
                assert theme_of(dash_duo) == theme
            save_screenshot(dash_duo, f"theme-{theme}-{path.strip('/') or 'overview'}")
    assert console_errors(dash_duo) == []
