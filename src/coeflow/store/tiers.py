"""The tiers' bookkeeping: byte budgets, who holds bytes in each tier, who leaves a full one.

A tier is a fixed number of bytes handed out by an allocator; nothing is ever placed in a
tier without first being granted bytes here, so a tier's budget cannot be exceeded by
construction (LoRAX's lesson: count bytes, not models). `Tier` is one tier (budget,
residents with their slots and load times, which resident leaves under a policy) and
`Tiers` the host and device tiers of one store, inclusive. The threaded store (under its
lock), the discrete-event replay (coeflow.sim.replay) and `simulate_cache` all keep their
tiers in these objects, so each rule is written once."""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from coeflow.errors import ConfigError
from coeflow.store.policies import Candidate, EvictionPolicy, Usage, choose_victim

PAGE = 4096  # blocks start on a page: the real backend's layouts rely on it (backend.real.layout)

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


def align_up(n: int, align: int) -> int:
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

    def size(self, nbytes: int) -> int:
        """The bytes a grant of `nbytes` takes (rounded up to `align`, so every block starts aligned)."""
        return align_up(max(nbytes, 1), self.align)

    def alloc(self, nbytes: int) -> int | None:
        """Offset of a block of `size(nbytes)` bytes, or None if no hole is big enough."""
        n = self.size(nbytes)
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
    """A budget with no buffer behind it, counted to the byte: the CPU's device tier (where
    'resident' means 'the engine may attach it' and the bytes already live in the host pool)
    and every modelled tier."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.used = 0
        self._blocks: dict[int, int] = {}
        self._next = 0

    @property
    def largest_free(self) -> int:
        return self.capacity - self.used

    def size(self, nbytes: int) -> int:
        return nbytes

    def alloc(self, nbytes: int) -> int | None:
        if self.used + nbytes > self.capacity:
            return None
        self._next += 1
        self._blocks[self._next] = nbytes
        self.used += nbytes
        return self._next

    def free(self, handle: int) -> None:
        self.used -= self._blocks.pop(handle)


@dataclass
class Resident:
    """An expert holding bytes in a tier."""
    nbytes: int
    slot: int  # the allocator's offset (or handle) of its bytes
    loaded_at: float | None = None  # when its last byte was in; None while they still move
    weights: Any = None  # what the backend handed back for this tier (None when modelled)


class Tier:
    """One tier's bookkeeping: its allocator (an Arena of a real buffer, or a Counter), the
    residents, and which of them leaves under `policy` when it is full. A resident granted
    bytes whose load has no end yet (`loaded` not called) is never a candidate; the caller
    protects more through `evictable` (leased, pinned and loading experts: on a modelled
    clock a load's end is known when it starts, and lies ahead until then)."""

    def __init__(self, name: str, allocator: Arena | Counter, policy: EvictionPolicy):
        self.name, self.allocator, self.policy = name, allocator, policy
        self.residents: dict[str, Resident] = {}

    @property
    def capacity(self) -> int:
        return self.allocator.capacity

    @property
    def used(self) -> int:
        """Bytes granted now, loads in flight included."""
        return self.allocator.used

    def __contains__(self, name: str) -> bool:
        return name in self.residents

    def ready(self, name: str, now: float = math.inf) -> bool:
        r = self.residents.get(name)
        return r is not None and r.loaded_at is not None and r.loaded_at <= now

    def weights(self, name: str) -> Any:
        """The weights of a ready resident, else None."""
        return self.residents[name].weights if self.ready(name) else None

    def grant(self, name: str, nbytes: int) -> int | None:
        """Grant `nbytes` to `name` if a hole fits them (its slot), else None; evicts nothing."""
        assert name not in self.residents, f"{name} already holds bytes in the {self.name} tier"
        slot = self.allocator.alloc(nbytes)
        if slot is not None:
            self.residents[name] = Resident(nbytes, slot)
        return slot

    def loaded(self, name: str, at: float, weights: Any = None) -> None:
        """`name`'s bytes are all in (from time `at`, which may lie ahead on a modelled clock)."""
        r = self.residents[name]
        r.loaded_at, r.weights = at, weights

    def drop(self, name: str) -> Resident | None:
        """Return `name`'s bytes to the allocator (None if it held none)."""
        r = self.residents.pop(name, None)
        if r is not None:
            self.allocator.free(r.slot)
        return r

    def victim(self, now: float, usage: Callable[[str], Usage],
               evictable: Callable[[str], bool] = lambda name: True) -> str | None:
        """The resident to evict next: lowest priority class first, then the policy's order
        (choose_victim); None when no loaded resident is evictable."""
        cands = self._candidates(now, usage, evictable)
        return self._pick(cands, now).name if cands else None

    def make_room(self, name: str, nbytes: int, now: float, usage: Callable[[str], Usage],
                  evictable: Callable[[str], bool], evict: Callable[[str], Any],
                  spared: Callable[[str], bool] = lambda name: False, take_spared: bool = True) -> int | None:
        """As `_make_room`, evicting the `spared` residents (experts queued requests want) only
        when the others cannot make room, and then only if `take_spared` (a prefetch does not)."""
        slot = self._make_room(name, nbytes, now, usage, lambda n: evictable(n) and not spared(n), evict)
        if slot is None and take_spared:
            slot = self._make_room(name, nbytes, now, usage, evictable, evict)
        return slot

    def _make_room(self, name: str, nbytes: int, now: float, usage: Callable[[str], Usage],
                   evictable: Callable[[str], bool], evict: Callable[[str], Any]) -> int | None:
        """Grant `nbytes` to `name`, evicting victims one by one (as `victim` picks them)
        until a hole fits them; its slot. `evict(victim)` must drop the victim from this tier
        (the caller's hierarchy may drop it from others too). Evicts nothing and returns None
        when all the evictable residents together could not make room (the caller waits for
        a release, or fails); also None when they ran out before a hole fit (an Arena can be
        fragmented)."""
        if nbytes > self.capacity:
            raise ConfigError(f"an expert of {nbytes} bytes is larger than the {self.name} tier "
                              f"({self.capacity} bytes)")
        slot = self.grant(name, nbytes)
        if slot is not None:
            return slot
        need, size = self.allocator.size(nbytes), self.allocator.size
        cands = self._candidates(now, usage, evictable)
        victims, free = [], self.capacity - self.used
        while free < need:  # the victims in the policy's order, as many as the bytes need
            if not cands:
                return None  # all of them could not make room: evict none
            victims.append(self._pick(cands, now))
            free += size(victims[-1].nbytes)
        while slot is None:
            if not victims:  # bytes enough, but no hole fits them (a fragmented Arena)
                if not cands:
                    return None
                victims.append(self._pick(cands, now))
            v = victims.pop(0).name
            evict(v)
            assert v not in self.residents, f"evicting {v} did not free its bytes in the {self.name} tier"
            slot = self.grant(name, nbytes)
        return slot

    def _pick(self, cands: list[Candidate], now: float) -> Candidate:
        """The next victim among `cands` (removed from the list)."""
        v = choose_victim(self.policy, cands, now)
        cands.remove(v)
        return v

    def _candidates(self, now: float, usage: Callable[[str], Usage],
                    evictable: Callable[[str], bool]) -> list[Candidate]:
        """How residents look to a policy. Never used since it entered the store means "last
        used when it was loaded into this tier"."""
        out = []
        for name, r in self.residents.items():
            if r.loaded_at is not None and evictable(name):
                u = usage(name)
                out.append(Candidate(name, r.nbytes, u.last_used if u.last_used is not None else r.loaded_at,
                                     r.loaded_at, u.uses, u.priority))
        return out


class Tiers:
    """The host and device tiers of one store. Inclusive: an expert on the device keeps its
    host copy, so leaving the device costs nothing, and leaving the host leaves the device."""

    def __init__(self, host: Tier, device: Tier):
        self.host, self.device = host, device

    def __getitem__(self, tier: str) -> Tier:
        if tier not in ("host", "device"):
            raise KeyError(tier)
        return self.host if tier == "host" else self.device

    def ready_tier(self, name: str, now: float = math.inf) -> str:
        """The highest tier whose copy of `name` is complete at `now`."""
        if self.device.ready(name, now):
            return "device"
        return "host" if self.host.ready(name, now) else "disk"

    def evict(self, name: str, tier: str) -> None:
        """Drop `name` from `tier`; leaving the host also leaves the device."""
        self.device.drop(name)
        if tier == "host":
            self.host.drop(name)


@dataclass
class CacheResult:
    policy: str
    requests: int
    hits: int
    bytes_moved: int

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requests if self.requests else 0.0


def simulate_cache(trace: Sequence[str], sizes: dict[str, int], capacity: int,
                   policy: EvictionPolicy) -> CacheResult:
    """One tier of `capacity` bytes serving `trace`, to compare policies offline (`coeflow
    bench cache`): a miss loads the expert (bytes moved += its size), evicting victims chosen
    by `policy` until it fits. Time is the request's index, which lets Belady see the future;
    an expert's use count restarts when it re-enters the tier."""
    tier = Tier("cache", Counter(capacity), policy)
    last: dict[str, tuple[float, int]] = {}  # name -> (last use, uses since it entered)
    hits = moved = 0
    for now, name in enumerate(trace):
        policy.on_access(name, now)
        if name in tier:
            last[name] = (now, last[name][1] + 1)
            hits += 1
            continue
        size = sizes[name]
        if size > capacity:
            raise ConfigError(f"expert {name!r} ({size} bytes) is larger than the tier ({capacity} bytes)")
        tier.make_room(name, size, now, lambda n: Usage(*last[n]), lambda n: True, tier.drop)
        tier.loaded(name, now)
        last[name] = (now, 1)
        moved += size
    return CacheResult(policy.name, len(trace), hits, moved)
