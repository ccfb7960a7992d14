"""Analytics: duration percentiles, time series, weekly throughput, efficiency scores,
distributions, errors, SLA and anomalies.

Every analytic is a named function ``f(engine, filters, ...)`` that aggregates in PostgreSQL with
bound parameters and returns a small dict or DataFrame (the page draws them, the REST API can
serve them as JSON). Nothing here loads a window's raw job rows into Python.

Conventions shared by every function:

* The window selects jobs by ``created_at`` (``start <= created_at < end``), and a job belongs to
  the bucket of its ``created_at``. Buckets are computed in SQL with
  ``date_trunc(bucket, created_at, tz)`` — PostgreSQL's zone-aware form of
  ``date_trunc(bucket, created_at AT TIME ZONE tz)``: days and weeks start at local midnight
  (weeks on Monday), across daylight-saving changes; unlike the two-argument form it also keeps
  the two wall-clock hours of an autumn "fall back" apart, so every bucket is a real instant.
* Duration = ``completed_at - started_at``, queue wait = ``started_at - created_at``, in
  milliseconds (float, not rounded). Duration statistics cover ``filters.statuses`` (default:
  completed and failed) jobs that have both timestamps; :func:`duration_covers` says so in
  words and each result carries that sentence (``covers`` key, or ``DataFrame.attrs["covers"]``).
* Percentiles are exact: ``percentile_cont`` (linear interpolation, numpy's default method),
  except over windows longer than two days once the rollups cover them: those are answered by
  data.analytics_rollup from data.rollups, percentiles within 1 % (``exact = False``).
* Success rate = completed / (completed + failed); cancelled and unfinished jobs are left out.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Mapping
from zoneinfo import ZoneInfo

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from data.db import _UNAVAILABLE, _translate, frame_of, side_by_side
from data import rollups
from data.errors import error_type_sql
from data.timeutil import is_valid_tz, safe_tz

# ---------------------------------------------------------------------------------------------
# Filters: the page state, parsed from a URL query (or REST query) by a pure function.
# ---------------------------------------------------------------------------------------------

PRESETS = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
RANGES = (*PRESETS, "custom")
DEFAULT_RANGE = "7d"
BUCKETS = ("hour", "day", "week")
BUCKET_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7)}
DEFAULT_BUCKET = {"24h": "hour", "7d": "day", "30d": "day", "90d": "week"}
# More buckets than this make unreadable charts: the parser moves to a coarser bucket.
MAX_BUCKETS = 2200
MAX_WINDOW = timedelta(days=366)

FINISHED = ("completed", "failed")
DURATION_STATUSES = ("completed", "failed", "cancelled")
DEFAULT_DURATION_STATUSES = FINISHED

DEFAULT_SUCCESS_TARGET = 0.99
DEFAULT_P95_TARGET_S = 60.0
# The orchestrator's duration score reaches 0 at a P95 of 300 s.
DURATION_ZERO_S = 300.0

MAX_LIST_ITEMS = 50


@dataclass(frozen=True)
class AnalyticsFilters:
    """What the analytics look at. ``start``/``end`` are aware datetimes (UTC)."""

    start: datetime
    end: datetime
    range: str = DEFAULT_RANGE
    bucket: str = "day"
    tz: str = "UTC"
    # True when the zone came from the query (it then belongs in shared links).
    tz_from_query: bool = False
    environment: str | None = None
    workflows: tuple[str, ...] = ()
    robots: tuple[str, ...] = ()
    # Which jobs duration statistics cover (always also: both timestamps present).
    statuses: tuple[str, ...] = DEFAULT_DURATION_STATUSES
    success_target: float = DEFAULT_SUCCESS_TARGET
    p95_target_s: float = DEFAULT_P95_TARGET_S
    # Per-workflow P95 targets in seconds, overriding p95_target_s (sorted pairs).
    p95_targets: tuple[tuple[str, float], ...] = ()
    # Histogram and box plot on a logarithmic duration axis.
    log_scale: bool = False

    def target_for(self, workflow_id: str) -> float:
        """The P95 target (seconds) that applies to a workflow."""
        return dict(self.p95_targets).get(workflow_id, self.p95_target_s)

    # -- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-safe dict (for a dcc.Store or an API response)."""
        d = asdict(self)
        d["start"] = self.start.isoformat()
        d["end"] = self.end.isoformat()
        d["workflows"] = list(self.workflows)
        d["robots"] = list(self.robots)
        d["statuses"] = list(self.statuses)
        d["p95_targets"] = [list(p) for p in self.p95_targets]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AnalyticsFilters":
        d = dict(d)
        d["start"] = datetime.fromisoformat(d["start"])
        d["end"] = datetime.fromisoformat(d["end"])
        for key in ("workflows", "robots", "statuses"):
            d[key] = tuple(d.get(key) or ())
        d["p95_targets"] = tuple((str(k), float(v)) for k, v in d.get("p95_targets") or ())
        return cls(**d)

    def to_query(self) -> dict[str, str]:
        """The canonical URL query for this state (defaults left out, so links stay short)."""
        q: dict[str, str] = {}
        if self.range != DEFAULT_RANGE:
            q["range"] = self.range
        if self.range == "custom":
            q["from"] = _iso(self.start, self.tz)
            q["to"] = _iso(self.end, self.tz)
        if self.bucket != _default_bucket(self.range, self.end - self.start):
            q["bucket"] = self.bucket
        if self.tz_from_query:
            q["tz"] = self.tz
        if self.environment:
            q["environment"] = self.environment
        if self.workflows:
            q["workflow"] = ",".join(self.workflows)
        if self.robots:
            q["robot"] = ",".join(self.robots)
        if tuple(self.statuses) != DEFAULT_DURATION_STATUSES:
            q["status"] = ",".join(self.statuses)
        if self.success_target != DEFAULT_SUCCESS_TARGET:
            q["sla_success"] = _num(self.success_target * 100)
        if self.p95_target_s != DEFAULT_P95_TARGET_S:
            q["p95_target"] = _num(self.p95_target_s)
        if self.p95_targets:
            q["targets"] = ",".join(f"{k}:{_num(v)}" for k, v in self.p95_targets)
        if self.log_scale:
            q["log"] = "1"
        return q

    def executions_query(self, **extra) -> dict:
        """Filters for components.links.executions_link (the /executions contract).

        The job history takes one robot: with several selected robots the link leaves the robot
        filter out rather than point at no jobs.
        """
        q: dict[str, Any] = {"range": self.range}
        if self.range == "custom":
            q["from"] = _iso(self.start, self.tz)
            q["to"] = _iso(self.end, self.tz)
        if self.workflows:
            q["workflow"] = list(self.workflows)
        if len(self.robots) == 1:
            q["robot"] = self.robots[0]
        if self.environment:
            q["environment"] = self.environment
        q.update({k: v for k, v in extra.items() if v not in (None, "", [], ())})
        return q


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _iso(ts: datetime, tz: str) -> str:
    local = ts.astimezone(ZoneInfo(tz))
    spec = "minutes" if local.second == 0 and local.microsecond == 0 else "auto"
    return local.isoformat(timespec=spec)


def _default_bucket(range_: str, span: timedelta) -> str:
    if range_ in DEFAULT_BUCKET:
        return DEFAULT_BUCKET[range_]
    if span <= timedelta(days=2):
        return "hour"
    if span <= timedelta(days=62):
        return "day"
    return "week"


def _text(value) -> str:
    """A query value as text (repeated keys arrive as lists: join them)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value).strip()


def _split(value) -> list[str]:
    seen: list[str] = []
    for item in _text(value).split(","):
        item = item.strip()
        if item and item not in seen:
            seen.append(item)
    return seen


def _parse_instant(text: str, tz: str, *, end: bool) -> datetime | None:
    """ISO date or date-time; a bare date means local midnight (``end``: the next midnight,
    so a 'to' date is included); a time without offset is local time in ``tz``."""
    text = text.strip()
    if not text:
        return None
    zone = ZoneInfo(tz)
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            if end:
                d = d + timedelta(days=1)
            return datetime.combine(d, time(0), tzinfo=zone).astimezone(timezone.utc)
        ts = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=zone)
    return ts.astimezone(timezone.utc)


def _parse_number(raw: str, name: str, lo: float, hi: float, problems: list[str], unit: str = "") -> float | None:
    try:
        value = float(raw)
    except ValueError:
        problems.append(f"{name} must be a number, got {raw!r}; the default is used.")
        return None
    if not math.isfinite(value) or not lo < value <= hi:
        problems.append(f"{name} must be above {_num(lo)} and at most {_num(hi)}{unit}, got {raw!r}; the default is used.")
        return None
    return value


def parse_filters(
    query: Mapping[str, Any] | None,
    *,
    default_tz: str = "UTC",
    now: datetime | None = None,
    p95_targets: Mapping[str, float] | None = None,
) -> tuple[AnalyticsFilters, list[str]]:
    """Parse URL query parameters into filters; return them and a list of problems.

    Never raises on bad input: a malformed value is reported in ``problems`` (a sentence a
    person can read) and its default is used instead. Parameters:

    ``range`` 24h|7d|30d|90d|custom (default 7d) · ``from``/``to`` ISO date or date-time
    (custom range; a date-time without offset is in ``tz``; a ``to`` date is included) ·
    ``bucket`` hour|day|week · ``tz`` IANA zone (default: ``default_tz``, the viewer's) ·
    ``environment`` · ``workflow`` and ``robot`` comma-separated ids · ``status`` which finished
    jobs duration statistics cover (completed, failed, cancelled; default completed,failed) ·
    ``sla_success`` success-rate target in % (default 99) · ``p95_target`` P95 target in seconds
    (default 60) · ``targets`` per-workflow P95 targets ``wf-a:120,wf-b:30`` (on top of the
    ``p95_targets`` mapping from settings) · ``log`` 1 for logarithmic duration axes.
    """
    q = {str(k): v for k, v in (query or {}).items()}
    problems: list[str] = []
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)

    tz_raw = _text(q.get("tz"))
    tz_from_query = False
    tz = safe_tz(default_tz)
    if tz_raw:
        if is_valid_tz(tz_raw):
            tz, tz_from_query = tz_raw, True
        else:
            problems.append(f"Unknown time zone {tz_raw!r}; showing times in {tz}.")

    range_ = _text(q.get("range")).lower()
    from_raw, to_raw = _text(q.get("from")), _text(q.get("to"))
    if not range_:
        range_ = "custom" if (from_raw or to_raw) else DEFAULT_RANGE
    if range_ not in RANGES:
        problems.append(f"Unknown time window {range_!r} (use one of {', '.join(RANGES)}); showing {DEFAULT_RANGE}.")
        range_ = DEFAULT_RANGE
    start = end = None
    if range_ == "custom":
        start = _parse_instant(from_raw, tz, end=False)
        end = _parse_instant(to_raw, tz, end=True) if to_raw else now
        if start is None or end is None:
            bad = [f"{n}={v!r}" for n, v, t in (("from", from_raw, start), ("to", to_raw, end)) if t is None]
            problems.append(
                f"A custom window needs dates like 2024-03-25 or 2024-03-25 08:00 ({', '.join(bad) or 'from is missing'}); "
                f"showing {DEFAULT_RANGE}."
            )
            range_, start, end = DEFAULT_RANGE, None, None
        elif start >= end:
            problems.append(f"The window's start ({from_raw}) is not before its end ({to_raw or 'now'}); showing {DEFAULT_RANGE}.")
            range_, start, end = DEFAULT_RANGE, None, None
        elif end - start > MAX_WINDOW:
            problems.append(f"A window may span at most {MAX_WINDOW.days} days; it was shortened to end {MAX_WINDOW.days} days after its start.")
            end = start + MAX_WINDOW
    if start is None:
        end = now
        start = now - PRESETS[range_]
    span = end - start

    bucket_raw = _text(q.get("bucket")).lower()
    bucket = _default_bucket(range_, span)
    if bucket_raw:
        if bucket_raw in BUCKETS:
            bucket = bucket_raw
        else:
            problems.append(f"Unknown bucket {bucket_raw!r} (use hour, day or week); using {bucket}.")
    while span / BUCKET_STEP[bucket] > MAX_BUCKETS and bucket != "week":
        coarser = BUCKETS[BUCKETS.index(bucket) + 1]
        problems.append(f"{bucket.capitalize()} buckets are too many for this window; using {coarser} buckets.")
        bucket = coarser

    environment = _text(q.get("environment")) or None
    if environment and len(environment) > 100:
        problems.append("The environment name is too long (at most 100 characters); all environments are shown.")
        environment = None

    def id_list(key: str, what: str) -> tuple[str, ...]:
        items = _split(q.get(key))
        too_long = [i for i in items if len(i) > 255]
        if too_long:
            problems.append(f"Ignored {len(too_long)} {what} id(s) longer than 255 characters.")
            items = [i for i in items if len(i) <= 255]
        if len(items) > MAX_LIST_ITEMS:
            problems.append(f"At most {MAX_LIST_ITEMS} {what}s can be selected; the first {MAX_LIST_ITEMS} are used.")
            items = items[:MAX_LIST_ITEMS]
        return tuple(items)

    workflows = id_list("workflow", "workflow")
    robots = id_list("robot", "robot")

    statuses = DEFAULT_DURATION_STATUSES
    status_items = [s.lower() for s in _split(q.get("status"))]
    if status_items:
        unknown = [s for s in status_items if s not in DURATION_STATUSES]
        if unknown:
            problems.append(
                f"Duration statistics can cover completed, failed or cancelled jobs; ignored {', '.join(map(repr, unknown))}."
            )
        chosen = tuple(s for s in DURATION_STATUSES if s in status_items)
        statuses = chosen or DEFAULT_DURATION_STATUSES

    success_target = DEFAULT_SUCCESS_TARGET
    if _text(q.get("sla_success")):
        v = _parse_number(_text(q.get("sla_success")), "The success-rate target", 0, 100, problems, " %")
        if v is not None:
            success_target = v / 100
    p95_target_s = DEFAULT_P95_TARGET_S
    if _text(q.get("p95_target")):
        v = _parse_number(_text(q.get("p95_target")), "The P95 target", 0, 7 * 86400, problems, " s")
        if v is not None:
            p95_target_s = v

    targets: dict[str, float] = {}
    for k, v in (p95_targets or {}).items():
        try:
            if float(v) > 0 and math.isfinite(float(v)):
                targets[str(k)] = float(v)
        except (TypeError, ValueError):
            continue
    for item in _split(q.get("targets")):
        wf, sep, secs = item.rpartition(":")
        if not sep or not wf.strip():
            problems.append(f"A per-workflow target looks like workflow-id:seconds; ignored {item!r}.")
            continue
        v = _parse_number(secs.strip(), f"The P95 target of {wf.strip()!r}", 0, 7 * 86400, problems, " s")
        if v is not None:
            targets[wf.strip()] = v

    log_raw = _text(q.get("log")).lower()
    log_scale = log_raw in ("1", "true", "yes", "on")
    if log_raw and not log_scale and log_raw not in ("0", "false", "no", "off"):
        problems.append(f"log must be 1 or 0, got {log_raw!r}; using a linear axis.")

    return (
        AnalyticsFilters(
            start=start, end=end, range=range_, bucket=bucket, tz=tz, tz_from_query=tz_from_query,
            environment=environment, workflows=workflows, robots=robots, statuses=statuses,
            success_target=success_target, p95_target_s=p95_target_s,
            p95_targets=tuple(sorted(targets.items())), log_scale=log_scale,
        ),
        problems,
    )


def duration_covers(f: AnalyticsFilters) -> str:
    """Which jobs a duration statistic covers, in words (shown on the page, sent by the API)."""
    names = list(f.statuses)
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{listed} jobs with both started_at and completed_at, created in the window"


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

# Percentiles sort every timed job of a group: give these queries room to sort in memory
# (PostgreSQL's default 4 MB spills a 30-day window to disk). Per statement, not per session.
ANALYTICS_WORK_MEM = "64MB"


def read_frame(engine: Engine, sql: str, params: Mapping[str, Any] | None = None, *,
               hash_grouping: bool = False) -> pd.DataFrame:
    """data.db.read_frame with a larger work_mem for this one statement (SET LOCAL).

    ``hash_grouping``: group by hashing, not sorting. The planner cannot see how many rows an
    unnested histogram array yields, guesses a few, and sorts half a million (3× slower)."""
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"SET LOCAL work_mem = '{ANALYTICS_WORK_MEM}'"))
            if hash_grouping:
                conn.execute(sa.text("SET LOCAL enable_sort = off"))
            result = conn.execute(sa.text(sql), dict(params or {}))
            columns, rows = list(result.keys()), result.fetchall()
    except _UNAVAILABLE as exc:
        raise _translate(exc, engine) from exc
    return frame_of(columns, rows)


# ---------------------------------------------------------------------------------------------
# SQL building blocks. Only fixed SQL text is assembled here; every value is a bound parameter.
# ---------------------------------------------------------------------------------------------

# date_part (float8) rather than extract (numeric): the same microseconds, several times faster.
DUR_MS = "(date_part('epoch', j.completed_at - j.started_at) * 1000)"
WAIT_MS = "(date_part('epoch', j.started_at - j.created_at) * 1000)"
TIMED = "(j.status = ANY(:dur_statuses) AND j.started_at IS NOT NULL AND j.completed_at IS NOT NULL)"
ERROR_TYPE = f"coalesce({error_type_sql('j.error_message')}, 'UnknownError')"
PERCENTILES = (0.5, 0.9, 0.95, 0.99)


def _scope(f: AnalyticsFilters, *, window: bool = True, alias: str = "j.") -> tuple[str, dict]:
    """WHERE clause for the filters (columns prefixed with ``alias``) and its parameters."""
    clauses: list[str] = []
    params: dict[str, Any] = {"tz": f.tz, "bucket": f.bucket, "step": BUCKET_STEP[f.bucket],
                              "dur_statuses": list(f.statuses)}
    if window:
        clauses += [f"{alias}created_at >= :start", f"{alias}created_at < :end"]
        params.update(start=f.start, end=f.end)
    if f.environment:
        clauses.append(f"{alias}environment = :environment")
        params["environment"] = f.environment
    if f.workflows:
        clauses.append(f"{alias}workflow_id = ANY(:workflows)")
        params["workflows"] = list(f.workflows)
    if f.robots:
        clauses.append(f"{alias}robot_id::text = ANY(:robots)")
        params["robots"] = list(f.robots)
    return (" AND ".join(clauses) or "TRUE"), params


def _rollup_plan(engine: Engine, f: AnalyticsFilters, bucketed: bool) -> rollups.WindowPlan | None:
    """How the rollups answer this window, or None when the exact query should (data.rollups)."""
    return rollups.usable_plan(engine, f.start, f.end, f.tz, f.bucket if bucketed else None, f.robots)


def percentile_note(engine: Engine, f: AnalyticsFilters) -> str:
    """How the percentiles of this window are computed, in words (shown on the page)."""
    if _rollup_plan(engine, f, bucketed=False) is None:
        return "Percentiles are exact (percentile_cont, linear interpolation)."
    return (f"Percentiles over this long window come from hourly, daily and weekly rollups, within "
            f"{rollups.MAX_RELATIVE_ERROR:.0%} of the exact value; counts and rates are exact.")


def _rolled():
    from data import analytics_rollup  # it imports this module

    return analytics_rollup


def _pvals(values, n: int = 4) -> list:
    """percentile_cont(ARRAY[...]) result as a list of floats (None when no rows)."""
    if values is None or (isinstance(values, float) and math.isnan(values)):
        return [None] * n
    return [None if v is None else float(v) for v in values]


def _rate(num, den) -> float | None:
    return float(num) / float(den) if den else None


def _float(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


# ---------------------------------------------------------------------------------------------
# 1. Duration percentiles (fleet and per workflow)
# ---------------------------------------------------------------------------------------------

def duration_percentiles(engine: Engine, f: AnalyticsFilters) -> dict:
    """P50/P90/P95/P99 of run duration and queue wait, for the fleet and per workflow.

    Returns ``{"fleet": {...}, "workflows": DataFrame, "covers": str, "exact": True}``. The fleet
    dict and each workflow row carry: ``total_jobs`` (all statuses, created in the window),
    ``completed_jobs``, ``failed_jobs``, ``cancelled_jobs``, ``success_rate``, ``failure_rate``,
    ``timed_jobs`` (the jobs the duration figures cover), ``average_duration_ms``,
    ``p50_duration_ms``, ``p90_duration_ms``, ``p95_duration_ms``, ``p99_duration_ms``,
    ``average_queue_wait_ms`` and ``p50_queue_wait_ms`` … ``p99_queue_wait_ms`` (same jobs).
    One scan: ``GROUPING SETS`` computes fleet and per-workflow figures together.
    """
    plan = _rollup_plan(engine, f, bucketed=False)
    if plan is not None:
        return _rolled().duration_percentiles(engine, f, plan)

    where, params = _scope(f)
    sql = f"""
    SELECT grouping(j.workflow_id) = 1 AS is_fleet, j.workflow_id, max(j.workflow_name) AS workflow_name,
           count(*) AS total_jobs,
           count(*) FILTER (WHERE j.status = 'completed') AS completed_jobs,
           count(*) FILTER (WHERE j.status = 'failed') AS failed_jobs,
           count(*) FILTER (WHERE j.status = 'cancelled') AS cancelled_jobs,
           count(*) FILTER (WHERE {TIMED}) AS timed_jobs,
           avg({DUR_MS}) FILTER (WHERE {TIMED}) AS average_duration_ms,
           percentile_cont(ARRAY[0.5, 0.9, 0.95, 0.99]) WITHIN GROUP (ORDER BY {DUR_MS})
               FILTER (WHERE {TIMED}) AS dur,
           avg({WAIT_MS}) FILTER (WHERE {TIMED}) AS average_queue_wait_ms,
           percentile_cont(ARRAY[0.5, 0.9, 0.95, 0.99]) WITHIN GROUP (ORDER BY {WAIT_MS})
               FILTER (WHERE {TIMED}) AS wait
    FROM job_queue j
    WHERE {where}
    GROUP BY GROUPING SETS ((), (j.workflow_id))
    """
    frame = read_frame(engine, sql, params)
    rows = [_percentile_row(r) for r in frame.to_dict("records")]
    # The empty grouping set yields one fleet row even when no job matches.
    fleet = next((r for r in rows if r["is_fleet"]), None) or _percentile_row({"is_fleet": True})
    fleet = {k: v for k, v in fleet.items() if k not in ("is_fleet", "workflow_id", "workflow_name")}
    workflows = pd.DataFrame([r for r in rows if not r["is_fleet"]], columns=_PERCENTILE_COLUMNS)
    workflows = workflows.sort_values(["total_jobs", "workflow_id"], ascending=[False, True], ignore_index=True)
    covers = duration_covers(f)
    workflows.attrs["covers"] = covers
    return {"fleet": fleet, "workflows": workflows, "covers": covers, "exact": True}


_PERCENTILE_COLUMNS = [
    "workflow_id", "workflow_name", "total_jobs", "completed_jobs", "failed_jobs", "cancelled_jobs",
    "success_rate", "failure_rate", "timed_jobs", "average_duration_ms",
    "p50_duration_ms", "p90_duration_ms", "p95_duration_ms", "p99_duration_ms",
    "average_queue_wait_ms", "p50_queue_wait_ms", "p90_queue_wait_ms", "p95_queue_wait_ms", "p99_queue_wait_ms",
]


def _percentile_row(r: Mapping) -> dict:
    completed, failed = int(r.get("completed_jobs") or 0), int(r.get("failed_jobs") or 0)
    dur, wait = _pvals(r.get("dur")), _pvals(r.get("wait"))
    out = {
        "is_fleet": bool(r.get("is_fleet", True)),
        "workflow_id": r.get("workflow_id"),
        "workflow_name": r.get("workflow_name"),
        "total_jobs": int(r.get("total_jobs") or 0),
        "completed_jobs": completed,
        "failed_jobs": failed,
        "cancelled_jobs": int(r.get("cancelled_jobs") or 0),
        "success_rate": _rate(completed, completed + failed),
        "failure_rate": _rate(failed, completed + failed),
        "timed_jobs": int(r.get("timed_jobs") or 0),
        "average_duration_ms": _float(r.get("average_duration_ms")),
        "average_queue_wait_ms": _float(r.get("average_queue_wait_ms")),
    }
    for p, d, w in zip((50, 90, 95, 99), dur, wait):
        out[f"p{p}_duration_ms"] = d
        out[f"p{p}_queue_wait_ms"] = w
    return out


# ---------------------------------------------------------------------------------------------
# 2. Time series
# ---------------------------------------------------------------------------------------------

_BUCKETS_CTE = """
    buckets AS (
        SELECT g AS bucket
        FROM generate_series(date_trunc(:bucket, CAST(:start AS timestamptz), :tz),
                             CAST(:end AS timestamptz) - interval '1 microsecond',
                             CAST(:step AS interval), :tz) AS g
    )"""


def time_series(engine: Engine, f: AnalyticsFilters) -> pd.DataFrame:
    """Per bucket of the window (empty buckets included, in order): ``bucket`` (bucket start,
    timestamptz), ``bucket_end``, ``partial`` (the window cuts the bucket), ``total_jobs``,
    ``completed``, ``failed``, ``cancelled``, ``success_rate``, ``timed_jobs``,
    ``p50_duration_ms``, ``p95_duration_ms``. Jobs are counted in the bucket of their
    ``created_at``; ``attrs["covers"]`` says which jobs the durations cover."""
    plan = _rollup_plan(engine, f, bucketed=True)
    if plan is not None:
        return _rolled().time_series(engine, f, plan)

    where, params = _scope(f)
    sql = f"""
    WITH {_BUCKETS_CTE},
    agg AS (
        SELECT date_trunc(:bucket, j.created_at, :tz) AS bucket,
               count(*) AS total_jobs,
               count(*) FILTER (WHERE j.status = 'completed') AS completed,
               count(*) FILTER (WHERE j.status = 'failed') AS failed,
               count(*) FILTER (WHERE j.status = 'cancelled') AS cancelled,
               count(*) FILTER (WHERE {TIMED}) AS timed_jobs,
               percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY {DUR_MS}) FILTER (WHERE {TIMED}) AS p
        FROM job_queue j WHERE {where}
        GROUP BY 1
    )
    SELECT b.bucket, date_add(b.bucket, CAST(:step AS interval), :tz) AS bucket_end,
           (b.bucket < CAST(:start AS timestamptz)
            OR date_add(b.bucket, CAST(:step AS interval), :tz) > CAST(:end AS timestamptz)) AS partial,
           coalesce(a.total_jobs, 0) AS total_jobs, coalesce(a.completed, 0) AS completed,
           coalesce(a.failed, 0) AS failed, coalesce(a.cancelled, 0) AS cancelled,
           a.completed::float8 / nullif(a.completed + a.failed, 0) AS success_rate,
           coalesce(a.timed_jobs, 0) AS timed_jobs,
           a.p[1] AS p50_duration_ms, a.p[2] AS p95_duration_ms
    FROM buckets b LEFT JOIN agg a USING (bucket)
    ORDER BY b.bucket
    """
    frame = read_frame(engine, sql, params)
    for col in ("success_rate", "p50_duration_ms", "p95_duration_ms"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame.attrs["covers"] = duration_covers(f)
    return frame


# How far before the window queue_depth_series looks for jobs still waiting at its start.
QUEUE_LOOKBACK = timedelta(days=7)


def queue_depth_series(engine: Engine, f: AnalyticsFilters) -> pd.DataFrame:
    """Jobs waiting in the queue at the start of each bucket (the first point is the window
    start): ``bucket``, ``at`` (the instant measured), ``queue_depth``.

    A job waits from ``created_at`` until it leaves the queue: ``started_at``, or
    ``completed_at`` for a job cancelled before it started; a job still ``pending`` counts as
    waiting until now (a re-queued job's old ``started_at`` is ignored). It waits at instant t
    when ``created_at < t <= left``. The depth is the number waiting at the window start plus
    the running sum of arrivals minus departures per bucket, so no bucket × job join is needed.
    Jobs created before the window that left the queue after its start are looked for in the
    7 days before it (``QUEUE_LOOKBACK``; still-pending jobs at any age), so the cost does not
    grow with the history. With a robot filter only jobs later claimed by those robots count.
    """
    plan = _rollup_plan(engine, f, bucketed=True)
    if plan is not None:
        return _rolled().queue_depth_series(engine, f, plan)

    where, params = _scope(f, window=False)
    params.update(start=f.start, end=f.end, lookback=f.start - QUEUE_LOOKBACK)
    left = "CASE WHEN j.status = 'pending' THEN NULL ELSE coalesce(j.started_at, j.completed_at) END"
    sql = f"""
    WITH {_BUCKETS_CTE},
    inside AS (  -- created in the window
        SELECT j.created_at, {left} AS left_at FROM job_queue j
        WHERE j.created_at >= :start AND j.created_at < :end AND {where}
          AND (j.status = 'pending' OR coalesce(j.started_at, j.completed_at) IS NOT NULL)
    ),
    before AS (  -- created before the window, still waiting at its start
        SELECT j.created_at, NULL::timestamptz AS left_at FROM job_queue j
        WHERE j.status = 'pending' AND j.created_at < :start AND {where}
        UNION ALL
        SELECT j.created_at, coalesce(j.started_at, j.completed_at) FROM job_queue j
        WHERE j.created_at >= :lookback AND j.created_at < :start AND j.status <> 'pending'
          AND coalesce(j.started_at, j.completed_at) >= :start AND {where}
    ),
    events AS (
        SELECT created_at AS t, 1 AS d FROM inside
        UNION ALL SELECT left_at, -1 FROM inside WHERE left_at < :end
        UNION ALL SELECT left_at, -1 FROM before WHERE left_at < :end
    ),
    delta AS (SELECT date_trunc(:bucket, t, :tz) AS bucket, sum(d) AS d FROM events GROUP BY 1)
    SELECT b.bucket, greatest(b.bucket, CAST(:start AS timestamptz)) AS at,
           (SELECT count(*) FROM before)
             + coalesce(sum(coalesce(x.d, 0)) OVER (ORDER BY b.bucket ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
             AS queue_depth
    FROM buckets b LEFT JOIN delta x USING (bucket)
    ORDER BY b.bucket
    """
    frame = read_frame(engine, sql, params)
    frame["queue_depth"] = frame["queue_depth"].astype("int64")
    return frame


# ---------------------------------------------------------------------------------------------
# 3. Weekly throughput
# ---------------------------------------------------------------------------------------------

WEEKLY_COLUMNS = [
    "is_total", "workflow_id", "workflow_name", "this_week", "last_week_to_date", "pace_change_pct",
    "last_week", "avg_4_weeks", "change_pct", "success_rate_this_week", "success_rate_last_week",
    "p95_this_week_ms", "p95_last_week_ms",
]


def weekly_throughput(engine: Engine, f: AnalyticsFilters, now: datetime | None = None) -> pd.DataFrame:
    """Finished jobs (completed + failed) per workflow, by the week (Monday 00:00 local time in
    ``f.tz``) of their ``created_at``; independent of the page window (it is always "now").

    Columns: ``is_total`` (one first row for all workflows together), ``workflow_id``,
    ``workflow_name``, ``this_week`` (so far), ``last_week_to_date`` (last week up to the same
    local weekday and time), ``pace_change_pct`` (this week against that), ``last_week``,
    ``avg_4_weeks`` (mean of the 4 weeks before last week), ``change_pct`` (last week against
    that mean), ``success_rate_this_week``, ``success_rate_last_week``, ``p95_this_week_ms``,
    ``p95_last_week_ms`` (durations of ``f.statuses`` jobs). Changes are None when the base is 0.
    """
    rolled = _rolled().weekly_throughput(engine, f, now or datetime.now(timezone.utc))
    if rolled is not None:
        return rolled
    where, params = _scope(f, window=False)
    params["now"] = now.astimezone(timezone.utc) if now else None
    sql = f"""
    WITH n AS (SELECT coalesce(CAST(:now AS timestamptz), now()) AS now_),
    w AS (SELECT now_, date_trunc('week', now_, :tz) AS this_week FROM n),
    b AS (
        SELECT now_, this_week,
               date_add(this_week, interval '-1 week', :tz) AS last_week,
               date_add(this_week, interval '-5 weeks', :tz) AS first_week,
               date_add(this_week, interval '1 week', :tz) AS next_week,
               date_add(now_, interval '-1 week', :tz) AS last_week_now
        FROM w
    ),
    jobs AS (
        SELECT j.workflow_id, j.workflow_name, j.status, j.created_at,
               date_trunc('week', j.created_at, :tz) AS week,
               CASE WHEN {TIMED} THEN {DUR_MS} END AS dur_ms
        FROM job_queue j, b
        WHERE j.created_at >= b.first_week AND j.created_at < b.next_week
          AND j.status IN ('completed', 'failed') AND {where}
    )
    SELECT grouping(jobs.workflow_id) = 1 AS is_total, jobs.workflow_id, max(jobs.workflow_name) AS workflow_name,
           count(*) FILTER (WHERE week = b.this_week) AS this_week,
           count(*) FILTER (WHERE week = b.last_week AND created_at < b.last_week_now) AS last_week_to_date,
           count(*) FILTER (WHERE week = b.last_week) AS last_week,
           (count(*) FILTER (WHERE week < b.last_week))::float8 / 4 AS avg_4_weeks,
           (count(*) FILTER (WHERE week = b.this_week AND status = 'completed'))::float8
               / nullif(count(*) FILTER (WHERE week = b.this_week), 0) AS success_rate_this_week,
           (count(*) FILTER (WHERE week = b.last_week AND status = 'completed'))::float8
               / nullif(count(*) FILTER (WHERE week = b.last_week), 0) AS success_rate_last_week,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY dur_ms) FILTER (WHERE week = b.this_week) AS p95_this_week_ms,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY dur_ms) FILTER (WHERE week = b.last_week) AS p95_last_week_ms
    FROM jobs CROSS JOIN b
    GROUP BY GROUPING SETS ((), (jobs.workflow_id))
    """
    frame = read_frame(engine, sql, params)
    if frame.empty:
        return pd.DataFrame(columns=WEEKLY_COLUMNS)
    frame.loc[frame["is_total"], "workflow_name"] = "All workflows"
    return weekly_table(frame, f)


def weekly_table(frame: pd.DataFrame, f: AnalyticsFilters) -> pd.DataFrame:
    """The weekly counts, rates and P95s with the changes worked out, total first."""
    def pct(new, base):
        return [(float(a) - float(b)) / float(b) * 100 if b else None for a, b in zip(new, base)]

    frame["change_pct"] = pct(frame["last_week"], frame["avg_4_weeks"])
    frame["pace_change_pct"] = pct(frame["this_week"], frame["last_week_to_date"])
    for col in ("avg_4_weeks", "success_rate_this_week", "success_rate_last_week", "p95_this_week_ms",
                "p95_last_week_ms", "change_pct", "pace_change_pct"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame = frame.sort_values(["is_total", "last_week", "this_week", "workflow_id"],
                              ascending=[False, False, False, True], ignore_index=True)
    frame = frame[WEEKLY_COLUMNS]
    frame.attrs["covers"] = duration_covers(f).replace(", created in the window", "")
    return frame


def week_bounds(tz: str, now: datetime | None = None) -> dict:
    """Start of this week, last week and the 4-week baseline in ``tz`` (Python, for labels)."""
    zone = ZoneInfo(tz)
    local = (now or datetime.now(timezone.utc)).astimezone(zone)
    monday = datetime.combine(local.date() - timedelta(days=local.weekday()), time(0), tzinfo=zone)
    return {
        "this_week": monday,
        "last_week": datetime.combine(monday.date() - timedelta(days=7), time(0), tzinfo=zone),
        "baseline_start": datetime.combine(monday.date() - timedelta(days=35), time(0), tzinfo=zone),
    }


# ---------------------------------------------------------------------------------------------
# 4. Per-workflow figures, efficiency score and SLA
# ---------------------------------------------------------------------------------------------

# metadata.healing_attempts / healing_successes: numbers, or numeric strings; anything else is 0.
def _json_number(key: str) -> str:
    return f"""(CASE jsonb_typeof(j.metadata -> '{key}')
        WHEN 'number' THEN (j.metadata ->> '{key}')::float8
        WHEN 'string' THEN CASE WHEN (j.metadata ->> '{key}') ~ '^\\s*[0-9]+(\\.[0-9]+)?\\s*$'
                                THEN (j.metadata ->> '{key}')::float8 END
        END)"""


def workflow_stats(engine: Engine, f: AnalyticsFilters, limit: int = 500) -> pd.DataFrame:
    """Per workflow: ``executions`` (finished: completed + failed), ``completed``, ``failed``,
    ``success_rate``, ``timed_jobs``, ``p95_duration_ms`` (of ``f.statuses`` jobs),
    ``healing_attempts`` and ``healing_successes`` (sums of metadata over executions),
    ``self_healing_success_rate``, ``error_types`` (distinct classified error types among failed
    jobs). The raw material of the efficiency score and the SLA report."""
    plan = _rollup_plan(engine, f, bucketed=False)
    if plan is not None:
        return _rolled().workflow_stats(engine, f, plan, limit)

    where, params = _scope(f)
    params["limit"] = limit
    sql = f"""
    SELECT j.workflow_id, max(j.workflow_name) AS workflow_name,
           count(*) FILTER (WHERE j.status IN ('completed', 'failed')) AS executions,
           count(*) FILTER (WHERE j.status = 'completed') AS completed,
           count(*) FILTER (WHERE j.status = 'failed') AS failed,
           count(*) FILTER (WHERE {TIMED}) AS timed_jobs,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY {DUR_MS}) FILTER (WHERE {TIMED}) AS p95_duration_ms,
           coalesce(sum({_json_number('healing_attempts')}) FILTER (WHERE j.status IN ('completed', 'failed')), 0)
               AS healing_attempts,
           coalesce(sum({_json_number('healing_successes')}) FILTER (WHERE j.status IN ('completed', 'failed')), 0)
               AS healing_successes,
           count(DISTINCT {ERROR_TYPE}) FILTER (WHERE j.status = 'failed') AS error_types
    FROM job_queue j
    WHERE {where}
    GROUP BY j.workflow_id
    HAVING count(*) FILTER (WHERE j.status IN ('completed', 'failed')) > 0
    ORDER BY executions DESC, j.workflow_id
    LIMIT :limit
    """
    frame = read_frame(engine, sql, params)
    frame["success_rate"] = [_rate(c, e) for c, e in zip(frame["completed"], frame["executions"])]
    frame["self_healing_success_rate"] = [
        _rate(s, a) for s, a in zip(frame["healing_successes"], frame["healing_attempts"])
    ]
    for col in ("p95_duration_ms", "healing_attempts", "healing_successes", "success_rate",
                "self_healing_success_rate"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame.attrs["covers"] = duration_covers(f)
    return frame


EFFICIENCY_WEIGHTS = {"success": 0.40, "duration": 0.30, "healing": 0.15, "error_diversity": 0.15}


def duration_zero_s(target_s: float) -> float:
    """P95 (s) at which the duration score reaches 0 for a given target.

    The orchestrator's rule: 100 at or below the target, 0 at 300 s or more, linear between.
    A target of 300 s or more would leave no ramp, so the zero point then keeps the default
    rule's ratio: 5 × the target (300 s : 60 s)."""
    if target_s < DURATION_ZERO_S:
        return DURATION_ZERO_S
    return target_s * (DURATION_ZERO_S / DEFAULT_P95_TARGET_S)


def duration_score(p95_ms: float | None, target_s: float = DEFAULT_P95_TARGET_S) -> float | None:
    if p95_ms is None or (isinstance(p95_ms, float) and math.isnan(p95_ms)):
        return None
    p95_s = p95_ms / 1000.0
    zero = duration_zero_s(target_s)
    if p95_s <= target_s:
        return 100.0
    if p95_s >= zero:
        return 0.0
    return 100.0 * (zero - p95_s) / (zero - target_s)


def healing_score(healing_attempts: float, executions: int) -> float:
    if not executions or not healing_attempts:
        return 100.0
    return max(0.0, 100.0 - healing_attempts / executions * 100.0)


def error_diversity_score(error_types: int) -> float:
    if error_types <= 0:
        return 100.0
    if error_types <= 2:
        return 80.0
    if error_types <= 5:
        return 50.0
    return 20.0


def efficiency_score(
    success_rate: float | None,
    p95_ms: float | None,
    healing_attempts: float,
    executions: int,
    error_types: int,
    target_s: float = DEFAULT_P95_TARGET_S,
) -> dict:
    """The orchestrator's workflow efficiency score (0–100) and its four components.

    ``0.40 × success % + 0.30 × duration score + 0.15 × healing score + 0.15 × error-diversity
    score``. Returns each component (0–100), its weighted share (``*_points``, which add up to
    the score) and ``efficiency_score``; the score is None when the workflow has no finished
    job or no timed run (its duration score is unknown)."""
    comps = {
        "success": None if success_rate is None or math.isnan(success_rate) else success_rate * 100.0,
        "duration": duration_score(p95_ms, target_s),
        "healing": healing_score(healing_attempts, executions),
        "error_diversity": error_diversity_score(int(error_types)),
    }
    out: dict[str, float | None] = {}
    for name, value in comps.items():
        out[f"{name}_score"] = value
        out[f"{name}_points"] = None if value is None else EFFICIENCY_WEIGHTS[name] * value
    known = [out[f"{n}_points"] for n in comps]
    out["efficiency_score"] = None if any(v is None for v in known) else sum(known)
    return out


def efficiency_table(stats: pd.DataFrame, f: AnalyticsFilters) -> pd.DataFrame:
    """workflow_stats() plus the score, its components and ``rank`` (1 = best), best first."""
    rows = []
    for r in stats.to_dict("records"):
        target = f.target_for(r["workflow_id"])
        rows.append({
            **r, "p95_target_s": target, "duration_zero_s": duration_zero_s(target),
            "healing_attempts_per_execution": (r["healing_attempts"] / r["executions"]) if r["executions"] else None,
            **efficiency_score(r["success_rate"], r["p95_duration_ms"], r["healing_attempts"],
                               r["executions"], r["error_types"], target),
        })
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out = out.sort_values(["efficiency_score", "executions", "workflow_id"], ascending=[False, False, True],
                          na_position="last", ignore_index=True)
    out["rank"] = range(1, len(out) + 1)
    out.attrs["covers"] = stats.attrs.get("covers")
    return out


def workflow_efficiency(engine: Engine, f: AnalyticsFilters) -> pd.DataFrame:
    """Efficiency score per workflow with its components, ranked (see efficiency_table)."""
    return efficiency_table(workflow_stats(engine, f), f)


def sla_table(stats: pd.DataFrame, f: AnalyticsFilters) -> pd.DataFrame:
    """Per workflow: success rate and P95 against the targets, and how far off a breach is.

    Adds ``success_target``, ``success_breach``, ``success_shortfall_pp`` (percentage points
    below target), ``p95_target_ms``, ``p95_breach``, ``p95_excess_ms``, ``p95_excess_pct``
    and ``breached``; breaches first, worst first."""
    rows = []
    for r in stats.to_dict("records"):
        target_ms = f.target_for(r["workflow_id"]) * 1000.0
        rate, p95 = r["success_rate"], r["p95_duration_ms"]
        s_breach = rate is not None and not math.isnan(rate) and rate < f.success_target
        p_breach = p95 is not None and not math.isnan(p95) and p95 > target_ms
        rows.append({
            "workflow_id": r["workflow_id"], "workflow_name": r["workflow_name"],
            "executions": r["executions"], "success_rate": rate, "success_target": f.success_target,
            "success_breach": bool(s_breach),
            "success_shortfall_pp": (f.success_target - rate) * 100.0 if s_breach else 0.0,
            "p95_duration_ms": p95, "p95_target_ms": target_ms, "p95_breach": bool(p_breach),
            "p95_excess_ms": (p95 - target_ms) if p_breach else 0.0,
            "p95_excess_pct": (p95 - target_ms) / target_ms * 100.0 if p_breach else 0.0,
            "breached": bool(s_breach or p_breach),
        })
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out = out.sort_values(["breached", "success_shortfall_pp", "p95_excess_pct", "workflow_id"],
                          ascending=[False, False, False, True], ignore_index=True)
    out.attrs["covers"] = stats.attrs.get("covers")
    return out


def sla_report(engine: Engine, f: AnalyticsFilters) -> pd.DataFrame:
    """SLA per workflow (see sla_table)."""
    return sla_table(workflow_stats(engine, f), f)


# ---------------------------------------------------------------------------------------------
# 5. Distributions
# ---------------------------------------------------------------------------------------------

def duration_histogram(engine: Engine, f: AnalyticsFilters, bins: int = 40, log: bool | None = None) -> pd.DataFrame:
    """Histogram of durations, binned in SQL (``width_bucket``), split by status.

    Columns: ``bin`` (1..bins), ``bin_start_ms``, ``bin_end_ms``, ``status``, ``jobs``; every
    bin appears (an empty one once, with status None and 0 jobs). With ``log`` (default
    ``f.log_scale``) the bins are equal in log(duration) and durations below 1 ms count as 1 ms.
    The last bin includes the maximum. No rows when no job is timed."""
    plan = _rollup_plan(engine, f, bucketed=False)
    if plan is not None:
        return _rolled().duration_histogram(engine, f, plan, bins, log)

    log = f.log_scale if log is None else log
    where, params = _scope(f)
    params["bins"] = int(bins)
    value = f"ln(greatest({DUR_MS}, 1))" if log else DUR_MS
    edge = "exp({})" if log else "{}"
    sql = f"""
    WITH d AS (SELECT j.status, {value} AS v FROM job_queue j WHERE {where} AND {TIMED}),
    r AS (SELECT min(v) AS lo, max(v) AS hi FROM d),
    w AS (SELECT lo, CASE WHEN hi > lo THEN (hi - lo) / :bins ELSE 1.0 / :bins END AS width
          FROM r WHERE lo IS NOT NULL),
    binned AS (
        SELECT least(greatest(floor((d.v - w.lo) / w.width)::int + 1, 1), :bins) AS bin, d.status, count(*) AS jobs
        FROM d, w GROUP BY 1, 2
    )
    SELECT g.bin, {edge.format('w.lo + (g.bin - 1) * w.width')} AS bin_start_ms,
           {edge.format('w.lo + g.bin * w.width')} AS bin_end_ms, b.status, coalesce(b.jobs, 0) AS jobs
    FROM w CROSS JOIN generate_series(1, :bins) AS g(bin) LEFT JOIN binned b ON b.bin = g.bin
    ORDER BY g.bin, b.status
    """
    frame = read_frame(engine, sql, params)
    frame.attrs["covers"] = duration_covers(f)
    frame.attrs["log"] = log
    return frame


def duration_box_stats(engine: Engine, f: AnalyticsFilters, limit: int = 25) -> pd.DataFrame:
    """Box-plot statistics of durations per workflow (the busiest ``limit``), from SQL:
    ``timed_jobs``, ``min_ms``, ``q1_ms``, ``median_ms``, ``q3_ms``, ``p90_ms``, ``p95_ms``,
    ``p99_ms``, ``max_ms``, ``lowerfence_ms``/``upperfence_ms`` (Tukey: the most extreme
    durations within 1.5 × IQR of the quartiles)."""
    plan = _rollup_plan(engine, f, bucketed=False)
    if plan is not None:
        return _rolled().duration_box_stats(engine, f, plan, limit)

    where, params = _scope(f)
    params["limit"] = limit
    sql = f"""
    WITH d AS MATERIALIZED (
        SELECT j.workflow_id, j.workflow_name, {DUR_MS} AS v FROM job_queue j WHERE {where} AND {TIMED}
    ),
    q AS (
        SELECT workflow_id, max(workflow_name) AS workflow_name, count(*) AS timed_jobs,
               min(v) AS min_ms, max(v) AS max_ms,
               percentile_cont(ARRAY[0.25, 0.5, 0.75, 0.9, 0.95, 0.99]) WITHIN GROUP (ORDER BY v) AS p
        FROM d GROUP BY workflow_id ORDER BY count(*) DESC, workflow_id LIMIT :limit
    ),
    fences AS (
        SELECT q.workflow_id,
               min(d.v) FILTER (WHERE d.v >= q.p[1] - 1.5 * (q.p[3] - q.p[1])) AS lowerfence_ms,
               max(d.v) FILTER (WHERE d.v <= q.p[3] + 1.5 * (q.p[3] - q.p[1])) AS upperfence_ms
        FROM d JOIN q USING (workflow_id) GROUP BY q.workflow_id
    )
    SELECT q.workflow_id, q.workflow_name, q.timed_jobs, q.min_ms,
           q.p[1] AS q1_ms, q.p[2] AS median_ms, q.p[3] AS q3_ms, q.p[4] AS p90_ms, q.p[5] AS p95_ms,
           q.p[6] AS p99_ms, q.max_ms, fences.lowerfence_ms, fences.upperfence_ms
    FROM q JOIN fences USING (workflow_id)
    ORDER BY median_ms DESC, workflow_id
    """
    frame = read_frame(engine, sql, params)
    frame.attrs["covers"] = duration_covers(f)
    return frame


# ---------------------------------------------------------------------------------------------
# 6. Errors
# ---------------------------------------------------------------------------------------------

def errors_over_time(engine: Engine, f: AnalyticsFilters) -> pd.DataFrame:
    """Failed jobs per bucket and error type (the orchestrator's classification; a failure
    without a message counts as UnknownError): ``bucket``, ``error_type``, ``failures``.
    Only non-empty (bucket, type) pairs are returned."""
    plan = _rollup_plan(engine, f, bucketed=True)
    if plan is not None:
        return _rolled().errors_over_time(engine, f, plan)

    where, params = _scope(f)
    sql = f"""
    SELECT date_trunc(:bucket, j.created_at, :tz) AS bucket, {ERROR_TYPE} AS error_type, count(*) AS failures
    FROM job_queue j WHERE {where} AND j.status = 'failed'
    GROUP BY 1, 2 ORDER BY 1, 2
    """
    return read_frame(engine, sql, params)


def errors_by_workflow(engine: Engine, f: AnalyticsFilters) -> pd.DataFrame:
    """Failed jobs per workflow and error type: ``workflow_id``, ``workflow_name``,
    ``error_type``, ``failures``, busiest first."""
    plan = _rollup_plan(engine, f, bucketed=False)
    if plan is not None:
        return _rolled().errors_by_workflow(engine, f, plan)

    where, params = _scope(f)
    sql = f"""
    SELECT j.workflow_id, max(j.workflow_name) AS workflow_name, {ERROR_TYPE} AS error_type, count(*) AS failures
    FROM job_queue j WHERE {where} AND j.status = 'failed'
    GROUP BY j.workflow_id, 3 ORDER BY failures DESC, j.workflow_id, 3
    LIMIT 2000
    """
    return read_frame(engine, sql, params)


def top_error_messages(engine: Engine, f: AnalyticsFilters, limit: int = 10) -> pd.DataFrame:
    """The most frequent error messages of failed jobs: ``error_message`` (first 500
    characters), ``error_type``, ``failures``, ``workflows`` (how many), ``workflow_id`` (when
    only one), ``last_seen`` (latest created_at)."""
    plan = _rollup_plan(engine, f, bucketed=False)
    if plan is not None:
        return _rolled().top_error_messages(engine, f, plan, limit)

    where, params = _scope(f)
    params["limit"] = limit
    sql = f"""
    SELECT left(j.error_message, 500) AS error_message, {ERROR_TYPE} AS error_type, count(*) AS failures,
           count(DISTINCT j.workflow_id) AS workflows,
           CASE WHEN count(DISTINCT j.workflow_id) = 1 THEN min(j.workflow_id) END AS workflow_id,
           max(j.created_at) AS last_seen
    FROM job_queue j WHERE {where} AND j.status = 'failed' AND j.error_message IS NOT NULL
    GROUP BY 1, 2 ORDER BY failures DESC, last_seen DESC
    LIMIT :limit
    """
    return read_frame(engine, sql, params)


# ---------------------------------------------------------------------------------------------
# 7. Anomalies
# ---------------------------------------------------------------------------------------------

ANOMALY_BASELINE_BUCKETS = 8
ANOMALY_THRESHOLD = 3.5
ANOMALY_MIN_JOBS = 20
ANOMALY_MIN_BASELINE = 5
MAD_TO_SIGMA = 1.4826
# Scale floors, so that a perfectly steady baseline (MAD 0) does not turn a tiny change into a
# huge z: failure rate: 5 percentage points, or the binomial standard error of the latest
# bucket if larger; P95 (compared in log space): ln(1.1), i.e. a 10 % change.
FAILURE_RATE_SCALE_FLOOR = 0.05
LOG_P95_SCALE_FLOOR = math.log(1.1)


def _local_add(t: datetime, delta: timedelta, tz: str) -> datetime:
    """t + delta in wall-clock terms of ``tz`` for whole days (PostgreSQL's date_add with a zone)."""
    if delta % timedelta(days=1):
        return t + delta
    local = t.astimezone(ZoneInfo(tz))
    return datetime.combine(local.date() + delta, local.time(), tzinfo=ZoneInfo(tz)).astimezone(timezone.utc)


def robust_z(value: float | None, median: float | None, mad: float | None, floor: float) -> float | None:
    """(value − median) / max(1.4826 × MAD, floor): a z-score that outliers in the baseline do
    not inflate (1.4826 × MAD estimates the standard deviation of normal data)."""
    if value is None or median is None or mad is None or any(map(math.isnan, (value, median, mad))):
        return None
    scale = max(MAD_TO_SIGMA * mad, floor)
    return (value - median) / scale if scale > 0 else None


def failure_rate_floor(median: float, jobs: int) -> float:
    """Scale floor for a failure rate: 5 pp or the binomial standard error, whichever is larger."""
    p = min(max(median, 0.0), 1.0)
    return max(FAILURE_RATE_SCALE_FLOOR, math.sqrt(p * (1 - p) / jobs) if jobs else 0.0)


ANOMALY_COLUMNS = [
    "workflow_id", "workflow_name", "metric", "latest", "latest_jobs", "baseline_median", "baseline_mad",
    "baseline_buckets", "band_low", "band_high", "z", "flagged", "direction",
]


def anomalies(
    engine: Engine,
    f: AnalyticsFilters,
    baseline_buckets: int = ANOMALY_BASELINE_BUCKETS,
    threshold: float = ANOMALY_THRESHOLD,
    min_jobs: int = ANOMALY_MIN_JOBS,
) -> dict:
    """Robust z-score of each workflow's failure rate and P95 duration in the latest complete
    bucket against its own previous ``baseline_buckets`` buckets (``f.bucket``, in ``f.tz``).

    * The latest complete bucket is the last one that ends at or before the window end; the
      window start is ignored (the baseline reaches back before it).
    * A bucket counts only with at least ``min_jobs`` finished jobs (failure rate) or timed jobs
      (P95), in the baseline and in the latest bucket; a workflow needs 5 baseline buckets.
    * Baseline = median of the buckets, spread = median absolute deviation (MAD);
      z = (latest − median) / max(1.4826 × MAD, floor). P95 is compared in log space
      (durations vary by factors, and the log makes that spread symmetric); the floors are
      5 percentage points (or the latest bucket's binomial standard error) for the failure rate
      and ln 1.1 (a 10 % change) for P95, so a perfectly steady baseline does not turn a tiny
      change into a huge z.
    * |z| > ``threshold`` is flagged (3.5: Iglewicz and Hoaglin's usual cut-off for the
      modified z-score); ``direction`` is ``worse`` (higher) or ``better``.

    Returns ``{"summary", "series", "latest_bucket", "threshold", "covers"}``. ``summary``: one
    row per workflow and metric (``failure_rate`` or ``p95_duration_ms``) with ``latest``,
    ``latest_jobs``, ``baseline_median``, ``baseline_mad`` (in log space for P95),
    ``baseline_buckets``, ``band_low``/``band_high`` (the values at z = ∓threshold), ``z``,
    ``flagged``, ``direction``; flagged first. ``series``: per workflow and bucket
    ``finished``, ``failed``, ``timed_jobs``, ``failure_rate``, ``p95_duration_ms``, ``is_latest``.
    """
    where, params = _scope(f, window=False)
    params.update(end=f.end, min_jobs=min_jobs, back=-(baseline_buckets + 1))
    sql = f"""
    WITH s AS (SELECT date_trunc(:bucket, CAST(:end AS timestamptz), :tz) AS stop),
    b AS (SELECT stop, date_add(stop, CAST(:step AS interval) * CAST(:back AS int), :tz) AS first,
                 date_add(stop, CAST(:step AS interval) * -1, :tz) AS latest FROM s),
    per AS (
        SELECT j.workflow_id, max(j.workflow_name) AS workflow_name,
               date_trunc(:bucket, j.created_at, :tz) AS bucket,
               count(*) FILTER (WHERE j.status IN ('completed', 'failed')) AS finished,
               count(*) FILTER (WHERE j.status = 'failed') AS failed,
               count(*) FILTER (WHERE {TIMED}) AS timed_jobs,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY {DUR_MS}) FILTER (WHERE {TIMED}) AS p95
        FROM job_queue j, b
        WHERE j.created_at >= b.first AND j.created_at < b.stop AND {where}
        GROUP BY j.workflow_id, 3
    ),
    rated AS (
        SELECT per.*, failed::float8 / nullif(finished, 0) AS failure_rate,
               ln(greatest(p95, 1)) AS lp95, (bucket = b.latest) AS is_latest
        FROM per, b
    ),
    base AS (
        SELECT workflow_id,
               CASE WHEN finished >= :min_jobs THEN failure_rate END AS fr,
               CASE WHEN timed_jobs >= :min_jobs THEN lp95 END AS lp
        FROM rated WHERE NOT is_latest
    ),
    med AS (
        SELECT workflow_id, count(fr) AS n_fr, count(lp) AS n_lp,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY fr) AS fr_med,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY lp) AS lp_med
        FROM base GROUP BY workflow_id
    ),
    mad AS (
        SELECT base.workflow_id,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(base.fr - med.fr_med)) AS fr_mad,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(base.lp - med.lp_med)) AS lp_mad
        FROM base JOIN med USING (workflow_id) GROUP BY base.workflow_id
    )
    SELECT r.workflow_id, r.workflow_name, r.bucket, r.finished, r.failed, r.timed_jobs, r.failure_rate,
           r.p95 AS p95_duration_ms, r.lp95, r.is_latest, b.latest AS latest_bucket,
           med.n_fr, med.n_lp, med.fr_med, med.lp_med, mad.fr_mad, mad.lp_mad
    FROM rated r CROSS JOIN b LEFT JOIN med USING (workflow_id) LEFT JOIN mad USING (workflow_id)
    ORDER BY r.workflow_id, r.bucket
    """
    bounds = read_frame(engine, "SELECT date_trunc(:bucket, CAST(:end AS timestamptz), :tz) AS stop", params)
    stop = bounds["stop"].iloc[0].to_pydatetime()
    step = BUCKET_STEP[f.bucket]
    frame = _rolled().anomaly_series(engine, f, _local_add(stop, step * -(baseline_buckets + 1), f.tz), stop,
                                     _local_add(stop, -step, f.tz), min_jobs)
    if frame is None:
        frame = read_frame(engine, sql, params)
    latest_bucket = frame["latest_bucket"].iloc[0] if not frame.empty else None
    series = frame[["workflow_id", "workflow_name", "bucket", "finished", "failed", "timed_jobs",
                    "failure_rate", "p95_duration_ms", "is_latest"]].copy()
    for col in ("failure_rate", "p95_duration_ms"):
        series[col] = pd.to_numeric(series[col], errors="coerce").astype("float64")
    rows = []
    for wf, part in frame.groupby("workflow_id", sort=True):
        latest = part[part["is_latest"]]
        if latest.empty:
            continue
        lr, first = latest.iloc[0], part.iloc[0]
        n_fr, n_lp = int(_float(first["n_fr"]) or 0), int(_float(first["n_lp"]) or 0)
        fr_med, fr_mad = _float(first["fr_med"]), _float(first["fr_mad"])
        lp_med, lp_mad = _float(first["lp_med"]), _float(first["lp_mad"])
        common = {"workflow_id": wf, "workflow_name": first["workflow_name"]}
        if lr["finished"] >= min_jobs and n_fr >= ANOMALY_MIN_BASELINE:
            floor = failure_rate_floor(fr_med, int(lr["finished"]))
            z = robust_z(_float(lr["failure_rate"]), fr_med, fr_mad, floor)
            scale = max(MAD_TO_SIGMA * fr_mad, floor)
            rows.append({**common, "metric": "failure_rate", "latest": _float(lr["failure_rate"]),
                         "latest_jobs": int(lr["finished"]), "baseline_median": fr_med, "baseline_mad": fr_mad,
                         "baseline_buckets": n_fr, "band_low": max(0.0, fr_med - threshold * scale),
                         "band_high": min(1.0, fr_med + threshold * scale), "z": z})
        if lr["timed_jobs"] >= min_jobs and n_lp >= ANOMALY_MIN_BASELINE:
            z = robust_z(_float(lr["lp95"]), lp_med, lp_mad, LOG_P95_SCALE_FLOOR)
            scale = max(MAD_TO_SIGMA * lp_mad, LOG_P95_SCALE_FLOOR)
            rows.append({**common, "metric": "p95_duration_ms", "latest": _float(lr["p95_duration_ms"]),
                         "latest_jobs": int(lr["timed_jobs"]), "baseline_median": math.exp(lp_med),
                         "baseline_mad": lp_mad, "baseline_buckets": n_lp,
                         "band_low": math.exp(lp_med - threshold * scale),
                         "band_high": math.exp(lp_med + threshold * scale), "z": z})
    for r in rows:
        z = r["z"]
        r["flagged"] = z is not None and abs(z) > threshold
        r["direction"] = None if z is None else ("worse" if z > 0 else "better" if z < 0 else "same")
    summary = pd.DataFrame(rows, columns=ANOMALY_COLUMNS)
    if not summary.empty:
        summary["abs_z"] = summary["z"].abs()
        summary = summary.sort_values(["flagged", "abs_z", "workflow_id"], ascending=[False, False, True],
                                      na_position="last", ignore_index=True).drop(columns="abs_z")
    return {"summary": summary, "series": series, "latest_bucket": latest_bucket, "threshold": threshold,
            "covers": duration_covers(f).replace(", created in the window", "")}


# ---------------------------------------------------------------------------------------------
# Filter choices
# ---------------------------------------------------------------------------------------------

def filter_options(engine: Engine, limit: int = 500) -> dict:
    """Choices for the filter controls: ``environments`` (list), ``workflows`` (list of
    ``{workflow_id, workflow_name}``), ``robots`` (list of ``{robot_id, name}``).

    Distinct values come from a loose index scan (a recursive CTE that jumps from one value to
    the next in an fm_* index), so the cost is the number of distinct values, not of jobs."""
    envs = read_frame(engine, """
        WITH RECURSIVE e AS (
            (SELECT environment FROM job_queue ORDER BY environment LIMIT 1)
            UNION ALL
            SELECT (SELECT environment FROM job_queue WHERE environment > e.environment ORDER BY environment LIMIT 1)
            FROM e WHERE e.environment IS NOT NULL
        )
        SELECT environment FROM e WHERE environment IS NOT NULL
        UNION SELECT environment FROM robots WHERE environment IS NOT NULL
        ORDER BY 1 LIMIT :limit
    """, {"limit": limit})
    workflows = read_frame(engine, """
        WITH RECURSIVE w AS (
            (SELECT workflow_id FROM job_queue ORDER BY workflow_id LIMIT 1)
            UNION ALL
            SELECT (SELECT workflow_id FROM job_queue WHERE workflow_id > w.workflow_id ORDER BY workflow_id LIMIT 1)
            FROM w WHERE w.workflow_id IS NOT NULL
        ),
        ids AS (SELECT workflow_id FROM w WHERE workflow_id IS NOT NULL LIMIT :limit)
        SELECT ids.workflow_id,
               (SELECT j.workflow_name FROM job_queue j WHERE j.workflow_id = ids.workflow_id
                ORDER BY j.created_at DESC LIMIT 1) AS workflow_name
        FROM ids ORDER BY 2, 1
    """, {"limit": limit})
    robots = read_frame(engine, """
        SELECT robot_id::text AS robot_id, name FROM robots ORDER BY name, robot_id::text LIMIT :limit
    """, {"limit": limit})
    return {
        "environments": [e for e in envs["environment"].tolist()],
        "workflows": workflows.to_dict("records"),
        "robots": robots.to_dict("records"),
    }


# ---------------------------------------------------------------------------------------------
# Fleet utilization (the robots module owns the definition; this applies the page's filters)
# ---------------------------------------------------------------------------------------------

def fleet_utilization(engine: Engine, f: AnalyticsFilters) -> dict | None:
    """Busy share per robot and by hour of the week (in ``f.tz``) over the window, from
    data.robots (its module docstring defines utilization). Robot and environment filters
    apply (the environment through the robots table); workflow filters do not. Returns
    ``{"robots": DataFrame, "hour_of_week": DataFrame}``, or None when data.robots does not
    offer the functions."""
    try:
        from data import robots as robots_data

        per_robot, by_hour = robots_data.utilization, robots_data.utilization_by_hour_of_week
    except (ImportError, AttributeError):
        return None
    ids: list[str] | None = list(f.robots) or None
    env = f.environment or None
    robots, hours = side_by_side(lambda: per_robot(engine, ids, f.start, f.end, environment=env),
                                 lambda: by_hour(engine, ids, f.start, f.end, f.tz, environment=env))
    return {"robots": robots, "hour_of_week": hours}
