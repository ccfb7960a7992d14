"""Sign-in, sessions, roles and tokens against the real app and database."""
from __future__ import annotations

import time
from datetime import timedelta

import jwt
import pytest
from flask_jwt_extended import create_access_token

from tests.conftest import TEST_JWT_SECRET, TEST_USERS, api_token, console_errors, login

PAGES = ["/", "/robots", "/executions", "/analytics"]
DASH_GETS = ["/_dash-layout", "/_dash-dependencies"]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(app_client):
    """Headers for each kind of caller in the access matrix."""
    app = app_client.application
    with app.app_context():
        expired = create_access_token("ada", additional_claims={"roles": ["viewer", "operator", "admin"]},
                                      expires_delta=timedelta(seconds=-30))
    claims = {"sub": "ada", "roles": ["viewer", "operator", "admin"], "type": "access", "jti": "x",
              "fresh": False, "iat": 1, "nbf": 1, "exp": 4102444800}
    return {
        "none": {},
        "expired": bearer(expired),
        "forged": bearer(jwt.encode(claims, "not-the-secret" * 4, algorithm="HS256")),
        "alg-none": bearer(jwt.encode(claims, None, algorithm="none")),
        "viewer": bearer(api_token(app_client, "viewer")),
        "operator": bearer(api_token(app_client, "operator")),
        "admin": bearer(api_token(app_client, "admin")),
    }


@pytest.mark.parametrize("who", ["none", "expired", "forged", "alg-none", "viewer", "operator", "admin"])
def test_access_matrix(app_client, tokens, who):
    allowed = who in ("viewer", "operator", "admin")
    for path in PAGES:
        response = app_client.get(path, headers=tokens[who])
        if allowed:
            assert response.status_code == 200, path
        else:
            assert response.status_code == 302, path
            assert response.headers["Location"].startswith("/login?next=")
    for path in DASH_GETS:
        response = app_client.get(path, headers=tokens[who])
        assert response.status_code == (200 if allowed else 401), path
        if not allowed:
            assert response.get_json()["error"]["code"] == "unauthorized"
    response = app_client.post("/_dash-update-component", json={}, headers=tokens[who])
    if not allowed:
        assert response.status_code == 401
    # Static files stay public.
    assert app_client.get("/assets/style.css", headers=tokens[who]).status_code == 200


# API routes: (method, path, lowest role allowed). Actions on an unknown job answer 404 once allowed.
MISSING = "00000000-0000-0000-0000-000000000000"
API_ROUTES = [
    ("GET", "/api/v1/metrics/fleet", "viewer"), ("GET", "/api/v1/metrics/queue", "viewer"),
    ("GET", "/api/v1/metrics/robots", "viewer"), ("GET", "/api/v1/metrics/jobs", "viewer"),
    ("GET", "/api/v1/metrics/analytics", "viewer"),
    ("POST", f"/api/v1/jobs/{MISSING}/cancel", "operator"), ("POST", f"/api/v1/jobs/{MISSING}/retry", "operator"),
    ("POST", f"/api/v1/dlq/{MISSING}/requeue", "operator"), ("GET", "/api/v1/admin/audit", "admin"),
]
RANK = {"viewer": 0, "operator": 1, "admin": 2}


@pytest.mark.parametrize("who", ["none", "expired", "forged", "alg-none", "viewer", "operator", "admin"])
def test_api_access_matrix(app_client, tokens, who):
    for method, path, needed in API_ROUTES:
        response = app_client.open(path, method=method, headers=tokens[who], json={} if method == "POST" else None)
        if who not in RANK:
            expected = {401}
        elif RANK[who] < RANK[needed]:
            expected = {403}
        else:
            expected = {200, 404}
        assert response.status_code in expected, (method, path, response.status_code)
        assert "error" in response.get_json() or response.status_code == 200
    # /metrics is open unless FLEET_METRICS_TOKEN is set (tested with the exporter).
    assert app_client.get("/metrics", headers=tokens[who]).status_code == 200


def test_security_headers(app_client):
    response = app_client.get("/login")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Referrer-Policy"] == "same-origin"


def sign_in(client, role="viewer", next_path="/"):
    username, password = TEST_USERS[role]
    return client.post("/login", data={"username": username, "password": password, "next": next_path})


def test_cookie_session_requires_csrf_on_writes(app_client):
    response = sign_in(app_client)
    assert response.status_code == 302
    cookies = {c.key: c for c in app_client._cookies.values()}
    assert cookies["access_token_cookie"].http_only and cookies["refresh_token_cookie"].http_only
    assert cookies["access_token_cookie"].same_site == "Lax"
    csrf = cookies["csrf_access_token"].value
    assert app_client.get("/_dash-layout").status_code == 200  # a read needs no CSRF header
    refused = app_client.post("/_dash-update-component", json={})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "csrf_failed"
    accepted = app_client.post("/_dash-update-component", json={}, headers={"X-CSRF-TOKEN": csrf})
    assert accepted.status_code not in (401, 403)
    # Sign-out without the CSRF field is refused and the session stays valid.
    assert app_client.post("/logout").status_code == 403
    assert app_client.get("/_dash-layout").status_code == 200


def test_logout_revokes_the_token_server_side(app_client):
    sign_in(app_client)
    access = app_client.get_cookie("access_token_cookie").value
    csrf = app_client.get_cookie("csrf_access_token").value
    response = app_client.post("/logout", data={"csrf_token": csrf})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    # Even a client that kept the old token is refused: the blocklist lives in the database.
    assert app_client.get("/_dash-layout", headers=bearer(access)).status_code == 401


def test_wrong_password_and_unknown_user_look_the_same_then_throttle(app_client):
    wrong = app_client.post("/login", data={"username": "vera", "password": "nope"})
    unknown = app_client.post("/login", data={"username": "nobody", "password": "nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_data(as_text=True).replace("vera", "X") == unknown.get_data(as_text=True).replace("nobody", "X")
    for _ in range(4):
        app_client.post("/login", data={"username": "vera", "password": "nope"})
    # Five failures: now even the right password is refused for a while.
    assert sign_in(app_client, "viewer").status_code == 429
    assert sign_in(app_client, "operator").status_code == 302  # another user is not affected


@pytest.mark.parametrize("target,expected", [("/robots?status=busy", "/robots?status=busy"),
                                             ("//evil.example/", "/"), ("https://evil.example/", "/"),
                                             ("/\\evil.example", "/")])
def test_only_local_next_targets(app_client, target, expected):
    assert sign_in(app_client, "viewer", target).headers["Location"] == expected


def test_api_login_and_tokens(app_client):
    username, password = TEST_USERS["operator"]
    body = app_client.post("/api/v1/auth/login", json={"username": username, "password": password}).get_json()
    claims = jwt.decode(body["access_token"], TEST_JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "otto" and claims["roles"] == ["viewer", "operator"] and claims["exp"] > claims["iat"]
    refreshed = app_client.post("/api/v1/auth/refresh", headers=bearer(body["refresh_token"]))
    assert refreshed.status_code == 200 and refreshed.get_json()["access_token"]
    assert app_client.post("/api/v1/auth/login", json={"username": 1}).status_code == 400
    assert app_client.post("/api/v1/auth/refresh", headers=bearer(body["access_token"])).status_code == 401


def test_disabled_user_is_refused_at_once(app_client):
    from data.users import set_enabled

    token = api_token(app_client, "viewer")
    assert app_client.get("/_dash-layout", headers=bearer(token)).status_code == 200  # sign-in state cached
    app = app_client.application
    with app.app_context():  # as the admin page, the API and the `flask users` commands do
        set_enabled(app.extensions["fleet_monitor"].engine, "vera", False)
    assert app_client.get("/_dash-layout", headers=bearer(token)).status_code == 401


def test_a_change_behind_the_apps_back_takes_effect_within_seconds(app_client):
    import sqlalchemy as sa

    from data.users import AUTH_STATE_SECONDS

    token = api_token(app_client, "viewer")
    assert app_client.get("/_dash-layout", headers=bearer(token)).status_code == 200
    engine = app_client.application.extensions["fleet_monitor"].engine
    with engine.begin() as conn:  # plain SQL: the app is not told
        conn.execute(sa.text("UPDATE fleet_monitor.users SET enabled = false WHERE username = 'vera'"))
    started = time.monotonic()
    while app_client.get("/_dash-layout", headers=bearer(token)).status_code == 200:
        assert time.monotonic() - started < 3 * AUTH_STATE_SECONDS + 1
        time.sleep(0.1)


def test_sign_in_state_costs_one_statement_for_many_requests(app_client):
    import sqlalchemy as sa

    from data.users import create_user

    token = api_token(app_client, "viewer")
    engine = app_client.application.extensions["fleet_monitor"].engine
    statements = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    for _ in range(20):
        assert app_client.get("/_dash-layout", headers=bearer(token)).status_code == 200
    assert sum("fleet_monitor.users" in s for s in statements) <= 1
    # A user created a moment ago (here behind the app's back) is not refused by the cached state.
    create_user(engine, "newcomer", "newcomer-pass-1", "viewer")
    response = app_client.post("/api/v1/auth/login", json={"username": "newcomer", "password": "newcomer-pass-1"})
    assert app_client.get("/_dash-layout", headers=bearer(response.get_json()["access_token"])).status_code == 200


def test_browser_login_logout(dash_duo, start_app):
    start_app(role=None)
    login(dash_duo, "viewer", "/")
    dash_duo.wait_for_contains_text(".user-menu", "vera")
    dash_duo.wait_for_element("[aria-label='Robots online']")
    dash_duo.find_element("#logout-button").click()
    dash_duo.wait_for_element("#login-submit")
    assert "/login" in dash_duo.driver.current_url
    dash_duo.driver.get(dash_duo.server_url + "/robots")
    dash_duo.wait_for_element("#login-submit")
    assert "next=%2Frobots" in dash_duo.driver.current_url
    assert console_errors(dash_duo) == []


def test_nul_characters_are_refused_before_anything_reads_them(app_client):
    headers = bearer(api_token(app_client, "viewer"))
    for path in ("/api/v1/metrics/jobs?q=a%00b", "/api/v1/metrics/robots/r%00x", "/robots/r%00x", "/executions?q=%00"):
        response = app_client.get(path, headers=headers)
        assert response.status_code == 400, path
        assert response.get_json()["error"]["code"] == "invalid_character"
    body = app_client.post("/_dash-update-component", data='{"inputs": "\\u0000"}',
                           content_type="application/json", headers=headers)
    assert body.status_code == 400
