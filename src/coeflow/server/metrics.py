"""Prometheus metrics of one server (a registry of its own, so several servers in one
process, as in tests, never share counters)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass
class LiveSources:
    """What the gauges read at scrape time: requests waiting and running per expert, each
    expert's tier, each model shape's KV cache (labelled by its experts: RealBackend.kv_stats),
    and the steps run at each batch size (rows)."""
    queue_depth: Callable[[], dict[str, int]]
    running: Callable[[], dict[str, int]]
    tiers: Callable[[], dict[str, str]]
    kv_stats: Callable[[], dict[str, dict[str, int]]]
    step_rows: Callable[[], dict[int, int]]


class _Live:
    """Gauges read at scrape time (queue depth, residency, KV blocks) instead of being kept in step."""

    def __init__(self, src: LiveSources):
        self.src = src

    def collect(self):
        q = GaugeMetricFamily("coeflow_queue_depth", "requests waiting, per expert", labels=["expert"])
        for name, n in self.src.queue_depth().items():
            q.add_metric([name], n)
        yield q
        run = GaugeMetricFamily("coeflow_running", "requests in a running batch, per expert", labels=["expert"])
        for name, n in self.src.running().items():
            run.add_metric([name], n)
        yield run
        kv = GaugeMetricFamily("coeflow_kv_blocks", "KV cache blocks of 16 tokens, per model shape (its experts): "
                               "used, free (cached ones nobody uses included), cached (a prefix to reuse)",
                               labels=["experts", "state"])
        prefix = CounterMetricFamily("coeflow_prefix_tokens", "prompt tokens of the sequences opened, and those "
                                     "taken from the prefix cache instead of prefilled", labels=["experts", "kind"])
        for experts, st in self.src.kv_stats().items():
            for state in ("used", "free", "cached"):
                kv.add_metric([experts, state], st[state])
            prefix.add_metric([experts, "prompt"], st["prompt_tokens"])
            prefix.add_metric([experts, "reused"], st["reused_tokens"])
        yield kv
        yield prefix
        rows = CounterMetricFamily("coeflow_batch_steps", "batch steps run, by the sequences they ran", labels=["rows"])
        for n, count in sorted(self.src.step_rows().items()):
            rows.add_metric([str(n)], count)
        yield rows
        t = GaugeMetricFamily("coeflow_expert_tier", "1 for the tier each expert is in now",
                              labels=["expert", "tier"])
        for name, tier in self.src.tiers().items():
            t.add_metric([name, tier], 1)
        yield t


class Metrics:
    def __init__(self, live: LiveSources):
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
        self.queued = Histogram("coeflow_queue_seconds", "arrival to joining a batch", ["expert"],
                                buckets=LATENCY_BUCKETS, registry=r)
        self.latency = Histogram("coeflow_request_seconds", "arrival to the last token", ["expert"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.router_latency = Histogram("coeflow_router_latency_seconds", "time to route one prompt",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.resent = Counter("coeflow_requests_resent", "requests sent to another expert replica because theirs "
                              "was lost before they started (coeflow serve --ray; none in one process)",
                              ["expert"], registry=r)
        r.register(_Live(live))

    def render(self) -> bytes:
        return generate_latest(self.registry)
