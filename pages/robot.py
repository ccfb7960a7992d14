"""One robot (/robots/<robot_id>?range=7d): live header, status timeline, CPU/memory/disk,
utilization per hour and per hour of the week, and its jobs."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import unquote

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, clientside_callback, dcc, html, no_update

from components.loading import loading
from components.shell import refresh_control
from components.robots import (
    error_table, heatmap_figure, job_counts, latest_jobs_table, metrics_figure, no_such_robot, robot_header,
    timeline_figure, utilization_figure, workflow_table,
)
from data import robots as robots_data
from data.db import DatabaseUnavailable
from data.timeutil import safe_tz
from server.state import current

dash.register_page(__name__, path_template="/robots/<robot_id>", name="Robot", title="Robot · Fleet Monitor",
                   nav=False)

# The window choices; the names are the job history's `range` values, so links carry them over.
RANGES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
RANGE_LABELS = {"1h": "1 hour", "24h": "24 hours", "7d": "7 days", "30d": "30 days"}
DEFAULT_RANGE = "7d"
INTERVAL = {"type": "live-interval", "page": "robot"}
GRAPH = dict(config={"displaylogo": False, "responsive": True})


def _card(title, body, **kw) -> dbc.Card:
    return dbc.Card([dbc.CardHeader(title), dbc.CardBody(body)], className="mb-3", **kw)


def _window(range_: str) -> tuple[datetime, datetime]:
    end = datetime.now(timezone.utc)
    return end - RANGES.get(range_, RANGES[DEFAULT_RANGE]), end


def layout(robot_id=None, **query):
    robot_id = unquote(robot_id) if isinstance(robot_id, str) else None
    app = current()
    try:
        detail = robots_data.robot_detail(app.engine, robot_id, app.settings.offline_after_seconds) \
            if robot_id else None
    except DatabaseUnavailable as exc:
        return dbc.Alert([html.Strong("Database unreachable. "), str(exc)], color="danger")
    if detail is None:
        return no_such_robot(robot_id)
    range_ = query.get("range")
    notes = []
    if range_ not in RANGES:
        if range_ is not None:
            notes.append(f"Unknown range {range_!r}; showing {RANGE_LABELS[DEFAULT_RANGE]}.")
        range_ = DEFAULT_RANGE
    return html.Div([
        dbc.Alert(id="robot-alert", color="danger", is_open=False, className="sticky-alert"),
        dbc.Alert(" ".join(notes), color="warning", is_open=bool(notes), dismissable=True),
        html.Div([
            dcc.Link("← Robots", href="/robots", className="small me-auto"),
            refresh_control("robot", max(app.settings.refresh_interval_ms, 5000)),
        ], className="d-flex align-items-center mb-2 flex-wrap gap-2"),
        html.Div(id="robot-header", className="mb-3"),
        html.Div([
            html.Span("Window:", className="me-2 small text-muted"),
            dbc.RadioItems(id="robot-range", value=range_, inline=True, className="btn-group robot-range",
                           inputClassName="btn-check", labelClassName="btn btn-outline-secondary btn-sm",
                           labelCheckedClassName="active",
                           options=[{"label": RANGE_LABELS[k], "value": k} for k in RANGES]),
        ], className="d-flex align-items-center mb-3"),
        _card("Status timeline", loading(dcc.Graph(id="robot-timeline", style={"height": "170px"}, **GRAPH))),
        _card("CPU, memory and disk", loading(dcc.Graph(id="robot-metrics", style={"height": "280px"}, **GRAPH))),
        dbc.Row([
            dbc.Col(_card("Utilization per hour", loading(dcc.Graph(id="robot-utilization",
                                                                        style={"height": "260px"}, **GRAPH))), lg=7),
            dbc.Col(_card("Utilization by hour of the week", loading(dcc.Graph(
                id="robot-heatmap", style={"height": "260px"}, **GRAPH))), lg=5),
        ]),
        html.P(["Utilization: the share of the robot's job slots (max concurrent jobs) in use, from its jobs' "
                "start and end times, overlapping jobs counted up to the robot's capacity."],
               className="small text-muted mt-n2"),
        dbc.Row([
            dbc.Col(_card("Jobs", html.Div(id="robot-job-counts")), lg=6),
            dbc.Col(_card("Top error types", html.Div(id="robot-errors")), lg=6),
        ]),
        _card("Duration per workflow", html.Div(id="robot-workflows")),
        _card("Latest jobs", html.Div(id="robot-latest")),
        dcc.Store(id="robot-id", data=detail["robot_id"]),
        dcc.Store(id="robot-url-sync"),
    ], className="robot-page")


@callback(
    Output("robot-header", "children"),
    Output("robot-alert", "children"),
    Output("robot-alert", "is_open"),
    Input(INTERVAL, "n_intervals"),
    Input("tz", "data"),
    Input("robot-range", "value"),
    State("robot-id", "data"),
    running=[(Output(INTERVAL, "disabled"), True, False)],
)
def header(_n, tz_name, range_, robot_id):
    tz = safe_tz(tz_name)
    app = current()
    try:
        detail = robots_data.robot_detail(app.engine, robot_id, app.settings.offline_after_seconds)
    except DatabaseUnavailable as exc:
        return no_update, [html.Strong("Database unreachable. "), str(exc)], True
    if detail is None:  # deleted while the page was open
        return no_such_robot(robot_id), None, False
    return robot_header(detail, tz, app.settings.offline_after_seconds, range_ or DEFAULT_RANGE), None, False


@callback(
    Output("robot-timeline", "figure"),
    Output("robot-metrics", "figure"),
    Output("robot-utilization", "figure"),
    Output("robot-heatmap", "figure"),
    Output("robot-job-counts", "children"),
    Output("robot-errors", "children"),
    Output("robot-workflows", "children"),
    Output("robot-latest", "children"),
    Output("robot-alert", "children", allow_duplicate=True),
    Output("robot-alert", "is_open", allow_duplicate=True),
    Input("robot-range", "value"),
    Input("tz", "data"),
    State("robot-id", "data"),
    prevent_initial_call="initial_duplicate",
)
def charts(range_, tz_name, robot_id):
    tz = safe_tz(tz_name)
    range_ = range_ if range_ in RANGES else DEFAULT_RANGE
    app = current()
    engine, threshold = app.engine, app.settings.offline_after_seconds
    start, end = _window(range_)
    try:
        has_history = robots_data.has_heartbeat_history(engine, robot_id)
        bands = robots_data.status_timeline(engine, robot_id, start, end, threshold) if has_history else None
        series = robots_data.metric_series(engine, robot_id, start, end) if has_history else None
        hourly = robots_data.hourly_utilization(engine, [robot_id], start, end, tz)
        week = robots_data.hour_of_week_from_hourly(hourly, tz)
        counts = robots_data.robot_job_counts(engine, robot_id, start, end)
        errors = robots_data.robot_error_types(engine, robot_id, start, end)
        durations = robots_data.robot_workflow_durations(engine, robot_id, start, end)
        latest = robots_data.robot_latest_jobs(engine, robot_id)
    except DatabaseUnavailable as exc:
        return (no_update,) * 8 + ([html.Strong("Database unreachable. "), str(exc)], True)
    timeline = timeline_figure(bands, tz, start, end, has_history=has_history, offline_after_s=threshold)
    metrics = metrics_figure(series, tz, has_history=has_history)
    return (timeline, metrics, utilization_figure(hourly, tz), heatmap_figure(week, tz),
            job_counts(counts, robot_id, range_), error_table(errors, robot_id, range_, tz),
            workflow_table(durations, robot_id, range_), latest_jobs_table(latest, tz), None, False)


clientside_callback(
    """function(range) {
        if (!range || !window.location.pathname.startsWith('/robots/')) {
            return window.dash_clientside.no_update;
        }
        var search = '?range=' + encodeURIComponent(range);
        if (search !== window.location.search) {
            window.history.replaceState(window.history.state, '', window.location.pathname + search);
        }
        return search;
    }""",
    Output("robot-url-sync", "data"),
    Input("robot-range", "value"),
)
