"""The frame around every page: navbar, time zone, theme, refresh control and page container."""
from __future__ import annotations

from zoneinfo import available_timezones

import dash
import dash_bootstrap_components as dbc
from dash import MATCH, Input, Output, State, dcc, html
from flask_jwt_extended import get_jwt

from config import Settings
from server.auth import identity

# Refresh choices for live pages, in milliseconds (0 = paused).
REFRESH_CHOICES = [(5000, "every 5 s"), (10000, "every 10 s"), (30000, "every 30 s"), (60000, "every minute"),
                   (0, "paused")]


def tz_options() -> list[dict]:
    zones = sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))
    return [{"label": "Browser time zone", "value": "browser"}, {"label": "UTC", "value": "UTC"}] + [
        {"label": z.replace("_", " "), "value": z} for z in zones]


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
            html.Span([html.Strong(who.username), f" · {who.role}"], className="small me-2 text-nowrap"),
            dcc.Input(type="hidden", name="csrf_token", value=csrf),
            html.Button("Sign out", type="submit", className="btn btn-outline-light btn-sm", id="logout-button"),
        ],
        action="/logout", method="POST", className="d-flex align-items-center user-menu",
    )


def navbar() -> dbc.Navbar:
    who = identity()
    links = [
        dbc.NavItem(dbc.NavLink(page["name"], href=page["relative_path"], active="partial"
                                if page["relative_path"] != "/" else "exact"))
        for page in dash.page_registry.values()
        if page.get("nav", True) and "<" not in page["path"]  # detail pages are reached by links
        and (not page.get("required_role") or (who and who.can(page["required_role"])))
    ]
    return dbc.Navbar(
        dbc.Container([
            dbc.NavbarBrand([html.Span("◉", className="brand-mark", **{"aria-hidden": "true"}), " Fleet Monitor"],
                            href="/"),
            dbc.NavbarToggler(id="nav-toggler"),
            dbc.Collapse([
                dbc.Nav(links, navbar=True, className="me-auto"),
                html.Div([
                    html.Label("Time zone", htmlFor="tz-choice", className="visually-hidden"),
                    dcc.Dropdown(id="tz-choice", options=tz_options(), clearable=False, persistence=True,
                                 persistence_type="local", value="browser", className="tz-dropdown",
                                 optionHeight=32),
                    html.Span(id="tz-label", className="navbar-text small tz-label", **{"aria-live": "polite"}),
                    html.Button(id="theme-toggle", className="btn btn-outline-light btn-sm text-nowrap",
                                **{"aria-label": "Switch between light and dark theme"}),
                    user_menu(),
                ], className="d-flex flex-wrap align-items-center gap-2 navbar-tools"),
            ], id="nav-collapse", navbar=True),
        ], fluid=True),
        color="dark", dark=True, className="mb-3 app-navbar", id="app-navbar",
    )


def shell_layout(settings: Settings):
    def layout():
        return html.Div([
            dcc.Location(id="url", refresh="callback-nav"),
            # The viewer's resolved time zone, remembered per browser; pages read this store.
            dcc.Store(id="tz", storage_type="local"),
            dcc.Store(id="theme", storage_type="local"),
            # False while the browser tab is hidden (assets/visibility.js): live pages pause.
            dcc.Store(id="page-visible", data=True),
            html.A("Skip to content", href="#page-content", className="visually-hidden-focusable skip-link"),
            navbar(),
            dbc.Container(dash.page_container, fluid=True, className="page-body", id="page-content"),
        ])

    return layout


def refresh_control(page: str, interval_ms: int) -> html.Div:
    """Auto-refresh choice for a live page, and the interval it drives.

    The interval's `disabled` prop belongs to the page's refresh callback (disabled while it runs,
    so refreshes never overlap); pausing works through `max_intervals` instead.
    """
    choices = [{"label": label, "value": ms} for ms, label in REFRESH_CHOICES]
    if interval_ms not in {ms for ms, _ in REFRESH_CHOICES}:
        choices.insert(0, {"label": f"every {interval_ms / 1000:g} s", "value": interval_ms})
    return html.Div([
        html.Span("Auto-refresh", className="small text-muted me-2"),
        dcc.Dropdown(id={"type": "refresh-choice", "page": page}, options=choices, value=interval_ms,
                     clearable=False, searchable=False, persistence=True, persistence_type="local",
                     className="refresh-dropdown"),
        html.Span(id={"type": "refresh-state", "page": page}, className="small text-muted ms-2"),
        dcc.Interval(id={"type": "live-interval", "page": page}, interval=interval_ms or 5000),
    ], className="d-flex align-items-center refresh-control")


def register_shell_callbacks(app: dash.Dash) -> None:
    app.clientside_callback(
        """function(choice, current) {
            var tz = choice;
            if (!tz || tz === 'browser') {
                try { tz = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'; } catch (e) { tz = 'UTC'; }
            }
            document.cookie = 'fleet_tz=' + encodeURIComponent(tz) + '; path=/; max-age=31536000; samesite=lax';
            return tz === current ? window.dash_clientside.no_update : tz;
        }""",
        Output("tz", "data"),
        Input("tz-choice", "value"),
        State("tz", "data"),
    )
    app.clientside_callback(
        """function(tz) {
            if (!tz) { return ''; }
            try {
                var parts = new Intl.DateTimeFormat('en-GB', {timeZone: tz, timeZoneName: 'shortOffset'})
                    .formatToParts(new Date());
                var off = parts.filter(function (p) { return p.type === 'timeZoneName'; })[0];
                return off ? off.value.replace('GMT', 'UTC') : '';
            } catch (e) { return ''; }
        }""",
        Output("tz-label", "children"),
        Input("tz", "data"),
    )
    # Theme: the attribute switches the CSS at once; a cookie tells the server which figure
    # template to use, and a reload redraws the figures in it.
    app.clientside_callback(
        """function(n, theme) {
            var current = theme || document.documentElement.getAttribute('data-bs-theme') || 'light';
            var next = n ? (current === 'dark' ? 'light' : 'dark') : current;
            document.documentElement.setAttribute('data-bs-theme', next);
            document.cookie = 'fleet_theme=' + next + '; path=/; max-age=31536000; samesite=lax';
            if (n) { setTimeout(function () { window.location.reload(); }, 50); }
            var label = next === 'dark' ? '☀ Light theme' : '☾ Dark theme';
            return [next, label];
        }""",
        Output("theme", "data"),
        Output("theme-toggle", "children"),
        Input("theme-toggle", "n_clicks"),
        State("theme", "data"),
    )
    app.clientside_callback(
        """function(path) {
            var bare = path === '/display' || (path || '').indexOf('/display/') === 0;
            document.body.classList.toggle('display-mode', bare);
            return [bare ? 'd-none' : 'mb-3 app-navbar', bare ? 'page-body display-body' : 'page-body'];
        }""",
        Output("app-navbar", "className"),
        Output("page-content", "className"),
        Input("url", "pathname"),
    )
    app.clientside_callback(
        "function(n, open) { return n ? !open : open; }",
        Output("nav-collapse", "is_open"),
        Input("nav-toggler", "n_clicks"),
        State("nav-collapse", "is_open"),
    )
    # Pause a live page when chosen, and while its tab is hidden; resume with the chosen interval.
    app.clientside_callback(
        """function(choice, visible, n) {
            var paused = !choice || visible === false;
            var note = !choice ? 'paused' : (visible === false ? 'paused while hidden' : '');
            return [choice || 5000, paused ? (n || 0) : -1, note];
        }""",
        Output({"type": "live-interval", "page": MATCH}, "interval"),
        Output({"type": "live-interval", "page": MATCH}, "max_intervals"),
        Output({"type": "refresh-state", "page": MATCH}, "children"),
        Input({"type": "refresh-choice", "page": MATCH}, "value"),
        Input("page-visible", "data"),
        State({"type": "live-interval", "page": MATCH}, "n_intervals"),
    )
