"""A broken expert fails alone, with a message naming what is wrong, and is never served
half-loaded; the other experts keep serving."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file
from storekit import build_coe

import coeflow.backend.real.loader as loader
from coeflow.backend.real import RealBackend
from coeflow.engine import Engine, SamplingParams
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


# -- weights checked as they are read: no NaN or infinity, and the CoE file's sha256 -------------

def _tensor_span(file, name: str) -> tuple[int, int]:
    """[start, end) of a tensor's bytes in a safetensors file, from its header."""
    with open(file, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        start, end = json.loads(f.read(n))[name]["data_offsets"]
    return 8 + n + start, 8 + n + end


def _overwrite_inside(file, name: str, values: bytes) -> None:
    """Write `values` over the middle of tensor `name` in place: same size, a valid header."""
    start, end = _tensor_span(file, name)
    at = start + (end - start) // 2 // 4 * 4
    size = os.path.getsize(file)
    with open(file, "r+b") as f:
        f.seek(at)
        f.write(values)
    assert os.path.getsize(file) == size


def _sha256(*files) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(open(f, "rb").read())
    return h.hexdigest()


def _greedy(lease_or_path, dtype: str) -> list[int]:
    params = SamplingParams(max_tokens=6, temperature=0.0)
    if isinstance(lease_or_path, os.PathLike):
        engine = Engine.from_checkpoint(lease_or_path, dtype=dtype, device="cpu", fused=False)
    else:
        engine = Engine(lease_or_path.config, dtype=dtype, device="cpu", fused=False)
        engine.set_weights(lease_or_path.weights, lease_or_path.name)
    return engine.generate([[1, 5, 9, 12]], params)[0].token_ids


BAD_WEIGHT = "model.layers.1.mlp.down_proj.weight"


@pytest.mark.parametrize("dtype, value, words", [
    ("fp32", float("nan"), ""),
    ("bf16", float("-inf"), "converted to torch.bfloat16"),  # read into staging, then converted
    ("fp16", 1e10, "converted to torch.float16"),  # finite on disk, infinite once converted
])
def test_non_finite_weights_fail_that_expert_alone(tmp_path, checkpoints, dtype, value, words):
    coe = build_coe(tmp_path, {"bad": checkpoints["llama"], "good": checkpoints["qwen2"]})
    file = tmp_path / "bad" / "model.safetensors"
    _overwrite_inside(file, BAD_WEIGHT, struct.pack("<5f", *[value] * 5))
    with ExpertStore(coe, RealBackend(dtype), device_mem=None, host_mem=None) as store:
        with pytest.raises(ExpertUnavailableError) as e:
            store.acquire("bad")
        msg = str(e.value)
        assert f"{file}: tensor {BAD_WEIGHT!r} holds 5 non-finite values" in msg and words in msg
        st = _tiers(store)["bad"]
        assert st.tier == "failed" and BAD_WEIGHT in st.error
        assert store.used()["host"] == 0
        with store.acquire("good") as lease:
            assert _greedy(lease, dtype) == _greedy(checkpoints["qwen2"], dtype)
        with pytest.raises(ExpertUnavailableError):  # tried again: still refused
            store.load("bad")


def _shard(src, dst) -> list:
    """A copy of the checkpoint `src` in two safetensors shards with an index."""
    shutil.copytree(src, dst)
    weights = load_file(dst / "model.safetensors")
    (dst / "model.safetensors").unlink()
    names = list(weights)
    files = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    parts = [names[: len(names) // 2], names[len(names) // 2:]]
    for f, part in zip(files, parts):
        save_file({n: weights[n] for n in part}, dst / f, metadata={"format": "pt"})
    (dst / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {n: f for f, part in zip(files, parts) for n in part}}))
    return [dst / f for f in files]


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_sha256_in_the_coe_file_is_checked_on_every_load(tmp_path, checkpoints, dtype):
    """The checksum is of the files' bytes, shards concatenated in name order; a bit flip that
    leaves every weight finite is caught by it, and the expert fails naming both hashes."""
    sharded = _shard(checkpoints["qwen2"], tmp_path / "src-sharded")
    right = {"one": _sha256(checkpoints["llama"] / "model.safetensors"), "shards": _sha256(*sharded)}
    flipped = tmp_path / "src-flipped"
    shutil.copytree(checkpoints["llama"], flipped)
    _overwrite_inside(flipped / "model.safetensors", BAD_WEIGHT, struct.pack("<f", 0.125))
    wrong = "0" * 63 + "1"
    coe = build_coe(tmp_path, {"one": checkpoints["llama"], "shards": tmp_path / "src-sharded",
                               "flipped": flipped, "wrong": checkpoints["llama"]},
                    one={"sha256": right["one"]}, shards={"sha256": right["shards"]},
                    flipped={"sha256": right["one"]}, wrong={"sha256": wrong})
    with ExpertStore(coe, RealBackend(dtype), device_mem=None, host_mem=None) as store:
        for name in ("flipped", "wrong"):
            with pytest.raises(ExpertUnavailableError) as e:
                store.acquire(name)
            given = right["one"] if name == "flipped" else wrong
            got = _sha256(tmp_path / name / "model.safetensors")
            assert f"expert {name!r}" in str(e.value) and given in str(e.value) and got in str(e.value)
            assert _tiers(store)[name].tier == "failed"
        for name, src in (("one", checkpoints["llama"]), ("shards", checkpoints["qwen2"])):
            with store.acquire(name) as lease:
                assert _greedy(lease, dtype) == _greedy(src, dtype)
        assert _tiers(store)["one"].error is None


def test_stale_bytes_between_tensors_are_not_taken_for_bad_weights(tmp_path, checkpoints):
    """The scan looks at the tensors only: a pool whose every byte reads as NaN beforehand (as
    a range reused from another expert may) still loads a clean expert."""
    coe = build_coe(tmp_path, {"a": checkpoints["llama-bias"]})
    backend = RealBackend()
    with ExpertStore(coe, backend, device_mem=None, host_mem=None) as store:
        backend._host.buffer.fill_(0xFF)  # 0xFFFFFFFF is a NaN in fp32
        with store.acquire("a") as lease:
            assert _greedy(lease, "fp32") == _greedy(checkpoints["llama-bias"], "fp32")
