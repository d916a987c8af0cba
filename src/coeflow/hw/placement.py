"""Where a model's tensors live on each device: HBM first, DDR for what does not fit.

The paper's compiler spills the tensors with the lowest bandwidth need first; in inference the
KV cache is read and written every step, so it stays in HBM and weights overflow to DDR (an
RDU streams them from there at DDR bandwidth). A GPU has no DDR tier of its own: a model
that does not fit its HBM is refused with the size it would need."""

from __future__ import annotations

from dataclasses import dataclass

from coeflow.errors import ConfigError
from coeflow.hw.shapes import BYTES_BF16, DecoderShape
from coeflow.hw.spec import Hardware

GiB = 2**30


@dataclass(frozen=True)
class Placement:
    """Bytes per device by tier."""

    weights: float
    kv_cache: float
    activations: float
    hbm_usable: float
    hbm_used: float
    ddr_used: float

    @property
    def ddr_fraction(self) -> float:
        """Share of the weights streamed from DDR."""
        return self.ddr_used / self.weights if self.weights else 0.0


def kv_bytes_per_device(shape: DecoderShape, tp: int, batch: int, tokens: int) -> float:
    kv_heads = max(1, shape.kv_heads // tp)
    return batch * tokens * 2 * shape.layers * kv_heads * shape.head_dim * BYTES_BF16


def activation_bytes_per_device(shape: DecoderShape, tp: int, tokens: int) -> float:
    """Peak live activations of one layer (input, residual, q/k/v, MLP hidden), not kept."""
    return tokens * (4 * shape.hidden + 3 * shape.intermediate // tp) * BYTES_BF16


def place(hw: Hardware, shape: DecoderShape, tp: int, batch: int, prompt: int, gen: int) -> Placement:
    dev = hw.device
    weights = shape.weight_bytes() / tp
    kv = kv_bytes_per_device(shape, tp, batch, prompt + gen)
    act = activation_bytes_per_device(shape, tp, batch * prompt)
    usable = dev.hbm.capacity - hw.device_reserve
    need = weights + kv + act
    if need <= usable:
        return Placement(weights, kv, act, usable, need, 0.0)
    overflow = need - usable
    if dev.ddr is None or overflow > weights or overflow > dev.ddr.capacity:
        raise ConfigError(
            f"{shape.name} at TP{tp}, batch {batch}, {prompt}+{gen} tokens needs "
            f"{need / GiB:.1f} GiB per device (weights {weights / GiB:.1f}, KV {kv / GiB:.1f}); "
            f"{hw.name} has {usable / GiB:.1f} GiB of HBM usable per device"
            + ("" if dev.ddr is None else f" and {dev.ddr.capacity / GiB:.0f} GiB of DDR")
            + f"; try a larger --tp (at most {hw.count}) or a smaller batch")
    return Placement(weights, kv, act, usable, usable, overflow)
