"""The modelled replay over K nodes, each a whole machine with its own tiers (`coeflow simulate
trace --nodes K`), behind one ingress, as `coeflow serve --ray` runs a CoE.

The ingress sends each request by the rule Ray Serve's multiplexing applies: to a node that
already holds its expert; an expert held nowhere goes to the node holding the fewest experts
(then the one sent the fewest requests), which then holds it, dropping its least recently sent
expert once it holds as many as its host tier fits. Each node then replays its requests
alone (coeflow.sim.replay, the server's own decisions). A request and its first token each
cross the network between ingress and node once: `hop_s` is added to the time of its first
token and of its end. What this leaves out: the live load that Ray Serve's router also weighs
(here a node's queue never sends a request elsewhere), and the ingress's own cost."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

from coeflow.backend.interface import ReplayBackend
from coeflow.sim.replay import ReplayOptions, ReplayResult, RequestRecord, SimRequest, replay

# Chosen: a call between two machines of one datacenter. The network round trip is tens of
# microseconds on 100-400 Gb/s links; the RPC stack's own work (serialising, an event loop on
# each side) dominates, about a millisecond in Ray's and gRPC's published microbenchmarks.
HOP_S = 1e-3


@dataclass(frozen=True)
class NodeShare:
    node: int
    requests: int
    experts: int  # distinct experts it was sent


@dataclass
class NodesResult:
    """A replay over `nodes` machines: the merged result, each node's share, and, from
    `fewest_nodes`, the p99 TTFT aimed at and that of each node count tried."""
    result: ReplayResult
    nodes: int
    shares: list[NodeShare]
    hop_s: float
    target_p99_ttft_s: float | None = None
    tried: dict[int, float] = field(default_factory=dict)  # nodes -> p99 TTFT (s)

    @property
    def records(self) -> list[RequestRecord]:
        return self.result.records

    def summary(self) -> dict:
        out = self.result.summary() | {"nodes": self.nodes, "hop_s": self.hop_s,
                                       "node_shares": [asdict(s) for s in self.shares]}
        if self.target_p99_ttft_s is not None:
            out["p99_ttft_target_s"] = self.target_p99_ttft_s
            out["target_met"] = out["ttft_p99_s"] <= self.target_p99_ttft_s
            out["p99_ttft_by_nodes"] = dict(sorted(self.tried.items()))
        return out


def assign(reqs: list[SimRequest], nodes: int, holds: int) -> list[list[SimRequest]]:
    """Each node's requests, by the affinity rule in the module docstring; `holds`: experts a
    node holds at once (at least 1)."""
    held: list[OrderedDict[str, None]] = [OrderedDict() for _ in range(nodes)]
    sent = [0] * nodes
    out: list[list[SimRequest]] = [[] for _ in range(nodes)]
    for r in sorted(reqs, key=lambda r: r.arrival_s):
        home = next((k for k in range(nodes) if r.expert in held[k]), None)
        if home is None:
            home = min(range(nodes), key=lambda k: (len(held[k]), sent[k], k))
            if len(held[home]) >= max(1, holds):
                held[home].popitem(last=False)
        held[home][r.expert] = None
        held[home].move_to_end(r.expert)
        sent[home] += 1
        out[home].append(r)
    return out


def replay_on_nodes(make_backend: Callable[[], ReplayBackend], reqs: list[SimRequest], opts: ReplayOptions,
                    nodes: int, hop_s: float = HOP_S) -> NodesResult:
    """The trace over `nodes` machines, each `make_backend()`'s, merged into one result (its
    utilisations are the nodes' averages), with each node's share."""
    backends = [make_backend() for _ in range(nodes)]
    host = opts.host_mem if opts.host_mem is not None else backends[0].default_budgets()["host"]
    largest = max((backends[0].expert_bytes(r.expert, "host") for r in reqs), default=1)
    shares = assign(reqs, nodes, host // max(1, largest))
    results = [replay(b, share, opts) for b, share in zip(backends, shares) if share]
    return NodesResult(_merge(results, hop_s), nodes,
                       [NodeShare(k, len(s), len({r.expert for r in s})) for k, s in enumerate(shares)], hop_s)


def fewest_nodes(on: Callable[[int], NodesResult], p99_ttft_s: float, max_nodes: int) -> NodesResult:
    """The replay on the fewest nodes whose p99 TTFT is at most `p99_ttft_s` (`on(k)` replays on
    k nodes), or on `max_nodes` if none is (`target_met` False). Doubles the count, then halves
    the interval: it takes the p99 to fall as nodes are added."""
    tried: dict[int, NodesResult] = {}
    p99s: dict[int, float] = {}

    def p99(k: int) -> float:
        if k not in tried:
            tried[k] = on(k)
            p99s[k] = tried[k].result.summary()["ttft_p99_s"]
        return p99s[k]
    low, high = 0, 1  # low fails (0: none tried), high is the next to try
    while p99(high) > p99_ttft_s:
        if high >= max_nodes:
            break
        low, high = high, min(2 * high, max_nodes)
    if p99(high) <= p99_ttft_s:
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if p99(mid) <= p99_ttft_s else (mid, high)
    best = tried[high]
    best.target_p99_ttft_s = p99_ttft_s
    best.tried = p99s
    return best


def _merge(results: list[ReplayResult], hop_s: float) -> ReplayResult:
    def add(dicts: list[dict]) -> dict:
        out: dict = {}
        for d in dicts:
            for k, v in d.items():
                out[k] = out.get(k, 0) + v
        return out
    records: list[RequestRecord] = [replace(r, first_token_s=r.first_token_s + hop_s, finish_s=r.finish_s + hop_s)
                                    for res in results for r in res.records]
    records.sort(key=lambda r: (r.arrival_s, r.index))
    return ReplayResult(
        records, max(r.makespan_s for r in results) + hop_s, sum(r.compute_busy_s for r in results) / len(results),
        sum(r.router_busy_s for r in results) / len(results),
        {k: v / len(results) for k, v in add([r.link_busy_s for r in results]).items()},
        add([r.loads for r in results]), add([r.bytes_moved for r in results]), results[0].budgets,
        {k: v / len(results) for k, v in add([r.tier_mean_used for r in results]).items()},
        sum(r.hbm_bytes for r in results) / len(results), results[0].hbm_bandwidth,
        add([r.evictions for r in results]))
