"""The CPU's layers for compiled decode steps, where every step streams all the weights once:

- one row of a product (batch-1 decode) as multiply-and-reduce, which Inductor emits as one
  loop streaming the weight at the memory's rate (MKL's GEMV reads it far slower);
- attention of one query token as multiply-reduce and softmax, which Inductor fuses into its
  own loops (the flash-attention kernel's fixed cost dominates at decode shapes);
- quantized weights (int8, int4) read packed by `coeflow::quant_linear` (AVX2 or AVX-512,
  coeflow.model.kernels.quant) for 1 to 8 rows; more rows (prefill) dequantize;
- with coeflow's AVX-512 kernels (coeflow.model.kernels): 2 to 8 rows, and one row on weights
  large enough to repay the call, through `coeflow::cpu_linear`, which reads each weight once
  for all rows (products reading the same input in one call); and a whole decoder layer as one
  `coeflow::decoder_layer` call where it takes the layer, instead of ~10 kernels each with a
  parallel region and a call from Inductor's wrapper."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coeflow.engine.layers import swap_classes
from coeflow.model import kernels
from coeflow.model.kernels import quant as quant_kernel
from coeflow.model.llama import MLP, Attention, DecoderLayer, Transformer
from coeflow.model.quant import QuantLinear

# One row goes to the kernel only for weights this large (together, for a group read from one
# input): below it the call's fixed cost outweighs the kernel's faster stream.
KERNEL_ROW_MIN_BYTES = 1 << 20


def _finish(y: Tensor, x: Tensor, bias: Tensor | None) -> Tensor:
    """float32 rows [M, out] of x @ w.T -> x's dtype and shape, bias added."""
    y = y.to(x.dtype)
    if bias is not None:
        y = y + bias
    return y.view(*x.shape[:-1], -1)


def kernel_takes(rows: Tensor, layers: tuple[nn.Linear, ...]) -> bool:
    """Whether `coeflow::cpu_linear` computes `layers` (all reading `rows`, [M, K])."""
    if any(isinstance(m, QuantLinear) for m in layers) or not kernels.supports(rows, *(m.weight for m in layers)):
        return False
    if rows.shape[0] > 1:
        return True
    return sum(m.weight.numel() * m.weight.element_size() for m in layers) >= KERNEL_ROW_MIN_BYTES


def _packed_products(x: Tensor, layers: list[nn.Module]) -> list[Tensor] | None:
    """`[layer(x) for layer in layers]` from one `coeflow::quant_linear` call, or None where it
    does not take them (not all quantized alike, too many rows)."""
    rows = x.reshape(-1, x.shape[-1])
    if not all(isinstance(m, QuantLinear) and m.bits == layers[0].bits for m in layers):
        return None
    packed, scales = [m.weight_packed for m in layers], [m.weight_scale for m in layers]
    if not quant_kernel.supports(rows, packed, scales):
        return None
    y = quant_kernel.quant_linear(rows, packed, scales, layers[0].bits)
    parts = y.split([m.out_features for m in layers], dim=-1)
    return [_finish(part, x, m.bias) for m, part in zip(layers, parts)]


def _kernel_products(x: Tensor, layers: list[nn.Module]) -> list[Tensor] | None:
    """`[layer(x) for layer in layers]` from one kernel call (`coeflow::quant_linear` for
    quantized layers, `coeflow::cpu_linear` for dense ones), or None where neither takes them."""
    packed = _packed_products(x, layers)
    if packed is not None:
        return packed
    rows = x.reshape(-1, x.shape[-1])
    if not kernel_takes(rows, tuple(layers)):
        return None
    y = kernels.cpu_linear(rows, *(m.weight for m in layers))
    parts = y.split([m.out_features for m in layers], dim=-1)
    return [_finish(part, x, m.bias) for m, part in zip(layers, parts)]


def decode_attention(q: Tensor, k_cache: Tensor, v_cache: Tensor, mask: Tensor) -> Tensor:
    """Attention of one query token a row, as multiply-reduce and softmax (fp32 inside, as the
    flash kernel). q [B,H,1,hd]; caches [B,Hkv,S,hd]; mask [B,1,1,S]."""
    b, h, _, d = q.shape
    hkv = k_cache.shape[1]
    qg = q.float().view(b, hkv, h // hkv, 1, d)  # query heads grouped by the kv head they share
    scores = (qg * k_cache.float()[:, :, None]).sum(-1) * d ** -0.5  # [B,Hkv,G,S]
    scores = scores.masked_fill(~mask[:, :, None, 0], float("-inf"))
    probs = scores.softmax(-1)
    y = (probs[..., None] * v_cache.float()[:, :, None]).sum(-2)  # [B,Hkv,G,hd]
    return y.view(b, h, 1, d).to(q.dtype)


class StreamedLinear(nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if rows.shape[0] == 1:
            return _finish((self.weight.float() * rows.float()).sum(-1), x, self.bias)
        return F.linear(x, self.weight, self.bias)


class KernelLinear(StreamedLinear):
    def forward(self, x: Tensor) -> Tensor:
        y = _kernel_products(x, [self])
        return y[0] if y is not None else super().forward(x)


class DecodeAttention(Attention):
    def attend(self, q: Tensor, k_cache: Tensor, v_cache: Tensor, mask: Tensor) -> Tensor:
        if q.shape[2] != 1:
            return super().attend(q, k_cache, v_cache, mask)
        return decode_attention(q, k_cache, v_cache, mask)


class PackedLinear(QuantLinear):
    """A quantized layer whose decode rows read the packed weights (`coeflow::quant_linear`)."""

    def forward(self, x: Tensor) -> Tensor:
        y = _packed_products(x, [self])
        return y[0] if y is not None else super().forward(x)


class KernelAttention(DecodeAttention):
    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        y = _kernel_products(x, self.joinable())
        return tuple(y) if y is not None else super().project(x)


class KernelMLP(MLP):
    def gate_up(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = _kernel_products(x, self.joinable())
        return tuple(y) if y is not None else super().gate_up(x)


class KernelDecoderLayer(DecoderLayer):
    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, positions: Tensor, k_pool: Tensor,
                v_pool: Tensor, blocks: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != 1 or not layer_kernel_fits(self, x.shape[0], x.dtype, k_pool):
            return super().forward(x, cos, sin, positions, k_pool, v_pool, blocks)
        a, m, b = self.self_attn, self.mlp, x.shape[0]
        qkv = a.joinable()
        return kernels.decoder_layer(
            x, self.input_layernorm.weight, [l.weight for l in qkv],
            [l.bias for l in qkv] if qkv[0].bias is not None else [], a.o_proj.weight,
            self.post_attention_layernorm.weight, [m.gate_proj.weight, m.up_proj.weight],
            m.down_proj.weight, k_pool, v_pool, blocks, positions, cos.reshape(b, -1),
            sin.reshape(b, -1), a.num_heads, self.input_layernorm.eps, a.window or 0)


def layer_kernel_fits(layer: DecoderLayer, rows: int, dtype: torch.dtype, k_pool: Tensor) -> bool:
    """Whether `coeflow::decoder_layer` takes `layer` for `rows` tokens of `dtype`, one a row:
    the op loaded, 1 to 8 rows, fp32 or bf16, no o or MLP biases, weights with contiguous rows."""
    if not (1 <= rows <= kernels.MAX_ROWS and dtype in kernels.DTYPES and k_pool.dtype == dtype
            and k_pool.stride(3) == 1 and kernels.has_decoder_layer()):
        return False
    a, m = layer.self_attn, layer.mlp
    linear = [*a.joinable(), a.o_proj, m.gate_proj, m.up_proj, m.down_proj]
    if any(isinstance(l, QuantLinear) for l in linear):
        return False
    norms = (layer.input_layernorm, layer.post_attention_layernorm)
    return (a.o_proj.bias is None and all(l.bias is None for l in m.joinable() + [m.down_proj])
            and all(l.weight.dtype == dtype and l.weight.stride(1) == 1 for l in linear)
            and all(l.bias is None or l.bias.dtype == dtype for l in a.joinable())
            and all(n.weight.dtype == dtype for n in norms) and norms[0].eps == norms[1].eps)


class CpuLayers:
    """The CPU's decode layers; `kernels`: use coeflow's AVX-512 kernels (the caller has loaded
    them: `coeflow.model.kernels.load`). Quantized layers read their packed weights wherever
    the quantized kernel builds."""

    def __init__(self, kernels: bool) -> None:
        self.kernels = kernels

    def swap(self, model: Transformer) -> None:
        if model.config.quant is not None and quant_kernel.load():
            # q/k/v and gate/up of quantized layers in one call each (KernelAttention, KernelMLP);
            # the AVX-512 kernels take none of a quantized model's layers but a dense head
            swap_classes(model, {QuantLinear: PackedLinear, Attention: KernelAttention, MLP: KernelMLP,
                                 nn.Linear: KernelLinear if self.kernels else StreamedLinear})
        elif self.kernels:
            swap_classes(model, {nn.Linear: KernelLinear, Attention: KernelAttention, MLP: KernelMLP,
                                 DecoderLayer: KernelDecoderLayer})
        else:
            swap_classes(model, {nn.Linear: StreamedLinear, Attention: DecodeAttention})

    def after_attach(self, model: Transformer) -> tuple:
        return ()
