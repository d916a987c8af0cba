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

from coeflow.backend.interface import Moved
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

    @property
    def device_block_bytes(self) -> int:
        return self.block_bytes


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
        self.reserved: tuple[int, int] | None = None
        self.steps: list[tuple[str, Any, int, int]] = []  # (expert, weights, rows, longest prompt) a step
        self.warmed: list[tuple[str, str, int]] = []  # (expert, whose weights, max rows) a warm-up
        self._batches: dict[str, FakeBatch] = {}
        self._lock = threading.Lock()

    def plan(self, expert: str, path: Any, sha256: str | None = None) -> Plan:
        if expert in self.broken:
            raise CheckpointError(f"{path}: truncated")
        return Plan(SimpleNamespace(name=expert), self.sizes[expert], self.sizes[expert])

    def default_device_budget(self, everything: int) -> int:
        return everything

    def reserve(self, host_bytes: int, device_bytes: int) -> None:
        self.reserved = (host_bytes, device_bytes)

    def expert_bytes(self, expert: str, tier: str = "host") -> int:
        return self.sizes[expert]

    def evicted(self, expert: str, tier: str) -> None:
        pass

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

    def batch(self, expert: str) -> "FakeBatch":
        if expert not in self._batches:
            self._batches[expert] = FakeBatch(self, expert)
        return self._batches[expert]

    def route_s(self, batch: int, prompt: int) -> float:
        return 0.0


class FakeBatch:
    """An expert's running jobs: every step gives each one token ("x"), 0.1 s on the clock."""

    def __init__(self, backend: FakeBackend, expert: str) -> None:
        self.b, self.expert = backend, expert
        self.tokens: dict[int, list] = {}  # id(job) -> [job, tokens so far]

    @property
    def live(self) -> list:
        return [job for job, _ in self.tokens.values()]

    def check(self, job) -> None:
        pass

    def fits(self, job) -> bool:
        return True

    def admit(self, job) -> None:
        self.tokens[id(job)] = [job, 0]

    def step(self, resident, prefill_budget: int) -> list:
        self.b.steps.append((self.expert, resident.weights, len(self.tokens),
                             max(j.prompt_tokens for j in self.live)))
        self.b.clock.t += 0.1
        out = []
        for entry in self.tokens.values():
            job, n = entry[0], entry[1] + 1
            entry[1] = n
            out.append((job, SimpleNamespace(index=0, token_id=n - 1, text="x", completion_tokens=n, error=None,
                                             finish_reason="length" if n >= job.gen_tokens else None)))
        return out

    def leave(self, job) -> None:
        self.tokens.pop(id(job), None)

    def pause(self) -> None:
        pass

    def warm(self, resident, max_rows: int) -> int:
        self.b.warmed.append((self.expert, resident.weights["expert"], max_rows))
        return max_rows


def fake_coe(root: Path, names, **extra: dict) -> CoEFile:
    """A CoE file of empty expert directories (the fake backend reads nothing);
    `extra[name]` adds pin/priority/ttl_s to that expert's entry."""
    for n in names:
        (root / n).mkdir(parents=True)
    (root / "coe.yaml").write_text(yaml.safe_dump(
        {"name": "t", "fallback": names[0],
         "experts": [{"name": n, "path": n, **extra.get(n, {})} for n in names]}))
    return load_coe(root / "coe.yaml")
