"""A preallocated key/value store for a batch, addressed by slot, with the rotary tables of
the positions it can hold (`Transformer.forward_cached`'s `rope`).

It is an nn.Module so its tensors are buffers: compiled steps (and CUDA graphs) treat them
as static inputs that the step updates in place."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from coeflow.model.config import ModelConfig
from coeflow.model.llama import rope_cos_sin, rope_inv_freq


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
