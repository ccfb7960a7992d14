"""Sign-in and access control for every route.

Browsers hold an access and a refresh JWT in HttpOnly, SameSite cookies; every state-changing
cookie request (Dash callbacks included) must echo the CSRF cookie in a header (double submit).
Scripts send `Authorization: Bearer <token>`. A `before_request` guard lets only static files
and the sign-in routes through without a valid identity; a page request without one is sent to
/login, anything else gets a JSON 401.
"""
from __future__ import annotations

import html
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode, urlsplit

import flask
import jwt
from flask import g, jsonify, redirect, request
from flask_jwt_extended import (
    JWTManager, create_access_token, create_refresh_token, decode_token, get_jwt, set_access_cookies,
    set_refresh_cookies, unset_jwt_cookies, verify_jwt_in_request,
)
from flask_jwt_extended.exceptions import CSRFError, JWTExtendedException

from config import Settings
from data import users
from data.db import DatabaseUnavailable, read_row, write_row
from server.state import current

log = logging.getLogger(__name__)

ACCESS_LIFETIME = timedelta(minutes=15)
REFRESH_LIFETIME = timedelta(days=7)
DISPLAY_REFRESH_LIFETIME = timedelta(days=30)

# Reachable without an identity: static files and the routes that create one.
PUBLIC_PREFIXES = ("/assets/", "/_dash-component-suites/")
PUBLIC_PATHS = {"/login", "/auth/refresh", "/api/v1/auth/login", "/api/v1/auth/refresh", "/_favicon.ico",
                "/health", "/ready", "/favicon.ico", "/api/v1/openapi.json", "/api/v1/docs"}
# Answered with JSON (never a redirect to the sign-in page).
JSON_PREFIXES = ("/_dash", "/_reload-hash", "/api/", "/auth/", "/metrics")


class ConfigError(RuntimeError):
    """The app is configured in a way it must refuse to start with; the message says why."""


@dataclass(frozen=True)
class Identity:
    username: str
    role: str
    display: bool = False  # a wall-screen session started from a display token

    def can(self, role: str) -> bool:
        return users.has_role(self.role, role)


def identity() -> Identity | None:
    """Who is making the current request (set by the guard)."""
    return g.get("identity")


def error_response(status: int, code: str, message: str):
    """The one JSON error shape used by every route."""
    return jsonify({"error": {"status": status, "code": code, "message": message}}), status


def jwt_secret(settings: Settings, engine) -> str:
    if settings.jwt_secret:
        return settings.jwt_secret
    if not settings.embedded:
        raise ConfigError(
            "FLEET_JWT_SECRET is not set. Outside the embedded demo a secret is required to sign "
            "sessions: set FLEET_JWT_SECRET to a long random value (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))'`)."
        )
    # The demo keeps one random secret in its own database, shared by workers and restarts.
    write_row(
        engine,
        "INSERT INTO fleet_monitor.meta (key, value) VALUES ('jwt_secret', to_jsonb(CAST(:s AS text))) "
        "ON CONFLICT (key) DO NOTHING",
        {"s": secrets.token_urlsafe(48)},
    )
    return read_row(engine, "SELECT value #>> '{}' AS s FROM fleet_monitor.meta WHERE key = 'jwt_secret'")["s"]


def client_addr() -> str:
    return request.remote_addr or "unknown"


def safe_next(target: str | None) -> str:
    """Only local paths are honoured as a redirect target after sign-in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


def _tokens(username: str, role: str, display_token_id: int | None = None) -> tuple[str, str]:
    claims = {"roles": users.roles_of(role)}
    if display_token_id is not None:
        claims["dt"] = display_token_id
    refresh_lifetime = DISPLAY_REFRESH_LIFETIME if display_token_id is not None else REFRESH_LIFETIME
    return (
        create_access_token(username, additional_claims=claims),
        create_refresh_token(username, additional_claims=claims, expires_delta=refresh_lifetime),
    )


def _with_session_cookies(response, access: str, refresh: str):
    set_access_cookies(response, access)
    set_refresh_cookies(response, refresh)
    return response


def _check_claims(claims: dict) -> Identity | None:
    """The identity of verified token claims, if the token is still good (not revoked, user enabled)."""
    try:
        role = users.session_role(current().engine, claims["sub"], claims["jti"], claims.get("dt"))
    except DatabaseUnavailable:
        # Revocation cannot be checked while the database is away, and no data can be read either:
        # let the signed token through so the page can say the database is unreachable.
        role = (claims.get("roles") or [None])[-1]
    return Identity(claims["sub"], role, display=claims.get("dt") is not None) if role else None


def _authenticate() -> tuple[Identity | None, str]:
    """Verify the request's access token (checking CSRF for cookie writes); (identity, problem)."""
    try:
        verify_jwt_in_request()
        found = _check_claims(get_jwt())
        return found, "" if found else "This session was ended or the user disabled; sign in again."
    except CSRFError:
        return None, "csrf"
    except jwt.ExpiredSignatureError:
        problem = "The session expired; sign in again."
    except (JWTExtendedException, jwt.PyJWTError):
        problem = "Sign in to continue."
    # A page load with an expired or missing access token: fall back to the refresh cookie
    # (a safe GET needs no CSRF check) and mint a new access token silently.
    if request.method == "GET" and request.cookies.get("refresh_token_cookie"):
        try:
            verify_jwt_in_request(refresh=True, locations=["cookies"])
            claims = get_jwt()
            found = _check_claims(claims)
            if found:
                g.new_access = create_access_token(found.username, additional_claims={
                    k: claims[k] for k in ("roles", "dt") if k in claims})
                return found, ""
        except (JWTExtendedException, jwt.PyJWTError):
            pass
    return None, problem


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _wants_json(path: str) -> bool:
    return request.method != "GET" or path.startswith(JSON_PREFIXES)


def _display_token_login():
    """`?token=` on a page: start a read-only wall-screen session, then drop the token from the URL."""
    try:
        found = users.find_display_token(current().engine, request.args["token"])
    except DatabaseUnavailable:
        return login_page("The database cannot be reached right now; this screen will retry.", status=503)
    if not found:
        return login_page("This display token is not valid (unknown or revoked).", status=401)
    access, refresh = _tokens(f"display:{found['name']}", "viewer", found["id"])
    rest = {k: v for k, v in request.args.items() if k != "token"}
    target = request.path + (f"?{urlencode(rest)}" if rest else "")
    return _with_session_cookies(redirect(target), access, refresh)


def _has_nul() -> bool:
    """A NUL character anywhere in the request: PostgreSQL text cannot hold it, so refuse it early."""
    if "\x00" in request.path or any("\x00" in k or "\x00" in v for k, v in request.args.items(multi=True)):
        return True
    return request.is_json and "\\u0000" in request.get_data(as_text=True, cache=True)


def guard():
    path = request.path
    if _has_nul():
        return error_response(400, "invalid_character", "The request contains a NUL character; remove it.")
    if _is_public(path) or request.method == "OPTIONS":  # a CORS preflight carries no credentials
        return None
    if metrics_token_ok(path):
        return None
    if request.method == "GET" and "token" in request.args and not _wants_json(path):
        return _display_token_login()
    found, problem = _authenticate()
    if found:
        g.identity = found
        return None
    if problem == "csrf":
        return error_response(403, "csrf_failed", "The CSRF token is missing or wrong; reload the page.")
    if _wants_json(path):
        return error_response(401, "unauthorized", problem)
    target = request.full_path.rstrip("?") if request.query_string else path
    return redirect("/login?" + urlencode({"next": target}))


def metrics_token_ok(path: str) -> bool:
    """/metrics with the static bearer token from FLEET_METRICS_TOKEN (for Prometheus)."""
    token = current().settings.metrics_token
    if path != "/metrics":
        return False
    if not token:
        return True  # not configured: metrics are open, as Prometheus expects by default
    return secrets.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}")


def after_request(response):
    # Keep an active session alive: renew the access token when half its life has passed.
    new_access = g.pop("new_access", None)
    if new_access is None and g.get("identity") and request.cookies.get("access_token_cookie"):
        try:
            claims = get_jwt()
        except RuntimeError:
            claims = {}
        exp = claims.get("exp")
        if exp and datetime.fromtimestamp(exp, timezone.utc) - datetime.now(timezone.utc) < ACCESS_LIFETIME / 2:
            new_access = create_access_token(claims["sub"], additional_claims={
                k: claims[k] for k in ("roles", "dt") if k in claims})
    if new_access:
        set_access_cookies(response, new_access)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


LOGIN_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · Fleet Monitor</title>
<link rel="stylesheet" href="/assets/vendor/bootstrap.min.css"><link rel="stylesheet" href="/assets/style.css">
<script src="/assets/theme-init.js"></script>
</head><body class="login-body">
<main class="login-card card shadow-sm">
  <div class="card-body p-4">
    <h1 class="h4 mb-3"><span class="brand-mark" aria-hidden="true">◉</span> Fleet Monitor</h1>
    {message}
    <form method="post" action="/login">
      <input type="hidden" name="next" value="{next}">
      <div class="mb-3"><label class="form-label" for="username">Username</label>
        <input class="form-control" id="username" name="username" autocomplete="username" required autofocus value="{username}"></div>
      <div class="mb-3"><label class="form-label" for="password">Password</label>
        <input class="form-control" id="password" name="password" type="password" autocomplete="current-password" required></div>
      <button class="btn btn-primary w-100" type="submit" id="login-submit">Sign in</button>
    </form>
  </div>
</main></body></html>"""


def login_page(message: str = "", status: int = 200, username: str = ""):
    alert = f'<div class="alert alert-danger" role="alert">{html.escape(message)}</div>' if message else ""
    body = LOGIN_HTML.format(message=alert, next=html.escape(safe_next(request.values.get("next"))),
                             username=html.escape(username))
    return flask.Response(body, status=status, mimetype="text/html")


def _login():
    if request.method == "GET":
        return login_page()
    username = request.form.get("username", "")
    try:
        user = users.authenticate(current().engine, username, request.form.get("password", ""), client_addr())
    except users.LoginThrottled:
        return login_page("Too many failed attempts. Wait a few minutes and try again.", 429, username)
    except DatabaseUnavailable:
        return login_page("The database cannot be reached right now; try again shortly.", 503, username)
    if not user:
        # The same answer whether the user exists or not.
        return login_page("Wrong username or password.", 401, username)
    access, refresh = _tokens(user.username, user.role)
    return _with_session_cookies(redirect(safe_next(request.form.get("next"))), access, refresh)


def _revoke(encoded: str | None) -> None:
    if not encoded:
        return
    try:
        claims = decode_token(encoded, allow_expired=True)
    except (JWTExtendedException, jwt.PyJWTError):
        return
    users.revoke_token(current().engine, claims["jti"], datetime.fromtimestamp(claims["exp"], timezone.utc))


def _logout():
    # The guard has verified the access token and the CSRF field; revoke both tokens server-side.
    _revoke(request.cookies.get("access_token_cookie"))
    _revoke(request.cookies.get("refresh_token_cookie"))
    response = redirect("/login")
    unset_jwt_cookies(response)
    return response


def _browser_refresh():
    """Renew the access cookie from the refresh cookie (CSRF checked); used by the page's fetch hook."""
    try:
        verify_jwt_in_request(refresh=True, locations=["cookies"])
        found = _check_claims(get_jwt())
    except (JWTExtendedException, jwt.PyJWTError):
        found = None
    if not found:
        return error_response(401, "unauthorized", "Sign in to continue.")
    claims = get_jwt()
    response = jsonify({"ok": True})
    set_access_cookies(response, create_access_token(found.username, additional_claims={
        k: claims[k] for k in ("roles", "dt") if k in claims}))
    return response


def _api_login():
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("username"), str) or not isinstance(body.get("password"), str):
        return error_response(400, "invalid_body", 'Send JSON {"username": "...", "password": "..."}.')
    try:
        user = users.authenticate(current().engine, body["username"], body["password"], client_addr())
    except users.LoginThrottled:
        return error_response(429, "throttled", "Too many failed attempts; wait a few minutes.")
    if not user:
        return error_response(401, "unauthorized", "Wrong username or password.")
    access, refresh = _tokens(user.username, user.role)
    return jsonify({"access_token": access, "refresh_token": refresh, "token_type": "Bearer",
                    "expires_in": int(ACCESS_LIFETIME.total_seconds()), "roles": users.roles_of(user.role)})


def _api_refresh():
    try:
        verify_jwt_in_request(refresh=True, locations=["headers"])
        claims = get_jwt()
        found = _check_claims(claims)
    except (JWTExtendedException, jwt.PyJWTError):
        found = None
    if not found:
        return error_response(401, "unauthorized", "A valid refresh token is required.")
    access = create_access_token(found.username, additional_claims={k: claims[k] for k in ("roles", "dt") if k in claims})
    return jsonify({"access_token": access, "token_type": "Bearer", "expires_in": int(ACCESS_LIFETIME.total_seconds())})


def _api_logout():
    users.revoke_token(current().engine, get_jwt()["jti"], datetime.fromtimestamp(get_jwt()["exp"], timezone.utc))
    return jsonify({"ok": True})


def init_auth(server: flask.Flask, settings: Settings, engine) -> None:
    server.config.update(
        JWT_SECRET_KEY=jwt_secret(settings, engine),
        JWT_ALGORITHM="HS256",
        JWT_DECODE_ALGORITHMS=["HS256"],  # never "none", never an algorithm the token picks
        JWT_TOKEN_LOCATION=["headers", "cookies"],
        JWT_ACCESS_TOKEN_EXPIRES=ACCESS_LIFETIME,
        JWT_REFRESH_TOKEN_EXPIRES=REFRESH_LIFETIME,
        JWT_COOKIE_SECURE=settings.cookie_secure,
        JWT_COOKIE_SAMESITE="Lax",
        JWT_SESSION_COOKIE=False,
        JWT_COOKIE_CSRF_PROTECT=True,
        JWT_CSRF_IN_COOKIES=True,
        JWT_CSRF_CHECK_FORM=True,  # the sign-out form posts the token as a field
    )
    JWTManager(server)
    server.before_request(guard)
    server.after_request(after_request)
    server.add_url_rule("/login", "login", _login, methods=["GET", "POST"])
    server.add_url_rule("/logout", "logout", _logout, methods=["POST"])
    server.add_url_rule("/auth/refresh", "browser_refresh", _browser_refresh, methods=["POST"])
    server.add_url_rule("/api/v1/auth/login", "api_login", _api_login, methods=["POST"])
    server.add_url_rule("/api/v1/auth/refresh", "api_refresh", _api_refresh, methods=["POST"])
    server.add_url_rule("/api/v1/auth/logout", "api_logout", _api_logout, methods=["POST"])


def require_role(role: str) -> str | None:
    """None when the current identity may act as `role`, else a message saying why not."""
    who = identity()
    if who is None:
        return "Sign in to continue."
    if not who.can(role):
        return f"This needs the {role} role; you are signed in as {who.username} ({who.role})."
    return None
