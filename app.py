"""Fleet Monitor: build the Flask server and the Dash app.

    python app.py              # development server on HOST:PORT
    gunicorn app:server        # production (each worker builds its own app)
"""
from __future__ import annotations

import logging
import sys

import dash
import flask

from config import PROJECT_DIR, Settings
from data.cache import init_cache
from data.db import DatabaseUnavailable, check_connection, describe_url, make_engine, start_embedded
from data.rollups import start_maintenance
from data.schema import ensure_schema
from data.users import ensure_demo_users
from server.api import register_api
from server.auth import ConfigError, init_auth
from server.health import register_health
from server.logging_setup import configure_logging, init_request_id
from server.metrics import register_metrics
from server.runtime import freeze_startup_objects
from server.state import EXTENSION_KEY, FleetState

log = logging.getLogger("fleet_monitor")


def create_server(settings: Settings) -> flask.Flask:
    """The Flask server with the database ready; raises DatabaseUnavailable with a clear message."""
    server = flask.Flask(__name__)
    url = settings.database_url or start_embedded(settings.embedded_data_dir)
    engine = make_engine(url, settings.statement_timeout_ms)
    check_connection(engine)
    ensure_schema(engine)
    server.extensions[EXTENSION_KEY] = FleetState(settings=settings, engine=engine)
    init_auth(server, settings, engine)
    init_cache(server, settings.redis_url, settings.cache_ttl_seconds)
    init_request_id(server)
    register_metrics(server)
    register_health(server)
    register_api(server)
    if settings.embedded:
        from data.demo import ensure_demo_data
        from data.simulator import start_simulator

        ensure_demo_data(engine, settings)
        for username, password, role in ensure_demo_users(engine):
            log.warning("demo user %-8s password %-14s (%s)", username, password, role)
        start_simulator(engine, settings)
    start_maintenance(engine, settings.rollup_interval_seconds, settings.rollup_timezone)
    from server.cli import register_cli
    from server.cli_admin import register_admin_cli
    from server.export import register_export

    register_cli(server)
    register_admin_cli(server)
    register_export(server)
    return server


def create_app(settings: Settings | None = None) -> dash.Dash:
    """The Dash app (pages from pages/) on a ready server."""
    settings = settings or Settings.from_env()
    server = create_server(settings)
    app = dash.Dash(
        __name__,
        server=server,
        use_pages=True,
        pages_folder=str(PROJECT_DIR / "pages"),
        assets_folder=str(PROJECT_DIR / "assets"),
        suppress_callback_exceptions=True,
        title="Fleet Monitor",
        update_title=None,
        serve_locally=True,
        # Bootstrap is served from assets/vendor, listed first so our styles override it.
        external_stylesheets=["/assets/vendor/bootstrap.min.css"],
        assets_ignore=r"vendor/.*",
        # Dash sends the CSRF cookie back in this header on every callback (double submit).
        csrf_token_name="csrf_access_token",
        csrf_header_name="X-CSRF-TOKEN",
        meta_tags=[{"name": "viewport", "content": "width=device-width, initial-scale=1"}],
    )
    from components.shell import register_shell_callbacks, shell_layout

    app.layout = shell_layout(settings)
    register_shell_callbacks(app)
    return app


def _build_or_exit(settings: Settings | None = None) -> dash.Dash:
    """Build the app; when the database cannot be reached, say where and exit (no traceback)."""
    try:
        return create_app(settings)
    except (DatabaseUnavailable, ConfigError) as exc:
        print(f"Fleet Monitor cannot start: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def __getattr__(name: str):
    # `gunicorn app:server` asks for `server`: build the app on first access, not on import,
    # so that importing this module (tests, CLI) does not start a database.
    if name == "server":
        app = _build_or_exit()
        globals()["server"] = app.server
        return app.server
    raise AttributeError(name)


def main() -> None:
    configure_logging("INFO")
    settings = Settings.from_env()
    where = describe_url(settings.database_url) if settings.database_url else "the embedded demo database"
    log.info("starting Fleet Monitor on %s", where)
    app = _build_or_exit(settings)
    freeze_startup_objects()
    app.run(host=settings.host, port=settings.port, debug=settings.debug)


if __name__ == "__main__":
    main()
