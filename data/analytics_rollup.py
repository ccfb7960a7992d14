"""The analytics of data.analytics answered from the rollups (data.rollups) for long windows.

Each function here returns what its namesake in data.analytics returns, for a window that
``rollups.usable_plan`` has split into rollup rows and raw edges. Counts, sums and rates are
the same numbers; percentiles, quartiles and histogram edges come from the merged duration
histograms and are within ``rollups.MAX_RELATIVE_ERROR`` (1 %) of the exact values. Results carry
``exact = False`` (``attrs["exact"]`` on frames) so the page and the API can say so.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from data import analytics as an
from data import rollups
from data.rollups import WindowPlan, grouped_percentiles, percentiles_from_bins

_BUCKET = "date_trunc(:bucket, x.t, :tz)"


def _filters(f: an.AnalyticsFilters) -> tuple[str, dict]:
    clauses, params = ["TRUE"], {}
    if f.environment:
        clauses.append("{a}environment = :environment")
        params["environment"] = f.environment
    if f.workflows:
        clauses.append("{a}workflow_id = ANY(:workflows)")
        params["workflows"] = list(f.workflows)
    return " AND ".join(clauses), params


def _params(f: an.AnalyticsFilters, plan: WindowPlan, extra: dict) -> dict:
    return {"tz": f.tz, "bucket": f.bucket, "dur_statuses": list(f.statuses), **extra,
            **rollups._plan_params(plan)}


def _group_cols(by: tuple[str, ...]) -> list[str]:
    return [_BUCKET + " AS bucket" if b == "bucket" else f"x.{b}" for b in by]


def counts(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan, by: tuple[str, ...]) -> pd.DataFrame:
    """Per ``by`` (``bucket``, ``workflow_id``) and status: jobs, timed, sums."""
    filters, fparams = _filters(f)
    facts, _ = rollups.facts_sql(plan, filters)
    cols = _group_cols(by)
    group = ", ".join(str(i + 1) for i in range(len(cols) + 1))
    sql = f"""
    SELECT {''.join(c + ', ' for c in cols)}x.status, max(x.workflow_name) AS workflow_name,
           sum(x.jobs)::bigint AS jobs, sum(x.timed)::bigint AS timed, sum(x.dur_sum_ms)::float8 AS dur_sum_ms,
           sum(x.wait_sum_ms)::float8 AS wait_sum_ms, sum(x.healing_attempts)::float8 AS healing_attempts,
           sum(x.healing_successes)::float8 AS healing_successes
    FROM ({facts}) x GROUP BY {group}"""
    return an.read_frame(engine, sql, _params(f, plan, fparams), hash_grouping=True)


def histograms(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan, by: tuple[str, ...],
               metric: str = "dur", with_status: bool = False) -> pd.DataFrame:
    """Merged histogram of ``metric`` (dur or wait) of the ``f.statuses`` jobs, long form:
    ``by`` columns (+ ``status``), ``bin``, ``n``."""
    filters, fparams = _filters(f)
    facts, _ = rollups.facts_sql(plan, filters)
    cols = _group_cols(by) + (["x.status"] if with_status else [])
    group = ", ".join(str(i + 1) for i in range(len(cols) + 1))
    sql = f"""
    SELECT {''.join(c + ', ' for c in cols)}u.b AS bin, sum(u.n)::bigint AS n
    FROM ({facts}) x, unnest(x.{metric}_bin, x.{metric}_n) AS u(b, n)
    WHERE x.status = ANY(:dur_statuses) GROUP BY {group}"""
    return an.read_frame(engine, sql, _params(f, plan, fparams), hash_grouping=True)


def error_counts(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan, by: tuple[str, ...]) -> pd.DataFrame:
    """Failures per ``by`` and error type."""
    filters, fparams = _filters(f)
    facts, _ = rollups.facts_sql(plan, filters, table="errors")
    cols = _group_cols(by)
    group = ", ".join(str(i + 1) for i in range(len(cols) + 1))
    sql = f"""
    SELECT {''.join(c + ', ' for c in cols)}x.error_type, max(x.workflow_name) AS workflow_name,
           sum(x.failures)::bigint AS failures
    FROM ({facts}) x GROUP BY {group}"""
    return an.read_frame(engine, sql, _params(f, plan, fparams), hash_grouping=True)


def _by_status(frame: pd.DataFrame, keys: list[str], statuses) -> pd.DataFrame:
    """Counts per key with one column per status (jobs), totals of the rest."""
    if frame.empty:
        return pd.DataFrame(columns=[*keys, "workflow_name", "total_jobs", "completed", "failed", "cancelled",
                                     "timed_jobs", "dur_sum_ms", "wait_sum_ms", "healing_attempts",
                                     "healing_successes"])
    frame = frame.copy()
    frame["in_dur"] = frame["status"].isin(list(statuses))
    finished = frame["status"].isin(["completed", "failed"])
    for s in ("completed", "failed", "cancelled"):
        frame[s] = np.where(frame["status"] == s, frame["jobs"], 0)
    frame["timed_jobs"] = np.where(frame["in_dur"], frame["timed"], 0)
    for col in ("dur_sum_ms", "wait_sum_ms"):
        frame[col] = np.where(frame["in_dur"], frame[col], 0.0)
    for col in ("healing_attempts", "healing_successes"):
        frame[col] = np.where(finished, frame[col], 0.0)
    agg = {"workflow_name": "max", "jobs": "sum", "completed": "sum", "failed": "sum", "cancelled": "sum",
           "timed_jobs": "sum", "dur_sum_ms": "sum", "wait_sum_ms": "sum", "healing_attempts": "sum",
           "healing_successes": "sum"}
    if not keys:
        out = frame.agg(agg).to_frame().T
    else:
        out = frame.groupby(keys, sort=False).agg(agg).reset_index()
    return out.rename(columns={"jobs": "total_jobs"})


def _merge_bins(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.groupby([*keys, "bin"], as_index=False)["n"].sum()


# ---------------------------------------------------------------------------------------------
# The page's sections
# ---------------------------------------------------------------------------------------------

def duration_percentiles(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan) -> dict:
    c = _by_status(counts(engine, f, plan, ("workflow_id",)), ["workflow_id"], f.statuses)
    dur = histograms(engine, f, plan, ("workflow_id",), "dur")
    wait = histograms(engine, f, plan, ("workflow_id",), "wait")
    names = [f"p{int(p * 100)}" for p in an.PERCENTILES]

    def pcts(hist, keys):
        return grouped_percentiles(hist, keys, an.PERCENTILES, names)

    def row(r, d, w, fleet):
        out = an._percentile_row({"is_fleet": fleet, "workflow_id": r.get("workflow_id"),
                                  "workflow_name": r.get("workflow_name"),
                                  "total_jobs": r["total_jobs"], "completed_jobs": r["completed"],
                                  "failed_jobs": r["failed"], "cancelled_jobs": r["cancelled"],
                                  "timed_jobs": r["timed_jobs"],
                                  "average_duration_ms": an._rate(r["dur_sum_ms"], r["timed_jobs"]),
                                  "average_queue_wait_ms": an._rate(r["wait_sum_ms"], r["timed_jobs"]),
                                  "dur": [d.get(n) for n in names] if d else None,
                                  "wait": [w.get(n) for n in names] if w else None})
        return out

    fleet_counts = c.drop(columns=["workflow_id"]).sum(numeric_only=True).to_dict() if not c.empty else {}
    fleet_counts = {k: fleet_counts.get(k, 0) for k in ("total_jobs", "completed", "failed", "cancelled",
                                                        "timed_jobs", "dur_sum_ms", "wait_sum_ms")}
    fleet_d = pcts(_merge_bins(dur, []).assign(all=1), ["all"]).to_dict("records")
    fleet_w = pcts(_merge_bins(wait, []).assign(all=1), ["all"]).to_dict("records")
    fleet = row(fleet_counts, fleet_d[0] if fleet_d else None, fleet_w[0] if fleet_w else None, True)
    fleet = {k: v for k, v in fleet.items() if k not in ("is_fleet", "workflow_id", "workflow_name")}
    d_by = {r["workflow_id"]: r for r in pcts(dur, ["workflow_id"]).to_dict("records")}
    w_by = {r["workflow_id"]: r for r in pcts(wait, ["workflow_id"]).to_dict("records")}
    rows = [row(r, d_by.get(r["workflow_id"]), w_by.get(r["workflow_id"]), False) for r in c.to_dict("records")]
    workflows = pd.DataFrame(rows, columns=an._PERCENTILE_COLUMNS)
    workflows = workflows.sort_values(["total_jobs", "workflow_id"], ascending=[False, True], ignore_index=True)
    covers = an.duration_covers(f)
    workflows.attrs["covers"] = covers
    return {"fleet": fleet, "workflows": workflows, "covers": covers, "exact": False}


def _bucket_frame(engine: Engine, f: an.AnalyticsFilters) -> pd.DataFrame:
    sql = f"""WITH {an._BUCKETS_CTE}
    SELECT b.bucket, date_add(b.bucket, CAST(:step AS interval), :tz) AS bucket_end,
           (b.bucket < CAST(:start AS timestamptz)
            OR date_add(b.bucket, CAST(:step AS interval), :tz) > CAST(:end AS timestamptz)) AS partial
    FROM buckets b ORDER BY b.bucket"""
    return an.read_frame(engine, sql, {"bucket": f.bucket, "tz": f.tz, "step": an.BUCKET_STEP[f.bucket],
                                       "start": f.start, "end": f.end})


def time_series(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan) -> pd.DataFrame:
    frame = _bucket_frame(engine, f)
    c = _by_status(counts(engine, f, plan, ("bucket",)), ["bucket"], f.statuses)
    p = grouped_percentiles(histograms(engine, f, plan, ("bucket",)), ["bucket"], (0.5, 0.95),
                            ["p50_duration_ms", "p95_duration_ms"]).drop(columns="timed")
    frame = frame.merge(c[["bucket", "total_jobs", "completed", "failed", "cancelled", "timed_jobs"]],
                        on="bucket", how="left").merge(p, on="bucket", how="left")
    for col in ("total_jobs", "completed", "failed", "cancelled", "timed_jobs"):
        frame[col] = frame[col].fillna(0).astype("int64")
    done = frame["completed"] + frame["failed"]
    frame["success_rate"] = (frame["completed"] / done.where(done > 0)).astype("float64")
    for col in ("p50_duration_ms", "p95_duration_ms"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame = frame[["bucket", "bucket_end", "partial", "total_jobs", "completed", "failed", "cancelled",
                   "success_rate", "timed_jobs", "p50_duration_ms", "p95_duration_ms"]]
    frame.attrs.update(covers=an.duration_covers(f), exact=False)
    return frame


def workflow_stats(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan, limit: int = 500) -> pd.DataFrame:
    c = _by_status(counts(engine, f, plan, ("workflow_id",)), ["workflow_id"], f.statuses)
    p95 = grouped_percentiles(histograms(engine, f, plan, ("workflow_id",)), ["workflow_id"], (0.95,),
                              ["p95_duration_ms"]).drop(columns="timed")
    errors = error_counts(engine, f, plan, ("workflow_id",))
    types = errors.groupby("workflow_id")["error_type"].nunique().rename("error_types").reset_index()
    frame = c.merge(p95, on="workflow_id", how="left").merge(types, on="workflow_id", how="left")
    frame["executions"] = frame["completed"] + frame["failed"]
    frame = frame[frame["executions"] > 0]
    frame["error_types"] = frame["error_types"].fillna(0).astype("int64")
    frame = frame.sort_values(["executions", "workflow_id"], ascending=[False, True], ignore_index=True).head(limit)
    frame["success_rate"] = [an._rate(a, b) for a, b in zip(frame["completed"], frame["executions"])]
    frame["self_healing_success_rate"] = [an._rate(s, a) for s, a in
                                          zip(frame["healing_successes"], frame["healing_attempts"])]
    for col in ("executions", "completed", "failed", "timed_jobs"):
        frame[col] = frame[col].astype("int64")
    for col in ("p95_duration_ms", "healing_attempts", "healing_successes", "success_rate",
                "self_healing_success_rate"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame = frame[["workflow_id", "workflow_name", "executions", "completed", "failed", "timed_jobs",
                   "p95_duration_ms", "healing_attempts", "healing_successes", "error_types", "success_rate",
                   "self_healing_success_rate"]]
    frame.attrs.update(covers=an.duration_covers(f), exact=False)
    return frame


def duration_histogram(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan, bins: int = 40,
                       log: bool | None = None) -> pd.DataFrame:
    log = f.log_scale if log is None else log
    hist = histograms(engine, f, plan, (), with_status=True)
    columns = ["bin", "bin_start_ms", "bin_end_ms", "status", "jobs"]
    out = pd.DataFrame(columns=columns)
    if not hist.empty:
        hist = hist.groupby(["status", "bin"], as_index=False)["n"].sum()
        values = rollups.bin_value(hist["bin"].to_numpy())
        v = np.log(np.maximum(values, 1.0)) if log else values
        lo, hi = float(v.min()), float(v.max())
        width = (hi - lo) / bins if hi > lo else 1.0 / bins
        hist["display_bin"] = np.clip(np.floor((v - lo) / width).astype(int) + 1, 1, bins)
        binned = hist.groupby(["display_bin", "status"], as_index=False)["n"].sum()
        edge = np.exp if log else (lambda x: x)
        rows = []
        for b in range(1, bins + 1):
            part = binned[binned["display_bin"] == b]
            start, end = float(edge(lo + (b - 1) * width)), float(edge(lo + b * width))
            if part.empty:
                rows.append({"bin": b, "bin_start_ms": start, "bin_end_ms": end, "status": None, "jobs": 0})
            for r in part.sort_values("status").to_dict("records"):
                rows.append({"bin": b, "bin_start_ms": start, "bin_end_ms": end, "status": r["status"],
                             "jobs": int(r["n"])})
        out = pd.DataFrame(rows, columns=columns)
    out.attrs.update(covers=an.duration_covers(f), log=log, exact=False)
    return out


def duration_box_stats(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan, limit: int = 25) -> pd.DataFrame:
    hist = histograms(engine, f, plan, ("workflow_id",))
    names = counts(engine, f, plan, ("workflow_id",)).groupby("workflow_id")["workflow_name"].max()
    ps = (0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
    cols = ["q1_ms", "median_ms", "q3_ms", "p90_ms", "p95_ms", "p99_ms"]
    rows = []
    for wf, part in hist.groupby("workflow_id"):
        part = part.groupby("bin", as_index=False)["n"].sum().sort_values("bin")
        values = rollups.bin_value(part["bin"].to_numpy())
        q = dict(zip(cols, percentiles_from_bins(part["bin"], part["n"], ps)))
        iqr = q["q3_ms"] - q["q1_ms"]
        low, high = q["q1_ms"] - 1.5 * iqr, q["q3_ms"] + 1.5 * iqr
        # The fence is the most extreme duration inside the limit: in the first (last) bin that
        # reaches past the limit, taken no further out than the limit itself.
        bottom, top = rollups.bin_edges(part["bin"].to_numpy())
        lower, upper = values[top > low], values[bottom <= high]
        rows.append({"workflow_id": wf, "workflow_name": names.get(wf), "timed_jobs": int(part["n"].sum()),
                     "min_ms": float(values.min()), **q, "max_ms": float(values.max()),
                     "lowerfence_ms": max(float(lower.min()), low) if len(lower) else None,
                     "upperfence_ms": min(float(upper.max()), high) if len(upper) else None})
    columns = ["workflow_id", "workflow_name", "timed_jobs", "min_ms", *cols[:3], *cols[3:], "max_ms",
               "lowerfence_ms", "upperfence_ms"]
    frame = pd.DataFrame(rows, columns=columns)
    frame = frame.sort_values(["timed_jobs", "workflow_id"], ascending=[False, True]).head(limit)
    frame = frame.sort_values(["median_ms", "workflow_id"], ascending=[False, True], ignore_index=True)
    frame.attrs.update(covers=an.duration_covers(f), exact=False)
    return frame


def errors_over_time(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan) -> pd.DataFrame:
    e = error_counts(engine, f, plan, ("bucket",))
    e = e.groupby(["bucket", "error_type"], as_index=False)["failures"].sum()
    return e.sort_values(["bucket", "error_type"], ignore_index=True)[["bucket", "error_type", "failures"]]


def errors_by_workflow(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan) -> pd.DataFrame:
    e = error_counts(engine, f, plan, ("workflow_id",))
    e = e.sort_values(["failures", "workflow_id", "error_type"], ascending=[False, True, True], ignore_index=True)
    return e[["workflow_id", "workflow_name", "error_type", "failures"]].head(2000)


def weekly_throughput(engine: Engine, f: an.AnalyticsFilters, now: datetime) -> pd.DataFrame | None:
    """an.weekly_throughput from the rollups; None when they cannot answer (exact path then)."""
    b = an.week_bounds(f.tz, now)
    first, this_week, last_week = b["baseline_start"], b["this_week"], b["last_week"]
    last_week_now = now - (this_week - last_week)
    next_week = an._local_add(this_week, timedelta(days=7), f.tz)
    weekly = an.AnalyticsFilters(**{**f.__dict__, "start": first, "end": next_week, "bucket": "week"})
    plan = rollups.usable_plan(engine, first, next_week, f.tz, "week", f.robots)
    to_date = rollups.usable_plan(engine, last_week, last_week_now, f.tz, None, f.robots)
    if plan is None or to_date is None:
        return None
    finished = ("completed", "failed")
    c = counts(engine, weekly, plan, ("bucket", "workflow_id"))
    c = c[c["status"].isin(finished)]
    ltd = counts(engine, weekly, to_date, ("workflow_id",))
    ltd = ltd[ltd["status"].isin(finished)].groupby("workflow_id")["jobs"].sum()
    hist = histograms(engine, weekly, plan, ("bucket", "workflow_id"))
    hist = hist[hist["bucket"] >= last_week]
    if c.empty:
        return pd.DataFrame(columns=an.WEEKLY_COLUMNS)
    c = c.assign(week=pd.to_datetime(c["bucket"], utc=True))
    rows = []
    for wf, part in [(None, c), *c.groupby("workflow_id")]:
        def jobs(week, status=None, part=part):
            sel = part[part["week"] == pd.Timestamp(week)]
            return int(sel[sel["status"] == status]["jobs"].sum() if status else sel["jobs"].sum())
        h = hist if wf is None else hist[hist["workflow_id"] == wf]

        def p95(week, h=h):
            sel = h[pd.to_datetime(h["bucket"], utc=True) == pd.Timestamp(week)]
            return percentiles_from_bins(sel["bin"], sel["n"], (0.95,))[0] if not sel.empty else None
        this, last = jobs(this_week), jobs(last_week)
        rows.append({
            "is_total": wf is None, "workflow_id": wf,
            "workflow_name": "All workflows" if wf is None else part["workflow_name"].max(),
            "this_week": this, "last_week_to_date": int(ltd.sum() if wf is None else ltd.get(wf, 0)),
            "last_week": last, "avg_4_weeks": float(part[part["week"] < pd.Timestamp(last_week)]["jobs"].sum()) / 4,
            "success_rate_this_week": an._rate(jobs(this_week, "completed"), this),
            "success_rate_last_week": an._rate(jobs(last_week, "completed"), last),
            "p95_this_week_ms": p95(this_week), "p95_last_week_ms": p95(last_week),
        })
    frame = pd.DataFrame(rows)

    def pct(new, base):
        return [(float(a) - float(b)) / float(b) * 100 if b else None for a, b in zip(new, base)]

    frame["change_pct"] = pct(frame["last_week"], frame["avg_4_weeks"])
    frame["pace_change_pct"] = pct(frame["this_week"], frame["last_week_to_date"])
    for col in ("avg_4_weeks", "success_rate_this_week", "success_rate_last_week", "p95_this_week_ms",
                "p95_last_week_ms", "change_pct", "pace_change_pct"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame = frame.sort_values(["is_total", "last_week", "this_week", "workflow_id"],
                              ascending=[False, False, False, True], ignore_index=True, na_position="first")
    frame = frame[an.WEEKLY_COLUMNS]
    frame.attrs.update(covers=an.duration_covers(f).replace(", created in the window", ""), exact=False)
    return frame


def anomaly_series(engine: Engine, f: an.AnalyticsFilters, first: datetime, stop: datetime,
                   latest: datetime, min_jobs: int) -> pd.DataFrame | None:
    """The per-workflow, per-bucket frame an.anomalies works from (same columns as its SQL),
    or None when the rollups cannot answer."""
    plan = rollups.usable_plan(engine, first, stop, f.tz, f.bucket, f.robots)
    if plan is None:
        return None
    window = an.AnalyticsFilters(**{**f.__dict__, "start": first, "end": stop})
    c = counts(engine, window, plan, ("workflow_id", "bucket"))
    fin = c[c["status"].isin(["completed", "failed"])]
    per = fin.groupby(["workflow_id", "bucket"], as_index=False).agg(workflow_name=("workflow_name", "max"),
                                                                     finished=("jobs", "sum"))
    failed = c[c["status"] == "failed"].groupby(["workflow_id", "bucket"])["jobs"].sum().rename("failed")
    per = per.merge(failed.reset_index(), on=["workflow_id", "bucket"], how="left")
    p95 = grouped_percentiles(histograms(engine, window, plan, ("workflow_id", "bucket")),
                              ["workflow_id", "bucket"], (0.95,), ["p95_duration_ms"])
    per = per.merge(p95.rename(columns={"timed": "timed_jobs"}), on=["workflow_id", "bucket"], how="outer")
    if per.empty:
        return pd.DataFrame(columns=["workflow_id", "workflow_name", "bucket", "finished", "failed", "timed_jobs",
                                     "failure_rate", "p95_duration_ms", "lp95", "is_latest", "latest_bucket",
                                     "n_fr", "n_lp", "fr_med", "lp_med", "fr_mad", "lp_mad"])
    names = c.groupby("workflow_id")["workflow_name"].max()
    per["workflow_name"] = per["workflow_id"].map(names)
    for col in ("finished", "failed", "timed_jobs"):
        per[col] = per[col].fillna(0).astype("int64")
    per["failure_rate"] = per["failed"] / per["finished"].where(per["finished"] > 0)
    per["lp95"] = np.log(np.maximum(per["p95_duration_ms"].astype("float64"), 1.0))
    per["bucket"] = pd.to_datetime(per["bucket"], utc=True)
    per["is_latest"] = per["bucket"] == pd.Timestamp(latest)
    per["latest_bucket"] = latest
    base = per[~per["is_latest"]]
    fr = base["failure_rate"].where(base["finished"] >= min_jobs)
    lp = base["lp95"].where(base["timed_jobs"] >= min_jobs)
    stats = {}
    for wf in per["workflow_id"].unique():
        sel = base["workflow_id"] == wf
        f_vals, l_vals = fr[sel].dropna().to_numpy(), lp[sel].dropna().to_numpy()
        fm = float(np.median(f_vals)) if len(f_vals) else math.nan
        lm = float(np.median(l_vals)) if len(l_vals) else math.nan
        stats[wf] = {"n_fr": len(f_vals), "n_lp": len(l_vals), "fr_med": fm, "lp_med": lm,
                     "fr_mad": float(np.median(np.abs(f_vals - fm))) if len(f_vals) else math.nan,
                     "lp_mad": float(np.median(np.abs(l_vals - lm))) if len(l_vals) else math.nan}
    for key in ("n_fr", "n_lp", "fr_med", "lp_med", "fr_mad", "lp_mad"):
        per[key] = per["workflow_id"].map(lambda wf, key=key: stats[wf][key])
    return per.sort_values(["workflow_id", "bucket"], ignore_index=True)
