"""Synthetic traces: seeded, Poisson in the mean, Zipf over experts, bursts and a diurnal
shape that move the arrival rate where they say."""

import pytest

from coeflow.cli import main
from coeflow.errors import ConfigError
from coeflow.trace import Burst, TraceSpec, generate, read_trace

EXPERTS = tuple(f"e{i}" for i in range(10))


def test_same_spec_and_seed_give_the_same_trace_and_another_seed_does_not():
    spec = TraceSpec(EXPERTS, rate=5.0, requests=200)
    assert generate(spec) == generate(spec)
    assert generate(spec) != generate(TraceSpec(EXPERTS, rate=5.0, requests=200, seed=1))


def test_poisson_rate_and_zipf_popularity():
    reqs = generate(TraceSpec(EXPERTS, rate=20.0, requests=20_000, zipf_s=1.0, seed=3))
    span = reqs[-1].arrival_s
    assert 20_000 / span == pytest.approx(20.0, rel=0.05)
    counts = [sum(r.expert == e for r in reqs) for e in EXPERTS]
    harmonic = sum(1 / k for k in range(1, 11))
    assert counts[0] / len(reqs) == pytest.approx(1 / harmonic, rel=0.05)   # rank 1 ~ 34%
    assert counts[0] / counts[1] == pytest.approx(2.0, rel=0.1)            # 1/k
    assert all(a.arrival_s <= b.arrival_s for a, b in zip(reqs, reqs[1:]))


def test_a_burst_multiplies_the_rate_inside_its_window_only():
    spec = TraceSpec(EXPERTS, rate=10.0, duration_s=300.0, bursts=(Burst(100, 50, 5.0),), seed=1)
    reqs = generate(spec)
    inside = sum(100 <= r.arrival_s < 150 for r in reqs) / 50
    before = sum(r.arrival_s < 100 for r in reqs) / 100
    assert inside / before == pytest.approx(5.0, rel=0.15)


def test_diurnal_shape_puts_the_peak_at_a_quarter_period_and_the_trough_at_three_quarters():
    spec = TraceSpec(EXPERTS, rate=20.0, duration_s=4000.0, diurnal_period_s=1000.0,
                     diurnal_amplitude=0.8, seed=2)
    reqs = generate(spec)
    phase = [r.arrival_s % 1000 for r in reqs]
    peak = sum(200 <= p < 300 for p in phase)
    trough = sum(700 <= p < 800 for p in phase)
    assert peak > 4 * trough  # (1 + 0.8 sin) is ~1.76 vs ~0.24 there


def test_lengths_are_drawn_in_their_ranges():
    reqs = generate(TraceSpec(EXPERTS, rate=1.0, requests=500, prompt_tokens=(16, 64), max_tokens=(1, 3)))
    assert {r.max_tokens for r in reqs} == {1, 2, 3}
    assert min(r.prompt_tokens for r in reqs) >= 16 and max(r.prompt_tokens for r in reqs) <= 64


@pytest.mark.parametrize("kw, message", [({"rate": 0}, "--rate"), ({"requests": None}, "--requests or --duration"),
                                         ({"prompt_tokens": (5, 2)}, "--prompt-tokens")])
def test_bad_specs_say_which_option(kw, message):
    args = {"experts": EXPERTS, "rate": 1.0, "requests": 10, **kw}
    with pytest.raises(ConfigError, match=message):
        generate(TraceSpec(**args))


def test_cli_writes_a_trace_that_reads_back(tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    assert main(["trace", "generate", "--experts", "sql,shell", "--rate", "4", "--requests", "50",
                 "--zipf", "0", "--prompt-tokens", "8:16", "--burst", "1:2:3", "--out", str(out)]) == 0
    reqs = read_trace(out)
    assert len(reqs) == 50 and {r.expert for r in reqs} == {"sql", "shell"}
    assert main(["trace", "stats", str(out)]) == 0
    assert "50 requests" in capsys.readouterr().out
    assert main(["trace", "generate", "--n-experts", "3", "--rate", "1", "--requests", "2", "--burst",
                 "x", "--out", str(out)]) == 2
    assert "START:DURATION:FACTOR" in capsys.readouterr().err
