"""Health checks for load balancers and orchestrators (both public, see server.auth.PUBLIC_PATHS).

- ``GET /health``: the process is alive and serving; touches nothing else (no database), so a
  database outage never gets healthy workers restarted.
- ``GET /ready``: the database answers and the tables the app needs exist; 503 otherwise, so a
  load balancer stops sending traffic until it is back.

Anonymous callers learn only ok / not ok per check: no host names, versions or error texts.
"""
from __future__ import annotations

import flask

from data.monitoring import readiness
from server.state import EXTENSION_KEY


def _no_store(body: dict, status: int = 200):
    response = flask.jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def health():
    return _no_store({"status": "ok"})


def ready():
    state = flask.current_app.extensions[EXTENSION_KEY]
    checks = readiness(state.engine)
    ok = checks["database"] and checks["schema"]
    body = {
        "status": "ready" if ok else "unavailable",
        "checks": {
            "database": "ok" if checks["database"] else "unreachable",
            "schema": ("ok" if checks["schema"] else "missing") if checks["database"] else "unknown",
        },
    }
    return _no_store(body, 200 if ok else 503)


def register_health(server: flask.Flask) -> None:
    """Add /health and /ready to the server. Idempotent."""
    if "fleet_health" in server.view_functions:
        return
    server.add_url_rule("/health", "fleet_health", health, methods=["GET"])
    server.add_url_rule("/ready", "fleet_ready", ready, methods=["GET"])
