"""Builders for the Analytics page: KPI tiles, tables and charts from the data in
data/analytics.py. Pure functions of their inputs (no database), testable without a browser.

Every per-workflow mark carries the workflow id in ``customdata`` (charts) or as the row id
(grids), so a click can filter the page to that workflow.
"""
from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo

import dash_ag_grid as dag
import dash_bootstrap_components as dbc
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from dash import dcc, html

from components import format as fmt
from components.links import executions_link
from components.theme import JOB_STATUS_COLORS, SEQUENCE, empty_figure, template

NO_JOBS = "No jobs in this window"
WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]

# Efficiency components: name, label, colour (Okabe-Ito; the legend and hover say the name).
COMPONENTS = [
    ("success", "Success rate × 0.40", "#0072B2"),
    ("duration", "Duration × 0.30", "#E69F00"),
    ("healing", "Healing × 0.15", "#56B4E9"),
    ("error_diversity", "Error diversity × 0.15", "#CC79A7"),
]
WORSE = "#D55E00"
BETTER = "#009E73"
NEUTRAL = "#0072B2"
BASELINE = "#8C8C8C"


# ---------------------------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------------------------

def missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NaT or v is pd.NA


def ms_text(ms) -> str:
    """A duration in milliseconds for people: 850.2 ms, 12.35 s, 3 min 05 s."""
    if missing(ms):
        return "—"
    ms = float(ms)
    if abs(ms) < 1000:
        return f"{ms:.1f} ms"
    if abs(ms) < 60_000:
        return f"{ms / 1000:.2f} s"
    return fmt.duration(ms / 1000)


def ms_exact(ms) -> str:
    """Full precision for tooltips and tables: 12,345.678 ms."""
    return "—" if missing(ms) else f"{float(ms):,.3f} ms"


def seconds_text(ms) -> str:
    """Seconds with millisecond precision (tables): 12.346 s."""
    return "—" if missing(ms) else f"{float(ms) / 1000:,.3f} s"


def pct_text(fraction, digits: int = 1) -> str:
    return fmt.percent(None if missing(fraction) else float(fraction), digits)


def change_text(pct) -> str:
    if missing(pct):
        return "—"
    arrow = "▲" if pct > 0 else "▼" if pct < 0 else "="
    return f"{arrow} {pct:+.1f} %"


def num_text(n, digits: int = 0) -> str:
    if missing(n):
        return "—"
    return f"{float(n):,.{digits}f}"


def local_x(series: pd.Series, tz: str) -> pd.Series:
    """UTC instants as local wall-clock times (naive), for chart axes in the viewer's zone."""
    return pd.to_datetime(series, utc=True).dt.tz_convert(tz).dt.tz_localize(None)


def local_labels(series: pd.Series, tz: str, bucket: str) -> list[str]:
    """Bucket labels with the UTC offset (so the repeated autumn hour is not ambiguous)."""
    pattern = {"hour": "%a %Y-%m-%d %H:%M", "day": "%a %Y-%m-%d", "week": "week of %Y-%m-%d"}[bucket]
    out = []
    for ts in pd.to_datetime(series, utc=True):
        local = ts.tz_convert(tz)
        offset = local.strftime("%z")
        out.append(f"{local.strftime(pattern)} (UTC{offset[:3]}:{offset[3:]})")
    return out


def ink(theme=None) -> str:
    """The theme's text colour, for marks that must read on light and dark backgrounds."""
    return template(theme).layout.font.color or "#212529"


def _layout(fig: go.Figure, theme, height: int, **kw) -> go.Figure:
    fig.update_layout(template=template(theme), height=height, **kw)
    return fig


def graph_config(filename: str) -> dict:
    """dcc.Graph config: the modebar's camera saves a PNG (drawn in the browser: works offline)."""
    return {
        "displaylogo": False,
        "toImageButtonOptions": {"format": "png", "filename": filename, "scale": 2},
        "modeBarButtonsToRemove": ["lasso2d", "select2d", "autoScale2d"],
    }


# ---------------------------------------------------------------------------------------------
# 1. KPIs and percentiles
# ---------------------------------------------------------------------------------------------

def _tile(label: str, value: str, note: str = "", title: str = "", tone: str = "") -> html.Div:
    return html.Div([
        html.Div(label, className="kpi-label"),
        html.Div(value, className="kpi-value", title=title or None),
        html.Div(note, className="kpi-note") if note else None,
    ], className=f"kpi-tile kpi-{tone}" if tone else "kpi-tile", role="group", **{"aria-label": label})


def kpi_tiles(fleet: dict, success_target: float) -> list:
    """Tiles from duration_percentiles()['fleet']."""
    rate = fleet.get("success_rate")
    tone = "" if missing(rate) else ("good" if rate >= success_target else "bad")
    tiles = [
        _tile("Jobs", fmt.count(fleet.get("total_jobs")),
              f'{fmt.count(fleet.get("completed_jobs"))} completed · {fmt.count(fleet.get("failed_jobs"))} failed'),
        _tile("Success rate", pct_text(rate, 2), f"target {pct_text(success_target)}"
              + ("" if missing(rate) else (" · met" if rate >= success_target else " · missed")), tone=tone),
    ]
    for p in (50, 90, 95, 99):
        v = fleet.get(f"p{p}_duration_ms")
        tiles.append(_tile(f"P{p} duration", ms_text(v), ms_exact(v), title=ms_exact(v)))
    for p in (50, 95):
        v = fleet.get(f"p{p}_queue_wait_ms")
        tiles.append(_tile(f"P{p} queue wait", ms_text(v), ms_exact(v), title=ms_exact(v)))
    return tiles


def _text_col(col_id: str, header: str, text_field: str, **kw) -> dict:
    """A column that sorts on the raw value and shows a prepared text."""
    return dict(colId=col_id, field=col_id, headerName=header,
                valueFormatter={"function": f"params.data ? params.data.{text_field} : ''"},
                tooltipField=text_field, type="rightAligned", **kw)


def _workflow_col(**kw) -> dict:
    return dict(colId="workflow_name", field="workflow_name", headerName="Workflow", pinned="left",
                minWidth=170, cellClass="analytics-wf-cell", tooltipField="workflow_id", **kw)


def grid(grid_id: str, column_defs: list[dict], rows: list[dict], height: str = "360px", **kw) -> dag.AgGrid:
    """A sortable AG Grid whose rows are keyed by ``row_id`` (the workflow id)."""
    return dag.AgGrid(
        id=grid_id,
        columnDefs=column_defs,
        rowData=rows,
        getRowId="params.data.row_id",
        defaultColDef={"sortable": True, "resizable": True, "filter": False, "minWidth": 105,
                       "suppressHeaderMenuButton": True, "wrapHeaderText": True, "autoHeaderHeight": True},
        columnSize="responsiveSizeToFit",
        dashGridOptions={"animateRows": False, "tooltipShowDelay": 300, "enableCellTextSelection": True,
                         "ensureDomOrder": True, "rowHeight": 34,
                         "localeText": {"noRowsToShow": NO_JOBS}},
        className="analytics-grid",
        style={"height": height, "width": "100%"},
        **kw,
    )


def percentile_rows(workflows: pd.DataFrame) -> list[dict]:
    rows = []
    for r in workflows.to_dict("records"):
        row = {"row_id": r["workflow_id"], "workflow_id": r["workflow_id"], "workflow_name": r["workflow_name"],
               "total_jobs": r["total_jobs"], "timed_jobs": r["timed_jobs"],
               "success_rate": r["success_rate"], "success_rate_text": pct_text(r["success_rate"], 2)}
        for p in (50, 90, 95, 99):
            for kind in ("duration", "queue_wait"):
                key = f"p{p}_{kind}_ms"
                row[key] = r[key]
                row[f"{key}_text"] = seconds_text(r[key])
        rows.append(row)
    return rows


def percentile_columns() -> list[dict]:
    cols = [_workflow_col(),
            dict(colId="total_jobs", field="total_jobs", headerName="Jobs", type="rightAligned", maxWidth=110),
            dict(colId="timed_jobs", field="timed_jobs", headerName="Timed", type="rightAligned", maxWidth=110,
                 headerTooltip="Jobs the duration figures cover"),
            _text_col("success_rate", "Success", "success_rate_text", maxWidth=120)]
    for p in (50, 90, 95, 99):
        cols.append(_text_col(f"p{p}_duration_ms", f"P{p} duration", f"p{p}_duration_ms_text"))
    for p in (50, 95):
        cols.append(_text_col(f"p{p}_queue_wait_ms", f"P{p} wait", f"p{p}_queue_wait_ms_text"))
    return cols


# ---------------------------------------------------------------------------------------------
# 2. Time series
# ---------------------------------------------------------------------------------------------

def time_series_figure(series: pd.DataFrame, queue: pd.DataFrame | None, tz: str, bucket: str,
                       theme: str | None = None) -> go.Figure:
    """Three panels sharing the time axis: jobs completed/failed per bucket with the success
    rate; P50/P95 duration; queue depth at each bucket start."""
    if series.empty or series["total_jobs"].sum() == 0:
        return empty_figure(NO_JOBS, theme, height=520)
    x = local_x(series["bucket"], tz)
    labels = local_labels(series["bucket"], tz, bucket)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.42, 0.33, 0.25],
                        specs=[[{"secondary_y": True}], [{}], [{}]])
    for status in ("completed", "failed"):
        fig.add_trace(go.Bar(
            x=x, y=series[status], name=f"{status.capitalize()} jobs", marker_color=JOB_STATUS_COLORS[status],
            customdata=labels, hovertemplate="%{customdata}<br>%{y:,} " + status + "<extra></extra>",
            legendgroup="jobs"), row=1, col=1)
    fig.add_trace(go.Scatter(
        x=x, y=series["success_rate"] * 100, name="Success rate", mode="lines+markers",
        line=dict(color=ink(theme), width=2), marker=dict(symbol="diamond", size=6), connectgaps=False,
        customdata=labels, hovertemplate="%{customdata}<br>success %{y:.2f} %<extra></extra>"),
        row=1, col=1, secondary_y=True)
    for p, dash_style, color in (("p50", "solid", "#0072B2"), ("p95", "dash", "#E69F00")):
        col = f"{p}_duration_ms"
        fig.add_trace(go.Scatter(
            x=x, y=series[col] / 1000, name=f"{p.upper()} duration", mode="lines+markers",
            line=dict(color=color, width=2, dash=dash_style), marker=dict(size=5), connectgaps=False,
            customdata=np.column_stack([labels, [ms_exact(v) for v in series[col]]]),
            hovertemplate="%{customdata[0]}<br>" + p.upper() + " %{customdata[1]}<extra></extra>"), row=2, col=1)
    if queue is not None and not queue.empty:
        fig.add_trace(go.Scatter(
            x=local_x(queue["at"], tz), y=queue["queue_depth"], name="Queue depth", mode="lines",
            line=dict(color=JOB_STATUS_COLORS["pending"], width=2, shape="hv"), fill="tozeroy",
            customdata=local_labels(queue["at"], tz, "hour"),
            hovertemplate="%{customdata}<br>%{y:,} waiting<extra></extra>"), row=3, col=1)
    fig.update_layout(barmode="stack", bargap=0.15, hovermode="x unified")
    fig.update_yaxes(title_text="jobs per " + bucket, row=1, col=1, secondary_y=False)
    rates = series["success_rate"].dropna() * 100
    low = max(0.0, math.floor(float(rates.min()) / 5) * 5 - 5) if not rates.empty else 0.0
    fig.update_yaxes(title_text="success %", range=[low, 100.5], row=1, col=1, secondary_y=True, showgrid=False,
                     tickmode="auto", nticks=5)
    fig.update_yaxes(title_text="duration (s)", row=2, col=1)
    fig.update_yaxes(title_text="waiting jobs", row=3, col=1)
    fig.update_xaxes(title_text=f"bucket start ({tz})", row=3, col=1)
    return _layout(fig, theme, 520, margin=dict(l=60, r=60, t=36, b=44))


# ---------------------------------------------------------------------------------------------
# 3. Weekly throughput
# ---------------------------------------------------------------------------------------------

WEEKLY_HEADERS = {
    "workflow_name": "Workflow", "this_week": "This week (so far)", "last_week_to_date": "Last week, same point",
    "pace_change_pct": "Pace vs last week", "last_week": "Last week", "avg_4_weeks": "4 weeks before (avg)",
    "change_pct": "Last week vs 4-week avg", "success_rate_this_week": "Success this week",
    "success_rate_last_week": "Success last week", "p95_this_week_ms": "P95 this week",
    "p95_last_week_ms": "P95 last week",
}


def weekly_rows(weekly: pd.DataFrame) -> list[dict]:
    rows = []
    for r in weekly.to_dict("records"):
        row = {k: (None if missing(r.get(k)) else r.get(k)) for k in WEEKLY_HEADERS}
        row.update(
            row_id=r["workflow_id"] if not r["is_total"] else "__all__",
            workflow_id=None if r["is_total"] else r["workflow_id"], is_total=bool(r["is_total"]),
            avg_4_weeks_text=num_text(r["avg_4_weeks"], 2),
            pace_change_pct_text=change_text(r["pace_change_pct"]),
            change_pct_text=change_text(r["change_pct"]),
            success_rate_this_week_text=pct_text(r["success_rate_this_week"], 2),
            success_rate_last_week_text=pct_text(r["success_rate_last_week"], 2),
            p95_this_week_ms_text=seconds_text(r["p95_this_week_ms"]),
            p95_last_week_ms_text=seconds_text(r["p95_last_week_ms"]),
        )
        rows.append(row)
    return rows


def weekly_columns() -> list[dict]:
    change_rules = {"analytics-up": "params.value > 0", "analytics-down": "params.value < 0"}
    return [
        _workflow_col(),
        dict(colId="this_week", field="this_week", headerName=WEEKLY_HEADERS["this_week"], type="rightAligned"),
        dict(colId="last_week_to_date", field="last_week_to_date", headerName=WEEKLY_HEADERS["last_week_to_date"],
             type="rightAligned"),
        _text_col("pace_change_pct", WEEKLY_HEADERS["pace_change_pct"], "pace_change_pct_text",
                  cellClassRules=change_rules),
        dict(colId="last_week", field="last_week", headerName="Last week", type="rightAligned"),
        _text_col("avg_4_weeks", WEEKLY_HEADERS["avg_4_weeks"], "avg_4_weeks_text"),
        _text_col("change_pct", WEEKLY_HEADERS["change_pct"], "change_pct_text", cellClassRules=change_rules),
        _text_col("success_rate_this_week", WEEKLY_HEADERS["success_rate_this_week"], "success_rate_this_week_text"),
        _text_col("success_rate_last_week", WEEKLY_HEADERS["success_rate_last_week"], "success_rate_last_week_text"),
        _text_col("p95_this_week_ms", WEEKLY_HEADERS["p95_this_week_ms"], "p95_this_week_ms_text"),
        _text_col("p95_last_week_ms", WEEKLY_HEADERS["p95_last_week_ms"], "p95_last_week_ms_text"),
    ]


def weekly_csv(rows: list[dict]) -> str:
    """The weekly table as CSV (raw numbers; durations in ms, rates as fractions)."""
    cols = ["workflow_id", *WEEKLY_HEADERS]
    frame = pd.DataFrame(rows or [], columns=cols)
    frame = frame.rename(columns={"p95_this_week_ms": "p95_this_week_ms", "p95_last_week_ms": "p95_last_week_ms"})
    return frame.to_csv(index=False)


def weekly_figure(weekly: pd.DataFrame, theme: str | None = None, limit: int = 15) -> go.Figure:
    """Finished jobs per workflow: the 4-week average, last week and this week so far."""
    part = weekly[~weekly["is_total"]].head(limit) if not weekly.empty else weekly
    if part.empty:
        return empty_figure("No finished jobs in the last six weeks", theme, height=320)
    part = part.iloc[::-1]  # busiest at the top
    fig = go.Figure()
    for col, name, color in (("avg_4_weeks", "4 weeks before (avg)", BASELINE),
                             ("last_week", "Last week", "#0072B2"),
                             ("this_week", "This week so far", "#E69F00")):
        fig.add_bar(y=part["workflow_name"], x=part[col], name=name, orientation="h", marker_color=color,
                    customdata=part["workflow_id"],
                    hovertemplate="%{y}<br>" + name + ": %{x:,.2f} jobs<extra></extra>")
    height = max(300, 60 + 26 * 3 * len(part) // 2)
    fig.update_layout(barmode="group", xaxis_title="finished jobs (completed + failed)",
                      yaxis=dict(automargin=True), bargap=0.25)
    return _layout(fig, theme, height)


# ---------------------------------------------------------------------------------------------
# 4. Efficiency
# ---------------------------------------------------------------------------------------------

def efficiency_figure(eff: pd.DataFrame, theme: str | None = None, limit: int = 25) -> go.Figure:
    """Ranked workflows, each bar the sum of the four weighted components (= the score)."""
    if eff.empty:
        return empty_figure("No finished jobs in this window", theme, height=300)
    part = eff.head(limit).iloc[::-1]
    labels = [f"#{r} {n}" for r, n in zip(part["rank"], part["workflow_name"])]
    fig = go.Figure()
    for name, label, color in COMPONENTS:
        fig.add_bar(
            y=labels, x=part[f"{name}_points"].fillna(0), name=label, orientation="h", marker_color=color,
            customdata=np.column_stack([part["workflow_id"], part[f"{name}_score"].map(lambda v: num_text(v, 1))]),
            hovertemplate="%{y}<br>" + label + ": %{x:.1f} points (component %{customdata[1]} / 100)<extra></extra>")
    fig.add_trace(go.Scatter(
        y=labels, x=part["efficiency_score"].fillna(0), mode="text", showlegend=False,
        text=[num_text(v, 1) for v in part["efficiency_score"]], textposition="middle right",
        customdata=part["workflow_id"], hoverinfo="skip", cliponaxis=False))
    fig.update_layout(barmode="stack", xaxis=dict(title="efficiency score (0–100)", range=[0, 108]),
                      yaxis=dict(automargin=True), bargap=0.3)
    return _layout(fig, theme, max(300, 70 + 28 * len(part)))


def efficiency_rows(eff: pd.DataFrame) -> list[dict]:
    rows = []
    for r in eff.to_dict("records"):
        rows.append({
            "row_id": r["workflow_id"], "workflow_id": r["workflow_id"], "workflow_name": r["workflow_name"],
            "rank": r["rank"], "efficiency_score": r["efficiency_score"],
            "efficiency_score_text": num_text(r["efficiency_score"], 1) if not missing(r["efficiency_score"])
            else "no timed run",
            "executions": r["executions"],
            "success_score": r["success_score"], "success_score_text": num_text(r["success_score"], 1),
            "duration_score": r["duration_score"],
            "duration_score_text": f'{num_text(r["duration_score"], 1)} (P95 {seconds_text(r["p95_duration_ms"])}'
                                   f' vs {r["p95_target_s"]:g} s)',
            "healing_score": r["healing_score"],
            "healing_score_text": f'{num_text(r["healing_score"], 1)} ({num_text(r["healing_attempts_per_execution"], 2)}'
                                  " per run)",
            "error_diversity_score": r["error_diversity_score"],
            "error_diversity_score_text": f'{num_text(r["error_diversity_score"])} ({r["error_types"]} types)',
        })
    return rows


def efficiency_columns() -> list[dict]:
    return [
        dict(colId="rank", field="rank", headerName="#", maxWidth=70, type="rightAligned", sort="asc"),
        _workflow_col(),
        _text_col("efficiency_score", "Score", "efficiency_score_text", maxWidth=120),
        dict(colId="executions", field="executions", headerName="Runs", type="rightAligned", maxWidth=110),
        _text_col("success_score", "Success (×0.40)", "success_score_text"),
        _text_col("duration_score", "Duration (×0.30)", "duration_score_text", minWidth=200),
        _text_col("healing_score", "Healing (×0.15)", "healing_score_text", minWidth=150),
        _text_col("error_diversity_score", "Error diversity (×0.15)", "error_diversity_score_text", minWidth=150),
    ]


# ---------------------------------------------------------------------------------------------
# 5. Distributions
# ---------------------------------------------------------------------------------------------

def histogram_figure(hist: pd.DataFrame, percentiles: dict | None, log: bool, theme: str | None = None) -> go.Figure:
    """The SQL bins as a stacked step histogram by status, with the P50/P90/P95/P99 lines.

    Drawn as step areas over the bin edges (not bars) so each bin covers exactly its
    [start, end) on a linear and on a log axis alike."""
    if hist.empty or hist["jobs"].sum() == 0:
        return empty_figure(NO_JOBS, theme, height=340)
    bins = hist.drop_duplicates("bin").set_index("bin")[["bin_start_ms", "bin_end_ms"]].sort_index()
    edges = list(bins["bin_start_ms"] / 1000) + [float(bins["bin_end_ms"].iloc[-1]) / 1000]
    ranges = [f"{ms_text(a)} – {ms_text(b)}" for a, b in zip(bins["bin_start_ms"], bins["bin_end_ms"])]
    fig = go.Figure()
    total = pd.Series(0, index=bins.index)
    for status in ("completed", "failed", "cancelled"):
        counts = hist[hist["status"] == status].set_index("bin")["jobs"].reindex(bins.index, fill_value=0)
        if counts.sum() == 0:
            continue
        total = total + counts
        y = list(counts) + [int(counts.iloc[-1])]
        fig.add_trace(go.Scatter(
            x=edges, y=y, name=status.capitalize(), mode="lines", stackgroup="hist", line=dict(shape="hv", width=1),
            fillcolor=JOB_STATUS_COLORS[status], line_color=JOB_STATUS_COLORS[status],
            customdata=ranges + [ranges[-1]], hovertemplate="%{customdata}<br>%{y:,} " + status + "<extra></extra>"))
    top = float(total.max()) * 1.08
    for p, dash_style in ((50, "solid"), (90, "dot"), (95, "dash"), (99, "longdash")):
        v = (percentiles or {}).get(f"p{p}_duration_ms")
        if missing(v):
            continue
        x = v / 1000
        fig.add_trace(go.Scatter(x=[x, x], y=[0, top], mode="lines", showlegend=False, hoverinfo="skip",
                                 line=dict(color=ink(theme), width=1.5, dash=dash_style)))
        # Annotations on a log axis take log10 positions.
        fig.add_annotation(x=math.log10(x) if log and x > 0 else x, y=top, text=f"P{p} {ms_text(v)}", textangle=-90,
                           showarrow=False, font=dict(size=11), yanchor="top", xanchor="right")
    fig.update_layout(yaxis=dict(title="jobs per bin", range=[0, top]), hovermode="x unified",
                      xaxis=dict(title="duration (s)" + (", log scale" if log else ""), type="log" if log else "linear"))
    p99 = (percentiles or {}).get("p99_duration_ms")
    if not log and not missing(p99) and edges[-1] > 2 * p99 / 1000:
        # A long tail squeezes every bin to the left: show up to 1.5 × P99 (zoom out for the rest).
        beyond = int(hist.loc[hist["bin_start_ms"] >= 1.5 * p99, "jobs"].sum())
        fig.update_xaxes(range=[max(0.0, edges[0]), 1.5 * p99 / 1000])
        fig.add_annotation(text=f"axis cut at 1.5 × P99 ({beyond:,} jobs beyond; double-click to see all)",
                           xref="paper", yref="paper", x=1, y=1.0, xanchor="right", yanchor="bottom",
                           showarrow=False, font=dict(size=11))
    return _layout(fig, theme, 340)


def box_figure(box: pd.DataFrame, log: bool, theme: str | None = None) -> go.Figure:
    """One box per workflow from SQL statistics (Tukey whiskers), with P90/P95/P99 marked."""
    if box.empty:
        return empty_figure(NO_JOBS, theme, height=340)
    part = box.iloc[::-1]
    names = [str(n) for n in part["workflow_name"]]
    fig = go.Figure(go.Box(
        y=names, q1=part["q1_ms"] / 1000, median=part["median_ms"] / 1000, q3=part["q3_ms"] / 1000,
        lowerfence=part["lowerfence_ms"] / 1000, upperfence=part["upperfence_ms"] / 1000,
        orientation="h", name="Quartiles and whiskers (1.5 × IQR)", marker_color=NEUTRAL, fillcolor="rgba(0,114,178,.25)",
        boxpoints=False, hoverinfo="x"))
    for p, symbol, color in ((90, "line-ns", "#E69F00"), (95, "diamond", "#D55E00"), (99, "x", ink(theme))):
        col = f"p{p}_ms"
        fig.add_trace(go.Scatter(
            y=names, x=part[col] / 1000, mode="markers", name=f"P{p}",
            marker=dict(symbol=symbol, size=10, color=color, line=dict(width=2, color=color)),
            customdata=np.column_stack([part["workflow_id"], [ms_exact(v) for v in part[col]], part["timed_jobs"]]),
            hovertemplate="%{y}<br>P" + str(p) + " %{customdata[1]}<br>%{customdata[2]} timed jobs<extra></extra>"))
    fig.update_layout(xaxis=dict(title="duration (s)" + (", log scale" if log else ""), type="log" if log else "linear"),
                      yaxis=dict(automargin=True), showlegend=True)
    return _layout(fig, theme, max(320, 80 + 34 * len(part)))


# ---------------------------------------------------------------------------------------------
# 6. Errors
# ---------------------------------------------------------------------------------------------

def error_colors(types_by_count: list[str]) -> dict[str, str]:
    """A stable colour per error type: the order of total failures (most first)."""
    return {t: SEQUENCE[i % len(SEQUENCE)] for i, t in enumerate(types_by_count)}


def _type_order(frame: pd.DataFrame, top: int = 8) -> tuple[list[str], pd.DataFrame]:
    totals = frame.groupby("error_type")["failures"].sum().sort_values(ascending=False, kind="stable")
    totals = totals.reindex(sorted(totals.index, key=lambda t: (-totals[t], t)))
    keep = list(totals.index[:top])
    frame = frame.copy()
    frame["error_type"] = [t if t in keep else "Other types" for t in frame["error_type"]]
    if len(totals) > top:
        keep.append("Other types")
    return keep, frame


def errors_time_figure(errs: pd.DataFrame, tz: str, bucket: str, theme: str | None = None) -> go.Figure:
    if errs.empty:
        return empty_figure("No failed jobs in this window", theme, height=320)
    order, errs = _type_order(errs)
    colors = error_colors(order)
    errs = errs.groupby(["bucket", "error_type"], as_index=False)["failures"].sum()
    fig = go.Figure()
    for t in order:
        part = errs[errs["error_type"] == t]
        fig.add_bar(x=local_x(part["bucket"], tz), y=part["failures"], name=t, marker_color=colors[t],
                    customdata=local_labels(part["bucket"], tz, bucket),
                    hovertemplate="%{customdata}<br>" + t + ": %{y:,}<extra></extra>")
    fig.update_layout(barmode="stack", yaxis_title=f"failed jobs per {bucket}", xaxis_title=f"bucket start ({tz})")
    return _layout(fig, theme, 320)


def errors_workflow_figure(errs: pd.DataFrame, theme: str | None = None, limit: int = 15) -> go.Figure:
    if errs.empty:
        return empty_figure("No failed jobs in this window", theme, height=320)
    order, errs = _type_order(errs)
    colors = error_colors(order)
    totals = errs.groupby("workflow_id")["failures"].sum().sort_values(ascending=False).head(limit)
    names = errs.drop_duplicates("workflow_id").set_index("workflow_id")["workflow_name"]
    wf_order = list(totals.index[::-1])
    fig = go.Figure()
    for t in order:
        part = errs[errs["error_type"] == t].groupby("workflow_id")["failures"].sum().reindex(wf_order)
        fig.add_bar(y=[names[w] for w in wf_order], x=part.fillna(0), name=t, orientation="h", marker_color=colors[t],
                    customdata=wf_order, hovertemplate="%{y}<br>" + t + ": %{x:,}<extra></extra>")
    fig.update_layout(barmode="stack", xaxis_title="failed jobs", yaxis=dict(automargin=True))
    return _layout(fig, theme, max(300, 80 + 28 * len(wf_order)))


def top_errors_table(top: pd.DataFrame, link_filters: dict, tz: str) -> html.Div:
    """The most frequent messages, each with a link to the failed jobs showing it."""
    if top.empty:
        return html.Div("No failed jobs with an error message in this window.", className="text-muted")
    body = []
    for r in top.to_dict("records"):
        msg = str(r["error_message"])
        workflow = [r["workflow_id"]] if isinstance(r.get("workflow_id"), str) else link_filters.get("workflow")
        href = executions_link(**{**link_filters, "status": "failed", "error_type": r["error_type"],
                                  "q": msg[:100], "workflow": workflow})
        body.append(html.Tr([
            html.Td(f'{r["failures"]:,}', className="text-end text-nowrap"),
            html.Td(html.Span(r["error_type"], className="analytics-error-type")),
            html.Td(html.Span(msg if len(msg) <= 160 else msg[:159] + "…", title=msg), className="analytics-message"),
            html.Td(f'{r["workflows"]}', className="text-end"),
            html.Td(fmt.local_time(r["last_seen"], tz, "%Y-%m-%d %H:%M"), className="text-nowrap small"),
            html.Td(dcc.Link("jobs →", href=href, className="text-nowrap")),
        ]))
    head = html.Thead(html.Tr([html.Th("Failures", className="text-end"), html.Th("Type"), html.Th("Message"),
                               html.Th("Workflows", className="text-end"), html.Th("Last seen"), html.Th("")]))
    return html.Div(html.Table([head, html.Tbody(body)], className="table table-sm analytics-table mb-0"),
                    className="table-responsive")


# ---------------------------------------------------------------------------------------------
# 7. SLA
# ---------------------------------------------------------------------------------------------

def sla_figure(sla: pd.DataFrame, theme: str | None = None, limit: int = 20) -> go.Figure:
    """Success rate and P95 per workflow against their targets; breaches in the warning colour
    with a ✕, met targets with a ✓ (text as well as colour)."""
    if sla.empty:
        return empty_figure("No finished jobs in this window", theme, height=300)
    part = sla.head(limit).iloc[::-1]
    names = list(part["workflow_name"].astype(str))
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=("Success rate vs target", "P95 duration vs target"))
    s_colors = [WORSE if b else BETTER for b in part["success_breach"]]
    fig.add_trace(go.Bar(
        y=names, x=part["success_rate"] * 100, orientation="h", marker_color=s_colors, showlegend=False,
        text=[("✕ " if b else "✓ ") + pct_text(v, 2) for b, v in zip(part["success_breach"], part["success_rate"])],
        textposition="inside", insidetextanchor="end", customdata=part["workflow_id"],
        hovertemplate="%{y}<br>success %{x:.2f} %<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(
        y=names, x=part["success_target"] * 100, mode="markers", name="Target",
        marker=dict(symbol="line-ns", size=22, line=dict(width=3, color=ink(theme))), customdata=part["workflow_id"],
        hovertemplate="%{y}<br>target %{x:.2f} %<extra></extra>"), row=1, col=1)
    p_colors = [WORSE if b else BETTER for b in part["p95_breach"]]
    fig.add_trace(go.Bar(
        y=names, x=part["p95_duration_ms"] / 1000, orientation="h", marker_color=p_colors, showlegend=False,
        text=[("✕ " if b else "✓ ") + ms_text(v) for b, v in zip(part["p95_breach"], part["p95_duration_ms"])],
        textposition="inside", insidetextanchor="end", customdata=part["workflow_id"],
        hovertemplate="%{y}<br>P95 %{x:.3f} s<extra></extra>"), row=1, col=2)
    fig.add_trace(go.Scatter(
        y=names, x=part["p95_target_ms"] / 1000, mode="markers", name="Target ", showlegend=False,
        marker=dict(symbol="line-ns", size=22, line=dict(width=3, color=ink(theme))), customdata=part["workflow_id"],
        hovertemplate="%{y}<br>target %{x:.3f} s<extra></extra>"), row=1, col=2)
    lo = min(90.0, float(np.nanmin(part["success_rate"] * 100)) - 2) if part["success_rate"].notna().any() else 0
    fig.update_xaxes(title_text="success %", range=[max(0.0, lo), 100.5], row=1, col=1)
    fig.update_xaxes(title_text="P95 (s)", row=1, col=2, rangemode="tozero")
    fig.update_yaxes(automargin=True)
    return _layout(fig, theme, max(300, 90 + 30 * len(part)), bargap=0.35)


def sla_breaches(sla: pd.DataFrame, limit: int = 8) -> html.Div:
    """The breaches in words, with how far off they are."""
    if sla.empty:
        return html.Div()
    items = []
    for r in sla[sla["breached"]].to_dict("records"):
        parts = []
        if r["success_breach"]:
            parts.append(f'success {pct_text(r["success_rate"], 2)} is {r["success_shortfall_pp"]:.2f} percentage points '
                         f'below the {pct_text(r["success_target"], 2)} target')
        if r["p95_breach"]:
            parts.append(f'P95 {ms_text(r["p95_duration_ms"])} is {ms_text(r["p95_excess_ms"])} '
                         f'({r["p95_excess_pct"]:.1f} %) over the {ms_text(r["p95_target_ms"])} target')
        items.append(html.Li([html.Span("✕ ", className="analytics-bad"), html.Strong(r["workflow_name"]), ": ",
                              "; ".join(parts), f' ({r["executions"]:,} runs)']))
    if not items:
        return html.Div(["✓ Every workflow meets its targets in this window."], className="analytics-good small")
    more = len(items) - limit
    shown = items[:limit] + ([html.Li(f"… and {more} more (see the chart below)", className="text-muted")]
                             if more > 0 else [])
    return html.Div([html.Div(f"{len(items)} workflow(s) breach their targets, worst first:",
                              className="small fw-semibold"),
                     html.Ul(shown, className="analytics-breaches small mb-0")])


# ---------------------------------------------------------------------------------------------
# 8. Anomalies
# ---------------------------------------------------------------------------------------------

def anomaly_figure(summary: pd.DataFrame, threshold: float, theme: str | None = None, limit: int = 15) -> go.Figure:
    """Per workflow and metric: the baseline median with its band (|z| ≤ threshold) beside the
    latest bucket's value; flagged values are drawn as ✕ in the warning colour."""
    if summary.empty:
        return empty_figure("Not enough data for a baseline (20 finished jobs per bucket, 5 buckets)", theme,
                            height=260)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("Failure rate: latest vs baseline", "P95 duration: latest vs baseline"))
    for col, metric in ((1, "failure_rate"), (2, "p95_duration_ms")):
        part = summary[summary["metric"] == metric]
        order = part.sort_values(["flagged", "z"], ascending=[True, True], key=lambda s: s.abs() if s.name == "z" else s)
        part = order.tail(limit)
        if part.empty:
            continue
        scale = 100.0 if metric == "failure_rate" else 0.001
        unit = "%" if metric == "failure_rate" else "s"
        names = list(part["workflow_name"].astype(str))
        med = part["baseline_median"] * scale
        fig.add_trace(go.Scatter(
            y=names, x=med, mode="markers", name="Baseline median (band: |z| ≤ %.1f)" % threshold,
            showlegend=col == 1, legendgroup="base",
            marker=dict(symbol="line-ns", size=18, color=BASELINE, line=dict(width=3, color=BASELINE)),
            error_x=dict(type="data", symmetric=False, array=part["band_high"] * scale - med,
                         arrayminus=med - part["band_low"] * scale, color=BASELINE, thickness=6, width=0),
            customdata=np.column_stack([part["workflow_id"], part["baseline_buckets"]]),
            hovertemplate="%{y}<br>baseline median %{x:.3g} " + unit + " over %{customdata[1]} buckets<extra></extra>"),
            row=1, col=col)
        colors = [WORSE if (f and d == "worse") else (BETTER if f else NEUTRAL)
                  for f, d in zip(part["flagged"], part["direction"])]
        symbols = ["x" if f else "circle" for f in part["flagged"]]
        fig.add_trace(go.Scatter(
            y=names, x=part["latest"] * scale, mode="markers", name="Latest bucket (✕ = anomaly)",
            showlegend=col == 1, legendgroup="latest",
            marker=dict(symbol=symbols, size=13, color=colors, line=dict(width=1, color=ink(theme))),
            customdata=np.column_stack([part["workflow_id"], [num_text(z, 1) for z in part["z"]], part["latest_jobs"]]),
            hovertemplate="%{y}<br>latest %{x:.3g} " + unit + " (z = %{customdata[1]}, %{customdata[2]} jobs)<extra></extra>"),
            row=1, col=col)
        fig.update_xaxes(title_text="failure rate (%)" if metric == "failure_rate" else "P95 (s)", row=1, col=col,
                         rangemode="tozero")
    fig.update_yaxes(automargin=True)
    n = summary.groupby("metric").size().max()
    return _layout(fig, theme, max(260, 100 + 30 * min(int(n), limit)))


def anomaly_list(summary: pd.DataFrame, latest_bucket, tz: str, bucket: str, threshold: float) -> html.Div:
    when = local_labels(pd.Series([latest_bucket]), tz, bucket)[0] if latest_bucket is not None else "—"
    flagged = summary[summary["flagged"]] if not summary.empty else summary
    head = html.Div([f"Latest complete {bucket}: ", html.Strong(when), f" · compared with the 8 {bucket}s before it."],
                    className="small text-muted mb-1")
    if flagged.empty:
        return html.Div([head, html.Div("✓ No anomaly: every latest value is within its baseline band.",
                                        className="analytics-good small")])
    items = []
    for r in flagged.to_dict("records"):
        if r["metric"] == "failure_rate":
            what = f'failure rate {pct_text(r["latest"])} vs baseline {pct_text(r["baseline_median"])}'
        else:
            what = f'P95 {ms_text(r["latest"])} vs baseline {ms_text(r["baseline_median"])}'
        mark = "▲ worse" if r["direction"] == "worse" else "▼ better"
        items.append(html.Li([html.Span(mark + " ", className="analytics-bad" if r["direction"] == "worse" else "analytics-good"),
                              html.Strong(r["workflow_name"]), f": {what} (z = {r['z']:.1f}, |z| > {threshold:g})"]))
    return html.Div([head, html.Ul(items, className="small mb-0")])


# ---------------------------------------------------------------------------------------------
# 9. Fleet utilization
# ---------------------------------------------------------------------------------------------

def utilization_figure(per_robot: pd.DataFrame, theme: str | None = None, limit: int = 60) -> go.Figure:
    if per_robot is None or per_robot.empty or per_robot["capacity_seconds"].fillna(0).sum() == 0:
        return empty_figure("No robot activity in this window", theme, height=300)
    part = per_robot.sort_values("utilization", ascending=False, na_position="last").head(limit).iloc[::-1]
    fig = go.Figure(go.Bar(
        y=part["robot_id"].astype(str), x=part["utilization"].fillna(0) * 100, orientation="h", marker_color=NEUTRAL,
        text=[pct_text(u) for u in part["utilization"]], textposition="outside", cliponaxis=False,
        customdata=np.column_stack([[fmt.duration(b) for b in part["busy_seconds"]]]),
        hovertemplate="%{y}<br>busy %{x:.1f} % (%{customdata[0]})<extra></extra>"))
    fig.update_layout(xaxis=dict(title="busy share of capacity (%)", range=[0, 110]), yaxis=dict(automargin=True),
                      showlegend=False)
    return _layout(fig, theme, max(300, 70 + 20 * len(part)))


def hour_of_week_figure(cells: pd.DataFrame, tz: str, theme: str | None = None) -> go.Figure:
    if cells is None or cells.empty or cells["capacity_seconds"].fillna(0).sum() == 0:
        return empty_figure("No robot activity in this window", theme, height=300)
    grid_ = np.full((7, 24), np.nan)
    for r in cells.to_dict("records"):
        if not missing(r["utilization"]):
            grid_[int(r["weekday"]) - 1, int(r["hour_of_day"])] = r["utilization"] * 100
    fig = go.Figure(go.Heatmap(
        z=grid_, x=[f"{h:02d}:00" for h in range(24)], y=WEEKDAYS, colorscale="Cividis", zmin=0,
        zmax=max(5.0, math.ceil(float(np.nanmax(grid_)) / 5) * 5) if np.isfinite(grid_).any() else 100,
        colorbar=dict(title="busy %"), hovertemplate="%{y} %{x}<br>busy %{z:.1f} %<extra></extra>"))
    fig.update_layout(xaxis_title=f"hour of day ({tz})", yaxis=dict(autorange="reversed"))
    return _layout(fig, theme, 300)


# ---------------------------------------------------------------------------------------------
# Page pieces
# ---------------------------------------------------------------------------------------------

def section(title: str, section_id: str, body, note=None, help_text: str | None = None) -> dbc.Card:
    """A card with its title, a 'view jobs' link (href set by the page) and a note line."""
    header = html.Div([
        html.H2(title, className="h6 mb-0"),
        dcc.Link("view jobs →", href="/executions", id={"type": "analytics-jobs", "section": section_id},
                 className="small analytics-jobs-link"),
    ], className="d-flex justify-content-between align-items-baseline gap-2")
    return dbc.Card([
        dbc.CardHeader(header),
        dbc.CardBody([
            html.Div(help_text, className="small text-muted mb-2") if help_text else None,
            body,
            html.Div(note, className="small text-muted mt-2") if note else None,
        ]),
    ], className="mb-3 analytics-card", id=f"analytics-card-{section_id}")


def problems_alert(problems: list[str], heading: str) -> list:
    if not problems:
        return []
    return [html.Strong(heading), html.Ul([html.Li(p) for p in problems], className="mb-0")]


def window_text(start: datetime, end: datetime, tz: str) -> str:
    return f"{fmt.local_time(start, tz, '%Y-%m-%d %H:%M')} → {fmt.local_time(end, tz, '%Y-%m-%d %H:%M')}"


def zone_now_offset(tz: str) -> str:
    off = datetime.now(ZoneInfo(tz)).strftime("%z")
    return f"UTC{off[:3]}:{off[3:]}"
