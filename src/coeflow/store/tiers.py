"""Byte budgets of the tiers. A tier is a fixed number of bytes handed out by an allocator;
nothing is ever placed in a tier without first being granted bytes here, so a tier's
budget cannot be exceeded by construction (LoRAX's lesson: count bytes, not models)."""

from __future__ import annotations

import bisect
import re

from coeflow.errors import ConfigError

ALIGN = 64  # where a block's tensors start: model.config.CACHE_LINE (not imported: no torch here)
PAGE = 4096  # blocks start on a page: see library.plan_layout for why

_UNITS = {"": 1, "b": 1,
          "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_BYTES = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*")


def parse_bytes(value: str | int | float) -> int:
    """'6GB' -> 6e9 (SI), '512MiB' / '512M' -> 512 * 2**20 (binary, as docker and ollama
    read a bare letter), plain integers are bytes."""
    if isinstance(value, bool):
        raise ConfigError(f"not a byte size: {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ConfigError(f"byte size must not be negative: {value!r}")
        return int(value)
    m = _BYTES.fullmatch(str(value))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise ConfigError(f"not a byte size: {value!r} (try 6GB, 512MiB, 1.5G or a number of bytes)")
    return int(float(m.group(1)) * _UNITS[unit])


def align_up(n: int, align: int = ALIGN) -> int:
    return (n + align - 1) // align * align


class Arena:
    """First-fit allocator of byte ranges inside [0, capacity) of one pre-allocated buffer.
    Experts are few and large, so a sorted free list is all the machinery needed."""

    def __init__(self, capacity: int, align: int = PAGE):
        self.capacity, self.align = capacity, align
        self._free: list[tuple[int, int]] = [(0, capacity)] if capacity > 0 else []  # (offset, size)
        self._used: dict[int, int] = {}

    @property
    def used(self) -> int:
        return sum(self._used.values())

    @property
    def largest_free(self) -> int:
        return max((s for _, s in self._free), default=0)

    def alloc(self, nbytes: int) -> int | None:
        """Offset of a block of `nbytes` (rounded up to `align`, so every block starts aligned),
        or None if no hole is big enough."""
        n = align_up(max(nbytes, 1), self.align)
        for i, (off, size) in enumerate(self._free):
            if size >= n:
                if size == n:
                    del self._free[i]
                else:
                    self._free[i] = (off + n, size - n)
                self._used[off] = n
                return off
        return None

    def free(self, offset: int) -> None:
        n = self._used.pop(offset)
        i = bisect.bisect(self._free, (offset, 0))
        self._free.insert(i, (offset, n))
        # merge with the right neighbour, then the left one
        if i + 1 < len(self._free) and offset + n == self._free[i + 1][0]:
            self._free[i] = (offset, n + self._free.pop(i + 1)[1])
        if i > 0 and self._free[i - 1][0] + self._free[i - 1][1] == offset:
            prev = self._free.pop(i - 1)
            self._free[i - 1] = (prev[0], prev[1] + self._free[i - 1][1])


class Counter:
    """A budget with no buffer behind it: the CPU's device tier, where 'resident' means
    'the engine may attach it' and the bytes already live in the host pool."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.used = 0
        self._blocks: dict[int, int] = {}
        self._next = 0

    @property
    def largest_free(self) -> int:
        return self.capacity - self.used

    def alloc(self, nbytes: int) -> int | None:
        n = align_up(max(nbytes, 1))
        if self.used + n > self.capacity:
            return None
        self._next += 1
        self._blocks[self._next] = n
        self.used += n
        return self._next

    def free(self, handle: int) -> None:
        self.used -= self._blocks.pop(handle)
