"""One visual language: status colours (Okabe-Ito, safe for colour-blind readers), symbols and
the Plotly templates for the light and dark themes."""
from __future__ import annotations

import copy

import flask

import plotly.graph_objects as go
import plotly.io as pio

# Robot live statuses. Every colour comes with a text label and a symbol (never colour alone).
ROBOT_STATUS_COLORS = {
    "idle": "#009E73",
    "busy": "#0072B2",
    "error": "#E69F00",
    "offline": "#D55E00",
    "maintenance": "#8C8C8C",
}
ROBOT_STATUS_SYMBOLS = {"idle": "●", "busy": "▶", "error": "▲", "offline": "✕", "maintenance": "⚙"}
ROBOT_STATUS_LABELS = {
    "idle": "Idle", "busy": "Busy", "error": "Error", "offline": "Offline", "maintenance": "Maintenance",
}

JOB_STATUS_COLORS = {
    "pending": "#CC79A7",
    "running": "#0072B2",
    "completed": "#009E73",
    "failed": "#D55E00",
    "cancelled": "#8C8C8C",
}
JOB_STATUS_SYMBOLS = {"pending": "◷", "running": "▶", "completed": "✓", "failed": "✕", "cancelled": "⊘"}

# A categorical sequence for workflows etc. (Okabe-Ito without black, then Tol's muted).
SEQUENCE = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
    "#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499",
]

FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'


def _template(paper: str, ink: str, grid: str) -> go.layout.Template:
    t = go.layout.Template()
    t.layout = go.Layout(
        font=dict(family=FONT, size=13, color=ink),
        paper_bgcolor=paper,
        plot_bgcolor=paper,
        colorway=SEQUENCE,
        margin=dict(l=56, r=16, t=40, b=44),
        hoverlabel=dict(font=dict(family=FONT)),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0),
        xaxis=dict(gridcolor=grid, linecolor=grid, zerolinecolor=grid, automargin=True),
        yaxis=dict(gridcolor=grid, linecolor=grid, zerolinecolor=grid, automargin=True, rangemode="tozero"),
    )
    return t


TEMPLATES = {
    "light": _template("#ffffff", "#212529", "#e3e6ea"),
    "dark": _template("#1b1f24", "#e9ecef", "#39414a"),
}
for _name, _tpl in TEMPLATES.items():
    pio.templates[f"fleet_{_name}"] = _tpl


def viewer_theme() -> str:
    """The theme the viewer chose (a cookie the theme toggle sets); light outside a request."""
    if flask.has_request_context():
        return "dark" if flask.request.cookies.get("fleet_theme") == "dark" else "light"
    return "light"


def template(theme: str | None = None) -> go.layout.Template:
    """The figure template of a theme; without one, of the viewer's theme."""
    return copy.deepcopy(TEMPLATES.get(theme or viewer_theme(), TEMPLATES["light"]))


def empty_figure(message: str, theme: str | None = None, height: int = 260) -> go.Figure:
    """A figure that says why there is nothing to draw instead of showing empty axes."""
    fig = go.Figure(layout=dict(template=template(theme), height=height))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(text=message, showarrow=False, font=dict(size=15), x=0.5, y=0.5, xref="paper", yref="paper")
    return fig
