"""Builders for the job history and the job page. Pure: data in, components and figures out."""
from __future__ import annotations

import json
import math
from datetime import datetime
from zoneinfo import ZoneInfo

import dash_ag_grid as dag
import dash_bootstrap_components as dbc
import pandas as pd
import plotly.graph_objects as go
from dash import dcc, html

from components import format as fmt
from components.links import executions_link, job_link, robot_link
from components.theme import JOB_STATUS_COLORS, JOB_STATUS_SYMBOLS, empty_figure, template
from data.jobs import layout_steps

OTHER_COLOR = "#8C8C8C"
STATUS_LABELS = {s: s.capitalize() for s in JOB_STATUS_COLORS}

RANGE_OPTIONS = [
    {"label": "Any time", "value": ""},
    {"label": "Last hour", "value": "1h"},
    {"label": "Last 24 hours", "value": "24h"},
    {"label": "Last 7 days", "value": "7d"},
    {"label": "Last 30 days", "value": "30d"},
    {"label": "Last 90 days", "value": "90d"},
    {"label": "Today", "value": "today"},
    {"label": "Custom…", "value": "custom"},
]
SORT_OPTIONS = [
    {"label": "Newest first", "value": "-created"},
    {"label": "Oldest first", "value": "created"},
    {"label": "Longest first", "value": "-duration"},
    {"label": "Shortest first", "value": "duration"},
]
COMMON_ERROR_TYPES = ["TimeoutError", "ConnectionError", "NotFoundError", "PermissionError",
                      "ValidationError", "UnknownError"]


def status_text(status) -> str:
    """'✕ failed': a job status as symbol and word (never colour alone)."""
    if not isinstance(status, str):
        return "—"
    return f"{JOB_STATUS_SYMBOLS.get(status, '•')} {status}"


def status_badge(status, **kw) -> html.Span:
    kind = status if status in JOB_STATUS_COLORS else "other"
    return html.Span(status_text(status), className=f"status-badge job-{kind}", **kw)


def _ms_text(ms) -> str:
    if fmt.is_missing(ms) or ms is None or (isinstance(ms, float) and math.isnan(ms)):
        return "—"
    ms = float(ms)
    if abs(ms) < 1000:
        return f"{ms:.0f} ms"
    return fmt.duration(ms / 1000.0)


def _time(ts, tz: str, pattern: str = "%Y-%m-%d %H:%M:%S") -> str:
    if ts is None or fmt.is_missing(ts) or (isinstance(ts, float) and math.isnan(ts)):
        return "—"
    return fmt.local_time(ts, tz, pattern)


def clock_ms(ts, tz: str) -> str:
    """'10:00:01.234 UTC+01:00': a time of day to the millisecond, with the zone's offset."""
    if ts is None or fmt.is_missing(ts):
        return "—"
    local = pd.Timestamp(ts).tz_convert(ZoneInfo(tz)).to_pydatetime()
    offset = local.strftime("%z")
    zone = "UTC" if offset in ("+0000", "") else f"UTC{offset}"
    return f"{local:%H:%M:%S}.{local.microsecond // 1000:03d} {zone}"


def _wall(ts, tz: str) -> datetime | None:
    """A timestamp as naive wall time in the viewer's zone (what a Plotly date axis shows)."""
    if ts is None or fmt.is_missing(ts):
        return None
    return pd.Timestamp(ts).tz_convert(ZoneInfo(tz)).to_pydatetime().replace(tzinfo=None)


# ---------------------------------------------------------------------------------------------
# Job history
# ---------------------------------------------------------------------------------------------
def column_defs() -> list[dict]:
    """Grid columns; sorting happens in the database (the Sort control), not in the grid."""
    status_rules = {f"status-cell job-{s}": f"params.data.status == '{s}'" for s in JOB_STATUS_COLORS}
    return [
        {"field": "short_id", "headerName": "Job", "tooltipField": "job_id", "pinned": "left", "width": 110,
         "cellClass": "mono"},
        {"field": "workflow_name", "headerName": "Workflow", "tooltipField": "workflow_id", "minWidth": 170, "flex": 2},
        {"field": "robot", "headerName": "Robot", "minWidth": 110, "flex": 1},
        {"field": "status_label", "headerName": "Status", "width": 130, "cellClassRules": status_rules},
        {"field": "priority", "headerName": "Priority", "width": 95, "type": "rightAligned"},
        {"field": "environment", "headerName": "Environment", "width": 125},
        {"field": "created", "headerName": "Created", "width": 215},
        {"field": "started", "headerName": "Started", "width": 215},
        {"field": "finished", "headerName": "Finished", "width": 215},
        {"field": "queue_wait", "headerName": "Queue wait", "width": 120, "type": "rightAligned"},
        {"field": "duration", "headerName": "Duration", "width": 120, "type": "rightAligned"},
        {"field": "retries", "headerName": "Retries", "width": 95, "type": "rightAligned"},
        {"field": "error_type", "headerName": "Error type", "tooltipField": "error_message", "minWidth": 150,
         "flex": 1},
    ]


def grid_rows(jobs: pd.DataFrame, tz: str) -> list[dict]:
    """Rows for the grid, every value already formatted for the viewer's zone."""
    rows = []
    for r in jobs.to_dict("records"):
        message = r.get("error_message")
        rows.append({
            "job_id": r["job_id"],
            "short_id": r["job_id"][:8],
            "workflow_id": r["workflow_id"],
            "workflow_name": r["workflow_name"],
            "robot": r["robot_id"] if isinstance(r.get("robot_id"), str) else "—",
            "status": r["status"],
            "status_label": status_text(r["status"]),
            "priority": None if fmt.is_missing(r.get("priority")) else int(r["priority"]),
            "environment": r["environment"],
            "created": _time(r["created_at"], tz),
            "started": _time(r["started_at"], tz),
            "finished": _time(r["completed_at"], tz),
            "queue_wait": _ms_text(r["queue_wait_ms"]),
            "duration": _ms_text(r["duration_ms"]),
            "retries": f'{int(r["retry_count"])} / {int(r["max_retries"])}',
            "error_type": r["error_type"] if isinstance(r.get("error_type"), str) else "",
            "error_message": (message[:300] + "…") if isinstance(message, str) and len(message) > 300 else message,
        })
    return rows


def jobs_grid(grid_id: str) -> dag.AgGrid:
    return dag.AgGrid(
        id=grid_id,
        columnDefs=column_defs(),
        rowData=[],
        getRowId="params.data.job_id",
        defaultColDef={"sortable": False, "resizable": True, "suppressMovable": False},
        dashGridOptions={
            "enableCellTextSelection": True,
            "ensureDomOrder": True,
            "tooltipShowDelay": 300,
            "suppressCellFocus": False,
            "localeText": {"noRowsToShow": "No jobs match these filters."},
            "rowHeight": 34,
            # Keyboard: Space on a focused row selects it, which opens the job (pages/executions.py).
            "rowSelection": {"mode": "singleRow", "checkboxes": False, "enableClickSelection": False},
        },
        className="jobs-grid",
        style={"height": "620px", "width": "100%"},
    )


def _limited_since(search: dict | None):
    """The instant a limited text search read from, or None when it read everything."""
    if not search or search.get("complete") or search.get("since") is None:
        return None
    return search["since"]


def count_text(count: dict | None, tz: str = "UTC") -> str:
    if not count:
        return ""
    if count["exact"]:
        n = count["count"]
        text = f"{n:,} job" + ("" if n == 1 else "s")
    else:
        text = f"more than {count['more_than']:,} jobs"
        if count.get("estimate"):
            text += f" (about {_approx(count['estimate'])})"
    since = _limited_since(count.get("search"))
    if since is not None:
        text += f" created since {_time(since, tz)}"
    return text


def search_notice(search: dict | None, tz: str = "UTC", older_href: str | None = None):
    """What a text search in error messages read: every message of the time range, or (without
    a trigram index on a long history) the newest jobs from an instant on, with a link that
    searches the jobs before it."""
    if not search:
        return None
    since = _limited_since(search)
    if since is None:
        return html.Div(f"Searched the error message of every job in this time range for “{search['text']}”.",
                        className="small text-muted exec-search-scope")
    cap = search.get("cap")
    newest = f"the newest {cap:,} jobs with an error message" if cap else "the newest jobs with an error message"
    parts = [html.Strong("Search limited to recent jobs. "),
             f"The search read {newest} in this time range: jobs created since {_time(since, tz)}. "
             "Older jobs were not searched: "]
    if older_href:
        parts += [dcc.Link("search the jobs before that", href=older_href, className="alert-link"),
                  ", or choose the time range to search in."]
    else:
        parts.append("choose a time range that ends before that to search them.")
    return dbc.Alert(parts, color="info", className="py-2 mb-2 exec-search-scope")


def _approx(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f} million"
    if n >= 10_000:
        return f"{n / 1000:.0f} thousand"
    return f"{n:,}"


def summary_view(summary: dict, filters_query: dict, tz: str = "UTC") -> html.Div:
    """Counts by status (each a link that adds the status filter) and P50/P95 duration."""
    total = summary["total_jobs"]
    since = _limited_since(summary.get("search"))
    searched = f" (the search read jobs created since {_time(since, tz)})" if since is not None else ""
    if total == 0:
        return html.Div(f"No jobs in this window{searched}.", className="text-muted exec-summary-empty")
    chips = []
    for status, n in summary["by_status"].items():
        if not n:
            continue
        query = {**filters_query, "status": status}
        chips.append(dcc.Link(
            [html.Span(status_text(status), className=f"status-badge job-{status}"),
             html.Span(f"{n:,}", className="chip-count")],
            href=executions_link(**query), className="status-chip", title=f"Show only {status} jobs",
        ))
    covered = "the newest " + f"{summary['cap']:,} jobs of this view" if summary["capped"] else f"{total:,} jobs"
    rate = summary.get("success_rate")
    stats = [
        html.Div([html.Span("P50 duration", className="stat-label"),
                  html.Span(_ms_text(summary["p50_duration_ms"]), className="stat-value")], className="stat"),
        html.Div([html.Span("P95 duration", className="stat-label"),
                  html.Span(_ms_text(summary["p95_duration_ms"]), className="stat-value")], className="stat"),
        html.Div([html.Span("Success rate", className="stat-label"),
                  html.Span(fmt.percent(rate), className="stat-value")], className="stat"),
    ]
    note = (f"Durations over {summary['duration_jobs']:,} completed and failed jobs that ran; "
            f"summary of {covered}{searched}.")
    return html.Div([
        html.Div(chips, className="status-chips"),
        html.Div(stats, className="exec-stats"),
        html.Div(note, className="small text-muted w-100"),
    ], className="exec-summary")


def problems_notice(problems: list[str]):
    if not problems:
        return None
    return dbc.Alert(
        [html.Strong("Some filters in the link were not understood and are ignored: "),
         html.Ul([html.Li(p) for p in problems], className="mb-0")],
        color="warning", className="py-2", dismissable=True,
    )


# ---------------------------------------------------------------------------------------------
# One job
# ---------------------------------------------------------------------------------------------
def not_found(job_id) -> html.Div:
    shown = str(job_id)[:80] if job_id is not None else ""
    return html.Div([
        html.H1("No such job", className="h3"),
        html.P([
            "There is no job with the id ", html.Code(shown or "(empty)"), ". ",
            "A job id is a UUID such as ", html.Code("3f2b8c1e-5d4a-4c1b-9a7e-2f6d8b0c1a23"), ".",
        ]),
        html.P("It may have been deleted, or the link may be incomplete."),
        dcc.Link("← Back to the job history", href="/executions", className="btn btn-outline-primary"),
    ], className="job-not-found", role="alert")


def _field(label: str, value) -> html.Div:
    return html.Div([html.Dt(label), html.Dd(value if value not in (None, "") else "—")], className="job-field")


def job_header(job: dict, tz: str) -> html.Div:
    robot = job.get("robot_id")
    title_bits = [html.H1(job["workflow_name"], className="h3 mb-0"), status_badge(job["status"], id="job-status")]
    if job.get("source") == "dlq":
        title_bits.append(html.Span("in dead-letter queue", className="badge text-bg-warning"))
    retries = (f'{job["retry_count"]} / {job["max_retries"]}'
               if job.get("max_retries") is not None else str(job.get("retry_count") or 0))
    fields = [
        _field("Workflow", html.Span([job.get("workflow_id") or "—", " · ",
                                      dcc.Link("all runs", href=executions_link(workflow=job.get("workflow_id")))])
               if job.get("workflow_id") else None),
        _field("Robot", dcc.Link(robot, href=robot_link(robot)) if robot else "not claimed"),
        _field("Environment", job.get("environment")),
        _field("Priority", job.get("priority")),
        _field("Retries", retries),
        _field("Created", _time(job.get("created_at"), tz)),
    ]
    return html.Div([
        dcc.Link("← Job history", href="/executions", className="small"),
        html.Div(title_bits, className="d-flex align-items-center gap-2 flex-wrap mt-1"),
        html.Div([
            html.Span("Job ", className="text-muted"),
            html.Code(job["job_id"], id="job-full-id"),
            dcc.Clipboard(target_id="job-full-id", title="Copy job id", className="copy-button"),
        ], className="d-flex align-items-center gap-1 small mb-2"),
        html.Dl(fields, className="job-fields"),
    ], className="job-header")


def timeline_figure(job: dict, tz: str, theme: str | None = None) -> go.Figure:
    """created → started → finished drawn to scale; a running job shows elapsed time and lease."""
    created, started, completed = job.get("created_at"), job.get("started_at"), job.get("completed_at")
    now = job.get("as_of")
    if created is None:
        return empty_figure("No timestamps recorded for this job", theme, height=170)
    status = job.get("status")
    bars = []  # (row label, start, end, colour, text, pattern)
    queue_end = started or (completed if status == "cancelled" else None) or (now if status == "pending" else None)
    if queue_end is not None:
        word = "waiting" if status == "pending" else "queue wait"
        bars.append(("Queue", created, queue_end, JOB_STATUS_COLORS["pending"],
                     f"{word} {_ms_text((queue_end - created).total_seconds() * 1000)}", ""))
    if started is not None:
        end = completed or (now if status == "running" else None)
        if end is not None:
            running = completed is None
            word = "elapsed" if running else "ran"
            bars.append(("Run", started, end, JOB_STATUS_COLORS.get(status, OTHER_COLOR),
                         f"{word} {_ms_text((end - started).total_seconds() * 1000)}", "/" if running else ""))
    fig = go.Figure(layout=dict(template=template(theme), height=190, barmode="overlay", showlegend=False,
                                margin=dict(l=70, r=30, t=30, b=40), xaxis_title=f"time ({tz})"))
    for label, start, end, colour, text, pattern in bars:
        s, e = _wall(start, tz), _wall(end, tz)
        width = max((e - s).total_seconds() * 1000.0, 0.0)
        fig.add_bar(
            y=[label], x=[width], base=[s], orientation="h", marker_color=colour,
            marker_pattern_shape=pattern, text=[text], textposition="auto", insidetextanchor="middle",
            hovertemplate=f"{label}: {text}<br>%{{base|%H:%M:%S.%L}} → {e:%H:%M:%S}<extra></extra>",
        )
    events = [("created", created), ("started", started), ("finished", completed)]
    for name, ts in events:
        if ts is not None:
            fig.add_scatter(x=[_wall(ts, tz)], y=["Queue" if name == "created" else "Run"], mode="markers",
                            marker=dict(symbol="line-ns-open", size=18, color="#444"),
                            hovertemplate=f"{name} {_time(ts, tz)}<extra></extra>")
    if status == "running" and job.get("visible_after") is not None:
        lease = _wall(job["visible_after"], tz)
        remaining = job.get("lease_remaining_ms")
        text = ("lease expires in " + _ms_text(remaining)) if remaining is not None and remaining >= 0 else \
            ("lease expired " + _ms_text(-remaining) + " ago: the orchestrator will re-queue it"
             if remaining is not None else "lease")
        fig.add_vline(x=lease, line_dash="dash", line_color=JOB_STATUS_COLORS["failed"])
        fig.add_annotation(x=lease, y=1.12, yref="paper", text=text, showarrow=False,
                           font=dict(size=12, color=JOB_STATUS_COLORS["failed"]), xanchor="right")
    fig.update_yaxes(categoryorder="array", categoryarray=["Run", "Queue"], rangemode=None)
    fig.update_xaxes(type="date")
    return fig


def timeline_facts(job: dict, tz: str) -> html.Div:
    facts = [
        _field("Created", _time(job.get("created_at"), tz)),
        _field("Started (claimed)", _time(job.get("started_at"), tz)),
        _field("Finished", _time(job.get("completed_at"), tz)),
        _field("Queue wait", _ms_text(job.get("queue_wait_ms") if job.get("queue_wait_ms") is not None
                                      else job.get("waiting_ms"))),
        _field("Duration", _ms_text(job.get("duration_ms")) if job.get("duration_ms") is not None
               else (f'{_ms_text(job.get("elapsed_ms"))} so far' if job.get("elapsed_ms") is not None else "—")),
    ]
    if job.get("status") == "running":
        remaining = job.get("lease_remaining_ms")
        lease = _time(job.get("visible_after"), tz)
        if remaining is not None:
            lease += (f" (in {_ms_text(remaining)})" if remaining >= 0 else f" (expired {_ms_text(-remaining)} ago)")
        facts.append(_field("Lease expires", lease))
    return html.Dl(facts, className="job-fields")


def _step_label(step: dict) -> str:
    node_type = f" ({step['node_type']})" if step.get("node_type") else ""
    return f"{step['step']}. {step['node_id']}{node_type}"


def steps_figure(steps: list[dict], origin, tz: str, theme: str | None = None, max_steps: int = 200) -> go.Figure:
    """Waterfall (Gantt) of the steps: one bar per step on a time axis in the viewer's zone."""
    placed = layout_steps(steps[:max_steps], origin)
    if not placed:
        message = "No step timings recorded for this job" if steps else "No steps recorded for this job"
        return empty_figure(message, theme, height=200)
    labels = [_step_label(s) for s in placed]
    height = min(120 + 28 * len(placed), 2400)
    fig = go.Figure(layout=dict(template=template(theme), height=height, barmode="overlay",
                                margin=dict(l=40, r=30, t=40, b=40), xaxis_title=f"time ({tz})",
                                legend_title_text="Step status"))
    groups: dict[tuple[str, bool], list[int]] = {}
    for i, step in enumerate(placed):
        groups.setdefault((step["status"], bool(step["estimated"])), []).append(i)
    for (status, estimated), idx in groups.items():
        colour = JOB_STATUS_COLORS.get(status, OTHER_COLOR)
        starts, widths, texts, hovers = [], [], [], []
        for i in idx:
            step = placed[i]
            s = _wall(step["bar_start"], tz)
            end = step["bar_end"] if step["bar_end"] is not None else step["bar_start"]
            e = _wall(end, tz)
            starts.append(s)
            widths.append(max((e - s).total_seconds() * 1000.0, 1.0))
            texts.append(_ms_text(step.get("duration_ms")))
            error = step.get("error") or ""
            hovers.append(
                f"<b>{_esc(_step_label(step))}</b><br>status: {_esc(status)}<br>"
                f"start: {_time(step['bar_start'], tz, '%H:%M:%S')}"
                f"{' (estimated)' if estimated else ''}<br>duration: {texts[-1]}"
                + (f"<br>error: {_esc(error[:200])}" if error else "")
            )
        name = status_text(status) + (" (start estimated)" if estimated else "")
        fig.add_bar(
            y=[labels[i] for i in idx], x=widths, base=starts, orientation="h", name=name,
            marker_color=colour, marker_pattern_shape="/" if estimated else "",
            text=texts, textposition="auto", hovertext=hovers, hoverinfo="text",
        )
    fig.update_yaxes(categoryorder="array", categoryarray=labels, autorange="reversed", rangemode=None)
    fig.update_xaxes(type="date")
    return fig


def _esc(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def steps_table(steps: list[dict], tz: str, show_output: bool = False, max_rows: int = 500) -> html.Div:
    if not steps:
        return html.Div("No steps recorded for this job.", className="text-muted")
    head = ["#", "Node", "Type", "Status", "Start", "Duration", "Error"] + (["Output"] if show_output else [])
    body = []
    for step in steps[:max_rows]:
        error = step.get("error") or ""
        cells = [
            html.Td(step["step"]),
            html.Td(step["node_id"], className="text-break"),
            html.Td(step.get("node_type") or "—"),
            html.Td(status_badge(step["status"])),
            html.Td(clock_ms(step.get("started_at"), tz), className="text-nowrap"),
            html.Td(_ms_text(step.get("duration_ms")), className="text-end text-nowrap"),
            html.Td(error[:300] + ("…" if len(error) > 300 else ""), title=error[:2000] or None,
                    className="step-error"),
        ]
        if show_output:
            output = step.get("output") or ""
            cells.append(html.Td(output[:200] + ("…" if len(output) > 200 else ""), title=output[:2000] or None,
                                 className="step-output mono"))
        body.append(html.Tr(cells, className="table-danger" if step["status"] == "failed" else None))
    more = (html.Div(f"Showing the first {max_rows} of {len(steps)} steps.", className="small text-muted")
            if len(steps) > max_rows else None)
    return html.Div([
        html.Div(html.Table([html.Thead(html.Tr([html.Th(h) for h in head])), html.Tbody(body)],
                            className="table table-sm steps-table mb-0"), className="table-responsive"),
        more,
    ])


def _json_leaf(value) -> html.Span:
    if value is None:
        return html.Span("null", className="json-null")
    if isinstance(value, bool):
        return html.Span("true" if value else "false", className="json-bool")
    if isinstance(value, (int, float)):
        return html.Span(json.dumps(value), className="json-number")
    text = json.dumps(str(value), ensure_ascii=False)
    return html.Span(text if len(text) <= 2000 else text[:2000] + "…\"", className="json-string")


def json_tree(value, *, open_depth: int = 1, max_nodes: int = 1500) -> html.Div:
    """Collapsible JSON: objects and arrays are <details> that open to `open_depth` levels."""
    budget = [max_nodes]

    def node(key, val, depth):
        budget[0] -= 1
        label = [html.Span(f"{key}: ", className="json-key")] if key is not None else []
        if isinstance(val, (dict, list)) and val:
            items = list(val.items()) if isinstance(val, dict) else list(enumerate(val))
            kind = f"{{{len(items)} keys}}" if isinstance(val, dict) else f"[{len(items)} items]"
            children = []
            for k, v in items:
                if budget[0] <= 0:
                    children.append(html.Div("… (more not shown)", className="json-more"))
                    break
                children.append(node(k, v, depth + 1))
            return html.Details([html.Summary(label + [html.Span(kind, className="json-kind")]),
                                 html.Div(children, className="json-children")], open=depth < open_depth)
        if isinstance(val, (dict, list)):
            return html.Div(label + [html.Span("{}" if isinstance(val, dict) else "[]", className="json-kind")])
        return html.Div(label + [_json_leaf(val)], className="json-leaf")

    return html.Div(node(None, value, 0), className="json-tree")


def json_section(title: str, value, open_: bool = False) -> html.Details:
    empty = value in (None, {}, [], "")
    return html.Details([
        html.Summary([html.Span(title, className="fw-semibold"),
                      html.Span(" (empty)" if empty else "", className="text-muted")]),
        html.Div("Nothing recorded." if empty else json_tree(value), className="json-body"),
    ], open=open_ and not empty, className="json-section")


def error_panel(job: dict, dlq: dict | None, tz: str):
    message = job.get("error_message")
    parts = []
    if message:
        parts += [
            html.Div([html.Span("Error type ", className="text-muted"),
                      dcc.Link(job.get("error_type") or "—",
                               href=executions_link(error_type=job.get("error_type"),
                                                    workflow=job.get("workflow_id")),
                               title="Jobs of this workflow with this error type")], className="mb-1"),
            html.Pre(message, className="error-message", id="job-error-message"),
        ]
    if dlq:
        state = "waiting for reprocessing" if dlq.get("pending") else (
            f"reprocessed {_time(dlq.get('reprocessed_at'), tz)} by {dlq.get('reprocessed_by') or 'unknown'}")
        parts.append(html.Div([
            html.H3("Dead-letter queue", className="h6 mt-2"),
            html.Dl([
                _field("State", state),
                _field("First failed", _time(dlq.get("first_failed_at"), tz)),
                _field("Last failed", _time(dlq.get("last_failed_at"), tz)),
                _field("Retries", dlq.get("retry_count")),
                _field("Entry id", dlq.get("id")),
            ], className="job-fields"),
            html.Pre(dlq["error_message"], className="error-message")
            if dlq.get("error_message") and dlq.get("error_message") != message else None,
            json_section("Error details", dlq.get("error_details"), open_=True),
        ], className="dlq-entry", id="job-dlq"))
    if not parts:
        return None
    return parts


def comparison_view(cmp: dict | None, job: dict) -> html.Div:
    if not cmp or not cmp.get("runs"):
        return html.Div("No earlier finished runs of this workflow to compare with.", className="text-muted")
    d, p50, p95 = cmp.get("duration_ms"), cmp["p50_duration_ms"], cmp["p95_duration_ms"]
    if d is None:
        verdict = "This run has no duration yet."
    elif p95 is not None and d > p95:
        verdict = "Slower than the workflow's P95: an outlier."
    elif p50 is not None and d > p50:
        verdict = "Slower than usual (above P50), within P95."
    else:
        verdict = "At or faster than the workflow's median (P50)."
    rows = [
        _field("This run", _ms_text(d)),
        _field("Workflow P50", _ms_text(p50)),
        _field("Workflow P95", _ms_text(p95)),
        _field("Runs compared", f'{cmp["runs"]:,}'),
    ]
    if cmp.get("ratio_to_p50"):
        rows.append(_field("Compared with P50", f'{cmp["ratio_to_p50"]:.2f} ×'))
    if cmp.get("share_shorter") is not None:
        rows.append(_field("Longer than", f'{cmp["share_shorter"] * 100:.0f} % of those runs'))
    return html.Div([
        html.P(verdict, className="fw-semibold mb-1", id="job-comparison-verdict"),
        html.Dl(rows, className="job-fields"),
        html.Div(f'Compared with {cmp["covers"]}.', className="small text-muted"),
    ])


def neighbours_table(neighbours: pd.DataFrame, job: dict, tz: str):
    if neighbours is None or neighbours.empty:
        return html.Div("No other runs of this workflow.", className="text-muted")
    rows = []
    this = {"position": "this", "job_id": job["job_id"], "status": job["status"], "robot_id": job.get("robot_id"),
            "created_at": job.get("created_at"), "duration_ms": job.get("duration_ms")}
    records = neighbours.to_dict("records")
    ordered = [r for r in records if r["position"] == "previous"] + [this] + \
              [r for r in records if r["position"] == "next"]
    for r in ordered:
        current = r["position"] == "this"
        link = (html.Strong("this job") if current
                else dcc.Link(r["job_id"][:8], href=job_link(r["job_id"]), className="mono"))
        rows.append(html.Tr([
            html.Td(link),
            html.Td(_time(r["created_at"], tz), className="text-nowrap"),
            html.Td(status_badge(r["status"])),
            html.Td(_ms_text(r.get("duration_ms")), className="text-end"),
            html.Td(r.get("robot_id") if isinstance(r.get("robot_id"), str) else "—"),
        ], className="table-active" if current else None))
    return html.Table([
        html.Thead(html.Tr([html.Th("Run"), html.Th("Created"), html.Th("Status"), html.Th("Duration"),
                            html.Th("Robot")])),
        html.Tbody(rows),
    ], className="table table-sm neighbours-table mb-0")


def _card(title, body, **kw) -> dbc.Card:
    return dbc.Card([dbc.CardHeader(title), dbc.CardBody(body)], className="mb-3", **kw)


def steps_source_note(job: dict) -> str:
    source = job.get("steps_source")
    if source == "dbos.operation_outputs":
        dbos = job.get("dbos") or {}
        return f"From DBOS (dbos.operation_outputs); DBOS workflow status: {dbos.get('workflow_status') or '—'}."
    if source:
        return f"From {source}."
    return ""


def job_page(job: dict, tz: str, theme: str | None = None) -> html.Div:
    """The whole job page from data.jobs.job_story()."""
    graph = dict(config={"displaylogo": False, "responsive": True})
    steps = job.get("node_executions") or []
    errors = error_panel(job, job.get("dlq"), tz)
    result = job.get("result")
    return html.Div([
        job_header(job, tz),
        _card("Timeline", [timeline_facts(job, tz),
                           dcc.Graph(id="job-timeline", figure=timeline_figure(job, tz, theme), **graph)]),
        _card("Error", errors, id="job-error-card") if errors else None,
        _card([html.Span("Steps"), html.Span(steps_source_note(job), className="small text-muted ms-2")], [
            dcc.Graph(id="job-steps-chart", figure=steps_figure(steps, job.get("started_at"), tz, theme), **graph),
            steps_table(steps, tz, show_output=job.get("steps_source") == "dbos.operation_outputs"),
        ]),
        dbc.Row([
            dbc.Col(_card("Duration compared with this workflow", comparison_view(job.get("comparison"), job)), lg=5),
            dbc.Col(_card("Runs of this workflow around this one",
                          neighbours_table(job.get("neighbours"), job, tz)), lg=7),
        ]),
        _card("Data", [
            json_section("Input variables", job.get("variables"), open_=True),
            json_section("Metadata", job.get("metadata")),
            json_section("Result", result),
            html.Div(f'Workflow definition: {job["workflow_json_bytes"]:,} bytes (not shown).',
                     className="small text-muted mt-2") if job.get("workflow_json_bytes") else None,
        ]),
    ], className="job-page")


__all__ = [
    "column_defs", "grid_rows", "jobs_grid", "count_text", "summary_view", "problems_notice", "not_found",
    "job_header", "timeline_figure", "timeline_facts", "steps_figure", "steps_table", "json_tree",
    "json_section", "error_panel", "comparison_view", "neighbours_table", "job_page", "status_text",
    "status_badge", "search_notice", "RANGE_OPTIONS", "SORT_OPTIONS", "COMMON_ERROR_TYPES",
]


ACTION_HELP = {
    "cancel": "Cancel this job? A pending job will not run; a running job is marked cancelled and the "
              "robot's later result is not recorded.",
    "retry": "Retry this job? A new pending job with the same workflow and variables is queued; this one "
             "stays as it is.",
}


def job_actions(job: dict, can_act: bool) -> html.Div | None:
    """Operator buttons for what this job's status allows (confirmed before they act)."""
    if not can_act:
        return None
    possible = []
    if job["status"] in ("pending", "running"):
        possible.append(("cancel", "Cancel job", "danger"))
    if job["status"] in ("failed", "cancelled") and not (job.get("metadata") or {}).get("retried_as"):
        possible.append(("retry", "Retry job", "primary"))
    if not possible:
        return None
    return html.Div([
        dcc.ConfirmDialogProvider(
            dbc.Button(label, color=color, outline=True, size="sm", className="me-2", id=f"job-{action}-button"),
            id={"type": "job-action", "action": action}, message=ACTION_HELP[action])
        for action, label, color in possible
    ], className="job-actions mb-2")
