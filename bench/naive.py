"""The same questions answered the naive way: load the window's rows with pandas, compute in Python.

This is how dashboards that "slow to a crawl" are usually written: one SELECT of the raw rows
of the window (the filter's WHERE is still pushed to SQL, which is generous to the naive way),
then pandas/numpy for counting, grouping, percentiles, paging. The figures are the yardstick
for the app's functions (ours / naive in RESULTS.md), so they must answer the same question;
they are not meant to be exact to the last edge case.

Runs in a worker process of its own (bench.run starts it), so that its memory use does not
inflate the peak RSS reported for the app's functions. Rows are loaded in chunks and
low-cardinality text columns kept as categories, so ten million rows fit in a few hundred MB.

Loads are shared within a page: a load is timed once and that time is charged again to every
later function of the same page that reuses it (``Loader``), as if each chart ran its own.
"""
from __future__ import annotations

import json
import math
import resource
import time
from datetime import datetime
from typing import Any, Callable

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

CHUNK_ROWS = 250_000
_engine: Engine | None = None
_loader: "Loader | None" = None


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
class Loader:
    """Loads frames, remembering each (query, params) for the current page."""

    KEEP = 4  # loads kept for reuse (the cases of a page that share rows come one after another)

    def __init__(self, engine: Engine):
        self.engine = engine
        self.group: str | None = None
        self._cache: dict[tuple, tuple[pd.DataFrame, float]] = {}
        self.charged = 0.0  # seconds of cached loads reused during the current call

    def start_group(self, group: str) -> None:
        if group != self.group:
            self._cache.clear()
            self.group = group

    def frame(self, sql: str, params: dict | None = None, categories: tuple[str, ...] = ()) -> pd.DataFrame:
        key = (sql, repr(sorted((params or {}).items())))
        if key in self._cache:
            frame, seconds = self._cache.pop(key)
            self._cache[key] = (frame, seconds)  # most recently used last
            self.charged += seconds
            return frame
        began = time.perf_counter()
        frame = load_frame(self.engine, sql, params, categories)
        self._cache[key] = (frame, time.perf_counter() - began)
        while len(self._cache) > self.KEEP:  # memory: only the latest loads stay
            self._cache.pop(next(iter(self._cache)))
        return frame


def load_frame(engine: Engine, sql: str, params: dict | None = None, categories: tuple[str, ...] = ()) -> pd.DataFrame:
    """pandas.read_sql in chunks; `categories` columns become categoricals (memory)."""
    parts: list[pd.DataFrame] = []
    with engine.connect() as conn:
        conn = conn.execution_options(stream_results=True)
        for chunk in pd.read_sql_query(sa.text(sql), conn, params=params or {}, chunksize=CHUNK_ROWS):
            for col in categories:
                if col in chunk:
                    chunk[col] = chunk[col].astype("category")
            parts.append(chunk)
    if not parts:
        return pd.DataFrame()
    if len(parts) == 1:
        return parts[0]
    for col in categories:
        if col in parts[0]:
            union = pd.api.types.union_categoricals([p[col] for p in parts])
            for p in parts:
                p[col] = pd.Categorical(p[col], categories=union.categories)
    return pd.concat(parts, ignore_index=True)


def _utc(series: pd.Series) -> pd.Series:
    series = pd.to_datetime(series, utc=True)
    return series


def _ms(a: pd.Series, b: pd.Series) -> pd.Series:
    return (_utc(a) - _utc(b)).dt.total_seconds() * 1000.0


def _classify(messages: pd.Series) -> pd.Series:
    from data.errors import classify_error

    return messages.map(lambda m: classify_error(m) if isinstance(m, str) else None)


def _pct(values, qs) -> list:
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return [None] * len(qs)
    return [float(v) for v in np.percentile(values, [q * 100 for q in qs])]


# ---------------------------------------------------------------------------------------------
# Worker process
# ---------------------------------------------------------------------------------------------
def init_worker(url: str) -> None:
    global _engine, _loader
    from data.db import make_engine

    _engine = make_engine(url, statement_timeout_ms=0)
    _loader = Loader(_engine)


def run(fn: Callable[[Loader], Any], group: str, repeat: int, slow_s: float = 5.0) -> dict:
    """Time `fn(loader)`; repeat up to `repeat` times unless one run takes longer than slow_s."""
    assert _loader is not None, "init_worker first"
    _loader.start_group(group)
    times: list[float] = []
    error = None
    for _ in range(max(1, repeat)):
        _loader.charged = 0.0
        began = time.perf_counter()
        try:
            fn(_loader)
        except Exception as exc:  # noqa: BLE001 - reported in RESULTS.md, never hidden
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            break
        times.append((time.perf_counter() - began + _loader.charged) * 1000.0)
        if times[-1] > slow_s * 1000:
            break
    return {"times_ms": times, "error": error, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------------------------------
# Fleet overview and wall display
# ---------------------------------------------------------------------------------------------
_RECENT_JOBS = """
    SELECT id::text AS job_id, workflow_id, workflow_name, status, robot_id, created_at, started_at, completed_at
    FROM job_queue WHERE created_at >= now() - interval '3 days' OR status IN ('pending', 'running')
"""
_ROBOTS = "SELECT robot_id::text AS robot_id, name, environment, status, last_heartbeat, metrics FROM robots"


def _recent(loader: Loader) -> pd.DataFrame:
    return loader.frame(_RECENT_JOBS, categories=("workflow_id", "workflow_name", "status", "robot_id"))


def _live_status(robots: pd.DataFrame, running: pd.Series, offline_after: int) -> pd.Series:
    now = pd.Timestamp.now(tz="UTC")
    hb = _utc(robots["last_heartbeat"])
    n = robots["robot_id"].map(running).fillna(0)
    status = np.select(
        [robots["status"] == "maintenance", hb.isna() | (hb < now - pd.Timedelta(seconds=offline_after)),
         robots["status"] == "error", (robots["status"] == "busy") | (n > 0), robots["status"] == "online"],
        ["maintenance", "offline", "error", "busy", "idle"], default="offline")
    return pd.Series(status, index=robots.index)


def fleet_kpis(loader: Loader, tz: str, offline_after: int) -> dict:
    jobs, robots = _recent(loader), loader.frame(_ROBOTS)
    now = pd.Timestamp.now(tz="UTC")
    running = jobs[jobs["status"] == "running"].groupby("robot_id", observed=True).size()
    live = _live_status(robots, running, offline_after).value_counts()
    today = now.tz_convert(tz).normalize().tz_convert("UTC")
    done = jobs[jobs["status"].isin(["completed", "failed"])]
    last_day = done[_utc(done["completed_at"]) >= now - pd.Timedelta(hours=24)]
    return {
        "total_robots": len(robots), **{k: int(v) for k, v in live.items()},
        "queue_depth": int((jobs["status"] == "pending").sum()),
        "running": int((jobs["status"] == "running").sum()),
        "total_jobs_today": int((_utc(jobs["created_at"]) >= today).sum()),
        "completed_24h": int((last_day["status"] == "completed").sum()),
        "avg_duration_s": float(_ms(last_day["completed_at"], last_day["started_at"]).mean() / 1000),
    }


def robot_statuses(loader: Loader, offline_after: int) -> pd.DataFrame:
    jobs, robots = _recent(loader), loader.frame(_ROBOTS).copy()
    run = jobs[jobs["status"] == "running"].sort_values("started_at")
    running = run.groupby("robot_id", observed=True).size()
    robots["status_live"] = _live_status(robots, running, offline_after)
    robots["running_jobs"] = robots["robot_id"].map(running).fillna(0)
    robots["current_job_id"] = robots["robot_id"].map(run.groupby("robot_id", observed=True)["job_id"].last())
    robots["cpu_percent"] = [m.get("cpu_percent") if isinstance(m, dict) else None for m in robots["metrics"]]
    return robots.sort_values(["environment", "name"])


def queue_depth_series(loader: Loader, hours: int = 6, step_minutes: int = 5) -> pd.DataFrame:
    jobs = _recent(loader)
    now = pd.Timestamp.now(tz="UTC")
    edges = list(pd.date_range(now - pd.Timedelta(hours=hours), now, freq=f"{step_minutes}min"))
    created = _utc(jobs["created_at"])
    left = _utc(jobs["started_at"]).fillna(_utc(jobs["completed_at"]))
    left = left.where(jobs["status"] != "pending")
    depth = [int(((created <= t) & (left.isna() | (left > t))).sum()) for t in edges]
    return pd.DataFrame({"ts": edges, "queue_depth": depth})


def throughput_series(loader: Loader, hours: int = 6, step_minutes: int = 15) -> pd.DataFrame:
    jobs = _recent(loader)
    now = pd.Timestamp.now(tz="UTC")
    done = jobs[jobs["status"].isin(["completed", "failed"])].copy()
    done["t"] = _utc(done["completed_at"])
    done = done[done["t"] >= now - pd.Timedelta(hours=hours)]
    done["bin"] = done["t"].dt.floor(f"{step_minutes}min")
    return done.groupby(["bin", "status"], observed=True).size().unstack(fill_value=0)


def recent_job_changes(loader: Loader, limit: int = 15) -> pd.DataFrame:
    jobs = _recent(loader)
    parts = []
    for column, change in (("created_at", "queued"), ("started_at", "started"), ("completed_at", None)):
        top = jobs.dropna(subset=[column]).nlargest(limit, column)
        parts.append(pd.DataFrame({"job_id": top["job_id"], "change": change or top["status"].astype(str),
                                   "at": top[column]}))
    return pd.concat(parts).nlargest(limit, "at")


def recent_failures(loader: Loader, minutes: int = 60) -> dict:
    jobs = _recent(loader)
    now = pd.Timestamp.now(tz="UTC")
    done = jobs[jobs["status"].isin(["completed", "failed"]) & (_utc(jobs["completed_at"]) >= now - pd.Timedelta(minutes=minutes))]
    return {"failed": int((done["status"] == "failed").sum()), "finished": len(done),
            "by_workflow": done[done["status"] == "failed"].groupby("workflow_name", observed=True).size()}


def sla_breaches(loader: Loader, hours: int = 24) -> pd.DataFrame:
    jobs = _recent(loader)
    now = pd.Timestamp.now(tz="UTC")
    done = jobs[jobs["status"].isin(["completed", "failed"]) & jobs["started_at"].notna()
                & (_utc(jobs["completed_at"]) >= now - pd.Timedelta(hours=hours))].copy()
    done["ms"] = _ms(done["completed_at"], done["started_at"])
    g = done.groupby("workflow_id", observed=True)
    out = pd.DataFrame({"success_rate": g["status"].apply(lambda s: (s == "completed").mean()),
                        "p95_duration_ms": g["ms"].quantile(0.95)})
    return out[(out["success_rate"] < 0.99) | (out["p95_duration_ms"] > 60_000)]


def queue_breakdown(loader: Loader) -> dict:
    jobs = loader.frame("SELECT environment, priority, status, created_at, started_at, visible_after FROM job_queue "
                        "WHERE status IN ('pending', 'running')", categories=("environment", "status"))
    pending = jobs[jobs["status"] == "pending"]
    return {"queue_depth": len(pending), "by_environment": pending.groupby("environment", observed=True).size(),
            "by_priority": pending.groupby("priority").size()}


# ---------------------------------------------------------------------------------------------
# Job history and one job
# ---------------------------------------------------------------------------------------------
def _filtered(loader: Loader, filters, tz: str, columns: str, extra: str = "", categories=(),
              search_since: datetime | None = None) -> pd.DataFrame:
    """The filtered jobs' `columns`; `search_since` limits them to jobs created at or after it
    (what the app's bounded text search reads: data.jobs.search_scope)."""
    from data.jobs import filter_sql

    where, params = filter_sql(filters, tz)
    if extra:
        where = where + [extra]
    if search_since is not None:
        where = where + ["j.created_at >= :naive_search_since"]
        params = {**params, "naive_search_since": search_since}
    sql = f"SELECT {columns} FROM job_queue j {'WHERE ' + ' AND '.join(where) if where else ''}"
    return loader.frame(sql, params, categories)


def _fetch_page(loader: Loader, ids: list[str]) -> pd.DataFrame:
    from data.jobs import LIST_COLUMNS

    return load_frame(loader.engine, f"SELECT {LIST_COLUMNS} FROM job_queue j WHERE j.id = ANY(CAST(:ids AS uuid[]))",
                      {"ids": ids})


def job_page(loader: Loader, filters, tz: str, page: int = 1, sort: str = "-created", page_size: int = 50) -> pd.DataFrame:
    """The filtered rows loaded, sorted and sliced in pandas, then the page's rows fetched."""
    if sort in ("-duration", "duration"):
        frame = _filtered(loader, filters, tz, "j.id::text AS id, j.created_at, "
                          "(j.completed_at - j.started_at) AS duration")
        frame = frame.sort_values(["duration", "id"], ascending=sort == "duration", na_position="last")
    else:
        frame = _filtered(loader, filters, tz, "j.id::text AS id, j.created_at")
        frame = frame.sort_values(["created_at", "id"], ascending=sort == "created")
    ids = frame["id"].iloc[(page - 1) * page_size: page * page_size].tolist()
    return _fetch_page(loader, ids)


def job_search_page(loader: Loader, filters, tz: str, page_size: int = 50,
                    search_since: datetime | None = None) -> pd.DataFrame:
    """Text search the naive way: load the messages of the (otherwise filtered) jobs, search in
    pandas. `search_since`: the same jobs the app's search reads (its search_scope's ``since``)."""
    from dataclasses import replace

    q = filters.q
    frame = _filtered(loader, replace(filters, q=None), tz, "j.id::text AS id, j.created_at, j.error_message",
                      extra="j.error_message IS NOT NULL", search_since=search_since)
    hits = frame[frame["error_message"].str.contains(q, case=False, regex=False, na=False)]
    ids = hits.sort_values(["created_at", "id"], ascending=False)["id"].iloc[:page_size].tolist()
    return _fetch_page(loader, ids)


def job_count(loader: Loader, filters, tz: str, search_since: datetime | None = None) -> int:
    return len(_filtered(loader, filters, tz, "j.id::text AS id, j.created_at", search_since=search_since))


def job_summary(loader: Loader, filters, tz: str, search_since: datetime | None = None) -> dict:
    frame = _filtered(loader, filters, tz, "j.status, j.started_at, j.completed_at", categories=("status",),
                      search_since=search_since)
    timed = frame[frame["status"].isin(["completed", "failed"]) & frame["started_at"].notna() & frame["completed_at"].notna()]
    ms = _ms(timed["completed_at"], timed["started_at"])
    return {"by_status": frame["status"].value_counts().to_dict(), "p50_p95": _pct(ms, (0.5, 0.95))}


def workflow_options(loader: Loader) -> pd.DataFrame:
    frame = loader.frame("SELECT workflow_id, workflow_name, created_at FROM job_queue",
                         categories=("workflow_id", "workflow_name"))
    return frame.sort_values("created_at").drop_duplicates("workflow_id", keep="last")


def robot_options(loader: Loader) -> list:
    frame = loader.frame("SELECT robot_id FROM job_queue WHERE robot_id IS NOT NULL", categories=("robot_id",))
    return sorted(frame["robot_id"].unique().tolist())


def environment_options(loader: Loader) -> list:
    frame = loader.frame("SELECT environment FROM job_queue", categories=("environment",))
    return sorted(frame["environment"].unique().tolist())


def error_type_options(loader: Loader, days: int = 7) -> pd.Series:
    frame = loader.frame("SELECT error_message FROM job_queue WHERE completed_at >= now() - make_interval(days => :d) "
                         "AND error_message IS NOT NULL", {"d": days})
    return _classify(frame["error_message"]).value_counts()


def job_story(loader: Loader, job_id: str) -> dict:
    job = load_frame(loader.engine, "SELECT * FROM job_queue WHERE id = CAST(:id AS uuid)", {"id": job_id}).iloc[0]
    runs = loader.frame("SELECT id::text AS id, created_at, started_at, completed_at, status FROM job_queue "
                        "WHERE workflow_id = :w", {"w": job["workflow_id"]}, categories=("status",))
    runs = runs.sort_values("created_at")
    created = pd.Timestamp(job["created_at"])
    created = created.tz_localize("UTC") if created.tzinfo is None else created
    pos = int((_utc(runs["created_at"]) < created).sum())
    finished = runs[runs["status"].isin(["completed", "failed"]) & runs["started_at"].notna()]
    finished = finished[_utc(finished["created_at"]) <= created].tail(1000)
    steps = (job["result"] or {}).get("node_executions", []) if isinstance(job["result"], dict) else []
    return {"neighbours": runs.iloc[max(0, pos - 5): pos + 6], "steps": len(steps),
            "p50_p95": _pct(_ms(finished["completed_at"], finished["started_at"]), (0.5, 0.95))}


# ---------------------------------------------------------------------------------------------
# Robots
# ---------------------------------------------------------------------------------------------
def robot_list(loader: Loader, tz: str, offline_after: int) -> pd.DataFrame:
    robots = loader.frame("SELECT robot_id::text AS robot_id, name, hostname, status, environment, capabilities, tags, "
                          "metrics, max_concurrent_jobs, last_heartbeat FROM robots").copy()
    jobs = loader.frame("SELECT robot_id, status, started_at, completed_at FROM job_queue "
                        "WHERE (completed_at >= now() - interval '7 days' OR status = 'running') AND robot_id IS NOT NULL",
                        categories=("robot_id", "status"))
    now = pd.Timestamp.now(tz="UTC")
    today = now.tz_convert(tz).normalize().tz_convert("UTC")
    running = jobs[jobs["status"] == "running"].groupby("robot_id", observed=True).size()
    robots["status_live"] = _live_status(robots, running, offline_after)
    done = jobs[jobs["status"].isin(["completed", "failed"])]
    completed_at = _utc(done["completed_at"])
    g_today = done[completed_at >= today].groupby(["robot_id", "status"], observed=True).size().unstack(fill_value=0)
    g_week = done.groupby(["robot_id", "status"], observed=True).size().unstack(fill_value=0)
    robots = robots.join(g_today.add_suffix("_today"), on="robot_id").join(g_week.add_suffix("_7d"), on="robot_id")
    day_ago = now - pd.Timedelta(hours=24)
    s = _utc(jobs["started_at"]).clip(lower=day_ago)
    e = _utc(jobs["completed_at"]).fillna(now).clip(upper=now)
    busy = ((e - s).dt.total_seconds().clip(lower=0)).groupby(jobs["robot_id"], observed=True).sum()
    capacity = robots["max_concurrent_jobs"].fillna(1).clip(lower=1) * 86400
    robots["utilization_24h"] = (robots["robot_id"].map(busy).fillna(0) / capacity).clip(upper=1)
    return robots.sort_values(["environment", "name"])


def robot_page(loader: Loader, robot_id: str, start: datetime, end: datetime, tz: str, offline_after: int) -> dict:
    """Everything the robot page shows, from its raw heartbeats and jobs in the window."""
    hb = loader.frame('SELECT "timestamp" AS ts, status, current_jobs, metrics::text AS metrics FROM robot_heartbeats '
                      'WHERE robot_id = :r AND "timestamp" >= :s AND "timestamp" < :e ORDER BY "timestamp"',
                      {"r": robot_id, "s": start, "e": end})
    jobs = loader.frame("SELECT id::text AS id, workflow_id, workflow_name, status, created_at, started_at, completed_at, "
                        "error_message FROM job_queue WHERE robot_id = :r AND created_at >= :s AND created_at < :e",
                        {"r": robot_id, "s": start, "e": end})
    out: dict[str, Any] = {}
    if not hb.empty:
        ts = _utc(hb["ts"])
        st = np.where(hb["status"] == "online", "idle", np.where(hb["current_jobs"].fillna(0) > 0, "busy", hb["status"]))
        gap = ts.shift(-1) - ts > pd.Timedelta(seconds=offline_after)
        st = np.where(gap, "offline", st)
        out["bands"] = int((pd.Series(st) != pd.Series(st).shift()).sum())
        metrics = pd.DataFrame([json.loads(m) for m in hb["metrics"]], index=ts)
        step = max(1, math.ceil((end - start).total_seconds() / 500))
        out["metrics"] = metrics.resample(f"{step}s").agg(["mean", "max"])
    s, e = _utc(jobs["started_at"]), _utc(jobs["completed_at"])
    hours = pd.date_range(pd.Timestamp(start).floor("h"), end, freq="h", tz="UTC")
    busy = []
    for h in hours:
        lo, hi = s.clip(lower=h), e.clip(upper=h + pd.Timedelta(hours=1))
        busy.append(float((hi - lo).dt.total_seconds().clip(lower=0).sum()))
    hourly = pd.DataFrame({"hour": hours, "busy_s": busy})
    local = hourly["hour"].dt.tz_convert(tz)
    out["hour_of_week"] = hourly.groupby([local.dt.weekday, local.dt.hour])["busy_s"].sum()
    out["counts"] = jobs["status"].value_counts().to_dict()
    failed = jobs[jobs["status"] == "failed"]
    out["errors"] = _classify(failed["error_message"]).value_counts().head(8)
    timed = jobs[jobs["status"].isin(["completed", "failed"]) & s.notna() & e.notna()].copy()
    timed["ms"] = _ms(timed["completed_at"], timed["started_at"])
    out["durations"] = timed.groupby("workflow_id")["ms"].quantile([0.5, 0.95])
    out["latest"] = jobs.nlargest(20, "created_at")
    return out


# ---------------------------------------------------------------------------------------------
# Analytics
# ---------------------------------------------------------------------------------------------
_WINDOW = """
    SELECT workflow_id, workflow_name, status, robot_id, environment, created_at, started_at, completed_at,
           error_message, metadata ->> 'healing_attempts' AS healing_attempts,
           metadata ->> 'healing_successes' AS healing_successes
    FROM job_queue WHERE created_at >= :start AND created_at < :end
"""
_CATS = ("workflow_id", "workflow_name", "status", "robot_id", "environment")
_FREQ = {"hour": "h", "day": "D"}


def _analytics_filtered(frame: pd.DataFrame, f) -> pd.DataFrame:
    if f.environment:
        frame = frame[frame["environment"] == f.environment]
    if f.workflows:
        frame = frame[frame["workflow_id"].isin(f.workflows)]
    if f.robots:
        frame = frame[frame["robot_id"].isin(f.robots)]
    return frame


def _window(loader: Loader, f, start=None, end=None) -> pd.DataFrame:
    return _analytics_filtered(loader.frame(_WINDOW, {"start": start or f.start, "end": end or f.end}, _CATS), f)


def _rows(loader: Loader, f, start, end) -> pd.DataFrame:
    """The filtered rows created in [start, end): from the window's rows when they cover it."""
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    if pd.Timestamp(f.start) <= start and end <= pd.Timestamp(f.end):
        frame = _window(loader, f)
        created = _utc(frame["created_at"])
        return frame[(created >= start) & (created < end)]
    return _window(loader, f, start.to_pydatetime(), end.to_pydatetime())


def _with_durations(frame: pd.DataFrame, f) -> pd.DataFrame:
    frame = frame.copy()
    frame["dur_ms"] = _ms(frame["completed_at"], frame["started_at"])
    frame["wait_ms"] = _ms(frame["started_at"], frame["created_at"])
    frame["timed"] = frame["status"].isin(list(f.statuses)) & frame["dur_ms"].notna()
    return frame


def _bucket(ts: pd.Series, bucket: str, tz: str) -> pd.Series:
    local = _utc(ts).dt.tz_convert(tz).dt.tz_localize(None)
    if bucket == "week":
        floored = local.dt.to_period("W-SUN").dt.start_time
    else:
        floored = local.dt.floor(_FREQ[bucket])
    return floored


def an_duration_percentiles(loader: Loader, f) -> dict:
    frame = _with_durations(_window(loader, f), f)
    timed = frame[frame["timed"]]
    qs = (0.5, 0.9, 0.95, 0.99)
    fleet = {"total_jobs": len(frame), "dur": _pct(timed["dur_ms"], qs), "wait": _pct(timed["wait_ms"], qs)}
    per = timed.groupby("workflow_id", observed=True)["dur_ms"].quantile(list(qs)).unstack()
    waits = timed.groupby("workflow_id", observed=True)["wait_ms"].quantile(list(qs)).unstack()
    counts = frame.groupby(["workflow_id", "status"], observed=True).size().unstack(fill_value=0)
    return {"fleet": fleet, "workflows": counts.join(per).join(waits, rsuffix="_wait")}


def an_time_series(loader: Loader, f) -> pd.DataFrame:
    frame = _with_durations(_window(loader, f), f)
    frame["bucket"] = _bucket(frame["created_at"], f.bucket, f.tz)
    counts = frame.groupby(["bucket", "status"], observed=True).size().unstack(fill_value=0)
    p = frame[frame["timed"]].groupby("bucket")["dur_ms"].quantile([0.5, 0.95]).unstack()
    return counts.join(p)


def an_queue_depth_series(loader: Loader, f) -> pd.DataFrame:
    frame = _window(loader, f)
    before = loader.frame("SELECT created_at, started_at, completed_at, status FROM job_queue WHERE created_at < :start "
                          "AND (status = 'pending' OR started_at >= :start OR completed_at >= :start)",
                          {"start": f.start})
    jobs = pd.concat([frame[["created_at", "started_at", "completed_at", "status"]], before], ignore_index=True)
    left = _utc(jobs["started_at"]).fillna(_utc(jobs["completed_at"])).where(jobs["status"] != "pending")
    created = _utc(jobs["created_at"])
    events = pd.concat([pd.Series(1, index=created[created >= f.start]),
                        pd.Series(-1, index=left.dropna()[left.dropna() >= f.start])])
    events = events[events.index < f.end]
    waiting = int(((created < f.start) & (left.isna() | (left >= f.start))).sum())
    per = events.groupby(_bucket(pd.Series(events.index), f.bucket, f.tz).to_numpy()).sum()
    return (waiting + per.cumsum().shift(fill_value=0)).rename("queue_depth")


def an_weekly_throughput(loader: Loader, f) -> pd.DataFrame:
    now = pd.Timestamp.now(tz="UTC")
    this_week = now.tz_convert(f.tz).normalize() - pd.Timedelta(days=now.tz_convert(f.tz).weekday())
    first = (this_week - pd.Timedelta(weeks=5)).tz_convert("UTC")
    jobs = _rows(loader, f, first, min(now, pd.Timestamp(f.end)))
    jobs = jobs[jobs["status"].isin(["completed", "failed"])].copy()
    jobs["week"] = _bucket(jobs["created_at"], "week", f.tz)
    table = jobs.groupby(["workflow_id", "week"], observed=True).size().unstack(fill_value=0)
    table.loc["All workflows"] = table.sum()
    return table


def _stats(frame: pd.DataFrame, f) -> pd.DataFrame:
    frame = _with_durations(frame, f)
    done = frame[frame["status"].isin(["completed", "failed"])].copy()
    for col in ("healing_attempts", "healing_successes"):
        done[col] = pd.to_numeric(done[col], errors="coerce")
    g = done.groupby("workflow_id", observed=True)
    failed = done[done["status"] == "failed"].copy()
    failed["error_type"] = _classify(failed["error_message"]).fillna("UnknownError")
    return pd.DataFrame({
        "executions": g.size(), "completed": g["status"].apply(lambda s: int((s == "completed").sum())),
        "p95_duration_ms": frame[frame["timed"]].groupby("workflow_id", observed=True)["dur_ms"].quantile(0.95),
        "healing_attempts": g["healing_attempts"].sum(), "healing_successes": g["healing_successes"].sum(),
        "error_types": failed.groupby("workflow_id", observed=True)["error_type"].nunique(),
    })


def an_workflow_stats(loader: Loader, f) -> pd.DataFrame:
    return _stats(_window(loader, f), f)


def an_duration_histogram(loader: Loader, f, bins: int = 40) -> pd.DataFrame:
    frame = _with_durations(_window(loader, f), f)
    timed = frame[frame["timed"]]
    edges = np.histogram_bin_edges(timed["dur_ms"].to_numpy(), bins=bins)
    out = {}
    for status, part in timed.groupby("status", observed=True):
        out[status] = np.histogram(part["dur_ms"].to_numpy(), bins=edges)[0]
    return pd.DataFrame(out)


def an_duration_box_stats(loader: Loader, f, limit: int = 25) -> pd.DataFrame:
    frame = _with_durations(_window(loader, f), f)
    timed = frame[frame["timed"]]
    top = timed["workflow_id"].value_counts().head(limit).index
    rows = []
    for wf in top:
        v = timed.loc[timed["workflow_id"] == wf, "dur_ms"].to_numpy()
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        iqr = q3 - q1
        rows.append({"workflow_id": wf, "median": med, "lowerfence": v[v >= q1 - 1.5 * iqr].min(),
                     "upperfence": v[v <= q3 + 1.5 * iqr].max(), "p99": np.percentile(v, 99)})
    return pd.DataFrame(rows)


def _failed(loader: Loader, f) -> pd.DataFrame:
    frame = _window(loader, f)
    failed = frame[frame["status"] == "failed"].copy()
    failed["error_type"] = _classify(failed["error_message"]).fillna("UnknownError")
    return failed


def an_errors_over_time(loader: Loader, f) -> pd.DataFrame:
    failed = _failed(loader, f)
    failed["bucket"] = _bucket(failed["created_at"], f.bucket, f.tz)
    return failed.groupby(["bucket", "error_type"]).size()


def an_errors_by_workflow(loader: Loader, f) -> pd.DataFrame:
    return _failed(loader, f).groupby(["workflow_id", "error_type"], observed=True).size().sort_values(ascending=False)


def an_top_error_messages(loader: Loader, f, limit: int = 10) -> pd.DataFrame:
    failed = _failed(loader, f)
    failed["msg"] = failed["error_message"].str.slice(0, 500)
    return failed.groupby(["msg", "error_type"]).agg(failures=("created_at", "size"),
                                                     last_seen=("created_at", "max")).nlargest(limit, "failures")


def an_anomalies(loader: Loader, f, baseline: int = 8, min_jobs: int = 20) -> pd.DataFrame:
    step = {"hour": pd.Timedelta(hours=1), "day": pd.Timedelta(days=1), "week": pd.Timedelta(weeks=1)}[f.bucket]
    first = f.end - (baseline + 2) * step
    frame = _with_durations(_rows(loader, f, first, f.end), f)
    frame["bucket"] = _bucket(frame["created_at"], f.bucket, f.tz)
    done = frame[frame["status"].isin(["completed", "failed"])]
    g = done.groupby(["workflow_id", "bucket"], observed=True)
    per = pd.DataFrame({"finished": g.size(), "failed": g["status"].apply(lambda s: int((s == "failed").sum())),
                        "p95": frame[frame["timed"]].groupby(["workflow_id", "bucket"], observed=True)["dur_ms"].quantile(0.95)})
    per["rate"] = per["failed"] / per["finished"]
    rows = []
    for wf, part in per.groupby(level=0):
        part = part.droplevel(0).sort_index()
        if len(part) < 2:
            continue
        latest, base = part.iloc[-1], part.iloc[:-1]
        base = base[base["finished"] >= min_jobs]
        med = base["rate"].median()
        mad = (base["rate"] - med).abs().median()
        rows.append({"workflow_id": wf, "z": (latest["rate"] - med) / max(1.4826 * mad, 0.05)})
    return pd.DataFrame(rows)


def an_fleet_utilization(loader: Loader, f) -> dict:
    frame = _window(loader, f)
    robots = loader.frame("SELECT robot_id::text AS robot_id, max_concurrent_jobs FROM robots")
    ran = frame[frame["started_at"].notna() & frame["robot_id"].notna()]
    s = _utc(ran["started_at"]).clip(lower=f.start)
    e = _utc(ran["completed_at"]).fillna(pd.Timestamp.now(tz="UTC")).clip(upper=f.end)
    busy = (e - s).dt.total_seconds().clip(lower=0)
    per_robot = busy.groupby(ran["robot_id"], observed=True).sum()
    cap = robots.set_index("robot_id")["max_concurrent_jobs"].fillna(1) * (f.end - f.start).total_seconds()
    local = s.dt.tz_convert(f.tz)
    by_how = busy.groupby([local.dt.weekday, local.dt.hour]).sum()
    return {"robots": (per_robot / cap).dropna(), "hour_of_week": by_how}


def an_filter_options(loader: Loader, f) -> dict:
    frame = _window(loader, f)
    return {"environments": sorted(frame["environment"].unique()), "workflows": sorted(frame["workflow_id"].unique()),
            "robots": sorted(frame["robot_id"].dropna().unique())}


ANALYTICS = {
    "duration_percentiles": an_duration_percentiles, "time_series": an_time_series,
    "queue_depth_series": an_queue_depth_series, "weekly_throughput": an_weekly_throughput,
    "workflow_stats": an_workflow_stats, "workflow_efficiency": an_workflow_stats, "sla_report": an_workflow_stats,
    "duration_histogram": an_duration_histogram, "duration_box_stats": an_duration_box_stats,
    "errors_over_time": an_errors_over_time, "errors_by_workflow": an_errors_by_workflow,
    "top_error_messages": an_top_error_messages, "anomalies": an_anomalies,
    "fleet_utilization": an_fleet_utilization, "filter_options": an_filter_options,
}


def analytics_function(loader: Loader, name: str, f) -> Any:
    return ANALYTICS[name](loader, f)


def analytics_page(loader: Loader, names: list[str], f) -> dict:
    """The whole page the naive way: each section computed from the shared window rows."""
    return {name: ANALYTICS[name](loader, f) for name in names if name in ANALYTICS}


def has_analytics(name: str) -> bool:
    return name in ANALYTICS


__all__ = ["Loader", "load_frame", "init_worker", "run", "peak_rss_mb", "ANALYTICS"]
