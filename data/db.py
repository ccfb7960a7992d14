"""Engine, embedded PostgreSQL and the two ways the app reads: a frame or one row."""
from __future__ import annotations

import contextvars
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import sqlalchemy as sa
from prometheus_client import Counter
from sqlalchemy.engine import Engine, make_url

log = logging.getLogger(__name__)

# Every statement the app sends, per process (summed across workers by Prometheus): shows that
# the database load stays flat however many screens watch.
DB_QUERIES = Counter("fleet_monitor_db_queries", "SQL statements sent to PostgreSQL by the app")


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached (or answered too slowly); the message is safe to show."""


class QueryTimeout(DatabaseUnavailable):
    """A statement ran into the statement timeout."""


def sqlalchemy_url(url: str) -> str:
    """Accept postgres://, postgresql:// or postgresql+psycopg:// and use psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def describe_url(url: str) -> str:
    """Where a URL points, without its password: 'host:port/db as user'."""
    try:
        u = make_url(sqlalchemy_url(url))
    except Exception:
        return "an unparsable DATABASE_URL"
    host = u.host or u.query.get("host") or "localhost"
    if isinstance(host, tuple):
        host = host[0]
    port = f":{u.port}" if u.port else ""
    user = f" as user {u.username}" if u.username else ""
    return f"{host}{port}/{u.database or ''}{user}"


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in data_dir and return its SQLAlchemy URL."""
    import pgserver  # imported lazily: only the embedded mode needs it

    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process, so gunicorn workers and
    # restarts share one server and one demo data set.
    server = pgserver.get_server(data_dir, cleanup_mode=None)
    return sqlalchemy_url(server.get_uri())


def make_engine(url: str, statement_timeout_ms: int = 5000, pool_size: int = 5) -> Engine:
    """An engine whose every session carries a statement timeout, so no query can hold a worker."""
    engine = sa.create_engine(
        sqlalchemy_url(url),
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={
            "options": f"-c statement_timeout={int(statement_timeout_ms)}",
            "connect_timeout": 5,
            "application_name": "fleet-monitor",
        },
    )
    sa.event.listen(engine, "before_cursor_execute", lambda *_: DB_QUERIES.inc())
    return engine


def _translate(exc: Exception, engine: Engine) -> DatabaseUnavailable:
    import psycopg

    orig = getattr(exc, "orig", exc)
    if isinstance(orig, psycopg.errors.QueryCanceled):
        return QueryTimeout("The database took too long to answer; try a narrower filter.")
    where = describe_url(engine.url.render_as_string(hide_password=True))
    reason = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return DatabaseUnavailable(f"Cannot reach PostgreSQL at {where}: {reason}")


_UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)


def read_frame(engine: Engine, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Run one bound-parameter query and return its rows as a DataFrame."""
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text(sql), dict(params or {}))
            return frame_of(list(result.keys()), result.fetchall())
    except _UNAVAILABLE as exc:
        raise _translate(exc, engine) from exc


def side_by_side(*calls):
    """Run independent reads at once, each on its own pooled connection, and return their
    results in order: a caller waits for the longest, not for the sum. Each runs in a copy of the
    caller's context (context variables such as data.rollups.exact_only hold there too)."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(contextvars.copy_context().run, call) for call in calls]
        return [future.result() for future in futures]


def frame_of(columns: list[str], rows) -> pd.DataFrame:
    """A DataFrame of result rows, built column by column: handed a list of Row objects, pandas
    probes each row for attributes it lacks (an exception each), ten times slower."""
    if not rows:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame(dict(zip(columns, map(list, zip(*rows)))), columns=columns)


def read_row(engine: Engine, sql: str, params: Mapping[str, Any] | None = None) -> dict | None:
    """Run one bound-parameter query and return its first row as a dict (None if no row)."""
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text(sql), dict(params or {})).mappings().first()
            return dict(row) if row is not None else None
    except _UNAVAILABLE as exc:
        raise _translate(exc, engine) from exc


def write_row(engine: Engine, sql: str, params: Mapping[str, Any] | None = None) -> dict | None:
    """Run one bound-parameter write in its own transaction; return its first RETURNING row."""
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(sql), dict(params or {}))
            row = result.mappings().first() if result.returns_rows else None
            return dict(row) if row is not None else None
    except _UNAVAILABLE as exc:
        raise _translate(exc, engine) from exc


def json_number(expr: str, key: str) -> str:
    """SQL: the number under `key` of jsonb `expr`, NULL when missing or not a number.

    Robots report metrics as jsonb; a key may be missing, null, a number or a numeric string.
    """
    value = f"{expr} -> '{key}'"
    text = f"{expr} ->> '{key}'"
    return (
        f"(CASE WHEN jsonb_typeof({value}) = 'number' THEN ({text})::float8 "
        f"WHEN jsonb_typeof({value}) = 'string' AND ({text}) ~ '^\\s*-?[0-9]+(\\.[0-9]+)?\\s*$' "
        f"THEN ({text})::float8 END)"
    )


def check_connection(engine: Engine) -> None:
    """Raise DatabaseUnavailable with a readable message when the database cannot be reached."""
    read_row(engine, "SELECT 1 AS ok")
