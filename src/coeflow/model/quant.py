"""Weight-only quantized linear layers, stored as compressed-tensors' `pack-quantized` format.

That is the format vLLM, transformers and llm-compressor read and write for W4A16 and W8A16
models, so a checkpoint `coeflow quantize` writes loads there, and theirs load here. Per layer:

- `weight_packed` int32 [out, in * bits / 32]: the signed values q in [-2^(bits-1), 2^(bits-1))
  stored as q + 2^(bits-1), element k of a row at bits k*bits.. of the row's little-endian
  words (so, as bytes, 8-bit values one a byte; 4-bit ones two a byte, the even element in the
  low nibble);
- `weight_scale` [out, in / group]: w = q * scale (symmetric: no zero point), one scale a group
  of `group` inputs, or one a row (strategy "channel");
- `weight_shape` [2]: the dense shape, which the config implies already (not read).

Only that one scheme is accepted (coeflow.quantization: any other quantization config is
refused naming what it asks for), so a checkpoint never loads into a model that computes
something else."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coeflow.quantization import QuantScheme


def quantize(w: Tensor, bits: int, group: int | None) -> tuple[Tensor, Tensor]:
    """Round-to-nearest symmetric quantization of w [out, in]: (weight_packed, weight_scale
    in w's dtype). Each group's scale maps its largest magnitude to the largest positive value."""
    out, n = w.shape
    g = group or n
    qmax = (1 << (bits - 1)) - 1
    grouped = w.float().reshape(out, n // g, g)
    scale = grouped.abs().amax(-1) / qmax
    scale = scale.to(w.dtype).float().clamp_min(torch.finfo(torch.float32).tiny)
    q = torch.round(grouped / scale[..., None]).clamp_(-qmax - 1, qmax).to(torch.int8)
    return pack(q.reshape(out, n), bits), scale.to(w.dtype)


def pack(q: Tensor, bits: int) -> Tensor:
    """Signed values [out, in] (int8) -> `weight_packed` int32 [out, in * bits / 32]."""
    return pack_unsigned((q.to(torch.int16) + (1 << (bits - 1))).to(torch.uint8), bits)


def unpack(packed: Tensor, bits: int) -> Tensor:
    """`weight_packed` int32 [out, words] -> the signed values, int8 [out, in]."""
    return (unpack_unsigned(packed, bits).to(torch.int16) - (1 << (bits - 1))).to(torch.int8)


def pack_unsigned(u: Tensor, bits: int) -> Tensor:
    """Values [out, in] in [0, 2^bits) (uint8; bits 1, 2, 4 or 8) -> int32 [out, in * bits / 32],
    element k of a row at bits k*bits.. of the row's little-endian words."""
    per = 8 // bits
    if per > 1:
        shifts = torch.arange(0, 8, bits, dtype=torch.int32)
        u = (u.view(u.shape[0], -1, per).to(torch.int32) << shifts).sum(-1).to(torch.uint8)
    return u.contiguous().view(torch.int32)


def unpack_unsigned(packed: Tensor, bits: int) -> Tensor:
    """`pack_unsigned`'s inverse: uint8 [out, in]."""
    u = packed.contiguous().view(torch.uint8)
    per = 8 // bits
    if per > 1:
        shifts = torch.arange(0, 8, bits, dtype=torch.uint8)
        u = ((u[..., None] >> shifts) & ((1 << bits) - 1)).reshape(u.shape[0], -1)
    return u


def dequantize(packed: Tensor, scale: Tensor, bits: int, dtype: torch.dtype) -> Tensor:
    """The dense weight [out, in] in `dtype`."""
    q = unpack(packed, bits)
    out, n = q.shape
    w = q.float().view(out, scale.shape[1], -1) * scale.float()[..., None]
    return w.view(out, n).to(dtype)


class QuantLinear(nn.Module):
    """A linear layer whose weight is stored quantized; the model's maths dequantizes it (the
    engine's device layers read the packed weight directly)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, scheme: QuantScheme):
        super().__init__()
        self.in_features, self.out_features, self.bits = in_features, out_features, scheme.bits
        shapes = scheme.shapes(out_features, in_features)
        self.weight_packed = nn.Parameter(torch.empty(shapes["weight_packed"], dtype=torch.int32),
                                          requires_grad=False)
        self.weight_scale = nn.Parameter(torch.empty(shapes["weight_scale"]))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, dequantize(self.weight_packed, self.weight_scale, self.bits, x.dtype), self.bias)
