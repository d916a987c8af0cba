"""Byte budgets: parsed as users write them, checked at start-up, never exceeded at run time."""

from __future__ import annotations

import random
import threading

import pytest
from fakes import MB, FakeBackend, fake_coe

from coeflow.errors import ConfigError
from coeflow.store import ExpertStore, parse_bytes
from coeflow.store.tiers import Arena


@pytest.mark.parametrize("text,expected", [
    ("6GB", 6 * 10**9), ("512MiB", 512 * 2**20), ("1.5G", int(1.5 * 2**30)), ("100", 100),
    (4096, 4096), ("2 gib", 2 * 2**30), ("10kb", 10_000), ("7B", 7),
])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("junk", ["", "GB", "six GB", "5 parsecs", "-3", "1e9x", True])
def test_parse_bytes_refuses_junk(junk):
    with pytest.raises(ConfigError):
        parse_bytes(junk)


def test_arena_reuses_and_merges_freed_ranges():
    a = Arena(1024, align=64)
    x, y, z = a.alloc(256), a.alloc(256), a.alloc(512)
    assert (x, y, z) == (0, 256, 512) and a.alloc(1) is None
    a.free(y)
    a.free(x)  # merges with y's hole: 512 contiguous bytes at 0
    assert a.largest_free == 512 and a.alloc(512) == 0
    a.free(0)
    a.free(z)
    assert a.used == 0 and a.largest_free == 1024


def test_expert_larger_than_a_budget_is_refused_at_start_up(tmp_path):
    for device_mem, host_mem, tier in ((2_000_000, "100MB", "device"), ("100MB", 2_000_000, "host")):
        backend = FakeBackend({"big": 3, "small": 1})
        with pytest.raises(ConfigError, match=f"'big' needs .* {tier} tier's budget is 2000000 bytes"):
            ExpertStore(fake_coe(tmp_path / tier, ["big", "small"]), backend, device_mem=device_mem,
                        host_mem=host_mem)
        assert backend.reserved is None  # refused before any memory is reserved


# six experts of different sizes (MB), so that freed ranges must be reused and may not fit
SIZES = {"e0": 3, "e1": 5, "e2": 2, "e3": 4, "e4": 1, "e5": 6}
BIGGEST = max(SIZES.values()) * MB


def _store(tmp_path, device_copies: bool, device_mem: int, host_mem: int) -> ExpertStore:
    backend = FakeBackend(SIZES, device_copies=device_copies, s_per_mb=0)
    return ExpertStore(fake_coe(tmp_path, list(SIZES)), backend, device_mem=device_mem, host_mem=host_mem)


def _check(store: ExpertStore, held: list[dict] = ()) -> None:
    """Budgets hold, and the device bytes of different experts leased at the same time never
    overlap (a lease's weights are not overwritten while it is held)."""
    used, cap = store.used(), store.budgets
    assert used["host"] <= cap["host"] and used["device"] <= cap["device"]
    st = store.status()
    assert sum(s.bytes for s in st if s.tier == "device") <= cap["device"]
    assert sum(s.bytes for s in st if s.tier in ("device", "host")) <= cap["host"]
    if store.device_copies:
        # two leases of one expert share its bytes, as they should: count each expert once
        ranges = sorted({(w["slot"], w["slot"] + SIZES[w["expert"]] * MB, w["expert"]) for w in held})
        for (_, end, a), (start, _, b) in zip(ranges, ranges[1:]):
            assert end <= start, f"leased {a} and {b} share device bytes"


@pytest.mark.parametrize("device_copies", [True, False], ids=["device-copies", "pointer-swap"])
def test_random_operations_never_exceed_budgets(tmp_path, device_copies):
    store = _store(tmp_path, device_copies, device_mem=int(1.6 * BIGGEST), host_mem=int(2.7 * BIGGEST))
    rng = random.Random(0)
    names = list(SIZES)
    try:
        for _ in range(120):
            op, name = rng.random(), rng.choice(names)
            if op < 0.6:
                with store.acquire(name) as lease:
                    assert (lease.weights["expert"], lease.weights["tier"]) == (name, "device")
                    assert store.status()[names.index(name)].tier == "device"
                    _check(store, [lease.weights])
            elif op < 0.75:
                store.prefetch(name).result()
            elif op < 0.85:
                store.load(name, tier="host")
            else:
                store.unload(name, tier=rng.choice(["host", "disk"]))
            _check(store)
        assert sum(s.misses for s in store.status()) > 10  # the budgets really forced evictions
    finally:
        store.close()


@pytest.mark.parametrize("device_copies", [True, False], ids=["device-copies", "pointer-swap"])
def test_concurrent_acquires_never_exceed_budgets(tmp_path, device_copies):
    store = _store(tmp_path, device_copies, device_mem=int(2.2 * BIGGEST), host_mem=int(3.5 * BIGGEST))
    held: dict[int, dict] = {}  # worker -> the weights of the lease it holds now
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(25):
                name = rng.choice(list(SIZES))
                with store.acquire(name, timeout=30) as lease:
                    assert lease.weights["expert"] == name
                    with lock:
                        held[seed] = lease.weights
                        leased_now = list(held.values())
                    _check(store, leased_now)
                    with lock:
                        del held[seed]
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        _check(store)
        assert all(s.leases == 0 for s in store.status())
        assert sum(s.misses for s in store.status()) > 10  # the budgets really forced evictions
    finally:
        store.close()
