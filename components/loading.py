"""Loading state for slow parts of a page: a spinner at once, a hint after two seconds."""
from __future__ import annotations

import dash_bootstrap_components as dbc
from dash import dcc, html

SLOW_HINT = "Still working… a narrower filter (a shorter window, one workflow or robot) is faster."


def loading(*children, delay_ms: int = 400) -> dcc.Loading:
    """Wrap what a callback fills; the hint fades in by CSS after two seconds (assets/style.css)."""
    spinner = html.Div([dbc.Spinner(size="sm", color="secondary"), html.Div(SLOW_HINT, className="loading-hint")],
                       className="loading-box", role="status")
    return dcc.Loading(list(children), delay_show=delay_ms, custom_spinner=spinner,
                       overlay_style={"visibility": "visible", "opacity": .55})
