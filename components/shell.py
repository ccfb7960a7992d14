"""The frame around every page: navbar, time zone and the page container."""
from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, dcc, html

from flask_jwt_extended import get_jwt

from config import Settings
from server.auth import identity


def user_menu():
    """Who is signed in, and a sign-out form (posts the CSRF token as a field)."""
    who = identity()
    if who is None:
        return None
    try:
        csrf = get_jwt().get("csrf", "")
    except RuntimeError:
        csrf = ""
    return html.Form(
        [
            html.Span([html.Strong(who.username), f" · {who.role}"], className="small me-2"),
            dcc.Input(type="hidden", name="csrf_token", value=csrf),
            html.Button("Sign out", type="submit", className="btn btn-outline-light btn-sm", id="logout-button"),
        ],
        action="/logout", method="POST", className="d-flex align-items-center user-menu",
    )


def navbar() -> dbc.Navbar:
    links = [
        dbc.NavItem(dbc.NavLink(page["name"], href=page["relative_path"], active="exact"))
        for page in dash.page_registry.values()
        if page.get("nav", True) and "<" not in page["path"]  # detail pages are reached by links
    ]
    return dbc.Navbar(
        dbc.Container([
            dbc.NavbarBrand([html.Span("◉", className="brand-mark", **{"aria-hidden": "true"}), " Fleet Monitor"], href="/"),
            dbc.NavbarToggler(id="nav-toggler"),
            dbc.Collapse(dbc.Nav(links, navbar=True, className="me-auto"), id="nav-collapse", navbar=True),
            html.Span(id="tz-label", className="navbar-text small tz-label me-3"),
            user_menu(),
        ], fluid=True),
        color="dark", dark=True, className="mb-3 app-navbar",
    )


def shell_layout(settings: Settings):
    def layout():
        return html.Div([
            dcc.Location(id="url", refresh="callback-nav"),
            # The viewer's time zone: the browser's own unless chosen, remembered per browser.
            dcc.Store(id="tz", storage_type="local"),
            navbar(),
            dbc.Container(dash.page_container, fluid=True, className="page-body"),
        ])

    return layout


def register_shell_callbacks(app: dash.Dash) -> None:
    app.clientside_callback(
        """function(tz) {
            if (tz) { return window.dash_clientside.no_update; }
            try { return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'; }
            catch (e) { return 'UTC'; }
        }""",
        Output("tz", "data"),
        Input("tz", "modified_timestamp"),
        State("tz", "data"),
    )
    app.clientside_callback(
        "function(tz) { return tz ? 'Times in ' + tz : ''; }",
        Output("tz-label", "children"),
        Input("tz", "data"),
    )
    app.clientside_callback(
        "function(n, open) { return n ? !open : open; }",
        Output("nav-collapse", "is_open"),
        Input("nav-toggler", "n_clicks"),
        State("nav-collapse", "is_open"),
    )
