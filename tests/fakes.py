"""A backend that holds no tensors and keeps its own clock, for tests of the store's and the
scheduler's decisions: experts have the sizes a test gives them, a move returns a dict naming
the expert, the tier and the slot it landed in (so a test can tell whose weights a lease got),
and time moves only when a move or a batch says so, or when the test ticks the clock."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from coeflow.backend.interface import BatchTimes, Moved
from coeflow.coefile import CoEFile, load_coe
from coeflow.errors import CheckpointError

MB = 1 << 20


class StepClock:
    """Time that moves only when the fake backend works or the test ticks it."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def tick(self, dt: float = 1.0) -> float:
        self.t += dt
        return self.t


@dataclass
class Plan:
    config: Any
    nbytes: int
    block_bytes: int


class FakeBackend:
    """Experts of `sizes_mb[name]` MB; a move takes `s_per_mb` seconds per MB on the clock
    (0 keeps the clock still for tests that tick it themselves), a batch 0.5 s. Experts named
    in `broken` cannot be planned, as a corrupt checkpoint. Every move is checked to land
    inside the bytes reserved for its tier, as a real pool would demand."""

    def __init__(self, sizes_mb: dict[str, int], broken: tuple[str, ...] = (), device_copies: bool = True,
                 s_per_mb: float = 1.0):
        self.sizes = {n: mb * MB for n, mb in sizes_mb.items()}
        self.broken, self.device_copies, self.s_per_mb = broken, device_copies, s_per_mb
        self.clock = StepClock()
        self.moves: list[tuple[str, str, str, int]] = []
        self.batches: list[tuple[str, Any, int, int]] = []
        self.reserved: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def plan(self, expert: str, path: Any, sha256: str | None = None) -> Plan:
        if expert in self.broken:
            raise CheckpointError(f"{path}: truncated")
        return Plan(SimpleNamespace(name=expert), self.sizes[expert], self.sizes[expert])

    def default_device_budget(self, everything: int) -> int:
        return everything

    def reserve(self, host_bytes: int, device_bytes: int) -> None:
        self.reserved = (host_bytes, device_bytes)

    def expert_bytes(self, expert: str) -> int:
        return self.sizes[expert]

    def move(self, expert: str, src: str, dst: str, slot: int = 0) -> Moved:
        assert self.reserved is not None, "a move before the tiers were reserved"
        pool = self.reserved[0] if dst == "host" else self.reserved[1]
        if dst == "host" or self.device_copies:  # slot is a byte offset into a real buffer
            assert 0 <= slot and slot + self.sizes[expert] <= pool, \
                f"{expert} moved to {dst}[{slot}:{slot + self.sizes[expert]}], outside its {pool} bytes"
        with self._lock:
            self.moves.append((expert, src, dst, slot))
            seconds = self.sizes[expert] / MB * self.s_per_mb
            self.clock.t += seconds
        return Moved(seconds, {"expert": expert, "tier": dst, "slot": slot})

    def run_batch(self, expert, resident, batch, on_token=None) -> BatchTimes:
        self.batches.append((expert, resident.weights, len(batch), max(r.prompt_tokens for r in batch)))
        self.clock.t += 0.5
        for i, r in enumerate(batch):
            for k in range(r.gen_tokens):
                done = k == r.gen_tokens - 1
                on_token(SimpleNamespace(index=i, token_id=k, text="x", finish_reason="length" if done else None,
                                         completion_tokens=k + 1))
        return BatchTimes(0.25, 0.25)

    def route_s(self, batch: int, prompt: int) -> float:
        return 0.0


def fake_coe(root: Path, names, **extra: dict) -> CoEFile:
    """A CoE file of empty expert directories (the fake backend reads nothing);
    `extra[name]` adds pin/priority/ttl_s to that expert's entry."""
    for n in names:
        (root / n).mkdir(parents=True)
    (root / "coe.yaml").write_text(yaml.safe_dump(
        {"name": "t", "fallback": names[0],
         "experts": [{"name": n, "path": n, **extra.get(n, {})} for n in names]}))
    return load_coe(root / "coe.yaml")
