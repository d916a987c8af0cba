"""The interface between the engine and whatever runs its decode steps."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Callable, Iterator

import torch
from torch import Tensor

from coeflow.engine.layers import DeviceLayers
from coeflow.engine.paged import KVPool
from coeflow.model import attach_weights, kernels
from coeflow.model.llama import Transformer


def decode_step(model: Transformer, pool: KVPool, tokens: Tensor, positions: Tensor, blocks: Tensor) -> Tensor:
    """One token for every row: `tokens` and `positions` [B, 1], the rows' block tables `blocks`
    [B, nb] in `pool`. The function a runner compiles. Returns float32 logits [B, V]."""
    logits = model.forward_cached(tokens, positions, pool.keys(), pool.values(), blocks, rope=pool.rope())
    return logits[:, -1]


def argmax_rows(logits: Tensor, rows: int) -> list[int]:
    """The first `rows` rows' largest logits' indices (the first largest; NaN largest)."""
    if rows < logits.shape[0]:
        logits = logits[:rows]
    if logits.device.type == "cpu":
        return kernels.argmax_rows(logits)
    return logits.argmax(-1).tolist()


class StepRunner(ABC):
    """Runs decode steps for one model shape: one token for every row of a batch, its keys in
    the engine's KV pool, on the expert whose weights are attached. Each implementation lives in a module of its own and
    is chosen once per engine, by device and capability (coeflow.engine.runners.choose_runner);
    the engine prefills, chooses tokens and emits text, and never sees how a step runs."""

    name: str = "step runner"

    def __init__(self, model: Transformer, layers: DeviceLayers | None = None) -> None:
        """`model`: the engine's skeleton, without a device's layers yet. With `layers`, steps
        run on a copy of it that carries them (coeflow.engine.layers), attached by `attach`;
        without, on the engine's own skeleton, which the engine attaches."""
        self.plain = model  # the engine's skeleton: eager steps, where compiled ones fail
        self.layers = layers
        if layers is None:
            self.model = model
        else:
            self.model = copy.deepcopy(model)  # a skeleton: no weights to copy
            layers.swap(self.model)

    def attach(self, weights: dict[str, Tensor]) -> tuple:
        """Point the runner's own skeleton at an expert's tensors (no copy). Returns what the
        layers made of them (`DeviceLayers.after_attach`)."""
        if self.layers is None:
            return ()
        attach_weights(self.model, weights)
        return self.layers.after_attach(self.model)

    @abstractmethod
    def step(self, pool: KVPool, tokens: Tensor, positions: Tensor, blocks: Tensor) -> Tensor:
        """Float32 logits [B, V] of one step: `tokens` and `positions` [B, 1] and the rows'
        block tables `blocks` [B, nb], int64 on the model's device. The tensor returned may be
        overwritten by the next step."""

    def greedy(self, pool: KVPool, tokens: list[int], positions: list[int], blocks: Tensor,
               steps: int) -> Iterator[list[int]]:
        """Greedy decoding: up to `steps` steps, each row's largest logit fed to the next (see
        `step_tokens`). The caller may close the iterator after any step."""
        return step_tokens(self, pool, tokens, positions, blocks, steps, lambda l: argmax_rows(l, len(tokens)))

    @property
    def compiled(self) -> bool:
        """Whether steps run compiled (False for the eager runner, or after a compiled step failed
        and the runner went on without compiling)."""
        return False


def step_tokens(runner: StepRunner, pool: KVPool, tokens: list[int], positions: list[int], blocks: Tensor,
                steps: int, choose: Callable[[Tensor], list[int]]) -> Iterator[list[int]]:
    """Up to `steps` decode steps: the first feeds `tokens` (one a row) at `positions`, each
    later one the tokens `choose` picked from the step before; yields each step's picks.
    `blocks` holds every row's block table, with room for all its steps; its rows past
    len(tokens) are padding (token 0 at position 0, in block 0)."""
    dev, n = blocks.device, len(tokens)
    tok = torch.zeros(blocks.shape[0], 1, dtype=torch.long)
    pos = torch.zeros(blocks.shape[0], 1, dtype=torch.long)
    tok[:n, 0], pos[:n, 0] = torch.tensor(tokens), torch.tensor(positions)
    for step in range(steps):
        logits = runner.step(pool, tok.to(dev), pos.to(dev), blocks)
        chosen = choose(logits)
        yield chosen
        tok[:n, 0] = torch.tensor(chosen)
        pos[:n] += 1
