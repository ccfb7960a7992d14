"""The page for an address that does not exist."""
import dash
from dash import dcc, html

dash.register_page(__name__, path="/404", name="Not found", title="Not found · Fleet Monitor", nav=False)


def layout(**_query):
    return html.Div([
        html.H1("Page not found", className="h3"),
        html.P("There is no page at this address. It may have been mistyped, or the link is out of date."),
        html.Div([dcc.Link("Fleet overview", href="/", className="btn btn-primary me-2"),
                  dcc.Link("Job history", href="/executions", className="btn btn-outline-secondary")]),
    ], className="not-found py-5 text-center")
