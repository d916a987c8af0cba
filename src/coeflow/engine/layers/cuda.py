"""The GPU's layers for compiled decode steps:

- products that read the same input (q/k/v, gate/up) as one product each, on weights the store
  lays back to back (`join_groups`; no copy): one large matrix streams faster than several
  small ones;
- one-row products through coeflow's Triton kernel (coeflow.model.kernels.gpu_gemv) for the
  weight shapes where it was timed faster than cuBLAS on this device (`choose_gemv`);
- one-row products of quantized layers (int8, int4) through its packed variant, which reads
  the packed weights (no cuBLAS product does); prefill dequantizes.

Nothing here needs a GPU to compute: the tests run these layers on the CPU (the Triton kernel
through Triton's interpreter)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coeflow.engine.layers import swap_classes
from coeflow.model.kernels import gpu_gemv
from coeflow.model.llama import MLP, Attention, Transformer
from coeflow.model.quant import QuantLinear


def _product(x: Tensor, weight: Tensor, bias: Tensor | None, gemv: gpu_gemv.Config | None) -> Tensor:
    if gpu_gemv.takes(x, weight, bias, gemv):
        return gpu_gemv.linear(x, weight, bias, gemv)
    return F.linear(x, weight, bias)


class PackedGemvLinear(QuantLinear):
    """A quantized layer whose one-row products read the packed weights (the kernel); more
    rows (prefill) dequantize."""

    def forward(self, x: Tensor) -> Tensor:
        if gpu_gemv.takes_packed(x, self.weight_packed, self.weight_scale):
            y = gpu_gemv.packed_linear(x, self.weight_packed, self.weight_scale, self.bits)
            return y if self.bias is None else y + self.bias
        return super().forward(x)


class GemvLinear(nn.Linear):
    gemv: gpu_gemv.Config | None = None  # set by `choose_gemv`

    def forward(self, x: Tensor) -> Tensor:
        return _product(x, self.weight, self.bias, self.gemv)


def _joined(block: "JoinedAttention | JoinedMLP", x: Tensor) -> list[Tensor] | None:
    if block.joined_weight is None:
        return None
    y = _product(x, block.joined_weight, block.joined_bias, block.joined_gemv)
    return list(y.split([m.out_features for m in block.joinable()], dim=-1))


class JoinedAttention(Attention):
    joined_gemv: gpu_gemv.Config | None = None

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        y = _joined(self, x)
        return tuple(y) if y is not None else super().project(x)


class JoinedMLP(MLP):
    joined_gemv: gpu_gemv.Config | None = None

    def gate_up(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = _joined(self, x)
        return tuple(y) if y is not None else super().gate_up(x)


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
    """Give each attention and MLP block its joined weights where its attached tensors allow,
    None elsewhere. Returns which blocks have them."""
    joined = []
    for m in model.modules():
        if isinstance(m, (JoinedAttention, JoinedMLP)):
            layers = m.joinable()
            if any(isinstance(l, QuantLinear) for l in layers):  # packed: nothing to join
                m.joined_weight = m.joined_bias = None
                joined.append(False)
                continue
            w = adjacent_view([l.weight for l in layers])
            b = adjacent_view([l.bias for l in layers]) if layers[0].bias is not None else None
            if w is None or (layers[0].bias is not None and b is None):
                w = b = None
            m.joined_weight, m.joined_bias = w, b
            joined.append(w is not None)
    return tuple(joined)


def choose_gemv(model: nn.Module) -> tuple:
    """For each product a decode step makes at one row (the joined groups, the other linear
    layers), whether it runs through coeflow's Triton kernel and how: the fastest measured on
    this device for its shape (`gpu_gemv.fastest`), or cuBLAS (None). Call after
    `join_groups`. Returns the choices."""
    def pick(w: Tensor | None, b: Tensor | None) -> gpu_gemv.Config | None:
        if (w is None or w.is_meta or w.stride(-1) != 1 or (b is not None and b.stride(-1) != 1)
                or w.numel() >= 2**31):  # the kernel's offsets are 32-bit
            return None
        return gpu_gemv.fastest(w.shape[0], w.shape[1], w.dtype, w.device, b is not None)

    chosen, in_groups = [], set()
    for m in model.modules():
        if isinstance(m, (JoinedAttention, JoinedMLP)):
            m.joined_gemv = pick(m.joined_weight, m.joined_bias)
            chosen.append(m.joined_gemv)
            if m.joined_weight is not None:
                in_groups.update(id(layer) for layer in m.joinable())
    for m in model.modules():
        if isinstance(m, GemvLinear):
            m.gemv = None if id(m) in in_groups else pick(m.weight, m.bias)
            chosen.append(m.gemv)
    if any(c is not None for c in chosen):
        gpu_gemv.register()  # before the step that calls the op is traced
    return tuple(chosen)


class CudaLayers:
    """The GPU's decode layers; `gemv`: let one-row products take coeflow's Triton kernel
    where it was timed faster (`gpu_gemv.available` says whether it can run here)."""

    def __init__(self, gemv: bool) -> None:
        self.gemv = gemv

    def swap(self, model: Transformer) -> None:
        swap_classes(model, {nn.Linear: GemvLinear, Attention: JoinedAttention, MLP: JoinedMLP,
                             **({QuantLinear: PackedGemvLinear} if self.gemv else {})})
        for m in model.modules():
            if isinstance(m, (JoinedAttention, JoinedMLP)):
                # buffers, so that a compiled step takes them as inputs, as it takes the weights
                m.register_buffer("joined_weight", None, persistent=False)
                m.register_buffer("joined_bias", None, persistent=False)

    def after_attach(self, model: Transformer) -> tuple:
        joined = join_groups(model)
        return joined, (choose_gemv(model) if self.gemv else ())
