"""The pre-allocated buffers behind the host and device tiers of the real backend. One big
uint8 tensor per tier, allocated once at start-up; experts are byte ranges of it, granted by
the store's Arena, and their tensors are views, so a load never allocates per tensor and
freeing an expert is returning a range to the Arena."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from coeflow.model import hostmem
from coeflow.store.tiers import PAGE

log = logging.getLogger(__name__)

PREFAULT_CHUNK = 256 << 20


@dataclass
class HostPool:
    """DRAM for the host tier. Pinned (page-locked) when CUDA is present, so host -> device
    copies run asynchronously at full link speed; otherwise in huge pages, since the CPU
    engine decodes from it directly. Touched once at start-up, so the first load into it is
    not slowed by page faults (pinned memory is resident already)."""
    capacity: int
    pinned: bool
    buffer: torch.Tensor = field(init=False)
    view: memoryview = field(init=False)

    def __post_init__(self) -> None:
        t = time.perf_counter()
        if self.pinned:
            raw = torch.empty(self.capacity + PAGE, dtype=torch.uint8, pin_memory=True)
            skip = -raw.data_ptr() % PAGE  # start on a page, as the layouts assume
            self.buffer = raw[skip:skip + self.capacity]
        else:  # the engine streams weights straight from here: huge pages (model.hostmem)
            self.buffer = hostmem.empty(self.capacity)
            for start in range(0, self.capacity, PREFAULT_CHUNK):
                self.buffer[start:start + PREFAULT_CHUNK].zero_()
        self.view = memoryview(self.buffer.numpy()).cast("B")
        log.info("host pool: %.2f GB %s in %.2f s", self.capacity / 1e9,
                 "pinned" if self.pinned else "pageable", time.perf_counter() - t)


@dataclass
class DevicePool:
    """Device memory for the device tier where host -> device is a copy (CUDA): a
    pre-allocated slab into which experts are copied. (On a CPU there is none: the engine
    attaches host-pool tensors directly and the tier is only a byte budget.)"""
    capacity: int
    device: torch.device
    buffer: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.buffer = torch.empty(max(self.capacity, 1), dtype=torch.uint8, device=self.device)
