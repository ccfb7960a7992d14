"""Users, sign-in throttling, revoked tokens and display tokens (all in the app's own schema).

Every request checks that its token is still good (`session_role`). Inside the running app that
check reads one shared snapshot of the sign-in state (enabled users and their roles, active
display tokens, revoked token ids), rebuilt at most every AUTH_STATE_SECONDS for all workers
(data/snapshots.py), so the database sees the same few statements per second however many screens
are signed in. Changes made through the app (sign-out, disabling a user, changing a role,
revoking a display token: web pages, API and `flask` commands) drop the snapshot at once, so they
take effect on the next request. A change made behind the app's back (SQL, a script without the
app) takes effect within a few seconds: the snapshot's age, AUTH_STATE_SECONDS (at most three
times that when the refresh lags). A token the snapshot would refuse is always checked against the
database, so a user or display token created a moment ago is never refused.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Engine

from data.db import read_frame, read_row, write_row
from data.snapshots import live_snapshot, snapshot_key

AUTH_STATE_SECONDS = 2  # age of the shared sign-in snapshot (see the module docstring)
ROLES = ("viewer", "operator", "admin")  # each includes the ones before it
_hasher = PasswordHasher()  # argon2id, salted, memory-hard
# Verified against when the user does not exist, so both cases take the same time.
_DUMMY_HASH = _hasher.hash("not a real password")

# Throttling: failures counted over this window, per user and per client address.
THROTTLE_WINDOW_MINUTES = 15
MAX_FAILURES_PER_USER = 5
MAX_FAILURES_PER_ADDR = 20


class UserError(ValueError):
    """A user-management request that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class User:
    username: str
    role: str
    enabled: bool


def roles_of(role: str) -> list[str]:
    """The role and every role it includes: operator -> ['viewer', 'operator']."""
    return list(ROLES[: ROLES.index(role) + 1]) if role in ROLES else []


def has_role(role: str | None, needed: str) -> bool:
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


# Created in the embedded demo only, and printed at start; never with a DATABASE_URL.
DEMO_USERS = (("admin", "admin-demo", "admin"), ("operator", "operator-demo", "operator"),
              ("viewer", "viewer-demo", "viewer"))


def ensure_demo_users(engine: Engine) -> list[tuple[str, str, str]]:
    """Create the demo users when there are no users at all; return them (for the start-up log)."""
    row = read_row(engine, "SELECT count(*) AS n FROM fleet_monitor.users")
    if row["n"] == 0:
        for username, password, role in DEMO_USERS:
            try:
                create_user(engine, username, password, role)
            except UserError:
                pass  # another worker created it first
        return list(DEMO_USERS)
    existing = set(list_users(engine)["username"])
    return [u for u in DEMO_USERS if u[0] in existing]


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UserError(f"Unknown role {role!r}; choose one of {', '.join(ROLES)}.")


def _check_password(password: str) -> None:
    if len(password or "") < 8:
        raise UserError("A password needs at least 8 characters.")


def create_user(engine: Engine, username: str, password: str, role: str = "viewer") -> None:
    _check_role(role)
    _check_password(password)
    if not username or len(username) > 100 or not username.isprintable():
        raise UserError("A username needs 1 to 100 printable characters.")
    with engine.begin() as conn:
        inserted = conn.execute(
            sa.text("INSERT INTO fleet_monitor.users (username, password_hash, role) VALUES (:u, :h, :r) "
                    "ON CONFLICT (username) DO NOTHING"),
            {"u": username, "h": _hasher.hash(password), "r": role},
        ).rowcount
    if not inserted:
        raise UserError(f"User {username!r} already exists.")
    forget_auth_state(engine)


def _update_user(engine: Engine, username: str, assignments: str, params: dict) -> None:
    with engine.begin() as conn:
        changed = conn.execute(
            sa.text(f"UPDATE fleet_monitor.users SET {assignments} WHERE username = :u"), {"u": username, **params}
        ).rowcount
    if not changed:
        raise UserError(f"No user {username!r}.")
    forget_auth_state(engine)


def set_password(engine: Engine, username: str, password: str) -> None:
    _check_password(password)
    _update_user(engine, username, "password_hash = :h, failed_attempts = 0", {"h": _hasher.hash(password)})


def set_role(engine: Engine, username: str, role: str) -> None:
    _check_role(role)
    _update_user(engine, username, "role = :r", {"r": role})


def set_enabled(engine: Engine, username: str, enabled: bool) -> None:
    _update_user(engine, username, "enabled = :e", {"e": enabled})


def list_users(engine: Engine) -> pd.DataFrame:
    return read_frame(
        engine,
        "SELECT username, role, enabled, created_at, last_login_at, failed_attempts "
        "FROM fleet_monitor.users ORDER BY username",
    )


def _throttled(conn, username: str, client_addr: str) -> bool:
    row = conn.execute(
        sa.text(
            "SELECT count(*) FILTER (WHERE username = :u) AS by_user, "
            "count(*) FILTER (WHERE client_addr = :a) AS by_addr FROM fleet_monitor.login_failures "
            "WHERE at > now() - make_interval(mins => :w) AND (username = :u OR client_addr = :a)"
        ),
        {"u": username, "a": client_addr, "w": THROTTLE_WINDOW_MINUTES},
    ).one()
    return row.by_user >= MAX_FAILURES_PER_USER or row.by_addr >= MAX_FAILURES_PER_ADDR


class LoginThrottled(Exception):
    """Too many failed sign-ins for this user or client address."""


def authenticate(engine: Engine, username: str, password: str, client_addr: str) -> User | None:
    """The user when the password is right and the user enabled; None otherwise.

    Raises LoginThrottled after too many failures; the same whether or not the user exists.
    """
    username = (username or "")[:100]
    with engine.begin() as conn:
        if _throttled(conn, username, client_addr):
            raise LoginThrottled()
        row = conn.execute(
            sa.text("SELECT username, password_hash, role, enabled FROM fleet_monitor.users WHERE username = :u"),
            {"u": username},
        ).mappings().first()
        try:
            ok = _hasher.verify(row["password_hash"] if row else _DUMMY_HASH, password or "")
        except (VerificationError, InvalidHashError):
            ok = False
        if ok and row and row["enabled"]:
            conn.execute(
                sa.text("UPDATE fleet_monitor.users SET last_login_at = now(), failed_attempts = 0 WHERE username = :u"),
                {"u": username},
            )
            return User(row["username"], row["role"], True)
        conn.execute(
            sa.text("INSERT INTO fleet_monitor.login_failures (username, client_addr) VALUES (:u, :a)"),
            {"u": username, "a": client_addr},
        )
        if row:
            conn.execute(
                sa.text("UPDATE fleet_monitor.users SET failed_attempts = failed_attempts + 1 WHERE username = :u"),
                {"u": username},
            )
    return None


def revoke_token(engine: Engine, jti: str, expires_at) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO fleet_monitor.revoked_tokens (jti, expires_at) VALUES (:j, :e) ON CONFLICT DO NOTHING"),
            {"j": jti, "e": expires_at},
        )
        conn.execute(sa.text("DELETE FROM fleet_monitor.revoked_tokens WHERE expires_at < now() - interval '1 day'"))
    forget_auth_state(engine)


_SESSION_ROLE_SQL = """
    SELECT CASE
             WHEN EXISTS (SELECT 1 FROM fleet_monitor.revoked_tokens WHERE jti = :jti) THEN NULL
             WHEN CAST(:dt AS bigint) IS NOT NULL THEN
                 (SELECT 'viewer' FROM fleet_monitor.display_tokens
                  WHERE id = CAST(:dt AS bigint) AND revoked_at IS NULL)
             ELSE (SELECT role FROM fleet_monitor.users WHERE username = :u AND enabled)
           END AS role
"""

# Everything session_role depends on, in one statement. Revoked ids are kept while their token
# could still verify (expired tokens are refused before this check; a margin for clock leeway).
_AUTH_STATE_SQL = """
    SELECT (SELECT coalesce(json_object_agg(username, role), '{}'::json)
            FROM fleet_monitor.users WHERE enabled) AS roles,
           (SELECT coalesce(array_agg(id), '{}') FROM fleet_monitor.display_tokens
            WHERE revoked_at IS NULL) AS display_ids,
           (SELECT coalesce(array_agg(jti), '{}') FROM fleet_monitor.revoked_tokens
            WHERE expires_at > now() - interval '5 minutes') AS revoked
"""


def _engine_label(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def auth_state(engine: Engine) -> dict:
    """Enabled users' roles, active display token ids and revoked token ids (one statement)."""
    row = read_row(engine, _AUTH_STATE_SQL)
    return {"roles": dict(row["roles"]), "display_ids": frozenset(int(i) for i in row["display_ids"]),
            "revoked": frozenset(row["revoked"])}


def forget_auth_state(engine: Engine) -> None:
    """Drop the shared sign-in snapshot (after a change), so the next request reads the database."""
    import flask

    from data.cache import EXTENSION_KEY

    cache = flask.current_app.extensions.get(EXTENSION_KEY) if flask.has_app_context() else None
    if cache is not None:
        cache.delete(snapshot_key("auth-state", _engine_label(engine)))


def role_in_state(state: dict, username: str, jti: str, display_token_id: int | None) -> str | None:
    """session_role's answer from an auth_state() snapshot."""
    if jti in state["revoked"]:
        return None
    if display_token_id is not None:
        return "viewer" if int(display_token_id) in state["display_ids"] else None
    return state["roles"].get(username)


def session_role(engine: Engine, username: str, jti: str, display_token_id: int | None) -> str | None:
    """The role a token may act with right now, or None when it must be refused.

    Checks everything that can change after a token was issued: the token was revoked (logout),
    the user was disabled or removed or given another role, the display token was revoked. Inside
    the app the answer comes from the shared snapshot (see the module docstring); a refusal is
    confirmed by the database.
    """
    state = live_snapshot("auth-state", (_engine_label(engine),), lambda: auth_state(engine), AUTH_STATE_SECONDS)
    role = role_in_state(state, username, jti, display_token_id)
    if role is not None:
        return role
    row = read_row(engine, _SESSION_ROLE_SQL, {"jti": jti, "dt": display_token_id, "u": username})
    return row["role"] if row else None


def _token_hash(token: str) -> str:
    # Display tokens are 256-bit random values, so a plain SHA-256 is enough to store them safely.
    return hashlib.sha256(token.encode()).hexdigest()


def create_display_token(engine: Engine, name: str, created_by: str) -> tuple[int, str]:
    """A new long-lived, viewer-only token for a wall screen: (id, token). The token is shown once."""
    if not name or len(name) > 100:
        raise UserError("A display token needs a name of 1 to 100 characters.")
    token = secrets.token_urlsafe(32)
    row = write_row(
        engine,
        "INSERT INTO fleet_monitor.display_tokens (name, token_hash, created_by) VALUES (:n, :h, :c) RETURNING id",
        {"n": name, "h": _token_hash(token), "c": created_by},
    )
    forget_auth_state(engine)
    return row["id"], token


def find_display_token(engine: Engine, token: str) -> dict | None:
    """The active display token with this value, marking it used; None when unknown or revoked."""
    if not token or len(token) > 200:
        return None
    return write_row(
        engine,
        "UPDATE fleet_monitor.display_tokens SET last_used_at = now() "
        "WHERE token_hash = :h AND revoked_at IS NULL RETURNING id, name",
        {"h": _token_hash(token)},
    )


def revoke_display_token(engine: Engine, token_id: int) -> None:
    row = write_row(
        engine,
        "UPDATE fleet_monitor.display_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = :i RETURNING id",
        {"i": token_id},
    )
    if not row:
        raise UserError(f"No display token with id {token_id}.")
    forget_auth_state(engine)


def list_display_tokens(engine: Engine) -> pd.DataFrame:
    return read_frame(
        engine,
        "SELECT id, name, created_by, created_at, last_used_at, revoked_at FROM fleet_monitor.display_tokens ORDER BY id",
    )
