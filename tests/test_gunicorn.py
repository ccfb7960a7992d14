"""Production serving: `gunicorn app:server` with gunicorn.conf.py and 2 workers, against the test
database: pages, API and /metrics answer, request counters add up across the workers, the logs
are JSON with request ids, and SIGTERM stops it gracefully."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, TEST_JWT_SECRET, TEST_USERS, create_test_users, free_port
from tests.helpers import ago, insert_robot

STARTUP_SECONDS = 90


def wait_until_healthy(base: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"gunicorn exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or workers still booting
            pass
        time.sleep(0.25)  # polling a starting server process, not a browser
    pytest.fail(f"gunicorn did not answer /health in {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")


def health_count(base: str) -> float:
    text = requests.get(f"{base}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if (s.name == "fleet_monitor_http_requests_total" and s.labels.get("route") == "/health"
                    and s.labels.get("status") == "200"):
                return s.value
    return 0.0


def json_lines(path: Path) -> list[dict]:
    lines = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


@pytest.fixture
def gunicorn(engine, db_url, tmp_path):
    create_test_users(engine)
    with engine.begin() as c:
        insert_robot(c, "robot-g", status="online", last_heartbeat=ago(seconds=2))
    port = free_port()
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {**os.environ, "DATABASE_URL": db_url, "FLEET_JWT_SECRET": TEST_JWT_SECRET, "FLEET_SIMULATOR": "0",
           "FLEET_BIND": f"127.0.0.1:{port}", "FLEET_WORKERS": "2", "FLEET_THREADS": "2",
           "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "FLEET_LOG_LEVEL": "info"}
    env.pop("FLEET_METRICS_TOKEN", None)
    out, err = tmp_path / "access.log", tmp_path / "error.log"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "app:server"],
                                cwd=ROOT, env=env, stdout=stdout, stderr=stderr)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, proc, err)
        yield {"base": base, "proc": proc, "access": out, "error": err, "metrics_dir": metrics_dir}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_two_workers_answer_pages_api_and_metrics(gunicorn):
    base = gunicorn["base"]
    username, password = TEST_USERS["viewer"]
    login = requests.post(f"{base}/api/v1/auth/login", json={"username": username, "password": password}, timeout=10)
    assert login.status_code == 200, login.text
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}

    page = requests.get(f"{base}/", headers=auth, timeout=20)
    assert page.status_code == 200 and "<title>Fleet Monitor</title>" in page.text
    assert requests.get(f"{base}/login", timeout=10).status_code == 200
    fleet = requests.get(f"{base}/api/v1/metrics/fleet", headers=auth, timeout=20)
    assert fleet.status_code == 200 and fleet.json()["total_robots"] == 1
    assert requests.get(f"{base}/api/v1/metrics/fleet", timeout=10).status_code == 401
    assert requests.get(f"{base}/ready", timeout=10).json()["status"] == "ready"
    scraped = {f.name for f in text_string_to_metric_families(requests.get(f"{base}/metrics", timeout=20).text)}
    assert {"casare_robots_total", "casare_jobs_queue_depth", "fleet_monitor_http_requests"} <= scraped

    # Request counters add up across the workers: send bursts until both workers served some.
    before = health_count(base)
    sent, round_ = 0, 0
    served_by: set[int] = set()
    with ThreadPoolExecutor(max_workers=8) as pool:
        while len(served_by) < 2 and round_ < 6:
            ids = [f"burst-{round_}-{i}" for i in range(40)]
            codes = list(pool.map(lambda rid: requests.get(f"{base}/health", headers={"X-Request-ID": rid},
                                                           timeout=10).status_code, ids))
            assert codes == [200] * len(ids)
            sent += len(ids)
            round_ += 1
            time.sleep(0.2)  # let the access log lines reach the file
            wanted = set(ids)
            served_by |= {line["pid"] for line in json_lines(gunicorn["access"]) if line.get("request_id") in wanted}
    assert len(served_by) == 2, "one worker served every request"
    assert health_count(base) - before == sent
    pids = {int(p.stem.rsplit("_", 1)[-1]) for p in gunicorn["metrics_dir"].glob("counter_*.db")}
    assert served_by <= pids

    # JSON logs: every access line has the request id the client sent (or one made up).
    access = [line for line in json_lines(gunicorn["access"]) if line.get("path") == "/health"]
    assert len(access) >= sent
    sample = next(line for line in access if line["request_id"] == "burst-0-0")
    assert sample["status"] == 200 and sample["method"] == "GET" and sample["duration_ms"] >= 0
    assert all(line.get("request_id") for line in json_lines(gunicorn["access"]))
    errors = json_lines(gunicorn["error"])
    assert errors and all({"time", "level", "logger", "message"} <= set(line) for line in errors)

    # Graceful shutdown on SIGTERM.
    proc = gunicorn["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=45) == 0
    messages = [line["message"] for line in json_lines(gunicorn["error"])]
    assert any("Shutting down" in m for m in messages)
