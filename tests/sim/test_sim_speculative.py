"""Speculative decoding on the hardware model: expected tokens, what one iteration costs, and
how k is chosen."""

import pytest

from coeflow.errors import ConfigError
from coeflow.hw import forward_pass, load_hardware, load_shape, load_stack
from coeflow.sim.paper import TABLE_IV_CONTEXT, table_iv_rows
from coeflow.sim.speculative import (
    K_MAX,
    Speculation,
    decode_tokens_per_s,
    speculative_cost,
)

HW = load_hardware("sn40l-16")
STEP_OVERHEAD_S = 0.1e-3  # stacks.yaml: rdu-fused-so and rdu-fused-ho


def test_expected_tokens_per_iteration_follow_leviathan_eq1():
    # 1 + a + a^2 + a^3 + a^4 at a = 0.8, written out by hand
    assert Speculation(acceptance=0.8).tokens_per_iteration(4) == pytest.approx(3.3616)
    assert Speculation(acceptance=1.0).tokens_per_iteration(4) == 5.0


def test_hardware_orchestration_pays_one_host_trip_per_iteration():
    ho = speculative_cost(HW, "llama3-70b", 1500, Speculation(k=4), stack="rdu-fused-ho")
    so = speculative_cost(HW, "llama3-70b", 1500, Speculation(k=4), stack="rdu-fused-so")
    assert ho.iteration_s - 4 * ho.draft_pass_s - ho.verify_s == pytest.approx(STEP_OVERHEAD_S)
    assert so.iteration_s - 4 * so.draft_pass_s - so.verify_s == pytest.approx(5 * STEP_OVERHEAD_S)


def test_verifying_k_plus_one_tokens_costs_about_one_weight_stream_not_k_plus_one():
    st = load_stack("rdu-fused-ho", "rdu")
    shape = load_shape("llama3-70b")
    step = forward_pass(HW, st, shape, "decode", 1, 1, 1500, 16).time_s
    verify = forward_pass(HW, st, shape, "prefill", 1, 5, 1500, 16, logits=5).time_s
    assert step <= verify < 1.1 * step


def test_a_given_k_is_used_and_the_fastest_k_beats_every_fixed_one():
    assert speculative_cost(HW, "llama3-405b", 1500, Speculation(k=3)).k == 3
    best = speculative_cost(HW, "llama3-405b", 1500, Speculation())
    assert 1 < best.k < K_MAX  # an interior optimum, not the search bound
    for k in (1, 2, 4, 8):
        assert best.tokens_per_s >= speculative_cost(HW, "llama3-405b", 1500,
                                                     Speculation(k=k)).tokens_per_s
    with pytest.raises(ConfigError):
        speculative_cost(HW, "llama3-405b", 1500, Speculation(k=0))


def test_speculation_helps_but_cannot_beat_the_draft_alone():
    for model in ("llama3-70b", "llama3-405b"):
        plain = decode_tokens_per_s(HW, model, 1500)
        spec = decode_tokens_per_s(HW, model, 1500, Speculation())
        assert plain < spec < decode_tokens_per_s(HW, "llama3-8b", 1500)


def test_target_and_draft_must_fit_in_hbm_together():
    # 405B in bf16 on 8 sockets needs ~101 GB per socket: it spills, which speculation does not model
    with pytest.raises(ConfigError, match="does not fit"):
        speculative_cost(load_hardware("sn40l-8"), "llama3-405b", 1500, Speculation())


def test_table_iv_decodes_at_the_artificial_analysis_workload_and_a_full_8k_cache_is_slower():
    assert TABLE_IV_CONTEXT == 1000 + 1000 // 2  # ~1,000 tokens in, ~1,000 out: mean KV length
    short, full = table_iv_rows(), table_iv_rows(context=8192)
    for s, f in zip(short, full):
        assert f.predicted < s.predicted
