"""Fleet overview (/): what is happening right now. Refreshes itself."""
from __future__ import annotations

import time

import dash
import pandas as pd
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, dcc, html, no_update

from components import format as fmt
from components.shell import refresh_control
from components.overview import job_feed, kpi_tiles, queue_figure, robot_grid, throughput_figure
from data import fleet
from data.db import DatabaseUnavailable
from data.timeutil import safe_tz
from server.state import current

dash.register_page(__name__, path="/", name="Overview", title="Fleet overview · Fleet Monitor", order=0)

INTERVAL = {"type": "live-interval", "page": "overview"}
# Even when no job changed, redraw the time series now and then: their time axis moves on.
HEAVY_REFRESH_SECONDS = 60


def _card(title: str, body, **kw) -> dbc.Card:
    return dbc.Card([dbc.CardHeader(title), dbc.CardBody(body)], className="mb-3", **kw)


def layout(**_query):
    settings = current().settings
    graph = dict(config={"displaylogo": False, "responsive": True}, style={"height": "260px"})
    return html.Div([
        dbc.Alert(id="overview-alert", color="danger", is_open=False, className="sticky-alert"),
        html.Div([
            html.H1("Fleet overview", className="h3 mb-0"),
            html.Div([
                html.Span(id="overview-updated", className="text-muted small me-3", **{"aria-live": "polite"}),
                refresh_control("overview", settings.refresh_interval_ms),
            ], className="d-flex align-items-center flex-wrap"),
        ], className="d-flex justify-content-between align-items-center mb-3 flex-wrap gap-2"),
        html.Div(id="overview-tiles", className="kpi-row mb-3"),
        _card("Robots", html.Div(id="overview-grid")),
        dbc.Row([
            dbc.Col(_card("Queue", dcc.Graph(id="overview-queue", **graph)), lg=6),
            dbc.Col(_card("Throughput", dcc.Graph(id="overview-throughput", **graph)), lg=6),
        ]),
        _card("Latest job changes", html.Div(id="overview-feed")),
        dcc.Store(id="overview-state", data={}),
    ])


@callback(
    Output("overview-tiles", "children"),
    Output("overview-grid", "children"),
    Output("overview-queue", "figure"),
    Output("overview-throughput", "figure"),
    Output("overview-feed", "children"),
    Output("overview-updated", "children"),
    Output("overview-alert", "children"),
    Output("overview-alert", "is_open"),
    Output("overview-state", "data"),
    Input(INTERVAL, "n_intervals"),
    Input("tz", "data"),
    State("overview-state", "data"),
    # The interval is disabled while a refresh runs, so refreshes never overlap.
    running=[(Output(INTERVAL, "disabled"), True, False)],
)
def refresh(_n, tz_name, state):
    tz = safe_tz(tz_name)
    state = state or {}
    app = current()
    try:
        kpis = fleet.fleet_kpis(app.engine, tz, app.settings.offline_after_seconds)
        robots = fleet.robot_statuses(app.engine, app.settings.offline_after_seconds)
        heavy_due = (
            kpis["change_token"] != state.get("token")
            or tz != state.get("tz")
            or time.time() - state.get("heavy_at", 0) > HEAVY_REFRESH_SECONDS
        )
        if heavy_due:
            version = kpis["change_token"]
            queue = queue_figure(fleet.queue_depth_series(app.engine, version=version), tz)
            throughput = throughput_figure(fleet.throughput_series(app.engine, version=version), tz)
            feed = job_feed(fleet.recent_job_changes(app.engine, version=version), tz)
            new_state = {"token": kpis["change_token"], "tz": tz, "heavy_at": time.time()}
        else:
            queue = throughput = feed = no_update
            new_state = {k: v for k, v in state.items() if k != "failing_since"}
    except DatabaseUnavailable as exc:
        # Keep every output as it was: the page goes on showing the last good data.
        since = state.get("failing_since") or fmt.local_time(pd.Timestamp.now(tz="UTC"), tz, "%H:%M:%S")
        message = [html.Strong("Database unreachable. "),
                   f"Showing the last data received; retrying automatically (failing since {since}). ",
                   html.Br(), html.Small(str(exc))]
        return (no_update,) * 6 + (message, True, {**state, "failing_since": since})
    updated = f"Last updated {fmt.local_time(kpis['as_of'], tz, '%H:%M:%S')}"
    return (kpi_tiles(kpis), robot_grid(robots, tz), queue, throughput, feed, updated, None, False, new_state)
