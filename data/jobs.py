"""Job history (/executions) and one job's story (/executions/<job_id>).

Every function here is callable on its own (pages, the REST API and the bench harness time them
one by one) and every query is bounded:

- lists page by keyset on an index (``(created_at, id)``, or ``(completed_at - started_at, id)``
  for the duration sort), never OFFSET, so page 1 and page 5,000 cost the same;
- counts stop at COUNT_CAP + 1 rows ("more than 10,000", with the planner's estimate);
- the summary covers at most SUMMARY_CAP jobs of the filtered set (the newest ones), and says so;
- one job's neighbours and its workflow's percentiles read a bounded index range;
- a text search in error messages uses a trigram index where the server has one; without it,
  the search reads at most the newest SEARCH_SCAN_CAP jobs with an error message in the time
  range (the partial index fm_job_error_created), and says since when it searched (search_scope).

Filters come from the URL (the contract in components/links.py) through ``parse_filters``, a
pure function that never raises: malformed values become human-readable problems and are
ignored.
"""
from __future__ import annotations

import base64
import binascii
import builtins
import io
import json
import math
import pickle
import pickletools
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterator, Mapping
from zoneinfo import ZoneInfo

import pandas as pd
from sqlalchemy.engine import Engine

from data.db import read_frame, read_row
from data.errors import classify_error, error_type_sql
from data.timeutil import safe_tz

# ---------------------------------------------------------------------------------------------
# Limits (documented in the page and the export)
# ---------------------------------------------------------------------------------------------
STATUSES = ("pending", "running", "completed", "failed", "cancelled")
FINISHED_RAN = ("completed", "failed")  # the jobs a duration statistic covers by default
PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
COUNT_CAP = 10_000  # exact count up to this many jobs; "more than 10,000" beyond
SUMMARY_CAP = 50_000  # the summary covers at most the newest 50,000 jobs of the filtered set
EXPORT_ROW_CAP = 100_000  # a CSV export holds at most this many rows
EXPORT_CHUNK = 2_000
# Without a trigram index, a text search reads the messages of at most this many jobs with an error
# message: the newest ones of the time range. What was searched is reported with the results.
SEARCH_SCAN_CAP = 100_000
COMPARISON_RUNS = 1_000  # a job's duration is compared with its workflow's last 1,000 finished runs

RANGES = {"1h": "1 hour", "24h": "24 hours", "7d": "7 days", "30d": "30 days", "90d": "90 days"}
RANGE_VALUES = (*RANGES, "today", "custom")
SORTS = {
    "-created": "newest first",
    "created": "oldest first",
    "-duration": "longest first",
    "duration": "shortest first",
}
DEFAULT_SORT = "-created"

_MAX_LIST_ITEMS = 50
_MAX_TEXT = 255
_MAX_SEARCH = 200
_ERROR_TYPE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")


# ---------------------------------------------------------------------------------------------
# Filters: parsed from the URL query, never raising
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobFilters:
    """The job history's filters (components/links.py is the URL contract).

    ``start``/``end`` (the URL's from/to) are used with range='custom'; an instant without an
    offset is read in the viewer's time zone. The window is half-open: start <= created_at < end.
    """

    status: tuple[str, ...] = ()
    workflow: tuple[str, ...] = ()
    robot: str | None = None
    environment: str | None = None
    range: str | None = None  # None: any time
    start: datetime | None = None
    end: datetime | None = None
    error_type: str | None = None
    q: str | None = None

    def to_query(self) -> dict[str, str]:
        """The URL query for these filters (what executions_link() builds)."""
        query: dict[str, str] = {}
        if self.status:
            query["status"] = ",".join(self.status)
        if self.workflow:
            query["workflow"] = ",".join(self.workflow)
        if self.robot:
            query["robot"] = self.robot
        if self.environment:
            query["environment"] = self.environment
        if self.range:
            query["range"] = self.range
        if self.range == "custom":
            if self.start is not None:
                query["from"] = self.start.isoformat()
            if self.end is not None:
                query["to"] = self.end.isoformat()
        if self.error_type:
            query["error_type"] = self.error_type
        if self.q:
            query["q"] = self.q
        return query

    def is_empty(self) -> bool:
        return not self.to_query()


def _first(value) -> str | None:
    """A query value as one string (lists, as some parsers give for repeated keys, are joined)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value if v is not None)
    return str(value)


def _split(value: str) -> list[str]:
    seen: list[str] = []
    for part in value.split(","):
        part = part.strip()
        if part and part not in seen:
            seen.append(part)
    return seen


def parse_instant(text: str) -> datetime | None:
    """An ISO 8601 instant ('2025-03-01T10:00:00+01:00', '...Z', or a date); None if malformed.

    Without an offset the result is naive: the caller reads it in the viewer's time zone.
    """
    text = text.strip()
    if not text or len(text) > 40:
        return None
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # A '+' in a URL query may arrive as a space: '2025-03-01T10:00:00 01:00'.
    text = re.sub(r"(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$", r"\1+\2", text)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if not 1970 <= value.year <= 2200:
        return None
    return value


def parse_filters(query: Mapping[str, Any] | None) -> tuple[JobFilters, list[str]]:
    """Filters from a URL query, and the problems found (each malformed value is ignored)."""
    query = dict(query or {})
    problems: list[str] = []
    status: list[str] = []
    raw = _first(query.get("status"))
    if raw:
        for value in _split(raw):
            if value.lower() in STATUSES:
                if value.lower() not in status:
                    status.append(value.lower())
            else:
                problems.append(
                    f"Unknown status {value[:40]!r} ignored (expected one of {', '.join(STATUSES)})."
                )

    workflow: list[str] = []
    raw = _first(query.get("workflow"))
    if raw:
        for value in _split(raw):
            if len(value) > _MAX_TEXT:
                problems.append("A workflow id longer than 255 characters was ignored.")
            elif len(workflow) >= _MAX_LIST_ITEMS:
                problems.append(f"Only the first {_MAX_LIST_ITEMS} workflows are used.")
                break
            else:
                workflow.append(value)

    def text_value(name: str, limit: int) -> str | None:
        value = _first(query.get(name))
        if value is None or not value.strip():
            return None
        value = value.strip()
        if len(value) > limit:
            problems.append(f"The {name} filter is longer than {limit} characters and was ignored.")
            return None
        return value

    robot = text_value("robot", _MAX_TEXT)
    environment = text_value("environment", 100)

    error_type = text_value("error_type", 100)
    if error_type is not None and not _ERROR_TYPE_RE.match(error_type):
        problems.append(f"Error type {error_type[:40]!r} is not a valid type name and was ignored.")
        error_type = None

    q = _first(query.get("q"))
    q = q.strip() if q else None
    if q and len(q) > _MAX_SEARCH:
        problems.append(f"The search text was cut to {_MAX_SEARCH} characters.")
        q = q[:_MAX_SEARCH]
    q = q or None

    range_ = (_first(query.get("range")) or "").strip().lower() or None
    raw_from, raw_to = _first(query.get("from")), _first(query.get("to"))
    start = end = None
    if range_ is not None and range_ not in RANGE_VALUES:
        problems.append(f"Unknown time range {range_[:20]!r} ignored (expected {', '.join(RANGE_VALUES)}).")
        range_ = None
    if range_ is None and (raw_from or raw_to):
        range_ = "custom"  # from/to alone mean a custom window
    if range_ == "custom":
        for name, raw_value in (("from", raw_from), ("to", raw_to)):
            if not raw_value or not raw_value.strip():
                continue
            parsed = parse_instant(raw_value)
            if parsed is None:
                problems.append(f"{name!r} is not an ISO 8601 date/time ({raw_value[:40]!r}) and was ignored.")
            elif name == "from":
                start = parsed
            else:
                end = parsed
        if start is not None and end is not None and _as_utc(start) >= _as_utc(end):
            problems.append("'from' is not before 'to': the custom time range was ignored.")
            start = end = None
        if start is None and end is None:
            range_ = None
    elif raw_from or raw_to:
        problems.append(f"'from'/'to' are used only with range=custom; range={range_} applies.")

    filters = JobFilters(
        status=tuple(status), workflow=tuple(workflow), robot=robot, environment=environment,
        range=range_, start=start, end=end, error_type=error_type, q=q,
    )
    return filters, problems


def _as_utc(value: datetime) -> datetime:
    # Only for checking that from < to: an instant without an offset is read as UTC here.
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def parse_sort(value) -> tuple[str, list[str]]:
    raw = (_first(value) or "").strip()
    if not raw:
        return DEFAULT_SORT, []
    if raw in SORTS:
        return raw, []
    return DEFAULT_SORT, [f"Unknown sort {raw[:20]!r} ignored (expected {', '.join(SORTS)})."]


def filters_from_dict(data: Mapping[str, Any] | None) -> JobFilters:
    """Filters from their URL query form (a dict as kept in a dcc.Store); problems dropped."""
    return parse_filters(data or {})[0]


def escape_like(text: str) -> str:
    """Text for LIKE/ILIKE with its wildcards escaped, so '%' and '_' match themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _aware(value: datetime, tz: str) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=ZoneInfo(safe_tz(tz)))


def _range_sql(filters: JobFilters, tz: str, a: str) -> tuple[list[str], dict]:
    """WHERE conditions for the filters' time range alone (created_at)."""
    where: list[str] = []
    params: dict[str, Any] = {}
    if filters.range in RANGES:
        where.append(f"{a}.created_at >= now() - CAST(:f_span AS interval)")
        params["f_span"] = RANGES[filters.range]
    elif filters.range == "today":
        where.append(f"{a}.created_at >= date_trunc('day', now() AT TIME ZONE :f_tz) AT TIME ZONE :f_tz")
        params["f_tz"] = safe_tz(tz)
    elif filters.range == "custom":
        if filters.start is not None:
            where.append(f"{a}.created_at >= :f_start")
            params["f_start"] = _aware(filters.start, tz)
        if filters.end is not None:
            where.append(f"{a}.created_at < :f_end")
            params["f_end"] = _aware(filters.end, tz)
    return where, params


def filter_sql(filters: JobFilters, tz: str = "UTC", alias: str = "j", *,
               search_since: datetime | None = None) -> tuple[list[str], dict]:
    """WHERE conditions (AND-ed) and bound parameters for the filters, on job_queue alias `alias`.

    `search_since` (from search_scope) limits a text search to jobs created at or after it.
    """
    a = alias
    where: list[str] = []
    params: dict[str, Any] = {}
    # One value is written with '=' so the planner can walk the (column, created_at, id) index in
    # order from a keyset bound; several values use ANY.
    if len(filters.status) == 1:
        where.append(f"{a}.status = :f_status")
        params["f_status"] = filters.status[0]
    elif filters.status:
        where.append(f"{a}.status = ANY(:f_status)")
        params["f_status"] = list(filters.status)
    if len(filters.workflow) == 1:
        where.append(f"{a}.workflow_id = :f_workflow")
        params["f_workflow"] = filters.workflow[0]
    elif filters.workflow:
        where.append(f"{a}.workflow_id = ANY(:f_workflow)")
        params["f_workflow"] = list(filters.workflow)
    if filters.robot:
        where.append(f"{a}.robot_id::text = :f_robot")
        params["f_robot"] = filters.robot
    if filters.environment:
        where.append(f"{a}.environment = :f_env")
        params["f_env"] = filters.environment
    range_where, range_params = _range_sql(filters, tz, a)
    where += range_where
    params.update(range_params)
    if filters.error_type:
        # Backed by the expression index fm_job_error_type (same expression, ordered by
        # created_at, id), which also gives the planner statistics on error types.
        where.append(f"{a}.error_message IS NOT NULL AND {error_type_sql(f'{a}.error_message')} = :f_etype")
        params["f_etype"] = filters.error_type
    if filters.q:
        # 'IS NOT NULL' lets the planner use the partial index fm_job_error_created (jobs with a message).
        where.append(f"{a}.error_message IS NOT NULL AND {a}.error_message ILIKE :f_q ESCAPE '\\'")
        params["f_q"] = f"%{escape_like(filters.q)}%"
        if search_since is not None:
            where.append(f"{a}.created_at >= :f_search_since")
            params["f_search_since"] = search_since
    return where, params


# ---------------------------------------------------------------------------------------------
# Text search: what it reads
# ---------------------------------------------------------------------------------------------
_TRIGRAM_WORD = re.compile(r"[^\W_]{3}")


def has_trigram_index(engine: Engine) -> bool:
    """Whether job_queue has a valid trigram index (pg_trgm, GIN or GiST) on error_message itself,
    whatever its name (data/schema.py creates fm_job_error_trgm where the server offers pg_trgm)."""
    row = read_row(engine, """
        SELECT EXISTS (
            SELECT 1 FROM pg_index i
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attname = 'error_message'
            JOIN pg_opclass oc ON oc.oid = ANY (i.indclass::oid[])
            WHERE i.indrelid = to_regclass('job_queue') AND i.indisvalid AND i.indisready
              AND i.indpred IS NULL AND a.attnum = ANY (i.indkey::int2[])
              AND oc.opcname IN ('gin_trgm_ops', 'gist_trgm_ops')
        ) AS found""")
    return bool(row and row["found"])


def search_scope(engine: Engine, filters: JobFilters, tz: str = "UTC", cap: int = SEARCH_SCAN_CAP) -> dict | None:
    """What a text search in error messages reads, or None without a search text.

    With a trigram index (and a search text that has three letters or digits in a row, which the
    index can use) every message in the filters' time range is searched. Without one, the search
    reads the messages of at most the newest `cap` jobs with an error message in the time range
    (other filters narrow the results, not what is read, so the cost is bounded whatever they
    are): ``since`` is then the creation time from which jobs were searched, and jobs created
    before it (in the time range) were not.

    Returns ``{"text", "method": "trigram index" | "newest jobs", "complete": bool, "since":
    datetime | None, "cap": int | None}``; ``complete`` is True when every job with an error
    message in the time range was searched.
    """
    if not filters.q:
        return None
    if _TRIGRAM_WORD.search(filters.q) and has_trigram_index(engine):
        return {"text": filters.q, "method": "trigram index", "complete": True, "since": None, "cap": None}
    cap = max(1, int(cap))
    where, params = _range_sql(filters, tz, "j")
    conds = " AND ".join(["j.error_message IS NOT NULL", *where])
    # The cap-th newest job with a message (an index-only walk of fm_job_error_created), and
    # whether any job with a message is older than it.
    row = read_row(engine, f"""
        WITH edge AS (
            SELECT j.created_at FROM job_queue j WHERE {conds}
            ORDER BY j.created_at DESC, j.id DESC OFFSET :skip LIMIT 1
        )
        SELECT edge.created_at AS since,
               EXISTS (SELECT 1 FROM job_queue j WHERE {conds} AND j.created_at < edge.created_at) AS older
        FROM edge""", {**params, "skip": cap - 1})
    if row is None or not row["older"]:
        return {"text": filters.q, "method": "newest jobs", "complete": True, "since": None, "cap": cap}
    since = pd.Timestamp(row["since"]).to_pydatetime()
    return {"text": filters.q, "method": "newest jobs", "complete": False, "since": since, "cap": cap}


def window_start(filters: JobFilters, tz: str = "UTC", now: datetime | None = None) -> datetime | None:
    """Where the filters' time range starts (None: any time), as filter_sql reads it at `now`."""
    now = now or datetime.now(timezone.utc)
    if filters.range in RANGES:
        amount, unit = RANGES[filters.range].split()
        return now - timedelta(**{unit if unit.endswith("s") else unit + "s": int(amount)})
    if filters.range == "today":
        local = now.astimezone(ZoneInfo(safe_tz(tz)))
        return local.replace(hour=0, minute=0, second=0, microsecond=0)
    if filters.range == "custom" and filters.start is not None:
        return _aware(filters.start, tz)
    return None


def older_search_query(filters: JobFilters, search: dict | None, tz: str = "UTC",
                       now: datetime | None = None) -> dict[str, str] | None:
    """The URL query that searches the jobs a limited search did not read: the same filters with
    a custom range from the range's start to the search's `since` (exclusive). None when the
    search read everything."""
    if not search or search.get("complete") or search.get("since") is None:
        return None
    query = {k: v for k, v in filters.to_query().items() if k not in ("range", "from", "to")}
    query["range"] = "custom"
    start = window_start(filters, tz, now)
    if start is not None:
        query["from"] = start.isoformat()
    query["to"] = search["since"].astimezone(timezone.utc).isoformat()
    return query


def _pinned_scope(filters: JobFilters, pinned: dict) -> dict:
    """A search scope carried by a page cursor, so every page of one search reads the same jobs."""
    since = pinned.get("since")
    return {"text": filters.q, "method": pinned.get("method") or "newest jobs", "complete": since is None,
            "since": since, "cap": pinned.get("cap")}


# ---------------------------------------------------------------------------------------------
# Keyset paging
# ---------------------------------------------------------------------------------------------
_HAS_DURATION = "j.completed_at IS NOT NULL AND j.started_at IS NOT NULL"
_NO_DURATION = "(j.completed_at IS NULL OR j.started_at IS NULL)"
_DURATION = "(j.completed_at - j.started_at)"


@dataclass(frozen=True)
class _Phase:
    """One stretch of a sort order: rows matching `member`, ordered by `keys` (all one way).

    The duration sort has two phases: jobs with a duration (keyset on (duration, id), backed by
    the partial index fm_job_duration), then jobs without one (pending, running, cancelled
    before starting), newest first, so NULL durations never break the keyset comparison.
    """

    member: str
    keys: tuple[str, ...]
    kinds: tuple[str, ...]  # how a key is written in a cursor: 'ts', 'interval', 'uuid'
    desc: bool


_SORT_PHASES: dict[str, tuple[_Phase, ...]] = {
    "-created": (_Phase("", ("j.created_at", "j.id"), ("ts", "uuid"), True),),
    "created": (_Phase("", ("j.created_at", "j.id"), ("ts", "uuid"), False),),
    "-duration": (
        _Phase(_HAS_DURATION, (_DURATION, "j.id"), ("interval", "uuid"), True),
        _Phase(_NO_DURATION, ("j.created_at", "j.id"), ("ts", "uuid"), True),
    ),
    "duration": (
        _Phase(_HAS_DURATION, (_DURATION, "j.id"), ("interval", "uuid"), False),
        _Phase(_NO_DURATION, ("j.created_at", "j.id"), ("ts", "uuid"), True),
    ),
}

LIST_COLUMNS = f"""
    j.id::text AS job_id, j.workflow_id, j.workflow_name, j.robot_id::text AS robot_id, j.status,
    j.priority, j.environment, j.created_at, j.started_at, j.completed_at,
    (extract(epoch FROM j.started_at - j.created_at) * 1000)::float8 AS queue_wait_ms,
    (extract(epoch FROM j.completed_at - j.started_at) * 1000)::float8 AS duration_ms,
    j.retry_count, j.max_retries, {error_type_sql('j.error_message')} AS error_type, j.error_message"""
# Columns a page returns (the grid and the CSV show these, in this order).
JOB_COLUMNS = [
    "job_id", "workflow_id", "workflow_name", "robot_id", "status", "priority", "environment",
    "created_at", "started_at", "completed_at", "queue_wait_ms", "duration_ms", "retry_count",
    "max_retries", "error_type", "error_message",
]


def _encode_key(kind: str, value) -> Any:
    if kind == "ts":
        return pd.Timestamp(value).to_pydatetime().isoformat()
    if kind == "interval":
        td = pd.Timedelta(value).to_pytimedelta()
        return td.days * 86_400_000_000 + td.seconds * 1_000_000 + td.microseconds
    return str(value)


def _decode_key(kind: str, value) -> Any:
    if kind == "ts":
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError("naive timestamp")
        return parsed
    if kind == "interval":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError("interval")
        return timedelta(microseconds=value)
    return uuid.UUID(str(value))


def encode_cursor(sort: str, phase: int, keys: list, search: dict | None = None) -> str:
    """A page cursor; `search` (a search_scope) is carried along so later pages read the same jobs."""
    data: dict[str, Any] = {"s": sort, "p": phase, "k": keys}
    if search is not None:
        since = search.get("since")
        data["c"] = {"since": since.isoformat() if since is not None else None, "m": search.get("method"),
                     "n": search.get("cap")}
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_search(cursor: str | None) -> dict | None:
    """The search scope a cursor (already checked by decode_cursor) carries, or None."""
    if not cursor:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        pinned = data.get("c")
        if not isinstance(pinned, dict):
            return None
        since = pinned.get("since")
        since = _decode_key("ts", since) if since is not None else None
        method = pinned.get("m") if pinned.get("m") in ("trigram index", "newest jobs") else None
        cap = pinned.get("n") if isinstance(pinned.get("n"), int) and not isinstance(pinned.get("n"), bool) else None
        return {"since": since, "method": method, "cap": cap}
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, UnicodeDecodeError, OverflowError):
        raise ValueError("This page link is not valid any more; showing the first page.") from None


def decode_cursor(cursor: str | None, sort: str) -> tuple[int, list] | None:
    """(phase, bound key values) of a cursor made by this module for `sort`; ValueError if not."""
    if not cursor:
        return None
    try:
        if len(cursor) > 500:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        phases = _SORT_PHASES[sort]
        if data["s"] != sort or not isinstance(data["p"], int) or not 0 <= data["p"] < len(phases):
            raise ValueError
        phase = phases[data["p"]]
        keys = data["k"]
        if not isinstance(keys, list) or len(keys) != len(phase.kinds):
            raise ValueError
        return data["p"], [_decode_key(kind, v) for kind, v in zip(phase.kinds, keys)]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError, OverflowError):
        raise ValueError("This page link is not valid any more; showing the first page.") from None


def _phase_query(phase: _Phase, where: list[str], params: dict, bound: list | None,
                 forward: bool, limit: int) -> tuple[str, dict]:
    desc = phase.desc if forward else not phase.desc
    conds = list(where)
    if phase.member:
        conds.append(phase.member)
    p = dict(params)
    if bound is not None:
        op = "<" if desc else ">"
        names = [f"k_{i}" for i in range(len(bound))]
        conds.append(f"({', '.join(phase.keys)}) {op} ({', '.join(':' + n for n in names)})")
        p.update(dict(zip(names, bound)))
    direction = "DESC" if desc else "ASC"
    order = ", ".join(f"{k} {direction}" for k in phase.keys)
    sql = (
        f"SELECT {LIST_COLUMNS}, j.id AS _k_id, {_DURATION} AS _k_duration\n"
        f"FROM job_queue j\n"
        f"{'WHERE ' + ' AND '.join(conds) if conds else ''}\n"
        f"ORDER BY {order} LIMIT :page_limit"
    )
    p["page_limit"] = limit
    return sql, p


def _row_cursor(sort: str, phase_index: int, row: Mapping, search: dict | None = None) -> str:
    phase = _SORT_PHASES[sort][phase_index]
    values = []
    for kind in phase.kinds:
        if kind == "ts":
            values.append(_encode_key(kind, row["created_at"]))
        elif kind == "interval":
            values.append(_encode_key(kind, row["_k_duration"]))
        else:
            values.append(_encode_key(kind, row["_k_id"]))
    return encode_cursor(sort, phase_index, values, search)


def _scope_for(engine: Engine, filters: JobFilters, tz: str, cursor: str | None, search_cap: int) -> dict | None:
    """The search scope of a page: the one its cursor carries, else a new one."""
    if not filters.q:
        return None
    pinned = _cursor_search(cursor)
    if pinned is not None:
        return _pinned_scope(filters, pinned)
    return search_scope(engine, filters, tz, search_cap)


def list_jobs(engine: Engine, filters: JobFilters, tz: str = "UTC", *, sort: str = DEFAULT_SORT,
              after: str | None = None, before: str | None = None, limit: int = PAGE_SIZE,
              search_cap: int = SEARCH_SCAN_CAP) -> dict:
    """One page of the filtered job history, by keyset.

    `after` (the next, older page) and `before` (the previous page) are cursors from an earlier
    page. Returns ``{"jobs": DataFrame[JOB_COLUMNS], "next_cursor", "prev_cursor", "sort",
    "limit", "search"}``; a cursor is None when there is no page that way; ``search`` is what a
    text search read (search_scope; None without one), fixed on page 1 and carried by the
    cursors so every page of a search reads the same jobs. Raises ValueError (with a message fit
    to show) for a malformed cursor.
    """
    sort = sort if sort in _SORT_PHASES else DEFAULT_SORT
    limit = max(1, min(int(limit), MAX_PAGE_SIZE))
    phases = _SORT_PHASES[sort]
    forward = before is None
    position = decode_cursor(after if forward else before, sort)
    search = _scope_for(engine, filters, tz, after if forward else before, search_cap)
    where, params = filter_sql(filters, tz, search_since=search["since"] if search else None)

    frames: list[pd.DataFrame] = []
    got = 0
    if forward:
        start_phase, bound = position if position else (0, None)
        order = range(start_phase, len(phases))
    else:
        start_phase, bound = position
        order = range(start_phase, -1, -1)
    for i in order:
        sql, p = _phase_query(phases[i], where, params, bound if i == start_phase else None,
                              forward, limit + 1 - got)
        frame = read_frame(engine, sql, p)
        frame["_phase"] = i
        frames.append(frame)
        got += len(frame)
        if got > limit:
            break
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    more = len(rows) > limit
    rows = rows.iloc[:limit]
    if not forward:
        rows = rows.iloc[::-1].reset_index(drop=True)
        if len(rows) < limit:
            # Fewer rows than a page before the cursor: this is the start; show a full first page.
            return list_jobs(engine, filters, tz, sort=sort, limit=limit, search_cap=search_cap)

    def cursor_of(row) -> str:
        return _row_cursor(sort, int(row["_phase"]), row, search)

    if rows.empty:
        next_cursor = prev_cursor = None
        if not forward:
            next_cursor = before
    else:
        first, last = rows.iloc[0], rows.iloc[-1]
        if forward:
            next_cursor = cursor_of(last) if more else None
            prev_cursor = cursor_of(first) if after else None
        else:
            next_cursor = cursor_of(last)
            prev_cursor = cursor_of(first) if more else None
    jobs = rows.reindex(columns=JOB_COLUMNS) if not rows.empty else _empty_jobs()
    return {"jobs": jobs.reset_index(drop=True), "next_cursor": next_cursor, "prev_cursor": prev_cursor,
            "sort": sort, "limit": limit, "search": search}


def _empty_jobs() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in JOB_COLUMNS})


def iter_jobs(engine: Engine, filters: JobFilters, tz: str = "UTC", *, sort: str = DEFAULT_SORT,
              cap: int = EXPORT_ROW_CAP, chunk: int = EXPORT_CHUNK,
              search_cap: int = SEARCH_SCAN_CAP) -> Iterator[pd.DataFrame]:
    """The filtered set in `sort` order, as frames of up to `chunk` rows, at most `cap` rows.

    Each chunk is its own short keyset query, so no transaction stays open while a slow client
    downloads. A text search reads what the page's search reads (search_scope), fixed by the
    first chunk.
    """
    left = cap
    cursor = None
    while left > 0:
        page = list_jobs(engine, filters, tz, sort=sort, after=cursor, limit=min(chunk, left), search_cap=search_cap)
        if not page["jobs"].empty:
            yield page["jobs"]
        left -= len(page["jobs"])
        cursor = page["next_cursor"]
        if cursor is None:
            return


# ---------------------------------------------------------------------------------------------
# Counts and summary of the filtered set
# ---------------------------------------------------------------------------------------------
def _where_clause(where: list[str]) -> str:
    return ("WHERE " + " AND ".join(where)) if where else ""


def count_jobs(engine: Engine, filters: JobFilters, tz: str = "UTC", cap: int = COUNT_CAP, *,
               search_cap: int = SEARCH_SCAN_CAP) -> dict:
    """How many jobs match: exact up to `cap`, else ``more_than=cap`` and the planner's estimate.

    Returns ``{"count": int | None, "exact": bool, "more_than": int | None, "estimate": int | None,
    "search": search_scope or None}``; with a text search the count covers the jobs it read.
    """
    search = search_scope(engine, filters, tz, search_cap)
    where, params = filter_sql(filters, tz, search_since=search["since"] if search else None)
    inner = f"SELECT 1 FROM job_queue j {_where_clause(where)}"
    row = read_row(engine, f"SELECT count(*) AS n FROM ({inner} LIMIT :cap_plus) s", {**params, "cap_plus": cap + 1})
    n = int(row["n"])
    if n <= cap:
        return {"count": n, "exact": True, "more_than": None, "estimate": None, "search": search}
    estimate = None
    plan = read_row(engine, f"EXPLAIN (FORMAT JSON) {inner}", params)
    try:
        value = list(plan.values())[0]
        if isinstance(value, str):
            value = json.loads(value)
        estimate = int(value[0]["Plan"]["Plan Rows"])
    except (TypeError, ValueError, KeyError, IndexError):
        estimate = None
    if estimate is not None and estimate <= cap:
        estimate = None  # a planner guess below what we counted says nothing
    return {"count": None, "exact": False, "more_than": cap, "estimate": estimate, "search": search}


def job_summary(engine: Engine, filters: JobFilters, tz: str = "UTC", cap: int = SUMMARY_CAP, *,
                search_cap: int = SEARCH_SCAN_CAP) -> dict:
    """Counts by status and P50/P95 duration for the filtered set (its newest `cap` jobs at most).

    Durations cover the completed and failed jobs that ran (both timestamps), narrowed by the
    status filter; percentiles are linear (numpy's default). ``capped`` says whether the set had
    more jobs than `cap`; ``search`` is what a text search read (search_scope; None without one).
    """
    search = search_scope(engine, filters, tz, search_cap)
    where, params = filter_sql(filters, tz, search_since=search["since"] if search else None)
    timed = "status IN ('completed', 'failed') AND started_at IS NOT NULL AND completed_at IS NOT NULL"
    dur = "(extract(epoch FROM completed_at - started_at) * 1000)::float8"
    status_counts = ",\n".join(f"count(*) FILTER (WHERE status = '{s}') AS n_{s}" for s in STATUSES)
    sql = f"""
    WITH s AS (
        SELECT j.status, j.started_at, j.completed_at FROM job_queue j {_where_clause(where)}
        ORDER BY j.created_at DESC LIMIT :cap_plus
    ), kept AS (SELECT * FROM s LIMIT :cap)
    SELECT (SELECT count(*) FROM s) > :cap AS capped, count(*) AS total,
           {status_counts},
           count(*) FILTER (WHERE {timed}) AS timed,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY {dur}) FILTER (WHERE {timed}) AS p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY {dur}) FILTER (WHERE {timed}) AS p95,
           avg({dur}) FILTER (WHERE {timed}) AS mean
    FROM kept
    """
    row = read_row(engine, sql, {**params, "cap": cap, "cap_plus": cap + 1})
    by_status = {s: int(row[f"n_{s}"]) for s in STATUSES}
    finished = by_status["completed"] + by_status["failed"]
    return {
        "total_jobs": int(row["total"]),
        "by_status": by_status,
        "success_rate": (by_status["completed"] / finished) if finished else None,
        "capped": bool(row["capped"]),
        "cap": cap,
        "duration_jobs": int(row["timed"]),
        "p50_duration_ms": _float(row["p50"]),
        "p95_duration_ms": _float(row["p95"]),
        "average_duration_ms": _float(row["mean"]),
        "duration_covers": "completed and failed jobs that ran",
        "search": search,
    }


def _float(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


# ---------------------------------------------------------------------------------------------
# Filter choices (bounded: loose index scans, LIMITs)
# ---------------------------------------------------------------------------------------------
def workflow_options(engine: Engine, limit: int = 500) -> pd.DataFrame:
    """Distinct workflows (id and latest name), by a loose index scan on (workflow_id, created_at)."""
    sql = """
    WITH RECURSIVE w AS (
        (SELECT workflow_id FROM job_queue ORDER BY workflow_id LIMIT 1)
        UNION ALL
        SELECT (SELECT j.workflow_id FROM job_queue j WHERE j.workflow_id > w.workflow_id
                ORDER BY j.workflow_id LIMIT 1)
        FROM w WHERE w.workflow_id IS NOT NULL
    )
    SELECT w.workflow_id,
           (SELECT j.workflow_name FROM job_queue j WHERE j.workflow_id = w.workflow_id
            ORDER BY j.created_at DESC LIMIT 1) AS workflow_name
    FROM (SELECT workflow_id FROM w WHERE workflow_id IS NOT NULL LIMIT :n) w
    ORDER BY 2, 1
    """
    return read_frame(engine, sql, {"n": limit})


def environment_options(engine: Engine, limit: int = 200) -> list[str]:
    """Environments seen in jobs (loose index scan) or robots."""
    sql = """
    WITH RECURSIVE e AS (
        (SELECT environment FROM job_queue ORDER BY environment LIMIT 1)
        UNION ALL
        SELECT (SELECT j.environment FROM job_queue j WHERE j.environment > e.environment
                ORDER BY j.environment LIMIT 1)
        FROM e WHERE e.environment IS NOT NULL
    )
    SELECT environment FROM (SELECT environment FROM e WHERE environment IS NOT NULL LIMIT :n) x
    UNION SELECT environment FROM (SELECT DISTINCT environment FROM robots
                                   WHERE environment IS NOT NULL LIMIT :n) r
    ORDER BY 1
    """
    return [r for r in read_frame(engine, sql, {"n": limit})["environment"]]


def robot_options(engine: Engine, limit: int = 1000) -> pd.DataFrame:
    """Robots that exist or ran jobs: robot_id (as text) and a name."""
    sql = """
    WITH RECURSIVE r AS (
        (SELECT robot_id::text AS robot_id FROM job_queue WHERE robot_id IS NOT NULL ORDER BY robot_id LIMIT 1)
        UNION ALL
        SELECT (SELECT j.robot_id::text FROM job_queue j WHERE j.robot_id > r.robot_id
                ORDER BY j.robot_id LIMIT 1)
        FROM r WHERE r.robot_id IS NOT NULL
    ),
    seen AS (SELECT robot_id FROM r WHERE robot_id IS NOT NULL LIMIT :n),
    known AS (SELECT robot_id::text AS robot_id, name FROM robots ORDER BY name LIMIT :n)
    SELECT coalesce(k.robot_id, s.robot_id) AS robot_id, coalesce(k.name, s.robot_id) AS name
    FROM known k FULL JOIN seen s ON s.robot_id = k.robot_id
    ORDER BY 2, 1
    """
    return read_frame(engine, sql, {"n": limit})


def error_type_options(engine: Engine, limit: int = 200) -> pd.DataFrame:
    """Error types that occur in the history (column error_type), alphabetically.

    A loose scan of the expression index fm_job_error_type: one index probe per distinct type,
    whatever the history's size.
    """
    expr = error_type_sql("j.error_message")
    sql = f"""
    WITH RECURSIVE t AS (
        (SELECT {expr} AS error_type FROM job_queue j
         WHERE j.error_message IS NOT NULL AND {expr} IS NOT NULL ORDER BY 1 LIMIT 1)
        UNION ALL
        SELECT (SELECT {expr} FROM job_queue j
                WHERE j.error_message IS NOT NULL AND {expr} > t.error_type ORDER BY 1 LIMIT 1)
        FROM t WHERE t.error_type IS NOT NULL
    )
    SELECT error_type FROM t WHERE error_type IS NOT NULL LIMIT :n
    """
    return read_frame(engine, sql, {"n": limit})


# ---------------------------------------------------------------------------------------------
# One job
# ---------------------------------------------------------------------------------------------
def parse_job_id(text) -> str | None:
    """The canonical job id if `text` is a UUID, else None."""
    if not isinstance(text, str) or not 32 <= len(text.strip()) <= 45:
        return None
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        return None


def _ms(delta) -> float | None:
    if delta is None or delta is pd.NaT:
        return None
    return delta.total_seconds() * 1000.0


def job_detail(engine: Engine, job_id: str) -> dict | None:
    """One job with the orchestrator's field names (never workflow_json), or None if unknown.

    A job that was moved to the dead-letter queue (and so deleted from job_queue) is read from
    job_queue_dlq, with ``source='dlq'``. Adds: ``claimed_at`` (= started_at), ``error_type``,
    ``queue_wait_ms``, ``duration_ms``, and for a job still running ``elapsed_ms`` and
    ``lease_remaining_ms`` (negative when its lease, ``visible_after``, has passed).
    """
    job_id = parse_job_id(job_id)
    if job_id is None:
        return None
    row = read_row(engine, """
        SELECT j.id::text AS job_id, j.workflow_id, j.workflow_name, j.status, j.robot_id::text AS robot_id,
               j.environment, j.priority, j.retry_count, j.max_retries, j.created_at, j.started_at,
               j.completed_at, j.visible_after, j.error_message, j.result, j.variables, j.metadata,
               octet_length(j.workflow_json) AS workflow_json_bytes, now() AS as_of
        FROM job_queue j WHERE j.id = CAST(:id AS uuid)""", {"id": job_id})
    if row is None:
        return _dlq_only_job(engine, job_id)
    row["source"] = "job_queue"
    row["claimed_at"] = row["started_at"]
    row["error_type"] = classify_error(row["error_message"])
    created, started, completed, now = row["created_at"], row["started_at"], row["completed_at"], row["as_of"]
    row["queue_wait_ms"] = _ms(started - created) if started else None
    row["duration_ms"] = _ms(completed - started) if started and completed else None
    row["elapsed_ms"] = _ms(now - started) if started and not completed and row["status"] == "running" else None
    row["waiting_ms"] = _ms(now - created) if row["status"] == "pending" else None
    row["lease_remaining_ms"] = (
        _ms(row["visible_after"] - now) if row["status"] == "running" and row["visible_after"] else None
    )
    for key in ("result", "variables", "metadata"):
        row[key] = _json_value(row[key])
    return row


def _json_value(value):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _dlq_only_job(engine: Engine, job_id: str) -> dict | None:
    entry = dlq_entry(engine, job_id)
    if entry is None:
        return None
    error = entry.get("error_message")
    return {
        "job_id": job_id, "source": "dlq", "workflow_id": entry.get("workflow_id"),
        "workflow_name": entry.get("workflow_name") or entry.get("workflow_id") or "(unknown workflow)",
        "status": "failed", "robot_id": None, "environment": None, "priority": None,
        "retry_count": entry.get("retry_count"), "max_retries": None,
        "created_at": None, "started_at": None, "claimed_at": None,
        "completed_at": _ts(entry.get("last_failed_at")), "visible_after": None,
        "error_message": error, "error_type": classify_error(error), "result": {},
        "variables": _json_value(entry.get("variables")) or {}, "metadata": {},
        "workflow_json_bytes": None, "as_of": None, "queue_wait_ms": None, "duration_ms": None,
        "elapsed_ms": None, "waiting_ms": None, "lease_remaining_ms": None,
    }


def dlq_entry(engine: Engine, job_id: str) -> dict | None:
    """The job's dead-letter entry (every column but workflow_json), or None."""
    job_id = parse_job_id(job_id)
    if job_id is None:
        return None
    present = read_row(engine, "SELECT to_regclass('job_queue_dlq') IS NOT NULL AS present")
    if not present or not present["present"]:
        return None
    row = read_row(engine, """
        SELECT to_jsonb(d) - 'workflow_json' AS entry FROM job_queue_dlq d
        WHERE d.original_job_id::text = :id LIMIT 1""", {"id": job_id})
    if row is None:
        return None
    entry = _json_value(row["entry"])
    for key in ("first_failed_at", "last_failed_at", "created_at", "reprocessed_at"):
        if entry.get(key):
            entry[key] = _ts(entry[key])
    entry["pending"] = entry.get("reprocessed_at") is None
    return entry


def neighbour_runs(engine: Engine, workflow_id: str, created_at: datetime, job_id: str, n: int = 5) -> pd.DataFrame:
    """The `n` runs of the same workflow created just before and just after this job.

    Columns: position ('previous' | 'next'), job_id, status, robot_id, created_at, started_at,
    completed_at, duration_ms; ordered by created time. Reads the (workflow_id, created_at, id) index.
    """
    cols = """j.id::text AS job_id, j.status, j.robot_id::text AS robot_id, j.created_at, j.started_at,
              j.completed_at, (extract(epoch FROM j.completed_at - j.started_at) * 1000)::float8 AS duration_ms"""
    sql = f"""
    SELECT * FROM (
        (SELECT 'previous' AS position, {cols} FROM job_queue j
         WHERE j.workflow_id = :wf AND (j.created_at, j.id) < (:c, CAST(:id AS uuid))
         ORDER BY j.created_at DESC, j.id DESC LIMIT :n)
        UNION ALL
        (SELECT 'next', {cols} FROM job_queue j
         WHERE j.workflow_id = :wf AND (j.created_at, j.id) > (:c, CAST(:id AS uuid))
         ORDER BY j.created_at, j.id LIMIT :n)
    ) runs ORDER BY created_at, job_id
    """
    return read_frame(engine, sql, {"wf": workflow_id, "c": created_at, "id": job_id, "n": n})


def workflow_duration_comparison(engine: Engine, workflow_id: str, created_before: datetime,
                                 duration_ms: float | None, runs: int = COMPARISON_RUNS) -> dict:
    """How a duration compares with the workflow's P50/P95 over its last `runs` finished runs.

    The runs are the completed and failed jobs of the workflow that ran (both timestamps) and
    were created before `created_before` (the job's own creation). ``rank`` is the share of
    those runs that were not longer than `duration_ms`, ``share_shorter`` the share that were
    shorter (both None without a duration).
    """
    dur = "(extract(epoch FROM j.completed_at - j.started_at) * 1000)::float8"
    sql = f"""
    WITH r AS (
        SELECT {dur} AS d, j.created_at FROM job_queue j
        WHERE j.workflow_id = :wf AND j.created_at < :before
          AND j.status IN ('completed', 'failed') AND j.started_at IS NOT NULL AND j.completed_at IS NOT NULL
        ORDER BY j.created_at DESC LIMIT :runs
    )
    SELECT count(*) AS runs,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY d) AS p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY d) AS p95,
           count(*) FILTER (WHERE d <= :dur) AS not_longer,
           count(*) FILTER (WHERE d < :dur) AS shorter,
           min(created_at) AS since, max(created_at) AS until
    FROM r
    """
    row = read_row(engine, sql, {"wf": workflow_id, "before": created_before, "runs": runs,
                                 "dur": duration_ms if duration_ms is not None else -1.0})
    n = int(row["runs"])
    p50, p95 = _float(row["p50"]), _float(row["p95"])
    return {
        "runs": n,
        "p50_duration_ms": p50,
        "p95_duration_ms": p95,
        "duration_ms": duration_ms,
        "ratio_to_p50": (duration_ms / p50) if duration_ms is not None and p50 else None,
        "rank": (int(row["not_longer"]) / n) if n and duration_ms is not None else None,
        "share_shorter": (int(row["shorter"]) / n) if n and duration_ms is not None else None,
        "since": row["since"],
        "until": row["until"],
        "covers": f"the workflow's last {runs:,} completed and failed runs created before this job",
    }


# ---------------------------------------------------------------------------------------------
# Steps: result.node_executions and older shapes
# ---------------------------------------------------------------------------------------------
STEP_KEYS = ["step", "node_id", "node_type", "status", "started_at", "completed_at", "duration_ms",
             "error", "output", "timing"]

_STATUS_WORDS = {
    "success": "completed", "succeeded": "completed", "successful": "completed", "ok": "completed",
    "done": "completed", "complete": "completed", "finished": "completed", "passed": "completed",
    "error": "failed", "errored": "failed", "failure": "failed", "fail": "failed", "exception": "failed",
    "in_progress": "running", "started": "running", "executing": "running",
    "canceled": "cancelled", "aborted": "cancelled", "queued": "pending", "waiting": "pending",
}


def _ts(value) -> datetime | None:
    """A timestamp from ISO text or epoch seconds/milliseconds; naive means UTC; None if unreadable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value <= 0:
            return None
        seconds = value / 1000.0 if value > 1e11 else float(value)
        try:
            return datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        parsed = parse_instant(value.replace(" ", "T", 1) if re.match(r"^\d{4}-\d\d-\d\d \d", value) else value)
        if parsed is None:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def _num(value) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            parsed = float(value)
        except ValueError:
            return None
        return parsed if math.isfinite(parsed) else None
    return None


def _pick(record: Mapping, *names):
    for name in names:
        if name in record and record[name] not in (None, ""):
            return record[name]
    return None


def _status(record: Mapping, error) -> str:
    raw = _pick(record, "status", "state", "result_status", "outcome")
    if raw is None and "success" in record and isinstance(record["success"], bool):
        return "completed" if record["success"] else "failed"
    if raw is None:
        return "failed" if error else "unknown"
    text = str(raw).strip().lower()
    return _STATUS_WORDS.get(text, text)


def _error_text(value) -> str | None:
    if value in (None, "", False):
        return None
    if isinstance(value, Mapping):
        kind = value.get("type") or value.get("error_type")
        message = value.get("message") or value.get("error_message") or value.get("msg")
        if kind and message:
            return f"{kind}: {message}"
        return str(message or kind or json.dumps(value, default=str))
    return str(value)


def _normalize(record: Mapping, default_id: str | None = None) -> dict:
    """One step record in any of the known shapes -> the normalized step dict."""
    error = _error_text(_pick(record, "error", "error_message", "exception", "err"))
    started = _ts(_pick(record, "started_at", "start_time", "start", "startedAt", "started", "begin"))
    completed = _ts(_pick(record, "completed_at", "end_time", "end", "finished_at", "ended_at",
                          "completedAt", "completed", "finished"))
    duration = _num(_pick(record, "duration_ms", "durationMs", "elapsed_ms", "time_ms"))
    if duration is None:
        seconds = _num(_pick(record, "duration_s", "duration_seconds", "duration", "elapsed", "elapsed_s"))
        duration = seconds * 1000.0 if seconds is not None else None
    if duration is None and started and completed:
        duration = (completed - started).total_seconds() * 1000.0
    node_id = _pick(record, "node_id", "nodeId", "id", "node", "step_id", "step", "name")
    node_type = _pick(record, "node_type", "nodeType", "type", "kind", "action")
    return {
        "step": None,
        "node_id": str(node_id) if node_id is not None else (default_id or "?"),
        "node_type": str(node_type) if node_type is not None else None,
        "status": _status(record, error),
        "started_at": started,
        "completed_at": completed,
        "duration_ms": duration,
        "error": error,
        "output": None,
        "timing": "recorded" if started else ("duration only" if duration is not None else "none"),
    }


def _from_mapping_or_list(value) -> list[dict]:
    """node_timings / step_results: a list of records, or a mapping node id -> record or number (ms)."""
    steps: list[dict] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, Mapping):
                step = _normalize(item, default_id=str(key))
                if _pick(item, "node_id", "nodeId", "id") is None:
                    step["node_id"] = str(key)  # keyed by node id: the key names the node
                steps.append(step)
            elif _num(item) is not None:
                steps.append(_normalize({"duration_ms": _num(item)}, default_id=str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, Mapping):
                steps.append(_normalize(item, default_id=f"step {i + 1}"))
    return steps


def _from_execution_log(log: list) -> list[dict]:
    """execution_log: either per-node records, or start/finish events to pair by node id."""
    events = [e for e in log if isinstance(e, Mapping)]
    if not events:
        return []
    is_event = all(_pick(e, "event", "type_of_event", "action") is not None or
                   (_pick(e, "timestamp", "time", "at", "ts") is not None and
                    _pick(e, "started_at", "completed_at", "duration_ms", "duration") is None)
                   for e in events)
    if not is_event:
        return [_normalize(e, default_id=f"step {i + 1}") for i, e in enumerate(events)]
    steps: list[dict] = []
    open_steps: dict[str, dict] = {}
    for e in events:
        node = str(_pick(e, "node_id", "nodeId", "node", "id", "step") or "?")
        what = str(_pick(e, "event", "status", "type_of_event", "action") or "").lower()
        at = _ts(_pick(e, "timestamp", "time", "at", "ts"))
        if "start" in what or what in ("begin", "running"):
            step = _normalize({"node_id": node, "node_type": _pick(e, "node_type", "nodeType"),
                               "started_at": at, "status": "running"})
            open_steps[node] = step
            steps.append(step)
            continue
        step = open_steps.pop(node, None)
        error = _error_text(_pick(e, "error", "error_message"))
        if error is None and ("fail" in what or "error" in what):
            error = _error_text(_pick(e, "message"))
        if step is None:
            step = _normalize({"node_id": node, "node_type": _pick(e, "node_type", "nodeType")})
            steps.append(step)
        step["completed_at"] = at
        step["status"] = _STATUS_WORDS.get(what.replace("node_", ""), what.replace("node_", "") or "completed")
        if error:
            step["error"] = error
        if step["started_at"] and at:
            step["duration_ms"] = (at - step["started_at"]).total_seconds() * 1000.0
    return steps


def steps_from_result(result) -> tuple[list[dict], str | None]:
    """Normalized steps from a job's result JSON, and which shape they came from.

    Reads ``node_executions`` (the expected shape), then the older ``node_timings``,
    ``step_results``, ``nodes[].execution`` and ``execution_log[]``. Unknown keys are ignored;
    a result without steps gives ``([], None)``.
    """
    result = _json_value(result)
    if not isinstance(result, Mapping):
        return [], None
    steps: list[dict] = []
    source = None
    if isinstance(result.get("node_executions"), list):
        steps = [_normalize(r, default_id=f"step {i + 1}") for i, r in enumerate(result["node_executions"])
                 if isinstance(r, Mapping)]
        source = "result.node_executions"
    elif isinstance(result.get("node_timings"), (Mapping, list)):
        steps, source = _from_mapping_or_list(result["node_timings"]), "result.node_timings"
    elif isinstance(result.get("step_results"), (Mapping, list)):
        steps, source = _from_mapping_or_list(result["step_results"]), "result.step_results"
    elif isinstance(result.get("nodes"), list) and any(
            isinstance(n, Mapping) and isinstance(n.get("execution"), Mapping) for n in result["nodes"]):
        for i, node in enumerate(result["nodes"]):
            if isinstance(node, Mapping) and isinstance(node.get("execution"), Mapping):
                record = {**node["execution"]}
                record.setdefault("node_id", _pick(node, "node_id", "id", "name") or f"step {i + 1}")
                record.setdefault("node_type", _pick(node, "node_type", "type"))
                steps.append(_normalize(record))
        source = "result.nodes[].execution"
    elif isinstance(result.get("execution_log"), list):
        steps, source = _from_execution_log(result["execution_log"]), "result.execution_log"
    if not steps:
        return [], source
    return _number(steps), source


def _number(steps: list[dict]) -> list[dict]:
    for i, step in enumerate(steps, start=1):
        step["step"] = i
    return steps


def layout_steps(steps: list[dict], origin: datetime | None) -> list[dict]:
    """Steps with a start and end for drawing: recorded times where known; a step with only a
    duration starts when the previous one ended (or at `origin`, the job's start), marked
    ``timing='estimated'``. Steps with neither are left out."""
    placed: list[dict] = []
    cursor = origin
    for step in steps:
        start, end, dur = step.get("started_at"), step.get("completed_at"), step.get("duration_ms")
        item = dict(step)
        if start is not None:
            if end is None and dur is not None:
                end = start + timedelta(milliseconds=dur)
            item.update(bar_start=start, bar_end=end, estimated=False)
        elif dur is not None and cursor is not None:
            start = cursor
            end = start + timedelta(milliseconds=dur)
            item.update(bar_start=start, bar_end=end, estimated=True)
        else:
            continue
        placed.append(item)
        if item["bar_end"] is not None:
            cursor = item["bar_end"]
        elif item["bar_start"] is not None:
            cursor = item["bar_start"]
    return placed


# ---------------------------------------------------------------------------------------------
# DBOS: steps from dbos.operation_outputs when the job ran as a DBOS workflow
# ---------------------------------------------------------------------------------------------
DBOS_SCHEMA = "dbos"


def dbos_tables(engine: Engine) -> dict[str, set[str]]:
    """DBOS's readable tables (workflow_status, operation_outputs) and their columns."""
    frame = read_frame(engine, """
        SELECT c.relname AS table_name, array_agg(a.attname::text) AS columns
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE n.nspname = :schema AND c.relname IN ('workflow_status', 'operation_outputs')
          AND c.relkind IN ('r', 'p', 'v') AND has_table_privilege(c.oid, 'SELECT')
        GROUP BY c.relname""", {"schema": DBOS_SCHEMA})
    return {r.table_name: set(r.columns) for r in frame.itertuples()}


def dbos_steps(engine: Engine, job_id: str) -> dict | None:
    """The job's steps from DBOS, when ``dbos.workflow_status`` has a row whose workflow_uuid is
    the job id; else None.

    Returns ``{"workflow_status", "workflow_name", "steps": [normalized step dicts]}``; step
    times come from ``started_at_epoch_ms``/``completed_at_epoch_ms`` where this DBOS version
    records them. Outputs and errors are decoded without running code (JSON, or a restricted
    unpickler for DBOS's base64 pickles).
    """
    job_id = parse_job_id(job_id)
    if job_id is None:
        return None
    tables = dbos_tables(engine)
    if "workflow_status" not in tables or "operation_outputs" not in tables:
        return None
    columns = tables["operation_outputs"]
    optional = []
    for name in ("child_workflow_id", "started_at_epoch_ms", "completed_at_epoch_ms", "serialization"):
        optional.append(f"o.{name}" if name in columns else f"NULL AS {name}")
    sql = f"""
        SELECT w.status AS workflow_status, w.name AS workflow_name, o.function_id, o.function_name,
               o.output, o.error, {', '.join(optional)}
        FROM {DBOS_SCHEMA}.workflow_status w
        LEFT JOIN {DBOS_SCHEMA}.operation_outputs o ON o.workflow_uuid = w.workflow_uuid
        WHERE w.workflow_uuid = :id
        ORDER BY o.function_id"""
    frame = read_frame(engine, sql, {"id": job_id})
    if frame.empty:
        return None
    steps: list[dict] = []
    for r in frame.itertuples():
        if r.function_id is None or pd.isna(r.function_id):
            continue
        serialization = r.serialization if isinstance(r.serialization, str) else None
        error = decode_dbos_value(r.error, serialization, as_error=True)
        started = _epoch_ms(r.started_at_epoch_ms)
        completed = _epoch_ms(r.completed_at_epoch_ms)
        if error:
            status = "failed"
        elif started is not None and completed is None:
            status = "running"
        else:
            status = "completed"
        child = r.child_workflow_id if isinstance(r.child_workflow_id, str) else None
        steps.append({
            "step": int(r.function_id),
            "node_id": str(r.function_name),
            "node_type": "child workflow" if child else "DBOS step",
            "status": status,
            "started_at": started,
            "completed_at": completed,
            "duration_ms": (completed - started).total_seconds() * 1000.0 if started and completed else None,
            "error": error,
            "output": decode_dbos_value(r.output, serialization),
            "timing": "recorded" if started else "none",
        })
    first = frame.iloc[0]
    return {"workflow_status": first["workflow_status"], "workflow_name": first["workflow_name"], "steps": steps}


def _epoch_ms(value) -> datetime | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value):
        return None
    return datetime.fromtimestamp(int(value) / 1000.0, tz=timezone.utc)


_SAFE_GLOBALS = {
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "time"), ("datetime", "timedelta"),
    ("datetime", "timezone"), ("decimal", "Decimal"), ("collections", "OrderedDict"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex"), ("builtins", "bytearray"),
}
_MAX_DECODE = 256 * 1024
_MAX_SHOWN = 2000


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain data and builtin exceptions only: any other class is refused, so decoding
    a stored value never runs code (the Python docs' 'restricting globals' recipe)."""

    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return getattr(__import__(module), name)
        if module == "builtins":
            obj = getattr(builtins, name, None)
            if isinstance(obj, type) and issubclass(obj, BaseException):
                return obj
        raise pickle.UnpicklingError(f"{module}.{name}")


def _pickle_class_names(data: bytes) -> list[str]:
    """Class names a pickle refers to, read from its opcodes without executing it."""
    names: list[str] = []
    strings: list[str] = []
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE") and isinstance(arg, str):
                strings.append(arg)
            elif opcode.name == "GLOBAL" and isinstance(arg, str):
                names.append(arg.replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # noqa: BLE001 - a damaged pickle just has no readable names
        pass
    return names


def _shown(value) -> str:
    if isinstance(value, BaseException):
        text = f"{type(value).__name__}: {value}" if str(value) else type(value).__name__
    elif isinstance(value, (dict, list, tuple, str, int, float, bool)) or value is None:
        try:
            text = json.dumps(value, default=str, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    elif isinstance(value, (datetime, date, Decimal, set, frozenset)):
        text = str(value)
    else:
        text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "…"


def decode_dbos_value(text, serialization: str | None, as_error: bool = False) -> str | None:
    """A DBOS-stored output or error as readable text, never executing stored code."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    text = str(text)
    if serialization in (None, "portable_json", "json"):
        try:
            value = json.loads(text)
            if as_error and isinstance(value, Mapping) and ("message" in value or "name" in value):
                name, message = value.get("name"), value.get("message")
                return f"{name}: {message}" if name and message else str(message or name)
            return _shown(value)
        except ValueError:
            pass
    if serialization in (None, "py_pickle") and len(text) <= _MAX_DECODE * 2:
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            data = None
        if data:
            try:
                return _shown(_RestrictedUnpickler(io.BytesIO(data)).load())
            except Exception:  # noqa: BLE001 - refused class or damaged data: say what it is
                names = [n for n in _pickle_class_names(data) if not n.startswith("builtins.")]
                kind = names[0] if names else "a Python object"
                return f"({kind}; not decoded for safety)"
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "…"


# ---------------------------------------------------------------------------------------------
# Everything the job page shows
# ---------------------------------------------------------------------------------------------
def job_story(engine: Engine, job_id: str, neighbours: int = 5) -> dict | None:
    """One job's full story for the job page (and the API's job detail), or None if unknown.

    The job_detail() fields plus ``node_executions`` (normalized steps), ``steps_source``
    (where they came from: dbos.operation_outputs when DBOS ran the job, else the result JSON
    shape), ``dbos`` (DBOS workflow status/name or None), ``dlq`` (dead-letter entry or None),
    ``neighbours`` (DataFrame, see neighbour_runs) and ``comparison`` (see
    workflow_duration_comparison).
    """
    job = job_detail(engine, job_id)
    if job is None:
        return None
    dbos = dbos_steps(engine, job["job_id"])
    if dbos is not None:
        steps, source = dbos["steps"], "dbos.operation_outputs"
    else:
        steps, source = steps_from_result(job.get("result"))
    job["node_executions"] = steps
    job["steps_source"] = source
    job["dbos"] = None if dbos is None else {k: dbos[k] for k in ("workflow_status", "workflow_name")}
    job["dlq"] = dlq_entry(engine, job["job_id"])
    if job["created_at"] is not None and job.get("workflow_id"):
        job["neighbours"] = neighbour_runs(engine, job["workflow_id"], job["created_at"], job["job_id"], neighbours)
        job["comparison"] = workflow_duration_comparison(engine, job["workflow_id"], job["created_at"],
                                                         job["duration_ms"])
    else:
        job["neighbours"] = pd.DataFrame()
        job["comparison"] = None
    return job


__all__ = [
    "JobFilters", "parse_filters", "parse_sort", "filters_from_dict", "filter_sql", "escape_like",
    "list_jobs", "iter_jobs", "count_jobs", "job_summary", "workflow_options", "environment_options",
    "robot_options", "error_type_options", "parse_job_id", "job_detail", "dlq_entry", "neighbour_runs",
    "workflow_duration_comparison", "steps_from_result", "layout_steps", "dbos_tables", "dbos_steps",
    "decode_dbos_value", "job_story", "encode_cursor", "decode_cursor", "JOB_COLUMNS", "EXPORT_ROW_CAP",
    "COUNT_CAP", "SUMMARY_CAP", "PAGE_SIZE", "SORTS", "STATUSES", "RANGES", "search_scope", "has_trigram_index",
    "SEARCH_SCAN_CAP", "window_start", "older_search_query",
]
