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

Only that one scheme is accepted; any other quantization config is refused naming what it
asks for, so a checkpoint never loads into a model that computes something else."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coeflow.errors import UnsupportedModelError

BITS = (4, 8)
# Groups and rows must be whole 32-value chunks: the CPU kernel reads 32 values at a time.
GROUP_MULTIPLE = 32
DEFAULT_GROUP = {4: 128, 8: None}  # None: one scale a row


@dataclass(frozen=True)
class QuantScheme:
    """Which linear layers are quantized, and how: `bits` per weight, `group` inputs per scale
    (None: one scale per output row), `ignore` the layers left dense (names or `re:` patterns,
    as compressed-tensors writes them)."""
    bits: int
    group: int | None
    ignore: tuple[str, ...] = ("lm_head",)

    @property
    def name(self) -> str:
        return f"int{self.bits}" + (f"-g{self.group}" if self.group else "")

    def quantizes(self, module: str) -> bool:
        for pattern in self.ignore:
            if pattern.startswith("re:"):
                if re.match(pattern[3:], module):
                    return False
            elif pattern == module:
                return False
        return True

    def group_of(self, in_features: int) -> int:
        return self.group or in_features

    def shapes(self, out_features: int, in_features: int) -> dict[str, tuple[int, ...]]:
        """The tensors of one quantized layer, by suffix, and their shapes."""
        return {"weight_packed": (out_features, in_features * self.bits // 32),
                "weight_scale": (out_features, in_features // self.group_of(in_features))}

    def check_layer(self, name: str, out_features: int, in_features: int) -> str | None:
        """Why this scheme cannot quantize a layer of this shape, or None."""
        g = self.group_of(in_features)
        if in_features % g or g % GROUP_MULTIPLE:
            return (f"{name}: its {in_features} inputs do not split into groups of {g} (a group must "
                    f"divide the inputs and be a multiple of {GROUP_MULTIPLE})")
        return None

    def to_config(self) -> dict[str, Any]:
        """config.json's `quantization_config` for this scheme."""
        weights = {"num_bits": self.bits, "type": "int", "symmetric": True, "dynamic": False,
                   "strategy": "group" if self.group else "channel", "group_size": self.group,
                   "actorder": None, "block_structure": None, "observer": "minmax",
                   "observer_kwargs": {}}
        return {"quant_method": "compressed-tensors", "format": "pack-quantized",
                "quantization_status": "compressed",
                "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights,
                                              "input_activations": None, "output_activations": None}},
                "ignore": list(self.ignore), "kv_cache_scheme": None}

    @classmethod
    def from_config(cls, raw: dict[str, Any] | None, source: str) -> "QuantScheme | None":
        """The scheme of a config.json's `quantization_config` (None for a dense model);
        UnsupportedModelError naming what coeflow does not run."""
        if not raw:
            return None

        def refuse(what: str) -> UnsupportedModelError:
            return UnsupportedModelError(
                f"{source}: quantization_config {what} is not supported; coeflow loads "
                "compressed-tensors pack-quantized int4/int8 weights (symmetric, per group or per "
                "channel, no activation quantization), e.g. from `coeflow quantize`")

        method = raw.get("quant_method")
        if method != "compressed-tensors":
            raise refuse(f"quant_method {method!r}")
        if raw.get("format") != "pack-quantized":
            raise refuse(f"format {raw.get('format')!r}")
        if raw.get("quantization_status", "compressed") != "compressed":
            raise refuse(f"quantization_status {raw.get('quantization_status')!r} (weights not packed)")
        if raw.get("kv_cache_scheme"):
            raise refuse("kv_cache_scheme (a quantized KV cache)")
        groups = raw.get("config_groups") or {}
        if len(groups) != 1:
            raise refuse(f"with {len(groups)} config groups (one is supported)")
        (group,) = groups.values()
        if list(group.get("targets") or []) != ["Linear"]:
            raise refuse(f"targets {group.get('targets')!r} (only ['Linear'])")
        for key in ("input_activations", "output_activations"):
            if group.get(key):
                raise refuse(f"{key} (activation quantization)")
        w = group.get("weights") or {}
        bits, kind, strategy = w.get("num_bits"), w.get("type", "int"), w.get("strategy")
        if kind != "int" or bits not in BITS:
            raise refuse(f"weights of type {kind!r} with {bits} bits")
        if not w.get("symmetric", True):
            raise refuse("asymmetric weights (a zero point)")
        if w.get("dynamic") or w.get("actorder") or w.get("block_structure"):
            raise refuse("dynamic, activation-ordered or block-structured weights")
        if strategy == "group":
            size = w.get("group_size")
            if not isinstance(size, int) or size <= 0:
                raise refuse(f"group_size {size!r}")
            return cls(bits, size, tuple(raw.get("ignore") or ()))
        if strategy == "channel":
            return cls(bits, None, tuple(raw.get("ignore") or ()))
        raise refuse(f"strategy {strategy!r}")


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
    u = (q.to(torch.int16) + (1 << (bits - 1))).to(torch.uint8)
    if bits == 4:
        u = u[:, 0::2] | (u[:, 1::2] << 4)
    return u.contiguous().view(torch.int32)


def unpack(packed: Tensor, bits: int) -> Tensor:
    """`weight_packed` int32 [out, words] -> the signed values, int8 [out, in]."""
    u = packed.contiguous().view(torch.uint8)
    if bits == 4:
        u = torch.stack((u & 15, u >> 4), dim=-1).reshape(u.shape[0], -1)
    return (u.to(torch.int16) - (1 << (bits - 1))).to(torch.int8)


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
        self.group = scheme.group_of(in_features)
        shapes = scheme.shapes(out_features, in_features)
        self.weight_packed = nn.Parameter(torch.empty(shapes["weight_packed"], dtype=torch.int32),
                                          requires_grad=False)
        self.weight_scale = nn.Parameter(torch.empty(shapes["weight_scale"]))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, dequantize(self.weight_packed, self.weight_scale, self.bits, x.dtype), self.bias)
