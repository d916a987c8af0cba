"""The store's benchmarks: the cache replay's report, and the page-cache control the switch
benchmark relies on to call a read 'cold'."""

from __future__ import annotations

import json
import os

import pytest

from coeflow.bench.cache import run as run_cache
from coeflow.bench.switch import cached_fraction, drop_page_cache, warm_page_cache
from coeflow.cli import main


def test_cache_report_has_every_policy_and_belady_is_best():
    report = run_cache(experts=32, capacity=4, length=3000, seed=1)
    by_trace: dict[str, dict[str, dict]] = {}
    for r in report["results"]:
        by_trace.setdefault(r["trace"], {})[r["policy"]] = r
    assert any(t.startswith("zipf") for t in by_trace) and any(t.startswith("shifting") for t in by_trace)
    for trace, rows in by_trace.items():
        assert {"lru", "lfu", "fifo", "lrfu", "belady"} <= set(rows)
        opt = rows["belady"]
        for name, r in rows.items():
            if name.endswith("(oracle)"):
                continue
            assert r["hit_rate"] <= opt["hit_rate"] + 1e-12, (trace, name)
            if r["bytes_moved"] is not None:
                misses = round((1 - r["hit_rate"]) * report["requests"])
                assert r["bytes_moved"] == misses * report["expert_bytes"]


def test_quantized_experts_fit_more_slots_in_the_same_bytes_and_miss_less():
    """The device tier is 4 bf16 experts' bytes; int8 and int4 experts are smaller, so it holds
    more of them, and LRU and Belady (whose hits only grow with room) hit at least as often and
    move fewer bytes on the same traces."""
    report = run_cache(experts=32, capacity=4, length=3000, seed=1, weights=("bf16", "int8", "int4"))
    sizes = report["weights_bytes"]
    assert sizes["bf16"] > 1.9 * sizes["int8"] > 3.4 * sizes["int4"]
    rows = {(r["trace"], r["weights"], r["policy"]): r for r in report["results"]}
    for (trace, weights, policy), r in rows.items():
        assert r["slots"] == 4 * sizes["bf16"] // sizes[weights]
        if weights != "bf16" and policy in ("lru", "belady"):
            dense = rows[(trace, "bf16", policy)]
            assert r["hit_rate"] >= dense["hit_rate"] and r["bytes_moved"] < dense["bytes_moved"]


def test_bench_cache_cli_prints_json(capsys):
    assert main(["bench", "cache", "--requests", "500", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["experts"] == 32 and report["capacity"] == 4 and report["results"]


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="needs preadv2 RWF_NOWAIT")
def test_page_cache_can_be_dropped_and_warmed(tmp_path):
    f = tmp_path / "blob"
    f.write_bytes(os.urandom(4 << 20))
    warm_page_cache([f])
    assert cached_fraction([f]) == 1.0
    method = drop_page_cache([f])
    if method == "none":
        pytest.skip("this machine does not let us drop the page cache")
    assert cached_fraction([f]) < 0.05


def test_switch_bench_reports_every_method_and_tier(tmp_path):
    from coeflow.bench.switch import run as run_switch
    report = run_switch(sizes=("tiny",), repeats=1, workdir=tmp_path)
    assert report["raw_read_gbps"] > 0 and report["memcpy_gbps"] > 0
    got = {(r["method"], r["source_tier"]) for r in report["results"]}
    assert {("coeflow", t) for t in ("disk-cold", "disk-warm", "host", "device")} <= got
    assert {("coeflow-delta1", t) for t in ("disk-cold", "disk-warm", "host", "device")} <= got
    full = next(r["bytes"] for r in report["results"] if r["method"] == "coeflow")
    delta = next(r["bytes"] for r in report["results"] if r["method"] == "coeflow-delta1")
    assert delta * 8 < full  # a 1-bit delta of an fp32 expert moves far fewer bytes
    for m in ("hf-from_pretrained", "safetensors-load_state_dict", "raw-read"):
        assert {(m, "disk-cold"), (m, "disk-warm")} <= got
    assert all(r["ttft_s"] is None or r["ttft_s"] >= r["seconds"] for r in report["results"])
