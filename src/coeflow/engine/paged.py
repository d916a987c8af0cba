"""The engine's key/value store, paged: every layer's keys and values in fixed-size blocks of one
pool per engine. A sequence owns a list of blocks (its block table); the token at position p
lives in block `table[p // block_size]`, slot `p % block_size`. So a sequence takes room as it
grows, not the room of the longest sequence it is batched with, and attention masks by position
alone (a key at a position after the query's is not read).

Block 0 is never handed out: the padding rows of a batch point at it, write their keys there
and read them back, harmlessly. The pool is an nn.Module so its tensors are buffers: compiled
steps and CUDA graphs take them as inputs that a step updates in place."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from coeflow.engine.sampling import InvalidRequestError
from coeflow.model.config import ModelConfig
from coeflow.model.llama import rope_cos_sin, rope_inv_freq

BLOCK_SIZE = 16  # tokens a block holds
MAX_SEQUENCES = 64  # the pool is sized for this many full-length sequences at most


class KVPool(nn.Module):
    def __init__(self, cfg: ModelConfig, num_blocks: int, dtype: torch.dtype, device: torch.device,
                 block_size: int = BLOCK_SIZE):
        super().__init__()
        if num_blocks < 2:
            raise InvalidRequestError(f"a KV pool needs at least 2 blocks (one is padding's), got {num_blocks}")
        self.num_blocks, self.block_size, self.num_layers = num_blocks, block_size, cfg.num_layers
        shape = (num_blocks, cfg.num_kv_heads, block_size, cfg.head_dim)
        # zeros, not empty: masked keys still meet the values in attention's products (0 * NaN = NaN)
        for i in range(cfg.num_layers):
            self.register_buffer(f"k{i}", torch.zeros(shape, dtype=dtype, device=device))
            self.register_buffer(f"v{i}", torch.zeros(shape, dtype=dtype, device=device))
        self.max_positions = min(cfg.max_position_embeddings, (num_blocks - 1) * block_size)
        cos, sin = rope_cos_sin(torch.arange(self.max_positions, device=device),
                                rope_inv_freq(cfg.rope, cfg.head_dim).to(device), dtype)
        self.register_buffer("rope_cos", cos)
        self.register_buffer("rope_sin", sin)
        self._free = list(range(num_blocks - 1, 0, -1))  # a stack: the lowest block comes first

    @staticmethod
    def bytes_per_block(cfg: ModelConfig, dtype: torch.dtype, block_size: int = BLOCK_SIZE) -> int:
        return 2 * cfg.num_layers * cfg.num_kv_heads * block_size * cfg.head_dim * dtype.itemsize

    @classmethod
    def for_budget(cls, cfg: ModelConfig, budget: int, dtype: torch.dtype, device: torch.device,
                   block_size: int = BLOCK_SIZE) -> "KVPool":
        """As many blocks as `budget` bytes hold, but no more than MAX_SEQUENCES sequences of the
        model's full context need (a small model's pool stays small)."""
        full = MAX_SEQUENCES * math.ceil(cfg.max_position_embeddings / block_size) + 1
        fit = budget // cls.bytes_per_block(cfg, dtype, block_size)
        return cls(cfg, max(2, min(full, fit)), dtype, device, block_size)

    @property
    def free_blocks(self) -> int:
        return len(self._free)

    def blocks_for(self, tokens: int) -> int:
        return math.ceil(tokens / self.block_size)

    def allocate(self, n: int) -> list[int]:
        """`n` free blocks, now the caller's; refused when fewer are free."""
        if n > len(self._free):
            raise InvalidRequestError(f"the KV cache has {len(self._free)} free blocks of {self.block_size} "
                                      f"tokens; {n} are needed")
        return [self._free.pop() for _ in range(n)]

    def release(self, blocks: list[int]) -> None:
        self._free.extend(reversed(blocks))

    def table(self, sequences: list[list[int]], rows: int, width: int) -> Tensor:
        """The block tables of `sequences` as one int64 tensor [rows, width] on the pool's device;
        rows and entries past them point at block 0."""
        out = torch.zeros(rows, width, dtype=torch.long)
        for i, blocks in enumerate(sequences):
            out[i, :len(blocks)] = torch.tensor(blocks, dtype=torch.long)
        return out.to(self.rope_cos.device)

    def keys(self) -> list[Tensor]:
        return [getattr(self, f"k{i}") for i in range(self.num_layers)]

    def values(self) -> list[Tensor]:
        return [getattr(self, f"v{i}") for i in range(self.num_layers)]

    def rope(self) -> tuple[Tensor, Tensor]:
        return self.rope_cos, self.rope_sin

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers())
