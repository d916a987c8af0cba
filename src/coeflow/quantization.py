"""How a checkpoint's weights are quantized: the one scheme coeflow reads and writes,
compressed-tensors' `pack-quantized` (int8 or int4, symmetric, one scale a group of inputs or a
row; the format itself is described in coeflow.model.quant). Pure data, no tensors: the model
builds its layers from it and the hardware model counts its bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from coeflow.errors import UnsupportedModelError

BITS = (4, 8)
# Groups and rows must be whole 32-value chunks: the CPU kernel reads 32 values at a time.
GROUP_MULTIPLE = 32
DEFAULT_GROUP = {4: 128, 8: None}  # None: one scale a row
DELTA_GROUP = 128  # inputs a scale of a 2-8-bit delta (coeflow.model.delta); 1 bit: one a row


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

    def bits_per_weight(self, in_features: int) -> float:
        """Stored bits a weight of a layer with `in_features` inputs: the value and its share of
        the group's scale (bf16, as `coeflow quantize` writes it from a bf16 checkpoint)."""
        return self.bits + 16 / self.group_of(in_features)

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
