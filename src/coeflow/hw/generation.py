"""Cost of generating: prefill a batch of prompts, then decode `gen` tokens, on one expert.

TTFT = invocation overhead + prefill pass + per-step overhead. Each decode step is costed at
the mean context (prompt + gen/2): a step's time is affine in the context length (KV reads),
so the mean step is exact for the total; it also keeps one call to two passes, which is what
makes trace replay fast (results are cached per configuration)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from coeflow.errors import ConfigError
from coeflow.hw.costs import PassCost
from coeflow.hw.gpu import gpu_pass
from coeflow.hw.graph import decoder_graph
from coeflow.hw.placement import Placement, place
from coeflow.hw.rdu import rdu_pass
from coeflow.hw.shapes import DecoderShape
from coeflow.hw.spec import Hardware, Stack, load_stack


@dataclass(frozen=True)
class GenerationCost:
    hardware: str
    model: str
    stack: str
    batch: int
    prompt: int
    gen: int
    tp: int
    ttft_s: float  # time to first token (includes invocation overhead and prefill)
    tpot_s: float  # time per output token after the first
    total_s: float  # ttft + (gen - 1) * tpot
    prefill: PassCost
    decode_step: PassCost
    placement: Placement

    def to_dict(self) -> dict:
        def pass_dict(p: PassCost) -> dict:
            return {"time_s": p.time_s, "launches": p.launches, "kernels": p.kernels,
                    "by_kind_s": p.by_kind, "bytes_by_tier": p.bytes_by_tier, "flops": p.flops}
        return {
            "hardware": self.hardware, "model": self.model, "stack": self.stack,
            "batch": self.batch, "prompt": self.prompt, "gen": self.gen, "tp": self.tp,
            "total_s": self.total_s, "ttft_s": self.ttft_s, "tpot_s": self.tpot_s,
            "tokens_per_s_per_user": 1 / self.tpot_s if self.tpot_s else None,
            "prefill": pass_dict(self.prefill), "decode_step": pass_dict(self.decode_step),
            "launches_total": self.prefill.launches + (self.gen - 1) * self.decode_step.launches,
            "placement_bytes_per_device": {
                "weights": self.placement.weights, "kv_cache": self.placement.kv_cache,
                "activations": self.placement.activations, "hbm_used": self.placement.hbm_used,
                "hbm_usable": self.placement.hbm_usable, "ddr_used": self.placement.ddr_used},
        }


def forward_pass(hw: Hardware, stack: Stack, shape: DecoderShape, phase: str, batch: int,
                 new_tokens: int, context: int, tp: int, ddr_fraction: float = 0.0,
                 logits: int = 1) -> PassCost:
    """One prefill or decode pass, mapped for the hardware's kind (`logits`: positions per
    sequence that need the LM head, see `decoder_graph`)."""
    graph = decoder_graph(shape, phase, batch, new_tokens, context, tp, logits)
    if hw.kind == "rdu":
        return rdu_pass(hw, stack, graph, ddr_fraction)
    return gpu_pass(hw, stack, graph)


@lru_cache(maxsize=65536)
def generation_cost(hw: Hardware, shape: DecoderShape, batch: int, prompt: int, gen: int,
                    tp: int | None = None, stack: str | Stack | None = None) -> GenerationCost:
    """Prefill `batch` prompts of `prompt` tokens and decode `gen` tokens each, on `tp`
    devices of `hw` (default: all of them) with a software stack (default: the system's)."""
    tp = tp or hw.count
    if tp > hw.count:
        raise ConfigError(f"--tp {tp} exceeds the {hw.count} devices of {hw.name}")
    if gen < 1 or prompt < 1 or batch < 1:
        raise ConfigError("batch, prompt and gen must be at least 1")
    st = stack if isinstance(stack, Stack) else load_stack(stack or hw.default_stack, hw.kind)
    placement = place(hw, shape, tp, batch, prompt, gen)
    prefill = forward_pass(hw, st, shape, "prefill", batch, prompt, 0, tp, placement.ddr_fraction)
    step = forward_pass(hw, st, shape, "decode", batch, 1, prompt + gen // 2, tp,
                        placement.ddr_fraction)
    ttft = st.invocation_overhead_s + prefill.time_s + st.step_overhead_s
    tpot = step.time_s + st.step_overhead_s
    return GenerationCost(hw.name, shape.name, st.name, batch, prompt, gen, tp, ttft, tpot,
                          ttft + (gen - 1) * tpot, prefill, step, placement)


@dataclass(frozen=True)
class StepCost:
    """One step of continuous batching on one expert."""
    time_s: float
    hbm_bytes: float  # read from HBM, all devices


@lru_cache(maxsize=65536)
def _pass_in_place(hw: Hardware, stack: Stack, shape: DecoderShape, phase: str, batch: int, new_tokens: int,
                   context: int, tp: int) -> PassCost:
    placement = place(hw, shape, tp, batch, context + new_tokens, 1)
    return forward_pass(hw, stack, shape, phase, batch, new_tokens, context, tp, placement.ddr_fraction)


def step_cost(hw: Hardware, shape: DecoderShape, prefills: tuple[tuple[int, int], ...], decode_rows: int,
              decode_context: int, tp: int | None = None, stack: str | Stack | None = None) -> StepCost:
    """One step of an expert's running batch, as the server's continuous batching runs it:
    each (new tokens, tokens cached) prefill chunk as its own pass, then one decode pass over
    `decode_rows` sequences with `decode_context` tokens cached on average (exact for the KV
    reads, which are affine in it), plus the step overhead. A step in which a prompt starts
    also pays the invocation overhead (its request's setup)."""
    tp = tp or hw.count
    st = stack if isinstance(stack, Stack) else load_stack(stack or hw.default_stack, hw.kind)
    passes = [_pass_in_place(hw, st, shape, "prefill", 1, new, before, tp) for new, before in prefills]
    if decode_rows:
        passes.append(_pass_in_place(hw, st, shape, "decode", decode_rows, 1, decode_context, tp))
    time = st.step_overhead_s + sum(p.time_s for p in passes)
    if any(before == 0 for _, before in prefills):
        time += st.invocation_overhead_s
    return StepCost(time, tp * sum(p.bytes_by_tier.get("hbm", 0.0) for p in passes))
