"""Wall display (/display): chrome-less, dark, large type; refreshes and rotates by itself.

URL parameters: panels=tiles,robots,queue,failures,sla (which, in order), rotate=SECONDS (0 shows
every panel on one screen), queue_alert=N (queue depth that needs attention), token=... (a display
token: opens a read-only session without a sign-in form).
"""
from __future__ import annotations

import time

import dash
from dash import ClientsideFunction, Input, Output, State, callback, clientside_callback, dcc, html, no_update

from components.display import (
    PANEL_TITLES, DisplayOptions, attention_items, display_failures, display_queue_figure,
    display_robot_grid, display_sla, display_tiles, parse_display_options,
)
from data import fleet
from data.db import DatabaseUnavailable
from data.timeutil import safe_tz
from server.state import current

dash.register_page(__name__, path="/display", name="Wall display", title="Wall display · Fleet Monitor", order=90)


def _panel(name: str, body, shown: bool) -> html.Section:
    # Every panel is always in the page (the refresh fills them all); unchosen ones stay hidden.
    return html.Section([html.H2(PANEL_TITLES[name], className="d-panel-title"), html.Div(body, className="d-panel-body")],
                        id=f"display-panel-{name}", className="d-panel" if shown else "d-panel d-none",
                        **{"aria-label": PANEL_TITLES[name]})


def layout(**query):
    options, problems = parse_display_options(query)
    settings = current().settings
    panels = [p for p in options.panels if p != "tiles"]

    def shown(name: str) -> bool:
        # Rotating: only the first panel until the browser's first tick takes over.
        return name in panels and (not options.rotate_seconds or name == panels[0])
    return html.Div([
        html.Header([
            html.Div([html.Span("◉", className="brand-mark", **{"aria-hidden": "true"}), " Fleet Monitor"],
                     className="d-brand"),
            html.Div(id="display-updated", className="d-updated", **{"aria-live": "polite"}),
            html.Div(id="display-clock", className="d-clock"),
        ], className="d-header"),
        html.Div(id="display-stale", className="d-stale d-none", role="alert"),
        html.Div(id="display-attention", className="d-attention d-none", role="alert"),
        html.Div(" ".join(problems), className="d-problems") if problems else None,
        html.Div(id="display-tiles", className="d-tiles" if "tiles" in options.panels else "d-none"),
        html.Div([
            _panel("robots", html.Div(id="display-robots"), shown("robots")),
            _panel("queue", dcc.Graph(id="display-queue", config={"displayModeBar": False, "responsive": True},
                                      style={"height": "100%"}), shown("queue")),
            _panel("failures", html.Div(id="display-failures"), shown("failures")),
            _panel("sla", html.Div(id="display-sla"), shown("sla")),
        ], className=f"d-panels d-count-{len(panels)}" + (" d-rotating" if options.rotate_seconds else "")),
        dcc.Interval(id="display-interval", interval=settings.refresh_interval_ms),
        dcc.Interval(id="display-tick", interval=1000),
        dcc.Store(id="display-config", data={"refresh_ms": settings.refresh_interval_ms, "panels": panels,
                                             "rotate": options.rotate_seconds, "queue_alert": options.queue_alert}),
        dcc.Store(id="display-ok"),
        dcc.Store(id="display-last-ok"),
    ], id="display-root", className="display-root")


@callback(
    Output("display-tiles", "children"),
    Output("display-robots", "children"),
    Output("display-queue", "figure"),
    Output("display-failures", "children"),
    Output("display-sla", "children"),
    Output("display-attention", "children"),
    Output("display-attention", "className"),
    Output("display-ok", "data"),
    Input("display-interval", "n_intervals"),
    Input("tz", "data"),
    State("display-config", "data"),
    running=[(Output("display-interval", "disabled"), True, False)],
)
def refresh(_n, tz_name, config):
    tz = safe_tz(tz_name)
    app = current()
    options = DisplayOptions(queue_alert=(config or {}).get("queue_alert", 50))
    try:
        kpis = fleet.fleet_kpis(app.engine, tz, app.settings.offline_after_seconds)
        robots = fleet.robot_statuses(app.engine, app.settings.offline_after_seconds)
        queue = fleet.queue_depth_series(app.engine, hours=3, step_minutes=5)
        failures = fleet.recent_failures(app.engine, minutes=60)
        breaches = fleet.sla_breaches(app.engine)
    except DatabaseUnavailable:
        # Nothing moves: the browser's own clock turns the stale banner on (see the tick callback).
        return (no_update,) * 8
    attention = attention_items(kpis, failures, options)
    attention_box = [html.Span("⚠", className="d-attention-icon", **{"aria-hidden": "true"}),
                     html.Span("Attention: " + " · ".join(attention))] if attention else None
    return (display_tiles(kpis, failures, options), display_robot_grid(robots), display_queue_figure(queue, tz),
            display_failures(failures), display_sla(breaches), attention_box,
            "d-attention" if attention else "d-attention d-none", time.time())


# Remember, in the browser's own clock, when data last arrived.
clientside_callback(
    "function(ok) { return ok ? Date.now() : window.dash_clientside.no_update; }",
    Output("display-last-ok", "data"),
    Input("display-ok", "data"),
)

# Every second, in the browser: the clock, "updated N s ago", the stale banner and the rotation.
# It runs even when the server cannot be reached, so the screen never freezes silently.
clientside_callback(
    ClientsideFunction(namespace="fleetDisplay", function_name="tick"),
    Output("display-clock", "children"),
    Output("display-updated", "children"),
    Output("display-stale", "children"),
    Output("display-stale", "className"),
    Output("display-root", "className"),
    Input("display-tick", "n_intervals"),
    State("display-last-ok", "data"),
    State("display-config", "data"),
    State("tz", "data"),
)
