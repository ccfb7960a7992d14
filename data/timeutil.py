"""Time zone names from the browser or a URL are user input: validate before use."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
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


def whole_hour_zone(tz: str, *instants: datetime) -> bool:
    """True when the zone's offset is a whole number of hours at each instant (an hour of UTC
    then never straddles a local day or week boundary)."""
    zone = ZoneInfo(tz)
    return all(t.astimezone(zone).utcoffset().total_seconds() % 3600 == 0 for t in instants)


def valid_rollup_zone(name: str) -> bool:
    """True for an IANA zone whose offset from UTC is a whole number of hours over the two years
    either side of now (its days are then made of whole UTC hours: see data.rollups)."""
    if not is_valid_tz(name):
        return False
    now = datetime.now(timezone.utc)
    return whole_hour_zone(name, *(now + timedelta(days=d) for d in range(-730, 731, 7)))
