"""Builders for the Fleet overview: KPI tiles, robot status grid, queue and throughput charts,
live feed. Each takes plain data and returns a component or figure."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from dash import dcc, html

from components import format as fmt
from components.links import executions_link, job_link
from components.theme import (
    JOB_STATUS_COLORS, JOB_STATUS_SYMBOLS, ROBOT_STATUS_COLORS, ROBOT_STATUS_LABELS,
    ROBOT_STATUS_SYMBOLS, empty_figure, template,
)


def kpi_tile(label: str, value: str, *, tone: str = "", href: str | None = None, note: str = "") -> html.Div:
    """A tile with a big number. `tone` ('good', 'warn', 'bad') also prints a word, not only a colour."""
    body = [
        html.Div(label, className="kpi-label"),
        html.Div(value, className="kpi-value"),
        html.Div(note, className="kpi-note") if note else None,
    ]
    inner = dcc.Link(body, href=href, className="kpi-link") if href else html.Div(body)
    return html.Div(inner, className=f"kpi-tile kpi-{tone}" if tone else "kpi-tile", role="group", **{"aria-label": label})


def kpi_tiles(k: dict, oldest_pending_warn_s: float = 600) -> list:
    """The overview's tiles from fleet_kpis()."""
    offline = k["offline_robots"]
    oldest = k["oldest_pending_age_seconds"]
    rate = k["success_rate_24h"]
    rate_tone = "" if rate is None else ("good" if rate >= 0.95 else "warn" if rate >= 0.85 else "bad")
    return [
        kpi_tile("Robots online", f'{k["online_robots"]} / {k["total_robots"]}',
                 note=f'{k["maintenance_robots"]} in maintenance' if k["maintenance_robots"] else "", href="/robots"),
        kpi_tile("Busy", fmt.count(k["active_robots"]), href="/robots?status=busy"),
        kpi_tile("Idle", fmt.count(k["idle_robots"]), href="/robots?status=idle"),
        kpi_tile("Offline", fmt.count(offline), tone="bad" if offline else "good",
                 note="needs attention" if offline else "all responding", href="/robots?status=offline"),
        kpi_tile("Queue depth", fmt.count(k["queue_depth"]), href=executions_link(status="pending")),
        kpi_tile("Running jobs", fmt.count(k["active_jobs"]), href=executions_link(status="running")),
        kpi_tile("Completed today", fmt.count(k["completed_jobs_today"]), tone="good",
                 href=executions_link(status="completed", range="today")),
        kpi_tile("Failed today", fmt.count(k["failed_jobs_today"]), tone="bad" if k["failed_jobs_today"] else "",
                 href=executions_link(status="failed", range="today")),
        kpi_tile("Success rate 24 h", fmt.percent(rate), tone=rate_tone,
                 note=f'{fmt.count(k["finished_jobs_24h"])} finished jobs'),
        kpi_tile("Oldest pending", fmt.duration(oldest) if oldest is not None else "none",
                 tone="warn" if oldest and oldest > oldest_pending_warn_s else "",
                 note="waiting in queue" if oldest is not None else "queue is empty"),
    ]


def grid_legend() -> html.Div:
    """What the robot grid's symbols and colours mean."""
    return html.Div(
        [html.Span([html.Span(ROBOT_STATUS_SYMBOLS[s], style={"color": c}), f" {ROBOT_STATUS_LABELS[s]}"],
                   className="legend-item") for s, c in ROBOT_STATUS_COLORS.items()],
        className="grid-legend",
    )


def _local_times(stamps: pd.Series, tz: str) -> list[str]:
    """fmt.local_time for a whole column at once ('—' where missing)."""
    ts = pd.to_datetime(stamps, utc=True)
    text = ts.dt.tz_convert(tz).dt.strftime("%Y-%m-%d %H:%M:%S UTC%z").str.replace("UTC+0000", "UTC", regex=False)
    return text.where(ts.notna(), "—").tolist()


def robot_grid_data(robots: pd.DataFrame, tz: str) -> dict:
    """The robot status grid as compact data, drawn in the browser (assets/overview.js).

    One group per environment (sorted, robots without one last as 'default'), each robot a row
    [robot_id, name, status, hostname, last heartbeat (Unix seconds or None), last heartbeat in
    the viewer's zone, current workflow]; `styles` maps a status to [symbol, label, colour]. The
    browser makes one cell per robot with the status in text, symbol and colour, and the heartbeat
    age in its tooltip. A thousand robots are about 100 KB of data, not a tree of 4,000 components.
    """
    styles = {s: [ROBOT_STATUS_SYMBOLS.get(s, "?"), ROBOT_STATUS_LABELS.get(s, s), c]
              for s, c in ROBOT_STATUS_COLORS.items()}
    if robots.empty:
        return {"styles": styles, "groups": [], "total": 0}
    frame = robots.reset_index(drop=True)
    heartbeat = pd.to_datetime(frame["last_heartbeat"], utc=True)
    seconds = (heartbeat - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    epoch = [None if pd.isna(v) else int(v // 1) for v in seconds]
    local = _local_times(frame["last_heartbeat"], tz)

    def text(value):
        return value if isinstance(value, str) else None

    rows = [[str(rid), str(name), str(status), text(host), None if e is None else int(e), loc, text(job)]
            for rid, name, status, host, e, loc, job in zip(
                frame["robot_id"], frame["name"], frame["status"], frame["hostname"], epoch, local,
                frame["current_workflow"])]
    for status in frame["status"].unique():
        styles.setdefault(str(status), ["?", str(status), "#8C8C8C"])
    groups = []
    envs = frame["environment"].where(frame["environment"].map(lambda v: isinstance(v, str)), None)
    for env, index in frame.groupby(envs, sort=True, dropna=False).groups.items():
        groups.append({"env": env if isinstance(env, str) else "default", "robots": [rows[i] for i in index]})
    return {"styles": styles, "groups": groups, "total": len(rows)}


def queue_figure(series: pd.DataFrame, tz: str, theme: str | None = None) -> go.Figure:
    if series.empty:
        return empty_figure("No queue data", theme)
    fig = go.Figure(
        go.Scatter(
            x=fmt.to_zone(series["ts"], tz), y=series["queue_depth"], mode="lines",
            line=dict(color=JOB_STATUS_COLORS["pending"], width=2, shape="hv"), fill="tozeroy",
            name="Waiting jobs", hovertemplate="%{x|%H:%M}<br>%{y} waiting<extra></extra>",
        ),
        layout=dict(template=template(theme), height=260,
                    yaxis_title="waiting jobs", xaxis_title=f"time ({tz})", showlegend=False),
    )
    return fig


def throughput_figure(series: pd.DataFrame, tz: str, theme: str | None = None) -> go.Figure:
    if series.empty or (series["completed"].sum() + series["failed"].sum()) == 0:
        return empty_figure("No jobs finished in the last hours", theme)
    x = fmt.to_zone(series["ts"], tz)
    fig = go.Figure(layout=dict(template=template(theme), height=260, barmode="stack",
                                yaxis_title="jobs per 15 min",
                                xaxis_title=f"time ({tz})"))
    for status in ("completed", "failed"):
        fig.add_bar(x=x, y=series[status], name=status.capitalize(), marker_color=JOB_STATUS_COLORS[status],
                    hovertemplate="%{x|%H:%M}<br>%{y} " + status + "<extra></extra>")
    return fig


def job_feed(changes: pd.DataFrame, tz: str) -> html.Div:
    """The latest job status changes as a compact table."""
    if changes.empty:
        return html.Div("No jobs yet.", className="text-muted")
    rows = []
    for _, r in changes.iterrows():
        change = r["change"]
        kind = {"queued": "pending", "started": "running"}.get(change, change)
        rows.append(html.Tr([
            html.Td(fmt.local_time(r["at"], tz, "%H:%M:%S"), className="text-nowrap"),
            html.Td(html.Span(f'{JOB_STATUS_SYMBOLS.get(kind, "•")} {change}',
                              className=f"status-badge job-{kind}")),
            html.Td(dcc.Link(r["workflow_name"], href=job_link(r["job_id"]))),
            html.Td("—" if fmt.is_missing(r["robot_id"]) or r["robot_id"] == "" else str(r["robot_id"]),
                    className="text-muted"),
        ]))
    return html.Table(
        [html.Thead(html.Tr([html.Th("Time"), html.Th("Change"), html.Th("Workflow"), html.Th("Robot")])),
         html.Tbody(rows)],
        className="table table-sm feed-table mb-0",
    )
