"""A Triton kernel for decode's one-row products on a GPU: y = x @ w.T (+ b), x one row.

Why: at one row cuBLAS runs some decode shapes as split-K kernels with a reduction after
them, which stream the weight well below the device's copy rate. This kernel gives each
program a block of w's rows, read once and in order, with a float32 tile of partial products
reduced once at the end.

Which products use it is measured, not assumed: `fastest` times cuBLAS and each of CONFIGS
on the device, over enough copies of a weight of that shape to overflow the L2 cache (a decode
step streams its weights from memory, so a weight timed from the cache would mislead), and
keeps the fastest for the process, per (device, shape, dtype, bias); the GPU's decode layers
(coeflow.engine.layers.cuda.choose_gemv) ask
it for every product of a model's decode step. The kernel is the op `coeflow::gpu_gemv`
(`torch.library.triton_op`), so a compiled step calls it without a graph break and the
weights stay inputs of the step. Without Triton or a GPU, or with COEFLOW_GPU_GEMV=0, it is
unavailable: cuBLAS it is."""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import threading
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)


class Config(NamedTuple):
    """One launch of the kernel: rows of w per program, columns per loop step, warps, stages."""
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


# Tiles of 4-64 rows x 128-1024 columns: 8-16 KB of bf16 weight a loop step per program, and
# 64 to 1,024 programs on a 4,096-row weight (an H100/H200 has 132 multiprocessors). Few rows
# a program suit the 4,096-row weights of 7B shapes; the timing picks, and a config that never
# wins costs only its compile.
CONFIGS = (Config(8, 512, 4, 4), Config(16, 256, 4, 4), Config(16, 512, 4, 3),
           Config(4, 1024, 4, 4), Config(8, 1024, 8, 3),
           Config(32, 256, 4, 3), Config(32, 128, 4, 4), Config(64, 128, 8, 3))

# The kernel is taken only when it beats cuBLAS by this much: the two are timed apart, and a
# win inside the timing's noise is not worth a second kind of product.
MIN_GAIN = 0.03

# The weight bytes a timing streams through, as a multiple of the L2 cache's size.
STREAM_L2_MULTIPLE = 3


# Devices whose products may go to the kernel. Triton's interpreter (TRITON_INTERPRET=1) runs
# it on CPU tensors too, which is how the tests check it on a machine without a GPU.
ON = ("cuda",)


def available(device: torch.device) -> bool:
    """Whether products on `device` may go to the kernel: Triton installed, the device one
    of ON, and not turned off with COEFLOW_GPU_GEMV=0."""
    return (device.type in ON and os.environ.get("COEFLOW_GPU_GEMV", "1") != "0"
            and importlib.util.find_spec("triton") is not None)


def register() -> None:
    """Define the kernel and the op `coeflow::gpu_gemv`, on first use (before a step that calls
    it is compiled): importing Triton takes about a second, which commands that never touch a
    GPU should not pay."""
    global _registered
    if _registered:
        return
    from coeflow.model.kernels import gemv_triton  # noqa: F401  (defines the op)
    _registered = True


_registered = False


def linear(x: Tensor, w: Tensor, b: Tensor | None, config: Config) -> Tensor:
    """`F.linear(x, w, b)` for x of one row (any leading shape), through the kernel."""
    register()
    y = torch.ops.coeflow.gpu_gemv(x.reshape(1, x.shape[-1]).contiguous(), w, b, *config)
    return y.view(*x.shape[:-1], -1)


def takes(x: Tensor, w: Tensor, b: Tensor | None, config: Config | None) -> bool:
    """Whether a product of x goes to the kernel: one row, on a GPU, with a config chosen, a
    weight whose rows and a bias whose elements lie one after another (the kernel's reads)."""
    return (config is not None and x.device.type in ON and x.numel() == x.shape[-1]
            and w.stride(-1) == 1 and (b is None or b.stride(-1) == 1))


# Packed (int8, int4) weights: no cuBLAS product reads them, so the kernel always takes one-row
# products, in this config (a tile of 16 rows x 256 values; not yet timed on a GPU).
PACKED_CONFIG = Config(16, 256, 4, 3)


def packed_linear(x: Tensor, packed: Tensor, scale: Tensor, bits: int) -> Tensor:
    """x (one row, any leading shape) @ w.T, w given packed with its scales
    (coeflow.model.quant), through the kernel `coeflow::gpu_packed_gemv`."""
    register()
    y = torch.ops.coeflow.gpu_packed_gemv(x.reshape(1, x.shape[-1]).contiguous(), packed, scale, bits,
                                          *PACKED_CONFIG)
    return y.view(*x.shape[:-1], -1)


def takes_packed(x: Tensor, packed: Tensor, scale: Tensor) -> bool:
    """Whether a product of x on packed weights goes to the kernel: one row, on a GPU, each
    row's words and the scales one after another."""
    return x.device.type in ON and x.numel() == x.shape[-1] and packed.stride(-1) == 1 and scale.is_contiguous()


_chosen: dict[tuple, Config | None] = {}
_lock = threading.Lock()  # engines set their weights from the server's threads


def fastest(n: int, k: int, dtype: torch.dtype, device: torch.device, bias: bool = False) -> Config | None:
    """The config of the kernel that streams an [n, k] weight fastest at one row, or None
    where cuBLAS is as fast (within MIN_GAIN) or the timing failed (out of device memory,
    say: cuBLAS then, for the rest of the process). Measured once per process and key."""
    key = (str(device), n, k, dtype, bias)
    with _lock:
        if key not in _chosen:
            try:
                _chosen[key] = _measure(n, k, dtype, device, bias) if available(device) else None
            except Exception as e:  # noqa: BLE001  (a product without the kernel still runs)
                log.warning("timing one-row products of [%d, %d] failed (%s: %s); cuBLAS for them",
                            n, k, type(e).__name__, e)
                _chosen[key] = None
        return _chosen[key]


def _measure(n: int, k: int, dtype: torch.dtype, device: torch.device, bias: bool) -> Config | None:
    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 << 20)
    w = torch.randn(n, k, dtype=dtype, device=device) * 0.02
    n_copies = math.ceil(STREAM_L2_MULTIPLE * l2 / w.nbytes)
    copies = [w] + [torch.empty_like(w).copy_(w) for _ in range(n_copies - 1)]
    x = torch.randn(1, k, dtype=dtype, device=device)
    b = torch.randn(n, dtype=dtype, device=device) if bias else None
    register()
    times = {None: streamed_call_s(lambda c: F.linear(x, c, b), copies, device)}
    for config in CONFIGS:
        try:
            times[config] = streamed_call_s(
                lambda c, config=config: torch.ops.coeflow.gpu_gemv(x, c, b, *config), copies, device)
        except Exception as e:  # noqa: BLE001  (a config this device cannot run: not a choice)
            log.debug("gpu_gemv %s on [%d, %d]: %s", config, n, k, e)
    best = min(times, key=times.get)
    if best is not None and times[best] > times[None] * (1 - MIN_GAIN):
        best = None
    kernel_s = min((v for c, v in times.items() if c is not None), default=float("nan"))
    log.info("one-row product [%d, %d] %s: cuBLAS %.1f us, kernel at best %.1f us -> %s", n, k, dtype,
             times[None] * 1e6, kernel_s * 1e6, best or "cuBLAS")
    return best


def streamed_call_s(call, copies: list[Tensor], device: torch.device, min_reps: int = 60) -> float:
    """Device seconds of one call, cycling through every copy (so that the weight is read
    from memory, not from the L2), from a CUDA graph's replays (so the host's launch time is
    not counted, as in a decode step's graph). Captured thread-locally, as the engine's own
    graphs are: another thread's allocations do not spoil the capture."""
    reps = max(min_reps, len(copies))
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for c in copies[:2]:  # warm-up: compilation, cuBLAS handles and workspaces
            call(c)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        for i in range(reps):
            call(copies[i % len(copies)])
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    start.record()
    for _ in range(3):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / (3 * reps)
