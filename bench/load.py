"""Load test: many screens watching the Fleet overview, against gunicorn on loopback.

    python -m bench.load [--size 1m] [--levels 1,10,100] [--duration 60] [--check]

Starts ``gunicorn app:server`` (the repository's gunicorn.conf.py when present, else
``-w 2 -k gthread --threads 8``) on 127.0.0.1 against the benchmark database (simulator off),
signs in as a bench user through the real sign-in form, reads the overview's refresh callback
from /_dash-dependencies and builds the exact body the page POSTs to /_dash-update-component
(session cookies plus the X-CSRF-TOKEN header), then drives it with wrk (bench/wrk/overview.lua)
for a bounded time at each level:

- *viewers*: each connection is a screen refreshing every 5 s (the page's interval), so 100
  connections are 100 viewers; this is the issue's target (no errors, p95 ≤ 250 ms, database
  load flat from 1 to 100 viewers);
- *stress*: each connection sends its next request as soon as the answer arrives (capacity).

Each request asks for a full redraw (every output, as when a job changed since the last
refresh), the common case with a busy orchestrator. The database's load is read from
pg_stat_database (transactions committed + rolled back in the benchmark database, one per
statement the app sends) before and after each level, after stats settle; and from the app's
own ``fleet_monitor_db_queries_total`` on /metrics when the app exports it. Results go into the
load section of bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from bench.common import (BENCH_DIR, DATA_DIR, RESULTS, VIEWER_TZ, database_url, db_name, parse_size, size_label,
                          start_server)
from bench.run import LOAD_BEGIN, LOAD_END

log = logging.getLogger("bench")
PROJECT = BENCH_DIR.parent
LUA = BENCH_DIR / "wrk" / "overview.lua"
USERNAME, TZ = "bench-load", "Europe/Berlin"
REFRESH_MS = 5000
STATS_SETTLE_S = 11.5  # backends flush their statistics within 10 s of going idle
P95_TARGET_MS = 250
FLAT_FACTOR = 2.0      # "flat": at 100 viewers at most this times the 1-viewer rate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """gunicorn serving the app on loopback; stopped (its own process group) on exit."""

    def __init__(self, url: str, port: int, secret: str):
        self.base = f"http://127.0.0.1:{port}"
        conf = PROJECT / "gunicorn.conf.py"
        cmd = [sys.executable, "-m", "gunicorn", "app:server", "-b", f"127.0.0.1:{port}"]
        self.config = "gunicorn.conf.py" if conf.exists() else "-w 2 -k gthread --threads 8"
        if not conf.exists():
            cmd += ["-w", "2", "-k", "gthread", "--threads", "8"]
        env = dict(os.environ, DATABASE_URL=url, FLEET_JWT_SECRET=secret, FLEET_SIMULATOR="0",
                   FLEET_LOG_LEVEL="warning", FLEET_BIND=f"127.0.0.1:{port}", FLEET_ROLLUP_TIMEZONE=VIEWER_TZ)
        env.pop("REDIS_URL", None)
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = DATA_DIR / "gunicorn.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=PROJECT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout_s: float = 180) -> None:
        import requests

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.proc.returncode}); see {self.log_path}")
            try:
                if requests.get(self.base + "/login", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"gunicorn did not answer within {timeout_s:.0f} s; see {self.log_path}")

    def log_position(self) -> int:
        self._log.flush()
        return self.log_path.stat().st_size

    def answers(self, start: int) -> dict:
        """What the access log says about the callback requests since `start` (byte offset)."""
        time.sleep(1.0)  # the last answers' log lines
        ok = non_2xx = app_errors = 0
        sizes = []
        with open(self.log_path, "rb") as fh:
            fh.seek(start)
            for raw in fh:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if line.get("level") in ("ERROR", "CRITICAL"):
                    app_errors += 1
                if line.get("path") != "/_dash-update-component" or "status" not in line:
                    continue
                if 200 <= int(line["status"]) < 300:
                    ok += 1
                    sizes.append(int(line.get("bytes") or 0))
                else:
                    non_2xx += 1
        sizes.sort()
        return {"ok": ok, "non_2xx": non_2xx, "app_errors": app_errors,
                "median_bytes": sizes[len(sizes) // 2] if sizes else None}

    def workers(self) -> int:
        try:
            import psutil

            return len(psutil.Process(self.proc.pid).children())
        except Exception:  # noqa: BLE001 - informative only
            return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def sign_in(base: str, password: str):
    import requests

    session = requests.Session()
    response = session.post(base + "/login", data={"username": USERNAME, "password": password, "next": "/"},
                            allow_redirects=False, timeout=30)
    if response.status_code != 302 or "csrf_access_token" not in session.cookies:
        raise RuntimeError(f"sign-in failed: HTTP {response.status_code}")
    return session


def _component_id(raw: str):
    return json.loads(raw) if raw.startswith("{") else raw


def _id_text(component_id) -> str:
    if isinstance(component_id, dict):
        return json.dumps(component_id, sort_keys=True, separators=(",", ":"))
    return component_id


def overview_request(session, base: str, tz: str = TZ) -> dict:
    """The body the Fleet overview POSTs when its interval fires, built from /_dash-dependencies."""
    deps = session.get(base + "/_dash-dependencies", timeout=30).json()
    dep = next((d for d in deps if "overview-tiles.children" in d["output"]), None)
    if dep is None:
        raise RuntimeError("the overview's refresh callback is not in /_dash-dependencies")
    outputs = []
    for part in dep["output"].strip(".").split("..."):
        cid, prop = part.rsplit(".", 1)
        outputs.append({"id": _component_id(cid), "property": prop})
    inputs, changed = [], []
    for item in dep["inputs"]:
        if item["property"] == "n_intervals":
            inputs.append({**item, "value": 1})
            changed.append(f"{_id_text(item['id'])}.n_intervals")
        elif item["id"] == "tz":
            inputs.append({**item, "value": tz})
        else:
            inputs.append({**item, "value": None})
    # An empty page state: the callback redraws everything (as after a job changed).
    state = [{**item, "value": {}} if item["property"] == "data" else {**item, "value": None} for item in dep["state"]]
    return {"output": dep["output"], "outputs": outputs, "inputs": inputs, "state": state, "changedPropIds": changed}


def check_request(session, base: str, body: dict) -> None:
    response = session.post(base + "/_dash-update-component", json=body, timeout=60,
                            headers={"X-CSRF-TOKEN": session.cookies["csrf_access_token"]})
    if response.status_code != 200:
        raise RuntimeError(f"the refresh callback answered HTTP {response.status_code}: {response.text[:300]}")
    answer = response.json().get("response", {})
    if "overview-tiles" not in answer:
        raise RuntimeError(f"unexpected callback answer: {str(answer)[:300]}")
    if answer.get("overview-alert", {}).get("is_open"):
        raise RuntimeError(f"the page shows an alert: {answer['overview-alert']}")


def db_transactions(admin_url: str, name: str) -> int:
    engine = sa.create_engine(admin_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :n"), {"n": name}).scalar())
    finally:
        engine.dispose()


def app_statements(session, base: str) -> float | None:
    """fleet_monitor_db_queries_total summed over workers, when /metrics exports it."""
    try:
        response = session.get(base + "/metrics", timeout=30)
    except Exception:  # noqa: BLE001
        return None
    if response.status_code != 200:
        return None
    total, found = 0.0, False
    for line in response.text.splitlines():
        if line.startswith("fleet_monitor_db_queries_total"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


def run_wrk(base: str, files: dict, connections: int, duration_s: int, delay_ms: int) -> dict:
    out = Path(files["dir"]) / f"wrk-{connections}-{delay_ms}.json"
    env = dict(os.environ, BENCH_BODY=files["body"], BENCH_COOKIE=files["cookie"], BENCH_CSRF=files["csrf"],
               BENCH_DELAY_MS=str(delay_ms), BENCH_OUT=str(out))
    threads = max(1, min(connections, 2))
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration_s}s", "--timeout", "10s",
           "-s", str(LUA), base + "/_dash-update-component"]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=duration_s + 60)
    return json.loads(out.read_text())


def write_files(session, body: dict, folder: str) -> dict:
    files = {"dir": folder, "body": os.path.join(folder, "body.json"), "cookie": os.path.join(folder, "cookie"),
             "csrf": os.path.join(folder, "csrf")}
    Path(files["body"]).write_text(json.dumps(body, separators=(",", ":")))
    Path(files["cookie"]).write_text("; ".join(f"{c.name}={c.value}" for c in session.cookies))
    Path(files["csrf"]).write_text(session.cookies["csrf_access_token"])
    return files


def measure(args) -> dict:
    from bench.build import build
    from data.db import make_engine
    from data.users import UserError, create_user, set_password

    jobs = parse_size(args.size)
    build([jobs])
    admin = start_server()
    name = db_name(jobs)
    url = database_url(admin, name)
    password = secrets.token_urlsafe(16)
    engine = make_engine(url)
    try:
        try:
            create_user(engine, USERNAME, password, "viewer")
        except UserError:
            set_password(engine, USERNAME, password)
    finally:
        engine.dispose()
    app = App(url, args.port or free_port(), secrets.token_urlsafe(48))
    rows = []
    folder = tempfile.mkdtemp(prefix="fleet-bench-load-")
    try:
        app.wait_ready()
        modes = [("viewers", REFRESH_MS, args.duration), ("stress", 0, args.stress_duration)]
        for mode, delay_ms, duration in modes:
            if duration <= 0:
                continue
            for connections in args.levels:
                # A fresh session per level: access tokens live 15 minutes.
                session = sign_in(app.base, password)
                body = overview_request(session, app.base)
                check_request(session, app.base, body)
                files = write_files(session, body, folder)
                # The app counter first (a /metrics scrape sends queries of its own), then let the
                # backends flush their statistics, then the database's count.
                st0 = app_statements(session, app.base)
                time.sleep(STATS_SETTLE_S)
                tx0 = db_transactions(admin, name)
                log_from = app.log_position()
                log.info("%s: %d connection(s) for %d s", mode, connections, duration)
                result = run_wrk(app.base, files, connections, duration, delay_ms)
                served = app.answers(log_from)
                time.sleep(STATS_SETTLE_S)
                tx1 = db_transactions(admin, name)
                st1 = app_statements(session, app.base)
                seconds = result["duration_us"] / 1e6
                e = result["errors"]
                # Failed requests: timeouts, connections refused or broken while sending, non-2xx
                # answers (wrk's count and the server's access log) and errors the app logged. wrk's
                # socket *read* errors are counted apart: with viewers idle longer than gunicorn's
                # keep-alive the server closes the idle connection and wrk reports that as a read
                # error, then reconnects; the access log shows whether a request went unanswered.
                errors = e["timeout"] + e["connect"] + e["write"] + max(e["status"], served["non_2xx"]) \
                    + served["app_errors"]
                lat = result["latency_us"]
                rows.append({
                    "mode": mode, "connections": connections, "seconds": seconds, "requests": result["requests"],
                    "rps": result["requests"] / seconds, "errors": errors, "error_detail": e,
                    "read_errors": e["read"], "answered_2xx": served["ok"], "non_2xx": served["non_2xx"],
                    "app_errors": served["app_errors"], "bytes": served["median_bytes"],
                    "p50_ms": lat["p50"] / 1000, "p95_ms": lat["p95"] / 1000, "p99_ms": lat["p99"] / 1000,
                    "max_ms": lat["max"] / 1000,
                    # The settle pauses add nothing: no other client uses the benchmark database.
                    "db_tx_per_s": (tx1 - tx0) / seconds,
                    # The counter also holds the scrape's own statements (a handful): not subtracted.
                    "app_statements_per_s": (st1 - st0) / seconds if st0 is not None and st1 is not None else None,
                })
                log.info("%s", rows[-1])
        return {"rows": rows, "config": app.config, "workers": app.workers(), "size": size_label(jobs),
                "at": datetime.now(timezone.utc)}
    finally:
        app.stop()
        shutil.rmtree(folder, ignore_errors=True)


def evaluate(rows: list[dict]) -> list[tuple[str, str, bool]]:
    """The issue's load targets, on the viewers mode (the stress mode is for capacity)."""
    viewers = [r for r in rows if r["mode"] == "viewers"]
    out = []
    if not viewers:
        return out
    errors = sum(r["errors"] for r in viewers)
    out.append(("No errors at any level (viewers)",
                f"{errors} failed request(s) of {sum(r['requests'] for r in viewers):,}", errors == 0))
    top = max(viewers, key=lambda r: r["connections"])
    low = min(viewers, key=lambda r: r["connections"])
    out.append((f"p95 ≤ {P95_TARGET_MS} ms at {top['connections']} viewers", f"{top['p95_ms']:.0f} ms",
                top["p95_ms"] <= P95_TARGET_MS))
    # The app's own statement counter when /metrics exports it; else the database's transactions.
    key, unit = (("app_statements_per_s", "statements/s") if low["app_statements_per_s"] is not None
                 and top["app_statements_per_s"] is not None else ("db_tx_per_s", "transactions/s"))
    growth = top[key] / low[key] if low[key] else float("inf")
    out.append((f"Database load flat from {low['connections']} to {top['connections']} viewers "
                f"(at most {FLAT_FACTOR:.0f}×)",
                f"{low[key]:.1f} → {top[key]:.1f} {unit} ({growth:.1f}×) while answered requests went "
                f"{low['rps']:.2f} → {top['rps']:.1f}/s (offered: {1000 / REFRESH_MS * low['connections']:.1f} → "
                f"{1000 / REFRESH_MS * top['connections']:.0f}/s)", growth <= FLAT_FACTOR))
    return out


def render(result: dict, command: str) -> str:
    rows = result["rows"]
    lines = ["## Load test", "",
             f"`{command}` on {result['at']:%Y-%m-%d %H:%M} UTC: gunicorn ({result['config']}; "
             f"{result['workers']} workers) on 127.0.0.1 against the {result['size']} database, the shared cache "
             "on files (no REDIS_URL), wrk driving the Fleet overview's refresh callback (the exact "
             "/_dash-update-component body the page sends, full redraw, session cookie + X-CSRF-TOKEN). "
             f"*viewers*: each connection refreshes every {REFRESH_MS / 1000:.0f} s (±50 %); *stress*: back to back. "
             "Database load: the app's `fleet_monitor_db_queries_total` (statements sent, all workers) from "
             "/metrics, and transactions in the benchmark database from pg_stat_database (these also count "
             "the connection pool's pre-ping). *failed*: timeouts (10 s), connect/write errors, non-2xx answers, "
             "errors in the app's log; *idle closes*: wrk's socket read errors, which here are idle keep-alive "
             "connections closed by gunicorn (its keep-alive time, gunicorn.conf.py) between a viewer's refreshes (the access log "
             "shows the requests answered).", "",
             "| mode | connections | answered | answered/s | failed | idle closes | p50 ms | p95 ms | p99 ms | "
             "max ms | response KB | app statements/s | per request | DB transactions/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        app = r["app_statements_per_s"]
        per = (app / r["rps"]) if app is not None and r["rps"] else None
        kb = f"{r['bytes'] / 1024:,.0f}" if r.get("bytes") else "—"
        lines.append(f"| {r['mode']} | {r['connections']} | {r['requests']:,} | {r['rps']:.2f} | {r['errors']} | "
                     f"{r['read_errors']} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | "
                     f"{r['max_ms']:.0f} | {kb} | {'not exported' if app is None else f'{app:.1f}'} | "
                     f"{'—' if per is None else f'{per:.2f}'} | {r['db_tx_per_s']:.1f} |")
    lines += ["", "| load target | measured | |", "|---|---|---|"]
    for text, value, met in evaluate(rows):
        lines.append(f"| {text} | {value} | {'met' if met else '**MISSED**'} |")
    lines.append("")
    return "\n".join(lines)


def write_section(section: str, path: Path = RESULTS) -> None:
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{LOAD_BEGIN}\n{section.strip()}\n{LOAD_END}"
    if LOAD_BEGIN in text and LOAD_END in text:
        head, rest = text.split(LOAD_BEGIN, 1)
        text = head + block + rest.split(LOAD_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1m")
    parser.add_argument("--levels", default="1,10,100", help="connections (viewers), comma-separated")
    parser.add_argument("--duration", type=int, default=60, help="seconds per level, viewers mode")
    parser.add_argument("--stress-duration", type=int, default=20, help="seconds per level, stress mode (0: skip)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--check", action="store_true", help="exit 1 when a load target is missed")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    command = "python -m bench.load " + " ".join(argv if argv is not None else sys.argv[1:])
    result = measure(args)
    section = render(result, command.strip())
    write_section(section, args.output)
    print(section)
    if args.check and not all(met for _, _, met in evaluate(result["rows"])):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
