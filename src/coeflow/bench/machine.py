"""Physical limits of this machine, measured in the same run as the benchmark they bound."""

from __future__ import annotations

import platform
import time
from typing import Callable

import torch


def _best(fn: Callable[[], object], repeats: int) -> float:
    fn()  # touch pages, compile
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def mem_read_gbps(nbytes: int = 1 << 30, repeats: int = 5) -> float:
    """How fast this machine can read memory with all threads: the best of two read kernels
    over a buffer far larger than the caches. A plain `sum` is limited by its single
    reduction chain on some CPUs, so a compiled row-wise multiply-reduce (the shape of a
    decode step's weight reads) is tried too; the faster one is the limit."""
    x = torch.ones(nbytes // 4, dtype=torch.float32)
    rows = x.view(-1, 4096)
    v = torch.ones(4096)
    row_reduce = torch.compile(lambda m, v: (m * v).sum(-1), dynamic=False)
    t = min(_best(lambda: x.sum(), repeats), _best(lambda: row_reduce(rows, v), repeats))
    return nbytes / t / 1e9


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
