"""Analytics (/analytics): percentiles, time series, weekly throughput, efficiency, distributions,
errors, SLA, anomalies and fleet utilization.

The URL is the view (data.analytics.parse_filters documents the parameters):

    /analytics?range=30d&bucket=week&tz=Europe/Berlin&workflow=invoices&status=completed

Changing a control rewrites the query string without a reload (a dcc.Location with
refresh=False); clicking a workflow in a chart or table filters the page to it. Each section is
its own callback, so sections load side by side and one slow query does not hold the others.
"""
from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, available_timezones

import dash
import dash_bootstrap_components as dbc
import flask
import pandas as pd
from dash import ALL, Input, Output, State, callback, ctx, dcc, html, no_update

from components import analytics as ac
from components.loading import loading
from components.links import executions_link
from components.theme import empty_figure
from data import analytics as an
from data.db import DatabaseUnavailable
from data.timeutil import safe_tz
from server.state import current

dash.register_page(__name__, path="/analytics", name="Analytics", title="Analytics · Fleet Monitor", order=3)

INPUT_FORMAT = "%Y-%m-%d %H:%M"
VIEWER = "viewer"  # the tz dropdown's "your time zone" choice (not written to the URL)
SECTIONS = ["summary", "timeseries", "weekly", "efficiency", "distribution", "errors", "sla", "anomalies",
            "utilization"]
CLICK_GRAPHS = ["analytics-weekly-fig", "analytics-eff-fig", "analytics-box-fig", "analytics-errwf-fig",
                "analytics-sla-fig", "analytics-anom-fig"]
CLICK_GRIDS = ["analytics-pct-grid", "analytics-weekly-grid", "analytics-eff-grid"]
RANGE_LABELS = {"24h": "24 h", "7d": "7 days", "30d": "30 days", "90d": "90 days", "custom": "Custom"}


# ---------------------------------------------------------------------------------------------
# Pure helpers (tested without a browser)
# ---------------------------------------------------------------------------------------------

def settings_targets(settings) -> dict:
    """Per-workflow P95 targets (seconds) from settings (FLEET_P95_TARGETS)."""
    return dict(settings.p95_targets)


def controls_query(range_, from_, to, bucket, tz_choice, environment, workflows, robots, statuses,
                   sla_success, p95_target, targets, log) -> dict:
    """The controls' values as a URL query (the same parameters the URL carries), so that the
    page state is parsed and validated by one function: data.analytics.parse_filters."""
    q: dict = {"range": range_ or an.DEFAULT_RANGE, "bucket": bucket or ""}
    if q["range"] == "custom":
        q["from"], q["to"] = (from_ or "").strip(), (to or "").strip()
    if tz_choice and tz_choice != VIEWER:
        q["tz"] = tz_choice
    if environment:
        q["environment"] = environment
    if workflows:
        q["workflow"] = ",".join(workflows)
    if robots:
        q["robot"] = ",".join(robots)
    if statuses:
        q["status"] = ",".join(statuses)
    for key, value in (("sla_success", sla_success), ("p95_target", p95_target)):
        if value not in (None, ""):
            q[key] = str(value)
    if targets and str(targets).strip():
        q["targets"] = str(targets).strip()
    if log:
        q["log"] = "1"
    return q


def search_of(f: an.AnalyticsFilters) -> str:
    query = f.to_query()
    return ("?" + urlencode(query)) if query else ""


def section_links(f: an.AnalyticsFilters) -> dict[str, str]:
    """Each section's "view jobs" link: the job history with the page's filters."""
    timed = list(f.statuses)
    finished = ["completed", "failed"]
    weeks = an.week_bounds(f.tz)
    weekly = executions_link(**{**f.executions_query(status=finished), "range": "custom",
                                "from": weeks["baseline_start"].isoformat(timespec="minutes"), "to": None})
    return {
        "summary": executions_link(**f.executions_query()),
        "timeseries": executions_link(**f.executions_query()),
        "weekly": weekly,
        "efficiency": executions_link(**f.executions_query(status=finished)),
        "distribution": executions_link(**f.executions_query(status=timed)),
        "errors": executions_link(**f.executions_query(status="failed")),
        "sla": executions_link(**f.executions_query(status=finished)),
        "anomalies": executions_link(**f.executions_query(status=finished)),
        "utilization": executions_link(**f.executions_query()),
    }


def clicked_workflow(click, grid: bool = False) -> str | None:
    """The workflow id a click on a chart point (customdata) or a grid's workflow cell names."""
    if not click:
        return None
    if grid:
        if click.get("colId") != "workflow_name":
            return None
        row = click.get("rowId")
        return row if isinstance(row, str) and row and row != "__all__" else None
    points = click.get("points") or []
    if not points:
        return None
    data = points[0].get("customdata")
    if isinstance(data, (list, tuple)):
        data = data[0] if data else None
    return data if isinstance(data, str) and data else None


def input_text(ts: datetime, tz: str) -> str:
    local = ts.astimezone(ZoneInfo(tz))
    return local.strftime(INPUT_FORMAT if local.second == 0 and not local.microsecond else "%Y-%m-%d %H:%M:%S")


def tz_options(viewer_tz: str | None) -> list[dict]:
    zones = sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))
    mine = safe_tz(viewer_tz)
    return [{"label": f"Your time zone ({mine})", "value": VIEWER}, {"label": "UTC", "value": "UTC"}] + [
        {"label": z.replace("_", " "), "value": z} for z in zones]


def _viewer_tz_cookie() -> str:
    """The zone the shell remembered in a cookie (first render only; the tz store rules after)."""
    try:
        return safe_tz(flask.request.cookies.get("fleet_tz"))
    except RuntimeError:
        return "UTC"


# ---------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------

def _label(text: str, control, class_name: str = "") -> html.Div:
    return html.Div([html.Label(text, className="form-label small mb-1", htmlFor=getattr(control, "id", None)),
                     control], className=f"analytics-control {class_name}")


def _graph(graph_id: str, filename: str, height: int = 320) -> dcc.Graph:
    return dcc.Graph(id=graph_id, config=ac.graph_config(filename), figure=empty_figure("Loading…", height=height),
                     style={"minHeight": f"{height}px"})


def _loading(*children) -> dcc.Loading:
    return loading(*children)


def _msg(section: str) -> html.Div:
    return html.Div(id=f"analytics-msg-{section}")


def layout(**query):
    app = current()
    f, problems = an.parse_filters(query, default_tz=_viewer_tz_cookie(), p95_targets=settings_targets(app.settings))
    db_problem = None
    try:
        options = an.filter_options(app.engine)
    except DatabaseUnavailable as exc:
        options, db_problem = {"environments": [], "workflows": [], "robots": []}, str(exc)

    wf_opts = [{"label": w["workflow_name"] or w["workflow_id"], "value": w["workflow_id"]} for w in options["workflows"]]
    wf_opts += [{"label": w, "value": w} for w in f.workflows if w not in {o["value"] for o in wf_opts}]
    robot_opts = [{"label": r["name"] or r["robot_id"], "value": r["robot_id"]} for r in options["robots"]]
    robot_opts += [{"label": r, "value": r} for r in f.robots if r not in {o["value"] for o in robot_opts}]
    env_opts = [{"label": e, "value": e} for e in options["environments"]]
    if f.environment and f.environment not in options["environments"]:
        env_opts.append({"label": f.environment, "value": f.environment})
    custom = f.range == "custom"
    url_targets = ",".join(f"{k}:{an._num(v)}" for k, v in f.p95_targets
                           if settings_targets(app.settings).get(k) != v)

    controls = dbc.Card(dbc.CardBody([
        html.Div([
            _label("Window", dbc.RadioItems(
                id="analytics-range", value=f.range, inline=True, className="btn-group analytics-seg",
                inputClassName="btn-check", labelClassName="btn btn-outline-primary btn-sm",
                labelCheckedClassName="active",
                options=[{"label": RANGE_LABELS[r], "value": r} for r in an.RANGES])),
            html.Div([
                _label("From", dbc.Input(id="analytics-from", value=input_text(f.start, f.tz) if custom else "",
                                         placeholder="YYYY-MM-DD HH:MM", debounce=True, type="text", size="sm")),
                _label("To", dbc.Input(id="analytics-to", value=input_text(f.end, f.tz) if custom else "",
                                       placeholder="YYYY-MM-DD or now", debounce=True, type="text", size="sm")),
            ], id="analytics-custom", className="analytics-custom", style={} if custom else {"display": "none"}),
            _label("Bucket", dbc.RadioItems(
                id="analytics-bucket", value=f.bucket, inline=True, className="btn-group analytics-seg",
                inputClassName="btn-check", labelClassName="btn btn-outline-primary btn-sm",
                labelCheckedClassName="active",
                options=[{"label": b.capitalize(), "value": b} for b in an.BUCKETS])),
            _label("Time zone", dcc.Dropdown(
                id="analytics-tz", options=tz_options(f.tz if not f.tz_from_query else _viewer_tz_cookie()),
                value=f.tz if f.tz_from_query else VIEWER, clearable=False, optionHeight=30), "analytics-control-tz"),
        ], className="analytics-controls"),
        html.Div([
            _label("Environment", dcc.Dropdown(id="analytics-environment", options=env_opts, value=f.environment,
                                               placeholder="All environments")),
            _label("Workflows", dcc.Dropdown(id="analytics-workflows", options=wf_opts, value=list(f.workflows),
                                             multi=True, placeholder="All workflows"), "analytics-control-wide"),
            _label("Robots", dcc.Dropdown(id="analytics-robots", options=robot_opts, value=list(f.robots),
                                          multi=True, placeholder="All robots"), "analytics-control-wide"),
        ], className="analytics-controls mt-2"),
        html.Details([
            html.Summary("Duration set, targets and axes", className="small"),
            html.Div([
                _label("Durations cover", dbc.Checklist(
                    id="analytics-statuses", value=list(f.statuses), inline=True,
                    options=[{"label": s, "value": s} for s in an.DURATION_STATUSES])),
                _label("Success target (%)", dbc.Input(
                    id="analytics-sla-success", type="number", min=0, max=100, step="any", debounce=True, size="sm",
                    value=None if f.success_target == an.DEFAULT_SUCCESS_TARGET else round(f.success_target * 100, 6),
                    placeholder=f"{an.DEFAULT_SUCCESS_TARGET * 100:g}")),
                _label("P95 target (s)", dbc.Input(
                    id="analytics-p95-target", type="number", min=0, step="any", debounce=True, size="sm",
                    value=None if f.p95_target_s == an.DEFAULT_P95_TARGET_S else f.p95_target_s,
                    placeholder=f"{an.DEFAULT_P95_TARGET_S:g}")),
                _label("Per-workflow P95 targets", dbc.Input(
                    id="analytics-targets", type="text", debounce=True, size="sm", value=url_targets,
                    placeholder="workflow-id:seconds, …"), "analytics-control-wide"),
                _label("Duration axis", dbc.Switch(id="analytics-log", label="logarithmic", value=f.log_scale)),
            ], className="analytics-controls mt-2"),
        ], className="mt-2", open=bool(url_targets or f.p95_target_s != an.DEFAULT_P95_TARGET_S
                                       or f.success_target != an.DEFAULT_SUCCESS_TARGET
                                       or f.statuses != an.DEFAULT_DURATION_STATUSES)),
    ]), className="mb-3 analytics-controls-card")
    controls = html.Div(controls, role="search", **{"aria-label": "Analytics filters"})

    url_notes = problems + ([f"Filter choices unavailable: {db_problem}"] if db_problem else [])
    page = html.Div([
        dcc.Location(id="analytics-url", refresh=False),
        dcc.Store(id="analytics-filters"),
        dcc.Store(id="analytics-fleet-pcts"),
        dcc.Download(id="analytics-weekly-download"),
        html.Div([
            html.H1("Analytics", className="h3 mb-0"),
            html.Div(id="analytics-window", className="small text-muted"),
        ], className="d-flex justify-content-between align-items-baseline flex-wrap gap-2 mb-2"),
        dbc.Alert(ac.problems_alert(url_notes, "Some of the link's settings were not understood:"),
                  id="analytics-url-problems", color="warning", is_open=bool(url_notes), dismissable=True),
        controls,
        dbc.Alert(id="analytics-problems", color="warning", is_open=False),
        html.Div(id="analytics-covers", className="small text-muted mb-2"),

        ac.section("Duration percentiles", "summary", _loading(
            html.Div(id="analytics-kpis", className="kpi-row mb-3"),
            ac.grid("analytics-pct-grid", ac.percentile_columns(), [], height="300px"),
            _msg("summary"),
        ), help_text="Click a workflow name to filter the page to it. Durations in seconds with millisecond precision."),
        ac.section("Over time", "timeseries", _loading(_graph("analytics-ts-fig", "analytics-time-series", 520),
                                                       _msg("timeseries")),
                   note="Jobs are counted in the bucket of the time they were queued (created_at); the first and "
                        "last buckets may be cut by the window. Queue depth: jobs waiting at each bucket start."),
        ac.section("Weekly throughput", "weekly", _loading(
            html.Div(id="analytics-weekly-note", className="small text-muted mb-2"),
            dbc.Row([
                dbc.Col(_graph("analytics-weekly-fig", "weekly-throughput", 320), xl=5),
                dbc.Col([
                    ac.grid("analytics-weekly-grid", ac.weekly_columns(), [], height="320px"),
                    dbc.Button("Download CSV", id="analytics-weekly-csv", size="sm", color="secondary",
                               outline=True, className="mt-2"),
                ], xl=7),
            ]),
            _msg("weekly"),
        )),
        ac.section("Workflow efficiency", "efficiency", _loading(
            dbc.Row([
                dbc.Col(_graph("analytics-eff-fig", "workflow-efficiency", 320), xl=5),
                dbc.Col(ac.grid("analytics-eff-grid", ac.efficiency_columns(), [], height="340px"), xl=7),
            ]),
            _msg("efficiency"),
        ), help_text="Score = 0.40 × success rate + 0.30 × duration score (100 at or below the P95 target, 0 at "
                     "300 s — or 5 × the target when the target is 300 s or more — linear between) + 0.15 × healing "
                     "score (100 − healing attempts per run × 100) + 0.15 × error-diversity score (100 with no "
                     "error type, 80 for up to 2, 50 for up to 5, 20 above)."),
        ac.section("Distributions", "distribution", _loading(
            dbc.Row([
                dbc.Col(_graph("analytics-hist-fig", "duration-histogram", 340), xl=6),
                dbc.Col(_graph("analytics-box-fig", "duration-box", 340), xl=6),
            ]),
            _msg("distribution"),
        ), note="Bins and box statistics are computed in the database; whiskers reach the most extreme durations "
                "within 1.5 × IQR of the quartiles."),
        ac.section("Errors", "errors", _loading(
            dbc.Row([
                dbc.Col(_graph("analytics-errtime-fig", "errors-over-time", 320), xl=6),
                dbc.Col(_graph("analytics-errwf-fig", "errors-by-workflow", 320), xl=6),
            ]),
            html.H3("Top error messages", className="h6 mt-3"),
            html.Div(id="analytics-top-errors"),
            _msg("errors"),
        ), note="Error types follow the orchestrator's rule (leading …Error/…Exception token, else keywords); a "
                "failure without a message counts as UnknownError."),
        ac.section("SLA", "sla", _loading(
            html.Div(id="analytics-sla-breaches", className="mb-2"),
            _graph("analytics-sla-fig", "sla", 300),
            _msg("sla"),
        )),
        ac.section("Anomalies", "anomalies", _loading(
            html.Div(id="analytics-anom-list", className="mb-2"),
            _graph("analytics-anom-fig", "anomalies", 260),
            _msg("anomalies"),
        ), note=f"Robust z-score: (latest − median of the 8 previous buckets) / (1.4826 × their median absolute "
                f"deviation), P95 compared in log space, with floors (5 percentage points; a 10 % change) so a flat "
                f"baseline does not flag tiny moves. |z| > {an.ANOMALY_THRESHOLD:g} is flagged. Buckets need "
                f"{an.ANOMALY_MIN_JOBS} finished jobs."),
        ac.section("Fleet utilization", "utilization", _loading(
            dbc.Row([
                dbc.Col(_graph("analytics-util-fig", "robot-utilization", 300), xl=5),
                dbc.Col(_graph("analytics-heat-fig", "utilization-hour-of-week", 300), xl=7),
            ]),
            _msg("utilization"),
        ), note="Busy share = time running jobs over capacity (max concurrent jobs × time), per robot and by hour "
                "of the week. Workflow filters do not apply here; environment and robot filters do."),
    ], className="analytics-page")
    return page


# ---------------------------------------------------------------------------------------------
# Callbacks: controls -> filters (+ URL), then one callback per section
# ---------------------------------------------------------------------------------------------

CONTROL_INPUTS = [
    Input("analytics-range", "value"), Input("analytics-from", "value"), Input("analytics-to", "value"),
    Input("analytics-bucket", "value"), Input("analytics-tz", "value"), Input("analytics-environment", "value"),
    Input("analytics-workflows", "value"), Input("analytics-robots", "value"), Input("analytics-statuses", "value"),
    Input("analytics-sla-success", "value"), Input("analytics-p95-target", "value"),
    Input("analytics-targets", "value"), Input("analytics-log", "value"),
]


@callback(
    Output("analytics-url", "search"),
    Output("analytics-filters", "data"),
    Output("analytics-problems", "children"),
    Output("analytics-problems", "is_open"),
    Output({"type": "analytics-jobs", "section": ALL}, "href"),
    Output("analytics-window", "children"),
    Output("analytics-covers", "children"),
    *CONTROL_INPUTS,
    Input("tz", "data"),
)
def apply_controls(range_, from_, to, bucket, tz_choice, environment, workflows, robots, statuses, sla_success,
                   p95_target, targets, log, viewer_tz):
    query = controls_query(range_, from_, to, bucket, tz_choice, environment, workflows, robots, statuses,
                           sla_success, p95_target, targets, log)
    f, problems = an.parse_filters(query, default_tz=safe_tz(viewer_tz),
                                   p95_targets=settings_targets(current().settings))
    links = section_links(f)
    hrefs = [links.get(o["id"]["section"], "/executions") for o in ctx.outputs_list[4]]
    # The first run only reads the URL: leave the address as it came (no extra history entry).
    search = search_of(f) if ctx.triggered_id not in (None, "tz") else no_update
    window = f"{ac.window_text(f.start, f.end, f.tz)} · {f.tz} ({ac.zone_now_offset(f.tz)}) · {f.bucket} buckets"
    covers = [html.Strong("Durations cover: "), an.duration_covers(f), ". ",
              an.percentile_note(current().engine, f)]
    return (search, f.to_dict(), ac.problems_alert(problems, "Some settings were not understood:"), bool(problems),
            hrefs, window, covers)


@callback(
    Output("analytics-from", "value"),
    Output("analytics-to", "value"),
    Output("analytics-custom", "style"),
    Input("analytics-range", "value"),
    State("analytics-from", "value"),
    State("analytics-to", "value"),
    State("analytics-filters", "data"),
    prevent_initial_call=True,
)
def show_custom(range_, from_, to, data):
    """Custom window: show the date inputs, prefilled with the window shown so far."""
    if range_ != "custom":
        return no_update, no_update, {"display": "none"}
    if (from_ or "").strip() or not data:
        return no_update, no_update, {}
    f = an.AnalyticsFilters.from_dict(data)
    return input_text(f.start, f.tz), input_text(f.end, f.tz), {}


@callback(Output("analytics-tz", "options"), Input("tz", "data"))
def name_viewer_zone(viewer_tz):
    return tz_options(viewer_tz)


@callback(
    Output("analytics-workflows", "value"),
    *[Input(g, "clickData") for g in CLICK_GRAPHS],
    *[Input(g, "cellClicked") for g in CLICK_GRIDS],
    State("analytics-workflows", "value"),
    prevent_initial_call=True,
)
def cross_filter(*args):
    """Clicking a workflow in any chart or table filters the page (and the URL) to it."""
    current_value = args[-1] or []
    trigger = ctx.triggered_id
    if trigger is None:
        return no_update
    value = ctx.triggered[0]["value"] if ctx.triggered else None
    workflow = clicked_workflow(value, grid=trigger in CLICK_GRIDS)
    if workflow is None or current_value == [workflow]:
        return no_update
    return [workflow]


def _filters(data) -> an.AnalyticsFilters:
    if not data:
        raise dash.exceptions.PreventUpdate
    return an.AnalyticsFilters.from_dict(data)


def _unavailable(exc: Exception) -> dbc.Alert:
    return dbc.Alert([html.Strong("Database unavailable. "), str(exc)], color="danger", className="mt-2 mb-0")


def _no_data_figure(height: int = 300):
    return empty_figure("Database unavailable", height=height)


@callback(
    Output("analytics-kpis", "children"),
    Output("analytics-pct-grid", "rowData"),
    Output("analytics-msg-summary", "children"),
    Output("analytics-fleet-pcts", "data"),
    Input("analytics-filters", "data"),
)
def show_summary(data):
    f = _filters(data)
    try:
        result = an.duration_percentiles(current().engine, f)
    except DatabaseUnavailable as exc:
        return [], [], _unavailable(exc), {}
    fleet = result["fleet"]
    note = None if fleet["total_jobs"] else html.Div(ac.NO_JOBS, className="text-muted")
    lines = {k: v for k, v in fleet.items() if k.endswith("_duration_ms")}
    return ac.kpi_tiles(fleet, f.success_target), ac.percentile_rows(result["workflows"]), note, lines


@callback(
    Output("analytics-ts-fig", "figure"),
    Output("analytics-msg-timeseries", "children"),
    Input("analytics-filters", "data"),
)
def show_time_series(data):
    f = _filters(data)
    engine = current().engine
    try:
        series = an.time_series(engine, f)
        queue = an.queue_depth_series(engine, f)
    except DatabaseUnavailable as exc:
        return _no_data_figure(520), _unavailable(exc)
    return ac.time_series_figure(series, queue, f.tz, f.bucket), None


@callback(
    Output("analytics-weekly-fig", "figure"),
    Output("analytics-weekly-grid", "rowData"),
    Output("analytics-weekly-note", "children"),
    Output("analytics-msg-weekly", "children"),
    Input("analytics-filters", "data"),
)
def show_weekly(data):
    f = _filters(data)
    try:
        weekly = an.weekly_throughput(current().engine, f)
    except DatabaseUnavailable as exc:
        return _no_data_figure(), [], None, _unavailable(exc)
    weeks = an.week_bounds(f.tz)
    note = (f"Finished jobs (completed + failed) by the week they were queued, weeks starting Monday 00:00 in {f.tz}. "
            f"This week: since {weeks['this_week']:%a %Y-%m-%d}; last week: from {weeks['last_week']:%Y-%m-%d}; "
            f"the 4 weeks before: from {weeks['baseline_start']:%Y-%m-%d}. Independent of the window above.")
    return ac.weekly_figure(weekly), ac.weekly_rows(weekly), note, None


@callback(
    Output("analytics-weekly-download", "data"),
    Input("analytics-weekly-csv", "n_clicks"),
    State("analytics-weekly-grid", "rowData"),
    prevent_initial_call=True,
)
def download_weekly(n, rows):
    if not n:
        return no_update
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d")
    return dcc.send_string(ac.weekly_csv(rows), f"weekly-throughput-{stamp}.csv", type="text/csv")


@callback(
    Output("analytics-eff-fig", "figure"),
    Output("analytics-eff-grid", "rowData"),
    Output("analytics-msg-efficiency", "children"),
    Output("analytics-sla-fig", "figure"),
    Output("analytics-sla-breaches", "children"),
    Output("analytics-msg-sla", "children"),
    Input("analytics-filters", "data"),
)
def show_efficiency_and_sla(data):
    f = _filters(data)
    try:
        stats = an.workflow_stats(current().engine, f)  # one query feeds both sections
    except DatabaseUnavailable as exc:
        alert = _unavailable(exc)
        return _no_data_figure(), [], alert, _no_data_figure(), None, alert
    eff = an.efficiency_table(stats, f)
    sla = an.sla_table(stats, f)
    return (ac.efficiency_figure(eff), ac.efficiency_rows(eff), None, ac.sla_figure(sla), ac.sla_breaches(sla), None)


@callback(
    Output("analytics-hist-fig", "figure"),
    Output("analytics-box-fig", "figure"),
    Output("analytics-msg-distribution", "children"),
    Input("analytics-fleet-pcts", "data"),
    State("analytics-filters", "data"),
)
def show_distributions(fleet, data):
    """Runs after the summary, whose fleet percentiles it marks (no second percentile query)."""
    f = _filters(data)
    engine = current().engine
    try:
        hist = an.duration_histogram(engine, f)
        box = an.duration_box_stats(engine, f)
    except DatabaseUnavailable as exc:
        return _no_data_figure(340), _no_data_figure(340), _unavailable(exc)
    return ac.histogram_figure(hist, fleet or {}, f.log_scale), ac.box_figure(box, f.log_scale), None


@callback(
    Output("analytics-errtime-fig", "figure"),
    Output("analytics-errwf-fig", "figure"),
    Output("analytics-top-errors", "children"),
    Output("analytics-msg-errors", "children"),
    Input("analytics-filters", "data"),
)
def show_errors(data):
    f = _filters(data)
    engine = current().engine
    try:
        over_time = an.errors_over_time(engine, f)
        by_workflow = an.errors_by_workflow(engine, f)
        top = an.top_error_messages(engine, f)
    except DatabaseUnavailable as exc:
        return _no_data_figure(), _no_data_figure(), None, _unavailable(exc)
    return (ac.errors_time_figure(over_time, f.tz, f.bucket), ac.errors_workflow_figure(by_workflow),
            ac.top_errors_table(top, f.executions_query(), f.tz), None)


@callback(
    Output("analytics-anom-fig", "figure"),
    Output("analytics-anom-list", "children"),
    Output("analytics-msg-anomalies", "children"),
    Input("analytics-filters", "data"),
)
def show_anomalies(data):
    f = _filters(data)
    try:
        result = an.anomalies(current().engine, f)
    except DatabaseUnavailable as exc:
        return _no_data_figure(260), None, _unavailable(exc)
    return (ac.anomaly_figure(result["summary"], result["threshold"]),
            ac.anomaly_list(result["summary"], result["latest_bucket"], f.tz, f.bucket, result["threshold"]), None)


@callback(
    Output("analytics-util-fig", "figure"),
    Output("analytics-heat-fig", "figure"),
    Output("analytics-msg-utilization", "children"),
    Input("analytics-filters", "data"),
)
def show_utilization(data):
    f = _filters(data)
    try:
        result = an.fleet_utilization(current().engine, f)
    except DatabaseUnavailable as exc:
        return _no_data_figure(), _no_data_figure(), _unavailable(exc)
    if result is None:
        msg = html.Div("Robot utilization is not available in this version.", className="text-muted")
        return empty_figure("Not available"), empty_figure("Not available"), msg
    return (ac.utilization_figure(result["robots"]), ac.hour_of_week_figure(result["hour_of_week"], f.tz), None)
