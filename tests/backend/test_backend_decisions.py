"""The scheduler's and the store's decisions, as the shared pure code both backends call."""

from collections import deque

import pytest

from coeflow.errors import ConfigError
from coeflow.scheduler.decisions import pick_expert, take_batch
from coeflow.store.policies import LRU, Usage
from coeflow.store.tiers import Arena, Counter, Tier, Tiers


def test_the_oldest_request_among_ready_experts_goes_first():
    heads = [(1.0, "a", False), (2.0, "b", True), (3.0, "c", True)]
    assert pick_expert(heads, now=4.0, max_wait_s=10) == "b"
    assert pick_expert([(1.0, "a", False)], now=4.0, max_wait_s=10) is None
    assert pick_expert([], now=0.0, max_wait_s=10) is None


def test_a_request_past_max_wait_or_a_draining_queue_goes_first_even_if_not_ready():
    heads = [(1.0, "a", False), (2.0, "b", True)]
    assert pick_expert(heads, now=11.0, max_wait_s=10) == "b"      # exactly 10 s: not past it
    assert pick_expert(heads, now=11.5, max_wait_s=10) == "a"
    assert pick_expert(heads, now=1.5, max_wait_s=10, draining=True) == "a"


def test_a_batch_takes_up_to_max_in_order_and_drops_cancelled():
    q = deque(range(10))
    assert take_batch(q, 4, lambda r: r % 2 == 1) == [0, 2, 4, 6]
    assert list(q) == [7, 8, 9]


def _tier(capacity=100, allocator=None):
    tier = Tier("device", allocator or Counter(capacity), LRU())
    for name, at in (("a", 1.0), ("b", 2.0), ("c", 3.0)):
        tier.grant(name, 30)
        tier.loaded(name, at)
    return tier


def _used_at_load(name):
    return Usage(None, 1)  # never used since loaded: LRU orders by load time


def test_a_tier_evicts_by_policy_until_it_fits_and_never_an_unevictable_one():
    tier, evicted = _tier(), []

    def evict(name):
        evicted.append(name)
        tier.drop(name)
    assert tier.make_room("d", 30, 4.0, _used_at_load, lambda n: True, evict) is not None
    assert evicted == ["a"] and set(tier.residents) == {"b", "c", "d"}
    tier, evicted = _tier(), []
    assert tier.make_room("d", 60, 4.0, _used_at_load, lambda n: n != "a", evict) is not None
    assert evicted == ["b", "c"] and set(tier.residents) == {"a", "d"} and tier.used == 90
    with pytest.raises(ConfigError, match="larger than the device tier"):
        tier.make_room("e", 101, 4.0, _used_at_load, lambda n: True, evict)


def test_a_tier_evicts_nothing_when_the_evictable_residents_cannot_make_room():
    tier, evicted = _tier(), []
    assert tier.make_room("d", 60, 4.0, _used_at_load, lambda n: n == "a", evicted.append) is None
    assert evicted == [] and set(tier.residents) == {"a", "b", "c"} and "d" not in tier


def test_a_resident_whose_load_has_no_end_yet_is_never_a_victim():
    tier = _tier()
    tier.drop("a")
    tier.grant("a", 30)  # granted, its bytes still moving in
    only_a = lambda n: n == "a"  # noqa: E731
    assert tier.victim(4.0, _used_at_load) == "b" and tier.victim(4.0, _used_at_load, only_a) is None
    tier.loaded("a", 5.0)
    assert tier.victim(5.0, _used_at_load, only_a) == "a"


def test_a_fragmented_arena_evicts_until_a_hole_fits():
    tier = _tier(allocator=Arena(90, align=30))  # a at 0, b at 30, c at 60
    order = []

    def evict(name):
        order.append(name)
        tier.drop(name)
    # 60 contiguous bytes: a leaves first (LRU) but leaves a 30-byte hole; then b
    assert tier.make_room("d", 60, 4.0, _used_at_load, lambda n: n != "c", evict) == 0
    assert order == ["a", "b"]


def test_leaving_the_host_leaves_the_device_but_not_the_reverse():
    tiers = Tiers(Tier("host", Counter(100), LRU()), Tier("device", Counter(50), LRU()))
    for t in ("host", "device"):
        tiers[t].grant("a", 30)
        tiers[t].loaded("a", 1.0)
    assert tiers.ready_tier("a") == "device" and tiers.ready_tier("a", now=0.5) == "disk"
    tiers.evict("a", "device")
    assert tiers.ready_tier("a") == "host"
    tiers.device.grant("a", 30)
    tiers.device.loaded("a", 2.0)
    tiers.evict("a", "host")
    assert tiers.ready_tier("a") == "disk" and tiers.host.used == tiers.device.used == 0
