"""Discrete-event replay of a trace through the CoE core on a backend's clock.

It makes the real server's decisions with the real code: the scheduler's choice of expert
and batch (coeflow.scheduler.decisions), and the store's tier bookkeeping (coeflow.store.tiers:
Tier and Tiers, with the same policy objects): inclusive tiers, a load reserves its bytes
when it starts, the running and loading experts are never evicted. Like the server, every
queued request prefetches its expert and one worker runs the batches. Either of the
server's schedules: continuous batching (the default, stepped: coeflow.sim.continuous) or
static (a batch runs to completion, here). It asks the backend (interface.ReplayBackend):
`move` for each hop, `step` for each step or `run_batch` for each batch, `route_s`; their
seconds advance the backend's clock (a SimClock: the replay resets it to 0 and moves it
forward).

Two settings differ from the server by choice:
- `prefetch=False` loads an expert only when its batch starts (the paper's procedure:
  route, copy, run), and then every queued expert counts as ready.
- `route_on_compute=True` runs the router on the compute resource, on up to `router_batch`
  waiting prompts at once, before they are queued (the paper's CoE inference). Otherwise
  routing costs nothing here (the server routes on its HTTP thread)."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from coeflow.backend.interface import BatchTimes, ReplayBackend
from coeflow.errors import ConfigError
from coeflow.scheduler import MAX_BATCH, MAX_WAIT_S, PREFILL_CHUNK, SLICE_S
from coeflow.scheduler.decisions import SCHEDULES, pick_expert, prefetch_tier, reported_switch, take_batch
from coeflow.store.policies import DEFAULT_POLICY, Usage, make_policy
from coeflow.store.tiers import Counter, Tier, Tiers
from coeflow.trace.client import pct

LINKS = {"host": ("disk", "host"), "device": ("host", "device")}  # tier -> the hop into it


@dataclass(frozen=True)
class SimRequest:
    arrival_s: float
    expert: str  # resolved: routing already decided
    prompt_tokens: int
    gen_tokens: int
    id: str | None = None


@dataclass(frozen=True)
class ReplayOptions:
    """The server's scheduling options, with the server's defaults."""
    schedule: str = "continuous"  # or "static" (a batch runs to completion)
    max_batch: int = MAX_BATCH
    max_wait_s: float = MAX_WAIT_S
    slice_s: float = SLICE_S  # continuous: an expert keeps the device this long once others wait
    prefill_chunk: int = PREFILL_CHUNK  # continuous: prompt tokens prefilled in one step
    kv_mem: int | None = None  # continuous: the KV cache's bytes; None: the backend's default
    policy: str = DEFAULT_POLICY
    device_mem: int | None = None  # bytes; None: the backend's default
    host_mem: int | None = None
    start_tier: str = "host"  # where every expert is at t=0: "host" or "disk"
    prefetch: bool = True
    route_on_compute: bool = False
    router_batch: int = 8  # prompts the router reads at once (route_on_compute)


@dataclass
class RequestRecord:
    index: int
    id: str | None
    expert: str
    arrival_s: float
    start_s: float  # its batch was picked
    first_token_s: float
    finish_s: float
    source_tier: str  # where its expert was when it was queued (device/host/disk/loading)
    switch_s: float  # how long a load kept it waiting (the server's definition)
    batch: int
    prompt_tokens: int
    gen_tokens: int

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.arrival_s

    @property
    def latency_s(self) -> float:
        return self.finish_s - self.arrival_s

    def to_dict(self) -> dict:
        d = dict(vars(self))
        d.update(ttft_s=self.ttft_s, latency_s=self.latency_s, queued_s=self.start_s - self.arrival_s)
        return d


@dataclass
class ReplayResult:
    records: list[RequestRecord]
    makespan_s: float
    compute_busy_s: float
    router_busy_s: float
    link_busy_s: dict[str, float]
    loads: dict[str, int]  # per hop "disk->host" / "host->device"
    bytes_moved: dict[str, int]
    budgets: dict[str, int]
    tier_mean_used: dict[str, float]  # time-averaged bytes resident
    hbm_bytes: float
    hbm_bandwidth: float
    evictions: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict:
        recs = self.records
        span = self.makespan_s or float("nan")
        lat = sorted(r.latency_s for r in recs)
        ttft = sorted(r.ttft_s for r in recs)
        by_tier: dict[str, int] = {}
        for r in recs:
            by_tier[r.source_tier] = by_tier.get(r.source_tier, 0) + 1
        sw = [r.switch_s for r in recs if r.source_tier != "device"]
        return {
            "requests": len(recs), "makespan_s": self.makespan_s,
            "throughput_rps": len(recs) / span,
            "output_tokens_per_s": sum(r.gen_tokens for r in recs) / span,
            "ttft_p50_s": pct(ttft, 0.5), "ttft_p99_s": pct(ttft, 0.99),
            "latency_p50_s": pct(lat, 0.5), "latency_p99_s": pct(lat, 0.99),
            "latency_mean_s": sum(lat) / len(lat),
            "switch_p50_s": pct(sw, 0.5),
            "requests_by_source_tier": by_tier,
            "loads": self.loads, "evictions": self.evictions, "bytes_moved": self.bytes_moved,
            "utilisation": {
                "compute": self.compute_busy_s / span,
                "router": self.router_busy_s / span,
                **{f"link {k}": v / span for k, v in self.link_busy_s.items()},
                **{f"{t} tier occupancy": self.tier_mean_used[t] / self.budgets[t] if self.budgets[t] else 0.0
                   for t in self.budgets},
                "device memory bandwidth": self.hbm_bytes / (self.hbm_bandwidth * span),
            },
            "budgets_bytes": self.budgets,
        }


class Replay:
    """The store's bookkeeping and the static worker; coeflow.sim.continuous.ContinuousReplay
    steps instead."""

    def __init__(self, backend: ReplayBackend, reqs: list[SimRequest], opts: ReplayOptions, budgets: dict[str, int]):
        self.b, self.opts, self.reqs = backend, opts, reqs
        backend.clock.reset()  # a replay starts at t = 0, whatever ran on this backend before
        self.policy = make_policy(opts.policy)
        self.tiers = Tiers(*(Tier(t, Counter(budgets[t]), self.policy) for t in ("host", "device")))
        self.budgets = budgets
        self.experts = sorted({r.expert for r in reqs})
        # the scheduler's rule: prefetch to the device only when its last hop costs a copy
        self.prefetch_to = prefetch_tier(backend.device_copies)
        self.uses: dict[str, int] = {}  # acquires since the store started (hits + misses)
        self.last_used: dict[str, float] = {}
        self.loading_until: dict[str, float] = {}  # the latest load's completion
        self.deferred: set[str] = set()  # prefetches waiting for room
        self.prefetch_done: dict[str, float] = {}  # when each expert's latest prefetch completes
        self.prefetched: set[str] = set()  # prefetched for a queued request, not acquired since
        self.busy: str | None = None  # leased by the worker
        self.link_free = {"host": 0.0, "device": 0.0}
        self.link_busy = {"disk->host": 0.0, "host->device": 0.0}
        self.loads = {"disk->host": 0, "host->device": 0}
        self.moved = {"disk->host": 0, "host->device": 0}
        self.evictions = {"host": 0, "device": 0}
        self.area = {"host": 0.0, "device": 0.0}
        self.area_t = 0.0
        self.queues: dict[str, deque] = {}
        self.arrival_tier: dict[int, str] = {}
        self.nxt = 0  # the next request to arrive
        self.unrouted: deque[int] = deque()  # arrived, waiting for the router (route_on_compute)
        self.compute = self.router_busy = self.hbm = 0.0

    # -- store bookkeeping --------------------------------------------------------------
    def _account(self, now: float) -> None:
        if now > self.area_t:
            for t in ("host", "device"):
                self.area[t] += self.tiers[t].used * (now - self.area_t)
            self.area_t = now

    def tier_of(self, name: str, now: float) -> str:
        """The store's status() view: loading while a job runs, else the highest tier."""
        if self.loading_until.get(name, -1.0) > now or name in self.deferred:
            return "loading"
        return self.tiers.ready_tier(name, now)

    def _evictable(self, name: str, now: float) -> bool:
        return name != self.busy and self.loading_until.get(name, -1.0) <= now

    def _make_room(self, tier: str, name: str, now: float, yields: bool = False) -> bool:
        """Grant `name`'s bytes in `tier`, evicting by the store's rules: experts prefetched
        for queued requests last, and never for a prefetch (`yields`), which gives way instead;
        False (nothing evicted) while the running and loading experts hold the room."""
        def evict(victim: str) -> None:
            self.tiers.evict(victim, tier)
            self.evictions[tier] += 1
            if tier == "host":
                self.prefetched.discard(victim)

        slot = self.tiers[tier].make_room(name, self.b.expert_bytes(name, tier), now,
                                          lambda n: Usage(self.last_used.get(n), self.uses.get(n, 0)),
                                          lambda n: n != name and self._evictable(n, now), evict,
                                          spared=lambda n: n in self.prefetched, take_spared=not yields)
        return slot is not None

    def ensure(self, name: str, now: float, top: str = "device", yields: bool = False) -> float | None:
        """Start bringing `name` up to tier `top` (a store job); its completion time, or
        None when the tiers are full of leased or loading experts (retried on release). A
        prefetch's job (`yields`) that finds no room it may take stops where it is."""
        self._account(now)
        if self.loading_until.get(name, -1.0) > now:
            return self.loading_until[name]
        t = now
        for tier in ("host", "device")[: 1 if top == "host" else 2]:
            if name in self.tiers[tier]:
                continue
            if not self._make_room(tier, name, now, yields):
                if yields:
                    break
                self.deferred.add(name)
                return None
            src, dst = LINKS[tier]
            start = max(t, self.link_free[tier])
            d = self.b.move(name, src, dst).seconds
            t = self.link_free[tier] = start + d
            hop = f"{src}->{dst}"
            self.link_busy[hop] += d
            self.loads[hop] += 1
            self.moved[hop] += self.b.expert_bytes(name)
            self.tiers[tier].loaded(name, t)
        self.deferred.discard(name)
        self.loading_until[name] = t
        return t

    def _prefetch(self, name: str, now: float) -> None:
        self.prefetched.add(name)
        t = self.ensure(name, now, self.prefetch_to, yields=True)
        if t is not None:
            self.prefetch_done[name] = t

    def ready(self, name: str, now: float) -> bool:
        if not self.opts.prefetch:
            return True
        return name not in self.deferred and self.loading_until.get(name, -1.0) <= now

    def submit(self, i: int, now: float) -> None:
        r = self.reqs[i]
        self.arrival_tier[i] = self.tier_of(r.expert, now)
        self.queues.setdefault(r.expert, deque()).append((now, i))
        if self.opts.prefetch and self.tier_of(r.expert, now) != "loading":
            self._prefetch(r.expert, now)

    def acquire(self, name: str, now: float) -> tuple[float, str | None]:
        """Block the worker until `name` is on the device: (ready time, the tier it came
        from if the worker had to wait for a load, else None)."""
        self.policy.on_access(name, now)
        self.uses[name] = self.uses.get(name, 0) + 1
        self.prefetched.discard(name)
        self.busy = name
        source = self.tiers.ready_tier(name, now)
        if source == "device":
            self.last_used[name] = now
            return now, None
        t = self.ensure(name, now)
        while t is None:  # every other expert is loading: wait for the first to land
            later = [u for u in self.loading_until.values() if u > now]
            if not later:
                raise ConfigError(f"expert {name!r} does not fit in the tiers next to the others")
            now = min(later)
            t = self.ensure(name, now)
        self.last_used[name] = t
        return t, source

    def release(self, name: str, now: float) -> None:
        self.busy = None
        self.last_used[name] = now
        for n in sorted(self.deferred):
            self._prefetch(n, now)

    # -- the worker -----------------------------------------------------------------------
    def _start_in_host(self) -> None:
        """Every expert in the host tier at t = 0 (the paper's setting), or out of memory."""
        need = sum(self.b.expert_bytes(e) for e in self.experts)
        if need > self.budgets["host"]:
            raise ConfigError(f"{len(self.experts)} experts need {need / 1e9:.1f} GB in the host "
                              f"tier, which holds {self.budgets['host'] / 1e9:.1f} GB: out of memory")
        for e in self.experts:
            self.tiers.host.grant(e, self.b.expert_bytes(e))
            self.tiers.host.loaded(e, 0.0)

    def _records(self, expert: str, batch: list, start: float, ready_t: float, waited_from: str | None,
                 times: BatchTimes) -> list[RequestRecord]:
        """The batch's requests as the server reports them (decisions.reported_switch)."""
        out = []
        found, waited = (waited_from, ready_t - start) if waited_from is not None else ("device", 0.0)
        for queued_at, i in batch:
            r = self.reqs[i]
            prefetched = self._prefetched(expert, queued_at, start)
            tier, switch = reported_switch(self.arrival_tier[i], found, waited, prefetched)
            out.append(RequestRecord(i, r.id, expert, r.arrival_s, start, ready_t + times.ttft_s,
                                     ready_t + times.finish_s(r.gen_tokens), tier, switch, len(batch),
                                     r.prompt_tokens, r.gen_tokens))
        return out

    def _prefetched(self, expert: str, queued_at: float, now: float) -> float:
        """How long a request queued at `queued_at` waited for its expert's prefetch, by `now`."""
        return max(0.0, min(self.prefetch_done.get(expert, queued_at), now) - queued_at)

    # -- arrivals, routing and the result, for either worker ---------------------------------
    def _pending(self) -> bool:
        return self.nxt < len(self.reqs) or bool(self.unrouted)

    def admit_until(self, limit: float) -> None:
        """Requests that arrived by `limit` are queued (or wait for the router)."""
        while self.nxt < len(self.reqs) and self.reqs[self.nxt].arrival_s <= limit:
            if self.opts.route_on_compute:
                self.unrouted.append(self.nxt)
            else:
                self.submit(self.nxt, self.reqs[self.nxt].arrival_s)
            self.nxt += 1

    def route(self, t: float) -> float:
        """The router takes the compute: route what waits, up to a batch. The time after."""
        group = [self.unrouted.popleft() for _ in range(min(self.opts.router_batch, len(self.unrouted)))]
        d = self.b.route_s(len(group), max(self.reqs[i].prompt_tokens for i in group))
        t += d
        self.compute += d
        self.router_busy += d
        for i in group:
            self.submit(i, t)
        return t

    def result(self, t: float, done: list[RequestRecord]) -> ReplayResult:
        self.b.clock.advance_to(t)
        self._account(t)
        first = self.reqs[0].arrival_s if self.reqs else 0.0
        span = max(r.finish_s for r in done) - first if done else 0.0
        return ReplayResult(done, span, self.compute, self.router_busy, dict(self.link_busy), dict(self.loads),
                            dict(self.moved), dict(self.budgets),
                            {k: v / max(self.area_t - first, 1e-12) for k, v in self.area.items()},
                            self.hbm, getattr(self.b, "bandwidth", lambda _: math.inf)("device"),
                            dict(self.evictions))

    # -- the static worker (`--schedule static`: a batch runs to completion) ---------------
    def run(self) -> ReplayResult:
        reqs, opts, b = self.reqs, self.opts, self.b
        if opts.start_tier == "host":
            self._start_in_host()
        records: list[RequestRecord | None] = [None] * len(reqs)
        t = 0.0
        while self._pending() or any(self.queues.values()):
            b.clock.advance_to(t)
            self.admit_until(t)
            if self.unrouted:
                t = self.route(t)
                continue
            heads = [(q[0][0], name, self.ready(name, t)) for name, q in self.queues.items() if q]
            expert = pick_expert(heads, t, opts.max_wait_s)
            if expert is None:
                t = self._next_event(t, heads)
                self._retry_deferred(t)
                continue
            batch = take_batch(self.queues[expert], opts.max_batch, lambda _: False)
            start = t
            ready_t, waited_from = self.acquire(expert, t)
            gen = max(reqs[i].gen_tokens for _, i in batch)
            times = b.run_batch(expert, None, [reqs[i] for _, i in batch])
            end = ready_t + times.finish_s(gen)
            for rec in self._records(expert, batch, start, ready_t, waited_from, times):
                records[rec.index] = rec
            self.compute += end - ready_t
            self.hbm += times.hbm_bytes
            self.admit_until(end)  # requests arriving during the batch are queued (and prefetch) on time
            t = end
            self._account(t)
            self.release(expert, t)
        return self.result(t, [r for r in records if r is not None])

    def _next_event(self, t: float, heads) -> float:
        cands = []
        if self.nxt < len(self.reqs):
            cands.append(self.reqs[self.nxt].arrival_s)
        cands += [u for u in self.loading_until.values() if u > t]
        if heads:  # the starvation bound fires strictly after max_wait_s
            cands.append(math.nextafter(min(h[0] for h in heads) + self.opts.max_wait_s, math.inf))
        if not cands:
            raise ConfigError("the replay cannot make progress: the tiers are full of pinned experts")
        return max(t, min(cands))

    def _retry_deferred(self, now: float) -> None:
        for n in sorted(self.deferred):
            self._prefetch(n, now)


def replay(backend: ReplayBackend, requests: list[SimRequest], opts: ReplayOptions = ReplayOptions()) -> ReplayResult:
    """Replay `requests` (sorted by arrival) on `backend`; see the module docstring."""
    if opts.start_tier not in ("host", "disk"):
        raise ConfigError(f"start tier must be host or disk, not {opts.start_tier!r}")
    if opts.max_batch < 1:
        raise ConfigError("--max-batch must be >= 1")
    if opts.schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, not {opts.schedule!r}")
    if opts.prefill_chunk < 1:
        raise ConfigError("--prefill-chunk must be >= 1")
    budgets = dict(getattr(backend, "default_budgets", lambda: {})())
    for tier, given in (("device", opts.device_mem), ("host", opts.host_mem)):
        if given is not None:
            budgets[tier] = given
        if tier not in budgets:
            raise ConfigError(f"give a {tier} tier budget")
    bases = getattr(backend, "bases", lambda: {})()
    for tier in budgets:  # the delta experts' bases stay in every tier
        budgets[tier] -= sum(bases.values())
        if budgets[tier] < 0:
            raise ConfigError(f"the bases of the delta experts ({sum(bases.values()) / 1e9:.2f} GB) do not fit "
                              f"in the {tier} tier")
    for r in requests:
        for tier, budget in budgets.items():
            if backend.expert_bytes(r.expert, tier) > budget:
                raise ConfigError(f"expert {r.expert!r} ({backend.expert_bytes(r.expert, tier) / 1e9:.2f} GB) is "
                                  f"larger than the {tier} tier's budget ({budget / 1e9:.2f} GB)")
    reqs = sorted(requests, key=lambda r: r.arrival_s)
    if opts.schedule == "static":
        return Replay(backend, reqs, opts, budgets).run()
    from coeflow.sim.continuous import ContinuousReplay  # it builds on Replay, defined here
    kv = opts.kv_mem if opts.kv_mem is not None else backend.kv_budget()
    return ContinuousReplay(backend, reqs, opts, budgets, kv_budget=kv).run()
