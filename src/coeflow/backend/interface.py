"""What the CoE core asks of a backend: how long moving an expert between tiers takes, how
long generating a batch on an expert takes, and what time it is. The discrete-event replay
(replay.py) asks only this, so any implementation of it can be replayed on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

TIERS = ("disk", "host", "device")  # the store's tier names, slowest first


@dataclass(frozen=True)
class BatchTimes:
    """One batch on one expert: time to the first token, then per further token."""
    ttft_s: float
    tpot_s: float
    hbm_bytes: float = 0.0  # bytes read from the device's fast memory by the whole batch (all devices)

    def finish_s(self, gen: int) -> float:
        """Seconds from the batch's start to a sequence's last of `gen` tokens."""
        return self.ttft_s + (max(gen, 1) - 1) * self.tpot_s


class Clock(Protocol):
    def now(self) -> float: ...


class Backend(Protocol):
    clock: Clock

    def expert_bytes(self, expert: str) -> int:
        """Bytes of the expert's weights as a tier holds them."""

    def move_s(self, expert: str, src: str, dst: str) -> float:
        """Seconds to bring `expert` from tier `src` up to tier `dst` (one hop)."""

    def batch_times(self, expert: str, batch: int, prompt: int, gen: int) -> BatchTimes:
        """Prefill `batch` prompts of `prompt` tokens, then decode up to `gen` tokens."""

    def route_s(self, batch: int, prompt: int) -> float:
        """Seconds the router takes for a batch of prompts (0 when it is not modelled)."""


class SimClock:
    """Simulated time: starts at 0 and moves only when the replay advances it."""

    def __init__(self) -> None:
        self._t = 0.0

    def now(self) -> float:
        return self._t

    def advance_to(self, t: float) -> None:
        if t > self._t:
            self._t = t
