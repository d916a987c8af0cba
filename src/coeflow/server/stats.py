"""The last minutes of a server's requests, for the console (GET /v1/stats): each finished
request's expert, outcome, time to first token, time per output token, tokens and the tier
its expert was in, kept for a window and bucketed on demand; and each expert's totals since
start. Prometheus' histograms (/metrics) answer over the whole run; a person watching a
console asks about now."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

WINDOW_S = 600  # how far back the series go
STEP_S = 10  # one point of a series
RATE_S = 60  # an expert's tokens/s is over this last stretch


@dataclass
class RequestRecord:
    at: float
    expert: str
    ok: bool
    ttft_s: float | None
    tpot_s: float | None
    tokens: int
    source_tier: str | None  # where its expert was when it arrived (device: a hit)


@dataclass
class ExpertTotals:
    requests: int = 0
    completion_tokens: int = 0


@dataclass
class RecentRequests:
    clock: Callable[[], float]
    recent: deque = field(default_factory=deque)
    totals: dict[str, ExpertTotals] = field(default_factory=dict)

    def add(self, r: RequestRecord) -> None:
        """On the event loop, as each request ends."""
        self.recent.append(r)
        t = self.totals.setdefault(r.expert, ExpertTotals())
        t.requests += 1
        t.completion_tokens += r.tokens
        while self.recent and self.recent[0].at < r.at - WINDOW_S:
            self.recent.popleft()

    def report(self) -> dict:
        now = self.clock()
        steps = WINDOW_S // STEP_S
        buckets: list[list[RequestRecord]] = [[] for _ in range(steps)]
        for r in self.recent:
            back = int((now - r.at) // STEP_S)
            if 0 <= back < steps:
                buckets[steps - 1 - back].append(r)

        def pct(rs: list[RequestRecord], key: str, q: float) -> float | None:
            values = [getattr(r, key) for r in rs if getattr(r, key) is not None]
            return float(np.quantile(values, q)) if values else None

        tiers = [[r.source_tier for r in b if r.source_tier is not None] for b in buckets]
        recent_tokens: dict[str, int] = {}
        for r in self.recent:
            if r.at >= now - RATE_S:
                recent_tokens[r.expert] = recent_tokens.get(r.expert, 0) + r.tokens
        return {
            "window_s": WINDOW_S, "step_s": STEP_S,
            "series": {
                "requests_per_s": [len(b) / STEP_S for b in buckets],
                "ttft_p50": [pct(b, "ttft_s", 0.5) for b in buckets],
                "ttft_p99": [pct(b, "ttft_s", 0.99) for b in buckets],
                "tpot_p50": [pct(b, "tpot_s", 0.5) for b in buckets],
                "tpot_p99": [pct(b, "tpot_s", 0.99) for b in buckets],
                "switches_per_s": {tier: [t.count(tier) / STEP_S for t in tiers] for tier in ("host", "disk")},
                "device_hit_rate": [t.count("device") / len(t) if t else None for t in tiers],
            },
            "experts": {name: {"requests": t.requests, "completion_tokens": t.completion_tokens,
                               "tokens_per_s_1m": recent_tokens.get(name, 0) / RATE_S}
                        for name, t in self.totals.items()},
        }


