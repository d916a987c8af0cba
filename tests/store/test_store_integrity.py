"""A broken expert fails alone, with a message naming what is wrong, and is never served
half-loaded; the other experts keep serving."""

from __future__ import annotations

import json
import os
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file
from storekit import build_coe

import coeflow.backend.real.loader as loader
from coeflow.backend.real import RealBackend
from coeflow.store import ExpertStore, ExpertUnavailableError


def _tiers(store):
    return {s.name: s for s in store.status()}


def test_broken_checkpoints_fail_at_start_up_and_others_serve(tmp_path, checkpoints):
    coe = build_coe(tmp_path, {"ok": checkpoints["llama"], "header": checkpoints["llama"],
                               "shape": checkpoints["llama"], "dtype": checkpoints["llama"],
                               "gone": checkpoints["llama"]})
    (tmp_path / "header" / "model.safetensors").write_bytes(b"\x09\x00\x00\x00\x00\x00\x00\x00{not json")
    w = load_file(tmp_path / "shape" / "model.safetensors")
    w["model.norm.weight"] = w["model.norm.weight"][:10].clone()
    save_file(w, tmp_path / "shape" / "model.safetensors")
    w = load_file(tmp_path / "dtype" / "model.safetensors")
    w["model.norm.weight"] = w["model.norm.weight"].to(torch.int32)
    save_file(w, tmp_path / "dtype" / "model.safetensors")
    (tmp_path / "gone" / "model.safetensors").unlink()
    with ExpertStore(coe, RealBackend(), device_mem=None, host_mem=None) as store:
        st = _tiers(store)
        assert st["ok"].tier == "disk" and st["ok"].error is None
        assert "corrupt safetensors header" in st["header"].error
        assert "'model.norm.weight' has shape [10]" in st["shape"].error
        assert "'model.norm.weight' has dtype torch.int32" in st["dtype"].error
        assert "no model.safetensors" in st["gone"].error
        for name in ("header", "shape", "dtype", "gone"):
            assert st[name].tier == "failed" and st[name].bytes == 0
            with pytest.raises(ExpertUnavailableError, match=f"expert '{name}' is unavailable"):
                store.acquire(name)
            with pytest.raises(ExpertUnavailableError):
                store.prefetch(name).result()
        with store.acquire("ok") as lease:
            assert lease.weights and lease.source_tier == "disk"


def test_file_truncated_after_start_up_fails_alone_and_frees_its_bytes(tmp_path, checkpoints):
    coe = build_coe(tmp_path, {"a": checkpoints["llama"], "b": checkpoints["qwen2"]})
    with ExpertStore(coe, RealBackend(), device_mem=None, host_mem=None) as store:
        f = tmp_path / "a" / "model.safetensors"
        os.truncate(f, f.stat().st_size - 1000)
        with pytest.raises(ExpertUnavailableError, match="changed since start-up"):
            store.acquire("a")
        assert _tiers(store)["a"].tier == "failed"
        assert store.used() == {"host": 0, "device": 0}
        with store.acquire("b") as lease:
            assert lease.source_tier == "disk"


def test_read_failing_midway_is_never_served(tmp_path, checkpoints, monkeypatch):
    """The third chunk of the read fails after the first two have landed: nobody gets a lease,
    the expert is marked failed with the file named, its bytes go back to the pool."""
    coe = build_coe(tmp_path, {"a": checkpoints["llama"], "b": checkpoints["qwen2"]})
    monkeypatch.setattr(loader, "CHUNK_BYTES", 64 * 1024)
    real, count, lock = loader._pread_full, [0], threading.Lock()

    def flaky(fd, dst, offset, file):
        with lock:
            count[0] += 1
            n = count[0]
        if n == 3:
            raise OSError(5, "Input/output error")
        return real(fd, dst, offset, file)

    monkeypatch.setattr(loader, "_pread_full", flaky)
    with ExpertStore(coe, RealBackend(load_threads=1), device_mem=None, host_mem=None) as store:
        results: list = []

        def acquire():
            try:
                results.append(store.acquire("a"))
            except ExpertUnavailableError as e:
                results.append(e)

        threads = [threading.Thread(target=acquire) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 3 and all(isinstance(r, ExpertUnavailableError) for r in results)
        assert "model.safetensors: read failed" in str(results[0]) and "inside tensor" in str(results[0])
        st = _tiers(store)["a"]
        assert st.tier == "failed" and st.leases == 0
        assert store.used()["host"] == 0
        monkeypatch.setattr(loader, "_pread_full", real)
        with store.acquire("b"):
            pass
        store.load("a")  # an explicit load retries a failed expert
        assert _tiers(store)["a"].tier == "device"


def test_failed_expert_recovers_after_its_file_is_fixed(tmp_path, checkpoints):
    coe = build_coe(tmp_path, {"a": checkpoints["llama"]})
    cfg = tmp_path / "a" / "config.json"
    good = cfg.read_text()
    bad = json.loads(good)
    bad["hidden_size"] = 96
    cfg.write_text(json.dumps(bad))
    with ExpertStore(coe, RealBackend(), device_mem="10MB", host_mem="10MB") as store:
        assert "has shape" in _tiers(store)["a"].error
        cfg.write_text(good)
        store.load("a", tier="host")
        assert _tiers(store)["a"].tier == "host" and _tiers(store)["a"].error is None
