"""What a pass costs: time, launches, and where the time and bytes went. Shared by the GPU and
RDU mappers so their breakdowns read the same."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PassCost:
    """One forward pass (prefill, or one decode step) on one device of a TP group."""

    time_s: float = 0.0
    launches: int = 0
    kernels: int = 0  # distinct kernels in the pass (after fusion)
    by_kind: dict[str, float] = field(default_factory=dict)  # seconds per kernel class
    bytes_by_tier: dict[str, float] = field(default_factory=dict)  # hbm, ddr, interconnect
    flops: float = 0.0

    def add(self, kind: str, seconds: float, count: int = 1) -> None:
        self.by_kind[kind] = self.by_kind.get(kind, 0.0) + seconds * count
        self.time_s += seconds * count

    def add_bytes(self, tier: str, nbytes: float, count: int = 1) -> None:
        if nbytes:
            self.bytes_by_tier[tier] = self.bytes_by_tier.get(tier, 0.0) + nbytes * count

    def scaled(self, factor: float) -> "PassCost":
        return PassCost(self.time_s * factor, round(self.launches * factor),
                        self.kernels, {k: v * factor for k, v in self.by_kind.items()},
                        {k: v * factor for k, v in self.bytes_by_tier.items()},
                        self.flops * factor)

    def plus(self, other: "PassCost") -> "PassCost":
        out = PassCost(self.time_s + other.time_s, self.launches + other.launches,
                       max(self.kernels, other.kernels), dict(self.by_kind),
                       dict(self.bytes_by_tier), self.flops + other.flops)
        for k, v in other.by_kind.items():
            out.by_kind[k] = out.by_kind.get(k, 0.0) + v
        for k, v in other.bytes_by_tier.items():
            out.bytes_by_tier[k] = out.bytes_by_tier.get(k, 0.0) + v
        return out


def ring_all_reduce_s(nbytes: float, tp: int, link_bandwidth: float) -> float:
    """Bandwidth term of a ring all-reduce: each device sends and receives 2(t-1)/t of the
    payload (Patarasuk & Yuan 2009; the model NCCL's ring algorithm follows)."""
    if tp <= 1:
        return 0.0
    return 2 * (tp - 1) / tp * nbytes / link_bandwidth


def all_gather_s(shard_bytes: float, tp: int, link_bandwidth: float) -> float:
    """Ring all-gather: each device receives the other t-1 shards."""
    if tp <= 1:
        return 0.0
    return (tp - 1) * shard_bytes / link_bandwidth
