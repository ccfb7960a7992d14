"""Human-readable numbers, durations and times."""
from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo

import pandas as pd


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT


def duration(seconds: float | None) -> str:
    """1.2 s, 3 min 05 s, 2 h 10 min, 3 d 4 h."""
    if is_missing(seconds):
        return "—"
    s = float(seconds)
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def ago(seconds: float | None) -> str:
    return "never" if is_missing(seconds) else f"{duration(max(0.0, seconds))} ago"


def percent(fraction: float | None, digits: int = 1) -> str:
    return "—" if is_missing(fraction) else f"{fraction * 100:.{digits}f} %"


def count(n) -> str:
    return "—" if is_missing(n) else f"{int(n):,}"


def local_time(ts, tz: str, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A timestamp in the viewer's zone, with the UTC offset so the zone is never ambiguous."""
    if is_missing(ts):
        return "—"
    if isinstance(ts, pd.Timestamp):
        ts = ts.to_pydatetime()
    if isinstance(ts, datetime):
        return ts.astimezone(ZoneInfo(tz)).strftime(f"{fmt} UTC%z").replace("UTC+0000", "UTC")
    return str(ts)


def to_zone(series: pd.Series, tz: str) -> pd.Series:
    """A UTC timestamp column converted to the viewer's zone (for chart axes)."""
    s = pd.to_datetime(series, utc=True)
    return s.dt.tz_convert(tz)
