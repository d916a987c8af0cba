"""Sampling parameters and the choice of the next token for one sequence: logits adjusted by
the penalties and biases a request asks for, then the greedy or sampled pick, and the pick's
log-probabilities when asked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
from torch import Tensor

from coeflow.errors import CoeflowError
from coeflow.sampling_ranges import RANGES


class InvalidRequestError(CoeflowError):
    """A generation request with a parameter out of range; the message says which."""


# The seeds torch's generators take.
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    min_p: float = 0.0  # drop tokens less likely than min_p times the likeliest; 0 = off
    presence_penalty: float = 0.0  # OpenAI's: subtracted once from each token already generated
    frequency_penalty: float = 0.0  # OpenAI's: subtracted per time a token was generated
    repetition_penalty: float = 1.0  # transformers': seen tokens' logits divided (or, below 0, multiplied)
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit)
    logprobs: int | None = None  # the pick's log-probability and this many likeliest others; None = off

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise InvalidRequestError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        for name, allowed in RANGES.items():
            why = allowed.problem(getattr(self, name))
            if why:
                raise InvalidRequestError(f"{name} {why}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise InvalidRequestError("stop strings must be non-empty strings")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not SEED_MIN <= self.seed <= SEED_MAX):
            raise InvalidRequestError(f"seed must be an integer from {SEED_MIN} to {SEED_MAX}, got {self.seed!r}")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise InvalidRequestError(f"logprobs must be from 0 to 20, got {self.logprobs!r}")
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "logit_bias", tuple((int(t), float(b)) for t, b in self.logit_bias))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def adjusts(self) -> bool:
        """Its logits are changed before the pick (penalties, biases)."""
        return bool(self.presence_penalty or self.frequency_penalty or self.repetition_penalty != 1.0
                    or self.logit_bias)

    @property
    def plain(self) -> bool:
        """The argmax of the model's logits is all it needs: a runner may choose on the device."""
        return self.greedy and not self.adjusts and self.logprobs is None

    def generator(self) -> torch.Generator | None:
        if self.greedy:
            return None
        g = torch.Generator()
        if self.seed is not None:
            g.manual_seed(self.seed)
        else:
            g.seed()
        return g


class Constraint(Protocol):
    """What a sequence's output must match (a grammar, a JSON schema): which tokens may come
    next, and each token chosen. It allows an end-of-sequence token once the output is whole."""

    def allowed(self, vocab_size: int) -> Tensor:
        """bool [vocab_size]: the tokens that keep the output matching."""

    def accept(self, token: int) -> None:
        """The token chosen next."""


def allowed_rows(constraints: Sequence[Constraint], vocab_size: int) -> Tensor:
    """bool [len(constraints), vocab_size]: each constraint's `allowed`, made together when
    their class can (a classmethod `allowed_rows`: e.g. every mask written into one array)."""
    kind = type(constraints[0])
    if hasattr(kind, "allowed_rows") and all(type(c) is kind for c in constraints):
        return kind.allowed_rows(constraints, vocab_size)
    return torch.stack([c.allowed(vocab_size) for c in constraints])


@dataclass(frozen=True)
class Pick:
    """A chosen token, and (when asked) its log-probability and the likeliest tokens', under
    the model's distribution before any penalty, bias or temperature."""
    token: int
    logprob: float | None = None
    top: tuple[tuple[int, float], ...] = ()


def adjust(logits: Tensor, params: SamplingParams, prompt: Sequence[int], generated: Sequence[int]) -> Tensor:
    """float64 logits [V] with the request's penalties and biases applied: transformers'
    repetition penalty over the prompt and the output, OpenAI's presence and frequency
    penalties over the output, then the logit biases."""
    logits = logits.double().clone()
    if params.repetition_penalty != 1.0 and (prompt or generated):
        seen = torch.tensor(sorted(set(prompt) | set(generated)), dtype=torch.long)
        seen = seen[seen < logits.numel()]
        hit = logits[seen]
        logits[seen] = torch.where(hit > 0, hit / params.repetition_penalty, hit * params.repetition_penalty)
    if (params.presence_penalty or params.frequency_penalty) and generated:
        counts = torch.bincount(torch.tensor(generated, dtype=torch.long), minlength=logits.numel())[:logits.numel()]
        logits -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0)
    for token, bias in params.logit_bias:
        if 0 <= token < logits.numel():
            logits[token] += bias
    return logits


def pick(logits: Tensor, params: SamplingParams, generator: torch.Generator | None,
         prompt: Sequence[int] = (), generated: Sequence[int] = (), allowed: Tensor | None = None) -> Pick:
    """The next token from a sequence's float32 logits [V] (on the CPU), among the `allowed`
    ones (bool [V]) when a constraint says."""
    choice = adjust(logits, params, prompt, generated) if params.adjusts else logits
    if allowed is not None:
        choice = torch.where(allowed, choice, float("-inf"))
    token = int(choice.argmax()) if params.greedy else sample(choice, params, generator)
    if params.logprobs is None:
        return Pick(token)
    lp = torch.log_softmax(logits.double(), -1)
    top = torch.topk(lp, min(params.logprobs, lp.numel())) if params.logprobs else None
    return Pick(token, float(lp[token]),
                tuple(zip(top.indices.tolist(), top.values.tolist())) if top is not None else ())


def sample(logits: Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """A sampled token id from logits [V] (on the CPU). In float64, from the largest logit
    down: every temperature and top_p a request may give stays a number (divided in float32,
    a tiny temperature overflows, and a tiny top_p rounds to 0)."""
    logits = logits.double()
    logits = (logits - logits.max()) / params.temperature
    if params.top_k and params.top_k < logits.numel():
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.min_p > 0.0:  # relative to the likeliest, whose logit is 0 here
        logits = logits.masked_fill(logits < torch.log(torch.tensor(params.min_p, dtype=logits.dtype)), float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= params.top_p  # keep the token that crosses top_p
        drop[0] = False  # and always the likeliest
        logits = logits.scatter(0, order, sorted_logits.masked_fill(drop, float("-inf")))
    # inverse CDF: one uniform draw against the running sum (torch.multinomial does much more
    # work for a single draw); right=True never lands on a token of probability 0
    cdf = logits.softmax(-1).cumsum(-1)
    u = torch.rand((), generator=generator, dtype=cdf.dtype) * cdf[-1]
    return min(int(torch.searchsorted(cdf, u, right=True)), cdf.numel() - 1)
