"""Delta experts: a fine-tune stored as its base plus a compressed difference (BitDelta-style).

Most experts people serve are fine-tunes of a few bases, and a fine-tune's difference from its
base compresses far better than its weights: BitDelta keeps one sign bit a weight and one scale
a row. A delta checkpoint is a directory like any other (config.json, tokenizer, one
safetensors file), with:

- config.json: the fine-tune's own config plus `"coeflow_delta": {"base": PATH, "bits": B,
  "group": G, "base_sha256": ...}`; PATH is relative to the delta's directory (or absolute),
  and the base's files must hash to `base_sha256` when the store reads them;
- for every matrix of the model (the linear layers, the embedding table and the head),
  `{module}.delta_packed` int32 [out, in * B / 32] and `{module}.delta_scale` [out, in / G]:
  B = 1 holds sign bits, the delta is (2u - 1) * scale with one scale a row (the mean
  magnitude of the row's delta, the scale that minimises the squared error); B = 2, 4 or 8
  holds signed values in groups of G inputs, as `coeflow.model.quant` packs them, each group's
  scale chosen to minimise the squared error over a few clipping ratios;
- every other tensor (norms, biases) whole, under its own name.

The expert is rebuilt as base + delta: by `load_weights` for the eager paths, by the store's
backend when it moves the expert onto the device (the host tier keeps only the delta)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from coeflow.errors import CheckpointError, ConfigError
from coeflow.model.config import ModelConfig, expected_shapes
from coeflow.model.quant import pack, pack_unsigned, unpack

KEY = "coeflow_delta"
BITS = (1, 2, 4, 8)
# Ratios of a group's largest magnitude tried as the clipping point of its scale (B >= 2):
# a delta's values are heavy-tailed, so clipping the few largest ones lowers the error.
CLIP_RATIOS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)


@dataclass(frozen=True)
class DeltaSpec:
    """What a delta checkpoint's config.json says: its base (resolved), bits a weight, inputs
    a scale (None: one scale a row) and the base's checksum (None: not checked)."""
    base: Path
    bits: int
    group: int | None
    base_sha256: str | None = None

    @property
    def name(self) -> str:
        return f"delta{self.bits}" + (f"-g{self.group}" if self.group else "")

    @classmethod
    def of(cls, path: str | Path) -> "DeltaSpec | None":
        """The spec of the checkpoint at `path`, or None for a checkpoint that is not a delta."""
        file = Path(path) / "config.json"
        try:
            raw = json.loads(file.read_text()).get(KEY)
        except (OSError, ValueError, AttributeError):
            return None  # ModelConfig.from_dir says what is wrong with it
        if raw is None:
            return None
        try:
            bits, group, base = int(raw["bits"]), raw.get("group"), Path(raw["base"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{file}: malformed {KEY!r} ({e!r})") from None
        if bits not in BITS or (group is not None and (not isinstance(group, int) or group <= 0)):
            raise CheckpointError(f"{file}: {KEY!r} asks for {bits} bits in groups of {group}; "
                                  f"coeflow reads {', '.join(map(str, BITS))} bits")
        return cls((Path(path) / base).resolve(), bits, group if bits > 1 else None, raw.get("base_sha256"))

    def to_config(self, out: Path) -> dict[str, Any]:
        return {"base": os.path.relpath(self.base, out.resolve()), "bits": self.bits, "group": self.group,
                "base_sha256": self.base_sha256}

    def group_of(self, in_features: int) -> int:
        return self.group or in_features

    def shapes(self, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        """The tensors of a delta checkpoint of a model of `cfg`, in the dense model's order."""
        out: dict[str, tuple[int, ...]] = {}
        for name, shape in expected_shapes(cfg).items():
            if len(shape) != 2:
                out[name] = shape
                continue
            rows, n = shape
            g = self.group_of(n)
            if n % g or (n * self.bits) % 32:
                raise ConfigError(f"{name}: its {n} inputs do not split into groups of {g} of whole "
                                  f"32-bit words at {self.bits} bits; choose another --group-size")
            module = name.removesuffix(".weight")
            out[f"{module}.delta_packed"] = (rows, n * self.bits // 32)
            out[f"{module}.delta_scale"] = (rows, n // g)
        return out


def compress(delta: Tensor, bits: int, group: int | None) -> tuple[Tensor, Tensor]:
    """A matrix's delta [out, in] -> (delta_packed int32, delta_scale float32)."""
    delta = delta.float()
    if bits == 1:
        return pack_unsigned((delta > 0).to(torch.uint8), 1), delta.abs().mean(1, keepdim=True)
    rows, n = delta.shape
    g = group or n
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    grouped = delta.reshape(rows, n // g, g)
    top = grouped.abs().amax(-1).clamp_min(torch.finfo(torch.float32).tiny)
    best_err = torch.full_like(top, float("inf"))
    best_scale = top / qmax
    for ratio in CLIP_RATIOS:
        scale = top * ratio / qmax
        err = ((torch.round(grouped / scale[..., None]).clamp_(qmin, qmax) * scale[..., None] - grouped) ** 2).sum(-1)
        better = err < best_err
        best_err, best_scale = torch.where(better, err, best_err), torch.where(better, scale, best_scale)
    q = torch.round(grouped / best_scale[..., None]).clamp_(qmin, qmax).to(torch.int8)
    return pack(q.reshape(rows, n), bits), best_scale


def decompress(packed: Tensor, scale: Tensor, bits: int) -> Tensor:
    """The delta [out, in] in float32."""
    if bits == 1:  # each byte's 8 signs from a table: one gather instead of shifts and masks
        rows = packed.shape[0]
        signs = _sign_table(packed.device).index_select(0, packed.contiguous().view(torch.uint8).view(-1).int())
        return signs.view(rows, -1).mul_(scale.float())
    return scaled(unpack(packed, bits).float(), scale.float())


def scaled(values: Tensor, scale: Tensor) -> Tensor:
    """values [out, in] times their scales [out, groups], each scale over its group of inputs."""
    rows, n = values.shape
    return (values.view(rows, scale.shape[1], -1) * scale[..., None]).view(rows, n)


def _sign_table(device: torch.device) -> Tensor:
    """[256, 8] float32: row b holds the signs (+1 for a set bit) of byte b's bits, low bit first."""
    table = _SIGNS.get(device)
    if table is None:
        bits = (torch.arange(256, dtype=torch.int32)[:, None] >> torch.arange(8, dtype=torch.int32)) & 1
        table = _SIGNS[device] = (bits * 2 - 1).float().to(device)
    return table


_SIGNS: dict[torch.device, Tensor] = {}
CHUNK = 1 << 16  # values rebuilt at a time: the float temporaries stay in cache


def rebuild(base: dict[str, Tensor], delta: dict[str, Tensor], bits: int,
            out: dict[str, Tensor]) -> None:
    """Write base + delta into `out` (the dense tensors by name, in their dtype and device):
    matrices from their packed delta, a few rows at a time, other tensors the delta holds
    whole, the rest the base's."""
    for name, dst in out.items():
        module = name.removesuffix(".weight")
        packed = delta.get(f"{module}.delta_packed")
        if packed is None:
            dst.copy_(delta[name] if name in delta else base[name])
            continue
        packed, scale = packed.to(dst.device), delta[f"{module}.delta_scale"].to(dst.device)
        step = max(1, CHUNK // dst.shape[1])
        for r in range(0, dst.shape[0], step):
            d = decompress(packed[r:r + step], scale[r:r + step], bits)
            dst[r:r + step].copy_(d.add_(base[name][r:r + step]))


def check_base(spec: DeltaSpec, cfg: ModelConfig, source: str | Path) -> None:
    """Refuse a base that is not a dense checkpoint of the same shape as `cfg`'s."""
    try:
        base = ModelConfig.from_dir(spec.base)
    except CheckpointError as e:
        raise CheckpointError(f"{source}: its base {spec.base} cannot be read: {e}") from None
    if base.quant is not None or DeltaSpec.of(spec.base) is not None:
        raise CheckpointError(f"{source}: its base {spec.base} is itself quantized or a delta; a base "
                              "must be a dense checkpoint")
    if base.shape_key != cfg.shape_key:
        raise CheckpointError(f"{source}: its shapes differ from its base {spec.base} "
                              "(config.json's sizes are not the base's)")
    return base
