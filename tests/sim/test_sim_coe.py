"""The CoE deployment model: footprint, latency against the number of experts, trace replay."""

import random

from coeflow.sim.coe import CoEWorkload, Deployment, simulate_trace


def test_850_experts_fit_one_sn40l_node_but_need_about_19_dgx():
    assert Deployment.of("sn40l-8").nodes_for(850) == 1
    for hw in ("dgx-a100", "dgx-h100"):
        assert 18 <= Deployment.of(hw).nodes_for(850) <= 20


def test_dgx_holds_about_50_experts_in_hbm_and_runs_out_of_host_memory_near_150():
    d = Deployment.of("dgx-h100")
    assert 40 <= d.hbm_expert_slots() <= 55
    assert 140 <= d.store_capacity() <= 170


def test_latency_is_flat_while_experts_fit_in_hbm_then_grows_then_oom():
    d, w = Deployment.of("dgx-a100"), CoEWorkload()
    slots = d.hbm_expert_slots()
    flat = [d.expected_latency(n, w).total_s for n in (1, slots // 2, slots)]
    assert max(flat) == min(flat)
    assert d.expected_latency(2 * slots, w).total_s > flat[0] + 0.4 * d.switch_s()
    assert d.expected_latency(d.store_capacity() + 1, w) is None


def test_sn40l_switches_are_cheap_so_latency_barely_grows():
    sn, w = Deployment.of("sn40l-8"), CoEWorkload()
    grow = sn.expected_latency(800, w).total_s / sn.expected_latency(1, w).total_s
    dgx = Deployment.of("dgx-a100")
    grow_dgx = dgx.expected_latency(150, w).total_s / dgx.expected_latency(1, w).total_s
    assert grow < 1.2 < 2 < grow_dgx


def test_a_batch_of_8_runs_the_router_once_and_each_pair_in_turn():
    d = Deployment.of("sn40l-8")
    one, eight = d.latency(CoEWorkload(batch=1)), d.latency(CoEWorkload(batch=8))
    assert eight.expert_s == 8 * one.expert_s and eight.switch_s == 8 * one.switch_s
    assert eight.router_s < 2 * one.router_s


def test_trace_replay_of_10000_requests_counts_switches():
    d = Deployment.of("dgx-h100")
    rng = random.Random(0)
    reqs = [(rng.randrange(150), rng.choice((64, 128, 512)), rng.choice((20, 200)))
            for _ in range(10_000)]
    res = simulate_trace(d, reqs)
    assert res.switches + res.hits == 10_000
    assert 0.5 < res.switches / 10_000 < 0.8  # ~1 - 47/150 miss with uniform routing
    same = simulate_trace(d, [(3, 128, 20)] * 100)
    assert same.switches == 1 and same.latencies_s[0] > same.latencies_s[1]
