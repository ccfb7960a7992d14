"""CSV export of the job history: /executions/export.csv?<the page's filters>&tz=Europe/Paris

- The filters and `sort` are the job history's URL parameters (components/links.py); anything
  malformed is answered with HTTP 400 and what was wrong, never a partial file.
- `tz` (an IANA zone, default UTC) is the zone of the times: ISO 8601 with the offset, e.g.
  2025-03-01T10:00:00.000000+01:00.
- At most EXPORT_ROW_CAP rows (data/jobs.py, 100,000), in the page's sort order; the cap is
  stated in the X-Row-Cap header. The rows are read in keyset chunks and streamed, so memory
  stays flat and no transaction stays open while the client downloads.
- Columns are the grid's: job_id, workflow_id, workflow_name, robot_id, status, priority,
  environment, created_at, started_at, completed_at, queue_wait_ms, duration_ms, retry_count,
  max_retries, error_type, error_message. Durations are milliseconds.
- Text cells that a spreadsheet would run as a formula (starting with = + - @ or a tab/CR)
  get a leading apostrophe.
"""
from __future__ import annotations

import csv
import io
import math
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import flask
import pandas as pd

from data import jobs
from data.db import DatabaseUnavailable
from data.timeutil import is_valid_tz
from server.state import current

EXPORT_PATH = "/executions/export.csv"
TIME_COLUMNS = ("created_at", "started_at", "completed_at")
NUMBER_COLUMNS = ("priority", "queue_wait_ms", "duration_ms", "retry_count", "max_retries")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _iso(value, zone: ZoneInfo) -> str:
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(zone).isoformat(timespec="microseconds")
    return str(value)


def _number(value) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):  # numpy floats too: the shortest exact decimal
        return repr(float(value))
    return str(int(value)) if hasattr(value, "__index__") else str(value)


def _text(value) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_rows(frame: pd.DataFrame, tz: str) -> list[list[str]]:
    """Rows of one chunk as CSV cells (times in `tz` with offset)."""
    zone = ZoneInfo(tz)
    out = []
    for record in frame.to_dict("records"):
        row = []
        for column in jobs.JOB_COLUMNS:
            value = record.get(column)
            if column in TIME_COLUMNS:
                row.append(_iso(value, zone))
            elif column in NUMBER_COLUMNS:
                row.append(_number(value))
            else:
                row.append(_text(value))
        out.append(row)
    return out


def _encode(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


def _bad_request(problems: list[str]) -> flask.Response:
    text = "The export was not made:\n" + "\n".join(f"- {p}" for p in problems) + "\n"
    return flask.Response(text, status=400, mimetype="text/plain")


def export_csv() -> flask.Response:
    args = {key: ",".join(values) for key, values in flask.request.args.lists()}
    filters, problems = jobs.parse_filters(args)
    sort, sort_problems = jobs.parse_sort(args.get("sort"))
    problems += sort_problems
    tz = args.get("tz") or "UTC"
    if not is_valid_tz(tz):
        problems.append(f"tz {tz[:64]!r} is not a known time zone (use an IANA name such as Europe/Paris).")
    if problems:
        return _bad_request(problems)
    engine = current().engine
    chunks = jobs.iter_jobs(engine, filters, tz, sort=sort, cap=jobs.EXPORT_ROW_CAP)
    try:
        first = next(chunks, None)  # read before answering: a database error is a 503, not a cut file
    except DatabaseUnavailable as exc:
        return flask.Response(f"The database is unavailable: {exc}\n", status=503, mimetype="text/plain")

    def generate():
        yield _encode([list(jobs.JOB_COLUMNS)])
        if first is None:
            return
        yield _encode(csv_rows(first, tz))
        for chunk in chunks:
            yield _encode(csv_rows(chunk, tz))

    stamp = datetime.now(ZoneInfo(tz)).strftime("%Y%m%d-%H%M%S")
    headers = {
        "Content-Disposition": f'attachment; filename="jobs-{stamp}.csv"',
        "X-Row-Cap": str(jobs.EXPORT_ROW_CAP),
        "Cache-Control": "no-store",
    }
    return flask.Response(flask.stream_with_context(generate()), mimetype="text/csv", headers=headers)


def register_export(server: flask.Flask) -> None:
    """Add the CSV export route to the Flask server (call once, from app.py)."""
    if "executions_export" not in server.view_functions:
        server.add_url_rule(EXPORT_PATH, "executions_export", export_csv, methods=["GET"])
