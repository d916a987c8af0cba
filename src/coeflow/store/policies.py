"""Eviction policies: which resident expert leaves a full tier.

The store filters first (pinned, leased, loading and awaited experts are never candidates)
and prefers the lowest priority class (`choose_victim`, called by tiers.Tier); a policy only
orders what is left. The same policy objects drive the discrete-event replay and
`tiers.simulate_cache`, the offline simulator of `coeflow bench cache`, where time is the
index of the request in the trace, which is what lets Belady (which must see the future)
sit beside the online policies."""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import NamedTuple, Sequence

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


class Usage(NamedTuple):
    """What a tier's owner knows of an expert's use (the tier knows its bytes and load time)."""
    last_used: float | None  # None: never used since it entered the store
    uses: int
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
    store, requests in `simulate_cache`). Long half-lives behave like LFU on steady traffic, short
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
DEFAULT_POLICY = LRU.name


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
