"""Eviction policies: which resident expert leaves a full tier.

The store filters first (pinned, leased, loading and awaited experts are never candidates)
and prefers the lowest priority class; a policy only orders what is left. The same policy
objects drive `replay`, the offline simulator of `coeflow bench cache`, where time is the
index of the request in the trace, which is what lets Belady (which must see the future)
sit beside the online policies."""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Sequence

from coeflow.errors import ConfigError


@dataclass(frozen=True)
class Candidate:
    """What a policy may look at: one resident, evictable expert."""
    name: str
    nbytes: int
    last_used: float   # time of last acquire (or of the load, if never acquired)
    loaded_at: float   # when it entered the tier
    uses: int          # acquires since it entered the store
    priority: int = 0


class EvictionPolicy(ABC):
    name: str = "?"

    def on_access(self, name: str, now: float) -> None:
        """Called on every request for `name` (hit or miss), for policies that keep history."""

    @abstractmethod
    def victim(self, candidates: Sequence[Candidate], now: float) -> Candidate:
        """The candidate to evict (candidates is never empty)."""


class LRU(EvictionPolicy):
    """Least recently used: the default; ollama, llama.cpp's router and LoRAX do the same."""
    name = "lru"

    def victim(self, candidates: Sequence[Candidate], now: float) -> Candidate:
        return min(candidates, key=lambda c: (c.last_used, c.name))


class LFU(EvictionPolicy):
    """Least frequently used, ties broken by recency."""
    name = "lfu"

    def victim(self, candidates: Sequence[Candidate], now: float) -> Candidate:
        return min(candidates, key=lambda c: (c.uses, c.last_used, c.name))


class FIFO(EvictionPolicy):
    """First in, first out: the baseline that ignores use."""
    name = "fifo"

    def victim(self, candidates: Sequence[Candidate], now: float) -> Candidate:
        return min(candidates, key=lambda c: (c.loaded_at, c.name))


class LRFU(EvictionPolicy):
    """Frequency with exponential decay (Lee et al.'s LRFU): each request adds 1 to an
    expert's score and scores halve every `half_life` (in the clock's units: seconds in the
    store, requests in `replay`). Long half-lives behave like LFU on steady traffic, short
    ones like LRU; in between it follows a working set that moves without forgetting which
    experts stay popular."""
    name = "lrfu"

    def __init__(self, half_life: float = 60.0):
        self.half_life = half_life
        self._score: dict[str, tuple[float, float]] = {}  # name -> (score, at)

    def score(self, name: str, now: float) -> float:
        s, at = self._score.get(name, (0.0, now))
        return s * 0.5 ** ((now - at) / self.half_life)

    def on_access(self, name: str, now: float) -> None:
        self._score[name] = (self.score(name, now) + 1.0, now)

    def victim(self, candidates: Sequence[Candidate], now: float) -> Candidate:
        return min(candidates, key=lambda c: (self.score(c.name, now), c.last_used, c.name))


class Belady(EvictionPolicy):
    """Offline optimum for equal-size items: evict the expert whose next request lies
    furthest in the future (never requested again = infinitely far). Needs the whole trace,
    so it only exists for evaluation; `now` is the index of the current request."""
    name = "belady"

    def __init__(self, trace: Sequence[str]):
        self._uses: dict[str, list[int]] = {}
        for i, name in enumerate(trace):
            self._uses.setdefault(name, []).append(i)

    def next_use(self, name: str, now: float) -> float:
        uses = self._uses.get(name, [])
        i = bisect.bisect_right(uses, now)
        return uses[i] if i < len(uses) else float("inf")

    def victim(self, candidates: Sequence[Candidate], now: float) -> Candidate:
        return max(candidates, key=lambda c: (self.next_use(c.name, now), c.name))


ONLINE_POLICIES = {"lru": LRU, "lfu": LFU, "fifo": FIFO, "lrfu": LRFU}


def make_policy(policy: str | EvictionPolicy) -> EvictionPolicy:
    if isinstance(policy, EvictionPolicy):
        return policy
    if policy not in ONLINE_POLICIES:
        raise ConfigError(f"unknown eviction policy {policy!r}; choose one of "
                          f"{', '.join(ONLINE_POLICIES)} (belady needs the trace: pass Belady(trace))")
    return ONLINE_POLICIES[policy]()


def choose_victim(policy: EvictionPolicy, candidates: Sequence[Candidate], now: float) -> Candidate:
    """Priority first (lower priority leaves first), then the policy's order."""
    lowest = min(c.priority for c in candidates)
    return policy.victim([c for c in candidates if c.priority == lowest], now)


def tier_candidate(name: str, nbytes: int, last_used: float | None, tier_loaded_at: float,
                   uses: int, priority: int = 0) -> Candidate:
    """How the store presents a resident expert to its policy: never used since it entered
    the store means "last used when it was loaded into this tier". The threaded store and
    the modelled backend both build candidates here."""
    return Candidate(name, nbytes, last_used if last_used is not None else tier_loaded_at,
                     tier_loaded_at, uses, priority)


class TierState:
    """The bookkeeping of one tier, with no bytes behind it: which experts it holds, their
    sizes and load times, a byte budget, and the policy that picks who leaves. `replay` and
    the modelled backend (coeflow.backend) use it; the threaded store keeps the same rules
    around its real memory arenas (choose_victim, tier_candidate)."""

    def __init__(self, capacity: int, policy: EvictionPolicy, name: str = "tier"):
        self.capacity, self.policy, self.name = capacity, policy, name
        self.resident: dict[str, tuple[int, float]] = {}  # name -> (bytes, loaded_at)
        self.used = 0

    def __contains__(self, name: str) -> bool:
        return name in self.resident

    def victims(self, nbytes: int, now: float, candidate: Callable[[str, int, float], Candidate],
                evictable: Callable[[str], bool]) -> list[str] | None:
        """The experts to evict, in order, so that `nbytes` more fit; None when the evictable
        ones cannot make room (the caller waits for a release, or fails). Evicts nothing."""
        if nbytes > self.capacity:
            raise ConfigError(f"an expert of {nbytes} bytes is larger than the {self.name} tier "
                              f"({self.capacity} bytes)")
        free = self.capacity - self.used
        cands = [candidate(n, b, at) for n, (b, at) in self.resident.items() if evictable(n)]
        out: list[str] = []
        while free < nbytes:
            if not cands:
                return None
            v = choose_victim(self.policy, cands, now)
            cands.remove(v)
            out.append(v.name)
            free += v.nbytes
        return out

    def add(self, name: str, nbytes: int, now: float) -> None:
        assert name not in self.resident and self.used + nbytes <= self.capacity
        self.resident[name] = (nbytes, now)
        self.used += nbytes

    def remove(self, name: str) -> None:
        self.used -= self.resident.pop(name)[0]


@dataclass
class ReplayResult:
    policy: str
    requests: int
    hits: int
    bytes_moved: int

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requests if self.requests else 0.0


def replay(trace: Sequence[str], sizes: dict[str, int], capacity: int,
           policy: EvictionPolicy) -> ReplayResult:
    """Simulate one tier of `capacity` bytes serving `trace`: a miss loads the expert
    (bytes moved += its size), evicting victims chosen by `policy` until it fits. Time is
    the request's index; an expert's use count restarts when it re-enters the tier."""
    tier = TierState(capacity, policy)
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
        victims = tier.victims(size, now, lambda n, b, at: Candidate(n, b, last[n][0], at, last[n][1]),
                               lambda n: True)
        for v in victims or ():
            tier.remove(v)
        tier.add(name, size, now)
        last[name] = (now, 1)
        moved += size
    return ReplayResult(policy.name, len(trace), hits, moved)
