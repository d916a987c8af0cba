"""Decode steps run as plain PyTorch, operator by operator: on the engine's own skeleton, or,
given a device's layers, on a copy that carries them (to check those layers without compiling)."""

from __future__ import annotations

from torch import Tensor

from coeflow.engine.paged import KVPool
from coeflow.engine.runners.base import StepRunner, decode_step


class EagerRunner(StepRunner):
    name = "eager"

    def step(self, pool: KVPool, tokens: Tensor, positions: Tensor, blocks: Tensor) -> Tensor:
        return decode_step(self.model, pool, tokens, positions, blocks)
