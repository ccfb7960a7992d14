"""The REST API under /api/v1: the pages' numbers as JSON, from the pages' own data functions.

Every endpoint calls the data function its page calls (data.fleet, data.queue, data.robots,
data.jobs, data.analytics, data.actions) and sends its result through a pydantic response
model, which is also what the OpenAPI document (/api/v1/openapi.json) and the reference page
(/api/v1/docs) describe. Field names are the orchestrator's where it has one; durations are in
milliseconds (a field name says otherwise: ``_s``/``_seconds``); times are ISO 8601 in UTC with
their offset.

Access: every route needs a valid bearer token (POST /api/v1/auth/login) or a signed-in
session; the sign-in guard in server.auth answers 401 otherwise. Operator actions need the
operator role, /admin/* the admin role, both checked here on the server.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

import flask
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule

from data import actions, analytics, fleet, jobs, robots
from data.queue import queue_breakdown
from data.status import LIVE_STATUSES
from data.timeutil import is_valid_tz
from server.auth import client_addr, identity, require_role
from server.openapi import Api, ApiError, Instant, api_error, render_docs
from server.state import current

API_PREFIX = "/api/v1"
API_VERSION = "1.0.0"
MAX_JOBS_LIMIT = 500

blueprint = flask.Blueprint("fleet_api", __name__, url_prefix=API_PREFIX)
api = Api(
    blueprint,
    title="Fleet Monitor API",
    version=API_VERSION,
    description=(
        "The numbers the Fleet Monitor pages show, as JSON, for scripts and integrations. Every "
        "endpoint is answered by the same data functions as the pages.\n\n"
        "Authenticate with `Authorization: Bearer <access token>` (POST /api/v1/auth/login with "
        '`{"username", "password"}` returns one; it lasts 15 minutes, POST /api/v1/auth/refresh '
        "with the refresh token renews it).\n\n"
        "Durations are in milliseconds unless the field name says `_s` or `_seconds`; times are "
        "ISO 8601 in UTC with their offset. Unknown or malformed parameters are rejected with "
        "HTTP 400 naming each parameter; unknown ids give 404; every error has the shape "
        '`{"error": {"status", "code", "message"}}`. Fleet, queue and robot responses carry an '
        "ETag: send it back in If-None-Match and get 304 when nothing changed."
    ),
)


# ---------------------------------------------------------------------------------------------
# Shared types
# ---------------------------------------------------------------------------------------------
def _valid_tz(value: str) -> str:
    if not is_valid_tz(value):
        raise ValueError("unknown time zone; use an IANA name such as UTC or Europe/Berlin")
    return value


TimeZone = Annotated[str, Field(max_length=64, description="IANA time zone for calendar days and buckets "
                                "(e.g. Europe/Berlin); default UTC."), AfterValidator(_valid_tz)]
Text255 = Annotated[str, Field(min_length=1, max_length=255)]
JobStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
LiveStatus = Literal[tuple(LIVE_STATUSES)]  # type: ignore[valid-type]


class QueryModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    """Response models read the data functions' dicts and keep only their declared fields."""
    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------------------------------------
# Fleet
# ---------------------------------------------------------------------------------------------
class FleetQuery(QueryModel):
    tz: TimeZone = "UTC"


class FleetResponse(Out):
    total_robots: int
    active_robots: int = Field(description="Robots busy running jobs.")
    idle_robots: int
    online_robots: int = Field(description="Busy plus idle robots.")
    offline_robots: int
    error_robots: int
    maintenance_robots: int
    robots_by_status: dict[str, int] = Field(description="Robots per live status.")
    queue_depth: int = Field(description="Pending jobs.")
    active_jobs: int = Field(description="Running jobs.")
    oldest_pending_age_seconds: float | None
    total_jobs_today: int = Field(description="Jobs created since midnight in `tz`.")
    completed_jobs_today: int
    failed_jobs_today: int
    success_rate_24h: float | None = Field(description="completed / (completed + failed), finished in the last 24 hours.")
    finished_jobs_24h: int
    average_job_duration_seconds: float | None = Field(description="Jobs finished in the last 24 hours (orchestrator's name, seconds).")
    average_job_duration_ms: float | None = Field(description="The same in milliseconds.")
    tz: str
    as_of: Instant


@api.route("/metrics/fleet", summary="The Fleet overview's numbers", tags=["Fleet"], query=FleetQuery,
           response=FleetResponse, etag=True, volatile=("as_of", "oldest_pending_age_seconds"))
def fleet_metrics(query: FleetQuery):
    """Robot counts by live status, queue depth, running jobs, today's jobs and the last 24 hours'
    success rate and average duration: data.fleet.fleet_kpis, as on the overview page."""
    state = current()
    kpis = dict(fleet.fleet_kpis(state.engine, query.tz, state.settings.offline_after_seconds))
    kpis.pop("change_token", None)
    seconds = kpis.get("average_job_duration_seconds")
    kpis["average_job_duration_ms"] = None if seconds is None else float(seconds) * 1000.0
    kpis["robots_by_status"] = {
        "busy": kpis["active_robots"], "idle": kpis["idle_robots"], "error": kpis["error_robots"],
        "maintenance": kpis["maintenance_robots"], "offline": kpis["offline_robots"],
    }
    kpis["tz"] = query.tz
    return kpis


# ---------------------------------------------------------------------------------------------
# Queue
# ---------------------------------------------------------------------------------------------
class QueueEnvironment(Out):
    environment: str
    queue_depth: int
    delayed_jobs: int = Field(description="Pending jobs not yet visible to robots (visible_after in the future).")
    running_jobs: int
    oldest_pending_created_at: Instant | None
    oldest_pending_age_seconds: float | None


class QueuePriority(Out):
    priority: int | None
    queue_depth: int
    delayed_jobs: int
    oldest_pending_created_at: Instant | None
    oldest_pending_age_seconds: float | None


class QueueEnvironmentPriority(QueuePriority):
    environment: str


class QueueResponse(Out):
    queue_depth: int = Field(description="Pending jobs.")
    delayed_jobs: int
    running_jobs: int
    oldest_pending_created_at: Instant | None
    oldest_pending_age_seconds: float | None
    oldest_running_started_at: Instant | None
    longest_running_seconds: float | None
    by_environment: list[QueueEnvironment]
    by_priority: list[QueuePriority] = Field(description="Pending jobs per priority, highest (claimed first) first.")
    by_environment_priority: list[QueueEnvironmentPriority]
    as_of: Instant


@api.route("/metrics/queue", summary="Queue depth by environment and priority", tags=["Fleet"],
           response=QueueResponse, etag=True,
           volatile=("as_of", "oldest_pending_age_seconds", "longest_running_seconds"))
def queue_metrics():
    """Pending jobs by environment and by priority, the oldest pending job and the
    longest-running job: data.queue.queue_breakdown."""
    return queue_breakdown(current().engine)


# ---------------------------------------------------------------------------------------------
# Robots
# ---------------------------------------------------------------------------------------------
_ROBOT_SORTS = tuple(robots.LIST_COLUMNS) + tuple("-" + c for c in robots.LIST_COLUMNS)


class RobotsQuery(QueryModel):
    status: list[LiveStatus] = Field(default_factory=list, max_length=5, description="Live statuses (any of).")
    environment: list[Text255] = Field(default_factory=list, max_length=50, description="Environments (any of).")
    capability: list[Text255] = Field(default_factory=list, max_length=50, description="Capabilities (all of).")
    tag: list[Text255] = Field(default_factory=list, max_length=50, description="Tags (all of).")
    sort: Literal[_ROBOT_SORTS] | None = Field(None, description="A column, '-column' for descending; default environment, name.")  # type: ignore[valid-type]
    tz: TimeZone = "UTC"


class RobotSummary(Out):
    robot_id: str
    name: str | None
    hostname: str | None
    status: LiveStatus = Field(description="Live status: the stored status corrected by heartbeat age.")
    stored_status: str | None
    environment: str | None
    capabilities: list[Any]
    tags: list[Any]
    max_concurrent_jobs: int
    running_jobs: int
    current_job_id: str | None
    current_workflow: str | None
    last_heartbeat: Instant | None
    heartbeat_age_s: float | None
    silent: bool | None = Field(description="No heartbeat for longer than the offline threshold (and not in maintenance).")
    cpu_percent: float | None
    memory_percent: float | None
    memory_mb: float | None
    disk_percent: float | None
    completed_today: int
    failed_today: int
    completed_7d: int
    finished_7d: int
    success_rate_7d: float | None
    utilization_24h: float = Field(description="Busy time over capacity in the last 24 hours (0..1).")


class RobotsResponse(Out):
    robots: list[RobotSummary]
    count: int
    tz: str


@api.route("/metrics/robots", summary="The fleet list", tags=["Robots"], query=RobotsQuery,
           response=RobotsResponse, etag=True, volatile=("heartbeat_age_s", "utilization_24h"))
def robots_list(query: RobotsQuery):
    """One row per robot with its live status, current job, latest metrics, today's and the last 7
    days' jobs and its utilization: data.robots.robot_list, as on the Robots page."""
    state = current()
    frame = robots.robot_list(state.engine, query.tz, state.settings.offline_after_seconds,
                              status=query.status or None, environment=query.environment or None,
                              capability=query.capability or None, tag=query.tag or None, sort=query.sort)
    return {"robots": frame, "count": len(frame), "tz": query.tz}


class RobotJobCounts(Out):
    pending: int
    running: int
    completed: int
    failed: int
    cancelled: int
    total_jobs: int
    success_rate: float | None


class RobotJob(Out):
    job_id: str
    workflow_id: str
    workflow_name: str
    status: str
    created_at: Instant
    started_at: Instant | None
    completed_at: Instant | None
    duration_ms: float | None
    retry_count: int | None
    error_type: str | None


class RobotDetail(Out):
    robot_id: str
    name: str | None
    hostname: str | None
    status: LiveStatus
    stored_status: str | None
    environment: str | None
    capabilities: list[Any]
    tags: list[Any]
    max_concurrent_jobs: int
    running_jobs: int
    current_job_id: str | None
    current_workflow: str | None
    last_heartbeat: Instant | None
    heartbeat_age_s: float | None
    silent: bool | None
    registered_at: Instant | None
    last_seen: Instant | None
    tenant_id: str | None
    cpu_percent: float | None
    memory_percent: float | None
    memory_mb: float | None
    disk_percent: float | None
    uptime_seconds: float | None
    has_heartbeat_history: bool
    job_counts_24h: RobotJobCounts = Field(description="The robot's jobs created in the last 24 hours, by status.")
    latest_jobs: list[RobotJob] = Field(description="The robot's 20 latest jobs, newest first.")
    as_of: Instant


ROBOT_ID = {"type": "string", "minLength": 1, "maxLength": 255, "description": "The robot's id (compared as text)."}


@api.route("/metrics/robots/<robot_id>", summary="One robot", tags=["Robots"], response=RobotDetail,
           path_params={"robot_id": ROBOT_ID}, errors=(404,), etag=True, volatile=("heartbeat_age_s", "as_of"))
def robot_one(robot_id: str):
    """The robot page's header (data.robots.robot_detail), its job counts of the last 24 hours
    (robot_job_counts) and its latest jobs (robot_latest_jobs)."""
    state = current()
    detail = robots.robot_detail(state.engine, robot_id, state.settings.offline_after_seconds)
    detail = dict(detail) if detail is not None else None
    if detail is None:
        raise ApiError(404, "not_found", f"No robot with id {robot_id!r}.")
    end = datetime.now(timezone.utc)
    detail["job_counts_24h"] = robots.robot_job_counts(state.engine, detail["robot_id"], end - timedelta(hours=24), end)
    detail["latest_jobs"] = robots.robot_latest_jobs(state.engine, detail["robot_id"], 20)
    return detail


# ---------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------
class JobsQuery(QueryModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=False)

    status: list[JobStatus] = Field(default_factory=list, max_length=5, description="Statuses (any of).")
    workflow: list[Text255] = Field(default_factory=list, max_length=50, description="Workflow ids (any of).")
    robot: Text255 | None = Field(None, description="Robot id.")
    environment: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    range: Literal[tuple(jobs.RANGE_VALUES)] | None = Field(  # type: ignore[valid-type]
        None, description="Created in the last 1h/24h/7d/30d/90d, today (in `tz`), or custom (`from`/`to`).")
    from_: Annotated[str, Field(max_length=40)] | None = Field(
        None, alias="from", description="Custom window start (ISO 8601; without an offset: in `tz`). Inclusive.")
    to: Annotated[str, Field(max_length=40)] | None = Field(None, description="Custom window end (ISO 8601). Exclusive.")
    error_type: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")] | None = Field(
        None, description="Classified error type, e.g. TimeoutError.")
    q: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        None, description=(
            "Text in the error message (case-insensitive, literal: % and _ match themselves). Where the "
            "database has a trigram index (pg_trgm) every job of the time range is searched; without one the "
            f"search reads the newest {jobs.SEARCH_SCAN_CAP:,} jobs with an error message in the time range, "
            "and older jobs are searched by choosing a time range that ends before them (range=custom, `to`). "
            "The cursor keeps the same searched jobs from page to page."))
    sort: Literal[tuple(jobs.SORTS)] = Field("-created", description="-created (newest first), created, -duration, duration.")  # type: ignore[valid-type]
    cursor: Annotated[str, Field(min_length=1, max_length=500)] | None = Field(
        None, description="Opaque: the next_cursor of the previous page (with the same filters and sort).")
    limit: int = Field(50, ge=1, le=MAX_JOBS_LIMIT, description="Jobs per page.")
    tz: TimeZone = "UTC"


class JobSummary(Out):
    job_id: str
    workflow_id: str
    workflow_name: str
    robot_id: str | None
    status: str
    priority: int | None
    environment: str | None
    created_at: Instant
    started_at: Instant | None
    completed_at: Instant | None
    queue_wait_ms: float | None
    duration_ms: float | None
    retry_count: int | None
    max_retries: int | None
    error_type: str | None
    error_message: str | None


class JobsResponse(Out):
    jobs: list[JobSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
    limit: int
    sort: str
    filters: dict[str, str] = Field(description="The filters applied, in their query form.")


def _job_filters(query: JobsQuery) -> jobs.JobFilters:
    raw = {"status": ",".join(query.status), "workflow": ",".join(query.workflow), "robot": query.robot,
           "environment": query.environment, "range": query.range, "from": query.from_, "to": query.to,
           "error_type": query.error_type, "q": query.q}
    filters, problems = jobs.parse_filters({k: v for k, v in raw.items() if v})
    if problems:
        raise ApiError(400, "invalid_parameter", " ".join(problems),
                       problems=[{"parameter": "filters", "problem": p} for p in problems])
    return filters


@api.route("/metrics/jobs", summary="The job history, by keyset pages", tags=["Jobs"], query=JobsQuery,
           response=JobsResponse)
def jobs_list(query: JobsQuery):
    """The filtered job history (data.jobs.list_jobs, as on the Executions page), one page at a
    time: follow `next_cursor` until it is null. Pages are keyset-based, so every page costs the
    same however deep it is."""
    filters = _job_filters(query)
    try:
        page = jobs.list_jobs(current().engine, filters, query.tz, sort=query.sort, after=query.cursor,
                              limit=query.limit)
    except ValueError as exc:
        raise ApiError(400, "invalid_parameter", f"cursor: {exc}",
                       problems=[{"parameter": "cursor", "problem": str(exc)}]) from None
    return {"jobs": page["jobs"], "next_cursor": page["next_cursor"], "limit": page["limit"],
            "sort": page["sort"], "filters": filters.to_query()}


class Step(Out):
    step: int | None
    node_id: str
    node_type: str | None
    status: str
    started_at: Instant | None
    completed_at: Instant | None
    duration_ms: float | None
    error: str | None
    output: Any = None
    timing: str | None


class NeighbourRun(Out):
    position: Literal["previous", "next"]
    job_id: str
    status: str
    robot_id: str | None
    created_at: Instant
    started_at: Instant | None
    completed_at: Instant | None
    duration_ms: float | None


class DurationComparison(Out):
    runs: int
    p50_duration_ms: float | None
    p95_duration_ms: float | None
    duration_ms: float | None
    ratio_to_p50: float | None
    rank: float | None = Field(description="Share of the compared runs that were not longer than this job.")
    since: Instant | None
    until: Instant | None
    covers: str


class DeadLetterEntry(Out):
    id: str | None = None
    original_job_id: str | None = None
    workflow_id: str | None = None
    workflow_name: str | None = None
    error_message: str | None = None
    error_details: Any = None
    retry_count: int | None = None
    first_failed_at: Instant | None = None
    last_failed_at: Instant | None = None
    created_at: Instant | None = None
    reprocessed_at: Instant | None = None
    reprocessed_by: str | None = None
    pending: bool


class JobDetail(Out):
    job_id: str
    source: Literal["job_queue", "dlq"] = Field(description="dlq: the job was moved to the dead-letter queue.")
    workflow_id: str | None
    workflow_name: str | None
    status: str
    robot_id: str | None
    environment: str | None
    priority: int | None
    retry_count: int | None
    max_retries: int | None
    created_at: Instant | None
    claimed_at: Instant | None = Field(description="When a robot claimed the job (started_at).")
    started_at: Instant | None
    completed_at: Instant | None
    visible_after: Instant | None
    error_message: str | None
    error_type: str | None
    queue_wait_ms: float | None
    duration_ms: float | None
    elapsed_ms: float | None = Field(description="Running jobs: time since started.")
    waiting_ms: float | None = Field(description="Pending jobs: time since created.")
    lease_remaining_ms: float | None = Field(description="Running jobs: time left on the lease (negative when passed).")
    node_executions: list[Step]
    steps_source: str | None
    result: Any = None
    variables: Any = None
    metadata: Any = None
    dlq: DeadLetterEntry | None
    comparison: DurationComparison | None
    neighbours: list[NeighbourRun] = Field(description="Runs of the same workflow created just before and after.")
    as_of: Instant | None


JOB_ID = {"type": "string", "format": "uuid", "description": "The job's id."}


@api.route("/metrics/jobs/<job_id>", summary="One job with its steps", tags=["Jobs"], response=JobDetail,
           path_params={"job_id": JOB_ID}, errors=(404,))
def job_one(job_id: str):
    """Everything the job page shows (data.jobs.job_story): the job, its node executions, its
    dead-letter entry, its neighbouring runs and how its duration compares with its workflow's."""
    story = jobs.job_story(current().engine, job_id)
    if story is None:
        raise ApiError(404, "not_found", f"No job with id {job_id!r}.")
    return story


# ---------------------------------------------------------------------------------------------
# Analytics
# ---------------------------------------------------------------------------------------------
class AnalyticsQuery(QueryModel):
    range: Literal[analytics.RANGES] = Field(analytics.DEFAULT_RANGE, description="Window: 24h, 7d, 30d, 90d or custom (`from`/`to`).")  # type: ignore[valid-type]
    from_: Annotated[str, Field(max_length=40)] | None = Field(
        None, alias="from", description="Custom window start: ISO date or date-time (without an offset: in `tz`).")
    to: Annotated[str, Field(max_length=40)] | None = Field(None, description="Custom window end; a date is included.")
    bucket: Literal[analytics.BUCKETS] | None = Field(None, description="Time-series bucket; default from the window.")  # type: ignore[valid-type]
    tz: TimeZone = "UTC"
    environment: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    workflow: list[Text255] = Field(default_factory=list, max_length=analytics.MAX_LIST_ITEMS)
    robot: list[Text255] = Field(default_factory=list, max_length=analytics.MAX_LIST_ITEMS)
    status: list[Literal[analytics.DURATION_STATUSES]] = Field(  # type: ignore[valid-type]
        default_factory=list, max_length=3, description="Which finished jobs duration statistics cover; default completed,failed.")
    sla_success: float | None = Field(None, gt=0, le=100, description="Success-rate target in %, default 99.")
    p95_target: float | None = Field(None, gt=0, le=7 * 86400, description="P95 duration target in seconds, default 60.")
    targets: Annotated[str, Field(min_length=1, max_length=2000)] | None = Field(
        None, description="Per-workflow P95 targets in seconds: `wf-a:120,wf-b:30`.")


class AppliedAnalyticsFilters(Out):
    start: Instant
    end: Instant
    range: str
    bucket: str
    tz: str
    environment: str | None
    workflows: list[str]
    robots: list[str]
    statuses: list[str]


class DurationStats(Out):
    """Counts, rates and duration / queue-wait statistics of a set of jobs (fleet or one workflow)."""
    total_jobs: int
    completed_jobs: int
    failed_jobs: int
    cancelled_jobs: int
    success_rate: float | None
    failure_rate: float | None
    timed_jobs: int
    average_duration_ms: float | None
    p50_duration_ms: float | None
    p90_duration_ms: float | None
    p95_duration_ms: float | None
    p99_duration_ms: float | None
    average_queue_wait_ms: float | None
    p50_queue_wait_ms: float | None
    p90_queue_wait_ms: float | None
    p95_queue_wait_ms: float | None
    p99_queue_wait_ms: float | None


class WorkflowDurations(DurationStats):
    workflow_id: str
    workflow_name: str | None


class SlowWorkflow(Out):
    workflow_id: str
    workflow_name: str | None
    average_duration_ms: float | None
    p95_duration_ms: float | None
    timed_jobs: int


class ErrorCount(Out):
    error_type: str
    count: int


class Efficiency(Out):
    rank: int
    workflow_id: str
    workflow_name: str | None
    executions: int
    completed: int
    failed: int
    success_rate: float | None
    timed_jobs: int
    p95_duration_ms: float | None
    p95_target_s: float
    healing_attempts: float
    healing_successes: float
    healing_attempts_per_execution: float | None
    self_healing_success_rate: float | None
    error_types: int
    success_score: float | None
    duration_score: float | None
    healing_score: float | None
    error_diversity_score: float | None
    efficiency_score: float | None = Field(description="0.40 × success + 0.30 × duration + 0.15 × healing + 0.15 × error diversity.")


class WeeklyThroughput(Out):
    is_total: bool
    workflow_id: str | None
    workflow_name: str | None
    this_week: int
    last_week_to_date: int
    pace_change_pct: float | None
    last_week: int
    avg_4_weeks: float | None
    change_pct: float | None
    success_rate_this_week: float | None
    success_rate_last_week: float | None
    p95_this_week_ms: float | None
    p95_last_week_ms: float | None


class TimePoint(Out):
    bucket: Instant
    bucket_end: Instant
    partial: bool
    total_jobs: int
    completed: int
    failed: int
    cancelled: int
    success_rate: float | None
    timed_jobs: int
    p50_duration_ms: float | None
    p95_duration_ms: float | None


class AnalyticsResponse(DurationStats):
    filters: AppliedAnalyticsFilters
    covers: str = Field(description="Which jobs the duration figures cover.")
    percentiles_exact: bool = Field(description="False when the percentiles come from the rollups "
                                                "(long windows): within 1 % of the exact value.")
    self_healing_success_rate: float | None
    slowest_workflows: list[SlowWorkflow] = Field(description="The 10 workflows with the longest average duration.")
    workflows: list[WorkflowDurations]
    error_distribution: list[ErrorCount] = Field(description="Failed jobs by error type, most frequent first.")
    efficiency: list[Efficiency] = Field(description="Efficiency score per workflow, best first.")
    weekly_throughput: list[WeeklyThroughput] = Field(description="Finished jobs per workflow by week (first row: all workflows).")
    time_series: list[TimePoint]


def _analytics_filters(query: AnalyticsQuery) -> analytics.AnalyticsFilters:
    raw: dict[str, Any] = {"range": query.range, "from": query.from_, "to": query.to, "bucket": query.bucket,
                           "tz": query.tz, "environment": query.environment, "workflow": ",".join(query.workflow),
                           "robot": ",".join(query.robot), "status": ",".join(query.status),
                           "sla_success": query.sla_success, "p95_target": query.p95_target,
                           "targets": query.targets}
    text = {k: (repr(v) if isinstance(v, float) else v) for k, v in raw.items() if v not in (None, "")}
    # Per-workflow targets from settings, as the Analytics page reads them.
    filters, problems = analytics.parse_filters(text, default_tz="UTC", p95_targets=dict(current().settings.p95_targets))
    if problems:
        raise ApiError(400, "invalid_parameter", " ".join(problems),
                       problems=[{"parameter": "filters", "problem": p} for p in problems])
    return filters


def analytics_summary(engine, f: analytics.AnalyticsFilters) -> dict:
    """The analytics endpoint's body from the Analytics page's data functions."""
    durations = analytics.duration_percentiles(engine, f)
    per_workflow = durations["workflows"]
    timed = per_workflow[per_workflow["timed_jobs"] > 0]
    slowest = timed.sort_values(["average_duration_ms", "workflow_id"], ascending=[False, True]).head(10)
    errors = analytics.errors_over_time(engine, f)
    distribution = (
        errors.groupby("error_type", as_index=False)["failures"].sum()
        .rename(columns={"failures": "count"})
        .sort_values(["count", "error_type"], ascending=[False, True])
        if not errors.empty else []
    )
    efficiency = analytics.workflow_efficiency(engine, f)
    if not efficiency.empty:
        attempts, successes = efficiency["healing_attempts"].sum(), efficiency["healing_successes"].sum()
        healing = float(successes / attempts) if attempts else None
    else:
        healing = None
    return {
        "filters": f.to_dict(),
        "covers": durations["covers"],
        "percentiles_exact": durations["exact"],
        **durations["fleet"],
        "self_healing_success_rate": healing,
        "slowest_workflows": slowest,
        "workflows": per_workflow,
        "error_distribution": distribution,
        "efficiency": efficiency,
        "weekly_throughput": analytics.weekly_throughput(engine, f),
        "time_series": analytics.time_series(engine, f),
    }


@api.route("/metrics/analytics", summary="Totals, rates, percentiles, errors, efficiency, weekly throughput",
           tags=["Analytics"], query=AnalyticsQuery, response=AnalyticsResponse)
def analytics_metrics(query: AnalyticsQuery):
    """The Analytics page's figures for a window (jobs selected by created_at): totals, success
    and failure rates, P50/P90/P95/P99 durations and queue waits (fleet and per workflow), the
    slowest workflows, the error distribution, efficiency scores, weekly throughput and a time
    series by bucket."""
    return analytics_summary(current().engine, _analytics_filters(query))


# ---------------------------------------------------------------------------------------------
# Operator actions
# ---------------------------------------------------------------------------------------------
class CancelBody(QueryModel):
    expected_status: Literal["pending", "running"] | None = Field(
        None, description="Refuse (409) unless the job still has this status (what the operator saw).")


class RetryBody(QueryModel):
    expected_status: Literal["failed", "cancelled"] | None = Field(
        None, description="Refuse (409) unless the job still has this status.")


class RequeueBody(QueryModel):
    pass


class ActionResponse(Out):
    outcome: Literal["done", "repeated"] = Field(description="repeated: an earlier request with the same Idempotency-Key did it.")
    message: str
    target_id: str
    before_status: str | None
    after_status: str | None
    new_job_id: str | None = Field(description="Retry and requeue: the new pending job.")


IDEMPOTENCY = {"Idempotency-Key": {
    "type": "string", "minLength": 1, "maxLength": 200,
    "description": "Any unique string per intended action: repeating a request with the same key "
                   "returns the first outcome and acts no more."}}  # length checked by server.openapi
DLQ_ID = {"type": "string", "format": "uuid", "description": "The dead-letter entry's id."}


def _act(fn, target_id: str, **kwargs):
    refusal = require_role("operator")
    if refusal:
        raise ApiError(403, "forbidden", refusal)
    who = identity()
    actor = actions.Actor(who.username, who.role, client_addr())
    try:
        result = fn(current().engine, target_id, actor, idempotency_key=flask.request.headers.get("Idempotency-Key"), **kwargs)
    except actions.NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except actions.Forbidden as exc:
        raise ApiError(403, "forbidden", str(exc)) from None
    if not result.ok:
        raise ApiError(409, "refused", result.message, target_id=result.target_id,
                       current_status=result.before_status)
    return {"outcome": result.outcome, "message": result.message, "target_id": result.target_id,
            "before_status": result.before_status, "after_status": result.after_status,
            "new_job_id": result.new_job_id}


@api.route("/jobs/<job_id>/cancel", "POST", summary="Cancel a pending or running job", tags=["Actions"],
           body=CancelBody, response=ActionResponse, path_params={"job_id": JOB_ID}, headers=IDEMPOTENCY,
           errors=(403, 404, 409))
def cancel_job(job_id: str, body: CancelBody):
    """Operator role. Locks the job row, cancels it if it is pending or running (and, with
    `expected_status`, still in that status), and writes an audit record either way."""
    return _act(actions.cancel_job, job_id, expected_status=body.expected_status)


@api.route("/jobs/<job_id>/retry", "POST", summary="Retry a failed or cancelled job", tags=["Actions"],
           body=RetryBody, response=ActionResponse, path_params={"job_id": JOB_ID}, headers=IDEMPOTENCY,
           errors=(403, 404, 409))
def retry_job(job_id: str, body: RetryBody):
    """Operator role. Enqueues a new pending run of the job (its history stays as it was), linked
    both ways through metadata; a job can be retried once."""
    return _act(actions.retry_job, job_id, expected_status=body.expected_status)


@api.route("/dlq/<entry_id>/requeue", "POST", summary="Requeue a dead-letter entry", tags=["Actions"],
           body=RequeueBody, response=ActionResponse, path_params={"entry_id": DLQ_ID}, headers=IDEMPOTENCY,
           errors=(403, 404, 409))
def requeue_dead_letter(entry_id: str, body: RequeueBody):
    """Operator role. Enqueues the entry again as a new pending job and marks it reprocessed."""
    return _act(actions.requeue_dead_letter, entry_id)


# ---------------------------------------------------------------------------------------------
# Admin
# ---------------------------------------------------------------------------------------------
class AuditQuery(QueryModel):
    limit: int = Field(100, ge=1, le=500, description="Records per page.")
    before_id: int | None = Field(None, ge=1, le=2**63 - 1, description="The next_before_id of the previous page.")


class AuditEntry(Out):
    id: int
    at: Instant
    username: str
    role: str
    action: str
    target_type: str
    target_id: str
    before_status: str | None
    after_status: str | None
    outcome: str
    message: str | None
    client_addr: str | None


class AuditResponse(Out):
    entries: list[AuditEntry]
    next_before_id: int | None


@api.route("/admin/audit", summary="The audit trail of operator actions", tags=["Admin"], query=AuditQuery,
           response=AuditResponse, errors=(403,))
def audit(query: AuditQuery):
    """Admin role. Every operator action (done, refused or repeated), newest first, paged by id."""
    refusal = require_role("admin")
    if refusal:
        raise ApiError(403, "forbidden", refusal)
    frame = actions.audit_list(current().engine, limit=query.limit, before_id=query.before_id)
    next_before = int(frame["id"].iloc[-1]) if len(frame) == query.limit else None
    return {"entries": frame, "next_before_id": next_before}


# ---------------------------------------------------------------------------------------------
# The document, the docs page, and JSON errors for everything under /api/
# ---------------------------------------------------------------------------------------------
@blueprint.route("/openapi.json", methods=["GET"])
def openapi_document():
    response = flask.jsonify(api.document())
    response.headers["Cache-Control"] = "no-cache"
    return response


@blueprint.route("/docs", methods=["GET"])
def docs_page():
    body = render_docs(api.document(), f"{API_PREFIX}/openapi.json")
    return flask.Response(body, mimetype="text/html")


def _api_rules() -> Map:
    """Every /api/ route of this app except the catch-all below (to tell 405 from 404)."""
    rules = flask.current_app.extensions.get("fleet_api_rules")
    if rules is None:
        rules = Map([Rule(r.rule, endpoint=r.endpoint, methods=r.methods)
                     for r in flask.current_app.url_map.iter_rules()
                     if r.rule.startswith("/api/") and r.endpoint != "fleet_api.unknown_route"])
        flask.current_app.extensions["fleet_api_rules"] = rules
    return rules


@blueprint.route("/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def unknown_route(rest: str):
    allowed = sorted(set(_api_rules().bind("localhost").allowed_methods(flask.request.path)) - {"HEAD", "OPTIONS"})
    if allowed:
        response, status = api_error(405, "method_not_allowed",
                                     f"{flask.request.method} is not allowed here; use {', '.join(allowed)}.")
        response.headers["Allow"] = ", ".join(allowed)
        return response, status
    return api_error(404, "not_found", f"No API route {flask.request.path}; see {API_PREFIX}/docs.")


def _http_error(exc: HTTPException):
    """HTTP errors (and unhandled exceptions) under /api/ in the shared JSON shape."""
    if not flask.request.path.startswith("/api/"):
        return exc
    if exc.code == 500:
        original = getattr(exc, "original_exception", None)
        if original is not None:
            flask.current_app.logger.error("unhandled error in %s", flask.request.path, exc_info=original)
        return api_error(500, "internal_error", "Something went wrong; the request id in X-Request-ID helps find it.")
    code = (exc.name or "error").lower().replace(" ", "_")
    return api_error(exc.code or 500, code, exc.description or exc.name or "Error.")


def register_api(server: flask.Flask) -> None:
    """Mount /api/v1 (blueprint, docs, OpenAPI document) and JSON errors under /api/. Idempotent."""
    if blueprint.name in server.blueprints:
        return
    server.register_blueprint(blueprint)
    server.register_error_handler(HTTPException, _http_error)
