"""`coeflow::quant_linear`: decode's products on int8 and int4 weights, read packed.

y = x @ w.T for 1 to 8 rows of x, where w is stored in compressed-tensors' pack-quantized
layout (coeflow.model.quant) and never dequantized into a buffer: `quant_linear.c` widens 32
packed values at a time to floats and multiplies them into the rows (float32 out). Written for
AVX2 and AVX-512 (whichever the CPU has), so unlike coeflow's AVX-512-only kernels it runs on
any x86-64 CPU of the last decade. Built on first use like them (`build_library`), as a torch
op so a compiled decode step calls it without a graph break. Without it (another CPU, no
g++, a failed build, COEFLOW_CPU_KERNEL=0) quantized layers dequantize their weights each
call: right, and slower than the dense weights. COEFLOW_CPU_KERNEL=emulate builds the
AVX-512 version's 16-float vectors in portable code, to test it on a CPU without AVX-512."""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path

import torch
from torch import Tensor

from coeflow.model.kernels import _cpu_flags, _emulating, build_library

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("quant_linear.c")
OP_SOURCE = Path(__file__).with_name("quant_linear_op.cpp")
MAX_ROWS = 8
WIDE = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mfma"]
NARROW = ["-mavx2", "-mfma"]
BASE_CFLAGS = ["-O3", "-fPIC", "-fopenmp", "-Wno-psabi"]

_LIB = torch.library.Library("coeflow", "FRAGMENT")
_LIB.define("quant_linear(Tensor x, Tensor[] packed, Tensor[] scales, int bits) -> Tensor")
MAX_WEIGHTS = 8  # quant_linear_op.cpp's kMaxWeights


@torch.library.register_fake("coeflow::quant_linear")
def _(x: Tensor, packed: list[Tensor], scales: list[Tensor], bits: int) -> Tensor:
    return x.new_empty((x.shape[0], sum(p.shape[0] for p in packed)), dtype=torch.float32)


_loaded: bool | None = None


def _cflags(flags: set[str]) -> list[str] | None:
    """The build's flags for this CPU, or None where the kernel cannot run."""
    if {"avx512f", "avx512bw", "avx512vl", "fma"} <= flags and not _emulating():
        return BASE_CFLAGS + WIDE
    if {"avx2", "fma"} <= flags:
        return BASE_CFLAGS + NARROW + (["-DQUANT_VL=16"] if _emulating() else [])
    return None


def load() -> bool:
    """Build and load the op once per process; True if it can be used."""
    global _loaded
    if _loaded is not None:
        return _loaded
    _loaded = False
    if os.environ.get("COEFLOW_CPU_KERNEL", "1") == "0":
        return False
    cflags = _cflags(_cpu_flags())
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64") or cflags is None:
        log.info("quantized CPU kernel unavailable: needs x86-64 Linux with AVX2 and FMA; "
                 "quantized layers dequantize their weights instead")
        return False
    try:
        torch.ops.load_library(str(build_library("quant_linear_op", [SOURCE], cflags, [OP_SOURCE], [])))
    except (OSError, RuntimeError, ImportError) as e:
        log.warning("quantized CPU kernel unavailable (%s); quantized layers dequantize their weights", e)
        return False
    _loaded = True
    return True


def supports(x: Tensor, packed: list[Tensor], scales: list[Tensor]) -> bool:
    """Whether `quant_linear(x, packed, scales, bits)` may be called (the op loaded)."""
    if (not _loaded or x.device.type != "cpu" or x.dim() != 2 or not 1 <= x.shape[0] <= MAX_ROWS
            or x.dtype not in (torch.float32, torch.bfloat16) or not 1 <= len(packed) <= MAX_WEIGHTS):
        return False
    groups = scales[0].shape[1]
    return (x.shape[1] % groups == 0 and (x.shape[1] // groups) % 32 == 0
            and all(p.stride(1) == 1 and s.is_contiguous() and s.dtype == scales[0].dtype
                    and s.shape[1] == groups for p, s in zip(packed, scales))
            and scales[0].dtype in (torch.float32, torch.bfloat16))


def quant_linear(x: Tensor, packed: list[Tensor], scales: list[Tensor], bits: int) -> Tensor:
    """The op: x [M, K] @ w.T as float32 [M, N], w [N, K] given packed (int32 [N, K*bits/32])
    with its scales [N, K/group]; given several weights that read the same x (q, k, v), their
    outputs side by side, from one call."""
    return torch.ops.coeflow.quant_linear.default(x, packed, scales, bits)
