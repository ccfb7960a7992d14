"""Fleet overview (/): what is happening right now. Refreshes itself.

Every screen watching the overview reads the same two snapshots from the shared cache (see
data/snapshots.py): the light one (KPI tiles, robot grid data, last-updated time), rebuilt every
cache TTL, and the heavy one (queue and throughput charts, live feed), keyed by the fleet's change
token and rebuilt when a job changes or every HEAVY_SNAPSHOT_SECONDS. A refresh answer therefore
costs no query and no rendering of its own. The robot grid travels as compact data and is drawn by
the browser (assets/overview.js); it is sent only when a robot changed since the screen's last
refresh.
"""
from __future__ import annotations

import hashlib
import json
import time

import dash
import pandas as pd
import dash_bootstrap_components as dbc
from dash import ClientsideFunction, Input, Output, State, callback, clientside_callback, dcc, html, no_update
from dash.development.base_component import Component

from components import format as fmt
from components.shell import refresh_control
from components.theme import viewer_theme
from components.overview import grid_legend, job_feed, kpi_tiles, queue_figure, robot_grid_data, throughput_figure
from data import fleet
from data.db import DatabaseUnavailable
from data.snapshots import live_snapshot
from data.timeutil import safe_tz
from server.state import current

dash.register_page(__name__, path="/", name="Overview", title="Fleet overview · Fleet Monitor", order=0)

INTERVAL = {"type": "live-interval", "page": "overview"}
# Even when no job changed, redraw the time series now and then: their time axis moves on.
HEAVY_REFRESH_SECONDS = 60
# The charts and feed for one change token are rebuilt this often while screens watch them.
HEAVY_SNAPSHOT_SECONDS = 20


def _card(title, body, **kw) -> dbc.Card:
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
        _card(["Robots", html.Span(id="overview-grid-count", className="text-muted small ms-2")],
              [grid_legend(), html.Div(id="overview-grid")]),
        dbc.Row([
            dbc.Col(_card("Queue", dcc.Graph(id="overview-queue", **graph)), lg=6),
            dbc.Col(_card("Throughput", dcc.Graph(id="overview-throughput", **graph)), lg=6),
        ]),
        _card("Latest job changes", html.Div(id="overview-feed")),
        dcc.Store(id="overview-robots"),
        dcc.Store(id="overview-state", data={}),
    ])


def _plain(value):
    """Components as the plain JSON-ready dicts Dash sends, converted once when a snapshot is built
    (not again for every screen that reads it)."""
    if isinstance(value, Component):
        found = value.to_plotly_json()
        return {**found, "props": {k: _plain(v) for k, v in found["props"].items()}}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _database(engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def light_snapshot(engine, tz: str, offline_after_s: int) -> dict:
    """KPI tiles, robot grid data and the data's time: what every refresh shows."""
    kpis = fleet.fleet_kpis(engine, tz, offline_after_s)
    grid = robot_grid_data(fleet.robot_statuses(engine, offline_after_s), tz)
    return {
        "tiles": _plain(kpi_tiles(kpis)),
        "grid": grid,
        "grid_fp": hashlib.sha256(json.dumps(grid, separators=(",", ":")).encode()).hexdigest()[:20],
        "token": kpis["change_token"],
        "updated": f"Last updated {fmt.local_time(kpis['as_of'], tz, '%H:%M:%S')}",
    }


def heavy_snapshot(engine, tz: str, version: str, theme: str) -> dict:
    """Queue and throughput charts (as plain figure dicts, in the theme's template) and the live
    feed for one change token."""
    queue = queue_figure(fleet.queue_depth_series(engine, version=version), tz, theme)
    throughput = throughput_figure(fleet.throughput_series(engine, version=version), tz, theme)
    return {
        "queue": json.loads(queue.to_json()),
        "throughput": json.loads(throughput.to_json()),
        "feed": _plain(job_feed(fleet.recent_job_changes(engine, version=version), tz)),
    }


@callback(
    Output("overview-tiles", "children"),
    Output("overview-robots", "data"),
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
    theme = viewer_theme()
    state = state or {}
    app = current()
    engine, offline_after = app.engine, app.settings.offline_after_seconds
    database = _database(engine)
    try:
        light = live_snapshot("overview-light", (database, tz, offline_after),
                              lambda: light_snapshot(engine, tz, offline_after), app.settings.cache_ttl_seconds)
        token = light["token"]
        heavy_due = (
            token != state.get("token")
            or tz != state.get("tz")
            or theme != state.get("theme")
            or time.time() - state.get("heavy_at", 0) > HEAVY_REFRESH_SECONDS
        )
        if heavy_due:
            heavy = live_snapshot("overview-heavy", (database, tz, token, theme),
                                  lambda: heavy_snapshot(engine, tz, token, theme), HEAVY_SNAPSHOT_SECONDS)
            queue, throughput, feed = heavy["queue"], heavy["throughput"], heavy["feed"]
            new_state = {"token": token, "tz": tz, "theme": theme, "heavy_at": time.time()}
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
    # The grid's data only when a robot changed since this screen's last refresh.
    grid = no_update if state.get("grid") == light["grid_fp"] else light["grid"]
    new_state["grid"] = light["grid_fp"]
    return (light["tiles"], grid, queue, throughput, feed, light["updated"], None, False, new_state)


clientside_callback(
    ClientsideFunction(namespace="fleetOverview", function_name="renderGrid"),
    Output("overview-grid-count", "children"),
    Input("overview-robots", "data"),
)
