"""Byte budgets: parsed as users write them, checked at start-up, never exceeded at run time."""

from __future__ import annotations

import random
import threading

import pytest
from storekit import build_coe

from coeflow.backend.real import RealBackend
from coeflow.errors import ConfigError
from coeflow.store import ExpertStore, parse_bytes
from coeflow.store.tiers import Arena

FAMS = ["llama", "llama-gqa", "qwen2", "llama-bias", "llama-tied", "mistral-window"]


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


def test_expert_larger_than_a_budget_is_refused_at_start_up(tmp_path, checkpoints):
    coe = build_coe(tmp_path, {"big": checkpoints["llama"], "small": checkpoints["llama-tied"]})
    with pytest.raises(ConfigError, match=r"'big' needs .* device tier's budget is 300000 bytes"):
        ExpertStore(coe, RealBackend(), device_mem=300_000, host_mem="100MB")
    with pytest.raises(ConfigError, match=r"'big' needs .* host tier's budget"):
        ExpertStore(coe, RealBackend(), device_mem="100MB", host_mem=300_000)


def _sizes(tmp_path, checkpoints):
    coe = build_coe(tmp_path, {f"e{i}": checkpoints[f] for i, f in enumerate(FAMS)})
    with ExpertStore(coe, RealBackend(), device_mem=None, host_mem=None) as probe:
        sizes = {s.name: s.bytes for s in probe.status()}
    return coe, sizes


def _check(store: ExpertStore) -> None:
    used, cap = store.used(), store.budgets
    assert used["host"] <= cap["host"] and used["device"] <= cap["device"]
    st = store.status()
    assert sum(s.bytes for s in st if s.tier == "device") <= cap["device"]
    assert sum(s.bytes for s in st if s.tier in ("device", "host")) <= cap["host"]


def test_random_operations_never_exceed_budgets(tmp_path, checkpoints):
    coe, sizes = _sizes(tmp_path, checkpoints)
    biggest = max(sizes.values())
    store = ExpertStore(coe, RealBackend(), device_mem=int(1.6 * biggest), host_mem=int(2.7 * biggest))
    rng = random.Random(0)
    names = list(sizes)
    try:
        for _ in range(120):
            op, name = rng.random(), rng.choice(names)
            if op < 0.6:
                with store.acquire(name) as lease:
                    assert lease.weights and store.status()[names.index(name)].tier == "device"
                    _check(store)
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


def test_concurrent_acquires_never_exceed_budgets(tmp_path, checkpoints):
    coe, sizes = _sizes(tmp_path, checkpoints)
    biggest = max(sizes.values())
    store = ExpertStore(coe, RealBackend(load_threads=2), device_mem=int(2.2 * biggest),
                        host_mem=int(3.5 * biggest))
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(25):
                with store.acquire(rng.choice(list(sizes)), timeout=30):
                    _check(store)
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
    finally:
        store.close()
