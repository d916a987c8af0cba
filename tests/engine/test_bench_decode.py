"""`coeflow bench decode --json`: the object the issue asks for, with each row judged against
the read bandwidth measured next to it (it drifts on shared machines)."""

from __future__ import annotations

import itertools

import coeflow.bench.decode as decode


def test_report_rows_carry_the_bandwidth_measured_around_their_group(monkeypatch, tmp_path):
    readings = itertools.count(10.0, 10.0)  # 10, 20, 30 GB/s: before, between, after the groups
    monkeypatch.setattr(decode, "mem_read_gbps", lambda **k: next(readings))
    report = decode.run(models=("tiny",), dtypes=("fp32",), batches=(1, 2), engines=("coeflow-eager",),
                        new_tokens=2, repeats=1, workdir=tmp_path)
    assert report["mem_read_gbps"] == 30.0 and report["mem_read_gbps_range"] == [10.0, 30.0]
    rows = report["results"]
    assert [(r["batch"], r["mem_read_gbps"]) for r in rows] == [(1, 20.0), (2, 30.0)]
    for r in rows:
        assert {"engine", "model", "params", "dtype", "batch", "tokens_per_s", "weight_gbps"} <= set(r)
        assert r["engine"] == "coeflow-eager" and r["tokens_per_s"] > 0 and r["weight_gbps"] > 0
    assert "10.0-30.0 GB/s" in decode.format_table(report)


def test_the_cli_offers_every_model_the_benchmark_has():
    from coeflow.cli.bench import DECODE_MODELS
    assert DECODE_MODELS == tuple(decode.CONFIGS)
