"""The baseline of `bench serve`: what a user without a tiered store does. It keeps the last
few experts it used and, on a miss, reloads the expert from its checkpoint directory with
`transformers.from_pretrained`, on the request path. No host tier, no prefetch. It offers
just the part of `ExpertStore`'s interface that the scheduler and server call."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from coeflow.coefile import CoEFile
from coeflow.model import ModelConfig


@dataclass
class _Status:
    name: str
    tier: str
    bytes: int = 0
    hits: int = 0
    misses: int = 0
    last_used: float | None = None
    pinned: bool = False
    priority: int = 0
    error: str | None = None
    recent_switches: list[dict] = field(default_factory=list)


class _Lease:
    def __init__(self, name: str, config: ModelConfig, weights: dict, source_tier: str, switch_s: float):
        self.name, self.config, self.weights = name, config, weights
        self.source_tier, self.switch_s = source_tier, switch_s

    def release(self) -> None:
        pass

    def __enter__(self) -> "_Lease":
        return self

    def __exit__(self, *exc) -> None:
        pass


class ReloadingStore:
    def __init__(self, coe: CoEFile, resident: int, dtype: torch.dtype = torch.float32, device: str = "cpu"):
        self.paths = {e.name: e.path for e in coe.experts}
        self.resident, self.dtype, self.device = resident, dtype, device
        self._loaded: OrderedDict[str, tuple[ModelConfig, dict]] = OrderedDict()
        self._status = {n: _Status(n, "disk") for n in self.paths}
        self._lock = threading.Lock()

    def prefetch(self, name: str, tier: str = "device") -> Future:
        f: Future = Future()
        f.set_result(None)
        return f

    def acquire(self, name: str, timeout: float | None = None) -> _Lease:
        from coeflow.bench.experts import hf_from_pretrained
        with self._lock:
            st = self._status[name]
            st.last_used = time.time()
            if name in self._loaded:
                self._loaded.move_to_end(name)
                st.hits += 1
                return _Lease(name, *self._loaded[name], "device", 0.0)
            st.misses += 1
            t0 = time.perf_counter()
            model = hf_from_pretrained(self.paths[name], self.dtype, self.device)
            weights = {k: v for k, v in model.state_dict().items()}
            cfg = ModelConfig.from_dir(self.paths[name])
            while len(self._loaded) >= self.resident:
                evicted, _ = self._loaded.popitem(last=False)
                self._status[evicted].tier = "disk"
            self._loaded[name] = (cfg, weights)
            st.tier, st.bytes = "device", sum(v.numel() * v.element_size() for v in weights.values())
            seconds = time.perf_counter() - t0
            st.recent_switches = (st.recent_switches + [{"source_tier": "disk", "seconds": seconds}])[-10:]
            return _Lease(name, cfg, weights, "disk", seconds)

    def tier_of(self, name: str) -> str:
        with self._lock:
            return self._status[name].tier

    def failure(self, name: str) -> str | None:
        return None  # a load that fails fails its request; the expert is tried again next time

    def status(self) -> list[_Status]:
        with self._lock:
            return list(self._status.values())

    def close(self) -> None:
        self._loaded.clear()
