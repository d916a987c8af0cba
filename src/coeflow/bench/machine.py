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


def _read_kernels(nbytes: int, device: str) -> tuple[list[Callable[[], object]], Callable[[], None]]:
    """Ways to read `nbytes` of memory with all threads, and the sync their timing needs. A
    plain `sum` is limited by its single reduction chain on some CPUs, so a compiled row-wise
    multiply-reduce (the shape of a decode step's weight reads) is tried too, and, where
    coeflow's CPU kernels load, their plain AVX-512 read loop (faster than both where it runs),
    with and without software prefetch (which of the two reads faster changes with the
    moment). The buffer is in
    huge pages where Linux grants them, like the weights it is compared with. On a GPU: a sum
    over its memory (PyTorch's reduction runs near the memory's rate)."""
    if device != "cpu":
        x = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
        return [lambda: x.sum()], torch.cuda.synchronize
    from coeflow.model import kernels

    # in huge pages, as coeflow's weights are (model.hostmem), which read faster
    x = hostmem.empty(nbytes).view(torch.float32).fill_(1)
    rows = x.view(-1, 4096)
    v = torch.ones(4096)
    row_reduce = torch.compile(lambda m, v: (m * v).sum(-1), dynamic=False)
    fns = [lambda: x.sum(), lambda: row_reduce(rows, v)]
    if kernels.load():
        fns += [lambda: kernels.read_sum(x), lambda: kernels.read_sum(x, prefetch=True)]
    return fns, lambda: None


def mem_read_gbps(nbytes: int = 1 << 30, repeats: int = 5, device: str = "cpu") -> float:
    """How fast this machine can read memory with all threads: the best of the read kernels
    (`_read_kernels`) over a buffer far larger than the caches, each the best of `repeats`."""
    fns, sync = _read_kernels(nbytes, device)
    return nbytes / min(_best(fn, repeats, sync) for fn in fns) / 1e9


def read_probe(nbytes: int = 1 << 30, device: str = "cpu", passes: int = 2) -> Callable[[], float]:
    """A function that reads memory as `mem_read_gbps` does and returns the rate in GB/s: the
    limit measured right before and after each timed run of a benchmark. A shared machine's
    read rate swings within a second, so a read taken seconds away from a run does not bound
    that run.
    Each call is the best of `passes` runs of every kernel within 10% of the fastest (timed
    here, best of 3): which of coeflow's two read loops is faster changes with the moment, and
    a single read dips now and then. The buffer stays allocated as long as the function."""
    fns, sync = _read_kernels(nbytes, device)
    times = [_best(fn, 3, sync) for fn in fns]
    kept = [fn for fn, t in zip(fns, times) if t <= 1.1 * min(times)]

    def read() -> float:
        best = float("inf")
        sync()
        for _ in range(passes):
            for fn in kept:
                t = time.perf_counter()
                fn()
                sync()
                best = min(best, time.perf_counter() - t)
        return nbytes / best / 1e9
    return read


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
