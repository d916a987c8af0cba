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


def test_the_mixed_trace_is_open_loop_long_tailed_and_fits_the_context():
    from coeflow.bench.mixed import mixed_trace
    count = lambda text: len(text.split()) + 1  # noqa: E731  a word a token, and a BOS
    trace = mixed_trace(["a", "b", "c"], 600, rate=5.0, context=512, count=count, seed=3)
    times = [r.at_s for r in trace]
    assert times == sorted(times) and 600 / times[-1] == pytest.approx(5.0, rel=0.15)
    lengths = [r.max_tokens for r in trace]
    assert min(lengths) >= 8 and all(count(r.prompt) + r.max_tokens <= 512 for r in trace)
    assert sum(n <= 32 for n in lengths) > 100 and sum(n >= 256 for n in lengths) > 40  # both ends of the tail
    shared = [r for r in trace if r.shared]
    assert 150 < len(shared) < 250 and len({r.prompt.split("\n")[0] for r in shared}) == 1
    assert count(shared[0].prompt.split("\n")[0]) == 200
    counts = sorted((sum(r.expert == e for r in trace) for e in "abc"), reverse=True)
    assert counts[0] > 1.5 * counts[2]  # Zipf-skewed


def test_bench_serve_mixed_completes_every_request_in_each_server(coe_file):
    from coeflow.bench.mixed import run_mixed
    report = run_mixed(coe_file, requests=8, rate=20.0, engine="eager")
    assert report["servers"] == ["coeflow", "static", "baseline"]  # the peer runs when given a llama-server
    for label in report["servers"]:
        block = report[label]
        assert KEYS | {"tpot_p99_s", "prefix_hit_ttft_p50_s", "prefix_miss_ttft_p50_s"} <= set(block)
        assert (block["completed"], block["failed"]) == (8, 0), label
        assert block["prefix_hit_ttft_p50_s"] > 0 and block["prefix_miss_ttft_p50_s"] > 0
