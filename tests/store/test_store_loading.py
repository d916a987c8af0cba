"""Loading as the server relies on it: leases give the same tokens as loading the checkpoint
directly, acquiring from the host tier copies nothing, prefetches share one load."""

from __future__ import annotations

import threading

import pytest
import torch
from checkpoints import make_checkpoint
from storekit import build_coe

import coeflow.backend.real as real_backend
from coeflow.backend.real.layout import plan_layout
from coeflow.engine import Engine, SamplingParams
from coeflow.engine.layers.cuda import CudaLayers
from coeflow.errors import ConfigError
from coeflow.model import ModelConfig, attach_weights, build_skeleton, load_weights
from coeflow.store import ExpertStore

PROMPT = [1, 40, 41, 42, 43]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lease_weights_generate_what_the_checkpoint_generates(tmp_path, checkpoints, dtype):
    fams = ["llama", "qwen2", "llama-tied", "llama-bias"]
    coe = build_coe(tmp_path, {f: checkpoints[f] for f in fams})
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    with ExpertStore(coe, real_backend.RealBackend(dtype), device_mem=None, host_mem=None) as store:
        for f in fams:
            with store.acquire(f) as lease:
                assert all(t.dtype == dtype for t in lease.weights.values())
                engine = Engine(lease.config, dtype=dtype, device="cpu", fused=False)
                engine.set_weights(lease.weights, name=f)
                got = engine.generate([PROMPT], params)[0].token_ids
            want = Engine.from_checkpoint(checkpoints[f], dtype=dtype, device="cpu",
                                          fused=False).generate([PROMPT], params)[0].token_ids
            assert got == want, f


def test_weights_are_views_of_the_host_pool_and_host_acquire_copies_nothing(tmp_path, checkpoints):
    coe = build_coe(tmp_path, {"a": checkpoints["llama"], "b": checkpoints["qwen2"]})
    with ExpertStore(coe, real_backend.RealBackend(), device_mem=None, host_mem=None) as store:
        pool = store.backend._host.buffer
        lo, hi = pool.data_ptr(), pool.data_ptr() + pool.numel()
        with store.acquire("a") as first:
            assert first.source_tier == "disk"
            ptrs = {n: t.data_ptr() for n, t in first.weights.items()}
            assert all(lo <= p < hi for p in ptrs.values())
        store.unload("a", tier="host")
        assert {s.name: s.tier for s in store.status()}["a"] == "host"
        with store.acquire("a") as again:
            assert again.source_tier == "host"
            assert {n: t.data_ptr() for n, t in again.weights.items()} == ptrs
        with store.acquire("a") as hit:
            assert hit.source_tier == "device"
        st = {s.name: s for s in store.status()}["a"]
        assert (st.hits, st.misses) == (1, 2)
        assert [r["source_tier"] for r in st.recent_switches] == ["disk", "host"]
        assert st.last_used is not None and st.bytes > 0


def test_concurrent_prefetches_share_one_load(tmp_path, checkpoints, monkeypatch):
    coe = build_coe(tmp_path, {"a": checkpoints["llama"], "b": checkpoints["qwen2"]})
    calls, gate, started = [], threading.Event(), threading.Event()
    real = real_backend.read_expert

    def gated(layout, *args, **kwargs):
        calls.append(layout)
        started.set()
        assert gate.wait(30)
        return real(layout, *args, **kwargs)

    monkeypatch.setattr(real_backend, "read_expert", gated)
    with ExpertStore(coe, real_backend.RealBackend(), device_mem=None, host_mem=None) as store:
        first = store.prefetch("a")
        assert started.wait(30)  # the load is in flight from here until the gate opens
        futures: list = []
        threads = [threading.Thread(target=lambda: futures.append(store.prefetch("a"))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(f is first for f in futures)
        assert {s.name: s.tier for s in store.status()}["a"] == "loading"
        with pytest.raises(TimeoutError):
            store.acquire("a", timeout=0)  # not ready: no lease on a half-loaded expert
        gate.set()
        with store.acquire("a") as lease:
            assert lease.weights
        assert first.result() is None and len(calls) == 1


def test_weights_read_into_reused_pool_ranges_are_the_experts_own(tmp_path, checkpoints):
    """A host budget for two of three experts makes loads reuse the ranges of evicted ones in
    the real host pool: each lease must hold its own checkpoint's tensors, both the expert
    just read and the one that stayed in the pool meanwhile."""
    a, b, c = fams = ["llama", "qwen2", "llama-tied"]
    coe = build_coe(tmp_path, {f: checkpoints[f] for f in fams})
    sizes = [plan_layout(checkpoints[f], torch.float32).block_bytes for f in fams]
    want = {f: load_weights(checkpoints[f], ModelConfig.from_dir(checkpoints[f]), torch.float32) for f in fams}
    sources = []
    with ExpertStore(coe, real_backend.RealBackend(), device_mem=max(sizes), host_mem=sum(sizes) - 1) as store:
        for f in (a, b, c, b, a, b):
            with store.acquire(f) as lease:
                sources.append(lease.source_tier)
                assert lease.weights.keys() == want[f].keys()
                assert all(torch.equal(t, want[f][n]) for n, t in lease.weights.items()), f
    # c and then a were read into ranges others had left, while b stayed in the pool
    assert sources[2:] == ["disk", "host", "disk", "host"]


def test_unknown_expert_is_a_config_error_and_key_error(tmp_path, checkpoints):
    coe = build_coe(tmp_path, {"a": checkpoints["llama"]})
    with ExpertStore(coe, real_backend.RealBackend(), device_mem=None, host_mem=None) as store:
        for call in (store.acquire, store.prefetch, store.config):
            with pytest.raises(ConfigError, match="no expert named 'zz'"):
                call("zz")
        with pytest.raises(KeyError):
            store.acquire("zz")


def test_unload_of_a_leased_expert_is_refused(tmp_path, checkpoints):
    coe = build_coe(tmp_path, {"a": checkpoints["llama"]})
    with ExpertStore(coe, real_backend.RealBackend(), device_mem=None, host_mem=None) as store:
        with store.acquire("a"):
            with pytest.raises(ConfigError, match="in use"):
                store.unload("a", tier="disk")
        store.unload("a", tier="disk")
        assert store.status()[0].tier == "disk" and store.used() == {"host": 0, "device": 0}


@pytest.mark.parametrize("family,heads", [("llama-gqa", None), ("llama-bias", None), ("qwen2", None),
                                          ("llama-tied", None), ("qwen2", 8)])
def test_store_and_loader_lay_each_group_of_weights_out_as_one_matrix(tmp_path, checkpoints, family, heads):
    """q/k/v and gate/up (weights, and biases where there are) lie back to back in the host
    pool and in `load_weights`' buffer, though transformers writes them in another order, so
    the model reads each group as one matrix (a view: no copy). With 8 heads of 8, a k bias
    is 32 bytes in bf16: no cache-line padding may come between a group's members."""
    path = checkpoints[family] if heads is None else make_checkpoint(
        tmp_path / "src", family, num_attention_heads=heads, tokenizer=False)
    cfg = ModelConfig.from_dir(path)
    coe = build_coe(tmp_path, {"x": path})
    with ExpertStore(coe, real_backend.RealBackend(torch.bfloat16), device_mem=None, host_mem=None) as store, \
            store.acquire("x") as lease:
        for source, weights in (("store", lease.weights), ("load_weights", load_weights(path, cfg, torch.bfloat16))):
            model, layers = build_skeleton(cfg), CudaLayers(gemv=False)  # the layers that join groups
            layers.swap(model)
            attach_weights(model, weights)
            assert layers.after_attach(model)[0] == (True,) * (2 * cfg.num_layers), source
            for layer in model.model.layers:
                for block, parts in ((layer.self_attn, ("q_proj", "k_proj", "v_proj")),
                                     (layer.mlp, ("gate_proj", "up_proj"))):
                    linears = [getattr(block, p) for p in parts]
                    assert torch.equal(block.joined_weight, torch.cat([m.weight for m in linears]))
                    assert block.joined_weight.data_ptr() == linears[0].weight.data_ptr(), source
                    if linears[0].bias is not None:
                        assert torch.equal(block.joined_bias, torch.cat([m.bias for m in linears]))


def _saved_as(src, dst, dtype):
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).to(dtype).save_pretrained(dst)
    return dst


def test_each_expert_is_served_in_its_checkpoints_dtype_unless_its_coe_entry_or_the_server_names_one(
        tmp_path, checkpoints):
    src = checkpoints["llama"]
    experts = {"f32": src, "b16": _saved_as(src, tmp_path / "src-b16", torch.bfloat16),
               "f16": _saved_as(src, tmp_path / "src-f16", torch.float16)}
    coe = build_coe(tmp_path / "coe", experts, b16={"dtype": "fp32"})
    assert coe.expert("b16").dtype == "fp32" and coe.expert("f32").dtype is None

    def served(backend) -> dict[str, torch.dtype]:
        with ExpertStore(coe, backend, device_mem=None, host_mem=None) as store:
            got = {}
            for name in experts:
                with store.acquire(name) as lease:
                    (got[name],) = {t.dtype for t in lease.weights.values()}
            return got

    # auto: as stored; fp16 in bf16 on a CPU (same bytes); the CoE entry's fp32 wins over auto
    assert served(real_backend.RealBackend(dtypes={"b16": "fp32"})) == {
        "f32": torch.float32, "b16": torch.float32, "f16": torch.bfloat16}
    assert served(real_backend.RealBackend()) == {"f32": torch.float32, "b16": torch.bfloat16, "f16": torch.bfloat16}
    assert served(real_backend.RealBackend("fp32")) == dict.fromkeys(experts, torch.float32)
