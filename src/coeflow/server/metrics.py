"""Prometheus metrics of one server (a registry of its own, so several servers in one
process, as in tests, never share counters)."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _Live:
    """Gauges read at scrape time (queue depth, residency) instead of being kept in step."""

    def __init__(self, queue_depth: Callable[[], dict[str, int]], tiers: Callable[[], dict[str, str]]):
        self.queue_depth, self.tiers = queue_depth, tiers

    def collect(self):
        q = GaugeMetricFamily("coeflow_queue_depth", "requests waiting, per expert", labels=["expert"])
        for name, n in self.queue_depth().items():
            q.add_metric([name], n)
        yield q
        t = GaugeMetricFamily("coeflow_expert_tier", "1 for the tier each expert is in now",
                              labels=["expert", "tier"])
        for name, tier in self.tiers().items():
            t.add_metric([name, tier], 1)
        yield t


class Metrics:
    def __init__(self, queue_depth: Callable[[], dict[str, int]], tiers: Callable[[], dict[str, str]]):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("coeflow_requests", "requests by expert and outcome",
                                ["expert", "outcome"], registry=r)
        self.prompt_tokens = Counter("coeflow_prompt_tokens", "prompt tokens", ["expert"], registry=r)
        self.completion_tokens = Counter("coeflow_completion_tokens", "generated tokens", ["expert"], registry=r)
        self.ttft = Histogram("coeflow_time_to_first_token_seconds", "arrival to first token",
                              ["expert"], buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("coeflow_time_per_output_token_seconds", "mean gap between tokens after the first",
                              ["expert"], buckets=LATENCY_BUCKETS, registry=r)
        self.switch = Histogram("coeflow_switch_seconds", "time to make an expert resident, by the tier it came from",
                                ["source_tier"], buckets=LATENCY_BUCKETS, registry=r)
        self.acquires = Counter("coeflow_expert_acquires", "requests, by the tier their expert was in "
                                "on arrival (device = hit)", ["source_tier"], registry=r)
        self.router_latency = Histogram("coeflow_router_latency_seconds", "time to route one prompt",
                                        buckets=LATENCY_BUCKETS, registry=r)
        r.register(_Live(queue_depth, tiers))

    def render(self) -> bytes:
        return generate_latest(self.registry)
