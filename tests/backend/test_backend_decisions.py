"""The scheduler's and the store's decisions, as the shared pure code both backends call."""

from collections import deque

import pytest

from coeflow.errors import ConfigError
from coeflow.scheduler.decisions import (ExpertWork, admit, next_expert, next_expert_static, pick_expert,
                                         reported_switch, take_batch, waiting_since)
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


def W(name, since, queued=0, running=0, ready=True, admissible=True):  # noqa: N802
    return ExpertWork(name, since, queued, running, ready, admissible)


def _next(work, current=None, held_s=0.0, now=10.0, **kw):
    return next_expert(work, current, held_s, now, slice_s=kw.pop("slice_s", 1.0), max_wait_s=kw.pop("max_wait_s", 5.0),
                       **kw)


def test_the_expert_on_the_device_keeps_it_for_its_slice_then_while_nobody_ready_waits():
    work = [W("a", 9.0, running=2), W("b", 5.0, queued=1)]
    assert _next(work, "a", held_s=0.5) == "a"            # within its slice
    assert _next(work, "a", held_s=1.5) == "b"            # slice over, b waits and is ready
    loading = [W("a", 9.0, running=2), W("b", 8.0, queued=1, ready=False)]
    assert _next(loading, "a", held_s=1.5) == "a"         # b still loading: no stall on a switch
    assert _next([W("a", 9.0, running=2)], "a", held_s=99) == "a"


def test_experts_with_work_take_turns_oldest_work_first():
    # b: 1 request waiting since 6 s; c: 6 requests (2 running, 4 queued), oldest since 9 s
    assert _next([W("b", 6.0, queued=1), W("c", 9.0, queued=4, running=2)]) == "b"
    assert _next([W("b", 6.0, queued=1), W("c", 6.0, queued=4, running=2)]) == "c"  # a tie: the larger batch
    # a running batch paused for another expert's slice gets the device back before newer work
    assert _next([W("a", 7.0, running=3), W("b", 8.0, queued=9)], "b", held_s=2.0) == "a"


def test_work_past_max_wait_or_a_draining_server_goes_first_even_if_its_expert_loads():
    work = [W("a", 9.9, running=1), W("b", 4.0, queued=1, ready=False), W("c", 9.0, queued=3)]
    assert _next(work, "a", held_s=2.0, now=10.0, max_wait_s=6.5) == "c"  # b waited 6 s: under the bound
    assert _next(work, "a", held_s=2.0, now=11.0, max_wait_s=6.5) == "b"  # 7 s: past it
    assert _next(work, "a", held_s=0.0, now=11.0, max_wait_s=6.5) == "a"  # but never within a slice
    assert _next([W("b", 9.0, queued=1, ready=False)], draining=True) == "b"


def test_nothing_runs_when_no_expert_has_runnable_work():
    assert _next([]) is None
    assert _next([W("a", 1.0, queued=1, admissible=False)]) is None  # its head does not fit the KV cache
    assert _next([W("a", 9.0, queued=1, ready=False)]) is None


def test_static_batching_keeps_a_running_batch_to_its_end():
    work = [W("a", 9.0, running=1), W("b", 1.0, queued=5)]
    assert next_expert_static(work, "a", 10.0, max_wait_s=5.0) == "a"
    assert next_expert_static([W("a", 9.0, queued=1), W("b", 8.0, queued=1)], "a", 10.0, max_wait_s=5.0) == "b"


def test_admission_takes_what_fits_in_order_and_stops_at_the_first_that_does_not():
    room = {"left": 5}

    def join(r):
        if r > room["left"]:
            return False
        room["left"] -= r
        return True
    q = deque([2, 1, 4, 1])
    assert admit(q, 0, 8, False, lambda r: False, join) == [2, 1]  # 4 does not fit; the 1 behind it waits
    assert list(q) == [4, 1]
    q = deque([0, 9, 0, 0, 0])  # zero-sized jobs; max_batch bounds them, cancelled (9) dropped
    assert admit(q, 1, 3, False, lambda r: r == 9, join) == [0, 0] and list(q) == [0, 0]
    assert admit(deque([1]), 1, 8, True, lambda r: False, join) == []  # static: only into an empty batch


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


def test_a_request_reports_the_farther_tier_and_then_counts_its_prefetch_wait_too():
    assert reported_switch("disk", "host", 0.5, 2.0) == ("disk", 2.5)  # arrived on disk: the prefetch counts
    assert reported_switch("host", "disk", 0.5, 2.0) == ("disk", 0.5)  # the batch found it farther
    assert reported_switch("device", "device", 0.0, 2.0) == ("device", 0.0)


def test_work_waits_since_its_oldest_request_or_its_last_turn_on_the_device_if_later():
    assert waiting_since(5.0, None, now=9.0) == 5.0  # never had the device
    assert waiting_since(5.0, 7.0, now=9.0) == 7.0  # stepped since: experts take turns
    assert waiting_since(5.0, 7.0, now=9.0, static=True) == 5.0  # static: the oldest request alone
    assert waiting_since(None, 7.0, now=9.0) == 7.0 and waiting_since(None, None, now=9.0) == 9.0
