"""Builders for the Robots pages: the fleet list (AG Grid) and one robot's header, charts and
tables. Pure functions of their data: no database, testable without a browser."""
from __future__ import annotations

import math
import re

import dash_ag_grid as dag
import dash_bootstrap_components as dbc
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from dash import dcc, html

from components import format as fmt
from components.links import executions_link, job_link, robot_link
from components.theme import (
    JOB_STATUS_COLORS, JOB_STATUS_SYMBOLS, ROBOT_STATUS_COLORS, ROBOT_STATUS_LABELS, ROBOT_STATUS_SYMBOLS,
    empty_figure, template, viewer_theme,
)

# The order statuses sort in (most alarming first) and appear in legends.
STATUS_RANK = {"offline": 0, "error": 1, "busy": 2, "idle": 3, "maintenance": 4}
WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]

# Columns of the list: colId (the URL's sort key) -> header.
LIST_HEADERS = {
    "name": "Robot", "hostname": "Hostname", "status": "Status", "environment": "Environment",
    "capabilities": "Capabilities", "tags": "Tags", "current_job_id": "Current job",
    "heartbeat_age_s": "Last heartbeat", "cpu_percent": "CPU", "memory_percent": "Memory",
    "completed_today": "Completed today", "failed_today": "Failed today",
    "success_rate_7d": "Success 7\u00a0d", "utilization_24h": "Utilization 24\u00a0h",
}

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")


def md_escape(text) -> str:
    """Text safe inside a markdown link label."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def status_label(status: str) -> str:
    return f"{ROBOT_STATUS_SYMBOLS.get(status, '?')} {ROBOT_STATUS_LABELS.get(status, str(status).title())}"


def silence_text(age_s) -> str:
    return "never seen" if fmt.is_missing(age_s) else f"silent {fmt.duration(age_s)}"


def parse_sort(sort) -> tuple[str, str] | None:
    """'-cpu_percent' -> ('cpu_percent', 'desc'); None for a missing or unknown column."""
    if not isinstance(sort, str) or not sort:
        return None
    column = sort.lstrip("-")
    if column not in LIST_HEADERS:
        return None
    return column, "desc" if sort.startswith("-") else "asc"


def _formatter(expr: str) -> dict:
    return {"function": expr}


def list_column_defs(sort: str | None = None) -> list[dict]:
    """AG Grid columns of the fleet list. Every column sorts on a raw value (numbers, rank) and
    shows a formatted text; `sort` ('col' or '-col') is the initial sort from the URL."""
    text = lambda field: _formatter(f"params.data ? params.data.{field} : ''")  # noqa: E731
    right = {"type": "rightAligned"}
    defs = [
        dict(colId="name", field="name_md", cellRenderer="markdown", pinned="left", width=150, minWidth=110,
             tooltipField="name_title"),
        dict(colId="hostname", field="hostname", width=130, minWidth=90),
        dict(colId="status", field="status_rank", valueFormatter=text("status_text"), width=135, minWidth=125,
             cellClass="robot-status-cell", tooltipField="status_title",
             cellClassRules={f"robot-status-{s}": f"params.data && params.data.status == '{s}'"
                             for s in STATUS_RANK}),
        dict(colId="environment", field="environment", width=110, minWidth=100),
        dict(colId="capabilities", field="capabilities_text", width=130, minWidth=90, tooltipField="capabilities_text"),
        dict(colId="tags", field="tags_text", width=100, minWidth=70, tooltipField="tags_text"),
        dict(colId="current_job_id", field="current_job_md", cellRenderer="markdown", width=150, minWidth=100,
             tooltipField="current_job_title"),
        dict(colId="heartbeat_age_s", field="heartbeat_age_s", valueFormatter=text("heartbeat_text"),
             tooltipField="heartbeat_title", width=150, minWidth=140,
             cellClassRules={"robot-silent-cell": "params.data && params.data.silent"}, **right),
        dict(colId="cpu_percent", field="cpu_percent", valueFormatter=text("cpu_text"), width=75, minWidth=65,
             **right),
        dict(colId="memory_percent", field="memory_percent", valueFormatter=text("memory_text"), width=95,
             minWidth=85, **right),
        dict(colId="completed_today", field="completed_today", width=95, minWidth=90, **right),
        dict(colId="failed_today", field="failed_today", width=90, minWidth=75,
             cellClassRules={"robot-failed-today": "params.value > 0"}, **right),
        dict(colId="success_rate_7d", field="success_rate_7d", valueFormatter=text("success_text"),
             tooltipField="success_title", width=95, minWidth=90, **right),
        dict(colId="utilization_24h", field="utilization_24h", valueFormatter=text("utilization_text"),
             width=105, minWidth=100, **right),
    ]
    wanted = parse_sort(sort)
    for d in defs:
        d.setdefault("headerName", LIST_HEADERS[d["colId"]])
        if wanted and d["colId"] == wanted[0]:
            d["sort"] = wanted[1]
    return defs


def _memory_text(row) -> str:
    pct, mb = row.get("memory_percent"), row.get("memory_mb")
    if not fmt.is_missing(pct):
        return f"{pct:.0f} %" + (f" ({mb:,.0f} MB)" if not fmt.is_missing(mb) else "")
    if not fmt.is_missing(mb):
        return f"{mb:,.0f} MB"
    return "—"


def _clean(value):
    """A JSON-safe cell value: NaN/NaT -> None, numpy scalars -> Python."""
    if fmt.is_missing(value) or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def list_rows(robots: pd.DataFrame, tz: str) -> list[dict]:
    """The grid's rowData: raw values to sort on, texts to show and hover titles."""
    rows = []
    for r in robots.to_dict("records"):
        status = r["status"]
        silent = bool(r.get("silent"))
        age = _clean(r.get("heartbeat_age_s"))
        job_id = _clean(r.get("current_job_id"))
        workflow = _clean(r.get("current_workflow")) or job_id
        finished = int(r.get("finished_7d") or 0)
        rate = _clean(r.get("success_rate_7d"))
        caps, tags = r.get("capabilities") or [], r.get("tags") or []
        rows.append({
            "robot_id": r["robot_id"],
            "name": r["name"],
            "name_md": f"[{md_escape(r['name'])}]({robot_link(r['robot_id'])})",
            "name_title": f"{r['name']} · id {r['robot_id']}",
            "hostname": _clean(r.get("hostname")) or "—",
            "status": status,
            "status_rank": STATUS_RANK.get(status, 9),
            "status_text": status_label(status),
            "status_title": (f"Stored status: {r.get('stored_status')}"
                             + ("; no heartbeat for longer than the threshold" if silent else "")),
            "silent": silent,
            "environment": r.get("environment") or "default",
            "capabilities_text": ", ".join(map(str, caps)),
            "tags_text": ", ".join(map(str, tags)),
            "current_job_md": (f"[{md_escape(workflow)}]({job_link(job_id)})" if job_id else ""),
            "current_job_title": (f"{workflow} · job {job_id}" + (f" (+{int(r['running_jobs']) - 1} more)"
                                  if int(r.get("running_jobs") or 0) > 1 else "")) if job_id else "no running job",
            "heartbeat_age_s": age,
            "heartbeat_text": silence_text(age) if silent else fmt.ago(age),
            "heartbeat_title": fmt.local_time(r.get("last_heartbeat"), tz),
            "cpu_percent": _clean(r.get("cpu_percent")),
            "cpu_text": "—" if fmt.is_missing(r.get("cpu_percent")) else f"{r['cpu_percent']:.0f} %",
            "memory_percent": _clean(r.get("memory_percent")),
            "memory_text": _memory_text(r),
            "completed_today": int(r.get("completed_today") or 0),
            "failed_today": int(r.get("failed_today") or 0),
            "success_rate_7d": rate,
            "success_text": fmt.percent(rate),
            "success_title": f"{int(r.get('completed_7d') or 0)} completed of {finished} finished in 7 days",
            "utilization_24h": _clean(r.get("utilization_24h")),
            "utilization_text": fmt.percent(_clean(r.get("utilization_24h"))),
        })
    return rows


def robot_list_grid(grid_id: str, sort: str | None = None) -> dag.AgGrid:
    return dag.AgGrid(
        id=grid_id,
        columnDefs=list_column_defs(sort),
        rowData=[],
        getRowId="params.data.robot_id",
        defaultColDef={"sortable": True, "resizable": True, "filter": False, "wrapHeaderText": True,
                       "autoHeaderHeight": True, "suppressHeaderMenuButton": True},
        rowClassRules={"robot-row-silent": "params.data && params.data.silent"},
        columnSize="responsiveSizeToFit",
        dashGridOptions={"animateRows": False, "tooltipShowDelay": 300, "enableCellTextSelection": True,
                         "ensureDomOrder": True, "rowHeight": 36,
                         # The grid's default overlay: an HTML overlayNoRowsTemplate string is blocked
                         # (and logged as a console error) by dash-ag-grid; list_summary says it instead.
                         "localeText": {"noRowsToShow": "No robot matches these filters"}},
        className="robots-grid",
        style=grid_style(0),
    )


def grid_style(rows: int) -> dict:
    """The grid as tall as its rows (up to most of the screen; it scrolls beyond)."""
    return {"height": f"min(75vh, {max(rows, 3) * 36 + 80}px)", "width": "100%"}


def silent_banner(robots: pd.DataFrame, offline_after_s: int, limit: int = 8):
    """Robots that went silent, longest silence first, each a link; None when none is."""
    if robots.empty or "silent" not in robots:
        return None
    silent = robots[robots["silent"].fillna(False).astype(bool)].copy()
    if silent.empty:
        return None
    silent["_age"] = silent["heartbeat_age_s"].fillna(float("inf"))
    silent = silent.sort_values("_age", ascending=False)
    items = []
    for r in silent.head(limit).to_dict("records"):
        claims = r.get("stored_status") in ("online", "busy", "error")
        items.append(html.Li([
            dcc.Link(r["name"], href=robot_link(r["robot_id"]), className="fw-semibold"),
            f" — {silence_text(_clean(r['heartbeat_age_s']))}",
            html.Span(f" (its row still says {r['stored_status']})", className="text-muted") if claims else None,
        ]))
    more = len(silent) - limit
    return dbc.Alert([
        html.Strong(f"{ROBOT_STATUS_SYMBOLS['offline']} {len(silent)} robot{'s' if len(silent) != 1 else ''} "
                    f"silent: no heartbeat for more than {fmt.duration(offline_after_s)}"),
        html.Ul(items, className="silent-list mb-0"),
        html.Div(f"and {more} more (sort by last heartbeat)", className="small") if more > 0 else None,
    ], color="warning", className="silent-banner", id="robots-silent-alert")


def list_summary(robots: pd.DataFrame) -> str:
    if robots.empty:
        return "No robot matches these filters"
    counts = robots["status"].value_counts()
    parts = [f"{counts[s]} {ROBOT_STATUS_LABELS[s].lower()}" for s in STATUS_RANK if counts.get(s)]
    return f"{len(robots)} robot{'s' if len(robots) != 1 else ''}: " + ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# One robot
# ---------------------------------------------------------------------------------------------

def status_badge(status: str, large: bool = False) -> html.Span:
    return html.Span(
        status_label(status),
        className=f"robot-badge robot-badge-{status}" + (" robot-badge-lg" if large else ""),
        style={"--status-color": ROBOT_STATUS_COLORS.get(status, "#8C8C8C")},
    )


def no_such_robot(robot_id) -> html.Div:
    shown = str(robot_id) if robot_id is not None else ""
    if len(shown) > 80:
        shown = shown[:80] + "…"
    return html.Div([
        html.H1("No such robot", className="h3"),
        html.P(["No robot has the id ", html.Code(shown or "(empty)"), "."]),
        html.P(dcc.Link("← Back to the robot list", href="/robots")),
    ], className="no-such-robot", id="robot-not-found")


def _fact(label: str, value) -> html.Div:
    return html.Div([html.Dt(label), html.Dd(value if value not in (None, "") else "—")], className="robot-fact")


def robot_header(d: dict, tz: str, offline_after_s: int, range_: str = "7d") -> html.Div:
    """Name, live status, time since the last heartbeat and the robot's facts."""
    status = d["status"]
    age = _clean(d.get("heartbeat_age_s"))
    if fmt.is_missing(age):
        heartbeat = "No heartbeat ever received"
    else:
        heartbeat = f"Last heartbeat {fmt.ago(age)}"
    heartbeat_title = fmt.local_time(d.get("last_heartbeat"), tz)
    silent = bool(d.get("silent"))
    metrics = []
    for key, label, unit in (("cpu_percent", "CPU", " %"), ("memory_percent", "Memory", " %"),
                             ("memory_mb", "Memory", " MB"), ("disk_percent", "Disk", " %")):
        value = _clean(d.get(key))
        if value is not None:
            metrics.append(f"{label} {value:,.0f}{unit}")
    uptime = _clean(d.get("uptime_seconds"))
    job = None
    if d.get("current_job_id"):
        extra = f" (+{int(d['running_jobs']) - 1} more)" if int(d.get("running_jobs") or 0) > 1 else ""
        job = html.Span([dcc.Link(d.get("current_workflow") or d["current_job_id"], href=job_link(d["current_job_id"])),
                         extra])
    return html.Div([
        html.Div([
            html.H1(d["name"], className="h3 mb-0 me-3"),
            status_badge(status, large=True),
            html.Span(heartbeat, title=heartbeat_title,
                      className="robot-heartbeat ms-3" + (" robot-heartbeat-silent" if silent else ""),
                      id="robot-heartbeat-age"),
        ], className="d-flex align-items-center flex-wrap gap-2"),
        html.Div(
            f"Silent for {fmt.duration(age) if age is not None else 'ever'}: no heartbeat for longer than "
            f"{fmt.duration(offline_after_s)} (its row says {d.get('stored_status')})",
            className="robot-silent-note") if silent else None,
        html.Dl([
            _fact("Robot id", html.Code(d["robot_id"])),
            _fact("Hostname", d.get("hostname")),
            _fact("Environment", d.get("environment")),
            _fact("Capabilities", ", ".join(map(str, d.get("capabilities") or [])) or None),
            _fact("Tags", ", ".join(map(str, d.get("tags") or [])) or None),
            _fact("Capacity", f"{d.get('max_concurrent_jobs') or 1} concurrent job"
                              f"{'s' if (d.get('max_concurrent_jobs') or 1) != 1 else ''}"),
            _fact("Current job", job or "none"),
            _fact("Latest metrics", " · ".join(metrics) or "none reported"),
            _fact("Uptime", fmt.duration(uptime) if uptime is not None else None),
            _fact("Last heartbeat", heartbeat_title),
            _fact("Registered", fmt.local_time(d.get("registered_at"), tz) if d.get("registered_at") else None),
        ], className="robot-facts"),
        html.Div([
            dcc.Link("All jobs of this robot →", href=executions_link(robot=d["robot_id"], range=range_)),
        ], className="small"),
    ], className="robot-header")


def _local(series, tz: str) -> pd.Series:
    return fmt.to_zone(series, tz)


def timeline_figure(bands: pd.DataFrame, tz: str, start, end, *, has_history: bool = True,
                    offline_after_s: int = 90, theme: str | None = None) -> go.Figure:
    """Status bands on one row; colour, legend name and hover text tell the status."""
    if not has_history:
        return empty_figure("No heartbeat history: this orchestrator does not record robot_heartbeats",
                            theme, height=150)
    if bands is None or bands.empty:
        return empty_figure("No heartbeats in this window", theme, height=150)
    fig = go.Figure(layout=dict(template=template(theme), height=170, barmode="overlay", bargap=0.05,
                                margin=dict(l=16, r=16, t=36, b=40)))
    for status in STATUS_RANK:
        part = bands[bands["status"] == status]
        if part.empty:
            continue
        starts, ends = _local(part["start"], tz), _local(part["end"], tz)
        spans = [fmt.duration(s) for s in part["duration_s"]]
        fig.add_bar(
            y=["status"] * len(part), x=(part["duration_s"].astype(float) * 1000.0).tolist(),
            base=starts.dt.strftime("%Y-%m-%d %H:%M:%S").tolist(), orientation="h",
            name=status_label(status), marker_color=ROBOT_STATUS_COLORS[status], marker_line_width=0,
            customdata=list(zip(starts.dt.strftime("%Y-%m-%d %H:%M:%S"), ends.dt.strftime("%Y-%m-%d %H:%M:%S"),
                                spans)),
            hovertemplate=f"<b>{ROBOT_STATUS_LABELS[status]}</b><br>%{{customdata[0]}} → %{{customdata[1]}}"
                          f"<br>%{{customdata[2]}}<extra></extra>",
        )
    lo, hi = pd.Timestamp(start).tz_convert(tz), pd.Timestamp(end).tz_convert(tz)
    fig.update_xaxes(type="date", range=[lo.strftime("%Y-%m-%d %H:%M:%S"), hi.strftime("%Y-%m-%d %H:%M:%S")],
                     title_text=f"time ({tz}) · offline = no heartbeat for more than {fmt.duration(offline_after_s)}")
    fig.update_yaxes(visible=False, rangemode="normal")
    return fig


def metrics_figure(series: pd.DataFrame | None, tz: str, *, has_history: bool = True,
                   theme: str | None = None) -> go.Figure:
    """CPU, memory and disk per bucket (mean; CPU max on hover); gaps stay gaps."""
    if not has_history:
        return empty_figure("No heartbeat history: the latest metrics reported are in the header above",
                            theme, height=200)
    if series is None or series.empty:
        return empty_figure("No heartbeats in this window", theme)
    metric_cols = ["cpu_percent", "memory_percent", "disk_percent", "memory_mb"]
    if series[metric_cols].isna().all().all():
        return empty_figure("Heartbeats in this window carry no CPU, memory or disk metrics", theme)
    x = _local(series["ts"], tz)
    step = float(series["bucket_seconds"].iloc[0])
    fig = go.Figure(layout=dict(template=template(theme), height=280, hovermode="x unified",
                                xaxis_title=f"time ({tz}) · mean per {fmt.duration(step)}",
                                yaxis=dict(title="percent", range=[0, 100], rangemode="normal")))
    lines = [("cpu_percent", "CPU %", "#0072B2"), ("memory_percent", "Memory %", "#E69F00"),
             ("disk_percent", "Disk %", "#009E73")]
    for col, name, colour in lines:
        if series[col].notna().any():
            extra = series["cpu_percent_max"] if col == "cpu_percent" else series[col]
            fig.add_scatter(x=x, y=series[col], name=name, mode="lines", connectgaps=False,
                            line=dict(color=colour, width=2, dash="solid" if col != "disk_percent" else "dot"),
                            customdata=np.stack([extra.to_numpy(dtype=float), series["heartbeats"].to_numpy(dtype=float)],
                                                axis=-1),
                            hovertemplate=f"{name} %{{y:.1f}}"
                                          + (" (max %{customdata[0]:.1f})" if col == "cpu_percent" else "")
                                          + "<extra></extra>")
    if series["memory_percent"].isna().all() and series["memory_mb"].notna().any():
        fig.add_scatter(x=x, y=series["memory_mb"], name="Memory MB", mode="lines", yaxis="y2",
                        line=dict(color="#E69F00", width=2), connectgaps=False,
                        hovertemplate="Memory %{y:,.0f} MB<extra></extra>")
        fig.update_layout(yaxis2=dict(title="MB", overlaying="y", side="right", rangemode="tozero",
                                      showgrid=False))
    return fig


def utilization_figure(hourly: pd.DataFrame, tz: str, theme: str | None = None) -> go.Figure:
    """Utilization per clock hour, as bars (0–100 %)."""
    if hourly.empty:
        return empty_figure("No hours in this window", theme)
    x = _local(hourly["hour"], tz)
    pct = hourly["utilization"].astype(float) * 100.0
    busy_min = hourly["busy_seconds"].astype(float) / 60.0
    cap_min = hourly["capacity_seconds"].astype(float) / 60.0
    fig = go.Figure(
        go.Bar(x=x, y=pct, marker_color=ROBOT_STATUS_COLORS["busy"], name="Utilization",
               customdata=np.stack([busy_min, cap_min], axis=-1),
               hovertemplate="%{x|%a %d %b %H:00}<br>%{y:.1f} % busy"
                             "<br>%{customdata[0]:.1f} of %{customdata[1]:.0f} slot-minutes<extra></extra>"),
        layout=dict(template=template(theme), height=260, bargap=0.1, showlegend=False,
                    xaxis_title=f"hour ({tz})", yaxis=dict(title="utilization %", range=[0, 100],
                                                           rangemode="normal")),
    )
    return fig


def heatmap_figure(cells: pd.DataFrame, tz: str, theme: str | None = None) -> go.Figure:
    """Mean utilization by weekday (rows, Monday first) and hour of day (columns)."""
    if cells.empty:
        return empty_figure("No hours in this window", theme)
    z = np.full((7, 24), np.nan)
    hours = np.zeros((7, 24))
    for w, h, u, n in zip(cells["weekday"], cells["hour_of_day"], cells["utilization"], cells["hours"]):
        z[int(w) - 1, int(h)] = float(u) * 100.0 if not fmt.is_missing(u) else np.nan
        hours[int(w) - 1, int(h)] = n
    fig = go.Figure(
        go.Heatmap(z=z, x=[f"{h:02d}" for h in range(24)], y=WEEKDAYS, customdata=hours,
                   colorscale="Blues", zmin=0, zmax=100, xgap=1, ygap=1,
                   colorbar=dict(title="%", thickness=12),
                   hovertemplate="%{y} %{x}:00<br>%{z:.1f} % busy<br>over %{customdata} hour(s)<extra></extra>"),
        layout=dict(template=template(theme), height=260, xaxis_title=f"hour of day ({tz}) · grey: no such hour in the window",
                    plot_bgcolor="#39414a" if (theme or viewer_theme()) == "dark" else "#d9dde1",
                    yaxis=dict(autorange="reversed", rangemode="normal", showgrid=False),
                    xaxis=dict(showgrid=False)),
    )
    return fig


def job_counts(counts: dict, robot_id: str, range_: str) -> html.Div:
    """Job counts by status in the window, each linking to those jobs."""
    if not counts.get("total_jobs"):
        return html.Div("No jobs in this window.", className="text-muted")
    chips = []
    for status in ("running", "pending", "completed", "failed", "cancelled"):
        n = counts.get(status, 0)
        chips.append(dcc.Link([
            html.Span(f"{JOB_STATUS_SYMBOLS[status]} {status}", className=f"status-badge job-{status}"),
            html.Span(fmt.count(n), className="job-count-value"),
        ], href=executions_link(robot=robot_id, status=status, range=range_), className="job-count",
            id=f"robot-count-{status}"))
    rate = counts.get("success_rate")
    return html.Div([
        html.Div(chips, className="job-counts"),
        html.Div([f"{fmt.count(counts['total_jobs'])} jobs created in this window · success rate ",
                  html.Strong(fmt.percent(rate)), " (completed of completed + failed)"],
                 className="small text-muted mt-2"),
    ])


def _table(header: list[str], rows: list, numeric: set[int] = frozenset()) -> html.Table:
    return html.Table([
        html.Thead(html.Tr([html.Th(h, className="text-end" if i in numeric else None) for i, h in enumerate(header)])),
        html.Tbody(rows),
    ], className="table table-sm robot-table mb-0")


def workflow_table(durations: pd.DataFrame, robot_id: str, range_: str) -> html.Div:
    if durations.empty:
        return html.Div("No finished jobs in this window.", className="text-muted")
    rows = [html.Tr([
        html.Td(dcc.Link(r["workflow_name"] or r["workflow_id"],
                         href=executions_link(robot=robot_id, workflow=r["workflow_id"], range=range_))),
        html.Td(fmt.count(r["jobs"]), className="text-end"),
        html.Td(fmt.count(r["failed"]), className="text-end"),
        html.Td(fmt.duration(r["p50_duration_ms"] / 1000.0), className="text-end"),
        html.Td(fmt.duration(r["p95_duration_ms"] / 1000.0), className="text-end"),
    ]) for r in durations.to_dict("records")]
    return html.Div([
        _table(["Workflow", "Finished jobs", "Failed", "P50", "P95"], rows, {1, 2, 3, 4}),
        html.Div("Durations of completed and failed jobs created in this window (started → completed).",
                 className="small text-muted mt-1"),
    ])


def error_table(errors: pd.DataFrame, robot_id: str, range_: str, tz: str) -> html.Div:
    if errors.empty:
        return html.Div("No failed jobs in this window.", className="text-muted")
    total = errors["count"].sum()
    rows = []
    for r in errors.to_dict("records"):
        share = r["count"] / total if total else 0
        rows.append(html.Tr([
            html.Td(dcc.Link(r["error_type"], href=executions_link(robot=robot_id, status="failed",
                                                                  error_type=r["error_type"], range=range_))),
            html.Td(fmt.count(r["count"]), className="text-end"),
            html.Td(html.Div(html.Div(className="error-bar-fill", style={"width": f"{share * 100:.1f}%"}),
                             className="error-bar", title=fmt.percent(share))),
            html.Td(fmt.local_time(r["last_seen"], tz, "%d %b %H:%M"), className="text-nowrap small"),
        ]))
    return _table(["Error type", "Jobs", "Share", "Last seen"], rows, {1})


def latest_jobs_table(jobs: pd.DataFrame, tz: str) -> html.Div:
    if jobs.empty:
        return html.Div("This robot has no jobs yet.", className="text-muted")
    rows = []
    for r in jobs.to_dict("records"):
        status = r["status"]
        rows.append(html.Tr([
            html.Td(fmt.local_time(r["created_at"], tz, "%d %b %H:%M:%S"), className="text-nowrap"),
            html.Td(dcc.Link(r["workflow_name"] or r["workflow_id"], href=job_link(r["job_id"]))),
            html.Td(html.Span(f"{JOB_STATUS_SYMBOLS.get(status, '•')} {status}", className=f"status-badge job-{status}",
                              style={"--job-color": JOB_STATUS_COLORS.get(status, "#8C8C8C")})),
            html.Td(fmt.duration(r["duration_ms"] / 1000.0) if not fmt.is_missing(r["duration_ms"]) else "—",
                    className="text-end"),
            html.Td(r["error_type"] if not fmt.is_missing(r["error_type"]) else "", className="small"),
        ]))
    return _table(["Created", "Workflow", "Status", "Duration", "Error"], rows, {3})
