"""Robots (/robots): the fleet list with live status, filters and sorting held in the URL.

    /robots?status=offline,error&environment=production&capability=browser&tag=eu&sort=-heartbeat_age_s
"""
from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
import pandas as pd
from dash import Input, Output, State, callback, clientside_callback, dcc, html, no_update

from components import format as fmt
from components.shell import refresh_control
from components.robots import (
    grid_style, list_rows, list_summary, parse_sort, robot_list_grid, silent_banner, status_label,
)
from data import robots as robots_data
from data.db import DatabaseUnavailable
from data.status import LIVE_STATUSES
from data.timeutil import safe_tz
from server.state import current

dash.register_page(__name__, path="/robots", name="Robots", title="Robots · Fleet Monitor", order=2)

INTERVAL = {"type": "live-interval", "page": "robots"}


def _values(raw) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, (list, tuple)):
        raw = ",".join(map(str, raw))
    return [v.strip() for v in str(raw).split(",") if v.strip()][:20]


def _dropdown(id_: str, label: str, options: list, value: list) -> dbc.Col:
    return dbc.Col([
        dbc.Label(label, html_for=id_, className="small mb-1"),
        dcc.Dropdown(id=id_, options=options, value=value, multi=True, placeholder="any",
                     className="robots-filter"),
    ], xs=12, sm=6, lg=3)


def layout(status=None, environment=None, capability=None, tag=None, sort=None, **_other):
    app = current()
    notes = []
    statuses = _values(status)
    unknown = [s for s in statuses if s not in LIVE_STATUSES]
    if unknown:
        notes.append(f"Unknown status {', '.join(map(repr, unknown))} ignored; "
                     f"statuses are {', '.join(LIVE_STATUSES)}.")
    statuses = [s for s in statuses if s in LIVE_STATUSES]
    if sort and parse_sort(sort) is None:
        notes.append(f"Cannot sort by {sort!r}; showing the default order.")
        sort = None
    try:
        options = robots_data.robot_filter_options(app.engine)
        db_error = None
    except DatabaseUnavailable as exc:
        options, db_error = {"environments": [], "capabilities": [], "tags": []}, str(exc)
    chosen = {"environment": _values(environment), "capability": _values(capability), "tag": _values(tag)}

    def opts(values, chosen_values):
        # Keep a value from the URL even if no robot has it (yet): the filter stays visible.
        return [{"label": v, "value": v} for v in sorted(set(values) | set(chosen_values))]

    return html.Div([
        dbc.Alert(db_error, id="robots-alert", color="danger", is_open=bool(db_error), className="sticky-alert"),
        dbc.Alert(" ".join(notes), color="warning", is_open=bool(notes), id="robots-notes", dismissable=True),
        html.Div([
            html.H1("Robots", className="h3 mb-0"),
            html.Span(id="robots-summary", className="text-muted small me-auto", **{"aria-live": "polite"}),
            refresh_control("robots", max(app.settings.refresh_interval_ms, 5000)),
        ], className="d-flex align-items-center mb-2 flex-wrap gap-3"),
        dbc.Row([
            _dropdown("robots-filter-status", "Status",
                      [{"label": status_label(s), "value": s} for s in LIVE_STATUSES], statuses),
            _dropdown("robots-filter-environment", "Environment",
                      opts(options["environments"], chosen["environment"]), chosen["environment"]),
            _dropdown("robots-filter-capability", "Capability (all of)",
                      opts(options["capabilities"], chosen["capability"]), chosen["capability"]),
            _dropdown("robots-filter-tag", "Tag (all of)", opts(options["tags"], chosen["tag"]), chosen["tag"]),
        ], className="g-2 mb-3 robots-filters"),
        html.Div(id="robots-silent"),
        dbc.Card(dbc.CardBody(robot_list_grid("robots-grid", sort), className="p-0"), className="mb-2"),
        html.Div([
            html.Span(id="robots-updated"),
            " · Status: live, from the stored status and the heartbeat age (offline after "
            f"{fmt.duration(app.settings.offline_after_seconds)} without one). Today = since midnight in your "
            "zone; success rate = completed / (completed + failed) finished in the last 7 days; utilization = "
            "share of job capacity in use over 24 h (job numbers refresh once a minute).",
        ], className="small text-muted"),
        dcc.Store(id="robots-sort", data=sort),
        dcc.Store(id="robots-url-sync"),
    ])


@callback(
    Output("robots-grid", "rowData"),
    Output("robots-grid", "style"),
    Output("robots-silent", "children"),
    Output("robots-summary", "children"),
    Output("robots-updated", "children"),
    Output("robots-alert", "children"),
    Output("robots-alert", "is_open"),
    Input("robots-filter-status", "value"),
    Input("robots-filter-environment", "value"),
    Input("robots-filter-capability", "value"),
    Input("robots-filter-tag", "value"),
    Input(INTERVAL, "n_intervals"),
    Input("tz", "data"),
    # The interval is disabled while a refresh runs, so refreshes never overlap.
    running=[(Output(INTERVAL, "disabled"), True, False)],
)
def load(status, environment, capability, tag, _n, tz_name):
    tz = safe_tz(tz_name)
    app = current()
    threshold = app.settings.offline_after_seconds
    try:
        # The live part every refresh; the work numbers (7 days of jobs) at most once a minute.
        stats = robots_data.cached_robot_work_stats(app.engine, tz)
        frame = robots_data.robot_list(app.engine, tz, threshold, status=status or None,
                                       environment=environment or None, capability=capability or None,
                                       tag=tag or None, stats=stats)
    except DatabaseUnavailable as exc:
        return (no_update,) * 5 + ([html.Strong("Database unreachable. "), str(exc)], True)
    updated = f"Updated {fmt.local_time(pd.Timestamp.now(tz='UTC'), tz, '%H:%M:%S')}"
    return (list_rows(frame, tz), grid_style(len(frame)), silent_banner(frame, threshold), list_summary(frame),
            updated, None, False)


# The URL follows the filters and the sort without reloading the page (replaceState), so the
# view can be shared or bookmarked.
clientside_callback(
    """function(status, environment, capability, tag, columnState, initialSort) {
        if (window.location.pathname.replace(/\\/+$/, '') !== '/robots') {
            return window.dash_clientside.no_update;
        }
        var parts = [];
        function add(key, values) {
            if (values && values.length) {
                parts.push(key + '=' + values.map(encodeURIComponent).join(','));
            }
        }
        add('status', status); add('environment', environment);
        add('capability', capability); add('tag', tag);
        var sort = initialSort;
        if (columnState) {
            var sorted = columnState.filter(function(c) { return c.sort; });
            sorted.sort(function(a, b) { return (a.sortIndex || 0) - (b.sortIndex || 0); });
            sort = sorted.length ? (sorted[0].sort === 'desc' ? '-' : '') + sorted[0].colId : null;
        }
        if (sort) { parts.push('sort=' + encodeURIComponent(sort)); }
        var search = parts.length ? '?' + parts.join('&') : '';
        if (search !== window.location.search) {
            window.history.replaceState(window.history.state, '', window.location.pathname + search);
        }
        return search;
    }""",
    Output("robots-url-sync", "data"),
    Input("robots-filter-status", "value"),
    Input("robots-filter-environment", "value"),
    Input("robots-filter-capability", "value"),
    Input("robots-filter-tag", "value"),
    Input("robots-grid", "columnState"),
    State("robots-sort", "data"),
)
