"""The benchmark harness end to end on a tiny database: it runs in CI without ten million rows.

bench.run is pointed at a fresh test database holding the demo generator's 20,000 jobs, with
one repetition and the target check off; the report must have every section, every data
function the pages and server routes call (found by reading their source, independently of the
harness's recipes) must have been timed, and every figure must be a number, not an error. The
rollups are brought up to date first, the long analytics windows read them, and their
percentiles are within the stated bound of the exact ones with identical counts. A second run
with --reuse-baselines takes the naive and plain-SQL timings from the first.
"""
from __future__ import annotations

import json
import re

import sqlalchemy as sa

from bench import run as bench_run
from data.demo import generate_demo

SECTIONS = ["## Machine", "## Data", "### Rollups", "## Targets", "## Figures", "## Accuracy of the rollups",
            "## Memory", "## Coverage", "## Load test"]


def _callers() -> set[str]:
    """Data functions called from pages and server routes, read here with a simple scan of the
    source (module aliases imported with `from data import x [as y]`), not with the harness's
    own discovery."""
    import importlib
    import inspect

    found = set()
    for path in sorted((bench_run.PROJECT / "pages").glob("*.py")) + [
            bench_run.PROJECT / "server" / n for n in ("api.py", "export.py", "metrics.py", "health.py")]:
        src = path.read_text()
        aliases = {}
        for names in re.findall(r"^from data import ([\w ,]+)$", src, re.M):
            for part in names.split(","):
                bits = part.split(" as ")
                aliases[bits[-1].strip()] = "data." + bits[0].strip()
        calls = [(aliases[a], n) for a, n in re.findall(r"\b(\w+)\.(\w+)\(", src) if a in aliases]
        for module, names in re.findall(r"^from (data\.\w+) import ([\w ,]+)$", src, re.M):
            calls += [(module, n.strip()) for n in names.split(",") if re.search(rf"\b{n.strip()}\(", src)]
        for module, name in calls:
            fn = getattr(importlib.import_module(module), name, None)
            if callable(fn) and not isinstance(fn, type) and list(inspect.signature(fn).parameters)[:1] == ["engine"]:
                if module not in bench_run.NOT_DATA_MODULES:
                    found.add(f"{module}.{name}")
    return found


def test_harness_end_to_end_on_a_tiny_database(engine, db_url, tmp_path):
    from bench.common import write_meta
    from data.rollups import MAX_RELATIVE_ERROR

    generate_demo(engine, jobs=20_000, robots=24, days=30, seed=3)
    with engine.connect() as conn:
        jobs = conn.execute(sa.text("SELECT count(*) FROM job_queue")).scalar()
        robots = conn.execute(sa.text("SELECT count(*) FROM robots")).scalar()
    # A build record, as bench.build writes one, so the second run may reuse the baselines.
    write_meta(engine, {"built_at": "smoke-test build", "jobs": jobs, "robots": robots})
    out = tmp_path / "RESULTS.md"

    code = bench_run.main(["--database-url", db_url, "--label", "tiny", "--repeat", "1", "--output", str(out)])

    assert code == 0
    report = out.read_text()
    for section in SECTIONS:
        assert section in report, section
    # The data the test made, counted by the test.
    assert re.search(rf"^\| tiny \| {jobs:,} \| {robots:,} \|", report, re.M), report.split("## Targets")[0]
    # Every target is evaluated.
    for target in bench_run.TARGETS.values():
        assert target.text in report, target.text
    # Every data function behind the pages and routes was timed.
    expected = _callers() - bench_run.WRITES
    assert expected, "the scan found no data function"
    for name in sorted(expected):
        assert f"- `{name}` — timed" in report, f"{name} not timed"
    assert "NOT MEASURED" not in report
    # Figures are numbers: no function of ours, raw query or naive computation failed.
    assert "error (" not in report
    results = json.loads((tmp_path / "results-tiny.json").read_text())
    cases = [c for g in results["groups"] for c in g["cases"]]
    assert len(cases) > 60
    for case in cases:
        assert case["error"] is None and case["ours_ms"] is not None and case["ours_ms"] > 0, case
        assert case["raw_error"] is None and case["naive_error"] is None, case
    timed = {c["func"] for c in cases}
    assert expected <= timed
    fleet = next(g for g in results["groups"] if g["name"] == "Fleet overview refresh")
    assert fleet["total_ms"] >= max(c["ours_ms"] for c in fleet["cases"])
    assert fleet["naive_page_ms"] is not None
    # The rollups were brought up to date, and the long windows read them within the bound.
    assert results["rollups"]["catch_up"]["passes"] >= 1 and results["rollups"]["covered_until"]
    accuracy = [a for g in results["groups"] for a in g["accuracy"]]
    assert {a["function"] for a in accuracy} == {"duration_percentiles", "time_series", "workflow_stats"}
    assert len({g["name"] for g in results["groups"] if g["accuracy"]}) == 3  # 7, 30 and 90 days
    for a in accuracy:
        assert a["rollup"] is True, a
        assert a["counts_identical"], a
        assert a["values"] > 0 and a["max_rel"] <= MAX_RELATIVE_ERROR + 1e-9, a
    # A text search says what it read.
    search = next(g for g in results["groups"] if g["name"] == "Job history text search")
    assert all(c["note"] for c in search["cases"] if c["label"].startswith("list_jobs"))

    # Again, one page, reusing the first run's naive and plain-SQL timings.
    first = {c["label"]: c for g in results["groups"] if "filter choices" in g["name"] for c in g["cases"]}
    code = bench_run.main(["--database-url", db_url, "--label", "tiny", "--repeat", "1", "--output", str(out),
                           "--only", "filter choices", "--reuse-baselines"])
    assert code == 0
    again = json.loads((tmp_path / "results-tiny.json").read_text())
    cases = [c for g in again["groups"] for c in g["cases"]]
    assert cases and all(c["naive_times"] == first[c["label"]]["naive_times"] for c in cases)
    assert all(c["naive_measured_at"] == results["measured_at"] for c in cases)
    assert "page timings reused from results-tiny.json" in out.read_text()
