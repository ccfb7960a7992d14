"""Time zone names from the browser or a URL are user input: validate before use."""
from __future__ import annotations

from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TZ = "UTC"


@lru_cache(maxsize=512)
def is_valid_tz(name: str | None) -> bool:
    if not name or not isinstance(name, str) or len(name) > 64:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def safe_tz(name: str | None, default: str = DEFAULT_TZ) -> str:
    """The zone if it is a real IANA zone, else the default."""
    return name if is_valid_tz(name) else default
