"""The modelled backend's replay: the server's decisions on a simulated clock, with times
from the hardware model."""


import pytest

from coeflow.errors import ConfigError
from coeflow.hw import generation_cost, load_hardware, load_shape, switch_time_s
from coeflow.hw.generation import step_cost
from coeflow.sim.modelled import Machine, ModelledBackend
from coeflow.sim.paper import table_v_rows, table_v_rows_via_trace
from coeflow.sim.replay import ReplayOptions, SimRequest, replay
from coeflow.sim.workload import coe_of_copies, resolve
from coeflow.trace import TraceRequest, TraceSpec, generate

SHAPE = load_shape("llama2-7b")


def backend(hw="dgx-h100", n=150):
    return ModelledBackend(Machine(load_hardware(hw)), {f"e{i}": SHAPE for i in range(n)})


STATIC = ReplayOptions(schedule="static")


def test_a_cold_expert_waits_one_modelled_copy_and_a_resident_one_none():
    b, hw = backend(), load_hardware("dgx-h100")
    res = replay(b, [SimRequest(0.0, "e1", 128, 20), SimRequest(10.0, "e1", 128, 20)], STATIC)
    cold, warm = res.records
    copy = switch_time_s(hw, SHAPE.weight_bytes(), "host")
    gen = generation_cost(hw, SHAPE, 1, 128, 20)
    assert (cold.source_tier, warm.source_tier) == ("host", "device")
    assert cold.switch_s == pytest.approx(copy) and warm.switch_s == 0.0
    assert cold.latency_s == pytest.approx(copy + gen.total_s)
    assert warm.ttft_s == pytest.approx(gen.ttft_s) and warm.latency_s == pytest.approx(gen.total_s)
    assert res.loads["host->device"] == 1 and res.bytes_moved["host->device"] == SHAPE.weight_bytes()


def test_requests_for_one_expert_that_queue_while_it_loads_are_batched():
    res = replay(backend(), [SimRequest(0.0, "e0", 128, 20)] + [SimRequest(0.01, "e0", 128, 20)] * 5,
                 ReplayOptions(schedule="static", max_batch=4))
    assert [r.batch for r in res.records] == [4, 4, 4, 4, 2, 2]
    assert res.records[0].start_s == res.records[3].start_s < res.records[4].start_s


def test_eviction_is_the_stores_policy_on_the_device_budget():
    b = backend()
    two = 2 * b.expert_bytes("e0")
    reqs = [SimRequest(t, e, 16, 2) for t, e in ((0, "e0"), (5, "e1"), (10, "e0"), (15, "e2"), (20, "e1"), (25, "e0"))]
    tiers = [r.source_tier for r in replay(b, reqs, ReplayOptions(device_mem=two)).records]
    assert tiers == ["host", "host", "device", "host", "host", "host"]  # LRU: e2 evicts e1, e1 evicts e0
    tiers = [r.source_tier for r in replay(b, reqs, ReplayOptions(device_mem=two, policy="fifo")).records]
    assert tiers == ["host", "host", "device", "host", "device", "host"]  # FIFO: e2 evicts e0


def test_a_loading_expert_does_not_block_a_resident_one():
    """Prefetch overlaps loads with compute: a request for a resident expert that arrives
    while another expert loads runs first (the scheduler's ready rule)."""
    b = backend()
    res = replay(b, [SimRequest(0.0, "e0", 128, 20), SimRequest(1.0, "e1", 128, 20), SimRequest(1.01, "e0", 128, 20)],
                 STATIC)
    e1, e0_again = res.records[1], res.records[2]
    assert e0_again.start_s < e1.start_s and e0_again.source_tier == "device"


def test_experts_beyond_the_host_memory_are_out_of_memory_on_a_dgx():
    with pytest.raises(ConfigError, match="out of memory"):
        replay(backend(n=200), [SimRequest(0.0, f"e{i}", 16, 2) for i in range(200)])


def test_10000_requests_over_150_experts_replay_whole():
    trace = generate(TraceSpec(tuple(f"e{i}" for i in range(150)), rate=4.0, requests=10_000, zipf_s=0.9,
                               prompt_tokens=(64, 512), max_tokens=(16, 256), seed=5))
    reqs = resolve(trace, coe_of_copies(150, "llama2-7b"))
    res = replay(backend("sn40l-8"), reqs)
    s = res.summary()
    assert s["requests"] == 10_000 and sum(s["requests_by_source_tier"].values()) == 10_000
    assert res.loads["host->device"] >= s["requests_by_source_tier"].get("host", 0) > 0
    assert s["latency_p99_s"] >= s["latency_p50_s"] >= s["ttft_p50_s"] > 0
    assert 0 < s["utilisation"]["compute"] <= 1


def test_routed_requests_use_the_recorded_route_and_unknown_experts_are_named():
    coe = coe_of_copies(3, "llama2-7b")
    assert resolve([TraceRequest(0, "coe", 5, prompt_tokens=3, route="e2")], coe)[0].expert == "e2"
    with pytest.raises(ConfigError, match="trace request 1 .*no expert 'sql'"):
        resolve([TraceRequest(0, "sql", 5, prompt_tokens=3)], coe)


def test_table_v_through_the_trace_path_equals_simulate_paper():
    closed = {r.name: r.predicted for r in table_v_rows()}
    via = table_v_rows_via_trace()
    assert len(via) == 14
    for r in via:
        assert r.predicted == pytest.approx(closed[r.name], rel=1e-12), r.name


# -- continuous batching (the server's default schedule), step by step ---------------------

def test_a_lone_request_costs_its_steps_prefill_with_a_decode_then_one_decode_a_token():
    b, hw = backend(), load_hardware("dgx-h100")
    res = replay(b, [SimRequest(10.0, "e1", 128, 20)], ReplayOptions(start_tier="host"))
    (r,) = res.records
    copy = switch_time_s(hw, SHAPE.weight_bytes(), "host")
    first = step_cost(hw, SHAPE, ((128, 0),), 1, 128)  # the prefill's step also decodes its 2nd token
    rest = sum(step_cost(hw, SHAPE, (), 1, 128 + k).time_s for k in range(1, 19))  # tokens 3..20
    assert r.ttft_s == pytest.approx(copy + first.time_s)
    assert r.latency_s == pytest.approx(copy + first.time_s + rest, rel=1e-3)  # contexts costed per KV block


def test_a_request_joins_a_running_batch_of_its_expert_instead_of_waiting_for_it():
    reqs = [SimRequest(0.0, "e0", 128, 400), SimRequest(0.5, "e0", 128, 20)]
    cont = replay(backend(), reqs).records
    static = replay(backend(), reqs, STATIC).records
    assert cont[1].start_s < 0.6 and cont[1].finish_s < cont[0].finish_s and cont[1].batch == 2
    assert static[1].start_s >= static[0].finish_s


def test_another_experts_request_gets_the_device_within_a_slice_of_a_long_batch():
    b = backend()
    warm = [SimRequest(0.0, "e1", 16, 1)]  # e1 reaches the device first, then e0 runs long
    reqs = warm + [SimRequest(0.1, "e0", 128, 2000), SimRequest(2.0, "e1", 128, 20)]
    cont = replay(b, reqs, ReplayOptions(slice_s=0.05)).records
    assert cont[2].source_tier == "device"
    assert cont[2].ttft_s < 0.05 + 0.1  # a slice of e0, then its own prefill step
    assert cont[1].finish_s > cont[2].finish_s  # e0's long request was paused, not ended
    static = replay(b, reqs, STATIC).records
    assert static[2].start_s >= static[1].finish_s


def test_a_request_waits_for_kv_cache_room_and_one_that_never_fits_is_a_clear_error():
    b = backend()
    one = b.kv_bytes("e0", 160)  # 128 + 20 tokens, in whole blocks of 16
    reqs = [SimRequest(0.0, "e0", 128, 20), SimRequest(0.01, "e0", 128, 20)]
    first, second = replay(b, reqs, ReplayOptions(kv_mem=one)).records
    assert second.start_s >= first.finish_s
    both = replay(b, reqs, ReplayOptions(kv_mem=2 * one)).records
    assert both[1].start_s < both[0].finish_s
    with pytest.raises(ConfigError, match="request 0 .*KV cache.*--kv-mem"):
        replay(b, [SimRequest(0.0, "e0", 4000, 200)], ReplayOptions(kv_mem=one))


def test_decode_runs_costed_in_one_loop_are_the_same_steps_as_one_at_a_time(monkeypatch):
    from coeflow.sim.continuous import ContinuousReplay
    trace = generate(TraceSpec(tuple(f"e{i}" for i in range(6)), rate=3.0, requests=150, seed=2,
                               max_tokens=(16, 300)))
    reqs = resolve(trace, coe_of_copies(6, "llama2-7b"))
    fast = replay(backend("dgx-h100", 6), reqs).records
    monkeypatch.setattr(ContinuousReplay, "_next_change", lambda self, expert, start, now: float("-inf"))
    stepwise = replay(backend("dgx-h100", 6), reqs).records
    assert [(r.start_s, r.first_token_s, r.finish_s) for r in fast] == \
        [(r.start_s, r.first_token_s, r.finish_s) for r in stepwise]
