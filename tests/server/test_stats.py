"""The console's recent-requests series, on records whose answers are worked out by hand."""

from __future__ import annotations

import pytest

from coeflow.server.stats import STEP_S, WINDOW_S, RecentRequests, RequestRecord


def test_series_bucket_the_window_and_totals_count_since_start():
    now = [1000.0]
    recent = RecentRequests(clock=lambda: now[0])
    recent.add(RequestRecord(300.0, "sql", True, 0.1, 0.01, 5, "disk"))  # outside the window by now
    for at, ttft, tier in ((985.0, 0.2, "host"), (986.0, 0.4, "device"), (995.0, 1.0, "device")):
        recent.add(RequestRecord(at, "sql", True, ttft, 0.02, 10, tier))
    recent.add(RequestRecord(999.0, "shell", False, None, None, 0, None))  # failed before its first token
    r = recent.report()
    steps = WINDOW_S // STEP_S
    s = r["series"]
    assert len(s["requests_per_s"]) == steps
    # the last step holds 995 and 999; the one before, 985 and 986
    assert s["requests_per_s"][-1] == pytest.approx(2 / STEP_S) and s["requests_per_s"][-2] == pytest.approx(2 / STEP_S)
    assert s["ttft_p50"][-2] == pytest.approx(0.3) and s["ttft_p99"][-2] == pytest.approx(0.398)
    assert s["ttft_p50"][-1] == pytest.approx(1.0)  # the failed one has none
    assert s["switches_per_s"]["host"][-2] == pytest.approx(1 / STEP_S) and s["switches_per_s"]["disk"][-2] == 0
    assert s["device_hit_rate"][-2] == pytest.approx(0.5) and s["device_hit_rate"][-1] == pytest.approx(1.0)
    assert s["device_hit_rate"][0] is None and s["ttft_p50"][0] is None  # no request then
    assert r["experts"]["sql"] == {"requests": 4, "completion_tokens": 35, "tokens_per_s_1m": pytest.approx(30 / 60)}
    assert r["experts"]["shell"]["requests"] == 1
    assert [x.at for x in recent.recent] == [985.0, 986.0, 995.0, 999.0]  # the old one was dropped
