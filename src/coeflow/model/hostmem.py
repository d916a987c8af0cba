"""Host memory for weights a CPU decode step streams: buffers backed by huge pages.

Why: a decode step reads every weight once per token. In 4 KiB pages that is a TLB entry (a
page walk when missing) every 4 KiB of weights; in 2 MiB pages, 512 times fewer.

Linux backs anonymous memory with transparent huge pages when the memory asks for them
(`madvise(MADV_HUGEPAGE)`) and THP is in `madvise` or `always` mode (most distributions'
default is one of them). Elsewhere the request is ignored and the buffer is ordinary memory.
Pinned memory (CUDA's page-locked allocations) is not touched.

The buffer is its own fresh mapping, not an allocator's: malloc may hand a large request out
of memory a long-running process already touched (in small pages), and advice given after the
first touch changes nothing until khugepaged gets round to it."""

from __future__ import annotations

import ctypes
import logging
import mmap
import sys

import torch

log = logging.getLogger(__name__)

HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14  # <sys/mman.h> on Linux


def empty(nbytes: int) -> torch.Tensor:
    """An uninitialised uint8 CPU buffer of `nbytes` that starts on a 2 MiB boundary and asks
    for huge pages (before anything touches it, so first-touch faults map huge pages)."""
    if sys.platform == "linux":  # untouched pages straight from the kernel; the tensor owns the map
        region = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        raw = torch.frombuffer(region, dtype=torch.uint8)
    else:
        raw = torch.empty(nbytes + HUGE_PAGE, dtype=torch.uint8)
    skip = -raw.data_ptr() % HUGE_PAGE
    buf = raw[skip:skip + nbytes]
    advise_huge_pages(buf)
    return buf


def advise_huge_pages(buf: torch.Tensor) -> bool:
    """Ask Linux to back `buf`'s whole 2 MiB pages with huge pages; False where it cannot."""
    if sys.platform != "linux" or buf.device.type != "cpu":
        return False
    start = buf.data_ptr() + (-buf.data_ptr() % HUGE_PAGE)
    end = (buf.data_ptr() + buf.numel() * buf.element_size()) // HUGE_PAGE * HUGE_PAGE
    if end <= start:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_HUGEPAGE) == 0
    except (OSError, AttributeError):
        ok = False
    if not ok:
        log.debug("madvise(MADV_HUGEPAGE) refused (errno %d); ordinary pages", ctypes.get_errno())
    return ok
