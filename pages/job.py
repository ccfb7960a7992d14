"""One job (/executions/<job_id>): header, timeline, error, steps, data, neighbouring runs.

A job id that is not a UUID is answered from the layout ("no such job") without touching the
database; a valid but unknown id gets the same page from the callback. While the job is pending
or running the page refreshes itself.
"""
from __future__ import annotations

import uuid

import dash
import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, State, callback, ctx, dcc, html, no_update
from flask import request

from components import executions as ex
from components.links import job_link
from components.tables import data_table
from data import actions, jobs
from data.db import DatabaseUnavailable
from data.timeutil import safe_tz
from server.auth import identity, require_role
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
        # Operator actions: buttons for what the job's status allows, their outcome, its audit trail.
        html.Div(id="job-actions"),
        html.Div(id="job-action-result", **{"aria-live": "polite"}),
        dcc.Store(id="job-action-state"),
        dcc.Store(id="job-refresh", data=0),
        dcc.Loading(html.Div(content, id="job-content", className="job-content"), type="dot", delay_show=500),
        html.Div(id="job-audit"),
    ])


@callback(
    Output("job-content", "children"),
    Output("job-interval", "disabled"),
    Output("job-alert", "children"),
    Output("job-alert", "is_open"),
    Output("job-actions", "children"),
    Output("job-action-state", "data"),
    Output("job-audit", "children"),
    Input("job-id", "data"),
    Input("tz", "data"),
    Input("job-interval", "n_intervals"),
    Input("job-refresh", "data"),
)
def show_job(job_id, tz_name, _n, _refresh):
    if job_id is None:
        return no_update, True, None, False, None, None, None
    tz = safe_tz(tz_name)
    engine = current().engine
    try:
        story = jobs.job_story(engine, job_id)
        audit = actions.audit_history(engine, "job", job_id) if story else None
    except DatabaseUnavailable as exc:
        return no_update, False, [html.Strong("Database unreachable. "), str(exc)], True, no_update, no_update, no_update
    if story is None:
        return ex.not_found(job_id), True, None, False, None, None, None
    live = story["status"] in ("pending", "running")
    who = identity()
    # A fresh key per rendering: a double click on the same buttons acts once.
    state = {"status": story["status"], "key": uuid.uuid4().hex}
    audit_card = dbc.Card([dbc.CardHeader("Operator actions on this job"), dbc.CardBody(data_table(
        audit, AUDIT_COLUMNS, tz, empty="No operator has acted on this job."))], className="mb-3")
    return (ex.job_page(story, tz), not live, None, False,
            ex.job_actions(story, bool(who and who.can("operator"))), state, audit_card)


AUDIT_COLUMNS = {"at": "Time", "username": "Who", "role": "Role", "action": "Action", "before_status": "Before",
                 "after_status": "After", "outcome": "Outcome", "message": "Message"}


@callback(
    Output("job-action-result", "children"),
    Output("job-refresh", "data"),
    Input({"type": "job-action", "action": ALL}, "submit_n_clicks"),
    State("job-id", "data"),
    State("job-action-state", "data"),
    State("job-refresh", "data"),
    prevent_initial_call=True,
)
def act(clicks, job_id, state, refresh):
    if not any(clicks or []) or not isinstance(ctx.triggered_id, dict) or not job_id:
        return no_update, no_update
    refusal = require_role("operator")  # the server checks the role on every action
    if refusal:
        return dbc.Alert(refusal, color="danger"), no_update
    who = identity()
    actor = actions.Actor(who.username, who.role, request.remote_addr or "")
    run = {"cancel": actions.cancel_job, "retry": actions.retry_job}[ctx.triggered_id["action"]]
    try:
        result = run(current().engine, job_id, actor, expected_status=(state or {}).get("status"),
                     idempotency_key=(state or {}).get("key"))
    except (actions.NotFound, actions.Forbidden, DatabaseUnavailable) as exc:
        return dbc.Alert(str(exc), color="danger"), no_update
    body = [result.message]
    if result.new_job_id:
        body = [result.message.split(" as ")[0] + " as ", dcc.Link(result.new_job_id, href=job_link(result.new_job_id)),
                "."]
    return dbc.Alert(body, color="success" if result.ok else "warning", dismissable=True), (refresh or 0) + 1
