"""Synthetic traces: Poisson arrivals whose rate may follow a diurnal curve and bursts, and
a Zipf popularity over experts (the first expert named is the most popular).

A non-homogeneous Poisson process is drawn by thinning (Lewis & Shedler 1979): candidates at
the peak rate, each kept with probability rate(t) / peak. Everything comes from one seeded
`random.Random`, so a (spec, seed) pair always gives the same trace."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from coeflow.errors import ConfigError
from coeflow.trace.format import TraceRequest


@dataclass(frozen=True)
class Burst:
    """From `start_s` for `duration_s`, arrivals come `factor` times faster."""
    start_s: float
    duration_s: float
    factor: float

    @staticmethod
    def parse(text: str) -> "Burst":
        """START:DURATION:FACTOR, e.g. 60:10:5."""
        try:
            start, dur, factor = (float(x) for x in text.split(":"))
        except ValueError:
            raise ConfigError(f"--burst {text!r}: expected START:DURATION:FACTOR, e.g. 60:10:5") from None
        if start < 0 or dur <= 0 or factor <= 0:
            raise ConfigError(f"--burst {text!r}: start >= 0, duration > 0 and factor > 0")
        return Burst(start, dur, factor)


@dataclass(frozen=True)
class TraceSpec:
    experts: tuple[str, ...]
    rate: float  # mean requests per second (before diurnal and burst factors)
    requests: int | None = None  # stop after this many ...
    duration_s: float | None = None  # ... or at this time (whichever comes first)
    zipf_s: float = 1.0  # popularity of rank k ~ 1 / k^s; 0 is uniform
    prompt_tokens: tuple[int, int] = (128, 128)  # uniform in [lo, hi]
    max_tokens: tuple[int, int] = (20, 20)
    diurnal_period_s: float | None = None  # rate x (1 + amplitude sin(2 pi t / period))
    diurnal_amplitude: float = 0.5
    bursts: tuple[Burst, ...] = field(default_factory=tuple)
    seed: int = 0

    def check(self) -> None:
        if not self.experts:
            raise ConfigError("a trace needs at least one expert")
        if self.rate <= 0:
            raise ConfigError(f"--rate must be > 0, got {self.rate}")
        if self.requests is None and self.duration_s is None:
            raise ConfigError("give --requests or --duration")
        if self.zipf_s < 0:
            raise ConfigError("--zipf must be >= 0 (0 is uniform)")
        if not 0 <= self.diurnal_amplitude < 1:
            raise ConfigError("--diurnal-amplitude must be in [0, 1)")
        for lo, hi, name in (*self.prompt_tokens, "--prompt-tokens"), (*self.max_tokens, "--max-tokens"):
            if not 1 <= lo <= hi:
                raise ConfigError(f"{name}: need 1 <= low <= high, got {lo}..{hi}")

    def rate_at(self, t: float) -> float:
        r = self.rate
        if self.diurnal_period_s:
            r *= 1 + self.diurnal_amplitude * math.sin(2 * math.pi * t / self.diurnal_period_s)
        for b in self.bursts:
            if b.start_s <= t < b.start_s + b.duration_s:
                r *= b.factor
        return r

    def peak_rate(self) -> float:
        peak = self.rate * (1 + (self.diurnal_amplitude if self.diurnal_period_s else 0.0))
        return peak * math.prod(max(1.0, b.factor) for b in self.bursts)


def zipf_weights(n: int, s: float) -> list[float]:
    w = [1.0 / (k + 1) ** s for k in range(n)]
    total = sum(w)
    return [x / total for x in w]


def generate(spec: TraceSpec) -> list[TraceRequest]:
    spec.check()
    rng = random.Random(spec.seed)
    weights = zipf_weights(len(spec.experts), spec.zipf_s)
    peak = spec.peak_rate()
    out: list[TraceRequest] = []
    t = 0.0
    while spec.requests is None or len(out) < spec.requests:
        t += rng.expovariate(peak)
        if spec.duration_s is not None and t >= spec.duration_s:
            break
        if rng.random() * peak > spec.rate_at(t):
            continue  # thinned: the rate is below its peak here
        expert = rng.choices(spec.experts, weights)[0]
        out.append(TraceRequest(round(t, 6), expert, rng.randint(*spec.max_tokens),
                                prompt_tokens=rng.randint(*spec.prompt_tokens)))
    return out
