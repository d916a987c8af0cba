"""GPU and RDU mappers, placement and switching: the behaviour the paper's argument rests on."""

from dataclasses import replace

import pytest

from coeflow.errors import ConfigError
from coeflow.hw import forward_pass, generation_cost, load_hardware, load_shape, load_stack
from coeflow.hw.rdu import partition
from coeflow.hw.graph import decoder_graph
from coeflow.hw.switching import switch_time_s

L7 = load_shape("llama2-7b")


def _no_overheads(stack):
    return replace(stack, kernel_overhead_s=0.0, collective_overhead_s=0.0,
                   invocation_overhead_s=0.0, step_overhead_s=0.0)


def test_batch1_gpu_decode_is_weight_bytes_over_effective_bandwidth():
    hw = load_hardware("a100")
    step = forward_pass(hw, _no_overheads(load_stack("gpt-fast")), L7, "decode", 1, 1, 16, 1)
    bytes_ = 6.74e9 * 2  # published parameter count, BF16
    expected = bytes_ / (2039e9 * hw.device.hbm.efficiency)  # datasheet bandwidth x spec efficiency
    assert step.time_s == pytest.approx(expected, rel=0.03)


def test_long_prefill_is_compute_bound():
    hw = load_hardware("a100")
    p = forward_pass(hw, _no_overheads(load_stack("nemo")), L7, "prefill", 1, 4096, 0, 1)
    flops = 2 * 6.74e9 * 4096
    assert p.time_s >= flops / 312e12 / hw.device.gemm_efficiency * 0.95
    assert p.by_kind["gemm"] > 0.8 * p.time_s


def test_tensor_parallel_decode_is_faster_but_pays_collectives():
    hw = load_hardware("dgx-a100")
    tp1, tp8 = (generation_cost(hw, L7, 1, 128, 20, tp, "nemo") for tp in (1, 8))
    assert tp8.placement.weights == pytest.approx(tp1.placement.weights / 8)
    assert tp8.tpot_s < tp1.tpot_s
    assert tp8.decode_step.by_kind["collective"] > 0 and "collective" not in tp1.decode_step.by_kind
    assert tp8.tpot_s > tp1.tpot_s / 8  # collectives and launches do not shrink with TP


def test_fusion_on_gpu_saves_launches_and_time():
    hw = load_hardware("a100")
    eager, fused = (generation_cost(hw, L7, 1, 512, 20, 1, s) for s in ("hf-eager", "gpt-fast"))
    assert eager.decode_step.launches > 3 * fused.decode_step.launches
    assert eager.tpot_s > fused.tpot_s
    assert eager.prefill.bytes_by_tier["hbm"] > fused.prefill.bytes_by_tier["hbm"]


def test_fused_rdu_beats_unfused_and_hardware_orchestration_beats_software():
    hw = load_hardware("sn40l-8")
    for phase, new, ctx in (("decode", 1, 4096), ("prefill", 4096, 0)):
        t = {n: forward_pass(hw, load_stack(n), L7, phase, 1, new, ctx, 8)
             for n in ("rdu-unfused", "rdu-fused-so", "rdu-fused-ho")}
        assert t["rdu-unfused"].time_s > 1.5 * t["rdu-fused-so"].time_s
        assert t["rdu-fused-so"].time_s > t["rdu-fused-ho"].time_s
        assert t["rdu-fused-ho"].launches == L7.layers + 1  # one kernel per layer, one head
        assert t["rdu-unfused"].bytes_by_tier["hbm"] > t["rdu-fused-ho"].bytes_by_tier["hbm"]


def test_fused_rdu_decode_streams_weights_near_the_papers_85_percent():
    hw = load_hardware("sn40l-8")
    step = forward_pass(hw, load_stack("rdu-fused-ho"), L7, "decode", 1, 1, 128, 8)
    ideal = 6.74e9 * 2 / 8 / 1.8e12  # one socket's shard at Table II peak bandwidth
    assert ideal / 0.85 < step.time_s < 1.6 * ideal / 0.85


def test_a_layer_too_big_for_sram_is_split_into_several_kernels():
    g = decoder_graph(L7, "prefill", 1, 4096, 0, 1)
    assert len(partition(g.layer_ops, 4096, 520 * 2**20)) == 1
    assert len(partition(g.layer_ops, 4096, 8 * 2**20)) > 1


def test_rdu_spills_weights_to_ddr_and_pays_ddr_bandwidth():
    hw = load_hardware("sn40l-8")
    big = generation_cost(hw, load_shape("llama3-405b"), 1, 128, 8)
    assert big.placement.ddr_used > 0
    assert big.decode_step.bytes_by_tier["ddr"] == pytest.approx(big.placement.ddr_used, rel=0.05)
    fits = generation_cost(load_hardware("sn40l-16"), load_shape("llama3-405b"), 1, 128, 8)
    assert fits.placement.ddr_used == 0 and fits.tpot_s < big.tpot_s / 3


def test_a_gpu_refuses_a_model_that_does_not_fit_and_says_what_would():
    with pytest.raises(ConfigError, match="needs .* GiB per device.*--tp"):
        generation_cost(load_hardware("dgx-a100"), load_shape("llama2-70b"), 1, 128, 8, 1)


def test_switching_from_ddr_beats_pcie_by_the_bandwidth_ratio():
    sn, dgx = load_hardware("sn40l-8"), load_hardware("dgx-a100")
    nbytes = 13.5e9
    assert switch_time_s(dgx, nbytes, "host") == pytest.approx(nbytes / 32e9)  # PCIe Gen4 x16
    ddr = switch_time_s(sn, nbytes, "ddr")
    assert ddr < switch_time_s(dgx, nbytes, "host") / 10
    assert ddr == pytest.approx(nbytes / 1.0e12, rel=0.01)  # paper: over 1 TB/s per node
    assert switch_time_s(sn, nbytes, "hbm") == 0.0
    with pytest.raises(ConfigError):
        switch_time_s(dgx, nbytes, "ddr")  # GPUs have no DDR tier of their own
    with pytest.raises(ConfigError):
        switch_time_s(sn, nbytes, "disk")


def test_generation_totals_add_up_and_longer_outputs_cost_more():
    hw = load_hardware("dgx-h100")
    short, long = (generation_cost(hw, L7, 1, 128, g) for g in (20, 200))
    assert short.total_s == pytest.approx(short.ttft_s + 19 * short.tpot_s)
    assert long.total_s > 5 * short.total_s / 2
    with pytest.raises(ConfigError, match="exceeds"):
        generation_cost(hw, L7, 1, 128, 20, 16)


@pytest.mark.parametrize("batch,prompt,gen,published", [(64, 128, 128, 3486), (32, 128, 2048, 1459),
                                                         (32, 2048, 128, 529), (16, 2048, 2048, 592)])
def test_large_batches_on_an_a100_are_within_15_percent_of_tensorrt_llms_published_throughput(
        batch, prompt, gen, published):
    """Held out (nothing in the model was fitted on them): TensorRT-LLM 0.5.0's table, A100
    FP16, LLaMA 7B (Llama-2-7B's shape), TP1, output tokens/s (scripts/batched_gpu_anchors.py)."""
    c = generation_cost(load_hardware("a100"), L7, batch, prompt, gen, 1, "nemo")
    assert batch * gen / c.total_s == pytest.approx(published, rel=0.15)
