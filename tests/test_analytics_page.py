"""Analytics page: the page's pure helpers and builders, then the page in a real browser."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from components import analytics as ac
from data import analytics as an
from tests.conftest import console_errors, save_screenshot
from tests.test_analytics_data import insert, job

NOW = datetime(2024, 11, 6, 15, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def page():
    """pages/analytics.py registers itself: import it under a Dash app that uses pages."""
    import dash

    dash.Dash(__name__, use_pages=True, pages_folder="")
    from pages import analytics

    return analytics


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------

def test_controls_become_the_url_and_back(page):
    q = page.controls_query("custom", "2024-03-25", "2024-03-31 12:00", "hour", "Europe/Berlin", "prod",
                            ["wf-a", "wf-b"], ["r-1"], ["completed"], 95, 90, "wf-a:120", True)
    f, problems = an.parse_filters(q, now=NOW)
    assert problems == []
    search = page.search_of(f)
    again, problems = an.parse_filters({k: v[0] for k, v in parse_qs(search[1:]).items()}, now=NOW)
    assert problems == [] and again == f
    # "Your time zone" is not written to the URL; presets leave from/to out.
    q = page.controls_query("30d", "2024-01-01", "", "day", page.VIEWER, None, [], [], [], None, "", "", False)
    assert q == {"range": "30d", "bucket": "day"}
    f, _ = an.parse_filters(q, default_tz="Asia/Tokyo", now=NOW)
    assert f.tz == "Asia/Tokyo" and page.search_of(f) == "?range=30d"


def test_clicked_workflow(page):
    assert page.clicked_workflow({"points": [{"customdata": ["wf-a", "12.0"]}]}) == "wf-a"
    assert page.clicked_workflow({"points": [{"customdata": "wf-b"}]}) == "wf-b"
    assert page.clicked_workflow({"points": [{"x": 1}]}) is None and page.clicked_workflow(None) is None
    assert page.clicked_workflow({"colId": "workflow_name", "rowId": "wf-c"}, grid=True) == "wf-c"
    assert page.clicked_workflow({"colId": "total_jobs", "rowId": "wf-c"}, grid=True) is None
    assert page.clicked_workflow({"colId": "workflow_name", "rowId": "__all__"}, grid=True) is None


def test_section_links_carry_the_filters(page):
    f, _ = an.parse_filters({"range": "30d", "workflow": "wf-a,wf-b", "robot": "r-1", "environment": "prod",
                             "status": "completed"}, now=NOW)
    links = {k: parse_qs(urlparse(v).query) for k, v in page.section_links(f).items()}
    assert set(links) == set(page.SECTIONS)
    for q in links.values():
        assert q["workflow"] == ["wf-a,wf-b"] and q["environment"] == ["prod"] and q["robot"] == ["r-1"]
    assert links["errors"]["status"] == ["failed"] and links["distribution"]["status"] == ["completed"]
    assert links["timeseries"]["range"] == ["30d"] and links["weekly"]["range"] == ["custom"]
    several, _ = an.parse_filters({"robot": "r-1,r-2"}, now=NOW)
    assert "robot" not in parse_qs(urlparse(page.section_links(several)["summary"]).query)


def test_tz_options_name_the_viewer_zone(page):
    options = page.tz_options("America/New_York")
    assert options[0] == {"label": "Your time zone (America/New_York)", "value": page.VIEWER}
    assert {"label": "Asia/Kolkata", "value": "Asia/Kolkata"} in options
    assert page.tz_options("not a zone")[0]["label"] == "Your time zone (UTC)"


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------

def annotation_texts(fig) -> list[str]:
    return [a.text for a in fig.layout.annotations]


def test_empty_data_says_no_jobs():
    empty = pd.DataFrame(columns=["bucket", "total_jobs", "completed", "failed", "success_rate",
                                  "p50_duration_ms", "p95_duration_ms"])
    assert ac.NO_JOBS in annotation_texts(ac.time_series_figure(empty, None, "UTC", "day"))
    assert ac.NO_JOBS in annotation_texts(ac.histogram_figure(pd.DataFrame(columns=["bin", "jobs"]), {}, False))
    assert ac.NO_JOBS in annotation_texts(ac.box_figure(pd.DataFrame(), False))
    assert "No finished jobs" in annotation_texts(ac.efficiency_figure(pd.DataFrame()))[0]
    assert "Not enough data" in annotation_texts(ac.anomaly_figure(pd.DataFrame(), 3.5))[0]
    assert ac.kpi_tiles({"total_jobs": 0}, 0.99)[1].children[1].children == "—"


def test_durations_are_not_rounded_to_seconds():
    assert ac.ms_text(850.25) == "850.2 ms" and ac.ms_text(12_345.678) == "12.35 s"
    assert ac.ms_exact(12_345.678) == "12,345.678 ms" and ac.seconds_text(1234.5) == "1.234 s"
    assert ac.ms_text(None) == "—" and ac.change_text(12.34) == "▲ +12.3 %" and ac.change_text(-5) == "▼ -5.0 %"


def test_time_series_labels_show_offsets_and_repeated_hour():
    buckets = pd.Series(pd.to_datetime(["2024-10-27T00:00Z", "2024-10-27T01:00Z"]))
    assert ac.local_labels(buckets, "Europe/Berlin", "hour") == [
        "Sun 2024-10-27 02:00 (UTC+02:00)", "Sun 2024-10-27 02:00 (UTC+01:00)"]


def test_histogram_percentile_marks_on_a_log_axis():
    hist = pd.DataFrame({"bin": [1, 2, 2], "bin_start_ms": [100.0, 1000.0, 1000.0], "bin_end_ms": [1000.0, 10000.0, 10000.0],
                         "status": ["completed", "completed", "failed"], "jobs": [3, 5, 2]})
    pcts = {"p50_duration_ms": 2000.0, "p90_duration_ms": 5000.0, "p95_duration_ms": 8000.0, "p99_duration_ms": 9900.0}
    fig = ac.histogram_figure(hist, pcts, log=True)
    assert fig.layout.xaxis.type == "log"
    steps = [t for t in fig.data if t.stackgroup == "hist"]
    assert [t.name for t in steps] == ["Completed", "Failed"]
    assert list(steps[0].x) == [0.1, 1.0, 10.0] and list(steps[0].y) == [3, 5, 5] and list(steps[1].y) == [0, 2, 2]
    lines = [t for t in fig.data if t.stackgroup is None]
    assert [t.x[0] for t in lines] == [2.0, 5.0, 8.0, 9.9]  # data coordinates for traces
    p50 = next(a for a in fig.layout.annotations if a.text.startswith("P50"))
    assert p50.x == pytest.approx(math.log10(2.0))  # annotations on log axes use log10


def test_chart_marks_carry_workflow_ids_for_cross_filtering():
    eff = pd.DataFrame([{"workflow_id": "wf-a", "workflow_name": "A", "rank": 1, "efficiency_score": 90.0,
                         **{f"{c}_points": 10.0 for c, *_ in ac.COMPONENTS}, **{f"{c}_score": 50.0 for c, *_ in ac.COMPONENTS}}])
    fig = ac.efficiency_figure(eff)
    assert all(t.customdata[0][0] == "wf-a" for t in fig.data if t.type == "bar")
    weekly = pd.DataFrame([{"is_total": False, "workflow_id": "wf-b", "workflow_name": "B", "this_week": 3,
                            "last_week": 4, "avg_4_weeks": 5.0}])
    assert all(list(t.customdata) == ["wf-b"] for t in ac.weekly_figure(weekly).data)


def test_weekly_rows_and_csv():
    weekly = pd.DataFrame([
        {"is_total": True, "workflow_id": None, "workflow_name": "All workflows", "this_week": 10,
         "last_week_to_date": 8, "pace_change_pct": 25.0, "last_week": 20, "avg_4_weeks": 16.0, "change_pct": 25.0,
         "success_rate_this_week": 0.9, "success_rate_last_week": 0.95, "p95_this_week_ms": 1234.5,
         "p95_last_week_ms": None},
        {"is_total": False, "workflow_id": "wf-a", "workflow_name": "A, with comma", "this_week": 10,
         "last_week_to_date": 8, "pace_change_pct": 25.0, "last_week": 20, "avg_4_weeks": 16.0, "change_pct": 25.0,
         "success_rate_this_week": 0.9, "success_rate_last_week": 0.95, "p95_this_week_ms": 1234.5,
         "p95_last_week_ms": 999.0},
    ])
    rows = ac.weekly_rows(weekly)
    assert rows[0]["row_id"] == "__all__" and rows[1]["row_id"] == "wf-a"
    assert rows[1]["p95_this_week_ms_text"] == "1.234 s" and rows[1]["change_pct_text"] == "▲ +25.0 %"
    csv = pd.read_csv(pd.io.common.StringIO(ac.weekly_csv(rows)))
    assert list(csv["workflow_name"]) == ["All workflows", "A, with comma"]
    assert csv.loc[1, "p95_this_week_ms"] == 1234.5 and csv.loc[1, "avg_4_weeks"] == 16.0


def test_sla_breaches_say_how_far_off():
    f, _ = an.parse_filters({}, now=NOW)
    stats = pd.DataFrame([
        {"workflow_id": "wf-a", "workflow_name": "A", "executions": 10, "success_rate": 0.9, "p95_duration_ms": 90_000.0},
        {"workflow_id": "wf-b", "workflow_name": "B", "executions": 10, "success_rate": 1.0, "p95_duration_ms": 1_000.0},
    ])
    text = str(ac.sla_breaches(an.sla_table(stats, f)))
    assert "9.00 percentage points below the 99.00 % target" in text
    assert "is 30.00 s (50.0 %) over the 1 min 00 s target" in text and "'B'" not in text
    assert "Every workflow meets" in str(ac.sla_breaches(an.sla_table(stats.iloc[1:], f)))


# ---------------------------------------------------------------------------------------------
# Browser
# ---------------------------------------------------------------------------------------------

def figure_js(dash_duo, graph_id: str, expr: str):
    return dash_duo.driver.execute_script(
        f"var g = document.querySelector('#{graph_id} .js-plotly-plot');"
        f"if (!g || !g.data || !g.layout) return null; try {{ return {expr}; }} catch (e) {{ return null; }}")


def wait_until(dash_duo, condition, timeout=30, message=""):
    WebDriverWait(dash_duo.driver, timeout, poll_frequency=0.2).until(lambda d: condition(), message)


def query(dash_duo) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(dash_duo.driver.current_url).query).items()}


def pick(dash_duo, selector: str, text: str, option_text: str):
    """Open a searchable dcc.Dropdown, type, click the option."""
    dash_duo.find_element(selector).click()
    dash_duo.wait_for_element(".dash-dropdown-search").send_keys(text)

    def option(driver):
        for el in driver.find_elements(By.CSS_SELECTOR, ".dash-dropdown-options .dash-dropdown-option"):
            if el.text == option_text:
                return el
        return False

    WebDriverWait(dash_duo.driver, 10).until(option).click()


def recent_rows():
    """Ten days of jobs for three workflows, up to an hour ago; wf-c fails a lot."""
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    rows = []
    for h in range(1, 240, 2):
        at = now - timedelta(hours=h, minutes=17)
        rows.append(job(at, wf="wf-a", name="Alpha", run_s=5 + h % 7))
        if h % 3:
            rows.append(job(at + timedelta(minutes=5), wf="wf-b", name="Beta", run_s=40 + h % 11))
        rows.append(job(at + timedelta(minutes=9), wf="wf-c", name="Gamma", run_s=90,
                        status="failed" if h % 4 == 1 else "completed", error="TimeoutError: portal"))
    return rows


def test_analytics_in_the_browser(dash_duo, start_app, engine):
    frame = insert(engine, recent_rows())
    start_app(path="/analytics?range=7d&bucket=day&tz=Mars/Olympus")

    # A bad value in the link is explained on the page (no traceback) and the page still works.
    dash_duo.wait_for_contains_text("#analytics-url-problems", "Unknown time zone 'Mars/Olympus'", timeout=20)
    wait_until(dash_duo, lambda: figure_js(dash_duo, "analytics-ts-fig", "g.data[0].x.length") == 8,
               message="7 days in day buckets: 8 buckets (the ends are partial)")
    week = frame[pd.to_datetime(frame["created_at"], utc=True) >= pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=7)]
    dash_duo.wait_for_contains_text("#analytics-kpis", f"{len(week):,}")

    # Bucket → hour: the chart gets hourly points and the URL says so.
    dash_duo.find_element("label[for='_dbcprivate_radioitems_analytics-bucket_input_hour']").click()
    wait_until(dash_duo, lambda: (figure_js(dash_duo, "analytics-ts-fig", "g.data[0].x.length") or 0) >= 168,
               message="hourly buckets")
    wait_until(dash_duo, lambda: query(dash_duo).get("bucket") == "hour")

    # Window → 24 h: about 25 hourly buckets.
    dash_duo.find_element("label[for='_dbcprivate_radioitems_analytics-range_input_24h']").click()
    wait_until(dash_duo, lambda: figure_js(dash_duo, "analytics-ts-fig", "g.data[0].x.length") in (24, 25))
    wait_until(dash_duo, lambda: query(dash_duo).get("range") == "24h")

    # Time zone → Asia/Kolkata (UTC+05:30): the axis and the bucket edges move to that zone.
    before = figure_js(dash_duo, "analytics-ts-fig", "g.data[0].x")
    pick(dash_duo, "#analytics-tz", "Kolkata", "Asia/Kolkata")
    wait_until(dash_duo, lambda: "Asia/Kolkata" in (figure_js(dash_duo, "analytics-ts-fig",
                                                                "g.layout.xaxis3.title.text") or ""))
    wait_until(dash_duo, lambda: query(dash_duo).get("tz") == "Asia/Kolkata")
    assert "(UTC+05:30)" in figure_js(dash_duo, "analytics-ts-fig", "g.data[0].customdata[1]")
    assert figure_js(dash_duo, "analytics-ts-fig", "g.data[0].x") != before
    save_screenshot(dash_duo, "analytics-24h-kolkata")

    # Click a workflow in a table: the page filters to it, and the URL carries it.
    cell = WebDriverWait(dash_duo.driver, 20).until(lambda d: next(
        (c for c in d.find_elements(By.CSS_SELECTOR, "#analytics-pct-grid .ag-cell[col-id='workflow_name']")
         if c.text == "Beta"), False))
    cell.click()
    wait_until(dash_duo, lambda: query(dash_duo).get("workflow") == "wf-b")
    day = frame[(frame["workflow_id"] == "wf-b")
                & (pd.to_datetime(frame["created_at"], utc=True) >= pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=24))]
    dash_duo.wait_for_contains_text("#analytics-kpis", f"{len(day):,} completed")
    wait_until(dash_duo, lambda: "workflow=wf-b" in dash_duo.find_element(
        "#analytics-card-errors .analytics-jobs-link").get_attribute("href"))

    # Back: the previous view (all workflows) comes back from the URL.
    dash_duo.driver.back()
    wait_until(dash_duo, lambda: "workflow" not in query(dash_duo))
    wait_until(dash_duo, lambda: figure_js(dash_duo, "analytics-eff-fig", "g.data[0].y.length") == 3)

    # Click a workflow in a chart (the efficiency ranking): the page filters to it.
    bar = dash_duo.find_element("#analytics-eff-fig .barlayer .trace:first-child .point:last-child path")
    ActionChains(dash_duo.driver).move_to_element(bar).pause(0.3).click().perform()
    top = figure_js(dash_duo, "analytics-eff-fig", "g.data[0].customdata[g.data[0].customdata.length - 1][0]")
    wait_until(dash_duo, lambda: query(dash_duo).get("workflow") == top)
    assert top in ("wf-a", "wf-b", "wf-c")
    wait_until(dash_duo, lambda: figure_js(dash_duo, "analytics-eff-fig", "g.data[0].y.length") == 1)
    wait_until(dash_duo, lambda: figure_js(dash_duo, "analytics-weekly-fig", "g.data[0].customdata.join()") == top)
    save_screenshot(dash_duo, "analytics-filtered")
    assert console_errors(dash_duo) == []
