"""Builders for the wall display: large, high-contrast panels readable from across the room."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
from dash import html

from components import format as fmt
from components.theme import JOB_STATUS_COLORS, ROBOT_STATUS_COLORS, ROBOT_STATUS_LABELS, ROBOT_STATUS_SYMBOLS, template

PANELS = ("tiles", "robots", "queue", "failures", "sla")
QUIET_STATUSES = ("idle", "busy")  # the others are spelled out loud on the cell
PANEL_TITLES = {"tiles": "Fleet", "robots": "Robots", "queue": "Queue depth, last 3 hours",
                "failures": "Failures, last hour", "sla": "Workflows breaching their SLA (24 h)"}


@dataclass(frozen=True)
class DisplayOptions:
    panels: tuple[str, ...] = PANELS
    rotate_seconds: int = 0  # 0: every panel on one screen
    queue_alert: int = 50
    failure_rate_alert: float = 0.10


def parse_display_options(query: dict) -> tuple[DisplayOptions, list[str]]:
    """Options from the URL (panels, rotate, queue_alert); malformed values are reported and ignored."""
    problems, values = [], {}
    if query.get("panels"):
        wanted = [p.strip() for p in str(query["panels"]).split(",") if p.strip()]
        unknown = [p for p in wanted if p not in PANELS]
        if unknown:
            problems.append(f"Unknown panel(s) {', '.join(unknown)}; choose from {', '.join(PANELS)}.")
        known = tuple(p for p in wanted if p in PANELS)
        if known:
            values["panels"] = known
    for name, field, low, high in (("rotate", "rotate_seconds", 0, 3600), ("queue_alert", "queue_alert", 1, 10**6)):
        raw = query.get(name)
        if raw in (None, ""):
            continue
        try:
            number = int(raw)
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            problems.append(f"{name} must be a whole number from {low} to {high}; got {raw!r}.")
        else:
            values[field] = number
    return DisplayOptions(**values), problems


def attention_items(kpis: dict, failures: dict, options: DisplayOptions) -> list[str]:
    """What needs an operator now, in words (the screen also colours it, but never only colours it)."""
    items = []
    if kpis["offline_robots"]:
        n = kpis["offline_robots"]
        items.append(f"{n} robot{'s' if n != 1 else ''} offline")
    if kpis["error_robots"]:
        n = kpis["error_robots"]
        items.append(f"{n} robot{'s' if n != 1 else ''} in error")
    if kpis["queue_depth"] >= options.queue_alert:
        items.append(f"Queue backing up: {kpis['queue_depth']} waiting (alert at {options.queue_alert})")
    rate = failures["failure_rate"]
    if rate is not None and rate >= options.failure_rate_alert and failures["failed"] >= 3:
        items.append(f"Failure rate {rate * 100:.0f} % in the last hour ({failures['failed']} failed)")
    return items


def _tile(label: str, value: str, alert: bool = False, note: str = "") -> html.Div:
    return html.Div([
        html.Div(label, className="d-label"),
        html.Div(value, className="d-value"),
        html.Div(note or ("ATTENTION" if alert else "\u00a0"), className="d-note"),
    ], className="d-tile d-alert" if alert else "d-tile", role="group", **{"aria-label": label})


def display_tiles(kpis: dict, failures: dict, options: DisplayOptions) -> list:
    rate = kpis["success_rate_24h"]
    oldest = kpis["oldest_pending_age_seconds"]
    return [
        _tile("Online", f'{kpis["online_robots"]}/{kpis["total_robots"]}'),
        _tile("Busy", fmt.count(kpis["active_robots"])),
        _tile("Offline", fmt.count(kpis["offline_robots"]), alert=kpis["offline_robots"] > 0),
        _tile("Queue", fmt.count(kpis["queue_depth"]), alert=kpis["queue_depth"] >= options.queue_alert,
              note=f"oldest {fmt.duration(oldest)}" if oldest is not None else "empty"),
        _tile("Running", fmt.count(kpis["active_jobs"])),
        _tile("Failed 1 h", fmt.count(failures["failed"]),
              alert=failures["failure_rate"] is not None and failures["failure_rate"] >= options.failure_rate_alert
              and failures["failed"] >= 3),
        _tile("Success 24 h", fmt.percent(rate, 1) if rate is not None else "—"),
    ]


def display_robot_grid(robots: pd.DataFrame) -> html.Div:
    """Every robot as a cell sized so the whole fleet fits the panel: symbol, name and, when it
    needs attention, its status in words."""
    if robots.empty:
        return html.Div("No robots registered", className="d-empty")
    n = len(robots)
    # Cells are about twice as wide as tall and the panel a little wider than tall: this fills it.
    columns = max(3, math.ceil(math.sqrt(n / 2.2)))
    font = max(0.45, min(1.3, 5.4 / columns))  # vw: smaller type for larger fleets
    cells = [
        html.Div([
            html.Span([html.Span(ROBOT_STATUS_SYMBOLS.get(r.status, "?"), className="d-cell-symbol",
                                 **{"aria-hidden": "true"}), " ", r.name], className="d-cell-name"),
            html.Span(ROBOT_STATUS_LABELS.get(r.status, r.status),
                      className="d-cell-status" if r.status in QUIET_STATUSES else "d-cell-status d-loud"),
        ], className=f"d-cell d-{r.status}", title=f"{r.name}: {ROBOT_STATUS_LABELS.get(r.status, r.status)}",
            style={"--status-color": ROBOT_STATUS_COLORS.get(r.status, "#8C8C8C")})
        for r in robots.itertuples()
    ]
    return html.Div(cells, className="d-grid",
                    style={"gridTemplateColumns": f"repeat({columns}, minmax(0, 1fr))", "--cell-font": f"{font:.2f}vw"})


def display_queue_figure(series: pd.DataFrame, tz: str) -> go.Figure:
    fig = go.Figure(layout=dict(template=template("dark"), margin=dict(l=70, r=20, t=10, b=50),
                                font=dict(size=22), paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
                                showlegend=False, xaxis=dict(tickformat="%H:%M"), yaxis=dict(title="waiting")))
    if not series.empty:
        fig.add_scatter(x=fmt.to_zone(series["ts"], tz), y=series["queue_depth"], mode="lines", fill="tozeroy",
                        line=dict(color=JOB_STATUS_COLORS["pending"], width=4, shape="hv"))
    return fig


LIST_ROWS = 4  # what a third of a 16:9 screen shows at this type size


def _short_list(items: list, total: int) -> html.Ul:
    more = [html.Li(f"and {total - LIST_ROWS} more", className="d-more")] if total > LIST_ROWS else []
    return html.Ul(items[:LIST_ROWS] + more, className="d-list")


def display_failures(failures: dict) -> html.Div:
    frame = failures["by_workflow"]
    if frame.empty:
        return html.Div("✓ No failures in the last hour", className="d-empty d-ok")
    items = [html.Li([html.Span(f"✕ {int(r.failed)}", className="d-count"), html.Span(r.workflow_name)])
             for r in frame.itertuples()]
    return _short_list(items, len(items))


def display_sla(breaches: pd.DataFrame) -> html.Div:
    if breaches.empty:
        return html.Div("✓ Every workflow within its SLA", className="d-empty d-ok")
    items = [html.Li([html.Span("▲", className="d-count"), html.Span(r.workflow_name),
                      html.Span(f"{fmt.percent(r.success_rate, 1)} ok · P95 {fmt.duration(r.p95_duration_ms / 1000)}",
                                className="d-detail")])
             for r in breaches.itertuples()]
    return _short_list(items, len(items))
