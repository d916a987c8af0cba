"""Who leaves a full tier: LRU by default, pinned and leased experts never, lower priority
first, idle experts after their TTL; Belady is optimal on traces worked out by hand."""

from __future__ import annotations

import functools
import random

import pytest
import torch
from storekit import Clock, build_coe

from coeflow.backend.real import RealBackend
from coeflow.backend.real.layout import plan_layout
from coeflow.errors import ConfigError
from coeflow.store import LFU, LRU, Belady, ExpertStore, simulate_cache

SAME = "llama-gqa"  # every expert the same size: the budgets below hold a whole number of them


def _store(tmp_path, checkpoints, names, device_n, host_n, clock, extra=None, policy="lru"):
    coe = build_coe(tmp_path, {n: checkpoints[SAME] for n in names}, **(extra or {}))
    size = plan_layout(coe.experts[0].path, torch.float32).block_bytes  # tensor bytes + page padding
    return ExpertStore(coe, RealBackend(), device_mem=device_n * size, host_mem=host_n * size, clock=clock,
                       policy=policy)


def _tiers(store):
    return {s.name: s.tier for s in store.status()}


def _use(store, clock, name):
    clock.tick()
    with store.acquire(name) as lease:
        return lease.source_tier


def test_lru_evicts_least_recently_used_from_each_tier(tmp_path, checkpoints):
    clock = Clock()
    store = _store(tmp_path, checkpoints, "abcd", device_n=2, host_n=3, clock=clock)
    try:
        for n in "aba":
            _use(store, clock, n)
        assert _use(store, clock, "c") == "disk"  # device held a, b: b was used least recently
        assert _tiers(store) == {"a": "device", "b": "host", "c": "device", "d": "disk"}
        assert _use(store, clock, "b") == "host"  # back from DRAM, evicting a from the device
        assert _tiers(store) == {"a": "host", "b": "device", "c": "device", "d": "disk"}
        _use(store, clock, "d")  # host holds 3: a (least recent) goes to disk
        assert _tiers(store) == {"a": "disk", "b": "device", "c": "host", "d": "device"}
    finally:
        store.close()


def test_pinned_expert_is_loaded_at_start_and_never_evicted(tmp_path, checkpoints):
    clock = Clock()
    store = _store(tmp_path, checkpoints, "abcd", device_n=2, host_n=2, clock=clock,
                   extra={"a": {"pin": True}})
    try:
        store.prefetch("a").result()
        assert _use(store, clock, "a") == "device"
        for n in "bcdbcd":
            _use(store, clock, n)
            assert _tiers(store)["a"] == "device"
        store.pin("a", False)
        for n in "bc":
            _use(store, clock, n)
        assert _tiers(store)["a"] == "disk"
    finally:
        store.close()


def test_pinning_more_than_the_device_holds_is_refused(tmp_path, checkpoints):
    clock = Clock()
    store = _store(tmp_path, checkpoints, "abc", device_n=2, host_n=3, clock=clock)
    try:
        store.pin("a")
        store.pin("b")
        with pytest.raises(ConfigError, match="pinning 'c'"):
            store.pin("c")
    finally:
        store.close()


def test_leased_expert_is_never_evicted(tmp_path, checkpoints):
    clock = Clock()
    store = _store(tmp_path, checkpoints, "abc", device_n=2, host_n=3, clock=clock)
    try:
        held = store.acquire("a")  # least recently used from here on, but leased
        for n in "bcbc":
            _use(store, clock, n)
            assert _tiers(store)["a"] == "device"
        clock.tick()
        held.release()  # release counts as a use: a is now more recent than c
        _use(store, clock, "b")
        assert _tiers(store) == {"a": "device", "b": "device", "c": "host"}
        _use(store, clock, "c")
        assert _tiers(store)["a"] == "host"
    finally:
        store.close()


def test_lower_priority_leaves_first(tmp_path, checkpoints):
    clock = Clock()
    store = _store(tmp_path, checkpoints, "abc", device_n=2, host_n=3, clock=clock,
                   extra={"a": {"priority": 5}})
    try:
        _use(store, clock, "a")  # oldest, but higher priority
        _use(store, clock, "b")
        _use(store, clock, "c")
        assert _tiers(store) == {"a": "device", "b": "host", "c": "device"}
    finally:
        store.close()


def test_ttl_unloads_idle_experts_but_not_leased_ones(tmp_path, checkpoints):
    clock = Clock()
    store = _store(tmp_path, checkpoints, "ab", device_n=2, host_n=2, clock=clock,
                   extra={"a": {"ttl_s": 10}, "b": {"ttl_s": 10}})
    try:
        _use(store, clock, "a")
        held = store.acquire("b")
        clock.tick(9)
        assert _tiers(store) == {"a": "device", "b": "device"}
        clock.tick(2)  # a idle for 11 s > 10 s; b is leased
        assert _tiers(store) == {"a": "disk", "b": "device"}
        held.release()
        clock.tick(11)
        assert _tiers(store)["b"] == "disk"
    finally:
        store.close()


def test_policy_name_is_checked(tmp_path, checkpoints):
    coe = build_coe(tmp_path, {"a": checkpoints[SAME]})
    with pytest.raises(ConfigError, match="unknown eviction policy 'mru'"):
        ExpertStore(coe, RealBackend(), device_mem=None, host_mem=None, policy="mru")


# ------------------------------------------------------------------ offline policies
def test_belady_and_lru_on_a_trace_worked_by_hand():
    # capacity 2. Belady: a b c(evict b: a is needed at 3, b at 4) a* b(evict c: never again)
    # d(evict b: never again) a*  -> 2 hits. LRU evicts exactly what is needed next: 0 hits.
    trace = list("abcabda")
    sizes = dict.fromkeys("abcd", 1)
    opt = simulate_cache(trace, sizes, 2, Belady(trace))
    assert (opt.hits, opt.bytes_moved) == (2, 5)
    assert simulate_cache(trace, sizes, 2, LRU()).hits == 0


def _optimum(trace, capacity):
    """Fewest misses over every possible eviction choice (exhaustive search)."""
    @functools.lru_cache(maxsize=None)
    def best(i, resident):
        if i == len(trace):
            return 0
        x = trace[i]
        if x in resident:
            return best(i + 1, resident)
        if len(resident) < capacity:
            return 1 + best(i + 1, resident | {x})
        return 1 + min(best(i + 1, (resident - {v}) | {x}) for v in resident)
    return best(0, frozenset())


@pytest.mark.parametrize("seed", range(6))
def test_belady_matches_exhaustive_optimum(seed):
    rng = random.Random(seed)
    trace = [rng.choice("abcde") for _ in range(14)]
    sizes = dict.fromkeys("abcde", 1)
    for cap in (2, 3):
        misses = len(trace) - simulate_cache(trace, sizes, cap, Belady(trace)).hits
        assert misses == _optimum(trace, cap)
        assert simulate_cache(trace, sizes, cap, LRU()).hits <= len(trace) - misses
        assert simulate_cache(trace, sizes, cap, LFU()).hits <= len(trace) - misses
