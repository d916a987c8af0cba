"""Speculative decoding (Leviathan et al., ICML 2023): a small draft model proposes k tokens,
the target verifies all k+1 positions in one pass. With per-token acceptance rate a, one
iteration yields (1 - a^(k+1)) / (1 - a) tokens on average (their eq. 1) and costs k draft
steps plus one target pass over k+1 tokens (still bound by streaming the target's weights)."""

from __future__ import annotations

from dataclasses import dataclass

from coeflow.hw.generation import forward_pass, generation_cost
from coeflow.hw.shapes import load_shape
from coeflow.hw.spec import Hardware, load_stack


@dataclass(frozen=True)
class Speculation:
    draft: str = "llama3-8b"  # the smallest Llama 3.1 model: a natural draft for 70B/405B
    k: int = 4  # proposed tokens per iteration; chosen, a common setting
    acceptance: float = 0.8  # per-token acceptance; chosen from published 8B->70B rates (0.7-0.85)

    def tokens_per_iteration(self) -> float:
        a = self.acceptance
        return (1 - a ** (self.k + 1)) / (1 - a) if a < 1 else float(self.k + 1)


def decode_tokens_per_s(hw: Hardware, model: str, context: int, spec: Speculation | None = None,
                        tp: int | None = None, stack: str | None = None) -> float:
    """Output tokens/s seen by one user (batch 1) at a given context length."""
    tp = tp or hw.count
    target = load_shape(model)
    base = generation_cost(hw, target, 1, context, 2, tp, stack)
    if spec is None:
        return 1.0 / base.tpot_s
    st = load_stack(stack or hw.default_stack, hw.kind)
    draft = generation_cost(hw, load_shape(spec.draft), 1, context, 2, tp, stack)
    verify = forward_pass(hw, st, target, "prefill", 1, spec.k + 1, context, tp,
                          base.placement.ddr_fraction).time_s + st.step_overhead_s
    return spec.tokens_per_iteration() / (spec.k * draft.tpot_s + verify)
