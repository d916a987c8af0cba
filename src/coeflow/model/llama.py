"""The Llama decoder family in one file (Llama, Mistral, Qwen2): the maths only.

Module and parameter names equal the Hugging Face ones, so a checkpoint's tensors drop into
the skeleton by name. Attention always reads a paged key/value store: each row of a batch has a
block table, and the key of the token at position p sits in block `table[p // block_size]`,
slot `p % block_size`. A query attends to the keys at positions up to its own (and within the
sliding window), which makes prefill, decode, batches of unequal lengths and sliding windows one
code path, and lets a compiled decode step keep fixed shapes.

Faster implementations of a product or a layer for one device live with the engine
(coeflow.engine.layers), as subclasses that override `Attention.project`, `Attention.attend`,
`MLP.gate_up` or a module's `forward`; they are swapped in once, when a step runner is built."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coeflow.model.config import ModelConfig, RopeConfig
from coeflow.model.quant import QuantLinear


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_inv_freq(rope: RopeConfig, head_dim: int) -> Tensor:
    inv = 1.0 / (rope.theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if rope.type == "linear":
        inv = inv / rope.factor
    elif rope.type == "llama3":
        # Llama 3.1: leave high frequencies alone, divide low ones by `factor`, blend between.
        low_wavelen = rope.original_max_position_embeddings / rope.low_freq_factor
        high_wavelen = rope.original_max_position_embeddings / rope.high_freq_factor
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / rope.factor, inv)
        smooth = (rope.original_max_position_embeddings / wavelen - rope.low_freq_factor) / (
            rope.high_freq_factor - rope.low_freq_factor)
        blended = (1 - smooth) * scaled / rope.factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv = torch.where(medium, blended, scaled)
    return inv


def rope_cos_sin(pos: Tensor, inv_freq: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos and sin of the rotary angles at positions `pos` [...], each [..., head_dim]."""
    freqs = pos[..., None].float() * inv_freq.float()
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, window: int | None):
        super().__init__()
        q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, q, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, kv, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, kv, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(q, cfg.hidden_size, bias=cfg.o_bias)
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.window = window

    def joinable(self) -> list[nn.Linear]:
        """The products that read the same input, in the order `project` returns them."""
        return [self.q_proj, self.k_proj, self.v_proj]

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def attend(self, q: Tensor, k_cache: Tensor, v_cache: Tensor, mask: Tensor) -> Tensor:
        """q [B,H,T,hd] over the whole cache [B,Hkv,S,hd]; mask [B,1,T,S]."""
        return F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask,
                                              enable_gqa=self.num_kv_heads != self.num_heads)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, positions: Tensor, k_pool: Tensor,
                v_pool: Tensor, blocks: Tensor) -> Tensor:
        """x [B,T,D] at `positions` [B,T]; pools [N,Hkv,block_size,hd]; blocks [B,nb] each
        row's block table. Writes x's keys and values, then attends over the row's blocks."""
        b, t, _ = x.shape
        q, k, v = self.project(x)
        q = q.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.num_kv_heads, self.head_dim)
        v = v.view(b, t, self.num_kv_heads, self.head_dim)
        q = q * cos + rotate_half(q) * sin
        k = k * cos.transpose(1, 2) + rotate_half(k) * sin.transpose(1, 2)
        size = k_pool.shape[2]
        block, slot = blocks.gather(1, positions // size), positions % size
        k_pool[block, :, slot] = k
        v_pool[block, :, slot] = v
        keys = k_pool[blocks].transpose(1, 2).reshape(b, self.num_kv_heads, -1, self.head_dim)
        values = v_pool[blocks].transpose(1, 2).reshape(b, self.num_kv_heads, -1, self.head_dim)
        kp = torch.arange(keys.shape[2], device=x.device)[None, None, None, :]
        qp = positions[:, None, :, None]
        mask = kp <= qp
        if self.window is not None:
            mask = mask & (qp - kp < self.window)
        y = self.attend(q, keys, values, mask)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def joinable(self) -> list[nn.Linear]:
        """The products that read the same input, in the order `gate_up` returns them."""
        return [self.gate_proj, self.up_proj]

    def gate_up(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.gate_proj(x), self.up_proj(x)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, window: int | None):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, window)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, positions: Tensor, k_pool: Tensor,
                v_pool: Tensor, blocks: Tensor) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, positions, k_pool, v_pool, blocks)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    """`model.*` in Hugging Face names: embeddings, layers, final norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, w) for w in cfg.sliding_windows)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = Body(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(cfg.rope, cfg.head_dim), persistent=False)
        if cfg.quant is not None:  # quantized layers hold packed weights under their own names
            for name, m in list(self.named_modules()):
                if type(m) is nn.Linear and cfg.quantized(name):
                    parent, _, attr = name.rpartition(".")
                    setattr(self.get_submodule(parent), attr,
                            QuantLinear(m.in_features, m.out_features, m.bias is not None, cfg.quant))

    def forward_cached(self, tokens: Tensor, positions: Tensor, k_pools: list[Tensor],
                       v_pools: list[Tensor], blocks: Tensor, last_only: bool = False,
                       rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """One pass over a paged KV store (see the module's docstring): `tokens` [B,T] at
        `positions` [B,T], rows' block tables `blocks` [B,nb]; writes the tokens' keys and
        returns float32 logits ([B,T,V], or [B,1,V] for the last position only). `rope`: cos
        and sin tables [positions, head_dim] (`rope_cos_sin` of every position the store
        holds), read at the positions instead of computing the angles in the step, where a
        compiler would inline their computation into every kernel that reads them."""
        h = self._run(tokens, positions, k_pools, v_pools, blocks, rope)
        return self.lm_head(h[:, -1:] if last_only else h).float()

    def forward(self, tokens: Tensor) -> Tensor:
        """Float32 logits [B,T,V] of a full causal pass over `tokens` (no padding, no cache)."""
        return self.lm_head(self.hidden_states(tokens)).float()

    def hidden_states(self, tokens: Tensor) -> Tensor:
        """Final normed hidden states [B,T,D] of a full causal pass (no padding, no cache)."""
        b, t = tokens.shape
        cfg, dev, dtype = self.config, tokens.device, self.model.embed_tokens.weight.dtype
        # one block a row, as long as the sequence (block 0 is padding's, unused here)
        kc = [torch.zeros(b + 1, cfg.num_kv_heads, t, cfg.head_dim, device=dev, dtype=dtype)
              for _ in range(cfg.num_layers)]
        vc = [torch.zeros_like(k) for k in kc]
        pos = torch.arange(t, device=dev).expand(b, t)
        return self._run(tokens, pos, kc, vc, torch.arange(1, b + 1, device=dev)[:, None])

    def _run(self, tokens: Tensor, positions: Tensor, k_pools: list[Tensor], v_pools: list[Tensor],
             blocks: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        x = self.model.embed_tokens(tokens)
        if rope is None:
            cos, sin = rope_cos_sin(positions, self.inv_freq, x.dtype)
        else:
            cos, sin = rope[0][positions], rope[1][positions]
        cos, sin = cos[:, None], sin[:, None]  # [B,1,T,hd], broadcast over heads
        for layer, kc, vc in zip(self.model.layers, k_pools, v_pools):
            x = layer(x, cos, sin, positions, kc, vc, blocks)
        return self.model.norm(x)
