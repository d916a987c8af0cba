"""The scheduler's and the store's decisions, as the shared pure code both backends call."""

from collections import deque

import pytest

from coeflow.errors import ConfigError
from coeflow.scheduler.decisions import pick_expert, take_batch
from coeflow.store.policies import LRU, Candidate, TierState


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


def test_tier_state_evicts_by_policy_until_it_fits_and_never_an_unevictable_one():
    tier = TierState(100, LRU(), "device")
    for name, at in (("a", 1.0), ("b", 2.0), ("c", 3.0)):
        tier.add(name, 30, at)
    cand = lambda n, b, at: Candidate(n, b, at, at, 1)  # noqa: E731
    assert tier.victims(30, 4.0, cand, lambda n: True) == ["a"]
    assert tier.victims(60, 4.0, cand, lambda n: n != "a") == ["b", "c"]
    assert tier.victims(60, 4.0, cand, lambda n: n == "a") is None
    with pytest.raises(ConfigError, match="larger than the device tier"):
        tier.victims(101, 4.0, cand, lambda n: True)
