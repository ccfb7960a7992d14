"""What a request needs from the running app: its settings and its database engine."""
from __future__ import annotations

from dataclasses import dataclass

import flask
from sqlalchemy.engine import Engine

from config import Settings

EXTENSION_KEY = "fleet_monitor"


@dataclass
class FleetState:
    settings: Settings
    engine: Engine


def current() -> FleetState:
    """The state of the app handling the current request (pages, callbacks, API)."""
    return flask.current_app.extensions[EXTENSION_KEY]
