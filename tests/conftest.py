"""Shared fixtures: a real PostgreSQL (embedded, or TEST_DATABASE_URL) and a real browser.

Every test that touches data gets a fresh database of its own, so tests never see each
other's rows and can compute expected values from exactly what they inserted.
"""
from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from config import Settings  # noqa: E402
from data.db import make_engine, sqlalchemy_url  # noqa: E402
from data.schema import ensure_schema  # noqa: E402
from tests.helpers import temporary_database  # noqa: E402

ARTIFACTS = ROOT / "tests" / "artifacts"
TEST_JWT_SECRET = "test-secret-" + "x" * 40
# One user per role, created in the test database when an app starts.
TEST_USERS = {"viewer": ("vera", "viewer-pass-1"), "operator": ("otto", "operator-pass-1"),
              "admin": ("ada", "admin-pass-1")}


def pytest_setup_options():
    """Chrome options for dash_duo: Debian's Chromium, headless, no network chatter."""
    from selenium.webdriver.chrome.options import Options

    options = Options()
    if Path("/usr/bin/chromium").exists():
        options.binary_location = "/usr/bin/chromium"
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    return options


@pytest.fixture(scope="session")
def pg_admin_url():
    """URL of a PostgreSQL server where tests may create and drop databases."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield sqlalchemy_url(url)
        return
    import pgserver

    data_dir = tempfile.mkdtemp(prefix="fleet-test-pg-", dir="/tmp")
    server = pgserver.get_server(data_dir, cleanup_mode="delete")
    try:
        yield sqlalchemy_url(server.get_uri())
    finally:
        server.cleanup()


@pytest.fixture
def db_url(pg_admin_url):
    """A fresh, empty database for one test; dropped afterwards."""
    with temporary_database(pg_admin_url) as url:
        yield url


@pytest.fixture
def raw_engine(db_url):
    """An engine on the fresh database, before the app has created anything."""
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(raw_engine):
    """An engine on the fresh database with the orchestrator tables and our indexes."""
    ensure_schema(raw_engine)
    return raw_engine


@pytest.fixture
def test_settings(db_url):
    """Settings for an app on the test database: no demo data, no simulator, no rollup
    maintenance (tests that need the rollups refresh them), fast refresh."""
    return Settings.from_env(database_url=db_url, simulator=False, refresh_interval_ms=1000,
                             jwt_secret=TEST_JWT_SECRET, rollup_interval_seconds=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_test_users(engine) -> None:
    from data.users import UserError, create_user

    for role, (username, password) in TEST_USERS.items():
        try:
            create_user(engine, username, password, role)
        except UserError:
            pass


def login(dash_duo, role: str = "admin", path: str = "/") -> None:
    """Sign in through the real form and wait for the Dash page at `path`."""
    from urllib.parse import quote

    username, password = TEST_USERS[role]
    dash_duo.driver.get(f"{dash_duo.server_url}/login?next={quote(path)}")
    dash_duo.wait_for_element("#username").send_keys(username)
    dash_duo.find_element("#password").send_keys(password)
    dash_duo.find_element("#login-submit").click()
    dash_duo.wait_for_element(dash_duo.dash_entry_locator, timeout=15)


@pytest.fixture
def start_app(dash_duo, test_settings):
    """Start the real app on the test database in dash_duo, signed in as `role`; returns the app.

    role=None leaves the browser signed out (at the sign-in page)."""

    def start(settings: Settings | None = None, path: str = "/", role: str | None = "admin"):
        from app import create_app

        app = create_app(settings or test_settings)
        create_test_users(app.server.extensions["fleet_monitor"].engine)
        dash_duo.start_server(app, navigate=False, port=free_port())
        dash_duo._url = dash_duo.server.url  # set without navigating: the first page is /login
        if role:
            login(dash_duo, role, path)
        return app

    return start


@pytest.fixture
def app_client(test_settings):
    """A Flask test client of the real app (no browser), with the test users created."""
    from app import create_app

    app = create_app(test_settings)
    create_test_users(app.server.extensions["fleet_monitor"].engine)
    return app.server.test_client()


def api_token(client, role: str = "viewer") -> str:
    """An API access token for the test user of `role`."""
    username, password = TEST_USERS[role]
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["access_token"]


def console_errors(dash_duo) -> list:
    """Browser console entries of level SEVERE (errors)."""
    return [e for e in (dash_duo.get_logs() or []) if e.get("level") == "SEVERE"]


def save_screenshot(dash_duo, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    dash_duo.driver.save_screenshot(str(path))
    return path


@pytest.fixture
def database_outage(pg_admin_url, db_url):
    """Cut the test database off (refuse and drop connections) and bring it back."""
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    name = make_url(db_url).database

    def set_reachable(reachable: bool):
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {"true" if reachable else "false"}'))
            if not reachable:
                conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                             {"n": name})

    try:
        yield set_reachable
    finally:
        set_reachable(True)
        admin.dispose()


def choose_option(dash_duo, selector: str, search: str, option_text: str) -> None:
    """Pick an option of a (long, searchable) dcc.Dropdown the way a user does: open, type, click."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    dash_duo.find_element(selector).click()
    box = dash_duo.wait_for_element(".dash-dropdown-content input.dash-dropdown-search")
    box.clear()
    box.send_keys(search)

    def matching(driver):
        for option in driver.find_elements(By.CSS_SELECTOR, ".dash-dropdown-options .dash-dropdown-option"):
            if option.text == option_text:
                return option
        return False

    WebDriverWait(dash_duo.driver, 10).until(matching).click()
