"""Workflow executions (/executions): the job history, filtered, paged by keyset, shareable.

The URL is the view: filters (components/links.py contract), `sort`, and a page cursor
(`after` / `before`). Changing a control rewrites the query string without reloading (a
dcc.Location with refresh=False), so the link in the address bar always restores this view.
"""
from __future__ import annotations

from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, ctx, dcc, html, no_update

from components import executions as ex
from components.links import executions_link, job_link
from components.loading import loading
from data import jobs
from data.db import DatabaseUnavailable
from data.timeutil import safe_tz
from server.state import current

dash.register_page(__name__, path="/executions", name="Executions", title="Workflow executions · Fleet Monitor",
                   order=1)

CUSTOM_FORMAT = "%Y-%m-%d %H:%M"


def view_query(view: dict) -> dict:
    """The URL query of a view: its filters, then sort and cursor when not the defaults."""
    query = dict(view.get("filters") or {})
    if view.get("sort") and view["sort"] != jobs.DEFAULT_SORT:
        query["sort"] = view["sort"]
    if view.get("after"):
        query["after"] = view["after"]
    elif view.get("before"):
        query["before"] = view["before"]
    return query


def view_search(view: dict) -> str:
    query = view_query(view)
    return ("?" + urlencode(query)) if query else ""


def export_href(view: dict, tz: str) -> str:
    query = dict(view.get("filters") or {})
    if view.get("sort") and view["sort"] != jobs.DEFAULT_SORT:
        query["sort"] = view["sort"]
    query["tz"] = tz
    return "/executions/export.csv?" + urlencode(query)


def _local_text(value, tz: str) -> str:
    """A from/to instant as the text shown in the custom range inputs (viewer's zone)."""
    if not value:
        return ""
    parsed = jobs.parse_instant(str(value))
    if parsed is None:
        return ""
    if parsed.tzinfo is None:
        return parsed.strftime(CUSTOM_FORMAT if parsed.second == 0 and not parsed.microsecond else "%Y-%m-%d %H:%M:%S")
    local = parsed.astimezone(ZoneInfo(tz))
    return local.strftime(CUSTOM_FORMAT if local.second == 0 and not local.microsecond else "%Y-%m-%d %H:%M:%S")


def _instant_from_input(text: str | None, tz: str) -> tuple[str | None, str | None]:
    """(ISO instant with offset, problem) from what was typed in a custom range input."""
    if not text or not str(text).strip():
        return None, None
    parsed = jobs.parse_instant(str(text).strip().replace(" ", "T", 1) if "T" not in str(text) else str(text))
    if parsed is None:
        return None, f"{str(text)[:40]!r} is not a date/time (use YYYY-MM-DD HH:MM)."
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(tz))
    return parsed.isoformat(), None


def _label(text: str, control, width: str = "") -> html.Div:
    return html.Div([html.Label(text, className="form-label small mb-1", htmlFor=getattr(control, "id", None)),
                     control], className=f"exec-filter {width}")


def layout(**query):
    filters, problems = jobs.parse_filters(query)
    sort, sort_problems = jobs.parse_sort(query.get("sort"))
    problems += sort_problems
    after = query.get("after") if isinstance(query.get("after"), str) else None
    before = query.get("before") if isinstance(query.get("before"), str) and not after else None
    fq = filters.to_query()
    view = {"filters": fq, "sort": sort, "after": after, "before": before}
    range_value = filters.range or ""

    def opts(values):
        return [{"label": v, "value": v} for v in values]

    controls = html.Div([
        _label("Status", dbc.Checklist(
            id="exec-status", options=[{"label": ex.status_text(s), "value": s} for s in jobs.STATUSES],
            value=list(filters.status), inline=True, className="status-checks"), "exec-filter-status"),
        _label("Workflow", dcc.Dropdown(
            id="exec-workflow", options=opts(filters.workflow), value=list(filters.workflow), multi=True,
            searchable=True, placeholder="All workflows"), "exec-filter-wide"),
        _label("Robot", dcc.Dropdown(
            id="exec-robot", options=opts([filters.robot] if filters.robot else []), value=filters.robot,
            placeholder="All robots")),
        _label("Environment", dcc.Dropdown(
            id="exec-environment", options=opts([filters.environment] if filters.environment else []),
            value=filters.environment, placeholder="All")),
        _label("Time range", dcc.Dropdown(
            id="exec-range", options=ex.RANGE_OPTIONS, value=range_value, clearable=False, searchable=False)),
        html.Div([
            # Filled in the viewer's zone by show_custom_range() once the zone is known.
            _label("From (your time zone)", dbc.Input(
                id="exec-from", value="", placeholder="YYYY-MM-DD HH:MM", debounce=True, type="text")),
            _label("To (exclusive)", dbc.Input(
                id="exec-to", value="", placeholder="YYYY-MM-DD HH:MM", debounce=True, type="text")),
        ], id="exec-custom", className="exec-custom",
            style={} if range_value == "custom" else {"display": "none"}),
        _label("Error type", dcc.Dropdown(
            id="exec-error-type",
            options=opts(sorted(set(ex.COMMON_ERROR_TYPES) | ({filters.error_type} if filters.error_type else set()))),
            value=filters.error_type, placeholder="Any")),
        _label("Error message contains", dbc.Input(
            id="exec-q", value=filters.q or "", debounce=True, type="search", placeholder="text, e.g. 50%_off",
            maxLength=200), "exec-filter-wide"),
        _label("Sort", dcc.Dropdown(
            id="exec-sort", options=ex.SORT_OPTIONS, value=sort, clearable=False, searchable=False)),
    ], className="exec-filters", role="search", **{"aria-label": "Job filters"})

    return html.Div([
        dcc.Location(id="exec-url", refresh=False),
        dcc.Location(id="exec-nav", refresh="callback-nav"),
        dcc.Store(id="exec-view", data=view),
        dcc.Store(id="exec-filters", data=fq),
        dcc.Store(id="exec-page", data={}),
        dcc.Store(id="exec-options-load", data=1),
        html.Div([
            html.H1("Workflow executions", className="h3 mb-0"),
            html.Div([
                html.Span(id="exec-count", className="exec-count", **{"aria-live": "polite"}),
                html.A("Export CSV", id="exec-export", href="/executions/export.csv", className="btn btn-sm btn-outline-secondary",
                       title=f"The filtered jobs as CSV (at most {jobs.EXPORT_ROW_CAP:,} rows), times in your zone"),
            ], className="d-flex align-items-center gap-3"),
        ], className="d-flex justify-content-between align-items-baseline mb-2 flex-wrap gap-2"),
        html.Div(ex.problems_notice(problems), id="exec-notice"),
        dbc.Alert(id="exec-alert", color="danger", is_open=False),
        dbc.Card(dbc.CardBody(controls), className="mb-3"),
        dbc.Card([dbc.CardHeader("Summary of this view"),
                  dbc.CardBody(loading(html.Div(id="exec-summary")))],
                 className="mb-3"),
        dbc.Card(dbc.CardBody([
            html.Div(id="exec-search-scope", **{"aria-live": "polite"}),
            ex.jobs_grid("exec-grid"),
            html.Div([
                dbc.Button("⟪ Newest", id="exec-first", size="sm", color="secondary", outline=True, disabled=not (after or before)),
                dbc.Button("‹ Newer", id="exec-prev", size="sm", color="secondary", outline=True, disabled=True),
                html.Span(id="exec-page-label", className="small text-muted mx-2"),
                dbc.Button("Older ›", id="exec-next", size="sm", color="secondary", outline=True, disabled=True),
            ], className="exec-pager d-flex align-items-center gap-2 mt-2", role="navigation",
                **{"aria-label": "Pages"}),
            html.Div("Click a row, or press Space on it, to open the job.", className="small text-muted mt-1"),
        ]), className="mb-3"),
    ], className="executions-page")


dash.clientside_callback(
    "function(r) { return r === 'custom' ? {} : {display: 'none'}; }",
    Output("exec-custom", "style"),
    Input("exec-range", "value"),
)


@callback(
    Output("exec-view", "data"),
    Output("exec-filters", "data"),
    Output("exec-url", "search"),
    Output("exec-notice", "children"),
    Input("exec-status", "value"),
    Input("exec-workflow", "value"),
    Input("exec-robot", "value"),
    Input("exec-environment", "value"),
    Input("exec-range", "value"),
    Input("exec-from", "value"),
    Input("exec-to", "value"),
    Input("exec-error-type", "value"),
    Input("exec-q", "value"),
    Input("exec-sort", "value"),
    Input("exec-first", "n_clicks"),
    Input("exec-prev", "n_clicks"),
    Input("exec-next", "n_clicks"),
    State("exec-view", "data"),
    State("exec-page", "data"),
    State("tz", "data"),
    prevent_initial_call=True,
)
def change_view(status, workflow, robot, environment, range_, from_text, to_text, error_type, q, sort,
                _first, _prev, _next, view, page, tz_name):
    tz = safe_tz(tz_name)
    view = view or {}
    page = page or {}
    trigger = ctx.triggered_id
    if trigger in ("exec-first", "exec-prev", "exec-next"):
        new = {**view, "after": None, "before": None}
        if trigger == "exec-prev" and page.get("prev"):
            new["before"] = page["prev"]
        elif trigger == "exec-next" and page.get("next"):
            new["after"] = page["next"]
        if new == view:
            return no_update, no_update, no_update, no_update
        return new, no_update, view_search(new), no_update

    current_filters = view.get("filters") or {}
    query = {
        "status": ",".join(status or []),
        "workflow": ",".join(workflow or []),
        "robot": robot or "",
        "environment": environment or "",
        "range": range_ or "",
        "error_type": error_type or "",
        "q": q or "",
    }
    problems: list[str] = []
    if range_ == "custom":
        if not (from_text or "").strip() and not (to_text or "").strip():
            return no_update, no_update, no_update, no_update  # wait for a from or to
        for key, text in (("from", from_text), ("to", to_text)):
            # The text still shows the link's instant: keep it exactly as the link had it.
            if current_filters.get(key) and _local_text(current_filters.get(key), tz) == (text or "").strip():
                query[key] = current_filters[key]
                continue
            instant, problem = _instant_from_input(text, tz)
            if problem:
                problems.append(f"{key.capitalize()}: {problem}")
            if instant:
                query[key] = instant
    filters, more = jobs.parse_filters(query)
    problems += more
    sort = sort if sort in jobs.SORTS else jobs.DEFAULT_SORT
    new = {"filters": filters.to_query(), "sort": sort, "after": None, "before": None}
    notice = ex.problems_notice(problems) if problems else None
    if new["filters"] == current_filters and sort == view.get("sort"):
        # Nothing the query depends on changed (e.g. a control was set from the link).
        return no_update, no_update, no_update, notice if problems else no_update
    filters_out = new["filters"] if new["filters"] != current_filters else no_update
    return new, filters_out, view_search(new), notice


@callback(
    Output("exec-from", "value"),
    Output("exec-to", "value"),
    Input("tz", "data"),
    State("exec-filters", "data"),
    State("exec-from", "value"),
    State("exec-to", "value"),
)
def show_custom_range(tz_name, filters, from_text, to_text):
    """Show a custom range from the link in the viewer's zone, once the zone is known."""
    tz = safe_tz(tz_name)
    filters = filters or {}
    new_from = _local_text(filters.get("from"), tz) if filters.get("from") else (from_text or "")
    new_to = _local_text(filters.get("to"), tz) if filters.get("to") else (to_text or "")
    return (new_from if new_from != from_text else no_update, new_to if new_to != to_text else no_update)


@callback(
    Output("exec-grid", "rowData"),
    Output("exec-page", "data"),
    Output("exec-prev", "disabled"),
    Output("exec-next", "disabled"),
    Output("exec-first", "disabled"),
    Output("exec-page-label", "children"),
    Output("exec-export", "href"),
    Output("exec-alert", "children"),
    Output("exec-alert", "is_open"),
    Output("exec-search-scope", "children"),
    Input("exec-view", "data"),
    Input("tz", "data"),
)
def load_page(view, tz_name):
    tz = safe_tz(tz_name)
    view = view or {}
    filters = jobs.filters_from_dict(view.get("filters"))
    sort = view.get("sort") if view.get("sort") in jobs.SORTS else jobs.DEFAULT_SORT
    engine = current().engine
    note = None
    try:
        try:
            page = jobs.list_jobs(engine, filters, tz, sort=sort, after=view.get("after"),
                                  before=view.get("before"))
        except ValueError as exc:
            note = str(exc)
            page = jobs.list_jobs(engine, filters, tz, sort=sort)
    except DatabaseUnavailable as exc:
        message = [html.Strong("Database unreachable. "), str(exc)]
        return (no_update,) * 6 + (export_href(view, tz), message, True, no_update)
    rows = ex.grid_rows(page["jobs"], tz)
    on_first = not (view.get("after") or view.get("before")) or note is not None or page["prev_cursor"] is None
    label = f"{jobs.SORTS[sort]} · {len(rows)} jobs on this page"
    older = jobs.older_search_query(filters, page.get("search"), tz)
    scope = ex.search_notice(page.get("search"), tz, executions_link(**older) if older else None)
    if note:
        return (rows, {"next": page["next_cursor"], "prev": page["prev_cursor"]}, page["prev_cursor"] is None,
                page["next_cursor"] is None, True, label, export_href(view, tz), note, True, scope)
    return (rows, {"next": page["next_cursor"], "prev": page["prev_cursor"]}, page["prev_cursor"] is None,
            page["next_cursor"] is None, on_first, label, export_href(view, tz), None, False, scope)


@callback(
    Output("exec-count", "children"),
    Output("exec-summary", "children"),
    Input("exec-filters", "data"),
    Input("tz", "data"),
)
def load_summary(filters_query, tz_name):
    tz = safe_tz(tz_name)
    filters = jobs.filters_from_dict(filters_query)
    engine = current().engine
    try:
        count = jobs.count_jobs(engine, filters, tz)
        summary = jobs.job_summary(engine, filters, tz)
    except DatabaseUnavailable as exc:
        return "", dbc.Alert(f"Summary unavailable: {exc}", color="danger", className="mb-0 py-2")
    return ex.count_text(count, tz), ex.summary_view(summary, filters.to_query(), tz)


@callback(
    Output("exec-workflow", "options"),
    Output("exec-robot", "options"),
    Output("exec-environment", "options"),
    Output("exec-error-type", "options"),
    Input("exec-options-load", "data"),
    State("exec-workflow", "value"),
    State("exec-robot", "value"),
    State("exec-environment", "value"),
    State("exec-error-type", "value"),
)
def load_options(_load, workflows, robot, environment, error_type):
    engine = current().engine
    try:
        wf = jobs.workflow_options(engine)
        robots = jobs.robot_options(engine)
        envs = jobs.environment_options(engine)
        etypes = jobs.error_type_options(engine)
    except DatabaseUnavailable:
        return no_update, no_update, no_update, no_update
    wf_opts = [{"label": f"{r.workflow_name} ({r.workflow_id})" if r.workflow_name != r.workflow_id else r.workflow_id,
                "value": r.workflow_id, "search": f"{r.workflow_name} {r.workflow_id}"} for r in wf.itertuples()]
    known = {o["value"] for o in wf_opts}
    wf_opts += [{"label": w, "value": w} for w in (workflows or []) if w not in known]
    robot_opts = [{"label": r.name if r.name == r.robot_id else f"{r.name} ({r.robot_id})", "value": r.robot_id}
                  for r in robots.itertuples()]
    if robot and robot not in {o["value"] for o in robot_opts}:
        robot_opts.append({"label": robot, "value": robot})
    env_opts = [{"label": e, "value": e} for e in envs]
    if environment and environment not in envs:
        env_opts.append({"label": environment, "value": environment})
    names = sorted(set(etypes["error_type"]) | set(ex.COMMON_ERROR_TYPES) | ({error_type} if error_type else set()))
    et_opts = [{"label": t, "value": t} for t in names]
    return wf_opts, robot_opts, env_opts, et_opts


@callback(
    Output("exec-nav", "href"),
    Input("exec-grid", "cellClicked"),
    Input("exec-grid", "selectedRows"),
    prevent_initial_call=True,
)
def open_job(cell, selected):
    """A click on a row, or Space on a focused row (which selects it), opens the job."""
    if ctx.triggered_id and "selectedRows" in (ctx.triggered[0].get("prop_id") or ""):
        job_id = jobs.parse_job_id((selected or [{}])[0].get("job_id")) if selected else None
    else:
        job_id = jobs.parse_job_id((cell or {}).get("rowId"))
    return job_link(job_id) if job_id else no_update


__all__ = ["layout", "view_query", "view_search", "export_href"]
