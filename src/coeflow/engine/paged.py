"""The engine's key/value store, paged: every layer's keys and values in fixed-size blocks of one
pool per engine. A sequence owns a list of blocks (its block table); the token at position p
lives in block `table[p // block_size]`, slot `p % block_size`. So a sequence takes room as it
grows, not the room of the longest sequence it is batched with, and attention masks by position
alone (a key at a position after the query's is not read).

Block 0 is never handed out: the padding rows of a batch point at it, write their keys there
and read them back, harmlessly.

Prefix reuse: a block filled wholly by a prompt is registered under a digest chained over
everything before it (and the expert's key: keys depend on the weights), so a later prompt
that starts the same way takes those blocks instead of prefilling them. A registered block is
never written again (a sequence reuses only blocks before the one its last prompt token is
in, and decodes past its prompt); when no sequence uses it, it stays cached, and is taken
back, least recently used first, only when the free list is empty.

The pool is an nn.Module so its tensors are buffers: compiled steps and CUDA graphs take them
as inputs that a step updates in place."""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict

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
        self._cached: dict[bytes, int] = {}  # prefix digest -> block
        self._digest: dict[int, bytes] = {}  # block -> its digest, for registered blocks
        self._users: dict[int, int] = {}  # registered block -> sequences using it
        self._idle: OrderedDict[int, None] = OrderedDict()  # registered blocks nobody uses, LRU first

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
        """Blocks a sequence may take now: the free ones and the cached ones no sequence uses."""
        return len(self._free) + len(self._idle)

    @property
    def cached_blocks(self) -> int:
        return len(self._digest)

    def blocks_for(self, tokens: int) -> int:
        return math.ceil(tokens / self.block_size)

    def allocate(self, n: int) -> list[int]:
        """`n` blocks, now the caller's: free ones first, then cached ones nobody uses (least
        recently used first, forgotten); refused when fewer are there."""
        if n > self.free_blocks:
            raise InvalidRequestError(f"the KV cache has {self.free_blocks} free blocks of {self.block_size} "
                                      f"tokens; {n} are needed")
        out = []
        for _ in range(n):
            if self._free:
                out.append(self._free.pop())
            else:
                block, _ = self._idle.popitem(last=False)
                del self._cached[self._digest.pop(block)], self._users[block]
                out.append(block)
        return out

    def release(self, blocks: list[int]) -> None:
        for b in reversed(blocks):
            if b in self._users:
                self._users[b] -= 1
                if self._users[b] == 0:
                    self._idle[b] = None
            else:
                self._free.append(b)

    def digests(self, key: str, tokens: list[int]) -> list[bytes]:
        """The chained digest of each whole block of `tokens`, for the expert `key`."""
        out, prev = [], hashlib.blake2b(key.encode(), digest_size=16).digest()
        for i in range(len(tokens) // self.block_size):
            chunk = tokens[i * self.block_size:(i + 1) * self.block_size]
            prev = hashlib.blake2b(prev + b"".join(t.to_bytes(4, "little") for t in chunk), digest_size=16).digest()
            out.append(prev)
        return out

    def reuse(self, digests: list[bytes]) -> list[int]:
        """The cached blocks of the longest run of `digests` from the start, now also the
        caller's (release them as any other)."""
        out = []
        for d in digests:
            block = self._cached.get(d)
            if block is None:
                break
            self._users[block] += 1
            self._idle.pop(block, None)
            out.append(block)
        return out

    def register(self, block: int, digest: bytes) -> None:
        """A block the caller owns and has filled: cached under `digest` from now on (unless
        another block holds that prefix already)."""
        if digest not in self._cached and block not in self._digest:
            self._cached[digest], self._digest[block], self._users[block] = block, digest, 1

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
