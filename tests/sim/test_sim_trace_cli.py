"""`coeflow simulate trace|compare` and `coeflow hw probe` as a user runs them."""

import json

import pytest

from coeflow.cli import main
from coeflow.errors import ConfigError
from coeflow.trace import TraceSpec, generate, write_trace


@pytest.fixture
def trace150(tmp_path):
    path = tmp_path / "t.jsonl"
    write_trace(path, generate(TraceSpec(tuple(f"e{i}" for i in range(150)), rate=3.0, requests=300, seed=1)))
    return path


def test_simulate_trace_on_150_llama2_7b_copies_prints_summary_and_writes_the_timeline(trace150, tmp_path, capsys):
    tl = tmp_path / "timeline.jsonl"
    assert main(["simulate", "trace", "--trace", str(trace150), "--experts", "150", "--expert-config",
                 "llama2-7b", "--hw", "sn40l-8", "--timeline", str(tl)]) == 0
    out = capsys.readouterr().out
    assert "TTFT     p50" in out and "latency  p50" in out and "utilisation: compute" in out
    rows = [json.loads(line) for line in tl.read_text().splitlines()]
    assert len(rows) == 300 and {"ttft_s", "latency_s", "source_tier", "switch_s"} <= set(rows[0])
    assert main(["simulate", "trace", "--trace", str(trace150), "--experts", "150", "--hw", "dgx-h100", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["requests"] == 300 and len(doc["timeline"]) == 300


def test_both_schedules_replay_and_continuous_batching_cuts_the_wait_for_a_first_token(tmp_path, capsys):
    busy = tmp_path / "busy.jsonl"  # 8 experts near saturation, outputs up to 512 tokens
    write_trace(busy, generate(TraceSpec(tuple(f"e{i}" for i in range(8)), rate=3.0, requests=300, seed=1,
                                         max_tokens=(16, 512))))
    common = ["simulate", "trace", "--trace", str(busy), "--experts", "8", "--hw", "dgx-h100", "--json"]
    got = {}
    for schedule in ("static", "continuous"):
        assert main(common + ["--schedule", schedule]) == 0
        got[schedule] = json.loads(capsys.readouterr().out)["summary"]
        assert got[schedule]["requests"] == 300
    # static: a request waits for every batch ahead of it to finish; continuous: for a slice of each
    assert got["continuous"]["ttft_p50_s"] < got["static"]["ttft_p50_s"] / 2
    assert main(common + ["--procedure", "paper", "--schedule", "continuous"]) == 2
    assert "paper procedure runs each batch to completion" in capsys.readouterr().err
    assert main(common + ["--kv-mem", "1MB"]) == 2
    assert "--kv-mem" in capsys.readouterr().err


def test_simulate_trace_refuses_a_trace_naming_experts_the_coe_lacks(trace150, capsys):
    assert main(["simulate", "trace", "--trace", str(trace150), "--experts", "10", "--hw", "sn40l-8"]) == 2
    assert "no expert 'e" in capsys.readouterr().err


def test_compare_puts_machines_side_by_side_and_plots(trace150, tmp_path, capsys):
    png = tmp_path / "cmp.png"
    assert main(["simulate", "compare", "--trace", str(trace150), "--experts", "150", "--hw", "sn40l-8",
                 "--hw", "dgx-h100", "--plot", str(png), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"sn40l-8", "dgx-h100"}
    assert out["dgx-h100"]["latency_mean_s"] > out["sn40l-8"]["latency_mean_s"]  # PCIe switches
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_probe_writes_a_spec_whose_model_reproduces_the_probe_models(tmp_path, monkeypatch):
    """Self-consistency of the fit: the written spec, loaded back, predicts the decode step
    of the probe model it was fitted on (the validation on real experts is in BENCHMARKS).
    The engine's timings are stubbed with exact linear ones (per layer well above the
    roofline), so the check does not depend on how loaded the machine is."""
    import coeflow.bench.machine as machine
    import coeflow.bench.probe as probe_mod
    from coeflow.bench.probe import PROBE_CONFIG, probe, write_spec
    from coeflow.hw.generation import generation_cost
    from coeflow.hw.shapes import shape_from_dict
    from coeflow.sim.workload import resolve_machine
    monkeypatch.setattr(machine, "mem_read_gbps", lambda *a, **k: 5.0)  # skip the compiled read kernel
    depth_of = {}
    real_fit = probe_mod.fit_engine

    def fit_engine(hw, flags, paths, fused, *a, **k):
        depth_of.update({str(p): d for d, p in paths.items()})
        return real_fit(hw, flags, paths, fused, *a, **k)
    monkeypatch.setattr(probe_mod, "fit_engine", fit_engine)
    monkeypatch.setattr(probe_mod, "_engine_times",
                        lambda path, *a, **k: (0.002 + 0.004 * depth_of[str(path)], 0.001 + 0.003 * depth_of[str(path)]))
    spec = probe(("eager",), repeats=2, workdir=tmp_path)
    path = write_spec(spec, tmp_path / "local-cpu.yaml")
    text = path.read_text()
    assert "measured by coeflow hw probe on" in text and "kernel_overhead" in text
    m = resolve_machine(str(path))
    assert m.device_is_host and m.disk_read_bps > 0 and m.bytes_per_param == 4
    fit = spec["probe"]["engine_fits"]["eager"][6]
    shape = shape_from_dict({**PROBE_CONFIG, "num_hidden_layers": 6}, "p6")
    cost = generation_cost(m.hw, shape, 1, 16, 33, None, m.stack)
    assert fit["step_s"] == pytest.approx(0.001 + 0.003 * 6)
    assert cost.tpot_s == pytest.approx(fit["step_s"], rel=0.05)
    with pytest.raises(ConfigError, match="no stack"):
        resolve_machine(str(path), stack="local-fused")


def test_before_a_probe_local_cpu_is_a_one_line_error_saying_to_run_it(trace150, tmp_path, monkeypatch, capsys):
    import coeflow.hw.probed as probed
    monkeypatch.setattr(probed, "PROBE_DIR", tmp_path / "no-probe-here")
    assert main(["simulate", "trace", "--trace", str(trace150), "--experts", "150", "--hw", "local-cpu"]) != 0
    err = capsys.readouterr().err
    assert "coeflow hw probe" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    from coeflow.bench.validate import run
    with pytest.raises(ConfigError, match="run `coeflow hw probe`"):
        run("unused-coe.yaml", hw="local-cpu")


def test_int4_copies_fit_more_experts_in_each_tier_and_switch_faster(trace150, capsys):
    """150 Llama-2-7B experts on one 8-socket SN40L node, bf16 against int4 copies (4.125 bits a
    product weight, the rest bf16: ~3.5x fewer bytes an expert): HBM holds every expert the trace
    touches, so none is evicted, and each switch moves as many times fewer bytes."""
    got = {}
    for weights in ([], ["--expert-weights", "int4"]):
        assert main(["simulate", "trace", "--trace", str(trace150), "--experts", "150", "--hw", "sn40l-8",
                     "--json", *weights]) == 0
        got[bool(weights)] = json.loads(capsys.readouterr().out)["summary"]
    dense, packed = got[False], got[True]
    assert dense["evictions"]["device"] > 0 and packed["evictions"]["device"] == 0
    products = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)  # q, k, v, o; gate, up, down: 32 layers
    rest = 6_738_415_616 - products  # Llama-2-7B's parameters, the embeddings, head and norms
    smaller = (2 * rest + 2 * products) / (2 * rest + products * 4.125 / 8)
    assert dense["switch_p50_s"] / packed["switch_p50_s"] == pytest.approx(smaller, rel=0.01)
    assert packed["ttft_p50_s"] < dense["ttft_p50_s"]
    assert main(["simulate", "trace", "--trace", str(trace150), "--coe", "x.yaml", "--expert-weights", "int4",
                 "--hw", "sn40l-8"]) == 2
    assert "--expert-weights and --expert-delta apply to --experts" in capsys.readouterr().err


def test_one_bit_delta_experts_move_only_their_delta_and_switch_faster(trace150, capsys):
    """150 Llama-2-7B experts as 1-bit deltas from one base on a DGX-H100: every host -> device
    load moves one delta (every matrix at 1 bit plus a bf16 scale a row of 4096, the norms in
    bf16), so the switch over PCIe is many times shorter than a full expert's."""
    got = {}
    for delta in ([], ["--expert-delta", "1"]):
        assert main(["simulate", "trace", "--trace", str(trace150), "--experts", "150", "--hw", "dgx-h100",
                     "--json", *delta]) == 0
        got[bool(delta)] = json.loads(capsys.readouterr().out)["summary"]
    dense, delta = got[False], got[True]
    matrices = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008) + 2 * 32000 * 4096  # layers, embeddings, head
    stored = 2 * (6_738_415_616 - matrices) + matrices * (1 + 16 / 4096) / 8
    loads = delta["bytes_moved"]["host->device"] / stored
    assert loads == pytest.approx(round(loads), abs=0.01) and round(loads) >= 100  # whole deltas, to 10 KB
    assert dense["switch_p50_s"] > 10 * delta["switch_p50_s"]
    assert delta["ttft_p50_s"] < dense["ttft_p50_s"]
    assert main(["simulate", "trace", "--trace", str(trace150), "--experts", "150", "--expert-delta", "1",
                 "--expert-weights", "int4", "--hw", "dgx-h100"]) == 2
    assert "not both" in capsys.readouterr().err
