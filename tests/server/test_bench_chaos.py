"""`coeflow bench chaos` at a tiny size: the report has the fields the issue names, no
well-formed request failed outside the kill window, and the hostile clients got 4xx answers."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_cli_offers_the_benchmark_s_cases():
    """The CLI keeps its own copy of the hostile cases (importing the benchmark would load its
    dependencies for `--help`); the two must not drift apart."""
    from coeflow.bench.chaos import CASES
    from coeflow.cli.bench import CHAOS_CASES
    assert CHAOS_CASES == CASES


def test_bench_chaos_reports_no_failed_well_formed_request(tmp_path):
    from coeflow.bench.chaos import format_report, run
    report = run(requests=6, concurrency=2, max_tokens=4, hostile_rate=50, slow_loris=1, workdir=tmp_path)
    assert report["failed_normal"] == 0, report["normal_errors"]
    assert report["completed"] == 18  # three phases of 6
    assert report["hostile_5xx"] == 0
    answered = set(report["hostile"]) | set(report["hostile_in_crash_phase"])
    assert {"400", "413", "disconnected"} <= answered, report
    assert set(report["hostile_by_case"].get("oversized", {})) <= {"413"}, report["hostile_by_case"]
    for phase in ("quiet", "hostile", "crash"):
        assert report["latency"][phase]["n"] == 6 and report["latency"][phase]["p99_s"] > 0
    assert report["server_outcomes"].get("failed", 0) == 0 and report["server_outcomes"]["ok"] >= 12
    assert report["rss_mb"]["before"] > 0 and report["rss_mb"]["after"] > 0
    assert report["restart_s"] > 0 and report["same_answer_after_restart"] is True
    assert "failed_normal 0" in format_report(report)
