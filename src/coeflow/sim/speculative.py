"""Speculative decoding (Leviathan et al., ICML 2023): a small draft model proposes k tokens,
the target verifies all k+1 positions in one pass. With per-token acceptance rate a (taken as
independent per position, the paper's simplifying assumption), one iteration yields
(1 - a^(k+1)) / (1 - a) tokens on average (their eq. 1) and costs k draft decode passes plus
one target pass over k+1 tokens with logits at every position (still bound by streaming the
target's weights).

Two modelling choices, each with its reason:
- Host round trips. On a hardware-orchestrated stack (the SN40L's AGCUs sequence kernels
  without the host) the draft's tokens are sampled on device (sampling is part of the graph's
  head) and fed back to the next draft pass, so an iteration pays the host step overhead once,
  when its accepted tokens are read back. Elsewhere every draft pass and the verification is
  its own host-driven step.
- k. Unless given, k is the number of proposed tokens that maximises the modelled tokens/s
  (Leviathan et al. section 3.4 choose the optimal gamma the same way). This is what a
  deployment tunes, and it uses no reference number: only the acceptance rate and the modelled
  draft/target costs."""

from __future__ import annotations

from dataclasses import dataclass

from coeflow.errors import ConfigError
from coeflow.hw.generation import forward_pass, generation_cost
from coeflow.hw.shapes import load_shape
from coeflow.hw.spec import Hardware, load_stack

K_MAX = 16  # largest k searched; the optimum for the shipped cases is below it (tests check)


@dataclass(frozen=True)
class Speculation:
    draft: str = "llama3-8b"  # the smallest Llama 3.1 model: a natural draft for 70B/405B
    acceptance: float = 0.8  # per-token acceptance: our choice (no citable 8B->70B figure found); swept 0.7-0.9
    k: int | None = None  # proposed tokens per iteration; None: the k that maximises tokens/s

    def tokens_per_iteration(self, k: int) -> float:
        """Expected tokens one iteration yields: accepted drafts plus the target's own token."""
        a = self.acceptance
        return (1 - a ** (k + 1)) / (1 - a) if a < 1 else float(k + 1)


@dataclass(frozen=True)
class SpeculativeCost:
    k: int
    tokens_per_s: float
    tokens_per_iteration: float
    iteration_s: float
    draft_pass_s: float  # one draft decode pass, without host overhead
    verify_s: float  # the target's pass over k + 1 tokens, without host overhead


def speculative_cost(hw: Hardware, model: str, context: int, spec: Speculation,
                     tp: int | None = None, stack: str | None = None) -> SpeculativeCost:
    """Batch-1 speculative decoding of `model` at a mean KV length of `context` tokens, the
    draft on the same `tp` devices (both models resident in HBM)."""
    tp = tp or hw.count
    st = load_stack(stack or hw.default_stack, hw.kind)
    target_shape, draft_shape = load_shape(model), load_shape(spec.draft)
    target = generation_cost(hw, target_shape, 1, context, 2, tp, stack)
    draft = generation_cost(hw, draft_shape, 1, context, 2, tp, stack)
    both = target.placement.hbm_used + draft.placement.weights + draft.placement.kv_cache
    if target.placement.ddr_used or draft.placement.ddr_used or both > target.placement.hbm_usable:
        raise ConfigError(f"{model} with draft {spec.draft} at TP{tp} does not fit in HBM "
                          f"together; spilling with a draft is not modelled")
    if spec.k is not None and spec.k < 1:
        raise ConfigError(f"speculative k must be at least 1, not {spec.k}")
    draft_pass = draft.decode_step.time_s
    best = None
    for k in ([spec.k] if spec.k else range(1, K_MAX + 1)):
        verify = forward_pass(hw, st, target_shape, "prefill", 1, k + 1, context, tp,
                              logits=k + 1).time_s
        host_trips = 1 if st.hardware_orchestrated else k + 1
        iteration = k * draft_pass + verify + host_trips * st.step_overhead_s
        tokens = spec.tokens_per_iteration(k)
        cost = SpeculativeCost(k, tokens / iteration, tokens, iteration, draft_pass, verify)
        if best is None or cost.tokens_per_s > best.tokens_per_s:
            best = cost
    return best


def decode_tokens_per_s(hw: Hardware, model: str, context: int, spec: Speculation | None = None,
                        tp: int | None = None, stack: str | None = None) -> float:
    """Output tokens/s seen by one user (batch 1) at a mean KV length of `context` tokens."""
    if spec is None:
        return 1.0 / generation_cost(hw, load_shape(model), 1, context, 2, tp or hw.count,
                                     stack).tpot_s
    return speculative_cost(hw, model, context, spec, tp, stack).tokens_per_s
