"""The demo fleet: months of orchestrator history generated inside PostgreSQL.

Python decides the small things: the fleet, the workflow profiles, the seasonality and how many
jobs each robot slot ("lane") receives in each hour. PostgreSQL does the rest with
INSERT ... SELECT, a week of history at a time over all lanes (a few statements in parallel,
one per core), so the table fills in created_at order like a real orchestrator's. Within a lane
each job waits for the one before (a single-server queue, two window functions, carried from
week to week), so a robot never runs more jobs than it has slots, a job waits while its lane is
busy (the slowest waits come from long jobs ahead of it, day or night), and jobs near "now" come
out naturally as pending or running.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from data.schema import APP_SCHEMA

log = logging.getLogger(__name__)

# Share of the robots in each environment (routing pool).
ENVIRONMENTS = {"production": 0.6, "finance": 0.25, "staging": 0.15}

# Relative job volume by hour of day (UTC) and by weekday (Monday first).
HOUR_OF_DAY = (0.16, 0.13, 0.12, 0.12, 0.14, 0.2, 0.35, 0.6, 0.95, 1.2, 1.3, 1.28,
               1.05, 1.15, 1.3, 1.25, 1.1, 0.85, 0.6, 0.45, 0.35, 0.28, 0.22, 0.18)
DAY_OF_WEEK = (1.0, 1.08, 1.1, 1.05, 0.92, 0.32, 0.24)
NIGHT_ENDS = 6  # hours (UTC) before this are night, when nightly batches run

HEARTBEAT_DAYS = 3
HEARTBEAT_EVERY_S = 60
HEARTBEAT_BATCHES = 4  # fixed, so the same seed gives the same data on any machine
LEASE_S = 300
MAX_RETRIES = 3  # the orchestrator's default
# Average robot-slot utilisation the history aims at; at peaks it is about twice that.
TARGET_UTILISATION = 0.3
CANCEL_RATE = 0.008
# Jobs kept back from the history for the live tail (queued in the last minutes).
TAIL_JOBS = 12
WINDOW_HOURS = 7 * 24
LANE_GROUPS = 4  # statements per week (fixed, like HEARTBEAT_BATCHES)
MIN_RUNNING = 4
_ADVISORY_KEY = 0x466C6D44  # serialises ensure_demo_data across gunicorn workers


@dataclass(frozen=True)
class ErrorProfile:
    message: str
    weight: float
    retryable: bool  # transient (timeouts, connections): the orchestrator retries it


@dataclass(frozen=True)
class WorkflowProfile:
    name: str
    median_s: float
    sigma: float
    failure_rate: float
    errors: tuple[ErrorProfile, ...]
    environments: tuple[str, ...]
    nodes: tuple[tuple[str, float], ...]  # (node type, share of the run)
    weight: float = 1.0  # relative volume within an environment
    priority: int = 1
    alt_median_s: float | None = None  # second mode (e.g. cache miss)
    alt_share: float = 0.0
    nightly: bool = False  # a batch that mostly runs at night
    healing: bool = False  # uses UI selectors, so self-healing happens

    @property
    def workflow_id(self) -> str:
        return "wf-" + re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")

    @property
    def mean_s(self) -> float:
        spread = np.exp(self.sigma**2 / 2)
        alt = self.alt_median_s if self.alt_median_s is not None else self.median_s
        return float(spread * ((1 - self.alt_share) * self.median_s + self.alt_share * alt))

    @property
    def node_ids(self) -> list[str]:
        return [f"n{k}-{_snake(t)}" for k, (t, _) in enumerate(self.nodes, start=1)]

    @property
    def node_bounds(self) -> tuple[list[float], list[float]]:
        """Each node's start and share of the run, as fractions of the run."""
        shares = np.array([s for _, s in self.nodes], dtype=float)
        shares /= shares.sum()
        starts = np.concatenate([[0.0], np.cumsum(shares)[:-1]])
        return starts.round(6).tolist(), shares.round(6).tolist()

    def workflow_json(self) -> str:
        # Nodes run in list order, so the graph needs no separate edge list.
        return json.dumps({
            "id": self.workflow_id, "name": self.name, "version": 3,
            "nodes": [{"id": i, "type": t} for i, (t, _) in zip(self.node_ids, self.nodes)],
        }, separators=(",", ":"))

    def sample_duration(self, rng: np.random.Generator, scale: float = 1.0) -> float:
        median = self.alt_median_s if rng.random() < self.alt_share else self.median_s
        return float(np.clip(median * np.exp(self.sigma * rng.standard_normal()) * scale, 1, 4 * 3600))

    def sample_error(self, rng: np.random.Generator) -> ErrorProfile:
        weights = np.array([e.weight for e in self.errors])
        return self.errors[rng.choice(len(self.errors), p=weights / weights.sum())]

    def end_fraction(self, node: int) -> float:
        """Share of a full run that has elapsed when node number `node` (1-based) ends."""
        starts, shares = self.node_bounds
        return starts[node - 1] + shares[node - 1]

    def node_executions(self, started_at: datetime, full_s: float, rng: np.random.Generator,
                        fail_node: int | None = None, error: str | None = None) -> list[dict]:
        """Per-node records of a run planned to take full_s seconds; with fail_node the run
        stops there, that node failed with `error`. Each node uses most of its share of the
        run (the rest is hand-over), so the records fit inside the run."""
        starts, shares = self.node_bounds
        last = fail_node or len(self.nodes)
        records = []
        for k in range(last):
            begin = started_at + timedelta(seconds=full_s * starts[k])
            duration = full_s * shares[k] * float(rng.uniform(0.55, 1.0))
            failed = fail_node is not None and k + 1 == last
            records.append({
                "node_id": self.node_ids[k], "node_type": self.nodes[k][0],
                "status": "failed" if failed else "completed",
                "started_at": begin.isoformat(),
                "completed_at": (begin + timedelta(seconds=duration)).isoformat(),
                "duration_ms": round(duration * 1000), "error": error if failed else None,
            })
        return records


def _snake(node_type: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", node_type.removesuffix("Node")).lower()


def _e(message: str, weight: float = 1, retryable: bool = False) -> ErrorProfile:
    return ErrorProfile(message, weight, retryable)


_BROWSER = (("StartNode", 0.02), ("OpenBrowserNode", 0.12), ("LoginNode", 0.1), ("NavigateNode", 0.08))

WORKFLOWS: list[WorkflowProfile] = [
    WorkflowProfile(
        "Invoice Processing", 95, 0.45, 0.04,
        (_e("SelectorNotFoundError: #invoice-total not found on page", 3, True),
         _e("TimeoutError: SAP GUI did not respond within 60 s", 3, True),
         _e("validation failed: OCR confidence below threshold for 'total_amount'", 2),
         _e("connection refused by sap-gw01.corp.example.com:3300", 1, True)),
        ("production", "finance"),
        (("StartNode", 0.02), ("ReadEmailNode", 0.1), ("OcrExtractNode", 0.35),
         ("ValidateDataNode", 0.08), ("SapEntryNode", 0.4), ("EndNode", 0.05)),
        weight=14, priority=5, healing=True),
    WorkflowProfile(
        "Payroll Reconciliation", 420, 0.3, 0.02,
        (_e("ValueError: payroll totals differ by more than the tolerance (cost centre 4100)", 3),
         _e("write failed: permission denied on \\\\fs01\\payroll\\exports", 1),
         _e("SAPLogonException: user RPA_PAY is locked", 1)),
        ("finance",),
        (("StartNode", 0.01), ("SapLoginNode", 0.08), ("ExportReportNode", 0.3), ("ReadExcelNode", 0.12),
         ("CompareTablesNode", 0.3), ("WriteExcelNode", 0.12), ("SendEmailNode", 0.05), ("EndNode", 0.02)),
        weight=3, priority=10),
    WorkflowProfile(
        "Customer Onboarding", 180, 0.6, 0.06,
        (_e("ElementNotInteractableException: button 'Next' is covered by a modal", 2, True),
         _e("element not found: //input[@name='tax_id']", 3, True),
         _e("ValidationError: customer e-mail address rejected by the CRM", 2),
         _e("CRM request timed out after 30 s", 2, True)),
        ("production",),
        _BROWSER + (("FillFormNode", 0.4), ("UploadDocumentNode", 0.2), ("EndNode", 0.08)),
        weight=10, priority=3, healing=True),
    WorkflowProfile(
        "Order Fulfilment Sync", 45, 0.5, 0.03,
        (_e("ConnectionError: ERP API returned 503 Service Unavailable", 3, True),
         _e("HTTPError: 429 Too Many Requests from the shop API", 2, True),
         _e("upstream connection refused (erp-api:8443)", 1, True)),
        ("production",),
        (("StartNode", 0.02), ("HttpRequestNode", 0.35), ("TransformDataNode", 0.15),
         ("HttpRequestNode", 0.4), ("EndNode", 0.08)),
        weight=16, priority=4),
    WorkflowProfile(
        "Sales Report Generation", 240, 0.4, 0.015,
        (_e("DatabaseError: deadlock detected while reading sales_fact", 2, True),
         _e("report query timed out after 300 s", 2, True),
         _e("KeyError: 'region'", 1)),
        ("production",),
        (("StartNode", 0.01), ("DatabaseQueryNode", 0.5), ("PivotTableNode", 0.2),
         ("WriteExcelNode", 0.2), ("SendEmailNode", 0.07), ("EndNode", 0.02)),
        weight=2, priority=2, nightly=True),
    WorkflowProfile(
        "Email Triage", 20, 0.7, 0.008,
        (_e("IMAPException: mailbox INBOX is locked", 2, True),
         _e("connection refused by mail.corp.example.com:993", 2, True),
         _e("UnicodeDecodeError: 'utf-8' codec can't decode byte 0xe9 in position 112", 1)),
        ("production",),
        (("StartNode", 0.03), ("ReadEmailNode", 0.4), ("ClassifyTextNode", 0.35),
         ("MoveEmailNode", 0.17), ("EndNode", 0.05)),
        weight=20, priority=2),
    WorkflowProfile(
        "Vendor Portal Sync", 150, 0.9, 0.09,
        (_e("TimeoutError: vendor portal login page did not load", 3, True),
         _e("element not found: #download-csv", 3, True),
         _e("SessionExpiredException: portal session expired mid-run", 2, True),
         _e("Unexpected dialog 'Terms updated' blocked the workflow", 1)),
        ("production",),
        _BROWSER + (("DownloadFileNode", 0.35), ("ReadCsvNode", 0.15), ("DatabaseWriteNode", 0.12),
                    ("EndNode", 0.06)),
        weight=6, priority=2, healing=True),
    WorkflowProfile(
        "Bank Statement Import", 60, 0.35, 0.025,
        (_e("SFTPException: statement file MT940_*.sta not present yet", 3, True),
         _e("FileNotFoundError: no statement file for today", 1),
         _e("permission denied reading /sftp/inbound/bank", 1)),
        ("finance",),
        (("StartNode", 0.02), ("SftpDownloadNode", 0.3), ("ParseMt940Node", 0.25),
         ("SapEntryNode", 0.38), ("EndNode", 0.05)),
        weight=5, priority=8),
    WorkflowProfile(
        "Expense Report Audit", 75, 0.5, 0.05,
        (_e("validation failed: receipt amount does not match the claim", 3),
         _e("ValidationError: missing cost centre", 2),
         _e("OCRException: receipt image is unreadable", 2, True)),
        ("finance",),
        (("StartNode", 0.02), ("OpenBrowserNode", 0.1), ("OcrExtractNode", 0.4),
         ("ValidateDataNode", 0.2), ("ApproveNode", 0.23), ("EndNode", 0.05)),
        weight=5, priority=3, healing=True),
    WorkflowProfile(
        "Inventory Reconciliation", 35, 0.35, 0.03,
        (_e("DatabaseError: could not serialize access due to concurrent update", 2, True),
         _e("warehouse API timed out", 2, True),
         _e("KeyError: 'sku'", 1)),
        ("production",),
        (("StartNode", 0.02), ("HttpRequestNode", 0.3), ("DatabaseQueryNode", 0.3),
         ("CompareTablesNode", 0.3), ("EndNode", 0.08)),
        weight=7, priority=2, alt_median_s=600, alt_share=0.35),
    WorkflowProfile(
        "HR Leave Requests", 50, 0.4, 0.01,
        (_e("element not found: #approve-button", 2, True),
         _e("PermissionError: approver role missing for user RPA_HR", 1)),
        ("production",),
        _BROWSER + (("ReadTableNode", 0.3), ("ClickElementNode", 0.3), ("EndNode", 0.08)),
        weight=4, priority=1, healing=True),
    WorkflowProfile(
        "Contract Data Extraction", 300, 0.8, 0.12,
        (_e("OCRException: page 3 is unreadable", 3),
         _e("MemoryError: document too large (412 pages)", 1),
         _e("validation failed: contract end date before start date", 2),
         _e("TimeoutError: document AI service timed out", 2, True)),
        ("production", "staging"),
        (("StartNode", 0.01), ("ReadPdfNode", 0.2), ("OcrExtractNode", 0.45),
         ("ValidateDataNode", 0.1), ("DatabaseWriteNode", 0.2), ("EndNode", 0.04)),
        weight=3, priority=1),
    WorkflowProfile(
        "Price Monitoring", 25, 0.6, 0.07,
        (_e("CaptchaDetectedException: captcha on competitor site", 3),
         _e("element not found: .price-tag", 3, True),
         _e("connection refused by proxy 10.20.0.5:3128", 1, True),
         _e("timed out waiting for the price table", 2, True)),
        ("production",),
        (("StartNode", 0.03), ("OpenBrowserNode", 0.2), ("NavigateNode", 0.25),
         ("ExtractTableNode", 0.35), ("DatabaseWriteNode", 0.12), ("EndNode", 0.05)),
        weight=12, priority=0, alt_median_s=120, alt_share=0.2, healing=True),
    WorkflowProfile(
        "Backup Verification", 900, 0.25, 0.005,
        (_e("ChecksumMismatchError: backup archive checksum differs", 1),
         _e("IOError: disk quota exceeded on the backup share", 1)),
        ("production", "staging"),
        (("StartNode", 0.01), ("ListFilesNode", 0.1), ("ChecksumNode", 0.75),
         ("SendEmailNode", 0.12), ("EndNode", 0.02)),
        weight=1, priority=6, nightly=True),
    WorkflowProfile(
        "Regression Test Suite", 600, 0.5, 0.15,
        (_e("AssertionError: expected status 'Approved' but found 'Pending'", 3),
         _e("element not found: #login", 2),
         _e("WebDriverException: chrome not reachable", 2, True),
         _e("test step timed out after 120 s", 2, True)),
        ("staging",),
        _BROWSER + (("RunTestCasesNode", 0.6), ("WriteReportNode", 0.06), ("EndNode", 0.02)),
        weight=8, priority=0),
    WorkflowProfile(
        "Purchase Order Approval", 110, 0.45, 0.035,
        (_e("SAPException: purchase order is locked by another user", 2, True),
         _e("validation failed: PO amount exceeds the approval limit", 2),
         _e("ConnectionError: SAP gateway unreachable", 1, True)),
        ("production", "finance"),
        (("StartNode", 0.02), ("SapLoginNode", 0.15), ("ReadTableNode", 0.25),
         ("ApproveNode", 0.45), ("SendEmailNode", 0.1), ("EndNode", 0.03)),
        weight=6, priority=7),
    WorkflowProfile(
        "Staging Smoke Test", 40, 0.3, 0.04,
        (_e("element not found: #dashboard", 2),
         _e("AssertionError: login page title mismatch", 1)),
        ("staging",),
        _BROWSER + (("AssertNode", 0.6), ("EndNode", 0.08)),
        weight=6, priority=0, healing=True),
    WorkflowProfile(
        "Ticket Classification", 15, 0.5, 0.02,
        (_e("HTTPError: 401 Unauthorized from the helpdesk API", 1, True),
         _e("helpdesk API timed out", 2, True),
         _e("ticket body is empty", 1)),
        ("production",),
        (("StartNode", 0.05), ("HttpRequestNode", 0.35), ("ClassifyTextNode", 0.4),
         ("HttpRequestNode", 0.15), ("EndNode", 0.05)),
        weight=9, priority=1),
]

# Bad hours in the history: (workflow name, days ago, hours, failure rate or None, message, slowdown).
INCIDENTS = [
    ("Vendor Portal Sync", 12.4, 5, 0.55, "ConnectionError: vendor portal returned 503 Service Unavailable", 1.0),
    ("Invoice Processing", 33.3, 8, None, None, 3.5),
    ("Order Fulfilment Sync", 2.3, 3, 0.3, "TimeoutError: ERP API did not answer within 30 s", 1.6),
]


@dataclass(frozen=True)
class RobotSpec:
    robot_id: str
    name: str
    hostname: str
    environment: str
    capabilities: tuple[str, ...]
    tags: tuple[str, ...]
    max_concurrent_jobs: int
    registered_at: datetime
    role: str  # normal, maintenance, silent, outage or new
    takes_jobs_until: datetime  # the last moment it was handed work
    last_heartbeat: datetime
    outage: tuple[datetime, datetime] | None
    cpu_base: float
    memory_total_mb: int
    memory_base_mb: float
    disk_percent: float
    booted_at: datetime
    ip: str


def allocate(total: int, weights) -> np.ndarray:
    """Split an integer total in proportion to weights; the parts add up exactly."""
    weights = np.asarray(weights, dtype=float)
    if total <= 0 or weights.sum() <= 0:
        return np.zeros(len(weights), dtype=np.int64)
    cum = np.cumsum(weights) / weights.sum()
    edges = np.floor(total * cum + 1e-9).astype(np.int64)
    edges[-1] = total
    return np.diff(edges, prepend=0)


def hourly_weights(start: datetime, hours: int, rng: np.random.Generator) -> np.ndarray:
    """Relative job volume of each hour from `start`: daily and weekly rhythm, busy and quiet
    days, a slow growth over the period and one public holiday."""
    epoch_hours = int(start.timestamp() // 3600) + np.arange(hours)
    hour_of_day = epoch_hours % 24
    day = epoch_hours // 24
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday
    day_index = day - day[0]
    n_days = int(day_index[-1]) + 1
    day_factor = rng.lognormal(0.0, 0.12, n_days) * np.linspace(0.85, 1.1, n_days)
    weekdays = [d for d in range(n_days) if (day[0] + d + 3) % 7 < 5]
    if len(weekdays) > 10:
        day_factor[weekdays[len(weekdays) // 3]] *= 0.3
    return np.array(HOUR_OF_DAY)[hour_of_day] * np.array(DAY_OF_WEEK)[weekday] * day_factor[day_index]


def active_mask(start: datetime, hours: int, robot: RobotSpec) -> np.ndarray:
    """Hours in which the robot could be handed work."""
    starts = start.timestamp() + 3600.0 * np.arange(hours)
    ok = (starts >= robot.registered_at.timestamp()) & (starts + 3600 <= robot.takes_jobs_until.timestamp())
    if robot.outage:
        lo, hi = (t.timestamp() for t in robot.outage)
        ok &= ~((starts < hi) & (starts + 3600 > lo))
    return ok


def environment_sizes(robots: int) -> dict[str, int]:
    sizes = allocate(robots - len(ENVIRONMENTS), list(ENVIRONMENTS.values())) + 1
    return dict(zip(ENVIRONMENTS, (int(s) for s in sizes)))


def build_fleet(robots: int, now: datetime, days: int, rng: np.random.Generator) -> list[RobotSpec]:
    """The robots, with four special ones: in maintenance, gone silent, back from an outage,
    and registered recently."""
    if robots < 6:
        raise ValueError("the demo fleet needs at least 6 robots")
    width = max(2, len(str(robots)))
    short = {"production": "prd", "finance": "fin", "staging": "stg"}
    envs = [env for env, size in environment_sizes(robots).items() for _ in range(size)]
    # Special robots: every third production robot first, then any; the last one is new.
    prod = [i for i, env in enumerate(envs) if env == "production"]
    pool = [i for i in prod[2::3] + list(range(robots)) if i != robots - 1]
    special = list(dict.fromkeys(pool))[:3]
    roles = dict(zip(special, ("maintenance", "silent", "outage"))) | {robots - 1: "new"}
    history_start = now - timedelta(days=days)
    fleet = []
    for i, env in enumerate(envs, start=1):
        role = roles.get(i - 1, "normal")
        number = f"{i:0{width}d}"
        registered = history_start - timedelta(days=float(rng.uniform(5, 200)))
        takes_until, last_hb, outage = now, now - timedelta(seconds=float(rng.uniform(1, 12))), None
        booted = now - timedelta(days=float(rng.uniform(2, 12)))
        if role == "maintenance":
            takes_until = now - timedelta(hours=5)
            last_hb = takes_until + timedelta(seconds=90)
        elif role == "silent":
            last_hb = now - timedelta(minutes=float(rng.uniform(20, 40)))
            takes_until = last_hb - timedelta(minutes=30)
        elif role == "outage":
            lo = now - timedelta(hours=30)
            outage = (lo, lo + timedelta(hours=2.5))
            booted = outage[1]
        elif role == "new":
            registered = now - timedelta(days=min(21, days / 3))
        capabilities = {
            "production": ("browser", "desktop") if i % 4 else ("browser", "desktop", "ocr"),
            "finance": ("desktop", "excel", "sap"),
            "staging": ("browser", "desktop"),
        }[env]
        dual = env != "finance" and i % 6 == 0  # headless browser robots run two jobs
        fleet.append(RobotSpec(
            robot_id=f"robot-{number}",
            name=f"{short[env].upper()}-BOT-{number}",
            hostname=f"rpa-{short[env]}-{number}.corp.example.com",
            environment=env,
            capabilities=("browser",) if dual else capabilities,
            tags=(("windows-11" if i % 3 else "windows-server-2022"), ("eu-west" if i % 5 else "us-east"))
            + (("headless",) if dual else ()),
            max_concurrent_jobs=2 if dual else 1,
            registered_at=registered,
            role=role,
            takes_jobs_until=takes_until,
            last_heartbeat=last_hb,
            outage=outage,
            cpu_base=float(rng.uniform(4, 18)),
            memory_total_mb=int(rng.choice([8192, 16384, 16384, 32768])),
            memory_base_mb=float(rng.uniform(1800, 3200)),
            disk_percent=float(rng.uniform(35, 70)),
            booted_at=min(booted, last_hb),
            ip=f"10.{20 + list(ENVIRONMENTS).index(env)}.{i // 250}.{i % 250 + 2}",
        ))
    return fleet


def lower_edges(weights) -> list[float]:
    """Bucket edges for a weighted draw: take the last bucket whose edge is <= u ~ U[0, 1)."""
    weights = np.asarray(weights, dtype=float)
    return np.concatenate([[0.0], np.cumsum(weights)[:-1] / weights.sum()]).tolist()


def workflow_mix(environment: str, night: bool) -> tuple[list[int], list[float]]:
    """(1-based workflow numbers, lower bucket edges) of the workflows run in this pool; a pool
    the demo does not know runs them all."""
    idx = [i for i, w in enumerate(WORKFLOWS) if environment in w.environments] or list(range(len(WORKFLOWS)))
    weights = [WORKFLOWS[i].weight * _night_factor(WORKFLOWS[i], night) for i in idx]
    return [i + 1 for i in idx], lower_edges(weights)


def pick_workflow(environment: str, rng: np.random.Generator) -> WorkflowProfile:
    """One workflow for a job queued now in this pool, drawn by volume."""
    idx, edges = workflow_mix(environment, night=False)
    return WORKFLOWS[idx[int(np.searchsorted(edges, rng.random(), side="right")) - 1] - 1]


def _night_factor(workflow: WorkflowProfile, night: bool) -> float:
    if not workflow.nightly:
        return 1.0
    return 8.0 if night else 0.15


def duration_scale(jobs: int, fleet: list[RobotSpec], days: int) -> float:
    """Shrink run times when the requested volume would overload the fleet (large benchmark
    data sets), so that average slot utilisation stays near TARGET_UTILISATION."""
    lanes = sum(r.max_concurrent_jobs for r in fleet)
    by_env = {env: sum(r.max_concurrent_jobs for r in fleet if r.environment == env) for env in ENVIRONMENTS}
    mean = 0.0
    for env, env_lanes in by_env.items():
        idx, _ = workflow_mix(env, night=False)
        weights = np.array([WORKFLOWS[i - 1].weight for i in idx])
        means = np.array([WORKFLOWS[i - 1].mean_s for i in idx])
        mean += env_lanes / lanes * float(weights @ means / weights.sum())
    utilisation = jobs * mean / (lanes * days * 86400)
    return min(1.0, TARGET_UTILISATION / utilisation) if utilisation > 0 else 1.0


def _profiles_json() -> str:
    rows = []
    for k, w in enumerate(WORKFLOWS, start=1):
        starts, shares = w.node_bounds
        rows.append({
            "wf": k, "workflow_id": w.workflow_id, "workflow_name": w.name, "priority": w.priority,
            "median_s": w.median_s, "sigma": w.sigma,
            "alt_median_s": w.alt_median_s or w.median_s, "alt_share": w.alt_share,
            "failure_rate": w.failure_rate, "healing": w.healing, "nightly": w.nightly,
            "err_msgs": [e.message for e in w.errors],
            "err_edges": lower_edges([e.weight for e in w.errors]),
            "err_retry": [e.retryable for e in w.errors],
            "node_ids": w.node_ids, "node_types": [t for t, _ in w.nodes],
            "node_start": starts, "node_share": shares, "n_nodes": len(w.nodes),
        })
    return json.dumps(rows)


def _incidents_json(now: datetime, days: int) -> str:
    names = [w.name for w in WORKFLOWS]
    rows = [
        {"wf": names.index(name) + 1, "t_from": (now - timedelta(days=ago)).isoformat(),
         "t_to": (now - timedelta(days=ago) + timedelta(hours=hours)).isoformat(),
         "fail_rate": rate, "message": message, "slowdown": slowdown}
        for name, ago, hours, rate, message, slowdown in INCIDENTS if ago < days
    ]
    return json.dumps(rows)


_PROFILE_COLUMNS = """p(wf int, workflow_id text, workflow_name text, priority int,
    median_s float8, sigma float8, alt_median_s float8, alt_share float8, failure_rate float8,
    healing bool, nightly bool, err_msgs text[], err_edges float8[], err_retry bool[],
    node_ids text[], node_types text[], node_start float8[], node_share float8[], n_nodes int)"""

# One week of history for a group of lanes (robot slots). Every random draw happens in `draws`
# (materialised once); the later steps are plain arithmetic on it. Times are epoch seconds
# (float8) until the insert. Rows are inserted in created_at order, as an orchestrator's table
# fills, and the statement returns each lane's slot end so the next week continues its queue.
_WINDOW_SQL = f"""
WITH profiles AS (SELECT * FROM jsonb_to_recordset(CAST(:profiles AS jsonb)) AS {_PROFILE_COLUMNS}),
incidents AS (
    SELECT * FROM jsonb_to_recordset(CAST(:incidents AS jsonb))
        AS i(wf int, t_from timestamptz, t_to timestamptz, fail_rate float8, message text, slowdown float8)
),
lanes AS (
    SELECT * FROM jsonb_to_recordset(CAST(:lanes AS jsonb))
        AS l(pos int, lane int, robot_id text, environment text, slot_end_s float8,
             wf_day int[], edges_day float8[], wf_night int[], edges_night float8[])
),
cells AS (  -- :counts holds each lane's job count per hour of the week, lane after lane
    SELECT (k - 1) / :hours AS pos, CAST(:t0 AS timestamptz) + make_interval(hours => CAST((k - 1) % :hours AS int)) AS h_start, n
    FROM unnest(CAST(:counts AS int[])) WITH ORDINALITY AS u(n, k)
    WHERE n > 0
),
draws AS (
    SELECT l.lane, l.robot_id, l.environment, l.slot_end_s AS carried_s, a.created_at,
           CASE WHEN a.night THEN l.wf_night[width_bucket(random(), l.edges_night)]
                ELSE l.wf_day[width_bucket(random(), l.edges_day)] END AS wf,
           random() AS r_mode, sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS z_run,
           random() AS r_fail, random() AS r_err, random() AS r_node, random() AS r_retry,
           random() AS r_cancel, random() AS r_cancel_at,
           sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS z_wait,
           random() AS r_heal, random() AS r_trigger, random() AS r_prio, random() AS r_var
    FROM cells c
    JOIN lanes l USING (pos)
    CROSS JOIN LATERAL (
        SELECT c.h_start + make_interval(secs => random() * 3600) AS created_at,
               extract(hour FROM c.h_start AT TIME ZONE 'UTC') < {NIGHT_ENDS} AS night
        FROM generate_series(1, c.n)
    ) a
),
sampled AS (
    SELECT d.*, p.workflow_id, p.workflow_name, p.priority, p.n_nodes, p.healing, p.nightly,
           coalesce(i.fail_rate, p.failure_rate) AS fail_rate,
           least(14400, greatest(1, CASE WHEN d.r_mode < p.alt_share THEN p.alt_median_s ELSE p.median_s END
                 * exp(p.sigma * d.z_run) * :scale * coalesce(i.slowdown, 1))) AS full_s,
           CASE WHEN i.message IS NOT NULL AND d.r_err < 0.8 THEN i.message
                ELSE p.err_msgs[width_bucket(d.r_err, p.err_edges)] END AS message,
           coalesce(i.message IS NOT NULL, false) OR p.err_retry[width_bucket(d.r_err, p.err_edges)] AS retryable,
           2 + floor(d.r_node * (p.n_nodes - 1))::int AS fail_node,
           p.node_start[2 + floor(d.r_node * (p.n_nodes - 1))::int]
               + p.node_share[2 + floor(d.r_node * (p.n_nodes - 1))::int] AS fail_frac
    FROM draws d
    JOIN profiles p ON p.wf = d.wf
    LEFT JOIN incidents i ON i.wf = d.wf AND d.created_at >= i.t_from AND d.created_at < i.t_to
),
shaped AS (
    SELECT s.*,
           s.r_fail < s.fail_rate AS failed,
           s.r_cancel < {CANCEL_RATE / 2} AS cancel_queued,
           s.r_cancel >= {CANCEL_RATE / 2} AND s.r_cancel < {CANCEL_RATE} AS cancel_running,
           CASE WHEN s.r_fail < s.fail_rate THEN CASE WHEN s.retryable THEN {MAX_RETRIES} ELSE 0 END
                WHEN s.r_retry < s.fail_rate * 0.6 THEN 1 + (s.r_retry < s.fail_rate * 0.15)::int
                ELSE 0 END AS retries,
           CASE WHEN s.r_fail < s.fail_rate THEN s.full_s * s.fail_frac ELSE s.full_s END AS run_s,
           extract(epoch FROM s.created_at) AS created_s,
           exp(ln(4) + 0.9 * s.z_wait) AS dispatch_s
    FROM sampled s
),
timed AS (
    SELECT t.*,
           -- earlier attempts: each ran part of the way, then a backoff before the next
           t.retries * (0.5 * t.run_s + 30) AS prior_s,
           CASE WHEN t.cancel_queued THEN 0
                ELSE t.retries * (0.5 * t.run_s + 30)
                     + CASE WHEN t.cancel_running THEN t.run_s * t.r_cancel_at ELSE t.run_s END + 2
           END AS occupy_s
    FROM shaped t
),
-- Single-slot FIFO queue: a job's slot time ends at
--   S_i + max(carried, max over earlier-or-same jobs j of (ready_j - S_(j-1)))
-- with S the running sum of occupancy and `carried` the lane's slot end before this week.
cum AS (
    SELECT t.*, sum(occupy_s) OVER w AS s_cum
    FROM timed t WINDOW w AS (PARTITION BY lane ORDER BY created_at ROWS UNBOUNDED PRECEDING)
),
queued AS (
    SELECT c.*,
           c.s_cum + greatest(c.carried_s, max(c.created_s + c.dispatch_s - (c.s_cum - c.occupy_s)) OVER w)
               AS slot_end_s
    FROM cum c WINDOW w AS (PARTITION BY lane ORDER BY created_at ROWS UNBOUNDED PRECEDING)
),
placed AS (
    SELECT q.*,
           q.slot_end_s - q.occupy_s AS slot_start_s,
           q.slot_end_s - q.occupy_s + q.prior_s AS start_s,
           q.slot_end_s - 2 AS end_s,
           q.created_s + 60 + q.r_cancel_at * 1200 AS cancel_s
    FROM queued q
),
final AS (
    SELECT x.*,
           CASE WHEN x.cancel_queued THEN CASE WHEN x.cancel_s <= :now_s THEN 'cancelled' ELSE 'pending' END
                WHEN x.slot_start_s > :now_s OR x.start_s > :now_s THEN 'pending'
                WHEN x.end_s > :now_s THEN 'running'
                WHEN x.cancel_running THEN 'cancelled'
                WHEN x.failed THEN 'failed'
                ELSE 'completed' END AS status,
           x.slot_start_s <= :now_s AND x.start_s > :now_s AS in_backoff,
           CASE WHEN x.failed THEN x.fail_node ELSE x.n_nodes END AS last_node
    FROM placed x
),
inserted AS (
    INSERT INTO job_queue (workflow_id, workflow_name, workflow_json, priority, status, robot_id,
        environment, visible_after, created_at, started_at, completed_at, error_message, result,
        retry_count, max_retries, variables, metadata)
    SELECT f.workflow_id, f.workflow_name, (CAST(:workflow_json AS text[]))[f.wf],
           least(20, f.priority + 5 * (f.r_prio < 0.05)::int),
           f.status,
           CASE WHEN f.status IN ('running', 'completed', 'failed')
                  OR (f.status = 'cancelled' AND NOT f.cancel_queued) THEN f.robot_id END,
           f.environment,
           CASE WHEN f.status = 'running' THEN to_timestamp(:now_s + {LEASE_S})
                WHEN f.in_backoff THEN to_timestamp(f.start_s)
                WHEN f.status = 'pending' OR f.cancel_queued THEN f.created_at
                ELSE to_timestamp(f.start_s + {LEASE_S}) END,
           f.created_at,
           CASE WHEN f.status IN ('running', 'completed', 'failed')
                  OR (f.status = 'cancelled' AND NOT f.cancel_queued) THEN to_timestamp(f.start_s) END,
           CASE WHEN f.status IN ('completed', 'failed') OR (f.status = 'cancelled' AND NOT f.cancel_queued)
                    THEN to_timestamp(f.end_s)
                WHEN f.status = 'cancelled' THEN to_timestamp(f.cancel_s) END,
           CASE WHEN f.status = 'failed' OR f.in_backoff THEN f.message END,
           CASE WHEN f.status IN ('completed', 'failed') THEN jsonb_build_object(
                'nodes_executed', f.last_node,
                'node_executions', (
                    SELECT jsonb_agg(jsonb_build_object(
                        'node_id', n.node_id, 'node_type', n.node_type,
                        'status', CASE WHEN f.failed AND n.k = f.last_node THEN 'failed' ELSE 'completed' END,
                        'started_at', to_timestamp(n.start_s),
                        'completed_at', to_timestamp(n.start_s + n.dur_s),
                        'duration_ms', round(n.dur_s * 1000)::bigint,
                        'error', CASE WHEN f.failed AND n.k = f.last_node THEN f.message END) ORDER BY n.k)
                    FROM (
                        SELECT u.k, u.node_id, u.node_type,
                               f.start_s + f.full_s * u.node_start AS start_s,
                               -- a node uses most of its share; the rest is hand-over between nodes
                               f.full_s * u.node_share * (0.55 + 0.45 * random()) AS dur_s
                        FROM profiles p,
                             unnest(p.node_ids, p.node_types, p.node_start, p.node_share)
                                 WITH ORDINALITY AS u(node_id, node_type, node_start, node_share, k)
                        WHERE p.wf = f.wf AND u.k <= f.last_node
                    ) n))
                ELSE '{{}}'::jsonb END,
           CASE WHEN f.status = 'pending' AND NOT f.in_backoff THEN 0 ELSE f.retries END,
           {MAX_RETRIES},
           jsonb_build_object('batch_size', 1 + floor(f.r_var * 200)::int,
                              'source', (ARRAY['email', 'sftp', 'api', 'portal'])[1 + floor(f.r_var * 4)::int]),
           jsonb_build_object('trigger', CASE WHEN f.nightly OR f.r_trigger < 0.5 THEN 'schedule'
                                              WHEN f.r_trigger < 0.8 THEN 'api'
                                              WHEN f.r_trigger < 0.95 THEN 'manual' ELSE 'webhook' END)
           || CASE WHEN f.healing AND f.r_heal < 0.18 AND f.status IN ('completed', 'failed')
                   THEN jsonb_build_object('healing_attempts', 1 + floor(f.r_heal * 16)::int,
                                           'healing_successes', floor(f.r_heal * 16)::int
                                               + (f.status = 'completed')::int)
                   ELSE '{{}}'::jsonb END
    FROM (SELECT * FROM final ORDER BY created_at) f
)
SELECT lane, max(slot_end_s) AS slot_end_s FROM final GROUP BY lane
"""

_ROBOT_COLUMNS = """r(robot_id text, hb_from timestamptz, hb_until timestamptz, maintenance_from timestamptz,
    outage_from timestamptz, outage_to timestamptz, cpu_base float8, memory_total_mb float8,
    memory_base_mb float8, disk_percent float8, booted_at timestamptz, ip text)"""

# Heartbeats every ~60 s. A beat's current_jobs is the running count of job starts (+1) and
# ends (-1) before it on the same robot; CPU and memory follow that load plus smoothed noise.
_HEARTBEATS_SQL = f"""
INSERT INTO robot_heartbeats (robot_id, "timestamp", status, current_jobs, metrics, ip_address, latency_ms)
WITH r AS (SELECT * FROM jsonb_to_recordset(CAST(:robots AS jsonb)) AS {_ROBOT_COLUMNS}),
beats AS (
    SELECT r.robot_id, r.hb_until - make_interval(secs => k * {HEARTBEAT_EVERY_S} + random() * 4) AS ts
    FROM r, generate_series(0, floor(extract(epoch FROM r.hb_until - r.hb_from) / {HEARTBEAT_EVERY_S})::int) AS k
),
events AS (
    SELECT robot_id, ts, 0 AS delta FROM beats
    WHERE NOT EXISTS (SELECT 1 FROM r WHERE r.robot_id = beats.robot_id
                      AND beats.ts >= r.outage_from AND beats.ts < r.outage_to)
    UNION ALL
    SELECT robot_id, e.ts, e.delta FROM job_queue,
         LATERAL (VALUES (started_at, 1), (completed_at, -1)) AS e(ts, delta)
    WHERE started_at IS NOT NULL AND e.ts IS NOT NULL
      AND (status = 'running' OR completed_at >= CAST(:hb0 AS timestamptz))
      AND robot_id IN (SELECT robot_id FROM r)
),
counted AS (
    SELECT robot_id, ts, delta,
           sum(delta) OVER (PARTITION BY robot_id ORDER BY ts, delta ROWS UNBOUNDED PRECEDING) AS running
    FROM events
),
noisy AS (
    SELECT robot_id, ts, greatest(running, 0) AS running, random() AS n_cpu, random() AS n_mem,
           random() AS n_spike, sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS z_latency
    FROM counted WHERE delta = 0
),
smooth AS (
    SELECT n.*, avg(n_cpu) OVER w AS s_cpu, avg(n_mem) OVER w AS s_mem
    FROM noisy n WINDOW w AS (PARTITION BY robot_id ORDER BY ts ROWS 9 PRECEDING)
),
measured AS (
    SELECT s.*, r.maintenance_from, r.ip, r.memory_total_mb,
           least(99, greatest(1, r.cpu_base + 38 * least(s.running, 1) + 12 * greatest(s.running - 1, 0)
                 + (s.s_cpu - 0.5) * 30)) AS cpu,
           least(r.memory_total_mb * 0.97, r.memory_base_mb + 1400 * least(s.running, 1)
                 + 600 * greatest(s.running - 1, 0) + (s.s_mem - 0.5) * 900
                 -- a slow leak, cleared by the next reboot
                 + least(1500, extract(epoch FROM s.ts - r.booted_at) / 3600 * 6)) AS memory_mb,
           r.disk_percent + extract(epoch FROM s.ts - r.hb_from) / 86400 * 0.4 AS disk,
           greatest(0, extract(epoch FROM s.ts - r.booted_at))::bigint AS uptime
    FROM smooth s JOIN r USING (robot_id)
)
SELECT robot_id, ts,
       CASE WHEN ts >= maintenance_from THEN 'maintenance' WHEN running > 0 THEN 'busy' ELSE 'online' END,
       running,
       jsonb_build_object('cpu_percent', round(cpu::numeric, 1), 'memory_mb', round(memory_mb)::int,
                          'memory_percent', round((memory_mb / memory_total_mb * 100)::numeric, 1),
                          'disk_percent', round(disk::numeric, 1), 'uptime_seconds', uptime),
       CAST(ip AS inet),
       round(exp(ln(18) + 0.45 * z_latency) + CASE WHEN n_spike > 0.995 THEN 400 ELSE 0 END)::int
FROM measured
"""

_INSERT_ROBOT_SQL = """
INSERT INTO robots (robot_id, name, hostname, status, environment, capabilities, tags, metrics,
    max_concurrent_jobs, current_job_ids, registered_at, created_at, updated_at)
VALUES (:robot_id, :name, :hostname, :status, :environment, CAST(:capabilities AS jsonb),
    CAST(:tags AS jsonb), '{}', :max_concurrent_jobs, '[]', :registered_at, :registered_at, :registered_at)
"""

# Each robot row takes its latest heartbeat's metrics, and is busy while it holds running jobs.
# The latest beat lies within seconds of the robot's hb_until, which bounds the search
# whether or not the heartbeat indexes exist yet.
_SYNC_ROBOTS_SQL = """
UPDATE robots r
SET metrics = coalesce(h.metrics, r.metrics),
    last_heartbeat = h.ts, last_seen = h.ts, updated_at = coalesce(h.ts, r.updated_at),
    status = CASE WHEN r.status = 'maintenance' THEN r.status
                  WHEN j.ids IS NOT NULL THEN 'busy' ELSE 'online' END,
    current_job_ids = coalesce(j.ids, '[]'::jsonb)
FROM robots r2
LEFT JOIN (SELECT DISTINCT ON (hb.robot_id) hb.robot_id, hb."timestamp" AS ts, hb.metrics
           FROM robot_heartbeats hb
           JOIN jsonb_to_recordset(CAST(:robots AS jsonb)) AS x(robot_id text, hb_until timestamptz)
                USING (robot_id)
           WHERE hb."timestamp" >= x.hb_until - interval '1 minute'
           ORDER BY hb.robot_id, hb."timestamp" DESC) h ON h.robot_id = r2.robot_id
LEFT JOIN (SELECT robot_id, jsonb_agg(id::text ORDER BY started_at) AS ids
           FROM job_queue WHERE status = 'running' GROUP BY robot_id) j ON j.robot_id = r2.robot_id
WHERE r2.robot_id = r.robot_id
"""

_INSERT_JOB_SQL = """
INSERT INTO job_queue (workflow_id, workflow_name, workflow_json, priority, status, robot_id,
    environment, visible_after, created_at, started_at, result, variables, metadata)
VALUES (:workflow_id, :workflow_name, :workflow_json, :priority, :status, :robot_id,
    :environment, :visible_after, :created_at, :started_at, '{}', CAST(:variables AS jsonb),
    CAST(:metadata AS jsonb))
"""

_INSERT_DLQ_SQL = """
INSERT INTO job_queue_dlq (original_job_id, workflow_id, workflow_name, workflow_json, variables,
    error_message, error_details, retry_count, first_failed_at, last_failed_at, created_at,
    reprocessed_at, reprocessed_by)
VALUES (gen_random_uuid(), :workflow_id, :workflow_name, :workflow_json, '{}', :error_message,
    CAST(:error_details AS jsonb), :retries, :first_failed_at, :last_failed_at, :last_failed_at,
    :reprocessed_at, :reprocessed_by)
"""

ORCHESTRATOR_TABLES = ("job_queue", "robots", "robot_heartbeats", "job_queue_dlq")


class DatabaseNotEmpty(RuntimeError):
    """Demo data is only ever written into an empty orchestrator database."""


@contextmanager
def _bulk_session(engine: Engine):
    """A transaction for bulk work: no statement timeout, more sort memory, UTC rendering.

    The connection is discarded afterwards rather than returned to the pool, so session
    state (the random seed) never leaks into the app's connections.
    """
    conn = engine.connect()
    try:
        with conn.begin():
            for setting in ("statement_timeout = 0", "work_mem = '64MB'", "synchronous_commit = off",
                            "TIME ZONE 'UTC'"):
                conn.execute(sa.text(f"SET LOCAL {setting}"))
            yield conn
    finally:
        conn.invalidate()
        conn.close()


def has_orchestrator_data(engine: Engine) -> bool:
    sql = " OR ".join(f"EXISTS (SELECT 1 FROM {t})" for t in ORCHESTRATOR_TABLES)
    with engine.connect() as conn:
        return bool(conn.execute(sa.text(f"SELECT {sql}")).scalar())


def clear_orchestrator_tables(engine: Engine) -> None:
    """Empty the orchestrator's tables (the CLI's --force; and clean-up after a failed run)."""
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL statement_timeout = 0"))
        conn.execute(sa.text(f"TRUNCATE {', '.join(ORCHESTRATOR_TABLES)}"))


def _clean_up_after_failure(engine: Engine) -> None:
    # The tables were empty when we began, so everything in them is ours to remove.
    try:
        clear_orchestrator_tables(engine)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("could not remove partial demo data: %s", exc)


@dataclass(frozen=True)
class Lane:
    """One job slot of a robot: jobs handed to it run one after another."""
    robot: RobotSpec
    counts: np.ndarray  # jobs created per hour of the history


def _lane_json(pos: int, lane_no: int, lane: Lane, slot_end_s: float) -> dict:
    wf_day, edges_day = workflow_mix(lane.robot.environment, night=False)
    wf_night, edges_night = workflow_mix(lane.robot.environment, night=True)
    return {"pos": pos, "lane": lane_no, "robot_id": lane.robot.robot_id,
            "environment": lane.robot.environment, "slot_end_s": slot_end_s,
            "wf_day": wf_day, "edges_day": edges_day, "wf_night": wf_night, "edges_night": edges_night}


def _insert_history(engine: Engine, lanes: list[Lane], start: datetime, common: dict, seed: int) -> None:
    """The job history, a week at a time (all lanes, in LANE_GROUPS parallel statements), so
    that the table fills in created_at order; each lane's queue carries over between weeks."""
    hours = len(lanes[0].counts)
    slot_end = [0.0] * len(lanes)
    for w, h0 in enumerate(range(0, hours, WINDOW_HOURS)):
        h1 = min(hours, h0 + WINDOW_HOURS)
        params = []
        for g in range(LANE_GROUPS):
            members = list(range(g, len(lanes), LANE_GROUPS))
            if not members:
                continue
            params.append(dict(
                common, hours=h1 - h0, t0=start + timedelta(hours=h0),
                seed=float(np.random.default_rng([seed, 1, w, g]).uniform(-1, 1)),
                lanes=json.dumps([_lane_json(pos, k, lanes[k], slot_end[k]) for pos, k in enumerate(members)]),
                counts=np.concatenate([lanes[k].counts[h0:h1] for k in members]).tolist()))
        for rows in _run_parallel(engine, _WINDOW_SQL, params):
            for lane_no, end_s in rows:
                slot_end[lane_no] = end_s


def _run_parallel(engine: Engine, sql: str, params: list[dict]) -> list[list]:
    """Run one statement per parameter set, each in its own session seeded with params['seed'],
    on as many connections as there are cores (a single INSERT ... SELECT uses one core);
    return each statement's rows."""
    def run(p: dict) -> list:
        with _bulk_session(engine) as conn:
            conn.execute(sa.text("SELECT setseed(:seed)"), {"seed": p["seed"]})
            result = conn.execute(sa.text(sql), p)
            return [tuple(r) for r in result] if result.returns_rows else []

    # Never more sessions than statements in a batch, nor than the engine's pool easily lends.
    with ThreadPoolExecutor(max_workers=max(1, min(os.cpu_count() or 1, len(params), 4))) as pool:
        return list(pool.map(run, params))


def _plan_lanes(fleet: list[RobotSpec], history_jobs: int, start: datetime, days: int,
                rng: np.random.Generator) -> list[Lane]:
    """How many jobs each robot slot receives in each hour of the history."""
    hours = days * 24
    weights = hourly_weights(start, hours, rng)
    shapes = [(robot, weights * active_mask(start, hours, robot), float(rng.uniform(0.7, 1.3)))
              for robot in fleet for _ in range(robot.max_concurrent_jobs)]
    per_lane = allocate(history_jobs, [busy * w.sum() for _, w, busy in shapes])
    return [Lane(robot, allocate(int(n), w)) for (robot, w, _), n in zip(shapes, per_lane)]


def _robot_row(r: RobotSpec) -> dict:
    return {"robot_id": r.robot_id, "name": r.name, "hostname": r.hostname,
            "status": "maintenance" if r.role == "maintenance" else "online",
            "environment": r.environment, "capabilities": json.dumps(r.capabilities),
            "tags": json.dumps(r.tags), "max_concurrent_jobs": r.max_concurrent_jobs,
            "registered_at": r.registered_at}


def _heartbeat_robots(fleet: list[RobotSpec], hb0: datetime) -> str:
    rows = []
    for r in fleet:
        rows.append({
            "robot_id": r.robot_id, "hb_from": max(hb0, r.registered_at).isoformat(),
            "hb_until": r.last_heartbeat.isoformat(),
            "maintenance_from": r.takes_jobs_until.isoformat() if r.role == "maintenance" else None,
            "outage_from": r.outage[0].isoformat() if r.outage else None,
            "outage_to": r.outage[1].isoformat() if r.outage else None,
            "cpu_base": r.cpu_base, "memory_total_mb": r.memory_total_mb,
            "memory_base_mb": r.memory_base_mb, "disk_percent": r.disk_percent,
            "booted_at": r.booted_at.isoformat(), "ip": r.ip,
        })
    return json.dumps(rows)


def _tail_jobs(conn, fleet: list[RobotSpec], now: datetime, rng: np.random.Generator) -> int:
    """Top up the live edge: a few running jobs on idle robots, the rest just queued."""
    running = conn.execute(sa.text("SELECT robot_id FROM job_queue WHERE status = 'running'")).scalars().all()
    idle = [r for r in fleet if r.role in ("normal", "new", "outage") and r.robot_id not in set(running)]
    start_on = [idle[i] for i in rng.permutation(len(idle))[: max(0, MIN_RUNNING - len(running))]]
    rows = []
    for k in range(TAIL_JOBS):
        robot = start_on[k] if k < len(start_on) else None
        env = robot.environment if robot else str(rng.choice(list(ENVIRONMENTS), p=list(ENVIRONMENTS.values())))
        wf = pick_workflow(env, rng)
        started = now - timedelta(seconds=float(rng.uniform(5, 90))) if robot else None
        created = (started or now) - timedelta(seconds=float(rng.uniform(3, 240)))
        rows.append({
            "workflow_id": wf.workflow_id, "workflow_name": wf.name, "workflow_json": wf.workflow_json(),
            "priority": wf.priority, "status": "running" if robot else "pending",
            "robot_id": robot.robot_id if robot else None, "environment": env,
            "visible_after": now + timedelta(seconds=LEASE_S) if robot else created,
            "created_at": created, "started_at": started,
            "variables": json.dumps({"batch_size": int(rng.integers(1, 200)), "source": "api"}),
            "metadata": json.dumps({"trigger": "api"}),
        })
    conn.execute(sa.text(_INSERT_JOB_SQL), rows)
    return len(start_on)


def _dlq_rows(now: datetime, count: int, rng: np.random.Generator) -> list[dict]:
    """Jobs that exhausted their retries and were moved aside; some already reprocessed."""
    candidates = [w for w in WORKFLOWS if any(e.retryable for e in w.errors)]
    rows = []
    for k in range(count):
        wf = candidates[int(rng.integers(len(candidates)))]
        error = wf.sample_error(rng)
        last = now - timedelta(hours=float(rng.uniform(1, 14 * 24)))
        reprocessed = k % 3 == 0
        rows.append({
            "workflow_id": wf.workflow_id, "workflow_name": wf.name, "workflow_json": wf.workflow_json(),
            "error_message": error.message,
            "error_details": json.dumps({"attempts": MAX_RETRIES + 1, "last_node": wf.node_ids[-2]}),
            "retries": MAX_RETRIES,
            "first_failed_at": last - timedelta(minutes=float(rng.uniform(3, 40))), "last_failed_at": last,
            "reprocessed_at": last + timedelta(hours=float(rng.uniform(1, 20))) if reprocessed else None,
            "reprocessed_by": "ops.admin" if reprocessed else None,
        })
    return [r for r in rows if r["reprocessed_at"] is None or r["reprocessed_at"] < now]


def generate_demo(engine: Engine, *, jobs: int = 150_000, robots: int = 48, days: int = 90,
                  seed: int = 42, now: datetime | None = None) -> dict:
    """Fill an empty orchestrator database with a demo fleet and its history; return stats.

    Raises DatabaseNotEmpty when any orchestrator table already holds rows.
    """
    if jobs < TAIL_JOBS or days < 3:
        raise ValueError(f"the demo needs at least {TAIL_JOBS} jobs and 3 days")
    if has_orchestrator_data(engine):
        raise DatabaseNotEmpty("the orchestrator tables already hold data; demo data is only "
                               "generated into an empty database")
    began = time.perf_counter()
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    rng = np.random.default_rng(seed)
    fleet = build_fleet(robots, now, days, rng)
    scale = duration_scale(jobs, fleet, days)
    start = now - timedelta(days=days)
    lanes = _plan_lanes(fleet, jobs - TAIL_JOBS, start, days, rng)
    common = {"now_s": now.timestamp(), "scale": scale, "profiles": _profiles_json(),
              "incidents": _incidents_json(now, days), "workflow_json": [w.workflow_json() for w in WORKFLOWS]}
    hb0 = now - timedelta(days=HEARTBEAT_DAYS)
    beat_params = [{"robots": _heartbeat_robots(fleet[k::HEARTBEAT_BATCHES], hb0), "hb0": hb0,
                    "seed": float(np.random.default_rng([seed, 2, k]).uniform(-1, 1))}
                   for k in range(HEARTBEAT_BATCHES)]
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(_INSERT_ROBOT_SQL), [_robot_row(r) for r in fleet])
        _insert_history(engine, lanes, start, common, seed)
        jobs_done = time.perf_counter()
        with _bulk_session(engine) as conn:
            started = _tail_jobs(conn, fleet, now, rng)
        _run_parallel(engine, _HEARTBEATS_SQL, beat_params)
        with _bulk_session(engine) as conn:
            conn.execute(sa.text(_SYNC_ROBOTS_SQL), {"robots": _heartbeat_robots(fleet, hb0)})
            conn.execute(sa.text(_INSERT_DLQ_SQL), _dlq_rows(now, max(4, min(12, jobs // 15_000)), rng))
            # Fresh statistics, so the app's first queries get good plans.
            conn.execute(sa.text(f"ANALYZE {', '.join(ORCHESTRATOR_TABLES)}"))
    except BaseException:
        _clean_up_after_failure(engine)
        raise
    with _bulk_session(engine) as conn:
        counts = conn.execute(sa.text(
            "SELECT (SELECT count(*) FROM job_queue) AS jobs, (SELECT count(*) FROM robots) AS robots, "
            "(SELECT count(*) FROM robot_heartbeats) AS heartbeats, "
            "(SELECT count(*) FROM job_queue_dlq) AS dlq")).mappings().one()
    stats = dict(counts, days=days, seed=seed, now=now.isoformat(), duration_scale=round(scale, 4),
                 running_topped_up=started,
                 maintenance_robot=next(r.robot_id for r in fleet if r.role == "maintenance"),
                 silent_robot=next(r.robot_id for r in fleet if r.role == "silent"),
                 history_seconds=round(jobs_done - began, 2),
                 seconds=round(time.perf_counter() - began, 2))
    log.info("demo data generated: %s", stats)
    return stats


def record_demo(conn, stats: dict) -> None:
    """Remember in fleet_monitor.meta (key 'demo') that this database holds generated data."""
    conn.execute(sa.text(
        f"INSERT INTO {APP_SCHEMA}.meta (key, value, updated_at) VALUES ('demo', CAST(:v AS jsonb), now()) "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at"),
        {"v": json.dumps(stats)})


def ensure_demo_data(engine: Engine, settings) -> dict | None:
    """Generate the demo fleet once into an empty database; None when there was data already.

    Workers starting together queue on an advisory lock; the first generates, the others then
    find data and return. The run is recorded in fleet_monitor.meta under key 'demo'.
    """
    if has_orchestrator_data(engine):
        return None
    with engine.connect() as conn, conn.begin():
        conn.execute(sa.text("SET LOCAL statement_timeout = 0"))
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})
        if has_orchestrator_data(engine):
            return None
        stats = generate_demo(engine, jobs=settings.demo_jobs, robots=settings.demo_robots)
        record_demo(conn, stats)
    return stats
