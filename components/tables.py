"""A plain, accessible HTML table for small frames (admin lists, audit trails)."""
from __future__ import annotations

from dash import html

from components import format as fmt


def data_table(frame, columns: dict, tz: str, extra=None, empty: str = "Nothing yet.") -> html.Table | html.Div:
    """`frame`'s columns (name -> heading); time columns (`at`, `*_at`) in the viewer's zone.

    `extra(row)` may add a last cell per row (for example an action button)."""
    if frame is None or frame.empty:
        return html.Div(empty, className="text-muted small")
    head = html.Thead(html.Tr([html.Th(h) for h in columns.values()] + ([html.Th("")] if extra else [])))
    rows = []
    for _, r in frame.iterrows():
        cells = [html.Td(fmt.local_time(r[c], tz, "%Y-%m-%d %H:%M:%S") if c == "at" or c.endswith("_at") else
                         ("—" if fmt.is_missing(r[c]) else str(r[c]))) for c in columns]
        rows.append(html.Tr(cells + ([html.Td(extra(r))] if extra else [])))
    return html.Table([head, html.Tbody(rows)], className="table table-sm align-middle")
