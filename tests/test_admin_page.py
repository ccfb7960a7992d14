"""The admin page and display tokens: made and revoked in the browser; other roles kept out."""
from __future__ import annotations

import re

from selenium.webdriver.support.ui import WebDriverWait

from data import users
from tests.conftest import console_errors, login


def create_token_in_page(dash_duo, name: str) -> str:
    field = dash_duo.wait_for_element("#token-name")
    field.clear()
    field.send_keys(name)
    dash_duo.find_element("#token-create").click()
    dash_duo.wait_for_contains_text("#token-created", "created", timeout=15)
    return dash_duo.find_element("#token-url").text


def test_display_token_opens_a_session_and_revocation_ends_it(dash_duo, start_app):
    app = start_app(path="/admin", role="admin")
    engine = app.server.extensions["fleet_monitor"].engine
    url = create_token_in_page(dash_duo, "Ops room TV")
    token = re.fullmatch(r"/display\?token=(\S+)", url).group(1)
    dash_duo.wait_for_contains_text("#token-list", "Ops room TV")
    assert token not in dash_duo.find_element("#token-list").text

    # A fresh browser session: the token opens the wall display without a sign-in form.
    dash_duo.driver.delete_all_cookies()
    dash_duo.driver.get(dash_duo.server_url + url)
    dash_duo.wait_for_contains_text("#display-updated", "Updated", timeout=15)
    assert "token=" not in dash_duo.driver.current_url

    # Revoked: the screen's next refresh is refused and it lands on the sign-in page.
    token_id = int(users.list_display_tokens(engine).iloc[0]["id"])
    users.revoke_display_token(engine, token_id)
    WebDriverWait(dash_duo.driver, 20).until(lambda d: "/login" in d.current_url)
    dash_duo.driver.get(dash_duo.server_url + url)
    dash_duo.wait_for_contains_text(".alert", "not valid")


def test_revoke_button(dash_duo, start_app):
    start_app(path="/admin", role="admin")
    create_token_in_page(dash_duo, "Lobby screen")
    dash_duo.wait_for_element("#token-list button").click()
    dash_duo.wait_for_contains_text("#token-list", "revoked", timeout=15)
    dash_duo.wait_for_contains_text("#token-created", "revoked")
    assert console_errors(dash_duo) == []


def test_admin_page_is_for_admins_only(dash_duo, start_app):
    start_app(path="/", role="operator")
    assert "Admin" not in dash_duo.find_element("#app-navbar").text
    dash_duo.driver.get(dash_duo.server_url + "/admin")
    dash_duo.wait_for_contains_text("#page-content", "needs the admin role", timeout=15)
    assert not dash_duo.driver.find_elements("css selector", "#token-create")
