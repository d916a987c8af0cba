"""The CoE deployment model: N experts of one shape on a system, a router in front.

One inference (paper, Samba-CoE): run the router on the batch's prompts, copy the chosen
experts from the expert store into HBM, then run each (prompt, expert) pair in turn. The store
is socket DDR on an SN40L node and host DRAM on a GPU server; HBM keeps the router, the KV
cache and as many experts as fit (the paper's pre-allocated expert region)."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable

from coeflow.hw.generation import generation_cost
from coeflow.hw.placement import kv_bytes_per_device
from coeflow.hw.shapes import DecoderShape, load_shape
from coeflow.hw.spec import Hardware, load_hardware
from coeflow.hw.switching import expert_store_tier, switch_time_s

# KV cache kept free in HBM for serving: batch 8 at Llama-2's 4K context. Chosen: the paper's
# largest CoE batch at the expert's full context; it decides how many experts fit in HBM.
KV_RESERVE_BATCH, KV_RESERVE_TOKENS = 8, 4096


@dataclass(frozen=True)
class CoEWorkload:
    """The paper's CoE requests. The prompt length is open in the paper; 128 tokens is the
    prompt of the NVIDIA NeMo measurements the paper's DGX estimates come from."""

    prompt: int = 128
    gen: int = 20
    batch: int = 1


@dataclass(frozen=True)
class Deployment:
    hw: Hardware
    expert: DecoderShape
    router: DecoderShape
    tp: int
    stack: str | None = None  # None: the hardware's default stack

    @staticmethod
    def of(hw: str, expert: str = "llama2-7b", router: str = "llama2-7b", tp: int | None = None,
           stack: str | None = None) -> "Deployment":
        h = load_hardware(hw)
        return Deployment(h, load_shape(expert), load_shape(router), tp or h.count, stack)

    @property
    def expert_bytes(self) -> float:
        return float(self.expert.weight_bytes())

    def hbm_expert_slots(self) -> int:
        """Experts that fit in HBM next to the router and the reserved KV cache."""
        hw = self.hw
        usable = hw.count * (hw.device.hbm.capacity - hw.device_reserve)
        kv = self.tp * kv_bytes_per_device(self.expert, self.tp, KV_RESERVE_BATCH, KV_RESERVE_TOKENS)
        free = usable - self.router.weight_bytes() - kv
        return max(0, math.floor(free / self.expert_bytes))

    def store_capacity(self) -> int:
        """Experts the expert store holds: all socket DDR (RDU) or host DRAM less a reserve
        (GPU). Beyond it the deployment is out of memory."""
        hw = self.hw
        if hw.device.ddr is not None:
            return math.floor(hw.count * hw.device.ddr.capacity / self.expert_bytes)
        return math.floor((hw.host_memory - hw.host_reserve) / self.expert_bytes)

    def experts_served_at_tp_latency(self) -> int:
        """Experts one system serves without slow switches: the whole DDR store on an RDU
        (DDR->HBM at node bandwidth), only the HBM-resident ones on a GPU server (PCIe)."""
        return self.store_capacity() if self.hw.device.ddr is not None else self.hbm_expert_slots()

    def nodes_for(self, n_experts: int) -> int:
        return math.ceil(n_experts / self.experts_served_at_tp_latency())

    def switch_s(self) -> float:
        return switch_time_s(self.hw, self.expert_bytes, expert_store_tier(self.hw),
                             devices=self.tp)

    def router_s(self, batch: int, prompt: int) -> float:
        """The router reads the prompts and picks an expert: one prefill, one output."""
        return generation_cost(self.hw, self.router, batch, prompt, 1, self.tp, self.stack).total_s

    def expert_s(self, prompt: int, gen: int) -> float:
        return generation_cost(self.hw, self.expert, 1, prompt, gen, self.tp, self.stack).total_s

    def latency(self, w: CoEWorkload, switches: int | None = None) -> "CoELatency":
        """One batch: router, `switches` expert copies (default: every pair needs one), then
        each (prompt, expert) pair at batch 1, one after another."""
        n_switch = w.batch if switches is None else switches
        router = self.router_s(w.batch, w.prompt)
        switch = n_switch * self.switch_s()
        expert = w.batch * self.expert_s(w.prompt, w.gen)
        return CoELatency(router, switch, expert)

    def expected_latency(self, n_experts: int, w: CoEWorkload) -> "CoELatency | None":
        """Mean latency with uniform routing over `n_experts` and the HBM slots as a cache:
        a request misses with probability 1 - slots/N. None when the store overflows (OOM)."""
        if n_experts > self.store_capacity():
            return None
        miss = max(0.0, 1.0 - self.hbm_expert_slots() / n_experts)
        base = self.latency(w, switches=0)
        return CoELatency(base.router_s, w.batch * miss * self.switch_s(), base.expert_s)


@dataclass(frozen=True)
class CoELatency:
    router_s: float
    switch_s: float
    expert_s: float

    @property
    def total_s(self) -> float:
        return self.router_s + self.switch_s + self.expert_s


@dataclass
class TraceResult:
    latencies_s: list[float]
    switches: int
    hits: int

    @property
    def total_s(self) -> float:
        return sum(self.latencies_s)


def simulate_trace(dep: Deployment, requests: Iterable[tuple[int, int, int]],
                   slots: int | None = None) -> TraceResult:
    """Replay (expert_id, prompt_tokens, gen_tokens) requests one at a time through an LRU
    cache of `slots` HBM-resident experts (default: as many as fit). Costs per (prompt, gen)
    come from the cached generation model, so long traces replay in milliseconds."""
    slots = dep.hbm_expert_slots() if slots is None else slots
    cache: OrderedDict[int, None] = OrderedDict()
    switch = dep.switch_s()
    latencies, switches, hits = [], 0, 0
    for expert_id, prompt, gen in requests:
        t = dep.router_s(1, prompt) + dep.expert_s(prompt, gen)
        if expert_id in cache:
            cache.move_to_end(expert_id)
            hits += 1
        else:
            t += switch
            switches += 1
            cache[expert_id] = None
            if len(cache) > max(slots, 1):
                cache.popitem(last=False)  # least recently used leaves HBM (never written back)
        latencies.append(t)
    return TraceResult(latencies, switches, hits)
