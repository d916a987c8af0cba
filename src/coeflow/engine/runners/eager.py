"""Decode steps run as plain PyTorch, operator by operator: on the engine's own skeleton, or,
given a device's layers, on a copy that carries them (to check those layers without compiling)."""

from __future__ import annotations

from torch import Tensor

from coeflow.engine.kv_cache import KVCache
from coeflow.engine.runners.base import StepRunner, decode_step


class EagerRunner(StepRunner):
    name = "eager"

    def step(self, cache: KVCache, tokens: Tensor, positions: Tensor, slot: Tensor) -> Tensor:
        return decode_step(self.model, cache, tokens, positions, slot)
