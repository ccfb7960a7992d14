"""The analytics of data.analytics answered from the rollups (data.rollups) for long windows.

Each function here returns what its namesake in data.analytics returns, for a window that
``rollups.usable_plan`` has split into rollup rows and raw edges. Counts, sums and rates are
the same numbers; percentiles, quartiles and histogram edges come from the merged duration
histograms and are within ``rollups.MAX_RELATIVE_ERROR`` (1 %) of the exact values. Results carry
``exact = False`` (``attrs["exact"]`` on frames) so the page and the API can say so.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from data import analytics as an
from data import rollups
from data.cache import kept_read
from data.db import side_by_side
from data.rollups import WindowPlan

_BUCKET = "date_trunc(:bucket, x.t, :tz)"
# Merged histograms up to this many groups × bins are counted in one dense array (else sorted).
DENSE_CELLS = 4_000_000


def _where(f: an.AnalyticsFilters) -> tuple[str, dict]:
    """The page's filters as SQL, columns prefixed with ``{a}`` (the raw rows' alias; the
    rollups hold no robot, and a robot filter never reaches them)."""
    return an._scope(f, window=False, alias="{a}")


def _facts(f: an.AnalyticsFilters, plan: WindowPlan, table: str = "jobs") -> tuple[str, dict]:
    """The planned window's fact rows under the page's filters, and every parameter the
    queries below use."""
    where, params = _where(f)
    facts, plan_params = rollups.facts_sql(plan, where, table)
    return facts, {**params, **plan_params}


_SUMS = ("jobs", "timed", "dur_sum_ms", "wait_sum_ms", "healing_attempts", "healing_successes", "queued")


def _kept_by_name(engine: Engine, sql: str, params: dict) -> pd.DataFrame:
    """A grouped read kept for the page's sections (data.cache.kept_read), its rows ordered by
    workflow name: the last name of a regrouping is then its greatest (SQL's max, but fast)."""
    return kept_read(engine, sql, params, lambda: an.read_frame(engine, sql, params, hash_grouping=True)
                     .sort_values("workflow_name", kind="stable", ignore_index=True))


def _fact_sums(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan) -> pd.DataFrame:
    """The window's counts and sums per bucket, workflow and status (shared by the sections)."""
    facts, params = _facts(f, plan)
    sql = f"""
    SELECT {_BUCKET} AS bucket, x.workflow_id, x.status, max(x.workflow_name) AS workflow_name,
           sum(x.jobs)::bigint AS jobs, sum(x.timed)::bigint AS timed, sum(x.dur_sum_ms)::float8 AS dur_sum_ms,
           sum(x.wait_sum_ms)::float8 AS wait_sum_ms, sum(x.healing_attempts)::float8 AS healing_attempts,
           sum(x.healing_successes)::float8 AS healing_successes, sum(x.queued)::bigint AS queued
    FROM ({facts}) x GROUP BY 1, 2, 3"""
    return _kept_by_name(engine, sql, params)


def counts(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan, by: tuple[str, ...]) -> pd.DataFrame:
    """Per ``by`` (``bucket``, ``workflow_id``) and status: jobs, timed, sums."""
    sums = _fact_sums(engine, f, plan)
    agg = {"workflow_name": "last", **{c: "sum" for c in _SUMS}}
    return sums.groupby([*by, "status"], sort=False, dropna=False).agg(agg).reset_index()


def _fact_arrays(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan, metric: str):
    """The window's fact rows of ``f.statuses`` jobs with ``metric`` histograms (shared by the
    sections): their keys (bucket, workflow_id, status, workflow_name), each histogram's length,
    and all bins and counts in two vectors.

    The arrays travel as comma-separated text and are parsed in one pass here: unnesting them in
    SQL costs a row per bin, several times more than the transfer."""
    facts, params = _facts(f, plan)
    sql = f"""
        SELECT {_BUCKET} AS bucket, x.workflow_id, x.status, x.workflow_name,
               cardinality(x.{metric}_bin) AS length, array_to_string(x.{metric}_bin, ',') AS bins,
               array_to_string(x.{metric}_n, ',') AS ns
        FROM ({facts}) x WHERE x.status = ANY(:dur_statuses) AND cardinality(x.{metric}_bin) > 0
        ORDER BY x.workflow_name"""

    def load():
        rows = an.read_frame(engine, sql, params)
        vectors = [np.fromstring(",".join(rows.pop(c).tolist()), dtype=np.int32, sep=",") if len(rows) else
                   np.zeros(0, np.int32) for c in ("bins", "ns")]   # int32: half the memory kept
        return rows, rows.pop("length").to_numpy(np.int64), *vectors

    return kept_read(engine, sql, params, load)


def _merged(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan, keys: list[str], metric: str,
            with_total: bool = False) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """The ``metric`` histograms of the ``f.statuses`` fact rows merged per group of ``keys``
    (``with_total``: and a last group over all, its keys None): the groups (keys and
    workflow_name), and per merged cell, sorted by group then bin, its group, bin and count."""
    rows, lengths, bins, counts = _fact_arrays(engine, f, plan, metric)
    if keys:
        grouped = rows.groupby(keys, sort=True, dropna=False)
        groups = grouped["workflow_name"].last().reset_index()  # rows come by name: the greatest name
        group = np.repeat(grouped.ngroup().to_numpy(), lengths)
    else:
        groups = pd.DataFrame({"workflow_name": [rows["workflow_name"].max() if len(rows) else None]})
        group = np.zeros(len(bins), dtype=np.int64)
    total = with_total and bool(keys)
    if total:
        groups = pd.concat([groups, pd.DataFrame({k: [None] for k in [*keys, "workflow_name"]})], ignore_index=True)
    if not len(bins):
        return groups, *(np.zeros(0, np.int64),) * 3
    low, width = int(bins.min()), int(bins.max() - bins.min()) + 1
    offset = bins.astype(np.int64) - low
    cell = group * width + offset
    if len(groups) * width <= DENSE_CELLS:   # a count per group and bin: no sort needed
        dense = np.bincount(cell, weights=counts, minlength=len(groups) * width).reshape(len(groups), width)
        if total:
            dense[-1] = dense[:-1].sum(axis=0)
        cells = np.flatnonzero(dense)
        n = dense.ravel()[cells].astype(np.int64)
    else:
        if total:
            cell = np.concatenate([cell, (len(groups) - 1) * width + offset])
            counts = np.tile(counts, 2)
        cells, where = np.unique(cell, return_inverse=True)
        n = np.bincount(where, weights=counts).astype(np.int64)
    return groups, cells // width, cells % width + low, n


def percentiles(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan, by: tuple[str, ...], ps,
                names: list[str], metric: str = "dur", with_total: bool = False) -> pd.DataFrame:
    """Per ``by``: ``timed`` (how many values) and the percentiles ``ps`` (columns ``names``) of
    ``metric`` over the ``f.statuses`` jobs, from the merged histograms; ``with_total`` adds a
    row over all groups (its ``by`` columns None). As rollups.percentiles_from_bins: the order
    statistics around position (n - 1) × p, each at the middle of its bin, interpolated."""
    groups, group, bins, n = _merged(engine, f, plan, list(by), metric, with_total)
    totals, values = rollups.grouped_percentiles(group, bins, n, len(groups), ps)
    has = totals > 0
    out = groups[has].drop(columns="workflow_name").reset_index(drop=True)
    out["timed"] = totals[has]
    for i, name in enumerate(names):
        out[name] = values[has, i]
    return out


def error_counts(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan, by: tuple[str, ...]) -> pd.DataFrame:
    """Failures per ``by`` (``bucket``, ``workflow_id``) and error type."""
    facts, params = _facts(f, plan, "errors")
    sql = f"""
    SELECT {_BUCKET} AS bucket, x.workflow_id, x.error_type, max(x.workflow_name) AS workflow_name,
           sum(x.failures)::bigint AS failures
    FROM ({facts}) x GROUP BY 1, 2, 3"""
    found = _kept_by_name(engine, sql, params)
    agg = {"workflow_name": "last", "failures": "sum"}
    return found.groupby([*by, "error_type"], sort=False, dropna=False).agg(agg).reset_index()


def _names(frame: pd.DataFrame) -> pd.Series:
    """Each workflow's greatest name (as SQL's max; pandas compares strings one by one)."""
    return frame.sort_values("workflow_name", kind="stable").groupby("workflow_id")["workflow_name"].last()


def _by_status(frame: pd.DataFrame, keys: list[str], statuses) -> pd.DataFrame:
    """Counts per key with one column per status (jobs), totals of the rest."""
    if frame.empty:
        return pd.DataFrame(columns=[*keys, "workflow_name", "total_jobs", "completed", "failed", "cancelled",
                                     "timed_jobs", "dur_sum_ms", "wait_sum_ms", "healing_attempts",
                                     "healing_successes"])
    frame = frame.sort_values("workflow_name", kind="stable")   # a group's last name: its greatest
    frame["in_dur"] = frame["status"].isin(list(statuses))
    finished = frame["status"].isin(["completed", "failed"])
    for s in ("completed", "failed", "cancelled"):
        frame[s] = np.where(frame["status"] == s, frame["jobs"], 0)
    frame["timed_jobs"] = np.where(frame["in_dur"], frame["timed"], 0)
    for col in ("dur_sum_ms", "wait_sum_ms"):
        frame[col] = np.where(frame["in_dur"], frame[col], 0.0)
    for col in ("healing_attempts", "healing_successes"):
        frame[col] = np.where(finished, frame[col], 0.0)
    agg = {"workflow_name": "last", "jobs": "sum", "completed": "sum", "failed": "sum", "cancelled": "sum",
           "timed_jobs": "sum", "dur_sum_ms": "sum", "wait_sum_ms": "sum", "healing_attempts": "sum",
           "healing_successes": "sum"}
    return frame.groupby(keys, sort=False).agg(agg).reset_index().rename(columns={"jobs": "total_jobs"})


# ---------------------------------------------------------------------------------------------
# The page's sections
# ---------------------------------------------------------------------------------------------

def duration_percentiles(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan) -> dict:
    # Its three reads (counts, run durations, queue waits) are independent; the other sections
    # then find them kept.
    side_by_side(lambda: _fact_sums(engine, f, plan), lambda: _fact_arrays(engine, f, plan, "dur"),
                 lambda: _fact_arrays(engine, f, plan, "wait"))
    c = _by_status(counts(engine, f, plan, ("workflow_id",)), ["workflow_id"], f.statuses)
    names = [f"p{int(p * 100)}" for p in an.PERCENTILES]

    def pcts(metric):  # per workflow, and the fleet (workflow_id None)
        found = percentiles(engine, f, plan, ("workflow_id",), an.PERCENTILES, names, metric, with_total=True)
        return {r["workflow_id"] if isinstance(r["workflow_id"], str) else None: r for r in found.to_dict("records")}

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
    d_by, w_by = pcts("dur"), pcts("wait")
    fleet = row(fleet_counts, d_by.get(None), w_by.get(None), True)
    fleet = {k: v for k, v in fleet.items() if k not in ("is_fleet", "workflow_id", "workflow_name")}
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
    p = percentiles(engine, f, plan, ("bucket",), (0.5, 0.95),
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


def queue_depth_series(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan) -> pd.DataFrame:
    """an.queue_depth_series from the rollups: the jobs waiting at instant t are those created
    before t (``queued``) minus those that left before t (``left_bin``, by the hour; the part of
    the window start's hour before the start is counted from the raw rows). Unlike the exact
    query, which looks 7 days back for jobs created before the window, every job counts."""
    frame = _bucket_frame(engine, f)[["bucket"]]
    first = an.read_frame(engine, "SELECT min(created_at) AS t FROM job_queue")["t"].iloc[0]
    cov = rollups.coverage(engine)
    if first is None or pd.isna(first) or first >= f.end:
        return frame.assign(at=[max(b, f.start) for b in frame["bucket"]], queue_depth=0)
    first = rollups.floor_hour(first.to_pydatetime())
    before = f.start > first and rollups.plan_window(first, f.start, cov.until, zone=cov.zone)
    waiting = 0
    if before:
        counted = counts(engine, f, before, ())
        waiting = int(counted["queued"].sum())
    arrivals = counts(engine, f, plan, ("bucket",)).groupby("bucket")["queued"].sum()
    # Departures by the hour, over every job created before the window end: the arrays travel
    # as text and are counted here (unnesting them in SQL costs a row per hour and job group).
    facts, params = _facts(f, rollups.plan_window(first, f.end, cov.until, zone=cov.zone))
    left = an.read_frame(engine, f"""
        SELECT array_to_string(x.left_bin, ',') AS hours, array_to_string(x.left_n, ',') AS ns
        FROM ({facts}) x WHERE cardinality(x.left_bin) > 0""", params)
    hours, ns = (np.fromstring(",".join(left[c].tolist()), dtype=np.int64, sep=",") if len(left) else
                 np.zeros(0, np.int64) for c in ("hours", "ns"))
    order = np.argsort(hours, kind="stable")
    hours, gone = hours[order], np.concatenate([[0], np.cumsum(ns[order])])

    def gone_before(t) -> int:   # jobs that left in an hour before the one t starts
        return int(gone[np.searchsorted(hours, int(pd.Timestamp(t).timestamp() // 3600))])

    where, where_params = _where(f)
    early = an.read_frame(engine, f"""
        SELECT count(*) AS n FROM job_queue j
        WHERE j.status <> 'pending' AND {where.format(a='j.')}
          AND ((j.started_at >= :h AND j.started_at < :start)
               OR (j.started_at IS NULL AND j.completed_at >= :h AND j.completed_at < :start))""",
        {**where_params, "h": rollups.floor_hour(f.start), "start": f.start})["n"].iloc[0]
    depths, arrived = [], waiting
    for i, bucket in enumerate(frame["bucket"]):
        depths.append(waiting - gone_before(f.start) - int(early) if i == 0 else arrived - gone_before(bucket))
        arrived += int(arrivals.get(bucket, 0))
    return frame.assign(at=[max(pd.Timestamp(b), pd.Timestamp(f.start)) for b in frame["bucket"]],
                        queue_depth=np.array(depths, dtype="int64"))


def workflow_stats(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan, limit: int = 500) -> pd.DataFrame:
    c = _by_status(counts(engine, f, plan, ("workflow_id",)), ["workflow_id"], f.statuses)
    p95 = percentiles(engine, f, plan, ("workflow_id",), (0.95,), ["p95_duration_ms"]).drop(columns="timed")
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
    groups, group, cells, n = _merged(engine, f, plan, ["status"], "dur")
    columns = ["bin", "bin_start_ms", "bin_end_ms", "status", "jobs"]
    out = pd.DataFrame(columns=columns)
    if len(cells):
        values = rollups.bin_value(cells)
        v = np.log(np.maximum(values, 1.0)) if log else values
        lo, hi = float(v.min()), float(v.max())
        width = (hi - lo) / bins if hi > lo else 1.0 / bins
        shown = pd.DataFrame({"bin": np.clip(np.floor((v - lo) / width).astype(int) + 1, 1, bins),
                              "status": groups["status"].to_numpy()[group], "jobs": n})
        shown = shown.groupby(["bin", "status"], as_index=False)["jobs"].sum()
        # Every display bin gets a row; an empty one a row without status.
        out = pd.DataFrame({"bin": np.arange(1, bins + 1)}).merge(shown, on="bin", how="left")
        edge = np.exp if log else (lambda x: x)
        out["bin_start_ms"] = edge(lo + (out["bin"] - 1) * width).astype(float)
        out["bin_end_ms"] = edge(lo + out["bin"] * width).astype(float)
        out["status"] = out["status"].astype(object).where(out["status"].notna(), None)
        out["jobs"] = out["jobs"].fillna(0).astype(int)
        out = out[columns]
    out.attrs.update(covers=an.duration_covers(f), log=log, exact=False)
    return out


def duration_box_stats(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan, limit: int = 25) -> pd.DataFrame:
    groups, group, bins, n = _merged(engine, f, plan, ["workflow_id"], "dur")
    ps = (0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
    cols = ["q1_ms", "median_ms", "q3_ms", "p90_ms", "p95_ms", "p99_ms"]
    totals, qs = rollups.grouped_percentiles(group, bins, n, len(groups), ps)
    values = rollups.bin_value(bins)
    bottom, top = rollups.bin_edges(bins)
    starts = np.searchsorted(group, np.arange(len(groups) + 1))   # each group's cells, in bin order
    rows = []
    for g in np.flatnonzero(totals > 0):
        cell = slice(starts[g], starts[g + 1])
        q = dict(zip(cols, (float(x) for x in qs[g])))
        iqr = q["q3_ms"] - q["q1_ms"]
        low, high = q["q1_ms"] - 1.5 * iqr, q["q3_ms"] + 1.5 * iqr
        # The fence is the most extreme duration inside the limit: in the first (last) bin that
        # reaches past the limit, taken no further out than the limit itself.
        lower, upper = values[cell][top[cell] > low], values[cell][bottom[cell] <= high]
        rows.append({"workflow_id": groups["workflow_id"].iloc[g], "workflow_name": groups["workflow_name"].iloc[g],
                     "timed_jobs": int(totals[g]), "min_ms": float(values[cell].min()), **q,
                     "max_ms": float(values[cell].max()),
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


def top_error_messages(engine: Engine, f: an.AnalyticsFilters, plan: WindowPlan, limit: int = 10) -> pd.DataFrame:
    facts, params = _facts(f, plan, "errors")
    sql = f"""
    SELECT x.message AS error_message, x.error_type, sum(x.failures)::bigint AS failures,
           count(DISTINCT x.workflow_id) AS workflows,
           CASE WHEN count(DISTINCT x.workflow_id) = 1 THEN min(x.workflow_id) END AS workflow_id,
           max(x.last_seen) AS last_seen
    FROM ({facts}) x WHERE x.message <> ''
    GROUP BY 1, 2 ORDER BY failures DESC, last_seen DESC
    LIMIT :limit"""
    return an.read_frame(engine, sql, {**params, "limit": limit})


def weekly_throughput(engine: Engine, f: an.AnalyticsFilters, now: datetime) -> pd.DataFrame | None:
    """an.weekly_throughput from the rollups; None when they cannot answer (exact path then)."""
    b = an.week_bounds(f.tz, now)
    first, this_week, last_week = b["baseline_start"], b["this_week"], b["last_week"]
    last_week_now = now - (this_week - last_week)
    next_week = an._local_add(this_week, timedelta(days=7), f.tz)
    if f.bucket == "week" and f.start <= first and timedelta(0) <= now - f.end <= timedelta(minutes=1):
        # The page shows these weeks up to a moment ago: its own reads (kept) answer.
        weekly = recent_weeks = f
        plan = recent = rollups.usable_plan(engine, f.start, f.end, f.tz, "week", f.robots)
    else:
        weekly = an.AnalyticsFilters(**{**f.__dict__, "start": first, "end": next_week, "bucket": "week"})
        recent_weeks = an.AnalyticsFilters(**{**weekly.__dict__, "start": last_week})
        plan = rollups.usable_plan(engine, first, next_week, f.tz, "week", f.robots)
        recent = rollups.usable_plan(engine, last_week, next_week, f.tz, "week", f.robots)
    to_date = rollups.usable_plan(engine, last_week, last_week_now, f.tz, None, f.robots)
    if plan is None or to_date is None or recent is None:
        return None
    c = counts(engine, weekly, plan, ("bucket", "workflow_id"))
    c = c[c["status"].isin(["completed", "failed"]) & (pd.to_datetime(c["bucket"], utc=True) >= pd.Timestamp(first))]
    if c.empty:
        return pd.DataFrame(columns=an.WEEKLY_COLUMNS)
    ltd = counts(engine, weekly, to_date, ("workflow_id",))
    ltd = ltd[ltd["status"].isin(["completed", "failed"])].groupby("workflow_id")["jobs"].sum()
    c["week"] = pd.to_datetime(c["bucket"], utc=True).map(
        {pd.Timestamp(this_week): "this", pd.Timestamp(last_week): "last"}).fillna("before")
    c["done"] = np.where(c["status"] == "completed", c["jobs"], 0)
    per = c.pivot_table(index="workflow_id", columns="week", values=["jobs", "done"], aggfunc="sum", fill_value=0)
    per.columns = [f"{a}_{b}" for a, b in per.columns]
    per = per.reindex(columns=[f"{a}_{b}" for a in ("jobs", "done") for b in ("this", "last", "before")],
                      fill_value=0)
    per = pd.concat([per.sum().to_frame("").T, per])  # "" = all workflows, first
    p95 = pd.concat([percentiles(engine, recent_weeks, recent, ("bucket",), (0.95,), ["p95"]).assign(workflow_id=""),
                     percentiles(engine, recent_weeks, recent, ("bucket", "workflow_id"), (0.95,), ["p95"])])
    p95 = p95.set_index([pd.to_datetime(p95["bucket"], utc=True), "workflow_id"])["p95"]
    names = _names(c)
    frame = pd.DataFrame({
        "is_total": per.index == "", "workflow_id": [w or None for w in per.index],
        "workflow_name": ["All workflows" if w == "" else names.get(w) for w in per.index],
        "this_week": per["jobs_this"].to_numpy(), "last_week_to_date": [int(ltd.sum()) if w == "" else
                                                                          int(ltd.get(w, 0)) for w in per.index],
        "last_week": per["jobs_last"].to_numpy(), "avg_4_weeks": per["jobs_before"].to_numpy() / 4,
        "success_rate_this_week": [an._rate(d, n) for d, n in zip(per["done_this"], per["jobs_this"])],
        "success_rate_last_week": [an._rate(d, n) for d, n in zip(per["done_last"], per["jobs_last"])],
        "p95_this_week_ms": [p95.get((pd.Timestamp(this_week), w)) for w in per.index],
        "p95_last_week_ms": [p95.get((pd.Timestamp(last_week), w)) for w in per.index],
    })
    frame = an.weekly_table(frame, f)
    frame.attrs["exact"] = False
    return frame


def anomaly_series(engine: Engine, f: an.AnalyticsFilters, first: datetime, stop: datetime,
                   latest: datetime, min_jobs: int) -> pd.DataFrame | None:
    """The per-workflow, per-bucket frame an.anomalies works from (same columns as its SQL),
    or None when the rollups cannot answer."""
    if f.start <= first and stop <= f.end:   # whole buckets of the page's window: share its reads
        window = f
        plan = rollups.usable_plan(engine, f.start, f.end, f.tz, f.bucket, f.robots)
    else:
        window = an.AnalyticsFilters(**{**f.__dict__, "start": first, "end": stop})
        plan = rollups.usable_plan(engine, first, stop, f.tz, f.bucket, f.robots)
    if plan is None:
        return None

    def buckets(frame):
        t = pd.to_datetime(frame["bucket"], utc=True)
        return frame[(t >= pd.Timestamp(first)) & (t < pd.Timestamp(stop))].assign(bucket=t)

    c = buckets(counts(engine, window, plan, ("workflow_id", "bucket")))
    fin = c[c["status"].isin(["completed", "failed"])]
    per = fin.groupby(["workflow_id", "bucket"], as_index=False).agg(finished=("jobs", "sum"))
    failed = c[c["status"] == "failed"].groupby(["workflow_id", "bucket"])["jobs"].sum().rename("failed")
    per = per.merge(failed.reset_index(), on=["workflow_id", "bucket"], how="left")
    p95 = buckets(percentiles(engine, window, plan, ("workflow_id", "bucket"), (0.95,), ["p95_duration_ms"]))
    per = per.merge(p95.rename(columns={"timed": "timed_jobs"}), on=["workflow_id", "bucket"], how="outer")
    if per.empty:
        return pd.DataFrame(columns=["workflow_id", "workflow_name", "bucket", "finished", "failed", "timed_jobs",
                                     "failure_rate", "p95_duration_ms", "lp95", "is_latest", "latest_bucket",
                                     "n_fr", "n_lp", "fr_med", "lp_med", "fr_mad", "lp_mad"])
    names = _names(c)
    per["workflow_name"] = per["workflow_id"].map(names)
    for col in ("finished", "failed", "timed_jobs"):
        per[col] = per[col].fillna(0).astype("int64")
    per["failure_rate"] = per["failed"] / per["finished"].where(per["finished"] > 0)
    per["lp95"] = np.log(np.maximum(per["p95_duration_ms"].astype("float64"), 1.0))
    per["is_latest"] = per["bucket"] == pd.Timestamp(latest)
    per["latest_bucket"] = latest
    base = per[~per["is_latest"]]
    # Per workflow: how many baseline buckets count, their median and median absolute deviation.
    for name, values in (("fr", base["failure_rate"].where(base["finished"] >= min_jobs)),
                         ("lp", base["lp95"].where(base["timed_jobs"] >= min_jobs))):
        by = values.groupby(base["workflow_id"])
        median = by.median()
        mad = (values - base["workflow_id"].map(median)).abs().groupby(base["workflow_id"]).median()
        per[f"n_{name}"] = per["workflow_id"].map(by.count()).fillna(0).astype("int64")
        per[f"{name}_med"] = per["workflow_id"].map(median).astype("float64")
        per[f"{name}_mad"] = per["workflow_id"].map(mad).astype("float64")
    return per[["workflow_id", "workflow_name", "bucket", "finished", "failed", "timed_jobs", "failure_rate",
                "p95_duration_ms", "lp95", "is_latest", "latest_bucket", "n_fr", "n_lp", "fr_med", "lp_med",
                "fr_mad", "lp_mad"]].sort_values(["workflow_id", "bucket"], ignore_index=True)
