"""Who leaves a full tier: LRU by default, pinned and leased experts never, lower priority
first, idle experts after their TTL, not an expert a queued request prefetched for another
request's prefetch; Belady is optimal on traces worked out by hand. The
store's decisions are bookkeeping, so they run on the fake backend with sizes set here."""

from __future__ import annotations

import functools
import random

import pytest
from fakes import MB, FakeBackend, fake_coe

from coeflow.errors import ConfigError
from coeflow.store import LFU, LRU, Belady, ExpertStore, simulate_cache


def _store(tmp_path, names, device_n, host_n, extra=None, policy="lru", device_copies=True):
    """Experts of 1 MB each, so the budgets hold a whole number of them; moves take no time,
    so the clock moves only when the test ticks it."""
    backend = FakeBackend(dict.fromkeys(names, 1), device_copies=device_copies, s_per_mb=0)
    return ExpertStore(fake_coe(tmp_path, names, **(extra or {})), backend, device_mem=device_n * MB,
                       host_mem=host_n * MB, policy=policy)


def _tiers(store):
    return {s.name: s.tier for s in store.status()}


def _use(store, name):
    store.backend.clock.tick()
    with store.acquire(name) as lease:
        assert (lease.weights["expert"], lease.weights["tier"]) == (name, "device")
        return lease.source_tier


@pytest.mark.parametrize("device_copies", [True, False], ids=["device-copies", "pointer-swap"])
def test_lru_evicts_least_recently_used_from_each_tier(tmp_path, device_copies):
    store = _store(tmp_path, "abcd", device_n=2, host_n=3, device_copies=device_copies)
    moves = store.backend.moves
    try:
        for n in "aba":
            _use(store, n)
        assert _use(store, "c") == "disk"  # device held a, b: b was used least recently
        assert _tiers(store) == {"a": "device", "b": "host", "c": "device", "d": "disk"}
        assert _use(store, "b") == "host"  # back from DRAM, evicting a from the device
        assert moves[-1][:3] == ("b", "host", "device")  # nothing read from disk again
        assert _tiers(store) == {"a": "host", "b": "device", "c": "device", "d": "disk"}
        _use(store, "d")  # host holds 3: a (least recent) goes to disk
        assert _tiers(store) == {"a": "disk", "b": "device", "c": "host", "d": "device"}
    finally:
        store.close()


def test_pinned_expert_is_loaded_at_start_and_never_evicted(tmp_path):
    store = _store(tmp_path, "abcd", device_n=2, host_n=2, extra={"a": {"pin": True}})
    try:
        store.prefetch("a").result()
        assert _use(store, "a") == "device"
        for n in "bcdbcd":
            _use(store, n)
            assert _tiers(store)["a"] == "device"
        store.pin("a", False)
        for n in "bc":
            _use(store, n)
        assert _tiers(store)["a"] == "disk"
    finally:
        store.close()


@pytest.mark.parametrize("device_copies", [True, False], ids=["device-copies", "pointer-swap"])
def test_a_prefetch_gives_way_to_experts_queued_requests_want(tmp_path, device_copies):
    """Requests for more experts than the host holds are queued, each prefetching its expert:
    the prefetches that find the host full of experts wanted by earlier ones load nothing
    (rather than evict them before they run), and each expert is read from disk once."""
    store = _store(tmp_path, "abcdefgh", device_n=1, host_n=4, device_copies=device_copies)
    moves = store.backend.moves
    try:
        for n in "abcdefgh":  # eight queued requests, in arrival order
            store.backend.clock.tick()
            store.prefetch(n, "host").result()
        assert [n for n, t in _tiers(store).items() if t != "disk"] == list("abcd")
        for n in "abcdefgh":  # each runs in turn: a to d from memory, e to h from disk
            assert _use(store, n) == ("host" if n in "abcd" else "disk")
        assert sorted(n for n, src, _ in (m[:3] for m in moves) if src == "disk") == list("abcdefgh")
        store.prefetch("a", "host").result()  # once used, an expert gives way to a prefetch like any other
        assert _tiers(store)["a"] == "host"
    finally:
        store.close()


def test_pinning_more_than_the_device_holds_is_refused(tmp_path):
    store = _store(tmp_path, "abc", device_n=2, host_n=3)
    try:
        store.pin("a")
        store.pin("b")
        with pytest.raises(ConfigError, match="pinning 'c'"):
            store.pin("c")
        assert [s.name for s in store.status() if s.pinned] == ["a", "b"]
    finally:
        store.close()


def test_leased_expert_is_never_evicted(tmp_path):
    store = _store(tmp_path, "abc", device_n=2, host_n=3)
    try:
        held = store.acquire("a")  # least recently used from here on, but leased
        for n in "bcbc":
            _use(store, n)
            assert _tiers(store)["a"] == "device"
        assert held.weights == {"expert": "a", "tier": "device", "slot": 0}
        assert all(m[2:] != ("device", 0) for m in store.backend.moves[2:])  # nobody moved into a's bytes
        store.backend.clock.tick()
        held.release()  # release counts as a use: a is now more recent than c
        _use(store, "b")
        assert _tiers(store) == {"a": "device", "b": "device", "c": "host"}
        _use(store, "c")
        assert _tiers(store)["a"] == "host"
    finally:
        store.close()


def test_lower_priority_leaves_first(tmp_path):
    store = _store(tmp_path, "abc", device_n=2, host_n=3, extra={"a": {"priority": 5}})
    try:
        _use(store, "a")  # oldest, but higher priority
        _use(store, "b")
        _use(store, "c")
        assert _tiers(store) == {"a": "device", "b": "host", "c": "device"}
    finally:
        store.close()


def test_ttl_unloads_idle_experts_but_not_leased_ones(tmp_path):
    store = _store(tmp_path, "ab", device_n=2, host_n=2, extra={"a": {"ttl_s": 10}, "b": {"ttl_s": 10}})
    clock = store.backend.clock
    try:
        _use(store, "a")
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


def test_policy_name_is_checked(tmp_path):
    backend = FakeBackend({"a": 1})
    with pytest.raises(ConfigError, match="unknown eviction policy 'mru'"):
        ExpertStore(fake_coe(tmp_path, ["a"]), backend, device_mem=None, host_mem=None, policy="mru")
    assert backend.reserved is None  # refused before any memory is reserved


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
