"""Administration (/admin): display tokens for wall screens, users, and the audit trail. Admins only."""
from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, State, callback, ctx, dcc, html, no_update

from components import format as fmt
from components.tables import data_table
from data import actions, users
from data.db import DatabaseUnavailable
from data.timeutil import safe_tz
from server.auth import identity, require_role
from server.state import current

dash.register_page(__name__, path="/admin", name="Admin", title="Admin · Fleet Monitor", order=80,
                   required_role="admin")


def layout(**_query):
    refusal = require_role("admin")
    if refusal:
        return dbc.Alert(refusal, color="warning")
    return html.Div([
        html.H1("Administration", className="h3 mb-3"),
        dbc.Card([
            dbc.CardHeader("Display tokens (wall screens)"),
            dbc.CardBody([
                html.P("A display token opens /display (or the overview) read-only, without a sign-in form. "
                       "It is shown once; revoke it when a screen is retired.", className="text-muted small"),
                dbc.InputGroup([
                    dbc.Input(id="token-name", placeholder="Name, e.g. Ops room TV", maxlength=100),
                    dbc.Button("Create token", id="token-create", color="primary"),
                ], className="mb-2", style={"maxWidth": "520px"}),
                html.Div(id="token-created"),
                html.Div(id="token-list"),
            ]),
        ], className="mb-3"),
        dbc.Card([dbc.CardHeader("Users"), dbc.CardBody([
            html.P(["Manage users with the CLI: ", html.Code("flask --app app:server users --help")],
                   className="text-muted small"),
            html.Div(id="user-list")])], className="mb-3"),
        dbc.Card([dbc.CardHeader("Audit trail (latest 200 actions)"), dbc.CardBody(html.Div(id="audit-list"))]),
    ])


def _token_actions(row):
    if not fmt.is_missing(row["revoked_at"]):
        return html.Span("revoked", className="text-muted")
    return dbc.Button("Revoke", id={"type": "token-revoke", "id": int(row["id"])}, color="danger", size="sm",
                      outline=True)


@callback(
    Output("token-created", "children"),
    Output("token-list", "children"),
    Output("user-list", "children"),
    Output("audit-list", "children"),
    Output("token-name", "value"),
    Input("token-create", "n_clicks"),
    Input({"type": "token-revoke", "id": ALL}, "n_clicks"),
    State("token-name", "value"),
    State("tz", "data"),
)
def manage(_create, _revoke, name, tz_name):
    tz = safe_tz(tz_name)
    refusal = require_role("admin")  # checked again on every action, not only when drawing the page
    if refusal:
        return dbc.Alert(refusal, color="danger"), no_update, no_update, no_update, no_update
    engine = current().engine
    notice, clear_name = None, no_update
    try:
        if ctx.triggered_id == "token-create" and _create:
            token_id, token = users.create_display_token(engine, (name or "").strip(), identity().username)
            url = f"/display?token={token}"
            notice = dbc.Alert([html.Strong(f"Token {token_id} created. "), "Copy it now; it is not shown again: ",
                                html.Code(url, id="token-url")], color="success")
            clear_name = ""
        elif isinstance(ctx.triggered_id, dict) and any(_revoke or []):
            users.revoke_display_token(engine, ctx.triggered_id["id"])
            notice = dbc.Alert(f"Token {ctx.triggered_id['id']} revoked.", color="info")
        tokens = users.list_display_tokens(engine)
        user_frame = users.list_users(engine)
        audit = actions.audit_list(engine)
    except users.UserError as exc:
        return dbc.Alert(str(exc), color="warning"), no_update, no_update, no_update, no_update
    except DatabaseUnavailable as exc:
        return dbc.Alert(str(exc), color="danger"), no_update, no_update, no_update, no_update
    token_table = data_table(tokens, {"id": "Id", "name": "Name", "created_by": "Created by", "created_at": "Created",
                                  "last_used_at": "Last used", "revoked_at": "Revoked"}, tz, _token_actions)
    user_table = data_table(user_frame, {"username": "User", "role": "Role", "enabled": "Enabled",
                                     "last_login_at": "Last sign-in", "failed_attempts": "Failed attempts"}, tz)
    audit_table = data_table(audit, {"at": "Time", "username": "Who", "role": "Role", "action": "Action",
                                 "target_id": "Target", "before_status": "Before", "after_status": "After",
                                 "outcome": "Outcome", "client_addr": "Client"}, tz)
    return notice, token_table, user_table, audit_table, clear_name
