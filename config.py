"""Settings, read once from environment variables (every one has a sane default)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from data.timeutil import valid_rollup_zone

PROJECT_DIR = Path(__file__).resolve().parent


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"Setting {name} must be a whole number, got {raw!r}") from None


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def _targets(name: str) -> dict:
    """`wf-a:120,wf-b:30` -> {"wf-a": 120.0, "wf-b": 30.0}."""
    targets = {}
    for item in filter(None, (part.strip() for part in os.environ.get(name, "").split(","))):
        key, _, value = item.rpartition(":")
        try:
            targets[key] = float(value)
        except ValueError:
            raise SystemExit(f"Setting {name}: {item!r} is not workflow_id:seconds") from None
        if not key or targets[key] <= 0:
            raise SystemExit(f"Setting {name}: {item!r} is not workflow_id:seconds")
    return targets


def _rollup_zone(name: str) -> str:
    zone = os.environ.get(name, "").strip() or "UTC"
    if not valid_rollup_zone(zone):
        raise SystemExit(f"Setting {name} must be an IANA time zone whose offset from UTC is a whole number "
                         f"of hours (such as UTC or Europe/Berlin), got {zone!r}")
    return zone


@dataclass(frozen=True)
class Settings:
    # Empty means: start the embedded PostgreSQL and fill it with the demo fleet.
    database_url: str = ""
    embedded_data_dir: Path = PROJECT_DIR / ".pgdata"
    # A robot whose last heartbeat is older than this is offline whatever its row says.
    offline_after_seconds: int = 90
    refresh_interval_ms: int = 5000
    statement_timeout_ms: int = 5000
    host: str = "127.0.0.1"
    port: int = 8050
    debug: bool = False
    # Demo fleet (embedded database only, unless the simulate command is run by hand).
    demo_jobs: int = 150_000
    demo_robots: int = 48
    simulator: bool = True
    # Signs session and API tokens. Required outside the embedded demo (which keeps its own).
    jwt_secret: str = ""
    # Send cookies over HTTPS only; set to true when the app is served behind TLS.
    cookie_secure: bool = False
    # When set, /metrics also accepts this static bearer token (for Prometheus).
    metrics_token: str = ""
    # Live data is shared between screens and workers for this long (Redis when REDIS_URL is set).
    cache_ttl_seconds: int = 2
    redis_url: str = ""
    # How often the background maintenance brings the analytics rollups up to date (0: never;
    # long analytics windows then read the raw job rows).
    rollup_interval_seconds: int = 60
    # The zone whose days and weeks the rollups keep whole: viewers in it read the fewest rows.
    rollup_timezone: str = "UTC"
    # Per-workflow P95 targets in seconds (efficiency score and SLA); others use the default 60 s.
    p95_targets: dict = field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        return not self.database_url

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        values = dict(
            database_url=os.environ.get("DATABASE_URL", ""),
            embedded_data_dir=Path(os.environ.get("FLEET_DATA_DIR", PROJECT_DIR / ".pgdata")),
            offline_after_seconds=_int("FLEET_OFFLINE_AFTER_SECONDS", 90),
            refresh_interval_ms=_int("FLEET_REFRESH_MS", 5000),
            statement_timeout_ms=_int("FLEET_STATEMENT_TIMEOUT_MS", 5000),
            host=os.environ.get("HOST", "127.0.0.1"),
            port=_int("PORT", 8050),
            debug=_bool("FLEET_DEBUG", False),
            demo_jobs=_int("FLEET_DEMO_JOBS", 150_000),
            demo_robots=_int("FLEET_DEMO_ROBOTS", 48),
            simulator=_bool("FLEET_SIMULATOR", True),
            jwt_secret=os.environ.get("FLEET_JWT_SECRET", ""),
            cookie_secure=_bool("FLEET_COOKIE_SECURE", False),
            metrics_token=os.environ.get("FLEET_METRICS_TOKEN", ""),
            cache_ttl_seconds=_int("FLEET_CACHE_TTL_SECONDS", 2),
            redis_url=os.environ.get("REDIS_URL", ""),
            rollup_interval_seconds=_int("FLEET_ROLLUP_INTERVAL_SECONDS", 60),
            rollup_timezone=_rollup_zone("FLEET_ROLLUP_TIMEZONE"),
            p95_targets=_targets("FLEET_P95_TARGETS"),
        )
        values.update(overrides)
        return cls(**values)
