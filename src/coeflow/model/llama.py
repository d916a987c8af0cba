"""The Llama decoder family in one file (Llama, Mistral, Qwen2).

Module and parameter names equal the Hugging Face ones, so a checkpoint's tensors drop into
the skeleton by name. Attention always reads a key/value store addressed by *slot* and is
masked by each slot's position (-1 = empty), which makes prefill, decode, left-padded batches
and sliding windows one code path, and lets a compiled decode step keep fixed shapes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coeflow.model import kernels
from coeflow.model.config import ModelConfig, RopeConfig
from coeflow.model.kernels import gpu_gemv


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


class Linear(nn.Linear):
    """nn.Linear, except in a compiled decode step on the CPU, where the weight is streamed:

    - one row (batch-1 decode) is written as multiply-and-reduce, which Inductor emits as one
      loop over the weight (MKL's GEMV read weights at under half of this machine's memory
      bandwidth);
    - 2 to 8 rows, with `cpu_kernel` set (`use_cpu_kernel`), go to `coeflow::cpu_linear`, an
      AVX-512 kernel that reads each weight once for all rows (MKL's small-M GEMMs reach
      neither bandwidth nor compute here); so does one row on weights large enough to
      repay the call (KERNEL_ROW_MIN_BYTES), where the kernel beats Inductor's loop (its
      bf16 dot products; in fp32, its stream past the caches). Layers that read the same
      input go together (`linears`).

    On a GPU, one row goes to coeflow's Triton kernel where `choose_gemv` measured it faster
    than cuBLAS for this weight's shape (`gemv`). Eagerly, and otherwise, it is `F.linear`
    (BENCHMARKS.md, decode)."""

    cpu_kernel = False
    gemv: gpu_gemv.Config | None = None  # choose_gemv

    def forward(self, x: Tensor) -> Tensor:
        if gpu_gemv.takes(x, self.weight, self.bias, self.gemv):
            return gpu_gemv.linear(x, self.weight, self.bias, self.gemv)
        if x.device.type == "cpu" and torch.compiler.is_compiling():
            x2 = x.reshape(-1, x.shape[-1])
            if kernel_takes(x2, (self,)):
                return self._finish(kernels.cpu_linear(x2, self.weight), x)
            if x2.shape[0] == 1:
                return self._finish((self.weight.float() * x2.float()).sum(-1), x)
        return F.linear(x, self.weight, self.bias)

    def _finish(self, y: Tensor, x: Tensor) -> Tensor:
        """float32 rows [M, out] of x @ w.T -> x's dtype and shape, bias added."""
        y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], -1)


def linears(x: Tensor, *layers: Linear, joined: tuple[Tensor | None, Tensor | None] = (None, None),
            gemv: gpu_gemv.Config | None = None) -> list[Tensor]:
    """`[layer(x) for layer in layers]`, for layers that read the same x (q, k, v; gate, up).

    On the CPU, where the kernel takes them, one call computes them all: one dispatch and one
    parallel region instead of one per layer (a bf16 decode step of the medium model makes 49
    calls instead of 85). On a GPU, with `joined` (the layers' weights and biases as one
    matrix, `adjacent_view`), one product: cuBLAS streams one large matrix faster than three
    small ones (q/k/v of a 7B model: 29 us instead of 37; BENCHMARKS.md, decode), through
    coeflow's Triton kernel at one row where `gemv` (`choose_gemv`) says so."""
    if x.device.type == "cpu" and torch.compiler.is_compiling():
        x2 = x.reshape(-1, x.shape[-1])
        if kernel_takes(x2, layers):
            y = kernels.cpu_linear(x2, *(m.weight for m in layers))
            parts = y.split([m.out_features for m in layers], dim=-1)
            return [m._finish(part, x) for m, part in zip(layers, parts)]
    weight, bias = joined
    if weight is not None and x.device.type in JOINED_PRODUCTS_ON:
        y = (gpu_gemv.linear(x, weight, bias, gemv) if gpu_gemv.takes(x, weight, bias, gemv)
             else F.linear(x, weight, bias))
        return list(y.split([m.out_features for m in layers], dim=-1))
    return [m(x) for m in layers]


# Devices where `linears` uses joined weights. Not the CPU: its compiled step reads a group in
# one kernel call already, and its eager products stay the same products as transformers'.
JOINED_PRODUCTS_ON = ("cuda",)


def adjacent_view(parts: list[Tensor | None]) -> Tensor | None:
    """`torch.cat(parts)` without a copy where the parts already lie back to back in one
    storage (as the store and `load_weights` lay out a group's weights), else None."""
    first = parts[0]
    if first is None or first.is_meta:
        return None
    offset = first.storage_offset()
    for p in parts:
        if (p is None or not p.is_contiguous() or p.dtype != first.dtype or p.device != first.device
                or p.shape[1:] != first.shape[1:] or p.storage_offset() != offset
                or p.untyped_storage().data_ptr() != first.untyped_storage().data_ptr()):
            return None
        offset += p.numel()
    shape = (sum(p.shape[0] for p in parts), *first.shape[1:])
    return first.as_strided(shape, torch.empty(shape, device="meta").stride())  # contiguous


def join_groups(model: nn.Module) -> tuple[bool, ...]:
    """Give each attention and MLP block its joined weights (q/k/v, gate/up; `linears`) where
    its attached tensors allow, None elsewhere. Returns which blocks have them: compiled steps
    differ with and without (part of coeflow.engine's layout key)."""
    joined = []
    for m in model.modules():
        if isinstance(m, (Attention, MLP)):
            layers = m.joinable()
            w = adjacent_view([l.weight for l in layers])
            b = adjacent_view([l.bias for l in layers]) if layers[0].bias is not None else None
            if w is None or (layers[0].bias is not None and b is None):
                w = b = None
            m.joined_weight, m.joined_bias = w, b
            joined.append(w is not None)
    return tuple(joined)


def choose_gemv(model: nn.Module) -> tuple:
    """For each product a decode step makes at one row on a GPU (the joined groups, the
    other linear layers), whether it runs through coeflow's Triton kernel, and how: the
    fastest measured on this device for its shape (`gpu_gemv.fastest`), or cuBLAS (None).
    Call after `join_groups`. Returns the choices (compiled steps differ with them: part of
    coeflow.engine's layout key)."""
    def pick(w: Tensor | None, b: Tensor | None) -> gpu_gemv.Config | None:
        if (w is None or w.is_meta or w.stride(-1) != 1 or (b is not None and b.stride(-1) != 1)
                or w.numel() >= 2**31):  # the kernel's offsets are 32-bit
            return None
        return gpu_gemv.fastest(w.shape[0], w.shape[1], w.dtype, w.device, b is not None)

    chosen, in_groups = [], set()
    for m in model.modules():
        if isinstance(m, (Attention, MLP)):
            m.joined_gemv = pick(m.joined_weight, m.joined_bias)
            chosen.append(m.joined_gemv)
            if m.joined_weight is not None:
                in_groups.update(id(layer) for layer in m.joinable())
    for m in model.modules():
        if isinstance(m, Linear):
            m.gemv = None if id(m) in in_groups else pick(m.weight, m.bias)
            chosen.append(m.gemv)
    if any(c is not None for c in chosen):
        gpu_gemv.register()  # before the step that calls the op is traced
    return tuple(chosen)


# One row goes to the kernel only for weights this large (together, for a group of
# `linears`): from ~1 MB (~30 us to stream) the kernel's faster stream repays its call (~7 us
# through the dispatcher, more for the first bytes of each stream). In bf16 Inductor's loop
# is bound by the bf16 widening (~25 GB/s here); in fp32 it reads as fast as memory allows
# but, unlike the kernel, through the caches, so it evicts the interpreter's data (a medium
# fp32 step's output head: 1.6-2.0 ms through the kernel, 1.7-2.4 through Inductor's loop;
# BENCHMARKS.md, decode, session 9).
KERNEL_ROW_MIN_BYTES = 1 << 20


def kernel_takes(x2: Tensor, layers: tuple[Linear, ...]) -> bool:
    """Whether a compiled CPU step sends `layers` (all reading the rows x2) to the kernel."""
    if not layers[0].cpu_kernel or not kernels.supports(x2, *(m.weight for m in layers)):
        return False
    if x2.shape[0] > 1:
        return True
    nbytes = sum(m.weight.numel() * m.weight.element_size() for m in layers)
    return nbytes >= KERNEL_ROW_MIN_BYTES


def use_cpu_kernel(model: nn.Module, on: bool) -> None:
    """Route `model`'s linear layers, and its decoder layers where `coeflow::decoder_layer`
    takes them, through the CPU kernels in compiled steps (or back). Only before the first
    compiled step: the engine's step does not guard the skeleton's attributes
    (coeflow.engine.engine._own_step), so a later change would not recompile."""
    for m in model.modules():
        if isinstance(m, (Linear, DecoderLayer)):
            m.cpu_kernel = on


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, window: int | None):
        super().__init__()
        q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.q_proj = Linear(cfg.hidden_size, q, bias=cfg.qkv_bias)
        self.k_proj = Linear(cfg.hidden_size, kv, bias=cfg.qkv_bias)
        self.v_proj = Linear(cfg.hidden_size, kv, bias=cfg.qkv_bias)
        self.o_proj = Linear(q, cfg.hidden_size, bias=cfg.o_bias)
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.window = window
        self.register_buffer("joined_weight", None, persistent=False)  # join_groups
        self.register_buffer("joined_bias", None, persistent=False)
        self.joined_gemv: gpu_gemv.Config | None = None  # choose_gemv

    def joinable(self) -> list[Linear]:
        return [self.q_proj, self.k_proj, self.v_proj]

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, q_pos: Tensor, k_cache: Tensor,
                v_cache: Tensor, slot_pos: Tensor, slots: Tensor) -> Tensor:
        """x [B,T,D]; q_pos [B,T] positions of x; caches [B,Hkv,S,hd]; slot_pos [B,S] position
        held by each slot after this step's write (-1 = empty); slots [T] where x's keys go."""
        b, t, _ = x.shape
        q, k, v = linears(x, self.q_proj, self.k_proj, self.v_proj,
                          joined=(self.joined_weight, self.joined_bias), gemv=self.joined_gemv)
        q = q.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k_cache.index_copy_(2, slots, k)
        v_cache.index_copy_(2, slots, v)
        kp, qp = slot_pos[:, None, None, :], q_pos[:, None, :, None]
        mask = (kp >= 0) & (kp <= qp)
        if self.window is not None:
            mask = mask & (qp - kp < self.window)
        if t == 1 and x.device.type in DECODE_ATTENTION_ON and torch.compiler.is_compiling():
            y = _decode_attention(q, k_cache, v_cache, mask)
        else:
            y = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask,
                                               enable_gqa=self.num_kv_heads != self.num_heads)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


# Devices whose compiled decode steps use `_decode_attention` rather than the SDPA kernel.
DECODE_ATTENTION_ON = ("cpu",)


def _decode_attention(q: Tensor, k_cache: Tensor, v_cache: Tensor, mask: Tensor) -> Tensor:
    """One query token per row, written as multiply-reduce and softmax so that Inductor fuses
    it into its own loops on the CPU: the flash-attention kernel costs ~130 us per call at
    decode shapes (measured: 1.5 ms of a 9.4 ms medium bf16 step), the fused loops a few.
    fp32 inside, as the flash kernel. q [B,H,1,hd]; caches [B,Hkv,S,hd]; mask [B,1,1,S]."""
    b, h, _, d = q.shape
    hkv = k_cache.shape[1]
    qg = q.float().view(b, hkv, h // hkv, 1, d)  # query heads grouped by the kv head they share
    scores = (qg * k_cache.float()[:, :, None]).sum(-1) * d ** -0.5  # [B,Hkv,G,S]
    scores = scores.masked_fill(~mask[:, :, None, 0], float("-inf"))
    probs = scores.softmax(-1)
    y = (probs[..., None] * v_cache.float()[:, :, None]).sum(-2)  # [B,Hkv,G,hd]
    return y.view(b, h, 1, d).to(q.dtype)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.up_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)
        self.register_buffer("joined_weight", None, persistent=False)  # join_groups
        self.register_buffer("joined_bias", None, persistent=False)
        self.joined_gemv: gpu_gemv.Config | None = None  # choose_gemv

    def joinable(self) -> list[Linear]:
        return [self.gate_proj, self.up_proj]

    def forward(self, x: Tensor) -> Tensor:
        gate, up = linears(x, self.gate_proj, self.up_proj, joined=(self.joined_weight, self.joined_bias),
                           gemv=self.joined_gemv)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    """On the CPU, with `cpu_kernel` set (`use_cpu_kernel`), a compiled decode step runs the
    whole layer as one call of `coeflow::decoder_layer` where it takes the layer
    (`_layer_kernel_takes`): one op instead of ~10 kernels, each a parallel region of its own
    and a call from Inductor's Python wrapper (BENCHMARKS.md, decode)."""

    cpu_kernel = False

    def __init__(self, cfg: ModelConfig, window: int | None):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, window)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, q_pos: Tensor, k_cache: Tensor,
                v_cache: Tensor, slot_pos: Tensor, slots: Tensor) -> Tensor:
        if _layer_kernel_takes(self, x, k_cache):
            a, m, b = self.self_attn, self.mlp, x.shape[0]
            qkv = a.joinable()
            return kernels.decoder_layer(
                x, self.input_layernorm.weight, [l.weight for l in qkv],
                [l.bias for l in qkv] if qkv[0].bias is not None else [], a.o_proj.weight,
                self.post_attention_layernorm.weight, [m.gate_proj.weight, m.up_proj.weight],
                m.down_proj.weight, k_cache, v_cache, slot_pos, q_pos, slots, cos.reshape(b, -1),
                sin.reshape(b, -1), a.num_heads, self.input_layernorm.eps, a.window or 0)
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, q_pos, k_cache, v_cache, slot_pos, slots)
        return x + self.mlp(self.post_attention_layernorm(x))


def _layer_kernel_takes(layer: DecoderLayer, x: Tensor, k_cache: Tensor) -> bool:
    """Whether a compiled CPU step runs `layer` for x through `coeflow::decoder_layer`."""
    return (torch.compiler.is_compiling() and x.device.type == "cpu" and x.dim() == 3 and x.shape[1] == 1
            and layer_kernel_fits(layer, x.shape[0], x.dtype, k_cache))


def layer_kernel_fits(layer: DecoderLayer, rows: int, dtype: torch.dtype, k_cache: Tensor) -> bool:
    """Whether `coeflow::decoder_layer` takes `layer` for `rows` tokens of `dtype`, one a row,
    with `cpu_kernel` set: 1 to 8 rows, fp32 or bf16, no o or MLP biases, weights with
    contiguous rows."""
    if not (layer.cpu_kernel and 1 <= rows <= kernels.MAX_ROWS and dtype in kernels.DTYPES
            and k_cache.shape[0] == rows and k_cache.dtype == dtype and kernels.has_decoder_layer()):
        return False
    a, m = layer.self_attn, layer.mlp
    linear = [*a.joinable(), a.o_proj, m.gate_proj, m.up_proj, m.down_proj]
    norms = (layer.input_layernorm, layer.post_attention_layernorm)
    return (a.o_proj.bias is None and all(l.bias is None for l in m.joinable() + [m.down_proj])
            and all(l.weight.dtype == dtype and l.weight.stride(1) == 1 for l in linear)
            and all(l.bias is None or l.bias.dtype == dtype for l in a.joinable())
            and all(n.weight.dtype == dtype for n in norms) and norms[0].eps == norms[1].eps)


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
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(cfg.rope, cfg.head_dim), persistent=False)

    def forward_cached(self, tokens: Tensor, q_pos: Tensor, k_caches: list[Tensor],
                       v_caches: list[Tensor], slot_pos: Tensor, slots: Tensor,
                       last_only: bool = False, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """One step over a KV store: writes tokens' keys at `slots`, returns float32 logits
        ([B,T,V], or [B,1,V] for the last position only). `rope`: cos and sin tables
        [positions, head_dim] (`rope_cos_sin` of every position the store holds), read at
        q_pos instead of computing the angles in the step: Inductor inlines that computation,
        sines and cosines included, into every kernel that reads it, on the CPU into the
        attention's loop over the cache, once per cached key (0.20 ms of a 6.0 ms medium bf16
        step; BENCHMARKS.md, decode)."""
        h = self._run(tokens, q_pos, k_caches, v_caches, slot_pos, slots, rope)
        return self.lm_head(h[:, -1:] if last_only else h).float()

    def forward(self, tokens: Tensor) -> Tensor:
        """Float32 logits [B,T,V] of a full causal pass over `tokens` (no padding, no cache)."""
        return self.lm_head(self.hidden_states(tokens)).float()

    def hidden_states(self, tokens: Tensor) -> Tensor:
        """Final normed hidden states [B,T,D] of a full causal pass (no padding, no cache)."""
        b, t = tokens.shape
        cfg, dev, dtype = self.config, tokens.device, self.model.embed_tokens.weight.dtype
        kc = [torch.empty(b, cfg.num_kv_heads, t, cfg.head_dim, device=dev, dtype=dtype)
              for _ in range(cfg.num_layers)]
        vc = [torch.empty_like(k) for k in kc]
        pos = torch.arange(t, device=dev).expand(b, t)
        return self._run(tokens, pos, kc, vc, pos, torch.arange(t, device=dev))

    def _run(self, tokens: Tensor, q_pos: Tensor, k_caches: list[Tensor], v_caches: list[Tensor],
             slot_pos: Tensor, slots: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        x = self.model.embed_tokens(tokens)
        if rope is None:
            cos, sin = rope_cos_sin(q_pos, self.inv_freq, x.dtype)
        else:
            cos, sin = rope[0][q_pos], rope[1][q_pos]
        cos, sin = cos[:, None], sin[:, None]  # [B,1,T,hd], broadcast over heads
        for layer, kc, vc in zip(self.model.layers, k_caches, v_caches):
            x = layer(x, cos, sin, q_pos, kc, vc, slot_pos, slots)
        return self.model.norm(x)
