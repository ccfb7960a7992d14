"""A live orchestrator and its robots, so the demo moves while people watch it.

Each tick: jobs arrive (steadily, and now and then in a burst), idle robots claim pending jobs
the way the orchestrator does (FOR UPDATE SKIP LOCKED), running jobs finish or fail (some are
re-queued for a retry), robots heartbeat every few seconds, and now and then a robot drops
off the network for a few minutes. Run times are those of the demo's workflow profiles,
shortened so that most jobs end within seconds to a few minutes.

Only one process simulates at a time: the one holding a session-level advisory lock.
"""
from __future__ import annotations

import json
import logging
import threading
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from data.demo import DAY_OF_WEEK, HOUR_OF_DAY, LEASE_S, WORKFLOWS, WorkflowProfile, pick_workflow

log = logging.getLogger(__name__)

LOCK_KEY = 0x466C6D53
LEADER_RETRY_S = 5
DB_RETRY_S = 5
HEARTBEAT_EVERY_S = 5
HEARTBEAT_RETENTION_DAYS = 3
PRUNE_EVERY_S = 600
POLL_EVERY_S = 2
FLEET_RELOAD_S = 60
# A robot whose heartbeat lags the fleet's freshest by more than this has gone silent: leave it.
SILENT_AFTER_S = 600
# Real run times are divided by this and clipped, so the demo visibly moves.
SPEEDUP = 5
RUN_CLIP_S = (8, 180)
UTILISATION = 0.25  # average share of robot slots busy, bursts aside
BURST_EVERY_S = 180
DROP_EVERY_S = 300
DROP_FOR_S = (120, 240)


@dataclass
class RobotState:
    robot_id: str
    environment: str
    slots: int
    cpu: float
    memory_mb: float
    memory_total_mb: float
    disk_percent: float
    booted_at: datetime
    next_heartbeat: datetime
    next_poll: datetime
    offline_until: datetime | None = None
    jobs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    """How a claimed job will end: when, and with which outcome."""
    finish_at: datetime
    full_s: float
    fail_node: int | None = None
    error: str | None = None
    retryable: bool = False


def profile_for(workflow_id: str) -> WorkflowProfile:
    """The demo profile of a workflow; jobs of unknown workflows borrow one (stably)."""
    for profile in WORKFLOWS:
        if profile.workflow_id == workflow_id:
            return profile
    return WORKFLOWS[zlib.crc32(workflow_id.encode()) % len(WORKFLOWS)]


def sim_run_seconds(profile: WorkflowProfile, rng: np.random.Generator) -> float:
    return float(np.clip(profile.sample_duration(rng) / SPEEDUP, *RUN_CLIP_S))


def plan_job(profile: WorkflowProfile, started_at: datetime, rng: np.random.Generator) -> Plan:
    full_s = sim_run_seconds(profile, rng)
    if rng.random() >= profile.failure_rate:
        return Plan(started_at + timedelta(seconds=full_s), full_s)
    node = int(rng.integers(2, len(profile.nodes) + 1))
    error = profile.sample_error(rng)
    return Plan(started_at + timedelta(seconds=full_s * profile.end_fraction(node)), full_s,
                node, error.message, error.retryable)


def arrival_factor(now: datetime) -> float:
    """The history's daily and weekly rhythm, floored so that nights and weekends still move."""
    peak = max(HOUR_OF_DAY) * max(DAY_OF_WEEK)
    return max(0.4, HOUR_OF_DAY[now.hour] * DAY_OF_WEEK[now.weekday()] / peak)


_CLAIM_SQL = """
UPDATE job_queue j
SET status = 'running', robot_id = :robot_id, started_at = :now, visible_after = :lease_until
FROM (SELECT id FROM job_queue
      WHERE status = 'pending' AND environment = :environment AND visible_after <= :now
      ORDER BY priority DESC, created_at
      FOR UPDATE SKIP LOCKED
      LIMIT :n) c
WHERE j.id = c.id
RETURNING j.id::text AS id, j.workflow_id
"""

_RUNNING_SQL = """
SELECT id::text AS id, robot_id::text AS robot_id, workflow_id, started_at, retry_count, max_retries
FROM job_queue WHERE status = 'running' AND robot_id IS NOT NULL
"""

_FINISH_SQL = """
UPDATE job_queue
SET status = :status, completed_at = :now, error_message = :error,
    result = coalesce(result, '{}'::jsonb) || CAST(:result AS jsonb),
    metadata = coalesce(metadata, '{}'::jsonb) || CAST(:metadata AS jsonb)
WHERE id = CAST(:id AS uuid) AND status = 'running' AND robot_id = :robot_id
"""

# The orchestrator's retry: back to the queue, visible again after a backoff.
_REQUEUE_SQL = """
UPDATE job_queue
SET status = 'pending', robot_id = NULL, started_at = NULL, error_message = :error,
    retry_count = retry_count + 1, visible_after = :visible_after
WHERE id = CAST(:id AS uuid) AND status = 'running' AND robot_id = :robot_id
"""

_ENQUEUE_SQL = """
INSERT INTO job_queue (workflow_id, workflow_name, workflow_json, priority, status, environment,
    visible_after, created_at, variables, metadata)
VALUES (:workflow_id, :workflow_name, :workflow_json, :priority, 'pending', :environment,
    :created_at, :created_at, CAST(:variables AS jsonb), CAST(:metadata AS jsonb))
"""

_HEARTBEAT_SQL = """
INSERT INTO robot_heartbeats (robot_id, "timestamp", status, current_jobs, metrics, latency_ms)
VALUES (:robot_id, :now, :status, :current_jobs, CAST(:metrics AS jsonb), :latency_ms)
"""

_ROBOT_BEAT_SQL = """
UPDATE robots SET last_heartbeat = :now, last_seen = :now, updated_at = :now, status = :status,
    current_job_ids = CAST(:job_ids AS jsonb), metrics = CAST(:metrics AS jsonb)
WHERE robot_id = :robot_id AND status <> 'maintenance'
"""

_ROBOT_JOBS_SQL = """
UPDATE robots SET updated_at = :now, status = :status, current_job_ids = CAST(:job_ids AS jsonb)
WHERE robot_id = :robot_id AND status <> 'maintenance'
"""

_FLEET_SQL = """
SELECT robot_id::text AS robot_id, environment, status, coalesce(max_concurrent_jobs, 1) AS slots,
       last_heartbeat, metrics, max(last_heartbeat) OVER () AS freshest
FROM robots
"""


class Simulator:
    def __init__(self, engine: Engine, *, tick_seconds: float = 1.0, seed: int | None = None):
        self.engine = engine
        self.tick_seconds = tick_seconds
        self.rng = np.random.default_rng(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_conn: Connection | None = None
        self._next_leader_try: datetime | None = None
        self._robots: dict[str, RobotState] = {}
        self._fleet_loaded_at: datetime | None = None
        self._plans: dict[str, Plan] = {}
        self._last_step: datetime | None = None
        self._pruned_at: datetime | None = None
        self._mean_run_s = self._estimate_mean_run()
        self.totals = {"enqueued": 0, "claimed": 0, "finished": 0, "heartbeats": 0}

    # -- life cycle -------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._lock_conn is not None

    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fleet-simulator", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
        self._resign()

    def _run(self) -> None:
        paused = False  # log once when pausing and once when resuming, never per retry
        while not self._stop.is_set():
            try:
                self.step()
                if paused:
                    log.info("simulator: resuming")
                paused = False
                wait = self.tick_seconds
            except Exception as exc:  # the demo must outlive a lost database, and a bug too
                if not paused:
                    if isinstance(exc, sa.exc.SQLAlchemyError):
                        log.warning("simulator paused, database unavailable: %s", _first_line(exc))
                    else:
                        log.exception("simulator paused by an unexpected error; retrying every %s s", DB_RETRY_S)
                paused = True
                self._resign()
                wait = DB_RETRY_S
            self._stop.wait(wait)

    # -- leadership -------------------------------------------------------------------------

    def _lead(self, now: datetime) -> bool:
        """True while this simulator holds the leader lock (tries for it every few seconds)."""
        if self._lock_conn is not None:
            try:
                self._lock_conn.execute(sa.text("SELECT 1"))
                self._lock_conn.commit()
                return True
            except sa.exc.SQLAlchemyError:
                self._resign()
                raise
        if self._next_leader_try is not None and now < self._next_leader_try:
            return False
        self._next_leader_try = now + timedelta(seconds=LEADER_RETRY_S)
        conn = self.engine.connect()
        try:
            got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar())
            conn.commit()
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._lock_conn = conn
        self._robots, self._plans, self._fleet_loaded_at, self._last_step = {}, {}, None, None
        log.info("simulator: this process now simulates the fleet")
        return True

    def _resign(self) -> None:
        """Give up leadership: unlock (so a successor can lead at once) and drop the session,
        whose end releases the lock anyway when the database is not reachable."""
        conn, self._lock_conn = self._lock_conn, None
        if conn is None:
            return
        try:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
        except sa.exc.SQLAlchemyError:
            pass
        finally:
            conn.invalidate()
            conn.close()

    # -- one tick ---------------------------------------------------------------------------

    def step(self, now: datetime | None = None) -> dict:
        """One tick of the simulation at `now` (default: the clock); returns what happened."""
        now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
        if not self._lead(now):
            return {"leader": False}
        dt = self.tick_seconds if self._last_step is None else (now - self._last_step).total_seconds()
        dt = min(max(dt, 0.0), 10.0)
        self._last_step = now
        with self.engine.begin() as conn:
            self._load_fleet(conn, now)
            changed: set[str] = set()
            finished = self._finish_jobs(conn, now, changed)
            enqueued = self._enqueue(conn, now, dt)
            claimed = self._claim(conn, now, changed)
            self._drop_robot(now, dt)
            beats = self._heartbeats(conn, now, changed)
            self._prune(conn, now)
        done = {"finished": finished, "enqueued": enqueued, "claimed": claimed, "heartbeats": beats}
        for key, n in done.items():
            self.totals[key] += n
        return {"leader": True, **done}

    def _prune(self, conn: Connection, now: datetime) -> None:
        """Keep the demo's heartbeat history bounded (the simulator writes ~800k rows a day)."""
        if self._pruned_at and (now - self._pruned_at).total_seconds() < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        conn.execute(sa.text('DELETE FROM robot_heartbeats WHERE "timestamp" < :cutoff'),
                     {"cutoff": now - timedelta(days=HEARTBEAT_RETENTION_DAYS)})

    def _load_fleet(self, conn: Connection, now: datetime) -> None:
        """(Re)read the robots; ones in maintenance or long silent are left as they are."""
        if self._fleet_loaded_at and (now - self._fleet_loaded_at).total_seconds() < FLEET_RELOAD_S:
            return
        self._fleet_loaded_at = now
        fresh: dict[str, RobotState] = {}
        for row in conn.execute(sa.text(_FLEET_SQL)).mappings():
            if row["status"] not in ("online", "busy") or row["last_heartbeat"] is None:
                continue
            lag = (row["freshest"] - row["last_heartbeat"]).total_seconds()
            known = self._robots.get(row["robot_id"])
            if lag > SILENT_AFTER_S and known is None:
                continue
            fresh[row["robot_id"]] = known or self._new_robot_state(row, now)
        self._robots = fresh

    def _new_robot_state(self, row, now: datetime) -> RobotState:
        m = row["metrics"] or {}
        memory_mb = float(m.get("memory_mb") or 3000)
        memory_percent = float(m.get("memory_percent") or 30)
        stagger = timedelta(seconds=float(self.rng.uniform(0, HEARTBEAT_EVERY_S)))
        return RobotState(
            robot_id=row["robot_id"], environment=row["environment"] or "default", slots=int(row["slots"]),
            cpu=float(m.get("cpu_percent") or 10), memory_mb=memory_mb,
            memory_total_mb=memory_mb * 100 / max(memory_percent, 1),
            disk_percent=float(m.get("disk_percent") or 50),
            booted_at=now - timedelta(seconds=float(m.get("uptime_seconds") or 86400)),
            next_heartbeat=now + stagger, next_poll=now)

    def _finish_jobs(self, conn: Connection, now: datetime, changed: set[str]) -> int:
        running = conn.execute(sa.text(_RUNNING_SQL)).mappings().all()
        for robot in self._robots.values():
            robot.jobs = []
        finished = 0
        for job in running:
            robot = self._robots.get(job["robot_id"])
            if robot is None:
                continue  # not one of ours (silent, in maintenance, or another fleet's)
            plan = self._plans.get(job["id"])
            if plan is None:
                plan = plan_job(profile_for(job["workflow_id"]), job["started_at"] or now, self.rng)
                self._plans[job["id"]] = plan
            if plan.finish_at > now:
                robot.jobs.append(job["id"])
                continue
            self._finish(conn, job, plan, now)
            self._plans.pop(job["id"], None)
            changed.add(robot.robot_id)
            finished += 1
        # Forget plans of jobs that left 'running' some other way (cancelled by an operator).
        alive = {j["id"] for j in running}
        self._plans = {k: v for k, v in self._plans.items() if k in alive}
        return finished

    def _finish(self, conn: Connection, job, plan: Plan, now: datetime) -> None:
        ids = {"id": job["id"], "robot_id": job["robot_id"]}
        if plan.error and plan.retryable and job["retry_count"] < job["max_retries"]:
            backoff = timedelta(seconds=float(self.rng.uniform(5, 20)))
            conn.execute(sa.text(_REQUEUE_SQL), {**ids, "error": plan.error, "visible_after": now + backoff})
            return
        profile = profile_for(job["workflow_id"])
        nodes = profile.node_executions(job["started_at"] or now, plan.full_s, self.rng, plan.fail_node, plan.error)
        metadata = {}
        if profile.healing and self.rng.random() < 0.18:
            attempts = int(self.rng.integers(1, 4))
            metadata = {"healing_attempts": attempts,
                        "healing_successes": attempts - (1 if plan.error else 0)}
        conn.execute(sa.text(_FINISH_SQL), {
            **ids, "now": now, "status": "failed" if plan.error else "completed", "error": plan.error,
            "result": json.dumps({"node_executions": nodes, "nodes_executed": len(nodes)}),
            "metadata": json.dumps(metadata)})

    def _enqueue(self, conn: Connection, now: datetime, dt: float) -> int:
        envs = self._slots_by_env()
        if not envs:
            return 0
        rows = []
        for env, slots in envs.items():
            rate = UTILISATION * slots / self._mean_run_s * arrival_factor(now)
            for _ in range(int(self.rng.poisson(rate * dt))):
                rows.append(self._job_row(pick_workflow(env, self.rng), env, now))
        if self.rng.random() < dt / BURST_EVERY_S:
            names = list(envs)
            env = names[int(self.rng.choice(len(names), p=np.array([envs[n] for n in names]) / sum(envs.values())))]
            profile = pick_workflow(env, self.rng)
            # A batch larger than the pool's free slots, so a backlog builds and then drains.
            size = int(self.rng.integers(envs[env], 3 * envs[env] + 1)) + 5
            rows += [self._job_row(profile, env, now) for _ in range(size)]
        if rows:
            conn.execute(sa.text(_ENQUEUE_SQL), rows)
        return len(rows)

    def _job_row(self, profile: WorkflowProfile, env: str, now: datetime) -> dict:
        created = now - timedelta(seconds=float(self.rng.uniform(0, 1)))
        return {"workflow_id": profile.workflow_id, "workflow_name": profile.name,
                "workflow_json": profile.workflow_json(), "priority": profile.priority,
                "environment": env, "created_at": created,
                "variables": json.dumps({"batch_size": int(self.rng.integers(1, 200))}),
                "metadata": json.dumps({"trigger": "api"})}

    def _claim(self, conn: Connection, now: datetime, changed: set[str]) -> int:
        claimed = 0
        for robot in self._robots.values():
            free = robot.slots - len(robot.jobs)
            if free <= 0 or robot.next_poll > now or self._offline(robot, now):
                continue
            robot.next_poll = now + timedelta(seconds=POLL_EVERY_S)
            rows = conn.execute(sa.text(_CLAIM_SQL), {
                "robot_id": robot.robot_id, "environment": robot.environment, "now": now,
                "lease_until": now + timedelta(seconds=LEASE_S), "n": free}).mappings().all()
            for row in rows:
                robot.jobs.append(row["id"])
                self._plans[row["id"]] = plan_job(profile_for(row["workflow_id"]), now, self.rng)
            if rows:
                changed.add(robot.robot_id)
                claimed += len(rows)
        return claimed

    def _drop_robot(self, now: datetime, dt: float) -> None:
        """Now and then an idle robot drops off the network for a few minutes."""
        if any(self._offline(r, now) for r in self._robots.values()):
            return
        if self.rng.random() >= dt / DROP_EVERY_S:
            return
        idle = [r for r in self._robots.values() if not r.jobs]
        if idle:
            robot = idle[int(self.rng.integers(len(idle)))]
            robot.offline_until = now + timedelta(seconds=float(self.rng.uniform(*DROP_FOR_S)))

    def _heartbeats(self, conn: Connection, now: datetime, changed: set[str]) -> int:
        beats, robot_rows, job_rows = [], [], []
        for robot in self._robots.values():
            if self._offline(robot, now):
                continue
            status = "busy" if robot.jobs else "online"
            job_ids = json.dumps(robot.jobs)
            if robot.next_heartbeat <= now:
                robot.next_heartbeat = now + timedelta(seconds=HEARTBEAT_EVERY_S * float(self.rng.uniform(0.9, 1.1)))
                metrics = json.dumps(self._metrics(robot, now))
                beats.append({"robot_id": robot.robot_id, "now": now, "status": status,
                              "current_jobs": len(robot.jobs), "metrics": metrics,
                              "latency_ms": int(np.exp(np.log(18) + 0.45 * self.rng.standard_normal()))})
                robot_rows.append({"robot_id": robot.robot_id, "now": now, "status": status,
                                   "job_ids": job_ids, "metrics": metrics})
            elif robot.robot_id in changed:
                job_rows.append({"robot_id": robot.robot_id, "now": now, "status": status, "job_ids": job_ids})
        if beats:
            conn.execute(sa.text(_HEARTBEAT_SQL), beats)
            conn.execute(sa.text(_ROBOT_BEAT_SQL), robot_rows)
        if job_rows:
            conn.execute(sa.text(_ROBOT_JOBS_SQL), job_rows)
        return len(beats)

    def _metrics(self, robot: RobotState, now: datetime) -> dict:
        """A mean-reverting walk towards the load the robot's jobs put on it."""
        busy = len(robot.jobs)
        cpu_target = 8 + 38 * min(busy, 1) + 12 * max(busy - 1, 0)
        mem_target = robot.memory_total_mb * 0.22 + 1400 * min(busy, 1)
        robot.cpu = float(np.clip(robot.cpu + 0.3 * (cpu_target - robot.cpu) + self.rng.normal(0, 3), 1, 99))
        robot.memory_mb = float(np.clip(robot.memory_mb + 0.2 * (mem_target - robot.memory_mb)
                                        + self.rng.normal(0, 40), 500, robot.memory_total_mb * 0.97))
        return {"cpu_percent": round(robot.cpu, 1), "memory_mb": round(robot.memory_mb),
                "memory_percent": round(robot.memory_mb / robot.memory_total_mb * 100, 1),
                "disk_percent": round(robot.disk_percent, 1),
                "uptime_seconds": int((now - robot.booted_at).total_seconds())}

    # -- helpers ----------------------------------------------------------------------------

    def _offline(self, robot: RobotState, now: datetime) -> bool:
        if robot.offline_until is None:
            return False
        if now >= robot.offline_until:
            robot.offline_until = None
            return False
        return True

    def _slots_by_env(self) -> dict[str, int]:
        slots: dict[str, int] = {}
        for robot in self._robots.values():
            slots[robot.environment] = slots.get(robot.environment, 0) + robot.slots
        return slots

    def _estimate_mean_run(self) -> float:
        rng = np.random.default_rng(0)
        weights = np.array([w.weight for w in WORKFLOWS])
        picks = rng.choice(len(WORKFLOWS), size=2000, p=weights / weights.sum())
        return float(np.mean([sim_run_seconds(WORKFLOWS[i], rng) for i in picks]))


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def start_simulator(engine: Engine, settings) -> Simulator | None:
    """Start the background simulator when the settings ask for it."""
    if not settings.simulator:
        return None
    simulator = Simulator(engine)
    simulator.start()
    return simulator
