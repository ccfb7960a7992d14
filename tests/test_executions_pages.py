"""Job history and job page in a real browser, on rows the test inserts."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlparse

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import console_errors, save_screenshot
from tests.helpers import insert_job, insert_robot, utcnow

ROWS = ".ag-center-cols-container .ag-row"


def grid_ids(dash_duo) -> set[str]:
    """Job ids of the grid's rows, rendered or not (the grid only draws the rows in view)."""
    return set(dash_duo.driver.execute_script("""
        try {
            const ids = [];
            window.dash_ag_grid.getApi('exec-grid').forEachNode(n => ids.push(n.id));
            return ids;
        } catch (e) { return []; }"""))


def wait_for_ids(dash_duo, expected: set[str], timeout: float = 15) -> None:
    WebDriverWait(dash_duo.driver, timeout).until(
        lambda _d: grid_ids(dash_duo) == expected,
        message=f"grid never showed exactly {len(expected)} expected rows",
    )


def click(dash_duo, selector: str) -> None:
    element = dash_duo.find_element(selector)
    # Bootstrap scrolls smoothly: jump instead, so the click lands where the button is.
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center', behavior: 'instant'});", element)
    element.click()


def query(dash_duo) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(dash_duo.driver.current_url).query).items()}


def test_filter_share_link_open_job(dash_duo, start_app, engine):
    now = utcnow()
    ids = {}
    with engine.begin() as c:
        insert_robot(c, "robot-1", last_heartbeat=now)
        for i in range(12):
            wf = "wf-invoice" if i % 2 else "wf-payroll"
            status = ["completed", "failed", "pending"][i % 3]
            created = now - timedelta(hours=1, minutes=7 * i)
            started = created + timedelta(seconds=20) if status != "pending" else None
            done = started + timedelta(seconds=30 + i) if started else None
            result = {}
            if status == "failed":
                result = {"node_executions": [
                    {"node_id": "open_portal", "node_type": "browser", "status": "completed",
                     "started_at": started.isoformat(), "completed_at": (started + timedelta(seconds=12)).isoformat()},
                    {"node_id": "download_invoices", "node_type": "http", "status": "completed",
                     "started_at": (started + timedelta(seconds=12)).isoformat(), "duration_ms": 9000},
                    {"node_id": "post_ledger", "node_type": "sap", "status": "failed",
                     "started_at": (started + timedelta(seconds=21)).isoformat(), "duration_ms": 4000,
                     "error": "TimeoutError: SAP did not answer"},
                ]}
            job_id = insert_job(c, status=status, workflow_id=wf, workflow_name=wf.replace("wf-", "").title(),
                                robot_id="robot-1" if started else None, created_at=created, started_at=started,
                                completed_at=done, error_message="TimeoutError: SAP did not answer"
                                if status == "failed" else None, result=result, variables={"batch": i})
            ids[job_id] = (wf, status)

    start_app(path="/executions")
    wait_for_ids(dash_duo, set(ids))
    dash_duo.wait_for_contains_text("#exec-count", "12 jobs")
    dash_duo.wait_for_contains_text("#exec-summary", "P95")
    save_screenshot(dash_duo, "executions")

    # Filter by status: the rows and the URL change.
    dash_duo.find_element("#exec-status input[value='failed']").click()
    failed = {j for j, (_wf, s) in ids.items() if s == "failed"}
    wait_for_ids(dash_duo, failed)
    assert query(dash_duo)["status"] == "failed"

    # And by workflow.
    dash_duo.select_dcc_dropdown("#exec-workflow", value="Invoice (wf-invoice)")
    expected = {j for j, (wf, s) in ids.items() if s == "failed" and wf == "wf-invoice"}
    assert expected and expected != failed
    wait_for_ids(dash_duo, expected)
    assert query(dash_duo) == {"status": "failed", "workflow": "wf-invoice"}
    dash_duo.wait_for_contains_text("#exec-count", f"{len(expected)} job")

    # The link restores the view in a fresh page.
    link = dash_duo.driver.current_url
    dash_duo.driver.get("about:blank")
    dash_duo.driver.get(link)
    wait_for_ids(dash_duo, expected)
    assert dash_duo.find_element("#exec-status input[value='failed']").is_selected()
    assert "Invoice" in dash_duo.find_element("#exec-workflow").text

    # A row opens the job page, whose step chart shows the three steps.
    job_id = sorted(expected)[0]
    dash_duo.find_element(f"#exec-grid {ROWS}[row-id='{job_id}'] [col-id='workflow_name']").click()
    dash_duo.wait_for_contains_text("#job-full-id", job_id, timeout=15)
    assert urlparse(dash_duo.driver.current_url).path == f"/executions/{job_id}"
    dash_duo.wait_for_element("#job-steps-chart .main-svg")
    bars = dash_duo.driver.find_elements(By.CSS_SELECTOR, "#job-steps-chart .barlayer .point")
    assert len(bars) == 3
    for node in ("open_portal", "download_invoices", "post_ledger"):
        assert node in dash_duo.find_element("#job-steps-chart").text
    dash_duo.wait_for_contains_text("#job-error-message", "TimeoutError: SAP did not answer")
    dash_duo.wait_for_element("#job-timeline .main-svg")
    dash_duo.driver.set_window_size(1400, 2600)
    save_screenshot(dash_duo, "job")
    assert console_errors(dash_duo) == []


def test_bad_links_paging_and_custom_range(dash_duo, start_app, engine):
    now = utcnow()
    with engine.begin() as c:
        ids = [insert_job(c, status="completed", workflow_id="wf-many", created_at=now - timedelta(minutes=i),
                          started_at=now - timedelta(minutes=i), completed_at=now) for i in range(62)]
        old = insert_job(c, status="failed", workflow_id="wf-old", created_at=now - timedelta(days=400),
                         error_message="Invoice 50%_off not found")

    start_app(path="/executions?status=exploded&range=5y&q=50%25_off")
    dash_duo.wait_for_contains_text("#exec-notice", "Unknown status 'exploded'")
    dash_duo.wait_for_contains_text("#exec-notice", "Unknown time range")
    assert dash_duo.find_element("#exec-q").get_attribute("value") == "50%_off"
    wait_for_ids(dash_duo, {old})  # the search is literal text; the bad values are ignored

    # Paging by keyset: older, newer, and the cursor in the URL.
    dash_duo.wait_for_page(url=dash_duo.server_url + "/executions")
    newest = ids[:50]  # ids[0] is the newest job
    wait_for_ids(dash_duo, set(newest))
    click(dash_duo, "#exec-next")
    wait_for_ids(dash_duo, set(ids[50:]) | {old})
    assert "after" in query(dash_duo)
    click(dash_duo, "#exec-prev")
    wait_for_ids(dash_duo, set(newest))

    # A custom range typed in the viewer's zone goes into the link as an instant with offset.
    dash_duo.driver.execute_script("window.scrollTo({top: 0, behavior: 'instant'});")
    dash_duo.select_dcc_dropdown("#exec-range", value="Custom…")
    box = dash_duo.find_element("#exec-to")
    day = (now - timedelta(days=200)).strftime("%Y-%m-%d")
    box.send_keys(f"{day} 00:00\n")
    wait_for_ids(dash_duo, {old})
    q = query(dash_duo)
    assert q["range"] == "custom" and q["to"].startswith(f"{day}T00:00:00") and "from" not in q

    dash_duo.wait_for_page(url=dash_duo.server_url + "/executions/not-a-job")
    dash_duo.wait_for_contains_text("#job-content", "No such job")
    dash_duo.wait_for_page(url=dash_duo.server_url + "/executions/3f2b8c1e-5d4a-4c1b-9a7e-2f6d8b0c1a23")
    dash_duo.wait_for_contains_text("#job-content", "No such job")
    save_screenshot(dash_duo, "job-not-found")
    assert console_errors(dash_duo) == []


def test_a_search_on_a_long_history_says_what_it_read_and_links_to_the_rest(dash_duo, start_app, engine):
    """More jobs with an error message than a search reads without a trigram index: the page says
    since when it searched, and its link searches the jobs before that."""
    import sqlalchemy as sa

    from data import jobs

    cap = jobs.SEARCH_SCAN_CAP
    now = utcnow().replace(microsecond=0)
    n = cap + 10  # job i (1 = newest) was created i seconds ago; jobs 5 and cap + 8 hold the needle
    with engine.begin() as c:
        c.execute(sa.text("DROP INDEX IF EXISTS fm_job_error_trgm"))  # as without pg_trgm
        c.execute(sa.text("""
            INSERT INTO job_queue (workflow_id, workflow_name, workflow_json, status, created_at, started_at,
                                   completed_at, error_message)
            SELECT 'wf-long', 'Long', '{}', 'failed', CAST(:now AS timestamptz) - i * interval '1 second',
                   CAST(:now AS timestamptz) - i * interval '1 second', CAST(:now AS timestamptz),
                   CASE WHEN i IN (5, :old) THEN 'Portal said NEEDLE ' || i ELSE 'portal timed out' END
            FROM generate_series(1, :n) AS i"""), {"now": now, "n": n, "old": cap + 8})
        ids = dict(c.execute(sa.text("SELECT error_message, id::text FROM job_queue WHERE error_message LIKE '%NEEDLE%'")).all())
    recent, older = ids["Portal said NEEDLE 5"], ids[f"Portal said NEEDLE {cap + 8}"]
    since = now - timedelta(seconds=cap)  # the cap-th newest job with a message

    start_app(path="/executions?q=needle")
    wait_for_ids(dash_duo, {recent})
    dash_duo.wait_for_contains_text("#exec-search-scope", "Search limited to recent jobs")
    text = dash_duo.find_element("#exec-search-scope").text
    shown = since.strftime("%Y-%m-%d %H:%M:%S")  # the browser's zone is UTC in these tests
    assert f"newest {cap:,} jobs with an error message" in text and shown in text, text
    dash_duo.wait_for_contains_text("#exec-count", f"1 job created since {shown}")
    save_screenshot(dash_duo, "executions-search-limited")

    dash_duo.find_element("#exec-search-scope a").click()
    wait_for_ids(dash_duo, {older})
    q = query(dash_duo)
    assert q["q"] == "needle" and q["range"] == "custom" and "from" not in q
    assert datetime.fromisoformat(q["to"]) == since
    dash_duo.wait_for_contains_text("#exec-search-scope", "every job")
    dash_duo.wait_for_contains_text("#exec-count", "1 job")
    assert console_errors(dash_duo) == []


# ---------------------------------------------------------------------------------------------
# Builders (no browser): every kind of job renders, figures say why they are empty
# ---------------------------------------------------------------------------------------------
def _story(**over):
    import pandas as pd

    t0 = utcnow() - timedelta(minutes=5)
    story = dict(
        job_id="3f2b8c1e-5d4a-4c1b-9a7e-2f6d8b0c1a23", source="job_queue", workflow_id="wf-a", workflow_name="A",
        status="completed", robot_id="robot-1", environment="production", priority=1, retry_count=1,
        max_retries=3, created_at=t0, started_at=t0 + timedelta(seconds=3), claimed_at=t0 + timedelta(seconds=3),
        completed_at=t0 + timedelta(seconds=10), visible_after=t0, error_message=None, error_type=None,
        result={}, variables={"a": [1, {"b": None}]}, metadata={}, workflow_json_bytes=10, as_of=utcnow(),
        queue_wait_ms=3000.0, duration_ms=7000.0, elapsed_ms=None, waiting_ms=None, lease_remaining_ms=None,
        node_executions=[], steps_source=None, dbos=None, dlq=None, neighbours=pd.DataFrame(), comparison=None,
    )
    story.update(over)
    return story


def test_job_page_builders_cover_every_kind_of_job():
    from dash import html

    from components import executions as ex

    now = utcnow()
    dbos_steps = [
        {"step": 1, "node_id": "fetch", "node_type": "DBOS step", "status": "completed", "started_at": None,
         "completed_at": None, "duration_ms": None, "error": None, "output": '{"n": 1}', "timing": "none"},
        {"step": 2, "node_id": "post", "node_type": "DBOS step", "status": "failed", "started_at": now,
         "completed_at": now + timedelta(milliseconds=20), "duration_ms": 20.0, "error": "ValueError: x",
         "output": None, "timing": "recorded"},
    ]
    stories = [
        _story(),
        _story(status="running", completed_at=None, duration_ms=None, elapsed_ms=60000.0,
               visible_after=now + timedelta(minutes=1), lease_remaining_ms=60000.0),
        _story(status="running", completed_at=None, duration_ms=None, elapsed_ms=60000.0,
               visible_after=now - timedelta(minutes=1), lease_remaining_ms=-60000.0),
        _story(status="pending", started_at=None, claimed_at=None, completed_at=None, duration_ms=None,
               queue_wait_ms=None, waiting_ms=5000.0, robot_id=None),
        _story(status="failed", error_message="TimeoutError: <b>portal</b>", error_type="TimeoutError",
               node_executions=dbos_steps, steps_source="dbos.operation_outputs",
               dbos={"workflow_status": "ERROR", "workflow_name": "a"},
               dlq={"id": "x", "pending": True, "retry_count": 3, "error_details": {"k": 1}}),
        _story(source="dlq", created_at=None, started_at=None, completed_at=None, status="failed",
               error_message="ConnectionError", error_type="ConnectionError", max_retries=None, priority=None),
    ]
    for story in stories:
        page = ex.job_page(story, "Europe/Paris", "light")
        assert isinstance(page, html.Div)
        ex.job_page(story, "UTC", "dark")
    empty = ex.steps_figure([], None, "UTC")
    assert empty.layout.annotations[0].text == "No steps recorded for this job"
    untimed = ex.steps_figure(dbos_steps[:1], None, "UTC")
    assert untimed.layout.annotations[0].text == "No step timings recorded for this job"
    drawn = ex.steps_figure(dbos_steps, now, "Europe/Paris")
    assert [y for t in drawn.data for y in t.y] == ["2. post (DBOS step)"]  # no time, no bar: listed in the table
    assert "fetch" in str(ex.steps_table(dbos_steps, "UTC", show_output=True))
    assert ex.timeline_figure(_story(created_at=None), "UTC").layout.annotations[0].text.startswith("No timestamps")


def test_grid_rows_and_count_text():
    import pandas as pd

    from components import executions as ex
    from data import jobs

    t = pd.Timestamp("2025-07-01 10:00:00.5", tz="UTC")
    frame = pd.DataFrame([{
        "job_id": "3f2b8c1e-5d4a-4c1b-9a7e-2f6d8b0c1a23", "workflow_id": "wf", "workflow_name": "W", "robot_id": None,
        "status": "failed", "priority": 3, "environment": "prod", "created_at": t, "started_at": t,
        "completed_at": pd.NaT, "queue_wait_ms": 0.0, "duration_ms": float("nan"), "retry_count": 1,
        "max_retries": 3, "error_type": "TimeoutError", "error_message": "x" * 400,
    }], columns=jobs.JOB_COLUMNS)
    row = ex.grid_rows(frame, "Europe/Paris")[0]
    assert row["short_id"] == "3f2b8c1e" and row["status_label"] == "✕ failed"
    assert row["created"] == "2025-07-01 12:00:00 UTC+0200"
    assert row["finished"] == "—" and row["duration"] == "—" and row["retries"] == "1 / 3"
    assert len(row["error_message"]) == 301
    assert ex.count_text({"count": 1, "exact": True}) == "1 job"
    assert ex.count_text({"count": None, "exact": False, "more_than": 10000, "estimate": 9_800_000}) == \
        "more than 10,000 jobs (about 9.8 million)"
    # A search that read the newest jobs only says since when, in the viewer's zone.
    since = datetime(2025, 7, 1, 8, 30, tzinfo=timezone.utc)
    limited = {"text": "sap", "method": "newest jobs", "complete": False, "since": since, "cap": 100_000}
    assert ex.count_text({"count": 3, "exact": True, "search": limited}, "Europe/Paris") == \
        "3 jobs created since 2025-07-01 10:30:00 UTC+0200"
    notice = str(ex.search_notice(limited, "Europe/Paris", "/executions?q=sap&range=custom&to=x"))
    assert "newest 100,000 jobs with an error message" in notice and "2025-07-01 10:30:00 UTC+0200" in notice
    assert "/executions?q=sap&range=custom&to=x" in notice
    complete = {**limited, "complete": True, "since": None}
    assert "every job" in str(ex.search_notice(complete, "UTC")) and ex.search_notice(None) is None
    assert ex.count_text({"count": 3, "exact": True, "search": complete}) == "3 jobs"
