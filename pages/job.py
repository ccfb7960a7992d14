"""One job (/executions/<job_id>): header, timeline, error, steps, data, neighbouring runs.

A job id that is not a UUID is answered from the layout ("no such job") without touching the
database; a valid but unknown id gets the same page from the callback. While the job is pending
or running the page refreshes itself.
"""
from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, callback, dcc, html, no_update

from components import executions as ex
from data import jobs
from data.db import DatabaseUnavailable
from data.timeutil import safe_tz
from server.state import current


def _title(job_id=None, **_kw) -> str:
    job = jobs.parse_job_id(job_id) if isinstance(job_id, str) else None
    return f"Job {job[:8]} · Fleet Monitor" if job else "No such job · Fleet Monitor"


dash.register_page(__name__, path_template="/executions/<job_id>", name="Job", title=_title, nav=False)


def layout(job_id=None, **_query):
    canonical = jobs.parse_job_id(job_id) if isinstance(job_id, str) else None
    settings = current().settings
    # Not a UUID: answered here without the database (the callback leaves it as is).
    content = ex.not_found(job_id) if canonical is None else None
    return html.Div([
        dcc.Store(id="job-id", data=canonical),
        dcc.Interval(id="job-interval", interval=max(settings.refresh_interval_ms, 2000), disabled=True),
        dbc.Alert(id="job-alert", color="danger", is_open=False, className="sticky-alert"),
        dcc.Loading(html.Div(content, id="job-content", className="job-content"), type="dot", delay_show=500),
    ])


@callback(
    Output("job-content", "children"),
    Output("job-interval", "disabled"),
    Output("job-alert", "children"),
    Output("job-alert", "is_open"),
    Input("job-id", "data"),
    Input("tz", "data"),
    Input("job-interval", "n_intervals"),
)
def show_job(job_id, tz_name, _n):
    if job_id is None:
        return no_update, True, None, False
    tz = safe_tz(tz_name)
    try:
        story = jobs.job_story(current().engine, job_id)
    except DatabaseUnavailable as exc:
        return no_update, False, [html.Strong("Database unreachable. "), str(exc)], True
    if story is None:
        return ex.not_found(job_id), True, None, False
    live = story["status"] in ("pending", "running")
    return ex.job_page(story, tz), not live, None, False
