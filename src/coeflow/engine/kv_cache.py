"""A preallocated key/value store for a batch, addressed by slot, with the rotary tables of
the positions it can hold (`Transformer.forward_cached`'s `rope`); and the caches an engine
keeps for the batch and length buckets it has met.

It is an nn.Module so its tensors are buffers: compiled steps (and CUDA graphs) treat them
as static inputs that the step updates in place."""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import Tensor, nn

from coeflow.model.config import ModelConfig
from coeflow.model.llama import rope_cos_sin, rope_inv_freq

log = logging.getLogger(__name__)


class KVCache(nn.Module):
    def __init__(self, cfg: ModelConfig, batch: int, seq: int, dtype: torch.dtype,
                 device: torch.device):
        super().__init__()
        self.batch, self.seq = batch, seq
        shape = (batch, cfg.num_kv_heads, seq, cfg.head_dim)
        # zeros, not empty: masked slots still meet the values in attention's matmul (0 * NaN = NaN)
        for i in range(cfg.num_layers):
            self.register_buffer(f"k{i}", torch.zeros(shape, dtype=dtype, device=device))
            self.register_buffer(f"v{i}", torch.zeros(shape, dtype=dtype, device=device))
        self.register_buffer("slot_pos", torch.full((batch, seq), -1, dtype=torch.long, device=device))
        # the engine sizes a cache for its requests' last position: every position fits
        inv_freq = rope_inv_freq(cfg.rope, cfg.head_dim).to(device)
        cos, sin = rope_cos_sin(torch.arange(seq, device=device), inv_freq, dtype)
        self.register_buffer("rope_cos", cos)
        self.register_buffer("rope_sin", sin)
        self.num_layers = cfg.num_layers

    @staticmethod
    def bytes_for(cfg: ModelConfig, batch: int, seq: int, dtype: torch.dtype) -> int:
        """`nbytes` of a cache of this shape, before allocating it."""
        kv = 2 * cfg.num_layers * batch * cfg.num_kv_heads * seq * cfg.head_dim * dtype.itemsize
        return kv + batch * seq * torch.int64.itemsize + 2 * seq * cfg.head_dim * dtype.itemsize

    def keys(self) -> list[Tensor]:
        return [getattr(self, f"k{i}") for i in range(self.num_layers)]

    def values(self) -> list[Tensor]:
        return [getattr(self, f"v{i}") for i in range(self.num_layers)]

    def rope(self) -> tuple[Tensor, Tensor]:
        return self.rope_cos, self.rope_sin

    def reset(self) -> None:
        self.slot_pos.fill_(-1)

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers())


class KVCaches:
    """The KV caches of the (batch, length) buckets met so far, kept while they fit `budget`
    bytes together with the one asked for, the least recently used going first: a server whose
    batches change size neither reallocates them nor, on a GPU, captures their graphs again.
    The one in use is always allocated, whatever its size. `on_drop` is told of each cache let go."""

    def __init__(self, cfg: ModelConfig, dtype: torch.dtype, device: torch.device, budget: int,
                 on_drop: Callable[[KVCache], None]) -> None:
        self.cfg, self.dtype, self.device, self.budget = cfg, dtype, device, budget
        self._on_drop = on_drop
        self._caches: dict[tuple[int, int], KVCache] = {}  # least recently used first

    @property
    def buckets(self) -> list[tuple[int, int]]:
        """The (batch, length) buckets kept now, least recently used first."""
        return list(self._caches)

    def get(self, batch: int, seq: int) -> KVCache:
        """An empty cache of this bucket."""
        key = (batch, seq)
        cache = self._caches.pop(key, None)
        if cache is None:
            need = KVCache.bytes_for(self.cfg, batch, seq, self.dtype)
            kept = sum(c.nbytes for c in self._caches.values())
            while self._caches and kept + need > self.budget:
                kept -= self._drop_oldest()
            cache = self._allocate(batch, seq)
        self._caches[key] = cache  # (re)inserted last: most recently used
        cache.reset()
        return cache

    def _allocate(self, batch: int, seq: int) -> KVCache:
        """A new cache; when the device refuses it, the kept ones go and it is tried once more
        (the budget is a guess at what the device can spare)."""
        try:
            return KVCache(self.cfg, batch, seq, self.dtype, self.device)
        except torch.OutOfMemoryError:
            if not self._caches:
                raise
        log.warning("out of device memory for a KV cache of batch %d x %d tokens; dropping the %d kept "
                    "for other buckets", batch, seq, len(self._caches))
        while self._caches:
            self._drop_oldest()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return KVCache(self.cfg, batch, seq, self.dtype, self.device)

    def _drop_oldest(self) -> int:
        """Let the least recently used cache go; returns its bytes."""
        old = self._caches.pop(next(iter(self._caches)))
        self._on_drop(old)
        return old.nbytes
