"""Physical limits of this machine, measured in the same run as the benchmark they bound."""

from __future__ import annotations

import platform
import time
from typing import Callable

import torch

from coeflow.model import hostmem


def _best(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    fn()  # touch pages, compile
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def mem_read_gbps(nbytes: int = 1 << 30, repeats: int = 5, device: str = "cpu") -> float:
    """How fast this machine can read memory with all threads: the best of three read kernels
    over a buffer far larger than the caches. A plain `sum` is limited by its single
    reduction chain on some CPUs, so a compiled row-wise multiply-reduce (the shape of a
    decode step's weight reads) is tried too, and, where coeflow's CPU kernels load, their
    plain AVX-512 read loop (up to 20% faster than both here); the fastest is the limit. The
    buffer is in huge pages where Linux grants them, like the weights it is compared with. On
    a GPU: a sum over its memory (PyTorch's reduction runs near the memory's rate there)."""
    if device != "cpu":
        x = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
        return nbytes / _best(lambda: x.sum(), repeats, torch.cuda.synchronize) / 1e9
    from coeflow.model import kernels

    # in huge pages, as coeflow's weights are (model.hostmem): 2-31% faster to read here
    x = hostmem.empty(nbytes).view(torch.float32).fill_(1)
    rows = x.view(-1, 4096)
    v = torch.ones(4096)
    row_reduce = torch.compile(lambda m, v: (m * v).sum(-1), dynamic=False)
    t = min(_best(lambda: x.sum(), repeats), _best(lambda: row_reduce(rows, v), repeats))
    if kernels.load():
        t = min(t, _best(lambda: kernels.read_sum(x), repeats))
    return nbytes / t / 1e9


def device_copy_gbps(device: str = "cuda", nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """A GPU's device-to-device copy rate, counting bytes read and written (as CUDA's
    bandwidthTest does): the limit a weight-streaming decode step is judged against there."""
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes / _best(lambda: dst.copy_(src), repeats, torch.cuda.synchronize) / 1e9


def machine_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {torch.get_num_threads()} threads{gpu}, torch {torch.__version__}"
