"""Generation for one expert at a time: KV cache, prefill/decode, sampling, the compiled step."""

from coeflow.engine.engine import Completion, Delta, Engine, Sequence
from coeflow.engine.sampling import InvalidRequestError, SamplingParams

__all__ = ["Engine", "Sequence", "Completion", "Delta", "SamplingParams", "InvalidRequestError"]
