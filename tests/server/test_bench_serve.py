"""`coeflow bench serve` end to end, small: every server answers every request, and the
report has the fields the issue names, for the load generator in its own process and in the
server's."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEYS = {"requests_per_s", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "completed", "failed"}


def test_the_cli_offers_the_benchmark_s_servers():
    """The CLI keeps its own copy of the server names and expert sizes (importing the benchmark would load
    torch for `--help`); the two must not drift apart."""
    from coeflow.bench.serve import EXPERT_SIZES, SERVERS
    from coeflow.cli.bench import SERVE_SERVERS, SERVE_SIZES
    assert SERVE_SERVERS == SERVERS and SERVE_SIZES == tuple(EXPERT_SIZES)


@pytest.mark.parametrize("client", ["process", "thread"])
def test_bench_serve_completes_every_request_in_each_server(tmp_path, client):
    from coeflow.bench.serve import run
    report = run(requests=6, concurrency=3, experts=3, device_slots=1, max_tokens=4, engine="eager",
                 servers=("coeflow", "baseline", "ceiling"), client=client, workdir=tmp_path)
    assert report["servers"] == ["coeflow", "baseline", "ceiling"] and report["client"] == client
    for label in report["servers"]:
        block = report[label]
        assert KEYS <= set(block)
        assert (block["completed"], block["failed"]) == (6, 0), label
        assert block["requests_per_s"] > 0
    assert report["ceiling"]["served_from"] == {"device": 6}  # every expert resident: no switch
    assert "disk" in report["baseline"]["served_from"]  # one device slot, three experts: reloads
